//! The v1 agent tool interface (a public contract, documented in the README): `list_files`, `read_file`,
//! `write_file`, `edit_file`, `search`, `run`, `finish`. Every failure — bad arguments, a
//! path outside the workspace, a missing file, an ambiguous edit — is a tool result the
//! model can read and act on, never a crash.
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use autodev_domain::ToolSpec;
use serde::Deserialize;
use serde_json::json;

use crate::fsops::Root;
use crate::paths;
use crate::sandbox::{Sandbox, SandboxPolicy};

/// Limits that keep tool output inside a model's context.
const MAX_LIST_ENTRIES: usize = 1_000;
const DEFAULT_READ_LINES: usize = 2_000;
const MAX_READ_BYTES: usize = 100 * 1024;
const MAX_SEARCH_MATCHES: usize = 200;
const MAX_LINE_CHARS: usize = 300;
const MAX_WRITE_BYTES: usize = 4 * 1024 * 1024;
const RUN_OUTPUT_LINES: usize = 200;

/// The result of one tool call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolOutcome {
    pub content: String,
    pub is_error: bool,
    /// Set by `finish`: the agent's summary; the task ends.
    pub finished: Option<String>,
    /// Set when a write was refused because the path is protected: (path, glob).
    pub protected: Option<(String, String)>,
}

impl ToolOutcome {
    fn ok(content: impl Into<String>) -> Self {
        Self { content: content.into(), is_error: false, finished: None, protected: None }
    }
    fn err(content: impl Into<String>) -> Self {
        Self { content: content.into(), is_error: true, finished: None, protected: None }
    }
}

/// The tools bound to one workspace root: file tools through a directory handle on it, and
/// commands in one sandbox that lives as long as the last clone of the toolbox.
#[derive(Clone, Debug)]
pub struct ToolBox {
    root: PathBuf,
    fs: Arc<Root>,
    sandbox: Arc<Sandbox>,
    default_timeout: Duration,
    max_timeout: Duration,
    protected: Option<Arc<crate::protect::Protected>>,
    code_search: Option<Arc<dyn CodeSearch>>,
    /// Bytes one `read_file` returns at most (sized to the model's window by the engine).
    read_budget: usize,
}

/// The version of the agent tool interface: v1 plus `search_code` (additive).
pub const TOOL_INTERFACE_VERSION: &str = "1.1";

/// What the `search_code` tool searches: the run's code index (`autodev-engine` provides it;
/// this crate knows only the tool's contract).
#[async_trait::async_trait]
pub trait CodeSearch: Send + Sync + std::fmt::Debug {
    /// The best chunks for `query`, at most `limit`, as `(path, start_line, end_line, name,
    /// text)`; an error is shown to the model.
    async fn search_code(&self, query: &str, limit: usize) -> Result<Vec<CodeHit>, String>;
}

/// One `search_code` result.
#[derive(Clone, Debug, PartialEq)]
pub struct CodeHit {
    pub path: String,
    pub start_line: u64,
    pub end_line: u64,
    /// The definition's name (`Type::method`), empty for a window of lines.
    pub name: String,
    pub text: String,
}

/// Lines of each `search_code` result shown; the model reads the rest with `read_file`.
const SEARCH_CODE_LINES: usize = 30;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchCodeArgs {
    query: String,
    #[serde(default)]
    limit: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListArgs {
    #[serde(default)]
    path: Option<String>,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadArgs {
    path: String,
    #[serde(default)]
    offset: Option<usize>,
    #[serde(default)]
    limit: Option<usize>,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WriteArgs {
    path: String,
    content: String,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EditArgs {
    path: String,
    old_text: String,
    new_text: String,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchArgs {
    pattern: String,
    #[serde(default)]
    path: Option<String>,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunArgs {
    command: String,
    #[serde(default)]
    timeout_secs: Option<u64>,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FinishArgs {
    summary: String,
}

fn parse<T: for<'de> Deserialize<'de>>(tool: &str, arguments: &str) -> Result<T, ToolOutcome> {
    let text = if arguments.trim().is_empty() { "{}" } else { arguments };
    serde_json::from_str(text).map_err(|e| {
        ToolOutcome::err(format!("invalid arguments for {tool}: {e}. Send a JSON object matching the tool's schema."))
    })
}

impl ToolBox {
    /// `root` is canonicalised; it must exist.
    pub fn new(root: &Path, policy: SandboxPolicy) -> std::io::Result<Self> {
        let root = root.canonicalize()?;
        Ok(Self {
            fs: Arc::new(Root::open(&root)?),
            sandbox: Arc::new(Sandbox::new(&root, policy)),
            root,
            default_timeout: Duration::from_secs(120),
            max_timeout: Duration::from_secs(1800),
            protected: None,
            code_search: None,
            read_budget: MAX_READ_BYTES,
        })
    }

    /// Adds the `search_code` tool over `search`.
    pub fn with_code_search(mut self, search: Arc<dyn CodeSearch>) -> Self {
        self.code_search = Some(search);
        self
    }

    /// Whether `search_code` is available.
    pub fn has_code_search(&self) -> bool {
        self.code_search.is_some()
    }

    /// The `search_code` tool's schema (tool interface v1.1).
    pub fn search_code_spec() -> ToolSpec {
        ToolSpec {
            name: "search_code".to_string(),
            description: "Search the repository's code index in plain words or identifiers (e.g. \"where are \
                          retries configured\", \"parse_config\"). Returns the best functions, classes and blocks as \
                          path:start-end with their first lines; read more with read_file. The index is built from the \
                          run's checkout when first used and may not show later changes: use `search` (regex) for \
                          text you changed yourself."
                .to_string(),
            parameters: json!({"type": "object", "properties": {"query": {"type": "string", "minLength": 1, "maxLength": 500, "description": "What to look for, in words or identifiers."}, "limit": {"type": "integer", "minimum": 1, "maximum": 20, "description": "Results, default 8."}}, "required": ["query"], "additionalProperties": false}),
        }
    }

    async fn search_code(&self, arguments: &str) -> Result<ToolOutcome, ToolOutcome> {
        let Some(search) = &self.code_search else {
            return Err(ToolOutcome::err("search_code is not available in this run; use search (regex)"));
        };
        let args: SearchCodeArgs = parse("search_code", arguments)?;
        let query = args.query.trim();
        if query.is_empty() || query.chars().count() > 500 {
            return Err(ToolOutcome::err("search_code: query must be 1 to 500 characters"));
        }
        let limit = args.limit.unwrap_or(8);
        if !(1..=20).contains(&limit) {
            return Err(ToolOutcome::err("search_code: limit must be 1 to 20"));
        }
        let hits = search.search_code(query, limit).await.map_err(|e| ToolOutcome::err(format!("search_code: {e}")))?;
        if hits.is_empty() {
            return Ok(ToolOutcome::ok(format!(
                "nothing in the code index matches `{query}`; try other words or `search`"
            )));
        }
        let mut out = String::new();
        for h in hits {
            let name = if h.name.is_empty() { String::new() } else { format!("  {}", h.name) };
            let _ = writeln!(out, "## {}:{}-{}{name}", h.path, h.start_line, h.end_line);
            let lines: Vec<&str> = h.text.lines().collect();
            for (i, line) in lines.iter().take(SEARCH_CODE_LINES).enumerate() {
                let _ = writeln!(out, "{:>6}\t{line}", h.start_line as usize + i);
            }
            if lines.len() > SEARCH_CODE_LINES {
                let _ = writeln!(out, "   ... {} more lines", lines.len() - SEARCH_CODE_LINES);
            }
        }
        Ok(ToolOutcome::ok(out))
    }

    /// Refuses writes to these paths (see [`crate::protect`]).
    pub fn with_protected(mut self, protected: crate::protect::Protected) -> Self {
        self.protected = (!protected.is_empty()).then(|| Arc::new(protected));
        self
    }

    /// A refusal when `path` (relative to the root) is protected.
    fn guard(&self, shown: &str, path: &Path) -> Result<(), ToolOutcome> {
        let Some(protected) = &self.protected else { return Ok(()) };
        let rel = path.to_string_lossy();
        match protected.protecting(&rel) {
            None => Ok(()),
            Some(glob) => Err(ToolOutcome {
                protected: Some((rel.to_string(), glob.to_string())),
                ..ToolOutcome::err(format!(
                    "`{shown}` is a protected path (the project protects `{glob}`): the write was refused and \
                     recorded. Do not work around it; if the task needs this change, say so in your finish \
                     summary so a person can approve the run with that path."
                ))
            }),
        }
    }

    /// Caps what one `read_file` returns (at most the default 100 KiB), so a small model's
    /// window is not filled by one read; the rest is read on with `offset`.
    pub fn with_read_budget(mut self, bytes: usize) -> Self {
        self.read_budget = bytes.clamp(1024, MAX_READ_BYTES);
        self
    }

    pub fn with_default_timeout(mut self, timeout: Duration) -> Self {
        self.default_timeout = timeout;
        self.max_timeout = self.max_timeout.max(timeout);
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn policy(&self) -> &SandboxPolicy {
        self.sandbox.policy()
    }

    /// The sandbox this toolbox's commands run in (the test command uses it too).
    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    /// The JSON schemas the model sees.
    pub fn specs() -> Vec<ToolSpec> {
        let spec = |name: &str, description: &str, parameters: serde_json::Value| ToolSpec {
            name: name.to_string(),
            description: description.to_string(),
            parameters,
        };
        vec![
            spec(
                "list_files",
                "List files under a directory of the workspace (recursively, respecting .gitignore).",
                json!({"type": "object", "properties": {"path": {"type": "string", "description": "Directory relative to the workspace root; default the root."}}, "additionalProperties": false}),
            ),
            spec(
                "read_file",
                "Read a text file, with line numbers. Use offset and limit (in lines) for large files.",
                json!({"type": "object", "properties": {"path": {"type": "string"}, "offset": {"type": "integer", "minimum": 1, "description": "First line to read (1-based)."}, "limit": {"type": "integer", "minimum": 1, "description": "Number of lines."}}, "required": ["path"], "additionalProperties": false}),
            ),
            spec(
                "write_file",
                "Create or replace a file with the given content (parent directories are created).",
                json!({"type": "object", "properties": {"path": {"type": "string"}, "content": {"type": "string"}}, "required": ["path", "content"], "additionalProperties": false}),
            ),
            spec(
                "edit_file",
                "Replace the one exact occurrence of old_text with new_text. Zero or several occurrences is an error: include enough context to make old_text unique.",
                json!({"type": "object", "properties": {"path": {"type": "string"}, "old_text": {"type": "string"}, "new_text": {"type": "string"}}, "required": ["path", "old_text", "new_text"], "additionalProperties": false}),
            ),
            spec(
                "search",
                "Search file contents with a regular expression. Returns matching lines as path:line:text.",
                json!({"type": "object", "properties": {"pattern": {"type": "string", "description": "Rust regex syntax."}, "path": {"type": "string", "description": "Directory or file to search; default the root."}}, "required": ["pattern"], "additionalProperties": false}),
            ),
            spec(
                "run",
                "Run a shell command in the workspace (sandboxed: no network, writes only inside the workspace and /tmp; background processes end with the command). Returns the exit code and the tail of stdout/stderr.",
                json!({"type": "object", "properties": {"command": {"type": "string"}, "timeout_secs": {"type": "integer", "minimum": 1, "maximum": 1800, "description": "Default 120."}}, "required": ["command"], "additionalProperties": false}),
            ),
            spec(
                "finish",
                "End the task. Call this once the work is done and checked, with a short summary of what changed.",
                json!({"type": "object", "properties": {"summary": {"type": "string"}}, "required": ["summary"], "additionalProperties": false}),
            ),
        ]
    }

    /// A short description of a call for the live display: (`edit_file`, `src/lib.rs`).
    pub fn describe(name: &str, arguments: &str) -> String {
        let v: serde_json::Value = serde_json::from_str(arguments).unwrap_or_default();
        let field = match name {
            "run" => "command",
            "search" => "pattern",
            "search_code" => "query",
            "finish" => "summary",
            _ => "path",
        };
        let target = v.get(field).and_then(|x| x.as_str()).unwrap_or("");
        let one_line: String = target.lines().next().unwrap_or("").chars().take(80).collect();
        if one_line.is_empty() && name == "list_files" { ".".to_string() } else { one_line }
    }

    /// Runs one tool call.
    pub async fn execute(&self, name: &str, arguments: &str) -> ToolOutcome {
        let result = match name {
            "list_files" => self.list_files(arguments),
            "read_file" => self.read_file(arguments),
            "write_file" => self.write_file(arguments),
            "edit_file" => self.edit_file(arguments),
            "search" => self.search(arguments),
            "search_code" => self.search_code(arguments).await,
            "run" => self.run(arguments).await,
            "finish" => parse::<FinishArgs>(name, arguments).map(|a| ToolOutcome {
                content: "Task finished.".to_string(),
                is_error: false,
                finished: Some(a.summary),
                protected: None,
            }),
            other => Err(ToolOutcome::err(format!(
                "unknown tool `{other}`; the tools are list_files, read_file, write_file, edit_file, search, search_code, run, finish"
            ))),
        };
        result.unwrap_or_else(|e| e)
    }

    /// A model's path, checked and with its symlinks resolved, relative to the root.
    fn path(&self, rel: &str) -> Result<PathBuf, ToolOutcome> {
        self.fs.check(rel).map_err(|e| ToolOutcome::err(e.to_string()))
    }

    fn list_files(&self, arguments: &str) -> Result<ToolOutcome, ToolOutcome> {
        let args: ListArgs = parse("list_files", arguments)?;
        let rel = args.path.unwrap_or_default();
        let dir = self.path(&rel)?;
        if !self.fs.is_dir(&dir) {
            return Err(ToolOutcome::err(format!("`{rel}` is not a directory")));
        }
        let mut entries = Vec::new();
        let mut more = false;
        for entry in walker(&self.root.join(&dir)).build().flatten() {
            if entry.depth() == 0 || !entry.file_type().is_some_and(|t| t.is_file() || t.is_symlink()) {
                continue;
            }
            if entries.len() == MAX_LIST_ENTRIES {
                more = true;
                break;
            }
            entries.push(paths::display(&self.root, entry.path()));
        }
        entries.sort();
        let mut out = entries.join("\n");
        if entries.is_empty() {
            out = "(no files)".to_string();
        }
        if more {
            let _ = write!(out, "\n... more than {MAX_LIST_ENTRIES} files; list a subdirectory");
        }
        Ok(ToolOutcome::ok(out))
    }

    fn read_file(&self, arguments: &str) -> Result<ToolOutcome, ToolOutcome> {
        let args: ReadArgs = parse("read_file", arguments)?;
        let path = self.path(&args.path)?;
        let bytes = self.fs.read(&path).map_err(|e| ToolOutcome::err(format!("cannot read `{}`: {e}", args.path)))?;
        if bytes.contains(&0) {
            return Err(ToolOutcome::err(format!("`{}` is a binary file", args.path)));
        }
        let text = String::from_utf8_lossy(&bytes);
        let offset = args.offset.unwrap_or(1).max(1);
        let limit = args.limit.unwrap_or(DEFAULT_READ_LINES).max(1);
        let total = text.lines().count();
        if total == 0 {
            return Ok(ToolOutcome::ok("(empty file)"));
        }
        if offset > total {
            return Err(ToolOutcome::err(format!(
                "offset {offset} is past the end of `{}` ({total} lines)",
                args.path
            )));
        }
        let mut out = String::new();
        let mut last = offset - 1;
        for (i, line) in text.lines().enumerate().skip(offset - 1).take(limit) {
            if out.len() > self.read_budget {
                break;
            }
            let _ = writeln!(out, "{:>6}\t{}", i + 1, line);
            last = i + 1;
        }
        if last < total {
            let _ = write!(out, "... ({total} lines in all; read on with offset {})", last + 1);
        }
        Ok(ToolOutcome::ok(out))
    }

    fn write_file(&self, arguments: &str) -> Result<ToolOutcome, ToolOutcome> {
        let args: WriteArgs = parse("write_file", arguments)?;
        if args.content.len() > MAX_WRITE_BYTES {
            return Err(ToolOutcome::err("content is over 4 MiB; write smaller files"));
        }
        let path = self.path(&args.path)?;
        self.guard(&args.path, &path)?;
        if path.as_os_str().is_empty() || self.fs.is_dir(&path) {
            return Err(ToolOutcome::err(format!("`{}` is a directory", args.path)));
        }
        let existed = self
            .fs
            .write(&path, args.content.as_bytes())
            .map_err(|e| ToolOutcome::err(format!("cannot write `{}`: {e}", args.path)))?;
        let lines = args.content.lines().count();
        Ok(ToolOutcome::ok(format!("{} `{}` ({lines} lines)", if existed { "replaced" } else { "created" }, args.path)))
    }

    fn edit_file(&self, arguments: &str) -> Result<ToolOutcome, ToolOutcome> {
        let args: EditArgs = parse("edit_file", arguments)?;
        if args.old_text.is_empty() {
            return Err(ToolOutcome::err("old_text is empty; to create a file use write_file"));
        }
        let path = self.path(&args.path)?;
        self.guard(&args.path, &path)?;
        let bytes = self.fs.read(&path).map_err(|e| ToolOutcome::err(format!("cannot read `{}`: {e}", args.path)))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| ToolOutcome::err(format!("`{}` is not UTF-8 text; rewrite it with write_file", args.path)))?;
        let count = text.matches(&args.old_text).count();
        match count {
            0 => Err(ToolOutcome::err(format!(
                "old_text was not found in `{}`; read the file and copy the text exactly (whitespace included)",
                args.path
            ))),
            1 => {
                let updated = text.replacen(&args.old_text, &args.new_text, 1);
                self.fs
                    .write(&path, updated.as_bytes())
                    .map_err(|e| ToolOutcome::err(format!("cannot write `{}`: {e}", args.path)))?;
                let line = text[..text.find(&args.old_text).unwrap_or(0)].matches('\n').count() + 1;
                Ok(ToolOutcome::ok(format!("edited `{}` at line {line}", args.path)))
            }
            n => Err(ToolOutcome::err(format!(
                "old_text occurs {n} times in `{}`; include more surrounding lines so it occurs once",
                args.path
            ))),
        }
    }

    fn search(&self, arguments: &str) -> Result<ToolOutcome, ToolOutcome> {
        let args: SearchArgs = parse("search", arguments)?;
        let re = regex::RegexBuilder::new(&args.pattern)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| ToolOutcome::err(format!("invalid pattern: {e}")))?;
        let base = self.path(args.path.as_deref().unwrap_or(""))?;
        let mut out = String::new();
        let mut matches = 0usize;
        'files: for entry in walker(&self.root.join(&base)).build().flatten() {
            if !entry.file_type().is_some_and(|t| t.is_file()) {
                continue;
            }
            // Read through the root handle: the walk saw a file, but by now it may be a link.
            let Ok(rel) = entry.path().strip_prefix(&self.root) else { continue };
            let Ok(bytes) = self.fs.read(rel) else { continue };
            if bytes.contains(&0) {
                continue;
            }
            let text = String::from_utf8_lossy(&bytes);
            let rel = paths::display(&self.root, entry.path());
            for (i, line) in text.lines().enumerate() {
                if re.is_match(line) {
                    if matches == MAX_SEARCH_MATCHES {
                        let _ = write!(out, "... more than {MAX_SEARCH_MATCHES} matches; narrow the pattern or path");
                        break 'files;
                    }
                    let shown: String = line.chars().take(MAX_LINE_CHARS).collect();
                    let _ = writeln!(out, "{rel}:{}:{shown}", i + 1);
                    matches += 1;
                }
            }
        }
        if matches == 0 {
            out = "(no matches)".to_string();
        }
        Ok(ToolOutcome::ok(out))
    }

    async fn run(&self, arguments: &str) -> Result<ToolOutcome, ToolOutcome> {
        let args: RunArgs = parse("run", arguments)?;
        if args.command.trim().is_empty() {
            return Err(ToolOutcome::err("command is empty"));
        }
        let timeout = args.timeout_secs.map(Duration::from_secs).unwrap_or(self.default_timeout).min(self.max_timeout);
        let outcome = self.sandbox.run(&args.command, timeout).await.map_err(|e| ToolOutcome::err(e.to_string()))?;
        let text = outcome.render(RUN_OUTPUT_LINES);
        Ok(if outcome.success() { ToolOutcome::ok(text) } else { ToolOutcome::err(text) })
    }
}

/// A directory walker that respects .gitignore (even outside a git repository), shows
/// hidden files, and never enters `.git`.
fn walker(dir: &Path) -> ignore::WalkBuilder {
    let mut w = ignore::WalkBuilder::new(dir);
    w.hidden(false)
        .require_git(false)
        .follow_links(false)
        .sort_by_file_name(|a, b| a.cmp(b))
        .filter_entry(|e| !paths::is_git_name(e.file_name()));
    w
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    fn toolbox() -> (tempfile::TempDir, ToolBox) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ws");
        std::fs::create_dir_all(root.join("src")).unwrap();
        std::fs::write(root.join("src/lib.rs"), "fn a() {}\nfn b() {}\nfn a2() {}\n").unwrap();
        std::fs::write(root.join(".gitignore"), "target/\n").unwrap();
        std::fs::create_dir_all(root.join("target")).unwrap();
        std::fs::write(root.join("target/junk"), "x").unwrap();
        let tb = ToolBox::new(&root, SandboxPolicy::new(dir.path().join("tmp"))).unwrap();
        (dir, tb)
    }

    #[tokio::test]
    async fn list_read_write_edit_search_work_together() {
        let (_d, tb) = toolbox();
        let list = tb.execute("list_files", "{}").await;
        assert_eq!(list.content, ".gitignore\nsrc/lib.rs");
        let read = tb.execute("read_file", r#"{"path": "src/lib.rs", "offset": 2, "limit": 1}"#).await;
        assert_eq!(read.content, "     2\tfn b() {}\n... (3 lines in all; read on with offset 3)");
        let w = tb.execute("write_file", r#"{"path": "src/new/mod.rs", "content": "pub fn x() {}\n"}"#).await;
        assert!(!w.is_error, "{w:?}");
        let e = tb
            .execute("edit_file", r#"{"path": "src/lib.rs", "old_text": "fn b() {}", "new_text": "fn c() {}"}"#)
            .await;
        assert_eq!(e.content, "edited `src/lib.rs` at line 2");
        let s = tb.execute("search", r#"{"pattern": "fn (c|x)"}"#).await;
        assert_eq!(s.content, "src/lib.rs:2:fn c() {}\nsrc/new/mod.rs:1:pub fn x() {}\n");
    }

    #[tokio::test]
    async fn tool_errors_are_results_the_model_can_read() {
        let (_d, tb) = toolbox();
        let cases = [
            ("edit_file", r#"{"path": "src/lib.rs", "old_text": "fn a", "new_text": "x"}"#, "occurs 2 times"),
            ("edit_file", r#"{"path": "src/lib.rs", "old_text": "nope", "new_text": "x"}"#, "was not found"),
            ("read_file", r#"{"path": "../../etc/passwd"}"#, "leaves the workspace"),
            ("write_file", r#"{"path": "/tmp/x", "content": ""}"#, "is absolute"),
            ("read_file", r#"{"path": "missing.rs"}"#, "cannot read"),
            ("read_file", r#"{"path": 3}"#, "invalid arguments for read_file"),
            ("read_file", "{not json", "invalid arguments"),
            ("search", r#"{"pattern": "("}"#, "invalid pattern"),
            ("delete_everything", "{}", "unknown tool"),
        ];
        for (tool, args, want) in cases {
            let out = tb.execute(tool, args).await;
            assert!(out.is_error, "{tool} {args}: {out:?}");
            assert!(out.content.contains(want), "{tool} {args}: {}", out.content);
        }
    }

    #[tokio::test]
    async fn run_reports_exit_code_and_finish_ends_the_task() {
        let (_d, tb) = toolbox();
        let out = tb.execute("run", r#"{"command": "echo hello; exit 2"}"#).await;
        assert!(out.is_error);
        assert_eq!(out.content, "exit code 2\n--- stdout ---\nhello");
        let out = tb.execute("run", r#"{"command": "sleep 5", "timeout_secs": 1}"#).await;
        assert!(out.content.starts_with("timed out"), "{}", out.content);
        let fin = tb.execute("finish", r#"{"summary": "did it"}"#).await;
        assert_eq!(fin.finished.as_deref(), Some("did it"));
        assert_eq!(ToolBox::describe("edit_file", r#"{"path": "src/lib.rs"}"#), "src/lib.rs");
        assert_eq!(ToolBox::describe("run", r#"{"command": "cargo test\nmore"}"#), "cargo test");
    }
}
