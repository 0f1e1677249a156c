//! Jira: a comment on the run's ticket with each outcome and its links, and optional
//! transitions by name per milestone (e.g. "In Review" when the pull request opens).
//!
//! Jira Cloud (REST v3, basic auth with an account's email and API token, comments in the
//! Atlassian Document Format) and Jira Data Center (REST v2, a personal access token as a
//! bearer token, comments as text). A few typed calls with reqwest: no maintained Jira crate
//! shares this build's reqwest (CRATES.md).
use std::collections::BTreeMap;

use autodev_store::Store;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::target::{CallError, Milestone, Target};
use crate::webhook::{client, send};

#[derive(Clone)]
pub enum JiraAuth {
    /// Jira Cloud: `AUTODEV_JIRA_EMAIL` + `AUTODEV_JIRA_API_TOKEN`; REST v3.
    Cloud { email: String, token: SecretString },
    /// Jira Data Center: `AUTODEV_JIRA_PAT`; REST v2.
    DataCenter { pat: SecretString },
}

#[derive(Clone)]
pub struct JiraConfig {
    /// `https://your-domain.atlassian.net` or the Data Center base URL.
    pub url: String,
    pub auth: JiraAuth,
    /// Milestone → transition name (`run.pr_opened` → `In Review`).
    pub transitions: BTreeMap<String, String>,
}

pub struct Jira {
    config: JiraConfig,
    http: reqwest::Client,
}

/// `jira:KEY-7` → `KEY-7`.
pub fn origin_ticket(origin: Option<&str>) -> Option<String> {
    let key = origin?.strip_prefix("jira:")?;
    let ok = key
        .split_once('-')
        .is_some_and(|(p, n)| !p.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    ok.then(|| key.to_string())
}

#[derive(Deserialize)]
struct Comments {
    #[serde(default)]
    comments: Vec<Value>,
}

#[derive(Deserialize)]
struct Transitions {
    #[serde(default)]
    transitions: Vec<Transition>,
}

#[derive(Deserialize)]
struct Transition {
    id: String,
    name: String,
}

impl Jira {
    pub fn new(config: JiraConfig) -> Self {
        Self { config, http: client() }
    }

    fn version(&self) -> &'static str {
        match self.config.auth {
            JiraAuth::Cloud { .. } => "3",
            JiraAuth::DataCenter { .. } => "2",
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let url = format!("{}/rest/api/{}{path}", self.config.url.trim_end_matches('/'), self.version());
        let rb = self.http.request(method, url).header("accept", "application/json");
        match &self.config.auth {
            JiraAuth::Cloud { email, token } => rb.basic_auth(email, Some(token.expose_secret())),
            JiraAuth::DataCenter { pat } => rb.bearer_auth(pat.expose_secret()),
        }
    }

    /// The comment's body in the API's format: Atlassian Document Format on Cloud, text on
    /// Data Center. `tag` makes it findable again (a retry after a crash posts no second one).
    fn body(&self, text: &str, link: &str, tag: &str) -> Value {
        match self.config.auth {
            JiraAuth::Cloud { .. } => json!({
                "type": "doc",
                "version": 1,
                "content": [
                    {"type": "paragraph", "content": [{"type": "text", "text": text}]},
                    {"type": "paragraph", "content": [
                        {"type": "text", "text": "Run: "},
                        {"type": "text", "text": link, "marks": [{"type": "link", "attrs": {"href": link}}]},
                        {"type": "text", "text": format!(" {tag}")},
                    ]},
                ],
            }),
            // Wiki markup: the text's own markup escaped, Autodev's link and tag added.
            JiraAuth::DataCenter { .. } => json!(format!("{}\n\nRun: {link} {tag}", crate::text::jira_wiki(text))),
        }
    }

    async fn comment(&self, store: &Store, m: &Milestone<'_>, key: &str) -> Result<String, CallError> {
        // Once per milestone: a timeline milestone's id carries its step's key after the topic.
        let which = m.id.strip_prefix(&format!("{}:", m.run.id)).unwrap_or(m.topic);
        let link_name = format!("jira.comment.{which}");
        if m.links.contains_key(&link_name) {
            return Ok("comment already posted".into());
        }
        let tag = format!("[autodev {} {which}]", m.run.short_id);
        let list = self.request(reqwest::Method::GET, &format!("/issue/{key}/comment?maxResults=100&orderBy=-created"));
        let (_, text) = send(list).await?;
        let comments: Comments = serde_json::from_str(&text).unwrap_or(Comments { comments: Vec::new() });
        let existing = comments
            .comments
            .iter()
            .find(|c| c["body"].to_string().contains(&tag))
            .and_then(|c| c["id"].as_str().map(str::to_string));
        let id = match existing {
            Some(id) => id,
            None => {
                let mut text = m.headline();
                if let Some(pr) = m.links.get("github.pull_request").or_else(|| m.links.get("gitlab.merge_request")) {
                    text.push_str(&format!(" Pull request: {pr}"));
                }
                if let Some(url) = m.step.and_then(|s| s.url.as_deref()) {
                    text.push_str(&format!(" ({url})"));
                }
                let post = self
                    .request(reqwest::Method::POST, &format!("/issue/{key}/comment"))
                    .json(&json!({"body": self.body(&text, &m.run_url(), &tag)}));
                let (_, answer) = send(post).await?;
                let v: Value = serde_json::from_str(&answer).unwrap_or_default();
                v["id"].as_str().unwrap_or_default().to_string()
            }
        };
        store
            .set_run_link(&m.run.id, &link_name, &id)
            .await
            .map_err(|e| CallError::permanent(None, format!("could not record the comment: {e}")))?;
        Ok(format!("comment {id} on {key}"))
    }

    /// Moves the ticket by the transition named for this milestone, when it is available from
    /// the ticket's status (a ticket already past it is left alone).
    async fn transition(&self, m: &Milestone<'_>, key: &str) -> Result<Option<String>, CallError> {
        // The project's `jira_done_transition` on merge, else the operator's per milestone.
        let done = (m.topic == "delivery.merged").then(|| m.project_settings().jira_done_transition).flatten();
        let Some(name) = done.as_ref().or_else(|| self.config.transitions.get(m.topic)) else { return Ok(None) };
        let (_, text) = send(self.request(reqwest::Method::GET, &format!("/issue/{key}/transitions"))).await?;
        let available: Transitions = serde_json::from_str(&text)
            .map_err(|e| CallError::permanent(None, format!("unexpected answer from Jira: {e}")))?;
        let Some(t) = available.transitions.iter().find(|t| t.name.eq_ignore_ascii_case(name)) else {
            let names: Vec<&str> = available.transitions.iter().map(|t| t.name.as_str()).collect();
            return Ok(Some(format!(
                "transition `{name}` not available from the ticket's status (available: {})",
                names.join(", ")
            )));
        };
        let post = self
            .request(reqwest::Method::POST, &format!("/issue/{key}/transitions"))
            .json(&json!({"transition": {"id": t.id}}));
        send(post).await?;
        Ok(Some(format!("moved to {name}")))
    }
}

#[async_trait::async_trait]
impl Target for Jira {
    fn name(&self) -> String {
        "jira".into()
    }

    fn wants(&self, m: &Milestone<'_>) -> bool {
        origin_ticket(m.run.origin.as_deref()).is_some()
            && (matches!(
                m.topic,
                "run.succeeded"
                    | "run.failed"
                    | "run.cancelled"
                    | "run.pr_opened"
                    | "run.awaiting_approval"
                    | "delivery.merged"
                    | "delivery.deployed"
                    | "delivery.deploy_failed"
            ) || self.config.transitions.contains_key(m.topic))
    }

    async fn deliver(&self, store: &Store, m: &Milestone<'_>) -> Result<String, CallError> {
        let Some(key) = origin_ticket(m.run.origin.as_deref()) else { return Ok("not from a Jira ticket".into()) };
        let mut done = vec![self.comment(store, m, &key).await?];
        if let Some(moved) = self.transition(m, &key).await? {
            done.push(moved);
        }
        Ok(done.join("; "))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn origins_name_a_ticket() {
        assert_eq!(super::origin_ticket(Some("jira:PROJ-7")).as_deref(), Some("PROJ-7"));
        assert_eq!(super::origin_ticket(Some("jira:PROJ")), None);
        assert_eq!(super::origin_ticket(Some("github:o/n#1")), None);
    }
}
