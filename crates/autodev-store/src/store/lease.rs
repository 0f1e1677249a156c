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

use autodev_domain::RunState;

use super::{Store, StoreError, now_ms};
use crate::Result;
use crate::tx::Tx;

/// The run and the claim a fenced store writes for.
#[derive(Debug)]
pub(crate) struct Fence {
    run_id: String,
    token: String,
    /// Set when a write found the lease gone.
    lost: AtomicBool,
}

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
        tx.commit().await
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
        let ids = if tx.is_pg() {
            tx.texts(
                "UPDATE runs SET lease_owner = $1, lease_until = $2 WHERE id IN (
                     SELECT id FROM runs
                     WHERE project_id IS NOT NULL
                       AND state NOT IN ('succeeded', 'failed', 'cancelled', 'awaiting_approval')
                       AND (lease_owner IS NULL OR lease_until < $3)
                     ORDER BY created_at, id LIMIT $4
                     FOR UPDATE SKIP LOCKED)
                 RETURNING id",
                &args,
            )
            .await?
        } else {
            tx.texts(
                "UPDATE runs SET lease_owner = $1, lease_until = $2 WHERE id IN (
                     SELECT id FROM runs
                     WHERE project_id IS NOT NULL
                       AND state NOT IN ('succeeded', 'failed', 'cancelled', 'awaiting_approval')
                       AND (lease_owner IS NULL OR lease_until < $3)
                     ORDER BY created_at, id LIMIT $4)
                 RETURNING id",
                &args,
            )
            .await?
        };
        tx.commit().await?;
        Ok(ids)
    }
}

impl Tx<'_> {
    /// Fails with [`StoreError::LeaseLost`] unless the fence's run is still leased to its
    /// claim. On PostgreSQL the run row stays locked until the transaction ends, so no claim
    /// can take the run between this check and the commit (a concurrent claim waits, or
    /// skips the row); SQLite's one writer gives the same.
    pub(crate) async fn check_fence(&mut self, fence: &Fence) -> Result<()> {
        let select = if self.is_pg() {
            "SELECT COALESCE(lease_owner, '') FROM runs WHERE id = $1 FOR UPDATE"
        } else {
            "SELECT COALESCE(lease_owner, '') FROM runs WHERE id = $1"
        };
        match self.opt_text(select, &[fence.run_id.as_str().into()]).await? {
            Some(holder) if holder == fence.token => Ok(()),
            _ => {
                fence.lost.store(true, Ordering::SeqCst);
                Err(StoreError::LeaseLost { run: fence.run_id.clone() })
            }
        }
    }
}
