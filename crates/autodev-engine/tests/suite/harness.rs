//! A scripted model and a throwaway repository for engine tests.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use autodev_domain::{Event, RunState, Spec};
use autodev_engine::{Engine, Outcome, RunRequest, RunSettings};
use autodev_llm::{OpenAiClient, PriceTable, RetryPolicy, RetryingClient};
use autodev_store::Store;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate, matchers::method};

/// Which conversation a chat-completions request belongs to, read from its prompts, and the
/// turn (the number of assistant messages already in it).
pub fn conversation_of(body: &Value) -> (String, u32) {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let text: String = messages.iter().filter_map(|m| m["content"].as_str()).collect::<Vec<_>>().join("\n");
    let turn = messages.iter().filter(|m| m["role"] == "assistant").count() as u32;
    let conv = if text.contains("You are the planner") {
        "planner".to_string()
    } else if let Some(rest) = text.split("# Your task: ").nth(1) {
        format!("task:{}", rest.split(' ').next().unwrap_or(""))
    } else if let Some(rest) = text.split("(repair round ").nth(1) {
        format!("repair:{}", rest.split(')').next().unwrap_or(""))
    } else if let Some(rest) = text.split("Merging task ").nth(1) {
        format!("merge:{}", rest.split(' ').next().unwrap_or(""))
    } else {
        "unknown".to_string()
    };
    (conv, turn)
}

pub fn call(name: &str, args: Value) -> Value {
    json!({"name": name, "arguments": args.to_string()})
}

/// A model answering from a script: (conversation, turn) → tool calls.
#[derive(Clone, Default)]
pub struct Script {
    turns: Arc<Mutex<HashMap<(String, u32), Vec<Value>>>>,
    pub requests: Arc<Mutex<Vec<Value>>>,
}

impl Script {
    pub fn on(&self, conv: &str, turn: u32, calls: Vec<Value>) -> &Self {
        self.turns.lock().unwrap().insert((conv.to_string(), turn), calls);
        self
    }

    pub fn plan(&self, tasks: Value) -> &Self {
        self.on("planner", 0, vec![call("submit_plan", json!({"summary": "The plan.", "tasks": tasks}))])
    }

    /// Requests received for a conversation.
    pub fn requests_for(&self, conv: &str) -> Vec<Value> {
        self.requests.lock().unwrap().iter().filter(|b| conversation_of(b).0 == conv).cloned().collect()
    }
}

impl Respond for Script {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&request.body).unwrap_or_default();
        self.requests.lock().unwrap().push(body.clone());
        let (conv, turn) = conversation_of(&body);
        let Some(calls) = self.turns.lock().unwrap().get(&(conv.clone(), turn)).cloned() else {
            return ResponseTemplate::new(400).set_body_json(json!({"error": {"message": format!("no script for {conv} turn {turn}")}}));
        };
        let tool_calls: Vec<Value> = calls
            .iter()
            .enumerate()
            .map(|(i, c)| json!({"id": format!("call_{conv}_{turn}_{i}"), "type": "function", "function": c}))
            .collect();
        ResponseTemplate::new(200).set_body_json(json!({
            "id": "chatcmpl-test", "object": "chat.completion", "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "tool_calls": tool_calls}, "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100}
        }))
    }
}

pub struct TestApp {
    pub _dir: tempfile::TempDir,
    pub repo: PathBuf,
    pub home: PathBuf,
    pub server: MockServer,
    pub script: Script,
    pub engine: Engine,
}

pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A repository whose test (`sh check.sh`) passes when `greeting.txt` says hello.
pub fn make_repo(root: &Path) -> PathBuf {
    let repo = root.join("project");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "--quiet", "-b", "main"]);
    std::fs::write(repo.join("README.md"), "# Project\n").unwrap();
    std::fs::write(repo.join("check.sh"), "#!/bin/sh\nset -e\ngrep -q hello greeting.txt\necho all good\n").unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "--quiet", "-m", "initial"]);
    repo
}

pub fn settings(server: &MockServer) -> RunSettings {
    let _ = server;
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
        let dir = tempfile::tempdir().unwrap();
        let repo = make_repo(dir.path());
        let home = dir.path().join("home");
        let server = MockServer::start().await;
        let script = Script::default();
        Mock::given(method("POST")).respond_with(DelayedScript(script.clone(), delay)).mount(&server).await;
        let store = Store::open(&home.join("autodev.db")).await.unwrap();
        let client = Arc::new(OpenAiClient::new("openai", &format!("{}/v1", server.uri()), None, false));
        let policy = RetryPolicy { max_retries: 1, min_delay: Duration::from_millis(5), max_delay: Duration::from_millis(20) };
        let model = Arc::new(RetryingClient::new(client, policy));
        let engine = Engine::new(store, model, PriceTable::default(), &home);
        Self { _dir: dir, repo, home, server, script, engine }
    }

    pub async fn create(&self, settings: RunSettings, spec: &str) -> String {
        let req = RunRequest { repo: self.repo.clone(), spec: Spec::parse(spec.as_bytes()).unwrap(), base: None, settings };
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

struct DelayedScript(Script, Duration);

impl Respond for DelayedScript {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        self.0.respond(request).set_delay(self.1)
    }
}

pub fn succeeded() -> Outcome {
    Outcome::Finished(RunState::Succeeded)
}

pub fn write(path: &str, content: &str) -> Value {
    call("write_file", json!({"path": path, "content": content}))
}

pub fn finish(summary: &str) -> Value {
    call("finish", json!({"summary": summary}))
}
