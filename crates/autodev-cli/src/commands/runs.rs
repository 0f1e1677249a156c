//! `autodev runs list` and `runs show`.
use crate::Exit;
use crate::display::Display;
use autodev_domain::MicroUsd;
use autodev_store::RunRow;
use std::path::Path;

use crate::context::*;

pub(crate) fn run_json(r: &RunRow) -> serde_json::Value {
    serde_json::json!({
        "id": r.id, "short_id": r.short_id, "title": r.title, "state": r.state, "reason": r.reason,
        "repo": r.repo, "base_branch": r.base_branch, "branch": r.branch,
        "tests_passed": r.test_passed, "evidence": r.evidence, "input_tokens": r.input_tokens, "output_tokens": r.output_tokens,
        "cost_usd": MicroUsd(r.cost_micros).as_usd(), "created_at_ms": r.created_at, "finished_at_ms": r.finished_at,
    })
}

pub(crate) fn age(ms: i64) -> String {
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

/// Each conversation's prompts, from its model calls: how many, the first and the largest
/// prompt in tokens (as the server counted them), and the window they had to fit.
struct Prompts {
    conversation: String,
    calls: u32,
    first: u64,
    last: u64,
    largest: u64,
}

fn prompts_of(events: &[autodev_domain::Event]) -> Vec<Prompts> {
    let mut out: Vec<Prompts> = Vec::new();
    for e in events {
        let autodev_domain::EventKind::ModelCall { conversation, input_tokens, .. } = &e.kind else { continue };
        match out.iter_mut().find(|p| &p.conversation == conversation) {
            Some(p) => {
                p.calls += 1;
                p.last = *input_tokens;
                p.largest = p.largest.max(*input_tokens);
            }
            None => out.push(Prompts {
                conversation: conversation.clone(),
                calls: 1,
                first: *input_tokens,
                last: *input_tokens,
                largest: *input_tokens,
            }),
        }
    }
    out
}

/// The window the run's model had: the run's `context_window`, else the price table's
/// (with the configuration's overrides when it loads).
fn window_of(home: &Path, r: &RunRow) -> u64 {
    let settings = r.settings().ok();
    if let Some(w) = settings.as_ref().and_then(|s| s.context_window) {
        return w;
    }
    let overrides = crate::config::FileConfig::load(home, None, None).map(|c| c.prices).unwrap_or_default();
    let model = settings.map(|s| s.model).unwrap_or_default();
    autodev_llm::PriceTable::with_overrides(&overrides).context_window(&model)
}

pub async fn show(home: &Path, key: &str, json: bool) -> Exit {
    let inner = async {
        let store = open_store(home).await?;
        let r = store.find_run(key).await.map_err(store_error)?;
        let tasks = store.tasks(&r.id).await.map_err(store_error)?;
        let events = store.events(&r.id, 0).await.map_err(store_error)?;
        let deliveries = store.outbox_for_run(&r.id).await.map_err(store_error)?;
        let links = store.run_links(&r.id).await.map_err(store_error)?;
        let owner =
            autodev_engine::after::timeline_owner(&store, &r.id).await.map_err(|e| Exit::Usage(e.to_string()))?;
        let timeline = store.timeline(&owner).await.map_err(store_error)?;
        if json {
            let mut v = run_json(&r);
            v["deliveries"] = autodev_delivery::deliveries_json(&deliveries);
            v["timeline"] = serde_json::to_value(&timeline).unwrap_or_default();
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
            let window = window_of(home, &r);
            v["prompts"] = prompts_of(&events)
                .iter()
                .map(|p| serde_json::json!({"conversation": p.conversation, "calls": p.calls, "first_tokens": p.first, "last_tokens": p.last, "largest_tokens": p.largest, "window": window}))
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
        let prompts = prompts_of(&events);
        if !prompts.is_empty() {
            let window = window_of(home, &r);
            println!("prompts  (input tokens per model call; window {window})");
            for p in &prompts {
                println!(
                    "  {:<12} {:>3} calls, first {}, last {}, largest {} ({}% of the window)",
                    p.conversation,
                    p.calls,
                    p.first,
                    p.last,
                    p.largest,
                    p.largest * 100 / window.max(1)
                );
            }
        }
        if !timeline.is_empty() {
            println!("timeline (after the pull request)");
            for s in &timeline {
                let at = humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH + std::time::Duration::from_millis(s.at_ms.max(0) as u64),
                );
                println!("  {at}  {}", crate::display::step_line(&s.as_step()));
            }
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
