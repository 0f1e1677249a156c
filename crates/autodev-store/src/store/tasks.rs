//! Tasks and conversations: model calls and tool calls, each recorded before it acts.
use autodev_domain::{Event, EventKind, TaskState};

use super::{Db, Store, budget, now_ms};
use crate::Result;
use crate::rows::{ModelCallRecord, Recorded, StoredModelCall, StoredToolCall, TaskRow, ToolStart};
use crate::tx::{Tx, event_json};

impl Store {
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

    pub(crate) async fn insert_tool_start(
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
}
