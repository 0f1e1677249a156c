//! Autodev as a service.
//!
//! What it is for: what `autodev serve` and `autodev worker` need beyond the engine — the HTTP
//! API, API keys, roles and rate limits, webhooks in, metrics, the OpenAPI document, and the
//! workers. What it is not for: running agents (the engine) or storage (the store).
//!
//! # Layout
//! - [`state`]: [`AppState`], what every request, page, tool call and worker shares, and the
//!   [`ModelFactory`] that builds a run's model client.
//! - [`caller`]: the [`Caller`] (bearer key → role, what its key sees).
//! - [`service`]: what can be done — runs, projects, questions, usage — once, typed, with
//!   authorization and audit inside. The front ends below are adapters over it.
//! - [`api`]: the REST handlers; [`ui`]: the web UI; [`mcp`]: the MCP server; [`views`]: how
//!   the API shows runs and projects.
//! - [`app`]: the axum router, health and readiness.
//! - [`auth`]: API keys — generation from the OS RNG, a keyed hash (HMAC-SHA-256 with a
//!   server-side pepper) for storage and lookup. [`access`]: the per-request key cache, the
//!   per-key rate limit (governor) and the per-key stream and question places.
//! - [`error`]: the one JSON error shape; [`extract`]: JSON bodies and queries read strictly;
//!   [`rules`]: the validation rules the OpenAPI document publishes.
//! - [`metrics`]: `/metrics` in the Prometheus text format; [`openapi`]: the OpenAPI document.
//! - [`webhooks`]: GitHub, GitLab and Jira receipts: verified, deduplicated, turned into runs;
//!   [`commanders`]: who may command Autodev by comment.
//! - `delivery` (the `autodev-delivery` crate): telling forges, trackers and chat what runs did.
//! - [`workers`]: in-process workers that claim queued runs (with leases) and drive them.
//! - [`serve`]: binding and graceful shutdown.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod access;
pub mod api;
pub mod app;
pub mod auth;
pub mod caller;
pub mod commanders;
pub mod error;
pub mod extract;
pub mod mcp;
pub mod metrics;
pub mod openapi;
pub mod rules;
pub mod service;
pub mod state;
pub mod ui;
pub mod views;
pub mod webhooks;
pub mod workers;

pub use app::router;
/// Deliveries out (their own crate, `autodev-delivery`), under the name the server has always
/// given them.
pub use autodev_delivery as delivery;
pub use caller::Caller;
pub use state::{AppState, ModelFactory};

/// Serves the operations endpoints only (see `app::ops_router`) until `shutdown`.
pub async fn serve_ops(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, app::ops_router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// Serves until `shutdown` is cancelled, then stops accepting and lets in-flight requests
/// finish (event streams are cut).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    // The peer's address is known to handlers (the sign-in throttle is per client).
    let app = router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await }).await
}
