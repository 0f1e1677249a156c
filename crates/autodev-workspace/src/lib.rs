//! Where agents work: git worktrees, the v1 agent tools, and sandboxed commands.
//!
//! What it is for: everything that touches the user's repository or runs a process on the
//! agent's behalf. What it is not for: deciding what to do (that is the engine's job) or
//! talking to models.
//!
//! # Layout
//! - [`git`]: a typed wrapper over the `git` CLI (porcelain output only).
//! - [`paths`]: resolving tool paths inside a workspace root; anything that leaves it is refused.
//! - [`sandbox`]: running a command with a time limit, an output cap, a scrubbed environment,
//!   its own process group, and Landlock confining writes (where the kernel has it).
//! - [`tools`]: the v1 tool interface of DESIGN.md (`list_files`, `read_file`, `write_file`,
//!   `edit_file`, `search`, `run`, `finish`) and their JSON schemas.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod git;
pub mod paths;
pub mod sandbox;
pub mod tools;

pub use git::{Git, GitError, MergeOutcome};
pub use sandbox::{CommandOutcome, SandboxPolicy, SandboxSupport};
pub use tools::{ToolBox, ToolOutcome};
