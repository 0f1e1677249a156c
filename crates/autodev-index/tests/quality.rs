//! Retrieval quality on real repositories: this workspace's own code (Rust) with 20 questions in
//! plain language whose answers were located by hand (the file, and the definition that
//! answers it), and modules of Python's standard library (below) with 15. Recall@5: the share
//! of questions whose answer is among the first five chunks.
#![allow(clippy::unwrap_used, clippy::print_stdout)]
use std::path::Path;
use std::process::Command;

use autodev_index::{CodeIndex, Embedder, FileStore, vectors};

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git").arg("-C").arg(dir).args(args).output().unwrap();
    assert!(out.status.success(), "git {args:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// (question, file that answers it, name of the definition that answers it).
const QUESTIONS: &[(&str, &str, &str)] = &[
    (
        "how is a model call's worst-case cost reserved against the budgets before it is made",
        "crates/autodev-engine/src/agent.rs",
        "reserve",
    ),
    (
        "where is a run that stopped because of its budget reopened",
        "crates/autodev-store/src/store/budget.rs",
        "Store::reopen_budget_run",
    ),
    ("what opens the circuit breaker of a provider", "crates/autodev-llm/src/guard.rs", "Guard::record"),
    (
        "how does the client switch to a fallback provider when the primary fails",
        "crates/autodev-llm/src/fallback.rs",
        // The switching moved into `fall_back` (issue 27's streaming), called by `complete`.
        "FallbackClient::fall_back|FallbackClient::complete",
    ),
    (
        "parse a tool call that a model wrote as JSON in its text",
        "crates/autodev-engine/src/agent.rs",
        "tool_call_in_text",
    ),
    (
        "which glob protects a path and can an approval allow it",
        "crates/autodev-workspace/src/protect.rs",
        "Protected::protecting",
    ),
    (
        "put back files a command changed in protected paths before committing",
        "crates/autodev-engine/src/phases.rs",
        "commit_guarded",
    ),
    (
        "how are Gemini function calls and thought signatures read from the response",
        "crates/autodev-llm/src/gemini.rs",
        "GeminiClient::absorb",
    ),
    (
        "count input tokens with the tokenizer of OpenAI models",
        "crates/autodev-llm/src/tokens.rs",
        "TokenCounter::input",
    ),
    ("retry after header parsing for rate limited vendors", "crates/autodev-llm/src/http.rs", "retry_after"),
    (
        "sign in to the web UI with an API key and set the session cookie",
        "crates/autodev-server/src/ui/page.rs",
        "login",
    ),
    ("check the CSRF token and origin of a form", "crates/autodev-server/src/ui/page.rs", "check_form"),
    ("draw the plan's task DAG as SVG", "crates/autodev-server/src/ui/svg.rs", "dag"),
    ("verify the GitHub webhook signature of a delivery", "crates/autodev-server/src/webhooks/mod.rs", "signature_ok"),
    ("compact the conversation to fit the context window", "crates/autodev-engine/src/compact.rs", "fit"),
    (
        "a rejected plan goes back to the planner with the reviewer's comment",
        "crates/autodev-store/src/store/gates.rs",
        "Store::return_to_planning",
    ),
    ("hash API keys with the server pepper", "crates/autodev-server/src/auth.rs", "Pepper::hash"),
    (
        "split identifiers on camel case and underscores for search",
        "crates/autodev-index/src/tokens.rs",
        "split_identifier",
    ),
    (
        "claim the next queued run with a lease for a worker",
        "crates/autodev-store/src/store/lease.rs",
        "Store::claim_next_run",
    ),
    ("which calendar month a timestamp falls in for monthly budgets", "crates/autodev-domain/src/money.rs", "month_of"),
];

#[test]
fn recall_at_5_on_this_repository() {
    let ws = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    for f in git(&ws, &["ls-files"]).lines().filter(|f| f.ends_with(".rs") || f.ends_with(".md") || f.ends_with(".sql"))
    {
        let dst = repo.join(f);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(ws.join(f), dst).unwrap();
    }
    git(&repo, &["add", "-A"]);
    git(&repo, &["-c", "user.email=q@q", "-c", "user.name=q", "commit", "-qm", "snapshot"]);
    let recall = recall_at_5("this repository", &repo, tmp.path(), QUESTIONS);
    // 0.80 before issue 27's ranking changes, 0.75 once this session's code had grown around
    // the same questions, 0.90 with the module doc as a field (and in coverage).
    assert!(recall >= 0.85, "recall@5 {recall:.2} is below 0.85");
}

/// A real Python codebase: modules of the interpreter's own standard library (found with
/// `python3`), copied into a repository, with 15 questions whose answers were located by hand
/// (file, and the function, class or `Class.method` that answers).
const PYTHON_MODULES: &[&str] = &[
    "json",
    "logging",
    "email",
    "http",
    "urllib",
    "shutil.py",
    "csv.py",
    "argparse.py",
    "genericpath.py",
    "base64.py",
    "fnmatch.py",
    "textwrap.py",
    "tarfile.py",
    "subprocess.py",
    "pathlib.py",
    "zipfile.py",
    "tempfile.py",
    "datetime.py",
];

const PYTHON_QUESTIONS: &[(&str, &str, &str)] = &[
    ("serialize a python object to a JSON formatted string", "json/__init__.py", "dumps"),
    ("deserialize a JSON document from a string into python objects", "json/__init__.py", "loads"),
    ("copy an entire directory tree recursively", "shutil.py", "copytree"),
    ("delete a directory and everything inside it", "shutil.py", "rmtree"),
    ("find the path of an executable program on PATH", "shutil.py", "which"),
    ("split a URL into scheme, network location, path, query and fragment", "urllib/parse.py", "urlsplit"),
    ("percent-encode special characters of a URL component", "urllib/parse.py", "quote"),
    ("read CSV rows as dictionaries keyed by the header row", "csv.py", "DictReader"),
    (
        "should the log file be rotated because it grew past its maximum size",
        "logging/handlers.py",
        "RotatingFileHandler.shouldRollover",
    ),
    ("send the request and get the HTTP response from the server", "http/client.py", "HTTPConnection.getresponse"),
    ("longest common leading part of a list of paths", "genericpath.py", "commonprefix"),
    ("encode bytes with base64", "base64.py", "b64encode"),
    ("remove common leading whitespace from every line of a text", "textwrap.py", "dedent"),
    ("convert a shell style wildcard pattern to a regular expression", "fnmatch.py", "translate"),
    ("parse the command line arguments into a namespace", "argparse.py", "ArgumentParser.parse_args"),
];

#[test]
fn recall_at_5_on_the_python_standard_library() {
    let out = Command::new(autodev_testkit::require_program("python3", "python3"))
        .args(["-c", "import sysconfig; print(sysconfig.get_paths()['stdlib'])"])
        .output()
        .unwrap();
    let stdlib = std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    let mut lines = 0;
    for m in PYTHON_MODULES {
        let status = Command::new("cp").arg("-r").arg(stdlib.join(m)).arg(repo.join(m)).status().unwrap();
        assert!(status.success(), "{m} not in {}", stdlib.display());
    }
    // Compiled files and test data are not code to search.
    let _ = Command::new("find")
        .arg(&repo)
        .args(["-name", "__pycache__", "-prune", "-exec", "rm", "-rf", "{}", "+"])
        .status();
    for f in git(&repo, &["ls-files", "--others"]).lines() {
        lines += std::fs::read_to_string(repo.join(f)).map(|t| t.lines().count()).unwrap_or(0);
    }
    git(&repo, &["add", "-A"]);
    git(&repo, &["-c", "user.email=q@q", "-c", "user.name=q", "commit", "-qm", "stdlib"]);
    let recall = recall_at_5(&format!("python stdlib ({lines} lines)"), &repo, tmp.path(), PYTHON_QUESTIONS);
    assert!(recall >= 0.85, "recall@5 {recall:.2} is below 0.85");
}

/// A project nobody here wrote: pallets/click (the copy the deploy checkers' venv carries,
/// `.ci/deploy-venv`), with 20 questions located by hand in its source before the ranking was
/// changed: the first five are the misses of issue 27's trial. An answer may be one of
/// several definitions (`A|B`).
const CLICK_QUESTIONS: &[(&str, &str, &str)] = &[
    ("invoke a command in my tests and capture its output", "testing.py", "CliRunner.invoke"),
    ("ask the user a yes/no question", "termui.py", "confirm"),
    ("open a file lazily, or stdin for a dash", "utils.py", "open_file"),
    ("split an option's prefix from its name", "parser.py", "_split_opt"),
    ("where a group looks up a subcommand", "core.py", "Group.get_command|Group.resolve_command"),
    ("prompt the user for input with a default value", "termui.py", "prompt"),
    ("show a progress bar while iterating over items", "termui.py", "progressbar"),
    ("print a message to the terminal, removing colors when it is not a terminal", "utils.py", "echo"),
    ("style text with ANSI colors and bold", "termui.py", "style"),
    ("open the user's editor to edit some text", "termui.py", "edit"),
    ("open a URL or a file in the default application", "termui.py", "launch"),
    ("the configuration folder of an application on each platform", "utils.py", "get_app_dir"),
    ("restrict an integer option to a range of values", "types.py", "IntRange"),
    ("convert a string like yes or off to a boolean", "types.py", "BoolParamType"),
    ("format the help page of a command", "core.py", "Command.format_help"),
    ("wrap long help text to the terminal width", "formatting.py", "wrap_text"),
    ("pass the context object to a callback as its first argument", "decorators.py", "pass_context"),
    ("the error for a required parameter that was not given", "exceptions.py", "MissingParameter"),
    (
        "read an option's value from an environment variable",
        "core.py",
        "Parameter.resolve_envvar_value|Option.resolve_envvar_value",
    ),
    ("show long output through a pager like less", "termui.py", "echo_via_pager"),
];

#[test]
fn recall_at_5_on_click() {
    let venv = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.ci/deploy-venv")).output().unwrap();
    assert!(venv.status.success(), ".ci/deploy-venv failed: run scripts/test --setup");
    let python = std::path::PathBuf::from(String::from_utf8_lossy(&venv.stdout).trim()).join("python");
    let out = Command::new(&python)
        .args(["-c", "import click, os; print(os.path.dirname(click.__file__))"])
        .output()
        .unwrap();
    assert!(out.status.success(), "click is not in the deploy venv: run scripts/test --setup");
    let click = std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    for entry in std::fs::read_dir(&click).unwrap().flatten() {
        if entry.path().extension().is_some_and(|e| e == "py") {
            std::fs::copy(entry.path(), repo.join(entry.file_name())).unwrap();
        }
    }
    git(&repo, &["add", "-A"]);
    git(&repo, &["-c", "user.email=q@q", "-c", "user.name=q", "commit", "-qm", "click"]);
    let recall = recall_at_5("click", &repo, tmp.path(), CLICK_QUESTIONS);
    assert!(recall >= 0.85, "recall@5 {recall:.2} is below 0.85");
}

/// The embeddings endpoint to fuse with, when one is given: `AUTODEV_QUALITY_EMBEDDINGS`
/// (`http://127.0.0.1:PORT/v1`, model `AUTODEV_QUALITY_EMBEDDINGS_MODEL`, default
/// all-MiniLM-L6-v2). `scripts/search-quality --fused` starts a real local model
/// (`scripts/embeddings-server`) and sets it; the suite runs lexical only.
fn embeddings() -> Option<Embedder> {
    let url = std::env::var("AUTODEV_QUALITY_EMBEDDINGS").ok().filter(|u| !u.is_empty())?;
    let model = std::env::var("AUTODEV_QUALITY_EMBEDDINGS_MODEL").unwrap_or_else(|_| "all-MiniLM-L6-v2".to_string());
    Some(Embedder::new(&url, &model, None).unwrap())
}

/// Recall@5 of `questions` on `repo` (printed with the misses): lexical, and fused with the
/// embeddings when an endpoint is given (`embeddings`), which must then reach `floor` too.
fn recall_at_5(label: &str, repo: &Path, scratch: &Path, questions: &[(&str, &str, &str)]) -> f64 {
    let mut idx = CodeIndex::open(&scratch.join("index"), repo).unwrap();
    idx.refresh().unwrap();
    let lexical = recall_with(&format!("{label}, lexical"), repo, questions, |q| idx.search(q, 20).unwrap());
    if let Some(embedder) = embeddings() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let store = FileStore::open(&scratch.join("index")).unwrap();
        let started = std::time::Instant::now();
        let synced = rt.block_on(vectors::sync(&idx, &embedder, &store)).unwrap();
        println!(
            "{label}: embedded {} chunks of {} files with {} in {:.0} s",
            synced.chunks_embedded,
            synced.files_embedded,
            embedder.model(),
            started.elapsed().as_secs_f64()
        );
        let fused = recall_with(&format!("{label}, fused with {}", embedder.model()), repo, questions, |q| {
            rt.block_on(vectors::search(&idx, Some((&embedder, &store)), q, 20)).unwrap()
        });
        println!("{label}: recall@5 lexical {lexical:.2}, fused {fused:.2}");
    }
    lexical
}

fn recall_with(
    label: &str,
    repo: &Path,
    questions: &[(&str, &str, &str)],
    search: impl Fn(&str) -> Vec<autodev_index::Hit>,
) -> f64 {
    let mut found = 0;
    let mut misses = Vec::new();
    for (q, path, names) in questions {
        let text = std::fs::read_to_string(repo.join(path)).unwrap();
        let names: Vec<&str> = names.split('|').collect();
        // The answer's file must hold the definition (the questions were located by hand; a
        // rename would make this test lie, so it fails instead).
        for name in &names {
            let short = name.rsplit(['.', ':']).next().unwrap();
            assert!(text.contains(short), "{path} has no {name}");
        }
        // The definition, or a part of it (a method of the class asked for).
        let answers = |n: &str| {
            names.iter().any(|name| {
                n == *name
                    || n.ends_with(&format!(".{name}"))
                    || n.ends_with(&format!("::{name}"))
                    || n.starts_with(&format!("{name}."))
            })
        };
        let hits = search(q);
        let rank = hits.iter().position(|h| h.path == *path && answers(&h.name));
        if rank.is_some_and(|r| r < 5) {
            found += 1;
        } else {
            misses.push(format!(
                "{q} → want {path} {} (rank {}); got {:?}",
                names.join("|"),
                rank.map_or("> 20".to_string(), |r| (r + 1).to_string()),
                hits.iter().take(5).map(|h| format!("{}:{}", h.path, h.name)).collect::<Vec<_>>()
            ));
        }
    }
    let recall = found as f64 / questions.len() as f64;
    println!("{label}: recall@5 = {recall:.2} ({found}/{})", questions.len());
    for m in &misses {
        println!("  miss: {m}");
    }
    recall
}
