use std::time::Duration;

use autodev_domain::{EventKind, Plan, RunId, RunState, TaskState};
use autodev_store::{
    LimitKind, Limits, Migrations, ModelCallRecord, NewRun, ProjectRow, Recorded, Reservation, Store, StoreError,
    ToolStart,
};

const GRANTED: Reservation = Reservation::Granted { project_month: None, global_month: None };

fn run_limit(micros: i64) -> Limits {
    Limits { run: Some(micros), ..Limits::default() }
}

/// A store on a fresh database of the given backend, with what keeps that database alive.
pub enum Keep {
    Dir(#[allow(dead_code)] tempfile::TempDir),
    Pg(#[allow(dead_code)] autodev_testkit::pg::TestDb),
}

pub async fn store_on(backend: &str) -> (Keep, Store) {
    match backend {
        "sqlite" => {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(&dir.path().join("autodev.db")).await.unwrap();
            (Keep::Dir(dir), store)
        }
        _ => {
            let db = autodev_testkit::pg::TestDb::create().await;
            let store = Store::connect(&db.url, Migrations::Apply).await.unwrap();
            assert_eq!(store.backend(), "postgres");
            (Keep::Pg(db), store)
        }
    }
}

/// Every store test, once on SQLite and once on PostgreSQL.
macro_rules! both {
    ($(async fn $name:ident($store:ident) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;
                #[allow(unused_imports)]
                use pretty_assertions::assert_eq;
                async fn body($store: Store) $body
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    let (_keep, store) = store_on("sqlite").await;
                    body(store).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    let (_keep, store) = store_on("postgres").await;
                    body(store).await;
                }
            }
        )*
    };
}
pub(crate) use both;

pub fn new_run() -> NewRun {
    autodev_testkit::new_run("Add a flag").0
}

pub fn created() -> EventKind {
    EventKind::RunCreated {
        title: "t".into(),
        repo: "r".into(),
        base_branch: "main".into(),
        test_command: "true".into(),
    }
}

both! {
// Issue 12: four agents each checked the spend so far and then called, and a $2.00 run
// stopped at $2.146. Reservations are granted in one conditional update: 32 concurrent
// callers (on several connections) reserving $0.10 each against $2.00 get exactly 20, and
// recording a call's real cost releases its reservation.
async fn concurrent_reservations_never_pass_the_limit(store) {
    let run = new_run();
    store.insert_run(&run, created()).await.unwrap();
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let (store, id) = (store.clone(), run.id.clone());
            tokio::spawn(async move { store.reserve_cost(&id, 100_000, &run_limit(2_000_000)).await.unwrap() })
        })
        .collect();
    let mut granted = 0;
    for t in tasks {
        if matches!(t.await.unwrap(), Reservation::Granted { .. }) {
            granted += 1;
        }
    }
    assert_eq!(granted, 20);
    // A call that cost less than it reserved gives the rest back.
    let rec = ModelCallRecord {
        run_id: &run.id,
        conversation: "planner",
        turn: 0,
        provider: "openai",
        model: "gpt-4o",
        response_json: "{}",
        input_tokens: 1000,
        output_tokens: 100,
        cost_micros: 60_000,
        latency_ms: 1,
        reserved_micros: 100_000,
    };
    store.record_model_call(&rec, None).await.unwrap();
    assert_eq!(
        store.reserve_cost(&run.id, 50_000, &run_limit(2_000_000)).await.unwrap(),
        Reservation::Denied { limit: LimitKind::Run, month: None, spent_micros: 60_000, reserved_micros: 1_900_000 }
    );
    assert_eq!(store.reserve_cost(&run.id, 40_000, &run_limit(2_000_000)).await.unwrap(), GRANTED);
    store.release_cost(&run.id, 40_000).await.unwrap();
    store.clear_reservations(&run.id).await.unwrap();
    assert_eq!(store.reserve_cost(&run.id, 1_940_000, &run_limit(2_000_000)).await.unwrap(), GRANTED);
}

// Monthly budgets: a project's and the deployment's, shared by every run (and, on
// PostgreSQL, every process). 40 concurrent reservations of $0.10 from two runs of one
// project with a $2.00 project budget: exactly 20 granted; the recorded spend counts; a
// finished run's reservations do not; the deployment's budget holds across projects.
async fn monthly_budgets_hold_across_runs_of_a_project_and_globally(store) {
    let project = ProjectRow {
        id: RunId::new().to_string(),
        name: "web".into(),
        repository: "/tmp/web".into(),
        base_branch: None,
        test_command: None,
        settings: r#"{"monthly_budget_usd": 2.0}"#.into(),
        created_at: 1,
        updated_at: 1,
    };
    store.insert_project(&project).await.unwrap();
    let (a, b) = (NewRun { project_id: Some(project.id.clone()), ..new_run() }, NewRun { project_id: Some(project.id.clone()), ..new_run() });
    store.insert_run(&a, created()).await.unwrap();
    store.insert_run(&b, created()).await.unwrap();
    assert_eq!(store.project_monthly_budget(&a.id).await.unwrap(), Some(2.0));
    let month_limit = Limits { run: None, project_month: Some(2_000_000), global_month: None };
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let (store, id, limits) = (store.clone(), if i % 2 == 0 { a.id.clone() } else { b.id.clone() }, month_limit.clone());
            tokio::spawn(async move { store.reserve_cost(&id, 100_000, &limits).await.unwrap() })
        })
        .collect();
    let mut granted = 0;
    for t in tasks {
        if matches!(t.await.unwrap(), Reservation::Granted { .. }) {
            granted += 1;
        }
    }
    assert_eq!(granted, 20);
    let month = autodev_domain::month_of(autodev_store::now_ms());
    match store.reserve_cost(&a.id, 1, &month_limit).await.unwrap() {
        Reservation::Denied { limit: LimitKind::ProjectMonth, month: Some(m), spent_micros: 0, reserved_micros: 2_000_000 } => {
            assert_eq!(m, month)
        }
        other => panic!("{other:?}"),
    }
    // From here on, known reservations: a holds $0.50, b $1.00.
    store.clear_reservations(&a.id).await.unwrap();
    store.clear_reservations(&b.id).await.unwrap();
    assert!(matches!(store.reserve_cost(&a.id, 500_000, &month_limit).await.unwrap(), Reservation::Granted { .. }));
    assert!(matches!(store.reserve_cost(&b.id, 1_000_000, &month_limit).await.unwrap(), Reservation::Granted { .. }));
    // Run a records a call: its cost moves from reserved to the month's counters.
    let rec = ModelCallRecord {
        run_id: &a.id,
        conversation: "planner",
        turn: 0,
        provider: "openai",
        model: "gpt-4o",
        response_json: "{}",
        input_tokens: 1000,
        output_tokens: 100,
        cost_micros: 70_000,
        latency_ms: 1,
        reserved_micros: 100_000,
    };
    store.record_model_call(&rec, None).await.unwrap();
    let spend = store.month_spend(&month).await.unwrap();
    assert_eq!(spend, vec![("global".to_string(), 70_000), (format!("project:{}", project.id), 70_000)]);
    // $0.07 spent + $1.40 reserved: $0.53 is left, to the micro-dollar.
    assert!(matches!(store.reserve_cost(&a.id, 530_001, &month_limit).await.unwrap(), Reservation::Denied { .. }));
    assert_eq!(
        store.reserve_cost(&a.id, 530_000, &month_limit).await.unwrap(),
        Reservation::Granted { project_month: Some(2_000_000), global_month: None }
    );
    // Run b fails: its reservations (died with it) no longer count.
    store.set_run_state(&b.id, RunState::Failed, Some("boom")).await.unwrap();
    assert!(matches!(store.reserve_cost(&a.id, 900_000, &month_limit).await.unwrap(), Reservation::Granted { .. }));
    // The deployment's budget counts every project's spend and reservations: $0.07 spent and
    // $1.83 reserved by a.
    let other = new_run();
    store.insert_run(&other, created()).await.unwrap();
    let global = Limits { run: None, project_month: None, global_month: Some(2_000_000) };
    assert_eq!(
        store.reserve_cost(&other.id, 200_000, &global).await.unwrap(),
        Reservation::Denied {
            limit: LimitKind::GlobalMonth,
            month: Some(month.clone()),
            spent_micros: 70_000,
            reserved_micros: 1_830_000
        }
    );
    assert_eq!(
        store.reserve_cost(&other.id, 100_000, &global).await.unwrap(),
        Reservation::Granted { project_month: None, global_month: Some(2_000_000) }
    );
    assert!(matches!(store.reserve_cost(&other.id, 1, &global).await.unwrap(), Reservation::Denied { .. }));
}

// A run stopped by its budget is reopened in the state it failed in, its budget-stopped
// tasks running again and the tasks skipped after them pending; other failures are not.
async fn a_budget_stopped_run_reopens_where_it_stopped(store) {
    let run = new_run();
    store.insert_run(&run, created()).await.unwrap();
    let plan = Plan::from_arguments(
        r#"{"summary": "s", "tasks": [{"id": "t1", "title": "T1"}, {"id": "t2", "title": "T2", "depends_on": ["t1"]}]}"#,
    )
    .unwrap();
    store.set_run_state(&run.id, RunState::Planning, None).await.unwrap();
    store.set_plan(&run.id, &plan, EventKind::PlanAccepted { summary: "s".into(), tasks: vec![] }).await.unwrap();
    store.set_run_state(&run.id, RunState::Executing, None).await.unwrap();
    store.set_task_state(&run.id, "t1", TaskState::Ready, None, None).await.unwrap();
    store.set_task_state(&run.id, "t1", TaskState::Running, None, None).await.unwrap();
    store.set_task_state(&run.id, "t1", TaskState::Failed, Some("budget_exceeded: the run's limit"), None).await.unwrap();
    store.set_task_state(&run.id, "t2", TaskState::Skipped, Some("depends on t1"), None).await.unwrap();
    store.set_run_state(&run.id, RunState::Failed, Some("budget_exceeded: the run's limit")).await.unwrap();
    let settings = r#"{"max_cost_usd": 5.0}"#;
    let e = store.reopen_budget_run(&run.id, Some(settings)).await.unwrap().unwrap();
    assert!(matches!(e.kind, EventKind::StateChanged { from: RunState::Failed, to: RunState::Executing, .. }), "{e:?}");
    let row = store.get_run(&run.id).await.unwrap();
    assert_eq!((row.run_state(), row.reason, row.finished_at, row.settings.as_str()), (RunState::Executing, None, None, settings));
    let states: Vec<_> = store.tasks(&run.id).await.unwrap().iter().map(|t| t.task_state()).collect();
    assert_eq!(states, [TaskState::Running, TaskState::Pending]);
    // Not twice, and not a run that failed otherwise.
    assert!(store.reopen_budget_run(&run.id, None).await.unwrap().is_err());
    let other = new_run();
    store.insert_run(&other, created()).await.unwrap();
    store.set_run_state(&other.id, RunState::Failed, Some("tests failed")).await.unwrap();
    assert!(store.reopen_budget_run(&other.id, None).await.unwrap().is_err());
}

async fn run_lifecycle_is_enforced_and_recorded_as_events(store) {
    let run = new_run();
    store.insert_run(&run, created()).await.unwrap();
    store.set_run_state(&run.id, RunState::Planning, None).await.unwrap();
    let err = store.set_run_state(&run.id, RunState::Succeeded, None).await.unwrap_err();
    assert!(matches!(err, StoreError::Transition { .. }), "{err}");
    store.set_run_state(&run.id, RunState::Failed, Some("boom")).await.unwrap();
    let row = store.get_run(&run.id).await.unwrap();
    assert_eq!(row.run_state(), RunState::Failed);
    assert_eq!(row.reason.as_deref(), Some("boom"));
    assert!(row.finished_at.is_some());
    let names: Vec<_> = store.events(&run.id, 0).await.unwrap().iter().map(|e| e.kind.name()).collect();
    assert_eq!(names, ["run_created", "state_changed", "state_changed"]);
    let later = store.events(&run.id, 2).await.unwrap();
    assert_eq!(later.len(), 1);
}

async fn runs_are_found_by_id_short_id_or_prefix(store) {
    let a = new_run();
    store.insert_run(&a, created()).await.unwrap();
    assert_eq!(store.find_run(&a.id).await.unwrap().id, a.id);
    assert_eq!(store.find_run(&a.short_id).await.unwrap().id, a.id);
    assert_eq!(store.find_run(&a.short_id[..5]).await.unwrap().id, a.id);
    assert!(matches!(store.find_run("zzzz").await, Err(StoreError::RunNotFound(_))));
    let b = new_run();
    store.insert_run(&b, created()).await.unwrap();
    let listed: Vec<_> = store.list_runs(10).await.unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(listed, vec![b.id.clone(), a.id.clone()]);
}

async fn steps_are_persisted_with_usage_and_read_back_in_order(store) {
    let run = new_run();
    store.insert_run(&run, created()).await.unwrap();
    let plan = Plan::from_arguments(r#"{"summary": "s", "tasks": [{"id": "t1", "title": "T1"}]}"#).unwrap();
    store.set_plan(&run.id, &plan, EventKind::PlanAccepted { summary: "s".into(), tasks: vec![] }).await.unwrap();
    store.set_task_state(&run.id, "t1", TaskState::Running, None, None).await.unwrap();
    assert_eq!(store.put_conversation(&run.id, "task:t1", "[1]").await.unwrap(), "[1]");
    assert_eq!(store.put_conversation(&run.id, "task:t1", "[2]").await.unwrap(), "[1]");
    let rec = |turn, input, output, cost| ModelCallRecord {
        run_id: &run.id,
        conversation: "task:t1",
        turn,
        provider: "openai",
        model: "gpt-4o",
        response_json: "{}",
        input_tokens: input,
        output_tokens: output,
        cost_micros: cost,
        latency_ms: 10,
        reserved_micros: 0,
    };
    let read = ToolStart { idx: 0, call_id: "c1", name: "read_file", arguments: "{}", target: "a.rs" };
    let Recorded::New(events) = store.record_model_call(&rec(0, 100, 20, 450), Some(&read)).await.unwrap() else {
        panic!("a new turn is recorded")
    };
    assert_eq!(events.iter().map(|e| e.kind.name()).collect::<Vec<_>>(), vec!["model_call", "agent_step"]);
    assert!(events[0].seq < events[1].seq);
    store.tool_finished(&run.id, "task:t1", 0, 0, "read_file", "text", false, "ok").await.unwrap();
    store.record_model_call(&rec(1, 200, 10, 600), None).await.unwrap();
    // A turn is recorded once: a second write of the same turn (two drivers raced) leaves
    // nothing behind and hands back the first answer to go on from.
    let before = store.events(&run.id, 0).await.unwrap().len();
    let second = ModelCallRecord { response_json: r#"{"second":true}"#, ..rec(1, 1, 1, 1) };
    match store.record_model_call(&second, None).await.unwrap() {
        Recorded::Already { response_json } => assert_eq!(response_json, "{}"),
        Recorded::New(_) => panic!("the turn was recorded twice"),
    }
    assert_eq!(store.events(&run.id, 0).await.unwrap().len(), before);
    let run_cmd = ToolStart { idx: 0, call_id: "c2", name: "run", arguments: "{}", target: "cargo test" };
    store.tool_started(&run.id, "task:t1", 1, &run_cmd).await.unwrap();

    let calls = store.model_calls(&run.id, "task:t1").await.unwrap();
    assert_eq!(calls.iter().map(|c| c.turn).collect::<Vec<_>>(), vec![0, 1]);
    let tools = store.tool_calls(&run.id, "task:t1").await.unwrap();
    assert_eq!(tools.iter().map(|t| t.status.as_str()).collect::<Vec<_>>(), vec!["finished", "started"]);
    let row = store.get_run(&run.id).await.unwrap();
    assert_eq!((row.input_tokens, row.output_tokens, row.cost_micros), (300, 30, 1050));
    let tasks = store.tasks(&run.id).await.unwrap();
    assert_eq!(tasks[0].task_state(), TaskState::Running);
}

async fn a_lease_held_by_another_owner_blocks_until_forced_or_expired(store) {
    let run = new_run();
    store.insert_run(&run, created()).await.unwrap();
    store.claim_run(&run.id, "host:1", Duration::from_secs(60), false).await.unwrap();
    store.claim_run(&run.id, "host:1", Duration::from_secs(60), false).await.unwrap();
    let err = store.claim_run(&run.id, "host:2", Duration::from_secs(60), false).await.unwrap_err();
    assert!(err.to_string().contains("host:1"), "{err}");
    store.claim_run(&run.id, "host:2", Duration::from_secs(60), true).await.unwrap();
    store.release_run(&run.id, "host:2").await.unwrap();
    store.claim_run(&run.id, "host:3", Duration::from_millis(1), false).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    store.claim_run(&run.id, "host:4", Duration::from_secs(60), false).await.unwrap();
}

async fn a_driver_whose_claim_was_taken_over_writes_nothing_more(store) {
    let run = new_run();
    store.insert_run(&run, created()).await.unwrap();
    store.claim_run(&run.id, "host:1:first", Duration::from_millis(1), false).await.unwrap();
    let first = store.fenced(&run.id, "host:1:first");
    first.append_event(&run.id, EventKind::Warning { message: "while it held the run".into() }).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    // The first claim's lease expired: a second driver takes the run.
    store.claim_run(&run.id, "host:1:second", Duration::from_secs(60), false).await.unwrap();
    let before = store.events(&run.id, 0).await.unwrap();

    let rec = ModelCallRecord {
        run_id: &run.id,
        conversation: "planner",
        turn: 0,
        provider: "openai",
        model: "gpt-4o",
        response_json: "{}",
        input_tokens: 1,
        output_tokens: 1,
        cost_micros: 5,
        latency_ms: 1,
        reserved_micros: 0,
    };
    let refused = [
        first.append_event(&run.id, EventKind::Warning { message: "late".into() }).await.map(|_| ()),
        first.record_model_call(&rec, None).await.map(|_| ()),
        first.set_run_state(&run.id, RunState::Failed, Some("lost")).await.map(|_| ()),
    ];
    for r in refused {
        assert!(matches!(r, Err(StoreError::LeaseLost { .. })), "{r:?}");
    }
    assert!(first.fence_lost());
    assert_eq!(store.events(&run.id, 0).await.unwrap().len(), before.len());
    assert!(store.model_calls(&run.id, "planner").await.unwrap().is_empty());
    assert_eq!(store.get_run(&run.id).await.unwrap().run_state(), RunState::Queued);
    // Renewal is by token: the first claim's finds it gone, the second's renews.
    assert_eq!(store.renew_lease(&run.id, "host:1:first", Duration::from_secs(60)).await.unwrap(), None);
    assert_eq!(
        store.renew_lease(&run.id, "host:1:second", Duration::from_secs(60)).await.unwrap(),
        Some(RunState::Queued)
    );
    // Releasing with the old token leaves the new claim alone; its own writes go through.
    store.release_run(&run.id, "host:1:first").await.unwrap();
    assert_eq!(store.get_run(&run.id).await.unwrap().lease_owner.as_deref(), Some("host:1:second"));
    let second = store.fenced(&run.id, "host:1:second");
    assert!(matches!(second.record_model_call(&rec, None).await.unwrap(), Recorded::New(_)));
    assert!(!second.fence_lost());
}

async fn a_lease_that_expired_unclaimed_is_still_renewed_by_its_claim(store) {
    let run = new_run();
    store.insert_run(&run, created()).await.unwrap();
    store.claim_run(&run.id, "host:1:slow", Duration::from_millis(1), false).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(store.renew_lease(&run.id, "host:1:slow", Duration::from_secs(60)).await.unwrap().is_some());
    let err = store.claim_run(&run.id, "host:1:other", Duration::from_secs(60), false).await.unwrap_err();
    assert!(matches!(err, StoreError::Leased { .. }), "{err}");
    store.fenced(&run.id, "host:1:slow").append_event(&run.id, EventKind::Warning { message: "ok".into() }).await.unwrap();
}
}

/// Regression: two `autodev` processes starting at once on a new data directory raced in the
/// migrations and one failed with "database is locked".
#[tokio::test(flavor = "multi_thread")]
async fn many_openers_of_a_new_database_all_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("autodev.db");
    let opens: Vec<_> = (0..6)
        .map(|_| {
            tokio::spawn({
                let path = path.clone();
                async move { Store::open(&path).await.map(|_| ()) }
            })
        })
        .collect();
    for open in opens {
        open.await.unwrap().unwrap();
    }
}

/// A milestone a day old is not sent unasked (an integration configured later must not
/// announce every old run); an explicit retry makes it due again.
#[tokio::test]
async fn old_milestones_wait_for_an_explicit_retry() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("autodev.db");
    let store = Store::open(&path).await.unwrap();
    let run = new_run();
    store.insert_run(&run, created()).await.unwrap();
    store.set_run_state(&run.id, RunState::Planning, None).await.unwrap();
    store.set_run_state(&run.id, RunState::Failed, Some("x")).await.unwrap();
    let old = autodev_store::now_ms() - 2 * 86_400_000;
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute("UPDATE outbox SET created_at = ?1, next_at = ?1", [old])
        .unwrap();
    assert!(store.claim_outbox("me", std::time::Duration::from_secs(60), None, 10).await.unwrap().is_empty());
    assert_eq!(store.retry_outbox(&run.id).await.unwrap(), 1);
    let claimed = store.claim_outbox("me", std::time::Duration::from_secs(60), None, 10).await.unwrap();
    assert_eq!(claimed.iter().map(|r| r.topic.as_str()).collect::<Vec<_>>(), vec!["run.failed"]);
}
