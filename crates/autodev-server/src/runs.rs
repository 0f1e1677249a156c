//! Creating runs through the API, and the approval gate.
use autodev_domain::{AccessRole, Spec};
use autodev_engine::{EngineError, RunSettings, approve_plan, checkout};
use autodev_store::AuditEntry;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::Value;

use crate::app::{AppState, Caller, run_json};
use crate::error::ApiError;
use crate::extract::{ApiQuery, JsonBody};
use crate::rules;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRun {
    project: String,
    spec: String,
    title: Option<String>,
    model: Option<String>,
    #[serde(default, deserialize_with = "whole_number")]
    max_parallel: Option<usize>,
    /// Stop at `awaiting_approval` after planning.
    approval: Option<bool>,
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

pub async fn create(
    caller: Caller,
    State(state): State<AppState>,
    body: JsonBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(AccessRole::Operator)?;
    let body: CreateRun = body.parse()?;
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
    let project = caller.project(&state, body.project.trim()).await.map_err(|_| ApiError {
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
    let audit = AuditEntry::new(Some(&*caller.key), "POST", "/api/v1/runs", 201, None);
    let req =
        checkout::ProjectRun { project: &project, spec, settings, origin: None, audit: Some(audit), base_branch: None };
    let run = match checkout::enqueue(&state.store, req).await {
        Ok((run, _)) => run,
        Err(EngineError::Invalid(msg)) => return Err(ApiError::invalid("project", msg)),
        Err(EngineError::Store(e)) => return Err(e.into()),
        Err(other) => return Err(ApiError::internal(&other)),
    };
    Ok((StatusCode::CREATED, Json(run_json(&run))))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    /// Absent, null or a string.
    comment: Option<String>,
    /// Approval only: protected globs the run may change.
    allow_paths: Option<Vec<String>>,
}

/// Approves or rejects a plan. The caller's role is checked before the body is judged.
async fn decide(
    caller: Caller,
    state: AppState,
    id: String,
    body: JsonBody,
    approved: bool,
) -> Result<Json<Value>, ApiError> {
    caller.require(AccessRole::Operator)?;
    let decision: Decision = body.parse_optional()?.unwrap_or_default();
    let comment = decision.comment.unwrap_or_default();
    rules::free_text("comment", &comment, rules::COMMENT_MAX_CHARS)?;
    if !approved && decision.allow_paths.is_some() {
        // As if the type refused it (the reject body is `Rejection`, without the field).
        return Err(ApiError::invalid("allow_paths", "unknown field `allow_paths`: a rejection takes only `comment`"));
    }
    let allow_paths = decision.allow_paths.unwrap_or_default();
    rules::allow_paths("allow_paths", &allow_paths)?;
    let run = caller.run(&state, &id).await?;
    let verb = if approved { "approve" } else { "reject" };
    let decision = autodev_engine::Decision { approved, by: caller.key.name.clone(), comment, allow_paths };
    let result = approve_plan(&state.store, &run.id, &decision).await;
    let status = if result.is_ok() { 200 } else { 409 };
    state.store.audit(Some(&*caller.key), "POST", &format!("/api/v1/runs/{}/{verb}", run.id), status, None).await?;
    match result {
        Ok(_) => Ok(Json(run_json(&state.store.get_run(&run.id).await?))),
        Err(EngineError::Invalid(msg)) => Err(ApiError::conflict(msg)),
        Err(EngineError::Store(e)) => Err(e.into()),
        Err(other) => Err(ApiError::internal(&other)),
    }
}

/// `POST /api/v1/runs/{id}/approve` with an optional `{"comment"}`.
pub async fn approve(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: JsonBody,
) -> Result<Json<Value>, ApiError> {
    decide(caller, state, id, body, true).await
}

/// `POST /api/v1/runs/{id}/reject` with an optional `{"comment"}`: the run is cancelled.
pub async fn reject(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: JsonBody,
) -> Result<Json<Value>, ApiError> {
    decide(caller, state, id, body, false).await
}

/// `POST /api/v1/runs/{id}/deliver`: tries the run's undelivered milestones again (those
/// that failed or are waiting for their next attempt), now, in the background. 202 with the
/// milestones as they stand; `GET /api/v1/runs/{id}` shows how they end.
pub async fn deliver(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(AccessRole::Operator)?;
    let run = caller.run(&state, &id).await?;
    let queued = state.store.retry_outbox(&run.id).await?;
    state.store.audit(Some(&*caller.key), "POST", &format!("/api/v1/runs/{}/deliver", run.id), 202, None).await?;
    let dispatcher = state.delivery.clone();
    let run_id = run.id.clone();
    tokio::spawn(async move {
        if let Err(e) = dispatcher.deliver_run(&run_id).await {
            tracing::error!(run = %run_id, error = %e, "delivery retry failed");
        }
    });
    let deliveries = crate::delivery::deliveries_json(&state.store.outbox_for_run(&run.id).await?);
    Ok((StatusCode::ACCEPTED, Json(serde_json::json!({"run": run.id, "retrying": queued, "deliveries": deliveries}))))
}

/// `GET /api/v1/runs/{id}/artifacts/{report|patch}`: the delivered `report.md` or
/// `changes.patch`; 404 until the run has delivered.
pub async fn artifact(
    caller: Caller,
    State(state): State<AppState>,
    Path((id, name)): Path<(String, String)>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    caller.require(AccessRole::Viewer)?;
    let run = caller.run(&state, &id).await?;
    let (file, content_type) = match name.as_str() {
        "report" => ("report.md", "text/markdown; charset=utf-8"),
        "patch" => ("changes.patch", "text/x-diff; charset=utf-8"),
        other => return Err(ApiError::not_found(format!("no artifact `{other}`: the artifacts are report and patch"))),
    };
    let path = state.home.join("runs").join(&run.id).join(file);
    match tokio::fs::read(&path).await {
        Ok(mut bytes) => {
            if name == "report" {
                // Deliveries happen after the report is written: how they stand now.
                bytes.extend_from_slice(
                    crate::delivery::report_section(
                        &state.store.outbox_for_run(&run.id).await?,
                        &state.store.run_links(&run.id).await?,
                    )
                    .as_bytes(),
                );
            }
            Ok(([(axum::http::header::CONTENT_TYPE, content_type)], bytes).into_response())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(ApiError::not_found(format!("run {} has no {name} yet (it is {})", run.short_id, run.state)))
        }
        Err(e) => Err(ApiError::internal(&e)),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// Only the last N days (default 30, at most 366).
    days: Option<i64>,
}

impl UsageQuery {
    pub fn days(days: i64) -> Self {
        Self { days: Some(days) }
    }
}

/// `GET /api/v1/usage?days=N`: tokens and cost by project, model and day.
pub async fn usage(
    caller: Caller,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<UsageQuery>,
) -> Result<Json<Value>, ApiError> {
    caller.require(AccessRole::Viewer)?;
    let days = q.days.unwrap_or(30);
    if !(1..=366).contains(&days) {
        return Err(ApiError::invalid("days", "days must be 1 to 366"));
    }
    let since = autodev_store::now_ms() - days * 86_400_000;
    let mut rows = state.store.usage(since).await?;
    // A key scoped to projects sees their usage only, and its own among the keys.
    let visible: Option<std::collections::HashSet<String>> = match caller.scope() {
        Some(_) => Some(
            state
                .store
                .list_projects()
                .await?
                .into_iter()
                .filter(|p| caller.sees(Some(&p.id)))
                .map(|p| p.name)
                .collect(),
        ),
        None => None,
    };
    if let Some(names) = &visible {
        rows.retain(|r| names.contains(&r.project));
    }
    let total_cost: i64 = rows.iter().map(|r| r.cost_micros).sum();
    let items: Vec<Value> = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "project": if r.project.is_empty() { Value::Null } else { Value::String(r.project.clone()) },
                "model": r.model, "day": r.day, "kind": r.kind, "calls": r.calls,
                "input_tokens": r.input_tokens, "output_tokens": r.output_tokens,
                "cost_usd": r.cost_micros as f64 / 1e6,
            })
        })
        .collect();
    let by_key: Vec<Value> = state
        .store
        .usage_by_key(since)
        .await?
        .iter()
        .filter(|r| visible.is_none() || r.key == caller.key.name)
        .map(|r| {
            serde_json::json!({
                "key": if r.key.is_empty() { Value::Null } else { Value::String(r.key.clone()) },
                "kind": r.kind, "calls": r.calls,
                "input_tokens": r.input_tokens, "output_tokens": r.output_tokens,
                "cost_usd": r.cost_micros as f64 / 1e6,
            })
        })
        .collect();
    Ok(Json(serde_json::json!({
        "days": days, "usage": items, "by_key": by_key, "total_cost_usd": total_cost as f64 / 1e6
    })))
}
