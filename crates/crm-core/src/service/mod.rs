//! The generic use cases: Create, Get, List, Update, Delete of any [`Resource`], with
//! permission checks before any write and one transaction per write holding the row, its
//! audit record, its ownership change and its outbox event.
//!
//! - [`scope`]: what the caller may reach (record scope, field rules), also for custom reads;
//! - [`read`]: Get, List and history checks;
//! - [`write`]: the write transaction [`Tx`] (create, update, delete, composed writes and hooks).

mod read;
mod scope;
mod write;

use crate::access::{Action, FieldAccess, Policy, ScopeSet};
use crate::auth::Principal;
use crate::clock::Clock;
use crate::codec::{is_empty, to_db};
use crate::db::{Db, WriteTxn};
use crate::error::{Error, ErrorKind, Result};
use crate::ids::new_id;
use crate::journal::{self, AuditAction, FieldChange};
use crate::query::filter::{self, FieldType, FilterField};
use crate::query::page::{self, PageToken};
use crate::resource::{
    self, Collection, FieldSpec, Kind, META_FIELDS, Meta, Page, Record, Resource,
};
use crate::store::{self, col};
pub use scope::ChangeView;
use sea_orm::sea_query::{Condition, Expr, ExprTrait, Query};
use sea_orm::{ConnectionTrait, DatabaseTransaction};
use serde_json::{Map, Value as Json};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::OnceCell;
use uuid::Uuid;
pub use write::{KeyMatch, KeyMatches, RefChange, Tx, set_ref_of};

/// Everything a use case needs to know about the request it serves.
pub struct Ctx {
    pub db: Db,
    pub principal: Principal,
    pub policy: Policy,
    pub clock: Arc<dyn Clock>,
    reach: OnceCell<Reach>,
}

/// Whom and where the principal reaches, resolved once per request when a scope needs it.
#[derive(Debug, Default)]
struct Reach {
    team: HashSet<Uuid>,
    subtree: HashSet<Uuid>,
    territories: HashSet<Uuid>,
}

/// A create checked and ready to write.
struct Prepared<R> {
    /// Made as the system: references need no read right of the caller.
    system: bool,
    meta: Meta,
    data: R,
    obj: Map<String, Json>,
}

/// Parameters of a List.
#[derive(Debug, Default, Clone)]
pub struct ListParams {
    pub page_size: i32,
    pub page_token: String,
    pub filter: String,
    pub order_by: String,
    /// Restricts to the children of one parent: (column, parent id).
    pub parent: Option<(&'static str, Uuid)>,
}

impl Ctx {
    pub fn new(db: Db, principal: Principal, policy: Policy, clock: Arc<dyn Clock>) -> Self {
        Self {
            db,
            principal,
            policy,
            clock,
            reach: OnceCell::new(),
        }
    }

    pub fn tenant(&self) -> &str {
        &self.principal.tenant
    }
}

pub(super) fn stale<R: Resource>(id: Uuid) -> Error {
    Error::aborted(
        "ETAG_MISMATCH",
        format!(
            "{}/{id} was changed by someone else; read it again and retry",
            R::COLLECTION
        ),
    )
    .with("resource", format!("{}/{id}", R::COLLECTION))
}

pub(super) fn parse_etag(etag: &str) -> Result<Option<i64>> {
    let e = etag.trim();
    if e.is_empty() {
        return Ok(None);
    }
    e.trim_start_matches("W/")
        .trim_matches('"')
        .strip_prefix('r')
        .and_then(|n| n.parse::<i64>().ok())
        .map(Some)
        .ok_or_else(|| Error::invalid("etag", "is not an etag issued by this service"))
}

pub(super) fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

pub(super) fn digest(obj: &Map<String, Json>) -> String {
    let bytes = serde_json::to_vec(obj).unwrap_or_default();
    hex::encode(Sha256::digest(bytes))
}

pub(crate) fn ref_of(obj: &Map<String, Json>, field: &str) -> Option<Uuid> {
    obj.get(field)
        .and_then(Json::as_str)
        .and_then(|s| Uuid::try_parse(s).ok())
}

pub(crate) fn list_of(obj: &Map<String, Json>, field: &str) -> Vec<String> {
    obj.get(field)
        .and_then(Json::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn filter_type(kind: Kind) -> Option<FieldType> {
    Some(match kind {
        Kind::Text => FieldType::String,
        Kind::Int => FieldType::Int64,
        Kind::Bool => FieldType::Bool,
        Kind::Time => FieldType::Timestamp,
        Kind::Date => FieldType::Date,
        Kind::Enum(v) => FieldType::Enum(v),
        Kind::Ref(c) => FieldType::Ref(c),
        Kind::Tags => FieldType::StringList,
        Kind::RefList(c) => FieldType::RefList(c),
        Kind::Json => return None,
    })
}
