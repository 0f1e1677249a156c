//! `/api/v1/projects…` over the service layer. Projects are addressed by id or name.
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use crate::caller::Caller;
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::service::projects as service;
use crate::state::AppState;
use crate::views::{ProjectList, ProjectView};

/// `POST /api/v1/projects`: 201 with the project.
pub async fn create(
    caller: Caller,
    State(state): State<AppState>,
    body: JsonBody,
) -> Result<(StatusCode, Json<ProjectView>), ApiError> {
    // The role is checked before the body is judged.
    caller.require(autodev_domain::AccessRole::Admin)?;
    caller.require_unscoped("create projects")?;
    let row = service::create(&state, &caller, body.parse()?).await?;
    Ok((StatusCode::CREATED, Json(ProjectView::from(&row))))
}

/// `GET /api/v1/projects`.
pub async fn list(caller: Caller, State(state): State<AppState>) -> Result<Json<ProjectList>, ApiError> {
    let projects = service::list(&state, &caller).await?;
    Ok(Json(ProjectList { projects: projects.iter().map(ProjectView::from).collect() }))
}

/// `GET /api/v1/projects/{key}`.
pub async fn get(
    caller: Caller,
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> Result<Json<ProjectView>, ApiError> {
    Ok(Json(ProjectView::from(&service::get(&state, &caller, &key).await?)))
}

/// `PATCH /api/v1/projects/{key}`: the fields given change.
pub async fn update(
    caller: Caller,
    State(state): State<AppState>,
    Path(key): Path<String>,
    body: JsonBody,
) -> Result<Json<ProjectView>, ApiError> {
    caller.require(autodev_domain::AccessRole::Admin)?;
    Ok(Json(ProjectView::from(&service::update(&state, &caller, &key, body.parse()?).await?)))
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
