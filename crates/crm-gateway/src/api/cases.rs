//! CaseService: service cases with SLA clocks and the tenant's SLA policy sets
//! (crm-collaborative).

use super::{Gateway, Wire};
use crate::convert::{date, from_date, hidden, name, opt_ts, reference, ts};
use crate::status::OrStatus;
use crm_api::v1 as pb;
use crm_api::v1::case_service_server::CaseService;
use crm_collaborative::calendar::{CalendarConfig, ExtraWorkingHours, Weekday, WeeklyHours};
use crm_collaborative::case::{CaseAction, CaseStatus, CaseStep, CustomerCaseView, StepVisibility};
use crm_collaborative::cases::{
    self, Case, CaseAgent, CaseAssignment, CasePriority, SlaPolicySet, SlaState,
};
use crm_collaborative::sla::{
    EscalationTarget, Priority, SlaPolicy, SlaPolicyConfig, SlaRule, WarningThreshold,
};
use crm_core::error::{Error, Result};
use crm_core::resource::Record;
use pb::ListSlaPolicySetsResponse;
use tonic::{Request, Response, Status};

pub struct Cases(pub Gateway);

fn priority_in(field: &str, p: i32) -> Result<CasePriority> {
    use pb::CasePriority as P;
    Ok(match P::try_from(p) {
        Ok(P::Unspecified | P::Normal) => CasePriority::Normal,
        Ok(P::Low) => CasePriority::Low,
        Ok(P::High) => CasePriority::High,
        Ok(P::Urgent) => CasePriority::Urgent,
        Err(_) => return Err(crate::convert::unknown_enum(field, p)),
    })
}

fn priority_out(p: CasePriority) -> i32 {
    use pb::CasePriority as P;
    (match p {
        CasePriority::Low => P::Low,
        CasePriority::Normal => P::Normal,
        CasePriority::High => P::High,
        CasePriority::Urgent => P::Urgent,
    }) as i32
}

fn status_in(field: &str, s: i32) -> Result<Option<CaseStatus>> {
    use pb::CaseStatus as P;
    Ok(match P::try_from(s) {
        Ok(P::Unspecified) => None,
        Ok(P::New) => Some(CaseStatus::New),
        Ok(P::Open) => Some(CaseStatus::Open),
        Ok(P::WaitingOnCustomer) => Some(CaseStatus::WaitingOnCustomer),
        Ok(P::Resolved) => Some(CaseStatus::Resolved),
        Ok(P::Closed) => Some(CaseStatus::Closed),
        Ok(P::Reopened) => Some(CaseStatus::Reopened),
        Err(_) => return Err(crate::convert::unknown_enum(field, s)),
    })
}

fn status_out(s: CaseStatus) -> i32 {
    use pb::CaseStatus as P;
    (match s {
        CaseStatus::New => P::New,
        CaseStatus::Open => P::Open,
        CaseStatus::WaitingOnCustomer => P::WaitingOnCustomer,
        CaseStatus::Resolved => P::Resolved,
        CaseStatus::Closed => P::Closed,
        CaseStatus::Reopened => P::Reopened,
    }) as i32
}

fn sla_status_out(s: SlaState) -> i32 {
    use pb::SlaStatus as P;
    (match s {
        SlaState::None => P::None,
        SlaState::Ok => P::Ok,
        SlaState::Warning => P::Warning,
        SlaState::Breached => P::Breached,
        SlaState::Met => P::Met,
        SlaState::Paused => P::Paused,
    }) as i32
}

fn action_out(a: CaseAction) -> i32 {
    use pb::CaseAction as P;
    (match a {
        CaseAction::Created => P::Created,
        CaseAction::StatusChanged => P::StatusChanged,
        CaseAction::Assigned => P::Assigned,
        CaseAction::Responded => P::Responded,
        CaseAction::CustomerReplied => P::CustomerReplied,
        CaseAction::Commented => P::Commented,
        CaseAction::Escalated => P::Escalated,
        CaseAction::Reclassified => P::Reclassified,
    }) as i32
}

fn step_out(s: CaseStep) -> pb::CaseStep {
    pb::CaseStep {
        time: Some(ts(s.at)),
        handler: name("users", s.handler),
        action: action_out(s.action),
        from_status: s.from.map(status_out).unwrap_or_default(),
        to_status: s.to.map(status_out).unwrap_or_default(),
        result: s.result.unwrap_or_default(),
        note: s.note.unwrap_or_default(),
        public: s.visibility == StepVisibility::Public,
    }
}

impl Wire<Case> for pb::Case {
    const FIELD: &'static str = "case";

    fn into_domain(self) -> Result<Case> {
        // The status and the SLA fields are output only: whatever is sent is checked to be a
        // defined value and then left to the use cases.
        status_in("status", self.status)?;
        Ok(Case {
            title: self.title,
            description: self.description,
            category: self.category,
            priority: priority_in("priority", self.priority)?,
            product: reference("product", "products", &self.product)?,
            contact: reference("contact", "contacts", &self.contact)?,
            account: reference("account", "accounts", &self.account)?,
            customer_tier: self.customer_tier,
            owner: reference("owner", "users", &self.owner)?,
            team: reference("team", "teams", &self.team)?,
            territory: reference("territory", "territories", &self.territory)?,
            source_interaction: reference(
                "source_interaction",
                "interactions",
                &self.source_interaction,
            )?,
            ..Default::default()
        })
    }

    fn from_record(r: Record<Case>) -> Self {
        let d = r.data;
        pb::Case {
            name: name("cases", Some(r.meta.id)),
            title: d.title,
            description: d.description,
            category: d.category,
            priority: priority_out(d.priority),
            product: name("products", d.product),
            contact: name("contacts", d.contact),
            account: name("accounts", d.account),
            customer_tier: d.customer_tier,
            status: status_out(CaseStatus::from(d.status)),
            owner: name("users", d.owner),
            team: name("teams", d.team),
            territory: name("territories", d.territory),
            sla_policy: d.sla_policy,
            sla_policy_set: name("slaPolicySets", d.sla_policy_set),
            sla_status: sla_status_out(d.sla_status),
            first_response_due_time: opt_ts(d.first_response_due_time),
            resolution_due_time: opt_ts(d.resolution_due_time),
            first_response_time: opt_ts(d.first_response_time),
            resolve_time: opt_ts(d.resolve_time),
            escalated_to: name("users", d.escalated_to),
            escalated_team: name("teams", d.escalated_team),
            escalate_time: opt_ts(d.escalate_time),
            steps: d.steps.into_iter().map(step_out).collect(),
            create_time: Some(ts(r.meta.create_time)),
            update_time: Some(ts(r.meta.update_time)),
            etag: r.meta.etag(),
            hidden_fields: hidden(&r.hidden),
            source_interaction: name("interactions", d.source_interaction),
            channel: d.channel,
        }
    }

    fn name(&self) -> &str {
        &self.name
    }
    fn etag(&self) -> &str {
        &self.etag
    }
}

fn view_out(case: &str, v: CustomerCaseView) -> pb::CaseCustomerView {
    pb::CaseCustomerView {
        name: case.to_owned(),
        status: status_out(v.status),
        status_label: v.status_label,
        steps: v
            .steps
            .into_iter()
            .map(|s| pb::PublicCaseStep {
                time: Some(ts(s.at)),
                action: action_out(s.action),
                status_label: s.status_label.unwrap_or_default(),
                result: s.result.unwrap_or_default(),
                note: s.note.unwrap_or_default(),
            })
            .collect(),
        expected_resolution_time: opt_ts(v.expected_resolution_at),
    }
}

fn sla_priority_in(field: &str, p: i32) -> Result<Priority> {
    Ok(match priority_in(field, p)? {
        CasePriority::Low => Priority::Low,
        CasePriority::Normal => Priority::Normal,
        CasePriority::High => Priority::High,
        CasePriority::Urgent => Priority::Urgent,
    })
}

fn sla_priority_out(p: Priority) -> i32 {
    priority_out(match p {
        Priority::Low => CasePriority::Low,
        Priority::Normal => CasePriority::Normal,
        Priority::High => CasePriority::High,
        Priority::Urgent => CasePriority::Urgent,
    })
}

fn weekday_in(field: &str, d: i32) -> Result<Weekday> {
    use pb::Weekday as P;
    Ok(match P::try_from(d) {
        Ok(P::Monday) => Weekday::Monday,
        Ok(P::Tuesday) => Weekday::Tuesday,
        Ok(P::Wednesday) => Weekday::Wednesday,
        Ok(P::Thursday) => Weekday::Thursday,
        Ok(P::Friday) => Weekday::Friday,
        Ok(P::Saturday) => Weekday::Saturday,
        Ok(P::Sunday) => Weekday::Sunday,
        Ok(P::Unspecified) => return Err(Error::invalid(field, "is required")),
        Err(_) => return Err(crate::convert::unknown_enum(field, d)),
    })
}

fn weekday_out(d: Weekday) -> i32 {
    use pb::Weekday as P;
    (match d {
        Weekday::Monday => P::Monday,
        Weekday::Tuesday => P::Tuesday,
        Weekday::Wednesday => P::Wednesday,
        Weekday::Thursday => P::Thursday,
        Weekday::Friday => P::Friday,
        Weekday::Saturday => P::Saturday,
        Weekday::Sunday => P::Sunday,
    }) as i32
}

fn policy_in(i: usize, p: pb::SlaPolicy) -> Result<SlaPolicy> {
    let f = |n: &str| format!("policies[{i}].{n}");
    let warning = match (p.warning_percent, p.warning_lead_minutes) {
        (0, 0) => WarningThreshold::Percent(80),
        (pct, 0) => WarningThreshold::Percent(
            u8::try_from(pct)
                .map_err(|_| Error::invalid(f("warning_percent"), "must be between 1 and 99"))?,
        ),
        (0, m) => WarningThreshold::LeadMinutes(m),
        _ => {
            return Err(Error::invalid(
                f("warning_lead_minutes"),
                "set warning_percent or warning_lead_minutes, not both",
            ));
        }
    };
    use pb::sla_escalation::Target;
    let escalation = match p.escalation.and_then(|e| e.target) {
        None | Some(Target::AssigneeManager(_)) => EscalationTarget::AssigneeManager,
        Some(Target::Team(t)) => EscalationTarget::Team {
            team_id: reference(&f("escalation.team"), "teams", &t)?
                .ok_or_else(|| Error::invalid(f("escalation.team"), "is required"))?,
        },
        Some(Target::User(u)) => EscalationTarget::User {
            user_id: reference(&f("escalation.user"), "users", &u)?
                .ok_or_else(|| Error::invalid(f("escalation.user"), "is required"))?,
        },
    };
    Ok(SlaPolicy {
        id: p.id,
        first_response_minutes: p.first_response_minutes,
        resolution_minutes: p.resolution_minutes,
        warning,
        escalation,
    })
}

fn policy_out(p: SlaPolicy) -> pb::SlaPolicy {
    use pb::sla_escalation::Target;
    let (warning_percent, warning_lead_minutes) = match p.warning {
        WarningThreshold::Percent(pct) => (u32::from(pct), 0),
        WarningThreshold::LeadMinutes(m) => (0, m),
    };
    pb::SlaPolicy {
        id: p.id,
        first_response_minutes: p.first_response_minutes,
        resolution_minutes: p.resolution_minutes,
        warning_percent,
        warning_lead_minutes,
        escalation: Some(pb::SlaEscalation {
            target: Some(match p.escalation {
                EscalationTarget::AssigneeManager => Target::AssigneeManager(true),
                EscalationTarget::Team { team_id } => Target::Team(name("teams", Some(team_id))),
                EscalationTarget::User { user_id } => Target::User(name("users", Some(user_id))),
            }),
        }),
    }
}

fn calendar_in(c: pb::BusinessCalendar) -> Result<CalendarConfig> {
    Ok(CalendarConfig {
        time_zone: c.time_zone,
        weekly_hours: c
            .weekly_hours
            .into_iter()
            .enumerate()
            .map(|(i, w)| {
                Ok(WeeklyHours {
                    day: weekday_in(&format!("calendar.weekly_hours[{i}].day"), w.day)?,
                    start: w.start,
                    end: w.end,
                })
            })
            .collect::<Result<Vec<_>>>()?,
        holidays: c
            .holidays
            .into_iter()
            .enumerate()
            .map(|(i, d)| {
                let f = format!("calendar.holidays[{i}]");
                from_date(&f, Some(d))?.ok_or_else(|| Error::invalid(f, "is required"))
            })
            .collect::<Result<Vec<_>>>()?,
        extra_working_days: c
            .extra_working_days
            .into_iter()
            .enumerate()
            .map(|(i, x)| {
                let f = format!("calendar.extra_working_days[{i}].date");
                Ok(ExtraWorkingHours {
                    date: from_date(&f, x.date)?.ok_or_else(|| Error::invalid(f, "is required"))?,
                    start: x.start,
                    end: x.end,
                })
            })
            .collect::<Result<Vec<_>>>()?,
    })
}

fn calendar_out(c: CalendarConfig) -> pb::BusinessCalendar {
    pb::BusinessCalendar {
        time_zone: c.time_zone,
        weekly_hours: c
            .weekly_hours
            .into_iter()
            .map(|w| pb::WorkingHours {
                day: weekday_out(w.day),
                start: w.start,
                end: w.end,
            })
            .collect(),
        holidays: c
            .holidays
            .into_iter()
            .filter_map(|d| date(Some(d)))
            .collect(),
        extra_working_days: c
            .extra_working_days
            .into_iter()
            .map(|x| pb::ExtraWorkingDay {
                date: date(Some(x.date)),
                start: x.start,
                end: x.end,
            })
            .collect(),
    }
}

impl Wire<SlaPolicySet> for pb::SlaPolicySet {
    const FIELD: &'static str = "policy_set";

    fn into_domain(self) -> Result<SlaPolicySet> {
        let policies = self
            .policies
            .into_iter()
            .enumerate()
            .map(|(i, p)| policy_in(i, p))
            .collect::<Result<Vec<_>>>()?;
        let rules = self
            .rules
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                Ok(SlaRule {
                    priorities: r
                        .priorities
                        .iter()
                        .enumerate()
                        .map(|(j, p)| sla_priority_in(&format!("rules[{i}].priorities[{j}]"), *p))
                        .collect::<Result<Vec<_>>>()?,
                    categories: r.categories,
                    customer_tiers: r.customer_tiers,
                    policy: r.policy,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(SlaPolicySet {
            display_name: self.display_name,
            active: self.active,
            sla: Some(SlaPolicyConfig {
                policies,
                rules,
                default_policy: self.default_policy,
            }),
            calendar: self.calendar.map(calendar_in).transpose()?,
            assignment: self
                .assignment
                .map(|a| {
                    Ok::<_, Error>(CaseAssignment {
                        agents: a
                            .agents
                            .into_iter()
                            .enumerate()
                            .map(|(i, g)| {
                                Ok(CaseAgent {
                                    user_id: reference(
                                        &format!("assignment.agents[{i}].user"),
                                        "users",
                                        &g.user,
                                    )?
                                    .unwrap_or_default(),
                                    categories: g.categories,
                                })
                            })
                            .collect::<Result<Vec<_>>>()?,
                        max_open: a.max_open,
                    })
                })
                .transpose()?,
        })
    }

    fn from_record(r: Record<SlaPolicySet>) -> Self {
        let d = r.data;
        let (policies, rules, default_policy) = match d.sla {
            Some(c) => (
                c.policies.into_iter().map(policy_out).collect(),
                c.rules
                    .into_iter()
                    .map(|r| pb::SlaRule {
                        priorities: r.priorities.into_iter().map(sla_priority_out).collect(),
                        categories: r.categories,
                        customer_tiers: r.customer_tiers,
                        policy: r.policy,
                    })
                    .collect(),
                c.default_policy,
            ),
            None => (Vec::new(), Vec::new(), String::new()),
        };
        pb::SlaPolicySet {
            name: name("slaPolicySets", Some(r.meta.id)),
            display_name: d.display_name,
            active: d.active,
            policies,
            rules,
            default_policy,
            calendar: d.calendar.map(calendar_out),
            assignment: d.assignment.map(|a| pb::CaseAssignment {
                agents: a
                    .agents
                    .into_iter()
                    .map(|g| pb::CaseAgent {
                        user: name("users", Some(g.user_id)),
                        categories: g.categories,
                    })
                    .collect(),
                max_open: a.max_open,
            }),
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

/// The domain's `sla.policies[0].id` is the wire's `policies[0].id`.
fn wire_paths(mut e: Error) -> Error {
    for v in &mut e.violations {
        if let Some(rest) = v.field.strip_prefix("sla.") {
            v.field = rest
                .replace(".warning.percent", ".warning_percent")
                .replace(".warning.lead_minutes", ".warning_lead_minutes")
                .replace(".escalation.user_id", ".escalation.user")
                .replace(".escalation.team_id", ".escalation.team");
        } else if v.field == "sla" {
            v.field = "policies".to_owned();
        } else if v.field.starts_with("assignment.agents") {
            v.field = v.field.replace(".user_id", ".user");
        }
    }
    e
}

fn case_id(field: &str, name: &str) -> Result<uuid::Uuid> {
    <pb::Case as Wire<Case>>::parse_id(field, name)
}

#[tonic::async_trait]
impl CaseService for Cases {
    async fn create_case(
        &self,
        r: Request<pb::CreateCaseRequest>,
    ) -> Result<Response<pb::Case>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let r = r.into_inner();
        Ok(Response::new(
            super::create::<Case, pb::Case>(&ctx, r.case, &r.request_id).await?,
        ))
    }

    async fn get_case(&self, r: Request<pb::GetCaseRequest>) -> Result<Response<pb::Case>, Status> {
        let ctx = self.0.ctx(&r).await?;
        Ok(Response::new(
            super::get::<Case, pb::Case>(&ctx, &r.get_ref().name).await?,
        ))
    }

    async fn list_cases(
        &self,
        r: Request<pb::ListCasesRequest>,
    ) -> Result<Response<pb::ListCasesResponse>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let r = r.into_inner();
        let p = super::params(r.page_size, r.page_token, r.filter, r.order_by);
        let (cases, next_page_token) = super::list::<Case, pb::Case>(&ctx, p).await?;
        Ok(Response::new(pb::ListCasesResponse {
            cases,
            next_page_token,
        }))
    }

    async fn update_case(
        &self,
        r: Request<pb::UpdateCaseRequest>,
    ) -> Result<Response<pb::Case>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let r = r.into_inner();
        let msg = crate::convert::required("case", r.case).or_status()?;
        let id = case_id("case.name", &msg.name).or_status()?;
        let etag = msg.etag.clone();
        let mask = crate::convert::mask(r.update_mask);
        let data = msg
            .into_domain()
            .map_err(|e| e.in_field("case"))
            .or_status()?;
        let rec = cases::update_case(&ctx, id, data, &mask, &etag)
            .await
            .map_err(|e| e.in_field("case"))
            .or_status()?;
        Ok(Response::new(pb::Case::from_record(rec)))
    }

    async fn delete_case(&self, r: Request<pb::DeleteCaseRequest>) -> Result<Response<()>, Status> {
        let ctx = self.0.ctx(&r).await?;
        super::delete::<Case, pb::Case>(&ctx, &r.get_ref().name, &r.get_ref().etag).await?;
        Ok(Response::new(()))
    }

    async fn transition_case(
        &self,
        r: Request<pb::TransitionCaseRequest>,
    ) -> Result<Response<pb::Case>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let r = r.into_inner();
        let id = case_id("name", &r.name).or_status()?;
        let to = status_in("status", r.status)
            .and_then(|s| s.ok_or_else(|| Error::invalid("status", "is required")))
            .or_status()?;
        let rec = cases::transition_case(&ctx, id, to, &r.note, &r.etag)
            .await
            .or_status()?;
        Ok(Response::new(pb::Case::from_record(rec)))
    }

    async fn respond_to_case(
        &self,
        r: Request<pb::RespondToCaseRequest>,
    ) -> Result<Response<pb::Case>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let r = r.into_inner();
        let id = case_id("name", &r.name).or_status()?;
        let rec = cases::respond_to_case(&ctx, id, &r.note, &r.etag)
            .await
            .or_status()?;
        Ok(Response::new(pb::Case::from_record(rec)))
    }

    async fn get_case_customer_view(
        &self,
        r: Request<pb::GetCaseCustomerViewRequest>,
    ) -> Result<Response<pb::CaseCustomerView>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let id = case_id("name", &r.get_ref().name).or_status()?;
        let v = cases::customer_view(&ctx, id).await.or_status()?;
        Ok(Response::new(view_out(&name("cases", Some(id)), v)))
    }

    async fn create_sla_policy_set(
        &self,
        r: Request<pb::CreateSlaPolicySetRequest>,
    ) -> Result<Response<pb::SlaPolicySet>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let r = r.into_inner();
        let msg = crate::convert::required("policy_set", r.policy_set).or_status()?;
        let data = msg
            .into_domain()
            .map_err(|e| wire_paths(e).in_field("policy_set"))
            .or_status()?;
        let rec = ctx
            .create(data, &r.request_id)
            .await
            .map_err(|e| wire_paths(e).in_field("policy_set"))
            .or_status()?;
        Ok(Response::new(pb::SlaPolicySet::from_record(rec)))
    }

    async fn get_sla_policy_set(
        &self,
        r: Request<pb::GetSlaPolicySetRequest>,
    ) -> Result<Response<pb::SlaPolicySet>, Status> {
        let ctx = self.0.ctx(&r).await?;
        Ok(Response::new(
            super::get::<SlaPolicySet, pb::SlaPolicySet>(&ctx, &r.get_ref().name).await?,
        ))
    }

    async fn list_sla_policy_sets(
        &self,
        r: Request<pb::ListSlaPolicySetsRequest>,
    ) -> Result<Response<ListSlaPolicySetsResponse>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let r = r.into_inner();
        let p = super::params(r.page_size, r.page_token, r.filter, r.order_by);
        let (policy_sets, next_page_token) =
            super::list::<SlaPolicySet, pb::SlaPolicySet>(&ctx, p).await?;
        Ok(Response::new(ListSlaPolicySetsResponse {
            policy_sets,
            next_page_token,
        }))
    }

    async fn update_sla_policy_set(
        &self,
        r: Request<pb::UpdateSlaPolicySetRequest>,
    ) -> Result<Response<pb::SlaPolicySet>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let r = r.into_inner();
        // The wire's policies, rules and default_policy are the stored `sla`.
        let mut paths: Vec<String> = Vec::new();
        for p in crate::convert::mask(r.update_mask) {
            let p = match p.as_str() {
                "policies" | "rules" | "default_policy" => "sla".to_owned(),
                _ => p,
            };
            if !paths.contains(&p) {
                paths.push(p);
            }
        }
        let msg = crate::convert::required("policy_set", r.policy_set).or_status()?;
        let id = <pb::SlaPolicySet as Wire<SlaPolicySet>>::parse_id("policy_set.name", &msg.name)
            .or_status()?;
        let etag = msg.etag.clone();
        let data = msg
            .into_domain()
            .map_err(|e| wire_paths(e).in_field("policy_set"))
            .or_status()?;
        let rec = ctx
            .update(id, data, &paths, &etag)
            .await
            .map_err(|e| wire_paths(e).in_field("policy_set"))
            .or_status()?;
        Ok(Response::new(pb::SlaPolicySet::from_record(rec)))
    }

    async fn delete_sla_policy_set(
        &self,
        r: Request<pb::DeleteSlaPolicySetRequest>,
    ) -> Result<Response<()>, Status> {
        let ctx = self.0.ctx(&r).await?;
        super::delete::<SlaPolicySet, pb::SlaPolicySet>(&ctx, &r.get_ref().name, &r.get_ref().etag)
            .await?;
        Ok(Response::new(()))
    }
}
