//! Budget reservations: a model call reserves its worst-case cost before it is made, and the
//! reservation is granted only while the run's recorded spend plus every reservation in flight
//! stays within the limit. The check and the reservation are one conditional `UPDATE` (a row
//! lock on PostgreSQL, the one writer on SQLite), so concurrent agents, processes and machines
//! cannot all pass the check and overshoot together. The call's real cost is recorded with
//! its reservation released ([`Store::record_model_call`]).
use autodev_domain::{Event, EventKind, RunState};

use super::{Db, Store};
use crate::Result;

/// The reason a run stopped by a budget starts with.
pub const BUDGET_EXCEEDED: &str = "budget_exceeded";

/// The limits a reservation is checked against, in micro-dollars. `None`: no such limit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// The run's `max_cost_usd`.
    pub run: Option<i64>,
    /// The run's project's `monthly_budget_usd` (a run without a project has none).
    pub project_month: Option<i64>,
    /// The deployment's `monthly_budget_usd`.
    pub global_month: Option<i64>,
}

/// Which limit a reservation was refused by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitKind {
    Run,
    ProjectMonth,
    GlobalMonth,
}

/// The answer to a reservation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reservation {
    /// Granted; for each monthly limit checked, what its month has spent and reserved now
    /// (this reservation included), for the 80% warning.
    Granted { project_month: Option<i64>, global_month: Option<i64> },
    /// The limit would be passed: what is spent and reserved against it now.
    Denied { limit: LimitKind, month: Option<String>, spent_micros: i64, reserved_micros: i64 },
}

/// A monthly scope's key: `global`, or `project:<id>`.
/// Adds spent money to a month's row of a scope (created at 0 first). Writers take the rows
/// global first, then the project's, as reservations do.
pub(crate) async fn add_month_spend(tx: &mut crate::tx::Tx<'_>, scope: &str, month: &str, micros: i64) -> Result<()> {
    tx.exec(
        "INSERT INTO budget_months (scope, month, spent_micros) VALUES ($1, $2, $3)
         ON CONFLICT (scope, month) DO UPDATE SET spent_micros = budget_months.spent_micros + excluded.spent_micros",
        &[scope.into(), month.into(), micros.into()],
    )
    .await?;
    Ok(())
}

pub(crate) fn project_scope(project_id: &str) -> String {
    format!("project:{project_id}")
}

/// A question's reservation stops counting after this long (its process died before
/// recording the answer; a question takes seconds).
const ASK_RESERVATION_TTL_MS: i64 = 10 * 60 * 1000;

/// What is reserved and not yet spent against a monthly scope, under its row's lock: the
/// reservations of unfinished runs, and of questions being answered.
async fn in_flight(tx: &mut crate::tx::Tx<'_>, kind: LimitKind, project_id: Option<&str>) -> Result<i64> {
    let since = super::now_ms() - ASK_RESERVATION_TTL_MS;
    match kind {
        LimitKind::ProjectMonth => {
            tx.int(
                "SELECT CAST(COALESCE((SELECT SUM(reserved_micros) FROM runs
                     WHERE project_id = $1 AND reserved_micros > 0 AND finished_at IS NULL), 0)
                   + COALESCE((SELECT SUM(micros) FROM ask_reservations WHERE project_id = $1 AND created_at > $2), 0) AS BIGINT)",
                &[project_id.into(), since.into()],
            )
            .await
        }
        LimitKind::GlobalMonth | LimitKind::Run => {
            tx.int(
                "SELECT CAST(COALESCE((SELECT SUM(reserved_micros) FROM runs
                     WHERE reserved_micros > 0 AND finished_at IS NULL), 0)
                   + COALESCE((SELECT SUM(micros) FROM ask_reservations WHERE created_at > $1), 0) AS BIGINT)",
                &[since.into()],
            )
            .await
        }
    }
}

/// Checks `micros` against the monthly limits given, each decided under its month's row lock
/// (created at 0 first): the deployment's, then the project's, the order every writer of these
/// rows takes them. `Ok`: each month's spent and reserved total with `micros` (project,
/// global), for the 80% warnings; `Err`: the refusal.
async fn check_months(
    tx: &mut crate::tx::Tx<'_>,
    month: &str,
    project_id: Option<&str>,
    global_limit: Option<i64>,
    project_limit: Option<i64>,
    micros: i64,
) -> Result<std::result::Result<(Option<i64>, Option<i64>), Reservation>> {
    let mut granted = (None, None);
    let scopes = [
        (global_limit, Some("global".to_string()), LimitKind::GlobalMonth),
        (project_limit, project_id.map(project_scope), LimitKind::ProjectMonth),
    ];
    for (limit, scope, kind) in scopes {
        let (Some(limit), Some(scope)) = (limit, scope) else { continue };
        let spent = tx
            .int(
                "INSERT INTO budget_months (scope, month, spent_micros) VALUES ($1, $2, 0)
                 ON CONFLICT (scope, month) DO UPDATE SET spent_micros = budget_months.spent_micros
                 RETURNING spent_micros",
                &[(&scope).into(), month.into()],
            )
            .await?;
        let reserved = in_flight(tx, kind, project_id).await?;
        if spent + reserved + micros > limit {
            return Ok(Err(Reservation::Denied {
                limit: kind,
                month: Some(month.to_string()),
                spent_micros: spent,
                reserved_micros: reserved,
            }));
        }
        match kind {
            LimitKind::GlobalMonth => granted.1 = Some(spent + reserved + micros),
            _ => granted.0 = Some(spent + reserved + micros),
        }
    }
    Ok(Ok(granted))
}

impl Store {
    /// Reserves the worst case of a question about `project_id` (its monthly budget
    /// `project_limit` and the deployment's `global_limit`, in micro-dollars), as a run's
    /// model call does: granted only while what each month has spent, plus every reservation
    /// in flight, plus `micros` stays within it. `Granted` comes with the reservation's id, to
    /// release when the answer's cost is recorded (or the question fails).
    pub async fn reserve_ask(
        &self,
        project_id: &str,
        micros: i64,
        project_limit: Option<i64>,
        global_limit: Option<i64>,
    ) -> Result<(Reservation, Option<String>)> {
        let now = super::now_ms();
        let month = autodev_domain::month_of(now);
        let mut tx = self.begin().await?;
        let granted = match check_months(&mut tx, &month, Some(project_id), global_limit, project_limit, micros).await?
        {
            Ok(granted) => granted,
            Err(denied) => {
                tx.commit().await?;
                return Ok((denied, None));
            }
        };
        let id = uuid::Uuid::now_v7().to_string();
        tx.exec(
            "INSERT INTO ask_reservations (id, project_id, micros, created_at) VALUES ($1, $2, $3, $4)",
            &[(&id).into(), project_id.into(), micros.into(), now.into()],
        )
        .await?;
        tx.commit().await?;
        Ok((Reservation::Granted { project_month: granted.0, global_month: granted.1 }, Some(id)))
    }

    /// Gives a question's reservation back (its cost is recorded, or it failed).
    pub async fn release_ask(&self, id: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        tx.exec("DELETE FROM ask_reservations WHERE id = $1", &[id.into()]).await?;
        tx.commit().await
    }

    /// Reserves `micros` for a call of `run_id` if, for every limit given, what is spent and
    /// reserved against it plus `micros` stays within it. The run's row carries its
    /// reservations; the monthly limits count the month's recorded spend plus the
    /// reservations of their runs that are not finished.
    pub async fn reserve_cost(&self, run_id: &str, micros: i64, limits: &Limits) -> Result<Reservation> {
        let month = autodev_domain::month_of(super::now_ms());
        let mut tx = self.begin().await?;
        let project_id = match limits.project_month {
            Some(_) => tx.opt_text("SELECT project_id FROM runs WHERE id = $1", &[run_id.into()]).await?,
            None => None,
        };
        let granted = match check_months(
            &mut tx,
            &month,
            project_id.as_deref(),
            limits.global_month,
            limits.project_month,
            micros,
        )
        .await?
        {
            Ok(granted) => granted,
            Err(denied) => {
                tx.commit().await?;
                return Ok(denied);
            }
        };
        let n = tx
            .exec(
                "UPDATE runs SET reserved_micros = reserved_micros + $1
                 WHERE id = $2 AND cost_micros + reserved_micros + $1 <= $3",
                &[micros.into(), run_id.into(), limits.run.unwrap_or(i64::MAX).into()],
            )
            .await?;
        if n == 1 {
            tx.commit().await?;
            return Ok(Reservation::Granted { project_month: granted.0, global_month: granted.1 });
        }
        let spent = tx.int("SELECT cost_micros FROM runs WHERE id = $1", &[run_id.into()]).await?;
        let reserved = tx.int("SELECT reserved_micros FROM runs WHERE id = $1", &[run_id.into()]).await?;
        tx.commit().await?;
        Ok(Reservation::Denied { limit: LimitKind::Run, month: None, spent_micros: spent, reserved_micros: reserved })
    }

    /// The `monthly_budget_usd` setting of a run's project, if it has a project with one.
    pub async fn project_monthly_budget(&self, run_id: &str) -> Result<Option<f64>> {
        let settings: Option<(String,)> = read!(self, |pool| {
            sqlx::query_as("SELECT p.settings FROM runs r JOIN projects p ON p.id = r.project_id WHERE r.id = $1")
                .bind(run_id)
                .fetch_optional(pool)
                .await?
        });
        Ok(settings
            .and_then(|(s,)| serde_json::from_str::<autodev_domain::ProjectSettings>(&s).ok())
            .and_then(|s| s.monthly_budget_usd))
    }

    /// What each conversation of a run has cost, from its recorded model calls.
    pub async fn cost_by_conversation(&self, run_id: &str) -> Result<Vec<(String, i64)>> {
        Ok(read!(self, |pool| {
            sqlx::query_as(
                "SELECT conversation, CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT) FROM model_calls
                 WHERE run_id = $1 GROUP BY conversation",
            )
            .bind(run_id)
            .fetch_all(pool)
            .await?
        }))
    }

    /// What was spent in `month` (`YYYY-MM`), globally and for each project by id.
    pub async fn month_spend(&self, month: &str) -> Result<Vec<(String, i64)>> {
        Ok(read!(self, |pool| {
            sqlx::query_as("SELECT scope, spent_micros FROM budget_months WHERE month = $1 ORDER BY scope")
                .bind(month)
                .fetch_all(pool)
                .await?
        }))
    }

    /// Reopens a run that failed `budget_exceeded`, once its limit was raised: back to the
    /// state it failed in, its tasks stopped by the budget running again (their conversations
    /// continue from the recorded calls; nothing is paid twice), the tasks skipped because of
    /// them pending again. Returns the state it is back in, or why it cannot be reopened.
    /// `settings`, when given, replaces the run's stored settings in the same transaction (a
    /// raised `max_cost_usd`).
    pub async fn reopen_budget_run(
        &self,
        run_id: &str,
        settings: Option<&str>,
    ) -> Result<std::result::Result<Event, String>> {
        let mut tx = self.begin().await?;
        let state = tx.run_state_locked(run_id).await?;
        let reason = tx
            .opt_text("SELECT COALESCE(reason, '') FROM runs WHERE id = $1", &[run_id.into()])
            .await?
            .unwrap_or_default();
        if state != RunState::Failed || !reason.starts_with(BUDGET_EXCEEDED) {
            return Ok(Err(format!("it is {state}, not failed {BUDGET_EXCEEDED}")));
        }
        // The state it failed in: the last change's `from`.
        let last = tx
            .opt_text(
                "SELECT data FROM events WHERE run_id = $1 AND kind = 'state_changed' ORDER BY seq DESC LIMIT 1",
                &[run_id.into()],
            )
            .await?
            .unwrap_or_default();
        #[derive(serde::Deserialize)]
        struct Change {
            from: RunState,
            to: RunState,
        }
        let from = match serde_json::from_str::<Change>(&last) {
            Ok(Change { from, to: RunState::Failed }) if !from.is_terminal() => from,
            _ => return Ok(Err("its last state change is not the failure; it cannot be reopened".into())),
        };
        let now = super::now_ms();
        if let Some(settings) = settings {
            tx.exec("UPDATE runs SET settings = $1 WHERE id = $2", &[settings.into(), run_id.into()]).await?;
        }
        tx.exec(
            "UPDATE runs SET state = $1, reason = NULL, updated_at = $2, finished_at = NULL, reserved_micros = 0 WHERE id = $3",
            &[from.as_str().into(), now.into(), run_id.into()],
        )
        .await?;
        tx.exec(
            "UPDATE tasks SET state = 'running', reason = NULL, updated_at = $1
             WHERE run_id = $2 AND state = 'failed' AND reason LIKE 'budget_exceeded%'",
            &[now.into(), run_id.into()],
        )
        .await?;
        tx.exec(
            "UPDATE tasks SET state = 'pending', reason = NULL, updated_at = $1 WHERE run_id = $2 AND state = 'skipped'",
            &[now.into(), run_id.into()],
        )
        .await?;
        let e = tx
            .event(
                run_id,
                EventKind::StateChanged {
                    from: RunState::Failed,
                    to: from,
                    reason: Some("reopened: the budget that stopped it was raised".into()),
                },
            )
            .await?;
        tx.commit().await?;
        Ok(Ok(e))
    }

    /// Gives back a reservation whose call was not made or failed.
    pub async fn release_cost(&self, run_id: &str, micros: i64) -> Result<()> {
        let mut tx = self.begin().await?;
        tx.exec(
            "UPDATE runs SET reserved_micros = CASE WHEN reserved_micros > $1 THEN reserved_micros - $1 ELSE 0 END WHERE id = $2",
            &[micros.into(), run_id.into()],
        )
        .await?;
        tx.commit().await
    }

    /// Drops every reservation of a run: when a process starts driving it, no call of it is in
    /// flight (one that was died with its process).
    pub async fn clear_reservations(&self, run_id: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        tx.exec("UPDATE runs SET reserved_micros = 0 WHERE id = $1", &[run_id.into()]).await?;
        tx.commit().await
    }

    /// The costliest runs created since `since_ms`: (short id, title, project name or "",
    /// input tokens, output tokens, cost in micro-dollars), most expensive first.
    pub async fn costs_by_run(
        &self,
        since_ms: i64,
        limit: i64,
    ) -> Result<Vec<(String, String, String, i64, i64, i64)>> {
        Ok(read!(self, |pool| {
            sqlx::query_as(
                "SELECT r.short_id, r.title, COALESCE(p.name, ''), r.input_tokens, r.output_tokens, r.cost_micros
                 FROM runs r LEFT JOIN projects p ON p.id = r.project_id
                 WHERE r.created_at >= $1 AND r.cost_micros > 0
                 ORDER BY r.cost_micros DESC, r.created_at DESC LIMIT $2",
            )
            .bind(since_ms)
            .bind(limit)
            .fetch_all(pool)
            .await?
        }))
    }
}
