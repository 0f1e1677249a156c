//! A tokenizer that understands code: `recordModelCall`, `record_model_call` and
//! `RecordModelCall` all give `record`, `model`, `call` (and the whole identifier, so an
//! exact name still ranks first); acronyms split sensibly (`HTTPServer` → `http`,
//! `server`); digits apart from letters (`utf8` → `utf`, `8`). Lowercasing and English
//! stemming are the analyzer's filters after it (`crate::index`).
use tantivy::tokenizer::{Token, TokenStream, Tokenizer};

#[derive(Clone, Default)]
pub struct CodeTokenizer;

pub struct CodeTokenStream {
    tokens: Vec<Token>,
    at: usize,
}

impl TokenStream for CodeTokenStream {
    fn advance(&mut self) -> bool {
        if self.at < self.tokens.len() {
            self.at += 1;
            true
        } else {
            false
        }
    }
    fn token(&self) -> &Token {
        &self.tokens[self.at - 1]
    }
    fn token_mut(&mut self) -> &mut Token {
        &mut self.tokens[self.at - 1]
    }
}

impl Tokenizer for CodeTokenizer {
    type TokenStream<'a> = CodeTokenStream;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> CodeTokenStream {
        let mut tokens = Vec::new();
        let mut position = 0;
        let mut push = |from: usize, to: usize, tokens: &mut Vec<Token>| {
            tokens.push(Token {
                offset_from: from,
                offset_to: to,
                position,
                text: text[from..to].to_string(),
                position_length: 1,
            });
            position += 1;
        };
        for (start, word) in words(text) {
            let parts = split_identifier(word);
            if parts.len() > 1 {
                push(start, start + word.len(), &mut tokens);
            }
            for (s, e) in parts {
                push(start + s, start + e, &mut tokens);
            }
        }
        CodeTokenStream { tokens, at: 0 }
    }
}

/// Maximal runs of letters, digits and `_`, with their byte offsets.
fn words(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    for (i, c) in text.char_indices() {
        let word = c.is_alphanumeric() || c == '_';
        match (word, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                out.push((s, &text[s..i]));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, &text[s..]));
    }
    out.into_iter()
}

/// The parts of an identifier as byte ranges: split at `_`, at lower→upper, at the last
/// capital of an acronym before a lower-case letter, and between letters and digits.
pub fn split_identifier(word: &str) -> Vec<(usize, usize)> {
    let chars: Vec<(usize, char)> = word.char_indices().collect();
    let mut parts = Vec::new();
    let mut start: Option<usize> = None;
    for (k, &(i, c)) in chars.iter().enumerate() {
        if c == '_' {
            if let Some(s) = start.take() {
                parts.push((s, i));
            }
            continue;
        }
        if let Some(s) = start {
            let prev = chars[k - 1].1;
            let next = chars.get(k + 1).map(|x| x.1);
            let boundary = (prev.is_lowercase() && c.is_uppercase())
                || (prev.is_uppercase() && c.is_uppercase() && next.is_some_and(char::is_lowercase))
                || (prev.is_alphabetic() && c.is_numeric())
                || (prev.is_numeric() && c.is_alphabetic());
            if boundary && prev != '_' {
                parts.push((s, i));
                start = Some(i);
            }
        } else {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        parts.push((s, word.len()));
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(text: &str) -> Vec<String> {
        let mut t = CodeTokenizer;
        let mut s = t.token_stream(text);
        let mut out = Vec::new();
        while s.advance() {
            out.push(s.token().text.clone());
        }
        out
    }

    #[test]
    fn identifiers_split_on_case_underscores_acronyms_and_digits() {
        assert_eq!(tokens("record_model_call"), ["record_model_call", "record", "model", "call"]);
        assert_eq!(tokens("recordModelCall"), ["recordModelCall", "record", "Model", "Call"]);
        assert_eq!(tokens("HTTPServer::new"), ["HTTPServer", "HTTP", "Server", "new"]);
        assert_eq!(tokens("parse_utf8(x)"), ["parse_utf8", "parse", "utf", "8", "x"]);
        assert_eq!(tokens("src/store/budget.rs"), ["src", "store", "budget", "rs"]);
        assert_eq!(tokens("__init__"), ["init"]);
    }
}
