//! A3 Lifecycle: per-tenant stage models with rule-driven transitions.
//!
//! A [`StageModel`] has ordered stages, an initial stage and ordered [`TransitionRule`]s. A
//! rule moves a customer from one of its `from` stages (empty: from any stage but its target)
//! to its `to` stage when **all** of its conditions hold over the customer's
//! [`LifecycleFacts`]. [`StageModel::evaluate`] returns the transition of the **first**
//! matching rule, or `None`; [`StageModel::settle`] applies transitions until none fires
//! (a new customer with a year of history passes several stages in one evaluation), never
//! visiting a stage twice, so it always ends.
//!
//! Conditions on the last or first order time (`days_since_*`) are false for a customer without
//! orders; counters missing from [`LifecycleFacts::counters`] are 0. Days are whole elapsed
//! days (UTC) to [`LifecycleFacts::now`].
//!
//! Two templates ship: [`StageModel::eight_stage`] (identify, acquire, classify, understand,
//! customise, communicate, transact, retain: PRODUCT.md A3) and [`StageModel::four_stage`]
//! (explore, form, stable, decline: the relationship lifecycle). Tenants copy and edit them;
//! [`StageModel::validate`] names every bad field.

use std::collections::{BTreeMap, HashSet, VecDeque};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Collector, Error, Problem, Result};

/// Longest stage key, model key or reason, in characters.
pub const MAX_TEXT_CHARS: usize = 200;

/// A comparison operator of a condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CmpOp {
    /// `=`
    #[serde(rename = "=")]
    Eq,
    /// `!=`
    #[serde(rename = "!=")]
    Ne,
    /// `<`
    #[serde(rename = "<")]
    Lt,
    /// `<=`
    #[serde(rename = "<=")]
    Le,
    /// `>`
    #[serde(rename = ">")]
    Gt,
    /// `>=`
    #[serde(rename = ">=")]
    Ge,
}

impl CmpOp {
    /// Applies the operator.
    pub fn test(self, left: i64, right: i64) -> bool {
        match self {
            CmpOp::Eq => left == right,
            CmpOp::Ne => left != right,
            CmpOp::Lt => left < right,
            CmpOp::Le => left <= right,
            CmpOp::Gt => left > right,
            CmpOp::Ge => left >= right,
        }
    }

    /// The operator as written.
    pub fn as_str(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }
}

/// One condition of a transition rule over [`LifecycleFacts`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "fact", rename_all = "snake_case")]
pub enum Condition {
    /// Number of purchases.
    OrderCount {
        /// Operator.
        op: CmpOp,
        /// Right-hand side.
        value: i64,
    },
    /// Whole days since the first order (false without orders).
    DaysSinceFirstOrder {
        /// Operator.
        op: CmpOp,
        /// Right-hand side.
        value: i64,
    },
    /// Whole days since the last order (false without orders).
    DaysSinceLastOrder {
        /// Operator.
        op: CmpOp,
        /// Right-hand side.
        value: i64,
    },
    /// Number of open service cases.
    OpenCases {
        /// Operator.
        op: CmpOp,
        /// Right-hand side.
        value: i64,
    },
    /// Number of recorded interactions (calls, emails, visits...).
    Interactions {
        /// Operator.
        op: CmpOp,
        /// Right-hand side.
        value: i64,
    },
    /// Number of campaign responses.
    CampaignResponses {
        /// Operator.
        op: CmpOp,
        /// Right-hand side.
        value: i64,
    },
    /// A tenant-defined counter from [`LifecycleFacts::counters`] (missing = 0).
    Counter {
        /// The counter's name.
        name: String,
        /// Operator.
        op: CmpOp,
        /// Right-hand side.
        value: i64,
    },
    /// The lead status is one of these (false without a lead).
    LeadStatus {
        /// Accepted statuses.
        any_of: Vec<String>,
    },
    /// The RFM segment is one of these; an empty list means "has any segment".
    RfmSegment {
        /// Accepted segments.
        any_of: Vec<String>,
    },
}

impl Condition {
    /// Whether the condition holds.
    pub fn holds(&self, facts: &LifecycleFacts) -> bool {
        let days = |t: Option<DateTime<Utc>>| t.map(|t| (facts.now - t).num_days().max(0));
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        match self {
            Condition::OrderCount { op, value } => op.test(count(facts.order_count), *value),
            Condition::DaysSinceFirstOrder { op, value } => {
                days(facts.first_order_time).is_some_and(|d| op.test(d, *value))
            }
            Condition::DaysSinceLastOrder { op, value } => {
                days(facts.last_order_time).is_some_and(|d| op.test(d, *value))
            }
            Condition::OpenCases { op, value } => op.test(count(facts.open_cases), *value),
            Condition::Interactions { op, value } => op.test(count(facts.interactions), *value),
            Condition::CampaignResponses { op, value } => {
                op.test(count(facts.campaign_responses), *value)
            }
            Condition::Counter { name, op, value } => {
                op.test(facts.counters.get(name).copied().unwrap_or(0), *value)
            }
            Condition::LeadStatus { any_of } => facts
                .lead_status
                .as_ref()
                .is_some_and(|s| any_of.iter().any(|a| a == s)),
            Condition::RfmSegment { any_of } => facts
                .rfm_segment
                .as_ref()
                .is_some_and(|s| any_of.is_empty() || any_of.iter().any(|a| a == s)),
        }
    }

    /// The condition as text, e.g. `order_count >= 2`.
    pub fn describe(&self) -> String {
        let cmp = |name: &str, op: &CmpOp, v: &i64| format!("{name} {} {v}", op.as_str());
        match self {
            Condition::OrderCount { op, value } => cmp("order_count", op, value),
            Condition::DaysSinceFirstOrder { op, value } => {
                cmp("days_since_first_order", op, value)
            }
            Condition::DaysSinceLastOrder { op, value } => cmp("days_since_last_order", op, value),
            Condition::OpenCases { op, value } => cmp("open_cases", op, value),
            Condition::Interactions { op, value } => cmp("interactions", op, value),
            Condition::CampaignResponses { op, value } => cmp("campaign_responses", op, value),
            Condition::Counter { name, op, value } => cmp(&format!("counters.{name}"), op, value),
            Condition::LeadStatus { any_of } => format!("lead_status in [{}]", any_of.join(", ")),
            Condition::RfmSegment { any_of } if any_of.is_empty() => "has an rfm segment".into(),
            Condition::RfmSegment { any_of } => format!("rfm_segment in [{}]", any_of.join(", ")),
        }
    }
}

/// The facts a condition may name, as written in [`Condition::parse`].
pub const FACTS: &[&str] = &[
    "order_count",
    "days_since_first_order",
    "days_since_last_order",
    "open_cases",
    "interactions",
    "campaign_responses",
    "counter",
    "lead_status",
    "rfm_segment",
];

impl CmpOp {
    /// Parses an operator as written (`=`, `!=`, `<`, `<=`, `>`, `>=`).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.trim() {
            "=" | "==" => CmpOp::Eq,
            "!=" => CmpOp::Ne,
            "<" => CmpOp::Lt,
            "<=" => CmpOp::Le,
            ">" => CmpOp::Gt,
            ">=" => CmpOp::Ge,
            _ => return None,
        })
    }
}

impl Condition {
    /// Builds a condition from its parts as an API sends them: the fact's name (one of
    /// [`FACTS`]), an operator and a value for comparisons, the counter's name for `counter`,
    /// and the accepted values for `lead_status` and `rfm_segment`. An unknown fact names
    /// `fact`, a missing or unknown operator names `op`, a missing counter name `counter`.
    pub fn parse(fact: &str, op: &str, value: i64, name: &str, any_of: &[String]) -> Result<Self> {
        let fact = fact.trim();
        let cmp = || {
            CmpOp::parse(op).ok_or_else(|| {
                Error::field(
                    "op",
                    if op.trim().is_empty() {
                        Problem::Required
                    } else {
                        Problem::Unknown
                    },
                    format!("unknown operator {op:?}: one of =, !=, <, <=, >, >="),
                )
            })
        };
        Ok(match fact {
            "order_count" => Condition::OrderCount { op: cmp()?, value },
            "days_since_first_order" => Condition::DaysSinceFirstOrder { op: cmp()?, value },
            "days_since_last_order" => Condition::DaysSinceLastOrder { op: cmp()?, value },
            "open_cases" => Condition::OpenCases { op: cmp()?, value },
            "interactions" => Condition::Interactions { op: cmp()?, value },
            "campaign_responses" => Condition::CampaignResponses { op: cmp()?, value },
            "counter" => {
                if name.trim().is_empty() {
                    return Err(Error::field("counter", Problem::Required, "is required"));
                }
                Condition::Counter {
                    name: name.trim().to_owned(),
                    op: cmp()?,
                    value,
                }
            }
            "lead_status" => Condition::LeadStatus {
                any_of: any_of.to_vec(),
            },
            "rfm_segment" => Condition::RfmSegment {
                any_of: any_of.to_vec(),
            },
            "" => return Err(Error::field("fact", Problem::Required, "is required")),
            other => {
                return Err(Error::field(
                    "fact",
                    Problem::Unknown,
                    format!("unknown fact {other:?}: one of {}", FACTS.join(", ")),
                ));
            }
        })
    }

    /// The condition's parts, the inverse of [`Condition::parse`]: (fact, operator, value,
    /// counter name, accepted values).
    pub fn parts(&self) -> (&'static str, &'static str, i64, String, Vec<String>) {
        let c = |f: &'static str, op: &CmpOp, v: &i64| (f, op.as_str(), *v, String::new(), vec![]);
        match self {
            Condition::OrderCount { op, value } => c("order_count", op, value),
            Condition::DaysSinceFirstOrder { op, value } => c("days_since_first_order", op, value),
            Condition::DaysSinceLastOrder { op, value } => c("days_since_last_order", op, value),
            Condition::OpenCases { op, value } => c("open_cases", op, value),
            Condition::Interactions { op, value } => c("interactions", op, value),
            Condition::CampaignResponses { op, value } => c("campaign_responses", op, value),
            Condition::Counter { name, op, value } => {
                ("counter", op.as_str(), *value, name.clone(), vec![])
            }
            Condition::LeadStatus { any_of } => {
                ("lead_status", "", 0, String::new(), any_of.clone())
            }
            Condition::RfmSegment { any_of } => {
                ("rfm_segment", "", 0, String::new(), any_of.clone())
            }
        }
    }
}

/// What the rules read about one customer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LifecycleFacts {
    /// The evaluation time (default: the Unix epoch).
    pub now: DateTime<Utc>,
    /// Time of the first purchase.
    pub first_order_time: Option<DateTime<Utc>>,
    /// Time of the last purchase.
    pub last_order_time: Option<DateTime<Utc>>,
    /// Number of purchases.
    pub order_count: u64,
    /// Open service cases.
    pub open_cases: u64,
    /// Recorded interactions.
    pub interactions: u64,
    /// Campaign responses.
    pub campaign_responses: u64,
    /// The customer's lead status, if it came from a lead.
    pub lead_status: Option<String>,
    /// The current RFM segment.
    pub rfm_segment: Option<String>,
    /// Tenant-defined counters.
    pub counters: BTreeMap<String, i64>,
}

/// A stage of a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stage {
    /// Stable key, unique in the model (e.g. `retain`).
    pub key: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
}

/// A rule moving customers between stages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransitionRule {
    /// Stages the rule applies to; empty = every stage except `to`.
    #[serde(default)]
    pub from: Vec<String>,
    /// Target stage.
    pub to: String,
    /// Conditions that must all hold.
    #[serde(default)]
    pub when: Vec<Condition>,
    /// Why, as recorded with the transition; empty = the conditions as text.
    #[serde(default)]
    pub reason: String,
}

impl TransitionRule {
    fn applies_from(&self, stage: &str) -> bool {
        if self.from.is_empty() {
            self.to != stage
        } else {
            self.from.iter().any(|f| f == stage)
        }
    }

    fn reason_text(&self) -> String {
        if !self.reason.trim().is_empty() {
            return self.reason.clone();
        }
        if self.when.is_empty() {
            return "unconditional".into();
        }
        self.when
            .iter()
            .map(Condition::describe)
            .collect::<Vec<_>>()
            .join(" and ")
    }
}

/// A stage change, as recorded in the customer's lifecycle history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// The stage left.
    pub from: String,
    /// The stage entered.
    pub to: String,
    /// Why (the rule's reason or its conditions).
    pub reason: String,
    /// Index of the rule that fired.
    pub rule: usize,
    /// When (the facts' `now`).
    pub at: DateTime<Utc>,
}

/// A tenant's lifecycle model, stored as JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageModel {
    /// Model key, e.g. `relationship`.
    pub key: String,
    /// Stages in display order.
    pub stages: Vec<Stage>,
    /// Where new customers start.
    pub initial: String,
    /// Rules in priority order (first match wins).
    pub transitions: Vec<TransitionRule>,
}

fn within(value: i64) -> Condition {
    Condition::DaysSinceLastOrder {
        op: CmpOp::Le,
        value,
    }
}

fn rule(from: &[&str], to: &str, when: Vec<Condition>, reason: &str) -> TransitionRule {
    TransitionRule {
        from: from.iter().map(|s| (*s).to_owned()).collect(),
        to: to.into(),
        when,
        reason: reason.into(),
    }
}

fn stages(keys: &[(&str, &str)]) -> Vec<Stage> {
    keys.iter()
        .map(|(k, n)| Stage {
            key: (*k).into(),
            name: (*n).into(),
        })
        .collect()
}

impl StageModel {
    /// The eight-stage CRM process model of PRODUCT.md A3: identify → acquire → classify →
    /// understand → customise → communicate → transact → retain. A purchase moves a customer
    /// from any earlier stage to transact when the stage's own step does not apply; a retained
    /// customer without an order for a year goes back to communicate (re-engagement).
    pub fn eight_stage() -> Self {
        use Condition as C;
        let early = [
            "identify",
            "acquire",
            "classify",
            "understand",
            "customise",
            "communicate",
        ];
        StageModel {
            key: "crm_process".into(),
            stages: stages(&[
                ("identify", "Identify"),
                ("acquire", "Acquire"),
                ("classify", "Classify"),
                ("understand", "Understand"),
                ("customise", "Customise"),
                ("communicate", "Communicate"),
                ("transact", "Transact"),
                ("retain", "Retain"),
            ]),
            initial: "identify".into(),
            transitions: vec![
                rule(
                    &["identify"],
                    "acquire",
                    vec![C::LeadStatus {
                        any_of: vec!["QUALIFIED".into(), "CONVERTED".into()],
                    }],
                    "lead qualified",
                ),
                rule(
                    &["identify"],
                    "acquire",
                    vec![C::OrderCount {
                        op: CmpOp::Ge,
                        value: 1,
                    }],
                    "first purchase",
                ),
                rule(
                    &["acquire"],
                    "classify",
                    vec![C::RfmSegment { any_of: vec![] }],
                    "assigned an rfm segment",
                ),
                rule(
                    &["classify"],
                    "understand",
                    vec![C::Interactions {
                        op: CmpOp::Ge,
                        value: 1,
                    }],
                    "first recorded interaction",
                ),
                rule(
                    &["understand"],
                    "customise",
                    vec![C::Counter {
                        name: "personalised_offers".into(),
                        op: CmpOp::Ge,
                        value: 1,
                    }],
                    "received a personalised offer",
                ),
                rule(
                    &["customise"],
                    "communicate",
                    vec![C::CampaignResponses {
                        op: CmpOp::Ge,
                        value: 1,
                    }],
                    "responded to a campaign",
                ),
                rule(
                    &early,
                    "transact",
                    vec![C::OrderCount {
                        op: CmpOp::Ge,
                        value: 1,
                    }],
                    "purchased",
                ),
                rule(
                    &["transact"],
                    "retain",
                    vec![
                        C::OrderCount {
                            op: CmpOp::Ge,
                            value: 2,
                        },
                        within(180),
                    ],
                    "repeat purchase within 180 days",
                ),
                rule(
                    &["retain"],
                    "communicate",
                    vec![C::DaysSinceLastOrder {
                        op: CmpOp::Gt,
                        value: 365,
                    }],
                    "no order for over a year: re-engage",
                ),
            ],
        }
    }

    /// The four-stage relationship model: explore → form → stable → decline, with win-back
    /// from decline.
    pub fn four_stage() -> Self {
        use Condition as C;
        let lapsed = C::DaysSinceLastOrder {
            op: CmpOp::Gt,
            value: 180,
        };
        StageModel {
            key: "relationship".into(),
            stages: stages(&[
                ("explore", "Explore"),
                ("form", "Form"),
                ("stable", "Stable"),
                ("decline", "Decline"),
            ]),
            initial: "explore".into(),
            transitions: vec![
                rule(
                    &["explore"],
                    "form",
                    vec![C::OrderCount {
                        op: CmpOp::Ge,
                        value: 1,
                    }],
                    "first purchase",
                ),
                rule(
                    &["form", "stable"],
                    "decline",
                    vec![lapsed],
                    "no order for 180 days",
                ),
                rule(
                    &["stable"],
                    "decline",
                    vec![C::OpenCases {
                        op: CmpOp::Ge,
                        value: 3,
                    }],
                    "three or more open cases",
                ),
                rule(
                    &["form"],
                    "stable",
                    vec![
                        C::OrderCount {
                            op: CmpOp::Ge,
                            value: 3,
                        },
                        within(90),
                    ],
                    "three purchases, the last within 90 days",
                ),
                rule(
                    &["decline"],
                    "stable",
                    vec![
                        C::OrderCount {
                            op: CmpOp::Ge,
                            value: 3,
                        },
                        within(30),
                        C::OpenCases {
                            op: CmpOp::Lt,
                            value: 3,
                        },
                    ],
                    "won back: purchased within 30 days",
                ),
            ],
        }
    }

    /// The templates by key: `crm_process` (eight stages) and `relationship` (four).
    pub fn template(key: &str) -> Option<Self> {
        match key {
            "crm_process" => Some(Self::eight_stage()),
            "relationship" => Some(Self::four_stage()),
            _ => None,
        }
    }

    fn has_stage(&self, key: &str) -> bool {
        self.stages.iter().any(|s| s.key == key)
    }

    /// Checks the model and names every bad field: empty or duplicate stage keys
    /// (`stages[i].key`), an unknown initial stage (`initial`), unknown stages in rules
    /// (`transitions[i].from[j]`, `transitions[i].to`), a rule from its own target
    /// (`transitions[i].from[j]`), negative day or count bounds
    /// (`transitions[i].when[k].value`), and stages no rule can reach from the initial
    /// stage (`stages[i]`, [`Problem::Unreachable`]).
    pub fn validate(&self) -> Result<()> {
        let mut c = Collector::default();
        let text = |c: &mut Collector, field: String, v: &str| {
            if v.trim().is_empty() {
                c.add(field, Problem::Required, "is required");
            } else if v.chars().count() > MAX_TEXT_CHARS {
                c.add(
                    field,
                    Problem::OutOfRange,
                    format!("must be at most {MAX_TEXT_CHARS} characters"),
                );
            }
        };
        text(&mut c, "key".into(), &self.key);
        if self.stages.is_empty() {
            c.add(
                "stages",
                Problem::Required,
                "at least one stage is required",
            );
        }
        for (i, s) in self.stages.iter().enumerate() {
            text(&mut c, format!("stages[{i}].key"), &s.key);
            if self.stages[..i].iter().any(|o| o.key == s.key) {
                c.add(
                    format!("stages[{i}].key"),
                    Problem::Duplicate,
                    format!("stage {:?} appears twice", s.key),
                );
            }
        }
        if !self.has_stage(&self.initial) {
            c.add(
                "initial",
                Problem::Unknown,
                format!("unknown stage {:?}", self.initial),
            );
        }
        for (i, t) in self.transitions.iter().enumerate() {
            if !self.has_stage(&t.to) {
                c.add(
                    format!("transitions[{i}].to"),
                    Problem::Unknown,
                    format!("unknown stage {:?}", t.to),
                );
            }
            for (j, f) in t.from.iter().enumerate() {
                if !self.has_stage(f) {
                    c.add(
                        format!("transitions[{i}].from[{j}]"),
                        Problem::Unknown,
                        format!("unknown stage {f:?}"),
                    );
                } else if *f == t.to {
                    c.add(
                        format!("transitions[{i}].from[{j}]"),
                        Problem::Conflict,
                        "a rule cannot move a stage to itself",
                    );
                }
            }
            if t.reason.chars().count() > MAX_TEXT_CHARS {
                c.add(
                    format!("transitions[{i}].reason"),
                    Problem::OutOfRange,
                    format!("must be at most {MAX_TEXT_CHARS} characters"),
                );
            }
            for (k, cond) in t.when.iter().enumerate() {
                let bound = match cond {
                    Condition::DaysSinceFirstOrder { value, .. }
                    | Condition::DaysSinceLastOrder { value, .. } => Some(*value),
                    _ => None,
                };
                if bound.is_some_and(|v| v < 0) {
                    c.add(
                        format!("transitions[{i}].when[{k}].value"),
                        Problem::OutOfRange,
                        "days must not be negative",
                    );
                }
                if let Condition::Counter { name, .. } = cond
                    && name.trim().is_empty()
                {
                    c.add(
                        format!("transitions[{i}].when[{k}].name"),
                        Problem::Required,
                        "is required",
                    );
                }
            }
        }
        if !c.0.is_empty() {
            return c.finish();
        }
        // Reachability from the initial stage over the rules' edges.
        let mut seen: HashSet<&str> = HashSet::from([self.initial.as_str()]);
        let mut queue: VecDeque<&str> = VecDeque::from([self.initial.as_str()]);
        while let Some(stage) = queue.pop_front() {
            for t in &self.transitions {
                if t.applies_from(stage) && seen.insert(t.to.as_str()) {
                    queue.push_back(t.to.as_str());
                }
            }
        }
        for (i, s) in self.stages.iter().enumerate() {
            if !seen.contains(s.key.as_str()) {
                c.add(
                    format!("stages[{i}]"),
                    Problem::Unreachable,
                    format!("no rule leads to stage {:?} from {:?}", s.key, self.initial),
                );
            }
        }
        c.finish()
    }

    /// The transition of the first rule that applies to `current` and whose conditions all
    /// hold, or `None`. An unknown `current` is an error naming `stage`.
    pub fn evaluate(&self, current: &str, facts: &LifecycleFacts) -> Result<Option<Transition>> {
        if !self.has_stage(current) {
            return Err(Error::field(
                "stage",
                Problem::Unknown,
                format!("unknown stage {current:?} in model {:?}", self.key),
            ));
        }
        Ok(self
            .transitions
            .iter()
            .enumerate()
            .find(|(_, t)| t.applies_from(current) && t.when.iter().all(|c| c.holds(facts)))
            .map(|(i, t)| Transition {
                from: current.to_owned(),
                to: t.to.clone(),
                reason: t.reason_text(),
                rule: i,
                at: facts.now,
            }))
    }

    /// Applies transitions from `current` (the initial stage when `None`) until no rule fires
    /// or the next stage was already visited in this evaluation; returns them in order (empty:
    /// the customer stays).
    pub fn settle(&self, current: Option<&str>, facts: &LifecycleFacts) -> Result<Vec<Transition>> {
        let mut stage = current.unwrap_or(self.initial.as_str()).to_owned();
        let mut visited: HashSet<String> = HashSet::from([stage.clone()]);
        let mut out = Vec::new();
        while let Some(t) = self.evaluate(&stage, facts)? {
            if !visited.insert(t.to.clone()) {
                break;
            }
            stage = t.to.clone();
            out.push(t);
        }
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};
    use proptest::prelude::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 6, 30, 0, 0, 0).unwrap()
    }

    fn facts(orders: u64, first_days_ago: i64, last_days_ago: i64) -> LifecycleFacts {
        LifecycleFacts {
            now: now(),
            order_count: orders,
            first_order_time: (orders > 0).then(|| now() - Duration::days(first_days_ago)),
            last_order_time: (orders > 0).then(|| now() - Duration::days(last_days_ago)),
            ..Default::default()
        }
    }

    #[test]
    fn conditions_parse_from_parts_and_back() {
        for c in StageModel::eight_stage()
            .transitions
            .iter()
            .chain(StageModel::four_stage().transitions.iter())
            .flat_map(|t| t.when.iter())
        {
            let (fact, op, value, name, any_of) = c.parts();
            assert_eq!(
                &Condition::parse(fact, op, value, &name, &any_of).unwrap(),
                c
            );
        }
        let e = Condition::parse("mood", ">", 1, "", &[]).unwrap_err();
        assert!(e.has("fact", Problem::Unknown), "{e}");
        let e = Condition::parse("order_count", "~", 1, "", &[]).unwrap_err();
        assert!(e.has("op", Problem::Unknown), "{e}");
        let e = Condition::parse("order_count", "", 1, "", &[]).unwrap_err();
        assert!(e.has("op", Problem::Required), "{e}");
        let e = Condition::parse("counter", ">=", 1, " ", &[]).unwrap_err();
        assert!(e.has("counter", Problem::Required), "{e}");
        assert!(
            Condition::parse("", "", 0, "", &[])
                .unwrap_err()
                .has("fact", Problem::Required)
        );
        assert_eq!(
            Condition::parse(" days_since_last_order ", "==", 30, "", &[]).unwrap(),
            Condition::DaysSinceLastOrder {
                op: CmpOp::Eq,
                value: 30
            }
        );
    }

    #[test]
    fn templates_are_valid_and_match_product_md() {
        let eight = StageModel::eight_stage();
        eight.validate().unwrap();
        let keys: Vec<&str> = eight.stages.iter().map(|s| s.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "identify",
                "acquire",
                "classify",
                "understand",
                "customise",
                "communicate",
                "transact",
                "retain"
            ]
        );
        let four = StageModel::four_stage();
        four.validate().unwrap();
        let keys: Vec<&str> = four.stages.iter().map(|s| s.key.as_str()).collect();
        assert_eq!(keys, ["explore", "form", "stable", "decline"]);
        assert_eq!(StageModel::template("relationship"), Some(four));
        assert!(StageModel::template("nope").is_none());
    }

    #[test]
    fn four_stage_rules_by_hand() {
        let m = StageModel::four_stage();
        // No orders: stays in explore.
        assert_eq!(m.evaluate("explore", &facts(0, 0, 0)).unwrap(), None);
        // First order: explore -> form.
        let t = m.evaluate("explore", &facts(1, 10, 10)).unwrap().unwrap();
        assert_eq!(
            (t.from.as_str(), t.to.as_str(), t.rule),
            ("explore", "form", 0)
        );
        assert_eq!(t.reason, "first purchase");
        assert_eq!(t.at, now());
        // Three orders, last 20 days ago: form -> stable.
        let t = m.evaluate("form", &facts(3, 200, 20)).unwrap().unwrap();
        assert_eq!(t.to, "stable");
        // 181 days without an order: stable -> decline; 180 is not enough.
        assert_eq!(
            m.evaluate("stable", &facts(5, 400, 181))
                .unwrap()
                .unwrap()
                .to,
            "decline"
        );
        assert_eq!(m.evaluate("stable", &facts(5, 400, 180)).unwrap(), None);
        // Open cases push a stable customer to decline.
        let mut f = facts(5, 400, 10);
        f.open_cases = 3;
        assert_eq!(m.evaluate("stable", &f).unwrap().unwrap().to, "decline");
        // Win-back needs fewer than 3 open cases.
        assert_eq!(m.evaluate("decline", &f).unwrap(), None);
        f.open_cases = 0;
        let t = m.evaluate("decline", &f).unwrap().unwrap();
        assert_eq!(
            (t.to.as_str(), t.reason.as_str()),
            ("stable", "won back: purchased within 30 days")
        );
        // Unknown current stage.
        assert!(
            m.evaluate("gone", &f)
                .unwrap_err()
                .has("stage", Problem::Unknown)
        );
    }

    #[test]
    fn settle_walks_several_stages_and_stops_on_cycles() {
        let m = StageModel::four_stage();
        let path: Vec<String> = m
            .settle(None, &facts(4, 300, 5))
            .unwrap()
            .into_iter()
            .map(|t| t.to)
            .collect();
        assert_eq!(path, ["form", "stable"]);

        let e = StageModel::eight_stage();
        let mut f = facts(2, 100, 10);
        f.rfm_segment = Some("loyal".into());
        let path: Vec<String> = e
            .settle(None, &f)
            .unwrap()
            .into_iter()
            .map(|t| t.to)
            .collect();
        // identify -(order)-> acquire -(segment)-> classify -(no interactions: purchase)->
        // transact -(2 orders, 10 days)-> retain
        assert_eq!(path, ["acquire", "classify", "transact", "retain"]);

        // A model whose rules loop: a <-> b both unconditional; settle stops.
        let looping = StageModel {
            key: "loop".into(),
            stages: stages(&[("a", ""), ("b", "")]),
            initial: "a".into(),
            transitions: vec![rule(&["a"], "b", vec![], ""), rule(&["b"], "a", vec![], "")],
        };
        looping.validate().unwrap();
        let t = looping.settle(None, &facts(0, 0, 0)).unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].reason, "unconditional");
    }

    #[test]
    fn validation_names_fields() {
        let bad = StageModel {
            key: "m".into(),
            stages: stages(&[("a", ""), ("b", ""), ("a", ""), ("island", "")]),
            initial: "a".into(),
            transitions: vec![
                rule(&["a"], "b", vec![within(-1)], ""),
                rule(&["zzz", "b"], "nowhere", vec![], ""),
                rule(&["b"], "b", vec![], ""),
            ],
        };
        let e = bad.validate().unwrap_err();
        assert!(e.has("stages[2].key", Problem::Duplicate), "{e:?}");
        assert!(e.has("transitions[0].when[0].value", Problem::OutOfRange));
        assert!(e.has("transitions[1].from[0]", Problem::Unknown));
        assert!(e.has("transitions[1].to", Problem::Unknown));
        assert!(e.has("transitions[2].from[0]", Problem::Conflict));

        let unreachable = StageModel {
            key: "m".into(),
            stages: stages(&[("a", ""), ("b", ""), ("island", "")]),
            initial: "a".into(),
            transitions: vec![rule(&["a"], "b", vec![], "")],
        };
        let e = unreachable.validate().unwrap_err();
        assert!(e.has("stages[2]", Problem::Unreachable), "{e:?}");
        let no_initial = StageModel {
            initial: "x".into(),
            ..unreachable
        };
        assert!(
            no_initial
                .validate()
                .unwrap_err()
                .has("initial", Problem::Unknown)
        );
    }

    #[test]
    fn model_round_trips_as_json() {
        let m = StageModel::eight_stage();
        let json = serde_json::to_string(&m).unwrap();
        assert!(
            json.contains(r#""fact":"order_count","op":">=","value":1"#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<StageModel>(&json).unwrap(), m);
    }

    proptest! {
        #[test]
        fn settle_always_ends_in_a_known_stage(orders in 0u64..10, last in 0i64..800, cases in 0u64..5, responses in 0u64..3) {
            for m in [StageModel::eight_stage(), StageModel::four_stage()] {
                let mut f = facts(orders, last + 10, last);
                f.open_cases = cases;
                f.campaign_responses = responses;
                let path = m.settle(None, &f).unwrap();
                prop_assert!(path.len() < m.stages.len());
                for t in &path {
                    prop_assert!(m.stages.iter().any(|s| s.key == t.to));
                }
            }
        }
    }
}
