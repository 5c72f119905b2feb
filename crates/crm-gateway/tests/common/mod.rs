//! The real `crm` binary run by the tests of this directory: commands with a database and a
//! port, `crm serve` started and waited for, and a throwaway database on each backend.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use sea_orm::{ConnectionTrait, Database};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::Request;
use tonic::transport::Channel;

pub const BIN: &str = env!("CARGO_BIN_EXE_crm");

/// `crm <args>` on `db`, listening on `port`, with `env` added.
pub fn crm(
    dir: &std::path::Path,
    db: &str,
    port: u16,
    args: &[&str],
    env: &[(&str, String)],
) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .current_dir(dir)
        .env("CRM__DATABASE__URL", db)
        .env("CRM__SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("CRM__AUTH__HS256_SECRET", "kill-secret-0123456789abcdef")
        // A killed replica's jobs come back after the lease: keep it short here.
        .env("CRM__JOBS__LEASE_MS", "2000")
        .env("CRM__JOBS__POLL_INTERVAL_MS", "200");
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

pub fn authed<T>(token: &str, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A tenant `acme` and an admin token for it.
pub fn tenant_and_token(dir: &std::path::Path, db: &str, port: u16) -> String {
    assert!(
        crm(dir, db, port, &["tenant", "create", "acme"], &[])
            .output()
            .unwrap()
            .status
            .success()
    );
    let out = crm(
        dir,
        db,
        port,
        &["token", "--tenant", "acme", "--role", "admin"],
        &[],
    )
    .output()
    .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// `crm serve`, once its health says SERVING for `service`; its log goes to `dir/log`.
// The child is returned to the caller, who kills and waits for it.
#[allow(clippy::zombie_processes)]
pub async fn serve(
    dir: &std::path::Path,
    db: &str,
    port: u16,
    log: &str,
    service: &str,
    env: &[(&str, String)],
) -> Child {
    let log = std::fs::File::create(dir.join(log)).unwrap();
    let channel = Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect_lazy();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let mut child = crm(dir, db, port, &["serve"], env)
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await;
        if r.is_ok_and(|r| r.get_ref().status == 1) {
            return child;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("crm serve did not become ready");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `test` with a temporary directory and the URL of a new SQLite database in it.
pub async fn on_sqlite<F, Fut>(tag: &str, test: F)
where
    F: FnOnce(std::path::PathBuf, String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let dir = std::env::temp_dir().join(format!("crm-{tag}-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = format!("sqlite://{}/crm.db?mode=rwc", dir.display());
    test(dir.clone(), db).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `test` with a temporary directory and a new PostgreSQL database of its own on the
/// server of `CRM_TEST_POSTGRES_URL` (as scripts/test provides), dropped after.
pub async fn on_postgres<F, Fut>(tag: &str, test: F)
where
    F: FnOnce(std::path::PathBuf, String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let server = std::env::var("CRM_TEST_POSTGRES_URL").expect(
        "CRM_TEST_POSTGRES_URL is not set: run the tests with scripts/test, which provides a PostgreSQL server",
    );
    let name = format!("crm_{tag}_{}", uuid::Uuid::now_v7().simple());
    let admin = Database::connect(format!("{server}/postgres"))
        .await
        .unwrap();
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("crm-{tag}-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    test(dir.clone(), format!("{server}/{name}")).await;
    let _ = std::fs::remove_dir_all(&dir);
    admin
        .execute_unprepared(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .await
        .unwrap();
}
