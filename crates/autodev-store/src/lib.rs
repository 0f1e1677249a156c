//! Autodev's store: runs, tasks, conversations, model calls, tool calls and events.
//!
//! What it is for: durable state that lets a run survive `kill -9`. DESIGN.md's
//! persist-before-act rule lives here as an API: `record_model_call` stores a model reply
//! (with its usage and cost) before any of its tool calls run, `tool_started` and
//! `tool_finished` bracket each tool call, and every record is written in one transaction
//! with the event that announces it. What it is not for: deciding what happens next.
//!
//! SQLite (WAL, `synchronous=NORMAL`: a committed transaction survives the process being
//! killed; only an OS crash can lose the last few) is the embedded default. Queries are
//! runtime-checked `query`/`query_as` in the SQL subset PostgreSQL shares, so a PostgreSQL
//! backend can reuse them.
//!
//! # Layout
//! - [`Store`]: the pool and all queries.
//! - [`rows`]: the row types returned to the engine.
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod rows;
mod store;

pub use rows::{
    KeyRow, ModelCallRecord, NewRun, ProjectRow, RunRow, StoredModelCall, StoredToolCall, TaskRow, ToolStart,
};
pub use store::{Stats, Store, StoreError, UsageRow, now_ms};

pub type Result<T> = std::result::Result<T, StoreError>;
