//! The `autodev` command line: argument parsing, configuration, wiring of the engine to its
//! adapters, and the live display. No business logic lives here.
//!
//! # Layout
//! - [`cli`]: the clap definitions.
//! - `config.rs`: layered configuration and `X_FILE` secrets.
//! - `provider.rs`: building the model client.
//! - `display.rs`: the live display and `--json` output.
//! - `context.rs`: what every command shares (the store, the engine built from the
//!   configuration, run settings from flags and configuration).
//! - `commands/`: one file per subcommand (`run.rs` is `run`, `resume` and `cancel`; `serve.rs`
//!   is `serve`, `worker` and `mcp`; `code.rs` is `index`, `search` and `ask`), and the dispatch.

pub mod cli;
mod commands;
mod config;
mod context;
mod display;
mod provider;
mod reference;
mod telemetry;

use std::process::ExitCode;

pub use cli::Cli;

/// How the process ends. `Usage` is for bad input and config (exit 2), like clap's own.
#[derive(Debug)]
pub enum Exit {
    Ok,
    Failed,
    Usage(String),
    Interrupted,
}

impl Exit {
    fn code(&self) -> ExitCode {
        match self {
            Exit::Ok => ExitCode::SUCCESS,
            Exit::Failed => ExitCode::from(1),
            Exit::Usage(_) => ExitCode::from(2),
            Exit::Interrupted => ExitCode::from(130),
        }
    }
}

pub fn run(cli: Cli) -> ExitCode {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter =
        tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = if cli.log_format == "json" { logs.json().flatten_event(true).boxed() } else { logs.boxed() };
    // Traces, when the OTEL_* variables ask (telemetry.rs): Autodev's own spans, at info and
    // above, whatever the log level.
    let provider = match telemetry::provider() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let traces = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer().with_tracer(telemetry::tracer(p)).with_filter(
            tracing_subscriber::filter::filter_fn(|m| {
                m.target().starts_with("autodev") && *m.level() <= tracing::Level::INFO
            }),
        )
    });
    if traces.is_some() {
        autodev_engine::telemetry::enable();
    }
    let _ = tracing_subscriber::registry().with(logs.with_filter(filter)).with(traces).try_init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let exit = runtime.block_on(commands::dispatch(cli));
    drop(runtime);
    if let Some(p) = provider {
        telemetry::shutdown(p);
    }
    match &exit {
        Exit::Usage(msg) => eprintln!("error: {msg}"),
        Exit::Ok | Exit::Failed | Exit::Interrupted => {}
    }
    exit.code()
}
