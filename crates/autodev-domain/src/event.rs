//! Events: the append-only record of a run. Each is stored with a sequence number and a
//! time; the CLI's live display and `--json` output are renderings of them.
use serde::{Deserialize, Serialize};

use crate::state::{RunState, TaskState};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    RunCreated {
        title: String,
        repo: String,
        base_branch: String,
        test_command: String,
    },
    StateChanged {
        from: RunState,
        to: RunState,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        reason: Option<String>,
    },
    PlanRejected {
        reason: String,
    },
    PlanAccepted {
        summary: String,
        tasks: Vec<PlanTaskView>,
    },
    /// A person approved the run at its gate (the plan, or the delivery); `allow_paths` are
    /// protected globs the run may change from now on.
    PlanApproved {
        by: String,
        #[serde(default)]
        comment: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        allow_paths: Vec<String>,
    },
    TaskStateChanged {
        task: String,
        state: TaskState,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        reason: Option<String>,
    },
    AgentStep {
        conversation: String,
        turn: u32,
        tool: String,
        target: String,
    },
    ToolFinished {
        conversation: String,
        turn: u32,
        tool: String,
        ok: bool,
        summary: String,
    },
    ModelCall {
        conversation: String,
        turn: u32,
        provider: String,
        model: String,
        input_tokens: u64,
        output_tokens: u64,
        cost_micros: i64,
        latency_ms: u64,
    },
    ContextCompacted {
        conversation: String,
        turn: u32,
        elided_messages: u32,
        tokens_before: u64,
        tokens_after: u64,
        window: u64,
    },
    TaskCommitted {
        task: String,
        commit: String,
    },
    MergeConflict {
        task: String,
        files: Vec<String>,
    },
    TaskMerged {
        task: String,
        commit: String,
    },
    TestRun {
        round: u32,
        passed: bool,
        exit_code: Option<i32>,
        duration_ms: u64,
        tail: String,
    },
    Delivered {
        branch: String,
        commits: Vec<String>,
        report: String,
        patch: String,
    },
    Warning {
        message: String,
    },
    /// The pull request's checks finished on a commit (`step` `checks_passed` or
    /// `checks_failed`).
    #[serde(rename = "delivery.checks")]
    DeliveryChecks(DeliveryStep),
    /// The pull request was merged (`merged`, `sha` the merge commit) or closed unmerged
    /// (`closed`).
    #[serde(rename = "delivery.merged")]
    DeliveryMerged(DeliveryStep),
    /// A deploy was asked of the team's CD (`deploy_requested`), or a deployment of the
    /// merged change finished (`deployed`, `deploy_failed`; `environment` says where).
    #[serde(rename = "delivery.deployed")]
    DeliveryDeployed(DeliveryStep),
    /// What Autodev did about its pull request after it opened: a CI follow-up started
    /// (`ci_repair_started`) or refused (`ci_repair_refused`), a revert asked for
    /// (`revert_requested`).
    #[serde(rename = "delivery.follow_up")]
    DeliveryFollowUp(DeliveryStep),
    /// An integration was told about a milestone (`topic`), or tried to be: `target` is
    /// `github`, `slack`, `webhook:<name>`…; `status` the vendor's HTTP status when there was
    /// one; `message` what happened (secrets redacted).
    DeliveryAttempted {
        target: String,
        topic: String,
        ok: bool,
        status: Option<u16>,
        message: String,
    },
    /// A target gave up on a milestone after its retries; `autodev deliver RUN` (or `POST
    /// /api/v1/runs/{id}/deliver`) tries again. The run's own state is unchanged.
    DeliveryFailed {
        target: String,
        topic: String,
        status: Option<u16>,
        message: String,
    },
    /// Whether the run's tests capture the spec: run with only the run's test changes on the
    /// base commit, they must fail (they pass on the run branch).
    /// An agent's change to a protected path: `refused` (a file tool's write) or `reverted`
    /// (a command's change, put back before the commit).
    ProtectedPath {
        conversation: String,
        path: String,
        glob: String,
        action: String,
    },
    /// A model call was served by a fallback: the primary (or the previous fallback) was
    /// unavailable (`reason`).
    ProviderFallback {
        conversation: String,
        turn: u32,
        from: String,
        to: String,
        reason: String,
    },
    /// A rejected plan went back to the planner with the reviewer's comment.
    PlanRevisionRequested {
        by: String,
        comment: String,
        round: u32,
    },
    Evidence {
        verdict: Evidence,
        /// The test files (or Rust files whose test modules) the run changed.
        test_files: Vec<String>,
        /// The test command's exit code on the base with those changes (none when not run).
        #[serde(skip_serializing_if = "Option::is_none", default)]
        base_exit_code: Option<i32>,
        /// The tail of its output there.
        #[serde(default)]
        tail: String,
    },
}

/// What the run's tests prove (the idea behind SWE-bench's FAIL_TO_PASS, for every run). The
/// stored and API values are the words users read: `proven`, `tests pass but prove nothing`,
/// `no tests`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Evidence {
    /// The run's tests fail on the base commit and pass on the run branch.
    #[serde(rename = "proven")]
    Proven,
    /// The run changed tests, but they pass on the base commit too.
    #[serde(rename = "tests pass but prove nothing")]
    ProvesNothing,
    /// The run changed no tests.
    #[serde(rename = "no tests")]
    NoTests,
}

impl Evidence {
    /// The stored, API and report form.
    pub fn as_str(self) -> &'static str {
        match self {
            Evidence::Proven => "proven",
            Evidence::ProvesNothing => "tests pass but prove nothing",
            Evidence::NoTests => "no tests",
        }
    }

    /// How a report or a person says it (the same words).
    pub fn describe(self) -> &'static str {
        self.as_str()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanTaskView {
    pub id: String,
    pub title: String,
    pub depends_on: Vec<String>,
}

/// A stored event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub seq: i64,
    pub run_id: String,
    /// Milliseconds since the Unix epoch.
    pub at_ms: i64,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// One step of a run's delivery timeline after its pull request opened, as its event carries
/// it (the API's `timeline` lists the same).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeliveryStep {
    /// `pr_opened`, `checks_passed`, `checks_failed`, `ci_repair_started`,
    /// `ci_repair_refused`, `merged`, `closed`, `deploy_requested`, `deployed`,
    /// `deploy_failed`, `revert_requested`.
    pub step: String,
    /// For people: what failed, who merged, the follow-up run…
    #[serde(default)]
    pub detail: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The commit it is about (the checked head, the merge commit, the deployed commit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
}

impl EventKind {
    /// The milestone this event announces to integrations (`run.succeeded`…), if any: the
    /// store writes a notification for it in the event's own transaction.
    pub fn topic(&self) -> Option<&'static str> {
        match self {
            EventKind::StateChanged { to, from, .. } => match to {
                RunState::AwaitingApproval => Some("run.awaiting_approval"),
                RunState::Executing if *from == RunState::Planning => Some("run.plan_ready"),
                RunState::Succeeded => Some("run.succeeded"),
                RunState::Failed => Some("run.failed"),
                RunState::Cancelled => Some("run.cancelled"),
                _ => None,
            },
            _ => None,
        }
    }

    /// The `type` tag, for storage and filtering.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::RunCreated { .. } => "run_created",
            EventKind::StateChanged { .. } => "state_changed",
            EventKind::PlanRejected { .. } => "plan_rejected",
            EventKind::ProtectedPath { .. } => "protected_path",
            EventKind::ProviderFallback { .. } => "provider_fallback",
            EventKind::PlanRevisionRequested { .. } => "plan_revision_requested",
            EventKind::PlanAccepted { .. } => "plan_accepted",
            EventKind::PlanApproved { .. } => "plan_approved",
            EventKind::TaskStateChanged { .. } => "task_state_changed",
            EventKind::AgentStep { .. } => "agent_step",
            EventKind::ToolFinished { .. } => "tool_finished",
            EventKind::ModelCall { .. } => "model_call",
            EventKind::ContextCompacted { .. } => "context_compacted",
            EventKind::TaskCommitted { .. } => "task_committed",
            EventKind::MergeConflict { .. } => "merge_conflict",
            EventKind::TaskMerged { .. } => "task_merged",
            EventKind::TestRun { .. } => "test_run",
            EventKind::Delivered { .. } => "delivered",
            EventKind::Warning { .. } => "warning",
            EventKind::DeliveryChecks(_) => "delivery.checks",
            EventKind::DeliveryMerged(_) => "delivery.merged",
            EventKind::DeliveryDeployed(_) => "delivery.deployed",
            EventKind::DeliveryFollowUp(_) => "delivery.follow_up",
            EventKind::DeliveryAttempted { .. } => "delivery_attempted",
            EventKind::DeliveryFailed { .. } => "delivery_failed",
            EventKind::Evidence { .. } => "evidence",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_json_is_flat_and_tagged() {
        let e = Event {
            seq: 3,
            run_id: "r".into(),
            at_ms: 10,
            kind: EventKind::TaskStateChanged { task: "t1".into(), state: TaskState::Running, reason: None },
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"seq": 3, "run_id": "r", "at_ms": 10, "type": "task_state_changed", "task": "t1", "state": "running"})
        );
        let back: Event = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
        assert_eq!(e.kind.name(), "task_state_changed");
    }
}
