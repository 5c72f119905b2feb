//! crm-bench: named scenarios against a running crm gateway, printed as a table of
//! throughput and latency percentiles, each with its ratio to a bare tonic echo server
//! measured in the same run (the echo server runs as a child process, like the gateway).

use clap::{Parser, Subcommand};
use crm_api::v1::{self, contact_service_client::ContactServiceClient};
use hdrhistogram::Histogram;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

mod echo {
    tonic::include_proto!("crmbench.echo");
}
mod analytics;
mod import;
mod leads;
mod pg;
mod timeline;

#[derive(Parser)]
#[command(
    name = "crm-bench",
    about = "Benchmark scenarios against a running crm gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run scenarios and print a markdown table.
    Run(Box<RunArgs>),
    /// Import a generated CSV of leads through ImportService, timed, against PostgreSQL's
    /// COPY of the same file.
    Import(Box<import::ImportArgs>),
    /// Load interactions for the `get-timeline` scenario straight into the gateway's
    /// PostgreSQL database (see timeline.rs).
    SeedTimeline(Box<timeline::SeedArgs>),
    /// Load contacts and orders for `analytics` straight into the gateway's PostgreSQL
    /// database (see analytics.rs).
    SeedOrders(Box<analytics::SeedArgs>),
    /// Time an RFM run, a lifecycle evaluation and a segment refresh through the gateway,
    /// and the same RFM aggregation in DuckDB (see analytics.rs).
    Analytics(Box<analytics::RunArgs>),
    /// Serve the bare echo baseline (used by `run` as a child process).
    EchoServer {
        #[arg(long, default_value = "127.0.0.1:50099")]
        listen: String,
    },
}

#[derive(Parser, Clone)]
struct RunArgs {
    /// The gateway.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    target: String,
    /// A bearer token with read and create rights on contacts (e.g. the demo admin token).
    #[arg(long, env = "CRM_BENCH_TOKEN")]
    token: String,
    /// Concurrent request streams.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds of measurement per scenario (after a warm-up).
    #[arg(long, default_value_t = 15)]
    duration: u64,
    #[arg(long, default_value_t = 3)]
    warmup: u64,
    /// Comma-separated scenarios: echo, get-contact, list-contacts, create-contact,
    /// ingest-email (a 30 KB MIME message with a unique Message-ID through IngestEmail),
    /// get-timeline (a contact's first page of 50, see `--timeline-parent` and
    /// `seed-timeline`), create-lead (duplicate check against the tenant's leads, contacts and accounts,
    /// grading and routing by its active policies, in one write; users, a grading policy
    /// and a rule set are made first when the tenant has none, see leads.rs), and the
    /// sales-report (a year by month and region, see `seed-orders`), and the
    /// raw-database baselines pg-select, pg-get, pg-list, pg-create (see `--pg-url`).
    #[arg(long, default_value = "echo,get-contact,list-contacts,create-contact")]
    scenarios: String,
    /// The gateway's PostgreSQL database: each gateway scenario is then followed by its
    /// raw-database baseline run by pgbench (get-contact by `pgbench -S`, list-contacts by
    /// the same SELECT, create-contact by the same transaction), with the same clients and
    /// duration, and the table gets a ratio to it (get-contact is also followed by pg-get, its
    /// own SELECT by pgbench, for reference).
    #[arg(long, env = "CRM_BENCH_PG_URL")]
    pg_url: Option<String>,
    /// The pgbench binary.
    #[arg(long, default_value = "pgbench")]
    pgbench: String,
    /// pgbench worker threads (`-j`).
    #[arg(long, default_value_t = 2)]
    pgbench_jobs: usize,
    /// Scale of pgbench's own tables for pg-select (`pgbench -i -s`, made when missing).
    #[arg(long, default_value_t = 10)]
    pgbench_scale: u32,
    /// Fraction of pgbench transactions whose latency is logged for the percentiles.
    #[arg(long, default_value_t = 0.1)]
    pgbench_sampling: f64,
    /// The contact (`contacts/{id}`) whose timeline `get-timeline` reads (see
    /// `seed-timeline`).
    #[arg(long, default_value = "")]
    timeline_parent: String,
    /// Filter of the list-contacts scenario.
    #[arg(long, default_value = "region = \"DE\" AND tags:\"vip\"")]
    list_filter: String,
    /// Order of the list-contacts scenario.
    #[arg(long, default_value = "display_name")]
    list_order: String,
    /// PID of the gateway, to report its resident memory idle and under load.
    #[arg(long)]
    gateway_pid: Option<u32>,
    /// A label for the table (e.g. the database).
    #[arg(long, default_value = "")]
    label: String,
    /// Gateway connections the streams share (HTTP/2 multiplexes streams on each).
    #[arg(long, default_value_t = 4)]
    connections: usize,
}

#[derive(Default)]
struct EchoSvc;

#[tonic::async_trait]
impl echo::echo_service_server::EchoService for EchoSvc {
    async fn echo(
        &self,
        r: Request<echo::EchoRequest>,
    ) -> Result<Response<echo::EchoResponse>, Status> {
        let size = usize::try_from(r.get_ref().response_size)
            .unwrap_or(0)
            .min(1 << 20);
        Ok(Response::new(echo::EchoResponse {
            payload: vec![b'x'; size],
        }))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    match Cli::parse().command {
        Cmd::EchoServer { listen } => {
            tonic::transport::Server::builder()
                .add_service(echo::echo_service_server::EchoServiceServer::new(EchoSvc))
                .serve(listen.parse()?)
                .await?;
            Ok(())
        }
        Cmd::Run(args) => run(*args).await,
        Cmd::Import(args) => import::run(*args).await,
        Cmd::SeedTimeline(args) => timeline::seed(*args).await,
        Cmd::SeedOrders(args) => analytics::seed(*args).await,
        Cmd::Analytics(args) => analytics::run(*args).await,
    }
}

struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// One scenario's measurements.
struct Outcome {
    name: String,
    ok: u64,
    errors: u64,
    seconds: f64,
    hist: Histogram<u64>,
    peak_rss_kib: Option<u64>,
}

impl Outcome {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.seconds
    }
    fn ms(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }
}

async fn channels(target: &str, n: usize) -> Result<Vec<Channel>, Box<dyn std::error::Error>> {
    let mut v = Vec::new();
    for _ in 0..n.max(1) {
        v.push(Channel::from_shared(target.to_owned())?.connect().await?);
    }
    Ok(v)
}

fn authed<T>(token: &str, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    if let Ok(v) = format!("Bearer {token}").parse() {
        r.metadata_mut().insert("authorization", v);
    }
    r
}

/// Runs `op` from `concurrency` streams for warm-up + duration; records latencies of the
/// measured part.
async fn drive<F, Fut>(args: &RunArgs, name: &str, op: F) -> Result<Outcome, String>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), Status>> + Send,
{
    let op = Arc::new(op);
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let counter = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..args.concurrency {
        let (op, stop, measuring, counter) =
            (op.clone(), stop.clone(), measuring.clone(), counter.clone());
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).ok();
            let (mut ok, mut errors, mut last_error) = (0u64, 0u64, None);
            while !stop.load(Ordering::Relaxed) {
                let seq = counter.fetch_add(1, Ordering::Relaxed);
                let t = Instant::now();
                let r = op(w, seq).await;
                let us = u64::try_from(t.elapsed().as_micros())
                    .unwrap_or(u64::MAX)
                    .max(1);
                if measuring.load(Ordering::Relaxed) {
                    match r {
                        Ok(()) => {
                            ok += 1;
                            if let Some(h) = hist.as_mut() {
                                let _ = h.record(us.min(60_000_000));
                            }
                        }
                        Err(e) => {
                            errors += 1;
                            last_error = Some(e);
                        }
                    }
                }
            }
            (hist, ok, errors, last_error)
        }));
    }
    tokio::time::sleep(Duration::from_secs(args.warmup)).await;
    measuring.store(true, Ordering::Relaxed);
    let start = Instant::now();
    let mut peak = None;
    let end = start + Duration::from_secs(args.duration);
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if let Some(pid) = args.gateway_pid
            && let Some(r) = rss_kib(pid)
        {
            peak = Some(peak.map_or(r, |p: u64| p.max(r)));
        }
    }
    measuring.store(false, Ordering::Relaxed);
    let seconds = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut total =
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
    let (mut ok, mut errors) = (0, 0);
    for t in tasks {
        if let Ok((h, o, e, last)) = t.await {
            if let Some(h) = h {
                let _ = total.add(h);
            }
            ok += o;
            errors += e;
            if let Some(err) = last {
                eprintln!("{name}: error sample: {:?} {}", err.code(), err.message());
            }
        }
    }
    Ok(Outcome {
        name: name.to_owned(),
        ok,
        errors,
        seconds,
        hist: total,
        peak_rss_kib: peak,
    })
}

async fn run(args: RunArgs) -> Result<(), Box<dyn std::error::Error>> {
    let exe = std::env::current_exe()?;
    let echo_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let _echo = ChildGuard(
        Command::new(exe)
            .args(["echo-server", "--listen", &format!("127.0.0.1:{echo_port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?,
    );
    let echo_target = format!("http://127.0.0.1:{echo_port}");
    let mut echo_channels = None;
    for _ in 0..100 {
        if let Ok(c) = channels(&echo_target, args.connections).await {
            echo_channels = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let echo_channels = echo_channels.ok_or("echo server did not start")?;
    let gw = channels(&args.target, args.connections).await?;
    let idle_rss = args.gateway_pid.and_then(rss_kib);

    // Contact names for get-contact.
    let mut client = ContactServiceClient::new(gw[0].clone());
    let page = client
        .list_contacts(authed(
            &args.token,
            v1::ListContactsRequest {
                page_size: 1000,
                ..Default::default()
            },
        ))
        .await?
        .into_inner();
    let names: Arc<Vec<String>> = Arc::new(page.contacts.into_iter().map(|c| c.name).collect());
    if names.is_empty() {
        return Err("the token's tenant has no contacts: load data first (crm demo)".into());
    }

    let pgbench = match &args.pg_url {
        Some(url) => {
            let (tenant, actor) = pg::token_claims(&args.token)
                .ok_or("--pg-url: the token has no tenant and sub claims")?;
            Some(pg::Pg {
                pgbench: args.pgbench.clone(),
                url: url.clone(),
                clients: args.concurrency,
                jobs: args.pgbench_jobs,
                scale: args.pgbench_scale,
                tenant,
                actor,
                contact: names
                    .first()
                    .and_then(|n| n.strip_prefix("contacts/"))
                    .unwrap_or_default()
                    .to_owned(),
                sampling: args.pgbench_sampling,
                timeline_contact: args
                    .timeline_parent
                    .trim_start_matches("contacts/")
                    .to_owned(),
            })
        }
        None => None,
    };
    let default_list =
        args.list_filter == "region = \"DE\" AND tags:\"vip\"" && args.list_order == "display_name";
    let mut scenarios: Vec<&str> = Vec::new();
    for s in args
        .scenarios
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        scenarios.push(s);
        if let (Some(_), Some(b)) = (&pgbench, pg::baseline_of(s))
            && !args.scenarios.split(',').any(|x| x.trim() == b)
            && (b != "pg-list" || default_list)
        {
            scenarios.push(b);
            // For reference: the gateway's own GetContact SELECT, by pgbench.
            if b == "pg-select" && !args.scenarios.split(',').any(|x| x.trim() == "pg-get") {
                scenarios.push("pg-get");
            }
        }
    }
    let mut baseline_commands = Vec::new();

    let mut outcomes = Vec::new();
    for s in scenarios {
        let token = args.token.clone();
        let o = match s {
            "pg-select" | "pg-get" | "pg-list" | "pg-create" | "pg-timeline" => {
                let Some(pg) = &pgbench else {
                    return Err(format!("{s} needs --pg-url").into());
                };
                let r = pg.run(s, args.warmup, args.duration)?;
                baseline_commands.push((s, r.command.clone()));
                Outcome {
                    name: s.to_owned(),
                    ok: r.transactions,
                    errors: r.failed,
                    seconds: if r.tps > 0.0 {
                        r.transactions as f64 / r.tps
                    } else {
                        args.duration as f64
                    },
                    hist: r.hist,
                    peak_rss_kib: None,
                }
            }
            "echo" => {
                let chans = echo_channels.clone();
                drive(&args, s, move |w, _| {
                    let mut c = echo::echo_service_client::EchoServiceClient::new(
                        chans[w % chans.len()].clone(),
                    );
                    async move {
                        c.echo(Request::new(echo::EchoRequest {
                            payload: vec![b'x'; 60],
                            response_size: 600,
                        }))
                        .await
                        .map(|_| ())
                    }
                })
                .await?
            }
            "get-contact" => {
                let (chans, names) = (gw.clone(), names.clone());
                drive(&args, s, move |w, seq| {
                    let mut c = ContactServiceClient::new(chans[w % chans.len()].clone());
                    let name = names[usize::try_from(seq).unwrap_or(0) % names.len()].clone();
                    let r = authed(&token, v1::GetContactRequest { name });
                    async move { c.get_contact(r).await.map(|_| ()) }
                })
                .await?
            }
            "list-contacts" => {
                let chans = gw.clone();
                let (filter, order_by) = (args.list_filter.clone(), args.list_order.clone());
                drive(&args, s, move |w, _| {
                    let mut c = ContactServiceClient::new(chans[w % chans.len()].clone());
                    let r = authed(
                        &token,
                        v1::ListContactsRequest {
                            page_size: 50,
                            page_token: String::new(),
                            filter: filter.clone(),
                            order_by: order_by.clone(),
                        },
                    );
                    async move { c.list_contacts(r).await.map(|_| ()) }
                })
                .await?
            }
            "create-contact" => {
                let chans = gw.clone();
                let run = uuid::Uuid::now_v7().simple().to_string();
                drive(&args, s, move |w, seq| {
                    let mut c = ContactServiceClient::new(chans[w % chans.len()].clone());
                    let contact = v1::Contact {
                        given_name: format!("Bench{seq}"),
                        family_name: "Load".into(),
                        // A region of its own, so repeated runs do not change what the
                        // list scenario reads; the write path is the same for any region.
                        region: "bench".into(),
                        phones: vec![v1::Phone {
                            number: format!("+49 30 {}", 1_000_000 + seq % 8_999_999),
                            label: "work".into(),
                            extension: String::new(),
                        }],
                        emails: vec![v1::Email {
                            address: format!("bench{seq}.{}@load.example", &run[..8]),
                            label: String::new(),
                        }],
                        tags: vec!["bench".into()],
                        ..Default::default()
                    };
                    let r = authed(
                        &token,
                        v1::CreateContactRequest {
                            contact: Some(contact),
                            request_id: String::new(),
                        },
                    );
                    async move { c.create_contact(r).await.map(|_| ()) }
                })
                .await?
            }
            "create-lead" => {
                let chans = gw.clone();
                if let Some(c) = chans.first() {
                    eprintln!("{}", leads::ensure(c, &token).await?);
                }
                let run = uuid::Uuid::now_v7().simple().to_string();
                const GIVEN: [&str; 8] = [
                    "Anna", "Jonas", "Mia", "Lukas", "Lea", "Finn", "Emma", "Paul",
                ];
                const FAMILY: [&str; 8] = [
                    "Müller",
                    "Schmidt",
                    "Schneider",
                    "Fischer",
                    "Weber",
                    "Meyer",
                    "Wagner",
                    "Becker",
                ];
                drive(&args, s, move |w, seq| {
                    let mut c = v1::lead_service_client::LeadServiceClient::new(
                        chans[w % chans.len()].clone(),
                    );
                    let i = usize::try_from(seq).unwrap_or(0);
                    let lead = v1::Lead {
                        given_name: GIVEN[i % GIVEN.len()].into(),
                        family_name: format!("{}{}", FAMILY[(i / 8) % FAMILY.len()], i % 1000),
                        company: format!("Bench {} GmbH", i % 5000),
                        // Every other lead is routed round-robin (DE), the others to
                        // the least loaded within capacity (FR).
                        region: if seq % 2 == 0 { "DE" } else { "FR" }.into(),
                        source: "web_form".into(),
                        // One lead in ten shares a phone with existing contacts (the demo
                        // data's pool, a few hundred contacts each: a stop key).
                        phones: vec![v1::Phone {
                            number: if seq % 10 == 0 {
                                format!("+44 20 7946 0{:03}", seq / 10 % 1000)
                            } else {
                                format!("+49 40 {}", 1_000_000 + seq % 8_999_999)
                            },
                            label: "work".into(),
                            extension: String::new(),
                        }],
                        emails: vec![v1::Email {
                            address: format!("lead{seq}.{}@load.example", &run[..8]),
                            label: String::new(),
                        }],
                        address: Some(v1::PostalAddress {
                            postal_code: format!("{}", 10_000 + i % 80_000),
                            locality: "Berlin".into(),
                            region_code: "DE".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    };
                    let r = authed(
                        &token,
                        v1::CreateLeadRequest {
                            lead: Some(lead),
                            request_id: String::new(),
                        },
                    );
                    async move { c.create_lead(r).await.map(|_| ()) }
                })
                .await?
            }
            "ingest-email" => {
                // A realistic 30 KB message: headers, a text and an HTML part, a small
                // attachment; each with its own Message-ID, from a sender of the demo
                // tenant's address pool (so some are matched to contacts).
                let chans = gw.clone();
                let run = uuid::Uuid::now_v7().simple().to_string();
                let body: String = "Sehr geehrte Damen und Herren, wir bitten um ein Angebot \
                    für 40 Hydraulikpumpen der Baureihe HX, Lieferung nach Hamburg. "
                    .repeat(90);
                let html = format!("<html><body><p>{body}</p></body></html>");
                let attachment = "QmVuY2htYXJr".repeat(400);
                drive(&args, s, move |w, seq| {
                    let mut c = v1::timeline_service_client::TimelineServiceClient::new(
                        chans[w % chans.len()].clone(),
                    )
                    .max_encoding_message_size(64 << 20);
                    let raw = format!(
                        "Message-ID: <bench-{seq}.{run}@mail.example>\r\n\
                         From: Customer {seq} <customer{}@example.com>\r\n\
                         To: sales@acme.example\r\n\
                         Subject: Anfrage {seq}: Hydraulikpumpen\r\n\
                         Date: Tue, 24 Nov 2026 10:00:00 +0100\r\n\
                         MIME-Version: 1.0\r\n\
                         Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
                         --b1\r\nContent-Type: multipart/alternative; boundary=\"b2\"\r\n\r\n\
                         --b2\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n\
                         --b2\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n\
                         --b2--\r\n\
                         --b1\r\nContent-Type: application/pdf; name=\"spec.pdf\"\r\n\
                         Content-Transfer-Encoding: base64\r\n\r\n{attachment}\r\n--b1--\r\n",
                        seq % 5000
                    );
                    let r = authed(
                        &token,
                        v1::IngestEmailRequest {
                            raw: raw.into_bytes(),
                            links: None,
                        },
                    );
                    async move { c.ingest_email(r).await.map(|_| ()) }
                })
                .await?
            }
            "get-timeline" => {
                if args.timeline_parent.is_empty() {
                    return Err("get-timeline needs --timeline-parent contacts/{id}".into());
                }
                let (chans, parent) = (gw.clone(), args.timeline_parent.clone());
                drive(&args, s, move |w, _| {
                    let mut c = v1::timeline_service_client::TimelineServiceClient::new(
                        chans[w % chans.len()].clone(),
                    )
                    .max_decoding_message_size(64 << 20);
                    let r = authed(
                        &token,
                        v1::GetTimelineRequest {
                            parent: parent.clone(),
                            page_size: 50,
                            ..Default::default()
                        },
                    );
                    async move {
                        let page = c.get_timeline(r).await?.into_inner();
                        if page.interactions.len() == 50 {
                            Ok(())
                        } else {
                            Err(Status::internal(format!(
                                "a page of {} entries, not 50",
                                page.interactions.len()
                            )))
                        }
                    }
                })
                .await?
            }
            "sales-report" => {
                // A year to the start of this month, by month and region (the report a
                // sales dashboard opens with), over the tenant's orders (see seed-orders).
                let now = chrono::Utc::now();
                let end = chrono::NaiveDate::from_ymd_opt(
                    chrono::Datelike::year(&now),
                    chrono::Datelike::month(&now),
                    1,
                )
                .ok_or("no first of the month")?
                .and_hms_opt(0, 0, 0)
                .ok_or("no midnight")?
                .and_utc();
                let start = end - chrono::Duration::days(365);
                let ts = |t: chrono::DateTime<chrono::Utc>| prost_types::Timestamp {
                    seconds: t.timestamp(),
                    nanos: 0,
                };
                let (start, end) = (ts(start), ts(end));
                let chans = gw.clone();
                drive(&args, s, move |w, _| {
                    let mut c = v1::analytics_service_client::AnalyticsServiceClient::new(
                        chans[w % chans.len()].clone(),
                    );
                    let r = authed(
                        &token,
                        v1::SalesReportRequest {
                            start_time: Some(start),
                            end_time: Some(end),
                            granularity: v1::ReportGranularity::Month as i32,
                            dimension: v1::SalesDimension::Region as i32,
                            ..Default::default()
                        },
                    );
                    async move {
                        let report = c.sales_report(r).await?.into_inner();
                        if report.cells.is_empty() {
                            Err(Status::internal("a report without cells"))
                        } else {
                            Ok(())
                        }
                    }
                })
                .await?
            }
            other => return Err(format!("unknown scenario {other}").into()),
        };
        eprintln!(
            "{}: {:.0}/s, p99 {:.2} ms, {} errors",
            o.name,
            o.rate(),
            o.ms(0.99),
            o.errors
        );
        outcomes.push(o);
    }

    let echo_rate = outcomes
        .iter()
        .find(|o| o.name == "echo")
        .map(Outcome::rate);
    println!(
        "\n{} — {} streams over {} connections, {} s per scenario after {} s warm-up\n",
        if args.label.is_empty() {
            "crm-bench"
        } else {
            &args.label
        },
        args.concurrency,
        args.connections,
        args.duration,
        args.warmup
    );
    println!(
        "| scenario | ok | errors | throughput /s | ratio to echo | ratio to raw DB | p50 ms | p90 ms | p99 ms | max ms | gateway RSS peak MiB |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for o in &outcomes {
        let is_baseline = o.name.starts_with("pg-");
        let ratio = match echo_rate {
            Some(e) if !is_baseline => format!("{:.3}", o.rate() / e),
            _ => "-".to_string(),
        };
        let raw = pg::baseline_of(&o.name)
            .and_then(|b| outcomes.iter().find(|x| x.name == b))
            .map_or("-".to_string(), |b| format!("{:.3}", o.rate() / b.rate()));
        let rss = if o.name == "echo" || is_baseline {
            "-".to_string()
        } else {
            o.peak_rss_kib
                .map_or("-".to_string(), |k| format!("{:.1}", k as f64 / 1024.0))
        };
        println!(
            "| {} | {} | {} | {:.0} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
            o.name,
            o.ok,
            o.errors,
            o.rate(),
            ratio,
            raw,
            o.ms(0.5),
            o.ms(0.9),
            o.ms(0.99),
            o.hist.max() as f64 / 1000.0,
            rss
        );
    }
    if !baseline_commands.is_empty() {
        println!(
            "\nraw-database baselines (pgbench, the database URL left out; latencies of a \
             {:.0} % sample of transactions):",
            args.pgbench_sampling * 100.0
        );
        for (name, command) in &baseline_commands {
            println!("- {name}: `{command}`");
        }
    }
    if let Some(k) = idle_rss {
        println!(
            "\ngateway RSS idle (before the run): {:.1} MiB",
            k as f64 / 1024.0
        );
    }
    Ok(())
}
