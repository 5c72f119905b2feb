use super::*;
use proptest::prelude::{prop, prop_assert, prop_assert_eq, proptest};
use proptest::strategy::Strategy as Gen;

fn uid(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

fn user(n: u128) -> Target {
    Target {
        owner: Owner {
            id: uid(n),
            kind: TargetKind::User,
        },
        weight: 1,
    }
}

fn rule(
    id: &str,
    priority: i32,
    when: RuleConditions,
    targets: Vec<Target>,
    strategy: Strategy,
) -> AssignmentRule {
    AssignmentRule {
        id: id.into(),
        description: String::new(),
        priority,
        when,
        targets,
        strategy,
        required_skills: Vec::new(),
    }
}

const FALLBACK: Owner = Owner {
    id: Uuid::from_u128(999),
    kind: TargetKind::RegionalManager,
};

fn workload(ids: &[u128]) -> Workload {
    Workload {
        candidates: ids
            .iter()
            .map(|&n| (uid(n), CandidateStatus::default()))
            .collect(),
    }
}

fn compile(set: &RuleSet) -> CompiledRuleSet {
    match CompiledRuleSet::compile(set) {
        Ok(c) => c,
        Err(e) => unreachable!("{e:?}"),
    }
}

fn territory_set() -> RuleSet {
    RuleSet {
        mode: EvaluationMode::Priority,
        fallback: FALLBACK,
        rules: vec![
            rule(
                "europe",
                1,
                RuleConditions {
                    territories: Some(vec![uid(100)]),
                    ..Default::default()
                },
                vec![user(1)],
                Strategy::RoundRobin,
            ),
            rule(
                "germany",
                5,
                RuleConditions {
                    territories: Some(vec![uid(101)]),
                    ..Default::default()
                },
                vec![user(2)],
                Strategy::RoundRobin,
            ),
            rule(
                "manufacturing",
                0,
                RuleConditions {
                    industries: Some(vec!["Manufacturing".into()]),
                    ..Default::default()
                },
                vec![user(3)],
                Strategy::RoundRobin,
            ),
        ],
    }
}

#[test]
fn overlapping_territories_take_the_deepest_then_priority() {
    let c = compile(&territory_set());
    let lead = LeadProfile {
        industry: "manufacturing".into(),
        territories: vec![
            TerritoryHit {
                id: uid(100),
                depth: 0,
            },
            TerritoryHit {
                id: uid(101),
                depth: 1,
            },
        ],
        ..Default::default()
    };
    let a = c.decide(&lead, &workload(&[1, 2, 3]), &RotationState::default());
    assert_eq!(a.owner.id, uid(2));
    assert_eq!(a.rule.as_deref(), Some("germany"));
    assert_eq!(
        a.explanation.matched_rules,
        vec!["germany", "europe", "manufacturing"]
    );

    // The deepest rule's only candidate is deactivated: the next rule in rank takes it.
    let mut w = workload(&[1, 2, 3]);
    if let Some(c2) = w.candidates.get_mut(&uid(2)) {
        c2.active = false;
    }
    let a = c.decide(&lead, &w, &RotationState::default());
    assert_eq!(a.owner.id, uid(1));
    assert_eq!(a.explanation.tried.len(), 2);
    assert_eq!(
        a.explanation
            .tried
            .first()
            .and_then(|t| t.candidates.first())
            .map(|n| n.outcome.clone()),
        Some(CandidateOutcome::Inactive)
    );

    // Ordered mode: list order wins.
    let mut set = territory_set();
    set.mode = EvaluationMode::Ordered;
    let a = compile(&set).decide(&lead, &workload(&[1, 2, 3]), &RotationState::default());
    assert_eq!(a.rule.as_deref(), Some("europe"));
}

#[test]
fn no_match_goes_to_the_fallback() {
    let c = compile(&territory_set());
    let a = c.decide(
        &LeadProfile::default(),
        &workload(&[1, 2, 3]),
        &RotationState::default(),
    );
    assert_eq!(a.owner, FALLBACK);
    assert_eq!(a.via, Via::Fallback);
    assert!(a.explanation.reason.contains("no rule matched"));
}

#[test]
fn strategies() {
    let targets = vec![user(1), user(2), user(3)];
    let mk = |s: Strategy, targets: Vec<Target>| RuleSet {
        mode: EvaluationMode::Priority,
        fallback: FALLBACK,
        rules: vec![rule("all", 0, RuleConditions::default(), targets, s)],
    };
    let lead = LeadProfile::default();

    // Round-robin in turn, skipping the one over capacity.
    let c = compile(&mk(Strategy::RoundRobin, targets.clone()));
    let mut w = workload(&[1, 2, 3]);
    if let Some(s) = w.candidates.get_mut(&uid(2)) {
        s.capacity = Some(1);
        s.load = 1;
    }
    let mut rot = RotationState::default();
    let mut got = Vec::new();
    for _ in 0..4 {
        let a = c.decide(&lead, &w, &rot);
        rot.apply(&a);
        got.push(a.owner.id);
    }
    assert_eq!(got, vec![uid(1), uid(3), uid(1), uid(3)]);

    // Weighted 3:1.
    let mut weighted = targets.clone();
    if let Some(t) = weighted.get_mut(0) {
        t.weight = 3;
    }
    if let Some(t) = weighted.get_mut(2) {
        t.weight = 0;
    }
    let c = compile(&mk(Strategy::Weighted, weighted));
    let mut rot = RotationState::default();
    let mut counts = HashMap::new();
    for _ in 0..40 {
        let a = c.decide(&lead, &workload(&[1, 2, 3]), &rot);
        rot.apply(&a);
        *counts.entry(a.owner.id).or_insert(0) += 1;
    }
    assert_eq!(counts.get(&uid(1)), Some(&30));
    assert_eq!(counts.get(&uid(2)), Some(&10));
    assert_eq!(counts.get(&uid(3)), None);

    // Least loaded, ties by free capacity.
    let c = compile(&mk(Strategy::LeastLoaded, targets.clone()));
    let mut w = workload(&[1, 2, 3]);
    for (n, load, cap) in [(1, 5, 10), (2, 2, 10), (3, 2, 20)] {
        if let Some(s) = w.candidates.get_mut(&uid(n)) {
            s.load = load;
            s.capacity = Some(cap);
        }
    }
    assert_eq!(
        c.decide(&lead, &w, &RotationState::default()).owner.id,
        uid(3)
    );

    // By skill: only the one speaking Japanese.
    let c = compile(&mk(Strategy::BySkill, targets));
    let mut w = workload(&[1, 2, 3]);
    if let Some(s) = w.candidates.get_mut(&uid(1)) {
        s.skills = vec!["Japanese".into()];
        s.load = 9;
    }
    let lead = LeadProfile {
        skills: vec!["japanese".into()],
        ..Default::default()
    };
    let a = c.decide(&lead, &w, &RotationState::default());
    assert_eq!(a.owner.id, uid(1));
    assert!(matches!(
        a.explanation
            .tried
            .first()
            .and_then(|t| t.candidates.get(1))
            .map(|n| &n.outcome),
        Some(CandidateOutcome::MissingSkills { .. })
    ));
}

#[test]
fn conditions_on_groups_deal_size_and_grade() {
    let set = RuleSet {
        mode: EvaluationMode::Priority,
        fallback: FALLBACK,
        rules: vec![rule(
            "big-hot-retail",
            0,
            RuleConditions {
                customer_groups: Some(vec!["retail".into()]),
                product_groups: Some(vec!["machines".into()]),
                deal_size: Some(DealSizeRange {
                    currency: String::new(),
                    min: Some(100_000),
                    max: None,
                }),
                grades: Some(vec![Grade::Hot, Grade::Warm]),
                regions: Some(vec!["DE".into()]),
                ..Default::default()
            },
            vec![Target {
                owner: Owner {
                    id: uid(7),
                    kind: TargetKind::Dealer,
                },
                weight: 1,
            }],
            Strategy::LeastLoaded,
        )],
    };
    let c = compile(&set);
    let w = workload(&[7]);
    let mut lead = LeadProfile {
        region: "de".into(),
        customer_groups: vec!["retail/food".into(), "Retail".into()],
        product_groups: vec!["machines".into()],
        deal_size: Some(250_000),
        grade: Some(Grade::Warm),
        ..Default::default()
    };
    assert_eq!(
        c.decide(&lead, &w, &RotationState::default()).owner.id,
        uid(7)
    );
    lead.grade = Some(Grade::Cold);
    assert_eq!(
        c.decide(&lead, &w, &RotationState::default()).owner,
        FALLBACK
    );
    lead.grade = Some(Grade::Hot);
    lead.deal_size = None;
    assert_eq!(
        c.decide(&lead, &w, &RotationState::default()).owner,
        FALLBACK
    );
}

#[test]
fn bad_rule_sets_name_the_field() {
    let set = RuleSet {
        mode: EvaluationMode::Priority,
        fallback: Owner {
            id: Uuid::nil(),
            kind: TargetKind::User,
        },
        rules: vec![
            rule(
                "a",
                0,
                RuleConditions {
                    deal_size: Some(DealSizeRange {
                        currency: String::new(),
                        min: Some(10),
                        max: Some(5),
                    }),
                    industries: Some(vec![]),
                    ..Default::default()
                },
                vec![],
                Strategy::RoundRobin,
            ),
            rule(
                "a",
                0,
                RuleConditions::default(),
                vec![user(1), user(1)],
                Strategy::RoundRobin,
            ),
            rule(
                "w",
                0,
                RuleConditions::default(),
                vec![Target {
                    weight: 0,
                    ..user(2)
                }],
                Strategy::Weighted,
            ),
        ],
    };
    let errs = CompiledRuleSet::compile(&set).err().unwrap_or_default();
    let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        vec![
            "fallback.id",
            "rules[0].when.industries",
            "rules[0].when.deal_size",
            "rules[0].targets",
            "rules[1].id",
            "rules[1].targets[1].id",
            "rules[2].targets",
        ]
    );
    let known = KnownIds {
        owners: [uid(1)].into_iter().collect(),
        territories: HashSet::new(),
    };
    let refs = territory_set()
        .validate_references(&known)
        .err()
        .unwrap_or_default();
    let fields: Vec<&str> = refs.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        vec![
            "fallback.id",
            "rules[0].when.territories[0]",
            "rules[1].targets[0].id",
            "rules[1].when.territories[0]",
            "rules[2].targets[0].id",
        ]
    );
}

#[test]
fn rule_sets_round_trip_as_json() {
    let set = territory_set();
    let json = serde_json::to_string(&set).unwrap_or_default();
    let back: Option<RuleSet> = serde_json::from_str(&json).ok();
    assert_eq!(back, Some(set));
    let a = Assignment::manual(FALLBACK, uid(5), " covering a holiday ");
    assert_eq!(a.via, Via::Manual);
    assert!(a.explanation.reason.ends_with("covering a holiday"));
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

const INDUSTRIES: &[&str] = &["a", "b", "c"];
const REGIONS: &[&str] = &["x", "y"];

fn arb_conditions() -> impl Gen<Value = RuleConditions> {
    (
        prop::option::of(prop::sample::subsequence(INDUSTRIES.to_vec(), 1..=2)),
        prop::option::of(prop::sample::subsequence(REGIONS.to_vec(), 1..=2)),
        prop::option::of(prop::sample::subsequence(vec![100u128, 101, 102], 1..=2)),
        prop::option::of((0i64..50, 50i64..100)),
    )
        .prop_map(|(ind, reg, ter, deal)| RuleConditions {
            industries: ind.map(|v| v.into_iter().map(String::from).collect()),
            regions: reg.map(|v| v.into_iter().map(String::from).collect()),
            territories: ter.map(|v| v.into_iter().map(uid).collect()),
            deal_size: deal.map(|(min, max)| DealSizeRange {
                currency: String::new(),
                min: Some(min),
                max: Some(max),
            }),
            ..Default::default()
        })
}

fn arb_rule_set() -> impl Gen<Value = RuleSet> {
    let strategy = prop::sample::select(vec![
        Strategy::RoundRobin,
        Strategy::Weighted,
        Strategy::LeastLoaded,
        Strategy::BySkill,
    ]);
    let r = (
        arb_conditions(),
        prop::sample::subsequence(vec![1u128, 2, 3, 4, 5, 6], 1..=4),
        strategy,
        -3i32..3,
        1u32..4,
    );
    (prop::collection::vec(r, 0..12), prop::bool::ANY).prop_map(|(rules, ordered)| RuleSet {
        mode: if ordered {
            EvaluationMode::Ordered
        } else {
            EvaluationMode::Priority
        },
        fallback: FALLBACK,
        rules: rules
            .into_iter()
            .enumerate()
            .map(
                |(i, (when, ts, strategy, priority, weight))| AssignmentRule {
                    id: format!("r{i}"),
                    description: String::new(),
                    priority,
                    when,
                    targets: ts
                        .into_iter()
                        .map(|n| Target { weight, ..user(n) })
                        .collect(),
                    strategy,
                    required_skills: Vec::new(),
                },
            )
            .collect(),
    })
}

fn arb_lead() -> impl Gen<Value = LeadProfile> {
    (
        prop::sample::select(vec!["a", "b", "c", "z", ""]),
        prop::sample::select(vec!["x", "y", ""]),
        prop::sample::subsequence(vec![(100u128, 0u32), (101, 1), (102, 2)], 0..=3),
        prop::option::of(0i64..120),
        prop::sample::subsequence(vec!["go", "rust"], 0..=2),
    )
        .prop_map(|(i, r, ts, deal, skills)| LeadProfile {
            industry: i.into(),
            region: r.into(),
            territories: ts
                .into_iter()
                .map(|(t, depth)| TerritoryHit { id: uid(t), depth })
                .collect(),
            deal_size: deal,
            skills: skills.into_iter().map(String::from).collect(),
            ..Default::default()
        })
}

fn arb_workload() -> impl Gen<Value = Workload> {
    prop::collection::vec(
        (
            prop::bool::weighted(0.85),
            prop::option::of(0u32..4),
            0u32..3,
            prop::sample::subsequence(vec!["go", "rust"], 0..=2),
        ),
        6,
    )
    .prop_map(|cs| Workload {
        candidates: cs
            .into_iter()
            .enumerate()
            .map(|(i, (active, capacity, load, skills))| {
                (
                    uid(u128::try_from(i).unwrap_or(0) + 1),
                    CandidateStatus {
                        active,
                        capacity,
                        load: capacity.map_or(load, |c| load.min(c)),
                        skills: skills.into_iter().map(String::from).collect(),
                    },
                )
            })
            .collect(),
    })
}

proptest! {
    #[test]
    fn every_lead_gets_exactly_one_eligible_owner(set in arb_rule_set(), lead in arb_lead(), w in arb_workload()) {
        let c = compile(&set);
        let a = c.decide(&lead, &w, &RotationState::default());
        match a.via {
            Via::Fallback => prop_assert_eq!(a.owner, FALLBACK),
            _ => {
                let rule = set.rules.iter().find(|r| Some(&r.id) == a.rule.as_ref());
                prop_assert!(rule.is_some_and(|r| r.targets.iter().any(|t| t.owner == a.owner)));
                let s = w.candidates.get(&a.owner.id);
                prop_assert!(s.is_some_and(|s| s.active && s.capacity.is_none_or(|cap| s.load < cap)));
                let chosen = a.explanation.tried.iter().flat_map(|t| &t.candidates)
                    .filter(|n| n.outcome == CandidateOutcome::Chosen).count();
                prop_assert_eq!(chosen, 1);
            }
        }
    }

    #[test]
    fn capacity_is_never_exceeded(set in arb_rule_set(), leads in prop::collection::vec(arb_lead(), 1..40), mut w in arb_workload()) {
        let c = compile(&set);
        let mut rot = RotationState::default();
        for lead in &leads {
            let a = c.decide(lead, &w, &rot);
            rot.apply(&a);
            if a.via == Via::Rule
                && let Some(s) = w.candidates.get_mut(&a.owner.id)
            {
                s.load += 1;
                prop_assert!(s.capacity.is_none_or(|cap| s.load <= cap), "{:?}", s);
            }
        }
    }

    #[test]
    fn same_inputs_same_decision(set in arb_rule_set(), lead in arb_lead(), w in arb_workload(), counter in 0u64..10) {
        let c = compile(&set);
        let again = compile(&set.clone());
        let mut rot = RotationState::default();
        for r in &set.rules {
            rot.counters.insert(r.id.clone(), counter);
        }
        prop_assert_eq!(c.decide(&lead, &w, &rot), again.decide(&lead, &w.clone(), &rot.clone()));
    }

    #[test]
    fn index_agrees_with_a_full_scan(set in arb_rule_set(), lead in arb_lead()) {
        // Every candidate active with the needed skills: the first rule in rank that matches wins.
        let w = Workload { candidates: (1..=6).map(|i| (uid(i), CandidateStatus {
            skills: vec!["go".into(), "rust".into()], ..CandidateStatus::default() })).collect() };
        let a = compile(&set).decide(&lead, &w, &RotationState::default());
        let mut expected: Vec<(i64, i32, String, usize)> = set.rules.iter().enumerate().filter_map(|(i, r)| {
            let c = &r.when;
            let one = |l: &Option<Vec<String>>, v: &str| l.as_ref().is_none_or(|l| l.iter().any(|x| x == v));
            if !one(&c.industries, &lead.industry) || !one(&c.regions, &lead.region) { return None; }
            if let Some(d) = &c.deal_size && !lead.deal_size.is_some_and(|x| d.min.is_none_or(|m| x >= m) && d.max.is_none_or(|m| x <= m)) { return None; }
            let spec = match &c.territories {
                None => -1,
                Some(ts) => i64::from(lead.territories.iter().filter(|t| ts.contains(&t.id)).map(|t| t.depth).max()?),
            };
            Some(match set.mode {
                EvaluationMode::Ordered => (0, 0, String::new(), i),
                EvaluationMode::Priority => (-spec, r.priority, r.id.clone(), i),
            })
        }).collect();
        expected.sort();
        let want = expected.first().and_then(|e| set.rules.get(e.3)).map(|r| r.id.clone());
        prop_assert_eq!(a.rule, want);
    }
}
