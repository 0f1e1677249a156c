//! `autodev approve RUN` and `autodev reject RUN`: a run's gate (its plan, or its delivery)
//! from the command line, through the same code as the API (`approve_plan`), recorded under
//! the user's name.
use std::path::Path;

use autodev_domain::RunState;
use autodev_engine::{Decision, Gate};

use crate::Exit;
use crate::context::{open_store, store_error};

pub async fn decide(home: &Path, key: &str, approved: bool, comment: Option<&str>, allow_paths: Vec<String>) -> Exit {
    let inner = async {
        let store = open_store(home).await?;
        let run = store.find_run(key).await.map_err(store_error)?;
        let comment = comment.unwrap_or("").trim();
        if comment.contains('\0') {
            return Err(Exit::Usage("--comment must not contain NUL characters".into()));
        }
        for glob in &allow_paths {
            autodev_workspace::protect::check_glob(glob)
                .map_err(|e| Exit::Usage(format!("--allow-path `{glob}`: {e}")))?;
        }
        let by = crate::context::whoami();
        let gate = Gate::of(&run);
        let decision = Decision { approved, by: by.clone(), comment: comment.to_string(), allow_paths };
        autodev_engine::approve_plan(&store, &run.id, &decision).await.map_err(|e| match e {
            autodev_engine::EngineError::Invalid(m) => {
                Exit::Usage(format!("{m} (only a run awaiting approval can be approved or rejected)"))
            }
            other => Exit::Usage(other.to_string()),
        })?;
        let state = store.run_state(&run.id).await.map_err(store_error)?;
        let id = &run.short_id;
        let what = gate.as_str();
        match (state, run.project_id.is_some()) {
            (RunState::Cancelled, _) => println!("run {id} rejected by {by} at its {what} gate: cancelled"),
            (RunState::Planning, _) => {
                println!("run {id}: plan rejected by {by} with a comment; it goes back to the planner");
            }
            _ => println!("run {id} approved by {by} at its {what} gate: {state}"),
        }
        if !matches!(state, RunState::Cancelled) {
            if run.project_id.is_some() {
                println!("a worker continues it");
            } else {
                println!("continue it with: autodev resume {id}");
            }
        }
        Ok::<Exit, Exit>(Exit::Ok)
    };
    match inner.await {
        Ok(e) | Err(e) => e,
    }
}
