//! Merging duplicate leads, contacts and accounts (O2), and undoing a merge.
//!
//! A merge keeps the *survivor*, takes the fields the caller chose from the *merged* record,
//! points every record that referred to the merged one (orders, positions, activities,
//! opportunities, converted leads, child accounts...) at the survivor, and soft-deletes the
//! merged record, all in one transaction: each of those writes is audited and evented like
//! any other, and the merge itself is kept as a [`RecordMerge`] naming what it did. The merged
//! record's own audit trail stays under its id.
//!
//! Undoing a merge brings the merged record back (an `UNDELETE` in its audit trail), points
//! the references the merge moved back at it (those that still point at the survivor), and
//! restores the survivor's fields the merge overwrote, unless they were changed since (those
//! are left as they are and named in `undo_conflicts`).
//!
//! Both sides are read at their current revision and written with it: a merge racing an
//! update of either side fails with ABORTED and changes nothing.

use crate::lead::Lead;
use crm_core::error::{Error, Result};
use crm_core::model::{Account, Contact};
use crm_core::registry::SchemaChange;
use crm_core::resource::{FieldSpec, Kind, Record, Resource};
use crm_core::service::{Ctx, RefChange, Tx};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};
use uuid::Uuid;

crm_core::named_enum! {
    /// Where a merge stands.
    pub enum MergeState {
        /// Done and in force.
        Merged = "MERGED",
        /// Undone.
        Undone = "UNDONE"
    }
}

/// The collections whose records can be merged.
pub const MERGEABLE: [&str; 3] = ["leads", "contacts", "accounts"];

/// One merge, as done, and whether it was undone.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RecordMerge {
    /// `leads`, `contacts` or `accounts`.
    pub collection: String,
    /// The record kept.
    pub survivor: Option<Uuid>,
    /// The record merged into it (soft-deleted while the merge is in force).
    pub merged: Option<Uuid>,
    /// The fields taken from the merged record.
    pub fields: Vec<String>,
    /// The survivor's values of those fields before the merge.
    pub survivor_before: Map<String, Json>,
    /// The values the merge gave them.
    pub taken: Map<String, Json>,
    /// The references moved from the merged record to the survivor.
    pub references: Vec<RefChange>,
    /// MERGED or UNDONE.
    pub state: MergeState,
    /// When it was undone.
    pub undo_time: Option<chrono::DateTime<chrono::Utc>>,
    /// The user who undid it.
    pub undone_by: Option<Uuid>,
    /// Fields of the survivor not restored on undo because they changed after the merge.
    pub undo_conflicts: Vec<String>,
}

impl Resource for RecordMerge {
    const COLLECTION: &'static str = "recordMerges";
    const TABLE: &'static str = "record_merges";
    const FIELDS: &'static [FieldSpec] = &[
        FieldSpec::new("collection", "collection", Kind::Enum(&MERGEABLE)).filter(),
        FieldSpec::new("survivor", "survivor", Kind::Text).filter(),
        FieldSpec::new("merged", "merged", Kind::Text).filter(),
        FieldSpec::new("fields", "fields", Kind::Json),
        FieldSpec::new("survivor_before", "survivor_before", Kind::Json),
        FieldSpec::new("taken", "taken", Kind::Json),
        FieldSpec::new("references", "refs", Kind::Json),
        FieldSpec::new("state", "state", Kind::Enum(MergeState::NAMES)).filter(),
        FieldSpec::new("undo_time", "undo_time", Kind::Time),
        FieldSpec::new("undone_by", "undone_by", Kind::Ref("users")),
        FieldSpec::new("undo_conflicts", "undo_conflicts", Kind::Json),
    ];

    fn validate(&mut self) -> Result<()> {
        if !MERGEABLE.contains(&self.collection.as_str()) {
            return Err(Error::invalid(
                "collection",
                "must be leads, contacts or accounts",
            ));
        }
        Ok(())
    }
}

/// The merges table.
pub const SCHEMA: SchemaChange = SchemaChange::new(
    "m20261126_100001_record_merges",
    &[
        crm_core::resource_table!(
            "record_merges",
            "collection TEXT NOT NULL, survivor TEXT NOT NULL, merged TEXT NOT NULL, \
             fields TEXT NOT NULL, survivor_before TEXT NOT NULL, taken TEXT NOT NULL, \
             refs TEXT NOT NULL, state TEXT NOT NULL, undo_time TIMESTAMPTZ NULL, \
             undone_by UUID NULL, undo_conflicts TEXT NOT NULL"
        ),
        "CREATE INDEX record_merges_survivor ON record_merges (tenant_id, survivor, id)",
        "CREATE INDEX record_merges_merged ON record_merges (tenant_id, merged, id)",
    ],
);

/// What the caller asks of a merge.
#[derive(Debug, Clone, Default)]
pub struct MergeRequest {
    /// The record kept.
    pub survivor: Uuid,
    /// The record merged into it.
    pub merged: Uuid,
    /// Fields to take from the merged record (the survivor's are kept otherwise).
    pub fields: Vec<String>,
    /// The survivor's etag, if the caller wants it checked.
    pub survivor_etag: String,
    /// The merged record's etag, if the caller wants it checked.
    pub merged_etag: String,
}

/// A merge done: the merge record and the survivor as it is now (masked for the caller).
#[derive(Debug, Clone)]
pub struct Merged<R> {
    /// The merge.
    pub merge: Record<RecordMerge>,
    /// The survivor after the merge.
    pub survivor: Record<R>,
}

/// Checks the fields a merge may take from the merged record of `R`.
fn check_fields<R: Resource>(fields: &[String]) -> Result<()> {
    for (i, f) in fields.iter().enumerate() {
        match R::FIELDS.iter().find(|s| s.name == f) {
            None => {
                return Err(Error::invalid(
                    format!("field_mask.paths[{i}]"),
                    format!("{} have no field {f:?}", R::COLLECTION),
                ));
            }
            Some(s) if !s.mutable => {
                return Err(Error::invalid(
                    format!("field_mask.paths[{i}]"),
                    format!("field {f:?} cannot be changed"),
                ));
            }
            Some(_) => {}
        }
        if fields[..i].contains(f) {
            return Err(Error::invalid(
                format!("field_mask.paths[{i}]"),
                format!("field {f:?} is named twice"),
            ));
        }
    }
    Ok(())
}

fn object<R: Serialize>(r: &R) -> Result<Map<String, Json>> {
    match serde_json::to_value(r) {
        Ok(Json::Object(o)) => Ok(o),
        _ => Err(Error::internal("a record did not serialise to an object")),
    }
}

fn decode<R: for<'de> Deserialize<'de>>(o: Map<String, Json>) -> Result<R> {
    serde_json::from_value(Json::Object(o))
        .map_err(|e| Error::internal(format!("a merged record does not decode: {e}")))
}

/// Merges `req.merged` into `req.survivor` (see the module doc), as the caller: they need
/// to read both, update the survivor and delete the merged record, and to create merges.
pub async fn merge<R: Resource>(ctx: &Ctx, req: MergeRequest) -> Result<Merged<R>> {
    if req.survivor == req.merged {
        return Err(Error::invalid(
            "merged",
            "a record cannot be merged with itself",
        ));
    }
    check_fields::<R>(&req.fields)?;
    let tx = ctx.begin().await?;
    let survivor = tx
        .get::<R>(req.survivor)
        .await
        .map_err(|e| e.with("field", "survivor"))?;
    let merged = tx
        .get::<R>(req.merged)
        .await
        .map_err(|e| e.with("field", "merged"))?;
    for (i, f) in req.fields.iter().enumerate() {
        if merged.hidden.iter().any(|h| h == f) || survivor.hidden.iter().any(|h| h == f) {
            return Err(Error::permission_denied(
                "FIELD_NOT_WRITABLE",
                format!("field {f:?} is hidden from you"),
            )
            .with("field", format!("field_mask.paths[{i}]")));
        }
    }
    let s_etag = if req.survivor_etag.is_empty() {
        survivor.meta.etag()
    } else {
        req.survivor_etag.clone()
    };
    let m_etag = if req.merged_etag.is_empty() {
        merged.meta.etag()
    } else {
        req.merged_etag.clone()
    };
    let before = object(&survivor.data)?;
    let from = object(&merged.data)?;
    let mut patch = before.clone();
    let mut survivor_before = Map::new();
    let mut taken = Map::new();
    for f in &req.fields {
        let v = from.get(f).cloned().unwrap_or(Json::Null);
        survivor_before.insert(f.clone(), before.get(f).cloned().unwrap_or(Json::Null));
        taken.insert(f.clone(), v.clone());
        patch.insert(f.clone(), v);
    }
    // References first (a merged account's child accounts keep it from being deleted),
    // then the merged record goes (its unique values, an e-mail or a key, may be what the
    // survivor takes), then the survivor takes its fields.
    let survivor_id = req.survivor;
    let references = tx
        .repoint_references(R::COLLECTION, req.merged, survivor_id)
        .await?;
    tx.delete::<R>(req.merged, &m_etag).await?;
    if !req.fields.is_empty() {
        tx.update::<R>(survivor_id, decode(patch)?, &req.fields, &s_etag)
            .await?;
    }
    let record = tx
        .create(RecordMerge {
            collection: R::COLLECTION.to_owned(),
            survivor: Some(survivor_id),
            merged: Some(req.merged),
            fields: req.fields,
            survivor_before,
            taken,
            references,
            state: MergeState::Merged,
            ..Default::default()
        })
        .await?;
    // The survivor as it is after the references moved (its own tree field may have).
    let now = tx.get::<R>(survivor_id).await?;
    tx.commit().await?;
    Ok(Merged {
        merge: record,
        survivor: now,
    })
}

/// Undoes the merge `id` (see the module doc). FAILED_PRECONDITION when it was undone
/// already; the caller needs the rights a merge needs, and to update merges.
pub async fn undo(ctx: &Ctx, id: Uuid) -> Result<Record<RecordMerge>> {
    let tx = ctx.begin().await?;
    let m = tx.get::<RecordMerge>(id).await?;
    if m.data.state == MergeState::Undone {
        return Err(Error::failed_precondition(
            "ALREADY_UNDONE",
            format!("recordMerges/{id} was undone already"),
        ));
    }
    let conflicts = match m.data.collection.as_str() {
        "leads" => undo_typed::<Lead>(&tx, &m.data).await?,
        "contacts" => undo_typed::<Contact>(&tx, &m.data).await?,
        "accounts" => undo_typed::<Account>(&tx, &m.data).await?,
        other => {
            return Err(Error::internal(format!(
                "a merge of {other} cannot be undone"
            )));
        }
    };
    let done = RecordMerge {
        state: MergeState::Undone,
        undo_time: Some(ctx.clock.now()),
        undone_by: Some(ctx.principal.user),
        undo_conflicts: conflicts,
        ..m.data.clone()
    };
    let rec = tx
        .update(
            id,
            done,
            &[
                "state".into(),
                "undo_time".into(),
                "undone_by".into(),
                "undo_conflicts".into(),
            ],
            &m.meta.etag(),
        )
        .await?;
    tx.commit().await?;
    Ok(rec)
}

async fn undo_typed<R: Resource>(tx: &Tx<'_>, m: &RecordMerge) -> Result<Vec<String>> {
    let (Some(survivor), Some(merged)) = (m.survivor, m.merged) else {
        return Err(Error::internal("a merge without its records"));
    };
    let current = tx
        .get::<R>(survivor)
        .await
        .map_err(|e| e.with("field", "survivor"))?;
    let now = object(&current.data)?;
    let mut patch = now.clone();
    let mut restore = Vec::new();
    let mut conflicts = Vec::new();
    for f in &m.fields {
        // Only what still holds the merge's value: a later change is the user's, kept.
        if now.get(f) == m.taken.get(f) {
            patch.insert(
                f.clone(),
                m.survivor_before.get(f).cloned().unwrap_or(Json::Null),
            );
            restore.push(f.clone());
        } else {
            conflicts.push(f.clone());
        }
    }
    // The survivor's own values back first (they may be unique ones the merged record
    // held), then the merged record, then the references it had.
    if !restore.is_empty() {
        tx.update::<R>(survivor, decode(patch)?, &restore, &current.meta.etag())
            .await?;
    }
    tx.undelete::<R>(merged).await?;
    tx.set_references(&m.references, survivor, merged).await?;
    Ok(conflicts)
}
