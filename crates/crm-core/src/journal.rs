//! What every write leaves behind in its own transaction: audit records (K6), ownership
//! history, outbox events (P1) and idempotency keys.

use crate::error::{Error, Result};
use crate::ids::new_id;
use crate::store::col;
use chrono::{DateTime, Utc};
use sea_orm::ConnectionTrait;
use sea_orm::sea_query::{Expr, ExprTrait, Order, Query};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use uuid::Uuid;

/// One field's change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    pub field: String,
    pub old: Json,
    pub new: Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditAction {
    Create,
    Update,
    Delete,
    /// A soft-deleted record brought back (AIP-164).
    Undelete,
}

impl AuditAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Create => "CREATE",
            AuditAction::Update => "UPDATE",
            AuditAction::Delete => "DELETE",
            AuditAction::Undelete => "UNDELETE",
        }
    }
    fn parse(s: &str) -> Self {
        match s {
            "CREATE" => AuditAction::Create,
            "DELETE" => AuditAction::Delete,
            "UNDELETE" => AuditAction::Undelete,
            _ => AuditAction::Update,
        }
    }
    /// The event verb.
    pub fn verb(self) -> &'static str {
        match self {
            AuditAction::Create => "created",
            AuditAction::Update => "updated",
            AuditAction::Delete => "deleted",
            AuditAction::Undelete => "undeleted",
        }
    }
}

/// A stored audit record.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    pub id: Uuid,
    pub collection: String,
    pub resource_id: Uuid,
    pub action: AuditAction,
    pub actor: Uuid,
    pub time: DateTime<Utc>,
    pub changes: Vec<FieldChange>,
    pub request_id: String,
}

/// A stored ownership change.
#[derive(Debug, Clone)]
pub struct OwnershipChange {
    pub id: Uuid,
    pub collection: String,
    pub resource_id: Uuid,
    pub previous_owner: Option<Uuid>,
    pub new_owner: Option<Uuid>,
    pub actor: Uuid,
    pub time: DateTime<Utc>,
}

/// An outbox event, as written next to the change.
#[derive(Debug, Clone)]
pub struct OutboxEvent {
    pub tenant: String,
    pub id: Uuid,
    pub subject: String,
    pub collection: String,
    pub resource_id: Uuid,
    pub event_type: String,
    pub payload: Json,
    pub time: DateTime<Utc>,
    /// When the relay published it (`None`: not yet).
    pub published_time: Option<DateTime<Utc>>,
}

/// A reference field's value as resource names (`users/{id}`), as the API shows them
/// everywhere; other values, and values already named, are returned unchanged.
pub fn named_refs(kind: crate::resource::Kind, v: &Json) -> Json {
    use crate::resource::Kind;
    let name = |c: &str, v: &Json| match v.as_str().map(Uuid::try_parse) {
        Some(Ok(id)) => Json::String(format!("{c}/{id}")),
        _ => v.clone(),
    };
    match (kind, v) {
        (Kind::Ref(c), _) => name(c, v),
        (Kind::RefList(c), Json::Array(items)) => {
            Json::Array(items.iter().map(|i| name(c, i)).collect())
        }
        _ => v.clone(),
    }
}

/// What audit records and events keep of a bulk field's value ([`crate::resource::FieldSpec::bulk`]):
/// its size in bytes and its SHA-256 (null stays null).
pub fn bulk_digest(v: &Json) -> Json {
    use sha2::{Digest, Sha256};
    if v.is_null() {
        return Json::Null;
    }
    let text = match v {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    };
    serde_json::json!({
        "bytes": text.len(),
        "sha256": hex::encode(Sha256::digest(text.as_bytes())),
    })
}

/// What writes leave behind, gathered so that a bulk write inserts them many rows per
/// statement: audit records, ownership changes and outbox events.
#[derive(Default)]
pub(crate) struct Entries {
    audit: Vec<Vec<Expr>>,
    ownership: Vec<Vec<Expr>>,
    events: Vec<Vec<Expr>>,
}

const AUDIT_COLUMNS: [&str; 9] = [
    "tenant_id",
    "id",
    "collection",
    "resource_id",
    "action",
    "actor_id",
    "time",
    "changes",
    "request_id",
];
const OWNERSHIP_COLUMNS: [&str; 8] = [
    "tenant_id",
    "id",
    "collection",
    "resource_id",
    "previous_owner_id",
    "new_owner_id",
    "actor_id",
    "time",
];
const EVENT_COLUMNS: [&str; 8] = [
    "tenant_id",
    "id",
    "subject",
    "collection",
    "resource_id",
    "event_type",
    "payload",
    "time",
];

impl Entries {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn audit(
        &mut self,
        tenant: &str,
        collection: &str,
        resource_id: Uuid,
        action: AuditAction,
        actor: Uuid,
        time: DateTime<Utc>,
        changes: &[FieldChange],
        request_id: &str,
    ) -> Result<()> {
        let changes = serde_json::to_string(changes).map_err(|e| Error::internal(e.to_string()))?;
        self.audit.push(vec![
            Expr::val(tenant),
            Expr::val(new_id()),
            Expr::val(collection),
            Expr::val(resource_id),
            Expr::val(action.as_str()),
            Expr::val(actor),
            Expr::val(time),
            Expr::val(changes),
            Expr::val(request_id),
        ]);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn ownership(
        &mut self,
        tenant: &str,
        collection: &str,
        resource_id: Uuid,
        previous: Option<Uuid>,
        new: Option<Uuid>,
        actor: Uuid,
        time: DateTime<Utc>,
    ) {
        self.ownership.push(vec![
            Expr::val(tenant),
            Expr::val(new_id()),
            Expr::val(collection),
            Expr::val(resource_id),
            Expr::val(previous),
            Expr::val(new),
            Expr::val(actor),
            Expr::val(time),
        ]);
    }

    /// The event of a committed change: subject `crm.<tenant>.<collection>.<verb>`.
    pub(crate) fn event(
        &mut self,
        tenant: &str,
        collection: &str,
        resource_id: Uuid,
        action: AuditAction,
        time: DateTime<Utc>,
        payload: &Json,
    ) -> Result<()> {
        let payload = serde_json::to_string(payload).map_err(|e| Error::internal(e.to_string()))?;
        self.events.push(vec![
            Expr::val(tenant),
            Expr::val(new_id()),
            Expr::val(format!("crm.{tenant}.{collection}.{}", action.verb())),
            Expr::val(collection),
            Expr::val(resource_id),
            Expr::val(format!("{collection}.{}", action.verb())),
            Expr::val(payload),
            Expr::val(time),
        ]);
        Ok(())
    }

    /// Inserts what was gathered, many rows per statement.
    pub(crate) async fn write<C: ConnectionTrait>(self, conn: &C) -> Result<()> {
        crate::store::insert_rows(conn, "audit_records", &AUDIT_COLUMNS, self.audit).await?;
        crate::store::insert_rows(
            conn,
            "ownership_changes",
            &OWNERSHIP_COLUMNS,
            self.ownership,
        )
        .await?;
        crate::store::insert_rows(conn, "outbox_events", &EVENT_COLUMNS, self.events).await
    }
}

/// Audit records of one resource, newest first, keyset-paged by id.
pub async fn list_audit<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    collection: &str,
    resource_id: Uuid,
    before: Option<Uuid>,
    limit: u64,
) -> Result<Vec<AuditRecord>> {
    let mut q = Query::select();
    // Every column but the tenant's.
    q.columns(AUDIT_COLUMNS[1..].iter().map(|c| col(c)))
        .from(col("audit_records"))
        .and_where(Expr::col(col("tenant_id")).eq(tenant))
        .and_where(Expr::col(col("collection")).eq(collection))
        .and_where(Expr::col(col("resource_id")).eq(resource_id));
    if let Some(b) = before {
        q.and_where(Expr::col(col("id")).lt(b));
    }
    q.order_by(col("id"), Order::Desc).limit(limit);
    let rows = conn.query_all(&q).await?;
    rows.iter()
        .map(|r| {
            let changes: String = r.try_get("", "changes")?;
            Ok(AuditRecord {
                id: r.try_get("", "id")?,
                collection: r.try_get("", "collection")?,
                resource_id: r.try_get("", "resource_id")?,
                action: AuditAction::parse(&r.try_get::<String>("", "action")?),
                actor: r.try_get("", "actor_id")?,
                time: r.try_get("", "time")?,
                changes: serde_json::from_str(&changes)
                    .map_err(|e| Error::internal(format!("bad audit changes: {e}")))?,
                request_id: r.try_get("", "request_id")?,
            })
        })
        .collect()
}

/// Ownership changes of one resource, newest first.
pub async fn list_ownership<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    collection: &str,
    resource_id: Uuid,
    before: Option<Uuid>,
    limit: u64,
) -> Result<Vec<OwnershipChange>> {
    let mut q = Query::select();
    q.columns(
        [
            "id",
            "collection",
            "resource_id",
            "previous_owner_id",
            "new_owner_id",
            "actor_id",
            "time",
        ]
        .map(col),
    )
    .from(col("ownership_changes"))
    .and_where(Expr::col(col("tenant_id")).eq(tenant))
    .and_where(Expr::col(col("collection")).eq(collection))
    .and_where(Expr::col(col("resource_id")).eq(resource_id));
    if let Some(b) = before {
        q.and_where(Expr::col(col("id")).lt(b));
    }
    q.order_by(col("id"), Order::Desc).limit(limit);
    let rows = conn.query_all(&q).await?;
    rows.iter()
        .map(|r| {
            Ok(OwnershipChange {
                id: r.try_get("", "id")?,
                collection: r.try_get("", "collection")?,
                resource_id: r.try_get("", "resource_id")?,
                previous_owner: r.try_get("", "previous_owner_id")?,
                new_owner: r.try_get("", "new_owner_id")?,
                actor: r.try_get("", "actor_id")?,
                time: r.try_get("", "time")?,
            })
        })
        .collect()
}

/// Outbox events of a tenant in id order (for tests and tools; the relay and WatchEvents
/// read through [`crate::outbox`]).
pub async fn list_events<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    limit: u64,
) -> Result<Vec<OutboxEvent>> {
    let mut q = Query::select();
    q.columns(crate::outbox::COLUMNS.map(col))
        .from(col("outbox_events"))
        .and_where(Expr::col(col("tenant_id")).eq(tenant))
        .order_by(col("id"), Order::Asc)
        .limit(limit);
    let rows = conn.query_all(&q).await?;
    rows.iter().map(crate::outbox::decode).collect()
}

/// A remembered create: which request hash made which resource.
pub(crate) struct IdempotencyHit {
    pub request_hash: String,
    pub resource_id: Uuid,
}

pub(crate) async fn find_request<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    collection: &str,
    request_id: &str,
) -> Result<Option<IdempotencyHit>> {
    let mut q = Query::select();
    q.columns(["request_hash", "resource_id"].map(col))
        .from(col("idempotency_keys"))
        .and_where(Expr::col(col("tenant_id")).eq(tenant))
        .and_where(Expr::col(col("collection")).eq(collection))
        .and_where(Expr::col(col("request_id")).eq(request_id));
    match conn.query_one(&q).await? {
        Some(r) => Ok(Some(IdempotencyHit {
            request_hash: r.try_get("", "request_hash")?,
            resource_id: r.try_get("", "resource_id")?,
        })),
        None => Ok(None),
    }
}

pub(crate) async fn remember_request<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    collection: &str,
    request_id: &str,
    request_hash: &str,
    resource_id: Uuid,
    time: DateTime<Utc>,
) -> Result<()> {
    let mut q = Query::insert();
    q.into_table(col("idempotency_keys"))
        .columns(
            [
                "tenant_id",
                "collection",
                "request_id",
                "request_hash",
                "resource_id",
                "create_time",
            ]
            .map(col),
        )
        .values([
            Expr::val(tenant),
            Expr::val(collection),
            Expr::val(request_id),
            Expr::val(request_hash),
            Expr::val(resource_id),
            Expr::val(time),
        ])
        .map_err(|e| Error::internal(e.to_string()))?;
    conn.execute(&q).await?;
    Ok(())
}
