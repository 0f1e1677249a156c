//! Chunks that follow the code's structure: functions, methods (named with their enclosing
//! `impl`, trait or class), types, with the doc comments, attributes and decorators above
//! them; tree-sitter grammars for Rust and Python. Code outside definitions, and files in
//! languages without a grammar here, are cut into overlapping line windows.
use tree_sitter::{Node, Parser};

/// A piece of a file, with where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub path: String,
    /// The definition's qualified name (`Store::record_model_call`, `Parser.parse`), empty
    /// for a line window.
    pub name: String,
    /// `function`, `method`, `struct`, `class`, …, or `lines`.
    pub kind: String,
    /// 1-based, inclusive.
    pub start_line: usize,
    pub end_line: usize,
    pub text: String,
}

/// Lines per window, and how many a window shares with the next.
const WINDOW: usize = 60;
const OVERLAP: usize = 10;
/// A definition longer than this is cut into windows (each keeps the name).
const MAX_CHUNK_LINES: usize = 150;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Lang {
    Rust,
    Python,
}

fn lang_of(path: &str) -> Option<Lang> {
    match path.rsplit('.').next()? {
        "rs" => Some(Lang::Rust),
        "py" | "pyi" => Some(Lang::Python),
        _ => None,
    }
}

/// The chunks of one file.
pub fn chunk_file(path: &str, text: &str) -> Vec<Chunk> {
    let lines: Vec<&str> = text.lines().collect();
    let mut spans: Vec<(usize, usize, String, String)> = Vec::new(); // 0-based inclusive rows
    if let Some(lang) = lang_of(path) {
        let mut parser = Parser::new();
        let language = match lang {
            Lang::Rust => tree_sitter_rust::LANGUAGE.into(),
            Lang::Python => tree_sitter_python::LANGUAGE.into(),
        };
        if parser.set_language(&language).is_ok()
            && let Some(tree) = parser.parse(text, None)
        {
            collect(lang, tree.root_node(), text.as_bytes(), "", false, &mut spans);
        }
    }
    spans.sort_by_key(|s| (s.0, s.1));
    let mut out = Vec::new();
    let mut covered = vec![false; lines.len()];
    for (start, end, name, kind) in &spans {
        let end = (*end).min(lines.len().saturating_sub(1));
        for c in covered.iter_mut().take(end + 1).skip(*start) {
            *c = true;
        }
        windows(path, &lines, *start, end, name, kind, MAX_CHUNK_LINES, &mut out);
    }
    // What no definition covers (imports, module docs, top-level statements), in windows
    // over each uncovered stretch that has something in it.
    let mut row = 0;
    while row < lines.len() {
        if covered[row] {
            row += 1;
            continue;
        }
        let start = row;
        while row < lines.len() && !covered[row] {
            row += 1;
        }
        let end = row - 1;
        // Closing braces and blank lines between definitions say nothing on their own.
        let says_something = |l: &&str| l.chars().any(|c| c.is_alphanumeric());
        if lines[start..=end].iter().any(says_something) {
            windows(path, &lines, start, end, "", "lines", WINDOW, &mut out);
        }
    }
    out.sort_by_key(|c| (c.start_line, c.end_line));
    out
}

/// Rows `start..=end` as one chunk, or as overlapping windows of at most `max` lines.
#[allow(clippy::too_many_arguments)]
fn windows(
    path: &str,
    lines: &[&str],
    start: usize,
    end: usize,
    name: &str,
    kind: &str,
    max: usize,
    out: &mut Vec<Chunk>,
) {
    let mut s = start;
    loop {
        let e = (s + max - 1).min(end);
        out.push(Chunk {
            path: path.to_string(),
            name: name.to_string(),
            kind: kind.to_string(),
            start_line: s + 1,
            end_line: e + 1,
            text: lines[s..=e].join("\n"),
        });
        if e >= end {
            break;
        }
        s = e + 1 - OVERLAP.min(e - s);
    }
}

fn text_of<'a>(node: Node<'_>, src: &'a [u8]) -> &'a str {
    node.utf8_text(src).unwrap_or_default()
}

/// The first row of a definition with the comments, attributes and decorators directly
/// above it.
fn start_with_preamble(lang: Lang, node: Node<'_>) -> usize {
    let mut start = node.start_position().row;
    let mut prev = node.prev_sibling();
    while let Some(p) = prev {
        let preamble = match lang {
            Lang::Rust => {
                matches!(p.kind(), "line_comment" | "block_comment" | "attribute_item" | "inner_attribute_item")
            }
            Lang::Python => p.kind() == "comment",
        };
        // Only what touches it: a blank line ends the preamble.
        if !preamble || p.end_position().row + 1 < start {
            break;
        }
        start = p.start_position().row;
        prev = p.prev_sibling();
    }
    start
}

fn join(scope: &str, name: &str, sep: &str) -> String {
    if scope.is_empty() { name.to_string() } else { format!("{scope}{sep}{name}") }
}

/// `in_class`: the scope is a class (Python), whose functions are methods.
fn collect(
    lang: Lang,
    node: Node<'_>,
    src: &[u8],
    scope: &str,
    in_class: bool,
    out: &mut Vec<(usize, usize, String, String)>,
) {
    let mut cursor = node.walk();
    for child in node.named_children(&mut cursor) {
        match lang {
            Lang::Rust => rust_item(child, src, scope, out),
            Lang::Python => python_item(child, src, scope, in_class, out),
        }
    }
}

fn rust_item(node: Node<'_>, src: &[u8], scope: &str, out: &mut Vec<(usize, usize, String, String)>) {
    let name = node.child_by_field_name("name").map(|n| text_of(n, src).to_string()).unwrap_or_default();
    let span = |kind: &str, name: String, out: &mut Vec<_>| {
        out.push((start_with_preamble(Lang::Rust, node), node.end_position().row, name, kind.to_string()));
    };
    match node.kind() {
        "function_item" | "function_signature_item" => {
            let kind = if scope.is_empty() { "function" } else { "method" };
            span(kind, join(scope, &name, "::"), out);
        }
        "struct_item" | "enum_item" | "union_item" | "type_item" | "const_item" | "static_item"
        | "macro_definition" => {
            span(node.kind().trim_end_matches("_item").trim_end_matches("_definition"), join(scope, &name, "::"), out);
        }
        "trait_item" => {
            // The trait's own lines up to its body are the header chunk; its items are methods.
            let full = join(scope, &name, "::");
            if let Some(body) = node.child_by_field_name("body") {
                out.push((
                    start_with_preamble(Lang::Rust, node),
                    body.start_position().row,
                    full.clone(),
                    "trait".into(),
                ));
                collect(Lang::Rust, body, src, &full, false, out);
            } else {
                span("trait", full, out);
            }
        }
        "impl_item" => {
            let ty = node.child_by_field_name("type").map(|n| text_of(n, src)).unwrap_or_default();
            let header = match node.child_by_field_name("trait") {
                Some(t) => format!("impl {} for {ty}", text_of(t, src)),
                None => format!("impl {ty}"),
            };
            // Methods are named `Type::method`; the impl's header line is its own chunk.
            let scope_name = join(scope, ty.split('<').next().unwrap_or(ty), "::");
            if let Some(body) = node.child_by_field_name("body") {
                out.push((start_with_preamble(Lang::Rust, node), node.start_position().row, header, "impl".into()));
                collect(Lang::Rust, body, src, &scope_name, false, out);
            }
        }
        "mod_item" => {
            let full = join(scope, &name, "::");
            match node.child_by_field_name("body") {
                Some(body) => {
                    // Its header line is a chunk; its items are chunks of their own.
                    out.push((
                        start_with_preamble(Lang::Rust, node),
                        node.start_position().row,
                        full.clone(),
                        "mod".into(),
                    ));
                    collect(Lang::Rust, body, src, &full, false, out)
                }
                None => span("mod", full, out),
            }
        }
        _ => {}
    }
}

fn python_item(node: Node<'_>, src: &[u8], scope: &str, in_class: bool, out: &mut Vec<(usize, usize, String, String)>) {
    // A decorated definition spans its decorators; the definition inside gives the name.
    let (outer, def) = if node.kind() == "decorated_definition" {
        match node.child_by_field_name("definition") {
            Some(d) => (node, d),
            None => return,
        }
    } else {
        (node, node)
    };
    let name = def.child_by_field_name("name").map(|n| text_of(n, src).to_string()).unwrap_or_default();
    let start = start_with_preamble(Lang::Python, outer);
    match def.kind() {
        "function_definition" => {
            let kind = if in_class { "method" } else { "function" };
            out.push((start, outer.end_position().row, join(scope, &name, "."), kind.into()));
            // Nested functions and classes are chunks of their own too (named inside it).
            if let Some(body) = def.child_by_field_name("body") {
                collect(Lang::Python, body, src, &join(scope, &name, "."), false, out);
            }
        }
        "class_definition" => {
            let full = join(scope, &name, ".");
            let body = def.child_by_field_name("body");
            // The class's header, docstring and attributes up to its first method.
            let first_def = body.and_then(|b| {
                let mut c = b.walk();
                b.named_children(&mut c)
                    .find(|n| matches!(n.kind(), "function_definition" | "decorated_definition" | "class_definition"))
                    .map(|n| start_with_preamble(Lang::Python, n))
            });
            let header_end = first_def.map_or(outer.end_position().row, |r| r.saturating_sub(1).max(start));
            out.push((start, header_end, full.clone(), "class".into()));
            if let Some(body) = body {
                collect(Lang::Python, body, src, &full, true, out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(chunks: &[Chunk]) -> Vec<(String, String, usize, usize)> {
        chunks.iter().map(|c| (c.kind.clone(), c.name.clone(), c.start_line, c.end_line)).collect()
    }

    #[test]
    fn rust_items_are_chunked_with_their_doc_comments_and_enclosing_names() {
        let src = r#"use std::fmt;

/// A store.
#[derive(Debug)]
pub struct Store {
    x: u32,
}

impl Store {
    /// Records a call.
    pub fn record(&self) -> u32 {
        self.x
    }

    fn other(&self) {}
}

mod inner {
    pub trait Greeter {
        fn greet(&self) -> String;
    }
}
"#;
        let got = names(&chunk_file("src/store.rs", src));
        assert_eq!(
            got,
            vec![
                ("lines".into(), "".into(), 1, 2),
                ("struct".into(), "Store".into(), 3, 7),
                ("impl".into(), "impl Store".into(), 9, 9),
                ("method".into(), "Store::record".into(), 10, 13),
                ("method".into(), "Store::other".into(), 15, 15),
                ("mod".into(), "inner".into(), 18, 18),
                ("trait".into(), "inner::Greeter".into(), 19, 19),
                ("method".into(), "inner::Greeter::greet".into(), 20, 20),
            ]
        );
    }

    #[test]
    fn python_decorators_nested_definitions_and_classes() {
        let src = r#"import os

class Parser:
    """Parses things."""
    limit = 3

    @staticmethod
    def parse(text):
        def helper(x):
            return x
        return helper(text)

@cache
def top():
    return 1
"#;
        let got = names(&chunk_file("pkg/parse.py", src));
        assert_eq!(
            got,
            vec![
                ("lines".into(), "".into(), 1, 2),
                ("class".into(), "Parser".into(), 3, 6),
                ("method".into(), "Parser.parse".into(), 7, 11),
                ("function".into(), "Parser.parse.helper".into(), 9, 10),
                ("function".into(), "top".into(), 13, 15),
            ]
        );
    }

    #[test]
    fn a_file_without_a_grammar_is_cut_into_overlapping_windows() {
        let src: String = (1..=130).map(|i| format!("line {i}\n")).collect();
        let got = names(&chunk_file("notes.txt", &src));
        assert_eq!(
            got,
            vec![
                ("lines".into(), "".into(), 1, 60),
                ("lines".into(), "".into(), 51, 110),
                ("lines".into(), "".into(), 101, 130)
            ]
        );
    }
}
