mod anthropic;
mod cassette;
mod gemini;
mod openai;
mod resilience;
mod retry;

use autodev_domain::{CallMeta, Message, ModelRequest, ToolCall, ToolSpec};

pub fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

pub fn request(model: &str) -> ModelRequest {
    ModelRequest {
        model: model.to_string(),
        messages: vec![
            Message::system("You are a coding agent."),
            Message::user("Fix the bug."),
            Message::assistant(
                "",
                vec![ToolCall {
                    id: "c1".into(),
                    name: "read_file".into(),
                    arguments: r#"{"path":"a.rs"}"#.into(),
                    signature: None,
                }],
            ),
            Message::tool("c1", "1\tfn a() {}", false),
        ],
        tools: vec![ToolSpec {
            name: "read_file".into(),
            description: "Read a file".into(),
            parameters: serde_json::json!({"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}),
        }],
        max_output_tokens: 1024,
        meta: CallMeta { conversation: "task:t1".into(), turn: 1 },
        response_schema: None,
    }
}
