//! Conversation types shared by every provider. Providers map these to and from their own
//! wire formats; the engine and the store only ever see these.
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

/// One tool call requested by the model. `arguments` is the raw JSON text the model wrote:
/// it may be invalid, and that is reported back to the model as a tool error.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
    /// Opaque vendor state that must go back with the call in later requests (Gemini's
    /// `thoughtSignature`, without which thinking models refuse the conversation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    #[serde(default)]
    pub content: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For `Role::Tool`: the id of the call this answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// For `Role::Tool`: whether the tool failed (Anthropic's `is_error`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub is_error: bool,
}

impl Message {
    pub fn system(content: impl Into<String>) -> Self {
        Self::text(Role::System, content)
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self::text(Role::User, content)
    }
    pub fn assistant(content: impl Into<String>, tool_calls: Vec<ToolCall>) -> Self {
        Self { tool_calls, ..Self::text(Role::Assistant, content) }
    }
    pub fn tool(call_id: impl Into<String>, content: impl Into<String>, is_error: bool) -> Self {
        Self { tool_call_id: Some(call_id.into()), is_error, ..Self::text(Role::Tool, content) }
    }
    fn text(role: Role, content: impl Into<String>) -> Self {
        Self { role, content: content.into(), tool_calls: Vec::new(), tool_call_id: None, is_error: false }
    }

    /// A cheap, provider-neutral estimate of the tokens this message costs (about four
    /// characters a token, plus framing). Used to keep requests inside the context window.
    pub fn estimated_tokens(&self) -> u64 {
        let chars =
            self.content.len() + self.tool_calls.iter().map(|c| c.name.len() + c.arguments.len() + 16).sum::<usize>();
        (chars as u64).div_ceil(4) + 4
    }
}

/// A tool the model may call (OpenAI function-calling JSON schema).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    pub parameters: serde_json::Value,
}

/// Which conversation and turn a model call belongs to. Cassettes and the store key calls
/// by it, so replay and resume are independent of timing and of parallel scheduling.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CallMeta {
    pub conversation: String,
    pub turn: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelRequest {
    pub model: String,
    pub messages: Vec<Message>,
    pub tools: Vec<ToolSpec>,
    pub max_output_tokens: u32,
    pub meta: CallMeta,
    /// A JSON schema the reply's text must follow (structured output: OpenAI-compatible
    /// servers' `response_format`), for models that call tools only when constrained. Adapters
    /// without structured output ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_schema: Option<serde_json::Value>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    EndTurn,
    ToolUse,
    MaxTokens,
    Other,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelResponse {
    /// Always `Role::Assistant`.
    pub message: Message,
    pub usage: Usage,
    pub stop_reason: StopReason,
    /// The model name the vendor reported (may be more specific than the one asked for).
    #[serde(default)]
    pub model: String,
    /// Providers this call fell back from, in order; the last one's `to_*` served it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallbacks: Vec<Fallback>,
}

/// One switch to a fallback during a call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fallback {
    pub from_provider: String,
    pub from_model: String,
    pub to_provider: String,
    pub to_model: String,
    /// Why the previous one did not answer.
    pub reason: String,
}

impl ModelResponse {
    /// The (provider, model) that answered when a fallback did.
    pub fn served_by(&self) -> Option<(&str, &str)> {
        self.fallbacks.last().map(|f| (f.to_provider.as_str(), f.to_model.as_str()))
    }
}
