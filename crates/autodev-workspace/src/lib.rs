//! Where agents work: git worktrees, the v2 agent tools, and sandboxed commands.
//!
//! What it is for: everything that touches the user's repository or runs a process on the
//! agent's behalf. What it is not for: deciding what to do (that is the engine's job) or
//! talking to models.
//!
//! # Layout
//! - [`git`]: a typed wrapper over the `git` CLI (porcelain output only).
//! - [`paths`]: resolving tool paths inside a workspace root; anything that leaves it is refused.
//! - [`sandbox`]: running agent commands isolated from the host (bubblewrap namespaces, one
//!   sandbox per agent), or — where the operator chose so — with Landlock or nothing.
//! - [`fsops`]: file I/O beneath a worktree through a directory handle (cap-std), so no
//!   symlink, however raced, leads a tool outside it.
//! - [`tools`]: the v2 tool interface (`list_files`, `read_file`, `write_file`,
//!   `edit_file`, `insert_lines`, `undo_edit`, `search`, `run`, `finish`) and their JSON
//!   schemas; [`edit`] the text side of the edits (tiers of matching, line endings,
//!   elisions) and [`syntax`] the syntax errors an edit introduced (tree-sitter).
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod edit;
pub mod fsops;
pub mod git;
pub mod locks;
pub mod paths;
pub mod protect;
pub mod sandbox;
pub mod syntax;
pub mod tools;

pub use git::{Git, GitError, MergeOutcome, RevertRefusal};
pub use sandbox::{CommandOutcome, Sandbox, SandboxMode, SandboxPolicy, SandboxSupport};
pub use tools::{CodeHit, CodeSearch, TOOL_INTERFACE_VERSION, ToolBox, ToolOutcome};
