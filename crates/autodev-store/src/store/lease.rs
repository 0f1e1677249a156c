//! Run leases: which driver may work on a run, and the fence that keeps a driver that lost
//! its run from writing anything more.
//!
//! A claim is a fencing token: each claim (a worker taking a queued run, `autodev run` or
//! `resume` taking its own) writes a token of its own into `runs.lease_owner` (the process's
//! `host:pid` followed by a unique part, so a process can still be told dead by its pid). The
//! driver renews the lease by that token only ([`Store::renew_lease`]), and it writes through
//! a store fenced by it ([`Store::fenced`]): every write transaction first checks, inside the
//! transaction and under the run row's lock, that the run's lease still carries the token,
//! and fails with [`StoreError::LeaseLost`] when another driver has taken the run over. So a
//! driver that fell behind (a busy machine, a paused process) can never record a model call,
//! a tool result, a state change or an event after its run has passed to another driver.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use autodev_domain::{EventKind, RunState};

use super::fence::Fence;
use super::{Store, StoreError, now_ms};
use crate::Result;
use crate::tx::event_json;

impl Store {
    /// This store, with every write transaction conditional on `run_id`'s lease still
    /// carrying `token` (see the module docs).
    pub fn fenced(&self, run_id: &str, token: &str) -> Store {
        let mut store = self.clone();
        store.fence = Some(Arc::new(Fence {
            run_id: run_id.to_string(),
            token: token.to_string(),
            lost: AtomicBool::new(false),
        }));
        store
    }

    /// Whether a write through this fenced store was refused because its claim no longer
    /// holds the run.
    pub fn fence_lost(&self) -> bool {
        self.fence.as_ref().is_some_and(|f| f.lost.load(Ordering::SeqCst))
    }

    /// Takes the run's lease for the claim `token` for `ttl`, unless another claim holds an
    /// unexpired one and `force` is false (the caller sets `force` after checking the holder
    /// is dead).
    pub async fn claim_run(&self, run_id: &str, token: &str, ttl: Duration, force: bool) -> Result<()> {
        let now = now_ms();
        let until = now + ttl.as_millis() as i64;
        let mut tx = self.begin_unfenced().await?;
        let updated = tx
            .exec(
                "UPDATE runs SET lease_owner = $1, lease_until = $2
                 WHERE id = $3 AND ($4 OR lease_owner IS NULL OR lease_owner = $1 OR lease_until < $5)",
                &[token.into(), until.into(), run_id.into(), force.into(), now.into()],
            )
            .await?;
        tx.commit().await?;
        if updated == 1 {
            return Ok(());
        }
        let run = self.get_run(run_id).await?;
        Err(StoreError::Leased { run: run_id.to_string(), owner: run.lease_owner.unwrap_or_default() })
    }

    /// Extends the lease of the claim `token` to `ttl` from now, and says the run's state in
    /// the same statement (a cancel made elsewhere is seen with the renewal). `None`: the
    /// run's lease no longer carries the token — another driver took the run over (after
    /// this one's lease expired) or it was released — and this driver must stop. A lease
    /// that expired but that nobody took is still this claim's and is renewed.
    pub async fn renew_lease(&self, run_id: &str, token: &str, ttl: Duration) -> Result<Option<RunState>> {
        let until = now_ms() + ttl.as_millis() as i64;
        let mut tx = self.begin_unfenced().await?;
        let state = tx
            .opt_text(
                "UPDATE runs SET lease_until = $1 WHERE id = $2 AND lease_owner = $3 RETURNING state",
                &[until.into(), run_id.into(), token.into()],
            )
            .await?;
        tx.commit().await?;
        Ok(state.map(|s| s.parse().unwrap_or(RunState::Failed)))
    }

    /// Gives the run's lease up, if the claim `token` still holds it.
    pub async fn release_run(&self, run_id: &str, token: &str) -> Result<()> {
        let mut tx = self.begin_unfenced().await?;
        tx.exec(
            "UPDATE runs SET lease_owner = NULL, lease_until = 0 WHERE id = $1 AND lease_owner = $2",
            &[run_id.into(), token.into()],
        )
        .await?;
        tx.commit().await?;
        // A run handed back unfinished (a stopping process) is up for grabs.
        self.ring_queue().await;
        Ok(())
    }

    /// Claims the oldest run made for a project (through the API or a webhook) that needs a
    /// worker: queued, or left unfinished by a worker whose lease expired (crashed). Runs
    /// waiting for approval are not claimed, nor runs started with `autodev run`, which their
    /// own process drives (and which Ctrl-C leaves paused, not up for grabs).
    pub async fn claim_next_run(&self, owner: &str, ttl: Duration) -> Result<Option<String>> {
        Ok(self.claim_next_runs(owner, ttl, 1).await?.into_iter().next())
    }

    /// Claims up to `limit` runs at once (see `claim_next_run`), oldest first. On PostgreSQL
    /// the candidates are locked with `FOR UPDATE SKIP LOCKED`, so concurrent workers on any
    /// number of machines never claim the same run and never wait on each other; on SQLite
    /// the one writer makes the select-and-update atomic.
    pub async fn claim_next_runs(&self, owner: &str, ttl: Duration, limit: i64) -> Result<Vec<String>> {
        let now = now_ms();
        let until = now + ttl.as_millis() as i64;
        let args = [owner.into(), until.into(), now.into(), limit.into()];
        let mut tx = self.begin_unfenced().await?;
        // The same statement on both; PostgreSQL also skips the rows other claims hold locked.
        macro_rules! claim {
            ($lock:literal) => {
                concat!(
                    "UPDATE runs SET lease_owner = $1, lease_until = $2 WHERE id IN (
                     SELECT id FROM runs
                     WHERE project_id IS NOT NULL
                       AND state NOT IN ('succeeded', 'failed', 'cancelled', 'awaiting_approval')
                       AND (lease_owner IS NULL OR lease_until < $3)
                     ORDER BY created_at, id LIMIT $4",
                    $lock,
                    ") RETURNING id"
                )
            };
        }
        let sql = if tx.is_pg() { claim!(" FOR UPDATE SKIP LOCKED") } else { claim!("") };
        let ids = tx.texts(sql, &args).await?;
        tx.commit().await?;
        Ok(ids)
    }
}

impl Store {
    /// Ends claimed runs this owner holds in one transaction: each moves to the terminal
    /// state `to` (with its event) and its lease is released. Runs another owner holds, or
    /// that already ended, are left alone. Returns how many ended now.
    pub async fn finish_claimed(&self, ids: &[String], owner: &str, to: RunState, reason: &str) -> Result<usize> {
        if !to.is_terminal() {
            return Err(StoreError::Invalid(format!("finish_claimed needs a terminal state, not {to}")));
        }
        let now = now_ms();
        let mut tx = self.begin().await?;
        if let Some(conn) = tx.pg_conn() {
            // Three round trips for the whole batch, whatever its size.
            let mut sorted = ids.to_vec();
            sorted.sort();
            let ended: Vec<(String, String)> = sqlx::query_as(
                "WITH old AS (
                     SELECT id, state FROM runs
                     WHERE id = ANY($1) AND lease_owner = $2 AND state NOT IN ('succeeded', 'failed', 'cancelled')
                     ORDER BY id FOR UPDATE)
                 UPDATE runs r SET state = $3, reason = $4, updated_at = $5, finished_at = $5, lease_owner = NULL, lease_until = 0
                 FROM old WHERE r.id = old.id RETURNING r.id, old.state",
            )
            .bind(&sorted)
            .bind(owner)
            .bind(to.as_str())
            .bind(reason)
            .bind(now)
            .fetch_all(&mut *conn)
            .await?;
            let mut run_ids = Vec::with_capacity(ended.len());
            let mut data = Vec::with_capacity(ended.len());
            for (id, from) in &ended {
                let from: RunState = from.parse().unwrap_or(RunState::Failed);
                data.push(event_json(&EventKind::StateChanged { from, to, reason: Some(reason.to_string()) })?);
                run_ids.push(id.clone());
            }
            // The same per-run order lock as every other append (see `Tx::event_raw`).
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext(x)) FROM unnest($1::text[]) AS x ORDER BY x")
                .bind(&run_ids)
                .execute(&mut *conn)
                .await?;
            sqlx::query(
                "INSERT INTO events (run_id, at_ms, kind, data)
                 SELECT t.id, $2, 'state_changed', t.data FROM unnest($1::text[], $3::text[]) AS t(id, data)",
            )
            .bind(&run_ids)
            .bind(now)
            .bind(&data)
            .execute(&mut *conn)
            .await?;
            // The milestone of each ended run, as `Tx::event` writes it for one.
            if let Some(topic) = (EventKind::StateChanged { from: RunState::Executing, to, reason: None }).topic() {
                sqlx::query(
                    "INSERT INTO outbox (id, run_id, topic, seq, next_at, created_at)
                     SELECT x || ':' || $2, x, $2, (SELECT COALESCE(MAX(seq), 0) FROM events WHERE run_id = x), $3, $3
                     FROM unnest($1::text[]) AS x
                     ON CONFLICT (id) DO NOTHING",
                )
                .bind(&run_ids)
                .bind(topic)
                .bind(now)
                .execute(&mut *conn)
                .await?;
            }
            tx.commit().await?;
            return Ok(ended.len());
        }
        let mut ended = 0;
        for id in ids {
            let select = if tx.is_pg() {
                "SELECT state FROM runs WHERE id = $1 AND lease_owner = $2 FOR UPDATE"
            } else {
                "SELECT state FROM runs WHERE id = $1 AND lease_owner = $2"
            };
            let Some(from) = tx.opt_text(select, &[id.into(), owner.into()]).await? else { continue };
            let from: RunState = from.parse().unwrap_or(RunState::Failed);
            if !from.is_terminal() {
                tx.exec(
                    "UPDATE runs SET state = $1, reason = $2, updated_at = $3, finished_at = $3, lease_owner = NULL, lease_until = 0 WHERE id = $4",
                    &[to.as_str().into(), reason.into(), now.into(), id.into()],
                )
                .await?;
                tx.event(id, EventKind::StateChanged { from, to, reason: Some(reason.to_string()) }).await?;
                ended += 1;
            }
        }
        tx.commit().await?;
        Ok(ended)
    }
}
