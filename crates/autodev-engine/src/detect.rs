//! What the engine learns from a repository on its own: the test command, and the compact
//! view of the repository the planner starts from.
use std::path::Path;

/// Detects the test command from the files at the repository root, or `None`.
pub fn detect_test_command(repo: &Path) -> Option<String> {
    // The checkout is the project's, as hostile as an agent's worktree: files are read
    // through a handle on it (no link followed out of it, nothing but a regular file).
    let root = autodev_workspace::fsops::Root::open(repo).ok()?;
    let exists = |name: &str| root.exists(Path::new(name));
    let read =
        |name: &str| root.read(Path::new(name)).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    if exists("Cargo.toml") {
        return Some("cargo test".into());
    }
    if exists("package.json") {
        let text = read("package.json");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let script = v.pointer("/scripts/test").and_then(|s| s.as_str()).unwrap_or("");
        // `npm init` writes a test script that only fails; it is not a test suite.
        if !script.is_empty() && !script.contains("no test specified") {
            return Some("npm test".into());
        }
    }
    if exists("go.mod") {
        return Some("go test ./...".into());
    }
    let pyproject = read("pyproject.toml");
    if pyproject.contains("pytest") || exists("pytest.ini") || exists("conftest.py") {
        return Some("python3 -m pytest -q".into());
    }
    if exists("Makefile") || exists("makefile") {
        let name = if exists("Makefile") { "Makefile" } else { "makefile" };
        let text = read(name);
        if text.lines().any(|l| l.starts_with("test:") || l.starts_with("test ")) {
            return Some("make test".into());
        }
    }
    if exists("pyproject.toml") || exists("setup.py") {
        return Some("python3 -m pytest -q".into());
    }
    None
}

/// Files worth showing the planner in full (cut short).
const KEY_FILES: &[&str] = &[
    "README.md",
    "README",
    "Cargo.toml",
    "package.json",
    "pyproject.toml",
    "go.mod",
    "Makefile",
    "setup.py",
    "autodev.toml",
];

/// Files listed whole in the planner's view; a bigger repository gets the files and chunks
/// most relevant to the spec from the code index instead of the rest of the list.
pub const LISTED_FILES: usize = 400;
/// Chunks of the code index shown to the planner of a big repository.
const RELEVANT_CHUNKS: usize = 12;
/// Characters of the spec used as the query.
const SPEC_QUERY_CHARS: usize = 2_000;

/// A compact view of the repository: the tracked files (capped) and the key files' heads;
/// for a repository too big to list whole (more than [`LISTED_FILES`] files), the files and
/// chunks of the code index most relevant to the spec as well.
/// `git` is the worktree's (checked) git; key files are read through a handle on the
/// worktree, so a committed symlink to a file outside it is not followed into the prompt.
///
/// The view fills at most about `budget` characters (a share of the model's window): the
/// file list stops at half of it, each key file's head at an eighth.
pub async fn repo_view(
    git: &autodev_workspace::Git,
    worktree: &Path,
    relevant: Option<(&crate::code::Searcher, &str)>,
    budget: usize,
) -> String {
    let root = autodev_workspace::fsops::Root::open(worktree).ok();
    let files = git.run(&["ls-files"]).await.unwrap_or_default();
    let all: Vec<&str> = files.lines().collect();
    let mut out = String::from("## Files\n");
    let mut listed = 0;
    for f in all.iter().take(LISTED_FILES) {
        if out.len() + f.len() > budget / 2 {
            break;
        }
        out.push_str(f);
        out.push('\n');
        listed += 1;
    }
    if all.len() > listed {
        out.push_str(&format!("... and {} more files (list_files shows them)\n", all.len() - listed));
    }
    if all.len() > LISTED_FILES
        && let Some((searcher, spec)) = relevant
    {
        let view = relevant_view(searcher, spec).await;
        out.extend(view.chars().take(budget / 4));
    }
    for name in KEY_FILES {
        let Some(bytes) = root.as_ref().and_then(|r| r.check(name).ok().and_then(|p| r.read(&p).ok())) else {
            continue;
        };
        let text = String::from_utf8_lossy(&bytes);
        let cut: String = text.chars().take((budget / 8).min(3_000)).collect();
        out.push_str(&format!("\n## {name}\n```\n{cut}\n```\n"));
    }
    out
}

/// The files and chunks of the index that match the spec best (search_code finds more).
async fn relevant_view(searcher: &crate::code::Searcher, spec: &str) -> String {
    let query: String = spec.chars().take(SPEC_QUERY_CHARS).collect();
    let hits = match searcher.search(&query, RELEVANT_CHUNKS).await {
        Ok(h) if !h.is_empty() => h,
        Ok(_) => return String::new(),
        Err(e) => {
            tracing::warn!(error = %e, "the code index could not be searched for the planner's view");
            return String::new();
        }
    };
    let mut files: Vec<&str> = Vec::new();
    for h in &hits {
        if !files.contains(&h.path.as_str()) {
            files.push(&h.path);
        }
    }
    let mut out =
        String::from("\n## Most relevant to the spec (from the code index; use search_code for more)\n\nFiles:\n");
    for f in &files {
        out.push_str(&format!("- {f}\n"));
    }
    for h in &hits {
        let name = if h.name.is_empty() { String::new() } else { format!(" ({})", h.name) };
        let head: Vec<&str> = h.text.lines().take(12).collect();
        let more = if h.text.lines().count() > 12 { "\n..." } else { "" };
        out.push_str(&format!(
            "\n### {}:{}-{}{name}\n```\n{}{more}\n```\n",
            h.path,
            h.start_line,
            h.end_line,
            head.join("\n")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_command_is_detected_from_manifests() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(detect_test_command(d.path()), None);
        std::fs::write(
            d.path().join("package.json"),
            r#"{"scripts": {"test": "echo \"Error: no test specified\" && exit 1"}}"#,
        )
        .unwrap();
        assert_eq!(detect_test_command(d.path()), None);
        std::fs::write(d.path().join("Makefile"), "build:\n\tcc x.c\ntest: build\n\t./t\n").unwrap();
        assert_eq!(detect_test_command(d.path()).as_deref(), Some("make test"));
        std::fs::write(d.path().join("package.json"), r#"{"scripts": {"test": "vitest run"}}"#).unwrap();
        assert_eq!(detect_test_command(d.path()).as_deref(), Some("npm test"));
        std::fs::write(d.path().join("Cargo.toml"), "[package]").unwrap();
        assert_eq!(detect_test_command(d.path()).as_deref(), Some("cargo test"));
    }
}
