//! The `bwrap` mode: one bubblewrap sandbox per agent, with a supervisor inside that runs
//! the agent's commands one after another.
//!
//! Starting a sandbox costs about 11 ms here (namespaces, mounts); a command inside a running
//! one costs a fork: the supervisor runs it with `eval` in a subshell (about 1 ms for `echo
//! hi`, against 2 ms for spawning `bash -c` from Autodev; `exec bash -c` inside cost 2.4 ms).
//! The command sees what `bash -c` would give it, except that `$$` is the supervisor's pid.
//! The supervisor is a short bash script (a persistent
//! shell, as SWE-agent keeps one) because bash is in every sandbox already; a compiled helper
//! would have to be found and mounted. Its protocol, one line each way:
//! - in (its stdin): `<seq> <command>`, the command with `\`, control bytes and DEL escaped
//!   as `\\` and `\xHH` (undone with `printf %b`), so one line carries any command;
//! - out (its stdout): `<seq> <status>` once the command and everything it started are gone.
//!
//! The command's stdout and stderr go to two files in a directory shared with the host (the
//! host reads their tails; opening them never follows a link). After each command the
//! supervisor kills every other process in the PID namespace (`kill -9 -1` until none is
//! left), so nothing a command started — a daemon, a `setsid` child — outlives it. A command
//! that kills the supervisor ends the sandbox; the next command gets a new one. A command can
//! reach the supervisor's pipes through `/proc` and forge its own reply: that gives it nothing
//! it did not have, since it chooses its own exit status and output anyway. On a timeout
//! the host kills bubblewrap, and with it (`--die-with-parent`, PID namespace) everything in
//! the sandbox.
use std::ffi::OsString;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};

use super::policy::{
    CACHE_VARS, CommandOutcome, OUTPUT_HEAD, SandboxError, SandboxMode, SandboxPolicy, host_cargo_home,
};

/// Where the shared I/O directory appears inside the sandbox.
const IO_DIR: &str = "/run/autodev";
/// The sandbox's `$HOME`: an empty tmpfs.
pub const HOME_DIR: &str = "/home/agent";
/// The unprivileged uid and gid commands run as (`nobody`), also when Autodev is root.
pub const SANDBOX_UID: u32 = 65534;

/// The supervisor. `$1` is the worktree. See the module docs for the protocol.
const SUPERVISOR: &str = r#"
wt=$1
io=/run/autodev
while IFS= read -r line; do
  seq=${line%% *}
  printf -v cmd '%b' "${line#* }"
  ( cd -- "$wt" 2>/dev/null; unset wt io line seq rc n; set --; eval "unset cmd; $cmd" ) </dev/null >"$io/out" 2>"$io/err"
  rc=$?
  n=0
  while kill -9 -1 2>/dev/null && [ $n -lt 10000 ]; do n=$((n+1)); done
  printf '%s %s\n' "$seq" "$rc"
done
"#;

/// The bubblewrap binary: `AUTODEV_BWRAP` (an absolute path, operator environment only), else
/// looked up in fixed system directories (never the user's PATH).
pub fn binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("AUTODEV_BWRAP").map(PathBuf::from) {
        return (path.is_absolute() && path.is_file()).then_some(path);
    }
    ["/usr/bin/bwrap", "/usr/local/bin/bwrap", "/bin/bwrap"].iter().map(PathBuf::from).find(|p| p.is_file())
}

/// Whether a sandbox can be built here, probed once per process by starting one and running
/// `true` in it. The error names the fix.
pub fn availability() -> &'static Result<(), String> {
    static AVAILABLE: OnceLock<Result<(), String>> = OnceLock::new();
    AVAILABLE.get_or_init(probe)
}

fn probe() -> Result<(), String> {
    let Some(bwrap) = binary() else {
        return Err("bubblewrap is not installed: install it (Debian/Ubuntu `apt-get install bubblewrap`, Fedora \
                    `dnf install bubblewrap`), or run each worker in its own container and set sandbox.mode = \
                    \"landlock\" or \"none\" knowingly"
            .into());
    };
    let dir = tempfile_dir().map_err(|e| format!("cannot create a probe directory: {e}"))?;
    let root = dir.join("root");
    let policy = SandboxPolicy::new(dir.join("state"));
    let dirs = SessionDirs::create(&policy).map_err(|e| format!("cannot create a probe directory: {e}"))?;
    std::fs::create_dir_all(&root).map_err(|e| format!("cannot create a probe directory: {e}"))?;
    let out = std::process::Command::new(&bwrap)
        .args(args(&root, &policy, &dirs))
        .arg("/bin/true")
        .env_clear()
        .stdin(Stdio::null())
        .output();
    drop(dirs);
    let _ = std::fs::remove_dir_all(&dir);
    match out {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(explain(&String::from_utf8_lossy(&out.stderr))),
        Err(e) => Err(format!("cannot run {}: {e}", bwrap.display())),
    }
}

fn tempfile_dir() -> std::io::Result<PathBuf> {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "autodev-bwrap-probe-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// bubblewrap's complaint, with the fix for the usual causes.
fn explain(stderr: &str) -> String {
    let stderr = stderr.trim();
    let fix = if stderr.contains("namespace") || stderr.contains("Operation not permitted") {
        "user namespaces look disabled: allow them (`sysctl -w kernel.unprivileged_userns_clone=1` and \
         user.max_user_namespaces > 0; on Ubuntu 24.04+ `sysctl -w kernel.apparmor_restrict_unprivileged_userns=0` \
         or an AppArmor profile for bwrap; in Docker `--security-opt seccomp=unconfined --security-opt \
         apparmor=unconfined`), or run each worker in its own container and set sandbox.mode = \"landlock\" or \
         \"none\" knowingly"
    } else {
        "see `autodev doctor`; or set sandbox.mode = \"landlock\" or \"none\" knowingly"
    };
    format!("bubblewrap could not build a sandbox ({stderr}): {fix}")
}

/// Files under `/etc` that others may not read on the host (`shadow`, ssh host keys, …):
/// inside the sandbox they are empty. Commands run with a uid that maps to Autodev's own, so
/// a read-only bind alone would let them read what Autodev's user may read.
fn etc_secrets() -> &'static [(PathBuf, bool)] {
    static SECRETS: OnceLock<Vec<(PathBuf, bool)>> = OnceLock::new();
    SECRETS.get_or_init(|| {
        let mut found = Vec::new();
        let mut stack = vec![PathBuf::from("/etc")];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries.flatten() {
                let Ok(meta) = entry.path().symlink_metadata() else { continue };
                use std::os::unix::fs::PermissionsExt;
                let mode = meta.permissions().mode();
                if meta.is_dir() {
                    if mode & 0o005 != 0o005 {
                        found.push((entry.path(), true));
                    } else if found.len() < 10_000 {
                        stack.push(entry.path());
                    }
                } else if meta.is_file() && mode & 0o004 == 0 {
                    found.push((entry.path(), false));
                }
            }
        }
        found.sort();
        found
    })
}

/// A sandbox's host-side directories: its private `/tmp` and the I/O directory.
pub(crate) struct SessionDirs {
    base: PathBuf,
}

impl SessionDirs {
    pub(crate) fn create(policy: &SandboxPolicy) -> std::io::Result<Self> {
        static N: AtomicU64 = AtomicU64::new(0);
        let base = policy.tmp_dir.join(format!("sb-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
        std::fs::create_dir_all(base.join("tmp"))?;
        std::fs::create_dir_all(base.join("io"))?;
        if let Some(cache) = &policy.cache_dir {
            for (_, sub) in CACHE_VARS {
                std::fs::create_dir_all(cache.join(sub))?;
            }
        }
        Ok(Self { base })
    }

    fn tmp(&self) -> PathBuf {
        self.base.join("tmp")
    }

    fn io(&self) -> PathBuf {
        self.base.join("io")
    }
}

impl Drop for SessionDirs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

fn push(args: &mut Vec<OsString>, items: &[&std::ffi::OsStr]) {
    args.extend(items.iter().map(|s| s.to_os_string()));
}

/// The bubblewrap arguments for a sandbox on `root`, up to and including `--`.
pub(crate) fn args(root: &Path, policy: &SandboxPolicy, dirs: &SessionDirs) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    let uid = SANDBOX_UID.to_string();
    for flag in [
        "--die-with-parent",
        "--new-session",
        "--unshare-user",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
    ] {
        a.push(flag.into());
    }
    if !policy.network {
        a.push("--unshare-net".into());
    }
    push(&mut a, &["--uid".as_ref(), uid.as_ref(), "--gid".as_ref(), uid.as_ref()]);
    push(&mut a, &["--hostname".as_ref(), "autodev-sandbox".as_ref()]);
    push(&mut a, &["--cap-drop".as_ref(), "ALL".as_ref()]);
    // System and toolchain directories, read-only; merged-/usr symlinks stay symlinks.
    for dir in &policy.readonly {
        match std::fs::read_link(dir) {
            Ok(target) => push(&mut a, &["--symlink".as_ref(), target.as_os_str(), dir.as_os_str()]),
            Err(_) if dir.is_dir() || dir.is_file() => {
                push(&mut a, &["--ro-bind".as_ref(), dir.as_os_str(), dir.as_os_str()])
            }
            Err(_) => {}
        }
    }
    if policy.readonly.iter().any(|d| Path::new("/etc").starts_with(d)) {
        for (path, is_dir) in etc_secrets() {
            if *is_dir {
                push(&mut a, &["--tmpfs".as_ref(), path.as_os_str()]);
            } else {
                push(&mut a, &["--ro-bind".as_ref(), "/dev/null".as_ref(), path.as_os_str()]);
            }
        }
    }
    for dir in &policy.hidden {
        if policy.readonly.iter().any(|r| dir.starts_with(r)) && dir.is_dir() {
            push(&mut a, &["--tmpfs".as_ref(), dir.as_os_str()]);
        }
    }
    // A minimal /dev (null, zero, random, tty, pts), read-only but for /dev/shm.
    push(&mut a, &["--dev".as_ref(), "/dev".as_ref(), "--tmpfs".as_ref(), "/dev/shm".as_ref()]);
    push(&mut a, &["--remount-ro".as_ref(), "/dev".as_ref(), "--proc".as_ref(), "/proc".as_ref()]);
    let tmp = dirs.tmp();
    push(&mut a, &["--bind".as_ref(), tmp.as_os_str(), "/tmp".as_ref()]);
    push(&mut a, &["--tmpfs".as_ref(), HOME_DIR.as_ref()]);
    if let Some(cache) = &policy.cache_dir {
        push(&mut a, &["--bind".as_ref(), cache.as_os_str(), cache.as_os_str()]);
        // The host's downloaded crates, read-only, so an offline build finds its
        // dependencies; what the project downloads itself stays in its own cache.
        if let Some(registry) = host_cargo_home().map(|c| c.join("registry")).filter(|r| r.is_dir()) {
            let inside = cache.join("cargo/registry");
            push(&mut a, &["--ro-bind".as_ref(), registry.as_os_str(), inside.as_os_str()]);
        }
    }
    for dir in &policy.writable {
        if dir.exists() {
            push(&mut a, &["--bind".as_ref(), dir.as_os_str(), dir.as_os_str()]);
        }
    }
    push(&mut a, &["--bind".as_ref(), root.as_os_str(), root.as_os_str()]);
    // The worktree's `.git` file names the git directory Autodev's own git trusts: read-only,
    // and as a mount point it cannot be removed or renamed either (a `.git` directory, in a
    // root that is a repository of its own, is read-only the same way).
    let dot_git = root.join(".git");
    if dot_git.symlink_metadata().is_ok_and(|m| m.is_file() || m.is_dir()) {
        push(&mut a, &["--ro-bind".as_ref(), dot_git.as_os_str(), dot_git.as_os_str()]);
    }
    let io = dirs.io();
    push(&mut a, &["--bind".as_ref(), io.as_os_str(), IO_DIR.as_ref()]);
    if let Some(helper) = super::init::helper() {
        push(&mut a, &["--ro-bind".as_ref(), helper.as_os_str(), super::init::HELPER_INSIDE.as_ref()]);
    }
    // The sandbox's own root (a tmpfs holding the mount points) is read-only too: the only
    // writable places are the ones bound above.
    push(&mut a, &["--remount-ro".as_ref(), "/".as_ref(), "--chdir".as_ref(), root.as_os_str()]);
    a.push("--".into());
    a
}

/// The Landlock init before the supervisor (see [`super::init`]), when a helper is there:
/// writes only where the sandbox binds something writable.
fn init_args(root: &Path, policy: &SandboxPolicy) -> Vec<OsString> {
    if super::init::helper().is_none() {
        return Vec::new();
    }
    let mut a: Vec<OsString> = vec![super::init::HELPER_INSIDE.into(), super::init::INIT_ARG.into()];
    if policy.network {
        a.push("--network".into());
    }
    let mut writable: Vec<PathBuf> =
        vec![root.to_path_buf(), "/tmp".into(), HOME_DIR.into(), IO_DIR.into(), "/dev".into()];
    writable.extend(policy.cache_dir.iter().cloned());
    writable.extend(policy.writable.iter().filter(|d| d.exists()).cloned());
    for dir in writable {
        a.push("--write".into());
        a.push(dir.into());
    }
    a.push("--".into());
    a
}

/// Whether commands get Landlock as a second layer inside the namespaces.
pub fn second_layer() -> bool {
    super::init::helper().is_some()
}

/// A running sandbox and its supervisor.
pub struct Session {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    dirs: SessionDirs,
    seq: u64,
    alive: bool,
    output_cap: usize,
    started: Instant,
}

impl Session {
    /// Starts the sandbox and its supervisor. Fails when bubblewrap cannot run here.
    pub async fn start(root: &Path, policy: &SandboxPolicy) -> Result<Self, SandboxError> {
        if let Err(why) = availability() {
            return Err(SandboxError::Unavailable(why.clone()));
        }
        let bwrap = binary().ok_or_else(|| SandboxError::Unavailable("bubblewrap is not installed".into()))?;
        std::fs::create_dir_all(&policy.tmp_dir)?;
        let dirs = SessionDirs::create(policy)?;
        let stderr = std::fs::File::create(dirs.base.join("bwrap.err"))?;
        let mut cmd = tokio::process::Command::new(bwrap);
        cmd.args(args(root, policy, &dirs)).args(init_args(root, policy));
        cmd.args(["/bin/bash", "--noprofile", "--norc", "-c", SUPERVISOR, "bash"])
            .arg(root)
            .env_clear()
            .envs(policy.environment(Path::new(HOME_DIR), Path::new("/tmp")))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd.spawn()?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(SandboxError::Unavailable("the sandbox's pipes could not be set up".into()));
        };
        Ok(Self {
            child,
            stdin,
            stdout: BufReader::new(stdout),
            dirs,
            seq: 0,
            alive: true,
            output_cap: policy.output_cap,
            started: Instant::now(),
        })
    }

    /// Whether the supervisor is still there to take the next command.
    pub fn alive(&self) -> bool {
        self.alive
    }

    /// How long this sandbox has been running.
    pub fn age(&self) -> Duration {
        self.started.elapsed()
    }

    /// Runs one command; see the module docs.
    pub async fn run(&mut self, command: &str, timeout: Duration) -> Result<CommandOutcome, SandboxError> {
        let started = Instant::now();
        self.seq += 1;
        let mut line = format!("{} ", self.seq);
        escape_into(&mut line, command);
        line.push('\n');
        let sent = self.stdin.write_all(line.as_bytes()).await.and(self.stdin.flush().await);
        if let Err(e) = sent {
            self.kill().await;
            return Err(self.start_error(e.to_string()).await);
        }
        let mut reply = String::new();
        let read = {
            let deadline = tokio::time::sleep(timeout);
            tokio::pin!(deadline);
            // Not at once: a short command never pays for a trim.
            let mut trim = tokio::time::interval_at(tokio::time::Instant::now() + TRIM_EVERY, TRIM_EVERY);
            let line = self.stdout.read_line(&mut reply);
            tokio::pin!(line);
            loop {
                tokio::select! {
                    r = &mut line => break Ok(r),
                    _ = &mut deadline => break Err(()),
                    _ = trim.tick() => {
                        for name in ["out", "err"] {
                            trim_file(&self.dirs.io().join(name), self.output_cap);
                        }
                    }
                }
            }
        };
        let (exit_code, timed_out) = match read {
            Ok(Ok(n)) if n > 0 => match parse_reply(&reply, self.seq) {
                Some(rc) => (Some(rc), false),
                None => {
                    // Only the supervisor writes here; anything else means it is gone.
                    self.kill().await;
                    (None, false)
                }
            },
            Ok(Ok(_)) | Ok(Err(_)) => {
                // The supervisor ended: a command killed it, or the sandbox never started.
                self.kill().await;
                if self.seq == 1 && !self.dirs.io().join("out").exists() {
                    return Err(self.start_error(String::new()).await);
                }
                (None, false)
            }
            Err(()) => {
                self.kill().await;
                (None, true)
            }
        };
        let (stdout_head, stdout_tail, stdout_bytes) = read_tail_file(&self.dirs.io().join("out"), self.output_cap);
        let (stderr_head, stderr_tail, stderr_bytes) = read_tail_file(&self.dirs.io().join("err"), self.output_cap);
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
            mode: SandboxMode::Bwrap,
            confined: true,
        })
    }

    async fn start_error(&mut self, detail: String) -> SandboxError {
        let _ = self.child.wait().await;
        let stderr = std::fs::read_to_string(self.dirs.base.join("bwrap.err")).unwrap_or_default();
        let text = if stderr.trim().is_empty() { detail } else { stderr };
        SandboxError::Unavailable(explain(&text))
    }

    /// Kills bubblewrap; its init, and so every process in the sandbox, dies with it.
    async fn kill(&mut self) {
        self.alive = false;
        if let Some(pid) = self.child.id() {
            // SAFETY: killpg on the process group made for bubblewrap (process_group(0));
            // a stale id only returns ESRCH.
            unsafe {
                libc::killpg(pid as libc::pid_t, libc::SIGKILL);
            }
        }
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// How often a running command's output files are trimmed. A fast writer fills the file at
/// disk speed between two trims (seen: 400 MB in 0.7 s, so 250 ms let ~200 MB pile up); at 50 ms
/// it stays within a few tens of MB, for one `stat` per running command per tick.
const TRIM_EVERY: Duration = Duration::from_millis(50);

/// Keeps a command's output file from filling the disk: once it is past a few times the tail
/// we keep, everything between the head ([`OUTPUT_HEAD`], kept) and the tail is turned into a
/// hole (the size, and so the byte count and the writer's offset, stay; the blocks are freed).
fn trim_file(path: &Path, cap: usize) {
    let keep = (cap as u64).max(64 * 1024) * 4;
    let Ok(file) = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
    else {
        return;
    };
    let Ok(meta) = file.metadata() else { return };
    // Blocks actually allocated: a file already trimmed is mostly a hole.
    use std::os::unix::fs::MetadataExt;
    let head = OUTPUT_HEAD as u64;
    if !meta.is_file() || meta.blocks() * 512 <= keep * 2 + head {
        return;
    }
    let end = meta.len().saturating_sub(keep);
    if end <= head {
        return;
    }
    use std::os::fd::AsRawFd;
    // SAFETY: fallocate on a descriptor we own, punching a hole in [head, end) while keeping
    // the size; it does not touch our memory. An error (file system without hole punching)
    // leaves the file as it is.
    unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            head as libc::off_t,
            (end - head) as libc::off_t,
        );
    }
}

/// `<seq> <status>` for this sequence number.
fn parse_reply(reply: &str, seq: u64) -> Option<i32> {
    let (s, rc) = reply.trim_end().split_once(' ')?;
    (s.parse::<u64>().ok()? == seq).then_some(())?;
    rc.parse().ok()
}

/// Escapes a command for one protocol line (undone by bash's `printf %b`).
fn escape_into(out: &mut String, command: &str) {
    for c in command.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
}

/// The first [`OUTPUT_HEAD`] bytes (those before the tail) and the last `cap` bytes of a
/// file the command wrote (the tail cut at a line start when possible), and its size; the
/// head is empty when the tail holds it all. The file is opened without following a link and
/// must be a regular file: the directory is writable from inside the sandbox.
fn read_tail_file(path: &Path, cap: usize) -> (String, String, u64) {
    let none = || (String::new(), String::new(), 0);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path);
    let Ok(mut file) = file else { return none() };
    let Ok(meta) = file.metadata() else { return none() };
    if !meta.is_file() {
        return none();
    }
    let size = meta.len();
    let start = size.saturating_sub(cap as u64);
    let mut head = Vec::new();
    if start > 0 {
        let _ = (&mut file).take(start.min(OUTPUT_HEAD as u64)).read_to_end(&mut head);
    }
    if file.seek(SeekFrom::Start(start)).is_err() {
        return (String::from_utf8_lossy(&head).into_owned(), String::new(), size);
    }
    let mut kept = Vec::with_capacity((size - start) as usize);
    let _ = file.take(cap as u64).read_to_end(&mut kept);
    if let Some(nl) = kept.iter().position(|b| *b == b'\n').filter(|_| start > 0) {
        kept.drain(..=nl);
    }
    (String::from_utf8_lossy(&head).into_owned(), String::from_utf8_lossy(&kept).into_owned(), size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_escaped_onto_one_line() {
        let mut s = String::new();
        escape_into(&mut s, "printf 'a\\n'\necho \"é\"\t\u{7f}");
        assert_eq!(s, "printf 'a\\\\n'\\x0aecho \"é\"\\x09\\x7f");
        assert!(!s.contains('\n'));
    }

    #[test]
    fn replies_must_carry_the_sequence_number() {
        assert_eq!(parse_reply("3 0\n", 3), Some(0));
        assert_eq!(parse_reply("3 127\n", 3), Some(127));
        assert_eq!(parse_reply("2 0\n", 3), None);
        assert_eq!(parse_reply("garbage", 3), None);
    }
}
