//! `autodev run`, `resume` and `cancel`: a run driven in this process with the live display.
use crate::cli::{ResumeArgs, RunArgs};
use crate::config::FileConfig;
use crate::display::Display;
use crate::{Exit, provider};
use autodev_domain::{MicroUsd, RunState};
use autodev_engine::{Engine, EngineError, Outcome, RunRequest, RunSettings, detect};
use autodev_store::RunRow;
use std::io::{BufRead, Write};
use std::path::Path;
use tokio_util::sync::CancellationToken;

use crate::context::*;

pub async fn run(home: &Path, config: Option<&Path>, args: RunArgs) -> Exit {
    match run_inner(home, config, args).await {
        Ok(exit) | Err(exit) => exit,
    }
}

pub(crate) async fn run_inner(home: &Path, config: Option<&Path>, args: RunArgs) -> Result<Exit, Exit> {
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
    super::deliver::after_run(home, &cfg, engine.store(), &run.id).await;
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
                // No answer at all (stdin closed: a script, a pipe) leaves the run at its gate
                // for `autodev approve` / `reject`; only an answer decides.
                let Some(approved) = ask_approval(&display) else {
                    eprintln!();
                    break Ok(Outcome::AwaitingApproval);
                };
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

pub(crate) fn ask_approval(display: &Display) -> Option<bool> {
    // The question goes to stderr so it shows in --json mode too; the plan is above it.
    display.finish();
    eprint!("\nApprove this plan and start the agents? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    match std::io::stdin().lock().read_line(&mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes")),
    }
}

/// The closing summary: branch, commits, tests, usage, cost, report.
pub(crate) async fn summary(engine: &Engine, run: &RunRow, json: bool) {
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
        let mut settings: RunSettings = row.settings().map_err(|e| Exit::Usage(e.to_string()))?;
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
