//! Syntax errors an edit introduced, for the languages with a tree-sitter grammar here (Rust,
//! Python): the file is parsed before and after, and the error nodes the change added are
//! named with their lines, in the edit's result (SWE-agent's lint-on-edit, without running
//! a linter).
use tree_sitter::{Node, Parser};

fn language(path: &str) -> Option<tree_sitter::Language> {
    match path.rsplit('.').next()? {
        "rs" => Some(tree_sitter_rust::LANGUAGE.into()),
        "py" | "pyi" => Some(tree_sitter_python::LANGUAGE.into()),
        _ => None,
    }
}

/// The 1-based lines of the syntax errors of `text` (at most 20), or `None` for a language
/// without a grammar here.
pub fn errors(path: &str, text: &str) -> Option<Vec<usize>> {
    let mut parser = Parser::new();
    parser.set_language(&language(path)?).ok()?;
    let tree = parser.parse(text, None)?;
    let mut lines = Vec::new();
    collect(tree.root_node(), &mut lines);
    lines.dedup();
    Some(lines)
}

fn collect(node: Node<'_>, out: &mut Vec<usize>) {
    if out.len() >= 20 || !node.has_error() && !node.is_missing() {
        return;
    }
    if node.is_error() || node.is_missing() {
        out.push(node.start_position().row + 1);
        return;
    }
    let mut cursor = node.walk();
    for child in node.children(&mut cursor) {
        collect(child, out);
    }
}

/// What the result of an edit says about syntax: nothing when the file parses as well as it
/// did before (or its language has no grammar here), else the lines of the new errors.
pub fn introduced(path: &str, before: &str, after: &str) -> Option<String> {
    let now = errors(path, after)?;
    if now.is_empty() {
        return None;
    }
    let was = errors(path, before).unwrap_or_default();
    if now.len() <= was.len() {
        return None;
    }
    let lines: Vec<String> = now.iter().map(|l| l.to_string()).collect();
    let lines_text = after.lines().collect::<Vec<_>>();
    let first = now[0];
    let shown =
        lines_text.get(first - 1).map(|l| crate::edit::clip_line(l.trim(), 120).into_owned()).unwrap_or_default();
    Some(format!(
        "warning: the file no longer parses: syntax error at line{} {} (line {first}: `{shown}`). The edit was \
         made; fix it with another edit, or undo_edit.",
        if now.len() > 1 { "s" } else { "" },
        lines.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_errors_are_named_with_their_lines() {
        let before = "def f():\n    return 1\n";
        let after = "def f():\n    return (1\n\ndef g():\n    pass\n";
        let said = introduced("a.py", before, after).unwrap();
        assert!(said.contains("syntax error at line"), "{said}");
        assert_eq!(introduced("a.py", before, "def f():\n    return 2\n"), None);
        assert_eq!(introduced("notes.txt", before, after), None);
        // An error that was already there is not the edit's.
        let broken = "fn a( {\n";
        assert_eq!(introduced("a.rs", broken, "fn a( {\n// note\n"), None);
        assert!(introduced("a.rs", "fn a() {}\n", "fn a() {\n").is_some());
    }
}
