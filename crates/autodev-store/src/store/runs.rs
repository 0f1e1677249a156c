//! Runs and their events: the batched insert, reads and pages, state changes.
use autodev_domain::{Event, EventKind, RunState, TaskState};

use super::{Db, PendingInsert, Store, now_ms};
use crate::rows::AuditEntry;
use crate::rows::{EventRow, NewRun, RunRef, RunRow, TextRow};
use crate::tx::{Arg, Tx, event_json};
use crate::{Result, StoreError};

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

impl Store {
    /// Appends one event on its own.
    pub async fn append_event(&self, run_id: &str, kind: EventKind) -> Result<Event> {
        let mut tx = self.begin().await?;
        let e = tx.event(run_id, kind).await?;
        tx.commit().await?;
        Ok(e)
    }

    /// Events of a run after `after_seq`, oldest first.
    pub async fn events(&self, run_id: &str, after_seq: i64) -> Result<Vec<Event>> {
        self.events_page(run_id, after_seq, i64::MAX).await
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

    pub(crate) fn decode_events(run_id: &str, rows: Vec<EventRow>) -> Result<Vec<Event>> {
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
            self.ring_queue().await;
        }
        answer.await.map_err(|_| StoreError::Batch("the insert batch was dropped".into()))?
    }

    pub(crate) async fn commit_inserts(&self, batch: Vec<PendingInsert>) {
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

    pub(crate) async fn commit_inserts_pg(&self, batch: Vec<PendingInsert>) {
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
    pub(crate) async fn insert_many_pg(tx: &mut Tx<'_>, batch: &[PendingInsert]) -> Result<(i64, Vec<i64>)> {
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

    pub(crate) async fn insert_one(
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
        if from == RunState::AwaitingApproval || to == RunState::Queued {
            // Approved, or queued again: a worker may claim it now.
            self.ring_queue().await;
        }
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
    pub(crate) async fn update_run_with_event<'a>(
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
