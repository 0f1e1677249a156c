//! Every host-side read is accounted for. Autodev reads on the host, outside any sandbox, from
//! directories an agent or a repository's author wrote (worktrees, a project's checkout): such
//! reads go through a directory handle (`autodev_workspace::fsops::Root`, cap-std in the code
//! index) and git goes through Autodev's hardened git, never a raw `std::fs` read or a `git`
//! found on `PATH`. This test lists the raw reads that remain, each with why its path is
//! Autodev's own, and fails on a new one: read a worktree through the handle, or add the read
//! here with the reason its file cannot be an agent's.
use std::path::Path;

/// (file, text on the line, why the path is not an agent's or a repository's).
const ALLOWED: &[(&str, &str, &str)] = &[
    (
        "crates/autodev-engine/src/run.rs",
        "read_to_string(&exclude)",
        "the user's repository's .git/info/exclude, which Autodev appends to",
    ),
    ("crates/autodev-engine/src/lease.rs", "/proc/sys/kernel/hostname", "the host's name, for lease tokens"),
    (
        "crates/autodev-store/src/store/artifacts.rs",
        "fs::read(home.join(\"runs\")",
        "a run's report or patch in its run folder, written by Autodev",
    ),
    ("crates/autodev-engine/src/gc.rs", "read_dir(&runs_dir)", "gc: the run folders in AUTODEV_HOME"),
    (
        "crates/autodev-engine/src/gc.rs",
        "read_dir(dir.join(\"worktrees\"))",
        "gc: a run folder's worktree list (names only)",
    ),
    ("crates/autodev-engine/src/gc.rs", "read_dir(&dir)", "gc: sizes of the files in AUTODEV_HOME (metadata only)"),
    ("crates/autodev-server/src/auth.rs", "read_to_string(&path)", "the key pepper in AUTODEV_HOME"),
    ("crates/autodev-index/src/index.rs", "read_to_string(&version)", "the index's own schema stamp in AUTODEV_HOME"),
    (
        "crates/autodev-index/src/index.rs",
        "read_to_string(self.manifest_path())",
        "the index's own manifest in AUTODEV_HOME",
    ),
    ("crates/autodev-index/src/vectors.rs", "fs::read(&path)", "the vector store's own file in AUTODEV_HOME"),
    (
        "crates/autodev-index/src/vectors.rs",
        "read_to_string(&manifest_path)",
        "the vector store's own manifest in AUTODEV_HOME",
    ),
];

/// What a raw read or an unhardened git looks like.
const RAW: &[&str] = &["fs::read(", "fs::read_to_string(", "read_dir(", "File::open(", "Command::new(\"git\")"];

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_host_side_read_is_a_listed_one() {
    let top = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files = Vec::new();
    for krate in ["autodev-engine", "autodev-server", "autodev-index", "autodev-store"] {
        sources(&top.join("crates").join(krate).join("src"), &mut files);
    }
    let mut unlisted = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&top).unwrap().to_string_lossy().replace('\\', "/");
        let text = std::fs::read_to_string(file).unwrap();
        // Tests below `#[cfg(test)]` make their own files.
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        for (n, line) in code.lines().enumerate() {
            if line.trim_start().starts_with("//") || !RAW.iter().any(|r| line.contains(r)) {
                continue;
            }
            let listed = ALLOWED.iter().any(|(f, needle, _)| rel == *f && line.contains(needle));
            if !listed {
                unlisted.push(format!("{rel}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(
        unlisted.is_empty(),
        "raw host-side reads not accounted for (read a worktree or checkout through autodev_workspace::fsops::Root, run git through autodev_workspace::Git, or list the read in tests/suite/host_reads.rs with why its file is Autodev's own):\n{}",
        unlisted.join("\n")
    );
}
