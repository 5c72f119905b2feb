//! Jobs and durable timers (crm_core::jobs) on both databases, and the operations the gateway
//! serves from them (google.longrunning.Operations).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crm_api::google::longrunning::{self as lro, operations_client::OperationsClient};
use crm_api::v1;
use crm_core::clock::{Clock, ManualClock, SystemClock};
use crm_core::db::Db;
use crm_core::error::Error;
use crm_core::jobs::{
    self, CancelOutcome, Job, JobContext, JobHandlers, JobOutcome, JobState, OnDuplicate, Progress,
    Runner, RunnerSettings, ScheduleOptions, ScheduleOutcome,
};
use crm_core::tenant::{self, TenantStatus};
use crm_tests::{Backend, TestDb, TestServer, expect_code, req};
use prost::Message;
use serde_json::{Value as Json, json};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tonic::Code;
use tonic::transport::Channel;
use uuid::Uuid;

/// Fast polls, a 30 s lease and 10 s first retry on the manual clock, no retention.
fn settings() -> RunnerSettings {
    RunnerSettings {
        poll_interval: Duration::from_millis(20),
        batch_size: 16,
        lease: Duration::from_secs(30),
        concurrency: 8,
        retry_base: Duration::from_secs(10),
        retry_max: Duration::from_secs(3600),
        suspended_delay: Duration::from_secs(60),
        shutdown_grace: Duration::from_secs(5),
        retention: Duration::ZERO,
    }
}

fn manual_clock() -> ManualClock {
    ManualClock::new(SystemClock.now())
}

fn runner(db: &Db, clock: &ManualClock, handlers: &JobHandlers, s: RunnerSettings) -> Runner {
    Runner::start(db.clone(), Arc::new(clock.clone()), handlers.clone(), s)
}

async fn submit(db: &Db, clock: &ManualClock, tenant: &str, kind: &str, payload: Json) -> Uuid {
    let due = clock.now();
    submit_at(
        db,
        clock,
        tenant,
        kind,
        payload,
        due,
        &ScheduleOptions::default(),
    )
    .await
}

async fn submit_at(
    db: &Db,
    clock: &ManualClock,
    tenant: &str,
    kind: &str,
    payload: Json,
    due: chrono::DateTime<chrono::Utc>,
    options: &ScheduleOptions,
) -> Uuid {
    jobs::submit(db, clock, tenant, kind, &payload, due, options)
        .await
        .unwrap()
        .id
}

async fn job(db: &Db, tenant: &str, id: Uuid) -> Job {
    jobs::get(&db.conn, tenant, id).await.unwrap().unwrap()
}

/// Waits (up to 30 s) until `check` holds.
async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn until_state(db: &Db, tenant: &str, id: Uuid, state: JobState) -> Job {
    until(&format!("job {id} is {state:?}"), || async {
        job(db, tenant, id).await.state == state
    })
    .await;
    job(db, tenant, id).await
}

/// A handler that counts its calls and answers `answer(ctx)`.
fn counting<F>(
    calls: &Arc<AtomicU32>,
    answer: F,
) -> impl Fn(JobContext) -> jobs::handlers::HandlerFuture + Send + Sync + 'static
where
    F: Fn(&JobContext) -> crm_core::Result<JobOutcome> + Send + Sync + 'static,
{
    let calls = calls.clone();
    let answer = Arc::new(answer);
    move |ctx: JobContext| {
        calls.fetch_add(1, Ordering::SeqCst);
        let answer = answer.clone();
        Box::pin(async move { answer(&ctx) })
    }
}

async fn schedule_run_and_result(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    let clock = manual_clock();
    let calls = Arc::new(AtomicU32::new(0));
    let mut h = JobHandlers::new();
    h.register(
        "test.echo",
        counting(&calls, |ctx| {
            Ok(JobOutcome::Done(
                json!({"echo": ctx.payload, "attempt": ctx.attempt}),
            ))
        }),
    )
    .unwrap();
    let r = runner(&s.db, &clock, &h, settings());
    let id = submit(&s.db, &clock, "acme", "test.echo", json!({"n": 7})).await;
    let j = until_state(&s.db, "acme", id, JobState::Succeeded).await;
    assert_eq!(j.result, Some(json!({"echo": {"n": 7}, "attempt": 1})));
    assert_eq!(j.attempts, 1);
    assert_eq!(j.error, None);
    assert_eq!(j.lease_owner.as_deref(), Some(r.owner()));
    assert!(j.finish_time.is_some());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(r.stats().succeeded, 1);
    r.shutdown().await;
}

/// A timer scheduled in a write transaction commits or rolls back with it.
async fn timers_commit_with_the_write(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    let clock = manual_clock();
    let due = clock.now() + chrono::Duration::hours(1);
    let o = ScheduleOptions::default();
    let tx = s.db.begin_write().await.unwrap();
    let dropped = jobs::schedule(&tx.txn, &clock, "acme", "test.x", &json!({}), due, &o)
        .await
        .unwrap();
    drop(tx);
    assert!(
        jobs::get(&s.db.conn, "acme", dropped.id)
            .await
            .unwrap()
            .is_none()
    );
    let tx = s.db.begin_write().await.unwrap();
    let kept = jobs::schedule(&tx.txn, &clock, "acme", "test.x", &json!({}), due, &o)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let j = job(&s.db, "acme", kept.id).await;
    assert_eq!((j.state, j.due_time), (JobState::Queued, due));
    assert_eq!(s.count("jobs", "acme").await, 1);
    // Bad input is named.
    let e = jobs::submit(&s.db, &clock, "acme", "Bad Kind", &json!({}), due, &o)
        .await
        .unwrap_err();
    assert_eq!(e.violations[0].field, "kind");
}

async fn retries_back_off_then_fail(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    let clock = manual_clock();
    let (flaky, bad) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let mut h = JobHandlers::new();
    h.register(
        "test.flaky",
        counting(&flaky, |_| {
            Err(Error::unavailable("the mail relay is down"))
        }),
    )
    .unwrap()
    .register(
        "test.bad",
        counting(&bad, |_| Err(Error::invalid("payload", "names no case"))),
    )
    .unwrap();
    let r = runner(&s.db, &clock, &h, settings());
    let three = ScheduleOptions {
        max_attempts: 3,
        ..Default::default()
    };
    let id = submit_at(
        &s.db,
        &clock,
        "acme",
        "test.flaky",
        json!({}),
        clock.now(),
        &three,
    )
    .await;

    // Attempt 1 fails: back in the queue 10 s (less up to a quarter of jitter) later.
    until("attempt 1 failed", || async {
        let j = job(&s.db, "acme", id).await;
        j.state == JobState::Queued && j.attempts == 1
    })
    .await;
    let j = job(&s.db, "acme", id).await;
    let e = j.error.clone().unwrap();
    assert_eq!(e.code, "UNAVAILABLE");
    assert!(e.message.contains("mail relay"), "{}", e.message);
    let wait = j.due_time - clock.now();
    assert!(
        wait <= chrono::Duration::seconds(10) && wait >= chrono::Duration::milliseconds(7500),
        "{wait}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(flaky.load(Ordering::SeqCst), 1, "retried before its time");

    // Attempt 2 after the first delay; the second delay doubles.
    clock.advance(chrono::Duration::seconds(10));
    until("attempt 2 failed", || async {
        let j = job(&s.db, "acme", id).await;
        j.state == JobState::Queued && j.attempts == 2
    })
    .await;
    let wait = job(&s.db, "acme", id).await.due_time - clock.now();
    assert!(
        wait <= chrono::Duration::seconds(20) && wait >= chrono::Duration::seconds(15),
        "{wait}"
    );

    // Attempt 3 is the last: FAILED with the error.
    clock.advance(chrono::Duration::seconds(20));
    let j = until_state(&s.db, "acme", id, JobState::Failed).await;
    let e = j.error.unwrap();
    assert_eq!(e.code, "UNAVAILABLE");
    assert!(e.message.contains("attempt 3 of 3"), "{}", e.message);
    assert_eq!((j.attempts, flaky.load(Ordering::SeqCst)), (3, 3));

    // An error a retry cannot cure fails at once.
    let id = submit(&s.db, &clock, "acme", "test.bad", json!({})).await;
    let j = until_state(&s.db, "acme", id, JobState::Failed).await;
    assert_eq!(j.attempts, 1);
    assert_eq!(j.error.unwrap().code, "INVALID_ARGUMENT");
    assert_eq!(bad.load(Ordering::SeqCst), 1);
    let st = r.stats();
    assert_eq!((st.retried, st.failed), (2, 2));
}

async fn a_panicking_handler_fails_and_the_runner_lives(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    let clock = manual_clock();
    let mut h = JobHandlers::new();
    h.register("test.panic", |ctx: JobContext| async move {
        if ctx.payload["boom"].as_bool() == Some(true) {
            panic!("boom in job {}", ctx.id);
        }
        Ok(JobOutcome::done())
    })
    .unwrap();
    let r = runner(&s.db, &clock, &h, settings());
    let once = ScheduleOptions {
        max_attempts: 1,
        ..Default::default()
    };
    let now = clock.now();
    let id = submit_at(
        &s.db,
        &clock,
        "acme",
        "test.panic",
        json!({"boom": true}),
        now,
        &once,
    )
    .await;
    let j = until_state(&s.db, "acme", id, JobState::Failed).await;
    let e = j.error.unwrap();
    assert_eq!(e.code, "INTERNAL");
    assert!(
        e.message.contains(&format!("panicked: boom in job {id}")),
        "{}",
        e.message
    );
    assert_eq!(r.stats().panics, 1);
    // The same runner goes on running jobs.
    let ok = submit(&s.db, &clock, "acme", "test.panic", json!({"boom": false})).await;
    until_state(&s.db, "acme", ok, JobState::Succeeded).await;
    // With attempts left, a panic is retried like any internal error.
    let id = submit(&s.db, &clock, "acme", "test.panic", json!({"boom": true})).await;
    until("the panic was retried", || async {
        let j = job(&s.db, "acme", id).await;
        j.state == JobState::Queued && j.attempts == 1
    })
    .await;
    r.shutdown().await;
}

/// A handler that never ends keeps its job only until the lease expires; the runner that
/// takes it over owns it, and the first one's late result is refused, also while the second
/// attempt still runs.
async fn a_hung_handler_loses_its_lease(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    let clock = manual_clock();
    // Per attempt: entered, and the gate that lets it finish.
    let entered = [Arc::new(Notify::new()), Arc::new(Notify::new())];
    let gates = [Arc::new(Notify::new()), Arc::new(Notify::new())];
    let mut h = JobHandlers::new();
    let (e, g) = (entered.clone(), gates.clone());
    h.register("test.hang", move |ctx: JobContext| {
        let (entered, gates) = (e.clone(), g.clone());
        async move {
            let n = usize::try_from(ctx.attempt - 1).unwrap().min(1);
            entered[n].notify_one();
            // Ignores every request to stop.
            gates[n].notified().await;
            Ok(JobOutcome::Done(json!(ctx.attempt)))
        }
    })
    .unwrap();
    // One slot, held by the hung handler: it cannot claim the job again itself.
    let one = RunnerSettings {
        concurrency: 1,
        ..settings()
    };
    let first = runner(&s.db, &clock, &h, one);
    let id = submit(&s.db, &clock, "acme", "test.hang", json!({})).await;
    within(&entered[0]).await;
    let second = runner(&s.db, &clock, &h, settings());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let j = job(&s.db, "acme", id).await;
    assert_eq!(j.state, JobState::Running);
    assert_eq!(
        j.lease_owner.as_deref(),
        Some(first.owner()),
        "taken while leased"
    );

    clock.advance(chrono::Duration::seconds(31));
    within(&entered[1]).await;
    let j = job(&s.db, "acme", id).await;
    assert_eq!((j.state, j.attempts), (JobState::Running, 2));
    assert_eq!(j.lease_owner.as_deref(), Some(second.owner()));

    // The first attempt ends now: its result is not recorded.
    gates[0].notify_one();
    until("the late result was refused", || async {
        first.stats().lost == 1
    })
    .await;
    let j = job(&s.db, "acme", id).await;
    assert_eq!((j.state, j.result), (JobState::Running, None));
    assert_eq!(j.lease_owner.as_deref(), Some(second.owner()));

    gates[1].notify_one();
    let j = until_state(&s.db, "acme", id, JobState::Succeeded).await;
    assert_eq!(j.result, Some(json!(2)));
    assert_eq!(j.lease_owner.as_deref(), Some(second.owner()));
    assert_eq!(first.stats().succeeded, 0);
    assert_eq!(second.stats().succeeded, 1);
    first.shutdown().await;
    second.shutdown().await;
}

/// A runner sleeps between polls, with handlers or without (the gateway's, until domain crates
/// register theirs).
async fn an_idle_runner_sleeps_between_polls(backend: Backend) {
    let s = TestServer::start(backend).await;
    let clock = manual_clock();
    let mut h = JobHandlers::new();
    h.register("test.timer", |_| async { Ok(JobOutcome::done()) })
        .unwrap();
    let every_100ms = RunnerSettings {
        poll_interval: Duration::from_millis(100),
        ..settings()
    };
    let with = runner(&s.db, &clock, &h, every_100ms.clone());
    let without = runner(&s.db, &clock, &JobHandlers::new(), every_100ms);
    tokio::time::sleep(Duration::from_secs(1)).await;
    for r in [&with, &without] {
        // About 10; wake-ups of other tests in the same process may add a few.
        let polls = r.stats().polls;
        assert!((3..=50).contains(&polls), "{polls} polls in 1 s");
    }
}

/// Waits (up to 30 s) for a notification.
async fn within(n: &Notify) {
    tokio::time::timeout(Duration::from_secs(30), n.notified())
        .await
        .unwrap();
}

/// A runner killed without a word (kill -9) loses nothing: its jobs come back once their
/// leases expire and continue from their checkpoints.
async fn a_killed_runner_loses_nothing(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    let clock = manual_clock();
    let (h, done, reached) = importer(3);
    let first = runner(&s.db, &clock, &h, settings());
    let ids: Vec<Uuid> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(submit(&s.db, &clock, "acme", "test.import", json!({"total": 5})).await);
        }
        v
    };
    until("every job is stuck at item 3", || async {
        reached.lock().unwrap().len() == 3
    })
    .await;
    first.kill();
    // Nobody takes them while their leases hold.
    let second = runner(&s.db, &clock, &h, settings());
    tokio::time::sleep(Duration::from_millis(300)).await;
    for id in &ids {
        assert_eq!(job(&s.db, "acme", *id).await.state, JobState::Running);
    }
    clock.advance(chrono::Duration::seconds(31));
    for id in &ids {
        let j = until_state(&s.db, "acme", *id, JobState::Succeeded).await;
        assert_eq!(j.attempts, 2);
        assert_eq!(j.result, Some(json!({"imported": 5})));
        assert_eq!(j.progress.unwrap().done, 5);
        // Items 0..3 by the first runner, 3..5 by the second, each once.
        assert_eq!(done.lock().unwrap()[id], vec![0, 1, 2, 3, 4]);
    }
    second.shutdown().await;
}

/// `test.import`: processes `payload.total` items, saving a checkpoint and progress after each,
/// resuming from the checkpoint; the first time it comes to item `stop_at` it waits there until
/// told to stop (and then stops). Records the items each job did, and the jobs that reached
/// the stop.
#[allow(clippy::type_complexity)]
fn importer(
    stop_at: u64,
) -> (
    JobHandlers,
    Arc<Mutex<HashMap<Uuid, Vec<u64>>>>,
    Arc<Mutex<Vec<Uuid>>>,
) {
    let done: Arc<Mutex<HashMap<Uuid, Vec<u64>>>> = Arc::default();
    let reached: Arc<Mutex<Vec<Uuid>>> = Arc::default();
    let mut h = JobHandlers::new();
    let (d, r) = (done.clone(), reached.clone());
    h.register("test.import", move |ctx: JobContext| {
        let (done, reached) = (d.clone(), r.clone());
        async move {
            let total = ctx.payload["total"].as_u64().unwrap_or(0);
            let start = ctx
                .checkpoint()
                .and_then(|c| c["next"].as_u64())
                .unwrap_or(0);
            for i in start..total {
                if i == stop_at && !reached.lock().unwrap().contains(&ctx.id) {
                    reached.lock().unwrap().push(ctx.id);
                    ctx.cancelled().await;
                    return Ok(JobOutcome::Cancelled);
                }
                done.lock().unwrap().entry(ctx.id).or_default().push(i);
                let mut counts = std::collections::BTreeMap::new();
                counts.insert("created".to_owned(), i64::try_from(i + 1).unwrap());
                let progress = Progress {
                    done: i64::try_from(i + 1).unwrap(),
                    total: i64::try_from(total).unwrap(),
                    counts,
                };
                ctx.save(&json!({"next": i + 1}), &progress).await?;
            }
            Ok(JobOutcome::Done(json!({"imported": total})))
        }
    })
    .unwrap();
    (h, done, reached)
}

async fn a_timer_in_the_past_fires_at_once(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    let clock = manual_clock();
    let calls = Arc::new(AtomicU32::new(0));
    let mut h = JobHandlers::new();
    h.register("test.timer", counting(&calls, |_| Ok(JobOutcome::done())))
        .unwrap();
    // Polls once an hour: only the wake-up of scheduling can make it run now.
    let slow = RunnerSettings {
        poll_interval: Duration::from_secs(3600),
        ..settings()
    };
    let r = runner(&s.db, &clock, &h, slow);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let past = clock.now() - chrono::Duration::hours(3);
    let o = ScheduleOptions::default();
    let id = submit_at(&s.db, &clock, "acme", "test.timer", json!({}), past, &o).await;
    until_state(&s.db, "acme", id, JobState::Succeeded).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    r.shutdown().await;
}

async fn a_future_timer_fires_when_the_clock_reaches_it(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    let clock = manual_clock();
    let calls = Arc::new(AtomicU32::new(0));
    let mut h = JobHandlers::new();
    h.register("test.timer", counting(&calls, |_| Ok(JobOutcome::done())))
        .unwrap();
    let r = runner(&s.db, &clock, &h, settings());
    let due = clock.now() + chrono::Duration::hours(1);
    let o = ScheduleOptions::default();
    let id = submit_at(&s.db, &clock, "acme", "test.timer", json!({}), due, &o).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    clock.advance(chrono::Duration::minutes(59));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 0, "fired early");
    assert_eq!(job(&s.db, "acme", id).await.state, JobState::Queued);
    clock.advance(chrono::Duration::minutes(1));
    until_state(&s.db, "acme", id, JobState::Succeeded).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    r.shutdown().await;
}

async fn cancel_pending_running_and_finished_jobs(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    let clock = manual_clock();
    let calls = Arc::new(AtomicU32::new(0));
    let mut h = JobHandlers::new();
    h.register("test.timer", counting(&calls, |_| Ok(JobOutcome::done())))
        .unwrap()
        .register("test.loop", |ctx: JobContext| async move {
            // Renews its lease (and so learns of a cancel request) every 20 ms.
            while !ctx.is_cancelled() {
                ctx.heartbeat().await?;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(JobOutcome::Cancelled)
        })
        .unwrap();
    let r = runner(&s.db, &clock, &h, settings());
    let c = |id| {
        let (db, clock) = (s.db.clone(), clock.clone());
        async move { jobs::cancel(&db.conn, &clock, "acme", id).await.unwrap() }
    };

    // Pending: cancelled at once, never runs.
    let due = clock.now() + chrono::Duration::minutes(5);
    let o = ScheduleOptions::default();
    let pending = submit_at(&s.db, &clock, "acme", "test.timer", json!({}), due, &o).await;
    assert_eq!(c(pending).await, Some(CancelOutcome::Cancelled));
    assert_eq!(
        c(pending).await,
        Some(CancelOutcome::AlreadyDone(JobState::Cancelled))
    );
    clock.advance(chrono::Duration::minutes(10));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let j = job(&s.db, "acme", pending).await;
    assert_eq!(j.state, JobState::Cancelled);
    assert_eq!(j.error.unwrap().code, "CANCELLED");
    assert_eq!(calls.load(Ordering::SeqCst), 0);

    // Running: the handler learns at its next heartbeat and stops.
    let running = submit(&s.db, &clock, "acme", "test.loop", json!({})).await;
    until_state(&s.db, "acme", running, JobState::Running).await;
    assert_eq!(c(running).await, Some(CancelOutcome::Requested));
    let j = until_state(&s.db, "acme", running, JobState::Cancelled).await;
    assert!(j.cancel_requested);
    assert_eq!(j.error.unwrap().code, "CANCELLED");
    assert_eq!(
        c(running).await,
        Some(CancelOutcome::AlreadyDone(JobState::Cancelled))
    );

    // Finished: nothing changes.
    let finished = submit(&s.db, &clock, "acme", "test.timer", json!({})).await;
    until_state(&s.db, "acme", finished, JobState::Succeeded).await;
    assert_eq!(
        c(finished).await,
        Some(CancelOutcome::AlreadyDone(JobState::Succeeded))
    );
    assert_eq!(
        job(&s.db, "acme", finished).await.state,
        JobState::Succeeded
    );

    // Unknown, or another tenant's.
    assert_eq!(c(Uuid::now_v7()).await, None);
    s.tenant("globex").await;
    assert_eq!(
        jobs::cancel(&s.db.conn, &clock, "globex", finished)
            .await
            .unwrap(),
        None
    );
    r.shutdown().await;
}

async fn a_suspended_tenants_jobs_wait(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    let clock = manual_clock();
    let calls = Arc::new(AtomicU32::new(0));
    let mut h = JobHandlers::new();
    h.register("test.timer", counting(&calls, |_| Ok(JobOutcome::done())))
        .unwrap();
    tenant::set_status(&s.db, &clock, "acme", TenantStatus::Suspended)
        .await
        .unwrap();
    let r = runner(&s.db, &clock, &h, settings());
    let id = submit(&s.db, &clock, "acme", "test.timer", json!({})).await;
    until("the job was postponed", || async {
        r.stats().postponed == 1
    })
    .await;
    let j = job(&s.db, "acme", id).await;
    assert_eq!((j.state, j.attempts), (JobState::Queued, 0));
    assert_eq!(j.due_time, clock.now() + chrono::Duration::seconds(60));
    assert!(j.error.unwrap().message.contains("suspended"));
    assert_eq!(calls.load(Ordering::SeqCst), 0);

    tenant::set_status(&s.db, &clock, "acme", TenantStatus::Active)
        .await
        .unwrap();
    clock.advance(chrono::Duration::seconds(60));
    let j = until_state(&s.db, "acme", id, JobState::Succeeded).await;
    assert_eq!(j.attempts, 1);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    r.shutdown().await;
}

async fn dedupe_keys_replace_or_keep_the_pending_timer(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    s.tenant("globex").await;
    let clock = manual_clock();
    let in_hours = |h: i64| clock.now() + chrono::Duration::hours(h);
    let keyed = |on_duplicate| ScheduleOptions {
        dedupe_key: Some("cases/42".into()),
        on_duplicate,
        ..Default::default()
    };
    let put = |tenant: &'static str, v: i64, h: i64, on: OnDuplicate| {
        let (db, clock, due, o) = (s.db.clone(), clock.clone(), in_hours(h), keyed(on));
        async move {
            jobs::submit(&db, &clock, tenant, "sla.breach", &json!({"v": v}), due, &o)
                .await
                .unwrap()
        }
    };
    let first = put("acme", 1, 1, OnDuplicate::Replace).await;
    assert_eq!(first.outcome, ScheduleOutcome::Inserted);
    let again = put("acme", 2, 2, OnDuplicate::Replace).await;
    assert_eq!(
        (again.id, again.outcome),
        (first.id, ScheduleOutcome::Replaced)
    );
    let kept = put("acme", 3, 3, OnDuplicate::Keep).await;
    assert_eq!((kept.id, kept.outcome), (first.id, ScheduleOutcome::Kept));
    let j = job(&s.db, "acme", first.id).await;
    assert_eq!((j.payload, j.due_time), (json!({"v": 2}), in_hours(2)));
    assert_eq!(s.count("jobs", "acme").await, 1);
    // Keys are per tenant.
    let other = put("globex", 1, 1, OnDuplicate::Keep).await;
    assert_eq!(other.outcome, ScheduleOutcome::Inserted);
    assert_ne!(other.id, first.id);

    // Once the timer has fired, the key names the next one.
    let mut h = JobHandlers::new();
    h.register("sla.breach", |_| async { Ok(JobOutcome::done()) })
        .unwrap();
    let r = runner(&s.db, &clock, &h, settings());
    clock.advance(chrono::Duration::hours(2));
    until_state(&s.db, "acme", first.id, JobState::Succeeded).await;
    let next = put("acme", 4, 5, OnDuplicate::Keep).await;
    assert_eq!(next.outcome, ScheduleOutcome::Inserted);
    assert_ne!(next.id, first.id);
    r.shutdown().await;
}

/// A graceful shutdown gives the unfinished jobs back at once (the attempt not counted), and
/// the next runner resumes from the checkpoint.
async fn a_restart_resumes_from_the_checkpoint(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    let clock = manual_clock();
    let admin = s.token("acme", Uuid::now_v7(), &["admin"]);
    let (h, done, reached) = importer(3);
    let first = runner(&s.db, &clock, &h, settings());
    let now = clock.now();
    let o = ScheduleOptions {
        collection: Some("contacts".into()),
        ..Default::default()
    };
    let id = submit_at(
        &s.db,
        &clock,
        "acme",
        "test.import",
        json!({"total": 5}),
        now,
        &o,
    )
    .await;
    until("the import is stuck at item 3", || async {
        !reached.lock().unwrap().is_empty()
    })
    .await;
    // Progress so far, as clients see it.
    let mut ops = OperationsClient::new(s.channel.clone());
    let op = get_op(&mut ops, &admin, id).await;
    assert!(!op.done);
    let m = metadata(&op);
    assert_eq!(m.state, v1::OperationState::Running as i32);
    assert_eq!((m.done_count, m.total_count), (3, 5));
    assert_eq!(m.counts["created"], 3);
    assert_eq!(m.collection, "contacts");

    first.shutdown().await;
    let j = job(&s.db, "acme", id).await;
    assert_eq!((j.state, j.attempts), (JobState::Queued, 0));
    assert_eq!(j.checkpoint, Some(json!({"next": 3})));

    let second = runner(&s.db, &clock, &h, settings());
    let j = until_state(&s.db, "acme", id, JobState::Succeeded).await;
    assert_eq!(j.attempts, 1);
    assert_eq!(done.lock().unwrap()[&id], vec![0, 1, 2, 3, 4]);
    let op = get_op(&mut ops, &admin, id).await;
    assert!(op.done);
    let Some(lro::operation::Result::Response(any)) = op.result else {
        panic!("{op:?}")
    };
    assert_eq!(any.type_url, "type.googleapis.com/crm.v1.OperationResult");
    let result = v1::OperationResult::decode(any.value.as_slice()).unwrap();
    assert_eq!(result.kind, "test.import");
    assert_eq!(result.counts["created"], 5);
    let Some(prost_types::value::Kind::StructValue(st)) = result.result.unwrap().kind else {
        panic!("result is not an object")
    };
    assert_eq!(
        st.fields["imported"].kind,
        Some(prost_types::value::Kind::NumberValue(5.0))
    );
    second.shutdown().await;
}

async fn get_op(ops: &mut OperationsClient<Channel>, token: &str, id: Uuid) -> lro::Operation {
    ops.get_operation(req(
        token,
        lro::GetOperationRequest {
            name: format!("operations/{id}"),
        },
    ))
    .await
    .unwrap()
    .into_inner()
}

fn metadata(op: &lro::Operation) -> v1::OperationMetadata {
    let any = op.metadata.as_ref().unwrap();
    assert_eq!(any.type_url, "type.googleapis.com/crm.v1.OperationMetadata");
    v1::OperationMetadata::decode(any.value.as_slice()).unwrap()
}

fn grant(collection: &str, actions: &[v1::Action], scope: v1::Scope) -> v1::Grant {
    v1::Grant {
        collection: collection.into(),
        actions: actions.iter().map(|a| *a as i32).collect(),
        scope: scope as i32,
    }
}

async fn operations_over_grpc(backend: Backend) {
    let s = TestServer::start(backend).await;
    s.tenant("acme").await;
    s.tenant("globex").await;
    let clock = manual_clock();
    let admin = s.token("acme", Uuid::now_v7(), &["admin"]);
    let mut access = s.access();
    for (key, grants) in [
        (
            "rep",
            vec![grant(
                "contacts",
                &[v1::Action::Read, v1::Action::Create, v1::Action::Update],
                v1::Scope::Own,
            )],
        ),
        (
            "analyst",
            vec![grant("contacts", &[v1::Action::Read], v1::Scope::All)],
        ),
    ] {
        access
            .create_role(req(
                &admin,
                v1::CreateRoleRequest {
                    role_id: key.into(),
                    role: Some(v1::Role {
                        display_name: key.into(),
                        grants,
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
            ))
            .await
            .unwrap();
    }
    let (starter_id, other_id) = (Uuid::now_v7(), Uuid::now_v7());
    let starter = s.token("acme", starter_id, &["rep"]);
    let other_rep = s.token("acme", other_id, &["rep"]);
    let analyst = s.token("acme", Uuid::now_v7(), &["analyst"]);
    let stranger = s.token("globex", Uuid::now_v7(), &["admin"]);

    let (h, _, _) = importer(u64::MAX);
    let r = runner(&s.db, &clock, &h, settings());
    let mine = ScheduleOptions {
        collection: Some("contacts".into()),
        creator: Some(starter_id),
        ..Default::default()
    };
    let now = clock.now();
    let import = submit_at(
        &s.db,
        &clock,
        "acme",
        "test.import",
        json!({"total": 4}),
        now,
        &mine,
    )
    .await;
    let later = now + chrono::Duration::hours(1);
    let pending = submit_at(
        &s.db,
        &clock,
        "acme",
        "test.import",
        json!({"total": 4}),
        later,
        &mine,
    )
    .await;
    let system = submit_at(
        &s.db,
        &clock,
        "acme",
        "test.import",
        json!({"total": 1}),
        later,
        &ScheduleOptions::default(),
    )
    .await;
    let mut ops = OperationsClient::new(s.channel.clone());
    let name = |id: Uuid| format!("operations/{id}");

    // Wait returns once the import is done.
    let op = ops
        .wait_operation(req(
            &starter,
            lro::WaitOperationRequest {
                name: name(import),
                timeout: Some(prost_types::Duration {
                    seconds: 4,
                    nanos: 0,
                }),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(op.done, "{op:?}");
    assert_eq!(op.name, name(import));
    let m = metadata(&op);
    assert_eq!(m.state, v1::OperationState::Succeeded as i32);
    assert_eq!(
        (m.kind.as_str(), m.done_count, m.total_count),
        ("test.import", 4, 4)
    );
    assert_eq!(m.creator, format!("users/{starter_id}"));
    assert_eq!(m.attempt, 1);
    assert!(matches!(
        op.result,
        Some(lro::operation::Result::Response(_))
    ));

    // A wait that times out answers the operation as it is.
    let started = Instant::now();
    let op = ops
        .wait_operation(req(
            &starter,
            lro::WaitOperationRequest {
                name: name(pending),
                timeout: Some(prost_types::Duration {
                    seconds: 0,
                    nanos: 300_000_000,
                }),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!op.done && op.result.is_none());
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(metadata(&op).state, v1::OperationState::Queued as i32);

    // Who sees what.
    let list = |token: String, filter: &str| {
        let (mut ops, filter) = (ops.clone(), filter.to_owned());
        async move {
            let mut names = Vec::new();
            let mut page_token = String::new();
            loop {
                let page = ops
                    .list_operations(req(
                        &token,
                        lro::ListOperationsRequest {
                            name: "operations".into(),
                            filter: filter.clone(),
                            page_size: 1,
                            page_token,
                        },
                    ))
                    .await
                    .unwrap()
                    .into_inner();
                names.extend(page.operations.into_iter().map(|o| o.name));
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            names.sort();
            names
        }
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(
        list(starter.clone(), "").await,
        sorted(vec![name(import), name(pending)])
    );
    assert_eq!(
        list(analyst.clone(), "").await,
        sorted(vec![name(import), name(pending)])
    );
    assert_eq!(
        list(admin.clone(), "").await,
        sorted(vec![name(import), name(pending), name(system)])
    );
    assert!(list(other_rep.clone(), "").await.is_empty());
    assert_eq!(
        list(admin.clone(), "state = SUCCEEDED").await,
        vec![name(import)]
    );
    assert_eq!(
        list(admin.clone(), "kind = \"test.import\" AND state = QUEUED").await,
        sorted(vec![name(pending), name(system)])
    );
    let st = expect_code(
        ops.get_operation(req(
            &other_rep,
            lro::GetOperationRequest { name: name(import) },
        ))
        .await,
        Code::PermissionDenied,
    );
    assert_eq!(crm_tests::reason(&st), "OUT_OF_SCOPE");
    ops.get_operation(req(
        &analyst,
        lro::GetOperationRequest { name: name(import) },
    ))
    .await
    .unwrap();
    expect_code(
        ops.get_operation(req(
            &starter,
            lro::GetOperationRequest { name: name(system) },
        ))
        .await,
        Code::PermissionDenied,
    );
    // Another tenant's operation does not exist for them.
    for id in [import, pending, system] {
        expect_code(
            ops.get_operation(req(&stranger, lro::GetOperationRequest { name: name(id) }))
                .await,
            Code::NotFound,
        );
        expect_code(
            ops.cancel_operation(req(
                &stranger,
                lro::CancelOperationRequest { name: name(id) },
            ))
            .await,
            Code::NotFound,
        );
    }
    expect_code(
        ops.get_operation(req(
            &admin,
            lro::GetOperationRequest {
                name: "operations/nope".into(),
            },
        ))
        .await,
        Code::InvalidArgument,
    );
    expect_code(
        ops.list_operations(req(
            &admin,
            lro::ListOperationsRequest {
                filter: "nonsense = 1".into(),
                ..Default::default()
            },
        ))
        .await,
        Code::InvalidArgument,
    );

    // Cancel: reading is not enough; the starter may; twice is fine; a finished one stays.
    expect_code(
        ops.cancel_operation(req(
            &analyst,
            lro::CancelOperationRequest {
                name: name(pending),
            },
        ))
        .await,
        Code::PermissionDenied,
    );
    for _ in 0..2 {
        ops.cancel_operation(req(
            &starter,
            lro::CancelOperationRequest {
                name: name(pending),
            },
        ))
        .await
        .unwrap();
    }
    let op = get_op(&mut ops, &starter, pending).await;
    assert!(op.done);
    let Some(lro::operation::Result::Error(e)) = &op.result else {
        panic!("{op:?}")
    };
    assert_eq!(e.code, Code::Cancelled as i32);
    ops.cancel_operation(req(
        &starter,
        lro::CancelOperationRequest { name: name(import) },
    ))
    .await
    .unwrap();
    assert_eq!(
        metadata(&get_op(&mut ops, &starter, import).await).state,
        v1::OperationState::Succeeded as i32
    );

    // Delete: only finished operations.
    let st = expect_code(
        ops.delete_operation(req(
            &admin,
            lro::DeleteOperationRequest { name: name(system) },
        ))
        .await,
        Code::FailedPrecondition,
    );
    assert_eq!(crm_tests::reason(&st), "OPERATION_NOT_DONE");
    expect_code(
        ops.delete_operation(req(
            &analyst,
            lro::DeleteOperationRequest { name: name(import) },
        ))
        .await,
        Code::PermissionDenied,
    );
    ops.delete_operation(req(
        &starter,
        lro::DeleteOperationRequest {
            name: name(pending),
        },
    ))
    .await
    .unwrap();
    expect_code(
        ops.get_operation(req(
            &starter,
            lro::GetOperationRequest {
                name: name(pending),
            },
        ))
        .await,
        Code::NotFound,
    );
    expect_code(
        ops.delete_operation(req(
            &starter,
            lro::DeleteOperationRequest {
                name: name(pending),
            },
        ))
        .await,
        Code::NotFound,
    );
    r.shutdown().await;
}

crm_tests::both!(
    schedule_run_and_result,
    timers_commit_with_the_write,
    retries_back_off_then_fail,
    a_panicking_handler_fails_and_the_runner_lives,
    a_hung_handler_loses_its_lease,
    a_killed_runner_loses_nothing,
    a_timer_in_the_past_fires_at_once,
    a_future_timer_fires_when_the_clock_reaches_it,
    cancel_pending_running_and_finished_jobs,
    a_suspended_tenants_jobs_wait,
    dedupe_keys_replace_or_keep_the_pending_timer,
    a_restart_resumes_from_the_checkpoint,
    operations_over_grpc,
    an_idle_runner_sleeps_between_polls,
);

/// Three runners (replicas) on one PostgreSQL database share 2,000 due jobs: each runs
/// exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_runners_share_the_queue_and_run_each_job_once() {
    let s = TestServer::start(Backend::Postgres).await;
    s.tenant("acme").await;
    s.tenant("globex").await;
    let clock = manual_clock();
    let runs: Arc<Mutex<HashMap<Uuid, u32>>> = Arc::default();
    let mut h = JobHandlers::new();
    let r = runs.clone();
    h.register("test.count", move |ctx: JobContext| {
        let runs = r.clone();
        async move {
            *runs.lock().unwrap().entry(ctx.id).or_default() += 1;
            tokio::time::sleep(Duration::from_millis(2)).await;
            Ok(JobOutcome::done())
        }
    })
    .unwrap();
    let tx = s.db.begin_write().await.unwrap();
    for i in 0..2000 {
        let tenant = if i % 2 == 0 { "acme" } else { "globex" };
        let (o, due) = (ScheduleOptions::default(), clock.now());
        jobs::schedule(
            &tx.txn,
            &clock,
            tenant,
            "test.count",
            &json!({"i": i}),
            due,
            &o,
        )
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    let mut runners = Vec::new();
    for _ in 0..3 {
        let db = Db::connect(&s.test_db.url, 4).await.unwrap();
        runners.push(runner(&db, &clock, &h, settings()));
    }
    until("every job succeeded", || async {
        runs.lock().unwrap().len() == 2000
            && runners.iter().map(|r| r.stats().succeeded).sum::<u64>() == 2000
    })
    .await;
    let runs = runs.lock().unwrap().clone();
    assert!(runs.values().all(|n| *n == 1), "some job ran twice");
    for r in &runners {
        let st = r.stats();
        assert!(st.succeeded > 0, "a runner got no work: {st:?}");
        assert_eq!((st.lost, st.failed, st.errors), (0, 0, 0), "{st:?}");
    }
    for tenant in ["acme", "globex"] {
        let q = format!(
            "SELECT count(*) AS n FROM jobs WHERE tenant_id = '{tenant}' AND state = 'SUCCEEDED' AND attempts = 1"
        );
        use sea_orm::ConnectionTrait;
        let row =
            s.db.conn
                .query_one_raw(sea_orm::Statement::from_string(s.db.backend(), q))
                .await
                .unwrap()
                .unwrap();
        assert_eq!(row.try_get::<i64>("", "n").unwrap(), 1000);
    }
    for r in runners {
        r.shutdown().await;
    }
}

/// A TCP proxy that can be cut: every connection through it dropped, new ones refused.
struct Proxy {
    port: u16,
    tasks: Arc<tokio::sync::Mutex<tokio::task::JoinSet<()>>>,
}

impl Proxy {
    async fn start(target: String) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let tasks: Arc<tokio::sync::Mutex<tokio::task::JoinSet<()>>> = Arc::default();
        let t = tasks.clone();
        tasks.lock().await.spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                t.lock().await.spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Proxy { port, tasks }
    }

    async fn cut(&self) {
        self.tasks.lock().await.abort_all();
    }
}

/// The database going away while a runner holds jobs: it cannot record their outcomes, and
/// the jobs return to the queue when their leases expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_cut_returns_claimed_jobs_to_the_queue() {
    let test_db = TestDb::new(Backend::Postgres).await;
    let server = crm_tests::postgres_server();
    let host_port = server
        .split("://")
        .nth(1)
        .and_then(|r| r.rsplit('@').next())
        .and_then(|r| r.split('/').next())
        .unwrap()
        .to_owned();
    let user = server
        .split("://")
        .nth(1)
        .unwrap()
        .split('@')
        .next()
        .unwrap();
    let proxy = Proxy::start(host_port).await;
    let db_name = test_db.url.rsplit('/').next().unwrap().to_owned();
    let via_proxy = format!("postgres://{user}@127.0.0.1:{}/{db_name}", proxy.port);
    let s = TestServer::start_on(test_db, None).await;
    s.tenant("acme").await;
    let clock = manual_clock();
    let gate = Arc::new(Notify::new());
    let started = Arc::new(AtomicU32::new(0));
    let mut h = JobHandlers::new();
    let (g, st) = (gate.clone(), started.clone());
    h.register("test.slow", move |ctx: JobContext| {
        let (gate, started) = (g.clone(), st.clone());
        async move {
            if ctx.attempt == 1 {
                let opened = gate.notified();
                tokio::pin!(opened);
                opened.as_mut().enable();
                started.fetch_add(1, Ordering::SeqCst);
                opened.await;
            }
            Ok(JobOutcome::Done(json!(ctx.attempt)))
        }
    })
    .unwrap();
    let cut_off = Db::connect_with(
        &via_proxy,
        crm_core::db::DbOptions {
            max_connections: 2,
            statement_timeout: Duration::from_millis(500),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let first = runner(&cut_off, &clock, &h, settings());
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(submit(&s.db, &clock, "acme", "test.slow", json!({})).await);
    }
    until("all four run", || async {
        started.load(Ordering::SeqCst) == 4
    })
    .await;
    proxy.cut().await;
    gate.notify_waiters();
    until("the first runner gave up recording", || async {
        first.stats().errors >= 1
    })
    .await;
    for id in &ids {
        assert_eq!(job(&s.db, "acme", *id).await.state, JobState::Running);
    }
    let second = runner(&s.db, &clock, &h, settings());
    clock.advance(chrono::Duration::seconds(31));
    for id in &ids {
        let j = until_state(&s.db, "acme", *id, JobState::Succeeded).await;
        assert_eq!((j.result, j.attempts), (Some(json!(2)), 2));
        assert_eq!(j.lease_owner.as_deref(), Some(second.owner()));
    }
    assert_eq!(first.stats().succeeded, 0);
    first.kill();
    second.shutdown().await;
}
