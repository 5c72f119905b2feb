//! The real binary killed with SIGKILL in the middle of an import, then started again: the
//! import finishes and every row of the file is accounted for exactly once (one row result
//! each, one lead each), on SQLite and on PostgreSQL (`CRM_TEST_POSTGRES_URL`, a server URL
//! without a database, as scripts/test provides; a database of its own is made and dropped).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use common::{authed, free_port, serve};
use crm_api::google::longrunning::{self as lro, operations_client::OperationsClient};
use crm_api::v1::{self, import_service_client::ImportServiceClient};
use prost::Message;
use sea_orm::{ConnectionTrait, Database, Statement};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

mod common;

const SERVICE: &str = "crm.v1.ImportService";

const ROWS: usize = 4_000;

fn created(op: &lro::Operation) -> i64 {
    op.metadata
        .as_ref()
        .and_then(|m| v1::OperationMetadata::decode(m.value.as_slice()).ok())
        .and_then(|m| m.counts.get("created").copied())
        .unwrap_or(0)
}

#[tokio::test]
async fn an_import_survives_kill_9_of_crm_serve_sqlite() {
    common::on_sqlite("kill", |dir, db| async move {
        killed_and_resumed(&dir, &db).await
    })
    .await;
}

#[tokio::test]
async fn an_import_survives_kill_9_of_crm_serve_postgres() {
    common::on_postgres("kill", |dir, db| async move {
        killed_and_resumed(&dir, &db).await
    })
    .await;
}

async fn killed_and_resumed(dir: &std::path::Path, db_url: &str) {
    let port = free_port();
    let token = common::tenant_and_token(dir, db_url, port);

    let mut file = String::from("First name,Last name,Company,E-mail,City\n");
    for i in 0..ROWS {
        file.push_str(&format!(
            "Card{i},Holder{},Fair {} GmbH,card{i}@fair.example,Berlin\n",
            i % 97,
            i % 31
        ));
    }

    let mut first = serve(dir, db_url, port, "serve-1.log", SERVICE, &[]).await;
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

    let mut second = serve(dir, db_url, port, "serve-2.log", SERVICE, &[]).await;
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
