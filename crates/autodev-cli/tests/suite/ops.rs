//! Operations as an operator runs them: `backup` while `serve` answers, `restore` into a fresh
//! data directory (and database) on both backends, after which the same keys authenticate and
//! the same projects, runs, events and reports are served; `gc` on a data directory with an
//! old run and a run that has not ended; `migrate --check`; rolling upgrades (this build's
//! queries on a schema a newer build expanded).
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use autodev_testkit::{Script, call, finish, make_repo, write};
use serde_json::{Value, json};

use super::{Reaper, autodev, output, post_json, start_serve};

fn script() -> Script {
    let s = Script::default();
    s.plan(json!([{"id": "t1", "title": "Add greeting", "description": "", "depends_on": [], "acceptance": []}]))
        .on("task:t1", 0, vec![call("list_files", json!({}))])
        .on("task:t1", 1, vec![write("greeting.txt", "hello\n")])
        .on("task:t1", 2, vec![finish("greeting added")]);
    s
}

fn spec(dir: &Path) -> PathBuf {
    let p = dir.join("spec.md");
    std::fs::write(&p, "# Greet\n\nSay hello.\n").unwrap();
    p
}

fn with_env<'c>(cmd: &'c mut Command, db: Option<&str>, model: &str) -> &'c mut Command {
    if let Some(url) = db {
        cmd.env("DATABASE_URL", url);
    }
    cmd.env("OPENAI_BASE_URL", model)
}

/// `autodev serve` on `home` with `workers`; its base URL.
fn serve(home: &Path, db: Option<&str>, model: &str, workers: u32) -> (Child, String) {
    start_serve(with_env(&mut autodev(home), db, model), workers)
}

async fn get(base: &str, key: &str, path: &str) -> (u16, String) {
    let r = reqwest::Client::new().get(format!("{base}{path}")).bearer_auth(key).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn round_trip(db_from: Option<&str>, db_to: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let script = script();
    let model = script.serve(Duration::ZERO).await;
    let repo = make_repo(dir.path());
    let (code, stdout, stderr) = output(
        with_env(&mut autodev(&home), db_from, &model.uri())
            .args(["run", "--json", "--test-command", "sh check.sh", "--repo"])
            .arg(&repo)
            .arg("--spec")
            .arg(spec(dir.path())),
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    let run: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let run_id = run["run_id"].as_str().unwrap().to_string();
    let (_, stdout, _) = output(
        with_env(&mut autodev(&home), db_from, &model.uri())
            .args(["keys", "create", "--name", "ops", "--role", "admin"]),
    );
    let key = stdout.lines().last().unwrap().to_string();
    let (mut server, base) = serve(&home, db_from, &model.uri(), 0);
    let _reaper = Reaper(server.id());
    let (status, _) = post_json(&base, &key, "/api/v1/projects", json!({"name": "proj", "repository": repo})).await;
    assert_eq!(status, 201);
    let (_, before_run) = get(&base, &key, &format!("/api/v1/runs/{run_id}")).await;
    let (status, before_report) = get(&base, &key, &format!("/api/v1/runs/{run_id}/artifacts/report")).await;
    assert_eq!(status, 200, "{before_report}");

    // While the server answers.
    let backup = dir.path().join("backups/autodev-1.tar.zst");
    let (code, out, err) =
        output(with_env(&mut autodev(&home), db_from, &model.uri()).args(["backup", "--out"]).arg(&backup));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1 projects, 1 keys, 1 runs"), "{out}");
    assert!(Command::new("kill").args(["-TERM", &server.id().to_string()]).status().unwrap().success());
    server.wait().unwrap();

    let fresh = dir.path().join("restored");
    let (code, out, err) =
        output(with_env(&mut autodev(&fresh), db_to, &model.uri()).args(["restore", "--from"]).arg(&backup));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1 projects, 1 keys, 1 runs"), "{out}");
    // A second restore refuses to overwrite, and says how.
    let (code, _, err) =
        output(with_env(&mut autodev(&fresh), db_to, &model.uri()).args(["restore", "--from"]).arg(&backup));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--force"), "{err}");

    let (server, base) = serve(&fresh, db_to, &model.uri(), 0);
    let _reaper2 = Reaper(server.id());
    // The same key authenticates (the pepper came back with the data).
    let (status, projects) = get(&base, &key, "/api/v1/projects").await;
    assert_eq!(status, 200, "{projects}");
    assert!(projects.contains("\"proj\""), "{projects}");
    let (status, after_run) = get(&base, &key, &format!("/api/v1/runs/{run_id}")).await;
    assert_eq!(status, 200);
    let (a, b): (Value, Value) =
        (serde_json::from_str(&before_run).unwrap(), serde_json::from_str(&after_run).unwrap());
    for field in ["state", "branch", "cost_usd", "tests_passed", "title"] {
        assert_eq!(a[field], b[field], "{field}");
    }
    let (status, report) = get(&base, &key, &format!("/api/v1/runs/{run_id}/artifacts/report")).await;
    assert_eq!((status, report), (200, before_report));
    let (status, events) = get(&base, &key, &format!("/api/v1/runs/{run_id}/events")).await;
    assert_eq!(status, 200);
    assert!(events.contains("run.succeeded") || events.contains("succeeded"), "{events}");
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_while_serving_and_restore_round_trip_on_sqlite() {
    round_trip(None, None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_while_serving_and_restore_round_trip_on_postgres() {
    let from = autodev_testkit::pg::TestDb::create().await;
    let to = autodev_testkit::pg::TestDb::create().await;
    round_trip(Some(&from.url), Some(&to.url)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_of_one_backend_is_not_restored_into_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let (code, _, err) = output(autodev(&home).args(["keys", "create", "--name", "a", "--role", "admin"]));
    assert_eq!(code, 0, "{err}");
    let backup = dir.path().join("autodev-x.tar");
    let (code, _, err) = output(autodev(&home).args(["backup", "--out"]).arg(&backup));
    assert_eq!(code, 0, "{err}");
    let to = autodev_testkit::pg::TestDb::create().await;
    let (code, _, err) = output(
        autodev(&dir.path().join("fresh")).env("DATABASE_URL", &to.url).args(["restore", "--from"]).arg(&backup),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unset DATABASE_URL"), "{err}");
    // Not a backup at all.
    std::fs::write(dir.path().join("junk.tar"), "not a tar").unwrap();
    let (code, _, err) =
        output(autodev(&dir.path().join("fresh2")).args(["restore", "--from"]).arg(dir.path().join("junk.tar")));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not an autodev backup"), "{err}");
}

fn refs(repo: &Path, pattern: &str) -> Vec<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["for-each-ref", "--format=%(refname)", pattern])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn gc_removes_what_old_runs_left_and_keeps_runs_that_have_not_ended() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let script = script();
    let model = script.serve(Duration::ZERO).await;
    let repo = make_repo(dir.path());
    // An ended run that left its worktrees and task branch: its tests fail, with no repair.
    let (code, stdout, stderr) = output(
        autodev(&home)
            .env("OPENAI_BASE_URL", model.uri())
            .args(["run", "--json", "--test-command", "false", "--max-repair-rounds", "0", "--repo"])
            .arg(&repo)
            .arg("--spec")
            .arg(spec(dir.path())),
    );
    assert_ne!(code, 0, "{stdout}{stderr}");
    let old: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let old_id = old["run_id"].as_str().unwrap().to_string();
    assert_eq!(old["state"], "failed", "{stdout}");
    // A run that has not ended: queued through the API (no worker), with a run folder as a
    // worker that started it would have.
    let (_, stdout, _) = output(autodev(&home).args(["keys", "create", "--name", "ops", "--role", "admin"]));
    let key = stdout.lines().last().unwrap().to_string();
    let (mut server, base) = serve(&home, None, &model.uri(), 0);
    let reaper = Reaper(server.id());
    let (status, _) = post_json(&base, &key, "/api/v1/projects", json!({"name": "proj", "repository": repo})).await;
    assert_eq!(status, 201);
    let (status, waiting) = post_json(&base, &key, "/api/v1/runs", json!({"project": "proj", "spec": "# Later"})).await;
    assert_eq!(status, 201);
    let waiting_id = waiting["id"].as_str().unwrap().to_string();
    assert!(Command::new("kill").args(["-TERM", &server.id().to_string()]).status().unwrap().success());
    server.wait().unwrap();
    drop(reaper);
    std::fs::create_dir_all(home.join("runs").join(&waiting_id)).unwrap();
    std::fs::write(home.join("runs").join(&waiting_id).join("notes.txt"), "in progress").unwrap();
    let old_short = old["short_id"].as_str().unwrap_or(&old_id[..8]).to_string();
    let task_refs = format!("refs/heads/autodev/{old_short}-tasks/");
    assert!(!refs(&repo, &task_refs).is_empty(), "the failed run left its task branch");
    assert!(home.join("runs").join(&old_id).join("worktrees").is_dir());
    let worktrees_before = Command::new("git").arg("-C").arg(&repo).args(["worktree", "list"]).output().unwrap();
    assert!(String::from_utf8_lossy(&worktrees_before.stdout).contains(&old_id));

    // Younger than the age: nothing goes.
    let (code, out, err) = output(autodev(&home).args(["gc", "--older-than", "30d", "--json"]));
    assert_eq!(code, 0, "{err}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((r["runs"].as_u64(), r["run_folders"].as_u64()), (Some(0), Some(0)), "{out}");
    // A dry run says what would go and changes nothing.
    let (code, out, err) = output(autodev(&home).args(["gc", "--older-than", "0s", "--dry-run", "--json"]));
    assert_eq!(code, 0, "{err}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["runs"], 1, "{out}");
    assert_eq!(r["run_folders"], 1, "{out}");
    assert!(r["events"].as_i64().unwrap() > 0 && r["worktrees"].as_u64().unwrap() >= 1, "{out}");
    assert!(home.join("runs").join(&old_id).is_dir());
    assert!(!refs(&repo, &task_refs).is_empty());

    let (code, out, err) = output(autodev(&home).args(["gc", "--older-than", "0s"]));
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("removed: the records of 1 runs"), "{out}");
    assert!(out.contains("kept 1 run folders"), "{out}");
    assert!(!home.join("runs").join(&old_id).exists());
    assert!(home.join("runs").join(&waiting_id).is_dir(), "the waiting run is untouched");
    assert!(refs(&repo, &task_refs).is_empty(), "task branch removed");
    assert!(refs(&repo, &format!("refs/autodev/{old_id}/")).is_empty());
    let worktrees = Command::new("git").arg("-C").arg(&repo).args(["worktree", "list"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&worktrees.stdout).contains(&old_id), "git forgot the worktrees");
    // The run itself, its cost and its state stay; its events are gone.
    let (code, out, _) = output(autodev(&home).args(["runs", "show", &old_id, "--json"]));
    assert_eq!(code, 0);
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["state"], "failed");
    let (code, out, _) = output(autodev(&home).args(["costs", "--by", "run", "--json"]));
    assert_eq!(code, 0);
    assert!(out.contains(&format!("\"{old_short} Greet\"")), "the run's cost stays: {out}");
    let (_, out, _) = output(autodev(&home).args(["runs", "show", &waiting_id, "--json"]));
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["state"], "queued");
    // A second collection finds nothing more.
    let (_, out, _) = output(autodev(&home).args(["gc", "--older-than", "0s", "--json"]));
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["runs"], 0, "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn migrate_check_says_what_is_missing_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let db = home.join("autodev.db");
    // A database as the previous release left it: every migration but this build's last.
    let store = autodev_store::Store::open_sqlite(&db, autodev_store::Migrations::Leave).await.unwrap();
    let status = store.migration_status().await.unwrap();
    let last = status.pending.last().unwrap().0;
    let previous = status.pending[status.pending.len() - 2].0;
    store.migrate_to(previous).await.unwrap();
    drop(store);
    let (code, out, _) = output(autodev(&home).args(["migrate", "--check"]));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("  {last} ")) && out.contains("autodev migrate"), "{out}");
    // Still missing: --check changed nothing; `serve --no-migrate` refuses the same way.
    let (code, _, _) = output(autodev(&home).args(["migrate", "--check"]));
    assert_eq!(code, 1);
    let (code, _, err) = output(autodev(&home).args(["serve", "--no-migrate", "--listen", "127.0.0.1:0"]));
    assert_eq!(code, 2, "{err}");
    let (code, out, err) = output(autodev(&home).args(["migrate"]));
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = output(autodev(&home).args(["migrate", "--check"]));
    assert_eq!(code, 0, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stop_hands_runs_in_flight_back_within_seconds_and_another_process_finishes_them() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let slow_script = script();
    // Every model call takes a minute: a stop finds each run waiting on one.
    let slow = slow_script.serve(Duration::from_secs(60)).await;
    let fast_script = script();
    let fast = fast_script.serve(Duration::ZERO).await;
    let repo = make_repo(dir.path());
    let (_, stdout, _) = output(autodev(&home).args(["keys", "create", "--name", "ops", "--role", "admin"]));
    let key = stdout.lines().last().unwrap().to_string();
    let (mut server, base) = serve(&home, None, &slow.uri(), 8);
    let reaper = Reaper(server.id());
    let project = json!({"name": "proj", "repository": repo, "test_command": "sh check.sh"});
    let (status, _) = post_json(&base, &key, "/api/v1/projects", project).await;
    assert_eq!(status, 201);
    let mut ids = Vec::new();
    for i in 0..6 {
        let (_, run) =
            post_json(&base, &key, "/api/v1/runs", json!({"project": "proj", "spec": format!("# Greet {i}")})).await;
        ids.push(run["id"].as_str().unwrap().to_string());
    }
    // Wait until every run is planning (its planner call in flight).
    let mut planning = 0;
    for _ in 0..300 {
        let (_, body) = get(&base, &key, "/api/v1/runs?project=proj").await;
        let v: Value = serde_json::from_str(&body).unwrap();
        planning = v["runs"].as_array().unwrap().iter().filter(|r| r["state"] == "planning").count();
        if planning == ids.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(planning, ids.len(), "every run waits on its model call");
    let started = std::time::Instant::now();
    assert!(Command::new("kill").args(["-TERM", &server.id().to_string()]).status().unwrap().success());
    let status = server.wait().unwrap();
    let took = started.elapsed();
    drop(reaper);
    assert_eq!(status.code(), Some(0));
    assert!(took < Duration::from_secs(10), "stopping took {took:?}");

    // Another process takes every run over at once (the leases were released, not left to
    // expire) and finishes them.
    let (server, base) = serve(&home, None, &fast.uri(), 8);
    let _reaper = Reaper(server.id());
    let resumed = std::time::Instant::now();
    for id in &ids {
        let mut state = Value::Null;
        for _ in 0..600 {
            let (_, body) = get(&base, &key, &format!("/api/v1/runs/{id}")).await;
            state = serde_json::from_str::<Value>(&body).unwrap()["state"].clone();
            if state == "succeeded" || state == "failed" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(state, "succeeded", "run {id}");
    }
    // Well within a lease's 30 s: nothing waited for an expiry.
    assert!(resumed.elapsed() < Duration::from_secs(25), "resumed in {:?}", resumed.elapsed());
}
