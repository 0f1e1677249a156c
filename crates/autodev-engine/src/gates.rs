//! The gates a run may wait at (its plan, its delivery) and the decisions on them; cancelling.
use autodev_domain::{Event, EventKind, RunState};
use autodev_store::{RunRow, Store, StoreError};

use crate::error::{EngineError, Result};

/// Rejected plans that go back to the planner with the reviewer's comment before a rejection
/// cancels the run.
pub const MAX_PLAN_REVISIONS: u32 = 3;

/// A person's decision at a run's gate.
#[derive(Clone, Debug, Default)]
pub struct Decision {
    pub approved: bool,
    pub by: String,
    pub comment: String,
    /// Protected globs the run may change from now on (approval only).
    pub allow_paths: Vec<String>,
}

/// Which gate a run waits at: its plan (before executing), or its delivery (tests passed,
/// before pushing and opening a pull request).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    Plan,
    Delivery,
}

impl Gate {
    /// The gate of a run at `awaiting_approval`: its tests have run only at the delivery gate.
    pub fn of(run: &RunRow) -> Gate {
        if run.test_passed.is_some() { Gate::Delivery } else { Gate::Plan }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Gate::Plan => "plan",
            Gate::Delivery => "delivery",
        }
    }
}

/// Decides a run waiting at its gate. Approval goes on (to `executing` after the plan gate,
/// to `delivering` after the delivery gate), with any protected globs it allows stored with
/// the run. Rejection of a plan with a comment sends it back to the planner with the comment
/// (up to [`MAX_PLAN_REVISIONS`] times); any other rejection cancels the run with the comment
/// as the reason. Returns the events written. The CLI and the API both decide here.
pub async fn approve_plan(store: &Store, run_id: &str, decision: &Decision) -> Result<Vec<Event>> {
    let run = store.get_run(run_id).await?;
    let state = run.run_state();
    if state != RunState::AwaitingApproval {
        return Err(EngineError::Invalid(format!("run {} is {state}, not awaiting_approval", run.short_id)));
    }
    let gate = Gate::of(&run);
    let mut events = Vec::new();
    let comment = decision.comment.trim();
    if decision.approved {
        if !decision.allow_paths.is_empty() {
            for glob in &decision.allow_paths {
                autodev_workspace::protect::check_glob(glob)
                    .map_err(|e| EngineError::Invalid(format!("allow_paths: `{glob}`: {e}")))?;
            }
            let mut settings = run.settings().map_err(|e| EngineError::Failed(e.to_string()))?;
            for glob in &decision.allow_paths {
                if !settings.allowed_paths.contains(glob) {
                    settings.allowed_paths.push(glob.clone());
                }
            }
            let json = serde_json::to_string(&settings).map_err(StoreError::from)?;
            store.set_run_settings(run_id, &json).await?;
        }
        let approved = EventKind::PlanApproved {
            by: decision.by.clone(),
            comment: comment.to_string(),
            allow_paths: decision.allow_paths.clone(),
        };
        events.push(store.append_event(run_id, approved).await?);
        let next = match gate {
            Gate::Plan => RunState::Executing,
            Gate::Delivery => RunState::Delivering,
        };
        events.extend(store.set_run_state(run_id, next, None).await?);
        return Ok(events);
    }
    if gate == Gate::Plan && !comment.is_empty() {
        let round = store
            .events(run_id, 0)
            .await?
            .iter()
            .filter(|e| matches!(e.kind, EventKind::PlanRevisionRequested { .. }))
            .count() as u32
            + 1;
        if round <= MAX_PLAN_REVISIONS {
            let revision =
                EventKind::PlanRevisionRequested { by: decision.by.clone(), comment: comment.to_string(), round };
            return Ok(store.return_to_planning(run_id, revision).await?);
        }
    }
    let what = match gate {
        Gate::Plan => "plan rejected",
        Gate::Delivery => "delivery rejected",
    };
    let reason = if comment.is_empty() { what.to_string() } else { format!("{what}: {comment}") };
    events.extend(store.set_run_state(run_id, RunState::Cancelled, Some(&reason)).await?);
    Ok(events)
}

/// Cancels a run on behalf of `by` (the reason says who). `None` when the run had already
/// finished. Whichever process drives the run notices within a second and stops between
/// steps. The CLI, the API and the engine all cancel through here.
pub async fn cancel_run(store: &Store, run_id: &str, by: &str) -> Result<Option<Event>> {
    if store.run_state(run_id).await?.is_terminal() {
        return Ok(None);
    }
    Ok(store.set_run_state(run_id, RunState::Cancelled, Some(&format!("cancelled by {by}"))).await?)
}
