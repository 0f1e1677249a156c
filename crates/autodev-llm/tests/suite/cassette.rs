use std::sync::Arc;

use autodev_domain::{ModelClient, ModelError};
use autodev_llm::{OpenAiClient, Recorder, Replayer};
use pretty_assertions::assert_eq;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::{fixture, request};

#[tokio::test]
async fn a_recorded_exchange_replays_without_the_network() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(fixture("openai_tool_call.json"), "application/json"))
        .expect(1)
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.cassette.jsonl");
    let recorder = Recorder::new(Arc::new(OpenAiClient::new("openai", &server.uri(), None, false)), &path).unwrap();
    let live = recorder.complete(&request("gpt-4o")).await.unwrap();
    drop(server);

    let replayer = Replayer::load(&path).unwrap();
    assert_eq!(replayer.len(), 1);
    let replayed = replayer.complete(&request("gpt-4o")).await.unwrap();
    assert_eq!(replayed, live);

    let mut other = request("gpt-4o");
    other.meta.turn = 7;
    let err = replayer.complete(&other).await.unwrap_err();
    assert!(matches!(err, ModelError::ReplayMiss { turn: 7, .. }), "{err:?}");
}

#[test]
fn a_broken_cassette_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.jsonl");
    std::fs::write(&path, "\n{\"conversation\": 3}\n").unwrap();
    let err = Replayer::load(&path).err().unwrap();
    assert!(err.to_string().contains("line 2"), "{err}");
    assert!(Replayer::load(&dir.path().join("missing.jsonl")).is_err());
}
