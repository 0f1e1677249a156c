//! Webhooks in (receipts): GitHub, GitLab and Jira tickets become runs.
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
//!
//! # Layout
//! - this module: the secrets, signature and token checks, delivery ids, and what a delivery
//!   asks for ([`Intent`]), shared by the vendors;
//! - `github`, `gitlab`, `jira`: each vendor's endpoint and how its payloads are read;
//! - `receipt`: a receipt stored before anything acts on it, then acted on once (a run
//!   created, a follow-up run, or the reason nothing happened).
//! - `after`: news of Autodev's own pull requests (checks, CI follow-ups, merges,
//!   deployments) onto the run's delivery timeline.
mod after;
pub mod github;
pub mod gitlab;
pub mod jira;
mod receipt;

use crate::commanders::Commander;
use crate::error::ApiError;
use axum::http::{HeaderMap, StatusCode};
use hmac::{KeyInit, Mac};
use secrecy::SecretString;
use serde_json::Value;
use subtle::ConstantTimeEq;

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

pub(super) fn token_ok(expected: &str, given: Option<&str>) -> bool {
    given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(expected.as_bytes())))
}

pub(super) fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

pub(super) fn disabled(var: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "webhook_disabled", format!("this webhook is off: set {var} to enable it"))
}

/// The longest delivery id taken from a sender (GitHub's and GitLab's are UUIDs).
pub(super) const MAX_DELIVERY_ID: usize = 200;

/// A delivery id from the sender (1 to 200 visible ASCII characters, else 422), or for
/// senders without one (or an empty header) the body's hash: the same body redelivered is the
/// same delivery.
pub(super) fn delivery_id(headers: &HeaderMap, names: &[&str], body: &[u8]) -> Result<String, ApiError> {
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

pub(super) fn parse(body: &[u8]) -> Result<Value, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", format!("the body is not JSON: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", "the body is not a JSON object"));
    }
    Ok(v)
}

/// What a delivery asks for, once understood.
pub(super) enum Intent {
    Ignore(String),
    Start(Ticket),
    /// Review feedback on a pull request: a follow-up run on its branch.
    FollowUp(Feedback),
    /// News of a pull request Autodev opened: checks, a merge, a deployment.
    After(News),
}

/// Feedback on a pull request Autodev may have opened.
pub(super) struct Feedback {
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

/// What the forge said happened.
pub(crate) enum News {
    Checks(Checks),
    Closed(Closed),
    Deployment(Deployment),
}

/// Finished checks on a commit.
pub(crate) struct Checks {
    pub source: &'static str,
    /// `owner/name` or `group/name`.
    pub place: String,
    /// The run link a pull request is recorded under (`github.pull_request`…).
    pub link: &'static str,
    /// The pull requests the commit heads: their pages and origins (`github:o/n#2`).
    pub pulls: Vec<(String, String)>,
    pub sha: String,
    pub passed: bool,
    /// The check suite's app, the check run's or workflow's name, `pipeline #31`.
    pub name: String,
    pub url: Option<String>,
    /// GitLab: the pipeline and its failed jobs (id, name, stage) as the event named them.
    pub pipeline: Option<(u64, Vec<FailedJob>)>,
}

/// A failed GitLab job as a pipeline event names it: id, name, stage.
pub(crate) type FailedJob = (u64, String, String);

/// A pull request closed, merged or not.
pub(crate) struct Closed {
    pub source: &'static str,
    pub place: String,
    pub link: &'static str,
    pub url: String,
    pub merged: bool,
    pub sha: Option<String>,
    pub by: String,
}

/// A deployment finished.
pub(crate) struct Deployment {
    pub source: &'static str,
    pub place: String,
    /// The deployed commit (a full id, or GitLab's short one).
    pub sha: String,
    pub environment: String,
    pub ok: bool,
    pub url: Option<String>,
}

pub(super) struct Ticket {
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

pub(super) fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k)).and_then(Value::as_str)
}

/// The text after a leading `/autodev` (case-sensitive, as a command), if the comment is one.
pub(super) fn command_text(comment: &str) -> Option<String> {
    let rest = comment.trim_start().strip_prefix("/autodev")?;
    if rest.chars().next().is_some_and(|c| !c.is_whitespace()) {
        return None;
    }
    Some(rest.trim().to_string())
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

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
