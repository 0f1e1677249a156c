//! Command-line arguments.
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "autodev", version, about = "Turn specs into tested code changes with LLM agents.")]
pub struct Cli {
    /// Config file (default: autodev.toml in AUTODEV_HOME).
    #[arg(long, global = true, env = "AUTODEV_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory: database, worktrees, run folders [default: .autodev; for `demo`, next
    /// to the demo's copy of the example].
    #[arg(long, global = true, env = "AUTODEV_HOME")]
    pub home: Option<PathBuf>,
    /// Log level filter for diagnostics on stderr (e.g. `info`, `autodev_engine=debug`).
    #[arg(long, global = true, env = "AUTODEV_LOG", default_value = "warn")]
    pub log: String,
    /// Diagnostics on stderr as `human` text or `json` lines (with run ids as fields).
    #[arg(long, global = true, env = "AUTODEV_LOG_FORMAT", default_value = "human", value_parser = ["human", "json"])]
    pub log_format: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Plan, implement, test and deliver a spec on a new branch.
    Run(RunArgs),
    /// Continue an interrupted run without repeating recorded model calls, or a run stopped
    /// `budget_exceeded` once its limit is raised.
    Resume(ResumeArgs),
    /// Cancel a run (a process driving it stops within a second).
    Cancel(RunRef),
    /// What model calls cost: by project, model, day or run.
    Costs(CostsArgs),
    /// Build or refresh the code index of a repository (only files whose git blob changed).
    Index(IndexArgs),
    /// Search a repository's code index (built first if there is none).
    Search(SearchArgs),
    /// Ask a question about a repository: the model answers from the code index, citing
    /// `path:start-end`, and every citation is checked against the index.
    Ask(AskArgs),
    /// Measure how often runs succeed: a suite of tasks in SWE-bench's instance format (a
    /// JSONL file; `eval/suite.jsonl` is Autodev's own), each run on its repository with the
    /// configured model and scored by its hidden tests.
    Eval(EvalArgs),
    /// Serve the Model Context Protocol over stdin/stdout for an editor or chat client: tools
    /// search_code, ask, create_run, get_run, list_runs, approve_run, cancel_run, revert_run; runs' reports
    /// as resources. (`autodev serve` offers the same at /mcp, behind API keys.)
    Mcp(McpArgs),
    /// Approve a run waiting at its gate: its plan, or (projects with approve_delivery) its
    /// delivery.
    Approve(ApproveArgs),
    /// Reject a run waiting at its gate. A plan rejected with a comment goes back to the
    /// planner with it (up to 3 times); otherwise the run is cancelled with the comment as
    /// its reason.
    Reject(DecisionArgs),
    /// Tell the configured integrations (GitHub, Slack, webhooks) about a run's milestones
    /// that were not delivered, now.
    Deliver(DeliverArgs),
    /// Revert a run's merged change: checks it was merged and that the revert applies to the
    /// base branch now, then queues a revert run (tested, through the delivery gate, opened as
    /// a pull request). Refused (exit 1) with the reason otherwise.
    Revert(DeliverArgs),
    /// List and inspect runs.
    #[command(subcommand)]
    Runs(RunsCommand),
    /// Check what this host supports and what is configured.
    Doctor(DoctorArgs),
    /// Serve the HTTP API (runs, their event streams, health) with in-process workers.
    Serve(ServeArgs),
    /// Workers only: claim runs made through the API or webhooks from the shared database
    /// (DATABASE_URL=postgres://… for many processes on many machines) and drive them.
    Worker(WorkerArgs),
    /// Apply database migrations (SQLite in AUTODEV_HOME, or DATABASE_URL) and exit.
    Migrate(MigrateArgs),
    /// Remove what runs that ended long ago leave behind: worktrees, task branches, run
    /// folders, events and tool results (never a run that has not ended, never the delivered
    /// branch in the project's repository).
    Gc(GcArgs),
    /// Copy the database, the run folders and the key pepper into one file, consistently
    /// while serving.
    Backup(BackupArgs),
    /// Restore a backup into an empty data directory (and an empty PostgreSQL database, with
    /// DATABASE_URL).
    Restore(RestoreArgs),
    /// Check the configuration and list every problem at once.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// API keys for the HTTP API.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Run the bundled example offline from a recorded cassette.
    Demo(DemoArgs),
}

#[derive(Debug, Args)]
pub struct IndexArgs {
    /// The repository (default: the current directory).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub repo: PathBuf,
    /// What was done, as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SearchArgs {
    /// Plain words or identifiers.
    pub query: String,
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub repo: PathBuf,
    /// How many chunks (1 to 100).
    #[arg(long, default_value_t = 10)]
    pub limit: usize,
    /// A JSON array of {path, start_line, end_line, score, text} on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct McpArgs {
    /// The repository search_code and ask use when a call names no project (default: none,
    /// so calls name a project).
    #[arg(long, value_name = "DIR")]
    pub repo: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct AskArgs {
    pub question: String,
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub repo: PathBuf,
    /// The answer, its citations (each checked) and usage as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Follow up the conversation an earlier answer named (`conversation …` under it).
    #[arg(long, value_name = "ID")]
    pub conversation: Option<String>,
    #[command(flatten)]
    pub model: ModelArgs,
}

#[derive(Debug, Args)]
pub struct CostsArgs {
    /// The last N days (1 to 366).
    #[arg(long, default_value_t = 30)]
    pub days: i64,
    /// How to group the costs: `kind` separates runs' model calls from questions to the code
    /// index (`ask`); `key` groups by the API key that made the run or asked.
    #[arg(long, default_value = "project", value_parser = ["project", "model", "day", "run", "kind", "key"])]
    pub by: String,
    /// JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DecisionArgs {
    /// Run id, short id or a unique prefix.
    pub run: String,
    /// Why (recorded with the decision; a rejected plan's goes to the planner, a cancelled
    /// run's becomes its reason).
    #[arg(long)]
    pub comment: Option<String>,
}

#[derive(Debug, Args)]
pub struct ApproveArgs {
    #[command(flatten)]
    pub decision: DecisionArgs,
    /// A protected glob (the project's protected_paths) the run may change; repeatable.
    #[arg(long = "allow-path", value_name = "GLOB")]
    pub allow_paths: Vec<String>,
}

#[derive(Debug, Args)]
pub struct DeliverArgs {
    /// Run id, short id or a unique prefix.
    pub run: String,
    /// The milestones and their results as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ModelArgs {
    /// Model id (e.g. gpt-4.1, claude-sonnet-4-5, llama-3.3-70b-versatile).
    #[arg(long, env = "AUTODEV_MODEL")]
    pub model: Option<String>,
    /// Provider: openai (any OpenAI-compatible server), anthropic, gemini, groq, ollama.
    #[arg(long, env = "AUTODEV_PROVIDER")]
    pub provider: Option<String>,
    /// Write every model exchange to this cassette file.
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// Answer model calls from this cassette, with no network.
    #[arg(long, value_name = "FILE", conflicts_with = "record")]
    pub replay: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The suite: a JSONL file of instances (SWE-bench Lite/Verified exports work), or a
    /// directory holding `suite.jsonl`.
    pub suite: PathBuf,
    /// Model id (e.g. gpt-4.1, qwen2.5-coder-1.5b-instruct).
    #[arg(long, env = "AUTODEV_MODEL")]
    pub model: Option<String>,
    /// Provider: openai (any OpenAI-compatible server), anthropic, gemini, groq, ollama.
    #[arg(long, env = "AUTODEV_PROVIDER")]
    pub provider: Option<String>,
    /// Instances evaluated at once.
    #[arg(long, default_value_t = 2)]
    pub jobs: usize,
    /// Only these instances (ids; comma-separated or repeated).
    #[arg(long = "instance", value_delimiter = ',')]
    pub instances: Vec<String>,
    /// Apply each instance's reference solution (`patch`) instead of running an agent: checks
    /// that the suite is sound (its FAIL_TO_PASS tests fail on the base and pass with the
    /// solution). No model is needed.
    #[arg(long)]
    pub gold: bool,
    /// Where the repositories and the report (report.json, report.md) go; default
    /// `AUTODEV_HOME/eval/<time>`.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Local clones of SWE-bench's repositories, as `DIR/owner__name` (else they are cloned
    /// from github.com).
    #[arg(long, value_name = "DIR")]
    pub repos: Option<PathBuf>,
    /// Model turns per coding agent (default: the configuration's `max_steps`).
    #[arg(long)]
    pub max_steps: Option<u32>,
    /// Repair rounds per run (default: the configuration's).
    #[arg(long)]
    pub max_repair_rounds: Option<u32>,
    /// Seconds an instance's hidden tests may run.
    #[arg(long, default_value_t = 900)]
    pub test_timeout: u64,
    /// Exit 1 when fewer than this share of instances (0 to 1) is resolved.
    #[arg(long, value_name = "SHARE")]
    pub min_resolved: Option<f64>,
    /// Print the report as JSON instead of the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The repository to work on (it is never modified except for the new branch).
    #[arg(long, default_value = ".")]
    pub repo: PathBuf,
    /// The spec: a Markdown file describing the change.
    #[arg(long)]
    pub spec: PathBuf,
    /// The command that runs the project's tests (default: autodev.toml, then detected).
    #[arg(long)]
    pub test_command: Option<String>,
    /// Branch to start from (default: the repository's checked-out branch).
    #[arg(long)]
    pub base: Option<String>,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Ready tasks run in parallel up to this many.
    #[arg(long)]
    pub max_parallel: Option<usize>,
    /// Rounds of repairing failing tests before the run fails.
    #[arg(long)]
    pub max_repair_rounds: Option<u32>,
    /// Model turns one agent may take.
    #[arg(long)]
    pub max_steps: Option<u32>,
    /// Stop after planning and ask on the terminal before executing (no answer, stdin closed,
    /// leaves the run at its gate for `autodev approve` or `reject`).
    #[arg(long)]
    pub approve: bool,
    /// Print events and the summary as JSON lines instead of the live display.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// Run id, short id or unique prefix.
    pub run: String,
    /// Cassette to replay from (default: the one the run was started with).
    #[arg(long, value_name = "FILE")]
    pub replay: Option<PathBuf>,
    /// If the run waits at the plan-approval gate, ask on the terminal.
    #[arg(long)]
    pub approve: bool,
    /// A new cost limit for the run (USD): a run stopped by its `max_cost_usd` continues
    /// under this one.
    #[arg(long, value_name = "USD")]
    pub max_cost_usd: Option<f64>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RunRef {
    /// Run id, short id or unique prefix.
    pub run: String,
}

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// Runs, newest first.
    List {
        #[arg(long, default_value_t = 20)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// One run: state, plan, tasks, usage, and its events.
    Show {
        run: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080", env = "AUTODEV_LISTEN")]
    pub listen: std::net::SocketAddr,
    /// In-process workers that execute runs created through the API (0: API only).
    #[arg(long, default_value_t = 2, env = "AUTODEV_WORKERS")]
    pub workers: usize,
    /// Do not apply migrations on start; refuse to start if the database needs them (run
    /// `autodev migrate` first).
    #[arg(long)]
    pub no_migrate: bool,
    /// Seconds to wait on SIGTERM/SIGINT for runs to reach a step boundary and release
    /// their leases before exiting anyway.
    #[arg(long, default_value_t = 30, env = "AUTODEV_SHUTDOWN_GRACE_SECS")]
    pub grace: u64,
    /// Collect runs that ended longer ago than this (`autodev gc`), every --gc-every; `off`
    /// to keep everything.
    #[arg(long, default_value = "30d", env = "AUTODEV_GC_OLDER_THAN", value_parser = parse_retention)]
    pub gc_older_than: Retention,
    /// How often the collection runs.
    #[arg(long, default_value = "1h", env = "AUTODEV_GC_EVERY", value_parser = parse_age)]
    pub gc_every: std::time::Duration,
}

/// An age such as `30d`, `12h`, `90m` (humantime).
pub fn parse_age(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("`{s}` is not an age like 30d, 12h or 90m: {e}"))
}

/// How long ended runs are kept: an age, or none (`off`: kept for ever).
#[derive(Clone, Copy, Debug)]
pub struct Retention(pub Option<std::time::Duration>);

/// `off`, or an age.
pub fn parse_retention(s: &str) -> Result<Retention, String> {
    if matches!(s.trim(), "off" | "never" | "0") {
        Ok(Retention(None))
    } else {
        parse_age(s).map(|d| Retention(Some(d)))
    }
}

#[derive(Debug, Args)]
pub struct GcArgs {
    /// Collect runs that ended longer ago than this.
    #[arg(long, default_value = "30d", value_parser = parse_age)]
    pub older_than: std::time::Duration,
    /// Say what would be removed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// What was (or would be) removed, as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The backup file to write (a tar archive, zstd-compressed when it ends in .zst).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Then remove older backups beside it (files named `autodev-*` in the same folder), keeping
    /// the newest N.
    #[arg(long, value_name = "N")]
    pub keep: Option<usize>,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup file (`autodev backup --out`).
    #[arg(long, value_name = "FILE")]
    pub from: PathBuf,
    /// Replace what the data directory (and the database) already holds.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Change nothing: exit 0 when the database has every migration of this build, 1 listing
    /// the missing ones (for CI and for an init container before `serve --no-migrate`).
    #[arg(long)]
    pub check: bool,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Also serve /health, /ready and /metrics on this address (probes and Prometheus).
    #[arg(long, env = "AUTODEV_WORKER_LISTEN")]
    pub listen: Option<std::net::SocketAddr>,
    /// Runs this process drives at once.
    #[arg(long, default_value_t = 2, env = "AUTODEV_WORKERS", value_parser = clap::value_parser!(u64).range(1..=256))]
    pub workers: u64,
    /// Do not apply migrations on start (see `serve --no-migrate`).
    #[arg(long)]
    pub no_migrate: bool,
    /// Seconds to wait on SIGTERM/SIGINT for runs to reach a step boundary and release
    /// their leases before exiting anyway.
    #[arg(long, default_value_t = 30, env = "AUTODEV_SHUTDOWN_GRACE_SECS")]
    pub grace: u64,
    /// Collect runs that ended longer ago than this (`autodev gc`), every --gc-every; `off`
    /// to keep everything.
    #[arg(long, default_value = "30d", env = "AUTODEV_GC_OLDER_THAN", value_parser = parse_retention)]
    pub gc_older_than: Retention,
    /// How often the collection runs.
    #[arg(long, default_value = "1h", env = "AUTODEV_GC_EVERY", value_parser = parse_age)]
    pub gc_every: std::time::Duration,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate defaults + autodev.toml (data directory or --config, and the repository's) +
    /// AUTODEV_* variables + secrets; exit 2 listing every problem.
    Check {
        /// Also read this repository's autodev.toml.
        #[arg(long)]
        repo: Option<PathBuf>,
    },
    /// Print every configuration key (variable, default, who may set it) as a Markdown table.
    Reference,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key; it is printed once, alone on the last line.
    Create {
        #[arg(long)]
        name: String,
        /// admin (projects, keys), operator (runs), or viewer (read only).
        #[arg(long, value_parser = ["admin", "operator", "viewer"])]
        role: String,
        /// Scope the key to this project (id or name; repeat for more): it sees and acts on
        /// those projects alone, and everything else answers 404.
        #[arg(long = "project", value_name = "PROJECT")]
        projects: Vec<String>,
    },
    /// Keys with their names, roles and prefixes (never the keys).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by id or name.
    Revoke { key: String },
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Repository whose test command to look for.
    #[arg(long, default_value = ".")]
    pub repo: PathBuf,
    /// Do not try to reach the model providers.
    #[arg(long)]
    pub offline: bool,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where to put the demo's copy of the example (default: a new temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}
