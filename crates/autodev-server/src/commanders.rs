//! Who may command Autodev from a forge.
//!
//! On a public repository anyone can comment, so a `/autodev …` comment, a review comment or
//! a review starts or steers a run only when its author may write to the repository (the
//! project's `trigger_min_permission`, default `write`), as the forge says now: GitHub's
//! collaborator permission (`GET /repos/{o}/{r}/collaborators/{user}/permission`), GitLab's
//! member access level (`GET /projects/:id/members/all/:user_id`, inherited memberships
//! included). The payload's own `author_association` is not trusted for this. Answers are
//! cached for a minute per forge, place and user. Labels stay commands without a check:
//! labelling already needs triage rights on the forge. Bots the project lists in
//! `trigger_bots` (e.g. `renovate[bot]`) are allowed as they are.
use std::collections::HashMap;
use std::time::{Duration, Instant};

pub use autodev_domain::Permission;

/// The author of a comment or review that asks something of Autodev.
#[derive(Clone, Debug)]
pub struct Commander {
    pub login: String,
    /// GitLab's numeric user id (its members API takes ids, not names).
    pub gitlab_id: Option<i64>,
}

/// The forges asked who may command Autodev (the integrations' tokens), and their answers.
#[derive(Default)]
pub struct Forges {
    github: Option<crate::delivery::github::Github>,
    gitlab: Option<crate::delivery::gitlab::Gitlab>,
    cache: PermissionCache,
}

impl Forges {
    pub fn new(config: &crate::delivery::DeliveryConfig) -> Self {
        Forges {
            github: config
                .github
                .clone()
                .map(|gh| crate::delivery::github::Github::new(gh).with_git_credentials(&config.git_credentials)),
            gitlab: config.gitlab.clone().map(crate::delivery::gitlab::Gitlab::new),
            cache: PermissionCache::default(),
        }
    }
}

impl Forges {
    /// The GitHub client, when GitHub is configured.
    pub fn github(&self) -> Option<&crate::delivery::github::Github> {
        self.github.as_ref()
    }

    /// The GitLab client, when GitLab is configured.
    pub fn gitlab(&self) -> Option<&crate::delivery::gitlab::Gitlab> {
        self.gitlab.as_ref()
    }
}

/// Answers of the forges, kept a minute.
#[derive(Default)]
struct PermissionCache(std::sync::Mutex<HashMap<CacheKey, (Permission, Instant)>>);

/// Forge, place (lower case), login (lower case).
type CacheKey = (String, String, String);

const CACHE_FOR: Duration = Duration::from_secs(60);

impl PermissionCache {
    fn get(&self, key: &CacheKey) -> Option<Permission> {
        let map = self.0.lock().ok()?;
        map.get(key).filter(|(_, at)| at.elapsed() < CACHE_FOR).map(|(p, _)| *p)
    }

    fn put(&self, key: CacheKey, p: Permission) {
        if let Ok(mut map) = self.0.lock() {
            if map.len() > 10_000 {
                map.retain(|_, (_, at)| at.elapsed() < CACHE_FOR);
            }
            map.insert(key, (p, Instant::now()));
        }
    }
}

/// The project's rule for commands: the least permission, and the bots allowed as they are.
#[derive(Debug)]
pub struct Rule {
    pub min: Permission,
    pub bots: Vec<String>,
}

impl Rule {
    pub fn of(s: &autodev_domain::ProjectSettings) -> Self {
        Rule {
            min: s.trigger_min_permission.unwrap_or(Permission::Write),
            bots: s.trigger_bots.clone().unwrap_or_default(),
        }
    }
}

/// Whether `who` may command Autodev on `place` (`owner/name` on GitHub, `group/name` on
/// GitLab) under `rule`. `Err` is the reason to answer and audit: refused, or the forge could
/// not be asked (then nothing runs either).
pub async fn may_command(
    forges: &Forges,
    source: &str,
    place: &str,
    who: &Commander,
    rule: &Rule,
) -> Result<(), String> {
    if rule.bots.iter().any(|b| b.eq_ignore_ascii_case(&who.login)) {
        return Ok(());
    }
    let key = (source.to_string(), place.to_lowercase(), who.login.to_lowercase());
    let has = match forges.cache.get(&key) {
        Some(p) => p,
        None => {
            let p = match source {
                "github" => {
                    let gh = forges.github.as_ref().ok_or_else(|| {
                        "comment commands need AUTODEV_GITHUB_TOKEN (or a GitHub App) to check the author's permission"
                            .to_string()
                    })?;
                    let role = gh.permission(place, &who.login).await.map_err(|e| {
                        format!("could not check {}'s permission on {place} with GitHub: {}", who.login, e.message)
                    })?;
                    Permission::from_github(&role)
                }
                "gitlab" => {
                    let gl = forges.gitlab.as_ref().ok_or_else(|| {
                        "comment commands need AUTODEV_GITLAB_TOKEN to check the author's access".to_string()
                    })?;
                    let id = who.gitlab_id.ok_or_else(|| "the note names no author id".to_string())?;
                    let level = gl.access_level(place, id).await.map_err(|e| {
                        format!("could not check {}'s access to {place} with GitLab: {}", who.login, e.message)
                    })?;
                    Permission::from_gitlab(level)
                }
                other => return Err(format!("{other} comments are not commands")),
            };
            forges.cache.put(key, p);
            p
        }
    };
    if has >= rule.min {
        Ok(())
    } else {
        metrics::counter!("autodev_commands_refused_total", "source" => source.to_string()).increment(1);
        Err(format!(
            "{} may not command Autodev on {place}: that needs {} permission or more (the project's trigger_min_permission), and they have {}",
            who.login,
            rule.min.as_str(),
            has.as_str()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::Permission;

    #[test]
    fn forge_levels_map_onto_one_order() {
        assert!(Permission::from_github("write") >= Permission::Write);
        assert!(Permission::from_github("triage") < Permission::Write);
        assert_eq!(Permission::from_github("custom-role"), Permission::Read);
        assert_eq!(Permission::from_gitlab(30), Permission::Write);
        assert_eq!(Permission::from_gitlab(20), Permission::Triage);
        assert_eq!(Permission::from_gitlab(0), Permission::None);
        assert_eq!(Permission::from_gitlab(50), Permission::Admin);
    }
}
