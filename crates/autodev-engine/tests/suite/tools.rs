use autodev_domain::{EventKind, RunState, TaskState};
use autodev_engine::Outcome;
use pretty_assertions::assert_eq;
use serde_json::json;

use super::harness::*;

#[tokio::test]
async fn a_path_escape_is_refused_and_the_model_reads_why() {
    let app = TestApp::new().await;
    let secret = app.repo.parent().unwrap().join("secret.txt");
    std::fs::write(&secret, "top secret").unwrap();
    // A symlink committed in the repository that points outside it.
    std::os::unix::fs::symlink(&secret, app.repo.join("escape_link")).unwrap();
    git(&app.repo, &["add", "escape_link"]);
    git(&app.repo, &["commit", "--quiet", "-m", "add a link"]);
    app.script
        .plan(json!([{"id": "t1", "title": "Try to escape", "description": "", "depends_on": [], "acceptance": []}]))
        .on(
            "task:t1",
            0,
            vec![
                call("read_file", json!({"path": "../secret.txt"})),
                call("read_file", json!({"path": secret.to_str().unwrap()})),
                call("write_file", json!({"path": "../../evil.txt", "content": "x"})),
                call("read_file", json!({"path": "escape_link"})),
            ],
        )
        .on("task:t1", 1, vec![write("greeting.txt", "hello\n"), finish("ok")]);
    let (id, outcome) = app.run(settings(), "# Escape").await;
    assert_eq!(outcome, succeeded(), "{}", app.reason(&id).await);
    let results = tool_results(&app.script.requests_for("task:t1")[1]);
    assert_eq!(results.len(), 4);
    assert!(results[0].contains("leaves the workspace"), "{}", results[0]);
    assert!(results[1].contains("is absolute"), "{}", results[1]);
    assert!(results[2].contains("leaves the workspace"), "{}", results[2]);
    assert!(results[3].contains("symlink to outside the workspace"), "{}", results[3]);
    assert!(results.iter().all(|r| !r.contains("top secret")));
    let failed: Vec<bool> = app
        .events(&id)
        .await
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ToolFinished { ok, conversation, .. } if conversation == "task:t1" => Some(*ok),
            _ => None,
        })
        .collect();
    assert_eq!(&failed[..4], &[false, false, false, false]);
}

#[tokio::test]
async fn a_command_that_times_out_is_killed_and_reported() {
    let app = TestApp::new().await;
    app.script
        .plan(json!([{"id": "t1", "title": "Hang", "description": "", "depends_on": [], "acceptance": []}]))
        .on("task:t1", 0, vec![call("run", json!({"command": "sleep 60; echo late", "timeout_secs": 1}))])
        .on("task:t1", 1, vec![write("greeting.txt", "hello\n"), finish("ok")]);
    let started = std::time::Instant::now();
    let (id, outcome) = app.run(settings(), "# Hang").await;
    assert_eq!(outcome, succeeded(), "{}", app.reason(&id).await);
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    let results = tool_results(&app.script.requests_for("task:t1")[1]);
    assert!(results[0].starts_with("timed out after 1."), "{}", results[0]);
}

#[tokio::test]
async fn invalid_tool_arguments_and_unknown_tools_go_back_to_the_model() {
    let app = TestApp::new().await;
    app.script
        .plan(json!([{"id": "t1", "title": "Sloppy", "description": "", "depends_on": [], "acceptance": []}]))
        .on(
            "task:t1",
            0,
            vec![
                json!({"name": "write_file", "arguments": "{\"path\": \"greeting.txt\", \"content\": "}),
                call("rm_rf", json!({})),
            ],
        )
        .on("task:t1", 1, vec![write("greeting.txt", "hello\n"), finish("ok")]);
    let (id, outcome) = app.run(settings(), "# Sloppy").await;
    assert_eq!(outcome, succeeded(), "{}", app.reason(&id).await);
    let results = tool_results(&app.script.requests_for("task:t1")[1]);
    assert!(results[0].starts_with("invalid arguments for write_file"), "{}", results[0]);
    assert!(results[1].starts_with("unknown tool `rm_rf`"), "{}", results[1]);
}

#[tokio::test]
async fn agent_commands_do_not_see_secrets_from_the_environment() {
    let app = TestApp::new().await;
    app.script
        .plan(json!([{"id": "t1", "title": "Env", "description": "", "depends_on": [], "acceptance": []}]))
        .on("task:t1", 0, vec![call("run", json!({"command": "env | cut -d= -f1"}))])
        .on("task:t1", 1, vec![write("greeting.txt", "hello\n"), finish("ok")]);
    let mut s = settings();
    s.sandbox_pass_env = vec!["MY_SERVICE_TOKEN".into()];
    let (id, outcome) = app.run(s, "# Env").await;
    assert_eq!(outcome, succeeded(), "{}", app.reason(&id).await);
    let names = &tool_results(&app.script.requests_for("task:t1")[1])[0];
    for bad in ["OPENAI_API_KEY", "ANTHROPIC_API_KEY", "TOKEN", "SECRET", "DATABASE_URL"] {
        assert!(!names.contains(bad), "{bad} leaked: {names}");
    }
    assert!(names.contains("PATH"), "{names}");
}

#[tokio::test]
async fn an_agent_that_never_finishes_hits_the_step_limit() {
    let app = TestApp::new().await;
    app.script.plan(json!([{"id": "t1", "title": "Loop", "description": "", "depends_on": [], "acceptance": []}]));
    for turn in 0..5 {
        // Different calls each turn: the same one again and again would be stopped as a loop.
        app.script.on("task:t1", turn, vec![call("search", json!({"pattern": format!("x{turn}")}))]);
    }
    let mut s = settings();
    s.max_steps = 3;
    let (id, outcome) = app.run(s, "# Loop").await;
    assert_eq!(outcome, Outcome::Finished(RunState::Failed));
    // Nothing changed: nothing to verify, the task fails as before.
    assert_eq!(
        app.reason(&id).await,
        "task t1 failed: task t1 reached its step limit (3 model turns) without changing any file"
    );
    assert_eq!(app.script.requests_for("task:t1").len(), 3);
}

/// At its step limit, a task keeps its work: the change is committed, the task is `done` with
/// the reason `incomplete: …`, and the engine's tests decide (here they pass). The model was
/// told its budget, and warned when a fifth and a twentieth of it were left.
#[tokio::test]
async fn a_task_at_its_step_limit_with_a_change_is_verified_by_the_tests() {
    let app = TestApp::new().await;
    app.script.plan(json!([{"id": "t1", "title": "Greet", "description": "", "depends_on": [], "acceptance": []}]));
    app.script.on("task:t1", 0, vec![write("greeting.txt", "hello\n")]);
    for turn in 1..20 {
        app.script.on("task:t1", turn, vec![call("search", json!({"pattern": format!("x{turn}")}))]);
    }
    let mut s = settings();
    s.max_steps = 20;
    let (id, outcome) = app.run(s, "# Greet").await;
    assert_eq!(outcome, succeeded(), "{}", app.reason(&id).await);
    let tasks = app.engine.store().tasks(&id).await.unwrap();
    assert_eq!(tasks[0].task_state(), TaskState::Done);
    let reason = tasks[0].reason.clone().unwrap_or_default();
    assert!(reason.starts_with("incomplete: reached its step limit (20 model turns)"), "{reason}");
    assert!(tasks[0].commit_sha.is_some(), "the change was committed");
    assert!(app.events(&id).await.iter().any(|e| matches!(&e.kind, EventKind::TestRun { passed: true, .. })));
    let requests = app.script.requests_for("task:t1");
    assert_eq!(requests.len(), 20);
    assert!(requests[0].to_string().contains("You have 20 steps"), "the budget is in the prompt");
    // After turn 15 (4 left) and turn 18 (1 left).
    let said = |i: usize| tool_results(&requests[i]).last().cloned().unwrap_or_default();
    assert!(said(16).contains("4 of your 20 steps are left"), "{}", said(16));
    assert!(said(19).contains("Only 1 step is left"), "{}", said(19));
    assert!(!said(15).contains("steps are left"), "{}", said(15));
}

#[tokio::test]
async fn a_task_that_spends_its_token_budget_fails() {
    let app = TestApp::new().await;
    app.script.plan(json!([{"id": "t1", "title": "Chatty", "description": "", "depends_on": [], "acceptance": []}]));
    for turn in 0..10 {
        // Different calls each turn: the same one again and again would be stopped as a loop.
        app.script.on("task:t1", turn, vec![call("search", json!({"pattern": format!("x{turn}")}))]);
    }
    let mut s = settings();
    // Each scripted call reports 1,100 tokens: the third call would start past 2,500.
    s.max_task_tokens = 2_500;
    let (id, outcome) = app.run(s, "# Chatty").await;
    assert_eq!(outcome, Outcome::Finished(RunState::Failed));
    assert_eq!(
        app.reason(&id).await,
        "task t1 failed: task:t1 spent its token budget (3300 of 2500 tokens) without finishing"
    );
    assert_eq!(app.script.requests_for("task:t1").len(), 3);
}

#[tokio::test]
async fn the_run_stops_calling_the_model_once_its_cost_budget_is_spent() {
    let app = TestApp::new().await;
    app.script.plan(json!([{"id": "t1", "title": "Costly", "description": "", "depends_on": [], "acceptance": []}]));
    for turn in 0..10 {
        // Different calls each turn: the same one again and again would be stopped as a loop.
        app.script.on("task:t1", turn, vec![call("search", json!({"pattern": format!("x{turn}")}))]);
    }
    let mut s = settings();
    s.model = "gpt-4.1".into(); // $2/M in, $8/M out: 1,000 + 100 tokens = $0.0028 a call
    s.max_output_tokens = 200;
    s.max_cost_usd = Some(0.01);
    let (id, outcome) = app.run(s, "# Costly").await;
    assert_eq!(outcome, Outcome::Finished(RunState::Failed));
    let reason = app.reason(&id).await;
    assert!(reason.starts_with("budget_exceeded: the run's limit max_cost_usd = $0.0100 would be passed"), "{reason}");
    // Each call reserved its worst case first, so the spend never passed the limit (before
    // reservations this run stopped at $0.0112).
    let run = app.engine.store().get_run(&id).await.unwrap();
    assert!(run.cost_micros <= 10_000, "spent {} µ$", run.cost_micros);
    let calls = app.script.requests.lock().unwrap().len() as i64;
    assert!(calls >= 2 && run.cost_micros == calls * 2_800, "{calls} calls, {} µ$", run.cost_micros);
    // A warning at 80%.
    let events = app.engine.store().events(&id, 0).await.unwrap();
    assert!(
        events.iter().any(|e| matches!(&e.kind, EventKind::Warning { message } if message.starts_with("80% of the run's limit max_cost_usd = $0.0100"))),
        "no 80% warning"
    );
}

/// Issue 12's report: four agents in parallel each checked the spend and then called, and a
/// $2.00 run stopped at $2.146. With reservations, four parallel agents stop within the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_parallel_agents_stop_within_the_cost_limit() {
    let app = TestApp::new().await;
    let tasks: Vec<_> = (1..=4)
        .map(|i| json!({"id": format!("t{i}"), "title": format!("Costly {i}"), "description": "", "depends_on": [], "acceptance": []}))
        .collect();
    app.script.plan(json!(tasks));
    for i in 1..=4 {
        for turn in 0..20 {
            app.script.on(
                &format!("task:t{i}"),
                turn,
                vec![call("search", json!({"pattern": format!("t{i}x{turn}")}))],
            );
        }
    }
    let mut s = settings();
    s.model = "gpt-4.1".into();
    s.max_output_tokens = 200;
    s.max_parallel = 4;
    s.max_cost_usd = Some(0.03);
    let (id, outcome) = app.run(s, "# Costly in parallel").await;
    assert_eq!(outcome, Outcome::Finished(RunState::Failed));
    assert!(app.reason(&id).await.starts_with("budget_exceeded:"), "{}", app.reason(&id).await);
    let run = app.engine.store().get_run(&id).await.unwrap();
    assert!(run.cost_micros <= 30_000, "spent {} µ$ of 30000", run.cost_micros);
    // The limit was used, not left idle: within one call's worst case of it.
    assert!(run.cost_micros > 30_000 - 2 * 4_500, "spent only {} µ$", run.cost_micros);
}

/// A run stopped by its budget keeps what it did; raising the limit and resuming continues
/// it where it stopped, without paying for a recorded call twice.
#[tokio::test]
async fn a_budget_stopped_run_continues_once_the_limit_is_raised() {
    let app = TestApp::new().await;
    app.script.plan(json!([{"id": "t1", "title": "Costly", "description": "", "depends_on": [], "acceptance": []}]));
    for turn in 0..6 {
        app.script.on("task:t1", turn, vec![call("search", json!({"pattern": format!("x{turn}")}))]);
    }
    app.script.on("task:t1", 6, vec![write("greeting.txt", "hello\n")]);
    app.script.on("task:t1", 7, vec![finish("done")]);
    let mut s = settings();
    s.model = "gpt-4.1".into();
    s.max_output_tokens = 200;
    s.max_cost_usd = Some(0.01);
    let (id, outcome) = app.run(s.clone(), "# Costly").await;
    assert_eq!(outcome, Outcome::Finished(RunState::Failed));
    let stopped = app.engine.store().get_run(&id).await.unwrap();
    let calls_before = app.script.requests.lock().unwrap().len();
    // The limit is raised and the run reopened (what `autodev resume RUN --max-cost-usd` does).
    s.max_cost_usd = Some(1.0);
    let json = serde_json::to_string(&s).unwrap();
    app.engine.store().reopen_budget_run(&id, Some(&json)).await.unwrap().unwrap();
    let outcome = app.engine.drive(&id, tokio_util::sync::CancellationToken::new()).await.unwrap();
    assert_eq!(outcome, Outcome::Finished(RunState::Succeeded), "{}", app.reason(&id).await);
    // Each (conversation, turn) was asked once: the planner and task turns before the stop
    // were not paid for again.
    let mut seen = std::collections::HashSet::new();
    for body in app.script.requests.lock().unwrap().iter() {
        let key = autodev_testkit::conversation_of(body);
        assert!(seen.insert(key.clone()), "{key:?} was asked twice");
    }
    assert_eq!(seen.len(), 1 + 8);
    assert!(calls_before < 9, "{calls_before} calls before the stop");
    let done = app.engine.store().get_run(&id).await.unwrap();
    assert!(done.cost_micros > stopped.cost_micros);
}

/// `search_code` (tool interface v1.1): planners and agents search the run's code index,
/// built from the run's checkout when first used; its arguments are checked like any tool's.
#[tokio::test]
async fn planners_and_agents_search_the_code_index() {
    let app = TestApp::new().await;
    std::fs::write(
        app.repo.join("billing.py"),
        "def charge_customer(amount):\n    \"\"\"Takes the amount from the customer's card.\"\"\"\n    return amount > 0\n",
    )
    .unwrap();
    git(&app.repo, &["add", "billing.py"]);
    git(&app.repo, &["commit", "--quiet", "-m", "billing"]);
    app.script
        .on("planner", 0, vec![call("search_code", json!({"query": "where is the customer charged"}))])
        .on(
            "planner",
            1,
            vec![call(
                "submit_plan",
                json!({"summary": "p", "tasks": [{"id": "t1", "title": "Greet", "description": "", "depends_on": [], "acceptance": []}]}),
            )],
        )
        .on(
            "task:t1",
            0,
            vec![
                call("search_code", json!({"query": "charge customer", "limit": 1})),
                call("search_code", json!({"query": ""})),
                call("search_code", json!({"query": "x", "limit": 99})),
            ],
        )
        .on("task:t1", 1, vec![write("greeting.txt", "hello\n"), finish("ok")]);
    let (id, outcome) = app.run(settings(), "# Greet").await;
    assert_eq!(outcome, succeeded(), "{}", app.reason(&id).await);
    // The planner was offered the tool and read the chunk with its place and numbered lines.
    let planner = app.script.requests_for("planner");
    let tools = planner[0]["tools"].to_string();
    assert!(tools.contains("\"search_code\""), "{tools}");
    let found = tool_results(&planner[1]);
    assert!(found[0].starts_with("## billing.py:1-3  charge_customer\n"), "{}", found[0]);
    assert!(found[0].contains("     2\t    \"\"\"Takes the amount"), "{}", found[0]);
    let results = tool_results(&app.script.requests_for("task:t1")[1]);
    assert!(results[0].starts_with("## billing.py:1-3"), "{}", results[0]);
    assert_eq!(results[0].matches("## ").count(), 1, "limit 1: {}", results[0]);
    assert!(results[1].contains("query must be 1 to 500 characters"), "{}", results[1]);
    assert!(results[2].contains("limit must be 1 to 20"), "{}", results[2]);
}

/// A repository too big to list whole: the planner's view adds the files and chunks of the
/// code index most relevant to the spec (the file list alone stops at 400 files).
#[tokio::test]
async fn the_planner_of_a_big_repository_sees_what_is_relevant_to_the_spec() {
    let app = TestApp::new().await;
    std::fs::create_dir_all(app.repo.join("gen")).unwrap();
    for i in 0..450 {
        std::fs::write(app.repo.join(format!("gen/table_{i:03}.txt")), format!("row {i}\n")).unwrap();
    }
    std::fs::create_dir_all(app.repo.join("zz")).unwrap();
    std::fs::write(
        app.repo.join("zz/ledger.py"),
        "def refund_payment(order):\n    \"\"\"Gives the customer their money back.\"\"\"\n    return order.total\n",
    )
    .unwrap();
    git(&app.repo, &["add", "-A"]);
    git(&app.repo, &["commit", "--quiet", "-m", "many files"]);
    app.script.plan(json!([{"id": "t1", "title": "Greet", "description": "", "depends_on": [], "acceptance": []}])).on(
        "task:t1",
        0,
        vec![write("greeting.txt", "hello\n"), finish("ok")],
    );
    let (id, outcome) = app.run(settings(), "# Refunds\n\nRefund the payment when an order is cancelled.").await;
    assert_eq!(outcome, succeeded(), "{}", app.reason(&id).await);
    let prompt = app.script.requests_for("planner")[0]["messages"].to_string();
    assert!(prompt.contains("... and "), "the list is cut");
    assert!(!prompt.contains("zz/ledger.py\\n... and"), "ledger.py is past the cut");
    let relevant = prompt.split("## Most relevant to the spec").nth(1).expect("a relevant section");
    assert!(relevant.contains("- zz/ledger.py"), "{relevant}");
    assert!(relevant.contains("### zz/ledger.py:1-3 (refund_payment)"), "{relevant}");
}
