//! Projects, keys, the queue, webhook deliveries, usage and migrations: on both backends.
use std::collections::HashSet;
use std::time::Duration;

use autodev_domain::{EventKind, RunId, RunState};
use autodev_store::{KeyRow, Migrations, ModelCallRecord, NewRun, ProjectRow, Store, StoreError};

use super::runs::{created, new_run, store_on};

fn project(name: &str) -> ProjectRow {
    ProjectRow {
        id: RunId::new().to_string(),
        name: name.into(),
        repository: "/srv/repo".into(),
        base_branch: Some("main".into()),
        test_command: None,
        settings: "{}".into(),
        created_at: autodev_store::now_ms(),
        updated_at: 0,
    }
}

/// Inserts the runs concurrently, so they reach the store's group commit together.
async fn futures_join(store: &Store, runs: &[(NewRun, bool)]) -> Vec<Result<autodev_domain::Event, StoreError>> {
    let tasks: Vec<_> = runs
        .iter()
        .map(|(run, _)| {
            let (store, run) = (store.clone(), run.clone());
            tokio::spawn(async move { store.insert_run(&run, created()).await })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

fn queued_for(project: &ProjectRow) -> NewRun {
    NewRun { project_id: Some(project.id.clone()), ..new_run() }
}

super::runs::both! {
    async fn projects_are_unique_by_name_and_found_by_id_or_name(store) {
        let p = project("web");
        store.insert_project(&p).await.unwrap();
        let dup = store.insert_project(&ProjectRow { id: RunId::new().to_string(), ..project("web") }).await;
        assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
        assert_eq!(store.find_project("web").await.unwrap().id, p.id);
        assert_eq!(store.find_project(&p.id).await.unwrap().name, "web");
        let other = project("api");
        store.insert_project(&other).await.unwrap();
        let clash = store.update_project(&ProjectRow { name: "web".into(), ..other.clone() }).await;
        assert!(matches!(clash, Err(StoreError::Conflict(_))), "{clash:?}");
        store.update_project(&ProjectRow { test_command: Some("make check".into()), ..other.clone() }).await.unwrap();
        assert_eq!(store.find_project("api").await.unwrap().test_command.as_deref(), Some("make check"));
        assert_eq!(store.list_projects().await.unwrap().iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["api", "web"]);
        assert!(store.delete_project(&other.id).await.unwrap());
        assert!(!store.delete_project(&other.id).await.unwrap());
        assert!(matches!(store.find_project("api").await, Err(StoreError::NotFound(_))));
    }

    // Regression (issue 10): a project named with another project's id shadowed it. The API
    // refuses such names; a database from before that rule still finds the id first.
    async fn a_projects_id_wins_over_another_projects_name(store) {
        // The shadowing project is stored first, so a scan in insertion order meets it first.
        let first = project("first");
        let shadow = project(&first.id);
        store.insert_project(&shadow).await.unwrap();
        store.insert_project(&first).await.unwrap();
        assert_eq!(store.find_project(&first.id).await.unwrap().name, "first");
        assert_eq!(store.find_project(&shadow.id).await.unwrap().name, first.id);
    }

    async fn keys_store_hashes_and_revocation_hides_them(store) {
        let key = KeyRow {
            id: "k1".into(),
            name: "ci".into(),
            role: "operator".into(),
            prefix: "adk_1234".into(),
            hash: "h1".into(),
            created_at: 1,
            last_used_at: None,
            revoked_at: None,
            projects: None,
        };
        store.insert_key(&key).await.unwrap();
        let dup = store.insert_key(&KeyRow { id: "k2".into(), hash: "h2".into(), ..key.clone() }).await;
        assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
        assert_eq!(store.key_by_hash("h1").await.unwrap().unwrap().name, "ci");
        store.touch_keys(&[("k1".into(), 42)]).await.unwrap();
        assert_eq!(store.list_keys().await.unwrap()[0].last_used_at, Some(42));
        assert!(store.revoke_key("ci").await.unwrap());
        assert!(!store.revoke_key("ci").await.unwrap());
        assert!(store.key_by_hash("h1").await.unwrap().is_none());
        store.audit(Some(&key), "POST", "/api/v1/runs", 201, Some("r")).await.unwrap();
        store.audit(None, "POST", "/webhooks/github", 401, None).await.unwrap();
        assert_eq!(store.audit_count().await.unwrap(), 2);
    }

    async fn the_queue_hands_each_run_to_exactly_one_of_many_concurrent_claimers(store) {
        let p = project("q");
        store.insert_project(&p).await.unwrap();
        let mut ids = HashSet::new();
        for _ in 0..40 {
            let run = queued_for(&p);
            store.insert_run(&run, created()).await.unwrap();
            ids.insert(run.id);
        }
        // A run without a project (driven by `autodev run`) is never handed out.
        store.insert_run(&new_run(), created()).await.unwrap();
        let claimers: Vec<_> = (0..4)
            .map(|w| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut mine = Vec::new();
                    loop {
                        let got = store.claim_next_runs(&format!("w{w}"), Duration::from_secs(60), 3).await.unwrap();
                        if got.is_empty() {
                            break mine;
                        }
                        mine.extend(got);
                    }
                })
            })
            .collect();
        let mut all = Vec::new();
        for c in claimers {
            all.extend(c.await.unwrap());
        }
        assert_eq!(all.len(), 40, "every run claimed once");
        assert_eq!(all.iter().cloned().collect::<HashSet<_>>(), ids);
        assert!(store.claim_next_run("late", Duration::from_secs(60)).await.unwrap().is_none());
    }

    async fn an_expired_lease_puts_the_run_back_in_the_queue_but_not_a_finished_or_gated_run(store) {
        let p = project("q");
        store.insert_project(&p).await.unwrap();
        let a = queued_for(&p);
        store.insert_run(&a, created()).await.unwrap();
        let b = queued_for(&p);
        store.insert_run(&b, created()).await.unwrap();
        assert_eq!(store.claim_next_run("dead", Duration::from_millis(1)).await.unwrap(), Some(a.id.clone()));
        store.set_run_state(&b.id, RunState::Planning, None).await.unwrap();
        store.set_run_state(&b.id, RunState::AwaitingApproval, None).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(store.claim_next_run("alive", Duration::from_secs(60)).await.unwrap(), Some(a.id.clone()));
        assert_eq!(store.claim_next_run("other", Duration::from_secs(60)).await.unwrap(), None);
        store.set_run_state(&a.id, RunState::Cancelled, None).await.unwrap();
        store.release_run(&a.id, "alive").await.unwrap();
        assert_eq!(store.claim_next_run("other", Duration::from_secs(60)).await.unwrap(), None);
        let stats = store.stats().await.unwrap();
        assert_eq!(stats.queue_depth, 0);
        assert!(stats.runs_by_state.contains(&("awaiting_approval".to_string(), 1)));
    }

    async fn finishing_claimed_runs_ends_only_the_owners_runs_with_their_events(store) {
        let p = project("q");
        store.insert_project(&p).await.unwrap();
        for _ in 0..3 {
            store.insert_run(&queued_for(&p), created()).await.unwrap();
        }
        let mine = store.claim_next_runs("w1", Duration::from_secs(60), 2).await.unwrap();
        let theirs = store.claim_next_runs("w2", Duration::from_secs(60), 5).await.unwrap();
        assert_eq!((mine.len(), theirs.len()), (2, 1));
        let all: Vec<String> = mine.iter().chain(&theirs).cloned().collect();
        assert_eq!(store.finish_claimed(&all, "w1", RunState::Failed, "done").await.unwrap(), 2);
        assert_eq!(store.finish_claimed(&mine, "w1", RunState::Failed, "again").await.unwrap(), 0);
        assert!(store.finish_claimed(&mine, "w1", RunState::Planning, "x").await.is_err());
        for id in &mine {
            let run = store.get_run(id).await.unwrap();
            assert_eq!((run.state.as_str(), run.reason.as_deref(), run.lease_owner), ("failed", Some("done"), None));
            let last = store.events(id, 0).await.unwrap().pop().unwrap();
            assert!(matches!(last.kind, EventKind::StateChanged { from: RunState::Queued, to: RunState::Failed, .. }), "{last:?}");
        }
        assert_eq!(store.get_run(&theirs[0]).await.unwrap().state, "queued");
    }

    async fn a_short_id_drawn_twice_is_refused_as_a_unique_violation_even_in_a_batch(store) {
        let first = new_run();
        store.insert_run(&first, created()).await.unwrap();
        let twin = NewRun { short_id: first.short_id.clone(), ..new_run() };
        let err = store.insert_run(&twin, created()).await.unwrap_err();
        assert!(err.is_unique_violation(), "{err}");
        // Inserted together with others (group commit), only the twin fails, and the same way.
        let others: Vec<NewRun> = (0..5).map(|_| new_run()).collect();
        let mut all: Vec<_> = others.iter().map(|r| (r.clone(), false)).collect();
        all.insert(2, (NewRun { short_id: first.short_id.clone(), ..new_run() }, true));
        let results = futures_join(&store, &all).await;
        for ((_, twin), result) in all.iter().zip(results) {
            match result {
                Ok(_) => assert!(!twin),
                Err(e) => assert!(*twin && e.is_unique_violation(), "{e}"),
            }
        }
        assert_eq!(store.list_runs(100).await.unwrap().len(), 6);
    }

    async fn a_repeated_delivery_is_recorded_once(store) {
        assert!(store.record_receipt("github", "d-1", "issues").await.unwrap());
        assert!(!store.record_receipt("github", "d-1", "issues").await.unwrap());
        assert!(store.record_receipt("gitlab", "d-1", "issues").await.unwrap());
        store.finish_receipt("github", "d-1", "run created", Some("r1")).await.unwrap();
        assert_eq!(
            store.receipt("github", "d-1").await.unwrap(),
            Some((Some("run created".to_string()), Some("r1".to_string())))
        );
        assert_eq!(store.receipt("github", "d-2").await.unwrap(), None);
    }

    async fn usage_is_grouped_by_project_model_and_day(store) {
        let p = project("web");
        store.insert_project(&p).await.unwrap();
        let run = queued_for(&p);
        store.insert_run(&run, created()).await.unwrap();
        for (turn, model) in [(0, "gpt-4o"), (1, "gpt-4o"), (2, "claude-sonnet-4-5")] {
            let rec = ModelCallRecord {
                run_id: &run.id,
                conversation: "planner",
                turn,
                provider: "openai",
                model,
                response_json: "{}",
                input_tokens: 100,
                output_tokens: 10,
                cost_micros: 7,
                latency_ms: 1,
                reserved_micros: 0,
            };
            store.record_model_call(&rec, None).await.unwrap();
        }
        let rows = store.usage(0).await.unwrap();
        assert_eq!(rows.len(), 2, "{rows:?}");
        let gpt = rows.iter().find(|r| r.model == "gpt-4o").unwrap();
        assert_eq!((gpt.project.as_str(), gpt.calls, gpt.input_tokens, gpt.cost_micros), ("web", 2, 200, 14));
        assert_eq!(gpt.day.len(), 10, "YYYY-MM-DD: {}", gpt.day);
        assert!(store.usage(autodev_store::now_ms() + 60_000).await.unwrap().is_empty());

        // Questions to the code index: their own kind, by key, and in the month's spend.
        let month = autodev_domain::month_of(autodev_store::now_ms());
        let before = store.month_spend(&month).await.unwrap();
        for (id, key) in [("a1", "alice"), ("a2", "alice"), ("a3", "bob")] {
            store
                .record_ask(autodev_store::NewAsk {
                    id,
                    project_id: Some(&p.id),
                    key_id: Some(key),
                    key_name: Some(key),
                    question: "where are budgets reserved?",
                    model: "gpt-4o",
                    input_tokens: 1_000,
                    output_tokens: 50,
                    cost_micros: 100,
                    citations_ok: true,
                })
                .await
                .unwrap();
        }
        let rows = store.usage(0).await.unwrap();
        let asks = rows.iter().find(|r| r.kind == "ask").unwrap();
        assert_eq!((asks.project.as_str(), asks.calls, asks.input_tokens, asks.cost_micros), ("web", 3, 3_000, 300));
        assert_eq!(rows.iter().filter(|r| r.kind == "run").count(), 2);
        let by_key = store.usage_by_key(0).await.unwrap();
        let alice = by_key.iter().find(|r| r.key == "alice").unwrap();
        assert_eq!((alice.kind.as_str(), alice.calls, alice.cost_micros), ("ask", 2, 200));
        // The run was not made through the API: no key.
        let cli = by_key.iter().find(|r| r.kind == "run").unwrap();
        assert_eq!((cli.key.as_str(), cli.calls), ("", 3));
        let after = store.month_spend(&month).await.unwrap();
        let spent = |rows: &[(String, i64)], scope: &str| rows.iter().find(|(s, _)| s == scope).map_or(0, |(_, v)| *v);
        assert_eq!(spent(&after, "global") - spent(&before, "global"), 300);
        assert_eq!(spent(&after, &format!("project:{}", p.id)) - spent(&before, &format!("project:{}", p.id)), 300);
    }

    async fn events_of_one_run_appended_concurrently_are_read_in_order_without_gaps(store) {
        let run = new_run();
        store.insert_run(&run, created()).await.unwrap();
        let writers: Vec<_> = (0..8)
            .map(|i| {
                let store = store.clone();
                let id = run.id.clone();
                tokio::spawn(async move {
                    for j in 0..10 {
                        store.append_event(&id, EventKind::Warning { message: format!("{i}:{j}") }).await.unwrap();
                    }
                })
            })
            .collect();
        // A follower reading while the writers run never sees a later event before an
        // earlier one commits (it would skip the earlier one for good).
        let mut seen = Vec::new();
        let mut last = 0;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while seen.len() < 81 {
            assert!(std::time::Instant::now() < deadline, "the follower missed events: saw {} of 81", seen.len());
            for e in store.events(&run.id, last).await.unwrap() {
                last = e.seq;
                seen.push(e.seq);
            }
            tokio::task::yield_now().await;
        }
        for w in writers {
            w.await.unwrap();
        }
        let all: Vec<i64> = store.events(&run.id, 0).await.unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(seen, all);
    }

    async fn list_pages_filter_by_project_and_state(store) {
        let p = project("web");
        store.insert_project(&p).await.unwrap();
        for _ in 0..5 {
            store.insert_run(&queued_for(&p), created()).await.unwrap();
        }
        store.insert_run(&new_run(), created()).await.unwrap();
        let page = store.list_runs_page(Some(&p.id), None, None, 3, None).await.unwrap();
        assert_eq!(page.len(), 3);
        let last = page.last().unwrap();
        let rest =
            store.list_runs_page(Some(&p.id), None, None, 3, Some((last.created_at, last.id.clone()))).await.unwrap();
        assert_eq!(rest.len(), 2);
        assert_eq!(store.list_runs_page(None, None, Some(RunState::Queued), 50, None).await.unwrap().len(), 6);
        assert_eq!(store.list_runs_page(None, None, Some(RunState::Failed), 50, None).await.unwrap().len(), 0);
        // A scoped key's listing: its projects' runs only (a run without a project is not one).
        let q = project("api");
        store.insert_project(&q).await.unwrap();
        store.insert_run(&queued_for(&q), created()).await.unwrap();
        let scope = format!("{},{}", p.id, q.id);
        assert_eq!(store.list_runs_page(None, Some(&scope), None, 50, None).await.unwrap().len(), 6);
        assert_eq!(store.list_runs_page(None, Some(&q.id), None, 50, None).await.unwrap().len(), 1);
        assert_eq!(store.list_runs_page(None, Some("nothing"), None, 50, None).await.unwrap().len(), 0);
    }
}

#[tokio::test]
async fn opening_without_migrating_names_the_pending_migrations_on_both_backends() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fresh.db");
    let err = Store::open_sqlite(&path, Migrations::Check).await.unwrap_err();
    assert!(matches!(&err, StoreError::Pending(v) if v.len() >= 4), "{err}");
    assert!(err.to_string().contains("autodev migrate"), "{err}");
    let store = Store::open(&path).await.unwrap();
    assert!(store.pending_migrations().await.unwrap().is_empty());
    Store::open_sqlite(&path, Migrations::Check).await.unwrap();

    let db = autodev_testkit::pg::TestDb::create().await;
    let err = Store::connect(&db.url, Migrations::Check).await.unwrap_err();
    assert!(matches!(&err, StoreError::Pending(v) if v.len() >= 4), "{err}");
    let store = Store::connect(&db.url, Migrations::Apply).await.unwrap();
    assert_eq!(store.migrate().await.unwrap(), Vec::<i64>::new());
    Store::connect(&db.url, Migrations::Check).await.unwrap();
    assert!(matches!(Store::connect("mysql://x/y", Migrations::Apply).await, Err(StoreError::Url(_))));
}
