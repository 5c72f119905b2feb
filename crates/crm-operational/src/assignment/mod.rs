//! Lead assignment (O4): tenant rule sets route a lead to an owner, with an explanation.
//!
//! A [`RuleSet`] is plain data (stored as JSON, versioned by the store). It is checked and
//! pre-compiled once ([`CompiledRuleSet::compile`]), then each decision
//! ([`CompiledRuleSet::decide`]) is pure: the lead's profile, the candidates' current status
//! ([`Workload`]: active, capacity, load, skills) and the round-robin counters
//! ([`RotationState`]) go in; an [`Assignment`] comes out with exactly one owner, the
//! counter update to persist, and the explanation to store.
//!
//! # Which rule
//!
//! A rule matches when every condition it sets holds (unset conditions match anything):
//! industry, region, territory (the lead may lie in several overlapping territories; the
//! caller passes each with its depth in the territory tree), product group and customer group
//! (the caller passes the lead's groups *and their ancestors*, so a rule on a parent group
//! matches its subgroups), deal size range and grade. Among matching rules:
//!
//! - [`EvaluationMode::Ordered`]: the first in list order.
//! - [`EvaluationMode::Priority`]: **the most specific first** (the deepest territory the rule
//!   matched the lead by; rules without a territory condition are the least specific),
//!   **then the lower `priority` number, then the rule id** (byte order). This is the stated
//!   tie-break for overlapping territories.
//!
//! If the winning rule has no eligible candidate, the next matching rule in that order is
//! tried; when none has one, the rule set's fallback owner gets the lead, so no lead is ever
//! unowned. The fallback is a queue or a manager: it is not checked for status or capacity.
//!
//! # Which candidate
//!
//! A rule's targets are users, teams (a team queue), regional managers, dealers or partners.
//! A target is skipped when it is missing from the workload (unknown), deactivated, at or over
//! its capacity (`load >= capacity`), or lacks a skill the rule requires (for
//! [`Strategy::BySkill`] also the skills the lead needs). Among the rest:
//!
//! - [`Strategy::RoundRobin`]: counter `c` picks the `c mod n`-th of the `n` targets eligible
//!   now, in target order (a counter taken once per lead, see `routing`).
//! - [`Strategy::Weighted`]: weighted round-robin: counter `c` picks the target whose
//!   cumulative weight range holds `c mod total` (over eligible targets), so over a cycle each
//!   gets its share, deterministically.
//! - [`Strategy::LeastLoaded`]: the smallest load, then the most free capacity, then target
//!   order.
//! - [`Strategy::BySkill`]: those with every required skill, then as least-loaded.
//!
//! Counters are per rule; the decision returns `previous` and `next` so a store can apply
//! the update with a compare-and-set (correct with several replicas).
//!
//! # Speed
//!
//! Compilation interns every value and indexes each rule under its most selective condition
//! (the value list with the fewest entries among industry, region, territory, product group
//! and customer group). A decision looks up the lead's few values in that index and evaluates
//! only the rules found there plus those without any list condition, so its cost depends on
//! the lead's candidate rules, not the size of the set. `examples/assign_bench.rs` measures
//! it over 1,000 rules.

mod engine;

pub use engine::CompiledRuleSet;

use crate::error::{ConfigError, Problem};
use crate::grading::Grade;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use uuid::Uuid;

/// What kind of owner a target is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TargetKind {
    /// A user (sales rep).
    User,
    /// A team's queue.
    Team,
    /// A regional manager.
    RegionalManager,
    /// A dealer.
    Dealer,
    /// A partner.
    Partner,
}

/// An owner of a lead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Owner {
    /// The user's, team's, dealer's or partner's id.
    pub id: Uuid,
    /// What it is.
    pub kind: TargetKind,
}

fn one() -> u32 {
    1
}

/// A candidate owner of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// The owner.
    #[serde(flatten)]
    pub owner: Owner,
    /// Share for [`Strategy::Weighted`] (default 1; 0 never chosen by weight).
    #[serde(default = "one")]
    pub weight: u32,
}

/// How a rule chooses among its eligible targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Strategy {
    /// In turn.
    RoundRobin,
    /// In turn, in proportion to the weights.
    Weighted,
    /// The one with the least open work.
    LeastLoaded,
    /// Those with the skills the lead needs, least loaded first.
    BySkill,
}

/// How matching rules are ranked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EvaluationMode {
    /// First matching rule in list order.
    Ordered,
    /// Most specific territory, then priority, then id.
    #[default]
    Priority,
}

/// A deal size range in minor units of the tenant's currency; bounds inclusive and optional.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct DealSizeRange {
    /// ISO 4217 currency of `min` and `max`; a lead's deal in another currency does not
    /// match (amounts of different currencies are never compared). Empty: any currency.
    pub currency: String,
    /// Smallest deal size, in minor units.
    pub min: Option<i64>,
    /// Largest deal size, in minor units.
    pub max: Option<i64>,
}

/// What a rule matches; `None` matches anything, a list matches a lead with one of its values.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RuleConditions {
    /// Industries.
    pub industries: Option<Vec<String>>,
    /// Regions.
    pub regions: Option<Vec<String>>,
    /// Territories (the lead is in one of them).
    pub territories: Option<Vec<Uuid>>,
    /// Product groups (the lead's interest or one of its ancestors).
    pub product_groups: Option<Vec<String>>,
    /// Customer groups (the lead's group or one of its ancestors).
    pub customer_groups: Option<Vec<String>>,
    /// Deal size range; a lead without a deal size does not match.
    pub deal_size: Option<DealSizeRange>,
    /// Grades; a lead without a grade does not match.
    pub grades: Option<Vec<Grade>>,
}

/// One assignment rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignmentRule {
    /// Unique id within the set, named in explanations.
    pub id: String,
    /// What the rule is for, for people.
    #[serde(default)]
    pub description: String,
    /// Lower numbers first in [`EvaluationMode::Priority`].
    #[serde(default)]
    pub priority: i32,
    /// When the rule applies.
    #[serde(default)]
    pub when: RuleConditions,
    /// Candidate owners, in order.
    pub targets: Vec<Target>,
    /// How to choose among them.
    pub strategy: Strategy,
    /// Skills every chosen target must have.
    #[serde(default)]
    pub required_skills: Vec<String>,
}

/// A tenant's assignment rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleSet {
    /// How matching rules are ranked.
    #[serde(default)]
    pub mode: EvaluationMode,
    /// The rules.
    pub rules: Vec<AssignmentRule>,
    /// Owner of every lead no rule places.
    pub fallback: Owner,
}

/// At most this many rules in a set.
pub const MAX_RULES: usize = 10_000;

/// Ids that exist, for [`RuleSet::validate_references`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KnownIds {
    /// Users, teams, dealers and partners.
    pub owners: HashSet<Uuid>,
    /// Territories.
    pub territories: HashSet<Uuid>,
}

fn check_list<T>(
    list: &Option<Vec<T>>,
    path: String,
    blank: impl Fn(&T) -> bool,
    errs: &mut Vec<ConfigError>,
) {
    if let Some(values) = list
        && values.iter().all(blank)
    {
        errs.push(ConfigError::new(path, Problem::MatchesNothing));
    }
}

impl RuleSet {
    /// Checks the set on its own: ids present and unique; no condition that matches nothing
    /// (an empty list) or contradicts itself (min deal size above max); every rule with at
    /// least one target, no target twice, weights not all zero for weighted rules; a fallback.
    pub fn validate(&self) -> Result<(), Vec<ConfigError>> {
        let mut errs = Vec::new();
        if self.rules.len() > MAX_RULES {
            errs.push(ConfigError::new(
                "rules",
                Problem::OutOfRange(format!("at most {MAX_RULES} rules")),
            ));
        }
        if self.fallback.id.is_nil() {
            errs.push(ConfigError::new("fallback.id", Problem::Required));
        }
        let mut ids = BTreeSet::new();
        for (i, r) in self.rules.iter().enumerate() {
            let p = format!("rules[{i}]");
            if r.id.trim().is_empty() {
                errs.push(ConfigError::new(format!("{p}.id"), Problem::Required));
            } else if !ids.insert(r.id.as_str()) {
                errs.push(ConfigError::new(
                    format!("{p}.id"),
                    Problem::Duplicate(r.id.clone()),
                ));
            }
            let w = &r.when;
            let blank = |s: &String| s.trim().is_empty();
            check_list(
                &w.industries,
                format!("{p}.when.industries"),
                blank,
                &mut errs,
            );
            check_list(&w.regions, format!("{p}.when.regions"), blank, &mut errs);
            check_list(
                &w.territories,
                format!("{p}.when.territories"),
                |u: &Uuid| u.is_nil(),
                &mut errs,
            );
            check_list(
                &w.product_groups,
                format!("{p}.when.product_groups"),
                blank,
                &mut errs,
            );
            check_list(
                &w.customer_groups,
                format!("{p}.when.customer_groups"),
                blank,
                &mut errs,
            );
            check_list(&w.grades, format!("{p}.when.grades"), |_| false, &mut errs);
            if let Some(DealSizeRange {
                min: Some(a),
                max: Some(b),
                ..
            }) = w.deal_size
                && a > b
            {
                errs.push(ConfigError::new(
                    format!("{p}.when.deal_size"),
                    Problem::Contradiction(format!("min {a} is above max {b}")),
                ));
            }
            if r.targets.is_empty() {
                errs.push(ConfigError::new(
                    format!("{p}.targets"),
                    Problem::ReferencesNothing,
                ));
            }
            let mut seen = HashSet::new();
            for (j, t) in r.targets.iter().enumerate() {
                if t.owner.id.is_nil() {
                    errs.push(ConfigError::new(
                        format!("{p}.targets[{j}].id"),
                        Problem::Required,
                    ));
                } else if !seen.insert(t.owner.id) {
                    errs.push(ConfigError::new(
                        format!("{p}.targets[{j}].id"),
                        Problem::Duplicate(t.owner.id.to_string()),
                    ));
                }
            }
            if r.strategy == Strategy::Weighted
                && !r.targets.is_empty()
                && r.targets.iter().all(|t| t.weight == 0)
            {
                errs.push(ConfigError::new(
                    format!("{p}.targets"),
                    Problem::OutOfRange("weights of a weighted rule must not all be 0".into()),
                ));
            }
            if r.required_skills.iter().any(|s| s.trim().is_empty()) {
                errs.push(ConfigError::new(
                    format!("{p}.required_skills"),
                    Problem::Required,
                ));
            }
        }
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }

    /// Checks that every target, the fallback and every territory exist.
    pub fn validate_references(&self, known: &KnownIds) -> Result<(), Vec<ConfigError>> {
        let mut errs = Vec::new();
        if !known.owners.contains(&self.fallback.id) {
            errs.push(ConfigError::new(
                "fallback.id",
                Problem::UnknownReference(self.fallback.id.to_string()),
            ));
        }
        for (i, r) in self.rules.iter().enumerate() {
            for (j, t) in r.targets.iter().enumerate() {
                if !known.owners.contains(&t.owner.id) {
                    errs.push(ConfigError::new(
                        format!("rules[{i}].targets[{j}].id"),
                        Problem::UnknownReference(t.owner.id.to_string()),
                    ));
                }
            }
            for (j, t) in r.when.territories.iter().flatten().enumerate() {
                if !known.territories.contains(t) {
                    errs.push(ConfigError::new(
                        format!("rules[{i}].when.territories[{j}]"),
                        Problem::UnknownReference(t.to_string()),
                    ));
                }
            }
        }
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }
}

/// A territory the lead lies in, with its depth in the territory tree (roots are 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TerritoryHit {
    /// The territory.
    pub id: Uuid,
    /// Its depth.
    pub depth: u32,
}

/// What assignment reads of a lead. Groups include their ancestors (resolved by the caller).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LeadProfile {
    /// Industry.
    pub industry: String,
    /// Region.
    pub region: String,
    /// Territories the lead lies in.
    pub territories: Vec<TerritoryHit>,
    /// Product groups of interest, with ancestors.
    pub product_groups: Vec<String>,
    /// Customer groups, with ancestors.
    pub customer_groups: Vec<String>,
    /// Expected deal size in minor units.
    pub deal_size: Option<i64>,
    /// The deal size's ISO 4217 currency.
    pub deal_currency: String,
    /// Grade.
    pub grade: Option<Grade>,
    /// Skills the lead needs (a language, a product certification).
    pub skills: Vec<String>,
}

/// A candidate's current status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CandidateStatus {
    /// Deactivated candidates are skipped.
    pub active: bool,
    /// Most open leads at once; `None` is unlimited.
    pub capacity: Option<u32>,
    /// Open leads now.
    pub load: u32,
    /// Skills.
    pub skills: Vec<String>,
}

impl Default for CandidateStatus {
    fn default() -> Self {
        Self {
            active: true,
            capacity: None,
            load: 0,
            skills: Vec::new(),
        }
    }
}

/// The status of every candidate a decision may consider, by id.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Workload {
    /// Status by owner id.
    pub candidates: HashMap<Uuid, CandidateStatus>,
}

/// Round-robin counters by rule id.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RotationState {
    /// Counter by rule id (0 when absent).
    pub counters: BTreeMap<String, u64>,
}

impl RotationState {
    /// Applies a decision's counter update.
    pub fn apply(&mut self, a: &Assignment) {
        if let Some(u) = &a.counter {
            self.counters.insert(u.rule.clone(), u.next);
        }
    }
}

/// A counter change to persist: compare-and-set `previous` → `next`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterUpdate {
    /// The rule.
    pub rule: String,
    /// The value the decision read.
    pub previous: u64,
    /// The value to store.
    pub next: u64,
}

/// Why a candidate was or was not chosen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE", tag = "outcome")]
pub enum CandidateOutcome {
    /// Chosen.
    Chosen,
    /// Eligible, not chosen.
    Eligible,
    /// Not in the workload: status unknown.
    Unknown,
    /// Deactivated.
    Inactive,
    /// At or over capacity.
    OverCapacity {
        /// Open leads.
        load: u32,
        /// Capacity.
        capacity: u32,
    },
    /// Lacks skills.
    MissingSkills {
        /// The skills it lacks.
        missing: Vec<String>,
    },
    /// Weight 0 in a weighted rule.
    ZeroWeight,
}

/// One candidate in an explanation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CandidateNote {
    /// The candidate.
    pub owner: Owner,
    /// What happened to it.
    pub outcome: CandidateOutcome,
}

/// One rule tried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleAttempt {
    /// The rule.
    pub rule: String,
    /// Depth of the territory it matched by, if it has a territory condition.
    pub specificity: Option<u32>,
    /// Its candidates.
    pub candidates: Vec<CandidateNote>,
}

/// Why a lead went where it went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explanation {
    /// Every matching rule, in the order they rank.
    pub matched_rules: Vec<String>,
    /// How they were ranked.
    pub ranking: String,
    /// Rules tried, in order, with their candidates.
    pub tried: Vec<RuleAttempt>,
    /// Why this owner.
    pub reason: String,
}

/// How the owner was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Via {
    /// By a rule.
    Rule,
    /// By the fallback owner.
    Fallback,
    /// By a person (manual reassignment).
    Manual,
}

/// An assignment decision: one owner, always.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// The owner.
    pub owner: Owner,
    /// How it was found.
    pub via: Via,
    /// The rule that placed the lead.
    pub rule: Option<String>,
    /// The round-robin counter change to persist.
    pub counter: Option<CounterUpdate>,
    /// The explanation to store with the decision.
    pub explanation: Explanation,
}

impl Assignment {
    /// A manual reassignment by `by`, with the reason they gave.
    pub fn manual(owner: Owner, by: Uuid, reason: &str) -> Self {
        Self {
            owner,
            via: Via::Manual,
            rule: None,
            counter: None,
            explanation: Explanation {
                matched_rules: Vec::new(),
                ranking: String::new(),
                tried: Vec::new(),
                reason: format!("reassigned manually by {by}: {}", reason.trim()),
            },
        }
    }
}

#[cfg(test)]
mod tests;
