//! Receipts: inbound webhook deliveries, stored before anything acts on them.
use super::{Db, Store, now_ms};
use crate::Result;

impl Store {
    /// Stores the receipt of a webhook delivery (the sender's delivery id) before anything acts
    /// on it. Returns false when this delivery id was received before (a redelivery), in which
    /// case nothing else should happen.
    pub async fn record_receipt(&self, source: &str, delivery_id: &str, event: &str) -> Result<bool> {
        let mut tx = self.begin().await?;
        let n = tx
            .exec(
                "INSERT INTO webhook_deliveries (source, delivery_id, event, received_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (source, delivery_id) DO NOTHING",
                &[source.into(), delivery_id.into(), event.into(), now_ms().into()],
            )
            .await?;
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Records what a receipt led to (`ignored: …`, `run created`, …) and its run.
    pub async fn finish_receipt(
        &self,
        source: &str,
        delivery_id: &str,
        outcome: &str,
        run_id: Option<&str>,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        tx.exec(
            "UPDATE webhook_deliveries SET outcome = $1, run_id = $2 WHERE source = $3 AND delivery_id = $4",
            &[outcome.into(), run_id.into(), source.into(), delivery_id.into()],
        )
        .await?;
        tx.commit().await
    }

    /// A receipt's recorded outcome and run, if the delivery id was received.
    pub async fn receipt(&self, source: &str, delivery_id: &str) -> Result<Option<(Option<String>, Option<String>)>> {
        Ok(read!(self, |pool| {
            sqlx::query_as("SELECT outcome, run_id FROM webhook_deliveries WHERE source = $1 AND delivery_id = $2")
                .bind(source)
                .bind(delivery_id)
                .fetch_optional(pool)
                .await?
        }))
    }
}
