//! A1 + A2 on the engine: an RFM run is a long-running job that aggregates the tenant's
//! orders per contact in the database, scores them with the pure [`crate::rfm`] and
//! [`crate::value`] modules and stores one result per customer; reads go through crm-core's
//! permission-aware list, so a result is visible exactly to those who may read its contact.
//!
//! **Where the aggregation runs.** Orders are aggregated per (contact, currency) in SQL by
//! one statement (`GROUP BY contact_id, currency_code`) whose aggregate rows are streamed,
//! never the order rows themselves, read with the contact list from one snapshot (see
//! docs/benchmarks.md for the measurements behind this choice). Scoring needs the whole
//! population (quantiles), which is held as compact measures in memory, in contact id order.
//!
//! **Orders as RFM reads them.** An order belongs to its contact (account-only orders are
//! counted in [`RunStats::orders_without_contact`] and left out). Cancelled orders never
//! happened and are not read. A returned (refunded) order has a net amount of 0: it counts in
//! `orders` but is no purchase. Every other order with a positive total is a purchase.
//! Orders after `as_of` are future-dated: left out and counted.

use super::model::{
    ResultStatus, RfmResult, RfmRun, RfmSettings, RunState, RunStats, ValueContribution,
    ValueResult,
};
use crate::rfm::{self, RfmMeasures};
use crate::value::{self, ValueInput};
use chrono::{DateTime, Duration, Utc};
use crm_core::error::{Error, ErrorKind, Result};
use crm_core::jobs::rules::Interrupt;
use crm_core::jobs::{self, JobContext, JobError, JobOutcome, OnDuplicate, Progress};
use crm_core::resource::{Page, Record, Resource};
use crm_core::service::{Ctx, ListParams};
use futures::{StreamExt, TryStreamExt};
use sea_orm::sea_query::{Alias, Condition, Expr, ExprTrait, Func, Order, Query, SelectStatement};
use sea_orm::{ConnectionTrait, StreamTrait};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use uuid::Uuid;

/// The job kind of an RFM run.
pub const RFM_JOB: &str = "crm.analytics.rfm";
/// The dedupe key of the tenant's pending RFM job.
const DEDUPE_KEY: &str = "rfm";
/// Results written per transaction.
const WRITE_BATCH: usize = 5000;
/// Result batches in flight at once.
const WRITERS: usize = 2;
/// The bound on each statement of a run's reads (a tenant's whole order history).
const LONG_READ: std::time::Duration = std::time::Duration::from_secs(3600);
/// The default period: a year before `as_of`.
const DEFAULT_PERIOD_DAYS: i64 = 365;

/// What a caller asks to run.
#[derive(Debug, Clone, Default)]
pub struct StartRun {
    /// `rfmConfigs/{id}`, or the defaults.
    pub config: Option<Uuid>,
    /// Default: a year before `as_of`.
    pub period_from: Option<DateTime<Utc>>,
    /// Default: now.
    pub as_of: Option<DateTime<Utc>>,
}

/// A run started, or the one already running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Started {
    /// The run (`rfmRuns/{id}`).
    pub run: Uuid,
    /// Its job (`operations/{id}`).
    pub job: Uuid,
    /// A run was already running: it was returned instead of starting another.
    pub already_running: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct Payload {
    run: Uuid,
    creator: Option<Uuid>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Checkpoint {
    /// Result batches written (by this attempt and those before it).
    batches: usize,
    /// The last customer (in id order) of the batches written in order: a later attempt
    /// writes the results of the customers after it. Batches are not counted instead, as
    /// contacts made or deleted between attempts move the batches' bounds.
    #[serde(default)]
    through: Option<Uuid>,
}

pub(crate) fn ops_id(operation: &str) -> Option<Uuid> {
    operation
        .strip_prefix("operations/")
        .and_then(|s| Uuid::try_parse(s).ok())
}

/// Starts an RFM (+ value) run as a job, or returns the run already running: at most one
/// runs per tenant (a partial unique index on running runs; two starts at once give the
/// same run). Needs `read` on the configuration and `create` on `rfmRuns`.
pub async fn start_run(ctx: &Ctx, req: StartRun) -> Result<Started> {
    let now = ctx.clock.now();
    let as_of = req.as_of.unwrap_or(now);
    let period_from = req
        .period_from
        .unwrap_or(as_of - Duration::days(DEFAULT_PERIOD_DAYS));
    let (settings, revision) = match req.config {
        Some(id) => {
            let rec = ctx
                .get::<RfmSettings>(id)
                .await
                .map_err(|e| e.in_field("config"))?;
            let mut s = rec.data;
            s.value_model.version = u32::try_from(rec.meta.revision).unwrap_or(u32::MAX);
            (s, rec.meta.revision)
        }
        None => (
            RfmSettings {
                display_name: "defaults".into(),
                time_zone: "UTC".into(),
                ..Default::default()
            },
            0,
        ),
    };
    rfm::Period {
        from: period_from,
        as_of,
    }
    .validate()
    .map_err(Error::from)?;
    settings
        .check()
        .map_err(|e| Error::from(e.in_field("config")))?;
    // A concurrent start may win the unique index between our look and our insert: look again.
    let mut last = None;
    for _ in 0..3 {
        match try_start(ctx, &req, &settings, revision, period_from, as_of).await {
            Ok(s) => {
                jobs::wake();
                return Ok(s);
            }
            Err(e) if e.kind == ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| Error::internal("starting the run failed")))
}

async fn try_start(
    ctx: &Ctx,
    req: &StartRun,
    settings: &RfmSettings,
    revision: i64,
    period_from: DateTime<Utc>,
    as_of: DateTime<Utc>,
) -> Result<Started> {
    let now = ctx.clock.now();
    let tx = ctx.begin().await?;
    let running = tx
        .find::<RfmRun>(
            Condition::all().add(Expr::col("state").eq(RunState::Running.as_str())),
            1,
        )
        .await?;
    if let Some(r) = running.into_iter().next() {
        if let Some(job) = ops_id(&r.data.operation) {
            let live = jobs::get(tx.conn(), ctx.tenant(), job)
                .await?
                .is_some_and(|j| !j.state.is_done());
            if live {
                return Ok(Started {
                    run: r.meta.id,
                    job,
                    already_running: true,
                });
            }
        }
        // Its job ended without finishing it (a crash between the two): mark it failed.
        let patch = RfmRun {
            state: RunState::Failed,
            error: "the run's job ended before the run was finished".into(),
            finish_time: Some(now),
            ..Default::default()
        };
        tx.update(
            r.meta.id,
            patch,
            &["state".into(), "error".into(), "finish_time".into()],
            &r.meta.etag(),
        )
        .await?;
    }
    let run = crm_core::ids::new_id();
    let payload = serde_json::to_value(Payload {
        run,
        creator: Some(ctx.principal.user),
    })
    .map_err(|e| Error::internal(e.to_string()))?;
    let job = jobs::schedule(
        tx.conn(),
        ctx.clock.as_ref(),
        ctx.tenant(),
        RFM_JOB,
        &payload,
        now,
        &jobs::ScheduleOptions {
            dedupe_key: Some(DEDUPE_KEY.into()),
            on_duplicate: OnDuplicate::Keep,
            max_attempts: 3,
            collection: Some("rfmRuns".into()),
            creator: Some(ctx.principal.user),
        },
    )
    .await?;
    tx.create_with_id(
        run,
        RfmRun {
            config: req.config,
            config_revision: revision,
            settings: settings.clone(),
            period_from: Some(period_from),
            as_of: Some(as_of),
            state: RunState::Running,
            operation: format!("operations/{}", job.id),
            ..Default::default()
        },
    )
    .await?;
    tx.commit().await?;
    Ok(Started {
        run,
        job: job.id,
        already_running: false,
    })
}

/// The job handler of [`RFM_JOB`]. Idempotent: a run already finished is not run again, and
/// result batches written by an earlier attempt (same ids) are skipped.
pub async fn run_job(job: JobContext) -> Result<JobOutcome> {
    let p: Payload = job.payload_as()?;
    // The run works as the system on behalf of its creator: it reads every order and
    // contact of the tenant (what callers then see of the results is their scope's).
    let ctx = job.system_ctx(p.creator);
    let run = match ctx.get::<RfmRun>(p.run).await {
        Ok(r) => r,
        Err(e) if e.kind == ErrorKind::NotFound => return Ok(JobOutcome::done()),
        Err(e) => return Err(e),
    };
    if run.data.state != RunState::Running {
        return Ok(JobOutcome::Done(summary(&run.meta.id, &run.data.stats)));
    }
    match compute(&job, &ctx, &run).await {
        Ok(Some(stats)) => {
            finish(&ctx, &run, RunState::Succeeded, stats.clone(), "").await?;
            let mut out = summary(&run.meta.id, &stats);
            // A run adds a result per customer: what reads them next (segment refreshes,
            // lists) is planned with the table's new statistics, not those of before.
            if let Err(e) = ctx.db.analyze(&["rfm_results"]).await {
                out["analyze_error"] = json!(e.message);
            }
            // Segments reading RFM scores or value follow the new results. The run stands
            // when starting their refreshes fails (it is said in the result).
            if let Err(e) =
                super::segments::refresh_dependents(&ctx, super::segments::RFM_FIELDS).await
            {
                out["segment_refresh_error"] = json!(e.message);
            }
            Ok(JobOutcome::Done(out))
        }
        Ok(None) => {
            if job.interrupt() == Some(Interrupt::CancelRequested) {
                finish(
                    &ctx,
                    &run,
                    RunState::Failed,
                    RunStats::default(),
                    "cancelled",
                )
                .await?;
            }
            Ok(JobOutcome::Cancelled)
        }
        Err(e) => {
            let code = JobError::from_error(&e).code;
            if !jobs::rules::retryable(&code) || job.attempt >= job.max_attempts {
                // Best effort: a run that cannot finish is marked failed (a later start
                // also does it when it finds the job ended).
                let _ = finish(
                    &ctx,
                    &run,
                    RunState::Failed,
                    RunStats::default(),
                    &e.message,
                )
                .await;
            }
            Err(e)
        }
    }
}

fn summary(run: &Uuid, stats: &RunStats) -> serde_json::Value {
    json!({ "run": format!("rfmRuns/{run}"), "stats": stats })
}

async fn finish(
    ctx: &Ctx,
    run: &Record<RfmRun>,
    state: RunState,
    stats: RunStats,
    error: &str,
) -> Result<()> {
    let tx = ctx.begin().await?;
    let current = tx.get::<RfmRun>(run.meta.id).await?;
    let patch = RfmRun {
        state,
        stats,
        error: error.chars().take(1000).collect(),
        finish_time: Some(ctx.clock.now()),
        ..Default::default()
    };
    tx.update(
        run.meta.id,
        patch,
        &[
            "state".into(),
            "stats".into(),
            "error".into(),
            "finish_time".into(),
        ],
        &current.meta.etag(),
    )
    .await?;
    tx.commit().await
}

/// The ids among `ids` of results already stored (by an earlier attempt of the run).
async fn existing_results<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    ids: &[Uuid],
) -> Result<std::collections::HashSet<Uuid>> {
    let mut q = Query::select();
    q.column("id")
        .from(RfmResult::TABLE)
        .and_where(Expr::col("tenant_id").eq(tenant))
        .and_where(Expr::col("id").is_in(ids.iter().copied()));
    conn.query_all(&q)
        .await?
        .iter()
        .map(|r| r.try_get::<Uuid>("", "id").map_err(Error::from))
        .collect()
}

/// A result's id: the same for the same run and customer, so a result written again by a
/// later attempt is recognised (ALREADY_EXISTS) instead of doubled.
pub fn result_id(run: Uuid, customer: Uuid) -> Uuid {
    let bits = run.as_u128() ^ customer.as_u128().rotate_left(64);
    uuid::Builder::from_custom_bytes(bits.to_be_bytes()).into_uuid()
}

fn stopped(job: &JobContext) -> bool {
    job.is_cancelled()
}

/// Measures, scores and stores; `None` when told to stop.
async fn compute(job: &JobContext, ctx: &Ctx, run: &Record<RfmRun>) -> Result<Option<RunStats>> {
    let (Some(from), Some(as_of)) = (run.data.period_from, run.data.as_of) else {
        return Err(Error::invalid("as_of", "the run has no period"));
    };
    let settings = &run.data.settings;
    let conn = &ctx.db.conn;
    let tenant = ctx.tenant();
    let total = count_contacts(conn, tenant).await?;
    let mut progress = Progress {
        done: 0,
        total,
        counts: BTreeMap::new(),
    };
    job.progress(&progress).await?;

    // 1. Measures: every contact, and the period's orders aggregated per contact and
    //    currency in the database, both read from one snapshot and streamed.
    let read = ctx.db.begin_long_read(LONG_READ).await?;
    let ids = all_contacts(&read, tenant, job).await?;
    let Some(ids) = ids else {
        return Ok(None);
    };
    let mut measures: Vec<RfmMeasures> = ids.iter().map(|id| RfmMeasures::empty(*id)).collect();
    let mut stats = RunStats::default();
    let backend = ConnectionTrait::get_database_backend(&read);
    {
        let mut rows = std::pin::pin!(
            read.stream_raw(backend.build(&aggregate_query(tenant, None, from, as_of)))
                .await?
        );
        let mut n = 0u64;
        while let Some(row) = rows.try_next().await? {
            let row = agg_row(&row)?;
            n += 1;
            if n.is_multiple_of(100_000) && stopped(job) {
                return Ok(None);
            }
            // Orders of a contact deleted since are not measured.
            let Ok(k) = ids.binary_search(&row.customer) else {
                continue;
            };
            let m = &mut measures[k];
            m.orders += u64::try_from(row.orders).unwrap_or(0);
            m.frequency += u64::try_from(row.purchases).unwrap_or(0);
            stats.orders_in_period += row.orders;
            crate::money::add_amount(&mut m.monetary, &row.currency, i128::from(row.net));
            if let Some(t) = row.last_purchase
                && m.last_purchase.is_none_or(|l| l < t)
            {
                m.last_purchase = Some(t);
            }
        }
    }
    for m in &mut measures {
        m.recency_days = m.last_purchase.map(|t| (as_of - t).num_days());
    }
    progress.counts.insert(
        "measured".into(),
        i64::try_from(measures.len()).unwrap_or(0),
    );
    job.progress(&progress).await?;
    stats.customers = i64::try_from(measures.len()).unwrap_or(i64::MAX);
    let (future, without_contact) = order_counts(&read, tenant, from, as_of).await?;
    drop(read);
    stats.future_dated_orders = future;
    stats.orders_without_contact = without_contact;

    // 2. Scores (pure), in contact id order.
    let scored = rfm::score(measures, &settings.rfm).map_err(Error::from)?;
    let inputs: Vec<ValueInput> = scored
        .iter()
        .map(|c| ValueInput {
            customer: c.customer,
            r: c.scores.as_ref().map(|s| s.r),
            f: c.scores.as_ref().map(|s| s.f),
            m: c.scores.as_ref().map(|s| s.m),
            ..Default::default()
        })
        .collect();
    let values = value::score_population(&inputs, &settings.value_model, settings.rfm.bins)
        .map_err(Error::from)?;
    drop(inputs);
    if values.len() != scored.len()
        || values
            .iter()
            .zip(&scored)
            .any(|(v, c)| v.customer != c.customer)
    {
        return Err(Error::internal(
            "value scores do not line up with the RFM scores",
        ));
    }
    for c in &scored {
        match c.status {
            rfm::RfmStatus::Scored => stats.scored += 1,
            rfm::RfmStatus::NoOrders => stats.no_orders += 1,
            rfm::RfmStatus::NoPurchases => stats.no_purchases += 1,
        }
    }

    // 3. Results, a batch per transaction through the engine (checked; derived records, so
    //    audited and evented as the run), each batch made just before it is written, and
    //    [`WRITERS`] batches in flight, so that one batch is made and checked while the
    //    database stores another. Batches complete in order; the checkpoint counts them.
    let checkpoint: Checkpoint = job.checkpoint_as()?.unwrap_or_default();
    let run_id = run.meta.id;
    let through = checkpoint.through;
    let done_before = scored
        .iter()
        .filter(|c| through.is_some_and(|t| c.customer <= t))
        .count();
    let mut pairs = scored
        .into_iter()
        .zip(values)
        .filter(move |(c, _)| through.is_none_or(|t| c.customer > t));
    let made = std::iter::from_fn(move || {
        let batch: Vec<(Uuid, RfmResult)> = pairs
            .by_ref()
            .take(WRITE_BATCH)
            .map(|(c, v)| (result_id(run_id, c.customer), result_of(run_id, c, &v)))
            .collect();
        (!batch.is_empty()).then_some(batch)
    });
    let retry = job.attempt > 1;
    let writes = futures::stream::iter(made)
        .map(|batch: Vec<(Uuid, RfmResult)>| async move {
            let n = i64::try_from(batch.len()).unwrap_or(0);
            let last = batch.last().and_then(|(_, r)| r.customer);
            // A later attempt may find some written by an earlier one (which may have cut
            // its batches elsewhere, if contacts came or went in between): the others now.
            let batch = if retry {
                let ids: Vec<Uuid> = batch.iter().map(|(id, _)| *id).collect();
                let have = existing_results(&ctx.db.conn, ctx.tenant(), &ids).await?;
                batch
                    .into_iter()
                    .filter(|(id, _)| !have.contains(id))
                    .collect()
            } else {
                batch
            };
            if !batch.is_empty() {
                ctx.create_many(batch).await?;
            }
            Ok::<_, Error>((n, last))
        })
        .buffered(WRITERS);
    let mut writes = std::pin::pin!(writes);
    let (mut batches, mut written) = (
        checkpoint.batches,
        i64::try_from(done_before).unwrap_or(i64::MAX),
    );
    while let Some((n, last)) = writes.try_next().await? {
        batches += 1;
        written += n;
        progress.done = written;
        let cp = serde_json::to_value(Checkpoint {
            batches,
            through: last.or(checkpoint.through),
        })
        .map_err(|e| Error::internal(e.to_string()))?;
        job.save(&cp, &progress).await?;
        if stopped(job) {
            return Ok(None);
        }
    }
    Ok(Some(stats))
}

/// A customer's stored result: its measures, scores and value, with the contributions of
/// the measures the value model weighs (a measure of weight 0 adds nothing to the score and
/// is not repeated on every result; the run's settings name every weight).
fn result_of(run: Uuid, c: rfm::CustomerRfm, v: &value::ValueScore) -> RfmResult {
    let scores = c.scores.as_ref();
    RfmResult {
        run: Some(run),
        customer: Some(c.customer),
        status: ResultStatus::from(c.status),
        recency_days: c.measures.recency_days.unwrap_or(0),
        last_purchase: c.measures.last_purchase,
        frequency: i64::try_from(c.measures.frequency).unwrap_or(i64::MAX),
        orders: i64::try_from(c.measures.orders).unwrap_or(i64::MAX),
        monetary: c
            .measures
            .monetary
            .iter()
            .map(|(k, v)| (k.clone(), saturate(*v)))
            .collect(),
        r: scores.map_or(0, |s| i64::from(s.r)),
        f: scores.map_or(0, |s| i64::from(s.f)),
        m: scores.map_or(0, |s| i64::from(s.m)),
        m_by_currency: scores
            .map(|s| {
                s.m_by_currency
                    .iter()
                    .map(|(k, v)| (k.clone(), i64::from(*v)))
                    .collect()
            })
            .unwrap_or_default(),
        monetary_converted: c.monetary_converted.map(saturate),
        segment: scores.map(|s| s.segment.clone()).unwrap_or_default(),
        value: ValueResult {
            score: v.score,
            model_version: i64::from(v.model_version),
            contributions: v
                .contributions
                .iter()
                .filter(|c| c.weight != 0.0)
                .map(|c| ValueContribution {
                    measure: c.measure.name().to_owned(),
                    weight: c.weight,
                    normalised: c.normalised,
                    contribution: c.contribution,
                    missing: c.missing,
                })
                .collect(),
        },
    }
}

fn saturate(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

async fn count_contacts<C: ConnectionTrait>(conn: &C, tenant: &str) -> Result<i64> {
    let mut q = Query::select();
    q.expr_as(Func::count(Expr::col("id")), Alias::new("n"))
        .from("contacts")
        .and_where(Expr::col("tenant_id").eq(tenant))
        .and_where(Expr::col("delete_time").is_null());
    let row = conn
        .query_one(&q)
        .await?
        .ok_or_else(|| Error::internal("count returned no row"))?;
    Ok(row.try_get::<i64>("", "n")?)
}

pub(crate) async fn contact_page<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    after: Option<Uuid>,
    limit: u64,
) -> Result<Vec<Uuid>> {
    let mut q = Query::select();
    q.column("id")
        .from("contacts")
        .and_where(Expr::col("tenant_id").eq(tenant))
        .and_where(Expr::col("delete_time").is_null())
        .order_by("id", Order::Asc)
        .limit(limit);
    if let Some(a) = after {
        q.and_where(Expr::col("id").gt(a));
    }
    conn.query_all(&q)
        .await?
        .iter()
        .map(|r| r.try_get::<Uuid>("", "id").map_err(Error::from))
        .collect()
}

/// One (contact, currency) aggregate of the period's orders: the one reading of order facts
/// that RFM runs and lifecycle evaluations share.
#[derive(Debug)]
pub(crate) struct AggRow {
    pub(crate) customer: Uuid,
    pub(crate) currency: String,
    pub(crate) orders: i64,
    pub(crate) purchases: i64,
    pub(crate) net: i64,
    pub(crate) first_purchase: Option<DateTime<Utc>>,
    pub(crate) last_purchase: Option<DateTime<Utc>>,
}

/// Orders that count: live, not cancelled.
pub(crate) fn live_orders(tenant: &str) -> Condition {
    Condition::all()
        .add(Expr::col("tenant_id").eq(tenant))
        .add(Expr::col("delete_time").is_null())
        .add(Expr::col("status").ne("CANCELLED"))
}

/// An order's net amount: its total, 0 once returned.
fn net_amount() -> Expr {
    Expr::case(Expr::col("status").eq("RETURNED"), 0i64)
        .finally(Expr::col("total"))
        .into()
}

pub(crate) fn is_purchase() -> Condition {
    Condition::all()
        .add(Expr::col("status").ne("RETURNED"))
        .add(Expr::col("total").gt(0i64))
}

/// `CAST(SUM(e) AS BIGINT)`: PostgreSQL sums BIGINT into NUMERIC.
fn sum_bigint(e: Expr) -> Expr {
    Func::cast_as(Func::sum(e), Alias::new("BIGINT")).into()
}

pub(crate) async fn aggregate_page<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    ids: &[Uuid],
    from: DateTime<Utc>,
    as_of: DateTime<Utc>,
) -> Result<Vec<AggRow>> {
    conn.query_all(&aggregate_query(tenant, Some(ids), from, as_of))
        .await?
        .iter()
        .map(agg_row)
        .collect()
}

/// The (contact, currency) aggregates of the period's orders, of the contacts `ids` or of
/// all.
fn aggregate_query(
    tenant: &str,
    ids: Option<&[Uuid]>,
    from: DateTime<Utc>,
    as_of: DateTime<Utc>,
) -> SelectStatement {
    let mut q = Query::select();
    q.column("contact_id")
        .column("currency_code")
        .expr_as(Func::count(Expr::col("id")), Alias::new("n_orders"))
        .expr_as(
            sum_bigint(Expr::case(is_purchase(), 1i64).finally(0i64).into()),
            Alias::new("n_purchases"),
        )
        .expr_as(sum_bigint(net_amount()), Alias::new("net"))
        .expr_as(
            Func::max(Expr::case(is_purchase(), Expr::col("order_time")).finally(Expr::null())),
            Alias::new("last_purchase"),
        )
        .expr_as(
            Func::min(Expr::case(is_purchase(), Expr::col("order_time")).finally(Expr::null())),
            Alias::new("first_purchase"),
        )
        .from("orders")
        .cond_where(live_orders(tenant))
        .and_where(Expr::col("order_time").gte(from))
        .and_where(Expr::col("order_time").lte(as_of))
        .group_by_col("contact_id")
        .group_by_col("currency_code");
    match ids {
        Some(ids) => q.cond_where(super::among("contact_id", ids)),
        None => q.and_where(Expr::col("contact_id").is_not_null()),
    };
    q
}

fn agg_row(r: &sea_orm::QueryResult) -> Result<AggRow> {
    Ok(AggRow {
        customer: r.try_get::<Uuid>("", "contact_id")?,
        currency: r.try_get::<String>("", "currency_code")?,
        orders: r.try_get::<i64>("", "n_orders")?,
        purchases: r.try_get::<Option<i64>>("", "n_purchases")?.unwrap_or(0),
        net: r.try_get::<Option<i64>>("", "net")?.unwrap_or(0),
        first_purchase: time_of(r, "first_purchase")?,
        last_purchase: time_of(r, "last_purchase")?,
    })
}

/// Every live contact of the tenant, in id order, streamed from `conn`; `None` when the job
/// was told to stop meanwhile.
async fn all_contacts<C: StreamTrait + ConnectionTrait>(
    conn: &C,
    tenant: &str,
    job: &JobContext,
) -> Result<Option<Vec<Uuid>>> {
    let mut q = Query::select();
    q.column("id")
        .from("contacts")
        .and_where(Expr::col("tenant_id").eq(tenant))
        .and_where(Expr::col("delete_time").is_null());
    let backend = ConnectionTrait::get_database_backend(conn);
    let mut rows = std::pin::pin!(conn.stream_raw(backend.build(&q)).await?);
    let mut ids = Vec::new();
    while let Some(r) = rows.try_next().await? {
        ids.push(r.try_get::<Uuid>("", "id")?);
        if ids.len().is_multiple_of(100_000) && stopped(job) {
            return Ok(None);
        }
    }
    ids.sort_unstable();
    Ok(Some(ids))
}

/// A time computed by an aggregate: TIMESTAMPTZ on PostgreSQL, RFC 3339 text on SQLite
/// (where an expression's value carries no declared type).
pub(crate) fn time_of(r: &sea_orm::QueryResult, column: &str) -> Result<Option<DateTime<Utc>>> {
    if let Ok(t) = r.try_get::<Option<DateTime<Utc>>>("", column) {
        return Ok(t);
    }
    match r.try_get::<Option<String>>("", column)? {
        None => Ok(None),
        Some(s) => DateTime::parse_from_rfc3339(&s)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|e| Error::internal(format!("a stored time does not parse: {e}"))),
    }
}

/// Orders after `as_of`, and orders of the period without a contact.
async fn order_counts<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    from: DateTime<Utc>,
    as_of: DateTime<Utc>,
) -> Result<(i64, i64)> {
    let mut q = Query::select();
    q.expr_as(
        sum_bigint(
            Expr::case(Expr::col("order_time").gt(as_of), 1i64)
                .finally(0i64)
                .into(),
        ),
        Alias::new("future"),
    )
    .expr_as(
        sum_bigint(
            Expr::case(
                Condition::all()
                    .add(Expr::col("contact_id").is_null())
                    .add(Expr::col("order_time").gte(from))
                    .add(Expr::col("order_time").lte(as_of)),
                1i64,
            )
            .finally(0i64)
            .into(),
        ),
        Alias::new("no_contact"),
    )
    .from("orders")
    .cond_where(live_orders(tenant));
    let row = conn
        .query_one(&q)
        .await?
        .ok_or_else(|| Error::internal("count returned no row"))?;
    Ok((
        row.try_get::<Option<i64>>("", "future")?.unwrap_or(0),
        row.try_get::<Option<i64>>("", "no_contact")?.unwrap_or(0),
    ))
}

/// A run whose results may be read: the given one (which must have succeeded) or the
/// tenant's latest successful one. Needs `read` on `rfmRuns`.
pub async fn readable_run(ctx: &Ctx, run: Option<Uuid>) -> Result<Record<RfmRun>> {
    match run {
        Some(id) => {
            let r = ctx.get::<RfmRun>(id).await.map_err(|e| e.in_field("run"))?;
            if r.data.state != RunState::Succeeded {
                return Err(Error::failed_precondition(
                    "RUN_NOT_SUCCEEDED",
                    format!(
                        "rfmRuns/{id} is {}: only a succeeded run's results can be read",
                        r.data.state.as_str()
                    ),
                )
                .with("run", format!("rfmRuns/{id}")));
            }
            Ok(r)
        }
        None => {
            let page = ctx
                .list::<RfmRun>(&ListParams {
                    page_size: 1,
                    filter: "state = SUCCEEDED".into(),
                    order_by: "create_time desc".into(),
                    ..Default::default()
                })
                .await?;
            page.items.into_iter().next().ok_or_else(|| {
                Error::not_found("a succeeded rfmRuns record (no RFM run has succeeded yet)")
            })
        }
    }
}

/// A segment name as a filter literal: refused if it could not be one.
fn segment_literal(segment: &str) -> Result<String> {
    let s = segment.trim();
    if s.chars().count() > rfm::MAX_SEGMENT_NAME_CHARS
        || s.chars().any(|c| c == '"' || c == '\\' || c.is_control())
    {
        return Err(Error::invalid(
            "segment",
            "must be a segment name (no quotes, backslashes or control characters)",
        ));
    }
    Ok(format!("\"{s}\""))
}

/// The results of a run (the latest succeeded one by default), optionally of one segment,
/// paged by the engine's keyset tokens, restricted to the contacts the caller may read.
pub async fn list_results(
    ctx: &Ctx,
    run: Option<Uuid>,
    segment: &str,
    page_size: i32,
    page_token: String,
) -> Result<(Record<RfmRun>, Page<RfmResult>)> {
    let run = readable_run(ctx, run).await?;
    let mut filter = format!("run = \"rfmRuns/{}\"", run.meta.id);
    if !segment.trim().is_empty() {
        filter.push_str(&format!(" AND segment = {}", segment_literal(segment)?));
    }
    let page = ctx
        .list::<RfmResult>(&ListParams {
            page_size,
            page_token,
            filter,
            order_by: "create_time".into(),
            parent: None,
        })
        .await?;
    Ok((run, page))
}

/// One contact's result of a run (the latest succeeded one by default).
pub async fn customer_result(
    ctx: &Ctx,
    run: Option<Uuid>,
    customer: Uuid,
) -> Result<(Record<RfmRun>, Record<RfmResult>)> {
    let run = readable_run(ctx, run).await?;
    // The contact itself: NOT_FOUND for another tenant's, OUT_OF_SCOPE outside the caller's.
    ctx.get::<crm_core::model::Contact>(customer)
        .await
        .map_err(|e| e.in_field("customer"))?;
    let page = ctx
        .list::<RfmResult>(&ListParams {
            page_size: 1,
            filter: format!(
                "run = \"rfmRuns/{}\" AND customer = \"contacts/{customer}\"",
                run.meta.id
            ),
            ..Default::default()
        })
        .await?;
    let result = page.items.into_iter().next().ok_or_else(|| {
        Error::not_found(format!(
            "the result of contacts/{customer} in rfmRuns/{}",
            run.meta.id
        ))
    })?;
    Ok((run, result))
}
