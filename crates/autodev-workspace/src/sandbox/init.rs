//! Landlock as a second layer inside the bubblewrap sandbox.
//!
//! Landlock cannot be put on bubblewrap itself (a Landlock-restricted process may not mount),
//! so the sandbox starts a small init first: the `autodev` binary, bound read-only into the
//! sandbox and run as `autodev __sandbox-init [--network] --write DIR … -- PROGRAM ARGS…`. It
//! restricts itself (writes beneath the `--write` directories only; no TCP unless
//! `--network`) and execs the supervisor, which every command inherits the restriction from.
//! A binary that wants this calls [`run_if_requested`] first thing in `main` and
//! [`set_helper`] with its own path; without a helper (library tests) the sandbox runs
//! without the second layer and says so in `autodev doctor`.
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use landlock::RulesetStatus;

/// The first argument that makes the binary act as the sandbox's init.
pub const INIT_ARG: &str = "__sandbox-init";
/// Where the helper appears inside the sandbox.
pub(crate) const HELPER_INSIDE: &str = "/run/autodev-init";

static HELPER: OnceLock<PathBuf> = OnceLock::new();

/// Names the binary that can act as the init (normally `std::env::current_exe()`).
pub fn set_helper(path: PathBuf) {
    let _ = HELPER.set(path);
}

/// The helper, when one was named and Landlock is there to apply.
pub fn helper() -> Option<&'static Path> {
    super::spawn::SandboxSupport::cached().landlock_abi?;
    HELPER.get().map(PathBuf::as_path).filter(|p| p.is_file())
}

/// When the process was started as the sandbox's init, applies Landlock and execs the
/// program; does not return then (exit code 126 when the exec fails). Returns otherwise.
pub fn run_if_requested() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).map(|a| a.as_os_str()) != Some(INIT_ARG.as_ref()) {
        return;
    }
    let mut writable = Vec::new();
    let mut network = false;
    let mut rest = args[2..].iter();
    let mut program = Vec::new();
    while let Some(arg) = rest.next() {
        match arg.to_str() {
            Some("--network") => network = true,
            Some("--write") => writable.extend(rest.next().map(PathBuf::from)),
            Some("--") => {
                program = rest.cloned().collect();
                break;
            }
            _ => exit_with(&format!("{INIT_ARG}: unexpected argument {arg:?}")),
        }
    }
    let Some((prog, prog_args)) = program.split_first() else { exit_with(&format!("{INIT_ARG}: no program given")) };
    match super::spawn::write_ruleset(&writable, network).map(|r| r.restrict_self()) {
        Ok(Ok(status)) if status.ruleset != RulesetStatus::NotEnforced => {}
        // The first layer (namespaces) stands alone; doctor reports the second layer.
        Ok(Ok(_)) | Ok(Err(_)) | Err(_) => {}
    }
    let err = std::process::Command::new(prog).args(prog_args).exec();
    exit_with(&format!("{INIT_ARG}: cannot run {prog:?}: {err}"))
}

#[allow(clippy::print_stderr)]
fn exit_with(message: &str) -> ! {
    eprintln!("{message}");
    std::process::exit(126)
}
