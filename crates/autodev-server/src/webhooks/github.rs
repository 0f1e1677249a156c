//! `POST /webhooks/github`: issues, comments, reviews and pull requests from GitHub; checks,
//! merges and deployments of Autodev's pull requests.
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use super::{
    Feedback, Intent, Ticket, command_text, delivery_id, disabled, header, parse, receipt, signature_ok, str_at,
};
use crate::commanders::Commander;
use crate::error::ApiError;
use crate::extract::RawBody;
use crate::state::AppState;

/// The author of a GitHub comment or review (its `user`, else the delivery's `sender`).
pub(super) fn github_author(item: &Value, v: &Value) -> Commander {
    let login = str_at(item, &["user", "login"]).or_else(|| str_at(v, &["sender", "login"])).unwrap_or_default();
    Commander { login: login.to_string(), gitlab_id: None }
}

pub(super) fn github_intent(event: &str, v: &Value, label: &str) -> Intent {
    let Some(repo) = str_at(v, &["repository", "full_name"]) else {
        return Intent::Ignore("no repository in the payload".into());
    };
    let issue = &v["issue"];
    let number = issue["number"].as_i64().unwrap_or_default();
    let ticket = |extra, by| Ticket {
        place: repo.to_string(),
        origin: format!("github:{repo}#{number}"),
        title: str_at(issue, &["title"]).unwrap_or_default().to_string(),
        body: str_at(issue, &["body"]).unwrap_or_default().to_string(),
        url: str_at(issue, &["html_url"]).map(str::to_string),
        extra,
        by,
    };
    let action = str_at(v, &["action"]).unwrap_or_default();
    match event {
        "issues" => {
            let has_label = |labels: &Value| {
                labels.as_array().is_some_and(|ls| ls.iter().any(|l| l["name"].as_str() == Some(label)))
            };
            let triggered = match action {
                "labeled" => str_at(v, &["label", "name"]) == Some(label),
                "opened" | "reopened" => has_label(&issue["labels"]),
                _ => false,
            };
            if triggered {
                Intent::Start(ticket(None, None))
            } else {
                Intent::Ignore(format!("issues.{action} without the `{label}` label"))
            }
        }
        // On a pull request, `/autodev …` is feedback for the run that opened it.
        "issue_comment" if action == "created" && issue["pull_request"].is_object() => {
            match str_at(v, &["comment", "body"]).and_then(command_text) {
                Some(extra) if !extra.is_empty() => Intent::FollowUp(Feedback {
                    link: "github.pull_request",
                    pr_url: str_at(issue, &["pull_request", "html_url"]).unwrap_or_default().to_string(),
                    origin: format!("github:{repo}#{number}"),
                    text: extra,
                    source: "github",
                    place: repo.to_string(),
                    by: github_author(&v["comment"], v),
                }),
                Some(_) => Intent::Ignore("`/autodev` on a pull request needs an instruction after it".into()),
                None => Intent::Ignore("the comment does not start with /autodev".into()),
            }
        }
        "issue_comment" if action == "created" => match str_at(v, &["comment", "body"]).and_then(command_text) {
            Some(extra) => Intent::Start(ticket(Some(extra), Some(github_author(&v["comment"], v)))),
            None => Intent::Ignore("the comment does not start with /autodev".into()),
        },
        "pull_request_review_comment" if action == "created" => {
            let comment = &v["comment"];
            match str_at(comment, &["body"]).and_then(command_text).filter(|t| !t.is_empty()) {
                Some(instruction) => {
                    let path = str_at(comment, &["path"]).unwrap_or("?");
                    let line = comment["line"].as_i64().or_else(|| comment["original_line"].as_i64());
                    let hunk = str_at(comment, &["diff_hunk"]).unwrap_or_default();
                    let at = line.map(|l| format!("{path}, line {l}")).unwrap_or_else(|| path.to_string());
                    Intent::FollowUp(Feedback {
                        link: "github.pull_request",
                        pr_url: str_at(v, &["pull_request", "html_url"]).unwrap_or_default().to_string(),
                        origin: format!("github:{repo}#{}", v["pull_request"]["number"].as_i64().unwrap_or_default()),
                        text: format!("{instruction}\n\nOn {at}:\n\n```diff\n{hunk}\n```"),
                        source: "github",
                        place: repo.to_string(),
                        by: github_author(comment, v),
                    })
                }
                None => Intent::Ignore("the review comment does not start with /autodev".into()),
            }
        }
        "pull_request_review" if action == "submitted" => {
            let review = &v["review"];
            if str_at(review, &["state"]).is_some_and(|s| s.eq_ignore_ascii_case("changes_requested")) {
                Intent::FollowUp(Feedback {
                    link: "github.pull_request",
                    pr_url: str_at(v, &["pull_request", "html_url"]).unwrap_or_default().to_string(),
                    origin: format!("github:{repo}#{}", v["pull_request"]["number"].as_i64().unwrap_or_default()),
                    text: str_at(review, &["body"])
                        .filter(|b| !b.trim().is_empty())
                        .unwrap_or("Changes were requested in a review without a summary; see the review comments.")
                        .to_string(),
                    source: "github",
                    place: repo.to_string(),
                    by: github_author(review, v),
                })
            } else {
                Intent::Ignore("a review that does not request changes".into())
            }
        }
        "check_suite" | "check_run" | "workflow_run" if action == "completed" => {
            match super::after::github_checks(event, v, repo) {
                Ok(news) => Intent::After(news),
                Err(why) => Intent::Ignore(why),
            }
        }
        "pull_request" if action == "closed" => Intent::After(super::after::github_closed(v, repo)),
        "deployment_status" => match super::after::github_deployment(v, repo) {
            Ok(news) => Intent::After(news),
            Err(why) => Intent::Ignore(why),
        },
        other => Intent::Ignore(format!(
            "event {other}{} is not a trigger",
            if action.is_empty() { String::new() } else { format!(".{action}") }
        )),
    }
}

/// `POST /webhooks/github`.
pub async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let secret = state.webhooks.github_secret.as_ref().ok_or_else(|| disabled("AUTODEV_GITHUB_WEBHOOK_SECRET"))?;
    if !signature_ok(secret.expose_secret(), &body, header(&headers, "x-hub-signature-256")) {
        return Err(ApiError::unauthorized("X-Hub-Signature-256 is missing or does not match the body"));
    }
    let event = header(&headers, "x-github-event")
        .filter(|e| !e.trim().is_empty())
        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "missing_header", "X-GitHub-Event is missing"))?
        .to_string();
    let v = parse(&body)?;
    if event == "ping" {
        return Ok(
            (StatusCode::OK, Json(json!({"status": "pong", "zen": v["zen"], "hook_id": v["hook_id"]}))).into_response()
        );
    }
    let id = delivery_id(&headers, &["x-github-delivery"], &body)?;
    let label = state.webhooks.label().to_string();
    receipt::receive(&state, "github", &id, &event, || github_intent(&event, &v, &label)).await
}
