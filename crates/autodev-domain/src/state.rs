//! The run and task state machines (the README's "How a run works" names the states).
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a run is in its lifecycle:
/// `queued → planning → awaiting_approval? → executing → verifying → delivering → succeeded`,
/// and from any non-terminal state to `failed` or `cancelled`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = RunStateName))]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Queued,
    Planning,
    AwaitingApproval,
    Executing,
    Verifying,
    Delivering,
    Succeeded,
    Failed,
    Cancelled,
}

impl RunState {
    pub const ALL: [RunState; 9] = [
        RunState::Queued,
        RunState::Planning,
        RunState::AwaitingApproval,
        RunState::Executing,
        RunState::Verifying,
        RunState::Delivering,
        RunState::Succeeded,
        RunState::Failed,
        RunState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Planning => "planning",
            RunState::AwaitingApproval => "awaiting_approval",
            RunState::Executing => "executing",
            RunState::Verifying => "verifying",
            RunState::Delivering => "delivering",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        match self {
            RunState::Succeeded | RunState::Failed | RunState::Cancelled => true,
            RunState::Queued
            | RunState::Planning
            | RunState::AwaitingApproval
            | RunState::Executing
            | RunState::Verifying
            | RunState::Delivering => false,
        }
    }

    /// Whether the lifecycle allows going from `self` to `next`. Staying put is allowed
    /// (resume re-enters the state it stopped in).
    pub fn can_become(self, next: RunState) -> bool {
        use RunState::*;
        if self == next {
            return !self.is_terminal();
        }
        if self.is_terminal() {
            return false;
        }
        match next {
            Failed | Cancelled => true,
            Queued => false,
            // Back to planning: a rejected plan goes to the planner with the comment.
            Planning => matches!(self, Queued | AwaitingApproval),
            // The plan gate, or the delivery gate (tests passed, before pushing).
            AwaitingApproval => matches!(self, Planning | Verifying),
            Executing => matches!(self, Planning | AwaitingApproval),
            Verifying => self == Executing,
            Delivering => matches!(self, Verifying | AwaitingApproval),
            Succeeded => self == Delivering,
        }
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state name that is not one of the run's or task's states.
#[derive(Debug, thiserror::Error)]
#[error("unknown state `{0}`")]
pub struct UnknownState(pub String);

impl FromStr for RunState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RunState::ALL.into_iter().find(|st| st.as_str() == s).ok_or_else(|| UnknownState(s.to_string()))
    }
}

/// A task's state: `pending → ready → running → done | failed | skipped`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    Pending,
    Ready,
    Running,
    Done,
    Failed,
    Skipped,
}

impl TaskState {
    pub const ALL: [TaskState; 6] = [
        TaskState::Pending,
        TaskState::Ready,
        TaskState::Running,
        TaskState::Done,
        TaskState::Failed,
        TaskState::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::Ready => "ready",
            TaskState::Running => "running",
            TaskState::Done => "done",
            TaskState::Failed => "failed",
            TaskState::Skipped => "skipped",
        }
    }

    pub fn is_terminal(self) -> bool {
        match self {
            TaskState::Done | TaskState::Failed | TaskState::Skipped => true,
            TaskState::Pending | TaskState::Ready | TaskState::Running => false,
        }
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TaskState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TaskState::ALL.into_iter().find(|st| st.as_str() == s).ok_or_else(|| UnknownState(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_round_trip() {
        for s in RunState::ALL {
            assert_eq!(s.as_str().parse::<RunState>().unwrap(), s);
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{}\"", s.as_str()));
        }
        for s in TaskState::ALL {
            assert_eq!(s.as_str().parse::<TaskState>().unwrap(), s);
        }
        assert!("running".parse::<RunState>().is_err());
    }

    #[test]
    fn lifecycle_allows_the_documented_path_only() {
        use RunState::*;
        let path = [Queued, Planning, AwaitingApproval, Executing, Verifying, Delivering, Succeeded];
        for w in path.windows(2) {
            assert!(w[0].can_become(w[1]), "{} -> {}", w[0], w[1]);
        }
        assert!(Planning.can_become(Executing));
        assert!(!Queued.can_become(Executing));
        assert!(!Succeeded.can_become(Failed));
        assert!(Executing.can_become(Cancelled));
        assert!(!Cancelled.can_become(Cancelled));
        // The gates: a rejected plan goes back to planning; a delivery waits after verifying.
        assert!(AwaitingApproval.can_become(Planning));
        assert!(Verifying.can_become(AwaitingApproval) && AwaitingApproval.can_become(Delivering));
        assert!(!Executing.can_become(Planning) && !Executing.can_become(AwaitingApproval));
    }
}
