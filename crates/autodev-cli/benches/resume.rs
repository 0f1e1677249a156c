//! Time from `autodev resume` starting to its first new agent step.
//!
//! `cargo bench -p autodev-cli --bench resume`
//!
//! Each round: a run with a 60-step task is started against a scripted model served over
//! HTTP, killed with SIGKILL after 30 recorded steps, then resumed with `--replay` of a
//! cassette holding the remaining turns (so the model answers instantly and only Autodev's
//! own start-up is measured: process start, opening the store, claiming the run, rebuilding
//! the conversation from 30 recorded steps, and the first new step persisted and printed).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]
use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use autodev_domain::{EventKind, Message, ModelResponse, StopReason, ToolCall, Usage};
use autodev_store::Store;
use autodev_testkit::{Script, call, finish, make_repo};
use serde_json::json;

const STEPS: u32 = 60;
const KILL_AFTER: usize = 31; // the planner's call and 30 task steps

/// Task step `turn`: a different call each turn (the same one again and again is stopped as
/// a loop), and one write, since a run that changes nothing does not succeed.
fn step(turn: u32) -> (&'static str, serde_json::Value) {
    if turn == STEPS - 1 {
        ("write_file", json!({"path": "bench.txt", "content": "done\n"}))
    } else {
        ("search", json!({"pattern": format!("p{turn}")}))
    }
}

fn cassette(path: &std::path::Path) {
    let mut f = std::fs::File::create(path).unwrap();
    for turn in 0..=STEPS {
        let (name, args) = if turn == STEPS { ("finish", json!({"summary": "done"})) } else { step(turn) };
        let response = ModelResponse {
            fallbacks: Vec::new(),
            message: Message::assistant(
                "",
                vec![ToolCall {
                    id: format!("r{turn}"),
                    name: name.into(),
                    arguments: args.to_string(),
                    signature: None,
                }],
            ),
            usage: Usage { input_tokens: 1000, output_tokens: 20 },
            stop_reason: StopReason::ToolUse,
            model: "bench".into(),
        };
        let line = json!({"conversation": "task:t1", "turn": turn, "response": response});
        writeln!(f, "{line}").unwrap();
    }
}

async fn recorded(home: &std::path::Path, run_id: &str) -> usize {
    let store = Store::open(&home.join("autodev.db")).await.unwrap();
    store.events(run_id, 0).await.unwrap().iter().filter(|e| matches!(e.kind, EventKind::ModelCall { .. })).count()
}

async fn round(script: &Script, server_uri: &str, cassette_path: &std::path::Path) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let repo = make_repo(dir.path());
    let home = dir.path().join("home");
    let spec = dir.path().join("spec.md");
    std::fs::write(&spec, "# Bench\n").unwrap();
    let bin = env!("CARGO_BIN_EXE_autodev");
    let mut child = Command::new(bin)
        .args(["run", "--json", "--test-command", "true", "--max-steps", "100"])
        .arg("--repo")
        .arg(&repo)
        .arg("--spec")
        .arg(&spec)
        .env("AUTODEV_HOME", &home)
        .env("OPENAI_BASE_URL", server_uri)
        .env("OPENAI_API_KEY", "sk-bench")
        .env_remove("ANTHROPIC_API_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    let run_id = first["run_id"].as_str().unwrap().to_string();
    while recorded(&home, &run_id).await < KILL_AFTER {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let _ = script;

    let started = Instant::now();
    let mut child = Command::new(bin)
        .args(["resume", "--json", &run_id])
        .arg("--replay")
        .arg(cassette_path)
        .env("AUTODEV_HOME", &home)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut first_step = None;
    for line in lines.by_ref() {
        let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        if first_step.is_none() && matches!(v["type"].as_str(), Some("agent_step" | "model_call" | "tool_finished")) {
            first_step = Some(started.elapsed());
        }
        if v["type"] == "summary" {
            assert_eq!(v["state"], "succeeded", "{v}");
        }
    }
    assert!(child.wait().unwrap().success());
    first_step.expect("the resumed run made no new step")
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let script = Script::default();
        script.plan(json!([{"id": "t1", "title": "Work", "description": "", "depends_on": [], "acceptance": []}]));
        for turn in 0..STEPS {
            let (name, args) = step(turn);
            script.on("task:t1", turn, vec![call(name, args)]);
        }
        script.on("task:t1", STEPS, vec![finish("done")]);
        let server = script.serve(Duration::from_millis(5)).await;
        let dir = tempfile::tempdir().unwrap();
        let cassette_path = dir.path().join("rest.jsonl");
        cassette(&cassette_path);
        let mut times = Vec::new();
        for _ in 0..10 {
            times.push(round(&script, &format!("{}/v1", server.uri()), &cassette_path).await);
        }
        times.sort();
        println!(
            "resume → first new step, after a kill -9 at {} recorded steps ({} rounds): median {:.1} ms, min {:.1} ms, max {:.1} ms",
            KILL_AFTER - 1,
            times.len(),
            times[times.len() / 2].as_secs_f64() * 1e3,
            times[0].as_secs_f64() * 1e3,
            times[times.len() - 1].as_secs_f64() * 1e3
        );
    });
}
