//! Wire-format tests: each provider against a local mock server answering with the
//! vendors' documented response shapes (see `fixtures/README.md`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns
mod suite;
