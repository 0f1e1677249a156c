//! One driver per run: a driver whose lease was taken over stops and records nothing more,
//! and the driver that took the run finishes it.
use std::collections::BTreeMap;
use std::time::Duration;

use autodev_domain::{EventKind, RunState};
use autodev_engine::{LeaseTiming, Outcome};
use pretty_assertions::assert_eq;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::harness::*;

async fn wait_for_requests(app: &TestApp, conversation: &str, n: usize) {
    for _ in 0..400 {
        if app.script.requests_for(conversation).len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the model never got {n} request(s) for {conversation}");
}

#[tokio::test]
async fn a_driver_whose_lease_expired_stops_and_the_driver_that_took_the_run_finishes_it() {
    // Each model answer takes 400 ms: the slow step during which the lease runs out.
    let app = TestApp::with_delay(Duration::from_millis(400)).await;
    app.script
        .plan(json!([{"id": "t1", "title": "Add the greeting file", "description": "create", "depends_on": [], "acceptance": ["says hello"]}]))
        .on("task:t1", 0, vec![write("greeting.txt", "hello\n")])
        .on("task:t1", 1, vec![finish("added greeting.txt")]);
    let id = app.create(settings(), "# Greet\n\nSay hello.").await;

    // The first driver's lease lasts 50 ms and is never renewed in time: a stalled driver.
    let stalled = app
        .engine
        .clone()
        .with_lease(LeaseTiming { ttl: Duration::from_millis(50), renew_every: Duration::from_secs(3600) });
    let first = {
        let id = id.clone();
        tokio::spawn(async move { stalled.drive(&id, CancellationToken::new()).await })
    };
    // It plans (its lease expired, but nobody took the run, so its writes still count) and
    // starts the task; while the task's first model call is in flight, a second driver takes
    // the run over.
    wait_for_requests(&app, "task:t1", 1).await;
    let second = app.engine.drive(&id, CancellationToken::new()).await.unwrap();
    let first = first.await.unwrap().unwrap();

    assert_eq!(first, Outcome::LeaseLost);
    assert_eq!(second, succeeded(), "{}", app.reason(&id).await);
    // Every model call is recorded once: the planner's turn by the first driver, the task's
    // two turns by the second (the first driver's answer to turn 0, paid for, was dropped).
    let store = app.engine.store();
    let mut recorded = BTreeMap::new();
    for conv in ["planner", "task:t1"] {
        recorded.insert(conv, store.model_calls(&id, conv).await.unwrap().iter().map(|c| c.turn).collect::<Vec<_>>());
    }
    assert_eq!(recorded, BTreeMap::from([("planner", vec![0]), ("task:t1", vec![0, 1])]));
    assert_eq!(app.script.requests_for("task:t1").len(), 3, "turn 0 twice (one per driver), turn 1 once");
    let events = app.events(&id).await;
    let calls = events.iter().filter(|e| matches!(e.kind, EventKind::ModelCall { .. })).count();
    assert_eq!(calls, 3, "one model_call event per recorded call");
    // One terminal event, and the run's totals count the recorded calls only.
    let terminal: Vec<RunState> = events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::StateChanged { to, .. } if to.is_terminal() => Some(to),
            _ => None,
        })
        .collect();
    assert_eq!(terminal, vec![RunState::Succeeded]);
    let run = store.get_run(&id).await.unwrap();
    assert_eq!(run.input_tokens, 3 * 1000);
    assert_eq!(run.lease_owner, None, "the finishing driver released the run");
    assert_eq!(git(&app.repo, &["show", &format!("{}:greeting.txt", run.branch)]), "hello");
}

#[tokio::test]
async fn a_driver_notices_a_lost_lease_at_its_renewal_and_stops_its_agents() {
    // The task's agent runs a long command; the lease is taken over meanwhile. The first
    // driver learns it at its next renewal, cancels the command and stops without a write.
    let app = TestApp::new().await;
    app.script
        .plan(json!([{"id": "t1", "title": "Add the greeting file", "description": "create", "depends_on": [], "acceptance": ["says hello"]}]))
        .on("task:t1", 0, vec![call("run", json!({"command": "sleep 30", "timeout_secs": 60}))])
        .on("task:t1", 1, vec![write("greeting.txt", "hello\n"), finish("added greeting.txt")]);
    let id = app.create(settings(), "# Greet\n\nSay hello.").await;
    let first_engine = app
        .engine
        .clone()
        .with_lease(LeaseTiming { ttl: Duration::from_secs(30), renew_every: Duration::from_millis(100) });
    let first = {
        let id = id.clone();
        tokio::spawn(async move { first_engine.drive(&id, CancellationToken::new()).await })
    };
    wait_for_requests(&app, "task:t1", 1).await;
    // Wait until the command runs, then take the run as a dead driver's would be taken.
    let store = app.engine.store();
    for _ in 0..400 {
        if store.tool_calls(&id, "task:t1").await.unwrap().iter().any(|t| t.status == "started") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    store.claim_run(&id, "elsewhere:1:taken", Duration::from_secs(60), true).await.unwrap();
    let started = std::time::Instant::now();
    let first =
        tokio::time::timeout(Duration::from_secs(10), first).await.expect("the first driver stops").unwrap().unwrap();
    assert_eq!(first, Outcome::LeaseLost);
    assert!(started.elapsed() < Duration::from_secs(5), "stopped in {:?}, not after the command", started.elapsed());
    // Nothing was written after the takeover: the command's result is not recorded.
    let tools = store.tool_calls(&id, "task:t1").await.unwrap();
    assert_eq!(tools.iter().map(|t| t.status.as_str()).collect::<Vec<_>>(), vec!["started"]);
    assert_eq!(store.get_run(&id).await.unwrap().lease_owner.as_deref(), Some("elsewhere:1:taken"));
    assert!(
        !app.events(&id)
            .await
            .iter()
            .any(|e| matches!(&e.kind, EventKind::StateChanged { to, .. } if to.is_terminal())),
        "the run did not end"
    );
}
