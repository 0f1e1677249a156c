//! Projects: create, list, show, change, delete, each with the caller's role and scope checked
//! and the change audited.
use autodev_domain::AccessRole;
use autodev_store::{ProjectRow, now_ms};
use serde::Deserialize;
use serde_json::Value;

use crate::caller::Caller;
use crate::error::ApiError;
use crate::rules::{self, CheckSettings, ProjectSettings};
use crate::state::AppState;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ProjectBody {
    pub name: Option<String>,
    pub repository: Option<String>,
    pub base_branch: Option<String>,
    pub test_command: Option<String>,
    /// An object (checked as [`ProjectSettings`] after the rest, so an array is refused as a
    /// whole rather than read as the struct's fields in order).
    pub settings: Option<serde_json::Map<String, Value>>,
}

/// A project's name. Projects are addressed by id or name, so a name that could be an id
/// (a UUID) is refused, as are `.` and `..` (path segments) by the pattern.
fn valid_name(name: &str) -> Result<String, ApiError> {
    rules::name("name", name)?;
    Ok(name.to_string())
}

/// A repository: a clone URL, or an absolute path that holds a git repository (404 when it
/// does not: the field names something that is not there).
fn valid_repository(repo: &str) -> Result<String, ApiError> {
    rules::repository(repo)?;
    autodev_engine::checkout::validate_repository(repo)
        .map_err(|e| ApiError { field: Some("repository".into()), ..ApiError::not_found(e) })?;
    Ok(repo.to_string())
}

fn valid_branch(v: Option<String>) -> Result<Option<String>, ApiError> {
    if let Some(b) = &v {
        rules::branch("base_branch", b)?;
    }
    Ok(v)
}

fn valid_command(v: Option<String>) -> Result<Option<String>, ApiError> {
    match v {
        Some(t) => {
            rules::text("test_command", &t, rules::COMMAND_MAX_CHARS)?;
            Ok(Some(t.trim().to_string()))
        }
        None => Ok(None),
    }
}

fn valid_settings(v: Option<serde_json::Map<String, Value>>) -> Result<Option<String>, ApiError> {
    match v {
        Some(map) => {
            let settings: ProjectSettings = serde_path_to_error::deserialize(Value::Object(map)).map_err(|e| {
                let path = e.path().to_string();
                let message = e.inner().to_string();
                let field = match message.split("unknown field `").nth(1).and_then(|r| r.split_once('`')) {
                    Some((name, _)) => format!("settings.{name}"),
                    None if path == "." => "settings".to_string(),
                    None => format!("settings.{path}"),
                };
                ApiError::invalid(&field, format!("{message} (see the ProjectSettings schema)"))
            })?;
            settings.check()?;
            Ok(Some(serde_json::to_string(&settings).map_err(|e| ApiError::internal(&e))?))
        }
        None => Ok(None),
    }
}

/// Creates a project (an unscoped admin's).
pub async fn create(state: &AppState, caller: &Caller, body: ProjectBody) -> Result<ProjectRow, ApiError> {
    caller.require(AccessRole::Admin)?;
    caller.require_unscoped("create projects")?;
    let name = valid_name(body.name.as_deref().ok_or_else(|| ApiError::invalid("name", "name is required"))?)?;
    let repository = valid_repository(
        body.repository.as_deref().ok_or_else(|| ApiError::invalid("repository", "repository is required"))?,
    )?;
    let now = now_ms();
    let row = ProjectRow {
        id: uuid::Uuid::now_v7().to_string(),
        name,
        repository,
        base_branch: valid_branch(body.base_branch)?,
        test_command: valid_command(body.test_command)?,
        settings: valid_settings(body.settings)?.unwrap_or_else(|| "{}".into()),
        created_at: now,
        updated_at: now,
    };
    state.store.insert_project(&row).await?;
    caller.audit(state, "POST", "/api/v1/projects", 201, Some(&row.name)).await?;
    Ok(row)
}

/// The projects the caller sees.
pub async fn list(state: &AppState, caller: &Caller) -> Result<Vec<ProjectRow>, ApiError> {
    caller.require(AccessRole::Viewer)?;
    let projects = state.store.list_projects().await?;
    Ok(projects.into_iter().filter(|p| caller.sees(Some(&p.id))).collect())
}

/// A project the caller sees, by id or name.
pub async fn get(state: &AppState, caller: &Caller, key: &str) -> Result<ProjectRow, ApiError> {
    caller.require(AccessRole::Viewer)?;
    caller.project(state, key).await
}

/// Changes the fields `body` gives of a project.
pub async fn update(state: &AppState, caller: &Caller, key: &str, body: ProjectBody) -> Result<ProjectRow, ApiError> {
    caller.require(AccessRole::Admin)?;
    let mut row = caller.project(state, key).await?;
    if let Some(name) = body.name {
        row.name = valid_name(&name)?;
    }
    // A client that sends back the repository as it was shown (credentials masked) keeps the
    // stored one.
    if let Some(repo) = body.repository.filter(|r| *r != autodev_domain::mask_url_credentials(&row.repository)) {
        row.repository = valid_repository(&repo)?;
    }
    if let Some(b) = valid_branch(body.base_branch)? {
        row.base_branch = Some(b);
    }
    if let Some(t) = valid_command(body.test_command)? {
        row.test_command = Some(t);
    }
    if let Some(settings) = valid_settings(body.settings)? {
        row.settings = settings;
    }
    state.store.update_project(&row).await?;
    caller.audit(state, "PATCH", &format!("/api/v1/projects/{}", row.id), 200, None).await?;
    Ok(state.store.find_project(&row.id).await?)
}

/// Deletes a project (its runs stay).
pub async fn delete(state: &AppState, caller: &Caller, key: &str) -> Result<(), ApiError> {
    caller.require(AccessRole::Admin)?;
    let row = caller.project(state, key).await?;
    state.store.delete_project(&row.id).await?;
    caller.audit(state, "DELETE", &format!("/api/v1/projects/{}", row.id), 204, Some(&row.name)).await?;
    Ok(())
}
