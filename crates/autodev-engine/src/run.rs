//! Creating and driving runs: a new run from a request, the claim and lease, the phases in
//! order under a fenced store, the report at the end; approving and cancelling through the
//! engine.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicI64;

use autodev_domain::{EventKind, RunState, Spec};
use autodev_store::{RunRow, StoreError};
use autodev_workspace::Git;
use tokio_util::sync::CancellationToken;

use crate::ctx::RunCtx;
use crate::engine::Engine;
use crate::error::{EngineError, Result};
use crate::gates::{Decision, approve_plan, cancel_run};
use crate::outcome::Outcome;
use crate::settings::RunSettings;

/// A request for a new run.
#[derive(Clone, Debug)]
pub struct RunRequest {
    pub repo: PathBuf,
    pub spec: Spec,
    /// The branch to start from; `None` takes the repository's checked-out branch.
    pub base: Option<String>,
    pub settings: RunSettings,
}

/// How long a run being stopped (its process shutting down) may take to reach a step boundary
/// before its step in flight is abandoned (see `Engine::drive_claimed_run`).
pub const ABANDON_AFTER: std::time::Duration = std::time::Duration::from_secs(2);

impl Engine {
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
        let run = self.store.get_run(run_id).await?;
        let settings = match run.settings() {
            Ok(settings) => settings,
            Err(e) => {
                self.store.release_run(run_id, token).await?;
                if run.run_state().is_terminal() {
                    return Ok(Outcome::Finished(run.run_state()));
                }
                return Err(EngineError::Invalid(e.to_string()));
            }
        };
        self.drive_claimed_run(run, settings, token, cancel).await
    }

    /// [`Engine::drive_claimed`] for a run the caller has read and whose settings it has parsed
    /// (a worker reads them to build the run's model client): nothing is read twice.
    pub async fn drive_claimed_run(
        &self,
        run: RunRow,
        settings: RunSettings,
        token: &str,
        cancel: CancellationToken,
    ) -> Result<Outcome> {
        let run_id = run.id.clone();
        let run_id = run_id.as_str();
        let fenced = self.store.fenced(run_id, token);
        let stop = cancel.child_token();
        let lease = Arc::new(crate::lease::LeaseState::default());
        // The heartbeat starts with the claim, before the checkout or any agent work.
        let _keeper = crate::lease::keeper(self, fenced.clone(), run_id, token, stop.clone(), lease.clone());
        let driver = Engine { store: fenced, ..self.clone() };
        // A stopping process (`cancel`) gives the run until its next step boundary, at most
        // ABANDON_AFTER; then the step in flight (a checkout waiting on the clone's lock, a
        // command, a git operation) is dropped as a crash would drop it, which the run
        // survives (every step is recorded before it acts), and the run is handed back.
        let abandon = async {
            cancel.cancelled().await;
            tokio::time::sleep(ABANDON_AFTER).await;
        };
        let result = tokio::select! {
            r = driver.drive_fenced(run, settings, stop, &lease) => r,
            _ = abandon => {
                tracing::info!(run = run_id, "stopping: the step in flight is abandoned; the run resumes from its last recorded step");
                Ok(Outcome::Interrupted(self.store.run_state(run_id).await?))
            }
        };
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
        run: RunRow,
        mut settings: RunSettings,
        stop: CancellationToken,
        lease: &crate::lease::LeaseState,
    ) -> Result<Outcome> {
        let lost = || lease.lost.load(std::sync::atomic::Ordering::SeqCst);
        let run_id = run.id.clone();
        let run_id = run_id.as_str();
        if run.run_state().is_terminal() {
            return Ok(Outcome::Finished(run.run_state()));
        }
        // No call of this run is in flight now (one that was died with its driver).
        self.store.clear_reservations(run_id).await?;
        // A project run works in this worker's clone of the project's repository.
        let run = match crate::checkout::prepare(&self.store, &self.home, &self.credentials, run, &mut settings).await {
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
            crate::checkout::restore_checkpoint(&self.git(&run.repo), &run).await?;
        }
        let dir = self.run_dir(run_id);
        std::fs::create_dir_all(dir.join("tmp"))?;
        // The window: configured, else the price table's, else the server's, else a
        // conservative default (RunCtx::window).
        if settings.context_window.is_none() && self.prices.known_context_window(&settings.model).is_none() {
            settings.context_window = self.server_window(&settings.model).await;
        }
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
        // This process's part of the run's trace: the phases it drives, under the run's
        // creation span (the wait at a gate, or a crash, ends it; a resume starts another).
        // At warn level so that log lines (warn and above by default) carry the run and its
        // trace id whatever the filter; cheap either way (one span per drive).
        let span = tracing::warn_span!(
            "autodev.run",
            otel.name = %format!("run {}", ctx.run.short_id),
            autodev.run.id = %ctx.run.id,
            autodev.run.title = %ctx.run.title,
            autodev.process = %crate::lease::process_owner(),
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
        );
        crate::telemetry::set_parent(&span, ctx.settings.trace_parent.as_deref());
        crate::telemetry::record_ids(&span);
        let result = tracing::Instrument::instrument(crate::phases::drive(&ctx), span).await;
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
