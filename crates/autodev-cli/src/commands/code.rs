//! `autodev index`, `autodev search` and `autodev ask`: the code index of a repository, kept
//! under `AUTODEV_HOME/index/<key>` (the key is a hash of the repository's absolute path; see
//! `autodev_engine::code`).
use std::path::Path;
use std::time::Instant;

use autodev_engine::code::{CodeError, CodeSearch, Searcher};
use autodev_index::IndexError;

use crate::Exit;

fn failed(e: impl std::fmt::Display) -> Exit {
    eprintln!("error: {e}");
    Exit::Failed
}

/// The operator's code search (embeddings when configured).
fn code_search(home: &Path, config: Option<&Path>) -> Result<CodeSearch, Exit> {
    let cfg = crate::config::FileConfig::load(home, config, None)
        .map_err(|p| Exit::Usage(format!("invalid configuration:\n  - {}", p.join("\n  - "))))?;
    crate::config::code_search(home, &cfg).map_err(Exit::Usage)
}

/// Opens the index of `repo`, refreshing it when asked (or when it was never built).
async fn open(code: &CodeSearch, repo: &Path, refresh: bool) -> Result<Searcher, Exit> {
    if code.index_dir(repo).is_ok_and(|d| !d.join("files.json").is_file()) {
        eprintln!("building the index of {} first (autodev index refreshes it)", repo.display());
    }
    code.open(repo, refresh).await.map_err(open_error)
}

/// A repository that is not one is the user's to fix (exit 2); the rest is a failure.
fn open_error(e: CodeError) -> Exit {
    match e {
        CodeError::Index(IndexError::NotARepository(_)) | CodeError::Source(_) => Exit::Usage(e.to_string()),
        other => failed(other),
    }
}

pub async fn index(home: &Path, config: Option<&Path>, repo: &Path, json: bool) -> Exit {
    let inner = async {
        let code = code_search(home, config)?;
        let started = Instant::now();
        let s = code.open(repo, true).await.map_err(open_error)?;
        let secs = started.elapsed().as_secs_f64();
        if let Some(e) = &s.vector_error {
            // `autodev index` is asked to bring everything up to date: a failed embedding is
            // its failure (searches keep working lexically meanwhile).
            eprintln!("error: the lexical index is up to date, but the embeddings failed: {e}");
            return Err(Exit::Failed);
        }
        let r = s.refresh.clone().unwrap_or_default();
        if json {
            let mut v = serde_json::to_value(&r).unwrap_or_default();
            v["seconds"] = serde_json::json!(secs);
            v["chunks"] = serde_json::json!(s.index.len());
            v["embeddings"] = serde_json::to_value(&s.vector_sync).unwrap_or_default();
            println!("{v}");
        } else {
            println!(
                "indexed {} of {} files ({} chunks), {} unchanged, {} removed, in {secs:.2} s",
                r.indexed, r.files, r.chunks_added, r.unchanged, r.removed
            );
            if let Some(v) = &s.vector_sync {
                println!(
                    "embedded {} files ({} chunks), {} removed",
                    v.files_embedded, v.chunks_embedded, v.files_removed
                );
            }
        }
        Ok::<Exit, Exit>(Exit::Ok)
    };
    match inner.await {
        Ok(e) | Err(e) => e,
    }
}

pub async fn search(home: &Path, config: Option<&Path>, repo: &Path, query: &str, limit: usize, json: bool) -> Exit {
    let inner = async {
        if !(1..=100).contains(&limit) {
            return Err(Exit::Usage("--limit must be 1 to 100".into()));
        }
        if query.trim().is_empty() {
            return Err(Exit::Usage("the query is empty: give words or identifiers to search for".into()));
        }
        let code = code_search(home, config)?;
        // Searching does not refresh (`autodev index` does), except a never-built index.
        let idx = open(&code, repo, false).await?;
        let hits = idx.search(query, limit).await.map_err(failed)?;
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
    match inner.await {
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
        let (provider, model_name) =
            crate::provider::resolve(args.model.provider.clone(), args.model.model.clone(), &cfg);
        let client =
            crate::provider::build(&provider, &cfg, args.model.record.as_deref(), args.model.replay.as_deref())
                .map_err(Exit::Usage)?;
        let code = crate::config::code_search(home, &cfg).map_err(Exit::Usage)?;
        let idx = open(&code, &args.repo, false).await?;
        let prices = autodev_llm::PriceTable::with_overrides(&cfg.prices);
        let store = crate::context::open_store(home).await?;
        // The CLI's conversations are its own (no key), in this data directory.
        let (conversation, earlier) = match &args.conversation {
            None => (autodev_domain::RunId::new().to_string(), Vec::new()),
            Some(id) => {
                let turns =
                    store.ask_turns(id, None, None).await.map_err(crate::context::store_error)?.ok_or_else(|| {
                        Exit::Usage(format!("no conversation {id} here: leave --conversation out to start one"))
                    })?;
                let earlier =
                    turns.into_iter().map(|t| autodev_engine::ask::Turn { question: t.question, answer: t.answer });
                (id.clone(), earlier.collect())
            }
        };
        // The answer is printed as it is written (not with --json, which prints it whole).
        let print = |text: &str| {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
        };
        let sink: Option<&autodev_domain::TextSink<'_>> = if args.json { None } else { Some(&print) };
        let question = args.question.trim();
        let answer = autodev_engine::ask::ask_in(&idx, client.as_ref(), &prices, &model_name, question, &earlier, sink)
            .await
            .map_err(failed)?;
        // Recorded like the API's questions (no key, no project), so `autodev costs --by kind`
        // shows what questions cost.
        let id = autodev_engine::ask::record(&store, autodev_engine::ask::Asker::default(), question, &answer)
            .await
            .map_err(crate::context::store_error)?;
        let turn = store
            .add_ask_turn(&conversation, None, None, question, &answer.answer, Some(&id))
            .await
            .map_err(crate::context::store_error)?
            .unwrap_or(1);
        if args.json {
            let mut v = serde_json::to_value(&answer).unwrap_or_default();
            v["conversation"] = serde_json::json!(conversation);
            v["turn"] = serde_json::json!(turn);
            println!("{v}");
            return Ok(Exit::Ok);
        }
        println!("\n");
        for c in &answer.citations {
            let mark = if c.valid { "✓" } else { "✗ not in the index" };
            println!("  {}:{}-{}  {mark}", c.path, c.start_line, c.end_line);
        }
        if !answer.citations_ok {
            println!("\n! the answer's citations do not check out: read it with care");
        }
        println!("\nconversation {conversation} (turn {turn}; follow up with --conversation {conversation})");
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
