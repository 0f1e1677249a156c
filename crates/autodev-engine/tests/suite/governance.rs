//! Governance (issue 12): providers failing mid-run, models that write tool calls as text,
//! protected paths, and the gates (a rejected plan revised, a delivery held for approval).
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use autodev_domain::{EventKind, ModelClient, RunState};
use autodev_engine::{Decision, Engine, Outcome, approve_plan};
use autodev_llm::{
    Candidate, FallbackClient, Guard, GuardSettings, GuardedClient, OpenAiClient, PriceTable, RetryPolicy,
    RetryingClient,
};
use pretty_assertions::assert_eq;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use super::harness::*;

/// The script, until `healthy` calls have been answered; then 503 Service Unavailable, as a
/// vendor in an outage answers.
struct FailsAfter {
    script: autodev_testkit::Script,
    healthy: usize,
    seen: AtomicUsize,
}

impl Respond for FailsAfter {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        if self.seen.fetch_add(1, Ordering::SeqCst) < self.healthy {
            return self.script.respond(request);
        }
        ResponseTemplate::new(503)
            .set_body_string(r#"{"error":{"message":"The server is overloaded","type":"server_error"}}"#)
    }
}

fn greet_script(app: &TestApp) {
    app.script
        .plan(json!([{"id": "t1", "title": "Greet", "description": "", "depends_on": [], "acceptance": []}]))
        .on("task:t1", 0, vec![call("list_files", json!({}))])
        .on("task:t1", 1, vec![write("greeting.txt", "hello\n")])
        .on("task:t1", 2, vec![call("read_file", json!({"path": "greeting.txt"}))])
        .on("task:t1", 3, vec![finish("greeting added")]);
}

/// Chaos: the primary provider goes down after the planner's call. The run completes on the
/// fallback; each switch is an event, the calls are recorded under the provider and model
/// that answered them, and the report says so.
#[tokio::test]
async fn a_run_completes_on_the_fallback_when_the_primary_fails_mid_run() {
    let mut app = TestApp::new().await;
    greet_script(&app);
    let primary = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(FailsAfter { script: app.script.clone(), healthy: 1, seen: AtomicUsize::new(0) })
        .mount(&primary)
        .await;
    let policy =
        RetryPolicy { max_retries: 1, min_delay: Duration::from_millis(5), max_delay: Duration::from_millis(10) };
    let breaker =
        GuardSettings { breaker_failures: 2, breaker_cooldown: Duration::from_secs(60), ..GuardSettings::default() };
    let client = |url: String, name: &str| -> Arc<dyn ModelClient> {
        let base = Arc::new(OpenAiClient::new(name, &url, None, false));
        let guarded = GuardedClient::new(base, Arc::new(Guard::new(name, breaker)));
        Arc::new(RetryingClient::new(Arc::new(guarded), policy))
    };
    let model = FallbackClient::new(
        client(format!("{}/v1", primary.uri()), "openai"),
        vec![Candidate {
            provider: "groq".into(),
            model: "llama-3.3-70b-versatile".into(),
            client: client(format!("{}/v1", app.server.uri()), "groq"),
        }],
    );
    app.engine = Engine::new(app.engine.store().clone(), Arc::new(model), PriceTable::default(), &app.home);
    let mut s = settings();
    s.model = "gpt-4.1-mini".into();
    s.max_cost_usd = Some(5.0);
    let (id, outcome) = app.run(s, "# Greet").await;
    assert_eq!(outcome, succeeded(), "{}", app.reason(&id).await);

    let switches: Vec<(String, String, String)> = app
        .events(&id)
        .await
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::ProviderFallback { from, to, reason, .. } => Some((from, to, reason)),
            _ => None,
        })
        .collect();
    // Every task call switched: the first after the primary's retries failed (which opened
    // its breaker), the rest at once.
    assert_eq!(switches.len(), 4, "{switches:?}");
    assert!(switches.iter().all(|(f, t, _)| f == "openai:gpt-4.1-mini" && t == "groq:llama-3.3-70b-versatile"));
    assert!(switches[0].2.contains("HTTP 503"), "{}", switches[0].2);
    assert!(switches[1].2.contains("circuit breaker is open"), "{}", switches[1].2);
    assert_eq!(primary.received_requests().await.unwrap().len(), 3);
    // Calls are recorded as served.
    let calls = app.engine.store().model_calls(&id, "task:t1").await.unwrap();
    assert!(calls.iter().all(|c| c.provider == "groq" && c.model == "llama-3.3-70b-versatile"), "{calls:?}");
    let planner = app.engine.store().model_calls(&id, "planner").await.unwrap();
    assert_eq!(planner[0].provider, "openai");
    let report = std::fs::read_to_string(app.engine.run_dir(&id).join("report.md")).unwrap();
    assert!(report.contains("## Provider fallbacks"), "{report}");
    assert!(report.contains("openai:gpt-4.1-mini → groq:llama-3.3-70b-versatile"), "{report}");
}

/// Small local models (behind Ollama or llama.cpp) often answer a tool call as JSON in their
/// text, fenced or bare, instead of a native call. In the default `auto` mode that is run as
/// the call, and its result goes back as text; JSON naming no tool is not taken for a call.
#[tokio::test]
async fn a_model_that_writes_tool_calls_as_text_is_understood_by_default() {
    let app = TestApp::new().await;
    let plan = r#"I'll plan this.
```json
{"name": "submit_plan", "arguments": {"summary": "Greet", "tasks": [{"id": "t1", "title": "Greet", "description": "", "depends_on": [], "acceptance": []}]}}
```"#;
    app.script
        .on("planner", 0, vec![text(plan)])
        .on("task:t1", 0, vec![text(r#"{"name": "write_file", "arguments": {"path": "greeting.txt", "content": "hello\n"}}"#)])
        .on("task:t1", 1, vec![text("Let me check it.\n<tool_call>\n{\"name\": \"read_file\", \"arguments\": {\"path\": \"greeting.txt\"}}\n</tool_call>")])
        .on("task:t1", 2, vec![text("```\n{\"name\": \"finish\", \"parameters\": {\"summary\": \"greeting written\"}}\n```")]);
    let s = settings();
    assert_eq!(s.tool_calls, autodev_engine::ToolCallMode::Auto);
    let (id, outcome) = app.run(s, "# Greet").await;
    assert_eq!(outcome, succeeded(), "{}", app.reason(&id).await);
    let requests = app.script.requests_for("task:t1");
    // The tools were offered natively (auto is not the text mode's prompt).
    assert!(requests[0]["tools"].as_array().is_some_and(|t| !t.is_empty()));
    let system = requests[0]["messages"][0]["content"].as_str().unwrap();
    assert!(!system.contains("# Calling tools"));
    let last = requests[1]["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["role"], "user");
    assert!(last["content"].as_str().unwrap().starts_with("Result of `write_file`:\ncreated `greeting.txt`"), "{last}");
    let last = requests[2]["messages"].as_array().unwrap().last().unwrap().clone();
    assert!(last["content"].as_str().unwrap().contains("hello"), "{last}");
    let tasks = app.engine.store().tasks(&id).await.unwrap();
    assert_eq!(tasks[0].summary.as_deref(), Some("greeting written"));
}

/// Protected paths: a file tool's write there is refused as a tool error the model reads,
/// and recorded; a command's change there is put back before the commit, and recorded; the
/// rest of the work is delivered.
#[tokio::test]
async fn writes_to_protected_paths_are_refused_and_command_changes_there_put_back() {
    let app = TestApp::new().await;
    std::fs::create_dir_all(app.repo.join(".github/workflows")).unwrap();
    std::fs::write(app.repo.join(".github/workflows/ci.yml"), "on: push\n").unwrap();
    git(&app.repo, &["add", "-A"]);
    git(&app.repo, &["commit", "--quiet", "-m", "ci"]);
    app.script
        .plan(json!([{"id": "t1", "title": "Greet", "description": "", "depends_on": [], "acceptance": []}]))
        .on("task:t1", 0, vec![write(".github/workflows/ci.yml", "on: [push, pull_request]\n")])
        .on("task:t1", 1, vec![call("edit_file", json!({"path": "./.github/workflows/ci.yml", "old_text": "push", "new_text": "pull_request"}))])
        .on("task:t1", 2, vec![call("run", json!({"command": "echo 'on: workflow_dispatch' > .github/workflows/ci.yml && mkdir -p migrations && echo x > migrations/0009.sql"}))])
        .on("task:t1", 3, vec![write("greeting.txt", "hello\n")])
        .on("task:t1", 4, vec![finish("greeting added")]);
    let mut s = settings();
    s.protected_paths = vec![".github/workflows/**".into(), "migrations".into()];
    let (id, outcome) = app.run(s, "# Greet").await;
    assert_eq!(outcome, succeeded(), "{}", app.reason(&id).await);
    let results = app.script.requests_for("task:t1");
    for turn in [1, 2] {
        let last = results[turn]["messages"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(last["role"], "tool");
        assert!(
            last["content"]
                .as_str()
                .unwrap()
                .contains("is a protected path (the project protects `.github/workflows/**`)"),
            "{last}"
        );
    }
    let protected: Vec<(String, String, String)> = app
        .events(&id)
        .await
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::ProtectedPath { path, glob, action, .. } => Some((path, glob, action)),
            _ => None,
        })
        .collect();
    assert_eq!(
        protected,
        [
            (".github/workflows/ci.yml".to_string(), ".github/workflows/**".to_string(), "refused".to_string()),
            (".github/workflows/ci.yml".into(), ".github/workflows/**".into(), "refused".into()),
            (".github/workflows/ci.yml".into(), ".github/workflows/**".into(), "reverted".into()),
            ("migrations/0009.sql".into(), "migrations".into(), "reverted".into()),
        ]
    );
    let run = app.engine.store().get_run(&id).await.unwrap();
    let changed = git(&app.repo, &["diff", "--name-only", &format!("{}..{}", run.base_commit, run.branch)]);
    assert_eq!(changed.trim(), "greeting.txt");
}

/// Approved with the path, the same write goes through.
#[tokio::test]
async fn a_run_approved_with_a_protected_path_may_change_it() {
    let app = TestApp::new().await;
    app.script
        .plan(json!([{"id": "t1", "title": "Greet", "description": "", "depends_on": [], "acceptance": []}]))
        .on("task:t1", 0, vec![write("migrations/0002_greet.sql", "-- greet\n")])
        .on("task:t1", 1, vec![write("greeting.txt", "hello\n")])
        .on("task:t1", 2, vec![finish("done")]);
    let mut s = settings();
    s.protected_paths = vec!["migrations/**".into()];
    s.approval = true;
    let (id, outcome) = app.run(s, "# Greet").await;
    assert_eq!(outcome, Outcome::AwaitingApproval);
    let decision = Decision {
        approved: true,
        by: "alice".into(),
        comment: "the migration is expected".into(),
        allow_paths: vec!["migrations/0002_*.sql".into()],
    };
    approve_plan(app.engine.store(), &id, &decision).await.unwrap();
    let outcome = app.engine.drive(&id, CancellationToken::new()).await.unwrap();
    assert_eq!(outcome, succeeded(), "{}", app.reason(&id).await);
    let run = app.engine.store().get_run(&id).await.unwrap();
    let changed = git(&app.repo, &["diff", "--name-only", &format!("{}..{}", run.base_commit, run.branch)]);
    assert_eq!(changed.trim(), "greeting.txt\nmigrations/0002_greet.sql");
}

/// A plan rejected with a comment goes back to the planner with the comment; the revised
/// plan waits for approval again; the run then goes on with it.
#[tokio::test]
async fn a_plan_rejected_with_a_comment_is_revised_by_the_planner() {
    let app = TestApp::new().await;
    greet_script(&app);
    app.script.on(
        "planner:r1",
        0,
        vec![call(
            "submit_plan",
            json!({"summary": "Greet, smaller", "tasks": [{"id": "t1", "title": "Greet", "description": "only greeting.txt", "depends_on": [], "acceptance": []}]}),
        )],
    );
    let mut s = settings();
    s.approval = true;
    let (id, outcome) = app.run(s, "# Greet").await;
    assert_eq!(outcome, Outcome::AwaitingApproval);
    let reject =
        Decision { approved: false, by: "bob".into(), comment: "Touch only greeting.txt.".into(), allow_paths: vec![] };
    approve_plan(app.engine.store(), &id, &reject).await.unwrap();
    assert_eq!(app.engine.store().run_state(&id).await.unwrap(), RunState::Planning);
    let outcome = app.engine.drive(&id, CancellationToken::new()).await.unwrap();
    assert_eq!(outcome, Outcome::AwaitingApproval);
    let revision = app.script.requests_for("planner:r1");
    let asked = revision[0]["messages"].to_string();
    assert!(
        asked.contains("A reviewer rejected the previous plan") && asked.contains("Touch only greeting.txt."),
        "{asked}"
    );
    assert!(asked.contains("- t1: Greet"), "{asked}");
    let run = app.engine.store().get_run(&id).await.unwrap();
    assert!(run.plan.unwrap().contains("Greet, smaller"));
    let approve = Decision { approved: true, by: "bob".into(), ..Decision::default() };
    approve_plan(app.engine.store(), &id, &approve).await.unwrap();
    let outcome = app.engine.drive(&id, CancellationToken::new()).await.unwrap();
    assert_eq!(outcome, succeeded(), "{}", app.reason(&id).await);
}

/// Revisions are bounded: after three, a rejection with a comment cancels the run.
#[tokio::test]
async fn plan_revisions_are_bounded() {
    let app = TestApp::new().await;
    let id = app.create(settings(), "# Greet").await;
    let store = app.engine.store();
    store.set_run_state(&id, RunState::Planning, None).await.unwrap();
    let reject = Decision { approved: false, by: "bob".into(), comment: "smaller".into(), allow_paths: vec![] };
    for _ in 0..autodev_engine::MAX_PLAN_REVISIONS {
        store.set_run_state(&id, RunState::AwaitingApproval, None).await.unwrap();
        approve_plan(store, &id, &reject).await.unwrap();
        assert_eq!(store.run_state(&id).await.unwrap(), RunState::Planning);
    }
    store.set_run_state(&id, RunState::AwaitingApproval, None).await.unwrap();
    approve_plan(store, &id, &reject).await.unwrap();
    let run = store.get_run(&id).await.unwrap();
    assert_eq!((run.run_state(), run.reason.as_deref()), (RunState::Cancelled, Some("plan rejected: smaller")));
}

/// A project that approves deliveries holds each run after its tests pass, with the patch
/// written for the reviewer, and delivers only once approved.
#[tokio::test]
async fn a_delivery_waits_for_approval_after_the_tests_pass() {
    let app = TestApp::new().await;
    greet_script(&app);
    let mut s = settings();
    s.approve_delivery = true;
    let (id, outcome) = app.run(s, "# Greet").await;
    assert_eq!(outcome, Outcome::AwaitingApproval);
    let run = app.engine.store().get_run(&id).await.unwrap();
    assert_eq!(autodev_engine::Gate::of(&run), autodev_engine::Gate::Delivery);
    assert_eq!(run.test_passed, Some(true));
    let patch = std::fs::read_to_string(app.engine.run_dir(&id).join("changes.patch")).unwrap();
    assert!(patch.contains("+hello"), "{patch}");
    assert!(!app.events(&id).await.iter().any(|e| matches!(e.kind, EventKind::Delivered { .. })));
    // Driving again does nothing while it waits (no worker is held, nothing is paid).
    let calls = app.script.requests.lock().unwrap().len();
    assert_eq!(app.engine.drive(&id, CancellationToken::new()).await.unwrap(), Outcome::AwaitingApproval);
    assert_eq!(app.script.requests.lock().unwrap().len(), calls);
    let approve = Decision { approved: true, by: "carol".into(), ..Decision::default() };
    approve_plan(app.engine.store(), &id, &approve).await.unwrap();
    assert_eq!(app.engine.store().run_state(&id).await.unwrap(), RunState::Delivering);
    let outcome = app.engine.drive(&id, CancellationToken::new()).await.unwrap();
    assert_eq!(outcome, succeeded(), "{}", app.reason(&id).await);
    assert!(app.events(&id).await.iter().any(|e| matches!(e.kind, EventKind::Delivered { .. })));
}
