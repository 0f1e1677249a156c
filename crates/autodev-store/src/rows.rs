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

impl NewRun {
    /// The row `Store::insert_run` stored, from its creation event's time: no read needed.
    pub fn into_row(self, created_at: i64) -> RunRow {
        RunRow {
            id: self.id,
            short_id: self.short_id,
            title: self.title,
            spec: self.spec,
            repo: self.repo,
            base_branch: self.base_branch,
            base_commit: self.base_commit,
            branch: self.branch,
            state: RunState::Queued.as_str().to_string(),
            reason: None,
            settings: self.settings,
            plan: None,
            repair_round: 0,
            test_passed: None,
            input_tokens: 0,
            output_tokens: 0,
            cost_micros: 0,
            lease_owner: None,
            lease_until: 0,
            created_at,
            updated_at: created_at,
            finished_at: None,
            project_id: self.project_id,
            origin: self.origin,
            evidence: None,
        }
    }
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
    /// What the run's tests prove (`proven`, `tests pass but prove nothing`, `no tests`), once verified.
    pub evidence: Option<String>,
}

/// The columns of a run a listing shows, borrowed: from a stored row, or straight from the
/// database's row buffer while a page is read (no string copied).
#[derive(Clone, Copy, Debug)]
pub struct RunRef<'a> {
    pub id: &'a str,
    pub short_id: &'a str,
    pub title: &'a str,
    pub state: &'a str,
    pub reason: Option<&'a str>,
    pub repo: &'a str,
    pub base_branch: &'a str,
    pub branch: &'a str,
    pub project_id: Option<&'a str>,
    pub origin: Option<&'a str>,
    pub evidence: Option<&'a str>,
    pub test_passed: Option<bool>,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_micros: i64,
    pub created_at: i64,
    pub finished_at: Option<i64>,
}

impl<'a> RunRef<'a> {
    /// From a row of `run_list_select!` (RunRow's column order), borrowing its text.
    pub(crate) fn from_lite(r: &'a rusqlite::Row<'a>) -> rusqlite::Result<Self> {
        let text = |i: usize| -> rusqlite::Result<&'a str> {
            r.get_ref(i)?
                .as_str()
                .map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e)))
        };
        let opt = |i: usize| -> rusqlite::Result<Option<&'a str>> {
            r.get_ref(i)?
                .as_str_or_null()
                .map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e)))
        };
        Ok(Self {
            id: text(0)?,
            short_id: text(1)?,
            title: text(2)?,
            repo: text(4)?,
            base_branch: text(5)?,
            branch: text(7)?,
            state: text(8)?,
            reason: opt(9)?,
            test_passed: r.get(13)?,
            input_tokens: r.get(14)?,
            output_tokens: r.get(15)?,
            cost_micros: r.get(16)?,
            created_at: r.get(19)?,
            finished_at: r.get(21)?,
            project_id: opt(22)?,
            origin: opt(23)?,
            evidence: opt(24)?,
        })
    }
}

impl RunRow {
    pub fn as_ref(&self) -> RunRef<'_> {
        RunRef {
            id: &self.id,
            short_id: &self.short_id,
            title: &self.title,
            state: &self.state,
            reason: self.reason.as_deref(),
            repo: &self.repo,
            base_branch: &self.base_branch,
            branch: &self.branch,
            project_id: self.project_id.as_deref(),
            origin: self.origin.as_deref(),
            evidence: self.evidence.as_deref(),
            test_passed: self.test_passed,
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            cost_micros: self.cost_micros,
            created_at: self.created_at,
            finished_at: self.finished_at,
        }
    }

    /// The state; a value no version of Autodev writes reads as `failed`.
    pub fn run_state(&self) -> RunState {
        self.state.parse().unwrap_or(RunState::Failed)
    }

    /// The settings the run was created with, parsed. Unreadable settings (a damaged row)
    /// are an error naming the run: nothing should drive a run on guessed settings.
    pub fn settings(&self) -> Result<autodev_domain::RunSettings, crate::StoreError> {
        serde_json::from_str(&self.settings).map_err(|e| {
            crate::StoreError::Invalid(format!("the stored settings of run {} are unreadable: {e}", self.short_id))
        })
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
    /// The reservation this call held (see [`crate::Store::reserve_cost`]), released with it.
    pub reserved_micros: i64,
}

/// What recording a model reply did.
#[derive(Debug)]
pub enum Recorded {
    /// The reply is stored, with these events.
    New(Vec<autodev_domain::Event>),
    /// The turn already had a recorded reply (another driver's, which raced this one): nothing
    /// was written; continue from that reply, stored as this JSON.
    Already { response_json: String },
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
    /// The ids of the projects a scoped key sees, comma-separated; `None`: every project.
    pub projects: Option<String>,
}

impl KeyRow {
    /// The project ids a scoped key is limited to; `None` for an unscoped key.
    pub fn scope(&self) -> Option<Vec<&str>> {
        self.projects.as_deref().map(|p| p.split(',').filter(|s| !s.is_empty()).collect())
    }

    /// Whether this key sees a run or a question of `project_id` (`None`: a run made with
    /// `autodev run`, seen by unscoped keys only).
    pub fn sees(&self, project_id: Option<&str>) -> bool {
        match self.scope() {
            None => true,
            Some(ids) => project_id.is_some_and(|p| ids.contains(&p)),
        }
    }
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

impl ProjectRow {
    /// The project's settings, parsed. They were checked when they were stored; a row that no
    /// longer parses (written by a newer Autodev) reads as no settings.
    pub fn settings(&self) -> autodev_domain::ProjectSettings {
        serde_json::from_str(&self.settings).unwrap_or_default()
    }
}

/// One stored event, before its JSON is parsed.
#[derive(Clone, Debug, sqlx::FromRow)]
pub(crate) struct EventRow {
    pub seq: i64,
    pub at_ms: i64,
    pub kind: String,
    pub data: String,
}

/// A single text column.
#[derive(Clone, Debug, sqlx::FromRow)]
pub(crate) struct TextRow {
    pub value: String,
}

use crate::tx::Record;

impl Record for RunRow {
    fn from_lite(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: r.get(0)?,
            short_id: r.get(1)?,
            title: r.get(2)?,
            spec: r.get(3)?,
            repo: r.get(4)?,
            base_branch: r.get(5)?,
            base_commit: r.get(6)?,
            branch: r.get(7)?,
            state: r.get(8)?,
            reason: r.get(9)?,
            settings: r.get(10)?,
            plan: r.get(11)?,
            repair_round: r.get(12)?,
            test_passed: r.get(13)?,
            input_tokens: r.get(14)?,
            output_tokens: r.get(15)?,
            cost_micros: r.get(16)?,
            lease_owner: r.get(17)?,
            lease_until: r.get(18)?,
            created_at: r.get(19)?,
            updated_at: r.get(20)?,
            finished_at: r.get(21)?,
            project_id: r.get(22)?,
            origin: r.get(23)?,
            evidence: r.get(24)?,
        })
    }
}

impl Record for TaskRow {
    fn from_lite(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            run_id: r.get(0)?,
            task_key: r.get(1)?,
            position: r.get(2)?,
            title: r.get(3)?,
            description: r.get(4)?,
            depends_on: r.get(5)?,
            acceptance: r.get(6)?,
            state: r.get(7)?,
            reason: r.get(8)?,
            summary: r.get(9)?,
            commit_sha: r.get(10)?,
            updated_at: r.get(11)?,
        })
    }
}

impl Record for KeyRow {
    fn from_lite(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: r.get(0)?,
            name: r.get(1)?,
            role: r.get(2)?,
            prefix: r.get(3)?,
            hash: r.get(4)?,
            created_at: r.get(5)?,
            last_used_at: r.get(6)?,
            revoked_at: r.get(7)?,
            projects: r.get(8)?,
        })
    }
}

impl Record for ProjectRow {
    fn from_lite(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: r.get(0)?,
            name: r.get(1)?,
            repository: r.get(2)?,
            base_branch: r.get(3)?,
            test_command: r.get(4)?,
            settings: r.get(5)?,
            created_at: r.get(6)?,
            updated_at: r.get(7)?,
        })
    }
}

impl Record for EventRow {
    fn from_lite(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self { seq: r.get(0)?, at_ms: r.get(1)?, kind: r.get(2)?, data: r.get(3)? })
    }
}

impl Record for TextRow {
    fn from_lite(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self { value: r.get(0)? })
    }
}

/// A request to record in the audit log (who, what, when: the time is the write's).
#[derive(Clone, Debug)]
pub struct AuditEntry {
    pub key_id: Option<String>,
    pub key_name: Option<String>,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub detail: Option<String>,
}

impl AuditEntry {
    pub fn new(key: Option<&KeyRow>, method: &str, path: &str, status: u16, detail: Option<&str>) -> Self {
        Self {
            key_id: key.map(|k| k.id.clone()),
            key_name: key.map(|k| k.name.clone()),
            method: method.to_string(),
            path: path.to_string(),
            status,
            detail: detail.map(str::to_string),
        }
    }
}
