//! SLA policies and the SLA clock of a service case.
//!
//! - [`SlaPolicyConfig`] is a tenant's stored set of policies and selection rules (serde, JSON);
//!   [`SlaPolicies::new`] validates it, naming the offending field (`sla.rules[1].policy`), and
//!   [`SlaPolicies::select`] picks the policy for a case: the first rule matching its priority,
//!   category and customer tier wins, else the default policy.
//! - [`SlaClock`] is the stored state of one case's clocks (first response and resolution): when it
//!   started, its pauses (while the case waits on the customer, and while it was resolved before a
//!   reopen), the first response and the resolution. Events ([`SlaClock::pause`], ...) validate
//!   their order. Every computation takes the [`BusinessCalendar`] and `now` as arguments.
//!
//! # Rules
//!
//! - Elapsed time is business time (calendar hours) outside pauses, up to `now` or to the instant
//!   the clock stopped (first response, resolution). It is never negative, never decreases as `now`
//!   grows, and a pause never adds time.
//! - Pauses apply to both clocks. Resolving stops both clocks (a resolution is also the first
//!   response when none was recorded). Reopening resumes the resolution clock: the time between
//!   resolution and reopening is recorded as a pause and does not count.
//! - A clock is breached once its elapsed time reaches the target (`elapsed >= target`); a clock
//!   stopped before that is met. Responding exactly at the due instant is a breach.
//! - The warning comes at a percentage of the target or a fixed lead time before it.
//! - `due_at`/`warn_at` are the wall instants when elapsed time reaches the target/warning
//!   assuming no further pause (possibly in the past); `None` while paused or once stopped.
//! - [`next_timers`] lists the durable timers to set: warnings and breaches strictly after `now`;
//!   what is already due at `now` is what [`SlaClock::status`] reports.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::calendar::{BusinessCalendar, CalendarError};

/// Case priority, one of the policy selection attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Priority {
    /// Low.
    Low,
    /// Normal.
    Normal,
    /// High.
    High,
    /// Urgent.
    Urgent,
}

/// When the warning comes before a breach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WarningThreshold {
    /// At this percentage (1-99) of the target, e.g. `{"percent": 80}`.
    Percent(u8),
    /// This many minutes of business time before the target, e.g. `{"lead_minutes": 30}`.
    LeadMinutes(u32),
}

/// Who is notified when a clock is breached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EscalationTarget {
    /// The manager of the case's assignee.
    AssigneeManager,
    /// A named team.
    Team {
        /// The team.
        team_id: Uuid,
    },
    /// A named user.
    User {
        /// The user.
        user_id: Uuid,
    },
}

/// A resolved escalation recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Recipient {
    /// A user.
    User(Uuid),
    /// A team.
    Team(Uuid),
}

impl EscalationTarget {
    /// The recipient of an escalation, given the manager of the current assignee (if any).
    /// `None` when the target is the assignee's manager and there is none.
    pub fn recipient(&self, assignee_manager: Option<Uuid>) -> Option<Recipient> {
        match *self {
            EscalationTarget::AssigneeManager => assignee_manager.map(Recipient::User),
            EscalationTarget::Team { team_id } => Some(Recipient::Team(team_id)),
            EscalationTarget::User { user_id } => Some(Recipient::User(user_id)),
        }
    }
}

/// One SLA policy: business-time targets, warning threshold and escalation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlaPolicy {
    /// Identifier referred to by rules, unique in the set, e.g. `"gold-urgent"`.
    pub id: String,
    /// First-response target in business minutes (> 0).
    pub first_response_minutes: u32,
    /// Resolution target in business minutes (> 0).
    pub resolution_minutes: u32,
    /// When to warn.
    pub warning: WarningThreshold,
    /// Who is notified on breach.
    pub escalation: EscalationTarget,
}

impl SlaPolicy {
    /// The business-time target of a clock.
    pub fn target(&self, kind: ClockKind) -> Duration {
        match kind {
            ClockKind::FirstResponse => Duration::minutes(i64::from(self.first_response_minutes)),
            ClockKind::Resolution => Duration::minutes(i64::from(self.resolution_minutes)),
        }
    }

    /// The business time after which a clock is in warning.
    pub fn warning_after(&self, kind: ClockKind) -> Duration {
        let target = self.target(kind);
        match self.warning {
            WarningThreshold::Percent(p) => {
                Duration::milliseconds(target.num_milliseconds() * i64::from(p) / 100)
            }
            WarningThreshold::LeadMinutes(m) => {
                (target - Duration::minutes(i64::from(m))).max(Duration::zero())
            }
        }
    }
}

/// A selection rule: every non-empty list must contain the case's value; empty lists match all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlaRule {
    /// Priorities matched (empty: any).
    #[serde(default)]
    pub priorities: Vec<Priority>,
    /// Category codes matched, compared exactly (empty: any).
    #[serde(default)]
    pub categories: Vec<String>,
    /// Customer tiers matched, compared exactly (empty: any).
    #[serde(default)]
    pub customer_tiers: Vec<String>,
    /// The policy id applied when the rule matches.
    pub policy: String,
}

/// A tenant's SLA configuration: policies, ordered rules (first match wins) and a default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlaPolicyConfig {
    /// The policies.
    pub policies: Vec<SlaPolicy>,
    /// Ordered selection rules.
    #[serde(default)]
    pub rules: Vec<SlaRule>,
    /// The policy id used when no rule matches.
    pub default_policy: String,
}

/// The attributes of a case that select its policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseAttributes {
    /// Priority.
    pub priority: Priority,
    /// Category code, if any.
    pub category: Option<String>,
    /// Customer tier, if any.
    pub customer_tier: Option<String>,
}

/// An invalid SLA configuration; names the field path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SlaConfigError {
    /// Field path, e.g. `sla.rules[1].policy`.
    pub field: String,
    /// What is wrong, lower-case.
    pub message: String,
}

fn config_error(field: impl Into<String>, message: impl Into<String>) -> SlaConfigError {
    SlaConfigError {
        field: field.into(),
        message: message.into(),
    }
}

/// A validated SLA configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlaPolicies {
    config: SlaPolicyConfig,
    /// Index into `config.policies` per rule, and of the default.
    rule_targets: Vec<usize>,
    default_index: usize,
}

impl SlaPolicies {
    /// Validates a configuration. Field paths in errors start with `sla.`.
    pub fn new(config: SlaPolicyConfig) -> Result<Self, SlaConfigError> {
        if config.policies.is_empty() {
            return Err(config_error(
                "sla.policies",
                "at least one policy is required",
            ));
        }
        for (i, p) in config.policies.iter().enumerate() {
            let f = format!("sla.policies[{i}]");
            if p.id.trim().is_empty() {
                return Err(config_error(format!("{f}.id"), "must not be empty"));
            }
            if config.policies[..i].iter().any(|q| q.id == p.id) {
                return Err(config_error(
                    format!("{f}.id"),
                    format!("'{}' is used by an earlier policy", p.id),
                ));
            }
            if p.first_response_minutes == 0 {
                return Err(config_error(
                    format!("{f}.first_response_minutes"),
                    "must be greater than 0",
                ));
            }
            if p.resolution_minutes == 0 {
                return Err(config_error(
                    format!("{f}.resolution_minutes"),
                    "must be greater than 0",
                ));
            }
            match p.warning {
                WarningThreshold::Percent(pct) if !(1..=99).contains(&pct) => {
                    return Err(config_error(
                        format!("{f}.warning.percent"),
                        format!("{pct} is not between 1 and 99"),
                    ));
                }
                WarningThreshold::LeadMinutes(m)
                    if m == 0 || m >= p.first_response_minutes.min(p.resolution_minutes) =>
                {
                    return Err(config_error(
                        format!("{f}.warning.lead_minutes"),
                        format!("{m} must be greater than 0 and less than both targets"),
                    ));
                }
                _ => {}
            }
        }
        let index_of = |id: &str| config.policies.iter().position(|p| p.id == id);
        let mut rule_targets = Vec::with_capacity(config.rules.len());
        for (i, r) in config.rules.iter().enumerate() {
            let idx = index_of(&r.policy).ok_or_else(|| {
                config_error(
                    format!("sla.rules[{i}].policy"),
                    format!("no policy has id '{}'", r.policy),
                )
            })?;
            rule_targets.push(idx);
        }
        let default_index = index_of(&config.default_policy).ok_or_else(|| {
            config_error(
                "sla.default_policy",
                format!("no policy has id '{}'", config.default_policy),
            )
        })?;
        Ok(Self {
            config,
            rule_targets,
            default_index,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SlaPolicyConfig {
        &self.config
    }

    /// The policy for a case: the first matching rule's, else the default.
    pub fn select(&self, case: &CaseAttributes) -> &SlaPolicy {
        let matches = |list: &[String], value: &Option<String>| {
            list.is_empty() || value.as_ref().is_some_and(|v| list.contains(v))
        };
        let idx = self
            .config
            .rules
            .iter()
            .zip(&self.rule_targets)
            .find(|(r, _)| {
                (r.priorities.is_empty() || r.priorities.contains(&case.priority))
                    && matches(&r.categories, &case.category)
                    && matches(&r.customer_tiers, &case.customer_tier)
            })
            .map_or(self.default_index, |(_, &idx)| idx);
        // The indices were validated in `new`; fall back to the default defensively.
        self.config
            .policies
            .get(idx)
            .or_else(|| self.config.policies.get(self.default_index))
            .unwrap_or(&self.config.policies[0])
    }
}

/// Which of a case's two clocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ClockKind {
    /// Time to the first response.
    FirstResponse,
    /// Time to resolution.
    Resolution,
}

/// Why the clock was paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PauseReason {
    /// The case waited on the customer.
    WaitingOnCustomer,
    /// The case was resolved, then reopened.
    Resolved,
}

/// A pause of the clock: `[from, to)`, open while `to` is `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pause {
    /// Start of the pause.
    pub from: DateTime<Utc>,
    /// End of the pause, `None` while paused.
    pub to: Option<DateTime<Utc>>,
    /// Why.
    pub reason: PauseReason,
}

/// The status of a clock at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SlaStatus {
    /// Running, before the warning.
    Ok,
    /// Running, past the warning.
    Warning,
    /// The target was reached (running or stopped late).
    Breached,
    /// Stopped within the target.
    Met,
    /// Paused (and not breached).
    Paused,
}

/// A durable timer the store sets for a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TimerKind {
    /// The first-response clock reaches its warning.
    FirstResponseWarning,
    /// The first-response clock is breached.
    FirstResponseBreach,
    /// The resolution clock reaches its warning.
    ResolutionWarning,
    /// The resolution clock is breached.
    ResolutionBreach,
}

/// An SLA clock event that is not allowed in the clock's state, or a calendar failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlaError {
    /// An event is dated before the latest recorded one.
    #[error("sla_clock: {event} at {at} is before the latest recorded event at {latest}")]
    OutOfOrder {
        /// The event.
        event: &'static str,
        /// Its instant.
        at: DateTime<Utc>,
        /// The latest recorded instant.
        latest: DateTime<Utc>,
    },
    /// `pause` while paused.
    #[error("sla_clock: cannot pause at {at}: already paused since {since}")]
    AlreadyPaused {
        /// The event's instant.
        at: DateTime<Utc>,
        /// The open pause's start.
        since: DateTime<Utc>,
    },
    /// `resume` while not paused.
    #[error("sla_clock: cannot resume at {at}: not paused")]
    NotPaused {
        /// The event's instant.
        at: DateTime<Utc>,
    },
    /// `pause` or `resolve` on a resolved clock.
    #[error("sla_clock: cannot {event} at {at}: resolved at {resolved_at}")]
    AlreadyResolved {
        /// The event.
        event: &'static str,
        /// The event's instant.
        at: DateTime<Utc>,
        /// When the clock was resolved.
        resolved_at: DateTime<Utc>,
    },
    /// `reopen` on a clock that is not resolved.
    #[error("sla_clock: cannot reopen at {at}: not resolved")]
    NotResolved {
        /// The event's instant.
        at: DateTime<Utc>,
    },
    /// The calendar found no working time (a sparse calendar) or refused an argument.
    #[error(transparent)]
    Calendar(#[from] CalendarError),
}

/// The stored state of a case's SLA clocks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlaClock {
    /// When the clocks started (case creation).
    pub started_at: DateTime<Utc>,
    /// Pauses, in order, non-overlapping; at most the last is open.
    #[serde(default)]
    pub pauses: Vec<Pause>,
    /// The first response, if any.
    pub first_response_at: Option<DateTime<Utc>>,
    /// The resolution, if resolved.
    pub resolved_at: Option<DateTime<Utc>>,
}

/// An active (counting) stretch of the clock: `[from, to)`, open-ended when `to` is `None`.
type Segment = (DateTime<Utc>, Option<DateTime<Utc>>);

impl SlaClock {
    /// A clock started at `at`.
    pub fn start(at: DateTime<Utc>) -> Self {
        Self {
            started_at: at,
            pauses: Vec::new(),
            first_response_at: None,
            resolved_at: None,
        }
    }

    /// The latest instant recorded in the clock.
    pub fn latest_event(&self) -> DateTime<Utc> {
        let mut latest = self.started_at;
        for p in &self.pauses {
            latest = latest.max(p.from);
            if let Some(t) = p.to {
                latest = latest.max(t);
            }
        }
        for t in [self.first_response_at, self.resolved_at]
            .into_iter()
            .flatten()
        {
            latest = latest.max(t);
        }
        latest
    }

    fn check_order(&self, event: &'static str, at: DateTime<Utc>) -> Result<(), SlaError> {
        let latest = self.latest_event();
        if at < latest {
            return Err(SlaError::OutOfOrder { event, at, latest });
        }
        Ok(())
    }

    /// The open pause, if the clock is paused.
    pub fn open_pause(&self) -> Option<&Pause> {
        self.pauses.last().filter(|p| p.to.is_none())
    }

    /// Whether the clock is paused at `at` (inside a recorded pause).
    pub fn is_paused_at(&self, at: DateTime<Utc>) -> bool {
        self.pauses
            .iter()
            .any(|p| p.from <= at && p.to.is_none_or(|t| at < t))
    }

    /// Pauses the clocks (the case now waits on the customer).
    pub fn pause(&mut self, at: DateTime<Utc>) -> Result<(), SlaError> {
        self.check_order("pause", at)?;
        if let Some(resolved_at) = self.resolved_at {
            return Err(SlaError::AlreadyResolved {
                event: "pause",
                at,
                resolved_at,
            });
        }
        if let Some(p) = self.open_pause() {
            return Err(SlaError::AlreadyPaused { at, since: p.from });
        }
        self.pauses.push(Pause {
            from: at,
            to: None,
            reason: PauseReason::WaitingOnCustomer,
        });
        Ok(())
    }

    /// Resumes the clocks after a pause.
    pub fn resume(&mut self, at: DateTime<Utc>) -> Result<(), SlaError> {
        self.check_order("resume", at)?;
        match self.pauses.last_mut() {
            Some(p) if p.to.is_none() => {
                p.to = Some(at);
                Ok(())
            }
            _ => Err(SlaError::NotPaused { at }),
        }
    }

    /// Records a response to the customer. Only the first one stops the first-response clock;
    /// later responses are accepted and change nothing.
    pub fn respond(&mut self, at: DateTime<Utc>) -> Result<(), SlaError> {
        if self.first_response_at.is_some() {
            return Ok(());
        }
        self.check_order("respond", at)?;
        self.first_response_at = Some(at);
        Ok(())
    }

    /// Resolves: stops both clocks, closing an open pause. Also the first response if none was.
    pub fn resolve(&mut self, at: DateTime<Utc>) -> Result<(), SlaError> {
        self.check_order("resolve", at)?;
        if let Some(resolved_at) = self.resolved_at {
            return Err(SlaError::AlreadyResolved {
                event: "resolve",
                at,
                resolved_at,
            });
        }
        if let Some(p) = self.pauses.last_mut().filter(|p| p.to.is_none()) {
            p.to = Some(at);
        }
        if self.first_response_at.is_none() {
            self.first_response_at = Some(at);
        }
        self.resolved_at = Some(at);
        Ok(())
    }

    /// Reopens a resolved case: the resolution clock runs again; the time it was resolved is
    /// recorded as a pause.
    pub fn reopen(&mut self, at: DateTime<Utc>) -> Result<(), SlaError> {
        self.check_order("reopen", at)?;
        let Some(resolved_at) = self.resolved_at.take() else {
            return Err(SlaError::NotResolved { at });
        };
        self.pauses.push(Pause {
            from: resolved_at,
            to: Some(at),
            reason: PauseReason::Resolved,
        });
        Ok(())
    }

    /// When a clock stopped, if it did.
    pub fn stopped_at(&self, kind: ClockKind) -> Option<DateTime<Utc>> {
        match kind {
            ClockKind::FirstResponse => match (self.first_response_at, self.resolved_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
            ClockKind::Resolution => self.resolved_at,
        }
    }

    /// The counting stretches: from the start, minus the pauses; the last open-ended unless the
    /// clock is paused for good. Robust to unsorted or overlapping stored pauses.
    fn segments(&self) -> Vec<Segment> {
        let mut pauses: Vec<&Pause> = self.pauses.iter().collect();
        pauses.sort_by_key(|p| p.from);
        let mut out = Vec::new();
        let mut cursor = self.started_at;
        for p in pauses {
            if p.from > cursor {
                out.push((cursor, Some(p.from)));
            }
            match p.to {
                Some(t) => cursor = cursor.max(t),
                None => return out,
            }
        }
        out.push((cursor, None));
        out
    }

    /// Elapsed business time of a clock at `now`: never negative, stops when the clock stopped.
    pub fn elapsed(
        &self,
        kind: ClockKind,
        calendar: &BusinessCalendar,
        now: DateTime<Utc>,
    ) -> Duration {
        let end = match self.stopped_at(kind) {
            Some(s) => s.min(now),
            None => now,
        };
        self.segments()
            .into_iter()
            .map(|(a, b)| {
                let b = b.map_or(end, |b| b.min(end));
                calendar.business_time_between(a, b)
            })
            .fold(Duration::zero(), |acc, d| acc + d)
    }

    /// Business time left before the breach (zero once breached).
    pub fn remaining(
        &self,
        kind: ClockKind,
        policy: &SlaPolicy,
        calendar: &BusinessCalendar,
        now: DateTime<Utc>,
    ) -> Duration {
        (policy.target(kind) - self.elapsed(kind, calendar, now)).max(Duration::zero())
    }

    /// The instant when the clock's elapsed time reaches `amount`, assuming no further pause;
    /// `None` while paused at `now` or once stopped.
    fn instant_reaching(
        &self,
        kind: ClockKind,
        amount: Duration,
        calendar: &BusinessCalendar,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, SlaError> {
        if self.stopped_at(kind).is_some_and(|s| s <= now) || self.is_paused_at(now) {
            return Ok(None);
        }
        let mut acc = Duration::zero();
        for (a, b) in self.segments() {
            match b {
                // A stretch that ended before `now` counts as it was.
                Some(b) if b <= now => {
                    let len = calendar.business_time_between(a, b);
                    if acc + len >= amount {
                        return Ok(Some(calendar.add_business_time(a, amount - acc)?));
                    }
                    acc += len;
                }
                // The running stretch (a recorded pause starting after `now` is ignored).
                _ => return Ok(Some(calendar.add_business_time(a, amount - acc)?)),
            }
        }
        Ok(None)
    }

    /// The wall instant of the breach given the pauses so far (possibly past); `None` while
    /// paused or once stopped.
    pub fn due_at(
        &self,
        kind: ClockKind,
        policy: &SlaPolicy,
        calendar: &BusinessCalendar,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, SlaError> {
        self.instant_reaching(kind, policy.target(kind), calendar, now)
    }

    /// The wall instant of the warning given the pauses so far (possibly past); `None` while
    /// paused or once stopped.
    pub fn warn_at(
        &self,
        kind: ClockKind,
        policy: &SlaPolicy,
        calendar: &BusinessCalendar,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, SlaError> {
        self.instant_reaching(kind, policy.warning_after(kind), calendar, now)
    }

    /// The status of a clock at `now`.
    pub fn status(
        &self,
        kind: ClockKind,
        policy: &SlaPolicy,
        calendar: &BusinessCalendar,
        now: DateTime<Utc>,
    ) -> SlaStatus {
        let elapsed = self.elapsed(kind, calendar, now);
        let target = policy.target(kind);
        if self.stopped_at(kind).is_some_and(|s| s <= now) {
            return if elapsed < target {
                SlaStatus::Met
            } else {
                SlaStatus::Breached
            };
        }
        if elapsed >= target {
            SlaStatus::Breached
        } else if self.is_paused_at(now) {
            SlaStatus::Paused
        } else if elapsed >= policy.warning_after(kind) {
            SlaStatus::Warning
        } else {
            SlaStatus::Ok
        }
    }
}

/// The durable timers the store must set for a case, in time order: for each running, unpaused
/// clock, its warning and its breach, when strictly after `now`.
pub fn next_timers(
    clock: &SlaClock,
    policy: &SlaPolicy,
    calendar: &BusinessCalendar,
    now: DateTime<Utc>,
) -> Result<Vec<(TimerKind, DateTime<Utc>)>, SlaError> {
    let mut out = Vec::new();
    for (kind, warn, breach) in [
        (
            ClockKind::FirstResponse,
            TimerKind::FirstResponseWarning,
            TimerKind::FirstResponseBreach,
        ),
        (
            ClockKind::Resolution,
            TimerKind::ResolutionWarning,
            TimerKind::ResolutionBreach,
        ),
    ] {
        if let Some(t) = clock.warn_at(kind, policy, calendar, now)?
            && t > now
        {
            out.push((warn, t));
        }
        if let Some(t) = clock.due_at(kind, policy, calendar, now)?
            && t > now
        {
            out.push((breach, t));
        }
    }
    out.sort_by_key(|&(k, t)| (t, k));
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
pub(crate) mod tests {
    use super::*;
    use crate::calendar::{CalendarConfig, ExtraWorkingHours, Weekday, WeeklyHours};
    use chrono::NaiveDate;
    use proptest::prelude::*;

    pub(crate) fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    pub(crate) fn office(tz: &str) -> BusinessCalendar {
        use Weekday::*;
        BusinessCalendar::new(&CalendarConfig {
            time_zone: tz.into(),
            weekly_hours: [Monday, Tuesday, Wednesday, Thursday, Friday]
                .into_iter()
                .flat_map(|day| {
                    [("09:00", "12:00"), ("13:00", "17:30")].map(|(s, e)| WeeklyHours {
                        day,
                        start: s.into(),
                        end: e.into(),
                    })
                })
                .collect(),
            holidays: vec![],
            extra_working_days: vec![],
        })
        .unwrap()
    }

    pub(crate) fn policy(first: u32, resolution: u32) -> SlaPolicy {
        SlaPolicy {
            id: "p".into(),
            first_response_minutes: first,
            resolution_minutes: resolution,
            warning: WarningThreshold::Percent(80),
            escalation: EscalationTarget::AssigneeManager,
        }
    }

    fn set() -> SlaPolicyConfig {
        let mut gold = policy(60, 480);
        gold.id = "gold".into();
        let mut urgent = policy(30, 240);
        urgent.id = "urgent".into();
        urgent.warning = WarningThreshold::LeadMinutes(10);
        let mut std = policy(240, 2400);
        std.id = "standard".into();
        SlaPolicyConfig {
            policies: vec![gold, urgent, std],
            rules: vec![
                SlaRule {
                    priorities: vec![Priority::Urgent],
                    categories: vec![],
                    customer_tiers: vec![],
                    policy: "urgent".into(),
                },
                SlaRule {
                    priorities: vec![],
                    categories: vec!["billing".into(), "outage".into()],
                    customer_tiers: vec!["GOLD".into()],
                    policy: "gold".into(),
                },
            ],
            default_policy: "standard".into(),
        }
    }

    fn attrs(p: Priority, cat: Option<&str>, tier: Option<&str>) -> CaseAttributes {
        CaseAttributes {
            priority: p,
            category: cat.map(Into::into),
            customer_tier: tier.map(Into::into),
        }
    }

    #[test]
    fn selection_first_match_wins_else_default() {
        let s = SlaPolicies::new(set()).unwrap();
        assert_eq!(
            s.select(&attrs(Priority::Urgent, Some("billing"), Some("GOLD")))
                .id,
            "urgent"
        );
        assert_eq!(
            s.select(&attrs(Priority::Normal, Some("billing"), Some("GOLD")))
                .id,
            "gold"
        );
        assert_eq!(
            s.select(&attrs(Priority::Normal, Some("billing"), None)).id,
            "standard"
        );
        assert_eq!(
            s.select(&attrs(Priority::Low, None, Some("GOLD"))).id,
            "standard"
        );
        assert_eq!(
            s.select(&attrs(Priority::High, Some("other"), Some("GOLD")))
                .id,
            "standard"
        );
    }

    #[test]
    fn config_errors_name_the_field() {
        let mut c = set();
        c.rules[1].policy = "platinum".into();
        let e = SlaPolicies::new(c).unwrap_err();
        assert_eq!(
            e.to_string(),
            "sla.rules[1].policy: no policy has id 'platinum'"
        );
        let mut c = set();
        c.default_policy = "none".into();
        assert_eq!(SlaPolicies::new(c).unwrap_err().field, "sla.default_policy");
        let mut c = set();
        c.policies[2].id = "gold".into();
        assert_eq!(SlaPolicies::new(c).unwrap_err().field, "sla.policies[2].id");
        let mut c = set();
        c.policies[0].warning = WarningThreshold::Percent(100);
        assert_eq!(
            SlaPolicies::new(c).unwrap_err().field,
            "sla.policies[0].warning.percent"
        );
        let mut c = set();
        c.policies[1].warning = WarningThreshold::LeadMinutes(30);
        assert_eq!(
            SlaPolicies::new(c).unwrap_err().field,
            "sla.policies[1].warning.lead_minutes"
        );
        let mut c = set();
        c.policies[1].resolution_minutes = 0;
        assert_eq!(
            SlaPolicies::new(c).unwrap_err().field,
            "sla.policies[1].resolution_minutes"
        );
        let mut c = set();
        c.policies.clear();
        assert_eq!(SlaPolicies::new(c).unwrap_err().field, "sla.policies");
    }

    #[test]
    fn config_serde_shape() {
        let json = serde_json::to_value(set()).unwrap();
        assert_eq!(
            json["policies"][0]["warning"],
            serde_json::json!({"percent": 80})
        );
        assert_eq!(
            json["policies"][1]["warning"],
            serde_json::json!({"lead_minutes": 10})
        );
        assert_eq!(
            json["policies"][0]["escalation"],
            serde_json::json!({"kind": "ASSIGNEE_MANAGER"})
        );
        assert_eq!(
            json["rules"][0]["priorities"],
            serde_json::json!(["URGENT"])
        );
        let back: SlaPolicyConfig = serde_json::from_value(json).unwrap();
        assert_eq!(back, set());
        let team = Uuid::nil();
        let t: EscalationTarget =
            serde_json::from_value(serde_json::json!({"kind": "TEAM", "team_id": team})).unwrap();
        assert_eq!(t.recipient(None), Some(Recipient::Team(team)));
        assert_eq!(EscalationTarget::AssigneeManager.recipient(None), None);
    }

    #[test]
    fn clock_lifecycle_and_status() {
        let cal = office("Europe/Berlin");
        let p = policy(60, 480);
        // Monday 2026-01-12 09:00 Berlin = 08:00Z.
        let mut c = SlaClock::start(utc("2026-01-12T08:00:00Z"));
        let k = ClockKind::FirstResponse;
        assert_eq!(
            c.status(k, &p, &cal, utc("2026-01-12T08:30:00Z")),
            SlaStatus::Ok
        );
        assert_eq!(
            c.due_at(k, &p, &cal, utc("2026-01-12T08:30:00Z")).unwrap(),
            Some(utc("2026-01-12T09:00:00Z"))
        );
        assert_eq!(
            c.warn_at(k, &p, &cal, utc("2026-01-12T08:30:00Z")).unwrap(),
            Some(utc("2026-01-12T08:48:00Z"))
        );
        assert_eq!(
            c.status(k, &p, &cal, utc("2026-01-12T08:50:00Z")),
            SlaStatus::Warning
        );
        assert_eq!(
            c.status(k, &p, &cal, utc("2026-01-12T09:00:00Z")),
            SlaStatus::Breached
        );
        assert_eq!(
            c.remaining(k, &p, &cal, utc("2026-01-12T08:45:00Z")),
            Duration::minutes(15)
        );
        assert_eq!(
            c.remaining(k, &p, &cal, utc("2026-01-12T10:00:00Z")),
            Duration::zero()
        );

        // Waiting on the customer from 08:20Z to 14:00Z (lunch 11:00Z-12:00Z is closed anyway).
        c.pause(utc("2026-01-12T08:20:00Z")).unwrap();
        assert_eq!(
            c.pause(utc("2026-01-12T08:30:00Z"))
                .unwrap_err()
                .to_string(),
            "sla_clock: cannot pause at 2026-01-12 08:30:00 UTC: already paused since 2026-01-12 08:20:00 UTC"
        );
        assert_eq!(
            c.status(k, &p, &cal, utc("2026-01-12T10:00:00Z")),
            SlaStatus::Paused
        );
        assert_eq!(
            c.due_at(k, &p, &cal, utc("2026-01-12T10:00:00Z")).unwrap(),
            None
        );
        assert_eq!(
            c.elapsed(k, &cal, utc("2026-01-12T13:00:00Z")),
            Duration::minutes(20)
        );
        c.resume(utc("2026-01-12T14:00:00Z")).unwrap();
        assert!(matches!(
            c.resume(utc("2026-01-12T14:10:00Z")),
            Err(SlaError::NotPaused { .. })
        ));
        // 40 minutes left from 14:00Z → 14:40Z.
        assert_eq!(
            c.due_at(k, &p, &cal, utc("2026-01-12T14:00:00Z")).unwrap(),
            Some(utc("2026-01-12T14:40:00Z"))
        );
        assert!(matches!(
            c.pause(utc("2026-01-12T13:00:00Z")),
            Err(SlaError::OutOfOrder { .. })
        ));
        c.respond(utc("2026-01-12T14:30:00Z")).unwrap();
        c.respond(utc("2026-01-12T15:00:00Z")).unwrap();
        assert_eq!(c.first_response_at, Some(utc("2026-01-12T14:30:00Z")));
        assert_eq!(
            c.status(k, &p, &cal, utc("2026-01-13T10:00:00Z")),
            SlaStatus::Met
        );
        assert_eq!(
            c.due_at(k, &p, &cal, utc("2026-01-13T10:00:00Z")).unwrap(),
            None
        );

        let r = ClockKind::Resolution;
        c.resolve(utc("2026-01-12T16:00:00Z")).unwrap();
        assert!(matches!(
            c.resolve(utc("2026-01-12T16:30:00Z")),
            Err(SlaError::AlreadyResolved { .. })
        ));
        assert!(matches!(
            c.pause(utc("2026-01-12T16:30:00Z")),
            Err(SlaError::AlreadyResolved { .. })
        ));
        // 20 min + 30 min (14:00-14:30 counted for resolution too) ... resolution elapsed:
        // 08:00-08:20 (20) + 14:00-16:00 (120) = 140 min.
        assert_eq!(
            c.elapsed(r, &cal, utc("2026-01-20T00:00:00Z")),
            Duration::minutes(140)
        );
        assert_eq!(
            c.status(r, &p, &cal, utc("2026-01-20T00:00:00Z")),
            SlaStatus::Met
        );
        // Reopened the next morning at 09:00Z: the night does not count.
        c.reopen(utc("2026-01-13T09:00:00Z")).unwrap();
        assert!(matches!(
            c.reopen(utc("2026-01-13T09:30:00Z")),
            Err(SlaError::NotResolved { .. })
        ));
        assert_eq!(
            c.elapsed(r, &cal, utc("2026-01-13T09:30:00Z")),
            Duration::minutes(170)
        );
        // 480 - 170 = 310 min from 09:30Z: until 11:00Z (90), lunch, 12:00Z-15:40Z (220).
        assert_eq!(
            c.due_at(r, &p, &cal, utc("2026-01-13T09:30:00Z")).unwrap(),
            Some(utc("2026-01-13T15:40:00Z"))
        );
        let timers = next_timers(&c, &p, &cal, utc("2026-01-13T09:30:00Z")).unwrap();
        assert_eq!(
            timers,
            vec![
                // 80 % of 480 = 384 min; 384 - 170 = 214 from 09:30Z: 90 + 124 → 14:04Z.
                (TimerKind::ResolutionWarning, utc("2026-01-13T14:04:00Z")),
                (TimerKind::ResolutionBreach, utc("2026-01-13T15:40:00Z")),
            ]
        );
    }

    #[test]
    fn resolving_while_paused_closes_the_pause() {
        let cal = office("UTC");
        let mut c = SlaClock::start(utc("2026-01-12T09:00:00Z"));
        c.pause(utc("2026-01-12T10:00:00Z")).unwrap();
        c.resolve(utc("2026-01-12T12:30:00Z")).unwrap();
        assert_eq!(c.pauses[0].to, Some(utc("2026-01-12T12:30:00Z")));
        assert_eq!(c.first_response_at, Some(utc("2026-01-12T12:30:00Z")));
        assert_eq!(
            c.elapsed(ClockKind::Resolution, &cal, utc("2026-02-01T00:00:00Z")),
            Duration::hours(1)
        );
    }

    #[test]
    fn past_breach_instant_inside_a_closed_stretch() {
        let cal = office("UTC");
        let p = policy(30, 480);
        let mut c = SlaClock::start(utc("2026-01-12T09:00:00Z"));
        c.pause(utc("2026-01-12T10:00:00Z")).unwrap();
        c.resume(utc("2026-01-12T10:30:00Z")).unwrap();
        let now = utc("2026-01-12T10:40:00Z");
        assert_eq!(
            c.status(ClockKind::FirstResponse, &p, &cal, now),
            SlaStatus::Breached
        );
        assert_eq!(
            c.due_at(ClockKind::FirstResponse, &p, &cal, now).unwrap(),
            Some(utc("2026-01-12T09:30:00Z"))
        );
        // Past instants are no timers.
        let timers = next_timers(&c, &p, &cal, now).unwrap();
        assert!(timers.iter().all(|(k, _)| matches!(
            k,
            TimerKind::ResolutionWarning | TimerKind::ResolutionBreach
        )));
        // Breached stays breached while paused.
        c.pause(utc("2026-01-12T11:00:00Z")).unwrap();
        assert_eq!(
            c.status(
                ClockKind::FirstResponse,
                &p,
                &cal,
                utc("2026-01-12T11:30:00Z")
            ),
            SlaStatus::Breached
        );
        assert_eq!(
            c.status(ClockKind::Resolution, &p, &cal, utc("2026-01-12T11:30:00Z")),
            SlaStatus::Paused
        );
        assert!(
            next_timers(&c, &p, &cal, utc("2026-01-12T11:30:00Z"))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn responding_at_the_due_instant_is_a_breach() {
        let cal = office("UTC");
        let p = policy(30, 480);
        let mut c = SlaClock::start(utc("2026-01-12T09:00:00Z"));
        c.respond(utc("2026-01-12T09:30:00Z")).unwrap();
        assert_eq!(
            c.status(
                ClockKind::FirstResponse,
                &p,
                &cal,
                utc("2026-01-12T10:00:00Z")
            ),
            SlaStatus::Breached
        );
        let mut c = SlaClock::start(utc("2026-01-12T09:00:00Z"));
        c.respond(utc("2026-01-12T09:29:59Z")).unwrap();
        assert_eq!(
            c.status(
                ClockKind::FirstResponse,
                &p,
                &cal,
                utc("2026-01-12T10:00:00Z")
            ),
            SlaStatus::Met
        );
    }

    #[test]
    fn sparse_calendar_reports_the_horizon() {
        let cal = BusinessCalendar::new(&CalendarConfig {
            time_zone: "UTC".into(),
            weekly_hours: vec![],
            holidays: vec![],
            extra_working_days: vec![ExtraWorkingHours {
                date: NaiveDate::from_ymd_opt(2026, 1, 12).unwrap(),
                start: "09:00".into(),
                end: "10:00".into(),
            }],
        })
        .unwrap();
        let c = SlaClock::start(utc("2026-01-12T09:00:00Z"));
        let p = policy(30, 120);
        assert!(matches!(
            next_timers(&c, &p, &cal, utc("2026-01-12T09:00:00Z")),
            Err(SlaError::Calendar(CalendarError::HorizonExceeded { .. }))
        ));
    }

    #[test]
    fn clock_serde_round_trip() {
        let mut c = SlaClock::start(utc("2026-01-12T09:00:00Z"));
        c.pause(utc("2026-01-12T10:00:00Z")).unwrap();
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["pauses"][0]["reason"], "WAITING_ON_CUSTOMER");
        let back: SlaClock = serde_json::from_value(json).unwrap();
        assert_eq!(back, c);
    }

    // ---- property tests ----

    fn calendars() -> Vec<BusinessCalendar> {
        let mut shanghai = CalendarConfig {
            time_zone: "Asia/Shanghai".into(),
            weekly_hours: [
                Weekday::Monday,
                Weekday::Tuesday,
                Weekday::Wednesday,
                Weekday::Thursday,
                Weekday::Friday,
            ]
            .into_iter()
            .map(|day| WeeklyHours {
                day,
                start: "09:00".into(),
                end: "18:00".into(),
            })
            .collect(),
            holidays: (1..=7)
                .map(|d| NaiveDate::from_ymd_opt(2026, 10, d).unwrap())
                .collect(),
            extra_working_days: vec![],
        };
        shanghai.extra_working_days.push(ExtraWorkingHours {
            date: NaiveDate::from_ymd_opt(2026, 10, 10).unwrap(),
            start: "09:00".into(),
            end: "18:00".into(),
        });
        let night = CalendarConfig {
            time_zone: "Europe/Berlin".into(),
            weekly_hours: [Weekday::Saturday, Weekday::Sunday]
                .into_iter()
                .flat_map(|day| {
                    [("00:00", "03:30"), ("22:00", "24:00")].map(|(s, e)| WeeklyHours {
                        day,
                        start: s.into(),
                        end: e.into(),
                    })
                })
                .collect(),
            holidays: vec![],
            extra_working_days: vec![],
        };
        vec![
            office("Europe/Berlin"),
            office("America/New_York"),
            BusinessCalendar::new(&shanghai).unwrap(),
            BusinessCalendar::new(&night).unwrap(),
        ]
    }

    /// Instants around the 2026 DST changes and the Chinese national holidays.
    fn base() -> DateTime<Utc> {
        utc("2026-02-20T00:00:00Z")
    }

    fn instant() -> impl Strategy<Value = DateTime<Utc>> {
        // 2026-02-20 .. 2026-11-20, to the second.
        (0i64..273 * 86_400).prop_map(|s| base() + Duration::seconds(s))
    }

    #[derive(Debug, Clone, Copy)]
    enum Op {
        Pause,
        Resume,
        Respond,
        Resolve,
        Reopen,
    }

    fn ops() -> impl Strategy<Value = Vec<(Op, i64)>> {
        prop::collection::vec(
            (
                prop_oneof![
                    Just(Op::Pause),
                    Just(Op::Resume),
                    Just(Op::Respond),
                    Just(Op::Resolve),
                    Just(Op::Reopen)
                ],
                0i64..3 * 86_400,
            ),
            0..8,
        )
    }

    fn build(start: DateTime<Utc>, ops: &[(Op, i64)]) -> SlaClock {
        let mut c = SlaClock::start(start);
        let mut t = start;
        for &(op, gap) in ops {
            t += Duration::seconds(gap);
            let _ = match op {
                Op::Pause => c.pause(t),
                Op::Resume => c.resume(t),
                Op::Respond => c.respond(t),
                Op::Resolve => c.resolve(t),
                Op::Reopen => c.reopen(t),
            };
        }
        c
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn round_trip_add_then_measure(
            cal_idx in 0usize..4,
            a in instant(),
            d in 0i64..120 * 3600,
        ) {
            let cals = calendars();
            let cal = &cals[cal_idx];
            let d = Duration::seconds(d);
            let b = cal.add_business_time(a, d).unwrap();
            prop_assert!(b >= a);
            prop_assert_eq!(cal.business_time_between(a, b), d);
            // The instant found is the earliest: one second earlier has less business time.
            if d > Duration::zero() {
                prop_assert!(cal.business_time_between(a, b - Duration::seconds(1)) < d);
            }
        }

        #[test]
        fn between_is_additive(cal_idx in 0usize..4, a in instant(), x in 0i64..20 * 86_400, y in 0i64..20 * 86_400) {
            let cals = calendars();
            let cal = &cals[cal_idx];
            let b = a + Duration::seconds(x);
            let c = b + Duration::seconds(y);
            prop_assert_eq!(
                cal.business_time_between(a, b) + cal.business_time_between(b, c),
                cal.business_time_between(a, c)
            );
            prop_assert!(cal.business_time_between(a, c) <= c - a);
        }

        #[test]
        fn elapsed_never_negative_and_monotone(
            cal_idx in 0usize..4,
            start in instant(),
            ops in ops(),
            n1 in -86_400i64..30 * 86_400,
            gap in 0i64..10 * 86_400,
        ) {
            let cals = calendars();
            let cal = &cals[cal_idx];
            let c = build(start, &ops);
            let now1 = start + Duration::seconds(n1);
            let now2 = now1 + Duration::seconds(gap);
            for kind in [ClockKind::FirstResponse, ClockKind::Resolution] {
                let e1 = c.elapsed(kind, cal, now1);
                let e2 = c.elapsed(kind, cal, now2);
                prop_assert!(e1 >= Duration::zero());
                prop_assert!(e2 >= e1, "{kind:?}: {e1} then {e2}");
                prop_assert!(e1 <= cal.business_time_between(start, now1));
            }
        }

        #[test]
        fn pausing_never_adds_time(
            cal_idx in 0usize..4,
            start in instant(),
            ops in ops(),
            pause_gap in 0i64..5 * 86_400,
            pause_len in prop::option::of(0i64..5 * 86_400),
            n in 0i64..40 * 86_400,
        ) {
            let cals = calendars();
            let cal = &cals[cal_idx];
            let plain = build(start, &ops);
            let mut paused = plain.clone();
            let at = paused.latest_event() + Duration::seconds(pause_gap);
            if paused.pause(at).is_ok()
                && let Some(len) = pause_len
            {
                paused.resume(at + Duration::seconds(len)).unwrap();
            }
            let now = start + Duration::seconds(n);
            for kind in [ClockKind::FirstResponse, ClockKind::Resolution] {
                prop_assert!(paused.elapsed(kind, cal, now) <= plain.elapsed(kind, cal, now));
            }
        }

        #[test]
        fn due_at_is_where_elapsed_reaches_target(
            cal_idx in 0usize..4,
            start in instant(),
            ops in ops(),
            n in 0i64..10 * 86_400,
            first in 1u32..600,
            resolution in 1u32..6000,
        ) {
            let cals = calendars();
            let cal = &cals[cal_idx];
            let c = build(start, &ops);
            let p = policy(first, resolution);
            let now = c.latest_event() + Duration::seconds(n);
            for kind in [ClockKind::FirstResponse, ClockKind::Resolution] {
                if let Some(due) = c.due_at(kind, &p, cal, now).unwrap() {
                    // With no further events, elapsed at `due` is the target.
                    prop_assert_eq!(c.elapsed(kind, cal, due.max(now)).min(p.target(kind)), p.target(kind));
                    if due > now {
                        prop_assert_eq!(c.elapsed(kind, cal, due), p.target(kind));
                        prop_assert_ne!(c.status(kind, &p, cal, now), SlaStatus::Breached);
                    } else {
                        prop_assert_eq!(c.status(kind, &p, cal, now), SlaStatus::Breached);
                    }
                }
            }
            for (_, t) in next_timers(&c, &p, cal, now).unwrap() {
                prop_assert!(t > now);
            }
        }
    }
}
