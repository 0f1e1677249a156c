//! Store tests against a real SQLite file per test.
mod suite;
