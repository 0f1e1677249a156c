//! Webhooks in: GitHub, GitLab and Jira tickets become runs.
//!
//! Every endpoint checks its secret before it parses anything (GitHub and Jira Cloud: an
//! HMAC-SHA256 of the raw body, compared in constant time by `Mac::verify_slice`; GitLab and
//! Jira Data Center: a shared token, compared with `subtle`). A bad or missing signature is
//! 401 and nothing is stored. A body that is not JSON is 400. Then the delivery is stored
//! under its delivery id before anything acts on it, so a redelivery is answered and creates
//! nothing new. An endpoint whose secret is not configured answers 404 and accepts nothing.
//!
//! A ticket belongs to the project whose settings name it: `github_repo` (`owner/name`,
//! inferred from a GitHub repository URL), `gitlab_project` (`group/name`) or `jira_project`
//! (`KEY`). It starts a run when it is labelled with the trigger label (default `autodev`,
//! `AUTODEV_TRIGGER_LABEL`) or gets a comment starting with `/autodev` (the text after it is
//! added to the spec). One ticket has at most one active run: a trigger while one is active
//! is acknowledged and ignored. Ticket text is untrusted input; it only ever becomes a spec.
use autodev_domain::Spec;
use autodev_engine::{EngineError, RunSettings, checkout};
use autodev_store::ProjectRow;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use crate::app::{AppState, run_json};
use crate::commanders::{Commander, Rule, may_command};
use crate::error::ApiError;
use crate::extract::{ApiQuery, RawBody};

/// Webhook secrets and the trigger label.
#[derive(Clone, Debug, Default)]
pub struct WebhookConfig {
    pub github_secret: Option<SecretString>,
    pub gitlab_token: Option<SecretString>,
    pub jira_secret: Option<SecretString>,
    /// Defaults to `autodev`.
    pub trigger_label: Option<String>,
}

impl WebhookConfig {
    fn label(&self) -> &str {
        self.trigger_label.as_deref().filter(|l| !l.trim().is_empty()).unwrap_or("autodev")
    }
}

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Whether `sha256=<hex>` is the HMAC-SHA256 of `body` under `secret` (constant time).
pub fn signature_ok(secret: &str, body: &[u8], header: Option<&str>) -> bool {
    let Some(hex_sig) = header.and_then(|h| h.trim().strip_prefix("sha256=")) else { return false };
    let Ok(sig) = hex::decode(hex_sig) else { return false };
    let Ok(mut mac) = <HmacSha256 as KeyInit>::new_from_slice(secret.as_bytes()) else { return false };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

fn token_ok(expected: &str, given: Option<&str>) -> bool {
    given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(expected.as_bytes())))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn disabled(var: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "webhook_disabled", format!("this webhook is off: set {var} to enable it"))
}

/// The longest delivery id taken from a sender (GitHub's and GitLab's are UUIDs).
const MAX_DELIVERY_ID: usize = 200;

/// A delivery id from the sender (1 to 200 visible ASCII characters, else 422), or for
/// senders without one (or an empty header) the body's hash: the same body redelivered is the
/// same delivery.
fn delivery_id(headers: &HeaderMap, names: &[&str], body: &[u8]) -> Result<String, ApiError> {
    for name in names {
        let Some(value) = headers.get(*name).filter(|v| !v.is_empty()) else { continue };
        let id = value.as_bytes();
        if id.len() > MAX_DELIVERY_ID || !id.iter().all(u8::is_ascii_graphic) {
            return Err(ApiError::invalid(
                name,
                format!(
                    "a delivery id is 1 to {MAX_DELIVERY_ID} visible ASCII characters (no spaces); leave the header out to key the delivery by its body"
                ),
            ));
        }
        return Ok(String::from_utf8_lossy(id).into_owned());
    }
    use sha2::Digest;
    Ok(format!("sha256:{}", hex::encode(sha2::Sha256::digest(body))))
}

fn parse(body: &[u8]) -> Result<Value, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", format!("the body is not JSON: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", "the body is not a JSON object"));
    }
    Ok(v)
}

/// What a delivery asks for, once understood.
enum Intent {
    Ignore(String),
    Start(Ticket),
    /// Review feedback on a pull request: a follow-up run on its branch.
    FollowUp(Feedback),
}

/// Feedback on a pull request Autodev may have opened.
struct Feedback {
    /// The link the run that opened the pull request recorded (`github.pull_request`,
    /// `gitlab.merge_request`), and its value, the pull request's page: how that run is found.
    link: &'static str,
    pr_url: String,
    /// `github:owner/name#<pr number>`: one active run per pull request.
    origin: String,
    /// What to do, for the spec: the instruction, and for a review comment its file, line and
    /// diff hunk.
    text: String,
    /// `github` or `gitlab`, and the repository there: where the author's permission is asked.
    source: &'static str,
    place: String,
    /// Who wrote it (checked with the forge before anything runs).
    by: Commander,
}

struct Ticket {
    /// How the project names the ticket's home: `owner/name`, `group/name` or a Jira key.
    place: String,
    /// `github:owner/name#12`, `gitlab:group/name#3`, `jira:PROJ-7`.
    origin: String,
    title: String,
    body: String,
    url: Option<String>,
    /// Text after `/autodev` in a comment.
    extra: Option<String>,
    /// The comment's author, when a comment (not a label) asked: checked with the forge.
    by: Option<Commander>,
}

/// The author of a GitHub comment or review (its `user`, else the delivery's `sender`).
fn github_author(item: &Value, v: &Value) -> Commander {
    let login = str_at(item, &["user", "login"]).or_else(|| str_at(v, &["sender", "login"])).unwrap_or_default();
    Commander { login: login.to_string(), gitlab_id: None }
}

/// The author of a GitLab note.
fn gitlab_author(v: &Value) -> Commander {
    Commander {
        login: str_at(v, &["user", "username"]).unwrap_or_default().to_string(),
        gitlab_id: v["user"]["id"].as_i64().or_else(|| v["object_attributes"]["author_id"].as_i64()),
    }
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k)).and_then(Value::as_str)
}

/// The text after a leading `/autodev` (case-sensitive, as a command), if the comment is one.
fn command_text(comment: &str) -> Option<String> {
    let rest = comment.trim_start().strip_prefix("/autodev")?;
    if rest.chars().next().is_some_and(|c| !c.is_whitespace()) {
        return None;
    }
    Some(rest.trim().to_string())
}

fn github_intent(event: &str, v: &Value, label: &str) -> Intent {
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
        other => Intent::Ignore(format!(
            "event {other}{} is not a trigger",
            if action.is_empty() { String::new() } else { format!(".{action}") }
        )),
    }
}

fn gitlab_intent(v: &Value, label: &str) -> Intent {
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
        other => Intent::Ignore(format!("object_kind {other} is not a trigger")),
    }
}

/// Plain text of a Jira description: a string (REST v2, wiki markup) or an Atlassian
/// Document Format tree (v3), whose text nodes are joined by block.
fn jira_text(v: &Value) -> String {
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

fn jira_intent(v: &Value, label: &str) -> Intent {
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

/// The project a ticket belongs to: settings `github_repo`/`gitlab_project`/`jira_project`,
/// or for GitHub a repository URL on github.com naming the same repository.
async fn project_for(state: &AppState, source: &str, place: &str) -> Result<Option<ProjectRow>, ApiError> {
    let key = match source {
        "github" => "github_repo",
        "gitlab" => "gitlab_project",
        _ => "jira_project",
    };
    let projects = state.store.list_projects().await?;
    Ok(projects.into_iter().find(|p| {
        let settings: Value = serde_json::from_str(&p.settings).unwrap_or(Value::Null);
        if settings[key].as_str().is_some_and(|s| s.eq_ignore_ascii_case(place)) {
            return true;
        }
        source == "github" && github_repo_of(&p.repository).is_some_and(|r| r.eq_ignore_ascii_case(place))
    }))
}

/// `owner/name` of a GitHub clone URL (`https://github.com/o/n(.git)` or `git@github.com:o/n.git`).
pub fn github_repo_of(repository: &str) -> Option<String> {
    let rest = repository
        .strip_prefix("https://github.com/")
        .or_else(|| repository.strip_prefix("http://github.com/"))
        .or_else(|| repository.strip_prefix("git@github.com:"))
        .or_else(|| repository.strip_prefix("ssh://git@github.com/"))?;
    let rest = rest.trim_end_matches('/').trim_end_matches(".git");
    let mut parts = rest.split('/');
    let (owner, name) = (parts.next()?, parts.next()?);
    (!owner.is_empty() && !name.is_empty()).then(|| format!("{owner}/{name}"))
}

/// Acts on an understood delivery: creates the run, or says why not. Returns the HTTP
/// status, the answer, the outcome to store and the run id.
async fn act(
    state: &AppState,
    source: &str,
    intent: Intent,
) -> Result<(StatusCode, Value, String, Option<String>), ApiError> {
    let ticket = match intent {
        Intent::Ignore(why) => {
            return Ok((StatusCode::OK, json!({"status": "ignored", "reason": why}), format!("ignored: {why}"), None));
        }
        Intent::FollowUp(feedback) => return follow_up(state, feedback).await,
        Intent::Start(t) => t,
    };
    let ignored = |why: String| {
        Ok((StatusCode::OK, json!({"status": "ignored", "reason": why}), format!("ignored: {why}"), None))
    };
    let Some(project) = project_for(state, source, &ticket.place).await? else {
        return ignored(format!("no project is configured for {source} `{}`", ticket.place));
    };
    if let Some(by) = &ticket.by
        && let Err(why) = may_command(state, source, &ticket.place, by, &Rule::of(&project.settings)).await
    {
        tracing::warn!(source, place = %ticket.place, login = %by.login, "{why}");
        return ignored(why);
    }
    if let Some(active) = state.store.active_run_for_origin(&ticket.origin).await? {
        return ignored(format!("run {} for {} is still {}", active.short_id, ticket.origin, active.state));
    }
    let mut text = format!("# {}\n\n{}\n", ticket.title.trim(), ticket.body.trim());
    if let Some(extra) = ticket.extra.as_deref().filter(|e| !e.is_empty()) {
        text.push_str(&format!("\n## Requested in a comment\n\n{extra}\n"));
    }
    if let Some(url) = &ticket.url {
        text.push_str(&format!("\nTicket: {url}\n"));
    }
    let spec = match Spec::parse(text.as_bytes()) {
        Ok(spec) => spec,
        Err(e) => return ignored(format!("the ticket is not a usable spec: {e}")),
    };
    let settings =
        RunSettings { test_command: project.test_command.clone().unwrap_or_default(), ..state.models.run_settings() };
    if let Err(e) = state.models.check(&settings) {
        return ignored(format!("no model client: {e}"));
    }
    let req = checkout::ProjectRun {
        project: &project,
        spec,
        settings,
        origin: Some(ticket.origin.clone()),
        audit: None,
        base_branch: None,
    };
    match checkout::enqueue(&state.store, req).await {
        Ok((run, _)) => {
            tracing::info!(run = %run.id, origin = %ticket.origin, "run created from a webhook");
            let id = run.id.clone();
            Ok((
                StatusCode::CREATED,
                json!({"status": "created", "run": run_json(&run)}),
                "run created".into(),
                Some(id),
            ))
        }
        Err(EngineError::Store(e)) => Err(e.into()),
        Err(e) => ignored(e.to_string()),
    }
}

/// Review feedback becomes a follow-up run of the run that opened the pull request: the
/// original spec plus the feedback, started from the pull request's branch and delivered onto
/// it (a fast-forward push, so the same pull request shows the new commits). Pull requests
/// Autodev did not open are ignored, and one run per pull request is active at a time.
async fn follow_up(
    state: &AppState,
    feedback: Feedback,
) -> Result<(StatusCode, Value, String, Option<String>), ApiError> {
    let ignored = |why: String| {
        Ok((StatusCode::OK, json!({"status": "ignored", "reason": why}), format!("ignored: {why}"), None))
    };
    let Some(parent_id) = state.store.run_for_link(feedback.link, &feedback.pr_url).await? else {
        return ignored(format!("{} was not opened by Autodev", feedback.pr_url));
    };
    let parent = state.store.get_run(&parent_id).await?;
    if let Some(active) = state.store.active_run_for_origin(&feedback.origin).await? {
        return ignored(format!("run {} for {} is still {}", active.short_id, feedback.origin, active.state));
    }
    let Some(project) = (match &parent.project_id {
        Some(id) => state.store.find_project(id).await.ok(),
        None => None,
    }) else {
        return ignored("the run that opened the pull request has no project any more".into());
    };
    if let Err(why) =
        may_command(state, feedback.source, &feedback.place, &feedback.by, &Rule::of(&project.settings)).await
    {
        tracing::warn!(source = feedback.source, place = %feedback.place, login = %feedback.by.login, "{why}");
        return ignored(why);
    }
    let mut settings: RunSettings = serde_json::from_str(&parent.settings).unwrap_or_default();
    let branch = settings.deliver_branch.clone().unwrap_or_else(|| parent.branch.clone());
    settings.deliver_branch = Some(branch.clone());
    // The gates stay as the project and the operator set them (the parent's settings carry
    // the project's delivery gate and protected paths; the plan gate is the operator's):
    // nothing a comment carries turns one off.
    settings.approval = settings.approval || state.models.run_settings().approval;
    settings.config_warnings.clear();
    if let Err(e) = state.models.check(&settings) {
        return ignored(format!("no model client: {e}"));
    }
    let text = format!(
        "{}\n\n## Review feedback on {}\n\nThe work above is on branch `{branch}` already. Change it as this feedback asks, keeping what is right:\n\n{}\n",
        parent.spec.trim_end(),
        feedback.pr_url,
        feedback.text.trim()
    );
    let spec = match Spec::from_text(&text) {
        Ok(spec) => spec,
        Err(e) => return ignored(format!("the feedback is not a usable spec: {e}")),
    };
    let req = checkout::ProjectRun {
        project: &project,
        spec,
        settings,
        origin: Some(feedback.origin.clone()),
        audit: None,
        base_branch: Some(branch),
    };
    match checkout::enqueue(&state.store, req).await {
        Ok((run, _)) => {
            tracing::info!(run = %run.id, parent = %parent.id, pr = %feedback.pr_url, "follow-up run created from review feedback");
            let id = run.id.clone();
            Ok((
                StatusCode::CREATED,
                json!({"status": "created", "run": run_json(&run)}),
                "follow-up run created".into(),
                Some(id),
            ))
        }
        Err(autodev_engine::EngineError::Store(e)) => Err(e.into()),
        Err(e) => ignored(format!("could not create the follow-up run: {e}")),
    }
}

/// Stores the delivery, acts once, records the outcome. A redelivery answers 200 with the
/// first outcome and does nothing.
async fn deliver(
    state: &AppState,
    source: &str,
    id: &str,
    event: &str,
    intent: impl FnOnce() -> Intent,
) -> Result<Response, ApiError> {
    if !state.store.record_delivery(source, id, event).await? {
        let seen = state.store.delivery(source, id).await?;
        let (outcome, run) = seen.unwrap_or((None, None));
        return Ok((
            StatusCode::OK,
            Json(json!({"status": "duplicate", "delivery": id, "outcome": outcome, "run_id": run})),
        )
            .into_response());
    }
    let (status, mut body, outcome, run_id) = act(state, source, intent()).await?;
    state.store.finish_delivery(source, id, &outcome, run_id.as_deref()).await?;
    state
        .store
        .audit(
            None,
            "POST",
            &format!("/webhooks/{source}"),
            status.as_u16(),
            Some(&format!("delivery {id}: {outcome}")),
        )
        .await?;
    body["delivery"] = json!(id);
    Ok((status, Json(body)).into_response())
}

/// `POST /webhooks/github`.
pub async fn github(
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
    deliver(&state, "github", &id, &event, || github_intent(&event, &v, &label)).await
}

/// `POST /webhooks/gitlab`.
pub async fn gitlab(
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
    deliver(&state, "gitlab", &id, &event, || gitlab_intent(&v, &label)).await
}

/// Jira's query string: other parameters are the admin's own (Jira URLs may carry variables
/// such as `?issue=${issue.key}`), so they are allowed.
#[derive(serde::Deserialize)]
pub struct JiraQuery {
    secret: Option<String>,
}

/// `POST /webhooks/jira`: Jira Cloud signs the body (`X-Hub-Signature: sha256=…`); Jira Data
/// Center cannot, so the secret may instead come in the URL (`?secret=…`).
pub async fn jira(
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
    deliver(&state, "jira", &id, &event, || jira_intent(&v, &label)).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

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

    #[test]
    fn signatures_and_commands() {
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(b"s").unwrap();
        mac.update(b"body");
        let good = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert!(signature_ok("s", b"body", Some(&good)));
        assert!(!signature_ok("s", b"body!", Some(&good)));
        assert!(!signature_ok("t", b"body", Some(&good)));
        assert!(!signature_ok("s", b"body", None));
        assert!(!signature_ok("s", b"body", Some("sha1=00")));
        assert_eq!(command_text("/autodev please add tests").as_deref(), Some("please add tests"));
        assert_eq!(command_text("  /autodev").as_deref(), Some(""));
        assert_eq!(command_text("/autodevx"), None);
        assert_eq!(command_text("see /autodev"), None);
        assert_eq!(github_repo_of("https://github.com/o/n.git").as_deref(), Some("o/n"));
        assert_eq!(github_repo_of("git@github.com:o/n.git").as_deref(), Some("o/n"));
        assert_eq!(github_repo_of("/srv/n"), None);
    }
}
