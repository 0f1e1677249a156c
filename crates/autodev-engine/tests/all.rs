//! Engine tests: the real engine, store, git and sandbox, against a scripted
//! OpenAI-compatible model served over HTTP by wiremock.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns
mod suite;
