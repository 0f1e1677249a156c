use std::time::Duration;

use autodev_domain::{EventKind, RunState, TaskState};
use autodev_engine::Outcome;
use pretty_assertions::assert_eq;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::harness::*;

#[tokio::test]
async fn two_task_plan_with_a_dependency_delivers_a_tested_branch() {
    let app = TestApp::new().await;
    app.script
        .plan(json!([
            {"id": "t2", "title": "Greet the world", "description": "append", "depends_on": ["t1"], "acceptance": ["says world"]},
            {"id": "t1", "title": "Add the greeting file", "description": "create", "depends_on": [], "acceptance": ["says hello"]}
        ]))
        .on("task:t1", 0, vec![write("greeting.txt", "hello\n")])
        .on("task:t1", 1, vec![call("run", json!({"command": "sh check.sh"})), finish("added greeting.txt")])
        .on("task:t2", 0, vec![call("read_file", json!({"path": "greeting.txt"}))])
        .on("task:t2", 1, vec![call("edit_file", json!({"path": "greeting.txt", "old_text": "hello\n", "new_text": "hello world\n"})), finish("greeted the world")]);
    let head_before = git(&app.repo, &["rev-parse", "HEAD"]);
    let (id, outcome) = app.run(settings(), "# Greet\n\nSay hello world.").await;
    assert_eq!(outcome, succeeded(), "{}", app.reason(&id).await);

    let run = app.engine.store().get_run(&id).await.unwrap();
    // The run branch is in the user's repository, with both tasks' commits in order.
    let subjects =
        git(&app.repo, &["log", "--format=%s", "--reverse", "--topo-order", &format!("main..{}", run.branch)]);
    assert_eq!(
        subjects.lines().collect::<Vec<_>>(),
        vec![
            "Add the greeting file",
            "Merge task t1: Add the greeting file",
            "Greet the world",
            "Merge task t2: Greet the world"
        ]
    );
    assert_eq!(git(&app.repo, &["show", &format!("{}:greeting.txt", run.branch)]), "hello world");
    // t2 saw t1's work: it started from the run branch after t1 was merged.
    let t2_read = &app.script.requests_for("task:t2")[1];
    assert!(t2_read.to_string().contains("hello"), "{t2_read}");
    // The user's checkout is untouched.
    assert_eq!(git(&app.repo, &["rev-parse", "HEAD"]), head_before);
    assert_eq!(git(&app.repo, &["branch", "--show-current"]), "main");
    assert_eq!(git(&app.repo, &["status", "--porcelain"]), "");
    assert!(!app.repo.join("greeting.txt").exists());
    // Report and patch are in the run's folder; worktrees and task branches are gone.
    let dir = app.engine.run_dir(&id);
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(report.contains("t1 — Add the greeting file") && report.contains("round 0: passed"), "{report}");
    let patch = std::fs::read_to_string(dir.join("changes.patch")).unwrap();
    assert!(patch.contains("+hello world"), "{patch}");
    assert!(!dir.join("worktrees/run").exists());
    assert_eq!(git(&app.repo, &["branch", "--list", "autodev/*-tasks/*"]), "");
    // States went the documented way; usage was counted (4 task turns + 1 planner turn).
    let states: Vec<RunState> = app
        .events(&id)
        .await
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::StateChanged { to, .. } => Some(to),
            _ => None,
        })
        .collect();
    assert_eq!(
        states,
        vec![RunState::Planning, RunState::Executing, RunState::Verifying, RunState::Delivering, RunState::Succeeded]
    );
    assert_eq!(run.input_tokens, 5 * 1000);
    // gpt-4.1-mini: 5,000 in at $0.40/M + 500 out at $1.60/M = $0.0028.
    assert_eq!(run.cost_micros, 2_800);
}

#[tokio::test]
async fn independent_tasks_run_in_parallel() {
    let app = TestApp::with_delay(Duration::from_millis(300)).await;
    app.script
        .plan(json!([
            {"id": "a", "title": "Write a", "description": "", "depends_on": [], "acceptance": []},
            {"id": "b", "title": "Write b", "description": "", "depends_on": [], "acceptance": []},
            {"id": "c", "title": "Write greeting", "description": "", "depends_on": ["a", "b"], "acceptance": []}
        ]))
        .on("task:a", 0, vec![write("a.txt", "a\n"), finish("a")])
        .on("task:b", 0, vec![write("b.txt", "b\n"), finish("b")])
        .on("task:c", 0, vec![write("greeting.txt", "hello\n"), finish("c")]);
    let (id, outcome) = app.run(settings(), "# Three files").await;
    assert_eq!(outcome, succeeded(), "{}", app.reason(&id).await);
    let events = app.events(&id).await;
    let order: Vec<(String, TaskState)> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::TaskStateChanged { task, state, .. }
                if matches!(state, TaskState::Running | TaskState::Done) =>
            {
                Some((task.clone(), *state))
            }
            _ => None,
        })
        .collect();
    // a and b were both running before either was done; c ran after both.
    assert_eq!(&order[..2], &[("a".to_string(), TaskState::Running), ("b".to_string(), TaskState::Running)]);
    assert_eq!(order[4], ("c".to_string(), TaskState::Running));
}

#[tokio::test]
async fn a_failing_test_goes_to_a_repair_agent_which_fixes_it() {
    let app = TestApp::new().await;
    app.script
        .plan(json!([{"id": "t1", "title": "Add greeting", "description": "", "depends_on": [], "acceptance": []}]))
        .on("task:t1", 0, vec![write("greeting.txt", "goodbye\n"), finish("done (wrongly)")])
        .on("repair:1", 0, vec![read("greeting.txt"), write("greeting.txt", "hello\n"), finish("fixed the greeting")]);
    let (id, outcome) = app.run(settings(), "# Greet").await;
    assert_eq!(outcome, succeeded(), "{}", app.reason(&id).await);
    let tests: Vec<(u32, bool)> = app
        .events(&id)
        .await
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::TestRun { round, passed, .. } => Some((*round, *passed)),
            _ => None,
        })
        .collect();
    assert_eq!(tests, vec![(0, false), (1, true)]);
    // The repair agent was shown the failing output.
    let repair = &app.script.requests_for("repair:1")[0];
    assert!(repair.to_string().contains("exit code 1"), "{repair}");
    let run = app.engine.store().get_run(&id).await.unwrap();
    let subjects = git(&app.repo, &["log", "--format=%s", "-1", &run.branch]);
    assert_eq!(subjects, "Fix failing tests (repair round 1)");
}

#[tokio::test]
async fn tests_that_keep_failing_fail_the_run_after_the_repair_rounds() {
    let app = TestApp::new().await;
    app.script
        .plan(json!([{"id": "t1", "title": "Add greeting", "description": "", "depends_on": [], "acceptance": []}]))
        .on("task:t1", 0, vec![write("greeting.txt", "nope\n"), finish("x")])
        .on("repair:1", 0, vec![finish("could not fix")]);
    let mut s = settings();
    s.max_repair_rounds = 1;
    let (id, outcome) = app.run(s, "# Greet").await;
    assert_eq!(outcome, Outcome::Finished(RunState::Failed));
    assert!(app.reason(&id).await.starts_with("tests still fail after 1 repair round(s)"), "{}", app.reason(&id).await);
}

#[tokio::test]
async fn a_plan_with_a_cycle_is_refused_and_the_planner_corrects_it() {
    let app = TestApp::new().await;
    let cyclic = json!({"summary": "s", "tasks": [
        {"id": "a", "title": "A", "description": "", "depends_on": ["b"], "acceptance": []},
        {"id": "b", "title": "B", "description": "", "depends_on": ["a"], "acceptance": []}
    ]});
    app.script
        .on("planner", 0, vec![call("submit_plan", cyclic)])
        .on("planner", 1, vec![call("submit_plan", json!({"summary": "s", "tasks": [{"id": "a", "title": "A", "description": "", "depends_on": [], "acceptance": []}]}))])
        .on("task:a", 0, vec![write("greeting.txt", "hello\n"), finish("ok")]);
    let (id, outcome) = app.run(settings(), "# Greet").await;
    assert_eq!(outcome, succeeded(), "{}", app.reason(&id).await);
    let rejected: Vec<String> = app
        .events(&id)
        .await
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::PlanRejected { reason } => Some(reason.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(rejected.len(), 1);
    assert!(
        rejected[0].contains("cycle: a -> b -> a") || rejected[0].contains("cycle: b -> a -> b"),
        "{}",
        rejected[0]
    );
    // The planner saw the reason as the tool result.
    let second = &app.script.requests_for("planner")[1];
    assert!(second.to_string().contains("plan refused"), "{second}");
}

#[tokio::test]
async fn a_planner_that_keeps_submitting_bad_plans_fails_the_run() {
    let app = TestApp::new().await;
    let bad = json!({"summary": "s", "tasks": [{"id": "a", "title": "A", "description": "", "depends_on": ["ghost"], "acceptance": []}]});
    for turn in 0..3 {
        app.script.on("planner", turn, vec![call("submit_plan", bad.clone())]);
    }
    let (id, outcome) = app.run(settings(), "# Greet").await;
    assert_eq!(outcome, Outcome::Finished(RunState::Failed));
    assert!(app.reason(&id).await.contains("depends on `ghost`"), "{}", app.reason(&id).await);
}

#[tokio::test]
async fn a_merge_conflict_is_handed_to_an_agent_and_resolved() {
    let app = TestApp::new().await;
    app.script
        .plan(json!([
            {"id": "x", "title": "Say hello", "description": "", "depends_on": [], "acceptance": []},
            {"id": "y", "title": "Say hi", "description": "", "depends_on": [], "acceptance": []}
        ]))
        .on("task:x", 0, vec![write("greeting.txt", "hello\n"), finish("x")])
        .on("task:y", 0, vec![write("greeting.txt", "hi\n"), finish("y")])
        // Whichever task finishes second meets the conflict.
        .on("merge:x", 0, vec![read("greeting.txt"), write("greeting.txt", "hello and hi\n"), finish("kept both")])
        .on("merge:y", 0, vec![read("greeting.txt"), write("greeting.txt", "hello and hi\n"), finish("kept both")]);
    let (id, outcome) = app.run(settings(), "# Greet").await;
    assert_eq!(outcome, succeeded(), "{}", app.reason(&id).await);
    let conflicts: Vec<Vec<String>> = app
        .events(&id)
        .await
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::MergeConflict { files, .. } => Some(files.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(conflicts, vec![vec!["greeting.txt".to_string()]]);
    let run = app.engine.store().get_run(&id).await.unwrap();
    assert_eq!(git(&app.repo, &["show", &format!("{}:greeting.txt", run.branch)]), "hello and hi");
}

#[tokio::test]
async fn the_approval_gate_stops_after_planning_until_approved() {
    let app = TestApp::new().await;
    app.script
        .plan(json!([{"id": "t1", "title": "Add greeting", "description": "", "depends_on": [], "acceptance": []}]))
        .on("task:t1", 0, vec![write("greeting.txt", "hello\n"), finish("ok")]);
    let mut s = settings();
    s.approval = true;
    let (id, outcome) = app.run(s, "# Greet").await;
    assert_eq!(outcome, Outcome::AwaitingApproval);
    assert_eq!(app.script.requests_for("task:t1").len(), 0);
    app.engine.approve(&id, true, "tester", "looks right").await.unwrap();
    let outcome = app.engine.drive(&id, CancellationToken::new()).await.unwrap();
    assert_eq!(outcome, succeeded());

    let (id2, _) = app
        .run(
            {
                let mut s = settings();
                s.approval = true;
                s
            },
            "# Greet again",
        )
        .await;
    // Rejected without a comment: cancelled (with one, the planner revises the plan; see
    // governance.rs).
    app.engine.approve(&id2, false, "tester", "").await.unwrap();
    assert_eq!(app.engine.store().run_state(&id2).await.unwrap(), RunState::Cancelled);
    assert_eq!(app.reason(&id2).await, "plan rejected");
}

#[tokio::test]
async fn cancelling_a_run_stops_it_between_steps() {
    let app = TestApp::with_delay(Duration::from_millis(400)).await;
    app.script
        .plan(json!([{"id": "t1", "title": "Slow", "description": "", "depends_on": [], "acceptance": []}]))
        .on("task:t1", 0, vec![call("list_files", json!({}))])
        .on("task:t1", 1, vec![call("list_files", json!({}))])
        .on("task:t1", 2, vec![write("greeting.txt", "hello\n"), finish("ok")]);
    let id = app.create(settings(), "# Slow").await;
    let engine = app.engine.clone();
    let id2 = id.clone();
    let driver = tokio::spawn(async move { engine.drive(&id2, CancellationToken::new()).await });
    tokio::time::sleep(Duration::from_millis(900)).await;
    app.engine.cancel(&id).await.unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(10), driver).await.unwrap().unwrap().unwrap();
    assert_eq!(outcome, Outcome::Finished(RunState::Cancelled));
    assert!(app.script.requests_for("task:t1").len() < 3);
    // A cancelled run still leaves its report.
    let report = std::fs::read_to_string(app.engine.run_dir(&id).join("report.md")).unwrap();
    assert!(report.contains("| outcome | cancelled"), "{report}");
}

/// Regression: a task two steps downstream of a failed one stayed pending, and the run
/// reported "no task can start" instead of naming the failure.
#[tokio::test]
async fn a_failed_task_skips_its_dependents_transitively_and_fails_the_run() {
    let app = TestApp::new().await;
    app.script.plan(json!([
        {"id": "a", "title": "A", "description": "", "depends_on": [], "acceptance": []},
        {"id": "b", "title": "B", "description": "", "depends_on": ["a"], "acceptance": []},
        {"id": "c", "title": "C", "description": "", "depends_on": ["b"], "acceptance": []}
    ]));
    // Task a gets no script: the model refuses, the task fails.
    let (id, outcome) = app.run(settings(), "# Chain").await;
    assert_eq!(outcome, Outcome::Finished(RunState::Failed));
    let tasks = app.engine.store().tasks(&id).await.unwrap();
    let states: Vec<(&str, TaskState)> = tasks.iter().map(|t| (t.task_key.as_str(), t.task_state())).collect();
    assert_eq!(states, vec![("a", TaskState::Failed), ("b", TaskState::Skipped), ("c", TaskState::Skipped)]);
    assert!(app.reason(&id).await.starts_with("task a failed: model call failed"), "{}", app.reason(&id).await);
}

#[tokio::test]
async fn models_that_answer_in_text_instead_of_calling_tools_still_finish() {
    let app = TestApp::new().await;
    let plan = json!({"summary": "s", "tasks": [{"id": "t1", "title": "Add greeting", "description": "", "depends_on": [], "acceptance": []}]});
    app.script
        // The planner writes the plan in its reply, in a code fence.
        .on("planner", 0, vec![text(&format!("Here is the plan:\n```json\n{plan}\n```"))])
        .on("task:t1", 0, vec![write("greeting.txt", "hello\n")])
        // The agent says it is done instead of calling finish; reminded once, it says so again.
        .on("task:t1", 1, vec![text("I wrote the greeting.")])
        .on("task:t1", 2, vec![text("Done: greeting.txt says hello.")]);
    let (id, outcome) = app.run(settings(), "# Greet").await;
    assert_eq!(outcome, succeeded(), "{}", app.reason(&id).await);
    let tasks = app.engine.store().tasks(&id).await.unwrap();
    assert_eq!(tasks[0].summary.as_deref(), Some("Done: greeting.txt says hello."));
    let reminder = &app.script.requests_for("task:t1")[2];
    assert!(reminder.to_string().contains("call `finish`"), "{reminder}");
}

#[tokio::test]
async fn a_test_command_that_cannot_run_fails_without_repair_rounds() {
    let app = TestApp::new().await;
    app.script
        .plan(json!([{"id": "t1", "title": "Add greeting", "description": "", "depends_on": [], "acceptance": []}]))
        .on("task:t1", 0, vec![write("greeting.txt", "hello\n"), finish("ok")]);
    let mut s = settings();
    s.test_command = "no-such-test-runner --all".into();
    let (id, outcome) = app.run(s, "# Greet").await;
    assert_eq!(outcome, Outcome::Finished(RunState::Failed));
    let reason = app.reason(&id).await;
    assert!(reason.starts_with("the test command `no-such-test-runner --all` could not run ("), "{reason}");
    assert!(reason.contains("not found"), "{reason}");
    assert!(app.script.requests_for("repair:1").is_empty());
}
