//! What every command shares: the data directory's store, the engine built from the
//! configuration (one builder for `autodev run`, `resume` and the workers' `EngineConfig`),
//! run settings from flags and configuration, and small helpers.
use crate::cli::RunArgs;
use crate::config::FileConfig;
use crate::{Exit, provider};
use autodev_domain::{ModelClient, Spec};
use autodev_engine::{Engine, RunSettings};
use autodev_llm::PriceTable;
use autodev_store::{Migrations, Store, StoreError};
use secrecy::ExposeSecret;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub async fn open_store(home: &Path) -> Result<Store, Exit> {
    open_store_with(home, Migrations::Apply).await
}

/// The database: `DATABASE_URL` (or `DATABASE_URL_FILE`) when set, else SQLite in the data
/// directory.
pub async fn open_store_with(home: &Path, migrations: Migrations) -> Result<Store, Exit> {
    match crate::config::secret("DATABASE_URL").map_err(Exit::Usage)? {
        Some(url) => {
            let url = url.expose_secret();
            Store::connect(url, migrations).await.map_err(|e| {
                Exit::Usage(format!("cannot open the database at {}: {e} (check DATABASE_URL)", redact_url(url)))
            })
        }
        None => Store::open_sqlite(&home.join("autodev.db"), migrations).await.map_err(|e| {
            Exit::Usage(format!("cannot open the database in {}: {e} (check AUTODEV_HOME)", home.display()))
        }),
    }
}

/// A database URL fit for messages: the password replaced.
pub fn redact_url(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, rest)), Some(_)) => {
            let (auth, host) = rest.rsplit_once('@').unwrap_or(("", rest));
            match auth.split_once(':') {
                Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
                None => format!("{scheme}://{auth}@{host}"),
            }
        }
        _ => url.to_string(),
    }
}

pub(crate) fn store_error(e: StoreError) -> Exit {
    match e {
        StoreError::RunNotFound(_) | StoreError::Ambiguous(_) | StoreError::Leased { .. } => Exit::Usage(e.to_string()),
        other => {
            eprintln!("error: {other}");
            Exit::Failed
        }
    }
}

/// The engine of `autodev run` and `resume`, from the process's engine choices.
pub(crate) fn engine(store: Store, model: Arc<dyn ModelClient>, cfg: &FileConfig, home: &Path) -> Engine {
    let code = crate::config::code_search(home, cfg).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "the embeddings are not usable; code search is lexical only");
        autodev_engine::code::CodeSearch::new(home, None)
    });
    engine_config(cfg, home, code).engine(store, model)
}

/// The operator's engine choices from the configuration: the one builder of every engine this
/// process makes (`run`, `resume`, and the workers of `serve` and `worker`). No forge
/// credentials: `serve` adds the process's own.
pub(crate) fn engine_config(
    cfg: &FileConfig,
    home: &Path,
    code: autodev_engine::code::CodeSearch,
) -> autodev_engine::EngineConfig {
    autodev_engine::EngineConfig {
        home: home.to_path_buf(),
        prices: Arc::new(PriceTable::with_overrides(&cfg.prices)),
        sandbox: sandbox_config(cfg),
        budgets: budgets(cfg),
        code,
        credentials: Arc::default(),
    }
}

/// The operator's budgets from the configuration.
pub fn budgets(cfg: &FileConfig) -> autodev_engine::Budgets {
    autodev_engine::Budgets { monthly_usd: cfg.monthly_budget_usd }
}

/// The operator's sandbox choice from the configuration.
pub fn sandbox_config(cfg: &FileConfig) -> autodev_engine::SandboxConfig {
    autodev_engine::SandboxConfig { mode: cfg.sandbox.mode.unwrap_or_default(), readonly: cfg.sandbox.readonly.clone() }
}

/// Turns flags and config into the run's settings.
pub fn settings(args: &RunArgs, cfg: &FileConfig, test_command: String) -> RunSettings {
    let (provider, model) = provider::resolve(args.model.provider.clone(), args.model.model.clone(), cfg);
    let base = crate::config::configured_settings(cfg, &provider, model);
    RunSettings {
        test_command,
        provider: if args.model.replay.is_some() { "replay".into() } else { provider },
        max_parallel: args.max_parallel.unwrap_or(base.max_parallel),
        max_repair_rounds: args.max_repair_rounds.unwrap_or(base.max_repair_rounds),
        max_steps: args.max_steps.unwrap_or(base.max_steps),
        approval: args.approve,
        record: args.model.record.as_ref().map(|p| absolute(p)),
        replay: args.model.replay.as_ref().map(|p| absolute(p)),
        ..base
    }
}

pub fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

pub fn read_spec(path: &Path) -> Result<Spec, Exit> {
    let bytes = std::fs::read(path).map_err(|e| Exit::Usage(format!("cannot read spec {}: {e}", path.display())))?;
    Spec::parse(&bytes).map_err(|e| Exit::Usage(format!("{}: {e}", path.display())))
}

pub(crate) fn whoami() -> String {
    std::env::var("USER").unwrap_or_else(|_| "terminal".into())
}
