//! One process per command, for the unisolated modes (`landlock`, `none`): in the workspace,
//! in its own process group (the whole group is killed when it ends), with output capped to a
//! tail, the scrubbed environment of [`SandboxPolicy::environment`], and — in the `landlock`
//! mode — writes confined to the workspace, its temp dir, the project's caches and the
//! operator's writable list, and (unless allowed) no TCP connections.
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use landlock::{
    ABI, AccessFs, AccessNet, CompatLevel, Compatible, Ruleset, RulesetAttr, RulesetCreated, RulesetCreatedAttr,
    RulesetStatus, path_beneath_rules,
};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::policy::{CommandOutcome, OUTPUT_HEAD, SandboxError, SandboxMode, SandboxPolicy};

/// What this host offers for sandboxing, for `autodev doctor` and for warnings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxSupport {
    /// The Landlock ABI version, or `None` when the kernel lacks it or it is disabled.
    pub landlock_abi: Option<i64>,
    /// Whether unprivileged user namespaces look enabled.
    pub user_namespaces: bool,
}

impl SandboxSupport {
    /// The probe, made once per process.
    pub fn cached() -> &'static SandboxSupport {
        static SUPPORT: std::sync::OnceLock<SandboxSupport> = std::sync::OnceLock::new();
        SUPPORT.get_or_init(SandboxSupport::probe)
    }

    pub fn probe() -> Self {
        // SAFETY: landlock_create_ruleset with a null attribute, size 0 and the VERSION flag
        // only queries the ABI version; it creates nothing and touches no memory.
        let abi = unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, std::ptr::null::<u8>(), 0usize, 1u32) };
        let userns = std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .is_some_and(|n| n > 0)
            && std::fs::read_to_string("/proc/sys/kernel/unprivileged_userns_clone")
                .map(|s| s.trim() != "0")
                .unwrap_or(true);
        Self { landlock_abi: (abi > 0).then_some(abi), user_namespaces: userns }
    }
}

/// Builds the Landlock ruleset in the parent (it opens directories, which is not safe to do
/// between fork and exec); the child only calls `restrict_self`.
fn landlock_ruleset(root: &Path, policy: &SandboxPolicy) -> Option<RulesetCreated> {
    if SandboxSupport::cached().landlock_abi.is_none() {
        // Best-effort mode would "succeed" without enforcing anything; say so instead.
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            tracing::warn!(
                "this kernel has no Landlock: agent commands run without write confinement (see `autodev doctor`)"
            )
        });
        return None;
    }
    // Of /dev only the usual sinks and shared memory: with /dev whole, Autodev running as root
    // let a command make device nodes on the host.
    let mut writable: Vec<PathBuf> = vec![root.to_path_buf(), policy.tmp_dir.clone()];
    writable.extend(
        ["/dev/null", "/dev/zero", "/dev/full", "/dev/tty", "/dev/shm"]
            .iter()
            .map(PathBuf::from)
            .filter(|p| p.exists()),
    );
    writable.extend(policy.cache_dir.iter().cloned());
    writable.extend(policy.writable.iter().cloned());
    match write_ruleset(&writable, policy.network) {
        Ok(created) => Some(created),
        Err(e) => {
            tracing::warn!(error = %e, "could not build the Landlock ruleset; commands run unconfined");
            None
        }
    }
}

/// A Landlock ruleset that allows writes beneath `writable` only and, unless `network`, no
/// TCP connect or bind. Used for the `landlock` mode and as the second layer inside bwrap.
pub(crate) fn write_ruleset(writable: &[PathBuf], network: bool) -> Result<RulesetCreated, landlock::RulesetError> {
    let abi = ABI::V5;
    let ruleset = Ruleset::default().set_compatibility(CompatLevel::BestEffort);
    let ruleset = ruleset.handle_access(AccessFs::from_write(abi))?;
    let ruleset = if network { ruleset } else { ruleset.handle_access(AccessNet::ConnectTcp | AccessNet::BindTcp)? };
    ruleset.create()?.add_rules(path_beneath_rules(writable, AccessFs::from_write(abi)))
}

/// Runs `command` with `sh -c` (bash when present) in `root` under `policy`.
pub async fn run_command(
    root: &Path,
    command: &str,
    timeout: Duration,
    policy: &SandboxPolicy,
) -> Result<CommandOutcome, SandboxError> {
    std::fs::create_dir_all(&policy.tmp_dir)?;
    let home = policy.tmp_dir.join("home");
    std::fs::create_dir_all(&home)?;
    if let Some(cache) = &policy.cache_dir {
        std::fs::create_dir_all(cache)?;
    }
    let shell = if Path::new("/bin/bash").exists() { "/bin/bash" } else { "/bin/sh" };
    let mut cmd = tokio::process::Command::new(shell);
    cmd.arg("-c")
        .arg(command)
        .current_dir(root)
        .env_clear()
        .envs(policy.environment(&home, &policy.tmp_dir))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut ruleset = if policy.mode == SandboxMode::Landlock { landlock_ruleset(root, policy) } else { None };
    let confined = ruleset.is_some();
    if ruleset.is_some() {
        // SAFETY: the closure runs in the child between fork and exec. It only takes the
        // ruleset built in the parent and calls prctl(PR_SET_NO_NEW_PRIVS) and
        // landlock_restrict_self on its file descriptor; it does not allocate or lock.
        unsafe {
            cmd.pre_exec(move || {
                if let Some(rs) = ruleset.take() {
                    match rs.restrict_self() {
                        Ok(status) if status.ruleset != RulesetStatus::NotEnforced => {}
                        Ok(_) => {}
                        Err(_) => return Err(std::io::Error::other("landlock restrict_self failed")),
                    }
                }
                Ok(())
            });
        }
    }
    let started = Instant::now();
    let mut child = cmd.spawn()?;
    let pid = child.id();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let cap = policy.output_cap;
    let out_task = tokio::spawn(read_tail(stdout, cap));
    let err_task = tokio::spawn(read_tail(stderr, cap));

    let (exit_code, timed_out) = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => (status.code(), false),
        Ok(Err(e)) => return Err(SandboxError::Spawn(e)),
        Err(_) => (None, true),
    };
    // Kill the whole group: on timeout, and also after a normal exit so a background
    // process the command left behind cannot hold the pipes (and the agent) hostage.
    if let Some(pid) = pid {
        // SAFETY: killpg on the process group we created for this child (process_group(0)
        // makes the child's pid its group id). A stale group id only returns ESRCH.
        unsafe {
            libc::killpg(pid as libc::pid_t, libc::SIGKILL);
        }
    }
    let _ = child.wait().await;
    let grace = Duration::from_secs(2);
    let (stdout_head, stdout_tail, stdout_bytes) =
        tokio::time::timeout(grace, out_task).await.ok().and_then(Result::ok).unwrap_or_default();
    let (stderr_head, stderr_tail, stderr_bytes) =
        tokio::time::timeout(grace, err_task).await.ok().and_then(Result::ok).unwrap_or_default();
    Ok(CommandOutcome {
        exit_code,
        timed_out,
        stdout_head,
        stderr_head,
        stdout_tail,
        stderr_tail,
        stdout_bytes,
        stderr_bytes,
        duration: started.elapsed(),
        mode: policy.mode,
        confined,
    })
}

/// Reads a stream to its end, keeping its first [`OUTPUT_HEAD`] bytes and its last `cap`
/// (cut at a line start when possible), and counting the total: (head, tail, total), the
/// head empty when the tail holds it all.
async fn read_tail<R: AsyncRead + Unpin>(stream: Option<R>, cap: usize) -> (String, String, u64) {
    let Some(mut stream) = stream else { return (String::new(), String::new(), 0) };
    let mut head: Vec<u8> = Vec::new();
    let mut kept: Vec<u8> = Vec::new();
    let mut total = 0u64;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                total += n as u64;
                let room = OUTPUT_HEAD.saturating_sub(head.len()).min(n);
                head.extend_from_slice(&buf[..room]);
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > cap * 2 {
                    let cut = kept.len() - cap;
                    kept.drain(..cut);
                }
            }
        }
    }
    if kept.len() > cap {
        let mut cut = kept.len() - cap;
        if let Some(nl) = kept[cut..].iter().position(|b| *b == b'\n') {
            cut += nl + 1;
        }
        kept.drain(..cut);
    }
    // The head is what comes before the tail, no more.
    let before_tail = (total - kept.len() as u64).min(OUTPUT_HEAD as u64) as usize;
    head.truncate(before_tail);
    (String::from_utf8_lossy(&head).into_owned(), String::from_utf8_lossy(&kept).into_owned(), total)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::sandbox::is_secret_name;

    fn policy(dir: &Path) -> SandboxPolicy {
        SandboxPolicy::new(dir.join("tmp")).with_mode(SandboxMode::None)
    }

    #[tokio::test]
    async fn command_that_overruns_is_killed_with_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let started = Instant::now();
        let out = run_command(&root, "sleep 30 & sleep 30; echo never", Duration::from_millis(300), &policy(&root))
            .await
            .unwrap();
        assert!(out.timed_out);
        assert_eq!(out.exit_code, None);
        assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
        assert!(out.render(1024).contains("timed out"));
    }

    #[tokio::test]
    async fn output_is_capped_to_its_tail() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let mut p = policy(&root);
        p.output_cap = 1000;
        let out = run_command(&root, "seq 1 100000; echo done >&2; exit 3", Duration::from_secs(20), &p).await.unwrap();
        assert_eq!(out.exit_code, Some(3));
        assert!(out.stdout_tail.len() <= 1000);
        assert!(out.stdout_tail.ends_with("100000\n"));
        assert!(out.stdout_bytes > 500_000);
        // The head is kept too: the first lines, which usually hold the first error.
        assert!(out.stdout_head.starts_with("1\n2\n3\n"), "{}", &out.stdout_head[..20]);
        assert_eq!(out.stdout_head.len(), OUTPUT_HEAD);
        let shown = out.render(2000);
        assert!(shown.starts_with("exit code 3\n--- stdout (head and tail) ---\n1\n2\n"), "{shown}");
        assert!(shown.contains("bytes left out here"), "{shown}");
        assert!(shown.ends_with("99999\n100000\n--- stderr ---\ndone"), "{shown}");
        assert_eq!(out.stderr_tail, "done\n");
    }

    #[tokio::test]
    async fn secrets_do_not_reach_commands() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let mut p = policy(&root);
        p.pass_env = vec!["OPENAI_API_KEY".into(), "PATH".into()];
        let env = p.environment(Path::new("/home"), Path::new("/tmp"));
        assert!(env.keys().all(|k| !is_secret_name(k)), "{env:?}");
        assert!(env.contains_key("PATH"));
        let out = run_command(&root, "env", Duration::from_secs(10), &p).await.unwrap();
        for line in out.stdout_tail.lines() {
            let name = line.split('=').next().unwrap_or("");
            assert!(!is_secret_name(name), "{line}");
        }
    }

    #[tokio::test]
    #[allow(clippy::print_stderr)]
    async fn landlock_confines_writes_to_the_workspace() {
        if SandboxSupport::probe().landlock_abi.is_none() {
            eprintln!("kernel without Landlock: confinement not testable here");
            return;
        }
        let outside = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let target = outside.path().join("escaped");
        let cmd = format!("echo hi > inside.txt && echo x > {}", target.display());
        let p = policy(&root).with_mode(SandboxMode::Landlock);
        let out = run_command(&root, &cmd, Duration::from_secs(10), &p).await.unwrap();
        assert!(out.confined);
        assert!(root.join("inside.txt").exists());
        assert!(!target.exists(), "{out:?}");
        assert_ne!(out.exit_code, Some(0));
    }
}
