//! The fence: the run and claim a fenced store writes for, checked inside each write
//! transaction (see `store::lease`).
use std::sync::atomic::{AtomicBool, Ordering};

use crate::tx::Tx;
use crate::{Result, StoreError};

/// The run and the claim a fenced store writes for.
#[derive(Debug)]
pub(crate) struct Fence {
    pub(crate) run_id: String,
    pub(crate) token: String,
    /// Set when a write found the lease gone.
    pub(crate) lost: AtomicBool,
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
