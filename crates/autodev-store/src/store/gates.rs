//! The gates' writes: a run's settings changed by an approval, and a rejected plan sent back
//! to the planner.
use autodev_domain::{Event, EventKind, RunState};

use super::{Store, StoreError};
use crate::Result;

impl Store {
    /// Replaces a run's stored settings (an approval that allows protected paths).
    pub async fn set_run_settings(&self, run_id: &str, settings: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        tx.exec("UPDATE runs SET settings = $1 WHERE id = $2", &[settings.into(), run_id.into()]).await?;
        tx.commit().await
    }

    /// Sends a run waiting at the plan gate back to planning, in one transaction: the plan
    /// and its (never started) tasks are dropped, `revision` (the reviewer's comment) and the
    /// state change recorded. Returns the events written.
    pub async fn return_to_planning(&self, run_id: &str, revision: EventKind) -> Result<Vec<Event>> {
        let mut tx = self.begin().await?;
        let from = tx.run_state_locked(run_id).await?;
        if !from.can_become(RunState::Planning) {
            return Err(StoreError::Transition { run: run_id.to_string(), from, to: RunState::Planning });
        }
        let now = super::now_ms();
        tx.exec("DELETE FROM tasks WHERE run_id = $1", &[run_id.into()]).await?;
        tx.exec(
            "UPDATE runs SET state = 'planning', plan = NULL, updated_at = $1 WHERE id = $2",
            &[now.into(), run_id.into()],
        )
        .await?;
        let a = tx.event(run_id, revision).await?;
        let b = tx.event(run_id, EventKind::StateChanged { from, to: RunState::Planning, reason: None }).await?;
        tx.commit().await?;
        Ok(vec![a, b])
    }
}
