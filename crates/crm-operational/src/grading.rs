//! Lead grading (O3): tenant rules give points from a lead's source, fit and behaviour; the
//! sum against the tenant's thresholds gives a grade (hot, warm, cold, long-term), and the
//! result lists which rules gave which points.
//!
//! A policy is plain data (stored as JSON), checked by [`GradingPolicy::validate`] before it
//! is saved; grading itself ([`GradingPolicy::grade`]) is pure, total and deterministic.
//! Text comparisons ignore case and surrounding spaces.

use crate::error::{ConfigError, Problem};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// A lead's grade, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Grade {
    /// Ready to buy: call now.
    Hot,
    /// Interested: follow up soon.
    Warm,
    /// Little interest or fit yet.
    Cold,
    /// Not now: nurture over the long term.
    LongTerm,
}

impl Grade {
    /// All grades, best first.
    pub const ALL: [Grade; 4] = [Grade::Hot, Grade::Warm, Grade::Cold, Grade::LongTerm];

    /// The grade's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hot => "HOT",
            Self::Warm => "WARM",
            Self::Cold => "COLD",
            Self::LongTerm => "LONG_TERM",
        }
    }
}

/// What grading reads of a lead.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LeadFacts {
    /// Where the lead came from (`web_form`, `trade_show`, `referral`...).
    pub source: String,
    /// Industry code or name.
    pub industry: String,
    /// Region (a CLDR code or the tenant's region name).
    pub region: String,
    /// Employees of the lead's company, when known.
    pub company_size: Option<u32>,
    /// Other fit fields by name (`title`, `product_interest`, custom fields...).
    pub fields: BTreeMap<String, String>,
    /// Behaviour counters by name (`email_opens`, `site_visits`, `downloads`...).
    pub counters: BTreeMap<String, i64>,
}

/// A condition on a lead. Lists of values match when the lead's value is one of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Condition {
    /// The source is one of `values`.
    Source {
        /// Allowed sources.
        values: Vec<String>,
    },
    /// The industry is one of `values`.
    Industry {
        /// Allowed industries.
        values: Vec<String>,
    },
    /// The region is one of `values`.
    Region {
        /// Allowed regions.
        values: Vec<String>,
    },
    /// The company size is known and within `min..=max` (either bound optional).
    CompanySize {
        /// Smallest size, inclusive.
        min: Option<u32>,
        /// Largest size, inclusive.
        max: Option<u32>,
    },
    /// A named fit field is one of `values`.
    Field {
        /// Field name.
        name: String,
        /// Allowed values.
        values: Vec<String>,
    },
    /// A behaviour counter (0 when absent) is within `min..=max`.
    Counter {
        /// Counter name.
        name: String,
        /// Smallest value, inclusive.
        min: Option<i64>,
        /// Largest value, inclusive.
        max: Option<i64>,
    },
    /// Every condition holds (true when empty).
    All {
        /// The conditions.
        of: Vec<Condition>,
    },
    /// At least one condition holds.
    Any {
        /// The conditions.
        of: Vec<Condition>,
    },
    /// The condition does not hold.
    Not {
        /// The condition.
        of: Box<Condition>,
    },
}

fn eq_ci(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim()) || a.trim().to_lowercase() == b.trim().to_lowercase()
}

fn one_of(values: &[String], v: &str) -> bool {
    !v.trim().is_empty() && values.iter().any(|x| eq_ci(x, v))
}

impl Condition {
    /// Does the lead satisfy the condition?
    pub fn holds(&self, lead: &LeadFacts) -> bool {
        match self {
            Self::Source { values } => one_of(values, &lead.source),
            Self::Industry { values } => one_of(values, &lead.industry),
            Self::Region { values } => one_of(values, &lead.region),
            Self::CompanySize { min, max } => lead
                .company_size
                .is_some_and(|s| min.is_none_or(|m| s >= m) && max.is_none_or(|m| s <= m)),
            Self::Field { name, values } => {
                lead.fields.get(name).is_some_and(|v| one_of(values, v))
            }
            Self::Counter { name, min, max } => {
                let v = lead.counters.get(name).copied().unwrap_or(0);
                min.is_none_or(|m| v >= m) && max.is_none_or(|m| v <= m)
            }
            Self::All { of } => of.iter().all(|c| c.holds(lead)),
            Self::Any { of } => of.iter().any(|c| c.holds(lead)),
            Self::Not { of } => !of.holds(lead),
        }
    }

    fn validate(&self, path: &str, depth: usize, errs: &mut Vec<ConfigError>) {
        if depth > 16 {
            errs.push(ConfigError::new(
                path,
                Problem::OutOfRange("nested deeper than 16".into()),
            ));
            return;
        }
        let list = |values: &Vec<String>, errs: &mut Vec<ConfigError>| {
            if values.iter().all(|v| v.trim().is_empty()) {
                errs.push(ConfigError::new(
                    format!("{path}.values"),
                    Problem::MatchesNothing,
                ));
            }
        };
        match self {
            Self::Source { values } | Self::Industry { values } | Self::Region { values } => {
                list(values, errs)
            }
            Self::Field { name, values } => {
                if name.trim().is_empty() {
                    errs.push(ConfigError::new(format!("{path}.name"), Problem::Required));
                }
                list(values, errs);
            }
            Self::CompanySize { min, max } => {
                if let (Some(a), Some(b)) = (min, max)
                    && a > b
                {
                    errs.push(ConfigError::new(
                        format!("{path}.min"),
                        Problem::Contradiction(format!("min {a} is above max {b}")),
                    ));
                }
            }
            Self::Counter { name, min, max } => {
                if name.trim().is_empty() {
                    errs.push(ConfigError::new(format!("{path}.name"), Problem::Required));
                }
                if let (Some(a), Some(b)) = (min, max)
                    && a > b
                {
                    errs.push(ConfigError::new(
                        format!("{path}.min"),
                        Problem::Contradiction(format!("min {a} is above max {b}")),
                    ));
                }
            }
            Self::All { of } => {
                for (i, c) in of.iter().enumerate() {
                    c.validate(&format!("{path}.of[{i}]"), depth + 1, errs);
                }
            }
            Self::Any { of } => {
                if of.is_empty() {
                    errs.push(ConfigError::new(
                        format!("{path}.of"),
                        Problem::MatchesNothing,
                    ));
                }
                for (i, c) in of.iter().enumerate() {
                    c.validate(&format!("{path}.of[{i}]"), depth + 1, errs);
                }
            }
            Self::Not { of } => of.validate(&format!("{path}.of"), depth + 1, errs),
        }
    }
}

/// A rule: when the condition holds, the lead gets the points (negative points allowed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GradingRule {
    /// Unique id within the policy, named in results.
    pub id: String,
    /// What the rule is for, for people.
    #[serde(default)]
    pub description: String,
    /// When the rule applies.
    pub when: Condition,
    /// Points given, within ±10,000.
    pub points: i32,
}

/// Lowest points of each grade; below `cold` is long-term. Must be `hot > warm > cold`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GradeThresholds {
    /// Lowest points of a hot lead.
    pub hot: i64,
    /// Lowest points of a warm lead.
    pub warm: i64,
    /// Lowest points of a cold lead.
    pub cold: i64,
}

impl Default for GradeThresholds {
    fn default() -> Self {
        Self {
            hot: 70,
            warm: 40,
            cold: 10,
        }
    }
}

impl GradeThresholds {
    /// The grade for a number of points.
    pub fn grade(&self, points: i64) -> Grade {
        if points >= self.hot {
            Grade::Hot
        } else if points >= self.warm {
            Grade::Warm
        } else if points >= self.cold {
            Grade::Cold
        } else {
            Grade::LongTerm
        }
    }
}

/// A tenant's grading policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GradingPolicy {
    /// The rules; all that hold add their points.
    pub rules: Vec<GradingRule>,
    /// The grade thresholds.
    pub thresholds: GradeThresholds,
}

/// One rule that applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleHit {
    /// The rule's id.
    pub rule: String,
    /// The points it gave.
    pub points: i32,
}

/// A lead's grade and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GradeResult {
    /// The grade.
    pub grade: Grade,
    /// The sum of the points.
    pub points: i64,
    /// Every rule that applied, in policy order.
    pub hits: Vec<RuleHit>,
}

impl GradingPolicy {
    /// Checks the policy: rule ids present and unique, points within ±10,000, conditions that
    /// can hold and ranges that are not reversed, thresholds strictly decreasing.
    pub fn validate(&self) -> Result<(), Vec<ConfigError>> {
        let mut errs = Vec::new();
        let mut ids = BTreeSet::new();
        for (i, r) in self.rules.iter().enumerate() {
            let path = format!("rules[{i}]");
            if r.id.trim().is_empty() {
                errs.push(ConfigError::new(format!("{path}.id"), Problem::Required));
            } else if !ids.insert(r.id.trim()) {
                errs.push(ConfigError::new(
                    format!("{path}.id"),
                    Problem::Duplicate(r.id.clone()),
                ));
            }
            if !(-10_000..=10_000).contains(&r.points) {
                errs.push(ConfigError::new(
                    format!("{path}.points"),
                    Problem::OutOfRange("must be within ±10000".into()),
                ));
            }
            r.when.validate(&format!("{path}.when"), 0, &mut errs);
        }
        let t = self.thresholds;
        if t.hot <= t.warm {
            errs.push(ConfigError::new(
                "thresholds.hot",
                Problem::Contradiction(format!("hot {} must be above warm {}", t.hot, t.warm)),
            ));
        }
        if t.warm <= t.cold {
            errs.push(ConfigError::new(
                "thresholds.warm",
                Problem::Contradiction(format!("warm {} must be above cold {}", t.warm, t.cold)),
            ));
        }
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }

    /// Grades a lead: the points of every rule that holds, summed, against the thresholds.
    pub fn grade(&self, lead: &LeadFacts) -> GradeResult {
        let hits: Vec<RuleHit> = self
            .rules
            .iter()
            .filter(|r| r.when.holds(lead))
            .map(|r| RuleHit {
                rule: r.id.clone(),
                points: r.points,
            })
            .collect();
        let points = hits.iter().map(|h| i64::from(h.points)).sum();
        GradeResult {
            grade: self.thresholds.grade(points),
            points,
            hits,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rule(id: &str, points: i32, when: Condition) -> GradingRule {
        GradingRule {
            id: id.into(),
            description: String::new(),
            when,
            points,
        }
    }

    fn policy() -> GradingPolicy {
        GradingPolicy {
            rules: vec![
                rule(
                    "referral",
                    30,
                    Condition::Source {
                        values: vec!["referral".into(), "trade_show".into()],
                    },
                ),
                rule(
                    "target-industry",
                    20,
                    Condition::Industry {
                        values: vec!["Manufacturing".into()],
                    },
                ),
                rule(
                    "mid-size",
                    15,
                    Condition::CompanySize {
                        min: Some(50),
                        max: Some(5000),
                    },
                ),
                rule(
                    "engaged",
                    25,
                    Condition::Counter {
                        name: "site_visits".into(),
                        min: Some(3),
                        max: None,
                    },
                ),
                rule(
                    "student",
                    -50,
                    Condition::Field {
                        name: "title".into(),
                        values: vec!["student".into()],
                    },
                ),
                rule(
                    "dach-not-web",
                    5,
                    Condition::All {
                        of: vec![
                            Condition::Region {
                                values: vec!["DE".into(), "AT".into(), "CH".into()],
                            },
                            Condition::Not {
                                of: Box::new(Condition::Source {
                                    values: vec!["web_form".into()],
                                }),
                            },
                        ],
                    },
                ),
            ],
            thresholds: GradeThresholds::default(),
        }
    }

    #[test]
    fn grades_with_reasons() {
        let p = policy();
        assert!(p.validate().is_ok());
        let mut lead = LeadFacts {
            source: "Trade_Show".into(),
            industry: "manufacturing ".into(),
            region: "DE".into(),
            company_size: Some(200),
            ..LeadFacts::default()
        };
        lead.counters.insert("site_visits".into(), 4);
        let r = p.grade(&lead);
        assert_eq!(r.points, 95);
        assert_eq!(r.grade, Grade::Hot);
        let ids: Vec<&str> = r.hits.iter().map(|h| h.rule.as_str()).collect();
        assert_eq!(
            ids,
            vec![
                "referral",
                "target-industry",
                "mid-size",
                "engaged",
                "dach-not-web"
            ]
        );

        lead.fields.insert("title".into(), "Student".into());
        assert_eq!(
            (p.grade(&lead).points, p.grade(&lead).grade),
            (45, Grade::Warm)
        );
        assert_eq!(p.grade(&LeadFacts::default()).grade, Grade::LongTerm);
    }

    #[test]
    fn bad_policies_name_the_field() {
        let mut p = policy();
        p.rules
            .push(rule("referral", 1, Condition::Industry { values: vec![] }));
        p.rules.push(rule(
            "",
            1,
            Condition::CompanySize {
                min: Some(10),
                max: Some(5),
            },
        ));
        p.rules
            .push(rule("big", 20_000, Condition::Any { of: vec![] }));
        p.thresholds = GradeThresholds {
            hot: 40,
            warm: 40,
            cold: 50,
        };
        let errs = p.validate().err().unwrap_or_default();
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "rules[6].id",
                "rules[6].when.values",
                "rules[7].id",
                "rules[7].when.min",
                "rules[8].points",
                "rules[8].when.of",
                "thresholds.hot",
                "thresholds.warm",
            ]
        );
        assert!(matches!(
            errs.first().map(|e| &e.problem),
            Some(Problem::Duplicate(_))
        ));
        let core = crate::error::into_core(errs);
        assert_eq!(core.violations.len(), 8);
    }

    #[test]
    fn policy_round_trips_as_json() {
        let p = policy();
        let json = serde_json::to_string(&p).unwrap_or_default();
        let back: Option<GradingPolicy> = serde_json::from_str(&json).ok();
        assert_eq!(back, Some(p));
    }

    proptest! {
        #[test]
        fn grade_follows_points(points in -100_000i64..100_000) {
            let t = GradeThresholds::default();
            let g = t.grade(points);
            prop_assert_eq!(g == Grade::Hot, points >= t.hot);
            prop_assert_eq!(g == Grade::LongTerm, points < t.cold);
        }
    }
}
