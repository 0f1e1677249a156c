//! The HTTP API over real HTTP (port 0), on SQLite and on PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns
mod suite;
