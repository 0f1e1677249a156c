//! Delivery to GitHub and outgoing webhooks, against local servers that speak their wire
//! format (GitHub REST v3 paths, headers and bodies from its documentation; errors as GitHub
//! sends them).
use std::sync::Arc;
use std::time::Duration;

use autodev_domain::{EventKind, RunState};
use autodev_server::delivery::github::{GithubAuth, GithubConfig};
use autodev_server::delivery::{DeliveryConfig, Dispatcher, webhook::WebhookTarget};
use autodev_store::{NewRun, ProjectRow};
use secrecy::SecretString;
use serde_json::{Value, json};
use wiremock::matchers::{body_partial_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use super::{TestApp, both};

const REPO: &str = "octo-org/hello-world";
const TOKEN: &str = "ghp_test_token_never_logged";
const HOOK_SECRET: &str = "hook-secret";

/// A project on GitHub and a run of it started from issue #7, walked to `to` through the
/// states a worker would take it (each milestone lands in the outbox on the way).
async fn github_run(app: &TestApp, to: RunState) -> (String, String) {
    ticket_run(app, to, &format!("github:{REPO}#7")).await
}

/// The same, from any origin (`jira:PROJ-7`).
async fn ticket_run(app: &TestApp, to: RunState, origin: &str) -> (String, String) {
    let now = autodev_store::now_ms();
    let project = ProjectRow {
        id: uuid::Uuid::now_v7().to_string(),
        name: format!("gh-{}", &uuid::Uuid::now_v7().simple().to_string()[20..]),
        repository: "https://github.com/octo-org/hello-world.git".into(),
        base_branch: None,
        test_command: Some("true".into()),
        settings: json!({"github_repo": REPO}).to_string(),
        created_at: now,
        updated_at: now,
    };
    app.store.insert_project(&project).await.unwrap();
    let (run, created) = autodev_testkit::new_run("Add a greeting");
    let run = NewRun {
        repo: project.repository.clone(),
        project_id: Some(project.id.clone()),
        origin: Some(origin.to_string()),
        ..run
    };
    let branch = run.branch.clone();
    app.store.insert_run(&run, created).await.unwrap();
    let path =
        [RunState::Planning, RunState::Executing, RunState::Verifying, RunState::Delivering, RunState::Succeeded];
    for state in path {
        if state == RunState::Succeeded && to != RunState::Succeeded {
            app.store.set_run_state(&run.id, to, Some("tests_failed")).await.unwrap();
            break;
        }
        app.store.set_run_state(&run.id, state, None).await.unwrap();
    }
    std::fs::create_dir_all(app._dir.path().join("runs").join(&run.id)).unwrap();
    std::fs::write(
        app._dir.path().join("runs").join(&run.id).join("report.md"),
        "# Report\n\nAdded `greet()` and a test.\n",
    )
    .unwrap();
    (run.id, branch)
}

fn config(github: &MockServer, hook: &MockServer) -> DeliveryConfig {
    DeliveryConfig {
        public_url: Some("https://autodev.example.com".into()),
        github: Some(GithubConfig {
            api_url: github.uri(),
            auth: GithubAuth::Token(SecretString::from(TOKEN)),
            labels: vec!["autodev".into()],
        }),
        jira: None,
        gitlab: None,
        confluence: None,
        slack_webhook_url: None,
        slack_bot: None,
        slack_api_url: None,
        webhooks: vec![WebhookTarget::new(
            "ci",
            SecretString::from(format!("{}/hook", hook.uri())),
            Some(SecretString::from(HOOK_SECRET)),
            None,
        )],
        git_credentials: Default::default(),
        retry_base: Some(Duration::from_millis(50)),
    }
}

pub fn json_response(status: u16, body: Value) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(body).insert_header("content-type", "application/json; charset=utf-8")
}

/// GitHub's answers for a run that has no pull request yet.
async fn github_without_pull_request(github: &MockServer, branch: &str) {
    Mock::given(method("GET"))
        .and(path(format!("/repos/{REPO}/pulls")))
        .and(query_param("head", format!("octo-org:{branch}")))
        .and(query_param("state", "all"))
        .respond_with(json_response(200, json!([])))
        .mount(github)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/repos/{REPO}/issues/7/comments")))
        .respond_with(json_response(
            200,
            json!([{"id": 1, "body": "Looks like a bug to me", "user": {"login": "octocat"}}]),
        ))
        .mount(github)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("/repos/{REPO}/issues/7/comments")))
        .respond_with(json_response(201, json!({"id": 1001, "body": "…", "html_url": format!("https://github.com/{REPO}/issues/7#issuecomment-1001")})))
        .mount(github)
        .await;
    Mock::given(method("PATCH"))
        .and(path(format!("/repos/{REPO}/issues/comments/1001")))
        .respond_with(json_response(200, json!({"id": 1001, "body": "…"})))
        .mount(github)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("/repos/{REPO}/issues/42/labels")))
        .respond_with(json_response(200, json!([{"id": 208045946, "name": "autodev"}])))
        .mount(github)
        .await;
}

pub fn received<'a>(requests: &'a [Request], verb: &str, p: &str) -> Vec<&'a Request> {
    requests.iter().filter(|r| r.method.as_str() == verb && r.url.path() == p).collect()
}

both! {
async fn a_succeeded_run_opens_one_pull_request_comments_on_its_issue_and_calls_the_webhook(app) {
    let github = MockServer::start().await;
    let hook = MockServer::start().await;
    let (run_id, branch) = github_run(&app, RunState::Succeeded).await;
    github_without_pull_request(&github, &branch).await;
    // The first attempt to open it meets a 502; the retry opens it.
    Mock::given(method("POST"))
        .and(path(format!("/repos/{REPO}/pulls")))
        .respond_with(json_response(502, json!({"message": "Server Error"})))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&github)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("/repos/{REPO}/pulls")))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .and(body_partial_json(json!({"head": branch, "base": "main", "draft": true})))
        .respond_with(json_response(201, json!({"number": 42, "html_url": format!("https://github.com/{REPO}/pull/42"), "state": "open"})))
        .with_priority(2)
        .mount(&github)
        .await;
    // The receiver is busy once (429 with Retry-After), then takes deliveries.
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "1"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&hook)
        .await;
    Mock::given(method("POST")).and(path("/hook")).respond_with(ResponseTemplate::new(204)).with_priority(2).mount(&hook).await;

    let dispatcher = Dispatcher::new(app.store.clone(), app._dir.path(), &config(&github, &hook));
    let rows = dispatcher.deliver_run(&run_id).await.unwrap();
    let topics: Vec<(&str, &str)> = rows.iter().map(|r| (r.topic.as_str(), r.state.as_str())).collect();
    assert_eq!(
        topics,
        vec![("run.plan_ready", "done"), ("run.succeeded", "done"), ("run.pr_opened", "done")],
        "{rows:#?}"
    );
    let requests = github.received_requests().await.unwrap();
    // One pull request (two POSTs: the 502 and the one that opened it), with the issue it closes.
    let opened = received(&requests, "POST", &format!("/repos/{REPO}/pulls"));
    assert_eq!(opened.len(), 2);
    let body: Value = serde_json::from_slice(&opened[1].body).unwrap();
    let text = body["body"].as_str().unwrap();
    assert!(text.contains("Closes #7"), "{text}");
    assert!(text.contains("Added `greet()` and a test."), "{text}");
    assert!(text.contains(&format!("https://autodev.example.com/api/v1/runs/{run_id}")), "{text}");
    assert!(opened[1].headers.get("x-github-api-version").is_some());
    // One comment on the issue, posted at plan time and edited since.
    assert_eq!(received(&requests, "POST", &format!("/repos/{REPO}/issues/7/comments")).len(), 1);
    let edits = received(&requests, "PATCH", &format!("/repos/{REPO}/issues/comments/1001"));
    let last: Value = serde_json::from_slice(&edits.last().unwrap().body).unwrap();
    assert!(last["body"].as_str().unwrap().contains(&format!("https://github.com/{REPO}/pull/42")), "{last}");
    assert_eq!(received(&requests, "POST", &format!("/repos/{REPO}/issues/42/labels")).len(), 1);
    // The webhook: every milestone, signed, the same delivery id on the retry.
    let hooks = hook.received_requests().await.unwrap();
    let mut events = Vec::new();
    for r in &hooks {
        let signature = r.headers.get("x-autodev-signature-256").unwrap().to_str().unwrap();
        assert_eq!(signature, autodev_server::delivery::webhook::signature(HOOK_SECRET, &r.body));
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(r.headers.get("x-autodev-event").unwrap().to_str().unwrap(), body["event"]);
        assert_eq!(r.headers.get("x-autodev-delivery").unwrap().to_str().unwrap(), body["delivery"]);
        assert_eq!(body["run"]["id"], run_id.as_str());
        events.push((body["event"].as_str().unwrap().to_string(), body["delivery"].as_str().unwrap().to_string()));
    }
    assert_eq!(hooks.len(), 4, "{events:?}");
    assert_eq!(events[0], events[1], "a retry keeps its delivery id");
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(names, vec!["run.plan_ready", "run.plan_ready", "run.succeeded", "run.pr_opened"]);
    // The run: still succeeded, its pull request linked, the attempts recorded; no token anywhere.
    assert_eq!(app.store.run_state(&run_id).await.unwrap(), RunState::Succeeded);
    let r = app.get(&format!("/api/v1/runs/{run_id}"), Some(&app.viewer)).send().await.unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["pull_request"], format!("https://github.com/{REPO}/pull/42"));
    assert_eq!(v["deliveries"].as_array().unwrap().len(), 3);
    // The report says how delivery went.
    let report = app.get(&format!("/api/v1/runs/{run_id}/artifacts/report"), Some(&app.viewer)).send().await.unwrap();
    let report = report.text().await.unwrap();
    assert!(report.contains("## Delivery") && report.contains(&format!("github.pull_request: https://github.com/{REPO}/pull/42")), "{report}");
    assert!(report.contains("| run.succeeded | webhook:ci | ok"), "{report}");
    let events = app.store.events(&run_id, 0).await.unwrap();
    let log = serde_json::to_string(&events).unwrap();
    assert!(log.contains("delivery_attempted"));
    assert!(!log.contains(TOKEN) && !log.contains(HOOK_SECRET));
}

async fn a_pull_request_opened_before_a_crash_is_updated_not_opened_again(app) {
    let github = MockServer::start().await;
    let hook = MockServer::start().await;
    Mock::given(method("POST")).and(path("/hook")).respond_with(ResponseTemplate::new(200)).mount(&hook).await;
    let (run_id, branch) = github_run(&app, RunState::Succeeded).await;
    // The pull request exists (a process opened it and died before recording it).
    Mock::given(method("GET"))
        .and(path(format!("/repos/{REPO}/pulls")))
        .and(query_param("head", format!("octo-org:{branch}")))
        .respond_with(json_response(200, json!([{"number": 42, "html_url": format!("https://github.com/{REPO}/pull/42"), "state": "open"}])))
        .mount(&github)
        .await;
    Mock::given(method("PATCH"))
        .and(path(format!("/repos/{REPO}/pulls/42")))
        .respond_with(json_response(200, json!({"number": 42, "html_url": format!("https://github.com/{REPO}/pull/42")})))
        .mount(&github)
        .await;
    // So does the comment: found by its marker, edited.
    Mock::given(method("GET"))
        .and(path(format!("/repos/{REPO}/issues/7/comments")))
        .respond_with(json_response(200, json!([{"id": 555, "body": format!("<!-- autodev-run:{run_id} -->\nold")}])))
        .mount(&github)
        .await;
    Mock::given(method("PATCH"))
        .and(path(format!("/repos/{REPO}/issues/comments/555")))
        .respond_with(json_response(200, json!({"id": 555})))
        .mount(&github)
        .await;
    let dispatcher = Dispatcher::new(app.store.clone(), app._dir.path(), &config(&github, &hook));
    let rows = dispatcher.deliver_run(&run_id).await.unwrap();
    assert!(rows.iter().all(|r| r.state == "done"), "{rows:#?}");
    let requests = github.received_requests().await.unwrap();
    assert_eq!(received(&requests, "POST", &format!("/repos/{REPO}/pulls")).len(), 0, "a second pull request");
    assert_eq!(received(&requests, "POST", &format!("/repos/{REPO}/issues/7/comments")).len(), 0, "a second comment");
    assert!(!received(&requests, "PATCH", &format!("/repos/{REPO}/pulls/42")).is_empty());
    // Not opened now, so no `run.pr_opened` milestone.
    assert!(rows.iter().all(|r| r.topic != "run.pr_opened"));
}

async fn a_refused_delivery_never_fails_the_run_and_is_retried_on_request(app) {
    let github = MockServer::start().await;
    let hook = MockServer::start().await;
    Mock::given(method("POST")).and(path("/hook")).respond_with(ResponseTemplate::new(200)).mount(&hook).await;
    let (run_id, branch) = github_run(&app, RunState::Succeeded).await;
    // A token without access: GitHub's 401 body (made to echo the token, as a proxy might).
    Mock::given(method("GET"))
        .respond_with(json_response(401, json!({"message": format!("Bad credentials ({TOKEN})"), "documentation_url": "https://docs.github.com/rest"})))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&github)
        .await;
    let dispatcher = Arc::new(Dispatcher::new(app.store.clone(), app._dir.path(), &config(&github, &hook)));
    let rows = dispatcher.deliver_run(&run_id).await.unwrap();
    let states: Vec<&str> = rows.iter().map(|r| r.state.as_str()).collect();
    assert_eq!(states, vec!["failed", "failed"], "{rows:#?}");
    // A permanent refusal is not retried in place: one call per milestone.
    assert_eq!(github.received_requests().await.unwrap().len(), 2);
    assert_eq!(app.store.run_state(&run_id).await.unwrap(), RunState::Succeeded);
    let events = app.store.events(&run_id, 0).await.unwrap();
    let failed: Vec<&EventKind> = events.iter().map(|e| &e.kind).filter(|k| matches!(k, EventKind::DeliveryFailed { .. })).collect();
    assert_eq!(failed.len(), 2);
    assert!(matches!(failed[0], EventKind::DeliveryFailed { status: Some(401), message, .. } if message.contains("Bad credentials ([redacted])")));
    let recorded = format!("{}{:?}", serde_json::to_string(&events).unwrap(), app.store.outbox_for_run(&run_id).await.unwrap());
    assert!(!recorded.contains(TOKEN), "the token was recorded");
    // The webhook got them the first time and is not called again on the retry.
    assert_eq!(hook.received_requests().await.unwrap().len(), 2);

    // The token is fixed; an operator retries through the API.
    github_without_pull_request(&github, &branch).await;
    Mock::given(method("POST"))
        .and(path(format!("/repos/{REPO}/pulls")))
        .respond_with(json_response(201, json!({"number": 42, "html_url": format!("https://github.com/{REPO}/pull/42")})))
        .mount(&github)
        .await;
    let state = autodev_server::AppState { delivery: dispatcher.clone(), ..app.state.clone() };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(autodev_server::serve(listener, state, app.shutdown.clone()));
    let viewer = app.http.post(format!("{base}/api/v1/runs/{run_id}/deliver")).bearer_auth(&app.viewer).send().await.unwrap();
    assert_eq!(viewer.status().as_u16(), 403);
    let r = app.http.post(format!("{base}/api/v1/runs/{run_id}/deliver")).bearer_auth(&app.operator).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["retrying"], 2);
    let mut done = false;
    for _ in 0..100 {
        let rows = app.store.outbox_for_run(&run_id).await.unwrap();
        if rows.iter().filter(|r| r.topic != "run.pr_opened").all(|r| r.state == "done") {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(done, "{:#?}", app.store.outbox_for_run(&run_id).await.unwrap());
    assert_eq!(app.store.run_links(&run_id).await.unwrap(), vec![
        ("github.comment".to_string(), "1001".to_string()),
        ("github.pull_request".to_string(), format!("https://github.com/{REPO}/pull/42")),
    ]);
}

async fn a_failed_run_is_told_to_its_issue_and_opens_no_pull_request(app) {
    let github = MockServer::start().await;
    let hook = MockServer::start().await;
    Mock::given(method("POST")).and(path("/hook")).respond_with(ResponseTemplate::new(200)).mount(&hook).await;
    let (run_id, branch) = github_run(&app, RunState::Failed).await;
    github_without_pull_request(&github, &branch).await;
    let dispatcher = Dispatcher::new(app.store.clone(), app._dir.path(), &config(&github, &hook));
    let rows = dispatcher.deliver_run(&run_id).await.unwrap();
    assert!(rows.iter().all(|r| r.state == "done"), "{rows:#?}");
    let requests = github.received_requests().await.unwrap();
    assert!(received(&requests, "POST", &format!("/repos/{REPO}/pulls")).is_empty());
    let edits = received(&requests, "PATCH", &format!("/repos/{REPO}/issues/comments/1001"));
    let last: Value = serde_json::from_slice(&edits.last().unwrap().body).unwrap();
    assert!(last["body"].as_str().unwrap().contains("failed: tests_failed"), "{last}");
}

async fn a_run_whose_tests_still_fail_opens_a_draft_pull_request_when_its_branch_was_pushed(app) {
    let github = MockServer::start().await;
    let hook = MockServer::start().await;
    Mock::given(method("POST")).and(path("/hook")).respond_with(ResponseTemplate::new(200)).mount(&hook).await;
    let (run_id, branch) = github_run(&app, RunState::Failed).await;
    // The engine pushed the failing branch for review and recorded where.
    app.store.set_run_link(&run_id, "git.branch", &branch).await.unwrap();
    github_without_pull_request(&github, &branch).await;
    Mock::given(method("POST"))
        .and(path(format!("/repos/{REPO}/pulls")))
        .and(body_partial_json(json!({"head": branch, "draft": true})))
        .respond_with(json_response(201, json!({"number": 42, "html_url": format!("https://github.com/{REPO}/pull/42")})))
        .mount(&github)
        .await;
    let dispatcher = Dispatcher::new(app.store.clone(), app._dir.path(), &config(&github, &hook));
    let rows = dispatcher.deliver_run(&run_id).await.unwrap();
    assert!(rows.iter().all(|r| r.state == "done"), "{rows:#?}");
    let requests = github.received_requests().await.unwrap();
    assert_eq!(received(&requests, "POST", &format!("/repos/{REPO}/pulls")).len(), 1);
    let edits = received(&requests, "PATCH", &format!("/repos/{REPO}/issues/comments/1001"));
    let last: Value = serde_json::from_slice(&edits.last().unwrap().body).unwrap();
    assert!(last["body"].as_str().unwrap().contains("draft pull request"), "{last}");
    assert_eq!(app.store.run_state(&run_id).await.unwrap(), RunState::Failed);
}
}

both! {
async fn a_jira_ticket_gets_one_comment_per_outcome_and_its_transition(app) {
    use autodev_server::delivery::jira::{JiraAuth, JiraConfig};
    let jira = MockServer::start().await;
    let (run_id, _) = ticket_run(&app, RunState::Succeeded, "jira:PROJ-7").await;
    Mock::given(method("GET"))
        .and(path("/rest/api/3/issue/PROJ-7/comment"))
        .respond_with(json_response(200, json!({"startAt": 0, "maxResults": 100, "total": 0, "comments": []})))
        .mount(&jira)
        .await;
    Mock::given(method("POST"))
        .and(path("/rest/api/3/issue/PROJ-7/comment"))
        // Basic auth of the account's email and API token.
        .and(header("authorization", "Basic ZGV2QGV4YW1wbGUuY29tOmppcmEtdG9rZW4="))
        .respond_with(json_response(201, json!({"id": "10000", "self": "https://example.atlassian.net/rest/api/3/issue/10010/comment/10000"})))
        .mount(&jira)
        .await;
    Mock::given(method("GET"))
        .and(path("/rest/api/3/issue/PROJ-7/transitions"))
        .respond_with(json_response(200, json!({"expand": "transitions", "transitions": [
            {"id": "11", "name": "To Do", "to": {"name": "To Do"}},
            {"id": "21", "name": "In Review", "to": {"name": "In Review"}}]})))
        .mount(&jira)
        .await;
    Mock::given(method("POST"))
        .and(path("/rest/api/3/issue/PROJ-7/transitions"))
        .and(body_partial_json(json!({"transition": {"id": "21"}})))
        .respond_with(ResponseTemplate::new(204))
        .mount(&jira)
        .await;
    let config = DeliveryConfig {
        jira: Some(JiraConfig {
            url: jira.uri(),
            auth: JiraAuth::Cloud { email: "dev@example.com".into(), token: SecretString::from("jira-token") },
            transitions: [("run.succeeded".to_string(), "In Review".to_string())].into(),
        }),
        ..DeliveryConfig::default()
    };
    let dispatcher = Dispatcher::new(app.store.clone(), app._dir.path(), &config);
    let rows = dispatcher.deliver_run(&run_id).await.unwrap();
    assert!(rows.iter().all(|r| r.state == "done"), "{rows:#?}");
    let requests = jira.received_requests().await.unwrap();
    let posted = received(&requests, "POST", "/rest/api/3/issue/PROJ-7/comment");
    assert_eq!(posted.len(), 1, "plan_ready is not an outcome; succeeded is");
    let body: Value = serde_json::from_slice(&posted[0].body).unwrap();
    assert_eq!(body["body"]["type"], "doc", "Cloud takes the Atlassian Document Format");
    assert!(body.to_string().contains("succeeded"), "{body}");
    assert_eq!(received(&requests, "POST", "/rest/api/3/issue/PROJ-7/transitions").len(), 1);
    // Tried again (an operator's `deliver`): the comment is not posted twice.
    app.store.retry_outbox(&run_id).await.unwrap();
    forget_results(&app, &run_id).await;
    dispatcher.deliver_run(&run_id).await.unwrap();
    let requests = jira.received_requests().await.unwrap();
    assert_eq!(received(&requests, "POST", "/rest/api/3/issue/PROJ-7/comment").len(), 1);
}
}

/// Makes a run's delivered milestones due again with no target marked done, as after a
/// crash that lost the results but not what the vendor did.
async fn forget_results(app: &TestApp, run_id: &str) {
    for row in app.store.outbox_for_run(run_id).await.unwrap() {
        app.store.finish_outbox(&row.id, "test", "pending", 0, 0, "{}").await.unwrap();
    }
}

both! {
async fn a_slack_bot_posts_one_message_per_run_and_replies_in_its_thread(app) {
    let slack = MockServer::start().await;
    let (run_id, _) = github_run(&app, RunState::Succeeded).await;
    // Slack's Web API: errors are HTTP 200 with "ok": false; the first post meets a rate limit.
    Mock::given(method("POST"))
        .and(path("/chat.postMessage"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "1"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&slack)
        .await;
    Mock::given(method("POST"))
        .and(path("/chat.postMessage"))
        .and(header("authorization", "Bearer xoxb-test"))
        .respond_with(json_response(200, json!({"ok": true, "channel": "C0123456789", "ts": "1503435956.000247", "message": {"text": "…"}})))
        .with_priority(2)
        .mount(&slack)
        .await;
    Mock::given(method("POST"))
        .and(path("/chat.update"))
        .respond_with(json_response(200, json!({"ok": true, "channel": "C0123456789", "ts": "1503435956.000247", "text": "…"})))
        .mount(&slack)
        .await;
    let config = DeliveryConfig {
        slack_bot: Some((SecretString::from("xoxb-test"), "C0123456789".into())),
        slack_api_url: Some(slack.uri()),
        ..DeliveryConfig::default()
    };
    let dispatcher = Dispatcher::new(app.store.clone(), app._dir.path(), &config);
    let rows = dispatcher.deliver_run(&run_id).await.unwrap();
    assert!(rows.iter().all(|r| r.state == "done"), "{rows:#?}");
    let requests = slack.received_requests().await.unwrap();
    let posts = received(&requests, "POST", "/chat.postMessage");
    // The 429, the run's message, then a reply in its thread for the second milestone.
    assert_eq!(posts.len(), 3);
    let reply: Value = serde_json::from_slice(&posts[2].body).unwrap();
    assert_eq!(reply["thread_ts"], "1503435956.000247");
    assert_eq!(received(&requests, "POST", "/chat.update").len(), 1);

    // A channel the bot is not in: Slack's 200 with ok=false is a failure, not retried.
    let (other, _) = github_run(&app, RunState::Failed).await;
    let broken = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(json_response(200, json!({"ok": false, "error": "channel_not_found"})))
        .mount(&broken)
        .await;
    let config = DeliveryConfig { slack_api_url: Some(broken.uri()), ..config };
    let dispatcher = Dispatcher::new(app.store.clone(), app._dir.path(), &config);
    let rows = dispatcher.deliver_run(&other).await.unwrap();
    assert!(rows.iter().all(|r| r.state == "failed"), "{rows:#?}");
    assert!(rows[0].results.contains("channel_not_found"));
    assert_eq!(app.store.run_state(&other).await.unwrap(), RunState::Failed);
}
}

both! {
async fn a_gitlab_run_opens_one_merge_request_and_keeps_one_issue_note(app) {
    let gitlab = MockServer::start().await;
    let now = autodev_store::now_ms();
    let (run_id, branch) = ticket_run(&app, RunState::Succeeded, "gitlab:gitlabhq/gitlab-test#3").await;
    // The run's project is on GitLab (settings gitlab_project).
    let run = app.store.get_run(&run_id).await.unwrap();
    let mut project = app.store.find_project(run.project_id.as_deref().unwrap()).await.unwrap();
    project.settings = json!({"gitlab_project": "gitlabhq/gitlab-test"}).to_string();
    project.updated_at = now;
    app.store.update_project(&project).await.unwrap();
    let base = "/api/v4/projects/gitlabhq%2Fgitlab-test";
    Mock::given(method("GET"))
        .and(path(format!("{base}/merge_requests")))
        .and(query_param("source_branch", branch.as_str()))
        .respond_with(json_response(200, json!([])))
        .mount(&gitlab)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("{base}/merge_requests")))
        .and(header("private-token", "glpat-test"))
        .and(body_partial_json(json!({"source_branch": branch, "target_branch": "main", "labels": "autodev"})))
        .respond_with(json_response(201, json!({"id": 1, "iid": 12, "web_url": "https://gitlab.example.com/gitlabhq/gitlab-test/-/merge_requests/12"})))
        .mount(&gitlab)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{base}/issues/3/notes")))
        .respond_with(json_response(200, json!([])))
        .mount(&gitlab)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("{base}/issues/3/notes")))
        .respond_with(json_response(201, json!({"id": 302, "body": "…", "noteable_type": "Issue"})))
        .mount(&gitlab)
        .await;
    Mock::given(method("PUT"))
        .and(path(format!("{base}/issues/3/notes/302")))
        .respond_with(json_response(200, json!({"id": 302})))
        .mount(&gitlab)
        .await;
    let config = DeliveryConfig {
        gitlab: Some(autodev_server::delivery::gitlab::GitlabConfig {
            url: gitlab.uri(),
            token: SecretString::from("glpat-test"),
            labels: vec!["autodev".into()],
            trigger_token: None,
        }),
        ..DeliveryConfig::default()
    };
    let dispatcher = Dispatcher::new(app.store.clone(), app._dir.path(), &config);
    let rows = dispatcher.deliver_run(&run_id).await.unwrap();
    assert!(rows.iter().all(|r| r.state == "done"), "{rows:#?}");
    let requests = gitlab.received_requests().await.unwrap();
    let opened = received(&requests, "POST", &format!("{base}/merge_requests"));
    assert_eq!(opened.len(), 1);
    let body: Value = serde_json::from_slice(&opened[0].body).unwrap();
    assert!(body["title"].as_str().unwrap().starts_with("Draft: "), "tests did not pass: {body}");
    assert!(body["description"].as_str().unwrap().contains("Closes #3"));
    assert_eq!(received(&requests, "POST", &format!("{base}/issues/3/notes")).len(), 1);
    let edits = received(&requests, "PUT", &format!("{base}/issues/3/notes/302"));
    let last: Value = serde_json::from_slice(&edits.last().unwrap().body).unwrap();
    assert!(last["body"].as_str().unwrap().contains("merge_requests/12"), "{last}");
}
}

both! {
async fn a_run_gets_one_confluence_page_updated_on_redelivery(app) {
    use autodev_server::delivery::confluence::ConfluenceConfig;
    let wiki = MockServer::start().await;
    let (run_id, _) = github_run(&app, RunState::Succeeded).await;
    Mock::given(method("GET"))
        .and(path("/wiki/rest/api/content"))
        .and(query_param("spaceKey", "ENG"))
        .respond_with(json_response(200, json!({"results": [], "start": 0, "limit": 25, "size": 0})))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&wiki)
        .await;
    Mock::given(method("GET"))
        .and(path("/wiki/rest/api/content"))
        .respond_with(json_response(200, json!({"results": [{"id": "393217", "type": "page", "title": "…", "version": {"number": 1}}], "size": 1})))
        .with_priority(2)
        .mount(&wiki)
        .await;
    Mock::given(method("POST"))
        .and(path("/wiki/rest/api/content"))
        .and(body_partial_json(json!({"type": "page", "space": {"key": "ENG"}, "ancestors": [{"id": "98305"}]})))
        .respond_with(json_response(200, json!({"id": "393217", "type": "page", "version": {"number": 1}, "_links": {"webui": "/spaces/ENG/pages/393217"}})))
        .mount(&wiki)
        .await;
    Mock::given(method("PUT"))
        .and(path("/wiki/rest/api/content/393217"))
        .and(body_partial_json(json!({"version": {"number": 2}})))
        .respond_with(json_response(200, json!({"id": "393217", "version": {"number": 2}, "_links": {"webui": "/spaces/ENG/pages/393217"}})))
        .mount(&wiki)
        .await;
    let config = DeliveryConfig {
        confluence: Some(ConfluenceConfig {
            url: wiki.uri(),
            email: "dev@example.com".into(),
            token: SecretString::from("wiki-token"),
            space: "ENG".into(),
            parent_id: Some("98305".into()),
        }),
        ..DeliveryConfig::default()
    };
    let dispatcher = Dispatcher::new(app.store.clone(), app._dir.path(), &config);
    assert!(dispatcher.deliver_run(&run_id).await.unwrap().iter().all(|r| r.state == "done"));
    let requests = wiki.received_requests().await.unwrap();
    let created = received(&requests, "POST", "/wiki/rest/api/content");
    assert_eq!(created.len(), 1);
    let body: Value = serde_json::from_slice(&created[0].body).unwrap();
    assert!(body["body"]["storage"]["value"].as_str().unwrap().contains("<h1>Report</h1>"), "{body}");
    // Delivered again: the page gets a new version, no second page.
    forget_results(&app, &run_id).await;
    dispatcher.deliver_run(&run_id).await.unwrap();
    let requests = wiki.received_requests().await.unwrap();
    assert_eq!(received(&requests, "POST", "/wiki/rest/api/content").len(), 1);
    assert_eq!(received(&requests, "PUT", "/wiki/rest/api/content/393217").len(), 1);
    let links = app.store.run_links(&run_id).await.unwrap();
    assert!(links.iter().any(|(n, v)| n == "confluence.page" && v.ends_with("/wiki/spaces/ENG/pages/393217")), "{links:?}");
}
}

/// Waits for a run to end; its state.
pub async fn wait_for_end(app: &TestApp, id: &str) -> Value {
    let mut last = Value::Null;
    for _ in 0..400 {
        let r = app.get(&format!("/api/v1/runs/{id}"), Some(&app.viewer)).send().await.unwrap();
        last = r.json().await.unwrap();
        if matches!(last["state"].as_str(), Some("succeeded" | "failed" | "cancelled")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    last
}

both! {
async fn review_feedback_adds_commits_to_the_same_branch_and_pull_request(app) {
    use autodev_testkit::{finish, make_repo, write};
    // A project on "GitHub" (the fixture's Codertocat/Hello-World), cloned from a bare repository.
    let work = make_repo(app._dir.path());
    let bare = app._dir.path().join("origin.git");
    autodev_testkit::git(app._dir.path(), &["clone", "--quiet", "--bare", work.to_str().unwrap(), bare.to_str().unwrap()]);
    let project = json!({"name": "hello", "repository": format!("file://{}", bare.display()), "test_command": "sh check.sh",
        "settings": {"github_repo": "Codertocat/Hello-World"}});
    let r = app.post("/api/v1/projects", Some(&app.admin)).json(&project).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 201);
    app.script
        .plan(json!([{"id": "t1", "title": "Add greeting", "description": "", "depends_on": [], "acceptance": []}]))
        .on("task:t1", 0, vec![write("greeting.txt", "hello\n"), finish("ok")]);
    let workers = tokio::spawn(autodev_server::workers::run_workers(app.state.clone(), 1, app.shutdown.clone()));
    let r = app.post("/api/v1/runs", Some(&app.operator)).json(&json!({"project": "hello", "spec": "# Greet\n\nWrite hello into greeting.txt."})).send().await.unwrap();
    let first: Value = r.json().await.unwrap();
    let first_id = first["id"].as_str().unwrap().to_string();
    let done = wait_for_end(&app, &first_id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let branch = done["branch"].as_str().unwrap().to_string();
    let first_tip = autodev_testkit::git(&bare, &["rev-parse", &branch]);

    // Delivered: the pull request is the fixture's #2.
    let github = MockServer::start().await;
    let pr_url = "https://github.com/Codertocat/Hello-World/pull/2";
    Mock::given(method("GET"))
        .and(path("/repos/Codertocat/Hello-World/pulls"))
        .and(query_param("head", format!("Codertocat:{branch}")))
        .respond_with(json_response(200, json!([])))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&github)
        .await;
    Mock::given(method("GET"))
        .and(path("/repos/Codertocat/Hello-World/pulls"))
        .and(query_param("head", format!("Codertocat:{branch}")))
        .respond_with(json_response(200, json!([{"number": 2, "html_url": pr_url}])))
        .with_priority(2)
        .mount(&github)
        .await;
    Mock::given(method("POST"))
        .and(path("/repos/Codertocat/Hello-World/pulls"))
        .respond_with(json_response(201, json!({"number": 2, "html_url": pr_url})))
        .mount(&github)
        .await;
    Mock::given(method("GET"))
        .and(path("/repos/Codertocat/Hello-World/issues/2/comments"))
        .respond_with(json_response(200, json!([])))
        .mount(&github)
        .await;
    Mock::given(method("POST"))
        .and(path("/repos/Codertocat/Hello-World/issues/2/comments"))
        .respond_with(json_response(201, json!({"id": 77})))
        .mount(&github)
        .await;
    Mock::given(method("PATCH"))
        .and(path("/repos/Codertocat/Hello-World/issues/comments/77"))
        .respond_with(json_response(200, json!({"id": 77})))
        .mount(&github)
        .await;
    let config = DeliveryConfig {
        github: Some(GithubConfig { api_url: github.uri(), auth: GithubAuth::Token(SecretString::from(TOKEN)), labels: vec![] }),
        ..DeliveryConfig::default()
    };
    let dispatcher = Dispatcher::new(app.store.clone(), app._dir.path(), &config);
    dispatcher.deliver_run(&first_id).await.unwrap();
    let links = app.store.run_links(&first_id).await.unwrap();
    assert!(links.contains(&("github.pull_request".to_string(), pr_url.to_string())), "{links:?}");
    // The commit it pushed, by which CI results are known to be Autodev's.
    assert!(links.contains(&("git.head".to_string(), first_tip.clone())), "{links:?}");

    // A review comment on that pull request (octokit's example, its body made a command).
    let mut payload: Value = serde_json::from_str(&std::fs::read_to_string(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/github/pull_request_review_comment.created.json"),
    ).unwrap()).unwrap();
    payload["comment"]["body"] = json!("/autodev Say it with an emoji too, in emoji.txt");
    let hook = |delivery: &'static str| {
        let payload = payload.clone();
        let app = &app;
        async move { crate::suite::webhooks::signed_github(app, "pull_request_review_comment", delivery, &payload).await }
    };
    app.script
        .plan(json!([{"id": "t2", "title": "Add emoji", "description": "", "depends_on": [], "acceptance": []}]))
        .on("task:t2", 0, vec![write("emoji.txt", "👋\n"), finish("ok")]);
    // The same review comment from someone GitHub says may only read: nothing starts.
    let mut strange = payload.clone();
    strange["comment"]["user"]["login"] = json!("stranger");
    strange["comment"]["author_association"] = json!("NONE");
    let (status, v) =
        crate::suite::webhooks::signed_github(&app, "pull_request_review_comment", "review-0", &strange).await;
    assert_eq!((status, v["status"].as_str()), (200, Some("ignored")), "{v}");
    assert!(v["reason"].as_str().unwrap().contains("stranger may not command Autodev"), "{v}");
    let (status, created) = hook("review-1").await;
    assert_eq!(status, 201, "{created}");
    let follow_id = created["run"]["id"].as_str().unwrap().to_string();
    // One active run per pull request.
    let (_, v) = hook("review-2").await;
    assert_eq!(v["status"], "ignored", "{v}");
    let done = wait_for_end(&app, &follow_id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    // Its spec: the original spec and the feedback with file, line and hunk.
    let run = app.store.get_run(&follow_id).await.unwrap();
    assert!(run.spec.contains("Write hello into greeting.txt.") && run.spec.contains("Say it with an emoji too"), "{}", run.spec);
    assert!(run.spec.contains("README.md, line 265") && run.spec.contains("@@ -1 +1 @@"), "{}", run.spec);
    // Its commits are on the pull request's branch, on top of the first run's (no rewrite).
    let tip = autodev_testkit::git(&bare, &["rev-parse", &branch]);
    assert_ne!(tip, first_tip);
    autodev_testkit::git(&bare, &["merge-base", "--is-ancestor", &first_tip, &tip]);
    assert_eq!(autodev_testkit::git(&bare, &["show", &format!("{branch}:emoji.txt")]), "👋");
    assert_eq!(autodev_testkit::git(&bare, &["show", &format!("{branch}:greeting.txt")]), "hello");
    // Delivered: the same pull request (found, not opened or rewritten), and a reply on it.
    let rows = dispatcher.deliver_run(&follow_id).await.unwrap();
    assert!(rows.iter().all(|r| r.state == "done"), "{rows:#?}");
    let requests = github.received_requests().await.unwrap();
    assert_eq!(received(&requests, "POST", "/repos/Codertocat/Hello-World/pulls").len(), 1, "a second pull request");
    assert!(received(&requests, "PATCH", "/repos/Codertocat/Hello-World/pulls/2").is_empty(), "the description was rewritten");
    let replies = received(&requests, "PATCH", "/repos/Codertocat/Hello-World/issues/comments/77");
    let last: Value = serde_json::from_slice(&replies.last().unwrap().body).unwrap();
    let text = last["body"].as_str().unwrap();
    assert!(text.contains("pushed its changes to this pull request") && text.contains("Added:"), "{text}");

    // A review: only one that requests changes starts a follow-up.
    let mut review: Value = serde_json::from_str(&std::fs::read_to_string(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/github/pull_request_review.submitted.json"),
    ).unwrap()).unwrap();
    let send_review = |review: &Value, delivery: &'static str| {
        let review = review.clone();
        let app = &app;
        async move { crate::suite::webhooks::signed_github(app, "pull_request_review", delivery, &review).await }
    };
    let (_, v) = send_review(&review, "review-3").await;
    assert_eq!(v["status"], "ignored", "the fixture's review only comments: {v}");
    review["review"]["state"] = json!("changes_requested");
    review["review"]["body"] = json!("Please add a test for the emoji.");
    // The run that opened the pull request was made under a plan gate: its follow-ups keep
    // it (a review never turns a gate off).
    for id in [&first_id, &follow_id] {
        let mut gated: Value = serde_json::from_str(&app.store.get_run(id).await.unwrap().settings).unwrap();
        gated["approval"] = json!(true);
        app.store.set_run_settings(id, &gated.to_string()).await.unwrap();
    }
    let (status, v) = send_review(&review, "review-4").await;
    assert_eq!(status, 201, "{v}");
    let third = app.store.get_run(v["run"]["id"].as_str().unwrap()).await.unwrap();
    assert!(third.spec.contains("Please add a test for the emoji."), "{}", third.spec);
    assert_eq!(third.base_branch, branch, "a follow-up starts from the pull request's branch");
    let third_settings: Value = serde_json::from_str(&third.settings).unwrap();
    assert_eq!(third_settings["approval"], json!(true), "the follow-up kept the plan gate");
    app.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), workers).await.unwrap().unwrap();
}
}

both! {
async fn a_github_app_mints_installation_tokens_once_and_acts_with_them(app) {
    let github = MockServer::start().await;
    let hook = MockServer::start().await;
    let (run_id, branch) = github_run(&app, RunState::Succeeded).await;
    // A key pair as GitHub gives an app (a .pem private key).
    let dir = app._dir.path();
    let key_path = dir.join("app.pem");
    let public_path = dir.join("app.pub.pem");
    for args in [
        vec!["genrsa", "-out", key_path.to_str().unwrap(), "2048"],
        vec!["rsa", "-in", key_path.to_str().unwrap(), "-pubout", "-out", public_path.to_str().unwrap()],
    ] {
        let out = std::process::Command::new(autodev_testkit::require_program("openssl", "openssl"))
            .args(&args)
            .output()
            .unwrap();
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let private_key = std::fs::read_to_string(&key_path).unwrap();
    let public_key = std::fs::read(&public_path).unwrap();
    Mock::given(method("GET"))
        .and(path(format!("/repos/{REPO}/installation")))
        .respond_with(json_response(200, json!({"id": 1234, "account": {"login": "octo-org"}, "app_id": 42})))
        .mount(&github)
        .await;
    Mock::given(method("POST"))
        .and(path("/app/installations/1234/access_tokens"))
        .respond_with(json_response(201, json!({"token": "ghs_16C7e42F292c6912E7710c838347Ae178B4a", "expires_at": "2099-07-11T22:14:10Z", "permissions": {"issues": "write", "contents": "write", "pull_requests": "write"}})))
        .mount(&github)
        .await;
    github_without_pull_request(&github, &branch).await;
    Mock::given(method("POST"))
        .and(path(format!("/repos/{REPO}/pulls")))
        .and(header("authorization", "Bearer ghs_16C7e42F292c6912E7710c838347Ae178B4a"))
        .respond_with(json_response(201, json!({"number": 42, "html_url": format!("https://github.com/{REPO}/pull/42")})))
        .mount(&github)
        .await;
    Mock::given(method("POST")).and(path("/hook")).respond_with(ResponseTemplate::new(200)).mount(&hook).await;
    let mut config = config(&github, &hook);
    config.github = Some(GithubConfig {
        api_url: github.uri(),
        auth: GithubAuth::App { app_id: "42".into(), private_key: SecretString::from(private_key) },
        labels: vec!["autodev".into()],
    });
    let dispatcher = Dispatcher::new(app.store.clone(), app._dir.path(), &config);
    let rows = dispatcher.deliver_run(&run_id).await.unwrap();
    assert!(rows.iter().all(|r| r.state == "done"), "{rows:#?}");
    let requests = github.received_requests().await.unwrap();
    // Minted once for the owner, then reused from the cache.
    assert_eq!(received(&requests, "POST", "/app/installations/1234/access_tokens").len(), 1);
    // The app's JWT: RS256 with the app id as issuer, at most ten minutes long.
    let lookup = received(&requests, "GET", &format!("/repos/{REPO}/installation"))[0];
    let jwt = lookup.headers.get("authorization").unwrap().to_str().unwrap().trim_start_matches("Bearer ").to_string();
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(&public_key).unwrap();
    let decoded = jsonwebtoken::decode::<Value>(&jwt, &key, &jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256)).unwrap();
    assert_eq!(decoded.claims["iss"], "42");
    assert!(decoded.claims["exp"].as_u64().unwrap() - decoded.claims["iat"].as_u64().unwrap() <= 600);
    // Every API call after minting used the installation token.
    for r in received(&requests, "POST", &format!("/repos/{REPO}/pulls")) {
        assert_eq!(r.headers.get("authorization").unwrap(), "Bearer ghs_16C7e42F292c6912E7710c838347Ae178B4a");
    }
    // And it is the workers' git credential for that owner's repositories.
    let prefix = format!("{}/octo-org/", github.uri());
    let repo = autodev_testkit::make_repo(&dir.join("cred"));
    let header = autodev_workspace::Git::new(&repo)
        .with_credentials(&config.git_credentials)
        .run(&["config", "--get", &format!("http.{prefix}.extraheader")])
        .await
        .unwrap();
    assert!(header.starts_with("Authorization: Basic "), "{header}");
}
}

both! {
async fn slack_incoming_webhooks_and_jira_data_center_speak_their_formats(app) {
    use autodev_server::delivery::jira::{JiraAuth, JiraConfig};
    let slack = MockServer::start().await;
    let jira = MockServer::start().await;
    let (run_id, _) = ticket_run(&app, RunState::Failed, "jira:OPS-12").await;
    // Slack answers an incoming webhook with plain `ok`; an archived channel is a 410.
    Mock::given(method("POST"))
        .and(path("/services/T000/B000/XXXX"))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .mount(&slack)
        .await;
    // Data Center: REST v2, a personal access token, comments as text.
    Mock::given(method("GET"))
        .and(path("/rest/api/2/issue/OPS-12/comment"))
        .and(header("authorization", "Bearer dc-pat"))
        .respond_with(json_response(200, json!({"startAt": 0, "maxResults": 100, "total": 0, "comments": []})))
        .mount(&jira)
        .await;
    Mock::given(method("POST"))
        .and(path("/rest/api/2/issue/OPS-12/comment"))
        .and(header("authorization", "Bearer dc-pat"))
        .respond_with(json_response(201, json!({"id": "10100", "body": "…"})))
        .mount(&jira)
        .await;
    let config = DeliveryConfig {
        slack_webhook_url: Some(SecretString::from(format!("{}/services/T000/B000/XXXX", slack.uri()))),
        jira: Some(JiraConfig {
            url: jira.uri(),
            auth: JiraAuth::DataCenter { pat: SecretString::from("dc-pat") },
            transitions: Default::default(),
        }),
        ..DeliveryConfig::default()
    };
    let dispatcher = Dispatcher::new(app.store.clone(), app._dir.path(), &config);
    let rows = dispatcher.deliver_run(&run_id).await.unwrap();
    assert!(rows.iter().all(|r| r.state == "done"), "{rows:#?}");
    let messages = slack.received_requests().await.unwrap();
    let texts: Vec<String> = messages
        .iter()
        .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap()["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(texts.len(), 2, "plan ready and failed: {texts:?}");
    assert!(texts[1].contains("failed") && texts[1].contains("tests_failed"), "{texts:?}");
    assert!(texts[1].contains(&format!("/api/v1/runs/{run_id}|details>")), "{texts:?}");
    let requests = jira.received_requests().await.unwrap();
    let posted = received(&requests, "POST", "/rest/api/2/issue/OPS-12/comment");
    assert_eq!(posted.len(), 1);
    let body: Value = serde_json::from_slice(&posted[0].body).unwrap();
    assert!(body["body"].as_str().unwrap().contains("[autodev"), "Data Center takes text: {body}");

    // A Slack channel that was archived: 410 `channel_is_archived`, not retried, the run unchanged.
    let gone = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(410).set_body_string("channel_is_archived")).mount(&gone).await;
    let (other, _) = ticket_run(&app, RunState::Succeeded, "jira:OPS-13").await;
    let config = DeliveryConfig { slack_webhook_url: Some(SecretString::from(format!("{}/x", gone.uri()))), ..DeliveryConfig::default() };
    let rows = Dispatcher::new(app.store.clone(), app._dir.path(), &config).deliver_run(&other).await.unwrap();
    assert!(rows.iter().all(|r| r.state == "failed" && r.results.contains("channel_is_archived")), "{rows:#?}");
    assert_eq!(gone.received_requests().await.unwrap().len(), 2);
}
}
