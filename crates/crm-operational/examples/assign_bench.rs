//! Micro benchmark of one assignment decision over a rule set of 1,000 rules.
//!
//! `cargo run --release -p crm-operational --example assign_bench` prints nanoseconds per
//! decision. The rules mix industry, region, territory, product-group, customer-group,
//! deal-size and grade conditions; 50 targets with capacities; the leads vary.

use crm_operational::assignment::{
    AssignmentRule, CandidateStatus, CompiledRuleSet, DealSizeRange, EvaluationMode, LeadProfile,
    Owner, RotationState, RuleConditions, RuleSet, Strategy, Target, TargetKind, TerritoryHit,
    Workload,
};
use crm_operational::grading::Grade;
use std::hint::black_box;
use std::time::Instant;
use uuid::Uuid;

const RULES: usize = 1_000;
const USERS: u128 = 50;
const INDUSTRIES: usize = 40;
const REGIONS: usize = 30;
const TERRITORIES: u128 = 200;

fn user(n: u128) -> Target {
    Target {
        owner: Owner {
            id: Uuid::from_u128(1 + n % USERS),
            kind: TargetKind::User,
        },
        weight: 1 + u32::try_from(n % 3).unwrap_or(0),
    }
}

fn rule_set() -> RuleSet {
    let strategies = [
        Strategy::RoundRobin,
        Strategy::Weighted,
        Strategy::LeastLoaded,
        Strategy::BySkill,
    ];
    let rules = (0..RULES)
        .map(|i| {
            let n = i as u128;
            let mut when = RuleConditions::default();
            match i % 5 {
                0 => when.industries = Some(vec![format!("industry-{}", i % INDUSTRIES)]),
                1 => {
                    when.regions = Some(vec![
                        format!("region-{}", i % REGIONS),
                        format!("region-{}", (i + 7) % REGIONS),
                    ])
                }
                2 => when.territories = Some(vec![Uuid::from_u128(10_000 + n % TERRITORIES)]),
                3 => {
                    when.product_groups = Some(vec![format!("product-{}", i % 25)]);
                    when.industries = Some(vec![
                        format!("industry-{}", i % INDUSTRIES),
                        format!("industry-{}", (i + 1) % INDUSTRIES),
                    ]);
                }
                _ => when.customer_groups = Some(vec![format!("customer-{}", i % 20)]),
            }
            if i % 3 == 0 {
                when.deal_size = Some(DealSizeRange {
                    currency: "EUR".into(),
                    min: Some(10_000),
                    max: Some(10_000_000),
                });
            }
            if i % 7 == 0 {
                when.grades = Some(vec![Grade::Hot, Grade::Warm]);
            }
            AssignmentRule {
                id: format!("rule-{i:04}"),
                description: String::new(),
                priority: i32::try_from(i % 17).unwrap_or(0),
                when,
                targets: (0..5).map(|k| user(n * 5 + k)).collect(),
                strategy: strategies[i % strategies.len()],
                required_skills: Vec::new(),
            }
        })
        .collect();
    RuleSet {
        mode: EvaluationMode::Priority,
        rules,
        fallback: Owner {
            id: Uuid::from_u128(9_999),
            kind: TargetKind::RegionalManager,
        },
    }
}

fn leads() -> Vec<LeadProfile> {
    (0..256usize)
        .map(|i| LeadProfile {
            industry: format!("industry-{}", i % INDUSTRIES),
            region: format!("region-{}", (i * 7) % REGIONS),
            territories: vec![
                TerritoryHit {
                    id: Uuid::from_u128(10_000 + (i as u128 * 3) % TERRITORIES),
                    depth: 0,
                },
                TerritoryHit {
                    id: Uuid::from_u128(10_000 + (i as u128 * 11) % TERRITORIES),
                    depth: 2,
                },
            ],
            product_groups: vec![format!("product-{}", i % 25), "product-root".into()],
            customer_groups: vec![format!("customer-{}", i % 20)],
            deal_size: Some(50_000 + i as i64 * 1_000),
            deal_currency: "EUR".into(),
            grade: Some(if i % 2 == 0 { Grade::Hot } else { Grade::Cold }),
            skills: vec!["german".into()],
        })
        .collect()
}

fn main() {
    let compiled = match CompiledRuleSet::compile(&rule_set()) {
        Ok(c) => c,
        Err(errs) => {
            eprintln!("invalid rule set: {errs:?}");
            std::process::exit(1);
        }
    };
    let workload = Workload {
        candidates: (1..=USERS)
            .map(|n| {
                (
                    Uuid::from_u128(n),
                    CandidateStatus {
                        active: n % 13 != 0,
                        capacity: Some(u32::try_from(20 + n % 30).unwrap_or(20)),
                        load: u32::try_from(n % 25).unwrap_or(0),
                        skills: if n % 2 == 0 {
                            vec!["german".into()]
                        } else {
                            Vec::new()
                        },
                    },
                )
            })
            .collect(),
    };
    let leads = leads();
    let mut rotation = RotationState::default();
    // Warm up, and count how many decisions a rule (not the fallback) made.
    let mut by_rule = 0usize;
    for lead in &leads {
        let a = compiled.decide(lead, &workload, &rotation);
        by_rule += usize::from(a.rule.is_some());
        rotation.apply(&a);
    }
    let rounds = 400usize;
    let start = Instant::now();
    for _ in 0..rounds {
        for lead in &leads {
            let a = compiled.decide(black_box(lead), black_box(&workload), black_box(&rotation));
            black_box(&a);
        }
    }
    let elapsed = start.elapsed();
    let decisions = rounds * leads.len();
    let ns = elapsed.as_nanos() as f64 / decisions as f64;
    println!(
        "{} rules, {decisions} decisions: {ns:.0} ns/decision ({:.2} µs); {by_rule} of {} leads placed by a rule",
        compiled.len(),
        ns / 1000.0,
        leads.len()
    );
}
