//! Queue throughput: no-op jobs from enqueue to done, on SQLite and on PostgreSQL.
//!
//! A job is a run made for a project, exactly what `POST /api/v1/runs` and the webhooks
//! enqueue (the run row, its `run_created` event). Producers enqueue `JOBS` of them while two
//! workers claim them (`claim_next_runs`: a lease, `FOR UPDATE SKIP LOCKED` on PostgreSQL,
//! up to `BATCH` at a time), do nothing, and end them (`finish_claimed`: the terminal state,
//! its event, the lease released). The figure is jobs per second from the first enqueue to
//! the last job done; every job is checked to be done exactly once.
//!
//! `cargo bench -p autodev-store --bench queue` (PostgreSQL from AUTODEV_TEST_DATABASE_URL,
//! default postgres://postgres@127.0.0.1:5432/test; a throwaway database is made).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use autodev_domain::{EventKind, RunId, RunState};
use autodev_store::{Migrations, NewRun, ProjectRow, Store};

const JOBS: usize = 20_000;
const PRODUCERS: usize = 64;
const WORKERS: usize = 2;
const BATCH: i64 = 64;

fn job(project: &str) -> (NewRun, EventKind) {
    let (run, created) = autodev_testkit::new_run("no-op");
    (NewRun { base_commit: String::new(), project_id: Some(project.to_string()), ..run }, created)
}

async fn measure(store: Store) -> f64 {
    let project = ProjectRow {
        id: RunId::new().to_string(),
        name: "bench".into(),
        repository: "/srv/repo".into(),
        base_branch: None,
        test_command: None,
        settings: "{}".into(),
        created_at: 0,
        updated_at: 0,
    };
    store.insert_project(&project).await.unwrap();
    let done = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (store, done) = (store.clone(), done.clone());
            tokio::spawn(async move {
                let owner = format!("bench-worker-{w}");
                let mut mine = Vec::new();
                while done.load(Ordering::Relaxed) < JOBS {
                    let ids = store.claim_next_runs(&owner, Duration::from_secs(60), BATCH).await.unwrap();
                    if ids.is_empty() {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        continue;
                    }
                    let n = store.finish_claimed(&ids, &owner, RunState::Cancelled, "no-op job done").await.unwrap();
                    assert_eq!(n, ids.len(), "a claimed job was not this worker's to finish");
                    done.fetch_add(n, Ordering::Relaxed);
                    mine.extend(ids);
                }
                mine
            })
        })
        .collect();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let (store, project) = (store.clone(), project.id.clone());
            // Shares that add up to exactly JOBS.
            let share = JOBS / PRODUCERS + usize::from(p < JOBS % PRODUCERS);
            tokio::spawn(async move {
                for _ in 0..share {
                    // As the API does: a short id drawn twice is retried with a new id.
                    loop {
                        let (run, created) = job(&project);
                        match store.insert_run(&run, created).await {
                            Ok(_) => break,
                            Err(e) if e.is_unique_violation() => continue,
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
            })
        })
        .collect();
    for p in producers {
        p.await.unwrap();
    }
    let enqueued = start.elapsed();
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.unwrap());
    }
    let elapsed = start.elapsed();
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!((all.len(), unique.len()), (JOBS, JOBS), "every job done exactly once");
    println!("  {} jobs: enqueued in {:.2}s, all done in {:.2}s", JOBS, enqueued.as_secs_f64(), elapsed.as_secs_f64());
    JOBS as f64 / elapsed.as_secs_f64()
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would pass nothing and should not
    // spend a minute here.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = Store::open(&dir.path().join("queue.db")).await.unwrap();
        println!("queue, SQLite ({WORKERS} workers, {PRODUCERS} producers, claims of up to {BATCH}):");
        let rate = measure(sqlite).await;
        println!("  {rate:.0} jobs/s enqueue→done");

        let db = autodev_testkit::pg::TestDb::create().await;
        let pg = Store::connect(&db.url, Migrations::Apply).await.unwrap();
        println!("queue, PostgreSQL ({WORKERS} workers, {PRODUCERS} producers, claims of up to {BATCH}):");
        let rate = measure(pg).await;
        println!("  {rate:.0} jobs/s enqueue→done");
    });
}
