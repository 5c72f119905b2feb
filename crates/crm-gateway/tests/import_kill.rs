//! The real binary killed with SIGKILL in the middle of an import, then started again: the
//! import finishes and every row of the file is accounted for exactly once (one row result
//! each, one lead each), on SQLite and on PostgreSQL (`CRM_TEST_POSTGRES_URL`, a server URL
//! without a database, as scripts/test provides; a database of its own is made and dropped).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crm_api::google::longrunning::{self as lro, operations_client::OperationsClient};
use crm_api::v1::{self, import_service_client::ImportServiceClient};
use prost::Message;
use sea_orm::{ConnectionTrait, Database, Statement};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::Request;
use tonic::transport::Channel;

const BIN: &str = env!("CARGO_BIN_EXE_crm");
const ROWS: usize = 4_000;

fn crm(dir: &std::path::Path, db: &str, port: u16, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .current_dir(dir)
        .env("CRM__DATABASE__URL", db)
        .env("CRM__SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("CRM__AUTH__HS256_SECRET", "kill-secret-0123456789abcdef")
        // A killed replica's jobs come back after the lease: keep it short here.
        .env("CRM__JOBS__LEASE_MS", "2000")
        .env("CRM__JOBS__POLL_INTERVAL_MS", "200");
    c
}

fn authed<T>(token: &str, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

// The child is returned to the caller, who kills and waits for it.
#[allow(clippy::zombie_processes)]
async fn serve(dir: &std::path::Path, db: &str, port: u16, log: &str) -> Child {
    let log = std::fs::File::create(dir.join(log)).unwrap();
    let channel = Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect_lazy();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let mut child = crm(dir, db, port, &["serve"])
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: "crm.v1.ImportService".into(),
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

fn created(op: &lro::Operation) -> i64 {
    op.metadata
        .as_ref()
        .and_then(|m| v1::OperationMetadata::decode(m.value.as_slice()).ok())
        .and_then(|m| m.counts.get("created").copied())
        .unwrap_or(0)
}

#[tokio::test]
async fn an_import_survives_kill_9_of_crm_serve_sqlite() {
    let dir = std::env::temp_dir().join(format!("crm-kill-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = format!("sqlite://{}/crm.db?mode=rwc", dir.display());
    killed_and_resumed(&dir, &db).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_import_survives_kill_9_of_crm_serve_postgres() {
    let server = std::env::var("CRM_TEST_POSTGRES_URL").expect(
        "CRM_TEST_POSTGRES_URL is not set: run the tests with scripts/test, which provides a PostgreSQL server",
    );
    let name = format!("crm_kill_{}", uuid::Uuid::now_v7().simple());
    let admin = Database::connect(format!("{server}/postgres"))
        .await
        .unwrap();
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("crm-kill-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    killed_and_resumed(&dir, &format!("{server}/{name}")).await;
    let _ = std::fs::remove_dir_all(&dir);
    admin
        .execute_unprepared(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .await
        .unwrap();
}

async fn killed_and_resumed(dir: &std::path::Path, db_url: &str) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    assert!(
        crm(dir, db_url, port, &["tenant", "create", "acme"])
            .output()
            .unwrap()
            .status
            .success()
    );
    let out = crm(
        dir,
        db_url,
        port,
        &["token", "--tenant", "acme", "--role", "admin"],
    )
    .output()
    .unwrap();
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();

    let mut file = String::from("First name,Last name,Company,E-mail,City\n");
    for i in 0..ROWS {
        file.push_str(&format!(
            "Card{i},Holder{},Fair {} GmbH,card{i}@fair.example,Berlin\n",
            i % 97,
            i % 31
        ));
    }

    let mut first = serve(dir, db_url, port, "serve-1.log").await;
    let channel = Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect_lazy();
    let mut imports = ImportServiceClient::new(channel.clone());
    let mut msgs = vec![v1::UploadImportFileRequest {
        content: Some(v1::upload_import_file_request::Content::Metadata(
            v1::ImportFileMetadata {
                file_name: "cards.csv".into(),
                content_type: "text/csv".into(),
                expected_size: None,
            },
        )),
    }];
    for c in file.as_bytes().chunks(16 * 1024) {
        msgs.push(v1::UploadImportFileRequest {
            content: Some(v1::upload_import_file_request::Content::Data(c.to_vec())),
        });
    }
    let upload = imports
        .upload_import_file(authed(&token, tokio_stream::iter(msgs)))
        .await
        .unwrap()
        .into_inner();
    let op = imports
        .start_import(authed(
            &token,
            v1::StartImportRequest {
                upload: upload.name.clone(),
                target: v1::ImportTarget::Lead as i32,
                mapping: Vec::new(),
                options: Some(v1::ImportOptions {
                    batch_size: 10,
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();

    // Killed once some batches are in and many are not.
    let mut ops = OperationsClient::new(channel.clone());
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let o = ops
            .get_operation(authed(
                &token,
                lro::GetOperationRequest {
                    name: op.name.clone(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(!o.done, "the import finished before it could be killed");
        if created(&o) >= 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the import did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();

    let mut second = serve(dir, db_url, port, "serve-2.log").await;
    let deadline = Instant::now() + Duration::from_secs(240);
    let done = loop {
        let o = ops
            .get_operation(authed(
                &token,
                lro::GetOperationRequest {
                    name: op.name.clone(),
                },
            ))
            .await;
        if let Ok(o) = o
            && o.get_ref().done
        {
            break o.into_inner();
        }
        assert!(Instant::now() < deadline, "the import did not finish");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        matches!(done.result, Some(lro::operation::Result::Response(_))),
        "{done:?}"
    );
    second.kill().unwrap();
    second.wait().unwrap();

    // Every row once: one result per row number, one lead per e-mail of the file.
    let db = Database::connect(db_url).await.unwrap();
    let one = |sql: &str| Statement::from_string(db.get_database_backend(), sql.to_owned());
    let rows = db
        .query_one_raw(one(
            "SELECT COUNT(*) AS n, COUNT(DISTINCT row_number) AS d, MIN(row_number) AS lo, \
             MAX(row_number) AS hi FROM import_rows WHERE delete_time IS NULL",
        ))
        .await
        .unwrap()
        .unwrap();
    let n: i64 = rows.try_get("", "n").unwrap();
    let d: i64 = rows.try_get("", "d").unwrap();
    let lo: i64 = rows.try_get("", "lo").unwrap();
    let hi: i64 = rows.try_get("", "hi").unwrap();
    assert_eq!((n, d, lo, hi), (ROWS as i64, ROWS as i64, 1, ROWS as i64));
    let leads = db
        .query_one_raw(one(
            "SELECT COUNT(*) AS n, COUNT(DISTINCT emails) AS d FROM leads \
             WHERE delete_time IS NULL",
        ))
        .await
        .unwrap()
        .unwrap();
    let n: i64 = leads.try_get("", "n").unwrap();
    let d: i64 = leads.try_get("", "d").unwrap();
    assert_eq!((n, d), (ROWS as i64, ROWS as i64));
    db.close().await.unwrap();
}
