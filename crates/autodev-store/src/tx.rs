//! One write transaction, on either backend.
//!
//! Every write method in [`crate::Store`] is written once against [`Tx`]; the SQL is written
//! once, with `$N` placeholders, in the subset SQLite and PostgreSQL share.
//!
//! On SQLite a `Tx` is the one writer connection, taken from an async mutex, with
//! `BEGIN IMMEDIATE` sent on it; statements run in the calling thread through rusqlite with
//! cached statements. Why not sqlx there: sqlx drives SQLite from a worker thread and every
//! statement result crosses threads (~40 µs a crossing on a 2-core VM, ~300 µs per recorded
//! agent step); and a sqlx transaction holds SQLite's write lock while the task yields, so a
//! tokio worker blocked waiting for that lock could starve the very task that holds it (seen
//! with 50 concurrent runs: `database is locked` after the busy timeout). The SQLite methods
//! here are `async` only to share their signature with PostgreSQL: they never suspend, so the
//! write lock is never held while the task yields. sqlx still runs the migrations and the
//! reads (WAL readers never block the writer). Both use the same libsqlite3.
//!
//! On PostgreSQL a `Tx` is a sqlx transaction from the pool.
use std::borrow::Cow;

use autodev_domain::{Event, EventKind};
use rusqlite::OptionalExtension;
use sqlx::{PgPool, Postgres};

use crate::Result;
use crate::StoreError;
use crate::clock::now_ms;

/// A bound value. The few types the schema uses, so one list of arguments serves both
/// drivers.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Arg<'a> {
    Text(&'a str),
    OptText(Option<&'a str>),
    Int(i64),
    OptInt(Option<i64>),
    Bool(bool),
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(v: &'a str) -> Self {
        Arg::Text(v)
    }
}
impl<'a> From<&'a String> for Arg<'a> {
    fn from(v: &'a String) -> Self {
        Arg::Text(v)
    }
}
impl<'a> From<Option<&'a str>> for Arg<'a> {
    fn from(v: Option<&'a str>) -> Self {
        Arg::OptText(v)
    }
}
impl From<i64> for Arg<'_> {
    fn from(v: i64) -> Self {
        Arg::Int(v)
    }
}
impl From<u32> for Arg<'_> {
    fn from(v: u32) -> Self {
        Arg::Int(i64::from(v))
    }
}
impl From<Option<i64>> for Arg<'_> {
    fn from(v: Option<i64>) -> Self {
        Arg::OptInt(v)
    }
}
impl From<bool> for Arg<'_> {
    fn from(v: bool) -> Self {
        Arg::Bool(v)
    }
}

impl rusqlite::ToSql for Arg<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, Value, ValueRef};
        Ok(match *self {
            Arg::Text(s) | Arg::OptText(Some(s)) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Arg::Int(i) | Arg::OptInt(Some(i)) => ToSqlOutput::Owned(Value::Integer(i)),
            Arg::Bool(b) => ToSqlOutput::Owned(Value::Integer(i64::from(b))),
            Arg::OptText(None) | Arg::OptInt(None) => ToSqlOutput::Owned(Value::Null),
        })
    }
}

/// `$N` placeholders as SQLite's `?N` (the same numbered parameter; rusqlite binds `$N` by
/// name, in order of first appearance, which would silently swap reordered arguments).
fn lite(sql: &str) -> Cow<'_, str> {
    if sql.contains('$') { Cow::Owned(sql.replace('$', "?")) } else { Cow::Borrowed(sql) }
}

/// A row type both drivers can read: sqlx's `FromRow` for PostgreSQL, a mapping by column
/// position for rusqlite.
pub(crate) trait Record: Sized + Send + Unpin + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> {
    fn from_lite(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self>;
}

/// SQLite connections for reads, used in the calling thread like the writer (see the module
/// docs: a sqlx-sqlite read sends every row across threads, ~40 µs each, which made a page
/// of 50 runs cost 2 ms). WAL readers never wait for the writer. Idle connections are kept
/// for reuse; more are opened when all are busy.
/// Turns off SQLite's memory statistics, which take a process-wide mutex on every
/// allocation SQLite makes; with several threads reading, that lock showed up in profiles of
/// the API. It must happen before SQLite initialises; later it is refused and changes
/// nothing, which is harmless.
pub(crate) fn tune_sqlite_once() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: sqlite3_config is called once, before this process opens any SQLite
        // connection (Store::open_sqlite calls this first); called later, SQLite returns
        // SQLITE_MISUSE and changes nothing.
        unsafe {
            rusqlite::ffi::sqlite3_config(rusqlite::ffi::SQLITE_CONFIG_MEMSTATUS, 0 as std::ffi::c_int);
        }
    });
}

pub(crate) struct Readers {
    path: std::path::PathBuf,
    idle: std::sync::Mutex<Vec<rusqlite::Connection>>,
}

impl Readers {
    pub(crate) fn new(path: &std::path::Path) -> Self {
        Self { path: path.to_path_buf(), idle: std::sync::Mutex::new(Vec::new()) }
    }

    fn open(&self) -> Result<rusqlite::Connection> {
        let conn = rusqlite::Connection::open_with_flags(
            &self.path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        // Pages are read through a memory map rather than copied in by read(2).
        conn.pragma_update(None, "mmap_size", 256 * 1024 * 1024)?;
        // Plans that do not depend on bound values. Without this, SQLite recompiles a
        // statement whenever a value its planner looked at is bound again (the listing's
        // `CAST($1 AS TEXT) IS NULL` filters): a full re-parse on every request, seen in
        // profiles under `sqlite3_step → sqlite3Reprepare`.
        conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
        conn.set_prepared_statement_cache_capacity(32);
        Ok(conn)
    }

    /// Runs `f` on an idle reader connection (opening one when all are busy) and gives the
    /// connection back.
    fn with_conn<T>(&self, f: impl FnOnce(&rusqlite::Connection) -> Result<T>) -> Result<T> {
        let taken = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let conn = match taken {
            Some(conn) => conn,
            None => self.open()?,
        };
        let result = f(&conn);
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < 16
        {
            idle.push(conn);
        }
        result
    }

    /// Calls `f` with each row, borrowed (no copy of its text) until the next row is read.
    pub(crate) fn visit(
        &self,
        sql: &str,
        args: &[Arg<'_>],
        mut f: impl FnMut(&rusqlite::Row<'_>) -> Result<()>,
    ) -> Result<()> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(&lite(sql))?;
            let mut rows = stmt.query(rusqlite::params_from_iter(args.iter()))?;
            while let Some(row) = rows.next()? {
                f(row)?;
            }
            Ok(())
        })
    }

    pub(crate) fn fetch<T: Record>(&self, sql: &str, args: &[Arg<'_>]) -> Result<Vec<T>> {
        let mut out = Vec::new();
        self.visit(sql, args, |row| {
            out.push(T::from_lite(row)?);
            Ok(())
        })?;
        Ok(out)
    }
}

/// Binds every argument to a sqlx query (`Query` and `QueryAs` have no common trait for it).
macro_rules! bind_all {
    ($query:expr, $args:expr) => {{
        let mut q = $query;
        for a in $args {
            q = match *a {
                Arg::Text(s) => q.bind(s),
                Arg::OptText(s) => q.bind(s),
                Arg::Int(i) => q.bind(i),
                Arg::OptInt(i) => q.bind(i),
                Arg::Bool(b) => q.bind(b),
            };
        }
        q
    }};
}

fn pg_query<'q>(
    sql: &'q str,
    args: &[Arg<'q>],
) -> sqlx::query::Query<'q, Postgres, <Postgres as sqlx::Database>::Arguments> {
    bind_all!(sqlx::query(sqlx::AssertSqlSafe(sql)), args)
}

/// Runs a query on PostgreSQL into `T`.
pub(crate) async fn pg_fetch<T: Record>(pool: &PgPool, sql: &'static str, args: &[Arg<'_>]) -> Result<Vec<T>> {
    Ok(bind_all!(sqlx::query_as::<Postgres, T>(sqlx::AssertSqlSafe(sql)), args).fetch_all(pool).await?)
}

pub(crate) enum Tx<'s> {
    Lite(LiteTx<'s>),
    Pg(sqlx::Transaction<'static, Postgres>),
}

/// The writer connection inside `BEGIN IMMEDIATE`. Dropped without a commit (an error, or
/// the future dropped), it rolls back before the connection goes back to the mutex.
pub(crate) struct LiteTx<'s> {
    conn: tokio::sync::MutexGuard<'s, rusqlite::Connection>,
    open: bool,
}

impl Drop for LiteTx<'_> {
    fn drop(&mut self) {
        if self.open
            && let Err(e) = self.conn.execute_batch("ROLLBACK")
        {
            tracing::error!(error = %e, "could not roll back an SQLite transaction");
        }
    }
}

impl<'s> Tx<'s> {
    pub(crate) fn lite(conn: tokio::sync::MutexGuard<'s, rusqlite::Connection>) -> Result<Self> {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        Ok(Tx::Lite(LiteTx { conn, open: true }))
    }

    pub(crate) async fn pg(pool: &PgPool) -> Result<Tx<'static>> {
        Ok(Tx::Pg(pool.begin().await?))
    }

    /// Runs a statement; returns the number of rows it changed.
    pub(crate) async fn exec(&mut self, sql: &'static str, args: &[Arg<'_>]) -> Result<u64> {
        match self {
            Tx::Lite(LiteTx { conn, .. }) => {
                let n = conn.prepare_cached(&lite(sql))?.execute(rusqlite::params_from_iter(args.iter()))?;
                Ok(n as u64)
            }
            Tx::Pg(tx) => Ok(pg_query(sql, args).execute(&mut **tx).await?.rows_affected()),
        }
    }

    /// The first column of the first row, if there is a row.
    pub(crate) async fn opt_text(&mut self, sql: &'static str, args: &[Arg<'_>]) -> Result<Option<String>> {
        match self {
            Tx::Lite(LiteTx { conn, .. }) => Ok(conn
                .prepare_cached(&lite(sql))?
                .query_row(rusqlite::params_from_iter(args.iter()), |r| r.get(0))
                .optional()?),
            Tx::Pg(tx) => {
                use sqlx::Row;
                let row = pg_query(sql, args).fetch_optional(&mut **tx).await?;
                Ok(row.map(|r| r.try_get::<String, _>(0)).transpose()?)
            }
        }
    }

    /// The first column of every row, as text.
    pub(crate) async fn texts(&mut self, sql: &'static str, args: &[Arg<'_>]) -> Result<Vec<String>> {
        match self {
            Tx::Lite(LiteTx { conn, .. }) => {
                let mut stmt = conn.prepare_cached(&lite(sql))?;
                let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), |r| r.get(0))?;
                Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
            }
            Tx::Pg(tx) => {
                use sqlx::Row;
                let rows = pg_query(sql, args).fetch_all(&mut **tx).await?;
                Ok(rows.iter().map(|r| r.try_get::<String, _>(0)).collect::<std::result::Result<_, _>>()?)
            }
        }
    }

    /// The first column of the one row the statement returns, as an integer.
    pub(crate) async fn int(&mut self, sql: &'static str, args: &[Arg<'_>]) -> Result<i64> {
        match self {
            Tx::Lite(LiteTx { conn, .. }) => {
                Ok(conn.prepare_cached(&lite(sql))?.query_row(rusqlite::params_from_iter(args.iter()), |r| r.get(0))?)
            }
            Tx::Pg(tx) => {
                use sqlx::Row;
                Ok(pg_query(sql, args).fetch_one(&mut **tx).await?.try_get::<i64, _>(0)?)
            }
        }
    }

    /// Appends an event to the run's log.
    pub(crate) async fn event(&mut self, run_id: &str, kind: EventKind) -> Result<Event> {
        let at_ms = now_ms();
        let seq = self.event_raw(run_id, at_ms, kind.name(), &event_json(&kind)?).await?;
        if let Some(topic) = kind.topic() {
            self.notify(run_id, topic, at_ms, seq).await?;
        }
        Ok(Event { seq, run_id: run_id.to_string(), at_ms, kind })
    }

    /// Writes a milestone to the outbox in this transaction (once per run and topic).
    /// `seq` is the causing event's sequence number (milestones are delivered in its order).
    pub(crate) async fn notify(&mut self, run_id: &str, topic: &str, at_ms: i64, seq: i64) -> Result<()> {
        self.notify_as(&format!("{run_id}:{topic}"), run_id, topic, at_ms, seq).await
    }

    /// [`Tx::notify`] under an id of the caller's (a step that may happen once per key, not
    /// once per run: `<run id>:<topic>:<key>`).
    pub(crate) async fn notify_as(&mut self, id: &str, run_id: &str, topic: &str, at_ms: i64, seq: i64) -> Result<()> {
        self.exec(
            "INSERT INTO outbox (id, run_id, topic, seq, next_at, created_at) VALUES ($1, $2, $3, $4, $5, $5)
             ON CONFLICT (id) DO NOTHING",
            &[id.into(), run_id.into(), topic.into(), seq.into(), at_ms.into()],
        )
        .await?;
        Ok(())
    }

    /// Appends an event whose JSON is already made; returns its sequence number.
    ///
    /// Readers follow a run's log by sequence number, so within a run the numbers must become
    /// visible in order. SQLite has one writer, so they do. PostgreSQL hands out identity
    /// values before commit, and two transactions of one run (parallel tasks) could commit
    /// out of order, letting a follower skip an event for good; a transaction-scoped advisory
    /// lock per run, taken before the number is drawn, keeps one run's appends in order.
    pub(crate) async fn event_raw(&mut self, run_id: &str, at_ms: i64, kind: &str, data: &str) -> Result<i64> {
        if let Tx::Pg(tx) = self {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))").bind(run_id).execute(&mut **tx).await?;
        }
        self.int(
            "INSERT INTO events (run_id, at_ms, kind, data) VALUES ($1, $2, $3, $4) RETURNING seq",
            &[run_id.into(), at_ms.into(), kind.into(), data.into()],
        )
        .await
    }

    pub(crate) async fn commit(self) -> Result<()> {
        match self {
            Tx::Lite(mut lite) => {
                lite.conn.execute_batch("COMMIT")?;
                lite.open = false;
                Ok(())
            }
            Tx::Pg(tx) => Ok(tx.commit().await?),
        }
    }

    /// The PostgreSQL connection, for set-based statements only PostgreSQL has.
    pub(crate) fn pg_conn(&mut self) -> Option<&mut sqlx::PgConnection> {
        match self {
            Tx::Pg(tx) => Some(&mut **tx),
            Tx::Lite(_) => None,
        }
    }

    pub(crate) fn is_pg(&self) -> bool {
        matches!(self, Tx::Pg(_))
    }

    /// A run's state, read under a row lock on PostgreSQL (SQLite's one writer already
    /// serialises), so a check of it and the update that follows are one step.
    pub(crate) async fn run_state_locked(&mut self, run_id: &str) -> Result<autodev_domain::RunState> {
        let select = if self.is_pg() {
            "SELECT state FROM runs WHERE id = $1 FOR UPDATE"
        } else {
            "SELECT state FROM runs WHERE id = $1"
        };
        let state = self.opt_text(select, &[run_id.into()]).await?;
        let state = state.ok_or_else(|| StoreError::RunNotFound(run_id.to_string()))?;
        Ok(state.parse().unwrap_or(autodev_domain::RunState::Failed))
    }
}

/// An event's JSON as stored: its fields without the `type` tag (kept in its own column).
pub(crate) fn event_json(kind: &EventKind) -> Result<String> {
    let mut data = serde_json::to_value(kind)?;
    if let Some(obj) = data.as_object_mut() {
        obj.remove("type");
    }
    Ok(data.to_string())
}

/// A unique-constraint violation from either driver (a name taken by a concurrent insert).
pub(crate) fn is_unique_violation(e: &StoreError) -> bool {
    match e {
        StoreError::Db(sqlx::Error::Database(d)) => d.is_unique_violation(),
        StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => {
            f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
        }
        _ => false,
    }
}
