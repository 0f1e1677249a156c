//! `autodev keys create|list|revoke`.
use crate::Exit;
use autodev_store::StoreError;
use std::path::Path;

use crate::context::*;

pub async fn keys(home: &Path, cmd: crate::cli::KeysCommand) -> Exit {
    use autodev_server::auth;
    use secrecy::ExposeSecret;
    let inner = async {
        let store = open_store(home).await?;
        match cmd {
            crate::cli::KeysCommand::Create { name, role, projects } => {
                let role: autodev_domain::AccessRole =
                    role.parse().map_err(|e: autodev_domain::access::UnknownRole| Exit::Usage(e.to_string()))?;
                let configured = crate::config::secret("AUTODEV_KEY_PEPPER").map_err(Exit::Usage)?;
                let pepper = auth::Pepper::load(configured, home).map_err(|e| Exit::Usage(e.to_string()))?;
                let new =
                    auth::create_scoped_key(&store, &pepper, &name, role, &projects).await.map_err(|e| match e {
                        auth::AuthError::Invalid(m) => Exit::Usage(m),
                        auth::AuthError::Store(StoreError::Conflict(m)) => Exit::Usage(m),
                        other => Exit::Usage(other.to_string()),
                    })?;
                println!("created key {} ({}) for {}, role {}", new.row.id, new.row.prefix, new.row.name, new.row.role);
                if !projects.is_empty() {
                    println!("scoped to {}: it sees nothing else", projects.join(", "));
                }
                println!("store it now: it is not shown again. Send it as `Authorization: Bearer <key>`.");
                println!("{}", new.key.expose_secret());
            }
            crate::cli::KeysCommand::List { json } => {
                let keys = store.list_keys().await.map_err(store_error)?;
                if json {
                    let v: Vec<serde_json::Value> = keys
                        .iter()
                        .map(|k| serde_json::json!({"id": k.id, "name": k.name, "role": k.role, "prefix": k.prefix, "created_at_ms": k.created_at, "last_used_at_ms": k.last_used_at, "revoked": k.revoked_at.is_some(), "projects": k.scope()}))
                        .collect();
                    println!("{}", serde_json::Value::Array(v));
                } else if keys.is_empty() {
                    println!("no keys yet; create one with: autodev keys create --name NAME --role admin");
                } else {
                    println!("{:<36} {:<20} {:<9} {:<13} STATUS", "ID", "NAME", "ROLE", "PREFIX");
                    for k in &keys {
                        let status = if k.revoked_at.is_some() { "revoked" } else { "active" };
                        println!("{:<36} {:<20} {:<9} {:<13} {status}", k.id, k.name, k.role, k.prefix);
                    }
                }
            }
            crate::cli::KeysCommand::Revoke { key } => {
                let revoked = autodev_server::auth::revoke(&store, home, &key).await.map_err(|e| match e {
                    autodev_server::auth::AuthError::Store(e) => store_error(e),
                    other => Exit::Usage(other.to_string()),
                })?;
                if revoked {
                    println!("revoked {key}");
                } else {
                    return Err(Exit::Usage(format!(
                        "no active key with id or name `{key}`; `autodev keys list` shows them"
                    )));
                }
            }
        }
        Ok::<Exit, Exit>(Exit::Ok)
    };
    match inner.await {
        Ok(e) | Err(e) => e,
    }
}
