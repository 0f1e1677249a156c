//! GitHub: a pull request for a run that succeeded, and one comment on the run's source issue
//! that is edited as the run moves (REST v3; GitHub Enterprise through the base URL).
//!
//! The calls are made with reqwest and small serde types rather than octocrab: the dispatcher
//! honours `Retry-After` and GitHub's rate-limit headers, which octocrab's errors do not carry,
//! and these five endpoints are all Autodev needs. (CRATES.md names octocrab for GitHub; the
//! GitHub App flow, when it comes, is where its JWT support would pay.)
use std::sync::Arc;

use autodev_store::Store;
use autodev_workspace::git::credentials::Credentials;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;

use crate::target::{CallError, Milestone, Target};
use crate::webhook::{client, send};

/// The largest pull request body GitHub takes is 65,536 characters; the report is cut to fit.
const MAX_BODY_CHARS: usize = 60_000;

#[derive(Clone)]
pub struct GithubConfig {
    /// `https://api.github.com`, or `https://HOST/api/v3` for GitHub Enterprise Server.
    pub api_url: String,
    pub auth: GithubAuth,
    /// Labels put on every pull request Autodev opens.
    pub labels: Vec<String>,
}

/// How Autodev authenticates to GitHub.
#[derive(Clone)]
pub enum GithubAuth {
    /// A personal or fine-grained token (`AUTODEV_GITHUB_TOKEN`).
    Token(SecretString),
    /// A GitHub App (`AUTODEV_GITHUB_APP_ID` + `AUTODEV_GITHUB_APP_PRIVATE_KEY`, PEM): for
    /// each repository's owner an installation token is minted with a short-lived JWT and
    /// cached until five minutes before it expires (an hour after minting).
    App { app_id: String, private_key: SecretString },
}

pub struct Github {
    config: GithubConfig,
    http: reqwest::Client,
    /// Installation tokens by repository owner, with when they stop being used.
    tokens: tokio::sync::Mutex<std::collections::HashMap<String, (SecretString, std::time::SystemTime)>>,
    /// Where minted installation tokens go for git (see `with_git_credentials`).
    git_credentials: Option<Arc<Credentials>>,
}

#[derive(serde::Serialize)]
struct AppClaims<'a> {
    iat: u64,
    exp: u64,
    iss: &'a str,
}

#[derive(Deserialize)]
struct Installation {
    id: u64,
}

#[derive(Deserialize)]
struct InstallationToken {
    token: String,
    expires_at: String,
}

#[derive(Deserialize)]
struct PullRequest {
    number: u64,
    html_url: String,
}

#[derive(Deserialize)]
struct Comment {
    id: u64,
    #[serde(default)]
    body: Option<String>,
}

/// `github:owner/name#12` → (`owner/name`, 12).
pub fn origin_issue(origin: Option<&str>) -> Option<(String, u64)> {
    let rest = origin?.strip_prefix("github:")?;
    let (repo, number) = rest.rsplit_once('#')?;
    Some((repo.to_string(), number.parse().ok()?))
}

/// Where git reaches the repositories of this API: `https://github.com/` for
/// `https://api.github.com`, `https://HOST/` for GitHub Enterprise's `https://HOST/api/v3`.
pub fn git_prefix(api_url: &str) -> Option<String> {
    let url = reqwest::Url::parse(api_url).ok()?;
    let host = url.host_str()?;
    let host = if host == "api.github.com" { "github.com" } else { host };
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    Some(format!("{}://{host}{port}/", url.scheme()))
}

/// The marker a run's comment and pull request carry, to be found again after a crash.
fn marker(run_id: &str) -> String {
    format!("<!-- autodev-run:{run_id} -->")
}

fn parse<T: for<'de> Deserialize<'de>>(body: &str) -> Result<T, CallError> {
    serde_json::from_str(body).map_err(|e| CallError::permanent(None, format!("unexpected answer from GitHub: {e}")))
}

#[derive(Deserialize)]
struct CollaboratorPermission {
    /// `admin`, `write`, `read` or `none` (the legacy levels).
    permission: String,
    /// The precise role: `admin`, `maintain`, `write`, `triage`, `read`, or a custom role.
    #[serde(default)]
    role_name: Option<String>,
}

impl Github {
    /// What `login` may do in `repo`: GitHub's collaborator permission (`role_name` when it
    /// is one of the five built-in roles, else the legacy `permission`). `none` for someone
    /// who is not a collaborator (GitHub answers 404 for a user it does not know).
    pub async fn permission(&self, repo: &str, login: &str) -> Result<String, CallError> {
        let user: String = form_urlencoded::byte_serialize(login.as_bytes()).collect();
        let req =
            self.request(repo, reqwest::Method::GET, &format!("/repos/{repo}/collaborators/{user}/permission")).await?;
        match send(req).await {
            Ok((_, text)) => {
                let answer: CollaboratorPermission = parse(&text)?;
                Ok(match answer.role_name.as_deref() {
                    Some(role @ ("admin" | "maintain" | "write" | "triage" | "read")) => role.to_string(),
                    _ => answer.permission,
                })
            }
            Err(e) if e.status == Some(404) => Ok("none".into()),
            Err(e) => Err(e),
        }
    }

    pub fn new(config: GithubConfig) -> Self {
        Self { config, http: client(), tokens: Default::default(), git_credentials: None }
    }

    /// Adds each installation token it mints to these git credentials, for the owner's
    /// repositories.
    pub fn with_git_credentials(mut self, credentials: &Arc<Credentials>) -> Self {
        self.git_credentials = Some(credentials.clone());
        self
    }

    fn request_as(&self, token: &str, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.config.api_url.trim_end_matches('/')))
            .bearer_auth(token)
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28")
    }

    /// The app's JWT (RS256, issued a minute in the past against clock drift, valid nine
    /// minutes: GitHub takes at most ten).
    fn app_jwt(app_id: &str, private_key: &SecretString) -> Result<String, CallError> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(private_key.expose_secret().as_bytes()).map_err(|e| {
            CallError::permanent(None, format!("AUTODEV_GITHUB_APP_PRIVATE_KEY is not an RSA private key in PEM: {e}"))
        })?;
        let claims = AppClaims { iat: now.saturating_sub(60), exp: now + 540, iss: app_id };
        jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256), &claims, &key)
            .map_err(|e| CallError::permanent(None, format!("could not sign the app's JWT: {e}")))
    }

    /// The token to act on `repo` (`owner/name`) with: the configured token, or the app's
    /// installation token for the repository's owner (minted, then cached). A fresh
    /// installation token also becomes the worker's git credential for that owner.
    pub async fn token_for(&self, repo: &str) -> Result<SecretString, CallError> {
        let (app_id, private_key) = match &self.config.auth {
            GithubAuth::Token(token) => return Ok(token.clone()),
            GithubAuth::App { app_id, private_key } => (app_id, private_key),
        };
        let owner = repo.split('/').next().unwrap_or_default().to_string();
        let mut tokens = self.tokens.lock().await;
        if let Some((token, until)) = tokens.get(&owner)
            && *until > std::time::SystemTime::now()
        {
            return Ok(token.clone());
        }
        let jwt = Self::app_jwt(app_id, private_key)?;
        let (_, text) =
            send(self.request_as(&jwt, reqwest::Method::GET, &format!("/repos/{repo}/installation"))).await?;
        let installation: Installation = parse(&text)?;
        let mint = self.request_as(
            &jwt,
            reqwest::Method::POST,
            &format!("/app/installations/{}/access_tokens", installation.id),
        );
        let (_, text) = send(mint).await?;
        let minted: InstallationToken = parse(&text)?;
        let expires = humantime::parse_rfc3339(&minted.expires_at)
            .unwrap_or_else(|_| std::time::SystemTime::now() + std::time::Duration::from_secs(3600));
        let token = SecretString::from(minted.token);
        tokens.insert(owner.clone(), (token.clone(), expires - std::time::Duration::from_secs(300)));
        if let (Some(prefix), Some(credentials)) = (git_prefix(&self.config.api_url), &self.git_credentials) {
            credentials.add_basic(&format!("{prefix}{owner}/"), "x-access-token", &token);
        }
        Ok(token)
    }

    /// A request on `repo`'s behalf.
    async fn request(
        &self,
        repo: &str,
        method: reqwest::Method,
        path: &str,
    ) -> Result<reqwest::RequestBuilder, CallError> {
        let token = self.token_for(repo).await?;
        Ok(self.request_as(token.expose_secret(), method, path))
    }

    /// The run's pull request: found by its head branch (so a retry after a crash between
    /// opening it and recording it finds it), updated, or opened. Returns its URL and
    /// whether it was opened now.
    async fn upsert_pull_request(&self, m: &Milestone<'_>, repo: &str) -> Result<(String, bool), CallError> {
        let owner = repo.split('/').next().unwrap_or_default();
        let title = format!("{} (autodev {})", m.run.title, m.run.short_id);
        let body = pull_request_body(m, repo);
        let head = m.head_branch();
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("head", &format!("{owner}:{head}"))
            .append_pair("state", "all")
            .append_pair("per_page", "1")
            .finish();
        let find = self.request(repo, reqwest::Method::GET, &format!("/repos/{repo}/pulls?{query}")).await?;
        let (_, text) = send(find).await?;
        let existing: Vec<PullRequest> = parse(&text)?;
        if let Some(pr) = existing.into_iter().next() {
            if m.is_follow_up() {
                // The pull request keeps its description; the reply on it says what changed.
                return Ok((pr.html_url, false));
            }
            let update = self
                .request(repo, reqwest::Method::PATCH, &format!("/repos/{repo}/pulls/{}", pr.number))
                .await?
                .json(&json!({"title": title, "body": body}));
            send(update).await?;
            return Ok((pr.html_url, false));
        }
        let base = if m.run.base_branch.is_empty() { "main" } else { m.run.base_branch.as_str() };
        let create = self.request(repo, reqwest::Method::POST, &format!("/repos/{repo}/pulls")).await?.json(&json!({
            "title": title,
            "head": m.run.branch,
            "base": base,
            "body": body,
            // Tests that did not pass make a draft: for a person to look at, not to merge.
            "draft": m.run.test_passed != Some(true),
            "maintainer_can_modify": true,
        }));
        let (_, text) = send(create).await?;
        let pr: PullRequest = parse(&text)?;
        if !self.config.labels.is_empty() {
            let labels = self
                .request(repo, reqwest::Method::POST, &format!("/repos/{repo}/issues/{}/labels", pr.number))
                .await?
                .json(&json!({"labels": self.config.labels}));
            send(labels).await?;
        }
        Ok((pr.html_url, true))
    }

    /// The run's one comment on its source issue: edited when it exists (found by the
    /// recorded id, else by its marker), posted otherwise. Returns its id.
    async fn upsert_comment(
        &self,
        store: &Store,
        m: &Milestone<'_>,
        repo: &str,
        issue: u64,
        pull_request: Option<&str>,
    ) -> Result<u64, CallError> {
        let mut body = comment_text(m, pull_request, "pull request");
        if m.is_follow_up() && m.run.state == "succeeded" {
            body.push_str(&what_changed(store, m).await);
        }
        let mut known = m.links.get("github.comment").and_then(|id| id.parse::<u64>().ok());
        if known.is_none() {
            let list = self
                .request(repo, reqwest::Method::GET, &format!("/repos/{repo}/issues/{issue}/comments?per_page=100"))
                .await?;
            let (_, text) = send(list).await?;
            let comments: Vec<Comment> = parse(&text)?;
            let mark = marker(&m.run.id);
            known = comments.iter().find(|c| c.body.as_deref().is_some_and(|b| b.contains(&mark))).map(|c| c.id);
        }
        if let Some(id) = known {
            let edit = self
                .request(repo, reqwest::Method::PATCH, &format!("/repos/{repo}/issues/comments/{id}"))
                .await?
                .json(&json!({"body": body}));
            match send(edit).await {
                Ok(_) => return Ok(id),
                // Deleted by someone: post a new one.
                Err(e) if e.status == Some(404) => {}
                Err(e) => return Err(e),
            }
        }
        let post = self
            .request(repo, reqwest::Method::POST, &format!("/repos/{repo}/issues/{issue}/comments"))
            .await?
            .json(&json!({"body": body}));
        let (_, text) = send(post).await?;
        let comment: Comment = parse(&text)?;
        store
            .set_run_link(&m.run.id, "github.comment", &comment.id.to_string())
            .await
            .map_err(|e| CallError::permanent(None, format!("could not record the comment: {e}")))?;
        Ok(comment.id)
    }
}

#[async_trait::async_trait]
impl Target for Github {
    fn name(&self) -> String {
        "github".into()
    }

    fn wants(&self, m: &Milestone<'_>) -> bool {
        let settings = m.project_settings();
        let on_github = settings.github_repo.is_some();
        let from_issue = origin_issue(m.run.origin.as_deref()).is_some();
        if m.is_timeline() {
            // The ticket hears of the merge and the deploys; the pull request of CI follow-ups
            // used up; the team's workflow of a merge, when it deploys from GitHub.
            let deploys = settings.deploy.as_ref().is_some_and(|d| d.github_workflow.is_some());
            return on_github
                && match m.topic {
                    "delivery.merged" => from_issue || deploys,
                    "delivery.closed" | "delivery.deployed" | "delivery.deploy_failed" => from_issue,
                    "delivery.ci_exhausted" => true,
                    _ => false,
                };
        }
        on_github && (m.opens_review() || (from_issue && m.topic != "run.pr_opened"))
    }

    async fn refresh(&self, store: &Store) {
        if matches!(self.config.auth, GithubAuth::Token(_)) {
            return;
        }
        let Ok(projects) = store.list_projects().await else { return };
        let mut owners = std::collections::BTreeMap::new();
        for p in &projects {
            if let Some(repo) = p.settings().github_repo.as_deref() {
                owners
                    .entry(repo.split('/').next().unwrap_or_default().to_string())
                    .or_insert_with(|| repo.to_string());
            }
        }
        for repo in owners.values() {
            if let Err(e) = self.token_for(repo).await {
                tracing::warn!(repo = %repo, error = %e.message, "could not mint a GitHub App installation token");
            }
        }
    }

    async fn deliver(&self, store: &Store, m: &Milestone<'_>) -> Result<String, CallError> {
        let settings = m.project_settings();
        let Some(repo) = settings.github_repo.clone() else { return Ok("not a GitHub project".into()) };
        let mut done = Vec::new();
        let mut pull_request = m.links.get("github.pull_request").cloned();
        if m.topic == "delivery.ci_exhausted"
            && let Some(number) = pull_request.as_deref().and_then(pull_number)
        {
            let id = self.post_once(m, &repo, number, &ci_exhausted_text(m)).await?;
            // For the pull request alone: the ticket hears of the merge, not of CI.
            return Ok(format!("comment {id} on pull request #{number}"));
        }
        if m.topic == "delivery.merged"
            && let Some(deploy) = settings.deploy.as_ref().filter(|d| d.github_workflow.is_some())
        {
            done.push(self.dispatch_deploy(store, m, &repo, deploy).await?);
        }
        if m.opens_review() {
            let (url, opened) = self.upsert_pull_request(m, &repo).await?;
            let record = |e: autodev_store::StoreError| CallError::permanent(None, format!("could not record: {e}"));
            store.set_run_link(&m.run.id, "github.pull_request", &url).await.map_err(record)?;
            if opened {
                m.review_opened(store, &url, "pull request").await?;
            }
            done.push(format!("pull request {} {url}", if opened { "opened" } else { "updated" }));
            pull_request = Some(url);
        }
        if let Some((issue_repo, number)) = origin_issue(m.run.origin.as_deref()) {
            let id = self.upsert_comment(store, m, &issue_repo, number, pull_request.as_deref()).await?;
            done.push(format!("comment {id} on {issue_repo}#{number}"));
        }
        Ok(done.join("; "))
    }
}

/// The number of a pull request from its page (`…/pull/12`).
pub fn pull_number(url: &str) -> Option<u64> {
    url.trim_end_matches('/').rsplit_once("/pull/")?.1.parse().ok()
}

/// The comment on a pull request whose CI follow-ups are used up.
fn ci_exhausted_text(m: &Milestone<'_>) -> String {
    let rounds = m.project_settings().ci_repair_rounds();
    let detail = m.step.map(|s| s.detail.as_str()).unwrap_or_default();
    format!(
        "{}\n**Autodev** will not follow up CI on this pull request again: it already tried {rounds} time(s), and CI still fails{}. A person needs to look at it; `/autodev <instruction>` in a comment still starts a follow-up.\n\n- Run: {}\n",
        ci_marker(&m.run.id),
        if detail.is_empty() { String::new() } else { format!(" ({})", crate::text::forge(detail)) },
        m.run_url()
    )
}

fn ci_marker(run_id: &str) -> String {
    format!("<!-- autodev-ci-exhausted:{run_id} -->")
}

/// A CI log within `budget` bytes, colour codes removed: whole when it fits, else its head
/// (where the first error of a build usually is) and its tail, cut at lines, with a line saying
/// what was left out (the sandbox's own clipping of command output).
pub(crate) fn log_excerpt(log: &str, budget: usize) -> String {
    let clean = strip_ansi(log);
    let total = clean.len() as u64;
    autodev_workspace::sandbox::clip_stream("", &clean, total, budget, "the whole log is at the check's page").0
}

/// Cuts a failing check's part to its share of the details, keeping its start and end.
pub(crate) fn clip_part(part: &str, share: usize) -> String {
    autodev_workspace::sandbox::clip_stream("", part, part.len() as u64, share, "see the check's page").0
}

/// `text` without ANSI escape sequences (CI logs are coloured), carriage returns, or GitLab's
/// collapsible-section markers (`section_start:1700000000:step_script\r`). Written here: no
/// crate in the tree does it, and GitLab's markers are GitLab's own.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split('\n') {
        let mut line = line.to_string();
        for marker in ["section_start:", "section_end:"] {
            while let Some(at) = line.find(marker) {
                let end = line[at..].find('\r').map_or(line.len(), |i| at + i + 1);
                line.replace_range(at..end, "");
            }
        }
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\u{1b}' => {
                    if chars.peek() == Some(&'[') {
                        chars.next();
                        // CSI: parameters and intermediates, then one final byte in @..~.
                        for c in chars.by_ref() {
                            if ('@'..='~').contains(&c) {
                                break;
                            }
                        }
                    }
                }
                '\r' => {}
                c => out.push(c),
            }
        }
        out.push('\n');
    }
    out.pop();
    out
}

#[derive(Deserialize)]
struct CheckRuns {
    #[serde(default)]
    check_runs: Vec<CheckRun>,
}

#[derive(Deserialize)]
struct CheckRun {
    id: u64,
    name: String,
    #[serde(default)]
    conclusion: Option<String>,
    #[serde(default)]
    html_url: Option<String>,
    #[serde(default)]
    output: CheckOutput,
    #[serde(default)]
    app: Option<CheckApp>,
}

#[derive(Deserialize, Default)]
struct CheckOutput {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    summary: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    annotations_count: u64,
}

#[derive(Deserialize)]
struct CheckApp {
    #[serde(default)]
    slug: Option<String>,
}

#[derive(Deserialize)]
struct Annotation {
    #[serde(default)]
    path: String,
    #[serde(default)]
    start_line: u64,
    #[serde(default)]
    annotation_level: String,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    message: String,
}

/// What failed in CI, for a follow-up's spec: a summary line and the details.
#[derive(Debug, Clone, Default)]
pub struct CiFailure {
    /// `CI / test, lint` — the failing checks' names.
    pub summary: String,
    /// Each failing check's output, annotations and log tail, size-capped.
    pub details: String,
}

impl Github {
    /// What failed on commit `sha` of `repo`: every failing check run's output and
    /// annotations, and for GitHub Actions the tail of its job's log; at most `budget` bytes
    /// of details (each check gets its share).
    pub async fn failing_checks(&self, repo: &str, sha: &str, budget: usize) -> Result<CiFailure, CallError> {
        let list = self
            .request(
                repo,
                reqwest::Method::GET,
                &format!("/repos/{repo}/commits/{sha}/check-runs?filter=latest&per_page=100"),
            )
            .await?;
        let (_, text) = send(list).await?;
        let runs: CheckRuns = parse(&text)?;
        let failing: Vec<&CheckRun> = runs
            .check_runs
            .iter()
            .filter(|r| matches!(r.conclusion.as_deref(), Some("failure" | "timed_out" | "startup_failure")))
            .take(6)
            .collect();
        let summary = failing.iter().map(|r| r.name.as_str()).collect::<Vec<_>>().join(", ");
        let share = budget / failing.len().max(1);
        let mut details = String::new();
        for run in &failing {
            let mut part = format!("### {} ({})\n", run.name, run.conclusion.as_deref().unwrap_or("failure"));
            if let Some(url) = &run.html_url {
                part.push_str(&format!("{url}\n"));
            }
            for text in [&run.output.title, &run.output.summary, &run.output.text].into_iter().flatten() {
                if !text.trim().is_empty() {
                    part.push_str(&format!("\n{}\n", text.trim()));
                }
            }
            if run.output.annotations_count > 0 {
                let req = self
                    .request(
                        repo,
                        reqwest::Method::GET,
                        &format!("/repos/{repo}/check-runs/{}/annotations?per_page=30", run.id),
                    )
                    .await?;
                if let Ok((_, text)) = send(req).await {
                    let notes: Vec<Annotation> = serde_json::from_str(&text).unwrap_or_default();
                    part.push_str("\nAnnotations:\n");
                    for a in notes {
                        let title = a.title.map(|t| format!("{t}: ")).unwrap_or_default();
                        part.push_str(&format!(
                            "- {}:{} [{}] {title}{}\n",
                            a.path,
                            a.start_line,
                            a.annotation_level,
                            a.message.trim()
                        ));
                    }
                }
            }
            if run.app.as_ref().and_then(|a| a.slug.as_deref()) == Some("github-actions") {
                // The job's log (a redirect to a short-lived download URL, followed).
                let req = self
                    .request(repo, reqwest::Method::GET, &format!("/repos/{repo}/actions/jobs/{}/logs", run.id))
                    .await?;
                if let Ok((_, log)) = send(req).await {
                    // The log's end is what matters: room is left so the cap below cuts nothing.
                    let room = share.saturating_sub(part.len() + 200).max(1024);
                    part.push_str(&format!("\nThe job's log:\n```\n{}\n```\n", log_excerpt(&log, room)));
                }
            }
            details.push_str(&clip_part(&part, share));
            details.push('\n');
        }
        Ok(CiFailure { summary, details })
    }

    /// Dispatches the project's deploy workflow on the merged change, once per run (the
    /// timeline's `deploy_requested` step is its record).
    async fn dispatch_deploy(
        &self,
        store: &Store,
        m: &Milestone<'_>,
        repo: &str,
        deploy: &autodev_domain::DeploySettings,
    ) -> Result<String, CallError> {
        let workflow = deploy.github_workflow.clone().unwrap_or_default();
        let Some((git_ref, environment)) = m.deploy_target(deploy) else {
            return Ok("deploy already requested".into());
        };
        let mut inputs: serde_json::Map<String, serde_json::Value> =
            deploy.inputs.iter().flatten().map(|(k, v)| (k.clone(), json!(v))).collect();
        inputs.insert("environment".into(), json!(environment));
        let workflow_path: String = form_urlencoded::byte_serialize(workflow.as_bytes()).collect();
        let req = self
            .request(
                repo,
                reqwest::Method::POST,
                &format!("/repos/{repo}/actions/workflows/{workflow_path}/dispatches"),
            )
            .await?
            .json(&json!({"ref": git_ref, "inputs": inputs}));
        send(req).await?;
        let detail = format!("workflow {workflow} dispatched on {git_ref}");
        m.deploy_requested(store, "github_workflow", detail, None, &environment).await?;
        Ok(format!("workflow {workflow} dispatched on {git_ref} for {environment}"))
    }

    /// Posts `body` on pull request `number` unless a comment with its marker is there.
    async fn post_once(&self, m: &Milestone<'_>, repo: &str, number: u64, body: &str) -> Result<u64, CallError> {
        let list = self
            .request(repo, reqwest::Method::GET, &format!("/repos/{repo}/issues/{number}/comments?per_page=100"))
            .await?;
        let (_, text) = send(list).await?;
        let comments: Vec<Comment> = parse(&text)?;
        let mark = ci_marker(&m.run.id);
        if let Some(c) = comments.iter().find(|c| c.body.as_deref().is_some_and(|b| b.contains(&mark))) {
            return Ok(c.id);
        }
        let post = self
            .request(repo, reqwest::Method::POST, &format!("/repos/{repo}/issues/{number}/comments"))
            .await?
            .json(&json!({"body": body}));
        let (_, text) = send(post).await?;
        Ok(parse::<Comment>(&text)?.id)
    }
}

/// The pull request's description: the headline, the issue it closes, the run's report.
fn pull_request_body(m: &Milestone<'_>, repo: &str) -> String {
    let mut body = String::new();
    body.push_str(&format!("{}\n\n", crate::text::forge(&m.headline())));
    if let Some((issue_repo, number)) = origin_issue(m.run.origin.as_deref()) {
        if issue_repo.eq_ignore_ascii_case(repo) {
            body.push_str(&format!("Closes #{number}\n\n"));
        } else {
            body.push_str(&format!("Closes {issue_repo}#{number}\n\n"));
        }
    }
    body.push_str(&reverts_line(m));
    let report = crate::text::forge(m.report.unwrap_or_default());
    let room = MAX_BODY_CHARS.saturating_sub(body.len() + 400);
    if report.chars().count() > room {
        body.extend(report.chars().take(room));
        body.push_str("\n\n… (the report is cut here; the whole report is at the run's link)\n");
    } else {
        body.push_str(&report);
    }
    body.push_str(&format!(
        "\n\n---\nRun {} · {} · ${:.4}\n{}\n",
        m.run.short_id,
        m.run_url(),
        m.run.cost_micros as f64 / 1e6,
        marker(&m.run.id)
    ));
    body
}

/// For a revert run: what it reverts (the pull request, the merge commit, the run, its
/// ticket), as a paragraph; nothing for other runs.
pub(crate) fn reverts_line(m: &Milestone<'_>) -> String {
    let Some(of) = m.run.settings().ok().and_then(|s| s.revert) else { return String::new() };
    let mut line = format!("This reverts the change of Autodev run `{}`", &of.run_id[..of.run_id.len().min(8)]);
    if let Some(pr) = &of.pull_request {
        line.push_str(&format!(" ({pr})"));
    }
    line.push_str(&format!(", merged as `{}`", of.sha));
    if let Some(origin) = &m.run.origin {
        line.push_str(&format!("; its ticket: `{origin}`"));
    }
    line.push_str(".\n\n");
    line
}

/// The ticket comment for where the run stands now: the run as read when the comment is
/// written (not the milestone being delivered), so milestones delivered late or out of order
/// never put an older state back.
/// For a follow-up's reply: the commits it added, from its `delivered` event.
pub(crate) async fn what_changed(store: &Store, m: &Milestone<'_>) -> String {
    let events = store.events(&m.run.id, 0).await.unwrap_or_default();
    let commits: Vec<String> = events
        .iter()
        .rev()
        .find_map(|e| match &e.kind {
            autodev_domain::EventKind::Delivered { commits, .. } => Some(commits.clone()),
            _ => None,
        })
        .unwrap_or_default();
    if commits.is_empty() {
        return String::new();
    }
    let list: Vec<String> = commits.iter().map(|c| format!("- `{c}`")).collect();
    format!("\nAdded:\n{}\n", list.join("\n"))
}

pub(crate) fn comment_text(m: &Milestone<'_>, pull_request: Option<&str>, noun: &str) -> String {
    let reason = m.run.reason.as_deref();
    let status = match m.run.state.as_str() {
        "queued" | "planning" => "is planning this".to_string(),
        "awaiting_approval" => "has a plan waiting for approval".to_string(),
        "executing" | "verifying" | "delivering" => "is working on this (plan ready)".to_string(),
        "succeeded" if m.is_follow_up() => format!("pushed its changes to this {noun} (`{}`)", m.head_branch()),
        "succeeded" => match pull_request {
            Some(url) => format!("opened a {noun}: {url}"),
            None => "succeeded".to_string(),
        },
        "failed" => match pull_request {
            Some(url) => format!(
                "failed: {}. The work so far is in a draft {noun} for a person to finish: {url}",
                crate::text::forge(reason.unwrap_or("no reason recorded"))
            ),
            None => format!("failed: {}", crate::text::forge(reason.unwrap_or("no reason recorded"))),
        },
        "cancelled" => {
            format!("was cancelled{}", reason.map(|r| format!(": {}", crate::text::forge(r))).unwrap_or_default())
        }
        other => other.to_string(),
    };
    let mut text = format!(
        "{}\n**Autodev** run `{}` {status}.\n\n- Run: {}\n- Branch: `{}`\n",
        marker(&m.run.id),
        m.run.short_id,
        m.run_url(),
        m.head_branch()
    );
    text.push_str(&m.timeline_lines());
    if let Some(failure) = m.links.get("ci.failure") {
        text.push_str(&format!("\nThis follow-up answers: {}\n", crate::text::forge(failure)));
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn git_prefixes() {
        assert_eq!(super::git_prefix("https://api.github.com").as_deref(), Some("https://github.com/"));
        assert_eq!(super::git_prefix("https://ghe.corp:8443/api/v3").as_deref(), Some("https://ghe.corp:8443/"));
    }

    #[test]
    fn ci_logs_lose_colours_and_section_markers_and_keep_their_ends() {
        let log = "\u{1b}[0Ksection_start:1560896352:step_script\r\u{1b}[0K$ cargo test\n\u{1b}[31merror\u{1b}[0m: failed\r\nsection_end:1560896353:step_script\r\u{1b}[0K\n";
        assert_eq!(super::strip_ansi(log), "$ cargo test\nerror: failed\n\n");
        let long: String = (0..100).map(|i| format!("line {i}\n")).collect();
        let excerpt = super::log_excerpt(&long, 300);
        assert!(excerpt.starts_with("line 0\n") && excerpt.trim_end().ends_with("line 99"), "{excerpt}");
        assert!(excerpt.contains("left out here") && excerpt.len() < 400, "{excerpt}");
        assert_eq!(super::pull_number("https://github.com/o/n/pull/12"), Some(12));
    }

    #[test]
    fn origins_name_an_issue() {
        assert_eq!(super::origin_issue(Some("github:o/n#12")), Some(("o/n".into(), 12)));
        assert_eq!(super::origin_issue(Some("gitlab:o/n#12")), None);
        assert_eq!(super::origin_issue(Some("github:o/n#x")), None);
        assert_eq!(super::origin_issue(None), None);
    }
}
