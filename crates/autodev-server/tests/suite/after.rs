//! After the pull request: red CI repaired, the merge and the deploy followed back to the
//! ticket, a revert on request. The forges' own example payloads (octokit's webhook examples,
//! GitLab's documented events; see tests/fixtures/ATTRIBUTION.md) are sent, signed, to the
//! real server; a stand-in forge (`TestApp::forge`) answers the check-run, job-log,
//! workflow-dispatch, pipeline and pull request calls, a stand-in Jira and Slack theirs.
use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::{body_partial_json, method, path, path_regex, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use super::delivery::{json_response, received, wait_for_end};
use super::webhooks::{fixture, signed_github};
use super::{GITLAB_TOKEN, JIRA_SECRET, TestApp, both};

const REPO: &str = "Codertocat/Hello-World";
const PR_URL: &str = "https://github.com/Codertocat/Hello-World/pull/2";

/// A bare "origin" repository cloned from the test repository, and a project on it.
async fn project_on_bare(app: &TestApp, settings: Value) -> std::path::PathBuf {
    let work = autodev_testkit::make_repo(app._dir.path());
    let bare = app._dir.path().join("origin.git");
    autodev_testkit::git(
        app._dir.path(),
        &["clone", "--quiet", "--bare", work.to_str().unwrap(), bare.to_str().unwrap()],
    );
    let project = json!({"name": "hello", "repository": format!("file://{}", bare.display()),
        "test_command": "test -f README.md", "settings": settings});
    let r = app.post("/api/v1/projects", Some(&app.admin)).json(&project).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());
    bare
}

/// A clone of the bare repository to play a person on the forge (merging, committing to main).
fn person(app: &TestApp, bare: &std::path::Path) -> std::path::PathBuf {
    let dir = app._dir.path().join("person");
    if !dir.exists() {
        autodev_testkit::git(app._dir.path(), &["clone", "--quiet", bare.to_str().unwrap(), dir.to_str().unwrap()]);
    }
    autodev_testkit::git(&dir, &["fetch", "--quiet", "origin"]);
    dir
}

async fn timeline(app: &TestApp, run: &str) -> Vec<String> {
    let r = app.get(&format!("/api/v1/runs/{run}"), Some(&app.viewer)).send().await.unwrap();
    let v: Value = r.json().await.unwrap();
    v["timeline"].as_array().unwrap().iter().map(|s| s["step"].as_str().unwrap().to_string()).collect()
}

/// What GitHub's checks API says failed on any commit: one GitHub Actions job with an
/// annotation, whose log (behind GitHub's redirect to a download URL) ends in the cause.
async fn github_checks_api(forge: &MockServer) {
    Mock::given(method("GET"))
        .and(path_regex(r"^/repos/Codertocat/Hello-World/commits/[0-9a-f]{40}/check-runs$"))
        .respond_with(json_response(200, json!({"total_count": 2, "check_runs": [
            {"id": 4, "name": "test (ubuntu-latest)", "status": "completed", "conclusion": "failure",
             "html_url": "https://github.com/Codertocat/Hello-World/runs/4",
             "output": {"title": "1 test failed", "summary": "Process completed with exit code 101.", "text": null, "annotations_count": 1},
             "app": {"slug": "github-actions", "name": "GitHub Actions"}},
            {"id": 5, "name": "lint", "status": "completed", "conclusion": "success",
             "output": {"title": null, "summary": null, "text": null, "annotations_count": 0}, "app": {"slug": "github-actions"}}
        ]})))
        .mount(forge)
        .await;
    Mock::given(method("GET"))
        .and(path("/repos/Codertocat/Hello-World/check-runs/4/annotations"))
        .respond_with(json_response(200, json!([{"path": "src/greet.rs", "start_line": 3, "end_line": 3,
            "annotation_level": "failure", "title": "greet_says_hello", "message": "assertion `left == right` failed: left: \"hi\" right: \"hello\""}])))
        .mount(forge)
        .await;
    Mock::given(method("GET"))
        .and(path("/repos/Codertocat/Hello-World/actions/jobs/4/logs"))
        .respond_with(ResponseTemplate::new(302).insert_header("location", format!("{}/job-logs/4.txt", forge.uri())))
        .mount(forge)
        .await;
    let mut log = String::new();
    for i in 0..3000 {
        log.push_str(&format!("2026-12-06T01:00:00.0000000Z compiling crate {i}\n"));
    }
    log.push_str(
        "2026-12-06T01:00:09.0000000Z \u{1b}[31merror: test greet_says_hello failed\u{1b}[0m at src/greet.rs:3\n",
    );
    Mock::given(method("GET"))
        .and(path("/job-logs/4.txt"))
        .respond_with(ResponseTemplate::new(200).set_body_string(log))
        .mount(forge)
        .await;
}

/// The pull request, comment, workflow and Jira calls delivery makes.
async fn github_delivery_api(forge: &MockServer, branch: &str) {
    Mock::given(method("GET"))
        .and(path("/repos/Codertocat/Hello-World/pulls"))
        .and(query_param("head", format!("Codertocat:{branch}")))
        .respond_with(json_response(200, json!([])))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(forge)
        .await;
    Mock::given(method("GET"))
        .and(path("/repos/Codertocat/Hello-World/pulls"))
        .and(query_param("head", format!("Codertocat:{branch}")))
        .respond_with(json_response(200, json!([{"number": 2, "html_url": PR_URL}])))
        .with_priority(2)
        .mount(forge)
        .await;
    Mock::given(method("POST"))
        .and(path("/repos/Codertocat/Hello-World/pulls"))
        .and(body_partial_json(json!({"head": branch})))
        .respond_with(json_response(201, json!({"number": 2, "html_url": PR_URL})))
        .mount(forge)
        .await;
    Mock::given(method("GET"))
        .and(path("/repos/Codertocat/Hello-World/issues/2/comments"))
        .respond_with(json_response(200, json!([])))
        .mount(forge)
        .await;
    Mock::given(method("POST"))
        .and(path("/repos/Codertocat/Hello-World/issues/2/comments"))
        .respond_with(json_response(201, json!({"id": 77})))
        .mount(forge)
        .await;
    Mock::given(method("PATCH"))
        .and(path("/repos/Codertocat/Hello-World/issues/comments/77"))
        .respond_with(json_response(200, json!({"id": 77})))
        .mount(forge)
        .await;
    // GitHub answers a dispatch with 204 and no body.
    Mock::given(method("POST"))
        .and(path("/repos/Codertocat/Hello-World/actions/workflows/deploy.yml/dispatches"))
        .respond_with(ResponseTemplate::new(204))
        .mount(forge)
        .await;
}

async fn jira_api(jira: &MockServer) {
    Mock::given(method("GET"))
        .and(path("/rest/api/3/issue/JRA-20002/comment"))
        .respond_with(json_response(200, json!({"startAt": 0, "maxResults": 100, "total": 0, "comments": []})))
        .mount(jira)
        .await;
    Mock::given(method("POST"))
        .and(path("/rest/api/3/issue/JRA-20002/comment"))
        .respond_with(json_response(201, json!({"id": "10000"})))
        .mount(jira)
        .await;
    Mock::given(method("GET"))
        .and(path("/rest/api/3/issue/JRA-20002/transitions"))
        .respond_with(json_response(
            200,
            json!({"expand": "transitions", "transitions": [
            {"id": "21", "name": "In Review", "to": {"name": "In Review"}},
            {"id": "31", "name": "Done", "to": {"name": "Done"}}]}),
        ))
        .mount(jira)
        .await;
    Mock::given(method("POST"))
        .and(path("/rest/api/3/issue/JRA-20002/transitions"))
        .respond_with(ResponseTemplate::new(204))
        .mount(jira)
        .await;
}

fn bodies(requests: &[Request], verb: &str, p: &str) -> Vec<Value> {
    received(requests, verb, p).iter().map(|r| serde_json::from_slice(&r.body).unwrap_or(Value::Null)).collect()
}

both! {
async fn a_pull_request_is_followed_from_red_ci_to_merge_deploy_and_revert(app) {
    use autodev_testkit::{finish, write};
    use autodev_server::delivery::{DeliveryConfig, Dispatcher, github::{GithubAuth, GithubConfig}, jira::{JiraAuth, JiraConfig}, webhook::WebhookTarget};
    use secrecy::SecretString;
    // The recorder, so this test's counters are kept.
    let _ = app.get("/metrics", None).send().await.unwrap();
    let bare = project_on_bare(&app, json!({
        "github_repo": REPO, "jira_project": "JRA", "jira_done_transition": "Done",
        "deploy": {"github_workflow": "deploy.yml", "ref": "main", "environment": "staging"}
    })).await;
    let jira = MockServer::start().await;
    let slack = MockServer::start().await;
    let hook = MockServer::start().await;
    jira_api(&jira).await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(200).set_body_string("ok")).mount(&slack).await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(200)).mount(&hook).await;
    github_checks_api(&app.forge).await;
    let config = DeliveryConfig {
        github: Some(GithubConfig { api_url: app.forge.uri(), auth: GithubAuth::Token(SecretString::from("ghp_test")), labels: vec![] }),
        jira: Some(JiraConfig {
            url: jira.uri(),
            auth: JiraAuth::Cloud { email: "dev@example.com".into(), token: SecretString::from("jira-token") },
            transitions: Default::default(),
        }),
        slack_webhook_url: Some(SecretString::from(format!("{}/services/T000/B000/XXXX", slack.uri()))),
        webhooks: vec![WebhookTarget::new("n8n", SecretString::from(hook.uri()), Some(SecretString::from("s")), None)],
        ..DeliveryConfig::default()
    };
    let dispatcher = Dispatcher::new(app.store.clone(), app._dir.path(), &config);
    let workers = tokio::spawn(autodev_server::workers::run_workers(app.state.clone(), 1, app.shutdown.clone()));

    // The ticket: Atlassian's example issue, labelled for Autodev.
    app.script
        .plan(json!([{"id": "t1", "title": "Add greeting", "description": "", "depends_on": [], "acceptance": []}]))
        .on("task:t1", 0, vec![write("greeting.txt", "hello\n"), finish("ok")]);
    let mut updated = fixture("jira/issue_updated.json");
    updated["changelog"]["items"].as_array_mut().unwrap().push(json!({
        "field": "labels", "fieldtype": "jira", "from": null, "fromString": "", "to": null, "toString": "autodev"
    }));
    let r = app.http.post(format!("{}/webhooks/jira?secret={}", app.base, JIRA_SECRET)).json(&updated).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let first: Value = r.json().await.unwrap();
    let first_id = first["run"]["id"].as_str().unwrap().to_string();
    let done = wait_for_end(&app, &first_id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let branch = done["branch"].as_str().unwrap().to_string();
    let head1 = autodev_testkit::git(&bare, &["rev-parse", &branch]);
    github_delivery_api(&app.forge, &branch).await;
    let rows = dispatcher.deliver_run(&first_id).await.unwrap();
    assert!(rows.iter().all(|r| r.state == "done"), "{rows:#?}");
    assert_eq!(timeline(&app, &first_id).await, ["pr_opened"]);

    // Checks on a pull request Autodev did not open, and on a commit it did not push: nothing.
    let mut suite = fixture("github/check_suite.completed.json");
    suite["check_suite"]["conclusion"] = json!("failure");
    let mut other_pr = suite.clone();
    other_pr["check_suite"]["pull_requests"][0]["number"] = json!(99);
    let (_, v) = signed_github(&app, "check_suite", "cs-0", &other_pr).await;
    assert!(v["reason"].as_str().unwrap().contains("not on a pull request Autodev opened"), "{v}");
    let (_, v) = signed_github(&app, "check_suite", "cs-1", &suite).await;
    assert!(v["reason"].as_str().unwrap().contains("was not pushed by Autodev"), "the fixture's own head: {v}");
    // A passing suite on Autodev's head: on the timeline, and no run.
    let mut passing = fixture("github/check_suite.completed.json");
    passing["check_suite"]["head_sha"] = json!(head1);
    passing["check_suite"]["head_branch"] = json!(branch);
    let (status, v) = signed_github(&app, "check_suite", "cs-2", &passing).await;
    assert_eq!((status, v["status"].as_str(), v["step"].as_str()), (200, Some("recorded"), Some("checks_passed")), "{v}");

    // A failing check run (octokit's failing example) on Autodev's head: one follow-up.
    let mut check_run = fixture("github/check_run.completed.json");
    assert_eq!(check_run["check_run"]["conclusion"], "failure");
    check_run["check_run"]["head_sha"] = json!(head1);
    app.script
        .plan(json!([{"id": "t2", "title": "Fix CI", "description": "", "depends_on": [], "acceptance": []}]))
        .on("task:t2", 0, vec![write("fix1.txt", "greet says hello\n"), finish("ok")]);
    let runs_before = app.store.list_runs(100).await.unwrap().len();
    let (status, v) = signed_github(&app, "check_run", "cr-1", &check_run).await;
    assert_eq!(status, 201, "{v}");
    let ci1 = v["run"]["id"].as_str().unwrap().to_string();
    assert!(v["answers"].as_str().unwrap().contains("test (ubuntu-latest)"), "{v}");
    // A failing workflow run on the same commit (another delivery, same failure): nothing more.
    let mut workflow = fixture("github/workflow_run.completed.json");
    workflow["repository"] = check_run["repository"].clone();
    workflow["workflow_run"]["conclusion"] = json!("failure");
    workflow["workflow_run"]["head_sha"] = json!(head1);
    let (status, v) = signed_github(&app, "workflow_run", "wr-1", &workflow).await;
    assert_eq!(status, 200, "{v}");
    assert!(v["reason"].as_str().unwrap().contains("was started already"), "{v}");
    assert_eq!(app.store.list_runs(100).await.unwrap().len(), runs_before + 1);
    // The follow-up's spec: the ticket, and what CI said (output, annotation, the log's end).
    let spec = app.store.get_run(&ci1).await.unwrap().spec;
    for part in ["I feel the need for speed", "## CI failed on https://github.com/Codertocat/Hello-World/pull/2",
        "1 test failed", "src/greet.rs:3 [failure] greet_says_hello: assertion", "error: test greet_says_hello failed at src/greet.rs:3", "left out here", "compiling crate 0"] {
        assert!(spec.contains(part), "{part} not in the spec:\n{spec}");
    }
    assert!(!spec.contains('\u{1b}'), "colour codes reach the model");
    assert!(spec.len() < 40_000, "the CI output is capped: {}", spec.len());
    let done = wait_for_end(&app, &ci1).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let head2 = autodev_testkit::git(&bare, &["rev-parse", &branch]);
    assert_ne!(head2, head1);
    autodev_testkit::git(&bare, &["merge-base", "--is-ancestor", &head1, &head2]);
    assert_eq!(autodev_testkit::git(&bare, &["show", &format!("{branch}:fix1.txt")]), "greet says hello");
    // Delivered onto the same pull request, saying which failure it answered.
    let rows = dispatcher.deliver_run(&ci1).await.unwrap();
    assert!(rows.iter().all(|r| r.state == "done"), "{rows:#?}");
    let requests = app.forge.received_requests().await.unwrap();
    assert_eq!(received(&requests, "POST", "/repos/Codertocat/Hello-World/pulls").len(), 1, "a second pull request");
    let replies = bodies(&requests, "PATCH", "/repos/Codertocat/Hello-World/issues/comments/77");
    let reply = replies.last().unwrap()["body"].as_str().unwrap().to_string();
    assert!(reply.contains("This follow-up answers: CI failed on") && reply.contains("test (ubuntu-latest)"), "{reply}");
    let report = app.store.artifact(app._dir.path(), &ci1, "report.md").await.unwrap().unwrap();
    assert!(report.contains("| answers | CI failed on ") && report.contains("test (ubuntu-latest)"), "{report}");

    // The second failure (on the follow-up's commit): the second and last round.
    let mut again = suite.clone();
    again["check_suite"]["head_sha"] = json!(head2);
    app.script
        .plan(json!([{"id": "t3", "title": "Fix CI again", "description": "", "depends_on": [], "acceptance": []}]))
        .on("task:t3", 0, vec![write("fix2.txt", "really\n"), finish("ok")]);
    let (status, v) = signed_github(&app, "check_suite", "cs-3", &again).await;
    assert_eq!(status, 201, "{v}");
    let ci2 = v["run"]["id"].as_str().unwrap().to_string();
    assert_eq!(wait_for_end(&app, &ci2).await["state"], "succeeded");
    assert!(dispatcher.deliver_run(&ci2).await.unwrap().iter().all(|r| r.state == "done"));
    let head3 = autodev_testkit::git(&bare, &["rev-parse", &branch]);
    // A third failure: no run; the pull request hears that the rounds are used up, once.
    let mut third = suite.clone();
    third["check_suite"]["head_sha"] = json!(head3);
    let (status, v) = signed_github(&app, "check_suite", "cs-4", &third).await;
    assert_eq!(status, 200, "{v}");
    assert!(v["reason"].as_str().unwrap().contains("used up"), "{v}");
    let (_, v) = signed_github(&app, "check_suite", "cs-5", &third).await;
    assert_eq!(v["status"], "ignored", "{v}");
    assert_eq!(app.store.list_runs(100).await.unwrap().len(), runs_before + 2);
    let rows = dispatcher.deliver_run(&first_id).await.unwrap();
    assert!(rows.iter().all(|r| r.state == "done"), "{rows:#?}");
    let requests = app.forge.received_requests().await.unwrap();
    let posted = bodies(&requests, "POST", "/repos/Codertocat/Hello-World/issues/2/comments");
    let exhausted: Vec<_> = posted.iter().filter(|b| b["body"].as_str().unwrap().contains("will not follow up CI")).collect();
    assert_eq!(exhausted.len(), 1, "{posted:?}");
    assert!(exhausted[0]["body"].as_str().unwrap().contains("tried 2 time(s)"));

    // Not merged yet: a revert is refused.
    let r = app.post(&format!("/api/v1/runs/{first_id}/revert"), Some(&app.operator)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 409);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "not_merged", "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("was never merged"), "{v}");

    // A person merges the pull request on the forge.
    let clone = person(&app, &bare);
    autodev_testkit::git(&clone, &["checkout", "--quiet", "main"]);
    autodev_testkit::git(&clone, &["merge", "--quiet", "--no-ff", "-m", "Merge pull request #2", &format!("origin/{branch}")]);
    autodev_testkit::git(&clone, &["push", "--quiet", "origin", "main"]);
    let merge_sha = autodev_testkit::git(&clone, &["rev-parse", "HEAD"]);
    let mut closed = fixture("github/pull_request.closed.json");
    closed["pull_request"]["merged"] = json!(true);
    closed["pull_request"]["merge_commit_sha"] = json!(merge_sha);
    closed["pull_request"]["merged_by"] = json!({"login": "Codertocat"});
    let (status, v) = signed_github(&app, "pull_request", "pr-1", &closed).await;
    assert_eq!((status, v["step"].as_str()), (200, Some("merged")), "{v}");
    // The same news again under another delivery id: nothing new.
    let (_, v) = signed_github(&app, "pull_request", "pr-2", &closed).await;
    assert_eq!(v["status"], "duplicate_step", "{v}");
    let dispatched = || async {
        let requests = app.forge.received_requests().await.unwrap();
        bodies(&requests, "POST", "/repos/Codertocat/Hello-World/actions/workflows/deploy.yml/dispatches")
    };
    for _ in 0..2 {
        dispatcher.deliver_run(&first_id).await.unwrap();
    }
    let dispatches = dispatched().await;
    assert_eq!(dispatches.len(), 1, "{dispatches:?}");
    assert_eq!(dispatches[0], json!({"ref": "main", "inputs": {"environment": "staging"}}));
    // The Jira ticket moved to Done, once, and heard of the merge.
    let requests = jira.received_requests().await.unwrap();
    let moved = bodies(&requests, "POST", "/rest/api/3/issue/JRA-20002/transitions");
    assert_eq!(moved, [json!({"transition": {"id": "31"}})], "{moved:?}");
    let comments = bodies(&requests, "POST", "/rest/api/3/issue/JRA-20002/comment");
    assert!(comments.iter().any(|c| c.to_string().contains("was merged")), "{comments:?}");

    // GitHub says the merge commit is deployed to staging.
    let mut status_event = fixture("github/deployment_status.created.json");
    status_event["deployment"]["sha"] = json!(merge_sha);
    status_event["deployment"]["environment"] = json!("staging");
    status_event["deployment_status"]["environment"] = json!("staging");
    status_event["deployment_status"]["environment_url"] = json!("https://staging.example.com");
    let mut pending = status_event.clone();
    pending["deployment_status"]["state"] = json!("in_progress");
    let (_, v) = signed_github(&app, "deployment_status", "ds-0", &pending).await;
    assert_eq!(v["status"], "ignored", "{v}");
    let (_, v) = signed_github(&app, "deployment_status", "ds-1", &status_event).await;
    assert_eq!(v["step"], "deployed", "{v}");
    dispatcher.deliver_run(&first_id).await.unwrap();
    let requests = jira.received_requests().await.unwrap();
    let comments = bodies(&requests, "POST", "/rest/api/3/issue/JRA-20002/comment");
    assert!(comments.iter().any(|c| c.to_string().contains("deployed to staging") && c.to_string().contains("https://staging.example.com")), "{comments:?}");
    let slack_said: Vec<String> = slack.received_requests().await.unwrap().iter().map(|r| String::from_utf8_lossy(&r.body).into_owned()).collect();
    assert!(slack_said.iter().any(|t| t.contains("was deployed to staging")), "{slack_said:?}");
    assert!(slack_said.iter().any(|t| t.contains("was merged")), "{slack_said:?}");
    // The outgoing webhook heard each step, with the step.
    let hooks: Vec<Value> = hook.received_requests().await.unwrap().iter().map(|r| serde_json::from_slice(&r.body).unwrap()).collect();
    let merged_hook = hooks.iter().find(|h| h["event"] == "delivery.merged").expect("delivery.merged");
    assert_eq!(merged_hook["step"]["sha"], json!(merge_sha));
    assert!(hooks.iter().any(|h| h["event"] == "delivery.deployed" && h["step"]["environment"] == "staging"));
    assert!(hooks.iter().any(|h| h["event"] == "delivery.deploy_requested"));
    // The timeline, in the API and in the events.
    // (The workflow run's failure is on the timeline though it started nothing.)
    let steps = timeline(&app, &first_id).await;
    assert_eq!(
        steps,
        ["pr_opened", "checks_passed", "checks_failed", "ci_repair_started", "checks_failed", "checks_failed",
         "ci_repair_started", "checks_failed", "ci_repair_refused", "merged", "deploy_requested", "deployed"]
    );
    assert_eq!(timeline(&app, &ci1).await, steps, "a follow-up shows its pull request's timeline");
    let events = app.store.events(&first_id, 0).await.unwrap();
    assert!(events.iter().any(|e| e.kind.name() == "delivery.merged"));
    assert!(events.iter().any(|e| e.kind.name() == "delivery.deployed"));

    // Revert: refused while it conflicts with a later change on main…
    std::fs::write(clone.join("greeting.txt"), "hello, world\n").unwrap();
    autodev_testkit::git(&clone, &["commit", "--quiet", "-am", "Say more"]);
    autodev_testkit::git(&clone, &["push", "--quiet", "origin", "main"]);
    let r = app.post(&format!("/api/v1/runs/{first_id}/revert"), Some(&app.operator)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 409);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "revert_conflict", "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("greeting.txt"), "{v}");
    // …and a viewer may not ask.
    let r = app.post(&format!("/api/v1/runs/{first_id}/revert"), Some(&app.viewer)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 403);
    // Once that change is gone, one revert run: no model call, tested, delivered as a pull request.
    autodev_testkit::git(&clone, &["revert", "--no-edit", "HEAD"]);
    autodev_testkit::git(&clone, &["push", "--quiet", "origin", "main"]);
    let planner_calls = app.script.requests_for("planner").len();
    let r = app.post(&format!("/api/v1/runs/{ci2}/revert"), Some(&app.operator)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 201, "a follow-up's id names the same change");
    let revert: Value = r.json().await.unwrap();
    let revert_id = revert["id"].as_str().unwrap().to_string();
    assert!(revert["title"].as_str().unwrap().starts_with("Revert: "), "{revert}");
    let r = app.post(&format!("/api/v1/runs/{first_id}/revert"), Some(&app.operator)).send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "already_reverted");
    let revert_branch = revert["branch"].as_str().unwrap().to_string();
    Mock::given(method("GET"))
        .and(path("/repos/Codertocat/Hello-World/pulls"))
        .and(query_param("head", format!("Codertocat:{revert_branch}")))
        .respond_with(json_response(200, json!([])))
        .mount(&app.forge)
        .await;
    Mock::given(method("POST"))
        .and(path("/repos/Codertocat/Hello-World/pulls"))
        .and(body_partial_json(json!({"head": revert_branch})))
        .respond_with(json_response(201, json!({"number": 3, "html_url": "https://github.com/Codertocat/Hello-World/pull/3"})))
        .mount(&app.forge)
        .await;
    let done = wait_for_end(&app, &revert_id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(app.script.requests_for("planner").len(), planner_calls, "a revert calls no model");
    let main = autodev_testkit::git(&bare, &["rev-parse", "main"]);
    assert_eq!(autodev_testkit::git(&bare, &["rev-parse", &format!("{revert_branch}^")]), main, "on main as it is now");
    let changed = autodev_testkit::git(&bare, &["diff", "--name-status", "main", &revert_branch]);
    for file in ["D\tfix1.txt", "D\tfix2.txt", "D\tgreeting.txt"] {
        assert!(changed.contains(file), "{changed}");
    }
    let message = autodev_testkit::git(&bare, &["log", "-1", "--format=%B", &revert_branch]);
    assert!(message.contains(&format!("This reverts {merge_sha}")), "{message}");
    dispatcher.deliver_run(&revert_id).await.unwrap();
    let requests = app.forge.received_requests().await.unwrap();
    let opened = bodies(&requests, "POST", "/repos/Codertocat/Hello-World/pulls");
    let revert_pr: Vec<_> = opened.iter().filter(|b| b["head"] == json!(revert_branch)).collect();
    assert_eq!(revert_pr.len(), 1, "{opened:?}");
    let body = revert_pr[0]["body"].as_str().unwrap();
    assert!(body.contains(PR_URL) && body.contains("JRA-20002"), "links the run's pull request and ticket: {body}");
    assert!(timeline(&app, &first_id).await.contains(&"revert_requested".to_string()));

    // The metrics count what happened.
    let metrics = app.get("/metrics", None).send().await.unwrap().text().await.unwrap();
    for name in ["autodev_ci_follow_ups_started_total", "autodev_ci_follow_ups_refused_total", "autodev_merges_total",
        "autodev_deploys_total", "autodev_deploys_requested_total", "autodev_ticket_to_merge_seconds_bucket",
        "autodev_ticket_to_deploy_seconds_bucket", "autodev_reverts_total"] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    app.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), workers).await.unwrap().unwrap();
}
}

both! {
async fn gitlab_pipelines_merges_and_deployments_follow_a_merge_request(app) {
    use autodev_testkit::{finish, write};
    use autodev_server::delivery::{DeliveryConfig, Dispatcher, gitlab::GitlabConfig};
    use secrecy::SecretString;
    let project = "gitlab-org/gitlab-test";
    let base = "/api/v4/projects/gitlab-org%2Fgitlab-test";
    let mr_url = "http://192.168.64.1:3005/gitlab-org/gitlab-test/merge_requests/1";
    let bare = project_on_bare(&app, json!({"gitlab_project": project, "ci_repair_rounds": 1,
        "deploy": {"gitlab_trigger": true, "environment": "staging"}})).await;
    let workers = tokio::spawn(autodev_server::workers::run_workers(app.state.clone(), 1, app.shutdown.clone()));
    app.script
        .plan(json!([{"id": "t1", "title": "Add greeting", "description": "", "depends_on": [], "acceptance": []}]))
        .on("task:t1", 0, vec![write("greeting.txt", "hello\n"), finish("ok")]);
    let r = app.post("/api/v1/runs", Some(&app.operator)).json(&json!({"project": "hello", "spec": "# Greet\n\nWrite hello into greeting.txt."})).send().await.unwrap();
    let first_id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let done = wait_for_end(&app, &first_id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let branch = done["branch"].as_str().unwrap().to_string();
    let head = autodev_testkit::git(&bare, &["rev-parse", &branch]);
    let forge = &app.forge;
    Mock::given(method("GET")).and(path(format!("{base}/merge_requests"))).and(query_param("source_branch", branch.as_str()))
        .respond_with(json_response(200, json!([]))).mount(forge).await;
    Mock::given(method("POST")).and(path(format!("{base}/merge_requests")))
        .respond_with(json_response(201, json!({"id": 1, "iid": 1, "web_url": mr_url}))).mount(forge).await;
    Mock::given(method("GET")).and(path(format!("{base}/jobs/378/trace")))
        .respond_with(ResponseTemplate::new(200).set_body_string("\u{1b}[0Ksection_start:1:step_script\r\u{1b}[0K$ cargo test\ntest greet ... FAILED\nerror: 1 test failed\n"))
        .mount(forge).await;
    Mock::given(method("POST")).and(path(format!("{base}/pipeline")))
        .respond_with(json_response(201, json!({"id": 41, "web_url": "http://192.168.64.1:3005/gitlab-org/gitlab-test/-/pipelines/41"})))
        .mount(forge).await;
    let config = DeliveryConfig {
        gitlab: Some(GitlabConfig { url: forge.uri(), token: SecretString::from("glpat-test"), labels: vec![], trigger_token: None }),
        ..DeliveryConfig::default()
    };
    let dispatcher = Dispatcher::new(app.store.clone(), app._dir.path(), &config);
    assert!(dispatcher.deliver_run(&first_id).await.unwrap().iter().all(|r| r.state == "done"));
    let send = |body: Value, event: &'static str, uuid: &'static str| {
        let app = &app;
        async move {
            let r = app.http.post(format!("{}/webhooks/gitlab", app.base)).header("X-Gitlab-Token", GITLAB_TOKEN)
                .header("X-Gitlab-Event", event).header("X-Gitlab-Event-UUID", uuid).json(&body).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };

    // GitLab's pipeline example, failed on Autodev's head with one failed job: a follow-up.
    let mut pipeline = fixture("gitlab/pipeline.json");
    pipeline["object_attributes"]["status"] = json!("failed");
    pipeline["object_attributes"]["sha"] = json!(head);
    pipeline["builds"].as_array_mut().unwrap().iter_mut().find(|b| b["id"] == 378).unwrap()["status"] = json!("failed");
    let (status, v) = send(pipeline.clone(), "Pipeline Hook", "p-1").await;
    assert_eq!(status, 201, "{v}");
    let follow = v["run"]["id"].as_str().unwrap().to_string();
    let spec = app.store.get_run(&follow).await.unwrap().spec;
    assert!(spec.contains("CI failed on") && spec.contains("test-build") && spec.contains("error: 1 test failed"), "{spec}");
    assert!(!spec.contains("section_start") && !spec.contains('\u{1b}'), "{spec}");
    app.post(&format!("/api/v1/runs/{follow}/cancel"), Some(&app.operator)).send().await.unwrap();
    // A branch pipeline (no merge request in the event) on Autodev's head is found by its commit.
    let mut branch_pipeline = pipeline.clone();
    branch_pipeline["merge_request"] = Value::Null;
    branch_pipeline["object_attributes"]["status"] = json!("success");
    let (_, v) = send(branch_pipeline, "Pipeline Hook", "p-2").await;
    assert_eq!((v["status"].as_str(), v["step"].as_str()), (Some("recorded"), Some("checks_passed")), "{v}");

    // The merge request merged (GitLab's example, its action `merge`), then redelivered.
    let mut merged = fixture("gitlab/merge_request.json");
    merged["project"]["path_with_namespace"] = json!(project);
    merged["object_attributes"]["action"] = json!("merge");
    merged["object_attributes"]["url"] = json!(mr_url);
    merged["object_attributes"]["merge_commit_sha"] = json!("279484c09fbe69ededfced8c1bb6e6d24616b468");
    let (_, v) = send(merged.clone(), "Merge Request Hook", "m-1").await;
    assert_eq!(v["step"], "merged", "{v}");
    let (_, v) = send(merged.clone(), "Merge Request Hook", "m-2").await;
    assert_eq!(v["status"], "duplicate_step", "{v}");
    dispatcher.deliver_run(&first_id).await.unwrap();
    dispatcher.deliver_run(&first_id).await.unwrap();
    let requests = forge.received_requests().await.unwrap();
    let triggered = bodies(&requests, "POST", &format!("{base}/pipeline"));
    assert_eq!(triggered.len(), 1, "{triggered:?}");
    assert_eq!(triggered[0]["ref"], "main");
    assert!(triggered[0]["variables"].as_array().unwrap().contains(&json!({"key": "AUTODEV_ENVIRONMENT", "value": "staging"})));

    // GitLab's deployment example for that commit (its commit URL ends with the full id).
    let mut deployment = fixture("gitlab/deployment.json");
    deployment["project"]["path_with_namespace"] = json!(project);
    let (_, v) = send(deployment.clone(), "Deployment Hook", "d-1").await;
    assert_eq!(v["step"], "deployed", "{v}");
    let mut failed = deployment.clone();
    failed["status"] = json!("failed");
    failed["environment"] = json!("production");
    let (_, v) = send(failed, "Deployment Hook", "d-2").await;
    assert_eq!(v["step"], "deploy_failed", "{v}");
    assert_eq!(
        timeline(&app, &first_id).await,
        ["pr_opened", "checks_failed", "ci_repair_started", "checks_passed", "merged", "deploy_requested", "deployed", "deploy_failed"]
    );
    let r = app.get(&format!("/api/v1/runs/{first_id}"), Some(&app.viewer)).send().await.unwrap();
    let v: Value = r.json().await.unwrap();
    let deployed = v["timeline"].as_array().unwrap().iter().find(|s| s["step"] == "deployed").unwrap();
    assert_eq!(deployed["environment"], "staging");
    assert_eq!(deployed["url"], "https://staging.example.com");

    // The run page shows the timeline and offers the revert; asked from there, a merge commit
    // the repository does not have is refused with the reason, on the page.
    let web = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = web
        .post(format!("{}/login", app.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("key={}", app.operator))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    let html = web.get(format!("{}/runs/{first_id}", app.base)).header("cookie", &cookie).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("After the pull request") && html.contains("deploy failed") && html.contains("(staging)"), "{html}");
    assert!(html.contains(&format!("/runs/{first_id}/revert")) && html.contains("Revert the merged change"), "{html}");
    let at = html.find("name=\"csrf\" value=\"").unwrap() + 19;
    let csrf = &html[at..at + html[at..].find('"').unwrap()];
    let r = web
        .post(format!("{}/runs/{first_id}/revert", app.base))
        .header("cookie", &cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={csrf}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 409);
    let text = r.text().await.unwrap();
    assert!(text.contains("is not in the project&#39;s repository") || text.contains("is not in the project's repository"), "{text}");
    app.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), workers).await.unwrap().unwrap();
}
}
