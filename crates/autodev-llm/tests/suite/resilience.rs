//! The provider guard (rate limit, circuit breaker) and the fallback list, against real HTTP.
use std::sync::Arc;
use std::time::{Duration, Instant};

use autodev_domain::{ModelClient, ModelError};
use autodev_llm::{
    Candidate, FallbackClient, Guard, GuardSettings, GuardedClient, OpenAiClient, RetryPolicy, RetryingClient,
};
use serde_json::Value;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::{fixture, request};

fn ok() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_raw(fixture("openai_tool_call.json"), "application/json")
}

fn overloaded() -> ResponseTemplate {
    ResponseTemplate::new(503).set_body_string(r#"{"error":{"message":"The server is overloaded"}}"#)
}

fn openai(server: &MockServer, name: &str) -> Arc<dyn ModelClient> {
    Arc::new(OpenAiClient::new(name, &server.uri(), None, false))
}

fn breaker(failures: u32, cooldown_ms: u64) -> GuardSettings {
    GuardSettings {
        breaker_failures: failures,
        breaker_cooldown: Duration::from_millis(cooldown_ms),
        ..GuardSettings::default()
    }
}

#[tokio::test]
async fn the_breaker_opens_after_consecutive_failures_and_half_opens_after_the_cooldown() {
    let server = MockServer::start().await;
    Mock::given(method("POST")).respond_with(overloaded()).up_to_n_times(3).expect(3).mount(&server).await;
    Mock::given(method("POST")).respond_with(ok()).expect(2).mount(&server).await;
    let guard = Arc::new(Guard::new("openai", breaker(3, 600)));
    let client = GuardedClient::new(openai(&server, "openai"), guard);
    for _ in 0..3 {
        assert!(matches!(client.complete(&request("gpt-4o")).await, Err(ModelError::Server { status: 503, .. })));
    }
    // Open: refused at once, nothing sent.
    let started = Instant::now();
    let err = client.complete(&request("gpt-4o")).await.unwrap_err();
    assert!(matches!(err, ModelError::Unavailable { .. }), "{err}");
    assert!(!err.is_retryable() && err.may_fall_back());
    assert!(err.to_string().contains("circuit breaker is open after 3 consecutive failures"), "{err}");
    assert!(started.elapsed() < Duration::from_millis(50));
    assert_eq!(server.received_requests().await.unwrap().len(), 3);
    // After the cooldown one trial call goes through; it succeeds and the breaker closes.
    tokio::time::sleep(Duration::from_millis(700)).await;
    client.complete(&request("gpt-4o")).await.unwrap();
    client.complete(&request("gpt-4o")).await.unwrap();
    assert_eq!(server.received_requests().await.unwrap().len(), 5);
}

#[tokio::test]
async fn refused_requests_do_not_open_the_breaker() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_string(r#"{"error":{"message":"bad tool schema"}}"#))
        .mount(&server)
        .await;
    let client = GuardedClient::new(openai(&server, "openai"), Arc::new(Guard::new("openai", breaker(2, 60_000))));
    for _ in 0..4 {
        assert!(matches!(client.complete(&request("gpt-4o")).await, Err(ModelError::Request { .. })));
    }
    assert_eq!(server.received_requests().await.unwrap().len(), 4);
}

#[tokio::test]
async fn the_token_rate_limit_spaces_calls() {
    let server = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ok()).mount(&server).await;
    // 6,000 tokens a minute (100 a second); each call asks for 3,000 output tokens and a few
    // input: the first passes at once, the second waits for the few it lacks.
    let settings = GuardSettings { tokens_per_minute: Some(6_000), ..GuardSettings::default() };
    let client = GuardedClient::new(openai(&server, "openai"), Arc::new(Guard::new("openai", settings)));
    let mut req = request("gpt-4o");
    req.max_output_tokens = 3_000;
    let started = Instant::now();
    client.complete(&req).await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(200));
    client.complete(&req).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(250), "{:?}", started.elapsed());
}

/// A chaos drill at the client level: the primary fails every call; each call is answered by
/// the fallback, with the switch and its reason recorded; once the primary's breaker is open
/// the switch is immediate.
#[tokio::test]
async fn a_failing_primary_falls_back_with_the_switch_recorded() {
    let primary = MockServer::start().await;
    Mock::given(method("POST")).respond_with(overloaded()).mount(&primary).await;
    let backup = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ok()).mount(&backup).await;
    let policy =
        RetryPolicy { max_retries: 1, min_delay: Duration::from_millis(5), max_delay: Duration::from_millis(10) };
    let guarded = |server: &MockServer, name: &str| -> Arc<dyn ModelClient> {
        let g = GuardedClient::new(openai(server, name), Arc::new(Guard::new(name, breaker(2, 60_000))));
        Arc::new(RetryingClient::new(Arc::new(g), policy))
    };
    let client = FallbackClient::new(
        guarded(&primary, "openai"),
        vec![Candidate {
            provider: "groq".into(),
            model: "llama-3.3-70b-versatile".into(),
            client: guarded(&backup, "groq"),
        }],
    );
    assert_eq!(
        client.candidates("gpt-4o"),
        vec![("openai".into(), "gpt-4o".into()), ("groq".into(), "llama-3.3-70b-versatile".into())]
    );
    let first = client.complete(&request("gpt-4o")).await.unwrap();
    assert_eq!(first.served_by(), Some(("groq", "llama-3.3-70b-versatile")));
    assert_eq!(first.fallbacks.len(), 1);
    assert_eq!(
        (first.fallbacks[0].from_provider.as_str(), first.fallbacks[0].from_model.as_str()),
        ("openai", "gpt-4o")
    );
    assert!(first.fallbacks[0].reason.contains("HTTP 503"), "{}", first.fallbacks[0].reason);
    // The primary was tried twice (one retry), which opened its breaker.
    assert_eq!(primary.received_requests().await.unwrap().len(), 2);
    let second = client.complete(&request("gpt-4o")).await.unwrap();
    assert!(second.fallbacks[0].reason.contains("unavailable"), "{}", second.fallbacks[0].reason);
    assert_eq!(primary.received_requests().await.unwrap().len(), 2);
    // The fallback was asked for its own model.
    let sent: Value = serde_json::from_slice(&backup.received_requests().await.unwrap()[0].body).unwrap();
    assert_eq!(sent["model"], "llama-3.3-70b-versatile");
}

#[tokio::test]
async fn when_every_provider_fails_the_last_error_is_returned() {
    let primary = MockServer::start().await;
    Mock::given(method("POST")).respond_with(overloaded()).mount(&primary).await;
    let backup = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(401).set_body_string(r#"{"error":{"message":"Invalid API Key"}}"#))
        .mount(&backup)
        .await;
    let client = FallbackClient::new(
        openai(&primary, "openai"),
        vec![Candidate { provider: "groq".into(), model: "m".into(), client: openai(&backup, "groq") }],
    );
    let err = client.complete(&request("gpt-4o")).await.unwrap_err();
    assert!(matches!(err, ModelError::Auth { .. }), "{err}");
}

/// Retries, the breaker's state and fallbacks are `/metrics` series (rendered here by the
/// same Prometheus exporter the server installs).
#[test]
fn retries_breaker_state_and_fallbacks_are_metrics() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let primary = MockServer::start().await;
            Mock::given(method("POST")).respond_with(overloaded()).mount(&primary).await;
            let backup = MockServer::start().await;
            Mock::given(method("POST")).respond_with(ok()).mount(&backup).await;
            let policy = RetryPolicy {
                max_retries: 1,
                min_delay: Duration::from_millis(5),
                max_delay: Duration::from_millis(10),
            };
            let g = GuardedClient::new(openai(&primary, "openai"), Arc::new(Guard::new("openai", breaker(2, 60_000))));
            let client = FallbackClient::new(
                Arc::new(RetryingClient::new(Arc::new(g), policy)),
                vec![Candidate { provider: "groq".into(), model: "m".into(), client: openai(&backup, "groq") }],
            );
            client.complete(&request("gpt-4o")).await.unwrap();
            client.complete(&request("gpt-4o")).await.unwrap();
        });
    });
    let text = handle.render();
    for want in [
        "autodev_model_retries_total{provider=\"openai\"} 1",
        "autodev_model_breaker_state{provider=\"openai\"} 2",
        "autodev_model_breaker_opened_total{provider=\"openai\"} 1",
        "autodev_model_breaker_rejections_total{provider=\"openai\"} 1",
        "autodev_model_fallbacks_total{from=\"openai\",to=\"groq\"} 2",
    ] {
        assert!(text.contains(want), "missing {want} in:\n{text}");
    }
}
