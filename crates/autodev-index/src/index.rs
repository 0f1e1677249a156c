//! The index on disk: a tantivy index of chunks and a manifest of the files it holds, each
//! with the git blob id it was indexed at. A refresh re-chunks only the files whose blob id
//! changed, drops the ones that are gone, and leaves the rest alone.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use tantivy::collector::TopDocs;
use tantivy::query::QueryParser;
use tantivy::schema::{
    Field, IndexRecordOption, STORED, STRING, Schema, TantivyDocument, TextFieldIndexing, TextOptions, Value,
};
use tantivy::tokenizer::{Language, LowerCaser, Stemmer, TextAnalyzer, TokenStream};
use tantivy::{Index, IndexReader, ReloadPolicy, Term, doc};

use crate::chunk::chunk_file;
use crate::tokens::CodeTokenizer;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("{0} is not a git repository (index a git checkout)")]
    NotARepository(String),
    #[error("git failed in {dir}: {message}")]
    Git { dir: String, message: String },
    #[error("index: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    #[error("index query: {0}")]
    Query(#[from] tantivy::query::QueryParserError),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("index manifest: {0}")]
    Manifest(#[from] serde_json::Error),
}

pub type Result<T> = std::result::Result<T, IndexError>;

/// Bumped when the schema changes: an index of another version is rebuilt.
const SCHEMA_VERSION: &str = "5";

/// Lines of a definition that make its head (doc and signature), and what the head weighs.
const HEAD_LINES: usize = 8;
const HEAD_BOOST: f32 = 3.0;

/// A definition's doc comment or docstring and signature: its first lines, and, when a
/// docstring starts further down (a Python signature spread over many lines, overloads), the
/// signature's first line and the docstring's first paragraph, so what the doc says is in the
/// head however long the signature is.
fn head_of(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut head: Vec<&str> = lines.iter().take(HEAD_LINES).copied().collect();
    let is_quote = |l: &str| {
        let t = l.trim_start().trim_start_matches(['r', 'b', 'u', 'R', 'B', 'U']);
        t.starts_with("\"\"\"") || t.starts_with("\'\'\'")
    };
    if let Some(at) = lines.iter().take(DOCSTRING_WITHIN).position(|l| is_quote(l))
        && at >= HEAD_LINES.saturating_sub(2)
    {
        head.truncate(2);
        for (i, l) in lines[at..].iter().enumerate() {
            if i > 0 && (l.trim().is_empty() || i >= HEAD_LINES) {
                break;
            }
            head.push(l);
            let t = l.trim();
            if i > 0 && (t.ends_with("\"\"\"") || t.ends_with("\'\'\'")) {
                break;
            }
        }
    }
    head.join("\n")
}

/// What the module doc weighs (it is shared by every chunk of the file: less than a
/// definition's own words).
const MODULE_BOOST: f32 = 1.0;
/// Characters of a module doc that are indexed.
const MODULE_DOC_CHARS: usize = 600;

/// The first paragraph of a file's own doc: Rust's leading `//!` lines, or a Python module's
/// docstring; empty for other files.
fn module_doc(path: &str, text: &str) -> String {
    let mut lines = text.lines().skip_while(|l| l.trim().is_empty() || l.trim_start().starts_with("#!"));
    let mut out = String::new();
    if path.ends_with(".rs") {
        for l in lines.take_while(|l| l.trim_start().starts_with("//!")) {
            let l = l.trim_start().trim_start_matches("//!").trim();
            if l.is_empty() && !out.is_empty() {
                break;
            }
            out.push_str(l);
            out.push(' ');
        }
    } else if path.ends_with(".py") || path.ends_with(".pyi") {
        let Some(first) = lines.find(|l| !l.trim_start().starts_with('#')) else { return out };
        let t = first.trim_start().trim_start_matches(['r', 'u', 'R', 'U']);
        let Some(quote) = ["\"\"\"", "'''"].into_iter().find(|q| t.starts_with(q)) else { return out };
        let body = &t[3..];
        if let Some(end) = body.find(quote) {
            return body[..end].chars().take(MODULE_DOC_CHARS).collect();
        }
        out.push_str(body);
        out.push(' ');
        for l in lines {
            let l = l.trim();
            if l.is_empty() || l.contains(quote) {
                out.push_str(l.split(quote).next().unwrap_or(""));
                break;
            }
            out.push_str(l);
            out.push(' ');
        }
    }
    out.chars().take(MODULE_DOC_CHARS).collect()
}

/// How far down a definition its docstring is looked for.
const DOCSTRING_WITHIN: usize = 40;

/// What a chunk's score keeps when it has none of the question's words besides those that
/// matched (its score is multiplied by this plus the share of the question's words it has).
const COVERAGE_FLOOR: f32 = 0.5;

/// Candidates re-ranked, at least (the same for every `limit` up to 22, so the first five do
/// not depend on how many were asked for).
const CANDIDATES: usize = 100;

/// What a fragment (a constant, a window of lines) scores relative to a whole definition.
const FRAGMENT_WEIGHT: f32 = 0.75;

/// Words of a question that say nothing about code (after stemming), left out of coverage.
const STOP_WORDS: &[&str] = &[
    "a", "about", "an", "and", "are", "as", "at", "be", "by", "can", "do", "doe", "for", "from", "how", "i", "in",
    "is", "it", "it'", "its", "my", "of", "on", "or", "should", "that", "the", "their", "them", "thi", "this", "to",
    "what", "when", "where", "which", "whi", "who", "with", "doe", "does",
];

/// What a test file's chunk scores, relative to code, for a question not about tests.
const TEST_WEIGHT: f32 = 0.5;

/// Whether a path is a test file or under a tests directory (Rust, Python, JS/TS, Go).
fn is_test_path(path: &str) -> bool {
    let file = path.rsplit('/').next().unwrap_or(path);
    path.split('/').any(|c| matches!(c, "tests" | "test" | "__tests__" | "spec"))
        || file.starts_with("test_")
        || file.ends_with("_test.go")
        || file.ends_with("_test.py")
        || file.contains(".test.")
        || file.contains(".spec.")
}

/// Whether a definition is a test by its name: inside a Rust `mod tests`, a Python
/// `test_` function or `Test` class.
fn is_test_name(name: &str) -> bool {
    name.starts_with("tests::")
        || name.contains("::tests::")
        || name.rsplit(['.', ':']).next().is_some_and(|n| n.starts_with("test_"))
        || name.split('.').next().is_some_and(|n| n.starts_with("Test"))
}

/// A chunk's key in the index and in a vector store.
pub fn chunk_id(file: &str, start: u64, end: u64) -> String {
    format!("{file}:{start}-{end}")
}

/// Files larger than this are not indexed (generated or vendored, most likely).
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// One search result.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Hit {
    /// The chunk's key, `path:start-end`.
    pub id: String,
    pub path: String,
    pub start_line: u64,
    pub end_line: u64,
    pub score: f32,
    /// The definition's name, empty for a line window.
    pub name: String,
    pub text: String,
}

/// What a refresh did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Refresh {
    pub files: usize,
    pub indexed: usize,
    pub removed: usize,
    pub unchanged: usize,
    pub chunks_added: usize,
}

struct Fields {
    /// `file:start-end`, the chunk's key (vectors are stored under it).
    id: Field,
    path: Field,
    file: Field,
    name: Field,
    /// A definition's first lines: its doc comment or docstring and signature, searched on
    /// their own so a long function is not outranked by short ones for what its doc says
    /// (BM25 normalises by length).
    head: Field,
    /// The first paragraph of the file's own doc (Rust `//!`, a Python module docstring),
    /// for each of its chunks: what the module is about, which a function's own words may
    /// not say (`fit` in the module about keeping a conversation inside the window).
    module: Field,
    kind: Field,
    text: Field,
    start: Field,
    end: Field,
}

pub struct CodeIndex {
    dir: PathBuf,
    repo: PathBuf,
    index: Index,
    reader: IndexReader,
    f: Fields,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let code = |stored: bool| {
        let o = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer("code")
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        );
        if stored { o.set_stored() } else { o }
    };
    let f = Fields {
        id: b.add_text_field("id", STRING | STORED),
        path: b.add_text_field("path", code(true)),
        file: b.add_text_field("file", STRING | STORED),
        name: b.add_text_field("name", code(true)),
        head: b.add_text_field("head", code(false)),
        module: b.add_text_field("module", code(true)),
        kind: b.add_text_field("kind", STRING | STORED),
        text: b.add_text_field("text", code(true)),
        start: b.add_u64_field("start_line", STORED),
        end: b.add_u64_field("end_line", STORED),
    };
    (b.build(), f)
}

/// Directories searched for git, in order: the same fixed list as Autodev's own git
/// (`autodev_workspace::git`), never the caller's PATH, which may hold a planted `git`.
const GIT_DIRS: &[&str] = &["/usr/local/bin", "/usr/bin", "/bin"];

/// git as Autodev runs it on a directory an agent wrote: a fixed binary, an empty
/// environment (no `GIT_DIR` or config from the caller, no global or system config), no
/// hooks, no fsmonitor (a command git would start). The index is built on the host from a
/// run's worktree, so the worktree is treated as hostile (see also `open_source`).
fn git_command(repo: &Path) -> std::io::Result<Command> {
    let binary = GIT_DIRS.iter().map(|d| Path::new(d).join("git")).find(|p| p.is_file()).ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::NotFound, "no git in /usr/local/bin, /usr/bin or /bin")
    })?;
    let mut cmd = Command::new(binary);
    cmd.env_clear()
        .env("PATH", GIT_DIRS.join(":"))
        .env("HOME", "/nonexistent/autodev-git-home")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .arg("-C")
        .arg(repo)
        .args(["-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false"]);
    Ok(cmd)
}

/// The source tree as a directory handle: every read below goes through it, so no path
/// (a tracked folder an agent replaced with a link to the data directory, `../`, an
/// absolute link) reaches outside the tree.
fn open_source(repo: &Path) -> Result<cap_std::fs::Dir> {
    Ok(cap_std::fs::Dir::open_ambient_dir(repo, cap_std::ambient_authority())?)
}

fn git(repo: &Path, args: &[&str]) -> Result<Vec<u8>> {
    let out = git_command(repo)?.args(args).output()?;
    if !out.status.success() {
        return Err(IndexError::Git {
            dir: repo.display().to_string(),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out.stdout)
}

/// Every file git would show (tracked, and untracked but not ignored), with its blob id as
/// in the working tree.
fn files_with_blobs(repo: &Path) -> Result<BTreeMap<String, String>> {
    let mut files = BTreeMap::new();
    let staged = git(repo, &["ls-files", "-s", "-z"])?;
    for entry in staged.split(|b| *b == 0).filter(|e| !e.is_empty()) {
        let entry = String::from_utf8_lossy(entry);
        // `<mode> <blob> <stage>\t<path>`; submodules (160000) and symlinks (120000) are
        // skipped: a committed link to `/etc/passwd` must not put that file in the index.
        let Some((meta, path)) = entry.split_once('\t') else { continue };
        let mut parts = meta.split(' ');
        let (mode, blob) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
        if mode != "160000" && mode != "120000" {
            files.insert(path.to_string(), blob.to_string());
        }
    }
    // Modified and untracked files: their blob ids as they are now.
    let mut changed: Vec<String> = Vec::new();
    for args in [&["diff", "--name-only", "-z"][..], &["ls-files", "--others", "--exclude-standard", "-z"][..]] {
        let out = git(repo, args)?;
        changed
            .extend(out.split(|b| *b == 0).filter(|e| !e.is_empty()).map(|e| String::from_utf8_lossy(e).into_owned()));
    }
    // Regular files inside the tree only: a path through a link that leaves it is refused by
    // the handle, a link as the last component is not a regular file.
    let source = open_source(repo)?;
    let regular = |p: &str| source.symlink_metadata(p).is_ok_and(|m| m.file_type().is_file());
    changed.retain(|p| regular(p));
    files.retain(|p, _| regular(p));
    if !changed.is_empty() {
        let mut child = git_command(repo)?
            .args(["hash-object", "--stdin-paths"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().ok_or_else(|| std::io::Error::other("no stdin"))?;
            for p in &changed {
                writeln!(stdin, "{p}")?;
            }
        }
        let out = child.wait_with_output()?;
        for (p, blob) in changed.iter().zip(String::from_utf8_lossy(&out.stdout).lines()) {
            files.insert(p.clone(), blob.to_string());
        }
    }
    Ok(files)
}

/// A regular file of the source tree, read through its handle (see `open_source`), up to
/// the size limit; `None` for anything else.
fn read_source(source: &cap_std::fs::Dir, path: &str) -> Option<Vec<u8>> {
    use std::io::Read;
    if !source.symlink_metadata(path).ok()?.file_type().is_file() {
        return None;
    }
    let file = source.open(path).ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() || meta.len() > MAX_FILE_BYTES {
        return None;
    }
    let mut text = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_FILE_BYTES).read_to_end(&mut text).ok()?;
    Some(text)
}

impl CodeIndex {
    /// Opens (or creates) the index of `repo` kept in `dir`.
    pub fn open(dir: &Path, repo: &Path) -> Result<Self> {
        let repo = repo.canonicalize()?;
        if git(&repo, &["rev-parse", "--git-dir"]).is_err() {
            return Err(IndexError::NotARepository(repo.display().to_string()));
        }
        let version = dir.join("schema-version");
        if dir.join("meta.json").is_file() && std::fs::read_to_string(&version).ok().as_deref() != Some(SCHEMA_VERSION)
        {
            tracing::info!(dir = %dir.display(), "the index was built by another version; rebuilding it");
            std::fs::remove_dir_all(dir)?;
        }
        std::fs::create_dir_all(dir)?;
        std::fs::write(&version, SCHEMA_VERSION)?;
        let (schema, f) = schema();
        let index = match Index::open_in_dir(dir) {
            Ok(i) => i,
            Err(_) => Index::create_in_dir(dir, schema)?,
        };
        let analyzer =
            TextAnalyzer::builder(CodeTokenizer).filter(LowerCaser).filter(Stemmer::new(Language::English)).build();
        index.tokenizers().register("code", analyzer);
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into()?;
        Ok(Self { dir: dir.to_path_buf(), repo, index, reader, f })
    }

    fn manifest_path(&self) -> PathBuf {
        self.dir.join("files.json")
    }

    /// The directory the index is kept in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The files indexed, each with the git blob id it was indexed at.
    pub fn manifest(&self) -> BTreeMap<String, String> {
        std::fs::read_to_string(self.manifest_path())
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    /// Whether the index has ever been built.
    pub fn is_built(&self) -> bool {
        self.manifest_path().is_file()
    }

    /// Brings the index up to date with the repository's working tree.
    ///
    /// Refreshes of one index are serialised across processes by a lock file beside it
    /// (tantivy allows one writer; two workers planning runs of one repository would
    /// otherwise fail on its lock).
    pub fn refresh(&mut self) -> Result<Refresh> {
        let lock_path = self.dir.with_extension("lock");
        let lock = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path)?;
        lock.lock()?;
        let result = self.refresh_locked();
        let _ = lock.unlock();
        result
    }

    fn refresh_locked(&mut self) -> Result<Refresh> {
        // Another process may have refreshed while this one waited for the lock.
        self.reader.reload()?;
        let current = files_with_blobs(&self.repo)?;
        let old = self.manifest();
        let mut report = Refresh { files: current.len(), ..Refresh::default() };
        let mut writer: tantivy::IndexWriter = self.index.writer(50_000_000)?;
        for path in old.keys().filter(|p| !current.contains_key(*p)) {
            writer.delete_term(Term::from_field_text(self.f.file, path));
            report.removed += 1;
        }
        let source = open_source(&self.repo)?;
        let mut manifest = BTreeMap::new();
        for (path, blob) in &current {
            if old.get(path) == Some(blob) {
                report.unchanged += 1;
                manifest.insert(path.clone(), blob.clone());
                continue;
            }
            writer.delete_term(Term::from_field_text(self.f.file, path));
            let text = read_source(&source, path);
            // Binary files (a NUL byte) and unreadable ones are recorded, not indexed.
            if let Some(text) = text.filter(|t| !t.contains(&0)).map(|t| String::from_utf8_lossy(&t).into_owned()) {
                let module = module_doc(path, &text);
                for c in chunk_file(path, &text) {
                    let head = if c.name.is_empty() { String::new() } else { head_of(&c.text) };
                    writer.add_document(doc!(
                        self.f.head => head,
                        self.f.module => module.as_str(),
                        self.f.id => chunk_id(path, c.start_line as u64, c.end_line as u64),
                        self.f.path => c.path,
                        self.f.file => path.as_str(),
                        self.f.name => c.name,
                        self.f.kind => c.kind,
                        self.f.text => c.text,
                        self.f.start => c.start_line as u64,
                        self.f.end => c.end_line as u64,
                    ))?;
                    report.chunks_added += 1;
                }
            }
            report.indexed += 1;
            manifest.insert(path.clone(), blob.clone());
        }
        writer.commit()?;
        // The manifest after the commit: a crash between them re-indexes, never skips.
        let tmp = self.dir.join("files.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(&manifest)?)?;
        std::fs::rename(&tmp, self.manifest_path())?;
        self.reader.reload()?;
        Ok(report)
    }

    /// The best chunks for a query in plain words or identifiers. Names weigh most, then
    /// paths, then the text.
    pub fn search(&self, query: &str, limit: usize) -> Result<Vec<Hit>> {
        let searcher = self.reader.searcher();
        let mut qp = QueryParser::for_index(
            &self.index,
            vec![self.f.name, self.f.head, self.f.path, self.f.text, self.f.module],
        );
        qp.set_field_boost(self.f.name, 3.0);
        qp.set_field_boost(self.f.head, HEAD_BOOST);
        qp.set_field_boost(self.f.module, MODULE_BOOST);
        qp.set_field_boost(self.f.path, 1.5);
        // Plain words, not query syntax: a question's `?` or `:` is not an operator.
        let words: String =
            query.chars().map(|c| if c.is_alphanumeric() || c == '_' || c.is_whitespace() { c } else { ' ' }).collect();
        let (q, _) = qp.parse_query_lenient(&words);
        // More candidates than asked for, re-ranked: a chunk whose text another chunk already
        // has (the same migration for two databases, a vendored copy) is dropped, and tests
        // weigh less than the code they test unless the question is about tests.
        let wanted = limit.max(1);
        let top = searcher.search(&q, &TopDocs::with_limit((wanted * 4 + 10).max(CANDIDATES)).order_by_score())?;
        let about_tests = words.split_whitespace().any(|w| w.to_lowercase().starts_with("test"));
        let mut query_terms = self.terms(&words);
        query_terms.retain(|t| !STOP_WORDS.contains(&t.as_str()));
        let mut seen = std::collections::HashSet::new();
        let mut module_terms: std::collections::HashMap<String, std::collections::HashSet<String>> =
            std::collections::HashMap::new();
        let mut hits = Vec::new();
        for (score, addr) in top {
            let d: TantivyDocument = searcher.doc(addr)?;
            let hit = self.hit(&d, score);
            if !seen.insert(hit.text.clone()) {
                continue;
            }
            // Whole definitions (functions, methods, types) above fragments: a constant or a
            // static, or a window of lines cut from a file no grammar reads.
            let kind = d.get_first(self.f.kind).and_then(|v| v.as_str()).unwrap_or_default();
            let whole = !hit.name.is_empty() && !matches!(kind, "const" | "static");
            let is_test = is_test_path(&hit.path) || is_test_name(&hit.name);
            let weight = if !about_tests && is_test { TEST_WEIGHT } else { 1.0 };
            // Coverage (Lucene's classic coordination factor): a chunk that has more of the
            // question's words ranks above one that repeats a few of them.
            let coverage = if query_terms.is_empty() {
                1.0
            } else {
                let have = self.terms(&format!("{} {} {}", hit.name, hit.path, head_of(&hit.text)));
                // The module doc is the same for every chunk of a file: tokenised once a query.
                let module = module_terms.entry(hit.path.clone()).or_insert_with(|| {
                    self.terms(d.get_first(self.f.module).and_then(|v| v.as_str()).unwrap_or_default())
                });
                let found = query_terms.iter().filter(|t| have.contains(*t) || module.contains(*t)).count();
                found as f32 / query_terms.len() as f32
            };
            let shape = if whole { 1.0 } else { FRAGMENT_WEIGHT };
            hits.push(Hit { score: hit.score * weight * shape * (COVERAGE_FLOOR + coverage), ..hit });
        }
        hits.sort_by(|a, b| b.score.total_cmp(&a.score));
        hits.truncate(wanted);
        Ok(hits)
    }

    /// The distinct terms of `text` as the index sees them (split, lower-cased, stemmed).
    fn terms(&self, text: &str) -> std::collections::HashSet<String> {
        let mut out = std::collections::HashSet::new();
        if let Some(mut analyzer) = self.index.tokenizers().get("code") {
            let mut stream = analyzer.token_stream(text);
            while stream.advance() {
                out.insert(stream.token().text.clone());
            }
        }
        out
    }

    fn hit(&self, d: &TantivyDocument, score: f32) -> Hit {
        let s = |f: Field| d.get_first(f).and_then(|v| v.as_str()).unwrap_or_default().to_string();
        let n = |f: Field| d.get_first(f).and_then(|v| v.as_u64()).unwrap_or_default();
        Hit {
            id: s(self.f.id),
            path: s(self.f.path),
            start_line: n(self.f.start),
            end_line: n(self.f.end),
            score,
            name: s(self.f.name),
            text: s(self.f.text),
        }
    }

    fn by_term(&self, field: Field, value: &str) -> Result<Vec<Hit>> {
        let searcher = self.reader.searcher();
        let q = tantivy::query::TermQuery::new(Term::from_field_text(field, value), IndexRecordOption::Basic);
        let mut hits = Vec::new();
        for (_, addr) in searcher.search(&q, &TopDocs::with_limit(100_000).order_by_score())? {
            let d: TantivyDocument = searcher.doc(addr)?;
            hits.push(self.hit(&d, 0.0));
        }
        hits.sort_by_key(|h| (h.start_line, h.end_line));
        Ok(hits)
    }

    /// The chunks of one file, in line order.
    pub fn chunks_of(&self, file: &str) -> Result<Vec<Hit>> {
        self.by_term(self.f.file, file)
    }

    /// The chunk stored under `id`, if the index holds it.
    pub fn get(&self, id: &str) -> Result<Option<Hit>> {
        Ok(self.by_term(self.f.id, id)?.into_iter().next())
    }

    /// The number of chunks in the index.
    pub fn len(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `path:start-end` is within a chunk the index holds (a citation's check).
    pub fn covers(&self, path: &str, start: u64, end: u64) -> Result<bool> {
        Ok(start <= end && self.chunks_of(path)?.iter().any(|c| c.start_line <= start && end <= c.end_line))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_module_doc_is_its_first_paragraph() {
        let rs = "//! Keeping a conversation inside the window.\n//! More here.\n//!\n//! Second paragraph.\nuse x;\n";
        assert_eq!(module_doc("a.rs", rs).trim(), "Keeping a conversation inside the window. More here.");
        let py = "#!/usr/bin/env python3\n# comment\n\"\"\"Utility functions for copying\nand archiving files.\n\nXXX\"\"\"\nimport os\n";
        assert_eq!(module_doc("shutil.py", py).trim(), "Utility functions for copying and archiving files.");
        assert_eq!(module_doc("one.py", "\"\"\"One line.\"\"\"\n"), "One line.");
        assert_eq!(module_doc("a.go", "// Package a.\n"), "");
        assert_eq!(module_doc("b.rs", "fn main() {}\n"), "");
    }

    fn run(dir: &Path, args: &[&str]) {
        let ok = Command::new("git").arg("-C").arg(dir).args(args).status().unwrap().success();
        assert!(ok, "git {args:?}");
    }

    fn repo() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        run(d.path(), &["init", "-q", "-b", "main"]);
        std::fs::create_dir_all(d.path().join("src")).unwrap();
        std::fs::write(
            d.path().join("src/budget.rs"),
            "/// Reserves the worst case of a model call against the monthly budget.\npub fn reserve_cost(micros: i64) -> bool {\n    micros < 100\n}\n",
        )
        .unwrap();
        std::fs::write(d.path().join("src/http.rs"), "pub fn retry_after(headers: &str) -> u64 {\n    30\n}\n")
            .unwrap();
        std::fs::write(d.path().join("README.md"), "# Demo\n\nHow to configure the budget.\n").unwrap();
        run(d.path(), &["add", "-A"]);
        run(d.path(), &["-c", "user.email=a@b", "-c", "user.name=a", "commit", "-qm", "init"]);
        d
    }

    #[test]
    fn a_repository_is_indexed_searched_and_refreshed_incrementally() {
        let r = repo();
        let home = tempfile::tempdir().unwrap();
        let mut idx = CodeIndex::open(home.path(), r.path()).unwrap();
        let first = idx.refresh().unwrap();
        assert_eq!((first.files, first.indexed, first.unchanged), (3, 3, 0));
        let hits = idx.search("where is the monthly budget reserved?", 5).unwrap();
        assert_eq!(hits[0].path, "src/budget.rs");
        assert_eq!((hits[0].start_line, hits[0].end_line, hits[0].name.as_str()), (1, 4, "reserve_cost"));
        // Identifiers split: "retry after" finds `retry_after`.
        assert_eq!(idx.search("retry after", 1).unwrap()[0].name, "retry_after");
        assert!(idx.covers("src/budget.rs", 2, 3).unwrap());
        assert!(!idx.covers("src/budget.rs", 2, 30).unwrap());
        // One changed file, one removed, one new (untracked): only those are touched.
        std::fs::write(r.path().join("src/http.rs"), "pub fn backoff_delay() -> u64 {\n    1\n}\n").unwrap();
        std::fs::remove_file(r.path().join("README.md")).unwrap();
        std::fs::write(r.path().join("notes.txt"), "circuit breaker notes\n").unwrap();
        let second = idx.refresh().unwrap();
        assert_eq!((second.files, second.indexed, second.removed, second.unchanged), (3, 2, 1, 1));
        assert!(idx.search("retry after", 5).unwrap().iter().all(|h| h.name != "retry_after"));
        assert_eq!(idx.search("backoff delay", 1).unwrap()[0].path, "src/http.rs");
        assert_eq!(idx.search("breaker", 1).unwrap()[0].path, "notes.txt");
        // Reopened, nothing to do.
        let mut again = CodeIndex::open(home.path(), r.path()).unwrap();
        let third = again.refresh().unwrap();
        assert_eq!((third.indexed, third.unchanged), (0, 3));
    }

    #[test]
    fn duplicates_are_dropped_and_tests_weigh_less_unless_asked_about() {
        let d = tempfile::tempdir().unwrap();
        run(d.path(), &["init", "-q", "-b", "main"]);
        for dir in ["src", "tests", "migrations/sqlite", "migrations/postgres"] {
            std::fs::create_dir_all(d.path().join(dir)).unwrap();
        }
        std::fs::write(d.path().join("src/refund.rs"), "/// Refunds an order.\npub fn refund_order() {}\n").unwrap();
        std::fs::write(
            d.path().join("tests/refund.rs"),
            "/// Refunds an order, refund order refund.\n#[test]\nfn refund_order_refunds() { refund_order(); }\n",
        )
        .unwrap();
        for db in ["sqlite", "postgres"] {
            std::fs::write(d.path().join(format!("migrations/{db}/1.sql")), "CREATE TABLE refunds (id TEXT);\n")
                .unwrap();
        }
        run(d.path(), &["add", "-A"]);
        run(d.path(), &["-c", "user.email=a@b", "-c", "user.name=a", "commit", "-qm", "init"]);
        let home = tempfile::tempdir().unwrap();
        let mut idx = CodeIndex::open(home.path(), d.path()).unwrap();
        idx.refresh().unwrap();
        let hits = idx.search("refund order", 10).unwrap();
        assert_eq!(hits[0].path, "src/refund.rs", "{hits:?}");
        assert_eq!(hits.iter().filter(|h| h.text.starts_with("CREATE TABLE refunds")).count(), 1, "{hits:?}");
        assert_eq!(idx.search("test refund order", 1).unwrap()[0].path, "tests/refund.rs");
        assert!(is_test_path("pkg/foo_test.go") && is_test_path("web/a.spec.ts") && !is_test_path("src/contest.rs"));
    }

    /// Regression (issue 24): an agent replaced a tracked folder with a link to the data
    /// directory (`rm -rf leak && ln -s $AUTODEV_HOME leak`) and `search_code` returned a file
    /// from there verbatim. Nothing outside the tree is read now, through a folder link, a
    /// file link or an untracked link.
    #[test]
    fn links_out_of_the_tree_are_never_read() {
        let r = repo();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("budget.rs"), "pepper = topsecretpepper\n").unwrap();
        std::fs::create_dir_all(r.path().join("leak")).unwrap();
        std::fs::write(r.path().join("leak/budget.rs"), "harmless\n").unwrap();
        run(r.path(), &["add", "-A"]);
        run(r.path(), &["-c", "user.email=a@b", "-c", "user.name=a", "commit", "-qm", "leak"]);
        std::fs::remove_dir_all(r.path().join("leak")).unwrap();
        std::os::unix::fs::symlink(outside.path(), r.path().join("leak")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("budget.rs"), r.path().join("untracked.rs")).unwrap();
        std::fs::create_dir_all(r.path().join("inner")).unwrap();
        std::os::unix::fs::symlink("../leak/budget.rs", r.path().join("inner/relative.rs")).unwrap();
        let home = tempfile::tempdir().unwrap();
        let mut idx = CodeIndex::open(home.path(), r.path()).unwrap();
        idx.refresh().unwrap();
        let hits = idx.search("topsecretpepper pepper", 20).unwrap();
        assert!(hits.iter().all(|h| !h.text.contains("topsecretpepper")), "{hits:?}");
        assert!(hits.iter().all(|h| h.path != "leak/budget.rs" && h.path != "untracked.rs"), "{hits:?}");
        // The rest of the tree is still indexed.
        assert_eq!(idx.search("where is the monthly budget reserved?", 1).unwrap()[0].path, "src/budget.rs");
    }
}
