//! crm-bench-events: the outbox relay to NATS JetStream on PostgreSQL.
//!
//! - `throughput`: N events waiting in the outbox (one per record, as after an outage), then
//!   `--relays` relays (each with its own pool, as replicas) publish them; events per second
//!   from the relays' start until the outbox is empty, and the stream is checked to hold
//!   each event exactly once.
//! - `latency`: contacts created through the engine (`Ctx::create`: row, audit, outbox event
//!   in one transaction, as CreateContact does behind gRPC) at `--rate` writes per second, a
//!   relay in the same process (as in `crm serve`), and a NATS subscriber; the time from the
//!   create's commit returning to the event's delivery to the subscriber, as percentiles.
//!
//! It creates a private database on the server (`--postgres`) and a stream of its own on the
//! NATS server (`--nats`), and removes both afterwards.

use clap::Parser;
use crm_core::access::Policy;
use crm_core::auth::Principal;
use crm_core::clock::SystemClock;
use crm_core::db::{Db, DbOptions};
use crm_core::service::Ctx;
use crm_migration::{Migrator, MigratorTrait};
use futures::StreamExt;
use hdrhistogram::Histogram;
use prost::Message as _;
use sea_orm::ConnectionTrait;
use sea_orm::sea_query::{Alias, Expr, Query};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Failure = Box<dyn std::error::Error + Send + Sync>;

#[derive(Parser, Clone)]
#[command(
    name = "crm-bench-events",
    about = "The outbox relay to NATS JetStream: events per second, and commit-to-delivery latency"
)]
struct Args {
    /// The PostgreSQL server (a private database is created on it and dropped after).
    #[arg(
        long,
        env = "CRM_BENCH_POSTGRES",
        default_value = "postgres://postgres@127.0.0.1:5432"
    )]
    postgres: String,
    /// The NATS server (JetStream enabled).
    #[arg(long, env = "CRM_BENCH_NATS", default_value = "nats://127.0.0.1:4222")]
    nats: String,
    /// Comma-separated scenarios: throughput, latency.
    #[arg(long, default_value = "throughput,latency")]
    scenarios: String,
    /// Events waiting in the outbox for `throughput`.
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Relays (replicas) publishing at once, each with its own connection pool.
    #[arg(long, default_value_t = 1)]
    relays: usize,
    /// `events.batch_size`.
    #[arg(long, default_value_t = 1000)]
    batch: u32,
    /// `events.concurrency` of each relay.
    #[arg(long, default_value_t = 4)]
    concurrency: u32,
    /// Writes per second for `latency`.
    #[arg(long, default_value_t = 2000)]
    rate: u64,
    /// Seconds of writing for `latency` (the first second is not measured).
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Concurrent writers for `latency`.
    #[arg(long, default_value_t = 32)]
    writers: u64,
}

#[tokio::main]
async fn main() -> Result<(), Failure> {
    let args = Args::parse();
    let server = args.postgres.trim_end_matches('/').to_owned();
    let name = format!("crm_bench_events_{}", uuid::Uuid::now_v7().simple());
    let admin = sea_orm::Database::connect(format!("{server}/postgres")).await?;
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await?;
    let url = format!("{server}/{name}");
    let result = bench(&args, &url).await;
    admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await?;
    result
}

async fn connect(url: &str, connections: u32) -> Result<Db, Failure> {
    let options = DbOptions {
        max_connections: connections,
        statement_timeout: Duration::from_secs(30),
        ..DbOptions::default()
    };
    Ok(Db::connect_with(url, options).await?)
}

/// Event settings with a stream and subject prefix of this run.
fn settings(args: &Args) -> crm_gateway::config::Events {
    let tag = uuid::Uuid::now_v7().simple().to_string();
    crm_gateway::config::Events {
        nats_url: args.nats.clone(),
        subject_prefix: format!("bench{tag}"),
        stream: format!("BENCH{tag}"),
        batch_size: args.batch,
        concurrency: args.concurrency,
        poll_interval_ms: 100,
        ..Default::default()
    }
}

async fn bench(args: &Args, url: &str) -> Result<(), Failure> {
    crm_core::registry::install(crm_gateway::server::register_domains)?;
    let db = connect(url, 8).await?;
    Migrator::up(&db.conn, None).await?;
    crm_core::tenant::create(&db, &SystemClock, "bench", "bench").await?;
    let mut lines = vec![];
    for s in args.scenarios.split(',').map(str::trim) {
        match s {
            "throughput" => lines.push(throughput(args, url, &db).await?),
            "latency" => lines.push(latency(args, url).await?),
            other => return Err(format!("unknown scenario {other}").into()),
        }
    }
    println!("\n| scenario | figures |\n| --- | --- |");
    for l in lines {
        println!("{l}");
    }
    Ok(())
}

/// Loads `n` pending events (one per record, a contact-sized payload), 1,000 per statement.
async fn seed(db: &Db, n: usize) -> Result<(), Failure> {
    let started = Instant::now();
    let mut left = n;
    while left > 0 {
        let k = left.min(1000);
        let mut q = Query::insert();
        q.into_table(Alias::new("outbox_events")).columns(
            [
                "tenant_id",
                "id",
                "subject",
                "collection",
                "resource_id",
                "event_type",
                "payload",
                "time",
            ]
            .map(Alias::new),
        );
        for _ in 0..k {
            let id = uuid::Uuid::now_v7();
            let record = uuid::Uuid::now_v7();
            let payload = serde_json::json!({
                "resource": format!("contacts/{record}"),
                "revision": 1,
                "actor": "users/00000000-0000-0000-0000-000000000000",
                "changed_fields": ["given_name", "family_name", "emails", "phones", "tags"],
                "data": {
                    "given_name": "Anna", "family_name": "Schmidt", "display_name": "Anna Schmidt",
                    "emails": [{"address": "anna.schmidt@example.com", "label": "work"}],
                    "phones": [{"number": "+4930123456", "label": "work"}],
                    "tags": ["vip"], "region": "DE", "owner": "00000000-0000-0000-0000-000000000000",
                },
            });
            q.values([
                Expr::val("bench"),
                Expr::val(id),
                Expr::val("crm.bench.contacts.created"),
                Expr::val("contacts"),
                Expr::val(record),
                Expr::val("contacts.created"),
                Expr::val(payload.to_string()),
                Expr::val(chrono::Utc::now()),
            ])?;
        }
        db.conn.execute(&q).await?;
        left -= k;
    }
    db.conn.execute_unprepared("ANALYZE outbox_events").await?;
    eprintln!(
        "throughput: {n} events loaded in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn stream_count(args: &Args, stream: &str) -> Result<u64, Failure> {
    let client = async_nats::connect(args.nats.as_str()).await?;
    let js = async_nats::jetstream::new(client);
    let mut s = js.get_stream(stream).await?;
    Ok(s.info().await?.state.messages)
}

async fn delete_stream(args: &Args, stream: &str) -> Result<(), Failure> {
    let client = async_nats::connect(args.nats.as_str()).await?;
    let js = async_nats::jetstream::new(client);
    js.delete_stream(stream).await?;
    Ok(())
}

async fn throughput(args: &Args, url: &str, db: &Db) -> Result<String, Failure> {
    seed(db, args.events).await?;
    // With the tenant's role event, if not published yet.
    let total = crm_core::outbox::pending(&db.conn).await?;
    let s = settings(args);
    // The stream exists before the clock starts.
    crm_gateway::relay::connect(&s).await?;
    let (stop, rx) = tokio::sync::watch::channel(false);
    let mut relays = vec![];
    let started = Instant::now();
    for _ in 0..args.relays.max(1) {
        let rdb = connect(url, args.concurrency + 2).await?;
        relays.push(tokio::spawn(crm_gateway::relay::run(
            rdb,
            s.clone(),
            rx.clone(),
        )));
    }
    let mut last_report = Instant::now();
    loop {
        let left = crm_core::outbox::pending(&db.conn).await?;
        if left == 0 {
            break;
        }
        if last_report.elapsed() > Duration::from_secs(2) {
            eprintln!(
                "throughput: {left} left after {:.1} s",
                started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let _ = stop.send(true);
    for r in relays {
        let _ = r.await;
    }
    let stored = stream_count(args, &s.stream).await?;
    delete_stream(args, &s.stream).await?;
    db.conn
        .execute_unprepared("DELETE FROM outbox_events")
        .await?;
    let rate = total as f64 / secs;
    eprintln!(
        "throughput: {total} events in {secs:.2} s = {rate:.0}/s; {stored} messages in the stream"
    );
    if stored != total {
        return Err(format!("the stream holds {stored} messages, not {total}").into());
    }
    Ok(format!(
        "| throughput ({} events waiting, {} relay(s), batch {}, concurrency {}) | {rate:.0} events/s ({secs:.2} s), each exactly once in the stream |",
        args.events, args.relays, args.batch, args.concurrency
    ))
}

/// Commit and delivery times of one record's event.
type Times = Arc<Mutex<HashMap<String, (Option<Instant>, Option<Instant>)>>>;

async fn latency(args: &Args, url: &str) -> Result<String, Failure> {
    let s = settings(args);
    crm_gateway::relay::connect(&s).await?;
    let times: Times = Arc::new(Mutex::new(HashMap::new()));
    // The subscriber.
    let client = async_nats::connect(args.nats.as_str()).await?;
    let mut sub = client.subscribe(format!("{}.>", s.subject_prefix)).await?;
    let t = times.clone();
    let delivered = tokio::spawn(async move {
        let mut n = 0u64;
        while let Some(m) = sub.next().await {
            let now = Instant::now();
            if let Ok(e) = crm_api::v1::Event::decode(m.payload)
                && let Ok(mut map) = t.lock()
            {
                map.entry(e.resource).or_default().1 = Some(now);
                n += 1;
            }
        }
        n
    });
    // The relay, in this process as in `crm serve` (woken by the commits).
    let (stop, rx) = tokio::sync::watch::channel(false);
    let rdb = connect(url, args.concurrency + 2).await?;
    let relay = tokio::spawn(crm_gateway::relay::run(rdb, s.clone(), rx));
    // The writers.
    let wdb = connect(url, 16).await?;
    let started = Instant::now();
    let end = started + Duration::from_secs(args.seconds);
    let measure_from = started + Duration::from_secs(1);
    let writers = args.writers.max(1);
    let period = Duration::from_secs_f64(writers as f64 / args.rate.max(1) as f64);
    let mut tasks = vec![];
    for w in 0..writers {
        let db = wdb.clone();
        let times = times.clone();
        tasks.push(tokio::spawn(async move {
            let ctx = Ctx::new(
                db,
                Principal {
                    tenant: "bench".into(),
                    user: uuid::Uuid::now_v7(),
                    roles: vec![],
                },
                Policy::superuser(),
                Arc::new(SystemClock),
            );
            // Spread the writers' ticks over one period.
            tokio::time::sleep(period.mul_f64(w as f64 / writers as f64)).await;
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut written = 0u64;
            let mut failed = 0u64;
            while Instant::now() < end {
                tick.tick().await;
                let c = crm_core::model::Contact {
                    given_name: "Anna".into(),
                    family_name: format!("Bench{w}"),
                    region: "bench".into(),
                    ..Default::default()
                };
                match ctx.create(c, "").await {
                    Ok(r) => {
                        let now = Instant::now();
                        if now >= measure_from
                            && let Ok(mut map) = times.lock()
                        {
                            map.entry(format!("contacts/{}", r.meta.id)).or_default().0 = Some(now);
                        }
                        written += 1;
                    }
                    Err(_) => failed += 1,
                }
            }
            (written, failed)
        }));
    }
    let mut written = 0;
    let mut failed = 0;
    for t in tasks {
        let (w, f) = t.await?;
        written += w;
        failed += f;
    }
    let wrote_for = started.elapsed().as_secs_f64();
    // Let the last events arrive.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = stop.send(true);
    let _ = relay.await;
    drop(client);
    delivered.abort();
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut missing = 0u64;
    let mut measured = 0u64;
    if let Ok(map) = times.lock() {
        for (commit, delivery) in map.values() {
            let Some(commit) = commit else { continue };
            measured += 1;
            match delivery {
                Some(d) => {
                    let us = d.saturating_duration_since(*commit).as_micros();
                    h.saturating_record(u64::try_from(us).unwrap_or(u64::MAX).max(1));
                }
                None => missing += 1,
            }
        }
    }
    delete_stream(args, &s.stream).await?;
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let rate = written as f64 / wrote_for;
    eprintln!(
        "latency: {written} writes ({failed} failed) in {wrote_for:.1} s = {rate:.0}/s; {measured} measured, {missing} not delivered; p50 {:.1} ms, p90 {:.1}, p99 {:.1}, max {:.1}",
        ms(0.5),
        ms(0.9),
        ms(0.99),
        h.max() as f64 / 1000.0
    );
    Ok(format!(
        "| latency (target {} writes/s, {} writers) | {rate:.0} writes/s achieved; commit to delivery p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms; {measured} measured, {missing} not delivered, {failed} writes failed |",
        args.rate,
        writers,
        ms(0.5),
        ms(0.9),
        ms(0.99),
        h.max() as f64 / 1000.0
    ))
}
