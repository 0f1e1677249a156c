//! Autodev's store: runs, tasks, conversations, model calls, tool calls and events.
//!
//! What it is for: durable state that lets a run survive `kill -9`. The persist-before-act
//! rule (README, "How a run works") lives here as an API: `record_model_call` stores a model
//! reply (with its usage and cost) before any of its tool calls run, `tool_started` and
//! `tool_finished` bracket each tool call, and every record is written in one transaction
//! with the event that announces it. What it is not for: deciding what happens next.
//!
//! SQLite (WAL, `synchronous=NORMAL`: a committed transaction survives the process being
//! killed; only an OS crash can lose the last few) is the embedded default; PostgreSQL
//! (`DATABASE_URL=postgres://…`) lets many processes on many machines share one store and
//! one queue. Every query is written once, as runtime-checked SQL in the subset both share
//! (`$N` placeholders, `ON CONFLICT`, `RETURNING`); only the queue claim (`FOR UPDATE SKIP
//! LOCKED`) and a date function differ. The schemas come from migrations kept side by side
//! (`migrations/sqlite`, `migrations/postgres`), and the store tests run on both.
//!
//! # Layout
//! - [`Store`] (`store.rs`): the pools, migrations and the transaction entry points; its
//!   queries live by aggregate under `store/`: `runs` (runs and events), `tasks` (tasks,
//!   conversations, model and tool calls), `keys` (API keys and the audit log), `projects`,
//!   `lease` (run leases, the queue claim and the fence that keeps a driver that lost its run
//!   from writing), `receipts` (inbound webhook deliveries), `budget`, `usage`, `gates`,
//!   `outbox`, `sessions`.
//! - `error`: [`StoreError`]; `clock`: [`now_ms`].
//! - `tx`: one write transaction on either backend.
//! - [`rows`]: the row types returned to the engine.
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod clock;
mod error;
mod rows;
mod store;
mod tx;

pub use clock::now_ms;
pub use error::StoreError;
pub use rows::AuditEntry;
pub use rows::{
    KeyRow, ModelCallRecord, NewRun, ProjectRow, Recorded, RunRef, RunRow, StoredModelCall, StoredToolCall, TaskRow,
    ToolStart,
};
pub use store::artifacts::ARTIFACTS;
pub use store::budget::{BUDGET_EXCEEDED, LimitKind, Limits, Reservation};
pub use store::conversations::{AskConversationRow, AskTurnRow};
pub use store::outbox::OutboxRow;
pub use store::retention::Collected;
pub use store::timeline::{StepRow, step_event};
pub use store::usage::{KeyUsageRow, NewAsk, UsageRow};
pub use store::{MigrationStatus, Migrations, Stats, Store};

pub type Result<T> = std::result::Result<T, StoreError>;
