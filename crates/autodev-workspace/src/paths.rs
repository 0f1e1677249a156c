//! Resolving a model-supplied path inside a workspace. The model never gets a path outside
//! the root: absolute paths, `..` that climbs out, symlinks pointing out, and `.git` or
//! `.gitmodules` (in any letter case, at any depth, directly or through a symlink) are
//! refused with a message the model can read. This is the check that explains; the I/O
//! itself goes through [`crate::fsops`], which cannot leave the root even when a path is
//! swapped for a symlink between the check and the use.
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
    #[error("path `{0}` is or is inside .git (or .gitmodules), which the tools do not touch")]
    GitDir(String),
    #[error("path `{0}` goes through too many symlinks")]
    TooManyLinks(String),
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
    if normal.components().any(|c| is_git_name(c.as_os_str())) {
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

/// `.git` and `.gitmodules` in any letter case (`.GIT`, `.Git`): on a case-insensitive
/// file system, or once checked out elsewhere, they are the same entry.
pub fn is_git_name(name: &std::ffi::OsStr) -> bool {
    name.to_str().is_some_and(|n| n.eq_ignore_ascii_case(".git") || n.eq_ignore_ascii_case(".gitmodules"))
}

/// Follows the symlinks of `rel` (already normalised by [`resolve`]) inside `root`, and
/// returns the path it names relative to the root, with no symlink left on the way. A link
/// that points out, or to `.git` in any case, is refused.
pub fn resolve_links(root: &Path, rel: &Path, shown: &str) -> Result<PathBuf, PathError> {
    let mut pending: std::collections::VecDeque<std::ffi::OsString> =
        rel.components().map(|c| c.as_os_str().to_os_string()).collect();
    let mut current = PathBuf::new();
    let mut hops = 0;
    while let Some(part) = pending.pop_front() {
        match Path::new(&part).components().next() {
            Some(Component::CurDir) | None => continue,
            Some(Component::ParentDir) => {
                if !current.pop() {
                    return Err(PathError::SymlinkEscape(shown.to_string()));
                }
                continue;
            }
            Some(Component::RootDir | Component::Prefix(_)) => return Err(PathError::SymlinkEscape(shown.to_string())),
            Some(Component::Normal(_)) => {}
        }
        if is_git_name(&part) {
            return Err(PathError::GitDir(shown.to_string()));
        }
        current.push(&part);
        let full = root.join(&current);
        let Ok(meta) = full.symlink_metadata() else { continue };
        if !meta.file_type().is_symlink() {
            continue;
        }
        hops += 1;
        if hops > 40 {
            return Err(PathError::TooManyLinks(shown.to_string()));
        }
        let target = std::fs::read_link(&full).map_err(|_| PathError::SymlinkEscape(shown.to_string()))?;
        if target.is_absolute() {
            return Err(PathError::SymlinkEscape(shown.to_string()));
        }
        current.pop();
        for c in target.components().rev() {
            pending.push_front(c.as_os_str().to_os_string());
        }
    }
    Ok(current)
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
        for p in [".GIT/config", "sub/.Git/hooks/x", "a/.gitmodules", ".GITMODULES", ".git"] {
            assert_eq!(resolve(&root, p), Err(PathError::GitDir(p.into())), "{p}");
        }
    }

    #[test]
    fn symlinks_are_followed_inside_and_refused_toward_git_or_out() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir(root.join("src")).unwrap();
        std::fs::write(root.join(".git"), "gitdir: /x\n").unwrap();
        std::os::unix::fs::symlink("src", root.join("in")).unwrap();
        std::os::unix::fs::symlink(".git", root.join("g")).unwrap();
        std::os::unix::fs::symlink("g", root.join("g2")).unwrap();
        std::os::unix::fs::symlink("src/../.GIT", root.join("g3")).unwrap();
        std::os::unix::fs::symlink("../..", root.join("src/up")).unwrap();
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        let r = |p: &str| resolve_links(&root, Path::new(p), p);
        assert_eq!(r("in/a.rs"), Ok(PathBuf::from("src/a.rs")));
        assert_eq!(r("g"), Err(PathError::GitDir("g".into())));
        assert_eq!(r("g2"), Err(PathError::GitDir("g2".into())));
        assert_eq!(r("g3"), Err(PathError::GitDir("g3".into())));
        assert_eq!(r("src/up/x"), Err(PathError::SymlinkEscape("src/up/x".into())));
        assert_eq!(r("loop"), Err(PathError::TooManyLinks("loop".into())));
    }
}
