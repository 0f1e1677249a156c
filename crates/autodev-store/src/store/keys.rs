//! API keys and the audit log.
use super::{Db, Store, now_ms};

use crate::rows::{AuditEntry, KeyRow};
use crate::tx::{Tx, is_unique_violation};
use crate::{Result, StoreError};

impl Store {
    pub(crate) async fn insert_audit(tx: &mut Tx<'_>, a: &AuditEntry, at_ms: i64) -> Result<u64> {
        tx.exec(
            "INSERT INTO audit_log (at_ms, key_id, key_name, method, path, status, detail) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                at_ms.into(),
                a.key_id.as_deref().into(),
                a.key_name.as_deref().into(),
                a.method.as_str().into(),
                a.path.as_str().into(),
                i64::from(a.status).into(),
                a.detail.as_deref().into(),
            ],
        )
        .await
    }

    /// Stores a new API key (its hash only). A name already in use is refused.
    pub async fn insert_key(&self, key: &KeyRow) -> Result<()> {
        let taken =
            || StoreError::Conflict(format!("a key named `{}` exists; pick another name or revoke it", key.name));
        let mut tx = self.begin().await?;
        if tx.opt_text("SELECT id FROM api_keys WHERE name = $1", &[(&key.name).into()]).await?.is_some() {
            return Err(taken());
        }
        tx.exec(
            "INSERT INTO api_keys (id, name, role, prefix, hash, created_at, projects) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                (&key.id).into(),
                (&key.name).into(),
                (&key.role).into(),
                (&key.prefix).into(),
                (&key.hash).into(),
                key.created_at.into(),
                key.projects.as_deref().into(),
            ],
        )
        .await
        .map_err(|e| if is_unique_violation(&e) { taken() } else { e })?;
        tx.commit().await
    }

    pub async fn list_keys(&self) -> Result<Vec<KeyRow>> {
        self.fetch(key_select!("ORDER BY created_at, name"), &[]).await
    }

    /// The active (not revoked) key with this hash.
    pub async fn key_by_hash(&self, hash: &str) -> Result<Option<KeyRow>> {
        Ok(self.fetch::<KeyRow>(key_select!("WHERE hash = $1 AND revoked_at IS NULL"), &[hash.into()]).await?.pop())
    }

    /// Revokes a key by id or name; returns whether one was revoked now.
    pub async fn revoke_key(&self, id_or_name: &str) -> Result<bool> {
        let mut tx = self.begin().await?;
        let n = tx
            .exec(
                "UPDATE api_keys SET revoked_at = $1 WHERE (id = $2 OR name = $2) AND revoked_at IS NULL",
                &[now_ms().into(), id_or_name.into()],
            )
            .await?;
        tx.commit().await?;
        Ok(n > 0)
    }

    /// Notes when keys were last used (batched by the caller).
    pub async fn touch_keys(&self, used: &[(String, i64)]) -> Result<()> {
        let mut tx = self.begin().await?;
        for (id, at) in used {
            tx.exec(
                "UPDATE api_keys SET last_used_at = $1 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $1)",
                &[(*at).into(), id.into()],
            )
            .await?;
        }
        tx.commit().await
    }

    /// Records a mutating request in the audit log.
    pub async fn audit(
        &self,
        key: Option<&KeyRow>,
        method: &str,
        path: &str,
        status: u16,
        detail: Option<&str>,
    ) -> Result<()> {
        let entry = AuditEntry::new(key, method, path, status, detail);
        let mut tx = self.begin().await?;
        Self::insert_audit(&mut tx, &entry, now_ms()).await?;
        tx.commit().await
    }

    /// How many requests the audit log holds.
    /// The newest `limit` audit records, newest first.
    pub async fn recent_audit(&self, limit: i64) -> Result<Vec<AuditEntry>> {
        type Row = (Option<String>, Option<String>, String, String, i64, Option<String>);
        let rows: Vec<Row> = read!(self, |pool| {
            sqlx::query_as(
                "SELECT key_id, key_name, method, path, status, detail FROM audit_log ORDER BY id DESC LIMIT $1",
            )
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(key_id, key_name, method, path, status, detail)| AuditEntry {
                key_id,
                key_name,
                method,
                path,
                status: u16::try_from(status).unwrap_or(0),
                detail,
            })
            .collect())
    }

    pub async fn audit_count(&self) -> Result<i64> {
        Ok(read!(self, |pool| sqlx::query_scalar("SELECT COUNT(*) FROM audit_log").fetch_one(pool).await?))
    }
}
