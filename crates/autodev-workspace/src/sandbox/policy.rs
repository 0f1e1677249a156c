//! The sandbox's mode and policy: what a command may see and do, the environment it gets, what
//! it comes back with, and the errors starting it.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

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

/// Bytes kept of the start of each stream, beside its tail: the first error (a compiler's,
/// a type checker's) is usually the cause, and comes first.
pub const OUTPUT_HEAD: usize = 16 * 1024;

/// The result of a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandOutcome {
    /// `None` when killed by a signal (including our timeout).
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    /// The start of each stream ([`OUTPUT_HEAD`] bytes at most), when it was longer than its
    /// tail: the bytes before the tail. Empty when the tail holds the whole stream.
    pub stdout_head: String,
    pub stderr_head: String,
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

    /// The text a model or a person reads: the status, then each stream within `budget`
    /// bytes in all (shared by the streams that have output). A stream over its share keeps
    /// its head (two fifths) and its tail, with a line between them saying how much was left
    /// out and how to see it.
    pub fn render(&self, budget: usize) -> String {
        let status = if self.timed_out {
            format!("timed out after {:.1}s (every process of the command killed)", self.duration.as_secs_f64())
        } else {
            match self.exit_code {
                Some(code) => format!("exit code {code}"),
                None => "killed by a signal".to_string(),
            }
        };
        let streams = [
            ("stdout", &self.stdout_head, &self.stdout_tail, self.stdout_bytes),
            ("stderr", &self.stderr_head, &self.stderr_tail, self.stderr_bytes),
        ];
        let shown = streams.iter().filter(|s| !s.1.is_empty() || !s.2.is_empty()).count().max(1);
        let mut out = status;
        for (name, head, tail, total) in streams {
            if head.is_empty() && tail.is_empty() {
                continue;
            }
            let (text, cut) = clip_stream(head, tail, total, budget / shown, RERUN_HINT);
            out.push_str(&format!("\n--- {name}{} ---\n", if cut { " (head and tail)" } else { "" }));
            out.push_str(text.trim_end_matches('\n'));
        }
        out
    }
}

/// How to see what was left out of a command's output.
const RERUN_HINT: &str = "to see them, run the command again piped through `grep -n PATTERN`, `head -n N`, \
                          `tail -n N` or `sed -n 'FROM,TOp'`";

/// One stream within `share` bytes: whole when it fits, else its first two fifths and its
/// last three, each cut at a line boundary where there is one, with a line saying what was
/// left out between them and `hint` (how to see it). `head` is empty when `tail` holds the
/// whole stream. Returns the text and whether anything was left out.
pub fn clip_stream(head: &str, tail: &str, total: u64, share: usize, hint: &str) -> (String, bool) {
    let whole = head.is_empty() && tail.len() as u64 >= total;
    if whole && tail.len() <= share {
        return (tail.to_string(), false);
    }
    let share = share.max(256);
    let head_src = if head.is_empty() { tail } else { head };
    let head_part = prefix_at_line(head_src, share * 2 / 5);
    // The tail part never reaches back into what the head part shows.
    let room = share.saturating_sub(head_part.len());
    let tail_floor = if head.is_empty() { head_part.len() } else { 0 };
    let tail_part = suffix_at_line(&tail[tail_floor.min(tail.len())..], room);
    let left_out = total.saturating_sub((head_part.len() + tail_part.len()) as u64);
    let lines = if whole {
        let middle = &tail[head_part.len()..tail.len() - tail_part.len()];
        format!(", {} lines", middle.matches('\n').count())
    } else {
        String::new()
    };
    let mut text = head_part.to_string();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&format!("[... {left_out} bytes{lines} left out here; {hint}]\n"));
    text.push_str(tail_part);
    (text, true)
}

/// The longest start of `text` within `max` bytes that ends at a line end (or, for a line
/// longer than that, at a character boundary).
pub(crate) fn prefix_at_line(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    match text[..end].rfind('\n') {
        Some(nl) if nl > 0 => &text[..=nl],
        _ => &text[..end],
    }
}

/// The longest end of `text` within `max` bytes that starts at a line start (or, for a line
/// longer than that, at a character boundary).
fn suffix_at_line(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    match text[start..].find('\n') {
        Some(nl) if start + nl + 1 < text.len() => &text[start + nl + 1..],
        _ => &text[start..],
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
