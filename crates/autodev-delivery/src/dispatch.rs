//! The dispatcher: claims due milestones from the outbox with a lease and hands each to every
//! target that wants it, rate-limited and retried; and how deliveries are shown (report, API).
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use autodev_domain::EventKind;
use autodev_store::{OutboxRow, Store};
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::target::{CallError, Milestone, Target};
use crate::{confluence, github, gitlab, jira, webhook};

/// Attempts at one milestone (each with its in-place retries) before it is marked failed.
pub const MAX_ATTEMPTS: i64 = 6;
/// In-place tries of one call.
const TRIES: usize = 3;
/// The longest `Retry-After` waited for in place; a longer one reschedules the milestone.
const MAX_INLINE_WAIT: Duration = Duration::from_secs(30);

/// What the operator configured.
#[derive(Clone, Default)]
pub struct DeliveryConfig {
    /// Where people reach Autodev (`AUTODEV_PUBLIC_URL`): links in pull requests and messages.
    pub public_url: Option<String>,
    pub github: Option<github::GithubConfig>,
    pub gitlab: Option<gitlab::GitlabConfig>,
    pub jira: Option<jira::JiraConfig>,
    pub confluence: Option<confluence::ConfluenceConfig>,
    pub slack_webhook_url: Option<SecretString>,
    /// A Slack bot token and the channel it posts in (threads per run); wins over the webhook.
    pub slack_bot: Option<(SecretString, String)>,
    /// Test hook: Slack's Web API base (default `https://slack.com/api`).
    pub slack_api_url: Option<String>,
    pub webhooks: Vec<webhook::WebhookTarget>,
    /// Test hook: the base delay between attempts (default 30 s, doubling).
    pub retry_base: Option<Duration>,
    /// The process's forge credentials for git: a GitHub App's installation tokens are added
    /// as they are minted (the workers clone, fetch and push with them).
    pub git_credentials: Arc<autodev_workspace::git::credentials::Credentials>,
}

impl DeliveryConfig {
    pub fn is_empty(&self) -> bool {
        self.github.is_none()
            && self.jira.is_none()
            && self.confluence.is_none()
            && self.slack_webhook_url.is_none()
            && self.slack_bot.is_none()
            && self.webhooks.is_empty()
    }
}

type Limiter = governor::DefaultDirectRateLimiter;

/// Claims milestones and delivers them; one per process is enough.
pub struct Dispatcher {
    store: Store,
    home: std::path::PathBuf,
    public_url: Option<String>,
    targets: Vec<(Arc<dyn Target>, Limiter)>,
    owner: String,
    retry_base: Duration,
    /// Every configured secret, replaced by `[redacted]` in what is recorded (a vendor may
    /// echo a URL or a header back in an error).
    secrets: Vec<SecretString>,
}

impl Dispatcher {
    pub fn new(store: Store, home: &std::path::Path, config: &DeliveryConfig) -> Self {
        let mut targets: Vec<Arc<dyn Target>> = Vec::new();
        if let Some(gh) = &config.github {
            targets.push(Arc::new(github::Github::new(gh.clone()).with_git_credentials(&config.git_credentials)));
        }
        if let Some(gl) = &config.gitlab {
            targets.push(Arc::new(gitlab::Gitlab::new(gl.clone())));
        }
        if let Some(jira) = &config.jira {
            targets.push(Arc::new(jira::Jira::new(jira.clone())));
        }
        if let Some(c) = &config.confluence {
            targets.push(Arc::new(confluence::Confluence::new(c.clone())));
        }
        if let Some((token, channel)) = &config.slack_bot {
            targets.push(Arc::new(webhook::SlackBot::new(
                token.clone(),
                channel.clone(),
                config.slack_api_url.clone(),
            )));
        } else if let Some(url) = &config.slack_webhook_url {
            targets.push(Arc::new(webhook::Slack::new(url.clone())));
        }
        for w in &config.webhooks {
            targets.push(Arc::new(w.clone()));
        }
        let mut secrets: Vec<SecretString> = Vec::new();
        if let Some(gh) = &config.github {
            match &gh.auth {
                github::GithubAuth::Token(t) => secrets.push(t.clone()),
                github::GithubAuth::App { private_key, .. } => secrets.push(private_key.clone()),
            }
        }
        secrets.extend(config.gitlab.iter().map(|g| g.token.clone()));
        secrets.extend(config.gitlab.iter().filter_map(|g| g.trigger_token.clone()));
        if let Some(j) = &config.jira {
            secrets.push(match &j.auth {
                jira::JiraAuth::Cloud { token, .. } => token.clone(),
                jira::JiraAuth::DataCenter { pat } => pat.clone(),
            });
        }
        secrets.extend(config.confluence.iter().map(|c| c.token.clone()));
        secrets.extend(config.slack_webhook_url.iter().cloned());
        secrets.extend(config.slack_bot.iter().map(|(t, _)| t.clone()));
        for w in &config.webhooks {
            secrets.push(w.url.clone());
            secrets.extend(w.secret.iter().cloned());
        }
        let targets = targets
            .into_iter()
            .map(|t| {
                let per = std::num::NonZeroU32::new(t.per_second().max(1)).unwrap_or(std::num::NonZeroU32::MIN);
                (t, governor::RateLimiter::direct(governor::Quota::per_second(per)))
            })
            .collect();
        Self {
            store,
            home: home.to_path_buf(),
            public_url: config.public_url.clone(),
            targets,
            owner: format!("{}:delivery", autodev_engine::process_owner()),
            retry_base: config.retry_base.unwrap_or(Duration::from_secs(30)),
            secrets,
        }
    }

    /// `text` with every configured secret (of four characters or more) replaced.
    fn redact(&self, text: &str) -> String {
        use secrecy::ExposeSecret;
        let mut out = text.to_string();
        for s in &self.secrets {
            let s = s.expose_secret();
            if s.len() >= 4 && out.contains(s) {
                out = out.replace(s, "[redacted]");
            }
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// Renews every target's expiring credentials now.
    pub async fn refresh(&self) {
        for (target, _) in &self.targets {
            target.refresh(&self.store).await;
        }
    }

    /// Delivers due milestones until `shutdown`, looking every `poll`.
    pub async fn run(self: Arc<Self>, poll: Duration, shutdown: CancellationToken) {
        let mut refreshed = std::time::Instant::now();
        self.refresh().await;
        while !shutdown.is_cancelled() {
            if refreshed.elapsed() > Duration::from_secs(1800) {
                self.refresh().await;
                refreshed = std::time::Instant::now();
            }
            let claimed = match self.store.claim_outbox(&self.owner, Duration::from_secs(300), None, 8).await {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::error!(error = %e, "could not claim deliveries");
                    Vec::new()
                }
            };
            let idle = claimed.is_empty();
            for row in claimed {
                if let Err(e) = self.dispatch(&row).await {
                    tracing::error!(error = %e, milestone = %row.id, "delivery failed to record");
                }
            }
            if idle {
                tokio::select! {
                    _ = tokio::time::sleep(poll) => {}
                    _ = shutdown.cancelled() => {}
                }
            }
        }
    }

    /// Delivers a run's due milestones now (after [`Store::retry_outbox`] for a retry), in
    /// this process; returns the run's milestones afterwards.
    pub async fn deliver_run(&self, run_id: &str) -> autodev_store::Result<Vec<OutboxRow>> {
        loop {
            let claimed = self.store.claim_outbox(&self.owner, Duration::from_secs(300), Some(run_id), 8).await?;
            if claimed.is_empty() {
                break;
            }
            for row in claimed {
                self.dispatch(&row).await?;
            }
        }
        self.store.outbox_for_run(run_id).await
    }

    /// One attempt at one claimed milestone: every target that wants it and has not yet
    /// succeeded is called; the results and the next step are recorded.
    pub async fn dispatch(&self, row: &OutboxRow) -> autodev_store::Result<()> {
        let run = self.store.get_run(&row.run_id).await?;
        let project = match &run.project_id {
            Some(id) => self.store.find_project(id).await.ok(),
            None => None,
        };
        let mut results: BTreeMap<String, Value> = serde_json::from_str(&row.results).unwrap_or_default();
        let mut failing: Vec<(String, CallError)> = Vec::new();
        // The milestone's delivery is a span of the run's trace, so the calls to forges, Jira,
        // Slack and webhooks carry the run's `traceparent`.
        let span = tracing::info_span!(
            "autodev.delivery",
            otel.name = %format!("deliver {}", row.topic),
            autodev.run.id = %run.id,
            autodev.milestone = %row.topic,
        );
        autodev_engine::telemetry::set_parent(&span, run.settings().ok().and_then(|s| s.trace_parent).as_deref());
        // The report and the timeline are the same for every target of this milestone: read once.
        let report = self.store.artifact(&self.home, &run.id, "report.md").await?;
        let timeline = self.store.timeline(&run.id).await?;
        let key = row.id.strip_prefix(&format!("{}:{}:", run.id, row.topic));
        let step = key.and_then(|k| timeline.iter().find(|s| s.key == k));
        for (target, limiter) in &self.targets {
            let name = target.name();
            if results.get(&name).is_some_and(|r| r["ok"] == true) {
                continue;
            }
            // Links are read per target: the pull request one target opened is the next's link.
            let links: BTreeMap<String, String> = self.store.run_links(&run.id).await?.into_iter().collect();
            let milestone = Milestone {
                topic: &row.topic,
                id: &row.id,
                run: &run,
                project: project.as_ref(),
                links: &links,
                public_url: self.public_url.as_deref(),
                report: report.as_deref(),
                timeline: &timeline,
                step,
            };
            if !target.wants(&milestone) {
                continue;
            }
            let call = call_with_retries(limiter, || target.deliver(&self.store, &milestone));
            let outcome = tracing::Instrument::instrument(
                call,
                tracing::info_span!(parent: &span, "autodev.delivery.target", otel.name = %format!("deliver to {name}")),
            )
            .await;
            let now = autodev_store::now_ms();
            let (ok, status, message) = match &outcome {
                Ok(what) => (true, None, self.redact(what)),
                Err(e) => (false, e.status, self.redact(&e.message)),
            };
            results.insert(name.clone(), json!({"ok": ok, "status": status, "message": message, "at_ms": now}));
            self.store
                .append_event(
                    &run.id,
                    EventKind::DeliveryAttempted {
                        target: name.clone(),
                        topic: row.topic.clone(),
                        ok,
                        status,
                        message: message.clone(),
                    },
                )
                .await?;
            if let Err(e) = outcome {
                failing.push((name, e));
            }
        }
        let attempts = row.attempts + 1;
        let results_json = serde_json::to_string(&results).unwrap_or_else(|_| "{}".into());
        let now = autodev_store::now_ms();
        let (state, next_at) = if failing.is_empty() {
            ("done", now)
        } else if attempts >= MAX_ATTEMPTS || failing.iter().all(|(_, e)| !e.transient) {
            for (target, e) in &failing {
                self.store
                    .append_event(
                        &run.id,
                        EventKind::DeliveryFailed {
                            target: target.clone(),
                            topic: row.topic.clone(),
                            status: e.status,
                            message: self.redact(&e.message),
                        },
                    )
                    .await?;
                tracing::warn!(run = %run.id, target = %target, topic = %row.topic, error = %self.redact(&e.message), "delivery failed; `autodev deliver` retries it");
            }
            ("failed", now)
        } else {
            // 30 s, 1 min, 2 min… (or the longest Retry-After asked for), capped at an hour.
            let backoff = self.retry_base.saturating_mul(1 << (attempts - 1).clamp(0, 7) as u32);
            let asked = failing.iter().filter_map(|(_, e)| e.retry_after).max().unwrap_or_default();
            let wait = backoff.max(asked).min(Duration::from_secs(3600));
            ("pending", now + wait.as_millis() as i64)
        };
        self.store.finish_outbox(&row.id, &self.owner, state, attempts, next_at, &results_json).await
    }
}

/// One call, rate-limited, tried up to [`TRIES`] times while its failures are transient,
/// waiting as the vendor asks (`Retry-After`, up to [`MAX_INLINE_WAIT`]) or with exponential
/// backoff and jitter (backon).
async fn call_with_retries<'a, F, Fut>(limiter: &Limiter, call: F) -> Result<String, CallError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<String, CallError>> + 'a,
{
    use backon::{ExponentialBuilder, Retryable};
    let attempt = || async {
        limiter.until_ready().await;
        call().await
    };
    attempt
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(200))
                .with_max_delay(Duration::from_secs(5))
                .with_jitter()
                .with_max_times(TRIES - 1),
        )
        .when(|e: &CallError| e.transient && e.retry_after.is_none_or(|d| d <= MAX_INLINE_WAIT))
        .adjust(|e: &CallError, planned| e.retry_after.or(planned))
        .await
}

/// The report's "Delivery" section: what integrations made for the run and how each
/// milestone's delivery stands (empty when nothing was delivered).
pub fn report_section(rows: &[OutboxRow], links: &[(String, String)]) -> String {
    let results: Vec<(String, String, Value)> = rows
        .iter()
        .flat_map(|r| {
            let map: BTreeMap<String, Value> = serde_json::from_str(&r.results).unwrap_or_default();
            map.into_iter().map(move |(target, v)| (r.topic.clone(), target, v))
        })
        .collect();
    if results.is_empty() && links.is_empty() {
        return String::new();
    }
    let mut out = String::from("\n## Delivery\n\n");
    for (name, value) in links {
        out.push_str(&format!("- {name}: {value}\n"));
    }
    if !results.is_empty() {
        out.push_str("\n| milestone | integration | result |\n| --- | --- | --- |\n");
        for (topic, target, v) in results {
            let mark = if v["ok"] == true { "ok" } else { "FAILED" };
            let message = v["message"].as_str().unwrap_or_default().replace('|', "\\|").replace('\n', " ");
            out.push_str(&format!("| {topic} | {target} | {mark}: {message} |\n"));
        }
    }
    out
}

/// The run object an outgoing webhook or the API shows, with its deliveries.
pub fn deliveries_json(rows: &[OutboxRow]) -> Value {
    serde_json::to_value(deliveries(rows)).unwrap_or_else(|_| json!([]))
}

/// One milestone of a run and how its delivery to the configured integrations stands.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[schema(as = Delivery)]
pub struct DeliveryView {
    /// `run.plan_ready`, `run.awaiting_approval`, `run.succeeded`, `run.failed`,
    /// `run.cancelled` or `run.pr_opened`.
    pub topic: String,
    /// `pending` (being delivered, or waiting for its next attempt), `done` or `failed`
    /// (retry with `POST /api/v1/runs/{id}/deliver`).
    pub state: String,
    pub attempts: i64,
    /// Each target's last result: `{"github": {"ok", "status", "message", "at_ms"}}`.
    pub results: Value,
}

/// A run's milestones as the API shows them.
pub fn deliveries(rows: &[OutboxRow]) -> Vec<DeliveryView> {
    rows.iter()
        .map(|r| DeliveryView {
            topic: r.topic.clone(),
            state: r.state.clone(),
            attempts: r.attempts,
            results: serde_json::from_str::<Value>(&r.results).unwrap_or_else(|_| json!({})),
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified() {
        let mut h = reqwest::header::HeaderMap::new();
        assert!(CallError::from_status(502, &h, "bad gateway").transient);
        assert!(!CallError::from_status(401, &h, "Bad credentials").transient);
        assert!(!CallError::from_status(422, &h, "Validation Failed").transient);
        h.insert("retry-after", "7".parse().unwrap());
        let e = CallError::from_status(429, &h, "");
        assert!(e.transient);
        assert_eq!(e.retry_after, Some(Duration::from_secs(7)));
        // GitHub's secondary rate limit is a 403 with Retry-After.
        assert!(CallError::from_status(403, &h, "secondary rate limit").transient);
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("x-ratelimit-remaining", "0".parse().unwrap());
        assert!(CallError::from_status(403, &h, "API rate limit exceeded").transient);
    }
}
