//! The analytics benchmarks' data and runs.
//!
//! `crm-bench seed-orders` loads customers and their orders straight into the gateway's
//! PostgreSQL database, as `pgbench -i` loads its own tables (and as `seed-timeline` does):
//! `--contacts` contacts in eight regions, of whom 90 % buy, and `--orders` orders over the
//! two years before now (uneven: a few customers buy often, most rarely), 93 % fulfilled,
//! 5 % returned, 2 % cancelled, in EUR (80 %), USD (15 %) and CNY (5 %), one line each; then
//! ANALYZE. The load skips the audit trail and events, which no analytics read.
//!
//! `crm-bench analytics` then times, through the gateway as the tenant's admin: an RFM run
//! (with value scores) over the customers, a lifecycle evaluation with the eight-stage
//! template, and a refresh of a segment over RFM scores, region and stage, each from its
//! start RPC to its operation's end; then, with `--duckdb`, the same RFM aggregation run by
//! DuckDB over the same orders exported to Parquet (`python3` with the `duckdb` package),
//! for the ratio.

use crate::authed;
use crm_api::google::longrunning::{self as lro, operations_client::OperationsClient};
use crm_api::v1::{self, analytics_service_client::AnalyticsServiceClient};
use crm_core::db::{Db, DbOptions};
use prost::Message;
use sea_orm::ConnectionTrait;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

#[derive(clap::Parser, Clone)]
pub struct SeedArgs {
    /// The gateway's PostgreSQL database.
    #[arg(long, env = "CRM_BENCH_PG_URL")]
    pg_url: String,
    /// The tenant (id).
    #[arg(long)]
    tenant: String,
    /// Contacts to create.
    #[arg(long, default_value_t = 1_000_000)]
    contacts: u64,
    /// Orders to create.
    #[arg(long, default_value_t = 10_000_000)]
    orders: u64,
    /// Rows per INSERT statement.
    #[arg(long, default_value_t = 500_000)]
    batch: u64,
}

/// The regions contacts are spread over.
pub const REGIONS: [&str; 8] = ["DE", "FR", "IT", "ES", "NL", "PL", "CN", "US"];

/// A seeded contact's id: the same for the same tenant and number, so orders can name it.
fn contact_id_sql(tenant: &str, n: &str) -> String {
    format!("md5('{tenant}-c-' || ({n}))::uuid")
}

fn contacts_sql(tenant: &str, from: u64, to: u64) -> String {
    let regions = REGIONS
        .iter()
        .map(|r| format!("'{r}'"))
        .collect::<Vec<_>>()
        .join(",");
    let id = contact_id_sql(tenant, "g");
    format!(
        r#"INSERT INTO contacts (tenant_id, id, revision, create_time, update_time, delete_time,
  given_name, family_name, display_name, phones, emails, addresses, birth_date, region, tags,
  owner_id, territory_id, custom_fields)
SELECT '{tenant}', {id}, 1, now(), now(), NULL,
  'Kunde', 'Nr ' || g, 'Kunde Nr ' || g, '[]', '[]', '[]', NULL,
  (ARRAY[{regions}])[1 + g % 8], '', NULL, NULL, '{{}}'
FROM generate_series({from}, {to}) AS g"#
    )
}

fn orders_sql(tenant: &str, buyers: u64, from: u64, to: u64) -> String {
    // A customer number skewed towards the first ones: power(random, 2) puts a quarter of
    // the orders on the first 6 % of buyers.
    let contact = contact_id_sql(
        tenant,
        &format!("1 + floor({buyers} * power(random(), 2))::bigint"),
    );
    format!(
        r#"INSERT INTO orders (tenant_id, id, revision, create_time, update_time, delete_time,
  account_id, contact_id, order_time, channel, status, currency_code, lines, total,
  owner_id, territory_id)
SELECT '{tenant}', gen_random_uuid(), 1, now(), now(), NULL,
  NULL, {contact}, now() - make_interval(secs => random() * 730 * 86400),
  'ONLINE',
  CASE WHEN r < 0.02 THEN 'CANCELLED' WHEN r < 0.07 THEN 'RETURNED' ELSE 'FULFILLED' END,
  CASE WHEN c < 0.80 THEN 'EUR' WHEN c < 0.95 THEN 'USD' ELSE 'CNY' END,
  '[{{"product":"' || md5('{tenant}-p-' || (g % 50))::uuid || '","quantity":' || q
    || ',"unit_price":' || p || ',"discount":0,"amount":' || (q * p) || '}}]',
  q * p, NULL, NULL
FROM (SELECT g, random() AS r, random() AS c, 1 + (g % 3) AS q,
        500 + floor(random() * 20000)::bigint AS p
      FROM generate_series({from}, {to}) AS g) AS s"#
    )
}

async fn load(
    db: &Db,
    what: &str,
    total: u64,
    batch: u64,
    sql: impl Fn(u64, u64) -> String,
) -> Result<(), Box<dyn std::error::Error>> {
    let started = Instant::now();
    let mut from = 1;
    while from <= total {
        let to = (from + batch - 1).min(total);
        db.conn.execute_unprepared(&sql(from, to)).await?;
        eprintln!(
            "seed-orders: {to} of {total} {what} ({:.0} s)",
            started.elapsed().as_secs_f64()
        );
        from = to + 1;
    }
    Ok(())
}

/// Loads the rows (see the module docs).
pub async fn seed(a: SeedArgs) -> Result<(), Box<dyn std::error::Error>> {
    if a.tenant.contains('\'') || a.tenant.is_empty() {
        return Err("--tenant: a tenant id without quotes".into());
    }
    let db = Db::connect_with(
        &a.pg_url,
        DbOptions {
            max_connections: 2,
            statement_timeout: Duration::from_secs(3600),
            ..DbOptions::default()
        },
    )
    .await?;
    let started = Instant::now();
    let t = a.tenant.as_str();
    load(&db, "contacts", a.contacts, a.batch, |f, to| {
        contacts_sql(t, f, to)
    })
    .await?;
    let buyers = (a.contacts * 9 / 10).max(1);
    load(&db, "orders", a.orders, a.batch, |f, to| {
        orders_sql(t, buyers, f, to)
    })
    .await?;
    db.conn
        .execute_unprepared("ANALYZE contacts; ANALYZE orders")
        .await?;
    eprintln!(
        "seed-orders: {} contacts and {} orders in {:.0} s, analyzed",
        a.contacts,
        a.orders,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[derive(clap::Parser, Clone)]
pub struct RunArgs {
    /// The gateway.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    target: String,
    /// The tenant admin's bearer token.
    #[arg(long, env = "CRM_BENCH_TOKEN")]
    token: String,
    /// Steps to time, comma-separated: rfm, lifecycle, segment, duckdb.
    #[arg(long, default_value = "rfm,lifecycle,segment,duckdb")]
    steps: String,
    /// The gateway's PostgreSQL database (for the DuckDB export).
    #[arg(long, env = "CRM_BENCH_PG_URL")]
    pg_url: Option<String>,
    /// The tenant (id), for the DuckDB export.
    #[arg(long, default_value = "")]
    tenant: String,
    /// Where the orders are exported for DuckDB.
    #[arg(long, default_value = "/tmp/crm-bench-orders")]
    export_dir: String,
    /// PID of the gateway, to report its peak resident memory during each step.
    #[arg(long)]
    gateway_pid: Option<u32>,
}

fn metadata(op: &lro::Operation) -> Option<v1::OperationMetadata> {
    op.metadata
        .as_ref()
        .and_then(|m| v1::OperationMetadata::decode(m.value.as_slice()).ok())
}

/// Polls the operation every 100 ms until it is done; its time from `t0`, and the peak RSS.
async fn wait(
    ops: &mut OperationsClient<Channel>,
    token: &str,
    name: &str,
    t0: Instant,
    pid: Option<u32>,
) -> Result<(f64, u64, lro::Operation), Box<dyn std::error::Error>> {
    let mut peak = pid.and_then(crate::rss_kib).unwrap_or(0);
    let mut last_print = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some(r) = pid.and_then(crate::rss_kib) {
            peak = peak.max(r);
        }
        let o = ops
            .get_operation(authed(
                token,
                lro::GetOperationRequest {
                    name: name.to_owned(),
                },
            ))
            .await?
            .into_inner();
        if o.done {
            if let Some(lro::operation::Result::Error(e)) = &o.result {
                return Err(format!("{name} failed: {} {}", e.code, e.message).into());
            }
            return Ok((t0.elapsed().as_secs_f64(), peak, o));
        }
        if last_print.elapsed() > Duration::from_secs(5) {
            last_print = Instant::now();
            if let Some(m) = metadata(&o) {
                eprintln!(
                    "  {:>6.1} s: {} of {} {:?}",
                    t0.elapsed().as_secs_f64(),
                    m.done_count,
                    m.total_count,
                    m.counts
                );
            }
        }
    }
}

fn report(step: &str, secs: f64, peak_kib: u64, op: &lro::Operation) {
    let counts = metadata(op).map(|m| m.counts).unwrap_or_default();
    println!(
        "| {step} | {secs:.2} | {} | {counts:?} |",
        if peak_kib > 0 {
            format!("{:.0}", peak_kib as f64 / 1024.0)
        } else {
            "-".into()
        }
    );
}

/// The RFM aggregation DuckDB runs over the exported orders: per contact and currency, the
/// orders, purchases, net amount and last purchase of the year before the export's as-of
/// instant, as the gateway's run reads them (cancelled left out, returned net 0).
const DUCKDB_SCRIPT: &str = r#"
import sys, time, duckdb
src, as_of = sys.argv[1], sys.argv[2]
con = duckdb.connect()
t = time.time()
con.execute(f"CREATE TABLE o AS SELECT * FROM read_parquet('{src}')")
load = time.time() - t
q = f"""
WITH agg AS (
  SELECT contact_id, currency_code,
         count(*) AS n_orders,
         sum(CASE WHEN status <> 'RETURNED' AND total > 0 THEN 1 ELSE 0 END) AS n_purchases,
         sum(CASE WHEN status = 'RETURNED' THEN 0 ELSE total END) AS net,
         max(CASE WHEN status <> 'RETURNED' AND total > 0 THEN order_time END) AS last_purchase
  FROM o
  WHERE status <> 'CANCELLED'
    AND order_time >= TIMESTAMPTZ '{as_of}' - INTERVAL 365 DAY
    AND order_time <= TIMESTAMPTZ '{as_of}'
  GROUP BY contact_id, currency_code
), per_customer AS (
  SELECT contact_id, sum(n_purchases) AS f, max(last_purchase) AS last_purchase,
         sum(CASE WHEN currency_code = 'EUR' THEN net ELSE 0 END) AS m_eur
  FROM agg GROUP BY contact_id
)
SELECT count(*), sum(f),
       sum(ntile_r), sum(ntile_f), sum(ntile_m)
FROM (
  SELECT f,
         ntile(5) OVER (ORDER BY last_purchase) AS ntile_r,
         ntile(5) OVER (ORDER BY f) AS ntile_f,
         ntile(5) OVER (ORDER BY m_eur) AS ntile_m
  FROM per_customer
)
"""
times = []
for _ in range(3):
    t = time.time()
    row = con.execute(q).fetchone()
    times.append(time.time() - t)
times.sort()
print(f"duckdb {duckdb.__version__}: load {load:.2f} s, query median {times[1]:.3f} s (runs {', '.join(f'{x:.3f}' for x in times)}), result {row}")
"#;

async fn duckdb(a: &RunArgs, as_of: &str) -> Result<(), Box<dyn std::error::Error>> {
    let url = a
        .pg_url
        .as_deref()
        .ok_or("--pg-url (or CRM_BENCH_PG_URL) is needed for the DuckDB step")?;
    if a.tenant.is_empty() || a.tenant.contains('\'') {
        return Err("--tenant is needed for the DuckDB step".into());
    }
    std::fs::create_dir_all(&a.export_dir)?;
    let csv = format!("{}/orders.csv", a.export_dir);
    let parquet = format!("{}/orders.parquet", a.export_dir);
    let t0 = Instant::now();
    let copy = format!(
        "\\copy (SELECT contact_id, order_time, status, currency_code, total FROM orders \
         WHERE tenant_id = '{}' AND delete_time IS NULL AND contact_id IS NOT NULL) TO '{csv}' \
         WITH (FORMAT csv, HEADER true)",
        a.tenant
    );
    let out = std::process::Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-q", "-c", &copy])
        .output()?;
    if !out.status.success() {
        return Err(format!("psql: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let export_s = t0.elapsed().as_secs_f64();
    let convert = format!(
        "import duckdb; duckdb.sql(\"COPY (SELECT * FROM read_csv('{csv}', header=true, \
         columns={{'contact_id':'UUID','order_time':'TIMESTAMPTZ','status':'VARCHAR',\
         'currency_code':'VARCHAR','total':'BIGINT'}})) TO '{parquet}' (FORMAT parquet)\")"
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &convert])
        .output()?;
    if !out.status.success() {
        return Err(format!("duckdb: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let out = std::process::Command::new("python3")
        .args(["-c", DUCKDB_SCRIPT, &parquet, as_of])
        .output()?;
    if !out.status.success() {
        return Err(format!("duckdb: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    eprintln!("exported the orders to CSV in {export_s:.1} s");
    println!("{}", String::from_utf8_lossy(&out.stdout).trim());
    Ok(())
}

pub async fn run(a: RunArgs) -> Result<(), Box<dyn std::error::Error>> {
    let chan = Channel::from_shared(a.target.clone())?.connect().await?;
    let mut svc = AnalyticsServiceClient::new(chan.clone());
    let mut ops = OperationsClient::new(chan);
    let steps: Vec<&str> = a.steps.split(',').map(str::trim).collect();
    let as_of = chrono::Utc::now();
    let as_of_ts = prost_types::Timestamp {
        seconds: as_of.timestamp(),
        nanos: 0,
    };
    println!("| step | seconds | gateway peak RSS MiB | counts |");
    println!("| --- | ---: | ---: | --- |");
    if steps.contains(&"rfm") {
        let t0 = Instant::now();
        let op = svc
            .start_rfm_run(authed(
                &a.token,
                v1::StartRfmRunRequest {
                    config: String::new(),
                    period_start_time: None,
                    as_of_time: Some(as_of_ts),
                },
            ))
            .await?
            .into_inner();
        let (s, peak, done) = wait(&mut ops, &a.token, &op.name, t0, a.gateway_pid).await?;
        report("RFM + value run", s, peak, &done);
    }
    if steps.contains(&"lifecycle") {
        let models = svc
            .list_lifecycle_models(authed(
                &a.token,
                v1::ListLifecycleModelsRequest {
                    page_size: 10,
                    ..Default::default()
                },
            ))
            .await?
            .into_inner();
        if !models.lifecycle_models.iter().any(|m| m.active) {
            svc.create_lifecycle_model(authed(
                &a.token,
                v1::CreateLifecycleModelRequest {
                    lifecycle_model: Some(v1::LifecycleModel {
                        display_name: "CRM process".into(),
                        template: "crm_process".into(),
                        active: true,
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
            ))
            .await?;
        }
        let t0 = Instant::now();
        let op = svc
            .evaluate_lifecycle(authed(
                &a.token,
                v1::EvaluateLifecycleRequest {
                    as_of_time: Some(as_of_ts),
                },
            ))
            .await?
            .into_inner();
        let (s, peak, done) = wait(&mut ops, &a.token, &op.name, t0, a.gateway_pid).await?;
        report("lifecycle evaluation", s, peak, &done);
    }
    if steps.contains(&"segment") {
        let seg = svc
            .create_segment(authed(
                &a.token,
                v1::CreateSegmentRequest {
                    segment: Some(v1::Segment {
                        display_name: format!("Champions {}", as_of.timestamp()),
                        rule: "rfm.r >= 4 AND rfm.f >= 4 AND region = \"DE\"".into(),
                        tag: String::new(),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
            ))
            .await?
            .into_inner();
        let t0 = Instant::now();
        let op = svc
            .refresh_segment(authed(
                &a.token,
                v1::RefreshSegmentRequest {
                    name: seg.name.clone(),
                },
            ))
            .await?
            .into_inner();
        let (s, peak, done) = wait(&mut ops, &a.token, &op.name, t0, a.gateway_pid).await?;
        report("segment refresh", s, peak, &done);
    }
    if steps.contains(&"duckdb") {
        duckdb(&a, &as_of.to_rfc3339()).await?;
    }
    Ok(())
}
