//! The OpenAPI document, served at `GET /api/v1/openapi.json` (no key needed).
//!
//! The handlers build their JSON with `serde_json::json!`, so the shapes are described here
//! once, as schema types, with one `#[utoipa::path]` per route. A test checks that every
//! route of the router is documented and every documented route exists, so the two cannot
//! drift apart silently.
#![allow(dead_code)] // The types and fns below exist for their utoipa attributes.

use axum::Json;
use axum::response::IntoResponse;
use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// Every error: one shape, with the field at fault when there is one.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// `unauthorized`, `forbidden`, `not_found`, `conflict`, `invalid`, `malformed_json`,
    /// `malformed_body`, `too_large`, `rate_limited`, `webhook_disabled`, `internal`.
    code: String,
    message: String,
    field: Option<String>,
}

/// DESIGN.md's run states.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStateName {
    Queued,
    Planning,
    AwaitingApproval,
    Executing,
    Verifying,
    Delivering,
    Succeeded,
    Failed,
    Cancelled,
}

#[derive(Serialize, ToSchema)]
pub struct Usage {
    input_tokens: i64,
    output_tokens: i64,
    cost_usd: f64,
}

#[derive(Serialize, ToSchema)]
pub struct RunLinks {
    #[serde(rename = "self")]
    this: String,
    events: String,
}

#[derive(Serialize, ToSchema)]
pub struct Run {
    /// UUIDv7.
    id: String,
    /// The last 8 hex digits of the id; accepted wherever an id is.
    short_id: String,
    title: String,
    state: RunStateName,
    /// Why the run failed or was cancelled.
    reason: Option<String>,
    /// The project's repository (a path or a clone URL), or the local path for CLI runs.
    repository: String,
    /// Empty until a worker resolves the repository's default branch.
    base_branch: String,
    /// The branch the run delivers, `autodev/<short-id>-<slug>`.
    branch: String,
    project_id: Option<String>,
    /// What started the run: `github:owner/name#12`, `gitlab:group/name#3`, `jira:KEY-7`.
    origin: Option<String>,
    tests_passed: Option<bool>,
    /// What the run's tests prove, once verified: `proven` (they fail on the base commit with
    /// only the run's test changes, and pass on the run branch), `tests pass but prove nothing`
    /// (they pass on the base too) or `no tests` (the run changed no tests).
    #[schema(value_type = Option<String>, pattern = "^(proven|tests pass but prove nothing|no tests)$")]
    evidence: Option<String>,
    usage: Usage,
    created_at_ms: i64,
    finished_at_ms: Option<i64>,
    links: RunLinks,
}

#[derive(Serialize, ToSchema)]
pub struct Task {
    id: String,
    title: String,
    /// `pending`, `ready`, `running`, `done`, `failed` or `skipped`.
    state: String,
    depends_on: Vec<String>,
    summary: Option<String>,
    reason: Option<String>,
    commit: Option<String>,
}

/// A run with its plan and tasks.
#[derive(Serialize, ToSchema)]
pub struct RunDetail {
    #[serde(flatten)]
    run: Run,
    plan: Option<Value>,
    tasks: Vec<Task>,
}

#[derive(Serialize, ToSchema)]
pub struct RunPage {
    /// Newest first.
    runs: Vec<Run>,
    /// Pass as `cursor` for the next page; absent on the last page.
    next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct CreateRun {
    /// Project id or name.
    project: String,
    /// Markdown. A first `# heading` is the title unless `title` is given.
    spec: String,
    title: Option<String>,
    model: Option<String>,
    /// 1 to 16.
    max_parallel: Option<u32>,
    /// Stop at `awaiting_approval` after planning (default false).
    approval: Option<bool>,
}

#[derive(Serialize, ToSchema)]
pub struct Decision {
    comment: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Project {
    id: String,
    name: String,
    /// An absolute path to a git repository, or a clone URL (https, ssh, git, file).
    repository: String,
    base_branch: Option<String>,
    /// Detected in the repository when absent.
    test_command: Option<String>,
    /// Further settings: `github_repo` (`owner/name`), `gitlab_project` (`group/name`),
    /// `jira_project` (`KEY`) match tickets to the project.
    settings: Value,
    created_at_ms: i64,
    updated_at_ms: i64,
}

#[derive(Serialize, ToSchema)]
pub struct ProjectBody {
    /// 1-100 letters, digits, `-`, `_` or `.`; required on create.
    name: Option<String>,
    /// Required on create.
    repository: Option<String>,
    base_branch: Option<String>,
    test_command: Option<String>,
    settings: Option<Value>,
}

#[derive(Serialize, ToSchema)]
pub struct ProjectList {
    projects: Vec<Project>,
}

#[derive(Serialize, ToSchema)]
pub struct UsageRow {
    /// Empty for runs started with `autodev run`.
    project: String,
    model: String,
    /// UTC, `YYYY-MM-DD`.
    day: String,
    calls: i64,
    input_tokens: i64,
    output_tokens: i64,
    cost_usd: f64,
}

#[derive(Serialize, ToSchema)]
pub struct UsageReport {
    days: i64,
    usage: Vec<UsageRow>,
    total_cost_usd: f64,
}

#[derive(Serialize, ToSchema)]
pub struct Ready {
    /// `ready` or `not_ready`.
    status: String,
    /// `database`, `migrations`, `queue`, `model_provider`: each true or false.
    checks: Value,
}

#[derive(Serialize, ToSchema)]
pub struct WebhookAnswer {
    /// `created`, `ignored`, `duplicate` or `pong`.
    status: String,
    reason: Option<String>,
    delivery: Option<String>,
    run: Option<Run>,
}

#[utoipa::path(get, path = "/health", tag = "operations", responses((status = 200, description = "The process is alive", body = String)))]
fn health() {}

#[utoipa::path(get, path = "/ready", tag = "operations", responses(
    (status = 200, description = "Database reachable, migrations applied, queue working, a model provider configured", body = Ready),
    (status = 503, description = "Not ready; `checks` says which check failed", body = Ready)))]
fn ready() {}

#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
fn metrics() {}

#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "operations", responses((status = 200, description = "This document")))]
fn openapi_json() {}

#[utoipa::path(get, path = "/api/v1/projects", tag = "projects", security(("bearer" = [])),
    responses((status = 200, body = ProjectList), (status = 401, body = ErrorBody)))]
fn list_projects() {}

#[utoipa::path(post, path = "/api/v1/projects", tag = "projects", security(("bearer" = [])), request_body = ProjectBody,
    responses((status = 201, body = Project), (status = 403, description = "Needs the admin role", body = ErrorBody),
        (status = 409, description = "The name is taken", body = ErrorBody), (status = 422, body = ErrorBody)))]
fn create_project() {}

#[utoipa::path(get, path = "/api/v1/projects/{project}", tag = "projects", security(("bearer" = [])),
    params(("project" = String, Path, description = "Id or name")),
    responses((status = 200, body = Project), (status = 404, body = ErrorBody)))]
fn get_project() {}

#[utoipa::path(patch, path = "/api/v1/projects/{project}", tag = "projects", security(("bearer" = [])), request_body = ProjectBody,
    params(("project" = String, Path, description = "Id or name")),
    responses((status = 200, body = Project), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
fn update_project() {}

#[utoipa::path(delete, path = "/api/v1/projects/{project}", tag = "projects", security(("bearer" = [])),
    params(("project" = String, Path, description = "Id or name")),
    responses((status = 204, description = "Deleted; its runs keep their history"), (status = 404, body = ErrorBody)))]
fn delete_project() {}

#[utoipa::path(get, path = "/api/v1/runs", tag = "runs", security(("bearer" = [])),
    params(("project" = Option<String>, Query, description = "Project id or name"),
        ("state" = Option<RunStateName>, Query, description = "Only runs in this state"),
        ("limit" = Option<i64>, Query, description = "1 to 200, default 50"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page")),
    responses((status = 200, body = RunPage), (status = 422, body = ErrorBody)))]
fn list_runs() {}

#[utoipa::path(post, path = "/api/v1/runs", tag = "runs", security(("bearer" = [])), request_body = CreateRun,
    responses((status = 201, description = "Queued for a worker", body = Run), (status = 403, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 429, description = "Rate limited; see Retry-After", body = ErrorBody)))]
fn create_run() {}

#[utoipa::path(get, path = "/api/v1/runs/{id}", tag = "runs", security(("bearer" = [])),
    params(("id" = String, Path, description = "Id, short id or a unique prefix")),
    responses((status = 200, body = RunDetail), (status = 404, body = ErrorBody)))]
fn get_run() {}

#[utoipa::path(post, path = "/api/v1/runs/{id}/cancel", tag = "runs", security(("bearer" = [])),
    params(("id" = String, Path)), responses((status = 200, body = Run), (status = 409, description = "Already finished", body = ErrorBody)))]
fn cancel_run() {}

#[utoipa::path(post, path = "/api/v1/runs/{id}/approve", tag = "runs", security(("bearer" = [])), request_body = Decision,
    params(("id" = String, Path)), responses((status = 200, body = Run), (status = 409, description = "Not awaiting approval", body = ErrorBody)))]
fn approve_run() {}

#[utoipa::path(post, path = "/api/v1/runs/{id}/reject", tag = "runs", security(("bearer" = [])), request_body = Decision,
    params(("id" = String, Path)), responses((status = 200, description = "The run is cancelled with the comment as its reason", body = Run), (status = 409, body = ErrorBody)))]
fn reject_run() {}

#[utoipa::path(get, path = "/api/v1/runs/{id}/events", tag = "runs", security(("bearer" = [])),
    params(("id" = String, Path), ("Last-Event-ID" = Option<i64>, Header, description = "Replay events after this sequence number")),
    responses((status = 200, description = "Server-Sent Events: `id` is the event's sequence number, `event` its type, `data` its JSON; the stream ends after the run finishes", content_type = "text/event-stream", body = String)))]
fn run_events() {}

#[utoipa::path(get, path = "/api/v1/runs/{id}/artifacts/{name}", tag = "runs", security(("bearer" = [])),
    params(("id" = String, Path), ("name" = String, Path, description = "`report` (Markdown) or `patch`")),
    responses((status = 200, description = "The artifact", body = String, content_type = "text/plain"), (status = 404, body = ErrorBody)))]
fn artifact() {}

#[utoipa::path(get, path = "/api/v1/usage", tag = "usage", security(("bearer" = [])),
    params(("days" = Option<i64>, Query, description = "The last N days, 1 to 366 (default 30)")),
    responses((status = 200, body = UsageReport), (status = 422, body = ErrorBody)))]
fn usage() {}

#[utoipa::path(post, path = "/webhooks/github", tag = "webhooks",
    params(("X-Hub-Signature-256" = String, Header, description = "`sha256=` HMAC of the body"), ("X-GitHub-Event" = String, Header), ("X-GitHub-Delivery" = String, Header)),
    responses((status = 201, body = WebhookAnswer), (status = 200, body = WebhookAnswer), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, description = "AUTODEV_GITHUB_WEBHOOK_SECRET is not set", body = ErrorBody)))]
fn github_webhook() {}

#[utoipa::path(post, path = "/webhooks/gitlab", tag = "webhooks",
    params(("X-Gitlab-Token" = String, Header), ("X-Gitlab-Event-UUID" = Option<String>, Header)),
    responses((status = 201, body = WebhookAnswer), (status = 200, body = WebhookAnswer), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
fn gitlab_webhook() {}

#[utoipa::path(post, path = "/webhooks/jira", tag = "webhooks",
    params(("X-Hub-Signature" = Option<String>, Header, description = "Jira Cloud: `sha256=` HMAC of the body"), ("secret" = Option<String>, Query, description = "Jira Data Center: the shared secret")),
    responses((status = 201, body = WebhookAnswer), (status = 200, body = WebhookAnswer), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
fn jira_webhook() {}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = openapi.components.as_mut() {
            components.add_security_scheme(
                "bearer",
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some(
                            "An API key from `autodev keys create` (viewer reads; operator creates, cancels and approves runs; admin manages projects)",
                        ))
                        .build(),
                ),
            );
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Autodev API", description = "Specs and tickets in, tested code changes out. JSON under /api/v1; errors are `{\"error\": {\"code\", \"message\", \"field\"?}}`."),
    paths(health, ready, metrics, openapi_json, list_projects, create_project, get_project, update_project, delete_project,
        list_runs, create_run, get_run, cancel_run, approve_run, reject_run, run_events, artifact, usage,
        github_webhook, gitlab_webhook, jira_webhook),
    components(schemas(ErrorBody, Run, RunDetail, RunPage, CreateRun, Decision, Project, ProjectBody, ProjectList, UsageReport, Ready, WebhookAnswer)),
    modifiers(&BearerAuth),
    tags((name = "runs"), (name = "projects"), (name = "usage"), (name = "webhooks"), (name = "operations")),
)]
pub struct ApiDoc;

/// The document, built once.
pub fn document() -> &'static Value {
    static DOC: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    DOC.get_or_init(|| serde_json::to_value(ApiDoc::openapi()).unwrap_or(Value::Null))
}

/// `GET /api/v1/openapi.json`.
pub async fn serve() -> impl IntoResponse {
    Json(document().clone())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    /// The documented run states are the domain's, in order (`RunStateName` mirrors
    /// `RunState` because the domain crate carries no OpenAPI dependency).
    #[test]
    fn documented_run_states_are_the_domain_states() {
        let doc = super::document();
        let names: Vec<&str> = doc["components"]["schemas"]["RunStateName"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let domain: Vec<&str> = autodev_domain::RunState::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(names, domain);
    }
}
