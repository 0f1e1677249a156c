//! Counting a request's input tokens for budget reservations: exactly, with the model's own
//! tokenizer where one is published (OpenAI's models, through tiktoken-rs), else with a
//! conservative estimate (three characters a token, a third more than the usual four).
//!
//! Counting is cached per message text, so an agent's turn counts only what is new in its
//! conversation (the history is counted once).
use std::collections::HashMap;
use std::hash::BuildHasher;

use autodev_domain::{Message, ModelRequest};
use tiktoken_rs::CoreBPE;

/// Tokens of framing per message in OpenAI's chat format (role and separators), and per
/// request (the reply's priming), as OpenAI's cookbook counts them, rounded up.
const PER_MESSAGE: u64 = 4;
const PER_REQUEST: u64 = 3;

/// Counts input tokens for one conversation.
pub struct TokenCounter {
    bpe: Option<&'static CoreBPE>,
    /// Tokens by the hash of a text. foldhash rather than SipHash: every turn hashes the
    /// whole conversation to find what is new, and foldhash does that ~10 times faster.
    cache: HashMap<u64, u64>,
    hasher: foldhash::quality::FixedState,
    /// The tool definitions' tokens (the same tools on every turn of a conversation), keyed
    /// by their names.
    tools: Option<(Vec<String>, u64)>,
}

impl TokenCounter {
    /// A counter for `model`: exact for models with a known tokenizer.
    pub fn for_model(model: &str) -> Self {
        let bpe = tiktoken_rs::tokenizer::get_tokenizer(model).and_then(|t| tiktoken_rs::bpe_for_tokenizer(t).ok());
        Self { bpe, cache: HashMap::new(), hasher: foldhash::quality::FixedState::default(), tools: None }
    }

    /// Whether counts are exact (the model's tokenizer) rather than estimated.
    pub fn is_exact(&self) -> bool {
        self.bpe.is_some()
    }

    fn text(&mut self, text: &str) -> u64 {
        match self.bpe {
            None => (text.len() as u64).div_ceil(3),
            Some(bpe) => {
                let key = self.hasher.hash_one(text);
                *self.cache.entry(key).or_insert_with(|| bpe.encode_ordinary(text).len() as u64)
            }
        }
    }

    fn message(&mut self, m: &Message) -> u64 {
        let mut n = PER_MESSAGE + self.text(&m.content);
        for c in &m.tool_calls {
            n += self.text(&c.name) + self.text(&c.arguments) + PER_MESSAGE;
        }
        n
    }

    /// The request's input tokens: its messages and its tool definitions (sent as JSON).
    pub fn input(&mut self, req: &ModelRequest) -> u64 {
        let mut n = PER_REQUEST;
        for m in &req.messages {
            n += self.message(m);
        }
        let same_tools = self.tools.as_ref().is_some_and(|(names, _)| {
            names.len() == req.tools.len() && names.iter().zip(&req.tools).all(|(a, b)| *a == b.name)
        });
        if !same_tools {
            let mut t_tokens = 0;
            for t in &req.tools {
                t_tokens +=
                    self.text(&t.name) + self.text(&t.description) + self.text(&t.parameters.to_string()) + PER_MESSAGE;
            }
            self.tools = Some((req.tools.iter().map(|t| t.name.clone()).collect(), t_tokens));
        }
        n + self.tools.as_ref().map_or(0, |(_, t)| *t)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use autodev_domain::{CallMeta, ModelRequest};

    use super::*;

    fn req(text: &str) -> ModelRequest {
        ModelRequest {
            model: "gpt-4.1".into(),
            messages: vec![Message::system("You are terse."), Message::user(text)],
            tools: vec![],
            max_output_tokens: 10,
            meta: CallMeta { conversation: "c".into(), turn: 0 },
            response_schema: None,
        }
    }

    #[test]
    fn openai_models_are_counted_with_their_tokenizer() {
        let mut c = TokenCounter::for_model("gpt-4.1-mini");
        assert!(c.is_exact());
        // "hello world" is two o200k tokens; "You are terse." four.
        assert_eq!(c.input(&req("hello world")), PER_REQUEST + 2 * PER_MESSAGE + 4 + 2);
        let mut other = TokenCounter::for_model("claude-sonnet-4-5");
        assert!(!other.is_exact());
        // 14 and 11 characters at three a token, rounded up.
        assert_eq!(other.input(&req("hello world")), PER_REQUEST + 2 * PER_MESSAGE + 5 + 4);
    }

    #[test]
    fn exact_counts_are_within_the_conservative_estimate_on_code() {
        let code = include_str!("openai.rs");
        let mut exact = TokenCounter::for_model("gpt-4o");
        let mut estimate = TokenCounter::for_model("llama-3.3-70b-versatile");
        let (e, c) = (exact.input(&req(code)), estimate.input(&req(code)));
        assert!(e < c, "exact {e} should be below the estimate {c}");
        // Cached: counting again is the same.
        assert_eq!(exact.input(&req(code)), e);
    }
}
