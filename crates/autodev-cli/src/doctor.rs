//! `autodev doctor`: what this host supports and what is configured, each with the fix.
use std::path::Path;
use std::time::Duration;

use autodev_engine::detect;
use autodev_workspace::{Git, SandboxSupport};

use crate::cli::DoctorArgs;
use crate::config::FileConfig;
use crate::{Exit, provider};

enum Level {
    Ok,
    Warn,
    Fail,
}

fn report(level: Level, what: &str, detail: &str) -> bool {
    let (mark, failed) = match level {
        Level::Ok => ("ok  ", false),
        Level::Warn => ("warn", false),
        Level::Fail => ("FAIL", true),
    };
    println!("[{mark}] {what:<18} {detail}");
    failed
}

pub async fn doctor(home: &Path, config: Option<&Path>, args: DoctorArgs) -> Exit {
    let mut failed = false;
    match Git::version().await {
        Ok(v) => {
            let ok = v.split_whitespace().nth(2).and_then(|n| {
                let mut parts = n.split('.').filter_map(|p| p.parse::<u32>().ok());
                Some((parts.next()?, parts.next()?))
            });
            match ok {
                Some(ver) if ver >= (2, 25) => failed |= report(Level::Ok, "git", &v),
                _ => {
                    failed |= report(
                        Level::Fail,
                        "git",
                        &format!("{v}: Autodev needs git 2.25 or newer (worktrees); upgrade git"),
                    )
                }
            }
        }
        Err(e) => failed |= report(Level::Fail, "git", &format!("{e}")),
    }
    let support = SandboxSupport::probe();
    match support.landlock_abi {
        Some(abi) => {
            failed |= report(
                Level::Ok,
                "sandbox",
                &format!(
                    "Landlock ABI {abi}: agent commands can write only to their workspace; TCP blocked unless allowed"
                ),
            )
        }
        None => {
            failed |= report(
                Level::Warn,
                "sandbox",
                "Landlock unavailable (kernel < 5.13 or disabled): agent commands run with a scrubbed environment, time and output limits, but unconfined writes; use a kernel with CONFIG_SECURITY_LANDLOCK=y and lsm=landlock",
            )
        }
    }
    failed |= report(
        if support.user_namespaces { Level::Ok } else { Level::Warn },
        "user namespaces",
        if support.user_namespaces { "available" } else { "unavailable (containers often block them); not required" },
    );
    let probe = home.join(".doctor-probe");
    match std::fs::create_dir_all(home).and_then(|_| std::fs::write(&probe, b"ok")) {
        Ok(()) => {
            let _ = std::fs::remove_file(&probe);
            failed |= report(Level::Ok, "data directory", &format!("{} is writable", home.display()));
        }
        Err(e) => {
            failed |= report(
                Level::Fail,
                "data directory",
                &format!("{}: {e}; set AUTODEV_HOME to a writable directory", home.display()),
            )
        }
    }
    let cfg = match FileConfig::load(home, config, Some(&args.repo)) {
        Ok(cfg) => {
            failed |= report(Level::Ok, "config", "valid");
            cfg
        }
        Err(problems) => {
            for p in &problems {
                failed |= report(Level::Fail, "config", p);
            }
            FileConfig::default()
        }
    };
    let mut any_provider = false;
    for name in provider::PROVIDERS {
        let configured = provider::configured(name, &cfg);
        if !configured {
            continue;
        }
        any_provider = true;
        let base = provider::base_url(name, &cfg);
        if args.offline {
            failed |= report(
                Level::Ok,
                &format!("provider {name}"),
                &format!("configured at {base} (not contacted: --offline)"),
            );
            continue;
        }
        match reach(&base).await {
            Ok(status) => {
                failed |= report(Level::Ok, &format!("provider {name}"), &format!("{base} answered (HTTP {status})"))
            }
            Err(e) => {
                failed |= report(
                    Level::Warn,
                    &format!("provider {name}"),
                    &format!("{base} unreachable: {e}; check the URL, proxy and network"),
                )
            }
        }
    }
    if !any_provider {
        failed |= report(
            Level::Warn,
            "model provider",
            "none configured: set OPENAI_API_KEY (or OPENAI_BASE_URL), ANTHROPIC_API_KEY, GROQ_API_KEY or OLLAMA_HOST; `autodev demo` and --replay need none",
        );
    }
    match cfg.test_command.clone().or_else(|| detect::detect_test_command(&args.repo)) {
        Some(cmd) if !program_on_path(&cmd) => {
            let program = cmd.split_whitespace().next().unwrap_or("");
            failed |= report(
                Level::Warn,
                "test command",
                &format!("`{cmd}`: `{program}` is not on PATH; install it or set test_command"),
            )
        }
        Some(cmd) => failed |= report(Level::Ok, "test command", &format!("`{cmd}` for {}", args.repo.display())),
        None => {
            failed |= report(
                Level::Warn,
                "test command",
                &format!(
                    "none found in {}: pass --test-command or set test_command in autodev.toml",
                    args.repo.display()
                ),
            )
        }
    }
    if failed { Exit::Failed } else { Exit::Ok }
}

async fn reach(base: &str) -> Result<u16, String> {
    let client = reqwest_client().map_err(|e| e.to_string())?;
    let resp = client.get(format!("{}/models", base.trim_end_matches('/'))).send().await.map_err(|e| e.to_string())?;
    Ok(resp.status().as_u16())
}

fn reqwest_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder().timeout(Duration::from_secs(3)).build()
}

/// Whether the first word of a shell command names a program on PATH (or a path that
/// exists). Commands starting with shell syntax (`cd x && …`, `VAR=1 …`) are given the
/// benefit of the doubt.
fn program_on_path(command: &str) -> bool {
    let Some(program) = command.split_whitespace().next() else { return false };
    if program.contains('=') || ["cd", "(", "{", "!", "exec", "env"].contains(&program) {
        return true;
    }
    if program.contains('/') {
        return std::path::Path::new(program).exists();
    }
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}
