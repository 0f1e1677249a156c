use std::time::Duration;

use autodev_testkit::{finish, make_repo, write};
use serde_json::{Value, json};

use super::both;

async fn json(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The run as the API shows it once it is in `want` (polled for up to 15 s).
async fn wait_for_state(app: &super::TestApp, id: &str, want: &str) -> Value {
    for _ in 0..300 {
        let (_, v) = json(app.get(&format!("/api/v1/runs/{id}"), Some(&app.viewer)).send().await.unwrap()).await;
        if v["state"] == want {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("run never reached {want}");
}

both! {
async fn a_token_in_a_repository_url_is_never_shown(app) {
    // A project cloned with a token in its URL (a port nothing listens on: the clone fails
    // and git's error names the URL).
    let secret = "ghp_S3cretTok3n";
    let url = format!("https://autodev:{secret}@127.0.0.1:9/org/repo.git");
    let (status, v) = json(app.post("/api/v1/projects", Some(&app.admin)).json(&json!({"name": "private", "repository": url, "test_command": "true"})).send().await.unwrap()).await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["repository"], "https://***@127.0.0.1:9/org/repo.git");
    let (status, run) = json(app.post("/api/v1/runs", Some(&app.operator)).json(&json!({"project": "private", "spec": "# Something"})).send().await.unwrap()).await;
    assert_eq!(status, 201, "{run}");
    let id = run["id"].as_str().unwrap().to_string();
    let workers = tokio::spawn(autodev_server::workers::run_workers(app.state.clone(), 1, app.shutdown.clone()));
    let failed = wait_for_state(&app, &id, "failed").await;
    assert!(failed["reason"].as_str().unwrap().contains("***@127.0.0.1:9"), "{failed}");
    // Nowhere a viewer looks: the project, the run, the list, its events, its report.
    let mut seen = Vec::new();
    for path in ["/api/v1/projects".to_string(), "/api/v1/projects/private".into(), format!("/api/v1/runs/{id}"), "/api/v1/runs".into(), format!("/api/v1/runs/{id}/artifacts/report.md")] {
        let r = app.get(&path, Some(&app.viewer)).send().await.unwrap();
        seen.push((path, r.text().await.unwrap()));
    }
    seen.push(("events".into(), format!("{:?}", app.store.events(&id, 0).await.unwrap())));
    seen.push(("report.md".into(), std::fs::read_to_string(app._dir.path().join("runs").join(&id).join("report.md")).unwrap_or_default()));
    for (path, body) in &seen {
        assert!(!body.contains(secret), "{path} shows the token: {body}");
    }
    // Saving the project as shown (masked) keeps the real URL.
    let (status, _) = json(app.http.patch(format!("{}/api/v1/projects/private", app.base)).bearer_auth(&app.admin).json(&json!({"repository": "https://***@127.0.0.1:9/org/repo.git", "test_command": "true"})).send().await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(app.store.find_project("private").await.unwrap().repository, url);
    app.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), workers).await.unwrap().unwrap();
}
}

both! {
async fn projects_are_managed_by_admins_and_validated_field_by_field(app) {
    let repo = make_repo(app._dir.path());
    let body = json!({"name": "greeter", "repository": repo, "test_command": "sh check.sh"});
    let (status, _) = json(app.post("/api/v1/projects", Some(&app.operator)).json(&body).send().await.unwrap()).await;
    assert_eq!(status, 403);
    let (status, created) =
        json(app.post("/api/v1/projects", Some(&app.admin)).json(&body).send().await.unwrap()).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["name"], "greeter");
    let (status, _) = json(app.post("/api/v1/projects", Some(&app.admin)).json(&body).send().await.unwrap()).await;
    assert_eq!(status, 409);
    let bad: Vec<(Value, &str)> = vec![
        (json!({"name": "x y", "repository": "/tmp"}), "name"),
        (json!({"name": "ok", "repository": "relative/path"}), "repository"),
        (json!({"name": "ok"}), "repository"),
        (json!({"name": "ok", "repository": "/tmp", "colour": "red"}), "colour"),
        (json!({"name": 3, "repository": "/tmp"}), "name"),
        (json!({"name": "ok", "repository": "/tmp", "settings": [1]}), "settings"),
    ];
    for (body, field) in bad {
        let (status, v) = json(app.post("/api/v1/projects", Some(&app.admin)).json(&body).send().await.unwrap()).await;
        assert_eq!(status, 422, "{body}: {v}");
        assert_eq!(v["error"]["field"], field, "{body}: {v}");
    }
    let r = app
        .post("/api/v1/projects", Some(&app.admin))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    // Too large: refused from the declared length, before any body is read. (Sending the
    // body too would race the server closing the connection.)
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(app.base.trim_start_matches("http://")).await.unwrap();
        let head = format!(
            "POST /api/v1/projects HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            app.admin,
            2 * 1024 * 1024
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 1024];
        let n = tcp.read(&mut buf).await.unwrap();
        let answer = String::from_utf8_lossy(&buf[..n]);
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        // Regression (issue 10): this answer was plain text (`length limit exceeded`).
        assert!(answer.contains("content-type: application/json"), "{answer}");
        assert!(answer.contains(r#"{"error":{"code":"too_large""#), "{answer}");
    }
    // Regression (issue 10): a project named with another project's id answered for that id
    // afterwards. Names that could be ids, and `.`/`..`, are refused (create and rename).
    let id = created["id"].as_str().unwrap();
    for name in [id, "01a22bff-aa54-7305-949e-882b958ca0bd", ".", ".."] {
        let body = json!({"name": name, "repository": repo});
        let (status, v) = json(app.post("/api/v1/projects", Some(&app.admin)).json(&body).send().await.unwrap()).await;
        assert_eq!((status, v["error"]["field"].as_str()), (422, Some("name")), "{name}: {v}");
        let rename = app
            .http
            .patch(format!("{}/api/v1/projects/{id}", app.base))
            .bearer_auth(&app.admin)
            .json(&json!({"name": name}))
            .send()
            .await
            .unwrap();
        assert_eq!(rename.status().as_u16(), 422, "{name}");
    }
    // By name or id; update; list; delete.
    let (status, got) = json(app.get("/api/v1/projects/greeter", Some(&app.viewer)).send().await.unwrap()).await;
    assert_eq!((status, got["id"].as_str().unwrap()), (200, id));
    let (status, updated) = json(
        app.http
            .patch(format!("{}/api/v1/projects/{id}", app.base))
            .bearer_auth(&app.admin)
            .json(&json!({"base_branch": "main"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, updated["base_branch"].as_str()), (200, Some("main")));
    let (_, list) = json(app.get("/api/v1/projects", Some(&app.viewer)).send().await.unwrap()).await;
    assert_eq!(list["projects"].as_array().unwrap().len(), 1);
    let r =
        app.http.delete(format!("{}/api/v1/projects/greeter", app.base)).bearer_auth(&app.admin).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 204);
    assert_eq!(app.get("/api/v1/projects/greeter", Some(&app.viewer)).send().await.unwrap().status().as_u16(), 404);
}

async fn a_run_created_over_http_is_executed_by_a_worker_after_approval(app) {
    let repo = make_repo(app._dir.path());
    app.script
        .plan(json!([{"id": "t1", "title": "Add greeting", "description": "", "depends_on": [], "acceptance": []}]))
        .on("task:t1", 0, vec![write("greeting.txt", "hello\n"), finish("ok")]);
    let project = json!({"name": "greeter", "repository": repo, "test_command": "sh check.sh"});
    app.post("/api/v1/projects", Some(&app.admin)).json(&project).send().await.unwrap();
    let workers = tokio::spawn(autodev_server::workers::run_workers(app.state.clone(), 2, app.shutdown.clone()));

    // Validation first: unknown project, empty spec, a provider that is not configured.
    for (body, field) in [
        (json!({"project": "greeter", "spec": "  "}), "spec"),
        (json!({"project": "greeter", "spec": "# x", "model": "unconfigured"}), "model"),
        (json!({"project": "greeter", "spec": "# x", "max_parallel": 0}), "max_parallel"),
    ] {
        let (status, v) = json(app.post("/api/v1/runs", Some(&app.operator)).json(&body).send().await.unwrap()).await;
        assert_eq!((status, v["error"]["field"].as_str()), (422, Some(field)), "{body}: {v}");
    }
    // A project that does not exist is not found (404), naming the field.
    let body = json!({"project": "nope", "spec": "# x"});
    let (status, v) = json(app.post("/api/v1/runs", Some(&app.operator)).json(&body).send().await.unwrap()).await;
    assert_eq!((status, v["error"]["field"].as_str()), (404, Some("project")), "{v}");
    let (status, _) = json(
        app.post("/api/v1/runs", Some(&app.viewer))
            .json(&json!({"project": "greeter", "spec": "# x"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 403);

    let body =
        json!({"project": "greeter", "spec": "Write hello into greeting.txt.", "title": "Greet", "approval": true});
    let (status, run) = json(app.post("/api/v1/runs", Some(&app.operator)).json(&body).send().await.unwrap()).await;
    assert_eq!(status, 201, "{run}");
    assert_eq!(run["state"], "queued");
    assert!(run["branch"].as_str().unwrap().starts_with("autodev/"));
    let id = run["id"].as_str().unwrap().to_string();

    let wait_for = |want: &'static str| wait_for_state(&app, &id, want);
    let waiting = wait_for("awaiting_approval").await;
    assert_eq!(waiting["tasks"][0]["id"], "t1");
    let (status, _) = json(
        app.post(&format!("/api/v1/runs/{id}/approve"), Some(&app.operator))
            .json(&json!({"comment": "go"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let done = wait_for("succeeded").await;
    assert_eq!(done["tests_passed"], true);
    assert_eq!(
        autodev_testkit::git(&repo, &["show", &format!("{}:greeting.txt", done["branch"].as_str().unwrap())]),
        "hello"
    );
    // The worker worked in its own clone and pushed the run branch back: the project's
    // repository has the branch, its checked-out branch and working tree are untouched, and
    // the mid-run checkpoint ref is gone.
    let checkout_before = autodev_testkit::git(&repo, &["symbolic-ref", "--short", "HEAD"]);
    assert_eq!(checkout_before, "main");
    assert_eq!(autodev_testkit::git(&repo, &["status", "--porcelain"]), "");
    assert!(!repo.join("greeting.txt").exists());
    assert_eq!(autodev_testkit::git(&repo, &["for-each-ref", "refs/autodev/"]), "");
    assert_eq!(autodev_testkit::git(&repo, &["worktree", "list", "--porcelain"]).matches("worktree ").count(), 1);
    assert!(app._dir.path().join("repos").join(done["project_id"].as_str().unwrap()).join(".git").is_dir());
    // Approving again is a conflict.
    let (status, _) =
        json(app.post(&format!("/api/v1/runs/{id}/approve"), Some(&app.operator)).send().await.unwrap()).await;
    assert_eq!(status, 409);
    // The delivered artifacts, and the usage they cost.
    let report = app.get(&format!("/api/v1/runs/{id}/artifacts/report"), Some(&app.viewer)).send().await.unwrap();
    assert_eq!(report.status().as_u16(), 200);
    assert!(report.text().await.unwrap().starts_with("# Autodev report: Greet"));
    let patch = app.get(&format!("/api/v1/runs/{id}/artifacts/patch"), Some(&app.viewer)).send().await.unwrap();
    assert!(patch.text().await.unwrap().contains("+hello"));
    // The run page's "whole patch" link names the file.
    let whole = app.get(&format!("/api/v1/runs/{id}/artifacts/changes.patch"), Some(&app.viewer)).send().await.unwrap();
    assert_eq!(whole.status().as_u16(), 200);
    assert!(whole.text().await.unwrap().contains("+hello"));
    let (status, _) =
        json(app.get(&format!("/api/v1/runs/{id}/artifacts/secrets"), Some(&app.viewer)).send().await.unwrap()).await;
    assert_eq!(status, 404);
    let (status, usage) = json(app.get("/api/v1/usage?days=7", Some(&app.viewer)).send().await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(usage["usage"][0]["project"], "greeter");
    assert_eq!(usage["usage"][0]["model"], "gpt-4.1-mini");
    assert_eq!(usage["usage"][0]["calls"], 2);
    assert_eq!(usage["usage"][0]["input_tokens"], 2000);
    assert!(usage["total_cost_usd"].as_f64().unwrap() > 0.0);
    let (status, _) = json(app.get("/api/v1/usage?days=0", Some(&app.viewer)).send().await.unwrap()).await;
    assert_eq!(status, 422);
    // The metrics show the traffic and the run, by route template, and pass promtool.
    let metrics = app.get("/metrics", None).send().await.unwrap();
    assert_eq!(metrics.status().as_u16(), 200);
    let text = metrics.text().await.unwrap();
    for want in [
        "autodev_http_requests_total{method=\"POST\",route=\"/api/v1/runs\",status=\"201\"}",
        "autodev_http_request_duration_seconds_bucket{method=\"GET\",route=\"/api/v1/runs/{id}\"",
        "autodev_runs{state=\"succeeded\"}",
        "autodev_queue_depth",
        "autodev_active_agents",
        "autodev_model_calls_total{provider=\"openai\",model=\"gpt-4.1-mini\"}",
        "autodev_tool_calls_total{tool=\"write_file\",outcome=\"ok\"}",
    ] {
        assert!(text.contains(want), "missing {want} in:\n{text}");
    }
    assert!(!text.contains(&id), "run ids must not become label values");
    promtool_check(&text);
    app.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), workers).await.unwrap().unwrap();
}

async fn a_project_that_approves_deliveries_holds_its_runs_before_pushing(app) {
    let repo = make_repo(app._dir.path());
    app.script
        .plan(json!([{"id": "t1", "title": "Add greeting", "description": "", "depends_on": [], "acceptance": []}]))
        .on("task:t1", 0, vec![write("migrations/0001.sql", "-- no\n")])
        .on("task:t1", 1, vec![write("greeting.txt", "hello\n"), finish("ok")]);
    // Settings are checked field by field.
    for (settings, field) in [
        (json!({"monthly_budget_usd": -1}), "settings.monthly_budget_usd"),
        (json!({"protected_paths": ["/etc/**"]}), "settings.protected_paths[0]"),
        (json!({"approve_delivery": "yes"}), "settings.approve_delivery"),
    ] {
        let body = json!({"name": "greeter", "repository": repo, "settings": settings});
        let (status, v) = json(app.post("/api/v1/projects", Some(&app.admin)).json(&body).send().await.unwrap()).await;
        assert_eq!((status, v["error"]["field"].as_str()), (422, Some(field)), "{v}");
    }
    let project = json!({"name": "greeter", "repository": repo, "test_command": "sh check.sh",
        "settings": {"approve_delivery": true, "protected_paths": ["migrations/**"], "monthly_budget_usd": 100}});
    let (status, v) = json(app.post("/api/v1/projects", Some(&app.admin)).json(&project).send().await.unwrap()).await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["settings"]["protected_paths"], json!(["migrations/**"]));
    let workers = tokio::spawn(autodev_server::workers::run_workers(app.state.clone(), 1, app.shutdown.clone()));
    let body = json!({"project": "greeter", "spec": "Write hello into greeting.txt.", "title": "Greet"});
    let (status, run) = json(app.post("/api/v1/runs", Some(&app.operator)).json(&body).send().await.unwrap()).await;
    assert_eq!(status, 201, "{run}");
    let id = run["id"].as_str().unwrap().to_string();
    let wait_for = |want: &'static str| wait_for_state(&app, &id, want);
    let held = wait_for("awaiting_approval").await;
    assert_eq!(held["gate"], "delivery", "{held}");
    assert_eq!(held["tests_passed"], true);
    let branch = held["branch"].as_str().unwrap().to_string();
    // Not pushed yet.
    assert_eq!(autodev_testkit::git(&repo, &["branch", "--list", &branch]), "");
    // allow_paths goes with an approval only.
    let (status, v) = json(
        app.post(&format!("/api/v1/runs/{id}/reject"), Some(&app.operator))
            .json(&json!({"allow_paths": ["x"]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, v["error"]["field"].as_str()), (422, Some("allow_paths")), "{v}");
    let (status, v) =
        json(app.post(&format!("/api/v1/runs/{id}/approve"), Some(&app.operator)).send().await.unwrap()).await;
    assert_eq!(status, 200, "{v}");
    let done = wait_for("succeeded").await;
    assert!(done["gate"].is_null());
    assert_eq!(autodev_testkit::git(&repo, &["show", &format!("{branch}:greeting.txt")]), "hello");
    // The protected migration never reached the branch.
    let files = autodev_testkit::git(&repo, &["ls-tree", "-r", "--name-only", &branch]);
    assert!(!files.contains("migrations/"), "{files}");
    let report = app.get(&format!("/api/v1/runs/{id}/artifacts/report"), Some(&app.viewer)).send().await.unwrap();
    let report = report.text().await.unwrap();
    assert!(report.contains("## Gates") && report.contains("change to protected `migrations/0001.sql` (migrations/**) refused"), "{report}");
    app.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), workers).await.unwrap().unwrap();
}

async fn a_clone_url_project_is_cloned_by_the_worker_and_the_branch_pushed_back(app) {
    let work = make_repo(app._dir.path());
    let bare = app._dir.path().join("origin.git");
    autodev_testkit::git(app._dir.path(), &["clone", "--quiet", "--bare", work.to_str().unwrap(), bare.to_str().unwrap()]);
    app.script
        .plan(json!([{"id": "t1", "title": "Add greeting", "description": "", "depends_on": [], "acceptance": []}]))
        .on("task:t1", 0, vec![write("greeting.txt", "hello\n"), finish("ok")]);
    let url = format!("file://{}", bare.display());
    let project = json!({"name": "remote", "repository": url, "test_command": "sh check.sh"});
    let (status, v) = json(app.post("/api/v1/projects", Some(&app.admin)).json(&project).send().await.unwrap()).await;
    assert_eq!(status, 201, "{v}");
    let (status, v) = json(
        app.post("/api/v1/projects", Some(&app.admin))
            .json(&json!({"name": "bad", "repository": "ftp://example.com/x.git"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, v["error"]["field"].as_str()), (422, Some("repository")), "{v}");
    let workers = tokio::spawn(autodev_server::workers::run_workers(app.state.clone(), 1, app.shutdown.clone()));
    let (status, run) = json(
        app.post("/api/v1/runs", Some(&app.operator))
            .json(&json!({"project": "remote", "spec": "# Greet\n\nWrite hello into greeting.txt."}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{run}");
    let id = run["id"].as_str().unwrap().to_string();
    let mut last = Value::Null;
    for _ in 0..300 {
        last = json(app.get(&format!("/api/v1/runs/{id}"), Some(&app.viewer)).send().await.unwrap()).await.1;
        if last["state"] == "succeeded" || last["state"] == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(last["state"], "succeeded", "{last}");
    assert_eq!(last["base_branch"], "main", "the default branch was read from the remote");
    let branch = last["branch"].as_str().unwrap();
    assert_eq!(autodev_testkit::git(&bare, &["show", &format!("{branch}:greeting.txt")]), "hello");
    app.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), workers).await.unwrap().unwrap();
}
}

/// `promtool check metrics` (Debian package `prometheus`, installed by .ci/run).
fn promtool_check(text: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new(autodev_testkit::require_program("promtool", "prometheus"))
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool check metrics:\n{report}\n--- input ---\n{text}"
    );
}
