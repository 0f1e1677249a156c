//! Running a command on an agent's behalf: in the workspace, in its own process group (the
//! whole group is killed on timeout), with output capped to a tail, an environment built from
//! an allow-list and scrubbed of anything that looks like a secret, and — where the kernel
//! has Landlock — writes confined to the workspace, a temp dir and a few configured caches,
//! and (unless allowed) no TCP connections.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use landlock::{
    ABI, AccessFs, AccessNet, CompatLevel, Compatible, Ruleset, RulesetAttr, RulesetCreated, RulesetCreatedAttr,
    RulesetStatus, path_beneath_rules,
};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Variables passed through to commands when set. Everything else is dropped.
const PASS_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LANGUAGE",
    "TERM",
    "TZ",
    "SHELL",
    "CARGO_HOME",
    "RUSTUP_HOME",
    "RUSTUP_TOOLCHAIN",
    "GOPATH",
    "GOROOT",
    "GOCACHE",
    "GOFLAGS",
    "JAVA_HOME",
    "VIRTUAL_ENV",
    "PYENV_ROOT",
    "PYTHONPATH",
    "NODE_PATH",
    "NVM_DIR",
    "CC",
    "CXX",
];

/// Parts of a variable name that mark it as a secret; such a variable never reaches a
/// command, even when listed in `pass_env`.
const SECRET_MARKERS: &[&str] = &[
    "KEY",
    "TOKEN",
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "CREDENTIAL",
    "AUTH",
    "COOKIE",
    "SESSION",
    "DATABASE_URL",
    "PRIVATE",
];

/// Whether a variable name looks like it holds a secret.
pub fn is_secret_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    SECRET_MARKERS.iter().any(|m| upper.contains(m))
}

/// What a command may do.
#[derive(Clone, Debug)]
pub struct SandboxPolicy {
    /// A directory the command may write to and that becomes its `TMPDIR`.
    pub tmp_dir: PathBuf,
    /// More directories the command may write to (build caches such as `~/.cargo`).
    pub writable: Vec<PathBuf>,
    /// Extra variable names to pass through (still subject to the secret filter).
    pub pass_env: Vec<String>,
    /// Allow TCP connections (off by default).
    pub network: bool,
    /// Bytes kept of each stream's tail.
    pub output_cap: usize,
    /// Use Landlock where the kernel supports it.
    pub landlock: bool,
}

impl SandboxPolicy {
    pub fn new(tmp_dir: PathBuf) -> Self {
        let mut writable = Vec::new();
        if let Some(home) = std::env::var_os("HOME").map(PathBuf::from) {
            writable.push(home.join(".cache"));
            writable.push(home.join(".npm"));
            writable.push(home.join(".cargo"));
        }
        if let Some(cargo) = std::env::var_os("CARGO_HOME") {
            writable.push(PathBuf::from(cargo));
        }
        Self { tmp_dir, writable, pass_env: Vec::new(), network: false, output_cap: 64 * 1024, landlock: true }
    }

    /// The environment a command gets: the allow-list plus `pass_env`, minus secrets.
    pub fn environment(&self) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        for (name, value) in std::env::vars() {
            let listed = PASS_ENV.contains(&name.as_str())
                || name.starts_with("LC_")
                || self.pass_env.iter().any(|p| p == &name);
            if listed && !is_secret_name(&name) {
                env.insert(name, value);
            }
        }
        env.entry("PATH".into()).or_insert_with(|| "/usr/local/bin:/usr/bin:/bin".into());
        env.insert("TMPDIR".into(), self.tmp_dir.to_string_lossy().into_owned());
        env.insert("CI".into(), "true".into());
        env.insert("GIT_TERMINAL_PROMPT".into(), "0".into());
        env
    }
}

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

/// The result of a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandOutcome {
    /// `None` when killed by a signal (including our timeout).
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    pub stdout_tail: String,
    pub stderr_tail: String,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    pub duration: Duration,
    /// Whether Landlock confined this command.
    pub confined: bool,
}

impl CommandOutcome {
    pub fn success(&self) -> bool {
        self.exit_code == Some(0) && !self.timed_out
    }

    /// The text a model or a person reads: the status, then the tails of both streams,
    /// each cut to its last `max_lines` lines.
    pub fn render(&self, max_lines: usize) -> String {
        let status = if self.timed_out {
            format!("timed out after {:.1}s (process group killed)", self.duration.as_secs_f64())
        } else {
            match self.exit_code {
                Some(code) => format!("exit code {code}"),
                None => "killed by a signal".to_string(),
            }
        };
        let mut out = status;
        for (name, tail, total) in
            [("stdout", &self.stdout_tail, self.stdout_bytes), ("stderr", &self.stderr_tail, self.stderr_bytes)]
        {
            if tail.is_empty() {
                continue;
            }
            let lines: Vec<&str> = tail.lines().collect();
            let start = lines.len().saturating_sub(max_lines);
            let cut = start > 0 || total as usize > tail.len();
            out.push_str(&format!("\n--- {name}{} ---\n", if cut { " (tail)" } else { "" }));
            out.push_str(&lines[start..].join("\n"));
        }
        out
    }
}

/// Errors starting a command (not the command failing, which is a normal outcome).
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("could not start the command: {0}")]
    Spawn(#[from] std::io::Error),
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
    let abi = ABI::V5;
    let mut writable: Vec<PathBuf> = vec![root.to_path_buf(), policy.tmp_dir.clone(), "/dev".into()];
    writable.extend(policy.writable.iter().cloned());
    let build = || -> Result<RulesetCreated, landlock::RulesetError> {
        let ruleset = Ruleset::default().set_compatibility(CompatLevel::BestEffort);
        let ruleset = ruleset.handle_access(AccessFs::from_write(abi))?;
        let ruleset =
            if policy.network { ruleset } else { ruleset.handle_access(AccessNet::ConnectTcp | AccessNet::BindTcp)? };
        ruleset.create()?.add_rules(path_beneath_rules(&writable, AccessFs::from_write(abi)))
    };
    match build() {
        Ok(created) => Some(created),
        Err(e) => {
            tracing::warn!(error = %e, "could not build the Landlock ruleset; commands run unconfined");
            None
        }
    }
}

/// Runs `command` with `sh -c` (bash when present) in `root` under `policy`.
pub async fn run_command(
    root: &Path,
    command: &str,
    timeout: Duration,
    policy: &SandboxPolicy,
) -> Result<CommandOutcome, SandboxError> {
    std::fs::create_dir_all(&policy.tmp_dir)?;
    let shell = if Path::new("/bin/bash").exists() { "/bin/bash" } else { "/bin/sh" };
    let mut cmd = tokio::process::Command::new(shell);
    cmd.arg("-c")
        .arg(command)
        .current_dir(root)
        .env_clear()
        .envs(policy.environment())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut ruleset = if policy.landlock { landlock_ruleset(root, policy) } else { None };
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
    let (stdout_tail, stdout_bytes) =
        tokio::time::timeout(grace, out_task).await.ok().and_then(Result::ok).unwrap_or_default();
    let (stderr_tail, stderr_bytes) =
        tokio::time::timeout(grace, err_task).await.ok().and_then(Result::ok).unwrap_or_default();
    Ok(CommandOutcome {
        exit_code,
        timed_out,
        stdout_tail,
        stderr_tail,
        stdout_bytes,
        stderr_bytes,
        duration: started.elapsed(),
        confined,
    })
}

/// Reads a stream to its end, keeping only the last `cap` bytes (cut at a line start when
/// possible) and counting the total.
async fn read_tail<R: AsyncRead + Unpin>(stream: Option<R>, cap: usize) -> (String, u64) {
    let Some(mut stream) = stream else { return (String::new(), 0) };
    let mut kept: Vec<u8> = Vec::new();
    let mut total = 0u64;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                total += n as u64;
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
    (String::from_utf8_lossy(&kept).into_owned(), total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(dir: &Path) -> SandboxPolicy {
        SandboxPolicy::new(dir.join("tmp"))
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
        assert!(out.render(10).contains("timed out"));
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
        assert_eq!(out.stderr_tail, "done\n");
    }

    #[tokio::test]
    async fn secrets_do_not_reach_commands() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let mut p = policy(&root);
        p.pass_env = vec!["OPENAI_API_KEY".into(), "PATH".into()];
        let env = p.environment();
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
        let out = run_command(&root, &cmd, Duration::from_secs(10), &policy(&root)).await.unwrap();
        assert!(out.confined);
        assert!(root.join("inside.txt").exists());
        assert!(!target.exists(), "{out:?}");
        assert_ne!(out.exit_code, Some(0));
    }
}
