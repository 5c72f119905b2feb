//! Test harness: a real gateway on an ephemeral port, on a fresh SQLite file or a fresh
//! PostgreSQL database (created on the server named by `CRM_TEST_POSTGRES_URL`, dropped
//! afterwards), driven by the generated client.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crm_api::v1;
use crm_core::auth::{Principal, mint_hs256};
use crm_core::clock::SystemClock;
use crm_core::db::Db;
use crm_gateway::config::Settings;
use std::net::SocketAddr;
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use uuid::Uuid;

pub const SECRET: &str = "test-secret-0123456789abcdef";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Instantiates an async test fn `name(Backend)` for both databases.
#[macro_export]
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::Backend::Postgres).await
                }
            )*
        }
    };
}

/// A fresh, private database.
pub struct TestDb {
    pub url: String,
    admin_url: Option<String>,
    name: String,
    _dir: Option<TempDir>,
}

/// A directory removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn temp_dir() -> TempDir {
    let p = std::env::temp_dir().join(format!("crm-test-{}", Uuid::now_v7().simple()));
    std::fs::create_dir_all(&p).unwrap();
    TempDir(p)
}

/// The PostgreSQL server for tests: required, never silently skipped.
pub fn postgres_server() -> String {
    std::env::var("CRM_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!("CRM_TEST_POSTGRES_URL is not set: run the tests with scripts/test, which provides a PostgreSQL server")
    })
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => {
                let dir = temp_dir();
                let url = format!("sqlite://{}/crm.db?mode=rwc", dir.0.display());
                TestDb {
                    url,
                    admin_url: None,
                    name: String::new(),
                    _dir: Some(dir),
                }
            }
            Backend::Postgres => {
                let server = postgres_server().trim_end_matches('/').to_owned();
                let name = format!("crm_test_{}", Uuid::now_v7().simple());
                let admin_url = format!("{server}/postgres");
                let admin = sea_orm::Database::connect(&admin_url).await.unwrap();
                use sea_orm::ConnectionTrait;
                admin
                    .execute_unprepared(&format!("CREATE DATABASE {name}"))
                    .await
                    .unwrap();
                admin.close().await.ok();
                TestDb {
                    url: format!("{server}/{name}"),
                    admin_url: Some(admin_url),
                    name,
                    _dir: None,
                }
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(admin_url) = self.admin_url.take() {
            let name = std::mem::take(&mut self.name);
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    use sea_orm::ConnectionTrait;
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

/// A gateway serving a private database.
pub struct TestServer {
    pub addr: SocketAddr,
    pub db: Db,
    pub channel: Channel,
    pub settings: Settings,
    shutdown: Option<oneshot::Sender<()>>,
    // Declared last: dropped after the server stopped.
    pub test_db: TestDb,
}

impl TestServer {
    pub async fn start(backend: Backend) -> TestServer {
        Self::start_with(backend, |_| {}).await
    }

    /// Starts with adjusted settings.
    pub async fn start_with(backend: Backend, adjust: impl FnOnce(&mut Settings)) -> TestServer {
        let test_db = TestDb::new(backend).await;
        Self::start_configured(test_db, None, adjust).await
    }

    /// Starts on a database; `gateway_url` overrides the URL the gateway uses (e.g. through
    /// a proxy) while the test keeps its own connection.
    pub async fn start_on(test_db: TestDb, gateway_url: Option<String>) -> TestServer {
        Self::start_configured(test_db, gateway_url, |_| {}).await
    }

    /// [`TestServer::start_on`] with adjusted settings (applied after the harness's own).
    pub async fn start_on_with(
        test_db: TestDb,
        gateway_url: Option<String>,
        adjust: impl FnOnce(&mut Settings),
    ) -> TestServer {
        Self::start_configured(test_db, gateway_url, adjust).await
    }

    async fn start_configured(
        test_db: TestDb,
        gateway_url: Option<String>,
        adjust: impl FnOnce(&mut Settings),
    ) -> TestServer {
        let mut settings = Settings::default();
        settings.database.url = gateway_url.unwrap_or_else(|| test_db.url.clone());
        settings.database.max_connections = 8;
        settings.auth.hs256_secret = SECRET.into();
        // Tests change roles and suspend tenants and expect the next call to see it.
        settings.auth.policy_cache_ms = 0;
        adjust(&mut settings);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let s = settings.clone();
        tokio::spawn(async move {
            if let Err(e) = crm_gateway::server::serve(s, listener, async {
                let _ = rx.await;
            })
            .await
            {
                eprintln!("server failed: {e}");
            }
        });
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();
        // Wait for SERVING.
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let r = health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: String::new(),
                })
                .await;
            if let Ok(r) = r
                && r.get_ref().status
                    == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
            {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "gateway did not become ready"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let db = Db::connect(&test_db.url, 2).await.unwrap();
        TestServer {
            addr,
            db,
            channel,
            settings,
            shutdown: Some(tx),
            test_db,
        }
    }

    /// Creates a tenant (with its admin role).
    pub async fn tenant(&self, id: &str) {
        crm_core::tenant::create(&self.db, &SystemClock, id, id)
            .await
            .unwrap();
    }

    pub fn token(&self, tenant: &str, user: Uuid, roles: &[&str]) -> String {
        let p = Principal {
            tenant: tenant.into(),
            user,
            roles: roles.iter().map(|r| (*r).to_string()).collect(),
        };
        mint_hs256(
            SECRET.as_bytes(),
            "crm",
            "crm-api",
            &p,
            chrono::Utc::now().timestamp(),
            3600,
        )
        .unwrap()
    }

    pub fn accounts(&self) -> v1::account_service_client::AccountServiceClient<Channel> {
        v1::account_service_client::AccountServiceClient::new(self.channel.clone())
    }
    pub fn contacts(&self) -> v1::contact_service_client::ContactServiceClient<Channel> {
        v1::contact_service_client::ContactServiceClient::new(self.channel.clone())
    }
    pub fn products(&self) -> v1::product_service_client::ProductServiceClient<Channel> {
        v1::product_service_client::ProductServiceClient::new(self.channel.clone())
    }
    pub fn orders(&self) -> v1::order_service_client::OrderServiceClient<Channel> {
        v1::order_service_client::OrderServiceClient::new(self.channel.clone())
    }
    pub fn directory(&self) -> v1::directory_service_client::DirectoryServiceClient<Channel> {
        v1::directory_service_client::DirectoryServiceClient::new(self.channel.clone())
    }
    pub fn access(&self) -> v1::access_service_client::AccessServiceClient<Channel> {
        v1::access_service_client::AccessServiceClient::new(self.channel.clone())
    }
    pub fn audit(&self) -> v1::audit_service_client::AuditServiceClient<Channel> {
        v1::audit_service_client::AuditServiceClient::new(self.channel.clone())
    }
    pub fn custom_fields(
        &self,
    ) -> v1::custom_field_service_client::CustomFieldServiceClient<Channel> {
        v1::custom_field_service_client::CustomFieldServiceClient::new(self.channel.clone())
    }

    /// Rows of a table for a tenant (deleted ones included).
    pub async fn count(&self, table: &str, tenant: &str) -> i64 {
        crm_core::store::count(&self.db.conn, table, tenant)
            .await
            .unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A request carrying a bearer token.
pub fn req<T>(token: &str, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

/// Asserts a status code and returns the status.
pub fn expect_code<T: std::fmt::Debug>(r: Result<T, Status>, code: Code) -> Status {
    match r {
        Ok(v) => panic!("expected {code:?}, got Ok({v:?})"),
        Err(s) => {
            assert_eq!(s.code(), code, "unexpected status: {s:?}");
            s
        }
    }
}

/// The fields named in a status's BadRequest details.
pub fn violated_fields(s: &Status) -> Vec<String> {
    use tonic_types::StatusExt;
    s.get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

/// The ErrorInfo reason of a status.
pub fn reason(s: &Status) -> String {
    use tonic_types::StatusExt;
    s.get_details_error_info()
        .map(|i| i.reason)
        .unwrap_or_default()
}

pub fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask {
        paths: paths.iter().map(|p| (*p).to_string()).collect(),
    })
}
