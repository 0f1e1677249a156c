//! The run's phases, each resumable: re-entering a phase after a crash picks up from what
//! the store and git already show.
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use autodev_domain::{EventKind, Plan, RunState, TaskState};
use autodev_store::TaskRow;
use autodev_workspace::{MergeOutcome, ToolBox};
use tokio::task::JoinSet;

use crate::agent::{AgentEnd, AgentKind, AgentSpec, run_agent};
use crate::ctx::RunCtx;
use crate::error::{EngineError, Result};
use crate::outcome::Outcome;
use crate::{detect, prompts, report};

/// Model turns the planner may take.
const PLANNER_STEPS: u32 = 30;
/// Bytes of failing test output handed to the repair agent (its head and tail; less in a
/// small window).
const FAILURE_BYTES: usize = 24 * 1024;
/// Bytes of a test run's output kept in its event (the run page shows it).
const EVENT_OUTPUT_BYTES: usize = 4 * 1024;

pub(crate) async fn drive(ctx: &Arc<RunCtx>) -> Result<Outcome> {
    use tracing::Instrument;
    loop {
        ctx.check_cancel()?;
        let state = ctx.engine.store.run_state(&ctx.run.id).await?;
        // Each phase is a span of the run's trace.
        let phase = |name: &'static str| tracing::info_span!("autodev.phase", otel.name = name, autodev.phase = name, autodev.run.id = %ctx.run.id);
        match state {
            RunState::Queued => {
                crate::isolation::announce(ctx).await?;
                transition(ctx, RunState::Planning, None).await?
            }
            RunState::Planning => plan(ctx).instrument(phase("plan")).await?,
            RunState::AwaitingApproval => return Ok(Outcome::AwaitingApproval),
            RunState::Executing => execute(ctx).instrument(phase("execute")).await?,
            RunState::Verifying => verify(ctx).instrument(phase("verify")).await?,
            RunState::Delivering => deliver(ctx).instrument(phase("deliver")).await?,
            RunState::Succeeded | RunState::Failed | RunState::Cancelled => return Ok(Outcome::Finished(state)),
        }
    }
}

async fn transition(ctx: &RunCtx, to: RunState, reason: Option<&str>) -> Result<()> {
    tracing::info!(run = %ctx.run.id, state = %to, "run state changed");
    if let Some(e) = ctx.engine.store.set_run_state(&ctx.run.id, to, reason).await? {
        ctx.emit(e).await;
    }
    Ok(())
}

fn toolbox(ctx: &RunCtx, dir: &std::path::Path) -> Result<ToolBox> {
    let tb = ToolBox::new(dir, ctx.policy())
        .map_err(|e| EngineError::Failed(format!("cannot open the workspace {}: {e}", dir.display())))?;
    let index = crate::code::RunIndex {
        cell: ctx.code.clone(),
        code: ctx.engine.code.clone(),
        key: std::path::PathBuf::from(&ctx.run.repo),
        source: dir.to_path_buf(),
    };
    Ok(tb
        .with_default_timeout(Duration::from_secs(ctx.settings.command_timeout_secs))
        .with_read_budget(ctx.output_budget())
        .with_protected(protected(ctx)?)
        .with_code_search(Arc::new(index)))
}

/// The run's protected paths, minus those it was approved with.
fn protected(ctx: &RunCtx) -> Result<autodev_workspace::protect::Protected> {
    autodev_workspace::protect::Protected::new(&ctx.settings.protected_paths, &ctx.settings.allowed_paths)
        .map_err(EngineError::Invalid)
}

/// Commits an agent's work in `git`'s worktree after putting back whatever it changed at a
/// protected path by other means than the file tools (a command), each recorded.
async fn commit_guarded(
    ctx: &RunCtx,
    git: &autodev_workspace::Git,
    conv: &str,
    message: &str,
) -> Result<Option<String>> {
    let protected = protected(ctx)?;
    if !protected.is_empty() {
        for path in git.changed_paths().await? {
            if let Some(glob) = protected.protecting(&path) {
                tracing::warn!(run = %ctx.run.id, path, glob, "a protected path was changed by a command; putting it back");
                git.restore_from_head(&path).await?;
                metrics::counter!("autodev_protected_path_reverts_total").increment(1);
                ctx.event(EventKind::ProtectedPath {
                    conversation: conv.to_string(),
                    path: path.clone(),
                    glob: glob.to_string(),
                    action: "reverted".into(),
                })
                .await?;
            }
        }
    }
    Ok(git.commit_all(message).await?)
}

/// Tests passed: on to delivery, or, when the project holds deliveries for approval, to
/// `awaiting_approval` with the patch and report written for the reviewer.
async fn tests_passed(ctx: &RunCtx) -> Result<()> {
    if ctx.settings.approve_delivery {
        let repo = ctx.repo();
        let patch = repo.diff(&ctx.run.base_commit, &ctx.run.branch).await?;
        write_artifact(ctx, "changes.patch", &patch).await?;
        write_report(ctx).await?;
        return transition(ctx, RunState::AwaitingApproval, None).await;
    }
    transition(ctx, RunState::Delivering, None).await
}

/// The worktree on the run branch, where merges, tests and repairs happen.
async fn run_worktree(ctx: &RunCtx) -> Result<PathBuf> {
    let wt = ctx.worktree("run");
    ctx.repo().worktree_add(&wt, &ctx.run.branch, &ctx.run.base_commit).await?;
    Ok(wt)
}

fn task_branch(ctx: &RunCtx, key: &str) -> String {
    format!("autodev/{}-tasks/{key}", ctx.run.short_id)
}

async fn load_plan(ctx: &RunCtx) -> Result<Plan> {
    let run = ctx.engine.store.get_run(&ctx.run.id).await?;
    let text = run.plan.ok_or_else(|| EngineError::Failed("the run has no plan".into()))?;
    serde_json::from_str(&text).map_err(|e| EngineError::Failed(format!("the stored plan is unreadable: {e}")))
}

async fn plan(ctx: &Arc<RunCtx>) -> Result<()> {
    if let Some(of) = &ctx.settings.revert {
        return crate::after::revert_change(ctx, of).await;
    }
    let run = ctx.engine.store.get_run(&ctx.run.id).await?;
    if run.plan.is_none() {
        let wt = run_worktree(ctx).await?;
        let tb = toolbox(ctx, &wt)?;
        // A plan rejected with a comment is revised in a conversation of its own, which
        // starts from the rejected plan and the comment.
        let revision = last_revision(ctx).await?;
        let conversation = match &revision {
            None => "planner".to_string(),
            Some((round, _, _)) => format!("planner:r{round}"),
        };
        let header = if ctx.engine.store.conversation_exists(&run.id, &conversation).await? {
            Vec::new() // the stored header is used
        } else {
            let git = ctx.repo().worktree(&wt).await?;
            // A repository too big to list whole is indexed now, and the planner sees what
            // is most relevant to the spec; a smaller one is indexed when search_code is first
            // used.
            let tracked = git.run(&["ls-files"]).await.unwrap_or_default().lines().count();
            let index = if tracked > detect::LISTED_FILES { ctx.code_index(&wt).await } else { None };
            let view =
                detect::repo_view(&git, &wt, index.as_deref().map(|s| (s, run.spec.as_str())), ctx.output_budget())
                    .await;
            let mut header = prompts::planner(&run.spec, &view, &ctx.settings.test_command, ctx.compact());
            if let Some((round, comment, rejected)) = &revision {
                header.push(autodev_domain::Message::user(prompts::plan_revision(*round, rejected, comment)));
            }
            header
        };
        let end = run_agent(
            ctx,
            AgentSpec {
                conversation,
                header,
                kind: AgentKind::Planner,
                toolbox: &tb,
                max_steps: PLANNER_STEPS,
                token_budget: Some(ctx.settings.max_task_tokens),
            },
        )
        .await?;
        let AgentEnd::Plan(plan) = end else {
            return Err(EngineError::Failed("the planner finished without submitting a plan".into()));
        };
        let view = plan
            .tasks
            .iter()
            .map(|t| autodev_domain::event::PlanTaskView {
                id: t.id.clone(),
                title: t.title.clone(),
                depends_on: t.depends_on.clone(),
            })
            .collect();
        let e = ctx
            .engine
            .store
            .set_plan(&run.id, &plan, EventKind::PlanAccepted { summary: plan.summary.clone(), tasks: view })
            .await?;
        ctx.emit(e).await;
    }
    let next = if ctx.settings.approval { RunState::AwaitingApproval } else { RunState::Executing };
    transition(ctx, next, None).await
}

/// The latest revision asked for, if the plan was rejected with a comment: its round, the
/// comment, and the rejected plan as the reviewer saw it.
async fn last_revision(ctx: &RunCtx) -> Result<Option<(u32, String, String)>> {
    let mut rejected = String::new();
    let mut last = None;
    for e in ctx.engine.store.events(&ctx.run.id, 0).await? {
        match e.kind {
            EventKind::PlanAccepted { summary, tasks } => {
                rejected = format!("{summary}\n");
                for t in tasks {
                    let after = if t.depends_on.is_empty() {
                        String::new()
                    } else {
                        format!(" (after {})", t.depends_on.join(", "))
                    };
                    rejected.push_str(&format!("- {}: {}{after}\n", t.id, t.title));
                }
            }
            EventKind::PlanRevisionRequested { comment, round, .. } => last = Some((round, comment, rejected.clone())),
            _ => {}
        }
    }
    Ok(last)
}

async fn set_task(
    ctx: &RunCtx,
    key: &str,
    state: TaskState,
    reason: Option<&str>,
    summary: Option<&str>,
) -> Result<()> {
    tracing::info!(run = %ctx.run.id, task = key, state = %state, "task state changed");
    let e = ctx.engine.store.set_task_state(&ctx.run.id, key, state, reason, summary).await?;
    ctx.emit(e).await;
    Ok(())
}

async fn execute(ctx: &Arc<RunCtx>) -> Result<()> {
    if ctx.settings.revert.is_some() {
        // A revert run has its one commit already (resumed here after a crash).
        return transition(ctx, RunState::Verifying, None).await;
    }
    let plan = Arc::new(load_plan(ctx).await?);
    let run_wt = run_worktree(ctx).await?;
    let mut running: JoinSet<(String, Result<TaskEnd>)> = JoinSet::new();
    let mut in_flight: HashSet<String> = HashSet::new();
    loop {
        ctx.check_cancel()?;
        let tasks = ctx.engine.store.tasks(&ctx.run.id).await?;
        let mut states: HashMap<String, TaskState> =
            tasks.iter().map(|t| (t.task_key.clone(), t.task_state())).collect();
        // A task whose dependency failed or was skipped is skipped, transitively.
        loop {
            let skip = tasks.iter().find_map(|t| {
                let state = states.get(&t.task_key).copied();
                let waiting = matches!(state, Some(TaskState::Pending | TaskState::Ready));
                let dead = |d: &String| matches!(states.get(d), Some(TaskState::Failed | TaskState::Skipped));
                t.deps().into_iter().find(|d| waiting && dead(d)).map(|dep| (t.task_key.clone(), dep))
            });
            let Some((key, dep)) = skip else { break };
            let reason = format!("depends on {dep}, which did not complete");
            set_task(ctx, &key, TaskState::Skipped, Some(&reason), None).await?;
            states.insert(key, TaskState::Skipped);
        }
        let tasks = ctx.engine.store.tasks(&ctx.run.id).await?;
        for t in &tasks {
            if in_flight.len() >= ctx.settings.max_parallel {
                break;
            }
            if in_flight.contains(&t.task_key) {
                continue;
            }
            let deps_done = t.deps().iter().all(|d| states.get(d) == Some(&TaskState::Done));
            match t.task_state() {
                TaskState::Pending if deps_done => {
                    set_task(ctx, &t.task_key, TaskState::Ready, None, None).await?;
                    set_task(ctx, &t.task_key, TaskState::Running, None, None).await?;
                }
                TaskState::Ready => set_task(ctx, &t.task_key, TaskState::Running, None, None).await?,
                // Running without a worker here: interrupted by a crash; pick it up again.
                TaskState::Running => {}
                TaskState::Pending | TaskState::Done | TaskState::Failed | TaskState::Skipped => continue,
            }
            in_flight.insert(t.task_key.clone());
            let (ctx2, task, plan) = (ctx.clone(), t.clone(), plan.clone());
            let span = tracing::info_span!(
                "autodev.task",
                otel.name = %format!("task {}", t.task_key),
                autodev.task.id = %t.task_key,
                autodev.task.title = %t.title,
                autodev.run.id = %ctx.run.id
            );
            running.spawn(tracing::Instrument::instrument(
                async move {
                    let key = task.task_key.clone();
                    (key, task_agent(&ctx2, &task, &plan).await)
                },
                span,
            ));
        }
        if in_flight.is_empty() {
            let tasks = ctx.engine.store.tasks(&ctx.run.id).await?;
            if tasks.iter().all(|t| t.task_state().is_terminal()) {
                break;
            }
            return Err(EngineError::Failed("no task can start: the plan's dependencies cannot be met".into()));
        }
        let joined = tokio::select! {
            j = running.join_next() => j,
            _ = ctx.cancel.cancelled() => return Err(EngineError::Cancelled),
        };
        let Some(joined) = joined else { continue };
        let (key, result) = joined.map_err(|e| EngineError::Failed(format!("a task crashed: {e}")))?;
        in_flight.remove(&key);
        match result {
            Ok(TaskEnd { summary, changed, incomplete }) => {
                let task = plan
                    .task(&key)
                    .cloned()
                    .ok_or_else(|| EngineError::Failed(format!("task {key} is not in the plan")))?;
                // A task that changed nothing is done (the agent may be right that nothing was
                // needed) but says so: in its reason, the events and the report. So is one
                // stopped at its step limit (`incomplete`).
                let reason = incomplete.as_deref().or((!changed).then_some(NO_CHANGE_TASK));
                match merge_task(ctx, &run_wt, &task).await {
                    Ok(()) => set_task(ctx, &key, TaskState::Done, reason, Some(&summary)).await?,
                    Err(EngineError::Cancelled) => return Err(EngineError::Cancelled),
                    Err(e) => set_task(ctx, &key, TaskState::Failed, Some(&e.to_string()), Some(&summary)).await?,
                }
            }
            Err(EngineError::Cancelled) => return Err(EngineError::Cancelled),
            Err(e) => set_task(ctx, &key, TaskState::Failed, Some(&e.to_string()), None).await?,
        }
    }
    let tasks = ctx.engine.store.tasks(&ctx.run.id).await?;
    let failed: Vec<String> = tasks
        .iter()
        .filter(|t| t.task_state() == TaskState::Failed)
        .map(|t| format!("task {} failed: {}", t.task_key, t.reason.clone().unwrap_or_default()))
        .collect();
    // A spent budget is the run's reason, as it is (`budget_exceeded: …`), not a task's.
    if let Some(budget) =
        tasks.iter().filter_map(|t| t.reason.as_deref()).find(|r| r.starts_with(autodev_store::BUDGET_EXCEEDED))
    {
        return Err(EngineError::Budget(budget.to_string()));
    }
    if !failed.is_empty() {
        return Err(EngineError::Failed(failed.join("; ")));
    }
    transition(ctx, RunState::Verifying, None).await
}

/// The reason a task that finished without changing anything carries.
pub(crate) const NO_CHANGE_TASK: &str = "no_change: the agent finished without changing any file";

/// The reason code of a task stopped at its step limit with a change (it is `done`, and the
/// engine's tests and repair rounds decide).
pub(crate) const INCOMPLETE_TASK: &str = "incomplete";

/// How a task's agent ended.
struct TaskEnd {
    summary: String,
    /// Whether the task branch has commits the run branch does not.
    changed: bool,
    /// Set (the task's reason) when the agent stopped at its step limit.
    incomplete: Option<String>,
}

/// One task: an agent in its own worktree on a task branch from the run branch; its work is
/// committed with the task's title as the message.
async fn task_agent(ctx: &RunCtx, task: &TaskRow, plan: &Plan) -> Result<TaskEnd> {
    let key = &task.task_key;
    let planned =
        plan.task(key).cloned().ok_or_else(|| EngineError::Failed(format!("task {key} is not in the plan")))?;
    let wt = ctx.worktree(&format!("task-{key}"));
    let fresh = !wt.join(".git").exists();
    ctx.repo().worktree_add(&wt, &task_branch(ctx, key), &ctx.run.branch).await?;
    let tb = toolbox(ctx, &wt)?;
    restore_recorded_writes(ctx, &tb, &format!("task:{key}"), fresh).await?;
    let end = run_agent(
        ctx,
        AgentSpec {
            conversation: format!("task:{key}"),
            header: prompts::task(&ctx.run.spec, plan, &planned, &ctx.settings.test_command, ctx.style()),
            kind: AgentKind::Coder,
            toolbox: &tb,
            max_steps: ctx.settings.max_steps,
            token_budget: Some(ctx.settings.max_task_tokens),
        },
    )
    .await?;
    let (summary, incomplete) = match end {
        AgentEnd::Finished(summary) => (summary, None),
        AgentEnd::StepLimit(steps) => {
            let why = format!(
                "{INCOMPLETE_TASK}: reached its step limit ({steps} model turns) before calling finish; its change so \
                 far was committed, and the tests decide"
            );
            ctx.event(EventKind::Warning { message: format!("task {key}: {why}") }).await?;
            (format!("(stopped at the step limit of {steps} model turns before calling finish)"), Some(why))
        }
        AgentEnd::Plan(_) => return Err(EngineError::Failed(format!("task {key} ended without finishing"))),
    };
    let git = ctx.repo().worktree(&wt).await?;
    git.clear_stale_locks()?;
    let message = format!("{}\n\nAutodev run {}, task {key}.\n\n{summary}", planned.title, ctx.run.short_id);
    if let Some(sha) = commit_guarded(ctx, &git, &format!("task:{key}"), &message).await? {
        let e = ctx.engine.store.set_task_commit(&ctx.run.id, key, &sha).await?;
        ctx.emit(e).await;
    }
    if ctx.run.project_id.is_some() {
        crate::checkout::checkpoint_task(&ctx.repo(), &ctx.run, &task_branch(ctx, key), key).await?;
    }
    // Counted from the branches, not from this commit: a task resumed after its commit has
    // nothing left to commit but did change something.
    let changed = !ctx.repo().log(&format!("{}..{}", ctx.run.branch, task_branch(ctx, key))).await?.is_empty();
    if incomplete.is_some() && !changed {
        // Nothing to verify: the step limit with an empty change fails the task as before.
        return Err(EngineError::Failed(format!(
            "task {key} reached its step limit ({} model turns) without changing any file",
            ctx.settings.max_steps
        )));
    }
    Ok(TaskEnd { summary, changed, incomplete })
}

/// A run whose branch has no diff against its base does not succeed: it fails `no_change`
/// with what the agents said, so the user can judge whether nothing was needed.
async fn ensure_changed(ctx: &RunCtx) -> Result<()> {
    if !ctx.repo().same_tree(&ctx.run.base_commit, &ctx.run.branch).await? {
        return Ok(());
    }
    let tasks = ctx.engine.store.tasks(&ctx.run.id).await?;
    let words: Vec<String> =
        tasks.iter().filter_map(|t| t.summary.as_deref().map(|s| format!("{}: {}", t.task_key, s.trim()))).collect();
    let said = if words.is_empty() { "nothing".to_string() } else { words.join("; ") };
    Err(EngineError::Failed(format!(
        "no_change: the run's branch has no change against {}; the agents said: {said}",
        ctx.run.base_branch
    )))
}

/// A task resumed in a new worktree (its first worker died, and this worker, maybe on another
/// machine, has none of its files) gets back what the agent wrote: the recorded, successful
/// `write_file`, `edit_file`, `insert_lines` and `undo_edit` calls are applied again, in
/// order, through the same tools. No model call is repeated; `run` commands are not re-run
/// (their side effects on files are the one thing not restored). Either way (a new worktree
/// or the same one) the toolbox learns which files the task had read, so `write_file` may
/// replace them as it could before. A task that never ran has no recorded calls.
async fn restore_recorded_writes(ctx: &RunCtx, tb: &ToolBox, conversation: &str, fresh: bool) -> Result<()> {
    const WRITES: &[&str] = &["write_file", "edit_file", "insert_lines", "undo_edit"];
    let calls = ctx.engine.store.tool_calls(&ctx.run.id, conversation).await?;
    let done: Vec<_> = calls.iter().filter(|c| c.status == "finished" && !c.is_error).collect();
    let mut applied = 0;
    for call in &done {
        if call.name == "read_file" || (!fresh && WRITES.contains(&call.name.as_str())) {
            if let Some(path) = serde_json::from_str::<serde_json::Value>(&call.arguments)
                .ok()
                .and_then(|v| v.get("path").and_then(|p| p.as_str()).map(str::to_string))
            {
                tb.note_read(&path);
            }
            continue;
        }
        if !fresh || !WRITES.contains(&call.name.as_str()) {
            continue;
        }
        applied += 1;
        let outcome = tb.execute(&call.name, &call.arguments).await;
        if outcome.is_error {
            tracing::warn!(run = %ctx.run.id, conversation, tool = %call.name, "a recorded write could not be applied again");
        }
    }
    if applied == 0 {
        return Ok(());
    }
    ctx.event(EventKind::Warning {
        message: format!("{conversation} resumed in a new worktree: {applied} recorded file write(s) applied again"),
    })
    .await
}

/// Merges a finished task's branch into the run branch. Already merged (resume) is a no-op;
/// a conflict goes to an agent, and the merge is committed only when no marker remains.
async fn merge_task(ctx: &RunCtx, run_wt: &std::path::Path, task: &autodev_domain::PlannedTask) -> Result<()> {
    merge_task_into(ctx, run_wt, task).await?;
    // A project run saves each merged state to the project's repository, so a worker on
    // another machine can resume from it.
    if ctx.run.project_id.is_some() {
        crate::checkout::checkpoint(&ctx.repo(), &ctx.run).await?;
    }
    Ok(())
}

async fn merge_task_into(ctx: &RunCtx, run_wt: &std::path::Path, task: &autodev_domain::PlannedTask) -> Result<()> {
    let git = ctx.repo().worktree(run_wt).await?;
    git.clear_stale_locks()?;
    let branch = task_branch(ctx, &task.id);
    let message = format!("Merge task {}: {}", task.id, task.title);
    if !git.merge_in_progress().await? {
        let head = ctx
            .repo()
            .rev_parse(&branch)
            .await?
            .ok_or_else(|| EngineError::Failed(format!("task branch {branch} is missing")))?;
        if git.is_ancestor(&head, "HEAD").await? {
            return Ok(());
        }
        match git.merge(&branch, &message).await? {
            MergeOutcome::Merged(sha) => {
                ctx.event(EventKind::TaskMerged { task: task.id.clone(), commit: sha }).await?;
                return Ok(());
            }
            MergeOutcome::UpToDate => return Ok(()),
            MergeOutcome::Conflict(files) => {
                ctx.event(EventKind::MergeConflict { task: task.id.clone(), files }).await?;
            }
        }
    }
    let conflicted: Vec<String> = git
        .run(&["diff", "--name-only", "--diff-filter=U", "-z"])
        .await?
        .split('\0')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let tb = toolbox(ctx, run_wt)?;
    restore_recorded_writes(ctx, &tb, &format!("merge:{}", task.id), false).await?;
    run_agent(
        ctx,
        AgentSpec {
            conversation: format!("merge:{}", task.id),
            header: prompts::merge(task, &conflicted, &ctx.settings.test_command, ctx.style()),
            kind: AgentKind::Coder,
            toolbox: &tb,
            max_steps: ctx.settings.max_steps,
            token_budget: Some(ctx.settings.max_task_tokens),
        },
    )
    .await?;
    // Read through the worktree's handle: the agent that resolved the conflict may have left a
    // link out of the worktree in a conflicted file's place.
    let root = autodev_workspace::fsops::Root::open(run_wt)?;
    let unresolved: Vec<&String> = conflicted
        .iter()
        .filter(|f| {
            // A conflicted file the resolution deleted is resolved.
            if !root.exists(Path::new(f.as_str())) {
                return false;
            }
            root.read(Path::new(f.as_str()))
                .map(|bytes| {
                    String::from_utf8_lossy(&bytes)
                        .lines()
                        .any(|l| l.starts_with("<<<<<<< ") || l.starts_with(">>>>>>> "))
                })
                // Not a regular file inside the worktree: not a resolution.
                .unwrap_or(true)
        })
        .collect();
    if !unresolved.is_empty() {
        let _ = git.run(&["merge", "--abort"]).await;
        return Err(EngineError::Failed(format!(
            "merge conflict not resolved in {}",
            unresolved.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        )));
    }
    let sha = git.commit_all(&message).await?.unwrap_or_default();
    ctx.event(EventKind::TaskMerged { task: task.id.clone(), commit: sha }).await
}

async fn run_tests(ctx: &RunCtx, wt: &std::path::Path, round: u32) -> Result<(bool, String, Option<i32>)> {
    let span = tracing::info_span!(
        "autodev.tests",
        otel.name = %format!("tests round {round}"),
        autodev.tests.round = i64::from(round),
        autodev.tests.command = %ctx.settings.test_command,
        autodev.tests.passed = tracing::field::Empty,
        autodev.tests.exit_code = tracing::field::Empty,
    );
    let outcome = tracing::Instrument::instrument(ctx.test_command_in(wt), span.clone()).await?;
    let passed = outcome.success();
    span.record("autodev.tests.passed", passed);
    if let Some(code) = outcome.exit_code {
        span.record("autodev.tests.exit_code", code);
    }
    drop(span);
    let tail = outcome.render(EVENT_OUTPUT_BYTES);
    let e = ctx
        .engine
        .store
        .record_test_run(
            &ctx.run.id,
            passed,
            EventKind::TestRun {
                round,
                passed,
                exit_code: outcome.exit_code,
                duration_ms: outcome.duration.as_millis() as u64,
                tail,
            },
        )
        .await?;
    ctx.emit(e).await;
    Ok((passed, outcome.render(FAILURE_BYTES.min(ctx.output_budget())), outcome.exit_code))
}

async fn verify(ctx: &Arc<RunCtx>) -> Result<()> {
    ensure_changed(ctx).await?;
    let wt = run_worktree(ctx).await?;
    let plan = load_plan(ctx).await.ok();
    let mut failure: Option<Repair> = None;
    loop {
        ctx.check_cancel()?;
        let round = ctx.engine.store.get_run(&ctx.run.id).await?.repair_round as u32;
        if round > 0 {
            let conv = format!("repair:{round}");
            // What the round is for, for its commit message: the last test run passed when it
            // is for evidence (also on resume, when the conversation's header is stored).
            let for_evidence = ctx.engine.store.get_run(&ctx.run.id).await?.test_passed == Some(true);
            let header = if ctx.engine.store.conversation_exists(&ctx.run.id, &conv).await? {
                Vec::new()
            } else {
                let why = match failure.take() {
                    Some(why) => why,
                    // Resumed between rounds: find out again what the round is for.
                    None => {
                        let (passed, text, _) = run_tests(ctx, &wt, round - 1).await?;
                        if !passed {
                            Repair::Tests(text)
                        } else {
                            match check_evidence(ctx).await? {
                                None => return tests_passed(ctx).await,
                                Some(finding) => Repair::Evidence(finding),
                            }
                        }
                    }
                };
                let (spec, test_command, style) = (&ctx.run.spec, &ctx.settings.test_command, ctx.style());
                match why {
                    Repair::Tests(text) => prompts::repair(spec, plan.as_ref(), round, test_command, &text, style),
                    Repair::Evidence(finding) => {
                        prompts::evidence_repair(spec, plan.as_ref(), round, test_command, &finding, style)
                    }
                }
            };
            let tb = toolbox(ctx, &wt)?;
            restore_recorded_writes(ctx, &tb, &conv, false).await?;
            run_agent(
                ctx,
                AgentSpec {
                    conversation: conv,
                    header,
                    kind: AgentKind::Coder,
                    toolbox: &tb,
                    max_steps: ctx.settings.max_steps,
                    token_budget: Some(ctx.settings.max_task_tokens),
                },
            )
            .await?;
            let git = ctx.repo().worktree(&wt).await?;
            git.clear_stale_locks()?;
            let subject = if for_evidence { "Add tests that fail without the change" } else { "Fix failing tests" };
            let message = format!("{subject} (repair round {round})\n\nAutodev run {}.", ctx.run.short_id);
            commit_guarded(ctx, &git, &format!("repair:{round}"), &message).await?;
        }
        let (passed, text, exit_code) = run_tests(ctx, &wt, round).await?;
        if passed {
            match check_evidence(ctx).await? {
                None => return tests_passed(ctx).await,
                Some(finding) if round >= ctx.settings.max_repair_rounds => {
                    return Err(EngineError::Failed(format!(
                        "no_evidence: the tests pass, but {finding} (after {round} repair round(s); require_evidence is on)"
                    )));
                }
                Some(finding) => {
                    ctx.engine.store.set_repair_round(&ctx.run.id, round + 1).await?;
                    failure = Some(Repair::Evidence(finding));
                    continue;
                }
            }
        }
        // 126/127: the shell could not run the command at all. No agent can repair that,
        // so no repair round is spent on it.
        if matches!(exit_code, Some(126 | 127)) {
            let last = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string();
            return Err(EngineError::Failed(format!(
                "the test command `{}` could not run ({last}); fix --test-command or test_command in autodev.toml",
                ctx.settings.test_command
            )));
        }
        if round >= ctx.settings.max_repair_rounds {
            let last = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string();
            push_for_review(ctx).await;
            return Err(EngineError::Failed(format!("tests still fail after {round} repair round(s): {last}")));
        }
        ctx.engine.store.set_repair_round(&ctx.run.id, round + 1).await?;
        failure = Some(Repair::Tests(text));
    }
}

/// A project run whose tests still fail after its repair rounds pushes its branch anyway (a
/// forge integration opens it as a draft for a person to finish) and records where
/// (`git.branch`); the run fails all the same. Best effort: a push that fails is a warning.
async fn push_for_review(ctx: &RunCtx) {
    if ctx.run.project_id.is_none() {
        return;
    }
    let target = ctx.settings.deliver_branch.as_deref().unwrap_or(&ctx.run.branch);
    let pushed = crate::checkout::push(&ctx.repo(), &ctx.run, target).await;
    let recorded = match pushed {
        Ok(()) => match ctx.engine.store.set_run_link(&ctx.run.id, "git.branch", target).await {
            Ok(()) => record_head(ctx).await,
            Err(e) => Err(e.into()),
        },
        Err(e) => Err(e),
    };
    if let Err(e) = recorded {
        let _ = ctx
            .event(EventKind::Warning { message: format!("the failing branch was not pushed for review: {e}") })
            .await;
    }
}

/// Records the commit the run pushed (`git.head`): CI results on it are for Autodev to
/// follow up; a commit someone else pushed onto the branch is not.
async fn record_head(ctx: &RunCtx) -> Result<()> {
    let head = ctx.repo().rev_parse(&format!("refs/heads/{}", ctx.run.branch)).await?.unwrap_or_default();
    ctx.engine.store.set_run_link(&ctx.run.id, "git.head", &head).await?;
    Ok(())
}

/// What a repair round is for.
enum Repair {
    /// The tests fail; their output.
    Tests(String),
    /// The tests pass but prove nothing and the run requires evidence; what was found.
    Evidence(String),
}

/// Finds and records the run's evidence. `Some(finding)` when the run requires evidence and
/// has none: what a repair round should fix.
async fn check_evidence(ctx: &RunCtx) -> Result<Option<String>> {
    if ctx.settings.revert.is_some() {
        // A revert adds no test: it takes a change out.
        return Ok(None);
    }
    let found = crate::evidence::find(ctx).await?;
    crate::evidence::record(ctx, &found).await?;
    if !ctx.settings.require_evidence || found.verdict == autodev_domain::Evidence::Proven {
        return Ok(None);
    }
    Ok(Some(match found.verdict {
        autodev_domain::Evidence::NoTests => "the run changed no tests".to_string(),
        _ => format!(
            "with only the run's test changes ({}) on the base commit, `{}` passes too: the tests do not fail without the change",
            found.test_files.join(", "),
            ctx.settings.test_command
        ),
    }))
}

/// Writes `report.md` for the run as it stands (delivered, failed or cancelled): what was
/// done, why it stopped, what it cost.
pub(crate) async fn write_report(ctx: &RunCtx) -> Result<PathBuf> {
    let repo = ctx.repo();
    let range = format!("{}..{}", ctx.run.base_commit, ctx.run.branch);
    // A run that failed before its branch existed has no commits to show.
    let commits = repo.log(&range).await.unwrap_or_default();
    let diffstat = repo.diff_stat(&ctx.run.base_commit, &ctx.run.branch).await.unwrap_or_default();
    let text = report::render(&ctx.engine.store, &ctx.run.id, &commits, &diffstat).await?;
    write_artifact(ctx, "report.md", &text).await
}

/// Writes an artifact to the run folder and to the database (from which every process serves
/// and delivers it).
async fn write_artifact(ctx: &RunCtx, name: &str, text: &str) -> Result<PathBuf> {
    let path = ctx.dir.join(name);
    std::fs::write(&path, text)?;
    ctx.engine.store.put_artifact(&ctx.run.id, name, text).await?;
    Ok(path)
}

async fn deliver(ctx: &Arc<RunCtx>) -> Result<()> {
    // Repairs may have undone everything.
    ensure_changed(ctx).await?;
    let repo = ctx.repo();
    let range = format!("{}..{}", ctx.run.base_commit, ctx.run.branch);
    let commits = repo.log(&range).await?;
    let patch = repo.diff(&ctx.run.base_commit, &ctx.run.branch).await?;
    let patch_path = write_artifact(ctx, "changes.patch", &patch).await?;
    let report_path = write_report(ctx).await?;
    if ctx.run.project_id.is_some() {
        let target = ctx.settings.deliver_branch.as_deref().unwrap_or(&ctx.run.branch);
        crate::checkout::push(&repo, &ctx.run, target).await?;
        record_head(ctx).await?;
    }
    if !ctx.settings.keep_worktrees {
        let tasks = ctx.engine.store.tasks(&ctx.run.id).await?;
        for t in &tasks {
            repo.worktree_remove(&ctx.worktree(&format!("task-{}", t.task_key))).await?;
            let branch = task_branch(ctx, &t.task_key);
            // Under the repository's lock: `branch -D` reads every worktree, and another run of
            // the project removing one meanwhile made it fail ("Invalid path", seen under load).
            if repo.branch_exists(&branch).await? {
                repo.run_exclusive(&["branch", "-D", &branch]).await?;
            }
        }
        repo.worktree_remove(&ctx.worktree("run")).await?;
        let _ = std::fs::remove_dir_all(ctx.dir.join("tmp"));
    }
    ctx.event(EventKind::Delivered {
        branch: ctx.run.branch.clone(),
        commits: commits.iter().map(|(sha, subject)| format!("{} {subject}", &sha[..sha.len().min(12)])).collect(),
        report: report_path.display().to_string(),
        patch: patch_path.display().to_string(),
    })
    .await?;
    transition(ctx, RunState::Succeeded, None).await
}
