//! `/ask`: a question about a project's code, answered from its code index through the
//! API's own handler (so the same roles, validation, budgets and usage records).
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::html;
use serde::Deserialize;

use super::page::{Session, SignedForm, page, usd};
use crate::state::AppState;

#[derive(Deserialize, Default)]
pub struct AskForm {
    #[serde(default)]
    project: String,
    #[serde(default)]
    question: String,
    /// The conversation the question follows up (empty: a new one).
    #[serde(default)]
    conversation: String,
}

impl AskForm {
    fn conversation(&self) -> Option<&str> {
        Some(self.conversation.trim()).filter(|c| !c.is_empty())
    }
}

#[derive(Deserialize, Default)]
pub struct AskQuery {
    /// A conversation of the signed-in key to show and continue.
    #[serde(default)]
    conversation: Option<String>,
    #[serde(default)]
    project: Option<String>,
}

/// `/ask`, or `/ask?conversation=ID&project=NAME`: a conversation so far, ready to go on.
pub async fn page_get(State(state): State<AppState>, session: Session, Query(q): Query<AskQuery>) -> Response {
    let form = AskForm {
        project: q.project.unwrap_or_default(),
        question: String::new(),
        conversation: q.conversation.unwrap_or_default(),
    };
    render(&state, &session, &form, None, None, StatusCode::OK).await
}

fn shown(e: &crate::error::ApiError) -> String {
    match &e.field {
        Some(f) => format!("{f}: {}", e.message),
        None => e.message.clone(),
    }
}

pub async fn submit(State(state): State<AppState>, SignedForm { session, form }: SignedForm<AskForm>) -> Response {
    let caller = session.caller();
    let prepared =
        crate::service::ask::prepare(&state, &caller, &form.project, &form.question, form.conversation()).await;
    match prepared {
        Ok(p) => match p.answer(&state, &caller, None).await {
            Ok(answer) => {
                let form = AskForm { conversation: answer.conversation.clone(), question: String::new(), ..form };
                render(&state, &session, &form, Some(&answer), None, StatusCode::OK).await
            }
            Err(e) => render(&state, &session, &form, None, Some(&shown(&e)), e.status).await,
        },
        Err(e) => render(&state, &session, &form, None, Some(&shown(&e)), e.status).await,
    }
}

/// `POST /ask/stream` (the page's script): the answer as server-sent events, as the API
/// streams it (`delta` … `answer` | `error`); a refusal before the answer starts is a plain
/// error status with the message as text.
pub async fn stream(State(state): State<AppState>, SignedForm { session, form }: SignedForm<AskForm>) -> Response {
    let caller = session.caller();
    let prepared =
        match crate::service::ask::prepare(&state, &caller, &form.project, &form.question, form.conversation()).await {
            Ok(p) => p,
            Err(e) => return (e.status, shown(&e)).into_response(),
        };
    prepared.stream(state, caller)
}

async fn render(
    state: &AppState,
    session: &Session,
    form: &AskForm,
    answer: Option<&crate::service::ask::AskAnswer>,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let projects = super::page::visible_projects(state, session).await.unwrap_or_default();
    // The conversation so far (without the answer just given, shown below on its own).
    let mut earlier = match form.conversation() {
        Some(id) => state.store.ask_turns(id, Some(&session.key.id), None).await.ok().flatten().unwrap_or_default(),
        None => Vec::new(),
    };
    if answer.is_some() {
        earlier.pop();
    }
    let body = html! {
        h1 { "Ask the code" }
        @if let Some(e) = error { p.error role="alert" { (e) } }
        @if !earlier.is_empty() || answer.is_some() {
            p { "A conversation: each question is answered with the earlier ones. " a href=(state.url("/ask")) { "New conversation" } }
        }
        @if !earlier.is_empty() {
            section.earlier aria-labelledby="earlier-h" {
                h2 #earlier-h { "Earlier in this conversation" }
                @for t in &earlier {
                    div.turn {
                        p.question { strong { "Q: " } (t.question) }
                        pre.answer { (t.answer) }
                    }
                }
            }
        }
        @if projects.is_empty() {
            p { "There is no project yet. " a href=(state.url("/projects")) { "Create one" } " first." }
        } @else {
            form.card #ask-form method="post" action=(state.url("/ask")) data-stream=(state.url("/ask/stream")) {
                input type="hidden" name="csrf" value=(session.csrf);
                input type="hidden" name="conversation" value=(form.conversation);
                label for="project" { "Project" }
                select #project name="project" required {
                    @for p in &projects { option value=(p.name) selected[form.project == p.name] { (p.name) } }
                }
                label for="question" { "Question" }
                textarea #question name="question" rows="3" required maxlength="4000" aria-describedby="question-help" { (form.question) }
                p.help #question-help { "Answered by the model from the project's code index, with each place it cites checked." }
                button type="submit" { "Ask" }
            }
            // Filled as the answer is written (by the page's script).
            pre.answer #live-answer hidden aria-live="polite" {}
        }
        @if let Some(a) = answer {
            section aria-live="polite" aria-labelledby="answer-h" {
                h2 #answer-h { "Answer" }
                @if !a.citations_ok {
                    p.error role="status" { "Some citations do not check out against the index: read this answer with care." }
                }
                pre.answer { (a.answer) }
                @if !a.citations.is_empty() {
                    h3 { "Citations" }
                    ul.citations {
                        @for c in &a.citations {
                            li {
                                code { (c.path) ":" (c.start_line) "-" (c.end_line) }
                                @if c.valid { " " span.badge.ok { "checked" } }
                                @else { " " span.badge.bad { "not in the index" } }
                            }
                        }
                    }
                }
                h3 { "Excerpts given to the model" }
                ol.sources {
                    @for h in &a.sources {
                        li { code { (h.path) ":" (h.start_line) "-" (h.end_line) } " " (h.name) }
                    }
                }
                p.help {
                    (a.model) " · " (a.input_tokens) " in + " (a.output_tokens) " out tokens · "
                    (usd((a.cost_usd * 1e6).round() as i64))
                }
            }
        }
    };
    (status, Html(page(state, Some(session), "Ask", body).into_string())).into_response()
}
