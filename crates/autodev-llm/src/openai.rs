//! The OpenAI-compatible chat-completions adapter: OpenAI itself and anything that speaks
//! its API at another base URL (Groq, Ollama, vLLM, llama.cpp, LiteLLM).
use std::collections::BTreeMap;

use autodev_domain::{
    Message, ModelClient, ModelError, ModelRequest, ModelResponse, Role, StopReason, ToolCall, Usage,
};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use crate::http::transport_error;

pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
/// Hosts of hosted OpenAI-compatible APIs, which have neither `/props` nor `/api/show`.
const HOSTED_APIS: &[&str] = &[
    "api.openai.com",
    "api.groq.com",
    "openrouter.ai",
    "api.together.xyz",
    "api.mistral.ai",
    "api.deepseek.com",
    "api.fireworks.ai",
    "generativelanguage.googleapis.com",
];
/// The window Ollama gives a model whose parameters do not set `num_ctx`.
const OLLAMA_DEFAULT_NUM_CTX: u64 = 4_096;

#[derive(Clone)]
pub struct OpenAiClient {
    name: String,
    base_url: String,
    api_key: Option<SecretString>,
    stream: bool,
    http: reqwest::Client,
}

impl std::fmt::Debug for OpenAiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiClient")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

impl OpenAiClient {
    /// `name` is the provider name used for pricing and usage (`openai`, `groq`, `ollama`).
    pub fn new(name: &str, base_url: &str, api_key: Option<SecretString>, stream: bool) -> Self {
        let http = crate::http::client();
        Self { name: name.to_string(), base_url: base_url.trim_end_matches('/').to_string(), api_key, stream, http }
    }

    /// The request body for a [`ModelRequest`].
    pub fn body(&self, req: &ModelRequest, stream: bool) -> Value {
        let messages: Vec<Value> = req.messages.iter().map(message_json).collect();
        let mut body = json!({ "model": req.model, "messages": messages });
        if !req.tools.is_empty() {
            body["tools"] = req
                .tools
                .iter()
                .map(|t| {
                    json!({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}})
                })
                .collect();
        }
        // OpenAI's own API replaced max_tokens with max_completion_tokens (reasoning models
        // refuse the old name); compatible servers mostly know only max_tokens.
        let key = if self.base_url.contains("api.openai.com") { "max_completion_tokens" } else { "max_tokens" };
        body[key] = json!(req.max_output_tokens);
        if let Some(schema) = &req.response_schema {
            // The OpenAI form, which llama.cpp, Ollama (0.5+), vLLM and LM Studio read too.
            // Not strict: OpenAI's strict mode refuses a `oneOf` at the root.
            body["response_format"] =
                json!({"type": "json_schema", "json_schema": {"name": "reply", "strict": false, "schema": schema}});
        }
        if stream {
            body["stream"] = json!(true);
            body["stream_options"] = json!({"include_usage": true});
        }
        body
    }

    async fn send(&self, body: &Value) -> Result<reqwest::Response, ModelError> {
        let mut rb = self.http.post(format!("{}/chat/completions", self.base_url)).json(body);
        if let Some(key) = &self.api_key {
            rb = rb.bearer_auth(key.expose_secret());
        }
        crate::http::send(&self.name, rb).await
    }

    fn malformed(&self, message: impl Into<String>) -> ModelError {
        ModelError::Malformed { provider: self.name.clone(), message: message.into() }
    }

    /// Parses a non-streaming response body.
    pub fn parse_response(&self, v: &Value) -> Result<ModelResponse, ModelError> {
        let choice = v.pointer("/choices/0").ok_or_else(|| self.malformed("no choices in the response"))?;
        let msg = choice.get("message").ok_or_else(|| self.malformed("choice has no message"))?;
        let content = msg.get("content").and_then(Value::as_str).unwrap_or("").to_string();
        let mut calls = Vec::new();
        if let Some(list) = msg.get("tool_calls").and_then(Value::as_array) {
            for (i, c) in list.iter().enumerate() {
                let name = c
                    .pointer("/function/name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| self.malformed("tool call without a function name"))?;
                let arguments = match c.pointer("/function/arguments") {
                    Some(Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                    None => String::new(),
                };
                let id = c.get("id").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| format!("call_{i}"));
                calls.push(ToolCall { id, name: name.to_string(), arguments, signature: None });
            }
        }
        Ok(ModelResponse {
            fallbacks: Vec::new(),
            stop_reason: stop_reason(choice.get("finish_reason").and_then(Value::as_str), !calls.is_empty()),
            message: Message::assistant(content, calls),
            usage: usage(v.get("usage")),
            model: v.get("model").and_then(Value::as_str).unwrap_or_default().to_string(),
        })
    }

    async fn complete_streaming(
        &self,
        req: &ModelRequest,
        on_text: Option<&autodev_domain::TextSink<'_>>,
    ) -> Result<ModelResponse, ModelError> {
        let resp = self.send(&self.body(req, true)).await?;
        if !is_event_stream(&resp) {
            // Some compatible servers ignore `stream` and answer with one JSON body.
            let response = self.parse_body(resp).await?;
            if let Some(sink) = on_text.filter(|_| !response.message.content.is_empty()) {
                sink(&response.message.content);
            }
            return Ok(response);
        }
        let mut events = resp.bytes_stream().eventsource();
        let mut content = String::new();
        // Tool calls arrive in pieces keyed by index: the first piece carries id and name,
        // later ones append to the arguments.
        let mut calls: BTreeMap<u64, (String, String, String)> = BTreeMap::new();
        let mut finish: Option<String> = None;
        let mut use_ = Usage::default();
        let mut model = String::new();
        let mut done = false;
        while let Some(event) = events.next().await {
            let event = event.map_err(|e| self.malformed(format!("broken event stream: {e}")))?;
            if event.data.trim() == "[DONE]" {
                done = true;
                break;
            }
            let v: Value = serde_json::from_str(&event.data)
                .map_err(|e| self.malformed(format!("stream chunk is not JSON: {e}")))?;
            if let Some(err) = v.get("error") {
                return Err(ModelError::Server {
                    provider: self.name.clone(),
                    status: 500,
                    retry_after: None,
                    message: crate::http::error_message(&json!({"error": err}).to_string()),
                });
            }
            if let Some(m) = v.get("model").and_then(Value::as_str) {
                model = m.to_string();
            }
            if v.get("usage").is_some_and(|u| !u.is_null()) {
                use_ = usage(v.get("usage"));
            }
            let Some(choice) = v.pointer("/choices/0") else { continue };
            if let Some(f) = choice.get("finish_reason").and_then(Value::as_str) {
                finish = Some(f.to_string());
            }
            let Some(delta) = choice.get("delta") else { continue };
            if let Some(text) = delta.get("content").and_then(Value::as_str) {
                content.push_str(text);
                if let Some(sink) = on_text.filter(|_| !text.is_empty()) {
                    sink(text);
                }
            }
            for piece in delta.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
                let index = piece.get("index").and_then(Value::as_u64).unwrap_or(0);
                let entry = calls.entry(index).or_default();
                if let Some(id) = piece.get("id").and_then(Value::as_str) {
                    entry.0 = id.to_string();
                }
                if let Some(name) = piece.pointer("/function/name").and_then(Value::as_str) {
                    entry.1.push_str(name);
                }
                if let Some(args) = piece.pointer("/function/arguments").and_then(Value::as_str) {
                    entry.2.push_str(args);
                }
            }
        }
        if !done && finish.is_none() {
            return Err(self.malformed("the stream ended before the response was complete"));
        }
        let calls: Vec<ToolCall> = calls
            .into_iter()
            .map(|(i, (id, name, arguments))| ToolCall {
                id: if id.is_empty() { format!("call_{i}") } else { id },
                name,
                arguments,
                signature: None,
            })
            .collect();
        if calls.iter().any(|c| c.name.is_empty()) {
            return Err(self.malformed("a streamed tool call had no function name"));
        }
        Ok(ModelResponse {
            fallbacks: Vec::new(),
            stop_reason: stop_reason(finish.as_deref(), !calls.is_empty()),
            message: Message::assistant(content, calls),
            usage: use_,
            model,
        })
    }
}

fn message_json(m: &Message) -> Value {
    match m.role {
        Role::System => json!({"role": "system", "content": m.content}),
        Role::User => json!({"role": "user", "content": m.content}),
        Role::Assistant => {
            let mut v = json!({"role": "assistant", "content": if m.content.is_empty() && !m.tool_calls.is_empty() { Value::Null } else { json!(m.content) }});
            if !m.tool_calls.is_empty() {
                v["tool_calls"] = m
                    .tool_calls
                    .iter()
                    .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}))
                    .collect();
            }
            v
        }
        Role::Tool => json!({"role": "tool", "tool_call_id": m.tool_call_id, "content": m.content}),
    }
}

fn usage(v: Option<&Value>) -> Usage {
    let get = |k: &str| v.and_then(|u| u.get(k)).and_then(Value::as_u64).unwrap_or(0);
    Usage { input_tokens: get("prompt_tokens"), output_tokens: get("completion_tokens") }
}

fn stop_reason(finish: Option<&str>, has_calls: bool) -> StopReason {
    match finish {
        Some("tool_calls") | Some("function_call") => StopReason::ToolUse,
        Some("length") => StopReason::MaxTokens,
        Some("stop") if has_calls => StopReason::ToolUse,
        Some("stop") => StopReason::EndTurn,
        _ if has_calls => StopReason::ToolUse,
        _ => StopReason::Other,
    }
}

#[async_trait::async_trait]
impl ModelClient for OpenAiClient {
    fn provider(&self) -> &str {
        &self.name
    }

    fn structured_output(&self) -> bool {
        true
    }

    /// llama.cpp answers `GET /props` with the server's `n_ctx`; Ollama answers
    /// `POST /api/show` with the model's parameters (`num_ctx`, which its OpenAI endpoint
    /// uses; 4,096 when unset, Ollama's default) and its trained `context_length`. Both at
    /// the server's root (the base URL without `/v1`). Other servers answer neither: `None`.
    async fn context_window(&self, model: &str) -> Option<u64> {
        // Hosted APIs answer neither; asking them is a wasted round trip (and a 404 in their logs).
        if HOSTED_APIS.iter().any(|h| self.base_url.contains(h)) {
            return None;
        }
        let root = self.base_url.strip_suffix("/v1").unwrap_or(&self.base_url);
        let timeout = std::time::Duration::from_secs(5);
        let get = |rb: reqwest::RequestBuilder| async move {
            let resp = rb.timeout(timeout).send().await.ok()?;
            if !resp.status().is_success() {
                return None;
            }
            resp.json::<serde_json::Value>().await.ok()
        };
        if let Some(props) = get(self.http.get(format!("{root}/props"))).await {
            let n = props
                .pointer("/default_generation_settings/n_ctx")
                .or_else(|| props.get("n_ctx"))
                .and_then(serde_json::Value::as_u64);
            if let Some(n) = n.filter(|n| *n > 0) {
                // One slot's share: llama-server splits n_ctx between its parallel slots.
                let slots = props.get("total_slots").and_then(serde_json::Value::as_u64).unwrap_or(1).max(1);
                return Some(n / slots);
            }
        }
        let show = get(self.http.post(format!("{root}/api/show")).json(&serde_json::json!({"model": model}))).await?;
        let trained = show
            .get("model_info")
            .and_then(|i| i.as_object())
            .and_then(|i| i.iter().find(|(k, _)| k.ends_with(".context_length")).and_then(|(_, v)| v.as_u64()));
        let num_ctx = show.get("parameters").and_then(|p| p.as_str()).and_then(|p| {
            p.lines().find_map(|l| {
                let mut words = l.split_whitespace();
                (words.next() == Some("num_ctx")).then(|| words.next()?.parse::<u64>().ok()).flatten()
            })
        });
        let window = num_ctx.unwrap_or(OLLAMA_DEFAULT_NUM_CTX);
        Some(trained.map_or(window, |t| window.min(t)))
    }

    async fn complete(&self, req: &ModelRequest) -> Result<ModelResponse, ModelError> {
        if self.stream {
            return self.complete_streaming(req, None).await;
        }
        let resp = self.send(&self.body(req, false)).await?;
        self.parse_body(resp).await
    }

    async fn complete_with(
        &self,
        req: &ModelRequest,
        on_text: &autodev_domain::TextSink<'_>,
    ) -> Result<ModelResponse, ModelError> {
        self.complete_streaming(req, Some(on_text)).await
    }
}

/// Whether a response is a Server-Sent Events stream.
pub(crate) fn is_event_stream(resp: &reqwest::Response) -> bool {
    resp.headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/event-stream"))
}

impl OpenAiClient {
    async fn parse_body(&self, resp: reqwest::Response) -> Result<ModelResponse, ModelError> {
        let text = resp.text().await.map_err(|e| transport_error(&self.name, &e))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| self.malformed(format!("response is not JSON: {e}")))?;
        self.parse_response(&v)
    }
}
