//! One driver per run: claim tokens, the lease keeper, and telling a dead holder.
//!
//! Each claim of a run gets its own token (`host:pid:` and a unique part), written into the
//! run's lease. The driver works through a store fenced by that token (see
//! `autodev_store`'s `store::lease`), so once another driver has taken the run over, the
//! first can record nothing more. The [`keeper`] is the driver's heartbeat: its own task,
//! started the moment the run is claimed (before the checkout, the index or any agent
//! work), renewing the lease by token every [`LeaseTiming::renew_every`], well inside
//! [`LeaseTiming::ttl`], and noticing a cancel made elsewhere. When the renewal finds the
//! token gone, or a fenced write was refused, it cancels the driver: the agents stop at
//! their next step, their commands and sandboxes are cancelled, and the run is left to the
//! driver that holds it.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use autodev_domain::{EventKind, RunState};
use autodev_store::Store;
use tokio_util::sync::CancellationToken;

use crate::Engine;

/// How long a claim holds a run without renewal, and how often the driver renews it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseTiming {
    /// A run whose lease is this old without a renewal is up for another worker (a crashed
    /// or stalled driver). Long enough that a busy machine's late renewal does not lose it.
    pub ttl: Duration,
    /// How often the keeper renews (many times per `ttl`).
    pub renew_every: Duration,
}

impl Default for LeaseTiming {
    /// A 30 s lease renewed every 3 s: ten renewals may fail or come late before another
    /// worker can take the run; a crashed worker's runs are taken up 30 s after it died
    /// (at once on the same host, where a dead process is told by its pid).
    fn default() -> Self {
        Self { ttl: Duration::from_secs(30), renew_every: Duration::from_secs(3) }
    }
}

/// The lease owner prefix of this process: `host:pid`.
pub fn process_owner() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "localhost".into());
    format!("{}:{}", host.trim(), std::process::id())
}

/// A new claim token of this process: `host:pid:` and a unique part, so that two workers of
/// one process (or a process reusing a dead one's pid, as PID 1 in a container does) never
/// share a token.
pub fn claim_token() -> String {
    format!("{}:{}", process_owner(), uuid::Uuid::now_v7().simple())
}

/// Whether a lease `owner` (`host:pid` or `host:pid:claim`) names a process of this host
/// that no longer exists.
pub(crate) fn holder_is_dead(owner: &str) -> bool {
    let mut parts = owner.splitn(3, ':');
    let (Some(host), Some(pid)) = (parts.next(), parts.next()) else { return false };
    let me = process_owner();
    if me.split(':').next() != Some(host) {
        return false;
    }
    let Ok(pid) = pid.parse::<i32>() else { return false };
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks whether the process exists.
    let alive =
        unsafe { libc::kill(pid, 0) } == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    !alive
}

/// How often the keeper looks for a cancel made elsewhere (`autodev cancel`, the API).
const CANCEL_POLL: Duration = Duration::from_millis(500);

/// What the keeper tells the driver.
#[derive(Default)]
pub(crate) struct LeaseState {
    /// Another driver took the run over: stop, write nothing, do not fail the run.
    pub lost: AtomicBool,
}

/// Keeps the claim `token` on `run_id` alive until dropped (the returned guard aborts it).
/// `stop` is cancelled when the run is cancelled elsewhere or the lease is lost (then
/// `state.lost` is set first). `fenced` is the driver's fenced store, whose refused writes
/// also count as a lost lease.
pub(crate) fn keeper(
    engine: &Engine,
    fenced: Store,
    run_id: &str,
    token: &str,
    stop: CancellationToken,
    state: Arc<LeaseState>,
) -> KeeperGuard {
    let timing = engine.lease;
    let store = engine.store.clone();
    let (engine, run_id, token) = (engine.clone(), run_id.to_string(), token.to_string());
    let handle = tokio::spawn(async move {
        let mut tick = tokio::time::interval(CANCEL_POLL.min(timing.renew_every));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut renewed = Instant::now();
        loop {
            tick.tick().await;
            if fenced.fence_lost() {
                lose(&state, &stop, &run_id, "a write was refused");
                break;
            }
            if renewed.elapsed() >= timing.renew_every {
                let since = renewed.elapsed();
                match store.renew_lease(&run_id, &token, timing.ttl).await {
                    Ok(Some(run_state)) => {
                        renewed = Instant::now();
                        if since > timing.ttl / 2 {
                            late(&engine, &fenced, &run_id, since, timing).await;
                        }
                        if run_state == RunState::Cancelled {
                            stop.cancel();
                            break;
                        }
                        continue;
                    }
                    Ok(None) => {
                        lose(&state, &stop, &run_id, "the lease was taken over");
                        break;
                    }
                    // The next tick tries again; the lease has time left.
                    Err(e) => tracing::warn!(run = %run_id, error = %e, "could not renew the run's lease"),
                }
            }
            if matches!(store.run_state(&run_id).await, Ok(RunState::Cancelled)) {
                stop.cancel();
                break;
            }
        }
    });
    KeeperGuard(handle)
}

fn lose(state: &LeaseState, stop: &CancellationToken, run_id: &str, why: &str) {
    state.lost.store(true, Ordering::SeqCst);
    metrics::counter!("autodev_leases_lost_total").increment(1);
    tracing::warn!(run = run_id, why, "another worker took this run over; this driver stops");
    stop.cancel();
}

/// A renewal that came after half the lease had passed: the machine is too busy for the
/// lease (or the driver was paused). Counted, logged, and recorded on the run.
async fn late(engine: &Engine, fenced: &Store, run_id: &str, since: Duration, timing: LeaseTiming) {
    metrics::counter!("autodev_lease_renewals_late_total").increment(1);
    let message = format!(
        "the run's lease was renewed {:.1} s after the previous renewal (lease {} s, renewed every {} s): the machine is busy",
        since.as_secs_f64(),
        timing.ttl.as_secs_f64(),
        timing.renew_every.as_secs_f64()
    );
    tracing::warn!(run = run_id, "{message}");
    if let Ok(e) = fenced.append_event(run_id, EventKind::Warning { message }).await {
        engine.publish(e);
    }
}

/// Stops the keeper when the driving ends.
pub(crate) struct KeeperGuard(tokio::task::JoinHandle<()>);

impl Drop for KeeperGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}
