//! `autodev index` and `autodev search`: the code index of a repository, kept under
//! `AUTODEV_HOME/index/<key>` (the key is a hash of the repository's absolute path).
use std::path::{Path, PathBuf};
use std::time::Instant;

use autodev_index::{CodeIndex, IndexError};
use sha2::Digest;

use crate::Exit;

/// Where a repository's index lives.
pub fn index_dir(home: &Path, repo: &Path) -> Result<PathBuf, Exit> {
    let repo = repo.canonicalize().map_err(|e| Exit::Usage(format!("--repo {}: {e}", repo.display())))?;
    let key = hex::encode(sha2::Sha256::digest(repo.as_os_str().as_encoded_bytes()));
    Ok(home.join("index").join(&key[..16]))
}

fn open(home: &Path, repo: &Path) -> Result<CodeIndex, Exit> {
    CodeIndex::open(&index_dir(home, repo)?, repo).map_err(|e| match e {
        IndexError::NotARepository(_) => Exit::Usage(e.to_string()),
        other => {
            eprintln!("error: {other}");
            Exit::Failed
        }
    })
}

fn failed(e: IndexError) -> Exit {
    eprintln!("error: {e}");
    Exit::Failed
}

pub fn index(home: &Path, repo: &Path, json: bool) -> Exit {
    let inner = || {
        let mut idx = open(home, repo)?;
        let started = Instant::now();
        let r = idx.refresh().map_err(failed)?;
        let secs = started.elapsed().as_secs_f64();
        if json {
            let mut v = serde_json::to_value(&r).unwrap_or_default();
            v["seconds"] = serde_json::json!(secs);
            println!("{v}");
        } else {
            println!(
                "indexed {} of {} files ({} chunks), {} unchanged, {} removed, in {secs:.2} s",
                r.indexed, r.files, r.chunks_added, r.unchanged, r.removed
            );
        }
        Ok::<Exit, Exit>(Exit::Ok)
    };
    match inner() {
        Ok(e) | Err(e) => e,
    }
}

pub fn search(home: &Path, repo: &Path, query: &str, limit: usize, json: bool) -> Exit {
    let inner = || {
        if !(1..=100).contains(&limit) {
            return Err(Exit::Usage("--limit must be 1 to 100".into()));
        }
        if query.trim().is_empty() {
            return Err(Exit::Usage("the query is empty: give words or identifiers to search for".into()));
        }
        let mut idx = open(home, repo)?;
        if !idx.is_built() {
            eprintln!("building the index of {} first (autodev index refreshes it)", repo.display());
            idx.refresh().map_err(failed)?;
        }
        let hits = idx.search(query, limit).map_err(failed)?;
        if json {
            let items: Vec<serde_json::Value> = hits
                .iter()
                .map(|h| serde_json::json!({"path": h.path, "start_line": h.start_line, "end_line": h.end_line, "score": h.score, "name": h.name, "text": h.text}))
                .collect();
            println!("{}", serde_json::Value::Array(items));
            return Ok(Exit::Ok);
        }
        if hits.is_empty() {
            println!("nothing found for `{query}`");
        }
        for h in &hits {
            let name = if h.name.is_empty() { String::new() } else { format!("  {}", h.name) };
            println!("{}:{}-{}  ({:.2}){name}", h.path, h.start_line, h.end_line, h.score);
            for line in h.text.lines().take(6) {
                println!("    {line}");
            }
            if h.text.lines().count() > 6 {
                println!("    …");
            }
        }
        Ok(Exit::Ok)
    };
    match inner() {
        Ok(e) | Err(e) => e,
    }
}
