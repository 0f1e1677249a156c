//! `report.md`: what a reviewer reads after a run.
use std::fmt::Write as _;

use autodev_domain::{EventKind, Evidence, MicroUsd, Plan};
use autodev_store::{Store, StoreError, now_ms};

/// Renders the report of a run from the store.
pub async fn render(
    store: &Store,
    run_id: &str,
    commits: &[(String, String)],
    diffstat: &str,
) -> Result<String, StoreError> {
    let run = store.get_run(run_id).await?;
    let tasks = store.tasks(run_id).await?;
    let events = store.events(run_id, 0).await?;
    let plan: Option<Plan> = run.plan.as_deref().and_then(|p| serde_json::from_str(p).ok());
    let mut out = String::new();
    let _ = writeln!(out, "# Autodev report: {}\n", run.title);
    let _ = writeln!(out, "| | |\n|---|---|");
    let _ = writeln!(out, "| run | `{}` |", run.id);
    let outcome = match &run.reason {
        Some(reason) => format!("{}: {}", run.state, reason.replace('|', "\\|").replace('\n', " ")),
        None => run.state.clone(),
    };
    let _ = writeln!(out, "| outcome | {outcome} |");
    // A CI follow-up says which failure it answered; a revert what it reverts.
    let links = store.run_links(run_id).await?;
    if let Some((_, failure)) = links.iter().find(|(n, _)| n == "ci.failure") {
        let _ = writeln!(out, "| answers | {} |", failure.replace('|', "\\|").replace('\n', " "));
    }
    if let Some(of) = run.settings().ok().and_then(|s| s.revert) {
        let _ = writeln!(out, "| reverts | run `{}`, merged as `{}` |", of.run_id, of.sha);
    }
    let _ = writeln!(out, "| repository | `{}` |", autodev_domain::mask_url_credentials(&run.repo));
    let _ = writeln!(
        out,
        "| branch | `{}` (from `{}` at `{}`) |",
        run.branch,
        run.base_branch,
        &run.base_commit[..run.base_commit.len().min(12)]
    );
    let secs = (run.finished_at.unwrap_or_else(now_ms) - run.created_at) as f64 / 1000.0;
    let _ = writeln!(out, "| time | {secs:.1} s |");
    let _ = writeln!(
        out,
        "| usage | {} input + {} output tokens, {} |",
        run.input_tokens,
        run.output_tokens,
        MicroUsd(run.cost_micros)
    );
    // Warnings first: an unisolated sandbox or a refused repository setting is what a
    // reviewer must not miss.
    let warnings: Vec<&str> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Warning { message } => Some(message.as_str()),
            _ => None,
        })
        .collect();
    section(&mut out, "Warnings", warnings.iter().map(|w| format!("- {w}")));
    let summary: String = run.spec.lines().take(12).collect::<Vec<_>>().join("\n");
    let _ = writeln!(out, "\n## Spec\n\n{summary}\n");
    if let Some(plan) = &plan {
        let _ = writeln!(out, "## Plan\n\n{}\n", plan.summary);
    }
    // What each conversation cost (a task's is `task:<id>`).
    let mut by_conv: std::collections::BTreeMap<String, (u32, u64, u64, i64)> = Default::default();
    for e in &events {
        if let EventKind::ModelCall { conversation, input_tokens, output_tokens, cost_micros, .. } = &e.kind {
            let entry = by_conv.entry(conversation.clone()).or_default();
            entry.0 += 1;
            entry.1 += input_tokens;
            entry.2 += output_tokens;
            entry.3 += cost_micros;
        }
    }
    let _ = writeln!(out, "## Tasks\n");
    for t in &tasks {
        let deps = t.deps();
        let after = if deps.is_empty() { String::new() } else { format!(" (after {})", deps.join(", ")) };
        let _ = writeln!(out, "### {} — {}{} — {}\n", t.task_key, t.title, after, t.state);
        if let Some((n, i, o, c)) = by_conv.get(&format!("task:{}", t.task_key)) {
            let _ = writeln!(out, "Cost: {} ({n} model calls, {i} input + {o} output tokens)\n", MicroUsd(*c));
        }
        if let Some(s) = &t.summary {
            let _ = writeln!(out, "{s}\n");
        }
        if let Some(r) = &t.reason {
            let _ = writeln!(out, "Reason: {r}\n");
        }
    }
    let _ = writeln!(out, "## Tests\n");
    for e in &events {
        if let EventKind::TestRun { round, passed, exit_code, duration_ms, tail } = &e.kind {
            let _ = writeln!(
                out,
                "- round {round}: {} (exit {}, {:.1} s)",
                if *passed { "passed" } else { "failed" },
                exit_code.map_or("none".to_string(), |c| c.to_string()),
                *duration_ms as f64 / 1000.0
            );
            if !passed {
                let _ = writeln!(
                    out,
                    "\n```\n{}\n```",
                    tail.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
    }
    // The last evidence found (a repair round may have improved it).
    let evidence = events.iter().rev().find_map(|e| match &e.kind {
        EventKind::Evidence { verdict, test_files, base_exit_code, tail } => {
            Some((verdict, test_files, base_exit_code, tail))
        }
        _ => None,
    });
    if let Some((verdict, files, code, tail)) = evidence {
        let _ = writeln!(out, "\n## Evidence: {}\n", verdict.describe());
        let what = match verdict {
            Evidence::Proven => format!(
                "With only the run's test changes on `{}`, the test command fails (exit {}); on the run branch it passes.",
                run.base_branch,
                code.map_or("none".to_string(), |c| c.to_string())
            ),
            Evidence::ProvesNothing => format!(
                "With only the run's test changes on `{}`, the test command passes too: the tests do not need the change.",
                run.base_branch
            ),
            Evidence::NoTests => "The run changed no tests.".to_string(),
        };
        let _ = writeln!(out, "{what}");
        if !files.is_empty() {
            let _ = writeln!(out, "\nTests: {}", files.iter().map(|f| format!("`{f}`")).collect::<Vec<_>>().join(", "));
        }
        if *verdict == Evidence::Proven && !tail.trim().is_empty() {
            let last: Vec<&str> = tail.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect();
            let _ = writeln!(out, "\nOn the base:\n\n```\n{}\n```", last.join("\n"));
        }
    }
    let _ = writeln!(out, "\n## Commits\n");
    for (sha, subject) in commits {
        let _ = writeln!(out, "- `{}` {subject}", &sha[..sha.len().min(12)]);
    }
    if !diffstat.trim().is_empty() {
        let _ = writeln!(out, "\n```\n{}\n```", diffstat.trim_end());
    }
    // The gates and the guards: who decided what, and what the agents were stopped from
    // changing.
    let mut gates = Vec::new();
    for e in &events {
        match &e.kind {
            EventKind::PlanApproved { by, comment, allow_paths } => {
                let mut line = format!("- approved by {by}");
                if !comment.is_empty() {
                    let _ = write!(line, ": {comment}");
                }
                if !allow_paths.is_empty() {
                    let _ = write!(line, " (protected paths allowed: {})", allow_paths.join(", "));
                }
                gates.push(line);
            }
            EventKind::PlanRevisionRequested { by, comment, round } => {
                gates.push(format!("- plan rejected by {by}, revision {round} asked: {comment}"))
            }
            EventKind::ProtectedPath { conversation, path, glob, action } => {
                gates.push(format!("- {conversation}: change to protected `{path}` ({glob}) {action}"))
            }
            _ => {}
        }
    }
    section(&mut out, "Gates", gates.iter().map(|g| g.replace('\n', " ")));
    let fallbacks: Vec<String> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ProviderFallback { conversation, turn, from, to, reason } => Some(format!(
                "- {conversation} turn {}: {from} → {to} ({})",
                turn + 1,
                reason.lines().next().unwrap_or_default()
            )),
            _ => None,
        })
        .collect();
    section(&mut out, "Provider fallbacks", fallbacks);
    let _ = writeln!(out, "\n## Model calls\n");
    let _ = writeln!(out, "| conversation | calls | input | output | cost |\n|---|---|---|---|---|");
    for (conv, (n, i, o, c)) in by_conv {
        let _ = writeln!(out, "| {conv} | {n} | {i} | {o} | {} |", MicroUsd(c));
    }
    Ok(out)
}

/// A `## title` section of one line per item; nothing when there are no items.
fn section(out: &mut String, title: &str, lines: impl IntoIterator<Item = String>) {
    let mut lines = lines.into_iter().peekable();
    if lines.peek().is_none() {
        return;
    }
    let _ = writeln!(out, "\n## {title}\n");
    for line in lines {
        let _ = writeln!(out, "{line}");
    }
}
