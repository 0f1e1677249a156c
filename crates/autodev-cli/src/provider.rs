//! Building the model client from settings: the provider's adapter, retries, and
//! recording or replaying.
use std::path::Path;
use std::sync::Arc;

use autodev_domain::ModelClient;
use autodev_llm::{AnthropicClient, OpenAiClient, Recorder, Replayer, RetryPolicy, RetryingClient};
use secrecy::SecretString;

use crate::config::{FileConfig, secret};

/// The provider to use when none is named: the model's family, else whichever key is set.
pub fn default_provider(model: Option<&str>) -> String {
    if model.is_some_and(|m| m.starts_with("claude")) {
        return "anthropic".into();
    }
    let has = |n: &str| std::env::var_os(n).is_some() || std::env::var_os(format!("{n}_FILE")).is_some();
    let openai = has("OPENAI_API_KEY") || std::env::var_os("OPENAI_BASE_URL").is_some();
    if !openai && has("ANTHROPIC_API_KEY") {
        "anthropic".into()
    } else if !openai && has("GROQ_API_KEY") {
        "groq".into()
    } else if !openai && std::env::var_os("OLLAMA_HOST").is_some() {
        "ollama".into()
    } else {
        "openai".into()
    }
}

pub fn default_model(provider: &str) -> &'static str {
    match provider {
        "anthropic" => "claude-sonnet-4-5",
        "groq" => "llama-3.3-70b-versatile",
        "ollama" => "qwen2.5-coder",
        _ => "gpt-4.1",
    }
}

pub const PROVIDERS: &[&str] = &["openai", "anthropic", "groq", "ollama"];

/// The base URL a provider will be called at.
pub fn base_url(provider: &str, cfg: &FileConfig) -> String {
    let env = |n: &str| std::env::var(n).ok().filter(|v| !v.trim().is_empty());
    match provider {
        "anthropic" => cfg
            .anthropic
            .base_url
            .clone()
            .or_else(|| env("ANTHROPIC_BASE_URL"))
            .unwrap_or_else(|| autodev_llm::anthropic::DEFAULT_BASE_URL.into()),
        "groq" => cfg
            .groq
            .base_url
            .clone()
            .or_else(|| env("GROQ_BASE_URL"))
            .unwrap_or_else(|| "https://api.groq.com/openai/v1".into()),
        "ollama" => cfg.ollama.base_url.clone().unwrap_or_else(|| {
            let host = env("OLLAMA_HOST").unwrap_or_else(|| "http://localhost:11434".into());
            let host = if host.starts_with("http") { host } else { format!("http://{host}") };
            format!("{}/v1", host.trim_end_matches('/'))
        }),
        _ => cfg
            .openai
            .base_url
            .clone()
            .or_else(|| env("OPENAI_BASE_URL"))
            .unwrap_or_else(|| autodev_llm::openai::DEFAULT_BASE_URL.into()),
    }
}

fn key(provider: &str, cfg: &FileConfig) -> Result<Option<SecretString>, String> {
    let (section, var) = match provider {
        "anthropic" => (&cfg.anthropic, "ANTHROPIC_API_KEY"),
        "groq" => (&cfg.groq, "GROQ_API_KEY"),
        "ollama" => (&cfg.ollama, "OLLAMA_API_KEY"),
        _ => (&cfg.openai, "OPENAI_API_KEY"),
    };
    if let Some(k) = &section.api_key {
        return Ok(Some(SecretString::from(k.clone())));
    }
    secret(var)
}

/// Builds the client for `provider`, or explains what is missing.
pub fn build(
    provider: &str,
    cfg: &FileConfig,
    record: Option<&Path>,
    replay: Option<&Path>,
) -> Result<Arc<dyn ModelClient>, String> {
    if let Some(path) = replay {
        return Ok(Arc::new(Replayer::load(path).map_err(|e| e.to_string())?));
    }
    let stream = cfg.stream.unwrap_or(true);
    let base = base_url(provider, cfg);
    let key = key(provider, cfg)?;
    let client: Arc<dyn ModelClient> = match provider {
        "anthropic" => {
            let key = key.ok_or("provider anthropic needs ANTHROPIC_API_KEY (or ANTHROPIC_API_KEY_FILE)")?;
            Arc::new(AnthropicClient::new(&base, key, stream))
        }
        "openai" => {
            if key.is_none() && base == autodev_llm::openai::DEFAULT_BASE_URL {
                return Err("no model provider configured: set OPENAI_API_KEY (or OPENAI_BASE_URL for a compatible server such as Ollama or vLLM), or ANTHROPIC_API_KEY, or use --replay FILE".into());
            }
            Arc::new(OpenAiClient::new("openai", &base, key, stream))
        }
        "groq" => {
            let key = key.ok_or("provider groq needs GROQ_API_KEY (or GROQ_API_KEY_FILE)")?;
            Arc::new(OpenAiClient::new("groq", &base, Some(key), stream))
        }
        "ollama" => Arc::new(OpenAiClient::new("ollama", &base, key, stream)),
        other => return Err(format!("unknown provider `{other}`: use one of {}", PROVIDERS.join(", "))),
    };
    let client: Arc<dyn ModelClient> = Arc::new(RetryingClient::new(client, RetryPolicy::default()));
    match record {
        Some(path) => Ok(Arc::new(
            Recorder::new(client, path).map_err(|e| format!("cannot write cassette {}: {e}", path.display()))?,
        )),
        None => Ok(client),
    }
}

/// Whether a provider has what it needs to be called (a key, or a base URL for servers that
/// need none).
pub fn configured(provider: &str, cfg: &FileConfig) -> bool {
    let has = |n: &str| std::env::var_os(n).is_some() || std::env::var_os(format!("{n}_FILE")).is_some();
    match provider {
        "openai" => {
            has("OPENAI_API_KEY")
                || std::env::var_os("OPENAI_BASE_URL").is_some()
                || cfg.openai.api_key.is_some()
                || cfg.openai.base_url.is_some()
        }
        "anthropic" => has("ANTHROPIC_API_KEY") || cfg.anthropic.api_key.is_some(),
        "groq" => has("GROQ_API_KEY") || cfg.groq.api_key.is_some(),
        "ollama" => std::env::var_os("OLLAMA_HOST").is_some() || cfg.ollama.base_url.is_some(),
        _ => false,
    }
}

/// Whether any model provider is configured (for readiness).
pub fn any_configured(cfg: &FileConfig) -> bool {
    PROVIDERS.iter().any(|p| configured(p, cfg))
}

/// Model clients for runs made through the API, from the same configuration as `autodev run`.
pub struct ConfiguredModels {
    pub cfg: FileConfig,
}

impl autodev_server::workers::ModelFactory for ConfiguredModels {
    fn defaults(&self) -> (String, String) {
        let model = std::env::var("AUTODEV_MODEL").ok().or_else(|| self.cfg.model.clone());
        let provider = std::env::var("AUTODEV_PROVIDER")
            .ok()
            .or_else(|| self.cfg.provider.clone())
            .unwrap_or_else(|| default_provider(model.as_deref()));
        let model = model.unwrap_or_else(|| default_model(&provider).to_string());
        (provider, model)
    }

    fn build(&self, settings: &autodev_engine::RunSettings) -> Result<Arc<dyn ModelClient>, String> {
        build(&settings.provider, &self.cfg, settings.record.as_deref(), settings.replay.as_deref())
    }

    fn check(&self, settings: &autodev_engine::RunSettings) -> Result<(), String> {
        if settings.replay.is_none() && configured(&settings.provider, &self.cfg) {
            return Ok(());
        }
        // The slow path names what is missing.
        self.build(settings).map(|_| ())
    }
}
