//! A1 RFM: recency, frequency and monetary measures per customer, scored into bins and
//! mapped to named segments.
//!
//! The work is split in two pure steps, so the persistence layer may compute the measures in
//! SQL and still score them here: [`measure`] turns order facts into [`RfmMeasures`], and
//! [`score`] turns measures into [`CustomerRfm`] (measures + scores + segment). [`run`] does both.
//!
//! # Measures
//!
//! Input is one [`OrderFact`] per order or per order line (customer, order id, time, currency,
//! amount in minor units, negative for refunds and returned lines). For the period
//! `[from, as_of]` (both inclusive):
//!
//! * facts after `as_of` are ignored and counted in [`FactStats::future_dated_orders`] (distinct
//!   orders) and [`FactStats::future_dated_facts`]; facts before `from` are ignored and counted
//!   in [`FactStats::facts_before_period`]. Each fact is classified by its own time;
//! * an order's **net amount** is the sum of its facts, per currency; its time is its earliest
//!   fact's time;
//! * **refund rule**: an order is a *purchase* when its net amount is positive (in at least one
//!   currency; an order normally has one). Refunds, whether negative lines inside an order or
//!   separate negative orders, lower the order's or the period's net amount; a fully refunded
//!   order (net ≤ 0) and a refund order are not purchases;
//! * **frequency** = the number of distinct purchases in the period;
//! * **recency** = whole days (floor of elapsed 24 h periods, UTC) from the last purchase to
//!   `as_of`; `None` without a purchase;
//! * **monetary** = the sum of the net amounts of *all* the customer's orders in the period
//!   (refund orders included, so a refund in the period of an older purchase lowers it), in
//!   minor units, **per currency**: currencies are never added.
//!
//! A customer with no fact in the period has status [`RfmStatus::NoOrders`]; one whose orders
//! in the period are all refunds or net zero has [`RfmStatus::NoPurchases`]. Neither gets
//! scores, and neither takes part in the quantiles of the others.
//!
//! # Scores
//!
//! Each measure gets a score `1..=bins` (`bins` is 2..=10, default 5); high is good, so
//! recency is inverted (recent = high). Per measure, a [`Binning`] chooses:
//!
//! * **quantiles** (mid-rank): for a value `v` among the `n` scored customers, with `lt`
//!   customers strictly below `v` and `le` at or below it, the score is
//!   `1 + floor(bins × (lt + le) / (2n))`, computed in integers. Equal values always get the
//!   same score; a strictly higher value never gets a lower one; with `bins` distinct values
//!   among `n = bins` customers the scores are exactly 1..=bins. **One customer, or all
//!   customers equal**, get the middle score `1 + floor(bins / 2)` (3 of 5): nothing
//!   distinguishes them, so no one is called best or worst. Two different customers get
//!   `1 + floor(bins/4)` and `1 + floor(3·bins/4)` (2 and 4 of 5). Recency is ranked on
//!   `-days`, so the most recent buyer ranks highest;
//! * **thresholds** set by the tenant: `bins - 1` strictly increasing bounds
//!   `t1 < t2 < ...`; a value below `t1` is in bin 1, a value `v` with `t_k <= v < t_(k+1)` in
//!   bin `k + 1`, a value at or above the last bound in bin `bins`. For recency the bounds are
//!   days and the bin is inverted (`score = bins + 1 - bin`: bought before `t1` days → top score).
//!
//! # Monetary across currencies
//!
//! [`MonetaryBasis::Converted`] converts each customer's per-currency sums into the tenant's
//! scoring currency ([`RateTable`](crate::money::RateTable): exact rational rates, one rounding
//! half to even per customer and currency) and scores that one number across all customers. A
//! currency in the data without a rate is an error naming `monetary_basis.rates.<CODE>`.
//!
//! [`MonetaryBasis::PerCurrency`] (the default: it needs no rates) scores each currency among
//! the customers who have orders in it; a customer's M score is the **highest** of its
//! per-currency scores (being a top spender in any currency makes a top spender), and all of
//! them are kept in [`RfmScores::m_by_currency`]. Thresholds for this basis are given per
//! currency ([`Binning::ThresholdsPerCurrency`]).
//!
//! # Segments
//!
//! [`SegmentMap`] maps `(R, F, M)` to a segment name with **first-match rules**: each rule
//! names a segment and an inclusive range per score (absent = any). Validation requires every
//! one of the `bins³` score cells to be matched by some rule and every rule to be the first
//! match of at least one cell (no dead rules). [`SegmentMap::classic`] is the widely used
//! 11-segment map on the R×F grid (M is commonly collinear with F; tenants may add M ranges).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Collector, Error, Problem, Result};
use crate::money::{CurrencyAmounts, RateTable, add_amount, currency_exponent};

/// Smallest allowed number of bins.
pub const MIN_BINS: u8 = 2;
/// Largest allowed number of bins.
pub const MAX_BINS: u8 = 10;
/// The default number of bins.
pub const DEFAULT_BINS: u8 = 5;
/// Longest segment name, in characters.
pub const MAX_SEGMENT_NAME_CHARS: usize = 100;

/// One order, or one line of an order, as RFM reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderFact {
    /// The customer (account or contact) the order belongs to.
    pub customer: Uuid,
    /// The order; several facts with the same id are lines of one order.
    pub order: Uuid,
    /// When the order was placed.
    pub time: DateTime<Utc>,
    /// ISO 4217 code of `amount`.
    pub currency: String,
    /// Net amount in minor units; negative for refunds and returned lines.
    pub amount: i64,
}

/// The period analysed: `[from, as_of]`, both inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Period {
    /// First instant of the period.
    pub from: DateTime<Utc>,
    /// The as-of instant: recency is measured to it, later facts are future-dated.
    pub as_of: DateTime<Utc>,
}

impl Period {
    /// Checks `from <= as_of` (field `period.from`).
    pub fn validate(&self) -> Result<()> {
        if self.from > self.as_of {
            return Err(Error::field(
                "period.from",
                Problem::OutOfRange,
                "must not be after period.as_of",
            ));
        }
        Ok(())
    }
}

/// Why a customer has or has no scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RfmStatus {
    /// At least one purchase in the period: scored.
    Scored,
    /// No order at all in the period: not scored.
    NoOrders,
    /// Orders in the period, but only refunds or orders with a net amount ≤ 0: not scored.
    NoPurchases,
}

/// The raw measures of one customer, exactly as computed (clients can check them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RfmMeasures {
    /// The customer.
    pub customer: Uuid,
    /// Time of the last purchase in the period.
    pub last_purchase: Option<DateTime<Utc>>,
    /// Whole days from the last purchase to `as_of`.
    pub recency_days: Option<i64>,
    /// Distinct purchases (orders with a positive net amount) in the period.
    pub frequency: u64,
    /// Distinct orders in the period, purchases and refunds alike.
    pub orders: u64,
    /// Net amount of all orders in the period, in minor units, per currency.
    pub monetary: CurrencyAmounts,
}

impl RfmMeasures {
    /// Measures of a customer without orders.
    pub fn empty(customer: Uuid) -> Self {
        Self {
            customer,
            last_purchase: None,
            recency_days: None,
            frequency: 0,
            orders: 0,
            monetary: CurrencyAmounts::new(),
        }
    }

    /// The customer's status from its measures.
    pub fn status(&self) -> RfmStatus {
        if self.frequency > 0 {
            RfmStatus::Scored
        } else if self.orders > 0 {
            RfmStatus::NoPurchases
        } else {
            RfmStatus::NoOrders
        }
    }
}

/// Counts of the facts a run read and left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FactStats {
    /// Facts inside the period.
    pub facts_in_period: u64,
    /// Facts before `from`, ignored.
    pub facts_before_period: u64,
    /// Facts after `as_of`, ignored.
    pub future_dated_facts: u64,
    /// Distinct orders with a fact after `as_of` ("future-dated, excluded").
    pub future_dated_orders: u64,
    /// Orders in the period whose facts have more than one currency (each currency is kept
    /// apart; such an order is a purchase if it is positive in any of them).
    pub multi_currency_orders: u64,
}

/// The measures of every customer and the fact counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Measured {
    /// One entry per customer of the population and of the facts, ordered by customer id.
    pub measures: Vec<RfmMeasures>,
    /// What was read and left out.
    pub stats: FactStats,
}

/// Computes the measures of every customer in `population` and in `facts` over `period`.
/// Errors: `period.from` after `as_of`; a fact with a currency that is not ISO 4217
/// (`facts[i].currency`).
pub fn measure(population: &[Uuid], facts: &[OrderFact], period: &Period) -> Result<Measured> {
    period.validate()?;
    let mut stats = FactStats::default();
    let mut checked: HashSet<&str> = HashSet::new();
    let mut future_orders: HashSet<Uuid> = HashSet::new();
    let mut inside: Vec<&OrderFact> = Vec::with_capacity(facts.len());
    for (i, f) in facts.iter().enumerate() {
        if !checked.contains(f.currency.as_str()) {
            currency_exponent(&format!("facts[{i}].currency"), &f.currency)?;
            checked.insert(f.currency.as_str());
        }
        if f.time > period.as_of {
            stats.future_dated_facts += 1;
            future_orders.insert(f.order);
        } else if f.time < period.from {
            stats.facts_before_period += 1;
        } else {
            stats.facts_in_period += 1;
            inside.push(f);
        }
    }
    stats.future_dated_orders = future_orders.len() as u64;
    inside.sort_unstable_by_key(|f| (f.customer, f.order));

    let mut out: BTreeMap<Uuid, RfmMeasures> = population
        .iter()
        .map(|c| (*c, RfmMeasures::empty(*c)))
        .collect();
    let mut rest = inside.as_slice();
    while let Some(first) = rest.first() {
        let len = rest
            .iter()
            .take_while(|f| f.customer == first.customer && f.order == first.order)
            .count();
        let (lines, tail) = rest.split_at(len);
        rest = tail;
        let m = out
            .entry(first.customer)
            .or_insert_with(|| RfmMeasures::empty(first.customer));
        let mut net: CurrencyAmounts = CurrencyAmounts::new();
        let mut time = first.time;
        for l in lines {
            add_amount(&mut net, &l.currency, i128::from(l.amount));
            time = time.min(l.time);
        }
        if net.len() > 1 {
            stats.multi_currency_orders += 1;
        }
        m.orders += 1;
        if net.values().any(|v| *v > 0) {
            m.frequency += 1;
            m.last_purchase = Some(m.last_purchase.map_or(time, |t| t.max(time)));
        }
        for (code, v) in net {
            add_amount(&mut m.monetary, &code, v);
        }
    }
    let measures = out
        .into_values()
        .map(|mut m| {
            m.recency_days = m
                .last_purchase
                .map(|t| (period.as_of - t).num_days().max(0));
            m
        })
        .collect();
    Ok(Measured { measures, stats })
}

/// How one measure is put into bins.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum Binning {
    /// Mid-rank quantiles over the scored customers (see the module docs).
    #[default]
    Quantiles,
    /// Tenant bounds: `bins - 1` strictly increasing values (days for recency, a count for
    /// frequency, minor units of the scoring currency for converted monetary).
    Thresholds {
        /// The bounds.
        values: Vec<i64>,
    },
    /// Monetary bounds per currency, for [`MonetaryBasis::PerCurrency`]; a currency without
    /// bounds is scored by quantiles.
    ThresholdsPerCurrency {
        /// The bounds of each currency, in its minor units.
        values: BTreeMap<String, Vec<i64>>,
    },
}

/// How monetary is scored when customers buy in several currencies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "basis", rename_all = "snake_case")]
pub enum MonetaryBasis {
    /// Each currency scored separately; M is the highest per-currency score.
    #[default]
    PerCurrency,
    /// Everything converted into `rates.target` with the tenant's rates, then scored once.
    Converted {
        /// The tenant's rates into the scoring currency.
        rates: RateTable,
    },
}

/// An inclusive range of scores, `min..=max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScoreRange {
    /// Lowest score matched.
    pub min: u8,
    /// Highest score matched.
    pub max: u8,
}

impl ScoreRange {
    /// `min..=max`.
    pub const fn new(min: u8, max: u8) -> Self {
        Self { min, max }
    }

    /// Whether `s` is in the range.
    pub fn contains(&self, s: u8) -> bool {
        self.min <= s && s <= self.max
    }
}

/// A first-match rule of a [`SegmentMap`]; an absent range matches any score.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentRule {
    /// The segment's name, e.g. `champions`.
    pub segment: String,
    /// Recency scores matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r: Option<ScoreRange>,
    /// Frequency scores matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub f: Option<ScoreRange>,
    /// Monetary scores matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub m: Option<ScoreRange>,
}

impl SegmentRule {
    /// Whether the rule matches the scores.
    pub fn matches(&self, r: u8, f: u8, m: u8) -> bool {
        let ok = |range: &Option<ScoreRange>, s: u8| range.is_none_or(|x| x.contains(s));
        ok(&self.r, r) && ok(&self.f, f) && ok(&self.m, m)
    }
}

/// Named segments from `(R, F, M)` scores by first-match rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentMap {
    /// Rules in order; the first that matches names the segment.
    pub rules: Vec<SegmentRule>,
}

/// The segment names of [`SegmentMap::classic`], best first.
pub const CLASSIC_SEGMENTS: [&str; 11] = [
    "champions",
    "loyal",
    "potential_loyalist",
    "new_customers",
    "promising",
    "need_attention",
    "about_to_sleep",
    "at_risk",
    "cannot_lose_them",
    "hibernating",
    "lost",
];

impl SegmentMap {
    /// The widely used 11-segment RFM map over the R×F grid, written for 5 bins:
    ///
    /// | R \ F | 1 | 2 | 3 | 4 | 5 |
    /// |---|---|---|---|---|---|
    /// | 5 | new_customers | potential_loyalist | potential_loyalist | champions | champions |
    /// | 4 | promising | potential_loyalist | potential_loyalist | loyal | loyal |
    /// | 3 | about_to_sleep | about_to_sleep | need_attention | loyal | loyal |
    /// | 2 | hibernating | hibernating | at_risk | at_risk | cannot_lose_them |
    /// | 1 | lost | lost | at_risk | at_risk | cannot_lose_them |
    ///
    /// For another bin count a score `s` of `bins` is read as `ceil(5 s / bins)` on this grid
    /// (rules that no cell reaches are dropped), so the map still covers each cell once.
    pub fn classic(bins: u8) -> Self {
        // (segment, R range, F range) on the 5-bin grid.
        type Cell = (u8, u8);
        let grid: [(&str, Cell, Cell); 11] = [
            ("champions", (5, 5), (4, 5)),
            ("loyal", (3, 4), (4, 5)),
            ("potential_loyalist", (4, 5), (2, 3)),
            ("new_customers", (5, 5), (1, 1)),
            ("promising", (4, 4), (1, 1)),
            ("need_attention", (3, 3), (3, 3)),
            ("about_to_sleep", (3, 3), (1, 2)),
            ("cannot_lose_them", (1, 2), (5, 5)),
            ("at_risk", (1, 2), (3, 4)),
            ("hibernating", (2, 2), (1, 2)),
            ("lost", (1, 1), (1, 2)),
        ];
        let bins = bins.clamp(MIN_BINS, MAX_BINS);
        let to5 = |s: u8| (5 * u16::from(s)).div_ceil(u16::from(bins));
        let rescale = |(lo, hi): (u8, u8)| -> Option<ScoreRange> {
            let hits: Vec<u8> = (1..=bins)
                .filter(|s| (u16::from(lo)..=u16::from(hi)).contains(&to5(*s)))
                .collect();
            Some(ScoreRange::new(*hits.first()?, *hits.last()?))
        };
        let rules = grid
            .iter()
            .filter_map(|(name, r, f)| {
                Some(SegmentRule {
                    segment: (*name).to_owned(),
                    r: Some(rescale(*r)?),
                    f: Some(rescale(*f)?),
                    m: None,
                })
            })
            .collect();
        SegmentMap { rules }
    }

    /// The segment of `(r, f, m)`: the first matching rule's name.
    pub fn segment_of(&self, r: u8, f: u8, m: u8) -> Option<&str> {
        self.rules
            .iter()
            .find(|rule| rule.matches(r, f, m))
            .map(|rule| rule.segment.as_str())
    }

    /// Checks the map for `bins`: names present and short, ranges within `1..=bins` with
    /// `min <= max`, every cell covered (`rules`, [`Problem::Uncovered`]) and every rule the
    /// first match of some cell (`rules[i]`, [`Problem::Unreachable`]).
    pub fn validate(&self, bins: u8) -> Result<()> {
        let mut c = Collector::default();
        if self.rules.is_empty() {
            c.add("rules", Problem::Required, "at least one rule is required");
            return c.finish();
        }
        for (i, rule) in self.rules.iter().enumerate() {
            let name = rule.segment.trim();
            if name.is_empty() {
                c.add(
                    format!("rules[{i}].segment"),
                    Problem::Required,
                    "is required",
                );
            } else if name.chars().count() > MAX_SEGMENT_NAME_CHARS {
                c.add(
                    format!("rules[{i}].segment"),
                    Problem::OutOfRange,
                    format!("must be at most {MAX_SEGMENT_NAME_CHARS} characters"),
                );
            }
            for (key, range) in [("r", rule.r), ("f", rule.f), ("m", rule.m)] {
                let Some(range) = range else { continue };
                if range.min < 1 || range.min > bins {
                    c.add(
                        format!("rules[{i}].{key}.min"),
                        Problem::OutOfRange,
                        format!("must be within 1..={bins}"),
                    );
                }
                if range.max < 1 || range.max > bins {
                    c.add(
                        format!("rules[{i}].{key}.max"),
                        Problem::OutOfRange,
                        format!("must be within 1..={bins}"),
                    );
                }
                if range.min > range.max {
                    c.add(
                        format!("rules[{i}].{key}"),
                        Problem::OutOfRange,
                        "min must not exceed max",
                    );
                }
            }
        }
        if !c.0.is_empty() {
            return c.finish();
        }
        let mut first_match = vec![false; self.rules.len()];
        let mut uncovered: Vec<(u8, u8, u8)> = Vec::new();
        for r in 1..=bins {
            for f in 1..=bins {
                for m in 1..=bins {
                    match self.rules.iter().position(|rule| rule.matches(r, f, m)) {
                        Some(i) => {
                            if let Some(x) = first_match.get_mut(i) {
                                *x = true;
                            }
                        }
                        None => uncovered.push((r, f, m)),
                    }
                }
            }
        }
        if let Some((r, f, m)) = uncovered.first() {
            c.add(
                "rules",
                Problem::Uncovered,
                format!(
                    "{} score combinations match no rule, the first R={r} F={f} M={m}",
                    uncovered.len()
                ),
            );
        }
        for (i, hit) in first_match.iter().enumerate() {
            if !hit {
                c.add(
                    format!("rules[{i}]"),
                    Problem::Unreachable,
                    "earlier rules match every score this rule matches",
                );
            }
        }
        c.finish()
    }
}

/// A tenant's RFM configuration, stored as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RfmConfig {
    /// Number of bins, 2..=10 (default 5): scores are `1..=bins`.
    pub bins: u8,
    /// Recency binning (thresholds in days).
    pub recency: Binning,
    /// Frequency binning (thresholds in purchases).
    pub frequency: Binning,
    /// Monetary binning (thresholds in minor units).
    pub monetary: Binning,
    /// Scoring currency or per currency.
    pub monetary_basis: MonetaryBasis,
    /// Segment names.
    pub segments: SegmentMap,
}

impl Default for RfmConfig {
    fn default() -> Self {
        Self {
            bins: DEFAULT_BINS,
            recency: Binning::Quantiles,
            frequency: Binning::Quantiles,
            monetary: Binning::Quantiles,
            monetary_basis: MonetaryBasis::PerCurrency,
            segments: SegmentMap::classic(DEFAULT_BINS),
        }
    }
}

fn check_thresholds(c: &mut Collector, field: &str, values: &[i64], bins: u8) {
    let want = usize::from(bins.saturating_sub(1));
    if values.len() != want {
        c.add(
            field,
            Problem::WrongCount,
            format!(
                "needs {want} values for {bins} bins, found {}",
                values.len()
            ),
        );
    }
    if let Some(i) = values.windows(2).position(|w| w[0] >= w[1]) {
        c.add(
            format!("{field}[{}]", i + 1),
            Problem::NotIncreasing,
            "values must be strictly increasing",
        );
    }
}

impl RfmConfig {
    /// Checks the whole configuration and names every bad field.
    pub fn validate(&self) -> Result<()> {
        let mut c = Collector::default();
        if !(MIN_BINS..=MAX_BINS).contains(&self.bins) {
            c.add(
                "bins",
                Problem::OutOfRange,
                format!("must be within {MIN_BINS}..={MAX_BINS}"),
            );
            return c.finish();
        }
        for (name, b) in [("recency", &self.recency), ("frequency", &self.frequency)] {
            match b {
                Binning::Quantiles => {}
                Binning::Thresholds { values } => {
                    check_thresholds(&mut c, &format!("{name}.values"), values, self.bins)
                }
                Binning::ThresholdsPerCurrency { .. } => c.add(
                    format!("{name}.method"),
                    Problem::Conflict,
                    "per-currency thresholds apply to monetary only",
                ),
            }
        }
        match (&self.monetary, &self.monetary_basis) {
            (Binning::Quantiles, _) => {}
            (Binning::Thresholds { values }, MonetaryBasis::Converted { .. }) => {
                check_thresholds(&mut c, "monetary.values", values, self.bins)
            }
            (Binning::Thresholds { .. }, MonetaryBasis::PerCurrency) => c.add(
                "monetary.method",
                Problem::Conflict,
                "per-currency scoring needs thresholds per currency (thresholds_per_currency)",
            ),
            (Binning::ThresholdsPerCurrency { values }, MonetaryBasis::PerCurrency) => {
                for (code, v) in values {
                    let field = format!("monetary.values.{code}");
                    if let Err(e) = currency_exponent(&field, code) {
                        c.extend(e);
                    }
                    check_thresholds(&mut c, &field, v, self.bins);
                }
            }
            (Binning::ThresholdsPerCurrency { .. }, MonetaryBasis::Converted { .. }) => c.add(
                "monetary.method",
                Problem::Conflict,
                "converted scoring takes one list of thresholds in the scoring currency",
            ),
        }
        if let MonetaryBasis::Converted { rates } = &self.monetary_basis
            && let Err(e) = rates.validate()
        {
            c.extend(e.in_field("monetary_basis.rates"));
        }
        if let Err(e) = self.segments.validate(self.bins) {
            c.extend(e.in_field("segments"));
        }
        c.finish()
    }
}

/// The scores and segment of a scored customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RfmScores {
    /// Recency score, `1..=bins`, recent = high.
    pub r: u8,
    /// Frequency score, `1..=bins`.
    pub f: u8,
    /// Monetary score, `1..=bins` (per currency: the highest of `m_by_currency`).
    pub m: u8,
    /// Per-currency monetary scores (per-currency basis only).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub m_by_currency: BTreeMap<String, u8>,
    /// The segment name from the [`SegmentMap`].
    pub segment: String,
}

impl RfmScores {
    /// The scores as the usual three-digit cell code, e.g. `"545"`.
    pub fn cell(&self) -> String {
        format!("{}{}{}", self.r, self.f, self.m)
    }
}

/// The result for one customer: measures beside the scores, so any client can check them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerRfm {
    /// The customer.
    pub customer: Uuid,
    /// Scored, or why not.
    pub status: RfmStatus,
    /// The raw measures.
    pub measures: RfmMeasures,
    /// Monetary in the scoring currency (converted basis only).
    pub monetary_converted: Option<i128>,
    /// Scores and segment; `None` unless `status` is [`RfmStatus::Scored`].
    pub scores: Option<RfmScores>,
}

/// A complete run: every customer and the fact counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RfmRun {
    /// The period analysed.
    pub period: Period,
    /// One entry per customer, ordered by customer id.
    pub customers: Vec<CustomerRfm>,
    /// What was read and left out.
    pub stats: FactStats,
}

impl RfmRun {
    /// Number of customers with the given status.
    pub fn count(&self, status: RfmStatus) -> usize {
        self.customers.iter().filter(|c| c.status == status).count()
    }
}

/// Mid-rank quantile scores of `values` (see the module docs), in input order.
pub fn quantile_scores<T: Ord>(values: &[T], bins: u8) -> Vec<u8> {
    let n = values.len();
    let mut scores = vec![0u8; n];
    if n == 0 {
        return scores;
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|a, b| values[*a].cmp(&values[*b]));
    let n128 = n as u128;
    let b128 = u128::from(bins);
    let mut start = 0usize;
    while start < n {
        let v = &values[order[start]];
        let mut end = start;
        while end < n && values[order[end]] == *v {
            end += 1;
        }
        // lt = start customers strictly below, le = end customers at or below.
        let raw = 1 + b128 * (start as u128 + end as u128) / (2 * n128);
        let score = u8::try_from(raw.min(b128)).unwrap_or(bins);
        for &i in &order[start..end] {
            scores[i] = score;
        }
        start = end;
    }
    scores
}

/// The bin (`1..=thresholds.len() + 1`) of `value` for strictly increasing `thresholds`.
pub fn threshold_bin(value: i128, thresholds: &[i64]) -> u8 {
    let k = thresholds.partition_point(|t| i128::from(*t) <= value);
    u8::try_from(k.saturating_add(1)).unwrap_or(u8::MAX)
}

fn bin_scores(values: &[i128], binning: &Binning, bins: u8, inverted: bool) -> Vec<u8> {
    match binning {
        Binning::Thresholds { values: t } => values
            .iter()
            .map(|v| {
                let b = threshold_bin(*v, t).min(bins);
                if inverted { bins + 1 - b } else { b }
            })
            .collect(),
        // Quantiles (ThresholdsPerCurrency is handled by the caller).
        _ => {
            if inverted {
                let neg: Vec<i128> = values.iter().map(|v| v.saturating_neg()).collect();
                quantile_scores(&neg, bins)
            } else {
                quantile_scores(values, bins)
            }
        }
    }
}

/// Scores measures with a configuration (validated first). Customers without purchases keep
/// their measures and get no scores.
pub fn score(measures: Vec<RfmMeasures>, config: &RfmConfig) -> Result<Vec<CustomerRfm>> {
    config.validate()?;
    let bins = config.bins;
    let scored: Vec<usize> = measures
        .iter()
        .enumerate()
        .filter(|(_, m)| m.status() == RfmStatus::Scored)
        .map(|(i, _)| i)
        .collect();

    let recency: Vec<i128> = scored
        .iter()
        .map(|i| i128::from(measures[*i].recency_days.unwrap_or(0)))
        .collect();
    let frequency: Vec<i128> = scored
        .iter()
        .map(|i| i128::from(measures[*i].frequency))
        .collect();
    let r_scores = bin_scores(&recency, &config.recency, bins, true);
    let f_scores = bin_scores(&frequency, &config.frequency, bins, false);

    let mut converted: Vec<Option<i128>> = vec![None; measures.len()];
    let mut m_scores: Vec<u8> = vec![1; scored.len()];
    let mut m_by_currency: Vec<BTreeMap<String, u8>> = vec![BTreeMap::new(); scored.len()];
    match &config.monetary_basis {
        MonetaryBasis::Converted { rates } => {
            let mut values = Vec::with_capacity(scored.len());
            for i in &scored {
                let v = rates
                    .convert_all(&measures[*i].monetary)
                    .map_err(|e| e.in_field("monetary_basis"))?;
                converted[*i] = Some(v);
                values.push(v);
            }
            m_scores = bin_scores(&values, &config.monetary, bins, false);
        }
        MonetaryBasis::PerCurrency => {
            let currencies: BTreeSet<&str> = scored
                .iter()
                .flat_map(|i| measures[*i].monetary.keys().map(String::as_str))
                .collect();
            for code in currencies {
                let (who, values): (Vec<usize>, Vec<i128>) = scored
                    .iter()
                    .enumerate()
                    .filter_map(|(k, i)| measures[*i].monetary.get(code).map(|v| (k, *v)))
                    .unzip();
                let binning = match &config.monetary {
                    Binning::ThresholdsPerCurrency { values: per } => match per.get(code) {
                        Some(t) => Binning::Thresholds { values: t.clone() },
                        None => Binning::Quantiles,
                    },
                    _ => Binning::Quantiles,
                };
                let s = bin_scores(&values, &binning, bins, false);
                for (k, score) in who.into_iter().zip(s) {
                    m_by_currency[k].insert(code.to_owned(), score);
                }
            }
            for (k, per) in m_by_currency.iter().enumerate() {
                m_scores[k] = per.values().copied().max().unwrap_or(1);
            }
        }
    }

    let mut scores: Vec<Option<RfmScores>> = vec![None; measures.len()];
    for (k, i) in scored.iter().enumerate() {
        let (r, f, m) = (r_scores[k], f_scores[k], m_scores[k]);
        let segment = config.segments.segment_of(r, f, m).ok_or_else(|| {
            Error::field(
                "segments.rules",
                Problem::Uncovered,
                format!("no rule matches R={r} F={f} M={m}"),
            )
        })?;
        scores[*i] = Some(RfmScores {
            r,
            f,
            m,
            m_by_currency: std::mem::take(&mut m_by_currency[k]),
            segment: segment.to_owned(),
        });
    }
    Ok(measures
        .into_iter()
        .zip(scores)
        .zip(converted)
        .map(|((m, scores), monetary_converted)| CustomerRfm {
            customer: m.customer,
            status: m.status(),
            measures: m,
            monetary_converted,
            scores,
        })
        .collect())
}

/// [`measure`] then [`score`]: the whole RFM run over a population and its facts.
pub fn run(
    population: &[Uuid],
    facts: &[OrderFact],
    period: &Period,
    config: &RfmConfig,
) -> Result<RfmRun> {
    config.validate()?;
    let Measured { measures, stats } = measure(population, facts, period)?;
    Ok(RfmRun {
        period: *period,
        customers: score(measures, config)?,
        stats,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::money::Rate;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn t(y: i32, mo: u32, d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, 12, 0, 0).unwrap()
    }

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn fact(c: u128, o: u128, time: DateTime<Utc>, cur: &str, amount: i64) -> OrderFact {
        OrderFact {
            customer: id(c),
            order: id(o),
            time,
            currency: cur.into(),
            amount,
        }
    }

    fn period() -> Period {
        Period {
            from: t(2024, 1, 1),
            as_of: t(2024, 12, 31),
        }
    }

    #[test]
    fn quantile_edges() {
        // one customer: the middle score
        assert_eq!(quantile_scores(&[42], 5), vec![3]);
        assert_eq!(quantile_scores(&[42], 2), vec![2]);
        assert_eq!(quantile_scores(&[42], 4), vec![3]);
        // all equal: the middle score for everyone
        assert_eq!(quantile_scores(&[7, 7, 7, 7], 5), vec![3, 3, 3, 3]);
        // two customers: 1 + 5*1/4 = 2 and 1 + 5*3/4 = 4
        assert_eq!(quantile_scores(&[10, 20], 5), vec![2, 4]);
        assert_eq!(quantile_scores(&[20, 10], 5), vec![4, 2]);
        // two equal customers
        assert_eq!(quantile_scores(&[5, 5], 5), vec![3, 3]);
        // bins distinct values: exactly 1..=bins
        assert_eq!(
            quantile_scores(&[50, 10, 40, 20, 30], 5),
            vec![5, 1, 4, 2, 3]
        );
        // ten distinct values: two per bin
        let ten: Vec<i32> = (1..=10).collect();
        assert_eq!(quantile_scores(&ten, 5), vec![1, 1, 2, 2, 3, 3, 4, 4, 5, 5]);
        // ties share a score: values 1,1,1,2,3 -> lt/le: (0,3),(0,3),(0,3),(3,4),(4,5)
        // 1+5*3/10=2, 1+5*7/10=4, 1+5*9/10=5
        assert_eq!(quantile_scores(&[1, 1, 1, 2, 3], 5), vec![2, 2, 2, 4, 5]);
        assert!(quantile_scores::<i32>(&[], 5).is_empty());
    }

    #[test]
    fn threshold_bins() {
        let t = [30, 90, 180, 365];
        assert_eq!(threshold_bin(0, &t), 1);
        assert_eq!(threshold_bin(29, &t), 1);
        assert_eq!(threshold_bin(30, &t), 2);
        assert_eq!(threshold_bin(364, &t), 4);
        assert_eq!(threshold_bin(365, &t), 5);
        assert_eq!(threshold_bin(10_000, &t), 5);
    }

    /// Hand-checked set, period 2024-01-01..2024-12-31 (as of 12:00):
    /// * A (1): orders 10 (2024-03-01, 100.00 EUR), 11 (2024-12-21, 50.00 EUR + a -20.00 line)
    ///   → frequency 2, recency 10 days, monetary EUR 130.00;
    /// * B (2): order 20 (2024-06-01, 300.00 EUR), refund order 21 (2024-07-01, -300.00 EUR),
    ///   order 22 (2024-12-30, 1000 JPY) → frequency 2 (20 and 22), recency 1 day,
    ///   monetary EUR 0, JPY 1000;
    /// * C (3): only a refund order 30 (-10.00 EUR) in the period, one purchase in 2023
    ///   → NoPurchases, monetary EUR -10.00;
    /// * D (4): in the population, no orders → NoOrders;
    /// * E (5): order 50 dated 2025-02-01 (future) and order 51 fully refunded inside itself
    ///   → NoPurchases, one future-dated order.
    fn hand_set() -> (Vec<Uuid>, Vec<OrderFact>) {
        let facts = vec![
            fact(1, 10, t(2024, 3, 1), "EUR", 10_000),
            fact(1, 11, t(2024, 12, 21), "EUR", 5_000),
            fact(1, 11, t(2024, 12, 21), "EUR", -2_000),
            fact(2, 20, t(2024, 6, 1), "EUR", 30_000),
            fact(2, 21, t(2024, 7, 1), "EUR", -30_000),
            fact(2, 22, t(2024, 12, 30), "JPY", 1_000),
            fact(3, 29, t(2023, 5, 1), "EUR", 9_999),
            fact(3, 30, t(2024, 2, 1), "EUR", -1_000),
            fact(5, 50, t(2025, 2, 1), "EUR", 7_000),
            fact(5, 51, t(2024, 4, 1), "EUR", 4_000),
            fact(5, 51, t(2024, 4, 1), "EUR", -4_000),
        ];
        (vec![id(1), id(2), id(3), id(4), id(5)], facts)
    }

    #[test]
    fn hand_checked_measures() {
        let (pop, facts) = hand_set();
        let m = measure(&pop, &facts, &period()).unwrap();
        assert_eq!(m.stats.future_dated_orders, 1);
        assert_eq!(m.stats.future_dated_facts, 1);
        assert_eq!(m.stats.facts_before_period, 1);
        assert_eq!(m.stats.facts_in_period, 9);
        let by = |n: u128| m.measures.iter().find(|x| x.customer == id(n)).unwrap();

        let a = by(1);
        assert_eq!((a.frequency, a.orders, a.recency_days), (2, 2, Some(10)));
        assert_eq!(a.monetary, CurrencyAmounts::from([("EUR".into(), 13_000)]));
        assert_eq!(a.status(), RfmStatus::Scored);

        let b = by(2);
        assert_eq!((b.frequency, b.orders, b.recency_days), (2, 3, Some(1)));
        assert_eq!(
            b.monetary,
            CurrencyAmounts::from([("EUR".into(), 0), ("JPY".into(), 1_000)])
        );

        let c = by(3);
        assert_eq!(c.status(), RfmStatus::NoPurchases);
        assert_eq!(c.monetary, CurrencyAmounts::from([("EUR".into(), -1_000)]));
        assert_eq!(c.recency_days, None);

        assert_eq!(by(4).status(), RfmStatus::NoOrders);
        let e = by(5);
        assert_eq!(
            (e.status(), e.orders, e.frequency),
            (RfmStatus::NoPurchases, 1, 0)
        );
        assert_eq!(e.monetary, CurrencyAmounts::from([("EUR".into(), 0)]));
    }

    #[test]
    fn hand_checked_scores_per_currency() {
        let (pop, facts) = hand_set();
        let run = run(&pop, &facts, &period(), &RfmConfig::default()).unwrap();
        assert_eq!(run.count(RfmStatus::Scored), 2);
        assert_eq!(run.count(RfmStatus::NoOrders), 1);
        assert_eq!(run.count(RfmStatus::NoPurchases), 2);
        let by = |n: u128| run.customers.iter().find(|x| x.customer == id(n)).unwrap();
        // Two scored customers. R: A 10 days, B 1 day -> B 4, A 2. F: both 2 -> 3, 3.
        // M per currency: EUR {A 13000, B 0} -> A 4, B 2; JPY {B 1000} alone -> 3.
        // B's M = max(2, 3) = 3.
        let a = by(1).scores.clone().unwrap();
        assert_eq!((a.r, a.f, a.m), (2, 3, 4));
        assert_eq!(a.segment, "at_risk"); // R=2, F=3
        let b = by(2).scores.clone().unwrap();
        assert_eq!((b.r, b.f, b.m), (4, 3, 3));
        assert_eq!(
            b.m_by_currency,
            BTreeMap::from([("EUR".into(), 2), ("JPY".into(), 3)])
        );
        assert_eq!(b.segment, "potential_loyalist");
        assert!(by(3).scores.is_none());
        assert!(by(4).scores.is_none());
    }

    #[test]
    fn converted_monetary_never_mixes_without_rates() {
        let (pop, facts) = hand_set();
        let mut cfg = RfmConfig {
            monetary_basis: MonetaryBasis::Converted {
                rates: RateTable::new("EUR"),
            },
            ..Default::default()
        };
        let e = run(&pop, &facts, &period(), &cfg).unwrap_err();
        assert!(
            e.has("monetary_basis.rates.JPY", Problem::MissingRate),
            "{e:?}"
        );

        // 1 JPY = 1/160 EUR: 1000 JPY = 6.25 EUR = 625 cents.
        cfg.monetary_basis = MonetaryBasis::Converted {
            rates: RateTable::new("EUR").with_rate("JPY", Rate::new("r", 1, 160).unwrap()),
        };
        let run = run(&pop, &facts, &period(), &cfg).unwrap();
        let by = |n: u128| run.customers.iter().find(|x| x.customer == id(n)).unwrap();
        assert_eq!(by(1).monetary_converted, Some(13_000));
        assert_eq!(by(2).monetary_converted, Some(625));
        // A 13000 > B 625 -> A 4, B 2
        assert_eq!(by(1).scores.as_ref().unwrap().m, 4);
        assert_eq!(by(2).scores.as_ref().unwrap().m, 2);
        assert!(by(2).scores.as_ref().unwrap().m_by_currency.is_empty());
    }

    #[test]
    fn thresholds_score_and_invert_recency() {
        let facts = vec![
            fact(1, 1, t(2024, 12, 30), "EUR", 100), // 1 day
            fact(2, 2, t(2024, 11, 1), "EUR", 100),  // 60 days
            fact(3, 3, t(2024, 1, 2), "EUR", 100),   // 364 days
        ];
        let cfg = RfmConfig {
            bins: 3,
            recency: Binning::Thresholds {
                values: vec![30, 90],
            },
            frequency: Binning::Thresholds { values: vec![2, 5] },
            monetary: Binning::ThresholdsPerCurrency {
                values: BTreeMap::from([("EUR".into(), vec![100, 10_000])]),
            },
            segments: SegmentMap::classic(3),
            ..Default::default()
        };
        let run = run(&[], &facts, &period(), &cfg).unwrap();
        let s: Vec<(u8, u8, u8)> = run
            .customers
            .iter()
            .map(|c| {
                let s = c.scores.as_ref().unwrap();
                (s.r, s.f, s.m)
            })
            .collect();
        // recency 1 -> bin 1 -> score 3; 60 -> bin 2 -> 2; 364 -> bin 3 -> 1.
        // frequency 1 < 2 -> 1. monetary 100 >= 100 -> 2.
        assert_eq!(s, vec![(3, 1, 2), (2, 1, 2), (1, 1, 2)]);
    }

    #[test]
    fn config_validation_names_fields() {
        let cfg = RfmConfig {
            bins: 11,
            ..Default::default()
        };
        assert!(cfg.validate().unwrap_err().has("bins", Problem::OutOfRange));

        let cfg = RfmConfig {
            recency: Binning::Thresholds {
                values: vec![30, 30, 90, 180],
            },
            frequency: Binning::Thresholds { values: vec![1, 2] },
            monetary: Binning::Thresholds {
                values: vec![1, 2, 3, 4],
            },
            ..Default::default()
        };
        let e = cfg.validate().unwrap_err();
        assert!(e.has("recency.values[1]", Problem::NotIncreasing), "{e:?}");
        assert!(e.has("frequency.values", Problem::WrongCount));
        assert!(e.has("monetary.method", Problem::Conflict));

        // The classic map for 5 bins does not fit 4 bins.
        let cfg = RfmConfig {
            bins: 4,
            ..Default::default()
        };
        let e = cfg.validate().unwrap_err();
        assert!(
            e.has("segments.rules[0].r.min", Problem::OutOfRange),
            "{e:?}"
        );
    }

    #[test]
    fn segment_map_validation() {
        for bins in MIN_BINS..=MAX_BINS {
            SegmentMap::classic(bins).validate(bins).unwrap();
        }
        assert_eq!(SegmentMap::classic(5).rules.len(), 11);
        let map = SegmentMap {
            rules: vec![
                SegmentRule {
                    segment: "top".into(),
                    r: Some(ScoreRange::new(4, 5)),
                    f: None,
                    m: None,
                },
                SegmentRule {
                    segment: "shadowed".into(),
                    r: Some(ScoreRange::new(5, 5)),
                    f: None,
                    m: Some(ScoreRange::new(1, 1)),
                },
            ],
        };
        let e = map.validate(5).unwrap_err();
        assert!(e.has("rules", Problem::Uncovered));
        assert!(e.has("rules[1]", Problem::Unreachable));
        let mut fixed = map.clone();
        fixed.rules[1] = SegmentRule {
            segment: "rest".into(),
            r: None,
            f: None,
            m: None,
        };
        fixed.validate(5).unwrap();
        assert_eq!(fixed.segment_of(5, 1, 1), Some("top"));
        assert_eq!(fixed.segment_of(3, 5, 5), Some("rest"));
    }

    #[test]
    fn classic_grid_by_hand() {
        let m = SegmentMap::classic(5);
        let name = |r, f| m.segment_of(r, f, 1).unwrap();
        assert_eq!(name(5, 5), "champions");
        assert_eq!(name(5, 1), "new_customers");
        assert_eq!(name(4, 1), "promising");
        assert_eq!(name(4, 4), "loyal");
        assert_eq!(name(3, 3), "need_attention");
        assert_eq!(name(3, 2), "about_to_sleep");
        assert_eq!(name(2, 4), "at_risk");
        assert_eq!(name(1, 5), "cannot_lose_them");
        assert_eq!(name(2, 1), "hibernating");
        assert_eq!(name(1, 2), "lost");
        // 10 bins: score 10 reads as 5, score 1 as 1.
        let m10 = SegmentMap::classic(10);
        assert_eq!(m10.segment_of(10, 10, 1), Some("champions"));
        assert_eq!(m10.segment_of(1, 1, 1), Some("lost"));
    }

    #[test]
    fn config_round_trips_as_json() {
        let cfg = RfmConfig {
            monetary: Binning::Thresholds {
                values: vec![1, 2, 3, 4],
            },
            monetary_basis: MonetaryBasis::Converted {
                rates: RateTable::new("EUR").with_rate("JPY", Rate::new("r", 1, 160).unwrap()),
            },
            ..Default::default()
        };
        let json = serde_json::to_string(&cfg).unwrap();
        let back: RfmConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, cfg);
        // A partial config takes the defaults.
        let partial: RfmConfig = serde_json::from_str(r#"{"bins": 5}"#).unwrap();
        assert_eq!(partial, RfmConfig::default());
    }

    #[test]
    fn bad_currency_and_period_are_named() {
        let facts = vec![fact(1, 1, t(2024, 5, 1), "EURO", 100)];
        let e = measure(&[], &facts, &period()).unwrap_err();
        assert!(e.has("facts[0].currency", Problem::Currency));
        let p = Period {
            from: t(2025, 1, 1),
            as_of: t(2024, 1, 1),
        };
        assert!(
            measure(&[], &[], &p)
                .unwrap_err()
                .has("period.from", Problem::OutOfRange)
        );
    }

    proptest! {
        #[test]
        fn quantile_scores_in_range_and_monotone(values in proptest::collection::vec(-1000i64..1000, 1..60), bins in MIN_BINS..=MAX_BINS) {
            let s = quantile_scores(&values, bins);
            for (i, a) in values.iter().enumerate() {
                prop_assert!((1..=bins).contains(&s[i]));
                for (j, b) in values.iter().enumerate() {
                    if a < b { prop_assert!(s[i] <= s[j]); }
                    if a == b { prop_assert_eq!(s[i], s[j]); }
                }
            }
        }

        #[test]
        fn rfm_scores_in_range_and_m_monotone(
            orders in proptest::collection::vec((0u128..12, 0i64..400, -5_000i64..50_000), 1..80),
            bins in MIN_BINS..=MAX_BINS,
        ) {
            let as_of = t(2024, 12, 31);
            let facts: Vec<OrderFact> = orders.iter().enumerate().map(|(k, (c, days, amount))| OrderFact {
                customer: id(*c),
                order: id(1000 + k as u128),
                time: as_of - chrono::Duration::days(*days),
                currency: "EUR".into(),
                amount: *amount,
            }).collect();
            let cfg = RfmConfig {
                bins,
                segments: SegmentMap::classic(bins),
                monetary_basis: MonetaryBasis::Converted { rates: RateTable::new("EUR") },
                ..Default::default()
            };
            let run = run(&[], &facts, &period(), &cfg).unwrap();
            let scored: Vec<&CustomerRfm> = run.customers.iter().filter(|c| c.scores.is_some()).collect();
            for a in &scored {
                let sa = a.scores.as_ref().unwrap();
                for s in [sa.r, sa.f, sa.m] {
                    prop_assert!((1..=bins).contains(&s));
                }
                for b in &scored {
                    let sb = b.scores.as_ref().unwrap();
                    if a.monetary_converted > b.monetary_converted { prop_assert!(sa.m >= sb.m); }
                    if a.measures.frequency > b.measures.frequency { prop_assert!(sa.f >= sb.f); }
                    if a.measures.recency_days < b.measures.recency_days { prop_assert!(sa.r >= sb.r); }
                }
            }
            // Per currency: within one currency, more money never means a lower score, and
            // M is the best per-currency score.
            let per = RfmConfig { bins, segments: SegmentMap::classic(bins), ..Default::default() };
            let mixed: Vec<OrderFact> = facts.iter().enumerate().map(|(k, f)| OrderFact {
                currency: if k % 3 == 0 { "JPY".into() } else { "EUR".into() },
                ..f.clone()
            }).collect();
            let run2 = super::run(&[], &mixed, &period(), &per).unwrap();
            let scored2: Vec<&CustomerRfm> = run2.customers.iter().filter(|c| c.scores.is_some()).collect();
            for a in &scored2 {
                let sa = a.scores.as_ref().unwrap();
                prop_assert_eq!(Some(&sa.m), sa.m_by_currency.values().max());
                for b in &scored2 {
                    let sb = b.scores.as_ref().unwrap();
                    for (code, ma) in &a.measures.monetary {
                        if let (Some(mb), Some(sca), Some(scb)) = (b.measures.monetary.get(code), sa.m_by_currency.get(code), sb.m_by_currency.get(code))
                            && ma > mb
                        {
                            prop_assert!(sca >= scb);
                        }
                    }
                }
            }
            // Scored iff a purchase exists.
            for c in &run.customers {
                prop_assert_eq!(c.scores.is_some(), c.measures.frequency > 0);
            }
        }
    }
}
