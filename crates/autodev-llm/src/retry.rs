//! Retries with exponential backoff and jitter (backon), honouring the vendor's
//! `Retry-After` when it gives one.
use std::sync::Arc;
use std::time::Duration;

use autodev_domain::{ModelClient, ModelError, ModelRequest, ModelResponse};
use backon::{ExponentialBuilder, Retryable};

#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    pub max_retries: usize,
    pub min_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { max_retries: 4, min_delay: Duration::from_millis(500), max_delay: Duration::from_secs(30) }
    }
}

pub struct RetryingClient {
    inner: Arc<dyn ModelClient>,
    policy: RetryPolicy,
}

impl RetryingClient {
    pub fn new(inner: Arc<dyn ModelClient>, policy: RetryPolicy) -> Self {
        Self { inner, policy }
    }
}

#[async_trait::async_trait]
impl ModelClient for RetryingClient {
    fn provider(&self) -> &str {
        self.inner.provider()
    }

    fn structured_output(&self) -> bool {
        self.inner.structured_output()
    }

    async fn context_window(&self, model: &str) -> Option<u64> {
        self.inner.context_window(model).await
    }

    fn candidates(&self, model: &str) -> Vec<(String, String)> {
        self.inner.candidates(model)
    }

    async fn complete(&self, req: &ModelRequest) -> Result<ModelResponse, ModelError> {
        self.attempts(req, None).await
    }

    async fn complete_with(
        &self,
        req: &ModelRequest,
        on_text: &autodev_domain::TextSink<'_>,
    ) -> Result<ModelResponse, ModelError> {
        self.attempts(req, Some(on_text)).await
    }
}

impl RetryingClient {
    /// The call, retried; a streamed one only until its first text arrived (the caller has
    /// shown it, and a retry would show it twice).
    async fn attempts(
        &self,
        req: &ModelRequest,
        on_text: Option<&autodev_domain::TextSink<'_>>,
    ) -> Result<ModelResponse, ModelError> {
        let emitted = std::sync::atomic::AtomicBool::new(false);
        let sink = |text: &str| {
            emitted.store(true, std::sync::atomic::Ordering::Relaxed);
            if let Some(f) = on_text {
                f(text);
            }
        };
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.policy.min_delay)
            .with_max_delay(self.policy.max_delay)
            .with_max_times(self.policy.max_retries)
            .with_jitter();
        let max_delay = self.policy.max_delay.max(Duration::from_secs(300));
        (|| async {
            if on_text.is_some() { self.inner.complete_with(req, &sink).await } else { self.inner.complete(req).await }
        })
        .retry(backoff)
        .when(|e: &ModelError| e.is_retryable() && !emitted.load(std::sync::atomic::Ordering::Relaxed))
        .adjust(move |err: &ModelError, planned| match (err.retry_after(), planned) {
            // The vendor said how long; wait that long (bounded) instead of our guess,
            // but only while retries remain.
            (Some(wait), Some(_)) => Some(wait.min(max_delay)),
            (_, planned) => planned,
        })
        .notify(|err: &ModelError, wait: Duration| {
            tracing::warn!(error = %err, wait_ms = wait.as_millis() as u64, "model call failed; retrying");
            metrics::counter!("autodev_model_retries_total", "provider" => self.inner.provider().to_string())
                .increment(1);
        })
        .await
    }
}
