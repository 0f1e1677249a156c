//! What the API accepts in each field, in one place: the handlers check values with these
//! rules, and the OpenAPI document publishes the same patterns and lengths (see
//! [`crate::openapi::document`]), so a client that keeps to the document is never refused
//! and one that does not always is.
use std::sync::LazyLock;

use autodev_domain::spec::is_blank;
use regex::Regex;

use crate::error::ApiError;
pub use autodev_domain::ProjectSettings;

/// Project names: an ASCII letter or digit, then up to 99 letters, digits, `-`, `_` or `.`.
/// ASCII only: names are typed in CLI arguments and URLs and end up in branch and directory
/// names, where look-alike letters from other scripts would be a trap. (Not a UUID either,
/// which the pattern cannot say: ids and names share the path segment.)
pub const NAME: &str = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$";
/// Model ids as providers spell them (`gpt-4.1-mini`, `llama3.1:8b`, `openai/gpt-oss-120b`).
pub const MODEL: &str = r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,199}$";
/// `owner/name` on GitHub.
pub const GITHUB_REPO: &str = r"^[A-Za-z0-9-]{1,39}/[A-Za-z0-9._-]{1,100}$";
/// `group/subgroup/name` on GitLab.
pub const GITLAB_PROJECT: &str = r"^[A-Za-z0-9_.][A-Za-z0-9_.-]{0,99}(/[A-Za-z0-9_.][A-Za-z0-9_.-]{0,99}){1,8}$";
/// A Jira project key.
pub const JIRA_PROJECT: &str = r"^[A-Z][A-Z0-9_]{1,9}$";
/// A `next_cursor` as the API gives it.
pub const CURSOR: &str = r"^-?[0-9]{1,18}_[0-9a-f-]{1,36}$";
/// An absolute path, or a clone URL (https, http, ssh, git, file, or scp-like
/// `user@host:path`), with no control characters.
pub const REPOSITORY: &str = r"^(/|(https?|ssh|git|file)://|[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:)[^\x00-\x1f\x7f]{0,4000}$";
/// A branch name git accepts (`git check-ref-format --branch`), as the document says it; the
/// server checks it with [`branch`] (the `regex` crate has no lookahead).
pub const BRANCH: &str = r"^(?!.*(\.\.|//|/\.|@\{|\.lock/))(?!.*(\.lock|/|\.)$)[A-Za-z0-9_][A-Za-z0-9._/-]{0,199}$";
/// No control characters (titles).
pub const ONE_LINE: &str = r"^[^\x00-\x1f\x7f]*$";
/// Text that is not blank (a character other than space, tab, CR, LF or a byte-order mark)
/// and has no NUL (PostgreSQL cannot store one).
pub const TEXT: &str = "^[^\\x00]*[^\\x00\\t\\n\\r \u{feff}][^\\x00]*$";
/// No NUL.
pub const NO_NUL: &str = r"^[^\x00]*$";

pub const SPEC_MAX_CHARS: usize = 256 * 1024;
/// The largest monthly budget a project may set (USD): beyond it, a typo.
pub const MONTHLY_BUDGET_MAX: f64 = 1e9;
pub const TITLE_MAX_CHARS: usize = 200;
pub const COMMENT_MAX_CHARS: usize = 4000;
pub const COMMAND_MAX_CHARS: usize = 4000;

fn re(pattern: &'static str) -> Regex {
    // The patterns are constants checked by the tests below.
    #[allow(clippy::expect_used)]
    Regex::new(pattern).expect("a valid pattern")
}

macro_rules! matcher {
    ($name:ident, $pattern:expr) => {
        fn $name(value: &str) -> bool {
            static RE: LazyLock<Regex> = LazyLock::new(|| re($pattern));
            RE.is_match(value)
        }
    };
}
matcher!(is_name, NAME);
matcher!(is_model, MODEL);
matcher!(is_github_repo, GITHUB_REPO);
matcher!(is_gitlab_project, GITLAB_PROJECT);
matcher!(is_jira_project, JIRA_PROJECT);
matcher!(is_cursor, CURSOR);
matcher!(is_repository, REPOSITORY);

pub fn name(field: &str, value: &str) -> Result<(), ApiError> {
    if uuid::Uuid::parse_str(value).is_ok() {
        return Err(ApiError::invalid(field, "a name may not have the form of an id (a UUID): choose another name"));
    }
    if !is_name(value) {
        return Err(ApiError::invalid(
            field,
            "use 1-100 ASCII letters, digits, `-`, `_` or `.`, starting with a letter or digit",
        ));
    }
    Ok(())
}

/// `Ok` when a value has its shape, else 422 naming the field and the shape.
fn shaped(ok: bool, field: &str, shape: &str) -> Result<(), ApiError> {
    if ok { Ok(()) } else { Err(ApiError::invalid(field, shape)) }
}

pub fn model(value: &str) -> Result<(), ApiError> {
    shaped(
        is_model(value),
        "model",
        "a model id is up to 200 letters, digits and `._:/@+-`, starting with a letter or digit (e.g. gpt-4.1-mini)",
    )
}

pub fn cursor(value: &str) -> Result<(i64, String), ApiError> {
    let bad = || ApiError::invalid("cursor", "malformed cursor; pass back next_cursor as given");
    if !is_cursor(value) {
        return Err(bad());
    }
    let (at, id) = value.split_once('_').ok_or_else(bad)?;
    Ok((at.parse().map_err(|_| bad())?, id.to_string()))
}

/// The shape of a repository field; whether the path holds a repository is the caller's
/// question.
pub fn repository(value: &str) -> Result<(), ApiError> {
    shaped(
        is_repository(value),
        "repository",
        "give an absolute path to a git repository, or a clone URL (https://, http://, ssh://, git://, file://, or user@host:path), with no spaces around it",
    )
}

/// A branch name git accepts, the rules of [`BRANCH`].
pub fn branch(field: &str, value: &str) -> Result<(), ApiError> {
    let chars_ok = value.len() <= 200
        && value.chars().next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && value.chars().all(|c| c.is_ascii_alphanumeric() || "._/-".contains(c));
    let parts_ok = !["..", "//", "/.", "@{", ".lock/"].iter().any(|bad| value.contains(bad))
        && ![".lock", "/", "."].iter().any(|bad| value.ends_with(bad));
    shaped(
        chars_ok && parts_ok,
        field,
        "not a branch name git accepts: ASCII letters, digits and `._/-`, starting with a letter, digit or `_`, without `..`, `//`, `/.` or `@{`, not ending in `/`, `.` or `.lock`",
    )
}

/// Text that must say something ([`TEXT`]) in at most `max` characters.
pub fn text(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.contains('\0') {
        return Err(ApiError::invalid(field, "must not contain NUL characters"));
    }
    if is_blank(value) {
        return Err(ApiError::invalid(field, "must not be empty or blank"));
    }
    if value.chars().count() > max {
        return Err(ApiError::invalid(field, format!("is over {max} characters")));
    }
    Ok(())
}

/// A deploy workflow, ref or environment name (the document's `DeploySetting`).
pub const DEPLOY_NAME: &str = r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$";
/// A deploy input's name.
pub const DEPLOY_INPUT: &str = r"^[A-Za-z_][A-Za-z0-9_-]{0,99}$";
/// The most inputs a deploy takes (GitHub's limit for `workflow_dispatch`).
pub const DEPLOY_INPUTS_MAX: usize = 10;

/// A project's `deploy`: exactly one way (`github_workflow`, `gitlab_trigger: true` or
/// `webhook: true`; the other two absent or null), names that are names, at most ten inputs.
fn check_deploy(deploy: &autodev_domain::DeploySettings) -> Result<(), ApiError> {
    for (field, value) in [("gitlab_trigger", deploy.gitlab_trigger), ("webhook", deploy.webhook)] {
        if value == Some(false) {
            return Err(ApiError::invalid(
                &format!("settings.deploy.{field}"),
                "`false` chooses nothing: leave it out, or give `true` to deploy this way",
            ));
        }
    }
    let chosen = [deploy.github_workflow.is_some(), deploy.gitlab_trigger.is_some(), deploy.webhook.is_some()];
    match chosen.iter().filter(|c| **c).count() {
        1 => {}
        0 => {
            return Err(ApiError::invalid(
                "settings.deploy",
                "give one of `github_workflow` (a workflow file), `gitlab_trigger: true` or `webhook: true`",
            ));
        }
        _ => {
            return Err(ApiError::invalid(
                "settings.deploy",
                "give only one of `github_workflow`, `gitlab_trigger` and `webhook`",
            ));
        }
    }
    let name = regex::Regex::new(DEPLOY_NAME).map_err(|e| ApiError::internal(&e))?;
    let checks = [
        (
            "settings.deploy.github_workflow",
            &deploy.github_workflow,
            "a workflow file name such as `deploy.yml`, or its id",
        ),
        ("settings.deploy.ref", &deploy.git_ref, "a branch or tag name"),
        ("settings.deploy.environment", &deploy.environment, "an environment name such as `staging`"),
    ];
    for (field, value, what) in checks {
        if let Some(v) = value
            && !name.is_match(v)
        {
            return Err(ApiError::invalid(field, format!("`{v}` is not {what}")));
        }
    }
    if deploy.inputs.as_ref().is_some_and(|i| i.len() > DEPLOY_INPUTS_MAX) {
        return Err(ApiError::invalid(
            "settings.deploy.inputs",
            format!("at most {DEPLOY_INPUTS_MAX} inputs (GitHub takes {DEPLOY_INPUTS_MAX})"),
        ));
    }
    let input = regex::Regex::new(DEPLOY_INPUT).map_err(|e| ApiError::internal(&e))?;
    for (k, v) in deploy.inputs.iter().flatten() {
        if !input.is_match(k) {
            return Err(ApiError::invalid(
                &format!("settings.deploy.inputs.{k}"),
                "an input name is a letter or `_`, then letters, digits, `_` or `-`",
            ));
        }
        one_line(&format!("settings.deploy.inputs.{k}"), v, 1000)?;
    }
    Ok(())
}

/// One line of at most `max` characters ([`ONE_LINE`]).
pub fn one_line(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.chars().any(|c| c.is_ascii_control()) {
        return Err(ApiError::invalid(field, "must be one line with no control characters"));
    }
    if value.chars().count() > max {
        return Err(ApiError::invalid(field, format!("is over {max} characters")));
    }
    Ok(())
}

/// At most `max` characters with no NUL ([`NO_NUL`]).
pub fn free_text(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.contains('\0') {
        return Err(ApiError::invalid(field, "must not contain NUL characters"));
    }
    if value.chars().count() > max {
        return Err(ApiError::invalid(field, format!("is over {max} characters")));
    }
    Ok(())
}

/// Forge logins: letters, digits, `-`, `_`, `.` and a `[bot]` suffix.
pub const FORGE_LOGIN: &str = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}(\[bot\])?$";
const MAX_TRIGGER_BOTS: usize = 50;
/// The most CI follow-ups a project may allow per pull request.
const MAX_CI_REPAIR_ROUNDS: u32 = 10;

/// The checks of a project's settings beyond their types (patterns, ranges, globs), for the API's
/// edge: the settings a project is stored with passed them.
pub trait CheckSettings {
    fn check(&self) -> Result<(), ApiError>;
}

impl CheckSettings for ProjectSettings {
    fn check(&self) -> Result<(), ApiError> {
        type Check<'a> = (&'a str, &'a Option<String>, fn(&str) -> bool, &'a str);
        let checks: [Check; 3] = [
            ("settings.github_repo", &self.github_repo, is_github_repo, "`owner/name`, as in github.com/owner/name"),
            ("settings.gitlab_project", &self.gitlab_project, is_gitlab_project, "`group/name` (subgroups allowed)"),
            ("settings.jira_project", &self.jira_project, is_jira_project, "a Jira project key such as `PROJ`"),
        ];
        for (field, value, ok, what) in checks {
            if let Some(v) = value
                && !ok(v)
            {
                return Err(ApiError::invalid(field, format!("`{v}` is not {what}")));
            }
        }
        if let Some(b) = self.monthly_budget_usd
            && !(b > 0.0 && b <= MONTHLY_BUDGET_MAX)
        {
            return Err(ApiError::invalid(
                "settings.monthly_budget_usd",
                format!("give a positive number of dollars up to {MONTHLY_BUDGET_MAX:.0}, not {b}"),
            ));
        }
        if let Some(globs) = &self.protected_paths {
            allow_paths("settings.protected_paths", globs)?;
        }
        if self.trigger_min_permission == Some(autodev_domain::Permission::None) {
            return Err(ApiError::invalid(
                "settings.trigger_min_permission",
                "`none` would let anyone command Autodev; give read, triage, write, maintain or admin",
            ));
        }
        if let Some(n) = self.ci_repair_rounds
            && n > MAX_CI_REPAIR_ROUNDS
        {
            return Err(ApiError::invalid(
                "settings.ci_repair_rounds",
                format!("give 0 (CI follow-ups off) to {MAX_CI_REPAIR_ROUNDS}, not {n}"),
            ));
        }
        if let Some(t) = &self.jira_done_transition {
            one_line("settings.jira_done_transition", t, 100)?;
        }
        if let Some(deploy) = &self.deploy {
            check_deploy(deploy)?;
        }
        if let Some(bots) = &self.trigger_bots {
            if bots.len() > MAX_TRIGGER_BOTS {
                return Err(ApiError::invalid("settings.trigger_bots", format!("at most {MAX_TRIGGER_BOTS} logins")));
            }
            let login = regex::Regex::new(FORGE_LOGIN).map_err(|e| ApiError::internal(&e))?;
            for (i, b) in bots.iter().enumerate() {
                if !login.is_match(b) {
                    return Err(ApiError::invalid(
                        &format!("settings.trigger_bots[{i}]"),
                        format!("`{b}` is not a forge login such as `renovate[bot]`"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Protected-path globs (a project's `protected_paths`, an approval's `allow_paths`).
pub fn allow_paths(field: &str, globs: &[String]) -> Result<(), ApiError> {
    use autodev_workspace::protect::{MAX_GLOBS, check_glob};
    if globs.len() > MAX_GLOBS {
        return Err(ApiError::invalid(field, format!("at most {MAX_GLOBS} globs")));
    }
    for (i, glob) in globs.iter().enumerate() {
        check_glob(glob).map_err(|e| ApiError::invalid(&format!("{field}[{i}]"), format!("`{glob}`: {e}")))?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_published_patterns_compile_where_the_server_uses_them() {
        for p in [NAME, MODEL, GITHUB_REPO, GITLAB_PROJECT, JIRA_PROJECT, CURSOR, REPOSITORY, ONE_LINE, TEXT, NO_NUL] {
            Regex::new(p).unwrap();
        }
    }

    #[test]
    fn text_rules_agree_with_their_pattern() {
        let pattern = Regex::new(TEXT).unwrap();
        for s in ["a", " a ", "\u{3000}", "\u{feff}x", "\x0b", "# T\n\nbody"] {
            assert!(pattern.is_match(s) && text("f", s, 100).is_ok(), "{s:?}");
        }
        for s in ["", " ", "\t\r\n", "\u{feff}", "\u{feff}\u{feff} ", "a\0b"] {
            assert!(!pattern.is_match(s) && text("f", s, 100).is_err(), "{s:?}");
        }
        let one = Regex::new(ONE_LINE).unwrap();
        for s in ["", "A title", "é"] {
            assert!(one.is_match(s) && one_line("f", s, 100).is_ok(), "{s:?}");
        }
        for s in ["a\nb", "\u{7f}", "\0"] {
            assert!(!one.is_match(s) && one_line("f", s, 100).is_err(), "{s:?}");
        }
    }

    #[test]
    fn names_branches_and_repositories() {
        for ok in ["demo", "a", "my.project_2", "A-1"] {
            assert!(name("name", ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "-x", "_x", "a b", "é", "0190a5b2-0c1d-7e3f-8a4b-5c6d7e8f9a0b", &"a".repeat(101)] {
            assert!(name("name", bad).is_err(), "{bad}");
        }
        for ok in ["main", "release/1.2", "_x", "feature/a-b"] {
            assert!(branch("b", ok).is_ok(), "{ok}");
        }
        for bad in ["", "-x", "a..b", "a//b", "a/.b", "x.lock", "x/", "x.", "a@{1}", "a b", ".x"] {
            assert!(branch("b", bad).is_err(), "{bad}");
        }
        for ok in ["/srv/repo", "https://github.com/o/n.git", "git@github.com:o/n.git", "file:///tmp/r"] {
            assert!(repository(ok).is_ok(), "{ok}");
        }
        for bad in ["repo", " /srv/repo", "ftp://x/y", "/a\nb", "C:\\repo"] {
            assert!(repository(bad).is_err(), "{bad}");
        }
        assert_eq!(cursor("1700000000000_0190a5b2-0c1d").unwrap().0, 1_700_000_000_000);
        assert!(cursor("99999999999999999999_ab").is_err());
        assert!(cursor("x_ab").is_err());
    }

    #[test]
    fn settings_are_checked_field_by_field() {
        let s: ProjectSettings = serde_json::from_str(r#"{"github_repo": "octo/hello-world"}"#).unwrap();
        assert!(s.check().is_ok());
        let s: ProjectSettings = serde_json::from_str(r#"{"github_repo": "not a repo"}"#).unwrap();
        assert_eq!(s.check().unwrap_err().field.as_deref(), Some("settings.github_repo"));
        assert!(serde_json::from_str::<ProjectSettings>(r#"{"github_rep": "o/n"}"#).is_err());
        let s: ProjectSettings = serde_json::from_str(
            r#"{"monthly_budget_usd": 50, "protected_paths": [".github/workflows/**", "migrations"], "approve_delivery": true}"#,
        )
        .unwrap();
        assert!(s.check().is_ok());
        let s: ProjectSettings = serde_json::from_str(
            r#"{"ci_repair_rounds": 0, "jira_done_transition": "Done", "deploy": {"github_workflow": "deploy.yml", "ref": "main", "environment": "staging", "inputs": {"version": "1"}}}"#,
        )
        .unwrap();
        assert!(s.check().is_ok());
        for (bad, field) in [
            (r#"{"deploy": {}}"#, "settings.deploy"),
            (r#"{"deploy": {"webhook": true, "gitlab_trigger": true}}"#, "settings.deploy"),
            (r#"{"deploy": {"github_workflow": "../x.yml"}}"#, "settings.deploy.github_workflow"),
            (r#"{"deploy": {"github_workflow": "d.yml", "webhook": false}}"#, "settings.deploy.webhook"),
            (r#"{"deploy": {"webhook": true, "environment": "a b"}}"#, "settings.deploy.environment"),
            (r#"{"ci_repair_rounds": 11}"#, "settings.ci_repair_rounds"),
            (r#"{"jira_done_transition": "Done\nnow"}"#, "settings.jira_done_transition"),
        ] {
            let s: ProjectSettings = serde_json::from_str(bad).unwrap();
            assert_eq!(s.check().unwrap_err().field.as_deref(), Some(field), "{bad}");
        }
        assert!(serde_json::from_str::<ProjectSettings>(r#"{"deploy": {"workflow": "x"}}"#).is_err());
        let s: ProjectSettings = serde_json::from_str(r#"{"monthly_budget_usd": 0}"#).unwrap();
        assert_eq!(s.check().unwrap_err().field.as_deref(), Some("settings.monthly_budget_usd"));
        let s: ProjectSettings = serde_json::from_str(r#"{"protected_paths": ["ok/**", "a**"]}"#).unwrap();
        assert_eq!(s.check().unwrap_err().field.as_deref(), Some("settings.protected_paths[1]"));
    }
}
