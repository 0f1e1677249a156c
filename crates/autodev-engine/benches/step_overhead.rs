//! Engine overhead per agent step, and memory with 50 runs in flight.
//!
//! `cargo bench -p autodev-engine --bench step_overhead`
//!
//! Overhead per step: an instant in-process model answers every turn with one real tool call
//! (`write_file` of a small file, then `read_file`, alternating) on a real worktree; the store
//! is a real SQLite file (WAL). The engine times each step and subtracts the model's and the
//! tool's own time, leaving what the engine adds: building the request, storing the reply,
//! storing the tool call as started and as finished, and the events.
//!
//! The second line is the same run with `max_cost_usd` set: the difference is what a budget
//! reservation (the input counted with the model's tokenizer, then one conditional UPDATE in
//! its own transaction) adds to a model call. The third adds a monthly budget (the month's
//! row locked and the reservations in flight summed in the same transaction).
//!
//! Memory: 50 runs driven concurrently, each model call taking 20 ms (so all 50 are in flight
//! at once), peak RSS (VmHWM) of the process.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use autodev_domain::{
    Message, ModelClient, ModelError, ModelRequest, ModelResponse, Spec, StopReason, ToolCall, Usage,
};
use autodev_engine::{Engine, Outcome, RunRequest, RunSettings};
use autodev_llm::PriceTable;
use autodev_store::Store;
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// Plans one task, then answers `steps` turns with a tool call each, then `finish`.
struct InstantModel {
    steps: u32,
    delay: Duration,
    calls: AtomicU64,
}

#[async_trait::async_trait]
impl ModelClient for InstantModel {
    fn provider(&self) -> &str {
        "bench"
    }

    async fn complete(&self, req: &ModelRequest) -> Result<ModelResponse, ModelError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let turn = req.meta.turn;
        let (name, args) = if req.meta.conversation == "planner" {
            (
                "submit_plan",
                json!({"summary": "s", "tasks": [{"id": "t1", "title": "Work", "description": "", "depends_on": [], "acceptance": []}]}),
            )
        } else if turn >= self.steps {
            ("finish", json!({"summary": "done"}))
        } else if turn.is_multiple_of(2) {
            ("write_file", json!({"path": format!("notes/n{}.txt", turn % 16), "content": format!("step {turn}\n")}))
        } else {
            ("read_file", json!({"path": format!("notes/n{}.txt", (turn - 1) % 16)}))
        };
        Ok(ModelResponse {
            fallbacks: Vec::new(),
            message: Message::assistant(
                "",
                vec![ToolCall {
                    id: format!("c{turn}"),
                    name: name.into(),
                    arguments: args.to_string(),
                    signature: None,
                }],
            ),
            usage: Usage { input_tokens: 1_000, output_tokens: 50 },
            stop_reason: StopReason::ToolUse,
            model: "bench".into(),
        })
    }
}

fn git(dir: &std::path::Path, args: &[&str]) {
    let ok = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "b")
        .env("GIT_AUTHOR_EMAIL", "b@b")
        .env("GIT_COMMITTER_NAME", "b")
        .env("GIT_COMMITTER_EMAIL", "b@b")
        .output()
        .unwrap()
        .status
        .success();
    assert!(ok, "git {args:?}");
}

fn repo(root: &std::path::Path) -> std::path::PathBuf {
    let repo = root.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("README.md"), "bench\n").unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "init"]);
    repo
}

fn settings() -> RunSettings {
    RunSettings {
        test_command: "true".into(),
        model: "gpt-4.1-mini".into(),
        max_steps: 10_000,
        ..RunSettings::default()
    }
}

fn rss_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn step_overhead(steps: u32, max_cost_usd: Option<f64>, monthly_usd: Option<f64>) {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    let home = dir.path().join("home");
    let store = Store::open(&home.join("autodev.db")).await.unwrap();
    let model = Arc::new(InstantModel { steps, delay: Duration::ZERO, calls: AtomicU64::new(0) });
    let engine = Engine::new(store, model, PriceTable::default(), &home)
        .with_budgets(autodev_engine::Budgets { monthly_usd })
        .collect_step_overheads();
    let settings = RunSettings { max_cost_usd, ..settings() };
    let req = RunRequest { repo, spec: Spec::parse(b"# bench").unwrap(), base: None, settings };
    let id = engine.create_run(req).await.unwrap().id;
    let started = Instant::now();
    let outcome = engine.drive(&id, CancellationToken::new()).await.unwrap();
    let wall = started.elapsed();
    assert_eq!(outcome, Outcome::Finished(autodev_domain::RunState::Succeeded));
    let mut all = engine.take_step_overheads();
    // The planner's single step and the finishing step are not agent tool steps.
    all.sort();
    let n = all.len();
    let mean = all.iter().sum::<Duration>() / n as u32;
    let with = match (max_cost_usd, monthly_usd) {
        (Some(_), Some(_)) => ", with a cost limit and a monthly budget (a reservation per call against both)",
        (Some(_), None) => ", with a cost limit (a reservation per call)",
        _ => "",
    };
    println!("step overhead over {n} steps (model reply + tool start + tool finish persisted, events included{with}):");
    println!(
        "  median {:>7.1} µs   p90 {:>7.1} µs   p99 {:>7.1} µs   mean {:>7.1} µs   (whole run {:.2} s)",
        percentile(&all, 0.5).as_secs_f64() * 1e6,
        percentile(&all, 0.9).as_secs_f64() * 1e6,
        percentile(&all, 0.99).as_secs_f64() * 1e6,
        mean.as_secs_f64() * 1e6,
        wall.as_secs_f64()
    );
}

async fn memory_in_flight(runs: usize) {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let store = Store::open(&home.join("autodev.db")).await.unwrap();
    let model = Arc::new(InstantModel { steps: 20, delay: Duration::from_millis(20), calls: AtomicU64::new(0) });
    let engine = Engine::new(store, model.clone(), PriceTable::default(), &home);
    let mut ids = Vec::new();
    for i in 0..runs {
        let repo = repo(&dir.path().join(format!("r{i}")));
        let req = RunRequest { repo, spec: Spec::parse(b"# bench").unwrap(), base: None, settings: settings() };
        ids.push(engine.create_run(req).await.unwrap().id);
    }
    let before = rss_kib("VmRSS:");
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for id in ids {
        let engine = engine.clone();
        set.spawn(async move { engine.drive(&id, CancellationToken::new()).await.unwrap() });
    }
    let mut peak_sampled = 0;
    let sampler = tokio::spawn(async move {
        let mut peak = 0;
        for _ in 0..600 {
            peak = peak.max(rss_kib("VmRSS:"));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        peak
    });
    let mut ok = 0;
    while let Some(r) = set.join_next().await {
        if r.unwrap() == Outcome::Finished(autodev_domain::RunState::Succeeded) {
            ok += 1;
        }
    }
    sampler.abort();
    peak_sampled = peak_sampled.max(rss_kib("VmHWM:"));
    println!(
        "{runs} runs in flight ({} model calls, {ok} succeeded, {:.1} s):",
        model.calls.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
    println!("  RSS before {:.1} MiB, peak (VmHWM) {:.1} MiB", before as f64 / 1024.0, peak_sampled as f64 / 1024.0);
}

/// With `OTEL_EXPORTER_OTLP_ENDPOINT` set, the run's spans are exported as `autodev` exports
/// them (an OTLP/HTTP batch exporter under tracing-opentelemetry): the overhead with tracing
/// on. Unset, no layer is installed: the overhead as shipped.
fn traces() -> Option<opentelemetry_sdk::trace::SdkTracerProvider> {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok()?;
    let exporter = opentelemetry_otlp::SpanExporter::builder().with_http().build().unwrap();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().with_batch_exporter(exporter).build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("autodev"));
    tracing_subscriber::registry().with(layer).init();
    autodev_engine::telemetry::enable();
    println!("tracing on: spans exported over OTLP/HTTP");
    Some(provider)
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is accepted and ignored.
    let provider = traces();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        step_overhead(400, None, None).await;
        // The same with max_cost_usd: each call first reserves its worst case in the store
        // (its input counted with the model's tokenizer).
        step_overhead(400, Some(1_000.0), None).await;
        // And with the deployment's monthly budget too: the month's row is locked and the
        // reservations in flight summed in the same transaction.
        step_overhead(400, Some(1_000.0), Some(100_000.0)).await;
        memory_in_flight(50).await;
    });
    if let Some(p) = provider {
        let _ = p.shutdown();
    }
}
