//! The Anthropic messages adapter (`POST /v1/messages`, tool use, streaming).
use std::collections::BTreeMap;

use autodev_domain::{
    Message, ModelClient, ModelError, ModelRequest, ModelResponse, Role, StopReason, ToolCall, Usage,
};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use crate::http::{error_message, transport_error};

pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
const API_VERSION: &str = "2023-06-01";

#[derive(Clone)]
pub struct AnthropicClient {
    base_url: String,
    api_key: SecretString,
    stream: bool,
    http: reqwest::Client,
}

impl std::fmt::Debug for AnthropicClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnthropicClient")
            .field("base_url", &self.base_url)
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

impl AnthropicClient {
    pub fn new(base_url: &str, api_key: SecretString, stream: bool) -> Self {
        let http = crate::http::client();
        Self { base_url: base_url.trim_end_matches('/').to_string(), api_key, stream, http }
    }

    /// The request body. System messages go to `system`; tool results become `tool_result`
    /// blocks in a user turn; consecutive turns of one role are merged, as the API requires
    /// alternation.
    pub fn body(&self, req: &ModelRequest, stream: bool) -> Value {
        let system: Vec<&str> =
            req.messages.iter().filter(|m| m.role == Role::System).map(|m| m.content.as_str()).collect();
        let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
        for m in req.messages.iter().filter(|m| m.role != Role::System) {
            let (role, blocks) = match m.role {
                Role::User => ("user", vec![json!({"type": "text", "text": non_empty(&m.content)})]),
                Role::Tool => (
                    "user",
                    vec![
                        json!({"type": "tool_result", "tool_use_id": m.tool_call_id, "content": non_empty(&m.content), "is_error": m.is_error}),
                    ],
                ),
                Role::Assistant => {
                    let mut blocks = Vec::new();
                    if !m.content.is_empty() {
                        blocks.push(json!({"type": "text", "text": m.content}));
                    }
                    for c in &m.tool_calls {
                        let input = match serde_json::from_str::<Value>(&c.arguments) {
                            Ok(v @ Value::Object(_)) => v,
                            _ => json!({"invalid_arguments": c.arguments}),
                        };
                        blocks.push(json!({"type": "tool_use", "id": c.id, "name": c.name, "input": input}));
                    }
                    if blocks.is_empty() {
                        blocks.push(json!({"type": "text", "text": "(no content)"}));
                    }
                    ("assistant", blocks)
                }
                Role::System => continue,
            };
            match turns.last_mut() {
                Some((last, existing)) if *last == role => {
                    // Tool results must come first in a user turn.
                    existing.extend(blocks);
                }
                _ => turns.push((role, blocks)),
            }
        }
        let messages: Vec<Value> =
            turns.into_iter().map(|(role, content)| json!({"role": role, "content": content})).collect();
        let mut body = json!({
            "model": req.model,
            "max_tokens": req.max_output_tokens,
            "messages": messages,
        });
        if !system.is_empty() {
            body["system"] = json!(system.join("\n\n"));
        }
        if !req.tools.is_empty() {
            body["tools"] = req
                .tools
                .iter()
                .map(|t| json!({"name": t.name, "description": t.description, "input_schema": t.parameters}))
                .collect();
        }
        if stream {
            body["stream"] = json!(true);
        }
        body
    }

    fn malformed(&self, message: impl Into<String>) -> ModelError {
        ModelError::Malformed { provider: "anthropic".into(), message: message.into() }
    }

    async fn send(&self, body: &Value) -> Result<reqwest::Response, ModelError> {
        let rb = self
            .http
            .post(format!("{}/v1/messages", self.base_url))
            .header("x-api-key", self.api_key.expose_secret())
            .header("anthropic-version", API_VERSION)
            .json(body);
        crate::http::send("anthropic", rb).await
    }

    /// Parses a non-streaming response body.
    pub fn parse_response(&self, v: &Value) -> Result<ModelResponse, ModelError> {
        let blocks = v
            .get("content")
            .and_then(Value::as_array)
            .ok_or_else(|| self.malformed("response has no content array"))?;
        let mut text = String::new();
        let mut calls = Vec::new();
        for b in blocks {
            match b.get("type").and_then(Value::as_str) {
                Some("text") => text.push_str(b.get("text").and_then(Value::as_str).unwrap_or("")),
                Some("tool_use") => calls.push(ToolCall {
                    id: b.get("id").and_then(Value::as_str).unwrap_or_default().to_string(),
                    name: b.get("name").and_then(Value::as_str).unwrap_or_default().to_string(),
                    arguments: b.get("input").map(Value::to_string).unwrap_or_else(|| "{}".into()),
                    signature: None,
                }),
                _ => {}
            }
        }
        Ok(ModelResponse {
            fallbacks: Vec::new(),
            stop_reason: stop_reason(v.get("stop_reason").and_then(Value::as_str)),
            message: Message::assistant(text, calls),
            usage: usage(v.get("usage")),
            model: v.get("model").and_then(Value::as_str).unwrap_or_default().to_string(),
        })
    }

    async fn complete_streaming(&self, req: &ModelRequest) -> Result<ModelResponse, ModelError> {
        let resp = self.send(&self.body(req, true)).await?;
        if !crate::openai::is_event_stream(&resp) {
            // A proxy or mock that ignores `stream` answers with one JSON body.
            return self.parse_body(resp).await;
        }
        let mut events = resp.bytes_stream().eventsource();
        // Blocks by index: text accumulates; tool_use gets id/name at start and its input as
        // partial JSON deltas.
        let mut blocks: BTreeMap<u64, (String, String, String, String)> = BTreeMap::new();
        let mut use_ = Usage::default();
        let mut stop: Option<String> = None;
        let mut model = String::new();
        let mut complete = false;
        while let Some(event) = events.next().await {
            let event = event.map_err(|e| self.malformed(format!("broken event stream: {e}")))?;
            if event.data.trim().is_empty() {
                continue;
            }
            let v: Value = serde_json::from_str(&event.data)
                .map_err(|e| self.malformed(format!("stream event is not JSON: {e}")))?;
            let kind = v.get("type").and_then(Value::as_str).unwrap_or(event.event.as_str());
            match kind {
                "message_start" => {
                    let u = usage(v.pointer("/message/usage"));
                    use_.input_tokens = u.input_tokens;
                    use_.output_tokens = u.output_tokens;
                    model = v.pointer("/message/model").and_then(Value::as_str).unwrap_or_default().to_string();
                }
                "content_block_start" => {
                    let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                    let b = v.get("content_block").cloned().unwrap_or_default();
                    let kind = b.get("type").and_then(Value::as_str).unwrap_or_default().to_string();
                    let id = b.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
                    let name = b.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
                    let text = b.get("text").and_then(Value::as_str).unwrap_or_default().to_string();
                    blocks.insert(index, (kind, id, name, text));
                }
                "content_block_delta" => {
                    let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                    let entry = blocks.entry(index).or_default();
                    let d = v.get("delta").cloned().unwrap_or_default();
                    if let Some(t) = d.get("text").and_then(Value::as_str) {
                        entry.3.push_str(t);
                    }
                    if let Some(p) = d.get("partial_json").and_then(Value::as_str) {
                        entry.3.push_str(p);
                    }
                }
                "message_delta" => {
                    if let Some(s) = v.pointer("/delta/stop_reason").and_then(Value::as_str) {
                        stop = Some(s.to_string());
                    }
                    if let Some(o) = v.pointer("/usage/output_tokens").and_then(Value::as_u64) {
                        use_.output_tokens = o;
                    }
                    if let Some(i) = v.pointer("/usage/input_tokens").and_then(Value::as_u64) {
                        use_.input_tokens = use_.input_tokens.max(i);
                    }
                }
                "message_stop" => {
                    complete = true;
                    break;
                }
                "error" => {
                    let message = error_message(&v.to_string());
                    let overloaded = v.pointer("/error/type").and_then(Value::as_str) == Some("overloaded_error");
                    return Err(ModelError::Server {
                        provider: "anthropic".into(),
                        status: if overloaded { 529 } else { 500 },
                        retry_after: None,
                        message,
                    });
                }
                _ => {}
            }
        }
        if !complete {
            return Err(self.malformed("the stream ended before message_stop"));
        }
        let mut text = String::new();
        let mut calls = Vec::new();
        for (_, (kind, id, name, body)) in blocks {
            match kind.as_str() {
                "text" => text.push_str(&body),
                "tool_use" => calls.push(ToolCall {
                    id,
                    name,
                    arguments: if body.trim().is_empty() { "{}".to_string() } else { body },
                    signature: None,
                }),
                _ => {}
            }
        }
        Ok(ModelResponse {
            fallbacks: Vec::new(),
            stop_reason: stop_reason(stop.as_deref()),
            message: Message::assistant(text, calls),
            usage: use_,
            model,
        })
    }
}

fn non_empty(s: &str) -> &str {
    if s.is_empty() { "(empty)" } else { s }
}

fn usage(v: Option<&Value>) -> Usage {
    let get = |k: &str| v.and_then(|u| u.get(k)).and_then(Value::as_u64).unwrap_or(0);
    Usage {
        input_tokens: get("input_tokens") + get("cache_creation_input_tokens") + get("cache_read_input_tokens"),
        output_tokens: get("output_tokens"),
    }
}

fn stop_reason(s: Option<&str>) -> StopReason {
    match s {
        Some("end_turn") | Some("stop_sequence") => StopReason::EndTurn,
        Some("tool_use") => StopReason::ToolUse,
        Some("max_tokens") => StopReason::MaxTokens,
        _ => StopReason::Other,
    }
}

#[async_trait::async_trait]
impl ModelClient for AnthropicClient {
    fn provider(&self) -> &str {
        "anthropic"
    }

    async fn complete(&self, req: &ModelRequest) -> Result<ModelResponse, ModelError> {
        if self.stream {
            return self.complete_streaming(req).await;
        }
        let resp = self.send(&self.body(req, false)).await?;
        self.parse_body(resp).await
    }
}

impl AnthropicClient {
    async fn parse_body(&self, resp: reqwest::Response) -> Result<ModelResponse, ModelError> {
        let text = resp.text().await.map_err(|e| transport_error("anthropic", &e))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| self.malformed(format!("response is not JSON: {e}")))?;
        self.parse_response(&v)
    }
}
