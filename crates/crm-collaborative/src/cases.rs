//! Service cases (C3) on crm-core's engine: the `cases` resource with its SLA clock, steps and
//! escalation, the tenant's SLA policy sets (`slaPolicySets`, at most one active), the use
//! cases (create, transition, respond, customer view, update of the editable fields) and the
//! SLA timer job.
//!
//! - **Create** (`before_write` of a new case, so every path and an idempotent retry with a
//!   `request_id` behave alike): the case starts `NEW`; the active policy set's rules pick the
//!   policy by priority, category and customer tier; the policy and calendar are copied onto
//!   the case (`sla_terms`, so later edits of the set do not move running clocks), the clock
//!   starts, the due times are derived and the next SLA timer is set (a crm-core job in the
//!   same transaction); the first step is recorded.
//! - **Transition** applies [`crate::case::apply_transition`]: an illegal change is
//!   FAILED_PRECONDITION naming both statuses; pauses, resumes, resolutions and reopenings move
//!   the clock, and the timer is set again from the new state.
//! - **The timer** ([`SLA_JOB`]) never trusts itself: it reads the stored clock and computes
//!   the status at `now`. A warning is recorded once per clock, a breach once, with an
//!   escalation to the policy's target (the assignee's manager, a team or a user) in
//!   `escalated_to`/`escalated_team`; then the next timer is set. A timer that finds nothing
//!   new (the case was answered, paused or resolved meanwhile) does nothing.

use crate::calendar::{BusinessCalendar, CalendarConfig, CalendarError};
use crate::case::{self as flow, CaseAction, CaseError, CaseStatus, CaseStep, StepVisibility};
use crate::interaction::Interaction;
use crate::sla::{
    self, ClockKind, EscalationTarget, Recipient, SlaClock, SlaError, SlaPolicies, SlaPolicy,
    SlaPolicyConfig, SlaStatus, TimerKind,
};
use chrono::{DateTime, Utc};
use crm_core::error::{Error, ErrorKind, Result};
use crm_core::jobs::{JobContext, JobHandlers, JobOutcome, ScheduleOptions};
use crm_core::registry::SchemaChange;
use crm_core::resource::{FieldSpec, HookFuture, Kind, Record, Resource};
use crm_core::service::{Ctx, Tx};
use crm_core::validate::{self, MAX_SHORT_CHARS, Violations};
use sea_orm::sea_query::{Condition, Expr, ExprTrait};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use uuid::Uuid;

crm_core::named_enum! {
    /// Case priority.
    pub enum CasePriority {
        /// The default.
        Normal = "NORMAL",
        /// Low.
        Low = "LOW",
        /// High.
        High = "HIGH",
        /// Urgent.
        Urgent = "URGENT"
    }
}

impl CasePriority {
    /// The SLA selection attribute.
    pub fn sla(self) -> sla::Priority {
        match self {
            CasePriority::Low => sla::Priority::Low,
            CasePriority::Normal => sla::Priority::Normal,
            CasePriority::High => sla::Priority::High,
            CasePriority::Urgent => sla::Priority::Urgent,
        }
    }
}

crm_core::named_enum! {
    /// A case's status as stored (the names of [`CaseStatus`]).
    pub enum CaseState {
        /// Received, not yet worked.
        New = "NEW",
        /// Being worked.
        Open = "OPEN",
        /// Waiting for the customer (SLA paused).
        WaitingOnCustomer = "WAITING_ON_CUSTOMER",
        /// Solved.
        Resolved = "RESOLVED",
        /// Closed for good.
        Closed = "CLOSED",
        /// Came back after a resolution.
        Reopened = "REOPENED"
    }
}

impl From<CaseState> for CaseStatus {
    fn from(s: CaseState) -> Self {
        match s {
            CaseState::New => CaseStatus::New,
            CaseState::Open => CaseStatus::Open,
            CaseState::WaitingOnCustomer => CaseStatus::WaitingOnCustomer,
            CaseState::Resolved => CaseStatus::Resolved,
            CaseState::Closed => CaseStatus::Closed,
            CaseState::Reopened => CaseStatus::Reopened,
        }
    }
}

impl From<CaseStatus> for CaseState {
    fn from(s: CaseStatus) -> Self {
        match s {
            CaseStatus::New => CaseState::New,
            CaseStatus::Open => CaseState::Open,
            CaseStatus::WaitingOnCustomer => CaseState::WaitingOnCustomer,
            CaseStatus::Resolved => CaseState::Resolved,
            CaseStatus::Closed => CaseState::Closed,
            CaseStatus::Reopened => CaseState::Reopened,
        }
    }
}

crm_core::named_enum! {
    /// The SLA status of a case: the worse of its two clocks.
    pub enum SlaState {
        /// No SLA applies (no active policy set when the case was opened).
        None = "NONE",
        /// Running, before the warning.
        Ok = "OK",
        /// A clock is past its warning.
        Warning = "WARNING",
        /// A clock was breached.
        Breached = "BREACHED",
        /// Both clocks stopped within their targets.
        Met = "MET",
        /// Paused (waiting on the customer).
        Paused = "PAUSED"
    }
}

impl From<SlaStatus> for SlaState {
    fn from(s: SlaStatus) -> Self {
        match s {
            SlaStatus::Ok => SlaState::Ok,
            SlaStatus::Warning => SlaState::Warning,
            SlaStatus::Breached => SlaState::Breached,
            SlaStatus::Met => SlaState::Met,
            SlaStatus::Paused => SlaState::Paused,
        }
    }
}

/// The SLA terms a case runs on: the policy chosen and the calendar, copied at creation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlaTerms {
    /// The policy.
    pub policy: SlaPolicy,
    /// The business-hours calendar.
    pub calendar: CalendarConfig,
}

/// A service case.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Case {
    /// Required.
    pub title: String,
    /// What the customer asked.
    pub description: String,
    /// Category code (e.g. `billing`), selects the SLA policy.
    pub category: String,
    /// Priority, selects the SLA policy.
    pub priority: CasePriority,
    /// The product concerned.
    pub product: Option<Uuid>,
    /// The customer (person).
    pub contact: Option<Uuid>,
    /// The customer (organisation).
    pub account: Option<Uuid>,
    /// Customer tier (e.g. `gold`), selects the SLA policy.
    pub customer_tier: String,
    /// Status (output only on update: changed by transitions).
    pub status: CaseState,
    /// The assignee.
    pub owner: Option<Uuid>,
    /// The team working it.
    pub team: Option<Uuid>,
    /// Territory.
    pub territory: Option<Uuid>,
    /// Output only: the id of the SLA policy applied (empty: none).
    pub sla_policy: String,
    /// Output only: the policy set it was chosen from.
    pub sla_policy_set: Option<Uuid>,
    /// Output only: the policy and calendar the clock runs on.
    pub sla_terms: Option<SlaTerms>,
    /// Output only: the SLA clock.
    pub sla_clock: Option<SlaClock>,
    /// Output only: the SLA status as of the last change or timer.
    pub sla_status: SlaState,
    /// Output only: when the first response is due (none once answered or while paused).
    pub first_response_due_time: Option<DateTime<Utc>>,
    /// Output only: when the resolution is due (none once resolved or while paused).
    pub resolution_due_time: Option<DateTime<Utc>>,
    /// Output only: the first response.
    pub first_response_time: Option<DateTime<Utc>>,
    /// Output only: the resolution.
    pub resolve_time: Option<DateTime<Utc>>,
    /// Output only: the SLA warnings and breaches already recorded.
    pub sla_notices: Vec<TimerKind>,
    /// Output only: the user the case was escalated to on a breach.
    pub escalated_to: Option<Uuid>,
    /// Output only: the team the case was escalated to on a breach.
    pub escalated_team: Option<Uuid>,
    /// Output only: when it was escalated.
    pub escalate_time: Option<DateTime<Utc>>,
    /// Output only: every step, oldest first.
    pub steps: Vec<CaseStep>,
    /// The interaction the case was opened from (set on create only): the case takes its
    /// contact, account, title and description when they are not given, and the
    /// interaction is linked to the case in the same transaction.
    pub source_interaction: Option<Uuid>,
    /// Output only: the channel the case came in on (the source interaction's), empty when
    /// an agent opened it.
    pub channel: String,
}

/// Most steps a case records.
pub const MAX_STEPS: usize = 2_000;
/// The longest note of a step, in characters.
pub const MAX_NOTE_CHARS: usize = 4_000;

/// The fields the caller may change with Update; the others change through the use cases.
pub const EDITABLE: &[&str] = &[
    "title",
    "description",
    "category",
    "priority",
    "product",
    "contact",
    "account",
    "customer_tier",
    "owner",
    "team",
    "territory",
];

/// The fields a use case writes besides the editable ones.
const SLA_FIELDS: &[&str] = &[
    "status",
    "sla_clock",
    "sla_status",
    "first_response_due_time",
    "resolution_due_time",
    "first_response_time",
    "resolve_time",
    "sla_notices",
    "escalated_to",
    "escalated_team",
    "escalate_time",
    "steps",
];

impl Resource for Case {
    const COLLECTION: &'static str = "cases";
    const TABLE: &'static str = "cases";
    const OWNED: bool = true;
    const DEFAULT_ORDER: &'static str = "create_time desc";
    const FIELDS: &'static [FieldSpec] = &[
        FieldSpec::new("title", "title", Kind::Text).sort(),
        FieldSpec::new("description", "description", Kind::Text),
        FieldSpec::new("category", "category", Kind::Text).sort(),
        FieldSpec::new("priority", "priority", Kind::Enum(CasePriority::NAMES)).sort(),
        FieldSpec::new("product", "product_id", Kind::Ref("products")).filter(),
        FieldSpec::new("contact", "contact_id", Kind::Ref("contacts")).filter(),
        FieldSpec::new("account", "account_id", Kind::Ref("accounts")).filter(),
        FieldSpec::new("customer_tier", "customer_tier", Kind::Text).filter(),
        FieldSpec::new("status", "status", Kind::Enum(CaseState::NAMES)).sort(),
        FieldSpec::new("owner", "owner_id", Kind::Ref("users")).filter(),
        FieldSpec::new("team", "team_id", Kind::Ref("teams")).filter(),
        FieldSpec::new("territory", "territory_id", Kind::Ref("territories")).filter(),
        FieldSpec::new("sla_policy", "sla_policy", Kind::Text).filter(),
        FieldSpec::new(
            "sla_policy_set",
            "sla_policy_set_id",
            Kind::Ref("slaPolicySets"),
        )
        .filter(),
        FieldSpec::new("sla_terms", "sla_terms", Kind::Json),
        FieldSpec::new("sla_clock", "sla_clock", Kind::Json),
        FieldSpec::new("sla_status", "sla_status", Kind::Enum(SlaState::NAMES)).sort(),
        FieldSpec::new(
            "first_response_due_time",
            "first_response_due_time",
            Kind::Time,
        )
        .sort(),
        FieldSpec::new("resolution_due_time", "resolution_due_time", Kind::Time).sort(),
        FieldSpec::new("first_response_time", "first_response_time", Kind::Time).filter(),
        FieldSpec::new("resolve_time", "resolve_time", Kind::Time).filter(),
        FieldSpec::new("sla_notices", "sla_notices", Kind::Json),
        FieldSpec::new("escalated_to", "escalated_to_id", Kind::Ref("users")).filter(),
        FieldSpec::new("escalated_team", "escalated_team_id", Kind::Ref("teams")).filter(),
        FieldSpec::new("escalate_time", "escalate_time", Kind::Time).filter(),
        FieldSpec::new("steps", "steps", Kind::Json),
        FieldSpec::new(
            "source_interaction",
            "source_interaction_id",
            Kind::Ref("interactions"),
        )
        .immutable()
        .filter(),
        FieldSpec::new("channel", "channel", Kind::Text).filter(),
    ];

    fn validate(&mut self) -> Result<()> {
        let mut v = Violations::new();
        // Opened from an interaction, the title defaults to its subject.
        let title_required = self.source_interaction.is_none();
        if let Some(s) = v.check(validate::text(
            "title",
            &self.title,
            MAX_SHORT_CHARS,
            title_required,
        )) {
            self.title = s;
        }
        if let Some(s) = v.check(validate::text(
            "description",
            &self.description,
            20_000,
            false,
        )) {
            self.description = s;
        }
        if let Some(s) = v.check(validate::text("category", &self.category, 100, false)) {
            self.category = s;
        }
        if let Some(s) = v.check(validate::text(
            "customer_tier",
            &self.customer_tier,
            100,
            false,
        )) {
            self.customer_tier = s;
        }
        if self.steps.len() > MAX_STEPS {
            v.add("steps", format!("a case records at most {MAX_STEPS} steps"));
        }
        v.into_result()
    }

    fn before_write<'a>(
        tx: &'a Tx<'a>,
        id: Uuid,
        old: Option<&'a Self>,
        data: &'a mut Self,
    ) -> HookFuture<'a> {
        Box::pin(async move {
            let ctx = tx.ctx();
            let now = ctx.clock.now();
            match old {
                None => {
                    if let Some(source) = data.source_interaction {
                        from_interaction(tx, source, data).await?;
                    }
                    open_case(tx, id, data, now).await
                }
                Some(o) => {
                    if o.owner != data.owner {
                        data.steps.push(CaseStep {
                            at: now,
                            handler: Some(ctx.principal.user).filter(|u| !u.is_nil()),
                            action: CaseAction::Assigned,
                            from: None,
                            to: None,
                            result: Some(match data.owner {
                                Some(u) => format!("assigned to users/{u}"),
                                None => "unassigned".to_owned(),
                            }),
                            note: None,
                            visibility: StepVisibility::Internal,
                        });
                    }
                    Ok(())
                }
            }
        })
    }

    fn after_write<'a>(
        tx: &'a Tx<'a>,
        action: crm_core::journal::AuditAction,
        rec: &'a Record<Self>,
    ) -> HookFuture<'a> {
        Box::pin(async move {
            if action != crm_core::journal::AuditAction::Create {
                return Ok(());
            }
            let Some(source) = rec.data.source_interaction else {
                return Ok(());
            };
            // The interaction joins the case; someone who linked it to another case since it
            // was read wins, and this create is refused.
            if !tx
                .link(Interaction::COLLECTION, source, "case", rec.meta.id)
                .await?
            {
                return Err(Error::aborted(
                    "CONCURRENT_WRITE",
                    format!("interactions/{source} was put in another case meanwhile; try again"),
                ));
            }
            Ok(())
        })
    }
}

/// Fills a case opened from an interaction: what is not given comes from it. The caller
/// must be able to read the interaction; one already in a case is FAILED_PRECONDITION
/// `INTERACTION_HAS_CASE`.
async fn from_interaction(tx: &Tx<'_>, source: Uuid, data: &mut Case) -> Result<()> {
    let i = tx
        .get::<Interaction>(source)
        .await
        .map_err(|e| e.in_field("source_interaction"))?
        .data;
    if let Some(case) = i.case {
        return Err(Error::failed_precondition(
            "INTERACTION_HAS_CASE",
            format!("interactions/{source} belongs to cases/{case} already"),
        )
        .with("case", format!("cases/{case}")));
    }
    if data.title.trim().is_empty() {
        let subject = i.subject.trim();
        data.title = if subject.is_empty() {
            let from = i
                .participants
                .iter()
                .find(|p| matches!(p.role.as_str(), "FROM" | "CALLER" | "CUSTOMER"))
                .map(|p| p.address.clone())
                .unwrap_or_default();
            format!("{} from {from}", i.channel.as_str().to_lowercase())
                .trim()
                .to_owned()
        } else {
            subject.chars().take(MAX_SHORT_CHARS).collect()
        };
    }
    if data.description.trim().is_empty() {
        data.description = i.body.chars().take(20_000).collect();
    }
    if data.contact.is_none() {
        data.contact = i.contact;
    }
    if data.account.is_none() {
        data.account = i.account;
    }
    data.channel = i.channel.as_str().to_owned();
    Ok(())
}

/// A new case: status, SLA terms and clock, due times, the first timer and the first step.
async fn open_case(tx: &Tx<'_>, id: Uuid, data: &mut Case, now: DateTime<Utc>) -> Result<()> {
    let ctx = tx.ctx();
    data.status = CaseState::New;
    data.sla_policy.clear();
    data.sla_policy_set = None;
    data.sla_terms = None;
    data.sla_clock = None;
    data.sla_status = SlaState::None;
    data.first_response_due_time = None;
    data.resolution_due_time = None;
    data.first_response_time = None;
    data.resolve_time = None;
    data.sla_notices.clear();
    data.escalated_to = None;
    data.escalated_team = None;
    data.escalate_time = None;
    data.steps = vec![CaseStep {
        at: now,
        handler: Some(ctx.principal.user).filter(|u| !u.is_nil()),
        action: CaseAction::Created,
        from: None,
        to: Some(CaseStatus::New),
        result: Some("your request was received".to_owned()),
        note: None,
        visibility: StepVisibility::Public,
    }];
    if let Some(set) = active_policy_set(tx).await? {
        let (Some(config), Some(calendar)) = (set.data.sla.clone(), set.data.calendar.clone())
        else {
            return Ok(());
        };
        let policies = SlaPolicies::new(config).map_err(|e| {
            Error::failed_precondition(
                "SLA_POLICY_INVALID",
                format!("the active SLA policy set is invalid: {e}"),
            )
        })?;
        let policy = policies
            .select(&sla::CaseAttributes {
                priority: data.priority.sla(),
                category: Some(data.category.clone()).filter(|c| !c.is_empty()),
                customer_tier: Some(data.customer_tier.clone()).filter(|c| !c.is_empty()),
            })
            .clone();
        data.sla_policy = policy.id.clone();
        data.sla_policy_set = Some(set.meta.id);
        data.sla_terms = Some(SlaTerms { policy, calendar });
        data.sla_clock = Some(SlaClock::start(now));
        let timers = refresh_sla(data, now)?;
        arm(tx, id, &timers).await?;
        if data.owner.is_none()
            && let Some(assignment) = &set.data.assignment
        {
            assign(tx, data, assignment, now).await?;
        }
    }
    Ok(())
}

/// Gives a new case without an owner to the least loaded eligible agent ([`choose_agent`]),
/// counting each candidate's open cases in this transaction.
async fn assign(
    tx: &Tx<'_>,
    data: &mut Case,
    a: &CaseAssignment,
    now: DateTime<Utc>,
) -> Result<()> {
    use sea_orm::ConnectionTrait;
    use sea_orm::sea_query::{Alias, Func, Query};
    let candidates: Vec<Uuid> = a.agents.iter().map(|g| g.user_id).collect();
    if candidates.is_empty() {
        return Ok(());
    }
    let mut q = Query::select();
    q.from(Alias::new(Case::TABLE))
        .column(Alias::new("owner_id"))
        .expr_as(Func::count(Expr::col(Alias::new("id"))), Alias::new("n"))
        .and_where(Expr::col(Alias::new("tenant_id")).eq(tx.ctx().tenant()))
        .and_where(Expr::col(Alias::new("delete_time")).is_null())
        .and_where(Expr::col(Alias::new("owner_id")).is_in(candidates))
        .and_where(
            Expr::col(Alias::new("status"))
                .is_not_in([CaseState::Resolved.as_str(), CaseState::Closed.as_str()]),
        )
        .group_by_col(Alias::new("owner_id"));
    let mut loads: HashMap<Uuid, u32> = HashMap::new();
    for row in tx.conn().query_all(&q).await? {
        let owner: Uuid = row.try_get("", "owner_id")?;
        let n: i64 = row.try_get("", "n")?;
        loads.insert(owner, u32::try_from(n).unwrap_or(u32::MAX));
    }
    if let Some((user, load)) = choose_agent(a, &data.category, &loads) {
        data.owner = Some(user);
        data.steps.push(CaseStep {
            at: now,
            handler: None,
            action: CaseAction::Assigned,
            from: None,
            to: None,
            result: Some(format!(
                "assigned to users/{user} by the service desk's rules ({load} open cases)"
            )),
            note: None,
            visibility: StepVisibility::Internal,
        });
    }
    Ok(())
}

/// The tenant's active SLA policy set, read as the system.
pub async fn active_policy_set(tx: &Tx<'_>) -> Result<Option<Record<SlaPolicySet>>> {
    Ok(tx
        .find::<SlaPolicySet>(Condition::all().add(Expr::col("active").eq(true)), 1)
        .await?
        .into_iter()
        .next())
}

fn calendar_error(e: CalendarError) -> Error {
    Error::failed_precondition("SLA_CALENDAR", format!("the case's SLA calendar: {e}"))
}

fn sla_error(e: SlaError) -> Error {
    match e {
        SlaError::Calendar(c) => calendar_error(c),
        other => Error::failed_precondition("SLA_CLOCK", other.to_string()),
    }
}

/// Derives the SLA status, due times and stop times from the clock at `now`; the timers to
/// set (strictly after `now`). A case without SLA terms has none.
pub fn refresh_sla(case: &mut Case, now: DateTime<Utc>) -> Result<Vec<(TimerKind, DateTime<Utc>)>> {
    let (Some(terms), Some(clock)) = (&case.sla_terms, &case.sla_clock) else {
        case.sla_status = SlaState::None;
        return Ok(Vec::new());
    };
    let calendar = BusinessCalendar::new(&terms.calendar).map_err(calendar_error)?;
    let policy = &terms.policy;
    let first = clock.status(ClockKind::FirstResponse, policy, &calendar, now);
    let resolution = clock.status(ClockKind::Resolution, policy, &calendar, now);
    case.sla_status = worst(first, resolution).into();
    case.first_response_due_time = clock
        .due_at(ClockKind::FirstResponse, policy, &calendar, now)
        .map_err(sla_error)?;
    case.resolution_due_time = clock
        .due_at(ClockKind::Resolution, policy, &calendar, now)
        .map_err(sla_error)?;
    case.first_response_time = clock.first_response_at;
    case.resolve_time = clock.resolved_at;
    sla::next_timers(clock, policy, &calendar, now).map_err(sla_error)
}

/// The worse of two clock statuses (a breach over a warning over a running clock over a
/// paused one over a met one).
fn worst(a: SlaStatus, b: SlaStatus) -> SlaStatus {
    let rank = |s: SlaStatus| match s {
        SlaStatus::Breached => 4,
        SlaStatus::Warning => 3,
        SlaStatus::Ok => 2,
        SlaStatus::Paused => 1,
        SlaStatus::Met => 0,
    };
    if rank(a) >= rank(b) { a } else { b }
}

/// The job kind of SLA timers.
pub const SLA_JOB: &str = "crm.cases.sla";

/// Sets the case's next SLA timer (one pending per case, replaced on every change), rounded up
/// to the next whole second so that the timer never fires a hair before its instant.
async fn arm(tx: &Tx<'_>, id: Uuid, timers: &[(TimerKind, DateTime<Utc>)]) -> Result<()> {
    let Some(&(kind, at)) = timers.first() else {
        // Nothing to wait for: a pending timer, if any, finds nothing new when it fires.
        return Ok(());
    };
    let due = ceil_second(at);
    let ctx = tx.ctx();
    crm_core::jobs::schedule(
        tx.conn(),
        ctx.clock.as_ref(),
        ctx.tenant(),
        SLA_JOB,
        &serde_json::json!({ "case": id, "timer": kind, "at": at }),
        due,
        &ScheduleOptions {
            dedupe_key: Some(format!("case/{id}")),
            collection: Some(Case::COLLECTION.to_owned()),
            ..Default::default()
        },
    )
    .await?;
    Ok(())
}

fn ceil_second(t: DateTime<Utc>) -> DateTime<Utc> {
    let floor = DateTime::<Utc>::from_timestamp(t.timestamp(), 0).unwrap_or(t);
    if floor == t {
        t
    } else {
        floor + chrono::Duration::seconds(1)
    }
}

/// The full stored record (no field rules), after the caller's read check.
async fn load(tx: &Tx<'_>, id: Uuid) -> Result<Record<Case>> {
    tx.get::<Case>(id).await?;
    tx.find::<Case>(Condition::all().add(Expr::col("id").eq(id)), 1)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| Error::not_found(format!("cases/{id}")))
}

fn mask_of(fields: &[&str]) -> Vec<String> {
    fields.iter().map(|f| (*f).to_owned()).collect()
}

fn check_note(note: &str) -> Result<Option<String>> {
    let n = validate::text("note", note, MAX_NOTE_CHARS, false)?;
    Ok(Some(n).filter(|n| !n.is_empty()))
}

fn user_of(ctx: &Ctx) -> Option<Uuid> {
    Some(ctx.principal.user).filter(|u| !u.is_nil())
}

/// What [`case_for_message`] did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageCase {
    /// A new case was opened from it.
    Opened(Uuid),
    /// It joined its conversation's open case.
    Joined(Uuid),
    /// It joined its conversation's case waiting on the customer, which is open again.
    Resumed(Uuid),
    /// It joined its conversation's resolved case, which is reopened.
    Reopened(Uuid),
    /// Nothing: not an inbound message, already in a case, or gone.
    Skipped,
}

/// Puts an inbound message (an interaction) in a case, in one transaction: the case of its
/// conversation when there is one (a reply to a case waiting on the customer opens it again,
/// resuming the SLA clock; one to a resolved case reopens it; a closed case is left alone and
/// a new one opened), else a new case opened from it ([`Case::source_interaction`]) with
/// `category`. For mailboxes whose messages are service requests.
pub async fn case_for_message(ctx: &Ctx, interaction: Uuid, category: &str) -> Result<MessageCase> {
    use crate::interaction::Direction;
    let tx = ctx.begin().await?;
    let Some(i) = tx
        .find::<Interaction>(Condition::all().add(Expr::col("id").eq(interaction)), 1)
        .await?
        .into_iter()
        .next()
    else {
        return Ok(MessageCase::Skipped);
    };
    if i.data.case.is_some() || i.data.direction != Direction::Inbound {
        return Ok(MessageCase::Skipped);
    }
    // The conversation's latest case (ids are time-ordered).
    let prior = if i.data.conversation.is_empty() {
        None
    } else {
        tx.find::<Interaction>(
            Condition::all()
                .add(Expr::col("conversation").eq(i.data.conversation.clone()))
                .add(Expr::col("case_id").is_not_null())
                .add(Expr::col("id").ne(interaction)),
            200,
        )
        .await?
        .into_iter()
        .filter_map(|r| r.data.case)
        .next_back()
    };
    let found = match prior {
        Some(id) => tx
            .find::<Case>(Condition::all().add(Expr::col("id").eq(id)), 1)
            .await?
            .into_iter()
            .next()
            .filter(|c| c.data.status != CaseState::Closed),
        None => None,
    };
    let done = match found {
        Some(rec) => {
            let id = rec.meta.id;
            let etag = rec.meta.etag();
            let mut case = rec.data;
            let (to, note, outcome) = match CaseStatus::from(case.status) {
                CaseStatus::WaitingOnCustomer => (
                    Some(CaseStatus::Open),
                    "the customer replied",
                    MessageCase::Resumed(id),
                ),
                CaseStatus::Resolved => (
                    Some(CaseStatus::Reopened),
                    "the customer wrote again",
                    MessageCase::Reopened(id),
                ),
                _ => (None, "", MessageCase::Joined(id)),
            };
            if let Some(to) = to {
                apply(
                    &mut case,
                    id,
                    to,
                    Some(note.to_owned()),
                    user_of(ctx),
                    ctx.clock.now(),
                )?;
                save(&tx, id, case, &etag).await?;
            }
            if !tx
                .link(Interaction::COLLECTION, interaction, "case", id)
                .await?
            {
                return Ok(MessageCase::Skipped);
            }
            outcome
        }
        None => {
            let rec = tx
                .create(Case {
                    source_interaction: Some(interaction),
                    category: category.to_owned(),
                    ..Default::default()
                })
                .await?;
            MessageCase::Opened(rec.meta.id)
        }
    };
    tx.commit().await?;
    Ok(done)
}

/// Applies a status change to a loaded case: the clock's effect, the step, the SLA state.
fn apply(
    case: &mut Case,
    id: Uuid,
    to: CaseStatus,
    note: Option<String>,
    handler: Option<Uuid>,
    now: DateTime<Utc>,
) -> Result<()> {
    let from: CaseStatus = case.status.into();
    let result = match case.sla_clock.as_mut() {
        Some(clock) => flow::apply_transition(clock, from, to, now).map(|_| ()),
        None => flow::transition(from, to),
    };
    match result {
        Ok(()) => {}
        Err(CaseError::IllegalTransition { from, to }) => {
            let allowed: Vec<&str> = flow::allowed_next(from)
                .into_iter()
                .map(CaseStatus::as_str)
                .collect();
            return Err(Error::failed_precondition(
                "ILLEGAL_TRANSITION",
                format!(
                    "cases/{id} cannot change from {from} to {to} (allowed from {from}: {})",
                    if allowed.is_empty() {
                        "none".to_owned()
                    } else {
                        allowed.join(", ")
                    }
                ),
            )
            .with("from", from.as_str())
            .with("to", to.as_str())
            .with("allowed", allowed.join(",")));
        }
        Err(CaseError::Sla(e)) => return Err(sla_error(e)),
    }
    case.status = to.into();
    if to == CaseStatus::Reopened {
        case.sla_notices.retain(|n| {
            !matches!(
                n,
                TimerKind::ResolutionWarning | TimerKind::ResolutionBreach
            )
        });
    }
    case.steps.push(CaseStep {
        at: now,
        handler,
        action: CaseAction::StatusChanged,
        from: Some(from),
        to: Some(to),
        result: Some(to.customer_label().to_owned()),
        note,
        visibility: StepVisibility::Public,
    });
    Ok(())
}

/// Writes the use-case fields of a case and sets its next timer, in the transaction.
async fn save(tx: &Tx<'_>, id: Uuid, mut case: Case, etag: &str) -> Result<Record<Case>> {
    let now = tx.ctx().clock.now();
    if case.steps.len() > MAX_STEPS {
        return Err(Error::failed_precondition(
            "TOO_MANY_STEPS",
            format!("cases/{id} has recorded {MAX_STEPS} steps, the most a case keeps"),
        ));
    }
    let timers = refresh_sla(&mut case, now)?;
    arm(tx, id, &timers).await?;
    tx.update(id, case, &mask_of(SLA_FIELDS), etag).await
}

fn etag_or(etag: &str, rec: &Record<Case>) -> String {
    if etag.trim().is_empty() {
        rec.meta.etag()
    } else {
        etag.to_owned()
    }
}

/// Changes a case's status (see the module docs). `etag` (optional) guards against a
/// concurrent change.
pub async fn transition_case(
    ctx: &Ctx,
    id: Uuid,
    to: CaseStatus,
    note: &str,
    etag: &str,
) -> Result<Record<Case>> {
    let note = check_note(note)?;
    let tx = ctx.begin().await?;
    let rec = load(&tx, id).await?;
    let etag = etag_or(etag, &rec);
    let mut case = rec.data;
    apply(&mut case, id, to, note, user_of(ctx), ctx.clock.now())?;
    let out = save(&tx, id, case, &etag).await?;
    tx.commit().await?;
    Ok(out)
}

/// Records a response to the customer: the first one stops the first-response clock; a NEW
/// case becomes OPEN.
pub async fn respond_to_case(ctx: &Ctx, id: Uuid, note: &str, etag: &str) -> Result<Record<Case>> {
    let note = check_note(note)?;
    let tx = ctx.begin().await?;
    let rec = load(&tx, id).await?;
    let etag = etag_or(etag, &rec);
    let mut case = rec.data;
    let now = ctx.clock.now();
    let status: CaseStatus = case.status.into();
    if matches!(status, CaseStatus::Resolved | CaseStatus::Closed) {
        return Err(Error::failed_precondition(
            "CASE_NOT_OPEN",
            format!("cases/{id} is {status}: reopen it before responding"),
        )
        .with("status", status.as_str()));
    }
    if status == CaseStatus::New {
        apply(&mut case, id, CaseStatus::Open, None, user_of(ctx), now)?;
    }
    if let Some(clock) = case.sla_clock.as_mut() {
        clock.respond(now).map_err(sla_error)?;
    }
    case.steps.push(CaseStep {
        at: now,
        handler: user_of(ctx),
        action: CaseAction::Responded,
        from: None,
        to: None,
        result: Some("we answered your request".to_owned()),
        note,
        visibility: StepVisibility::Public,
    });
    let out = save(&tx, id, case, &etag).await?;
    tx.commit().await?;
    Ok(out)
}

/// Updates the editable fields of a case ([`EDITABLE`]); the others change through the use
/// cases, and naming them is INVALID_ARGUMENT on `update_mask`.
pub async fn update_case(
    ctx: &Ctx,
    id: Uuid,
    data: Case,
    mask: &[String],
    etag: &str,
) -> Result<Record<Case>> {
    if let Some(f) = mask.iter().find(|m| !EDITABLE.contains(&m.as_str())) {
        return Err(Error::invalid(
            "update_mask",
            if Case::FIELDS.iter().any(|s| s.name == f) {
                format!(
                    "field {f:?} is output only: statuses change with TransitionCase and RespondToCase"
                )
            } else {
                format!("unknown field {f:?}")
            },
        ));
    }
    ctx.update(id, data, mask, etag).await
}

/// What a customer portal shows of a case (the caller must be allowed to read it).
pub async fn customer_view(ctx: &Ctx, id: Uuid) -> Result<flow::CustomerCaseView> {
    let rec = ctx.get::<Case>(id).await?;
    let now = ctx.clock.now();
    let c = rec.data;
    let calendar = match &c.sla_terms {
        Some(t) => Some(BusinessCalendar::new(&t.calendar).map_err(calendar_error)?),
        None => None,
    };
    let sla = match (&c.sla_terms, &c.sla_clock, &calendar) {
        (Some(t), Some(clock), Some(calendar)) => Some(flow::SlaContext {
            clock,
            policy: &t.policy,
            calendar,
        }),
        _ => None,
    };
    Ok(flow::customer_view(c.status.into(), &c.steps, sla, now))
}

/// Registers the SLA timer handler.
pub fn register_jobs(h: &mut JobHandlers) -> Result<()> {
    h.register(SLA_JOB, sla_job)?;
    Ok(())
}

fn clock_name(kind: ClockKind) -> &'static str {
    match kind {
        ClockKind::FirstResponse => "first response",
        ClockKind::Resolution => "resolution",
    }
}

/// An SLA timer fired: re-evaluates the case's stored clock at `now` (never the timer's own
/// claim), records a warning or a breach once per clock, escalates on a breach and sets the
/// next timer. Idempotent: a second run finds the notices recorded and changes nothing.
pub async fn sla_job(job: JobContext) -> Result<JobOutcome> {
    #[derive(Deserialize)]
    struct Payload {
        case: Uuid,
    }
    let p: Payload = job.payload_as()?;
    let ctx = job.system_ctx(None);
    let tx = ctx.begin().await?;
    let Some(rec) = tx
        .find::<Case>(Condition::all().add(Expr::col("id").eq(p.case)), 1)
        .await?
        .into_iter()
        .next()
    else {
        return Ok(JobOutcome::done());
    };
    let etag = rec.meta.etag();
    let mut case = rec.data;
    let (Some(terms), Some(clock)) = (case.sla_terms.clone(), case.sla_clock.clone()) else {
        return Ok(JobOutcome::done());
    };
    let calendar = BusinessCalendar::new(&terms.calendar).map_err(calendar_error)?;
    let now = ctx.clock.now();
    let mut changed = false;
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
        let status = clock.status(kind, &terms.policy, &calendar, now);
        let running = clock.stopped_at(kind).is_none();
        let due = clock
            .due_at(kind, &terms.policy, &calendar, now)
            .ok()
            .flatten();
        match status {
            SlaStatus::Breached if running && !case.sla_notices.contains(&breach) => {
                case.sla_notices.push(breach);
                if !case.sla_notices.contains(&warn) {
                    case.sla_notices.push(warn);
                }
                let to = escalate(&tx, &mut case, terms.policy.escalation, now).await?;
                case.steps.push(CaseStep {
                    at: now,
                    handler: None,
                    action: CaseAction::Escalated,
                    from: None,
                    to: None,
                    result: Some(format!(
                        "{} SLA breached{}; {to}",
                        clock_name(kind),
                        due.map(|d| format!(" (due {})", d.to_rfc3339()))
                            .unwrap_or_default()
                    )),
                    note: None,
                    visibility: StepVisibility::Internal,
                });
                changed = true;
            }
            SlaStatus::Warning if !case.sla_notices.contains(&warn) => {
                case.sla_notices.push(warn);
                case.steps.push(CaseStep {
                    at: now,
                    handler: None,
                    action: CaseAction::Commented,
                    from: None,
                    to: None,
                    result: Some(format!(
                        "{} SLA warning{}",
                        clock_name(kind),
                        due.map(|d| format!(": due {}", d.to_rfc3339()))
                            .unwrap_or_default()
                    )),
                    note: None,
                    visibility: StepVisibility::Internal,
                });
                changed = true;
            }
            _ => {}
        }
    }
    let before = case.sla_status;
    let timers = refresh_sla(&mut case, now)?;
    if !changed && before == case.sla_status {
        // Nothing new (answered, paused or resolved meanwhile): only the next timer.
        arm(&tx, p.case, &timers).await?;
        tx.commit().await?;
        return Ok(JobOutcome::done());
    }
    if case.steps.len() > MAX_STEPS {
        case.steps.drain(..case.steps.len() - MAX_STEPS);
    }
    arm(&tx, p.case, &timers).await?;
    match tx.update(p.case, case, &mask_of(SLA_FIELDS), &etag).await {
        Ok(_) => {}
        // Changed meanwhile: the change re-armed the timer; nothing to do on a stale read.
        Err(e) if e.kind == ErrorKind::Aborted => return Ok(JobOutcome::done()),
        Err(e) => return Err(e),
    }
    tx.commit().await?;
    Ok(JobOutcome::done())
}

/// Sets the escalation of a breached case; says to whom, for the step.
async fn escalate(
    tx: &Tx<'_>,
    case: &mut Case,
    target: EscalationTarget,
    now: DateTime<Utc>,
) -> Result<String> {
    let manager = match (target, case.owner) {
        (EscalationTarget::AssigneeManager, Some(owner)) => tx
            .find::<crm_core::model::User>(Condition::all().add(Expr::col("id").eq(owner)), 1)
            .await?
            .into_iter()
            .next()
            .and_then(|u| u.data.manager),
        _ => None,
    };
    Ok(match target.recipient(manager) {
        Some(Recipient::User(u)) => {
            case.escalated_to = Some(u);
            case.escalate_time = Some(now);
            format!("escalated to users/{u}")
        }
        Some(Recipient::Team(t)) => {
            case.escalated_team = Some(t);
            case.escalate_time = Some(now);
            format!("escalated to teams/{t}")
        }
        None => "not escalated: the assignee has no manager".to_owned(),
    })
}

/// A tenant's SLA configuration: policies, selection rules and the business-hours calendar.
/// Several may be kept; at most one is active (activating one switches the others off in the
/// same transaction). Every change is audited; running cases keep the terms they started with.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SlaPolicySet {
    /// A name for people.
    pub display_name: String,
    /// Whether new cases take their SLA from this set.
    pub active: bool,
    /// Policies and rules (required).
    pub sla: Option<SlaPolicyConfig>,
    /// The business-hours calendar (required).
    pub calendar: Option<CalendarConfig>,
    /// Who takes new cases that name no owner; none: the caller (or the mailbox's owner).
    pub assignment: Option<CaseAssignment>,
}

/// How new cases without an owner are assigned: to the least loaded agent (fewest open
/// cases) among those whose skills cover the case's category, earlier agents first on a tie.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CaseAssignment {
    /// The agents, in order of preference on a tie.
    pub agents: Vec<CaseAgent>,
    /// Open cases an agent may hold before being passed over (0: no limit). When every
    /// eligible agent is at the limit, the case stays with its creator.
    pub max_open: u32,
}

/// An agent who takes new cases.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CaseAgent {
    /// The user.
    pub user_id: Uuid,
    /// Categories the agent handles (empty: every category).
    pub categories: Vec<String>,
}

/// Most agents an assignment lists.
pub const MAX_AGENTS: usize = 500;

/// The agent a new case of `category` goes to, given each agent's open cases (`loads`):
/// eligible by skill and under `max_open`, the least loaded, the earlier one on a tie. None
/// when nobody is eligible. Returns the agent and the open cases they held.
pub fn choose_agent(
    a: &CaseAssignment,
    category: &str,
    loads: &HashMap<Uuid, u32>,
) -> Option<(Uuid, u32)> {
    let category = category.trim().to_lowercase();
    a.agents
        .iter()
        .filter(|g| {
            g.categories.is_empty()
                || g.categories
                    .iter()
                    .any(|c| c.trim().to_lowercase() == category)
        })
        .map(|g| (g.user_id, loads.get(&g.user_id).copied().unwrap_or(0)))
        .filter(|(_, load)| a.max_open == 0 || *load < a.max_open)
        .enumerate()
        .min_by_key(|(i, (_, load))| (*load, *i))
        .map(|(_, chosen)| chosen)
}

impl Resource for SlaPolicySet {
    const COLLECTION: &'static str = "slaPolicySets";
    const TABLE: &'static str = "sla_policy_sets";
    const DEFAULT_ORDER: &'static str = "display_name";
    const FIELDS: &'static [FieldSpec] = &[
        FieldSpec::new("display_name", "display_name", Kind::Text).sort(),
        FieldSpec::new("active", "active", Kind::Bool).filter(),
        FieldSpec::new("sla", "sla", Kind::Json),
        FieldSpec::new("calendar", "calendar", Kind::Json),
        FieldSpec::new("assignment", "assignment", Kind::Json),
    ];

    fn validate(&mut self) -> Result<()> {
        let mut v = Violations::new();
        if let Some(s) = v.check(validate::text(
            "display_name",
            &self.display_name,
            MAX_SHORT_CHARS,
            true,
        )) {
            self.display_name = s;
        }
        match &self.sla {
            None => v.add("sla", "is required"),
            Some(c) => {
                if c.policies.len() > 200 || c.rules.len() > 500 {
                    v.add("sla", "at most 200 policies and 500 rules");
                } else if let Err(e) = SlaPolicies::new(c.clone()) {
                    v.add(e.field, e.message);
                }
            }
        }
        match &self.calendar {
            None => v.add("calendar", "is required"),
            Some(c) => {
                if c.weekly_hours.len() + c.holidays.len() + c.extra_working_days.len() > 5_000 {
                    v.add("calendar", "at most 5000 entries");
                } else {
                    match BusinessCalendar::new(c) {
                        Ok(_) => {}
                        Err(CalendarError::Invalid { field, message }) => v.add(field, message),
                        Err(e) => v.add("calendar", e.to_string()),
                    }
                }
            }
        }
        if let Some(a) = &mut self.assignment {
            if a.agents.len() > MAX_AGENTS {
                v.add("assignment.agents", format!("at most {MAX_AGENTS} agents"));
            }
            let mut seen = std::collections::HashSet::new();
            for (i, g) in a.agents.iter_mut().enumerate() {
                if g.user_id.is_nil() {
                    v.add(format!("assignment.agents[{i}].user_id"), "is required");
                } else if !seen.insert(g.user_id) {
                    v.add(format!("assignment.agents[{i}].user_id"), "is listed twice");
                }
                if g.categories.len() > 100 {
                    v.add(format!("assignment.agents[{i}].categories"), "at most 100");
                }
                for c in &mut g.categories {
                    *c = c.trim().to_lowercase();
                }
            }
        }
        v.into_result()
    }

    fn nested_refs(&self) -> Vec<(String, &'static str, Uuid)> {
        let agents = self.assignment.iter().flat_map(|a| {
            a.agents.iter().enumerate().map(|(i, g)| {
                (
                    format!("assignment.agents[{i}].user_id"),
                    "users",
                    g.user_id,
                )
            })
        });
        let Some(c) = &self.sla else {
            return agents.collect();
        };
        let mut refs: Vec<(String, &'static str, Uuid)> = agents.collect();
        refs.extend(
            c.policies
                .iter()
                .enumerate()
                .filter_map(|(i, p)| match p.escalation {
                    EscalationTarget::User { user_id } => Some((
                        format!("sla.policies[{i}].escalation.user_id"),
                        "users",
                        user_id,
                    )),
                    EscalationTarget::Team { team_id } => Some((
                        format!("sla.policies[{i}].escalation.team_id"),
                        "teams",
                        team_id,
                    )),
                    EscalationTarget::AssigneeManager => None,
                }),
        );
        refs
    }

    fn before_write<'a>(
        tx: &'a Tx<'a>,
        id: Uuid,
        _old: Option<&'a Self>,
        data: &'a mut Self,
    ) -> HookFuture<'a> {
        Box::pin(async move {
            if !data.active {
                return Ok(());
            }
            let others = tx
                .find::<SlaPolicySet>(
                    Condition::all()
                        .add(Expr::col("active").eq(true))
                        .add(Expr::col("id").ne(id)),
                    100,
                )
                .await?;
            for o in others {
                tx.update(
                    o.meta.id,
                    SlaPolicySet {
                        active: false,
                        ..Default::default()
                    },
                    &["active".to_owned()],
                    &o.meta.etag(),
                )
                .await
                .map_err(|e| {
                    if e.kind == ErrorKind::PermissionDenied {
                        Error::permission_denied(
                            "ACTION_NOT_ALLOWED",
                            "activating a policy set switches the active one off, which needs update rights on it",
                        )
                    } else {
                        e
                    }
                })?;
            }
            Ok(())
        })
    }
}

/// A case's source interaction and channel.
pub const SOURCE_SCHEMA: SchemaChange = SchemaChange::new(
    "m20261205_100003_case_source",
    &[
        "ALTER TABLE cases ADD COLUMN source_interaction_id UUID NULL",
        "ALTER TABLE cases ADD COLUMN channel TEXT NOT NULL DEFAULT ''",
        "CREATE INDEX cases_source_interaction ON cases (tenant_id, source_interaction_id)",
    ],
);

/// Case assignment rules of SLA policy sets.
pub const ASSIGNMENT_SCHEMA: SchemaChange = SchemaChange::new(
    "m20261205_100004_sla_policy_set_assignment",
    &["ALTER TABLE sla_policy_sets ADD COLUMN assignment TEXT NOT NULL DEFAULT 'null'"],
);

/// The cases and SLA policy sets tables.
pub const SCHEMA: SchemaChange = SchemaChange::new(
    "m20261126_200002_cases",
    &[
        crm_core::resource_table!(
            "cases",
            "title TEXT NOT NULL, description TEXT NOT NULL, category TEXT NOT NULL, \
             priority TEXT NOT NULL, product_id UUID NULL, contact_id UUID NULL, \
             account_id UUID NULL, customer_tier TEXT NOT NULL, status TEXT NOT NULL, \
             owner_id UUID NULL, team_id UUID NULL, territory_id UUID NULL, \
             sla_policy TEXT NOT NULL, sla_policy_set_id UUID NULL, sla_terms TEXT NOT NULL, \
             sla_clock TEXT NOT NULL, sla_status TEXT NOT NULL, \
             first_response_due_time TIMESTAMPTZ NULL, resolution_due_time TIMESTAMPTZ NULL, \
             first_response_time TIMESTAMPTZ NULL, resolve_time TIMESTAMPTZ NULL, \
             sla_notices TEXT NOT NULL, escalated_to_id UUID NULL, escalated_team_id UUID NULL, \
             escalate_time TIMESTAMPTZ NULL, steps TEXT NOT NULL"
        ),
        "CREATE INDEX cases_owner ON cases (tenant_id, owner_id, status)",
        "CREATE INDEX cases_status ON cases (tenant_id, status, id)",
        "CREATE INDEX cases_resolution_due ON cases (tenant_id, resolution_due_time, id)",
        "CREATE INDEX cases_first_response_due ON cases (tenant_id, first_response_due_time, id)",
        "CREATE INDEX cases_contact ON cases (tenant_id, contact_id, id)",
        "CREATE INDEX cases_account ON cases (tenant_id, account_id, id)",
        crm_core::resource_table!(
            "sla_policy_sets",
            "display_name TEXT NOT NULL, active BOOLEAN NOT NULL, sla TEXT NOT NULL, \
             calendar TEXT NOT NULL"
        ),
        "CREATE INDEX sla_policy_sets_active ON sla_policy_sets (tenant_id, active)",
    ],
);

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::calendar::{Weekday, WeeklyHours};
    use crate::sla::WarningThreshold;

    fn always_open() -> CalendarConfig {
        use Weekday::*;
        CalendarConfig {
            time_zone: "UTC".into(),
            weekly_hours: [
                Monday, Tuesday, Wednesday, Thursday, Friday, Saturday, Sunday,
            ]
            .into_iter()
            .map(|day| WeeklyHours {
                day,
                start: "00:00".into(),
                end: "24:00".into(),
            })
            .collect(),
            holidays: vec![],
            extra_working_days: vec![],
        }
    }

    fn policy() -> SlaPolicy {
        SlaPolicy {
            id: "std".into(),
            first_response_minutes: 60,
            resolution_minutes: 480,
            warning: WarningThreshold::Percent(80),
            escalation: EscalationTarget::AssigneeManager,
        }
    }

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn refresh_derives_due_times_status_and_timers() {
        let start = t("2026-03-02T09:00:00Z");
        let mut c = Case {
            sla_terms: Some(SlaTerms {
                policy: policy(),
                calendar: always_open(),
            }),
            sla_clock: Some(SlaClock::start(start)),
            ..Default::default()
        };
        let timers = refresh_sla(&mut c, start).unwrap();
        assert_eq!(c.sla_status, SlaState::Ok);
        assert_eq!(c.first_response_due_time, Some(t("2026-03-02T10:00:00Z")));
        assert_eq!(c.resolution_due_time, Some(t("2026-03-02T17:00:00Z")));
        assert_eq!(
            timers.first(),
            Some(&(TimerKind::FirstResponseWarning, t("2026-03-02T09:48:00Z")))
        );
        refresh_sla(&mut c, t("2026-03-02T09:50:00Z")).unwrap();
        assert_eq!(c.sla_status, SlaState::Warning);
        refresh_sla(&mut c, t("2026-03-02T10:00:00Z")).unwrap();
        assert_eq!(c.sla_status, SlaState::Breached);
    }

    #[test]
    fn illegal_transitions_name_both_statuses() {
        let mut c = Case::default();
        let id = Uuid::now_v7();
        let e = apply(
            &mut c,
            id,
            CaseStatus::Reopened,
            None,
            None,
            t("2026-03-02T09:00:00Z"),
        )
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::FailedPrecondition);
        assert!(
            e.message.contains("NEW") && e.message.contains("REOPENED"),
            "{}",
            e.message
        );
        assert_eq!(c.status, CaseState::New);
        assert!(c.steps.is_empty());
    }

    #[test]
    fn seconds_round_up() {
        assert_eq!(
            ceil_second(t("2026-03-02T09:00:00.000001Z")),
            t("2026-03-02T09:00:01Z")
        );
        assert_eq!(
            ceil_second(t("2026-03-02T09:00:00Z")),
            t("2026-03-02T09:00:00Z")
        );
    }

    #[test]
    fn policy_sets_name_the_bad_field() {
        let mut s = SlaPolicySet {
            display_name: "x".into(),
            sla: Some(SlaPolicyConfig {
                policies: vec![policy()],
                rules: vec![],
                default_policy: "std".into(),
            }),
            calendar: Some(CalendarConfig {
                time_zone: "UTC".into(),
                weekly_hours: vec![],
                holidays: vec![],
                extra_working_days: vec![],
            }),
            ..Default::default()
        };
        let e = s.validate().unwrap_err();
        assert_eq!(e.violations[0].field, "calendar.weekly_hours");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod assignment_tests {
    use super::*;

    fn agent(n: u128, categories: &[&str]) -> CaseAgent {
        CaseAgent {
            user_id: Uuid::from_u128(n),
            categories: categories.iter().map(|c| (*c).to_owned()).collect(),
        }
    }

    #[test]
    fn the_least_loaded_skilled_agent_takes_the_case() {
        let a = CaseAssignment {
            agents: vec![
                agent(1, &["billing"]),
                agent(2, &[]),
                agent(3, &["hardware", "billing"]),
            ],
            max_open: 0,
        };
        let none = HashMap::new();
        // A tie goes to the earlier agent.
        assert_eq!(
            choose_agent(&a, "billing", &none),
            Some((Uuid::from_u128(1), 0))
        );
        // Skills: agent 1 does not take hardware.
        assert_eq!(
            choose_agent(&a, "Hardware", &none),
            Some((Uuid::from_u128(2), 0))
        );
        let loads: HashMap<Uuid, u32> = [
            (Uuid::from_u128(1), 4),
            (Uuid::from_u128(2), 2),
            (Uuid::from_u128(3), 1),
        ]
        .into();
        assert_eq!(
            choose_agent(&a, "billing", &loads),
            Some((Uuid::from_u128(3), 1))
        );
        assert_eq!(
            choose_agent(&a, "other", &loads),
            Some((Uuid::from_u128(2), 2))
        );
        // The limit passes full agents over; nobody eligible: None.
        let capped = CaseAssignment {
            max_open: 2,
            ..a.clone()
        };
        assert_eq!(choose_agent(&capped, "other", &loads), None);
        assert_eq!(
            choose_agent(&capped, "billing", &loads),
            Some((Uuid::from_u128(3), 1))
        );
        assert_eq!(choose_agent(&CaseAssignment::default(), "x", &none), None);
    }
}
