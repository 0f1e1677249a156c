//! The SQLite store.
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use autodev_domain::{Event, EventKind, RunState, TaskState};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use std::sync::{Arc, Mutex};

use rusqlite::OptionalExtension;
use sqlx::SqlitePool;

use crate::Result;
use crate::rows::{
    KeyRow, ModelCallRecord, NewRun, ProjectRow, RunRow, StoredModelCall, StoredToolCall, TaskRow, ToolStart,
};

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
    /// A thread panicked while holding the writer connection. Restart the process.
    #[error("the database connection was poisoned by a panic")]
    Poisoned,
}

impl StoreError {
    /// Whether SQLite refused because another connection held a lock (worth retrying).
    pub fn is_locked(&self) -> bool {
        let text = self.to_string();
        text.contains("database is locked") || text.contains("database is busy") || text.contains("(code: 5)")
    }
}

/// One row of the usage report. `project` is empty for runs started with `autodev run`.
#[derive(Clone, Debug, sqlx::FromRow, serde::Serialize)]
pub struct UsageRow {
    pub project: String,
    pub model: String,
    pub day: String,
    pub calls: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_micros: i64,
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

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
    /// The one connection that writes (see `Store::write`).
    hot: Arc<Mutex<rusqlite::Connection>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("pool", &self.pool).finish_non_exhaustive()
    }
}

const RUN_COLUMNS: &str = "id, short_id, title, spec, repo, base_branch, base_commit, branch, state, reason, settings, plan, repair_round, test_passed, input_tokens, output_tokens, cost_micros, lease_owner, lease_until, created_at, updated_at, finished_at";

/// A `SELECT` of every run column with a constant tail. Only `&'static str` tails are
/// accepted, so no user input can reach the SQL text.
fn run_sql(tail: &'static str) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(format!("SELECT {RUN_COLUMNS} FROM runs {tail}"))
}

impl Store {
    /// Opens (creating if needed) the database file and applies migrations. Several
    /// processes opening a new database at once race in the migrations, and SQLite answers
    /// "database is locked" at once rather than waiting; that is retried for a few seconds.
    pub async fn open(path: &Path) -> Result<Self> {
        use backon::{ExponentialBuilder, Retryable};
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(20))
            .with_max_delay(Duration::from_millis(500))
            .with_max_times(20)
            .with_jitter();
        (|| Self::open_once(path)).retry(backoff).when(StoreError::is_locked).await
    }

    async fn open_once(path: &Path) -> Result<Self> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| StoreError::Db(sqlx::Error::Io(e)))?;
        }
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new().max_connections(4).min_connections(1).connect_with(options).await?;
        // sqlx's SQLite migrator takes no lock: two processes starting on a new database would
        // both apply migration 1. An OS file lock beside the database serialises them.
        let lock_path = path.with_extension("migrate.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StoreError::Db(sqlx::Error::Io(e)))?;
        let lock = tokio::task::spawn_blocking(move || lock.lock().map(|()| lock))
            .await
            .map_err(|e| StoreError::Db(sqlx::Error::Io(std::io::Error::other(e))))?
            .map_err(|e| StoreError::Db(sqlx::Error::Io(e)))?;
        let migrated = MIGRATOR.run(&pool).await;
        drop(lock);
        migrated?;
        let hot = rusqlite::Connection::open(path)?;
        hot.busy_timeout(Duration::from_secs(10))?;
        hot.pragma_update(None, "synchronous", "NORMAL")?;
        hot.pragma_update(None, "foreign_keys", "ON")?;
        hot.set_prepared_statement_cache_capacity(64);
        Ok(Self { pool, hot: Arc::new(Mutex::new(hot)) })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Appends an event inside a hot-path transaction.
    fn append(tx: &rusqlite::Transaction<'_>, run_id: &str, kind: EventKind) -> Result<Event> {
        let at_ms = now_ms();
        let seq = Self::insert_event(tx, run_id, at_ms, kind.name(), &Self::event_json(&kind)?)?;
        Ok(Event { seq, run_id: run_id.to_string(), at_ms, kind })
    }

    /// Appends one event on its own.
    pub async fn append_event(&self, run_id: &str, kind: EventKind) -> Result<Event> {
        self.write(|tx| Self::append(tx, run_id, kind))
    }

    /// Events of a run after `after_seq`, oldest first.
    pub async fn events(&self, run_id: &str, after_seq: i64) -> Result<Vec<Event>> {
        let rows: Vec<(i64, i64, String, String)> =
            sqlx::query_as("SELECT seq, at_ms, kind, data FROM events WHERE run_id = $1 AND seq > $2 ORDER BY seq")
                .bind(run_id)
                .bind(after_seq)
                .fetch_all(&self.pool)
                .await?;
        let mut out = Vec::with_capacity(rows.len());
        for (seq, at_ms, kind, data) in rows {
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

    pub async fn insert_run(&self, run: &NewRun, created: EventKind) -> Result<Event> {
        let now = now_ms();
        self.write(|tx| {
            tx.prepare_cached(
                "INSERT INTO runs (id, short_id, title, spec, repo, base_branch, base_commit, branch, state, settings, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11)",
            )?
            .execute(rusqlite::params![
                run.id,
                run.short_id,
                run.title,
                run.spec,
                run.repo,
                run.base_branch,
                run.base_commit,
                run.branch,
                RunState::Queued.as_str(),
                run.settings,
                now
            ])?;
            Self::append(tx, &run.id, created)
        })
    }

    pub async fn get_run(&self, id: &str) -> Result<RunRow> {
        sqlx::query_as::<_, RunRow>(run_sql("WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::RunNotFound(id.to_string()))
    }

    /// Finds a run by full id, short id, or a unique prefix of either.
    pub async fn find_run(&self, key: &str) -> Result<RunRow> {
        let key = key.trim();
        if key.is_empty() {
            return Err(StoreError::RunNotFound(key.to_string()));
        }
        let pattern = format!("{}%", key.replace(['%', '_'], ""));
        let rows = sqlx::query_as::<_, RunRow>(run_sql(
            "WHERE id = $1 OR short_id = $1 OR id LIKE $2 OR short_id LIKE $2 LIMIT 2",
        ))
        .bind(key)
        .bind(&pattern)
        .fetch_all(&self.pool)
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

    /// A page of runs, newest first, optionally in one state, strictly before the cursor
    /// `(created_at, id)`.
    pub async fn list_runs_page(
        &self,
        state: Option<RunState>,
        limit: i64,
        before: Option<(i64, String)>,
    ) -> Result<Vec<RunRow>> {
        let (at, id) = before.unwrap_or((i64::MAX, String::new()));
        let has_cursor = at != i64::MAX;
        Ok(sqlx::query_as::<_, RunRow>(run_sql(
            "WHERE ($1 IS NULL OR state = $1) AND (NOT $2 OR created_at < $3 OR (created_at = $3 AND id < $4))
             ORDER BY created_at DESC, id DESC LIMIT $5",
        ))
        .bind(state.map(RunState::as_str))
        .bind(has_cursor)
        .bind(at)
        .bind(id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Runs, newest first.
    pub async fn list_runs(&self, limit: i64) -> Result<Vec<RunRow>> {
        Ok(sqlx::query_as::<_, RunRow>(run_sql("ORDER BY created_at DESC, id DESC LIMIT $1"))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Moves a run to `to` if the lifecycle allows it from its current state, recording the
    /// change as an event in the same transaction. Returns `None` when it is already there.
    pub async fn set_run_state(&self, run_id: &str, to: RunState, reason: Option<&str>) -> Result<Option<Event>> {
        self.write(|tx| {
            let current: Option<String> = tx
                .prepare_cached("SELECT state FROM runs WHERE id = ?1")?
                .query_row([run_id], |r| r.get(0))
                .optional()?;
            let current = current.ok_or_else(|| StoreError::RunNotFound(run_id.to_string()))?;
            let from: RunState = current.parse().unwrap_or(RunState::Failed);
            if from == to {
                return Ok(None);
            }
            if !from.can_become(to) {
                return Err(StoreError::Transition { run: run_id.to_string(), from, to });
            }
            let now = now_ms();
            let finished = to.is_terminal().then_some(now);
            tx.prepare_cached(
                "UPDATE runs SET state = ?1, reason = COALESCE(?2, reason), updated_at = ?3, finished_at = COALESCE(?4, finished_at) WHERE id = ?5",
            )?
            .execute(rusqlite::params![to.as_str(), reason, now, finished, run_id])?;
            let kind = EventKind::StateChanged { from, to, reason: reason.map(str::to_string) };
            Self::append(tx, run_id, kind).map(Some)
        })
    }

    /// Stores the accepted plan and its tasks (all `pending`), with the event.
    pub async fn set_plan(&self, run_id: &str, plan: &autodev_domain::Plan, accepted: EventKind) -> Result<Event> {
        let now = now_ms();
        let plan_json = serde_json::to_string(plan)?;
        self.write(|tx| {
            tx.prepare_cached("UPDATE runs SET plan = ?1, updated_at = ?2 WHERE id = ?3")?
                .execute(rusqlite::params![plan_json, now, run_id])?;
            for (i, t) in plan.tasks.iter().enumerate() {
                tx.prepare_cached(
                    "INSERT INTO tasks (run_id, task_key, position, title, description, depends_on, acceptance, state, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (run_id, task_key) DO NOTHING",
                )?
                .execute(rusqlite::params![
                    run_id,
                    t.id,
                    i as i64,
                    t.title,
                    t.description,
                    serde_json::to_string(&t.depends_on)?,
                    serde_json::to_string(&t.acceptance)?,
                    TaskState::Pending.as_str(),
                    now
                ])?;
            }
            Self::append(tx, run_id, accepted)
        })
    }

    pub async fn tasks(&self, run_id: &str) -> Result<Vec<TaskRow>> {
        Ok(sqlx::query_as::<_, TaskRow>(
            "SELECT run_id, task_key, position, title, description, depends_on, acceptance, state, reason, summary, commit_sha, updated_at
             FROM tasks WHERE run_id = $1 ORDER BY position",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?)
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
        self.write(|tx| {
            tx.prepare_cached(
                "UPDATE tasks SET state = ?1, reason = COALESCE(?2, reason), summary = COALESCE(?3, summary), updated_at = ?4 WHERE run_id = ?5 AND task_key = ?6",
            )?
            .execute(rusqlite::params![state.as_str(), reason, summary, now_ms(), run_id, task])?;
            let kind = EventKind::TaskStateChanged { task: task.to_string(), state, reason: reason.map(str::to_string) };
            Self::append(tx, run_id, kind)
        })
    }

    pub async fn set_task_commit(&self, run_id: &str, task: &str, commit: &str) -> Result<Event> {
        self.write(|tx| {
            tx.prepare_cached("UPDATE tasks SET commit_sha = ?1, updated_at = ?2 WHERE run_id = ?3 AND task_key = ?4")?
                .execute(rusqlite::params![commit, now_ms(), run_id, task])?;
            Self::append(tx, run_id, EventKind::TaskCommitted { task: task.to_string(), commit: commit.to_string() })
        })
    }

    pub async fn set_repair_round(&self, run_id: &str, round: u32) -> Result<()> {
        self.write(|tx| {
            tx.prepare_cached("UPDATE runs SET repair_round = ?1, updated_at = ?2 WHERE id = ?3")?
                .execute(rusqlite::params![round, now_ms(), run_id])?;
            Ok(())
        })
    }

    /// Records a test run's outcome on the run, with the event.
    pub async fn record_test_run(&self, run_id: &str, passed: bool, event: EventKind) -> Result<Event> {
        self.write(|tx| {
            tx.prepare_cached("UPDATE runs SET test_passed = ?1, updated_at = ?2 WHERE id = ?3")?
                .execute(rusqlite::params![passed, now_ms(), run_id])?;
            Self::append(tx, run_id, event)
        })
    }

    /// Stores the fixed start of a conversation; a second call keeps the first.
    pub async fn put_conversation(&self, run_id: &str, conversation: &str, header: &str) -> Result<String> {
        self.write(|tx| {
            tx.prepare_cached(
                "INSERT INTO conversations (run_id, conversation, header, created_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (run_id, conversation) DO NOTHING",
            )?
            .execute(rusqlite::params![run_id, conversation, header, now_ms()])?;
            Ok(tx
                .prepare_cached("SELECT header FROM conversations WHERE run_id = ?1 AND conversation = ?2")?
                .query_row([run_id, conversation], |r| r.get(0))?)
        })
    }

    pub async fn conversation_exists(&self, run_id: &str, conversation: &str) -> Result<bool> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM conversations WHERE run_id = $1 AND conversation = $2")
            .bind(run_id)
            .bind(conversation)
            .fetch_one(&self.pool)
            .await?;
        Ok(n > 0)
    }

    pub async fn model_calls(&self, run_id: &str, conversation: &str) -> Result<Vec<StoredModelCall>> {
        Ok(sqlx::query_as::<_, StoredModelCall>(
            "SELECT turn, provider, model, response, input_tokens, output_tokens, cost_micros, latency_ms
             FROM model_calls WHERE run_id = $1 AND conversation = $2 ORDER BY turn",
        )
        .bind(run_id)
        .bind(conversation)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn tool_calls(&self, run_id: &str, conversation: &str) -> Result<Vec<StoredToolCall>> {
        Ok(sqlx::query_as::<_, StoredToolCall>(
            "SELECT turn, idx, call_id, name, arguments, status, result, is_error
             FROM tool_calls WHERE run_id = $1 AND conversation = $2 ORDER BY turn, idx",
        )
        .bind(run_id)
        .bind(conversation)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Runs `f` in an immediate write transaction on the writer connection.
    ///
    /// Every write goes through this one rusqlite connection, in the calling thread, under a
    /// mutex, and never across an `.await`. Why not sqlx: sqlx drives SQLite from a worker
    /// thread and every statement result crosses threads (~40 µs a crossing on a 2-core VM,
    /// ~300 µs per recorded agent step); and a sqlx transaction holds SQLite's write lock
    /// across awaits, so a tokio worker blocked waiting for that lock could starve the very
    /// task that holds it (seen with 50 concurrent runs: `database is locked` after the busy
    /// timeout). Here a write takes tens of microseconds and the lock is never held while
    /// yielding. sqlx still runs the migrations and the reads (WAL readers never block the
    /// writer). Both use the same libsqlite3.
    fn write<T>(&self, f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.hot.lock().map_err(|_| StoreError::Poisoned)?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    fn event_json(kind: &EventKind) -> Result<String> {
        let mut data = serde_json::to_value(kind)?;
        if let Some(obj) = data.as_object_mut() {
            obj.remove("type");
        }
        Ok(data.to_string())
    }

    fn insert_event(
        tx: &rusqlite::Transaction<'_>,
        run_id: &str,
        at_ms: i64,
        kind: &str,
        data: &str,
    ) -> rusqlite::Result<i64> {
        tx.prepare_cached("INSERT INTO events (run_id, at_ms, kind, data) VALUES (?1, ?2, ?3, ?4) RETURNING seq")?
            .query_row(rusqlite::params![run_id, at_ms, kind, data], |r| r.get(0))
    }

    fn insert_tool_start(
        tx: &rusqlite::Transaction<'_>,
        run_id: &str,
        conversation: &str,
        turn: u32,
        start: &ToolStart<'_>,
        at_ms: i64,
    ) -> rusqlite::Result<usize> {
        tx.prepare_cached(
            "INSERT INTO tool_calls (run_id, conversation, turn, idx, call_id, name, arguments, status, started_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'started', ?8)
             ON CONFLICT (run_id, conversation, turn, idx) DO UPDATE SET started_at = excluded.started_at",
        )?
        .execute(rusqlite::params![
            run_id,
            conversation,
            turn,
            start.idx,
            start.call_id,
            start.name,
            start.arguments,
            at_ms
        ])
    }

    /// Persists a model reply before anything acts on it — the call, the run's running
    /// totals and the `model_call` event — and, when given, marks the reply's first tool call
    /// as started (with its `agent_step` event), all in one transaction.
    pub async fn record_model_call(
        &self,
        rec: &ModelCallRecord<'_>,
        first_tool: Option<&ToolStart<'_>>,
    ) -> Result<Vec<Event>> {
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
        let call_json = Self::event_json(&call_event)?;
        let step_event = first_tool.map(|t| EventKind::AgentStep {
            conversation: rec.conversation.to_string(),
            turn: rec.turn,
            tool: t.name.to_string(),
            target: t.target.to_string(),
        });
        let step_json = step_event.as_ref().map(Self::event_json).transpose()?;
        let seqs = self.write(|tx| {
            tx.prepare_cached(
                "INSERT INTO model_calls (run_id, conversation, turn, provider, model, response, input_tokens, output_tokens, cost_micros, latency_ms, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?
            .execute(rusqlite::params![
                rec.run_id,
                rec.conversation,
                rec.turn,
                rec.provider,
                rec.model,
                rec.response_json,
                rec.input_tokens as i64,
                rec.output_tokens as i64,
                rec.cost_micros,
                rec.latency_ms as i64,
                now
            ])?;
            tx.prepare_cached(
                "UPDATE runs SET input_tokens = input_tokens + ?1, output_tokens = output_tokens + ?2, cost_micros = cost_micros + ?3 WHERE id = ?4",
            )?
            .execute(rusqlite::params![rec.input_tokens as i64, rec.output_tokens as i64, rec.cost_micros, rec.run_id])?;
            let mut seqs = vec![Self::insert_event(tx, rec.run_id, now, "model_call", &call_json)?];
            if let (Some(start), Some(step)) = (first_tool, step_json.as_deref()) {
                Self::insert_tool_start(tx, rec.run_id, rec.conversation, rec.turn, start, now)?;
                seqs.push(Self::insert_event(tx, rec.run_id, now, "agent_step", step)?);
            }
            Ok(seqs)
        })?;
        let mut events = vec![call_event];
        events.extend(step_event);
        Ok(seqs
            .into_iter()
            .zip(events)
            .map(|(seq, kind)| Event { seq, run_id: rec.run_id.to_string(), at_ms: now, kind })
            .collect())
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
        let data = Self::event_json(&kind)?;
        let seq = self.write(|tx| {
            Self::insert_tool_start(tx, run_id, conversation, turn, start, now)?;
            Ok(Self::insert_event(tx, run_id, now, "agent_step", &data)?)
        })?;
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
        let data = Self::event_json(&kind)?;
        let seq = self.write(|tx| {
            tx.prepare_cached(
                "UPDATE tool_calls SET status = 'finished', result = ?1, is_error = ?2, finished_at = ?3
                 WHERE run_id = ?4 AND conversation = ?5 AND turn = ?6 AND idx = ?7",
            )?
            .execute(rusqlite::params![result, is_error, now, run_id, conversation, turn, idx])?;
            Ok(Self::insert_event(tx, run_id, now, "tool_finished", &data)?)
        })?;
        Ok(Event { seq, run_id: run_id.to_string(), at_ms: now, kind })
    }

    /// Takes the run's lease for `owner` for `ttl`, unless another owner holds an unexpired
    /// one and `force` is false (the caller sets `force` after checking the holder is dead).
    pub async fn claim_run(&self, run_id: &str, owner: &str, ttl: Duration, force: bool) -> Result<()> {
        let now = now_ms();
        let until = now + ttl.as_millis() as i64;
        let updated = self.write(|tx| {
            Ok(tx
                .prepare_cached(
                    "UPDATE runs SET lease_owner = ?1, lease_until = ?2
                     WHERE id = ?3 AND (?4 OR lease_owner IS NULL OR lease_owner = ?1 OR lease_until < ?5)",
                )?
                .execute(rusqlite::params![owner, until, run_id, force, now])?)
        })?;
        if updated == 1 {
            return Ok(());
        }
        let run = self.get_run(run_id).await?;
        Err(StoreError::Leased { run: run_id.to_string(), owner: run.lease_owner.unwrap_or_default() })
    }

    pub async fn release_run(&self, run_id: &str, owner: &str) -> Result<()> {
        self.write(|tx| {
            tx.prepare_cached(
                "UPDATE runs SET lease_owner = NULL, lease_until = 0 WHERE id = ?1 AND lease_owner = ?2",
            )?
            .execute([run_id, owner])?;
            Ok(())
        })
    }

    /// Stores a new API key (its hash only). A name already in use is refused.
    pub async fn insert_key(&self, key: &KeyRow) -> Result<()> {
        self.write(|tx| {
            let taken: Option<String> = tx
                .prepare_cached("SELECT id FROM api_keys WHERE name = ?1")?
                .query_row([&key.name], |r| r.get(0))
                .optional()?;
            if taken.is_some() {
                return Err(StoreError::Conflict(format!(
                    "a key named `{}` exists; pick another name or revoke it",
                    key.name
                )));
            }
            tx.prepare_cached(
                "INSERT INTO api_keys (id, name, role, prefix, hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(rusqlite::params![
                key.id,
                key.name,
                key.role,
                key.prefix,
                key.hash,
                key.created_at
            ])?;
            Ok(())
        })
    }

    pub async fn list_keys(&self) -> Result<Vec<KeyRow>> {
        Ok(sqlx::query_as::<_, KeyRow>(
            "SELECT id, name, role, prefix, hash, created_at, last_used_at, revoked_at FROM api_keys ORDER BY created_at, name",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// The active (not revoked) key with this hash.
    pub async fn key_by_hash(&self, hash: &str) -> Result<Option<KeyRow>> {
        Ok(sqlx::query_as::<_, KeyRow>(
            "SELECT id, name, role, prefix, hash, created_at, last_used_at, revoked_at FROM api_keys WHERE hash = $1 AND revoked_at IS NULL",
        )
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Revokes a key by id or name; returns whether one was revoked now.
    pub async fn revoke_key(&self, id_or_name: &str) -> Result<bool> {
        let now = now_ms();
        let n = self.write(|tx| {
            Ok(tx
                .prepare_cached(
                    "UPDATE api_keys SET revoked_at = ?1 WHERE (id = ?2 OR name = ?2) AND revoked_at IS NULL",
                )?
                .execute(rusqlite::params![now, id_or_name])?)
        })?;
        Ok(n > 0)
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
        let now = now_ms();
        self.write(|tx| {
            tx.prepare_cached(
                "INSERT INTO audit_log (at_ms, key_id, key_name, method, path, status, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(rusqlite::params![
                now,
                key.map(|k| k.id.as_str()),
                key.map(|k| k.name.as_str()),
                method,
                path,
                status,
                detail
            ])?;
            Ok(())
        })
    }

    pub async fn insert_project(&self, p: &ProjectRow) -> Result<()> {
        self.write(|tx| {
            let taken: Option<String> =
                tx.prepare_cached("SELECT id FROM projects WHERE name = ?1")?.query_row([&p.name], |r| r.get(0)).optional()?;
            if taken.is_some() {
                return Err(StoreError::Conflict(format!("a project named `{}` exists", p.name)));
            }
            tx.prepare_cached(
                "INSERT INTO projects (id, name, repository, base_branch, test_command, settings, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
            )?
            .execute(rusqlite::params![p.id, p.name, p.repository, p.base_branch, p.test_command, p.settings, p.created_at])?;
            Ok(())
        })
    }

    /// Replaces a project's settable fields (name, repository, base branch, test command,
    /// settings).
    pub async fn update_project(&self, p: &ProjectRow) -> Result<()> {
        let n = self.write(|tx| {
            let clash: Option<String> = tx
                .prepare_cached("SELECT id FROM projects WHERE name = ?1 AND id <> ?2")?
                .query_row([&p.name, &p.id], |r| r.get(0))
                .optional()?;
            if clash.is_some() {
                return Err(StoreError::Conflict(format!("a project named `{}` exists", p.name)));
            }
            Ok(tx
                .prepare_cached(
                    "UPDATE projects SET name = ?1, repository = ?2, base_branch = ?3, test_command = ?4, settings = ?5, updated_at = ?6 WHERE id = ?7",
                )?
                .execute(rusqlite::params![p.name, p.repository, p.base_branch, p.test_command, p.settings, now_ms(), p.id])?)
        })?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("no project `{}`", p.id)));
        }
        Ok(())
    }

    pub async fn delete_project(&self, id: &str) -> Result<bool> {
        Ok(self.write(|tx| Ok(tx.prepare_cached("DELETE FROM projects WHERE id = ?1")?.execute([id])?))? > 0)
    }

    pub async fn list_projects(&self) -> Result<Vec<ProjectRow>> {
        Ok(sqlx::query_as::<_, ProjectRow>(
            "SELECT id, name, repository, base_branch, test_command, settings, created_at, updated_at FROM projects ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// A project by id or name.
    pub async fn find_project(&self, key: &str) -> Result<ProjectRow> {
        sqlx::query_as::<_, ProjectRow>(
            "SELECT id, name, repository, base_branch, test_command, settings, created_at, updated_at FROM projects WHERE id = $1 OR name = $1",
        )
        .bind(key)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("no project `{key}`")))
    }

    /// Ties a run to its project.
    pub async fn set_run_project(&self, run_id: &str, project_id: &str) -> Result<()> {
        self.write(|tx| {
            tx.prepare_cached("UPDATE runs SET project_id = ?1 WHERE id = ?2")?.execute([project_id, run_id])?;
            Ok(())
        })
    }

    /// Claims the oldest API-made run (one with a project) that needs a worker: queued, or
    /// left unfinished by a worker whose lease expired (crashed). Runs waiting for approval
    /// are not claimed, nor runs started with `autodev run`, which their own process drives
    /// (and which Ctrl-C leaves paused, not up for grabs). SQLite has
    /// one writer, so the select-and-update is atomic under the writer's transaction.
    pub async fn claim_next_run(&self, owner: &str, ttl: Duration) -> Result<Option<String>> {
        let now = now_ms();
        let until = now + ttl.as_millis() as i64;
        self.write(|tx| {
            let id: Option<String> = tx
                .prepare_cached(
                    "SELECT id FROM runs
                     WHERE state NOT IN ('succeeded', 'failed', 'cancelled', 'awaiting_approval')
                       AND project_id IS NOT NULL
                       AND (lease_owner IS NULL OR lease_until < ?1)
                     ORDER BY created_at, id LIMIT 1",
                )?
                .query_row([now], |r| r.get(0))
                .optional()?;
            if let Some(id) = &id {
                tx.prepare_cached("UPDATE runs SET lease_owner = ?1, lease_until = ?2 WHERE id = ?3")?
                    .execute(rusqlite::params![owner, until, id])?;
            }
            Ok(id)
        })
    }

    /// Tokens and cost grouped by project, model and UTC day, newest day first. `since_ms`
    /// limits it to calls made from then on.
    pub async fn usage(&self, since_ms: i64) -> Result<Vec<UsageRow>> {
        Ok(sqlx::query_as::<_, UsageRow>(
            "SELECT COALESCE(p.name, '') AS project, mc.model AS model,
                    date(mc.created_at / 1000, 'unixepoch') AS day,
                    COUNT(*) AS calls, SUM(mc.input_tokens) AS input_tokens,
                    SUM(mc.output_tokens) AS output_tokens, SUM(mc.cost_micros) AS cost_micros
             FROM model_calls mc JOIN runs r ON r.id = mc.run_id
             LEFT JOIN projects p ON p.id = r.project_id
             WHERE mc.created_at >= $1
             GROUP BY 1, 2, 3 ORDER BY day DESC, project, model",
        )
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Counts for the metrics endpoint.
    pub async fn stats(&self) -> Result<Stats> {
        let runs_by_state: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, COUNT(*) FROM runs GROUP BY state").fetch_all(&self.pool).await?;
        let (queue_depth, oldest_queued_ms): (i64, Option<i64>) = sqlx::query_as(
            "SELECT COUNT(*), MIN(created_at) FROM runs WHERE state = 'queued' AND project_id IS NOT NULL",
        )
        .fetch_one(&self.pool)
        .await?;
        let running_tasks: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM tasks t JOIN runs r ON r.id = t.run_id
             WHERE t.state = 'running' AND r.state NOT IN ('succeeded', 'failed', 'cancelled')",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(Stats { runs_by_state, queue_depth, oldest_queued_ms, running_tasks })
    }

    /// How many requests the audit log holds.
    pub async fn audit_count(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM audit_log").fetch_one(&self.pool).await?)
    }

    /// The current state, cheaply (used to notice a cancel from another process).
    pub async fn run_state(&self, run_id: &str) -> Result<RunState> {
        let s: String = sqlx::query_scalar("SELECT state FROM runs WHERE id = $1")
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::RunNotFound(run_id.to_string()))?;
        Ok(s.parse().unwrap_or(RunState::Failed))
    }
}
