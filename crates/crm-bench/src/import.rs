//! `crm-bench import`: a CSV of leads generated, uploaded through ImportService in 1 MiB
//! messages, imported as an operation (every row through the lead create: validation,
//! duplicate check against the tenant, grading, routing, audit, outbox), timed from start
//! to done; then, with `--pg-url`, the same file loaded by PostgreSQL's `COPY` (psql
//! `\copy`) into a plain table with the same columns, for the ratio.

use crate::{authed, rss_kib};
use clap::Parser;
use crm_api::google::longrunning::{self as lro, operations_client::OperationsClient};
use crm_api::v1::{self, import_service_client::ImportServiceClient};
use prost::Message;
use std::io::Write;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

#[derive(Parser, Clone)]
pub struct ImportArgs {
    /// The gateway.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    target: String,
    /// A bearer token with create rights on imports and leads.
    #[arg(long, env = "CRM_BENCH_TOKEN")]
    token: String,
    /// Rows in the generated file.
    #[arg(long, default_value_t = 100_000)]
    rows: usize,
    /// PostgreSQL URL for the COPY baseline (psql must be on the PATH).
    #[arg(long, env = "CRM_BENCH_PG_URL")]
    pg_url: Option<String>,
    /// PID of the gateway, for its resident memory during the import.
    #[arg(long)]
    gateway_pid: Option<u32>,
    /// Where the generated file is written (kept for the COPY baseline).
    #[arg(long, default_value = "/tmp/crm-bench-import.csv")]
    file: String,
}

const GIVEN: [&str; 12] = [
    "Anna", "Jonas", "Mia", "Lukas", "Lea", "Finn", "Emma", "Paul", "Wei", "Yuki", "Sofia", "Mateo",
];
const FAMILY: [&str; 12] = [
    "Müller",
    "Schmidt",
    "Schneider",
    "Fischer",
    "Weber",
    "Meyer",
    "Wagner",
    "Becker",
    "Wang",
    "Sato",
    "García",
    "Rossi",
];
const CITIES: [(&str, &str); 6] = [
    ("Berlin", "10115"),
    ("Hamburg", "20095"),
    ("München", "80331"),
    ("Köln", "50667"),
    ("Frankfurt am Main", "60311"),
    ("Stuttgart", "70173"),
];

/// The file: a header and `rows` business cards, each with its own e-mail and phone.
fn generate(rows: usize, run: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(rows * 130);
    out.extend_from_slice(
        "First name,Last name,Company,Job title,E-mail,Phone,City,Postcode,Country\n".as_bytes(),
    );
    for i in 0..rows {
        let (city, pc) = CITIES[i % CITIES.len()];
        let _ = writeln!(
            out,
            "{},{}{},Import {} GmbH,Buyer,card{i}.{run}@import.example,+49 30 {},{city},{pc},DE",
            GIVEN[i % GIVEN.len()],
            FAMILY[(i / GIVEN.len()) % FAMILY.len()],
            i % 997,
            i % 20_000,
            2_000_000 + i,
        );
    }
    out
}

fn counts(op: &lro::Operation) -> std::collections::BTreeMap<String, i64> {
    op.metadata
        .as_ref()
        .and_then(|m| v1::OperationMetadata::decode(m.value.as_slice()).ok())
        .map(|m| m.counts.into_iter().collect())
        .unwrap_or_default()
}

pub async fn run(args: ImportArgs) -> Result<(), Box<dyn std::error::Error>> {
    let run = uuid::Uuid::now_v7().simple().to_string();
    let run = &run[..12];
    let data = generate(args.rows, run);
    std::fs::write(&args.file, &data)?;
    let chan = Channel::from_shared(args.target.clone())?.connect().await?;
    let mut imports = ImportServiceClient::new(chan.clone())
        .max_decoding_message_size(8 << 20)
        .max_encoding_message_size(8 << 20);
    let mut ops = OperationsClient::new(chan);

    // Upload in 1 MiB messages.
    let t0 = Instant::now();
    let mut msgs = vec![v1::UploadImportFileRequest {
        content: Some(v1::upload_import_file_request::Content::Metadata(
            v1::ImportFileMetadata {
                file_name: format!("bench-{run}.csv"),
                content_type: "text/csv".into(),
                expected_size: Some(i64::try_from(data.len())?),
            },
        )),
    }];
    for c in data.chunks(1 << 20) {
        msgs.push(v1::UploadImportFileRequest {
            content: Some(v1::upload_import_file_request::Content::Data(c.to_vec())),
        });
    }
    let upload = imports
        .upload_import_file(authed(&args.token, tokio_stream::iter(msgs)))
        .await?
        .into_inner();
    let upload_s = t0.elapsed().as_secs_f64();
    eprintln!(
        "uploaded {} bytes in {upload_s:.1} s as {}",
        data.len(),
        upload.name
    );

    // Import, polled every second; the gateway's RSS sampled meanwhile.
    let t1 = Instant::now();
    let op = imports
        .start_import(authed(
            &args.token,
            v1::StartImportRequest {
                upload: upload.name.clone(),
                target: v1::ImportTarget::Lead as i32,
                mapping: Vec::new(),
                options: None,
                request_id: format!("bench-{run}"),
            },
        ))
        .await?
        .into_inner();
    let mut peak = args.gateway_pid.and_then(rss_kib).unwrap_or(0);
    let mut down = 0u32;
    let done = loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Some(r) = args.gateway_pid.and_then(rss_kib) {
            peak = peak.max(r);
        }
        let asked = ops
            .get_operation(authed(
                &args.token,
                lro::GetOperationRequest {
                    name: op.name.clone(),
                },
            ))
            .await;
        // A gateway restarted on purpose (a kill -9 in the middle): keep asking.
        let o = match asked {
            Ok(o) => o.into_inner(),
            Err(e) if e.code() == tonic::Code::Unavailable && down < 300 => {
                down += 1;
                eprintln!("gateway unavailable ({}), asking again", e.message());
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        down = 0;
        if o.done {
            break o;
        }
        let c = counts(&o);
        eprintln!(
            "{:>6.0} s: read {}, created {}, flagged {}, rejected {}",
            t1.elapsed().as_secs_f64(),
            c.get("read").copied().unwrap_or(0),
            c.get("created").copied().unwrap_or(0),
            c.get("flagged").copied().unwrap_or(0),
            c.get("rejected").copied().unwrap_or(0),
        );
    };
    let import_s = t1.elapsed().as_secs_f64();
    if let Some(lro::operation::Result::Error(e)) = &done.result {
        return Err(format!("the import failed: {} {}", e.code, e.message).into());
    }
    let c = counts(&done);
    let rate = args.rows as f64 / import_s;

    // COPY of the same file into a plain table with the same columns.
    let copy = match &args.pg_url {
        Some(url) => {
            let sql = format!(
                "DROP TABLE IF EXISTS crm_bench_import_copy; \
                 CREATE TABLE crm_bench_import_copy (given_name TEXT, family_name TEXT, \
                 company TEXT, title TEXT, email TEXT, phone TEXT, city TEXT, postcode TEXT, \
                 country TEXT); \
                 \n\\copy crm_bench_import_copy FROM '{}' WITH (FORMAT csv, HEADER true)\n\
                 DROP TABLE crm_bench_import_copy;",
                args.file
            );
            let t2 = Instant::now();
            let out = std::process::Command::new("psql")
                .arg(url)
                .arg("-v")
                .arg("ON_ERROR_STOP=1")
                .arg("-q")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .and_then(|mut child| {
                    if let Some(mut stdin) = child.stdin.take() {
                        stdin.write_all(sql.as_bytes())?;
                    }
                    child.wait_with_output()
                })?;
            if !out.status.success() {
                return Err(format!("psql: {}", String::from_utf8_lossy(&out.stderr)).into());
            }
            Some(t2.elapsed().as_secs_f64())
        }
        None => None,
    };

    println!(
        "\n| rows | bytes | upload s | import s | rows/s | created | flagged | rejected | COPY s | COPY rows/s | ratio to COPY | gateway RSS peak MiB |"
    );
    println!(
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    let (copy_s, copy_rate, ratio) = match copy {
        Some(s) => {
            let r = args.rows as f64 / s;
            (
                format!("{s:.2}"),
                format!("{r:.0}"),
                format!("{:.4}", rate / r),
            )
        }
        None => ("-".into(), "-".into(), "-".into()),
    };
    println!(
        "| {} | {} | {upload_s:.1} | {import_s:.1} | {rate:.0} | {} | {} | {} | {copy_s} | {copy_rate} | {ratio} | {} |",
        args.rows,
        data.len(),
        c.get("created").copied().unwrap_or(0),
        c.get("flagged").copied().unwrap_or(0),
        c.get("rejected").copied().unwrap_or(0),
        if peak > 0 {
            format!("{:.1}", peak as f64 / 1024.0)
        } else {
            "-".into()
        },
    );
    Ok(())
}
