//! Autodev's use-cases: create a run from a spec, plan it, execute the plan's tasks with
//! coding agents in parallel worktrees, verify with the project's tests (repairing
//! failures), deliver a branch with a report — and resume any of it after a crash.
//!
//! What it is for: the order of things and the rules (persist before acting, budgets, the
//! run and task lifecycles). What it is not for: wire formats, SQL or process management,
//! which live in the adapters (`autodev-llm`, `autodev-store`, `autodev-workspace`).
//!
//! # Layout
//! - [`Engine`] (`engine.rs`): what the engine holds (store, model, prices, sandbox, budgets)
//!   and how it is built; `run.rs`: creating a run and driving it (claim, lease, phases,
//!   report); `ctx.rs`: what one run being driven shares with its tasks; `gates.rs`: the
//!   plan and delivery gates, approving, rejecting and cancelling; `error.rs`: [`EngineError`].
//! - [`checkout`]: runs made for a project (API, webhooks): enqueued without git; a worker's
//!   clone, checkpoints in the project's repository, delivery by push.
//! - [`after`]: after the pull request: whose timeline a pull request's steps are on, and
//!   reverting a merged change (checked, then a revert run that calls no model).
//! - [`lease`]: one driver per run: claim tokens, the lease keeper, a dead holder told.
//! - `agent.rs`: one agent conversation as an `AgentLoop` (open, step, reply, call, record,
//!   tools), persisted turn by turn, resumable.
//! - `phases.rs`: planning, executing (parallel tasks, commits, merges), verifying,
//!   delivering.
//! - [`code`]: the code index as runs, the API and MCP use it (where it lives, fresh
//!   opens, fused search, a project's source).
//! - [`ask`]: answers from the code index with checked citations.
//! - [`compact`]: keeping a conversation inside the context window.
//! - [`prompts`]: the opening messages of each kind of conversation.
//! - [`detect`]: test-command detection and the planner's view of the repository.
//! - [`settings`]: the per-run settings stored with the run (typed in `autodev_domain`).
//! - [`telemetry`]: a run as one OpenTelemetry trace (its stored `traceparent`, parents, links).
//! - `evidence.rs`: whether the run's tests fail on the base commit (FAIL_TO_PASS).
//! - `isolation.rs`: the sandbox check at the start of a run, the unisolated-mode and
//!   refused-configuration warnings, the per-project cache key, a run's sandbox policy and
//!   its test command in the sandbox.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod after;
mod agent;
pub mod ask;
pub mod checkout;
pub mod code;
pub mod compact;
mod ctx;
pub mod detect;
mod engine;
mod error;
mod evidence;
mod gates;
pub mod gc;
mod isolation;
pub mod lease;
mod outcome;
mod phases;
pub mod prompts;
pub mod report;
mod run;
pub mod settings;
pub mod telemetry;

pub use engine::{Budgets, Engine, EngineConfig, SandboxConfig};
pub use error::EngineError;
pub use gates::{Decision, Gate, MAX_PLAN_REVISIONS, approve_plan, cancel_run};
pub use isolation::unisolated_message;
pub use lease::{LeaseTiming, claim_token, process_owner};
pub use outcome::Outcome;
pub use run::RunRequest;
pub use settings::{RunSettings, ToolCallMode};
