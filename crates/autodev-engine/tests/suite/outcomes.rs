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

    let (id, outcome) = app.run(settings(), "# Greet").await;

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
    // The failed run still leaves its report: what was done, why it stopped, what it cost.
    let report = std::fs::read_to_string(app.engine.run_dir(&id).join("report.md")).unwrap();
    assert!(report.contains("| outcome | failed: no_change: the run's branch has no change against main;"), "{report}");
    assert!(report.contains("### t1 — Greet — done") && report.contains("| task:t1 | 2 |"), "{report}");
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

    let (id, outcome) = app.run(settings(), "# Greet").await;

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

fn plan_json() -> serde_json::Value {
    json!({"summary": "s", "tasks": [{"id": "t1", "title": "Greet", "description": "", "depends_on": [], "acceptance": []}]})
}

/// Regression: a planner that only answered in text got "Answer by calling `submit_plan`" 30
/// times and failed after 18 minutes with "reached its step limit".
#[tokio::test]
async fn a_planner_that_only_answers_in_text_is_stopped_with_the_cause_named() {
    let app = TestApp::new().await;
    for turn in 0..30 {
        app.script.on("planner", turn, vec![text("I would split this into two steps: first read, then write.")]);
    }
    let (id, outcome) = app.run(settings(), "# Greet").await;
    assert_eq!(outcome, Outcome::Finished(RunState::Failed));
    let reason = app.reason(&id).await;
    assert!(reason.starts_with("planner: the model answered 2 times without calling a tool;"), "{reason}");
    assert!(reason.contains("may not support tool calls") && reason.contains("--jinja"), "{reason}");
    assert!(app.script.requests_for("planner").len() <= 5);
}

#[tokio::test]
async fn a_plan_in_text_that_does_not_parse_gets_its_error_back() {
    let app = TestApp::new().await;
    let tasks = plan_json()["tasks"].to_string();
    // The same plan with a duplicate `tasks` key, as a tool call written in a code fence.
    let broken = format!("{{\"summary\": \"s\", \"tasks\": {tasks}, \"tasks\": {tasks}}}");
    let call_text = format!("```json\n{{\"name\": \"submit_plan\", \"arguments\": {broken}}}\n```");
    app.script.on("planner", 0, vec![text(&call_text)]).on("planner", 1, vec![text(&call_text)]);
    // Native calls only (in `auto` such a call is run, and refused as a call).
    let mut s = settings();
    s.tool_calls = autodev_engine::ToolCallMode::Native;
    let (id, outcome) = app.run(s, "# Greet").await;
    assert_eq!(outcome, Outcome::Finished(RunState::Failed));
    let second = app.script.requests_for("planner")[1].to_string();
    assert!(
        second.contains("The plan in your reply could not be read") && second.contains("duplicate field `tasks`"),
        "{second}"
    );
    let reason = app.reason(&id).await;
    assert!(reason.contains("without calling a tool (its last reply held a plan that could not be read: "), "{reason}");
    assert!(reason.contains("duplicate field `tasks`"), "{reason}");
}

#[tokio::test]
async fn a_submit_plan_call_written_as_text_is_taken_when_it_validates() {
    let app = TestApp::new().await;
    let call_text = format!("<tool_call>\n{{\"name\": \"submit_plan\", \"arguments\": {}}}\n</tool_call>", plan_json());
    app.script.on("planner", 0, vec![text(&call_text)]).on(
        "task:t1",
        0,
        vec![write("greeting.txt", "hello\n"), finish("done")],
    );
    let (id, outcome) = app.run(settings(), "# Greet").await;
    assert_eq!(outcome, succeeded(), "{}", app.reason(&id).await);
}

#[tokio::test]
async fn a_coder_that_never_calls_a_tool_is_stopped_with_the_cause_named() {
    let app = TestApp::new().await;
    app.script.plan(plan_json()["tasks"].clone()).on("task:t1", 0, vec![text("Sure! I'll add the greeting.")]).on(
        "task:t1",
        1,
        vec![text("The greeting has been added.")],
    );
    let (id, outcome) = app.run(settings(), "# Greet").await;
    assert_eq!(outcome, Outcome::Finished(RunState::Failed));
    let reason = app.reason(&id).await;
    assert!(
        reason.starts_with("task t1 failed: task:t1: the model answered 2 times without calling a tool;"),
        "{reason}"
    );
    assert_eq!(app.script.requests_for("task:t1").len(), 2);
}

/// Regression: the coder's second text reply, a JSON tool call written as text, became the
/// task's summary and the run went green with nothing done.
#[tokio::test]
async fn a_tool_call_written_as_text_is_never_taken_as_a_summary() {
    let app = TestApp::new().await;
    let as_text = r#"{"name": "write_file", "arguments": {"path": "greeting.txt", "content": "hello\n"}}"#;
    app.script
        .plan(plan_json()["tasks"].clone())
        .on("task:t1", 0, vec![call("list_files", json!({}))])
        .on("task:t1", 1, vec![text(as_text)])
        .on("task:t1", 2, vec![text(as_text)]);
    // With native calls only: in `auto` (the default) the call in the text is run instead.
    let mut s = settings();
    s.tool_calls = autodev_engine::ToolCallMode::Native;
    let (id, outcome) = app.run(s, "# Greet").await;
    assert_eq!(outcome, Outcome::Finished(RunState::Failed));
    let reminder = app.script.requests_for("task:t1")[2].to_string();
    assert!(reminder.contains("holds a `write_file` call written as text"), "{reminder}");
    let reason = app.reason(&id).await;
    assert!(
        reason.contains("answered 2 times without calling a tool (it wrote a `write_file` call as text)"),
        "{reason}"
    );
}

#[tokio::test]
async fn the_same_reply_again_and_again_is_a_loop_that_stops_the_agent() {
    let app = TestApp::new().await;
    app.script.plan(plan_json()["tasks"].clone());
    for turn in 0..10 {
        app.script.on("task:t1", turn, vec![call("read_file", json!({"path": "README.md"}))]);
    }
    let (id, outcome) = app.run(settings(), "# Greet").await;
    assert_eq!(outcome, Outcome::Finished(RunState::Failed));
    let reason = app.reason(&id).await;
    assert!(reason.contains("task:t1: the model gave the same reply 3 times in a row (a loop): read_file"), "{reason}");
    let requests = app.script.requests_for("task:t1");
    assert_eq!(requests.len(), 3);
    // Before the third, the model was told it repeated itself (with the result).
    let told = tool_results(&requests[2]).last().cloned().unwrap();
    assert!(told.contains("# Project") && told.contains("You made exactly this call in your previous turn"), "{told}");
    assert!(!tool_results(&requests[1]).last().unwrap().contains("You made exactly"));
}

/// Two replies in turn (issue 27: the 1.5B model listed and read the same missing path by
/// turns until its step limit) are a loop too, found at the fourth reply.
#[tokio::test]
async fn two_replies_in_turn_are_a_loop_that_stops_the_agent() {
    let app = TestApp::new().await;
    app.script.plan(plan_json()["tasks"].clone());
    for turn in 0..10 {
        let c = if turn % 2 == 0 {
            call("list_files", json!({"path": "nope"}))
        } else {
            call("read_file", json!({"path": "nope"}))
        };
        app.script.on("task:t1", turn, vec![c]);
    }
    let (id, outcome) = app.run(settings(), "# Greet").await;
    assert_eq!(outcome, Outcome::Finished(RunState::Failed));
    let reason = app.reason(&id).await;
    assert!(
        reason.contains("task:t1: the model alternated between the same two replies twice (a loop): read_file"),
        "{reason}"
    );
    assert_eq!(app.script.requests_for("task:t1").len(), 4);
}

/// A repository whose test command runs every `tests/*.sh`.
fn with_test_runner(app: &TestApp) -> autodev_engine::RunSettings {
    std::fs::write(
        app.repo.join("run_tests.sh"),
        "set -e\nfor t in tests/*.sh; do [ -e \"$t\" ] && sh \"$t\"; done\necho ok\n",
    )
    .unwrap();
    git(&app.repo, &["add", "run_tests.sh"]);
    git(&app.repo, &["commit", "--quiet", "-m", "test runner"]);
    autodev_engine::RunSettings { test_command: "sh run_tests.sh".into(), ..settings() }
}

async fn evidence_of(app: &TestApp, id: &str) -> (Option<String>, Vec<autodev_domain::EventKind>) {
    let run = app.engine.store().get_run(id).await.unwrap();
    let kinds = app
        .events(id)
        .await
        .into_iter()
        .filter(|e| matches!(e.kind, autodev_domain::EventKind::Evidence { .. }))
        .map(|e| e.kind)
        .collect();
    (run.evidence, kinds)
}

#[tokio::test]
async fn a_new_test_that_fails_on_the_base_is_the_runs_evidence() {
    let app = TestApp::new().await;
    let s = with_test_runner(&app);
    app.script.plan(plan_json()["tasks"].clone()).on(
        "task:t1",
        0,
        vec![
            write("greeting.txt", "hello\n"),
            write("tests/greeting.sh", "grep -q hello greeting.txt\n"),
            finish("done"),
        ],
    );
    let (id, outcome) = app.run(s, "# Greet").await;
    assert_eq!(outcome, succeeded(), "{}", app.reason(&id).await);
    let (stored, events) = evidence_of(&app, &id).await;
    assert_eq!(stored.as_deref(), Some("proven"));
    let autodev_domain::EventKind::Evidence { verdict, test_files, base_exit_code, tail } = &events[0] else {
        panic!()
    };
    assert_eq!(
        (*verdict, test_files.clone()),
        (autodev_domain::Evidence::Proven, vec!["tests/greeting.sh".to_string()])
    );
    assert!(base_exit_code.is_some_and(|c| c != 0) && tail.contains("greeting.txt"), "{tail}");
    let report = std::fs::read_to_string(app.engine.run_dir(&id).join("report.md")).unwrap();
    assert!(report.contains("## Evidence: proven") && report.contains("`tests/greeting.sh`"), "{report}");
    // The scratch worktree on the base is gone.
    assert!(!app.engine.run_dir(&id).join("worktrees/evidence").exists());
}

#[tokio::test]
async fn tests_that_pass_on_the_base_too_prove_nothing_and_no_tests_is_said() {
    let app = TestApp::new().await;
    let s = with_test_runner(&app);
    app.script.plan(plan_json()["tasks"].clone()).on(
        "task:t1",
        0,
        vec![write("greeting.txt", "hello\n"), write("tests/readme.sh", "grep -q Project README.md\n"), finish("done")],
    );
    let (id, outcome) = app.run(s.clone(), "# Greet").await;
    assert_eq!(outcome, succeeded(), "{}", app.reason(&id).await);
    assert_eq!(evidence_of(&app, &id).await.0.as_deref(), Some("tests pass but prove nothing"));
    let report = std::fs::read_to_string(app.engine.run_dir(&id).join("report.md")).unwrap();
    assert!(report.contains("## Evidence: tests pass but prove nothing"), "{report}");

    let app = TestApp::new().await;
    let s = with_test_runner(&app);
    app.script.plan(plan_json()["tasks"].clone()).on(
        "task:t1",
        0,
        vec![write("greeting.txt", "hello\n"), finish("done")],
    );
    let (id, outcome) = app.run(s, "# Greet").await;
    assert_eq!(outcome, succeeded(), "{}", app.reason(&id).await);
    assert_eq!(evidence_of(&app, &id).await.0.as_deref(), Some("no tests"));
}

#[tokio::test]
async fn require_evidence_drives_a_repair_round_that_asks_for_a_failing_test() {
    let app = TestApp::new().await;
    let mut s = with_test_runner(&app);
    s.require_evidence = true;
    app.script
        .plan(plan_json()["tasks"].clone())
        .on("task:t1", 0, vec![write("greeting.txt", "hello\n"), finish("done")])
        .on("repair:1", 0, vec![write("tests/greeting.sh", "grep -q hello greeting.txt\n"), finish("added a test")]);
    let (id, outcome) = app.run(s, "# Greet").await;
    assert_eq!(outcome, succeeded(), "{}", app.reason(&id).await);
    let asked = app.script.requests_for("repair:1")[0].to_string();
    assert!(
        asked.contains("Missing evidence (repair round 1)") && asked.contains("the run changed no tests"),
        "{asked}"
    );
    let (stored, events) = evidence_of(&app, &id).await;
    assert_eq!(stored.as_deref(), Some("proven"));
    assert_eq!(events.len(), 2, "no tests, then proven");
    let run = app.engine.store().get_run(&id).await.unwrap();
    let subjects = git(&app.repo, &["log", "--format=%s", &format!("{}..{}", run.base_commit, run.branch)]);
    assert!(subjects.contains("Add tests that fail without the change (repair round 1)"), "{subjects}");
}

#[tokio::test]
async fn require_evidence_fails_no_evidence_after_the_repair_rounds() {
    let app = TestApp::new().await;
    let mut s = with_test_runner(&app);
    s.require_evidence = true;
    s.max_repair_rounds = 1;
    app.script
        .plan(plan_json()["tasks"].clone())
        .on(
            "task:t1",
            0,
            vec![
                write("greeting.txt", "hello\n"),
                write("tests/readme.sh", "grep -q Project README.md\n"),
                finish("done"),
            ],
        )
        .on("repair:1", 0, vec![write("tests/more.sh", "true\n"), finish("added another")]);
    let (id, outcome) = app.run(s, "# Greet").await;
    assert_eq!(outcome, Outcome::Finished(RunState::Failed));
    let reason = app.reason(&id).await;
    assert!(reason.starts_with("no_evidence: the tests pass, but with only the run's test changes ("), "{reason}");
    assert!(reason.contains("after 1 repair round(s)"), "{reason}");
}

#[tokio::test]
async fn in_the_text_mode_tool_calls_written_as_text_are_run_and_answered_in_text() {
    let app = TestApp::new().await;
    let write_text = r#"{"name": "write_file", "arguments": {"path": "greeting.txt", "content": "hello\n"}}"#;
    let finish_text = "```json\n{\"name\": \"finish\", \"arguments\": {\"summary\": \"wrote it\"}}\n```";
    app.script.plan(plan_json()["tasks"].clone()).on("task:t1", 0, vec![text(write_text)]).on(
        "task:t1",
        1,
        vec![text(finish_text)],
    );
    let mut s = settings();
    s.tool_calls = autodev_engine::ToolCallMode::Text;
    let (id, outcome) = app.run(s, "# Greet").await;
    assert_eq!(outcome, succeeded(), "{}", app.reason(&id).await);
    let requests = app.script.requests_for("task:t1");
    let system = requests[0]["messages"][0]["content"].as_str().unwrap();
    assert!(system.contains("# Calling tools") && system.contains("`write_file`"), "{system}");
    let last = requests[1]["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["role"], "user");
    assert!(last["content"].as_str().unwrap().starts_with("Result of `write_file`:\ncreated `greeting.txt`"), "{last}");
    let tasks = app.engine.store().tasks(&id).await.unwrap();
    assert_eq!(tasks[0].summary.as_deref(), Some("wrote it"));
}

/// The calls a request's reply schema offers (`response_format`), by name.
fn offered_names(request: &serde_json::Value) -> Vec<String> {
    let schema = &request["response_format"]["json_schema"]["schema"];
    schema["oneOf"]
        .as_array()
        .map(|o| o.iter().filter_map(|b| b["properties"]["name"]["const"].as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// Issue 27: `tool_calls = "schema"` asks for every reply as one JSON call constrained by the
/// server (`response_format` json_schema built from the tools), with the tools in the prompt
/// instead of the API's tool list; the results go back as text.
#[tokio::test]
async fn in_the_schema_mode_each_reply_is_constrained_to_a_call_of_an_offered_tool() {
    let app = TestApp::new().await;
    app.script
        .plan(plan_json()["tasks"].clone())
        .on_constrained(
            "task:t1",
            0,
            r#"{"name": "write_file", "arguments": {"path": "greeting.txt", "content": "hello\n"}}"#,
        )
        .on_constrained("task:t1", 1, r#"{"name": "finish", "arguments": {"summary": "wrote it"}}"#);
    let mut s = settings();
    s.tool_calls = autodev_engine::ToolCallMode::Schema;
    let (id, outcome) = app.run(s, "# Greet").await;
    assert_eq!(outcome, succeeded(), "{}", app.reason(&id).await);
    let requests = app.script.requests_for("task:t1");
    assert_eq!(requests.len(), 2);
    for r in &requests {
        assert!(r.get("tools").is_none(), "the tools are in the prompt, not the API's list: {r}");
        let names = offered_names(r);
        for tool in ["read_file", "write_file", "edit_file", "run", "finish"] {
            assert!(names.iter().any(|n| n == tool), "{tool} offered: {names:?}");
        }
        let write = r["response_format"]["json_schema"]["schema"]["oneOf"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["properties"]["name"]["const"] == "write_file")
            .unwrap()
            .clone();
        assert_eq!(write["properties"]["arguments"]["required"], json!(["path", "content"]), "{write}");
        assert_eq!(write["required"], json!(["name", "arguments"]));
    }
    let system = requests[0]["messages"][0]["content"].as_str().unwrap();
    assert!(system.contains("# Calling tools") && system.contains("`write_file`"), "{system}");
    let last = requests[1]["messages"].as_array().unwrap().last().unwrap().clone();
    assert!(last["content"].as_str().unwrap().starts_with("Result of `write_file`:\ncreated `greeting.txt`"), "{last}");
    // The planner, in the same mode, was constrained to its own tools.
    let planner = &app.script.requests_for("planner")[0];
    assert!(offered_names(planner).contains(&"submit_plan".to_string()), "{planner}");
}

/// Issue 27: in `auto`, a model that answers in text before it ever called a tool (the 1.5B
/// model called a tool named after its task) is asked again with constrained replies, and the
/// run goes on; a server that ignores `response_format` ends as before, with the advice.
#[tokio::test]
async fn auto_turns_to_constrained_replies_after_a_text_reply_and_says_so_when_ignored() {
    for honoured in [true, false] {
        let app = TestApp::new().await;
        app.script
            .plan(plan_json()["tasks"].clone())
            .on("task:t1", 0, vec![text(r#"{"name": "t1", "arguments": {}}"#)])
            .on("task:t1", 1, vec![text("I will now write the greeting.")]);
        if honoured {
            app.script
                .on_constrained(
                    "task:t1",
                    1,
                    r#"{"name": "write_file", "arguments": {"path": "greeting.txt", "content": "hello\n"}}"#,
                )
                .on_constrained("task:t1", 2, r#"{"name": "finish", "arguments": {"summary": "wrote it"}}"#);
        }
        let (id, outcome) = app.run(settings(), "# Greet").await;
        let requests = app.script.requests_for("task:t1");
        assert!(requests[0].get("response_format").is_none() && requests[0].get("tools").is_some());
        assert!(offered_names(&requests[1]).contains(&"write_file".to_string()), "{}", requests[1]);
        let switch =
            requests[1]["messages"].as_array().unwrap().last().unwrap()["content"].as_str().unwrap().to_string();
        assert!(switch.starts_with("Your reply did not call a tool.") && switch.contains("`finish`"), "{switch}");
        let warned = app.events(&id).await.iter().any(|e| {
            matches!(&e.kind, autodev_domain::EventKind::Warning { message } if message.contains("constrained to tool calls"))
        });
        assert!(warned);
        if honoured {
            assert_eq!(outcome, succeeded(), "{}", app.reason(&id).await);
            assert_eq!(requests.len(), 3);
        } else {
            assert_eq!(outcome, Outcome::Finished(RunState::Failed));
            let reason = app.reason(&id).await;
            assert!(
                reason.contains("answered 2 times without calling a tool")
                    && reason.contains("tool_calls = \"schema\""),
                "{reason}"
            );
        }
    }
}
