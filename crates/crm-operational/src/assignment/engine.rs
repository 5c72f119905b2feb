//! The compiled rule set and the decision.

use super::{
    Assignment, CandidateNote, CandidateOutcome, CounterUpdate, EvaluationMode, Explanation,
    LeadProfile, Owner, RotationState, RuleAttempt, RuleSet, Strategy, Target, Via, Workload,
};
use crate::error::ConfigError;
use crate::grading::Grade;
use std::collections::HashMap;
use uuid::Uuid;

/// The list dimensions a rule may be indexed by.
const INDUSTRY: usize = 0;
const REGION: usize = 1;
const TERRITORY: usize = 2;
const PRODUCT: usize = 3;
const CUSTOMER: usize = 4;
const DIMS: usize = 5;

fn norm(s: &str) -> String {
    s.trim().to_lowercase()
}

fn grade_bit(g: Grade) -> u8 {
    match g {
        Grade::Hot => 1,
        Grade::Warm => 2,
        Grade::Cold => 4,
        Grade::LongTerm => 8,
    }
}

#[derive(Debug, Clone)]
struct CompiledRule {
    id: String,
    /// Position in the ranking without specificity: list order, or (priority, id) order.
    rank: u32,
    /// Sorted interned values per dimension; `None` matches anything.
    lists: [Option<Vec<u32>>; DIMS],
    deal: Option<(i64, i64, String)>,
    grades: Option<u8>,
    targets: Vec<Target>,
    strategy: Strategy,
    skills: Vec<String>,
}

/// A validated rule set, indexed for fast decisions. Build once per rule-set version.
#[derive(Debug, Clone)]
pub struct CompiledRuleSet {
    mode: EvaluationMode,
    fallback: Owner,
    rules: Vec<CompiledRule>,
    strings: [HashMap<String, u32>; DIMS],
    territories: HashMap<Uuid, u32>,
    index: HashMap<u64, Vec<u32>>,
    unindexed: Vec<u32>,
}

fn key(dim: usize, value: u32) -> u64 {
    (u64::try_from(dim).unwrap_or(0) << 32) | u64::from(value)
}

/// The lead's values, interned. Unknown values are left out: no rule names them.
struct LeadKeys {
    single: [Option<u32>; 2],
    territories: Vec<(u32, u32)>,
    products: Vec<u32>,
    customers: Vec<u32>,
}

impl CompiledRuleSet {
    /// Validates and compiles a rule set.
    pub fn compile(set: &RuleSet) -> Result<Self, Vec<ConfigError>> {
        set.validate()?;
        let mut strings: [HashMap<String, u32>; DIMS] = Default::default();
        let mut territories: HashMap<Uuid, u32> = HashMap::new();
        fn intern(dim: usize, v: &str, strings: &mut [HashMap<String, u32>; DIMS]) -> u32 {
            let Some(map) = strings.get_mut(dim) else {
                return 0;
            };
            let next = u32::try_from(map.len()).unwrap_or(u32::MAX);
            *map.entry(norm(v)).or_insert(next)
        }
        // Ranking without specificity.
        let mut order: Vec<usize> = (0..set.rules.len()).collect();
        if set.mode == EvaluationMode::Priority {
            order.sort_by(|&a, &b| {
                let (ra, rb) = (&set.rules[a], &set.rules[b]);
                ra.priority
                    .cmp(&rb.priority)
                    .then_with(|| ra.id.cmp(&rb.id))
            });
        }
        let mut rank = vec![0u32; set.rules.len()];
        for (pos, &i) in order.iter().enumerate() {
            if let Some(r) = rank.get_mut(i) {
                *r = u32::try_from(pos).unwrap_or(u32::MAX);
            }
        }
        let mut rules = Vec::with_capacity(set.rules.len());
        for (i, r) in set.rules.iter().enumerate() {
            let w = &r.when;
            let mut lists: [Option<Vec<u32>>; DIMS] = Default::default();
            let strs = [
                (INDUSTRY, &w.industries),
                (REGION, &w.regions),
                (PRODUCT, &w.product_groups),
                (CUSTOMER, &w.customer_groups),
            ];
            for (dim, values) in strs {
                if let Some(values) = values {
                    let mut ids: Vec<u32> = values
                        .iter()
                        .filter(|v| !v.trim().is_empty())
                        .map(|v| intern(dim, v, &mut strings))
                        .collect();
                    ids.sort_unstable();
                    ids.dedup();
                    if let Some(slot) = lists.get_mut(dim) {
                        *slot = Some(ids);
                    }
                }
            }
            if let Some(ts) = &w.territories {
                let mut ids: Vec<u32> = ts
                    .iter()
                    .filter(|t| !t.is_nil())
                    .map(|t| {
                        let next = u32::try_from(territories.len()).unwrap_or(u32::MAX);
                        *territories.entry(*t).or_insert(next)
                    })
                    .collect();
                ids.sort_unstable();
                ids.dedup();
                lists[TERRITORY] = Some(ids);
            }
            rules.push(CompiledRule {
                id: r.id.clone(),
                rank: rank.get(i).copied().unwrap_or(u32::MAX),
                lists,
                deal: w.deal_size.as_ref().map(|d| {
                    (
                        d.min.unwrap_or(i64::MIN),
                        d.max.unwrap_or(i64::MAX),
                        d.currency.trim().to_ascii_uppercase(),
                    )
                }),
                grades: w
                    .grades
                    .as_ref()
                    .map(|gs| gs.iter().fold(0u8, |m, g| m | grade_bit(*g))),
                targets: r.targets.clone(),
                strategy: r.strategy,
                skills: r.required_skills.iter().map(|s| norm(s)).collect(),
            });
        }
        // Index every rule under its most selective list condition.
        let mut index: HashMap<u64, Vec<u32>> = HashMap::new();
        let mut unindexed = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            let ri = u32::try_from(i).unwrap_or(u32::MAX);
            let best = r
                .lists
                .iter()
                .enumerate()
                .filter_map(|(d, l)| l.as_ref().map(|l| (l.len(), d, l)))
                .min_by_key(|(n, d, _)| (*n, *d));
            match best {
                Some((_, dim, values)) => {
                    for v in values {
                        index.entry(key(dim, *v)).or_default().push(ri);
                    }
                }
                None => unindexed.push(ri),
            }
        }
        Ok(Self {
            mode: set.mode,
            fallback: set.fallback,
            rules,
            strings,
            territories,
            index,
            unindexed,
        })
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// No rules (every lead goes to the fallback).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    fn lookup(&self, dim: usize, v: &str) -> Option<u32> {
        if v.trim().is_empty() {
            return None;
        }
        let map = self.strings.get(dim)?;
        // Most values are already in normal form: avoid the allocation then.
        map.get(v).or_else(|| map.get(&norm(v))).copied()
    }

    fn lead_keys(&self, lead: &LeadProfile) -> LeadKeys {
        let many = |dim: usize, vs: &[String]| -> Vec<u32> {
            let mut out: Vec<u32> = vs.iter().filter_map(|v| self.lookup(dim, v)).collect();
            out.sort_unstable();
            out.dedup();
            out
        };
        LeadKeys {
            single: [
                self.lookup(INDUSTRY, &lead.industry),
                self.lookup(REGION, &lead.region),
            ],
            territories: lead
                .territories
                .iter()
                .filter_map(|t| self.territories.get(&t.id).map(|id| (*id, t.depth)))
                .collect(),
            products: many(PRODUCT, &lead.product_groups),
            customers: many(CUSTOMER, &lead.customer_groups),
        }
    }

    /// Does the rule match? `Some(specificity)` if so (the deepest territory matched, or
    /// `None` inside when the rule has no territory condition).
    fn matches(r: &CompiledRule, k: &LeadKeys, lead: &LeadProfile) -> Option<Option<u32>> {
        let has = |list: &Option<Vec<u32>>, values: &[u32]| match list {
            None => true,
            Some(l) => values.iter().any(|v| l.binary_search(v).is_ok()),
        };
        for (dim, v) in [(INDUSTRY, k.single[0]), (REGION, k.single[1])] {
            if let Some(Some(l)) = r.lists.get(dim)
                && v.is_none_or(|v| l.binary_search(&v).is_err())
            {
                return None;
            }
        }
        if !has(&r.lists[PRODUCT], &k.products) || !has(&r.lists[CUSTOMER], &k.customers) {
            return None;
        }
        if let Some((min, max, currency)) = &r.deal
            && (lead.deal_size.is_none_or(|d| d < *min || d > *max)
                || (!currency.is_empty() && !lead.deal_currency.eq_ignore_ascii_case(currency)))
        {
            return None;
        }
        if let Some(mask) = r.grades
            && lead.grade.is_none_or(|g| mask & grade_bit(g) == 0)
        {
            return None;
        }
        match &r.lists[TERRITORY] {
            None => Some(None),
            Some(l) => k
                .territories
                .iter()
                .filter(|(id, _)| l.binary_search(id).is_ok())
                .map(|(_, depth)| *depth)
                .max()
                .map(Some),
        }
    }

    /// Decides the owner of a lead. Pure: the same inputs give the same assignment.
    pub fn decide(
        &self,
        lead: &LeadProfile,
        workload: &Workload,
        rotation: &RotationState,
    ) -> Assignment {
        let k = self.lead_keys(lead);
        let mut candidates: Vec<u32> = self.unindexed.clone();
        let mut look = |dim: usize, v: u32| {
            if let Some(rs) = self.index.get(&key(dim, v)) {
                candidates.extend_from_slice(rs);
            }
        };
        if let Some(v) = k.single[0] {
            look(INDUSTRY, v);
        }
        if let Some(v) = k.single[1] {
            look(REGION, v);
        }
        for (v, _) in &k.territories {
            look(TERRITORY, *v);
        }
        for v in &k.products {
            look(PRODUCT, *v);
        }
        for v in &k.customers {
            look(CUSTOMER, *v);
        }
        candidates.sort_unstable();
        candidates.dedup();

        // (specificity desc, rank asc) in priority mode; rank only when ordered.
        let mut matched: Vec<(i64, u32, usize, Option<u32>)> = candidates
            .iter()
            .filter_map(|&ri| {
                let i = usize::try_from(ri).ok()?;
                let r = self.rules.get(i)?;
                let spec = Self::matches(r, &k, lead)?;
                let s = match self.mode {
                    EvaluationMode::Ordered => 0,
                    EvaluationMode::Priority => spec.map_or(-1, i64::from),
                };
                Some((-s, r.rank, i, spec))
            })
            .collect();
        matched.sort_unstable();

        let ranking = match self.mode {
            EvaluationMode::Ordered => "first matching rule in list order",
            EvaluationMode::Priority => {
                "deepest matched territory first (rules without territory last), then lower priority number, then rule id"
            }
        };
        let mut explanation = Explanation {
            matched_rules: matched
                .iter()
                .filter_map(|m| self.rules.get(m.2).map(|r| r.id.clone()))
                .collect(),
            ranking: ranking.to_owned(),
            tried: Vec::new(),
            reason: String::new(),
        };
        for &(_, _, i, spec) in &matched {
            let Some(rule) = self.rules.get(i) else {
                continue;
            };
            let (notes, chosen, counter, reason) = choose(rule, lead, workload, rotation);
            explanation.tried.push(RuleAttempt {
                rule: rule.id.clone(),
                specificity: spec,
                candidates: notes,
            });
            if let Some(owner) = chosen {
                explanation.reason = format!("rule {}: {reason}", rule.id);
                return Assignment {
                    owner,
                    via: Via::Rule,
                    rule: Some(rule.id.clone()),
                    counter,
                    explanation,
                };
            }
        }
        explanation.reason = if matched.is_empty() {
            "no rule matched: fallback owner".to_owned()
        } else {
            "no matching rule had an eligible candidate: fallback owner".to_owned()
        };
        Assignment {
            owner: self.fallback,
            via: Via::Fallback,
            rule: None,
            counter: None,
            explanation,
        }
    }
}

type Choice = (
    Vec<CandidateNote>,
    Option<Owner>,
    Option<CounterUpdate>,
    String,
);

/// Checks every target of a rule and picks one by the rule's strategy.
fn choose(
    rule: &CompiledRule,
    lead: &LeadProfile,
    workload: &Workload,
    rotation: &RotationState,
) -> Choice {
    let mut required: Vec<String> = rule.skills.clone();
    if rule.strategy == Strategy::BySkill {
        for s in &lead.skills {
            let s = norm(s);
            if !s.is_empty() && !required.contains(&s) {
                required.push(s);
            }
        }
    }
    let mut notes: Vec<CandidateNote> = Vec::with_capacity(rule.targets.len());
    // (target position, load, free capacity) of eligible targets.
    let mut eligible: Vec<(usize, u32, u32)> = Vec::new();
    for (pos, t) in rule.targets.iter().enumerate() {
        let outcome = match workload.candidates.get(&t.owner.id) {
            None => CandidateOutcome::Unknown,
            Some(c) if !c.active => CandidateOutcome::Inactive,
            Some(c) if c.capacity.is_some_and(|cap| c.load >= cap) => {
                CandidateOutcome::OverCapacity {
                    load: c.load,
                    capacity: c.capacity.unwrap_or(0),
                }
            }
            Some(c) => {
                let missing: Vec<String> = required
                    .iter()
                    .filter(|s| !c.skills.iter().any(|have| norm(have) == **s))
                    .cloned()
                    .collect();
                if !missing.is_empty() {
                    CandidateOutcome::MissingSkills { missing }
                } else if rule.strategy == Strategy::Weighted && t.weight == 0 {
                    CandidateOutcome::ZeroWeight
                } else {
                    let free = c
                        .capacity
                        .map_or(u32::MAX, |cap| cap.saturating_sub(c.load));
                    eligible.push((pos, c.load, free));
                    CandidateOutcome::Eligible
                }
            }
        };
        notes.push(CandidateNote {
            owner: t.owner,
            outcome,
        });
    }
    let counter = rotation.counters.get(&rule.id).copied().unwrap_or(0);
    let picked: Option<(usize, Option<u64>, String)> = match rule.strategy {
        // Turn `counter` among the targets eligible now, in target order: every eligible
        // target gets one lead in each round however the others come and go.
        Strategy::RoundRobin => {
            let m = u64::try_from(eligible.len()).unwrap_or(1).max(1);
            let at = usize::try_from(counter % m).unwrap_or(0);
            eligible.get(at).map(|e| {
                (
                    e.0,
                    Some(counter.wrapping_add(1)),
                    format!(
                        "round-robin: turn {counter} among {} eligible targets is target {}",
                        eligible.len(),
                        e.0
                    ),
                )
            })
        }
        Strategy::Weighted => {
            let total: u64 = eligible
                .iter()
                .map(|e| u64::from(rule.targets.get(e.0).map_or(0, |t| t.weight)))
                .sum();
            if total == 0 {
                None
            } else {
                let mut at = counter % total;
                eligible.iter().find_map(|e| {
                    let w = u64::from(rule.targets.get(e.0).map_or(0, |t| t.weight));
                    if at < w {
                        Some((
                            e.0,
                            Some(counter.wrapping_add(1)),
                            format!("weighted round-robin: counter {counter} falls in target {}'s share ({w} of {total})", e.0),
                        ))
                    } else {
                        at -= w;
                        None
                    }
                })
            }
        }
        Strategy::LeastLoaded | Strategy::BySkill => eligible
            .iter()
            .min_by_key(|(pos, load, free)| (*load, std::cmp::Reverse(*free), *pos))
            .map(|(pos, load, _)| {
                let what = if rule.strategy == Strategy::BySkill {
                    "has the skills and the least open work"
                } else {
                    "least open work"
                };
                (*pos, None, format!("{what}: {load} open leads"))
            }),
    };
    match picked {
        Some((pos, next, reason)) => {
            if let Some(note) = notes.get_mut(pos) {
                note.outcome = CandidateOutcome::Chosen;
            }
            let owner = rule.targets.get(pos).map(|t| t.owner);
            let update = next.map(|next| CounterUpdate {
                rule: rule.id.clone(),
                previous: counter,
                next,
            });
            (notes, owner, update, reason)
        }
        None => (notes, None, None, String::new()),
    }
}
