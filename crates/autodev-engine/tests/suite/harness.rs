//! The engine under test, wired to a scripted model (see autodev-testkit) and a throwaway
//! repository.
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use autodev_domain::{Event, RunState, Spec};
use autodev_engine::{Engine, Outcome, RunRequest, RunSettings};
use autodev_llm::{OpenAiClient, PriceTable, RetryPolicy, RetryingClient};
use autodev_store::Store;
pub use autodev_testkit::*;
use tokio_util::sync::CancellationToken;
use wiremock::MockServer;

pub struct TestApp {
    pub _dir: tempfile::TempDir,
    pub repo: PathBuf,
    pub home: PathBuf,
    pub server: MockServer,
    pub script: Script,
    pub engine: Engine,
}

/// The settings the tests run with (the model is the scripted server behind the engine).
pub fn settings() -> RunSettings {
    RunSettings {
        test_command: "sh check.sh".into(),
        provider: "openai".into(),
        model: "gpt-4.1-mini".into(),
        test_timeout_secs: 60,
        ..RunSettings::default()
    }
}

impl TestApp {
    pub async fn new() -> Self {
        Self::with_delay(Duration::ZERO).await
    }

    pub async fn with_delay(delay: Duration) -> Self {
        // Agents' commands run in bubblewrap (the default sandbox mode).
        autodev_testkit::require_program("bwrap", "bubblewrap");
        let dir = tempfile::tempdir().unwrap();
        let repo = make_repo(dir.path());
        let home = dir.path().join("home");
        let script = Script::default();
        let server = script.serve(delay).await;
        let store = Store::open(&home.join("autodev.db")).await.unwrap();
        let client = Arc::new(OpenAiClient::new("openai", &format!("{}/v1", server.uri()), None, false));
        let policy =
            RetryPolicy { max_retries: 1, min_delay: Duration::from_millis(5), max_delay: Duration::from_millis(20) };
        let model = Arc::new(RetryingClient::new(client, policy));
        let engine = Engine::new(store, model, PriceTable::default(), &home);
        Self { _dir: dir, repo, home, server, script, engine }
    }

    pub async fn create(&self, settings: RunSettings, spec: &str) -> String {
        let req =
            RunRequest { repo: self.repo.clone(), spec: Spec::parse(spec.as_bytes()).unwrap(), base: None, settings };
        self.engine.create_run(req).await.unwrap().id
    }

    pub async fn run(&self, settings: RunSettings, spec: &str) -> (String, Outcome) {
        let id = self.create(settings, spec).await;
        let outcome = self.engine.drive(&id, CancellationToken::new()).await.unwrap();
        (id, outcome)
    }

    pub async fn events(&self, id: &str) -> Vec<Event> {
        self.engine.store().events(id, 0).await.unwrap()
    }

    pub async fn reason(&self, id: &str) -> String {
        self.engine.store().get_run(id).await.unwrap().reason.unwrap_or_default()
    }
}

pub fn succeeded() -> Outcome {
    Outcome::Finished(RunState::Succeeded)
}

/// The tool results a model request carried back, in order.
pub fn tool_results(body: &serde_json::Value) -> Vec<String> {
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| m["content"].as_str().unwrap_or("").to_string())
        .collect()
}
