//! The `autodev` binary as a user runs it: real processes, a scripted model over HTTP, real
//! git repositories.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns
mod suite;
