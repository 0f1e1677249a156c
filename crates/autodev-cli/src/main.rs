//! The `autodev` binary: parses arguments and hands them to [`autodev_cli::run`].
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Both rustls crypto providers can end up compiled in; choose one before any TLS use.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = autodev_cli::Cli::parse();
    autodev_cli::run(cli)
}
