//! Projects: a repository with its settings.
use super::{Store, now_ms};
use crate::rows::ProjectRow;
use crate::tx::is_unique_violation;
use crate::{Result, StoreError};

impl Store {
    pub async fn insert_project(&self, p: &ProjectRow) -> Result<()> {
        let taken = || StoreError::Conflict(format!("a project named `{}` exists", p.name));
        let mut tx = self.begin().await?;
        if tx.opt_text("SELECT id FROM projects WHERE name = $1", &[(&p.name).into()]).await?.is_some() {
            return Err(taken());
        }
        tx.exec(
            "INSERT INTO projects (id, name, repository, base_branch, test_command, settings, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
            &[
                (&p.id).into(),
                (&p.name).into(),
                (&p.repository).into(),
                p.base_branch.as_deref().into(),
                p.test_command.as_deref().into(),
                (&p.settings).into(),
                p.created_at.into(),
            ],
        )
        .await
        .map_err(|e| if is_unique_violation(&e) { taken() } else { e })?;
        tx.commit().await
    }

    /// Replaces a project's settable fields (name, repository, base branch, test command,
    /// settings).
    pub async fn update_project(&self, p: &ProjectRow) -> Result<()> {
        let taken = || StoreError::Conflict(format!("a project named `{}` exists", p.name));
        let mut tx = self.begin().await?;
        if tx
            .opt_text("SELECT id FROM projects WHERE name = $1 AND id <> $2", &[(&p.name).into(), (&p.id).into()])
            .await?
            .is_some()
        {
            return Err(taken());
        }
        let n = tx
            .exec(
                "UPDATE projects SET name = $1, repository = $2, base_branch = $3, test_command = $4, settings = $5, updated_at = $6 WHERE id = $7",
                &[
                    (&p.name).into(),
                    (&p.repository).into(),
                    p.base_branch.as_deref().into(),
                    p.test_command.as_deref().into(),
                    (&p.settings).into(),
                    now_ms().into(),
                    (&p.id).into(),
                ],
            )
            .await
            .map_err(|e| if is_unique_violation(&e) { taken() } else { e })?;
        tx.commit().await?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("no project `{}`", p.id)));
        }
        Ok(())
    }

    pub async fn delete_project(&self, id: &str) -> Result<bool> {
        let mut tx = self.begin().await?;
        let n = tx.exec("DELETE FROM projects WHERE id = $1", &[id.into()]).await?;
        tx.commit().await?;
        Ok(n > 0)
    }

    pub async fn list_projects(&self) -> Result<Vec<ProjectRow>> {
        self.fetch(project_select!("ORDER BY name"), &[]).await
    }

    /// A project by id or name.
    pub async fn find_project(&self, key: &str) -> Result<ProjectRow> {
        // An id always wins over a name (names that look like ids are refused, but a database
        // from before that rule may hold one).
        self.fetch::<ProjectRow>(
            project_select!("WHERE id = $1 OR name = $1 ORDER BY CASE WHEN id = $1 THEN 0 ELSE 1 END LIMIT 1"),
            &[key.into()],
        )
        .await?
        .pop()
        .ok_or_else(|| StoreError::NotFound(format!("no project `{key}`")))
    }
}
