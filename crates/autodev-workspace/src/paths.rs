//! Resolving a model-supplied path inside a workspace. The model never gets a path outside
//! the root: absolute paths, `..` that climbs out, symlinks pointing out, and the `.git`
//! entry are refused with a message the model can read.
use std::path::{Component, Path, PathBuf};

/// Why a path was refused. The text goes back to the model as a tool error.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    #[error("path `{0}` is absolute: use a path relative to the workspace root")]
    Absolute(String),
    #[error("path `{0}` leaves the workspace: stay inside the workspace root")]
    Escapes(String),
    #[error("path `{0}` resolves through a symlink to outside the workspace")]
    SymlinkEscape(String),
    #[error("path `{0}` is inside .git, which the tools do not touch")]
    GitDir(String),
}

/// Resolves `rel` against `root` (which must be canonical). Returns the joined path; it may
/// not exist yet (for `write_file`).
pub fn resolve(root: &Path, rel: &str) -> Result<PathBuf, PathError> {
    let rel_path = Path::new(rel);
    let mut normal = PathBuf::new();
    for comp in rel_path.components() {
        match comp {
            Component::Normal(part) => normal.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                if !normal.pop() {
                    return Err(PathError::Escapes(rel.to_string()));
                }
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(PathError::Absolute(rel.to_string()));
            }
        }
    }
    if normal.components().next().is_some_and(|c| c.as_os_str() == ".git") {
        return Err(PathError::GitDir(rel.to_string()));
    }
    let joined = root.join(&normal);
    // Canonicalise the longest existing prefix: a symlink anywhere on the way that points
    // out of the root shows up here. A dangling symlink is refused too.
    let mut existing = joined.as_path();
    loop {
        if existing.symlink_metadata().is_ok() {
            break;
        }
        match existing.parent() {
            Some(parent) => existing = parent,
            None => return Err(PathError::Escapes(rel.to_string())),
        }
    }
    let canonical = existing.canonicalize().map_err(|_| PathError::SymlinkEscape(rel.to_string()))?;
    if !canonical.starts_with(root) {
        return Err(PathError::SymlinkEscape(rel.to_string()));
    }
    Ok(joined)
}

/// The path of `abs` relative to `root`, with `/` separators, for tool output.
pub fn display(root: &Path, abs: &Path) -> String {
    abs.strip_prefix(root).unwrap_or(abs).to_string_lossy().replace('\\', "/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_leave_the_root_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir(root.join("src")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("out")).unwrap();
        std::os::unix::fs::symlink("src", root.join("in")).unwrap();
        std::os::unix::fs::symlink("/nonexistent/x", root.join("dangling")).unwrap();

        assert_eq!(resolve(&root, "src/a.rs").unwrap(), root.join("src/a.rs"));
        assert_eq!(resolve(&root, "src/../b.rs").unwrap(), root.join("b.rs"));
        assert_eq!(resolve(&root, "in/new.rs").unwrap(), root.join("in/new.rs"));
        assert_eq!(resolve(&root, "").unwrap(), root);
        assert_eq!(resolve(&root, "/etc/passwd"), Err(PathError::Absolute("/etc/passwd".into())));
        assert_eq!(resolve(&root, "../x"), Err(PathError::Escapes("../x".into())));
        assert_eq!(resolve(&root, "src/../../x"), Err(PathError::Escapes("src/../../x".into())));
        assert_eq!(resolve(&root, "out/passwd"), Err(PathError::SymlinkEscape("out/passwd".into())));
        assert_eq!(resolve(&root, "dangling"), Err(PathError::SymlinkEscape("dangling".into())));
        assert_eq!(resolve(&root, ".git/config"), Err(PathError::GitDir(".git/config".into())));
    }
}
