//! Per-provider protection: a rate limit in requests and tokens per minute (governor's GCRA),
//! and a circuit breaker (failsafe) that opens after consecutive failures and lets a trial
//! call through after a cooldown.
//!
//! A provider's [`Guard`] is shared by every run of the process ([`shared`]): the limits and
//! the breaker are about the provider, not about one run. It sits under the retries, so each
//! attempt is limited and counted, and an open breaker stops the retries at once (its error
//! is not retryable) and sends the call to the fallback list.
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use autodev_domain::{ModelClient, ModelError, ModelRequest, ModelResponse};
use failsafe::backoff::{self, Constant};
use failsafe::failure_policy::{self, ConsecutiveFailures};
use failsafe::{Config, Instrument, StateMachine};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// What a provider's guard enforces (`[openai] requests_per_minute = …` and so on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuardSettings {
    pub requests_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u32>,
    /// Consecutive failed calls that open the breaker; 0 turns it off.
    pub breaker_failures: u32,
    pub breaker_cooldown: Duration,
}

impl Default for GuardSettings {
    fn default() -> Self {
        Self {
            requests_per_minute: None,
            tokens_per_minute: None,
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(30),
        }
    }
}

/// Reports the breaker's transitions as metrics and log lines.
#[derive(Clone, Debug)]
struct Observed(String);

impl Instrument for Observed {
    fn on_call_rejected(&self) {
        metrics::counter!("autodev_model_breaker_rejections_total", "provider" => self.0.clone()).increment(1);
    }
    fn on_open(&self) {
        tracing::warn!(provider = %self.0, "circuit breaker opened: calls to this provider fail at once until the cooldown passes");
        metrics::counter!("autodev_model_breaker_opened_total", "provider" => self.0.clone()).increment(1);
        metrics::gauge!("autodev_model_breaker_state", "provider" => self.0.clone()).set(2.0);
    }
    fn on_half_open(&self) {
        tracing::info!(provider = %self.0, "circuit breaker half-open: trying a call");
        metrics::gauge!("autodev_model_breaker_state", "provider" => self.0.clone()).set(1.0);
    }
    fn on_closed(&self) {
        metrics::gauge!("autodev_model_breaker_state", "provider" => self.0.clone()).set(0.0);
    }
}

type Breaker = StateMachine<ConsecutiveFailures<Constant>, Observed>;

/// One provider's limits and breaker.
pub struct Guard {
    provider: String,
    settings: GuardSettings,
    requests: Option<DefaultDirectRateLimiter>,
    tokens: Option<(DefaultDirectRateLimiter, NonZeroU32)>,
    breaker: Option<Breaker>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard").field("provider", &self.provider).field("settings", &self.settings).finish()
    }
}

impl Guard {
    pub fn new(provider: &str, settings: GuardSettings) -> Self {
        let per_minute = |n: Option<u32>| n.and_then(NonZeroU32::new).map(Quota::per_minute);
        let breaker = (settings.breaker_failures > 0).then(|| {
            let policy = failure_policy::consecutive_failures(
                settings.breaker_failures,
                backoff::constant(settings.breaker_cooldown),
            );
            Config::new().failure_policy(policy).instrument(Observed(provider.to_string())).build()
        });
        Self {
            provider: provider.to_string(),
            settings,
            requests: per_minute(settings.requests_per_minute).map(RateLimiter::direct),
            tokens: settings
                .tokens_per_minute
                .and_then(NonZeroU32::new)
                .map(|n| (RateLimiter::direct(Quota::per_minute(n)), n)),
            breaker,
        }
    }

    pub fn settings(&self) -> GuardSettings {
        self.settings
    }

    /// Waits for the rate limits; refuses at once when the breaker is open.
    async fn admit(&self, req: &ModelRequest) -> Result<(), ModelError> {
        if let Some(b) = &self.breaker
            && !b.is_call_permitted()
        {
            return Err(ModelError::Unavailable {
                provider: self.provider.clone(),
                message: format!(
                    "its circuit breaker is open after {} consecutive failures; a trial call goes through after {}s",
                    self.settings.breaker_failures,
                    self.settings.breaker_cooldown.as_secs()
                ),
            });
        }
        let started = Instant::now();
        if let Some(limiter) = &self.requests {
            limiter.until_ready().await;
        }
        if let Some((limiter, capacity)) = &self.tokens {
            let estimate: u64 = req.messages.iter().map(autodev_domain::Message::estimated_tokens).sum::<u64>()
                + u64::from(req.max_output_tokens);
            // A call larger than a minute's allowance waits for the whole allowance.
            let n = NonZeroU32::new(estimate.clamp(1, u64::from(capacity.get())) as u32).unwrap_or(*capacity);
            // `until_n_ready` fails only when n exceeds the burst, which the clamp rules out.
            let _ = limiter.until_n_ready(n).await;
        }
        let waited = started.elapsed();
        if waited > Duration::from_millis(1) {
            metrics::counter!("autodev_model_rate_limit_waits_total", "provider" => self.provider.clone()).increment(1);
            metrics::histogram!("autodev_model_rate_limit_wait_seconds", "provider" => self.provider.clone())
                .record(waited.as_secs_f64());
        }
        Ok(())
    }

    fn record(&self, result: &Result<ModelResponse, ModelError>) {
        let Some(b) = &self.breaker else { return };
        match result {
            Ok(_) => b.on_success(),
            Err(e) if e.is_provider_failure() => b.on_error(),
            // A refused request or a bad key says nothing about the provider's health.
            Err(_) => {}
        }
    }
}

/// The process's guard for `provider`, made with `settings` on first use.
pub fn shared(provider: &str, settings: GuardSettings) -> Arc<Guard> {
    static GUARDS: LazyLock<Mutex<HashMap<String, Arc<Guard>>>> = LazyLock::new(Default::default);
    let mut guards = GUARDS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    match guards.get(provider) {
        Some(g) if g.settings == settings => g.clone(),
        _ => {
            let g = Arc::new(Guard::new(provider, settings));
            guards.insert(provider.to_string(), g.clone());
            g
        }
    }
}

/// A client behind its provider's guard.
pub struct GuardedClient {
    inner: Arc<dyn ModelClient>,
    guard: Arc<Guard>,
}

impl GuardedClient {
    pub fn new(inner: Arc<dyn ModelClient>, guard: Arc<Guard>) -> Self {
        Self { inner, guard }
    }
}

#[async_trait::async_trait]
impl ModelClient for GuardedClient {
    fn provider(&self) -> &str {
        self.inner.provider()
    }

    fn structured_output(&self) -> bool {
        self.inner.structured_output()
    }

    async fn context_window(&self, model: &str) -> Option<u64> {
        self.inner.context_window(model).await
    }

    async fn complete(&self, req: &ModelRequest) -> Result<ModelResponse, ModelError> {
        self.guard.admit(req).await?;
        let result = self.inner.complete(req).await;
        self.guard.record(&result);
        result
    }

    async fn complete_with(
        &self,
        req: &ModelRequest,
        on_text: &autodev_domain::TextSink<'_>,
    ) -> Result<ModelResponse, ModelError> {
        self.guard.admit(req).await?;
        let result = self.inner.complete_with(req, on_text).await;
        self.guard.record(&result);
        result
    }
}
