//! Follow-up activities (O5): tasks, calls, meetings and e-mails with due times, outcomes and
//! reminders (durable timers), attached to a lead, a contact or an account. Logging an
//! activity on a NEW lead moves it to WORKING (so it is no longer escalated as untouched).

use crate::lead::{Lead, LeadStatus};
use crm_core::error::Result;
use crm_core::jobs::{JobContext, JobHandlers, JobOutcome, ScheduleOptions};
use crm_core::registry::SchemaChange;
use crm_core::resource::{FieldSpec, HookFuture, Kind, Resource};
use crm_core::service::Tx;
use crm_core::validate::{self, MAX_SHORT_CHARS, Violations};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

crm_core::named_enum! {
    /// What kind of follow-up.
    pub enum ActivityKind {
        /// Something to do.
        Task = "TASK",
        /// A phone call.
        Call = "CALL",
        /// A meeting (in person or online).
        Meeting = "MEETING",
        /// An e-mail to write.
        Email = "EMAIL"
    }
}

crm_core::named_enum! {
    /// Where an activity stands.
    pub enum ActivityStatus {
        /// To do.
        Open = "OPEN",
        /// Done, with its outcome.
        Done = "DONE",
        /// Not to be done.
        Cancelled = "CANCELLED"
    }
}

/// A follow-up activity.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Activity {
    /// Task, call, meeting or e-mail.
    pub kind: ActivityKind,
    /// Required.
    pub subject: String,
    /// Free text.
    pub notes: String,
    /// When it is due.
    pub due_time: Option<chrono::DateTime<chrono::Utc>>,
    /// A reminder this many seconds before `due_time` (0: none).
    pub remind_before_seconds: i64,
    /// Open, done or cancelled.
    pub status: ActivityStatus,
    /// What came of it (e.g. "reached, wants a quote").
    pub outcome: String,
    /// The lead it follows up.
    pub lead: Option<Uuid>,
    /// The contact it concerns.
    pub contact: Option<Uuid>,
    /// The account it concerns.
    pub account: Option<Uuid>,
    /// Who does it (defaults to the creator).
    pub owner: Option<Uuid>,
    /// Territory.
    pub territory: Option<Uuid>,
    /// Output only: when the reminder fired.
    pub reminded_time: Option<chrono::DateTime<chrono::Utc>>,
    /// Output only: when it was marked done.
    pub done_time: Option<chrono::DateTime<chrono::Utc>>,
}

impl Resource for Activity {
    const COLLECTION: &'static str = "activities";
    const TABLE: &'static str = "activities";
    const OWNED: bool = true;
    const DEFAULT_ORDER: &'static str = "due_time, create_time";
    const FIELDS: &'static [FieldSpec] = &[
        FieldSpec::new("kind", "kind", Kind::Enum(ActivityKind::NAMES)).filter(),
        FieldSpec::new("subject", "subject", Kind::Text).sort(),
        FieldSpec::new("notes", "notes", Kind::Text),
        FieldSpec::new("due_time", "due_time", Kind::Time).sort(),
        FieldSpec::new("remind_before_seconds", "remind_before_seconds", Kind::Int),
        FieldSpec::new("status", "status", Kind::Enum(ActivityStatus::NAMES)).sort(),
        FieldSpec::new("outcome", "outcome", Kind::Text),
        FieldSpec::new("lead", "lead_id", Kind::Ref("leads")).filter(),
        FieldSpec::new("contact", "contact_id", Kind::Ref("contacts")).filter(),
        FieldSpec::new("account", "account_id", Kind::Ref("accounts")).filter(),
        FieldSpec::new("owner", "owner_id", Kind::Ref("users")).filter(),
        FieldSpec::new("territory", "territory_id", Kind::Ref("territories")).filter(),
        FieldSpec::new("reminded_time", "reminded_time", Kind::Time).sort(),
        FieldSpec::new("done_time", "done_time", Kind::Time).sort(),
    ];

    fn validate(&mut self) -> Result<()> {
        let mut v = Violations::new();
        if let Some(s) = v.check(validate::text(
            "subject",
            &self.subject,
            MAX_SHORT_CHARS,
            true,
        )) {
            self.subject = s;
        }
        if let Some(s) = v.check(validate::text("notes", &self.notes, 10_000, false)) {
            self.notes = s;
        }
        if let Some(s) = v.check(validate::text("outcome", &self.outcome, 2_000, false)) {
            self.outcome = s;
        }
        if !(0..=366 * 24 * 3600).contains(&self.remind_before_seconds) {
            v.add(
                "remind_before_seconds",
                "must be within 0 (no reminder) and a year of seconds",
            );
        }
        if self.remind_before_seconds > 0 && self.due_time.is_none() {
            v.add("due_time", "a reminder needs a due time");
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
            // Output-only times: kept, or set by what makes them (the wire never sends a
            // reminder time; the reminder job does).
            data.reminded_time = data.reminded_time.or(old.and_then(|o| o.reminded_time));
            data.done_time = match (old.map(|o| o.status), data.status) {
                (Some(ActivityStatus::Done), ActivityStatus::Done) => old.and_then(|o| o.done_time),
                (_, ActivityStatus::Done) => Some(now),
                _ => None,
            };
            // A (re-)armed reminder: one pending timer per activity, replaced when the due
            // time or the lead time changes; it checks the activity again when it fires.
            let rearm = old.is_none_or(|o| {
                o.due_time != data.due_time || o.remind_before_seconds != data.remind_before_seconds
            });
            if rearm {
                data.reminded_time = None;
            }
            if rearm
                && data.status == ActivityStatus::Open
                && data.remind_before_seconds > 0
                && let Some(due) = data.due_time
            {
                let at = due - chrono::Duration::seconds(data.remind_before_seconds);
                crm_core::jobs::schedule(
                    tx.conn(),
                    ctx.clock.as_ref(),
                    ctx.tenant(),
                    REMIND_JOB,
                    &serde_json::json!({ "activity": id, "due": due }),
                    at,
                    &ScheduleOptions {
                        dedupe_key: Some(format!("activity/{id}")),
                        collection: Some(Activity::COLLECTION.to_owned()),
                        ..Default::default()
                    },
                )
                .await?;
            }
            // Following a NEW lead up puts it to WORKING.
            if old.is_none()
                && let Some(lead) = data.lead
            {
                let l = tx.get::<Lead>(lead).await.map_err(|e| e.in_field("lead"))?;
                if l.data.status == LeadStatus::New {
                    tx.update(
                        lead,
                        Lead {
                            status: LeadStatus::Working,
                            ..Default::default()
                        },
                        &["status".to_owned()],
                        &l.meta.etag(),
                    )
                    .await
                    .map_err(|e| e.in_field("lead"))?;
                }
            }
            Ok(())
        })
    }
}

/// The job kind of activity reminders.
pub const REMIND_JOB: &str = "crm.activities.remind";

/// Registers the reminder handler.
pub fn register_jobs(h: &mut JobHandlers) -> Result<()> {
    h.register(REMIND_JOB, remind_job)?;
    Ok(())
}

/// Fires a reminder: an activity still OPEN with the same due time gets `reminded_time`
/// (audited, evented as `activities.updated`, which notifications follow). One done,
/// cancelled, deleted or moved to another time is left alone. Idempotent.
pub async fn remind_job(job: JobContext) -> Result<JobOutcome> {
    #[derive(Deserialize)]
    struct Payload {
        activity: Uuid,
        due: chrono::DateTime<chrono::Utc>,
    }
    let p: Payload = job.payload_as()?;
    let ctx = job.system_ctx(None);
    let a = match ctx.get::<Activity>(p.activity).await {
        Ok(a) => a,
        Err(e) if e.kind == crm_core::ErrorKind::NotFound => return Ok(JobOutcome::done()),
        Err(e) => return Err(e),
    };
    if a.data.status != ActivityStatus::Open
        || a.data.due_time != Some(p.due)
        || a.data.reminded_time.is_some()
    {
        return Ok(JobOutcome::done());
    }
    ctx.update(
        p.activity,
        Activity {
            reminded_time: Some(ctx.clock.now()),
            ..Default::default()
        },
        &["reminded_time".to_owned()],
        &a.meta.etag(),
    )
    .await?;
    Ok(JobOutcome::done())
}

/// The activities table.
pub const SCHEMA: SchemaChange = SchemaChange::new(
    "m20261125_100002_activities",
    &[
        crm_core::resource_table!(
            "activities",
            "kind TEXT NOT NULL, subject TEXT NOT NULL, notes TEXT NOT NULL, \
             due_time TIMESTAMPTZ NULL, remind_before_seconds BIGINT NOT NULL, \
             status TEXT NOT NULL, outcome TEXT NOT NULL, lead_id UUID NULL, \
             contact_id UUID NULL, account_id UUID NULL, owner_id UUID NULL, \
             territory_id UUID NULL, reminded_time TIMESTAMPTZ NULL, done_time TIMESTAMPTZ NULL"
        ),
        "CREATE INDEX activities_owner_due ON activities (tenant_id, owner_id, due_time, id)",
        "CREATE INDEX activities_lead ON activities (tenant_id, lead_id, id)",
        "CREATE INDEX activities_contact ON activities (tenant_id, contact_id, id)",
    ],
);
