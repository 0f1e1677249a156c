//! Locks on paths, within a process and across the processes sharing a data directory.
//!
//! [`path_mutex`] is one async mutex per path in the process (git's operations on one
//! repository's shared metadata, a lock file's waiters). [`lock_file`] adds the OS lock on a
//! file for the processes sharing it, without tying up a thread per waiter: waiters of one
//! process queue on the file's mutex, and only the one at the head waits on `flock` (which
//! blocks, in a blocking thread). Under load (a thousand runs of one project claimed at once)
//! that is one blocked thread per lock, not one per run: runs waiting each in their own
//! blocking thread once filled tokio's pool (512 threads, each with its own stack and
//! allocator heap: most of the process's memory).
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};

/// The process's mutex for `path` (by its canonical form when it exists).
pub fn path_mutex(path: &Path) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: LazyLock<Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>> = LazyLock::new(Mutex::default);
    let key = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    match LOCKS.lock() {
        Ok(mut m) => m.entry(key).or_default().clone(),
        // A panic elsewhere poisoned the map: fall back to no sharing rather than failing.
        Err(_) => Arc::new(tokio::sync::Mutex::new(())),
    }
}

/// Held: this process's turn and the OS lock on the file; both released on drop.
pub struct FileLock {
    _file: std::fs::File,
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

/// Waits for the lock on the file at `path` (created when missing): first this process's
/// turn, then the lock other processes may hold.
pub async fn lock_file(path: &Path) -> std::io::Result<FileLock> {
    let turn = path_mutex(path).lock_owned().await;
    let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(path)?;
    let file = tokio::task::spawn_blocking(move || file.lock().map(|()| file))
        .await
        .map_err(|e| std::io::Error::other(format!("lock task failed: {e}")))??;
    Ok(FileLock { _file: file, _turn: turn })
}
