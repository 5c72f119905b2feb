//! A2 Customer value: a weighted score from versioned tenant weights, explained per measure.
//!
//! # Measures and normalisation
//!
//! Six measures ([`Measure`]) are each brought to `0..=1` before weighting:
//!
//! * the RFM scores `r`, `f`, `m` (already on `1..=bins`) linearly: `(s - 1) / (bins - 1)`;
//! * the raw measures margin (minor units of the tenant's scoring currency), tenure (days) and
//!   service cost (minor units) over the **population** of customers that have the measure,
//!   by the model's [`Normalisation`]:
//!   * [`Normalisation::Rank`] (default, robust to outliers): the customer's average position
//!     among the sorted values divided by `n - 1` (ties share the average position); the
//!     lowest value is 0, the highest 1;
//!   * [`Normalisation::MinMax`]: `(v - min) / (max - min)`; one outlier compresses everyone
//!     else, so prefer rank unless the distances themselves matter.
//!
//!   A population of one, or one where every value is equal, normalises to 0.5 (nothing
//!   distinguishes the customers). A customer **without** the measure gets 0 for it (no
//!   credit and no penalty) and the contribution is marked `missing`.
//!
//! # Score and contributions
//!
//! Weights are tenant numbers `>= 0` per measure (`W` = their sum, which must be `> 0`). Each
//! measure contributes `sign × 100 × (w / W) × normalised`, where `sign` is `-1` for service
//! cost (a cost lowers value) and `+1` otherwise. The score is the sum of the contributions,
//! so it lies in `[-100 × w_cost / W, 100 × (W - w_cost) / W]` and every score is explained by
//! its contributions, which add up to it exactly (the score is computed as their sum).
//!
//! Weights are **versioned**: a [`ValueModel`] has a version and the time it takes effect;
//! every [`ValueScore`] records the version that made it ([`active_model`] picks the one in
//! force at a time).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Collector, Error, Problem, Result};
use crate::rfm::{MAX_BINS, MIN_BINS};

/// A measure of the value model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    /// RFM recency score.
    Recency,
    /// RFM frequency score.
    Frequency,
    /// RFM monetary score.
    Monetary,
    /// Gross margin, minor units of the scoring currency.
    Margin,
    /// Days since the customer relationship began.
    Tenure,
    /// Cost to serve (cases, returns), minor units; contributes negatively.
    ServiceCost,
}

impl Measure {
    /// Every measure, in the order contributions are listed.
    pub const ALL: [Measure; 6] = [
        Measure::Recency,
        Measure::Frequency,
        Measure::Monetary,
        Measure::Margin,
        Measure::Tenure,
        Measure::ServiceCost,
    ];

    /// The measure's field name (`service_cost`).
    pub fn name(self) -> &'static str {
        match self {
            Measure::Recency => "recency",
            Measure::Frequency => "frequency",
            Measure::Monetary => "monetary",
            Measure::Margin => "margin",
            Measure::Tenure => "tenure",
            Measure::ServiceCost => "service_cost",
        }
    }

    /// `-1` for measures that lower value (service cost), `+1` otherwise.
    pub fn sign(self) -> f64 {
        match self {
            Measure::ServiceCost => -1.0,
            _ => 1.0,
        }
    }
}

/// Weight per measure; each `>= 0`, their sum `> 0`. Absent weights are 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Weights {
    /// Weight of the recency score.
    pub recency: f64,
    /// Weight of the frequency score.
    pub frequency: f64,
    /// Weight of the monetary score.
    pub monetary: f64,
    /// Weight of margin.
    pub margin: f64,
    /// Weight of tenure.
    pub tenure: f64,
    /// Weight of service cost (its contribution is negative).
    pub service_cost: f64,
}

impl Weights {
    /// The weight of a measure.
    pub fn get(&self, m: Measure) -> f64 {
        match m {
            Measure::Recency => self.recency,
            Measure::Frequency => self.frequency,
            Measure::Monetary => self.monetary,
            Measure::Margin => self.margin,
            Measure::Tenure => self.tenure,
            Measure::ServiceCost => self.service_cost,
        }
    }

    /// Checks each weight (finite, `>= 0`, field `<measure>`) and the sum (`> 0`, field empty:
    /// the weights as a whole).
    pub fn validate(&self) -> Result<()> {
        let mut c = Collector::default();
        let mut sum = 0.0;
        for m in Measure::ALL {
            let w = self.get(m);
            if !w.is_finite() {
                c.add(m.name(), Problem::NotFinite, "must be a finite number");
            } else if w < 0.0 {
                c.add(
                    m.name(),
                    Problem::OutOfRange,
                    "must not be negative (service cost already counts against value)",
                );
            } else {
                sum += w;
            }
        }
        if c.0.is_empty() && sum <= 0.0 {
            c.add("", Problem::ZeroSum, "weights must sum to more than zero");
        }
        c.finish()
    }

    fn sum(&self) -> f64 {
        Measure::ALL.iter().map(|m| self.get(*m)).sum()
    }
}

/// How raw measures are brought to `0..=1` over the population.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Normalisation {
    /// Average position among the sorted values, over `n - 1`.
    #[default]
    Rank,
    /// `(v - min) / (max - min)`.
    MinMax,
}

/// One version of a tenant's value weights, stored as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ValueModel {
    /// Version number, `>= 1`, unique per tenant.
    pub version: u32,
    /// When this version takes effect (`None`: always).
    pub effective_from: Option<DateTime<Utc>>,
    /// The weights.
    pub weights: Weights,
    /// Normalisation of margin, tenure and service cost.
    pub normalisation: Normalisation,
}

impl Default for ValueModel {
    fn default() -> Self {
        Self {
            version: 1,
            effective_from: None,
            weights: Weights {
                recency: 1.0,
                frequency: 1.0,
                monetary: 1.0,
                ..Weights::default()
            },
            normalisation: Normalisation::Rank,
        }
    }
}

impl ValueModel {
    /// Checks the version (`version`) and the weights (`weights.<measure>`, `weights`).
    pub fn validate(&self) -> Result<()> {
        let mut c = Collector::default();
        if self.version == 0 {
            c.add("version", Problem::OutOfRange, "must be at least 1");
        }
        if let Err(e) = self.weights.validate() {
            c.extend(e.in_field("weights"));
        }
        c.finish()
    }
}

/// Checks a tenant's versions: each valid (`[i].weights...`) and no version twice (`[i].version`).
pub fn validate_models(models: &[ValueModel]) -> Result<()> {
    let mut c = Collector::default();
    for (i, m) in models.iter().enumerate() {
        if let Err(e) = m.validate() {
            c.extend(e.in_field(&format!("[{i}]")));
        }
        if models[..i].iter().any(|o| o.version == m.version) {
            c.add(
                format!("[{i}].version"),
                Problem::Duplicate,
                format!("version {} appears twice", m.version),
            );
        }
    }
    c.finish()
}

/// The model in force at `at`: the highest version whose `effective_from` is not after `at`.
pub fn active_model(models: &[ValueModel], at: DateTime<Utc>) -> Option<&ValueModel> {
    models
        .iter()
        .filter(|m| m.effective_from.is_none_or(|t| t <= at))
        .max_by_key(|m| m.version)
}

/// One customer's inputs. Absent measures contribute 0 and are marked missing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ValueInput {
    /// The customer.
    pub customer: Uuid,
    /// RFM recency score.
    pub r: Option<u8>,
    /// RFM frequency score.
    pub f: Option<u8>,
    /// RFM monetary score.
    pub m: Option<u8>,
    /// Margin, minor units of the scoring currency.
    pub margin: Option<i128>,
    /// Days since the relationship began.
    pub tenure_days: Option<i64>,
    /// Cost to serve, minor units of the scoring currency.
    pub service_cost: Option<i128>,
}

impl ValueInput {
    fn raw(&self, m: Measure) -> Option<i128> {
        match m {
            Measure::Recency => self.r.map(i128::from),
            Measure::Frequency => self.f.map(i128::from),
            Measure::Monetary => self.m.map(i128::from),
            Measure::Margin => self.margin,
            Measure::Tenure => self.tenure_days.map(i128::from),
            Measure::ServiceCost => self.service_cost,
        }
    }
}

/// What one measure added to a score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contribution {
    /// The measure.
    pub measure: Measure,
    /// The raw value (a score, days or minor units); `None` when missing.
    pub raw: Option<i128>,
    /// The value in `0..=1` (0 when missing).
    pub normalised: f64,
    /// The tenant's weight.
    pub weight: f64,
    /// `weight / sum of weights`.
    pub share: f64,
    /// `sign × 100 × share × normalised`.
    pub contribution: f64,
    /// The measure was absent for this customer.
    pub missing: bool,
}

/// A customer's value score with its explanation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValueScore {
    /// The customer.
    pub customer: Uuid,
    /// The model version that made the score.
    pub model_version: u32,
    /// The score: the sum of `contributions`.
    pub score: f64,
    /// One entry per measure, in [`Measure::ALL`] order.
    pub contributions: Vec<Contribution>,
}

/// Rank normalisation of `values` (see the module docs), in input order.
pub fn rank_normalise(values: &[i128]) -> Vec<f64> {
    let n = values.len();
    let mut out = vec![0.5; n];
    if n < 2 {
        return out;
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|i| values[*i]);
    let denom = (n - 1) as f64;
    let mut start = 0usize;
    while start < n {
        let v = values[order[start]];
        let mut end = start;
        while end < n && values[order[end]] == v {
            end += 1;
        }
        let norm = if end - start == n {
            0.5
        } else {
            // average of positions start..end-1
            (start + end - 1) as f64 / 2.0 / denom
        };
        for &i in &order[start..end] {
            out[i] = norm;
        }
        start = end;
    }
    out
}

/// Min-max normalisation of `values`, in input order; 0.5 for all when all are equal.
pub fn min_max_normalise(values: &[i128]) -> Vec<f64> {
    let (Some(min), Some(max)) = (values.iter().min(), values.iter().max()) else {
        return Vec::new();
    };
    if min == max {
        return vec![0.5; values.len()];
    }
    let span = (*max - *min) as f64;
    values
        .iter()
        .map(|v| ((*v - *min) as f64 / span).clamp(0.0, 1.0))
        .collect()
}

/// Scores every customer with `model`. `rfm_bins` is the bin count the RFM scores were made
/// with. Errors name the model's fields or an input's out-of-range score (`inputs[i].r`).
pub fn score_population(
    inputs: &[ValueInput],
    model: &ValueModel,
    rfm_bins: u8,
) -> Result<Vec<ValueScore>> {
    let mut c = Collector::default();
    if let Err(e) = model.validate() {
        c.extend(e.in_field("model"));
    }
    if !(MIN_BINS..=MAX_BINS).contains(&rfm_bins) {
        c.add(
            "rfm_bins",
            Problem::OutOfRange,
            format!("must be within {MIN_BINS}..={MAX_BINS}"),
        );
    }
    c.finish()?;
    for (i, input) in inputs.iter().enumerate() {
        for (name, s) in [("r", input.r), ("f", input.f), ("m", input.m)] {
            if let Some(s) = s
                && !(1..=rfm_bins).contains(&s)
            {
                return Err(Error::field(
                    format!("inputs[{i}].{name}"),
                    Problem::OutOfRange,
                    format!("must be within 1..={rfm_bins}"),
                ));
            }
        }
    }

    // normalised[measure][customer]
    let mut normalised: Vec<Vec<f64>> = Vec::with_capacity(Measure::ALL.len());
    for m in Measure::ALL {
        let mut col = vec![0.0; inputs.len()];
        match m {
            Measure::Recency | Measure::Frequency | Measure::Monetary => {
                let span = f64::from(rfm_bins - 1);
                for (k, input) in inputs.iter().enumerate() {
                    if let Some(s) = input.raw(m) {
                        col[k] = (s - 1) as f64 / span;
                    }
                }
            }
            _ => {
                let (who, values): (Vec<usize>, Vec<i128>) = inputs
                    .iter()
                    .enumerate()
                    .filter_map(|(k, input)| input.raw(m).map(|v| (k, v)))
                    .unzip();
                let norm = match model.normalisation {
                    Normalisation::Rank => rank_normalise(&values),
                    Normalisation::MinMax => min_max_normalise(&values),
                };
                for (k, v) in who.into_iter().zip(norm) {
                    col[k] = v;
                }
            }
        }
        normalised.push(col);
    }

    let total = model.weights.sum();
    Ok(inputs
        .iter()
        .enumerate()
        .map(|(k, input)| {
            let contributions: Vec<Contribution> = Measure::ALL
                .iter()
                .zip(&normalised)
                .map(|(m, col)| {
                    let weight = model.weights.get(*m);
                    let share = weight / total;
                    let raw = input.raw(*m);
                    let n = col[k];
                    Contribution {
                        measure: *m,
                        raw,
                        normalised: n,
                        weight,
                        share,
                        contribution: m.sign() * 100.0 * share * n,
                        missing: raw.is_none(),
                    }
                })
                .collect();
            ValueScore {
                customer: input.customer,
                model_version: model.version,
                score: contributions.iter().map(|c| c.contribution).sum(),
                contributions,
            }
        })
        .collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn normalisations_by_hand() {
        assert_eq!(rank_normalise(&[10, 30, 20]), vec![0.0, 1.0, 0.5]);
        // ties share the average position: positions 0,1 -> 0.5/3; 2 -> 2/3; 3 -> 1
        let r = rank_normalise(&[5, 5, 7, 9]);
        assert!(close(r[0], 0.5 / 3.0) && close(r[1], 0.5 / 3.0));
        assert!(close(r[2], 2.0 / 3.0) && close(r[3], 1.0));
        assert_eq!(rank_normalise(&[4]), vec![0.5]);
        assert_eq!(rank_normalise(&[4, 4, 4]), vec![0.5, 0.5, 0.5]);
        assert_eq!(min_max_normalise(&[0, 50, 200]), vec![0.0, 0.25, 1.0]);
        assert_eq!(min_max_normalise(&[3, 3]), vec![0.5, 0.5]);
        assert!(min_max_normalise(&[]).is_empty());
    }

    #[test]
    fn hand_checked_scores() {
        // weights r 2, m 1, service cost 1 (W = 4): shares 0.5, 0.25, 0.25.
        let model = ValueModel {
            version: 3,
            effective_from: None,
            weights: Weights {
                recency: 2.0,
                monetary: 1.0,
                service_cost: 1.0,
                ..Weights::default()
            },
            normalisation: Normalisation::MinMax,
        };
        let a = ValueInput {
            customer: Uuid::from_u128(1),
            r: Some(5),
            m: Some(3),
            service_cost: Some(0),
            ..Default::default()
        };
        let b = ValueInput {
            customer: Uuid::from_u128(2),
            r: Some(1),
            m: Some(5),
            service_cost: Some(1000),
            ..Default::default()
        };
        let s = score_population(&[a, b], &model, 5).unwrap();
        // A: r (5-1)/4 = 1 -> 50; m (3-1)/4 = 0.5 -> 12.5; cost min -> 0 -> -0. Score 62.5.
        // B: r 0 -> 0; m 1 -> 25; cost max -> 1 -> -25. Score 0.
        assert!(close(s[0].score, 62.5), "{}", s[0].score);
        assert!(close(s[1].score, 0.0), "{}", s[1].score);
        assert_eq!(s[0].model_version, 3);
        let cost = &s[1].contributions[5];
        assert_eq!(cost.measure, Measure::ServiceCost);
        assert!(close(cost.contribution, -25.0));
        assert!(s[0].contributions[3].missing); // margin not given
        assert_eq!(s[0].contributions[3].contribution, 0.0);
    }

    #[test]
    fn bad_weights_are_named() {
        let zero = ValueModel {
            weights: Weights::default(),
            ..Default::default()
        };
        assert!(
            zero.validate()
                .unwrap_err()
                .has("weights", Problem::ZeroSum)
        );
        let nan = ValueModel {
            weights: Weights {
                margin: f64::NAN,
                recency: 1.0,
                ..Weights::default()
            },
            ..Default::default()
        };
        assert!(
            nan.validate()
                .unwrap_err()
                .has("weights.margin", Problem::NotFinite)
        );
        let neg = ValueModel {
            weights: Weights {
                service_cost: -1.0,
                recency: 1.0,
                ..Weights::default()
            },
            ..Default::default()
        };
        let e = score_population(&[], &neg, 5).unwrap_err();
        assert!(
            e.has("model.weights.service_cost", Problem::OutOfRange),
            "{e:?}"
        );
        let inf = ValueModel {
            weights: Weights {
                tenure: f64::INFINITY,
                ..Weights::default()
            },
            ..Default::default()
        };
        assert!(
            inf.validate()
                .unwrap_err()
                .has("weights.tenure", Problem::NotFinite)
        );
        let bad_input = ValueInput {
            f: Some(6),
            ..Default::default()
        };
        let e = score_population(&[bad_input], &ValueModel::default(), 5).unwrap_err();
        assert!(e.has("inputs[0].f", Problem::OutOfRange));
    }

    #[test]
    fn versions() {
        let at = |y| Utc.with_ymd_and_hms(y, 1, 1, 0, 0, 0).unwrap();
        let models = vec![
            ValueModel {
                version: 1,
                ..Default::default()
            },
            ValueModel {
                version: 2,
                effective_from: Some(at(2025)),
                ..Default::default()
            },
        ];
        validate_models(&models).unwrap();
        assert_eq!(active_model(&models, at(2024)).unwrap().version, 1);
        assert_eq!(active_model(&models, at(2026)).unwrap().version, 2);
        let dup = vec![models[0].clone(), models[0].clone()];
        assert!(
            validate_models(&dup)
                .unwrap_err()
                .has("[1].version", Problem::Duplicate)
        );
        let json = serde_json::to_string(&models[1]).unwrap();
        assert_eq!(
            serde_json::from_str::<ValueModel>(&json).unwrap(),
            models[1]
        );
    }

    fn weight() -> impl Strategy<Value = f64> {
        prop_oneof![Just(0.0), 0.0f64..10.0]
    }

    proptest! {
        #[test]
        fn contributions_sum_to_score(
            rows in proptest::collection::vec(
                (proptest::option::of(1u8..=5), proptest::option::of(1u8..=5), proptest::option::of(1u8..=5),
                 proptest::option::of(-1_000_000i128..1_000_000), proptest::option::of(0i64..5000),
                 proptest::option::of(0i128..100_000)),
                0..30),
            w in proptest::array::uniform6(weight()),
            minmax in any::<bool>(),
        ) {
            let weights = Weights { recency: w[0], frequency: w[1], monetary: w[2], margin: w[3], tenure: w[4], service_cost: w[5] };
            let model = ValueModel {
                version: 1,
                effective_from: None,
                weights,
                normalisation: if minmax { Normalisation::MinMax } else { Normalisation::Rank },
            };
            let inputs: Vec<ValueInput> = rows.iter().enumerate().map(|(k, (r, f, m, margin, tenure, cost))| ValueInput {
                customer: Uuid::from_u128(k as u128),
                r: *r, f: *f, m: *m, margin: *margin, tenure_days: *tenure, service_cost: *cost,
            }).collect();
            let total: f64 = w.iter().sum();
            match score_population(&inputs, &model, 5) {
                Err(e) => prop_assert!(total <= 0.0 && e.has("model.weights", Problem::ZeroSum)),
                Ok(scores) => {
                    for s in scores {
                        let sum: f64 = s.contributions.iter().map(|c| c.contribution).sum();
                        prop_assert_eq!(sum, s.score);
                        for c in &s.contributions {
                            prop_assert!((0.0..=1.0).contains(&c.normalised));
                        }
                        let cost_share = w[5] / total;
                        prop_assert!(s.score >= -100.0 * cost_share - 1e-9);
                        prop_assert!(s.score <= 100.0 * (1.0 - cost_share) + 1e-9);
                    }
                }
            }
        }
    }
}
