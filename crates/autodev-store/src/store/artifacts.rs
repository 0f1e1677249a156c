//! A run's artifacts (`report.md`, `changes.patch`): written by its driver to the run folder
//! and to the database, read from the database first, so any process serves and delivers
//! them (the run folder is only on the driver's disk, and `autodev gc` removes it).
use std::path::Path;

use super::{Store, now_ms};
use crate::Result;
use crate::rows::TextRow;
use crate::tx::Arg;

/// The artifacts a run can have, by file name.
pub const ARTIFACTS: [&str; 2] = ["report.md", "changes.patch"];

impl Store {
    /// Stores (or replaces) an artifact of the run; through a driver's fenced store, only
    /// while its claim holds the run.
    pub async fn put_artifact(&self, run_id: &str, name: &str, content: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        tx.exec(
            "INSERT INTO run_artifacts (run_id, name, content, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (run_id, name) DO UPDATE SET content = excluded.content, created_at = excluded.created_at",
            &[run_id.into(), name.into(), content.into(), now_ms().into()],
        )
        .await?;
        tx.commit().await
    }

    /// An artifact of the run: the database's copy, else the one in `home`'s run folder (runs
    /// finished before artifacts were stored), else `None`.
    pub async fn artifact(&self, home: &Path, run_id: &str, name: &str) -> Result<Option<String>> {
        let rows: Vec<TextRow> = self
            .fetch(
                "SELECT content AS value FROM run_artifacts WHERE run_id = $1 AND name = $2",
                &[Arg::Text(run_id), Arg::Text(name)],
            )
            .await?;
        if let Some(row) = rows.into_iter().next() {
            return Ok(Some(row.value));
        }
        if !ARTIFACTS.contains(&name) {
            return Ok(None);
        }
        match tokio::fs::read(home.join("runs").join(run_id).join(name)).await {
            Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(super::io_err(e)),
        }
    }

    /// Which artifacts the run has (in the database or its run folder), without reading them.
    pub async fn artifact_names(&self, home: &Path, run_id: &str) -> Result<Vec<String>> {
        let rows: Vec<TextRow> =
            self.fetch("SELECT name AS value FROM run_artifacts WHERE run_id = $1", &[Arg::Text(run_id)]).await?;
        let mut names: Vec<String> = rows.into_iter().map(|r| r.value).collect();
        let dir = home.join("runs").join(run_id);
        for name in ARTIFACTS {
            if !names.iter().any(|n| n == name) && dir.join(name).is_file() {
                names.push(name.to_string());
            }
        }
        Ok(names)
    }
}
