//! The HTTP API over real HTTP (port 0) on a real SQLite store.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns
mod suite;
