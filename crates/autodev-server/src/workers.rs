//! The dispatcher: one loop per process claims runs that need driving (each with a lease of
//! its own that the engine keeps alive while it works) and drives up to `count` of them at
//! once, each in a task of its own. Between claims it waits on the store's queue signal (a run
//! made or handed back in this process; on PostgreSQL, `NOTIFY autodev_queue` from any
//! process) or, for what gives no signal (a lease that expired with its process), a poll that
//! backs off from `AppState::poll` to 2 s while the queue stays empty. So 1,000 idle slots cost
//! one query every 2 s, not 4,000 a second.
//!
//! On shutdown the dispatcher stops claiming and every run it drives is interrupted at its
//! next step boundary (a model call or command in flight is abandoned, not awaited) and
//! handed back: its lease released, so another process resumes it at once.

use std::sync::Arc;
use std::time::Duration;

use autodev_domain::RunState;
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// The longest wait between two looks at an empty queue.
const MAX_IDLE_POLL: Duration = Duration::from_secs(2);

/// Drives up to `count` runs at once until `shutdown`, then waits for them to hand their runs
/// back.
pub async fn run_workers(state: AppState, count: usize, shutdown: CancellationToken) {
    if count == 0 {
        return;
    }
    let ttl = autodev_engine::LeaseTiming::default().ttl;
    let slots = Arc::new(tokio::sync::Semaphore::new(count));
    let wake = state.store.queue_signal();
    tokio::spawn({
        let store = state.store.clone();
        let shutdown = shutdown.clone();
        async move { store.listen_queue(shutdown).await }
    });
    let mut running = tokio::task::JoinSet::new();
    let mut idle = state.poll;
    loop {
        while running.try_join_next().is_some() {}
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            _ = shutdown.cancelled() => break,
        };
        if shutdown.is_cancelled() {
            break;
        }
        // Each claim its own token: a sibling drive of this process can never mistake this
        // claim's lease for its own (see `autodev_engine::lease`).
        let token = autodev_engine::claim_token();
        match state.store.claim_next_run(&token, ttl).await {
            Ok(Some(run_id)) => {
                idle = state.poll;
                let (state, shutdown) = (state.clone(), shutdown.clone());
                running.spawn(async move {
                    drive(&state, &run_id, &token, &shutdown).await;
                    drop(slot);
                });
                continue;
            }
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "could not claim a run"),
        }
        drop(slot);
        tokio::select! {
            _ = wake.notified() => idle = state.poll,
            _ = tokio::time::sleep(idle) => idle = (idle * 2).min(MAX_IDLE_POLL),
            _ = shutdown.cancelled() => break,
        }
    }
    while running.join_next().await.is_some() {}
}

async fn drive(state: &AppState, run_id: &str, token: &str, shutdown: &CancellationToken) {
    let run = match state.store.get_run(run_id).await {
        Ok(run) => run,
        Err(e) => {
            tracing::error!(run = run_id, error = %e, "could not read a claimed run");
            let _ = state.store.release_run(run_id, token).await;
            return;
        }
    };
    let settings = match run.settings() {
        Ok(settings) => settings,
        Err(e) => return fail(state, run_id, token, &e.to_string()).await,
    };
    let model = match state.models.build(&settings) {
        Ok(model) => model,
        Err(e) => return fail(state, run_id, token, &format!("no model client: {e}")).await,
    };
    let engine = state.engine.engine(state.store.clone(), model);
    match engine.drive_claimed_run(run, settings, token, shutdown.child_token()).await {
        Ok(outcome) => tracing::info!(run = run_id, ?outcome, "worker finished driving a run"),
        Err(e) => tracing::error!(run = run_id, error = %e, "worker could not drive a run"),
    }
}

/// Fails a run this worker claimed before driving it (only while the claim holds it).
async fn fail(state: &AppState, run_id: &str, token: &str, reason: &str) {
    tracing::error!(run = run_id, reason, "run failed before it started");
    let _ = state.store.fenced(run_id, token).set_run_state(run_id, RunState::Failed, Some(reason)).await;
    let _ = state.store.release_run(run_id, token).await;
}
