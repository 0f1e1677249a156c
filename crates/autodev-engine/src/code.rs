//! The code index as the rest of Autodev uses it: where a repository's index lives, opening
//! it fresh (refresh, then the vectors when embeddings are configured), searching it
//! lexically or fused with embeddings, and a project's index from a checkout of its base
//! branch (API `ask`, MCP), whatever its repository is.
//!
//! The CLI (`autodev index/search/ask`), the planner (its view of a big repository), the
//! agents' `search_code` tool, the API and the MCP server all come here, so they agree on
//! where an index is and how it is searched.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use autodev_index::{CodeIndex, Embedder, FileStore, Hit, IndexError, QdrantStore, Refresh, VectorStore, vectors};
use autodev_store::ProjectRow;
use autodev_workspace::Git;
use sha2::Digest;

/// An embeddings endpoint (`[embeddings]` in `autodev.toml`). Its `Debug` leaves the keys out.
#[derive(Clone, Default)]
pub struct EmbeddingsConfig {
    /// OpenAI-compatible base URL, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    pub model: String,
    pub api_key: Option<String>,
    /// Qdrant's URL: vectors go there instead of the file beside the index.
    pub qdrant_url: Option<String>,
    pub qdrant_api_key: Option<String>,
}

impl std::fmt::Debug for EmbeddingsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddingsConfig")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("qdrant_url", &self.qdrant_url)
            .field("qdrant_api_key", &self.qdrant_api_key.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CodeError {
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Vectors(#[from] autodev_index::VectorError),
    #[error("{0}")]
    Source(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T> = std::result::Result<T, CodeError>;

/// How long a project's fetched source is used before it is fetched again.
const FETCH_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// Where indexes live and how they are searched. Cheap to clone; clones share the
/// embeddings client and the vector stores already opened.
#[derive(Clone, Debug)]
pub struct CodeSearch {
    home: PathBuf,
    embeddings: Option<EmbeddingsConfig>,
    shared: Arc<Shared>,
    /// Forge credentials for cloning and fetching projects to index.
    credentials: Arc<autodev_workspace::git::credentials::Credentials>,
}

/// What opening an index would otherwise redo on every question: the embeddings client
/// (one HTTP client, its TLS set-up) and each index's vector store (the embedded one holds
/// the index's vectors in memory, read from disk again only when another process wrote them).
#[derive(Default)]
struct Shared {
    embedder: std::sync::OnceLock<std::result::Result<Embedder, String>>,
    stores: std::sync::Mutex<std::collections::HashMap<PathBuf, OpenStore>>,
}

/// An opened vector store, with the time its file was written when it was read.
type OpenStore = (Option<std::time::SystemTime>, Arc<dyn VectorStore>);

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

/// An open, refreshed index with its vectors (when configured).
pub struct Searcher {
    pub index: CodeIndex,
    vectors: Option<(Embedder, Arc<dyn VectorStore>)>,
    /// What the refresh did (`None` when it was opened without one).
    pub refresh: Option<Refresh>,
    pub vector_sync: Option<vectors::VectorSync>,
    /// Why the vectors could not be brought up to date (the embeddings endpoint failed):
    /// search is then lexical only.
    pub vector_error: Option<String>,
}

impl std::fmt::Debug for Searcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Searcher").field("dir", &self.index.dir()).field("fused", &self.vectors.is_some()).finish()
    }
}

impl Searcher {
    /// The best chunks: lexical, fused with the vectors when embeddings are configured.
    pub async fn search(&self, query: &str, limit: usize) -> Result<Vec<Hit>> {
        let v = self.vectors.as_ref().map(|(e, s)| (e, s.as_ref()));
        Ok(vectors::search(&self.index, v, query, limit).await?)
    }

    /// Whether the vectors take part.
    pub fn fused(&self) -> bool {
        self.vectors.is_some()
    }
}

impl CodeSearch {
    pub fn new(home: &Path, embeddings: Option<EmbeddingsConfig>) -> Self {
        Self {
            home: std::path::absolute(home).unwrap_or_else(|_| home.to_path_buf()),
            embeddings,
            shared: Arc::default(),
            credentials: Arc::default(),
        }
    }

    /// Clones and fetches projects with these forge credentials.
    pub fn with_git_credentials(mut self, credentials: &Arc<autodev_workspace::git::credentials::Credentials>) -> Self {
        self.credentials = credentials.clone();
        self
    }

    fn embedder(&self, cfg: &EmbeddingsConfig) -> Result<Embedder> {
        let built = self
            .shared
            .embedder
            .get_or_init(|| Embedder::new(&cfg.base_url, &cfg.model, cfg.api_key.clone()).map_err(|e| e.to_string()));
        built.clone().map_err(|m| CodeError::Vectors(autodev_index::VectorError::Store(m)))
    }

    /// The vector store of the index in `dir`, opened once per process (the embedded one is
    /// read again when its file changed since, i.e. another process synced it).
    fn store(&self, cfg: &EmbeddingsConfig, dir: &Path) -> Result<Arc<dyn VectorStore>> {
        let stamp = || std::fs::metadata(dir.join("vectors.bin")).and_then(|m| m.modified()).ok();
        let mut stores =
            self.shared.stores.lock().map_err(|_| CodeError::Source("vector store cache poisoned".into()))?;
        if let Some((seen, store)) = stores.get(dir)
            && (cfg.qdrant_url.is_some() || *seen == stamp())
        {
            return Ok(store.clone());
        }
        let store: Arc<dyn VectorStore> = match &cfg.qdrant_url {
            Some(url) => {
                let key = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                Arc::new(QdrantStore::new(url, &format!("autodev_{key}"), cfg.qdrant_api_key.clone())?)
            }
            None => Arc::new(FileStore::open(dir)?),
        };
        stores.insert(dir.to_path_buf(), (stamp(), store.clone()));
        Ok(store)
    }

    /// Notes that this process wrote the vectors of `dir` itself (its cached store is current).
    fn stored(&self, dir: &Path) {
        let stamp = std::fs::metadata(dir.join("vectors.bin")).and_then(|m| m.modified()).ok();
        if let Ok(mut stores) = self.shared.stores.lock()
            && let Some(entry) = stores.get_mut(dir)
        {
            entry.0 = stamp;
        }
    }

    pub fn embeddings(&self) -> Option<&EmbeddingsConfig> {
        self.embeddings.as_ref()
    }

    /// Where the index of the repository at `source` lives: `AUTODEV_HOME/index/<key>`, the
    /// key a hash of the repository's absolute path.
    pub fn index_dir(&self, source: &Path) -> Result<PathBuf> {
        let repo =
            source.canonicalize().map_err(|e| CodeError::Source(format!("repository {}: {e}", source.display())))?;
        let key = hex::encode(sha2::Sha256::digest(repo.as_os_str().as_encoded_bytes()));
        Ok(self.home.join("index").join(&key[..16]))
    }

    /// Opens the index of `source` (a git working tree); `refresh` brings it up to date first
    /// (and builds it when there is none; an index never built is always built).
    pub async fn open(&self, source: &Path, refresh: bool) -> Result<Searcher> {
        self.open_keyed(source, source, refresh).await
    }

    /// Opens the index kept for the repository `key` and refreshes it from `source`, another
    /// working tree of it (a run's worktree at its base commit): the files are keyed by blob
    /// id, so only what differs between the two is indexed again.
    pub async fn open_keyed(&self, key: &Path, source: &Path, refresh: bool) -> Result<Searcher> {
        let dir = self.index_dir(key)?;
        let source = source.to_path_buf();
        let (index, report) = tokio::task::spawn_blocking(move || -> Result<(CodeIndex, Option<Refresh>)> {
            let mut index = CodeIndex::open(&dir, &source)?;
            let report = if refresh || !index.is_built() { Some(index.refresh()?) } else { None };
            Ok((index, report))
        })
        .await
        .map_err(|e| CodeError::Source(format!("index task failed: {e}")))??;
        let mut searcher = Searcher { index, vectors: None, refresh: report, vector_sync: None, vector_error: None };
        if let Some(cfg) = &self.embeddings {
            let embedder = self.embedder(cfg)?;
            let store = self.store(cfg, searcher.index.dir())?;
            let synced = if searcher.refresh.is_some() || !searcher.index.dir().join("vectors.json").is_file() {
                vectors::sync(&searcher.index, &embedder, store.as_ref()).await.map(Some)
            } else {
                Ok(None)
            };
            match synced {
                Ok(sync) => {
                    if sync.is_some() {
                        self.stored(searcher.index.dir());
                    }
                    searcher.vector_sync = sync;
                    searcher.vectors = Some((embedder, store));
                }
                // The index still answers; the next open embeds what is missing.
                Err(e) => {
                    tracing::warn!(error = %e, "could not update the code index's vectors; searching lexically");
                    searcher.vector_error = Some(e.to_string());
                }
            }
        }
        Ok(searcher)
    }

    /// The index of a project's base branch, fresh: a checked-out copy of the branch is kept
    /// at `AUTODEV_HOME/index-src/<project id>` (cloned the first time, then fetched at most
    /// every 30 s and checked out again; the project's repository may be a clone URL the
    /// server can reach but has no working tree of), and indexed. The checkout and the
    /// refresh happen under one lock per project, so a refresh never reads a checkout half
    /// done. A repository that cannot be fetched is [`CodeError::Source`].
    pub async fn open_project(&self, project: &ProjectRow) -> Result<Searcher> {
        let root = self.home.join("index-src");
        std::fs::create_dir_all(&root)?;
        let dir = root.join(&project.id);
        let lock_path = root.join(format!("{}.lock", project.id));
        let lock = autodev_workspace::locks::lock_file(&lock_path).await?;
        let result = match self.checkout(project, &root, &dir).await {
            Ok(()) => self.open(&dir, true).await,
            Err(e) => Err(e),
        };
        drop(lock);
        result
    }

    async fn checkout(&self, project: &ProjectRow, root: &Path, dir: &Path) -> Result<()> {
        let repository = &project.repository;
        let fail = |what: &str, e: autodev_workspace::GitError| {
            CodeError::Source(format!("could not {what} {repository} to index it: {e}"))
        };
        if !dir.join(".git").exists() {
            let _ = std::fs::remove_dir_all(dir);
            let target = dir.display().to_string();
            Git::new(root)
                .with_credentials(&self.credentials)
                .run(&["clone", "--quiet", "--no-checkout", "--", repository, &target])
                .await
                .map_err(|e| fail("clone", e))?;
        }
        let git = Git::new(dir).with_credentials(&self.credentials);
        // Questions come in bursts: the repository is fetched at most every FETCH_EVERY.
        let stamp = dir.join(".git").join("autodev-fetched");
        let fresh = std::fs::metadata(&stamp)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age < FETCH_EVERY));
        if fresh {
            return Ok(());
        }
        git.run(&["fetch", "--quiet", "--prune", "origin", "+refs/heads/*:refs/remotes/origin/*"])
            .await
            .map_err(|e| fail("fetch", e))?;
        let base = match &project.base_branch {
            Some(b) if !b.is_empty() => b.clone(),
            _ => {
                let out = git.run(&["ls-remote", "--symref", "origin", "HEAD"]).await.unwrap_or_default();
                out.lines()
                    .find_map(|l| l.strip_prefix("ref: refs/heads/").and_then(|r| r.split_whitespace().next()))
                    .map(str::to_string)
                    .ok_or_else(|| {
                        CodeError::Source(format!(
                            "{repository} has no default branch (empty repository?): set the project's base_branch"
                        ))
                    })?
            }
        };
        git.run(&["checkout", "--quiet", "--force", "--detach", &format!("refs/remotes/origin/{base}")])
            .await
            .map_err(|e| fail(&format!("check out branch `{base}` of"), e))?;
        std::fs::write(&stamp, format!("{:?}", std::time::SystemTime::now()))?;
        Ok(())
    }
}

/// A run's index, opened (and refreshed from `source`) the first time anything of the run
/// needs it; `None` when it cannot be built (logged: search is a help, not a reason to fail a
/// run).
pub(crate) async fn run_index(
    cell: &tokio::sync::OnceCell<Option<Arc<Searcher>>>,
    code: &CodeSearch,
    key: &Path,
    source: &Path,
) -> Option<Arc<Searcher>> {
    cell.get_or_init(|| async {
        let started = std::time::Instant::now();
        match code.open_keyed(key, source, true).await {
            Ok(s) => {
                let ms = started.elapsed().as_millis() as u64;
                tracing::info!(repo = %key.display(), chunks = s.index.len(), ms, "code index ready");
                Some(Arc::new(s))
            }
            Err(e) => {
                tracing::warn!(repo = %key.display(), error = %e, "could not build the code index; search_code is off");
                None
            }
        }
    })
    .await
    .clone()
}

/// The `search_code` tool over a run's index, opened when first called.
#[derive(Clone)]
pub(crate) struct RunIndex {
    pub cell: Arc<tokio::sync::OnceCell<Option<Arc<Searcher>>>>,
    pub code: CodeSearch,
    /// The repository the index is kept for, and the worktree it is built from if needed.
    pub key: PathBuf,
    pub source: PathBuf,
}

impl std::fmt::Debug for RunIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunIndex").field("key", &self.key).finish()
    }
}

#[async_trait::async_trait]
impl autodev_workspace::CodeSearch for RunIndex {
    async fn search_code(
        &self,
        query: &str,
        limit: usize,
    ) -> std::result::Result<Vec<autodev_workspace::CodeHit>, String> {
        let searcher = run_index(&self.cell, &self.code, &self.key, &self.source)
            .await
            .ok_or("the code index could not be built for this run; use search (regex) instead")?;
        let hits = searcher.search(query, limit).await.map_err(|e| e.to_string())?;
        Ok(hits
            .into_iter()
            .map(|h| autodev_workspace::CodeHit {
                path: h.path,
                start_line: h.start_line,
                end_line: h.end_line,
                name: h.name,
                text: h.text,
            })
            .collect())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Questions come one after another: the vector store is read from disk once, not per
    /// question, and again only when another process rewrote it.
    #[tokio::test]
    async fn opening_again_reuses_the_vector_store_until_its_file_changes() {
        use wiremock::matchers::method;
        use wiremock::{Mock, MockServer, ResponseTemplate};
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(|req: &wiremock::Request| {
                let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
                let n = body["input"].as_array().unwrap().len();
                let data: Vec<serde_json::Value> =
                    (0..n).map(|i| serde_json::json!({"index": i, "embedding": [1.0, 0.5]})).collect();
                ResponseTemplate::new(200).set_body_json(serde_json::json!({"data": data}))
            })
            .mount(&server)
            .await;
        let repo = tempfile::tempdir().unwrap();
        let git = |args: &[&str]| {
            assert!(std::process::Command::new("git").arg("-C").arg(repo.path()).args(args).status().unwrap().success())
        };
        git(&["init", "-q", "-b", "main"]);
        std::fs::write(repo.path().join("a.py"), "def charge():\n    return 1\n").unwrap();
        git(&["add", "-A"]);
        git(&["-c", "user.email=a@b", "-c", "user.name=a", "commit", "-qm", "a"]);
        let home = tempfile::tempdir().unwrap();
        let cfg =
            EmbeddingsConfig { base_url: format!("{}/v1", server.uri()), model: "e".into(), ..Default::default() };
        let code = CodeSearch::new(home.path(), Some(cfg));
        let first = code.open(repo.path(), true).await.unwrap();
        assert_eq!(first.vector_sync.as_ref().unwrap().chunks_embedded, 1);
        let second = code.clone().open(repo.path(), true).await.unwrap();
        let store = |s: &Searcher| s.vectors.as_ref().unwrap().1.clone();
        assert!(Arc::ptr_eq(&store(&first), &store(&second)), "the same store, not read again");
        // Another process rewrote the vectors: read again.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let file = first.index.dir().join("vectors.bin");
        std::fs::write(&file, std::fs::read(&file).unwrap()).unwrap();
        let third = code.open(repo.path(), false).await.unwrap();
        assert!(!Arc::ptr_eq(&store(&first), &store(&third)));
        assert_eq!(third.search("charge", 1).await.unwrap()[0].path, "a.py");
    }

    #[test]
    fn the_embeddings_keys_never_show_in_debug_output() {
        let cfg = EmbeddingsConfig {
            base_url: "https://api.openai.com/v1".into(),
            model: "text-embedding-3-small".into(),
            api_key: Some("sk-live-secret".into()),
            qdrant_url: Some("http://qdrant:6333".into()),
            qdrant_api_key: Some("qd-secret".into()),
        };
        let shown = format!("{:?}", CodeSearch::new(Path::new("/tmp"), Some(cfg)));
        assert!(!shown.contains("sk-live-secret") && !shown.contains("qd-secret"), "{shown}");
        assert!(shown.contains("[redacted]") && shown.contains("text-embedding-3-small"), "{shown}");
    }
}
