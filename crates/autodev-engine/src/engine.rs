//! The engine: creating runs and driving them through their lifecycle.
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use autodev_domain::{Event, EventKind, ModelClient, ModelError, RunState, Spec};
use autodev_llm::PriceTable;
use autodev_store::{RunRow, Store, StoreError};
use autodev_workspace::{Git, GitError, SandboxMode, SandboxPolicy};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::settings::RunSettings;

/// Why the engine stopped a run or refused a request.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Bad input from the user (repo, branch, spec, settings). Fix the input; exit code 2.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Git(#[from] GitError),
    /// The model failed in a way retries did not fix. The run fails with this reason.
    #[error("model call failed: {0}")]
    Model(#[from] ModelError),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The run was cancelled while it was being driven.
    #[error("the run was cancelled")]
    Cancelled,
    /// A budget (steps, tokens, cost) ran out, or an agent could not finish its work.
    #[error("{0}")]
    Failed(String),
    /// A cost limit would be passed by the next model call. The reason starts with
    /// `budget_exceeded:` and names the limit, the spend and the limit's value; the run can be
    /// reopened once the limit is raised (`autodev resume`).
    #[error("{0}")]
    Budget(String),
}

pub type Result<T> = std::result::Result<T, EngineError>;

/// How driving a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The run reached a terminal state.
    Finished(RunState),
    /// The run waits at the plan-approval gate.
    AwaitingApproval,
    /// The caller's token stopped the driving (Ctrl-C, shutdown); the run keeps its state
    /// and can be resumed.
    Interrupted(RunState),
    /// Another driver took the run over after this one's lease expired (a stalled or very
    /// busy process); this one stopped and wrote nothing more. The run goes on there.
    LeaseLost,
}

/// A request for a new run.
#[derive(Clone, Debug)]
pub struct RunRequest {
    pub repo: PathBuf,
    pub spec: Spec,
    /// The branch to start from; `None` takes the repository's checked-out branch.
    pub base: Option<String>,
    pub settings: RunSettings,
}

/// Everything a run being driven needs, shared by its tasks.
pub(crate) struct RunCtx {
    pub engine: Engine,
    pub run: RunRow,
    pub settings: RunSettings,
    pub dir: PathBuf,
    pub cancel: CancellationToken,
    pub cost_micros: AtomicI64,
    pub warned_unpriced: std::sync::atomic::AtomicBool,
    /// Whether the 80% warning of the run's cost limit was given (once per process).
    pub warned_budget: std::sync::atomic::AtomicBool,
    /// The same for the project's and the deployment's monthly budgets.
    pub warned_project_month: std::sync::atomic::AtomicBool,
    pub warned_global_month: std::sync::atomic::AtomicBool,
    /// The run's code index, opened (and refreshed) the first time the planner or an
    /// agent needs it; `None` inside when it could not be built (search_code then says so).
    pub code: Arc<tokio::sync::OnceCell<Option<Arc<crate::code::Searcher>>>>,
}

impl RunCtx {
    pub fn worktree(&self, name: &str) -> PathBuf {
        self.dir.join("worktrees").join(name)
    }

    pub fn repo(&self) -> Git {
        Git::new(&self.run.repo)
    }

    /// What this run's commands may see and do: the operator's sandbox mode and read-only
    /// list (process-wide), this run's network, variables and writable list (operator
    /// settings stored with the run), the project's build caches, and `AUTODEV_HOME` and the
    /// repository hidden.
    pub fn policy(&self) -> SandboxPolicy {
        let mut p = SandboxPolicy::new(self.dir.join("tmp")).with_mode(self.engine.sandbox.mode);
        if let Some(readonly) = &self.engine.sandbox.readonly {
            p.readonly = readonly.clone();
        }
        p.cache_dir = Some(self.engine.home.join("cache").join(crate::isolation::cache_key(&self.run)));
        p.hidden = vec![self.engine.home.clone(), PathBuf::from(&self.run.repo)];
        p.network = self.settings.sandbox_network;
        p.pass_env = self.settings.sandbox_pass_env.clone();
        p.writable = self.settings.sandbox_writable.clone();
        p
    }

    pub async fn emit(&self, e: Event) {
        self.engine.publish(e);
    }

    pub async fn event(&self, kind: EventKind) -> Result<()> {
        let e = self.engine.store.append_event(&self.run.id, kind).await?;
        self.engine.publish(e);
        Ok(())
    }

    /// The run's code index, built or refreshed from `source` (a worktree of the run) the
    /// first time; `None` when it cannot be built (logged).
    pub async fn code_index(&self, source: &Path) -> Option<Arc<crate::code::Searcher>> {
        crate::code::run_index(&self.code, &self.engine.code, Path::new(&self.run.repo), source).await
    }

    pub fn check_cancel(&self) -> Result<()> {
        if self.cancel.is_cancelled() { Err(EngineError::Cancelled) } else { Ok(()) }
    }
}

/// The engine. Cheap to clone; clones share the store, the model and the event channel.
#[derive(Clone)]
pub struct Engine {
    pub(crate) store: Store,
    pub(crate) model: Arc<dyn ModelClient>,
    pub(crate) prices: Arc<PriceTable>,
    pub(crate) home: PathBuf,
    events: broadcast::Sender<Event>,
    pub(crate) lease: crate::lease::LeaseTiming,
    pub(crate) step_overheads: Option<Arc<Mutex<Vec<Duration>>>>,
    pub(crate) sandbox: SandboxConfig,
    pub(crate) budgets: Budgets,
    pub(crate) code: crate::code::CodeSearch,
}

/// The operator's budgets beyond each run's own (`monthly_budget_usd` in `autodev.toml`,
/// `AUTODEV_MONTHLY_BUDGET_USD`). A project's monthly budget is its setting, read at each
/// reservation.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Budgets {
    /// What all runs together may spend per calendar month (UTC), in USD.
    pub monthly_usd: Option<f64>,
}

/// The operator's sandbox choice for every run this engine drives.
#[derive(Clone, Debug, Default)]
pub struct SandboxConfig {
    pub mode: SandboxMode,
    /// Replaces the detected system and toolchain directories when set.
    pub readonly: Option<Vec<PathBuf>>,
}

impl Engine {
    pub fn new(store: Store, model: Arc<dyn ModelClient>, prices: PriceTable, home: &Path) -> Self {
        let (events, _) = broadcast::channel(4096);
        Self {
            store,
            model,
            prices: Arc::new(prices),
            // Worktree paths are handed to `git -C <repo>`, which would resolve a relative
            // path against the repository, not against our working directory.
            home: std::path::absolute(home).unwrap_or_else(|_| home.to_path_buf()),
            events,
            lease: crate::lease::LeaseTiming::default(),
            step_overheads: None,
            sandbox: SandboxConfig::default(),
            budgets: Budgets::default(),
            code: crate::code::CodeSearch::new(home, None),
        }
    }

    /// Sets how code is searched (embeddings configured or not); indexes stay under the
    /// engine's home.
    pub fn with_code_search(mut self, code: crate::code::CodeSearch) -> Self {
        self.code = code;
        self
    }

    pub fn code_search(&self) -> &crate::code::CodeSearch {
        &self.code
    }

    /// Sets the operator's budgets (the global monthly budget).
    pub fn with_budgets(mut self, budgets: Budgets) -> Self {
        self.budgets = budgets;
        self
    }

    /// Sets the sandbox mode and read-only list (operator configuration).
    pub fn with_sandbox(mut self, sandbox: SandboxConfig) -> Self {
        self.sandbox = sandbox;
        self
    }

    pub fn sandbox(&self) -> &SandboxConfig {
        &self.sandbox
    }

    /// Sets how long a claim holds a run and how often it is renewed (tests use a tiny
    /// lease to make one expire while a run is driven).
    pub fn with_lease(mut self, lease: crate::lease::LeaseTiming) -> Self {
        self.lease = lease;
        self
    }

    /// Collects the engine's own time per agent step (for the benchmark).
    pub fn collect_step_overheads(mut self) -> Self {
        self.step_overheads = Some(Arc::new(Mutex::new(Vec::new())));
        self
    }

    pub fn take_step_overheads(&self) -> Vec<Duration> {
        self.step_overheads
            .as_ref()
            .and_then(|m| m.lock().ok().map(|mut v| std::mem::take(&mut *v)))
            .unwrap_or_default()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    pub(crate) fn publish(&self, e: Event) {
        let _ = self.events.send(e);
    }

    /// The folder of a run: worktrees, temp files, report and patch.
    pub fn run_dir(&self, run_id: &str) -> PathBuf {
        self.home.join("runs").join(run_id)
    }

    /// Validates a request and stores the run as `queued`. Nothing in the user's repository
    /// or working tree changes.
    pub async fn create_run(&self, req: RunRequest) -> Result<RunRow> {
        if !req.repo.is_dir() {
            return Err(EngineError::Invalid(format!(
                "repository `{}` does not exist or is not a directory",
                req.repo.display()
            )));
        }
        let top = Git::new(&req.repo).toplevel().await?.ok_or_else(|| {
            EngineError::Invalid(format!(
                "`{}` is not a git repository: run `git init` and commit, or pass --repo with a repository",
                req.repo.display()
            ))
        })?;
        let top = top.canonicalize()?;
        let git = Git::new(&top);
        let base = match req.base {
            Some(b) => b,
            None => git
                .current_branch()
                .await?
                .ok_or_else(|| EngineError::Invalid("the repository has a detached HEAD: pass --base BRANCH".into()))?,
        };
        let base_commit = git.rev_parse(&base).await?.ok_or_else(|| {
            EngineError::Invalid(format!(
                "base branch `{base}` has no commits or does not exist in {}: pass --base with an existing branch",
                top.display()
            ))
        })?;
        if req.settings.test_command.trim().is_empty() {
            return Err(EngineError::Invalid(
                "no test command: pass --test-command or set test_command in autodev.toml".into(),
            ));
        }
        if req.settings.max_parallel == 0 {
            return Err(EngineError::Invalid("--max-parallel must be at least 1".into()));
        }
        let draft = crate::checkout::RunDraft {
            spec: &req.spec,
            repo: top.display().to_string(),
            base_branch: base,
            base_commit,
            settings: &req.settings,
            project_id: None,
            origin: None,
        };
        let (run, e) = crate::checkout::insert_draft(&self.store, draft, None).await?;
        self.publish(e);
        self.exclude_home_from(&git, &top).await?;
        if git.is_dirty().await.unwrap_or(false) {
            let e = self
                .store
                .append_event(
                    &run.id,
                    EventKind::Warning {
                        message: "the repository has uncommitted changes; the run starts from the base branch's last commit and leaves your working tree alone".into(),
                    },
                )
                .await?;
            self.publish(e);
        }
        Ok(self.store.get_run(&run.id).await?)
    }

    /// When the data directory is inside the repository (the default `./.autodev` run from
    /// the project's root), lists it in `.git/info/exclude` so the user's `git status` does
    /// not show it. That file is git's own metadata, not part of the working tree.
    async fn exclude_home_from(&self, git: &Git, top: &Path) -> Result<()> {
        let Ok(home) = self.home.canonicalize() else { return Ok(()) };
        let Ok(rel) = home.strip_prefix(top) else { return Ok(()) };
        if rel.as_os_str().is_empty() {
            return Ok(());
        }
        let common = git.run(&["rev-parse", "--git-common-dir"]).await?;
        let common = top.join(common.trim());
        let exclude = common.join("info").join("exclude");
        let pattern = format!("/{}/", rel.to_string_lossy().trim_end_matches('/'));
        let current = std::fs::read_to_string(&exclude).unwrap_or_default();
        if current.lines().any(|l| l.trim() == pattern) {
            return Ok(());
        }
        std::fs::create_dir_all(common.join("info"))?;
        let mut text = current;
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&format!("# Autodev's data directory\n{pattern}\n"));
        std::fs::write(&exclude, text)?;
        Ok(())
    }

    /// Takes the run's lease for a new claim and returns its token. A lease held by a
    /// process of this host that no longer exists (killed) is taken over.
    async fn claim(&self, run_id: &str) -> Result<String> {
        let token = crate::lease::claim_token();
        match self.store.claim_run(run_id, &token, self.lease.ttl, false).await {
            Ok(()) => Ok(token),
            Err(StoreError::Leased { owner, .. }) if crate::lease::holder_is_dead(&owner) => {
                self.store.claim_run(run_id, &token, self.lease.ttl, true).await?;
                Ok(token)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Drives a run until it finishes or waits for approval. Safe to call on a run that was
    /// interrupted at any point: recorded model calls are not repeated. Cancelling `cancel`
    /// interrupts (the run stays resumable); `Engine::cancel` ends the run.
    pub async fn drive(&self, run_id: &str, cancel: CancellationToken) -> Result<Outcome> {
        let run = self.store.get_run(run_id).await?;
        if run.run_state().is_terminal() {
            return Ok(Outcome::Finished(run.run_state()));
        }
        let token = self.claim(run_id).await?;
        self.drive_claimed(run_id, &token, cancel).await
    }

    /// Drives a run this process has claimed with `token` (a worker's claim from the queue).
    /// Everything the driving writes is fenced by the token: if another driver takes the run
    /// over (this one's lease expired), this one stops at its next step, writes nothing more
    /// and returns [`Outcome::LeaseLost`].
    pub async fn drive_claimed(&self, run_id: &str, token: &str, cancel: CancellationToken) -> Result<Outcome> {
        let fenced = self.store.fenced(run_id, token);
        let stop = cancel.child_token();
        let lease = Arc::new(crate::lease::LeaseState::default());
        // The heartbeat starts with the claim, before the checkout or any agent work.
        let _keeper = crate::lease::keeper(self, fenced.clone(), run_id, token, stop.clone(), lease.clone());
        let driver = Engine { store: fenced, ..self.clone() };
        let result = driver.drive_fenced(run_id, stop, &lease).await;
        // Lost however it was noticed: by the keeper's renewal, by a refused write whose error
        // came back as this one's, or by one that a task turned into its own failure.
        let lost = lease.lost.load(std::sync::atomic::Ordering::SeqCst)
            || driver.store.fence_lost()
            || matches!(result, Err(EngineError::Store(StoreError::LeaseLost { .. })));
        // Given up only if this claim still holds it.
        self.store.release_run(run_id, token).await?;
        if lost {
            tracing::info!(run = run_id, "stopped driving: another worker holds the run");
            return Ok(Outcome::LeaseLost);
        }
        result
    }

    /// The driving itself, on a fenced engine (see `drive_claimed`). A `LeaseLost` from any
    /// write ends it without touching the run.
    async fn drive_fenced(
        &self,
        run_id: &str,
        stop: CancellationToken,
        lease: &crate::lease::LeaseState,
    ) -> Result<Outcome> {
        let lost = || lease.lost.load(std::sync::atomic::Ordering::SeqCst);
        let run = self.store.get_run(run_id).await?;
        if run.run_state().is_terminal() {
            return Ok(Outcome::Finished(run.run_state()));
        }
        // No call of this run is in flight now (one that was died with its driver).
        self.store.clear_reservations(run_id).await?;
        let mut settings: RunSettings = serde_json::from_str(&run.settings)
            .map_err(|e| EngineError::Invalid(format!("stored settings of run {run_id} are unreadable: {e}")))?;
        // A project run works in this worker's clone of the project's repository.
        let run = match crate::checkout::prepare(&self.store, &self.home, run, &mut settings).await {
            Ok(run) => run,
            Err(e) if lost() || matches!(e, EngineError::Store(StoreError::LeaseLost { .. })) => return Err(e),
            Err(e) => {
                let reason = e.to_string();
                if let Some(ev) = self.store.set_run_state(run_id, RunState::Failed, Some(&reason)).await? {
                    self.publish(ev);
                }
                return Ok(Outcome::Finished(RunState::Failed));
            }
        };
        if run.project_id.is_some() {
            crate::checkout::restore_checkpoint(&Git::new(&run.repo), &run).await?;
        }
        let dir = self.run_dir(run_id);
        std::fs::create_dir_all(dir.join("tmp"))?;
        let ctx = Arc::new(RunCtx {
            engine: self.clone(),
            cost_micros: AtomicI64::new(run.cost_micros),
            run,
            settings,
            dir,
            cancel: stop,
            warned_unpriced: Default::default(),
            warned_budget: Default::default(),
            warned_project_month: Default::default(),
            warned_global_month: Default::default(),
            code: Default::default(),
        });
        let result = crate::phases::drive(&ctx).await;
        if lost() {
            return Ok(Outcome::LeaseLost);
        }
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(e @ EngineError::Store(StoreError::LeaseLost { .. })) => return Err(e),
            Err(EngineError::Cancelled) => {
                let state = self.store.run_state(run_id).await?;
                if state == RunState::Cancelled {
                    Outcome::Finished(RunState::Cancelled)
                } else {
                    Outcome::Interrupted(state)
                }
            }
            Err(err) => {
                let state = self.store.run_state(run_id).await?;
                if state == RunState::Cancelled {
                    Outcome::Finished(RunState::Cancelled)
                } else {
                    tracing::info!(run = run_id, error = %err, "run failed");
                    if let Some(e) = self.store.set_run_state(run_id, RunState::Failed, Some(&err.to_string())).await? {
                        self.publish(e);
                    }
                    Outcome::Finished(RunState::Failed)
                }
            }
        };
        // A run that ended without delivering still leaves its report: what was done, why it
        // stopped, what it cost.
        let ended = matches!(outcome, Outcome::Finished(RunState::Failed | RunState::Cancelled));
        if ended && let Err(e) = crate::phases::write_report(&ctx).await {
            tracing::warn!(run = run_id, error = %e, "could not write the report of an ended run");
        }
        Ok(outcome)
    }

    /// Decides a run waiting at its gate (see [`approve_plan`]).
    pub async fn approve(&self, run_id: &str, approved: bool, by: &str, comment: &str) -> Result<()> {
        let decision = Decision { approved, by: by.to_string(), comment: comment.to_string(), allow_paths: Vec::new() };
        for e in approve_plan(&self.store, run_id, &decision).await? {
            self.publish(e);
        }
        Ok(())
    }

    /// Cancels a run. A process driving it notices within a second and stops.
    pub async fn cancel(&self, run_id: &str) -> Result<RunState> {
        match cancel_run(&self.store, run_id, "the user").await? {
            Some(e) => {
                self.publish(e);
                Ok(RunState::Cancelled)
            }
            None => Ok(self.store.run_state(run_id).await?),
        }
    }
}

/// Rejected plans that go back to the planner with the reviewer's comment before a rejection
/// cancels the run.
pub const MAX_PLAN_REVISIONS: u32 = 3;

/// A person's decision at a run's gate.
#[derive(Clone, Debug, Default)]
pub struct Decision {
    pub approved: bool,
    pub by: String,
    pub comment: String,
    /// Protected globs the run may change from now on (approval only).
    pub allow_paths: Vec<String>,
}

/// Which gate a run waits at: its plan (before executing), or its delivery (tests passed,
/// before pushing and opening a pull request).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    Plan,
    Delivery,
}

impl Gate {
    /// The gate of a run at `awaiting_approval`: its tests have run only at the delivery gate.
    pub fn of(run: &RunRow) -> Gate {
        if run.test_passed.is_some() { Gate::Delivery } else { Gate::Plan }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Gate::Plan => "plan",
            Gate::Delivery => "delivery",
        }
    }
}

/// Decides a run waiting at its gate. Approval goes on (to `executing` after the plan gate,
/// to `delivering` after the delivery gate), with any protected globs it allows stored with
/// the run. Rejection of a plan with a comment sends it back to the planner with the comment
/// (up to [`MAX_PLAN_REVISIONS`] times); any other rejection cancels the run with the comment
/// as the reason. Returns the events written. The CLI and the API both decide here.
pub async fn approve_plan(store: &Store, run_id: &str, decision: &Decision) -> Result<Vec<Event>> {
    let run = store.get_run(run_id).await?;
    let state = run.run_state();
    if state != RunState::AwaitingApproval {
        return Err(EngineError::Invalid(format!("run {} is {state}, not awaiting_approval", run.short_id)));
    }
    let gate = Gate::of(&run);
    let mut events = Vec::new();
    let comment = decision.comment.trim();
    if decision.approved {
        if !decision.allow_paths.is_empty() {
            for glob in &decision.allow_paths {
                autodev_workspace::protect::check_glob(glob)
                    .map_err(|e| EngineError::Invalid(format!("allow_paths: `{glob}`: {e}")))?;
            }
            let mut settings: RunSettings = serde_json::from_str(&run.settings)
                .map_err(|e| EngineError::Failed(format!("the run's stored settings are unreadable: {e}")))?;
            for glob in &decision.allow_paths {
                if !settings.allowed_paths.contains(glob) {
                    settings.allowed_paths.push(glob.clone());
                }
            }
            let json = serde_json::to_string(&settings).map_err(StoreError::from)?;
            store.set_run_settings(run_id, &json).await?;
        }
        let approved = EventKind::PlanApproved {
            by: decision.by.clone(),
            comment: comment.to_string(),
            allow_paths: decision.allow_paths.clone(),
        };
        events.push(store.append_event(run_id, approved).await?);
        let next = match gate {
            Gate::Plan => RunState::Executing,
            Gate::Delivery => RunState::Delivering,
        };
        events.extend(store.set_run_state(run_id, next, None).await?);
        return Ok(events);
    }
    if gate == Gate::Plan && !comment.is_empty() {
        let round = store
            .events(run_id, 0)
            .await?
            .iter()
            .filter(|e| matches!(e.kind, EventKind::PlanRevisionRequested { .. }))
            .count() as u32
            + 1;
        if round <= MAX_PLAN_REVISIONS {
            let revision =
                EventKind::PlanRevisionRequested { by: decision.by.clone(), comment: comment.to_string(), round };
            return Ok(store.return_to_planning(run_id, revision).await?);
        }
    }
    let what = match gate {
        Gate::Plan => "plan rejected",
        Gate::Delivery => "delivery rejected",
    };
    let reason = if comment.is_empty() { what.to_string() } else { format!("{what}: {comment}") };
    events.extend(store.set_run_state(run_id, RunState::Cancelled, Some(&reason)).await?);
    Ok(events)
}

/// Cancels a run on behalf of `by` (the reason says who). `None` when the run had already
/// finished. Whichever process drives the run notices within a second and stops between
/// steps. The CLI, the API and the engine all cancel through here.
pub async fn cancel_run(store: &Store, run_id: &str, by: &str) -> Result<Option<Event>> {
    if store.run_state(run_id).await?.is_terminal() {
        return Ok(None);
    }
    Ok(store.set_run_state(run_id, RunState::Cancelled, Some(&format!("cancelled by {by}"))).await?)
}
