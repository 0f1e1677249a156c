//! `autodev doctor`: what this host supports and what is configured, each with the fix.
use std::path::Path;
use std::time::Duration;

use autodev_engine::detect;
use autodev_workspace::sandbox::{SandboxPolicy, default_readonly, selftest};
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
    for warning in &cfg.repo_warnings {
        failed |= report(Level::Warn, "config", warning);
    }
    failed |= sandbox(home, &cfg).await;
    let mut any_provider = false;
    // The provider runs use by default gets a real tool-call request: a server answering
    // `GET /models` says nothing about whether its model calls tools.
    let main_provider = cfg.provider.clone().unwrap_or_else(|| provider::default_provider(cfg.model.as_deref()));
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
        if *name == main_provider {
            match probe_tool_calls(name, &cfg, &base).await {
                Ok(said) => failed |= report(Level::Ok, &format!("provider {name}"), &said),
                Err(said) => failed |= report(Level::Warn, &format!("provider {name}"), &said),
            }
            let (level, said) = context_window(name, &cfg).await;
            failed |= report(level, "context window", &said);
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

/// The container this process runs in, if it can tell: `docker`, `podman`, `kubernetes` or
/// `container`.
fn container() -> Option<&'static str> {
    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        return Some("kubernetes");
    }
    if std::path::Path::new("/run/.containerenv").exists() {
        return Some("podman");
    }
    if std::path::Path::new("/.dockerenv").exists() {
        return Some("docker");
    }
    let cgroup = std::fs::read_to_string("/proc/1/cgroup").unwrap_or_default();
    if ["docker", "kubepods", "containerd", "libpod"].iter().any(|k| cgroup.contains(k)) {
        return Some("container");
    }
    None
}

/// The sandbox mode in force, what this host supports, and the self-test: attacks run inside
/// a real sandbox, each reported as held or not.
async fn sandbox(home: &Path, cfg: &FileConfig) -> bool {
    let mut failed = false;
    let mode = cfg.sandbox.mode.unwrap_or_default();
    let support = SandboxSupport::probe();
    let landlock = match support.landlock_abi {
        Some(abi) => format!("Landlock ABI {abi}"),
        None => "no Landlock".to_string(),
    };
    let userns = if support.user_namespaces { "user namespaces enabled" } else { "user namespaces disabled" };
    if let Some(kind) = container() {
        // Inside a container, bubblewrap's user namespaces are what the runtime's seccomp and
        // AppArmor profiles allow (README "Deploy and operate").
        if support.user_namespaces {
            failed |= report(
                Level::Ok,
                "container",
                &format!("{kind}: user namespaces allowed, agents can be isolated with bubblewrap"),
            );
        } else {
            failed |= report(
                Level::Warn,
                "container",
                &format!(
                    "{kind}: user namespaces refused by the container runtime; relax seccomp and AppArmor for this container (docker: --security-opt seccomp=unconfined --security-opt apparmor=unconfined; Kubernetes: seccompProfile and appArmorProfile Unconfined), or choose sandbox.mode = \"landlock\" (AUTODEV_SANDBOX_MODE) knowing agents are then unisolated"
                ),
            );
        }
    }
    match mode.check_available() {
        Ok(()) if mode.isolated() => {
            let layer = if autodev_workspace::sandbox::bwrap::second_layer() {
                "Landlock second layer on"
            } else {
                "no Landlock second layer"
            };
            failed |= report(
                Level::Ok,
                "sandbox",
                &format!("mode {mode}: agents isolated in namespaces ({layer}; {landlock}, {userns})"),
            )
        }
        Ok(()) => {
            failed |= report(
                Level::Warn,
                "sandbox",
                &format!(
                    "mode {mode}: agents are NOT isolated (set by the operator); install bubblewrap and use sandbox.mode = \"bwrap\""
                ),
            )
        }
        Err(why) => {
            failed |= report(Level::Fail, "sandbox", &format!("mode {mode}: {why}"));
            return failed;
        }
    }
    let readonly = cfg.sandbox.readonly.clone().unwrap_or_else(default_readonly);
    let shown: Vec<String> = readonly.iter().map(|p| p.display().to_string()).collect();
    failed |= report(Level::Ok, "sandbox read-only", &shown.join(" "));
    let scratch = home.join("tmp");
    let mut policy = SandboxPolicy::new(scratch.join("selftest-tmp")).with_mode(mode);
    policy.readonly = readonly;
    policy.hidden = vec![home.to_path_buf()];
    match selftest::run(&scratch, policy).await {
        Ok(checks) => {
            for c in checks {
                let level = if c.held {
                    Level::Ok
                } else if mode.isolated() {
                    Level::Fail
                } else {
                    Level::Warn
                };
                let verdict = if c.held { "held" } else { "NOT held" };
                failed |= report(level, "self-test", &format!("{:<42} {verdict} ({})", c.name, c.detail));
            }
        }
        Err(e) => failed |= report(Level::Fail, "self-test", &format!("could not run: {e}")),
    }
    failed
}

/// Sends one tiny request with one tool to the model runs would use, and says whether a
/// native tool call came back; when none did, asks again with the reply constrained by the
/// server's structured output (`tool_calls = "schema"`) and says which mode the server needs.
async fn probe_tool_calls(provider: &str, cfg: &FileConfig, base: &str) -> Result<String, String> {
    use autodev_domain::{CallMeta, Message, ModelRequest, ToolSpec};
    let model = cfg.model.clone().unwrap_or_else(|| provider::default_model(provider).to_string());
    let client = provider::build(provider, cfg, None, None)?;
    let ping = ToolSpec {
        name: "ping".into(),
        description: "Answers pong.".into(),
        parameters: serde_json::json!({"type": "object", "properties": {"echo": {"type": "string"}}, "required": ["echo"], "additionalProperties": false}),
    };
    let mut request = ModelRequest {
        model: model.clone(),
        messages: vec![
            Message::system(
                "Autodev doctor is checking that this model calls tools. Call the `ping` tool with echo set to \"pong\"; do not answer in text.",
            ),
            Message::user("ping"),
        ],
        tools: vec![ping.clone()],
        max_output_tokens: 64,
        meta: CallMeta { conversation: "doctor".into(), turn: 0 },
        response_schema: None,
    };
    let ask = |request: ModelRequest| {
        let client = client.clone();
        async move {
            match tokio::time::timeout(Duration::from_secs(60), client.complete(&request)).await {
                Err(_) => Err(format!("`{}` at {base} did not answer a tool-call request within 60 s", request.model)),
                Ok(Err(e)) => Err(format!("`{}` at {base}: a tool-call request failed: {e}", request.model)),
                Ok(Ok(resp)) => Ok(resp),
            }
        }
    };
    let native = ask(request.clone()).await?;
    if native.message.tool_calls.iter().any(|c| c.name == "ping") {
        return Ok(format!("`{model}` at {base} answered a tool-call request with a native tool call"));
    }
    let said = native.message.content.chars().take(60).collect::<String>();
    let unconstrained = format!("`{model}` at {base} answered in text, without a native tool call ({said:?})");
    if !client.structured_output() {
        return Err(format!(
            "{unconstrained}: agents need tool calls; it may not support them on this server (for llama.cpp: start it with `--jinja` and use a tool-capable model; for Ollama: a model with tool support)"
        ));
    }
    // The same question, the tool described in the prompt and the reply constrained to a call.
    request.messages[0].content.push_str(&autodev_engine::prompts::text_tools(std::slice::from_ref(&ping)));
    request.response_schema = Some(autodev_engine::prompts::reply_schema(std::slice::from_ref(&ping)));
    request.tools.clear();
    let constrained = ask(request).await;
    let valid = constrained.as_ref().ok().and_then(|r| {
        let v: serde_json::Value = serde_json::from_str(r.message.content.trim()).ok()?;
        (v["name"] == "ping" && v["arguments"]["echo"].is_string()).then_some(())
    });
    match (valid, constrained) {
        (Some(()), _) => Ok(format!(
            "{unconstrained}; constrained by structured output (response_format) it made a valid tool call: runs use tool_calls = \"schema\" (`auto` turns to it after the first text reply; set it to skip that turn)"
        )),
        (None, Ok(r)) => Err(format!(
            "{unconstrained}, and constrained by structured output it still did not ({:?}): this server ignores `response_format`; for llama.cpp start it with `--jinja`, for Ollama use 0.5 or later, or use a tool-capable model",
            r.message.content.chars().take(60).collect::<String>()
        )),
        (None, Err(e)) => Err(format!("{unconstrained}; a request with structured output failed too: {e}")),
    }
}

/// The window runs will size their prompts and outputs to, and where it comes from: the
/// `context_window` setting, the price table (with the configuration's overrides), what the
/// server says (llama.cpp `/props`, Ollama `/api/show`), or the conservative default.
async fn context_window(provider: &str, cfg: &FileConfig) -> (Level, String) {
    let model = cfg.model.clone().unwrap_or_else(|| provider::default_model(provider).to_string());
    if let Some(w) = cfg.context_window {
        return (Level::Ok, format!("{w} tokens for `{model}` (the context_window setting)"));
    }
    if let Some(w) = autodev_llm::PriceTable::with_overrides(&cfg.prices).known_context_window(&model) {
        return (Level::Ok, format!("{w} tokens for `{model}` (the price table)"));
    }
    let served = match provider::build(provider, cfg, None, None) {
        Ok(client) => tokio::time::timeout(Duration::from_secs(15), client.context_window(&model)).await.ok().flatten(),
        Err(_) => None,
    };
    match served {
        Some(w) => (Level::Ok, format!("{w} tokens for `{model}` (reported by the server)")),
        None => (
            Level::Warn,
            format!(
                "{} tokens assumed for `{model}`: neither the price table nor the server says; set context_window \
                 (the server's real window: too large a guess is cut or refused)",
                autodev_llm::DEFAULT_CONTEXT_WINDOW
            ),
        ),
    }
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
