//! Questions (`POST /api/v1/projects/{key}/ask`): a question about a project's code, answered by the
//! configured model from the project's code index, with citations checked against the index.
//! Usage and cost are recorded per key and project (`asks`) and count toward the monthly
//! budgets; a question reserves its worst case against them first, as a run's model call does.
use autodev_domain::AccessRole;
use autodev_store::ProjectRow;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::caller::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// The longest question accepted, in characters.
pub const QUESTION_MAX_CHARS: usize = 4_000;

/// A question about a project's code.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = AskRequest, example = json!({"question": "Where are API keys checked?"}))]
pub struct AskBody {
    /// 1 to 4,000 characters.
    pub question: String,
    /// The conversation this question follows up (its id, from an earlier answer); omitted,
    /// the question starts a new one.
    #[serde(default)]
    #[schema(pattern = "^[0-9a-f-]{36}$")]
    pub conversation: Option<String>,
    /// Stream the answer as server-sent events (`delta` events with the text as it is
    /// written, then one `answer` event with the whole answer, citations and usage; `error`
    /// if it failed); also chosen by `Accept: text/event-stream`.
    #[serde(default)]
    pub stream: bool,
}

/// Checks a conversation id: the UUID an earlier answer gave.
pub fn valid_conversation(id: &str) -> Result<&str, ApiError> {
    let ok = id.len() == 36 && id.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    if ok {
        Ok(id)
    } else {
        Err(ApiError::invalid(
            "conversation",
            "give the `conversation` id of an earlier answer (a UUID), or leave it out to start one",
        ))
    }
}

/// The most a question can cost: its prompt (the instructions, the question, the excerpts the
/// index gives, at most `CONTEXT_TOKENS_MAX`) and the longest answer allowed.
fn worst_case(state: &AppState, model: &str, question: &str) -> i64 {
    const CONTEXT_TOKENS_MAX: u64 = 16_000;
    let input = CONTEXT_TOKENS_MAX + question.chars().count() as u64;
    state.engine.prices.cost(model, input, u64::from(autodev_engine::ask::MAX_ANSWER_TOKENS)).map_or(0, |c| c.0)
}

/// Reserves the question's worst case against the project's and the deployment's monthly
/// budgets, as a run's model call does, so parallel questions cannot pass a budget together.
/// Returns the reservation to release once the cost is recorded.
async fn reserve(
    state: &AppState,
    project: &ProjectRow,
    model: &str,
    question: &str,
) -> Result<Option<String>, ApiError> {
    let usd = |v: Option<f64>| v.map(|d| (d * 1e6) as i64);
    let project_limit = usd(project.settings().monthly_budget_usd);
    let global_limit = usd(state.engine.budgets.monthly_usd);
    if project_limit.is_none() && global_limit.is_none() {
        return Ok(None);
    }
    let micros = worst_case(state, model, question);
    match state.store.reserve_ask(&project.id, micros, project_limit, global_limit).await? {
        (autodev_store::Reservation::Granted { .. }, id) => Ok(id),
        (autodev_store::Reservation::Denied { limit, month, spent_micros, reserved_micros }, _) => {
            let (whose, cap) = match limit {
                autodev_store::LimitKind::ProjectMonth => ("the project's", project_limit),
                _ => ("the deployment's", global_limit),
            };
            metrics::counter!("autodev_budget_denials_total", "limit" => "ask").increment(1);
            Err(ApiError::new(
                StatusCode::CONFLICT,
                "budget_exceeded",
                format!(
                    "{whose} monthly_budget_usd for {} (${:.2}) would be passed by this question (spent ${:.4}, ${:.4} reserved, this question up to ${:.4}): raise it to ask more questions this month",
                    month.unwrap_or_default(),
                    cap.unwrap_or_default() as f64 / 1e6,
                    spent_micros as f64 / 1e6,
                    reserved_micros as f64 / 1e6,
                    micros as f64 / 1e6
                ),
            ))
        }
    }
}

/// An answer as the API returns it (and the UI and MCP show it).
#[derive(Serialize, utoipa::ToSchema)]
pub struct AskAnswer {
    pub id: String,
    /// The conversation this answer belongs to: send it back as `conversation` to follow up.
    pub conversation: String,
    /// Which turn of the conversation this is (1 for its first question).
    pub turn: i64,
    /// The project's name.
    pub project: String,
    pub question: String,
    /// The model's answer, citing `path:start-end`; "I could not find it" is allowed.
    pub answer: String,
    pub not_found: bool,
    /// Every citation is in the index (and there is one, unless not found).
    pub citations_ok: bool,
    pub citations: Vec<CitationView>,
    /// The chunks the model was given.
    pub sources: Vec<SourceView>,
    pub model: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: f64,
}

/// A place an answer cites.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Citation)]
pub struct CitationView {
    pub path: String,
    pub start_line: u64,
    pub end_line: u64,
    /// Whether the place is inside a chunk of the project's code index.
    pub valid: bool,
}

/// An excerpt of the code index given to the model.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = AskSource)]
pub struct SourceView {
    pub path: String,
    pub start_line: u64,
    pub end_line: u64,
    pub score: f32,
    /// The definition's name, empty for a window of lines.
    pub name: String,
}

impl AskAnswer {
    pub fn new(id: String, project: &ProjectRow, question: &str, a: autodev_engine::ask::Answer) -> Self {
        AskAnswer {
            id,
            conversation: String::new(),
            turn: 1,
            project: project.name.clone(),
            question: question.to_string(),
            answer: a.answer,
            not_found: a.not_found,
            citations_ok: a.citations_ok,
            citations: a
                .citations
                .into_iter()
                .map(|c| CitationView { path: c.path, start_line: c.start_line, end_line: c.end_line, valid: c.valid })
                .collect(),
            sources: a
                .sources
                .into_iter()
                .map(|h| SourceView {
                    path: h.path,
                    start_line: h.start_line,
                    end_line: h.end_line,
                    score: h.score,
                    name: h.name,
                })
                .collect(),
            model: a.model,
            input_tokens: a.input_tokens,
            output_tokens: a.output_tokens,
            cost_usd: autodev_domain::MicroUsd(a.cost_micros).as_usd(),
        }
    }
}

/// Answers `question` about `project` for `caller` and records it. Shared by the API, the
/// web UI and MCP.
pub async fn answer(
    state: &AppState,
    caller: &Caller,
    project: &ProjectRow,
    question: &str,
) -> Result<(String, autodev_engine::ask::Answer), ApiError> {
    answer_in(state, caller, project, question, &[], None).await
}

/// [`answer`] as a turn of a conversation with `earlier` turns, its text handed to `on_text`
/// as it is written.
pub async fn answer_in(
    state: &AppState,
    caller: &Caller,
    project: &ProjectRow,
    question: &str,
    earlier: &[autodev_engine::ask::Turn],
    on_text: Option<&autodev_domain::TextSink<'_>>,
) -> Result<(String, autodev_engine::ask::Answer), ApiError> {
    // Held until the answer is recorded: a key cannot fan out model calls without bound.
    let _in_flight = state.guard.start_ask(&caller.key.id).map_err(|n| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_asks",
            format!("this key has {n} questions being answered (the most it may at once); wait for one"),
        )
    })?;
    let settings = state.models.run_settings();
    let client = state.models.build(&settings).map_err(|e| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no_model", format!("no model to answer with: {e}"))
    })?;
    let reservation = reserve(state, project, &settings.model, question).await?;
    let asked = Asked { question, earlier, on_text };
    let result = answer_reserved(state, caller, project, &asked, client, &settings.model).await;
    // The cost is recorded (or the question failed): the reservation is given back.
    if let Some(id) = reservation
        && let Err(e) = state.store.release_ask(&id).await
    {
        tracing::warn!(error = %e, "could not release a question's reservation (it lapses in ten minutes)");
    }
    result
}

/// A question as asked: its text, the conversation's earlier turns, where its text streams.
#[derive(Clone, Copy)]
struct Asked<'a> {
    question: &'a str,
    earlier: &'a [autodev_engine::ask::Turn],
    on_text: Option<&'a autodev_domain::TextSink<'a>>,
}

async fn answer_reserved(
    state: &AppState,
    caller: &Caller,
    project: &ProjectRow,
    asked: &Asked<'_>,
    client: std::sync::Arc<dyn autodev_domain::ModelClient>,
    model: &str,
) -> Result<(String, autodev_engine::ask::Answer), ApiError> {
    let Asked { question, earlier, on_text } = *asked;
    let searcher = state.engine.code.open_project(project).await.map_err(|e| match e {
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
    let prices = &state.engine.prices;
    let answer = autodev_engine::ask::ask_in(&searcher, client.as_ref(), prices, model, question, earlier, on_text)
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

/// Answers a question about a project the caller sees (`POST /api/v1/projects/{key}/ask`, the
/// UI's page, MCP's `ask`), as the API shows the answer.
pub async fn ask(state: &AppState, caller: &Caller, key: &str, question: &str) -> Result<AskAnswer, ApiError> {
    let prepared = prepare(state, caller, key, question, None).await?;
    prepared.answer(state, caller, None).await
}

/// A question checked and ready to answer: its project and the conversation it continues.
pub struct Prepared {
    project: ProjectRow,
    question: String,
    conversation: String,
    earlier: Vec<autodev_engine::ask::Turn>,
}

/// Checks everything a question needs before anything is spent or streamed: the role, the
/// question, the project, and the conversation (the caller's own, about that project).
pub async fn prepare(
    state: &AppState,
    caller: &Caller,
    key: &str,
    question: &str,
    conversation: Option<&str>,
) -> Result<Prepared, ApiError> {
    caller.require(AccessRole::Viewer)?;
    let question = valid_question(question)?.to_string();
    let project = caller.project(state, key).await?;
    let (conversation, earlier) = match conversation {
        None => (uuid::Uuid::now_v7().to_string(), Vec::new()),
        Some(id) => {
            let id = valid_conversation(id)?;
            let turns = state.store.ask_turns(id, Some(&caller.key.id), Some(&project.id)).await?.ok_or_else(|| {
                ApiError::not_found(format!(
                    "no conversation {id} about project {} for this key: leave `conversation` out to start one",
                    project.name
                ))
            })?;
            let earlier = turns
                .into_iter()
                .map(|t| autodev_engine::ask::Turn { question: t.question, answer: t.answer })
                .collect();
            (id.to_string(), earlier)
        }
    };
    Ok(Prepared { project, question, conversation, earlier })
}

impl Prepared {
    /// Answers the question, records it as the conversation's next turn and returns the
    /// answer as the API shows it.
    pub async fn answer(
        self,
        state: &AppState,
        caller: &Caller,
        on_text: Option<&autodev_domain::TextSink<'_>>,
    ) -> Result<AskAnswer, ApiError> {
        let (id, answer) = answer_in(state, caller, &self.project, &self.question, &self.earlier, on_text).await?;
        let text = answer.answer.clone();
        let turn = state
            .store
            .add_ask_turn(
                &self.conversation,
                Some(&caller.key.id),
                Some(&self.project.id),
                &self.question,
                &text,
                Some(&id),
            )
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no conversation {} for this key", self.conversation)))?;
        let mut view = AskAnswer::new(id, &self.project, &self.question, answer);
        view.conversation = self.conversation;
        view.turn = turn;
        Ok(view)
    }
}

impl Prepared {
    /// The answer as server-sent events, as the model writes it: `delta` (`{"text"}`), then
    /// `answer` (the [`AskAnswer`]) or `error` (`{"error": {"code", "message"}}`, the field
    /// folded into the message). The API's streamed answers and the UI's `/ask/stream`.
    pub fn stream(self, state: AppState, caller: Caller) -> axum::response::Response {
        use axum::response::IntoResponse;
        use axum::response::sse::{Event, KeepAlive, Sse};
        use futures::StreamExt;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
        tokio::spawn(async move {
            let deltas = tx.clone();
            let sink = move |text: &str| {
                let _ =
                    deltas.send(Event::default().event("delta").data(serde_json::json!({ "text": text }).to_string()));
            };
            let last = match self.answer(&state, &caller, Some(&sink)).await {
                Ok(a) => Event::default().event("answer").data(serde_json::to_string(&a).unwrap_or_default()),
                Err(e) => {
                    let message = match &e.field {
                        Some(f) => format!("{f}: {}", e.message),
                        None => e.message.clone(),
                    };
                    let body = serde_json::json!({"error": {"code": e.code, "message": message}});
                    Event::default().event("error").data(body.to_string())
                }
            };
            let _ = tx.send(last);
        });
        let events = futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).map(Ok::<_, std::convert::Infallible>);
        Sse::new(events).keep_alive(KeepAlive::default()).into_response()
    }
}

/// A conversation as listed (`GET /api/v1/ask/conversations`).
#[derive(Serialize, utoipa::ToSchema)]
pub struct ConversationView {
    pub id: String,
    /// The project's id.
    pub project_id: Option<String>,
    /// Its first question.
    pub title: String,
    pub turns: i64,
    pub updated_at_ms: i64,
}

/// One turn of a conversation (`GET /api/v1/ask/conversations/{id}`).
#[derive(Serialize, utoipa::ToSchema)]
pub struct TurnView {
    pub turn: i64,
    pub question: String,
    pub answer: String,
    /// The recorded question (its usage).
    pub ask_id: Option<String>,
    pub at_ms: i64,
}

/// The caller's conversations, the most recent first.
pub async fn conversations(state: &AppState, caller: &Caller) -> Result<Vec<ConversationView>, ApiError> {
    caller.require(AccessRole::Viewer)?;
    let rows = state.store.ask_conversations(Some(&caller.key.id), 200).await?;
    Ok(rows
        .into_iter()
        .map(|r| ConversationView {
            id: r.id,
            project_id: r.project_id,
            title: r.title,
            turns: r.turns,
            updated_at_ms: r.updated_at,
        })
        .collect())
}

/// The turns of one of the caller's conversations.
pub async fn conversation(state: &AppState, caller: &Caller, id: &str) -> Result<Vec<TurnView>, ApiError> {
    caller.require(AccessRole::Viewer)?;
    let id = valid_conversation(id).map_err(|_| ApiError::not_found(format!("no conversation {id}")))?;
    let turns = state
        .store
        .ask_turns(id, Some(&caller.key.id), None)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no conversation {id} for this key")))?;
    Ok(turns
        .into_iter()
        .map(|t| TurnView {
            turn: t.seq,
            question: t.question,
            answer: t.answer,
            ask_id: t.ask_id,
            at_ms: t.created_at,
        })
        .collect())
}

/// Deletes one of the caller's conversations (its usage stays counted).
pub async fn delete_conversation(state: &AppState, caller: &Caller, id: &str) -> Result<(), ApiError> {
    caller.require(AccessRole::Viewer)?;
    let id = valid_conversation(id).map_err(|_| ApiError::not_found(format!("no conversation {id}")))?;
    if state.store.delete_ask_conversation(id, Some(&caller.key.id)).await? {
        Ok(())
    } else {
        Err(ApiError::not_found(format!("no conversation {id} for this key")))
    }
}
