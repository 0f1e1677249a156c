//! A typed wrapper over the `git` CLI. We shell out rather than link libgit2 or gix so that
//! worktrees and merges behave exactly as `git` does (see CRATES.md §Git). Only porcelain
//! output is parsed.
//!
//! Autodev's own git runs outside the sandbox, on worktrees an agent has written to, so
//! nothing in a worktree or on the user's PATH may steer it:
//! - one git binary, looked up once in fixed system directories (never `~/.cargo/bin` or
//!   anything else on the user's PATH);
//! - a fixed environment: `PATH` fixed, no system or global config (`GIT_CONFIG_NOSYSTEM`,
//!   `GIT_CONFIG_GLOBAL=/dev/null`), `HOME` of our choosing;
//! - every call with `core.hooksPath=/dev/null` and `core.fsmonitor=false`: no hook runs
//!   (`post-commit` runs despite `--no-verify`), no fsmonitor command;
//! - on a worktree, explicit `GIT_DIR` and `GIT_WORK_TREE`, and before each call the
//!   worktree's `.git` file must still name the git directory the repository registered for
//!   it; otherwise nothing runs and the call fails with [`GitError::Tampered`].
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The identity Autodev commits under, so agent commits are recognisable in `git log`.
pub const AUTHOR_NAME: &str = "Autodev";
pub const AUTHOR_EMAIL: &str = "autodev@localhost";

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// `git` is not installed or could not be started. Tell the user to install git.
    #[error("could not run git: {0}; install git and make sure it is on PATH")]
    Spawn(#[from] std::io::Error),
    /// A git command failed. The message is git's own.
    #[error("`git {args}` failed in {dir}: {stderr}")]
    Failed { args: String, dir: String, stderr: String },
    /// A worktree's `.git` no longer names its registered git directory: something in the
    /// worktree (an agent) changed it. Nothing was run; the task fails with this reason.
    #[error("the worktree {dir} was tampered with: {why}; no git command was run on it")]
    Tampered { dir: String, why: String },
}

impl GitError {
    /// Whether git failed only because another git held a lock it needed (a `*.lock` file:
    /// the index, a ref, `packed-refs`, the config). Nothing was changed, and the same command
    /// succeeds once the other finishes. A ref that moved under an expected old value is not
    /// contention and is not included.
    pub fn is_lock_contention(&self) -> bool {
        let GitError::Failed { stderr, .. } = self else { return false };
        (stderr.contains(".lock': File exists")
            || stderr.contains("cannot lock ref")
            || stderr.contains("could not lock config file")
            || stderr.contains("Another git process seems to be running"))
            && !stderr.contains("but expected")
    }
}

/// Directories searched for git, in order. Fixed: the user's PATH may hold a planted `git`.
const GIT_DIRS: &[&str] = &["/usr/local/bin", "/usr/bin", "/bin"];

/// Why a change cannot be reverted onto a branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevertRefusal {
    /// The revert conflicts with what changed since, in these paths.
    Conflict(Vec<String>),
    /// The branch already lacks the change (reverted before?).
    NothingToRevert,
    /// A root commit has no parent to go back to.
    NoParent,
}

impl std::fmt::Display for RevertRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RevertRefusal::Conflict(paths) => {
                write!(f, "the revert does not apply cleanly: it conflicts with later changes in {}", paths.join(", "))
            }
            RevertRefusal::NothingToRevert => {
                f.write_str("the change is no longer on the branch (was it reverted already?): nothing to revert")
            }
            RevertRefusal::NoParent => f.write_str("the commit is a root commit: there is nothing before it"),
        }
    }
}

/// The git binary, resolved once per process.
pub fn git_binary() -> std::io::Result<&'static Path> {
    static GIT: OnceLock<Option<PathBuf>> = OnceLock::new();
    GIT.get_or_init(|| GIT_DIRS.iter().map(|d| Path::new(d).join("git")).find(|p| p.is_file()))
        .as_deref()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, format!("no git in {}", GIT_DIRS.join(", "))))
}

/// Variables of Autodev's own environment that its git may see (proxies, the ssh agent);
/// everything else is dropped.
const GIT_PASS_ENV: &[&str] =
    &["SSH_AUTH_SOCK", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"];

pub type Result<T> = std::result::Result<T, GitError>;

/// What agents' test runs leave behind and no commit should carry, whether or not the
/// repository's .gitignore knows them (pathspecs for `git add`).
const ARTIFACT_EXCLUDES: &[&str] = &[
    ":(exclude,glob)**/__pycache__/**",
    ":(exclude,glob)**/*.pyc",
    ":(exclude,glob)**/.pytest_cache/**",
    ":(exclude,glob)**/.mypy_cache/**",
    ":(exclude,glob)**/.ruff_cache/**",
    ":(exclude,glob)**/.tox/**",
    ":(exclude,glob)**/.venv/**",
    ":(exclude,glob)**/node_modules/**",
    ":(exclude,glob)**/.gradle/**",
    ":(exclude,glob)**/.DS_Store",
    // `**/` also for the top level: an anchored pathspec that names an ignored path makes
    // `git add` fail ("paths are ignored by one of your .gitignore files").
    ":(exclude,glob)**/target/**",
];

/// One lock per repository (by its path), for git operations on the repository's shared
/// worktree metadata.
fn repo_lock(dir: &Path) -> std::sync::Arc<tokio::sync::Mutex<()>> {
    crate::locks::path_mutex(dir)
}

/// The outcome of merging a branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MergeOutcome {
    /// Merged; the new head.
    Merged(String),
    /// Nothing to merge: the branch is already contained.
    UpToDate,
    /// Conflicts left in the working tree, in these files.
    Conflict(Vec<String>),
}

/// A git working directory (a repository or one of its worktrees).
#[derive(Clone, Debug)]
pub struct Git {
    dir: PathBuf,
    /// For a worktree an agent works in: the repository's common git directory, where the
    /// worktree's registration is checked before each call.
    common: Option<PathBuf>,
    /// Forge credentials for Autodev's own clones, fetches and pushes (never a worktree's).
    credentials: Option<std::sync::Arc<credentials::Credentials>>,
}

impl Git {
    /// A repository of the user's or Autodev's own (not one an agent writes to).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into(), common: None, credentials: None }
    }

    /// This repository, authenticating to the forges `credentials` has tokens for.
    pub fn with_credentials(mut self, credentials: &std::sync::Arc<credentials::Credentials>) -> Self {
        self.credentials = Some(credentials.clone());
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The repository's common git directory (absolute).
    pub async fn common_dir(&self) -> Result<PathBuf> {
        let out = self.run(&["rev-parse", "--path-format=absolute", "--git-common-dir"]).await?;
        Ok(PathBuf::from(out.trim()))
    }

    /// A worktree of this repository that agents write to: every call on it is checked first.
    pub async fn worktree(&self, path: &Path) -> Result<Git> {
        Ok(Git { dir: path.to_path_buf(), common: Some(self.common_dir().await?), credentials: None })
    }

    /// For a checked worktree: its git directory, after making sure the worktree's `.git`
    /// file still names the directory the repository registered for this path.
    fn verified_git_dir(&self) -> Result<Option<PathBuf>> {
        let Some(common) = &self.common else { return Ok(None) };
        let tampered = |why: String| GitError::Tampered { dir: self.dir.display().to_string(), why };
        let dot_git = self.dir.join(".git");
        let meta = dot_git.symlink_metadata().map_err(|e| tampered(format!(".git is unreadable ({e})")))?;
        if !meta.is_file() {
            return Err(tampered(".git is no longer a plain file".into()));
        }
        let text = std::fs::read_to_string(&dot_git).map_err(|e| tampered(format!(".git is unreadable ({e})")))?;
        let named = text
            .strip_prefix("gitdir:")
            .map(|t| self.dir.join(t.trim()))
            .ok_or_else(|| tampered(".git does not name a git directory".into()))?;
        let here = self.dir.canonicalize()?.join(".git");
        // The repository's own record: worktrees/<id>/gitdir holds the path of our `.git`.
        let registered = std::fs::read_dir(common.join("worktrees"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .find(|entry| {
                std::fs::read_to_string(entry.join("gitdir"))
                    .ok()
                    .and_then(|p| Path::new(p.trim()).parent().and_then(|d| d.canonicalize().ok()))
                    .is_some_and(|d| d.join(".git") == here)
            })
            .ok_or_else(|| tampered("the repository has no worktree registered at this path".into()))?;
        let named = named.canonicalize().map_err(|_| tampered(format!("{} does not exist", named.display())))?;
        if named != registered.canonicalize()? {
            return Err(tampered(format!(".git names {} instead of {}", named.display(), registered.display())));
        }
        Ok(Some(registered))
    }

    async fn output(&self, args: &[&str]) -> Result<std::process::Output> {
        let git_dir = self.verified_git_dir()?;
        let mut cmd = tokio::process::Command::new(git_binary()?);
        cmd.env_clear();
        // Autodev's own fetches and pushes (never in an agent's worktree) authenticate to the
        // forges it has tokens for, through the environment only.
        if self.common.is_none()
            && let Some(credentials) = &self.credentials
        {
            credentials.apply(&mut cmd);
        }
        for name in GIT_PASS_ENV {
            if let Some(v) = std::env::var_os(name) {
                cmd.env(name, v);
            }
        }
        if let Some(git_dir) = &git_dir {
            cmd.env("GIT_DIR", git_dir).env("GIT_WORK_TREE", &self.dir);
        }
        let out = cmd
            .arg("-C")
            .arg(&self.dir)
            .args(["-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false"])
            .args(args)
            .env("PATH", GIT_DIRS.join(":"))
            .env("HOME", "/nonexistent/autodev-git-home")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_AUTHOR_NAME", AUTHOR_NAME)
            .env("GIT_AUTHOR_EMAIL", AUTHOR_EMAIL)
            .env("GIT_COMMITTER_NAME", AUTHOR_NAME)
            .env("GIT_COMMITTER_EMAIL", AUTHOR_EMAIL)
            .env("LC_ALL", "C")
            .stdin(std::process::Stdio::null())
            .output()
            .await?;
        Ok(out)
    }

    /// Runs git and returns its stdout, or the error with git's stderr.
    pub async fn run(&self, args: &[&str]) -> Result<String> {
        use backon::{ExponentialBuilder, Retryable};
        // Runs of one project share its repository: a ref, `packed-refs`, the index or a
        // worktree's metadata locked by a concurrent git (another run's commit, a push, a
        // `worktree add`) is waited out with backoff rather than failing a run.
        let backoff = ExponentialBuilder::default()
            .with_min_delay(std::time::Duration::from_millis(25))
            .with_max_delay(std::time::Duration::from_secs(1))
            .with_max_times(10)
            .with_jitter();
        (|| self.run_once(args))
            .retry(backoff)
            .when(GitError::is_lock_contention)
            .notify(|e, wait| tracing::debug!(error = %e, ?wait, "git lock held elsewhere; retrying"))
            .await
    }

    async fn run_once(&self, args: &[&str]) -> Result<String> {
        let out = self.output(args).await?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            // A clone or push URL may carry a token: masked in what the error says.
            Err(GitError::Failed {
                args: autodev_domain::mask_url_credentials(&args.join(" ")).into_owned(),
                dir: self.dir.display().to_string(),
                stderr: autodev_domain::mask_url_credentials(String::from_utf8_lossy(&out.stderr).trim()).into_owned(),
            })
        }
    }

    /// Runs git while no worktree is being added or removed in this repository (by this
    /// process). A fetch reads every worktree's HEAD; one half made by a concurrent
    /// `worktree add` makes it fail ("failed to read .git/worktrees/…/commondir"), seen with
    /// several runs of one project on one worker.
    pub async fn run_exclusive(&self, args: &[&str]) -> Result<String> {
        let lock = repo_lock(&self.dir);
        let _guard = lock.lock().await;
        self.run(args).await
    }

    /// Runs git and reports only whether it succeeded.
    async fn check(&self, args: &[&str]) -> Result<bool> {
        Ok(self.output(args).await?.status.success())
    }

    /// The top level of the repository containing `dir`, or `None` when it is not one.
    pub async fn toplevel(&self) -> Result<Option<PathBuf>> {
        let out = self.output(&["rev-parse", "--show-toplevel"]).await?;
        if !out.status.success() {
            return Ok(None);
        }
        Ok(Some(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())))
    }

    /// The commit a revision names, or `None`.
    pub async fn rev_parse(&self, rev: &str) -> Result<Option<String>> {
        let spec = format!("{rev}^{{commit}}");
        let out = self.output(&["rev-parse", "--verify", "--quiet", &spec]).await?;
        Ok(out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string()))
    }

    /// The checked-out branch, or `None` on a detached head.
    pub async fn current_branch(&self) -> Result<Option<String>> {
        let out = self.output(&["symbolic-ref", "--quiet", "--short", "HEAD"]).await?;
        Ok(out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string()))
    }

    pub async fn branch_exists(&self, branch: &str) -> Result<bool> {
        self.check(&["show-ref", "--verify", "--quiet", &format!("refs/heads/{branch}")]).await
    }

    /// Adds a worktree at `path` on `branch`, creating the branch from `start` if it does not
    /// exist. If the worktree is already there (a resumed run), it is reused.
    ///
    /// Concurrent `git worktree add` on one repository fails now and then ("failed to read
    /// .git/worktrees/…/commondir": seen 4 times in 36 here), and parallel tasks do exactly
    /// that. So adds and removes are serialised per repository within the process, and a
    /// failed add (another process racing us) is cleaned up and retried.
    pub async fn worktree_add(&self, path: &Path, branch: &str, start: &str) -> Result<()> {
        if path.join(".git").symlink_metadata().is_ok() {
            self.worktree(path).await?.clear_stale_locks()?;
            return Ok(());
        }
        let lock = repo_lock(&self.dir);
        let _guard = lock.lock().await;
        let p = path.to_string_lossy();
        let mut attempt = 0;
        loop {
            // Made meanwhile (under this lock) by another driver of the same task: reused.
            if path.join(".git").symlink_metadata().is_ok() {
                self.worktree(path).await?.clear_stale_locks()?;
                return Ok(());
            }
            // A worktree directory removed by hand, or a half-made one, blocks a new one.
            self.run(&["worktree", "prune"]).await?;
            if path.exists() && !path.join(".git").exists() {
                std::fs::remove_dir_all(path)?;
            }
            let result = if self.branch_exists(branch).await? {
                self.run(&["worktree", "add", "--quiet", &p, branch]).await
            } else {
                self.run(&["worktree", "add", "--quiet", "-b", branch, &p, start]).await
            };
            match result {
                Ok(_) => return Ok(()),
                Err(e) if attempt < 4 => {
                    attempt += 1;
                    tracing::debug!(error = %e, attempt, "git worktree add failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(50 * attempt)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Adds a worktree at `path` with `commit` checked out and no branch (a scratch tree);
    /// one left over from an earlier attempt is replaced.
    pub async fn worktree_add_detached(&self, path: &Path, commit: &str) -> Result<()> {
        let lock = repo_lock(&self.dir);
        let _guard = lock.lock().await;
        if path.exists() {
            let _ = self.run(&["worktree", "remove", "--force", &path.to_string_lossy()]).await;
            if path.exists() {
                std::fs::remove_dir_all(path)?;
            }
        }
        self.run(&["worktree", "prune"]).await?;
        self.run(&["worktree", "add", "--quiet", "--detach", &path.to_string_lossy(), commit]).await?;
        Ok(())
    }

    pub async fn worktree_remove(&self, path: &Path) -> Result<()> {
        let lock = repo_lock(&self.dir);
        let _guard = lock.lock().await;
        if path.exists() {
            self.run(&["worktree", "remove", "--force", &path.to_string_lossy()]).await?;
        }
        self.run(&["worktree", "prune"]).await?;
        Ok(())
    }

    /// Removes an `index.lock` left by a git process that was killed; a worktree with one
    /// refuses every later command.
    pub fn clear_stale_locks(&self) -> Result<()> {
        let git_dir = match self.verified_git_dir()? {
            Some(dir) => dir,
            None => self.dir.join(".git"),
        };
        let lock = git_dir.join("index.lock");
        if lock.exists() {
            std::fs::remove_file(lock)?;
        }
        Ok(())
    }

    /// Whether the working tree has uncommitted changes (untracked files included).
    pub async fn is_dirty(&self) -> Result<bool> {
        let out = self.run(&["status", "--porcelain=v2", "-z", "--untracked-files=all"]).await?;
        Ok(!out.is_empty())
    }

    /// Paths that differ from `HEAD` in the index or the working tree, untracked files
    /// included (ignored ones not), relative to the worktree root.
    pub async fn changed_paths(&self) -> Result<Vec<String>> {
        let mut paths: Vec<String> = Vec::new();
        for args in [
            &["diff", "--name-only", "--no-renames", "-z", "HEAD"][..],
            &["ls-files", "--others", "--exclude-standard", "-z"][..],
        ] {
            let out = self.run(args).await?;
            paths.extend(out.split('\0').filter(|p| !p.is_empty()).map(str::to_string));
        }
        paths.sort();
        paths.dedup();
        Ok(paths)
    }

    /// Puts `path` back as it is in `HEAD` (index and working tree); a path `HEAD` does not
    /// have is removed.
    pub async fn restore_from_head(&self, path: &str) -> Result<()> {
        let spec = format!("HEAD:{path}");
        if self.check(&["cat-file", "-e", &spec]).await? {
            self.run(&["checkout", "HEAD", "--", path]).await?;
        } else {
            self.run(&["rm", "-q", "-r", "--cached", "--ignore-unmatch", "--", path]).await?;
            let full = self.dir.join(path);
            if full.is_dir() {
                std::fs::remove_dir_all(&full)?;
            } else if full.symlink_metadata().is_ok() {
                std::fs::remove_file(&full)?;
            }
        }
        Ok(())
    }

    /// Stages everything except caches and dependency directories that test runs leave
    /// behind, and commits; returns the new commit, or `None` when nothing was staged.
    pub async fn commit_all(&self, message: &str) -> Result<Option<String>> {
        let mut args = vec!["add", "-A", "--", "."];
        args.extend(ARTIFACT_EXCLUDES);
        self.run(&args).await?;
        let staged = !self.check(&["diff", "--cached", "--quiet"]).await?;
        // Concluding a merge commits even when the resolution changed nothing.
        if !staged && !self.merge_in_progress().await? {
            return Ok(None);
        }
        self.run(&["commit", "--quiet", "--no-verify", "-m", message]).await?;
        self.rev_parse("HEAD").await
    }

    /// Merges `branch` into the checked-out branch with a merge commit.
    pub async fn merge(&self, branch: &str, message: &str) -> Result<MergeOutcome> {
        let before = self.rev_parse("HEAD").await?;
        let out = self.output(&["merge", "--no-ff", "--no-edit", "-m", message, branch]).await?;
        if out.status.success() {
            let after = self.rev_parse("HEAD").await?;
            return Ok(match after {
                Some(head) if after != before => MergeOutcome::Merged(head),
                _ => MergeOutcome::UpToDate,
            });
        }
        let conflicted = self.run(&["diff", "--name-only", "--diff-filter=U", "-z"]).await?;
        let files: Vec<String> = conflicted.split('\0').filter(|s| !s.is_empty()).map(str::to_string).collect();
        if files.is_empty() {
            return Err(GitError::Failed {
                args: format!("merge {branch}"),
                dir: self.dir.display().to_string(),
                stderr: autodev_domain::mask_url_credentials(String::from_utf8_lossy(&out.stderr).trim()).into_owned(),
            });
        }
        Ok(MergeOutcome::Conflict(files))
    }

    /// Whether a merge is in progress (conflicts being resolved).
    pub async fn merge_in_progress(&self) -> Result<bool> {
        self.check(&["rev-parse", "--verify", "--quiet", "MERGE_HEAD"]).await
    }

    /// Whether two revisions have the same tree (no diff between them).
    pub async fn same_tree(&self, a: &str, b: &str) -> Result<bool> {
        self.check(&["diff", "--quiet", a, b, "--"]).await
    }

    /// Whether `ancestor` is contained in `descendant`.
    pub async fn is_ancestor(&self, ancestor: &str, descendant: &str) -> Result<bool> {
        self.check(&["merge-base", "--is-ancestor", ancestor, descendant]).await
    }

    /// The commits in `range` (`base..head`), oldest first, as `(sha, subject)`.
    pub async fn log(&self, range: &str) -> Result<Vec<(String, String)>> {
        let out = self.run(&["log", "--reverse", "--topo-order", "--format=%H%x00%s", range]).await?;
        Ok(out.lines().filter_map(|l| l.split_once('\0')).map(|(a, b)| (a.to_string(), b.to_string())).collect())
    }

    /// The patch from `base` to `head` (three-dot: what `head` adds since they diverged).
    pub async fn diff(&self, base: &str, head: &str) -> Result<String> {
        self.run(&["diff", "--binary", &format!("{base}...{head}")]).await
    }

    /// Files changed between two commits, with counts, for reports.
    pub async fn diff_stat(&self, base: &str, head: &str) -> Result<String> {
        self.run(&["diff", "--stat", &format!("{base}...{head}")]).await
    }

    /// The tree of `onto` with `change` undone (a merge commit against its first parent, any
    /// other commit against its parent), made without a worktree: the three-way merge of
    /// `onto` and `change^1` over `change` (`git merge-tree`). `Err(Refusal)` when it does not
    /// apply cleanly (the conflicting paths) or would change nothing (the change is no longer
    /// there). Only objects are written, no ref: a check costs nothing else.
    pub async fn revert_tree(&self, change: &str, onto: &str) -> Result<std::result::Result<String, RevertRefusal>> {
        let Some(parent) = self.rev_parse(&format!("{change}^1")).await? else {
            return Ok(Err(RevertRefusal::NoParent));
        };
        let out = self
            .output(&[
                "merge-tree",
                "--write-tree",
                "--name-only",
                "--no-messages",
                "--merge-base",
                change,
                onto,
                &parent,
            ])
            .await?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut lines = stdout.lines();
        let tree = lines.next().unwrap_or_default().trim().to_string();
        match out.status.code() {
            Some(0) => {}
            Some(1) => {
                let mut paths: Vec<String> = lines.take_while(|l| !l.is_empty()).map(str::to_string).collect();
                paths.dedup();
                return Ok(Err(RevertRefusal::Conflict(paths)));
            }
            _ => {
                return Err(GitError::Failed {
                    args: "merge-tree".into(),
                    dir: self.dir.display().to_string(),
                    stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                });
            }
        }
        let onto_tree = self.run(&["rev-parse", &format!("{onto}^{{tree}}")]).await?;
        if onto_tree.trim() == tree {
            return Ok(Err(RevertRefusal::NothingToRevert));
        }
        Ok(Ok(tree))
    }

    /// A commit on top of `onto` that undoes `change` ([`Git::revert_tree`]), with `message`.
    pub async fn revert_commit(
        &self,
        change: &str,
        onto: &str,
        message: &str,
    ) -> Result<std::result::Result<String, RevertRefusal>> {
        let tree = match self.revert_tree(change, onto).await? {
            Ok(tree) => tree,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let commit = self.run(&["commit-tree", &tree, "-p", onto, "-m", message]).await?;
        Ok(Ok(commit.trim().to_string()))
    }

    /// `git --version`, for `autodev doctor`.
    pub async fn version() -> Result<String> {
        let out = tokio::process::Command::new(git_binary()?).arg("--version").env_clear().output().await?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn repo() -> (tempfile::TempDir, Git) {
        let dir = tempfile::tempdir().unwrap();
        let git = Git::new(dir.path());
        git.run(&["init", "--quiet", "-b", "main"]).await.unwrap();
        std::fs::write(dir.path().join("a.txt"), "one\n").unwrap();
        git.commit_all("first").await.unwrap().unwrap();
        (dir, git)
    }

    /// A forge token reaches git as an `extraHeader` from the environment: git sees it, the
    /// repository's config file does not hold it, and git calls in an agent's worktree (or
    /// for a prefix it was not given for) do not get it.
    #[tokio::test]
    async fn forge_credentials_reach_git_through_the_environment_only() {
        let (dir, git) = repo().await;
        let token = secrecy::SecretString::from("ghp_credentials_test");
        let credentials = std::sync::Arc::new(credentials::Credentials::default());
        credentials.add_basic("https://forge.test.invalid/", "x-access-token", &token);
        let git = git.with_credentials(&credentials);
        let header = git.run(&["config", "--get", "http.https://forge.test.invalid/.extraheader"]).await.unwrap();
        let expected =
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "x-access-token:ghp_credentials_test");
        assert_eq!(header.trim(), format!("Authorization: Basic {expected}"));
        let config = std::fs::read_to_string(dir.path().join(".git/config")).unwrap();
        assert!(!config.contains(&expected));
        let wt = dir.path().join("wt-cred");
        git.worktree_add(&wt, "cred", "main").await.unwrap();
        let agent = git.worktree(&wt).await.unwrap();
        assert!(agent.run(&["config", "--get", "http.https://forge.test.invalid/.extraheader"]).await.is_err());
    }

    #[tokio::test]
    async fn worktree_commit_and_merge_round_trip() {
        let (dir, git) = repo().await;
        let wt = dir.path().join("wt");
        git.worktree_add(&wt, "feature", "main").await.unwrap();
        let wgit = Git::new(&wt);
        std::fs::write(wt.join("b.txt"), "two\n").unwrap();
        let sha = wgit.commit_all("add b").await.unwrap().unwrap();
        assert_eq!(wgit.commit_all("nothing").await.unwrap(), None);
        assert!(git.is_ancestor("main", &sha).await.unwrap());
        assert_eq!(git.log("main..feature").await.unwrap(), vec![(sha.clone(), "add b".to_string())]);
        let outcome = git.merge("feature", "merge feature").await.unwrap();
        assert!(matches!(outcome, MergeOutcome::Merged(_)));
        assert_eq!(git.merge("feature", "again").await.unwrap(), MergeOutcome::UpToDate);
        // Re-adding an existing worktree is a no-op (resume).
        git.worktree_add(&wt, "feature", "main").await.unwrap();
        git.worktree_remove(&wt).await.unwrap();
        assert!(!wt.exists());
    }

    /// Regression: parallel tasks adding worktrees at once sometimes failed with "failed to
    /// read .git/worktrees/…/commondir".
    #[tokio::test(flavor = "multi_thread")]
    async fn many_worktrees_added_at_once_all_succeed() {
        let (dir, git) = repo().await;
        let adds: Vec<_> = (0..24)
            .map(|i| {
                let git = git.clone();
                let path = dir.path().join(format!("wt{i}"));
                tokio::spawn(async move { git.worktree_add(&path, &format!("b{i}"), "main").await })
            })
            .collect();
        for add in adds {
            add.await.unwrap().unwrap();
        }
        let list = git.run(&["worktree", "list", "--porcelain"]).await.unwrap();
        assert_eq!(list.matches("worktree ").count(), 25);
    }

    #[tokio::test]
    async fn caches_left_by_test_runs_are_not_committed() {
        let (dir, git) = repo().await;
        for f in [
            "__pycache__/m.cpython-311.pyc",
            "pkg/__pycache__/x.pyc",
            "node_modules/a/index.js",
            ".pytest_cache/v",
            "target/debug/app",
        ] {
            let p = dir.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "junk").unwrap();
        }
        assert_eq!(git.commit_all("only junk").await.unwrap(), None);
        std::fs::write(dir.path().join("pkg/mod.py"), "x = 1\n").unwrap();
        let sha = git.commit_all("real change").await.unwrap().unwrap();
        let files = git.run(&["show", "--name-only", "--format=", &sha]).await.unwrap();
        assert_eq!(files.trim(), "pkg/mod.py");
    }

    #[tokio::test]
    async fn hooks_and_fsmonitor_never_run() {
        let (dir, git) = repo().await;
        let marker = dir.path().join("ran");
        for hook in ["pre-commit", "post-commit", "commit-msg", "post-checkout", "reference-transaction"] {
            let path = dir.path().join(".git/hooks").join(hook);
            std::fs::write(&path, format!("#!/bin/sh\necho {hook} >> '{}'\n", marker.display())).unwrap();
            let mut perms = std::fs::metadata(&path).unwrap().permissions();
            std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
            std::fs::set_permissions(&path, perms).unwrap();
        }
        git.run(&["config", "core.fsmonitor", &format!("echo fsmonitor >> '{}'", marker.display())]).await.unwrap();
        std::fs::write(dir.path().join("b.txt"), "two\n").unwrap();
        git.commit_all("with hooks around").await.unwrap().unwrap();
        let wt = dir.path().join("wt");
        git.worktree_add(&wt, "feature", "main").await.unwrap();
        git.worktree(&wt).await.unwrap().is_dirty().await.unwrap();
        assert!(!marker.exists(), "ran: {}", std::fs::read_to_string(&marker).unwrap_or_default());
    }

    #[tokio::test]
    async fn a_worktree_whose_git_file_names_another_git_dir_is_refused() {
        let (dir, git) = repo().await;
        let wt = dir.path().join("wt");
        git.worktree_add(&wt, "feature", "main").await.unwrap();
        let wgit = git.worktree(&wt).await.unwrap();
        assert!(!wgit.is_dirty().await.unwrap());
        let other = tempfile::tempdir().unwrap();
        Git::new(other.path()).run(&["init", "--quiet"]).await.unwrap();
        let original = std::fs::read_to_string(wt.join(".git")).unwrap();
        for tampered in [
            format!("gitdir: {}\n", other.path().join(".git").display()),
            format!("gitdir: {}\n", dir.path().join(".git").display()),
            "gitdir: ../nowhere\n".to_string(),
            "garbage".to_string(),
        ] {
            std::fs::write(wt.join(".git"), &tampered).unwrap();
            let err = wgit.commit_all("x").await.unwrap_err();
            assert!(matches!(err, GitError::Tampered { .. }), "{tampered}: {err}");
        }
        // A symlink in its place is refused too, even to the right directory.
        let registered = original.trim().strip_prefix("gitdir: ").unwrap().to_string();
        std::fs::remove_file(wt.join(".git")).unwrap();
        std::os::unix::fs::symlink(&registered, wt.join(".git")).unwrap();
        assert!(matches!(wgit.is_dirty().await.unwrap_err(), GitError::Tampered { .. }));
        std::fs::remove_file(wt.join(".git")).unwrap();
        std::fs::write(wt.join(".git"), &original).unwrap();
        assert!(!wgit.is_dirty().await.unwrap());
    }

    #[test]
    fn git_is_found_in_system_directories_only() {
        let git = git_binary().unwrap();
        assert!(GIT_DIRS.iter().any(|d| git.starts_with(d)), "{}", git.display());
    }

    #[tokio::test]
    async fn conflicting_merge_names_the_files() {
        let (dir, git) = repo().await;
        let wt = dir.path().join("wt");
        git.worktree_add(&wt, "other", "main").await.unwrap();
        std::fs::write(wt.join("a.txt"), "theirs\n").unwrap();
        Git::new(&wt).commit_all("theirs").await.unwrap();
        std::fs::write(dir.path().join("a.txt"), "ours\n").unwrap();
        git.commit_all("ours").await.unwrap();
        let outcome = git.merge("other", "merge other").await.unwrap();
        assert_eq!(outcome, MergeOutcome::Conflict(vec!["a.txt".to_string()]));
        assert!(git.merge_in_progress().await.unwrap());
    }
}

/// HTTPS credentials for Autodev's own git calls (clone, fetch, push of a project's clone URL).
///
/// A token is given to git as `http.<prefix>.extraHeader` through `GIT_CONFIG_COUNT` /
/// `GIT_CONFIG_KEY_n` / `GIT_CONFIG_VALUE_n` in the command's environment: never in argv (which
/// any user can list), a remote URL, `.git/config` or a log. Agents' commands never see it:
/// they run in sandboxes with an environment of their own, and git calls in agents'
/// worktrees do not get it either.
pub mod credentials {
    use std::sync::RwLock;

    use base64::Engine as _;
    use secrecy::{ExposeSecret, SecretString};

    /// The headers Autodev's own git calls send, by URL prefix. One per process, shared (an
    /// `Arc`) by whoever clones, fetches and pushes (the engine, the code index) and whoever
    /// learns tokens (the configuration, a GitHub App's installation tokens as they are minted);
    /// given to a [`super::Git`] with [`super::Git::with_credentials`].
    #[derive(Default)]
    pub struct Credentials {
        headers: RwLock<Vec<(String, SecretString)>>,
    }

    impl std::fmt::Debug for Credentials {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            let prefixes: Vec<String> =
                self.headers.read().map(|h| h.iter().map(|(p, _)| p.clone()).collect()).unwrap_or_default();
            f.debug_struct("Credentials").field("prefixes", &prefixes).finish_non_exhaustive()
        }
    }

    impl Credentials {
        /// Sends `Authorization: Basic base64(user:token)` to every URL under `prefix`
        /// (`https://github.com/`); GitHub takes user `x-access-token` with any token.
        pub fn add_basic(&self, prefix: &str, user: &str, token: &SecretString) {
            let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{}", token.expose_secret()));
            let header = SecretString::from(format!("Authorization: Basic {encoded}"));
            if let Ok(mut headers) = self.headers.write() {
                headers.retain(|(p, _)| p != prefix);
                headers.push((prefix.to_string(), header));
            }
        }

        pub(super) fn apply(&self, cmd: &mut tokio::process::Command) {
            let Ok(headers) = self.headers.read() else { return };
            if headers.is_empty() {
                return;
            }
            cmd.env("GIT_CONFIG_COUNT", headers.len().to_string());
            for (i, (prefix, header)) in headers.iter().enumerate() {
                cmd.env(format!("GIT_CONFIG_KEY_{i}"), format!("http.{prefix}.extraHeader"));
                cmd.env(format!("GIT_CONFIG_VALUE_{i}"), header.expose_secret());
            }
        }
    }
}
