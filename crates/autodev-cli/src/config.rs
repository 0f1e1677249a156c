//! Configuration: built-in defaults, then `autodev.toml` in the data directory (or
//! `--config`), then `autodev.toml` at the repository root, then `AUTODEV_*` variables, then
//! command-line flags. Secrets come from the usual variables (`OPENAI_API_KEY`, …) or from a
//! file named by `X_FILE`, as Docker and Kubernetes mount them.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxSection {
    pub network: Option<bool>,
    pub pass_env: Vec<String>,
    pub writable: Vec<PathBuf>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    pub model: Option<String>,
    pub provider: Option<String>,
    pub test_command: Option<String>,
    pub max_parallel: Option<usize>,
    pub max_repair_rounds: Option<u32>,
    pub max_steps: Option<u32>,
    pub max_task_tokens: Option<u64>,
    pub max_cost_usd: Option<f64>,
    pub max_output_tokens: Option<u32>,
    pub context_window: Option<u64>,
    pub command_timeout_secs: Option<u64>,
    pub test_timeout_secs: Option<u64>,
    /// Stream model responses (default true).
    pub stream: Option<bool>,
    pub openai: ProviderSection,
    pub anthropic: ProviderSection,
    pub groq: ProviderSection,
    pub ollama: ProviderSection,
    pub sandbox: SandboxSection,
    /// API requests per key per minute (default 1200; 0 turns the limit off).
    pub rate_limit_per_minute: Option<u32>,
    /// The label that turns a ticket into a run (default `autodev`).
    pub trigger_label: Option<String>,
    /// Price and context-window overrides, by model id.
    pub prices: BTreeMap<String, ModelInfo>,
}

/// `AUTODEV_*` variables read as config keys (others, like `AUTODEV_HOME`, are flags).
const ENV_KEYS: &[&str] = &[
    "model",
    "provider",
    "test_command",
    "max_parallel",
    "max_repair_rounds",
    "max_steps",
    "max_task_tokens",
    "max_cost_usd",
    "max_output_tokens",
    "context_window",
    "command_timeout_secs",
    "test_timeout_secs",
    "stream",
    "trigger_label",
    "rate_limit_per_minute",
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
        if let Some(repo) = repo {
            fig = fig.merge(Toml::file(repo.join("autodev.toml")));
        }
        fig = fig.merge(Env::prefixed("AUTODEV_").only(ENV_KEYS));
        let cfg: FileConfig = match fig.extract() {
            Ok(cfg) => cfg,
            Err(errors) => {
                for e in errors {
                    problems.push(e.to_string());
                }
                FileConfig::default()
            }
        };
        problems.extend(cfg.validate());
        if problems.is_empty() { Ok(cfg) } else { Err(problems) }
    }

    fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.max_parallel == Some(0) {
            p.push("max_parallel must be at least 1".into());
        }
        if self.max_steps == Some(0) {
            p.push("max_steps must be at least 1".into());
        }
        if let Some(c) = self.max_cost_usd.filter(|c| c.is_nan() || *c <= 0.0) {
            p.push(format!("max_cost_usd must be a positive number of dollars, not {c}"));
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
        p
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
