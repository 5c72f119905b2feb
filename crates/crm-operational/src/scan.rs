//! Duplicate scans (O2): every record of a collection (leads, contacts or accounts) matched
//! against the tenant's records, as a long-running operation whose result is a list of
//! scored candidate pairs with per-field evidence.
//!
//! The scan reads records in id order, a page at a time; each page's pairs and the page's
//! last id (the job's checkpoint) are written together, so a scan interrupted by a restart
//! resumes after the last page it finished, and a page done twice (its commit landed, its
//! checkpoint did not) finds its pairs already there (pair ids are derived from the scan and
//! the two records). A pair is kept once: (a, b) with a's name before b's when both are of
//! the scanned collection.

use crate::dedupe::{self, DuplicateCandidate, MATCHED};
use crate::matching::FieldEvidence;
use crm_core::error::{Error, ErrorKind, Result};
use crm_core::jobs::{self, JobContext, JobOutcome, OnDuplicate, Progress};
use crm_core::registry::SchemaChange;
use crm_core::resource::{FieldSpec, Kind, Resource};
use crm_core::service::{Ctx, Tx};
use sea_orm::sea_query::{Condition, Expr, ExprTrait};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json, json};
use std::collections::HashSet;
use uuid::Uuid;

/// The job kind of a scan.
pub const SCAN_JOB: &str = "crm.operational.duplicate_scan";
/// Records read per page (and transaction).
const PAGE: u64 = 200;

/// A candidate pair found by a scan.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DuplicatePair {
    /// The scan: `operations/{operation}`.
    pub scan: String,
    /// The scanned record: `contacts/{contact}`.
    pub record: String,
    /// The record it may duplicate (of any matched collection).
    pub other: String,
    /// 0..1.
    pub score: f64,
    /// MATCH or POSSIBLE.
    pub decision: String,
    /// How each field compared.
    pub evidence: Vec<FieldEvidence>,
}

impl Resource for DuplicatePair {
    const COLLECTION: &'static str = "duplicatePairs";
    const TABLE: &'static str = "duplicate_pairs";
    const FIELDS: &'static [FieldSpec] = &[
        FieldSpec::new("scan", "scan", Kind::Text).filter(),
        FieldSpec::new("record", "record", Kind::Text).filter(),
        FieldSpec::new("other", "other", Kind::Text).filter(),
        FieldSpec::new("score", "score", Kind::Json),
        FieldSpec::new("decision", "decision", Kind::Enum(&["MATCH", "POSSIBLE"])).filter(),
        FieldSpec::new("evidence", "evidence", Kind::Json),
    ];

    fn validate(&mut self) -> Result<()> {
        Ok(())
    }
}

/// The pairs table.
pub const SCHEMA: SchemaChange = SchemaChange::new(
    "m20261126_100002_duplicate_pairs",
    &[
        crm_core::resource_table!(
            "duplicate_pairs",
            "scan TEXT NOT NULL, record TEXT NOT NULL, other TEXT NOT NULL, \
             score TEXT NOT NULL, decision TEXT NOT NULL, evidence TEXT NOT NULL"
        ),
        "CREATE INDEX duplicate_pairs_scan ON duplicate_pairs (tenant_id, scan, id)",
    ],
);

#[derive(Debug, Serialize, Deserialize)]
struct Payload {
    collection: String,
    creator: Option<Uuid>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Checkpoint {
    last: Option<Uuid>,
    records: i64,
    pairs: i64,
}

/// Starts a scan of `collection` (leads, contacts or accounts) as a job and returns its id
/// (the operation). The caller needs read on the collection and create on duplicate pairs.
pub async fn start(ctx: &Ctx, collection: &str) -> Result<Uuid> {
    let Some(c) = MATCHED.iter().find(|c| **c == collection) else {
        return Err(Error::invalid(
            "collection",
            "must be leads, contacts or accounts",
        ));
    };
    let reg = crm_core::registry::registry();
    for (name, action) in [
        (*c, crm_core::access::Action::Read),
        (DuplicatePair::COLLECTION, crm_core::access::Action::Create),
    ] {
        let col = reg
            .collection(name)
            .ok_or_else(|| Error::internal(format!("{name} is not registered")))?;
        ctx.scopes_of(col, action)?;
    }
    let payload = serde_json::to_value(Payload {
        collection: collection.to_owned(),
        creator: Some(ctx.principal.user),
    })
    .map_err(|e| Error::internal(e.to_string()))?;
    let tx = ctx.begin().await?;
    let job = jobs::schedule(
        tx.conn(),
        ctx.clock.as_ref(),
        ctx.tenant(),
        SCAN_JOB,
        &payload,
        ctx.clock.now(),
        &jobs::ScheduleOptions {
            dedupe_key: None,
            on_duplicate: OnDuplicate::Keep,
            max_attempts: 5,
            collection: Some(DuplicatePair::COLLECTION.into()),
            creator: Some(ctx.principal.user),
        },
    )
    .await?;
    tx.commit().await?;
    jobs::wake();
    Ok(job.id)
}

/// A pair's id: the same for the same scan and records.
fn pair_id(scan: Uuid, a: &str, b: &str) -> Uuid {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(scan.as_bytes());
    h.update(a.as_bytes());
    h.update([0]);
    h.update(b.as_bytes());
    let d = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&d[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// A page of records of `collection` after `last`, as (id, stored object).
async fn page(
    tx: &Tx<'_>,
    collection: &str,
    last: Option<Uuid>,
) -> Result<Vec<(Uuid, Map<String, Json>)>> {
    let mut cond = Condition::all();
    if let Some(l) = last {
        cond = cond.add(Expr::col("id").gt(l));
    }
    dedupe::objects(tx, collection, cond, PAGE).await
}

/// The job handler of [`SCAN_JOB`].
pub async fn run_job(job: JobContext) -> Result<JobOutcome> {
    let p: Payload = job.payload_as()?;
    let ctx = job.system_ctx(p.creator);
    let scan = format!("operations/{}", job.id);
    let mut cp: Checkpoint = job.checkpoint_as()?.unwrap_or_default();
    let mut policy = None;
    loop {
        if job.is_cancelled() {
            return Ok(JobOutcome::Cancelled);
        }
        let tx = ctx.begin().await?;
        let policy = match &policy {
            Some(p) => p,
            None => policy.insert(dedupe::policy_of(&tx).await?),
        };
        let records = page(&tx, &p.collection, cp.last).await?;
        let Some(last) = records.last().map(|r| r.0) else {
            break;
        };
        let mut found: Vec<(Uuid, DuplicatePair)> = Vec::new();
        for (id, obj) in &records {
            let me = format!("{}/{id}", p.collection);
            let check =
                dedupe::candidates_of(&tx, &p.collection, obj, Some(*id), policy, &MATCHED).await?;
            for DuplicateCandidate {
                record,
                score,
                decision,
                evidence,
            } in check.candidates
            {
                // Each pair once: within the collection, from the record named first.
                if record.starts_with(&format!("{}/", p.collection)) && record < me {
                    continue;
                }
                found.push((
                    pair_id(job.id, &me, &record),
                    DuplicatePair {
                        scan: scan.clone(),
                        record: me.clone(),
                        other: record,
                        score,
                        decision,
                        evidence,
                    },
                ));
            }
        }
        // Pairs a crashed attempt wrote already are skipped.
        let ids: Vec<Uuid> = found.iter().map(|f| f.0).collect();
        let have: HashSet<Uuid> = if ids.is_empty() {
            HashSet::new()
        } else {
            tx.find::<DuplicatePair>(Condition::all().add(Expr::col("id").is_in(ids)), 100_000)
                .await?
                .into_iter()
                .map(|r| r.meta.id)
                .collect()
        };
        for (id, pair) in found {
            if have.contains(&id) {
                continue;
            }
            match tx.create_with_id(id, pair).await {
                Ok(_) => cp.pairs += 1,
                Err(e) if e.kind == ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        tx.commit().await?;
        cp.last = Some(last);
        cp.records += i64::try_from(records.len()).unwrap_or(0);
        let progress = Progress {
            done: cp.records,
            counts: [("pairs".to_owned(), cp.pairs)].into_iter().collect(),
            ..Default::default()
        };
        let c = serde_json::to_value(&cp).map_err(|e| Error::internal(e.to_string()))?;
        job.save(&c, &progress).await?;
    }
    Ok(JobOutcome::Done(json!({
        "scan": scan,
        "collection": p.collection,
        "records": cp.records,
        "pairs": cp.pairs,
    })))
}
