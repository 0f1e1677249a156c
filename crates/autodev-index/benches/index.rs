//! Indexing, search and refresh times on a repository of ~66,000 lines.
//!
//! `cargo bench -p autodev-index --bench index`
//!
//! The repository is this workspace's own tracked files, copied twice (`a/`, `b/`) into a
//! fresh git repository (about 66,000 lines of Rust, SQL, Markdown, TOML and shell), or the
//! directory named by `AUTODEV_BENCH_REPO` copied once. Figures: a first index from nothing,
//! search latency over 20 queries in plain words (p50, p90), and a refresh after one file
//! changed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use autodev_index::CodeIndex;

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git").arg("-C").arg(dir).args(args).output().unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn copy_files(from: &Path, files: &[String], to: &Path) -> usize {
    let mut lines = 0;
    for f in files {
        let src = from.join(f);
        let Ok(text) = std::fs::read(&src) else { continue };
        let dst = to.join(f);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        lines += text.iter().filter(|b| **b == b'\n').count();
        std::fs::write(dst, text).unwrap();
    }
    lines
}

fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    let lines = match std::env::var("AUTODEV_BENCH_REPO") {
        Ok(dir) => {
            let dir = Path::new(&dir);
            let files: Vec<String> = walk(dir, dir);
            copy_files(dir, &files, &repo)
        }
        Err(_) => {
            let ws = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
            let files: Vec<String> = git(&ws, &["ls-files"])
                .lines()
                .filter(|f| !f.ends_with(".png") && !f.ends_with(".jsonl"))
                .map(str::to_string)
                .collect();
            copy_files(&ws, &files, &repo.join("a")) + copy_files(&ws, &files, &repo.join("b"))
        }
    };
    git(&repo, &["add", "-A"]);
    git(&repo, &["-c", "user.email=b@b", "-c", "user.name=b", "commit", "-qm", "bench"]);
    let home = tmp.path().join("index");
    let mut idx = CodeIndex::open(&home, &repo).unwrap();
    let started = Instant::now();
    let r = idx.refresh().unwrap();
    let first = started.elapsed();
    println!(
        "index of {lines} lines ({} files, {} chunks) from nothing: {:.2} s",
        r.files,
        r.chunks_added,
        first.as_secs_f64()
    );
    let queries = [
        "budget reservation monthly",
        "circuit breaker half open",
        "protected paths glob",
        "session cookie",
        "retry after header",
        "plan revision comment",
        "fallback provider switch",
        "outbox delivery retry",
        "sandbox bubblewrap network",
        "tool call written as text",
        "merge conflict resolution",
        "evidence base commit",
        "webhook signature github",
        "token counter tiktoken",
        "run state transition",
        "cancel a run",
        "price table context window",
        "lease heartbeat worker",
        "diff per file",
        "rate limit per key",
    ];
    let mut times = Vec::new();
    for _ in 0..5 {
        for q in queries {
            let t = Instant::now();
            let hits = idx.search(q, 10).unwrap();
            times.push(t.elapsed());
            assert!(!hits.is_empty(), "{q}");
        }
    }
    times.sort();
    let p = |x: f64| times[((times.len() - 1) as f64 * x) as usize].as_secs_f64() * 1000.0;
    println!("search over {} queries: p50 {:.2} ms, p90 {:.2} ms", times.len(), p(0.5), p(0.9));
    // One file changed.
    let changed = git(&repo, &["ls-files", "*.rs"]).lines().next().unwrap().to_string();
    let mut text = std::fs::read_to_string(repo.join(&changed)).unwrap();
    text.push_str("\npub fn freshly_added_function() {}\n");
    std::fs::write(repo.join(&changed), text).unwrap();
    let t = Instant::now();
    let r = idx.refresh().unwrap();
    let refresh: Duration = t.elapsed();
    assert_eq!(r.indexed, 1);
    assert_eq!(idx.search("freshly added function", 1).unwrap()[0].path, changed);
    println!("refresh after one changed file: {:.0} ms ({} unchanged)", refresh.as_secs_f64() * 1000.0, r.unchanged);
    vectors(&idx);
}

/// The embedded vector store at this size: one 1,536-dimension vector per chunk (OpenAI's
/// text-embedding-3-small), an exact scan per query, then the rank fusion with the lexical
/// list (the embeddings request itself is the provider's time and is not measured).
fn vectors(idx: &CodeIndex) {
    use autodev_index::vectors::{Point, rrf};
    use autodev_index::{FileStore, VectorStore};
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    let n = idx.len() as usize;
    // A cheap deterministic generator: the scan's cost does not depend on the values.
    let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % 2_000) as f32 / 1_000.0 - 1.0
    };
    let points: Vec<Point> = (0..n)
        .map(|i| Point {
            id: format!("f{i}.rs:1-9"),
            file: format!("f{i}.rs"),
            vector: (0..1536).map(|_| next()).collect(),
        })
        .collect();
    let t = Instant::now();
    rt.block_on(store.upsert(points)).unwrap();
    let write = t.elapsed();
    let query: Vec<f32> = (0..1536).map(|_| next()).collect();
    let mut times = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let semantic = rt.block_on(store.search(&query, 50)).unwrap();
        let lexical = idx.search("budget reservation monthly", 50).unwrap();
        let fused =
            rrf(&[lexical.into_iter().map(|h| h.id).collect(), semantic.into_iter().map(|(id, _)| id).collect()]);
        times.push(t.elapsed());
        assert!(!fused.is_empty());
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "vectors: {n} × 1536 written in {:.0} ms; scan + lexical + fusion p50 {:.1} ms, p90 {:.1} ms",
        ms(write),
        ms(times[10]),
        ms(times[18])
    );
}

fn walk(root: &Path, dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n == ".git" || n == "target") {
                continue;
            }
            out.extend(walk(root, &p));
        } else {
            out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
        }
    }
    out
}
