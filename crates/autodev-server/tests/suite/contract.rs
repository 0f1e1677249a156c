//! Regressions of issue 10: the API keeps the contract it publishes. Every error, whichever
//! layer answers it, is `{"error": {"code", "message", "field"?}}` with a documented code;
//! the document's rules are the server's.
use autodev_domain::RunState;
use serde_json::{Value, json};

use super::{GITHUB_SECRET, TestApp, both};

/// The codes the document lists.
fn documented_codes() -> Vec<String> {
    let doc = autodev_server::openapi::document();
    doc["components"]["schemas"]["ErrorDetail"]["properties"]["code"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect()
}

/// Sends, and checks the answer is the error shape with this status, code and field.
async fn expect_error(rb: reqwest::RequestBuilder, status: u16, code: &str, field: Option<&str>) -> Value {
    let r = rb.send().await.unwrap();
    let got = r.status().as_u16();
    let content_type = r.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    let text = r.text().await.unwrap();
    assert_eq!(got, status, "{text}");
    assert!(content_type.starts_with("application/json"), "{content_type}: {text}");
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(documented_codes().contains(&code.to_string()), "`{code}` is not documented");
    assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert_eq!(v["error"]["field"].as_str(), field, "{v}");
    v
}

/// Sends raw bytes over TCP (for what reqwest will not send) and returns the answer's head and body.
async fn raw(app: &TestApp, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(app.base.trim_start_matches("http://")).await.unwrap();
    tcp.write_all(request).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tcp.read(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// A run waiting for approval.
async fn awaiting(app: &TestApp) -> String {
    let id = app.run_with_events("Gate", 0).await;
    app.store.set_run_state(&id, RunState::Planning, None).await.unwrap();
    app.store.set_run_state(&id, RunState::AwaitingApproval, None).await.unwrap();
    id
}

both! {
async fn approve_and_reject_bodies_get_the_error_shape_and_null_comments_are_accepted(app) {
    let id = awaiting(&app).await;
    let approve = format!("/api/v1/runs/{id}/approve");
    let op = Some(app.operator.as_str());
    expect_error(app.post(&approve, op).header("content-type", "application/json").body("{not json"), 400, "malformed_json", None).await;
    expect_error(app.post(&approve, op).header("content-type", "text/plain").body("ok"), 415, "unsupported_media_type", None).await;
    expect_error(app.post(&approve, op).json(&json!({"comment": 5})), 422, "invalid", Some("comment")).await;
    expect_error(app.post(&approve, op).json(&json!({"coment": "x"})), 422, "invalid", Some("coment")).await;
    expect_error(app.post(&approve, op).json(&json!(["x"])), 422, "invalid", Some("body")).await;
    expect_error(app.post(&approve, op).json(&json!({"comment": "a\u{0}b"})), 422, "invalid", Some("comment")).await;
    // A viewer learns it may not, before anything about its body.
    expect_error(app.post(&approve, Some(&app.viewer)).header("content-type", "application/json").body("{not json"), 403, "forbidden", None).await;
    expect_error(app.post("/api/v1/runs", Some(&app.viewer)).header("content-type", "application/json").body("{not json"), 403, "forbidden", None).await;
    // `{"comment": null}` is what the document allows.
    let r = app.post(&approve, op).json(&json!({"comment": null})).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
    // No body at all is fine too (reject, on another run).
    let other = awaiting(&app).await;
    let r = app.post(&format!("/api/v1/runs/{other}/reject"), op).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

async fn query_strings_paths_and_methods_get_the_error_shape(app) {
    let v = Some(app.viewer.as_str());
    expect_error(app.get("/api/v1/runs?limit=abc", v), 422, "invalid", Some("limit")).await;
    expect_error(app.get("/api/v1/runs?limit=1&limit=2", v), 422, "invalid", Some("limit")).await;
    expect_error(app.get("/api/v1/runs?stat=failed", v), 422, "invalid", Some("stat")).await;
    expect_error(app.get("/api/v1/runs?cursor=garbage", v), 422, "invalid", Some("cursor")).await;
    expect_error(app.get("/api/v1/runs?project=nope", v), 404, "not_found", Some("project")).await;
    expect_error(app.get("/api/v1/usage?days=x", v), 422, "invalid", Some("days")).await;
    expect_error(app.get("/api/v1/usage?days=0", v), 422, "invalid", Some("days")).await;
    let id = app.run_with_events("Events", 1).await;
    expect_error(app.get(&format!("/api/v1/runs/{id}/events?after=x"), v), 422, "invalid", Some("after")).await;
    expect_error(app.get(&format!("/api/v1/runs/{id}/events"), v).header("last-event-id", "x"), 422, "invalid", Some("Last-Event-ID")).await;
    // Invalid UTF-8 in a path segment.
    expect_error(app.get("/api/v1/runs/%FF%FE", v), 400, "malformed_request", None).await;
    // A method the endpoint does not take: 405 with Allow, in the shape.
    let r = app.http.put(format!("{}/api/v1/runs", app.base)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 405);
    assert_eq!(r.headers()["allow"], "GET,HEAD,POST");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed");
    // A URI over the limit: 414 in the shape.
    let long = format!("/api/v1/runs/{}", "a".repeat(20_000));
    expect_error(app.get(&long, v), 414, "uri_too_long", None).await;
}

async fn the_bearer_scheme_is_case_insensitive(app) {
    for header in [format!("bearer {}", app.viewer), format!("BEARER  {}", app.viewer), format!("Bearer\t{}", app.viewer)] {
        let r = app.get("/api/v1/runs", None).header("authorization", header.clone()).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{header}");
    }
    expect_error(app.get("/api/v1/runs", None).header("authorization", "Bearer"), 401, "unauthorized", None).await;
    expect_error(app.get("/api/v1/runs", None).header("authorization", format!("Token {}", app.viewer)), 401, "unauthorized", None).await;
}

async fn models_settings_and_names_are_validated_as_documented(app) {
    let repo = autodev_testkit::make_repo(app._dir.path());
    let admin = Some(app.admin.as_str());
    let create = |body: Value| app.post("/api/v1/projects", admin).json(&body);
    expect_error(create(json!({"name": "p", "repository": repo, "settings": {"github_repo": "not a repo"}})), 422, "invalid", Some("settings.github_repo")).await;
    expect_error(create(json!({"name": "p", "repository": repo, "settings": {"github_rep": "o/n"}})), 422, "invalid", Some("settings.github_rep")).await;
    expect_error(create(json!({"name": "p", "repository": repo, "settings": {"jira_project": "lower"}})), 422, "invalid", Some("settings.jira_project")).await;
    expect_error(create(json!({"name": "p", "repository": repo, "settings": [1]})), 422, "invalid", Some("settings")).await;
    expect_error(create(json!({"name": "p", "repository": repo, "base_branch": "a..b"})), 422, "invalid", Some("base_branch")).await;
    // Project names are ASCII (documented): a look-alike letter is refused, not folded.
    expect_error(create(json!({"name": "prоject", "repository": repo})), 422, "invalid", Some("name")).await;
    expect_error(create(json!({"name": "-x", "repository": repo})), 422, "invalid", Some("name")).await;
    // A path with no repository is not found (the field names something that is not there).
    expect_error(create(json!({"name": "p", "repository": "/nonexistent/repo"})), 404, "not_found", Some("repository")).await;
    let r = create(json!({"name": "p", "repository": repo, "settings": {"github_repo": "octo-org/hello-world", "require_evidence": true}})).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());
    let run = |body: Value| app.post("/api/v1/runs", Some(&app.operator)).json(&body);
    expect_error(run(json!({"project": "p", "spec": "# x", "model": "bad model!"})), 422, "invalid", Some("model")).await;
    expect_error(run(json!({"project": "p", "spec": "# x", "title": "two\nlines"})), 422, "invalid", Some("title")).await;
    expect_error(run(json!({"project": "p", "spec": "\u{feff} \n"})), 422, "invalid", Some("spec")).await;
    expect_error(run(json!({"project": "p", "spec": "# x", "max_parallel": 1.5})), 422, "invalid", Some("max_parallel")).await;
    // 2.0 is an integer to JSON Schema, so it is to the server.
    let r = run(json!({"project": "p", "spec": "# x", "max_parallel": 2.0})).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());
}

async fn webhook_errors_get_the_shape_and_delivery_ids_are_bounded(app) {
    // 413 from the declared length, on a webhook (no key involved).
    let head = format!(
        "POST /webhooks/github HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        2 * 1024 * 1024
    );
    let answer = raw(&app, head.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains(r#"{"error":{"code":"too_large""#), "{answer}");
    let body = br#"{"zen": "hi", "hook_id": 1}"#;
    let signed = |delivery: String| {
        let signature = crate::suite::webhooks::sign(GITHUB_SECRET, body);
        app.post("/webhooks/github", None)
            .header("x-hub-signature-256", signature)
            .header("x-github-event", "issues")
            .header("x-github-delivery", delivery)
            .header("content-type", "application/json")
            .body(body.to_vec())
    };
    expect_error(signed("d".repeat(201)), 422, "invalid", Some("x-github-delivery")).await;
    expect_error(signed("has space".into()), 422, "invalid", Some("x-github-delivery")).await;
    let r = signed("d".repeat(200)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
    expect_error(app.post("/webhooks/github", None).header("x-github-event", "issues").body("{}"), 401, "unauthorized", None).await;
}
}
