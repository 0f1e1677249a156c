//! `POST /api/v1/projects/{key}/ask`: answers from the project's code index with checked
//! citations, recorded per key and project, refused at a spent monthly budget.
use autodev_testkit::{git, make_repo, text};
use serde_json::{Value, json};

use super::both;

async fn json(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

both! {
async fn a_question_about_a_project_is_answered_from_its_index_and_recorded(app) {
    let repo = make_repo(app._dir.path());
    std::fs::create_dir_all(repo.join("src")).unwrap();
    std::fs::write(
        repo.join("src/auth.rs"),
        "/// Checks an API key against its stored hash.\npub fn verify_api_key(key: &str, hash: &str) -> bool {\n    key.len() == hash.len()\n}\n",
    )
    .unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "--quiet", "-m", "auth"]);
    let project = json!({"name": "keys", "repository": repo, "test_command": "true"});
    let (status, _) = json(app.post("/api/v1/projects", Some(&app.admin)).json(&project).send().await.unwrap()).await;
    assert_eq!(status, 201);
    app.script.on("unknown", 0, vec![text("API keys are checked by `verify_api_key` (src/auth.rs:2-4).")]);

    // Validation at the edge: blank, unknown field, unknown project.
    let ask = |key: &str, body: Value| app.post("/api/v1/projects/keys/ask", Some(key)).json(&body).send();
    let (status, v) = json(ask(&app.viewer, json!({"question": "  "})).await.unwrap()).await;
    assert_eq!((status, v["error"]["field"].as_str()), (422, Some("question")), "{v}");
    let (status, _) = json(ask(&app.viewer, json!({"question": "x", "model": "y"})).await.unwrap()).await;
    assert_eq!(status, 422);
    let (status, _) = json(
        app.post("/api/v1/projects/nope/ask", Some(&app.viewer)).json(&json!({"question": "x"})).send().await.unwrap(),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(app.post("/api/v1/projects/keys/ask", None).json(&json!({"question": "x"})).send().await.unwrap().status(), 401);

    let (status, a) = json(ask(&app.viewer, json!({"question": "Where are API keys checked?"})).await.unwrap()).await;
    assert_eq!(status, 200, "{a}");
    assert_eq!(a["project"], "keys");
    assert_eq!(a["citations"], json!([{"path": "src/auth.rs", "start_line": 2, "end_line": 4, "valid": true}]));
    assert_eq!((a["citations_ok"].as_bool(), a["not_found"].as_bool()), (Some(true), Some(false)));
    assert_eq!(a["sources"][0]["path"], "src/auth.rs");
    assert!(a["cost_usd"].as_f64().unwrap() > 0.0);
    // The project's repository was indexed from its base branch, not from the working tree.
    std::fs::write(repo.join("src/auth.rs"), "uncommitted\n").unwrap();
    app.script.on("unknown", 0, vec![text("See src/auth.rs:99-120.")]);
    let (_, b) = json(ask(&app.operator, json!({"question": "Where are API keys checked?"})).await.unwrap()).await;
    assert_eq!(b["citations"][0]["valid"], false, "{b}");
    assert_eq!(b["citations_ok"], false);
    assert_eq!(b["sources"][0]["name"], "verify_api_key");

    // A key has at most four questions answered at once: with four in flight, a fifth is 429
    // and costs nothing; another key still asks.
    let viewer_id = app.store.list_keys().await.unwrap().into_iter().find(|k| k.name == "viewer").unwrap().id;
    let held: Vec<_> = (0..autodev_server::access::ASKS_PER_KEY).map(|_| app.state.guard.start_ask(&viewer_id).unwrap()).collect();
    let (status, v) = json(ask(&app.viewer, json!({"question": "Where are API keys checked?"})).await.unwrap()).await;
    assert_eq!((status, v["error"]["code"].as_str()), (429, Some("too_many_asks")), "{v}");
    drop(held);

    // Usage: asks by kind, by key.
    let (_, usage) = json(app.get("/api/v1/usage", Some(&app.viewer)).send().await.unwrap()).await;
    let asks: Vec<&Value> = usage["usage"].as_array().unwrap().iter().filter(|r| r["kind"] == "ask").collect();
    assert_eq!((asks.len(), asks[0]["calls"].as_i64(), asks[0]["project"].as_str()), (1, Some(2), Some("keys")), "{usage}");
    let by_key = usage["by_key"].as_array().unwrap();
    for name in ["viewer", "op"] {
        let row = by_key.iter().find(|r| r["key"] == name && r["kind"] == "ask").unwrap_or_else(|| panic!("{usage}"));
        assert_eq!(row["calls"], 1);
    }

    // A project whose repository cannot be fetched: 409 naming the repository, no charge.
    let gone = json!({"name": "gone", "repository": "file:///nonexistent/gone.git"});
    assert_eq!(app.post("/api/v1/projects", Some(&app.admin)).json(&gone).send().await.unwrap().status(), 201);
    let (status, v) = json(
        app.post("/api/v1/projects/gone/ask", Some(&app.viewer)).json(&json!({"question": "x"})).send().await.unwrap(),
    )
    .await;
    assert_eq!((status, v["error"]["code"].as_str()), (409, Some("repository_unavailable")), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("file:///nonexistent/gone.git"), "{v}");

    // A spent monthly budget refuses the next question.
    let (status, _) = json(
        app.http
            .patch(format!("{}/api/v1/projects/keys", app.base))
            .bearer_auth(&app.admin)
            .json(&json!({"settings": {"monthly_budget_usd": 0.000001}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let (status, v) = json(ask(&app.viewer, json!({"question": "Where are API keys checked?"})).await.unwrap()).await;
    assert_eq!((status, v["error"]["code"].as_str()), (409, Some("budget_exceeded")), "{v}");

    // A question reserves its worst case first (about $0.0088 here: 16,000 tokens of
    // context, the question, 1,500 tokens of answer, at gpt-4.1-mini's prices), so questions
    // in flight together cannot pass a budget: with one reserved, the next waits its turn.
    let spent: i64 = app.store.month_spend(&autodev_domain::month_of(autodev_store::now_ms())).await.unwrap()
        .into_iter().filter(|(s, _)| s.starts_with("project:")).map(|(_, v)| v).sum();
    let budget = (spent as f64 + 12_000.0) / 1e6;
    let r = app.http.patch(format!("{}/api/v1/projects/keys", app.base)).bearer_auth(&app.admin)
        .json(&json!({"settings": {"monthly_budget_usd": budget}})).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let project_id = app.store.find_project("keys").await.unwrap().id;
    let limit = Some((budget * 1e6) as i64);
    let (held, id) = app.store.reserve_ask(&project_id, 8_811, limit, None).await.unwrap();
    assert!(matches!(held, autodev_store::Reservation::Granted { .. }), "{held:?}");
    let (status, v) = json(ask(&app.viewer, json!({"question": "Where are API keys checked?"})).await.unwrap()).await;
    assert_eq!((status, v["error"]["code"].as_str()), (409, Some("budget_exceeded")), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("reserved"), "{v}");
    app.store.release_ask(&id.unwrap()).await.unwrap();
    let (status, v) = json(ask(&app.viewer, json!({"question": "Where are API keys checked?"})).await.unwrap()).await;
    assert_eq!(status, 200, "{v}");
    // Its own reservation was given back once its cost was recorded.
    let (again, id) = app.store.reserve_ask(&project_id, 8_811, limit, None).await.unwrap();
    assert!(matches!(again, autodev_store::Reservation::Granted { .. }), "{again:?}");
    app.store.release_ask(&id.unwrap()).await.unwrap();
}
}
