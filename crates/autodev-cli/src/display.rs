//! The live display of a run (and its `--json` form): one line per thing that happened,
//! under a status line with the state, task progress, tokens and cost so far. Without a
//! terminal (a log, CI) there is no status line, so each model call gets a line of its own.
//! Times are the events' own, from the first event shown (`runs show` replays a whole run).
use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use autodev_domain::{Event, EventKind, MicroUsd, TaskState};
use indicatif::{ProgressBar, ProgressStyle};

pub struct Display {
    json: bool,
    terminal: bool,
    bar: ProgressBar,
    started: Instant,
    /// The first event's time, and the current event's time from it (seconds).
    origin_ms: Option<i64>,
    at_secs: Option<f64>,
    state: String,
    tasks: BTreeMap<String, TaskState>,
    tokens: u64,
    cost: i64,
}

/// `task:t1` → `[t1]`, `planner` → `[plan]`, `repair:1` → `[repair 1]`.
fn label(conversation: &str) -> String {
    match conversation.split_once(':') {
        Some(("task", k)) => format!("[{k}]"),
        Some((kind, k)) => format!("[{kind} {k}]"),
        None if conversation == "planner" => "[plan]".into(),
        None => format!("[{conversation}]"),
    }
}

fn tokens(n: u64) -> String {
    if n >= 10_000 { format!("{:.1}k", n as f64 / 1000.0) } else { n.to_string() }
}

impl Display {
    pub fn new(json: bool) -> Self {
        let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let bar = if json || !terminal {
            ProgressBar::hidden()
        } else {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg}").unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        };
        Self {
            json,
            terminal,
            bar,
            started: Instant::now(),
            origin_ms: None,
            at_secs: None,
            state: "queued".into(),
            tasks: BTreeMap::new(),
            tokens: 0,
            cost: 0,
        }
    }

    fn line(&self, text: String) {
        let elapsed = self.at_secs.unwrap_or_else(|| self.started.elapsed().as_secs_f64());
        self.bar.suspend(|| {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{elapsed:>6.1}s  {text}");
        });
    }

    fn status(&self) {
        let done = self.tasks.values().filter(|s| **s == TaskState::Done).count();
        let running = self.tasks.values().filter(|s| **s == TaskState::Running).count();
        let tasks = if self.tasks.is_empty() {
            String::new()
        } else {
            format!(" · tasks {done}/{} ({running} running)", self.tasks.len())
        };
        self.bar.set_message(format!(
            "{}{tasks} · {} tokens · {}",
            self.state,
            tokens(self.tokens),
            MicroUsd(self.cost)
        ));
    }

    pub fn event(&mut self, e: &Event) {
        if self.json {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", serde_json::to_string(e).unwrap_or_default());
            return;
        }
        let origin = *self.origin_ms.get_or_insert(e.at_ms);
        self.at_secs = Some((e.at_ms - origin).max(0) as f64 / 1000.0);
        match &e.kind {
            EventKind::RunCreated { title, repo, base_branch, test_command } => {
                self.line(format!("run {} · {title}", &e.run_id[..e.run_id.len().min(36)]));
                self.line(format!("      repo {repo} · base {base_branch} · tests `{test_command}`"));
            }
            EventKind::StateChanged { to, reason, .. } => {
                self.state = to.to_string();
                match reason {
                    Some(r) => self.line(format!("● {to}: {r}")),
                    None => self.line(format!("● {to}")),
                }
            }
            EventKind::PlanRejected { reason } => self.line(format!("  [plan] refused: {}", first_line(reason))),
            EventKind::PlanAccepted { summary, tasks } => {
                self.line(format!("plan: {}", first_line(summary)));
                for t in tasks {
                    let after = if t.depends_on.is_empty() {
                        String::new()
                    } else {
                        format!("  (after {})", t.depends_on.join(", "))
                    };
                    self.line(format!("  {:<8} {}{after}", t.id, t.title));
                    self.tasks.insert(t.id.clone(), TaskState::Pending);
                }
            }
            EventKind::PlanApproved { by, comment, allow_paths } => self.line(format!(
                "approved by {by}{}{}",
                if comment.is_empty() { String::new() } else { format!(": {comment}") },
                if allow_paths.is_empty() {
                    String::new()
                } else {
                    format!(" (protected paths allowed: {})", allow_paths.join(", "))
                }
            )),
            EventKind::PlanRevisionRequested { by, comment, round } => self.line(format!(
                "plan rejected by {by} with a comment; the planner revises it (round {round}): {}",
                first_line(comment)
            )),
            EventKind::ProtectedPath { conversation, path, glob, action } => {
                self.line(format!("  {} ! protected path {path} ({glob}): {action}", label(conversation)))
            }
            EventKind::ProviderFallback { conversation, from, to, reason, .. } => {
                self.line(format!("  {} ! {from} unavailable, using {to}: {}", label(conversation), first_line(reason)))
            }
            EventKind::TaskStateChanged { task, state, reason } => {
                self.tasks.insert(task.clone(), *state);
                if *state != TaskState::Ready {
                    let why = reason.as_deref().map(|r| format!(": {}", first_line(r))).unwrap_or_default();
                    self.line(format!("  [{task}] {state}{why}"));
                }
            }
            EventKind::AgentStep { conversation, tool, target, .. } => {
                self.line(format!("  {} {tool} {target}", label(conversation)));
            }
            EventKind::ToolFinished { conversation, tool, ok, summary, .. } => {
                if !ok {
                    self.line(format!("  {}   ✗ {tool}: {summary}", label(conversation)));
                }
            }
            EventKind::ModelCall {
                conversation, turn, input_tokens, output_tokens, cost_micros, latency_ms, ..
            } => {
                self.tokens += input_tokens + output_tokens;
                self.cost += cost_micros;
                if !self.terminal {
                    self.line(format!(
                        "  {} model turn {}: {} in + {} out tokens, {}, {:.1}s (run total {} tokens, {})",
                        label(conversation),
                        turn + 1,
                        tokens(*input_tokens),
                        tokens(*output_tokens),
                        MicroUsd(*cost_micros),
                        *latency_ms as f64 / 1000.0,
                        tokens(self.tokens),
                        MicroUsd(self.cost)
                    ));
                }
            }
            EventKind::ContextCompacted { conversation, tokens_before, tokens_after, window, .. } => {
                self.line(format!(
                    "  {} context compacted: {} → {} tokens (window {})",
                    label(conversation),
                    tokens(*tokens_before),
                    tokens(*tokens_after),
                    tokens(*window)
                ))
            }
            EventKind::TaskCommitted { task, commit } => {
                self.line(format!("  [{task}] committed {}", &commit[..commit.len().min(10)]))
            }
            EventKind::MergeConflict { task, files } => {
                self.line(format!("  [{task}] merge conflict in {}: handing to an agent", files.join(", ")))
            }
            EventKind::TaskMerged { task, .. } => self.line(format!("  [{task}] merged into the run branch")),
            EventKind::TestRun { round, passed, duration_ms, tail, exit_code } => {
                let secs = *duration_ms as f64 / 1000.0;
                if *passed {
                    self.line(format!("tests (round {round}): passed in {secs:.1}s"));
                } else {
                    let code = exit_code.map_or("killed".to_string(), |c| format!("exit {c}"));
                    self.line(format!("tests (round {round}): FAILED ({code}, {secs:.1}s)"));
                    let lines: Vec<&str> = tail.lines().collect();
                    for l in &lines[lines.len().saturating_sub(8)..] {
                        self.line(format!("    | {l}"));
                    }
                }
            }
            EventKind::Delivered { branch, .. } => self.line(format!("delivered branch {branch}")),
            EventKind::Warning { message } => self.line(format!("! {message}")),
            EventKind::DeliveryAttempted { target, topic, ok, message, .. } => {
                let mark = if *ok { "✓" } else { "✗" };
                self.line(format!("  [{target}] {mark} {topic}: {}", first_line(message)))
            }
            EventKind::DeliveryChecks(s)
            | EventKind::DeliveryMerged(s)
            | EventKind::DeliveryDeployed(s)
            | EventKind::DeliveryFollowUp(s) => self.line(format!("◆ {}", step_line(s))),
            EventKind::DeliveryFailed { target, topic, message, .. } => {
                self.line(format!("! [{target}] gave up on {topic}: {} (retry: autodev deliver)", first_line(message)))
            }
            EventKind::Evidence { verdict, test_files, base_exit_code, .. } => {
                let detail = match (verdict, base_exit_code) {
                    (autodev_domain::Evidence::Proven, Some(code)) => {
                        format!(": the run's tests fail without its change (exit {code}) and pass with it")
                    }
                    (autodev_domain::Evidence::ProvesNothing, _) => {
                        ": the run's tests pass without its change too".to_string()
                    }
                    _ => String::new(),
                };
                let files = if test_files.is_empty() { String::new() } else { format!(" [{}]", test_files.join(", ")) };
                self.line(format!("evidence: {}{detail}{files}", verdict.describe()))
            }
        }
        self.status();
        self.at_secs = None;
    }

    pub fn is_json(&self) -> bool {
        self.json
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }

    /// Prints free text above the status line (or nothing in JSON mode).
    pub fn note(&self, text: &str) {
        if !self.json {
            self.bar.suspend(|| println!("{text}"));
        }
    }
}

fn first_line(s: &str) -> String {
    let l = s.lines().next().unwrap_or("");
    l.chars().take(160).collect()
}

/// A delivery timeline step on one line: `merged · merged by octocat · abc123def456`.
pub fn step_line(s: &autodev_domain::DeliveryStep) -> String {
    let mut line = s.step.replace('_', " ");
    if let Some(env) = &s.environment {
        line.push_str(&format!(" ({env})"));
    }
    if !s.detail.is_empty() {
        line.push_str(&format!(" · {}", first_line(&s.detail)));
    }
    if let Some(sha) = &s.sha {
        line.push_str(&format!(" · {}", &sha[..sha.len().min(12)]));
    }
    if let Some(url) = &s.url {
        line.push_str(&format!(" · {url}"));
    }
    line
}
