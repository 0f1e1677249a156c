//! An ordered fallback list: when the run's provider cannot answer (its breaker is open, its
//! retries are spent, or it refused the request), the same request goes to the next provider
//! and model on the list. Every switch is recorded in the response ([`Fallback`]), so the
//! engine stores it with the call, emits it as an event and puts it in the report.
use std::sync::Arc;

use autodev_domain::{Fallback, ModelClient, ModelError, ModelRequest, ModelResponse};

/// A provider and model to fall back on, with its client (already behind its retries and
/// guard).
pub struct Candidate {
    pub provider: String,
    pub model: String,
    pub client: Arc<dyn ModelClient>,
}

pub struct FallbackClient {
    primary: Arc<dyn ModelClient>,
    fallbacks: Vec<Candidate>,
}

impl FallbackClient {
    pub fn new(primary: Arc<dyn ModelClient>, fallbacks: Vec<Candidate>) -> Self {
        Self { primary, fallbacks }
    }
}

#[async_trait::async_trait]
impl ModelClient for FallbackClient {
    fn provider(&self) -> &str {
        self.primary.provider()
    }

    fn structured_output(&self) -> bool {
        self.primary.structured_output()
    }

    async fn context_window(&self, model: &str) -> Option<u64> {
        self.primary.context_window(model).await
    }

    fn candidates(&self, model: &str) -> Vec<(String, String)> {
        let mut all = self.primary.candidates(model);
        all.extend(self.fallbacks.iter().map(|c| (c.provider.clone(), c.model.clone())));
        all
    }

    async fn complete(&self, req: &ModelRequest) -> Result<ModelResponse, ModelError> {
        let error = match self.primary.complete(req).await {
            Ok(r) => return Ok(r),
            Err(e) if !e.may_fall_back() || self.fallbacks.is_empty() => return Err(e),
            Err(e) => e,
        };
        self.fall_back(req, error, None).await
    }

    async fn complete_with(
        &self,
        req: &ModelRequest,
        on_text: &autodev_domain::TextSink<'_>,
    ) -> Result<ModelResponse, ModelError> {
        // A primary that failed after part of its answer was shown is not replaced: the
        // fallback's answer would follow the shown part.
        let emitted = std::sync::atomic::AtomicBool::new(false);
        let sink = |text: &str| {
            emitted.store(true, std::sync::atomic::Ordering::Relaxed);
            on_text(text);
        };
        let error = match self.primary.complete_with(req, &sink).await {
            Ok(r) => return Ok(r),
            Err(e)
                if !e.may_fall_back()
                    || self.fallbacks.is_empty()
                    || emitted.load(std::sync::atomic::Ordering::Relaxed) =>
            {
                return Err(e);
            }
            Err(e) => e,
        };
        self.fall_back(req, error, Some(on_text)).await
    }
}

impl FallbackClient {
    /// The fallbacks in order, after the primary failed with `error`.
    async fn fall_back(
        &self,
        req: &ModelRequest,
        mut error: ModelError,
        on_text: Option<&autodev_domain::TextSink<'_>>,
    ) -> Result<ModelResponse, ModelError> {
        let mut switches: Vec<Fallback> = Vec::new();
        let (mut from_provider, mut from_model) = (self.primary.provider().to_string(), req.model.clone());
        for c in &self.fallbacks {
            tracing::warn!(from = %format!("{from_provider}:{from_model}"), to = %format!("{}:{}", c.provider, c.model), error = %error, "falling back to the next provider");
            metrics::counter!("autodev_model_fallbacks_total", "from" => from_provider.clone(), "to" => c.provider.clone())
                .increment(1);
            switches.push(Fallback {
                from_provider: from_provider.clone(),
                from_model: from_model.clone(),
                to_provider: c.provider.clone(),
                to_model: c.model.clone(),
                reason: error.to_string(),
            });
            let mut attempt = req.clone();
            attempt.model = c.model.clone();
            let result = match on_text {
                Some(sink) => c.client.complete_with(&attempt, sink).await,
                None => c.client.complete(&attempt).await,
            };
            match result {
                Ok(mut r) => {
                    r.fallbacks = switches;
                    return Ok(r);
                }
                Err(e) if !e.may_fall_back() => return Err(e),
                Err(e) => {
                    error = e;
                    from_provider = c.provider.clone();
                    from_model = c.model.clone();
                }
            }
        }
        Err(error)
    }
}
