//! What one run being driven shares with its tasks.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicI64;

use autodev_domain::{Event, EventKind};
use autodev_store::RunRow;
use autodev_workspace::Git;
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;
use crate::error::{EngineError, Result};
use crate::settings::RunSettings;

/// Everything a run being driven needs, shared by its tasks.
pub(crate) struct RunCtx {
    pub engine: Engine,
    pub run: RunRow,
    pub settings: RunSettings,
    pub dir: PathBuf,
    pub cancel: CancellationToken,
    pub cost_micros: AtomicI64,
    pub warned_unpriced: std::sync::atomic::AtomicBool,
    /// Whether the 80% warning of the run's cost limit was given (once per process).
    pub warned_budget: std::sync::atomic::AtomicBool,
    /// The same for the project's and the deployment's monthly budgets.
    pub warned_project_month: std::sync::atomic::AtomicBool,
    pub warned_global_month: std::sync::atomic::AtomicBool,
    /// The run's code index, opened (and refreshed) the first time the planner or an
    /// agent needs it; `None` inside when it could not be built (search_code then says so).
    pub code: Arc<tokio::sync::OnceCell<Option<Arc<crate::code::Searcher>>>>,
}

/// A context window this small (in tokens) or smaller gets the compact prompts and tool
/// descriptions, and tool outputs and the planner's view sized to it.
pub(crate) const COMPACT_WINDOW: u64 = 16_384;

impl RunCtx {
    /// The model's context window in tokens: `context_window` from the configuration, else
    /// the price table's, else what the model's server said at the run's start (filled into
    /// the settings then), else 32k (`DEFAULT_CONTEXT_WINDOW`).
    pub fn window(&self) -> u64 {
        self.settings.context_window.unwrap_or_else(|| self.engine.prices.context_window(&self.settings.model))
    }

    /// The output a call asks for: `max_output_tokens`, but at most a quarter of the window,
    /// so a small window (8k, with the default 8,192) still has room for the conversation.
    pub fn max_output_tokens(&self) -> u32 {
        let quarter = u32::try_from(self.window() / 4).unwrap_or(u32::MAX).max(256);
        self.settings.max_output_tokens.min(quarter)
    }

    /// How coders' prompts are written: compact or not, and their step budget.
    pub(crate) fn style(&self) -> crate::prompts::Style {
        crate::prompts::Style { compact: self.compact(), steps: self.settings.max_steps }
    }

    /// Whether the prompts take their compact form (a window of at most [`COMPACT_WINDOW`]).
    pub fn compact(&self) -> bool {
        self.window() <= COMPACT_WINDOW
    }

    /// Characters one tool output or the planner's repository view may fill: about a quarter
    /// of the window (at four characters a token).
    pub fn output_budget(&self) -> usize {
        usize::try_from(self.window()).unwrap_or(usize::MAX)
    }

    pub fn worktree(&self, name: &str) -> PathBuf {
        self.dir.join("worktrees").join(name)
    }

    pub fn repo(&self) -> Git {
        self.engine.git(&self.run.repo)
    }

    pub async fn emit(&self, e: Event) {
        self.engine.publish(e);
    }

    pub async fn event(&self, kind: EventKind) -> Result<()> {
        let e = self.engine.store.append_event(&self.run.id, kind).await?;
        self.engine.publish(e);
        Ok(())
    }

    /// The run's code index, built or refreshed from `source` (a worktree of the run) the
    /// first time; `None` when it cannot be built (logged).
    pub async fn code_index(&self, source: &Path) -> Option<Arc<crate::code::Searcher>> {
        crate::code::run_index(&self.code, &self.engine.code, Path::new(&self.run.repo), source).await
    }

    pub fn check_cancel(&self) -> Result<()> {
        if self.cancel.is_cancelled() { Err(EngineError::Cancelled) } else { Ok(()) }
    }
}
