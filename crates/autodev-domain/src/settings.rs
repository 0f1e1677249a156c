//! Settings, typed once: a run's (stored with the run, so `resume` continues with exactly the
//! settings the run started with) and a project's (stored with the project). The store parses
//! them at its boundary (`RunRow::settings`, `ProjectRow::settings`); the API checks a
//! project's beyond their types before it stores them.
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSettings {
    pub test_command: String,
    pub provider: String,
    pub model: String,
    /// Ready tasks run in parallel up to this many.
    pub max_parallel: usize,
    /// Rounds of "tests failed → repair agent" before the run fails.
    pub max_repair_rounds: u32,
    /// Model turns one agent may take.
    pub max_steps: u32,
    /// Input + output tokens one task's agent may spend.
    pub max_task_tokens: u64,
    /// The run fails before a model call that would start past this cost (USD).
    #[serde(default)]
    pub max_cost_usd: Option<f64>,
    /// Output tokens asked for per call.
    pub max_output_tokens: u32,
    /// The model's context window; `None` takes it from the price table.
    #[serde(default)]
    pub context_window: Option<u64>,
    /// Stop at `awaiting_approval` after planning.
    pub approval: bool,
    /// Seconds an agent's `run` command may take unless it asks for more.
    pub command_timeout_secs: u64,
    /// Seconds the test command may take.
    pub test_timeout_secs: u64,
    /// Allow agent commands (and tests) to open TCP connections.
    #[serde(default)]
    pub sandbox_network: bool,
    /// More variables passed to commands (secrets are still filtered out).
    #[serde(default)]
    pub sandbox_pass_env: Vec<String>,
    /// More directories commands may write to.
    #[serde(default)]
    pub sandbox_writable: Vec<PathBuf>,
    #[serde(default)]
    pub record: Option<PathBuf>,
    #[serde(default)]
    pub replay: Option<PathBuf>,
    /// Keep worktrees after delivery (for debugging).
    #[serde(default)]
    pub keep_worktrees: bool,
    /// A run whose tests prove nothing gets repair rounds asking for a test that fails without
    /// the change, and then fails `no_evidence`.
    #[serde(default)]
    pub require_evidence: bool,
    /// How the model calls tools: natively (the API's tool calls), or written as JSON in its
    /// text for servers and models without tool-call support.
    #[serde(default)]
    pub tool_calls: ToolCallMode,
    /// Keys a repository's own `autodev.toml` tried to set and may not (sandbox, providers,
    /// prices, higher limits): each becomes a warning event when the run starts.
    #[serde(default)]
    pub config_warnings: Vec<String>,
    /// A follow-up run (review feedback on a pull request) delivers its commits onto this
    /// branch, the pull request's, by a fast-forward push: never a rewrite. `None`: its own
    /// branch.
    #[serde(default)]
    pub deliver_branch: Option<String>,
    /// Globs agents may not change (the project's `protected_paths`): a write there is
    /// refused as a tool error, and whatever a command changed there is put back before a
    /// commit, unless a glob in `allowed_paths` covers it.
    #[serde(default)]
    pub protected_paths: Vec<String>,
    /// Protected globs the run was approved with (`autodev approve RUN --allow-path GLOB`).
    #[serde(default)]
    pub allowed_paths: Vec<String>,
    /// Hold before pushing and opening a pull request, at `awaiting_approval`, until a person
    /// approves the delivery (the project's `approve_delivery`).
    #[serde(default)]
    pub approve_delivery: bool,
    /// A run that reverts another's merged change instead of planning one: no model is
    /// called; the revert is tested and delivered like any change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revert: Option<RevertOf>,
    /// The W3C `traceparent` of the run's creation span: every process that drives the run
    /// continues this trace (none when tracing was off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_parent: Option<String>,
}

/// What a revert run undoes: another run's change as merged.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RevertOf {
    /// The run whose change it reverts.
    pub run_id: String,
    /// The commit the change was merged as (a merge commit is reverted against its first
    /// parent; a squash or a single commit against its parent).
    pub sha: String,
    /// Its pull request, for the description.
    #[serde(default)]
    pub pull_request: Option<String>,
}

impl Default for RunSettings {
    fn default() -> Self {
        Self {
            test_command: String::new(),
            provider: "openai".into(),
            model: "gpt-4.1".into(),
            max_parallel: 2,
            max_repair_rounds: 2,
            max_steps: 100,
            max_task_tokens: 2_000_000,
            max_cost_usd: None,
            max_output_tokens: 8_192,
            context_window: None,
            approval: false,
            command_timeout_secs: 120,
            test_timeout_secs: 900,
            sandbox_network: false,
            sandbox_pass_env: Vec::new(),
            sandbox_writable: Vec::new(),
            record: None,
            replay: None,
            keep_worktrees: false,
            require_evidence: false,
            tool_calls: ToolCallMode::Auto,
            config_warnings: Vec::new(),
            deliver_branch: None,
            protected_paths: Vec::new(),
            allowed_paths: Vec::new(),
            approve_delivery: false,
            revert: None,
            trace_parent: None,
        }
    }
}

/// How a model calls tools (`tool_calls` in the configuration).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolCallMode {
    /// The API's own tool calls, and a well-formed `{"name": ..., "arguments": {...}}` naming
    /// one of the tools in a reply's text when the reply has no native call (small local
    /// models often answer so); its result goes back as text.
    #[default]
    Auto,
    /// The API's own tool calls only.
    Native,
    /// The tools are described in the prompt; a reply that is one JSON object
    /// `{"name": ..., "arguments": {...}}` is the call, and its result comes back as text.
    Text,
    /// As `text`, with every reply constrained by the server to one such object whose `name`
    /// is one of the offered tools and whose `arguments` follow that tool's schema (structured
    /// output: `response_format` json_schema on llama.cpp, Ollama, vLLM, LM Studio). `auto`
    /// turns to it for a model that answered in text without ever calling a tool.
    Schema,
}

/// A project's settings: the keys Autodev knows, each checked (an unknown key is refused by
/// the type, so `github_rep` cannot be ignored silently).
#[derive(serde::Deserialize, serde::Serialize, Clone, Default, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProjectSettings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub github_repo: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gitlab_project: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jira_project: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub require_evidence: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monthly_budget_usd: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protected_paths: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approve_delivery: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger_min_permission: Option<Permission>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger_bots: Option<Vec<String>>,
    /// Follow-up runs started by failing CI on a pull request Autodev opened, per pull
    /// request (default [`DEFAULT_CI_REPAIR_ROUNDS`]; 0 turns CI follow-ups off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ci_repair_rounds: Option<u32>,
    /// The Jira transition (by name, e.g. `Done`) a run's ticket takes when its pull request
    /// is merged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jira_done_transition: Option<String>,
    /// What happens when a run's pull request is merged: the team's own CD is asked to deploy
    /// (off when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deploy: Option<DeploySettings>,
}

/// CI follow-ups per pull request unless the project says otherwise.
pub const DEFAULT_CI_REPAIR_ROUNDS: u32 = 2;

impl ProjectSettings {
    /// CI follow-ups allowed per pull request (0: off).
    pub fn ci_repair_rounds(&self) -> u32 {
        self.ci_repair_rounds.unwrap_or(DEFAULT_CI_REPAIR_ROUNDS)
    }
}

/// How a merged change is handed to the team's own CD (exactly one way): GitHub's
/// `workflow_dispatch` of a named workflow, GitLab's pipeline trigger, or the outgoing
/// webhook (`delivery.deploy_requested`). Autodev never deploys by itself.
#[derive(serde::Deserialize, serde::Serialize, Clone, Default, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeploySettings {
    /// A workflow file name (`deploy.yml`) or id, dispatched with `environment` as an input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github_workflow: Option<String>,
    /// Run a GitLab pipeline on `ref` with `AUTODEV_ENVIRONMENT` set (the trigger token
    /// `AUTODEV_GITLAB_TRIGGER_TOKEN` when configured, else the integration's token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gitlab_trigger: Option<bool>,
    /// Send `delivery.deploy_requested` to the outgoing webhooks (n8n, an in-house deployer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<bool>,
    /// The branch or tag the deploy runs on (default: the run's base branch).
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    /// The environment to deploy to (default `production`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// More inputs for the workflow (GitHub) or variables for the pipeline (GitLab).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<std::collections::BTreeMap<String, String>>,
}

impl DeploySettings {
    /// The way chosen: `github_workflow`, `gitlab_trigger` or `webhook`; an error naming the
    /// problem when none or several are.
    pub fn way(&self) -> Result<&'static str, String> {
        let ways: Vec<&'static str> = [
            ("github_workflow", self.github_workflow.as_deref().is_some_and(|w| !w.trim().is_empty())),
            ("gitlab_trigger", self.gitlab_trigger == Some(true)),
            ("webhook", self.webhook == Some(true)),
        ]
        .into_iter()
        .filter_map(|(name, on)| on.then_some(name))
        .collect();
        match ways.as_slice() {
            [one] => Ok(one),
            [] => {
                Err("give one of `github_workflow` (a workflow file), `gitlab_trigger: true` or `webhook: true`".into())
            }
            several => Err(format!("give only one of {}", several.join(", "))),
        }
    }

    pub fn environment(&self) -> &str {
        self.environment.as_deref().filter(|e| !e.trim().is_empty()).unwrap_or("production")
    }
}

/// What a person may do in a repository, in GitHub's words (GitLab's levels map onto them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    None,
    Read,
    Triage,
    Write,
    Maintain,
    Admin,
}

impl Permission {
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::None => "none",
            Permission::Read => "read",
            Permission::Triage => "triage",
            Permission::Write => "write",
            Permission::Maintain => "maintain",
            Permission::Admin => "admin",
        }
    }

    /// GitHub's role name or legacy permission; an unknown (custom) role counts as read.
    pub fn from_github(role: &str) -> Self {
        match role {
            "admin" => Permission::Admin,
            "maintain" => Permission::Maintain,
            "write" => Permission::Write,
            "triage" => Permission::Triage,
            "none" => Permission::None,
            _ => Permission::Read,
        }
    }

    /// GitLab's access level: reporter ≈ triage, developer ≈ write, maintainer ≈ maintain,
    /// owner ≈ admin; guest and planner read.
    pub fn from_gitlab(level: u32) -> Self {
        match level {
            50.. => Permission::Admin,
            40.. => Permission::Maintain,
            30.. => Permission::Write,
            20.. => Permission::Triage,
            1.. => Permission::Read,
            0 => Permission::None,
        }
    }
}
