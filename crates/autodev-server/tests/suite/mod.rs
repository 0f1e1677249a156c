mod after;
mod api;
mod ask;
mod contract;
pub mod delivery;
mod flow;
mod mcp;
mod ui;
pub mod webhooks;

/// Each test, once on SQLite and once on PostgreSQL.
macro_rules! both {
    ($(async fn $name:ident($app:ident) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;
                async fn body($app: $crate::suite::TestApp) $body
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    body($crate::suite::spawn_app_on("sqlite").await).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    body($crate::suite::spawn_app_on("postgres").await).await;
                }
            }
        )*
    };
}
pub(crate) use both;

use std::time::Duration;

use autodev_domain::{AccessRole, EventKind};
use autodev_server::auth::{Pepper, create_key};
use autodev_server::{AppState, serve};
use autodev_store::Store;
use secrecy::{ExposeSecret, SecretString};
use tokio_util::sync::CancellationToken;

/// Per key: high enough for every test but the one that runs into it.
pub const RATE_PER_MINUTE: u32 = 600;
pub const GITHUB_SECRET: &str = "It's a Secret to Everybody";
pub const GITLAB_TOKEN: &str = "gitlab-token-123";
pub const JIRA_SECRET: &str = "jira-shared-secret";

/// Model clients pointing at a scripted model server.
pub struct TestModels(pub String);

impl autodev_server::ModelFactory for TestModels {
    fn defaults(&self) -> (String, String) {
        ("openai".into(), "gpt-4.1-mini".into())
    }
    fn build(
        &self,
        settings: &autodev_engine::RunSettings,
    ) -> Result<std::sync::Arc<dyn autodev_domain::ModelClient>, String> {
        if settings.model == "unconfigured" {
            return Err("provider openai needs OPENAI_API_KEY".into());
        }
        Ok(std::sync::Arc::new(autodev_llm::OpenAiClient::new("openai", &self.0, None, true)))
    }
}

pub struct TestApp {
    pub _dir: tempfile::TempDir,
    pub _db: Option<autodev_testkit::pg::TestDb>,
    pub script: autodev_testkit::Script,
    pub state: AppState,
    pub base: String,
    pub store: Store,
    pub admin: String,
    pub operator: String,
    pub viewer: String,
    pub http: reqwest::Client,
    pub shutdown: CancellationToken,
    /// GitHub's and GitLab's APIs as far as commands need them: who may write. Everyone may
    /// (`write` / developer), except the user `stranger` (`read` / reporter); a test mounts
    /// more answers as it needs them.
    pub forge: wiremock::MockServer,
}

/// GitHub and GitLab answering permission questions (see `TestApp::forge`).
async fn forge() -> wiremock::MockServer {
    use wiremock::matchers::{method, path_regex};
    use wiremock::{Mock, ResponseTemplate};
    let server = wiremock::MockServer::start().await;
    let github = |role: &str| {
        ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "permission": if role == "triage" { "read" } else { role },
            "role_name": role,
            "user": {"login": "someone", "type": "User"}
        }))
    };
    Mock::given(method("GET"))
        .and(path_regex(r"^/repos/[^/]+/[^/]+/collaborators/stranger/permission$"))
        .respond_with(github("read"))
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path_regex(r"^/repos/[^/]+/[^/]+/collaborators/[^/]+/permission$"))
        .respond_with(github("write"))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path_regex(r"^/api/v4/projects/[^/]+/members/all/\d+$"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"id": 1, "username": "someone", "access_level": 30})),
        )
        .mount(&server)
        .await;
    server
}

/// The app over real HTTP on port 0, on a fresh SQLite or PostgreSQL database.
pub async fn spawn_app_on(backend: &str) -> TestApp {
    // Runs' agents work in bubblewrap (the default sandbox mode).
    autodev_testkit::require_program("bwrap", "bubblewrap");
    let dir = tempfile::tempdir().unwrap();
    let script = autodev_testkit::Script::default();
    let model_server = script.serve(Duration::from_millis(5)).await;
    let model_url = format!("{}/v1", model_server.uri());
    // The mock server lives as long as the test.
    std::mem::forget(model_server);
    let (store, db) = if backend == "postgres" {
        let db = autodev_testkit::pg::TestDb::create().await;
        (Store::connect(&db.url, autodev_store::Migrations::Apply).await.unwrap(), Some(db))
    } else {
        (Store::open(&dir.path().join("autodev.db")).await.unwrap(), None)
    };
    let pepper = Pepper::new(SecretString::from("test-pepper"));
    let key = |name: &'static str, role| {
        let (store, pepper) = (store.clone(), pepper.clone());
        async move { create_key(&store, &pepper, name, role).await.unwrap().key.expose_secret().to_string() }
    };
    let (admin, operator, viewer) = (
        key("admin", AccessRole::Admin).await,
        key("op", AccessRole::Operator).await,
        key("viewer", AccessRole::Viewer).await,
    );
    let forge = forge().await;
    let forges = autodev_server::delivery::DeliveryConfig {
        github: Some(autodev_server::delivery::github::GithubConfig {
            api_url: forge.uri(),
            auth: autodev_server::delivery::github::GithubAuth::Token(SecretString::from("ghp_test")),
            labels: vec![],
        }),
        gitlab: Some(autodev_server::delivery::gitlab::GitlabConfig {
            url: forge.uri(),
            token: SecretString::from("glpat-test"),
            labels: vec![],
            trigger_token: None,
        }),
        ..Default::default()
    };
    let state = AppState {
        forges: std::sync::Arc::new(autodev_server::commanders::Forges::new(&forges)),
        delivery: std::sync::Arc::new(autodev_server::delivery::Dispatcher::new(
            store.clone(),
            dir.path(),
            &Default::default(),
        )),
        engine: autodev_engine::EngineConfig::new(dir.path()),
        public_url: None,
        base_path: String::new(),
        store: store.clone(),
        pepper,
        home: dir.path().to_path_buf(),
        providers_configured: true,
        poll: Duration::from_millis(20),
        models: std::sync::Arc::new(TestModels(model_url)),
        guard: std::sync::Arc::new(autodev_server::access::Guard::new(RATE_PER_MINUTE, Some(dir.path()))),
        webhooks: std::sync::Arc::new(autodev_server::webhooks::WebhookConfig {
            github_secret: Some(SecretString::from(GITHUB_SECRET)),
            gitlab_token: Some(SecretString::from(GITLAB_TOKEN)),
            jira_secret: Some(SecretString::from(JIRA_SECRET)),
            trigger_label: None,
        }),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    tokio::spawn(serve(listener, state.clone(), shutdown.clone()));
    TestApp {
        _dir: dir,
        _db: db,
        script,
        state,
        base,
        store,
        admin,
        operator,
        viewer,
        http: reqwest::Client::new(),
        shutdown,
        forge,
    }
}

impl TestApp {
    /// A run stored directly (as the engine would), with `n` warning events.
    pub async fn run_with_events(&self, title: &str, n: usize) -> String {
        let (run, created) = autodev_testkit::new_run(title);
        self.store.insert_run(&run, created).await.unwrap();
        for i in 0..n {
            self.store.append_event(&run.id, EventKind::Warning { message: format!("w{i}") }).await.unwrap();
        }
        run.id
    }

    pub fn get(&self, path: &str, key: Option<&str>) -> reqwest::RequestBuilder {
        let rb = self.http.get(format!("{}{path}", self.base));
        match key {
            Some(k) => rb.bearer_auth(k),
            None => rb,
        }
    }

    pub fn post(&self, path: &str, key: Option<&str>) -> reqwest::RequestBuilder {
        let rb = self.http.post(format!("{}{path}", self.base));
        match key {
            Some(k) => rb.bearer_auth(k),
            None => rb,
        }
    }
}
