//! What every target shares: the milestone it is told, the error a call can end in, and the
//! `Target` trait.
use std::collections::BTreeMap;
use std::time::Duration;

use autodev_store::{ProjectRow, RunRow, StepRow, Store};

/// What a target is told: the run as it stands and what it is about.
pub struct Milestone<'a> {
    pub topic: &'a str,
    /// `<run id>:<topic>`, stable across retries.
    pub id: &'a str,
    pub run: &'a RunRow,
    pub project: Option<&'a ProjectRow>,
    /// What integrations made for the run so far (`github.pull_request` → URL).
    pub links: &'a BTreeMap<String, String>,
    pub public_url: Option<&'a str>,
    /// The run's `report.md` (from the database, whichever process drove the run), if it
    /// wrote one.
    pub report: Option<&'a str>,
    /// The run's delivery timeline after its pull request opened (merged, deployed…).
    pub timeline: &'a [StepRow],
    /// For a timeline milestone (`delivery.merged`, `delivery.deployed`…): its step.
    pub step: Option<&'a StepRow>,
}

/// The milestones of a run's timeline (what the forge said happened after its pull request):
/// `delivery.checks`, `delivery.merged` (merged), `delivery.closed` (closed unmerged),
/// `delivery.deploy_requested`, `delivery.deployed`, `delivery.deploy_failed`,
/// `delivery.ci_exhausted` (CI still failed after the project's CI follow-ups).
pub const TIMELINE_TOPICS: [&str; 7] = [
    "delivery.checks",
    "delivery.merged",
    "delivery.closed",
    "delivery.deploy_requested",
    "delivery.deployed",
    "delivery.deploy_failed",
    "delivery.ci_exhausted",
];

impl Milestone<'_> {
    /// The run's page for people: the UI when there is a public URL, else the API.
    pub fn run_url(&self) -> String {
        let base = self.public_url.unwrap_or("").trim_end_matches('/');
        format!("{base}/api/v1/runs/{}", self.run.id)
    }

    /// The branch the run delivers onto: a follow-up's pull request branch, else its own.
    pub fn head_branch(&self) -> String {
        let settings = self.run.settings().unwrap_or_default();
        settings.deliver_branch.unwrap_or_else(|| self.run.branch.clone())
    }

    /// Whether the run is a follow-up of review feedback (it delivers onto a pull request's
    /// branch instead of its own).
    pub fn is_follow_up(&self) -> bool {
        self.head_branch() != self.run.branch
    }

    /// Whether this milestone opens (or updates) a pull request: a run that succeeded, or one
    /// whose tests still failed and whose branch was pushed for review (as a draft).
    pub fn opens_review(&self) -> bool {
        self.topic == "run.succeeded" || (self.topic == "run.failed" && self.links.contains_key("git.branch"))
    }

    /// The run's project's settings (none for a run of a local repository).
    pub fn project_settings(&self) -> autodev_domain::ProjectSettings {
        self.project.map(autodev_store::ProjectRow::settings).unwrap_or_default()
    }

    /// A pull request (merge request) this milestone opened: `run.pr_opened` for the
    /// integrations, and the timeline's first step.
    pub async fn review_opened(&self, store: &Store, url: &str, noun: &str) -> Result<(), CallError> {
        let record = |e: autodev_store::StoreError| CallError::permanent(None, format!("could not record: {e}"));
        store.notify(&self.run.id, "run.pr_opened").await.map_err(record)?;
        let step = autodev_domain::DeliveryStep {
            step: "pr_opened".into(),
            detail: format!("{noun} opened"),
            url: Some(url.to_string()),
            sha: self.links.get("git.head").cloned(),
            environment: None,
        };
        store.record_step(&self.run.id, "pr_opened", step, None).await.map_err(record)?;
        Ok(())
    }

    /// Where a merged change is deployed from and to (`deploy`'s `ref`, else the run's base
    /// branch; its environment), or `None` when the deploy was asked for already.
    pub fn deploy_target(&self, deploy: &autodev_domain::DeploySettings) -> Option<(String, String)> {
        if self.timeline.iter().any(|s| s.step == "deploy_requested") {
            return None;
        }
        let base = if self.run.base_branch.is_empty() { "main" } else { self.run.base_branch.as_str() };
        Some((deploy.git_ref.clone().unwrap_or_else(|| base.to_string()), deploy.environment().to_string()))
    }

    /// Records a deploy asked of the team's CD (`how`: `github_workflow`, `gitlab_trigger`).
    pub async fn deploy_requested(
        &self,
        store: &Store,
        how: &'static str,
        detail: String,
        url: Option<String>,
        environment: &str,
    ) -> Result<(), CallError> {
        let step = autodev_domain::DeliveryStep {
            step: "deploy_requested".into(),
            detail,
            url,
            sha: self.step.and_then(|s| s.sha.clone()),
            environment: Some(environment.to_string()),
        };
        store
            .record_step(&self.run.id, "deploy_requested", step, Some("delivery.deploy_requested"))
            .await
            .map_err(|e| CallError::permanent(None, format!("could not record the deploy: {e}")))?;
        metrics::counter!("autodev_deploys_requested_total", "how" => how).increment(1);
        Ok(())
    }

    /// The step's environment (`production` when none was named).
    pub fn environment(&self) -> &str {
        self.step.and_then(|s| s.environment.as_deref()).unwrap_or("production")
    }

    /// ` (detail)` of the step, or nothing.
    fn step_detail(&self) -> String {
        self.step.filter(|s| !s.detail.is_empty()).map(|s| format!(" ({})", s.detail)).unwrap_or_default()
    }

    /// Whether this milestone is one of the timeline's (after the pull request).
    pub fn is_timeline(&self) -> bool {
        TIMELINE_TOPICS.contains(&self.topic)
    }

    /// The timeline as lines for a ticket comment (`- Merged as abc123 …`), empty when the
    /// pull request has no news.
    pub fn timeline_lines(&self) -> String {
        let mut out = String::new();
        for s in self.timeline {
            let sha = s.sha.as_deref().map(|h| format!(" `{}`", &h[..h.len().min(12)])).unwrap_or_default();
            let env = s.environment.as_deref().unwrap_or("production");
            let url = s.url.as_deref().map(|u| format!(": {u}")).unwrap_or_default();
            let line = match s.step.as_str() {
                "checks_failed" => format!("Checks failed on{sha}"),
                "ci_repair_started" => format!("CI follow-up started for{sha}"),
                "ci_repair_refused" => "CI follow-ups used up".to_string(),
                "merged" => format!("Merged as{sha}"),
                "closed" => "Closed without merging".to_string(),
                "deploy_requested" => format!("Deploy to {env} requested"),
                "deployed" => format!("Deployed to {env}{url}"),
                "deploy_failed" => format!("Deploy to {env} failed{url}"),
                "revert_requested" => "Revert requested".to_string(),
                _ => continue,
            };
            out.push_str(&format!("- {}\n", crate::text::forge(&line)));
        }
        out
    }

    /// One line for people: what happened.
    pub fn headline(&self) -> String {
        let title = &self.run.title;
        let short = &self.run.short_id;
        match self.topic {
            "run.plan_ready" => format!("Autodev run {short} has a plan and is working on it: {title}"),
            "run.awaiting_approval" => format!("Autodev run {short} waits for approval of its plan: {title}"),
            "run.succeeded" => format!("Autodev run {short} succeeded: {title}"),
            "run.failed" => format!(
                "Autodev run {short} failed: {title} ({})",
                self.run.reason.as_deref().unwrap_or("no reason recorded")
            ),
            "run.cancelled" => format!(
                "Autodev run {short} was cancelled: {title}{}",
                self.run.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
            ),
            "run.pr_opened" => format!(
                "Autodev run {short} opened a pull request: {}",
                self.links
                    .get("github.pull_request")
                    .or_else(|| self.links.get("gitlab.merge_request"))
                    .map(String::as_str)
                    .unwrap_or(title)
            ),
            "delivery.checks" => format!(
                "Checks {} on the pull request of Autodev run {short}: {title}{}",
                if self.step.is_some_and(|s| s.step == "checks_failed") { "failed" } else { "passed" },
                self.step_detail()
            ),
            "delivery.merged" => {
                format!("The pull request of Autodev run {short} was merged: {title}{}", self.step_detail())
            }
            "delivery.closed" => format!("The pull request of Autodev run {short} was closed without merging: {title}"),
            "delivery.deploy_requested" => {
                format!("Autodev run {short}'s change goes to {}: {title}", self.environment())
            }
            "delivery.deployed" => {
                format!("Autodev run {short}'s change was deployed to {}: {title}", self.environment())
            }
            "delivery.deploy_failed" => {
                format!("Deploying Autodev run {short}'s change to {} failed: {title}", self.environment())
            }
            "delivery.ci_exhausted" => format!(
                "CI still fails on the pull request of Autodev run {short} after its CI follow-ups{}",
                self.step_detail()
            ),
            other => format!("Autodev run {short}: {other}"),
        }
    }
}

/// What went wrong with a call, and whether trying again can help.
#[derive(Debug, Clone)]
pub struct CallError {
    pub status: Option<u16>,
    /// For people; never holds a secret (URLs are stripped from transport errors).
    pub message: String,
    /// A 5xx, a timeout, a 429, a secondary rate limit: worth another try.
    pub transient: bool,
    pub retry_after: Option<Duration>,
}

impl CallError {
    pub fn permanent(status: Option<u16>, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), transient: false, retry_after: None }
    }

    /// From a transport failure (connect, timeout): transient, without the URL.
    pub fn transport(e: reqwest::Error) -> Self {
        let e = e.without_url();
        Self { status: None, message: format!("request failed: {e}"), transient: true, retry_after: None }
    }

    /// From a response that is not a success: 429 and 5xx are transient (with the
    /// `Retry-After` they give), as is a 403 that says it is a rate limit; any other 4xx is
    /// permanent. `body` is the vendor's answer, cut short.
    pub fn from_status(status: u16, headers: &reqwest::header::HeaderMap, body: &str) -> Self {
        let retry_after = retry_after(headers);
        let rate_limited = status == 429
            || (status == 403
                && (retry_after.is_some()
                    || headers.get("x-ratelimit-remaining").is_some_and(|v| v.as_bytes() == b"0")));
        let detail: String = body.chars().take(300).collect();
        Self {
            status: Some(status),
            message: format!("HTTP {status}: {}", detail.trim()),
            transient: rate_limited || status >= 500,
            retry_after,
        }
    }
}

/// `Retry-After` in seconds or as an HTTP date.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(std::time::SystemTime::now()).unwrap_or_default())
}

/// A place to deliver to.
#[async_trait::async_trait]
pub trait Target: Send + Sync {
    /// `github`, `slack`, `webhook:<name>`: the key of its results and events.
    fn name(&self) -> String;
    /// Whether this milestone is for this target.
    fn wants(&self, m: &Milestone<'_>) -> bool;
    /// Delivers once (no retries: the dispatcher retries). Returns what to record.
    async fn deliver(&self, store: &Store, m: &Milestone<'_>) -> Result<String, CallError>;
    /// Calls per second this target may make (a GCRA limit, in process).
    fn per_second(&self) -> u32 {
        5
    }

    /// Renews what expires (a GitHub App's installation tokens, which are also the workers'
    /// git credentials); called when the dispatcher starts and every half hour.
    async fn refresh(&self, _store: &Store) {}
}
