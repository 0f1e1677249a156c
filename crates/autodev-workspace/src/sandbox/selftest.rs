//! Attacks run inside a sandbox, to show what holds on this host (`autodev doctor`) and to
//! test the sandbox itself. Each check is something an agent told by a hostile ticket would
//! try; "held" means the attack failed.
use std::path::Path;
use std::time::Duration;

use super::{Sandbox, SandboxPolicy};

/// One attack and whether the sandbox held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub held: bool,
    pub detail: String,
}

const TIMEOUT: Duration = Duration::from_secs(20);

/// Runs every check in a sandbox on a scratch worktree under `scratch` (a directory of
/// Autodev's, outside anything the sandbox should see, e.g. `AUTODEV_HOME`).
pub async fn run(scratch: &Path, policy: SandboxPolicy) -> std::io::Result<Vec<Check>> {
    let base = scratch.join(format!("selftest-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let root = base.join("worktree");
    std::fs::create_dir_all(&root)?;
    let root = root.canonicalize()?;
    let outside = base.join("outside");
    std::fs::create_dir_all(&outside)?;
    let canary = outside.join("canary.txt");
    std::fs::write(&canary, "autodev-canary-4f1c")?;
    let policy = SandboxPolicy { tmp_dir: base.join("tmp"), ..policy };
    let sandbox = Sandbox::new(&root, policy.clone());
    let mut checks = Vec::new();

    let out = sh(&sandbox, &format!("cat {} 2>&1", quote(&canary))).await;
    checks.push(Check {
        name: "read a file outside the worktree",
        held: !out.contains("autodev-canary-4f1c"),
        detail: brief(&out),
    });

    let target = outside.join("written.txt");
    let out = sh(&sandbox, &format!("(echo x > {}) 2>&1; echo done", quote(&target))).await;
    checks.push(Check { name: "write outside the worktree", held: !target.exists(), detail: brief(&out) });

    let out = sh(&sandbox, "head -c 200 /etc/shadow 2>&1").await;
    checks.push(Check {
        name: "read /etc/shadow",
        held: !out.contains("root:"),
        detail: if out.trim().is_empty() { "empty".into() } else { brief(&out) },
    });

    let tcp = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = tcp.local_addr()?.port();
    let out = sh(&sandbox, &format!("exec 3<>/dev/tcp/127.0.0.1/{port} && echo connected 2>&1")).await;
    checks.push(Check {
        name: "open a TCP connection to the host",
        held: !out.contains("connected"),
        detail: brief(&out),
    });
    drop(tcp);

    let udp = std::net::UdpSocket::bind("127.0.0.1:0")?;
    udp.set_read_timeout(Some(Duration::from_millis(300)))?;
    let port = udp.local_addr()?.port();
    let out = sh(&sandbox, &format!("echo autodev-udp > /dev/udp/127.0.0.1/{port} 2>&1; echo sent")).await;
    let mut buf = [0u8; 64];
    let received = udp.recv(&mut buf).is_ok();
    checks.push(Check { name: "send a UDP datagram to the host", held: !received, detail: brief(&out) });

    let socket_path = outside.join("s.sock");
    let unix = std::os::unix::net::UnixListener::bind(&socket_path)?;
    unix.set_nonblocking(true)?;
    let probe = format!(
        "python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); print(\"connected\")' {} 2>&1 || test -S {} && echo visible",
        quote(&socket_path),
        quote(&socket_path)
    );
    let out = sh(&sandbox, &probe).await;
    let accepted = unix.accept().is_ok();
    checks.push(Check {
        name: "connect to a unix socket of the host",
        held: !accepted && !out.contains("connected") && !out.contains("visible"),
        detail: brief(&out),
    });
    let pg = "/var/run/postgresql/.s.PGSQL.5432";
    let out = sh(&sandbox, &format!("test -S {pg} && echo visible || echo absent")).await;
    checks.push(Check {
        name: "see local database sockets",
        held: !out.contains("visible"),
        detail: format!("{pg}: {}", out.trim()),
    });

    // A process that detaches from its command must not survive it.
    let _ = sh(&sandbox, "(setsid bash -c 'exec -a autodev-leftover sleep 300' >/dev/null 2>&1 &); echo started").await;
    let out = sh(&sandbox, "grep -l 'autodev-left[o]ver' /proc/[0-9]*/cmdline 2>/dev/null | head -3; true").await;
    let leftovers = host_leftovers();
    let leftover_on_host = !leftovers.is_empty();
    checks.push(Check {
        name: "leave a process behind",
        held: out.trim().is_empty() && !leftover_on_host,
        detail: if out.trim().is_empty() && !leftover_on_host { "gone".into() } else { brief(&out) },
    });
    for pid in leftovers {
        // SAFETY: SIGKILL to a process the self-test itself started.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }

    let host_env: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
    let sandbox_env = policy.environment(Path::new("/"), Path::new("/tmp"));
    let out = sh(&sandbox, "cat /proc/1/environ /proc/$PPID/environ 2>&1 | tr '\\0' '\\n'").await;
    let leaked: Vec<&String> = host_env
        .iter()
        .filter(|pair| {
            let name = pair.split('=').next().unwrap_or("");
            !sandbox_env.contains_key(name) && pair.len() > name.len() + 1 && out.contains(pair.as_str())
        })
        .collect();
    checks.push(Check {
        name: "read Autodev's environment through /proc",
        held: leaked.is_empty(),
        detail: if leaked.is_empty() {
            "only the sandbox's own variables".into()
        } else {
            format!("{} variable(s) of Autodev visible", leaked.len())
        },
    });

    let me = std::process::id();
    let out = sh(&sandbox, &format!("kill -0 {me} 2>&1 && echo reachable")).await;
    checks.push(Check { name: "signal the Autodev process", held: !out.contains("reachable"), detail: brief(&out) });

    // Cleaned up at once where it works: the self-test must not leave nodes on a host whose
    // mode lets it make them.
    let out = sh(
        &sandbox,
        "mknod /dev/autodev-selftest-$$ c 1 3 2>&1 && echo made; rm -f /dev/autodev-selftest-$$; \
         touch /dev/autodev-selftest-f$$ 2>&1 && echo wrote; rm -f /dev/autodev-selftest-f$$",
    )
    .await;
    checks.push(Check {
        name: "create device nodes or files in /dev",
        held: !out.contains("made") && !out.contains("wrote"),
        detail: brief(&out),
    });

    let out = sh(&sandbox, "id -u").await;
    checks.push(Check { name: "run as root", held: out.trim() != "0", detail: format!("uid {}", out.trim()) });

    drop(sandbox);
    let _ = std::fs::remove_dir_all(&base);
    Ok(checks)
}

/// Host pids of processes the self-test left behind (the leftover's name is its marker).
fn host_leftovers() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c.starts_with(b"autodev-leftover")))
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
        .collect()
}

async fn sh(sandbox: &Sandbox, command: &str) -> String {
    match sandbox.run(command, TIMEOUT).await {
        Ok(out) => format!("{}{}", out.stdout_tail, out.stderr_tail),
        Err(e) => format!("error: {e}"),
    }
}

fn quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', "'\\''"))
}

fn brief(out: &str) -> String {
    let line = out.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
    line.chars().take(100).collect()
}
