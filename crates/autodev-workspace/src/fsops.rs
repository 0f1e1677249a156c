//! File I/O beneath a worktree root through a directory handle (cap-std's `Dir`, which uses
//! `openat2(RESOLVE_BENEATH)` where the kernel has it and checks each step otherwise). A path
//! checked by [`crate::paths`] and then swapped for a symlink that points out, by a process
//! racing the tool, still cannot lead the read or write outside the root.
use std::io::Write as _;
use std::path::{Path, PathBuf};

use cap_std::ambient_authority;
use cap_std::fs::{Dir, OpenOptions};

use crate::paths::{self, PathError};

/// Why a file operation failed; the text goes back to the model.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error(transparent)]
    Path(#[from] PathError),
    #[error("{0}")]
    Io(std::io::Error),
}

impl From<std::io::Error> for FsError {
    fn from(e: std::io::Error) -> Self {
        FsError::Io(e)
    }
}

/// A worktree root opened once; every operation is relative to it.
#[derive(Debug)]
pub struct Root {
    path: PathBuf,
    dir: Dir,
}

impl Root {
    /// Opens `path` (canonical) as the root.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let dir = Dir::open_ambient_dir(path, ambient_authority())?;
        Ok(Self { path: path.to_path_buf(), dir })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Checks a model's path and returns it relative to the root, symlinks resolved. `""`
    /// is the root itself.
    pub fn check(&self, rel: &str) -> Result<PathBuf, PathError> {
        let joined = paths::resolve(&self.path, rel)?;
        let normal = joined.strip_prefix(&self.path).unwrap_or(Path::new("")).to_path_buf();
        paths::resolve_links(&self.path, &normal, rel)
    }

    fn rel(p: &Path) -> &Path {
        if p.as_os_str().is_empty() { Path::new(".") } else { p }
    }

    pub fn is_dir(&self, rel: &Path) -> bool {
        self.dir.symlink_metadata(Self::rel(rel)).is_ok_and(|m| m.is_dir())
    }

    pub fn exists(&self, rel: &Path) -> bool {
        self.dir.symlink_metadata(Self::rel(rel)).is_ok()
    }

    /// Reads a whole file beneath the root, refusing anything that is not a regular file (a
    /// FIFO would block the agent). The file is opened non-blocking, so a FIFO an agent made
    /// (`mkfifo`) is refused at once instead of waiting in `open` for a writer; for a regular
    /// file the flag changes nothing.
    pub fn read(&self, rel: &Path) -> Result<Vec<u8>, FsError> {
        use cap_std::fs::OpenOptionsExt;
        let mut opts = OpenOptions::new();
        opts.read(true).custom_flags(libc::O_NONBLOCK);
        let file = self.dir.open_with(Self::rel(rel), &opts).map_err(escape_message)?;
        if !file.metadata()?.is_file() {
            return Err(FsError::Io(std::io::Error::other("not a regular file")));
        }
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut file.into_std(), &mut bytes)?;
        Ok(bytes)
    }

    /// Creates or replaces a file (parents created); returns whether it existed.
    pub fn write(&self, rel: &Path, content: &[u8]) -> Result<bool, FsError> {
        if let Some(parent) = rel.parent().filter(|p| !p.as_os_str().is_empty()) {
            self.dir.create_dir_all(parent).map_err(escape_message)?;
        }
        let existed = match self.dir.symlink_metadata(rel) {
            Ok(m) if m.is_file() => true,
            Ok(_) => return Err(FsError::Io(std::io::Error::other("not a regular file"))),
            Err(_) => false,
        };
        let mut opts = OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        let file = self.dir.open_with(rel, &opts).map_err(escape_message)?;
        let mut file = file.into_std();
        file.write_all(content)?;
        Ok(existed)
    }

    /// Removes a regular file (undoing the creation of one).
    pub fn remove(&self, rel: &Path) -> Result<(), FsError> {
        match self.dir.symlink_metadata(rel) {
            Ok(m) if m.is_file() => Ok(self.dir.remove_file(rel).map_err(escape_message)?),
            Ok(_) => Err(FsError::Io(std::io::Error::other("not a regular file"))),
            Err(e) => Err(escape_message(e)),
        }
    }
}

/// cap-std's refusal ("a path led outside of the filesystem") in words the model can use.
fn escape_message(e: std::io::Error) -> FsError {
    if e.to_string().contains("outside of the filesystem") {
        FsError::Io(std::io::Error::new(e.kind(), "the path resolves to outside the workspace"))
    } else {
        FsError::Io(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A FIFO an agent made in its worktree is refused at once: opening it for reading would
    /// otherwise wait for a writer forever (the engine reads worktrees on the host).
    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let path = std::ffi::CString::new(dir.path().join("pipe").to_str().unwrap()).unwrap();
        // SAFETY: mkfifo on a NUL-terminated path we own.
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o644) }, 0);
        std::fs::write(dir.path().join("file.txt"), "text").unwrap();
        let root = Root::open(&dir.path().canonicalize().unwrap()).unwrap();
        let started = std::time::Instant::now();
        assert!(root.read(Path::new("pipe")).is_err());
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        assert_eq!(root.read(Path::new("file.txt")).unwrap(), b"text");
    }

    /// Regression (issue 9): with a directory swapped for a symlink to outside between the
    /// check and the write, `write_file` wrote outside the worktree 2 times in 36. Here a
    /// thread swaps `d` between a directory and such a link as fast as it can while the tool
    /// writes through it thousands of times: nothing may land outside.
    #[test]
    fn writes_and_reads_raced_by_a_directory_symlink_swapper_never_leave_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root_path = dir.path().join("root");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(root_path.join("d")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret"), "outside-secret").unwrap();
        std::os::unix::fs::symlink(&outside, root_path.join("spare")).unwrap();
        let root_path = root_path.canonicalize().unwrap();
        let root = Root::open(&root_path).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let swapper = {
            let (stop, base) = (stop.clone(), root_path.clone());
            std::thread::spawn(move || {
                let mut swaps = 0u64;
                use std::os::unix::ffi::OsStrExt;
                let d = std::ffi::CString::new(base.join("d").as_os_str().as_bytes()).unwrap();
                let spare = std::ffi::CString::new(base.join("spare").as_os_str().as_bytes()).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    // d <-> spare: a directory and a link to outside trade places atomically,
                    // so `d` always exists (as one or the other).
                    // SAFETY: renameat2 on two NUL-terminated paths we own.
                    let rc = unsafe {
                        libc::renameat2(
                            libc::AT_FDCWD,
                            d.as_ptr(),
                            libc::AT_FDCWD,
                            spare.as_ptr(),
                            libc::RENAME_EXCHANGE,
                        )
                    };
                    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
                    swaps += 1;
                }
                swaps
            })
        };
        let (mut written, mut refused, mut leaked_reads) = (0, 0, 0);
        for i in 0..5_000 {
            let name = format!("d/f{}", i % 50);
            match root.check(&name).map_err(FsError::from).and_then(|p| root.write(&p, b"x")) {
                Ok(_) => written += 1,
                Err(_) => refused += 1,
            }
            if let Ok(bytes) = root.check("d/secret").map_err(FsError::from).and_then(|p| root.read(&p)) {
                leaked_reads += usize::from(bytes == b"outside-secret");
            }
        }
        stop.store(true, Ordering::Relaxed);
        let swaps = swapper.join().unwrap();
        let outside_files: Vec<_> = std::fs::read_dir(&outside).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(outside_files, vec![std::ffi::OsString::from("secret")], "a write landed outside");
        assert_eq!(leaked_reads, 0, "a read left the root");
        assert!(
            swaps > 100 && written > 0 && refused > 0,
            "the race was not exercised: {swaps} swaps, {written} written, {refused} refused"
        );
    }
}
