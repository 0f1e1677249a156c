//! `run`, `resume`, `cancel` and `runs`.
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use autodev_domain::{MicroUsd, ModelClient, RunState, Spec};
use autodev_engine::{Engine, EngineError, Outcome, RunRequest, RunSettings, detect};
use autodev_llm::PriceTable;
use autodev_store::{Migrations, RunRow, Store, StoreError};
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

use crate::cli::{Cli, Command, ResumeArgs, RunArgs, RunsCommand};
use crate::config::FileConfig;
use crate::display::Display;
use crate::{Exit, provider};

pub async fn dispatch(cli: Cli) -> Exit {
    if let Command::Demo(args) = cli.command {
        return crate::demo::demo(cli.home.as_deref().map(absolute), args).await;
    }
    let home = absolute(cli.home.as_deref().unwrap_or(Path::new(".autodev")));
    match cli.command {
        Command::Run(args) => run(&home, cli.config.as_deref(), args).await,
        Command::Resume(args) => resume(&home, cli.config.as_deref(), args).await,
        Command::Cancel(r) => cancel(&home, &r.run).await,
        Command::Costs(a) => crate::costs::costs(&home, a.days, &a.by, a.json).await,
        Command::Index(a) => crate::code::index(&home, cli.config.as_deref(), &a.repo, a.json).await,
        Command::Search(a) => {
            crate::code::search(&home, cli.config.as_deref(), &a.repo, &a.query, a.limit, a.json).await
        }
        Command::Ask(a) => crate::code::ask(&home, cli.config.as_deref(), a).await,
        Command::Approve(a) => {
            crate::gates::decide(&home, &a.decision.run, true, a.decision.comment.as_deref(), a.allow_paths).await
        }
        Command::Reject(a) => crate::gates::decide(&home, &a.run, false, a.comment.as_deref(), Vec::new()).await,
        Command::Deliver(args) => crate::deliver::deliver(&home, cli.config.as_deref(), &args.run, args.json).await,
        Command::Runs(RunsCommand::List { limit, json }) => list(&home, limit, json).await,
        Command::Runs(RunsCommand::Show { run, json }) => show(&home, &run, json).await,
        Command::Doctor(args) => crate::doctor::doctor(&home, cli.config.as_deref(), args).await,
        Command::Keys(cmd) => keys(&home, cmd).await,
        Command::Config(crate::cli::ConfigCommand::Reference) => {
            print!("{}", crate::reference::markdown());
            Exit::Ok
        }
        Command::Config(crate::cli::ConfigCommand::Check { repo }) => {
            config_check(&home, cli.config.as_deref(), repo.as_deref())
        }
        Command::Mcp(args) => mcp(&home, cli.config.as_deref(), args).await,
        Command::Serve(args) => serve(&home, cli.config.as_deref(), args).await,
        Command::Worker(args) => worker(&home, cli.config.as_deref(), args).await,
        Command::Migrate => migrate(&home).await,
        Command::Demo(_) => Exit::Usage("demo is handled above".into()),
    }
}

pub async fn open_store(home: &Path) -> Result<Store, Exit> {
    open_store_with(home, Migrations::Apply).await
}

/// The database: `DATABASE_URL` (or `DATABASE_URL_FILE`) when set, else SQLite in the data
/// directory.
pub async fn open_store_with(home: &Path, migrations: Migrations) -> Result<Store, Exit> {
    match crate::config::secret("DATABASE_URL").map_err(Exit::Usage)? {
        Some(url) => {
            let url = url.expose_secret();
            Store::connect(url, migrations).await.map_err(|e| {
                Exit::Usage(format!("cannot open the database at {}: {e} (check DATABASE_URL)", redact_url(url)))
            })
        }
        None => Store::open_sqlite(&home.join("autodev.db"), migrations).await.map_err(|e| {
            Exit::Usage(format!("cannot open the database in {}: {e} (check AUTODEV_HOME)", home.display()))
        }),
    }
}

/// A database URL fit for messages: the password replaced.
pub fn redact_url(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, rest)), Some(_)) => {
            let (auth, host) = rest.rsplit_once('@').unwrap_or(("", rest));
            match auth.split_once(':') {
                Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
                None => format!("{scheme}://{auth}@{host}"),
            }
        }
        _ => url.to_string(),
    }
}

/// `autodev migrate`.
pub async fn migrate(home: &Path) -> Exit {
    let store = match open_store_with(home, Migrations::Check).await {
        Ok(store) => {
            println!("the {} database is up to date", store.backend());
            return Exit::Ok;
        }
        Err(_) => match open_store_with(home, Migrations::Apply).await {
            Ok(store) => store,
            Err(e) => return e,
        },
    };
    println!("the {} database is migrated", store.backend());
    Exit::Ok
}

pub(crate) fn store_error(e: StoreError) -> Exit {
    match e {
        StoreError::RunNotFound(_) | StoreError::Ambiguous(_) | StoreError::Leased { .. } => Exit::Usage(e.to_string()),
        other => {
            eprintln!("error: {other}");
            Exit::Failed
        }
    }
}

fn engine(store: Store, model: Arc<dyn ModelClient>, cfg: &FileConfig, home: &Path) -> Engine {
    Engine::new(store, model, PriceTable::with_overrides(&cfg.prices), home)
        .with_sandbox(sandbox_config(cfg))
        .with_budgets(budgets(cfg))
        .with_code_search(crate::config::code_search(home, cfg).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "the embeddings are not usable; code search is lexical only");
            autodev_engine::code::CodeSearch::new(home, None)
        }))
}

/// The operator's budgets from the configuration.
pub fn budgets(cfg: &FileConfig) -> autodev_engine::Budgets {
    autodev_engine::Budgets { monthly_usd: cfg.monthly_budget_usd }
}

/// The operator's sandbox choice from the configuration.
pub fn sandbox_config(cfg: &FileConfig) -> autodev_engine::SandboxConfig {
    autodev_engine::SandboxConfig { mode: cfg.sandbox.mode.unwrap_or_default(), readonly: cfg.sandbox.readonly.clone() }
}

/// Turns flags and config into the run's settings.
pub fn settings(args: &RunArgs, cfg: &FileConfig, test_command: String) -> RunSettings {
    let (provider, model) = provider::resolve(args.model.provider.clone(), args.model.model.clone(), cfg);
    let base = configured_settings(cfg, &provider, model);
    RunSettings {
        test_command,
        provider: if args.model.replay.is_some() { "replay".into() } else { provider },
        max_parallel: args.max_parallel.unwrap_or(base.max_parallel),
        max_repair_rounds: args.max_repair_rounds.unwrap_or(base.max_repair_rounds),
        max_steps: args.max_steps.unwrap_or(base.max_steps),
        approval: args.approve,
        record: args.model.record.as_ref().map(|p| absolute(p)),
        replay: args.model.replay.as_ref().map(|p| absolute(p)),
        ..base
    }
}

/// A run's settings from the operator's configuration alone, for `provider` and `model`:
/// what `autodev run` starts from before its flags, and what runs made through the API and
/// webhooks get.
pub fn configured_settings(cfg: &FileConfig, provider: &str, model: String) -> RunSettings {
    let d = RunSettings::default();
    RunSettings {
        test_command: String::new(),
        provider: provider.to_string(),
        model,
        max_parallel: cfg.max_parallel.unwrap_or(d.max_parallel),
        max_repair_rounds: cfg.max_repair_rounds.unwrap_or(d.max_repair_rounds),
        max_steps: cfg.max_steps.unwrap_or(d.max_steps),
        max_task_tokens: cfg.max_task_tokens.unwrap_or(d.max_task_tokens),
        max_cost_usd: cfg.max_cost_usd,
        max_output_tokens: cfg.max_output_tokens.unwrap_or(d.max_output_tokens),
        context_window: cfg.context_window,
        approval: false,
        command_timeout_secs: cfg.command_timeout_secs.unwrap_or(d.command_timeout_secs),
        test_timeout_secs: cfg.test_timeout_secs.unwrap_or(d.test_timeout_secs),
        sandbox_network: cfg.sandbox.network.unwrap_or(false),
        sandbox_pass_env: cfg.sandbox.pass_env.clone(),
        sandbox_writable: cfg.sandbox.writable.clone(),
        record: None,
        replay: None,
        keep_worktrees: false,
        require_evidence: cfg.require_evidence.unwrap_or(false),
        tool_calls: cfg.tool_calls_for(provider).unwrap_or_default(),
        config_warnings: cfg.repo_warnings.clone(),
        deliver_branch: None,
        protected_paths: cfg.protected_paths.clone(),
        allowed_paths: Vec::new(),
        approve_delivery: false,
    }
}

pub fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

pub fn read_spec(path: &Path) -> Result<Spec, Exit> {
    let bytes = std::fs::read(path).map_err(|e| Exit::Usage(format!("cannot read spec {}: {e}", path.display())))?;
    Spec::parse(&bytes).map_err(|e| Exit::Usage(format!("{}: {e}", path.display())))
}

pub async fn run(home: &Path, config: Option<&Path>, args: RunArgs) -> Exit {
    match run_inner(home, config, args).await {
        Ok(exit) | Err(exit) => exit,
    }
}

async fn run_inner(home: &Path, config: Option<&Path>, args: RunArgs) -> Result<Exit, Exit> {
    let spec = read_spec(&args.spec)?;
    if !args.repo.is_dir() {
        return Err(Exit::Usage(format!("repository {} does not exist (--repo)", args.repo.display())));
    }
    let cfg = FileConfig::load(home, config, Some(&args.repo))
        .map_err(|p| Exit::Usage(format!("invalid configuration:\n  - {}", p.join("\n  - "))))?;
    let test_command = match args.test_command.clone().or_else(|| cfg.test_command.clone()) {
        Some(t) if !t.trim().is_empty() => t,
        _ => detect::detect_test_command(&args.repo).ok_or_else(|| {
            Exit::Usage(format!(
                "no test command found for {}: pass --test-command \"...\" or set test_command in autodev.toml (looked for Cargo.toml, package.json with a test script, go.mod, pytest config, a Makefile test target)",
                args.repo.display()
            ))
        })?,
    };
    let settings = settings(&args, &cfg, test_command);
    let model = provider::build(&settings.provider, &cfg, settings.record.as_deref(), settings.replay.as_deref())
        .map_err(Exit::Usage)?;
    let store = open_store(home).await?;
    let engine = engine(store, model, &cfg, home);
    let mut display = Display::new(args.json);
    let mut events = engine.subscribe();
    let base = args.base.clone().or_else(|| cfg.base_branch.clone());
    let req = RunRequest { repo: args.repo.clone(), spec, base, settings };
    let run = match engine.create_run(req).await {
        Ok(run) => run,
        Err(EngineError::Invalid(msg)) => return Err(Exit::Usage(msg)),
        Err(e) => return Err(Exit::Usage(e.to_string())),
    };
    while let Ok(e) = events.try_recv() {
        display.event(&e);
    }
    let exit = drive_and_report(&engine, &run, display, events, args.approve).await;
    crate::deliver::after_run(home, &cfg, engine.store(), &run.id).await;
    exit
}

pub async fn drive_and_report(
    engine: &Engine,
    run: &RunRow,
    mut display: Display,
    mut events: tokio::sync::broadcast::Receiver<autodev_domain::Event>,
    approve_on_terminal: bool,
) -> Result<Exit, Exit> {
    let interrupt = CancellationToken::new();
    {
        let interrupt = interrupt.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                interrupt.cancel();
            }
        });
    }
    let outcome = loop {
        let drive = engine.drive(&run.id, interrupt.clone());
        tokio::pin!(drive);
        let outcome = loop {
            tokio::select! {
                r = &mut drive => break r,
                e = events.recv() => if let Ok(e) = e { display.event(&e) },
            }
        };
        while let Ok(e) = events.try_recv() {
            display.event(&e);
        }
        match outcome {
            Ok(Outcome::AwaitingApproval) if approve_on_terminal => {
                let approved = ask_approval(&display);
                engine.approve(&run.id, approved, &whoami(), "").await.map_err(|e| Exit::Usage(e.to_string()))?;
                if !approved {
                    while let Ok(e) = events.try_recv() {
                        display.event(&e);
                    }
                    break Ok(Outcome::Finished(RunState::Cancelled));
                }
            }
            other => break other,
        }
    };
    display.finish();
    let outcome = outcome.map_err(|e| {
        eprintln!("error: {e}");
        Exit::Failed
    })?;
    let row = engine.store().get_run(&run.id).await.map_err(store_error)?;
    summary(engine, &row, display.is_json()).await;
    Ok(match outcome {
        Outcome::Finished(RunState::Succeeded) => Exit::Ok,
        Outcome::Finished(_) => Exit::Failed,
        Outcome::AwaitingApproval => {
            eprintln!(
                "the plan awaits approval; decide with: autodev resume --approve {0} (or autodev approve {0}, autodev reject {0} --comment \"…\")",
                row.short_id
            );
            Exit::Ok
        }
        Outcome::Interrupted(state) => {
            eprintln!("interrupted while {state}; continue with: autodev resume {}", row.short_id);
            Exit::Interrupted
        }
        Outcome::LeaseLost => {
            eprintln!(
                "another process took run {0} over while this one was stalled; it goes on there (follow it with: autodev runs show {0})",
                row.short_id
            );
            Exit::Failed
        }
    })
}

pub(crate) fn whoami() -> String {
    std::env::var("USER").unwrap_or_else(|_| "terminal".into())
}

fn ask_approval(display: &Display) -> bool {
    // The question goes to stderr so it shows in --json mode too; the plan is above it.
    display.finish();
    eprint!("\nApprove this plan and start the agents? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    match std::io::stdin().lock().read_line(&mut line) {
        Ok(0) | Err(_) => false,
        Ok(_) => matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes"),
    }
}

/// The closing summary: branch, commits, tests, usage, cost, report.
async fn summary(engine: &Engine, run: &RunRow, json: bool) {
    let events = engine.store().events(&run.id, 0).await.unwrap_or_default();
    let mut commits: Vec<String> = Vec::new();
    let mut report = None;
    let mut patch = None;
    for e in &events {
        if let autodev_domain::EventKind::Delivered { commits: c, report: r, patch: p, .. } = &e.kind {
            commits = c.clone();
            report = Some(r.clone());
            patch = Some(p.clone());
        }
    }
    // A run that ended without delivering still has its report.
    if report.is_none() {
        let path = engine.run_dir(&run.id).join("report.md");
        report = path.is_file().then(|| path.display().to_string());
    }
    let state = run.run_state();
    if json {
        let v = serde_json::json!({
            "type": "summary",
            "run_id": run.id,
            "short_id": run.short_id,
            "state": state,
            "reason": run.reason,
            "branch": run.branch,
            "commits": commits,
            "tests_passed": run.test_passed,
            "evidence": run.evidence,
            "input_tokens": run.input_tokens,
            "output_tokens": run.output_tokens,
            "cost_usd": MicroUsd(run.cost_micros).as_usd(),
            "report": report,
            "patch": patch,
        });
        println!("{v}");
        return;
    }
    println!();
    match state {
        RunState::Succeeded => println!("✔ run {} succeeded", run.short_id),
        other => println!(
            "✘ run {} {other}{}",
            run.short_id,
            run.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default()
        ),
    }
    println!("  branch   {}", run.branch);
    if !commits.is_empty() {
        println!("  commits  {}", commits.join("\n           "));
    }
    let tests = match run.test_passed {
        Some(true) => "passed",
        Some(false) => "failed",
        None => "not run",
    };
    println!("  tests    {tests}");
    if let Some(evidence) = run.evidence.as_deref() {
        let said = match evidence {
            "proven" => "proven: the run's tests fail without its change",
            "tests pass but prove nothing" => "tests pass but prove nothing (they pass without the change too)",
            "no tests" => "no tests (the run changed none)",
            other => other,
        };
        println!("  evidence {said}");
    }
    println!("  usage    {} input + {} output tokens", run.input_tokens, run.output_tokens);
    println!("  cost     {}", MicroUsd(run.cost_micros));
    if let Some(r) = report {
        println!("  report   {r}");
    }
    if let Some(p) = patch {
        println!("  patch    {p}");
    }
}

pub async fn resume(home: &Path, config: Option<&Path>, args: ResumeArgs) -> Exit {
    let inner = async {
        let store = open_store(home).await?;
        let mut row = store.find_run(&args.run).await.map_err(store_error)?;
        let mut settings: RunSettings =
            serde_json::from_str(&row.settings).map_err(|e| Exit::Usage(format!("stored settings unreadable: {e}")))?;
        if let Some(max) = args.max_cost_usd {
            if !(max.is_finite() && max > 0.0) {
                return Err(Exit::Usage(format!("--max-cost-usd must be a positive number of dollars, not {max}")));
            }
            settings.max_cost_usd = Some(max);
        }
        let budget_stopped = row.run_state() == autodev_domain::RunState::Failed
            && row.reason.as_deref().is_some_and(|r| r.starts_with(autodev_store::BUDGET_EXCEEDED));
        if budget_stopped {
            // Back to the state it stopped in; a limit still too low stops it again at once,
            // with the same kind of reason.
            let json = serde_json::to_string(&settings).map_err(|e| Exit::Usage(e.to_string()))?;
            match store.reopen_budget_run(&row.id, Some(&json)).await.map_err(store_error)? {
                Ok(_) => {}
                Err(why) => return Err(Exit::Usage(format!("run {} cannot be reopened: {why}", row.short_id))),
            }
            row = store.get_run(&row.id).await.map_err(store_error)?;
            if row.project_id.is_some() {
                // A project's run is driven by the workers, in their clones: reopened, it is
                // theirs to continue.
                println!("run {} reopened at {}; a worker continues it", row.short_id, row.state);
                return Ok(Exit::Ok);
            }
        } else if row.run_state().is_terminal() {
            return Err(Exit::Usage(format!("run {} is already {}; nothing to resume", row.short_id, row.state)));
        } else if args.max_cost_usd.is_some() {
            return Err(Exit::Usage(format!(
                "--max-cost-usd applies to a run stopped budget_exceeded; run {} is {}",
                row.short_id, row.state
            )));
        }
        let cfg = FileConfig::load(home, config, Some(Path::new(&row.repo)))
            .map_err(|p| Exit::Usage(format!("invalid configuration:\n  - {}", p.join("\n  - "))))?;
        let replay = args.replay.as_ref().map(|p| absolute(p)).or(settings.replay.clone());
        let provider = if replay.is_some() { "replay".to_string() } else { settings.provider.clone() };
        let model =
            provider::build(&provider, &cfg, settings.record.as_deref(), replay.as_deref()).map_err(Exit::Usage)?;
        let engine = engine(store, model, &cfg, home);
        let display = Display::new(args.json);
        display.note(&format!("resuming run {} ({}) at {}", row.short_id, row.title, row.state));
        let events = engine.subscribe();
        drive_and_report(&engine, &row, display, events, args.approve).await
    };
    match inner.await {
        Ok(e) | Err(e) => e,
    }
}

pub async fn cancel(home: &Path, key: &str) -> Exit {
    let inner = async {
        let store = open_store(home).await?;
        let row = store.find_run(key).await.map_err(store_error)?;
        autodev_engine::cancel_run(&store, &row.id, &whoami()).await.map_err(|e| Exit::Usage(e.to_string()))?;
        let state = store.run_state(&row.id).await.map_err(store_error)?;
        println!("run {} is {state}", row.short_id);
        Ok::<Exit, Exit>(Exit::Ok)
    };
    match inner.await {
        Ok(e) | Err(e) => e,
    }
}

fn run_json(r: &RunRow) -> serde_json::Value {
    serde_json::json!({
        "id": r.id, "short_id": r.short_id, "title": r.title, "state": r.state, "reason": r.reason,
        "repo": r.repo, "base_branch": r.base_branch, "branch": r.branch,
        "tests_passed": r.test_passed, "evidence": r.evidence, "input_tokens": r.input_tokens, "output_tokens": r.output_tokens,
        "cost_usd": MicroUsd(r.cost_micros).as_usd(), "created_at_ms": r.created_at, "finished_at_ms": r.finished_at,
    })
}

fn age(ms: i64) -> String {
    let secs = (autodev_store::now_ms() - ms).max(0) / 1000;
    match secs {
        s if s < 120 => format!("{s}s ago"),
        s if s < 7_200 => format!("{}m ago", s / 60),
        s if s < 172_800 => format!("{}h ago", s / 3_600),
        s => format!("{}d ago", s / 86_400),
    }
}

pub async fn list(home: &Path, limit: i64, json: bool) -> Exit {
    let inner = async {
        let store = open_store(home).await?;
        let runs = store.list_runs(limit.clamp(1, 1000)).await.map_err(store_error)?;
        if json {
            println!("{}", serde_json::Value::Array(runs.iter().map(run_json).collect()));
            return Ok(Exit::Ok);
        }
        if runs.is_empty() {
            println!("no runs yet; start one with: autodev run --spec SPEC.md");
            return Ok(Exit::Ok);
        }
        println!("{:<9} {:<18} {:<9} {:<10} TITLE", "RUN", "STATE", "COST", "CREATED");
        for r in &runs {
            let title: String = r.title.chars().take(50).collect();
            println!(
                "{:<9} {:<18} {:<9} {:<10} {title}",
                r.short_id,
                r.state,
                MicroUsd(r.cost_micros).to_string(),
                age(r.created_at)
            );
        }
        Ok::<Exit, Exit>(Exit::Ok)
    };
    match inner.await {
        Ok(e) | Err(e) => e,
    }
}

pub async fn show(home: &Path, key: &str, json: bool) -> Exit {
    let inner = async {
        let store = open_store(home).await?;
        let r = store.find_run(key).await.map_err(store_error)?;
        let tasks = store.tasks(&r.id).await.map_err(store_error)?;
        let events = store.events(&r.id, 0).await.map_err(store_error)?;
        let deliveries = store.outbox_for_run(&r.id).await.map_err(store_error)?;
        let links = store.run_links(&r.id).await.map_err(store_error)?;
        if json {
            let mut v = run_json(&r);
            v["deliveries"] = autodev_server::delivery::deliveries_json(&deliveries);
            v["links"] = links
                .iter()
                .map(|(k, val)| (k.clone(), serde_json::json!(val)))
                .collect::<serde_json::Map<_, _>>()
                .into();
            v["plan"] = r.plan.as_deref().and_then(|p| serde_json::from_str(p).ok()).unwrap_or(serde_json::Value::Null);
            v["tasks"] = tasks
                .iter()
                .map(|t| serde_json::json!({"id": t.task_key, "title": t.title, "state": t.state, "depends_on": t.deps(), "summary": t.summary, "reason": t.reason, "commit": t.commit_sha}))
                .collect();
            v["events"] = serde_json::to_value(&events).unwrap_or_default();
            println!("{v}");
            return Ok(Exit::Ok);
        }
        println!("run      {} ({})", r.id, r.short_id);
        println!("title    {}", r.title);
        println!("state    {}{}", r.state, r.reason.as_deref().map(|x| format!(": {x}")).unwrap_or_default());
        println!("repo     {} (base {})", r.repo, r.base_branch);
        println!("branch   {}", r.branch);
        if let Some(evidence) = &r.evidence {
            println!("evidence {evidence}");
        }
        println!("usage    {} input + {} output tokens, {}", r.input_tokens, r.output_tokens, MicroUsd(r.cost_micros));
        if !tasks.is_empty() {
            println!("tasks");
            for t in &tasks {
                let deps = t.deps();
                let after = if deps.is_empty() { String::new() } else { format!(" (after {})", deps.join(", ")) };
                println!("  {:<8} {:<8} {}{after}", t.task_key, t.state, t.title);
            }
        }
        for (name, value) in &links {
            println!("link     {name}: {value}");
        }
        if !deliveries.is_empty() {
            println!("delivery");
            for d in &deliveries {
                println!("  {:<22} {} (attempts {})", d.topic, d.state, d.attempts);
            }
        }
        println!("events");
        let mut display = Display::new(false);
        for e in &events {
            display.event(e);
        }
        display.finish();
        Ok::<Exit, Exit>(Exit::Ok)
    };
    match inner.await {
        Ok(e) | Err(e) => e,
    }
}

pub async fn keys(home: &Path, cmd: crate::cli::KeysCommand) -> Exit {
    use autodev_server::auth;
    use secrecy::ExposeSecret;
    let inner = async {
        let store = open_store(home).await?;
        match cmd {
            crate::cli::KeysCommand::Create { name, role, projects } => {
                let role: autodev_domain::AccessRole =
                    role.parse().map_err(|e: autodev_domain::access::UnknownRole| Exit::Usage(e.to_string()))?;
                let configured = crate::config::secret("AUTODEV_KEY_PEPPER").map_err(Exit::Usage)?;
                let pepper = auth::Pepper::load(configured, home).map_err(|e| Exit::Usage(e.to_string()))?;
                let new =
                    auth::create_scoped_key(&store, &pepper, &name, role, &projects).await.map_err(|e| match e {
                        auth::AuthError::Invalid(m) => Exit::Usage(m),
                        auth::AuthError::Store(StoreError::Conflict(m)) => Exit::Usage(m),
                        other => Exit::Usage(other.to_string()),
                    })?;
                println!("created key {} ({}) for {}, role {}", new.row.id, new.row.prefix, new.row.name, new.row.role);
                if !projects.is_empty() {
                    println!("scoped to {}: it sees nothing else", projects.join(", "));
                }
                println!("store it now: it is not shown again. Send it as `Authorization: Bearer <key>`.");
                println!("{}", new.key.expose_secret());
            }
            crate::cli::KeysCommand::List { json } => {
                let keys = store.list_keys().await.map_err(store_error)?;
                if json {
                    let v: Vec<serde_json::Value> = keys
                        .iter()
                        .map(|k| serde_json::json!({"id": k.id, "name": k.name, "role": k.role, "prefix": k.prefix, "created_at_ms": k.created_at, "last_used_at_ms": k.last_used_at, "revoked": k.revoked_at.is_some(), "projects": k.scope()}))
                        .collect();
                    println!("{}", serde_json::Value::Array(v));
                } else if keys.is_empty() {
                    println!("no keys yet; create one with: autodev keys create --name NAME --role admin");
                } else {
                    println!("{:<36} {:<20} {:<9} {:<13} STATUS", "ID", "NAME", "ROLE", "PREFIX");
                    for k in &keys {
                        let status = if k.revoked_at.is_some() { "revoked" } else { "active" };
                        println!("{:<36} {:<20} {:<9} {:<13} {status}", k.id, k.name, k.role, k.prefix);
                    }
                }
            }
            crate::cli::KeysCommand::Revoke { key } => {
                let revoked = autodev_server::auth::revoke(&store, home, &key).await.map_err(|e| match e {
                    autodev_server::auth::AuthError::Store(e) => store_error(e),
                    other => Exit::Usage(other.to_string()),
                })?;
                if revoked {
                    println!("revoked {key}");
                } else {
                    return Err(Exit::Usage(format!(
                        "no active key with id or name `{key}`; `autodev keys list` shows them"
                    )));
                }
            }
        }
        Ok::<Exit, Exit>(Exit::Ok)
    };
    match inner.await {
        Ok(e) | Err(e) => e,
    }
}

/// `autodev serve`: the HTTP API until SIGINT or SIGTERM.
/// The state `serve` and `worker` share, after the configuration is checked (every problem
/// listed at once) and the database opened.
async fn service_state(home: &Path, config: Option<&Path>, no_migrate: bool) -> Result<autodev_server::AppState, Exit> {
    let cfg = FileConfig::load(home, config, None)
        .map_err(|p| Exit::Usage(format!("invalid configuration:\n  - {}", p.join("\n  - "))))?;
    let migrations = if no_migrate { Migrations::Check } else { Migrations::Apply };
    let store = open_store_with(home, migrations).await?;
    let configured = crate::config::secret("AUTODEV_KEY_PEPPER").map_err(Exit::Usage)?;
    let pepper = autodev_server::auth::Pepper::load(configured, home).map_err(|e| Exit::Usage(e.to_string()))?;
    let secret = |name| crate::config::secret(name).map_err(Exit::Usage);
    let webhooks = autodev_server::webhooks::WebhookConfig {
        github_secret: secret("AUTODEV_GITHUB_WEBHOOK_SECRET")?,
        gitlab_token: secret("AUTODEV_GITLAB_WEBHOOK_TOKEN")?,
        jira_secret: secret("AUTODEV_JIRA_WEBHOOK_SECRET")?,
        trigger_label: cfg.trigger_label.clone(),
    };
    let delivery = crate::config::delivery_config(&cfg)
        .map_err(|p| Exit::Usage(format!("invalid configuration:\n  - {}", p.join("\n  - "))))?;
    if let Some(gh) = &delivery.github
        && let autodev_server::delivery::github::GithubAuth::Token(token) = &gh.auth
        && let Some(prefix) = autodev_server::delivery::github::git_prefix(&gh.api_url)
    {
        // The worker's clones of GitHub projects fetch and push with the token. (A GitHub
        // App's installation tokens are set per owner as the dispatcher mints them.)
        autodev_workspace::git::credentials::add_basic(&prefix, "x-access-token", token);
    }
    if let Some(gl) = &delivery.gitlab {
        // GitLab takes any user name with a personal, project or group access token.
        autodev_workspace::git::credentials::add_basic(
            &format!("{}/", gl.url.trim_end_matches('/')),
            "oauth2",
            &gl.token,
        );
    }
    let forges = std::sync::Arc::new(autodev_server::commanders::Forges::new(&delivery));
    let delivery = std::sync::Arc::new(autodev_server::delivery::Dispatcher::new(store.clone(), home, &delivery));
    let sandbox = sandbox_config(&cfg);
    if let Err(why) = sandbox.mode.check_available() {
        tracing::error!("agents cannot be sandboxed on this host; every run will fail until this is fixed: {why}");
    } else if !sandbox.mode.isolated() {
        tracing::warn!("{}", autodev_engine::unisolated_message(sandbox.mode));
    }
    let public_url = cfg.public_url.clone().filter(|u| !u.trim().is_empty());
    let code = crate::config::code_search(home, &cfg).map_err(Exit::Usage)?;
    Ok(autodev_server::AppState {
        base_path: autodev_server::AppState::base_path_of(public_url.as_deref()),
        public_url,
        delivery,
        forges,
        engine: autodev_engine::EngineConfig {
            home: home.to_path_buf(),
            prices: std::sync::Arc::new(PriceTable::with_overrides(&cfg.prices)),
            sandbox,
            budgets: budgets(&cfg),
            code,
        },
        store,
        pepper,
        home: home.to_path_buf(),
        providers_configured: provider::any_configured(&cfg),
        poll: std::time::Duration::from_millis(250),
        webhooks: std::sync::Arc::new(webhooks),
        guard: std::sync::Arc::new(autodev_server::access::Guard::new(
            cfg.rate_limit_per_minute.unwrap_or(1200),
            Some(home),
        )),
        models: std::sync::Arc::new(provider::ConfiguredModels { cfg }),
    })
}

/// `autodev mcp`: the MCP server over stdio, acting as the local operator. Runs it creates
/// are driven by `autodev serve`/`worker` processes on the same database (it starts none).
async fn mcp(home: &Path, config: Option<&Path>, args: crate::cli::McpArgs) -> Exit {
    let repo = match &args.repo {
        Some(r) => match r.canonicalize() {
            Ok(p) if p.join(".git").exists() => Some(p),
            _ => return Exit::Usage(format!("--repo {}: not a git repository", r.display())),
        },
        None => None,
    };
    let state = match service_state(home, config, false).await {
        Ok(s) => s,
        Err(e) => return e,
    };
    match autodev_server::mcp::serve_stdio(state, autodev_server::mcp::Local::operator(repo)).await {
        Ok(()) => Exit::Ok,
        Err(e) => {
            eprintln!("error: {e}");
            Exit::Failed
        }
    }
}

/// The delivery loop of this process, when integrations are configured (every `serve` and
/// `worker` runs one; leases keep them from delivering a milestone twice).
fn spawn_delivery(state: &autodev_server::AppState, shutdown: &CancellationToken) {
    if !state.delivery.is_empty() {
        tokio::spawn(state.delivery.clone().run(std::time::Duration::from_secs(1), shutdown.clone()));
    }
}

/// A token cancelled on SIGTERM or SIGINT.
fn shutdown_on_signal() -> CancellationToken {
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let term = async {
            match term.as_mut() {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term => {}
        }
        token.cancel();
    });
    shutdown
}

/// After shutdown: workers stop claiming, interrupt their runs at the next step boundary
/// and release the leases. Past the grace period the process exits anyway; the leases then
/// expire and other workers resume the runs from their recorded steps.
async fn drain(workers: tokio::task::JoinHandle<()>, grace: u64, who: &str) {
    if tokio::time::timeout(std::time::Duration::from_secs(grace), workers).await.is_err() {
        eprintln!("autodev {who}: runs did not stop within {grace}s (--grace); exiting, their leases will expire");
    }
}

pub async fn serve(home: &Path, config: Option<&Path>, args: crate::cli::ServeArgs) -> Exit {
    let inner = async {
        let state = service_state(home, config, args.no_migrate).await?;
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| Exit::Usage(format!("cannot listen on {}: {e} (--listen)", args.listen)))?;
        let shutdown = shutdown_on_signal();
        // The address comes last on the line: scripts (and the tests) read it from there.
        eprintln!(
            "autodev serve: {} database, {} workers; listening on http://{}",
            state.store.backend(),
            args.workers,
            listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        );
        let workers = tokio::spawn(autodev_server::workers::run_workers(state.clone(), args.workers, shutdown.clone()));
        spawn_delivery(&state, &shutdown);
        let served = autodev_server::serve(listener, state, shutdown).await;
        drain(workers, args.grace, "serve").await;
        served.map_err(|e| Exit::Usage(format!("server error: {e}")))?;
        eprintln!("autodev serve: stopped");
        Ok::<Exit, Exit>(Exit::Ok)
    };
    match inner.await {
        Ok(e) | Err(e) => e,
    }
}

/// `autodev worker`: workers only, no HTTP.
pub async fn worker(home: &Path, config: Option<&Path>, args: crate::cli::WorkerArgs) -> Exit {
    let state = match service_state(home, config, args.no_migrate).await {
        Ok(state) => state,
        Err(e) => return e,
    };
    if !state.providers_configured {
        return Exit::Usage("no model provider is configured: set OPENAI_API_KEY, ANTHROPIC_API_KEY, GEMINI_API_KEY, GROQ_API_KEY or a provider base_url (see `autodev config check`)".into());
    }
    let shutdown = shutdown_on_signal();
    eprintln!("autodev worker: {} workers on the {} database", args.workers, state.store.backend());
    spawn_delivery(&state, &shutdown);
    let workers = tokio::spawn(autodev_server::workers::run_workers(state, args.workers as usize, shutdown.clone()));
    shutdown.cancelled().await;
    drain(workers, args.grace, "worker").await;
    eprintln!("autodev worker: stopped");
    Exit::Ok
}

/// `autodev config check`: every problem at once (exit 2), or a summary of what is in force.
pub fn config_check(home: &Path, config: Option<&Path>, repo: Option<&Path>) -> Exit {
    // Loaded and checked once; the summary below reads the same values.
    let (loaded, mut problems) = match FileConfig::load(home, config, repo) {
        Ok(cfg) => match crate::config::delivery_config(&cfg) {
            Ok(delivery) => (Some((cfg, delivery)), Vec::new()),
            Err(p) => (None, p),
        },
        Err(p) => (None, p),
    };
    for var in [
        "OPENAI_API_KEY",
        "ANTHROPIC_API_KEY",
        "GEMINI_API_KEY",
        "GROQ_API_KEY",
        "AUTODEV_KEY_PEPPER",
        "DATABASE_URL",
        "AUTODEV_GITHUB_WEBHOOK_SECRET",
        "AUTODEV_GITLAB_WEBHOOK_TOKEN",
        "AUTODEV_JIRA_WEBHOOK_SECRET",
    ] {
        if let Err(e) = crate::config::secret(var) {
            problems.push(e);
        }
    }
    // A fallback to a provider that is not configured would fail every run at its start.
    if let Some((cfg, _)) = &loaded {
        for (i, entry) in cfg.fallback.iter().enumerate() {
            if let Some((p, _)) = entry.split_once(':')
                && provider::PROVIDERS.contains(&p)
                && !provider::configured(p, cfg)
            {
                problems
                    .push(format!("fallback[{i}] = `{entry}`: provider {p} is not configured (its key or base_url)"));
            }
        }
    }
    if !problems.is_empty() {
        return Exit::Usage(format!(
            "invalid configuration ({} problems):\n  - {}",
            problems.len(),
            problems.join("\n  - ")
        ));
    }
    let Some((cfg, delivery)) = loaded else {
        return Exit::Usage("invalid configuration".into());
    };
    let configured: Vec<&str> = provider::PROVIDERS.iter().copied().filter(|p| provider::configured(p, &cfg)).collect();
    println!("configuration is valid");
    println!("  data directory   {}", home.display());
    let mode = cfg.sandbox.mode.unwrap_or_default();
    println!(
        "  sandbox          {mode}{}",
        match mode.check_available() {
            Err(why) => format!(" (UNAVAILABLE: {why})"),
            Ok(()) if mode.isolated() => " (agents isolated)".to_string(),
            Ok(()) => " (agents NOT isolated)".to_string(),
        }
    );
    for warning in &cfg.repo_warnings {
        println!("  warning          {warning}");
    }
    println!(
        "  providers        {}",
        if configured.is_empty() {
            "none configured (set OPENAI_API_KEY, ANTHROPIC_API_KEY, ...)".to_string()
        } else {
            configured.join(", ")
        }
    );
    if !cfg.fallback.is_empty() {
        println!("  fallback         {}", cfg.fallback.join(" → "));
    }
    for p in &configured {
        let g = provider::guard_settings(p, &cfg);
        let per_minute = |n: Option<u32>, what: &str| n.map(|n| format!(", {n} {what}/min")).unwrap_or_default();
        println!(
            "  {:<16} breaker after {} failures, {}s cooldown{}{}; tool calls {}",
            format!("[{p}]"),
            g.breaker_failures,
            g.breaker_cooldown.as_secs(),
            per_minute(g.requests_per_minute, "requests"),
            per_minute(g.tokens_per_minute, "tokens"),
            match cfg.tool_calls_for(p).unwrap_or_default() {
                autodev_engine::ToolCallMode::Auto => "auto",
                autodev_engine::ToolCallMode::Native => "native",
                autodev_engine::ToolCallMode::Text => "text",
            }
        );
    }
    let usd = |v: Option<f64>| v.map_or("none".to_string(), |v| format!("${v:.2}"));
    println!(
        "  budgets          per run {}, per month (all runs) {}; projects set their own monthly_budget_usd",
        usd(cfg.max_cost_usd),
        usd(cfg.monthly_budget_usd)
    );
    if !cfg.protected_paths.is_empty() {
        println!("  protected paths  {}", cfg.protected_paths.join(", "));
    }
    match (&cfg.embeddings.base_url, &cfg.embeddings.model) {
        (Some(url), Some(model)) => println!(
            "  code search      lexical + embeddings ({model} at {url}), vectors in {}",
            cfg.embeddings
                .qdrant_url
                .as_deref()
                .map_or("a file beside each index".to_string(), |q| format!("Qdrant at {q}"))
        ),
        _ => println!("  code search      lexical (no [embeddings] configured)"),
    }
    let mut integrations = Vec::new();
    if let Some(gh) = &delivery.github {
        let how = match gh.auth {
            autodev_server::delivery::github::GithubAuth::Token(_) => "token",
            autodev_server::delivery::github::GithubAuth::App { .. } => "GitHub App",
        };
        integrations.push(format!("github ({}, {how})", gh.api_url));
    }
    if let Some(gl) = &delivery.gitlab {
        integrations.push(format!("gitlab ({})", gl.url));
    }
    if let Some(jira) = &delivery.jira {
        integrations.push(format!("jira ({})", jira.url));
    }
    if let Some(c) = &delivery.confluence {
        integrations.push(format!("confluence ({}, space {})", c.url, c.space));
    }
    if let Some((_, channel)) = &delivery.slack_bot {
        integrations.push(format!("slack (bot, {channel})"));
    } else if delivery.slack_webhook_url.is_some() {
        integrations.push("slack".to_string());
    }
    for w in &delivery.webhooks {
        integrations.push(format!(
            "webhook:{}{}",
            w.name,
            if w.secret.is_some() { " (signed)" } else { " (UNSIGNED)" }
        ));
    }
    println!(
        "  delivery         {}",
        if integrations.is_empty() { "none (runs end as branches)".to_string() } else { integrations.join(", ") }
    );
    if let Some(url) = &delivery.public_url {
        println!("  public URL       {url}");
    }
    Exit::Ok
}
