mod commands;
mod deploy;
mod mcp;
mod ops;
mod processes;
mod resume;
mod service;

use std::path::Path;
use std::process::{Command, Output, Stdio};

/// The binary with a clean environment: only what a test passes in.
pub fn autodev(home: &Path) -> Command {
    // Runs' agents work in bubblewrap (the default sandbox mode).
    autodev_testkit::require_program("bwrap", "bubblewrap");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_autodev"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::var_os("HOME").unwrap_or_default())
        .env("AUTODEV_HOME", home)
        .stdin(Stdio::null());
    if let Some(v) = std::env::var_os("CARGO_HOME") {
        cmd.env("CARGO_HOME", v);
    }
    if let Some(v) = std::env::var_os("RUSTUP_HOME") {
        cmd.env("RUSTUP_HOME", v);
    }
    cmd
}

pub fn output(cmd: &mut Command) -> (i32, String, String) {
    let Output { status, stdout, stderr } = cmd.output().unwrap();
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}
