//! The store on SQLite or PostgreSQL.
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use autodev_domain::{Event, EventKind, RunState, TaskState};
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

use crate::Result;
use crate::rows::{EventRow, RunRef, TextRow};
use crate::rows::{
    KeyRow, ModelCallRecord, NewRun, ProjectRow, Recorded, RunRow, StoredModelCall, StoredToolCall, TaskRow, ToolStart,
};
use crate::tx::{Arg, Readers, Record, Tx, event_json, is_unique_violation, pg_fetch};

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

/// A request to record in the audit log (who, what, when: the time is the write's).
#[derive(Clone, Debug)]
pub struct AuditEntry {
    pub key_id: Option<String>,
    pub key_name: Option<String>,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub detail: Option<String>,
}

impl AuditEntry {
    pub fn new(key: Option<&KeyRow>, method: &str, path: &str, status: u16, detail: Option<&str>) -> Self {
        Self {
            key_id: key.map(|k| k.id.clone()),
            key_name: key.map(|k| k.name.clone()),
            method: method.to_string(),
            path: path.to_string(),
            status,
            detail: detail.map(str::to_string),
        }
    }
}

pub(crate) struct PendingInsert {
    run: NewRun,
    created: EventKind,
    audit: Option<AuditEntry>,
    reply: tokio::sync::oneshot::Sender<Result<Event>>,
}

/// Counts read at scrape time by `/metrics`.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub runs_by_state: Vec<(String, i64)>,
    /// API-made runs waiting for a worker.
    pub queue_depth: i64,
    pub oldest_queued_ms: Option<i64>,
    pub running_tasks: i64,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static PG_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Whether opening the store applies pending migrations or only checks there are none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Migrations {
    Apply,
    /// Refuse to open a database that needs migrations (`serve --no-migrate`).
    Check,
}

#[derive(Clone)]
enum Db {
    Sqlite {
        pool: SqlitePool,
        /// The one connection that writes (see `crate::tx`).
        writer: Arc<tokio::sync::Mutex<rusqlite::Connection>>,
        /// Connections for the frequent reads (see `crate::tx::Readers`).
        readers: Arc<Readers>,
    },
    Pg(PgPool),
}

#[derive(Clone)]
pub struct Store {
    db: Db,
    /// Run inserts waiting to be committed together (see `Store::insert_run_audited`).
    inserts: Arc<std::sync::Mutex<Vec<PendingInsert>>>,
    /// Set on a driver's store: every write is conditional on its lease (see `store::lease`).
    fence: Option<Arc<lease::Fence>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("backend", &self.backend()).finish_non_exhaustive()
    }
}

/// Runs the same read on whichever pool the store has: the query text and row types are
/// shared, only the executor differs.
macro_rules! read {
    ($self:expr, |$pool:ident| $body:expr) => {
        match &$self.db {
            Db::Sqlite { pool: $pool, .. } => $body,
            Db::Pg($pool) => $body,
        }
    };
}

/// A `SELECT` of every run column (in `RunRow::from_lite`'s order) with a literal tail.
macro_rules! run_select {
    ($tail:literal) => {
        concat!(
            "SELECT id, short_id, title, spec, repo, base_branch, base_commit, branch, state, reason, settings, plan, repair_round, test_passed, input_tokens, output_tokens, cost_micros, lease_owner, lease_until, created_at, updated_at, finished_at, project_id, origin, evidence FROM runs ",
            $tail
        )
    };
}

/// The same columns for a list page, without the large ones (spec, settings, plan), which a
/// page does not show: they come back empty.
macro_rules! run_list_select {
    ($tail:literal) => {
        concat!(
            "SELECT id, short_id, title, '' AS spec, repo, base_branch, base_commit, branch, state, reason, '{}' AS settings, NULL AS plan, repair_round, test_passed, input_tokens, output_tokens, cost_micros, lease_owner, lease_until, created_at, updated_at, finished_at, project_id, origin, evidence FROM runs ",
            $tail
        )
    };
}

fn io_err(e: std::io::Error) -> StoreError {
    StoreError::Db(sqlx::Error::Io(e))
}

/// A `SELECT` of every key column (in `KeyRow::from_lite`'s order) with a literal tail.
macro_rules! key_select {
    ($tail:literal) => {
        concat!(
            "SELECT id, name, role, prefix, hash, created_at, last_used_at, revoked_at, projects FROM api_keys ",
            $tail
        )
    };
}

/// A `SELECT` of every project column (in `ProjectRow::from_lite`'s order) with a literal tail.
macro_rules! project_select {
    ($tail:literal) => {
        concat!(
            "SELECT id, name, repository, base_branch, test_command, settings, created_at, updated_at FROM projects ",
            $tail
        )
    };
}

/// A page of runs (see `Store::list_runs_page`); arguments from `page_args`.
const RUNS_PAGE_SQL: &str = run_list_select!(
    "WHERE (CAST($1 AS TEXT) IS NULL OR state = $1) AND (CAST($6 AS TEXT) IS NULL OR project_id = $6)
       AND (CAST($7 AS TEXT) IS NULL OR (',' || $7 || ',') LIKE ('%,' || project_id || ',%'))
       AND (NOT $2 OR created_at < $3 OR (created_at = $3 AND id < $4))
     ORDER BY created_at DESC, id DESC LIMIT $5"
);

/// The arguments of `RUNS_PAGE_SQL`; a cursor at `i64::MAX` means the first page.
fn page_args<'a>(
    project_id: Option<&'a str>,
    scope: Option<&'a str>,
    state: Option<RunState>,
    limit: i64,
    cursor: &'a (i64, String),
) -> [Arg<'a>; 7] {
    [
        state.map(RunState::as_str).into(),
        (cursor.0 != i64::MAX).into(),
        cursor.0.into(),
        cursor.1.as_str().into(),
        limit.into(),
        project_id.into(),
        scope.into(),
    ]
}

/// The terminal states, as SQL (a queue query leaves them out).
const TERMINAL_SQL: &str = "('succeeded', 'failed', 'cancelled')";

impl Store {
    /// Opens (creating if needed) the SQLite database file and applies migrations. Several
    /// processes opening a new database at once race in the migrations, and SQLite answers
    /// "database is locked" at once rather than waiting; that is retried for a few seconds.
    pub async fn open(path: &Path) -> Result<Self> {
        Self::open_sqlite(path, Migrations::Apply).await
    }

    /// Opens the database a URL names: `postgres://…` (or `postgresql://…`), or
    /// `sqlite://PATH` / a plain path for SQLite.
    pub async fn connect(url: &str, migrations: Migrations) -> Result<Self> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Self::open_postgres(url, migrations).await
        } else if let Some(path) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
            Self::open_sqlite(Path::new(path), migrations).await
        } else if url.contains("://") {
            Err(StoreError::Url(format!(
                "database URL `{}` is neither postgres:// nor sqlite://",
                url.split("://").next().unwrap_or_default()
            )))
        } else {
            Self::open_sqlite(Path::new(url), migrations).await
        }
    }

    pub async fn open_sqlite(path: &Path, migrations: Migrations) -> Result<Self> {
        crate::tx::tune_sqlite_once();
        use backon::{ExponentialBuilder, Retryable};
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(20))
            .with_max_delay(Duration::from_millis(500))
            .with_max_times(20)
            .with_jitter();
        (|| Self::open_sqlite_once(path, migrations)).retry(backoff).when(StoreError::is_locked).await
    }

    async fn open_sqlite_once(path: &Path, migrations: Migrations) -> Result<Self> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io_err)?;
        }
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new().max_connections(4).min_connections(1).connect_with(options).await?;
        let db = Db::Sqlite {
            pool: pool.clone(),
            writer: Arc::new(tokio::sync::Mutex::new(Self::writer(path)?)),
            readers: Arc::new(Readers::new(path)),
        };
        let store = Self { db, inserts: Arc::default(), fence: None };
        match migrations {
            Migrations::Apply => {
                // sqlx's SQLite migrator takes no lock: two processes starting on a new
                // database would both apply migration 1. An OS file lock beside the database
                // serialises them.
                let lock_path = path.with_extension("migrate.lock");
                let lock = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&lock_path)
                    .map_err(io_err)?;
                let lock = tokio::task::spawn_blocking(move || lock.lock().map(|()| lock))
                    .await
                    .map_err(|e| io_err(std::io::Error::other(e)))?
                    .map_err(io_err)?;
                let migrated = SQLITE_MIGRATOR.run(&pool).await;
                drop(lock);
                migrated?;
            }
            Migrations::Check => store.check_migrations().await?,
        }
        Ok(store)
    }

    fn writer(path: &Path) -> Result<rusqlite::Connection> {
        let conn = rusqlite::Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // Cached statements stay compiled whatever is bound (see `tx::Readers::open`).
        conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
        conn.set_prepared_statement_cache_capacity(64);
        Ok(conn)
    }

    /// Connects to PostgreSQL. sqlx's PostgreSQL migrator takes an advisory lock, so many
    /// processes may start at once.
    pub async fn open_postgres(url: &str, migrations: Migrations) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        let store = Self { db: Db::Pg(pool.clone()), inserts: Arc::default(), fence: None };
        match migrations {
            Migrations::Apply => PG_MIGRATOR.run(&pool).await?,
            Migrations::Check => store.check_migrations().await?,
        }
        Ok(store)
    }

    /// Applies pending migrations; returns the versions applied.
    pub async fn migrate(&self) -> Result<Vec<i64>> {
        let pending = self.pending_migrations().await?;
        match &self.db {
            Db::Sqlite { pool, .. } => SQLITE_MIGRATOR.run(pool).await?,
            Db::Pg(pool) => PG_MIGRATOR.run(pool).await?,
        }
        Ok(pending)
    }

    /// Versions this build has that the database has not applied.
    pub async fn pending_migrations(&self) -> Result<Vec<i64>> {
        let migrator = match &self.db {
            Db::Sqlite { .. } => &SQLITE_MIGRATOR,
            Db::Pg(_) => &PG_MIGRATOR,
        };
        // Before the first migration the bookkeeping table does not exist.
        let applied: Vec<i64> = read!(self, |pool| {
            match sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success").fetch_all(pool).await {
                Ok(v) => v,
                Err(sqlx::Error::Database(_)) => Vec::new(),
                Err(e) => return Err(e.into()),
            }
        });
        Ok(migrator.iter().map(|m| m.version).filter(|v| !applied.contains(v)).collect())
    }

    async fn check_migrations(&self) -> Result<()> {
        let pending = self.pending_migrations().await?;
        if pending.is_empty() { Ok(()) } else { Err(StoreError::Pending(pending)) }
    }

    /// `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        match self.db {
            Db::Sqlite { .. } => "sqlite",
            Db::Pg(_) => "postgres",
        }
    }

    /// A cheap round trip, for readiness checks.
    pub async fn ping(&self) -> Result<()> {
        let _: i32 = read!(self, |pool| sqlx::query_scalar("SELECT 1").fetch_one(pool).await?);
        Ok(())
    }

    /// Starts a write transaction (see `crate::tx` for how each backend does it); on a fenced
    /// store, only while the driver's claim still holds its run (see `store::lease`).
    async fn begin(&self) -> Result<Tx<'_>> {
        let mut tx = self.begin_unfenced().await?;
        if let Some(fence) = &self.fence {
            tx.check_fence(fence).await?;
        }
        Ok(tx)
    }

    /// Starts a write transaction whatever the fence. A busy database (another process
    /// holding SQLite's write lock past the busy timeout, every PostgreSQL connection in use
    /// past the pool's wait) is retried with backoff rather than failing the caller's run.
    async fn begin_unfenced(&self) -> Result<Tx<'_>> {
        use backon::{ExponentialBuilder, Retryable};
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(20))
            .with_max_delay(Duration::from_secs(1))
            .with_max_times(8)
            .with_jitter();
        (|| async {
            match &self.db {
                Db::Sqlite { writer, .. } => Tx::lite(writer.lock().await),
                Db::Pg(pool) => Tx::pg(pool).await,
            }
        })
        .retry(backoff)
        .when(StoreError::is_busy)
        .notify(|e, wait| tracing::warn!(error = %e, ?wait, "database busy; retrying"))
        .await
    }

    /// Rows of a frequent read: rusqlite in the calling thread on SQLite, sqlx on PostgreSQL.
    async fn fetch<T: Record>(&self, sql: &'static str, args: &[Arg<'_>]) -> Result<Vec<T>> {
        match &self.db {
            Db::Sqlite { readers, .. } => readers.fetch(sql, args),
            Db::Pg(pool) => pg_fetch(pool, sql, args).await,
        }
    }

    /// Appends one event on its own.
    pub async fn append_event(&self, run_id: &str, kind: EventKind) -> Result<Event> {
        let mut tx = self.begin().await?;
        let e = tx.event(run_id, kind).await?;
        tx.commit().await?;
        Ok(e)
    }

    /// Events of a run after `after_seq`, oldest first.
    pub async fn events(&self, run_id: &str, after_seq: i64) -> Result<Vec<Event>> {
        let rows: Vec<EventRow> = self
            .fetch(
                "SELECT seq, at_ms, kind, data FROM events WHERE run_id = $1 AND seq > $2 ORDER BY seq",
                &[run_id.into(), after_seq.into()],
            )
            .await?;
        Self::decode_events(run_id, rows)
    }

    /// At most `limit` events of a run after `after_seq`, oldest first: what a follower reads
    /// at a time (a run with a long history is sent in pages, not loaded whole).
    pub async fn events_page(&self, run_id: &str, after_seq: i64, limit: i64) -> Result<Vec<Event>> {
        let rows: Vec<EventRow> = self
            .fetch(
                "SELECT seq, at_ms, kind, data FROM events WHERE run_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                &[run_id.into(), after_seq.into(), limit.into()],
            )
            .await?;
        Self::decode_events(run_id, rows)
    }

    /// The last `limit` events of a run, oldest first (a run's page shows its recent steps).
    pub async fn events_tail(&self, run_id: &str, limit: i64) -> Result<Vec<Event>> {
        let mut rows: Vec<EventRow> = self
            .fetch(
                "SELECT seq, at_ms, kind, data FROM events WHERE run_id = $1 ORDER BY seq DESC LIMIT $2",
                &[run_id.into(), limit.into()],
            )
            .await?;
        rows.reverse();
        Self::decode_events(run_id, rows)
    }

    /// A run's events of one kind (`test_run`), oldest first.
    pub async fn events_of_kind(&self, run_id: &str, kind: &str) -> Result<Vec<Event>> {
        let rows: Vec<EventRow> = self
            .fetch(
                "SELECT seq, at_ms, kind, data FROM events WHERE run_id = $1 AND kind = $2 ORDER BY seq",
                &[run_id.into(), kind.into()],
            )
            .await?;
        Self::decode_events(run_id, rows)
    }

    fn decode_events(run_id: &str, rows: Vec<EventRow>) -> Result<Vec<Event>> {
        let mut out = Vec::with_capacity(rows.len());
        for EventRow { seq, at_ms, kind, data } in rows {
            let mut v: serde_json::Value = serde_json::from_str(&data)?;
            if let Some(obj) = v.as_object_mut() {
                obj.insert("type".into(), serde_json::Value::String(kind));
            }
            // An event written by a newer version is skipped rather than failing the read.
            if let Ok(kind) = serde_json::from_value::<EventKind>(v) {
                out.push(Event { seq, run_id: run_id.to_string(), at_ms, kind });
            }
        }
        Ok(out)
    }

    /// Stores a new run as `queued`, with its creation event. A run with a project is
    /// enqueued for workers in the same transaction.
    pub async fn insert_run(&self, run: &NewRun, created: EventKind) -> Result<Event> {
        self.insert_run_audited(run.clone(), created, None).await
    }

    /// Stores a new run with its creation event and, when given, the audit record of the
    /// request that made it, in one transaction.
    ///
    /// Inserts that arrive together are committed together (group commit): the first becomes
    /// the leader, yields once so others can join, and writes the whole batch in one
    /// transaction. Every caller still returns only after its run is committed, and one
    /// failing insert fails alone (SQLite: each insert in its own savepoint; PostgreSQL,
    /// where a savepoint costs two round trips: on a failure the batch is redone one insert
    /// per transaction). On SQLite consecutive runs touch the same B-tree pages, so a batch
    /// of 30 writes about as many WAL pages as one insert (committing one by one, the API
    /// spent most of its time writing the WAL); on PostgreSQL a batch shares one commit and
    /// its WAL flush.
    pub async fn insert_run_audited(
        &self,
        run: NewRun,
        created: EventKind,
        audit: Option<AuditEntry>,
    ) -> Result<Event> {
        let inserts = &self.inserts;
        let (reply, answer) = tokio::sync::oneshot::channel();
        let leader = {
            let mut pending = inserts.lock().map_err(|_| StoreError::Batch("the insert batch was poisoned".into()))?;
            pending.push(PendingInsert { run, created, audit, reply });
            pending.len() == 1
        };
        if leader {
            // Let the others join: yield while the batch keeps growing (a few times at most).
            let mut seen = 1;
            for _ in 0..4 {
                tokio::task::yield_now().await;
                let now = inserts.lock().map(|p| p.len()).unwrap_or(seen);
                if now == seen {
                    break;
                }
                seen = now;
            }
            let batch = std::mem::take(
                &mut *inserts.lock().map_err(|_| StoreError::Batch("the insert batch was poisoned".into()))?,
            );
            self.commit_inserts(batch).await;
        }
        answer.await.map_err(|_| StoreError::Batch("the insert batch was dropped".into()))?
    }

    async fn commit_inserts(&self, batch: Vec<PendingInsert>) {
        if matches!(self.db, Db::Pg(_)) {
            return self.commit_inserts_pg(batch).await;
        }
        let mut done = Vec::with_capacity(batch.len());
        let mut tx = match self.begin().await {
            Ok(tx) => tx,
            Err(e) => {
                let msg = e.to_string();
                for p in batch {
                    let _ = p.reply.send(Err(StoreError::Batch(msg.clone())));
                }
                return;
            }
        };
        for p in batch {
            let one = async {
                tx.exec("SAVEPOINT insert_run", &[]).await?;
                match Self::insert_one(&mut tx, &p.run, p.created, p.audit.as_ref()).await {
                    Ok(e) => {
                        tx.exec("RELEASE insert_run", &[]).await?;
                        Ok(Ok(e))
                    }
                    Err(err) => {
                        tx.exec("ROLLBACK TO insert_run", &[]).await?;
                        tx.exec("RELEASE insert_run", &[]).await?;
                        Ok::<_, StoreError>(Err(err))
                    }
                }
            }
            .await;
            done.push((p.reply, one));
        }
        let committed = tx.commit().await.map_err(|e| e.to_string());
        for (reply, result) in done {
            let answer = match (&committed, result) {
                (Ok(()), Ok(outcome)) => outcome,
                (Err(msg), _) => Err(StoreError::Batch(msg.clone())),
                (Ok(()), Err(e)) => Err(StoreError::Batch(e.to_string())),
            };
            let _ = reply.send(answer);
        }
    }

    async fn commit_inserts_pg(&self, batch: Vec<PendingInsert>) {
        let together = async {
            let mut tx = self.begin().await?;
            let seqs = Self::insert_many_pg(&mut tx, &batch).await?;
            tx.commit().await?;
            Ok::<_, StoreError>(seqs)
        }
        .await;
        match together {
            Ok((now, seqs)) => {
                for (p, seq) in batch.into_iter().zip(seqs) {
                    let _ = p.reply.send(Ok(Event { seq, run_id: p.run.id.clone(), at_ms: now, kind: p.created }));
                }
            }
            Err(_) => {
                // One insert spoiled the batch (a duplicate short id): each on its own now.
                for p in batch {
                    let one = async {
                        let mut tx = self.begin().await?;
                        let e = Self::insert_one(&mut tx, &p.run, p.created, p.audit.as_ref()).await?;
                        tx.commit().await?;
                        Ok(e)
                    }
                    .await;
                    let _ = p.reply.send(one);
                }
            }
        }
    }

    /// A whole batch of runs, their creation events and audit records in two statements
    /// (arrays through `unnest`), whatever the batch's size. Returns the time used as every
    /// run's `created_at` and the events' sequence numbers in batch order.
    async fn insert_many_pg(tx: &mut Tx<'_>, batch: &[PendingInsert]) -> Result<(i64, Vec<i64>)> {
        let now = now_ms();
        let Some(conn) = tx.pg_conn() else { return Err(StoreError::Batch("not a PostgreSQL transaction".into())) };
        let col = |f: fn(&NewRun) -> &str| batch.iter().map(|p| f(&p.run).to_string()).collect::<Vec<_>>();
        let ids = col(|r| &r.id);
        let kinds: Vec<String> = batch.iter().map(|p| p.created.name().to_string()).collect();
        let data: Vec<String> = batch.iter().map(|p| event_json(&p.created)).collect::<Result<_>>()?;
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "WITH r AS (
                 INSERT INTO runs (id, short_id, title, spec, repo, base_branch, base_commit, branch, state, settings, created_at, updated_at, project_id, origin)
                 SELECT id, short_id, title, spec, repo, base_branch, base_commit, branch, 'queued', settings, $11, $11, project_id, origin
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $12::text[])
                      AS t(id, short_id, title, spec, repo, base_branch, base_commit, branch, settings, project_id, origin)
                 RETURNING id)
             INSERT INTO events (run_id, at_ms, kind, data)
             SELECT e.id, $11, e.kind, e.data
             FROM unnest($1::text[], $13::text[], $14::text[]) WITH ORDINALITY AS e(id, kind, data, n)
             JOIN r ON r.id = e.id ORDER BY e.n
             RETURNING run_id, seq",
        )
        .bind(&ids)
        .bind(col(|r| &r.short_id))
        .bind(col(|r| &r.title))
        .bind(col(|r| &r.spec))
        .bind(col(|r| &r.repo))
        .bind(col(|r| &r.base_branch))
        .bind(col(|r| &r.base_commit))
        .bind(col(|r| &r.branch))
        .bind(col(|r| &r.settings))
        .bind(batch.iter().map(|p| p.run.project_id.clone()).collect::<Vec<_>>())
        .bind(now)
        .bind(batch.iter().map(|p| p.run.origin.clone()).collect::<Vec<_>>())
        .bind(&kinds)
        .bind(&data)
        .fetch_all(&mut *conn)
        .await?;
        let by_id: std::collections::HashMap<String, i64> = rows.into_iter().collect();
        let seqs = ids
            .iter()
            .map(|id| by_id.get(id).copied().ok_or_else(|| StoreError::Batch(format!("run {id} was not inserted"))))
            .collect::<Result<Vec<_>>>()?;
        let audits: Vec<&AuditEntry> = batch.iter().filter_map(|p| p.audit.as_ref()).collect();
        if !audits.is_empty() {
            sqlx::query(
                "INSERT INTO audit_log (at_ms, key_id, key_name, method, path, status, detail)
                 SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::text[])",
            )
            .bind(now)
            .bind(audits.iter().map(|a| a.key_id.clone()).collect::<Vec<_>>())
            .bind(audits.iter().map(|a| a.key_name.clone()).collect::<Vec<_>>())
            .bind(audits.iter().map(|a| a.method.clone()).collect::<Vec<_>>())
            .bind(audits.iter().map(|a| a.path.clone()).collect::<Vec<_>>())
            .bind(audits.iter().map(|a| i64::from(a.status)).collect::<Vec<_>>())
            .bind(audits.iter().map(|a| a.detail.clone()).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?;
        }
        Ok((now, seqs))
    }

    async fn insert_one(
        tx: &mut Tx<'_>,
        run: &NewRun,
        created: EventKind,
        audit: Option<&AuditEntry>,
    ) -> Result<Event> {
        let now = now_ms();
        let data = event_json(&created)?;
        let mut args: Vec<Arg<'_>> = vec![
            (&run.id).into(),
            (&run.short_id).into(),
            (&run.title).into(),
            (&run.spec).into(),
            (&run.repo).into(),
            (&run.base_branch).into(),
            (&run.base_commit).into(),
            (&run.branch).into(),
            RunState::Queued.as_str().into(),
            (&run.settings).into(),
            now.into(),
            run.project_id.as_deref().into(),
            run.origin.as_deref().into(),
        ];
        if tx.is_pg() {
            // One round trip: the run and its creation event. No advisory lock is needed for
            // this first event: nothing else can append to a run before it is committed.
            args.extend([Arg::Text(created.name()), Arg::Text(&data)]);
            let seq = tx
                .int(
                    "WITH r AS (
                         INSERT INTO runs (id, short_id, title, spec, repo, base_branch, base_commit, branch, state, settings, created_at, updated_at, project_id, origin)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, $12, $13) RETURNING id)
                     INSERT INTO events (run_id, at_ms, kind, data) SELECT id, $11, $14, $15 FROM r RETURNING seq",
                    &args,
                )
                .await?;
            if let Some(a) = audit {
                Self::insert_audit(tx, a, now).await?;
            }
            return Ok(Event { seq, run_id: run.id.clone(), at_ms: now, kind: created });
        }
        tx.exec(
            "INSERT INTO runs (id, short_id, title, spec, repo, base_branch, base_commit, branch, state, settings, created_at, updated_at, project_id, origin)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, $12, $13)",
            &args,
        )
        .await?;
        // The event's time is the run's `created_at`, so callers can build the row from both.
        let seq = tx.event_raw(&run.id, now, created.name(), &data).await?;
        if let Some(a) = audit {
            Self::insert_audit(tx, a, now).await?;
        }
        Ok(Event { seq, run_id: run.id.clone(), at_ms: now, kind: created })
    }

    async fn insert_audit(tx: &mut Tx<'_>, a: &AuditEntry, at_ms: i64) -> Result<u64> {
        tx.exec(
            "INSERT INTO audit_log (at_ms, key_id, key_name, method, path, status, detail) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                at_ms.into(),
                a.key_id.as_deref().into(),
                a.key_name.as_deref().into(),
                a.method.as_str().into(),
                a.path.as_str().into(),
                i64::from(a.status).into(),
                a.detail.as_deref().into(),
            ],
        )
        .await
    }

    pub async fn get_run(&self, id: &str) -> Result<RunRow> {
        self.fetch::<RunRow>(run_select!("WHERE id = $1"), &[id.into()])
            .await?
            .pop()
            .ok_or_else(|| StoreError::RunNotFound(id.to_string()))
    }

    /// Finds a run by full id, short id, or a unique prefix of either.
    pub async fn find_run(&self, key: &str) -> Result<RunRow> {
        let key = key.trim();
        if key.is_empty() {
            return Err(StoreError::RunNotFound(key.to_string()));
        }
        let pattern = format!("{}%", key.replace(['%', '_', '\\'], ""));
        let rows: Vec<RunRow> = self
            .fetch(
                run_select!("WHERE id = $1 OR short_id = $1 OR id LIKE $2 OR short_id LIKE $2 LIMIT 2"),
                &[key.into(), pattern.as_str().into()],
            )
            .await?;
        if let Some(exact) = rows.iter().find(|r| r.id == key || r.short_id == key) {
            return Ok(exact.clone());
        }
        match rows.len() {
            0 => Err(StoreError::RunNotFound(key.to_string())),
            1 => Ok(rows.into_iter().next().ok_or_else(|| StoreError::RunNotFound(key.to_string()))?),
            _ => Err(StoreError::Ambiguous(key.to_string())),
        }
    }

    /// A page of runs, newest first, optionally of one project and in one state, strictly
    /// before the cursor `(created_at, id)`. The rows' spec, settings and plan are empty.
    /// `scope`: the comma-separated ids of the projects a scoped key sees (`None`: every run).
    pub async fn list_runs_page(
        &self,
        project_id: Option<&str>,
        scope: Option<&str>,
        state: Option<RunState>,
        limit: i64,
        before: Option<(i64, String)>,
    ) -> Result<Vec<RunRow>> {
        let cursor = before.unwrap_or((i64::MAX, String::new()));
        self.fetch(RUNS_PAGE_SQL, &page_args(project_id, scope, state, limit, &cursor)).await
    }

    /// Like `list_runs_page`, but hands each run to `f` borrowed instead of returning owned
    /// rows: on SQLite straight from the database's row buffer, so a page costs no string
    /// copies (the API's run listing, its busiest read, spent a third of its time on them).
    pub async fn visit_runs_page(
        &self,
        project_id: Option<&str>,
        scope: Option<&str>,
        state: Option<RunState>,
        limit: i64,
        before: Option<(i64, String)>,
        mut f: impl FnMut(RunRef<'_>),
    ) -> Result<()> {
        match &self.db {
            Db::Sqlite { readers, .. } => {
                let cursor = before.unwrap_or((i64::MAX, String::new()));
                readers.visit(RUNS_PAGE_SQL, &page_args(project_id, scope, state, limit, &cursor), |row| {
                    f(RunRef::from_lite(row)?);
                    Ok(())
                })
            }
            Db::Pg(_) => {
                for run in self.list_runs_page(project_id, scope, state, limit, before).await? {
                    f(run.as_ref());
                }
                Ok(())
            }
        }
    }

    /// Runs, newest first.
    pub async fn list_runs(&self, limit: i64) -> Result<Vec<RunRow>> {
        self.fetch(run_select!("ORDER BY created_at DESC, id DESC LIMIT $1"), &[limit.into()]).await
    }

    /// Moves a run to `to` if the lifecycle allows it from its current state, recording the
    /// change as an event in the same transaction. Returns `None` when it is already there.
    pub async fn set_run_state(&self, run_id: &str, to: RunState, reason: Option<&str>) -> Result<Option<Event>> {
        // A reason is shown to every viewer: a token in a clone URL (a git error) is masked.
        let masked = reason.map(autodev_domain::mask_url_credentials);
        let reason = masked.as_deref();
        let mut tx = self.begin().await?;
        let from = tx.run_state_locked(run_id).await?;
        if from == to {
            return Ok(None);
        }
        if !from.can_become(to) {
            return Err(StoreError::Transition { run: run_id.to_string(), from, to });
        }
        let now = now_ms();
        let finished = to.is_terminal().then_some(now);
        tx.exec(
            "UPDATE runs SET state = $1, reason = COALESCE($2, reason), updated_at = $3, finished_at = COALESCE($4, finished_at) WHERE id = $5",
            &[to.as_str().into(), reason.into(), now.into(), finished.into(), run_id.into()],
        )
        .await?;
        let e = tx.event(run_id, EventKind::StateChanged { from, to, reason: reason.map(str::to_string) }).await?;
        tx.commit().await?;
        Ok(Some(e))
    }

    /// Stores the accepted plan and its tasks (all `pending`), with the event.
    pub async fn set_plan(&self, run_id: &str, plan: &autodev_domain::Plan, accepted: EventKind) -> Result<Event> {
        let now = now_ms();
        let plan_json = serde_json::to_string(plan)?;
        let mut tx = self.begin().await?;
        tx.exec(
            "UPDATE runs SET plan = $1, updated_at = $2 WHERE id = $3",
            &[(&plan_json).into(), now.into(), run_id.into()],
        )
        .await?;
        for (i, t) in plan.tasks.iter().enumerate() {
            let deps = serde_json::to_string(&t.depends_on)?;
            let acceptance = serde_json::to_string(&t.acceptance)?;
            tx.exec(
                "INSERT INTO tasks (run_id, task_key, position, title, description, depends_on, acceptance, state, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (run_id, task_key) DO NOTHING",
                &[
                    run_id.into(),
                    (&t.id).into(),
                    (i as i64).into(),
                    (&t.title).into(),
                    (&t.description).into(),
                    (&deps).into(),
                    (&acceptance).into(),
                    TaskState::Pending.as_str().into(),
                    now.into(),
                ],
            )
            .await?;
        }
        let e = tx.event(run_id, accepted).await?;
        tx.commit().await?;
        Ok(e)
    }

    pub async fn tasks(&self, run_id: &str) -> Result<Vec<TaskRow>> {
        self.fetch(
            "SELECT run_id, task_key, position, title, description, depends_on, acceptance, state, reason, summary, commit_sha, updated_at
             FROM tasks WHERE run_id = $1 ORDER BY position",
            &[run_id.into()],
        )
        .await
    }

    /// Sets a task's state (and optionally its reason and summary), with the event.
    pub async fn set_task_state(
        &self,
        run_id: &str,
        task: &str,
        state: TaskState,
        reason: Option<&str>,
        summary: Option<&str>,
    ) -> Result<Event> {
        let mut tx = self.begin().await?;
        tx.exec(
            "UPDATE tasks SET state = $1, reason = COALESCE($2, reason), summary = COALESCE($3, summary), updated_at = $4 WHERE run_id = $5 AND task_key = $6",
            &[state.as_str().into(), reason.into(), summary.into(), now_ms().into(), run_id.into(), task.into()],
        )
        .await?;
        let kind = EventKind::TaskStateChanged { task: task.to_string(), state, reason: reason.map(str::to_string) };
        let e = tx.event(run_id, kind).await?;
        tx.commit().await?;
        Ok(e)
    }

    pub async fn set_task_commit(&self, run_id: &str, task: &str, commit: &str) -> Result<Event> {
        let mut tx = self.begin().await?;
        tx.exec(
            "UPDATE tasks SET commit_sha = $1, updated_at = $2 WHERE run_id = $3 AND task_key = $4",
            &[commit.into(), now_ms().into(), run_id.into(), task.into()],
        )
        .await?;
        let e =
            tx.event(run_id, EventKind::TaskCommitted { task: task.to_string(), commit: commit.to_string() }).await?;
        tx.commit().await?;
        Ok(e)
    }

    pub async fn set_repair_round(&self, run_id: &str, round: u32) -> Result<()> {
        let mut tx = self.begin().await?;
        tx.exec(
            "UPDATE runs SET repair_round = $1, updated_at = $2 WHERE id = $3",
            &[round.into(), now_ms().into(), run_id.into()],
        )
        .await?;
        tx.commit().await
    }

    /// Records a test run's outcome on the run, with the event.
    pub async fn record_test_run(&self, run_id: &str, passed: bool, event: EventKind) -> Result<Event> {
        self.update_run_with_event(
            "UPDATE runs SET test_passed = $1, updated_at = $2 WHERE id = $3",
            passed,
            run_id,
            event,
        )
        .await
    }

    /// Records what the run's tests prove, with the event.
    pub async fn record_evidence(&self, run_id: &str, verdict: &str, event: EventKind) -> Result<Event> {
        self.update_run_with_event(
            "UPDATE runs SET evidence = $1, updated_at = $2 WHERE id = $3",
            verdict,
            run_id,
            event,
        )
        .await
    }

    /// One column of a run (`$1`, with `$2` the time and `$3` the id) and an event, in one
    /// transaction.
    async fn update_run_with_event<'a>(
        &self,
        sql: &'static str,
        value: impl Into<Arg<'a>>,
        run_id: &'a str,
        event: EventKind,
    ) -> Result<Event> {
        let mut tx = self.begin().await?;
        tx.exec(sql, &[value.into(), now_ms().into(), run_id.into()]).await?;
        let e = tx.event(run_id, event).await?;
        tx.commit().await?;
        Ok(e)
    }

    /// Records the base branch and commit a worker resolved for a run made through the API
    /// (which learns them when a worker first fetches the repository). Only the first call
    /// counts, so a run resumed elsewhere keeps its base.
    pub async fn set_base(&self, run_id: &str, base_branch: &str, base_commit: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        tx.exec(
            "UPDATE runs SET base_branch = $1, base_commit = $2, updated_at = $3 WHERE id = $4 AND base_commit = ''",
            &[base_branch.into(), base_commit.into(), now_ms().into(), run_id.into()],
        )
        .await?;
        tx.commit().await
    }

    /// Stores the fixed start of a conversation; a second call keeps the first.
    pub async fn put_conversation(&self, run_id: &str, conversation: &str, header: &str) -> Result<String> {
        let mut tx = self.begin().await?;
        tx.exec(
            "INSERT INTO conversations (run_id, conversation, header, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (run_id, conversation) DO NOTHING",
            &[run_id.into(), conversation.into(), header.into(), now_ms().into()],
        )
        .await?;
        let header = tx
            .opt_text(
                "SELECT header FROM conversations WHERE run_id = $1 AND conversation = $2",
                &[run_id.into(), conversation.into()],
            )
            .await?
            .unwrap_or_default();
        tx.commit().await?;
        Ok(header)
    }

    pub async fn conversation_exists(&self, run_id: &str, conversation: &str) -> Result<bool> {
        let n: i64 = read!(self, |pool| {
            sqlx::query_scalar("SELECT COUNT(*) FROM conversations WHERE run_id = $1 AND conversation = $2")
                .bind(run_id)
                .bind(conversation)
                .fetch_one(pool)
                .await?
        });
        Ok(n > 0)
    }

    pub async fn model_calls(&self, run_id: &str, conversation: &str) -> Result<Vec<StoredModelCall>> {
        Ok(read!(self, |pool| {
            sqlx::query_as::<_, StoredModelCall>(
                "SELECT turn, provider, model, response, input_tokens, output_tokens, cost_micros, latency_ms
                 FROM model_calls WHERE run_id = $1 AND conversation = $2 ORDER BY turn",
            )
            .bind(run_id)
            .bind(conversation)
            .fetch_all(pool)
            .await?
        }))
    }

    pub async fn tool_calls(&self, run_id: &str, conversation: &str) -> Result<Vec<StoredToolCall>> {
        Ok(read!(self, |pool| {
            sqlx::query_as::<_, StoredToolCall>(
                "SELECT turn, idx, call_id, name, arguments, status, result, is_error
                 FROM tool_calls WHERE run_id = $1 AND conversation = $2 ORDER BY turn, idx",
            )
            .bind(run_id)
            .bind(conversation)
            .fetch_all(pool)
            .await?
        }))
    }

    async fn insert_tool_start(
        tx: &mut Tx<'_>,
        run_id: &str,
        conversation: &str,
        turn: u32,
        start: &ToolStart<'_>,
        at_ms: i64,
    ) -> Result<u64> {
        tx.exec(
            "INSERT INTO tool_calls (run_id, conversation, turn, idx, call_id, name, arguments, status, started_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'started', $8)
             ON CONFLICT (run_id, conversation, turn, idx) DO UPDATE SET started_at = excluded.started_at",
            &[
                run_id.into(),
                conversation.into(),
                turn.into(),
                start.idx.into(),
                start.call_id.into(),
                start.name.into(),
                start.arguments.into(),
                at_ms.into(),
            ],
        )
        .await
    }

    /// Persists a model reply before anything acts on it — the call, the run's running
    /// totals and the `model_call` event — and, when given, marks the reply's first tool call
    /// as started (with its `agent_step` event), all in one transaction.
    pub async fn record_model_call(
        &self,
        rec: &ModelCallRecord<'_>,
        first_tool: Option<&ToolStart<'_>>,
    ) -> Result<Recorded> {
        let now = now_ms();
        let call_event = EventKind::ModelCall {
            conversation: rec.conversation.to_string(),
            turn: rec.turn,
            provider: rec.provider.to_string(),
            model: rec.model.to_string(),
            input_tokens: rec.input_tokens,
            output_tokens: rec.output_tokens,
            cost_micros: rec.cost_micros,
            latency_ms: rec.latency_ms,
        };
        let call_json = event_json(&call_event)?;
        let step_event = first_tool.map(|t| EventKind::AgentStep {
            conversation: rec.conversation.to_string(),
            turn: rec.turn,
            tool: t.name.to_string(),
            target: t.target.to_string(),
        });
        let step_json = step_event.as_ref().map(event_json).transpose()?;
        let (input, output) = (rec.input_tokens as i64, rec.output_tokens as i64);
        let mut tx = self.begin().await?;
        // A turn answered twice (two drivers raced before one lost its lease) is recorded
        // once: the second attempt rolls back and gets the first's answer to continue from.
        let inserted = tx
            .exec(
                "INSERT INTO model_calls (run_id, conversation, turn, provider, model, response, input_tokens, output_tokens, cost_micros, latency_ms, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                 ON CONFLICT (run_id, conversation, turn) DO NOTHING",
                &[
                    rec.run_id.into(),
                    rec.conversation.into(),
                    rec.turn.into(),
                    rec.provider.into(),
                    rec.model.into(),
                    rec.response_json.into(),
                    input.into(),
                    output.into(),
                    rec.cost_micros.into(),
                    (rec.latency_ms as i64).into(),
                    now.into(),
                ],
            )
            .await?;
        if inserted == 0 {
            let first = tx
                .opt_text(
                    "SELECT response FROM model_calls WHERE run_id = $1 AND conversation = $2 AND turn = $3",
                    &[rec.run_id.into(), rec.conversation.into(), rec.turn.into()],
                )
                .await?
                .unwrap_or_default();
            drop(tx);
            return Ok(Recorded::Already { response_json: first });
        }
        if rec.cost_micros > 0 {
            // The month's spend, global then the project's: the rows reservations lock, in
            // their order (see `store::budget`).
            let month = autodev_domain::month_of(now);
            budget::add_month_spend(&mut tx, "global", &month, rec.cost_micros).await?;
            tx.exec(
                "INSERT INTO budget_months (scope, month, spent_micros)
                 SELECT 'project:' || project_id, $1, $2 FROM runs WHERE id = $3 AND project_id IS NOT NULL
                 ON CONFLICT (scope, month) DO UPDATE SET spent_micros = budget_months.spent_micros + excluded.spent_micros",
                &[(&month).into(), rec.cost_micros.into(), rec.run_id.into()],
            )
            .await?;
        }
        tx.exec(
            "UPDATE runs SET input_tokens = input_tokens + $1, output_tokens = output_tokens + $2, cost_micros = cost_micros + $3,
                 reserved_micros = CASE WHEN reserved_micros > $5 THEN reserved_micros - $5 ELSE 0 END
             WHERE id = $4",
            &[input.into(), output.into(), rec.cost_micros.into(), rec.run_id.into(), rec.reserved_micros.into()],
        )
        .await?;
        let mut seqs = vec![tx.event_raw(rec.run_id, now, "model_call", &call_json).await?];
        if let (Some(start), Some(step)) = (first_tool, step_json.as_deref()) {
            Self::insert_tool_start(&mut tx, rec.run_id, rec.conversation, rec.turn, start, now).await?;
            seqs.push(tx.event_raw(rec.run_id, now, "agent_step", step).await?);
        }
        tx.commit().await?;
        let mut events = vec![call_event];
        events.extend(step_event);
        Ok(Recorded::New(
            seqs.into_iter()
                .zip(events)
                .map(|(seq, kind)| Event { seq, run_id: rec.run_id.to_string(), at_ms: now, kind })
                .collect(),
        ))
    }

    /// Marks a tool call as started, before it runs, with the `agent_step` event.
    pub async fn tool_started(
        &self,
        run_id: &str,
        conversation: &str,
        turn: u32,
        start: &ToolStart<'_>,
    ) -> Result<Event> {
        let now = now_ms();
        let kind = EventKind::AgentStep {
            conversation: conversation.to_string(),
            turn,
            tool: start.name.to_string(),
            target: start.target.to_string(),
        };
        let data = event_json(&kind)?;
        let mut tx = self.begin().await?;
        Self::insert_tool_start(&mut tx, run_id, conversation, turn, start, now).await?;
        let seq = tx.event_raw(run_id, now, "agent_step", &data).await?;
        tx.commit().await?;
        Ok(Event { seq, run_id: run_id.to_string(), at_ms: now, kind })
    }

    /// Marks a tool call as finished with its result, with the `tool_finished` event.
    #[allow(clippy::too_many_arguments)]
    pub async fn tool_finished(
        &self,
        run_id: &str,
        conversation: &str,
        turn: u32,
        idx: u32,
        name: &str,
        result: &str,
        is_error: bool,
        summary: &str,
    ) -> Result<Event> {
        let now = now_ms();
        let kind = EventKind::ToolFinished {
            conversation: conversation.to_string(),
            turn,
            tool: name.to_string(),
            ok: !is_error,
            summary: summary.to_string(),
        };
        let data = event_json(&kind)?;
        let mut tx = self.begin().await?;
        tx.exec(
            "UPDATE tool_calls SET status = 'finished', result = $1, is_error = $2, finished_at = $3
             WHERE run_id = $4 AND conversation = $5 AND turn = $6 AND idx = $7",
            &[result.into(), is_error.into(), now.into(), run_id.into(), conversation.into(), turn.into(), idx.into()],
        )
        .await?;
        let seq = tx.event_raw(run_id, now, "tool_finished", &data).await?;
        tx.commit().await?;
        Ok(Event { seq, run_id: run_id.to_string(), at_ms: now, kind })
    }

    /// Stores a new API key (its hash only). A name already in use is refused.
    pub async fn insert_key(&self, key: &KeyRow) -> Result<()> {
        let taken =
            || StoreError::Conflict(format!("a key named `{}` exists; pick another name or revoke it", key.name));
        let mut tx = self.begin().await?;
        if tx.opt_text("SELECT id FROM api_keys WHERE name = $1", &[(&key.name).into()]).await?.is_some() {
            return Err(taken());
        }
        tx.exec(
            "INSERT INTO api_keys (id, name, role, prefix, hash, created_at, projects) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                (&key.id).into(),
                (&key.name).into(),
                (&key.role).into(),
                (&key.prefix).into(),
                (&key.hash).into(),
                key.created_at.into(),
                key.projects.as_deref().into(),
            ],
        )
        .await
        .map_err(|e| if is_unique_violation(&e) { taken() } else { e })?;
        tx.commit().await
    }

    pub async fn list_keys(&self) -> Result<Vec<KeyRow>> {
        self.fetch(key_select!("ORDER BY created_at, name"), &[]).await
    }

    /// The active (not revoked) key with this hash.
    pub async fn key_by_hash(&self, hash: &str) -> Result<Option<KeyRow>> {
        Ok(self.fetch::<KeyRow>(key_select!("WHERE hash = $1 AND revoked_at IS NULL"), &[hash.into()]).await?.pop())
    }

    /// Revokes a key by id or name; returns whether one was revoked now.
    pub async fn revoke_key(&self, id_or_name: &str) -> Result<bool> {
        let mut tx = self.begin().await?;
        let n = tx
            .exec(
                "UPDATE api_keys SET revoked_at = $1 WHERE (id = $2 OR name = $2) AND revoked_at IS NULL",
                &[now_ms().into(), id_or_name.into()],
            )
            .await?;
        tx.commit().await?;
        Ok(n > 0)
    }

    /// Notes when keys were last used (batched by the caller).
    pub async fn touch_keys(&self, used: &[(String, i64)]) -> Result<()> {
        let mut tx = self.begin().await?;
        for (id, at) in used {
            tx.exec(
                "UPDATE api_keys SET last_used_at = $1 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $1)",
                &[(*at).into(), id.into()],
            )
            .await?;
        }
        tx.commit().await
    }

    /// Records a mutating request in the audit log.
    pub async fn audit(
        &self,
        key: Option<&KeyRow>,
        method: &str,
        path: &str,
        status: u16,
        detail: Option<&str>,
    ) -> Result<()> {
        let entry = AuditEntry::new(key, method, path, status, detail);
        let mut tx = self.begin().await?;
        Self::insert_audit(&mut tx, &entry, now_ms()).await?;
        tx.commit().await
    }

    pub async fn insert_project(&self, p: &ProjectRow) -> Result<()> {
        let taken = || StoreError::Conflict(format!("a project named `{}` exists", p.name));
        let mut tx = self.begin().await?;
        if tx.opt_text("SELECT id FROM projects WHERE name = $1", &[(&p.name).into()]).await?.is_some() {
            return Err(taken());
        }
        tx.exec(
            "INSERT INTO projects (id, name, repository, base_branch, test_command, settings, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
            &[
                (&p.id).into(),
                (&p.name).into(),
                (&p.repository).into(),
                p.base_branch.as_deref().into(),
                p.test_command.as_deref().into(),
                (&p.settings).into(),
                p.created_at.into(),
            ],
        )
        .await
        .map_err(|e| if is_unique_violation(&e) { taken() } else { e })?;
        tx.commit().await
    }

    /// Replaces a project's settable fields (name, repository, base branch, test command,
    /// settings).
    pub async fn update_project(&self, p: &ProjectRow) -> Result<()> {
        let taken = || StoreError::Conflict(format!("a project named `{}` exists", p.name));
        let mut tx = self.begin().await?;
        if tx
            .opt_text("SELECT id FROM projects WHERE name = $1 AND id <> $2", &[(&p.name).into(), (&p.id).into()])
            .await?
            .is_some()
        {
            return Err(taken());
        }
        let n = tx
            .exec(
                "UPDATE projects SET name = $1, repository = $2, base_branch = $3, test_command = $4, settings = $5, updated_at = $6 WHERE id = $7",
                &[
                    (&p.name).into(),
                    (&p.repository).into(),
                    p.base_branch.as_deref().into(),
                    p.test_command.as_deref().into(),
                    (&p.settings).into(),
                    now_ms().into(),
                    (&p.id).into(),
                ],
            )
            .await
            .map_err(|e| if is_unique_violation(&e) { taken() } else { e })?;
        tx.commit().await?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("no project `{}`", p.id)));
        }
        Ok(())
    }

    pub async fn delete_project(&self, id: &str) -> Result<bool> {
        let mut tx = self.begin().await?;
        let n = tx.exec("DELETE FROM projects WHERE id = $1", &[id.into()]).await?;
        tx.commit().await?;
        Ok(n > 0)
    }

    pub async fn list_projects(&self) -> Result<Vec<ProjectRow>> {
        self.fetch(project_select!("ORDER BY name"), &[]).await
    }

    /// A project by id or name.
    pub async fn find_project(&self, key: &str) -> Result<ProjectRow> {
        // An id always wins over a name (names that look like ids are refused, but a database
        // from before that rule may hold one).
        self.fetch::<ProjectRow>(
            project_select!("WHERE id = $1 OR name = $1 ORDER BY CASE WHEN id = $1 THEN 0 ELSE 1 END LIMIT 1"),
            &[key.into()],
        )
        .await?
        .pop()
        .ok_or_else(|| StoreError::NotFound(format!("no project `{key}`")))
    }

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

    /// Stores a webhook delivery before anything acts on it. Returns false when this
    /// delivery id was seen before (a redelivery), in which case nothing else should happen.
    pub async fn record_delivery(&self, source: &str, delivery_id: &str, event: &str) -> Result<bool> {
        let mut tx = self.begin().await?;
        let n = tx
            .exec(
                "INSERT INTO webhook_deliveries (source, delivery_id, event, received_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (source, delivery_id) DO NOTHING",
                &[source.into(), delivery_id.into(), event.into(), now_ms().into()],
            )
            .await?;
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Records what a delivery led to (`ignored: …`, `run created`, …) and its run.
    pub async fn finish_delivery(
        &self,
        source: &str,
        delivery_id: &str,
        outcome: &str,
        run_id: Option<&str>,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        tx.exec(
            "UPDATE webhook_deliveries SET outcome = $1, run_id = $2 WHERE source = $3 AND delivery_id = $4",
            &[outcome.into(), run_id.into(), source.into(), delivery_id.into()],
        )
        .await?;
        tx.commit().await
    }

    /// A delivery's recorded outcome and run, if it was seen.
    pub async fn delivery(&self, source: &str, delivery_id: &str) -> Result<Option<(Option<String>, Option<String>)>> {
        Ok(read!(self, |pool| {
            sqlx::query_as("SELECT outcome, run_id FROM webhook_deliveries WHERE source = $1 AND delivery_id = $2")
                .bind(source)
                .bind(delivery_id)
                .fetch_optional(pool)
                .await?
        }))
    }

    /// The newest unfinished run started by this ticket (`github:owner/name#12`, …).
    pub async fn active_run_for_origin(&self, origin: &str) -> Result<Option<RunRow>> {
        Ok(self
            .fetch::<RunRow>(
                run_select!(
                    "WHERE origin = $1 AND state NOT IN ('succeeded', 'failed', 'cancelled') ORDER BY created_at DESC LIMIT 1"
                ),
                &[origin.into()],
            )
            .await?
            .pop())
    }

    /// Counts for the metrics endpoint.
    pub async fn stats(&self) -> Result<Stats> {
        let runs_by_state: Vec<(String, i64)> = read!(self, |pool| {
            sqlx::query_as("SELECT state, COUNT(*) FROM runs GROUP BY state").fetch_all(pool).await?
        });
        let (queue_depth, oldest_queued_ms): (i64, Option<i64>) = read!(self, |pool| {
            sqlx::query_as(
                "SELECT COUNT(*), MIN(created_at) FROM runs WHERE state = 'queued' AND project_id IS NOT NULL",
            )
            .fetch_one(pool)
            .await?
        });
        let running_tasks: i64 = read!(self, |pool| {
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT COUNT(*) FROM tasks t JOIN runs r ON r.id = t.run_id
                 WHERE t.state = 'running' AND r.state NOT IN {TERMINAL_SQL}"
            )))
            .fetch_one(pool)
            .await?
        });
        Ok(Stats { runs_by_state, queue_depth, oldest_queued_ms, running_tasks })
    }

    /// How many requests the audit log holds.
    pub async fn audit_count(&self) -> Result<i64> {
        Ok(read!(self, |pool| sqlx::query_scalar("SELECT COUNT(*) FROM audit_log").fetch_one(pool).await?))
    }

    /// The current state, cheaply (used to notice a cancel from another process).
    pub async fn run_state(&self, run_id: &str) -> Result<RunState> {
        let row = self
            .fetch::<TextRow>("SELECT state AS value FROM runs WHERE id = $1", &[run_id.into()])
            .await?
            .pop()
            .ok_or_else(|| StoreError::RunNotFound(run_id.to_string()))?;
        Ok(row.value.parse().unwrap_or(RunState::Failed))
    }
}

pub(crate) mod budget;
pub(crate) mod gates;
pub(crate) mod lease;
pub(crate) mod outbox;
pub(crate) mod sessions;
pub(crate) mod usage;
pub use usage::{KeyUsageRow, NewAsk, UsageRow};
