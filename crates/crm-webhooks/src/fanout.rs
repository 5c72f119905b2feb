//! The background tasks of a replica: the fan-out loop (committed events into deliveries,
//! [`crate::service::fanout_round`]) and the delivery log's retention purge.

use crate::service::{Settings, fanout_round};
use crm_core::clock::SystemClock;
use crm_core::db::Db;
use std::time::Duration;
use tokio::sync::watch;

/// How often the delivery log is purged.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Rows deleted per statement when purging.
const PRUNE_BATCH: u64 = 10_000;

/// The fan-out and purge tasks of a process, stopped together.
pub struct Tasks {
    stop: watch::Sender<bool>,
    handles: Vec<tokio::task::JoinHandle<()>>,
}

impl Tasks {
    /// Starts them (nothing when `s.fanout` is off).
    pub fn start(db: &Db, s: &Settings) -> Tasks {
        let (stop, rx) = watch::channel(false);
        let mut handles = Vec::new();
        if s.fanout {
            handles.push(tokio::spawn(run(db.clone(), s.clone(), rx.clone())));
            handles.push(tokio::spawn(prune(db.clone(), s.clone(), rx)));
        }
        Tasks { stop, handles }
    }

    /// Stops them; a round in progress finishes first.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for h in self.handles {
            let _ = h.await;
        }
    }
}

/// Sleeps `d` (or until woken by a commit, with `woken`); true when `stop` turned true.
async fn pause(stop: &watch::Receiver<bool>, d: Duration, woken: bool) -> bool {
    let mut stop = stop.clone();
    if woken {
        tokio::select! {
            () = crm_core::outbox::fanout_woken() => {}
            () = tokio::time::sleep(d) => {}
            _ = stop.changed() => {}
        }
    } else {
        tokio::select! {
            () = tokio::time::sleep(d) => {}
            _ = stop.changed() => {}
        }
    }
    *stop.borrow()
}

/// The fan-out loop: a round at once while full batches come, else after a commit of this
/// process or the poll interval; backs off while the database fails.
pub async fn run(db: Db, s: Settings, stop: watch::Receiver<bool>) {
    let clock = SystemClock;
    let mut delay = s.poll_interval;
    let mut failing = false;
    while !*stop.borrow() {
        match fanout_round(&db, &clock, s.batch_size).await {
            Ok(n) => {
                if failing {
                    tracing::info!("webhook fan-out: working again");
                    failing = false;
                }
                delay = s.poll_interval;
                if n < s.batch_size as usize && pause(&stop, s.poll_interval, true).await {
                    return;
                }
            }
            Err(e) => {
                if failing {
                    tracing::debug!(error = %e, "webhook fan-out: still failing");
                } else {
                    tracing::warn!(error = %e, "webhook fan-out failed; retrying with backoff");
                }
                failing = true;
                if pause(&stop, delay, false).await {
                    return;
                }
                delay = (delay * 2).min(Duration::from_secs(60));
            }
        }
    }
}

/// Deletes delivered and dead deliveries older than the retention, every minute.
pub async fn prune(db: Db, s: Settings, stop: watch::Receiver<bool>) {
    if s.retention.is_zero() {
        return;
    }
    let keep = chrono::Duration::from_std(s.retention).unwrap_or(chrono::Duration::days(3650));
    loop {
        let before = chrono::Utc::now() - keep;
        loop {
            match crate::store::prune(&db, before, PRUNE_BATCH).await {
                Ok(n) if n >= PRUNE_BATCH => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "pruning the webhook delivery log failed");
                    break;
                }
            }
        }
        if pause(&stop, PRUNE_EVERY, false).await {
            return;
        }
    }
}
