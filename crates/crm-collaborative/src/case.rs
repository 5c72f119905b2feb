//! The service-case status flow, its recorded steps and what the customer sees.
//!
//! - [`CaseStatus`] and the legal transitions ([`TRANSITIONS`], [`transition`]).
//! - [`sla_effect`]: what a transition does to the SLA clock; [`apply_transition`] checks the
//!   transition and updates the clock in one call.
//! - [`CaseStep`]: one recorded step (time, handler, action, status change, result, note).
//! - [`customer_view`]: what a customer portal shows: a status label, the public steps only
//!   (internal steps and handler ids are never shown), and the expected resolution time.
//!
//! The flow: a case is `NEW` on intake, `OPEN` once an agent works it, `WAITING_ON_CUSTOMER` while
//! the agent waits for an answer (the SLA clock is paused), `RESOLVED` when the agent considers it
//! solved (the clock stops), `REOPENED` if the customer comes back after a resolution (the
//! resolution clock runs again), and `CLOSED` for good after a resolution. A `NEW` case may also be
//! closed directly (spam, duplicate). `CLOSED` is final: a later request is a new case.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::calendar::BusinessCalendar;
use crate::sla::{ClockKind, SlaClock, SlaError, SlaPolicy};

/// The status of a service case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CaseStatus {
    /// Received, not yet worked.
    New,
    /// Being worked.
    Open,
    /// Waiting for the customer's answer (SLA paused).
    WaitingOnCustomer,
    /// Solved, the customer may still come back.
    Resolved,
    /// Closed for good.
    Closed,
    /// Came back after a resolution.
    Reopened,
}

impl CaseStatus {
    /// All statuses, in flow order.
    pub const ALL: [CaseStatus; 6] = [
        CaseStatus::New,
        CaseStatus::Open,
        CaseStatus::WaitingOnCustomer,
        CaseStatus::Resolved,
        CaseStatus::Closed,
        CaseStatus::Reopened,
    ];

    /// The wire name, e.g. `WAITING_ON_CUSTOMER`.
    pub fn as_str(self) -> &'static str {
        match self {
            CaseStatus::New => "NEW",
            CaseStatus::Open => "OPEN",
            CaseStatus::WaitingOnCustomer => "WAITING_ON_CUSTOMER",
            CaseStatus::Resolved => "RESOLVED",
            CaseStatus::Closed => "CLOSED",
            CaseStatus::Reopened => "REOPENED",
        }
    }

    /// The label a customer portal shows (English; the frontend may translate by status).
    pub fn customer_label(self) -> &'static str {
        match self {
            CaseStatus::New => "Received",
            CaseStatus::Open | CaseStatus::Reopened => "In progress",
            CaseStatus::WaitingOnCustomer => "Waiting for your reply",
            CaseStatus::Resolved => "Resolved",
            CaseStatus::Closed => "Closed",
        }
    }
}

impl std::fmt::Display for CaseStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The legal transitions `(from, to)`.
pub const TRANSITIONS: &[(CaseStatus, CaseStatus)] = {
    use CaseStatus::*;
    &[
        (New, Open),
        (New, WaitingOnCustomer),
        (New, Resolved),
        (New, Closed),
        (Open, WaitingOnCustomer),
        (Open, Resolved),
        (WaitingOnCustomer, Open),
        (WaitingOnCustomer, Resolved),
        (Resolved, Reopened),
        (Resolved, Closed),
        (Reopened, Open),
        (Reopened, WaitingOnCustomer),
        (Reopened, Resolved),
    ]
};

/// A case operation that is not allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaseError {
    /// The status change is not in [`TRANSITIONS`].
    #[error("status: cannot change a case from {from} to {to}")]
    IllegalTransition {
        /// Current status.
        from: CaseStatus,
        /// Requested status.
        to: CaseStatus,
    },
    /// The SLA clock refused the matching event.
    #[error(transparent)]
    Sla(#[from] SlaError),
}

/// Checks a status change against [`TRANSITIONS`].
pub fn transition(from: CaseStatus, to: CaseStatus) -> Result<(), CaseError> {
    if TRANSITIONS.contains(&(from, to)) {
        Ok(())
    } else {
        Err(CaseError::IllegalTransition { from, to })
    }
}

/// The statuses reachable from `from`.
pub fn allowed_next(from: CaseStatus) -> Vec<CaseStatus> {
    TRANSITIONS
        .iter()
        .filter(|(f, _)| *f == from)
        .map(|&(_, t)| t)
        .collect()
}

/// What a transition does to the SLA clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SlaEffect {
    /// Nothing.
    None,
    /// Pause (the case waits on the customer).
    Pause,
    /// Resume after waiting on the customer.
    Resume,
    /// Stop both clocks (resolved, or closed without resolution).
    Resolve,
    /// Run the resolution clock again.
    Reopen,
}

/// The SLA effect of a (legal) transition.
pub fn sla_effect(from: CaseStatus, to: CaseStatus) -> SlaEffect {
    use CaseStatus::*;
    match (from, to) {
        (_, WaitingOnCustomer) => SlaEffect::Pause,
        (WaitingOnCustomer, Open) => SlaEffect::Resume,
        (_, Resolved) | (New, Closed) => SlaEffect::Resolve,
        (Resolved, Reopened) => SlaEffect::Reopen,
        _ => SlaEffect::None,
    }
}

/// Checks a transition and applies its SLA effect to the clock at `at`. Nothing changes on error.
pub fn apply_transition(
    clock: &mut SlaClock,
    from: CaseStatus,
    to: CaseStatus,
    at: DateTime<Utc>,
) -> Result<SlaEffect, CaseError> {
    transition(from, to)?;
    let effect = sla_effect(from, to);
    let mut next = clock.clone();
    match effect {
        SlaEffect::None => {}
        SlaEffect::Pause => next.pause(at)?,
        SlaEffect::Resume => next.resume(at)?,
        SlaEffect::Resolve => next.resolve(at)?,
        SlaEffect::Reopen => next.reopen(at)?,
    }
    *clock = next;
    Ok(effect)
}

/// What was done in a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CaseAction {
    /// The case was created (intake).
    Created,
    /// The status changed.
    StatusChanged,
    /// The case was assigned or handed over.
    Assigned,
    /// The customer was answered.
    Responded,
    /// The customer wrote.
    CustomerReplied,
    /// A comment was added.
    Commented,
    /// The case was escalated (SLA breach or by hand).
    Escalated,
    /// Category or priority changed.
    Reclassified,
}

/// Who may see a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StepVisibility {
    /// Shown to the customer.
    Public,
    /// Staff only.
    Internal,
}

/// One recorded step of a case: when, who, what, the status change, the result and a note.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseStep {
    /// When.
    pub at: DateTime<Utc>,
    /// The user who handled it; `None` for the system or the customer.
    pub handler: Option<Uuid>,
    /// What was done.
    pub action: CaseAction,
    /// Status before, for status changes.
    pub from: Option<CaseStatus>,
    /// Status after, for status changes.
    pub to: Option<CaseStatus>,
    /// The outcome, in a sentence (shown to the customer on public steps).
    pub result: Option<String>,
    /// Free text (shown to the customer on public steps only).
    pub note: Option<String>,
    /// Who may see the step.
    pub visibility: StepVisibility,
}

/// A step as the customer sees it: no handler, no internal step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicStep {
    /// When.
    pub at: DateTime<Utc>,
    /// What was done.
    pub action: CaseAction,
    /// The status label after the step, for status changes.
    pub status_label: Option<String>,
    /// The outcome.
    pub result: Option<String>,
    /// The note.
    pub note: Option<String>,
}

/// What a customer portal shows for a case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerCaseView {
    /// The status.
    pub status: CaseStatus,
    /// Its customer-facing label.
    pub status_label: String,
    /// Public steps, oldest first.
    pub steps: Vec<PublicStep>,
    /// When the case is expected to be resolved: the resolution clock's due instant if it is
    /// running and not yet past; `None` while waiting on the customer, once resolved, or overdue.
    pub expected_resolution_at: Option<DateTime<Utc>>,
}

/// The SLA context of a case for [`customer_view`].
#[derive(Debug, Clone, Copy)]
pub struct SlaContext<'a> {
    /// The case's clock.
    pub clock: &'a SlaClock,
    /// Its policy.
    pub policy: &'a SlaPolicy,
    /// The calendar.
    pub calendar: &'a BusinessCalendar,
}

/// Builds the customer's view of a case at `now`. Internal steps are left out entirely.
pub fn customer_view(
    status: CaseStatus,
    steps: &[CaseStep],
    sla: Option<SlaContext<'_>>,
    now: DateTime<Utc>,
) -> CustomerCaseView {
    let mut public: Vec<PublicStep> = steps
        .iter()
        .filter(|s| s.visibility == StepVisibility::Public)
        .map(|s| PublicStep {
            at: s.at,
            action: s.action,
            status_label: s.to.map(|t| t.customer_label().to_string()),
            result: s.result.clone(),
            note: s.note.clone(),
        })
        .collect();
    public.sort_by_key(|s| s.at);
    let expected_resolution_at = match (status, sla) {
        (CaseStatus::Resolved | CaseStatus::Closed | CaseStatus::WaitingOnCustomer, _) => None,
        (_, Some(ctx)) => ctx
            .clock
            .due_at(ClockKind::Resolution, ctx.policy, ctx.calendar, now)
            .ok()
            .flatten()
            .filter(|t| *t > now),
        (_, None) => None,
    };
    CustomerCaseView {
        status,
        status_label: status.customer_label().to_string(),
        steps: public,
        expected_resolution_at,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::sla::tests::{office, policy, utc};

    #[test]
    fn serde_names() {
        assert_eq!(
            serde_json::to_string(&CaseStatus::WaitingOnCustomer).unwrap(),
            "\"WAITING_ON_CUSTOMER\""
        );
        for s in CaseStatus::ALL {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
            assert_eq!(serde_json::from_str::<CaseStatus>(&json).unwrap(), s);
        }
    }

    #[test]
    fn transition_table() {
        use CaseStatus::*;
        assert!(transition(New, Open).is_ok());
        assert!(transition(Resolved, Reopened).is_ok());
        let e = transition(Closed, Open).unwrap_err();
        assert_eq!(
            e.to_string(),
            "status: cannot change a case from CLOSED to OPEN"
        );
        assert!(transition(Open, Open).is_err());
        assert!(transition(Open, Closed).is_err());
        assert!(allowed_next(Closed).is_empty());
        assert_eq!(allowed_next(Resolved), vec![Reopened, Closed]);
        // Every status but CLOSED has a way forward; every status but NEW is reachable.
        for s in CaseStatus::ALL {
            if s != Closed {
                assert!(!allowed_next(s).is_empty(), "{s}");
            }
            if s != New {
                assert!(TRANSITIONS.iter().any(|&(_, t)| t == s), "{s}");
            }
        }
    }

    #[test]
    fn sla_effects() {
        use CaseStatus::*;
        assert_eq!(sla_effect(Open, WaitingOnCustomer), SlaEffect::Pause);
        assert_eq!(sla_effect(WaitingOnCustomer, Open), SlaEffect::Resume);
        assert_eq!(sla_effect(WaitingOnCustomer, Resolved), SlaEffect::Resolve);
        assert_eq!(sla_effect(Resolved, Reopened), SlaEffect::Reopen);
        assert_eq!(sla_effect(Resolved, Closed), SlaEffect::None);
        assert_eq!(sla_effect(New, Closed), SlaEffect::Resolve);
        assert_eq!(sla_effect(New, Open), SlaEffect::None);
    }

    #[test]
    fn apply_transition_drives_the_clock() {
        use CaseStatus::*;
        let mut c = SlaClock::start(utc("2026-01-12T08:00:00Z"));
        apply_transition(&mut c, New, Open, utc("2026-01-12T08:05:00Z")).unwrap();
        apply_transition(&mut c, Open, WaitingOnCustomer, utc("2026-01-12T08:10:00Z")).unwrap();
        assert!(c.open_pause().is_some());
        apply_transition(&mut c, WaitingOnCustomer, Open, utc("2026-01-12T09:00:00Z")).unwrap();
        assert!(c.open_pause().is_none());
        apply_transition(&mut c, Open, Resolved, utc("2026-01-12T10:00:00Z")).unwrap();
        assert_eq!(c.resolved_at, Some(utc("2026-01-12T10:00:00Z")));
        let before = c.clone();
        // Illegal transition: the clock is untouched.
        assert!(apply_transition(&mut c, Resolved, Open, utc("2026-01-12T11:00:00Z")).is_err());
        // Out-of-order event: refused, untouched.
        let e = apply_transition(&mut c, Resolved, Reopened, utc("2026-01-12T09:30:00Z"));
        assert!(matches!(
            e,
            Err(CaseError::Sla(SlaError::OutOfOrder { .. }))
        ));
        assert_eq!(c, before);
        apply_transition(&mut c, Resolved, Reopened, utc("2026-01-12T11:00:00Z")).unwrap();
        assert_eq!(c.resolved_at, None);
    }

    #[test]
    fn customer_view_hides_internal_steps() {
        let cal = office("UTC");
        let p = policy(60, 480);
        let agent = Uuid::from_u128(7);
        let clock = SlaClock::start(utc("2026-01-12T09:00:00Z"));
        let steps = vec![
            CaseStep {
                at: utc("2026-01-12T09:00:00Z"),
                handler: None,
                action: CaseAction::Created,
                from: None,
                to: Some(CaseStatus::New),
                result: None,
                note: Some("Printer does not print".into()),
                visibility: StepVisibility::Public,
            },
            CaseStep {
                at: utc("2026-01-12T09:20:00Z"),
                handler: Some(agent),
                action: CaseAction::Commented,
                from: None,
                to: None,
                result: None,
                note: Some("customer is difficult, VIP discount pending".into()),
                visibility: StepVisibility::Internal,
            },
            CaseStep {
                at: utc("2026-01-12T09:10:00Z"),
                handler: Some(agent),
                action: CaseAction::StatusChanged,
                from: Some(CaseStatus::New),
                to: Some(CaseStatus::Open),
                result: Some("Technician assigned".into()),
                note: None,
                visibility: StepVisibility::Public,
            },
        ];
        let now = utc("2026-01-12T09:30:00Z");
        let ctx = SlaContext {
            clock: &clock,
            policy: &p,
            calendar: &cal,
        };
        let v = customer_view(CaseStatus::Open, &steps, Some(ctx), now);
        assert_eq!(v.status_label, "In progress");
        assert_eq!(v.steps.len(), 2);
        assert_eq!(v.steps[1].status_label.as_deref(), Some("In progress"));
        assert_eq!(v.steps[1].result.as_deref(), Some("Technician assigned"));
        // 480 business minutes from Monday 09:00Z: 09-12 (3 h), 13-17:30 (4.5 h), Tue 09:30.
        assert_eq!(v.expected_resolution_at, Some(utc("2026-01-13T09:30:00Z")));
        let json = serde_json::to_string(&v).unwrap();
        assert!(!json.contains("VIP"));
        assert!(!json.contains(&agent.to_string()));

        let v = customer_view(CaseStatus::WaitingOnCustomer, &steps, Some(ctx), now);
        assert_eq!(v.status_label, "Waiting for your reply");
        assert_eq!(v.expected_resolution_at, None);
        let v = customer_view(CaseStatus::Open, &steps, None, now);
        assert_eq!(v.expected_resolution_at, None);
    }
}
