//! What `edit_file`, `insert_lines` and `write_file` do to a file's text, apart from the
//! file system: matching `old_text` in tiers (exact, then ignoring trailing whitespace, then
//! indentation, always demanding one match), keeping the file's line endings, showing the
//! changed region with line numbers, and spotting content that elides code.
//!
//! All matching is done on the text with `\n` line endings; a file written with `\r\n` gets
//! them back when it is written (a model reads files without the `\r`, so it could never copy
//! them into `old_text`).

/// A file's text with its line endings made `\n`, and whether they were `\r\n`.
#[derive(Debug)]
pub struct Text {
    pub lf: String,
    pub crlf: bool,
}

impl Text {
    /// A file is `\r\n` when most of its line ends are; it is written back that way whole.
    pub fn new(raw: &str) -> Self {
        let crlf_count = raw.matches("\r\n").count();
        let lf_count = raw.matches('\n').count();
        let crlf = crlf_count > 0 && crlf_count * 2 >= lf_count;
        let lf = if crlf_count > 0 { raw.replace("\r\n", "\n") } else { raw.to_string() };
        Self { lf, crlf }
    }

    /// `text` (with `\n` line endings) as this file writes it.
    pub fn encode(&self, text: &str) -> String {
        if self.crlf { text.replace('\n', "\r\n") } else { text.to_string() }
    }
}

/// How an `old_text` was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    Exact,
    TrailingWhitespace,
    Indentation,
}

impl Tier {
    pub fn note(self) -> &'static str {
        match self {
            Tier::Exact => "",
            Tier::TrailingWhitespace => " (matched ignoring trailing whitespace)",
            Tier::Indentation => " (matched ignoring indentation; new_text re-indented to the file's)",
        }
    }
}

/// An edit that applies: the new text, the first and last changed line (1-based, in the new
/// text) and how old_text was found.
#[derive(Debug, PartialEq, Eq)]
pub struct Edited {
    pub text: String,
    pub first_line: usize,
    pub last_line: usize,
    pub tier: Tier,
}

/// Why an edit does not apply (the message names the fix).
#[derive(Debug, PartialEq, Eq)]
pub enum EditError {
    NotFound,
    /// The 1-based lines where each match starts.
    Ambiguous(Tier, Vec<usize>),
}

/// Replaces the one occurrence of `old` in `text` (all with `\n` line endings) by `new`.
pub fn replace(text: &str, old: &str, new: &str) -> Result<Edited, EditError> {
    let starts: Vec<usize> = text.match_indices(old).map(|(i, _)| i).collect();
    match starts.as_slice() {
        [at] => {
            let first_line = line_of(text, *at);
            let updated = format!("{}{new}{}", &text[..*at], &text[at + old.len()..]);
            let last_line = first_line + new.matches('\n').count().saturating_sub(usize::from(new.ends_with('\n')));
            return Ok(Edited { text: updated, first_line, last_line: last_line.max(first_line), tier: Tier::Exact });
        }
        [] => {}
        many => return Err(EditError::Ambiguous(Tier::Exact, many.iter().map(|i| line_of(text, *i)).collect())),
    }
    for tier in [Tier::TrailingWhitespace, Tier::Indentation] {
        match by_lines(text, old, new, tier) {
            Err(EditError::NotFound) => continue,
            other => return other,
        }
    }
    Err(EditError::NotFound)
}

/// 1-based line of a byte offset.
fn line_of(text: &str, at: usize) -> usize {
    text[..at].matches('\n').count() + 1
}

fn indent_of(line: &str) -> &str {
    &line[..line.len() - line.trim_start().len()]
}

/// The tolerant tiers: `old`'s lines against each run of the file's lines, compared without
/// trailing whitespace (and, for indentation, without leading whitespace too); the matched
/// lines are replaced whole.
fn by_lines(text: &str, old: &str, new: &str, tier: Tier) -> Result<Edited, EditError> {
    let norm = |l: &str| -> String {
        match tier {
            Tier::Indentation => l.trim().to_string(),
            _ => l.trim_end().to_string(),
        }
    };
    let old_lines: Vec<&str> = old.trim_end_matches('\n').split('\n').collect();
    // Leading and trailing blank lines of old_text say nothing about where it is.
    let first = old_lines.iter().position(|l| !l.trim().is_empty());
    let last = old_lines.iter().rposition(|l| !l.trim().is_empty());
    let (Some(first), Some(last)) = (first, last) else { return Err(EditError::NotFound) };
    let wanted: Vec<String> = old_lines[first..=last].iter().map(|l| norm(l)).collect();
    let lines: Vec<&str> = text.split('\n').collect();
    let normed: Vec<String> = lines.iter().map(|l| norm(l)).collect();
    let found: Vec<usize> = (0..lines.len().saturating_sub(wanted.len() - 1))
        .filter(|&i| normed[i..i + wanted.len()] == wanted[..])
        .collect();
    let at = match found.as_slice() {
        [] => return Err(EditError::NotFound),
        [at] => *at,
        many => return Err(EditError::Ambiguous(tier, many.iter().map(|i| i + 1).collect())),
    };
    let mut new_lines: Vec<String> = new.trim_end_matches('\n').split('\n').map(str::to_string).collect();
    if new.is_empty() {
        new_lines.clear();
    }
    if tier == Tier::Indentation {
        // The indentation old_text was written with, and the file's, on the first line that
        // has text: new_text's lines move by the difference.
        let given = indent_of(old_lines[first]);
        let actual = indent_of(lines[at]);
        new_lines = new_lines
            .into_iter()
            .map(|l| {
                if l.trim().is_empty() {
                    l
                } else if let Some(rest) = l.strip_prefix(given) {
                    format!("{actual}{rest}")
                } else {
                    format!("{actual}{}", l.trim_start())
                }
            })
            .collect();
    }
    let mut out: Vec<String> = lines[..at].iter().map(|s| s.to_string()).collect();
    let replaced = new_lines.len();
    out.extend(new_lines);
    out.extend(lines[at + wanted.len()..].iter().map(|s| s.to_string()));
    let first_line = at + 1;
    Ok(Edited { text: out.join("\n"), first_line, last_line: (at + replaced).max(first_line), tier })
}

/// Inserts `insert` after line `after` (0: at the top) of `text`.
pub fn insert_after(text: &str, after: usize, insert: &str) -> Result<Edited, usize> {
    let total = text.lines().count();
    if after > total {
        return Err(total);
    }
    let mut block = insert.to_string();
    if !block.ends_with('\n') {
        block.push('\n');
    }
    let at = if after == 0 {
        0
    } else {
        // The byte after the `after`-th line's end (a last line without one gets it).
        text.match_indices('\n').nth(after - 1).map_or(text.len(), |(i, _)| i + 1)
    };
    let mut updated = text.to_string();
    let mut at = at;
    if at == text.len() && !text.is_empty() && !text.ends_with('\n') {
        updated.push('\n');
        at = updated.len();
    }
    updated.insert_str(at, &block);
    let added = block.matches('\n').count();
    Ok(Edited { text: updated, first_line: after + 1, last_line: after + added.max(1), tier: Tier::Exact })
}

/// Lines `first..=last` of `text` with `context` lines around, numbered as `read_file` numbers
/// them, at most `max_lines` (the middle left out).
pub fn region(text: &str, first: usize, last: usize, context: usize, max_lines: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    if lines.is_empty() {
        return "(the file is now empty)\n".to_string();
    }
    let from = first.saturating_sub(context).max(1);
    let to = (last + context).min(lines.len());
    let mut out = String::new();
    let shown: Vec<usize> = (from..=to).collect();
    let cut = shown.len() > max_lines;
    for (k, n) in shown.iter().enumerate() {
        if cut && k == max_lines / 2 {
            out.push_str(&format!("   ... {} lines ...\n", shown.len() - max_lines));
        }
        if cut && k >= max_lines / 2 && k < shown.len() - (max_lines - max_lines / 2) {
            continue;
        }
        out.push_str(&format!("{n:>6}\t{}\n", clip_line(lines[n - 1], 300)));
    }
    out
}

/// A line cut to `max` characters, with a marker saying how many were left out.
pub fn clip_line(line: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match line.char_indices().nth(max) {
        None => std::borrow::Cow::Borrowed(line),
        Some((at, _)) => {
            let rest = line[at..].chars().count();
            std::borrow::Cow::Owned(format!("{} [... {rest} more characters on this line]", &line[..at]))
        }
    }
}

/// Words that, in a comment next to `...`, say code was left out rather than written.
const ELISION_WORDS: &[&str] = &[
    "rest of",
    "remaining",
    "unchanged",
    "existing",
    "same as before",
    "as before",
    "omitted",
    "previous code",
    "other methods",
    "other functions",
    "code here",
    "keep the",
    "stays the same",
];

/// The first line of `content` that stands for code left out (`# ... rest unchanged`,
/// `// existing code ...`, `/* ... */`), 1-based, with its text. A comment counts when it
/// holds `...` (or `…`) and a word of [`ELISION_WORDS`], or says "rest of the file/code"
/// or "existing code" outright. Python's bare `...` (an ellipsis body) is code, not this.
pub fn elided(content: &str) -> Option<(usize, String)> {
    for (i, line) in content.lines().enumerate() {
        let t = line.trim();
        let Some(comment) = ["//", "#", "/*", "*", "--", "<!--", ";", "{/*"]
            .iter()
            .find_map(|m| t.strip_prefix(m))
            .map(|c| c.trim_end_matches("*/").trim_end_matches("-->").trim().to_lowercase())
        else {
            continue;
        };
        let dots = comment.contains("...") || comment.contains('…');
        let bare_dots = comment.trim_matches(|c: char| c == '.' || c == '…' || c.is_whitespace()).is_empty();
        let worded = ELISION_WORDS.iter().any(|w| comment.contains(w));
        let outright = ["rest of the file", "rest of the code", "rest of file", "existing code", "rest unchanged"]
            .iter()
            .any(|w| comment.contains(w));
        if (dots && (worded || bare_dots)) || outright {
            return Some((i + 1, line.trim().to_string()));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn crlf_files_are_matched_without_their_cr_and_keep_it() {
        let t = Text::new("fn a() {\r\n    1\r\n}\r\n");
        assert!(t.crlf);
        let e = replace(&t.lf, "fn a() {\n    1\n", "fn a() {\n    2\n").unwrap();
        assert_eq!(t.encode(&e.text), "fn a() {\r\n    2\r\n}\r\n");
        assert!(!Text::new("a\nb\n").crlf);
    }

    #[test]
    fn tolerant_tiers_still_demand_one_match() {
        let text = "def f():\n    x = 1   \n    return x\n";
        // Trailing whitespace.
        let e = replace(text, "    x = 1\n    return x", "    x = 2\n    return x").unwrap();
        assert_eq!((e.tier, e.text.as_str()), (Tier::TrailingWhitespace, "def f():\n    x = 2\n    return x\n"));
        // Indentation: old_text written flush left; new_text is moved to the file's indent.
        let e = replace(text, "x = 1\nreturn x\n", "y = 1\nreturn y\n").unwrap();
        assert_eq!((e.tier, e.text.as_str()), (Tier::Indentation, "def f():\n    y = 1\n    return y\n"));
        assert_eq!((e.first_line, e.last_line), (2, 3));
        // Two matches are refused with their lines.
        let twice = "a\n  b\nc\n  b\n";
        assert_eq!(replace(twice, "b", "x"), Err(EditError::Ambiguous(Tier::Exact, vec![2, 4])));
        assert_eq!(replace("a\n b \nc\n\tb\n", "  b", "x"), Err(EditError::Ambiguous(Tier::Indentation, vec![2, 4])));
        assert_eq!(replace(text, "nothing like it", "x"), Err(EditError::NotFound));
    }

    #[test]
    fn insert_lines_goes_after_the_line() {
        let e = insert_after("a\nb\n", 0, "top").unwrap();
        assert_eq!(e.text, "top\na\nb\n");
        assert_eq!(insert_after("a\nb\n", 1, "mid\n").unwrap().text, "a\nmid\nb\n");
        assert_eq!(insert_after("a\nb", 2, "end").unwrap().text, "a\nb\nend\n");
        assert_eq!(insert_after("a\n", 5, "x"), Err(1));
    }

    #[test]
    fn elisions_are_found_and_code_is_not() {
        for bad in [
            "def f():\n    # ... rest unchanged\n",
            "fn main() {\n    // ... existing code ...\n}\n",
            "class A:\n    # rest of the file stays as it is\n",
            "const x = 1;\n/* ... */\n",
            "<div>\n<!-- … remaining markup … -->\n",
        ] {
            assert!(elided(bad).is_some(), "{bad}");
        }
        for good in [
            "class P(Protocol):\n    def f(self) -> int: ...\n",
            "# Loading...\nx = 1\n",
            "// TODO: handle the rest of the cases\n",
            "# existing users keep their settings\n",
            "x = [1, 2, ...]\n",
        ] {
            assert_eq!(elided(good), None, "{good}");
        }
    }

    #[test]
    fn regions_are_numbered_and_long_lines_clipped() {
        let text = format!("a\nb\nc\n{}\ne\n", "x".repeat(400));
        let r = region(&text, 4, 4, 1, 20);
        assert!(r.starts_with("     3\tc\n     4\txxx"), "{r}");
        assert!(r.contains("[... 100 more characters on this line]"), "{r}");
        assert!(r.ends_with("     5\te\n"), "{r}");
    }
}
