//! The prompts. Each conversation's opening messages are built here once and stored, so a
//! resumed run continues from exactly what the model saw.
use autodev_domain::{Message, Plan, PlannedTask, ToolSpec};
use serde_json::json;

pub const NUDGE: &str =
    "Continue by calling a tool. When the work is complete and checked, call `finish` with a short summary.";
pub const PLANNER_NUDGE: &str = "Answer by calling `submit_plan` with the plan.";
/// Added to a result when the model repeated its previous call exactly.
pub const REPEATED_CALL: &str = "(You made exactly this call in your previous turn and have its result above; \
     calling it again gives the same. Do not repeat it: take the next step of your task with another tool.)";

/// A task id as the plan's validation accepts it, in the schema too: a server that constrains
/// replies (`tool_calls = "schema"`) then cannot produce another (the 1.5B model wrote
/// `textkit/slugify` three times).
pub const TASK_ID_PATTERN: &str = "^[A-Za-z0-9._-]{1,64}$";

/// The planner's only tool besides the read-only workspace tools.
pub fn submit_plan_spec() -> ToolSpec {
    ToolSpec {
        name: "submit_plan".into(),
        description: "Submit the plan: a summary and a list of tasks forming a DAG through depends_on.".into(),
        parameters: json!({
            "type": "object",
            "properties": {
                "summary": {"type": "string", "description": "What the change does, in two or three sentences."},
                "tasks": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "id": {"type": "string", "pattern": TASK_ID_PATTERN, "description": "Short unique id such as t1."},
                            "title": {"type": "string", "description": "Imperative one-line title; becomes the commit message."},
                            "description": {"type": "string", "description": "What to change and where."},
                            "depends_on": {"type": "array", "items": {"type": "string"}, "description": "Ids of tasks that must be done first."},
                            "acceptance": {"type": "array", "items": {"type": "string"}, "description": "Checkable acceptance criteria."}
                        },
                        "required": ["id", "title", "description", "depends_on", "acceptance"]
                    }
                }
            },
            "required": ["summary", "tasks"],
            "additionalProperties": false
        }),
    }
}

/// The planner's opening; `compact` for a small context window (the same instructions in
/// about a third of the words).
pub fn planner(spec: &str, repo_view: &str, test_command: &str, compact: bool) -> Vec<Message> {
    let system = if compact {
        format!(
            "You plan code changes for Autodev. Split the spec into one to five tasks (a DAG through \
             depends_on); coding agents do them in parallel. Each task: an id, an imperative title, what to \
             change and where, acceptance criteria, and the test to add that fails without it. Explore with \
             list_files, read_file and search, then call submit_plan. Tests run with: `{test_command}`."
        )
    } else {
        planner_system(test_command)
    };
    vec![Message::system(system), Message::user(format!("# Spec\n\n{spec}\n\n# Repository\n\n{repo_view}"))]
}

fn planner_system(test_command: &str) -> String {
    format!(
        "You are the planner of Autodev, which turns a spec into a tested change on a git branch.\n\
             Break the spec into a small DAG of tasks that coding agents will carry out, each in its own \
             worktree, in parallel where dependencies allow. Prefer few, coherent tasks (one to five); \
             make a task depend on another only when it needs that task's changes. Tasks that edit the \
             same lines should not run in parallel. Each task gets checkable acceptance criteria, and \
             each acceptance criterion needs a test that fails without the task's change and passes with \
             it: say in the task's description which test to add.\n\
             You may explore the repository with list_files, read_file and search. Then call submit_plan.\n\
             The project's tests run with: `{test_command}`."
    )
}

/// What the planner is told when a reviewer rejected its plan with a comment.
pub fn plan_revision(round: u32, rejected: &str, comment: &str) -> String {
    format!(
        "# A reviewer rejected the previous plan\n\nThis is revision {round} of the plan. The plan was:\n\n{rejected}\nThe reviewer's comment:\n\n> {}\n\n\
         Revise the plan to address the comment, then call submit_plan with the whole revised plan.",
        comment.lines().collect::<Vec<_>>().join("\n> ")
    )
}

fn plan_overview(plan: &Plan) -> String {
    let mut out = format!("{}\n", plan.summary);
    for t in &plan.tasks {
        let deps =
            if t.depends_on.is_empty() { String::new() } else { format!(" (after {})", t.depends_on.join(", ")) };
        out.push_str(&format!("- {}: {}{}\n", t.id, t.title, deps));
    }
    out
}

/// How a coder's prompt is written: compact for a small window, and the steps it has.
#[derive(Clone, Copy, Debug)]
pub struct Style {
    pub compact: bool,
    /// Model turns the agent may take (its step budget, said in the prompt).
    pub steps: u32,
}

/// The coder's system prompt: a workflow (locate, reproduce, fix, test, review, finish), the
/// step budget, and the sandbox's rules once. The compact form says the same in fewer words.
fn coder_system(test_command: &str, style: Style) -> String {
    let steps = style.steps;
    if style.compact {
        return format!(
            "You are a software engineer working with tools in a git worktree. Work in steps: 1. find the code \
             (search_code, search, read_file); 2. reproduce: add or run a test that fails without the change; \
             3. make the smallest fix (edit_file; write_file only for new files); 4. run the related tests, then \
             `{test_command}`, and fix what fails; 5. call finish with a short summary. You have {steps} steps. \
             Each run command is a fresh sandboxed shell: no network, no git; do not commit."
        );
    }
    format!(
        "You are a careful software engineer working through tools in a git worktree of the project.\n\n\
         Work in this order:\n\
         1. Locate: find the code the task concerns (search_code for ideas, search for exact text, read_file).\n\
         2. Reproduce: write or run a test that shows the problem or the missing feature, and see it fail. \
            The engine checks that the change comes with a test that fails without it.\n\
         3. Fix: make the smallest change that meets the acceptance criteria, in the project's style. Use \
            edit_file or insert_lines to change existing files (read them first; undo_edit takes back a bad \
            edit) and write_file for new files.\n\
         4. Test: run the tests closest to the change, then the project's tests (`{test_command}`); read the \
            first error, fix it, and run them again until they pass.\n\
         5. Review: read over what you changed; remove debugging output and stray files.\n\
         6. Finish: call finish with a short summary of what changed and how it was tested.\n\n\
         You have {steps} steps (model turns); keep going until the task is done, and do not stop to ask: \
         nobody answers. When few steps are left you will be told; finish with what you have rather than \
         run out.\n\
         Each `run` is a fresh shell in the worktree: cd and variables do not carry over; no network; \
         writes only inside the worktree and /tmp; nothing it starts survives it; git is not available. \
         Do not commit: Autodev commits your work."
    )
}

/// The note added to a tool result when a fifth and a twentieth of a coder's steps are left
/// (`turn` is the one just taken, 0-based).
pub fn steps_left(turn: u32, steps: u32) -> Option<String> {
    let left = steps.saturating_sub(turn + 1);
    if steps >= 10 && left == steps / 5 {
        return Some(format!("[{left} of your {steps} steps are left: get the tests passing, then call finish.]"));
    }
    if steps >= 20 && left == steps / 20 {
        let noun = if left == 1 { "step is" } else { "steps are" };
        return Some(format!(
            "[Only {left} {noun} left: call finish now with what you have; the engine runs the tests on it.]"
        ));
    }
    None
}

pub fn task(spec: &str, plan: &Plan, task: &PlannedTask, test_command: &str, style: Style) -> Vec<Message> {
    let acceptance = if task.acceptance.is_empty() {
        "- (none given: the spec and the tests decide)".to_string()
    } else {
        task.acceptance.iter().map(|a| format!("- {a}")).collect::<Vec<_>>().join("\n")
    };
    vec![
        Message::system(coder_system(test_command, style)),
        Message::user(format!(
            "# Spec\n\n{spec}\n\n# Plan\n\n{}\n# Your task: {} — {}\n\n{}\n\nAcceptance criteria:\n{acceptance}\n\n\
             Other tasks of the plan are done by other agents; stay within yours.",
            plan_overview(plan),
            task.id,
            task.title,
            task.description
        )),
    ]
}

pub fn repair(
    spec: &str,
    plan: Option<&Plan>,
    round: u32,
    test_command: &str,
    failure: &str,
    style: Style,
) -> Vec<Message> {
    repair_round(
        spec,
        plan,
        test_command,
        style,
        format!(
            "Failing tests (repair round {round})\n\n\
             The change for this spec is in the worktree, but `{test_command}` fails:\n\n```\n{failure}\n```\n\n\
             Find the cause and fix it so the tests pass, without weakening or deleting tests that check \
             the spec. Then call finish."
        ),
    )
}

/// A repair round for tests that pass but prove nothing: a test that fails without the change
/// is wanted.
pub fn evidence_repair(
    spec: &str,
    plan: Option<&Plan>,
    round: u32,
    test_command: &str,
    finding: &str,
    style: Style,
) -> Vec<Message> {
    repair_round(
        spec,
        plan,
        test_command,
        style,
        format!(
            "Missing evidence (repair round {round})\n\n\
             The change for this spec is in the worktree and `{test_command}` passes, but nothing shows that \
             the tests check the spec: {finding}\n\n\
             Add tests that check what the spec asks for: each must fail on the code before this change and \
             pass with it. Keep the change itself; do not weaken existing tests. Run `{test_command}`, then \
             call finish."
        ),
    )
}

/// The opening of a repair round: the spec, the plan done, and what the round is for.
fn repair_round(spec: &str, plan: Option<&Plan>, test_command: &str, style: Style, section: String) -> Vec<Message> {
    let plan = plan.map(plan_overview).unwrap_or_default();
    vec![
        Message::system(coder_system(test_command, style)),
        Message::user(format!("# Spec\n\n{spec}\n\n# Plan (done)\n\n{plan}\n# {section}")),
    ]
}

pub fn merge(task: &PlannedTask, files: &[String], test_command: &str, style: Style) -> Vec<Message> {
    vec![
        Message::system(coder_system(test_command, style)),
        Message::user(format!(
            "# Merge conflict\n\nMerging task {} — {} into the run branch left conflict markers \
             (<<<<<<<, =======, >>>>>>>) in:\n{}\n\nResolve every conflict so both sides' intent is kept, \
             remove all markers, check that the project still builds and its tests pass, then call finish.",
            task.id,
            task.title,
            files.iter().map(|f| format!("- {f}")).collect::<Vec<_>>().join("\n")
        )),
    ]
}

/// Tool definitions for a small window: each description cut to its first sentence, and the
/// parameters' own descriptions dropped (their names and types stay).
pub fn compact_tools(tools: Vec<ToolSpec>) -> Vec<ToolSpec> {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                if map.get("type").and_then(|t| t.as_str()).is_some() {
                    map.remove("description");
                }
                map.values_mut().for_each(strip);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    tools
        .into_iter()
        .map(|mut t| {
            if let Some(end) = t.description.find(". ") {
                t.description.truncate(end + 1);
            }
            strip(&mut t.parameters);
            t
        })
        .collect()
}

/// The schema a constrained reply follows (`tool_calls = "schema"`): one object naming one of
/// `tools`, with that tool's arguments. Every agent here ends through a tool (`finish`,
/// `submit_plan`), so no plain-text branch is offered.
pub fn reply_schema(tools: &[ToolSpec]) -> serde_json::Value {
    let one = |t: &ToolSpec| {
        json!({
            "type": "object",
            "properties": {"name": {"const": t.name}, "arguments": t.parameters},
            "required": ["name", "arguments"],
            "additionalProperties": false
        })
    };
    json!({"oneOf": tools.iter().map(one).collect::<Vec<_>>()})
}

/// What an agent is told when `auto` turns to constrained replies after a reply without a
/// tool call: the tools in text, and that each reply is now one call.
pub fn schema_switch(tools: &[ToolSpec]) -> String {
    format!(
        "Your reply did not call a tool. From now on answer with exactly one JSON object, a tool call, and \
         nothing else.{}",
        text_tools(tools)
    )
}

/// For models without native tool calls (`tool_calls = "text"`): the tools and how to call
/// them in text, appended to the system prompt.
pub fn text_tools(tools: &[ToolSpec]) -> String {
    let mut out = String::from(
        "\n\n# Calling tools\n\nThis server does not pass tool calls natively. To call a tool, answer with exactly \
         one JSON object and nothing else: {\"name\": \"TOOL\", \"arguments\": {...}}. The result comes back \
         in the next message. The tools:\n",
    );
    for t in tools {
        out.push_str(&format!("\n- `{}`: {} Arguments (JSON schema): {}", t.name, t.description, t.parameters));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_task_id_pattern_in_the_schema_is_the_rule_plans_are_checked_by() {
        let pattern = regex::Regex::new(TASK_ID_PATTERN).unwrap_or_else(|e| panic!("{e}"));
        for id in ["t1", "slugify", "a.b-c_d", "textkit/slugify", "", "with space", &"x".repeat(65), "é"] {
            let plan = serde_json::json!({"summary": "s", "tasks": [{"id": id, "title": "T", "description": "", "depends_on": [], "acceptance": []}]});
            let accepted = Plan::from_arguments(&plan.to_string()).is_ok();
            assert_eq!(pattern.is_match(id), accepted, "{id:?}");
        }
        let spec = submit_plan_spec();
        assert_eq!(spec.parameters["properties"]["tasks"]["items"]["properties"]["id"]["pattern"], TASK_ID_PATTERN);
    }
}
