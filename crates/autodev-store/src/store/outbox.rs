//! The outbox: a run's milestones waiting to be told to integrations, and what integrations
//! made for a run (`run_links`). Rows are written by `Tx::event` in the transaction of the
//! change they announce; dispatchers claim them with a lease (as workers claim runs).
use std::time::Duration;

use super::{Db, Store, now_ms};
use crate::Result;

/// One milestone and how its delivery stands.
#[derive(Clone, Debug, sqlx::FromRow, serde::Serialize)]
pub struct OutboxRow {
    /// `<run id>:<topic>`: stable across retries.
    pub id: String,
    pub run_id: String,
    /// `run.plan_ready`, `run.awaiting_approval`, `run.succeeded`, `run.failed`,
    /// `run.cancelled`, `run.pr_opened`.
    pub topic: String,
    /// `pending`, `done` or `failed`.
    pub state: String,
    pub attempts: i64,
    pub next_at: i64,
    /// JSON: each target's last result, `{"github": {"ok": true, …}}`.
    pub results: String,
    pub created_at: i64,
}

macro_rules! outbox_select {
    ($tail:literal) => {
        concat!("SELECT id, run_id, topic, state, attempts, next_at, results, created_at FROM outbox ", $tail)
    };
}

/// How old a milestone may be and still be delivered without being asked for again.
pub const MAX_AGE_MS: i64 = 24 * 3_600_000;

impl Store {
    /// Adds a milestone outside a state change (`run.pr_opened`); once per run and topic.
    pub async fn notify(&self, run_id: &str, topic: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        let seq = tx.int("SELECT COALESCE(MAX(seq), 0) FROM events WHERE run_id = $1", &[run_id.into()]).await?;
        tx.notify(run_id, topic, now_ms(), seq).await?;
        tx.commit().await
    }

    /// Claims up to `limit` due milestones (of one run, or any) for `owner` until the lease
    /// ends, oldest first; one process at a time holds each (`FOR UPDATE SKIP LOCKED` on
    /// PostgreSQL, the one writer on SQLite).
    pub async fn claim_outbox(
        &self,
        owner: &str,
        ttl: Duration,
        run_id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<OutboxRow>> {
        let now = now_ms();
        let until = now + ttl.as_millis() as i64;
        let mut tx = self.begin().await?;
        let select = if tx.is_pg() {
            "SELECT id FROM outbox WHERE state = 'pending' AND next_at <= $1 AND lease_until < $1
               AND ($3 = '' OR run_id = $3) AND created_at >= $4
             ORDER BY next_at, seq, id LIMIT $2 FOR UPDATE SKIP LOCKED"
        } else {
            "SELECT id FROM outbox WHERE state = 'pending' AND next_at <= $1 AND lease_until < $1
               AND ($3 = '' OR run_id = $3) AND created_at >= $4
             ORDER BY next_at, seq, id LIMIT $2"
        };
        // Milestones a day old are not sent unasked: an integration configured later does not
        // announce every old run. `retry_outbox` (an explicit `deliver`) makes them new again.
        let fresh = now - MAX_AGE_MS;
        let ids = tx.texts(select, &[now.into(), limit.into(), run_id.unwrap_or("").into(), fresh.into()]).await?;
        for id in &ids {
            tx.exec(
                "UPDATE outbox SET lease_owner = $1, lease_until = $2 WHERE id = $3",
                &[owner.into(), until.into(), id.into()],
            )
            .await?;
        }
        tx.commit().await?;
        let mut rows = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(row) = self.outbox_row(&id).await? {
                rows.push(row);
            }
        }
        Ok(rows)
    }

    pub async fn outbox_row(&self, id: &str) -> Result<Option<OutboxRow>> {
        Ok(read!(self, |pool| sqlx::query_as(outbox_select!("WHERE id = $1")).bind(id).fetch_optional(pool).await?))
    }

    /// A run's milestones, oldest first.
    pub async fn outbox_for_run(&self, run_id: &str) -> Result<Vec<OutboxRow>> {
        Ok(read!(self, |pool| {
            sqlx::query_as(outbox_select!("WHERE run_id = $1 ORDER BY seq, id")).bind(run_id).fetch_all(pool).await?
        }))
    }

    /// Records an attempt at a claimed milestone and releases it: `state` is `done`,
    /// `failed`, or `pending` again from `next_at`.
    pub async fn finish_outbox(
        &self,
        id: &str,
        owner: &str,
        state: &str,
        attempts: i64,
        next_at: i64,
        results: &str,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        tx.exec(
            "UPDATE outbox SET state = $1, attempts = $2, next_at = $3, results = $4, lease_owner = NULL, lease_until = 0
             WHERE id = $5 AND (lease_owner = $6 OR lease_owner IS NULL)",
            &[state.into(), attempts.into(), next_at.into(), results.into(), id.into(), owner.into()],
        )
        .await?;
        tx.commit().await
    }

    /// Makes a run's undelivered milestones due now, with fresh attempts (targets that
    /// already succeeded are skipped by the dispatcher). Returns how many.
    pub async fn retry_outbox(&self, run_id: &str) -> Result<u64> {
        let mut tx = self.begin().await?;
        let n = tx
            .exec(
                "UPDATE outbox SET state = 'pending', attempts = 0, next_at = $1, created_at = $1, lease_owner = NULL, lease_until = 0
                 WHERE run_id = $2 AND state <> 'done'",
                &[now_ms().into(), run_id.into()],
            )
            .await?;
        tx.commit().await?;
        Ok(n)
    }

    /// Remembers what an integration made for a run (`github.pull_request` → its URL).
    pub async fn set_run_link(&self, run_id: &str, name: &str, value: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        tx.exec(
            "INSERT INTO run_links (run_id, name, value) VALUES ($1, $2, $3)
             ON CONFLICT (run_id, name) DO UPDATE SET value = excluded.value",
            &[run_id.into(), name.into(), value.into()],
        )
        .await?;
        tx.commit().await
    }

    /// What integrations made for a run, by name.
    pub async fn run_links(&self, run_id: &str) -> Result<Vec<(String, String)>> {
        Ok(read!(self, |pool| {
            sqlx::query_as("SELECT name, value FROM run_links WHERE run_id = $1 ORDER BY name")
                .bind(run_id)
                .fetch_all(pool)
                .await?
        }))
    }

    /// The runs an integration made this for (`github.pull_request` → its URL), oldest first:
    /// the first opened the pull request, the rest are its follow-ups.
    pub async fn runs_for_link(&self, name: &str, value: &str) -> Result<Vec<String>> {
        Ok(read!(self, |pool| {
            sqlx::query_scalar(
                "SELECT l.run_id FROM run_links l JOIN runs r ON r.id = l.run_id
                 WHERE l.name = $1 AND l.value = $2 ORDER BY r.created_at, r.id",
            )
            .bind(name)
            .bind(value)
            .fetch_all(pool)
            .await?
        }))
    }
}
