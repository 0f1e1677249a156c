mod commands;
mod deploy;
mod eval;
mod mcp;
mod ops;
mod processes;
mod resume;
mod service;
mod traces;

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

/// The binary with a clean environment: only what a test passes in.
pub fn autodev(home: &Path) -> Command {
    // Runs' agents work in bubblewrap (the default sandbox mode).
    autodev_testkit::require_program("bwrap", "bubblewrap");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_autodev"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::var_os("HOME").unwrap_or_default())
        .env("AUTODEV_HOME", home)
        .stdin(Stdio::null());
    if let Some(v) = std::env::var_os("CARGO_HOME") {
        cmd.env("CARGO_HOME", v);
    }
    if let Some(v) = std::env::var_os("RUSTUP_HOME") {
        cmd.env("RUSTUP_HOME", v);
    }
    cmd
}

pub fn output(cmd: &mut Command) -> (i32, String, String) {
    let Output { status, stdout, stderr } = cmd.output().unwrap();
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// Kills a spawned process when a test ends, even by panicking, so no child outlives it.
pub struct Reaper(pub u32);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-KILL", &self.0.to_string()]).status();
    }
}

/// Starts `autodev serve` on a loopback port with `workers` and returns the process and its
/// base URL (the address ends the first line of stderr; the rest is drained).
pub fn start_serve(cmd: &mut Command, workers: u32) -> (Child, String) {
    let mut child = cmd
        .args(["serve", "--listen", "127.0.0.1:0", "--workers", &workers.to_string()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let base = lines.next().unwrap().unwrap().rsplit(' ').next().unwrap().to_string();
    std::thread::spawn(move || for _ in lines {});
    (child, base)
}

/// `POST base+path` with a JSON body and a key: the status and the JSON answer.
pub async fn post_json(base: &str, key: &str, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let r = reqwest::Client::new().post(format!("{base}{path}")).bearer_auth(key).json(&body).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or_default())
}

/// Polls `GET base/api/v1/runs/{id}` until the run ends (or 15 s pass); its last state.
pub async fn run_end(base: &str, key: &str, id: &str) -> serde_json::Value {
    let http = reqwest::Client::new();
    let mut state = serde_json::Value::Null;
    for _ in 0..300 {
        let v: serde_json::Value =
            http.get(format!("{base}/api/v1/runs/{id}")).bearer_auth(key).send().await.unwrap().json().await.unwrap();
        state = v["state"].clone();
        if matches!(state.as_str(), Some("succeeded" | "failed" | "cancelled")) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    state
}
