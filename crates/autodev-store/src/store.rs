//! The SQLite store.
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use autodev_domain::{Event, EventKind, RunState, TaskState};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, Sqlite, SqlitePool, Transaction};

use crate::Result;
use crate::rows::{ModelCallRecord, NewRun, RunRow, StoredModelCall, StoredToolCall, TaskRow, ToolStart};

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
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

#[derive(Clone, Debug)]
pub struct Store {
    pool: SqlitePool,
}

const RUN_COLUMNS: &str = "id, short_id, title, spec, repo, base_branch, base_commit, branch, state, reason, settings, plan, repair_round, test_passed, input_tokens, output_tokens, cost_micros, lease_owner, lease_until, created_at, updated_at, finished_at";

/// A `SELECT` of every run column with a constant tail. Only `&'static str` tails are
/// accepted, so no user input can reach the SQL text.
fn run_sql(tail: &'static str) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(format!("SELECT {RUN_COLUMNS} FROM runs {tail}"))
}

impl Store {
    /// Opens (creating if needed) the database file and applies migrations.
    pub async fn open(path: &Path) -> Result<Self> {
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
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// A write transaction. `BEGIN IMMEDIATE` takes the write lock up front: a deferred
    /// transaction that reads first cannot upgrade its lock while another connection writes
    /// (SQLite answers `database is locked` at once instead of waiting), which broke
    /// concurrent runs in one process.
    async fn write_tx(&self) -> Result<Transaction<'static, Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    async fn append(tx: &mut Transaction<'_, Sqlite>, run_id: &str, kind: EventKind) -> Result<Event> {
        let at_ms = now_ms();
        let mut data = serde_json::to_value(&kind)?;
        if let Some(obj) = data.as_object_mut() {
            obj.remove("type");
        }
        let seq: i64 =
            sqlx::query_scalar("INSERT INTO events (run_id, at_ms, kind, data) VALUES ($1, $2, $3, $4) RETURNING seq")
                .bind(run_id)
                .bind(at_ms)
                .bind(kind.name())
                .bind(data.to_string())
                .fetch_one(&mut **tx)
                .await?;
        Ok(Event { seq, run_id: run_id.to_string(), at_ms, kind })
    }

    /// Appends one event on its own.
    pub async fn append_event(&self, run_id: &str, kind: EventKind) -> Result<Event> {
        let mut tx = self.write_tx().await?;
        let e = Self::append(&mut tx, run_id, kind).await?;
        tx.commit().await?;
        Ok(e)
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
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO runs (id, short_id, title, spec, repo, base_branch, base_commit, branch, state, settings, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)",
        )
        .bind(&run.id)
        .bind(&run.short_id)
        .bind(&run.title)
        .bind(&run.spec)
        .bind(&run.repo)
        .bind(&run.base_branch)
        .bind(&run.base_commit)
        .bind(&run.branch)
        .bind(RunState::Queued.as_str())
        .bind(&run.settings)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let e = Self::append(&mut tx, &run.id, created).await?;
        tx.commit().await?;
        Ok(e)
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
        let mut tx = self.write_tx().await?;
        let current: String = sqlx::query_scalar("SELECT state FROM runs WHERE id = $1")
            .bind(run_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::RunNotFound(run_id.to_string()))?;
        let from: RunState = current.parse().unwrap_or(RunState::Failed);
        if from == to {
            return Ok(None);
        }
        if !from.can_become(to) {
            return Err(StoreError::Transition { run: run_id.to_string(), from, to });
        }
        let now = now_ms();
        let finished = to.is_terminal().then_some(now);
        sqlx::query("UPDATE runs SET state = $1, reason = COALESCE($2, reason), updated_at = $3, finished_at = COALESCE($4, finished_at) WHERE id = $5")
            .bind(to.as_str())
            .bind(reason)
            .bind(now)
            .bind(finished)
            .bind(run_id)
            .execute(&mut *tx)
            .await?;
        let e = Self::append(&mut tx, run_id, EventKind::StateChanged { from, to, reason: reason.map(str::to_string) })
            .await?;
        tx.commit().await?;
        Ok(Some(e))
    }

    /// Stores the accepted plan and its tasks (all `pending`), with the event.
    pub async fn set_plan(&self, run_id: &str, plan: &autodev_domain::Plan, accepted: EventKind) -> Result<Event> {
        let now = now_ms();
        let mut tx = self.write_tx().await?;
        sqlx::query("UPDATE runs SET plan = $1, updated_at = $2 WHERE id = $3")
            .bind(serde_json::to_string(plan)?)
            .bind(now)
            .bind(run_id)
            .execute(&mut *tx)
            .await?;
        for (i, t) in plan.tasks.iter().enumerate() {
            sqlx::query(
                "INSERT INTO tasks (run_id, task_key, position, title, description, depends_on, acceptance, state, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (run_id, task_key) DO NOTHING",
            )
            .bind(run_id)
            .bind(&t.id)
            .bind(i as i64)
            .bind(&t.title)
            .bind(&t.description)
            .bind(serde_json::to_string(&t.depends_on)?)
            .bind(serde_json::to_string(&t.acceptance)?)
            .bind(TaskState::Pending.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        let e = Self::append(&mut tx, run_id, accepted).await?;
        tx.commit().await?;
        Ok(e)
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
        let mut tx = self.write_tx().await?;
        sqlx::query("UPDATE tasks SET state = $1, reason = COALESCE($2, reason), summary = COALESCE($3, summary), updated_at = $4 WHERE run_id = $5 AND task_key = $6")
            .bind(state.as_str())
            .bind(reason)
            .bind(summary)
            .bind(now_ms())
            .bind(run_id)
            .bind(task)
            .execute(&mut *tx)
            .await?;
        let e = Self::append(
            &mut tx,
            run_id,
            EventKind::TaskStateChanged { task: task.to_string(), state, reason: reason.map(str::to_string) },
        )
        .await?;
        tx.commit().await?;
        Ok(e)
    }

    pub async fn set_task_commit(&self, run_id: &str, task: &str, commit: &str) -> Result<Event> {
        let mut tx = self.write_tx().await?;
        sqlx::query("UPDATE tasks SET commit_sha = $1, updated_at = $2 WHERE run_id = $3 AND task_key = $4")
            .bind(commit)
            .bind(now_ms())
            .bind(run_id)
            .bind(task)
            .execute(&mut *tx)
            .await?;
        let e = Self::append(
            &mut tx,
            run_id,
            EventKind::TaskCommitted { task: task.to_string(), commit: commit.to_string() },
        )
        .await?;
        tx.commit().await?;
        Ok(e)
    }

    pub async fn set_repair_round(&self, run_id: &str, round: u32) -> Result<()> {
        sqlx::query("UPDATE runs SET repair_round = $1, updated_at = $2 WHERE id = $3")
            .bind(round as i64)
            .bind(now_ms())
            .bind(run_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records a test run's outcome on the run, with the event.
    pub async fn record_test_run(&self, run_id: &str, passed: bool, event: EventKind) -> Result<Event> {
        let mut tx = self.write_tx().await?;
        sqlx::query("UPDATE runs SET test_passed = $1, updated_at = $2 WHERE id = $3")
            .bind(passed)
            .bind(now_ms())
            .bind(run_id)
            .execute(&mut *tx)
            .await?;
        let e = Self::append(&mut tx, run_id, event).await?;
        tx.commit().await?;
        Ok(e)
    }

    /// Stores the fixed start of a conversation; a second call keeps the first.
    pub async fn put_conversation(&self, run_id: &str, conversation: &str, header: &str) -> Result<String> {
        sqlx::query("INSERT INTO conversations (run_id, conversation, header, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (run_id, conversation) DO NOTHING")
            .bind(run_id)
            .bind(conversation)
            .bind(header)
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(sqlx::query_scalar("SELECT header FROM conversations WHERE run_id = $1 AND conversation = $2")
            .bind(run_id)
            .bind(conversation)
            .fetch_one(&self.pool)
            .await?)
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

    /// Runs a batch `BEGIN IMMEDIATE; …; COMMIT` in one round trip to SQLite's worker thread
    /// and returns the `seq` values its `RETURNING` clauses produced.
    ///
    /// Why not a `Transaction`: sqlx talks to SQLite through a worker thread, and each
    /// statement is a cross-thread round trip (~40-60 µs on a 2-core VM). One batch per
    /// record instead of five statements is what keeps an agent step's overhead low. If the
    /// batch fails part-way, the transaction is rolled back on the same connection; a
    /// connection found still inside a transaction (its caller was dropped mid-batch) is
    /// rolled back and the batch retried once.
    async fn batch<'q, F>(&self, build: F) -> Result<Vec<i64>>
    where
        F: Fn() -> sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments>,
    {
        let mut conn = self.pool.acquire().await?;
        for attempt in 0..2 {
            match build().fetch_all(&mut *conn).await {
                Ok(rows) => return Ok(rows.iter().filter_map(|r| r.try_get::<i64, _>(0).ok()).collect()),
                Err(e) => {
                    let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                    let nested = e.to_string().contains("within a transaction");
                    if !(nested && attempt == 0) {
                        return Err(e.into());
                    }
                }
            }
        }
        Err(StoreError::Db(sqlx::Error::Protocol("batch retry exhausted".into())))
    }

    fn event_json(kind: &EventKind) -> Result<String> {
        let mut data = serde_json::to_value(kind)?;
        if let Some(obj) = data.as_object_mut() {
            obj.remove("type");
        }
        Ok(data.to_string())
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
        const CALL: &str = "BEGIN IMMEDIATE;
            INSERT INTO model_calls (run_id, conversation, turn, provider, model, response, input_tokens, output_tokens, cost_micros, latency_ms, created_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11);
            UPDATE runs SET input_tokens = input_tokens + $7, output_tokens = output_tokens + $8, cost_micros = cost_micros + $9 WHERE id = $1;
            INSERT INTO events (run_id, at_ms, kind, data) VALUES ($1, $11, 'model_call', $12) RETURNING seq;
            COMMIT;";
        const CALL_AND_START: &str = "BEGIN IMMEDIATE;
            INSERT INTO model_calls (run_id, conversation, turn, provider, model, response, input_tokens, output_tokens, cost_micros, latency_ms, created_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11);
            UPDATE runs SET input_tokens = input_tokens + $7, output_tokens = output_tokens + $8, cost_micros = cost_micros + $9 WHERE id = $1;
            INSERT INTO events (run_id, at_ms, kind, data) VALUES ($1, $11, 'model_call', $12) RETURNING seq;
            INSERT INTO tool_calls (run_id, conversation, turn, idx, call_id, name, arguments, status, started_at)
                VALUES ($1, $2, $3, $13, $14, $15, $16, 'started', $11);
            INSERT INTO events (run_id, at_ms, kind, data) VALUES ($1, $11, 'agent_step', $17) RETURNING seq;
            COMMIT;";
        let seqs = self
            .batch(|| {
                let q = sqlx::query(if first_tool.is_some() { CALL_AND_START } else { CALL })
                    .bind(rec.run_id)
                    .bind(rec.conversation)
                    .bind(rec.turn as i64)
                    .bind(rec.provider)
                    .bind(rec.model)
                    .bind(rec.response_json)
                    .bind(rec.input_tokens as i64)
                    .bind(rec.output_tokens as i64)
                    .bind(rec.cost_micros)
                    .bind(rec.latency_ms as i64)
                    .bind(now)
                    .bind(call_json.as_str());
                match (first_tool, step_json.as_deref()) {
                    (Some(t), Some(step)) => {
                        q.bind(t.idx as i64).bind(t.call_id).bind(t.name).bind(t.arguments).bind(step)
                    }
                    _ => q,
                }
            })
            .await?;
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
        const SQL: &str = "BEGIN IMMEDIATE;
            INSERT INTO tool_calls (run_id, conversation, turn, idx, call_id, name, arguments, status, started_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7, 'started', $8)
                ON CONFLICT (run_id, conversation, turn, idx) DO UPDATE SET started_at = excluded.started_at;
            INSERT INTO events (run_id, at_ms, kind, data) VALUES ($1, $8, 'agent_step', $9) RETURNING seq;
            COMMIT;";
        let seqs = self
            .batch(|| {
                sqlx::query(SQL)
                    .bind(run_id)
                    .bind(conversation)
                    .bind(turn as i64)
                    .bind(start.idx as i64)
                    .bind(start.call_id)
                    .bind(start.name)
                    .bind(start.arguments)
                    .bind(now)
                    .bind(data.as_str())
            })
            .await?;
        let seq = seqs.first().copied().unwrap_or_default();
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
        const SQL: &str = "BEGIN IMMEDIATE;
            UPDATE tool_calls SET status = 'finished', result = $5, is_error = $6, finished_at = $7
                WHERE run_id = $1 AND conversation = $2 AND turn = $3 AND idx = $4;
            INSERT INTO events (run_id, at_ms, kind, data) VALUES ($1, $7, 'tool_finished', $8) RETURNING seq;
            COMMIT;";
        let seqs = self
            .batch(|| {
                sqlx::query(SQL)
                    .bind(run_id)
                    .bind(conversation)
                    .bind(turn as i64)
                    .bind(idx as i64)
                    .bind(result)
                    .bind(is_error)
                    .bind(now)
                    .bind(data.as_str())
            })
            .await?;
        let seq = seqs.first().copied().unwrap_or_default();
        Ok(Event { seq, run_id: run_id.to_string(), at_ms: now, kind })
    }

    /// Takes the run's lease for `owner` for `ttl`, unless another owner holds an unexpired
    /// one and `force` is false (the caller sets `force` after checking the holder is dead).
    pub async fn claim_run(&self, run_id: &str, owner: &str, ttl: Duration, force: bool) -> Result<()> {
        let now = now_ms();
        let until = now + ttl.as_millis() as i64;
        let updated = sqlx::query(
            "UPDATE runs SET lease_owner = $1, lease_until = $2
             WHERE id = $3 AND ($4 OR lease_owner IS NULL OR lease_owner = $1 OR lease_until < $5)",
        )
        .bind(owner)
        .bind(until)
        .bind(run_id)
        .bind(force)
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if updated == 1 {
            return Ok(());
        }
        let run = self.get_run(run_id).await?;
        Err(StoreError::Leased { run: run_id.to_string(), owner: run.lease_owner.unwrap_or_default() })
    }

    pub async fn release_run(&self, run_id: &str, owner: &str) -> Result<()> {
        sqlx::query("UPDATE runs SET lease_owner = NULL, lease_until = 0 WHERE id = $1 AND lease_owner = $2")
            .bind(run_id)
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(())
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
