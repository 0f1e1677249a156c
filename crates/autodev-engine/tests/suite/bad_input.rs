use autodev_domain::{EventKind, RunState, Spec};
use autodev_engine::{EngineError, Outcome, RunRequest};
use pretty_assertions::assert_eq;
use serde_json::json;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::harness::*;

#[tokio::test]
async fn a_directory_that_is_not_a_git_repository_is_refused() {
    let app = TestApp::new().await;
    let plain = app.repo.parent().unwrap().join("plain");
    std::fs::create_dir_all(&plain).unwrap();
    let req = RunRequest { repo: plain, spec: Spec::parse(b"# x").unwrap(), base: None, settings: settings() };
    let err = app.engine.create_run(req).await.unwrap_err();
    assert!(matches!(err, EngineError::Invalid(_)));
    assert!(err.to_string().contains("is not a git repository"), "{err}");

    let req = RunRequest {
        repo: app.repo.join("nope"),
        spec: Spec::parse(b"# x").unwrap(),
        base: None,
        settings: settings(),
    };
    assert!(app.engine.create_run(req).await.unwrap_err().to_string().contains("does not exist"));

    let req = RunRequest {
        repo: app.repo.clone(),
        spec: Spec::parse(b"# x").unwrap(),
        base: Some("release".into()),
        settings: settings(),
    };
    assert!(app.engine.create_run(req).await.unwrap_err().to_string().contains("base branch `release`"));
    assert!(app.engine.store().list_runs(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_dirty_working_tree_is_left_untouched() {
    let app = TestApp::new().await;
    std::fs::write(app.repo.join("README.md"), "# Project\nmy local edit\n").unwrap();
    std::fs::write(app.repo.join("notes.txt"), "untracked\n").unwrap();
    app.script
        .plan(json!([{"id": "t1", "title": "Add greeting", "description": "", "depends_on": [], "acceptance": []}]))
        .on(
            "task:t1",
            0,
            vec![write("greeting.txt", "hello\n"), write("README.md", "# Project\nrewritten\n"), finish("ok")],
        );
    let (id, outcome) = app.run(settings(), "# Greet").await;
    assert_eq!(outcome, succeeded(), "{}", app.reason(&id).await);
    assert_eq!(std::fs::read_to_string(app.repo.join("README.md")).unwrap(), "# Project\nmy local edit\n");
    assert_eq!(std::fs::read_to_string(app.repo.join("notes.txt")).unwrap(), "untracked\n");
    assert_eq!(git(&app.repo, &["status", "--porcelain"]), "M README.md\n?? notes.txt".trim_start());
    let warned = app
        .events(&id)
        .await
        .iter()
        .any(|e| matches!(&e.kind, EventKind::Warning { message } if message.contains("uncommitted changes")));
    assert!(warned);
}

#[tokio::test]
async fn a_model_the_vendor_does_not_know_fails_the_run_with_its_message() {
    let app = TestApp::new().await;
    let server = MockServer::start().await;
    // Chat completions only: the engine also asks the server for the unknown model's window
    // (llama.cpp's /props, Ollama's /api/show), which this server does not have.
    Mock::given(method("POST"))
        .and(wiremock::matchers::path("/chat/completions"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"error": {"message": "The model `gpt-9` does not exist or you do not have access to it.", "type": "invalid_request_error", "code": "model_not_found"}})))
        .expect(1)
        .mount(&server)
        .await;
    let client = std::sync::Arc::new(autodev_llm::OpenAiClient::new("openai", &server.uri(), None, false));
    let engine =
        autodev_engine::Engine::new(app.engine.store().clone(), client, autodev_llm::PriceTable::default(), &app.home);
    let mut s = settings();
    s.model = "gpt-9".into();
    let req = RunRequest { repo: app.repo.clone(), spec: Spec::parse(b"# x").unwrap(), base: None, settings: s };
    let id = engine.create_run(req).await.unwrap().id;
    let outcome = engine.drive(&id, Default::default()).await.unwrap();
    assert_eq!(outcome, Outcome::Finished(RunState::Failed));
    assert_eq!(
        app.reason(&id).await,
        "model call failed: openai refused the request (HTTP 404): The model `gpt-9` does not exist or you do not have access to it."
    );
}

#[tokio::test]
async fn a_model_missing_from_the_price_table_costs_nothing_and_warns_once() {
    let app = TestApp::new().await;
    app.script
        .plan(json!([{"id": "t1", "title": "Add greeting", "description": "", "depends_on": [], "acceptance": []}]))
        .on("task:t1", 0, vec![write("greeting.txt", "hello\n"), finish("ok")]);
    let mut s = settings();
    s.model = "my-local-llama".into();
    let (id, outcome) = app.run(s, "# Greet").await;
    assert_eq!(outcome, succeeded(), "{}", app.reason(&id).await);
    let warnings = app
        .events(&id)
        .await
        .iter()
        .filter(|e| matches!(&e.kind, EventKind::Warning { message } if message.contains("not in the price table")))
        .count();
    assert_eq!(warnings, 1);
    assert_eq!(app.engine.store().get_run(&id).await.unwrap().cost_micros, 0);
}

#[tokio::test]
async fn a_data_directory_inside_the_repository_stays_out_of_git_status() {
    let app = TestApp::new().await;
    app.script
        .plan(json!([{"id": "t1", "title": "Add greeting", "description": "", "depends_on": [], "acceptance": []}]))
        .on("task:t1", 0, vec![write("greeting.txt", "hello\n"), finish("ok")]);
    // AUTODEV_HOME=./.autodev, run from the project's root.
    let home = app.repo.join(".autodev");
    let store = autodev_store::Store::open(&home.join("autodev.db")).await.unwrap();
    let client =
        std::sync::Arc::new(autodev_llm::OpenAiClient::new("openai", &format!("{}/v1", app.server.uri()), None, false));
    let engine = autodev_engine::Engine::new(store, client, autodev_llm::PriceTable::default(), &home);
    let mut s = settings();
    s.keep_worktrees = true;
    let req = RunRequest { repo: app.repo.clone(), spec: Spec::parse(b"# Greet").unwrap(), base: None, settings: s };
    let id = engine.create_run(req).await.unwrap().id;
    assert_eq!(engine.drive(&id, Default::default()).await.unwrap(), Outcome::Finished(RunState::Succeeded));
    assert!(home.join("runs").join(&id).join("worktrees/run").exists());
    assert_eq!(git(&app.repo, &["status", "--porcelain"]), "");
    let exclude = std::fs::read_to_string(app.repo.join(".git/info/exclude")).unwrap();
    assert_eq!(exclude.matches("/.autodev/").count(), 1);
}
