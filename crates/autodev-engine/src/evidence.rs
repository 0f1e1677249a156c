//! Evidence that a run's tests capture its spec: the idea behind SWE-bench's FAIL_TO_PASS,
//! done for every run. Once the tests pass on the run branch, the run's test changes alone
//! are put on the base commit (in a worktree of their own) and the test command runs there.
//! If it fails, the tests the run wrote need its change: `proven`. If it passes, they prove
//! nothing about the change. If the run changed no tests, there is nothing to try.
//!
//! What counts as a test change:
//! - a file that is a test by its path (`tests/`, `test/`, `__tests__/`, `spec/` directories;
//!   `test_*.py`, `*_test.py`, `*_test.go`, `*.test.js`/`.ts`, `*.spec.js`/`.ts`,
//!   `*Test.java`, `*_spec.rb`, `conftest.py`, Rust `tests.rs`): its branch version;
//! - Rust's inline tests: a changed `.rs` file whose branch version has `#[cfg(test)] mod …
//!   { … }` blocks gets those blocks on top of its base version (its own test blocks
//!   removed), or alone when the file is new; the `mod name;` lines the run added for new
//!   files are added to their parents, so the grafted tests are compiled. Tests that call
//!   code the base does not have fail to compile there, which counts as failing, as it does
//!   in SWE-bench.
use std::path::{Path, PathBuf};

use autodev_domain::{EventKind, Evidence};
use autodev_workspace::fsops::Root;

use crate::ctx::RunCtx;
use crate::error::{EngineError, Result};

/// What the evidence step found.
#[derive(Debug)]
pub(crate) struct Found {
    pub verdict: Evidence,
    pub test_files: Vec<String>,
    pub base_exit_code: Option<i32>,
    pub tail: String,
}

/// Whether a path is a test file by the conventions of the common ecosystems.
pub(crate) fn is_test_path(path: &str) -> bool {
    let p = Path::new(path);
    let dirs =
        p.parent().map(|d| d.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect::<Vec<_>>());
    if dirs.unwrap_or_default().iter().any(|d| matches!(d.as_str(), "tests" | "test" | "__tests__" | "spec" | "specs"))
    {
        return true;
    }
    let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let stem_ext = name.rsplit_once('.');
    let stem = stem_ext.map(|(s, _)| s).unwrap_or(&name);
    let ext = stem_ext.map(|(_, e)| e).unwrap_or("");
    match ext {
        "py" => stem.starts_with("test_") || stem.ends_with("_test") || stem == "conftest",
        "go" => stem.ends_with("_test"),
        "js" | "jsx" | "ts" | "tsx" | "mjs" | "cjs" => stem.ends_with(".test") || stem.ends_with(".spec"),
        "java" | "kt" | "scala" | "cs" => stem.ends_with("Test") || stem.ends_with("Tests"),
        "rb" => stem.ends_with("_spec") || stem.ends_with("_test"),
        "rs" => stem == "tests",
        _ => false,
    }
}

/// The `#[cfg(test)] mod name { … }` blocks of a Rust file, as written, with the byte range
/// each covers. Strings, characters and comments are skipped while braces are matched; a
/// block that does not close is not returned.
pub(crate) fn rust_test_blocks(text: &str) -> Vec<(usize, usize)> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(pos) = text[from..].find("#[cfg(test)]") {
        let start = from + pos;
        let mut i = start + "#[cfg(test)]".len();
        // Other attributes and whitespace may stand between the cfg and the module.
        loop {
            while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            if bytes.get(i) == Some(&b'#') {
                match text[i..].find(']') {
                    Some(end) => i += end + 1,
                    None => break,
                }
            } else {
                break;
            }
        }
        let rest = &text[i..];
        let rest_trim = rest.trim_start_matches("pub(crate) ").trim_start_matches("pub ");
        let skipped = rest.len() - rest_trim.len();
        let is_mod = rest_trim.starts_with("mod ");
        let open = rest_trim.find(['{', ';']).map(|o| i + skipped + o);
        match (is_mod, open) {
            (true, Some(o)) if bytes[o] == b'{' => match matching_brace(bytes, o) {
                Some(end) => {
                    found.push((start, end + 1));
                    from = end + 1;
                }
                None => return found,
            },
            _ => from = i,
        }
    }
    found
}

/// The index of the `}` closing the `{` at `open`, skipping strings, chars and comments.
fn matching_brace(b: &[u8], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = open;
    while i < b.len() {
        match b[i] {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i += 1;
            }
            b'r' if matches!(b.get(i + 1), Some(b'"' | b'#')) && (i == 0 || !b[i - 1].is_ascii_alphanumeric()) => {
                // Raw string r"…", r#"…"#.
                let mut j = i + 1;
                let mut hashes = 0;
                while b.get(j) == Some(&b'#') {
                    hashes += 1;
                    j += 1;
                }
                if b.get(j) == Some(&b'"') {
                    j += 1;
                    loop {
                        if j >= b.len() {
                            return None;
                        }
                        if b[j] == b'"' && (0..hashes).all(|h| b.get(j + 1 + h) == Some(&b'#')) {
                            i = j + hashes;
                            break;
                        }
                        j += 1;
                    }
                }
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'\'' => {
                // A char literal ('x', '\n', '{'), not a lifetime ('a).
                if b.get(i + 2) == Some(&b'\'') {
                    i += 2;
                } else if b.get(i + 1) == Some(&b'\\')
                    && let Some(close) = b[i + 2..].iter().position(|c| *c == b'\'')
                {
                    i += 2 + close;
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// `mod name;` declarations in `text` (any visibility), by name.
fn mod_decls(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let t = l.trim();
            let t = t.strip_prefix("pub(crate) ").or_else(|| t.strip_prefix("pub ")).unwrap_or(t);
            let name = t.strip_prefix("mod ")?.strip_suffix(';')?.trim();
            name.chars().all(|c| c.is_alphanumeric() || c == '_').then(|| (name.to_string(), l.to_string()))
        })
        .collect()
}

/// The files to put on the base commit: (path, content).
async fn grafts(ctx: &RunCtx) -> Result<(Vec<(String, String)>, Vec<String>)> {
    let repo = ctx.repo();
    let (base, head) = (ctx.run.base_commit.as_str(), ctx.run.branch.as_str());
    let listed = repo.run(&["diff", "--name-only", "--no-renames", "--diff-filter=AM", "-z", base, head, "--"]).await?;
    let changed: Vec<&str> = listed.split('\0').filter(|s| !s.is_empty()).collect();
    let show = |rev: &str, path: &str| format!("{rev}:{path}");
    let mut out: Vec<(String, String)> = Vec::new();
    let mut test_files = Vec::new();
    let mut new_rust_modules: Vec<String> = Vec::new();
    for path in &changed {
        let Ok(branch_text) = repo.run(&["show", &show(head, path)]).await else { continue };
        if is_test_path(path) {
            out.push((path.to_string(), branch_text));
            test_files.push(path.to_string());
            continue;
        }
        if !path.ends_with(".rs") {
            continue;
        }
        let blocks = rust_test_blocks(&branch_text);
        if blocks.is_empty() {
            continue;
        }
        let base_text = repo.run(&["show", &show(base, path)]).await.ok();
        let mut content = match &base_text {
            Some(text) => {
                let mut kept = String::new();
                let mut at = 0;
                for (s, e) in rust_test_blocks(text) {
                    kept.push_str(&text[at..s]);
                    at = e;
                }
                kept.push_str(&text[at..]);
                kept
            }
            None => {
                if let Some(stem) = Path::new(path).file_stem() {
                    new_rust_modules.push(stem.to_string_lossy().into_owned());
                }
                String::new()
            }
        };
        for (s, e) in blocks {
            content.push('\n');
            content.push_str(&branch_text[s..e]);
            content.push('\n');
        }
        out.push((path.to_string(), content));
        test_files.push(path.to_string());
    }
    if !new_rust_modules.is_empty() {
        // Declare the new modules where the run declared them, so their tests are compiled.
        for path in changed.iter().filter(|p| p.ends_with(".rs")) {
            let Ok(branch_text) = repo.run(&["show", &show(head, path)]).await else { continue };
            let base_text = repo.run(&["show", &show(base, path)]).await.unwrap_or_default();
            let base_mods: Vec<String> = mod_decls(&base_text).into_iter().map(|(n, _)| n).collect();
            let added: Vec<String> = mod_decls(&branch_text)
                .into_iter()
                .filter(|(n, _)| new_rust_modules.contains(n) && !base_mods.contains(n))
                .map(|(_, line)| line)
                .collect();
            if added.is_empty() {
                continue;
            }
            let entry = out.iter().position(|(p, _)| p == path);
            let mut content = match entry {
                Some(i) => out.remove(i).1,
                None => base_text,
            };
            if !content.is_empty() && !content.ends_with('\n') {
                content.push('\n');
            }
            for line in added {
                content.push_str(&line);
                content.push('\n');
            }
            out.push((path.to_string(), content));
        }
    }
    Ok((out, test_files))
}

/// Puts the run's test changes on its base commit and runs the test command there.
pub(crate) async fn find(ctx: &RunCtx) -> Result<Found> {
    let (grafts, test_files) = grafts(ctx).await?;
    if grafts.is_empty() {
        return Ok(Found { verdict: Evidence::NoTests, test_files, base_exit_code: None, tail: String::new() });
    }
    let repo = ctx.repo();
    let wt: PathBuf = ctx.worktree("evidence");
    repo.worktree_add_detached(&wt, &ctx.run.base_commit).await?;
    let result = run_on_base(ctx, &wt, &grafts).await;
    if let Err(e) = repo.worktree_remove(&wt).await {
        tracing::warn!(run = %ctx.run.id, error = %e, "could not remove the evidence worktree");
    }
    let (exit_code, passed, tail) = result?;
    let verdict = if passed { Evidence::ProvesNothing } else { Evidence::Proven };
    Ok(Found { verdict, test_files, base_exit_code: exit_code, tail })
}

async fn run_on_base(ctx: &RunCtx, wt: &Path, grafts: &[(String, String)]) -> Result<(Option<i32>, bool, String)> {
    let root = Root::open(&wt.canonicalize()?)?;
    for (path, content) in grafts {
        let rel = root.check(path).map_err(|e| EngineError::Failed(format!("evidence: {e}")))?;
        root.write(&rel, content.as_bytes()).map_err(|e| EngineError::Failed(format!("evidence: {path}: {e}")))?;
    }
    let outcome = ctx.test_command_in(&wt.canonicalize()?).await?;
    Ok((outcome.exit_code, outcome.success(), outcome.render(3 * 1024)))
}

/// Records the evidence on the run and in its events.
pub(crate) async fn record(ctx: &RunCtx, found: &Found) -> Result<()> {
    let e = ctx
        .engine
        .store
        .record_evidence(
            &ctx.run.id,
            found.verdict.as_str(),
            EventKind::Evidence {
                verdict: found.verdict,
                test_files: found.test_files.clone(),
                base_exit_code: found.base_exit_code,
                tail: found.tail.clone(),
            },
        )
        .await?;
    ctx.emit(e).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_files_are_recognised_by_path() {
        for p in [
            "tests/cli.rs",
            "pkg/tests/test_x.py",
            "test_math.py",
            "a/b_test.py",
            "conftest.py",
            "x/y_test.go",
            "src/app.test.ts",
            "web/button.spec.jsx",
            "src/FooTest.java",
            "spec/models/user_spec.rb",
            "src/parser/tests.rs",
            "__tests__/a.js",
        ] {
            assert!(is_test_path(p), "{p}");
        }
        for p in ["src/lib.rs", "testing.py", "contest.py", "src/attest.go", "README.md", "src/latest.ts"] {
            assert!(!is_test_path(p), "{p}");
        }
    }

    #[test]
    fn rust_test_modules_are_found_with_their_braces_matched() {
        let text = r##"pub fn f() -> char { '{' }

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    // a } in a comment
    #[test]
    fn a() { assert_eq!(f(), '{'); let _s = "}}}"; let _r = r#"}"#; let _l: &'static str = "x"; }
    /* } */
}

fn after() {}
#[cfg(test)]
mod more { #[test] fn b() {} }
"##;
        let blocks = rust_test_blocks(text);
        assert_eq!(blocks.len(), 2);
        let first = &text[blocks[0].0..blocks[0].1];
        assert!(first.starts_with("#[cfg(test)]") && first.ends_with("/* } */\n}"), "{first}");
        assert_eq!(&text[blocks[1].0..blocks[1].1], "#[cfg(test)]\nmod more { #[test] fn b() {} }");
        assert!(rust_test_blocks("#[cfg(test)]\nmod tests;\n").is_empty());
        assert!(rust_test_blocks("#[cfg(test)]\nmod tests {\n").is_empty());
    }

    #[test]
    fn mod_declarations_are_read_in_any_visibility() {
        let decls = mod_decls("pub mod a;\nmod b;\npub(crate) mod c;\nmod d { }\n// mod e;\n");
        let names: Vec<&str> = decls.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
    }
}
