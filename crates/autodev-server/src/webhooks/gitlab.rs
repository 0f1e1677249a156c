//! `POST /webhooks/gitlab`: issues, notes and merge requests from GitLab; pipelines, merges
//! and deployments of Autodev's merge requests.
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use secrecy::ExposeSecret;
use serde_json::Value;

use super::{Feedback, Intent, Ticket, command_text, delivery_id, disabled, header, parse, receipt, str_at, token_ok};
use crate::commanders::Commander;
use crate::error::ApiError;
use crate::extract::RawBody;
use crate::state::AppState;

/// The author of a GitLab note.
pub(super) fn gitlab_author(v: &Value) -> Commander {
    Commander {
        login: str_at(v, &["user", "username"]).unwrap_or_default().to_string(),
        gitlab_id: v["user"]["id"].as_i64().or_else(|| v["object_attributes"]["author_id"].as_i64()),
    }
}

pub(super) fn gitlab_intent(v: &Value, label: &str) -> Intent {
    let Some(project) = str_at(v, &["project", "path_with_namespace"]) else {
        return Intent::Ignore("no project in the payload".into());
    };
    let titles = |labels: &Value| -> Vec<String> {
        labels
            .as_array()
            .map(|ls| ls.iter().filter_map(|l| l["title"].as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    };
    match str_at(v, &["object_kind"]).unwrap_or_default() {
        "issue" => {
            let attrs = &v["object_attributes"];
            let iid = attrs["iid"].as_i64().unwrap_or_default();
            let action = str_at(attrs, &["action"]).unwrap_or_default();
            let now = titles(&v["labels"]);
            let before = titles(&v["changes"]["labels"]["previous"]);
            let added = now.iter().any(|l| l == label) && !before.iter().any(|l| l == label);
            let triggered = match action {
                "open" | "reopen" => now.iter().any(|l| l == label),
                "update" => added && v["changes"]["labels"].is_object(),
                _ => false,
            };
            if !triggered {
                return Intent::Ignore(format!("issue {action} without the `{label}` label added"));
            }
            Intent::Start(Ticket {
                place: project.to_string(),
                origin: format!("gitlab:{project}#{iid}"),
                title: str_at(attrs, &["title"]).unwrap_or_default().to_string(),
                body: str_at(attrs, &["description"]).unwrap_or_default().to_string(),
                url: str_at(attrs, &["url"]).map(str::to_string),
                extra: None,
                by: None,
            })
        }
        // On a merge request, `/autodev …` is feedback for the run that opened it.
        "note" if str_at(v, &["object_attributes", "noteable_type"]) == Some("MergeRequest") => {
            let attrs = &v["object_attributes"];
            let Some(instruction) = str_at(attrs, &["note"]).and_then(command_text).filter(|t| !t.is_empty()) else {
                return Intent::Ignore("the merge request note does not start with /autodev and an instruction".into());
            };
            let mr = &v["merge_request"];
            let position = &attrs["position"];
            let text = match (str_at(position, &["new_path"]), position["new_line"].as_i64()) {
                (Some(path), Some(line)) => format!("{instruction}\n\nOn {path}, line {line}."),
                (Some(path), None) => format!("{instruction}\n\nOn {path}."),
                _ => instruction,
            };
            Intent::FollowUp(Feedback {
                link: "gitlab.merge_request",
                pr_url: str_at(mr, &["url"]).unwrap_or_default().to_string(),
                origin: format!("gitlab:{project}!{}", mr["iid"].as_i64().unwrap_or_default()),
                text,
                source: "gitlab",
                place: project.to_string(),
                by: gitlab_author(v),
            })
        }
        "note" => {
            let issue = &v["issue"];
            if !issue.is_object() || str_at(v, &["object_attributes", "noteable_type"]) != Some("Issue") {
                return Intent::Ignore("a note not on an issue".into());
            }
            let Some(extra) = str_at(v, &["object_attributes", "note"]).and_then(command_text) else {
                return Intent::Ignore("the note does not start with /autodev".into());
            };
            let iid = issue["iid"].as_i64().unwrap_or_default();
            Intent::Start(Ticket {
                place: project.to_string(),
                origin: format!("gitlab:{project}#{iid}"),
                title: str_at(issue, &["title"]).unwrap_or_default().to_string(),
                body: str_at(issue, &["description"]).unwrap_or_default().to_string(),
                url: str_at(issue, &["url"]).map(str::to_string),
                extra: Some(extra),
                by: Some(gitlab_author(v)),
            })
        }
        kind @ ("pipeline" | "merge_request" | "deployment") => {
            let read = match kind {
                "pipeline" => super::after::gitlab_pipeline(v, project),
                "merge_request" => super::after::gitlab_merge_request(v, project),
                _ => super::after::gitlab_deployment(v, project),
            };
            match read {
                Ok(news) => Intent::After(news),
                Err(why) => Intent::Ignore(why),
            }
        }
        other => Intent::Ignore(format!("object_kind {other} is not a trigger")),
    }
}

/// `POST /webhooks/gitlab`.
pub async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let token = state.webhooks.gitlab_token.as_ref().ok_or_else(|| disabled("AUTODEV_GITLAB_WEBHOOK_TOKEN"))?;
    if !token_ok(token.expose_secret(), header(&headers, "x-gitlab-token")) {
        return Err(ApiError::unauthorized("X-Gitlab-Token is missing or wrong"));
    }
    let v = parse(&body)?;
    let event = header(&headers, "x-gitlab-event").unwrap_or("unknown").to_string();
    let id = delivery_id(&headers, &["x-gitlab-event-uuid", "idempotency-key"], &body)?;
    let label = state.webhooks.label().to_string();
    receipt::receive(&state, "gitlab", &id, &event, || gitlab_intent(&v, &label)).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    /// A `/autodev` note on a merge request (GitLab's "Comment on merge request" shape, with
    /// a diff position) is feedback for the run that opened it.
    #[test]
    fn a_merge_request_note_is_feedback() {
        let payload = serde_json::json!({
            "object_kind": "note",
            "event_type": "note",
            "project": {"id": 5, "path_with_namespace": "gitlabhq/gitlab-test"},
            "object_attributes": {
                "id": 1244, "note": "/autodev Rename the helper", "noteable_type": "MergeRequest",
                "position": {"new_path": "src/lib.rs", "new_line": 12, "old_path": "src/lib.rs", "old_line": null},
                "url": "http://example.com/gitlabhq/gitlab-test/-/merge_requests/1#note_1244"
            },
            "merge_request": {"iid": 1, "url": "http://example.com/gitlabhq/gitlab-test/-/merge_requests/1", "source_branch": "autodev/abcd1234-x"}
        });
        match super::gitlab_intent(&payload, "autodev") {
            super::Intent::FollowUp(f) => {
                assert_eq!(f.link, "gitlab.merge_request");
                assert_eq!(f.pr_url, "http://example.com/gitlabhq/gitlab-test/-/merge_requests/1");
                assert_eq!(f.origin, "gitlab:gitlabhq/gitlab-test!1");
                assert!(f.text.contains("Rename the helper") && f.text.contains("src/lib.rs, line 12"), "{}", f.text);
            }
            _ => panic!("not a follow-up"),
        }
    }
}
