//! The caller of the API and MCP: a key and its role, authenticated by `Authorization: Bearer
//! KEY`, and what it may see.
use autodev_domain::AccessRole;
use autodev_store::KeyRow;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::auth;
use crate::error::ApiError;
use crate::state::AppState;

/// The caller: a key (authenticated by `Authorization: Bearer KEY`, a signed-in session, or the
/// local operator of `autodev mcp`), its role, and the front end it came through.
#[derive(Clone)]
pub struct Caller {
    pub key: std::sync::Arc<KeyRow>,
    pub role: AccessRole,
    pub via: Via,
}

/// The front end an action came through; the audit log says which.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    Api,
    Ui,
    Mcp,
}

impl Caller {
    /// Where an action is audited: the API's path through the API; through the web UI or MCP,
    /// the same operation's path under the front end's name (`ui:/runs/ID/approve`,
    /// `mcp:/runs`).
    pub fn audit_path(&self, api_path: &str) -> String {
        let operation = api_path.strip_prefix("/api/v1").unwrap_or(api_path);
        match self.via {
            Via::Api => api_path.to_string(),
            Via::Ui => format!("ui:{operation}"),
            Via::Mcp => format!("mcp:{operation}"),
        }
    }

    /// Records an action of this caller in the audit log (see [`Caller::audit_path`]).
    pub async fn audit(
        &self,
        state: &AppState,
        method: &str,
        api_path: &str,
        status: u16,
        detail: Option<&str>,
    ) -> Result<(), autodev_store::StoreError> {
        state.store.audit(Some(&*self.key), method, &self.audit_path(api_path), status, detail).await
    }

    /// The ids of the projects a scoped key sees, comma-separated (as queries take them);
    /// `None` for an unscoped key.
    pub fn scope(&self) -> Option<&str> {
        self.key.projects.as_deref()
    }

    /// Whether the key sees something of `project_id` (a run, a question).
    pub fn sees(&self, project_id: Option<&str>) -> bool {
        self.key.sees(project_id)
    }

    /// A run this key may see; any other is "no run", as if it did not exist.
    pub async fn run(&self, state: &AppState, id: &str) -> Result<autodev_store::RunRow, ApiError> {
        let run = state.store.find_run(id).await?;
        if self.sees(run.project_id.as_deref()) {
            Ok(run)
        } else {
            Err(autodev_store::StoreError::RunNotFound(id.to_string()).into())
        }
    }

    /// A project this key may see; any other is "no project", as if it did not exist.
    pub async fn project(&self, state: &AppState, key: &str) -> Result<autodev_store::ProjectRow, ApiError> {
        let project = state.store.find_project(key).await?;
        if self.sees(Some(&project.id)) {
            Ok(project)
        } else {
            Err(autodev_store::StoreError::NotFound(format!("no project `{key}`")).into())
        }
    }

    /// Refuses what only a key for every project may do (create projects, manage keys).
    pub fn require_unscoped(&self, what: &str) -> Result<(), ApiError> {
        match self.scope() {
            None => Ok(()),
            Some(_) => Err(ApiError::forbidden(format!(
                "the key `{}` is scoped to projects and cannot {what}; use a key without --project",
                self.key.name
            ))),
        }
    }

    pub fn require(&self, role: AccessRole) -> Result<(), ApiError> {
        if self.role.allows(role) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "this needs the {role} role; the key `{}` is {}",
                self.key.name, self.role
            )))
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(axum::http::header::AUTHORIZATION).ok_or_else(|| {
            ApiError::unauthorized("missing `Authorization: Bearer KEY`; create a key with `autodev keys create`")
        })?;
        let token = bearer_token(header.as_bytes())
            .ok_or_else(|| ApiError::unauthorized("the Authorization header must be `Bearer KEY`"))?;
        match state.guard.authenticate(&state.store, &state.pepper, token).await {
            Ok(Some((key, role))) => {
                if let Err(wait) = state.guard.check_rate(&key.id) {
                    return Err(ApiError::rate_limited(&key.name, wait));
                }
                Ok(Caller { key, role, via: Via::Api })
            }
            Ok(None) => Err(ApiError::unauthorized("invalid or revoked API key")),
            Err(auth::AuthError::Store(e)) => Err(e.into()),
            Err(e) => Err(ApiError::internal(&e)),
        }
    }
}

/// The key in `Authorization: Bearer KEY`. The scheme is case-insensitive (RFC 9110 §11.1),
/// and one or more spaces or tabs may follow it.
fn bearer_token(header: &[u8]) -> Option<&str> {
    let header = std::str::from_utf8(header).ok()?.trim();
    let (scheme, token) = header.split_once([' ', '\t'])?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}
