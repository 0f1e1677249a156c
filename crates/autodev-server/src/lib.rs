//! Autodev as a service.
//!
//! What it is for: what `autodev serve` and `autodev worker` need beyond the engine — the HTTP
//! API, API keys, roles and rate limits, webhooks in, metrics, the OpenAPI document, and the
//! workers. What it is not for: running agents (the engine) or storage (the store).
//!
//! # Layout
//! - [`auth`]: API keys — generation from the OS RNG, a keyed hash (HMAC-SHA-256 with a
//!   server-side pepper) for storage and lookup.
//! - [`access`]: the per-request key cache and the per-key rate limit (governor).
//! - [`app`]: the axum router, the `Caller` extractor (bearer key → role), the handlers.
//! - [`error`]: the one JSON error shape.
//! - [`projects`], [`runs`]: the handlers that create and change things.
//! - [`metrics`]: `/metrics` in the Prometheus text format.
//! - [`openapi`]: the OpenAPI document (utoipa).
//! - [`webhooks`]: GitHub, GitLab and Jira deliveries: verified, deduplicated, turned into runs.
//! - [`workers`]: in-process workers that claim queued runs (with leases) and drive them.
//! - [`serve`]: binding and graceful shutdown.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod access;
pub mod app;
pub mod ask;
pub mod auth;
pub mod commanders;
pub mod delivery;
pub mod error;
pub mod extract;
pub mod mcp;
pub mod metrics;
pub mod openapi;
pub mod projects;
pub mod rules;
pub mod runs;
pub mod ui;
pub mod webhooks;
pub mod workers;

pub use app::{AppState, router};

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
