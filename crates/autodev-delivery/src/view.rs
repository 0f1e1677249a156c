//! The run as the API and outgoing webhooks show it, written straight from the row.
use autodev_store::{RunRef, RunRow};
use serde::Serialize;
use serde_json::Value;

/// A run as the API shows it (and outgoing webhooks send it).
// Serialised straight from the row (no intermediate `serde_json::Value`: building one per run
// was most of the cost of a page of 50). Its schema in the OpenAPI document is this type's.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Run)]
pub struct RunView<'a> {
    /// UUIDv7.
    id: &'a str,
    /// The last 8 hex digits of the id; accepted wherever an id is.
    short_id: &'a str,
    title: &'a str,
    #[schema(value_type = autodev_domain::RunState)]
    state: &'a str,
    /// Why the run failed or was cancelled.
    #[schema(value_type = Option<String>)]
    reason: Option<std::borrow::Cow<'a, str>>,
    /// The project's repository (a path or a clone URL), or the local path for CLI runs.
    /// Credentials in a clone URL are masked (`https://***@host/…`).
    #[schema(value_type = String)]
    repository: std::borrow::Cow<'a, str>,
    /// Empty until a worker resolves the repository's default branch.
    base_branch: &'a str,
    /// The branch the run delivers, `autodev/<short-id>-<slug>`.
    branch: &'a str,
    project_id: Option<&'a str>,
    /// What started the run: `github:owner/name#12`, `gitlab:group/name#3`, `jira:KEY-7`.
    origin: Option<&'a str>,
    tests_passed: Option<bool>,
    /// What the run's tests prove, once verified: `proven` (they fail on the base commit with
    /// only the run's test changes, and pass on the run branch), `tests pass but prove nothing`
    /// (they pass on the base too) or `no tests` (the run changed no tests).
    #[schema(value_type = Option<String>, pattern = "^(proven|tests pass but prove nothing|no tests)$")]
    evidence: Option<&'a str>,
    /// At `awaiting_approval`, the gate the run waits at: `plan` (approve to execute it) or
    /// `delivery` (tests passed; approve to push the branch and open the pull request).
    #[schema(value_type = Option<String>, pattern = "^(plan|delivery)$")]
    gate: Option<&'static str>,
    usage: UsageView,
    created_at_ms: i64,
    finished_at_ms: Option<i64>,
    #[schema(value_type = RunLinks)]
    links: Links<'a>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Usage)]
struct UsageView {
    input_tokens: i64,
    output_tokens: i64,
    cost_usd: f64,
}

/// A run's links: itself and its event stream (the shape `Links` writes).
#[derive(Serialize, utoipa::ToSchema)]
pub struct RunLinks {
    #[serde(rename = "self")]
    this: String,
    events: String,
}

/// `{"self": "/api/v1/runs/ID", "events": "/api/v1/runs/ID/events"}`, written straight into
/// the output (no string built per link).
struct Links<'a>(&'a str);

impl Serialize for Links<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        struct Path<'a>(&'a str, &'static str);
        impl Serialize for Path<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(&format_args!("/api/v1/runs/{}{}", self.0, self.1))
            }
        }
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry("self", &Path(self.0, ""))?;
        map.serialize_entry("events", &Path(self.0, "/events"))?;
        map.end()
    }
}

impl<'a> From<RunRef<'a>> for RunView<'a> {
    fn from(r: RunRef<'a>) -> Self {
        Self {
            id: r.id,
            short_id: r.short_id,
            title: r.title,
            state: r.state,
            reason: r.reason.map(autodev_domain::mask_url_credentials),
            repository: autodev_domain::mask_url_credentials(r.repo),
            base_branch: r.base_branch,
            branch: r.branch,
            project_id: r.project_id,
            origin: r.origin,
            tests_passed: r.test_passed,
            evidence: r.evidence,
            // The delivery gate is the one after the tests ran (see `autodev_engine::Gate`).
            gate: (r.state == "awaiting_approval").then(|| if r.test_passed.is_some() { "delivery" } else { "plan" }),
            usage: UsageView {
                input_tokens: r.input_tokens,
                output_tokens: r.output_tokens,
                cost_usd: autodev_domain::MicroUsd(r.cost_micros).as_usd(),
            },
            created_at_ms: r.created_at,
            finished_at_ms: r.finished_at,
            links: Links(r.id),
        }
    }
}

pub fn run_json(r: &RunRow) -> Value {
    serde_json::to_value(RunView::from(r.as_ref())).unwrap_or(Value::Null)
}
