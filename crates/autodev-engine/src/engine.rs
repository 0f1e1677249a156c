//! The engine: what it holds (store, model, prices, sandbox, budgets, the event channel) and
//! how it is built. Creating and driving runs is in `run.rs`.
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use autodev_domain::{Event, ModelClient};
use autodev_llm::PriceTable;
use autodev_store::Store;
use autodev_workspace::SandboxMode;
use autodev_workspace::git::credentials::Credentials;
use tokio::sync::broadcast;

/// The engine. Cheap to clone; clones share the store, the model and the event channel.
#[derive(Clone)]
pub struct Engine {
    pub(crate) store: Store,
    pub(crate) model: Arc<dyn ModelClient>,
    pub(crate) prices: Arc<PriceTable>,
    pub(crate) home: PathBuf,
    /// The live event feed, made by the first `subscribe` (a process with no listener, a
    /// worker, makes none: its buffer of 4,096 slots is ~1 MB, which a thousand runs in
    /// flight paid for nothing). Shared by the engine's clones.
    pub(crate) events: Arc<std::sync::OnceLock<broadcast::Sender<Event>>>,
    pub(crate) lease: crate::lease::LeaseTiming,
    pub(crate) step_overheads: Option<Arc<Mutex<Vec<Duration>>>>,
    pub(crate) sandbox: SandboxConfig,
    pub(crate) budgets: Budgets,
    pub(crate) code: crate::code::CodeSearch,
    /// Forge credentials for this engine's clones, fetches and pushes of projects.
    pub(crate) credentials: Arc<Credentials>,
    /// The context windows model servers said they give (asked once per model and process).
    pub(crate) server_windows: Arc<Mutex<std::collections::HashMap<String, Option<u64>>>>,
}

/// The operator's budgets beyond each run's own (`monthly_budget_usd` in `autodev.toml`,
/// `AUTODEV_MONTHLY_BUDGET_USD`). A project's monthly budget is its setting, read at each
/// reservation.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Budgets {
    /// What all runs together may spend per calendar month (UTC), in USD.
    pub monthly_usd: Option<f64>,
}

/// The operator's sandbox choice for every run this engine drives.
#[derive(Clone, Debug, Default)]
pub struct SandboxConfig {
    pub mode: SandboxMode,
    /// Replaces the detected system and toolchain directories when set.
    pub readonly: Option<Vec<PathBuf>>,
}

/// The operator's choices every engine of a process shares: where it keeps its files, the
/// prices, the sandbox, the budgets and how code is searched. The CLI builds one from the
/// configuration; `autodev run` and each worker make their engines from it (one builder).
#[derive(Clone)]
pub struct EngineConfig {
    pub home: PathBuf,
    pub prices: Arc<PriceTable>,
    pub sandbox: SandboxConfig,
    pub budgets: Budgets,
    pub code: crate::code::CodeSearch,
    /// The process's forge credentials (the code search's too).
    pub credentials: Arc<Credentials>,
}

impl EngineConfig {
    /// Defaults for `home`: built-in prices, the default sandbox, no monthly budget, lexical
    /// code search.
    pub fn new(home: &Path) -> Self {
        Self {
            home: home.to_path_buf(),
            prices: Arc::new(PriceTable::default()),
            sandbox: SandboxConfig::default(),
            budgets: Budgets::default(),
            code: crate::code::CodeSearch::new(home, None),
            credentials: Arc::default(),
        }
    }

    /// An engine on `store` with `model`, under these choices.
    pub fn engine(&self, store: Store, model: Arc<dyn ModelClient>) -> Engine {
        Engine::new(store, model, self.prices.clone(), &self.home)
            .with_sandbox(self.sandbox.clone())
            .with_budgets(self.budgets)
            .with_code_search(self.code.clone())
            .with_git_credentials(&self.credentials)
    }
}

impl Engine {
    /// An engine with the default sandbox and budgets. `prices`: a table, or one shared
    /// (`Arc`) by the engines of a process.
    pub fn new(store: Store, model: Arc<dyn ModelClient>, prices: impl Into<Arc<PriceTable>>, home: &Path) -> Self {
        Self {
            store,
            model,
            prices: prices.into(),
            // Worktree paths are handed to `git -C <repo>`, which would resolve a relative
            // path against the repository, not against our working directory.
            home: std::path::absolute(home).unwrap_or_else(|_| home.to_path_buf()),
            events: Arc::default(),
            lease: crate::lease::LeaseTiming::default(),
            step_overheads: None,
            sandbox: SandboxConfig::default(),
            budgets: Budgets::default(),
            code: crate::code::CodeSearch::new(home, None),
            credentials: Arc::default(),
            server_windows: Arc::default(),
        }
    }

    /// The context window for `model` when neither the configuration nor the price table
    /// gives one: what its server says (llama.cpp, Ollama), asked once per process.
    pub(crate) async fn server_window(&self, model: &str) -> Option<u64> {
        if let Some(known) = self.server_windows.lock().ok().and_then(|w| w.get(model).copied()) {
            return known;
        }
        let window = self.model.context_window(model).await;
        if let Some(w) = window {
            tracing::info!(model, window = w, "the model server gives this context window");
        }
        if let Ok(mut w) = self.server_windows.lock() {
            w.insert(model.to_string(), window);
        }
        window
    }

    /// Clones, fetches and pushes projects with these forge credentials.
    pub fn with_git_credentials(mut self, credentials: &Arc<Credentials>) -> Self {
        self.credentials = credentials.clone();
        self
    }

    /// Autodev's own git for a repository it clones, fetches or pushes (not an agent's
    /// worktree): with the forge credentials.
    pub(crate) fn git(&self, dir: impl Into<PathBuf>) -> autodev_workspace::Git {
        autodev_workspace::Git::new(dir).with_credentials(&self.credentials)
    }

    /// Sets how code is searched (embeddings configured or not); indexes stay under the
    /// engine's home.
    pub fn with_code_search(mut self, code: crate::code::CodeSearch) -> Self {
        self.code = code;
        self
    }

    pub fn code_search(&self) -> &crate::code::CodeSearch {
        &self.code
    }

    /// Sets the operator's budgets (the global monthly budget).
    pub fn with_budgets(mut self, budgets: Budgets) -> Self {
        self.budgets = budgets;
        self
    }

    /// Sets the sandbox mode and read-only list (operator configuration).
    pub fn with_sandbox(mut self, sandbox: SandboxConfig) -> Self {
        self.sandbox = sandbox;
        self
    }

    pub fn sandbox(&self) -> &SandboxConfig {
        &self.sandbox
    }

    /// Sets how long a claim holds a run and how often it is renewed (tests use a tiny
    /// lease to make one expire while a run is driven).
    pub fn with_lease(mut self, lease: crate::lease::LeaseTiming) -> Self {
        self.lease = lease;
        self
    }

    /// Collects the engine's own time per agent step (for the benchmark).
    pub fn collect_step_overheads(mut self) -> Self {
        self.step_overheads = Some(Arc::new(Mutex::new(Vec::new())));
        self
    }

    pub fn take_step_overheads(&self) -> Vec<Duration> {
        self.step_overheads
            .as_ref()
            .and_then(|m| m.lock().ok().map(|mut v| std::mem::take(&mut *v)))
            .unwrap_or_default()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.get_or_init(|| broadcast::channel(4096).0).subscribe()
    }

    pub(crate) fn publish(&self, e: Event) {
        if let Some(events) = self.events.get() {
            let _ = events.send(e);
        }
    }

    /// The folder of a run: worktrees, temp files, report and patch.
    pub fn run_dir(&self, run_id: &str) -> PathBuf {
        self.home.join("runs").join(run_id)
    }
}
