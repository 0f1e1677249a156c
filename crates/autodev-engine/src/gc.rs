//! Retention: what `autodev gc` and the periodic collection under `serve` and `worker`
//! remove. For a run that ended (succeeded, failed or cancelled) longer ago than the age:
//!
//! - in the database (once, by whichever process gets there first): its events, tool results,
//!   conversation headers and model responses (`Store::collect_run`); the run, its tasks,
//!   costs, links, deliveries, report and patch stay;
//! - in a repository on this machine that the run worked in (`autodev run`'s, or a local-path
//!   project's): its task branches and checkpoint refs (`refs/autodev/<id>/…`);
//! - in this process's data directory: the run folder (`runs/<id>`) with its worktrees (removed
//!   through git, so the repository forgets them), and in this process's clone of the project
//!   (`repos/`) the run's task branches, checkpoint refs and run branch (pushed when it
//!   delivered).
//!
//! Never touched: a run that has not ended (queued, running, waiting at a gate, stopped on a
//! budget: all resumable), and the run branch in the project's own repository, where the pull
//! request (open or merged) lives.
use std::path::{Path, PathBuf};
use std::time::Duration;

use autodev_store::{Store, StoreError};
use autodev_workspace::git::Git;
use serde::Serialize;

use crate::EngineError;

/// What a collection removed (or, with `dry_run`, would remove).
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct GcReport {
    pub dry_run: bool,
    /// Runs whose database records were collected.
    pub runs: u64,
    pub events: i64,
    pub tool_calls: i64,
    pub model_responses: i64,
    /// Run folders removed from this data directory, and their size.
    pub run_folders: u64,
    pub bytes: u64,
    pub worktrees: u64,
    /// Branches and refs deleted (task branches, checkpoint refs, run branches in clones).
    pub refs: u64,
    /// Run folders kept because their run has not ended (or ended within the age).
    pub kept: u64,
}

/// Collects everything older than `older_than` (see the module docs).
pub async fn collect(store: &Store, home: &Path, older_than: Duration, dry_run: bool) -> Result<GcReport, EngineError> {
    let cutoff = autodev_store::now_ms() - i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX);
    let mut report = GcReport { dry_run, ..GcReport::default() };
    // The database: in batches, oldest first. A dry run reads one large batch (nothing is
    // marked, so a second batch would repeat the first).
    let batch = if dry_run { 100_000 } else { 200 };
    loop {
        let runs = store.collectable_runs(cutoff, batch).await?;
        let done = runs.len() < batch as usize || dry_run;
        for run in &runs {
            let Some(counts) = store.collect_run(&run.id, dry_run).await? else { continue };
            report.runs += 1;
            report.events += counts.events;
            report.tool_calls += counts.tool_calls;
            report.model_responses += counts.model_responses;
            // A local-path project keeps the run's checkpoint refs (pushed there so another
            // worker can resume): they go with the run's records.
            let repo = Path::new(&run.repo);
            if repo.is_absolute() && repo.is_dir() {
                report.refs += delete_run_refs(repo, &run.id, &run.short_id, None, dry_run).await;
            }
        }
        if done {
            break;
        }
    }
    // This data directory's run folders.
    let runs_dir = home.join("runs");
    let entries = match std::fs::read_dir(&runs_dir) {
        Ok(entries) => entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_dir()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    for dir in entries {
        let id = dir.file_name().unwrap_or_default().to_string_lossy().to_string();
        let run = match store.get_run(&id).await {
            Ok(run) => Some(run),
            Err(StoreError::RunNotFound(_)) => None,
            Err(e) => return Err(e.into()),
        };
        let old = match &run {
            Some(run) => run.run_state().is_terminal() && run.finished_at.is_some_and(|at| at < cutoff),
            // A folder whose run is not in this database (deleted, or another database's):
            // by its age on disk.
            None => modified_ms(&dir).is_some_and(|at| at < cutoff),
        };
        if !old {
            report.kept += 1;
            continue;
        }
        let size = dir_size(&dir);
        // The repository the run's worktrees belong to: this process's clone of its project,
        // or (`autodev run`) the repository it ran on. Known from the run, not from the
        // worktrees' `.git` files, which agents could have rewritten.
        let repo = run
            .as_ref()
            .map(|run| match &run.project_id {
                Some(project) => home.join("repos").join(project),
                None => PathBuf::from(&run.repo),
            })
            .filter(|repo| repo.is_dir());
        for wt in worktrees(&dir) {
            if !dry_run {
                let removed = match &repo {
                    Some(repo) => Git::new(repo).worktree_remove(&wt).await.map_err(|e| e.to_string()),
                    None => Err("its repository is unknown".to_string()),
                };
                if let Err(e) = removed {
                    tracing::warn!(worktree = %wt.display(), error = %e, "gc: git did not remove a worktree; removing its folder");
                    let _ = std::fs::remove_dir_all(&wt);
                    if let Some(repo) = &repo {
                        let _ = Git::new(repo).run(&["worktree", "prune"]).await;
                    }
                }
            }
            report.worktrees += 1;
        }
        // In a clone of this process's: the task branches, checkpoint refs and the run branch
        // (pushed when the run delivered). A repository of the user's was handled with the
        // run's records above.
        if let (Some(run), Some(repo)) = (&run, &repo)
            && run.project_id.is_some()
        {
            report.refs += delete_run_refs(repo, &run.id, &run.short_id, Some(&run.branch), dry_run).await;
        }
        if !dry_run && let Err(e) = std::fs::remove_dir_all(&dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "gc: could not remove a run folder");
            continue;
        }
        report.run_folders += 1;
        report.bytes += size;
    }
    Ok(report)
}

/// Deletes the run's task branches and checkpoint refs in `repo` (and `run_branch`, in a
/// clone of this process's); returns how many (with `dry_run`, how many there are).
async fn delete_run_refs(repo: &Path, run_id: &str, short_id: &str, run_branch: Option<&str>, dry_run: bool) -> u64 {
    let git = Git::new(repo);
    let tasks = format!("refs/heads/autodev/{short_id}-tasks/");
    let checkpoints = format!("refs/autodev/{run_id}/");
    let mut patterns = vec![tasks, checkpoints];
    if let Some(branch) = run_branch {
        patterns.push(format!("refs/heads/{branch}"));
    }
    let mut args = vec!["for-each-ref", "--format=%(refname)"];
    args.extend(patterns.iter().map(String::as_str));
    let Ok(listed) = git.run(&args).await else { return 0 };
    // A branch checked out in the repository's own working tree stays.
    let head = git.run(&["symbolic-ref", "-q", "HEAD"]).await.unwrap_or_default();
    let mut n = 0;
    for name in listed.lines().map(str::trim).filter(|l| !l.is_empty() && *l != head.trim()) {
        if dry_run || git.run_exclusive(&["update-ref", "-d", name]).await.is_ok() {
            n += 1;
        }
    }
    n
}

/// The worktrees in a run folder (`worktrees/<name>`, each with a `.git` file).
fn worktrees(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir.join("worktrees"))
        .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.join(".git").is_file()).collect())
        .unwrap_or_default()
}

fn modified_ms(path: &Path) -> Option<i64> {
    let modified = std::fs::metadata(path).ok()?.modified().ok()?;
    Some(modified.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis() as i64)
}

/// The bytes of the files under `path` (symbolic links not followed).
pub fn dir_size(path: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.filter_map(Result::ok) {
            let Ok(meta) = entry.path().symlink_metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                total += meta.len();
            }
        }
    }
    total
}

/// The periodic collection under `serve` and `worker`: every `every`, collect what is older
/// than `older_than`; every 5 minutes, the data directory's size as `autodev_data_dir_bytes`.
/// Ends with `shutdown`.
pub async fn run_periodically(
    store: Store,
    home: PathBuf,
    older_than: Option<Duration>,
    every: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let size_every = Duration::from_secs(300).min(every);
    let mut next_gc = tokio::time::Instant::now() + Duration::from_secs(60).min(every);
    loop {
        let measured = {
            let home = home.clone();
            tokio::task::spawn_blocking(move || dir_size(&home)).await.unwrap_or(0)
        };
        metrics::gauge!("autodev_data_dir_bytes").set(measured as f64);
        if let Some(age) = older_than
            && tokio::time::Instant::now() >= next_gc
        {
            next_gc = tokio::time::Instant::now() + every;
            match collect(&store, &home, age, false).await {
                Ok(r) if r.runs > 0 || r.run_folders > 0 => tracing::info!(
                    runs = r.runs,
                    events = r.events,
                    run_folders = r.run_folders,
                    bytes = r.bytes,
                    refs = r.refs,
                    "gc: collected old runs"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "gc failed; trying again later"),
            }
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(size_every) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
