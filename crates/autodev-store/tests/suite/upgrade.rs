//! Rolling upgrades: version N and N+1 of Autodev run against one database while pods are
//! replaced, so migrations only expand (checked here on the SQL), a database a newer build
//! migrated opens and works with this build's queries, and a database the previous release
//! left (with its data) is migrated in place with nothing lost.
use std::path::Path;

use autodev_domain::{EventKind, RunState};
use autodev_store::{Migrations, Store};

/// The migrations after this one were written under the expand-only rule (earlier ones
/// predate rolling upgrades: 0004 dropped an index it replaced).
const RULE_SINCE: u32 = 13;

fn migrations(backend: &str) -> Vec<(u32, String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations").join(backend);
    let mut files: Vec<(u32, String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            let version = name.split('_').next().unwrap().parse().unwrap();
            (version, name, std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    files.sort();
    files
}

#[test]
fn migrations_only_expand_and_both_backends_have_the_same_versions() {
    let lite = migrations("sqlite");
    let pg = migrations("postgres");
    let names = |m: &[(u32, String, String)]| m.iter().map(|(_, n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&lite), names(&pg), "each migration exists for both backends, with the same name");
    for (version, name, sql) in lite.iter().chain(&pg).filter(|(v, _, _)| *v >= RULE_SINCE) {
        // Comments aside, statement by statement.
        let code: String = sql.lines().map(|l| l.split("--").next().unwrap_or("")).collect::<Vec<_>>().join("\n");
        for statement in code.split(';').map(|s| s.split_whitespace().collect::<Vec<_>>().join(" ").to_uppercase()) {
            for banned in ["DROP ", "RENAME ", "ALTER COLUMN", "SET NOT NULL", "TRUNCATE "] {
                assert!(
                    !statement.contains(banned),
                    "{name} (version {version}): `{banned}` breaks the release before it during a rolling upgrade; add now, remove in a later release once nothing reads it: {statement}"
                );
            }
            if statement.contains("ADD COLUMN") && statement.contains("NOT NULL") {
                assert!(
                    statement.contains("DEFAULT"),
                    "{name}: a NOT NULL column needs a DEFAULT, or the previous release's inserts fail: {statement}"
                );
            }
        }
    }
}

enum Db {
    Lite(tempfile::TempDir),
    Pg(autodev_testkit::pg::TestDb),
}

impl Db {
    async fn new(backend: &str) -> Self {
        match backend {
            "sqlite" => Db::Lite(tempfile::tempdir().unwrap()),
            _ => Db::Pg(autodev_testkit::pg::TestDb::create().await),
        }
    }

    fn url(&self) -> String {
        match self {
            Db::Lite(dir) => dir.path().join("autodev.db").display().to_string(),
            Db::Pg(db) => db.url.clone(),
        }
    }

    async fn open(&self, migrations: Migrations) -> Store {
        Store::connect(&self.url(), migrations).await.unwrap()
    }

    /// What a newer release's migration does: a defaulted column, a table, and its
    /// bookkeeping row.
    async fn expand_as_a_newer_release(&self) {
        // Only the checksum's literal differs between the two SQL dialects.
        let checksum = if matches!(self, Db::Lite(_)) { "X'00'" } else { "'\\x00'" };
        let statements = [
            "ALTER TABLE runs ADD COLUMN future_priority INTEGER NOT NULL DEFAULT 0".to_string(),
            "CREATE TABLE future_notes (id TEXT PRIMARY KEY, body TEXT NOT NULL)".to_string(),
            format!(
                "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES (9999, 'future', TRUE, {checksum}, 1)"
            ),
        ];
        // The same statements through whichever pool the backend has.
        macro_rules! run_all {
            ($pool:expr) => {{
                let pool = $pool.await.unwrap();
                for s in &statements {
                    sqlx::query(sqlx::AssertSqlSafe(s.as_str())).execute(&pool).await.unwrap();
                }
            }};
        }
        match self {
            Db::Lite(dir) => {
                run_all!(sqlx::SqlitePool::connect(&format!("sqlite://{}", dir.path().join("autodev.db").display())))
            }
            Db::Pg(db) => run_all!(sqlx::PgPool::connect(&db.url)),
        }
    }
}

/// The queries a release runs most, end to end: a run made, events, state changes, a
/// claim, reads, artifacts, retention.
async fn exercise(store: &Store) -> String {
    let (run, created) = autodev_testkit::new_run("rolling");
    store.insert_run(&run, created).await.unwrap();
    store.set_run_state(&run.id, RunState::Planning, None).await.unwrap();
    store.append_event(&run.id, EventKind::Warning { message: "step".into() }).await.unwrap();
    store.claim_run(&run.id, "token-1", std::time::Duration::from_secs(30), false).await.unwrap();
    store.put_artifact(&run.id, "report.md", "# report").await.unwrap();
    store.set_run_state(&run.id, RunState::Failed, Some("done")).await.unwrap();
    store.release_run(&run.id, "token-1").await.unwrap();
    assert_eq!(store.get_run(&run.id).await.unwrap().state, "failed");
    assert!(store.list_runs(10).await.unwrap().iter().any(|r| r.id == run.id));
    assert_eq!(
        store.artifact(Path::new("/nonexistent"), &run.id, "report.md").await.unwrap().as_deref(),
        Some("# report")
    );
    assert!(store.collect_run(&run.id, false).await.unwrap().unwrap().events > 0);
    store.stats().await.unwrap();
    run.id
}

async fn newer_schema(backend: &str) {
    let db = Db::new(backend).await;
    db.open(Migrations::Apply).await;
    db.expand_as_a_newer_release().await;
    // This build opens it whichever way it is started (a pod of the old version restarting
    // mid-rollout), sees the newer migration for what it is, and works.
    let store = db.open(Migrations::Apply).await;
    db.open(Migrations::Check).await;
    let status = store.migration_status().await.unwrap();
    assert_eq!(status.newer, vec![9999]);
    assert!(status.pending.is_empty());
    exercise(&store).await;
}

async fn previous_release_data(backend: &str) {
    let db = Db::new(backend).await;
    let store = db.open(Migrations::Leave).await;
    let status = store.migration_status().await.unwrap();
    let previous = status.pending[status.pending.len() - 2].0;
    store.migrate_to(previous).await.unwrap();
    // The previous release's data: a run with events, written by the queries both share.
    let (run, created) = autodev_testkit::new_run("before the upgrade");
    store.insert_run(&run, created).await.unwrap();
    store.append_event(&run.id, EventKind::Warning { message: "old".into() }).await.unwrap();
    // A build that needs the last migration refuses to start on it without migrating.
    assert!(Store::connect(&db.url(), Migrations::Check).await.is_err());
    // Upgraded in place while that data is there.
    let store = db.open(Migrations::Apply).await;
    assert!(store.pending_migrations().await.unwrap().is_empty());
    let kept = store.get_run(&run.id).await.unwrap();
    assert_eq!(kept.title, "before the upgrade");
    assert_eq!(store.events(&run.id, 0).await.unwrap().len(), 2);
    exercise(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn this_build_works_on_a_database_a_newer_build_expanded_sqlite() {
    newer_schema("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn this_build_works_on_a_database_a_newer_build_expanded_postgres() {
    newer_schema("postgres").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_previous_release_data_is_migrated_in_place_sqlite() {
    previous_release_data("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_previous_release_data_is_migrated_in_place_postgres() {
    previous_release_data("postgres").await;
}
