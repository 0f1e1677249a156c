//! Throwaway PostgreSQL databases for tests.
//!
//! The server comes from `AUTODEV_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`, what this machine kind runs; `.ci/run` starts
//! it). Each [`TestDb`] is a fresh database with a random name, dropped (with its
//! connections) when the value is dropped. An unreachable server fails the test with the fix,
//! rather than skipping it silently.
use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::Connection;
use sqlx::postgres::PgConnection;

pub fn admin_url() -> String {
    std::env::var("AUTODEV_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A database that exists for one test.
pub struct TestDb {
    pub url: String,
    name: String,
}

impl TestDb {
    pub async fn create() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let admin = admin_url();
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let name = format!("autodev_t_{}_{}_{nanos}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let mut conn = PgConnection::connect(&admin).await.unwrap_or_else(|e| {
            panic!(
                "PostgreSQL at {admin} is not reachable ({e}). Start it \
                 (`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`) or point \
                 AUTODEV_TEST_DATABASE_URL at one"
            )
        });
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await.unwrap();
        let base = admin.rsplit_once('/').map(|(b, _)| b.to_string()).unwrap_or(admin.clone());
        Self { url: format!("{base}/{name}"), name }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside any runtime guarantee; a thread with its own runtime does the
        // async cleanup.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async {
                if let Ok(mut conn) = PgConnection::connect(&admin_url()).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}
