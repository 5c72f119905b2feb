//! A3 on the engine: the tenant's active [`LifecycleModel`] evaluated for every customer by
//! a job (a long-running operation), the current stage kept per customer
//! ([`LifecycleState`]) and every stage change stored ([`LifecycleTransition`]); reads go
//! through crm-core's permission-aware list, under the contacts' grants.
//!
//! **Facts.** Order facts come from the same aggregation as RFM runs
//! ([`super::rfm_runs`]: live, not cancelled orders; a returned order is no purchase), over
//! the customer's whole history up to the as-of instant: `order_count` (purchases),
//! `days_since_first_order`, `days_since_last_order`. `rfm_segment` is the customer's
//! segment in the latest succeeded RFM run. `open_cases` counts the contact's cases that
//! are neither RESOLVED nor CLOSED when a crate serving the `cases` collection is linked
//! (found through crm-core's registry, never a dependency on that crate; 0 without one).
//! `interactions`, `campaign_responses`, `lead_status` and counters are not read yet: they
//! are 0 (or no value), so rules on them do not fire unless they test for 0.
//!
//! **Evaluation.** A customer without a stage in the active model enters its initial stage
//! (a transition with an empty `from_stage`); then [`crate::lifecycle::StageModel::settle`]
//! applies rules until none fires. Customers are evaluated a page at a time, each page in
//! one transaction (stages, transitions and the memberships of the segments reading
//! `lifecycle.stage`, for the customers whose stage changed, commit together); a page is
//! idempotent (the stored stage is read again), so a job claimed again after a crash resumes
//! from its checkpoint without doubling transitions.

use super::model::{LifecycleModel, LifecycleState, LifecycleTransition, RfmResult, RfmRun};
use super::rfm_runs::{aggregate_page, contact_page};
use crate::lifecycle::{LifecycleFacts, StageModel};
use chrono::{DateTime, Utc};
use crm_core::access::Action;
use crm_core::error::{Error, Result};
use crm_core::jobs::{self, JobContext, JobOutcome, OnDuplicate, Progress};
use crm_core::model::Contact;
use crm_core::resource::{Collection, Page, Record, Resource};
use crm_core::service::{Ctx, ListParams};
use sea_orm::ConnectionTrait;
use sea_orm::sea_query::{Alias, Condition, Expr, ExprTrait, Func, Query};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use uuid::Uuid;

/// The job kind of a lifecycle evaluation.
pub const LIFECYCLE_JOB: &str = "crm.analytics.lifecycle";
/// Customers evaluated per transaction.
const PAGE: u64 = 2000;

#[derive(Debug, Serialize, Deserialize)]
struct Payload {
    creator: Option<Uuid>,
    as_of: DateTime<Utc>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Checkpoint {
    after: Option<Uuid>,
    evaluated: i64,
    changed: i64,
    transitions: i64,
}

/// Starts an evaluation of every customer against the tenant's active model at `as_of`
/// (default now) and returns its job (`operations/{id}`). A start while one is still queued
/// answers the queued one. Needs `update` on `lifecycleModels`; FAILED_PRECONDITION
/// `NO_ACTIVE_LIFECYCLE_MODEL` without an active model.
pub async fn start_evaluation(ctx: &Ctx, as_of: Option<DateTime<Utc>>) -> Result<Uuid> {
    ctx.scopes_of(&Collection::of::<LifecycleModel>(), Action::Update)?;
    let now = ctx.clock.now();
    let tx = ctx.begin().await?;
    if crm_core::active::active::<LifecycleModel>(&tx)
        .await?
        .is_none()
    {
        return Err(Error::failed_precondition(
            "NO_ACTIVE_LIFECYCLE_MODEL",
            "the tenant has no active lifecycle model: create one with active = true",
        ));
    }
    let payload = serde_json::to_value(Payload {
        creator: Some(ctx.principal.user),
        as_of: as_of.unwrap_or(now),
    })
    .map_err(|e| Error::internal(e.to_string()))?;
    let job = jobs::schedule(
        tx.conn(),
        ctx.clock.as_ref(),
        ctx.tenant(),
        LIFECYCLE_JOB,
        &payload,
        now,
        &jobs::ScheduleOptions {
            dedupe_key: Some("lifecycle".into()),
            on_duplicate: OnDuplicate::Keep,
            max_attempts: 3,
            collection: Some(LifecycleModel::COLLECTION.into()),
            creator: Some(ctx.principal.user),
        },
    )
    .await?;
    tx.commit().await?;
    jobs::wake();
    Ok(job.id)
}

/// The tenant's active model, read as the caller (the system in a job).
async fn active_model(ctx: &Ctx) -> Result<Option<Record<LifecycleModel>>> {
    Ok(ctx
        .list::<LifecycleModel>(&ListParams {
            page_size: 1,
            filter: "active = true".into(),
            ..Default::default()
        })
        .await?
        .items
        .into_iter()
        .next())
}

/// The tenant's latest succeeded RFM run, if any.
pub(crate) async fn latest_rfm_run(ctx: &Ctx) -> Result<Option<Uuid>> {
    Ok(ctx
        .list::<RfmRun>(&ListParams {
            page_size: 1,
            filter: "state = SUCCEEDED".into(),
            order_by: "create_time desc".into(),
            ..Default::default()
        })
        .await?
        .items
        .into_iter()
        .next()
        .map(|r| r.meta.id))
}

/// The job handler of [`LIFECYCLE_JOB`].
pub async fn run_evaluation(job: JobContext) -> Result<JobOutcome> {
    let p: Payload = job.payload_as()?;
    // As the system on behalf of the creator: every customer and order is read.
    let ctx = job.system_ctx(p.creator);
    let Some(model) = active_model(&ctx).await? else {
        return Ok(JobOutcome::Done(json!({ "evaluated": 0, "model": "" })));
    };
    let stage_model = model.data.stage_model();
    let rfm_run = latest_rfm_run(&ctx).await?;
    // Segments reading stages follow each change in the transaction that makes it.
    let tx = ctx.begin().await?;
    let segments = super::segments::dependents(&tx, &["lifecycle.stage"]).await?;
    drop(tx);
    let conn = &ctx.db.conn;
    let tenant = ctx.tenant().to_owned();
    let mut cp: Checkpoint = job.checkpoint_as()?.unwrap_or_default();
    let mut progress = Progress {
        done: cp.evaluated,
        total: 0,
        counts: BTreeMap::new(),
    };
    // While a page's stages are written, the next page's contacts and facts are read (the
    // reads run outside the write transaction); the checkpoint is the last contact of the
    // last page written.
    let evaluation = Evaluation {
        model: &model,
        stage_model: &stage_model,
        rfm_run,
        segments: &segments,
        as_of: p.as_of,
    };
    let mut ids = contact_page(conn, &tenant, cp.after, PAGE).await?;
    let mut facts = page_facts(&ctx, rfm_run, &ids, p.as_of).await?;
    while let Some(last) = ids.last().copied() {
        let (written, next) =
            futures::join!(evaluate_page(&ctx, &evaluation, &ids, &facts), async {
                let next = contact_page(conn, &tenant, Some(last), PAGE).await?;
                let facts = page_facts(&ctx, rfm_run, &next, p.as_of).await?;
                Ok::<_, Error>((next, facts))
            });
        let (changed, transitions) = written?;
        cp.after = Some(last);
        cp.evaluated += i64::try_from(ids.len()).unwrap_or(0);
        cp.changed += changed;
        cp.transitions += transitions;
        progress.done = cp.evaluated;
        progress.counts.insert("changed".into(), cp.changed);
        progress.counts.insert("transitions".into(), cp.transitions);
        let saved = serde_json::to_value(&cp).map_err(|e| Error::internal(e.to_string()))?;
        job.save(&saved, &progress).await?;
        if job.is_cancelled() {
            return Ok(JobOutcome::Cancelled);
        }
        (ids, facts) = next?;
    }
    let mut out = json!({
        "model": format!("lifecycleModels/{}", model.meta.id),
        "evaluated": cp.evaluated,
        "changed": cp.changed,
        "transitions": cp.transitions,
    });
    // Planner statistics of the stages and transitions written (see `Db::analyze`); the
    // evaluation stands if refreshing them fails.
    if cp.changed > 0
        && let Err(e) = ctx
            .db
            .analyze(&["lifecycle_states", "lifecycle_transitions"])
            .await
    {
        out["analyze_error"] = json!(e.message);
    }
    Ok(JobOutcome::Done(out))
}

/// The facts of one page of customers: order facts over their whole history to `as_of`
/// and their segment in the latest RFM run.
async fn page_facts(
    ctx: &Ctx,
    rfm_run: Option<Uuid>,
    ids: &[Uuid],
    as_of: DateTime<Utc>,
) -> Result<HashMap<Uuid, LifecycleFacts>> {
    let mut facts: HashMap<Uuid, LifecycleFacts> = ids
        .iter()
        .map(|id| {
            (
                *id,
                LifecycleFacts {
                    now: as_of,
                    ..Default::default()
                },
            )
        })
        .collect();
    let rows = aggregate_page(
        &ctx.db.conn,
        ctx.tenant(),
        ids,
        DateTime::<Utc>::UNIX_EPOCH,
        as_of,
    )
    .await?;
    for row in rows {
        let Some(f) = facts.get_mut(&row.customer) else {
            continue;
        };
        f.order_count += u64::try_from(row.purchases).unwrap_or(0);
        if let Some(t) = row.first_purchase
            && f.first_order_time.is_none_or(|x| t < x)
        {
            f.first_order_time = Some(t);
        }
        if let Some(t) = row.last_purchase
            && f.last_order_time.is_none_or(|x| t > x)
        {
            f.last_order_time = Some(t);
        }
    }
    for (c, n) in open_cases(ctx, ids).await? {
        if let Some(f) = facts.get_mut(&c) {
            f.open_cases = n;
        }
    }
    if let Some(run) = rfm_run {
        let tx = ctx.begin().await?;
        let results = tx
            .find::<RfmResult>(
                Condition::all()
                    .add(Expr::col("run_id").eq(run))
                    .add(super::among("customer_id", ids)),
                PAGE,
            )
            .await?;
        drop(tx);
        for r in results {
            if let Some(f) = r.data.customer.and_then(|c| facts.get_mut(&c))
                && !r.data.segment.is_empty()
            {
                f.rfm_segment = Some(r.data.segment);
            }
        }
    }
    Ok(facts)
}

/// Case statuses that are not open.
const CLOSED_CASES: [&str; 2] = ["RESOLVED", "CLOSED"];

/// Open service cases per contact of `ids`, when a crate serving cases is linked: the
/// registered collection `cases` with a `contact` reference and a `status` (open: any status
/// but RESOLVED and CLOSED). Without it, none.
async fn open_cases(ctx: &Ctx, ids: &[Uuid]) -> Result<HashMap<Uuid, u64>> {
    let Some(cases) = crm_core::registry::registry().collection("cases") else {
        return Ok(HashMap::new());
    };
    let (Some(contact), Some(status)) = (cases.field("contact"), cases.field("status")) else {
        return Ok(HashMap::new());
    };
    let mut q = Query::select();
    q.expr_as(Expr::col(contact.column), Alias::new("customer"))
        .expr_as(Func::count(Expr::col("id")), Alias::new("n"))
        .from(Alias::new(cases.table))
        .and_where(Expr::col("tenant_id").eq(ctx.tenant()))
        .and_where(Expr::col("delete_time").is_null())
        .and_where(Expr::col(contact.column).is_in(ids.iter().copied()))
        .and_where(Expr::col(status.column).is_not_in(CLOSED_CASES))
        .group_by_col(Alias::new(contact.column));
    let mut out = HashMap::new();
    for r in ctx.db.conn.query_all(&q).await? {
        if let Some(c) = r.try_get::<Option<Uuid>>("", "customer")? {
            out.insert(c, u64::try_from(r.try_get::<i64>("", "n")?).unwrap_or(0));
        }
    }
    Ok(out)
}

/// What an evaluation applies to every page.
struct Evaluation<'a> {
    model: &'a Record<LifecycleModel>,
    stage_model: &'a StageModel,
    rfm_run: Option<Uuid>,
    segments: &'a [super::segments::Compiled],
    as_of: DateTime<Utc>,
}

/// Evaluates one page, from the facts read for it, in one transaction (stages, transitions and the memberships of the
/// segments reading stages); returns (customers whose stage changed, transitions written).
async fn evaluate_page(
    ctx: &Ctx,
    e: &Evaluation<'_>,
    ids: &[Uuid],
    facts: &HashMap<Uuid, LifecycleFacts>,
) -> Result<(i64, i64)> {
    let Evaluation {
        model,
        stage_model,
        rfm_run,
        segments,
        as_of,
    } = *e;
    let tx = ctx.begin().await?;
    // Evaluations take turns page by page: a page reads the stages the other wrote.
    tx.lock_counter("lifecycle-evaluation").await?;
    let states: HashMap<Uuid, Record<LifecycleState>> = tx
        .find::<LifecycleState>(Condition::all().add(super::among("customer_id", ids)), PAGE)
        .await?
        .into_iter()
        .filter_map(|s| s.data.customer.map(|c| (c, s)))
        .collect();
    let (mut changed, mut written) = (0i64, 0i64);
    let mut moved = Vec::new();
    // New transitions and first stages are written together at the end of the page.
    let mut transitions = Vec::new();
    let mut entered = Vec::new();
    for id in ids {
        let Some(f) = facts.get(id) else {
            continue;
        };
        let state = states.get(id);
        let current = state
            .filter(|s| {
                s.data.model == Some(model.meta.id)
                    && stage_model.stages.iter().any(|st| st.key == s.data.stage)
            })
            .map(|s| s.data.stage.clone());
        let mut moves = Vec::new();
        if current.is_none() {
            moves.push(LifecycleTransition {
                customer: Some(*id),
                model: Some(model.meta.id),
                from_stage: String::new(),
                to_stage: stage_model.initial.clone(),
                reason: "entered the lifecycle model".into(),
                rule: -1,
                transition_time: Some(as_of),
                step: 0,
            });
        }
        let start = current.unwrap_or_else(|| stage_model.initial.clone());
        for t in stage_model.settle(Some(&start), f).map_err(Error::from)? {
            moves.push(LifecycleTransition {
                customer: Some(*id),
                model: Some(model.meta.id),
                from_stage: t.from,
                to_stage: t.to,
                reason: t.reason,
                rule: i64::try_from(t.rule).unwrap_or(i64::MAX),
                transition_time: Some(t.at),
                step: 0,
            });
        }
        let Some(last) = moves.last().map(|m| m.to_stage.clone()) else {
            continue;
        };
        changed += 1;
        moved.push(*id);
        for (i, mut m) in moves.into_iter().enumerate() {
            m.step = i64::try_from(i).unwrap_or(i64::MAX);
            transitions.push((crm_core::ids::new_id(), m));
            written += 1;
        }
        let data = LifecycleState {
            customer: Some(*id),
            model: Some(model.meta.id),
            stage: last,
            enter_time: Some(as_of),
            evaluate_time: Some(as_of),
        };
        match state {
            Some(s) => {
                tx.update(
                    s.meta.id,
                    data,
                    &[
                        "model".into(),
                        "stage".into(),
                        "enter_time".into(),
                        "evaluate_time".into(),
                    ],
                    &s.meta.etag(),
                )
                .await?;
            }
            None => entered.push((crm_core::ids::new_id(), data)),
        }
    }
    tx.create_many(transitions).await?;
    tx.create_many(entered).await?;
    super::segments::apply_changes(&tx, segments, rfm_run, &moved, ctx.clock.now()).await?;
    tx.commit().await?;
    Ok((changed, written))
}

/// A contact's current lifecycle stage. NOT_FOUND for another tenant's contact (named
/// `customer`) or a customer never evaluated; the contacts' read grants apply.
pub async fn customer_stage(ctx: &Ctx, customer: Uuid) -> Result<Record<LifecycleState>> {
    ctx.get::<Contact>(customer)
        .await
        .map_err(|e| e.in_field("customer"))?;
    ctx.list::<LifecycleState>(&ListParams {
        page_size: 1,
        filter: format!("customer = \"contacts/{customer}\""),
        ..Default::default()
    })
    .await?
    .items
    .into_iter()
    .next()
    .ok_or_else(|| {
        Error::not_found(format!(
            "the lifecycle stage of contacts/{customer} (not evaluated yet)"
        ))
        .with("customer", format!("contacts/{customer}"))
    })
}

/// A contact's stage changes, oldest first, in keyset pages; the contacts' read grants apply.
pub async fn customer_transitions(
    ctx: &Ctx,
    customer: Uuid,
    page_size: i32,
    page_token: String,
) -> Result<Page<LifecycleTransition>> {
    ctx.get::<Contact>(customer)
        .await
        .map_err(|e| e.in_field("customer"))?;
    ctx.list::<LifecycleTransition>(&ListParams {
        page_size,
        page_token,
        filter: format!("customer = \"contacts/{customer}\""),
        order_by: "transition_time, create_time, step".into(),
        parent: None,
    })
    .await
}
