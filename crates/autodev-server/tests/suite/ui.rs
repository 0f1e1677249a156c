//! The web UI over HTTP (sessions, CSRF, roles, path prefix) on both backends, and in a real
//! headless Chromium driven over WebDriver (fantoccini + Debian's chromium-driver).
use std::time::Duration;

use autodev_testkit::{finish, make_repo, write};
use serde_json::json;

use super::{TestApp, both};

/// A form body (`application/x-www-form-urlencoded`), as a browser sends it.
trait FormPairs {
    fn form_pairs<K: AsRef<str>, V: AsRef<str>>(self, pairs: &[(K, V)]) -> Self;
}

impl FormPairs for reqwest::RequestBuilder {
    fn form_pairs<K: AsRef<str>, V: AsRef<str>>(self, pairs: &[(K, V)]) -> Self {
        let mut s = form_urlencoded::Serializer::new(String::new());
        for (k, v) in pairs {
            s.append_pair(k.as_ref(), v.as_ref());
        }
        self.header("content-type", "application/x-www-form-urlencoded").body(s.finish())
    }
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// Signs in with `key`; returns the cookie header value.
async fn sign_in(app: &TestApp, key: &str) -> String {
    let r = no_redirects().post(format!("{}/login", app.base)).form_pairs(&[("key", key)]).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
    set.split(';').next().unwrap().to_string()
}

async fn page(app: &TestApp, cookie: &str, path: &str) -> (u16, String, Option<String>) {
    let r = no_redirects().get(format!("{}{path}", app.base)).header("cookie", cookie).send().await.unwrap();
    let status = r.status().as_u16();
    let location = r.headers().get("location").map(|v| v.to_str().unwrap().to_string());
    (status, r.text().await.unwrap(), location)
}

fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").unwrap() + 19;
    html[at..at + 64].to_string()
}

both! {
async fn the_ask_page_answers_with_checked_citations(app) {
    let repo = make_repo(app._dir.path());
    let project = json!({"name": "greeter", "repository": repo, "test_command": "true"});
    app.post("/api/v1/projects", Some(&app.admin)).json(&project).send().await.unwrap();
    app.script.on("unknown", 0, vec![autodev_testkit::text("The check is in check.sh:1-4; see also nowhere.rs:1-2.")]);
    let cookie = sign_in(&app, &app.viewer).await;
    let (status, html, _) = page(&app, &cookie, "/ask").await;
    assert_eq!(status, 200);
    assert!(html.contains("<textarea id=\"question\" name=\"question\""), "{html}");
    let csrf = csrf_of(&html);
    let ask = |question: &'static str| {
        no_redirects()
            .post(format!("{}/ask", app.base))
            .header("cookie", &cookie)
            .form_pairs(&[("csrf", csrf.as_str()), ("project", "greeter"), ("question", question)])
            .send()
    };
    let r = ask("What does the check do?").await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let html = r.text().await.unwrap();
    assert!(html.contains("<code>check.sh:1-4</code> <span class=\"badge ok\">checked</span>"), "{html}");
    assert!(html.contains("<code>nowhere.rs:1-2</code> <span class=\"badge bad\">not in the index</span>"), "{html}");
    assert!(html.contains("Some citations do not check out"), "{html}");
    // The form now carries the conversation; a follow-up is shown under the earlier turn
    // (issue 27), and the page's script can stream it (POST /ask/stream).
    let at = html.find("name=\"conversation\" value=\"").unwrap() + 27;
    let conversation = html[at..at + 36].to_string();
    app.script.on("unknown", 0, vec![autodev_testkit::text("It greps greeting.txt (check.sh:3).")]);
    let r = no_redirects()
        .post(format!("{}/ask", app.base))
        .header("cookie", &cookie)
        .form_pairs(&[("csrf", csrf.as_str()), ("project", "greeter"), ("question", "And which file?"), ("conversation", conversation.as_str())])
        .send()
        .await
        .unwrap();
    let html = r.text().await.unwrap();
    assert!(html.contains("Earlier in this conversation") && html.contains("What does the check do?"), "{html}");
    assert!(html.contains("It greps greeting.txt"), "{html}");
    let r = no_redirects()
        .post(format!("{}/ask/stream", app.base))
        .header("cookie", &cookie)
        .header("origin", &app.base)
        .form_pairs(&[("csrf", csrf.as_str()), ("project", "greeter"), ("question", "And then?"), ("conversation", conversation.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let events = r.text().await.unwrap();
    assert!(events.matches("event: delta").count() > 1 && events.contains("event: answer"), "{events}");
    assert!(events.contains("\"turn\":3"), "{events}");
    // Without the token, refused like every form.
    let r = no_redirects()
        .post(format!("{}/ask/stream", app.base))
        .header("cookie", &cookie)
        .form_pairs(&[("project", "greeter"), ("question", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    // A blank question: the form again, with the API's message for the field.
    let r = ask("   ").await.unwrap();
    assert_eq!(r.status().as_u16(), 422);
    assert!(r.text().await.unwrap().contains("question: must not be empty or blank"));
}

async fn a_run_page_shows_recent_steps_and_a_big_patch_in_part(app) {
    let id = app.run_with_events("Busy", 1_000).await;
    let dir = app._dir.path().join("runs").join(&id);
    std::fs::create_dir_all(&dir).unwrap();
    let hunk = "diff --git a/big.txt b/big.txt\n--- a/big.txt\n+++ b/big.txt\n@@ -0,0 +1,20000 @@\n";
    let body: String = (0..20_000).map(|i| format!("+line {i} of a generated file\n")).collect();
    std::fs::write(dir.join("changes.patch"), format!("{hunk}{body}")).unwrap();
    let cookie = sign_in(&app, &app.viewer).await;
    let (status, html, _) = page(&app, &cookie, &format!("/runs/{id}")).await;
    assert_eq!(status, 200);
    assert!(html.contains("The whole patch") && html.contains(&format!("/runs/{id}/artifacts/changes.patch")), "no link to the whole patch");
    assert!(html.len() < 2_000_000, "the page carried the whole patch: {} bytes", html.len());
    assert!(!html.contains("line 19999 of a generated file"), "the end of the patch was rendered");
    assert!(html.contains("! w999<") && !html.contains("! w0<"), "the most recent steps, not the whole history");
}

async fn sign_in_is_throttled_per_client(app) {
    // 20 attempts a minute from one address, then 429 with when to come back.
    for i in 0..20 {
        let r = no_redirects().post(format!("{}/login", app.base)).form_pairs(&[("key", format!("adk_guess{i}"))]).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 401, "attempt {i}");
    }
    let r = no_redirects().post(format!("{}/login", app.base)).form_pairs(&[("key", app.viewer.as_str())]).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert!(r.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    assert!(r.headers().get("set-cookie").is_none(), "not even a right key signs in while throttled");
}

async fn sessions_roles_and_csrf_hold_over_http(app) {
    // Without a session: to /login, coming back after.
    let (status, _, location) = page(&app, "", "/runs?state=failed").await;
    assert_eq!((status, location.as_deref()), (303, Some("/login?next=%2Fruns%3Fstate%3Dfailed")));
    // A wrong key: the form again, 401, no cookie.
    let r = no_redirects().post(format!("{}/login", app.base)).form_pairs(&[("key", "adk_nope")]).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.headers().get("set-cookie").is_none());
    assert!(r.text().await.unwrap().contains("That key is not valid"));
    // The cookie: HttpOnly, SameSite=Strict, expiring; `next` is followed only on this site.
    let r = no_redirects()
        .post(format!("{}/login", app.base))
        .form_pairs(&[("key", app.viewer.as_str()), ("next", "//evil.example/runs")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["location"], "/runs");
    let set = r.headers()["set-cookie"].to_str().unwrap();
    // Only an exact page of this site: a tab or newline (which browsers drop), a backslash, a
    // scheme or a host fall back to the runs; a page of the site is kept.
    for (next, to) in [
        ("/\t/evil.example", "/runs"),
        ("/\n/evil.example", "/runs"),
        ("/\\evil.example", "/runs"),
        ("https://evil.example/", "/runs"),
        ("/runs?state=failed", "/runs?state=failed"),
    ] {
        let r = no_redirects().post(format!("{}/login", app.base)).form_pairs(&[("key", app.viewer.as_str()), ("next", next)]).send().await.unwrap();
        assert_eq!(r.headers()["location"], to, "{next:?}");
    }
    // Pages tell the browser to run only this site's script and never to frame them.
    let r = no_redirects().get(format!("{}/login", app.base)).send().await.unwrap();
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert_eq!(r.headers()["referrer-policy"], "same-origin");
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Max-Age=43200"), "{set}");
    let viewer = set.split(';').next().unwrap().to_string();
    // The session's token is not stored as is.
    let token = viewer.split('=').nth(1).unwrap();
    assert_eq!(token.len(), 64);
    // A viewer: no "New run" link, and a 403 page for the form.
    let (status, html, _) = page(&app, &viewer, "/runs").await;
    assert_eq!(status, 200);
    assert!(!html.contains("href=\"/runs/new\""), "{html}");
    let (status, html, _) = page(&app, &viewer, "/runs/new").await;
    assert_eq!(status, 403);
    assert!(html.contains("needs the operator role"), "{html}");
    let (status, _, _) = page(&app, &viewer, "/keys").await;
    assert_eq!(status, 403);

    // An operator starts a run from the form: CSRF and origin checked first.
    let repo = make_repo(app._dir.path());
    app.post("/api/v1/projects", Some(&app.admin))
        .json(&json!({"name": "greeter", "repository": repo, "test_command": "sh check.sh"}))
        .send()
        .await
        .unwrap();
    let op = sign_in(&app, &app.operator).await;
    let (_, html, _) = page(&app, &op, "/runs/new").await;
    assert!(html.contains("<select id=\"project\" name=\"project\" required>"), "{html}");
    let csrf = csrf_of(&html);
    let form = |token: &str| vec![("csrf", token.to_string()), ("project", "greeter".into()), ("spec", "Say hello.".into())];
    let forged = no_redirects().post(format!("{}/runs/new", app.base)).header("cookie", &op).form_pairs(&form("0".repeat(64).as_str())).send().await.unwrap();
    assert_eq!(forged.status().as_u16(), 403);
    let cross = no_redirects()
        .post(format!("{}/runs/new", app.base))
        .header("cookie", &op)
        .header("origin", "https://evil.example")
        .form_pairs(&form(&csrf))
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status().as_u16(), 403);
    assert_eq!(app.store.list_runs(10).await.unwrap().len(), 0);
    // A bad spec: the form again with the field named.
    let blank = no_redirects()
        .post(format!("{}/runs/new", app.base))
        .header("cookie", &op)
        .form_pairs(&[("csrf", csrf.as_str()), ("project", "greeter"), ("spec", "   ")])
        .send()
        .await
        .unwrap();
    assert_eq!(blank.status().as_u16(), 422);
    assert!(blank.text().await.unwrap().contains("spec:"));
    let made = no_redirects()
        .post(format!("{}/runs/new", app.base))
        .header("cookie", &op)
        .header("origin", app.base.as_str())
        .form_pairs(&form(&csrf))
        .send()
        .await
        .unwrap();
    assert_eq!(made.status().as_u16(), 303);
    let run_page = made.headers()["location"].to_str().unwrap().to_string();
    let runs = app.store.list_runs(10).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(run_page, format!("/runs/{}", runs[0].id));
    // The same audit record as the API's.
    let (status, html, _) = page(&app, &op, &run_page).await;
    assert_eq!(status, 200);
    assert!(html.contains("Say hello") || html.contains(&runs[0].title), "{html}");
    // Cancel from the page's button.
    let cancel = no_redirects()
        .post(format!("{}{run_page}/cancel", app.base))
        .header("cookie", &op)
        .form_pairs(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status().as_u16(), 303);
    assert_eq!(app.store.get_run(&runs[0].id).await.unwrap().state, "cancelled");
    // Audited as the web UI's: the operation's path under `ui:`, not the API's.
    let audit = app.store.recent_audit(5).await.unwrap();
    let cancelled = format!("ui:/runs/{}/cancel", runs[0].id);
    assert!(audit.iter().any(|a| a.path == cancelled && a.status == 200 && a.key_name.as_deref() == Some("op")), "{audit:#?}");
    // Signing out takes the page's form: a GET (a link, an image elsewhere) or a POST
    // without the session's CSRF token signs nobody out.
    let r = no_redirects().get(format!("{}/logout", app.base)).header("cookie", &op).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 405);
    let r = no_redirects().post(format!("{}/logout", app.base)).header("cookie", &op).form_pairs(&[("csrf", "0".repeat(64).as_str())]).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let (status, _, _) = page(&app, &op, "/runs").await;
    assert_eq!(status, 200, "still signed in");
    // Sign out: the session is gone, also for a copy of the cookie.
    let out = no_redirects().post(format!("{}/logout", app.base)).header("cookie", &op).form_pairs(&[("csrf", csrf.as_str())]).send().await.unwrap();
    assert!(out.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    let (status, _, location) = page(&app, &op, "/runs").await;
    assert_eq!((status, location.as_deref()), (303, Some("/login?next=%2Fruns")));
    // A revoked key ends its sessions.
    autodev_server::auth::revoke(&app.store, app._dir.path(), "viewer").await.unwrap();
    let (status, _, _) = page(&app, &viewer, "/runs").await;
    assert_eq!(status, 303);
}
}

/// Under `AUTODEV_PUBLIC_URL=https://example.com/autodev`, pages answer under the prefix,
/// link with it, and the cookie is `Secure` and scoped to it.
#[tokio::test]
async fn the_ui_works_under_a_path_prefix() {
    let mut app = super::spawn_app_on("sqlite").await;
    app.state.public_url = Some("https://example.com/autodev/".into());
    app.state.base_path = autodev_server::AppState::base_path_of(app.state.public_url.as_deref());
    assert_eq!(app.state.base_path, "/autodev");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    app.base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(autodev_server::serve(listener, app.state.clone(), app.shutdown.clone()));
    let r = no_redirects()
        .post(format!("{}/autodev/login", app.base))
        .form_pairs(&[("key", app.admin.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["location"], "/autodev/runs");
    let set = r.headers()["set-cookie"].to_str().unwrap();
    assert!(set.contains("Path=/autodev") && set.contains("Secure"), "{set}");
    let cookie = set.split(';').next().unwrap().to_string();
    let (status, html, _) = page(&app, &cookie, "/autodev/runs").await;
    assert_eq!(status, 200);
    assert!(html.contains("href=\"/autodev/runs/new\"") && html.contains("src=\"/autodev/ui/ui.js\""), "{html}");
}

/// A real browser: headless Chromium through chromedriver.
mod browser {
    use std::process::{Child, Command, Stdio};

    use fantoccini::{Client, ClientBuilder, Locator};

    use super::*;

    struct Driver(Child);

    impl Drop for Driver {
        fn drop(&mut self) {
            let _ = self.0.kill();
        }
    }

    async fn browser() -> (Driver, Client) {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        autodev_testkit::require_program("chromium", "chromium");
        let driver = Command::new(autodev_testkit::require_program("chromedriver", "chromium-driver"))
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let driver = Driver(driver);
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1200,900"]}),
        );
        let url = format!("http://127.0.0.1:{port}");
        for _ in 0..100 {
            if let Ok(c) = ClientBuilder::rustls().unwrap().capabilities(caps.clone()).connect(&url).await {
                return (driver, c);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chromedriver did not start");
    }

    /// Saves a screenshot of the page when `AUTODEV_SCREENSHOTS` names a directory (the
    /// README's come from `AUTODEV_SCREENSHOTS=docs/screenshots`).
    async fn shot(c: &Client, name: &str) {
        let Ok(dir) = std::env::var("AUTODEV_SCREENSHOTS") else { return };
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), c.screenshot().await.unwrap()).unwrap();
    }

    async fn sign_in_as(c: &Client, app: &TestApp, key: &str) {
        c.goto(&format!("{}/login", app.base)).await.unwrap();
        c.find(Locator::Css("input[name=key]")).await.unwrap().send_keys(key).await.unwrap();
        c.find(Locator::Css("main form button[type=submit]")).await.unwrap().click().await.unwrap();
        c.wait().at_most(Duration::from_secs(10)).for_element(Locator::Css("table#runs")).await.unwrap();
    }

    async fn wait_text(c: &Client, css: &str, text: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(e) = c.find(Locator::Css(css)).await
                && e.text().await.unwrap_or_default().contains(text)
            {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "`{css}` never showed `{text}`");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_person_signs_in_starts_a_run_approves_it_and_watches_it_succeed() {
        let app = super::super::spawn_app_on("sqlite").await;
        let repo = make_repo(app._dir.path());
        app.script
            .plan(json!([
                {"id": "t1", "title": "Write the greeting", "description": "", "depends_on": [], "acceptance": []},
                {"id": "t2", "title": "Check it", "description": "", "depends_on": ["t1"], "acceptance": []}
            ]))
            .on("task:t1", 0, vec![write("greeting.txt", "hello\n"), finish("greeting written")])
            .on("task:t2", 0, vec![finish("nothing to add")]);
        app.post("/api/v1/projects", Some(&app.admin))
            .json(&json!({"name": "greeter", "repository": repo, "test_command": "sh check.sh"}))
            .send()
            .await
            .unwrap();
        let workers = tokio::spawn(autodev_server::workers::run_workers(app.state.clone(), 1, app.shutdown.clone()));
        let (_driver, c) = browser().await;

        // Sign in; the login page first.
        c.goto(&format!("{}/runs", app.base)).await.unwrap();
        assert!(c.current_url().await.unwrap().as_str().contains("/login?next="));
        shot(&c, "login").await;
        sign_in_as(&c, &app, &app.operator).await;

        // Start a run from the form, asking for approval.
        c.find(Locator::LinkText("New run")).await.unwrap().click().await.unwrap();
        c.wait().for_element(Locator::Css("textarea[name=spec]")).await.unwrap();
        c.find(Locator::Css("select[name=project]")).await.unwrap().select_by_value("greeter").await.unwrap();
        c.find(Locator::Css("input[name=title]")).await.unwrap().send_keys("Greet the world").await.unwrap();
        c.find(Locator::Css("textarea[name=spec]"))
            .await
            .unwrap()
            .send_keys("Write hello into greeting.txt.")
            .await
            .unwrap();
        c.find(Locator::Css("input[name=approval]")).await.unwrap().click().await.unwrap();
        shot(&c, "new-run").await;
        c.find(Locator::Css("main form button[type=submit]")).await.unwrap().click().await.unwrap();

        // The run's page turns to awaiting approval by itself; the DAG is drawn.
        wait_text(&c, "#live .meta", "awaiting approval").await;
        wait_text(&c, "#live .meta", "plan").await;
        let svg = c.find(Locator::Css("svg.dag")).await.unwrap();
        assert!(svg.html(false).await.unwrap().contains("t2 · pending"));
        shot(&c, "run-awaiting-approval").await;
        c.find(Locator::Css("textarea[name=comment]")).await.unwrap().send_keys("Looks right.").await.unwrap();
        c.find(Locator::Css("form[action$='/approve'] button")).await.unwrap().click().await.unwrap();

        // ... and to succeeded, live; the diff shows the added line.
        wait_text(&c, "#live .meta", "succeeded").await;
        wait_text(&c, "#h-diff + p", "1 file(s) changed").await;
        let added = c.find(Locator::Css("pre.diff ins")).await.unwrap().text().await.unwrap();
        assert!(added.contains("+hello"), "{added}");
        shot(&c, "run-succeeded").await;

        // The list shows it; the other pages render.
        c.find(Locator::LinkText("Runs")).await.unwrap().click().await.unwrap();
        wait_text(&c, "table#runs tbody", "Greet the world").await;
        shot(&c, "runs").await;
        for (link, name, heading) in [("Projects", "projects", "Projects"), ("Usage", "usage", "Usage")] {
            c.find(Locator::LinkText(link)).await.unwrap().click().await.unwrap();
            wait_text(&c, "main h1", heading).await;
            shot(&c, name).await;
        }

        // Ask the code: the answer with its citations marked.
        app.script.on(
            "unknown",
            0,
            vec![autodev_testkit::text("The tests grep for hello in greeting.txt (check.sh:1-4).")],
        );
        c.find(Locator::LinkText("Ask")).await.unwrap().click().await.unwrap();
        c.wait().for_element(Locator::Css("textarea[name=question]")).await.unwrap();
        c.find(Locator::Css("textarea[name=question]"))
            .await
            .unwrap()
            .send_keys("What do the tests check?")
            .await
            .unwrap();
        c.find(Locator::Css("main form button[type=submit]")).await.unwrap().click().await.unwrap();
        wait_text(&c, "ul.citations", "check.sh:1-4").await;
        wait_text(&c, "ul.citations", "checked").await;
        // A follow-up in the same conversation: streamed into the page (more than one
        // piece), then shown under the first turn.
        app.script.on("unknown", 0, vec![autodev_testkit::text("They grep for hello (check.sh:3).")]);
        c.find(Locator::Css("textarea[name=question]")).await.unwrap().send_keys("Which word?").await.unwrap();
        c.find(Locator::Css("main form button[type=submit]")).await.unwrap().click().await.unwrap();
        wait_text(&c, "section.earlier", "What do the tests check?").await;
        wait_text(&c, "section.earlier", "They grep for hello").await;
        let streamed = c.execute("return document.body.dataset.streamed || '0'", vec![]).await.unwrap();
        assert!(streamed.as_str().unwrap().parse::<u32>().unwrap() > 1, "streamed in {streamed} pieces");
        shot(&c, "ask").await;

        // Sign out: back at the sign-in page, and the pages ask again.
        c.find(Locator::Css("form.logout button")).await.unwrap().click().await.unwrap();
        c.wait().for_element(Locator::Css("input[name=key]")).await.unwrap();
        c.goto(&format!("{}/runs", app.base)).await.unwrap();
        assert!(c.current_url().await.unwrap().as_str().contains("/login"));

        // An admin sees the keys; a new key is shown once.
        sign_in_as(&c, &app, &app.admin).await;
        c.find(Locator::LinkText("Keys")).await.unwrap().click().await.unwrap();
        c.wait().for_element(Locator::Css("input[name=name]")).await.unwrap();
        c.find(Locator::Css("input[name=name]")).await.unwrap().send_keys("ci-bot").await.unwrap();
        c.find(Locator::Css("section.card form button[type=submit]")).await.unwrap().click().await.unwrap();
        let shown = c.wait().at_most(Duration::from_secs(10)).for_element(Locator::Css("#new-key")).await.unwrap();
        let key = shown.prop("value").await.unwrap().unwrap_or_default();
        assert!(key.starts_with("adk_"), "{key}");
        shot(&c, "keys").await;
        c.find(Locator::Css("form.logout button")).await.unwrap().click().await.unwrap();

        // A viewer has no New run link, and the form is refused.
        sign_in_as(&c, &app, &app.viewer).await;
        assert!(c.find(Locator::LinkText("New run")).await.is_err());
        c.goto(&format!("{}/runs/new", app.base)).await.unwrap();
        wait_text(&c, "main h1", "Not allowed").await;

        // A forged form (no session CSRF token, as a page made by someone else would post) is
        // refused even with the session's cookie; the cross-origin case is in the HTTP test.
        c.goto(&format!("{}/runs", app.base)).await.unwrap();
        c.execute(
            "const f = document.createElement('form'); f.method = 'post'; f.action = arguments[0];
             const i = document.createElement('input'); i.name = 'csrf'; i.value = 'forged'; f.appendChild(i);
             document.body.appendChild(f); f.submit();",
            vec![json!(format!("{}/runs/new", app.base))],
        )
        .await
        .unwrap();
        wait_text(&c, "main p.error", "did not come from this site's page").await;
        c.close().await.unwrap();
        app.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), workers).await.unwrap().unwrap();
    }
}
