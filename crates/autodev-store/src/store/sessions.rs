//! Web UI sessions (see migration 0009): created at sign-in, read on every page, deleted at
//! sign-out; expired ones are swept when a new one is made.
use super::{Db, Store};
use crate::{KeyRow, Result};

/// A key's columns and the session's CSRF token, as read.
type SessionRow = (String, String, String, String, String, i64, Option<i64>, Option<i64>, Option<String>, String);

impl Store {
    /// Stores a session (`id` is the keyed hash of the cookie's token) for the key with
    /// `key_hash`, and sweeps expired sessions.
    pub async fn create_session(&self, id: &str, key_hash: &str, csrf: &str, expires_at: i64) -> Result<()> {
        let now = super::now_ms();
        let mut tx = self.begin().await?;
        tx.exec("DELETE FROM ui_sessions WHERE expires_at < $1", &[now.into()]).await?;
        tx.exec(
            "INSERT INTO ui_sessions (id, key_hash, csrf, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
            &[id.into(), key_hash.into(), csrf.into(), now.into(), expires_at.into()],
        )
        .await?;
        tx.commit().await
    }

    /// The active key of a session that has not expired, with the session's CSRF token. A
    /// revoked key has no sessions.
    pub async fn session(&self, id: &str) -> Result<Option<(KeyRow, String)>> {
        let now = super::now_ms();
        let row: Option<SessionRow> = read!(self, |pool| {
            sqlx::query_as(
                "SELECT k.id, k.name, k.role, k.prefix, k.hash, k.created_at, k.last_used_at, k.revoked_at, k.projects, s.csrf
                     FROM ui_sessions s JOIN api_keys k ON k.hash = s.key_hash
                     WHERE s.id = $1 AND s.expires_at > $2 AND k.revoked_at IS NULL",
            )
            .bind(id)
            .bind(now)
            .fetch_optional(pool)
            .await?
        });
        Ok(row.map(|(id, name, role, prefix, hash, created_at, last_used_at, revoked_at, projects, csrf)| {
            (KeyRow { id, name, role, prefix, hash, created_at, last_used_at, revoked_at, projects }, csrf)
        }))
    }

    /// Ends a session.
    pub async fn delete_session(&self, id: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        tx.exec("DELETE FROM ui_sessions WHERE id = $1", &[id.into()]).await?;
        tx.commit().await
    }
}
