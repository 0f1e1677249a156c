//! `autodev eval` on the bundled suite (eval/suite.jsonl): its reference solutions resolve
//! every instance (the suite is sound), and runs of a scripted model are scored by the hidden
//! tests the agent never saw.
use std::path::{Path, PathBuf};

use autodev_testkit::{Script, call, finish, read, write};
use serde_json::{Value, json};

use super::{autodev, output};

fn suite() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../eval/suite.jsonl")
}

fn instance(id: &str) -> Value {
    let text = std::fs::read_to_string(suite()).unwrap();
    text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).find(|v| v["instance_id"] == id).unwrap()
}

#[test]
fn the_bundled_suite_is_what_its_builder_makes() {
    let out = std::process::Command::new(autodev_testkit::require_program("python3", "python3"))
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../eval/build.py"))
        .arg("--check")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

/// Every instance: FAIL_TO_PASS fails on the base with the hidden tests, and FAIL_TO_PASS and
/// PASS_TO_PASS pass with the reference solution, in all four languages.
#[test]
fn reference_solutions_resolve_every_instance_of_the_bundled_suite() {
    for (program, package) in [("go", "golang-go"), ("tsc", "node-typescript"), ("node", "nodejs"), ("cargo", "cargo")]
    {
        autodev_testkit::require_program(program, package);
    }
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = output(
        autodev(&dir.path().join("home"))
            .arg("eval")
            .arg(suite())
            .args(["--gold", "--jobs", "2", "--json", "--out"])
            .arg(dir.path().join("out")),
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let unresolved: Vec<&Value> =
        report["results"].as_array().unwrap().iter().filter(|r| r["resolved"] != true).collect();
    assert!(unresolved.is_empty(), "{unresolved:#?}");
    assert_eq!(report["instances"], 20);
    for lang in ["python", "rust", "typescript", "go"] {
        assert_eq!(report["by_language"][lang], json!([5, 5]), "{lang}");
    }
    assert!(dir.path().join("out/report.md").is_file());
}

/// A run of the scripted model on one instance, with its own model server: the report.
fn eval_with(id: &str, script: &Script, extra: &[&str]) -> (i32, Value, String) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(script.serve(std::time::Duration::ZERO));
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = output(
        autodev(&dir.path().join("home"))
            .arg("eval")
            .arg(suite())
            .args(["--instance", id, "--json", "--out"])
            .arg(dir.path().join("out"))
            .args(extra)
            .env("AUTODEV_MODEL", "gpt-4.1-mini")
            .env("OPENAI_BASE_URL", format!("{}/v1", server.uri())),
    );
    let report = serde_json::from_str(&stdout).unwrap_or_else(|_| panic!("{stdout}{stderr}"));
    (code, report, stderr)
}

fn plan(script: &Script) {
    script.plan(json!([{"id": "t1", "title": "Fix it", "description": "", "depends_on": [], "acceptance": []}]));
}

#[test]
fn a_run_is_scored_by_the_hidden_tests_it_never_saw() {
    // Resolved: the model writes the reference solution's file.
    let id = "py-wordcount-whitespace";
    let script = Script::default();
    plan(&script);
    let fixed = "def count_words(text):\n    \"\"\"The number of words in text.\"\"\"\n    return len(text.split())\n";
    script.on("task:t1", 0, vec![read("wordcount/core.py"), write("wordcount/core.py", fixed)]).on(
        "task:t1",
        1,
        vec![finish("split on any whitespace")],
    );
    let (code, report, stderr) = eval_with(id, &script, &[]);
    assert_eq!(code, 0, "{report:#}{stderr}");
    let r = &report["results"][0];
    assert_eq!(
        (r["resolved"].clone(), r["fail_to_pass"].clone(), r["pass_to_pass"].clone()),
        (json!(true), json!(true), json!(true)),
        "{r:#}"
    );
    assert_eq!(r["run"], "succeeded");
    assert_eq!(r["model_calls"], 3, "planner, two coder turns");
    assert!(r["input_tokens"].as_i64().unwrap() > 0);
    // The agent never saw the hidden tests: no request carried them.
    let seen = script.requests.lock().unwrap().iter().map(|r| r.to_string()).collect::<String>();
    assert!(!seen.contains("test_hidden") && !seen.contains("WhitespaceTest"), "the hidden tests leaked");
    assert_eq!(report["model"], "gpt-4.1-mini");

    // Not resolved: the run succeeds on the visible tests, but the fix is half done (sorted,
    // touching intervals still apart), and the hidden FAIL_TO_PASS test says so.
    let id = "py-merge-intervals";
    let script = Script::default();
    plan(&script);
    let half =
        instance(id)["repo_files"]["spans.py"].as_str().unwrap().replace("in intervals:", "in sorted(intervals):");
    script
        .on("task:t1", 0, vec![read("spans.py"), write("spans.py", &half)])
        .on("task:t1", 1, vec![call("run", json!({"command": "python3 -m unittest discover -s tests -t . -q"}))])
        .on("task:t1", 2, vec![finish("sorted the input")]);
    let (code, report, stderr) = eval_with(id, &script, &["--min-resolved", "0.5"]);
    assert_eq!(code, 1, "below --min-resolved: {report:#}{stderr}");
    let r = &report["results"][0];
    assert_eq!((r["resolved"].clone(), r["fail_to_pass"].clone()), (json!(false), json!(false)), "{r:#}");
    assert_eq!(r["run"], "succeeded");
    assert!(r["test_output"].as_str().unwrap().contains("test_unsorted_and_touching"), "{r:#}");
    assert_eq!(report["resolved_share"], 0.0);
}

#[test]
fn a_bad_suite_is_refused_naming_the_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"instance_id\": \"a\", \"problem_statement\": \"x\", \"FAIL_TO_PASS\": \"[]\", \"repo\": \"o/n\"}\n{\"instance_id\": 3}\n",
    )
    .unwrap();
    let (code, _, stderr) = output(autodev(&dir.path().join("home")).arg("eval").arg(&bad).arg("--gold"));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("line 1: a: FAIL_TO_PASS is empty"), "{stderr}");
    assert!(stderr.contains("line 2:") && stderr.contains("instance_id"), "{stderr}");
    let (code, _, stderr) =
        output(autodev(&dir.path().join("home")).arg("eval").arg(suite()).args(["--gold", "--instance", "nope"]));
    assert_eq!(code, 2);
    assert!(stderr.contains("--instance: no instance nope"), "{stderr}");
}
