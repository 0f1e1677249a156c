//! Google's Gemini API: `models/{model}:generateContent`, and `:streamGenerateContent?alt=sse`
//! when streaming, with function calling.
//!
//! The mapping: system messages become `systemInstruction`; the assistant is role `model`;
//! its tool calls are `functionCall` parts (with the `thoughtSignature` the model gave them,
//! which thinking models require back); tool results are `functionResponse` parts in a
//! `user` turn, named after the call they answer (Gemini matches results by name and order;
//! newer models also give call ids, which are echoed). Gemini's `parameters` take an OpenAPI
//! subset of JSON Schema, so the tools' schemas are reduced to it.
use autodev_domain::{
    Message, ModelClient, ModelError, ModelRequest, ModelResponse, Role, StopReason, ToolCall, Usage,
};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value, json};

use crate::http::{status_error, transport_error};

pub const DEFAULT_BASE_URL: &str = "https://generativelanguage.googleapis.com/v1beta";

#[derive(Clone)]
pub struct GeminiClient {
    base_url: String,
    api_key: SecretString,
    stream: bool,
    http: reqwest::Client,
}

impl std::fmt::Debug for GeminiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeminiClient")
            .field("base_url", &self.base_url)
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

/// The JSON Schema keywords Gemini's `parameters` (an OpenAPI 3.0 schema subset) accepts.
const SCHEMA_KEYS: &[&str] =
    &["type", "description", "properties", "required", "items", "enum", "format", "nullable", "minItems", "maxItems"];

/// A tool schema reduced to what Gemini's `parameters` accepts (it refuses unknown keywords
/// such as `additionalProperties`).
fn gemini_schema(v: &Value) -> Value {
    match v {
        Value::Object(o) => {
            let mut out = Map::new();
            for (k, val) in o {
                if !SCHEMA_KEYS.contains(&k.as_str()) {
                    continue;
                }
                let val = match k.as_str() {
                    "properties" => match val {
                        Value::Object(props) => {
                            Value::Object(props.iter().map(|(name, s)| (name.clone(), gemini_schema(s))).collect())
                        }
                        other => other.clone(),
                    },
                    "items" => gemini_schema(val),
                    _ => val.clone(),
                };
                out.insert(k.clone(), val);
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

impl GeminiClient {
    pub fn new(base_url: &str, api_key: SecretString, stream: bool) -> Self {
        Self { base_url: base_url.trim_end_matches('/').to_string(), api_key, stream, http: crate::http::client() }
    }

    /// The request body for a [`ModelRequest`].
    pub fn body(&self, req: &ModelRequest) -> Value {
        let mut system = Vec::new();
        let mut contents: Vec<Value> = Vec::new();
        // Appends parts to the last turn when it has the same role (Gemini wants turns to
        // alternate; several tool results are one user turn).
        let push = |contents: &mut Vec<Value>, role: &str, parts: Vec<Value>| {
            if let Some(last) = contents.last_mut()
                && last["role"] == role
                && let Some(existing) = last["parts"].as_array_mut()
            {
                existing.extend(parts);
                return;
            }
            contents.push(json!({"role": role, "parts": parts}));
        };
        for (i, m) in req.messages.iter().enumerate() {
            match m.role {
                Role::System => system.push(json!({"text": m.content})),
                Role::User => push(&mut contents, "user", vec![json!({"text": m.content})]),
                Role::Assistant => {
                    let mut parts = Vec::new();
                    if !m.content.is_empty() {
                        parts.push(json!({"text": m.content}));
                    }
                    for c in &m.tool_calls {
                        let args: Value = serde_json::from_str(&c.arguments).unwrap_or_else(|_| json!({}));
                        let mut call = json!({"name": c.name, "args": if args.is_object() { args } else { json!({}) }});
                        if !c.id.starts_with("gemini_") {
                            call["id"] = json!(c.id);
                        }
                        let mut part = json!({"functionCall": call});
                        if let Some(sig) = &c.signature {
                            part["thoughtSignature"] = json!(sig);
                        }
                        parts.push(part);
                    }
                    if parts.is_empty() {
                        parts.push(json!({"text": ""}));
                    }
                    push(&mut contents, "model", parts);
                }
                Role::Tool => {
                    let id = m.tool_call_id.as_deref().unwrap_or_default();
                    // The name of the call this answers, from the assistant turn before it.
                    let name = req.messages[..i]
                        .iter()
                        .rev()
                        .flat_map(|m| m.tool_calls.iter())
                        .find(|c| c.id == id)
                        .map(|c| c.name.clone())
                        .unwrap_or_default();
                    let key = if m.is_error { "error" } else { "content" };
                    let mut response = json!({"name": name, "response": {key: m.content}});
                    if !id.starts_with("gemini_") && !id.is_empty() {
                        response["id"] = json!(id);
                    }
                    push(&mut contents, "user", vec![json!({"functionResponse": response})]);
                }
            }
        }
        let mut body = json!({
            "contents": contents,
            "generationConfig": {"maxOutputTokens": req.max_output_tokens},
        });
        if !system.is_empty() {
            body["systemInstruction"] = json!({"parts": system});
        }
        if !req.tools.is_empty() {
            let decls: Vec<Value> = req
                .tools
                .iter()
                .map(|t| json!({"name": t.name, "description": t.description, "parameters": gemini_schema(&t.parameters)}))
                .collect();
            body["tools"] = json!([{"functionDeclarations": decls}]);
        }
        body
    }

    fn malformed(&self, message: impl Into<String>) -> ModelError {
        ModelError::Malformed { provider: "gemini".into(), message: message.into() }
    }

    async fn send(&self, model: &str, body: &Value, stream: bool) -> Result<reqwest::Response, ModelError> {
        let url = if stream {
            format!("{}/models/{model}:streamGenerateContent?alt=sse", self.base_url)
        } else {
            format!("{}/models/{model}:generateContent", self.base_url)
        };
        let rb = self.http.post(url).header("x-goog-api-key", self.api_key.expose_secret()).json(body);
        crate::http::send("gemini", rb).await
    }

    /// Parses one `GenerateContentResponse` (a whole answer, or one streamed chunk) into
    /// `acc`.
    fn absorb(&self, v: &Value, acc: &mut Answer) -> Result<(), ModelError> {
        if let Some(reason) = v.pointer("/promptFeedback/blockReason").and_then(Value::as_str) {
            return Err(ModelError::Request {
                provider: "gemini".into(),
                status: 400,
                message: format!("the prompt was blocked ({reason})"),
            });
        }
        if let Some(u) = v.get("usageMetadata") {
            let get = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
            acc.usage.input_tokens = acc.usage.input_tokens.max(get("promptTokenCount"));
            // Thinking tokens are billed as output.
            acc.usage.output_tokens =
                acc.usage.output_tokens.max(get("candidatesTokenCount") + get("thoughtsTokenCount"));
        }
        if let Some(m) = v.get("modelVersion").and_then(Value::as_str) {
            acc.model = m.to_string();
        }
        let Some(candidate) = v.get("candidates").and_then(Value::as_array).and_then(|c| c.first()) else {
            return Ok(());
        };
        for part in candidate.pointer("/content/parts").and_then(Value::as_array).into_iter().flatten() {
            if part.get("thought").and_then(Value::as_bool) == Some(true) {
                continue; // a thought summary, not the answer
            }
            if let Some(t) = part.get("text").and_then(Value::as_str) {
                acc.text.push_str(t);
            }
            if let Some(call) = part.get("functionCall") {
                let name = call.get("name").and_then(Value::as_str).unwrap_or_default();
                if name.is_empty() {
                    return Err(self.malformed("a functionCall had no name"));
                }
                let n = acc.calls.len();
                acc.calls.push(ToolCall {
                    id: call
                        .get("id")
                        .and_then(Value::as_str)
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .unwrap_or_else(|| format!("gemini_{n}")),
                    name: name.to_string(),
                    arguments: call.get("args").map(Value::to_string).unwrap_or_else(|| "{}".into()),
                    signature: part.get("thoughtSignature").and_then(Value::as_str).map(str::to_string),
                });
            }
        }
        if let Some(f) = candidate.get("finishReason").and_then(Value::as_str) {
            acc.finish = Some(f.to_string());
        }
        Ok(())
    }

    fn finish(&self, acc: Answer) -> Result<ModelResponse, ModelError> {
        let stop = match acc.finish.as_deref() {
            _ if !acc.calls.is_empty() => StopReason::ToolUse,
            Some("STOP") => StopReason::EndTurn,
            Some("MAX_TOKENS") => StopReason::MaxTokens,
            Some("SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII") if acc.text.is_empty() => {
                return Err(ModelError::Request {
                    provider: "gemini".into(),
                    status: 400,
                    message: format!("the answer was withheld ({})", acc.finish.unwrap_or_default()),
                });
            }
            Some("MALFORMED_FUNCTION_CALL") => {
                return Err(self.malformed("the model produced a malformed function call"));
            }
            _ => StopReason::Other,
        };
        Ok(ModelResponse {
            message: Message::assistant(acc.text, acc.calls),
            usage: acc.usage,
            stop_reason: stop,
            model: acc.model,
            fallbacks: Vec::new(),
        })
    }

    async fn complete_streaming(&self, req: &ModelRequest) -> Result<ModelResponse, ModelError> {
        let resp = self.send(&req.model, &self.body(req), true).await?;
        if !crate::openai::is_event_stream(&resp) {
            return self.parse_body(resp).await;
        }
        let mut events = resp.bytes_stream().eventsource();
        let mut acc = Answer::default();
        while let Some(event) = events.next().await {
            let event = event.map_err(|e| self.malformed(format!("broken event stream: {e}")))?;
            if event.data.trim().is_empty() {
                continue;
            }
            let v: Value = serde_json::from_str(&event.data)
                .map_err(|e| self.malformed(format!("stream event is not JSON: {e}")))?;
            if v.get("error").is_some() {
                let status = v.pointer("/error/code").and_then(Value::as_u64).unwrap_or(500) as u16;
                return Err(status_error("gemini", status, &reqwest::header::HeaderMap::new(), &event.data));
            }
            self.absorb(&v, &mut acc)?;
        }
        if acc.finish.is_none() {
            return Err(self.malformed("the stream ended without a finishReason"));
        }
        self.finish(acc)
    }

    async fn parse_body(&self, resp: reqwest::Response) -> Result<ModelResponse, ModelError> {
        let text = resp.text().await.map_err(|e| transport_error("gemini", &e))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| self.malformed(format!("response is not JSON: {e}")))?;
        self.parse_response(&v)
    }

    /// Parses a non-streaming response body.
    pub fn parse_response(&self, v: &Value) -> Result<ModelResponse, ModelError> {
        let mut acc = Answer::default();
        self.absorb(v, &mut acc)?;
        if v.get("candidates").is_none() {
            return Err(self.malformed("response has no candidates"));
        }
        self.finish(acc)
    }
}

/// An answer being assembled from one body or from streamed chunks.
#[derive(Default)]
struct Answer {
    text: String,
    calls: Vec<ToolCall>,
    usage: Usage,
    finish: Option<String>,
    model: String,
}

#[async_trait::async_trait]
impl ModelClient for GeminiClient {
    fn provider(&self) -> &str {
        "gemini"
    }

    async fn complete(&self, req: &ModelRequest) -> Result<ModelResponse, ModelError> {
        if self.stream {
            return self.complete_streaming(req).await;
        }
        let resp = self.send(&req.model, &self.body(req), false).await?;
        self.parse_body(resp).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn schemas_keep_what_gemini_accepts() {
        let s = json!({"type": "object", "additionalProperties": false, "properties": {"path": {"type": "string", "description": "p", "$comment": "x"}, "lines": {"type": "array", "items": {"type": "integer", "minimum": 1}}}, "required": ["path"]});
        assert_eq!(
            gemini_schema(&s),
            json!({"type": "object", "properties": {"path": {"type": "string", "description": "p"}, "lines": {"type": "array", "items": {"type": "integer"}}}, "required": ["path"]})
        );
    }
}
