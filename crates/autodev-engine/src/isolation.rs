//! The sandbox at the start of a run: a run whose agents cannot be isolated as configured
//! does not start them; an unisolated mode chosen by the operator is said in the run's events
//! (and so in its report); configuration a repository tried to set and may not is said too.
use autodev_domain::EventKind;
use autodev_store::RunRow;
use sha2::{Digest, Sha256};

use std::path::PathBuf;

use autodev_workspace::SandboxPolicy;

use crate::ctx::RunCtx;
use crate::error::{EngineError, Result};

/// Checks the sandbox and records the warnings; fails the run when the sandbox is missing.
pub(crate) async fn announce(ctx: &RunCtx) -> Result<()> {
    for warning in &ctx.settings.config_warnings {
        ctx.event(EventKind::Warning { message: warning.clone() }).await?;
    }
    let mode = ctx.engine.sandbox.mode;
    if let Err(why) = mode.check_available() {
        return Err(EngineError::Failed(format!("sandbox_unavailable: agents were not started: {why}")));
    }
    if !mode.isolated() {
        ctx.event(EventKind::Warning { message: unisolated_message(mode) }).await?;
    }
    Ok(())
}

/// The warning every run in an unisolated mode carries.
pub fn unisolated_message(mode: autodev_workspace::SandboxMode) -> String {
    format!(
        "UNISOLATED: sandbox.mode = \"{mode}\": agent commands can read the host's files, see its processes and reach \
         local services{}; only the operator's configuration chose this (install bubblewrap and use \
         sandbox.mode = \"bwrap\" to isolate them)",
        if mode == autodev_workspace::SandboxMode::Landlock { " (writes are confined by Landlock)" } else { "" }
    )
}

/// The directory name of a run's project build caches under `AUTODEV_HOME/cache/`: the
/// project id, or for a run made from a local repository a hash of its path.
pub(crate) fn cache_key(run: &RunRow) -> String {
    match &run.project_id {
        Some(id) => id.clone(),
        None => {
            let digest = Sha256::digest(run.repo.as_bytes());
            let name: String = std::path::Path::new(&run.repo)
                .file_name()
                .map(|n| n.to_string_lossy().chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect())
                .unwrap_or_default();
            format!("local-{name}-{}", hex::encode(&digest[..6]))
        }
    }
}

impl RunCtx {
    /// What this run's commands may see and do: the operator's sandbox mode and read-only
    /// list (process-wide), this run's network, variables and writable list (operator
    /// settings stored with the run), the project's build caches, and `AUTODEV_HOME` and the
    /// repository hidden.
    pub fn policy(&self) -> SandboxPolicy {
        let mut p = SandboxPolicy::new(self.dir.join("tmp")).with_mode(self.engine.sandbox.mode);
        if let Some(readonly) = &self.engine.sandbox.readonly {
            p.readonly = readonly.clone();
        }
        p.cache_dir = Some(self.engine.home.join("cache").join(cache_key(&self.run)));
        p.hidden = vec![self.engine.home.clone(), PathBuf::from(&self.run.repo)];
        p.network = self.settings.sandbox_network;
        p.pass_env = self.settings.sandbox_pass_env.clone();
        p.writable = self.settings.sandbox_writable.clone();
        p
    }

    /// The project's test command in `wt`, in the same kind of sandbox as the agents' commands
    /// (a fresh one each time: nothing an agent left running sees the tests).
    pub(crate) async fn test_command_in(&self, wt: &std::path::Path) -> Result<autodev_workspace::CommandOutcome> {
        autodev_workspace::Sandbox::new(wt, self.policy())
            .run(&self.settings.test_command, std::time::Duration::from_secs(self.settings.test_timeout_secs))
            .await
            .map_err(|e| EngineError::Failed(format!("could not run the test command: {e}")))
    }
}
