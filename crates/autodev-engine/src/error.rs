//! The engine's error type.
use autodev_domain::ModelError;
use autodev_store::StoreError;
use autodev_workspace::GitError;

/// Why the engine stopped a run or refused a request.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Bad input from the user (repo, branch, spec, settings). Fix the input; exit code 2.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Git(#[from] GitError),
    /// The model failed in a way retries did not fix. The run fails with this reason.
    #[error("model call failed: {0}")]
    Model(#[from] ModelError),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The run was cancelled while it was being driven.
    #[error("the run was cancelled")]
    Cancelled,
    /// A budget (steps, tokens, cost) ran out, or an agent could not finish its work.
    #[error("{0}")]
    Failed(String),
    /// A cost limit would be passed by the next model call. The reason starts with
    /// `budget_exceeded:` and names the limit, the spend and the limit's value; the run can be
    /// reopened once the limit is raised (`autodev resume`).
    #[error("{0}")]
    Budget(String),
}

pub type Result<T> = std::result::Result<T, EngineError>;
