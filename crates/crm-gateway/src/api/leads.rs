//! LeadService: leads and their grading policies (crm-operational).

use super::{Gateway, Wire};
use crate::convert::{self, hidden, name, reference, references, ts};
use crm_api::v1 as pb;
use crm_api::v1::lead_service_server::LeadService;
use crm_core::error::{Error, Result};
use crm_core::resource::Record;
use crm_operational::assignment::{
    AssignmentRule, CandidateOutcome, DealSizeRange, EvaluationMode, Owner, RuleConditions,
    Strategy, Target, TargetKind,
};
use crm_operational::capture::LeadCapturePolicy;
use crm_operational::dedupe::{DuplicateCheck, LeadDuplicatePolicy};
use crm_operational::effectiveness::{
    EffectivenessQuery, Granularity, GroupBy, GroupKey, Row as EffectivenessRow,
};
use crm_operational::grading::Grade;
use crm_operational::grading::{Condition, GradeThresholds, GradingRule};
use crm_operational::lead::{GradeReason, Lead, LeadGrade, LeadGradingPolicy, LeadStatus};
use crm_operational::routing::{AssignmentDecision, AssignmentRuleSet};
use pb::{
    ListAssignmentRuleSetsResponse, ListLeadCapturePoliciesResponse,
    ListLeadDuplicatePoliciesResponse, ListLeadGradingPoliciesResponse, ListLeadsResponse,
};

pub struct Leads(pub Gateway);

// The lead effectiveness report (O5).

fn grouping_in(g: i32) -> Result<GroupBy> {
    use pb::LeadEffectivenessGrouping as P;
    Ok(match P::try_from(g) {
        Ok(P::Unspecified | P::Source) => GroupBy::Source,
        Ok(P::Owner) => GroupBy::Owner,
        Ok(P::Campaign) => GroupBy::Campaign,
        Ok(P::Period) => GroupBy::Period,
        Err(_) => return Err(crate::convert::unknown_enum("group_by", g)),
    })
}

fn grouping_out(g: GroupBy) -> i32 {
    use pb::LeadEffectivenessGrouping as P;
    (match g {
        GroupBy::Source => P::Source,
        GroupBy::Owner => P::Owner,
        GroupBy::Campaign => P::Campaign,
        GroupBy::Period => P::Period,
    }) as i32
}

fn granularity_in(g: i32) -> Result<Granularity> {
    use pb::LeadEffectivenessGranularity as P;
    Ok(match P::try_from(g) {
        Ok(P::Day) => Granularity::Day,
        Ok(P::Week) => Granularity::Week,
        Ok(P::Unspecified | P::Month) => Granularity::Month,
        Err(_) => return Err(crate::convert::unknown_enum("granularity", g)),
    })
}

fn granularity_out(g: Granularity) -> i32 {
    use pb::LeadEffectivenessGranularity as P;
    (match g {
        Granularity::Day => P::Day,
        Granularity::Week => P::Week,
        Granularity::Month => P::Month,
    }) as i32
}

fn millis(ms: Option<i64>) -> Option<prost_types::Duration> {
    ms.map(|ms| prost_types::Duration {
        seconds: ms.div_euclid(1000),
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    })
}

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn effectiveness_row_out(r: EffectivenessRow) -> pb::LeadEffectivenessRow {
    let c = r.counts;
    let period_start_time = match &r.key {
        Some(GroupKey::Period(p)) => Some(ts(p.start_time)),
        _ => None,
    };
    pb::LeadEffectivenessRow {
        group: r.key.as_ref().map(GroupKey::label).unwrap_or_default(),
        period_start_time,
        created: count(c.created),
        contacted: count(c.contacted),
        contact_rate: c.contact_rate(),
        timed: count(c.timed),
        median_time_to_first_touch: millis(r.touch.median_ms),
        p90_time_to_first_touch: millis(r.touch.p90_ms),
        qualified: count(c.qualified),
        qualification_rate: c.qualification_rate(),
        converted: count(c.converted),
        conversion_rate: c.conversion_rate(),
    }
}

// The one wire mapping of each lead enum.

/// UNSPECIFIED means the default, NEW.
fn status_in(s: i32) -> Result<LeadStatus> {
    use pb::LeadStatus as P;
    Ok(match P::try_from(s) {
        Ok(P::Unspecified | P::New) => LeadStatus::New,
        Ok(P::Working) => LeadStatus::Working,
        Ok(P::Nurturing) => LeadStatus::Nurturing,
        Ok(P::Qualified) => LeadStatus::Qualified,
        Ok(P::Unqualified) => LeadStatus::Unqualified,
        Ok(P::Converted) => LeadStatus::Converted,
        Err(_) => return Err(crate::convert::unknown_enum("status", s)),
    })
}

fn status_out(s: LeadStatus) -> i32 {
    use pb::LeadStatus as P;
    (match s {
        LeadStatus::New => P::New,
        LeadStatus::Working => P::Working,
        LeadStatus::Nurturing => P::Nurturing,
        LeadStatus::Qualified => P::Qualified,
        LeadStatus::Unqualified => P::Unqualified,
        LeadStatus::Converted => P::Converted,
    }) as i32
}

/// The grade is output only: what a caller sends is checked to be a defined value and then
/// replaced by grading.
fn grade_in(g: i32) -> Result<LeadGrade> {
    use pb::LeadGrade as P;
    Ok(match P::try_from(g) {
        Ok(P::Unspecified | P::Ungraded) => LeadGrade::Ungraded,
        Ok(P::Hot) => LeadGrade::Hot,
        Ok(P::Warm) => LeadGrade::Warm,
        Ok(P::Cold) => LeadGrade::Cold,
        Ok(P::LongTerm) => LeadGrade::LongTerm,
        Err(_) => return Err(crate::convert::unknown_enum("grade", g)),
    })
}

fn grade_out(g: LeadGrade) -> i32 {
    use pb::LeadGrade as P;
    (match g {
        LeadGrade::Ungraded => P::Ungraded,
        LeadGrade::Hot => P::Hot,
        LeadGrade::Warm => P::Warm,
        LeadGrade::Cold => P::Cold,
        LeadGrade::LongTerm => P::LongTerm,
    }) as i32
}

impl Wire<Lead> for pb::Lead {
    const FIELD: &'static str = "lead";

    fn into_domain(self) -> Result<Lead> {
        Ok(Lead {
            given_name: self.given_name,
            family_name: self.family_name,
            display_name: self.display_name,
            company: self.company,
            title: self.title,
            phones: self.phones.into_iter().map(convert::phone_in).collect(),
            emails: self.emails.into_iter().map(convert::email_in).collect(),
            address: self.address.map(convert::address_in).unwrap_or_default(),
            industry: self.industry,
            region: self.region,
            source: self.source,
            campaign: self.campaign,
            product_interest: references("product_interest", "products", &self.product_interest)?,
            employee_count: self.employee_count,
            notes: self.notes,
            tags: self.tags,
            status: status_in(self.status)?,
            grade: grade_in(self.grade)?,
            grade_points: self.grade_points,
            grade_reasons: self
                .grade_reasons
                .into_iter()
                .map(|r| GradeReason {
                    rule: r.rule,
                    points: r.points,
                })
                .collect(),
            owner: reference("owner", "users", &self.owner)?,
            territory: reference("territory", "territories", &self.territory)?,
            custom_fields: convert::custom_in(self.custom_fields)?,
            // Output only: whatever is sent is replaced by the decision and the check.
            assignment: AssignmentDecision::default(),
            duplicates: DuplicateCheck::default(),
            converted_account: None,
            converted_contact: None,
            convert_time: None,
            escalated_to: None,
            escalate_time: None,
            first_touch_time: None,
            expected_value: match &self.expected_value {
                Some(m) => {
                    let code = m.currency_code.trim().to_ascii_uppercase();
                    Some(crm_operational::opportunity::Amount {
                        minor: convert::from_money("expected_value", m, Some(&code))?,
                        currency_code: code,
                    })
                }
                None => None,
            },
        })
    }

    fn from_record(r: Record<Lead>) -> Self {
        let d = r.data;
        pb::Lead {
            name: name("leads", Some(r.meta.id)),
            given_name: d.given_name,
            family_name: d.family_name,
            display_name: d.display_name,
            company: d.company,
            title: d.title,
            phones: d.phones.into_iter().map(convert::phone_out).collect(),
            emails: d.emails.into_iter().map(convert::email_out).collect(),
            address: Some(convert::address_out(d.address)),
            industry: d.industry,
            region: d.region,
            source: d.source,
            campaign: d.campaign,
            product_interest: d
                .product_interest
                .into_iter()
                .map(|p| name("products", Some(p)))
                .collect(),
            employee_count: d.employee_count,
            notes: d.notes,
            tags: d.tags,
            status: status_out(d.status),
            grade: grade_out(d.grade),
            grade_points: d.grade_points,
            grade_reasons: d
                .grade_reasons
                .into_iter()
                .map(|r| pb::GradeReason {
                    rule: r.rule,
                    points: r.points,
                })
                .collect(),
            owner: name("users", d.owner),
            territory: name("territories", d.territory),
            custom_fields: convert::custom_out(d.custom_fields),
            create_time: Some(ts(r.meta.create_time)),
            update_time: Some(ts(r.meta.update_time)),
            etag: r.meta.etag(),
            hidden_fields: hidden(&r.hidden),
            assignment: Some(decision_out(d.assignment)),
            duplicates: Some(duplicates_out(d.duplicates)),
            converted_account: name("accounts", d.converted_account),
            converted_contact: name("contacts", d.converted_contact),
            convert_time: d.convert_time.map(ts),
            escalated_to: name("users", d.escalated_to),
            escalate_time: d.escalate_time.map(ts),
            first_touch_time: d.first_touch_time.map(ts),
            expected_value: d
                .expected_value
                .map(|a| convert::money(&a.currency_code, a.minor)),
        }
    }

    fn name(&self) -> &str {
        &self.name
    }
    fn etag(&self) -> &str {
        &self.etag
    }
}

pub(crate) fn duplicates_out(d: DuplicateCheck) -> pb::DuplicateCheck {
    pb::DuplicateCheck {
        status: if d.status.is_empty() {
            "NONE".to_owned()
        } else {
            d.status
        },
        candidates: d
            .candidates
            .into_iter()
            .map(|c| pb::DuplicateCandidate {
                record: c.record,
                score: c.score,
                decision: c.decision,
                evidence: evidence_out(c.evidence),
            })
            .collect(),
    }
}

/// How each field of a pair compared, on the wire.
pub(crate) fn evidence_out(
    evidence: Vec<crm_operational::matching::FieldEvidence>,
) -> Vec<pb::FieldEvidence> {
    evidence
        .into_iter()
        .map(|e| pb::FieldEvidence {
            field: e.field.as_str().to_owned(),
            left: e.left,
            right: e.right,
            similarity: e.similarity,
            weight: e.weight,
        })
        .collect()
}

impl Wire<LeadCapturePolicy> for pb::LeadCapturePolicy {
    const FIELD: &'static str = "policy";

    fn into_domain(self) -> Result<LeadCapturePolicy> {
        Ok(LeadCapturePolicy {
            display_name: self.display_name,
            active: self.active,
            email_senders: self.email_senders,
            callers: self.callers,
            ignore: self.ignore,
            source: self.source,
        })
    }

    fn from_record(r: Record<LeadCapturePolicy>) -> Self {
        let d = r.data;
        pb::LeadCapturePolicy {
            name: name("leadCapturePolicies", Some(r.meta.id)),
            display_name: d.display_name,
            active: d.active,
            email_senders: d.email_senders,
            callers: d.callers,
            ignore: d.ignore,
            source: d.source,
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

impl Wire<LeadDuplicatePolicy> for pb::LeadDuplicatePolicy {
    const FIELD: &'static str = "policy";

    fn into_domain(self) -> Result<LeadDuplicatePolicy> {
        Ok(LeadDuplicatePolicy {
            display_name: self.display_name,
            active: self.active,
            match_at: self.match_at,
            possible_at: self.possible_at,
            on_match: self.on_match,
            on_match_by_source: self.on_match_by_source.into_iter().collect(),
        })
    }

    fn from_record(r: Record<LeadDuplicatePolicy>) -> Self {
        let d = r.data;
        pb::LeadDuplicatePolicy {
            name: name("leadDuplicatePolicies", Some(r.meta.id)),
            display_name: d.display_name,
            active: d.active,
            match_at: d.match_at,
            possible_at: d.possible_at,
            on_match: d.on_match,
            on_match_by_source: d.on_match_by_source.into_iter().collect(),
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

pub(crate) fn decision_out(d: AssignmentDecision) -> pb::AssignmentDecision {
    use pb::AssignmentVia as V;
    pb::AssignmentDecision {
        rule_set: name("assignmentRuleSets", d.rule_set),
        rule_set_version: d.rule_set_version,
        via: (match d.via.as_str() {
            "RULE" => V::Rule,
            "FALLBACK" => V::Fallback,
            "MANUAL" => V::Manual,
            _ => V::Unspecified,
        }) as i32,
        rule: d.rule,
        owner: name("users", d.owner),
        matched_rules: d.matched_rules,
        tried: d
            .tried
            .into_iter()
            .map(|t| pb::RuleAttempt {
                rule: t.rule,
                specificity: t.specificity,
                candidates: t
                    .candidates
                    .into_iter()
                    .map(|c| {
                        let (outcome, detail) = match c.outcome {
                            CandidateOutcome::Chosen => ("CHOSEN", String::new()),
                            CandidateOutcome::Eligible => ("ELIGIBLE", String::new()),
                            CandidateOutcome::Unknown => ("UNKNOWN", String::new()),
                            CandidateOutcome::Inactive => ("INACTIVE", String::new()),
                            CandidateOutcome::OverCapacity { load, capacity } => (
                                "OVER_CAPACITY",
                                format!("{load} open leads, capacity {capacity}"),
                            ),
                            CandidateOutcome::MissingSkills { missing } => {
                                ("MISSING_SKILLS", missing.join(", "))
                            }
                            CandidateOutcome::ZeroWeight => ("ZERO_WEIGHT", String::new()),
                        };
                        pb::CandidateNote {
                            user: name("users", Some(c.owner.id)),
                            outcome: outcome.to_owned(),
                            detail,
                        }
                    })
                    .collect(),
            })
            .collect(),
        reason: d.reason,
    }
}

fn grade_of(field: &str, g: i32) -> Result<Grade> {
    match grade_in(g)? {
        LeadGrade::Hot => Ok(Grade::Hot),
        LeadGrade::Warm => Ok(Grade::Warm),
        LeadGrade::Cold => Ok(Grade::Cold),
        LeadGrade::LongTerm => Ok(Grade::LongTerm),
        LeadGrade::Ungraded => Err(Error::invalid(
            field,
            "must be HOT, WARM, COLD or LONG_TERM",
        )),
    }
}

fn grade_to(g: Grade) -> i32 {
    grade_out(match g {
        Grade::Hot => LeadGrade::Hot,
        Grade::Warm => LeadGrade::Warm,
        Grade::Cold => LeadGrade::Cold,
        Grade::LongTerm => LeadGrade::LongTerm,
    })
}

/// An empty list is no condition.
fn cond<T>(v: Vec<T>) -> Option<Vec<T>> {
    (!v.is_empty()).then_some(v)
}

fn rule_in(i: usize, r: pb::AssignmentRule) -> Result<AssignmentRule> {
    let f = |n: &str| format!("rules[{i}].{n}");
    let strategy = match pb::AssignmentStrategy::try_from(r.strategy) {
        Ok(pb::AssignmentStrategy::Unspecified | pb::AssignmentStrategy::RoundRobin) => {
            Strategy::RoundRobin
        }
        Ok(pb::AssignmentStrategy::Weighted) => Strategy::Weighted,
        Ok(pb::AssignmentStrategy::LeastLoaded) => Strategy::LeastLoaded,
        Ok(pb::AssignmentStrategy::BySkill) => Strategy::BySkill,
        Err(_) => return Err(crate::convert::unknown_enum(&f("strategy"), r.strategy)),
    };
    let territories = references(&f("territories"), "territories", &r.territories)?;
    let groups = references(&f("product_groups"), "productGroups", &r.product_groups)?;
    let grades = r
        .grades
        .iter()
        .enumerate()
        .map(|(j, g)| grade_of(&format!("rules[{i}].grades[{j}]"), *g))
        .collect::<Result<Vec<_>>>()?;
    let targets = r
        .targets
        .into_iter()
        .enumerate()
        .map(|(j, t)| {
            let id = reference(&format!("rules[{i}].targets[{j}].user"), "users", &t.user)?
                .ok_or_else(|| {
                    Error::invalid(format!("rules[{i}].targets[{j}].user"), "is required")
                })?;
            Ok(Target {
                owner: Owner {
                    id,
                    kind: if t.regional_manager {
                        TargetKind::RegionalManager
                    } else {
                        TargetKind::User
                    },
                },
                weight: if t.weight == 0 { 1 } else { t.weight },
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(AssignmentRule {
        id: r.id,
        description: r.description,
        priority: r.priority,
        when: RuleConditions {
            industries: cond(r.industries),
            regions: cond(r.regions),
            territories: cond(territories),
            product_groups: cond(groups.into_iter().map(|g| g.to_string()).collect()),
            customer_groups: None,
            deal_size: deal_size_in(&f("deal_size"), r.deal_size)?,
            grades: cond(grades),
        },
        targets,
        strategy,
        required_skills: r.required_skills,
    })
}

/// A rule's deal-size range: both bounds in one currency.
fn deal_size_in(field: &str, d: Option<pb::DealSizeRange>) -> Result<Option<DealSizeRange>> {
    let Some(d) = d else {
        return Ok(None);
    };
    let codes: Vec<String> = [&d.min, &d.max]
        .into_iter()
        .flatten()
        .map(|m| m.currency_code.trim().to_ascii_uppercase())
        .collect();
    let Some(code) = codes.first().cloned() else {
        return Ok(None);
    };
    if codes.iter().any(|c| *c != code) {
        return Err(Error::invalid(
            format!("{field}.max.currency_code"),
            "must be the currency of min",
        ));
    }
    crm_core::validate::currency(&format!("{field}.min.currency_code"), &code)?;
    let bound = |n: &str, m: &Option<crm_api::google::r#type::Money>| -> Result<Option<i64>> {
        m.as_ref()
            .map(|m| convert::from_money(&format!("{field}.{n}"), m, Some(&code)))
            .transpose()
    };
    Ok(Some(DealSizeRange {
        min: bound("min", &d.min)?,
        max: bound("max", &d.max)?,
        currency: code.clone(),
    }))
}

fn deal_size_out(d: DealSizeRange) -> pb::DealSizeRange {
    pb::DealSizeRange {
        min: d.min.map(|m| convert::money(&d.currency, m)),
        max: d.max.map(|m| convert::money(&d.currency, m)),
    }
}

fn rule_out(r: AssignmentRule) -> pb::AssignmentRule {
    let w = r.when;
    pb::AssignmentRule {
        id: r.id,
        description: r.description,
        priority: r.priority,
        industries: w.industries.unwrap_or_default(),
        regions: w.regions.unwrap_or_default(),
        territories: w
            .territories
            .unwrap_or_default()
            .into_iter()
            .map(|t| name("territories", Some(t)))
            .collect(),
        product_groups: w
            .product_groups
            .unwrap_or_default()
            .into_iter()
            .map(|g| match uuid::Uuid::try_parse(&g) {
                Ok(id) => name("productGroups", Some(id)),
                Err(_) => g,
            })
            .collect(),
        grades: w
            .grades
            .unwrap_or_default()
            .into_iter()
            .map(grade_to)
            .collect(),
        deal_size: w.deal_size.map(deal_size_out),
        targets: r
            .targets
            .into_iter()
            .map(|t| pb::AssignmentTarget {
                user: name("users", Some(t.owner.id)),
                weight: t.weight,
                regional_manager: t.owner.kind == TargetKind::RegionalManager,
            })
            .collect(),
        strategy: (match r.strategy {
            Strategy::RoundRobin => pb::AssignmentStrategy::RoundRobin,
            Strategy::Weighted => pb::AssignmentStrategy::Weighted,
            Strategy::LeastLoaded => pb::AssignmentStrategy::LeastLoaded,
            Strategy::BySkill => pb::AssignmentStrategy::BySkill,
        }) as i32,
        required_skills: r.required_skills,
    }
}

impl Wire<AssignmentRuleSet> for pb::AssignmentRuleSet {
    const FIELD: &'static str = "rule_set";

    fn into_domain(self) -> Result<AssignmentRuleSet> {
        let mode = match pb::RuleSetMode::try_from(self.mode) {
            Ok(pb::RuleSetMode::Unspecified | pb::RuleSetMode::Priority) => {
                EvaluationMode::Priority
            }
            Ok(pb::RuleSetMode::Ordered) => EvaluationMode::Ordered,
            Err(_) => return Err(crate::convert::unknown_enum("mode", self.mode)),
        };
        Ok(AssignmentRuleSet {
            display_name: self.display_name,
            active: self.active,
            mode,
            rules: self
                .rules
                .into_iter()
                .enumerate()
                .map(|(i, r)| rule_in(i, r))
                .collect::<Result<Vec<_>>>()?,
            fallback: reference("fallback", "users", &self.fallback)?,
            version: self.version,
            escalate_after_seconds: self.escalate_after_seconds,
        })
    }

    fn from_record(r: Record<AssignmentRuleSet>) -> Self {
        let d = r.data;
        pb::AssignmentRuleSet {
            name: name("assignmentRuleSets", Some(r.meta.id)),
            display_name: d.display_name,
            active: d.active,
            mode: (match d.mode {
                EvaluationMode::Ordered => pb::RuleSetMode::Ordered,
                EvaluationMode::Priority => pb::RuleSetMode::Priority,
            }) as i32,
            rules: d.rules.into_iter().map(rule_out).collect(),
            fallback: name("users", d.fallback),
            version: d.version,
            escalate_after_seconds: d.escalate_after_seconds,
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

/// Nesting deeper than this is refused while converting (as the policy's own check does).
const MAX_CONDITION_DEPTH: usize = 16;

fn condition_in(field: &str, c: Option<pb::GradingCondition>, depth: usize) -> Result<Condition> {
    use pb::grading_condition::Condition as P;
    if depth > MAX_CONDITION_DEPTH {
        return Err(Error::invalid(field, "nests conditions too deeply"));
    }
    let Some(c) = c.and_then(|c| c.condition) else {
        return Err(Error::invalid(field, "is required: one kind of condition"));
    };
    let list = |field: &str, cs: Vec<pb::GradingCondition>| -> Result<Vec<Condition>> {
        cs.into_iter()
            .enumerate()
            .map(|(i, c)| condition_in(&format!("{field}.conditions[{i}]"), Some(c), depth + 1))
            .collect()
    };
    Ok(match c {
        P::Source(v) => Condition::Source { values: v.values },
        P::Industry(v) => Condition::Industry { values: v.values },
        P::Region(v) => Condition::Region { values: v.values },
        P::CompanySize(r) => Condition::CompanySize {
            min: r.min,
            max: r.max,
        },
        P::Field(f) => Condition::Field {
            name: f.field,
            values: f.values,
        },
        P::Counter(c) => Condition::Counter {
            name: c.counter,
            min: c.min,
            max: c.max,
        },
        P::All(l) => Condition::All {
            of: list(&format!("{field}.all"), l.conditions)?,
        },
        P::Any(l) => Condition::Any {
            of: list(&format!("{field}.any"), l.conditions)?,
        },
        P::Not(c) => Condition::Not {
            of: Box::new(condition_in(&format!("{field}.not"), Some(*c), depth + 1)?),
        },
    })
}

fn condition_out(c: Condition) -> pb::GradingCondition {
    use pb::grading_condition::Condition as P;
    let list = |of: Vec<Condition>| pb::GradingConditions {
        conditions: of.into_iter().map(condition_out).collect(),
    };
    let c = match c {
        Condition::Source { values } => P::Source(pb::ValueList { values }),
        Condition::Industry { values } => P::Industry(pb::ValueList { values }),
        Condition::Region { values } => P::Region(pb::ValueList { values }),
        Condition::CompanySize { min, max } => P::CompanySize(pb::CountRange { min, max }),
        Condition::Field { name, values } => P::Field(pb::FieldValues {
            field: name,
            values,
        }),
        Condition::Counter { name, min, max } => P::Counter(pb::CounterRange {
            counter: name,
            min,
            max,
        }),
        Condition::All { of } => P::All(list(of)),
        Condition::Any { of } => P::Any(list(of)),
        Condition::Not { of } => P::Not(Box::new(condition_out(*of))),
    };
    pb::GradingCondition { condition: Some(c) }
}

impl Wire<LeadGradingPolicy> for pb::LeadGradingPolicy {
    const FIELD: &'static str = "policy";

    fn into_domain(self) -> Result<LeadGradingPolicy> {
        let rules = self
            .rules
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                Ok(GradingRule {
                    id: r.id,
                    description: r.description,
                    when: condition_in(&format!("rules[{i}].when"), r.when, 0)?,
                    points: r.points,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(LeadGradingPolicy {
            display_name: self.display_name,
            active: self.active,
            rules,
            thresholds: self
                .thresholds
                .map(|t| GradeThresholds {
                    hot: t.hot,
                    warm: t.warm,
                    cold: t.cold,
                })
                .unwrap_or_default(),
        })
    }

    fn from_record(r: Record<LeadGradingPolicy>) -> Self {
        let d = r.data;
        pb::LeadGradingPolicy {
            name: name("leadGradingPolicies", Some(r.meta.id)),
            display_name: d.display_name,
            active: d.active,
            rules: d
                .rules
                .into_iter()
                .map(|r| pb::GradingRule {
                    id: r.id,
                    description: r.description,
                    when: Some(condition_out(r.when)),
                    points: r.points,
                })
                .collect(),
            thresholds: Some(pb::GradeThresholds {
                hot: d.thresholds.hot,
                warm: d.thresholds.warm,
                cold: d.thresholds.cold,
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

crate::service_impl!(LeadService, Leads, [
    Lead => pb::Lead {
        create_lead(pb::CreateLeadRequest, lead),
        get_lead(pb::GetLeadRequest),
        list_leads(pb::ListLeadsRequest => ListLeadsResponse . leads),
        update_lead(pb::UpdateLeadRequest),
        delete_lead(pb::DeleteLeadRequest)
    },
    LeadGradingPolicy => pb::LeadGradingPolicy {
        create_lead_grading_policy(pb::CreateLeadGradingPolicyRequest, policy),
        get_lead_grading_policy(pb::GetLeadGradingPolicyRequest),
        list_lead_grading_policies(pb::ListLeadGradingPoliciesRequest => ListLeadGradingPoliciesResponse . policies),
        update_lead_grading_policy(pb::UpdateLeadGradingPolicyRequest),
        delete_lead_grading_policy(pb::DeleteLeadGradingPolicyRequest)
    },
    AssignmentRuleSet => pb::AssignmentRuleSet {
        create_assignment_rule_set(pb::CreateAssignmentRuleSetRequest, rule_set),
        get_assignment_rule_set(pb::GetAssignmentRuleSetRequest),
        list_assignment_rule_sets(pb::ListAssignmentRuleSetsRequest => ListAssignmentRuleSetsResponse . rule_sets),
        update_assignment_rule_set(pb::UpdateAssignmentRuleSetRequest),
        delete_assignment_rule_set(pb::DeleteAssignmentRuleSetRequest)
    },
    LeadDuplicatePolicy => pb::LeadDuplicatePolicy {
        create_lead_duplicate_policy(pb::CreateLeadDuplicatePolicyRequest, policy),
        get_lead_duplicate_policy(pb::GetLeadDuplicatePolicyRequest),
        list_lead_duplicate_policies(pb::ListLeadDuplicatePoliciesRequest => ListLeadDuplicatePoliciesResponse . policies),
        update_lead_duplicate_policy(pb::UpdateLeadDuplicatePolicyRequest),
        delete_lead_duplicate_policy(pb::DeleteLeadDuplicatePolicyRequest)
    },
    LeadCapturePolicy => pb::LeadCapturePolicy {
        create_lead_capture_policy(pb::CreateLeadCapturePolicyRequest, policy),
        get_lead_capture_policy(pb::GetLeadCapturePolicyRequest),
        list_lead_capture_policies(pb::ListLeadCapturePoliciesRequest => ListLeadCapturePoliciesResponse . policies),
        update_lead_capture_policy(pb::UpdateLeadCapturePolicyRequest),
        delete_lead_capture_policy(pb::DeleteLeadCapturePolicyRequest)
    }
]
    async fn convert_lead(
        &self,
        r: tonic::Request<pb::ConvertLeadRequest>,
    ) -> std::result::Result<tonic::Response<pb::ConvertLeadResponse>, tonic::Status> {
        use crate::status::OrStatus;
        let ctx = self.0.ctx(&r).await?;
        let q = r.into_inner();
        let id = <pb::Lead as Wire<Lead>>::parse_id("name", &q.name).or_status()?;
        let account = reference("account", "accounts", &q.account).or_status()?;
        let contact = reference("contact", "contacts", &q.contact).or_status()?;
        let opportunity = q.open_opportunity.then_some(q.opportunity_name);
        let c = crm_operational::lead::convert(&ctx, id, &q.etag, account, contact, opportunity)
            .await
            .or_status()?;
        Ok(tonic::Response::new(pb::ConvertLeadResponse {
            lead: Some(pb::Lead::from_record(c.lead)),
            account: c.account.map(pb::Account::from_record),
            contact: Some(pb::Contact::from_record(c.contact)),
            opportunity: c.opportunity.map(pb::Opportunity::from_record),
        }))
    }

    async fn find_lead_duplicates(
        &self,
        r: tonic::Request<pb::FindLeadDuplicatesRequest>,
    ) -> std::result::Result<tonic::Response<pb::DuplicateCheck>, tonic::Status> {
        use crate::status::OrStatus;
        let ctx = self.0.ctx(&r).await?;
        let id = <pb::Lead as Wire<Lead>>::parse_id("name", &r.get_ref().name).or_status()?;
        let d = crm_operational::dedupe::find_for(&ctx, id).await.or_status()?;
        Ok(tonic::Response::new(duplicates_out(d)))
    }

    async fn dry_run_assignment(
        &self,
        r: tonic::Request<pb::DryRunAssignmentRequest>,
    ) -> std::result::Result<tonic::Response<pb::AssignmentDecision>, tonic::Status> {
        use crate::status::OrStatus;
        let ctx = self.0.ctx(&r).await?;
        let lead = crate::convert::required("lead", r.into_inner().lead)
            .and_then(|l| l.into_domain().map_err(|e| e.in_field("lead")))
            .or_status()?;
        let d = crm_operational::routing::dry_run(&ctx, lead)
            .await
            .map_err(|e| e.in_field("lead"))
            .or_status()?;
        Ok(tonic::Response::new(decision_out(d)))
    }

    async fn get_lead_effectiveness(
        &self,
        r: tonic::Request<pb::GetLeadEffectivenessRequest>,
    ) -> std::result::Result<tonic::Response<pb::GetLeadEffectivenessResponse>, tonic::Status>
    {
        use crate::status::OrStatus;
        let ctx = self.0.ctx(&r).await?;
        let r = r.into_inner();
        let start_time = convert::from_ts("start_time", r.start_time)
            .and_then(|t| convert::required("start_time", t))
            .or_status()?;
        let end_time = convert::from_ts("end_time", r.end_time)
            .and_then(|t| convert::required("end_time", t))
            .or_status()?;
        let owner = match r.owner {
            Some(o) => Some(
                reference("owner", "users", &o)
                    .and_then(|o| convert::required("owner", o))
                    .or_status()?,
            ),
            None => None,
        };
        let q = EffectivenessQuery {
            start_time,
            end_time,
            group_by: grouping_in(r.group_by).or_status()?,
            granularity: granularity_in(r.granularity).or_status()?,
            time_zone: r.time_zone,
            source: r.source,
            owner,
            campaign: r.campaign,
        };
        let report = crm_operational::effectiveness::lead_effectiveness(&ctx, &q)
            .await
            .or_status()?;
        Ok(tonic::Response::new(pb::GetLeadEffectivenessResponse {
            group_by: grouping_out(report.group_by),
            granularity: granularity_out(report.granularity),
            time_zone: report.time_zone,
            rows: report.rows.into_iter().map(effectiveness_row_out).collect(),
            total: Some(effectiveness_row_out(report.total)),
        }))
    }
);
