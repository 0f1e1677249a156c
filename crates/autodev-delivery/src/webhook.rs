//! Outgoing webhooks (n8n, Zapier, in-house tools) and Slack incoming webhooks.
//!
//! An outgoing webhook is a JSON POST `{"event", "delivery", "at", "run"}` (`run` is the API's
//! run object) with `X-Autodev-Event`, `X-Autodev-Delivery` (the same on every retry of the
//! same milestone, for receivers to deduplicate) and, with a secret,
//! `X-Autodev-Signature-256: sha256=<hex HMAC-SHA-256 of the raw body>` (GitHub's scheme, so
//! existing verifiers work).
use std::time::Duration;

use autodev_store::Store;
use hmac::{KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use crate::target::{CallError, Milestone, Target};

/// Every call's deadline.
const TIMEOUT: Duration = Duration::from_secs(15);

pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(TIMEOUT)
        .user_agent(concat!("autodev/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default()
}

/// Sends a request and reads the answer: the body on success, a [`CallError`] otherwise.
pub(crate) async fn send(request: reqwest::RequestBuilder) -> Result<(u16, String), CallError> {
    let response = autodev_engine::telemetry::propagate(request).send().await.map_err(CallError::transport)?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.text().await.map_err(CallError::transport)?;
    if (200..300).contains(&status) { Ok((status, body)) } else { Err(CallError::from_status(status, &headers, &body)) }
}

/// One configured endpoint.
#[derive(Clone)]
pub struct WebhookTarget {
    /// Names it in results and events (`webhook:<name>`).
    pub name: String,
    /// May hold a token in its path or query, so it is kept secret.
    pub url: SecretString,
    pub secret: Option<SecretString>,
    /// Only these topics (`run.succeeded`…); all when absent.
    pub events: Option<Vec<String>>,
    pub http: reqwest::Client,
}

impl WebhookTarget {
    pub fn new(name: &str, url: SecretString, secret: Option<SecretString>, events: Option<Vec<String>>) -> Self {
        Self { name: name.to_string(), url, secret, events, http: client() }
    }
}

/// `sha256=<hex HMAC-SHA-256 of body>`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[async_trait::async_trait]
impl Target for WebhookTarget {
    fn name(&self) -> String {
        format!("webhook:{}", self.name)
    }

    fn wants(&self, m: &Milestone<'_>) -> bool {
        self.events.as_ref().is_none_or(|events| events.iter().any(|e| e == m.topic))
    }

    async fn deliver(&self, _store: &Store, m: &Milestone<'_>) -> Result<String, CallError> {
        let delivery = format!("{}:{}", m.id, self.name);
        let body = json!({
            "event": m.topic,
            "delivery": delivery,
            "at": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            "run": crate::view::run_json(m.run),
        });
        let mut body = body;
        if let Some(step) = m.step {
            // A timeline milestone: what the forge said, and where.
            body["step"] = serde_json::to_value(step).unwrap_or_default();
        }
        let bytes = serde_json::to_vec(&body).map_err(|e| CallError::permanent(None, e.to_string()))?;
        let mut request = self
            .http
            .post(self.url.expose_secret())
            .header("content-type", "application/json")
            .header("x-autodev-event", m.topic)
            .header("x-autodev-delivery", &delivery);
        if let Some(secret) = &self.secret {
            request = request.header("x-autodev-signature-256", signature(secret.expose_secret(), &bytes));
        }
        let (status, _) = send(request.body(bytes)).await?;
        Ok(format!("delivered ({status})"))
    }
}

/// A Slack incoming webhook: one message per milestone worth a person's attention.
pub struct Slack {
    url: SecretString,
    http: reqwest::Client,
}

impl Slack {
    pub fn new(url: SecretString) -> Self {
        Self { url, http: client() }
    }
}

#[async_trait::async_trait]
impl Target for Slack {
    fn name(&self) -> String {
        "slack".into()
    }

    fn wants(&self, m: &Milestone<'_>) -> bool {
        matches!(
            m.topic,
            "run.plan_ready"
                | "run.awaiting_approval"
                | "run.succeeded"
                | "run.failed"
                | "run.pr_opened"
                | "delivery.merged"
                | "delivery.deployed"
                | "delivery.deploy_failed"
        )
    }

    fn per_second(&self) -> u32 {
        // Slack allows one message per second per webhook.
        1
    }

    async fn deliver(&self, _store: &Store, m: &Milestone<'_>) -> Result<String, CallError> {
        let mut text = format!("{} <{}|details>", crate::text::slack(&m.headline()), m.run_url());
        if m.topic == "run.awaiting_approval" {
            text.push_str(&format!("\nApprove: `autodev approve {}` or POST {}/approve", m.run.short_id, m.run_url()));
        }
        let request = self.http.post(self.url.expose_secret()).json(&json!({"text": text}));
        send(request).await?;
        Ok("message posted".into())
    }
}

/// A Slack bot (`AUTODEV_SLACK_BOT_TOKEN`, `AUTODEV_SLACK_CHANNEL`): one top message per run,
/// kept up to date with `chat.update`, and a thread reply per milestone.
pub struct SlackBot {
    token: SecretString,
    channel: String,
    /// `https://slack.com/api` (tests point it elsewhere).
    api_url: String,
    http: reqwest::Client,
}

impl SlackBot {
    pub fn new(token: SecretString, channel: String, api_url: Option<String>) -> Self {
        Self { token, channel, api_url: api_url.unwrap_or_else(|| "https://slack.com/api".into()), http: client() }
    }

    /// A Web API call. Slack answers errors with HTTP 200 and `{"ok": false, "error"}`.
    async fn call(&self, method: &str, body: serde_json::Value) -> Result<serde_json::Value, CallError> {
        let request = self
            .http
            .post(format!("{}/{method}", self.api_url.trim_end_matches('/')))
            .bearer_auth(self.token.expose_secret())
            .header("content-type", "application/json; charset=utf-8")
            .json(&body);
        let (_, text) = send(request).await?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| CallError::permanent(None, format!("unexpected answer from Slack: {e}")))?;
        if v["ok"] == true {
            return Ok(v);
        }
        let error = v["error"].as_str().unwrap_or("unknown_error");
        // Slack's own transient errors; the rest (channel_not_found, invalid_auth…) are not.
        let transient = matches!(error, "ratelimited" | "service_unavailable" | "fatal_error" | "internal_error");
        Err(CallError { status: Some(200), message: format!("Slack {method}: {error}"), transient, retry_after: None })
    }
}

#[async_trait::async_trait]
impl Target for SlackBot {
    fn name(&self) -> String {
        "slack".into()
    }

    fn wants(&self, m: &Milestone<'_>) -> bool {
        matches!(
            m.topic,
            "run.plan_ready"
                | "run.awaiting_approval"
                | "run.succeeded"
                | "run.failed"
                | "run.cancelled"
                | "run.pr_opened"
                | "delivery.merged"
                | "delivery.deployed"
                | "delivery.deploy_failed"
        )
    }

    fn per_second(&self) -> u32 {
        1
    }

    async fn deliver(&self, store: &Store, m: &Milestone<'_>) -> Result<String, CallError> {
        let top = format!("{} <{}|details>", crate::text::slack(&m.headline()), m.run_url());
        let record = |e: autodev_store::StoreError| CallError::permanent(None, format!("could not record: {e}"));
        match (m.links.get("slack.channel"), m.links.get("slack.ts")) {
            (Some(channel), Some(ts)) => {
                self.call("chat.update", json!({"channel": channel, "ts": ts, "text": top})).await?;
                let reply = format!("{} <{}|details>", crate::text::slack(&m.headline()), m.run_url());
                self.call("chat.postMessage", json!({"channel": channel, "thread_ts": ts, "text": reply})).await?;
                Ok(format!("updated the run's message and replied in its thread ({ts})"))
            }
            _ => {
                let v = self.call("chat.postMessage", json!({"channel": self.channel, "text": top})).await?;
                let (channel, ts) =
                    (v["channel"].as_str().unwrap_or(&self.channel), v["ts"].as_str().unwrap_or_default());
                store.set_run_link(&m.run.id, "slack.channel", channel).await.map_err(record)?;
                store.set_run_link(&m.run.id, "slack.ts", ts).await.map_err(record)?;
                Ok(format!("posted the run's message ({ts})"))
            }
        }
    }
}
