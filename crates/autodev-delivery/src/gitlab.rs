//! GitLab (REST v4, gitlab.com or self-managed): a merge request for a run that succeeded and
//! one note on the run's source issue, edited as the run moves — GitHub's flow with GitLab's
//! words. A few typed calls with reqwest, as for GitHub (the `gitlab` crate's blocking-first
//! API would wrap the same five endpoints).
use autodev_store::Store;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;

use crate::target::{CallError, Milestone, Target};
use crate::webhook::{client, send};

/// GitLab's description limit is 1,048,576 characters; the report is cut well before.
const MAX_BODY_CHARS: usize = 100_000;

#[derive(Clone)]
pub struct GitlabConfig {
    /// `https://gitlab.com` or a self-managed instance (`AUTODEV_GITLAB_URL`).
    pub url: String,
    pub token: SecretString,
    pub labels: Vec<String>,
    /// A pipeline trigger token (`AUTODEV_GITLAB_TRIGGER_TOKEN`) for the `deploy` setting's
    /// `gitlab_trigger`; without one the pipeline is created with `token`.
    pub trigger_token: Option<SecretString>,
}

pub struct Gitlab {
    config: GitlabConfig,
    http: reqwest::Client,
}

#[derive(Deserialize)]
struct MergeRequest {
    iid: u64,
    web_url: String,
}

#[derive(Deserialize)]
struct Note {
    id: u64,
    #[serde(default)]
    body: Option<String>,
}

/// `gitlab:group/name#3` → (`group/name`, 3).
pub fn origin_issue(origin: Option<&str>) -> Option<(String, u64)> {
    let rest = origin?.strip_prefix("gitlab:")?;
    let (project, number) = rest.rsplit_once('#')?;
    Some((project.to_string(), number.parse().ok()?))
}

/// `gitlab:group/name!12` (a follow-up of feedback on merge request !12) → (`group/name`, 12).
pub fn origin_merge_request(origin: Option<&str>) -> Option<(String, u64)> {
    let rest = origin?.strip_prefix("gitlab:")?;
    let (project, number) = rest.rsplit_once('!')?;
    Some((project.to_string(), number.parse().ok()?))
}

fn marker(run_id: &str) -> String {
    format!("<!-- autodev-run:{run_id} -->")
}

fn parse<T: for<'de> Deserialize<'de>>(body: &str) -> Result<T, CallError> {
    serde_json::from_str(body).map_err(|e| CallError::permanent(None, format!("unexpected answer from GitLab: {e}")))
}

/// A project path as GitLab's API takes it in a URL (`group%2Fname`).
fn project_id(path: &str) -> String {
    form_urlencoded::byte_serialize(path.as_bytes()).collect()
}

#[derive(Deserialize)]
struct Member {
    access_level: u32,
}

impl Gitlab {
    /// `user_id`'s access level in `project` (10 guest, 15 planner, 20 reporter, 30 developer,
    /// 40 maintainer, 50 owner), inherited memberships included; 0 for a non-member.
    pub async fn access_level(&self, project: &str, user_id: i64) -> Result<u32, CallError> {
        let req =
            self.request(reqwest::Method::GET, &format!("/projects/{}/members/all/{user_id}", project_id(project)));
        match send(req).await {
            Ok((_, text)) => Ok(parse::<Member>(&text)?.access_level),
            Err(e) if e.status == Some(404) => Ok(0),
            Err(e) => Err(e),
        }
    }

    pub fn new(config: GitlabConfig) -> Self {
        Self { config, http: client() }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}/api/v4{path}", self.config.url.trim_end_matches('/')))
            .header("private-token", self.config.token.expose_secret())
    }

    async fn upsert_merge_request(&self, m: &Milestone<'_>, project: &str) -> Result<(String, bool), CallError> {
        let id = project_id(project);
        let draft = m.run.test_passed != Some(true);
        let title = format!("{}{} (autodev {})", if draft { "Draft: " } else { "" }, m.run.title, m.run.short_id);
        let description = description(m, project);
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("source_branch", &m.head_branch())
            .append_pair("state", "all")
            .finish();
        let (_, text) =
            send(self.request(reqwest::Method::GET, &format!("/projects/{id}/merge_requests?{query}"))).await?;
        let existing: Vec<MergeRequest> = parse(&text)?;
        if let Some(mr) = existing.into_iter().next() {
            if m.is_follow_up() {
                // The merge request keeps its description; the note on it says what changed.
                return Ok((mr.web_url, false));
            }
            let update = self
                .request(reqwest::Method::PUT, &format!("/projects/{id}/merge_requests/{}", mr.iid))
                .json(&json!({"title": title, "description": description}));
            send(update).await?;
            return Ok((mr.web_url, false));
        }
        let target = if m.run.base_branch.is_empty() { "main" } else { m.run.base_branch.as_str() };
        let create = self.request(reqwest::Method::POST, &format!("/projects/{id}/merge_requests")).json(&json!({
            "source_branch": m.run.branch,
            "target_branch": target,
            "title": title,
            "description": description,
            "labels": self.config.labels.join(","),
            "remove_source_branch": false,
        }));
        let (_, text) = send(create).await?;
        let mr: MergeRequest = parse(&text)?;
        Ok((mr.web_url, true))
    }

    /// The run's one note on `thread` (`issues/3` or `merge_requests/12`), edited as it moves.
    async fn upsert_note(
        &self,
        store: &Store,
        m: &Milestone<'_>,
        project: &str,
        thread: &str,
        merge_request: Option<&str>,
    ) -> Result<u64, CallError> {
        let id = project_id(project);
        let mut body = crate::github::comment_text(m, merge_request, "merge request");
        if m.is_follow_up() && m.run.state == "succeeded" {
            body.push_str(&crate::github::what_changed(store, m).await);
        }
        let mut known = m.links.get("gitlab.note").and_then(|id| id.parse::<u64>().ok());
        if known.is_none() {
            let list = self.request(reqwest::Method::GET, &format!("/projects/{id}/{thread}/notes?per_page=100"));
            let (_, text) = send(list).await?;
            let notes: Vec<Note> = parse(&text)?;
            let mark = marker(&m.run.id);
            known = notes.iter().find(|n| n.body.as_deref().is_some_and(|b| b.contains(&mark))).map(|n| n.id);
        }
        if let Some(note) = known {
            let edit = self
                .request(reqwest::Method::PUT, &format!("/projects/{id}/{thread}/notes/{note}"))
                .json(&json!({"body": body}));
            match send(edit).await {
                Ok(_) => return Ok(note),
                Err(e) if e.status == Some(404) => {}
                Err(e) => return Err(e),
            }
        }
        let post =
            self.request(reqwest::Method::POST, &format!("/projects/{id}/{thread}/notes")).json(&json!({"body": body}));
        let (_, text) = send(post).await?;
        let note: Note = parse(&text)?;
        store
            .set_run_link(&m.run.id, "gitlab.note", &note.id.to_string())
            .await
            .map_err(|e| CallError::permanent(None, format!("could not record the note: {e}")))?;
        Ok(note.id)
    }
}

#[async_trait::async_trait]
impl Target for Gitlab {
    fn name(&self) -> String {
        "gitlab".into()
    }

    fn wants(&self, m: &Milestone<'_>) -> bool {
        let settings = m.project_settings();
        let on_gitlab = settings.gitlab_project.is_some();
        let from_issue =
            origin_issue(m.run.origin.as_deref()).is_some() || origin_merge_request(m.run.origin.as_deref()).is_some();
        if m.is_timeline() {
            let deploys = settings.deploy.as_ref().is_some_and(|d| d.gitlab_trigger == Some(true));
            return on_gitlab
                && match m.topic {
                    "delivery.merged" => from_issue || deploys,
                    "delivery.closed" | "delivery.deployed" | "delivery.deploy_failed" => from_issue,
                    "delivery.ci_exhausted" => true,
                    _ => false,
                };
        }
        on_gitlab && (m.opens_review() || (from_issue && m.topic != "run.pr_opened"))
    }

    async fn deliver(&self, store: &Store, m: &Milestone<'_>) -> Result<String, CallError> {
        let settings = m.project_settings();
        let Some(project) = settings.gitlab_project.clone() else { return Ok("not a GitLab project".into()) };
        let mut done = Vec::new();
        let mut merge_request = m.links.get("gitlab.merge_request").cloned();
        if m.topic == "delivery.ci_exhausted"
            && let Some(iid) = merge_request.as_deref().and_then(merge_request_iid)
        {
            let id = self.note_once(m, &project, iid).await?;
            // For the merge request alone: the ticket hears of the merge, not of CI.
            return Ok(format!("note {id} on !{iid}"));
        }
        if m.topic == "delivery.merged"
            && let Some(deploy) = settings.deploy.as_ref().filter(|d| d.gitlab_trigger == Some(true))
        {
            done.push(self.trigger_deploy(store, m, &project, deploy).await?);
        }
        if m.opens_review() {
            let (url, opened) = self.upsert_merge_request(m, &project).await?;
            let record = |e: autodev_store::StoreError| CallError::permanent(None, format!("could not record: {e}"));
            store.set_run_link(&m.run.id, "gitlab.merge_request", &url).await.map_err(record)?;
            if opened {
                m.review_opened(store, &url, "merge request").await?;
            }
            done.push(format!("merge request {} {url}", if opened { "opened" } else { "updated" }));
            merge_request = Some(url);
        }
        if let Some((issue_project, number)) = origin_issue(m.run.origin.as_deref()) {
            let id = self
                .upsert_note(store, m, &issue_project, &format!("issues/{number}"), merge_request.as_deref())
                .await?;
            done.push(format!("note {id} on {issue_project}#{number}"));
        } else if let Some((mr_project, number)) = origin_merge_request(m.run.origin.as_deref()) {
            let thread = format!("merge_requests/{number}");
            let id = self.upsert_note(store, m, &mr_project, &thread, merge_request.as_deref()).await?;
            done.push(format!("note {id} on {mr_project}!{number}"));
        }
        Ok(done.join("; "))
    }
}

/// The iid of a merge request from its page (`…/merge_requests/12`).
pub fn merge_request_iid(url: &str) -> Option<u64> {
    url.trim_end_matches('/').rsplit_once("/merge_requests/")?.1.parse().ok()
}

#[derive(Deserialize)]
struct Job {
    id: u64,
    name: String,
    #[serde(default)]
    stage: String,
    #[serde(default)]
    failure_reason: Option<String>,
    #[serde(default)]
    web_url: Option<String>,
}

#[derive(Deserialize)]
struct Pipeline {
    id: u64,
    #[serde(default)]
    web_url: Option<String>,
}

impl Gitlab {
    /// What failed in pipeline `pipeline` of `project`: each failed job (those the webhook
    /// named, else the pipeline's failed jobs as the API lists them) with the tail of its log;
    /// at most `budget` bytes of details.
    pub async fn failed_jobs(
        &self,
        project: &str,
        pipeline: u64,
        named: &[(u64, String, String)],
        budget: usize,
    ) -> Result<crate::github::CiFailure, CallError> {
        let id = project_id(project);
        let jobs: Vec<Job> = if named.is_empty() {
            let req = self.request(
                reqwest::Method::GET,
                &format!("/projects/{id}/pipelines/{pipeline}/jobs?scope[]=failed&per_page=50"),
            );
            let (_, text) = send(req).await?;
            parse(&text)?
        } else {
            named
                .iter()
                .map(|(id, name, stage)| Job {
                    id: *id,
                    name: name.clone(),
                    stage: stage.clone(),
                    failure_reason: None,
                    web_url: None,
                })
                .collect()
        };
        let jobs: Vec<Job> = jobs.into_iter().take(6).collect();
        let summary = jobs.iter().map(|j| j.name.as_str()).collect::<Vec<_>>().join(", ");
        let share = budget / jobs.len().max(1);
        let mut details = String::new();
        for job in &jobs {
            let mut part = format!("### {} (stage {}", job.name, job.stage);
            if let Some(reason) = &job.failure_reason {
                part.push_str(&format!(", {reason}"));
            }
            part.push_str(")\n");
            if let Some(url) = &job.web_url {
                part.push_str(&format!("{url}\n"));
            }
            let trace = self.request(reqwest::Method::GET, &format!("/projects/{id}/jobs/{}/trace", job.id));
            if let Ok((_, log)) = send(trace).await {
                let room = share.saturating_sub(part.len() + 200).max(1024);
                part.push_str(&format!("\nThe job's log:\n```\n{}\n```\n", crate::github::log_excerpt(&log, room)));
            }
            details.push_str(&crate::github::clip_part(&part, share));
            details.push('\n');
        }
        Ok(crate::github::CiFailure { summary, details })
    }

    /// Runs the project's deploy pipeline on the merged change, once per run: GitLab's
    /// pipeline trigger with the trigger token when one is configured, else a pipeline made
    /// with the integration's token; `AUTODEV_ENVIRONMENT` (and the setting's `inputs`) as
    /// variables.
    async fn trigger_deploy(
        &self,
        store: &Store,
        m: &Milestone<'_>,
        project: &str,
        deploy: &autodev_domain::DeploySettings,
    ) -> Result<String, CallError> {
        let Some((git_ref, environment)) = m.deploy_target(deploy) else {
            return Ok("deploy already requested".into());
        };
        let mut variables: Vec<(String, String)> =
            vec![("AUTODEV_ENVIRONMENT".into(), environment.clone()), ("AUTODEV_RUN".into(), m.run.id.clone())];
        variables.extend(deploy.inputs.iter().flatten().map(|(k, v)| (k.clone(), v.clone())));
        let id = project_id(project);
        let request = match &self.config.trigger_token {
            Some(token) => {
                // The trigger API takes a form (`token`, `ref`, `variables[KEY]`).
                let mut form = form_urlencoded::Serializer::new(String::new());
                form.append_pair("token", token.expose_secret()).append_pair("ref", &git_ref);
                for (k, v) in &variables {
                    form.append_pair(&format!("variables[{k}]"), v);
                }
                self.http
                    .post(format!("{}/api/v4/projects/{id}/trigger/pipeline", self.config.url.trim_end_matches('/')))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(form.finish())
            }
            None => {
                let vars: Vec<serde_json::Value> =
                    variables.iter().map(|(k, v)| json!({"key": k, "value": v})).collect();
                self.request(reqwest::Method::POST, &format!("/projects/{id}/pipeline"))
                    .json(&json!({"ref": git_ref, "variables": vars}))
            }
        };
        let (_, text) = send(request).await?;
        let pipeline: Pipeline = parse(&text)?;
        let detail = format!("pipeline {} on {git_ref}", pipeline.id);
        m.deploy_requested(store, "gitlab_trigger", detail, pipeline.web_url.clone(), &environment).await?;
        Ok(format!("pipeline {} triggered on {git_ref} for {environment}", pipeline.id))
    }

    /// Posts the CI-exhausted note on merge request `iid` unless it is there.
    async fn note_once(&self, m: &Milestone<'_>, project: &str, iid: u64) -> Result<u64, CallError> {
        let id = project_id(project);
        let mark = format!("<!-- autodev-ci-exhausted:{} -->", m.run.id);
        let list =
            self.request(reqwest::Method::GET, &format!("/projects/{id}/merge_requests/{iid}/notes?per_page=100"));
        let (_, text) = send(list).await?;
        let notes: Vec<Note> = parse(&text)?;
        if let Some(n) = notes.iter().find(|n| n.body.as_deref().is_some_and(|b| b.contains(&mark))) {
            return Ok(n.id);
        }
        let rounds = m.project_settings().ci_repair_rounds();
        let body = format!(
            "{mark}\n**Autodev** will not follow up CI on this merge request again: it already tried {rounds} time(s), and the pipeline still fails. A person needs to look at it; `/autodev <instruction>` in a comment still starts a follow-up.\n\n- Run: {}\n",
            m.run_url()
        );
        let post = self
            .request(reqwest::Method::POST, &format!("/projects/{id}/merge_requests/{iid}/notes"))
            .json(&json!({"body": body}));
        let (_, text) = send(post).await?;
        Ok(parse::<Note>(&text)?.id)
    }
}

/// The merge request's description: the headline, the issue it closes, the run's report.
fn description(m: &Milestone<'_>, project: &str) -> String {
    let mut body = format!("{}\n\n", crate::text::forge(&m.headline()));
    if let Some((issue_project, number)) = origin_issue(m.run.origin.as_deref()) {
        if issue_project == project {
            body.push_str(&format!("Closes #{number}\n\n"));
        } else {
            body.push_str(&format!("Closes {issue_project}#{number}\n\n"));
        }
    }
    body.push_str(&crate::github::reverts_line(m));
    let report = crate::text::forge(m.report.unwrap_or_default());
    body.extend(report.chars().take(MAX_BODY_CHARS));
    body.push_str(&format!("\n\n---\nRun {} · {}\n{}\n", m.run.short_id, m.run_url(), marker(&m.run.id)));
    body
}

#[cfg(test)]
mod tests {
    #[test]
    fn origins_and_ids() {
        assert_eq!(super::origin_issue(Some("gitlab:group/sub/name#3")), Some(("group/sub/name".into(), 3)));
        assert_eq!(super::project_id("group/sub/name"), "group%2Fsub%2Fname");
    }
}
