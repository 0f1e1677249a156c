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

/// `autodev ask QUESTION --repo DIR`: an answer from the code index with checked citations.
pub async fn ask(home: &Path, config: Option<&Path>, args: crate::cli::AskArgs) -> Exit {
    let inner = async {
        if args.question.trim().is_empty() {
            return Err(Exit::Usage("the question is empty".into()));
        }
        let cfg = crate::config::FileConfig::load(home, config, None)
            .map_err(|p| Exit::Usage(format!("invalid configuration:\n  - {}", p.join("\n  - "))))?;
        let model_name = args.model.model.clone().or_else(|| cfg.model.clone());
        let provider = args
            .model
            .provider
            .clone()
            .or_else(|| cfg.provider.clone())
            .unwrap_or_else(|| crate::provider::default_provider(model_name.as_deref()));
        let model_name = model_name.unwrap_or_else(|| crate::provider::default_model(&provider).to_string());
        let client =
            crate::provider::build(&provider, &cfg, args.model.record.as_deref(), args.model.replay.as_deref())
                .map_err(Exit::Usage)?;
        let mut idx = open(home, &args.repo)?;
        if !idx.is_built() {
            eprintln!("building the index of {} first (autodev index refreshes it)", args.repo.display());
            idx.refresh().map_err(failed)?;
        }
        let prices = autodev_llm::PriceTable::with_overrides(&cfg.prices);
        let answer = autodev_engine::ask::ask(&idx, client.as_ref(), &prices, &model_name, &args.question)
            .await
            .map_err(|e| {
                eprintln!("error: {e}");
                Exit::Failed
            })?;
        if args.json {
            println!("{}", serde_json::to_value(&answer).unwrap_or_default());
            return Ok(Exit::Ok);
        }
        println!("{}\n", answer.answer);
        for c in &answer.citations {
            let mark = if c.valid { "✓" } else { "✗ not in the index" };
            println!("  {}:{}-{}  {mark}", c.path, c.start_line, c.end_line);
        }
        if !answer.citations_ok {
            println!("\n! the answer's citations do not check out: read it with care");
        }
        println!(
            "\n{} · {} in + {} out tokens · ${:.4}",
            answer.model,
            answer.input_tokens,
            answer.output_tokens,
            answer.cost_micros as f64 / 1e6
        );
        Ok(Exit::Ok)
    };
    match inner.await {
        Ok(e) | Err(e) => e,
    }
}
