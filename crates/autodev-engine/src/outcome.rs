//! How driving a run ended.
use autodev_domain::RunState;

/// How driving a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The run reached a terminal state.
    Finished(RunState),
    /// The run waits at the plan-approval gate.
    AwaitingApproval,
    /// The caller's token stopped the driving (Ctrl-C, shutdown); the run keeps its state
    /// and can be resumed.
    Interrupted(RunState),
    /// Another driver took the run over after this one's lease expired (a stalled or very
    /// busy process); this one stopped and wrote nothing more. The run goes on there.
    LeaseLost,
}
