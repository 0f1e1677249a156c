//! `autodev revert RUN`: asks for a revert of a run's merged change (as `POST
//! /api/v1/runs/{id}/revert` does): a revert run is queued for a worker, or the refusal and
//! its reason are printed.
use std::path::Path;

use crate::Exit;
use crate::config::FileConfig;
use crate::context::{open_store, store_error};

pub async fn revert(home: &Path, config: Option<&Path>, key: &str, json: bool) -> Exit {
    let inner = async {
        let cfg = FileConfig::load(home, config, None)
            .map_err(|p| Exit::Usage(format!("invalid configuration:\n  - {}", p.join("\n  - "))))?;
        let store = open_store(home).await?;
        let run = store.find_run(key).await.map_err(store_error)?;
        let delivery = crate::config::delivery_config(&cfg)
            .map_err(|p| Exit::Usage(format!("invalid configuration:\n  - {}", p.join("\n  - "))))?;
        let engine = autodev_engine::EngineConfig {
            credentials: crate::config::git_credentials(&delivery),
            ..crate::context::engine_config(&cfg, home, autodev_engine::code::CodeSearch::new(home, None))
        };
        let by = std::env::var("USER").ok().filter(|u| !u.is_empty()).map(|u| format!("{u} (cli)"));
        let by = by.as_deref().unwrap_or("the CLI");
        match autodev_engine::after::request_revert(&store, &engine, &run.id, by, None).await {
            Ok(Ok(revert)) => {
                if json {
                    println!("{}", super::runs::run_json(&revert));
                } else {
                    println!("revert run {} queued: {}", revert.short_id, revert.title);
                    eprintln!(
                        "a worker drives it (`autodev serve` or `autodev worker`); follow it with `autodev runs show {}`",
                        revert.short_id
                    );
                }
                Ok(Exit::Ok)
            }
            Ok(Err(refused)) => {
                if json {
                    println!("{}", serde_json::json!({"error": {"code": refused.code, "message": refused.message}}));
                } else {
                    eprintln!("autodev revert: refused ({}): {}", refused.code, refused.message);
                }
                Ok(Exit::Failed)
            }
            Err(e) => {
                eprintln!("autodev revert: {e}");
                Ok(Exit::Failed)
            }
        }
    };
    match inner.await {
        Ok(e) | Err(e) => e,
    }
}
