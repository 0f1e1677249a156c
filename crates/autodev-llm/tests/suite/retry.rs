use std::sync::Arc;
use std::time::{Duration, Instant};

use autodev_domain::{ModelClient, ModelError};
use autodev_llm::{OpenAiClient, RetryPolicy, RetryingClient};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::{fixture, request};

fn policy() -> RetryPolicy {
    RetryPolicy { max_retries: 3, min_delay: Duration::from_millis(10), max_delay: Duration::from_millis(50) }
}

#[tokio::test]
async fn rate_limit_is_retried_after_the_wait_the_vendor_asked_for() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "1")
                .set_body_string(r#"{"error":{"message":"slow down"}}"#),
        )
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(fixture("openai_tool_call.json"), "application/json"))
        .expect(1)
        .mount(&server)
        .await;
    let inner = Arc::new(OpenAiClient::new("openai", &server.uri(), None, false));
    let client = RetryingClient::new(inner, policy());
    let started = Instant::now();
    let resp = client.complete(&request("gpt-4o")).await.unwrap();
    assert_eq!(resp.message.tool_calls.len(), 2);
    // Our own backoff would wait at most 50 ms; Retry-After said 1 s.
    assert!(started.elapsed() >= Duration::from_millis(950), "{:?}", started.elapsed());
}

#[tokio::test]
async fn errors_that_cannot_succeed_are_not_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(401).set_body_string(r#"{"error":{"message":"Incorrect API key provided"}}"#),
        )
        .expect(1)
        .mount(&server)
        .await;
    let client = RetryingClient::new(Arc::new(OpenAiClient::new("openai", &server.uri(), None, false)), policy());
    let err = client.complete(&request("gpt-4o")).await.unwrap_err();
    assert!(matches!(err, ModelError::Auth { .. }));
}

#[tokio::test]
async fn server_errors_are_retried_then_reported() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503).set_body_string("upstream unavailable"))
        .expect(4)
        .mount(&server)
        .await;
    let client = RetryingClient::new(Arc::new(OpenAiClient::new("openai", &server.uri(), None, false)), policy());
    let err = client.complete(&request("gpt-4o")).await.unwrap_err();
    assert!(matches!(err, ModelError::Server { status: 503, .. }), "{err:?}");
}
