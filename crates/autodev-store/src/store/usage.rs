//! Usage: what runs' model calls and code questions (`asks`, migration 0010) cost, by
//! project, model and day, and by API key.
use super::{Db, Store};
use crate::Result;

/// One row of the usage report. `project` is empty for runs started with `autodev run`;
/// `kind` is `run` (agents' model calls) or `ask` (questions to the code index).
#[derive(Clone, Debug, sqlx::FromRow, serde::Serialize)]
pub struct UsageRow {
    pub project: String,
    pub model: String,
    pub day: String,
    pub kind: String,
    pub calls: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_micros: i64,
}

/// Usage by the API key that made the run (`POST /api/v1/runs`) or asked the question; `key`
/// is empty for runs from the CLI or a webhook.
#[derive(Clone, Debug, sqlx::FromRow, serde::Serialize)]
pub struct KeyUsageRow {
    pub key: String,
    pub kind: String,
    pub calls: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_micros: i64,
}

/// A question answered from a project's code index.
#[derive(Clone, Debug)]
pub struct NewAsk<'a> {
    pub id: &'a str,
    pub project_id: Option<&'a str>,
    pub key_id: Option<&'a str>,
    pub key_name: Option<&'a str>,
    pub question: &'a str,
    pub model: &'a str,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_micros: i64,
    pub citations_ok: bool,
}

/// Sums a `u` subquery of (…, input_tokens, output_tokens, cost_micros) rows.
const SUMS: &str = "COUNT(*) AS calls, CAST(SUM(u.input_tokens) AS BIGINT) AS input_tokens,
     CAST(SUM(u.output_tokens) AS BIGINT) AS output_tokens, CAST(SUM(u.cost_micros) AS BIGINT) AS cost_micros";

impl Store {
    /// Tokens and cost grouped by project, model, UTC day and kind, newest day first.
    /// `since_ms` limits it to calls made from then on.
    pub async fn usage(&self, since_ms: i64) -> Result<Vec<UsageRow>> {
        let day = |col: &str| match &self.db {
            Db::Sqlite { .. } => format!("date({col} / 1000, 'unixepoch')"),
            Db::Pg(_) => format!("to_char(to_timestamp({col} / 1000) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"),
        };
        let sql = format!(
            "SELECT u.project AS project, u.model AS model, u.day AS day, u.kind AS kind, {SUMS} FROM (
                 SELECT COALESCE(p.name, '') AS project, mc.model AS model, {} AS day, 'run' AS kind,
                        mc.input_tokens AS input_tokens, mc.output_tokens AS output_tokens, mc.cost_micros AS cost_micros
                     FROM model_calls mc JOIN runs r ON r.id = mc.run_id LEFT JOIN projects p ON p.id = r.project_id
                     WHERE mc.created_at >= $1
                 UNION ALL
                 SELECT COALESCE(p.name, ''), a.model, {}, 'ask', a.input_tokens, a.output_tokens, a.cost_micros
                     FROM asks a LEFT JOIN projects p ON p.id = a.project_id WHERE a.created_at >= $1
             ) u GROUP BY u.project, u.model, u.day, u.kind ORDER BY day DESC, project, model, kind",
            day("mc.created_at"),
            day("a.created_at")
        );
        Ok(read!(self, |pool| {
            sqlx::query_as::<_, UsageRow>(sqlx::AssertSqlSafe(sql.clone())).bind(since_ms).fetch_all(pool).await?
        }))
    }

    /// Tokens and cost by API key and kind, costliest first. A run is the key's that created
    /// it through the API (its audit record).
    pub async fn usage_by_key(&self, since_ms: i64) -> Result<Vec<KeyUsageRow>> {
        let sql = format!(
            "SELECT u.key AS key, u.kind AS kind, {SUMS} FROM (
                 SELECT COALESCE(a.key_name, '') AS key, 'run' AS kind, mc.input_tokens AS input_tokens,
                        mc.output_tokens AS output_tokens, mc.cost_micros AS cost_micros
                     FROM model_calls mc
                     LEFT JOIN audit_log a ON a.detail = mc.run_id AND a.method = 'POST' AND a.path = '/api/v1/runs'
                     WHERE mc.created_at >= $1
                 UNION ALL
                 SELECT COALESCE(key_name, ''), 'ask', input_tokens, output_tokens, cost_micros
                     FROM asks WHERE created_at >= $1
             ) u GROUP BY u.key, u.kind ORDER BY cost_micros DESC, key, kind"
        );
        Ok(read!(self, |pool| {
            sqlx::query_as::<_, KeyUsageRow>(sqlx::AssertSqlSafe(sql.clone())).bind(since_ms).fetch_all(pool).await?
        }))
    }

    /// Records an answered question; its cost counts toward the month's spend (the
    /// deployment's and the project's), in the same transaction.
    pub async fn record_ask(&self, ask: NewAsk<'_>) -> Result<()> {
        let now = super::now_ms();
        let mut tx = self.begin().await?;
        if ask.cost_micros > 0 {
            // The month's spend, global then the project's (the order reservations lock them).
            let month = autodev_domain::month_of(now);
            super::budget::add_month_spend(&mut tx, "global", &month, ask.cost_micros).await?;
            if let Some(project) = ask.project_id {
                let scope = super::budget::project_scope(project);
                super::budget::add_month_spend(&mut tx, &scope, &month, ask.cost_micros).await?;
            }
        }
        tx.exec(
            "INSERT INTO asks (id, project_id, key_id, key_name, question, model, input_tokens, output_tokens, cost_micros, citations_ok, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            &[
                ask.id.into(),
                ask.project_id.into(),
                ask.key_id.into(),
                ask.key_name.into(),
                ask.question.into(),
                ask.model.into(),
                ask.input_tokens.into(),
                ask.output_tokens.into(),
                ask.cost_micros.into(),
                ask.citations_ok.into(),
                now.into(),
            ],
        )
        .await?;
        tx.commit().await
    }
}
