//! Protected paths: globs (a project's `protected_paths`, such as `.github/workflows/**` or
//! `migrations/**`) that agents may not change unless the run was approved with them.
//!
//! The file tools refuse a write there as a tool error the model can read; whatever a command
//! changed there anyway is put back before each commit ([`crate::Git::restore_paths`]).
//!
//! Globs are gitignore-like and deliberately small: `*` and `?` within one path component,
//! `**` as a whole component (any depth), everything else literal; a glob without wildcards
//! also covers everything beneath it (`migrations` is `migrations/**` too). Character classes,
//! alternatives and escapes (`[ab]`, `{a,b}`, `\`) are refused: a protection rule should read
//! as what it protects.
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

/// The most globs a project may protect.
pub const MAX_GLOBS: usize = 100;
/// The longest glob.
pub const MAX_GLOB_CHARS: usize = 500;
/// The rule as the API's document publishes it (ECMA regex with lookahead); [`check_glob`] is
/// the same rule in code.
pub const GLOB_PATTERN: &str =
    r"^(?!/)(?!(.*/)?\.\.(/|$))(?!.*[^/]\*\*)(?!.*\*\*[^/])[^\[\]{}\\\x00-\x1f\x7f-\x9f]{1,500}$";

/// Whether `glob` is one Autodev accepts, or why not (the fix included).
pub fn check_glob(glob: &str) -> Result<(), String> {
    if glob.is_empty() {
        return Err("an empty glob protects nothing; remove it".into());
    }
    if glob.chars().count() > MAX_GLOB_CHARS {
        return Err(format!("a glob is at most {MAX_GLOB_CHARS} characters"));
    }
    if let Some(c) = glob.chars().find(|c| matches!(c, '[' | ']' | '{' | '}' | '\\') || c.is_control()) {
        return Err(format!(
            "`{}` is not allowed in a glob (only `*`, `?` and `**` are wildcards; list alternatives as separate globs)",
            c.escape_default()
        ));
    }
    if glob.starts_with('/') {
        return Err("globs are relative to the repository root; drop the leading `/`".into());
    }
    if glob.split('/').any(|c| c == "..") {
        return Err("`..` cannot appear in a glob: globs are relative to the repository root".into());
    }
    if glob.split('/').any(|c| c.contains("**") && c != "**") {
        return Err("`**` must be a whole path component (`a/**/b`, `dir/**`), not part of one".into());
    }
    Ok(())
}

/// A set of protected globs minus the ones a run was approved with.
#[derive(Clone, Debug)]
pub struct Protected {
    globs: Vec<String>,
    set: GlobSet,
    allowed: GlobSet,
}

impl Protected {
    /// Builds the matcher; every glob must pass [`check_glob`] (they were checked where they
    /// were configured; a bad one here is reported, not ignored).
    pub fn new(protected: &[String], allowed: &[String]) -> Result<Self, String> {
        let build = |globs: &[String]| -> Result<GlobSet, String> {
            let mut b = GlobSetBuilder::new();
            for g in globs {
                check_glob(g).map_err(|e| format!("protected path `{g}`: {e}"))?;
                for pattern in [g.trim_end_matches('/').to_string(), format!("{}/**", g.trim_end_matches('/'))] {
                    let glob = GlobBuilder::new(&pattern)
                        .literal_separator(true)
                        .backslash_escape(false)
                        .build()
                        .map_err(|e| format!("protected path `{g}`: {e}"))?;
                    b.add(glob);
                }
            }
            b.build().map_err(|e| e.to_string())
        };
        Ok(Self { globs: protected.to_vec(), set: build(protected)?, allowed: build(allowed)? })
    }

    pub fn is_empty(&self) -> bool {
        self.globs.is_empty()
    }

    /// The glob that protects `path` (relative to the root, `/`-separated), unless the run
    /// was approved with a glob that covers it.
    pub fn protecting(&self, path: &str) -> Option<&str> {
        let path = path.trim_start_matches("./");
        let hit = self.set.matches(path);
        let first = *hit.first()?;
        if self.allowed.is_match(path) {
            return None;
        }
        // Two patterns per glob (itself and everything beneath it).
        self.globs.get(first / 2).map(String::as_str)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn set(globs: &[&str], allowed: &[&str]) -> Protected {
        let s = |v: &[&str]| v.iter().map(|g| g.to_string()).collect::<Vec<_>>();
        Protected::new(&s(globs), &s(allowed)).unwrap()
    }

    #[test]
    fn globs_protect_what_they_read_as() {
        let p = set(&[".github/workflows/**", "migrations", "*.lock", "src/**/secret?.rs"], &[]);
        assert_eq!(p.protecting(".github/workflows/ci.yml"), Some(".github/workflows/**"));
        assert_eq!(p.protecting(".github/workflows/sub/x.yml"), Some(".github/workflows/**"));
        assert_eq!(p.protecting(".github/CODEOWNERS"), None);
        assert_eq!(p.protecting("migrations/0001.sql"), Some("migrations"));
        assert_eq!(p.protecting("migrations"), Some("migrations"));
        assert_eq!(p.protecting("db/migrations/0001.sql"), None);
        assert_eq!(p.protecting("Cargo.lock"), Some("*.lock"));
        // `*` stays within a component.
        assert_eq!(p.protecting("sub/Cargo.lock"), None);
        assert_eq!(p.protecting("src/a/b/secret1.rs"), Some("src/**/secret?.rs"));
        assert_eq!(p.protecting("./Cargo.lock"), Some("*.lock"));
    }

    #[test]
    fn an_approved_glob_lifts_the_protection_it_covers() {
        let p = set(&["migrations/**"], &["migrations/0002_*.sql"]);
        assert_eq!(p.protecting("migrations/0002_add.sql"), None);
        assert_eq!(p.protecting("migrations/0001_init.sql"), Some("migrations/**"));
    }

    #[test]
    fn globs_that_would_not_read_as_what_they_protect_are_refused() {
        // The same cases are checked against GLOB_PATTERN (with Python's `re`, which has the
        // lookaheads the regex crate lacks) by the API contract run.
        for ok in [".github/workflows/**", "migrations", "**/*.pem", "a/**/b", "*.lock", "docs/", "a b/c", "a..b"] {
            assert!(check_glob(ok).is_ok(), "{ok}");
        }
        for bad in
            ["", "/etc", "../x", "a/../b", "..", "a**", "**b", "a/b**/c", "[ab]", "{a,b}", "a\\*", "a\nb", "a\u{8d}b"]
        {
            assert!(check_glob(bad).is_err(), "{bad:?}");
        }
        assert!(Protected::new(&["[x".into()], &[]).is_err());
    }
}
