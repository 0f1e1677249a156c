//! Projects: create, list, get, update, delete. Addressed by id or name.
use autodev_domain::AccessRole;
use autodev_store::{ProjectRow, now_ms};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::{AppState, Caller};
use crate::error::ApiError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectBody {
    name: Option<String>,
    repository: Option<String>,
    base_branch: Option<String>,
    test_command: Option<String>,
    #[serde(default)]
    settings: Option<serde_json::Map<String, Value>>,
}

pub fn project_json(p: &ProjectRow) -> Value {
    json!({
        "id": p.id,
        "name": p.name,
        "repository": p.repository,
        "base_branch": p.base_branch,
        "test_command": p.test_command,
        "settings": serde_json::from_str::<Value>(&p.settings).unwrap_or_else(|_| json!({})),
        "created_at_ms": p.created_at,
        "updated_at_ms": p.updated_at,
    })
}

/// A project's name. Projects are addressed by id or name, so a name that could be an id
/// (a UUID) is refused, as are `.` and `..` (path segments).
fn valid_name(name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if uuid::Uuid::parse_str(name).is_ok() {
        return Err(ApiError::invalid("name", "a name may not have the form of an id (a UUID): choose another name"));
    }
    if name == "." || name == ".." {
        return Err(ApiError::invalid("name", "`.` and `..` are not names: choose another name"));
    }
    let ok =
        !name.is_empty() && name.len() <= 100 && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok { Ok(name.to_string()) } else { Err(ApiError::invalid("name", "use 1-100 letters, digits, `-`, `_` or `.`")) }
}

fn valid_repository(repo: &str) -> Result<String, ApiError> {
    autodev_engine::checkout::validate_repository(repo).map_err(|e| ApiError::invalid("repository", e))?;
    Ok(repo.trim().to_string())
}

fn optional_text(field: &str, v: Option<String>) -> Result<Option<String>, ApiError> {
    match v {
        Some(t) if t.trim().is_empty() => Err(ApiError::invalid(field, "must not be empty; leave it out instead")),
        Some(t) => Ok(Some(t.trim().to_string())),
        None => Ok(None),
    }
}

pub async fn create(
    caller: Caller,
    State(state): State<AppState>,
    body: Result<Json<ProjectBody>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(AccessRole::Admin)?;
    let Json(body) = body.map_err(crate::app::json_error)?;
    let name = valid_name(body.name.as_deref().ok_or_else(|| ApiError::invalid("name", "name is required"))?)?;
    let repository = valid_repository(
        body.repository.as_deref().ok_or_else(|| ApiError::invalid("repository", "repository is required"))?,
    )?;
    let now = now_ms();
    let row = ProjectRow {
        id: uuid::Uuid::now_v7().to_string(),
        name,
        repository,
        base_branch: optional_text("base_branch", body.base_branch)?,
        test_command: optional_text("test_command", body.test_command)?,
        settings: Value::Object(body.settings.unwrap_or_default()).to_string(),
        created_at: now,
        updated_at: now,
    };
    state.store.insert_project(&row).await?;
    state.store.audit(Some(&*caller.key), "POST", "/api/v1/projects", 201, Some(&row.name)).await?;
    Ok((StatusCode::CREATED, Json(project_json(&row))))
}

pub async fn list(caller: Caller, State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    caller.require(AccessRole::Viewer)?;
    let projects = state.store.list_projects().await?;
    Ok(Json(json!({"projects": projects.iter().map(project_json).collect::<Vec<_>>()})))
}

pub async fn get(
    caller: Caller,
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(AccessRole::Viewer)?;
    Ok(Json(project_json(&state.store.find_project(&key).await?)))
}

pub async fn update(
    caller: Caller,
    State(state): State<AppState>,
    Path(key): Path<String>,
    body: Result<Json<ProjectBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require(AccessRole::Admin)?;
    let Json(body) = body.map_err(crate::app::json_error)?;
    let mut row = state.store.find_project(&key).await?;
    if let Some(name) = body.name {
        row.name = valid_name(&name)?;
    }
    if let Some(repo) = body.repository {
        row.repository = valid_repository(&repo)?;
    }
    if let Some(b) = optional_text("base_branch", body.base_branch)? {
        row.base_branch = Some(b);
    }
    if let Some(t) = optional_text("test_command", body.test_command)? {
        row.test_command = Some(t);
    }
    if let Some(settings) = body.settings {
        row.settings = Value::Object(settings).to_string();
    }
    state.store.update_project(&row).await?;
    state.store.audit(Some(&*caller.key), "PATCH", &format!("/api/v1/projects/{}", row.id), 200, None).await?;
    Ok(Json(project_json(&state.store.find_project(&row.id).await?)))
}

pub async fn delete(
    caller: Caller,
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(AccessRole::Admin)?;
    let row = state.store.find_project(&key).await?;
    state.store.delete_project(&row.id).await?;
    state
        .store
        .audit(Some(&*caller.key), "DELETE", &format!("/api/v1/projects/{}", row.id), 204, Some(&row.name))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
