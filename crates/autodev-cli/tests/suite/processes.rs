//! The binary as a process: a cassette replayed with no network, signals (Ctrl-C, SIGTERM),
//! the approval prompt on the terminal, `serve` with keys and workers, and the code index
//! commands (`index`, `search`, `ask`).
use std::io::{BufRead, Write};
use std::process::Stdio;
use std::time::Duration;

use autodev_testkit::{Script, call, finish, git, make_repo, write};
use pretty_assertions::assert_eq;
use serde_json::{Value, json};

use super::{Reaper, autodev, output};

fn script() -> Script {
    let s = Script::default();
    s.plan(json!([{"id": "t1", "title": "Add greeting", "description": "", "depends_on": [], "acceptance": []}]))
        .on("task:t1", 0, vec![call("list_files", json!({}))])
        .on("task:t1", 1, vec![write("greeting.txt", "hello\n")])
        .on("task:t1", 2, vec![finish("greeting added")]);
    s
}

fn spec(dir: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("spec.md");
    std::fs::write(&p, "# Greet\n\nSay hello.\n").unwrap();
    p
}

fn last_json(stdout: &str) -> Value {
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_recorded_run_replays_exactly_with_no_network() {
    let dir = tempfile::tempdir().unwrap();
    let script = script();
    let server = script.serve(Duration::ZERO).await;
    let cassette = dir.path().join("run.cassette.jsonl");
    let repo = make_repo(&dir.path().join("a"));
    let (code, stdout, stderr) = output(
        autodev(&dir.path().join("home-a"))
            .args(["run", "--json", "--test-command", "sh check.sh"])
            .arg("--repo")
            .arg(&repo)
            .arg("--spec")
            .arg(spec(dir.path()))
            .arg("--record")
            .arg(&cassette)
            .env("OPENAI_BASE_URL", server.uri()),
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    let recorded = last_json(&stdout);
    let asked = script.requests.lock().unwrap().len();
    assert_eq!(std::fs::read_to_string(&cassette).unwrap().lines().count(), asked);
    drop(server);

    // The same spec on a fresh copy, replayed: the same plan, steps, files and outcome.
    let repo_b = make_repo(&dir.path().join("b"));
    let (code, stdout, stderr) = output(
        autodev(&dir.path().join("home-b"))
            .args(["run", "--json", "--test-command", "sh check.sh"])
            .arg("--repo")
            .arg(&repo_b)
            .arg("--spec")
            .arg(spec(dir.path()))
            .arg("--replay")
            .arg(&cassette),
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    let replayed = last_json(&stdout);
    for field in ["state", "tests_passed", "input_tokens", "output_tokens"] {
        assert_eq!(replayed[field], recorded[field], "{field}");
    }
    let tree = |repo: &std::path::Path, branch: &str| git(repo, &["rev-parse", &format!("{branch}^{{tree}}")]);
    assert_eq!(tree(&repo_b, replayed["branch"].as_str().unwrap()), tree(&repo, recorded["branch"].as_str().unwrap()));
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_interrupts_a_run_which_resume_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let script = script();
    let server = script.serve(Duration::from_millis(400)).await;
    let repo = make_repo(dir.path());
    let home = dir.path().join("home");
    let mut child = autodev(&home)
        .args(["run", "--json", "--test-command", "sh check.sh"])
        .arg("--repo")
        .arg(&repo)
        .arg("--spec")
        .arg(spec(dir.path()))
        .env("OPENAI_BASE_URL", server.uri())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let run_id =
        serde_json::from_str::<Value>(&lines.next().unwrap().unwrap()).unwrap()["run_id"].as_str().unwrap().to_string();
    // Wait for the task to start, then press Ctrl-C.
    for line in lines.by_ref() {
        if line.unwrap().contains("\"task_state_changed\"") {
            break;
        }
    }
    let ok = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success();
    assert!(ok);
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted while executing; continue with: autodev resume"), "{stderr}");

    let (code, stdout, stderr) =
        output(autodev(&home).args(["resume", "--json", &run_id]).env("OPENAI_BASE_URL", server.uri()));
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(last_json(&stdout)["state"], "succeeded");
}

#[tokio::test(flavor = "multi_thread")]
async fn approve_asks_on_the_terminal_and_no_cancels() {
    let dir = tempfile::tempdir().unwrap();
    let script = script();
    let server = script.serve(Duration::ZERO).await;
    for (answer, code_want, state_want) in [("y\n", 0, "succeeded"), ("n\n", 1, "cancelled")] {
        let repo = make_repo(&dir.path().join(answer.trim()));
        let mut child = autodev(&dir.path().join(format!("home-{}", answer.trim())))
            .args(["run", "--json", "--approve", "--test-command", "sh check.sh"])
            .arg("--repo")
            .arg(&repo)
            .arg("--spec")
            .arg(spec(dir.path()))
            .env("OPENAI_BASE_URL", server.uri())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(answer.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(code_want), "{stdout}");
        let summary = last_json(&stdout);
        assert_eq!(summary["state"], state_want);
        assert!(stdout.contains("\"to\":\"awaiting_approval\""), "{stdout}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_answers_with_keys_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    // A run made by the CLI is visible through the API.
    let script = script();
    let server = script.serve(Duration::ZERO).await;
    let repo = make_repo(dir.path());
    let (code, _, stderr) = output(
        autodev(&home)
            .args(["run", "--json", "--test-command", "sh check.sh"])
            .arg("--repo")
            .arg(&repo)
            .arg("--spec")
            .arg(spec(dir.path()))
            .env("OPENAI_BASE_URL", server.uri()),
    );
    assert_eq!(code, 0, "{stderr}");
    let (_, stdout, _) = output(autodev(&home).args(["keys", "create", "--name", "reader", "--role", "viewer"]));
    let key = stdout.lines().last().unwrap().to_string();

    let mut child = autodev(&home).args(["serve", "--listen", "127.0.0.1:0"]).stderr(Stdio::piped()).spawn().unwrap();
    let _reaper = Reaper(child.id());
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let base = first.rsplit(' ').next().unwrap().to_string();
    assert!(base.starts_with("http://127.0.0.1:"), "{first}");
    let http = reqwest::Client::new();
    assert_eq!(http.get(format!("{base}/health")).send().await.unwrap().text().await.unwrap(), "ok");
    // No provider is configured in this environment: not ready, and it says why.
    let ready = http.get(format!("{base}/ready")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 503);
    assert_eq!(http.get(format!("{base}/api/v1/runs")).send().await.unwrap().status().as_u16(), 401);
    let v: Value =
        http.get(format!("{base}/api/v1/runs")).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["runs"][0]["state"], "succeeded");
    assert_eq!(v["runs"][0]["tests_passed"], true);

    assert!(std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_executes_a_run_created_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let script = script();
    let server = script.serve(Duration::ZERO).await;
    let repo = make_repo(dir.path());
    let (_, stdout, _) = output(autodev(&home).args(["keys", "create", "--name", "boss", "--role", "admin"]));
    let key = stdout.lines().last().unwrap().to_string();
    let mut child = autodev(&home)
        .args(["serve", "--listen", "127.0.0.1:0", "--workers", "1"])
        .env("OPENAI_BASE_URL", server.uri())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _reaper = Reaper(child.id());
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let base = lines.next().unwrap().unwrap().rsplit(' ').next().unwrap().to_string();
    let http = reqwest::Client::new();
    assert_eq!(http.get(format!("{base}/ready")).send().await.unwrap().status().as_u16(), 200);
    let r = http
        .post(format!("{base}/api/v1/projects"))
        .bearer_auth(&key)
        .json(&json!({"name": "proj", "repository": repo, "test_command": "sh check.sh"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let r = http
        .post(format!("{base}/api/v1/runs"))
        .bearer_auth(&key)
        .json(&json!({"project": "proj", "spec": "# Greet"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let run: Value = r.json().await.unwrap();
    let id = run["id"].as_str().unwrap();
    let state = super::run_end(&base, &key, id).await;
    assert_eq!(state, "succeeded");
    assert!(std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

/// `autodev search` builds the index first when there is none, prints JSON hits with their
/// place; `autodev index` refreshes only what changed.
#[test]
fn search_builds_the_index_and_index_refreshes_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let repo = make_repo(dir.path());
    std::fs::create_dir_all(repo.join("src")).unwrap();
    std::fs::write(
        repo.join("src/lib.rs"),
        "/// Greets someone by name.\npub fn greet_person(name: &str) -> String {\n    format!(\"hello {name}\")\n}\n",
    )
    .unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "--quiet", "-m", "lib"]);
    let home = dir.path().join("home");
    let (code, stdout, stderr) =
        output(autodev(&home).args(["search", "greet a person", "--json", "--limit", "3"]).arg("--repo").arg(&repo));
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("building the index"), "{stderr}");
    let hits: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(hits[0]["path"], "src/lib.rs");
    assert_eq!((hits[0]["start_line"].as_u64(), hits[0]["end_line"].as_u64()), (Some(1), Some(4)));
    assert!(hits[0]["score"].as_f64().unwrap() > 0.0 && hits[0]["text"].as_str().unwrap().contains("greet_person"));
    std::fs::write(repo.join("check.sh"), "#!/bin/sh\necho changed\n").unwrap();
    let (code, stdout, _) = output(autodev(&home).args(["index", "--json"]).arg("--repo").arg(&repo));
    assert_eq!(code, 0);
    let r: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!((r["indexed"].as_u64(), r["unchanged"].as_u64()), (Some(1), Some(2)));
    // Not a repository, an empty query, a bad limit: refused with why.
    let (code, _, stderr) = output(autodev(&home).args(["index", "--repo"]).arg(dir.path()));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("is not a git repository"), "{stderr}");
    let (code, _, _) = output(autodev(&home).args(["search", " "]).arg("--repo").arg(&repo));
    assert_eq!(code, 2);
    let (code, _, _) = output(autodev(&home).args(["search", "x", "--limit", "0"]).arg("--repo").arg(&repo));
    assert_eq!(code, 2);
}

/// `autodev ask`: the model sees the best chunks with their places; its citations are
/// checked against the index (one real, one made up: not ok); "I could not find it" is an
/// answer whose citations are fine.
#[tokio::test(flavor = "multi_thread")]
async fn ask_answers_with_citations_checked_against_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let repo = make_repo(dir.path());
    std::fs::create_dir_all(repo.join("src")).unwrap();
    std::fs::write(
        repo.join("src/lib.rs"),
        "/// Greets someone by name.\npub fn greet_person(name: &str) -> String {\n    format!(\"hello {name}\")\n}\n",
    )
    .unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "--quiet", "-m", "lib"]);
    let script = Script::default();
    script.on(
        "unknown",
        0,
        vec![autodev_testkit::text(
            "`greet_person` builds the greeting (src/lib.rs:2-4); it is also in src/made_up.rs:1-9.",
        )],
    );
    let server = script.serve(Duration::ZERO).await;
    let home = dir.path().join("home");
    let ask = |q: &str| {
        let mut cmd = autodev(&home);
        cmd.args(["ask", q, "--json"])
            .arg("--repo")
            .arg(&repo)
            .env("OPENAI_BASE_URL", format!("{}/v1", server.uri()))
            .env("OPENAI_API_KEY", "sk-test")
            .env("AUTODEV_MODEL", "gpt-4.1-mini");
        output(&mut cmd)
    };
    let (code, stdout, stderr) = ask("How is a person greeted?");
    assert_eq!(code, 0, "{stderr}");
    let a: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(a["citations"][0], json!({"path": "src/lib.rs", "start_line": 2, "end_line": 4, "valid": true}));
    assert_eq!(a["citations"][1]["valid"], false);
    assert_eq!(a["citations_ok"], false);
    assert_eq!(a["sources"][0]["path"], "src/lib.rs");
    assert!(a["cost_micros"].as_i64().unwrap() > 0);
    // The model was given the chunk with its place.
    let asked = script.requests.lock().unwrap()[0].to_string();
    assert!(
        asked.contains("## src/lib.rs:1-4 (greet_person)") && asked.contains("How is a person greeted?"),
        "{asked}"
    );
    script.on("unknown", 0, vec![autodev_testkit::text("I could not find it.")]);
    let (code, stdout, _) = ask("Where is the database schema?");
    assert_eq!(code, 0);
    let a: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!((a["not_found"].as_bool(), a["citations_ok"].as_bool()), (Some(true), Some(true)));
    // Both questions are in the usage, as their own kind.
    let (code, stdout, _) = output(autodev(&home).args(["costs", "--by", "kind", "--json"]));
    assert_eq!(code, 0);
    let c: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(c["rows"][0]["kind"], "ask", "{c}");
    assert_eq!(c["rows"][0]["calls"], 2, "{c}");
    let (code, stdout, _) = output(autodev(&home).args(["costs", "--by", "key"]));
    assert_eq!(code, 0);
    assert!(stdout.contains("(CLI or webhook) (ask)"), "{stdout}");

    // A conversation (issue 27): the plain output says how to follow up; the follow-up is
    // asked with the first turn in its prompt; an unknown conversation is a usage error.
    script.on("unknown", 0, vec![autodev_testkit::text("`greet_person` greets (src/lib.rs:2-4).")]);
    let plain = |args: &[&str]| {
        let mut cmd = autodev(&home);
        cmd.arg("ask")
            .args(args)
            .arg("--repo")
            .arg(&repo)
            .env("OPENAI_BASE_URL", format!("{}/v1", server.uri()))
            .env("OPENAI_API_KEY", "sk-test")
            .env("AUTODEV_MODEL", "gpt-4.1-mini");
        output(&mut cmd)
    };
    let (code, stdout, stderr) = plain(&["How is a person greeted?"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("`greet_person` greets (src/lib.rs:2-4)."), "{stdout}");
    let conversation = stdout
        .lines()
        .find_map(|l| l.strip_prefix("conversation "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("{stdout}"))
        .to_string();
    script.on("unknown", 0, vec![autodev_testkit::text("With `format!` (src/lib.rs:3).")]);
    let (code, stdout, stderr) = plain(&["and how is it built?", "--conversation", &conversation, "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let a: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!((a["conversation"].as_str(), a["turn"].as_i64()), (Some(conversation.as_str()), Some(2)));
    let asked = script.requests.lock().unwrap().last().unwrap()["messages"][1]["content"].as_str().unwrap().to_string();
    assert!(asked.contains("Q: How is a person greeted?\nA: `greet_person` greets"), "{asked}");
    let (code, _, stderr) = plain(&["more?", "--conversation", "0190aaaa-0000-7000-8000-000000000000"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("no conversation 0190aaaa-0000-7000-8000-000000000000 here"), "{stderr}");
}

/// `[embeddings]` configured: `autodev index` embeds the chunks (OpenAI's wire format on a
/// scripted server) and reports it; when the endpoint fails, `index` fails naming it while
/// `search` keeps answering lexically.
#[tokio::test(flavor = "multi_thread")]
async fn index_embeds_with_the_configured_model_and_search_survives_its_failure() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let dir = tempfile::tempdir().unwrap();
    let repo = make_repo(dir.path());
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let server = MockServer::start().await;
    let ok = Mock::given(method("POST"))
        .and(path("/v1/embeddings"))
        .respond_with(move |req: &wiremock::Request| {
            let body: Value = serde_json::from_slice(&req.body).unwrap();
            let n = body["input"].as_array().unwrap().len();
            let data: Vec<Value> =
                (0..n).map(|i| json!({"object": "embedding", "index": i, "embedding": [1.0, i as f32]})).collect();
            ResponseTemplate::new(200).set_body_json(json!({"object": "list", "data": data, "model": "e"}))
        })
        .mount_as_scoped(&server)
        .await;
    std::fs::write(
        home.join("autodev.toml"),
        format!("[embeddings]\nbase_url = \"{}/v1\"\nmodel = \"e\"\napi_key_env = \"EMBED_KEY\"\n", server.uri()),
    )
    .unwrap();
    let (code, stdout, stderr) =
        output(autodev(&home).args(["index", "--json", "--repo"]).arg(&repo).env("EMBED_KEY", "sk-e"));
    assert_eq!(code, 0, "{stderr}");
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(v["embeddings"]["chunks_embedded"].as_u64().unwrap() > 0, "{v}");
    let sent = server.received_requests().await.unwrap();
    assert_eq!(sent[0].headers.get("authorization").unwrap(), "Bearer sk-e");
    drop(ok);

    // The endpoint fails: a changed file cannot be embedded.
    Mock::given(method("POST"))
        .and(path("/v1/embeddings"))
        .respond_with(ResponseTemplate::new(503).set_body_string("overloaded"))
        .mount(&server)
        .await;
    std::fs::write(repo.join("notes.txt"), "circuit breaker notes\n").unwrap();
    let (code, _, stderr) = output(autodev(&home).args(["index", "--repo"]).arg(&repo));
    assert_eq!(code, 1);
    assert!(stderr.contains("the embeddings failed") && stderr.contains("503"), "{stderr}");
    let (code, stdout, stderr) = output(autodev(&home).args(["search", "breaker", "--json", "--repo"]).arg(&repo));
    assert_eq!(code, 0, "{stderr}");
    let hits: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(hits[0]["path"], "notes.txt");
}
