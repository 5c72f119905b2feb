//! The outbox (P1) as its readers see it: the relay's claims (publish, mark, prune) and the
//! reads of WatchEvents. The rows are written by [`crate::journal`] in the transaction of
//! the change they describe, so a rolled-back change leaves none.
//!
//! **Claims.** A relay claims a batch of unpublished events, publishes them, marks those the
//! broker acknowledged and commits:
//!
//! ```sql
//! SELECT <columns> FROM outbox_events e
//!  WHERE published_time IS NULL
//!    AND NOT EXISTS (SELECT 1 FROM outbox_events p
//!                     WHERE p.tenant_id = e.tenant_id AND p.resource_id = e.resource_id
//!                       AND p.published_time IS NULL AND p.id < e.id)
//!  ORDER BY id LIMIT $n
//!    FOR UPDATE SKIP LOCKED          -- PostgreSQL
//! ```
//!
//! On PostgreSQL relays of several replicas skip each other's claimed rows. The `NOT EXISTS`
//! keeps each record's events in order across relays: only a record's *earliest*
//! unpublished event can be claimed, and the next one only after the earlier one was marked
//! published (its claim committed). Rows another relay holds locked still count as
//! unpublished in the subquery (it does not lock), so no relay publishes a record's second
//! event while another is still publishing its first. A batch therefore holds at most one
//! event per record, and an event that failed to publish holds back its record's later ones.
//! SQLite has one writer: run one relay per database file; it reads without a transaction
//! and marks under the writer lock.

use crate::db::Db;
use crate::error::{Error, Result};
use crate::journal::OutboxEvent;
use crate::store::col;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{
    Alias, Expr, ExprTrait, LockBehavior, LockType, Order, Query, SelectStatement,
};
use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend, QueryResult, TransactionTrait};
use std::sync::OnceLock;
use tokio::sync::Notify;
use uuid::Uuid;

pub(crate) const COLUMNS: [&str; 9] = [
    "tenant_id",
    "id",
    "subject",
    "collection",
    "resource_id",
    "event_type",
    "payload",
    "time",
    "published_time",
];

fn wake_signal() -> &'static Notify {
    static WAKE: OnceLock<Notify> = OnceLock::new();
    WAKE.get_or_init(Notify::new)
}

fn fanout_signal() -> &'static Notify {
    static WAKE: OnceLock<Notify> = OnceLock::new();
    WAKE.get_or_init(Notify::new)
}

/// Tells this process's relay and webhook fan-out that a write with events committed
/// (called by [`crate::service::Tx::commit`]); those of other processes find it by polling.
pub fn wake() {
    wake_signal().notify_one();
    fanout_signal().notify_one();
}

/// Waits until [`wake`] was called (since the last wait returned): the webhook fan-out's
/// side of it.
pub async fn fanout_woken() {
    fanout_signal().notified().await;
}

/// Waits until [`wake`] was called (since the last wait returned).
pub async fn woken() {
    wake_signal().notified().await;
}

pub(crate) fn decode(r: &QueryResult) -> Result<OutboxEvent> {
    let payload: String = r.try_get("", "payload")?;
    Ok(OutboxEvent {
        tenant: r.try_get("", "tenant_id")?,
        id: r.try_get("", "id")?,
        subject: r.try_get("", "subject")?,
        collection: r.try_get("", "collection")?,
        resource_id: r.try_get("", "resource_id")?,
        event_type: r.try_get("", "event_type")?,
        payload: serde_json::from_str(&payload)
            .map_err(|e| Error::internal(format!("bad event payload: {e}")))?,
        time: r.try_get("", "time")?,
        published_time: r.try_get("", "published_time")?,
    })
}

/// The claim statement (see the module documentation).
fn claim_query(limit: u64) -> SelectStatement {
    let e = col("outbox_events");
    let p = Alias::new("p");
    let mut earlier = Query::select();
    earlier
        .expr(Expr::val(1))
        .from_as(col("outbox_events"), p.clone())
        .and_where(Expr::col((p.clone(), col("tenant_id"))).equals((e.clone(), col("tenant_id"))))
        .and_where(
            Expr::col((p.clone(), col("resource_id"))).equals((e.clone(), col("resource_id"))),
        )
        .and_where(Expr::col((p.clone(), col("published_time"))).is_null())
        .and_where(Expr::col((p, col("id"))).lt(Expr::col((e.clone(), col("id")))));
    let mut q = Query::select();
    q.columns(COLUMNS.map(|c| (e.clone(), col(c))))
        .from(e.clone())
        .and_where(Expr::col((e.clone(), col("published_time"))).is_null())
        .and_where(Expr::exists(earlier).not())
        .order_by((e, col("id")), Order::Asc)
        .limit(limit)
        .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
    q
}

/// A batch of unpublished events claimed by a relay: on PostgreSQL the rows stay locked
/// (skipped by other relays) until [`Claim::finish`] or until the claim is dropped (rolled
/// back: the rows wait for the next claim).
pub struct Claim {
    txn: Option<DatabaseTransaction>,
    /// The claimed events, oldest first; at most one per record.
    pub events: Vec<OutboxEvent>,
}

/// Claims up to `limit` unpublished events (see the module documentation).
pub async fn claim(db: &Db, limit: u64) -> Result<Claim> {
    let q = claim_query(Ord::max(limit, 1));
    if db.backend() == DbBackend::Postgres {
        let txn = db.conn.begin().await?;
        let rows = db
            .within(db.timeout(), async { Ok(txn.query_all(&q).await?) })
            .await?;
        let events = rows.iter().map(decode).collect::<Result<Vec<_>>>()?;
        Ok(Claim {
            txn: Some(txn),
            events,
        })
    } else {
        let rows = db
            .within(db.timeout(), async { Ok(db.conn.query_all(&q).await?) })
            .await?;
        let events = rows.iter().map(decode).collect::<Result<Vec<_>>>()?;
        Ok(Claim { txn: None, events })
    }
}

async fn mark<C: ConnectionTrait>(conn: &C, ids: &[Uuid], now: DateTime<Utc>) -> Result<()> {
    for chunk in ids.chunks(1000) {
        let mut q = Query::update();
        q.table(col("outbox_events"))
            .value(col("published_time"), now)
            .and_where(Expr::col(col("id")).is_in(chunk.iter().copied()))
            .and_where(Expr::col(col("published_time")).is_null());
        conn.execute(&q).await?;
    }
    Ok(())
}

impl Claim {
    /// Marks `published` (ids of this claim's events the broker acknowledged) as published
    /// at `now` and ends the claim; the other events wait for the next claim.
    pub async fn finish(self, db: &Db, published: &[Uuid], now: DateTime<Utc>) -> Result<()> {
        match self.txn {
            Some(txn) => {
                db.within(db.timeout(), async {
                    mark(&txn, published, now).await?;
                    txn.commit().await?;
                    Ok(())
                })
                .await
            }
            None => {
                if published.is_empty() {
                    return Ok(());
                }
                db.within(db.timeout(), async {
                    let tx = db.begin_write().await?;
                    mark(&tx.txn, published, now).await?;
                    tx.commit().await
                })
                .await
            }
        }
    }
}

/// A batch of events the webhook fan-out has not taken yet, claimed in a write transaction:
/// the fan-out writes its deliveries on [`FanoutClaim::conn`] and [`FanoutClaim::finish`]
/// marks the events taken (`webhook_time`) and commits both together, so an event becomes
/// deliveries exactly once. On PostgreSQL fan-outs of several replicas skip each other's
/// claimed rows (`FOR UPDATE SKIP LOCKED`); on SQLite the claim holds the writer's turn.
/// Dropping the claim rolls it back: the events wait for the next one.
pub struct FanoutClaim {
    tx: crate::db::WriteTxn,
    /// The claimed events, oldest first.
    pub events: Vec<OutboxEvent>,
}

fn fanout_query(limit: u64) -> SelectStatement {
    let mut q = Query::select();
    q.columns(COLUMNS.map(col))
        .from(col("outbox_events"))
        .and_where(Expr::col(col("webhook_time")).is_null())
        .order_by(col("id"), Order::Asc)
        .limit(limit)
        .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
    q
}

/// Claims up to `limit` events the webhook fan-out has not taken (see [`FanoutClaim`]).
pub async fn claim_fanout(db: &Db, limit: u64) -> Result<FanoutClaim> {
    let q = fanout_query(Ord::max(limit, 1));
    db.within(db.timeout(), async {
        let tx = db.begin_write().await?;
        let rows = tx.txn.query_all(&q).await?;
        let events = rows.iter().map(decode).collect::<Result<Vec<_>>>()?;
        Ok(FanoutClaim { tx, events })
    })
    .await
}

impl FanoutClaim {
    /// The claim's transaction, for the writes that go with it.
    pub fn conn(&self) -> &DatabaseTransaction {
        &self.tx.txn
    }

    /// Marks every claimed event taken at `now` and commits.
    pub async fn finish(self, db: &Db, now: DateTime<Utc>) -> Result<()> {
        let ids: Vec<Uuid> = self.events.iter().map(|e| e.id).collect();
        db.within(db.timeout(), async {
            for chunk in ids.chunks(1000) {
                let mut q = Query::update();
                q.table(col("outbox_events"))
                    .value(col("webhook_time"), now)
                    .and_where(Expr::col(col("id")).is_in(chunk.iter().copied()))
                    .and_where(Expr::col(col("webhook_time")).is_null());
                self.tx.txn.execute(&q).await?;
            }
            self.tx.commit().await
        })
        .await
    }
}

/// The event `id` of `tenant`, if it is still kept.
pub async fn event<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    id: Uuid,
) -> Result<Option<OutboxEvent>> {
    let mut q = Query::select();
    q.columns(COLUMNS.map(col))
        .from(col("outbox_events"))
        .and_where(Expr::col(col("tenant_id")).eq(tenant))
        .and_where(Expr::col(col("id")).eq(id));
    conn.query_one(&q).await?.as_ref().map(decode).transpose()
}

/// Deletes up to `limit` events published before `before` (and, with `unpublished`, also
/// events never published that were written before it: for deployments without a relay);
/// returns how many were deleted.
pub async fn prune(db: &Db, before: DateTime<Utc>, unpublished: bool, limit: u64) -> Result<u64> {
    let mut old = Query::select();
    old.columns([col("tenant_id"), col("id")])
        .from(col("outbox_events"));
    if unpublished {
        // By the id's time: made by the writer's system clock, like `before`.
        old.and_where(Expr::col(col("id")).lt(id_floor(before)));
    } else {
        old.and_where(Expr::col(col("published_time")).lt(before));
    }
    old.limit(Ord::max(limit, 1));
    let mut q = Query::delete();
    q.from_table(col("outbox_events")).and_where(
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

/// How many events wait to be published (all tenants).
pub async fn pending<C: ConnectionTrait>(conn: &C) -> Result<u64> {
    let mut q = Query::select();
    q.expr_as(Expr::col(col("id")).count(), col("n"))
        .from(col("outbox_events"))
        .and_where(Expr::col(col("published_time")).is_null());
    let n: i64 = match conn.query_one(&q).await? {
        Some(r) => r.try_get("", "n")?,
        None => 0,
    };
    Ok(u64::try_from(n).unwrap_or(0))
}

/// What a watcher asks for.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Collections to include (none: nothing).
    pub collections: Vec<String>,
    /// Verbs (`created`, ...) to include; empty: all.
    pub verbs: Vec<String>,
}

/// Events of `tenant` with an id above `after`, oldest first, up to `limit`.
pub async fn events_after<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    after: Uuid,
    filter: &EventFilter,
    limit: u64,
) -> Result<Vec<OutboxEvent>> {
    if filter.collections.is_empty() {
        return Ok(vec![]);
    }
    let mut q = Query::select();
    q.columns(COLUMNS.map(col))
        .from(col("outbox_events"))
        .and_where(Expr::col(col("tenant_id")).eq(tenant))
        .and_where(Expr::col(col("id")).gt(after));
    if filter.verbs.is_empty() {
        q.and_where(
            Expr::col(col("collection")).is_in(filter.collections.iter().map(String::as_str)),
        );
    } else {
        let types: Vec<String> = filter
            .collections
            .iter()
            .flat_map(|c| filter.verbs.iter().map(move |v| format!("{c}.{v}")))
            .collect();
        q.and_where(Expr::col(col("event_type")).is_in(types));
    }
    q.order_by(col("id"), Order::Asc).limit(limit);
    conn.query_all(&q).await?.iter().map(decode).collect()
}

/// Whether `tenant` has an event `id` (still kept).
pub async fn event_exists<C: ConnectionTrait>(conn: &C, tenant: &str, id: Uuid) -> Result<bool> {
    let mut q = Query::select();
    q.column(col("id"))
        .from(col("outbox_events"))
        .and_where(Expr::col(col("tenant_id")).eq(tenant))
        .and_where(Expr::col(col("id")).eq(id));
    Ok(conn.query_one(&q).await?.is_some())
}

/// The start of the oldest transaction that is writing to the database now (PostgreSQL:
/// `pg_stat_activity`, the transactions with a transaction id, i.e. that wrote something;
/// `None` when none is, and always on SQLite, whose one writer commits its events in id
/// order). An event's id is made when its outbox row is written, after its record's row,
/// so an event not visible yet belongs to such a transaction and its id is not older than
/// this start (up to the clock difference between the gateway and the database): a reader
/// following the outbox by id looks again from here, and misses nothing committed late.
/// Sessions of other database roles are seen only with `pg_read_all_stats`: every replica
/// should connect as the same role.
pub async fn write_horizon(db: &Db) -> Result<Option<DateTime<Utc>>> {
    if db.backend() != DbBackend::Postgres {
        return Ok(None);
    }
    let row = db
        .conn
        .query_one_raw(sea_orm::Statement::from_string(
            DbBackend::Postgres,
            "SELECT min(xact_start) AS t FROM pg_stat_activity \
             WHERE datname = current_database() AND backend_xid IS NOT NULL",
        ))
        .await?;
    Ok(match row {
        Some(r) => r.try_get::<Option<DateTime<Utc>>>("", "t")?,
        None => None,
    })
}

/// The smallest UUIDv7 of a millisecond: every id made at or after `t` sorts above it.
pub fn id_floor(t: DateTime<Utc>) -> Uuid {
    let ms = u64::try_from(t.timestamp_millis()).unwrap_or(0);
    let mut b = [0u8; 16];
    b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    b[6] = 0x70;
    b[8] = 0x80;
    Uuid::from_bytes(b)
}

/// The time a UUIDv7 was made (the epoch for other ids).
pub fn id_time(id: Uuid) -> DateTime<Utc> {
    let b = id.as_bytes();
    let mut ms = [0u8; 8];
    ms[2..].copy_from_slice(&b[..6]);
    let ms = i64::try_from(u64::from_be_bytes(ms)).unwrap_or(0);
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn id_floor_sorts_below_ids_of_its_millisecond_and_above_earlier_ones() {
        let id = Uuid::now_v7();
        let t = id_time(id);
        assert!(id_floor(t) <= id);
        assert!(id_floor(t + chrono::Duration::milliseconds(1)) > id);
        assert_eq!(id_time(id_floor(t)), t);
    }

    #[test]
    fn the_claim_skips_locked_rows_and_waits_for_earlier_events_of_a_record() {
        use sea_orm::sea_query::PostgresQueryBuilder;
        let sql = claim_query(10).to_string(PostgresQueryBuilder);
        assert!(sql.contains("NOT EXISTS"), "{sql}");
        assert!(sql.ends_with("FOR UPDATE SKIP LOCKED"), "{sql}");
        assert!(sql.contains(r#""p"."id" < "outbox_events"."id""#), "{sql}");
    }
}
