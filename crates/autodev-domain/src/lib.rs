//! Autodev's domain model: the words of `docs/architecture.md` and the README as types.
//!
//! What it is for: ids, specs, plans (a validated DAG of tasks), the run and task state
//! machines, events, the conversation types shared by every model provider, money, and the
//! ports (traits) that adapters implement. What it is not for: I/O of any kind; nothing here
//! touches a file, a socket, a process or a clock.
//!
//! # Layout
//! - [`ids`]: `RunId` (UUIDv7) and its short form used in branch names.
//! - [`state`]: `RunState`, `TaskState` and their allowed transitions.
//! - [`spec`]: validation of the spec text a run starts from.
//! - [`plan`]: the planner's `submit_plan` arguments, parsed into a validated DAG.
//! - [`message`]: messages, tool calls, tool specs, model requests and responses, usage.
//! - [`event`]: the append-only record of a run.
//! - [`money`]: cost in micro-dollars.
//! - [`ports`]: `ModelClient`, the one trait the engine needs from a model provider.
//! - [`access`]: API roles.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod access;
pub mod event;
pub mod ids;
pub mod message;
pub mod money;
pub mod plan;
pub mod ports;
pub mod redact;
pub mod settings;
pub mod spec;
pub mod state;

pub use access::AccessRole;
pub use event::{DeliveryStep, Event, EventKind, Evidence};
pub use ids::RunId;
pub use message::{
    CallMeta, Fallback, Message, ModelRequest, ModelResponse, Role, StopReason, ToolCall, ToolSpec, Usage,
};
pub use money::{MicroUsd, month_of};
pub use plan::{Plan, PlanError, PlannedTask};
pub use ports::{ModelClient, ModelError, TextSink};
pub use redact::mask_url_credentials;
pub use settings::{
    DEFAULT_CI_REPAIR_ROUNDS, DeploySettings, Permission, ProjectSettings, RevertOf, RunSettings, ToolCallMode,
};
pub use spec::{Spec, SpecError};
pub use state::{RunState, TaskState};

/// Turns free text into a short lowercase ASCII slug for branch names: `Add a CLI!` → `add-a-cli`.
pub fn slugify(text: &str, max_len: usize) -> String {
    let mut out = String::new();
    let mut dash = false;
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            if dash && !out.is_empty() {
                out.push('-');
            }
            dash = false;
            out.push(c.to_ascii_lowercase());
            if out.len() >= max_len {
                break;
            }
        } else {
            dash = true;
        }
    }
    let trimmed = out.trim_end_matches('-').to_string();
    if trimmed.is_empty() { "run".to_string() } else { trimmed }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugify_keeps_words_and_drops_punctuation() {
        assert_eq!(slugify("Add a `--verbose` flag!", 40), "add-a-verbose-flag");
        assert_eq!(slugify("   ", 40), "run");
        assert_eq!(slugify("Ünïcode only ✓", 40), "n-code-only");
        assert_eq!(slugify("abcdefghij klm", 5), "abcde");
    }
}
