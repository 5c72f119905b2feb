//! The delivery log (`webhook_deliveries`) and the fan-out's read of subscriptions: what
//! the generic engine cannot do. Every statement names the tenant first, except the
//! retention purge and the "is any subscription active" probe, which span tenants like the
//! job claim.

use crate::model::{Delivery, DeliveryState, WebhookSubscription};
use chrono::{DateTime, Utc};
use crm_core::error::{Error, Result};
use sea_orm::sea_query::{Alias, Expr, ExprTrait, Order, Query};
use sea_orm::{ConnectionTrait, QueryResult};
use uuid::Uuid;

fn col(name: &str) -> Alias {
    Alias::new(name)
}

const TABLE: &str = "webhook_deliveries";

const COLUMNS: [&str; 19] = [
    "id",
    "subscription_id",
    "event_id",
    "event_type",
    "resource",
    "event_time",
    "replay",
    "state",
    "attempts",
    "status_code",
    "error",
    "latency_ms",
    "next_attempt_time",
    "last_attempt_time",
    "delivered_time",
    "create_time",
    "update_time",
    "tenant_id",
    "body",
];

fn decode(r: &QueryResult) -> Result<Delivery> {
    let state: String = r.try_get("", "state")?;
    Ok(Delivery {
        id: r.try_get("", "id")?,
        subscription: r.try_get("", "subscription_id")?,
        event: r.try_get("", "event_id")?,
        event_type: r.try_get("", "event_type")?,
        resource: r.try_get("", "resource")?,
        event_time: r.try_get("", "event_time")?,
        replay: r.try_get("", "replay")?,
        state: DeliveryState::parse(&state)
            .ok_or_else(|| Error::internal(format!("bad delivery state {state:?}")))?,
        attempts: r.try_get("", "attempts")?,
        status_code: r.try_get("", "status_code")?,
        error: r.try_get("", "error")?,
        latency_ms: r.try_get("", "latency_ms")?,
        next_attempt_time: r.try_get("", "next_attempt_time")?,
        last_attempt_time: r.try_get("", "last_attempt_time")?,
        delivered_time: r.try_get("", "delivered_time")?,
        create_time: r.try_get("", "create_time")?,
        update_time: r.try_get("", "update_time")?,
    })
}

/// A delivery about to be written, with its body.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub id: Uuid,
    pub subscription: Uuid,
    pub event: Uuid,
    pub event_type: String,
    pub resource: String,
    pub event_time: DateTime<Utc>,
    pub body: String,
    pub replay: bool,
}

/// Writes new PENDING deliveries due at `now`.
pub async fn insert<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    items: &[NewDelivery],
    now: DateTime<Utc>,
) -> Result<()> {
    for chunk in items.chunks(200) {
        let mut q = Query::insert();
        q.into_table(col(TABLE)).columns(COLUMNS.map(col));
        for d in chunk {
            q.values([
                d.id.into(),
                d.subscription.into(),
                d.event.into(),
                d.event_type.clone().into(),
                d.resource.clone().into(),
                d.event_time.into(),
                d.replay.into(),
                DeliveryState::Pending.as_str().into(),
                0i64.into(),
                0i64.into(),
                String::new().into(),
                0i64.into(),
                Some(now).into(),
                None::<DateTime<Utc>>.into(),
                None::<DateTime<Utc>>.into(),
                now.into(),
                now.into(),
                tenant.into(),
                d.body.clone().into(),
            ])
            .map_err(|e| Error::internal(e.to_string()))?;
        }
        conn.execute(&q).await?;
    }
    Ok(())
}

/// A delivery and its body.
pub async fn get<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    id: Uuid,
) -> Result<Option<(Delivery, String)>> {
    let mut q = Query::select();
    q.columns(COLUMNS.map(col))
        .from(col(TABLE))
        .and_where(Expr::col(col("tenant_id")).eq(tenant))
        .and_where(Expr::col(col("id")).eq(id));
    match conn.query_one(&q).await? {
        Some(r) => Ok(Some((decode(&r)?, r.try_get("", "body")?))),
        None => Ok(None),
    }
}

/// A subscription's deliveries, newest first, below `before` (a delivery id), up to
/// `limit`, optionally in one state.
pub async fn list<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    subscription: Uuid,
    state: Option<DeliveryState>,
    before: Option<Uuid>,
    limit: u64,
) -> Result<Vec<Delivery>> {
    let mut q = Query::select();
    q.columns(COLUMNS.map(col))
        .from(col(TABLE))
        .and_where(Expr::col(col("tenant_id")).eq(tenant))
        .and_where(Expr::col(col("subscription_id")).eq(subscription));
    if let Some(s) = state {
        q.and_where(Expr::col(col("state")).eq(s.as_str()));
    }
    if let Some(b) = before {
        q.and_where(Expr::col(col("id")).lt(b));
    }
    q.order_by(col("id"), Order::Desc).limit(limit);
    conn.query_all(&q).await?.iter().map(decode).collect()
}

/// The outcome of one attempt, as recorded.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub state: DeliveryState,
    pub status_code: i64,
    pub error: String,
    pub latency_ms: i64,
    pub now: DateTime<Utc>,
    pub next_attempt_time: Option<DateTime<Utc>>,
}

/// Records an attempt of a PENDING delivery that had made `attempts_before` attempts;
/// false when the delivery moved meanwhile (another runner recorded it, a redelivery).
pub async fn record_attempt<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    id: Uuid,
    attempts_before: i64,
    a: &AttemptRecord,
) -> Result<bool> {
    let mut q = Query::update();
    q.table(col(TABLE))
        .value(col("state"), a.state.as_str())
        .value(col("attempts"), attempts_before + 1)
        .value(col("status_code"), a.status_code)
        .value(col("error"), crm_core::error::clip(&a.error, 1000))
        .value(col("latency_ms"), a.latency_ms)
        .value(col("next_attempt_time"), a.next_attempt_time)
        .value(col("last_attempt_time"), Some(a.now))
        .value(
            col("delivered_time"),
            (a.state == DeliveryState::Delivered).then_some(a.now),
        )
        .value(col("update_time"), a.now)
        .and_where(Expr::col(col("tenant_id")).eq(tenant))
        .and_where(Expr::col(col("id")).eq(id))
        .and_where(Expr::col(col("state")).eq(DeliveryState::Pending.as_str()))
        .and_where(Expr::col(col("attempts")).eq(attempts_before));
    Ok(conn.execute(&q).await?.rows_affected() == 1)
}

/// Marks a PENDING delivery dead without an attempt (its subscription was switched off).
pub async fn bury<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    id: Uuid,
    error: &str,
    now: DateTime<Utc>,
) -> Result<bool> {
    let mut q = Query::update();
    q.table(col(TABLE))
        .value(col("state"), DeliveryState::Dead.as_str())
        .value(col("error"), error)
        .value(col("next_attempt_time"), None::<DateTime<Utc>>)
        .value(col("update_time"), now)
        .and_where(Expr::col(col("tenant_id")).eq(tenant))
        .and_where(Expr::col(col("id")).eq(id))
        .and_where(Expr::col(col("state")).eq(DeliveryState::Pending.as_str()));
    Ok(conn.execute(&q).await?.rows_affected() == 1)
}

/// Turns DEAD deliveries of a subscription (all, or only `only`) back into PENDING ones
/// with a fresh attempt budget, due at `now`; at most `limit`; returns their ids.
pub async fn revive<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    subscription: Uuid,
    only: Option<Uuid>,
    now: DateTime<Utc>,
    limit: u64,
) -> Result<Vec<Uuid>> {
    let mut sel = Query::select();
    sel.column(col("id"))
        .from(col(TABLE))
        .and_where(Expr::col(col("tenant_id")).eq(tenant))
        .and_where(Expr::col(col("subscription_id")).eq(subscription))
        .and_where(Expr::col(col("state")).eq(DeliveryState::Dead.as_str()));
    if let Some(id) = only {
        sel.and_where(Expr::col(col("id")).eq(id));
    }
    sel.order_by(col("id"), Order::Asc).limit(limit);
    let ids: Vec<Uuid> = conn
        .query_all(&sel)
        .await?
        .iter()
        .map(|r| r.try_get("", "id"))
        .collect::<std::result::Result<_, _>>()?;
    for chunk in ids.chunks(500) {
        let mut q = Query::update();
        q.table(col(TABLE))
            .value(col("state"), DeliveryState::Pending.as_str())
            .value(col("attempts"), 0i64)
            .value(col("next_attempt_time"), Some(now))
            .value(col("update_time"), now)
            .and_where(Expr::col(col("tenant_id")).eq(tenant))
            .and_where(Expr::col(col("id")).is_in(chunk.iter().copied()))
            .and_where(Expr::col(col("state")).eq(DeliveryState::Dead.as_str()));
        conn.execute(&q).await?;
    }
    Ok(ids)
}

/// A subscription as the fan-out needs it.
#[derive(Debug, Clone)]
pub struct Target {
    pub id: Uuid,
    pub filter: WebhookSubscription,
    /// Events written before this are not delivered (only replayed).
    pub activate_time: DateTime<Utc>,
}

/// The tenant's active subscriptions (as the system).
pub async fn active_targets<C: ConnectionTrait>(conn: &C, tenant: &str) -> Result<Vec<Target>> {
    let mut q = Query::select();
    q.columns(["id", "resource_types", "verbs", "activate_time"].map(col))
        .from(col("webhook_subscriptions"))
        .and_where(Expr::col(col("tenant_id")).eq(tenant))
        .and_where(Expr::col(col("active")).eq(true))
        .and_where(Expr::col(col("delete_time")).is_null());
    let mut out = Vec::new();
    for r in conn.query_all(&q).await? {
        let activate_time: Option<DateTime<Utc>> = r.try_get("", "activate_time")?;
        let Some(activate_time) = activate_time else {
            continue;
        };
        let list = |c: &str| -> Result<Vec<String>> {
            let t: String = r.try_get("", c)?;
            serde_json::from_str(&t)
                .map_err(|e| Error::internal(format!("bad webhook subscription {c}: {e}")))
        };
        out.push(Target {
            id: r.try_get("", "id")?,
            filter: WebhookSubscription {
                resource_types: list("resource_types")?,
                verbs: list("verbs")?,
                ..Default::default()
            },
            activate_time,
        });
    }
    Ok(out)
}

/// Whether any tenant has an active subscription.
pub async fn any_active<C: ConnectionTrait>(conn: &C) -> Result<bool> {
    let mut q = Query::select();
    q.column(col("id"))
        .from(col("webhook_subscriptions"))
        .and_where(Expr::col(col("active")).eq(true))
        .and_where(Expr::col(col("delete_time")).is_null())
        .limit(1);
    Ok(conn.query_one(&q).await?.is_some())
}

/// Deletes up to `limit` finished (DELIVERED or DEAD) deliveries last changed before
/// `before`; returns how many.
pub async fn prune(db: &crm_core::db::Db, before: DateTime<Utc>, limit: u64) -> Result<u64> {
    let mut old = Query::select();
    old.columns([col("tenant_id"), col("id")])
        .from(col(TABLE))
        .and_where(Expr::col(col("state")).ne(DeliveryState::Pending.as_str()))
        .and_where(Expr::col(col("update_time")).lt(before))
        .limit(Ord::max(limit, 1));
    let mut q = Query::delete();
    q.from_table(col(TABLE)).and_where(
        Expr::tuple([Expr::col(col("tenant_id")), Expr::col(col("id"))]).in_subquery(old),
    );
    db.within(db.timeout(), async {
        let tx = db.begin_write().await?;
        let n = tx.txn.execute(&q).await?.rows_affected();
        tx.commit().await?;
        Ok(n)
    })
    .await
}
