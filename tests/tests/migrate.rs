//! Opening the database: migrators started together, and connect failures that name their
//! cause.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crm_gateway::config::Settings;
use crm_gateway::server::open_database;
use crm_migration::{Migrator, MigratorTrait};
use crm_tests::{Backend, TestDb};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

fn settings(url: &str) -> Settings {
    let mut s = Settings::default();
    s.database.url = url.to_owned();
    s.database.max_connections = 2;
    s
}

/// Replicas (or `crm migrate` runs) started at once on an empty PostgreSQL database all
/// succeed: migrations take an advisory lock, so they run one after the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrators_take_turns() {
    const ROUNDS: usize = 5;
    const MIGRATORS: usize = 4;
    for round in 0..ROUNDS {
        let test_db = TestDb::new(Backend::Postgres).await;
        let barrier = Arc::new(tokio::sync::Barrier::new(MIGRATORS));
        let mut set = JoinSet::new();
        for _ in 0..MIGRATORS {
            let (s, barrier) = (settings(&test_db.url), barrier.clone());
            set.spawn(async move {
                barrier.wait().await;
                open_database(&s).await
            });
        }
        let mut dbs = Vec::new();
        while let Some(r) = set.join_next().await {
            match r.unwrap() {
                Ok(db) => dbs.push(db),
                Err(e) => panic!("round {round}: a migrator failed: {e}"),
            }
        }
        let db = &dbs[0];
        assert!(
            Migrator::get_pending_migrations(&db.conn)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            Migrator::get_applied_migrations(&db.conn)
                .await
                .unwrap()
                .len(),
            Migrator::migrations().len()
        );
        // The schema is complete and usable.
        crm_core::tenant::create(db, &crm_core::clock::SystemClock, "acme", "acme")
            .await
            .unwrap();
        drop(dbs);
    }
}

/// A port nobody listens on: the error says the connection was refused.
#[tokio::test]
async fn a_refused_connect_names_its_cause() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut s = settings(&format!("postgres://postgres@127.0.0.1:{port}/crm"));
    s.database.statement_timeout_ms = 300;
    let start = Instant::now();
    let e = open_database(&s).await.expect_err("nothing listens there");
    assert!(e.to_lowercase().contains("refused"), "{e}");
    assert!(!e.contains("postgres://"), "no connection string: {e}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}

/// A server that answers PostgreSQL's TLS request with "no" while TLS is required: the error
/// names TLS (as it names a certificate rustls rejects), not just "unavailable".
#[tokio::test]
async fn a_tls_failure_names_its_cause() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                // SSLRequest: length 8, code 80877103.
                let mut request = [0u8; 8];
                if sock.read_exact(&mut request).await.is_ok() {
                    let _ = sock.write_all(b"N").await;
                    let mut rest = [0u8; 64];
                    let _ = sock.read(&mut rest).await;
                }
            });
        }
    });
    let s = settings(&format!(
        "postgres://postgres@127.0.0.1:{port}/crm?sslmode=require"
    ));
    let start = Instant::now();
    let e = open_database(&s).await.expect_err("TLS is refused");
    assert!(e.contains("TLS"), "{e}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}
