//! Wire-format tests: each provider against a local mock server answering with the
//! vendors' documented response shapes (see `fixtures/README.md`).
mod suite;
