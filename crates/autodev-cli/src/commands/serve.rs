//! `autodev serve`, `worker` and `mcp`: the service state built from the configuration, the
//! workers, the delivery loop and graceful shutdown.
use crate::config::FileConfig;
use crate::{Exit, provider};
use autodev_store::Migrations;
use std::path::Path;
use tokio_util::sync::CancellationToken;

use crate::context::*;

/// `autodev serve`: the HTTP API until SIGINT or SIGTERM.
/// The state `serve` and `worker` share, after the configuration is checked (every problem
/// listed at once) and the database opened.
pub(crate) async fn service_state(
    home: &Path,
    config: Option<&Path>,
    no_migrate: bool,
) -> Result<autodev_server::AppState, Exit> {
    let cfg = FileConfig::load(home, config, None)
        .map_err(|p| Exit::Usage(format!("invalid configuration:\n  - {}", p.join("\n  - "))))?;
    let migrations = if no_migrate { Migrations::Check } else { Migrations::Apply };
    let store = open_store_with(home, migrations).await?;
    let configured = crate::config::secret("AUTODEV_KEY_PEPPER").map_err(Exit::Usage)?;
    let pepper = autodev_server::auth::Pepper::load(configured, home).map_err(|e| Exit::Usage(e.to_string()))?;
    let secret = |name| crate::config::secret(name).map_err(Exit::Usage);
    let webhooks = autodev_server::webhooks::WebhookConfig {
        github_secret: secret("AUTODEV_GITHUB_WEBHOOK_SECRET")?,
        gitlab_token: secret("AUTODEV_GITLAB_WEBHOOK_TOKEN")?,
        jira_secret: secret("AUTODEV_JIRA_WEBHOOK_SECRET")?,
        trigger_label: cfg.trigger_label.clone(),
    };
    let delivery = crate::config::delivery_config(&cfg)
        .map_err(|p| Exit::Usage(format!("invalid configuration:\n  - {}", p.join("\n  - "))))?;
    // The process's forge credentials for git, handed to whoever clones, fetches or pushes
    // (the workers' engines, the code index) and to the GitHub clients that mint tokens.
    let credentials = crate::config::git_credentials(&delivery);
    let forges = std::sync::Arc::new(autodev_server::commanders::Forges::new(&delivery));
    let delivery = std::sync::Arc::new(autodev_delivery::Dispatcher::new(store.clone(), home, &delivery));
    let code = crate::config::code_search(home, &cfg).map_err(Exit::Usage)?;
    let engine = autodev_engine::EngineConfig {
        credentials: credentials.clone(),
        ..engine_config(&cfg, home, code.with_git_credentials(&credentials))
    };
    let mode = engine.sandbox.mode;
    if let Err(why) = mode.check_available() {
        tracing::error!("agents cannot be sandboxed on this host; every run will fail until this is fixed: {why}");
    } else if !mode.isolated() {
        tracing::warn!("{}", autodev_engine::unisolated_message(mode));
    }
    let public_url = cfg.public_url.clone().filter(|u| !u.trim().is_empty());
    Ok(autodev_server::AppState {
        base_path: autodev_server::AppState::base_path_of(public_url.as_deref()),
        public_url,
        delivery,
        forges,
        engine,
        store,
        pepper,
        home: home.to_path_buf(),
        providers_configured: provider::any_configured(&cfg),
        poll: std::time::Duration::from_millis(250),
        webhooks: std::sync::Arc::new(webhooks),
        guard: std::sync::Arc::new(autodev_server::access::Guard::new(
            cfg.rate_limit_per_minute.unwrap_or(1200),
            Some(home),
        )),
        models: std::sync::Arc::new(provider::ConfiguredModels { cfg }),
    })
}

/// `autodev mcp`: the MCP server over stdio, acting as the local operator. Runs it creates
/// are driven by `autodev serve`/`worker` processes on the same database (it starts none).
pub(crate) async fn mcp(home: &Path, config: Option<&Path>, args: crate::cli::McpArgs) -> Exit {
    let repo = match &args.repo {
        Some(r) => match r.canonicalize() {
            Ok(p) if p.join(".git").exists() => Some(p),
            _ => return Exit::Usage(format!("--repo {}: not a git repository", r.display())),
        },
        None => None,
    };
    let state = match service_state(home, config, false).await {
        Ok(s) => s,
        Err(e) => return e,
    };
    match autodev_server::mcp::serve_stdio(state, autodev_server::mcp::Local::operator(repo)).await {
        Ok(()) => Exit::Ok,
        Err(e) => {
            eprintln!("error: {e}");
            Exit::Failed
        }
    }
}

/// The delivery loop of this process, when integrations are configured (every `serve` and
/// `worker` runs one; leases keep them from delivering a milestone twice).
pub(crate) fn spawn_delivery(state: &autodev_server::AppState, shutdown: &CancellationToken) {
    if !state.delivery.is_empty() {
        tokio::spawn(state.delivery.clone().run(std::time::Duration::from_secs(1), shutdown.clone()));
    }
}

/// The periodic retention of this process (every `serve` and `worker`): old runs collected
/// every `every`, and the data directory's size in /metrics.
pub(crate) fn spawn_gc(
    state: &autodev_server::AppState,
    older_than: Option<std::time::Duration>,
    every: std::time::Duration,
    shutdown: &CancellationToken,
) {
    tokio::spawn(autodev_engine::gc::run_periodically(
        state.store.clone(),
        state.home.clone(),
        older_than,
        every,
        shutdown.clone(),
    ));
}

/// A token cancelled on SIGTERM or SIGINT.
pub(crate) fn shutdown_on_signal() -> CancellationToken {
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let term = async {
            match term.as_mut() {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term => {}
        }
        token.cancel();
    });
    shutdown
}

/// After shutdown: workers stop claiming, interrupt their runs at the next step boundary
/// and release the leases. Past the grace period the process exits anyway; the leases then
/// expire and other workers resume the runs from their recorded steps.
pub(crate) async fn drain(workers: tokio::task::JoinHandle<()>, grace: u64, who: &str) {
    if tokio::time::timeout(std::time::Duration::from_secs(grace), workers).await.is_err() {
        eprintln!("autodev {who}: runs did not stop within {grace}s (--grace); exiting, their leases will expire");
    }
}

pub async fn serve(home: &Path, config: Option<&Path>, args: crate::cli::ServeArgs) -> Exit {
    let inner = async {
        let state = service_state(home, config, args.no_migrate).await?;
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| Exit::Usage(format!("cannot listen on {}: {e} (--listen)", args.listen)))?;
        let shutdown = shutdown_on_signal();
        // The address comes last on the line: scripts (and the tests) read it from there.
        eprintln!(
            "autodev serve: {} database, {} workers; listening on http://{}",
            state.store.backend(),
            args.workers,
            listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        );
        let workers = tokio::spawn(autodev_server::workers::run_workers(state.clone(), args.workers, shutdown.clone()));
        spawn_delivery(&state, &shutdown);
        spawn_gc(&state, args.gc_older_than.0, args.gc_every, &shutdown);
        let served = autodev_server::serve(listener, state, shutdown).await;
        drain(workers, args.grace, "serve").await;
        served.map_err(|e| Exit::Usage(format!("server error: {e}")))?;
        eprintln!("autodev serve: stopped");
        Ok::<Exit, Exit>(Exit::Ok)
    };
    match inner.await {
        Ok(e) | Err(e) => e,
    }
}

/// `autodev worker`: workers only, no HTTP.
pub async fn worker(home: &Path, config: Option<&Path>, args: crate::cli::WorkerArgs) -> Exit {
    let state = match service_state(home, config, args.no_migrate).await {
        Ok(state) => state,
        Err(e) => return e,
    };
    if !state.providers_configured {
        return Exit::Usage("no model provider is configured: set OPENAI_API_KEY, ANTHROPIC_API_KEY, GEMINI_API_KEY, GROQ_API_KEY or a provider base_url (see `autodev config check`)".into());
    }
    let shutdown = shutdown_on_signal();
    let ops = match args.listen {
        Some(addr) => match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => Some(l),
            Err(e) => return Exit::Usage(format!("cannot listen on {addr}: {e} (--listen)")),
        },
        None => None,
    };
    // The address, when there is one, comes last on the line, as `serve`'s does.
    let listening = match &ops {
        Some(l) => {
            format!("; /health /ready /metrics on http://{}", l.local_addr().map(|a| a.to_string()).unwrap_or_default())
        }
        None => String::new(),
    };
    eprintln!("autodev worker: {} workers on the {} database{listening}", args.workers, state.store.backend());
    if let Some(listener) = ops {
        tokio::spawn(autodev_server::serve_ops(listener, state.clone(), shutdown.clone()));
    }
    spawn_delivery(&state, &shutdown);
    spawn_gc(&state, args.gc_older_than.0, args.gc_every, &shutdown);
    let workers = tokio::spawn(autodev_server::workers::run_workers(state, args.workers as usize, shutdown.clone()));
    shutdown.cancelled().await;
    drain(workers, args.grace, "worker").await;
    eprintln!("autodev worker: stopped");
    Exit::Ok
}
