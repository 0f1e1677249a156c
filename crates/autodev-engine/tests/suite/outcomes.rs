//! Honest outcomes (issue 15): no success without a change, models diagnosed in turns.
use autodev_domain::{RunState, TaskState};
use autodev_engine::Outcome;
use pretty_assertions::assert_eq;
use serde_json::json;

use super::harness::*;

/// Regression: an agent that finished without changing anything got a green run (empty patch,
/// no commit, the branch at `main`) because the old tests still passed.
#[tokio::test]
async fn a_run_whose_agents_change_nothing_fails_no_change_with_their_words() {
    let app = TestApp::new().await;
    std::fs::write(app.repo.join("greeting.txt"), "hello\n").unwrap();
    git(&app.repo, &["add", "greeting.txt"]);
    git(&app.repo, &["commit", "--quiet", "-m", "already greets"]);
    app.script
        .plan(json!([{"id": "t1", "title": "Greet", "description": "", "depends_on": [], "acceptance": []}]))
        .on("task:t1", 0, vec![call("read_file", json!({"path": "greeting.txt"}))])
        .on("task:t1", 1, vec![finish("greeting.txt already says hello; nothing to do")]);

    let (id, outcome) = app.run(settings(&app.server), "# Greet").await;

    assert_eq!(outcome, Outcome::Finished(RunState::Failed));
    assert_eq!(
        app.reason(&id).await,
        "no_change: the run's branch has no change against main; the agents said: t1: greeting.txt already says hello; nothing to do"
    );
    let tasks = app.engine.store().tasks(&id).await.unwrap();
    assert_eq!(tasks[0].task_state(), TaskState::Done);
    assert_eq!(tasks[0].reason.as_deref(), Some("no_change: the agent finished without changing any file"));
    // No test was run on an unchanged branch.
    assert!(!app.events(&id).await.iter().any(|e| matches!(e.kind, autodev_domain::EventKind::TestRun { .. })));
}

#[tokio::test]
async fn a_task_without_a_change_says_so_while_the_run_succeeds_on_the_others() {
    let app = TestApp::new().await;
    app.script
        .plan(json!([
            {"id": "t1", "title": "Greet", "description": "", "depends_on": [], "acceptance": []},
            {"id": "t2", "title": "Check", "description": "", "depends_on": ["t1"], "acceptance": []}
        ]))
        .on("task:t1", 0, vec![write("greeting.txt", "hello\n"), finish("wrote it")])
        .on("task:t2", 0, vec![finish("looked; all fine")]);

    let (id, outcome) = app.run(settings(&app.server), "# Greet").await;

    assert_eq!(outcome, succeeded(), "{}", app.reason(&id).await);
    let tasks = app.engine.store().tasks(&id).await.unwrap();
    let t2 = tasks.iter().find(|t| t.task_key == "t2").unwrap();
    assert_eq!(
        (t2.task_state(), t2.reason.as_deref()),
        (TaskState::Done, Some("no_change: the agent finished without changing any file"))
    );
    let report = std::fs::read_to_string(app.engine.run_dir(&id).join("report.md")).unwrap();
    assert!(report.contains("Reason: no_change: the agent finished without changing any file"), "{report}");
}
