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
        // An abbreviation also counts as the word it stands for (`extra`, at the same
        // position), so a question in plain words ("string", "directory") finds code that
        // says `str`, `dir`.
        let mut push = |from: usize, to: usize, extra: Option<&'static str>, tokens: &mut Vec<Token>| {
            tokens.push(Token {
                offset_from: from,
                offset_to: to,
                position,
                text: text[from..to].to_string(),
                position_length: 1,
            });
            if let Some(full) = extra {
                tokens.push(Token {
                    offset_from: from,
                    offset_to: to,
                    position,
                    text: full.to_string(),
                    position_length: 1,
                });
            }
            position += 1;
        };
        for (start, word) in words(text) {
            let parts = split_identifier(word);
            if parts.len() > 1 {
                push(start, start + word.len(), None, &mut tokens);
            }
            for (s, e) in parts {
                push(start + s, start + e, expansion(&word[s..e]), &mut tokens);
            }
        }
        CodeTokenStream { tokens, at: 0 }
    }
}

/// Abbreviations common in code and the words they stand for (a small, conservative list:
/// only those with one usual meaning).
const ABBREVIATIONS: &[(&str, &str)] = &[
    ("addr", "address"),
    ("arg", "argument"),
    ("args", "arguments"),
    ("attr", "attribute"),
    ("attrs", "attributes"),
    ("auth", "authentication"),
    ("buf", "buffer"),
    ("cfg", "configuration"),
    ("char", "character"),
    ("chars", "characters"),
    ("cmd", "command"),
    ("conf", "configuration"),
    ("config", "configuration"),
    ("conn", "connection"),
    ("ctx", "context"),
    ("db", "database"),
    ("del", "delete"),
    ("dest", "destination"),
    ("dir", "directory"),
    ("dirs", "directories"),
    ("dst", "destination"),
    ("elem", "element"),
    ("env", "environment"),
    ("err", "error"),
    ("exe", "executable"),
    ("fn", "function"),
    ("func", "function"),
    ("hdr", "header"),
    ("idx", "index"),
    ("impl", "implementation"),
    ("init", "initialize"),
    ("len", "length"),
    ("lib", "library"),
    ("msg", "message"),
    ("num", "number"),
    ("obj", "object"),
    ("opt", "option"),
    ("opts", "options"),
    ("param", "parameter"),
    ("params", "parameters"),
    ("pkg", "package"),
    ("prev", "previous"),
    ("proc", "process"),
    ("repo", "repository"),
    ("req", "request"),
    ("resp", "response"),
    ("rm", "remove"),
    ("sig", "signature"),
    ("sock", "socket"),
    ("src", "source"),
    ("str", "string"),
    ("tmp", "temporary"),
    ("val", "value"),
    ("var", "variable"),
];

fn expansion(part: &str) -> Option<&'static str> {
    if part.len() > 6 || !part.is_ascii() {
        return None;
    }
    let lower = part.to_ascii_lowercase();
    ABBREVIATIONS.binary_search_by(|(a, _)| a.cmp(&lower.as_str())).ok().map(|i| ABBREVIATIONS[i].1)
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

    #[test]
    fn abbreviations_are_sorted_and_expand() {
        assert!(ABBREVIATIONS.windows(2).all(|w| w[0].0 < w[1].0), "keep the list sorted (binary search)");
        let mut t = CodeTokenizer;
        let mut stream = t.token_stream("fn parse_cfg(src_dir: &str)");
        let mut seen = Vec::new();
        while stream.advance() {
            seen.push(stream.token().text.clone());
        }
        for want in ["configuration", "source", "directory", "string", "function"] {
            assert!(seen.iter().any(|s| s == want), "{want} in {seen:?}");
        }
    }

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
        // Abbreviations also give the word they stand for.
        assert_eq!(tokens("src/store/budget.rs"), ["src", "source", "store", "budget", "rs"]);
        assert_eq!(tokens("__init__"), ["init", "initialize"]);
    }
}
