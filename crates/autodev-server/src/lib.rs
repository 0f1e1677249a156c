//! Autodev as a service.
//!
//! What it is for: what `autodev serve` needs beyond the engine — the HTTP API, API keys and
//! roles; webhooks, metrics and workers as issue 4 proceeds. What it is not for: running
//! agents (the engine) or storage (the store).
//!
//! # Layout
//! - [`auth`]: API keys — generation from the OS RNG, a keyed hash (HMAC-SHA-256 with a
//!   server-side pepper) for storage and lookup.
//! - [`app`]: the axum router, the `Caller` extractor (bearer key → role), the handlers.
//! - [`error`]: the one JSON error shape.
//! - [`projects`], [`runs`]: the handlers that create and change things.
//! - [`metrics`]: `/metrics` in the Prometheus text format.
//! - [`workers`]: in-process workers that claim queued runs (with leases) and drive them.
//! - [`serve`]: binding and graceful shutdown.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod access;
pub mod app;
pub mod auth;
pub mod error;
pub mod metrics;
pub mod openapi;
pub mod projects;
pub mod runs;
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
    axum::serve(listener, router(state)).with_graceful_shutdown(async move { shutdown.cancelled().await }).await
}
