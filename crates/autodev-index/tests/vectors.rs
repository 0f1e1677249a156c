//! Embeddings fused with the lexical index, against a scripted OpenAI-compatible embeddings
//! server (wiremock speaking `/v1/embeddings`' wire format) and a scripted Qdrant REST API.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use autodev_index::{CodeIndex, Embedder, FileStore, QdrantStore, VectorStore, vectors};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// A tiny "semantic" model: one dimension per concept, set when the text mentions any of the
/// concept's words. The lexical index cannot see these links (no shared words).
const CONCEPTS: &[&[&str]] = &[
    &["money", "debit", "charge", "payment", "invoice"],
    &["network", "socket", "connect", "http"],
    &["weather", "forecast", "rain"],
];

struct ScriptedEmbeddings;

impl Respond for ScriptedEmbeddings {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
        if !body["model"].as_str().unwrap().starts_with("scripted-embed") {
            return ResponseTemplate::new(404)
                .set_body_json(serde_json::json!({"error": {"message": "model not found"}}));
        }
        let inputs: Vec<String> =
            body["input"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_lowercase()).collect();
        let data: Vec<serde_json::Value> = inputs
            .iter()
            .enumerate()
            .map(|(i, text)| {
                let mut v: Vec<f32> = CONCEPTS
                    .iter()
                    .map(|words| if words.iter().any(|w| text.contains(w)) { 1.0 } else { 0.0 })
                    .collect();
                v.push(0.05); // never the zero vector
                serde_json::json!({"object": "embedding", "index": i, "embedding": v})
            })
            .collect();
        ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "object": "list", "data": data, "model": "scripted-embed",
            "usage": {"prompt_tokens": 8, "total_tokens": 8}
        }))
    }
}

fn git(dir: &Path, args: &[&str]) {
    assert!(Command::new("git").arg("-C").arg(dir).args(args).status().unwrap().success(), "git {args:?}");
}

fn repo() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    git(d.path(), &["init", "-q", "-b", "main"]);
    std::fs::create_dir_all(d.path().join("src")).unwrap();
    std::fs::write(
        d.path().join("src/ledger.rs"),
        "/// Takes the amount from the account.\npub fn debit_account(id: u64, cents: i64) -> bool {\n    cents > 0 && id > 0\n}\n",
    )
    .unwrap();
    std::fs::write(d.path().join("src/net.rs"), "pub fn open_socket(port: u16) -> bool {\n    port > 1024\n}\n")
        .unwrap();
    std::fs::write(d.path().join("src/text.rs"), "/// Where is the customer? Who knows.\npub fn customer_name() {}\n")
        .unwrap();
    git(d.path(), &["add", "-A"]);
    git(d.path(), &["-c", "user.email=a@b", "-c", "user.name=a", "commit", "-qm", "init"]);
    d
}

#[tokio::test]
async fn embeddings_are_fused_with_the_lexical_ranking_and_kept_in_step_with_the_index() {
    let server = MockServer::start().await;
    Mock::given(method("POST")).and(path("/v1/embeddings")).respond_with(ScriptedEmbeddings).mount(&server).await;
    let r = repo();
    let home = tempfile::tempdir().unwrap();
    let mut idx = CodeIndex::open(home.path(), r.path()).unwrap();
    idx.refresh().unwrap();
    let embedder = Embedder::new(&format!("{}/v1", server.uri()), "scripted-embed", Some("sk-test".into())).unwrap();
    let store = FileStore::open(idx.dir()).unwrap();

    let first = vectors::sync(&idx, &embedder, &store).await.unwrap();
    assert_eq!((first.files_embedded, first.chunks_embedded, first.files_removed), (3, 3, 0));
    let auth = server.received_requests().await.unwrap()[0].headers.get("authorization").cloned();
    assert_eq!(auth.unwrap().to_str().unwrap(), "Bearer sk-test");

    // "payment" shares no word with `debit_account`; "customer" leads the lexical ranking to
    // text.rs. Lexical alone misses the ledger; fused, both are there: text.rs first (first
    // lexically, second by vector), the ledger next (first by vector only).
    let vs = Some((&embedder, &store as &dyn VectorStore));
    let question = "who handles a customer payment";
    let lexical = idx.search(question, 5).unwrap();
    assert!(lexical.iter().all(|h| h.path != "src/ledger.rs"), "{lexical:?}");
    let fused = vectors::search(&idx, vs, question, 5).await.unwrap();
    let paths: Vec<&str> = fused.iter().map(|h| h.path.as_str()).collect();
    assert_eq!(paths[..2], ["src/text.rs", "src/ledger.rs"], "{fused:?}");
    assert_eq!((fused[1].start_line, fused[1].end_line, fused[1].name.as_str()), (1, 4, "debit_account"));
    // No word in common at all: the vectors alone answer.
    assert!(idx.search("invoice", 5).unwrap().is_empty());
    assert_eq!(vectors::search(&idx, vs, "invoice", 5).await.unwrap()[0].path, "src/ledger.rs");

    // Nothing changed: nothing embedded again.
    let calls = server.received_requests().await.unwrap().len();
    let again = vectors::sync(&idx, &embedder, &store).await.unwrap();
    assert_eq!((again.files_embedded, again.chunks_embedded), (0, 0));
    assert_eq!(server.received_requests().await.unwrap().len(), calls);

    // One file changed, one removed: only those are touched; the stale vectors go.
    std::fs::write(r.path().join("src/net.rs"), "pub fn forecast_rain() -> bool {\n    true\n}\n").unwrap();
    std::fs::remove_file(r.path().join("src/ledger.rs")).unwrap();
    idx.refresh().unwrap();
    let third = vectors::sync(&idx, &embedder, &store).await.unwrap();
    assert_eq!((third.files_embedded, third.chunks_embedded, third.files_removed), (1, 1, 1));
    let fused = vectors::search(&idx, vs, "will it be wet tomorrow", 3).await.unwrap();
    assert!(fused.iter().all(|h| h.path != "src/ledger.rs"));
    let fused = vectors::search(&idx, vs, "weather", 3).await.unwrap();
    assert_eq!(fused[0].path, "src/net.rs");

    // Another embedding model: the old vectors are dropped and everything embedded again.
    let other = Embedder::new(&format!("{}/v1", server.uri()), "scripted-embed-2", None).unwrap();
    let fourth = vectors::sync(&idx, &other, &store).await.unwrap();
    assert_eq!((fourth.files_embedded, fourth.chunks_embedded), (2, 2));
    let unknown = Embedder::new(&format!("{}/v1", server.uri()), "text-embedding-3-small", None).unwrap();
    let err = vectors::sync(&idx, &unknown, &store).await.unwrap_err().to_string();
    assert!(err.contains("404") && err.contains("model not found"), "{err}");
}

#[tokio::test]
async fn an_embeddings_error_names_the_endpoint_and_the_status() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/embeddings"))
        .respond_with(ResponseTemplate::new(401).set_body_string(r#"{"error":{"message":"Incorrect API key"}}"#))
        .mount(&server)
        .await;
    let e = Embedder::new(&format!("{}/v1/", server.uri()), "m", None).unwrap();
    let err = e.embed(&["x".into()]).await.unwrap_err().to_string();
    assert!(err.contains("/v1/embeddings") && err.contains("401") && err.contains("Incorrect API key"), "{err}");
    // Search keeps working lexically while the endpoint fails.
    let r = repo();
    let home = tempfile::tempdir().unwrap();
    let mut idx = CodeIndex::open(home.path(), r.path()).unwrap();
    idx.refresh().unwrap();
    let store = FileStore::open(idx.dir()).unwrap();
    let hits = vectors::search(&idx, Some((&e, &store as &dyn VectorStore)), "open socket", 3).await.unwrap();
    assert_eq!(hits[0].path, "src/net.rs");
}

#[tokio::test]
async fn the_qdrant_store_speaks_its_rest_api() {
    let server = MockServer::start().await;
    let ok = serde_json::json!({"result": true, "status": "ok", "time": 0.001});
    Mock::given(method("PUT"))
        .and(path("/collections/autodev_abc"))
        .respond_with(ResponseTemplate::new(200).set_body_json(&ok))
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/collections/autodev_abc/points"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            serde_json::json!({"result": {"operation_id": 1, "status": "completed"}, "status": "ok", "time": 0.002}),
        ))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/collections/autodev_abc/points/delete"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            serde_json::json!({"result": {"operation_id": 2, "status": "completed"}, "status": "ok", "time": 0.002}),
        ))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/collections/autodev_abc/points/query"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "result": {"points": [
                {"id": "5c56c793-69f3-4fbf-87e6-c4bf54c28c26", "version": 3, "score": 0.91,
                 "payload": {"chunk": "src/ledger.rs:1-4", "file": "src/ledger.rs"}}
            ]},
            "status": "ok", "time": 0.001
        })))
        .mount(&server)
        .await;
    let store = QdrantStore::new(&server.uri(), "autodev_abc", Some("qd-key".into())).unwrap();
    store
        .upsert(vec![vectors::Point {
            id: "src/ledger.rs:1-4".into(),
            file: "src/ledger.rs".into(),
            vector: vec![1.0, 0.0],
        }])
        .await
        .unwrap();
    store.delete_files(&["src/old.rs".into()]).await.unwrap();
    let hits = store.search(&[1.0, 0.0], 5).await.unwrap();
    assert_eq!(hits, vec![("src/ledger.rs:1-4".to_string(), 0.91)]);

    let reqs = server.received_requests().await.unwrap();
    let body = |i: usize| serde_json::from_slice::<serde_json::Value>(&reqs[i].body).unwrap();
    assert_eq!(body(0)["vectors"], serde_json::json!({"size": 2, "distance": "Cosine"}));
    assert_eq!(body(1)["points"][0]["payload"]["chunk"], "src/ledger.rs:1-4");
    assert_eq!(body(1)["points"][0]["id"].as_str().unwrap().len(), 36);
    assert_eq!(body(2)["filter"]["must"][0], serde_json::json!({"key": "file", "match": {"any": ["src/old.rs"]}}));
    assert_eq!(body(3)["limit"], 5);
    assert!(reqs.iter().all(|r| r.headers.get("api-key").is_some_and(|v| v == "qd-key")));
}
