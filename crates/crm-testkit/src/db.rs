//! Fresh, private databases and the runtime tests run on.

use sea_orm::ConnectionTrait;
use std::future::Future;
use std::path::PathBuf;
use uuid::Uuid;

/// The database a test runs on; [`both!`](crate::both) runs each test on both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A fresh SQLite file in a temporary directory.
    Sqlite,
    /// A fresh database on the PostgreSQL server of `CRM_TEST_POSTGRES_URL`.
    Postgres,
}

/// Runs a test's future to completion on a new multi-threaded tokio runtime with 2 workers
/// (what `#[tokio::test(flavor = "multi_thread", worker_threads = 2)]` does); the runtime
/// [`both!`](crate::both) uses.
pub fn block_on<F: Future>(test: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime for the test")
        .block_on(test)
}

/// A directory removed (with its contents) on drop.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Creates a new, empty directory under the system's temporary directory.
pub fn temp_dir() -> TempDir {
    let p = std::env::temp_dir().join(format!("crm-test-{}", Uuid::now_v7().simple()));
    std::fs::create_dir_all(&p).unwrap();
    TempDir(p)
}

/// The PostgreSQL server for tests (`CRM_TEST_POSTGRES_URL`, a URL without a database name):
/// required, never silently skipped; panics when it is not set.
pub fn postgres_server() -> String {
    std::env::var("CRM_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!("CRM_TEST_POSTGRES_URL is not set: run the tests with scripts/test, which provides a PostgreSQL server")
    })
}

/// A fresh, private, empty (not migrated) database: a SQLite file in a [`TempDir`], or a
/// PostgreSQL database `crm_test_<uuid>` created on [`postgres_server`]. Dropping it removes
/// the file, or drops the database (`WITH (FORCE)`, closing connections still open).
#[derive(Debug)]
pub struct TestDb {
    /// The URL to connect to (`sqlite://…?mode=rwc` or `postgres://…/crm_test_…`).
    pub url: String,
    backend: Backend,
    admin_url: Option<String>,
    name: String,
    _dir: Option<TempDir>,
}

impl TestDb {
    /// Creates the database.
    pub async fn new(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => {
                let dir = temp_dir();
                let url = format!("sqlite://{}/crm.db?mode=rwc", dir.0.display());
                TestDb {
                    url,
                    backend,
                    admin_url: None,
                    name: String::new(),
                    _dir: Some(dir),
                }
            }
            Backend::Postgres => {
                let server = postgres_server().trim_end_matches('/').to_owned();
                let name = format!("crm_test_{}", Uuid::now_v7().simple());
                let admin_url = format!("{server}/postgres");
                let admin = sea_orm::Database::connect(&admin_url)
                    .await
                    .unwrap_or_else(|e| panic!("cannot connect to {admin_url}: {e}"));
                admin
                    .execute_unprepared(&format!("CREATE DATABASE {name}"))
                    .await
                    .unwrap();
                admin.close().await.ok();
                TestDb {
                    url: format!("{server}/{name}"),
                    backend,
                    admin_url: Some(admin_url),
                    name,
                    _dir: None,
                }
            }
        }
    }

    /// The kind of database.
    pub fn backend(&self) -> Backend {
        self.backend
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(admin_url) = self.admin_url.take() {
            let name = std::mem::take(&mut self.name);
            // On a thread of its own: drop may run inside (or outside) a runtime.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    if let Ok(admin) = sea_orm::Database::connect(&admin_url).await {
                        let _ = admin
                            .execute_unprepared(&format!(
                                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                            ))
                            .await;
                        let _ = admin.close().await;
                    }
                });
            })
            .join();
        }
    }
}
