//! `/ask`: a question about a project's code, answered from its code index through the
//! API's own handler (so the same roles, validation, budgets and usage records).
use axum::extract::State;
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
}

pub async fn page_get(State(state): State<AppState>, session: Session) -> Response {
    render(&state, &session, &AskForm::default(), None, None, StatusCode::OK).await
}

pub async fn submit(State(state): State<AppState>, SignedForm { session, form }: SignedForm<AskForm>) -> Response {
    match crate::service::ask::ask(&state, &session.caller(), &form.project, &form.question).await {
        Ok(answer) => render(&state, &session, &form, Some(&answer), None, StatusCode::OK).await,
        Err(e) => {
            let message = match &e.field {
                Some(f) => format!("{f}: {}", e.message),
                None => e.message.clone(),
            };
            render(&state, &session, &form, None, Some(&message), e.status).await
        }
    }
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
    let body = html! {
        h1 { "Ask the code" }
        @if let Some(e) = error { p.error role="alert" { (e) } }
        @if projects.is_empty() {
            p { "There is no project yet. " a href=(state.url("/projects")) { "Create one" } " first." }
        } @else {
            form.card method="post" action=(state.url("/ask")) {
                input type="hidden" name="csrf" value=(session.csrf);
                label for="project" { "Project" }
                select #project name="project" required {
                    @for p in &projects { option value=(p.name) selected[form.project == p.name] { (p.name) } }
                }
                label for="question" { "Question" }
                textarea #question name="question" rows="3" required maxlength="4000" aria-describedby="question-help" { (form.question) }
                p.help #question-help { "Answered by the model from the project's code index, with each place it cites checked." }
                button type="submit" { "Ask" }
            }
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
