//! The OpenAPI document, served at `GET /api/v1/openapi.json` (no key needed).
//!
//! The schemas of what the handlers read and write are the real types' (`ToSchema` on the
//! service layer's requests and views: `CreateRun`, `Decision`, `RunDetail`, `UsageReport`, the
//! run view of `autodev_delivery`, …), so a field added to one is in the document by
//! construction. What is still built with `json!` (projects, answers, errors, readiness,
//! webhook answers) is described here by schema-only types. One `#[utoipa::path]` per route;
//! a test checks that every route of the router is documented and every documented route
//! exists, so the two cannot drift apart silently.
#![allow(dead_code)] // The types and fns below exist for their utoipa attributes.

use axum::Json;
use axum::response::IntoResponse;
use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::service::ask::{AskAnswer, AskBody, ConversationView, TurnView};
use crate::service::runs::{CreateRun, Decision, Redelivery, RunDetail};
use crate::service::usage::UsageReport;
use crate::views::{ProjectList, ProjectView};
use autodev_delivery::view::RunView;
use autodev_domain::RunState;

/// Every error: one shape, with the field at fault when there is one.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// What went wrong, for programs (the list is in the schema's enum).
    code: String,
    /// What went wrong and what to do, for people.
    message: String,
    /// The body field (`settings.github_repo`), query parameter or header at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
}

/// One Server-Sent Event of a run's stream.
#[derive(Serialize, ToSchema)]
pub struct SseEvent {
    /// The event's sequence number (send it back as `Last-Event-ID`).
    id: String,
    /// The event's type (`run_created`, `task_finished`, …).
    event: String,
    /// The event as JSON: `seq`, `run_id`, `at_ms`, `type` and the type's fields.
    data: String,
}

/// The artifacts a run delivers.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ArtifactName {
    Report,
    Patch,
}

#[derive(Serialize, ToSchema)]
pub struct RunPage {
    /// Newest first.
    runs: Vec<RunView<'static>>,
    /// Pass as `cursor` for the next page; absent on the last page.
    next_cursor: Option<String>,
}

/// An optional body for reject.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"comment": "Touch only the parser; leave the CLI alone."}))]
pub struct Rejection {
    /// At most 4,000 characters. Rejecting a plan with a comment sends it back to the
    /// planner with the comment (up to 3 times); any other rejection cancels the run with the
    /// comment as its reason.
    comment: Option<String>,
}

/// The settings Autodev knows; any other key is refused. PATCH replaces them all.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectSettings {
    /// `owner/name`: GitHub issues there start runs in this project.
    github_repo: Option<String>,
    /// `group/name`: GitLab issues there start runs in this project.
    gitlab_project: Option<String>,
    /// A Jira project key (`PROJ`): its tickets start runs in this project.
    jira_project: Option<String>,
    /// Runs must prove their change with a test that fails without it.
    require_evidence: Option<bool>,
    /// What this project's runs together may spend per calendar month (UTC), in USD.
    monthly_budget_usd: Option<f64>,
    /// Globs agents may not change (`.github/workflows/**`, `migrations/**`) unless a run is
    /// approved with them: `*`, `?` within a path component, `**` as a whole component.
    protected_paths: Option<Vec<String>>,
    /// Hold each run after its tests pass, at `awaiting_approval` (gate `delivery`), until a
    /// person approves pushing and opening the pull request.
    approve_delivery: Option<bool>,
    /// The least permission on the forge (checked with it) a comment's or review's author
    /// needs to start or steer a run: `read`, `triage`, `write` (the default), `maintain` or
    /// `admin`. Labels are commands without a check (labelling needs triage rights).
    trigger_min_permission: Option<TriggerPermission>,
    /// Forge logins (bots such as `renovate[bot]`) whose comments are commands whatever
    /// their permission.
    trigger_bots: Option<Vec<String>>,
    /// Follow-up runs that failing CI on one of Autodev's pull requests may start, per pull
    /// request (0 to 10, default 2; 0 turns CI follow-ups off). After the last, a comment on
    /// the pull request says so.
    ci_repair_rounds: Option<u32>,
    /// The Jira transition (by name, e.g. `Done`) a run's ticket takes when its pull request
    /// is merged.
    jira_done_transition: Option<String>,
    /// Deploy on merge: hand the merged change to the team's own CD, one way of three.
    deploy: Option<DeploySetting>,
}

/// How a merged change is handed to the team's CD (exactly one of `github_workflow`,
/// `gitlab_trigger`, `webhook`).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"github_workflow": "deploy.yml", "ref": "main", "environment": "staging"}))]
pub struct DeploySetting {
    /// GitHub: `workflow_dispatch` of this workflow (file name or id) with `environment` as an
    /// input.
    github_workflow: Option<String>,
    /// GitLab: a pipeline on `ref` with `AUTODEV_ENVIRONMENT` and `AUTODEV_RUN` as variables
    /// (the pipeline trigger with `AUTODEV_GITLAB_TRIGGER_TOKEN` when set).
    gitlab_trigger: Option<bool>,
    /// The outgoing webhooks get `delivery.deploy_requested`.
    webhook: Option<bool>,
    /// The branch or tag to deploy from (default: the run's base branch).
    #[serde(rename = "ref")]
    git_ref: Option<String>,
    /// Default `production`.
    environment: Option<String>,
    /// More workflow inputs or pipeline variables (at most 10).
    inputs: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TriggerPermission {
    Read,
    Triage,
    Write,
    Maintain,
    Admin,
}

/// A new project.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "hello-world", "repository": "https://github.com/octo-org/hello-world.git", "test_command": "cargo test", "settings": {"github_repo": "octo-org/hello-world"}}))]
pub struct ProjectCreate {
    /// 1-100 ASCII letters, digits, `-`, `_` or `.`, starting with a letter or digit, and not
    /// of the form of an id (a UUID). Unique.
    name: String,
    /// An absolute path to a git repository on the server (404 when there is none), or a clone
    /// URL (https, http, ssh, git, file, or `user@host:path`).
    repository: String,
    /// The branch runs start from (default: the repository's default branch).
    base_branch: Option<String>,
    /// The project's tests (detected in the repository when absent).
    test_command: Option<String>,
    settings: Option<ProjectSettings>,
}

/// Changes to a project: the fields given replace the stored ones.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"test_command": "cargo test --workspace", "settings": {"github_repo": "octo-org/hello-world", "require_evidence": true}}))]
pub struct ProjectUpdate {
    /// As on create; 409 when another project has it.
    name: Option<String>,
    repository: Option<String>,
    base_branch: Option<String>,
    test_command: Option<String>,
    settings: Option<ProjectSettings>,
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
    run: Option<RunView<'static>>,
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
    responses((status = 200, body = ProjectList)))]
fn list_projects() {}

#[utoipa::path(post, path = "/api/v1/projects", tag = "projects", security(("bearer" = [])), request_body = ProjectCreate,
    responses((status = 201, body = ProjectView), (status = 403, description = "Needs the admin role", body = ErrorBody),
        (status = 404, description = "No git repository at the path given as `repository`", body = ErrorBody),
        (status = 409, description = "The name is taken", body = ErrorBody)))]
fn create_project() {}

#[utoipa::path(get, path = "/api/v1/projects/{project}", tag = "projects", security(("bearer" = [])),
    params(("project" = String, Path, description = "Id or name")),
    responses((status = 200, body = ProjectView)))]
fn get_project() {}

#[utoipa::path(patch, path = "/api/v1/projects/{project}", tag = "projects", security(("bearer" = [])), request_body = ProjectUpdate,
    params(("project" = String, Path, description = "Id or name")),
    responses((status = 200, body = ProjectView), (status = 403, description = "Needs the admin role", body = ErrorBody),
        (status = 404, description = "No such project, or no git repository at the path given as `repository`", body = ErrorBody),
        (status = 409, description = "Another project has the name", body = ErrorBody)))]
fn update_project() {}

#[utoipa::path(delete, path = "/api/v1/projects/{project}", tag = "projects", security(("bearer" = [])),
    params(("project" = String, Path, description = "Id or name")),
    responses((status = 204, description = "Deleted; its runs keep their history"), (status = 403, description = "Needs the admin role", body = ErrorBody)))]
fn delete_project() {}

#[utoipa::path(post, path = "/api/v1/projects/{project}/ask", tag = "projects", security(("bearer" = [])), request_body = AskBody,
    params(("project" = String, Path, description = "Id or name")),
    responses((status = 200, description = "The answer, with its citations checked against the project's code index; recorded with its cost under the key and the project, as the next turn of its `conversation`. With `stream: true` (or `Accept: text/event-stream`) the answer comes as server-sent events: `delta` (`{\"text\"}`, the answer as it is written), then `answer` (this object) or `error` (`{\"error\": {\"code\", \"message\"}}`)", body = AskAnswer),
        (status = 404, description = "No such project, or no such conversation of this key about it", body = ErrorBody),
        (status = 409, description = "The project's or the deployment's monthly budget is spent (`budget_exceeded`), or the project's repository cannot be fetched (`repository_unavailable`)", body = ErrorBody),
        (status = 429, description = "The key already has four questions being answered (`too_many_asks`), or is over its rate limit", body = ErrorBody),
        (status = 502, description = "The index could not be built, or the model failed (`index_unavailable`, `model_failed`)", body = ErrorBody),
        (status = 503, description = "No model provider is configured (`no_model`)", body = ErrorBody)))]
fn ask_project() {}

#[utoipa::path(get, path = "/api/v1/ask/conversations", tag = "projects", security(("bearer" = [])),
    responses((status = 200, description = "This key's conversations with `ask`, the most recent first (at most 200)", body = Vec<ConversationView>)))]
fn list_conversations() {}

#[utoipa::path(get, path = "/api/v1/ask/conversations/{id}", tag = "projects", security(("bearer" = [])),
    params(("id" = String, Path, description = "The `conversation` of an answer")),
    responses((status = 200, description = "Its turns, in order", body = Vec<TurnView>),
        (status = 404, description = "No such conversation of this key", body = ErrorBody)))]
fn get_conversation() {}

#[utoipa::path(delete, path = "/api/v1/ask/conversations/{id}", tag = "projects", security(("bearer" = [])),
    params(("id" = String, Path, description = "The `conversation` of an answer")),
    responses((status = 204, description = "Deleted; what its questions cost stays in the usage"),
        (status = 404, description = "No such conversation of this key", body = ErrorBody)))]
fn delete_conversation() {}

#[utoipa::path(get, path = "/api/v1/runs", tag = "runs", security(("bearer" = [])),
    params(("project" = Option<String>, Query, description = "Project id or name (404 when there is none)"),
        ("state" = Option<RunState>, Query, description = "Only runs in this state"),
        ("limit" = Option<i64>, Query, description = "Runs per page, 1 to 200, default 50"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page")),
    responses((status = 200, body = RunPage), (status = 404, description = "No such project", body = ErrorBody)))]
fn list_runs() {}

#[utoipa::path(post, path = "/api/v1/runs", tag = "runs", security(("bearer" = [])), request_body = CreateRun,
    responses((status = 201, description = "Queued for a worker", body = RunView), (status = 403, description = "Needs the operator role", body = ErrorBody),
        (status = 404, description = "No such project", body = ErrorBody)))]
fn create_run() {}

#[utoipa::path(get, path = "/api/v1/runs/{id}", tag = "runs", security(("bearer" = [])),
    params(("id" = String, Path, description = "Id, short id or a unique prefix")),
    responses((status = 200, body = RunDetail)))]
fn get_run() {}

#[utoipa::path(post, path = "/api/v1/runs/{id}/cancel", tag = "runs", security(("bearer" = [])),
    params(("id" = String, Path, description = "Id, short id or a unique prefix")),
    responses((status = 200, body = RunView), (status = 403, description = "Needs the operator role", body = ErrorBody), (status = 409, description = "Already finished", body = ErrorBody)))]
fn cancel_run() {}

#[utoipa::path(post, path = "/api/v1/runs/{id}/approve", tag = "runs", security(("bearer" = [])), request_body = Decision,
    params(("id" = String, Path, description = "Id, short id or a unique prefix")),
    responses((status = 200, body = RunView), (status = 403, description = "Needs the operator role", body = ErrorBody), (status = 409, description = "Not awaiting approval", body = ErrorBody)))]
fn approve_run() {}

#[utoipa::path(post, path = "/api/v1/runs/{id}/reject", tag = "runs", security(("bearer" = [])), request_body = Rejection,
    params(("id" = String, Path, description = "Id, short id or a unique prefix")),
    responses((status = 200, description = "The plan goes back to the planner (a plan rejected with a comment), or the run is cancelled with the comment as its reason", body = RunView), (status = 403, description = "Needs the operator role", body = ErrorBody), (status = 409, description = "Not awaiting approval", body = ErrorBody)))]
fn reject_run() {}

#[utoipa::path(post, path = "/api/v1/runs/{id}/deliver", tag = "runs", security(("bearer" = [])),
    params(("id" = String, Path, description = "Id, short id or a unique prefix")),
    responses((status = 202, description = "The run's undelivered milestones are being tried again", body = Redelivery), (status = 403, description = "Needs the operator role", body = ErrorBody)))]
fn deliver_run() {}

#[utoipa::path(post, path = "/api/v1/runs/{id}/revert", tag = "runs", security(("bearer" = [])),
    params(("id" = String, Path, description = "Id, short id or a unique prefix of the run whose merged change to revert (or of one of its follow-ups)")),
    responses((status = 201, description = "A revert run was queued: it reverts the merge commit on the base branch as it is now, runs the project's tests, waits at the project's delivery gate when set, and opens a pull request linking the run and its ticket", body = RunView),
        (status = 403, description = "Needs the operator role", body = ErrorBody),
        (status = 409, description = "Refused: `not_merged` (the run's pull request was never merged), `already_reverted`, `revert_conflict` (the revert does not apply cleanly; the message names the paths), `nothing_to_revert`, `not_a_project_run`", body = ErrorBody),
        (status = 502, description = "The project's repository could not be fetched to check the revert", body = ErrorBody)))]
fn revert_run() {}

#[utoipa::path(get, path = "/api/v1/runs/{id}/events", tag = "runs", security(("bearer" = [])),
    params(("id" = String, Path, description = "Id, short id or a unique prefix"),
        ("after" = Option<i64>, Query, description = "Replay events after this sequence number (as `Last-Event-ID`, which wins when both are given)"),
        ("Last-Event-ID" = Option<i64>, Header, description = "Replay events after this sequence number (422 when it is not an integer)")),
    responses((status = 200, description = "Server-Sent Events: `id` is the event's sequence number, `event` its type, `data` its JSON; the stream ends after the run finishes", content_type = "text/event-stream", body = SseEvent),
        (status = 429, description = "The key already follows 32 event streams (`too_many_streams`), or is over its rate limit", body = ErrorBody)))]
fn run_events() {}

#[utoipa::path(get, path = "/api/v1/runs/{id}/artifacts/{name}", tag = "runs", security(("bearer" = [])),
    params(("id" = String, Path, description = "Id, short id or a unique prefix"), ("name" = ArtifactName, Path, description = "`report` (Markdown) or `patch` (a git diff)")),
    responses((status = 200, description = "The artifact", body = String, content_type = "text/plain"), (status = 404, description = "No such run, or the run has not delivered yet", body = ErrorBody)))]
fn artifact() {}

#[utoipa::path(get, path = "/api/v1/usage", tag = "usage", security(("bearer" = [])),
    params(("days" = Option<i64>, Query, description = "The last N days, 1 to 366 (default 30)")),
    responses((status = 200, body = UsageReport)))]
fn usage() {}

#[utoipa::path(post, path = "/webhooks/github", tag = "webhooks", request_body(content = Object, content_type = "application/json", description = "A GitHub webhook payload"),
    params(("X-Hub-Signature-256" = String, Header, description = "`sha256=` HMAC of the body"), ("X-GitHub-Event" = String, Header), ("X-GitHub-Delivery" = Option<String>, Header, description = "Up to 200 visible ASCII characters; when absent or empty the body's hash is the delivery id")),
    responses((status = 201, description = "A run was created", body = WebhookAnswer), (status = 200, description = "Ignored, a duplicate, or a ping", body = WebhookAnswer),
        (status = 400, description = "The body is not a JSON object, or X-GitHub-Event is missing", body = ErrorBody), (status = 401, description = "The signature is missing or wrong", body = ErrorBody),
        (status = 404, description = "AUTODEV_GITHUB_WEBHOOK_SECRET is not set", body = ErrorBody), (status = 413, description = "The body is over 1 MiB", body = ErrorBody), (status = 422, description = "The delivery id is malformed", body = ErrorBody)))]
fn github_webhook() {}

#[utoipa::path(post, path = "/webhooks/gitlab", tag = "webhooks", request_body(content = Object, content_type = "application/json", description = "A GitLab webhook payload"),
    params(("X-Gitlab-Token" = String, Header), ("X-Gitlab-Event" = Option<String>, Header), ("X-Gitlab-Event-UUID" = Option<String>, Header, description = "Up to 200 visible ASCII characters; when absent or empty the body's hash is the delivery id")),
    responses((status = 201, description = "A run was created", body = WebhookAnswer), (status = 200, description = "Ignored or a duplicate", body = WebhookAnswer),
        (status = 400, description = "The body is not a JSON object", body = ErrorBody), (status = 401, description = "The token is missing or wrong", body = ErrorBody),
        (status = 404, description = "AUTODEV_GITLAB_WEBHOOK_TOKEN is not set", body = ErrorBody), (status = 413, description = "The body is over 1 MiB", body = ErrorBody), (status = 422, description = "The delivery id is malformed", body = ErrorBody)))]
fn gitlab_webhook() {}

#[utoipa::path(post, path = "/webhooks/jira", tag = "webhooks", request_body(content = Object, content_type = "application/json", description = "A Jira webhook payload"),
    params(("X-Hub-Signature" = Option<String>, Header, description = "Jira Cloud: `sha256=` HMAC of the body"), ("secret" = Option<String>, Query, description = "Jira Data Center: the shared secret"),
        ("X-Atlassian-Webhook-Identifier" = Option<String>, Header, description = "Up to 200 visible ASCII characters; when absent or empty the body's hash is the delivery id")),
    responses((status = 201, description = "A run was created", body = WebhookAnswer), (status = 200, description = "Ignored or a duplicate", body = WebhookAnswer),
        (status = 400, description = "The body is not a JSON object", body = ErrorBody), (status = 401, description = "Neither a valid signature nor a valid secret", body = ErrorBody),
        (status = 404, description = "AUTODEV_JIRA_WEBHOOK_SECRET is not set", body = ErrorBody), (status = 413, description = "The body is over 1 MiB", body = ErrorBody), (status = 422, description = "The delivery id is malformed", body = ErrorBody)))]
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
    paths(health, ready, metrics, openapi_json, list_projects, create_project, get_project, update_project, delete_project, ask_project,
        list_conversations, get_conversation, delete_conversation,
        list_runs, create_run, get_run, cancel_run, approve_run, reject_run, deliver_run, revert_run, run_events, artifact, usage,
        github_webhook, gitlab_webhook, jira_webhook),
    components(schemas(SseEvent, autodev_delivery::DeliveryView, crate::service::runs::TimelineStep, Redelivery, ErrorBody, RunView, RunDetail, RunPage, CreateRun, Decision, Rejection, ProjectView, ProjectCreate, ProjectUpdate, ProjectSettings, ProjectList, UsageReport, AskBody, AskAnswer, ConversationView, TurnView, Ready, WebhookAnswer, ArtifactName)),
    modifiers(&BearerAuth),
    tags((name = "runs"), (name = "projects"), (name = "usage"), (name = "webhooks"), (name = "operations")),
)]
pub struct ApiDoc;

/// The document, built once: utoipa's, refined with [`refine`].
pub fn document() -> &'static Value {
    static DOC: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or(Value::Null);
        let missing = refine(&mut doc);
        debug_assert!(missing.is_empty(), "refine found no {missing:?}");
        doc
    })
}

/// What the attributes above cannot say, added to the JSON: the rules of [`crate::rules`]
/// (one source for the server and the document), the error codes, and the error responses
/// every operation of a kind can give. Returns the places it expected and did not find.
fn refine(doc: &mut Value) -> Vec<String> {
    use serde_json::json;

    use crate::rules::*;
    let mut missing = Vec::new();
    let mut set = |doc: &mut Value, pointer: &str, extra: Value| match doc.pointer_mut(pointer) {
        Some(Value::Object(target)) => {
            if let Value::Object(extra) = extra {
                target.extend(extra);
            }
        }
        _ => missing.push(pointer.to_string()),
    };
    let schema = |name: &str, prop: &str| format!("/components/schemas/{name}/properties/{prop}");
    set(doc, &schema("ErrorDetail", "code"), json!({"enum": crate::error::CODES}));
    set(doc, &schema("CreateRun", "spec"), json!({"minLength": 1, "maxLength": SPEC_MAX_CHARS, "pattern": TEXT}));
    set(doc, &schema("CreateRun", "title"), json!({"maxLength": TITLE_MAX_CHARS, "pattern": ONE_LINE}));
    set(doc, &schema("CreateRun", "model"), json!({"pattern": MODEL}));
    set(doc, &schema("CreateRun", "max_parallel"), json!({"minimum": 1, "maximum": 16}));
    set(doc, &schema("Decision", "comment"), json!({"maxLength": COMMENT_MAX_CHARS, "pattern": NO_NUL}));
    set(doc, &schema("Rejection", "comment"), json!({"maxLength": COMMENT_MAX_CHARS, "pattern": NO_NUL}));
    set(
        doc,
        &schema("AskRequest", "question"),
        json!({"minLength": 1, "maxLength": crate::service::ask::QUESTION_MAX_CHARS, "pattern": TEXT}),
    );
    for name in ["ProjectCreate", "ProjectUpdate"] {
        set(doc, &schema(name, "name"), json!({"pattern": NAME}));
        set(doc, &schema(name, "repository"), json!({"pattern": REPOSITORY}));
        set(doc, &schema(name, "base_branch"), json!({"pattern": BRANCH}));
        set(doc, &schema(name, "test_command"), json!({"maxLength": COMMAND_MAX_CHARS, "pattern": TEXT}));
    }
    set(doc, &schema("ProjectSettings", "github_repo"), json!({"pattern": GITHUB_REPO}));
    set(doc, &schema("ProjectSettings", "gitlab_project"), json!({"pattern": GITLAB_PROJECT}));
    set(doc, &schema("ProjectSettings", "jira_project"), json!({"pattern": JIRA_PROJECT}));
    set(
        doc,
        &schema("ProjectSettings", "monthly_budget_usd"),
        json!({"exclusiveMinimum": 0, "maximum": MONTHLY_BUDGET_MAX}),
    );
    let globs = json!({"maxItems": autodev_workspace::protect::MAX_GLOBS, "items": {"type": "string", "pattern": autodev_workspace::protect::GLOB_PATTERN}});
    set(doc, &schema("ProjectSettings", "protected_paths"), globs.clone());
    set(
        doc,
        &schema("ProjectSettings", "trigger_bots"),
        json!({"maxItems": 50, "items": {"type": "string", "pattern": crate::rules::FORGE_LOGIN}}),
    );
    set(doc, &schema("Decision", "allow_paths"), globs);
    set(doc, &schema("ProjectSettings", "ci_repair_rounds"), json!({"minimum": 0, "maximum": 10}));
    set(doc, &schema("ProjectSettings", "jira_done_transition"), json!({"maxLength": 100, "pattern": ONE_LINE}));
    // Exactly one way to deploy: the chosen key set, the other two absent or null.
    let name = || json!({"type": ["string", "null"], "pattern": DEPLOY_NAME});
    let common = json!({
        "ref": name(),
        "environment": name(),
        "inputs": {"type": ["object", "null"], "maxProperties": DEPLOY_INPUTS_MAX,
            "propertyNames": {"pattern": DEPLOY_INPUT},
            "additionalProperties": {"type": "string", "maxLength": 1000, "pattern": ONE_LINE}},
    });
    let way = |key: &str, chosen: Value| {
        let mut properties = common.clone();
        for other in ["github_workflow", "gitlab_trigger", "webhook"] {
            properties[other] = if other == key { chosen.clone() } else { json!({"type": "null"}) };
        }
        json!({"type": "object", "additionalProperties": false, "required": [key], "properties": properties})
    };
    if let Some(deploy) = doc.pointer_mut("/components/schemas/DeploySetting") {
        let description = deploy["description"].clone();
        let example = deploy["example"].clone();
        *deploy = json!({
            "description": description,
            "example": example,
            "oneOf": [
                way("github_workflow", json!({"type": "string", "pattern": DEPLOY_NAME})),
                way("gitlab_trigger", json!({"type": "boolean", "enum": [true]})),
                way("webhook", json!({"type": "boolean", "enum": [true]})),
            ],
        });
    } else {
        // Not there: `set` records it as missing.
        set(doc, "/components/schemas/DeploySetting", json!({}));
    }
    let param = |path: &str, method: &str, index: usize| {
        format!("/paths/{}/{method}/parameters/{index}/schema", path.replace('/', "~1"))
    };
    set(doc, &param("/api/v1/runs", "get", 2), json!({"minimum": 1, "maximum": 200}));
    set(doc, &param("/api/v1/runs", "get", 3), json!({"pattern": CURSOR}));
    set(doc, &param("/api/v1/usage", "get", 0), json!({"minimum": 1, "maximum": 366}));
    set(doc, &param("/webhooks/github", "post", 1), json!({"minLength": 1}));
    let delivery_id = json!({"maxLength": 200, "pattern": "^[!-~]*$"});
    set(doc, &param("/webhooks/github", "post", 2), delivery_id.clone());
    set(doc, &param("/webhooks/gitlab", "post", 2), delivery_id.clone());
    set(doc, &param("/webhooks/jira", "post", 2), delivery_id);
    for verb in ["approve", "reject"] {
        set(doc, &format!("/paths/~1api~1v1~1runs~1{{id}}~1{verb}/post/requestBody"), json!({"required": false}));
    }
    set(
        doc,
        "/paths/~1api~1v1~1runs~1{id}~1artifacts~1{name}/get/responses/200/content",
        json!({"text/markdown": {"schema": {"type": "string"}}, "text/x-diff": {"schema": {"type": "string"}}}),
    );
    if let Some(Value::Object(content)) =
        doc.pointer_mut("/paths/~1api~1v1~1runs~1{id}~1artifacts~1{name}/get/responses/200/content")
    {
        content.remove("text/plain");
    }
    for name in
        ["ProjectCreate", "ProjectUpdate", "CreateRun", "Decision", "Rejection", "ProjectSettings", "AskRequest"]
    {
        set(doc, &format!("/components/schemas/{name}"), json!({"additionalProperties": false}));
    }
    add_links(doc);
    add_error_responses(doc);
    missing
}

/// OpenAPI links: what a created run or project can be used for next (clients and stateful
/// testers follow them).
fn add_links(doc: &mut Value) {
    use serde_json::json;
    let link = |op: &str, params: Value| json!({"operationId": op, "parameters": params});
    let run = json!({"id": "$response.body#/id"});
    let run_links = json!({
        "GetRun": link("get_run", run.clone()),
        "CancelRun": link("cancel_run", run.clone()),
        "ApproveRun": link("approve_run", run.clone()),
        "RejectRun": link("reject_run", run.clone()),
        "DeliverRun": link("deliver_run", run.clone()),
        "RunEvents": link("run_events", run.clone()),
        "RunReport": link("artifact", json!({"id": "$response.body#/id", "name": "report"})),
    });
    if let Some(r) = doc.pointer_mut("/paths/~1api~1v1~1runs/post/responses/201") {
        r["links"] = run_links;
    }
    let project = json!({"project": "$response.body#/id"});
    let project_links = json!({
        "GetProject": link("get_project", project.clone()),
        "UpdateProject": link("update_project", project.clone()),
        "DeleteProject": link("delete_project", project.clone()),
        "ListProjectRuns": link("list_runs", json!({"project": "$response.body#/id"})),
        "AskProject": link("ask_project", project.clone()),
    });
    if let Some(r) = doc.pointer_mut("/paths/~1api~1v1~1projects/post/responses/201") {
        r["links"] = project_links;
    }
}

/// The error responses of each kind of operation, where its own attribute did not give one:
/// with a key, 401/403/429; with a body, 400/413/415/422; with a path parameter, 404 (and 422
/// for a run prefix that matches several runs); with query parameters, 422.
fn add_error_responses(doc: &mut Value) {
    use serde_json::json;
    let error = |description: &str| json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}});
    let mut rate_limited = error("Over the key's rate limit");
    rate_limited["headers"] = json!({"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}});
    let Some(Value::Object(paths)) = doc.get_mut("paths") else { return };
    for (path, item) in paths.iter_mut() {
        let Value::Object(item) = item else { continue };
        for (_, op) in item.iter_mut() {
            let Value::Object(op) = op else { continue };
            let secured = op.contains_key("security");
            let body = op.contains_key("requestBody");
            let params = op.get("parameters").and_then(Value::as_array).cloned().unwrap_or_default();
            let in_path = params.iter().any(|p| p["in"] == "path");
            let in_query = params.iter().any(|p| p["in"] == "query");
            let webhook = path.starts_with("/webhooks/");
            let mut add = Vec::new();
            if secured {
                add.push(("401", error("No key, or a key that is invalid or revoked")));
                add.push(("403", error("The key's role does not allow this")));
                add.push(("429", rate_limited.clone()));
            }
            if body && !webhook {
                add.push(("400", error("The body is not valid JSON")));
                add.push(("413", error("The body is over 1 MiB")));
                add.push(("415", error("The body is not `application/json`")));
                add.push(("422", error("A field is invalid; `field` names it")));
            }
            if in_path {
                add.push(("404", error("No such resource")));
                if path.starts_with("/api/v1/runs/{id}") {
                    add.push(("422", error("The id prefix matches several runs, or a parameter is invalid")));
                }
            }
            if in_query || params.iter().any(|p| p["in"] == "header") && secured {
                add.push(("422", error("A parameter is invalid; `field` names it")));
            }
            let responses = op.entry("responses").or_insert_with(|| json!({}));
            if let Value::Object(responses) = responses {
                for (status, response) in add {
                    responses.entry(status).or_insert(response);
                }
            }
        }
    }
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

    /// Every place `refine` adds to exists in what utoipa generated.
    #[test]
    fn refine_finds_every_place() {
        let mut doc = serde_json::to_value(<super::ApiDoc as utoipa::OpenApi>::openapi()).unwrap();
        assert_eq!(super::refine(&mut doc), Vec::<String>::new());
    }

    /// Each kind of operation documents the errors it can give.
    #[test]
    fn operations_document_their_errors() {
        let doc = super::document();
        let statuses = |path: &str, method: &str| -> Vec<String> {
            doc["paths"][path][method]["responses"].as_object().unwrap().keys().cloned().collect()
        };
        for s in ["201", "400", "401", "403", "404", "413", "415", "422", "429"] {
            assert!(statuses("/api/v1/runs", "post").contains(&s.to_string()), "POST /runs lacks {s}");
        }
        for s in ["200", "401", "403", "404", "409", "422", "429", "400", "413", "415"] {
            assert!(statuses("/api/v1/runs/{id}/approve", "post").contains(&s.to_string()), "approve lacks {s}");
        }
        for s in ["200", "401", "404", "422"] {
            assert!(statuses("/api/v1/runs/{id}/events", "get").contains(&s.to_string()), "events lacks {s}");
        }
        assert!(statuses("/api/v1/projects/{project}", "patch").contains(&"409".to_string()));
        let code = &doc["components"]["schemas"]["ErrorDetail"]["properties"]["code"]["enum"];
        assert!(code.as_array().unwrap().iter().any(|c| c == "malformed_json"));
        assert_eq!(doc["components"]["schemas"]["CreateRun"]["additionalProperties"], false);
        let required = &doc["components"]["schemas"]["ProjectCreate"]["required"];
        assert!(required.as_array().unwrap().iter().any(|c| c == "name"), "{required}");
    }
}
