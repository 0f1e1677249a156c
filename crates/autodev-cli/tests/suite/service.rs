//! Service mode across processes on PostgreSQL: one `autodev serve` (API only) and three
//! `autodev worker` processes, each with its own workspace directory, share one throwaway
//! database. 30 runs go in over HTTP; one worker is SIGKILLed while it drives runs; the
//! others take the runs over when the lease expires. Every run must succeed exactly once and
//! no model call may be repeated except the one in flight at the kill.
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use autodev_store::{Migrations, Store};
use autodev_testkit::{Script, call, finish, make_repo, write};
use serde_json::{Value, json};

use super::{autodev, output};

struct Reaper(Vec<u32>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for pid in &self.0 {
            let _ = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
    }
}

fn with_db(cmd: &mut std::process::Command, url: &str, model: &str) {
    cmd.env("DATABASE_URL", url)
        .env("OPENAI_BASE_URL", model)
        .env("AUTODEV_KEY_PEPPER", "multi-process-test-pepper")
        .env("AUTODEV_RATE_LIMIT_PER_MINUTE", "0");
}

fn run_of(body: &Value) -> Option<String> {
    let text: String = body["messages"].as_array()?.iter().filter_map(|m| m["content"].as_str()).collect();
    let at = text.find("Job ")?;
    Some(text[at..].split(|c: char| !c.is_ascii_alphanumeric() && c != ' ').next()?.trim().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_server_and_three_workers_on_postgres_finish_every_run_once_after_a_worker_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let db = autodev_testkit::pg::TestDb::create().await;
    let script = Script::default();
    script
        .plan(json!([{"id": "t1", "title": "Add greeting", "description": "", "depends_on": [], "acceptance": []}]))
        .on("task:t1", 0, vec![call("list_files", json!({}))])
        .on("task:t1", 1, vec![write("greeting.txt", "hello\n")])
        .on("task:t1", 2, vec![call("read_file", json!({"path": "greeting.txt"}))])
        .on("task:t1", 3, vec![finish("greeting added")]);
    // Slow enough that a kill lands mid-run.
    let model = script.serve(Duration::from_millis(120)).await;
    let model_url = model.uri();
    let repo = make_repo(dir.path());

    let mut pids = Vec::new();
    let mut serve = autodev(&dir.path().join("serve-home"));
    with_db(&mut serve, &db.url, &model_url);
    let mut serve =
        serve.args(["serve", "--listen", "127.0.0.1:0", "--workers", "0"]).stderr(Stdio::piped()).spawn().unwrap();
    pids.push(serve.id());
    let mut lines = BufReader::new(serve.stderr.take().unwrap()).lines();
    let base = lines.next().unwrap().unwrap().rsplit(' ').next().unwrap().to_string();
    std::thread::spawn(move || for _ in lines {});
    let mut keys = autodev(&dir.path().join("serve-home"));
    with_db(&mut keys, &db.url, &model_url);
    let (code, stdout, stderr) = output(keys.args(["keys", "create", "--name", "ops", "--role", "admin"]));
    assert_eq!(code, 0, "{stderr}");
    let key = stdout.lines().last().unwrap().to_string();

    let mut workers: Vec<Child> = (0..3)
        .map(|i| {
            let mut w = autodev(&dir.path().join(format!("worker-{i}")));
            with_db(&mut w, &db.url, &model_url);
            w.args(["worker", "--workers", "2", "--grace", "10"]).stderr(Stdio::null()).spawn().unwrap()
        })
        .collect();
    pids.extend(workers.iter().map(Child::id));
    let _reaper = Reaper(pids);

    let http = reqwest::Client::new();
    let r = http
        .post(format!("{base}/api/v1/projects"))
        .bearer_auth(&key)
        .json(&json!({"name": "greeter", "repository": repo, "test_command": "sh check.sh"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let mut ids = Vec::new();
    for n in 0..30 {
        let r = http
            .post(format!("{base}/api/v1/runs"))
            .bearer_auth(&key)
            .json(&json!({"project": "greeter", "spec": format!("# Job {n}\n\nWrite hello into greeting.txt.")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
        ids.push(r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string());
    }

    // Kill worker 0 while it holds runs with recorded steps.
    let store = Store::connect(&db.url, Migrations::Check).await.unwrap();
    let victim = workers[0].id();
    let deadline = Instant::now() + Duration::from_secs(60);
    let held = loop {
        assert!(Instant::now() < deadline, "worker 0 never took a run");
        let mut held = Vec::new();
        for id in &ids {
            let run = store.get_run(id).await.unwrap();
            if run.lease_owner.as_deref().is_some_and(|o| o.split(':').nth(1) == Some(victim.to_string().as_str()))
                && !run.run_state().is_terminal()
                && !store.tool_calls(id, "task:t1").await.unwrap().is_empty()
            {
                held.push(id.clone());
            }
        }
        if !held.is_empty() {
            break held;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(!held.is_empty());
    workers[0].kill().unwrap();
    workers[0].wait().unwrap();
    // A killed process releases nothing: its leases name every run it was driving.
    let mut held = Vec::new();
    for id in &ids {
        let run = store.get_run(id).await.unwrap();
        if run.lease_owner.as_deref().is_some_and(|o| o.split(':').nth(1) == Some(victim.to_string().as_str()))
            && !run.run_state().is_terminal()
        {
            held.push(id.clone());
        }
    }
    assert!(!held.is_empty(), "the killed worker held no unfinished run");

    // Everything finishes (the killed worker's runs after its leases expire).
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        let mut open = 0;
        for id in &ids {
            if !store.run_state(id).await.unwrap().is_terminal() {
                open += 1;
            }
        }
        if open == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{open} runs never finished");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for id in &ids {
        let run = store.get_run(id).await.unwrap();
        assert_eq!(run.state, "succeeded", "run {id} ({}): {:?}", run.title, run.reason);
        let ends: Vec<_> = store
            .events(id, 0)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| matches!(&e.kind, autodev_domain::EventKind::StateChanged { to, .. } if to.is_terminal()))
            .collect();
        assert_eq!(ends.len(), 1, "run {id} ended {} times", ends.len());
        // Delivered: the branch is in the project's repository, with the work.
        assert_eq!(autodev_testkit::git(&repo, &["show", &format!("{}:greeting.txt", run.branch)]), "hello");
    }
    // No model call was made twice, except the one in flight at the kill in each of the
    // killed worker's runs.
    let mut asked: HashMap<(String, String, u32), usize> = HashMap::new();
    for body in script.requests.lock().unwrap().iter() {
        let (conv, turn) = autodev_testkit::conversation_of(body);
        *asked.entry((run_of(body).unwrap_or_default(), conv, turn)).or_default() += 1;
    }
    let held_titles: HashSet<String> = {
        let mut t = HashSet::new();
        for id in &held {
            t.insert(store.get_run(id).await.unwrap().title);
        }
        t
    };
    let mut repeats_per_run: HashMap<&str, usize> = HashMap::new();
    for ((run, conv, turn), n) in &asked {
        if *n > 1 {
            assert_eq!(*n, 2, "{run} {conv} turn {turn} asked {n} times");
            assert!(held_titles.contains(run), "{run} was not on the killed worker but repeated {conv} turn {turn}");
            *repeats_per_run.entry(run.as_str()).or_default() += 1;
        }
    }
    assert!(
        repeats_per_run.values().all(|&n| n <= 1),
        "more than the step in flight was repeated: {repeats_per_run:?}"
    );
    // The project's checkout is untouched and the checkpoint refs are gone.
    assert_eq!(autodev_testkit::git(&repo, &["status", "--porcelain"]), "");
    assert_eq!(autodev_testkit::git(&repo, &["for-each-ref", "refs/autodev/"]), "");

    // SIGTERM: the remaining processes stop cleanly.
    for w in workers.iter_mut().skip(1) {
        let _ = std::process::Command::new("kill").args(["-TERM", &w.id().to_string()]).status();
        assert_eq!(w.wait().unwrap().code(), Some(0));
    }
    let _ = std::process::Command::new("kill").args(["-TERM", &serve.id().to_string()]).status();
    assert_eq!(serve.wait().unwrap().code(), Some(0));
}

/// Issue 12's concurrency rule across processes: two `autodev worker` processes on one
/// PostgreSQL database each drive a run of the same project with four agents in parallel
/// (eight agents in all), against the project's monthly budget. Each model call reserves its
/// worst case in the same transaction as the check, so the project's recorded spend never
/// passes the budget: the overshoot is zero, not "at most one call".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_worker_processes_sharing_a_project_budget_on_postgres_never_pass_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = autodev_testkit::pg::TestDb::create().await;
    let script = Script::default();
    let tasks: Vec<Value> = (1..=4)
        .map(|i| json!({"id": format!("t{i}"), "title": format!("Part {i}"), "description": "", "depends_on": [], "acceptance": []}))
        .collect();
    script.plan(json!(tasks));
    for i in 1..=4 {
        for turn in 0..60 {
            script.on(&format!("task:t{i}"), turn, vec![call("search", json!({"pattern": format!("t{i}x{turn}")}))]);
        }
    }
    // Slow enough answers that both runs are spending before either could use the whole
    // budget alone, even when one worker process starts later on a busy machine.
    let model = script.serve(Duration::from_millis(150)).await;
    let model_url = model.uri();
    let repo = make_repo(dir.path());
    let env = |cmd: &mut std::process::Command| {
        with_db(cmd, &db.url, &model_url);
        // gpt-4.1: $2/M input, $8/M output. Each scripted call reports 1,000 + 100 tokens
        // ($0.0028); each reserves its worst case (its input estimate and 200 output tokens).
        cmd.env("AUTODEV_MODEL", "gpt-4.1").env("AUTODEV_MAX_OUTPUT_TOKENS", "200");
    };
    let mut pids = Vec::new();
    let mut serve = autodev(&dir.path().join("serve-home"));
    env(&mut serve);
    let mut serve =
        serve.args(["serve", "--listen", "127.0.0.1:0", "--workers", "0"]).stderr(Stdio::piped()).spawn().unwrap();
    pids.push(serve.id());
    let mut lines = BufReader::new(serve.stderr.take().unwrap()).lines();
    let base = lines.next().unwrap().unwrap().rsplit(' ').next().unwrap().to_string();
    std::thread::spawn(move || for _ in lines {});
    let mut keys = autodev(&dir.path().join("serve-home"));
    env(&mut keys);
    let (code, stdout, stderr) = output(keys.args(["keys", "create", "--name", "ops", "--role", "admin"]));
    assert_eq!(code, 0, "{stderr}");
    let key = stdout.lines().last().unwrap().to_string();
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{base}/api/v1/projects"))
        .bearer_auth(&key)
        .json(&json!({"name": "shared", "repository": repo, "test_command": "sh check.sh", "settings": {"monthly_budget_usd": 0.05}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let mut ids = Vec::new();
    for n in 0..2 {
        let r = http
            .post(format!("{base}/api/v1/runs"))
            .bearer_auth(&key)
            .json(&json!({"project": "shared", "spec": format!("# Job {n}\n\nSearch a lot."), "max_parallel": 4}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
        ids.push(r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string());
    }
    let mut workers: Vec<Child> = (0..2)
        .map(|i| {
            let mut w = autodev(&dir.path().join(format!("worker-{i}")));
            env(&mut w);
            w.args(["worker", "--workers", "1", "--grace", "10"]).stderr(Stdio::null()).spawn().unwrap()
        })
        .collect();
    pids.extend(workers.iter().map(Child::id));
    let _reaper = Reaper(pids);

    let store = Store::connect(&db.url, Migrations::Check).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut owners = HashSet::new();
    loop {
        let mut open = 0;
        for id in &ids {
            let run = store.get_run(id).await.unwrap();
            // A lease is `host:pid:claim`; the process is what this test counts.
            owners.extend(
                run.lease_owner.as_deref().and_then(|o| o.rsplit_once(':')).map(|(process, _)| process.to_string()),
            );
            if !run.run_state().is_terminal() {
                open += 1;
            }
        }
        if open == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{open} runs never finished");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(owners.len(), 2, "each worker process should drive one run: {owners:?}");
    let mut total = 0;
    for id in &ids {
        let run = store.get_run(id).await.unwrap();
        assert_eq!(run.state, "failed");
        let reason = run.reason.clone().unwrap_or_default();
        assert!(reason.starts_with("budget_exceeded: the project's monthly_budget_usd for "), "{reason}");
        assert!(reason.contains(" = $0.0500 would be passed"), "{reason}");
        assert!(run.cost_micros > 0, "run {id} spent nothing: the runs did not share the budget");
        total += run.cost_micros;
    }
    let month = autodev_domain::month_of(autodev_store::now_ms());
    let project = store.find_project("shared").await.unwrap();
    let spend: HashMap<String, i64> = store.month_spend(&month).await.unwrap().into_iter().collect();
    assert_eq!(spend[&format!("project:{}", project.id)], total);
    // The measured overshoot: none.
    assert!(total <= 50_000, "the project spent {total} µ$ of a 50,000 µ$ budget");
    // And the budget was used, not left idle: within eight calls' worst case of it.
    assert!(total > 50_000 - 8 * 5_000, "only {total} µ$ of 50,000 was used");
    eprintln!("two processes, eight agents: spent {total} µ$ of a 50,000 µ$ project budget");
    for w in workers.iter_mut() {
        let _ = std::process::Command::new("kill").args(["-TERM", &w.id().to_string()]).status();
        assert_eq!(w.wait().unwrap().code(), Some(0));
    }
    let _ = std::process::Command::new("kill").args(["-TERM", &serve.id().to_string()]).status();
    assert_eq!(serve.wait().unwrap().code(), Some(0));
}
