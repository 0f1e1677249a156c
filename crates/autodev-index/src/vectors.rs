//! Embeddings beside the lexical index: an OpenAI-compatible `/v1/embeddings` client, vector
//! stores behind one trait (an embedded file store by default, Qdrant for a shared
//! deployment), their incremental sync with the index, and reciprocal rank fusion.
//!
//! The vectors follow the index: a file whose blob id changed since it was embedded has its
//! vectors replaced; a removed file has them dropped. What was embedded is recorded in
//! `vectors.json` in the index's directory (model, dimensions, file → blob), written after
//! the store has the vectors, so a crash embeds again rather than skipping.
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::index::{CodeIndex, Hit, IndexError};

#[derive(Debug, thiserror::Error)]
pub enum VectorError {
    #[error("embeddings request to {url} failed: {message}")]
    Embeddings { url: String, message: String },
    #[error("vector store: {0}")]
    Store(String),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("vector manifest: {0}")]
    Manifest(#[from] serde_json::Error),
}

pub type Result<T> = std::result::Result<T, VectorError>;

/// Chunks sent in one embeddings request.
const BATCH: usize = 64;
/// Characters of a chunk that are embedded (embedding models take ~8k tokens at most).
const MAX_EMBED_CHARS: usize = 6_000;
/// Candidates each retriever contributes to the fusion.
const CANDIDATES: usize = 50;
/// The `k` of reciprocal rank fusion (Cormack et al. 2009 use 60).
const RRF_K: f32 = 60.0;

/// An OpenAI-compatible embeddings endpoint (OpenAI, Ollama, llama.cpp, vLLM).
#[derive(Clone)]
pub struct Embedder {
    http: reqwest::Client,
    /// The base URL, e.g. `https://api.openai.com/v1` or `http://localhost:11434/v1`.
    base_url: String,
    model: String,
    api_key: Option<String>,
}

impl std::fmt::Debug for Embedder {
    // The key is left out.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder").field("base_url", &self.base_url).field("model", &self.model).finish()
    }
}

#[derive(Deserialize)]
struct EmbeddingsResponse {
    data: Vec<EmbeddingItem>,
}

#[derive(Deserialize)]
struct EmbeddingItem {
    index: usize,
    embedding: Vec<f32>,
}

impl Embedder {
    pub fn new(base_url: &str, model: &str, api_key: Option<String>) -> Result<Self> {
        let http = reqwest::Client::builder()
            // A local embedding model on a CPU takes ~0.5 s a chunk: a batch of 64 under load
            // took over two minutes here (all-MiniLM-L6-v2 on 2 busy cores).
            .timeout(Duration::from_secs(600))
            .build()
            .map_err(|e| VectorError::Embeddings { url: base_url.to_string(), message: e.to_string() })?;
        Ok(Self {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
            model: model.to_string(),
            api_key: api_key.filter(|k| !k.is_empty()),
        })
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    /// One vector per input, in order.
    pub async fn embed(&self, inputs: &[String]) -> Result<Vec<Vec<f32>>> {
        let url = format!("{}/embeddings", self.base_url);
        let fail = |message: String| VectorError::Embeddings { url: url.clone(), message };
        let mut out = Vec::with_capacity(inputs.len());
        for batch in inputs.chunks(BATCH) {
            let body = serde_json::json!({"model": self.model, "input": batch});
            let mut req = self.http.post(&url).json(&body);
            if let Some(key) = &self.api_key {
                req = req.bearer_auth(key);
            }
            let resp = req.send().await.map_err(|e| fail(e.to_string()))?;
            let status = resp.status();
            if !status.is_success() {
                let text = resp.text().await.unwrap_or_default();
                return Err(fail(format!("HTTP {status}: {}", text.chars().take(300).collect::<String>())));
            }
            let mut parsed: EmbeddingsResponse =
                resp.json().await.map_err(|e| fail(format!("unreadable response: {e}")))?;
            if parsed.data.len() != batch.len() {
                return Err(fail(format!("{} embeddings for {} inputs", parsed.data.len(), batch.len())));
            }
            parsed.data.sort_by_key(|d| d.index);
            out.extend(parsed.data.into_iter().map(|d| d.embedding));
        }
        Ok(out)
    }
}

/// A chunk's vector.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// The chunk's key in the index (`path:start-end`).
    pub id: String,
    pub file: String,
    pub vector: Vec<f32>,
}

/// Where vectors are kept. Scores are cosine similarities, higher is closer.
#[async_trait::async_trait]
pub trait VectorStore: Send + Sync {
    async fn upsert(&self, points: Vec<Point>) -> Result<()>;
    async fn delete_files(&self, files: &[String]) -> Result<()>;
    /// Drops every vector (the model or its dimensions changed).
    async fn clear(&self) -> Result<()>;
    async fn search(&self, vector: &[f32], limit: usize) -> Result<Vec<(String, f32)>>;
}

fn normalize(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

/// The embedded store: the vectors of one repository in a file beside its index, searched by
/// an exact scan.
///
/// Written here rather than taken from a crate: sqlite-vec's `vec0` is also an exact scan,
/// and would add a process-wide SQLite extension registered through `unsafe` FFI for what is
/// a dot product over a few thousand normalised vectors (5,000 chunks × 1,536 dimensions scan
/// in a few milliseconds); the file is rewritten whole (atomically) after each sync.
pub struct FileStore {
    path: PathBuf,
    points: Mutex<Vec<Point>>,
}

impl FileStore {
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join("vectors.bin");
        let points = match std::fs::read(&path) {
            Ok(bytes) => decode(&bytes).unwrap_or_else(|| {
                tracing::warn!(path = %path.display(), "unreadable vector file; the vectors are made again");
                Vec::new()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        Ok(Self { path, points: Mutex::new(points) })
    }

    /// Writes the file whole (atomically); `bytes` are the points encoded under the lock.
    fn save(&self, bytes: Vec<u8>) -> Result<()> {
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, &self.path)?;
        Ok(())
    }

    fn with<T>(&self, f: impl FnOnce(&mut Vec<Point>) -> T) -> Result<T> {
        let mut guard = self.points.lock().map_err(|_| VectorError::Store("vector store lock poisoned".into()))?;
        Ok(f(&mut guard))
    }
}

/// `[u32 header length][header JSON: [[id, file, dims], …]][f32 little-endian …]`.
fn encode(points: &[Point]) -> Vec<u8> {
    let header: Vec<(&str, &str, usize)> =
        points.iter().map(|p| (p.id.as_str(), p.file.as_str(), p.vector.len())).collect();
    let header = serde_json::to_vec(&header).unwrap_or_default();
    let mut out = Vec::with_capacity(4 + header.len() + points.iter().map(|p| p.vector.len() * 4).sum::<usize>());
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(&header);
    for p in points {
        for x in &p.vector {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    out
}

fn decode(bytes: &[u8]) -> Option<Vec<Point>> {
    let len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let header: Vec<(String, String, usize)> = serde_json::from_slice(bytes.get(4..4 + len)?).ok()?;
    let mut floats = bytes.get(4 + len..)?.chunks_exact(4).map(|c| c.try_into().map(f32::from_le_bytes));
    let mut points = Vec::with_capacity(header.len());
    for (id, file, dims) in header {
        let vector: Vec<f32> = floats.by_ref().take(dims).collect::<std::result::Result<_, _>>().ok()?;
        if vector.len() != dims {
            return None;
        }
        points.push(Point { id, file, vector });
    }
    Some(points)
}

#[async_trait::async_trait]
impl VectorStore for FileStore {
    async fn upsert(&self, new: Vec<Point>) -> Result<()> {
        let bytes = self.with(|points| {
            let ids: std::collections::HashSet<&str> = new.iter().map(|p| p.id.as_str()).collect();
            points.retain(|p| !ids.contains(p.id.as_str()));
            points.extend(new.into_iter().map(|p| Point { vector: normalize(p.vector), ..p }));
            encode(points)
        })?;
        self.save(bytes)
    }

    async fn delete_files(&self, files: &[String]) -> Result<()> {
        let files: std::collections::HashSet<&str> = files.iter().map(String::as_str).collect();
        let bytes = self.with(|points| {
            points.retain(|p| !files.contains(p.file.as_str()));
            encode(points)
        })?;
        self.save(bytes)
    }

    async fn clear(&self) -> Result<()> {
        let bytes = self.with(|points| {
            points.clear();
            encode(points)
        })?;
        self.save(bytes)
    }

    async fn search(&self, vector: &[f32], limit: usize) -> Result<Vec<(String, f32)>> {
        let q = normalize(vector.to_vec());
        self.with(|points| {
            // Scores by position; only the best `limit` ids are copied out.
            let mut scored: Vec<(usize, f32)> = points
                .iter()
                .enumerate()
                .filter(|(_, p)| p.vector.len() == q.len())
                .map(|(i, p)| (i, p.vector.iter().zip(&q).map(|(a, b)| a * b).sum()))
                .collect();
            let by_score = |a: &(usize, f32), b: &(usize, f32)| b.1.total_cmp(&a.1);
            if scored.len() > limit && limit > 0 {
                scored.select_nth_unstable_by(limit - 1, by_score);
                scored.truncate(limit);
            }
            scored.sort_by(by_score);
            scored.truncate(limit);
            scored.into_iter().map(|(i, score)| (points[i].id.clone(), score)).collect()
        })
    }
}

/// Qdrant over its REST API, one collection per repository (`autodev_<index key>`), points
/// keyed by a UUID derived from the chunk id, with the chunk id and file in the payload.
///
/// REST through the reqwest client the rest of Autodev uses, rather than `qdrant-client`:
/// that crate is gRPC (tonic, prost) and brings a second TLS stack (ring) for five calls.
pub struct QdrantStore {
    http: reqwest::Client,
    url: String,
    collection: String,
    api_key: Option<String>,
}

impl QdrantStore {
    pub fn new(url: &str, collection: &str, api_key: Option<String>) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| VectorError::Store(e.to_string()))?;
        Ok(Self {
            http,
            url: url.trim_end_matches('/').to_string(),
            collection: collection.to_string(),
            api_key: api_key.filter(|k| !k.is_empty()),
        })
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: serde_json::Value) -> Result<serde_json::Value> {
        let url = format!("{}/collections/{}{path}", self.url, self.collection);
        let mut req = self.http.request(method, &url).json(&body);
        if let Some(key) = &self.api_key {
            req = req.header("api-key", key);
        }
        let resp = req.send().await.map_err(|e| VectorError::Store(format!("Qdrant {url}: {e}")))?;
        let status = resp.status();
        let value: serde_json::Value = resp.json().await.unwrap_or_default();
        if !status.is_success() {
            let detail = value.pointer("/status/error").and_then(|e| e.as_str()).unwrap_or("no detail");
            return Err(VectorError::Store(format!("Qdrant {url}: HTTP {status}: {detail}")));
        }
        Ok(value)
    }

    fn point_id(id: &str) -> String {
        use sha2::Digest;
        let h = sha2::Sha256::digest(id.as_bytes());
        let x = hex::encode(&h[..16]);
        format!("{}-{}-{}-{}-{}", &x[..8], &x[8..12], &x[12..16], &x[16..20], &x[20..32])
    }
}

#[async_trait::async_trait]
impl VectorStore for QdrantStore {
    async fn upsert(&self, points: Vec<Point>) -> Result<()> {
        let Some(dims) = points.first().map(|p| p.vector.len()) else { return Ok(()) };
        // Created on first use; an existing collection answers 409 (or 400 on older servers).
        let created = self
            .call(reqwest::Method::PUT, "", serde_json::json!({"vectors": {"size": dims, "distance": "Cosine"}}))
            .await;
        if let Err(VectorError::Store(m)) = &created
            && !(m.contains("409") || m.contains("already exists"))
        {
            return created.map(|_| ());
        }
        for batch in points.chunks(256) {
            let body: Vec<serde_json::Value> = batch
                .iter()
                .map(|p| {
                    serde_json::json!({"id": Self::point_id(&p.id), "vector": p.vector,
                                       "payload": {"chunk": p.id, "file": p.file}})
                })
                .collect();
            self.call(reqwest::Method::PUT, "/points?wait=true", serde_json::json!({"points": body})).await?;
        }
        Ok(())
    }

    async fn delete_files(&self, files: &[String]) -> Result<()> {
        if files.is_empty() {
            return Ok(());
        }
        let body = serde_json::json!({"filter": {"must": [{"key": "file", "match": {"any": files}}]}});
        match self.call(reqwest::Method::POST, "/points/delete?wait=true", body).await {
            // No collection yet: nothing to delete.
            Err(VectorError::Store(m)) if m.contains("404") => Ok(()),
            other => other.map(|_| ()),
        }
    }

    async fn clear(&self) -> Result<()> {
        match self.call(reqwest::Method::DELETE, "", serde_json::json!({})).await {
            Err(VectorError::Store(m)) if m.contains("404") => Ok(()),
            other => other.map(|_| ()),
        }
    }

    async fn search(&self, vector: &[f32], limit: usize) -> Result<Vec<(String, f32)>> {
        let body = serde_json::json!({"query": vector, "limit": limit, "with_payload": true});
        let value = match self.call(reqwest::Method::POST, "/points/query", body).await {
            Err(VectorError::Store(m)) if m.contains("404") => return Ok(Vec::new()),
            other => other?,
        };
        let points = value.pointer("/result/points").and_then(|p| p.as_array()).cloned().unwrap_or_default();
        Ok(points
            .iter()
            .filter_map(|p| {
                let id = p.pointer("/payload/chunk")?.as_str()?.to_string();
                Some((id, p.get("score")?.as_f64()? as f32))
            })
            .collect())
    }
}

/// What `vectors.json` records.
#[derive(Debug, Default, Serialize, Deserialize)]
struct VectorManifest {
    model: String,
    files: BTreeMap<String, String>,
}

/// What a vector sync did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct VectorSync {
    pub files_embedded: usize,
    pub files_removed: usize,
    pub chunks_embedded: usize,
}

/// Brings the vectors in `store` up to date with `index` (which should be refreshed first).
pub async fn sync(index: &CodeIndex, embedder: &Embedder, store: &dyn VectorStore) -> Result<VectorSync> {
    let manifest_path = index.dir().join("vectors.json");
    let mut done: VectorManifest =
        std::fs::read_to_string(&manifest_path).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
    if done.model != embedder.model() {
        if !done.files.is_empty() {
            tracing::info!(from = %done.model, to = %embedder.model(), "the embedding model changed; embedding again");
        }
        store.clear().await?;
        done = VectorManifest { model: embedder.model().to_string(), files: BTreeMap::new() };
    }
    let current = index.manifest();
    let mut report = VectorSync::default();
    let gone: Vec<String> = done.files.keys().filter(|f| !current.contains_key(*f)).cloned().collect();
    let changed: Vec<(&String, &String)> = current.iter().filter(|(f, b)| done.files.get(*f) != Some(*b)).collect();
    let mut stale: Vec<String> = gone.clone();
    stale.extend(changed.iter().filter(|(f, _)| done.files.contains_key(*f)).map(|(f, _)| (*f).clone()));
    store.delete_files(&stale).await?;
    for f in &gone {
        done.files.remove(f);
    }
    report.files_removed = gone.len();
    let save = |m: &VectorManifest| -> Result<()> {
        let tmp = manifest_path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(m)?)?;
        std::fs::rename(&tmp, &manifest_path)?;
        Ok(())
    };
    // Files in groups, so a long first sync keeps what it has done if it stops.
    for group in changed.chunks(200) {
        let mut chunks: Vec<Hit> = Vec::new();
        for (file, _) in group {
            chunks.extend(index.chunks_of(file)?);
        }
        let inputs: Vec<String> = chunks
            .iter()
            .map(|c| {
                let head = if c.name.is_empty() { c.path.clone() } else { format!("{} {}", c.path, c.name) };
                format!("{head}\n{}", c.text.chars().take(MAX_EMBED_CHARS).collect::<String>())
            })
            .collect();
        let vectors = if inputs.is_empty() { Vec::new() } else { embedder.embed(&inputs).await? };
        let points: Vec<Point> =
            chunks.into_iter().zip(vectors).map(|(c, vector)| Point { id: c.id, file: c.path, vector }).collect();
        report.chunks_embedded += points.len();
        store.upsert(points).await?;
        for (file, blob) in group {
            done.files.insert((*file).clone(), (*blob).clone());
        }
        report.files_embedded += group.len();
        save(&done)?;
    }
    if report.files_removed > 0 {
        save(&done)?;
    }
    Ok(report)
}

/// Reciprocal rank fusion of ranked lists of ids: each id scores Σ 1/(k + rank).
pub fn rrf(lists: &[Vec<String>]) -> Vec<(String, f32)> {
    let mut scores: HashMap<&str, f32> = HashMap::new();
    let mut order: Vec<&str> = Vec::new();
    for list in lists {
        for (rank, id) in list.iter().enumerate() {
            let e = scores.entry(id).or_insert_with(|| {
                order.push(id);
                0.0
            });
            *e += 1.0 / (RRF_K + rank as f32 + 1.0);
        }
    }
    let mut fused: Vec<(String, f32)> = order.into_iter().map(|id| (id.to_string(), scores[id])).collect();
    // Stable: ties keep the order of first appearance (the lexical list comes first).
    fused.sort_by(|a, b| b.1.total_cmp(&a.1));
    fused
}

/// Search: lexical alone, or fused with the vectors when an embedder and store are given.
/// With fusion, a hit's `score` is its fused score. When the embeddings endpoint or the
/// vector store fails, the lexical ranking is returned (and the failure logged): search
/// keeps working while a model server is down.
pub async fn search(
    index: &CodeIndex,
    vectors: Option<(&Embedder, &dyn VectorStore)>,
    query: &str,
    limit: usize,
) -> Result<Vec<Hit>> {
    let Some((embedder, store)) = vectors else { return Ok(index.search(query, limit)?) };
    let lexical = index.search(query, CANDIDATES.max(limit))?;
    let semantic = match semantic(embedder, store, query, CANDIDATES.max(limit)).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "vector search failed; lexical results only");
            return Ok(lexical.into_iter().take(limit).collect());
        }
    };
    let fused =
        rrf(&[lexical.iter().map(|h| h.id.clone()).collect(), semantic.into_iter().map(|(id, _)| id).collect()]);
    let mut by_id: HashMap<String, Hit> = lexical.into_iter().map(|h| (h.id.clone(), h)).collect();
    let mut hits = Vec::new();
    for (id, score) in fused {
        if hits.len() == limit {
            break;
        }
        // A vector whose chunk left the index since the last sync is skipped.
        let hit = match by_id.remove(&id) {
            Some(h) => Some(h),
            None => index.get(&id)?,
        };
        if let Some(h) = hit {
            hits.push(Hit { score, ..h });
        }
    }
    Ok(hits)
}

async fn semantic(
    embedder: &Embedder,
    store: &dyn VectorStore,
    query: &str,
    limit: usize,
) -> Result<Vec<(String, f32)>> {
    let q = embedder.embed(&[query.to_string()]).await?;
    match q.first() {
        Some(v) => store.search(v, limit).await,
        None => Ok(Vec::new()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn rank_fusion_favours_what_both_lists_rank_well() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let fused = rrf(&[s(&["a", "b", "c"]), s(&["b", "d", "c"])]);
        let ids: Vec<&str> = fused.iter().map(|(id, _)| id.as_str()).collect();
        // b: 1/62 + 1/61; c: 1/63 + 1/63; a: 1/61; d: 1/62.
        assert_eq!(ids, vec!["b", "c", "a", "d"]);
        assert!((fused[0].1 - (1.0 / 62.0 + 1.0 / 61.0)).abs() < 1e-6);
    }

    #[tokio::test]
    async fn the_file_store_keeps_searches_and_replaces_vectors() {
        let d = tempfile::tempdir().unwrap();
        let store = FileStore::open(d.path()).unwrap();
        let p = |id: &str, file: &str, v: &[f32]| Point { id: id.into(), file: file.into(), vector: v.to_vec() };
        store.upsert(vec![p("a.rs:1-3", "a.rs", &[1.0, 0.0]), p("b.rs:1-2", "b.rs", &[0.0, 2.0])]).await.unwrap();
        let hits = store.search(&[0.1, 1.0], 2).await.unwrap();
        assert_eq!(hits[0].0, "b.rs:1-2");
        // Reopened from the file.
        let again = FileStore::open(d.path()).unwrap();
        assert_eq!(again.search(&[1.0, 0.0], 1).await.unwrap()[0].0, "a.rs:1-3");
        again.delete_files(&["a.rs".into()]).await.unwrap();
        assert_eq!(FileStore::open(d.path()).unwrap().search(&[1.0, 0.0], 5).await.unwrap().len(), 1);
        // A damaged file is an empty store, not an error.
        std::fs::write(d.path().join("vectors.bin"), b"\xff\xff\xff\x7fjunk").unwrap();
        assert!(FileStore::open(d.path()).unwrap().search(&[1.0, 0.0], 5).await.unwrap().is_empty());
    }

    #[test]
    fn qdrant_point_ids_are_uuids() {
        let id = QdrantStore::point_id("src/lib.rs:1-20");
        assert_eq!(id.len(), 36);
        assert_eq!(id.matches('-').count(), 4);
        assert_eq!(id, QdrantStore::point_id("src/lib.rs:1-20"));
    }
}
