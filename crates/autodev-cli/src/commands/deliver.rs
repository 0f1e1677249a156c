//! `autodev deliver RUN`: tells the configured integrations about a run's milestones that
//! were not delivered (failed, or waiting for their next attempt), now; and the delivery at
//! the end of `autodev run`.
use std::path::Path;

use autodev_delivery::Dispatcher;
use autodev_store::{OutboxRow, Store};

use crate::Exit;
use crate::config::FileConfig;

/// The dispatcher for this configuration, or why there is none.
fn dispatcher(home: &Path, cfg: &FileConfig, store: &Store) -> Result<Dispatcher, Exit> {
    let config = crate::config::delivery_config(cfg)
        .map_err(|p| Exit::Usage(format!("invalid configuration:\n  - {}", p.join("\n  - "))))?;
    Ok(Dispatcher::new(store.clone(), home, &config))
}

/// One line per milestone and target, to stderr (or the rows as JSON to stdout).
fn print(rows: &[OutboxRow], json: bool) {
    if json {
        println!("{}", autodev_delivery::deliveries_json(rows));
        return;
    }
    for r in rows {
        let results: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&r.results).unwrap_or_default();
        if results.is_empty() {
            eprintln!("{:<22} {} (no integration wanted it)", r.topic, r.state);
        }
        for (target, result) in results {
            let mark = if result["ok"] == true { "ok" } else { "FAILED" };
            let message = result["message"].as_str().unwrap_or_default();
            eprintln!("{:<22} {:<14} {mark}: {message}", r.topic, target);
        }
    }
}

pub async fn deliver(home: &Path, config: Option<&Path>, key: &str, json: bool) -> Exit {
    let inner = async {
        let cfg = FileConfig::load(home, config, None)
            .map_err(|p| Exit::Usage(format!("invalid configuration:\n  - {}", p.join("\n  - "))))?;
        let store = crate::context::open_store(home).await?;
        let run = store.find_run(key).await.map_err(crate::context::store_error)?;
        let dispatcher = dispatcher(home, &cfg, &store)?;
        if dispatcher.is_empty() {
            return Err(Exit::Usage(
                "no integration is configured: set AUTODEV_GITHUB_TOKEN, AUTODEV_SLACK_WEBHOOK_URL or AUTODEV_NOTIFY_WEBHOOK_URL, or add [[notify.webhooks]] (README: Delivery)".into(),
            ));
        }
        store.retry_outbox(&run.id).await.map_err(crate::context::store_error)?;
        let rows = dispatcher.deliver_run(&run.id).await.map_err(crate::context::store_error)?;
        print(&rows, json);
        let undelivered = rows.iter().filter(|r| r.state != "done").count();
        if undelivered == 0 {
            Ok(Exit::Ok)
        } else {
            eprintln!("{undelivered} milestone(s) of run {} not delivered; see above", run.short_id);
            Ok(Exit::Failed)
        }
    };
    match inner.await {
        Ok(e) | Err(e) => e,
    }
}

/// After `autodev run`: delivers the run's milestones when integrations are configured. A
/// failed delivery is reported, never the run's exit status.
pub async fn after_run(home: &Path, cfg: &FileConfig, store: &Store, run_id: &str) {
    let Ok(dispatcher) = dispatcher(home, cfg, store) else { return };
    if dispatcher.is_empty() {
        return;
    }
    match dispatcher.deliver_run(run_id).await {
        Ok(rows) => print(&rows, false),
        Err(e) => eprintln!("delivery: {e} (retry with `autodev deliver`)"),
    }
}
