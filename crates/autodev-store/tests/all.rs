//! Store tests against a real SQLite file per test.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns
mod suite;
