//! API keys.
//!
//! A key is `adk_` followed by 64 hex digits (32 bytes from the OS RNG). Only
//! HMAC-SHA-256(pepper, key) is stored, looked up by equality: keys carry 256 bits of
//! entropy, so a fast keyed hash is as safe as a slow password hash here and keeps request
//! authentication to microseconds. The pepper is a server secret (`AUTODEV_KEY_PEPPER` or
//! `AUTODEV_KEY_PEPPER_FILE`; else generated once into the data directory, mode 0600), so a
//! leaked database alone does not let anyone test guesses.
use std::path::Path;

use autodev_domain::AccessRole;
use autodev_store::{KeyRow, Store, StoreError, now_ms};
use hmac::{KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};

/// What every key starts with, so it is recognisable in logs and by secret scanners.
pub const KEY_PREFIX: &str = "adk_";

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The OS RNG failed. Nothing to do but report it.
    #[error("the system's random number generator failed: {0}")]
    Random(String),
    /// The pepper could not be read or created. Check AUTODEV_KEY_PEPPER(_FILE) or the data
    /// directory's permissions.
    #[error("key pepper: {0}")]
    Pepper(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Bad input (a key name) from the user.
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, AuthError>;

/// The server secret that keys are hashed with.
#[derive(Clone)]
pub struct Pepper(SecretString);

impl std::fmt::Debug for Pepper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pepper(..)")
    }
}

/// `bytes` random bytes from the OS RNG, as hex (keys, peppers, UI session tokens).
pub(crate) fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| AuthError::Random(e.to_string()))?;
    Ok(hex::encode(buf))
}

impl Pepper {
    pub fn new(secret: SecretString) -> Self {
        Self(secret)
    }

    /// `AUTODEV_KEY_PEPPER` (given by the caller), else the `key-pepper` file in the data
    /// directory, created with a random value on first use.
    pub fn load(configured: Option<SecretString>, home: &Path) -> Result<Self> {
        if let Some(secret) = configured {
            return Ok(Self(secret));
        }
        let path = home.join("key-pepper");
        if let Ok(text) = std::fs::read_to_string(&path) {
            let text = text.trim().to_string();
            if !text.is_empty() {
                return Ok(Self(SecretString::from(text)));
            }
        }
        std::fs::create_dir_all(home).map_err(|e| AuthError::Pepper(format!("{}: {e}", home.display())))?;
        let value = random_hex(32)?;
        write_private(&path, &value).map_err(|e| AuthError::Pepper(format!("{}: {e}", path.display())))?;
        Ok(Self(SecretString::from(value)))
    }

    /// The stored form of a key.
    pub fn hash(&self, key: &str) -> String {
        // HMAC accepts keys of any length, so `new_from_slice` cannot fail here.
        let mut mac = match <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(self.0.expose_secret().as_bytes()) {
            Ok(mac) => mac,
            Err(_) => return String::new(),
        };
        mac.update(key.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

/// Writes a file readable only by its owner (created new, or replaced).
fn write_private(path: &Path, value: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().create(true).write(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(value.as_bytes())?;
    f.write_all(b"\n")
}

/// A newly created key: the key itself (shown once) and its stored row.
pub struct NewKey {
    pub key: SecretString,
    pub row: KeyRow,
}

/// Creates and stores a key.
pub async fn create_key(store: &Store, pepper: &Pepper, name: &str, role: AccessRole) -> Result<NewKey> {
    create_scoped_key(store, pepper, name, role, &[]).await
}

/// Like [`create_key`], for a key that sees the projects `projects` (ids or names) alone;
/// an empty list makes a key for every project.
pub async fn create_scoped_key(
    store: &Store,
    pepper: &Pepper,
    name: &str,
    role: AccessRole,
    projects: &[String],
) -> Result<NewKey> {
    let mut ids: Vec<String> = Vec::new();
    for p in projects {
        let row = store.find_project(p.trim()).await.map_err(|_| {
            AuthError::Invalid(format!("no project `{p}` to scope the key to (the projects: GET /api/v1/projects)"))
        })?;
        if !ids.contains(&row.id) {
            ids.push(row.id);
        }
    }
    let name = name.trim();
    let ok =
        !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c));
    if !ok {
        return Err(AuthError::Invalid(format!(
            "key name `{name}` is invalid: use 1-64 letters, digits, `-`, `_`, `.` or `@`"
        )));
    }
    let secret = random_hex(32)?;
    let key = format!("{KEY_PREFIX}{secret}");
    let row = KeyRow {
        id: uuid::Uuid::now_v7().to_string(),
        name: name.to_string(),
        role: role.as_str().to_string(),
        prefix: format!("{KEY_PREFIX}{}", &secret[..8]),
        hash: pepper.hash(&key),
        created_at: now_ms(),
        last_used_at: None,
        revoked_at: None,
        projects: (!ids.is_empty()).then(|| ids.join(",")),
    };
    store.insert_key(&row).await?;
    Ok(NewKey { key: SecretString::from(key), row })
}

/// The file whose modification time tells servers on this machine that a key was revoked.
pub fn revocation_marker(home: &Path) -> std::path::PathBuf {
    home.join("keys.revoked")
}

/// Revokes a key by id or name (returns whether one was revoked now) and tells servers
/// sharing this data directory to drop their cached keys at once. Servers elsewhere (on
/// PostgreSQL) notice within `access::KEY_TTL`.
pub async fn revoke(store: &Store, home: &Path, id_or_name: &str) -> Result<bool> {
    let revoked = store.revoke_key(id_or_name).await?;
    if revoked {
        let _ = std::fs::create_dir_all(home);
        let _ = std::fs::write(revocation_marker(home), now_nanos().to_string());
    }
    Ok(revoked)
}

/// Whether a token has the shape of an Autodev key (`adk_` and 64 hex digits).
pub fn well_formed(token: &str) -> bool {
    token.len() == KEY_PREFIX.len() + 64
        && token.starts_with(KEY_PREFIX)
        && token[KEY_PREFIX.len()..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// The active key a presented token belongs to, with its role.
pub async fn authenticate(store: &Store, pepper: &Pepper, token: &str) -> Result<Option<(KeyRow, AccessRole)>> {
    if !well_formed(token) {
        return Ok(None);
    }
    let Some(row) = store.key_by_hash(&pepper.hash(token)).await? else { return Ok(None) };
    let role = row.role.parse().unwrap_or(AccessRole::Viewer);
    Ok(Some((row, role)))
}

/// Nanoseconds since the epoch (a marker file's content; its mtime is what is compared).
pub fn now_nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_created_key_authenticates_until_revoked_and_only_its_hash_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("a.db")).await.unwrap();
        let pepper = Pepper::load(None, dir.path()).unwrap();
        let new = create_key(&store, &pepper, "ci-bot", AccessRole::Operator).await.unwrap();
        let key = new.key.expose_secret().to_string();
        assert!(key.starts_with("adk_") && key.len() == 68);
        let (row, role) = authenticate(&store, &pepper, &key).await.unwrap().unwrap();
        assert_eq!((row.name.as_str(), role), ("ci-bot", AccessRole::Operator));
        assert_ne!(row.hash, key);
        assert!(!std::fs::read(dir.path().join("a.db")).unwrap().windows(key.len()).any(|w| w == key.as_bytes()));
        // The same pepper is read back from the data directory.
        let again = Pepper::load(None, dir.path()).unwrap();
        assert_eq!(again.hash(&key), pepper.hash(&key));
        assert!(authenticate(&store, &pepper, "adk_0000").await.unwrap().is_none());
        assert!(matches!(
            create_key(&store, &pepper, "ci-bot", AccessRole::Viewer).await,
            Err(AuthError::Store(StoreError::Conflict(_)))
        ));
        assert!(store.revoke_key("ci-bot").await.unwrap());
        assert!(authenticate(&store, &pepper, &key).await.unwrap().is_none());
        assert!(matches!(
            create_key(&store, &pepper, "bad name", AccessRole::Viewer).await,
            Err(AuthError::Invalid(_))
        ));
    }
}
