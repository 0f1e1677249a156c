//! `/api/v1/projects…` over the service layer. Projects are addressed by id or name.
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::caller::Caller;
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::service::projects as service;
use crate::state::AppState;
use crate::views::project_json;

/// `POST /api/v1/projects`: 201 with the project.
pub async fn create(
    caller: Caller,
    State(state): State<AppState>,
    body: JsonBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    // The role is checked before the body is judged.
    caller.require(autodev_domain::AccessRole::Admin)?;
    caller.require_unscoped("create projects")?;
    let row = service::create(&state, &caller, body.parse()?).await?;
    Ok((StatusCode::CREATED, Json(project_json(&row))))
}

/// `GET /api/v1/projects`.
pub async fn list(caller: Caller, State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let projects = service::list(&state, &caller).await?;
    Ok(Json(json!({"projects": projects.iter().map(project_json).collect::<Vec<_>>()})))
}

/// `GET /api/v1/projects/{key}`.
pub async fn get(
    caller: Caller,
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(project_json(&service::get(&state, &caller, &key).await?)))
}

/// `PATCH /api/v1/projects/{key}`: the fields given change.
pub async fn update(
    caller: Caller,
    State(state): State<AppState>,
    Path(key): Path<String>,
    body: JsonBody,
) -> Result<Json<Value>, ApiError> {
    caller.require(autodev_domain::AccessRole::Admin)?;
    Ok(Json(project_json(&service::update(&state, &caller, &key, body.parse()?).await?)))
}

/// `DELETE /api/v1/projects/{key}`: 204.
pub async fn delete(
    caller: Caller,
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> Result<StatusCode, ApiError> {
    service::delete(&state, &caller, &key).await?;
    Ok(StatusCode::NO_CONTENT)
}
