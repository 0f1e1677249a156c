//! MCP over streamable HTTP at `/mcp` under `serve`, behind the API's keys, driven by the
//! official Python SDK.
use autodev_testkit::{git, make_repo};
use serde_json::{Value, json};

use super::both;

both! {
async fn the_official_python_sdk_drives_the_mcp_endpoint_with_an_api_key(app) {
    let repo = make_repo(app._dir.path());
    std::fs::write(repo.join("greet.py"), "def build_greeting(name):\n    \"\"\"The greeting shown to a person.\"\"\"\n    return f'hello {name}'\n").unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "--quiet", "-m", "greeting"]);
    let project = json!({"name": "greeter", "repository": repo, "test_command": "true"});
    assert_eq!(app.post("/api/v1/projects", Some(&app.admin)).json(&project).send().await.unwrap().status(), 201);

    // Without a key, or with a wrong one: the API's 401.
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "curl", "version": "1"}}});
    let r = app.http.post(format!("{}/mcp", app.base)).header("accept", "application/json, text/event-stream").json(&init).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "unauthorized");
    let r = app.http.post(format!("{}/mcp", app.base)).bearer_auth("adk_wrong").json(&init).send().await.unwrap();
    assert_eq!(r.status(), 401);

    let (python, client) = autodev_testkit::mcp_client();
    let run_client = |key: String| {
        let (python, client, url) = (python.clone(), client.clone(), format!("{}/mcp", app.base));
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new(python).arg(client).args(["http", &url, &key, "greeter"]).output().unwrap();
            assert!(out.status.success(), "the client failed:\n{}", String::from_utf8_lossy(&out.stderr));
            serde_json::from_slice::<Value>(&out.stdout).unwrap()
        })
    };
    let seen = run_client(app.operator.clone()).await.unwrap();
    assert_eq!(seen["tools"].as_array().unwrap().len(), 7, "{seen}");
    assert_eq!(seen["search"][0]["path"], "greet.py", "{seen}");
    assert_eq!(seen["search"][0]["name"], "build_greeting");
    assert_eq!(seen["create_error"], false, "{seen}");
    let id = seen["run"]["id"].as_str().unwrap().to_string();
    assert_eq!(seen["cancelled_state"], "cancelled");
    // The run is the API's: made by the operator's key (audit), visible over REST.
    let r: Value = app.get(&format!("/api/v1/runs/{id}"), Some(&app.viewer)).send().await.unwrap().json().await.unwrap();
    assert_eq!(r["state"], "cancelled");

    // A viewer may search but not create runs: the role check is the API's.
    let seen = run_client(app.viewer.clone()).await.unwrap();
    assert_eq!(seen["search_error"], false, "{seen}");
    assert_eq!(seen["create_error"], true);
    assert!(seen["run"]["error"].as_str().unwrap().starts_with("forbidden"), "{seen}");
}
}
