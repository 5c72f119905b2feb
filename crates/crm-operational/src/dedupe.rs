//! Duplicate detection on capture (O2): every lead, contact and account keeps its blocking
//! keys ([`crate::matching::blocking_keys`]) in crm-core's record keys (key space `match`),
//! maintained by write observers in the record's own transaction; a new lead is matched
//! against the leads, contacts and accounts sharing a key, scored field by field, and the
//! tenant's duplicate policy decides (block, flag; merge is flagged until merging exists).
//!
//! Records written before this crate's keys existed have none until they are written again;
//! they are not found as candidates.

use crate::lead::Lead;
use crate::matching::{
    self, Decision, DuplicateAction, DuplicatePolicy, FieldEvidence, MatchRecord, PreparedRecord,
};
use crm_core::error::{Error, Result};
use crm_core::journal::AuditAction;
use crm_core::model::{Account, Contact};
use crm_core::registry::{RegistryBuilder, WriteEvent};
use crm_core::resource::{HookFuture, Kind, Resource};
use crm_core::service::Tx;
use sea_orm::sea_query::{Condition, Expr, ExprTrait};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};
use std::collections::HashMap;
use uuid::Uuid;

/// The record-key space of the blocking keys.
pub const KEY_SPACE: &str = "match";
/// Collections a new lead is matched against.
pub const MATCHED: [&str; 3] = ["leads", "contacts", "accounts"];
/// Most candidate records scored per new lead (the rarest keys are not preferred: a key
/// shared by more records than this is too common to tell anything).
/// Candidates fetched and scored per check, those sharing the most blocking keys first.
const MAX_CANDIDATES: usize = 100;
/// A blocking key more records than this have is a stop key: skipped (too common to tell
/// records apart, e.g. a switchboard number or a common name in a big city), so a check
/// reads a bounded number of index entries whatever the tenant's size.
pub const STOP_KEY_AT: u64 = 64;
/// Most duplicates kept on a lead.
const MAX_KEPT: usize = 10;

/// Registers the observers that keep the blocking keys of leads, contacts and accounts.
pub fn register(r: &mut RegistryBuilder) {
    for c in MATCHED {
        r.observe(c, keep_keys);
    }
}

fn keep_keys<'a>(tx: &'a Tx<'a>, e: WriteEvent<'a>) -> HookFuture<'a> {
    Box::pin(async move {
        let keys = if e.action == AuditAction::Delete {
            Vec::new()
        } else {
            keys_of(&record_of(e.collection, e.record))
        };
        tx.set_record_keys(KEY_SPACE, e.collection, e.id, &keys)
            .await
    })
}

fn keys_of(r: &MatchRecord) -> Vec<String> {
    matching::blocking_keys(&PreparedRecord::new(r))
        .iter()
        .map(|k| k.encoded())
        .filter(|k| k.len() <= 512)
        .collect()
}

fn text(o: &Map<String, Json>, f: &str) -> String {
    o.get(f)
        .and_then(Json::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn list(o: &Map<String, Json>, f: &str, inner: &str) -> Vec<String> {
    o.get(f)
        .and_then(Json::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.get(inner).and_then(Json::as_str))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// What matching compares of a lead, contact or account (its stored JSON object).
pub fn record_of(collection: &str, o: &Map<String, Json>) -> MatchRecord {
    let address = match collection {
        "leads" => o.get("address").cloned(),
        _ => o
            .get("addresses")
            .and_then(Json::as_array)
            .and_then(|a| a.first())
            .cloned(),
    }
    .and_then(|a| a.as_object().cloned())
    .unwrap_or_default();
    let street = address
        .get("lines")
        .and_then(Json::as_array)
        .and_then(|l| l.first())
        .and_then(Json::as_str)
        .unwrap_or_default()
        .to_owned();
    let mut r = MatchRecord {
        street,
        postcode: text(&address, "postal_code"),
        city: text(&address, "locality"),
        country: text(&address, "region_code"),
        ..Default::default()
    };
    if collection == "accounts" {
        r.company = text(o, "display_name");
        return r;
    }
    r.given_name = text(o, "given_name");
    r.family_name = text(o, "family_name");
    r.full_name = text(o, "display_name");
    r.emails = list(o, "emails", "address");
    r.phones = list(o, "phones", "number");
    r.birth_date = o
        .get("birth_date")
        .and_then(Json::as_str)
        .and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok());
    if collection == "leads" {
        r.company = text(o, "company");
    }
    r
}

/// Where a lead stands as to duplicates.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DuplicateCheck {
    /// `NONE`, `POSSIBLE` or `MATCH`: the best decision among the candidates.
    pub status: String,
    /// The best candidates, best first.
    pub candidates: Vec<DuplicateCandidate>,
}

/// An existing record a lead may duplicate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DuplicateCandidate {
    /// `leads/{id}`, `contacts/{id}` or `accounts/{id}`.
    pub record: String,
    /// Match score, `0..=1`.
    pub score: f64,
    /// `MATCH` or `POSSIBLE`.
    pub decision: String,
    /// Per-field evidence.
    pub evidence: Vec<FieldEvidence>,
}

fn decision_name(d: Decision) -> &'static str {
    match d {
        Decision::Match => "MATCH",
        Decision::Possible => "POSSIBLE",
        Decision::NoMatch => "NONE",
    }
}

/// Scores `lead` against the records sharing one of its blocking keys (`except` left out),
/// read in `tx` as the system. The policy's thresholds decide.
pub async fn candidates(
    tx: &Tx<'_>,
    lead: &Lead,
    except: Option<Uuid>,
    policy: &DuplicatePolicy,
) -> Result<DuplicateCheck> {
    let obj = match serde_json::to_value(lead) {
        Ok(Json::Object(o)) => o,
        _ => return Err(Error::internal("a lead did not serialise to an object")),
    };
    candidates_of(tx, "leads", &obj, except, policy, &MATCHED).await
}

/// Scores a record of `collection` (its stored JSON object) against the records of
/// `within` sharing one of its blocking keys (`except` left out), read in `tx` as the
/// system. The policy's thresholds decide; candidates are not filtered by the caller's
/// rights (see [`find_for_record`] for that).
pub async fn candidates_of(
    tx: &Tx<'_>,
    collection: &str,
    obj: &Map<String, Json>,
    except: Option<Uuid>,
    policy: &DuplicatePolicy,
    within: &[&str],
) -> Result<DuplicateCheck> {
    let me = record_of(collection, obj);
    let keys = keys_of(&me);
    let found = tx
        .records_with_keys(KEY_SPACE, &keys, within, STOP_KEY_AT, MAX_CANDIDATES + 1)
        .await?;
    let mut by: HashMap<&str, Vec<Uuid>> = HashMap::new();
    for m in &found.records {
        if Some(m.id) != except {
            by.entry(m.collection.as_str()).or_default().push(m.id);
        }
    }
    let mut records: Vec<(String, MatchRecord)> = Vec::new();
    for (c, ids) in by {
        let cond = Condition::all().add(Expr::col("id").is_in(ids));
        for (id, o) in objects(tx, c, cond, MAX_CANDIDATES as u64).await? {
            records.push((format!("{c}/{id}"), record_of(c, &o)));
        }
    }
    let mine = PreparedRecord::new(&me);
    let mut scored: Vec<DuplicateCandidate> = records
        .iter()
        .map(|(name, r)| {
            let s = matching::score(&mine, &PreparedRecord::new(r), &policy.thresholds);
            DuplicateCandidate {
                record: name.clone(),
                score: s.score,
                decision: decision_name(s.decision).to_owned(),
                evidence: s.evidence,
            }
        })
        .filter(|c| c.decision != "NONE")
        .collect();
    scored.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.record.cmp(&b.record))
    });
    scored.truncate(MAX_KEPT);
    let status = scored
        .first()
        .map_or("NONE", |c| c.decision.as_str())
        .to_owned();
    Ok(DuplicateCheck {
        status,
        candidates: scored,
    })
}

/// The tenant's active duplicate policy, or the defaults.
pub async fn policy_of(tx: &Tx<'_>) -> Result<DuplicatePolicy> {
    active_policy(tx).await
}

async fn active_policy(tx: &Tx<'_>) -> Result<DuplicatePolicy> {
    Ok(crate::active::active::<LeadDuplicatePolicy>(tx)
        .await?
        .map(|p| p.data.policy())
        .unwrap_or_default())
}

/// Checks a new lead: its duplicates are kept on it, and a match whose policy action is
/// BLOCK refuses it (ALREADY_EXISTS naming the records it matches).
pub async fn check_new_lead(tx: &Tx<'_>, id: Uuid, lead: &mut Lead) -> Result<()> {
    let policy = active_policy(tx).await?;
    let check = candidates(tx, lead, Some(id), &policy).await?;
    let decision = match check.status.as_str() {
        "MATCH" => Decision::Match,
        "POSSIBLE" => Decision::Possible,
        _ => Decision::NoMatch,
    };
    if policy.action(&lead.source, decision) == DuplicateAction::Block {
        let names: Vec<&str> = check
            .candidates
            .iter()
            .filter(|c| c.decision == "MATCH")
            .map(|c| c.record.as_str())
            .collect();
        return Err(Error::already_exists(format!(
            "the lead matches {}",
            names.join(", ")
        )));
    }
    lead.duplicates = check;
    Ok(())
}

/// A tenant's duplicate policy for new leads: thresholds and the action on a match, per
/// source. At most one is active (activating one deactivates the others); without one, the
/// defaults apply (match at 0.95, possible at 0.5, matches flagged).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LeadDuplicatePolicy {
    /// A name for people.
    pub display_name: String,
    /// Whether new leads are checked by this policy.
    pub active: bool,
    /// Lowest score of a match (default 0.95).
    pub match_at: f64,
    /// Lowest score of a possible match (default 0.5).
    pub possible_at: f64,
    /// `BLOCK`, `FLAG` or `ALLOW` on a match, for sources not listed (default FLAG).
    pub on_match: String,
    /// The action on a match per lead source (`web_form`, `import`...).
    pub on_match_by_source: std::collections::BTreeMap<String, String>,
}

fn action_of(field: &str, s: &str) -> Result<DuplicateAction> {
    match s {
        "" | "FLAG" => Ok(DuplicateAction::Flag),
        "BLOCK" => Ok(DuplicateAction::Block),
        "ALLOW" => Ok(DuplicateAction::Allow),
        "MERGE" => Err(Error::invalid(
            field,
            "MERGE is not offered for new leads yet: use FLAG and merge by hand",
        )),
        other => Err(Error::invalid(
            field,
            format!("{other:?} is not one of BLOCK, FLAG, ALLOW"),
        )),
    }
}

impl LeadDuplicatePolicy {
    /// The pure policy (actions already validated).
    pub fn policy(&self) -> DuplicatePolicy {
        let d = DuplicatePolicy::default();
        DuplicatePolicy {
            thresholds: crate::matching::Thresholds {
                match_at: if self.match_at > 0.0 {
                    self.match_at
                } else {
                    d.thresholds.match_at
                },
                possible_at: if self.possible_at > 0.0 {
                    self.possible_at
                } else {
                    d.thresholds.possible_at
                },
            },
            on_match: action_of("on_match", &self.on_match).unwrap_or(d.on_match),
            on_match_by_source: self
                .on_match_by_source
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), action_of("on_match_by_source", v).ok()?)))
                .collect(),
        }
    }
}

impl Resource for LeadDuplicatePolicy {
    const COLLECTION: &'static str = "leadDuplicatePolicies";
    const TABLE: &'static str = "lead_duplicate_policies";
    const DEFAULT_ORDER: &'static str = "display_name";
    const FIELDS: &'static [crm_core::resource::FieldSpec] = &[
        crm_core::resource::FieldSpec::new("display_name", "display_name", Kind::Text).sort(),
        crm_core::resource::FieldSpec::new("active", "active", Kind::Bool).filter(),
        crm_core::resource::FieldSpec::new("match_at", "match_at", Kind::Json),
        crm_core::resource::FieldSpec::new("possible_at", "possible_at", Kind::Json),
        crm_core::resource::FieldSpec::new("on_match", "on_match", Kind::Text),
        crm_core::resource::FieldSpec::new("on_match_by_source", "on_match_by_source", Kind::Json),
    ];

    fn validate(&mut self) -> Result<()> {
        let mut v = crm_core::validate::Violations::new();
        if let Some(s) = v.check(crm_core::validate::text(
            "display_name",
            &self.display_name,
            crm_core::validate::MAX_SHORT_CHARS,
            true,
        )) {
            self.display_name = s;
        }
        self.on_match = self.on_match.trim().to_ascii_uppercase();
        v.check(action_of("on_match", &self.on_match));
        let mut by = std::collections::BTreeMap::new();
        for (k, a) in &self.on_match_by_source {
            let a = a.trim().to_ascii_uppercase();
            v.check(action_of(&format!("on_match_by_source.{k}"), &a));
            by.insert(k.trim().to_owned(), a);
        }
        self.on_match_by_source = by;
        for (f, x) in [
            ("match_at", self.match_at),
            ("possible_at", self.possible_at),
        ] {
            if !(0.0..=1.0).contains(&x) {
                v.add(f, "must be within 0 and 1 (0 for the default)");
            }
        }
        v.into_result()?;
        self.policy().validate().map_err(crate::error::into_core)
    }

    fn before_write<'a>(
        tx: &'a Tx<'a>,
        id: Uuid,
        _old: Option<&'a Self>,
        data: &'a mut Self,
    ) -> HookFuture<'a> {
        Box::pin(async move {
            if !data.active {
                return Ok(());
            }
            let off = LeadDuplicatePolicy {
                active: false,
                ..Default::default()
            };
            crate::active::deactivate_others(tx, id, off).await?;
            Ok(())
        })
    }
}

/// The duplicates of the lead `id` among the tenant's leads, contacts and accounts, as
/// the caller may see them (see [`find_for_record`]).
pub async fn find_for(ctx: &crm_core::service::Ctx, id: Uuid) -> Result<DuplicateCheck> {
    find_for_record(ctx, "leads", id).await
}

/// The stored JSON object of a record of a matched collection, read as the system; NOT_FOUND
/// when there is none.
pub async fn stored_object(tx: &Tx<'_>, collection: &str, id: Uuid) -> Result<Map<String, Json>> {
    objects(
        tx,
        collection,
        Condition::all().add(Expr::col("id").eq(id)),
        1,
    )
    .await?
    .into_iter()
    .next()
    .map(|(_, o)| o)
    .ok_or_else(|| Error::not_found(format!("{collection}/{id}")))
}

/// Live records of a matched collection meeting `cond`, in id order, at most `limit`, as
/// (id, stored JSON object), read in `tx` as the system; none for another collection.
pub async fn objects(
    tx: &Tx<'_>,
    collection: &str,
    cond: Condition,
    limit: u64,
) -> Result<Vec<(Uuid, Map<String, Json>)>> {
    fn plain<R: Serialize>(
        v: Vec<crm_core::resource::Record<R>>,
    ) -> Vec<(Uuid, Map<String, Json>)> {
        v.into_iter()
            .filter_map(|r| match serde_json::to_value(&r.data) {
                Ok(Json::Object(o)) => Some((r.meta.id, o)),
                _ => None,
            })
            .collect()
    }
    Ok(match collection {
        "leads" => plain(tx.find::<Lead>(cond, limit).await?),
        "contacts" => plain(tx.find::<Contact>(cond, limit).await?),
        "accounts" => plain(tx.find::<Account>(cond, limit).await?),
        _ => Vec::new(),
    })
}

/// Whether the caller may read the record `collection`/`id`.
pub async fn readable(ctx: &crm_core::service::Ctx, collection: &str, id: Uuid) -> bool {
    match collection {
        "leads" => ctx.get::<Lead>(id).await.is_ok(),
        "contacts" => ctx.get::<Contact>(id).await.is_ok(),
        "accounts" => ctx.get::<Account>(id).await.is_ok(),
        _ => false,
    }
}

/// The record fields a match field compares, per collection.
fn fields_of(f: matching::MatchField, collection: &str) -> &'static [&'static str] {
    use matching::MatchField as M;
    match (f, collection) {
        (M::Name, _) => &["given_name", "family_name", "display_name"],
        (M::Company, "accounts") => &["display_name"],
        (M::Company, _) => &["company"],
        (M::Email, _) => &["emails"],
        (M::Phone, _) => &["phones"],
        (M::BirthDate, _) => &["birth_date"],
        (M::Street | M::Postcode | M::City, "leads") => &["address"],
        (M::Street | M::Postcode | M::City, _) => &["addresses"],
    }
}

/// Blanks the compared values of fields the caller may not read on either side (the
/// similarity and weight stay: they say how it compared, not what it is).
pub fn redact(ctx: &crm_core::service::Ctx, left: &str, c: &mut DuplicateCandidate) {
    let reg = crm_core::registry::registry();
    let right = c.record.split('/').next().unwrap_or_default().to_owned();
    let hidden = |collection: &str, f: matching::MatchField| {
        reg.collection(collection).is_some_and(|col| {
            fields_of(f, collection)
                .iter()
                .any(|name| !ctx.may_read_field(col, name))
        })
    };
    for e in &mut c.evidence {
        if hidden(left, e.field) {
            e.left.clear();
        }
        if hidden(&right, e.field) {
            e.right.clear();
        }
    }
}

/// The duplicates of the record `collection`/`id` (leads, contacts or accounts) among the
/// tenant's leads, contacts and accounts, as the caller may see them: the record must be
/// readable, candidates the caller may not read are left out, and compared values of
/// fields hidden from the caller are blanked.
pub async fn find_for_record(
    ctx: &crm_core::service::Ctx,
    collection: &str,
    id: Uuid,
) -> Result<DuplicateCheck> {
    if !MATCHED.contains(&collection) {
        return Err(Error::invalid(
            "name",
            "duplicates are found for leads, contacts and accounts",
        ));
    }
    if !readable(ctx, collection, id).await {
        return Err(Error::not_found(format!("{collection}/{id}")));
    }
    let tx = ctx.begin().await?;
    let policy = active_policy(&tx).await?;
    // The stored record, not the caller's masked view of it.
    let stored = stored_object(&tx, collection, id).await?;
    let mut check = candidates_of(&tx, collection, &stored, Some(id), &policy, &MATCHED).await?;
    drop(tx);
    let mut visible = Vec::with_capacity(check.candidates.len());
    for mut c in check.candidates {
        let Some((other, rid)) = c
            .record
            .split_once('/')
            .and_then(|(c, i)| Some((c.to_owned(), Uuid::try_parse(i).ok()?)))
        else {
            continue;
        };
        if readable(ctx, &other, rid).await {
            redact(ctx, collection, &mut c);
            visible.push(c);
        }
    }
    check.status = visible
        .first()
        .map_or("NONE", |c| c.decision.as_str())
        .to_owned();
    check.candidates = visible;
    Ok(check)
}
