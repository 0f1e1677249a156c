//! Every run as one OpenTelemetry trace: the export is received by a real OTLP/HTTP endpoint
//! that decodes it with OpenTelemetry's own protobuf classes (`scripts/otlp-receiver`, the
//! `opentelemetry-proto` package), and the span tree of a run with two parallel tasks, a
//! repair round, a plan gate and a resume in a second process is checked.
use std::collections::HashMap;
use std::io::BufRead;
use std::process::Stdio;
use std::time::Duration;

use autodev_testkit::{Script, finish, make_repo, write};
use serde_json::{Value, json};

use super::{Reaper, autodev, output};

/// The receiver (killed and reaped when dropped).
struct Receiver(std::process::Child);

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The receiver, listening; its spans land in `out`.
fn receiver(out: &std::path::Path) -> (Receiver, String) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/otlp-receiver");
    let mut child = Receiver(
        std::process::Command::new(script).arg(out).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap(),
    );
    let mut lines = std::io::BufReader::new(child.0.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let url = first.strip_prefix("listening on ").unwrap_or_else(|| panic!("{first}")).to_string();
    (child, url)
}

fn spans(out: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(out).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or_else(|| panic!("not an int attribute: {v}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_across_a_gate_and_two_processes_is_one_trace() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("spans.jsonl");
    let (_receiver, endpoint) = receiver(&out);
    let repo = make_repo(dir.path());
    let home = dir.path().join("home");
    // Two tasks with no dependency (parallel); the first writes the wrong greeting, so the
    // tests fail once and a repair round fixes it.
    let script = Script::default();
    script
        .plan(json!([
            {"id": "t1", "title": "Add greeting", "description": "", "depends_on": [], "acceptance": []},
            {"id": "t2", "title": "Add notes", "description": "", "depends_on": [], "acceptance": []}
        ]))
        .on("task:t1", 0, vec![write("greeting.txt", "hi\n")])
        .on("task:t1", 1, vec![finish("greeted")])
        .on("task:t2", 0, vec![write("notes.txt", "notes\n")])
        .on("task:t2", 1, vec![finish("noted")])
        .on("repair:1", 0, vec![autodev_testkit::read("greeting.txt"), write("greeting.txt", "hello\n")])
        .on("repair:1", 1, vec![finish("fixed the greeting")]);
    let server = script.serve(Duration::from_millis(30)).await;
    let spec = dir.path().join("spec.md");
    std::fs::write(&spec, "# Greet\n\nSay hello, and keep notes.\n").unwrap();
    let traced = |cmd: &mut std::process::Command| {
        cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
            .env("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=test")
            .env("OPENAI_BASE_URL", format!("{}/v1", server.uri()))
            .env("OPENAI_API_KEY", "sk-test");
    };

    // The first process plans and stops at the plan gate.
    let mut first = autodev(&home);
    first
        .args(["run", "--approve", "--test-command", "sh check.sh", "--max-parallel", "2"])
        .arg("--repo")
        .arg(&repo)
        .arg("--spec")
        .arg(&spec);
    traced(&mut first);
    let (code, stdout, stderr) = output(&mut first);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stderr.contains("the plan awaits approval"), "{stderr}");
    let (_, stdout, _) = output(autodev(&home).args(["runs", "list", "--json"]));
    let runs: Value = serde_json::from_str(&stdout).unwrap();
    let run_id = runs[0]["id"].as_str().unwrap().to_string();
    let short = runs[0]["short_id"].as_str().unwrap().to_string();
    let (code, _, stderr) = output(autodev(&home).args(["approve", &short]));
    assert_eq!(code, 0, "{stderr}");
    // A second process continues it.
    let mut second = autodev(&home);
    second.args(["resume", &short]);
    traced(&mut second);
    let (code, stdout, stderr) = output(&mut second);
    assert_eq!(code, 0, "{stdout}{stderr}");

    // The processes flushed their spans as they exited.
    let all = spans(&out);
    let run: Vec<&Value> = all
        .iter()
        .filter(|s| s["attributes"]["autodev.run.id"] == json!(run_id) || s["name"] == "run created")
        .collect();
    assert!(!run.is_empty(), "no span arrived");
    let trace = run[0]["trace_id"].as_str().unwrap();
    let mine: Vec<&Value> = all.iter().filter(|s| s["trace_id"] == trace).collect();
    assert!(run.iter().all(|s| s["trace_id"] == trace), "one trace for the run");
    let by_id: HashMap<&str, &Value> = mine.iter().map(|s| (s["span_id"].as_str().unwrap(), *s)).collect();
    let parent_of = |s: &Value| by_id.get(s["parent"].as_str().unwrap()).copied();
    let named = |name: &str| -> Vec<&Value> { mine.iter().copied().filter(|s| s["name"] == name).collect() };
    // One root: the run's creation.
    let roots: Vec<&&Value> = mine.iter().filter(|s| s["parent"] == "").collect();
    assert_eq!(roots.len(), 1, "{roots:#?}");
    assert_eq!(roots[0]["name"], "run created");
    assert_eq!(roots[0]["service"], "autodev");
    assert_eq!(roots[0]["resource"]["deployment.environment.name"], "test");
    // Every other span's parent arrived too, and every span ended.
    for s in &mine {
        if s["parent"] != "" {
            assert!(parent_of(s).is_some(), "{} has no parent in the trace", s["name"]);
        }
        assert!(s["end"].as_u64().unwrap() >= s["start"].as_u64().unwrap() && s["end"].as_u64().unwrap() > 0);
    }
    // Two drives (one per process), under the creation; no span covers the wait at the gate.
    let drives = named(&format!("run {short}"));
    assert_eq!(drives.len(), 2, "{drives:#?}");
    for d in &drives {
        assert_eq!(parent_of(d).unwrap()["name"], "run created");
    }
    assert_ne!(drives[0]["attributes"]["autodev.process"], drives[1]["attributes"]["autodev.process"]);
    let (early, late) = if drives[0]["start"].as_u64() < drives[1]["start"].as_u64() {
        (drives[0], drives[1])
    } else {
        (drives[1], drives[0])
    };
    assert!(early["end"].as_u64().unwrap() <= late["start"].as_u64().unwrap(), "the first drive ended at the gate");
    let phase_parent = |name: &str| parent_of(named(name)[0]).unwrap()["span_id"].clone();
    assert_eq!(phase_parent("plan"), early["span_id"]);
    for phase in ["execute", "verify", "deliver"] {
        assert_eq!(named(phase).len(), 1, "{phase}");
        assert_eq!(phase_parent(phase), late["span_id"], "{phase}");
    }
    // The tasks ran in parallel under `execute`.
    let (t1, t2) = (named("task t1")[0], named("task t2")[0]);
    for t in [t1, t2] {
        assert_eq!(parent_of(t).unwrap()["name"], "execute");
    }
    let overlap = t1["start"].as_u64().unwrap().max(t2["start"].as_u64().unwrap())
        < t1["end"].as_u64().unwrap().min(t2["end"].as_u64().unwrap());
    assert!(overlap, "the two tasks did not overlap");
    // Test rounds and the repair round under `verify`.
    let verify = named("verify")[0]["span_id"].clone();
    for round in ["tests round 0", "tests round 1"] {
        let t = named(round)[0];
        assert_eq!(parent_of(t).unwrap()["span_id"], verify, "{round}");
    }
    assert_eq!(named("tests round 0")[0]["attributes"]["autodev.tests.passed"], false);
    assert_eq!(named("tests round 1")[0]["attributes"]["autodev.tests.passed"], true);
    // Model calls: the GenAI conventions, each under its agent's span.
    let chats: Vec<&Value> =
        mine.iter().copied().filter(|s| s["name"].as_str().unwrap().starts_with("chat ")).collect();
    assert!(chats.len() >= 7, "{}", chats.len());
    for c in &chats {
        let a = &c["attributes"];
        assert_eq!(a["gen_ai.operation.name"], "chat");
        assert_eq!(a["gen_ai.provider.name"], "openai");
        assert!(a["gen_ai.request.model"].is_string());
        assert!(int(&a["gen_ai.usage.input_tokens"]) > 0 && int(&a["gen_ai.usage.output_tokens"]) >= 0);
        assert_eq!(a["autodev.run.id"], json!(run_id));
        assert_eq!(c["kind"], 3, "a client span");
    }
    let repair: Vec<&&Value> = chats.iter().filter(|c| c["attributes"]["autodev.conversation"] == "repair:1").collect();
    assert!(!repair.is_empty());
    assert_eq!(parent_of(repair[0]).unwrap()["name"], "verify");
    let task_call = chats.iter().find(|c| c["attributes"]["autodev.conversation"] == "task:t1").unwrap();
    assert_eq!(parent_of(task_call).unwrap()["name"], "task t1");
    // Each request to the model carried the trace on: its `traceparent` names the call's span.
    let asked = server.received_requests().await.unwrap();
    let carried: Vec<String> =
        asked.iter().filter_map(|r| r.headers.get("traceparent").map(|v| v.to_str().unwrap().to_string())).collect();
    assert_eq!(carried.len(), asked.len(), "every model request carries a traceparent");
    for tp in &carried {
        let span_id = tp.split('-').nth(2).unwrap();
        assert!(tp.starts_with(&format!("00-{trace}-")), "{tp}");
        assert!(chats.iter().any(|c| c["span_id"] == span_id), "{tp} names no model-call span");
    }
    // Tool calls under their agent too.
    let writes = named("execute_tool write_file");
    assert!(writes.len() >= 3);
    assert!(writes.iter().all(|w| parent_of(w).is_some()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_that_is_down_changes_nothing_for_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let repo = make_repo(dir.path());
    let script = Script::default();
    script
        .plan(json!([{"id": "t1", "title": "Add greeting", "description": "", "depends_on": [], "acceptance": []}]))
        .on("task:t1", 0, vec![write("greeting.txt", "hello\n")])
        .on("task:t1", 1, vec![finish("greeted")]);
    let server = script.serve(Duration::ZERO).await;
    let spec = dir.path().join("spec.md");
    std::fs::write(&spec, "# Greet\n\nSay hello.\n").unwrap();
    // Nothing listens on port 9 (discard): every export is refused.
    let started = std::time::Instant::now();
    let (code, stdout, stderr) = output(
        autodev(&dir.path().join("home"))
            .args(["run", "--json", "--test-command", "sh check.sh"])
            .arg("--repo")
            .arg(&repo)
            .arg("--spec")
            .arg(&spec)
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
            .env("OPENAI_BASE_URL", format!("{}/v1", server.uri()))
            .env("OPENAI_API_KEY", "sk-test"),
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    let last: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(last["state"], "succeeded");
    assert!(started.elapsed() < Duration::from_secs(60), "{:?}", started.elapsed());
    // A protocol Autodev does not speak is a clear error before anything runs.
    let (code, _, stderr) = output(
        autodev(&dir.path().join("home"))
            .args(["runs", "list"])
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
    );
    assert_eq!(code, 2);
    assert!(stderr.contains("OTEL_EXPORTER_OTLP_PROTOCOL=grpc is not supported"), "{stderr}");
}

/// A run made over the API continues the caller's trace: the request honours `traceparent`
/// and answers with its own, and the run's spans (made by the server's worker) are in it.
#[tokio::test(flavor = "multi_thread")]
async fn an_api_request_carries_the_callers_trace_into_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("spans.jsonl");
    let (_receiver, endpoint) = receiver(&out);
    let home = dir.path().join("home");
    let script = Script::default();
    script
        .plan(json!([{"id": "t1", "title": "Add greeting", "description": "", "depends_on": [], "acceptance": []}]))
        .on("task:t1", 0, vec![write("greeting.txt", "hello\n")])
        .on("task:t1", 1, vec![finish("greeted")]);
    let server = script.serve(Duration::ZERO).await;
    let repo = make_repo(dir.path());
    let (_, stdout, _) = output(autodev(&home).args(["keys", "create", "--name", "boss", "--role", "admin"]));
    let key = stdout.lines().last().unwrap().to_string();
    let (mut child, base) = super::start_serve(
        autodev(&home)
            .env("OPENAI_BASE_URL", format!("{}/v1", server.uri()))
            .env("OPENAI_API_KEY", "sk-test")
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
            .env("OTEL_SERVICE_NAME", "autodev-test"),
        1,
    );
    let _reaper = Reaper(child.id());
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{base}/api/v1/projects"))
        .bearer_auth(&key)
        .json(&json!({"name": "proj", "repository": repo, "test_command": "sh check.sh"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let r = http
        .post(format!("{base}/api/v1/runs"))
        .bearer_auth(&key)
        .header("traceparent", format!("00-{caller_trace}-{caller_span}-01"))
        .json(&json!({"project": "proj", "spec": "# Greet\n\nSay hello."}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let answered = r.headers().get("traceparent").unwrap().to_str().unwrap().to_string();
    assert!(answered.starts_with(&format!("00-{caller_trace}-")) && !answered.contains(caller_span), "{answered}");
    let run: Value = r.json().await.unwrap();
    let id = run["id"].as_str().unwrap().to_string();
    let state = super::run_end(&base, &key, &id).await;
    assert_eq!(state, "succeeded");
    // SIGTERM: the server stops and sends what it still holds.
    assert!(std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let all = spans(&out);
    let request =
        all.iter().find(|s| s["name"] == "POST /api/v1/runs").unwrap_or_else(|| panic!("no request span in {all:#?}"));
    assert_eq!((request["trace_id"].as_str(), request["parent"].as_str()), (Some(caller_trace), Some(caller_span)));
    assert_eq!(request["kind"], 2, "a server span");
    assert_eq!(request["service"], "autodev-test");
    let created = all.iter().find(|s| s["name"] == "run created").unwrap();
    assert_eq!(created["parent"], request["span_id"]);
    let drive = all
        .iter()
        .find(|s| {
            s["attributes"]["autodev.run.id"] == json!(id)
                && s["name"] != "run created"
                && s["name"].as_str().unwrap().starts_with("run ")
        })
        .unwrap();
    assert_eq!(
        (drive["trace_id"].as_str(), drive["parent"].as_str()),
        (Some(caller_trace), created["span_id"].as_str())
    );
    assert!(all.iter().any(|s| s["trace_id"] == caller_trace && s["name"] == "deliver"));
}

/// `serve` with the receiver down: requests are answered as ever, and the spans it could not
/// send are counted in `/metrics`.
#[tokio::test(flavor = "multi_thread")]
async fn spans_a_server_cannot_send_are_dropped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let (_, stdout, _) = output(autodev(&home).args(["keys", "create", "--name", "reader", "--role", "viewer"]));
    let key = stdout.lines().last().unwrap().to_string();
    let (mut child, base) = super::start_serve(
        autodev(&home).env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9").env("OTEL_BSP_SCHEDULE_DELAY", "100"),
        0,
    );
    let _reaper = Reaper(child.id());
    let http = reqwest::Client::new();
    for _ in 0..5 {
        let r = http.get(format!("{base}/api/v1/runs")).bearer_auth(&key).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert!(r.headers().contains_key("traceparent"));
    }
    let mut dropped = None;
    for _ in 0..100 {
        let metrics = http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
        dropped = metrics
            .lines()
            .find(|l| l.starts_with("autodev_trace_spans_dropped_total"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok());
        if dropped.is_some_and(|n| n >= 5.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(dropped.is_some_and(|n| n >= 5.0), "{dropped:?}");
    assert!(std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    assert_eq!(child.wait().unwrap().code(), Some(0));
}
