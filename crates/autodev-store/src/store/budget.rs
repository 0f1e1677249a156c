//! Budget reservations: a model call reserves its worst-case cost before it is made, and the
//! reservation is granted only while the run's recorded spend plus every reservation in flight
//! stays within the limit. The check and the reservation are one conditional `UPDATE` (a row
//! lock on PostgreSQL, the one writer on SQLite), so concurrent agents, processes and machines
//! cannot all pass the check and overshoot together. The call's real cost is recorded with
//! its reservation released ([`Store::record_model_call`]).
use super::{Db, Store};
use crate::Result;

/// The answer to a reservation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reservation {
    Granted,
    /// The limit would be passed: what is spent and reserved now.
    Denied {
        spent_micros: i64,
        reserved_micros: i64,
    },
}

impl Store {
    /// Reserves `micros` for a call of `run_id` if its spend plus reservations plus `micros`
    /// stays within `limit_micros`.
    pub async fn reserve_cost(&self, run_id: &str, micros: i64, limit_micros: i64) -> Result<Reservation> {
        let mut tx = self.begin().await?;
        let n = tx
            .exec(
                "UPDATE runs SET reserved_micros = reserved_micros + $1
                 WHERE id = $2 AND cost_micros + reserved_micros + $1 <= $3",
                &[micros.into(), run_id.into(), limit_micros.into()],
            )
            .await?;
        if n == 1 {
            tx.commit().await?;
            return Ok(Reservation::Granted);
        }
        let spent = tx.int("SELECT cost_micros FROM runs WHERE id = $1", &[run_id.into()]).await?;
        let reserved = tx.int("SELECT reserved_micros FROM runs WHERE id = $1", &[run_id.into()]).await?;
        tx.commit().await?;
        Ok(Reservation::Denied { spent_micros: spent, reserved_micros: reserved })
    }

    /// Gives back a reservation whose call was not made or failed.
    pub async fn release_cost(&self, run_id: &str, micros: i64) -> Result<()> {
        let mut tx = self.begin().await?;
        tx.exec(
            "UPDATE runs SET reserved_micros = CASE WHEN reserved_micros > $1 THEN reserved_micros - $1 ELSE 0 END WHERE id = $2",
            &[micros.into(), run_id.into()],
        )
        .await?;
        tx.commit().await
    }

    /// Drops every reservation of a run: when a process starts driving it, no call of it is in
    /// flight (one that was died with its process).
    pub async fn clear_reservations(&self, run_id: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        tx.exec("UPDATE runs SET reserved_micros = 0 WHERE id = $1", &[run_id.into()]).await?;
        tx.commit().await
    }

    /// The costliest runs created since `since_ms`: (short id, title, project name or "",
    /// input tokens, output tokens, cost in micro-dollars), most expensive first.
    pub async fn costs_by_run(
        &self,
        since_ms: i64,
        limit: i64,
    ) -> Result<Vec<(String, String, String, i64, i64, i64)>> {
        Ok(read!(self, |pool| {
            sqlx::query_as(
                "SELECT r.short_id, r.title, COALESCE(p.name, ''), r.input_tokens, r.output_tokens, r.cost_micros
                 FROM runs r LEFT JOIN projects p ON p.id = r.project_id
                 WHERE r.created_at >= $1 AND r.cost_micros > 0
                 ORDER BY r.cost_micros DESC, r.created_at DESC LIMIT $2",
            )
            .bind(since_ms)
            .bind(limit)
            .fetch_all(pool)
            .await?
        }))
    }
}
