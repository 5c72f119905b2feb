//! The runner: claims due jobs, runs their handlers, records how they ended.
//!
//! **Claim.** One statement claims a batch ([`RunnerSettings::batch_size`], at most the free
//! concurrency): due QUEUED jobs and RUNNING jobs whose lease expired, oldest first, of the
//! kinds this runner has handlers for. It sets the lease (owner, deadline = now +
//! [`RunnerSettings::lease`]) and counts the attempt, and commits before any handler starts.
//! On PostgreSQL the candidates are selected `FOR UPDATE SKIP LOCKED`, so any number of
//! runners (replicas) share the queue and never claim the same job twice at once; on SQLite
//! the claim runs under the writer lock ([`Db::begin_write`]): run one runner per file.
//!
//! **Lease.** A job belongs to its runner until the lease deadline (on the [`Clock`]). The
//! handler renews it by reporting progress, saving a checkpoint or calling
//! [`JobContext::heartbeat`](super::JobContext::heartbeat); a runner killed with `-9`, a
//! database that goes away, or a handler that hangs leaves a lease that expires, and the job
//! is claimed again (attempts count these too: a job whose attempts keep dying is FAILED
//! once `max_attempts` is used up). Every write that ends an attempt checks the lease (owner
//! and attempt number): a runner that lost its lease cannot overwrite what the next one
//! recorded. When the lease of a handler still running expires the runner tells it to stop,
//! and aborts it after one more lease duration.
//!
//! **End.** A result is recorded (SUCCEEDED); a retryable error is retried after an
//! exponential backoff until `max_attempts` attempts were made, then FAILED with the error;
//! other errors fail at once; a panic is caught (the handler runs on its own task) and
//! treated as an INTERNAL error with the panic message, the runner lives on. Results of
//! several jobs are written in one statement.
//!
//! **Tenants.** A job of a suspended tenant does not run: it is postponed by
//! [`RunnerSettings::suspended_delay`] (the attempt not counted, the reason in its error)
//! and runs once the tenant is active again. A job of a tenant that no longer exists fails.
//!
//! **Wake-ups and shutdown.** The runner polls every [`RunnerSettings::poll_interval`] and at
//! once when [`wake`](super::wake) is called (as [`schedule`](super::schedule) does). A
//! graceful [`Runner::shutdown`] stops claiming, tells running handlers to stop, waits up to
//! [`RunnerSettings::shutdown_grace`] and gives back what is unfinished (QUEUED at once, the
//! attempt not counted) so another replica continues without waiting for leases to expire.
//!
//! **Retention.** Finished jobs older than [`RunnerSettings::retention`] are deleted.

use super::handlers::{JobHandlers, JobOutcome, LeaseState};
use super::rules::{self, Attempt, AttemptEnd, Interrupt, JobError, JobState, Transition};
use super::store::{self, Lease, Requeue, Requeued};
use super::{Job, JobContext};
use crate::clock::Clock;
use crate::db::Db;
use crate::error::{ErrorKind, Result};
use chrono::{DateTime, Utc};
use serde_json::Value as Json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use uuid::Uuid;

/// How a runner works. Durations of leases, retries, postponements and retention are measured
/// on the [`Clock`]; poll interval and shutdown grace in real time.
#[derive(Debug, Clone, PartialEq)]
pub struct RunnerSettings {
    /// How often the runner looks for due jobs when nothing wakes it. Default 1 s.
    pub poll_interval: Duration,
    /// Most jobs claimed in one statement. Default 128.
    pub batch_size: u32,
    /// How long a claim (and each renewal) holds a job. A handler running longer must renew
    /// it; a runner that dies keeps its jobs this long. Default 60 s.
    pub lease: Duration,
    /// Most handlers running at once. Default 64.
    pub concurrency: u32,
    /// The first retry's delay; each further retry doubles it. Default 1 s.
    pub retry_base: Duration,
    /// The longest retry delay. Default 1 h.
    pub retry_max: Duration,
    /// How long a job of a suspended tenant is postponed each time it falls due. Default 60 s.
    pub suspended_delay: Duration,
    /// How long a shutdown waits for running handlers before giving their jobs back.
    /// Default 10 s.
    pub shutdown_grace: Duration,
    /// How long finished jobs are kept; zero keeps them forever. Default 7 days.
    pub retention: Duration,
}

impl Default for RunnerSettings {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(1),
            batch_size: 128,
            lease: Duration::from_secs(60),
            concurrency: 64,
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(3600),
            suspended_delay: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(10),
            retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// What a runner has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunnerStats {
    /// Times the runner looked for due jobs (polls, wake-ups, refills).
    pub polls: u64,
    /// Jobs claimed (each claim of the same job counts).
    pub claimed: u64,
    pub succeeded: u64,
    /// Attempts that failed and were scheduled again.
    pub retried: u64,
    pub failed: u64,
    pub cancelled: u64,
    /// Jobs of suspended tenants put off.
    pub postponed: u64,
    /// Jobs given back at shutdown.
    pub released: u64,
    /// Attempts whose lease was lost: their outcome was not recorded (another runner has, or
    /// will have, the job).
    pub lost: u64,
    /// Handlers that panicked.
    pub panics: u64,
    /// Database errors of the runner itself (claims, writes of outcomes, purges).
    pub errors: u64,
}

#[derive(Default)]
struct Counters {
    polls: AtomicU64,
    claimed: AtomicU64,
    succeeded: AtomicU64,
    retried: AtomicU64,
    failed: AtomicU64,
    cancelled: AtomicU64,
    postponed: AtomicU64,
    released: AtomicU64,
    lost: AtomicU64,
    panics: AtomicU64,
    errors: AtomicU64,
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl Counters {
    fn snapshot(&self) -> RunnerStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RunnerStats {
            polls: g(&self.polls),
            claimed: g(&self.claimed),
            succeeded: g(&self.succeeded),
            retried: g(&self.retried),
            failed: g(&self.failed),
            cancelled: g(&self.cancelled),
            postponed: g(&self.postponed),
            released: g(&self.released),
            lost: g(&self.lost),
            panics: g(&self.panics),
            errors: g(&self.errors),
        }
    }
}

/// The wake-up of every runner of this process ([`super::wake`]).
static RUNNERS: Mutex<Vec<Weak<Notify>>> = Mutex::new(Vec::new());

pub(crate) fn wake_all() {
    if let Ok(mut list) = RUNNERS.lock() {
        list.retain(|w| match w.upgrade() {
            Some(n) => {
                n.notify_one();
                true
            }
            None => false,
        });
    }
}

/// What every task of a runner shares.
struct Shared {
    db: Db,
    clock: Arc<dyn Clock>,
    handlers: JobHandlers,
    settings: RunnerSettings,
    owner: String,
    counters: Counters,
    wake: Arc<Notify>,
    /// Outcomes handed to the finisher and not yet written, at most `concurrency`.
    unwritten: Arc<Semaphore>,
}

impl Shared {
    fn lease(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.settings.lease).unwrap_or(chrono::Duration::minutes(1))
    }

    fn later(&self, d: Duration) -> DateTime<Utc> {
        self.clock.now() + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::days(1))
    }
}

/// A running job runner; see the [module documentation](self). Dropping it aborts it like
/// [`Runner::kill`]; call [`Runner::shutdown`] to stop cleanly.
pub struct Runner {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("owner", &self.shared.owner)
            .field("kinds", &self.shared.handlers.kinds())
            .finish_non_exhaustive()
    }
}

impl Runner {
    /// Starts a runner on the current tokio runtime.
    pub fn start(
        db: Db,
        clock: Arc<dyn Clock>,
        handlers: JobHandlers,
        settings: RunnerSettings,
    ) -> Runner {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "runner".into());
        let shared = Arc::new(Shared {
            db,
            clock,
            handlers,
            settings: RunnerSettings {
                batch_size: settings.batch_size.max(1),
                concurrency: settings.concurrency.max(1),
                poll_interval: settings.poll_interval.max(Duration::from_millis(1)),
                lease: settings.lease.max(Duration::from_millis(1)),
                ..settings
            },
            owner: format!("{host}/{}", Uuid::now_v7()),
            counters: Counters::default(),
            wake: Arc::new(Notify::new()),
            unwritten: Arc::new(Semaphore::new(settings.concurrency.max(1) as usize)),
        });
        if let Ok(mut list) = RUNNERS.lock() {
            list.push(Arc::downgrade(&shared.wake));
        }
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(shared.clone(), stopped));
        Runner {
            shared,
            stop,
            task: Some(task),
        }
    }

    /// The lease owner this runner writes into the jobs it holds.
    pub fn owner(&self) -> &str {
        &self.shared.owner
    }

    pub fn stats(&self) -> RunnerStats {
        self.shared.counters.snapshot()
    }

    /// Looks for due jobs now rather than at the next poll.
    pub fn wake(&self) {
        self.shared.wake.notify_one();
    }

    /// Stops claiming, tells running handlers to stop, waits for them up to the shutdown
    /// grace, records what ended and gives back the rest, then returns.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Stops at once without writing anything, as a process killed with `-9` would: the jobs
    /// it holds come back when their leases expire.
    pub fn kill(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A task aborted when this handle is dropped (so aborting the runner aborts everything it
/// started).
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// An error as operators should read it: the message and, when known, its cause.
fn explain(e: &crate::Error) -> String {
    match e.metadata.iter().find(|(k, _)| *k == "detail") {
        Some((_, d)) if !e.message.contains(d.as_str()) => format!("{} (cause: {d})", e.message),
        _ => e.message.clone(),
    }
}

/// How often the runner deletes jobs past retention.
const PURGE_EVERY: Duration = Duration::from_secs(600);
/// Rows deleted per purge statement, and statements per purge at most.
const PURGE_BATCH: u64 = 1000;
const PURGE_ROUNDS: usize = 100;

async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let s = shared.settings.clone();
    let kinds = shared.handlers.kinds();
    let concurrency = s.concurrency as usize;
    let batch = s.batch_size as usize;
    // With more work waiting, claim again once this many slots are free.
    let refill = (batch.min(concurrency) / 2).max(1);
    let (finish_tx, finish_rx) = mpsc::unbounded_channel();
    let mut finisher = AbortOnDrop(tokio::spawn(finisher(shared.clone(), finish_rx)));
    let (halt_tx, halt_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut claim_now = true;
    let mut backlog = false;
    let mut next_poll = Instant::now();
    let mut next_purge = Instant::now();
    tracing::info!(owner = %shared.owner, kinds = ?kinds, "job runner started");
    loop {
        if *stop.borrow() {
            break;
        }
        while tasks.try_join_next().is_some() {}
        let free = concurrency.saturating_sub(tasks.len());
        if claim_now {
            next_poll = Instant::now() + s.poll_interval;
            bump(&shared.counters.polls, 1);
        }
        if claim_now && free > 0 && !kinds.is_empty() {
            let want = batch.min(free);
            match claim(&shared, &kinds, want).await {
                Ok(jobs) => {
                    backlog = jobs.len() == want;
                    for (job, gate) in jobs {
                        tasks.spawn(supervise(
                            shared.clone(),
                            job,
                            gate,
                            finish_tx.clone(),
                            halt_rx.clone(),
                        ));
                    }
                }
                Err(e) => {
                    backlog = false;
                    bump(&shared.counters.errors, 1);
                    tracing::warn!(owner = %shared.owner, error = %explain(&e), "claiming jobs failed");
                }
            }
        }
        if !s.retention.is_zero() && Instant::now() >= next_purge {
            next_purge = Instant::now() + PURGE_EVERY;
            purge(&shared).await;
        }
        if backlog && concurrency.saturating_sub(tasks.len()) >= refill {
            claim_now = true;
            continue;
        }
        claim_now = false;
        tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            _ = shared.wake.notified() => claim_now = true,
            _ = tokio::time::sleep_until(next_poll.into()) => claim_now = true,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {
                while tasks.try_join_next().is_some() {}
                claim_now = backlog && concurrency.saturating_sub(tasks.len()) >= refill;
            }
        }
    }
    let _ = halt_tx.send(true);
    while tasks.join_next().await.is_some() {}
    drop(finish_tx);
    // The finisher ends once every outcome sent to it is written.
    let _ = (&mut finisher.0).await;
    tracing::info!(owner = %shared.owner, stats = ?shared.counters.snapshot(), "job runner stopped");
}

/// Whether a claimed job may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    Run,
    TenantSuspended,
    TenantUnknown,
}

async fn claim(shared: &Shared, kinds: &[String], want: usize) -> Result<Vec<(Job, Gate)>> {
    let now = shared.clock.now();
    let deadline = now + shared.lease();
    let jobs = store::claim(&shared.db, kinds, &shared.owner, now, deadline, want as u64).await?;
    if jobs.is_empty() {
        return Ok(vec![]);
    }
    bump(&shared.counters.claimed, jobs.len() as u64);
    tracing::debug!(owner = %shared.owner, claimed = jobs.len(), "claimed jobs");
    let mut tenants: Vec<&str> = jobs.iter().map(|j| j.tenant.as_str()).collect();
    tenants.sort_unstable();
    tenants.dedup();
    // If this read fails the jobs stay claimed and unrun: they come back when the lease
    // expires, as after a crash.
    let inactive: HashMap<String, bool> = store::inactive_tenants(&shared.db, &tenants)
        .await?
        .into_iter()
        .collect();
    Ok(jobs
        .into_iter()
        .map(|j| {
            let gate = match inactive.get(&j.tenant) {
                None => Gate::Run,
                Some(true) => Gate::TenantSuspended,
                Some(false) => Gate::TenantUnknown,
            };
            (j, gate)
        })
        .collect())
}

async fn purge(shared: &Shared) {
    let Ok(keep) = chrono::Duration::from_std(shared.settings.retention) else {
        return;
    };
    let before = shared.clock.now() - keep;
    let mut total = 0;
    for _ in 0..PURGE_ROUNDS {
        match store::purge(&shared.db, before, PURGE_BATCH).await {
            Ok(n) => {
                total += n;
                if n < PURGE_BATCH {
                    break;
                }
            }
            Err(e) => {
                bump(&shared.counters.errors, 1);
                tracing::warn!(error = %explain(&e), "deleting old jobs failed");
                break;
            }
        }
    }
    if total > 0 {
        tracing::info!(deleted = total, "deleted jobs past retention");
    }
}

/// What the runner writes for one attempt.
#[derive(Debug)]
enum Action {
    Succeed(Option<String>),
    Retry(DateTime<Utc>, JobError),
    Fail(JobError),
    Cancel(JobError),
    Postpone(DateTime<Utc>, JobError),
    Release,
}

/// One attempt's end, on its way to the finisher.
struct Finish {
    lease: Lease,
    action: Action,
    /// One of the runner's `unwritten` permits, given back once written.
    _unwritten: OwnedSemaphorePermit,
}

/// Runs one claimed job to its end and hands the outcome to the finisher.
async fn supervise(
    shared: Arc<Shared>,
    job: Job,
    gate: Gate,
    finish: mpsc::UnboundedSender<Finish>,
    mut halt: watch::Receiver<bool>,
) {
    let lease = Lease {
        tenant: job.tenant.clone(),
        id: job.id,
        attempt: job.attempts,
    };
    let action = match decide_before_running(&shared, &job, gate) {
        Some(a) => a,
        None => match run_handler(&shared, job, &lease, &mut halt).await {
            Some(a) => a,
            None => {
                bump(&shared.counters.lost, 1);
                return;
            }
        },
    };
    // The slot frees as soon as the handler is done, so the next claim overlaps the write of
    // this outcome; at most `concurrency` outcomes wait to be written, so a slow database
    // still holds back the claims.
    let Ok(permit) = shared.unwritten.clone().acquire_owned().await else {
        return;
    };
    let _ = finish.send(Finish {
        lease,
        action,
        _unwritten: permit,
    });
}

/// What to do with a claimed job without running it, if anything.
fn decide_before_running(shared: &Shared, job: &Job, gate: Gate) -> Option<Action> {
    match gate {
        Gate::TenantUnknown => {
            return Some(Action::Fail(JobError::new(
                "FAILED_PRECONDITION",
                format!("tenant {} does not exist", job.tenant),
            )));
        }
        Gate::TenantSuspended => {
            return Some(Action::Postpone(
                shared.later(shared.settings.suspended_delay),
                JobError::new(
                    "FAILED_PRECONDITION",
                    format!(
                        "tenant {} is suspended: the job waits until it is active again",
                        job.tenant
                    ),
                ),
            ));
        }
        Gate::Run => {}
    }
    if job.cancel_requested {
        return Some(Action::Cancel(JobError::new(
            "CANCELLED",
            "the job was cancelled",
        )));
    }
    if job.attempts > job.max_attempts {
        return Some(Action::Fail(rules::gave_up(job.max_attempts)));
    }
    if !shared.handlers.contains(&job.kind) {
        return Some(Action::Fail(JobError::new(
            "FAILED_PRECONDITION",
            format!("no handler for job kind {}", job.kind),
        )));
    }
    None
}

/// Runs the handler on its own task, watching the lease and the runner's shutdown; `None`
/// when nothing is to be written (the lease was lost).
async fn run_handler(
    shared: &Arc<Shared>,
    job: Job,
    lease: &Lease,
    halt: &mut watch::Receiver<bool>,
) -> Option<Action> {
    let handler = shared.handlers.get(&job.kind)?;
    let now = shared.clock.now();
    let deadline = job.lease_deadline.unwrap_or(now + shared.lease());
    let state = Arc::new(LeaseState::new(
        shared.owner.clone(),
        lease.clone(),
        shared.lease(),
        deadline,
    ));
    let (number, max_attempts, id) = (job.attempts, job.max_attempts, job.id);
    let ctx = JobContext::new(job, shared.db.clone(), shared.clock.clone(), state.clone());
    let mut task = AbortOnDrop(tokio::spawn(handler(ctx)));
    let tick = shared.settings.poll_interval.min(Duration::from_secs(1));
    let mut lost_at: Option<Instant> = None;
    let mut halted_at: Option<Instant> = None;
    let joined = loop {
        tokio::select! {
            r = &mut task.0 => break Some(r),
            changed = halt.changed(), if halted_at.is_none() => {
                if changed.is_err() || *halt.borrow() {
                    state.signal(Interrupt::Shutdown);
                    halted_at = Some(Instant::now());
                }
            }
            _ = tokio::time::sleep(tick) => {
                let expired = shared.clock.now() >= state.deadline();
                if lost_at.is_none() && (expired || state.interrupt() == Some(Interrupt::LeaseLost)) {
                    state.signal(Interrupt::LeaseLost);
                    lost_at = Some(Instant::now());
                    tracing::warn!(owner = %shared.owner, job = %id, "a job's lease expired while its handler ran; told it to stop");
                }
                let give_up = lost_at.is_some_and(|t| t.elapsed() >= shared.settings.lease)
                    || halted_at.is_some_and(|t| t.elapsed() >= shared.settings.shutdown_grace);
                if give_up {
                    break None;
                }
            }
        }
    };
    drop(task);
    let end = match joined {
        Some(Ok(Ok(JobOutcome::Done(v)))) => AttemptEnd::Done(v),
        Some(Ok(Ok(JobOutcome::Cancelled))) => AttemptEnd::Cancelled,
        Some(Ok(Err(e))) => AttemptEnd::Failed(JobError::from_error(&e)),
        Some(Err(e)) if e.is_panic() => {
            bump(&shared.counters.panics, 1);
            let message = panic_message(e.into_panic());
            tracing::error!(owner = %shared.owner, job = %id, panic = %message, "a job handler panicked");
            AttemptEnd::Failed(JobError::panicked(&message))
        }
        Some(Err(_)) | None => AttemptEnd::Aborted,
    };
    let attempt = Attempt {
        number,
        max_attempts,
        interrupt: state.interrupt(),
        now: shared.clock.now(),
        backoff: rules::backoff(
            shared.settings.retry_base,
            shared.settings.retry_max,
            number,
            id,
        ),
    };
    match rules::settle(end, attempt) {
        Transition::Succeed(Json::Null) => Some(Action::Succeed(None)),
        Transition::Succeed(v) => match super::json_text("result", &v) {
            Ok(text) => Some(Action::Succeed(Some(text))),
            Err(e) => Some(Action::Fail(JobError::new(
                "RESOURCE_EXHAUSTED",
                format!("the handler's result was not kept: {e}"),
            ))),
        },
        Transition::Retry(at, e) => Some(Action::Retry(at, e)),
        Transition::Fail(e) => Some(Action::Fail(e)),
        Transition::Cancel(e) => Some(Action::Cancel(e)),
        Transition::Release => Some(Action::Release),
        Transition::Abandon => None,
    }
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    match p.downcast::<String>() {
        Ok(s) => *s,
        Err(p) => match p.downcast::<&'static str>() {
            Ok(s) => (*s).to_owned(),
            Err(_) => "a panic without a message".to_owned(),
        },
    }
}

/// Most outcomes written in one round.
const FINISH_BATCH: usize = 500;

/// Writes outcomes as they come, several at a time: every result that is the same (most often
/// none) in one statement, the rest one by one.
async fn finisher(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Finish>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < FINISH_BATCH {
            match rx.try_recv() {
                Ok(f) => batch.push(f),
                Err(_) => break,
            }
        }
        write_outcomes(&shared, batch).await;
    }
}

/// Attempts at writing an outcome while the database is unavailable, and the pause before the
/// first retry (doubling).
const WRITE_TRIES: u32 = 4;
const WRITE_RETRY: Duration = Duration::from_millis(100);

async fn write_outcomes(shared: &Shared, batch: Vec<Finish>) {
    let mut groups: HashMap<Option<String>, Vec<Finish>> = HashMap::new();
    let mut others = Vec::new();
    for f in batch {
        match &f.action {
            Action::Succeed(result) => groups.entry(result.clone()).or_default().push(f),
            _ => others.push(f),
        }
    }
    for (result, finishes) in groups {
        let leases: Vec<Lease> = finishes.iter().map(|f| f.lease.clone()).collect();
        let mut pause = WRITE_RETRY;
        let mut tries = 0;
        let accepted = loop {
            tries += 1;
            let now = shared.clock.now();
            match store::succeed_many(&shared.db, &shared.owner, now, result.as_deref(), &leases)
                .await
            {
                Ok(a) => break Some(a),
                Err(e) => {
                    bump(&shared.counters.errors, 1);
                    if tries >= WRITE_TRIES || e.kind != ErrorKind::Unavailable {
                        tracing::warn!(owner = %shared.owner, jobs = leases.len(), error = %explain(&e), "recording results failed: the jobs run again once their leases expire");
                        break None;
                    }
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
            }
        };
        for f in finishes {
            let ok = accepted
                .as_ref()
                .is_some_and(|a| a.contains(&(f.lease.tenant.clone(), f.lease.id)));
            if ok {
                bump(&shared.counters.succeeded, 1);
            } else {
                bump(&shared.counters.lost, 1);
                if accepted.is_some() {
                    tracing::warn!(owner = %shared.owner, job = %f.lease.id, "a result came after the job's lease was lost: not recorded");
                }
            }
        }
    }
    for f in others {
        let mut pause = WRITE_RETRY;
        for tries in 1..=WRITE_TRIES {
            match write_one(shared, &f).await {
                Ok(()) => break,
                Err(e) => {
                    bump(&shared.counters.errors, 1);
                    if tries >= WRITE_TRIES || e.kind != ErrorKind::Unavailable {
                        tracing::warn!(owner = %shared.owner, job = %f.lease.id, error = %explain(&e), "recording a job's outcome failed: it runs again once its lease expires");
                        break;
                    }
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
            }
        }
    }
}

async fn write_one(shared: &Shared, f: &Finish) -> Result<()> {
    let c = &shared.counters;
    let (db, owner, now) = (&shared.db, shared.owner.as_str(), shared.clock.now());
    let counted = |r: Requeued, when_queued: &AtomicU64| match r {
        Requeued::Queued => bump(when_queued, 1),
        Requeued::Cancelled | Requeued::Superseded => bump(&c.cancelled, 1),
        Requeued::Lost => bump(&c.lost, 1),
    };
    let ended = |ok: bool, counter: &AtomicU64| bump(if ok { counter } else { &c.lost }, 1);
    match &f.action {
        Action::Succeed(_) => {}
        Action::Fail(e) => ended(
            store::end(db, owner, &f.lease, now, JobState::Failed, e).await?,
            &c.failed,
        ),
        Action::Cancel(e) => ended(
            store::end(db, owner, &f.lease, now, JobState::Cancelled, e).await?,
            &c.cancelled,
        ),
        Action::Retry(at, e) => {
            let how = Requeue {
                at: Some(*at),
                counts: true,
                error: Some(e),
            };
            counted(
                store::requeue(db, owner, &f.lease, now, how).await?,
                &c.retried,
            );
        }
        Action::Postpone(at, e) => {
            let how = Requeue {
                at: Some(*at),
                counts: false,
                error: Some(e),
            };
            counted(
                store::requeue(db, owner, &f.lease, now, how).await?,
                &c.postponed,
            );
        }
        Action::Release => {
            let how = Requeue {
                at: None,
                counts: false,
                error: None,
            };
            counted(
                store::requeue(db, owner, &f.lease, now, how).await?,
                &c.released,
            );
        }
    }
    Ok(())
}
