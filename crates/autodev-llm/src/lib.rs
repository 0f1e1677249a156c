//! Model providers behind the domain's `ModelClient` port.
//!
//! What it is for: speaking the vendors' wire formats (OpenAI-compatible chat completions
//! and Anthropic messages, streaming and not), classifying their errors, retrying what can
//! be retried, pricing each call, and recording/replaying calls as cassettes. What it is not
//! for: deciding what to ask (the engine builds the requests) or storing anything.
//!
//! The adapters are written by hand on reqwest + eventsource-stream rather than through
//! a multi-vendor crate: we need exact control of the request (tool schemas, token limits),
//! of error classification (Retry-After, 401 vs 404) and of the streamed tool-call assembly,
//! and both are tested against recorded vendor response shapes in `tests/`.
//!
//! # Layout
//! - [`http`]: HTTP status → `ModelError`, `Retry-After` parsing.
//! - [`openai`]: OpenAI-compatible `/chat/completions` (OpenAI, Groq, Ollama, vLLM, llama.cpp).
//! - [`anthropic`]: Anthropic `/v1/messages`.
//! - [`gemini`]: Google Gemini `generateContent` / `streamGenerateContent`.
//! - [`guard`]: per-provider rate limits (requests and tokens per minute) and circuit breaker.
//! - [`fallback`]: the ordered fallback list; each switch is recorded in the response.
//! - [`retry`]: retries with exponential backoff that honours `Retry-After`.
//! - [`pricing`]: the price and context-window table.
//! - [`cassette`]: record every exchange to a JSON-lines file; replay it with no network.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod anthropic;
pub mod cassette;
pub mod fallback;
pub mod gemini;
pub mod guard;
pub mod http;
pub mod openai;
pub mod pricing;
pub mod retry;
pub mod telemetry;
pub mod tokens;

pub use anthropic::AnthropicClient;
pub use cassette::{Recorder, Replayer};
pub use fallback::{Candidate, FallbackClient};
pub use gemini::GeminiClient;
pub use guard::{Guard, GuardSettings, GuardedClient};
pub use openai::OpenAiClient;
pub use pricing::{DEFAULT_CONTEXT_WINDOW, ModelInfo, PriceTable};
pub use retry::{RetryPolicy, RetryingClient};
pub use tokens::TokenCounter;
