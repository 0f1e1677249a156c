//! Usage: tokens and cost by project, model and day, and by key, over the last days.
use autodev_domain::{AccessRole, MicroUsd};
use serde::Serialize;

use crate::caller::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// What was spent over `days` (`GET /api/v1/usage`).
#[derive(Serialize, utoipa::ToSchema)]
pub struct UsageReport {
    pub days: i64,
    pub usage: Vec<UsageItem>,
    /// By the key that created the run (through the API) or asked the question.
    pub by_key: Vec<KeyUsageItem>,
    pub total_cost_usd: f64,
}

/// Model calls of one project, model, day and kind (run or question).
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = UsageRow)]
pub struct UsageItem {
    /// Null for runs started with `autodev run`.
    pub project: Option<String>,
    pub model: String,
    /// UTC, `YYYY-MM-DD`.
    pub day: String,
    /// `run` (agents' model calls) or `ask` (questions to a project's code index).
    pub kind: String,
    #[serde(flatten)]
    pub spent: Spent,
}

/// Calls, tokens and what they cost.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Spent {
    pub calls: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_usd: f64,
}

impl Spent {
    fn new(calls: i64, input_tokens: i64, output_tokens: i64, cost_micros: i64) -> Self {
        Spent { calls, input_tokens, output_tokens, cost_usd: MicroUsd(cost_micros).as_usd() }
    }
}

/// Model calls made for one key, by kind.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = KeyUsageRow)]
pub struct KeyUsageItem {
    /// The API key's name; null for runs from the CLI or a webhook.
    pub key: Option<String>,
    /// `run` or `ask`.
    pub kind: String,
    #[serde(flatten)]
    pub spent: Spent,
}

/// The usage the caller sees over the last `days` (default 30, at most 366). A key scoped to
/// projects sees their usage only, and its own among the keys.
pub async fn usage(state: &AppState, caller: &Caller, days: Option<i64>) -> Result<UsageReport, ApiError> {
    caller.require(AccessRole::Viewer)?;
    let days = days.unwrap_or(30);
    if !(1..=366).contains(&days) {
        return Err(ApiError::invalid("days", "days must be 1 to 366"));
    }
    let since = autodev_store::now_ms() - days * 86_400_000;
    let mut rows = state.store.usage(since).await?;
    let visible: Option<std::collections::HashSet<String>> = match caller.scope() {
        Some(_) => Some(
            state
                .store
                .list_projects()
                .await?
                .into_iter()
                .filter(|p| caller.sees(Some(&p.id)))
                .map(|p| p.name)
                .collect(),
        ),
        None => None,
    };
    if let Some(names) = &visible {
        rows.retain(|r| names.contains(&r.project));
    }
    let total_cost: i64 = rows.iter().map(|r| r.cost_micros).sum();
    let usage = rows
        .into_iter()
        .map(|r| UsageItem {
            project: Some(r.project).filter(|p| !p.is_empty()),
            model: r.model,
            day: r.day,
            kind: r.kind,
            spent: Spent::new(r.calls, r.input_tokens, r.output_tokens, r.cost_micros),
        })
        .collect();
    let by_key = state
        .store
        .usage_by_key(since)
        .await?
        .into_iter()
        .filter(|r| visible.is_none() || r.key == caller.key.name)
        .map(|r| KeyUsageItem {
            key: Some(r.key).filter(|k| !k.is_empty()),
            kind: r.kind,
            spent: Spent::new(r.calls, r.input_tokens, r.output_tokens, r.cost_micros),
        })
        .collect();
    Ok(UsageReport { days, usage, by_key, total_cost_usd: MicroUsd(total_cost).as_usd() })
}
