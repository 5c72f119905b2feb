//! A4 on the engine: a [`Segment`]'s members computed by a refresh job (a long-running
//! operation) that evaluates the rule ([`crate::segment`]) over every contact with its
//! custom fields, its latest RFM result and value, and its lifecycle stage; members are
//! kept as [`SegmentMember`] records (under the contacts' grants) and the segment's tag is
//! written to and taken from contacts through crm-core's `Tx` (audited, evented).
//!
//! **Refreshes.** At most one refresh of a segment runs at a time: starting one while the
//! last one has not finished answers that one. A refresh works a page of contacts per
//! transaction (memberships and tags of a page commit together) and is idempotent (stored
//! memberships are read again), so a refresh claimed again after a crash resumes from its
//! checkpoint.
//!
//! **Incremental updates.** When a lifecycle evaluation changes customers' stages, the
//! segments whose rules read `lifecycle.stage` are brought up to date for those customers
//! only, in the transaction that writes the stages ([`apply_changes`]). When an RFM run
//! succeeds (new scores for everyone), the segments reading `rfm.*`, `value` or
//! `behaviour.*` are refreshed by the refresh job; others are left alone. A contact's own
//! fields (region, tags, custom fields) are read at the next refresh: a contact write does
//! not re-evaluate segments by itself.

use super::lifecycle::latest_rfm_run;
use super::model::{LifecycleState, ResultStatus, RfmResult, Segment, SegmentMember};
use super::rfm_runs::ops_id;
use crate::segment::{
    CustomerRecord, FieldCatalog, PRODUCT_PATH, SegmentDefinition, SegmentRule, Value, tag_delta,
};
use chrono::{DateTime, Utc};
use crm_core::access::Action;
use crm_core::error::{Error, ErrorKind, Result};
use crm_core::jobs::{self, JobContext, JobOutcome, OnDuplicate, Progress};
use crm_core::model::Contact;
use crm_core::model::custom_field::CustomFieldDefinition;
use crm_core::resource::{Collection, Page, Record, Resource};
use crm_core::service::{Ctx, ListParams, Tx};
use sea_orm::sea_query::{Condition, Expr, ExprTrait};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use uuid::Uuid;

/// The job kind of a segment refresh.
pub const SEGMENT_JOB: &str = "crm.analytics.segment";
/// Contacts evaluated per transaction.
const PAGE: u64 = 2000;
/// Fields an RFM run changes.
pub const RFM_FIELDS: &[&str] = &[
    "rfm.r",
    "rfm.f",
    "rfm.m",
    "rfm.segment",
    "rfm.status",
    "value",
    "behaviour.purchase_power",
    "behaviour.order_count",
    "behaviour.last_order_time",
];

/// The fields segment rules may name: the contact's fields, its custom fields
/// (`custom.<key>`), and the analytics fields the engine fills (`rfm.*`, `value`,
/// `lifecycle.stage`, `behaviour.purchase_power`, `behaviour.order_count`,
/// `behaviour.last_order_time`). The response rate and product paths are not filled yet,
/// so rules cannot name them.
pub async fn catalog(tx: &Tx<'_>) -> Result<FieldCatalog> {
    let defs: Vec<CustomFieldDefinition> = tx
        .find::<CustomFieldDefinition>(
            Condition::all().add(Expr::col("collection").eq(Contact::COLLECTION)),
            1000,
        )
        .await?
        .into_iter()
        .map(|r| r.data)
        .collect();
    let mut c = FieldCatalog::analytics()
        .with_resource_fields(Contact::FIELDS)
        .with_custom_fields(&defs, Contact::COLLECTION);
    c.fields.remove("behaviour.response_rate");
    c.fields.remove(PRODUCT_PATH);
    Ok(c)
}

#[derive(Debug, Serialize, Deserialize)]
struct Payload {
    segment: Uuid,
    creator: Option<Uuid>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Checkpoint {
    after: Option<Uuid>,
    evaluated: i64,
    members: i64,
    entered: i64,
    left: i64,
    tagged: i64,
}

/// A refresh started, or the one still running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refresh {
    /// Its job (`operations/{id}`).
    pub job: Uuid,
    /// It was already running: answered instead of starting another.
    pub already_running: bool,
}

/// Starts a refresh of `segment`, or answers the one not finished yet. Needs `update` on
/// the segment (NOT_FOUND, named `name`, for another tenant's).
pub async fn start_refresh(ctx: &Ctx, segment: Uuid) -> Result<Refresh> {
    // Also when answering a running refresh: starting one is an update of the segment.
    ctx.scopes_of(&Collection::of::<Segment>(), Action::Update)?;
    let now = ctx.clock.now();
    let tx = ctx.begin().await?;
    // Starts of one segment's refresh take turns, so two never both start one.
    tx.lock_counter(&format!("segment-refresh:{segment}"))
        .await?;
    let seg = tx
        .get::<Segment>(segment)
        .await
        .map_err(|e| e.in_field("name"))?;
    if let Some(job) = ops_id(&seg.data.operation)
        && jobs::get(tx.conn(), ctx.tenant(), job)
            .await?
            .is_some_and(|j| !j.state.is_done())
    {
        return Ok(Refresh {
            job,
            already_running: true,
        });
    }
    let payload = serde_json::to_value(Payload {
        segment,
        creator: Some(ctx.principal.user),
    })
    .map_err(|e| Error::internal(e.to_string()))?;
    let job = jobs::schedule(
        tx.conn(),
        ctx.clock.as_ref(),
        ctx.tenant(),
        SEGMENT_JOB,
        &payload,
        now,
        &jobs::ScheduleOptions {
            dedupe_key: Some(format!("segment:{segment}")),
            on_duplicate: OnDuplicate::Keep,
            max_attempts: 3,
            collection: Some(Segment::COLLECTION.into()),
            creator: Some(ctx.principal.user),
        },
    )
    .await?;
    tx.update(
        segment,
        Segment {
            operation: format!("operations/{}", job.id),
            ..Default::default()
        },
        &["operation".into()],
        &seg.meta.etag(),
    )
    .await?;
    tx.commit().await?;
    jobs::wake();
    Ok(Refresh {
        job: job.id,
        already_running: false,
    })
}

/// Refreshes every segment whose rule reads one of `changed` (called as the system when an
/// RFM run changed those fields for everyone).
pub async fn refresh_dependents(ctx: &Ctx, changed: &[&str]) -> Result<()> {
    let tx = ctx.begin().await?;
    let segments = dependents(&tx, changed).await?;
    drop(tx);
    for s in segments {
        start_refresh(ctx, s.id).await?;
    }
    Ok(())
}

/// What a rule reads about one contact.
fn record(
    catalog: &FieldCatalog,
    contact: &Record<Contact>,
    rfm: Option<&RfmResult>,
    stage: Option<&str>,
) -> Result<CustomerRecord> {
    let mut r = CustomerRecord::new(contact.meta.id);
    let json = serde_json::to_value(&contact.data).map_err(|e| Error::internal(e.to_string()))?;
    r.set_json(catalog, &json).map_err(Error::from)?;
    if let Some(res) = rfm {
        r.set("rfm.status", Value::String(res.status.as_str().into()));
        if res.status == ResultStatus::Scored {
            r.set("rfm.r", Value::Int(res.r));
            r.set("rfm.f", Value::Int(res.f));
            r.set("rfm.m", Value::Int(res.m));
            r.set("rfm.segment", Value::String(res.segment.clone()));
            r.set("value", Value::Number(res.value.score));
        }
        r.set("behaviour.order_count", Value::Int(res.frequency));
        if let Some(t) = res.last_purchase {
            r.set("behaviour.last_order_time", Value::Timestamp(t));
        }
        if let Some(m) = res.monetary_converted {
            r.set("behaviour.purchase_power", Value::Int(m));
        }
    }
    if let Some(s) = stage {
        r.set("lifecycle.stage", Value::String(s.to_owned()));
    }
    Ok(r)
}

/// A segment ready to evaluate: its id, compiled rule and tag.
pub(crate) struct Compiled {
    id: Uuid,
    rule: SegmentRule,
    def: SegmentDefinition,
}

impl Compiled {
    fn new(seg: &Record<Segment>, catalog: &FieldCatalog) -> Result<Self> {
        Ok(Self {
            id: seg.meta.id,
            rule: SegmentRule::compile(&seg.data.rule, catalog).map_err(Error::from)?,
            def: SegmentDefinition {
                key: seg.meta.id.to_string(),
                name: seg.data.display_name.clone(),
                rule: seg.data.rule.clone(),
                tags: if seg.data.tag.is_empty() {
                    vec![]
                } else {
                    vec![seg.data.tag.clone()]
                },
            },
        })
    }
}

/// The tenant's segments whose rules read one of `changed`, compiled (as the system).
pub(crate) async fn dependents(tx: &Tx<'_>, changed: &[&str]) -> Result<Vec<Compiled>> {
    let catalog = catalog(tx).await?;
    let mut out = Vec::new();
    for s in tx.find::<Segment>(Condition::all(), 1000).await? {
        // A rule that no longer compiles (a custom field removed) waits for its editor.
        if let Ok(c) = Compiled::new(&s, &catalog)
            && c.rule.depends_on(changed)
        {
            out.push(c);
        }
    }
    Ok(out)
}

/// What rules read about some contacts besides their own fields: their latest RFM results
/// and lifecycle stages, read in `tx` (so a stage written in it is seen).
pub(crate) struct Inputs {
    rfm: HashMap<Uuid, RfmResult>,
    stages: HashMap<Uuid, String>,
}

pub(crate) async fn inputs(tx: &Tx<'_>, rfm_run: Option<Uuid>, ids: &[Uuid]) -> Result<Inputs> {
    let limit = Ord::max(u64::try_from(ids.len()).unwrap_or(u64::MAX), 1);
    let rfm = match rfm_run {
        Some(run) => tx
            .find::<RfmResult>(
                Condition::all()
                    .add(Expr::col("run_id").eq(run))
                    .add(super::among("customer_id", ids)),
                limit,
            )
            .await?
            .into_iter()
            .filter_map(|r| r.data.customer.map(|c| (c, r.data)))
            .collect(),
        None => HashMap::new(),
    };
    let stages = tx
        .find::<LifecycleState>(
            Condition::all().add(super::among("customer_id", ids)),
            limit,
        )
        .await?
        .into_iter()
        .filter_map(|s| s.data.customer.map(|c| (c, s.data.stage)))
        .collect();
    Ok(Inputs { rfm, stages })
}

/// What evaluating some contacts changed.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Counts {
    pub(crate) members: i64,
    pub(crate) entered: i64,
    pub(crate) left: i64,
    pub(crate) tagged: i64,
}

/// Brings the memberships of `contacts` in `seg` (and the segment's tag on them) in line
/// with its rule, in `tx`. The contacts must be read in `tx` after any earlier tag write to
/// them in it.
pub(crate) async fn apply(
    tx: &Tx<'_>,
    seg: &Compiled,
    catalog: &FieldCatalog,
    contacts: &[Record<Contact>],
    inputs: &Inputs,
    now: DateTime<Utc>,
) -> Result<Counts> {
    let mut n = Counts::default();
    let ids: Vec<Uuid> = contacts.iter().map(|c| c.meta.id).collect();
    let members: HashMap<Uuid, Record<SegmentMember>> = tx
        .find::<SegmentMember>(
            Condition::all()
                .add(Expr::col("segment_id").eq(seg.id))
                .add(super::among("customer_id", &ids)),
            Ord::max(u64::try_from(ids.len()).unwrap_or(u64::MAX), 1),
        )
        .await?
        .into_iter()
        .filter_map(|m| m.data.customer.map(|c| (c, m)))
        .collect();
    // New members are written together at the end.
    let mut entering = Vec::new();
    for c in contacts {
        let id = c.meta.id;
        let r = record(
            catalog,
            c,
            inputs.rfm.get(&id),
            inputs.stages.get(&id).map(String::as_str),
        )?;
        let member = seg.rule.matches(&r).map_err(Error::from)?;
        match (members.get(&id), member) {
            (None, true) => {
                entering.push((
                    crm_core::ids::new_id(),
                    SegmentMember {
                        segment: Some(seg.id),
                        customer: Some(id),
                        enter_time: Some(now),
                    },
                ));
                n.entered += 1;
            }
            (Some(m), false) => {
                tx.delete::<SegmentMember>(m.meta.id, &m.meta.etag())
                    .await?;
                n.left += 1;
            }
            _ => {}
        }
        if member {
            n.members += 1;
        }
        if seg.def.tags.is_empty() {
            continue;
        }
        let delta = tag_delta(&c.data.tags, &[(&seg.def, member)]);
        if delta.add.is_empty() && delta.remove.is_empty() {
            continue;
        }
        let mut tags: Vec<String> = c
            .data
            .tags
            .iter()
            .filter(|t| !delta.remove.contains(&t.to_lowercase()))
            .cloned()
            .collect();
        tags.extend(delta.add.iter().cloned());
        tx.update(
            id,
            Contact {
                tags,
                ..Default::default()
            },
            &["tags".into()],
            &c.meta.etag(),
        )
        .await?;
        n.tagged += 1;
    }
    tx.create_many(entering).await?;
    Ok(n)
}

/// Incremental membership: after `changed` contacts' stages or scores were written in `tx`,
/// brings every segment in `segments` up to date for them, in the same transaction, and
/// moves each segment's member count by what changed.
pub(crate) async fn apply_changes(
    tx: &Tx<'_>,
    segments: &[Compiled],
    rfm_run: Option<Uuid>,
    changed: &[Uuid],
    now: DateTime<Utc>,
) -> Result<()> {
    if segments.is_empty() || changed.is_empty() {
        return Ok(());
    }
    let catalog = catalog(tx).await?;
    let inputs = inputs(tx, rfm_run, changed).await?;
    let limit = u64::try_from(changed.len()).unwrap_or(u64::MAX);
    for seg in segments {
        // Read again for each segment: an earlier one may have changed their tags.
        let contacts = tx
            .find::<Contact>(super::among("id", changed), limit)
            .await?;
        let n = apply(tx, seg, &catalog, &contacts, &inputs, now).await?;
        if n.entered != n.left {
            let current = tx.get::<Segment>(seg.id).await?;
            tx.update(
                seg.id,
                Segment {
                    member_count: Ord::max(current.data.member_count + n.entered - n.left, 0),
                    ..Default::default()
                },
                &["member_count".into()],
                &current.meta.etag(),
            )
            .await?;
        }
    }
    Ok(())
}

/// The job handler of [`SEGMENT_JOB`].
pub async fn run_refresh(job: JobContext) -> Result<JobOutcome> {
    let p: Payload = job.payload_as()?;
    let ctx = job.system_ctx(p.creator);
    let seg = match ctx.get::<Segment>(p.segment).await {
        Ok(s) => s,
        Err(e) if e.kind == ErrorKind::NotFound => return Ok(JobOutcome::done()),
        Err(e) => return Err(e),
    };
    let tx = ctx.begin().await?;
    let catalog = catalog(&tx).await?;
    drop(tx);
    let compiled = Compiled::new(&seg, &catalog)?;
    let rfm_run = latest_rfm_run(&ctx).await?;
    let mut cp: Checkpoint = job.checkpoint_as()?.unwrap_or_default();
    let mut progress = Progress::default();
    let now = ctx.clock.now();
    loop {
        if job.is_cancelled() {
            return Ok(JobOutcome::Cancelled);
        }
        let tx = ctx.begin().await?;
        let mut cond = Condition::all();
        if let Some(a) = cp.after {
            cond = cond.add(Expr::col("id").gt(a));
        }
        let contacts = tx.find::<Contact>(cond, PAGE).await?;
        let Some(last) = contacts.last().map(|c| c.meta.id) else {
            break;
        };
        let ids: Vec<Uuid> = contacts.iter().map(|c| c.meta.id).collect();
        let inputs = inputs(&tx, rfm_run, &ids).await?;
        let n = apply(&tx, &compiled, &catalog, &contacts, &inputs, now).await?;
        tx.commit().await?;
        cp.members += n.members;
        cp.entered += n.entered;
        cp.left += n.left;
        cp.tagged += n.tagged;
        cp.after = Some(last);
        cp.evaluated += i64::try_from(contacts.len()).unwrap_or(0);
        progress.done = cp.evaluated;
        progress.counts = BTreeMap::from([
            ("members".to_owned(), cp.members),
            ("entered".to_owned(), cp.entered),
            ("left".to_owned(), cp.left),
            ("tagged".to_owned(), cp.tagged),
        ]);
        let saved = serde_json::to_value(&cp).map_err(|e| Error::internal(e.to_string()))?;
        job.save(&saved, &progress).await?;
    }
    finish(&ctx, seg.meta.id, cp.members, now).await?;
    let mut out = json!({
        "segment": format!("segments/{}", seg.meta.id),
        "evaluated": cp.evaluated,
        "members": cp.members,
        "entered": cp.entered,
        "left": cp.left,
        "tagged": cp.tagged,
    });
    // Planner statistics of the memberships written (see `Db::analyze`); the refresh stands
    // if refreshing them fails.
    if cp.entered + cp.left > 0
        && let Err(e) = ctx.db.analyze(&["segment_members"]).await
    {
        out["analyze_error"] = json!(e.message);
    }
    Ok(JobOutcome::Done(out))
}

async fn finish(ctx: &Ctx, segment: Uuid, members: i64, at: DateTime<Utc>) -> Result<()> {
    let tx = ctx.begin().await?;
    let current = tx.get::<Segment>(segment).await?;
    tx.update(
        segment,
        Segment {
            member_count: members,
            refresh_time: Some(at),
            ..Default::default()
        },
        &["member_count".into(), "refresh_time".into()],
        &current.meta.etag(),
    )
    .await?;
    tx.commit().await
}

/// A segment's members the caller may read (the contacts' grants), in keyset pages.
/// NOT_FOUND (named `segment`) for another tenant's segment.
pub async fn members(
    ctx: &Ctx,
    segment: Uuid,
    page_size: i32,
    page_token: String,
) -> Result<Page<SegmentMember>> {
    ctx.get::<Segment>(segment)
        .await
        .map_err(|e| e.in_field("segment"))?;
    ctx.list::<SegmentMember>(&ListParams {
        page_size,
        page_token,
        filter: format!("segment = \"segments/{segment}\""),
        order_by: "create_time".into(),
        parent: None,
    })
    .await
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::store::model::ValueResult;
    use crm_core::model::custom_field::CustomValue;
    use crm_core::resource::Meta;

    fn contact(region: &str, tags: &[&str]) -> Record<Contact> {
        Record {
            meta: Meta {
                id: Uuid::from_u128(7),
                revision: 1,
                create_time: DateTime::<Utc>::UNIX_EPOCH,
                update_time: DateTime::<Utc>::UNIX_EPOCH,
            },
            data: Contact {
                display_name: "A".into(),
                region: region.into(),
                tags: tags.iter().map(|t| (*t).to_owned()).collect(),
                custom_fields: BTreeMap::from([(
                    "tier".to_owned(),
                    CustomValue::Enum("gold".into()),
                )]),
                ..Default::default()
            },
            hidden: vec![],
        }
    }

    fn catalog() -> FieldCatalog {
        FieldCatalog::analytics()
            .with_resource_fields(Contact::FIELDS)
            .with_custom_fields(
                &[CustomFieldDefinition {
                    collection: "contacts".into(),
                    key: "tier".into(),
                    value_type: "ENUM".into(),
                    enum_values: vec!["gold".into()],
                    ..Default::default()
                }],
                "contacts",
            )
    }

    fn matches(rule: &str, r: &CustomerRecord) -> bool {
        SegmentRule::compile(rule, &catalog())
            .unwrap()
            .matches(r)
            .unwrap()
    }

    #[test]
    fn a_record_has_the_contact_its_rfm_result_and_its_stage() {
        let scored = RfmResult {
            status: ResultStatus::Scored,
            r: 5,
            f: 4,
            m: 3,
            segment: "champions".into(),
            frequency: 6,
            value: ValueResult {
                score: 72.5,
                ..Default::default()
            },
            ..Default::default()
        };
        let c = contact("EMEA", &["vip"]);
        let r = record(&catalog(), &c, Some(&scored), Some("stable")).unwrap();
        assert!(matches(
            "region = \"EMEA\" AND tags:vip AND custom.tier = gold",
            &r
        ));
        assert!(matches(
            "rfm.segment = champions AND rfm.r >= 5 AND value > 70 AND rfm.status = SCORED",
            &r
        ));
        assert!(matches(
            "lifecycle.stage = stable AND behaviour.order_count = 6",
            &r
        ));
        // Not scored: no scores, no value (a comparison with them is unknown: no member).
        let unscored = RfmResult {
            status: ResultStatus::NoOrders,
            ..Default::default()
        };
        let r = record(&catalog(), &c, Some(&unscored), None).unwrap();
        assert!(!matches("value >= 0", &r));
        assert!(!matches("NOT rfm.r >= 1", &r));
        assert!(matches("rfm.status = NO_ORDERS", &r));
        assert!(!matches("lifecycle.stage:*", &r));
    }
}
