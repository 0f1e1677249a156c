//! The HTTP application: routes, auth, and the handlers.
use std::path::PathBuf;
use std::time::Duration;

use autodev_domain::{AccessRole, RunState};
use autodev_store::{KeyRow, RunRef, RunRow, Store};
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::Stream;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::auth::{self, Pepper};
use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::rules;
use crate::workers::ModelFactory;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub pepper: Pepper,
    pub home: PathBuf,
    /// Whether at least one model provider is configured (for /ready).
    pub providers_configured: bool,
    /// How often an event stream (and an idle worker) looks for news.
    pub poll: Duration,
    /// Builds the model client for a run's settings; knows the default provider and model.
    pub models: std::sync::Arc<dyn ModelFactory>,
    pub prices: std::sync::Arc<autodev_llm::PriceTable>,
    /// The key cache and the per-key rate limit.
    pub guard: std::sync::Arc<crate::access::Guard>,
    /// Webhook secrets and the trigger label; an endpoint without its secret is off.
    pub webhooks: std::sync::Arc<crate::webhooks::WebhookConfig>,
    /// The operator's sandbox for every run this process's workers drive.
    pub sandbox: autodev_engine::SandboxConfig,
    /// The operator's monthly budget for every run this process's workers drive.
    pub budgets: autodev_engine::Budgets,
    /// Tells GitHub, Slack and webhooks about runs' milestones (no targets: nothing to do).
    pub delivery: std::sync::Arc<crate::delivery::Dispatcher>,
    /// The forges that say who may command Autodev by comment (see `crate::commanders`).
    pub forges: std::sync::Arc<crate::commanders::Forges>,
    /// `AUTODEV_PUBLIC_URL`: where people reach this server (the UI's links, the session
    /// cookie's `Secure`, the origin forms may come from).
    pub public_url: Option<String>,
    /// The public URL's path (`/autodev` behind a proxy that serves Autodev there), or empty:
    /// the web UI's links start with it, and its pages answer under it as well as at the root.
    pub base_path: String,
    /// Where code indexes live and how they are searched (`ask`, MCP, the runs' agents).
    pub code: autodev_engine::code::CodeSearch,
}

impl AppState {
    /// A UI path (`/runs`) as a link (`/autodev/runs` under a path prefix).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_path)
    }

    /// The path prefix of a public URL (`https://host/autodev/` → `/autodev`).
    pub fn base_path_of(public_url: Option<&str>) -> String {
        public_url
            .and_then(|u| reqwest::Url::parse(u).ok())
            .map(|u| u.path().trim_end_matches('/').to_string())
            .unwrap_or_default()
    }
}

pub fn router(state: AppState) -> Router {
    // Install the recorder before the first request so every series is recorded.
    let _ = crate::metrics::handle();
    // The web UI answers at the root and, behind a proxy that keeps a path prefix, under it.
    let mut ui = crate::ui::router();
    if !state.base_path.is_empty() {
        ui = ui.clone().nest(&state.base_path, crate::ui::router());
    }
    let api = Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(crate::metrics::render))
        .route("/api/v1/openapi.json", get(crate::openapi::serve))
        .route("/api/v1/projects", get(crate::projects::list).post(crate::projects::create))
        .route(
            "/api/v1/projects/{key}",
            get(crate::projects::get).patch(crate::projects::update).delete(crate::projects::delete),
        )
        .route("/api/v1/projects/{key}/ask", post(crate::ask::ask))
        .route("/api/v1/runs", get(list_runs).post(crate::runs::create))
        .route("/api/v1/runs/{id}", get(get_run))
        .route("/api/v1/runs/{id}/cancel", post(cancel_run))
        .route("/api/v1/runs/{id}/approve", post(crate::runs::approve))
        .route("/api/v1/runs/{id}/reject", post(crate::runs::reject))
        .route("/api/v1/runs/{id}/deliver", post(crate::runs::deliver))
        .route("/api/v1/runs/{id}/artifacts/{name}", get(crate::runs::artifact))
        .route("/api/v1/usage", get(crate::runs::usage))
        .route("/api/v1/runs/{id}/events", get(run_events))
        .route("/webhooks/github", post(crate::webhooks::github))
        .route("/webhooks/gitlab", post(crate::webhooks::gitlab))
        .route("/webhooks/jira", post(crate::webhooks::jira))
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        // Bodies read by the extractors stop at the limit; a declared Content-Length over it is
        // refused before the body is read (tower-http), in the one error shape (json_errors).
        .layer(axum::extract::DefaultBodyLimit::max(crate::extract::MAX_BODY_BYTES))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(crate::extract::MAX_BODY_BYTES))
        .layer(crate::error::JsonErrorsLayer)
        .layer(axum::middleware::from_fn(crate::metrics::track));
    // MCP over streamable HTTP, behind the API's keys (see `mcp`).
    let mcp = Router::new()
        .nest_service("/mcp", crate::mcp::http_service(state.clone(), tokio_util::sync::CancellationToken::new()))
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::mcp::authenticate))
        .layer(axum::middleware::from_fn(crate::metrics::track));
    ui.layer(axum::middleware::from_fn(crate::metrics::track)).merge(api).merge(mcp).with_state(state)
}

/// The caller, authenticated by `Authorization: Bearer KEY`.
#[derive(Clone)]
pub struct Caller {
    pub key: std::sync::Arc<KeyRow>,
    pub role: AccessRole,
}

impl Caller {
    /// The ids of the projects a scoped key sees, comma-separated (as queries take them);
    /// `None` for an unscoped key.
    pub fn scope(&self) -> Option<&str> {
        self.key.projects.as_deref()
    }

    /// Whether the key sees something of `project_id` (a run, a question).
    pub fn sees(&self, project_id: Option<&str>) -> bool {
        self.key.sees(project_id)
    }

    /// A run this key may see; any other is "no run", as if it did not exist.
    pub async fn run(&self, state: &AppState, id: &str) -> Result<autodev_store::RunRow, ApiError> {
        let run = state.store.find_run(id).await?;
        if self.sees(run.project_id.as_deref()) {
            Ok(run)
        } else {
            Err(autodev_store::StoreError::RunNotFound(id.to_string()).into())
        }
    }

    /// A project this key may see; any other is "no project", as if it did not exist.
    pub async fn project(&self, state: &AppState, key: &str) -> Result<autodev_store::ProjectRow, ApiError> {
        let project = state.store.find_project(key).await?;
        if self.sees(Some(&project.id)) {
            Ok(project)
        } else {
            Err(autodev_store::StoreError::NotFound(format!("no project `{key}`")).into())
        }
    }

    /// Refuses what only a key for every project may do (create projects, manage keys).
    pub fn require_unscoped(&self, what: &str) -> Result<(), ApiError> {
        match self.scope() {
            None => Ok(()),
            Some(_) => Err(ApiError::forbidden(format!(
                "the key `{}` is scoped to projects and cannot {what}; use a key without --project",
                self.key.name
            ))),
        }
    }

    pub fn require(&self, role: AccessRole) -> Result<(), ApiError> {
        if self.role.allows(role) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "this needs the {role} role; the key `{}` is {}",
                self.key.name, self.role
            )))
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(axum::http::header::AUTHORIZATION).ok_or_else(|| {
            ApiError::unauthorized("missing `Authorization: Bearer KEY`; create a key with `autodev keys create`")
        })?;
        let token = bearer_token(header.as_bytes())
            .ok_or_else(|| ApiError::unauthorized("the Authorization header must be `Bearer KEY`"))?;
        match state.guard.authenticate(&state.store, &state.pepper, token).await {
            Ok(Some((key, role))) => {
                if let Err(wait) = state.guard.check_rate(&key.id) {
                    return Err(ApiError::rate_limited(&key.name, wait));
                }
                Ok(Caller { key, role })
            }
            Ok(None) => Err(ApiError::unauthorized("invalid or revoked API key")),
            Err(auth::AuthError::Store(e)) => Err(e.into()),
            Err(e) => Err(ApiError::internal(&e)),
        }
    }
}

/// The key in `Authorization: Bearer KEY`. The scheme is case-insensitive (RFC 9110 §11.1),
/// and one or more spaces or tabs may follow it.
fn bearer_token(header: &[u8]) -> Option<&str> {
    let header = std::str::from_utf8(header).ok()?.trim();
    let (scheme, token) = header.split_once([' ', '\t'])?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Nanoseconds since the epoch (a marker file's content; its mtime is what is compared).
pub fn now_nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

async fn health() -> &'static str {
    "ok"
}

async fn ready(State(state): State<AppState>) -> Response {
    let database = state.store.ping().await.is_ok();
    let migrations = database && state.store.pending_migrations().await.is_ok_and(|p| p.is_empty());
    // The queue is the runs table read the way workers and /metrics read it.
    let queue = migrations && state.store.stats().await.is_ok();
    let ok = database && migrations && queue && state.providers_configured;
    let body = json!({
        "status": if ok { "ready" } else { "not_ready" },
        "backend": state.store.backend(),
        "checks": {"database": database, "migrations": migrations, "queue": queue, "model_provider": state.providers_configured},
    });
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

/// A run as the API shows it. Serialised straight from the row (no intermediate
/// `serde_json::Value`: building one per run was most of the cost of a page of 50).
#[derive(Serialize)]
pub struct RunView<'a> {
    id: &'a str,
    short_id: &'a str,
    title: &'a str,
    state: &'a str,
    reason: Option<std::borrow::Cow<'a, str>>,
    /// Credentials in a clone URL are masked (`https://***@host/…`).
    repository: std::borrow::Cow<'a, str>,
    base_branch: &'a str,
    branch: &'a str,
    project_id: Option<&'a str>,
    origin: Option<&'a str>,
    tests_passed: Option<bool>,
    evidence: Option<&'a str>,
    /// At `awaiting_approval`: `plan` or `delivery`.
    gate: Option<&'static str>,
    usage: UsageView,
    created_at_ms: i64,
    finished_at_ms: Option<i64>,
    links: Links<'a>,
}

#[derive(Serialize)]
struct UsageView {
    input_tokens: i64,
    output_tokens: i64,
    cost_usd: f64,
}

/// `{"self": "/api/v1/runs/ID", "events": "/api/v1/runs/ID/events"}`, written straight into
/// the output (no string built per link).
struct Links<'a>(&'a str);

impl Serialize for Links<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        struct Path<'a>(&'a str, &'static str);
        impl Serialize for Path<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(&format_args!("/api/v1/runs/{}{}", self.0, self.1))
            }
        }
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry("self", &Path(self.0, ""))?;
        map.serialize_entry("events", &Path(self.0, "/events"))?;
        map.end()
    }
}

impl<'a> From<RunRef<'a>> for RunView<'a> {
    fn from(r: RunRef<'a>) -> Self {
        Self {
            id: r.id,
            short_id: r.short_id,
            title: r.title,
            state: r.state,
            reason: r.reason.map(autodev_domain::mask_url_credentials),
            repository: autodev_domain::mask_url_credentials(r.repo),
            base_branch: r.base_branch,
            branch: r.branch,
            project_id: r.project_id,
            origin: r.origin,
            tests_passed: r.test_passed,
            evidence: r.evidence,
            // The delivery gate is the one after the tests ran (see `autodev_engine::Gate`).
            gate: (r.state == "awaiting_approval").then(|| if r.test_passed.is_some() { "delivery" } else { "plan" }),
            usage: UsageView {
                input_tokens: r.input_tokens,
                output_tokens: r.output_tokens,
                cost_usd: r.cost_micros as f64 / 1e6,
            },
            created_at_ms: r.created_at,
            finished_at_ms: r.finished_at,
            links: Links(r.id),
        }
    }
}

pub fn run_json(r: &RunRow) -> Value {
    serde_json::to_value(RunView::from(r.as_ref())).unwrap_or(Value::Null)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    pub project: Option<String>,
    pub state: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

pub(crate) async fn list_runs(
    caller: Caller,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    caller.require(AccessRole::Viewer)?;
    let filter = match q.state.as_deref() {
        Some(s) => Some(s.parse::<RunState>().map_err(|e| ApiError::invalid("state", e.to_string()))?),
        None => None,
    };
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::invalid("limit", "limit must be between 1 and 200"));
    }
    let before = q.cursor.as_deref().map(rules::cursor).transpose()?;
    let project = match q.project.as_deref() {
        Some(p) => Some(
            caller
                .project(&state, p)
                .await
                .map_err(|_| ApiError {
                    field: Some("project".into()),
                    ..ApiError::not_found(format!("no project `{p}`"))
                })?
                .id,
        ),
        None => None,
    };
    // Each run is written out as it is read (borrowed from the database's row), one past the
    // page to learn whether there is a next one.
    let mut body = Vec::with_capacity(256 + 512 * limit as usize);
    body.extend_from_slice(b"{\"runs\":[");
    let mut written = 0i64;
    let mut last: Option<(i64, String)> = None;
    let mut more = false;
    let mut failed = None;
    state
        .store
        .visit_runs_page(project.as_deref(), caller.scope(), filter, limit + 1, before, |r| {
            if written == limit {
                more = true;
                return;
            }
            if written > 0 {
                body.push(b',');
            }
            if let Err(e) = serde_json::to_writer(&mut body, &RunView::from(r)) {
                failed = Some(e);
            }
            written += 1;
            if written == limit {
                last = Some((r.created_at, r.id.to_string()));
            }
        })
        .await?;
    if let Some(e) = failed {
        return Err(ApiError::internal(&e));
    }
    let next = if more { last.map(|(at, id)| format!("{at}_{id}")) } else { None };
    body.extend_from_slice(b"],\"next_cursor\":");
    serde_json::to_writer(&mut body, &next).map_err(|e| ApiError::internal(&e))?;
    body.push(b'}');
    Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response())
}

pub(crate) async fn get_run(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(AccessRole::Viewer)?;
    let run = caller.run(&state, &id).await?;
    let tasks = state.store.tasks(&run.id).await?;
    let mut v = run_json(&run);
    let links: std::collections::BTreeMap<String, String> = state.store.run_links(&run.id).await?.into_iter().collect();
    v["pull_request"] = links.get("github.pull_request").map_or(Value::Null, |u| json!(u));
    v["deliveries"] = crate::delivery::deliveries_json(&state.store.outbox_for_run(&run.id).await?);
    v["plan"] = run.plan.as_deref().and_then(|p| serde_json::from_str(p).ok()).unwrap_or(Value::Null);
    v["tasks"] = tasks
        .iter()
        .map(|t| json!({"id": t.task_key, "title": t.title, "state": t.state, "depends_on": t.deps(), "summary": t.summary, "reason": t.reason, "commit": t.commit_sha}))
        .collect();
    Ok(Json(v))
}

pub(crate) async fn cancel_run(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(AccessRole::Operator)?;
    let run = caller.run(&state, &id).await?;
    let result = match autodev_engine::cancel_run(&state.store, &run.id, &caller.key.name).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(ApiError::conflict(format!("run {} is already {}", run.short_id, run.state))),
        Err(autodev_engine::EngineError::Store(e)) => Err(ApiError::from(e)),
        Err(e) => Err(ApiError::internal(&e)),
    };
    let status = result.as_ref().map_or_else(|e| e.status.as_u16(), |_| 200);
    state.store.audit(Some(&*caller.key), "POST", &format!("/api/v1/runs/{}/cancel", run.id), status, None).await?;
    result?;
    Ok(Json(run_json(&state.store.get_run(&run.id).await?)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventsQuery {
    /// Replay events after this sequence number (like `Last-Event-ID`).
    pub(crate) after: Option<i64>,
}

/// Server-Sent Events: every event of the run after `Last-Event-ID` (or `?after=`), then new
/// ones as they are stored, until the run has finished. The store is polled, so this works
/// the same whichever process drives the run.
/// Events read per page by an event stream.
const EVENTS_PAGE: i64 = 500;

pub(crate) async fn run_events(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, std::convert::Infallible>>>, ApiError> {
    caller.require(AccessRole::Viewer)?;
    let run = caller.run(&state, &id).await?;
    // Held by the stream: given back when the client goes away.
    let permit = state.guard.open_stream(&caller.key.id).map_err(|open| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_streams",
            format!("this key already follows {open} event streams (the most it may); close one first"),
        )
    })?;
    let header_seq = headers.get("last-event-id").and_then(|v| v.to_str().ok()).map(|v| v.trim().parse::<i64>());
    let after = match header_seq {
        Some(Ok(seq)) => seq,
        Some(Err(_)) => {
            return Err(ApiError::invalid("Last-Event-ID", "Last-Event-ID must be an event's sequence number"));
        }
        None => q.after.unwrap_or(0),
    };
    let store = state.store.clone();
    let poll = state.poll;
    let run_id = run.id.clone();
    let stream =
        futures::stream::unfold((after, Vec::<SseEvent>::new(), false), move |(mut after, mut queue, mut done)| {
            let store = store.clone();
            let run_id = run_id.clone();
            let _permit = &permit;
            async move {
                loop {
                    if let Some(e) = queue.pop() {
                        return Some((Ok(e), (after, queue, done)));
                    }
                    if done {
                        return None;
                    }
                    // Read the state first: events written before a terminal state are all in.
                    let finished = store.run_state(&run_id).await.map(RunState::is_terminal).unwrap_or(true);
                    // A page at a time: a long history is sent in pieces, never loaded whole.
                    let events = store.events_page(&run_id, after, EVENTS_PAGE).await.unwrap_or_default();
                    let more = events.len() as i64 == EVENTS_PAGE;
                    for e in events.iter().rev() {
                        let data = serde_json::to_string(e).unwrap_or_default();
                        queue.push(SseEvent::default().id(e.seq.to_string()).event(e.kind.name()).data(data));
                    }
                    if let Some(last) = events.last() {
                        after = last.seq;
                    }
                    if finished && !more {
                        done = true;
                    } else if queue.is_empty() {
                        tokio::time::sleep(poll).await;
                    }
                }
            }
        });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
