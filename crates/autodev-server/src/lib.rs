//! Autodev as a service.
//!
//! What it is for: what `autodev serve` and `autodev worker` need beyond the engine — API
//! keys and roles today; the HTTP API, webhooks, health and metrics as issue 4 proceeds.
//! What it is not for: running agents (the engine) or storage (the store).
//!
//! # Layout
//! - [`auth`]: API keys — generation from the OS RNG, a keyed hash (HMAC-SHA-256 with a
//!   server-side pepper) for storage and lookup, and the roles that gate each request.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod auth;
