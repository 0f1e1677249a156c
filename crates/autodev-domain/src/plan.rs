//! The planner's answer: a summary and a DAG of tasks, validated (acyclic, known dependencies, acceptance criteria).
//! A plan with duplicate ids, unknown dependencies or a cycle is refused with a reason the
//! planner model can act on.
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// The most tasks one plan may hold; more is a sign the planner is splitting too finely.
pub const MAX_TASKS: usize = 50;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedTask {
    pub id: String,
    pub title: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub depends_on: Vec<String>,
    #[serde(default)]
    pub acceptance: Vec<String>,
}

/// A validated plan: ids unique and well-formed, every dependency known, no cycle.
/// Tasks are kept in a topological order (stable with respect to the planner's order).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub summary: String,
    pub tasks: Vec<PlannedTask>,
}

/// Why a plan was refused. The message is sent back to the planner as a tool error.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("arguments are not valid JSON for submit_plan: {0}")]
    Json(String),
    #[error("the plan has no tasks: give at least one task")]
    NoTasks,
    #[error("the plan has {0} tasks; at most {MAX_TASKS} are allowed: merge small tasks")]
    TooManyTasks(usize),
    #[error("task id `{0}` is invalid: use 1-64 characters from letters, digits, `-`, `_` and `.`")]
    BadId(String),
    #[error("task `{0}` has an empty title")]
    EmptyTitle(String),
    #[error("task id `{0}` is used more than once: give every task its own id")]
    DuplicateId(String),
    #[error("task `{task}` depends on `{dep}`, which is not a task in this plan")]
    UnknownDependency { task: String, dep: String },
    #[error("task `{0}` depends on itself")]
    SelfDependency(String),
    #[error("the dependencies form a cycle: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
}

impl Plan {
    /// Parses and validates the JSON arguments of a `submit_plan` call.
    pub fn from_arguments(arguments: &str) -> Result<Self, PlanError> {
        let raw: Plan = serde_json::from_str(arguments).map_err(|e| PlanError::Json(e.to_string()))?;
        Self::validate(raw)
    }

    pub fn validate(mut plan: Plan) -> Result<Self, PlanError> {
        if plan.tasks.is_empty() {
            return Err(PlanError::NoTasks);
        }
        if plan.tasks.len() > MAX_TASKS {
            return Err(PlanError::TooManyTasks(plan.tasks.len()));
        }
        let mut seen = BTreeSet::new();
        for t in &mut plan.tasks {
            t.id = t.id.trim().to_string();
            t.title = t.title.trim().to_string();
            let ok = !t.id.is_empty()
                && t.id.len() <= 64
                && t.id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            if !ok {
                return Err(PlanError::BadId(t.id.clone()));
            }
            if t.title.is_empty() {
                return Err(PlanError::EmptyTitle(t.id.clone()));
            }
            if !seen.insert(t.id.clone()) {
                return Err(PlanError::DuplicateId(t.id.clone()));
            }
        }
        for t in &mut plan.tasks {
            let mut deps = Vec::new();
            for d in &t.depends_on {
                let d = d.trim().to_string();
                if d == t.id {
                    return Err(PlanError::SelfDependency(d));
                }
                if !seen.contains(&d) {
                    return Err(PlanError::UnknownDependency { task: t.id.clone(), dep: d });
                }
                if !deps.contains(&d) {
                    deps.push(d);
                }
            }
            t.depends_on = deps;
        }
        plan.tasks = topological_order(&plan.tasks)?;
        Ok(plan)
    }

    pub fn task(&self, id: &str) -> Option<&PlannedTask> {
        self.tasks.iter().find(|t| t.id == id)
    }
}

/// Kahn's algorithm, always taking the earliest-listed ready task so the order is stable.
fn topological_order(tasks: &[PlannedTask]) -> Result<Vec<PlannedTask>, PlanError> {
    let mut remaining: BTreeMap<usize, BTreeSet<&str>> =
        tasks.iter().enumerate().map(|(i, t)| (i, t.depends_on.iter().map(String::as_str).collect())).collect();
    let mut order = Vec::with_capacity(tasks.len());
    while !remaining.is_empty() {
        let next = remaining.iter().find(|(_, deps)| deps.is_empty()).map(|(i, _)| *i);
        let Some(i) = next else {
            return Err(PlanError::Cycle(find_cycle(tasks, &remaining)));
        };
        remaining.remove(&i);
        let id = tasks[i].id.as_str();
        for deps in remaining.values_mut() {
            deps.remove(id);
        }
        order.push(tasks[i].clone());
    }
    Ok(order)
}

/// Names one cycle among the tasks left over by Kahn's algorithm, for the error message.
fn find_cycle(tasks: &[PlannedTask], remaining: &BTreeMap<usize, BTreeSet<&str>>) -> Vec<String> {
    let Some((&start, _)) = remaining.iter().next() else {
        return Vec::new();
    };
    let by_id: BTreeMap<&str, usize> = tasks.iter().enumerate().map(|(i, t)| (t.id.as_str(), i)).collect();
    let mut path: Vec<usize> = vec![start];
    let mut current = start;
    loop {
        let dep = remaining.get(&current).and_then(|deps| deps.iter().next()).and_then(|d| by_id.get(d).copied());
        let Some(next) = dep else {
            return path.iter().map(|i| tasks[*i].id.clone()).collect();
        };
        if let Some(pos) = path.iter().position(|p| *p == next) {
            let mut cycle: Vec<String> = path[pos..].iter().map(|i| tasks[*i].id.clone()).collect();
            cycle.push(tasks[next].id.clone());
            return cycle;
        }
        path.push(next);
        current = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(tasks: serde_json::Value) -> String {
        json!({"summary": "s", "tasks": tasks}).to_string()
    }

    #[test]
    fn valid_plan_is_ordered_by_dependencies() {
        let plan = Plan::from_arguments(&args(json!([
            {"id": "b", "title": "B", "depends_on": ["a"]},
            {"id": "a", "title": "A"},
            {"id": "c", "title": "C"}
        ])))
        .unwrap();
        let ids: Vec<_> = plan.tasks.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
    }

    #[test]
    fn cycle_is_refused_with_the_cycle_named() {
        let err = Plan::from_arguments(&args(json!([
            {"id": "a", "title": "A", "depends_on": ["c"]},
            {"id": "b", "title": "B", "depends_on": ["a"]},
            {"id": "c", "title": "C", "depends_on": ["b"]},
            {"id": "d", "title": "D"}
        ])))
        .unwrap_err();
        let PlanError::Cycle(cycle) = &err else { panic!("{err}") };
        assert_eq!(cycle.first(), cycle.last());
        assert_eq!(cycle.len(), 4);
        assert!(err.to_string().contains("cycle"));
    }

    #[test]
    fn bad_plans_are_refused_with_reasons() {
        let cases = [
            (json!([]), PlanError::NoTasks),
            (json!([{"id": "a", "title": "A"}, {"id": "a", "title": "A2"}]), PlanError::DuplicateId("a".into())),
            (
                json!([{"id": "a", "title": "A", "depends_on": ["zz"]}]),
                PlanError::UnknownDependency { task: "a".into(), dep: "zz".into() },
            ),
            (json!([{"id": "a", "title": "A", "depends_on": ["a"]}]), PlanError::SelfDependency("a".into())),
            (json!([{"id": "a b", "title": "A"}]), PlanError::BadId("a b".into())),
            (json!([{"id": "a", "title": " "}]), PlanError::EmptyTitle("a".into())),
        ];
        for (tasks, want) in cases {
            assert_eq!(Plan::from_arguments(&args(tasks)).unwrap_err(), want);
        }
        assert!(matches!(Plan::from_arguments("{not json"), Err(PlanError::Json(_))));
        assert!(matches!(Plan::from_arguments("{\"tasks\": []}"), Err(PlanError::Json(_))));
    }
}
