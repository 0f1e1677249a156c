//! Retention (`autodev gc`): the bulky records of runs that ended long ago — their events,
//! tool results, conversations' headers and model responses — are deleted, and the run marked
//! collected. The run row, its tasks, its usage (tokens and cost per call, for `costs` and
//! budgets), its links, its deliveries and its artifacts (report, patch) stay.
use super::{Store, now_ms};
use crate::Result;
use crate::rows::RunRow;

/// What collecting a run removed (or, in a dry run, would remove).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Collected {
    pub events: i64,
    pub tool_calls: i64,
    pub model_responses: i64,
}

impl Store {
    /// Runs that ended (succeeded, failed or cancelled) before `before_ms` and are not collected
    /// yet, oldest first, at most `limit`.
    pub async fn collectable_runs(&self, before_ms: i64, limit: i64) -> Result<Vec<RunRow>> {
        self.fetch::<RunRow>(
            run_select!(
                "WHERE state IN ('succeeded', 'failed', 'cancelled') AND finished_at IS NOT NULL AND finished_at < $1
                 AND collected_at IS NULL ORDER BY finished_at, id LIMIT $2"
            ),
            &[before_ms.into(), limit.into()],
        )
        .await
    }

    /// Deletes the run's bulky records and marks it collected, in one transaction, only while
    /// it is still ended (a run resumed meanwhile is left alone: `Ok(None)`). With `dry_run`,
    /// counts what would go and changes nothing.
    pub async fn collect_run(&self, run_id: &str, dry_run: bool) -> Result<Option<Collected>> {
        let mut tx = self.begin_unfenced().await?;
        if !tx.run_state_locked(run_id).await?.is_terminal() {
            return Ok(None);
        }
        let id = [run_id.into()];
        if dry_run {
            return Ok(Some(Collected {
                events: tx.int("SELECT COUNT(*) FROM events WHERE run_id = $1", &id).await?,
                tool_calls: tx.int("SELECT COUNT(*) FROM tool_calls WHERE run_id = $1", &id).await?,
                model_responses: tx
                    .int("SELECT COUNT(*) FROM model_calls WHERE run_id = $1 AND response <> ''", &id)
                    .await?,
            }));
        }
        // The counts are what the statements removed (no separate count first).
        let count = Collected {
            events: tx.exec("DELETE FROM events WHERE run_id = $1", &id).await? as i64,
            tool_calls: tx.exec("DELETE FROM tool_calls WHERE run_id = $1", &id).await? as i64,
            model_responses: tx
                .exec("UPDATE model_calls SET response = '' WHERE run_id = $1 AND response <> ''", &id)
                .await? as i64,
        };
        tx.exec("DELETE FROM conversations WHERE run_id = $1", &id).await?;
        tx.exec("UPDATE runs SET collected_at = $1 WHERE id = $2", &[now_ms().into(), run_id.into()]).await?;
        tx.commit().await?;
        Ok(Some(count))
    }
}
