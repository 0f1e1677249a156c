//! In-process workers: each claims the oldest run that needs driving (with a lease the
//! engine keeps alive while it works), builds the run's model client, and drives the run.
//! On shutdown a worker stops claiming and interrupts its run between steps; the run stays
//! resumable and another worker (or this one, restarted) picks it up.

use autodev_domain::RunState;
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// Runs `count` workers until `shutdown`.
pub async fn run_workers(state: AppState, count: usize, shutdown: CancellationToken) {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..count {
        set.spawn(worker(state.clone(), shutdown.clone()));
    }
    while set.join_next().await.is_some() {}
}

async fn worker(state: AppState, shutdown: CancellationToken) {
    let ttl = autodev_engine::LeaseTiming::default().ttl;
    while !shutdown.is_cancelled() {
        // Each claim its own token: a sibling worker of this process can never mistake this
        // claim's lease for its own (see `autodev_engine::lease`).
        let token = autodev_engine::claim_token();
        let claimed = match state.store.claim_next_run(&token, ttl).await {
            Ok(claimed) => claimed,
            Err(e) => {
                tracing::error!(error = %e, "could not claim a run");
                None
            }
        };
        let Some(run_id) = claimed else {
            tokio::select! {
                _ = tokio::time::sleep(state.poll) => {}
                _ = shutdown.cancelled() => {}
            }
            continue;
        };
        drive(&state, &run_id, &token, &shutdown).await;
    }
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
