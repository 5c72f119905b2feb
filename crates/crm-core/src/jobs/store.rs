//! The SQL of jobs, built with sea-query. Statements that find jobs by id take the tenant
//! first; the runner's claim and retention purge are the only statements that span tenants.

use super::rules::{JobError, JobState};
use super::{Job, Progress};
use crate::db::Db;
use crate::error::{Error, ErrorKind, Result};
use crate::store::col;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{
    Expr, ExprTrait, LockBehavior, LockType, Order, Query, SelectStatement, UpdateStatement,
};
use sea_orm::{ConnectionTrait, DbBackend, QueryResult, StatementBuilder};
use serde_json::Value as Json;
use std::collections::HashSet;
use uuid::Uuid;

/// Every column, in the order [`decode`] reads them.
const COLUMNS: [&str; 23] = [
    "tenant_id",
    "id",
    "kind",
    "payload",
    "dedupe_key",
    "collection",
    "creator_id",
    "state",
    "due_time",
    "wake_time",
    "attempts",
    "max_attempts",
    "error_code",
    "last_error",
    "lease_owner",
    "lease_deadline",
    "cancel_requested",
    "result",
    "progress",
    "checkpoint",
    "create_time",
    "update_time",
    "finish_time",
];

/// The states of a finished job.
pub(crate) const DONE: [JobState; 3] = [JobState::Succeeded, JobState::Failed, JobState::Cancelled];

/// A state as an SQL literal rather than a bound value: the partial indexes' predicates name
/// states literally, and a planner can only use such an index when the query's condition
/// provably implies the predicate (PostgreSQL's generic plans cannot see bound values).
pub(crate) fn state_literal(s: JobState) -> Expr {
    Expr::Constant(s.as_str().into())
}

/// `SELECT <every column> FROM jobs`.
pub(crate) fn select() -> SelectStatement {
    let mut q = Query::select();
    q.columns(COLUMNS.map(col)).from(col("jobs"));
    q
}

fn parse_json(column: &str, text: Option<String>) -> Result<Option<Json>> {
    text.map(|t| {
        serde_json::from_str(&t).map_err(|e| Error::internal(format!("bad job {column}: {e}")))
    })
    .transpose()
}

pub(crate) fn decode(r: &QueryResult) -> Result<Job> {
    let state: String = r.try_get("", "state")?;
    let error = match (
        r.try_get::<Option<String>>("", "error_code")?,
        r.try_get::<Option<String>>("", "last_error")?,
    ) {
        (Some(code), message) => Some(JobError {
            code,
            message: message.unwrap_or_default(),
        }),
        (None, Some(message)) => Some(JobError {
            code: "UNKNOWN".into(),
            message,
        }),
        (None, None) => None,
    };
    let progress = match parse_json("progress", r.try_get("", "progress")?)? {
        Some(v) => Some(
            serde_json::from_value::<Progress>(v)
                .map_err(|e| Error::internal(format!("bad job progress: {e}")))?,
        ),
        None => None,
    };
    let collection: String = r.try_get("", "collection")?;
    let count = |c: &str| -> Result<u32> {
        Ok(u32::try_from(std::cmp::Ord::max(r.try_get::<i64>("", c)?, 0)).unwrap_or(u32::MAX))
    };
    Ok(Job {
        tenant: r.try_get("", "tenant_id")?,
        id: r.try_get("", "id")?,
        kind: r.try_get("", "kind")?,
        payload: parse_json("payload", Some(r.try_get("", "payload")?))?.unwrap_or(Json::Null),
        dedupe_key: r.try_get("", "dedupe_key")?,
        collection: (!collection.is_empty()).then_some(collection),
        creator: r.try_get("", "creator_id")?,
        state: JobState::parse(&state)
            .ok_or_else(|| Error::internal(format!("bad job state {state:?}")))?,
        due_time: r.try_get("", "due_time")?,
        attempts: count("attempts")?,
        max_attempts: count("max_attempts")?,
        error,
        lease_owner: r.try_get("", "lease_owner")?,
        lease_deadline: r.try_get("", "lease_deadline")?,
        cancel_requested: r.try_get("", "cancel_requested")?,
        result: parse_json("result", r.try_get("", "result")?)?,
        progress,
        checkpoint: parse_json("checkpoint", r.try_get("", "checkpoint")?)?,
        create_time: r.try_get("", "create_time")?,
        update_time: r.try_get("", "update_time")?,
        finish_time: r.try_get("", "finish_time")?,
    })
}

/// Runs a writing statement; on SQLite in a write transaction (the writer's turn), on
/// PostgreSQL as a statement of its own. Like every statement of the runner it is bounded by
/// the pool's statement timeout ([`Db::within`]): a database that stops answering (a network
/// partition) makes it fail with UNAVAILABLE instead of hanging the runner.
async fn exec<S: StatementBuilder>(db: &Db, stmt: &S) -> Result<u64> {
    db.within(db.timeout(), async {
        if db.backend() == DbBackend::Postgres {
            return Ok(db.conn.execute(stmt).await?.rows_affected());
        }
        let tx = db.begin_write().await?;
        let n = tx.txn.execute(stmt).await?.rows_affected();
        tx.commit().await?;
        Ok(n)
    })
    .await
}

/// [`exec`] for a statement with RETURNING.
async fn query<S: StatementBuilder>(db: &Db, stmt: &S) -> Result<Vec<QueryResult>> {
    db.within(db.timeout(), async {
        if db.backend() == DbBackend::Postgres {
            return Ok(db.conn.query_all(stmt).await?);
        }
        let tx = db.begin_write().await?;
        let rows = tx.txn.query_all(stmt).await?;
        tx.commit().await?;
        Ok(rows)
    })
    .await
}

/// Claims up to `limit` jobs of the given kinds that are due (QUEUED with `wake_time <= now`)
/// or whose lease expired (RUNNING with `wake_time <= now`), oldest first, for `owner` until
/// `deadline`, in one statement:
///
/// ```sql
/// UPDATE jobs SET state = 'RUNNING', lease_owner = $owner, lease_deadline = $deadline,
///        wake_time = $deadline, attempts = attempts + 1, update_time = $now
///  WHERE (tenant_id, id) IN (SELECT tenant_id, id FROM jobs
///         WHERE state IN ('QUEUED', 'RUNNING') AND wake_time <= $now AND kind IN ($kinds)
///         ORDER BY wake_time LIMIT $n FOR UPDATE SKIP LOCKED)
/// RETURNING <every column>
/// ```
///
/// On PostgreSQL concurrent claims skip each other's rows; SQLite runs it under the writer
/// lock, one claim at a time.
pub(crate) async fn claim(
    db: &Db,
    kinds: &[String],
    owner: &str,
    now: DateTime<Utc>,
    deadline: DateTime<Utc>,
    limit: u64,
) -> Result<Vec<Job>> {
    if kinds.is_empty() || limit == 0 {
        return Ok(vec![]);
    }
    let mut due = Query::select();
    due.columns([col("tenant_id"), col("id")])
        .from(col("jobs"))
        .and_where(Expr::col(col("state")).is_in([
            state_literal(JobState::Queued),
            state_literal(JobState::Running),
        ]))
        .and_where(Expr::col(col("wake_time")).lte(now))
        .and_where(Expr::col(col("kind")).is_in(kinds.iter().map(String::as_str)))
        .order_by(col("wake_time"), Order::Asc)
        .limit(limit)
        .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
    let mut q = Query::update();
    q.table(col("jobs"))
        .value(col("state"), JobState::Running.as_str())
        .value(col("lease_owner"), owner)
        .value(col("lease_deadline"), deadline)
        .value(col("wake_time"), deadline)
        .value(col("attempts"), Expr::col(col("attempts")).add(1))
        .value(col("update_time"), now)
        .and_where(
            Expr::tuple([Expr::col(col("tenant_id")), Expr::col(col("id"))]).in_subquery(due),
        )
        .returning(Query::returning().columns(COLUMNS.map(col)));
    query(db, &q).await?.iter().map(decode).collect()
}

/// The lease an attempt holds: the job, the runner and the attempt's number (claims bump it,
/// so an earlier attempt of the same runner cannot write over a later one).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Lease {
    pub tenant: String,
    pub id: Uuid,
    pub attempt: u32,
}

/// `UPDATE jobs ... WHERE` the lease still holds.
fn held(q: &mut UpdateStatement, owner: &str, l: &Lease) {
    q.and_where(Expr::col(col("tenant_id")).eq(l.tenant.as_str()))
        .and_where(Expr::col(col("id")).eq(l.id))
        .and_where(Expr::col(col("lease_owner")).eq(owner))
        .and_where(Expr::col(col("attempts")).eq(i64::from(l.attempt)))
        .and_where(Expr::col(col("state")).eq(JobState::Running.as_str()));
}

/// Records the same result for several attempts of `owner` in one statement; returns the
/// jobs whose lease still held (the others were claimed by someone else meanwhile).
pub(crate) async fn succeed_many(
    db: &Db,
    owner: &str,
    now: DateTime<Utc>,
    result: Option<&str>,
    leases: &[Lease],
) -> Result<HashSet<(String, Uuid)>> {
    let mut q = Query::update();
    q.table(col("jobs"))
        .value(col("state"), JobState::Succeeded.as_str())
        .value(col("result"), result)
        .value(col("error_code"), None::<String>)
        .value(col("last_error"), None::<String>)
        .value(col("wake_time"), None::<DateTime<Utc>>)
        .value(col("lease_deadline"), None::<DateTime<Utc>>)
        .value(col("finish_time"), now)
        .value(col("update_time"), now)
        .and_where(Expr::col(col("lease_owner")).eq(owner))
        .and_where(Expr::col(col("state")).eq(JobState::Running.as_str()))
        .and_where(
            Expr::tuple([
                Expr::col(col("tenant_id")),
                Expr::col(col("id")),
                Expr::col(col("attempts")),
            ])
            .in_tuples(
                leases
                    .iter()
                    .map(|l| (l.tenant.clone(), l.id, i64::from(l.attempt))),
            ),
        )
        .returning(Query::returning().columns([col("tenant_id"), col("id")]));
    query(db, &q)
        .await?
        .iter()
        .map(|r| Ok((r.try_get("", "tenant_id")?, r.try_get("", "id")?)))
        .collect()
}

/// Ends an attempt FAILED or CANCELLED with its error; false if the lease was lost.
pub(crate) async fn end(
    db: &Db,
    owner: &str,
    lease: &Lease,
    now: DateTime<Utc>,
    state: JobState,
    error: &JobError,
) -> Result<bool> {
    let mut q = Query::update();
    q.table(col("jobs"))
        .value(col("state"), state.as_str())
        .value(col("error_code"), error.code.as_str())
        .value(col("last_error"), error.message.as_str())
        .value(col("wake_time"), None::<DateTime<Utc>>)
        .value(col("lease_deadline"), None::<DateTime<Utc>>)
        .value(col("finish_time"), now)
        .value(col("update_time"), now);
    held(&mut q, owner, lease);
    Ok(exec(db, &q).await? == 1)
}

/// What [`requeue`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Requeued {
    Queued,
    /// Cancel had been requested: the job is CANCELLED instead.
    Cancelled,
    /// A newer pending job with the same dedupe key exists: this one is CANCELLED.
    Superseded,
    /// The lease was lost; nothing was written.
    Lost,
}

/// How a job goes back to the queue.
pub(crate) struct Requeue<'a> {
    /// When it is due again; `None` keeps its due time and makes it claimable at once.
    pub at: Option<DateTime<Utc>>,
    /// Whether the attempt counts against `max_attempts`.
    pub counts: bool,
    pub error: Option<&'a JobError>,
}

/// Puts a running job back to QUEUED (a retry, a postponement, a release at shutdown).
pub(crate) async fn requeue(
    db: &Db,
    owner: &str,
    lease: &Lease,
    now: DateTime<Utc>,
    how: Requeue<'_>,
) -> Result<Requeued> {
    let mut q = Query::update();
    q.table(col("jobs"))
        .value(col("state"), JobState::Queued.as_str())
        .value(col("wake_time"), how.at.unwrap_or(now))
        .value(col("lease_deadline"), None::<DateTime<Utc>>)
        .value(col("update_time"), now);
    if let Some(at) = how.at {
        q.value(col("due_time"), at);
    }
    if !how.counts {
        q.value(col("attempts"), Expr::col(col("attempts")).sub(1));
    }
    if let Some(e) = how.error {
        q.value(col("error_code"), e.code.as_str())
            .value(col("last_error"), e.message.as_str());
    }
    held(&mut q, owner, lease);
    q.and_where(Expr::col(col("cancel_requested")).eq(false));
    let cancelled = |message: &str| JobError::new("CANCELLED", message);
    match exec(db, &q).await {
        Ok(1) => Ok(Requeued::Queued),
        Ok(_) => {
            let e = cancelled("the job was cancelled");
            Ok(
                if end(db, owner, lease, now, JobState::Cancelled, &e).await? {
                    Requeued::Cancelled
                } else {
                    Requeued::Lost
                },
            )
        }
        Err(e) if e.kind == ErrorKind::AlreadyExists => {
            let e = cancelled("superseded by a newer pending job with the same dedupe key");
            Ok(
                if end(db, owner, lease, now, JobState::Cancelled, &e).await? {
                    Requeued::Superseded
                } else {
                    Requeued::Lost
                },
            )
        }
        Err(e) => Err(e),
    }
}

/// What a running handler saves with its lease renewal.
#[derive(Debug, Default)]
pub(crate) struct Save {
    pub progress: Option<String>,
    pub checkpoint: Option<String>,
}

/// Extends a lease to `deadline`, saving progress and checkpoint with it. `None` if the
/// lease was lost; otherwise whether cancel has been requested.
pub(crate) async fn renew(
    db: &Db,
    owner: &str,
    lease: &Lease,
    now: DateTime<Utc>,
    deadline: DateTime<Utc>,
    save: Save,
) -> Result<Option<bool>> {
    let mut q = Query::update();
    q.table(col("jobs"))
        .value(col("lease_deadline"), deadline)
        .value(col("wake_time"), deadline)
        .value(col("update_time"), now);
    if let Some(p) = save.progress {
        q.value(col("progress"), p);
    }
    if let Some(c) = save.checkpoint {
        q.value(col("checkpoint"), c);
    }
    held(&mut q, owner, lease);
    q.returning(Query::returning().column(col("cancel_requested")));
    match query(db, &q).await?.first() {
        Some(r) => Ok(Some(r.try_get("", "cancel_requested")?)),
        None => Ok(None),
    }
}

/// Deletes up to `limit` jobs that finished before `before`; returns how many.
pub(crate) async fn purge(db: &Db, before: DateTime<Utc>, limit: u64) -> Result<u64> {
    let mut old = Query::select();
    old.columns([col("tenant_id"), col("id")])
        .from(col("jobs"))
        .and_where(Expr::col(col("state")).is_in(DONE.map(state_literal)))
        .and_where(Expr::col(col("finish_time")).lt(before))
        .order_by(col("finish_time"), Order::Asc)
        .limit(limit)
        .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
    let mut q = Query::delete();
    q.from_table(col("jobs")).and_where(
        Expr::tuple([Expr::col(col("tenant_id")), Expr::col(col("id"))]).in_subquery(old),
    );
    exec(db, &q).await
}

/// The tenants among `ids` that are not active: suspended, or unknown (`false`).
pub(crate) async fn inactive_tenants(db: &Db, ids: &[&str]) -> Result<Vec<(String, bool)>> {
    let mut q = Query::select();
    q.columns([col("id"), col("status")])
        .from(col("tenants"))
        .and_where(Expr::col(col("id")).is_in(ids.iter().copied()));
    let mut found = Vec::new();
    let mut inactive = Vec::new();
    let rows = db
        .within(db.timeout(), async { Ok(db.conn.query_all(&q).await?) })
        .await?;
    for r in rows {
        let id: String = r.try_get("", "id")?;
        let status: String = r.try_get("", "status")?;
        if status != "ACTIVE" {
            inactive.push((id.clone(), true));
        }
        found.push(id);
    }
    for id in ids {
        if !found.iter().any(|f| f == id) {
            inactive.push(((*id).to_owned(), false));
        }
    }
    Ok(inactive)
}
