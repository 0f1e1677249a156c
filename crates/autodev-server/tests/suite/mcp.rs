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
    assert_eq!(seen["tools"].as_array().unwrap().len(), 8, "{seen}");
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

/// One tool call or resource read through the official SDK.
async fn sdk(app: &super::TestApp, mode: &str, key: &str, what: &str, args: Option<Value>) -> Value {
    let (python, client) = autodev_testkit::mcp_client();
    let mut cmd = std::process::Command::new(python);
    cmd.arg(client).args([mode, &format!("{}/mcp", app.base), key, what]);
    if let Some(a) = args {
        cmd.arg(a.to_string());
    }
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
    assert!(out.status.success(), "the client failed:\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

both! {
async fn a_run_made_over_mcp_is_approved_over_mcp_and_its_report_read_as_a_resource(app) {
    let repo = make_repo(app._dir.path());
    app.script
        .plan(json!([{"id": "t1", "title": "Add greeting", "description": "", "depends_on": [], "acceptance": []}]))
        .on("task:t1", 0, vec![autodev_testkit::write("greeting.txt", "hello\n"), autodev_testkit::finish("ok")]);
    let project = json!({"name": "greeter", "repository": repo, "test_command": "sh check.sh"});
    app.post("/api/v1/projects", Some(&app.admin)).json(&project).send().await.unwrap();
    let workers = tokio::spawn(autodev_server::workers::run_workers(app.state.clone(), 1, app.shutdown.clone()));

    let made = sdk(&app, "call", &app.operator, "create_run", Some(json!({"project": "greeter", "spec": "# Greet\n\nAdd greeting.txt.", "approve_plan": true}))).await;
    assert_eq!(made["is_error"], false, "{made}");
    let id = serde_json::from_str::<Value>(made["text"].as_str().unwrap()).unwrap()["id"].as_str().unwrap().to_string();
    let state = |app: &crate::suite::TestApp, id: String| {
        let req = app.get(&format!("/api/v1/runs/{id}"), Some(&app.viewer));
        async move { req.send().await.unwrap().json::<Value>().await.unwrap()["state"].as_str().unwrap_or_default().to_string() }
    };
    for _ in 0..300 {
        if state(&app, id.clone()).await == "awaiting_approval" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // A viewer may not approve; an operator may, with a comment.
    let refused = sdk(&app, "call", &app.viewer, "approve_run", Some(json!({"id": id}))).await;
    assert_eq!(refused["is_error"], true);
    assert!(refused["text"].as_str().unwrap().starts_with("forbidden"), "{refused}");
    let approved = sdk(&app, "call", &app.operator, "approve_run", Some(json!({"id": id, "comment": "go"}))).await;
    assert_eq!(approved["is_error"], false, "{approved}");
    for _ in 0..300 {
        if state(&app, id.clone()).await == "succeeded" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(state(&app, id.clone()).await, "succeeded");
    let report = sdk(&app, "read", &app.viewer, &format!("autodev://runs/{id}/report"), None).await;
    assert_eq!(report["mime_type"], "text/markdown");
    assert!(report["text"].as_str().unwrap().contains("Add greeting"), "{report}");
    app.shutdown.cancel();
    let _ = workers.await;
}
}

both! {
async fn a_project_scoped_key_sees_its_projects_alone_over_mcp(app) {
    let mut runs = Vec::new();
    for name in ["mine", "theirs"] {
        let repo = make_repo(&app._dir.path().join(name));
        let project = json!({"name": name, "repository": repo, "test_command": "sh check.sh"});
        assert_eq!(app.post("/api/v1/projects", Some(&app.admin)).json(&project).send().await.unwrap().status(), 201);
        let r = app.post("/api/v1/runs", Some(&app.operator)).json(&json!({"project": name, "spec": "# Work"})).send().await.unwrap();
        runs.push(r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string());
    }
    let scoped = autodev_server::auth::create_scoped_key(&app.store, &app.state.pepper, "contractor", autodev_domain::AccessRole::Operator, &["mine".to_string()])
        .await
        .unwrap();
    let key = secrecy::ExposeSecret::expose_secret(&scoped.key).to_string();
    let theirs = sdk(&app, "call", &key, "get_run", Some(json!({"id": runs[1]}))).await;
    assert_eq!(theirs["is_error"], true, "{theirs}");
    assert!(theirs["text"].as_str().unwrap().starts_with("not_found"), "{theirs}");
    let mine = sdk(&app, "call", &key, "get_run", Some(json!({"id": runs[0]}))).await;
    assert_eq!(mine["is_error"], false, "{mine}");
    let listed = sdk(&app, "call", &key, "list_runs", Some(json!({}))).await;
    let text = listed["text"].as_str().unwrap();
    assert!(text.contains(&runs[0]) && !text.contains(&runs[1]), "{text}");
    let cancel = sdk(&app, "call", &key, "cancel_run", Some(json!({"id": runs[1]}))).await;
    assert_eq!(cancel["is_error"], true, "{cancel}");
    let search = sdk(&app, "call", &key, "search_code", Some(json!({"query": "greeting", "project": "theirs"}))).await;
    assert_eq!(search["is_error"], true, "{search}");
    assert_eq!(app.store.get_run(&runs[1]).await.unwrap().state, "queued");
}
}

both! {
// Issue 27: MCP's `ask` continues a conversation as the API does: the follow-up is asked with
// the first turn, and another key cannot continue it.
async fn ask_over_mcp_follows_up_a_conversation(app) {
    let repo = make_repo(app._dir.path());
    let project = json!({"name": "greeter", "repository": repo, "test_command": "true"});
    app.post("/api/v1/projects", Some(&app.admin)).json(&project).send().await.unwrap();
    app.script.on("unknown", 0, vec![autodev_testkit::text("The tests grep greeting.txt (check.sh:1-4).")]);
    let first = sdk(&app, "call", &app.viewer, "ask", Some(json!({"project": "greeter", "question": "What do the tests check?"}))).await;
    assert_eq!(first["is_error"], false, "{first}");
    let first: Value = serde_json::from_str(first["text"].as_str().unwrap()).unwrap();
    let conversation = first["conversation"].as_str().unwrap().to_string();
    assert_eq!(first["turn"], 1);
    app.script.on("unknown", 0, vec![autodev_testkit::text("For the word hello (check.sh:3).")]);
    let args = json!({"project": "greeter", "question": "For which word?", "conversation": conversation});
    let second = sdk(&app, "call", &app.viewer, "ask", Some(args.clone())).await;
    let second: Value = serde_json::from_str(second["text"].as_str().unwrap()).unwrap();
    assert_eq!((second["conversation"].as_str(), second["turn"].as_i64()), (Some(conversation.as_str()), Some(2)));
    let prompt = app.script.requests.lock().unwrap().last().unwrap()["messages"][1]["content"].as_str().unwrap().to_string();
    assert!(prompt.contains("Q: What do the tests check?\nA: The tests grep greeting.txt"), "{prompt}");
    let theirs = sdk(&app, "call", &app.operator, "ask", Some(args)).await;
    assert_eq!(theirs["is_error"], true, "{theirs}");
    assert!(theirs["text"].as_str().unwrap().contains("no conversation"), "{theirs}");
}
}
