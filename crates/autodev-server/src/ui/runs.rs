//! `/runs`, `/runs/new` and `/runs/{id}`.
use autodev_domain::{AccessRole, EventKind, RunState};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::{Markup, PreEscaped, html};
use serde::Deserialize;

use super::page::{Session, SignedForm, age, api_error, badge, duration, error_page, page, usd};
use crate::service::runs;
use crate::state::AppState;

/// Runs per page.
const PAGE: i64 = 50;

#[derive(Deserialize, Default)]
pub struct ListQuery {
    project: Option<String>,
    state: Option<String>,
    cursor: Option<String>,
    /// `rows`: only the table's rows (the live refresh).
    fragment: Option<String>,
}

pub async fn list(State(state): State<AppState>, session: Session, Query(q): Query<ListQuery>) -> Response {
    let projects = match super::page::visible_projects(&state, &session).await {
        Ok(p) => p,
        Err(e) => return api_error(&state, &session, e.into()),
    };
    let project = q.project.as_deref().filter(|p| !p.is_empty());
    let project_id = match project {
        Some(p) => match projects.iter().find(|x| x.name == p || x.id == p) {
            Some(x) => Some(x.id.clone()),
            None => return error_page(&state, Some(&session), StatusCode::NOT_FOUND, &format!("no project `{p}`")),
        },
        None => None,
    };
    let filter = match q.state.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => match s.parse::<RunState>() {
            Ok(s) => Some(s),
            Err(e) => return error_page(&state, Some(&session), StatusCode::UNPROCESSABLE_ENTITY, &e.to_string()),
        },
        None => None,
    };
    let before = match q.cursor.as_deref().filter(|c| !c.is_empty()).map(crate::rules::cursor).transpose() {
        Ok(b) => b,
        Err(e) => return api_error(&state, &session, e),
    };
    let names: std::collections::HashMap<&str, &str> =
        projects.iter().map(|p| (p.id.as_str(), p.name.as_str())).collect();
    let mut rows: Vec<Markup> = Vec::new();
    let mut last: Option<(i64, String)> = None;
    let visited = state
        .store
        .visit_runs_page(project_id.as_deref(), session.caller().scope(), filter, PAGE, before, |r| {
            let took = r.finished_at.map(|f| duration(f - r.created_at)).unwrap_or_else(|| "…".to_string());
            let project = r.project_id.and_then(|id| names.get(id).copied()).unwrap_or("—");
            rows.push(html! {
                tr data-state=(r.state) {
                    td { a href=(state.url(&format!("/runs/{}", r.id))) { (r.title) } br; small.mono { (r.short_id) } }
                    td { (badge(r.state)) }
                    td { (project) }
                    td { time title=(r.created_at) { (age(r.created_at)) } }
                    td { (took) }
                    td.num { (usd(r.cost_micros)) }
                }
            });
            last = Some((r.created_at, r.id.to_string()));
        })
        .await;
    if let Err(e) = visited {
        return api_error(&state, &session, e.into());
    }
    let more = rows.len() as i64 == PAGE;
    let body_rows = html! {
        @for r in &rows { (r) }
        @if rows.is_empty() { tr { td colspan="6" { "No runs yet." } } }
    };
    if q.fragment.as_deref() == Some("rows") {
        return Html(body_rows.into_string()).into_response();
    }
    let query = |cursor: Option<&str>| {
        let mut s = form_urlencoded::Serializer::new(String::new());
        if let Some(p) = project {
            s.append_pair("project", p);
        }
        if let Some(f) = filter {
            s.append_pair("state", f.as_str());
        }
        if let Some(c) = cursor {
            s.append_pair("cursor", c);
        }
        s.finish()
    };
    let live = q.cursor.is_none();
    let body = html! {
        h1 { "Runs" }
        form.filters method="get" action=(state.url("/runs")) {
            label for="f-project" { "Project" }
            select #f-project name="project" {
                option value="" { "All" }
                @for p in &projects { option value=(p.name) selected[project == Some(p.name.as_str())] { (p.name) } }
            }
            label for="f-state" { "State" }
            select #f-state name="state" {
                option value="" { "All" }
                @for s in RunState::ALL { option value=(s.as_str()) selected[filter == Some(s)] { (s.as_str().replace('_', " ")) } }
            }
            button type="submit" { "Filter" }
            @if session.can(AccessRole::Operator) { a.button href=(state.url("/runs/new")) { "New run" } }
        }
        div.table-wrap {
            table #runs data-live=[live.then(|| state.url(&format!("/runs?{}&fragment=rows", query(None))))] {
                caption.sr-only { "Runs, newest first" }
                thead { tr { th scope="col" { "Run" } th scope="col" { "State" } th scope="col" { "Project" } th scope="col" { "Created" } th scope="col" { "Took" } th scope="col" { "Cost" } } }
                tbody aria-live="polite" { (body_rows) }
            }
        }
        @if more {
            @if let Some((at, id)) = &last {
                p { a rel="next" href=(state.url(&format!("/runs?{}", query(Some(&format!("{at}_{id}")))))) { "Older runs →" } }
            }
        }
    };
    Html(page(&state, Some(&session), "Runs", body).into_string()).into_response()
}

pub async fn new_page(State(state): State<AppState>, session: Session) -> Response {
    if !session.can(AccessRole::Operator) {
        return error_page(
            &state,
            Some(&session),
            StatusCode::FORBIDDEN,
            &format!("Starting a run needs the operator role; the key `{}` is {}.", session.key.name, session.role),
        );
    }
    new_form(&state, &session, &NewRun::default(), None, StatusCode::OK).await
}

async fn new_form(
    state: &AppState,
    session: &Session,
    form: &NewRun,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let projects = super::page::visible_projects(state, session).await.unwrap_or_default();
    let body = html! {
        h1 { "New run" }
        @if let Some(e) = error { p.error role="alert" { (e) } }
        @if projects.is_empty() {
            p { "There is no project yet. " a href=(state.url("/projects")) { "Create one" } " first." }
        } @else {
            form.card method="post" action=(state.url("/runs/new")) {
                input type="hidden" name="csrf" value=(session.csrf);
                label for="project" { "Project" }
                select #project name="project" required {
                    @for p in &projects { option value=(p.name) selected[form.project == p.name] { (p.name) } }
                }
                label for="title" { "Title " span.opt { "(optional)" } }
                input #title type="text" name="title" maxlength="200" value=(form.title);
                label for="spec" { "Spec" }
                textarea #spec name="spec" rows="14" required aria-describedby="spec-help" { (form.spec) }
                p.help #spec-help { "What to change, in Markdown. The planner breaks it into tasks." }
                label for="model" { "Model " span.opt { "(optional; default " (state.models.defaults().1) ")" } }
                input #model type="text" name="model" value=(form.model);
                label.check { input type="checkbox" name="approval" value="true" checked[form.approval.is_some()]; " Stop for approval after planning" }
                button type="submit" { "Start the run" }
            }
        }
    };
    (status, Html(page(state, Some(session), "New run", body).into_string())).into_response()
}

#[derive(Deserialize, Default)]
pub struct NewRun {
    #[serde(default)]
    project: String,
    #[serde(default)]
    spec: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    model: String,
    approval: Option<String>,
}

pub async fn create(State(state): State<AppState>, SignedForm { session, form }: SignedForm<NewRun>) -> Response {
    let filled = |v: &str| Some(v.trim().to_string()).filter(|v| !v.is_empty());
    let request = crate::service::runs::CreateRun {
        project: form.project.clone(),
        spec: form.spec.clone(),
        title: filled(&form.title),
        model: filled(&form.model),
        max_parallel: None,
        approval: form.approval.is_some().then_some(true),
    };
    match crate::service::runs::create(&state, &session.caller(), request).await {
        Ok(run) => Redirect::to(&state.url(&format!("/runs/{}", run.id))).into_response(),
        Err(e) if e.status == StatusCode::FORBIDDEN => api_error(&state, &session, e),
        Err(e) => {
            let message = match &e.field {
                Some(f) => format!("{f}: {}", e.message),
                None => e.message.clone(),
            };
            new_form(&state, &session, &form, Some(&message), e.status).await
        }
    }
}

pub async fn show(State(state): State<AppState>, session: Session, Path(id): Path<String>) -> Response {
    match detail(&state, &session, &id).await {
        Ok((title, markup, run_id, finished)) => {
            let body = html! {
                div #live data-run=(run_id) data-live=[(!finished).then(|| state.url(&format!("/runs/{run_id}/live")))]
                    data-stream=[(!finished).then(|| state.url(&format!("/runs/{run_id}/stream")))] {
                    (markup)
                }
            };
            Html(page(&state, Some(&session), &title, body).into_string()).into_response()
        }
        Err(r) => r,
    }
}

/// The run page's content alone (the live refresh swaps it in).
pub async fn live(State(state): State<AppState>, session: Session, Path(id): Path<String>) -> Response {
    match detail(&state, &session, &id).await {
        Ok((_, markup, _, finished)) => {
            let mut r = Html(markup.into_string()).into_response();
            if finished && let Ok(v) = axum::http::HeaderValue::from_str("finished") {
                r.headers_mut().insert("x-autodev-run", v);
            }
            r
        }
        Err(r) => r,
    }
}

/// The run's events for the page's `EventSource`: the API's stream, for the session's key.
pub async fn stream(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let opened = crate::service::runs::open_events(&state, &session.caller(), &id).await;
    match opened.and_then(|feed| Ok(feed.follow(crate::api::runs::events_after(&headers, None)?))) {
        Ok(events) => crate::api::runs::sse(events).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The report or the patch, for the session's key.
pub async fn artifact(
    State(state): State<AppState>,
    session: Session,
    Path((id, name)): Path<(String, String)>,
) -> Response {
    match crate::service::runs::artifact(&state, &session.caller(), &id, &name).await {
        Ok(a) => ([(axum::http::header::CONTENT_TYPE, a.content_type)], a.bytes).into_response(),
        Err(e) => api_error(&state, &session, e),
    }
}

type Detail = (String, Markup, String, bool);

/// The most recent events a run's page lists as steps.
const STEPS_SHOWN: i64 = 300;
/// How much of a run's patch its page renders; the rest is a link to the whole file.
const PATCH_SHOWN_BYTES: usize = 256 * 1024;

/// The patch as the page shows it: at most `PATCH_SHOWN_BYTES`, cut at a line end, with the
/// whole size when cut.
fn shown_patch(patch: String) -> (String, Option<usize>) {
    let size = patch.len();
    if size <= PATCH_SHOWN_BYTES {
        return (patch, None);
    }
    let bytes = &patch.as_bytes()[..PATCH_SHOWN_BYTES];
    let end = bytes.iter().rposition(|b| *b == b'\n').map_or(bytes.len(), |i| i + 1);
    (String::from_utf8_lossy(&bytes[..end]).into_owned(), Some(size))
}

async fn detail(state: &AppState, session: &Session, id: &str) -> Result<Detail, Response> {
    let store = &state.store;
    let fail = |e: autodev_store::StoreError| api_error(state, session, e.into());
    let run = session.caller().run(state, id).await.map_err(|e| api_error(state, session, e))?;
    let tasks = store.tasks(&run.id).await.map_err(fail)?;
    // The page reads what it shows, not the whole history: the recent steps, the test rounds,
    // the cost per conversation (summed by the database).
    let events = store.events_tail(&run.id, STEPS_SHOWN).await.map_err(fail)?;
    let test_runs = store.events_of_kind(&run.id, "test_run").await.map_err(fail)?;
    let links = store.run_links(&run.id).await.map_err(fail)?;
    let outbox = store.outbox_for_run(&run.id).await.map_err(fail)?;
    let timeline = runs::timeline(state, &run.id).await.map_err(|e| api_error(state, session, e))?;
    let revertible =
        timeline.iter().any(|s| s.step == "merged") && !timeline.iter().any(|s| s.step == "revert_requested");
    let state_enum = run.run_state();
    let finished = state_enum.is_terminal() || state_enum == RunState::AwaitingApproval;
    let gate = (state_enum == RunState::AwaitingApproval).then(|| autodev_engine::Gate::of(&run));
    let patch = store.artifact(&state.home, &run.id, "changes.patch").await.map_err(fail)?.map(shown_patch);
    let has_report = store.artifact_names(&state.home, &run.id).await.map_err(fail)?.iter().any(|n| n == "report.md");
    // Cost per conversation, for the tasks' column.
    let cost: std::collections::HashMap<String, i64> =
        store.cost_by_conversation(&run.id).await.map_err(fail)?.into_iter().collect();
    let operator = session.can(AccessRole::Operator);
    let form = |action: &str, label: &str, comment: bool, class: &str| {
        html! {
            form.action method="post" action=(state.url(&format!("/runs/{}/{action}", run.id))) {
                input type="hidden" name="csrf" value=(session.csrf);
                @if comment {
                    label for=(format!("c-{action}")) { "Comment " span.opt { "(optional)" } }
                    textarea id=(format!("c-{action}")) name="comment" rows="2" {}
                }
                button type="submit" class=(class) { (label) }
            }
        }
    };
    let took = run.finished_at.unwrap_or_else(autodev_store::now_ms) - run.created_at;
    let markup = html! {
        h1 { (run.title) }
        p.meta {
            (badge(&run.state))
            @if let Some(g) = gate { " " span.gate { "waiting for approval of its " strong { (g.as_str()) } } }
            " · " span.mono { (run.short_id) } " · branch " code { (run.branch) }
            " · " (duration(took)) " · " (usd(run.cost_micros)) " (" (run.input_tokens) " in + " (run.output_tokens) " out tokens)"
        }
        @if let Some(reason) = &run.reason { p.reason role="status" { strong { "Reason: " } (reason) } }
        @if let Some(pr) = links.iter().find(|(n, _)| n == "github.pull_request" || n == "gitlab.merge_request") {
            p { "Pull request: " a href=(pr.1) { (pr.1) } }
        }
        @if operator {
            div.actions {
                @if gate.is_some() {
                    (form("approve", "Approve", true, "primary"))
                    (form("reject", "Reject", true, "danger"))
                }
                @if !state_enum.is_terminal() { (form("cancel", "Cancel the run", false, "danger")) }
                @if state_enum.is_terminal() && !outbox.is_empty() { (form("deliver", "Retry delivery", false, "")) }
                @if revertible { (form("revert", "Revert the merged change", false, "danger")) }
            }
        }
        @if !timeline.is_empty() {
            section aria-labelledby="h-timeline" {
                h2 #h-timeline { "After the pull request" }
                ol.timeline {
                    @for s in &timeline {
                        li {
                            time { (age(s.at_ms)) } " "
                            @let bad = matches!(s.step.as_str(), "checks_failed" | "deploy_failed" | "ci_repair_refused" | "closed");
                            @if bad { span.bad { (s.step.replace('_', " ")) } } @else { span.ok { (s.step.replace('_', " ")) } }
                            @if let Some(env) = &s.environment { " (" (env) ")" }
                            @if !s.detail.is_empty() { " · " (s.detail) }
                            @if let Some(sha) = &s.sha { " · " code { (&sha[..sha.len().min(12)]) } }
                            @if let Some(url) = &s.url { " · " a href=(url) rel="noreferrer" { "link" } }
                        }
                    }
                }
            }
        }
        p.links {
            @if has_report { a href=(state.url(&format!("/runs/{}/artifacts/report", run.id))) { "Report" } }
            @if patch.is_some() { " · " a href=(state.url(&format!("/runs/{}/artifacts/patch", run.id))) { "Patch" } }
        }
        section aria-labelledby="h-plan" {
            h2 #h-plan { "Plan" }
            @if tasks.is_empty() { p { "No plan yet." } } @else {
                figure.dag { (PreEscaped(super::svg::dag(&tasks))) figcaption.sr-only { "The plan's tasks and their dependencies; the table below lists the same." } }
                div.table-wrap { table {
                    thead { tr { th scope="col" { "Task" } th scope="col" { "State" } th scope="col" { "After" } th scope="col" { "Cost" } th scope="col" { "Summary" } } }
                    tbody { @for t in &tasks { tr {
                        td { strong { (t.task_key) } " " (t.title) }
                        td { (badge(&t.state)) }
                        td { (t.deps().join(", ")) }
                        td.num { (usd(cost.get(&format!("task:{}", t.task_key)).copied().unwrap_or(0))) }
                        td { (t.summary.as_deref().or(t.reason.as_deref()).unwrap_or("")) }
                    } } }
                } }
            }
        }
        section aria-labelledby="h-tests" {
            h2 #h-tests { "Tests" }
            @let rounds: Vec<_> = test_runs.iter().filter_map(|e| match &e.kind { EventKind::TestRun { round, passed, exit_code, duration_ms, tail } => Some((round, passed, exit_code, duration_ms, tail)), _ => None }).collect();
            @if rounds.is_empty() { p { "Not run yet." } }
            @for (round, passed, code, ms, tail) in rounds {
                details open[!*passed] {
                    summary { "Round " (round) ": " @if *passed { span.ok { "passed" } } @else { span.bad { "failed" } } " (exit " (code.map_or("none".to_string(), |c| c.to_string())) ", " (duration(*ms as i64)) ")" }
                    @if !*passed { pre.output { (tail.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")) } }
                }
            }
        }
        section aria-labelledby="h-steps" {
            h2 #h-steps { "Steps" }
            ul.steps #steps {
                @for e in events.iter().rev() { @if let Some(line) = step_line(&e.kind) { li { time { (age(e.at_ms)) } " " (line) } } }
            }
        }
        section aria-labelledby="h-diff" {
            h2 #h-diff { "Changes" }
            @match &patch {
                Some((p, whole)) if !p.trim().is_empty() => {
                    @if let Some(size) = whole {
                        p.note role="status" {
                            "The patch is " (size / 1024) " KiB; the first " (PATCH_SHOWN_BYTES / 1024) " KiB are shown. "
                            a href=(state.url(&format!("/runs/{}/artifacts/changes.patch", run.id))) { "The whole patch" }
                        }
                    }
                    (super::diff::render(p))
                }
                _ => { p { "No changes written yet (the patch appears when the tests pass)." } }
            }
        }
    };
    Ok((run.title.clone(), markup, run.id.clone(), finished))
}

/// One line of the run's log for people, or nothing for events too fine to show.
fn step_line(kind: &EventKind) -> Option<Markup> {
    Some(match kind {
        EventKind::StateChanged { to, reason, .. } => {
            html! { "→ " (badge(to.as_str())) @if let Some(r) = reason { " " (r) } }
        }
        EventKind::PlanAccepted { tasks, .. } => html! { "plan accepted: " (tasks.len()) " task(s)" },
        EventKind::PlanApproved { by, comment, .. } => {
            html! { "approved by " strong { (by) } @if !comment.is_empty() { ": " (comment) } }
        }
        EventKind::PlanRevisionRequested { by, comment, round } => {
            html! { "plan rejected by " strong { (by) } " (revision " (round) "): " (comment) }
        }
        EventKind::TaskStateChanged { task, state, reason } => {
            html! { "task " strong { (task) } " " (badge(state.as_str())) @if let Some(r) = reason { " " (r) } }
        }
        EventKind::AgentStep { conversation, tool, target, .. } => {
            html! { span.mono { (conversation) } " " strong { (tool) } " " code { (target) } }
        }
        EventKind::ToolFinished { conversation, tool, ok, summary, .. } if !ok => {
            html! { span.mono { (conversation) } " " span.bad { "✗ " (tool) } " " (summary) }
        }
        EventKind::TestRun { round, passed, .. } => {
            html! { "tests round " (round) ": " @if *passed { span.ok { "passed" } } @else { span.bad { "failed" } } }
        }
        EventKind::ProtectedPath { path, glob, action, .. } => {
            html! { span.bad { "protected " code { (path) } " (" (glob) ") " (action) } }
        }
        EventKind::ProviderFallback { from, to, .. } => {
            html! { "fell back from " code { (from) } " to " code { (to) } }
        }
        EventKind::Warning { message } => html! { span.warn { "! " (message) } },
        EventKind::Delivered { branch, .. } => html! { "delivered " code { (branch) } },
        EventKind::DeliveryFailed { target, message, .. } => html! { span.bad { (target) ": " (message) } },
        EventKind::DeliveryChecks(s)
        | EventKind::DeliveryMerged(s)
        | EventKind::DeliveryDeployed(s)
        | EventKind::DeliveryFollowUp(s) => {
            html! { "◆ " strong { (s.step.replace('_', " ")) } @if !s.detail.is_empty() { " · " (s.detail) } }
        }
        _ => return None,
    })
}

#[derive(Deserialize)]
pub struct Action {
    #[serde(default)]
    comment: String,
}

/// `POST /runs/{id}/approve|reject|cancel|deliver|revert` from the page's buttons.
pub async fn act(
    State(state): State<AppState>,
    Path((id, action)): Path<(String, String)>,
    SignedForm { session, form }: SignedForm<Action>,
) -> Response {
    let comment = Some(form.comment.trim().to_string()).filter(|c| !c.is_empty());
    let decision = || crate::service::runs::Decision { comment: comment.clone(), allow_paths: None };
    let caller = session.caller();
    let done: Result<String, crate::error::ApiError> = match action.as_str() {
        "approve" => runs::decide(&state, &caller, &id, true, decision()).await.map(|r| r.id),
        "reject" => runs::decide(&state, &caller, &id, false, decision()).await.map(|r| r.id),
        "cancel" => runs::cancel(&state, &caller, &id).await.map(|r| r.id),
        "deliver" => runs::deliver(&state, &caller, &id).await.map(|r| r.run),
        // The revert run's page, where its progress shows.
        "revert" => runs::revert(&state, &caller, &id).await.map(|r| r.id),
        other => return error_page(&state, Some(&session), StatusCode::NOT_FOUND, &format!("no action `{other}`")),
    };
    match done {
        Ok(run_id) => Redirect::to(&state.url(&format!("/runs/{run_id}"))).into_response(),
        Err(e) => api_error(&state, &session, e),
    }
}
