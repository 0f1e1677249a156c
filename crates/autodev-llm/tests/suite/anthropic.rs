use autodev_domain::{ModelClient, ModelError, StopReason, Usage};
use autodev_llm::AnthropicClient;
use pretty_assertions::assert_eq;
use secrecy::SecretString;
use serde_json::json;
use wiremock::matchers::{body_partial_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::{fixture, request};

#[tokio::test]
async fn anthropic_tool_use_is_parsed_and_the_request_is_in_messages_format() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .and(header("x-api-key", "sk-ant-test"))
        .and(header("anthropic-version", "2023-06-01"))
        .and(body_partial_json(json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 1024,
            "system": "You are a coding agent.",
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Fix the bug."}]},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "c1", "name": "read_file", "input": {"path": "a.rs"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "c1", "content": "1\tfn a() {}", "is_error": false}]}
            ],
            "tools": [{"name": "read_file", "input_schema": {"type": "object"}}]
        })))
        .respond_with(ResponseTemplate::new(200).set_body_raw(fixture("anthropic_tool_use.json"), "application/json"))
        .expect(1)
        .mount(&server)
        .await;
    let client = AnthropicClient::new(&server.uri(), SecretString::from("sk-ant-test"), false);
    let resp = client.complete(&request("claude-sonnet-4-5")).await.unwrap();
    assert_eq!(resp.message.content, "I'll read the file first.");
    assert_eq!(resp.message.tool_calls[0].id, "toolu_01A09q90qw90lq917835lq9");
    let args: serde_json::Value = serde_json::from_str(&resp.message.tool_calls[0].arguments).unwrap();
    assert_eq!(args, json!({"path": "src/lib.rs", "offset": 1}));
    assert_eq!(resp.usage, Usage { input_tokens: 2095, output_tokens: 503 });
    assert_eq!(resp.stop_reason, StopReason::ToolUse);
}

#[tokio::test]
async fn anthropic_stream_assembles_text_and_tool_input() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(body_partial_json(json!({"stream": true})))
        .respond_with(ResponseTemplate::new(200).set_body_raw(fixture("anthropic_stream.txt"), "text/event-stream"))
        .mount(&server)
        .await;
    let client = AnthropicClient::new(&server.uri(), SecretString::from("k"), true);
    let resp = client.complete(&request("claude-sonnet-4-5")).await.unwrap();
    assert_eq!(resp.message.content, "Okay, let's write the file.");
    assert_eq!(resp.message.tool_calls.len(), 1);
    let args: serde_json::Value = serde_json::from_str(&resp.message.tool_calls[0].arguments).unwrap();
    assert_eq!(args, json!({"path": "README.md", "content": "hi\n"}));
    assert_eq!(resp.usage, Usage { input_tokens: 472, output_tokens: 89 });
    assert_eq!(resp.stop_reason, StopReason::ToolUse);
}

#[tokio::test]
async fn anthropic_overload_is_retryable_and_a_bad_key_is_not() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(529).set_body_raw(fixture("anthropic_overloaded.json"), "application/json"))
        .mount(&server)
        .await;
    let client = AnthropicClient::new(&server.uri(), SecretString::from("k"), false);
    let err = client.complete(&request("claude-sonnet-4-5")).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(err.to_string().contains("Overloaded"));

    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(401).set_body_raw(
            r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#,
            "application/json",
        ))
        .mount(&server)
        .await;
    let client = AnthropicClient::new(&server.uri(), SecretString::from("bad"), false);
    let err = client.complete(&request("claude-sonnet-4-5")).await.unwrap_err();
    assert!(matches!(err, ModelError::Auth { status: 401, .. }), "{err:?}");
}

#[tokio::test]
async fn a_proxy_that_ignores_stream_and_answers_json_still_works() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(fixture("anthropic_tool_use.json"), "application/json"))
        .mount(&server)
        .await;
    let client = AnthropicClient::new(&server.uri(), SecretString::from("k"), true);
    let resp = client.complete(&request("claude-sonnet-4-5")).await.unwrap();
    assert_eq!(resp.message.tool_calls[0].name, "read_file");
}
