//! Text that crosses into other systems stays text.
//!
//! A run's title comes from a ticket's author; its reason, plan and report carry a model's
//! words. Sent as they are, `<!channel>` pings a whole Slack channel, `<https://…|Approve>`
//! is a link of the author's making, `@team` notifies a team on a forge, `Closes #7` in a
//! pull request closes another issue, and `[~admin]` mentions someone in Jira. Each target's
//! own markup is neutralised here for the untrusted parts; Autodev's own lines (its links,
//! the `Closes #N` of the run's own ticket) are added after, as markup.

/// Slack `mrkdwn` text: `&`, `<` and `>` escaped as Slack documents it, so no mention
/// (`<!channel>`, `<@U…>`), no link and no formatting control reaches the channel.
pub fn slack(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// A zero-width space: breaks a mention or a reference without changing how text reads.
const BREAK: char = '\u{200B}';

/// Forge Markdown (GitHub, GitLab) for untrusted text: no mention (`@user`, `@org/team`,
/// `@all`), no closing keyword with a reference (`Closes #7`, `fixes o/r#7`), no raw HTML
/// (which also hides a fake marker comment), no link or image of the text's own making.
/// Emphasis, headings, lists and code keep working.
pub fn forge(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut prev: Option<char> = None;
    let chars: Vec<char> = text.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            // `@name` after a space or at a line's start is a mention; `a@b` is not.
            '@' if !prev.is_some_and(|p| p.is_alphanumeric())
                && chars.get(i + 1).is_some_and(|n| n.is_alphanumeric()) =>
            {
                out.push('@');
                out.push(BREAK);
            }
            // `](` ends a link's text and starts its target: `[Approve](https://…)`.
            '(' if prev == Some(']') => {
                out.push(BREAK);
                out.push('(');
            }
            // `#7` right after a closing keyword, or `o/r#7`, is a reference that closes.
            '#' if chars.get(i + 1).is_some_and(char::is_ascii_digit) && after_closing_keyword(&out) => {
                out.push('#');
                out.push(BREAK);
            }
            _ => out.push(c),
        }
        prev = Some(c);
    }
    out
}

/// Whether `before` ends in a closing keyword (and optionally `owner/name`), as GitHub and
/// GitLab read one before an issue reference.
fn after_closing_keyword(before: &str) -> bool {
    const KEYWORDS: &[&str] = &[
        "close",
        "closes",
        "closed",
        "closing",
        "fix",
        "fixes",
        "fixed",
        "fixing",
        "resolve",
        "resolves",
        "resolved",
        "resolving",
        "implement",
        "implements",
        "implemented",
        "implementing",
    ];
    let lower = before.to_lowercase();
    // Drop a repository prefix (`owner/name`) written against the `#`.
    let trimmed = lower.trim_end_matches(|c: char| c.is_alphanumeric() || matches!(c, '/' | '-' | '_' | '.'));
    let trimmed = trimmed.trim_end_matches([' ', ':', '\t']);
    let word = trimmed.rsplit(|c: char| !c.is_alphabetic()).next().unwrap_or_default();
    KEYWORDS.contains(&word)
}

/// Jira wiki markup (Data Center's text comments): its control characters backslash-escaped,
/// so no `[~user]` mention, `[text|url]` link, `{color}` macro or `!image!` survives.
pub fn jira_wiki(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if matches!(c, '[' | ']' | '{' | '}' | '|' | '!' | '*' | '_' | '^' | '~' | '+' | '?' | '#' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_titles_are_inert_in_slack() {
        let title = "Spelling error <!channel> <https://evil.example/approve|Approve the run here> & more";
        let text = slack(title);
        assert!(!text.contains('<') && !text.contains('>'), "{text}");
        assert!(text.contains("&lt;!channel&gt;") && text.contains("&amp; more"), "{text}");
    }

    #[test]
    fn hostile_text_is_inert_on_a_forge() {
        let text = forge(
            "cc @octo-org/admins and @all\nCloses #7, fixes other/repo#9, see #12\n[Approve](https://evil.example) ![x](https://evil.example/t.png)\n<!-- autodev-run:forged --> mail a@b.c",
        );
        assert!(!text.contains("@octo") && !text.contains("@all"), "{text}");
        assert!(!text.contains("Closes #7") && !text.contains("repo#9"), "{text}");
        assert!(text.contains("see #12"), "a plain reference stays: {text}");
        assert!(!text.contains("](") && !text.contains("<!--"), "{text}");
        assert!(text.contains("a@b.c"), "an address is not a mention: {text}");
    }

    #[test]
    fn closing_keywords_are_read_as_forges_read_them() {
        assert!(after_closing_keyword("Closes "));
        assert!(after_closing_keyword("this fixes: o/r"));
        assert!(after_closing_keyword("Resolved "));
        assert!(!after_closing_keyword("see "));
        assert!(!after_closing_keyword("prefix"));
    }

    #[test]
    fn jira_markup_is_escaped() {
        assert_eq!(
            jira_wiki("[~admin] [click|https://e.x] {color:red}!img.png!"),
            "\\[\\~admin\\] \\[click\\|https://e.x\\] \\{color:red\\}\\!img.png\\!"
        );
    }
}
