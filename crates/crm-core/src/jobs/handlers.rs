//! The handlers of job kinds, registered by every crate at start, and what a running handler
//! is given: its [`JobContext`].

use super::rules::{self, Interrupt};
use super::store::{self, Lease, Save};
use super::{Progress, json_text};
use crate::clock::Clock;
use crate::db::Db;
use crate::error::{Error, Result};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use uuid::Uuid;

/// How a handler's attempt ended, when it did not fail.
#[derive(Debug, Clone, PartialEq)]
pub enum JobOutcome {
    /// The work is done; the value is kept as the job's result (`Json::Null` for none).
    Done(Json),
    /// The handler stopped because it was told to ([`JobContext::is_cancelled`]) or decided
    /// the work should not happen after all. After a cancel request, or on its own, the job
    /// ends CANCELLED; after a shutdown it goes back to the queue.
    Cancelled,
}

impl JobOutcome {
    /// Done without a result.
    pub fn done() -> Self {
        JobOutcome::Done(Json::Null)
    }
}

/// The future a handler returns.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<JobOutcome>> + Send + 'static>>;

type Handler = Arc<dyn Fn(JobContext) -> HandlerFuture + Send + Sync>;

/// The handlers of every job kind this process runs, registered from each crate at start:
///
/// ```
/// use crm_core::jobs::{JobContext, JobHandlers, JobOutcome};
///
/// async fn remind(ctx: JobContext) -> crm_core::Result<JobOutcome> {
///     // Look up what ctx.payload names and send the reminder, idempotently: the job may
///     // run again if its runner dies before recording the outcome.
///     let _ = (&ctx.tenant, &ctx.payload);
///     Ok(JobOutcome::done())
/// }
///
/// let mut handlers = JobHandlers::new();
/// handlers.register("crm.reminder", remind).expect("a new kind");
/// assert!(handlers.contains("crm.reminder"));
/// ```
///
/// A handler is `async fn(JobContext) -> Result<JobOutcome>`; an `Err` fails the attempt (a
/// retryable kind of error is retried with backoff, see [`rules::retryable`]). **A handler
/// must be idempotent**: every job runs at least once and may run again after a crash, a
/// lost lease or a failed attempt that had done part of its work. A runner only claims jobs
/// of the kinds it has handlers for, so replicas with different builds can share a database.
#[derive(Clone, Default)]
pub struct JobHandlers {
    map: BTreeMap<String, Handler>,
}

impl std::fmt::Debug for JobHandlers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobHandlers")
            .field("kinds", &self.map.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl JobHandlers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the handler of `kind` (see [`rules::valid_kind`]); a kind registered twice
    /// is an error.
    pub fn register<F, Fut>(&mut self, kind: &str, handler: F) -> Result<&mut Self>
    where
        F: Fn(JobContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<JobOutcome>> + Send + 'static,
    {
        if !rules::valid_kind(kind) {
            return Err(Error::invalid(
                "kind",
                format!("{kind:?} is not a job kind (lower-case letters, digits, '.', '_', '-')"),
            ));
        }
        if self.map.contains_key(kind) {
            return Err(Error::already_exists(format!(
                "a handler for job kind {kind} is already registered"
            ))
            .with("kind", kind));
        }
        let handler: Handler = Arc::new(move |ctx| Box::pin(handler(ctx)));
        self.map.insert(kind.to_owned(), handler);
        Ok(self)
    }

    /// Whether `kind` has a handler.
    pub fn contains(&self, kind: &str) -> bool {
        self.map.contains_key(kind)
    }

    /// The registered kinds, sorted.
    pub fn kinds(&self) -> Vec<String> {
        self.map.keys().cloned().collect()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub(crate) fn get(&self, kind: &str) -> Option<Handler> {
        self.map.get(kind).cloned()
    }
}

/// An attempt's lease as the runner and the handler share it: until when it holds, and
/// whether the handler has been told to stop (and why).
pub(crate) struct LeaseState {
    pub owner: String,
    pub lease: Lease,
    /// How long each renewal extends the lease.
    pub duration: chrono::Duration,
    deadline: Mutex<DateTime<Utc>>,
    interrupt: watch::Sender<Option<Interrupt>>,
}

impl LeaseState {
    pub fn new(
        owner: String,
        lease: Lease,
        duration: chrono::Duration,
        deadline: DateTime<Utc>,
    ) -> Self {
        Self {
            owner,
            lease,
            duration,
            deadline: Mutex::new(deadline),
            interrupt: watch::channel(None).0,
        }
    }

    pub fn deadline(&self) -> DateTime<Utc> {
        self.deadline
            .lock()
            .map(|d| *d)
            .unwrap_or_else(|p| *p.into_inner())
    }

    fn set_deadline(&self, at: DateTime<Utc>) {
        if let Ok(mut d) = self.deadline.lock() {
            *d = at;
        }
    }

    /// Tells the handler to stop; a stronger reason replaces a weaker one (a lost lease over
    /// a shutdown over a cancel request), never the reverse.
    pub fn signal(&self, i: Interrupt) {
        let rank = |i: Option<Interrupt>| match i {
            None => 0,
            Some(Interrupt::CancelRequested) => 1,
            Some(Interrupt::Shutdown) => 2,
            Some(Interrupt::LeaseLost) => 3,
        };
        self.interrupt.send_if_modified(|cur| {
            if rank(Some(i)) > rank(*cur) {
                *cur = Some(i);
                true
            } else {
                false
            }
        });
    }

    pub fn interrupt(&self) -> Option<Interrupt> {
        *self.interrupt.borrow()
    }
}

/// What a running handler is given: the job, the database, the clock, and the means to
/// report progress, save a checkpoint, keep its lease and learn it should stop.
pub struct JobContext {
    pub tenant: String,
    pub id: Uuid,
    pub kind: String,
    pub payload: Json,
    /// 1-based number of this attempt (attempts that never ended count too).
    pub attempt: u32,
    pub max_attempts: u32,
    pub db: Db,
    pub clock: Arc<dyn Clock>,
    checkpoint: Option<Json>,
    progress: Option<Progress>,
    state: Arc<LeaseState>,
}

impl std::fmt::Debug for JobContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobContext")
            .field("tenant", &self.tenant)
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

impl JobContext {
    pub(crate) fn new(
        job: super::Job,
        db: Db,
        clock: Arc<dyn Clock>,
        state: Arc<LeaseState>,
    ) -> Self {
        Self {
            tenant: job.tenant,
            id: job.id,
            kind: job.kind,
            payload: job.payload,
            attempt: job.attempts,
            max_attempts: job.max_attempts,
            db,
            clock,
            checkpoint: job.checkpoint,
            progress: job.progress,
            state,
        }
    }

    /// A context acting as the system for the job's tenant (every right, no field rules):
    /// the reads and writes a handler makes are checked, audited and evented as the system's,
    /// with `on_behalf_of` (the user who started the work, or none: the nil id) as the actor.
    pub fn system_ctx(&self, on_behalf_of: Option<Uuid>) -> crate::service::Ctx {
        crate::service::Ctx::new(
            self.db.clone(),
            crate::auth::Principal {
                tenant: self.tenant.clone(),
                user: on_behalf_of.unwrap_or_else(Uuid::nil),
                roles: vec![],
            },
            crate::access::Policy::superuser(),
            self.clock.clone(),
        )
    }

    /// The payload decoded as `T` (INVALID_ARGUMENT, which fails the job, if it does not fit).
    pub fn payload_as<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_value(self.payload.clone())
            .map_err(|e| Error::invalid("payload", format!("does not fit the job kind: {e}")))
    }

    /// The checkpoint an earlier attempt saved with [`JobContext::save`]: where to resume.
    pub fn checkpoint(&self) -> Option<&Json> {
        self.checkpoint.as_ref()
    }

    /// The checkpoint decoded as `T`.
    pub fn checkpoint_as<T: DeserializeOwned>(&self) -> Result<Option<T>> {
        self.checkpoint
            .clone()
            .map(|c| {
                serde_json::from_value(c)
                    .map_err(|e| Error::internal(format!("the saved checkpoint does not fit: {e}")))
            })
            .transpose()
    }

    /// The progress an earlier attempt reported, to continue counting from.
    pub fn saved_progress(&self) -> Option<&Progress> {
        self.progress.as_ref()
    }

    /// Until when this attempt's lease holds (on the [`Clock`]). A handler that may run longer
    /// calls [`JobContext::heartbeat`], [`JobContext::progress`] or [`JobContext::save`] well
    /// before: a lease that expires is taken by another runner.
    pub fn lease_deadline(&self) -> DateTime<Utc> {
        self.state.deadline()
    }

    /// Whether the handler should stop: cancel was requested (seen at the last renewal), the
    /// runner is shutting down, or the lease was lost. A handler that stops returns
    /// [`JobOutcome::Cancelled`] (or an error); the runner then records what fits the reason.
    pub fn is_cancelled(&self) -> bool {
        self.state.interrupt().is_some()
    }

    /// Why the handler should stop, if it should.
    pub fn interrupt(&self) -> Option<Interrupt> {
        self.state.interrupt()
    }

    /// Resolves once [`JobContext::is_cancelled`] is true (for `tokio::select!`).
    pub async fn cancelled(&self) {
        let mut rx = self.state.interrupt.subscribe();
        // The sender lives in `self.state`, so waiting cannot fail while `self` exists.
        let _ = rx.wait_for(Option::is_some).await;
    }

    /// Renews the lease; learns whether cancel was requested.
    pub async fn heartbeat(&self) -> Result<()> {
        self.renew(Save::default()).await
    }

    /// Records progress (shown in the operation's metadata) and renews the lease. One write
    /// per call: report every few seconds or every few hundred items, not for each one.
    pub async fn progress(&self, progress: &Progress) -> Result<()> {
        let p = serde_json::to_value(progress).map_err(|e| Error::internal(e.to_string()))?;
        self.renew(Save {
            progress: Some(json_text("progress", &p)?),
            checkpoint: None,
        })
        .await
    }

    /// Saves a checkpoint (where a later attempt resumes, see [`JobContext::checkpoint`]) and
    /// the progress that goes with it, in one write, and renews the lease. Write the
    /// checkpoint after the work it covers is committed: work after the last checkpoint is
    /// done again by the next attempt.
    pub async fn save(&self, checkpoint: &Json, progress: &Progress) -> Result<()> {
        let p = serde_json::to_value(progress).map_err(|e| Error::internal(e.to_string()))?;
        self.renew(Save {
            progress: Some(json_text("progress", &p)?),
            checkpoint: Some(json_text("checkpoint", checkpoint)?),
        })
        .await
    }

    async fn renew(&self, save: Save) -> Result<()> {
        if self.state.interrupt() == Some(Interrupt::LeaseLost) {
            return Err(lease_lost());
        }
        let now = self.clock.now();
        let deadline = now + self.state.duration;
        match store::renew(
            &self.db,
            &self.state.owner,
            &self.state.lease,
            now,
            deadline,
            save,
        )
        .await?
        {
            None => {
                self.state.signal(Interrupt::LeaseLost);
                Err(lease_lost())
            }
            Some(cancel_requested) => {
                self.state.set_deadline(deadline);
                if cancel_requested {
                    self.state.signal(Interrupt::CancelRequested);
                }
                Ok(())
            }
        }
    }
}

fn lease_lost() -> Error {
    Error::aborted(
        "LEASE_LOST",
        "the job's lease expired: another runner may be running it; stop",
    )
}
