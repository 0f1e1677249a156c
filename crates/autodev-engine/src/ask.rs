//! Answers about a repository from its code index, with citations that are checked.
//!
//! The best chunks for the question are given to the model with their places
//! (`path:start-end`); the model must cite those places for what it says, or say "I could
//! not find it". Every citation in the answer is looked up in the index: an answer whose
//! citations do not all fall inside indexed chunks is marked so (`citations_ok = false`).
use std::sync::LazyLock;

use autodev_domain::{CallMeta, Message, ModelClient, ModelError, ModelRequest};
use autodev_index::Hit;

use crate::code::{CodeError, Searcher};
use autodev_llm::PriceTable;
use regex::Regex;

/// Chunks the model sees.
const CONTEXT_CHUNKS: usize = 8;
/// What the model says when the excerpts do not hold the answer.
pub const NOT_FOUND: &str = "I could not find it";
/// The longest answer a question may get, in tokens (its worst case is reserved for it).
pub const MAX_ANSWER_TOKENS: u32 = 1_500;

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Citation {
    pub path: String,
    pub start_line: u64,
    pub end_line: u64,
    /// Whether the place is inside a chunk of the index.
    pub valid: bool,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Answer {
    pub answer: String,
    pub citations: Vec<Citation>,
    /// Every citation checks out, and there is at least one (or the answer is "not found").
    pub citations_ok: bool,
    pub not_found: bool,
    /// The chunks the model was given.
    pub sources: Vec<Hit>,
    pub model: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_micros: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error(transparent)]
    Index(#[from] CodeError),
    #[error("model call failed: {0}")]
    Model(#[from] ModelError),
}

/// `path:12-30` or `path:12` (a file name with an extension, or a dotfile path).
static CITATION: LazyLock<Regex> = LazyLock::new(|| {
    // A constant pattern, covered by the tests below.
    #[allow(clippy::expect_used)]
    Regex::new(r"([A-Za-z0-9_./-]*[A-Za-z0-9_-]\.[A-Za-z0-9]+):(\d+)(?:-(\d+))?").expect("a valid pattern")
});

/// The places an answer cites, in order, without repeats.
pub fn citations_in(text: &str) -> Vec<(String, u64, u64)> {
    let mut out: Vec<(String, u64, u64)> = Vec::new();
    for c in CITATION.captures_iter(text) {
        let path = c[1].trim_start_matches("./").to_string();
        let start: u64 = c[2].parse().unwrap_or(0);
        let end: u64 = c.get(3).and_then(|m| m.as_str().parse().ok()).unwrap_or(start);
        if !out.iter().any(|(p, s, e)| *p == path && *s == start && *e == end) {
            out.push((path, start, end));
        }
    }
    out
}

/// An earlier turn of a conversation.
#[derive(Clone, Debug, PartialEq)]
pub struct Turn {
    pub question: String,
    pub answer: String,
}

/// Characters of earlier turns a prompt carries at most; the oldest are shortened, then
/// dropped, to stay within it.
const EARLIER_CHARS: usize = 6_000;
/// An earlier answer kept whole in the prompt is cut to this many characters.
const EARLIER_ANSWER_CHARS: usize = 2_000;

/// The earlier turns as the prompt carries them: the last two whole (answers cut at
/// [`EARLIER_ANSWER_CHARS`]), older ones as their question and the first line of their
/// answer, the oldest dropped first when they pass [`EARLIER_CHARS`].
fn earlier_section(earlier: &[Turn]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut used = 0;
    for (i, t) in earlier.iter().enumerate().rev() {
        let recent = earlier.len() - i <= 2;
        let answer: String = if recent {
            t.answer.chars().take(EARLIER_ANSWER_CHARS).collect()
        } else {
            t.answer.lines().next().unwrap_or("").chars().take(300).collect()
        };
        let part = format!("Q: {}\nA: {answer}\n", t.question.trim());
        if used + part.len() > EARLIER_CHARS {
            break;
        }
        used += part.len();
        parts.push(part);
    }
    if parts.is_empty() {
        return String::new();
    }
    parts.reverse();
    let dropped = earlier.len() - parts.len();
    let note = if dropped > 0 { format!("({dropped} earlier turns left out)\n") } else { String::new() };
    format!("# Earlier in this conversation\n\n{note}{}\n", parts.join("\n"))
}

/// What the index is searched with for a follow-up: the question, the previous question,
/// and the names the previous answer put in backticks ("and where is that called from?"
/// finds nothing on its own).
fn retrieval_query(question: &str, earlier: &[Turn]) -> String {
    let Some(last) = earlier.last() else { return question.to_string() };
    let names: Vec<&str> = last.answer.split('`').skip(1).step_by(2).filter(|n| n.len() <= 80).take(8).collect();
    format!("{question} {} {}", last.question, names.join(" "))
}

fn prompt(question: &str, hits: &[Hit]) -> Vec<Message> {
    let mut excerpts = String::new();
    for h in hits {
        let name = if h.name.is_empty() { String::new() } else { format!(" ({})", h.name) };
        excerpts.push_str(&format!("\n## {}:{}-{}{name}\n```\n{}\n```\n", h.path, h.start_line, h.end_line, h.text));
    }
    vec![
        Message::system(format!(
            "You answer questions about a code repository from excerpts of its code. Use only the excerpts. \
             Cite the place of every fact you use as path:start-end, with lines inside an excerpt's range \
             (for example src/lib.rs:10-24). Be brief. If the excerpts do not answer the question, answer \
             exactly: {NOT_FOUND}."
        )),
        Message::user(format!("# Question\n\n{question}\n\n# Excerpts\n{excerpts}")),
    ]
}

/// Answers `question` from `index` with `model` (`model_name` is priced with `prices`).
pub async fn ask(
    index: &Searcher,
    client: &dyn ModelClient,
    prices: &PriceTable,
    model_name: &str,
    question: &str,
) -> Result<Answer, AskError> {
    ask_in(index, client, prices, model_name, question, &[], None).await
}

/// Answers `question` as the next turn of a conversation whose `earlier` turns it is given
/// (summarised to fit), handing the answer's text to `on_text` as it is written.
pub async fn ask_in(
    index: &Searcher,
    client: &dyn ModelClient,
    prices: &PriceTable,
    model_name: &str,
    question: &str,
    earlier: &[Turn],
    on_text: Option<&autodev_domain::TextSink<'_>>,
) -> Result<Answer, AskError> {
    let sources = index.search(&retrieval_query(question, earlier), CONTEXT_CHUNKS).await?;
    let mut messages = prompt(question, &sources);
    let before = earlier_section(earlier);
    if let Some(user) = messages.last_mut().filter(|_| !before.is_empty()) {
        user.content = format!("{before}{}", user.content);
    }
    let request = ModelRequest {
        model: model_name.to_string(),
        messages,
        tools: Vec::new(),
        max_output_tokens: MAX_ANSWER_TOKENS,
        meta: CallMeta { conversation: "ask".into(), turn: 0 },
        response_schema: None,
    };
    let response = match on_text {
        Some(sink) => client.complete_with(&request, sink).await?,
        None => client.complete(&request).await?,
    };
    let text = response.message.content.trim().to_string();
    let not_found = text.to_lowercase().contains(&NOT_FOUND.to_lowercase());
    let mut citations = Vec::new();
    for (path, start, end) in citations_in(&text) {
        let valid = index.index.covers(&path, start, end).map_err(CodeError::from)?;
        citations.push(Citation { path, start_line: start, end_line: end, valid });
    }
    let citations_ok = citations.iter().all(|c| c.valid) && (not_found || !citations.is_empty());
    let (provider_model, input, output) = (
        response.served_by().map_or(model_name, |(_, m)| m),
        response.usage.input_tokens,
        response.usage.output_tokens,
    );
    let cost_micros = prices.cost(provider_model, input, output).map_or(0, |c| c.0);
    Ok(Answer {
        answer: text,
        citations,
        citations_ok,
        not_found,
        sources,
        model: provider_model.to_string(),
        input_tokens: input,
        output_tokens: output,
        cost_micros,
    })
}

/// Who asked, for the usage record: an API key's id and name, a project; `None` for the
/// CLI and a local MCP repository.
#[derive(Clone, Copy, Debug, Default)]
pub struct Asker<'a> {
    pub key: Option<(&'a str, &'a str)>,
    pub project_id: Option<&'a str>,
}

/// Records an answered question (table `asks`; its cost counts toward the month's spend) and
/// returns its id.
pub async fn record(
    store: &autodev_store::Store,
    asker: Asker<'_>,
    question: &str,
    answer: &Answer,
) -> Result<String, autodev_store::StoreError> {
    // A UUIDv7, as run ids are (time-ordered).
    let id = autodev_domain::RunId::new().to_string();
    store
        .record_ask(autodev_store::NewAsk {
            id: &id,
            project_id: asker.project_id,
            key_id: asker.key.map(|(id, _)| id),
            key_name: asker.key.map(|(_, name)| name),
            question,
            model: &answer.model,
            input_tokens: answer.input_tokens as i64,
            output_tokens: answer.output_tokens as i64,
            cost_micros: answer.cost_micros,
            citations_ok: answer.citations_ok,
        })
        .await?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earlier_turns_are_summarised_to_fit_and_feed_the_search() {
        let turn = |i: usize| Turn {
            question: format!("question {i}"),
            answer: format!("answer {i} `name_{i}`\n{}", "x".repeat(1_900)),
        };
        let earlier: Vec<Turn> = (1..=6).map(turn).collect();
        let text = earlier_section(&earlier);
        assert!(text.len() <= EARLIER_CHARS + 200, "{}", text.len());
        // The last two whole, older ones shortened; the oldest dropped when they do not fit.
        assert!(text.contains("Q: question 6\nA: answer 6") && text.contains(&"x".repeat(1_800)));
        assert!(text.contains("Q: question 3\nA: answer 3 `name_3`\n\nQ: question 4"));
        assert!(text.contains("Q: question 1\n") && !text.contains("left out"), "all six fit");
        // Long questions: the oldest turns are left out, and the prompt says so.
        let long: Vec<Turn> =
            (1..=9).map(|i| Turn { question: format!("q{i} {}", "y".repeat(1_000)), answer: "a".into() }).collect();
        let text = earlier_section(&long);
        assert!(text.len() <= EARLIER_CHARS + 200 && text.contains("(4 earlier turns left out)"), "{}", text.len());
        assert!(text.contains("Q: q9 ") && !text.contains("Q: q4 "));
        assert_eq!(
            retrieval_query("and where is that called?", &earlier),
            "and where is that called? question 6 name_6"
        );
        assert_eq!(earlier_section(&[]), "");
    }

    #[test]
    fn citations_are_read_in_the_forms_models_write_them() {
        let text = "Budgets are reserved in `crates/store/src/budget.rs:34-42` and checked at ./src/agent.rs:586. \
                    See also crates/store/src/budget.rs:34-42 and README.md:1-3; not 12:30 or v1.2.";
        assert_eq!(
            citations_in(text),
            vec![
                ("crates/store/src/budget.rs".to_string(), 34, 42),
                ("src/agent.rs".to_string(), 586, 586),
                ("README.md".to_string(), 1, 3),
            ]
        );
    }
}
