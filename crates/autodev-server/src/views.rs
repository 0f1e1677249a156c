//! What the API shows: runs (the view the outgoing webhooks share, from `autodev_delivery`) and
//! projects.
pub use autodev_delivery::view::{RunView, run_json};
use autodev_store::ProjectRow;
use serde_json::{Value, json};

/// A project as the API shows it.
pub fn project_json(p: &ProjectRow) -> Value {
    json!({
        "id": p.id,
        "name": p.name,
        // Credentials in a clone URL are kept for cloning, never shown.
        "repository": autodev_domain::mask_url_credentials(&p.repository),
        "base_branch": p.base_branch,
        "test_command": p.test_command,
        "settings": serde_json::from_str::<Value>(&p.settings).unwrap_or_else(|_| json!({})),
        "created_at_ms": p.created_at,
        "updated_at_ms": p.updated_at,
    })
}
