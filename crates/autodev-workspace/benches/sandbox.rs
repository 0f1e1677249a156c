//! Per-command cost of the sandbox: `echo hi` through a running bubblewrap sandbox (what an
//! agent's `run` pays), against spawning `bash -c` bare and the unisolated per-command paths.
//! `cargo bench -p autodev-workspace --bench sandbox` prints the median and p90 of each.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]
use std::time::{Duration, Instant};

use autodev_workspace::sandbox::{Sandbox, SandboxMode, SandboxPolicy};

const N: usize = 400;

fn summary(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    println!(
        "{name:<42} median {:>7.3} ms   p90 {:>7.3} ms   ({} runs)",
        at(0.5).as_secs_f64() * 1e3,
        at(0.9).as_secs_f64() * 1e3,
        samples.len()
    );
}

async fn measure(sb: &Sandbox) -> Vec<Duration> {
    // The first command starts the sandbox; it is measured on its own below.
    let out = sb.run("echo hi", Duration::from_secs(10)).await.unwrap();
    assert_eq!(out.stdout_tail, "hi\n");
    let mut samples = Vec::with_capacity(N);
    for _ in 0..N {
        let t = Instant::now();
        let out = sb.run("echo hi", Duration::from_secs(10)).await.unwrap();
        samples.push(t.elapsed());
        assert_eq!(out.stdout_tail, "hi\n");
    }
    samples
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ws");
        std::fs::create_dir_all(&root).unwrap();
        let root = root.canonicalize().unwrap();
        let policy = SandboxPolicy::new(dir.path().join("tmp"));

        let mut bare = Vec::with_capacity(N);
        for _ in 0..N {
            let t = Instant::now();
            let out = tokio::process::Command::new("/bin/bash").args(["-c", "echo hi"]).output().await.unwrap();
            bare.push(t.elapsed());
            assert_eq!(out.stdout, b"hi\n");
        }
        summary("bare `bash -c 'echo hi'` spawn", bare);

        let mut starts = Vec::new();
        for _ in 0..20 {
            let sb = Sandbox::new(&root, policy.clone());
            let t = Instant::now();
            sb.run("true", Duration::from_secs(10)).await.unwrap();
            starts.push(t.elapsed());
        }
        summary("bwrap: sandbox start + first command", starts);

        let sb = Sandbox::new(&root, policy.clone());
        summary("bwrap: `echo hi` in a running sandbox", measure(&sb).await);

        for mode in [SandboxMode::Landlock, SandboxMode::None] {
            let sb = Sandbox::new(&root, policy.clone().with_mode(mode));
            summary(&format!("{mode}: `echo hi` (one process per command)"), measure(&sb).await);
        }
    });
}
