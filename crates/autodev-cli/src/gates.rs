//! `autodev approve RUN` and `autodev reject RUN`: the plan-approval gate from the command
//! line, through the same code as the API (`approve_plan`), recorded under the user's name.
use std::path::Path;

use crate::Exit;
use crate::commands::{open_store, store_error};

pub async fn decide(home: &Path, key: &str, approved: bool, comment: Option<&str>) -> Exit {
    let inner = async {
        let store = open_store(home).await?;
        let run = store.find_run(key).await.map_err(store_error)?;
        let comment = comment.unwrap_or("").trim();
        if comment.contains('\0') {
            return Err(Exit::Usage("--comment must not contain NUL characters".into()));
        }
        let by = crate::commands::whoami();
        autodev_engine::approve_plan(&store, &run.id, approved, &by, comment)
            .await
            .map_err(|e| Exit::Usage(format!("{e} (only a run awaiting approval can be approved or rejected)")))?;
        let state = store.run_state(&run.id).await.map_err(store_error)?;
        match (approved, run.project_id.is_some()) {
            (true, true) => println!("run {} approved by {by}: {state}; a worker continues it", run.short_id),
            (true, false) => {
                println!(
                    "run {} approved by {by}: {state}; continue it with: autodev resume {}",
                    run.short_id, run.short_id
                )
            }
            (false, _) => println!("run {} rejected by {by}: {state}", run.short_id),
        }
        Ok::<Exit, Exit>(Exit::Ok)
    };
    match inner.await {
        Ok(e) | Err(e) => e,
    }
}
