//! Row types. Plain strings and integers as stored; the engine parses them into domain types.
use autodev_domain::{RunState, TaskState};

/// What is needed to create a run.
#[derive(Clone, Debug)]
pub struct NewRun {
    pub id: String,
    pub short_id: String,
    pub title: String,
    pub spec: String,
    pub repo: String,
    pub base_branch: String,
    pub base_commit: String,
    pub branch: String,
    /// JSON of the engine's run settings.
    pub settings: String,
    /// The project whose workers pick the run up; `None` for `autodev run`, whose own
    /// process drives it.
    pub project_id: Option<String>,
    /// What started the run, e.g. `github:owner/repo#12`; `None` for the CLI and the API.
    pub origin: Option<String>,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct RunRow {
    pub id: String,
    pub short_id: String,
    pub title: String,
    pub spec: String,
    pub repo: String,
    pub base_branch: String,
    pub base_commit: String,
    pub branch: String,
    pub state: String,
    pub reason: Option<String>,
    pub settings: String,
    pub plan: Option<String>,
    pub repair_round: i64,
    pub test_passed: Option<bool>,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_micros: i64,
    pub lease_owner: Option<String>,
    pub lease_until: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub finished_at: Option<i64>,
    pub project_id: Option<String>,
    pub origin: Option<String>,
}

impl RunRow {
    /// The state; a value no version of Autodev writes reads as `failed`.
    pub fn run_state(&self) -> RunState {
        self.state.parse().unwrap_or(RunState::Failed)
    }
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct TaskRow {
    pub run_id: String,
    pub task_key: String,
    pub position: i64,
    pub title: String,
    pub description: String,
    pub depends_on: String,
    pub acceptance: String,
    pub state: String,
    pub reason: Option<String>,
    pub summary: Option<String>,
    pub commit_sha: Option<String>,
    pub updated_at: i64,
}

impl TaskRow {
    pub fn task_state(&self) -> TaskState {
        self.state.parse().unwrap_or(TaskState::Failed)
    }

    pub fn deps(&self) -> Vec<String> {
        serde_json::from_str(&self.depends_on).unwrap_or_default()
    }

    pub fn acceptance_list(&self) -> Vec<String> {
        serde_json::from_str(&self.acceptance).unwrap_or_default()
    }
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct StoredModelCall {
    pub turn: i64,
    pub provider: String,
    pub model: String,
    pub response: String,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_micros: i64,
    pub latency_ms: i64,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct StoredToolCall {
    pub turn: i64,
    pub idx: i64,
    pub call_id: String,
    pub name: String,
    pub arguments: String,
    pub status: String,
    pub result: Option<String>,
    pub is_error: bool,
}

/// A model reply to persist (see `Store::record_model_call`).
#[derive(Clone, Copy, Debug)]
pub struct ModelCallRecord<'a> {
    pub run_id: &'a str,
    pub conversation: &'a str,
    pub turn: u32,
    pub provider: &'a str,
    pub model: &'a str,
    pub response_json: &'a str,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_micros: i64,
    pub latency_ms: u64,
}

/// A tool call about to run.
#[derive(Clone, Copy, Debug)]
pub struct ToolStart<'a> {
    pub idx: u32,
    pub call_id: &'a str,
    pub name: &'a str,
    pub arguments: &'a str,
    /// What the display shows: the path, command or pattern.
    pub target: &'a str,
}

/// An API key as stored: never the key itself, only its keyed hash and a display prefix.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct KeyRow {
    pub id: String,
    pub name: String,
    pub role: String,
    pub prefix: String,
    pub hash: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// A project: a repository with its settings.
#[derive(Clone, Debug, sqlx::FromRow, serde::Serialize)]
pub struct ProjectRow {
    pub id: String,
    pub name: String,
    /// A local path or a clone URL.
    pub repository: String,
    pub base_branch: Option<String>,
    pub test_command: Option<String>,
    /// JSON object of further settings.
    pub settings: String,
    pub created_at: i64,
    pub updated_at: i64,
}
