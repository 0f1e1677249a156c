//! What the API shows: runs (the view the outgoing webhooks share, from `autodev_delivery`) and
//! projects. The OpenAPI document's schemas of them are these types'.
pub use autodev_delivery::view::{RunView, run_json};
use autodev_store::ProjectRow;
use serde::Serialize;
use serde_json::{Value, json};

/// A project as the API shows it.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Project)]
pub struct ProjectView {
    pub id: String,
    pub name: String,
    /// An absolute path to a git repository, or a clone URL (https, ssh, git, file).
    /// Credentials in a clone URL are kept for cloning, never shown.
    pub repository: String,
    pub base_branch: Option<String>,
    /// Detected in the repository when absent.
    pub test_command: Option<String>,
    /// As stored: see `ProjectSettings`.
    pub settings: Value,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

impl From<&ProjectRow> for ProjectView {
    fn from(p: &ProjectRow) -> Self {
        ProjectView {
            id: p.id.clone(),
            name: p.name.clone(),
            repository: autodev_domain::mask_url_credentials(&p.repository).into_owned(),
            base_branch: p.base_branch.clone(),
            test_command: p.test_command.clone(),
            settings: serde_json::from_str::<Value>(&p.settings).unwrap_or_else(|_| json!({})),
            created_at_ms: p.created_at,
            updated_at_ms: p.updated_at,
        }
    }
}

/// The projects a key sees.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ProjectList {
    pub projects: Vec<ProjectView>,
}
