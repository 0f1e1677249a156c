//! Per-request access checks: which key is calling (with a short-lived cache) and whether
//! it is within its rate limit.
//!
//! The cache is hand-written rather than a cache crate because it is a map of a handful of
//! entries with one rule: an entry is trusted for [`KEY_TTL`], after which the key is read
//! from the database again. That bounds how long a key revoked by another process keeps
//! working (a revocation on this machine is noticed on the next request through a marker
//! file; see `Guard::marker`), and it takes the database read (tens of
//! microseconds on SQLite) off nearly every request. Each reload also records the key's
//! `last_used_at`, so that is accurate to the TTL without a write per request. Only valid
//! keys are cached, so the map cannot be grown by guessing.
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use autodev_domain::AccessRole;
use autodev_store::{KeyRow, Store, now_ms};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::auth::{self, AuthError, Pepper};

/// How long a looked-up key is trusted before it is read again.
pub const KEY_TTL: Duration = Duration::from_secs(5);

struct Cached {
    key: std::sync::Arc<KeyRow>,
    role: AccessRole,
    at: Instant,
}

pub struct Guard {
    cache: RwLock<HashMap<String, Cached>>,
    /// A file touched whenever a key is revoked on this machine (`auth::revoke`); when its
    /// modification time changes, the cache is dropped, so a revocation by the CLI takes
    /// effect on the next request, not after the TTL. One `stat` per request.
    marker: Option<std::path::PathBuf>,
    marker_seen: RwLock<Option<std::time::SystemTime>>,
    marker_checked_ms: std::sync::atomic::AtomicI64,
    limiter: Option<DefaultKeyedRateLimiter<String>>,
    per_minute: u32,
    /// Sign-in attempts per client address (see `check_sign_in`).
    sign_in: DefaultKeyedRateLimiter<std::net::IpAddr>,
    /// Event streams open per key (see `open_stream`).
    streams: Slots,
    /// Questions being answered per key (see `start_ask`).
    asks: Slots,
}

/// Event streams one key may hold open at once (each is a connection and a poll loop).
pub const STREAMS_PER_KEY: usize = 32;
/// Questions one key may have answered at once (each holds a model call).
pub const ASKS_PER_KEY: usize = 4;

/// Places per key for something held open (event streams, questions in flight).
#[derive(Default)]
struct Slots(std::sync::Arc<std::sync::Mutex<HashMap<String, usize>>>);

impl Slots {
    /// A place for one more of `key`'s, or how many it holds (the most, `max`).
    fn take(&self, key: &str, max: usize) -> Result<SlotPermit, usize> {
        let mut open = self.0.lock().map_err(|_| max)?;
        let n = open.entry(key.to_string()).or_default();
        if *n >= max {
            return Err(*n);
        }
        *n += 1;
        Ok(SlotPermit { slots: self.0.clone(), key: key.to_string() })
    }
}

/// A place a key holds (an open event stream, a question in flight); dropping it frees it.
pub struct SlotPermit {
    slots: std::sync::Arc<std::sync::Mutex<HashMap<String, usize>>>,
    key: String,
}

impl Drop for SlotPermit {
    fn drop(&mut self) {
        if let Ok(mut open) = self.slots.lock()
            && let Some(n) = open.get_mut(&self.key)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// Sign-in attempts allowed per client address and minute.
const SIGN_INS_PER_MINUTE: u32 = 20;

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard").field("per_minute", &self.per_minute).finish_non_exhaustive()
    }
}

impl Guard {
    /// `per_minute` requests per key per minute (GCRA, bursts up to the same number); 0 turns
    /// the limit off.
    ///
    /// `home` is the data directory whose revocation marker this process watches.
    pub fn new(per_minute: u32, home: Option<&std::path::Path>) -> Self {
        let limiter = NonZeroU32::new(per_minute).map(|n| RateLimiter::keyed(Quota::per_minute(n)));
        let marker = home.map(auth::revocation_marker);
        let seen = marker.as_deref().and_then(|m| std::fs::metadata(m).and_then(|md| md.modified()).ok());
        Self {
            cache: RwLock::new(HashMap::new()),
            marker,
            marker_seen: RwLock::new(seen),
            marker_checked_ms: Default::default(),
            limiter,
            per_minute,
            streams: Default::default(),
            asks: Default::default(),
            sign_in: RateLimiter::keyed(Quota::per_minute(
                NonZeroU32::new(SIGN_INS_PER_MINUTE).unwrap_or(NonZeroU32::MIN),
            )),
        }
    }

    /// A place for one more event stream of `key`, or how many it has open (the most).
    pub fn open_stream(&self, key: &str) -> Result<SlotPermit, usize> {
        self.streams.take(key, STREAMS_PER_KEY)
    }

    /// A place for one more question of `key` being answered, or how many it has in flight.
    pub fn start_ask(&self, key: &str) -> Result<SlotPermit, usize> {
        self.asks.take(key, ASKS_PER_KEY)
    }

    /// Whether a sign-in from `client` may be tried now: a burst of 20 per address, then one
    /// every 3 s, so keys cannot be guessed through the form at speed. `Err`: how long to
    /// wait. An unknown address (no socket: an in-process call) is not limited.
    pub fn check_sign_in(&self, client: Option<std::net::IpAddr>) -> Result<(), std::time::Duration> {
        let Some(ip) = client else { return Ok(()) };
        if self.sign_in.len() > 100_000 {
            self.sign_in.retain_recent();
        }
        self.sign_in.check_key(&ip).map_err(|not_until| {
            not_until.wait_time_from(governor::clock::Clock::now(&governor::clock::DefaultClock::default()))
        })
    }

    /// Drops the cache when a key was revoked on this machine since the last look.
    fn notice_revocations(&self) {
        let Some(marker) = &self.marker else { return };
        // At most one `stat` per millisecond; a revocation is seen within that.
        let now_ms = autodev_store::now_ms();
        if self.marker_checked_ms.swap(now_ms, std::sync::atomic::Ordering::Relaxed) == now_ms {
            return;
        }
        let now = std::fs::metadata(marker).and_then(|md| md.modified()).ok();
        if self.marker_seen.read().is_ok_and(|seen| *seen == now) {
            return;
        }
        if let Ok(mut cache) = self.cache.write() {
            cache.clear();
        }
        if let Ok(mut seen) = self.marker_seen.write() {
            *seen = now;
        }
    }

    /// The active key a token belongs to, with its role.
    pub async fn authenticate(
        &self,
        store: &Store,
        pepper: &Pepper,
        token: &str,
    ) -> Result<Option<(std::sync::Arc<KeyRow>, AccessRole)>, AuthError> {
        if !auth::well_formed(token) {
            return Ok(None);
        }
        self.notice_revocations();
        let hash = pepper.hash(token);
        if let Ok(cache) = self.cache.read()
            && let Some(c) = cache.get(&hash)
            && c.at.elapsed() < KEY_TTL
        {
            return Ok(Some((c.key.clone(), c.role)));
        }
        // Shared, not cloned: a cache hit on every request hands out the same row.
        let found = auth::authenticate(store, pepper, token).await?.map(|(key, role)| (std::sync::Arc::new(key), role));
        {
            let mut cache = self.cache.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            match &found {
                Some((key, role)) => {
                    cache.insert(hash, Cached { key: key.clone(), role: *role, at: Instant::now() });
                }
                None => {
                    cache.remove(&hash);
                }
            }
        }
        if let Some((key, _)) = &found
            && let Err(e) = store.touch_keys(&[(key.id.clone(), now_ms())]).await
        {
            // Best effort: a failed write does not fail the request.
            tracing::warn!(error = %e, "could not record when a key was used");
        }
        Ok(found)
    }

    /// `Err(wait)` when the key is over its limit.
    pub fn check_rate(&self, key_id: &str) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else { return Ok(()) };
        limiter
            .check_key(&key_id.to_string())
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}
