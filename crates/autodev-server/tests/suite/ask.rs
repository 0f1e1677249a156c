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

// Issue 27: ask is a conversation. A follow-up that only makes sense with the first turn
// ("and where is that called from?") is searched and answered with it; the answer streams
// over SSE in more than one piece, then a final event with citations, usage and the
// conversation; conversations are the key's own, listed and deletable.
async fn a_follow_up_is_answered_from_the_first_turn_and_streams(app) {
    let repo = make_repo(app._dir.path());
    std::fs::create_dir_all(repo.join("src")).unwrap();
    std::fs::write(
        repo.join("src/auth.rs"),
        "/// Checks an API key against its stored hash.\npub fn verify_api_key(key: &str, hash: &str) -> bool {\n    key.len() == hash.len()\n}\n",
    )
    .unwrap();
    std::fs::write(
        repo.join("src/server.rs"),
        "/// Serves one HTTP request.\npub fn handle(request: &str) -> u16 {\n    if verify_api_key(request, \"h\") { 200 } else { 401 }\n}\n",
    )
    .unwrap();
    // Code that matches the follow-up's own words better than the answer does.
    for i in 0..12 {
        std::fs::write(repo.join(format!("src/job_{i}.rs")), format!("/// Called from the scheduler, where jobs run.\npub fn job_{i}() {{}}\n")).unwrap();
    }
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "--quiet", "-m", "auth"]);
    let project = json!({"name": "keys", "repository": repo, "test_command": "true"});
    assert_eq!(app.post("/api/v1/projects", Some(&app.admin)).json(&project).send().await.unwrap().status(), 201);
    let ask = |key: &str, body: Value| app.post("/api/v1/projects/keys/ask", Some(key)).json(&body).send();

    app.script.on("unknown", 0, vec![text("API keys are checked by `verify_api_key` (src/auth.rs:2-4).")]);
    let (status, first) = json(ask(&app.viewer, json!({"question": "Where are API keys checked?"})).await.unwrap()).await;
    assert_eq!(status, 200, "{first}");
    let conversation = first["conversation"].as_str().unwrap().to_string();
    assert_eq!((conversation.len(), first["turn"].as_i64()), (36, Some(1)));

    // The follow-up, streamed.
    app.script.on("unknown", 0, vec![text("It is called from `handle` (src/server.rs:2-4).")]);
    let follow = json!({"question": "and where is that called from?", "conversation": conversation, "stream": true});
    let r = ask(&app.viewer, follow).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let body = r.text().await.unwrap();
    let events: Vec<(String, Value)> = body
        .split("\n\n")
        .filter_map(|block| {
            let event = block.lines().find_map(|l| l.strip_prefix("event: "))?;
            let data = block.lines().filter_map(|l| l.strip_prefix("data: ")).collect::<Vec<_>>().join("\n");
            Some((event.to_string(), serde_json::from_str(&data).unwrap_or(Value::Null)))
        })
        .collect();
    let deltas: Vec<&str> = events.iter().filter(|(e, _)| e == "delta").filter_map(|(_, d)| d["text"].as_str()).collect();
    assert!(deltas.len() > 1, "the answer arrives in pieces: {body}");
    assert_eq!(deltas.concat(), "It is called from `handle` (src/server.rs:2-4).");
    let (last, answer) = events.last().unwrap();
    assert_eq!(last, "answer", "{body}");
    assert_eq!((answer["conversation"].as_str(), answer["turn"].as_i64()), (Some(conversation.as_str()), Some(2)));
    assert_eq!(answer["citations"], json!([{"path": "src/server.rs", "start_line": 2, "end_line": 4, "valid": true}]));
    assert!(answer["input_tokens"].as_u64().unwrap() > 0, "{answer}");
    // It was searched and asked with the first turn: the caller is among the excerpts (the
    // question alone names nothing), and the first question and answer are in the prompt.
    assert!(answer["sources"].as_array().unwrap().iter().any(|s| s["path"] == "src/server.rs"), "{answer}");
    let prompt = app.script.requests.lock().unwrap().last().unwrap()["messages"][1]["content"].as_str().unwrap().to_string();
    // Asked alone, the same words find the scheduler's jobs, not the caller.
    let (_, alone) = json(ask(&app.viewer, json!({"question": "and where is that called from?"})).await.unwrap()).await;
    assert!(!alone["sources"].as_array().unwrap().iter().any(|s| s["path"] == "src/server.rs"), "{alone}");
    assert_eq!(alone["turn"], 1);
    assert!(
        prompt.starts_with("# Earlier in this conversation") && prompt.contains("Q: Where are API keys checked?")
            && prompt.contains("A: API keys are checked by `verify_api_key`"),
        "{prompt}"
    );

    // The key's conversations: listed with their turns, readable, not another key's.
    let (_, list) = json(app.get("/api/v1/ask/conversations", Some(&app.viewer)).send().await.unwrap()).await;
    let list: Vec<Value> = list.as_array().unwrap().iter().filter(|c| c["turns"] == 2).cloned().collect();
    assert_eq!(list[0]["id"], conversation.as_str(), "{list:?}");
    assert_eq!((list[0]["turns"].as_i64(), list[0]["title"].as_str()), (Some(2), Some("Where are API keys checked?")));
    let path = format!("/api/v1/ask/conversations/{conversation}");
    let (_, turns) = json(app.get(&path, Some(&app.viewer)).send().await.unwrap()).await;
    assert_eq!(turns.as_array().unwrap().len(), 2);
    assert_eq!(turns[1]["question"], "and where is that called from?");
    let (_, theirs) = json(app.get("/api/v1/ask/conversations", Some(&app.operator)).send().await.unwrap()).await;
    assert_eq!(theirs, json!([]));
    assert_eq!(app.get("/api/v1/ask/conversations", None).send().await.unwrap().status(), 401);
    assert_eq!(app.get(&path, Some(&app.operator)).send().await.unwrap().status(), 404);
    let (status, v) = json(
        ask(&app.operator, json!({"question": "more?", "conversation": conversation})).await.unwrap(),
    )
    .await;
    assert_eq!((status, v["error"]["code"].as_str()), (404, Some("not_found")), "another key cannot follow up: {v}");
    let (status, v) = json(ask(&app.viewer, json!({"question": "more?", "conversation": "x"})).await.unwrap()).await;
    assert_eq!((status, v["error"]["field"].as_str()), (422, Some("conversation")), "{v}");
    // Usage counts each turn like a single question.
    let (_, usage) = json(app.get("/api/v1/usage", Some(&app.viewer)).send().await.unwrap()).await;
    let asks: i64 = usage["usage"].as_array().unwrap().iter().filter(|r| r["kind"] == "ask").map(|r| r["calls"].as_i64().unwrap()).sum();
    assert_eq!(asks, 3, "{usage}");
    // Deleted: gone for its key (another key's delete is 404), its usage kept.
    assert_eq!(app.http.delete(format!("{}{path}", app.base)).bearer_auth(&app.operator).send().await.unwrap().status(), 404);
    assert_eq!(app.http.delete(format!("{}{path}", app.base)).bearer_auth(&app.viewer).send().await.unwrap().status(), 204);
    assert_eq!(app.get(&path, Some(&app.viewer)).send().await.unwrap().status(), 404);
}
}
