//! The `autodev` binary: parses arguments and hands them to [`autodev_cli::run`].
use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of glibc malloc: a page of runs over the API spent ~40% of its CPU in
/// glibc's malloc/free (arena locking and consolidation across tokio's threads).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Inside a sandbox this binary is the init that adds Landlock, then runs the supervisor.
    autodev_workspace::sandbox::init::run_if_requested();
    if let Ok(exe) = std::env::current_exe() {
        autodev_workspace::sandbox::init::set_helper(exe);
    }
    // Both rustls crypto providers can end up compiled in; choose one before any TLS use.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = autodev_cli::Cli::parse();
    autodev_cli::run(cli)
}
