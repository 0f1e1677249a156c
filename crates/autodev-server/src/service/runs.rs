//! Runs: create, list, show, decide at a gate, cancel, deliver again, read an artifact, follow
//! the events. Each takes the caller and a typed request, checks the caller's role and what
//! its key sees, validates, acts, audits, and returns typed rows or views.
use autodev_domain::{AccessRole, Event, RunState, Spec};
use autodev_engine::{EngineError, RunSettings, approve_plan, checkout};
use autodev_store::{AuditEntry, RunRow};
use axum::http::StatusCode;
use futures::Stream;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::caller::Caller;
use crate::error::ApiError;
use crate::rules;
use crate::state::AppState;
use crate::views::RunView;

/// A request for a run of a project (`POST /api/v1/runs`, the UI's form, MCP's `create_run`).
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"project": "demo", "spec": "# Add a --version flag\n\nPrint the version from Cargo.toml.", "max_parallel": 2}))]
pub struct CreateRun {
    /// Project id or name (404 when there is no such project).
    pub project: String,
    /// Markdown, at most 262,144 characters, not blank. A first `# heading` is the title
    /// unless `title` is given.
    pub spec: String,
    /// One line, at most 200 characters.
    pub title: Option<String>,
    /// A model id of the configured provider (default: the server's).
    pub model: Option<String>,
    /// Tasks at once, 1 to 16.
    #[serde(default, deserialize_with = "whole_number")]
    #[schema(value_type = Option<u32>)]
    pub max_parallel: Option<usize>,
    /// Stop at `awaiting_approval` after planning (default false).
    pub approval: Option<bool>,
}

/// An integer as JSON Schema means it: `16` and `16.0` alike (a number whose fraction is
/// zero); anything else is refused.
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else { return Ok(None) };
    let whole =
        n.as_u64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= 1e15).map(|f| f as u64));
    match whole {
        Some(w) => Ok(Some(usize::try_from(w).unwrap_or(usize::MAX))),
        None => Err(serde::de::Error::custom(format!("expected a whole number, not {n}"))),
    }
}

/// Creates a run of a project: validated, its model checked, enqueued for a worker, audited.
pub async fn create(state: &AppState, caller: &Caller, body: CreateRun) -> Result<RunRow, ApiError> {
    caller.require(AccessRole::Operator)?;
    rules::text("spec", &body.spec, rules::SPEC_MAX_CHARS)?;
    if let Some(title) = &body.title {
        rules::one_line("title", title, rules::TITLE_MAX_CHARS)?;
    }
    if let Some(model) = &body.model {
        rules::model(model)?;
    }
    if let Some(n) = body.max_parallel.filter(|n| !(1..=16).contains(n)) {
        return Err(ApiError::invalid("max_parallel", format!("max_parallel must be 1 to 16, not {n}")));
    }
    let project = caller.project(state, body.project.trim()).await.map_err(|_| ApiError {
        field: Some("project".into()),
        ..ApiError::not_found(format!("no project `{}`; create it first (POST /api/v1/projects)", body.project))
    })?;
    let mut text = body.spec;
    if let Some(title) = body.title.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
        text = format!("# {title}\n\n{text}");
    }
    let spec = Spec::from_text(&text).map_err(|e| ApiError::invalid("spec", e.to_string()))?;
    // An empty test command is detected by the worker in its clone of the repository.
    let test_command = project.test_command.clone().unwrap_or_default();
    let defaults = state.models.run_settings();
    let settings = RunSettings {
        test_command,
        model: body.model.unwrap_or_else(|| defaults.model.clone()),
        max_parallel: body.max_parallel.unwrap_or(defaults.max_parallel),
        approval: body.approval.unwrap_or(defaults.approval),
        ..defaults
    };
    // Build the client now so a run for a provider that is not configured is refused here,
    // not found failing later in a worker.
    state.models.check(&settings).map_err(|e| ApiError::invalid("model", e))?;
    let audit = AuditEntry::new(Some(&*caller.key), "POST", &caller.audit_path("/api/v1/runs"), 201, None);
    let req =
        checkout::ProjectRun { project: &project, spec, settings, origin: None, audit: Some(audit), base_branch: None };
    let (run, _) = checkout::enqueue(&state.store, req).await.map_err(|e| match e {
        EngineError::Invalid(msg) => ApiError::invalid("project", msg),
        other => other.into(),
    })?;
    Ok(run)
}

/// A page of runs: the filters of `GET /api/v1/runs`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ListRuns {
    pub project: Option<String>,
    pub state: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

/// A page of runs the caller sees, newest first, as the JSON document `{"runs": […],
/// "next_cursor": …}`. Each run is written out as it is read (borrowed from the database's
/// row), one past the page to learn whether there is a next one: no row is copied and no
/// `serde_json::Value` is built, which was most of the cost of a page of 50.
pub async fn list(state: &AppState, caller: &Caller, q: ListRuns) -> Result<Vec<u8>, ApiError> {
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
                .project(state, p)
                .await
                .map_err(|_| ApiError {
                    field: Some("project".into()),
                    ..ApiError::not_found(format!("no project `{p}`"))
                })?
                .id,
        ),
        None => None,
    };
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
    Ok(body)
}

/// A run, read with what its page shows beside it (see [`Detail::view`]).
pub struct Detail {
    pub run: RunRow,
    pub extras: RunExtras,
}

impl Detail {
    /// The run as `GET /api/v1/runs/{id}` shows it.
    pub fn view(&self) -> RunDetail<'_> {
        RunDetail { run: RunView::from(self.run.as_ref()), extras: &self.extras }
    }
}

/// A run with its plan and tasks.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RunDetail<'a> {
    #[serde(flatten)]
    pub run: RunView<'a>,
    #[serde(flatten)]
    pub extras: &'a RunExtras,
}

/// What a run's detail adds to the run.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RunExtras {
    /// The pull request Autodev opened for the run, once it has.
    pub pull_request: Option<String>,
    /// The run's milestones and their delivery.
    pub deliveries: Vec<autodev_delivery::DeliveryView>,
    /// What happened after its pull request opened, oldest first (for a follow-up, the
    /// timeline of the pull request it delivered onto).
    pub timeline: Vec<TimelineStep>,
    pub plan: Option<Value>,
    pub tasks: Vec<TaskView>,
}

/// A step of a run's delivery timeline.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TimelineStep {
    /// `pr_opened`, `checks_passed`, `checks_failed`, `ci_repair_started`,
    /// `ci_repair_refused`, `merged`, `closed`, `deploy_requested`, `deployed`,
    /// `deploy_failed` or `revert_requested`.
    pub step: String,
    pub detail: String,
    pub url: Option<String>,
    /// The commit it is about: the checked head, the merge commit, the deployed commit.
    pub sha: Option<String>,
    pub environment: Option<String>,
    pub at_ms: i64,
}

/// The timeline of `run_id`'s pull request, as the API shows it.
pub async fn timeline(state: &AppState, run_id: &str) -> Result<Vec<TimelineStep>, ApiError> {
    let owner = autodev_engine::after::timeline_owner(&state.store, run_id).await?;
    Ok(state
        .store
        .timeline(&owner)
        .await?
        .into_iter()
        .map(|s| TimelineStep {
            step: s.step,
            detail: s.detail,
            url: s.url,
            sha: s.sha,
            environment: s.environment,
            at_ms: s.at_ms,
        })
        .collect())
}

/// Asks for a revert of the run's merged change: a revert run is queued (201), or the request
/// is refused (409 `not_merged`, `already_reverted`, `revert_conflict`, `nothing_to_revert`,
/// `not_a_project_run`). Audited either way.
pub async fn revert(state: &AppState, caller: &Caller, id: &str) -> Result<RunRow, ApiError> {
    caller.require(AccessRole::Operator)?;
    let run = caller.run(state, id).await?;
    let path = caller.audit_path(&format!("/api/v1/runs/{}/revert", run.id));
    let audit = AuditEntry::new(Some(&*caller.key), "POST", &path, 201, None);
    match autodev_engine::after::request_revert(&state.store, &state.engine, &run.id, &caller.key.name, Some(audit))
        .await
    {
        Ok(Ok(revert)) => Ok(revert),
        Ok(Err(refused)) => {
            caller.audit(state, "POST", &format!("/api/v1/runs/{}/revert", run.id), 409, Some(refused.code)).await?;
            Err(ApiError::new(StatusCode::CONFLICT, refused.code, refused.message))
        }
        Err(e) => {
            tracing::warn!(run = %run.id, error = %e, "a revert could not be checked");
            Err(match e {
                EngineError::Failed(msg) => ApiError::new(StatusCode::BAD_GATEWAY, "repository_unavailable", msg),
                other => other.into(),
            })
        }
    }
}

/// A task of a run as the API shows it.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Task)]
pub struct TaskView {
    pub id: String,
    pub title: String,
    /// `pending`, `ready`, `running`, `done`, `failed` or `skipped`.
    pub state: String,
    pub depends_on: Vec<String>,
    pub summary: Option<String>,
    pub reason: Option<String>,
    pub commit: Option<String>,
}

/// A run the caller sees, in detail.
pub async fn get(state: &AppState, caller: &Caller, id: &str) -> Result<Detail, ApiError> {
    caller.require(AccessRole::Viewer)?;
    let run = caller.run(state, id).await?;
    let tasks = state.store.tasks(&run.id).await?;
    let links: std::collections::BTreeMap<String, String> = state.store.run_links(&run.id).await?.into_iter().collect();
    let extras = RunExtras {
        pull_request: links.get("github.pull_request").or_else(|| links.get("gitlab.merge_request")).cloned(),
        deliveries: crate::delivery::deliveries(&state.store.outbox_for_run(&run.id).await?),
        timeline: timeline(state, &run.id).await?,
        plan: run.plan.as_deref().and_then(|p| serde_json::from_str(p).ok()),
        tasks: tasks
            .iter()
            .map(|t| TaskView {
                id: t.task_key.clone(),
                title: t.title.clone(),
                state: t.state.to_string(),
                depends_on: t.deps(),
                summary: t.summary.clone(),
                reason: t.reason.clone(),
                commit: t.commit_sha.clone(),
            })
            .collect(),
    };
    Ok(Detail { run, extras })
}

/// An optional body for approve.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"comment": "Looks right; keep the tests small.", "allow_paths": ["migrations/0002_*.sql"]}))]
pub struct Decision {
    /// At most 4,000 characters, recorded with the approval.
    pub comment: Option<String>,
    /// Protected globs (the project's `protected_paths`) the run may change from now on.
    pub allow_paths: Option<Vec<String>>,
}

/// Approves or rejects at a run's gate (its plan or its delivery); audited either way.
pub async fn decide(
    state: &AppState,
    caller: &Caller,
    id: &str,
    approved: bool,
    decision: Decision,
) -> Result<RunRow, ApiError> {
    caller.require(AccessRole::Operator)?;
    let comment = decision.comment.unwrap_or_default();
    rules::free_text("comment", &comment, rules::COMMENT_MAX_CHARS)?;
    if !approved && decision.allow_paths.is_some() {
        // As if the type refused it (the reject body is `Rejection`, without the field).
        return Err(ApiError::invalid("allow_paths", "unknown field `allow_paths`: a rejection takes only `comment`"));
    }
    let allow_paths = decision.allow_paths.unwrap_or_default();
    rules::allow_paths("allow_paths", &allow_paths)?;
    let run = caller.run(state, id).await?;
    let verb = if approved { "approve" } else { "reject" };
    let decision = autodev_engine::Decision { approved, by: caller.key.name.clone(), comment, allow_paths };
    let result = approve_plan(&state.store, &run.id, &decision).await;
    let status = if result.is_ok() { 200 } else { 409 };
    caller.audit(state, "POST", &format!("/api/v1/runs/{}/{verb}", run.id), status, None).await?;
    result?;
    Ok(state.store.get_run(&run.id).await?)
}

/// Cancels a run; a run that already ended is a conflict. Audited either way.
pub async fn cancel(state: &AppState, caller: &Caller, id: &str) -> Result<RunRow, ApiError> {
    caller.require(AccessRole::Operator)?;
    let run = caller.run(state, id).await?;
    let result = match autodev_engine::cancel_run(&state.store, &run.id, &caller.key.name).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(ApiError::conflict(format!("run {} is already {}", run.short_id, run.state))),
        Err(e) => Err(ApiError::from(e)),
    };
    let status = result.as_ref().map_or_else(|e| e.status.as_u16(), |_| 200);
    caller.audit(state, "POST", &format!("/api/v1/runs/{}/cancel", run.id), status, None).await?;
    result?;
    Ok(state.store.get_run(&run.id).await?)
}

/// The answer to a delivery retry.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = DeliverAnswer)]
pub struct Redelivery {
    pub run: String,
    /// Milestones made due again.
    pub retrying: u64,
    pub deliveries: Vec<autodev_delivery::DeliveryView>,
}

/// Tries the run's undelivered milestones again (those that failed or are waiting for their
/// next attempt), now, in the background.
pub async fn deliver(state: &AppState, caller: &Caller, id: &str) -> Result<Redelivery, ApiError> {
    caller.require(AccessRole::Operator)?;
    let run = caller.run(state, id).await?;
    let queued = state.store.retry_outbox(&run.id).await?;
    caller.audit(state, "POST", &format!("/api/v1/runs/{}/deliver", run.id), 202, None).await?;
    let dispatcher = state.delivery.clone();
    let run_id = run.id.clone();
    tokio::spawn(async move {
        if let Err(e) = dispatcher.deliver_run(&run_id).await {
            tracing::error!(run = %run_id, error = %e, "delivery retry failed");
        }
    });
    let deliveries = crate::delivery::deliveries(&state.store.outbox_for_run(&run.id).await?);
    Ok(Redelivery { run: run.id, retrying: queued, deliveries })
}

/// A delivered file of a run: `report.md` or `changes.patch`.
pub struct Artifact {
    pub content_type: &'static str,
    pub bytes: Vec<u8>,
}

/// The run's `report` (with how its deliveries stand now) or `patch`; 404 until the run has
/// delivered.
pub async fn artifact(state: &AppState, caller: &Caller, id: &str, name: &str) -> Result<Artifact, ApiError> {
    caller.require(AccessRole::Viewer)?;
    let run = caller.run(state, id).await?;
    let (file, content_type) = match name {
        // The files' own names too: the run page links `changes.patch`.
        "report" | "report.md" => ("report.md", "text/markdown; charset=utf-8"),
        "patch" | "changes.patch" => ("changes.patch", "text/x-diff; charset=utf-8"),
        other => return Err(ApiError::not_found(format!("no artifact `{other}`: the artifacts are report and patch"))),
    };
    let Some(text) = state.store.artifact(&state.home, &run.id, file).await? else {
        return Err(ApiError::not_found(format!("run {} has no {name} yet (it is {})", run.short_id, run.state)));
    };
    let mut bytes = text.into_bytes();
    if file == "report.md" {
        // Deliveries happen after the report is written: how they stand now.
        bytes.extend_from_slice(
            crate::delivery::report_section(
                &state.store.outbox_for_run(&run.id).await?,
                &state.store.run_links(&run.id).await?,
            )
            .as_bytes(),
        );
    }
    Ok(Artifact { content_type, bytes })
}

/// Events read per page by an event stream.
const EVENTS_PAGE: i64 = 500;

/// A run's events opened for one follower: the caller may see the run, and one of its key's
/// stream places is held (given back when the stream is dropped).
pub struct EventFeed {
    store: autodev_store::Store,
    poll: std::time::Duration,
    run_id: String,
    permit: crate::access::SlotPermit,
}

/// Opens a run's events for the caller: its role, the run (404 if it does not see it), then a
/// stream place (429 when the key has them all).
pub async fn open_events(state: &AppState, caller: &Caller, id: &str) -> Result<EventFeed, ApiError> {
    caller.require(AccessRole::Viewer)?;
    let run = caller.run(state, id).await?;
    let permit = state.guard.open_stream(&caller.key.id).map_err(|open| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_streams",
            format!("this key already follows {open} event streams (the most it may); close one first"),
        )
    })?;
    Ok(EventFeed { store: state.store.clone(), poll: state.poll, run_id: run.id, permit })
}

impl EventFeed {
    /// Every event of the run after `after`, then new ones as they are stored, until the run
    /// has finished. The store is polled, so this works the same whichever process drives
    /// the run.
    pub fn follow(self, after: i64) -> impl Stream<Item = Event> + use<> {
        let EventFeed { store, poll, run_id, permit } = self;
        futures::stream::unfold((after, Vec::<Event>::new(), false), move |(mut after, mut queue, mut done)| {
            let store = store.clone();
            let run_id = run_id.clone();
            let _permit = &permit;
            async move {
                loop {
                    if let Some(e) = queue.pop() {
                        return Some((e, (after, queue, done)));
                    }
                    if done {
                        return None;
                    }
                    // Read the state first: events written before a terminal state are all in.
                    let finished = store.run_state(&run_id).await.map(RunState::is_terminal).unwrap_or(true);
                    // A page at a time: a long history is sent in pieces, never loaded whole.
                    let events = store.events_page(&run_id, after, EVENTS_PAGE).await.unwrap_or_default();
                    let more = events.len() as i64 == EVENTS_PAGE;
                    if let Some(last) = events.last() {
                        after = last.seq;
                    }
                    queue.extend(events.into_iter().rev());
                    if finished && !more {
                        done = true;
                    } else if queue.is_empty() {
                        tokio::time::sleep(poll).await;
                    }
                }
            }
        })
    }
}
