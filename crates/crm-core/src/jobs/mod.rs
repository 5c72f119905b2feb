//! Jobs and durable timers: work that runs later, or long, outside any request.
//!
//! A job is a row of the tenant's `jobs` table: a `kind` (which handler runs it), a JSON
//! payload, the time it falls due, its state, attempts, lease, progress, checkpoint and
//! result. Nothing that matters lives only in memory: a runner killed with `-9`, a database
//! cut mid-run or a handler that hangs loses nothing; the job is claimed again once its lease
//! expires.
//!
//! - **Schedule** with [`schedule`] inside the caller's write transaction (a domain write and
//!   its timer commit or roll back together), or with [`submit`] on its own. A due time in the
//!   past fires at once. A *dedupe key* names "the timer for case X": scheduling the same
//!   tenant, kind and key again replaces the pending job (or keeps it, see
//!   [`OnDuplicate`]).
//! - **Handle**: every crate registers its handlers by kind in a [`JobHandlers`] at start
//!   (`handlers.register("crm.reminder", remind)?`); a handler is
//!   `async fn(JobContext) -> Result<JobOutcome>`. **Handlers must be idempotent**: a job runs
//!   at least once, and a second time when its runner dies between doing the work and
//!   recording it. Long handlers report progress and save a checkpoint through their
//!   [`JobContext`] (which also renews the lease) and resume from it when claimed again.
//! - **Run**: a [`Runner`] claims due jobs in batches, runs each on its own task (a panic
//!   fails the attempt, never the runner), retries retryable errors with exponential backoff
//!   up to `max_attempts`, and records the end. See [`runner`] for the claim and lease rules.
//! - **Observe and control**: [`get`], [`cancel`] (best effort), [`delete`]; the gateway
//!   serves jobs as `google.longrunning.Operations` through [`operations`].
//!
//! Jobs follow the data rules of every table: tenant-scoped, primary key `(tenant_id, id)`,
//! UUIDv7 ids from the application, times on the injected [`Clock`].

pub mod handlers;
pub mod operations;
pub mod rules;
pub mod runner;
mod store;

pub use handlers::{JobContext, JobHandlers, JobOutcome};
pub use rules::{JobError, JobState};
pub use runner::{Runner, RunnerSettings, RunnerStats};

use crate::clock::Clock;
use crate::db::Db;
use crate::error::{Error, Result};
use crate::ids::new_id;
use crate::store::col;
use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::ConnectionTrait;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use std::collections::BTreeMap;
use uuid::Uuid;

/// The default of [`ScheduleOptions::max_attempts`].
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// The most attempts a job may be given.
pub const MAX_ATTEMPTS_LIMIT: u32 = 100;
/// The largest payload (and result, progress, checkpoint), as JSON text.
pub const MAX_JSON_BYTES: usize = 1024 * 1024;
/// The longest dedupe key.
pub const MAX_DEDUPE_KEY_CHARS: usize = 200;

/// What scheduling does when a pending (QUEUED) job of the same tenant, kind and dedupe key
/// exists.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnDuplicate {
    /// The pending job takes the new payload, due time, options; its attempts start over.
    #[default]
    Replace,
    /// The pending job stays as it is.
    Keep,
}

/// Options of [`schedule`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleOptions {
    /// Names the job among the tenant's pending jobs of its kind (e.g. `case/{id}`): at most
    /// one QUEUED job per tenant, kind and key exists. A job already running does not count,
    /// so "re-arm the timer" while it fires schedules the next one; a running job that then
    /// fails and would be retried is superseded by the pending one (CANCELLED).
    pub dedupe_key: Option<String>,
    pub on_duplicate: OnDuplicate,
    /// Attempts before a job whose handler keeps failing with a retryable error is FAILED
    /// (1..=100). Default 5.
    pub max_attempts: u32,
    /// The collection the job concerns (`contacts` for a contact import): who holds a grant
    /// on it may see the job as an operation (see [`operations`]).
    pub collection: Option<String>,
    /// Who started the job (a user id), if anyone: they may always see and cancel it.
    pub creator: Option<Uuid>,
}

impl Default for ScheduleOptions {
    fn default() -> Self {
        Self {
            dedupe_key: None,
            on_duplicate: OnDuplicate::Replace,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            collection: None,
            creator: None,
        }
    }
}

/// What [`schedule`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleOutcome {
    Inserted,
    /// A pending job with the same dedupe key took the new values.
    Replaced,
    /// A pending job with the same dedupe key was kept as it was.
    Kept,
}

/// The job [`schedule`] wrote (or found).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scheduled {
    pub id: Uuid,
    pub outcome: ScheduleOutcome,
}

/// Progress of a job, reported by its handler ([`JobContext::progress`]) and shown in the
/// operation's metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Items done so far.
    #[serde(default)]
    pub done: i64,
    /// Items in all, 0 if unknown.
    #[serde(default)]
    pub total: i64,
    /// Items by outcome (e.g. `created`, `updated`, `skipped`, `failed`).
    #[serde(default)]
    pub counts: BTreeMap<String, i64>,
}

/// A stored job.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub tenant: String,
    pub id: Uuid,
    pub kind: String,
    pub payload: Json,
    pub dedupe_key: Option<String>,
    /// See [`ScheduleOptions::collection`].
    pub collection: Option<String>,
    pub creator: Option<Uuid>,
    pub state: JobState,
    /// When the job falls due (again, after a failed attempt).
    pub due_time: DateTime<Utc>,
    /// Attempts started so far (claims).
    pub attempts: u32,
    pub max_attempts: u32,
    /// The error of the last failed attempt (of the job, once FAILED or CANCELLED).
    pub error: Option<JobError>,
    /// The runner holding (or, once finished, last holding) the job.
    pub lease_owner: Option<String>,
    /// Until when the lease of a RUNNING job holds.
    pub lease_deadline: Option<DateTime<Utc>>,
    pub cancel_requested: bool,
    /// What the handler returned, once SUCCEEDED.
    pub result: Option<Json>,
    pub progress: Option<Progress>,
    /// The handler's last saved checkpoint.
    pub checkpoint: Option<Json>,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
    pub finish_time: Option<DateTime<Utc>>,
}

/// Schedules a job: `kind` runs with `payload` once `due_at` has come (at once if it has
/// already). Use the caller's write transaction as `conn` so the job commits or rolls back
/// with the caller's other writes (on SQLite, a connection of [`Db::begin_write`]); runners in
/// this process are woken (a job committed later is picked up at the next poll, or call
/// [`wake`] after the commit).
pub async fn schedule<C: ConnectionTrait>(
    conn: &C,
    clock: &dyn Clock,
    tenant: &str,
    kind: &str,
    payload: &Json,
    due_at: DateTime<Utc>,
    options: &ScheduleOptions,
) -> Result<Scheduled> {
    if tenant.is_empty() {
        return Err(Error::invalid("tenant", "must not be empty"));
    }
    if !rules::valid_kind(kind) {
        return Err(Error::invalid(
            "kind",
            "must be lower-case letters, digits, '.', '_' or '-' (at most 100)",
        ));
    }
    if !(1..=MAX_ATTEMPTS_LIMIT).contains(&options.max_attempts) {
        return Err(Error::invalid(
            "max_attempts",
            format!("must be within 1..={MAX_ATTEMPTS_LIMIT}"),
        ));
    }
    if let Some(key) = &options.dedupe_key
        && (key.is_empty() || key.chars().count() > MAX_DEDUPE_KEY_CHARS || key.contains('\0'))
    {
        return Err(Error::invalid(
            "dedupe_key",
            format!("must be 1 to {MAX_DEDUPE_KEY_CHARS} characters without NUL"),
        ));
    }
    if let Some(c) = &options.collection
        && !valid_collection(c)
    {
        return Err(Error::invalid(
            "collection",
            "must be a collection name such as contacts or productGroups",
        ));
    }
    let payload = json_text("payload", payload)?;
    let now = clock.now();
    let due = due_at.trunc_subsecs(6);
    let id = new_id();
    let mut q = Query::insert();
    q.into_table(col("jobs"))
        .columns(
            [
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
                "cancel_requested",
                "create_time",
                "update_time",
            ]
            .map(col),
        )
        .values([
            Expr::val(tenant),
            Expr::val(id),
            Expr::val(kind),
            Expr::val(payload),
            Expr::val(options.dedupe_key.clone()),
            Expr::val(options.collection.clone().unwrap_or_default()),
            Expr::val(options.creator),
            Expr::val(JobState::Queued.as_str()),
            Expr::val(due),
            Expr::val(due),
            Expr::val(0i64),
            Expr::val(i64::from(options.max_attempts)),
            Expr::val(false),
            Expr::val(now),
            Expr::val(now),
        ])
        .map_err(|e| Error::internal(e.to_string()))?;
    if options.dedupe_key.is_some() {
        let mut on = OnConflict::columns([col("tenant_id"), col("kind"), col("dedupe_key")]);
        // The arbiter is the partial unique index `jobs_dedupe`: its predicate is written as
        // a literal, as the index has it, so both databases can match the two.
        on.target_and_where(Expr::col(col("state")).eq(store::state_literal(JobState::Queued)));
        match options.on_duplicate {
            OnDuplicate::Replace => {
                on.update_columns(
                    [
                        "payload",
                        "collection",
                        "creator_id",
                        "due_time",
                        "wake_time",
                        "max_attempts",
                        "update_time",
                    ]
                    .map(col),
                )
                .values([
                    (col("attempts"), Expr::val(0i64)),
                    (col("error_code"), Expr::val(None::<String>)),
                    (col("last_error"), Expr::val(None::<String>)),
                    (col("progress"), Expr::val(None::<String>)),
                    (col("checkpoint"), Expr::val(None::<String>)),
                    (col("cancel_requested"), Expr::val(false)),
                ]);
            }
            OnDuplicate::Keep => {
                // A no-op update, so that RETURNING names the kept row.
                on.value(col("kind"), Expr::col((col("jobs"), col("kind"))));
            }
        }
        q.on_conflict(on);
    }
    q.returning_col(col("id"));
    let row = conn
        .query_one(&q)
        .await?
        .ok_or_else(|| Error::internal("scheduling a job returned no row"))?;
    let written: Uuid = row.try_get("", "id")?;
    let outcome = match (written == id, options.on_duplicate) {
        (true, _) => ScheduleOutcome::Inserted,
        (false, OnDuplicate::Replace) => ScheduleOutcome::Replaced,
        (false, OnDuplicate::Keep) => ScheduleOutcome::Kept,
    };
    wake();
    Ok(Scheduled {
        id: written,
        outcome,
    })
}

/// [`schedule`] in a write transaction of its own, committed before the local runners are
/// woken.
pub async fn submit(
    db: &Db,
    clock: &dyn Clock,
    tenant: &str,
    kind: &str,
    payload: &Json,
    due_at: DateTime<Utc>,
    options: &ScheduleOptions,
) -> Result<Scheduled> {
    let tx = db.begin_write().await?;
    let s = schedule(&tx.txn, clock, tenant, kind, payload, due_at, options).await?;
    tx.commit().await?;
    wake();
    Ok(s)
}

/// A job of the tenant, `None` if there is none with this id.
pub async fn get<C: ConnectionTrait>(conn: &C, tenant: &str, id: Uuid) -> Result<Option<Job>> {
    let mut q = store::select();
    q.and_where(Expr::col(col("tenant_id")).eq(tenant))
        .and_where(Expr::col(col("id")).eq(id));
    match conn.query_one(&q).await? {
        Some(row) => store::decode(&row).map(Some),
        None => Ok(None),
    }
}

/// What [`cancel`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The job had not started: it is CANCELLED and will not run.
    Cancelled,
    /// The job is running: its handler sees the request at its next progress, checkpoint or
    /// heartbeat and may stop (the job then ends CANCELLED) or finish anyway. A job whose
    /// runner died is cancelled when it is claimed again, without running.
    Requested,
    /// The job had already ended in this state; nothing changed.
    AlreadyDone(JobState),
}

/// Cancels a job, best effort; calling it again is harmless. `None` if there is no such job.
pub async fn cancel<C: ConnectionTrait>(
    conn: &C,
    clock: &dyn Clock,
    tenant: &str,
    id: Uuid,
) -> Result<Option<CancelOutcome>> {
    // A job may move between QUEUED and RUNNING meanwhile (claimed, or retried): look again.
    for _ in 0..3 {
        let now = clock.now();
        let mut q = Query::update();
        q.table(col("jobs"))
            .value(col("state"), JobState::Cancelled.as_str())
            .value(col("cancel_requested"), true)
            .value(col("wake_time"), None::<DateTime<Utc>>)
            .value(col("error_code"), "CANCELLED")
            .value(col("last_error"), "the job was cancelled before it ran")
            .value(col("finish_time"), now)
            .value(col("update_time"), now)
            .and_where(Expr::col(col("tenant_id")).eq(tenant))
            .and_where(Expr::col(col("id")).eq(id))
            .and_where(Expr::col(col("state")).eq(JobState::Queued.as_str()));
        if conn.execute(&q).await?.rows_affected() == 1 {
            return Ok(Some(CancelOutcome::Cancelled));
        }
        let mut q = Query::update();
        q.table(col("jobs"))
            .value(col("cancel_requested"), true)
            .value(col("update_time"), now)
            .and_where(Expr::col(col("tenant_id")).eq(tenant))
            .and_where(Expr::col(col("id")).eq(id))
            .and_where(Expr::col(col("state")).eq(JobState::Running.as_str()));
        if conn.execute(&q).await?.rows_affected() == 1 {
            return Ok(Some(CancelOutcome::Requested));
        }
        match get(conn, tenant, id).await? {
            None => return Ok(None),
            Some(j) if j.state.is_done() => return Ok(Some(CancelOutcome::AlreadyDone(j.state))),
            Some(_) => {}
        }
    }
    Err(Error::aborted(
        "CONCURRENT_CHANGE",
        "the job kept changing state; retry the cancel",
    ))
}

/// What [`delete`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteOutcome {
    Deleted,
    /// The job has not ended (QUEUED or RUNNING): nothing was deleted.
    NotDone(JobState),
}

/// Removes a finished job's row. `None` if there is no such job.
pub async fn delete<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    id: Uuid,
) -> Result<Option<DeleteOutcome>> {
    let mut q = Query::delete();
    q.from_table(col("jobs"))
        .and_where(Expr::col(col("tenant_id")).eq(tenant))
        .and_where(Expr::col(col("id")).eq(id))
        .and_where(Expr::col(col("state")).is_in(store::DONE.iter().map(|s| s.as_str())));
    if conn.execute(&q).await?.rows_affected() == 1 {
        return Ok(Some(DeleteOutcome::Deleted));
    }
    Ok(get(conn, tenant, id).await?.map(|j| {
        if j.state.is_done() {
            // Deleted by someone else between the two statements.
            DeleteOutcome::Deleted
        } else {
            DeleteOutcome::NotDone(j.state)
        }
    }))
}

/// Wakes every runner of this process, so jobs scheduled (and committed) just now run without
/// waiting for the next poll. Cheap; runners that find nothing go back to sleep.
pub fn wake() {
    runner::wake_all();
}

/// A collection name: ASCII letters and digits, starting with a lower-case letter, at most 63.
fn valid_collection(c: &str) -> bool {
    c.len() <= 63
        && c.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
        && c.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// `v` as JSON text of at most [`MAX_JSON_BYTES`].
fn json_text(field: &str, v: &Json) -> Result<String> {
    let text = serde_json::to_string(v).map_err(|e| Error::internal(e.to_string()))?;
    if text.len() > MAX_JSON_BYTES {
        return Err(Error::invalid(
            field,
            format!("is larger than {MAX_JSON_BYTES} bytes as JSON"),
        ));
    }
    Ok(text)
}
