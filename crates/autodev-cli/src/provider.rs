//! Building the model client from settings: the provider's adapter, retries, and
//! recording or replaying.
use std::path::Path;
use std::sync::Arc;

use autodev_domain::ModelClient;
use autodev_llm::{
    AnthropicClient, Candidate, FallbackClient, GeminiClient, GuardSettings, GuardedClient, OpenAiClient, Recorder,
    Replayer, RetryPolicy, RetryingClient,
};
use secrecy::SecretString;

use crate::config::{FileConfig, secret};

/// The provider and model a call uses: the ones named (flag or variable), else the
/// configuration's, else the model's family or whichever key is set, and that provider's
/// default model.
pub fn resolve(provider: Option<String>, model: Option<String>, cfg: &FileConfig) -> (String, String) {
    let model = model.or_else(|| cfg.model.clone());
    let provider = provider.or_else(|| cfg.provider.clone()).unwrap_or_else(|| default_provider(model.as_deref()));
    let model = model.unwrap_or_else(|| default_model(&provider).to_string());
    (provider, model)
}

/// The provider to use when none is named: the model's family, else whichever key is set.
pub fn default_provider(model: Option<&str>) -> String {
    if model.is_some_and(|m| m.starts_with("claude")) {
        return "anthropic".into();
    }
    if model.is_some_and(|m| m.starts_with("gemini")) {
        return "gemini".into();
    }
    let has = |n: &str| std::env::var_os(n).is_some() || std::env::var_os(format!("{n}_FILE")).is_some();
    let openai = has("OPENAI_API_KEY") || std::env::var_os("OPENAI_BASE_URL").is_some();
    if !openai && has("ANTHROPIC_API_KEY") {
        "anthropic".into()
    } else if !openai && has("GEMINI_API_KEY") {
        "gemini".into()
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
        "gemini" => "gemini-2.5-flash",
        _ => "gpt-4.1",
    }
}

pub use crate::config::PROVIDERS;

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
        "gemini" => cfg
            .gemini
            .base_url
            .clone()
            .or_else(|| env("GEMINI_BASE_URL"))
            .unwrap_or_else(|| autodev_llm::gemini::DEFAULT_BASE_URL.into()),
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
        "gemini" => (&cfg.gemini, "GEMINI_API_KEY"),
        _ => (&cfg.openai, "OPENAI_API_KEY"),
    };
    if let Some(k) = &section.api_key {
        return Ok(Some(SecretString::from(k.clone())));
    }
    secret(var)
}

/// Builds the client for `provider`, or explains what is missing: the vendor's adapter
/// behind the provider's guard (rate limits, breaker) and retries, then the fallback list,
/// then recording.
pub fn build(
    provider: &str,
    cfg: &FileConfig,
    record: Option<&Path>,
    replay: Option<&Path>,
) -> Result<Arc<dyn ModelClient>, String> {
    if let Some(path) = replay {
        return Ok(Arc::new(Replayer::load(path).map_err(|e| e.to_string())?));
    }
    let primary = guarded(provider, cfg)?;
    let mut fallbacks = Vec::new();
    for entry in &cfg.fallback {
        let Some((p, model)) = entry.split_once(':') else {
            return Err(format!("fallback `{entry}`: give `provider:model`"));
        };
        if !configured(p, cfg) {
            return Err(format!("fallback `{entry}`: provider {p} is not configured ({})", needs(p)));
        }
        fallbacks.push(Candidate { provider: p.to_string(), model: model.to_string(), client: guarded(p, cfg)? });
    }
    let client: Arc<dyn ModelClient> =
        if fallbacks.is_empty() { primary } else { Arc::new(FallbackClient::new(primary, fallbacks)) };
    match record {
        Some(path) => Ok(Arc::new(
            Recorder::new(client, path).map_err(|e| format!("cannot write cassette {}: {e}", path.display()))?,
        )),
        None => Ok(client),
    }
}

/// What a provider needs to be configured.
fn needs(provider: &str) -> &'static str {
    match provider {
        "anthropic" => "set ANTHROPIC_API_KEY",
        "gemini" => "set GEMINI_API_KEY",
        "groq" => "set GROQ_API_KEY",
        "ollama" => "set OLLAMA_HOST",
        _ => "set OPENAI_API_KEY or OPENAI_BASE_URL",
    }
}

/// The provider's guard settings from its section.
pub fn guard_settings(provider: &str, cfg: &FileConfig) -> GuardSettings {
    let d = GuardSettings::default();
    let Some(section) = cfg.provider_section(provider) else { return d };
    GuardSettings {
        requests_per_minute: section.requests_per_minute.filter(|n| *n > 0),
        tokens_per_minute: section.tokens_per_minute.filter(|n| *n > 0),
        breaker_failures: section.breaker_failures.unwrap_or(d.breaker_failures),
        breaker_cooldown: section.breaker_cooldown_secs.map_or(d.breaker_cooldown, std::time::Duration::from_secs),
    }
}

/// One provider's adapter behind its guard (shared by the process's runs) and retries.
fn guarded(provider: &str, cfg: &FileConfig) -> Result<Arc<dyn ModelClient>, String> {
    let stream = cfg.stream.unwrap_or(true);
    let base = base_url(provider, cfg);
    let key = key(provider, cfg)?;
    let client: Arc<dyn ModelClient> = match provider {
        "anthropic" => {
            let key = key.ok_or("provider anthropic needs ANTHROPIC_API_KEY (or ANTHROPIC_API_KEY_FILE)")?;
            Arc::new(AnthropicClient::new(&base, key, stream))
        }
        "gemini" => {
            let key = key.ok_or("provider gemini needs GEMINI_API_KEY (or GEMINI_API_KEY_FILE)")?;
            Arc::new(GeminiClient::new(&base, key, stream))
        }
        "openai" => {
            if key.is_none() && base == autodev_llm::openai::DEFAULT_BASE_URL {
                return Err("no model provider configured: set OPENAI_API_KEY (or OPENAI_BASE_URL for a compatible server such as Ollama or vLLM), or ANTHROPIC_API_KEY, or GEMINI_API_KEY, or use --replay FILE".into());
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
    let guard = autodev_llm::guard::shared(provider, guard_settings(provider, cfg));
    let client: Arc<dyn ModelClient> = Arc::new(GuardedClient::new(client, guard));
    Ok(Arc::new(RetryingClient::new(client, RetryPolicy::default())))
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
        "gemini" => has("GEMINI_API_KEY") || cfg.gemini.api_key.is_some(),
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

impl autodev_server::ModelFactory for ConfiguredModels {
    fn defaults(&self) -> (String, String) {
        resolve(std::env::var("AUTODEV_PROVIDER").ok(), std::env::var("AUTODEV_MODEL").ok(), &self.cfg)
    }

    fn run_settings(&self) -> autodev_engine::RunSettings {
        let (provider, model) = self.defaults();
        crate::config::configured_settings(&self.cfg, &provider, model)
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
