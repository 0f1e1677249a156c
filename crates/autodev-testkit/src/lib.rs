//! Test support shared by the engine and CLI test suites: a model that answers from a
//! script over real HTTP (wiremock, OpenAI chat-completions format), and throwaway git
//! repositories. Test code only; `unwrap` is fine here.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub mod pg;

/// A run as a test stores it directly (as the engine would), titled `title`, from `/tmp/repo`
/// at `main` (`abc`), with empty settings; and its `run_created` event. Tests change what they
/// need with struct update syntax.
pub fn new_run(title: &str) -> (autodev_store::NewRun, autodev_domain::EventKind) {
    let id = autodev_domain::RunId::new();
    let run = autodev_store::NewRun {
        id: id.to_string(),
        short_id: id.short(),
        title: title.into(),
        spec: format!("# {title}"),
        repo: "/tmp/repo".into(),
        base_branch: "main".into(),
        base_commit: "abc".into(),
        branch: format!("autodev/{}-{}", id.short(), autodev_domain::slugify(title, 40)),
        settings: "{}".into(),
        project_id: None,
        origin: None,
    };
    let created = autodev_domain::EventKind::RunCreated {
        title: title.into(),
        repo: "/tmp/repo".into(),
        base_branch: "main".into(),
        test_command: "true".into(),
    };
    (run, created)
}

use serde_json::{Value, json};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate, matchers::method};

/// Which conversation a chat-completions request belongs to, read from its prompts, and the
/// turn (the number of assistant messages already in it).
pub fn conversation_of(body: &Value) -> (String, u32) {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let text: String = messages.iter().filter_map(|m| m["content"].as_str()).collect::<Vec<_>>().join("\n");
    let turn = messages.iter().filter(|m| m["role"] == "assistant").count() as u32;
    let conv = if text.contains("Autodev doctor is checking") {
        "doctor".to_string()
    } else if text.contains("You are the planner") || text.contains("You plan code changes for Autodev") {
        // A revision (a rejected plan sent back with a comment) is a conversation of its own.
        match text.split("revision ").nth(1).and_then(|r| r.split(' ').next()) {
            Some(round) if text.contains("# A reviewer rejected the previous plan") => format!("planner:r{round}"),
            _ => "planner".to_string(),
        }
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

/// Scripted answers: (conversation, turn, asked with `response_format`) → tool calls.
type Turns = HashMap<(String, u32, bool), Vec<Value>>;

/// A model answering from a script: (conversation, turn) → tool calls.
#[derive(Clone, Default)]
pub struct Script {
    turns: Arc<Mutex<Turns>>,
    pub requests: Arc<Mutex<Vec<Value>>>,
}

impl Script {
    pub fn on(&self, conv: &str, turn: u32, calls: Vec<Value>) -> &Self {
        self.turns.lock().unwrap().insert((conv.to_string(), turn, false), calls);
        self
    }

    /// The reply's text when the request asks for structured output (`response_format`
    /// json_schema), as a server that honours it would constrain it. The server checks that
    /// the text is a call of a tool the schema offers (else it answers 400, failing the test);
    /// a request without `response_format` gets the `on` answer, as from a server that
    /// ignores the parameter.
    pub fn on_constrained(&self, conv: &str, turn: u32, reply: &str) -> &Self {
        self.turns.lock().unwrap().insert((conv.to_string(), turn, true), vec![text(reply)]);
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
        let schema = &body["response_format"]["json_schema"]["schema"];
        let constrained =
            if schema.is_null() { None } else { self.turns.lock().unwrap().get(&(conv.clone(), turn, true)).cloned() };
        if let Some(reply) = &constrained {
            let said: Value = serde_json::from_str(reply[0]["text"].as_str().unwrap_or("")).unwrap_or_default();
            let offered = schema["oneOf"].as_array().cloned().unwrap_or_default();
            let fits = offered.iter().any(|o| {
                o["properties"]["name"]["const"] == said["name"]
                    && o["properties"]["arguments"]["type"] == "object"
                    && said["arguments"].is_object()
            });
            if !fits {
                return ResponseTemplate::new(400).set_body_json(
                    json!({"error": {"message": format!("the scripted reply {said} does not fit the schema {schema}")}}),
                );
            }
        }
        let Some(calls) = constrained.or_else(|| self.turns.lock().unwrap().get(&(conv.clone(), turn, false)).cloned())
        else {
            return ResponseTemplate::new(400)
                .set_body_json(json!({"error": {"message": format!("no script for {conv} turn {turn}")}}));
        };
        // A scripted item `{"text": …}` is the reply's text rather than a tool call.
        let content: String = calls.iter().filter_map(|c| c["text"].as_str()).collect();
        let calls: Vec<Value> = calls.into_iter().filter(|c| c.get("text").is_none()).collect();
        let tool_calls: Vec<Value> = calls
            .iter()
            .enumerate()
            .map(|(i, c)| json!({"id": format!("call_{conv}_{turn}_{i}"), "type": "function", "function": c}))
            .collect();
        let usage = json!({"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100});
        if body["stream"] == json!(true) {
            // Chat-completions streaming: the id and name first, the arguments in two pieces.
            let mut sse = String::new();
            let mut chunk = |delta: Value, finish: Value, usage: Value| {
                let c = json!({"id": "chatcmpl-test", "object": "chat.completion.chunk", "model": body["model"], "choices": if delta.is_null() { json!([]) } else { json!([{"index": 0, "delta": delta, "finish_reason": finish}]) }, "usage": usage});
                sse.push_str(&format!("data: {c}\n\n"));
            };
            // The text in pieces (of about a third each), as a model writes it.
            chunk(json!({"role": "assistant", "content": ""}), Value::Null, Value::Null);
            let chars: Vec<char> = content.chars().collect();
            for piece in chars.chunks(chars.len().div_ceil(3).max(1)) {
                chunk(json!({"content": piece.iter().collect::<String>()}), Value::Null, Value::Null);
            }
            for (i, call) in tool_calls.iter().enumerate() {
                let args = call["function"]["arguments"].as_str().unwrap_or("").to_string();
                let (a, b) = args.split_at(args.char_indices().nth(args.chars().count() / 2).map_or(0, |(i, _)| i));
                chunk(
                    json!({"tool_calls": [{"index": i, "id": call["id"], "type": "function", "function": {"name": call["function"]["name"], "arguments": a}}]}),
                    Value::Null,
                    Value::Null,
                );
                chunk(json!({"tool_calls": [{"index": i, "function": {"arguments": b}}]}), Value::Null, Value::Null);
            }
            let finish = if tool_calls.is_empty() { "stop" } else { "tool_calls" };
            chunk(json!({}), json!(finish), Value::Null);
            chunk(Value::Null, Value::Null, usage);
            sse.push_str("data: [DONE]\n\n");
            return ResponseTemplate::new(200).set_body_raw(sse, "text/event-stream");
        }
        ResponseTemplate::new(200).set_body_json(json!({
            "id": "chatcmpl-test", "object": "chat.completion", "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "tool_calls": tool_calls}, "finish_reason": if tool_calls.is_empty() { "stop" } else { "tool_calls" }}],
            "usage": usage
        }))
    }
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

struct DelayedScript(Script, Duration);

impl Respond for DelayedScript {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        self.0.respond(request).set_delay(self.1)
    }
}

pub fn write(path: &str, content: &str) -> Value {
    call("write_file", json!({"path": path, "content": content}))
}

/// `read_file` of `path` (after which `write` may replace it).
pub fn read(path: &str) -> Value {
    call("read_file", json!({"path": path}))
}

/// A reply with text and no tool call.
pub fn text(content: &str) -> Value {
    json!({"text": content})
}

pub fn finish(summary: &str) -> Value {
    call("finish", json!({"summary": summary}))
}

impl Script {
    /// Serves this script on a new mock server, each answer after `delay`.
    pub async fn serve(&self, delay: Duration) -> MockServer {
        let server = MockServer::start().await;
        // Chat completions only: what else a client asks (llama.cpp's `/props`, Ollama's
        // `/api/show`) gets a 404, as from a server that does not have them.
        Mock::given(method("POST"))
            .and(wiremock::matchers::path_regex("/chat/completions$"))
            .respond_with(DelayedScript(self.clone(), delay))
            .mount(&server)
            .await;
        server
    }
}

/// The path of an outside program a test needs. A missing one fails the test with the one
/// command that sets up everything the suite needs (and the Debian package), never a silent pass.
pub fn require_program(program: &str, debian_package: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
        .unwrap_or_else(|| {
            panic!(
                "`{program}` is needed for this test and is not on PATH: run `scripts/test --setup` \
                 (it installs what the tests need), or `apt-get install {debian_package}`"
            )
        })
}

/// A Python with the official MCP SDK (`mcp` on PyPI), made on first use by `.ci/mcp-venv`,
/// and the client script that drives a server with it (`.ci/mcp_client.py`).
pub fn mcp_client() -> (PathBuf, PathBuf) {
    let ci = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.ci");
    let out = std::process::Command::new("bash").arg(ci.join("mcp-venv")).output().unwrap();
    assert!(out.status.success(), "could not make the MCP venv: {}", String::from_utf8_lossy(&out.stderr));
    (PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()), ci.join("mcp_client.py"))
}
