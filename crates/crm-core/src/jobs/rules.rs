//! The pure rules of a job's life: its states, the retry delay, and what the end of an attempt
//! does to the row. No I/O; time is passed in.

use crate::error::{Error, ErrorKind};
use chrono::{DateTime, Utc};
use serde_json::Value as Json;
use std::time::Duration;
use uuid::Uuid;

/// Where a job is in its life.
///
/// ```text
/// QUEUED ──claim──► RUNNING ──► SUCCEEDED
///   ▲  │              │  ├────► FAILED      (a permanent error, or max_attempts used up)
///   │  │              │  └────► CANCELLED   (cancel requested, or the handler gave up)
///   │  └──cancel──► CANCELLED
///   └── retry (backoff), tenant suspended (postponed), runner shut down (released)
/// ```
///
/// A RUNNING job whose lease expired (its runner died or hangs) is claimed again as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    /// Every state, as stored.
    pub const NAMES: &'static [&'static str] =
        &["QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "QUEUED",
            JobState::Running => "RUNNING",
            JobState::Succeeded => "SUCCEEDED",
            JobState::Failed => "FAILED",
            JobState::Cancelled => "CANCELLED",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        Some(match s {
            "QUEUED" => JobState::Queued,
            "RUNNING" => JobState::Running,
            "SUCCEEDED" => JobState::Succeeded,
            "FAILED" => JobState::Failed,
            "CANCELLED" => JobState::Cancelled,
            _ => return None,
        })
    }

    /// Finished for good: SUCCEEDED, FAILED or CANCELLED.
    pub fn is_done(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

/// The error an attempt ended with: a canonical gRPC code name (`UNAVAILABLE`, `INTERNAL`,
/// `CANCELLED`, ...) and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobError {
    pub code: String,
    pub message: String,
}

impl JobError {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            message: crate::error::clip(&message.into(), MAX_ERROR_CHARS),
        }
    }

    /// The error of a handler that returned `Err(e)`.
    pub fn from_error(e: &Error) -> Self {
        // The cause of a database error (`detail`) is what an operator needs to see here.
        let detail = e
            .metadata
            .iter()
            .find(|(k, _)| *k == "detail")
            .map(|(_, d)| d.as_str());
        let message = match detail {
            Some(d) if !e.message.contains(d) => format!("{} ({d})", e.message),
            _ => e.message.clone(),
        };
        Self::new(code_name(e.kind), message)
    }

    /// The error of a handler that panicked.
    pub fn panicked(message: &str) -> Self {
        Self::new("INTERNAL", format!("the handler panicked: {message}"))
    }
}

/// Stored error messages are cut to this many bytes.
pub const MAX_ERROR_CHARS: usize = 2000;

/// The canonical gRPC code name of an error kind.
pub fn code_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidArgument => "INVALID_ARGUMENT",
        ErrorKind::NotFound => "NOT_FOUND",
        ErrorKind::AlreadyExists => "ALREADY_EXISTS",
        ErrorKind::Aborted => "ABORTED",
        ErrorKind::FailedPrecondition => "FAILED_PRECONDITION",
        ErrorKind::PermissionDenied => "PERMISSION_DENIED",
        ErrorKind::Unauthenticated => "UNAUTHENTICATED",
        ErrorKind::ResourceExhausted => "RESOURCE_EXHAUSTED",
        ErrorKind::Unavailable => "UNAVAILABLE",
        ErrorKind::Internal => "INTERNAL",
    }
}

/// Whether another attempt may succeed where this one failed: the database was unavailable,
/// a race was lost, a limit was hit, or something unexpected happened (a panic, a bug that a
/// retry may not meet again). A job whose input is wrong (INVALID_ARGUMENT, NOT_FOUND,
/// FAILED_PRECONDITION, PERMISSION_DENIED, ...) fails at once instead of retrying.
pub fn retryable(code: &str) -> bool {
    matches!(
        code,
        "UNAVAILABLE" | "ABORTED" | "RESOURCE_EXHAUSTED" | "INTERNAL"
    )
}

/// The delay before the attempt after attempt number `attempt` (1-based) failed: `base`
/// doubled for each earlier failure, at most `max`, less a jitter of up to a quarter that is
/// fixed per job and attempt (jobs failing together, e.g. in a database outage, do not all
/// come back at the same instant, and a test can predict the range).
pub fn backoff(base: Duration, max: Duration, attempt: u32, id: Uuid) -> Duration {
    let doublings = attempt.saturating_sub(1).min(40);
    let factor = 1u32.checked_shl(doublings).unwrap_or(u32::MAX);
    let full = base.checked_mul(factor).unwrap_or(max).min(max);
    let jitter = jitter_fraction(id, attempt);
    full.saturating_sub(full.mul_f64(jitter))
}

/// A fraction in [0, 0.25), a deterministic function of the job and attempt.
fn jitter_fraction(id: Uuid, attempt: u32) -> f64 {
    // splitmix64 over the id's bits and the attempt.
    let bits = id.as_u128();
    let mut z = (bits as u64) ^ ((bits >> 64) as u64) ^ u64::from(attempt).wrapping_mul(0x9e37);
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64 * 0.25
}

/// How an attempt ended, as the runner saw it.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptEnd {
    /// The handler returned [`JobOutcome::Done`](super::JobOutcome::Done).
    Done(Json),
    /// The handler returned [`JobOutcome::Cancelled`](super::JobOutcome::Cancelled).
    Cancelled,
    /// The handler returned an error or panicked.
    Failed(JobError),
    /// The runner stopped waiting for the handler (lease lost or shutdown) and aborted it.
    Aborted,
}

/// Why the runner told the handler to stop, if it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupt {
    /// Someone called [`cancel`](super::cancel) on the job.
    CancelRequested,
    /// The lease expired before the job ended: another runner may be running it now.
    LeaseLost,
    /// The runner is shutting down.
    Shutdown,
}

/// What the runner writes after an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    Succeed(Json),
    /// Back to QUEUED, due again at the time given.
    Retry(DateTime<Utc>, JobError),
    Fail(JobError),
    Cancel(JobError),
    /// Back to QUEUED at once, the attempt not counted (the runner is shutting down).
    Release,
    /// Nothing: the lease is gone and the job belongs to whoever claims it next.
    Abandon,
}

/// The facts [`settle`] decides on.
#[derive(Debug, Clone, Copy)]
pub struct Attempt {
    /// 1-based number of this attempt.
    pub number: u32,
    pub max_attempts: u32,
    /// The strongest interrupt signalled to the handler, if any.
    pub interrupt: Option<Interrupt>,
    pub now: DateTime<Utc>,
    /// [`backoff`] for this attempt.
    pub backoff: Duration,
}

/// What the end of an attempt does to the job.
///
/// - A result is kept whenever the handler produced one, even after a cancel request (the work
///   is done; cancelling is best effort) or a lost lease (the write then checks the lease).
/// - After a lost lease nothing but a result is written; after a shutdown signal anything but
///   a result releases the job (the attempt does not count).
/// - Otherwise a requested cancel wins; a retryable error retries with backoff until
///   `max_attempts` attempts were made; any other error fails the job at once.
pub fn settle(end: AttemptEnd, a: Attempt) -> Transition {
    let cancelled = || JobError::new("CANCELLED", "the job was cancelled");
    match (end, a.interrupt) {
        (AttemptEnd::Done(v), _) => Transition::Succeed(v),
        (_, Some(Interrupt::LeaseLost)) => Transition::Abandon,
        (_, Some(Interrupt::Shutdown)) => Transition::Release,
        (AttemptEnd::Aborted, _) => Transition::Abandon,
        (AttemptEnd::Cancelled, _) | (_, Some(Interrupt::CancelRequested)) => {
            Transition::Cancel(cancelled())
        }
        (AttemptEnd::Failed(e), None) => {
            if retryable(&e.code) && a.number < a.max_attempts {
                let delay = chrono::Duration::from_std(a.backoff)
                    .unwrap_or_else(|_| chrono::Duration::days(1));
                Transition::Retry(a.now + delay, e)
            } else if retryable(&e.code) {
                let message = format!("attempt {} of {}: {}", a.number, a.max_attempts, e.message);
                Transition::Fail(JobError::new(&e.code, message))
            } else {
                Transition::Fail(e)
            }
        }
    }
}

/// The error of a job claimed again after its earlier attempts never ended (their runners
/// died or hung until the lease expired) when no attempt is left.
pub fn gave_up(attempts: u32) -> JobError {
    JobError::new(
        "ABORTED",
        format!(
            "gave up after {attempts} attempts: the last one did not end before its lease \
             expired (its runner stopped or the handler hung)"
        ),
    )
}

/// The longest kind name.
pub const MAX_KIND_CHARS: usize = 100;

/// A job kind: lower-case ASCII letters, digits, `.`, `_` and `-`, starting with a letter or
/// digit, at most [`MAX_KIND_CHARS`] (e.g. `crm.reminder`, `sla.breach`).
pub fn valid_kind(kind: &str) -> bool {
    !kind.is_empty()
        && kind.len() <= MAX_KIND_CHARS
        && kind
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && kind.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn attempt(number: u32, interrupt: Option<Interrupt>) -> Attempt {
        Attempt {
            number,
            max_attempts: 3,
            interrupt,
            now: at(0),
            backoff: Duration::from_secs(10),
        }
    }

    fn err(code: &str) -> JobError {
        JobError::new(code, "boom")
    }

    #[test]
    fn states_round_trip() {
        for name in JobState::NAMES {
            let s = JobState::parse(name).unwrap();
            assert_eq!(s.as_str(), *name);
        }
        assert_eq!(JobState::parse("queued"), None);
        assert!(JobState::Succeeded.is_done() && JobState::Failed.is_done());
        assert!(JobState::Cancelled.is_done());
        assert!(!JobState::Queued.is_done() && !JobState::Running.is_done());
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_bounded_jitter() {
        let id = Uuid::now_v7();
        let base = Duration::from_secs(1);
        let max = Duration::from_secs(60);
        for (attempt, full) in [
            (1, 1),
            (2, 2),
            (3, 4),
            (4, 8),
            (7, 60),
            (40, 60),
            (u32::MAX, 60),
        ] {
            let d = backoff(base, max, attempt, id);
            let full = Duration::from_secs(full);
            assert!(d <= full, "attempt {attempt}: {d:?} > {full:?}");
            assert!(
                d >= full.mul_f64(0.75),
                "attempt {attempt}: {d:?} < 3/4 of {full:?}"
            );
            assert_eq!(
                d,
                backoff(base, max, attempt, id),
                "jitter is deterministic"
            );
        }
    }

    #[test]
    fn jitter_spreads_jobs_failing_together() {
        let base = Duration::from_secs(100);
        let delays: std::collections::HashSet<Duration> = (0..50)
            .map(|_| backoff(base, base, 1, Uuid::now_v7()))
            .collect();
        assert!(delays.len() > 40, "{} distinct delays of 50", delays.len());
    }

    #[test]
    fn retryable_errors_retry_until_the_last_attempt_then_fail() {
        let t = settle(AttemptEnd::Failed(err("UNAVAILABLE")), attempt(1, None));
        assert_eq!(t, Transition::Retry(at(10), err("UNAVAILABLE")));
        let t = settle(AttemptEnd::Failed(err("INTERNAL")), attempt(2, None));
        assert!(matches!(t, Transition::Retry(..)));
        match settle(AttemptEnd::Failed(err("UNAVAILABLE")), attempt(3, None)) {
            Transition::Fail(e) => {
                assert_eq!(e.code, "UNAVAILABLE");
                assert!(e.message.contains("attempt 3 of 3: boom"), "{}", e.message);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn permanent_errors_fail_at_once() {
        for code in [
            "INVALID_ARGUMENT",
            "NOT_FOUND",
            "FAILED_PRECONDITION",
            "PERMISSION_DENIED",
        ] {
            assert_eq!(
                settle(AttemptEnd::Failed(err(code)), attempt(1, None)),
                Transition::Fail(err(code))
            );
        }
    }

    #[test]
    fn results_are_kept_whatever_happened_meanwhile() {
        for i in [
            None,
            Some(Interrupt::CancelRequested),
            Some(Interrupt::LeaseLost),
            Some(Interrupt::Shutdown),
        ] {
            assert_eq!(
                settle(AttemptEnd::Done(Json::from(1)), attempt(1, i)),
                Transition::Succeed(Json::from(1))
            );
        }
    }

    #[test]
    fn interrupts_decide_what_an_unfinished_attempt_leaves() {
        for end in [
            AttemptEnd::Cancelled,
            AttemptEnd::Failed(err("UNAVAILABLE")),
            AttemptEnd::Aborted,
        ] {
            assert_eq!(
                settle(end.clone(), attempt(1, Some(Interrupt::Shutdown))),
                Transition::Release
            );
            assert_eq!(
                settle(end.clone(), attempt(1, Some(Interrupt::LeaseLost))),
                Transition::Abandon
            );
        }
        assert!(matches!(
            settle(AttemptEnd::Failed(err("UNAVAILABLE")), attempt(1, Some(Interrupt::CancelRequested))),
            Transition::Cancel(e) if e.code == "CANCELLED"
        ));
        assert!(matches!(
            settle(AttemptEnd::Cancelled, attempt(1, None)),
            Transition::Cancel(_)
        ));
    }

    #[test]
    fn kinds() {
        for k in [
            "crm.reminder",
            "sla-breach",
            "a",
            "import_contacts.v2",
            "9x",
        ] {
            assert!(valid_kind(k), "{k}");
        }
        for k in ["", "Crm.reminder", ".x", "a b", "ü", &"x".repeat(101)] {
            assert!(!valid_kind(k), "{k}");
        }
    }

    #[test]
    fn errors_keep_their_cause_and_are_bounded() {
        let e = Error::unavailable("the database is unavailable; retry later")
            .with("detail", "connection refused");
        let j = JobError::from_error(&e);
        assert_eq!(j.code, "UNAVAILABLE");
        assert!(j.message.contains("connection refused"), "{}", j.message);
        let long = JobError::new("INTERNAL", "x".repeat(10_000));
        assert!(long.message.len() <= MAX_ERROR_CHARS);
    }

    proptest! {
        #[test]
        fn backoff_never_exceeds_the_cap(base_ms in 1u64..100_000, max_ms in 1u64..10_000_000, attempt in 0u32..100) {
            let d = backoff(Duration::from_millis(base_ms), Duration::from_millis(max_ms), attempt, Uuid::now_v7());
            prop_assert!(d <= Duration::from_millis(max_ms));
        }
    }
}
