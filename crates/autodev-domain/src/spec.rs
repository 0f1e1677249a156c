//! The spec a run starts from: Markdown text, validated once at the edge.

/// The largest spec accepted. A spec is a description of work, not a data file; anything
/// bigger is almost certainly the wrong file.
pub const MAX_SPEC_BYTES: usize = 256 * 1024;

/// A validated spec: non-empty UTF-8 text without NUL bytes, at most [`MAX_SPEC_BYTES`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    text: String,
}

/// Why a spec was refused. Every variant is the user's to fix; the message says how.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("spec is empty: write what you want done (Markdown) in the spec file")]
    Empty,
    #[error(
        "spec is {size} bytes, over the {max}-byte limit: keep the spec to a description of the work and point to files in the repository instead"
    )]
    TooLarge { size: usize, max: usize },
    #[error("spec is not text (it contains {what}): pass a Markdown or plain-text file")]
    Binary { what: &'static str },
}

impl Spec {
    pub fn parse(bytes: &[u8]) -> Result<Self, SpecError> {
        if bytes.len() > MAX_SPEC_BYTES {
            return Err(SpecError::TooLarge { size: bytes.len(), max: MAX_SPEC_BYTES });
        }
        let text = std::str::from_utf8(bytes).map_err(|_| SpecError::Binary { what: "bytes that are not UTF-8" })?;
        Self::from_text(text)
    }

    /// A spec from text that arrived as text (an API field, a ticket), whose size the caller
    /// limits: not blank, no NUL. A leading byte-order mark is dropped.
    pub fn from_text(text: &str) -> Result<Self, SpecError> {
        if text.contains('\0') {
            return Err(SpecError::Binary { what: "NUL bytes" });
        }
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        if is_blank(text) {
            return Err(SpecError::Empty);
        }
        Ok(Self { text: text.to_string() })
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// The first Markdown heading, else the first non-empty line, cut to 100 characters.
    pub fn title(&self) -> String {
        let lines = self.text.lines().map(str::trim).filter(|l| !l.is_empty());
        let mut first = None;
        for line in lines {
            if let Some(h) = line.strip_prefix('#') {
                let h = h.trim_start_matches('#').trim();
                if !h.is_empty() {
                    return truncate_chars(h, 100);
                }
            }
            if first.is_none() {
                first = Some(line);
            }
        }
        truncate_chars(first.unwrap_or("run"), 100)
    }
}

/// Blank: nothing but spaces, tabs, line ends and byte-order marks (the API publishes the
/// same rule as a pattern, so it names these characters rather than Unicode's whitespace).
pub fn is_blank(text: &str) -> bool {
    text.chars().all(|c| matches!(c, ' ' | '\t' | '\n' | '\r' | '\u{feff}'))
}

fn truncate_chars(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_errors_name_the_problem() {
        assert_eq!(Spec::parse(b"  \n\t"), Err(SpecError::Empty));
        assert_eq!(Spec::parse(b"a\0b"), Err(SpecError::Binary { what: "NUL bytes" }));
        assert!(matches!(Spec::parse(&[0xff, 0xfe, 0x41]), Err(SpecError::Binary { .. })));
        let big = vec![b'a'; MAX_SPEC_BYTES + 1];
        assert!(matches!(Spec::parse(&big), Err(SpecError::TooLarge { .. })));
    }

    #[test]
    fn title_is_the_first_heading() {
        let spec = Spec::parse(b"\nSome intro\n## Add a flag\nbody").unwrap();
        assert_eq!(spec.title(), "Add a flag");
        let spec = Spec::parse("\u{feff}plain line\nmore".as_bytes()).unwrap();
        assert_eq!(spec.title(), "plain line");
    }
}
