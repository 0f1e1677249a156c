//! The v2 agent tool interface (a public contract, `../shared/DESIGN.md` and the README):
//! `list_files`, `read_file`, `write_file`, `edit_file`, `insert_lines`, `undo_edit`, `search`,
//! `search_code`, `run`, `finish`. Every failure — bad arguments, a path outside the workspace,
//! a missing file, an ambiguous edit — is a tool result the model can read and act on, never
//! a crash.
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
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
/// Characters of one line `read_file` shows (a minified file is one line of megabytes).
const MAX_READ_LINE_CHARS: usize = 2_000;
/// Earlier versions `undo_edit` keeps per file.
const UNDO_DEPTH: usize = 20;
/// Lines of context shown around an edit's changed region, and lines shown at most.
const EDIT_CONTEXT: usize = 3;
const EDIT_SHOWN_LINES: usize = 40;
/// Bytes of a command's output `run` answers with (both streams, heads and tails).
const RUN_OUTPUT_BYTES: usize = 20 * 1024;

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
    /// What this task's tools did to its files: which it read (write_file may replace those)
    /// and their earlier versions (undo_edit). Shared by the toolbox's clones.
    files: Arc<Mutex<TaskFiles>>,
}

/// The files one task's agent knows and has changed.
#[derive(Debug, Default)]
struct TaskFiles {
    /// Files read or written by this task (relative to the root).
    known: HashSet<PathBuf>,
    /// Each changed file's earlier versions, the latest last (`None`: it did not exist).
    history: HashMap<PathBuf, std::collections::VecDeque<Option<Vec<u8>>>>,
}

/// The version of the agent tool interface: v2 (`insert_lines`, `undo_edit`, `write_file`'s
/// `overwrite`, tolerant `edit_file`, head and tail of `run`), with `search_code`.
pub const TOOL_INTERFACE_VERSION: &str = "2.0";

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
    #[serde(default)]
    overwrite: bool,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InsertArgs {
    path: String,
    line: usize,
    text: String,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UndoArgs {
    path: String,
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
            files: Arc::new(Mutex::new(TaskFiles::default())),
        })
    }

    /// Records that this task has read `path` (a task resumed from the store gets back
    /// what its recorded calls read, so `write_file` may replace those files).
    pub fn note_read(&self, path: &str) {
        if let Ok(rel) = self.fs.check(path)
            && let Ok(mut files) = self.files.lock()
        {
            files.known.insert(rel);
        }
    }

    fn knows(&self, rel: &Path) -> bool {
        self.files.lock().is_ok_and(|f| f.known.contains(rel))
    }

    /// Writes `bytes` at `rel`, keeping `before` (what the caller read there; `None`: nothing)
    /// for `undo_edit`.
    fn write_keeping(
        &self,
        shown: &str,
        rel: &Path,
        bytes: &[u8],
        before: Option<Vec<u8>>,
    ) -> Result<bool, ToolOutcome> {
        let existed =
            self.fs.write(rel, bytes).map_err(|e| ToolOutcome::err(format!("cannot write `{shown}`: {e}")))?;
        if let Ok(mut files) = self.files.lock() {
            files.known.insert(rel.to_path_buf());
            let versions = files.history.entry(rel.to_path_buf()).or_default();
            if versions.len() == UNDO_DEPTH {
                versions.pop_front();
            }
            versions.push_back(before);
        }
        Ok(existed)
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
                "Read a text file, with line numbers. Use offset and limit (in lines) for large files; long lines are cut with a marker.",
                json!({"type": "object", "properties": {"path": {"type": "string"}, "offset": {"type": "integer", "minimum": 1, "description": "First line to read (1-based)."}, "limit": {"type": "integer", "minimum": 1, "description": "Number of lines."}}, "required": ["path"], "additionalProperties": false}),
            ),
            spec(
                "write_file",
                "Create a file with the given content (parent directories are created). An existing file is replaced only if you read it in this task, or with overwrite: true; to change part of a file use edit_file. Write the whole content: placeholders such as `# ... rest unchanged` are refused.",
                json!({"type": "object", "properties": {"path": {"type": "string"}, "content": {"type": "string"}, "overwrite": {"type": "boolean", "description": "Replace an existing file you have not read."}}, "required": ["path", "content"], "additionalProperties": false}),
            ),
            spec(
                "edit_file",
                "Replace the one occurrence of old_text with new_text. Copy old_text from read_file's output without the line numbers, with enough lines to be unique; differences in trailing whitespace and indentation are tolerated, line endings are kept. Answers with the changed lines and any syntax error the edit introduced.",
                json!({"type": "object", "properties": {"path": {"type": "string"}, "old_text": {"type": "string"}, "new_text": {"type": "string"}}, "required": ["path", "old_text", "new_text"], "additionalProperties": false}),
            ),
            spec(
                "insert_lines",
                "Insert text after a line of a file (line 0: at the top). Answers with the changed lines.",
                json!({"type": "object", "properties": {"path": {"type": "string"}, "line": {"type": "integer", "minimum": 0, "description": "The line to insert after (0: before the first)."}, "text": {"type": "string"}}, "required": ["path", "line", "text"], "additionalProperties": false}),
            ),
            spec(
                "undo_edit",
                "Put a file back as it was before your last change to it in this task (write_file, edit_file, insert_lines); a file you created is removed.",
                json!({"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"], "additionalProperties": false}),
            ),
            spec(
                "search",
                "Search file contents with a regular expression. Returns matching lines as path:line:text.",
                json!({"type": "object", "properties": {"pattern": {"type": "string", "description": "Rust regex syntax."}, "path": {"type": "string", "description": "Directory or file to search; default the root."}}, "required": ["pattern"], "additionalProperties": false}),
            ),
            spec(
                "run",
                "Run a shell command in the workspace: a fresh shell each time (cd and variables do not carry over), sandboxed (no network, no git; writes only inside the workspace and /tmp; background processes end with the command). Returns the exit code and the head and tail of stdout/stderr; pipe through grep, head or sed to see the rest.",
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
            "insert_lines" => self.insert_lines(arguments),
            "undo_edit" => self.undo_edit(arguments),
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
                "unknown tool `{other}`; the tools are list_files, read_file, write_file, edit_file, insert_lines, undo_edit, search, search_code, run, finish"
            ))),
        };
        let mut outcome = result.unwrap_or_else(|e| e);
        // Every tool's answer fits its share of the window (`run` and `read_file` already cut
        // theirs with more care): a listing or a search over a large tree keeps its start.
        let limit = self.read_budget + self.read_budget / 8;
        if outcome.content.len() > limit && !matches!(name, "run" | "read_file") {
            let cut = crate::sandbox::prefix_at_line(&outcome.content, self.read_budget).len();
            let left = outcome.content.len() - cut;
            outcome.content.truncate(cut);
            outcome.content.push_str(&format!(
                "[... {left} more characters left out to fit the context window; narrow the path or pattern]"
            ));
        }
        outcome
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
            // At least one line, then only what fits the budget.
            if i + 1 > offset && out.len() + line.len().min(MAX_READ_LINE_CHARS * 4) > self.read_budget {
                break;
            }
            let line = line.strip_suffix('\r').unwrap_or(line);
            let _ = writeln!(out, "{:>6}\t{}", i + 1, crate::edit::clip_line(line, MAX_READ_LINE_CHARS));
            last = i + 1;
        }
        if last < total {
            let _ = write!(out, "... ({total} lines in all; read on with offset {})", last + 1);
        }
        if let Ok(mut files) = self.files.lock() {
            files.known.insert(path);
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
        if let Some((line, text)) = crate::edit::elided(&args.content) {
            return Err(ToolOutcome::err(format!(
                "write_file refused: line {line} of the content, `{text}`, stands for code left out, and would \
                 replace that code in the file. Write the file's whole content, or change part of it with \
                 edit_file. Nothing was written."
            )));
        }
        if self.fs.exists(&path) && !args.overwrite && !self.knows(&path) {
            return Err(ToolOutcome::err(format!(
                "`{}` already exists and this task has not read it: read it first (read_file) and change it \
                 with edit_file, or pass \"overwrite\": true to replace it whole. Nothing was written.",
                args.path
            )));
        }
        let before = if self.fs.exists(&path) { self.fs.read(&path).ok() } else { None };
        let existed = self.write_keeping(&args.path, &path, args.content.as_bytes(), before)?;
        let lines = args.content.lines().count();
        Ok(ToolOutcome::ok(format!("{} `{}` ({lines} lines)", if existed { "replaced" } else { "created" }, args.path)))
    }

    /// A file's text for an edit: its bytes as UTF-8, line endings made `\n`.
    fn text_of(&self, shown: &str, rel: &Path) -> Result<(String, crate::edit::Text), ToolOutcome> {
        let bytes = self.fs.read(rel).map_err(|e| ToolOutcome::err(format!("cannot read `{shown}`: {e}")))?;
        let raw = String::from_utf8(bytes)
            .map_err(|_| ToolOutcome::err(format!("`{shown}` is not UTF-8 text; rewrite it with write_file")))?;
        let text = crate::edit::Text::new(&raw);
        Ok((raw, text))
    }

    /// Writes an edit and answers with the changed region and any syntax error it introduced.
    fn apply(
        &self,
        shown: &str,
        rel: &Path,
        (raw, before): (String, crate::edit::Text),
        edited: &crate::edit::Edited,
        verb: &str,
    ) -> Result<ToolOutcome, ToolOutcome> {
        // The file as read for the edit is what undo restores: no second read.
        self.write_keeping(shown, rel, before.encode(&edited.text).as_bytes(), Some(raw.into_bytes()))?;
        let (a, b) = (edited.first_line, edited.last_line);
        let lines = if a == b { format!("line {a}") } else { format!("lines {a}-{b}") };
        let mut out = format!("{verb} `{shown}` at {lines}{}:\n", edited.tier.note());
        out.push_str(&crate::edit::region(&edited.text, a, b, EDIT_CONTEXT, EDIT_SHOWN_LINES));
        if let Some(warning) = crate::syntax::introduced(shown, &before.lf, &edited.text) {
            out.push_str(&warning);
        }
        Ok(ToolOutcome::ok(out.trim_end().to_string()))
    }

    fn edit_file(&self, arguments: &str) -> Result<ToolOutcome, ToolOutcome> {
        use crate::edit::{EditError, Tier};
        let args: EditArgs = parse("edit_file", arguments)?;
        if args.old_text.is_empty() {
            return Err(ToolOutcome::err(
                "old_text is empty; to create a file use write_file, to add lines insert_lines",
            ));
        }
        let path = self.path(&args.path)?;
        self.guard(&args.path, &path)?;
        let read = self.text_of(&args.path, &path)?;
        let text = &read.1;
        let old = args.old_text.replace("\r\n", "\n");
        let new = args.new_text.replace("\r\n", "\n");
        if let Some((line, elision)) = crate::edit::elided(&new).filter(|(_, l)| !old.contains(l.as_str())) {
            return Err(ToolOutcome::err(format!(
                "edit_file refused: line {line} of new_text, `{elision}`, stands for code left out, and would \
                 replace it. Put the code itself in new_text. Nothing was changed."
            )));
        }
        match crate::edit::replace(&text.lf, &old, &new) {
            Ok(edited) => self.apply(&args.path, &path, read, &edited, "edited"),
            Err(EditError::NotFound) => Err(ToolOutcome::err(format!(
                "old_text was not found in `{}` (not even ignoring whitespace and indentation). Read the part of the \
                 file you mean to change again and copy old_text from it, without the line numbers. Nothing was changed.",
                args.path
            ))),
            Err(EditError::Ambiguous(tier, lines)) => {
                let how = match tier {
                    Tier::Exact => "",
                    _ => " (ignoring whitespace)",
                };
                let at: Vec<String> = lines.iter().take(20).map(|l| l.to_string()).collect();
                Err(ToolOutcome::err(format!(
                    "old_text occurs {} times in `{}`{how}, starting at lines {}: include more surrounding lines so it \
                     occurs once. Nothing was changed.",
                    lines.len(),
                    args.path,
                    at.join(", ")
                )))
            }
        }
    }

    fn insert_lines(&self, arguments: &str) -> Result<ToolOutcome, ToolOutcome> {
        let args: InsertArgs = parse("insert_lines", arguments)?;
        let path = self.path(&args.path)?;
        self.guard(&args.path, &path)?;
        let read = self.text_of(&args.path, &path)?;
        let text = &read.1;
        let insert = args.text.replace("\r\n", "\n");
        match crate::edit::insert_after(&text.lf, args.line, &insert) {
            Ok(edited) => self.apply(&args.path, &path, read, &edited, "inserted into"),
            Err(total) => Err(ToolOutcome::err(format!(
                "line {} is past the end of `{}` ({total} lines); use a line from 0 to {total}",
                args.line, args.path
            ))),
        }
    }

    fn undo_edit(&self, arguments: &str) -> Result<ToolOutcome, ToolOutcome> {
        let args: UndoArgs = parse("undo_edit", arguments)?;
        let path = self.path(&args.path)?;
        self.guard(&args.path, &path)?;
        let previous = self
            .files
            .lock()
            .ok()
            .and_then(|mut f| f.history.get_mut(&path).and_then(std::collections::VecDeque::pop_back));
        let Some(previous) = previous else {
            return Err(ToolOutcome::err(format!(
                "there is no change of `{}` by this task to undo (changes made by commands are not tracked)",
                args.path
            )));
        };
        let fail = |e: crate::fsops::FsError| ToolOutcome::err(format!("cannot restore `{}`: {e}", args.path));
        match previous {
            Some(bytes) => {
                self.fs.write(&path, &bytes).map_err(fail)?;
                let lines = String::from_utf8_lossy(&bytes).lines().count();
                Ok(ToolOutcome::ok(format!(
                    "restored `{}` as it was before your last change ({lines} lines)",
                    args.path
                )))
            }
            None => {
                self.fs.remove(&path).map_err(fail)?;
                Ok(ToolOutcome::ok(format!("removed `{}`, which this task had created", args.path)))
            }
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
        let text = outcome.render(RUN_OUTPUT_BYTES.min(self.read_budget));
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
        assert_eq!(
            e.content,
            "edited `src/lib.rs` at line 2:\n     1\tfn a() {}\n     2\tfn c() {}\n     3\tfn a2() {}"
        );
        let s = tb.execute("search", r#"{"pattern": "fn (c|x)"}"#).await;
        assert_eq!(s.content, "src/lib.rs:2:fn c() {}\nsrc/new/mod.rs:1:pub fn x() {}\n");
    }

    fn args(v: serde_json::Value) -> String {
        v.to_string()
    }

    #[tokio::test]
    async fn a_two_line_edit_of_a_crlf_file_succeeds_and_keeps_crlf() {
        let (d, tb) = toolbox();
        let file = d.path().join("ws/win.py");
        std::fs::write(&file, "def f():\r\n    return 1\r\n\r\nprint(f())\r\n").unwrap();
        // What the model saw: read_file shows no \r, so old_text has none.
        let read = tb.execute("read_file", &args(json!({"path": "win.py"}))).await;
        assert!(!read.content.contains('\r'), "{:?}", read.content);
        let e = tb
            .execute(
                "edit_file",
                &args(json!({"path": "win.py", "old_text": "def f():\n    return 1", "new_text": "def f():\n    return 2"})),
            )
            .await;
        assert!(!e.is_error, "{}", e.content);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "def f():\r\n    return 2\r\n\r\nprint(f())\r\n");
        // An edit that breaks the syntax is made, and says so with the line.
        let e = tb
            .execute("edit_file", &args(json!({"path": "win.py", "old_text": "return 2", "new_text": "return (2"})))
            .await;
        assert!(!e.is_error && e.content.contains("syntax error at line"), "{}", e.content);
        // undo_edit puts it back, twice over; then there is nothing left to undo.
        assert!(!tb.execute("undo_edit", &args(json!({"path": "win.py"}))).await.is_error);
        assert!(std::fs::read_to_string(&file).unwrap().contains("return 2\r\n"));
        assert!(!tb.execute("undo_edit", &args(json!({"path": "win.py"}))).await.is_error);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "def f():\r\n    return 1\r\n\r\nprint(f())\r\n");
        let none = tb.execute("undo_edit", &args(json!({"path": "win.py"}))).await;
        assert!(none.is_error && none.content.contains("no change"), "{}", none.content);
    }

    #[tokio::test]
    async fn write_file_replaces_only_what_the_task_read_and_refuses_elisions() {
        let (d, tb) = toolbox();
        let file = d.path().join("ws/src/lib.rs");
        let before = std::fs::read_to_string(&file).unwrap();
        let w = tb.execute("write_file", &args(json!({"path": "src/lib.rs", "content": "fn z() {}\n"}))).await;
        assert!(w.is_error && w.content.contains("has not read it"), "{}", w.content);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), before);
        let lazy = json!({"path": "src/lib.rs", "content": "fn a() {}\n// ... rest unchanged\n", "overwrite": true});
        let w = tb.execute("write_file", &args(lazy)).await;
        assert!(w.is_error && w.content.contains("stands for code left out"), "{}", w.content);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), before);
        // Read first, then it may be replaced; or with overwrite.
        tb.execute("read_file", &args(json!({"path": "src/lib.rs"}))).await;
        let w = tb.execute("write_file", &args(json!({"path": "src/lib.rs", "content": "fn z() {}\n"}))).await;
        assert_eq!(w.content, "replaced `src/lib.rs` (1 lines)");
        std::fs::write(d.path().join("ws/other.rs"), "old\n").unwrap();
        let w =
            tb.execute("write_file", &args(json!({"path": "other.rs", "content": "new\n", "overwrite": true}))).await;
        assert!(!w.is_error, "{}", w.content);
        // A file the task created is removed by undo.
        tb.execute("write_file", &args(json!({"path": "made.txt", "content": "x\n"}))).await;
        let u = tb.execute("undo_edit", &args(json!({"path": "made.txt"}))).await;
        assert!(!u.is_error && !d.path().join("ws/made.txt").exists(), "{}", u.content);
    }

    #[tokio::test]
    async fn edits_say_where_several_matches_are_and_insert_lines_inserts() {
        let (d, tb) = toolbox();
        let e =
            tb.execute("edit_file", &args(json!({"path": "src/lib.rs", "old_text": "fn a", "new_text": "x"}))).await;
        assert!(e.is_error && e.content.contains("starting at lines 1, 3"), "{}", e.content);
        let i = tb.execute("insert_lines", &args(json!({"path": "src/lib.rs", "line": 1, "text": "// one"}))).await;
        assert!(i.content.starts_with("inserted into `src/lib.rs` at line 2:"), "{}", i.content);
        assert_eq!(
            std::fs::read_to_string(d.path().join("ws/src/lib.rs")).unwrap(),
            "fn a() {}\n// one\nfn b() {}\nfn a2() {}\n"
        );
        let far = tb.execute("insert_lines", &args(json!({"path": "src/lib.rs", "line": 9, "text": "x"}))).await;
        assert!(far.is_error && far.content.contains("4 lines"), "{}", far.content);
    }

    #[tokio::test]
    async fn every_tool_answer_fits_the_budget() {
        let (d, tb) = toolbox();
        let tb = tb.with_read_budget(4_096);
        for i in 0..400 {
            std::fs::write(d.path().join(format!("ws/file_with_a_long_name_{i:04}.txt")), "needle\n").unwrap();
        }
        for (tool, args) in [("list_files", json!({})), ("search", json!({"pattern": "needle"}))] {
            let out = tb.execute(tool, &args.to_string()).await;
            assert!(out.content.len() < 4_096 + 200, "{tool}: {} bytes", out.content.len());
            assert!(out.content.ends_with("narrow the path or pattern]"), "{tool}");
        }
    }

    #[tokio::test]
    async fn a_300_kb_one_line_file_is_clipped() {
        let (d, tb) = toolbox();
        std::fs::write(d.path().join("ws/min.js"), "x".repeat(300_000)).unwrap();
        let r = tb.execute("read_file", &args(json!({"path": "min.js"}))).await;
        assert!(r.content.len() < 3_000, "{} bytes", r.content.len());
        assert!(r.content.contains("more characters on this line"), "{}", &r.content[..100]);
    }

    #[tokio::test]
    async fn tool_errors_are_results_the_model_can_read() {
        let (_d, tb) = toolbox();
        let cases = [
            ("edit_file", r#"{"path": "src/lib.rs", "old_text": "fn a", "new_text": "x"}"#, "occurs 2 times"),
            ("undo_edit", r#"{"path": "src/lib.rs"}"#, "no change"),
            ("insert_lines", r#"{"path": "src/lib.rs", "line": -1, "text": "x"}"#, "invalid arguments"),
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
