//! `kill -9` in the middle of a run, then `autodev resume`: the run finishes, no recorded
//! model call is made again, no commit is duplicated, the repository is sound.
use std::collections::HashSet;
use std::io::BufRead;
use std::process::Stdio;
use std::time::{Duration, Instant};

use autodev_domain::EventKind;
use autodev_store::Store;
use autodev_testkit::{Script, call, conversation_of, finish, git, make_repo, write};
use pretty_assertions::assert_eq;
use serde_json::json;

use super::autodev;

/// Model calls recorded in the store for a run, as (conversation, turn).
async fn recorded(home: &std::path::Path, run_id: &str) -> HashSet<(String, u32)> {
    let store = Store::open(&home.join("autodev.db")).await.unwrap();
    store
        .events(run_id, 0)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::ModelCall { conversation, turn, .. } => Some((conversation, turn)),
            _ => None,
        })
        .collect()
}

/// Starts `cmd` and returns it with the run id from its first JSON event.
fn start(cmd: &mut std::process::Command) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

async fn kill_after(child: &mut std::process::Child, home: &std::path::Path, run_id: &str, calls: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while recorded(home, run_id).await.len() < calls {
        assert!(Instant::now() < deadline, "the run did not reach {calls} model calls");
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be killed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_killed_twice_resumes_to_the_end_without_repeating_model_calls() {
    let dir = tempfile::tempdir().unwrap();
    let repo = make_repo(dir.path());
    let home = dir.path().join("home");
    let script = Script::default();
    script
        .plan(json!([
            {"id": "t1", "title": "Write the greeting", "description": "", "depends_on": [], "acceptance": []},
            {"id": "t2", "title": "Write the farewell", "description": "", "depends_on": ["t1"], "acceptance": []}
        ]))
        .on("task:t1", 0, vec![call("list_files", json!({}))])
        .on("task:t1", 1, vec![write("greeting.txt", "hello\n")])
        .on("task:t1", 2, vec![call("run", json!({"command": "sh check.sh"}))])
        .on("task:t1", 3, vec![finish("greeting written")])
        .on("task:t2", 0, vec![call("read_file", json!({"path": "greeting.txt"}))])
        .on("task:t2", 1, vec![write("farewell.txt", "bye\n")])
        .on("task:t2", 2, vec![finish("farewell written")]);
    // Slow answers, so the kills land while the model is thinking or tools are running.
    let server = script.serve(Duration::from_millis(150)).await;
    let spec = dir.path().join("spec.md");
    std::fs::write(&spec, "# Greet and part\n").unwrap();
    let env = |cmd: &mut std::process::Command| {
        cmd.env("OPENAI_BASE_URL", format!("{}/v1", server.uri()))
            .env("OPENAI_API_KEY", "sk-test")
            .env("AUTODEV_MODEL", "gpt-4.1-mini");
    };

    let mut cmd = autodev(&home);
    cmd.args(["run", "--json", "--test-command", "sh check.sh"]).arg("--repo").arg(&repo).arg("--spec").arg(&spec);
    env(&mut cmd);
    let (mut child, lines) = start(&mut cmd);
    let first: serde_json::Value = serde_json::from_str(&lines.recv_timeout(Duration::from_secs(30)).unwrap()).unwrap();
    let run_id = first["run_id"].as_str().unwrap().to_string();

    // Kill 1: in the planner's wake, during task t1. Kill 2: later, during task t2.
    let mut before_kill: Vec<(usize, HashSet<(String, u32)>)> = Vec::new();
    kill_after(&mut child, &home, &run_id, 3).await;
    let seen = script.requests.lock().unwrap().len();
    before_kill.push((seen, recorded(&home, &run_id).await));

    let mut cmd = autodev(&home);
    cmd.args(["resume", "--json", &run_id[run_id.len() - 8..]]);
    env(&mut cmd);
    let (mut child, _lines) = start(&mut cmd);
    kill_after(&mut child, &home, &run_id, 6).await;
    let seen = script.requests.lock().unwrap().len();
    before_kill.push((seen, recorded(&home, &run_id).await));

    let mut cmd = autodev(&home);
    cmd.args(["resume", "--json", &run_id]);
    env(&mut cmd);
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(summary["state"], "succeeded");

    // No model call recorded before a kill was requested again after it.
    let requests = script.requests.lock().unwrap().clone();
    for (seen, recorded_then) in &before_kill {
        for body in &requests[*seen..] {
            let key = conversation_of(body);
            assert!(!recorded_then.contains(&key), "{key:?} was recorded before the kill and asked again");
        }
    }
    // Every scripted turn was recorded exactly once (the store's key forbids repeats), and the
    // model was asked at most one extra time per kill (the call in flight when it died).
    let all = recorded(&home, &run_id).await;
    assert_eq!(all.len(), 8);
    assert!(requests.len() <= 8 + 2, "{} requests", requests.len());

    // One commit per task and one merge each, no duplicates; the repository is sound.
    let branch = summary["branch"].as_str().unwrap();
    let subjects = git(&repo, &["log", "--format=%s", "--topo-order", "--reverse", &format!("main..{branch}")]);
    assert_eq!(
        subjects.lines().collect::<Vec<_>>(),
        vec![
            "Write the greeting",
            "Merge task t1: Write the greeting",
            "Write the farewell",
            "Merge task t2: Write the farewell"
        ]
    );
    assert_eq!(git(&repo, &["show", &format!("{branch}:farewell.txt")]), "bye");
    git(&repo, &["fsck", "--no-progress"]);
    assert_eq!(git(&repo, &["worktree", "list", "--porcelain"]).matches("worktree ").count(), 1);
    assert_eq!(git(&repo, &["status", "--porcelain"]), "");
}

/// A run stopped by its budget: `autodev run` fails `budget_exceeded` naming the limit, the
/// spend and the limit's value; `autodev resume RUN --max-cost-usd N` reopens it with the
/// raised limit and it finishes, without paying for a recorded call twice.
#[tokio::test(flavor = "multi_thread")]
async fn a_budget_stopped_run_resumes_with_a_raised_limit() {
    let dir = tempfile::tempdir().unwrap();
    let repo = make_repo(dir.path());
    let home = dir.path().join("home");
    let script = Script::default();
    script.plan(json!([{"id": "t1", "title": "Greet", "description": "", "depends_on": [], "acceptance": []}]));
    for turn in 0..5 {
        script.on("task:t1", turn, vec![call("search", json!({"pattern": format!("x{turn}")}))]);
    }
    script.on("task:t1", 5, vec![write("greeting.txt", "hello\n")]).on("task:t1", 6, vec![finish("done")]);
    let server = script.serve(Duration::ZERO).await;
    let spec = dir.path().join("spec.md");
    std::fs::write(&spec, "# Greet\n").unwrap();
    // gpt-4.1: each scripted call costs $0.0028; $0.01 stops the run after a few.
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join("autodev.toml"), "max_cost_usd = 0.01\nmax_output_tokens = 200\n").unwrap();
    let env = |cmd: &mut std::process::Command| {
        cmd.env("OPENAI_BASE_URL", format!("{}/v1", server.uri()))
            .env("OPENAI_API_KEY", "sk-test")
            .env("AUTODEV_MODEL", "gpt-4.1");
    };
    let mut cmd = autodev(&home);
    cmd.args(["run", "--test-command", "sh check.sh"]).arg("--repo").arg(&repo).arg("--spec").arg(&spec);
    env(&mut cmd);
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    let all = format!("{stdout}{stderr}");
    assert!(all.contains("budget_exceeded: the run's limit max_cost_usd = $0.0100 would be passed"), "{all}");
    let store = Store::open(&home.join("autodev.db")).await.unwrap();
    let run = store.list_runs(1).await.unwrap().remove(0);
    assert!(run.cost_micros <= 10_000, "{}", run.cost_micros);
    let asked_before = script.requests.lock().unwrap().len();
    assert!(asked_before < 7);
    // Without a higher limit it stops again at once, with the same reason.
    let mut cmd = autodev(&home);
    cmd.args(["resume", &run.short_id]);
    env(&mut cmd);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(script.requests.lock().unwrap().len(), asked_before);
    // With one, it continues to the end.
    let mut cmd = autodev(&home);
    cmd.args(["resume", &run.short_id, "--max-cost-usd", "1"]);
    env(&mut cmd);
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let mut seen = HashSet::new();
    for body in script.requests.lock().unwrap().iter() {
        assert!(seen.insert(conversation_of(body)), "{:?} asked twice", conversation_of(body));
    }
    assert_eq!(seen.len(), 1 + 7);
    let done = store.get_run(&run.id).await.unwrap();
    assert_eq!(done.state, "succeeded");
    // A bad value is refused before anything changes.
    let mut cmd = autodev(&home);
    cmd.args(["resume", &run.short_id, "--max-cost-usd", "-3"]);
    let (code, _, stderr) = super::output(&mut cmd);
    assert_eq!(code, 2, "{stderr}");
}
