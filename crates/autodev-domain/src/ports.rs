//! The traits adapters implement for the engine.
use std::time::Duration;

use crate::message::{ModelRequest, ModelResponse};

/// A model error, classified by what the caller should do about it.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum ModelError {
    /// The key is missing, wrong or lacks access. Give up and tell the user to fix the key.
    #[error("{provider} rejected the credentials (HTTP {status}): {message}; check the API key")]
    Auth { provider: String, status: u16, message: String },
    /// The vendor asks us to slow down. Retry after `retry_after` (or with backoff).
    #[error("{provider} rate limit (HTTP 429): {message}")]
    RateLimited { provider: String, retry_after: Option<Duration>, message: String },
    /// A 5xx or an overload answer. Retry with backoff.
    #[error("{provider} server error (HTTP {status}): {message}")]
    Server { provider: String, status: u16, retry_after: Option<Duration>, message: String },
    /// The connection failed or timed out. Retry with backoff.
    #[error("could not reach {provider}: {message}")]
    Network { provider: String, message: String },
    /// The vendor refused the request (unknown model, bad parameters). Give up: retrying
    /// the same request gives the same answer.
    #[error("{provider} refused the request (HTTP {status}): {message}")]
    Request { provider: String, status: u16, message: String },
    /// The vendor answered with something we could not read. Retry once or twice; vendors
    /// occasionally cut a stream short.
    #[error("{provider} sent a response that could not be read: {message}")]
    Malformed { provider: String, message: String },
    /// Replay found no recorded answer for this call. Give up: the cassette does not match
    /// the run (different spec, plan or prompts).
    #[error("the cassette has no recorded answer for {conversation} turn {turn}: {hint}")]
    ReplayMiss { conversation: String, turn: u32, hint: String },
    /// Writing the cassette failed. Give up.
    #[error("could not record the model call: {0}")]
    Record(String),
    /// The provider's circuit breaker is open after consecutive failures: no call is sent
    /// until its cooldown passes. Go to a fallback, or give up.
    #[error("{provider} is unavailable: {message}")]
    Unavailable { provider: String, message: String },
}

impl ModelError {
    /// Whether another provider may answer where this one failed: anything but a local
    /// problem (replay, recording).
    pub fn may_fall_back(&self) -> bool {
        !matches!(self, ModelError::ReplayMiss { .. } | ModelError::Record(_))
    }

    /// Whether the failure says the provider is unhealthy (counts toward its breaker): server
    /// errors, rate limits, network failures and unreadable answers; not a refused request
    /// or a bad key, which say nothing about its health.
    pub fn is_provider_failure(&self) -> bool {
        self.is_retryable()
    }

    /// Whether the provider refused the request for being longer than the model's context
    /// window (OpenAI and vLLM `context_length_exceeded`, llama.cpp `exceed_context_size_error`,
    /// Anthropic "prompt is too long", Gemini "exceeds the maximum number of tokens"). The
    /// same request fails again; a shorter one may not.
    pub fn is_context_overflow(&self) -> bool {
        let (ModelError::Request { message, .. } | ModelError::Server { message, .. }) = self else { return false };
        let m = message.to_lowercase();
        [
            "context_length_exceeded",
            "maximum context length",
            "context length",
            "exceed_context_size",
            "exceeds the available context size",
            "context size",
            "context window",
            "prompt is too long",
            "exceeds the maximum number of tokens",
            "too many tokens",
            "input is too long",
        ]
        .iter()
        .any(|p| m.contains(p))
    }

    /// Whether the same request may succeed if sent again later.
    pub fn is_retryable(&self) -> bool {
        match self {
            ModelError::RateLimited { .. }
            | ModelError::Server { .. }
            | ModelError::Network { .. }
            | ModelError::Malformed { .. } => true,
            ModelError::Auth { .. }
            | ModelError::Request { .. }
            | ModelError::ReplayMiss { .. }
            | ModelError::Record(_)
            | ModelError::Unavailable { .. } => false,
        }
    }

    /// The wait the vendor asked for, if any (`Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ModelError::RateLimited { retry_after, .. } | ModelError::Server { retry_after, .. } => *retry_after,
            ModelError::Auth { .. }
            | ModelError::Network { .. }
            | ModelError::Request { .. }
            | ModelError::Malformed { .. }
            | ModelError::ReplayMiss { .. }
            | ModelError::Record(_)
            | ModelError::Unavailable { .. } => None,
        }
    }
}

/// A model provider. Implementations map [`ModelRequest`] to their vendor's wire format.
#[async_trait::async_trait]
pub trait ModelClient: Send + Sync {
    /// The provider's name as used in the price table and in usage records
    /// (`openai`, `anthropic`, `replay`, ...).
    fn provider(&self) -> &str;

    /// The (provider, model) pairs a call for `model` may be served by, in order: the model
    /// itself, then any fallbacks. Budgets reserve the costliest of them.
    fn candidates(&self, model: &str) -> Vec<(String, String)> {
        vec![(self.provider().to_string(), model.to_string())]
    }

    /// Whether the adapter sends [`ModelRequest::response_schema`] to the server (structured
    /// output); the `schema` tool-call mode needs it.
    fn structured_output(&self) -> bool {
        false
    }

    /// The context window the server gives `model`, when it says (llama.cpp's `/props`,
    /// Ollama's `/api/show`); `None` when it does not or cannot be asked. Asked once per run.
    async fn context_window(&self, _model: &str) -> Option<u64> {
        None
    }

    async fn complete(&self, request: &ModelRequest) -> Result<ModelResponse, ModelError>;

    /// As [`complete`](Self::complete), handing the reply's text to `on_text` piece by piece
    /// as it arrives (streamed answers). An adapter that cannot stream hands it over whole.
    async fn complete_with(&self, request: &ModelRequest, on_text: &TextSink<'_>) -> Result<ModelResponse, ModelError> {
        let response = self.complete(request).await?;
        if !response.message.content.is_empty() {
            on_text(&response.message.content);
        }
        Ok(response)
    }
}

/// Where streamed text goes, piece by piece.
pub type TextSink<'a> = dyn Fn(&str) + Send + Sync + 'a;
