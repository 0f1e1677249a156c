//! `/api/v1/runs…`, `/api/v1/usage` and `/api/v1/projects/{key}/ask` over the service layer.
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::Value;

use crate::caller::Caller;
use crate::error::ApiError;
use crate::extract::{ApiQuery, JsonBody};
use crate::service::{self, runs::ListRuns};
use crate::state::AppState;
use crate::views::run_json;

/// `POST /api/v1/runs`: 201 with the run.
pub async fn create(
    caller: Caller,
    State(state): State<AppState>,
    body: JsonBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    // The role is checked before the body is judged.
    caller.require(autodev_domain::AccessRole::Operator)?;
    let run = service::runs::create(&state, &caller, body.parse()?).await?;
    Ok((StatusCode::CREATED, Json(run_json(&run))))
}

/// `GET /api/v1/runs?project=&state=&limit=&cursor=`.
pub async fn list(
    caller: Caller,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ListRuns>,
) -> Result<Response, ApiError> {
    let body = service::runs::list(&state, &caller, q).await?;
    Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// `GET /api/v1/runs/{id}`.
pub async fn get(caller: Caller, State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let detail = service::runs::get(&state, &caller, &id).await?;
    Ok(Json(detail.view()).into_response())
}

/// `POST /api/v1/runs/{id}/cancel`.
pub async fn cancel(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(run_json(&service::runs::cancel(&state, &caller, &id).await?)))
}

/// Approves or rejects. The caller's role is checked before the body is judged.
async fn decide(
    caller: Caller,
    state: AppState,
    id: String,
    body: JsonBody,
    approved: bool,
) -> Result<Json<Value>, ApiError> {
    caller.require(autodev_domain::AccessRole::Operator)?;
    let decision = body.parse_optional()?.unwrap_or_default();
    Ok(Json(run_json(&service::runs::decide(&state, &caller, &id, approved, decision).await?)))
}

/// `POST /api/v1/runs/{id}/approve` with an optional `{"comment", "allow_paths"}`.
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

/// `POST /api/v1/runs/{id}/deliver`: 202 with the milestones as they stand; `GET
/// /api/v1/runs/{id}` shows how they end.
pub async fn deliver(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<service::runs::Redelivery>), ApiError> {
    Ok((StatusCode::ACCEPTED, Json(service::runs::deliver(&state, &caller, &id).await?)))
}

/// `POST /api/v1/runs/{id}/revert`: 201 with the revert run, or 409 with why not.
pub async fn revert(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    Ok((StatusCode::CREATED, Json(run_json(&service::runs::revert(&state, &caller, &id).await?))))
}

/// `GET /api/v1/runs/{id}/artifacts/{report|patch}`.
pub async fn artifact(
    caller: Caller,
    State(state): State<AppState>,
    Path((id, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let a = service::runs::artifact(&state, &caller, &id, &name).await?;
    Ok(([(axum::http::header::CONTENT_TYPE, a.content_type)], a.bytes).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Replay events after this sequence number (like `Last-Event-ID`).
    pub after: Option<i64>,
}

/// Where an event stream starts: `Last-Event-ID` when sent, else `?after=`, else the start.
pub fn events_after(headers: &HeaderMap, after: Option<i64>) -> Result<i64, ApiError> {
    match headers.get("last-event-id").and_then(|v| v.to_str().ok()).map(|v| v.trim().parse::<i64>()) {
        Some(Ok(seq)) => Ok(seq),
        Some(Err(_)) => Err(ApiError::invalid("Last-Event-ID", "Last-Event-ID must be an event's sequence number")),
        None => Ok(after.unwrap_or(0)),
    }
}

/// A run's events as Server-Sent Events (`id` the sequence number, `event` the kind).
pub fn sse(
    events: impl Stream<Item = autodev_domain::Event> + Send + 'static,
) -> Sse<impl Stream<Item = Result<SseEvent, std::convert::Infallible>>> {
    let stream = events.map(|e| {
        let data = serde_json::to_string(&e).unwrap_or_default();
        Ok(SseEvent::default().id(e.seq.to_string()).event(e.kind.name()).data(data))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// `GET /api/v1/runs/{id}/events`: every event after `Last-Event-ID` (or `?after=`), then new
/// ones as they are stored, until the run has finished.
pub async fn events(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, std::convert::Infallible>>>, ApiError> {
    let feed = service::runs::open_events(&state, &caller, &id).await?;
    Ok(sse(feed.follow(events_after(&headers, q.after)?)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// Only the last N days (default 30, at most 366).
    days: Option<i64>,
}

/// `GET /api/v1/usage?days=N`: tokens and cost by project, model and day.
pub async fn usage(
    caller: Caller,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<UsageQuery>,
) -> Result<Json<service::usage::UsageReport>, ApiError> {
    Ok(Json(service::usage::usage(&state, &caller, q.days).await?))
}

/// `POST /api/v1/projects/{key}/ask` with `{"question", "conversation"?, "stream"?}`: the
/// answer as JSON, or streamed as server-sent events (`delta` … `answer`, or `error`) when
/// `stream` is true or the client accepts `text/event-stream`. Everything that can be refused
/// is checked before the stream starts, so a refusal is a plain HTTP error.
pub async fn ask(
    caller: Caller,
    State(state): State<AppState>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: JsonBody,
) -> Result<Response, ApiError> {
    caller.require(autodev_domain::AccessRole::Viewer)?;
    let body: service::ask::AskBody = body.parse()?;
    let prepared = service::ask::prepare(&state, &caller, &key, &body.question, body.conversation.as_deref()).await?;
    let accepts_stream = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/event-stream"));
    if !body.stream && !accepts_stream {
        return Ok(Json(prepared.answer(&state, &caller, None).await?).into_response());
    }
    Ok(prepared.stream(state, caller))
}

/// `GET /api/v1/ask/conversations`: the caller's conversations, the most recent first.
pub async fn conversations(
    caller: Caller,
    State(state): State<AppState>,
) -> Result<Json<Vec<service::ask::ConversationView>>, ApiError> {
    Ok(Json(service::ask::conversations(&state, &caller).await?))
}

/// `GET /api/v1/ask/conversations/{id}`: its turns.
pub async fn conversation(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<service::ask::TurnView>>, ApiError> {
    Ok(Json(service::ask::conversation(&state, &caller, &id).await?))
}

/// `DELETE /api/v1/ask/conversations/{id}`: 204.
pub async fn delete_conversation(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    service::ask::delete_conversation(&state, &caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
