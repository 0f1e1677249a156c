//! `POST /api/v1/projects/{key}/ask`: a question about a project's code, answered by the
//! configured model from the project's code index, with citations checked against the index.
//! Usage and cost are recorded per key and project (`asks`) and count toward the monthly
//! budgets; a question is refused while a monthly budget is spent.
use autodev_domain::AccessRole;
use autodev_store::ProjectRow;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::{AppState, Caller};
use crate::error::ApiError;
use crate::extract::JsonBody;

/// The longest question accepted, in characters.
pub const QUESTION_MAX_CHARS: usize = 4_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AskBody {
    question: String,
}

/// Refuses a question while the project's or the deployment's monthly budget is spent.
async fn check_budgets(state: &AppState, project: &ProjectRow) -> Result<(), ApiError> {
    let month = autodev_domain::month_of(autodev_store::now_ms());
    let spend = state.store.month_spend(&month).await?;
    let spent = |scope: &str| spend.iter().find(|(s, _)| s == scope).map_or(0, |(_, v)| *v);
    let settings: Value = serde_json::from_str(&project.settings).unwrap_or_default();
    let limits = [
        (
            format!("project:{}", project.id),
            settings.get("monthly_budget_usd").and_then(Value::as_f64),
            "the project's",
        ),
        ("global".to_string(), state.budgets.monthly_usd, "the deployment's"),
    ];
    for (scope, limit, whose) in limits {
        if let Some(usd) = limit
            && spent(&scope) as f64 >= usd * 1e6
        {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "budget_exceeded",
                format!(
                    "{whose} monthly_budget_usd for {month} (${usd:.2}) is spent: raise it to ask more questions this month"
                ),
            ));
        }
    }
    Ok(())
}

/// The answer as the API returns it.
pub fn answer_json(id: &str, project: &ProjectRow, question: &str, a: &autodev_engine::ask::Answer) -> Value {
    json!({
        "id": id,
        "project": project.name,
        "question": question,
        "answer": a.answer,
        "not_found": a.not_found,
        "citations_ok": a.citations_ok,
        "citations": a.citations.iter().map(|c| json!({
            "path": c.path, "start_line": c.start_line, "end_line": c.end_line, "valid": c.valid,
        })).collect::<Vec<_>>(),
        "sources": a.sources.iter().map(|h| json!({
            "path": h.path, "start_line": h.start_line, "end_line": h.end_line, "score": h.score, "name": h.name,
        })).collect::<Vec<_>>(),
        "model": a.model,
        "input_tokens": a.input_tokens,
        "output_tokens": a.output_tokens,
        "cost_usd": a.cost_micros as f64 / 1e6,
    })
}

/// Answers `question` about `project` for `caller` and records it. Shared by the API, the
/// web UI and MCP.
pub async fn answer(
    state: &AppState,
    caller: &Caller,
    project: &ProjectRow,
    question: &str,
) -> Result<(String, autodev_engine::ask::Answer), ApiError> {
    // Held until the answer is recorded: a key cannot fan out model calls without bound.
    let _in_flight = state.guard.start_ask(&caller.key.id).map_err(|n| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_asks",
            format!("this key has {n} questions being answered (the most it may at once); wait for one"),
        )
    })?;
    check_budgets(state, project).await?;
    let settings = state.models.run_settings();
    let client = state.models.build(&settings).map_err(|e| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no_model", format!("no model to answer with: {e}"))
    })?;
    let searcher = state.code.open_project(project).await.map_err(|e| match e {
        // The repository is the project's to fix (moved, private, unreachable from here): a
        // conflict with the project's state, not a server fault.
        autodev_engine::code::CodeError::Source(_) => {
            ApiError::new(StatusCode::CONFLICT, "repository_unavailable", e.to_string())
        }
        other => {
            tracing::error!(project = %project.id, error = %other, "could not open the code index");
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "index_unavailable",
                format!("the code index could not be built: {other}"),
            )
        }
    })?;
    let answer = autodev_engine::ask::ask(&searcher, client.as_ref(), &state.prices, &settings.model, question)
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "model_failed", e.to_string()))?;
    let asker =
        autodev_engine::ask::Asker { key: Some((&caller.key.id, &caller.key.name)), project_id: Some(&project.id) };
    let id = autodev_engine::ask::record(&state.store, asker, question, &answer).await?;
    metrics::counter!("autodev_asks_total", "citations_ok" => answer.citations_ok.to_string()).increment(1);
    Ok((id, answer))
}

/// Checks a question: not blank, no NUL, not too long (the published pattern's rules).
pub fn valid_question(question: &str) -> Result<&str, ApiError> {
    crate::rules::text("question", question, QUESTION_MAX_CHARS)?;
    Ok(question.trim())
}

pub async fn ask(
    caller: Caller,
    State(state): State<AppState>,
    Path(key): Path<String>,
    body: JsonBody,
) -> Result<Json<Value>, ApiError> {
    caller.require(AccessRole::Viewer)?;
    let body: AskBody = body.parse()?;
    let question = valid_question(&body.question)?;
    let project = state.store.find_project(&key).await?;
    let (id, answer) = answer(&state, &caller, &project, question).await?;
    Ok(Json(answer_json(&id, &project, question, &answer)))
}
