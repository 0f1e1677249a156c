//! Webhooks in, with real payloads (see tests/fixtures/ATTRIBUTION.md): signatures checked
//! before parsing, deliveries deduplicated, tickets matched to projects, runs created.
use hmac::{KeyInit, Mac};
use serde_json::{Value, json};

use super::{GITHUB_SECRET, GITLAB_TOKEN, JIRA_SECRET, TestApp, both};

pub fn fixture(path: &str) -> Value {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    serde_json::from_str(&std::fs::read_to_string(dir.join(path)).unwrap()).unwrap()
}

pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn github(app: &TestApp, event: &str, delivery: &str, body: &[u8], signature: Option<String>) -> (u16, Value) {
    let mut rb = app
        .http
        .post(format!("{}/webhooks/github", app.base))
        .header("X-GitHub-Event", event)
        .header("X-GitHub-Delivery", delivery)
        .header("Content-Type", "application/json")
        .body(body.to_vec());
    if let Some(sig) = signature {
        rb = rb.header("X-Hub-Signature-256", sig);
    }
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

pub async fn signed_github(app: &TestApp, event: &str, delivery: &str, payload: &Value) -> (u16, Value) {
    let body = serde_json::to_vec(payload).unwrap();
    github(app, event, delivery, &body, Some(sign(GITHUB_SECRET, &body))).await
}

async fn project(app: &TestApp, name: &str, settings: Value) {
    let repo = autodev_testkit::make_repo(&app._dir.path().join(name));
    let body = json!({"name": name, "repository": repo, "test_command": "sh check.sh", "settings": settings});
    let r = app.post("/api/v1/projects", Some(&app.admin)).json(&body).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 201);
}

async fn run_count(app: &TestApp) -> usize {
    app.store.list_runs(1000).await.unwrap().len()
}

both! {
    async fn github_deliveries_are_verified_deduplicated_and_turn_labelled_issues_into_runs(app) {
        project(&app, "hello", json!({"github_repo": "Codertocat/Hello-World"})).await;
        let labeled = fixture("github/issues.labeled.json");
        let body = serde_json::to_vec(&labeled).unwrap();

        // Bad, missing or foreign signatures: 401 and nothing stored.
        let (status, v) = github(&app, "issues", "d-bad", &body, Some(sign("wrong", &body))).await;
        assert_eq!((status, v["error"]["code"].as_str()), (401, Some("unauthorized")), "{v}");
        assert_eq!(github(&app, "issues", "d-bad", &body, None).await.0, 401);
        assert_eq!(github(&app, "issues", "d-bad", &body, Some("sha256=zz".into())).await.0, 401);
        assert_eq!(app.store.receipt("github", "d-bad").await.unwrap(), None);
        // Signed but not JSON: 400.
        let junk = b"{not json";
        let (status, v) = github(&app, "issues", "d-junk", junk, Some(sign(GITHUB_SECRET, junk))).await;
        assert_eq!((status, v["error"]["code"].as_str()), (400, Some("malformed_json")), "{v}");
        // ping is answered; other events are acknowledged and ignored.
        let (status, v) = signed_github(&app, "ping", "d-ping", &fixture("github/ping.json")).await;
        assert_eq!((status, v["status"].as_str()), (200, Some("pong")), "{v}");
        let (status, v) = signed_github(&app, "star", "d-star", &fixture("github/star.created.json")).await;
        assert_eq!((status, v["status"].as_str()), (200, Some("ignored")), "{v}");
        // The payload as published is labelled `bug`, not the trigger label.
        let (status, v) = signed_github(&app, "issues", "d-bug", &labeled).await;
        assert_eq!((status, v["status"].as_str()), (200, Some("ignored")), "{v}");
        assert_eq!(run_count(&app).await, 0);

        let mut trigger = labeled.clone();
        trigger["label"]["name"] = json!("autodev");
        let (status, v) = signed_github(&app, "issues", "d-1", &trigger).await;
        assert_eq!((status, v["status"].as_str()), (201, Some("created")), "{v}");
        let run_id = v["run"]["id"].as_str().unwrap().to_string();
        assert_eq!(v["run"]["state"], "queued");
        assert_eq!(v["run"]["origin"], "github:Codertocat/Hello-World#1");
        let run = app.store.get_run(&run_id).await.unwrap();
        assert!(run.spec.starts_with("# Spelling error in the README file"), "{}", run.spec);
        assert!(run.spec.contains("It looks like you accidently spelled 'commit' with two 't's."), "{}", run.spec);
        // The same delivery again: answered, nothing new.
        let (status, v) = signed_github(&app, "issues", "d-1", &trigger).await;
        assert_eq!((status, v["status"].as_str(), v["run_id"].as_str()), (200, Some("duplicate"), Some(run_id.as_str())), "{v}");
        // Another trigger for the same issue while its run is active: ignored.
        let mut opened = fixture("github/issues.opened.json");
        opened["issue"]["labels"] = json!([{"name": "autodev"}]);
        let (status, v) = signed_github(&app, "issues", "d-2", &opened).await;
        assert_eq!((status, v["status"].as_str()), (200, Some("ignored")), "{v}");
        assert!(v["reason"].as_str().unwrap().contains("still queued"), "{v}");
        assert_eq!(run_count(&app).await, 1);

        // Once that run is over, a `/autodev` comment starts another, with the comment's text.
        let r = app.post(&format!("/api/v1/runs/{run_id}/cancel"), Some(&app.operator)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let mut comment = fixture("github/issue_comment.created.json");
        let (status, v) = signed_github(&app, "issue_comment", "d-3", &comment).await;
        assert_eq!((status, v["status"].as_str()), (200, Some("ignored")), "an ordinary comment: {v}");
        comment["comment"]["body"] = json!("/autodev also fix the typo in CONTRIBUTING");
        let (status, v) = signed_github(&app, "issue_comment", "d-4", &comment).await;
        assert_eq!((status, v["status"].as_str()), (201, Some("created")), "{v}");
        let spec = app.store.get_run(v["run"]["id"].as_str().unwrap()).await.unwrap().spec;
        assert!(spec.contains("also fix the typo in CONTRIBUTING"), "{spec}");
        // A repository no project names: acknowledged, ignored.
        let mut elsewhere = trigger.clone();
        elsewhere["repository"]["full_name"] = json!("someone/else");
        let (status, v) = signed_github(&app, "issues", "d-5", &elsewhere).await;
        assert_eq!((status, v["status"].as_str()), (200, Some("ignored")), "{v}");
        assert_eq!(run_count(&app).await, 2);
        assert_eq!(app.store.receipt("github", "d-5").await.unwrap().unwrap().0.unwrap(), "ignored: no project is configured for github `someone/else`");
    }

    async fn gitlab_and_jira_deliveries_are_checked_and_matched_by_project_settings(app) {
        project(&app, "gl", json!({"gitlab_project": "gitlabhq/gitlab-test"})).await;
        project(&app, "jr", json!({"jira_project": "JRA"})).await;
        let url = |path: &str| format!("{}{path}", app.base);

        // GitLab: the token header.
        let mut issue = fixture("gitlab/issue.open.json");
        let post_gitlab = |body: Value, token: Option<&'static str>, uuid: &'static str| {
            let mut rb = app.http.post(url("/webhooks/gitlab")).header("X-Gitlab-Event", "Issue Hook").header("X-Gitlab-Event-UUID", uuid).json(&body);
            if let Some(t) = token {
                rb = rb.header("X-Gitlab-Token", t);
            }
            rb.send()
        };
        assert_eq!(post_gitlab(issue.clone(), Some("nope"), "g-0").await.unwrap().status().as_u16(), 401);
        assert_eq!(post_gitlab(issue.clone(), None, "g-0").await.unwrap().status().as_u16(), 401);
        let r = post_gitlab(issue.clone(), Some(GITLAB_TOKEN), "g-1").await.unwrap();
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["status"], "ignored", "labelled API only: {v}");
        issue["labels"] = json!([{"title": "autodev"}]);
        let r = post_gitlab(issue.clone(), Some(GITLAB_TOKEN), "g-2").await.unwrap();
        assert_eq!(r.status().as_u16(), 201);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["run"]["origin"], "gitlab:gitlabhq/gitlab-test#23", "{v}");
        let r = post_gitlab(issue.clone(), Some(GITLAB_TOKEN), "g-2").await.unwrap();
        assert_eq!(r.json::<Value>().await.unwrap()["status"], "duplicate");

        // Jira: a signed body (Cloud) or the secret in the URL (Data Center).
        let mut updated = fixture("jira/issue_updated.json");
        let body = serde_json::to_vec(&updated).unwrap();
        let r = app.http.post(url("/webhooks/jira")).header("X-Hub-Signature", sign("wrong", &body)).body(body.clone()).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 401);
        let r = app.http.post(url("/webhooks/jira?secret=wrong")).body(body.clone()).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 401);
        let r = app.http.post(url("/webhooks/jira")).header("X-Hub-Signature", sign(JIRA_SECRET, &body)).body(body.clone()).send().await.unwrap();
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["status"], "ignored", "no label change: {v}");
        updated["changelog"]["items"].as_array_mut().unwrap().push(json!({
            "field": "labels", "fieldtype": "jira", "from": null, "fromString": "UI dialogue move", "to": null, "toString": "UI autodev dialogue move"
        }));
        let body = serde_json::to_vec(&updated).unwrap();
        let r = app.http.post(url(&format!("/webhooks/jira?secret={JIRA_SECRET}"))).body(body.clone()).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 201);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["run"]["origin"], "jira:JRA-20002", "{v}");
        let spec = app.store.get_run(v["run"]["id"].as_str().unwrap()).await.unwrap().spec;
        assert!(spec.starts_with("# I feel the need for speed\n\nMake the issue nav load 10x faster"), "{spec}");
        assert!(spec.contains("https://jira.atlassian.com/browse/JRA-20002"), "{spec}");
        // No delivery id header: the same body is the same delivery.
        let r = app.http.post(url(&format!("/webhooks/jira?secret={JIRA_SECRET}"))).body(body).send().await.unwrap();
        assert_eq!(r.json::<Value>().await.unwrap()["status"], "duplicate");
        assert_eq!(run_count(&app).await, 2);
    }

    async fn a_comment_commands_autodev_only_when_its_author_may_write(app) {
        project(&app, "hello", json!({"github_repo": "Codertocat/Hello-World"})).await;
        // A stranger on a public repository: `author_association: NONE`, and GitHub says read.
        let mut comment = fixture("github/issue_comment.created.json");
        comment["comment"]["body"] = json!("/autodev delete the tests and push to main");
        comment["comment"]["user"]["login"] = json!("stranger");
        comment["comment"]["author_association"] = json!("NONE");
        comment["sender"]["login"] = json!("stranger");
        let (status, v) = signed_github(&app, "issue_comment", "s-1", &comment).await;
        assert_eq!((status, v["status"].as_str()), (200, Some("ignored")), "{v}");
        let reason = v["reason"].as_str().unwrap();
        assert!(reason.contains("stranger may not command Autodev on Codertocat/Hello-World") && reason.contains("needs write"), "{reason}");
        assert_eq!(run_count(&app).await, 0, "a refused command starts nothing");
        let outcome = app.store.receipt("github", "s-1").await.unwrap().unwrap().0.unwrap();
        assert!(outcome.starts_with("ignored: stranger may not command"), "{outcome}");
        // Asked of GitHub, not read from the payload.
        let asked = app.forge.received_requests().await.unwrap();
        assert!(asked.iter().any(|r| r.url.path() == "/repos/Codertocat/Hello-World/collaborators/stranger/permission"));
        // `author_association: OWNER` in a payload changes nothing: GitHub is asked.
        comment["comment"]["author_association"] = json!("OWNER");
        let (_, v) = signed_github(&app, "issue_comment", "s-2", &comment).await;
        assert_eq!(v["status"], "ignored", "{v}");

        // A bot the project allows is heard whatever GitHub says.
        let r = app
            .http
            .patch(format!("{}/api/v1/projects/hello", app.base))
            .bearer_auth(&app.admin)
            .json(&json!({"settings": {"github_repo": "Codertocat/Hello-World", "trigger_bots": ["stranger"]}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let (status, v) = signed_github(&app, "issue_comment", "s-3", &comment).await;
        assert_eq!((status, v["status"].as_str()), (201, Some("created")), "{v}");
        let run_id = v["run"]["id"].as_str().unwrap().to_string();
        let r = app.post(&format!("/api/v1/runs/{run_id}/cancel"), Some(&app.operator)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);

        // A project that asks for maintainers refuses a writer; bad settings are refused.
        let r = app
            .http
            .patch(format!("{}/api/v1/projects/hello", app.base))
            .bearer_auth(&app.admin)
            .json(&json!({"settings": {"github_repo": "Codertocat/Hello-World", "trigger_min_permission": "maintain"}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let mut writer = fixture("github/issue_comment.created.json");
        writer["comment"]["body"] = json!("/autodev fix the typo");
        let (_, v) = signed_github(&app, "issue_comment", "s-4", &writer).await;
        assert_eq!(v["status"], "ignored", "{v}");
        assert!(v["reason"].as_str().unwrap().contains("needs maintain permission or more") && v["reason"].as_str().unwrap().contains("they have write"), "{v}");
        for (settings, field) in [
            (json!({"trigger_min_permission": "none"}), "settings.trigger_min_permission"),
            (json!({"trigger_min_permission": "owner"}), "settings.trigger_min_permission"),
            (json!({"trigger_bots": ["<!channel>"]}), "settings.trigger_bots[0]"),
        ] {
            let r = app.http.patch(format!("{}/api/v1/projects/hello", app.base)).bearer_auth(&app.admin).json(&json!({"settings": settings})).send().await.unwrap();
            assert_eq!(r.status().as_u16(), 422, "{settings}");
            let body: Value = r.json().await.unwrap();
            assert!(body["error"]["field"].as_str().unwrap_or_default().starts_with(field.split('[').next().unwrap()), "{body}");
        }
        // A labelled issue needs no check (labelling needs triage rights on GitHub).
        let mut labeled = fixture("github/issues.labeled.json");
        labeled["label"]["name"] = json!("autodev");
        labeled["sender"]["login"] = json!("stranger");
        let (status, v) = signed_github(&app, "issues", "s-5", &labeled).await;
        assert_eq!(status, 201, "{v}");
    }
}
