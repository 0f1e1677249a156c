//! Runs made for a project (through the API or a webhook) and driven by workers.
//!
//! The server only records such a run: it does not need the repository, so a project's
//! repository may be a clone URL the server cannot even reach, and creating a run costs one
//! database transaction. A worker that claims the run clones the project's repository into its
//! own workspace (`AUTODEV_HOME/repos/<project>`), or fetches when the clone exists, and works
//! there. Delivery pushes the run branch back to the project's repository: for a local path
//! the branch appears in that repository while its checked-out branch and working tree stay
//! untouched (git refuses only a push to the checked-out branch, which a run branch never is).
use std::path::{Path, PathBuf};

use autodev_domain::{EventKind, RunId, Spec, slugify};
use autodev_store::{AuditEntry, NewRun, ProjectRow, RunRow, Store};
use autodev_workspace::Git;

/// The process's forge credentials for Autodev's own clones, fetches and pushes.
type Credentials = std::sync::Arc<autodev_workspace::git::credentials::Credentials>;

use crate::error::{EngineError, Result};
use crate::settings::RunSettings;

/// What a project run is made from.
#[derive(Clone, Debug)]
pub struct ProjectRun<'a> {
    pub project: &'a ProjectRow,
    pub spec: Spec,
    /// An empty test command is detected in the worker's clone.
    pub settings: RunSettings,
    /// What started it, e.g. `github:owner/repo#12`.
    pub origin: Option<String>,
    /// The audit record of the request, stored in the run's transaction (its detail, when
    /// empty, becomes the run id).
    pub audit: Option<AuditEntry>,
    /// The branch to start from instead of the project's (a follow-up run starts from its
    /// pull request's branch).
    pub base_branch: Option<String>,
}

/// Records a project run as `queued`; a worker picks it up. One transaction, no git.
pub async fn enqueue(store: &Store, req: ProjectRun<'_>) -> Result<(RunRow, autodev_domain::Event)> {
    if req.settings.max_parallel == 0 {
        return Err(EngineError::Invalid("max_parallel must be at least 1".into()));
    }
    // Project settings that tighten a run: `require_evidence`, `protected_paths` (added to
    // the operator's), `approve_delivery`. (`monthly_budget_usd` is read at each reservation.)
    let mut settings = req.settings.clone();
    let project_settings = req.project.settings();
    if project_settings.require_evidence == Some(true) {
        settings.require_evidence = true;
    }
    if project_settings.approve_delivery == Some(true) {
        settings.approve_delivery = true;
    }
    for glob in project_settings.protected_paths.iter().flatten() {
        if !settings.protected_paths.iter().any(|g| g == glob) {
            settings.protected_paths.push(glob.clone());
        }
    }
    let draft = RunDraft {
        spec: &req.spec,
        repo: req.project.repository.clone(),
        base_branch: req.base_branch.clone().or_else(|| req.project.base_branch.clone()).unwrap_or_default(),
        base_commit: String::new(),
        settings: &settings,
        project_id: Some(req.project.id.clone()),
        origin: req.origin.clone(),
    };
    let (run, event) = insert_draft(store, draft, req.audit.clone()).await?;
    Ok((run.into_row(event.at_ms), event))
}

/// What a new run is made of, before it has an id.
pub(crate) struct RunDraft<'a> {
    pub spec: &'a Spec,
    pub repo: String,
    pub base_branch: String,
    pub base_commit: String,
    pub settings: &'a RunSettings,
    pub project_id: Option<String>,
    pub origin: Option<String>,
}

/// Stores a draft as a `queued` run under a fresh id, with its creation event and, when
/// given, the audit record of the request (whose empty detail becomes the run id). `autodev
/// run`, the API and the webhooks all create runs here.
///
/// Short ids are 32 random bits, so two runs can draw the same one (seen at 57,000 runs in a
/// benchmark); the store refuses the second, and it is drawn again.
pub(crate) async fn insert_draft(
    store: &Store,
    draft: RunDraft<'_>,
    audit: Option<AuditEntry>,
) -> Result<(NewRun, autodev_domain::Event)> {
    let title = draft.spec.title();
    // The run's trace starts here, under the caller's span (an API request, a webhook) when
    // there is one; a follow-up links to the trace of the run it follows.
    let span = tracing::info_span!(
        "autodev.run.create",
        otel.name = "run created",
        autodev.run.title = %title,
        autodev.run.id = tracing::field::Empty
    );
    let mut settings = draft.settings.clone();
    if crate::telemetry::enabled() {
        if let Some(followed) = &settings.trace_parent {
            crate::telemetry::link(&span, followed);
        }
        settings.trace_parent = crate::telemetry::traceparent(&span);
    }
    let settings = serde_json::to_string(&settings).map_err(autodev_store::StoreError::from)?;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let id = RunId::new();
        let run = NewRun {
            id: id.to_string(),
            short_id: id.short(),
            title: title.clone(),
            spec: draft.spec.text().to_string(),
            repo: draft.repo.clone(),
            base_branch: draft.base_branch.clone(),
            base_commit: draft.base_commit.clone(),
            branch: format!("autodev/{}-{}", id.short(), slugify(&title, 40)),
            settings: settings.clone(),
            project_id: draft.project_id.clone(),
            origin: draft.origin.clone(),
        };
        let created = EventKind::RunCreated {
            title: title.clone(),
            // Events are shown to every viewer: a token in the clone URL is masked.
            repo: autodev_domain::mask_url_credentials(&run.repo).into_owned(),
            base_branch: run.base_branch.clone(),
            test_command: draft.settings.test_command.clone(),
        };
        let audit = audit.clone().map(|a| AuditEntry { detail: a.detail.or_else(|| Some(run.id.clone())), ..a });
        match store.insert_run_audited(run.clone(), created, audit).await {
            Ok(event) => {
                span.record("autodev.run.id", run.id.as_str());
                return Ok((run, event));
            }
            Err(e) if e.is_unique_violation() && attempt < 4 => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Whether a repository string is a URL (or scp-like `user@host:path`) rather than a path.
pub fn is_remote(repository: &str) -> bool {
    repository.contains("://") || (repository.contains('@') && repository.contains(':') && !repository.starts_with('/'))
}

/// Checks a project's repository field: an absolute path to an existing git repository, or
/// a clone URL. Returns the reason it is not.
pub fn validate_repository(repository: &str) -> std::result::Result<(), String> {
    let r = repository.trim();
    if r.is_empty() {
        return Err("repository is empty: give an absolute path or a clone URL".into());
    }
    if is_remote(r) {
        let scheme = r.split("://").next().unwrap_or_default();
        if r.contains("://") && !matches!(scheme, "https" | "http" | "ssh" | "git" | "file") {
            return Err(format!(
                "repository URL scheme `{scheme}` is not supported: use https://, ssh://, git:// or file://"
            ));
        }
        return Ok(());
    }
    let path = Path::new(r);
    if !path.is_absolute() {
        return Err(format!("repository `{r}` is a relative path: give an absolute path or a clone URL"));
    }
    if !path.join(".git").exists() && !path.join("HEAD").is_file() {
        return Err(format!(
            "repository `{r}` is not a git repository (no .git): run `git init` there, or fix the path"
        ));
    }
    Ok(())
}

/// The worker's clone of a project's repository, fetched up to date; the run row is
/// returned pointing at it, with its base branch and base commit filled in (and stored the
/// first time).
pub(crate) async fn prepare(
    store: &Store,
    home: &Path,
    credentials: &Credentials,
    run: RunRow,
    settings: &mut RunSettings,
) -> Result<RunRow> {
    let Some(project_id) = run.project_id.clone() else { return Ok(run) };
    let (git, dir) = fetched_clone(home, credentials, &project_id, &run.repo, &run.id).await?;
    let base =
        if run.base_branch.is_empty() { default_branch(&git, &run.repo).await? } else { run.base_branch.clone() };
    let base_commit = if run.base_commit.is_empty() {
        let commit = git.rev_parse(&format!("refs/remotes/origin/{base}")).await?.ok_or_else(|| {
            EngineError::Failed(format!(
                "base branch `{base}` does not exist in {}: fix the project's base_branch",
                run.repo
            ))
        })?;
        store.set_base(&run.id, &base, &commit).await?;
        commit
    } else {
        run.base_commit.clone()
    };
    if settings.test_command.trim().is_empty() {
        settings.test_command = crate::detect::detect_test_command(&dir).ok_or_else(|| {
            EngineError::Failed(
                "the project has no test_command and none could be detected in its repository; set one on the project"
                    .into(),
            )
        })?;
    }
    Ok(RunRow { repo: dir.display().to_string(), base_branch: base, base_commit, ..run })
}

/// The clone of a project's repository in this home (`AUTODEV_HOME/repos/<project>`), cloned
/// or fetched now; `run_id`'s checkpoint refs come along.
async fn fetched_clone(
    home: &Path,
    credentials: &Credentials,
    project_id: &str,
    repository: &str,
    run_id: &str,
) -> Result<(Git, PathBuf)> {
    let repos = home.join("repos");
    std::fs::create_dir_all(&repos)?;
    let dir = repos.join(project_id);
    // Workers sharing a home share the clone; one fetches at a time. (Serving every queued
    // run with one fetch was tried: it let a thousand runs of one clone into their worktrees at
    // once, and git's worktree commands, which read every worktree, then crawled. The
    // serialised fetch paces them.)
    let lock_path = repos.join(format!("{project_id}.lock"));
    let held = autodev_workspace::locks::lock_file(&lock_path).await?;
    let result = fetch(repository, &dir, run_id, credentials).await;
    drop(held);
    result?;
    Ok((Git::new(&dir).with_credentials(credentials), dir))
}

/// The project's clone in this home, fetched now (what a revert is checked against).
pub(crate) async fn fetch_project(
    home: &Path,
    credentials: &Credentials,
    project: &ProjectRow,
    run_id: &str,
) -> Result<Git> {
    Ok(fetched_clone(home, credentials, &project.id, &project.repository, run_id).await?.0)
}

async fn fetch(repository: &str, dir: &Path, run_id: &str, credentials: &Credentials) -> Result<()> {
    if !dir.join(".git").exists() {
        let _ = std::fs::remove_dir_all(dir);
        let parent = dir.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
        let target = dir.display().to_string();
        Git::new(&parent)
            .with_credentials(credentials)
            .run(&["clone", "--quiet", "--no-checkout", "--", repository, &target])
            .await
            .map_err(|e| EngineError::Failed(format!("could not clone {repository}: {e}")))?;
    }
    let git = Git::new(dir).with_credentials(credentials);
    // The run's own checkpoint refs come back too, so a run resumed by another machine's
    // worker starts from the last merged state.
    let checkpoints = format!("+refs/autodev/{run_id}/*:refs/autodev/{run_id}/*");
    git.run_exclusive(&["fetch", "--quiet", "--prune", "origin", "+refs/heads/*:refs/remotes/origin/*", &checkpoints])
        .await
        .map_err(|e| EngineError::Failed(format!("could not fetch {repository}: {e}")))?;
    Ok(())
}

async fn default_branch(git: &Git, repository: &str) -> Result<String> {
    let out = git.run(&["ls-remote", "--symref", "origin", "HEAD"]).await.unwrap_or_default();
    out.lines()
        .find_map(|l| l.strip_prefix("ref: refs/heads/").and_then(|r| r.split_whitespace().next()).map(str::to_string))
        .ok_or_else(|| {
            EngineError::Failed(format!(
                "{repository} has no default branch (empty repository?): set the project's base_branch"
            ))
        })
}

/// Restores the run branch and task branches a previous worker checkpointed, where this
/// clone lacks them.
pub(crate) async fn restore_checkpoint(git: &Git, run: &RunRow) -> Result<()> {
    let checkpoint = format!("refs/autodev/{}/run", run.id);
    if !git.branch_exists(&run.branch).await? && git.rev_parse(&checkpoint).await?.is_some() {
        git.run(&["branch", &run.branch, &checkpoint]).await?;
    }
    let prefix = format!("refs/autodev/{}/tasks/", run.id);
    let refs = git.run(&["for-each-ref", "--format=%(refname)", &prefix]).await?;
    for r in refs.lines().filter(|l| !l.is_empty()) {
        let key = r.trim_start_matches(&prefix);
        let branch = format!("autodev/{}-tasks/{key}", run.short_id);
        if !git.branch_exists(&branch).await? {
            git.run(&["branch", &branch, r]).await?;
        }
    }
    Ok(())
}

/// Saves a task's committed branch under `refs/autodev/<run>/tasks/<key>`, so a worker on
/// another machine can merge it if this one dies before the merge.
pub(crate) async fn checkpoint_task(git: &Git, run: &RunRow, branch: &str, key: &str) -> Result<()> {
    let spec = format!("+refs/heads/{branch}:refs/autodev/{}/tasks/{key}", run.id);
    git.run(&["push", "--quiet", "origin", &spec])
        .await
        .map_err(|e| EngineError::Failed(format!("could not save a checkpoint to the project's repository: {e}")))?;
    Ok(())
}

/// Saves the run branch to the project's repository under `refs/autodev/<run>/run` (not a
/// branch: it shows in no branch list) so a worker on another machine can resume from it.
pub(crate) async fn checkpoint(git: &Git, run: &RunRow) -> Result<()> {
    let spec = format!("+refs/heads/{}:refs/autodev/{}/run", run.branch, run.id);
    git.run(&["push", "--quiet", "origin", &spec])
        .await
        .map_err(|e| EngineError::Failed(format!("could not save a checkpoint to the project's repository: {e}")))?;
    Ok(())
}

/// Delivers: pushes the run branch to the project's repository (as `target`: the run's own
/// branch, or a follow-up's pull request branch, which a non-forced push only fast-forwards)
/// and drops the checkpoint.
pub(crate) async fn push(git: &Git, run: &RunRow, target: &str) -> Result<()> {
    let spec = format!("refs/heads/{}:refs/heads/{target}", run.branch);
    git.run(&["push", "--quiet", "origin", &spec]).await.map_err(|e| {
        let rejected = e.to_string().contains("non-fast-forward") || e.to_string().contains("[rejected]");
        let hint = if rejected && target != run.branch {
            format!(" ({target} moved since the run started; start the follow-up again)")
        } else {
            String::new()
        };
        EngineError::Failed(format!("could not push {} to the project's repository as {target}: {e}{hint}", run.branch))
    })?;
    // The checkpoints are not needed any more.
    let listed = git.run(&["ls-remote", "origin", &format!("refs/autodev/{}/*", run.id)]).await.unwrap_or_default();
    for r in listed.lines().filter_map(|l| l.split_whitespace().nth(1)) {
        let _ = git.run(&["push", "--quiet", "origin", &format!(":{r}")]).await;
    }
    Ok(())
}
