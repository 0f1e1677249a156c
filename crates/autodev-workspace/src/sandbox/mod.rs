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
//! - this file: the mode, the policy (what a command may see and do), the environment, and
//!   [`Sandbox`], the per-agent handle the tools use.
//! - [`bwrap`]: the bubblewrap command line and the supervisor session.
//! - [`init`]: Landlock as a second layer inside the bubblewrap sandbox.
//! - [`spawn`]: one process per command (the `landlock` and `none` modes).
//! - [`selftest`]: attacks run inside a sandbox, for `autodev doctor` and the tests.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub mod bwrap;
pub mod init;
pub mod selftest;
pub mod spawn;

pub use spawn::{SandboxSupport, run_command};

/// Variables passed through to commands when set. Everything else is dropped. `HOME`,
/// `TMPDIR` and the cache variables are set by the sandbox itself.
const PASS_ENV: &[&str] = &[
    "PATH",
    "USER",
    "LOGNAME",
    "LANG",
    "LANGUAGE",
    "TERM",
    "TZ",
    "SHELL",
    "RUSTUP_TOOLCHAIN",
    "GOROOT",
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

/// How agent commands are isolated. Only the operator chooses (config file in
/// `AUTODEV_HOME` or `--config`, `AUTODEV_SANDBOX_MODE`); a repository cannot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxMode {
    /// Linux namespaces through bubblewrap: the only isolated mode.
    #[default]
    Bwrap,
    /// Landlock write confinement only; flagged as unisolated.
    Landlock,
    /// No confinement beyond a scrubbed environment; flagged as unisolated.
    None,
}

impl SandboxMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxMode::Bwrap => "bwrap",
            SandboxMode::Landlock => "landlock",
            SandboxMode::None => "none",
        }
    }

    /// Whether agents are isolated from the host in this mode.
    pub fn isolated(self) -> bool {
        match self {
            SandboxMode::Bwrap => true,
            SandboxMode::Landlock | SandboxMode::None => false,
        }
    }

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

impl std::fmt::Display for SandboxMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for SandboxMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "bwrap" => Ok(SandboxMode::Bwrap),
            "landlock" => Ok(SandboxMode::Landlock),
            "none" => Ok(SandboxMode::None),
            other => Err(format!("unknown sandbox mode `{other}`: use bwrap, landlock or none")),
        }
    }
}

/// What a command may see and do.
#[derive(Clone, Debug)]
pub struct SandboxPolicy {
    pub mode: SandboxMode,
    /// A host directory under which each sandbox keeps its private `/tmp` and its I/O files
    /// (removed when the sandbox ends). In the unisolated modes, the commands' `TMPDIR`.
    pub tmp_dir: PathBuf,
    /// The project's build caches (read-write): `CARGO_HOME`, `npm_config_cache`,
    /// `PIP_CACHE_DIR`, `GOCACHE`, `GOMODCACHE` and `XDG_CACHE_HOME` point below it.
    pub cache_dir: Option<PathBuf>,
    /// System and toolchain directories, read-only inside the sandbox.
    pub readonly: Vec<PathBuf>,
    /// Directories hidden (an empty tmpfs) even where they lie inside a read-only one:
    /// `AUTODEV_HOME` and the user's checkout, whatever the read-only list says.
    pub hidden: Vec<PathBuf>,
    /// More directories the command may write to (operator configuration only).
    pub writable: Vec<PathBuf>,
    /// Extra variable names to pass through (still subject to the secret filter).
    pub pass_env: Vec<String>,
    /// Allow network access (off by default).
    pub network: bool,
    /// Bytes kept of each stream's tail.
    pub output_cap: usize,
}

impl SandboxPolicy {
    /// The default policy: bubblewrap, the detected toolchains read-only, no cache.
    pub fn new(tmp_dir: PathBuf) -> Self {
        Self {
            mode: SandboxMode::default(),
            tmp_dir,
            cache_dir: None,
            readonly: default_readonly(),
            hidden: Vec::new(),
            writable: Vec::new(),
            pass_env: Vec::new(),
            network: false,
            output_cap: 64 * 1024,
        }
    }

    pub fn with_mode(mut self, mode: SandboxMode) -> Self {
        self.mode = mode;
        self
    }

    /// The environment a command gets: the allow-list plus `pass_env`, minus secrets, with
    /// `HOME`, `TMPDIR`, the caches and the toolchain homes set by the sandbox.
    pub fn environment(&self, home: &Path, tmp: &Path) -> BTreeMap<String, String> {
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
        env.insert("HOME".into(), home.display().to_string());
        env.insert("TMPDIR".into(), tmp.display().to_string());
        env.insert("CI".into(), "true".into());
        env.insert("GIT_TERMINAL_PROMPT".into(), "0".into());
        // Toolchain homes that would otherwise be looked up under $HOME.
        if let Some(rustup) = toolchain_dir("RUSTUP_HOME", ".rustup") {
            env.insert("RUSTUP_HOME".into(), rustup.display().to_string());
        }
        if let Some(pyenv) = toolchain_dir("PYENV_ROOT", ".pyenv") {
            env.insert("PYENV_ROOT".into(), pyenv.display().to_string());
        }
        if let Some(cache) = &self.cache_dir {
            for (var, sub) in CACHE_VARS {
                env.insert((*var).into(), cache.join(sub).display().to_string());
            }
        }
        env
    }
}

/// Cache variables and their directory below the project's cache.
pub(crate) const CACHE_VARS: &[(&str, &str)] = &[
    ("CARGO_HOME", "cargo"),
    ("npm_config_cache", "npm"),
    ("PIP_CACHE_DIR", "pip"),
    ("GOCACHE", "go-build"),
    ("GOMODCACHE", "go-mod"),
    ("XDG_CACHE_HOME", "xdg"),
];

/// A toolchain directory: `$VAR`, else `~/<dot>`, when it exists.
fn toolchain_dir(var: &str, dot: &str) -> Option<PathBuf> {
    let dir = std::env::var_os(var)
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(dot)))?;
    dir.is_dir().then_some(dir)
}

/// The host's `CARGO_HOME` (`$CARGO_HOME`, else `~/.cargo`), when it exists.
pub(crate) fn host_cargo_home() -> Option<PathBuf> {
    toolchain_dir("CARGO_HOME", ".cargo")
}

/// System and toolchain directories that exist on this host: what a sandbox sees read-only
/// unless the operator gives another list. Never a whole home directory: from `~/.cargo`
/// only `bin` (its `credentials.toml` holds a registry token), the rustup, pyenv and nvm
/// installs whole.
pub fn default_readonly() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt"]
        .iter()
        .map(PathBuf::from)
        .collect();
    if let Some(cargo) = host_cargo_home() {
        dirs.push(cargo.join("bin"));
    }
    for (var, dot) in [("RUSTUP_HOME", ".rustup"), ("PYENV_ROOT", ".pyenv"), ("NVM_DIR", ".nvm")] {
        if let Some(d) = toolchain_dir(var, dot) {
            dirs.push(d);
        }
    }
    if let Some(go) = std::env::var_os("GOROOT").map(PathBuf::from) {
        dirs.push(go);
    }
    dirs.retain(|d| d.symlink_metadata().is_ok());
    dirs
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
    /// The mode the command ran in.
    pub mode: SandboxMode,
    /// Whether the command was confined (bwrap, or Landlock where enforced).
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
            format!("timed out after {:.1}s (every process of the command killed)", self.duration.as_secs_f64())
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
    /// The process could not be started. An I/O problem on the host; retrying may help.
    #[error("could not start the command: {0}")]
    Spawn(#[from] std::io::Error),
    /// The sandbox cannot be built on this host; the text names the fix. Nothing ran.
    #[error("the sandbox is unavailable: {0}")]
    Unavailable(String),
    /// The command is not something a shell can be given (a NUL byte).
    #[error("{0}")]
    Invalid(String),
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
