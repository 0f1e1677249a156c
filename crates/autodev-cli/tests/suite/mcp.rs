//! `autodev mcp` (stdio) driven by a client nobody here wrote: the official Python MCP SDK
//! (`mcp` on PyPI, in a venv `.ci/mcp-venv` makes), as an editor would start it.
use std::process::Command;

use autodev_testkit::{git, make_repo};
use serde_json::Value;

use super::{autodev, output};

#[tokio::test(flavor = "multi_thread")]
async fn the_official_python_sdk_drives_autodev_mcp_over_stdio() {
    let dir = tempfile::tempdir().unwrap();
    let repo = make_repo(dir.path());
    std::fs::create_dir_all(repo.join("src")).unwrap();
    std::fs::write(
        repo.join("src/greet.rs"),
        "/// Builds the greeting shown to a person.\npub fn build_greeting(name: &str) -> String {\n    format!(\"hello {name}\")\n}\n",
    )
    .unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "--quiet", "-m", "greeting"]);
    let home = dir.path().join("home");
    // The database exists (migrated) and holds a project, as `autodev serve` would have made.
    let (code, _, stderr) = output(autodev(&home).arg("migrate"));
    assert_eq!(code, 0, "{stderr}");
    let store = autodev_store::Store::open(&home.join("autodev.db")).await.unwrap();
    let now = autodev_store::now_ms();
    store
        .insert_project(&autodev_store::ProjectRow {
            id: "11111111-2222-4333-8444-555555555555".into(),
            name: "greeter".into(),
            repository: repo.display().to_string(),
            base_branch: None,
            test_command: Some("true".into()),
            settings: "{}".into(),
            created_at: now,
            updated_at: now,
        })
        .await
        .unwrap();
    drop(store);

    // The SDK starts `autodev mcp --repo REPO` itself, with this environment.
    let (python, client) = autodev_testkit::mcp_client();
    let mut py = Command::new(python);
    py.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::var_os("HOME").unwrap_or_default())
        .env("AUTODEV_HOME", &home)
        .env("OPENAI_API_KEY", "sk-not-used")
        .env("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
        .arg(client)
        .args(["stdio", env!("CARGO_BIN_EXE_autodev")])
        .arg(&repo)
        .arg("greeter");
    let (code, stdout, stderr) = output(&mut py);
    assert_eq!(code, 0, "the client failed:\n{stderr}");
    let seen: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    assert_eq!(seen["server"], "autodev");
    assert_eq!(
        seen["tools"],
        serde_json::json!([
            "approve_run",
            "ask",
            "cancel_run",
            "create_run",
            "get_run",
            "list_runs",
            "revert_run",
            "search_code"
        ])
    );
    assert_eq!(seen["schemas_ok"], true);
    assert_eq!(seen["search_code_required"], serde_json::json!(["query"]));
    assert_eq!(seen["search_error"], false, "{seen}");
    assert_eq!(seen["search"][0]["path"], "src/greet.rs", "{seen}");
    assert_eq!(seen["search"][0]["name"], "build_greeting");
    assert_eq!((seen["search"][0]["start_line"].as_u64(), seen["search"][0]["end_line"].as_u64()), (Some(1), Some(4)));
    assert_eq!(seen["create_error"], false, "{seen}");
    assert_eq!(seen["run"]["state"], "queued");
    assert_eq!(seen["get_state"], "queued");
    assert_eq!(seen["listed"][0], seen["run"]["id"]);
    assert_eq!(seen["cancelled_state"], "cancelled");
    assert_eq!(seen["bad_error"], true);
    assert!(seen["bad_text"].as_str().unwrap().contains("spec"), "{seen}");
    assert_eq!(seen["missing_error"], true);
    let uri = format!("autodev://runs/{}/report", seen["run"]["id"].as_str().unwrap());
    assert!(seen["resources"].as_array().unwrap().iter().any(|r| r == &Value::String(uri.clone())), "{seen}");
}
