use autodev_domain::{ModelClient, ModelError, StopReason, Usage};
use autodev_llm::OpenAiClient;
use pretty_assertions::assert_eq;
use secrecy::SecretString;
use serde_json::json;
use wiremock::matchers::{body_partial_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::{fixture, request};

#[tokio::test]
async fn openai_tool_calls_are_parsed_and_the_request_is_in_openai_format() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(header("authorization", "Bearer sk-test"))
        .and(body_partial_json(json!({
            "model": "gpt-4o",
            "max_tokens": 1024,
            "messages": [
                {"role": "system", "content": "You are a coding agent."},
                {"role": "user", "content": "Fix the bug."},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "read_file", "arguments": "{\"path\":\"a.rs\"}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "1\tfn a() {}"}
            ],
            "tools": [{"type": "function", "function": {"name": "read_file"}}]
        })))
        .respond_with(ResponseTemplate::new(200).set_body_raw(fixture("openai_tool_call.json"), "application/json"))
        .expect(1)
        .mount(&server)
        .await;
    let client =
        OpenAiClient::new("openai", &format!("{}/v1", server.uri()), Some(SecretString::from("sk-test")), false);
    let resp = client.complete(&request("gpt-4o")).await.unwrap();
    assert_eq!(resp.stop_reason, StopReason::ToolUse);
    assert_eq!(resp.usage, Usage { input_tokens: 82, output_tokens: 17 });
    assert_eq!(resp.model, "gpt-4o-2024-08-06");
    let calls: Vec<_> =
        resp.message.tool_calls.iter().map(|c| (c.id.as_str(), c.name.as_str(), c.arguments.as_str())).collect();
    // The second call's arguments are invalid JSON, passed through for the engine to report.
    assert_eq!(
        calls,
        vec![
            ("call_abc123", "read_file", r#"{"path":"src/lib.rs"}"#),
            ("call_def456", "search", r#"{"pattern":"fn main""#)
        ]
    );
}

#[tokio::test]
async fn openai_stream_assembles_tool_calls_from_chunks() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(body_partial_json(json!({"stream": true, "stream_options": {"include_usage": true}})))
        .respond_with(ResponseTemplate::new(200).set_body_raw(fixture("openai_stream.txt"), "text/event-stream"))
        .mount(&server)
        .await;
    let client = OpenAiClient::new("openai", &format!("{}/v1", server.uri()), None, true);
    let resp = client.complete(&request("gpt-4o-mini")).await.unwrap();
    assert_eq!(resp.message.content, "Let me look.");
    assert_eq!(resp.message.tool_calls.len(), 2);
    assert_eq!(resp.message.tool_calls[0].id, "call_DdmO9pD3xa9XTPNJ32zg2hcA");
    assert_eq!(resp.message.tool_calls[0].name, "edit_file");
    let args: serde_json::Value = serde_json::from_str(&resp.message.tool_calls[0].arguments).unwrap();
    assert_eq!(args, json!({"path": "src/lib.rs", "old_text": "a", "new_text": "b"}));
    assert_eq!(resp.message.tool_calls[1].name, "finish");
    assert_eq!(resp.usage, Usage { input_tokens: 120, output_tokens: 41 });
    assert_eq!(resp.stop_reason, StopReason::ToolUse);
}

#[tokio::test]
async fn openai_stream_cut_short_is_malformed_not_a_panic() {
    let server = MockServer::start().await;
    let cut: String = fixture("openai_stream.txt").lines().take(4).map(|l| format!("{l}\n")).collect();
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(cut, "text/event-stream"))
        .mount(&server)
        .await;
    let client = OpenAiClient::new("openai", &server.uri(), None, true);
    let err = client.complete(&request("gpt-4o-mini")).await.unwrap_err();
    assert!(matches!(err, ModelError::Malformed { .. }), "{err:?}");
}

#[tokio::test]
async fn openai_errors_are_classified() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(404).set_body_raw(fixture("openai_model_not_found.json"), "application/json"),
        )
        .mount(&server)
        .await;
    let client = OpenAiClient::new("openai", &server.uri(), None, false);
    let err = client.complete(&request("gpt-9-turbo")).await.unwrap_err();
    assert!(!err.is_retryable());
    assert_eq!(
        err.to_string(),
        "openai refused the request (HTTP 404): The model `gpt-9-turbo` does not exist or you do not have access to it."
    );

    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_string("<html>oops</html>"))
        .mount(&server)
        .await;
    let client = OpenAiClient::new("openai", &server.uri(), None, false);
    assert!(matches!(client.complete(&request("m")).await.unwrap_err(), ModelError::Malformed { .. }));

    let client = OpenAiClient::new("openai", "http://127.0.0.1:9", None, false);
    assert!(matches!(client.complete(&request("m")).await.unwrap_err(), ModelError::Network { .. }));
}

#[tokio::test]
async fn a_server_that_ignores_stream_and_answers_json_still_works() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(body_partial_json(json!({"stream": true})))
        .respond_with(ResponseTemplate::new(200).set_body_raw(fixture("openai_tool_call.json"), "application/json"))
        .mount(&server)
        .await;
    let client = OpenAiClient::new("openai", &server.uri(), None, true);
    let resp = client.complete(&request("gpt-4o")).await.unwrap();
    assert_eq!(resp.message.tool_calls.len(), 2);
    assert_eq!(resp.usage, Usage { input_tokens: 82, output_tokens: 17 });
}
