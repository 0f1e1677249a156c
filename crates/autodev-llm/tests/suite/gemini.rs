use std::time::Duration;

use autodev_domain::{ModelClient, ModelError, StopReason};
use autodev_llm::GeminiClient;
use pretty_assertions::assert_eq;
use secrecy::SecretString;
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::{fixture, request};

fn client(server: &MockServer, stream: bool) -> GeminiClient {
    GeminiClient::new(&format!("{}/v1beta", server.uri()), SecretString::from("g-key"), stream)
}

#[tokio::test]
async fn function_calls_are_parsed_and_the_request_is_in_gemini_format() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1beta/models/gemini-2.5-flash:generateContent"))
        .and(header("x-goog-api-key", "g-key"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(fixture("gemini_function_call.json"), "application/json"))
        .expect(1)
        .mount(&server)
        .await;
    let resp = client(&server, false).complete(&request("gemini-2.5-flash")).await.unwrap();
    assert_eq!(resp.message.content, "I'll read both files.");
    let calls = &resp.message.tool_calls;
    assert_eq!(calls.len(), 2);
    assert_eq!((calls[0].name.as_str(), calls[0].arguments.as_str()), ("read_file", r#"{"path":"src/lib.rs"}"#));
    assert_eq!(calls[0].signature.as_deref(), Some("CiQB0e2Kb7Yx0m9Kd5bq1Wq3rN8fQvZp2sT4uV6wX8yZ0aB1cD2eF3gH4"));
    assert_ne!(calls[0].id, calls[1].id);
    assert_eq!(resp.stop_reason, StopReason::ToolUse);
    // Thinking tokens are billed as output.
    assert_eq!((resp.usage.input_tokens, resp.usage.output_tokens), (812, 41 + 168));
    assert_eq!(resp.model, "gemini-2.5-flash");

    let sent: Value = serde_json::from_slice(&server.received_requests().await.unwrap()[0].body).unwrap();
    assert_eq!(sent["systemInstruction"], json!({"parts": [{"text": "You are a coding agent."}]}));
    assert_eq!(sent["generationConfig"]["maxOutputTokens"], 1024);
    let contents = sent["contents"].as_array().unwrap();
    assert_eq!(contents.len(), 3, "{contents:?}");
    assert_eq!(contents[0], json!({"role": "user", "parts": [{"text": "Fix the bug."}]}));
    assert_eq!(
        contents[1],
        json!({"role": "model", "parts": [{"functionCall": {"name": "read_file", "args": {"path": "a.rs"}, "id": "c1"}}]})
    );
    assert_eq!(
        contents[2],
        json!({"role": "user", "parts": [{"functionResponse": {"name": "read_file", "id": "c1", "response": {"content": "1\tfn a() {}"}}}]})
    );
    assert_eq!(sent["tools"][0]["functionDeclarations"][0]["name"], "read_file");
    assert_eq!(sent["tools"][0]["functionDeclarations"][0]["parameters"]["required"], json!(["path"]));
}

#[tokio::test]
async fn the_signature_of_a_call_goes_back_with_it() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(fixture("gemini_function_call.json"), "application/json"))
        .mount(&server)
        .await;
    let c = client(&server, false);
    let first = c.complete(&request("gemini-2.5-flash")).await.unwrap();
    let mut next = request("gemini-2.5-flash");
    next.messages.push(first.message.clone());
    for call in &first.message.tool_calls {
        next.messages.push(autodev_domain::Message::tool(call.id.clone(), "x", false));
    }
    c.complete(&next).await.unwrap();
    let sent: Value = serde_json::from_slice(&server.received_requests().await.unwrap()[1].body).unwrap();
    let contents = sent["contents"].as_array().unwrap();
    let model_turn = &contents[3];
    assert_eq!(model_turn["role"], "model");
    assert_eq!(model_turn["parts"][1]["thoughtSignature"], "CiQB0e2Kb7Yx0m9Kd5bq1Wq3rN8fQvZp2sT4uV6wX8yZ0aB1cD2eF3gH4");
    // Calls without an id of Gemini's are matched by name and order: no id is sent.
    assert!(model_turn["parts"][1]["functionCall"].get("id").is_none());
    // Both results in one user turn, named after their calls.
    let results = contents[4]["parts"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert!(results.iter().all(|r| r["functionResponse"]["name"] == "read_file"));
}

#[tokio::test]
async fn a_streamed_answer_is_assembled() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1beta/models/gemini-2.5-flash:streamGenerateContent"))
        .and(query_param("alt", "sse"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(fixture("gemini_stream.txt"), "text/event-stream"))
        .expect(1)
        .mount(&server)
        .await;
    let resp = client(&server, true).complete(&request("gemini-2.5-flash")).await.unwrap();
    assert_eq!(resp.message.content, "Reading the file first.");
    assert_eq!(resp.message.tool_calls.len(), 1);
    assert_eq!(resp.message.tool_calls[0].arguments, r#"{"path":"a.rs"}"#);
    assert_eq!(resp.message.tool_calls[0].signature.as_deref(), Some("Q2lRQjBlMktiN1l4"));
    assert_eq!((resp.usage.input_tokens, resp.usage.output_tokens), (640, 60));
    assert_eq!(resp.stop_reason, StopReason::ToolUse);
}

#[tokio::test]
async fn a_stream_cut_short_is_malformed_and_quota_errors_carry_the_delay_from_the_body() {
    let server = MockServer::start().await;
    let cut: String = fixture("gemini_stream.txt").split("\n\n").take(2).collect::<Vec<_>>().join("\n\n") + "\n\n";
    Mock::given(method("POST"))
        .and(path("/v1beta/models/gemini-2.5-flash:streamGenerateContent"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(cut, "text/event-stream"))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1beta/models/gemini-2.5-pro:generateContent"))
        .respond_with(ResponseTemplate::new(429).set_body_raw(fixture("gemini_quota.json"), "application/json"))
        .mount(&server)
        .await;
    let err = client(&server, true).complete(&request("gemini-2.5-flash")).await.unwrap_err();
    assert!(matches!(err, ModelError::Malformed { .. }), "{err}");
    let err = client(&server, false).complete(&request("gemini-2.5-pro")).await.unwrap_err();
    assert_eq!(err.retry_after(), Some(Duration::from_secs(17)));
    assert!(err.to_string().contains("You exceeded your current quota"), "{err}");
}
