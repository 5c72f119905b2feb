//! crm-bench-timers: how long N timers falling due at once take to fire on PostgreSQL with
//! several job runners (replicas) sharing one database, each timer exactly once; and the same
//! claim loop as bare SQL, for the ratio.
//!
//! It creates a private database on the server (`--postgres`), migrates it, schedules the
//! timers and analyzes the table (not measured), runs each scenario on a fresh set, checks
//! every timer fired exactly once, prints a markdown table and drops the database.

use clap::Parser;
use crm_core::clock::{Clock, SystemClock};
use crm_core::db::{Db, DbOptions};
use crm_core::jobs::{self, JobContext, JobHandlers, JobOutcome, Runner, RunnerSettings};
use crm_migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectionTrait, DbBackend, Statement, Value};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

type Failure = Box<dyn std::error::Error>;

#[derive(Parser, Clone)]
#[command(
    name = "crm-bench-timers",
    about = "Timers falling due at once: job runners against a bare SQL claim loop"
)]
struct Args {
    /// The PostgreSQL server (a private database is created on it and dropped after).
    #[arg(
        long,
        env = "CRM_BENCH_POSTGRES",
        default_value = "postgres://postgres@127.0.0.1:5432"
    )]
    postgres: String,
    /// Timers falling due at once.
    #[arg(long, default_value_t = 100_000)]
    timers: usize,
    /// Runners (replicas), each with its own connection pool.
    #[arg(long, default_value_t = 3)]
    runners: usize,
    /// `jobs.batch_size` of each runner, and the claim size of the bare loop (default: the
    /// runner's default).
    #[arg(long, default_value_t = 128)]
    batch: u32,
    /// `jobs.concurrency` of each runner (default: the runner's default).
    #[arg(long, default_value_t = 64)]
    concurrency: u32,
    /// Connections of each runner's pool.
    #[arg(long, default_value_t = 4)]
    connections: u32,
    /// Tenants the timers are spread over.
    #[arg(long, default_value_t = 10)]
    tenants: usize,
    /// SLA timers pending beside them (kind `crm.cases.sla`, one per open case, due from two
    /// minutes to about a month ahead), loaded by one SQL statement before the scenarios: the
    /// queue a sweep has to look through (see `--pending` in docs/benchmarks.md).
    #[arg(long, default_value_t = 0)]
    pending: u64,
    /// Comma-separated scenarios: runner, bare.
    #[arg(long, default_value = "runner,bare")]
    scenarios: String,
}

/// One scenario's measurements.
struct Outcome {
    name: &'static str,
    /// Until every timer's handler (or work step) ran.
    fired: Duration,
    /// Until every timer was recorded as done in the database.
    recorded: Duration,
}

/// How often each timer fired, by its sequence number.
struct Fired(Vec<AtomicU32>);

impl Fired {
    fn new(n: usize) -> Arc<Self> {
        Arc::new(Self((0..n).map(|_| AtomicU32::new(0)).collect()))
    }
    fn hit(&self, seq: u64) {
        if let Some(c) = usize::try_from(seq).ok().and_then(|i| self.0.get(i)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }
    /// Timers that fired zero times, and more than once.
    fn check(&self) -> (usize, usize) {
        let n = |f: &dyn Fn(u32) -> bool| {
            self.0
                .iter()
                .filter(|c| f(c.load(Ordering::Relaxed)))
                .count()
        };
        (n(&|c| c == 0), n(&|c| c > 1))
    }
}

#[tokio::main]
async fn main() -> Result<(), Failure> {
    let args = Args::parse();
    let server = args.postgres.trim_end_matches('/').to_owned();
    let name = format!("crm_bench_timers_{}", uuid::Uuid::now_v7().simple());
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

async fn bench(args: &Args, url: &str) -> Result<(), Failure> {
    let db = connect(url, 8).await?;
    Migrator::up(&db.conn, None).await?;
    let tenants: Vec<String> = (0..args.tenants.max(1))
        .map(|i| format!("bench{i}"))
        .collect();
    for t in &tenants {
        crm_core::tenant::create(&db, &SystemClock, t, t).await?;
    }
    if args.pending > 0 {
        seed_pending(&db, &tenants, args.pending).await?;
    }
    let mut outcomes = Vec::new();
    for s in args.scenarios.split(',').map(str::trim) {
        let started = Instant::now();
        schedule_all(&db, &tenants, args.timers).await?;
        // Current statistics, as autovacuum keeps them: with those of an empty table the
        // planner sorts every due row on each claim instead of reading the index in order.
        db.conn.execute_unprepared("ANALYZE jobs").await?;
        eprintln!(
            "{s}: scheduled {} timers in {:.1} s",
            args.timers,
            started.elapsed().as_secs_f64()
        );
        let fired = Fired::new(args.timers);
        let o = match s {
            "runner" => runners(args, url, &fired).await?,
            "bare" => bare(args, url, &fired).await?,
            other => return Err(format!("unknown scenario {other}").into()),
        };
        let (missed, twice) = fired.check();
        let done = succeeded(&db).await?;
        eprintln!(
            "{s}: fired in {:.2} s, recorded in {:.2} s; missed {missed}, more than once {twice}, rows done {done}",
            o.fired.as_secs_f64(),
            o.recorded.as_secs_f64()
        );
        if missed > 0 || twice > 0 || done != args.timers as i64 {
            return Err(format!(
                "{s}: {missed} timers did not fire, {twice} fired more than once, {done} of {} rows done",
                args.timers
            )
            .into());
        }
        db.conn.execute_unprepared("DELETE FROM jobs").await?;
        db.conn.execute_unprepared("VACUUM ANALYZE jobs").await?;
        outcomes.push(o);
    }
    let bare_time = outcomes
        .iter()
        .find(|o| o.name == "bare")
        .map(|o| o.recorded.as_secs_f64());
    println!(
        "\n{} timers due at once over {} tenants, {} runners, batch {}, concurrency {}\n",
        args.timers, args.tenants, args.runners, args.batch, args.concurrency
    );
    println!(
        "| scenario | all fired s | all recorded s | timers/s (recorded) | ratio to bare (time) | exactly once |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | --- |");
    for o in &outcomes {
        let secs = o.recorded.as_secs_f64();
        println!(
            "| {} | {:.2} | {:.2} | {:.0} | {} | yes |",
            o.name,
            o.fired.as_secs_f64(),
            secs,
            args.timers as f64 / secs,
            bare_time.map_or("-".to_owned(), |b| format!("{:.2}", secs / b)),
        );
    }
    Ok(())
}

/// Schedules `n` timers due a second ago, spread over the tenants, 1,000 per transaction.
async fn schedule_all(db: &Db, tenants: &[String], n: usize) -> Result<(), Failure> {
    let due = SystemClock.now() - chrono::Duration::seconds(1);
    let options = jobs::ScheduleOptions::default();
    let mut seq = 0usize;
    while seq < n {
        let tx = db.begin_write().await?;
        for _ in 0..1000.min(n - seq) {
            let tenant = &tenants[seq % tenants.len()];
            let payload = serde_json::json!({ "seq": seq });
            jobs::schedule(
                &tx.txn,
                &SystemClock,
                tenant,
                "bench.timer",
                &payload,
                due,
                &options,
            )
            .await?;
            seq += 1;
        }
        tx.commit().await?;
    }
    Ok(())
}

/// `n` pending SLA timers (see `Args::pending`), then ANALYZE; prints how long finding the
/// ones due within a minute takes with that queue (the sweep's question, as one SELECT).
async fn seed_pending(db: &Db, tenants: &[String], n: u64) -> Result<(), Failure> {
    let started = Instant::now();
    let list = tenants
        .iter()
        .map(|t| format!("'{}'", t.replace('\'', "''")))
        .collect::<Vec<_>>()
        .join(",");
    let sql = format!(
        "INSERT INTO jobs (tenant_id, id, kind, payload, dedupe_key, collection, creator_id, \
         state, due_time, wake_time, attempts, max_attempts, error_code, last_error, \
         lease_owner, lease_deadline, cancel_requested, result, progress, checkpoint, \
         create_time, update_time, finish_time) \
         SELECT (ARRAY[{list}])[1 + g % {t}], gen_random_uuid(), 'crm.cases.sla', \
         '{{\"case\": \"' || md5(g::text)::uuid || '\", \"timer\": \"RESOLUTION_BREACH\"}}', \
         'case/' || md5(g::text)::uuid, 'cases', NULL, 'QUEUED', \
         now() + interval '2 minutes' + g * interval '2.5 seconds', \
         now() + interval '2 minutes' + g * interval '2.5 seconds', \
         0, 5, NULL, NULL, NULL, NULL, false, NULL, NULL, NULL, now(), now(), NULL \
         FROM generate_series(1, {n}) AS g",
        t = tenants.len()
    );
    db.conn.execute_unprepared(&sql).await?;
    db.conn.execute_unprepared("ANALYZE jobs").await?;
    eprintln!(
        "{n} pending SLA timers loaded in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    for horizon in ["1 minute", "1 hour"] {
        let q = format!(
            "SELECT count(*) AS n FROM jobs WHERE state IN ('QUEUED', 'RUNNING') \
             AND wake_time <= now() + interval '{horizon}'"
        );
        let t = Instant::now();
        let row = db
            .conn
            .query_one_raw(Statement::from_string(DbBackend::Postgres, q))
            .await?
            .ok_or("no count")?;
        let found: i64 = row.try_get("", "n")?;
        eprintln!(
            "due within {horizon}: {found} of {n} pending, found in {:.2} ms",
            t.elapsed().as_secs_f64() * 1000.0
        );
    }
    Ok(())
}

async fn succeeded(db: &Db) -> Result<i64, Failure> {
    let row = db
        .conn
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT count(*) AS n FROM jobs WHERE state = 'SUCCEEDED'",
        ))
        .await?
        .ok_or("no count")?;
    Ok(row.try_get("", "n")?)
}

/// The job runners of crm_core::jobs, each on its own pool, with a handler that counts.
async fn runners(args: &Args, url: &str, fired: &Arc<Fired>) -> Result<Outcome, Failure> {
    let total = args.timers as u64;
    let count = Arc::new(AtomicU64::new(0));
    let mut handlers = JobHandlers::new();
    let (f, c) = (fired.clone(), count.clone());
    handlers.register("bench.timer", move |ctx: JobContext| {
        let (fired, count) = (f.clone(), c.clone());
        async move {
            fired.hit(ctx.payload["seq"].as_u64().unwrap_or(u64::MAX));
            count.fetch_add(1, Ordering::Relaxed);
            Ok(JobOutcome::done())
        }
    })?;
    let settings = RunnerSettings {
        batch_size: args.batch,
        concurrency: args.concurrency,
        poll_interval: Duration::from_millis(100),
        retention: Duration::ZERO,
        ..RunnerSettings::default()
    };
    let mut pools = Vec::new();
    for _ in 0..args.runners {
        pools.push(connect(url, args.connections).await?);
    }
    let started = Instant::now();
    let running: Vec<Runner> = pools
        .into_iter()
        .map(|db| {
            Runner::start(
                db,
                Arc::new(SystemClock),
                handlers.clone(),
                settings.clone(),
            )
        })
        .collect();
    let mut fired_at = None;
    loop {
        if fired_at.is_none() && count.load(Ordering::Relaxed) >= total {
            fired_at = Some(started.elapsed());
        }
        let recorded: u64 = running.iter().map(|r| r.stats().succeeded).sum();
        if recorded >= total {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            return Err("the runners did not finish within 10 minutes".into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let recorded = started.elapsed();
    for r in &running {
        let st = r.stats();
        eprintln!("runner {}: {st:?}", r.owner());
    }
    for r in running {
        r.shutdown().await;
    }
    Ok(Outcome {
        name: "runner",
        fired: fired_at.unwrap_or(recorded),
        recorded,
    })
}

/// The bare claim loop: each worker claims a batch with one `UPDATE ... WHERE (tenant_id, id)
/// IN (SELECT ... FOR UPDATE SKIP LOCKED LIMIT n) RETURNING`, counts it, and marks the batch
/// done with one `UPDATE`, until nothing is due.
async fn bare(args: &Args, url: &str, fired: &Arc<Fired>) -> Result<Outcome, Failure> {
    const CLAIM: &str = "UPDATE jobs SET state = 'RUNNING', lease_owner = $1, \
        lease_deadline = $2, wake_time = $2, attempts = attempts + 1, update_time = $3 \
        WHERE (tenant_id, id) IN (SELECT tenant_id, id FROM jobs \
        WHERE state IN ('QUEUED', 'RUNNING') AND wake_time <= $3 AND kind = 'bench.timer' \
        ORDER BY wake_time LIMIT $4 FOR UPDATE SKIP LOCKED) \
        RETURNING tenant_id, id, payload";
    let mut pools = Vec::new();
    for _ in 0..args.runners {
        pools.push(connect(url, args.connections).await?);
    }
    let started = Instant::now();
    let mut workers = Vec::new();
    for (w, db) in pools.into_iter().enumerate() {
        let fired = fired.clone();
        let batch = i64::from(args.batch);
        workers.push(tokio::spawn(async move {
            let owner = format!("bare-{w}");
            loop {
                let now = SystemClock.now();
                let claim = Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    CLAIM,
                    [
                        Value::from(owner.clone()),
                        Value::from(now + chrono::Duration::seconds(60)),
                        Value::from(now),
                        Value::from(batch),
                    ],
                );
                let rows = db.conn.query_all_raw(claim).await?;
                if rows.is_empty() {
                    return Ok::<(), sea_orm::DbErr>(());
                }
                let mut keys = Vec::with_capacity(rows.len());
                for r in &rows {
                    let payload: String = r.try_get("", "payload")?;
                    let seq = serde_json::from_str::<serde_json::Value>(&payload)
                        .ok()
                        .and_then(|p| p["seq"].as_u64())
                        .unwrap_or(u64::MAX);
                    fired.hit(seq);
                    keys.push((
                        r.try_get::<String>("", "tenant_id")?,
                        r.try_get::<uuid::Uuid>("", "id")?,
                    ));
                }
                let mut sql = String::from(
                    "UPDATE jobs SET state = 'SUCCEEDED', wake_time = NULL, \
                     lease_deadline = NULL, finish_time = $1, update_time = $1 \
                     WHERE (tenant_id, id) IN (",
                );
                let mut values = vec![Value::from(SystemClock.now())];
                for (i, (t, id)) in keys.into_iter().enumerate() {
                    if i > 0 {
                        sql.push_str(", ");
                    }
                    sql.push_str(&format!("(${}, ${})", 2 * i + 2, 2 * i + 3));
                    values.push(Value::from(t));
                    values.push(Value::from(id));
                }
                sql.push(')');
                db.conn
                    .execute_raw(Statement::from_sql_and_values(
                        DbBackend::Postgres,
                        sql,
                        values,
                    ))
                    .await?;
            }
        }));
    }
    for w in workers {
        w.await??;
    }
    let elapsed = started.elapsed();
    Ok(Outcome {
        name: "bare",
        fired: elapsed,
        recorded: elapsed,
    })
}
