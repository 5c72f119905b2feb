//! ImportService (crm-operational `import`): files uploaded in chunks into the database,
//! previewed, imported as leads by a job served as a long-running operation, row results and
//! the CSV report, on SQLite and PostgreSQL; bad files and mappings, another tenant's
//! uploads, concurrent starts, cancellation, and resumption after a crash with every row
//! accounted for exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crm_api::google::longrunning::{self as lro, operations_client::OperationsClient};
use crm_api::v1::upload_import_file_request::Content;
use crm_api::v1::*;
use crm_core::jobs::{JobContext, JobHandlers, Runner, RunnerSettings};
use crm_operational::import::run::{self as import_run, Faults, IMPORT_JOB};
use crm_operational::import::upload::{self as import_upload, UploadMetadata};
use crm_tests::{Backend, TestServer, both, expect_code, reason, req, violated_fields};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;
use tonic::Code;
use uuid::Uuid;

/// Business cards from a trade show: two good rows, a ragged one, a bad e-mail, a formula-like
/// name (imported as text, escaped in the report) and another good one.
const CARDS: &str = "First Name,Last Name,Company,Title,Email,Phone,City\n\
Anna,Müller,Alpen Werke,Buyer,anna@alpen.example,+49 30 1234567,Berlin\n\
Bo,Chen,Pacific Trading,CTO,bo.chen@pacific.example,,Shanghai\n\
Carl,Ragged,Only Three\n\
Dana,Bad,Delta SA,CEO,not-an-email,,Paris\n\
=cmd,Inject,Evil Corp,,eve@evil.example,,\n\
Emil,Schmidt,Rhein GmbH,Engineer,emil@rhein.example,,Köln\n";

fn bom_utf8(text: &str) -> Vec<u8> {
    let mut b = vec![0xEF, 0xBB, 0xBF];
    b.extend_from_slice(text.as_bytes());
    b
}

fn metadata(file_name: &str, size: Option<usize>) -> UploadImportFileRequest {
    UploadImportFileRequest {
        content: Some(Content::Metadata(ImportFileMetadata {
            file_name: file_name.into(),
            content_type: "text/csv".into(),
            expected_size: size.map(|n| n as i64),
        })),
    }
}

fn data(bytes: &[u8]) -> UploadImportFileRequest {
    UploadImportFileRequest {
        content: Some(Content::Data(bytes.to_vec())),
    }
}

/// Uploads `bytes` in pieces of `piece` bytes.
async fn upload(
    s: &TestServer,
    token: &str,
    file_name: &str,
    bytes: &[u8],
    piece: usize,
) -> Result<ImportUpload, tonic::Status> {
    let mut msgs = vec![metadata(file_name, Some(bytes.len()))];
    msgs.extend(bytes.chunks(piece.max(1)).map(data));
    s.imports()
        .upload_import_file(req(token, tokio_stream::iter(msgs)))
        .await
        .map(|r| r.into_inner())
}

async fn wait(s: &TestServer, token: &str, name: &str) -> lro::Operation {
    s.wait_operation(token, name).await
}

fn op_metadata(op: &lro::Operation) -> OperationMetadata {
    prost::Message::decode(op.metadata.as_ref().unwrap().value.as_slice()).unwrap()
}

/// The import named by a succeeded operation's response.
fn import_of(op: &lro::Operation) -> String {
    let Some(lro::operation::Result::Response(any)) = &op.result else {
        panic!("the import failed: {op:?}")
    };
    let result: OperationResult = prost::Message::decode(any.value.as_slice()).unwrap();
    let Some(prost_types::value::Kind::StructValue(st)) = result.result.and_then(|v| v.kind) else {
        panic!("no result")
    };
    let Some(prost_types::value::Kind::StringValue(import)) =
        st.fields.get("import").and_then(|v| v.kind.clone())
    else {
        panic!("no import in {st:?}")
    };
    import
}

async fn start(
    s: &TestServer,
    token: &str,
    upload: &str,
    batch_size: i32,
    request_id: &str,
) -> Result<lro::Operation, tonic::Status> {
    s.imports()
        .start_import(req(
            token,
            StartImportRequest {
                upload: upload.into(),
                target: ImportTarget::Lead as i32,
                mapping: vec![],
                options: Some(ImportOptions {
                    batch_size,
                    ..Default::default()
                }),
                request_id: request_id.into(),
            },
        ))
        .await
        .map(|r| r.into_inner())
}

async fn all_rows(
    s: &TestServer,
    token: &str,
    import: &str,
    outcome: ImportRowOutcome,
) -> Vec<ImportRow> {
    let mut out = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = s
            .imports()
            .list_import_rows(req(
                token,
                ListImportRowsRequest {
                    parent: import.into(),
                    outcome: outcome as i32,
                    page_size: 2,
                    page_token: page_token.clone(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        out.extend(page.rows);
        if page.next_page_token.is_empty() {
            return out;
        }
        page_token = page.next_page_token;
    }
}

async fn report(s: &TestServer, token: &str, import: &str) -> String {
    let mut stream = s
        .imports()
        .export_import_report(req(
            token,
            ExportImportReportRequest {
                name: import.into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(m) = stream.message().await.unwrap() {
        bytes.extend(m.data);
    }
    String::from_utf8(bytes).unwrap()
}

/// Live leads of the tenant by e-mail (the first address), read from the database.
async fn lead_emails(s: &TestServer, tenant: &str) -> Vec<String> {
    let ctx = s.admin_ctx(tenant);
    let page = ctx
        .list::<crm_operational::lead::Lead>(&crm_core::service::ListParams {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut v: Vec<String> = page
        .items
        .into_iter()
        .map(|l| {
            l.data
                .emails
                .first()
                .map(|e| e.address.clone())
                .unwrap_or_default()
        })
        .collect();
    v.sort();
    v
}

async fn trade_show_cards_are_imported_as_leads(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    let t = s.token("acme", Uuid::now_v7(), &["admin"]);
    let bytes = bom_utf8(CARDS);

    // Uploaded in 7-byte pieces: size and SHA-256 of the whole file.
    let up = upload(&s, &t, "trade-show.csv", &bytes, 7).await.unwrap();
    assert_eq!(up.size_bytes, bytes.len() as i64);
    assert_eq!(up.sha256, format!("{:x}", Sha256::digest(&bytes)));
    assert_eq!(up.state, ImportUploadState::Ready as i32);
    assert_eq!(up.file_name, "trade-show.csv");
    let got = s
        .imports()
        .get_import_upload(req(
            &t,
            GetImportUploadRequest {
                name: up.name.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.sha256, up.sha256);
    // Chunk data is a bulk field: events and audit records carry its digest, not the bytes.
    {
        use sea_orm::ConnectionTrait;
        let rows =
            s.db.conn
                .query_all_raw(sea_orm::Statement::from_string(
                    s.db.backend(),
                    "SELECT payload FROM outbox_events WHERE collection = 'importUploadChunks'",
                ))
                .await
                .unwrap();
        assert!(!rows.is_empty());
        let audits =
            s.db.conn
                .query_all_raw(sea_orm::Statement::from_string(
                    s.db.backend(),
                    "SELECT changes FROM audit_records WHERE collection = 'importUploadChunks'",
                ))
                .await
                .unwrap();
        for (r, col) in rows
            .iter()
            .map(|r| (r, "payload"))
            .chain(audits.iter().map(|r| (r, "changes")))
        {
            let text: String = r.try_get("", col).unwrap();
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            let data = if col == "payload" {
                v["data"]["data"].clone()
            } else {
                v.as_array()
                    .unwrap()
                    .iter()
                    .find(|c| c["field"] == "data")
                    .map(|c| c["new"].clone())
                    .unwrap()
            };
            assert!(data["sha256"].is_string(), "{text}");
            assert!(data["bytes"].is_number(), "{text}");
        }
    }

    // Preview: encoding, delimiter, header, rows, proposed mapping, problems.
    let p = s
        .imports()
        .preview_import(req(
            &t,
            PreviewImportRequest {
                upload: up.name.clone(),
                target: ImportTarget::Lead as i32,
                options: None,
                row_count: 3,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p.format, "csv");
    assert_eq!(p.encoding.to_lowercase(), "utf-8");
    assert_eq!(p.delimiter, ",");
    assert_eq!(
        p.header,
        [
            "First Name",
            "Last Name",
            "Company",
            "Title",
            "Email",
            "Phone",
            "City"
        ]
    );
    assert_eq!(p.rows.len(), 3);
    assert_eq!(p.rows[0].cells[1], "Müller");
    let fields: Vec<&str> = p.mapping.iter().map(|m| m.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "given_name",
            "family_name",
            "company",
            "title",
            "emails",
            "phones",
            "address.locality"
        ]
    );
    assert!(
        p.problems.iter().any(|x| x.row_number == 3
            && x.rejects_row
            && x.problem.as_ref().unwrap().reason == "TOO_FEW_FIELDS"),
        "{:?}",
        p.problems
    );

    // The import, in batches of 2.
    let op = start(&s, &t, &up.name, 2, "").await.unwrap();
    assert!(op.name.starts_with("operations/"), "{op:?}");
    assert_eq!(op_metadata(&op).kind, IMPORT_JOB);
    let op = wait(&s, &t, &op.name).await;
    let import = import_of(&op);
    let meta = op_metadata(&op);
    assert_eq!(meta.counts.get("read"), Some(&6), "{meta:?}");
    assert_eq!(meta.counts.get("created"), Some(&4));
    assert_eq!(meta.counts.get("rejected"), Some(&2));
    assert_eq!(meta.counts.get("flagged"), Some(&0));
    assert_eq!(meta.done_count, 6);
    assert_eq!(
        lead_emails(&s, "acme").await,
        [
            "anna@alpen.example",
            "bo.chen@pacific.example",
            "emil@rhein.example",
            "eve@evil.example"
        ]
    );
    let imp = s
        .imports()
        .get_import(req(
            &t,
            GetImportRequest {
                name: import.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(imp.state, ImportState::Succeeded as i32);
    let stats = imp.stats.unwrap();
    assert_eq!(
        (stats.read_count, stats.created_count, stats.rejected_count),
        (6, 4, 2)
    );
    assert_eq!(imp.header.len(), 7);

    // Row results: every row once, in order; the rejected ones with their reasons.
    let rows = all_rows(&s, &t, &import, ImportRowOutcome::Unspecified).await;
    assert_eq!(
        rows.iter().map(|r| r.row_number).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6]
    );
    assert!(rows[0].record.starts_with("leads/"), "{:?}", rows[0]);
    let rejected = all_rows(&s, &t, &import, ImportRowOutcome::Rejected).await;
    assert_eq!(
        rejected.iter().map(|r| r.row_number).collect::<Vec<_>>(),
        [3, 4]
    );
    assert_eq!(rejected[0].problems[0].reason, "TOO_FEW_FIELDS");
    assert_eq!(rejected[0].cells, ["Carl", "Ragged", "Only Three"]);
    assert!(
        rejected[1]
            .problems
            .iter()
            .any(|p| p.field.starts_with("emails")),
        "{:?}",
        rejected[1]
    );
    assert!(rejected[1].record.is_empty());

    // The report: CSV, cells escaped against formulas.
    let csv = report(&s, &t, &import).await;
    let lines: Vec<&str> = csv.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 7, "{csv}");
    assert!(
        lines[0].starts_with("row,outcome,record,problems,First Name,Last Name"),
        "{csv}"
    );
    assert!(lines[3].starts_with("3,REJECTED,,"), "{csv}");
    assert!(lines[3].contains("Carl,Ragged,Only Three"), "{csv}");
    assert!(lines[4].starts_with("4,REJECTED,,"), "{csv}");
    assert!(lines[5].starts_with("5,CREATED,leads/"), "{csv}");

    // A start repeated with the same request_id answers the same operation.
    let rid = Uuid::now_v7().to_string();
    let a = start(&s, &t, &up.name, 0, &rid).await.unwrap();
    let a_done = wait(&s, &t, &a.name).await;
    let b = start(&s, &t, &up.name, 0, &rid).await.unwrap();
    assert_eq!(a.name, b.name);
    assert_ne!(import_of(&a_done), import);
    let imports = s
        .imports()
        .list_imports(req(&t, ListImportsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .imports;
    assert_eq!(imports.len(), 2);
}

/// Minimal XLSX (inline strings) built with the zip crate.
fn xlsx(rows: &[&[&str]]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default();
    let mut put = |name: &str, body: &str| {
        zip.start_file(name, opts).unwrap();
        zip.write_all(body.as_bytes()).unwrap();
    };
    put(
        "[Content_Types].xml",
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/><Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/></Types>"#,
    );
    put(
        "_rels/.rels",
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>"#,
    );
    put(
        "xl/workbook.xml",
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"><sheets><sheet name="Cards" sheetId="1" r:id="rId1"/></sheets></workbook>"#,
    );
    put(
        "xl/_rels/workbook.xml.rels",
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/></Relationships>"#,
    );
    let cols = ["A", "B", "C", "D", "E", "F"];
    let body: String = rows
        .iter()
        .enumerate()
        .map(|(i, cells)| {
            let r = i + 1;
            let cs: String = cells
                .iter()
                .enumerate()
                .map(|(j, v)| {
                    format!(
                        r#"<c r="{}{r}" t="inlineStr"><is><t>{v}</t></is></c>"#,
                        cols[j]
                    )
                })
                .collect();
            format!(r#"<row r="{r}">{cs}</row>"#)
        })
        .collect();
    put(
        "xl/worksheets/sheet1.xml",
        &format!(
            r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>{body}</sheetData></worksheet>"#
        ),
    );
    zip.finish().unwrap().into_inner()
}

async fn gb18030_and_xlsx_files_are_imported(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    let t = s.token("acme", Uuid::now_v7(), &["admin"]);

    // GB18030, no BOM: detected.
    let text = "姓,名,公司,邮箱,职位\n\
张,伟,北京科技有限公司,zhang.wei@bj.example,采购经理\n\
李,娜,上海国际贸易有限公司,li.na@sh.example,总经理\n\
王,芳,广州电子科技股份有限公司,wang.fang@gz.example,工程师\n";
    let (bytes, _, _) = encoding_rs::GB18030.encode(text);
    let up = upload(&s, &t, "名片.csv", &bytes, 5).await.unwrap();
    let p = s
        .imports()
        .preview_import(req(
            &t,
            PreviewImportRequest {
                upload: up.name.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(
        ["gb18030", "gbk"].contains(&p.encoding.to_lowercase().as_str()),
        "{p:?}"
    );
    assert_eq!(p.header, ["姓", "名", "公司", "邮箱", "职位"]);
    assert_eq!(p.rows[1].cells[2], "上海国际贸易有限公司");
    let fields: Vec<&str> = p.mapping.iter().map(|m| m.field.as_str()).collect();
    assert_eq!(
        fields[..4],
        ["family_name", "given_name", "company", "emails"]
    );
    let op = start(&s, &t, &up.name, 0, "").await.unwrap();
    let op = wait(&s, &t, &op.name).await;
    let meta = op_metadata(&op);
    assert_eq!(meta.counts.get("created"), Some(&3), "{meta:?}");

    // An XLSX workbook.
    let book = xlsx(&[
        &["First Name", "Last Name", "Company", "Email"],
        &["Hugo", "Dubois", "Lumière SA", "hugo@lumiere.example"],
        &["Olivia", "Smith", "Atlas Ltd", "olivia@atlas.example"],
    ]);
    let up = upload(&s, &t, "cards.xlsx", &book, 100).await.unwrap();
    let p = s
        .imports()
        .preview_import(req(
            &t,
            PreviewImportRequest {
                upload: up.name.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p.format, "spreadsheet");
    assert_eq!(p.sheet, "Cards");
    assert_eq!(p.header, ["First Name", "Last Name", "Company", "Email"]);
    assert_eq!(p.rows.len(), 2);
    let op = start(&s, &t, &up.name, 1, "").await.unwrap();
    let op = wait(&s, &t, &op.name).await;
    let import = import_of(&op);
    assert_eq!(op_metadata(&op).counts.get("created"), Some(&2));
    let rows = all_rows(&s, &t, &import, ImportRowOutcome::Created).await;
    assert_eq!(rows.len(), 2);
    let emails = lead_emails(&s, "acme").await;
    assert!(
        emails.contains(&"hugo@lumiere.example".to_owned()),
        "{emails:?}"
    );
    assert!(
        emails.contains(&"li.na@sh.example".to_owned()),
        "{emails:?}"
    );
}

async fn bad_files_mappings_and_other_tenants(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    s.tenant("other").await;
    let t = s.token("acme", Uuid::now_v7(), &["admin"]);
    let other = s.token("other", Uuid::now_v7(), &["admin"]);
    let up = upload(&s, &t, "cards.csv", CARDS.as_bytes(), 64)
        .await
        .unwrap();

    // A mapping naming a column the file does not have.
    let bad = |mapping: Vec<ColumnMapping>| StartImportRequest {
        upload: up.name.clone(),
        target: ImportTarget::Lead as i32,
        mapping,
        ..Default::default()
    };
    let e = expect_code(
        s.imports()
            .start_import(req(
                &t,
                bad(vec![ColumnMapping {
                    header: "Fax".into(),
                    field: "phones".into(),
                    ..Default::default()
                }]),
            ))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&e), ["mapping[0].column"]);
    let e = expect_code(
        s.imports()
            .start_import(req(
                &t,
                bad(vec![
                    ColumnMapping {
                        column: 0,
                        field: "given_name".into(),
                        ..Default::default()
                    },
                    ColumnMapping {
                        column: 99,
                        field: "company".into(),
                        ..Default::default()
                    },
                ]),
            ))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&e), ["mapping[1].column"]);
    let e = expect_code(
        s.imports()
            .start_import(req(
                &t,
                bad(vec![ColumnMapping {
                    column: 0,
                    field: "shoe_size".into(),
                    ..Default::default()
                }]),
            ))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&e), ["mapping[0].field"]);
    assert_eq!(s.count("imports", "acme").await, 0);

    // An empty file and a binary one are refused on `file`.
    let empty = upload(&s, &t, "empty.csv", b"", 10).await.unwrap();
    assert_eq!(empty.size_bytes, 0);
    let png: Vec<u8> =
        b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x10\0\0\0\x10\x08\x06\0\0\0\x1f\xf3\xffa"
            .iter()
            .copied()
            .chain(std::iter::repeat_n(0u8, 300))
            .collect();
    let binary = upload(&s, &t, "logo.png", &png, 50).await.unwrap();
    for u in [&empty.name, &binary.name] {
        let e = expect_code(
            s.imports()
                .preview_import(req(
                    &t,
                    PreviewImportRequest {
                        upload: u.clone(),
                        ..Default::default()
                    },
                ))
                .await,
            Code::InvalidArgument,
        );
        assert_eq!(violated_fields(&e), ["file"], "{e:?}");
        let e = expect_code(start(&s, &t, u, 0, "").await, Code::InvalidArgument);
        assert_eq!(violated_fields(&e), ["file"], "{e:?}");
    }

    // Uploads: metadata first, the declared size kept.
    let e = expect_code(
        s.imports()
            .upload_import_file(req(&t, tokio_stream::iter(vec![data(b"a,b\n")])))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&e), ["metadata"]);
    let e = expect_code(
        s.imports()
            .upload_import_file(req(
                &t,
                tokio_stream::iter(vec![metadata("x.csv", Some(3)), data(b"a,b,c\n")]),
            ))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&e), ["metadata.expected_size"]);
    let e = expect_code(
        s.imports()
            .upload_import_file(req(
                &t,
                tokio_stream::iter(vec![metadata("", None), data(b"a\n")]),
            ))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&e), ["metadata.file_name"]);

    // Another tenant's upload and import are not found.
    let op = start(&s, &t, &up.name, 0, "").await.unwrap();
    let import = import_of(&wait(&s, &t, &op.name).await);
    expect_code(
        s.imports()
            .preview_import(req(
                &other,
                PreviewImportRequest {
                    upload: up.name.clone(),
                    ..Default::default()
                },
            ))
            .await,
        Code::NotFound,
    );
    expect_code(start(&s, &other, &up.name, 0, "").await, Code::NotFound);
    expect_code(
        s.imports()
            .get_import_upload(req(
                &other,
                GetImportUploadRequest {
                    name: up.name.clone(),
                },
            ))
            .await,
        Code::NotFound,
    );
    expect_code(
        s.imports()
            .get_import(req(
                &other,
                GetImportRequest {
                    name: import.clone(),
                },
            ))
            .await,
        Code::NotFound,
    );
    expect_code(
        s.imports()
            .list_import_rows(req(
                &other,
                ListImportRowsRequest {
                    parent: import.clone(),
                    ..Default::default()
                },
            ))
            .await,
        Code::NotFound,
    );
    expect_code(
        s.imports()
            .export_import_report(req(&other, ExportImportReportRequest { name: import }))
            .await,
        Code::NotFound,
    );
    // A role without import rights may not upload.
    let nobody = s.token("acme", Uuid::now_v7(), &["nobody"]);
    expect_code(
        upload(&s, &nobody, "x.csv", b"a\n1\n", 10).await,
        Code::PermissionDenied,
    );
}

/// A gateway whose own job runner is off: the test runs jobs itself.
async fn server_without_jobs(backend: Backend) -> TestServer {
    TestServer::start_with(backend, |s| s.jobs.enabled = false).await
}

fn runner(s: &TestServer, handlers: JobHandlers) -> Runner {
    Runner::start(
        s.db.clone(),
        Arc::new(crm_core::clock::SystemClock),
        handlers,
        RunnerSettings {
            poll_interval: Duration::from_millis(50),
            retry_base: Duration::from_millis(20),
            retry_max: Duration::from_millis(100),
            ..Default::default()
        },
    )
}

async fn concurrent_starts_and_cancellation(backend: Backend) {
    let s = server_without_jobs(backend).await;
    s.tenant("acme").await;
    let t = s.token("acme", Uuid::now_v7(), &["admin"]);
    let up = upload(&s, &t, "cards.csv", CARDS.as_bytes(), 100)
        .await
        .unwrap();

    // One import of an upload at a time; the same request_id answers the same operation.
    let first = start(&s, &t, &up.name, 2, "first").await.unwrap();
    assert!(!first.done);
    let e = expect_code(
        start(&s, &t, &up.name, 2, "").await,
        Code::FailedPrecondition,
    );
    assert_eq!(reason(&e), "IMPORT_RUNNING");
    let again = start(&s, &t, &up.name, 2, "first").await.unwrap();
    assert_eq!(again.name, first.name);

    // Cancelled before it ran.
    OperationsClient::new(s.channel.clone())
        .cancel_operation(req(
            &t,
            lro::CancelOperationRequest {
                name: first.name.clone(),
            },
        ))
        .await
        .unwrap();
    let op = wait(&s, &t, &first.name).await;
    let Some(lro::operation::Result::Error(err)) = op.result else {
        panic!("{op:?}")
    };
    assert_eq!(err.code, Code::Cancelled as i32);

    // Now another may start; cancelled while running, it stops at a batch boundary.
    let second = start(&s, &t, &up.name, 2, "").await.unwrap();
    let mut h = JobHandlers::new();
    h.register(IMPORT_JOB, |job: JobContext| async move {
        crm_core::jobs::cancel(&job.db.conn, job.clock.as_ref(), &job.tenant, job.id).await?;
        import_run::run_job(job).await
    })
    .unwrap();
    let r = runner(&s, h);
    let op = wait(&s, &t, &second.name).await;
    r.shutdown().await;
    let Some(lro::operation::Result::Error(err)) = op.result else {
        panic!("{op:?}")
    };
    assert_eq!(err.code, Code::Cancelled as i32);
    let imports = s
        .imports()
        .list_imports(req(&t, ListImportsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .imports;
    assert_eq!(imports.len(), 2);
    assert!(
        imports
            .iter()
            .all(|i| i.state == ImportState::Cancelled as i32),
        "{imports:?}"
    );
    let written = s.count("import_rows", "acme").await;
    assert!(written % 2 == 0 && written < 6, "{written}");
}

/// Ten cards, one of them with a bad e-mail.
fn ten_cards() -> String {
    let mut csv = String::from("Name;Company;E-Mail\n");
    for i in 1..=10 {
        if i == 5 {
            csv.push_str("Bad Five;Five GmbH;five-at-example\n");
        } else {
            csv.push_str(&format!("Person {i};Company {i} AG;p{i}@cards.example\n"));
        }
    }
    csv
}

async fn a_crashed_import_resumes_with_each_row_once(backend: Backend) {
    let s = server_without_jobs(backend).await;
    s.tenant("acme").await;
    let user = Uuid::now_v7();
    let t = s.token("acme", user, &["admin"]);
    let ctx = s.ctx_for_roles("acme", user, &["admin"]).await;
    let csv = ten_cards();
    // Stored in 16-byte chunks, so the resume point falls inside a chunk.
    let mut up = import_upload::begin(
        &ctx,
        UploadMetadata {
            file_name: "cards.csv".into(),
            ..Default::default()
        },
        16,
    )
    .await
    .unwrap();
    for piece in csv.as_bytes().chunks(5) {
        up.append(&ctx, piece).await.unwrap();
    }
    let up = up.finish(&ctx).await.unwrap();
    assert!(up.data.chunk_count > 5, "{:?}", up.data);
    let upload_name = format!("importUploads/{}", up.meta.id);

    let mut expected_emails: Vec<String> = Vec::new();
    // The first attempt dies right after committing batch 1 (before any checkpoint), then
    // after batch 2 (the checkpoint of batch 1 saved, not that of batch 2).
    for after_batches in [1, 2] {
        let op = start(&s, &t, &upload_name, 3, "").await.unwrap();
        let mut h = JobHandlers::new();
        h.register(IMPORT_JOB, move |job: JobContext| {
            import_run::run_job_with(
                job,
                Faults {
                    attempt: 1,
                    after_batches,
                },
            )
        })
        .unwrap();
        let r = runner(&s, h);
        let op = wait(&s, &t, &op.name).await;
        r.shutdown().await;
        let meta = op_metadata(&op);
        assert_eq!(meta.attempt, 2, "{meta:?}");
        let import = import_of(&op);
        assert_eq!(meta.counts.get("read"), Some(&10), "{meta:?}");
        assert_eq!(meta.counts.get("created"), Some(&9));
        assert_eq!(meta.counts.get("rejected"), Some(&1));

        // Each row exactly once.
        let rows = all_rows(&s, &t, &import, ImportRowOutcome::Unspecified).await;
        let numbers: Vec<i64> = rows.iter().map(|r| r.row_number).collect();
        assert_eq!(numbers, (1..=10).collect::<Vec<_>>());
        let rejected: Vec<i64> = rows
            .iter()
            .filter(|r| r.outcome == ImportRowOutcome::Rejected as i32)
            .map(|r| r.row_number)
            .collect();
        assert_eq!(rejected, [5]);
        let records: BTreeSet<&str> = rows
            .iter()
            .filter(|r| !r.record.is_empty())
            .map(|r| r.record.as_str())
            .collect();
        assert_eq!(records.len(), 9);
        for i in (1..=10).filter(|i| *i != 5) {
            expected_emails.push(format!("p{i}@cards.example"));
        }
        expected_emails.sort();
        // No lead written twice, none lost (the second import flags the first's as
        // duplicates but creates them all).
        assert_eq!(lead_emails(&s, "acme").await, expected_emails);
    }
}

async fn duplicates_are_flagged_or_blocked(backend: Backend) {
    // Policies are written through the test's own connection, which the gateway's
    // configuration cache does not hear of (as another replica's writes): no cache here.
    let s = TestServer::start_with(backend, |s| s.database.config_cache_ms = 0).await;
    s.tenant("acme").await;
    let t = s.token("acme", Uuid::now_v7(), &["admin"]);
    let admin = s.admin_ctx("acme");
    admin
        .create(
            crm_operational::lead::Lead {
                given_name: "Anna".into(),
                family_name: "Müller".into(),
                company: "Alpen Werke".into(),
                emails: vec![crm_core::model::Email {
                    address: "anna@alpen.example".into(),
                    ..Default::default()
                }],
                ..Default::default()
            },
            "",
        )
        .await
        .unwrap();
    let up = upload(&s, &t, "cards.csv", CARDS.as_bytes(), 1000)
        .await
        .unwrap();
    // Default policy: a match is created and flagged.
    let op = start(&s, &t, &up.name, 0, "").await.unwrap();
    let op = wait(&s, &t, &op.name).await;
    let import = import_of(&op);
    let counts: BTreeMap<String, i64> = op_metadata(&op).counts.into_iter().collect();
    assert_eq!(counts.get("flagged"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("created"), Some(&4));
    let flagged = all_rows(&s, &t, &import, ImportRowOutcome::Flagged).await;
    assert_eq!(flagged.len(), 1);
    assert_eq!(flagged[0].row_number, 1);
    assert_eq!(flagged[0].problems[0].reason, "DUPLICATE");
    assert!(flagged[0].record.starts_with("leads/"));

    // A BLOCK policy: every card now matches a lead; each is rejected with the reason, the
    // rows that were rejected anyway keep their own reasons.
    admin
        .create(
            crm_operational::dedupe::LeadDuplicatePolicy {
                display_name: "block".into(),
                active: true,
                on_match: "BLOCK".into(),
                ..Default::default()
            },
            "",
        )
        .await
        .unwrap();
    let op = start(&s, &t, &up.name, 0, "").await.unwrap();
    let op = wait(&s, &t, &op.name).await;
    let import = import_of(&op);
    let counts: BTreeMap<String, i64> = op_metadata(&op).counts.into_iter().collect();
    assert_eq!(counts.get("created"), Some(&0), "{counts:?}");
    assert_eq!(counts.get("rejected"), Some(&6));
    let rows = all_rows(&s, &t, &import, ImportRowOutcome::Rejected).await;
    assert_eq!(rows.len(), 6);
    assert_eq!(
        rows[0].problems[0].reason, "ALREADY_EXISTS",
        "{:?}",
        rows[0]
    );
    assert!(
        rows[0].problems[0].message.contains("leads/"),
        "{:?}",
        rows[0]
    );
    assert_eq!(rows[2].problems[0].reason, "TOO_FEW_FIELDS");
    assert_eq!(lead_emails(&s, "acme").await.len(), 5);
}

both!(
    trade_show_cards_are_imported_as_leads,
    gb18030_and_xlsx_files_are_imported,
    bad_files_mappings_and_other_tenants,
    concurrent_starts_and_cancellation,
    a_crashed_import_resumes_with_each_row_once,
    duplicates_are_flagged_or_blocked,
);
