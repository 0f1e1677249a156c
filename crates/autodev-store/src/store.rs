//! The store on SQLite or PostgreSQL.
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

use crate::Result;
pub(crate) use crate::clock::now_ms;
use crate::error::StoreError;
use crate::rows::{AuditEntry, NewRun};
use crate::tx::{Arg, Readers, Record, Tx, pg_fetch};
use autodev_domain::{Event, EventKind};

/// Counts read at scrape time by `/metrics`.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub runs_by_state: Vec<(String, i64)>,
    /// API-made runs waiting for a worker.
    pub queue_depth: i64,
    pub oldest_queued_ms: Option<i64>,
    pub running_tasks: i64,
}

/// The migrations of each backend. They only expand the schema (new tables, new nullable or
/// defaulted columns, new indexes; never a drop, a rename or a type change in the same
/// release that stops using something), so version N and N+1 run against one database during
/// a rolling upgrade; a database migrated by a newer version (versions this build does not
/// know) is therefore accepted (`ignore_missing`), not refused. See docs/operations.md.
static SQLITE_MIGRATOR: std::sync::LazyLock<sqlx::migrate::Migrator> = std::sync::LazyLock::new(|| {
    let mut m = sqlx::migrate!("./migrations/sqlite");
    m.set_ignore_missing(true);
    m
});
static PG_MIGRATOR: std::sync::LazyLock<sqlx::migrate::Migrator> = std::sync::LazyLock::new(|| {
    let mut m = sqlx::migrate!("./migrations/postgres");
    m.set_ignore_missing(true);
    m
});

/// Where a database stands against this build's migrations (`autodev migrate --check`).
#[derive(Clone, Debug, Default)]
pub struct MigrationStatus {
    /// Versions applied that this build knows.
    pub applied: Vec<i64>,
    /// This build's migrations the database lacks: (version, description).
    pub pending: Vec<(i64, String)>,
    /// Versions applied by a newer build (expand-only, so this build still works on them).
    pub newer: Vec<i64>,
}

/// Whether opening the store applies pending migrations or only checks there are none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Migrations {
    Apply,
    /// Refuse to open a database that needs migrations (`serve --no-migrate`).
    Check,
    /// Open the database as it is (`autodev migrate --check`, tests of upgrades).
    Leave,
}

/// A run insert waiting for the batch that commits it (see `Store::insert_run`).
pub(crate) struct PendingInsert {
    pub(crate) run: NewRun,
    pub(crate) created: EventKind,
    pub(crate) audit: Option<AuditEntry>,
    pub(crate) reply: tokio::sync::oneshot::Sender<Result<Event>>,
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
    fence: Option<Arc<fence::Fence>>,
    /// Rung when a run may have become claimable (made, released, its state changed): wakes
    /// this process's dispatcher at once (see `Store::queue_signal`).
    queue: Arc<tokio::sync::Notify>,
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
        let store = Self { db, inserts: Arc::default(), fence: None, queue: Arc::default() };
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
            Migrations::Leave => {}
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
        let store = Self { db: Db::Pg(pool.clone()), inserts: Arc::default(), fence: None, queue: Arc::default() };
        match migrations {
            Migrations::Apply => PG_MIGRATOR.run(&pool).await?,
            Migrations::Check => store.check_migrations().await?,
            Migrations::Leave => {}
        }
        Ok(store)
    }

    /// Applies pending migrations; returns the versions applied.
    pub async fn migrate(&self) -> Result<Vec<i64>> {
        let pending = self.pending_migrations().await?;
        match &self.db {
            Db::Sqlite { pool, .. } => self.migrator().run(pool).await?,
            Db::Pg(pool) => self.migrator().run(pool).await?,
        }
        Ok(pending)
    }

    /// Versions this build has that the database has not applied.
    pub async fn pending_migrations(&self) -> Result<Vec<i64>> {
        Ok(self.migration_status().await?.pending.into_iter().map(|(v, _)| v).collect())
    }

    fn migrator(&self) -> &'static sqlx::migrate::Migrator {
        match &self.db {
            Db::Sqlite { .. } => &SQLITE_MIGRATOR,
            Db::Pg(_) => &PG_MIGRATOR,
        }
    }

    /// The database's migrations against this build's.
    pub async fn migration_status(&self) -> Result<MigrationStatus> {
        // Before the first migration the bookkeeping table does not exist.
        let done: Vec<i64> = read!(self, |pool| {
            match sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success").fetch_all(pool).await {
                Ok(v) => v,
                Err(sqlx::Error::Database(_)) => Vec::new(),
                Err(e) => return Err(e.into()),
            }
        });
        let known: Vec<i64> = self.migrator().iter().map(|m| m.version).collect();
        Ok(MigrationStatus {
            applied: done.iter().copied().filter(|v| known.contains(v)).collect(),
            pending: self
                .migrator()
                .iter()
                .filter(|m| !done.contains(&m.version))
                .map(|m| (m.version, m.description.to_string()))
                .collect(),
            newer: done.iter().copied().filter(|v| !known.contains(v)).collect(),
        })
    }

    /// Applies this build's migrations up to and including `version` only (tests of rolling
    /// upgrades: a database as the previous release left it).
    pub async fn migrate_to(&self, version: i64) -> Result<()> {
        match &self.db {
            Db::Sqlite { pool, .. } => self.migrator().run_to(version, pool).await?,
            Db::Pg(pool) => self.migrator().run_to(version, pool).await?,
        }
        Ok(())
    }

    async fn check_migrations(&self) -> Result<()> {
        let pending = self.pending_migrations().await?;
        if pending.is_empty() { Ok(()) } else { Err(StoreError::Pending(pending)) }
    }

    /// A consistent copy of the SQLite database at `dest` while it is in use (`VACUUM INTO`: one
    /// read transaction, so writers go on, WAL included, compacted). PostgreSQL databases are
    /// copied with `pg_dump` instead (see `autodev backup`).
    pub async fn snapshot_sqlite(&self, dest: &Path) -> Result<()> {
        let Db::Sqlite { pool, .. } = &self.db else {
            return Err(StoreError::Url("snapshot_sqlite: this store is not SQLite".into()));
        };
        let dest = dest.to_str().ok_or_else(|| StoreError::Url(format!("{}: not UTF-8", dest.display())))?;
        sqlx::query("VACUUM INTO $1").bind(dest).execute(pool).await?;
        Ok(())
    }

    /// Counts of what matters in a backup: projects, API keys, runs, events.
    pub async fn inventory(&self) -> Result<(i64, i64, i64, i64)> {
        let count = |sql: &'static str| async move {
            let n: i64 = read!(self, |pool| sqlx::query_scalar(sql).fetch_one(pool).await?);
            Ok::<i64, StoreError>(n)
        };
        Ok((
            count("SELECT COUNT(*) FROM projects").await?,
            count("SELECT COUNT(*) FROM api_keys").await?,
            count("SELECT COUNT(*) FROM runs").await?,
            count("SELECT COUNT(*) FROM events").await?,
        ))
    }

    /// What a dispatcher waits on between claims: rung in this process whenever a run may have
    /// become claimable, and on PostgreSQL also when another process says so
    /// (`NOTIFY autodev_queue`, followed by `listen_queue`).
    pub fn queue_signal(&self) -> Arc<tokio::sync::Notify> {
        self.queue.clone()
    }

    /// Rings the queue signal here, and on PostgreSQL in every process listening.
    pub(crate) async fn ring_queue(&self) {
        self.queue.notify_one();
        if let Db::Pg(pool) = &self.db
            && let Err(e) = sqlx::query("SELECT pg_notify('autodev_queue', '')").execute(pool).await
        {
            tracing::debug!(error = %e, "could not notify other processes of the queue");
        }
    }

    /// On PostgreSQL, rings this process's queue signal whenever another process notifies
    /// `autodev_queue`, until `shutdown` (reconnecting after errors). On SQLite it returns at
    /// once: processes sharing a SQLite file poll.
    pub async fn listen_queue(&self, shutdown: tokio_util::sync::CancellationToken) {
        let Db::Pg(pool) = &self.db else { return };
        while !shutdown.is_cancelled() {
            let mut listener = match sqlx::postgres::PgListener::connect_with(pool).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for queue notifications; polling meanwhile");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(5)) => continue,
                        _ = shutdown.cancelled() => return,
                    }
                }
            };
            if let Err(e) = listener.listen("autodev_queue").await {
                tracing::warn!(error = %e, "cannot LISTEN autodev_queue; polling meanwhile");
                continue;
            }
            loop {
                tokio::select! {
                    got = listener.recv() => match got {
                        Ok(_) => self.queue.notify_one(),
                        Err(e) => {
                            tracing::warn!(error = %e, "queue notifications interrupted; reconnecting");
                            break;
                        }
                    },
                    _ = shutdown.cancelled() => return,
                }
            }
        }
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
}

pub(crate) mod artifacts;
pub(crate) mod budget;
pub(crate) mod conversations;
pub(crate) mod fence;
pub(crate) mod gates;
pub(crate) mod keys;
pub(crate) mod lease;
pub(crate) mod outbox;
pub(crate) mod projects;
pub(crate) mod receipts;
pub(crate) mod retention;
pub(crate) mod runs;
pub(crate) mod sessions;
pub(crate) mod tasks;
pub(crate) mod timeline;
pub(crate) mod usage;
