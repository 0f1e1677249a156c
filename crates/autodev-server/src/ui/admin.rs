//! `/projects`, `/usage` and `/keys`.
use std::collections::BTreeMap;

use autodev_domain::AccessRole;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::{Markup, PreEscaped, html};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::Value;

use super::page::{Session, SignedForm, age, api_error, error_page, page, usd};
use crate::service::projects::{self, ProjectBody};
use crate::state::AppState;

#[derive(Deserialize, Default)]
pub struct ProjectForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    repository: String,
    #[serde(default)]
    base_branch: String,
    #[serde(default)]
    test_command: String,
    /// The settings object as JSON text.
    #[serde(default)]
    settings: String,
}

pub async fn projects(State(state): State<AppState>, session: Session) -> Response {
    projects_page(&state, &session, None, &ProjectForm::default(), StatusCode::OK).await
}

async fn projects_page(
    state: &AppState,
    session: &Session,
    error: Option<&str>,
    form: &ProjectForm,
    status: StatusCode,
) -> Response {
    let projects = match super::page::visible_projects(state, session).await {
        Ok(p) => p,
        Err(e) => return api_error(state, session, e.into()),
    };
    let admin = session.can(AccessRole::Admin);
    let settings_help = "JSON: github_repo, gitlab_project, jira_project, require_evidence, monthly_budget_usd, protected_paths, approve_delivery, trigger_min_permission, trigger_bots.";
    let body = html! {
        h1 { "Projects" }
        @if let Some(e) = error { p.error role="alert" { (e) } }
        @if projects.is_empty() { p { "No projects yet." } }
        @for p in &projects {
            section.card aria-labelledby=(format!("p-{}", p.id)) {
                h2 id=(format!("p-{}", p.id)) { (p.name) }
                dl {
                    dt { "Repository" } dd { code { (autodev_domain::mask_url_credentials(&p.repository)) } }
                    dt { "Base branch" } dd { (p.base_branch.as_deref().unwrap_or("the repository's default")) }
                    dt { "Tests" } dd { code { (p.test_command.as_deref().unwrap_or("detected")) } }
                    dt { "Settings" } dd { code { (p.settings) } }
                }
                p { a href=(state.url(&format!("/runs?project={}", p.name))) { "Its runs" } }
                @if admin {
                    details {
                        summary { "Edit" }
                        form method="post" action=(state.url(&format!("/projects/{}", p.id))) {
                            input type="hidden" name="csrf" value=(session.csrf);
                            (fields(&ProjectForm {
                                name: p.name.clone(),
                                repository: autodev_domain::mask_url_credentials(&p.repository).into_owned(),
                                base_branch: p.base_branch.clone().unwrap_or_default(),
                                test_command: p.test_command.clone().unwrap_or_default(),
                                settings: p.settings.clone(),
                            }, &p.id, settings_help))
                            button type="submit" { "Save" }
                        }
                    }
                }
            }
        }
        @if admin {
            section.card aria-labelledby="new-project" {
                h2 #new-project { "New project" }
                form method="post" action=(state.url("/projects")) {
                    input type="hidden" name="csrf" value=(session.csrf);
                    (fields(form, "new", settings_help))
                    button type="submit" { "Create the project" }
                }
            }
        }
    };
    (status, Html(page(state, Some(session), "Projects", body).into_string())).into_response()
}

fn fields(f: &ProjectForm, id: &str, settings_help: &str) -> Markup {
    let i = |n: &str| format!("{n}-{id}");
    html! {
        label for=(i("name")) { "Name" }
        input id=(i("name")) type="text" name="name" required value=(f.name) pattern="[A-Za-z0-9][A-Za-z0-9._-]{0,99}";
        label for=(i("repository")) { "Repository " span.opt { "(absolute path or clone URL)" } }
        input id=(i("repository")) type="text" name="repository" required value=(f.repository);
        label for=(i("base")) { "Base branch " span.opt { "(optional)" } }
        input id=(i("base")) type="text" name="base_branch" value=(f.base_branch);
        label for=(i("tests")) { "Test command " span.opt { "(optional; detected)" } }
        input id=(i("tests")) type="text" name="test_command" value=(f.test_command);
        label for=(i("settings")) { "Settings " span.opt { "(optional)" } }
        textarea id=(i("settings")) name="settings" rows="3" aria-describedby=(i("settings-help")) { (f.settings) }
        p.help id=(i("settings-help")) { (settings_help) }
    }
}

fn project_body(f: &ProjectForm) -> Result<ProjectBody, String> {
    let filled = |v: &str| Some(v.trim().to_string()).filter(|v| !v.is_empty());
    let settings = match filled(&f.settings) {
        Some(text) => match serde_json::from_str::<Value>(&text).map_err(|e| format!("settings: not JSON ({e})"))? {
            Value::Object(map) => Some(map),
            _ => return Err("settings: must be a JSON object (see the ProjectSettings schema)".into()),
        },
        None => None,
    };
    Ok(ProjectBody {
        name: Some(f.name.trim().to_string()),
        repository: Some(f.repository.trim().to_string()),
        base_branch: filled(&f.base_branch),
        test_command: filled(&f.test_command),
        settings,
    })
}

pub async fn create_project(
    State(state): State<AppState>,
    SignedForm { session, form }: SignedForm<ProjectForm>,
) -> Response {
    let body = match project_body(&form) {
        Ok(b) => b,
        Err(e) => return projects_page(&state, &session, Some(&e), &form, StatusCode::UNPROCESSABLE_ENTITY).await,
    };
    match projects::create(&state, &session.caller(), body).await {
        Ok(_) => Redirect::to(&state.url("/projects")).into_response(),
        Err(e) if e.status == StatusCode::FORBIDDEN => api_error(&state, &session, e),
        Err(e) => {
            let msg = e.field.as_ref().map_or(e.message.clone(), |f| format!("{f}: {}", e.message));
            projects_page(&state, &session, Some(&msg), &form, e.status).await
        }
    }
}

pub async fn update_project(
    State(state): State<AppState>,
    Path(id): Path<String>,
    SignedForm { session, form }: SignedForm<ProjectForm>,
) -> Response {
    let mut body = match project_body(&form) {
        Ok(b) => b,
        Err(e) => {
            return projects_page(
                &state,
                &session,
                Some(&e),
                &ProjectForm::default(),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await;
        }
    };
    // Emptied settings clear them.
    body.settings.get_or_insert_with(serde_json::Map::new);
    match projects::update(&state, &session.caller(), &id, body).await {
        Ok(_) => Redirect::to(&state.url("/projects")).into_response(),
        Err(e) if e.status == StatusCode::FORBIDDEN => api_error(&state, &session, e),
        Err(e) => {
            let msg = e.field.as_ref().map_or(e.message.clone(), |f| format!("{f}: {}", e.message));
            projects_page(&state, &session, Some(&msg), &ProjectForm::default(), e.status).await
        }
    }
}

#[derive(Deserialize)]
pub struct UsageQuery {
    days: Option<i64>,
}

pub async fn usage(State(state): State<AppState>, session: Session, Query(q): Query<UsageQuery>) -> Response {
    let days = q.days.unwrap_or(30);
    let report = match crate::service::usage::usage(&state, &session.caller(), Some(days)).await {
        Ok(report) => report,
        Err(e) => return api_error(&state, &session, e),
    };
    let rows = report.usage;
    let micros = |r: &crate::service::usage::UsageItem| (r.spent.cost_usd * 1e6).round() as i64;
    let mut by_day: BTreeMap<String, i64> = BTreeMap::new();
    let mut by_project: BTreeMap<String, (i64, i64, i64)> = BTreeMap::new();
    let mut by_model: BTreeMap<String, (i64, i64, i64)> = BTreeMap::new();
    for r in &rows {
        let c = micros(r);
        *by_day.entry(r.day.clone()).or_default() += c;
        let tokens = r.spent.input_tokens + r.spent.output_tokens;
        let calls = r.spent.calls;
        for (map, key) in [
            (&mut by_project, r.project.clone().unwrap_or_else(|| "(no project)".into())),
            (&mut by_model, r.model.clone()),
        ] {
            let e = map.entry(key).or_default();
            e.0 += calls;
            e.1 += tokens;
            e.2 += c;
        }
    }
    let total: i64 = by_day.values().sum();
    let days_list: Vec<(String, i64)> = by_day.into_iter().collect();
    let table = |title: &str, map: &BTreeMap<String, (i64, i64, i64)>| {
        html! {
            h2 { (title) }
            div.table-wrap { table {
                thead { tr { th scope="col" { (title.trim_start_matches("By ")) } th scope="col" { "Calls" } th scope="col" { "Tokens" } th scope="col" { "Cost" } } }
                tbody { @for (k, (calls, tokens, c)) in map { tr { td { (k) } td.num { (calls) } td.num { (tokens) } td.num { (usd(*c)) } } } }
            } }
        }
    };
    let body = html! {
        h1 { "Usage" }
        form.filters method="get" action=(state.url("/usage")) {
            label for="days" { "Days" }
            input #days type="number" name="days" min="1" max="366" value=(days);
            button type="submit" { "Show" }
        }
        p.total { "Total, last " (days) " days: " strong { (usd(total)) } }
        @if days_list.is_empty() { p { "No model calls in this period." } } @else {
            figure { (PreEscaped(super::svg::bars(&days_list))) figcaption { "Cost per day (UTC)" } }
        }
        (table("By project", &by_project))
        (table("By model", &by_model))
    };
    Html(page(&state, Some(&session), "Usage", body).into_string()).into_response()
}

/// Keys are managed by an admin whose key is for every project (a scoped key could otherwise
/// make itself an unscoped one).
fn may_manage_keys(state: &AppState, session: &Session) -> Result<(), Box<Response>> {
    if session.can(AccessRole::Admin) && session.caller().scope().is_none() {
        return Ok(());
    }
    Err(Box::new(error_page(
        state,
        Some(session),
        StatusCode::FORBIDDEN,
        "Managing keys needs the admin role and a key for every project.",
    )))
}

pub async fn keys(State(state): State<AppState>, session: Session) -> Response {
    keys_page(&state, &session, None, None).await
}

async fn keys_page(
    state: &AppState,
    session: &Session,
    created: Option<(&str, &str)>,
    error: Option<&str>,
) -> Response {
    if let Err(refused) = may_manage_keys(state, session) {
        return *refused;
    }
    let keys = match state.store.list_keys().await {
        Ok(k) => k,
        Err(e) => return api_error(state, session, e.into()),
    };
    let body = html! {
        h1 { "Keys" }
        @if let Some(e) = error { p.error role="alert" { (e) } }
        @if let Some((name, key)) = created {
            div.card.created role="status" {
                p { "The key " strong { (name) } " was created. Copy it now: it is not shown again." }
                input #new-key type="text" readonly value=(key) aria-label="The new key";
            }
        }
        div.table-wrap { table {
            thead { tr { th scope="col" { "Name" } th scope="col" { "Role" } th scope="col" { "Prefix" } th scope="col" { "Created" } th scope="col" { "Last used" } th scope="col" { "State" } } }
            tbody { @for k in &keys { tr {
                td { (k.name) } td { (k.role) } td.mono { (k.prefix) "…" } td { (age(k.created_at)) }
                td { (k.last_used_at.map(age).unwrap_or_else(|| "never".into())) }
                td { @if k.revoked_at.is_some() { "revoked" } @else {
                    form.inline method="post" action=(state.url(&format!("/keys/{}/revoke", k.id))) {
                        input type="hidden" name="csrf" value=(session.csrf);
                        button.danger type="submit" aria-label=(format!("Revoke {}", k.name)) { "Revoke" }
                    }
                } }
            } } }
        } }
        section.card aria-labelledby="new-key-h" {
            h2 #new-key-h { "New key" }
            form method="post" action=(state.url("/keys")) {
                input type="hidden" name="csrf" value=(session.csrf);
                label for="key-name" { "Name" }
                input #key-name type="text" name="name" required maxlength="64";
                label for="key-role" { "Role" }
                select #key-role name="role" { option value="viewer" { "viewer" } option value="operator" { "operator" } option value="admin" { "admin" } }
                button type="submit" { "Create the key" }
            }
        }
    };
    Html(page(state, Some(session), "Keys", body).into_string()).into_response()
}

#[derive(Deserialize)]
pub struct KeyForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    role: String,
}

pub async fn create_key(State(state): State<AppState>, SignedForm { session, form }: SignedForm<KeyForm>) -> Response {
    if let Err(refused) = may_manage_keys(&state, &session) {
        return *refused;
    }
    let Ok(role) = form.role.parse::<AccessRole>() else {
        return keys_page(&state, &session, None, Some("role: choose viewer, operator or admin")).await;
    };
    // The same code as `autodev keys create`.
    match crate::auth::create_key(&state.store, &state.pepper, &form.name, role).await {
        Ok(new) => {
            let _ = state.store.audit(Some(&session.key), "POST", "/keys", 201, Some(&new.row.name)).await;
            keys_page(&state, &session, Some((&new.row.name, new.key.expose_secret())), None).await
        }
        Err(e) => keys_page(&state, &session, None, Some(&e.to_string())).await,
    }
}

pub async fn revoke_key(
    State(state): State<AppState>,
    Path(id): Path<String>,
    SignedForm { session, form: _ }: SignedForm<KeyForm>,
) -> Response {
    if let Err(refused) = may_manage_keys(&state, &session) {
        return *refused;
    }
    // The same code as `autodev keys revoke`.
    match crate::auth::revoke(&state.store, &state.home, &id).await {
        Ok(_) => {
            let _ = state.store.audit(Some(&session.key), "POST", &format!("/keys/{id}/revoke"), 200, None).await;
            Redirect::to(&state.url("/keys")).into_response()
        }
        Err(e) => keys_page(&state, &session, None, Some(&e.to_string())).await,
    }
}
