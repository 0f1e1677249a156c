//! The HTTP application: the routes of the API, the web UI, MCP and webhooks, their layers,
//! and the health and readiness checks.
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::api;
use crate::error::ApiError;
use crate::state::AppState;

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
        .route("/api/v1/projects", get(api::projects::list).post(api::projects::create))
        .route(
            "/api/v1/projects/{key}",
            get(api::projects::get).patch(api::projects::update).delete(api::projects::delete),
        )
        .route("/api/v1/projects/{key}/ask", post(api::runs::ask))
        .route("/api/v1/ask/conversations", get(api::runs::conversations))
        .route("/api/v1/ask/conversations/{id}", get(api::runs::conversation).delete(api::runs::delete_conversation))
        .route("/api/v1/runs", get(api::runs::list).post(api::runs::create))
        .route("/api/v1/runs/{id}", get(api::runs::get))
        .route("/api/v1/runs/{id}/cancel", post(api::runs::cancel))
        .route("/api/v1/runs/{id}/approve", post(api::runs::approve))
        .route("/api/v1/runs/{id}/reject", post(api::runs::reject))
        .route("/api/v1/runs/{id}/deliver", post(api::runs::deliver))
        .route("/api/v1/runs/{id}/revert", post(api::runs::revert))
        .route("/api/v1/runs/{id}/artifacts/{name}", get(api::runs::artifact))
        .route("/api/v1/usage", get(api::runs::usage))
        .route("/api/v1/runs/{id}/events", get(api::runs::events))
        .route("/webhooks/github", post(crate::webhooks::github::receive))
        .route("/webhooks/gitlab", post(crate::webhooks::gitlab::receive))
        .route("/webhooks/jira", post(crate::webhooks::jira::receive))
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        // Bodies read by the extractors stop at the limit; a declared Content-Length over it is
        // refused before the body is read (tower-http), in the one error shape (json_errors).
        .layer(axum::extract::DefaultBodyLimit::max(crate::extract::MAX_BODY_BYTES))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(crate::extract::MAX_BODY_BYTES))
        .layer(crate::error::JsonErrorsLayer)
        .layer(axum::middleware::from_fn(crate::metrics::track))
        .layer(axum::middleware::from_fn(crate::metrics::trace));
    // MCP over streamable HTTP, behind the API's keys (see `mcp`).
    let mcp = Router::new()
        .nest_service("/mcp", crate::mcp::http_service(state.clone(), tokio_util::sync::CancellationToken::new()))
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::mcp::authenticate))
        .layer(axum::middleware::from_fn(crate::metrics::track));
    ui.layer(axum::middleware::from_fn(crate::metrics::track)).merge(api).merge(mcp).with_state(state)
}

/// The operations endpoints alone (`/health`, `/ready`, `/metrics`): what `autodev worker
/// --listen` serves for probes and Prometheus.
pub fn ops_router(state: AppState) -> Router {
    let _ = crate::metrics::handle();
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(crate::metrics::render))
        .fallback(|| async { ApiError::not_found("no such endpoint: a worker serves /health, /ready and /metrics") })
        .layer(crate::error::JsonErrorsLayer)
        .with_state(state)
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
