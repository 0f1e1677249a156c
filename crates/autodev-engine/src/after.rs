//! After the pull request: whose timeline a run's pull request steps are written on, and
//! reverting a run's merged change.
//!
//! A revert is asked for with [`request_revert`] (`POST /api/v1/runs/{id}/revert`,
//! `autodev revert RUN`, MCP `revert_run`). It is refused at once, with a reason, when the
//! run's pull request was never merged, when a revert was asked for before, or when the
//! revert does not apply to the base branch as it is now (checked in the project's clone with
//! `git merge-tree`, no worktree). Otherwise a revert run is queued: it calls no model; a
//! worker makes the revert commit on the base branch's head, the project's tests run on it
//! (no repair rounds), the project's delivery gate holds it when set, and delivery opens its
//! pull request as for any run, linking the reverted run and its ticket.
use autodev_domain::{DeliveryStep, RevertOf, RunState, Spec};
use autodev_store::{AuditEntry, RunRow, Store};

use crate::checkout;
use crate::ctx::RunCtx;
use crate::engine::EngineConfig;
use crate::error::{EngineError, Result};

/// The links a delivered run's pull request is recorded under.
pub const PULL_REQUEST_LINKS: [&str; 2] = ["github.pull_request", "gitlab.merge_request"];

/// The run whose timeline holds `run`'s pull request steps: the run that opened the pull
/// request (follow-ups deliver onto it and share it), else `run` itself.
pub async fn timeline_owner(store: &Store, run_id: &str) -> Result<String> {
    let links = store.run_links(run_id).await?;
    for (name, value) in &links {
        if PULL_REQUEST_LINKS.contains(&name.as_str())
            && let Some(first) = store.runs_for_link(name, value).await?.into_iter().next()
        {
            return Ok(first);
        }
    }
    Ok(run_id.to_string())
}

/// Why a revert was refused: a stable code (`not_merged`, `already_reverted`,
/// `revert_conflict`, `not_a_project_run`) and the reason for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub code: &'static str,
    pub message: String,
}

impl Refused {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

/// Checks that `run_id`'s merged change can be reverted and queues the run that reverts it;
/// see the module's documentation. `config` gives the home whose clone of the project is
/// fetched for the check, and the credentials to fetch with.
pub async fn request_revert(
    store: &Store,
    config: &EngineConfig,
    run_id: &str,
    by: &str,
    audit: Option<AuditEntry>,
) -> Result<std::result::Result<RunRow, Refused>> {
    {
        let asked = store.get_run(run_id).await?;
        let owner_id = timeline_owner(store, run_id).await?;
        let owner = if owner_id == asked.id { asked.clone() } else { store.get_run(&owner_id).await? };
        let timeline = store.timeline(&owner.id).await?;
        if let Some(earlier) = timeline.iter().find(|s| s.step == "revert_requested") {
            return Ok(Err(Refused::new(
                "already_reverted",
                format!("run {}'s change was already asked to be reverted: {}", owner.short_id, earlier.detail),
            )));
        }
        let Some(merged) = timeline.iter().find(|s| s.step == "merged") else {
            let why = if timeline.iter().any(|s| s.step == "closed") {
                "its pull request was closed without merging"
            } else if store.run_links(&owner.id).await?.iter().any(|(n, _)| PULL_REQUEST_LINKS.contains(&n.as_str())) {
                "its pull request is not merged (Autodev has seen no merge event for it)"
            } else {
                "it has no pull request"
            };
            return Ok(Err(Refused::new(
                "not_merged",
                format!("run {} was never merged ({why}): there is nothing to revert", owner.short_id),
            )));
        };
        let Some(sha) = merged.sha.clone().filter(|s| !s.is_empty()) else {
            return Ok(Err(Refused::new(
                "not_merged",
                format!("run {}'s merge event named no merge commit: revert it by hand", owner.short_id),
            )));
        };
        let Some(project) = (match &owner.project_id {
            Some(id) => store.find_project(id).await.ok(),
            None => None,
        }) else {
            return Ok(Err(Refused::new(
                "not_a_project_run",
                format!("run {} is not a project's run (or its project was deleted)", owner.short_id),
            )));
        };
        // The revert must apply to the base branch as it is now.
        let clone = checkout::fetch_project(&config.home, &config.credentials, &project, &owner.id).await?;
        let base = if owner.base_branch.is_empty() { "main".to_string() } else { owner.base_branch.clone() };
        let onto = format!("refs/remotes/origin/{base}");
        if clone.rev_parse(&format!("{sha}^{{commit}}")).await?.is_none() {
            return Ok(Err(Refused::new(
                "not_merged",
                format!("the merge commit {sha} of run {} is not in the project's repository", owner.short_id),
            )));
        }
        if !clone.is_ancestor(&sha, &onto).await? {
            return Ok(Err(Refused::new(
                "not_merged",
                format!("the merge commit {sha} of run {} is not on {base}", owner.short_id),
            )));
        }
        if let Err(refusal) = clone.revert_tree(&sha, &onto).await? {
            let code = match refusal {
                autodev_workspace::RevertRefusal::Conflict(_) => "revert_conflict",
                _ => "nothing_to_revert",
            };
            return Ok(Err(Refused::new(code, format!("run {}: {refusal}", owner.short_id))));
        }
        let pull_request = store
            .run_links(&owner.id)
            .await?
            .into_iter()
            .find(|(n, _)| PULL_REQUEST_LINKS.contains(&n.as_str()))
            .map(|(_, v)| v);
        let mut text = format!(
            "# Revert: {}\n\nRevert the change of Autodev run {} ({}), merged into {base} as {sha}.\n",
            owner.title.trim(),
            owner.short_id,
            owner.id
        );
        if let Some(pr) = &pull_request {
            text.push_str(&format!("\nIts pull request: {pr}\n"));
        }
        if let Some(origin) = &owner.origin {
            text.push_str(&format!("\nIts ticket: {origin}\n"));
        }
        text.push_str(&format!("\nAsked for by {by}.\n"));
        let spec = Spec::from_text(&text).map_err(|e| EngineError::Invalid(format!("the revert's spec: {e}")))?;
        let mut settings = owner.settings().unwrap_or_default();
        settings.revert = Some(RevertOf { run_id: owner.id.clone(), sha: sha.clone(), pull_request });
        settings.max_repair_rounds = 0;
        settings.approval = false;
        settings.require_evidence = false;
        settings.deliver_branch = None;
        settings.allowed_paths.clear();
        settings.config_warnings.clear();
        let req = checkout::ProjectRun {
            project: &project,
            spec,
            settings,
            origin: owner.origin.clone(),
            audit,
            base_branch: Some(base),
        };
        let (run, _) = checkout::enqueue(store, req).await?;
        let step = DeliveryStep {
            step: "revert_requested".into(),
            detail: format!("revert run {} ({}) asked for by {by}", run.short_id, run.id),
            url: None,
            sha: Some(sha),
            environment: None,
        };
        store.record_step(&owner.id, "revert", step, None).await?;
        metrics::counter!("autodev_reverts_total").increment(1);
        Ok(Ok(run))
    }
}

/// A revert run's first phase, in place of planning and executing: the revert commit on the
/// base commit becomes the run branch (once: a resumed run finds it), then verification.
pub(crate) async fn revert_change(ctx: &RunCtx, of: &RevertOf) -> Result<()> {
    let repo = ctx.repo();
    if !repo.branch_exists(&ctx.run.branch).await? {
        let reverted = ctx.engine.store.get_run(&of.run_id).await?;
        let message = format!(
            "Revert \"{}\"\n\nThis reverts {} (Autodev run {}).\n\nAutodev run {}.",
            reverted.title.trim(),
            of.sha,
            reverted.short_id,
            ctx.run.short_id
        );
        let commit = match repo.revert_commit(&of.sha, &ctx.run.base_commit, &message).await? {
            Ok(commit) => commit,
            Err(refusal) => return Err(EngineError::Failed(format!("revert_refused: {refusal}"))),
        };
        repo.run(&["branch", &ctx.run.branch, &commit]).await?;
        ctx.event(autodev_domain::EventKind::TaskCommitted { task: "revert".into(), commit }).await?;
    }
    for to in [RunState::Executing, RunState::Verifying] {
        if let Some(e) = ctx.engine.store.set_run_state(&ctx.run.id, to, None).await? {
            ctx.emit(e).await;
        }
    }
    Ok(())
}
