//! What every request, page, tool call and worker of this process shares.
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use autodev_domain::ModelClient;
use autodev_engine::RunSettings;
use autodev_store::Store;

use crate::auth::Pepper;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub pepper: Pepper,
    pub home: PathBuf,
    /// Whether at least one model provider is configured (for /ready).
    pub providers_configured: bool,
    /// How often an event stream (and an idle worker) looks for news.
    pub poll: Duration,
    /// Builds the model client for a run's settings; knows the default provider and model.
    pub models: std::sync::Arc<dyn ModelFactory>,
    /// The operator's engine choices (prices, sandbox, budgets, code search): every engine a
    /// worker makes, and what questions cost, come from it.
    pub engine: autodev_engine::EngineConfig,
    /// The key cache and the per-key rate limit.
    pub guard: std::sync::Arc<crate::access::Guard>,
    /// Webhook secrets and the trigger label; an endpoint without its secret is off.
    pub webhooks: std::sync::Arc<crate::webhooks::WebhookConfig>,
    /// Tells GitHub, Slack and webhooks about runs' milestones (no targets: nothing to do).
    pub delivery: std::sync::Arc<crate::delivery::Dispatcher>,
    /// The forges that say who may command Autodev by comment (see `crate::commanders`).
    pub forges: std::sync::Arc<crate::commanders::Forges>,
    /// `AUTODEV_PUBLIC_URL`: where people reach this server (the UI's links, the session
    /// cookie's `Secure`, the origin forms may come from).
    pub public_url: Option<String>,
    /// The public URL's path (`/autodev` behind a proxy that serves Autodev there), or empty:
    /// the web UI's links start with it, and its pages answer under it as well as at the root.
    pub base_path: String,
}

impl AppState {
    /// A UI path (`/runs`) as a link (`/autodev/runs` under a path prefix).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_path)
    }

    /// The path prefix of a public URL (`https://host/autodev/` → `/autodev`).
    pub fn base_path_of(public_url: Option<&str>) -> String {
        public_url
            .and_then(|u| reqwest::Url::parse(u).ok())
            .map(|u| u.path().trim_end_matches('/').to_string())
            .unwrap_or_default()
    }
}

/// Builds model clients for runs.
pub trait ModelFactory: Send + Sync {
    /// The provider and model a run gets when its request names none.
    fn defaults(&self) -> (String, String);
    /// The settings a run made through the API or a webhook starts from: the operator's
    /// configuration (limits, budgets, sandbox, tool calls, protected paths) with the default
    /// provider and model. The request and the project then adjust them.
    fn run_settings(&self) -> RunSettings {
        let (provider, model) = self.defaults();
        RunSettings { provider, model, ..RunSettings::default() }
    }
    /// The client for a run's settings, or why there is none (the provider is not configured).
    fn build(&self, settings: &RunSettings) -> Result<Arc<dyn ModelClient>, String>;
    /// Whether `build` would succeed, without building (creating a run calls this; building
    /// an HTTP client costs milliseconds).
    fn check(&self, settings: &RunSettings) -> Result<(), String> {
        self.build(settings).map(|_| ())
    }
}
