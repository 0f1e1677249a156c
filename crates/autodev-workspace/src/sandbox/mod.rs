//! Running commands on an agent's behalf, isolated from the host.
//!
//! Three modes, chosen by the operator (`sandbox.mode`):
//! - [`SandboxMode::Bwrap`] (the default): one sandbox per agent built from Linux namespaces
//!   with bubblewrap. The worktree is the only writable place besides a private `/tmp`, an
//!   empty `$HOME` and the project's build caches; system and toolchain directories are
//!   read-only; nothing else of the host (the user's home, `AUTODEV_HOME`, other worktrees,
//!   sockets of local services) is there. A fresh `/proc` in a new PID namespace, a minimal
//!   `/dev`, a new network namespace unless allowed, an unprivileged uid, a new session. A
//!   small supervisor (a shell, see [`bwrap`]) runs each command inside the sandbox and kills
//!   every process the command left behind when it ends, so a command costs a fork and an
//!   exec rather than a new sandbox.
//! - [`SandboxMode::Landlock`]: each command is spawned directly, with writes confined by
//!   Landlock. Unisolated: reads, `/proc` and local sockets are the host's.
//! - [`SandboxMode::None`]: each command is spawned directly with only a scrubbed
//!   environment, a time limit and an output cap. Unisolated.
//!
//! # Layout
//! - this file: [`Sandbox`], the per-agent handle the tools use, and whether a mode is
//!   available on this host.
//! - `policy`: the mode, the policy (what a command may see and do), the environment, a
//!   command's outcome and the errors.
//! - [`bwrap`]: the bubblewrap command line and the supervisor session.
//! - [`init`]: Landlock as a second layer inside the bubblewrap sandbox.
//! - [`spawn`]: one process per command (the `landlock` and `none` modes).
//! - [`selftest`]: attacks run inside a sandbox, for `autodev doctor` and the tests.
use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod bwrap;
pub mod init;
mod policy;
pub(crate) use policy::prefix_at_line;
pub mod selftest;
pub mod spawn;

pub use spawn::{SandboxSupport, run_command};

pub use policy::{
    CommandOutcome, OUTPUT_HEAD, SandboxError, SandboxMode, SandboxPolicy, clip_stream, default_readonly,
    is_secret_name,
};

impl SandboxMode {
    /// Whether this host can run sandboxes in this mode; the error names the fix.
    pub fn check_available(self) -> Result<(), String> {
        match self {
            SandboxMode::Bwrap => bwrap::availability().clone(),
            SandboxMode::Landlock => match SandboxSupport::cached().landlock_abi {
                Some(_) => Ok(()),
                None => Err("sandbox.mode = \"landlock\" but this kernel has no Landlock (needs Linux 5.13+ with \
                             lsm=landlock); use sandbox.mode = \"bwrap\" or, knowingly, \"none\""
                    .into()),
            },
            SandboxMode::None => Ok(()),
        }
    }
}

/// One agent's sandbox: started on its first command and reused for the next ones (in the
/// `bwrap` mode), torn down when dropped. Commands run one at a time.
pub struct Sandbox {
    root: PathBuf,
    policy: SandboxPolicy,
    session: tokio::sync::Mutex<Option<bwrap::Session>>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox").field("root", &self.root).field("mode", &self.policy.mode).finish()
    }
}

impl Sandbox {
    /// A sandbox for commands in `root` (canonical, existing). Nothing starts until the first
    /// command.
    pub fn new(root: &Path, policy: SandboxPolicy) -> Self {
        Self { root: root.to_path_buf(), policy, session: tokio::sync::Mutex::new(None) }
    }

    pub fn policy(&self) -> &SandboxPolicy {
        &self.policy
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Runs `command` with `bash -c` in the root. When it ends, every process it started is
    /// gone.
    pub async fn run(&self, command: &str, timeout: Duration) -> Result<CommandOutcome, SandboxError> {
        if command.contains('\0') {
            return Err(SandboxError::Invalid("the command contains a NUL byte".into()));
        }
        match self.policy.mode {
            SandboxMode::Bwrap => {
                let mut slot = self.session.lock().await;
                if slot.is_none() {
                    *slot = Some(bwrap::Session::start(&self.root, &self.policy).await?);
                }
                let Some(session) = slot.as_mut() else {
                    return Err(SandboxError::Unavailable("the sandbox session was lost".into()));
                };
                let outcome = session.run(command, timeout).await;
                // A session whose supervisor died (timeout, a command killed it) is not
                // reused: the next command gets a fresh sandbox.
                if outcome.is_err() || !session.alive() {
                    *slot = None;
                }
                outcome
            }
            SandboxMode::Landlock | SandboxMode::None => run_command(&self.root, command, timeout, &self.policy).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox(dir: &tempfile::TempDir) -> Sandbox {
        let root = dir.path().join("ws");
        std::fs::create_dir_all(&root).unwrap();
        let root = root.canonicalize().unwrap();
        let mut policy = SandboxPolicy::new(dir.path().join("tmp"));
        policy.cache_dir = Some(dir.path().join("cache"));
        Sandbox::new(&root, policy)
    }

    #[tokio::test]
    async fn commands_run_one_after_another_in_one_sandbox() {
        let dir = tempfile::tempdir().unwrap();
        let sb = sandbox(&dir);
        let out = sb.run("echo hi; echo err >&2; exit 3", Duration::from_secs(20)).await.unwrap();
        assert_eq!((out.exit_code, out.stdout_tail.as_str(), out.stderr_tail.as_str()), (Some(3), "hi\n", "err\n"));
        assert!(out.confined);
        let out =
            sb.run("printf '%s\\n' \"a\\\\b\" 'multi\nline'; pwd; id -u; echo $HOME", Duration::from_secs(20)).await;
        let out = out.unwrap();
        assert_eq!(out.stdout_tail, format!("a\\b\nmulti\nline\n{}\n65534\n/home/agent\n", sb.root().display()));
        let out = sb.run("echo made > file.txt && cat file.txt", Duration::from_secs(20)).await.unwrap();
        assert_eq!(out.stdout_tail, "made\n");
        assert!(sb.root().join("file.txt").exists());
    }

    #[tokio::test]
    async fn a_timed_out_command_is_killed_and_the_next_one_gets_a_fresh_sandbox() {
        let dir = tempfile::tempdir().unwrap();
        let sb = sandbox(&dir);
        let started = std::time::Instant::now();
        let out = sb.run("echo before; sleep 30 & sleep 30", Duration::from_millis(500)).await.unwrap();
        assert!(out.timed_out, "{out:?}");
        assert_eq!(out.stdout_tail, "before\n");
        assert!(started.elapsed() < Duration::from_secs(5));
        let out = sb.run("echo after", Duration::from_secs(20)).await.unwrap();
        assert_eq!(out.stdout_tail, "after\n");
    }

    #[tokio::test]
    async fn the_first_error_survives_thousands_of_lines_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let sb = sandbox(&dir);
        let cmd = "echo 'error[E0425]: cannot find value `x` in this scope' >&2; \
                   for i in $(seq 1 3000); do echo \"warning: line $i of noise that follows the cause\" >&2; done; \
                   exit 101";
        let out = sb.run(cmd, Duration::from_secs(60)).await.unwrap();
        assert_eq!(out.exit_code, Some(101));
        let shown = out.render(10 * 1024);
        assert!(
            shown.starts_with("exit code 101\n--- stderr (head and tail) ---\nerror[E0425]: cannot find value"),
            "{}",
            &shown[..200]
        );
        assert!(shown.contains("line 3000 of noise"), "the tail is kept too");
        assert!(shown.len() < 11 * 1024, "{} bytes", shown.len());
        let note = shown.lines().find(|l| l.starts_with("[... ")).unwrap();
        assert!(note.contains("bytes") && note.contains("grep -n"), "{note}");
    }

    #[tokio::test]
    async fn huge_output_keeps_its_tail_and_count_without_filling_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let sb = sandbox(&dir);
        // 400 MB through stdout; the output file may never hold more than a few MiB of blocks.
        let cmd = "head -c 400000000 /dev/zero | tr '\\0' 'x' & \
                   while kill -0 $! 2>/dev/null; do du -k /run/autodev/out >&2; sleep 0.2; done; \
                   echo; echo last line";
        let out = sb.run(cmd, Duration::from_secs(120)).await.unwrap();
        assert_eq!(out.exit_code, Some(0), "{}", out.stderr_tail);
        assert_eq!(out.stdout_tail, "last line\n");
        assert_eq!(out.stdout_bytes, 400_000_000 + "\nlast line\n".len() as u64);
        // The start survived the trimming (the hole is punched after it).
        assert_eq!(out.stdout_head, "x".repeat(OUTPUT_HEAD));
        let peak_kib = out.stderr_tail.lines().filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok()).max();
        assert!(peak_kib.unwrap_or(0) < 150_000, "on disk at most {peak_kib:?} KiB");
    }

    #[tokio::test]
    async fn killing_the_supervisor_ends_only_the_sandbox() {
        let dir = tempfile::tempdir().unwrap();
        let sb = sandbox(&dir);
        // `$$` is the supervisor, `$PPID` the sandbox's init; neither is Autodev.
        let out = sb.run("kill -9 $PPID $$; sleep 1; echo survived", Duration::from_secs(20)).await.unwrap();
        assert!(!out.success(), "{out:?}");
        let out = sb.run("echo next", Duration::from_secs(20)).await.unwrap();
        assert_eq!(out.stdout_tail, "next\n");
    }

    #[tokio::test]
    async fn the_self_test_holds_in_the_bwrap_mode() {
        let dir = tempfile::tempdir().unwrap();
        let checks = selftest::run(dir.path(), SandboxPolicy::new(dir.path().join("tmp"))).await.unwrap();
        let failed: Vec<_> = checks.iter().filter(|c| !c.held).collect();
        assert!(failed.is_empty(), "{failed:#?}");
        assert!(checks.len() >= 12);
    }
}
