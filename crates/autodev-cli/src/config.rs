//! Configuration: built-in defaults, then `autodev.toml` in the data directory (or
//! `--config`), then `autodev.toml` at the repository root, then `AUTODEV_*` variables, then
//! command-line flags. Secrets come from the usual variables (`OPENAI_API_KEY`, …) or from a
//! file named by `X_FILE`, as Docker and Kubernetes mount them.
//!
//! Who may set what: the repository is not the operator. Its `autodev.toml` may set the
//! test command and the base branch, and lower the limits ([`REPO_KEYS`]); anything else in
//! it (the sandbox, provider URLs and keys, prices, the model, higher limits) is not applied
//! and becomes a warning naming the keys, in `config check` and in the run's events.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use autodev_engine::RunSettings;
use autodev_llm::ModelInfo;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProviderSection {
    pub base_url: Option<String>,
    /// Discouraged (use the variable or `*_FILE`), but accepted.
    pub api_key: Option<String>,
    /// How this provider's models call tools (`auto`, `native`, `text`); overrides the
    /// top-level `tool_calls`.
    pub tool_calls: Option<autodev_engine::ToolCallMode>,
    /// Requests per minute this process sends the provider (0 or absent: no limit).
    pub requests_per_minute: Option<u32>,
    /// Tokens (input estimate + requested output) per minute (0 or absent: no limit).
    pub tokens_per_minute: Option<u32>,
    /// Consecutive failed calls that open the circuit breaker (default 5; 0 turns it off).
    pub breaker_failures: Option<u32>,
    /// Seconds an open breaker waits before letting one call through (default 30).
    pub breaker_cooldown_secs: Option<u64>,
}

/// GitHub beyond its token (`AUTODEV_GITHUB_TOKEN`, never in a file Autodev reads as config).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GithubSection {
    /// `https://api.github.com` (default) or GitHub Enterprise's `https://HOST/api/v3`.
    pub api_url: Option<String>,
    /// Labels on every pull request Autodev opens.
    pub labels: Vec<String>,
}

/// GitLab beyond its token (`AUTODEV_GITLAB_TOKEN`, from a variable or `_FILE` only).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GitlabSection {
    /// `https://gitlab.com` (default) or a self-managed instance (`AUTODEV_GITLAB_URL`).
    pub url: Option<String>,
    /// Labels on every merge request Autodev opens.
    pub labels: Vec<String>,
}

/// Jira beyond its credentials (`AUTODEV_JIRA_API_TOKEN` or `AUTODEV_JIRA_PAT`, from
/// variables or `_FILE`s only).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JiraSection {
    /// `https://your-domain.atlassian.net` or the Data Center base URL (`AUTODEV_JIRA_URL`).
    pub url: Option<String>,
    /// The Jira Cloud account the API token belongs to (`AUTODEV_JIRA_EMAIL`).
    pub email: Option<String>,
    /// Milestone → transition name, e.g. `"run.pr_opened" = "In Review"`.
    pub transitions: BTreeMap<String, String>,
}

/// Confluence Cloud beyond its token (`AUTODEV_CONFLUENCE_API_TOKEN`, a variable or `_FILE`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConfluenceSection {
    /// `https://your-domain.atlassian.net` (`AUTODEV_CONFLUENCE_URL`).
    pub url: Option<String>,
    /// The account the API token belongs to (`AUTODEV_CONFLUENCE_EMAIL`).
    pub email: Option<String>,
    /// The space key pages go in.
    pub space: Option<String>,
    /// The id of the page they go under.
    pub parent_id: Option<String>,
}

/// Outgoing webhooks beyond `AUTODEV_NOTIFY_WEBHOOK_URL`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifySection {
    pub webhooks: Vec<NotifyWebhook>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyWebhook {
    /// Names it in results and events (default: its position, `1`, `2`…).
    #[serde(default)]
    pub name: Option<String>,
    pub url: String,
    /// Signs each body (`X-Autodev-Signature-256`). Prefer `secret_env`.
    #[serde(default)]
    pub secret: Option<String>,
    /// A variable (or `NAME_FILE`) that holds the secret.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// Only these milestones (`run.succeeded`…); all when absent.
    #[serde(default)]
    pub events: Option<Vec<String>>,
}

/// The milestones integrations are told about.
pub const TOPICS: &[&str] =
    &["run.plan_ready", "run.awaiting_approval", "run.succeeded", "run.failed", "run.cancelled", "run.pr_opened"];

/// An http(s) URL, or why not.
pub fn check_url(what: &str, url: &str) -> Result<(), String> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        Ok(u) => Err(format!("{what}: `{}` URLs are not supported; give an http(s) URL", u.scheme())),
        Err(e) => Err(format!("{what}: not a URL ({e})")),
    }
}

/// An embedding model for code search (`[embeddings]`): any OpenAI-compatible
/// `/v1/embeddings`. Without it, search is lexical only.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddingsSection {
    /// Base URL, e.g. `https://api.openai.com/v1` or `http://localhost:11434/v1`.
    pub base_url: Option<String>,
    pub model: Option<String>,
    /// The variable (or `NAME_FILE`) holding the endpoint's key (none for a local server).
    pub api_key_env: Option<String>,
    /// Keep vectors in Qdrant at this URL instead of beside each index.
    pub qdrant_url: Option<String>,
    /// The variable (or `NAME_FILE`) holding Qdrant's API key.
    pub qdrant_api_key_env: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxSection {
    /// `bwrap` (default), `landlock` or `none`; see the README's security model.
    pub mode: Option<autodev_workspace::SandboxMode>,
    /// System and toolchain directories visible read-only (default: what `doctor` lists).
    pub readonly: Option<Vec<PathBuf>>,
    pub network: Option<bool>,
    pub pass_env: Vec<String>,
    pub writable: Vec<PathBuf>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    /// The branch runs start from (default: the checked-out branch).
    pub base_branch: Option<String>,
    pub model: Option<String>,
    pub provider: Option<String>,
    pub test_command: Option<String>,
    pub max_parallel: Option<usize>,
    pub max_repair_rounds: Option<u32>,
    pub max_steps: Option<u32>,
    pub max_task_tokens: Option<u64>,
    pub max_cost_usd: Option<f64>,
    /// What all runs together may spend per calendar month (UTC), in USD
    /// (`AUTODEV_MONTHLY_BUDGET_USD`); a project's own is its `monthly_budget_usd` setting.
    pub monthly_budget_usd: Option<f64>,
    pub max_output_tokens: Option<u32>,
    pub context_window: Option<u64>,
    pub command_timeout_secs: Option<u64>,
    pub test_timeout_secs: Option<u64>,
    /// Stream model responses (default true).
    pub stream: Option<bool>,
    /// A run whose tests do not fail without its change gets repair rounds asking for such a
    /// test, then fails `no_evidence` (default false).
    pub require_evidence: Option<bool>,
    /// `auto` (default: native tool calls, and a call written as JSON in the reply when a
    /// model makes none), `native`, or `text` (the tools described in the prompt, for servers
    /// without native tool calls). A provider's section may set its own.
    pub tool_calls: Option<autodev_engine::ToolCallMode>,
    /// Providers to fall back on, in order, as `provider:model`, when the run's provider is
    /// unavailable (breaker open, retries spent, or the request refused).
    pub fallback: Vec<String>,
    /// Globs agents may not change in any run of this installation (projects add their own
    /// `protected_paths`); see the README's gates.
    pub protected_paths: Vec<String>,
    pub openai: ProviderSection,
    pub anthropic: ProviderSection,
    pub groq: ProviderSection,
    pub ollama: ProviderSection,
    pub gemini: ProviderSection,
    pub sandbox: SandboxSection,
    /// API requests per key per minute (default 1200; 0 turns the limit off).
    pub rate_limit_per_minute: Option<u32>,
    /// The label that turns a ticket into a run (default `autodev`).
    pub trigger_label: Option<String>,
    /// Price and context-window overrides, by model id.
    pub prices: BTreeMap<String, ModelInfo>,
    /// The URL people reach Autodev at: links in pull requests, comments and messages.
    pub public_url: Option<String>,
    pub github: GithubSection,
    pub gitlab: GitlabSection,
    pub jira: JiraSection,
    pub confluence: ConfluenceSection,
    pub notify: NotifySection,
    pub embeddings: EmbeddingsSection,
    /// What the repository's `autodev.toml` tried to set and may not.
    #[serde(skip)]
    pub repo_warnings: Vec<String>,
}

/// Keys a repository's `autodev.toml` may set. The limits among them may only be lowered.
pub const REPO_KEYS: &[&str] = &[
    "test_command",
    "base_branch",
    "max_parallel",
    "max_repair_rounds",
    "max_steps",
    "max_task_tokens",
    "max_cost_usd",
    "max_output_tokens",
    "command_timeout_secs",
    "test_timeout_secs",
    "require_evidence",
];

/// `AUTODEV_*` variables read as config keys (others, like `AUTODEV_HOME`, are flags).
const ENV_KEYS: &[&str] = &[
    "model",
    "provider",
    "base_branch",
    "test_command",
    "max_parallel",
    "max_repair_rounds",
    "max_steps",
    "max_task_tokens",
    "max_cost_usd",
    "monthly_budget_usd",
    "max_output_tokens",
    "context_window",
    "command_timeout_secs",
    "test_timeout_secs",
    "stream",
    "require_evidence",
    "tool_calls",
    "trigger_label",
    "rate_limit_per_minute",
    "public_url",
];

impl FileConfig {
    /// Loads and layers the configuration. Every problem found is returned at once.
    pub fn load(home: &Path, explicit: Option<&Path>, repo: Option<&Path>) -> Result<Self, Vec<String>> {
        let mut problems = Vec::new();
        let mut fig = Figment::from(Serialized::defaults(FileConfig::default()));
        match explicit {
            Some(path) if !path.is_file() => {
                problems.push(format!("config file {} does not exist (--config / AUTODEV_CONFIG)", path.display()))
            }
            Some(path) => fig = fig.merge(Toml::file(path)),
            None => fig = fig.merge(Toml::file(home.join("autodev.toml"))),
        }
        let mut cfg = extract(fig, &mut problems);
        if let Some(repo) = repo {
            match cfg.apply_repository(&repo.join("autodev.toml")) {
                Ok(()) => {}
                Err(p) => problems.extend(p),
            }
        }
        let warnings = std::mem::take(&mut cfg.repo_warnings);
        let fig = Figment::from(Serialized::defaults(cfg)).merge(Env::prefixed("AUTODEV_").only(ENV_KEYS));
        let mut cfg = extract(fig, &mut problems);
        cfg.repo_warnings = warnings;
        if let Ok(mode) = std::env::var("AUTODEV_SANDBOX_MODE") {
            match mode.parse() {
                Ok(mode) => cfg.sandbox.mode = Some(mode),
                Err(e) => problems.push(format!("AUTODEV_SANDBOX_MODE: {e}")),
            }
        }
        problems.extend(cfg.validate());
        if problems.is_empty() { Ok(cfg) } else { Err(problems) }
    }

    /// Applies a repository's `autodev.toml` (if there is one): [`REPO_KEYS`] only, limits
    /// only downwards; everything else becomes a warning in `repo_warnings`.
    fn apply_repository(&mut self, path: &Path) -> Result<(), Vec<String>> {
        let Ok(text) = std::fs::read_to_string(path) else { return Ok(()) };
        let shown = path.display();
        let mut table: toml::Table = text.parse().map_err(|e| vec![format!("{shown}: {e}")])?;
        let refused: Vec<String> = table.keys().filter(|k| !REPO_KEYS.contains(&k.as_str())).cloned().collect();
        for key in &refused {
            table.remove(key);
        }
        if !refused.is_empty() {
            self.repo_warnings.push(format!(
                "the repository's autodev.toml may not set {}: not applied (only the operator's configuration in AUTODEV_HOME, --config or AUTODEV_* sets these; a repository may set {} and lower limits)",
                refused.join(", "),
                REPO_KEYS[..2].join(", ")
            ));
        }
        let repo: RepoConfig = table.try_into().map_err(|e| vec![format!("{shown}: {e}")])?;
        let d = autodev_engine::RunSettings::default();
        if repo.test_command.is_some() {
            self.test_command = repo.test_command;
        }
        if repo.base_branch.is_some() {
            self.base_branch = repo.base_branch;
        }
        let mut raised = Vec::new();
        lower(&mut self.max_parallel, repo.max_parallel, d.max_parallel, "max_parallel", &mut raised);
        lower(
            &mut self.max_repair_rounds,
            repo.max_repair_rounds,
            d.max_repair_rounds,
            "max_repair_rounds",
            &mut raised,
        );
        lower(&mut self.max_steps, repo.max_steps, d.max_steps, "max_steps", &mut raised);
        lower(&mut self.max_task_tokens, repo.max_task_tokens, d.max_task_tokens, "max_task_tokens", &mut raised);
        lower(
            &mut self.max_output_tokens,
            repo.max_output_tokens,
            d.max_output_tokens,
            "max_output_tokens",
            &mut raised,
        );
        lower(
            &mut self.command_timeout_secs,
            repo.command_timeout_secs,
            d.command_timeout_secs,
            "command_timeout_secs",
            &mut raised,
        );
        lower(
            &mut self.test_timeout_secs,
            repo.test_timeout_secs,
            d.test_timeout_secs,
            "test_timeout_secs",
            &mut raised,
        );
        if let Some(cost) = repo.max_cost_usd {
            match self.max_cost_usd {
                Some(current) if cost > current => {
                    raised.push(format!("max_cost_usd = {cost} (the limit is {current})"))
                }
                _ => self.max_cost_usd = Some(cost),
            }
        }
        // Requiring evidence only makes a run stricter: a repository may turn it on, not off.
        match repo.require_evidence {
            Some(true) => self.require_evidence = Some(true),
            Some(false) if self.require_evidence == Some(true) => {
                raised.push("require_evidence = false (the operator requires evidence)".into())
            }
            _ => {}
        }
        if !raised.is_empty() {
            self.repo_warnings.push(format!(
                "the repository's autodev.toml may only lower limits: {} not applied",
                raised.join(", ")
            ));
        }
        Ok(())
    }

    /// The tool-call mode for `provider`: its section's, else the top-level one.
    pub fn tool_calls_for(&self, provider: &str) -> Option<autodev_engine::ToolCallMode> {
        self.provider_section(provider).and_then(|s| s.tool_calls).or(self.tool_calls)
    }

    /// A provider's section, by name.
    pub fn provider_section(&self, provider: &str) -> Option<&ProviderSection> {
        match provider {
            "openai" => Some(&self.openai),
            "anthropic" => Some(&self.anthropic),
            "groq" => Some(&self.groq),
            "ollama" => Some(&self.ollama),
            "gemini" => Some(&self.gemini),
            _ => None,
        }
    }

    fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        for (i, entry) in self.fallback.iter().enumerate() {
            match entry.split_once(':') {
                Some((provider, model)) if PROVIDERS.contains(&provider) && !model.trim().is_empty() => {}
                _ => p.push(format!(
                    "fallback[{i}] = `{entry}`: give `provider:model` with provider one of {}",
                    PROVIDERS.join(", ")
                )),
            }
        }
        if self.protected_paths.len() > autodev_workspace::protect::MAX_GLOBS {
            p.push(format!("protected_paths: at most {} globs", autodev_workspace::protect::MAX_GLOBS));
        }
        for (i, glob) in self.protected_paths.iter().enumerate() {
            if let Err(e) = autodev_workspace::protect::check_glob(glob) {
                p.push(format!("protected_paths[{i}] = `{glob}`: {e}"));
            }
        }
        for name in PROVIDERS {
            if let Some(section) = self.provider_section(name)
                && section.breaker_cooldown_secs == Some(0)
            {
                p.push(format!("[{name}] breaker_cooldown_secs must be at least 1"));
            }
        }
        let e = &self.embeddings;
        match (&e.base_url, &e.model) {
            (None, None) => {
                if e.qdrant_url.is_some() || e.api_key_env.is_some() {
                    p.push("[embeddings] needs base_url and model (the other keys apply to them)".into());
                }
            }
            (Some(url), Some(model)) => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    p.push(format!("[embeddings] base_url = `{url}`: give an http:// or https:// URL ending in /v1"));
                }
                if model.trim().is_empty() {
                    p.push("[embeddings] model is empty: give the embedding model's id".into());
                }
            }
            _ => p.push("[embeddings] needs both base_url and model".into()),
        }
        if let Some(url) = &e.qdrant_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            p.push(format!("[embeddings] qdrant_url = `{url}`: give Qdrant's http(s) URL (REST port, 6333)"));
        }
        if self.max_parallel == Some(0) {
            p.push("max_parallel must be at least 1".into());
        }
        if self.max_steps == Some(0) {
            p.push("max_steps must be at least 1".into());
        }
        if let Some(c) = self.max_cost_usd.filter(|c| c.is_nan() || *c <= 0.0) {
            p.push(format!("max_cost_usd must be a positive number of dollars, not {c}"));
        }
        if let Some(c) = self.monthly_budget_usd.filter(|c| !c.is_finite() || *c <= 0.0) {
            p.push(format!(
                "monthly_budget_usd (AUTODEV_MONTHLY_BUDGET_USD) must be a positive number of dollars, not {c}"
            ));
        }
        if self.context_window.is_some_and(|w| w < 2_000) {
            p.push("context_window must be at least 2000 tokens".into());
        }
        if self.test_command.as_deref().is_some_and(|t| t.trim().is_empty()) {
            p.push("test_command is empty: remove it to detect the command, or give one".into());
        }
        for (model, info) in &self.prices {
            if info.input < 0.0 || info.output < 0.0 {
                p.push(format!("prices.\"{model}\": prices must not be negative"));
            }
        }
        if let Some(url) = &self.public_url {
            p.extend(check_url("public_url", url).err());
        }
        if let Some(url) = &self.github.api_url {
            p.extend(check_url("github.api_url", url).err());
        }
        if let Some(url) = &self.gitlab.url {
            p.extend(check_url("gitlab.url", url).err());
        }
        if let Some(url) = &self.confluence.url {
            p.extend(check_url("confluence.url", url).err());
        }
        if let Some(url) = &self.jira.url {
            p.extend(check_url("jira.url", url).err());
        }
        for topic in self.jira.transitions.keys() {
            if !TOPICS.contains(&topic.as_str()) {
                p.push(format!("jira.transitions: `{topic}` is not a milestone; use {}", TOPICS.join(", ")));
            }
        }
        for (i, w) in self.notify.webhooks.iter().enumerate() {
            let at = format!("notify.webhooks[{}]", i + 1);
            p.extend(check_url(&format!("{at}.url"), &w.url).err());
            if w.secret.is_some() && w.secret_env.is_some() {
                p.push(format!("{at}: give `secret` or `secret_env`, not both"));
            }
            for e in w.events.iter().flatten() {
                if !TOPICS.contains(&e.as_str()) {
                    p.push(format!("{at}.events: `{e}` is not a milestone; use {}", TOPICS.join(", ")));
                }
            }
            if let Some(name) = &w.name
                && (name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)))
            {
                p.push(format!("{at}.name: use letters, digits, `-`, `_` or `.`"));
            }
        }
        p
    }
}

/// The configuration a figment holds, or the defaults with its errors added to `problems`.
fn extract(fig: Figment, problems: &mut Vec<String>) -> FileConfig {
    fig.extract().unwrap_or_else(|errors| {
        problems.extend(errors.into_iter().map(|e| e.to_string()));
        FileConfig::default()
    })
}

/// What a repository's `autodev.toml` may hold (see [`REPO_KEYS`]).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RepoConfig {
    test_command: Option<String>,
    base_branch: Option<String>,
    max_parallel: Option<usize>,
    max_repair_rounds: Option<u32>,
    max_steps: Option<u32>,
    max_task_tokens: Option<u64>,
    max_cost_usd: Option<f64>,
    max_output_tokens: Option<u32>,
    command_timeout_secs: Option<u64>,
    test_timeout_secs: Option<u64>,
    require_evidence: Option<bool>,
}

/// Takes the repository's value of a limit when it is not above the operator's (or the
/// default); otherwise notes it in `raised`.
fn lower<T: PartialOrd + Copy + std::fmt::Display>(
    current: &mut Option<T>,
    repo: Option<T>,
    default: T,
    name: &str,
    raised: &mut Vec<String>,
) {
    let Some(value) = repo else { return };
    let limit = current.unwrap_or(default);
    if value <= limit {
        *current = Some(value);
    } else {
        raised.push(format!("{name} = {value} (the limit is {limit})"));
    }
}

/// A secret from `NAME`, or from the file named by `NAME_FILE` (trailing newline trimmed).
pub fn secret(name: &str) -> Result<Option<SecretString>, String> {
    if let Some(v) = std::env::var(name).ok().filter(|v| !v.trim().is_empty()) {
        return Ok(Some(SecretString::from(v.trim().to_string())));
    }
    let file_var = format!("{name}_FILE");
    if let Some(path) = std::env::var_os(&file_var) {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("{file_var}: cannot read {}: {e}", PathBuf::from(&path).display()))?;
        let value = text.trim_end_matches(['\n', '\r']).to_string();
        if value.is_empty() {
            return Err(format!("{file_var}: {} is empty", PathBuf::from(&path).display()));
        }
        return Ok(Some(SecretString::from(value)));
    }
    Ok(None)
}

/// How code is searched: lexical, or fused with the configured embeddings.
pub fn code_search(home: &Path, cfg: &FileConfig) -> Result<autodev_engine::code::CodeSearch, String> {
    use secrecy::ExposeSecret;
    let e = &cfg.embeddings;
    let (Some(base_url), Some(model)) = (&e.base_url, &e.model) else {
        return Ok(autodev_engine::code::CodeSearch::new(home, None));
    };
    let key = |var: &Option<String>| -> Result<Option<String>, String> {
        match var {
            Some(name) => Ok(secret(name)?.map(|s| s.expose_secret().to_string())),
            None => Ok(None),
        }
    };
    let embeddings = autodev_engine::code::EmbeddingsConfig {
        base_url: base_url.clone(),
        model: model.clone(),
        api_key: key(&e.api_key_env)?,
        qdrant_url: e.qdrant_url.clone(),
        qdrant_api_key: key(&e.qdrant_api_key_env)?,
    };
    Ok(autodev_engine::code::CodeSearch::new(home, Some(embeddings)))
}

/// The process's forge credentials for git from the integrations' tokens: GitHub's token for
/// its host, GitLab's for its URL (a GitHub App's installation tokens are added per owner as
/// they are minted).
pub fn git_credentials(
    delivery: &autodev_delivery::DeliveryConfig,
) -> std::sync::Arc<autodev_workspace::git::credentials::Credentials> {
    let credentials = delivery.git_credentials.clone();
    if let Some(gh) = &delivery.github
        && let autodev_delivery::github::GithubAuth::Token(token) = &gh.auth
        && let Some(prefix) = autodev_delivery::github::git_prefix(&gh.api_url)
    {
        credentials.add_basic(&prefix, "x-access-token", token);
    }
    if let Some(gl) = &delivery.gitlab {
        // GitLab takes any user name with a personal, project or group access token.
        credentials.add_basic(&format!("{}/", gl.url.trim_end_matches('/')), "oauth2", &gl.token);
    }
    credentials
}

/// The integrations runs are delivered to: `[github]`, `[[notify.webhooks]]` and the
/// `AUTODEV_*` variables (tokens and URLs that hold tokens only from variables or `_FILE`s).
pub fn delivery_config(cfg: &FileConfig) -> Result<autodev_delivery::DeliveryConfig, Vec<String>> {
    use autodev_delivery::{DeliveryConfig, github::GithubConfig, webhook::WebhookTarget};
    let mut problems = Vec::new();
    let mut get = |name: &str| {
        secret(name).unwrap_or_else(|e| {
            problems.push(e);
            None
        })
    };
    let github_token = get("AUTODEV_GITHUB_TOKEN");
    let app_key = get("AUTODEV_GITHUB_APP_PRIVATE_KEY");
    // Not a secret, but read like the key so both can come from the same mounted files.
    let app_id = get("AUTODEV_GITHUB_APP_ID").map(|id| secrecy::ExposeSecret::expose_secret(&id).to_string());
    let gitlab_token = get("AUTODEV_GITLAB_TOKEN");
    let gitlab_trigger_token = get("AUTODEV_GITLAB_TRIGGER_TOKEN");
    let slack = get("AUTODEV_SLACK_WEBHOOK_URL");
    let slack_token = get("AUTODEV_SLACK_BOT_TOKEN");
    let notify_url = get("AUTODEV_NOTIFY_WEBHOOK_URL");
    let notify_secret = get("AUTODEV_NOTIFY_WEBHOOK_SECRET");
    let api_url = std::env::var("AUTODEV_GITHUB_API_URL")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .or_else(|| cfg.github.api_url.clone())
        .unwrap_or_else(|| "https://api.github.com".into());
    if let Err(e) = check_url("AUTODEV_GITHUB_API_URL / github.api_url", &api_url) {
        problems.push(e);
    }
    use secrecy::ExposeSecret;
    if let Some(url) = &slack {
        problems.extend(check_url("AUTODEV_SLACK_WEBHOOK_URL", url.expose_secret()).err());
    }
    let mut webhooks = Vec::new();
    if let Some(url) = notify_url {
        problems.extend(check_url("AUTODEV_NOTIFY_WEBHOOK_URL", url.expose_secret()).err());
        webhooks.push(WebhookTarget::new("default", url, notify_secret, None));
    } else if notify_secret.is_some() {
        problems.push("AUTODEV_NOTIFY_WEBHOOK_SECRET is set without AUTODEV_NOTIFY_WEBHOOK_URL".into());
    }
    for (i, w) in cfg.notify.webhooks.iter().enumerate() {
        let name = w.name.clone().unwrap_or_else(|| (i + 1).to_string());
        let secret = match (&w.secret, &w.secret_env) {
            (Some(s), _) => Some(SecretString::from(s.clone())),
            (None, Some(var)) => match secret(var) {
                Ok(Some(s)) => Some(s),
                Ok(None) => {
                    problems.push(format!("notify.webhooks[{}].secret_env: {var} is not set", i + 1));
                    None
                }
                Err(e) => {
                    problems.push(e);
                    None
                }
            },
            (None, None) => None,
        };
        webhooks.push(WebhookTarget::new(&name, SecretString::from(w.url.clone()), secret, w.events.clone()));
    }
    let jira = jira_config(cfg, &mut problems);
    let gitlab_url = std::env::var("AUTODEV_GITLAB_URL")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .or_else(|| cfg.gitlab.url.clone())
        .unwrap_or_else(|| "https://gitlab.com".into());
    if gitlab_token.is_some() {
        problems.extend(check_url("AUTODEV_GITLAB_URL / gitlab.url", &gitlab_url).err());
    }
    let gitlab = gitlab_token.map(|token| autodev_delivery::gitlab::GitlabConfig {
        url: gitlab_url,
        token,
        labels: cfg.gitlab.labels.clone(),
        trigger_token: gitlab_trigger_token,
    });
    let slack_channel = std::env::var("AUTODEV_SLACK_CHANNEL").ok().filter(|v| !v.trim().is_empty());
    let slack_bot = match (slack_token, slack_channel) {
        (Some(token), Some(channel)) => Some((token, channel)),
        (Some(_), None) => {
            problems.push("AUTODEV_SLACK_BOT_TOKEN needs AUTODEV_SLACK_CHANNEL (a channel id like C0123456789)".into());
            None
        }
        (None, Some(_)) => {
            problems.push("AUTODEV_SLACK_CHANNEL is set without AUTODEV_SLACK_BOT_TOKEN".into());
            None
        }
        (None, None) => None,
    };
    let confluence = confluence_config(cfg, &mut problems);
    let config = DeliveryConfig {
        confluence,
        gitlab,
        jira,
        public_url: std::env::var("AUTODEV_PUBLIC_URL")
            .ok()
            .filter(|v| !v.is_empty())
            .or_else(|| cfg.public_url.clone()),
        github: github_auth(github_token, app_id, app_key, &mut problems).map(|auth| GithubConfig {
            api_url,
            auth,
            labels: cfg.github.labels.clone(),
        }),
        slack_webhook_url: slack,
        slack_bot,
        slack_api_url: None,
        webhooks,
        retry_base: None,
        git_credentials: Default::default(),
    };
    if problems.is_empty() { Ok(config) } else { Err(problems) }
}

/// A token, or a GitHub App (its id and PEM private key), not both.
fn github_auth(
    token: Option<SecretString>,
    app_id: Option<String>,
    app_key: Option<SecretString>,
    problems: &mut Vec<String>,
) -> Option<autodev_delivery::github::GithubAuth> {
    use autodev_delivery::github::GithubAuth;
    match (token, app_id, app_key) {
        (None, None, None) => None,
        (Some(token), None, None) => Some(GithubAuth::Token(token)),
        (None, Some(app_id), Some(private_key)) => {
            if !app_id.bytes().all(|b| b.is_ascii_digit()) {
                problems.push(format!("AUTODEV_GITHUB_APP_ID must be the app's numeric id, not `{app_id}`"));
                return None;
            }
            use secrecy::ExposeSecret;
            if jsonwebtoken::EncodingKey::from_rsa_pem(private_key.expose_secret().as_bytes()).is_err() {
                problems.push(
                    "AUTODEV_GITHUB_APP_PRIVATE_KEY is not an RSA private key in PEM (the .pem file GitHub gives)"
                        .into(),
                );
                return None;
            }
            Some(GithubAuth::App { app_id, private_key })
        }
        (Some(_), _, _) => {
            problems.push("set AUTODEV_GITHUB_TOKEN or a GitHub App (AUTODEV_GITHUB_APP_ID + AUTODEV_GITHUB_APP_PRIVATE_KEY), not both".into());
            None
        }
        (None, _, _) => {
            problems.push(
                "a GitHub App needs both AUTODEV_GITHUB_APP_ID and AUTODEV_GITHUB_APP_PRIVATE_KEY (or _FILE)".into(),
            );
            None
        }
    }
}

/// Jira's configuration: Cloud (email + API token) or Data Center (a personal access token).
fn jira_config(cfg: &FileConfig, problems: &mut Vec<String>) -> Option<autodev_delivery::jira::JiraConfig> {
    use autodev_delivery::jira::{JiraAuth, JiraConfig};
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let mut get = |name: &str| {
        secret(name).unwrap_or_else(|e| {
            problems.push(e);
            None
        })
    };
    let token = get("AUTODEV_JIRA_API_TOKEN");
    let pat = get("AUTODEV_JIRA_PAT");
    let url = var("AUTODEV_JIRA_URL").or_else(|| cfg.jira.url.clone());
    let email = var("AUTODEV_JIRA_EMAIL").or_else(|| cfg.jira.email.clone());
    let auth = match (token, pat, email) {
        (None, None, _) => return None,
        (Some(_), Some(_), _) => {
            problems.push("set AUTODEV_JIRA_API_TOKEN (Jira Cloud) or AUTODEV_JIRA_PAT (Data Center), not both".into());
            return None;
        }
        (Some(token), None, Some(email)) => JiraAuth::Cloud { email, token },
        (Some(_), None, None) => {
            problems.push(
                "AUTODEV_JIRA_API_TOKEN needs AUTODEV_JIRA_EMAIL (or jira.email): the account it belongs to".into(),
            );
            return None;
        }
        (None, Some(pat), _) => JiraAuth::DataCenter { pat },
    };
    let Some(url) = url else {
        problems.push("a Jira token is set but not AUTODEV_JIRA_URL (or jira.url)".into());
        return None;
    };
    if let Err(e) = check_url("AUTODEV_JIRA_URL / jira.url", &url) {
        problems.push(e);
    }
    Some(JiraConfig { url, auth, transitions: cfg.jira.transitions.clone() })
}

/// Confluence Cloud: URL, account email, API token and space all needed; none set is off.
fn confluence_config(
    cfg: &FileConfig,
    problems: &mut Vec<String>,
) -> Option<autodev_delivery::confluence::ConfluenceConfig> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let token = secret("AUTODEV_CONFLUENCE_API_TOKEN").unwrap_or_else(|e| {
        problems.push(e);
        None
    })?;
    let url = var("AUTODEV_CONFLUENCE_URL").or_else(|| cfg.confluence.url.clone());
    let email = var("AUTODEV_CONFLUENCE_EMAIL").or_else(|| cfg.confluence.email.clone());
    let space = cfg.confluence.space.clone();
    let (Some(url), Some(email), Some(space)) = (url, email, space) else {
        problems.push(
            "AUTODEV_CONFLUENCE_API_TOKEN needs AUTODEV_CONFLUENCE_URL (or confluence.url), AUTODEV_CONFLUENCE_EMAIL (or confluence.email) and confluence.space".into(),
        );
        return None;
    };
    problems.extend(check_url("AUTODEV_CONFLUENCE_URL / confluence.url", &url).err());
    Some(autodev_delivery::confluence::ConfluenceConfig {
        url,
        email,
        token,
        space,
        parent_id: cfg.confluence.parent_id.clone(),
    })
}

pub const PROVIDERS: &[&str] = &["openai", "anthropic", "groq", "ollama", "gemini"];

/// A run's settings from the operator's configuration alone, for `provider` and `model`:
/// what `autodev run` starts from before its flags, and what runs made through the API and
/// webhooks get.
pub fn configured_settings(cfg: &FileConfig, provider: &str, model: String) -> RunSettings {
    let d = RunSettings::default();
    RunSettings {
        test_command: String::new(),
        provider: provider.to_string(),
        model,
        max_parallel: cfg.max_parallel.unwrap_or(d.max_parallel),
        max_repair_rounds: cfg.max_repair_rounds.unwrap_or(d.max_repair_rounds),
        max_steps: cfg.max_steps.unwrap_or(d.max_steps),
        max_task_tokens: cfg.max_task_tokens.unwrap_or(d.max_task_tokens),
        max_cost_usd: cfg.max_cost_usd,
        max_output_tokens: cfg.max_output_tokens.unwrap_or(d.max_output_tokens),
        context_window: cfg.context_window,
        approval: false,
        command_timeout_secs: cfg.command_timeout_secs.unwrap_or(d.command_timeout_secs),
        test_timeout_secs: cfg.test_timeout_secs.unwrap_or(d.test_timeout_secs),
        sandbox_network: cfg.sandbox.network.unwrap_or(false),
        sandbox_pass_env: cfg.sandbox.pass_env.clone(),
        sandbox_writable: cfg.sandbox.writable.clone(),
        record: None,
        replay: None,
        keep_worktrees: false,
        require_evidence: cfg.require_evidence.unwrap_or(false),
        tool_calls: cfg.tool_calls_for(provider).unwrap_or_default(),
        config_warnings: cfg.repo_warnings.clone(),
        deliver_branch: None,
        protected_paths: cfg.protected_paths.clone(),
        allowed_paths: Vec::new(),
        approve_delivery: false,
        revert: None,
        trace_parent: None,
    }
}
