//! Jobs as long-running operations (`google.longrunning.Operations`): who may see, wait on,
//! cancel and delete which.
//!
//! A caller may act on an operation of their tenant when
//!
//! 1. they started it (the job's creator), or
//! 2. their roles grant the action with scope ALL on the collection the operation concerns
//!    (the job's collection: `contacts` for a contact import). An operation covers records
//!    across the tenant, so a grant limited to one's own, team or territory records is not
//!    enough to see someone else's. A `*` grant covers every collection, and also the
//!    operations that concern none (system timers): administrators see everything.
//!
//! The actions are `read` for Get, List and Wait, `update` for Cancel, `delete` for Delete.
//! Another tenant's operation is NOT_FOUND; one of the caller's tenant they may not read is
//! PERMISSION_DENIED (OUT_OF_SCOPE), as for every record; List shows only what they may read.

use super::rules::JobState;
use super::store;
use super::{CancelOutcome, DeleteOutcome, Job};
use crate::access::{Action, Policy, Scope};
use crate::clock::Clock;
use crate::db::Db;
use crate::error::{Error, Result};
use crate::query::filter::{self, FieldType, FilterField};
use crate::query::page::{self, PageToken};
use crate::store::col;
use sea_orm::ConnectionTrait;
use sea_orm::sea_query::{Condition, Expr, ExprTrait, Order};
use std::time::Duration;
use uuid::Uuid;

/// What grants on operations that concern no collection are checked against: only `*`
/// grants reach it.
pub const NO_COLLECTION: &str = "operations";

/// Who is asking.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub tenant: &'a str,
    pub user: Uuid,
    pub policy: &'a Policy,
}

impl Caller<'_> {
    /// Whether the caller may do `action` to the operation (see the module documentation).
    pub fn may(&self, job: &Job, action: Action) -> bool {
        job.creator == Some(self.user)
            || self
                .policy
                .scopes(job.collection.as_deref().unwrap_or(NO_COLLECTION), action)
                .all
    }

    /// The rows the caller may read; `None` for all of the tenant's.
    fn readable(&self) -> Option<Condition> {
        if self.policy.scopes(NO_COLLECTION, Action::Read).all {
            return None;
        }
        let mut collections: Vec<&str> = self
            .policy
            .roles()
            .iter()
            .flat_map(|r| &r.grants)
            .filter(|g| g.scope == Scope::All && g.actions.contains(&Action::Read))
            .map(|g| g.collection.as_str())
            .filter(|c| *c != "*")
            .collect();
        collections.sort_unstable();
        collections.dedup();
        let mut any = Condition::any().add(Expr::col(col("creator_id")).eq(self.user));
        if !collections.is_empty() {
            any = any.add(Expr::col(col("collection")).is_in(collections));
        }
        Some(any)
    }
}

fn name(id: Uuid) -> String {
    format!("operations/{id}")
}

/// The operation, if the caller may read it.
pub async fn get(db: &Db, caller: &Caller<'_>, id: Uuid) -> Result<Job> {
    let job = super::get(&db.conn, caller.tenant, id)
        .await?
        .ok_or_else(|| Error::not_found(name(id)))?;
    if !caller.may(&job, Action::Read) {
        return Err(Error::permission_denied(
            "OUT_OF_SCOPE",
            format!(
                "{} was started by someone else and concerns records outside your reach",
                name(id)
            ),
        )
        .with("resource", name(id)));
    }
    Ok(job)
}

fn not_allowed(id: Uuid, action: Action) -> Error {
    Error::permission_denied(
        "ACTION_NOT_ALLOWED",
        format!("your roles may not {} {}", action.as_str(), name(id)),
    )
    .with("resource", name(id))
    .with("action", action.as_str())
}

/// Cancels the operation (best effort, see [`super::cancel`]); a finished one is left as it
/// is. Returns the operation as it is afterwards.
pub async fn cancel(db: &Db, clock: &dyn Clock, caller: &Caller<'_>, id: Uuid) -> Result<Job> {
    let job = get(db, caller, id).await?;
    if !caller.may(&job, Action::Update) {
        return Err(not_allowed(id, Action::Update));
    }
    if !job.state.is_done() {
        let tx = db.begin_write().await?;
        let outcome = super::cancel(&tx.txn, clock, caller.tenant, id).await?;
        tx.commit().await?;
        if outcome.is_none() {
            return Err(Error::not_found(name(id)));
        }
        if outcome == Some(CancelOutcome::Requested) {
            // A runner of this process holding it learns at the handler's next renewal; wake
            // the runners anyway so a job whose lease expired is cancelled without delay.
            super::wake();
        }
    }
    super::get(&db.conn, caller.tenant, id)
        .await?
        .ok_or_else(|| Error::not_found(name(id)))
}

/// Deletes a finished operation; one still QUEUED or RUNNING is FAILED_PRECONDITION (cancel it
/// first, or wait for it).
pub async fn delete(db: &Db, caller: &Caller<'_>, id: Uuid) -> Result<()> {
    let job = get(db, caller, id).await?;
    if !caller.may(&job, Action::Delete) {
        return Err(not_allowed(id, Action::Delete));
    }
    let tx = db.begin_write().await?;
    let outcome = super::delete(&tx.txn, caller.tenant, id).await?;
    tx.commit().await?;
    match outcome {
        Some(DeleteOutcome::Deleted) | None => Ok(()),
        Some(DeleteOutcome::NotDone(state)) => Err(Error::failed_precondition(
            "OPERATION_NOT_DONE",
            format!(
                "{} is {}: cancel it or wait until it is done before deleting it",
                name(id),
                state.as_str().to_lowercase()
            ),
        )
        .with("resource", name(id))
        .with("state", state.as_str())),
    }
}

/// Polls until the operation is done or `timeout` (real time) has passed, and returns it as
/// it is then.
pub async fn wait(db: &Db, caller: &Caller<'_>, id: Uuid, timeout: Duration) -> Result<Job> {
    let until = std::time::Instant::now() + timeout;
    let mut pause = Duration::from_millis(20);
    loop {
        let job = get(db, caller, id).await?;
        let left = until.saturating_duration_since(std::time::Instant::now());
        if job.state.is_done() || left.is_zero() {
            return Ok(job);
        }
        tokio::time::sleep(pause.min(left)).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

/// The fields ListOperations filters on (AIP-160): `kind`, `state`, `collection`,
/// `create_time`, `update_time`.
pub const FILTER_FIELDS: &[FilterField] = &[
    FilterField {
        name: "kind",
        column: "kind",
        ty: FieldType::String,
        filterable: true,
        sortable: false,
    },
    FilterField {
        name: "state",
        column: "state",
        ty: FieldType::Enum(JobState::NAMES),
        filterable: true,
        sortable: false,
    },
    FilterField {
        name: "collection",
        column: "collection",
        ty: FieldType::String,
        filterable: true,
        sortable: false,
    },
    FilterField {
        name: "create_time",
        column: "create_time",
        ty: FieldType::Timestamp,
        filterable: true,
        sortable: false,
    },
    FilterField {
        name: "update_time",
        column: "update_time",
        ty: FieldType::Timestamp,
        filterable: true,
        sortable: false,
    },
];

/// A page of ListOperations.
#[derive(Debug, Clone, Default)]
pub struct ListParams {
    pub page_size: i32,
    pub page_token: String,
    pub filter: String,
}

/// The operations the caller may read, newest first, filtered, keyset-paged; with the next
/// page token (empty on the last page).
pub async fn list(db: &Db, caller: &Caller<'_>, p: &ListParams) -> Result<(Vec<Job>, String)> {
    let limit = page::page_size("page_size", p.page_size)?;
    if let Some(at) = p.filter.chars().position(|c| c == '\0') {
        return Err(Error::invalid(
            "filter",
            format!("must not contain NUL characters (position {at})"),
        ));
    }
    let dialect = match db.backend() {
        sea_orm::DbBackend::Postgres => filter::Dialect::Postgres,
        _ => filter::Dialect::Portable,
    };
    let cond = filter::parse_filter_for(&p.filter, FILTER_FIELDS, dialect)
        .map_err(|e| Error::invalid("filter", e.to_string()))?;
    let digest = page::query_digest(&["operations", &p.filter]);
    let before = match PageToken::decode("page_token", &p.page_token, &digest)? {
        Some(t) => Some(
            Uuid::try_parse(&t.id)
                .map_err(|_| Error::invalid("page_token", "is not a page token from this list"))?,
        ),
        None => None,
    };
    let mut q = store::select();
    q.and_where(Expr::col(col("tenant_id")).eq(caller.tenant));
    if let Some(c) = cond {
        q.cond_where(c);
    }
    if let Some(c) = caller.readable() {
        q.cond_where(c);
    }
    if let Some(b) = before {
        q.and_where(Expr::col(col("id")).lt(b));
    }
    q.order_by(col("id"), Order::Desc).limit(limit + 1);
    let mut jobs = db
        .conn
        .query_all(&q)
        .await?
        .iter()
        .map(store::decode)
        .collect::<Result<Vec<_>>>()?;
    let more = jobs.len() as u64 > limit;
    jobs.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next = match (more, jobs.last()) {
        (true, Some(last)) => PageToken {
            v: vec![],
            id: last.id.to_string(),
            q: digest,
        }
        .encode(),
        _ => String::new(),
    };
    Ok((jobs, next))
}
