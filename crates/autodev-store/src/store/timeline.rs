//! A delivered run's timeline after its pull request opened (`timeline`): checks, CI
//! follow-ups, the merge, deploys, a revert. Each step is written once per run and key, in
//! one transaction with its event and, when integrations hear of it, its milestone: a forge
//! event redelivered, or repeated under another delivery id, finds its key taken and changes
//! nothing.
use autodev_domain::{DeliveryStep, Event, EventKind};

use super::{Db, Store, now_ms};
use crate::Result;

/// One step as stored.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow, serde::Serialize)]
pub struct StepRow {
    /// What makes it happen once (`merged`, `checks:<sha>:failed:<name>`, `deployed:<env>`…).
    pub key: String,
    pub step: String,
    pub detail: String,
    pub url: Option<String>,
    pub sha: Option<String>,
    pub environment: Option<String>,
    pub at_ms: i64,
}

impl StepRow {
    /// The step as its event carries it.
    pub fn as_step(&self) -> DeliveryStep {
        DeliveryStep {
            step: self.step.clone(),
            detail: self.detail.clone(),
            url: self.url.clone(),
            sha: self.sha.clone(),
            environment: self.environment.clone(),
        }
    }
}

/// The event a step is announced by: `delivery.checks`, `delivery.merged`,
/// `delivery.deployed` or `delivery.follow_up`.
pub fn step_event(step: DeliveryStep) -> EventKind {
    match step.step.as_str() {
        "checks_passed" | "checks_failed" => EventKind::DeliveryChecks(step),
        "merged" | "closed" => EventKind::DeliveryMerged(step),
        "deploy_requested" | "deployed" | "deploy_failed" => EventKind::DeliveryDeployed(step),
        _ => EventKind::DeliveryFollowUp(step),
    }
}

impl Store {
    /// Records `step` on the run's timeline unless its `key` is taken; with `topic`, also the
    /// milestone integrations hear (`<run id>:<topic>:<key>`). Returns the event when the step
    /// is new, `None` when it had happened.
    pub async fn record_step(
        &self,
        run_id: &str,
        key: &str,
        step: DeliveryStep,
        topic: Option<&str>,
    ) -> Result<Option<Event>> {
        let mut tx = self.begin().await?;
        let at = now_ms();
        let n = tx
            .exec(
                "INSERT INTO timeline (run_id, key, step, detail, url, sha, environment, at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (run_id, key) DO NOTHING",
                &[
                    run_id.into(),
                    key.into(),
                    step.step.as_str().into(),
                    step.detail.as_str().into(),
                    step.url.as_deref().into(),
                    step.sha.as_deref().into(),
                    step.environment.as_deref().into(),
                    at.into(),
                ],
            )
            .await?;
        if n == 0 {
            return Ok(None);
        }
        let event = tx.event(run_id, step_event(step)).await?;
        tx.exec(
            "UPDATE timeline SET seq = $1 WHERE run_id = $2 AND key = $3",
            &[event.seq.into(), run_id.into(), key.into()],
        )
        .await?;
        if let Some(topic) = topic {
            tx.notify_as(&format!("{run_id}:{topic}:{key}"), run_id, topic, event.at_ms, event.seq).await?;
        }
        tx.commit().await?;
        Ok(Some(event))
    }

    /// Takes a step back (a follow-up that could not be created after its step was taken).
    pub async fn forget_step(&self, run_id: &str, key: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        tx.exec("DELETE FROM timeline WHERE run_id = $1 AND key = $2", &[run_id.into(), key.into()]).await?;
        tx.commit().await
    }

    /// The run's timeline, oldest first.
    pub async fn timeline(&self, run_id: &str) -> Result<Vec<StepRow>> {
        Ok(read!(self, |pool| {
            sqlx::query_as(
                "SELECT key, step, detail, url, sha, environment, at_ms FROM timeline WHERE run_id = $1
                 ORDER BY seq, at_ms",
            )
            .bind(run_id)
            .fetch_all(pool)
            .await?
        }))
    }

    /// The run whose change was merged as the commit `sha` (a full id, or a prefix of at
    /// least 7 hex digits as GitLab's deployments give): the newest when several match.
    pub async fn run_merged_as(&self, sha: &str) -> Result<Option<String>> {
        let sha = sha.trim().to_ascii_lowercase();
        if sha.len() < 7 || sha.len() > 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let pattern = format!("{sha}%");
        Ok(read!(self, |pool| {
            sqlx::query_scalar(
                "SELECT run_id FROM timeline WHERE step = 'merged' AND sha LIKE $1 ORDER BY at_ms DESC LIMIT 1",
            )
            .bind(&pattern)
            .fetch_optional(pool)
            .await?
        }))
    }
}
