//! `POST /webhooks/jira`: issues and comments from Jira (Cloud signs; Data Center sends a token).
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use secrecy::ExposeSecret;
use serde_json::Value;

use super::{Intent, Ticket, delivery_id, disabled, header, parse, receipt, signature_ok, str_at, token_ok};
use crate::error::ApiError;
use crate::extract::{ApiQuery, RawBody};
use crate::state::AppState;

/// Plain text of a Jira description: a string (REST v2, wiki markup) or an Atlassian
/// Document Format tree (v3), whose text nodes are joined by block.
pub(super) fn jira_text(v: &Value) -> String {
    fn walk(v: &Value, out: &mut String) {
        if let Some(t) = v["text"].as_str() {
            out.push_str(t);
        }
        if let Some(children) = v["content"].as_array() {
            for c in children {
                walk(c, out);
            }
            if matches!(v["type"].as_str(), Some("paragraph" | "heading" | "listItem" | "codeBlock")) {
                out.push('\n');
            }
        }
    }
    match v {
        Value::String(s) => s.clone(),
        Value::Object(_) => {
            let mut out = String::new();
            walk(v, &mut out);
            out.trim_end().to_string()
        }
        _ => String::new(),
    }
}

pub(super) fn jira_intent(v: &Value, label: &str) -> Intent {
    let event = str_at(v, &["webhookEvent"]).unwrap_or_default();
    let issue = &v["issue"];
    let Some(key) = str_at(issue, &["key"]) else { return Intent::Ignore("no issue in the payload".into()) };
    let project = str_at(issue, &["fields", "project", "key"])
        .map(str::to_string)
        .unwrap_or_else(|| key.split('-').next().unwrap_or_default().to_string());
    let has_label = issue["fields"]["labels"].as_array().is_some_and(|ls| ls.iter().any(|l| l.as_str() == Some(label)));
    let label_added = v["changelog"]["items"].as_array().is_some_and(|items| {
        items.iter().any(|i| {
            i["field"].as_str() == Some("labels")
                && i["toString"].as_str().is_some_and(|to| to.split_whitespace().any(|l| l == label))
                && !i["fromString"].as_str().is_some_and(|from| from.split_whitespace().any(|l| l == label))
        })
    });
    let triggered = match event {
        "jira:issue_created" => has_label,
        "jira:issue_updated" => label_added,
        _ => false,
    };
    let url =
        str_at(issue, &["self"]).and_then(|s| s.split("/rest/").next()).map(|base| format!("{base}/browse/{key}"));
    if !triggered {
        return Intent::Ignore(format!("{event} without the `{label}` label added"));
    }
    Intent::Start(Ticket {
        place: project,
        origin: format!("jira:{key}"),
        title: str_at(issue, &["fields", "summary"]).unwrap_or_default().to_string(),
        body: jira_text(&issue["fields"]["description"]),
        url,
        extra: None,
        by: None,
    })
}

/// Jira's query string: other parameters are the admin's own (Jira URLs may carry variables
/// such as `?issue=${issue.key}`), so they are allowed.
#[derive(serde::Deserialize)]
pub struct JiraQuery {
    secret: Option<String>,
}

/// `POST /webhooks/jira`: Jira Cloud signs the body (`X-Hub-Signature: sha256=…`); Jira Data
/// Center cannot, so the secret may instead come in the URL (`?secret=…`).
pub async fn receive(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<JiraQuery>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let secret = state.webhooks.jira_secret.as_ref().ok_or_else(|| disabled("AUTODEV_JIRA_WEBHOOK_SECRET"))?;
    let signed = signature_ok(secret.expose_secret(), &body, header(&headers, "x-hub-signature"));
    if !signed && !token_ok(secret.expose_secret(), q.secret.as_deref()) {
        return Err(ApiError::unauthorized("X-Hub-Signature does not match the body and no valid ?secret= was given"));
    }
    let v = parse(&body)?;
    let event = str_at(&v, &["webhookEvent"]).unwrap_or("unknown").to_string();
    let id = delivery_id(&headers, &["x-atlassian-webhook-identifier"], &body)?;
    let label = state.webhooks.label().to_string();
    receipt::receive(&state, "jira", &id, &event, || jira_intent(&v, &label)).await
}
