//! ActivityService: follow-up activities (crm-operational).

use super::{Gateway, Wire};
use crate::convert::{from_ts, hidden, name, opt_ts, reference, ts};
use crm_api::v1 as pb;
use crm_api::v1::activity_service_server::ActivityService;
use crm_core::error::Result;
use crm_core::resource::Record;
use crm_operational::activity::{Activity, ActivityKind, ActivityStatus};
use pb::ListActivitiesResponse;

pub struct Activities(pub Gateway);

fn kind_in(k: i32) -> Result<ActivityKind> {
    use pb::ActivityKind as P;
    Ok(match P::try_from(k) {
        Ok(P::Unspecified | P::Task) => ActivityKind::Task,
        Ok(P::Call) => ActivityKind::Call,
        Ok(P::Meeting) => ActivityKind::Meeting,
        Ok(P::Email) => ActivityKind::Email,
        Err(_) => return Err(crate::convert::unknown_enum("kind", k)),
    })
}

fn kind_out(k: ActivityKind) -> i32 {
    use pb::ActivityKind as P;
    (match k {
        ActivityKind::Task => P::Task,
        ActivityKind::Call => P::Call,
        ActivityKind::Meeting => P::Meeting,
        ActivityKind::Email => P::Email,
    }) as i32
}

fn status_in(s: i32) -> Result<ActivityStatus> {
    use pb::ActivityStatus as P;
    Ok(match P::try_from(s) {
        Ok(P::Unspecified | P::Open) => ActivityStatus::Open,
        Ok(P::Done) => ActivityStatus::Done,
        Ok(P::Cancelled) => ActivityStatus::Cancelled,
        Err(_) => return Err(crate::convert::unknown_enum("status", s)),
    })
}

fn status_out(s: ActivityStatus) -> i32 {
    use pb::ActivityStatus as P;
    (match s {
        ActivityStatus::Open => P::Open,
        ActivityStatus::Done => P::Done,
        ActivityStatus::Cancelled => P::Cancelled,
    }) as i32
}

impl Wire<Activity> for pb::Activity {
    const FIELD: &'static str = "activity";

    fn into_domain(self) -> Result<Activity> {
        Ok(Activity {
            kind: kind_in(self.kind)?,
            subject: self.subject,
            notes: self.notes,
            due_time: from_ts("due_time", self.due_time)?,
            remind_before_seconds: self.remind_before_seconds,
            status: status_in(self.status)?,
            outcome: self.outcome,
            lead: reference("lead", "leads", &self.lead)?,
            contact: reference("contact", "contacts", &self.contact)?,
            account: reference("account", "accounts", &self.account)?,
            owner: reference("owner", "users", &self.owner)?,
            territory: reference("territory", "territories", &self.territory)?,
            // Output only.
            reminded_time: None,
            done_time: None,
        })
    }

    fn from_record(r: Record<Activity>) -> Self {
        let d = r.data;
        pb::Activity {
            name: name("activities", Some(r.meta.id)),
            kind: kind_out(d.kind),
            subject: d.subject,
            notes: d.notes,
            due_time: opt_ts(d.due_time),
            remind_before_seconds: d.remind_before_seconds,
            status: status_out(d.status),
            outcome: d.outcome,
            lead: name("leads", d.lead),
            contact: name("contacts", d.contact),
            account: name("accounts", d.account),
            owner: name("users", d.owner),
            territory: name("territories", d.territory),
            reminded_time: opt_ts(d.reminded_time),
            done_time: opt_ts(d.done_time),
            create_time: Some(ts(r.meta.create_time)),
            update_time: Some(ts(r.meta.update_time)),
            etag: r.meta.etag(),
            hidden_fields: hidden(&r.hidden),
        }
    }

    fn name(&self) -> &str {
        &self.name
    }
    fn etag(&self) -> &str {
        &self.etag
    }
}

crate::service_impl!(ActivityService, Activities, [
    Activity => pb::Activity {
        create_activity(pb::CreateActivityRequest, activity),
        get_activity(pb::GetActivityRequest),
        list_activities(pb::ListActivitiesRequest => ListActivitiesResponse . activities),
        update_activity(pb::UpdateActivityRequest),
        delete_activity(pb::DeleteActivityRequest)
    }
]);
