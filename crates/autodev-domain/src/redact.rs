//! Credentials in URLs, masked wherever a URL is shown or stored as text.
//!
//! A project's repository may be `https://user:token@host/org/repo.git`: the URL is kept as
//! given (a worker clones with it), but every text that shows or records one (API answers,
//! pages, reports, pull request bodies, failure reasons, git's error output) carries it
//! with the user part masked: `https://***@host/org/repo.git`.
use std::borrow::Cow;

/// `text` with the user information of every `scheme://user[:secret]@host` URL in it
/// replaced by `***`. Text without one is returned as it is.
///
/// A scan rather than a URL parser: the URLs sit inside free text (git's error output, a
/// reason, a report), where nothing says where one ends, and only the authority matters.
pub fn mask_url_credentials(text: &str) -> Cow<'_, str> {
    if !text.contains("://") || !text.contains('@') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        // The authority runs to the next `/`, `?`, `#`, whitespace, quote or bracket.
        let end = tail
            .find(|c: char| {
                matches!(c, '/' | '?' | '#' | '"' | '\'' | '`' | '<' | '>' | ')' | ']') || c.is_whitespace()
            })
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(i) if i > 0 => {
                out.push_str("***");
                out.push_str(&authority[i..]);
            }
            _ => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::mask_url_credentials as mask;

    #[test]
    fn user_information_is_masked_and_the_rest_kept() {
        assert_eq!(mask("https://user:ghp_secret@github.com/o/r.git"), "https://***@github.com/o/r.git");
        assert_eq!(
            mask(
                "`git clone https://x-access-token:t0k@ghe.corp:8443/o/r` failed: fatal: https://t0k@ghe.corp/o/r not found"
            ),
            "`git clone https://***@ghe.corp:8443/o/r` failed: fatal: https://***@ghe.corp/o/r not found"
        );
        assert_eq!(mask("ssh://git@github.com/o/r.git"), "ssh://***@github.com/o/r.git");
        for plain in
            ["https://github.com/o/r", "/srv/repo", "mail me: a@b.c", "git@github.com:o/r.git", "https://h/p?email=a@b"]
        {
            assert_eq!(mask(plain), plain);
        }
    }
}
