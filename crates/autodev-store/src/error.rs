//! The store's error type.
use crate::tx::is_unique_violation;
use autodev_domain::RunState;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened, read or written. Check the data directory (disk
    /// space, permissions); a retry rarely helps.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// Migrations failed: the database is from a newer Autodev or damaged.
    #[error("could not migrate the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A run id or prefix matched nothing. Tell the user; `autodev runs list` shows ids.
    #[error("no run matches `{0}`; `autodev runs list` shows the runs")]
    RunNotFound(String),
    /// A prefix matched several runs. Ask for more characters.
    #[error("`{0}` matches several runs; give more of the id")]
    Ambiguous(String),
    /// A state change the lifecycle does not allow (the run moved on meanwhile, e.g. it was
    /// cancelled). The caller should re-read the run.
    #[error("run {run} cannot go from {from} to {to}")]
    Transition { run: String, from: RunState, to: RunState },
    /// Another live process holds the run's lease.
    #[error("run {run} is being driven by {owner}; wait for it, or cancel the run")]
    Leased { run: String, owner: String },
    /// A fenced store's claim no longer holds its run: another driver took the run over.
    /// The driver stops and writes nothing more; it is not the run's failure.
    #[error("run {run} is now driven by another worker (this driver's lease was taken over); this driver stops")]
    LeaseLost { run: String },
    /// Serialising a record failed (a bug).
    #[error("could not encode a record: {0}")]
    Encode(#[from] serde_json::Error),
    /// The writer connection failed (see `Db`).
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A record other than a run was not found. Tell the user.
    #[error("{0}")]
    NotFound(String),
    /// The record conflicts with one that exists (a name in use). Tell the user.
    #[error("{0}")]
    Conflict(String),
    /// The database's schema is older than this build and migrations were not applied
    /// (`--no-migrate`). Run `autodev migrate`.
    #[error("the database needs migrations {0:?}: run `autodev migrate` (or start without --no-migrate)")]
    Pending(Vec<i64>),
    /// A batch of run inserts could not be committed; the message says why. (An insert
    /// that fails on its own returns its own error, so `is_unique_violation` sees it.)
    #[error("{0}")]
    Batch(String),
    /// A caller asked for something the store does not do (a bug in the caller).
    #[error("{0}")]
    Invalid(String),
    /// The database URL is not one Autodev understands.
    #[error("{0}")]
    Url(String),
}

impl StoreError {
    /// Whether a unique constraint refused the write (e.g. two runs drew the same short id).
    pub fn is_unique_violation(&self) -> bool {
        is_unique_violation(self)
    }

    /// Whether the database was too busy to start a transaction: SQLite's lock held by
    /// another process, or no PostgreSQL connection free in time (worth retrying).
    pub fn is_busy(&self) -> bool {
        matches!(self, StoreError::Db(sqlx::Error::PoolTimedOut)) || self.is_locked()
    }

    /// Whether SQLite refused because another connection held a lock (worth retrying).
    pub fn is_locked(&self) -> bool {
        let text = self.to_string();
        text.contains("database is locked") || text.contains("database is busy") || text.contains("(code: 5)")
    }
}
