use std::time::Duration;

use autodev_domain::{EventKind, RunState};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde_json::Value;

use super::both;

both! {
async fn health_and_ready_answer_without_a_key(app) {
    let r = app.get("/health", None).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.text().await.unwrap()), (200, "ok".to_string()));
    let r = app.get("/ready", None).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["checks"]["database"], true);
    // Shutdown: the server stops accepting connections.
    app.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(app.get("/health", None).send().await.is_err());
}

async fn the_auth_matrix_is_enforced_with_one_error_shape(app) {
    let id = app.run_with_events("Auth", 0).await;
    let cancel = format!("/api/v1/runs/{id}/cancel");
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (app.get("/api/v1/runs", None), 401, "unauthorized"),
        (app.get("/api/v1/runs", Some("adk_0123")), 401, "unauthorized"),
        (app.get("/api/v1/runs", None).header("authorization", "Basic abc"), 401, "unauthorized"),
        (app.post(&cancel, Some(&app.viewer)), 403, "forbidden"),
        (app.get("/api/v1/runs/ffffffff", Some(&app.viewer)), 404, "not_found"),
        (app.get("/api/v1/runs?state=running", Some(&app.viewer)), 422, "invalid"),
        (app.get("/api/v1/runs?limit=0", Some(&app.viewer)), 422, "invalid"),
        (app.get("/api/v1/nope", Some(&app.viewer)), 404, "not_found"),
    ];
    for (rb, status, code) in cases {
        let r = rb.send().await.unwrap();
        assert_eq!(r.status().as_u16(), status);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], code, "{v}");
        assert!(v["error"]["message"].as_str().unwrap().len() > 5);
    }
    let r = app.get("/api/v1/runs?state=running", Some(&app.viewer)).send().await.unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["field"], "state");
    // A viewer reads; an operator cancels (once); the cancel is audited.
    assert_eq!(app.get(&format!("/api/v1/runs/{id}"), Some(&app.viewer)).send().await.unwrap().status().as_u16(), 200);
    let r = app.post(&cancel, Some(&app.operator)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["state"], "cancelled");
    assert_eq!(v["reason"], "cancelled by op");
    assert_eq!(app.post(&cancel, Some(&app.admin)).send().await.unwrap().status().as_u16(), 409);
    assert_eq!(app.store.audit_count().await.unwrap(), 2);
    // A key revoked on this machine (as `autodev keys revoke` does) stops working at once,
    // though it was just used and cached.
    assert!(autodev_server::auth::revoke(&app.store, app._dir.path(), "viewer").await.unwrap());
    assert_eq!(app.get("/api/v1/runs", Some(&app.viewer)).send().await.unwrap().status().as_u16(), 401);
}

async fn runs_are_listed_newest_first_with_a_cursor_and_a_state_filter(app) {
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(app.run_with_events(&format!("Run {i}"), 0).await);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    app.store.set_run_state(&ids[1], RunState::Cancelled, None).await.unwrap();
    let mut seen = Vec::new();
    let mut url = "/api/v1/runs?limit=2".to_string();
    loop {
        let v: Value = app.get(&url, Some(&app.viewer)).send().await.unwrap().json().await.unwrap();
        for r in v["runs"].as_array().unwrap() {
            seen.push(r["id"].as_str().unwrap().to_string());
        }
        match v["next_cursor"].as_str() {
            Some(c) => url = format!("/api/v1/runs?limit=2&cursor={c}"),
            None => break,
        }
    }
    ids.reverse();
    assert_eq!(seen, ids);
    let v: Value =
        app.get("/api/v1/runs?state=cancelled", Some(&app.viewer)).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["runs"].as_array().unwrap().len(), 1);
    assert_eq!(v["runs"][0]["title"], "Run 1");
}

async fn the_event_stream_replays_from_last_event_id_then_follows_until_the_run_ends(app) {
    let id = app.run_with_events("Stream", 3).await;
    // Events 1..=4 exist (run_created + 3 warnings). Resume after 2.
    let resp = app
        .get(&format!("/api/v1/runs/{id}/events"), Some(&app.viewer))
        .header("Last-Event-ID", "2")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let mut events = resp.bytes_stream().eventsource();
    let mut got = Vec::new();
    for _ in 0..2 {
        let e = events.next().await.unwrap().unwrap();
        got.push((e.id.clone(), e.event.clone()));
    }
    let first_seq: i64 = got[0].0.parse().unwrap();
    assert!(first_seq > 2);
    assert_eq!(got[0].1, "warning");
    // Live: a new event and then the end of the run arrive on the open stream.
    let store = app.store.clone();
    let id2 = id.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        store.append_event(&id2, EventKind::Warning { message: "live".into() }).await.unwrap();
        store.set_run_state(&id2, RunState::Failed, Some("done")).await.unwrap();
    });
    let mut rest = Vec::new();
    while let Some(e) = tokio::time::timeout(Duration::from_secs(5), events.next()).await.unwrap() {
        let e = e.unwrap();
        let v: Value = serde_json::from_str(&e.data).unwrap();
        rest.push(v["type"].as_str().unwrap().to_string());
    }
    // The stream closes by itself once the run is terminal.
    assert_eq!(rest, vec!["warning", "state_changed"]);
}

async fn a_long_history_streams_whole_in_pages_and_streams_per_key_are_capped(app) {
    // 1,201 events (pages of 500): every one arrives, in order, and the stream ends.
    let id = app.run_with_events("Long", 1_200).await;
    app.store.set_run_state(&id, RunState::Cancelled, Some("done")).await.unwrap();
    let resp = app.get(&format!("/api/v1/runs/{id}/events"), Some(&app.viewer)).send().await.unwrap();
    let mut events = resp.bytes_stream().eventsource();
    let mut seqs = Vec::new();
    while let Some(e) = tokio::time::timeout(Duration::from_secs(10), events.next()).await.unwrap() {
        seqs.push(e.unwrap().id.parse::<i64>().unwrap());
    }
    assert_eq!(seqs.len(), 1_202, "run_created, 1,200 warnings, the state change");
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    // One key follows at most 32 streams at once; a closed one frees its place.
    let open = app.run_with_events("Open", 0).await;
    let mut held = Vec::new();
    for _ in 0..autodev_server::access::STREAMS_PER_KEY {
        let r = app.get(&format!("/api/v1/runs/{open}/events"), Some(&app.viewer)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        held.push(r);
    }
    let r = app.get(&format!("/api/v1/runs/{open}/events"), Some(&app.viewer)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 429);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_streams", "{body}");
    // Another key is not affected.
    let r = app.get(&format!("/api/v1/runs/{open}/events"), Some(&app.operator)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    drop(r);
    drop(held.pop());
    let mut reopened = None;
    for _ in 0..100 {
        let r = app.get(&format!("/api/v1/runs/{open}/events"), Some(&app.viewer)).send().await.unwrap();
        if r.status().as_u16() == 200 {
            reopened = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(reopened.is_some(), "a closed stream gave its place back");
}
}

both! {
    async fn the_openapi_document_describes_every_route_and_each_documented_route_exists(app) {
        let r = app.get("/api/v1/openapi.json", None).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let doc: Value = r.json().await.unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{}", doc["openapi"]);
        assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
        let paths = doc["paths"].as_object().unwrap();
        assert!(paths.len() >= 17, "{:?}", paths.keys());
        for (path, ops) in paths {
            let concrete = path.replace("{id}", "nope").replace("{project}", "nope").replace("{name}", "report");
            for method in ops.as_object().unwrap().keys() {
                let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
                let r = app.http.request(m, format!("{}{concrete}", app.base)).bearer_auth(&app.admin).send().await.unwrap();
                let status = r.status().as_u16();
                let body = r.text().await.unwrap();
                assert!(status != 405 && !body.contains("no such endpoint"), "{method} {path} is documented but not routed: {status} {body}");
            }
        }
        for want in ["/api/v1/runs", "/api/v1/runs/{id}/events", "/webhooks/github", "/api/v1/projects/{project}", "/api/v1/usage"] {
            assert!(paths.contains_key(want), "{want} undocumented");
        }
    }

    async fn a_key_over_its_rate_limit_gets_429_with_retry_after(app) {
        let mut limited = None;
        // The bucket refills at RATE_PER_MINUTE/60 a second; requests go out far faster than
        // that, so the limit is reached soon after the burst, however slow the machine.
        for _ in 0..(crate::suite::RATE_PER_MINUTE * 8) {
            let r = app.get("/api/v1/runs?limit=1", Some(&app.viewer)).send().await.unwrap();
            if r.status().as_u16() == 429 {
                limited = Some(r);
                break;
            }
            assert_eq!(r.status().as_u16(), 200);
        }
        let r = limited.expect("never limited");
        let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry), "{retry}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "rate_limited");
        // Limits are per key: another key is unaffected.
        assert_eq!(app.get("/api/v1/runs?limit=1", Some(&app.operator)).send().await.unwrap().status().as_u16(), 200);
    }
}

/// Regression (issue 10): every HTTP method a client made up became a label value, so
/// `curl -X FUZZA /health` added series without bound (1,000 methods: /metrics 168 KB → 1.9 MB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_methods_share_one_metrics_label() {
    let app = super::spawn_app_on("sqlite").await;
    let series = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with("autodev_http_requests_total{"))
            .filter(|l| l.contains("route=\"unmatched\"") || l.contains("route=\"/health\""))
            .map(|l| l.rsplit_once(' ').map(|(k, _)| k.to_string()).unwrap_or_default())
            .filter(|k| !k.contains("method=\"GET\""))
            .collect()
    };
    let client = reqwest::Client::new();
    let send = |m: String| {
        let req = client.request(reqwest::Method::from_bytes(m.as_bytes()).unwrap(), format!("{}/health", app.base));
        async move { req.send().await.unwrap().status().as_u16() }
    };
    send("FUZZ0".into()).await;
    let before = series(&app.get("/metrics", None).send().await.unwrap().text().await.unwrap());
    for i in 1..200 {
        send(format!("FUZZ{i}")).await;
    }
    let text = app.get("/metrics", None).send().await.unwrap().text().await.unwrap();
    let after = series(&text);
    assert_eq!(before, after, "made-up methods added series");
    assert!(!text.contains("FUZZ"), "a made-up method became a label value");
    assert!(after.iter().any(|k| k.contains("method=\"other\"")), "{after:?}");
}

both! {
async fn a_project_scoped_key_sees_and_acts_on_its_projects_alone(app) {
    use serde_json::json;
    // Two projects with a run each (queued: no workers here).
    let mut runs = Vec::new();
    for name in ["mine", "theirs"] {
        let repo = autodev_testkit::make_repo(&app._dir.path().join(name));
        let body = json!({"name": name, "repository": repo, "test_command": "sh check.sh"});
        let r = app.post("/api/v1/projects", Some(&app.admin)).json(&body).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 201);
        let r = app.post("/api/v1/runs", Some(&app.operator)).json(&json!({"project": name, "spec": "# Work"})).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 201);
        runs.push(r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string());
    }
    let (mine, theirs) = (runs[0].clone(), runs[1].clone());
    // A contractor's key: admin of "mine" alone (the CLI's `autodev keys create --project mine`).
    let scoped = autodev_server::auth::create_scoped_key(&app.store, &app.state.pepper, "contractor", autodev_domain::AccessRole::Admin, &["mine".to_string()])
        .await
        .unwrap();
    let key = secrecy::ExposeSecret::expose_secret(&scoped.key).to_string();
    let status = |r: reqwest::Response| r.status().as_u16();

    // What it sees: its project, its run.
    let v: Value = app.get("/api/v1/projects", Some(&key)).send().await.unwrap().json().await.unwrap();
    let names: Vec<&str> = v["projects"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["mine"]);
    let v: Value = app.get("/api/v1/runs", Some(&key)).send().await.unwrap().json().await.unwrap();
    let ids: Vec<&str> = v["runs"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![mine.as_str()]);
    assert_eq!(status(app.get(&format!("/api/v1/runs/{mine}"), Some(&key)).send().await.unwrap()), 200);

    // Everything of the other project is 404, as if it did not exist, on every route.
    let gets = [
        "/api/v1/projects/theirs".to_string(),
        "/api/v1/runs?project=theirs".into(),
        format!("/api/v1/runs/{theirs}"),
        format!("/api/v1/runs/{}", &theirs[theirs.len() - 8..]),
        format!("/api/v1/runs/{theirs}/events"),
        format!("/api/v1/runs/{theirs}/artifacts/report.md"),
    ];
    for path in &gets {
        assert_eq!(status(app.get(path, Some(&key)).send().await.unwrap()), 404, "GET {path}");
    }
    for action in ["cancel", "approve", "reject", "deliver"] {
        let r = app.post(&format!("/api/v1/runs/{theirs}/{action}"), Some(&key)).json(&json!({})).send().await.unwrap();
        assert_eq!(status(r), 404, "POST {action}");
    }
    let r = app.post("/api/v1/runs", Some(&key)).json(&json!({"project": "theirs", "spec": "# Mine now"})).send().await.unwrap();
    assert_eq!(status(r), 404);
    let r = app.post("/api/v1/projects/theirs/ask", Some(&key)).json(&json!({"question": "What is here?"})).send().await.unwrap();
    assert_eq!(status(r), 404);
    let r = app.http.patch(format!("{}/api/v1/projects/theirs", app.base)).bearer_auth(&key).json(&json!({"test_command": "true"})).send().await.unwrap();
    assert_eq!(status(r), 404);
    let r = app.http.delete(format!("{}/api/v1/projects/theirs", app.base)).bearer_auth(&key).send().await.unwrap();
    assert_eq!(status(r), 404);
    assert_eq!(app.store.find_project("theirs").await.unwrap().name, "theirs", "untouched");
    // What only a key for every project may do.
    let r = app.post("/api/v1/projects", Some(&key)).json(&json!({"name": "new", "repository": "/tmp/x"})).send().await.unwrap();
    assert_eq!(status(r), 403);
    // Usage: its projects and its own key only.
    let v: Value = app.get("/api/v1/usage", Some(&key)).send().await.unwrap().json().await.unwrap();
    assert!(v["usage"].as_array().unwrap().iter().all(|r| r["project"] == "mine"), "{v}");
    assert!(v["by_key"].as_array().unwrap().iter().all(|r| r["key"] == "contractor"), "{v}");
    // It still acts on its own run.
    assert_eq!(status(app.post(&format!("/api/v1/runs/{mine}/cancel"), Some(&key)).send().await.unwrap()), 200);
    assert_eq!(app.store.get_run(&theirs).await.unwrap().state, "queued");

    // The web UI: the same key signs in and sees the same.
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = no_redirects.post(format!("{}/login", app.base)).header("content-type", "application/x-www-form-urlencoded").body(format!("key={key}")).send().await.unwrap();
    let cookie = r.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    let page = |path: String| {
        let (c, n) = (cookie.clone(), no_redirects.clone());
        let url = format!("{}{path}", app.base);
        async move { n.get(url).header("cookie", c).send().await.unwrap() }
    };
    assert_eq!(status(page(format!("/runs/{theirs}")).await), 404);
    assert_eq!(status(page(format!("/runs/{mine}")).await), 200);
    let list = page("/runs".into()).await.text().await.unwrap();
    assert!(list.contains(&mine[mine.len() - 8..]) && !list.contains(&theirs[theirs.len() - 8..]), "{list}");
    let projects = page("/projects".into()).await.text().await.unwrap();
    assert!(!projects.contains(">theirs<"), "{projects}");
    assert_eq!(status(page("/keys".into()).await), 403);
    // An unscoped key still sees both.
    let v: Value = app.get("/api/v1/runs", Some(&app.viewer)).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["runs"].as_array().unwrap().len(), 2);
}
}
