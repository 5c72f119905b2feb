//! The outbox relay (P1): publishes committed events to NATS JetStream.
//!
//! Each event goes to `<subject_prefix>.<tenant>.<resource>.<verb>` as a `crm.v1.Event` in
//! protobuf binary, with the JetStream message id `Nats-Msg-Id` = the event id, so a
//! message published twice within the stream's duplicate window (a relay that died between
//! JetStream's acknowledgement and marking the row) is stored once. The stream is created
//! when missing (file storage, `events.stream_max_age_hours`, `events.duplicate_window_ms`).
//!
//! A claim ([`crm_core::outbox::claim`]) takes at most one event per record, the earliest
//! unpublished one, so per-record order holds across relays and across failures: an event
//! JetStream did not acknowledge stays unpublished and holds back its record's later
//! events. While NATS is down, claims fail, the rows wait, and the relay retries with
//! exponential backoff; the API never waits for NATS.

use crate::config::Events as Settings;
use crm_core::db::Db;
use crm_core::outbox;
use futures::future::join_all;
use std::time::Duration;
use tokio::sync::watch;
use uuid::Uuid;

/// The JetStream side of a relay.
#[derive(Clone)]
pub struct Publisher {
    js: async_nats::jetstream::Context,
    prefix: String,
    timeout: Duration,
}

/// Connects to NATS and makes sure the stream exists.
pub async fn connect(s: &Settings) -> Result<Publisher, String> {
    let timeout = Duration::from_millis(s.publish_timeout_ms);
    let client = async_nats::ConnectOptions::new()
        .name("crm relay")
        .connection_timeout(timeout)
        .connect(s.nats_url.trim())
        .await
        .map_err(|e| format!("cannot connect to NATS at {}: {e}", s.nats_url))?;
    let js = async_nats::jetstream::context::ContextBuilder::new()
        .timeout(timeout)
        .ack_timeout(timeout)
        .build(client);
    let config = async_nats::jetstream::stream::Config {
        name: s.stream.clone(),
        description: Some("crm events (P1): crm.v1.Event messages".into()),
        subjects: vec![format!("{}.>", s.subject_prefix)],
        max_age: Duration::from_secs(s.stream_max_age_hours.saturating_mul(3600)),
        duplicate_window: Duration::from_millis(s.duplicate_window_ms),
        storage: async_nats::jetstream::stream::StorageType::File,
        ..Default::default()
    };
    js.get_or_create_stream(config).await.map_err(|e| {
        format!(
            "cannot find or create the JetStream stream {}: {e}",
            s.stream
        )
    })?;
    Ok(Publisher {
        js,
        prefix: s.subject_prefix.clone(),
        timeout,
    })
}

impl Publisher {
    /// Publishes the events and returns the ids JetStream acknowledged (stored, or dropped
    /// as a duplicate), with the first error if any failed.
    async fn publish(
        &self,
        events: &[crm_core::journal::OutboxEvent],
    ) -> (Vec<Uuid>, Option<String>) {
        let mut pending = Vec::with_capacity(events.len());
        let mut error = None;
        for e in events {
            let msg = crate::api::events::event_out(e, &self.prefix);
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", e.id.to_string().as_str());
            headers.insert("Content-Type", "application/protobuf; proto=crm.v1.Event");
            let payload = prost::Message::encode_to_vec(&msg);
            match self
                .js
                .publish_with_headers(msg.subject, headers, payload.into())
                .await
            {
                Ok(ack) => pending.push((e.id, ack)),
                Err(err) => {
                    // The rest of the batch waits for the next claim (at most one event per
                    // record is in a batch, so skipping never reorders a record).
                    error = Some(err.to_string());
                    break;
                }
            }
        }
        let acks = join_all(
            pending
                .into_iter()
                .map(|(id, ack)| async move { (id, ack.await) }),
        )
        .await;
        let mut done = Vec::with_capacity(acks.len());
        for (id, ack) in acks {
            match ack {
                Ok(_) => done.push(id),
                Err(err) => {
                    error.get_or_insert_with(|| err.to_string());
                }
            }
        }
        (done, error)
    }
}

/// What one round of a relay did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    /// Events claimed.
    pub claimed: usize,
    /// Events published and marked.
    pub published: usize,
}

/// Claims one batch, publishes it and marks what JetStream acknowledged. An error when the
/// database failed or when any event could not be published (the others are marked).
pub async fn round(db: &Db, p: &Publisher, batch: u32) -> Result<Round, String> {
    let claim = outbox::claim(db, u64::from(batch))
        .await
        .map_err(|e| format!("claim: {}", crate::server::explain(&e)))?;
    let claimed = claim.events.len();
    if claimed == 0 {
        claim
            .finish(db, &[], chrono::Utc::now())
            .await
            .map_err(|e| crate::server::explain(&e))?;
        return Ok(Round::default());
    }
    let (done, error) = match tokio::time::timeout(
        p.timeout + Duration::from_millis(500),
        p.publish(&claim.events),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => (vec![], Some("publishing timed out".to_owned())),
    };
    let published = done.len();
    claim
        .finish(db, &done, chrono::Utc::now())
        .await
        .map_err(|e| format!("marking published events: {}", crate::server::explain(&e)))?;
    match error {
        Some(e) => Err(format!(
            "NATS: {e} ({published} of {claimed} events published; the rest wait)"
        )),
        None => Ok(Round { claimed, published }),
    }
}

/// Runs a relay until `stop` turns true: connects (retrying with backoff while NATS is
/// down), then claims and publishes, `events.concurrency` claims at a time on PostgreSQL
/// (one on SQLite).
pub async fn run(db: Db, s: Settings, stop: watch::Receiver<bool>) {
    let base = Duration::from_millis(s.retry_base_ms);
    let max = Duration::from_millis(s.retry_max_ms);
    let mut delay = base;
    let publisher = loop {
        if *stop.borrow() {
            return;
        }
        match connect(&s).await {
            Ok(p) => break p,
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "event relay: NATS not ready; events wait in the outbox");
                if stopped_within(&stop, delay).await {
                    return;
                }
                delay = (delay * 2).min(max);
            }
        }
    };
    tracing::info!(stream = %s.stream, prefix = %s.subject_prefix, "event relay publishing to NATS JetStream");
    let workers = if db.backend() == sea_orm::DbBackend::Postgres {
        s.concurrency.max(1)
    } else {
        1
    };
    let tasks: Vec<_> = (0..workers)
        .map(|_| tokio::spawn(work(db.clone(), publisher.clone(), s.clone(), stop.clone())))
        .collect();
    for t in tasks {
        let _ = t.await;
    }
}

/// One claim loop of a relay.
async fn work(db: Db, p: Publisher, s: Settings, stop: watch::Receiver<bool>) {
    let base = Duration::from_millis(s.retry_base_ms);
    let max = Duration::from_millis(s.retry_max_ms);
    let poll = Duration::from_millis(s.poll_interval_ms);
    let mut delay = base;
    let mut failing = false;
    while !*stop.borrow() {
        match round(&db, &p, s.batch_size).await {
            Ok(r) => {
                if failing {
                    tracing::info!("event relay: publishing again");
                    failing = false;
                }
                delay = base;
                if r.claimed < s.batch_size as usize {
                    let mut stop = stop.clone();
                    tokio::select! {
                        () = outbox::woken() => {}
                        () = tokio::time::sleep(poll) => {}
                        _ = stop.changed() => {}
                    }
                }
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "event relay: publishing failed; retrying with backoff");
                } else {
                    tracing::debug!(error = %e, "event relay: still failing");
                }
                failing = true;
                if stopped_within(&stop, delay).await {
                    return;
                }
                delay = (delay * 2).min(max);
            }
        }
    }
}

/// Sleeps `d`; true when `stop` turned true meanwhile.
async fn stopped_within(stop: &watch::Receiver<bool>, d: Duration) -> bool {
    let mut stop = stop.clone();
    tokio::select! {
        () = tokio::time::sleep(d) => {}
        _ = stop.changed() => {}
    }
    *stop.borrow()
}

/// How often the outbox is pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Rows deleted per statement when pruning.
const PRUNE_BATCH: u64 = 10_000;

/// Deletes published events older than `events.retention_hours` (and unpublished ones too
/// when this deployment has no relay), every minute, until `stop` turns true.
pub async fn prune(db: Db, s: Settings, stop: watch::Receiver<bool>) {
    if s.retention_hours == 0 {
        return;
    }
    let unpublished = s.nats_url.trim().is_empty();
    let keep = chrono::Duration::hours(i64::try_from(s.retention_hours).unwrap_or(i64::MAX / 7200));
    loop {
        let before = chrono::Utc::now() - keep;
        loop {
            match outbox::prune(&db, before, unpublished, PRUNE_BATCH).await {
                Ok(n) if n >= PRUNE_BATCH => continue,
                Ok(n) => {
                    if n > 0 {
                        tracing::debug!(deleted = n, "outbox pruned");
                    }
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %crate::server::explain(&e), "pruning the outbox failed");
                    break;
                }
            }
        }
        if stopped_within(&stop, PRUNE_EVERY).await {
            return;
        }
    }
}

/// The relay and pruner tasks of a process, stopped together.
pub struct Tasks {
    stop: watch::Sender<bool>,
    handles: Vec<tokio::task::JoinHandle<()>>,
}

impl Tasks {
    /// Starts the pruner, and the relay when `relay` is set.
    pub fn start(db: &Db, s: &Settings, relay: bool) -> Tasks {
        let (stop, rx) = watch::channel(false);
        let mut handles = vec![tokio::spawn(prune(db.clone(), s.clone(), rx.clone()))];
        if relay {
            handles.push(tokio::spawn(run(db.clone(), s.clone(), rx)));
        }
        Tasks { stop, handles }
    }

    /// Stops them; a batch being published finishes first (bounded by the publish timeout).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for h in self.handles {
            let _ = h.await;
        }
    }
}
