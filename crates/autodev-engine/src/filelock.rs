//! Exclusive locks on a data directory's shared things (a project's clone, its index
//! checkout) across the processes that share the directory, without tying up a thread per
//! waiter: waiters of one process queue on an async mutex per lock file, and only the one at
//! the head waits on the OS file lock (`flock`, which blocks, in a blocking thread). Under
//! load (a thousand runs of one project claimed at once) that is one blocked thread per lock,
//! not one per run: before, the runs filled tokio's blocking pool (512 threads, each with its
//! own stack and allocator heap: most of the process's memory).
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};

/// The in-process side of one lock file: its waiters' queue.
#[derive(Default)]
pub(crate) struct Gate {
    queue: Arc<tokio::sync::Mutex<()>>,
}

/// The gate of a lock file (one per path in the process).
pub(crate) fn gate(path: &Path) -> Arc<Gate> {
    static GATES: LazyLock<Mutex<HashMap<PathBuf, Arc<Gate>>>> = LazyLock::new(Mutex::default);
    let mut gates = GATES.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    gates.entry(path.to_path_buf()).or_default().clone()
}

/// Held: this process's turn and the OS lock on the file.
pub(crate) struct Held {
    _file: std::fs::File,
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

/// Waits for the lock on `path` (created when missing): first this process's turn, then the
/// file lock held by other processes.
pub(crate) async fn lock(gate: &Arc<Gate>, path: &Path) -> std::io::Result<Held> {
    let turn = gate.queue.clone().lock_owned().await;
    let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(path)?;
    let file = tokio::task::spawn_blocking(move || file.lock().map(|()| file))
        .await
        .map_err(|e| std::io::Error::other(format!("lock task failed: {e}")))??;
    Ok(Held { _file: file, _turn: turn })
}
