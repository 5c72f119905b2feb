//! A8 Reports: pure aggregation (periods in the tenant's time zone, sales by period and
//! dimension per currency, cohort retention, funnel conversion) and SVG charts ([`chart`]).
//!
//! * **Periods** ([`PeriodKey`]) are calendar periods of the tenant's time zone (IANA name,
//!   e.g. `Asia/Shanghai`; DST handled by chrono-tz): an instant belongs to the day, ISO week
//!   (Monday first), month, quarter or year its *local* date falls in.
//! * **Sales** ([`sales_by_period`]) add amounts (minor units, `i128`) per period, dimension
//!   (region, team, rep, product group: whatever key the caller gives) and **currency**:
//!   currencies are never added together; convert first with
//!   [`RateTable`](crate::money::RateTable) if one currency is wanted.
//! * **Cohorts** ([`cohort_retention`]): a customer's cohort is the local month of its first
//!   purchase; cell `k` of a cohort counts the customers of the cohort with a purchase in the
//!   `k`-th month after it (cell 0 is the cohort's size).
//! * **Funnel** ([`funnel`]): entities (customers, leads) and the stages they reached, over an
//!   ordered list of stages; conversion between consecutive stages as exact ratios.

pub mod chart;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Datelike, Days, Months, NaiveDate, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Collector, Error, Problem, Result};
use crate::money::{CurrencyAmounts, add_amount, currency_exponent};

/// Most periods [`periods_between`] returns (ten years of days).
pub const MAX_PERIODS: usize = 3660;

/// A calendar granularity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Granularity {
    /// Calendar day.
    Day,
    /// ISO week, Monday first.
    Week,
    /// Calendar month.
    Month,
    /// Calendar quarter.
    Quarter,
    /// Calendar year.
    Year,
}

/// A calendar period: its granularity and its first local date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PeriodKey {
    /// Granularity.
    pub granularity: Granularity,
    /// First local date of the period.
    pub start: NaiveDate,
}

impl PeriodKey {
    /// The period of `granularity` containing the local date `date`.
    pub fn of_date(date: NaiveDate, granularity: Granularity) -> Self {
        let start = match granularity {
            Granularity::Day => date,
            Granularity::Week => date
                .checked_sub_days(Days::new(u64::from(date.weekday().num_days_from_monday())))
                .unwrap_or(date),
            Granularity::Month => date.with_day(1).unwrap_or(date),
            Granularity::Quarter => {
                let m = (date.month0() / 3) * 3 + 1;
                NaiveDate::from_ymd_opt(date.year(), m, 1).unwrap_or(date)
            }
            Granularity::Year => NaiveDate::from_ymd_opt(date.year(), 1, 1).unwrap_or(date),
        };
        PeriodKey { granularity, start }
    }

    /// The next period (saturating at the end of the calendar).
    pub fn next(self) -> Self {
        let start = match self.granularity {
            Granularity::Day => self.start.checked_add_days(Days::new(1)),
            Granularity::Week => self.start.checked_add_days(Days::new(7)),
            Granularity::Month => self.start.checked_add_months(Months::new(1)),
            Granularity::Quarter => self.start.checked_add_months(Months::new(3)),
            Granularity::Year => self.start.checked_add_months(Months::new(12)),
        };
        PeriodKey {
            granularity: self.granularity,
            start: start.unwrap_or(self.start),
        }
    }

    /// A label: `2024-03-05`, `2024-W10` (ISO week), `2024-03`, `2024-Q1`, `2024`.
    pub fn label(&self) -> String {
        let d = self.start;
        match self.granularity {
            Granularity::Day => d.format("%Y-%m-%d").to_string(),
            Granularity::Week => {
                let w = d.iso_week();
                format!("{}-W{:02}", w.year(), w.week())
            }
            Granularity::Month => d.format("%Y-%m").to_string(),
            Granularity::Quarter => format!("{}-Q{}", d.year(), d.month0() / 3 + 1),
            Granularity::Year => format!("{}", d.year()),
        }
    }
}

/// Parses an IANA time zone name; an error naming `field` otherwise.
pub fn parse_time_zone(field: &str, name: &str) -> Result<Tz> {
    name.parse::<Tz>().map_err(|_| {
        Error::field(
            field,
            Problem::Unknown,
            format!("{name:?} is not an IANA time zone name"),
        )
    })
}

/// The period of `granularity` that `time` falls in, in the time zone `tz`.
pub fn bucket(time: DateTime<Utc>, tz: Tz, granularity: Granularity) -> PeriodKey {
    PeriodKey::of_date(time.with_timezone(&tz).date_naive(), granularity)
}

/// Every period from `first` to `last` inclusive (same granularity as `first`), at most
/// [`MAX_PERIODS`]; empty when `last` is before `first`.
pub fn periods_between(first: PeriodKey, last: PeriodKey) -> Vec<PeriodKey> {
    let mut out = Vec::new();
    let mut p = first;
    while p.start <= last.start && out.len() < MAX_PERIODS {
        out.push(p);
        let n = p.next();
        if n == p {
            break;
        }
        p = n;
    }
    out
}

/// One sale (an order or an order line) for sales reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaleFact {
    /// When.
    pub time: DateTime<Utc>,
    /// The order (lines of one order count as one order).
    pub order: Uuid,
    /// The dimension's key: a region, team, rep, product group ("" for none).
    pub dimension: String,
    /// ISO 4217 code.
    pub currency: String,
    /// Amount in minor units (negative for refunds).
    pub amount: i64,
}

/// One cell of a sales report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SalesCell {
    /// The period.
    pub period: PeriodKey,
    /// The dimension's key.
    pub dimension: String,
    /// ISO 4217 code.
    pub currency: String,
    /// Sum of amounts, minor units.
    pub amount: i128,
    /// Distinct orders.
    pub orders: u64,
}

/// Sales by period × dimension × currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SalesReport {
    /// Granularity of the periods.
    pub granularity: Granularity,
    /// The time zone the periods are in.
    pub time_zone: String,
    /// Cells ordered by period, dimension, currency; only non-empty cells.
    pub cells: Vec<SalesCell>,
    /// Totals per currency.
    pub totals: CurrencyAmounts,
}

impl SalesReport {
    /// The currencies present.
    pub fn currencies(&self) -> BTreeSet<&str> {
        self.cells.iter().map(|c| c.currency.as_str()).collect()
    }

    /// The dimensions present.
    pub fn dimensions(&self) -> BTreeSet<&str> {
        self.cells.iter().map(|c| c.dimension.as_str()).collect()
    }

    /// Chart data of one currency: every period from the first to the last (gaps are 0) as
    /// categories, one series per dimension, values in major units (for display only).
    pub fn chart(&self, currency: &str, title: &str) -> Result<chart::ChartData> {
        let exp = currency_exponent("currency", currency)?;
        let cells: Vec<&SalesCell> = self
            .cells
            .iter()
            .filter(|c| c.currency == currency)
            .collect();
        let (Some(first), Some(last)) = (
            cells.iter().map(|c| c.period).min(),
            cells.iter().map(|c| c.period).max(),
        ) else {
            return Err(Error::field(
                "currency",
                Problem::Unknown,
                format!("the report has no sales in {currency}"),
            ));
        };
        let periods = periods_between(first, last);
        let index: HashMap<PeriodKey, usize> =
            periods.iter().enumerate().map(|(i, p)| (*p, i)).collect();
        let scale = 10f64.powi(i32::try_from(exp).unwrap_or(2));
        let mut series: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        for c in &cells {
            let values = series
                .entry(c.dimension.as_str())
                .or_insert_with(|| vec![0.0; periods.len()]);
            if let Some(i) = index.get(&c.period) {
                values[*i] += c.amount as f64 / scale;
            }
        }
        Ok(chart::ChartData {
            title: title.to_owned(),
            y_label: currency.to_owned(),
            categories: periods.iter().map(PeriodKey::label).collect(),
            series: series
                .into_iter()
                .map(|(name, values)| chart::Series {
                    name: if name.is_empty() {
                        "(none)".into()
                    } else {
                        name.to_owned()
                    },
                    values,
                })
                .collect(),
        })
    }
}

/// Sums sales per period (in `tz`), dimension and currency. Errors: a currency that is not
/// ISO 4217 (`facts[i].currency`).
pub fn sales_by_period(
    facts: &[SaleFact],
    tz: Tz,
    granularity: Granularity,
) -> Result<SalesReport> {
    let mut checked: HashSet<&str> = HashSet::new();
    type Key<'a> = (PeriodKey, &'a str, &'a str);
    let mut cells: BTreeMap<Key<'_>, (i128, HashSet<Uuid>)> = BTreeMap::new();
    let mut totals = CurrencyAmounts::new();
    for (i, f) in facts.iter().enumerate() {
        if !checked.contains(f.currency.as_str()) {
            currency_exponent(&format!("facts[{i}].currency"), &f.currency)?;
            checked.insert(f.currency.as_str());
        }
        let key = (
            bucket(f.time, tz, granularity),
            f.dimension.as_str(),
            f.currency.as_str(),
        );
        let cell = cells.entry(key).or_default();
        cell.0 = cell.0.saturating_add(i128::from(f.amount));
        cell.1.insert(f.order);
        add_amount(&mut totals, &f.currency, i128::from(f.amount));
    }
    Ok(SalesReport {
        granularity,
        time_zone: tz.name().to_owned(),
        cells: cells
            .into_iter()
            .map(
                |((period, dimension, currency), (amount, orders))| SalesCell {
                    period,
                    dimension: dimension.to_owned(),
                    currency: currency.to_owned(),
                    amount,
                    orders: orders.len() as u64,
                },
            )
            .collect(),
        totals,
    })
}

/// One cohort: the customers whose first purchase fell in `cohort`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CohortRow {
    /// The month of the first purchase.
    pub cohort: PeriodKey,
    /// Customers in the cohort.
    pub size: u64,
    /// `active[k]`: customers of the cohort with a purchase in the `k`-th month after the
    /// cohort's month (`active[0] == size`), up to the as-of month.
    pub active: Vec<u64>,
}

impl CohortRow {
    /// `active[k] / size`, or `None` past the row's end.
    pub fn rate(&self, k: usize) -> Option<f64> {
        let a = self.active.get(k)?;
        (self.size > 0).then(|| *a as f64 / self.size as f64)
    }
}

/// Cohort retention by first-purchase month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CohortMatrix {
    /// The time zone months are taken in.
    pub time_zone: String,
    /// Cohorts in month order.
    pub rows: Vec<CohortRow>,
}

fn month_index(d: NaiveDate) -> i64 {
    i64::from(d.year()) * 12 + i64::from(d.month0())
}

/// Builds the retention matrix from purchases `(customer, time)` (refunds excluded by the
/// caller); purchases after `as_of` are ignored. Rows end at the as-of month.
pub fn cohort_retention(
    purchases: &[(Uuid, DateTime<Utc>)],
    tz: Tz,
    as_of: DateTime<Utc>,
) -> CohortMatrix {
    let last = month_index(bucket(as_of, tz, Granularity::Month).start);
    let mut months: HashMap<Uuid, BTreeSet<i64>> = HashMap::new();
    for (c, t) in purchases.iter().filter(|(_, t)| *t <= as_of) {
        months
            .entry(*c)
            .or_default()
            .insert(month_index(bucket(*t, tz, Granularity::Month).start));
    }
    let mut rows: BTreeMap<i64, CohortRow> = BTreeMap::new();
    for set in months.values() {
        let Some(first) = set.first().copied() else {
            continue;
        };
        let len = usize::try_from(last - first + 1).unwrap_or(0);
        let row = rows.entry(first).or_insert_with(|| {
            let y = i32::try_from(first.div_euclid(12)).unwrap_or(1970);
            let m = u32::try_from(first.rem_euclid(12) + 1).unwrap_or(1);
            CohortRow {
                cohort: PeriodKey {
                    granularity: Granularity::Month,
                    start: NaiveDate::from_ymd_opt(y, m, 1).unwrap_or(NaiveDate::MIN),
                },
                size: 0,
                active: vec![0; len],
            }
        });
        row.size += 1;
        for m in set {
            if let Some(cell) = usize::try_from(m - first)
                .ok()
                .and_then(|k| row.active.get_mut(k))
            {
                *cell += 1;
            }
        }
    }
    CohortMatrix {
        time_zone: tz.name().to_owned(),
        rows: rows.into_values().collect(),
    }
}

/// An exact ratio with its rate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Ratio {
    /// Numerator.
    pub numerator: u64,
    /// Denominator.
    pub denominator: u64,
    /// `numerator / denominator`, `None` when the denominator is 0.
    pub rate: Option<f64>,
}

impl Ratio {
    /// `numerator / denominator`.
    pub fn new(numerator: u64, denominator: u64) -> Self {
        Self {
            numerator,
            denominator,
            rate: (denominator > 0).then(|| numerator as f64 / denominator as f64),
        }
    }
}

/// One step of a funnel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunnelStep {
    /// The stage.
    pub stage: String,
    /// Entities that reached it.
    pub reached: u64,
    /// `reached / previous step's reached` (`None` for the first step).
    pub from_previous: Option<Ratio>,
    /// `reached / first step's reached`.
    pub from_first: Ratio,
}

/// A funnel over ordered stages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Funnel {
    /// Steps in stage order.
    pub steps: Vec<FunnelStep>,
    /// Stage names in the input that are not among the stages (e.g. of an older model), ignored.
    pub unknown_stages: u64,
}

/// Conversion between ordered `stages`. `reached` gives, per entity, the stages it reached
/// (e.g. from its lifecycle history). With `cumulative`, reaching a stage counts for every
/// earlier stage too (an entity in the third stage passed the first two), so counts never grow
/// along the funnel; without it, only the stages listed count. Errors: empty or duplicate
/// stages (`stages`, `stages[i]`).
pub fn funnel<S: AsRef<str>>(stages: &[S], reached: &[Vec<S>], cumulative: bool) -> Result<Funnel> {
    let mut c = Collector::default();
    if stages.is_empty() {
        c.add(
            "stages",
            Problem::Required,
            "at least one stage is required",
        );
    }
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, s) in stages.iter().enumerate() {
        if s.as_ref().trim().is_empty() {
            c.add(format!("stages[{i}]"), Problem::Required, "is required");
        } else if index.insert(s.as_ref(), i).is_some() {
            c.add(
                format!("stages[{i}]"),
                Problem::Duplicate,
                format!("stage {:?} appears twice", s.as_ref()),
            );
        }
    }
    c.finish()?;
    let mut counts = vec![0u64; stages.len()];
    let mut unknown = 0u64;
    for entity in reached {
        let mut hit = vec![false; stages.len()];
        for s in entity {
            match index.get(s.as_ref()) {
                Some(i) => hit[*i] = true,
                None => unknown += 1,
            }
        }
        if cumulative && let Some(furthest) = hit.iter().rposition(|h| *h) {
            for h in hit.iter_mut().take(furthest + 1) {
                *h = true;
            }
        }
        for (n, h) in counts.iter_mut().zip(&hit) {
            if *h {
                *n += 1;
            }
        }
    }
    let first = counts.first().copied().unwrap_or(0);
    let steps = stages
        .iter()
        .enumerate()
        .map(|(i, s)| FunnelStep {
            stage: s.as_ref().to_owned(),
            reached: counts[i],
            from_previous: i.checked_sub(1).map(|p| Ratio::new(counts[i], counts[p])),
            from_first: Ratio::new(counts[i], first),
        })
        .collect();
    Ok(Funnel {
        steps,
        unknown_stages: unknown,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn utc(y: i32, mo: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, 0, 0).unwrap()
    }

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn buckets_in_the_tenant_time_zone() {
        let sh = parse_time_zone("tz", "Asia/Shanghai").unwrap();
        let ny = parse_time_zone("tz", "America/New_York").unwrap();
        // 2024-03-31 17:00 UTC is 2024-04-01 01:00 in Shanghai, 13:00 on 03-31 in New York.
        let t = utc(2024, 3, 31, 17);
        assert_eq!(bucket(t, sh, Granularity::Month).label(), "2024-04");
        assert_eq!(bucket(t, ny, Granularity::Month).label(), "2024-03");
        assert_eq!(bucket(t, sh, Granularity::Quarter).label(), "2024-Q2");
        assert_eq!(bucket(t, ny, Granularity::Quarter).label(), "2024-Q1");
        assert_eq!(bucket(t, sh, Granularity::Day).label(), "2024-04-01");
        // 2024-04-01 is a Monday: ISO week 14 starts that day in Shanghai.
        let w = bucket(t, sh, Granularity::Week);
        assert_eq!((w.start, w.label()), (date(2024, 4, 1), "2024-W14".into()));
        let w = bucket(t, ny, Granularity::Week);
        assert_eq!((w.start, w.label()), (date(2024, 3, 25), "2024-W13".into()));
        // ISO week-year differs from the calendar year: 2024-12-30 is 2025-W01.
        let w = PeriodKey::of_date(date(2024, 12, 31), Granularity::Week);
        assert_eq!(
            (w.start, w.label()),
            (date(2024, 12, 30), "2025-W01".into())
        );
        assert_eq!(bucket(t, sh, Granularity::Year).label(), "2024");
        assert!(
            parse_time_zone("tz", "Mars/Olympus")
                .unwrap_err()
                .has("tz", Problem::Unknown)
        );
    }

    #[test]
    fn period_ranges() {
        let a = PeriodKey::of_date(date(2023, 11, 15), Granularity::Month);
        let b = PeriodKey::of_date(date(2024, 2, 3), Granularity::Month);
        let labels: Vec<String> = periods_between(a, b).iter().map(PeriodKey::label).collect();
        assert_eq!(labels, ["2023-11", "2023-12", "2024-01", "2024-02"]);
        assert!(periods_between(b, a).is_empty());
        let q = PeriodKey::of_date(date(2024, 11, 1), Granularity::Quarter);
        assert_eq!(q.next().label(), "2025-Q1");
    }

    #[test]
    fn hand_checked_sales_never_mix_currencies() {
        let tz = parse_time_zone("tz", "Europe/Berlin").unwrap();
        let f = |t, o: u128, dim: &str, cur: &str, amount| SaleFact {
            time: t,
            order: Uuid::from_u128(o),
            dimension: dim.into(),
            currency: cur.into(),
            amount,
        };
        let facts = vec![
            f(utc(2024, 1, 10, 9), 1, "north", "EUR", 10_000),
            f(utc(2024, 1, 10, 9), 1, "north", "EUR", 2_550), // second line, same order
            f(utc(2024, 1, 20, 9), 2, "north", "EUR", -1_000), // refund
            f(utc(2024, 1, 31, 23), 3, "north", "EUR", 700),  // 2024-02-01 00:00 in Berlin
            f(utc(2024, 1, 15, 9), 4, "north", "CNY", 88_800),
            f(utc(2024, 1, 15, 9), 5, "south", "EUR", 5),
        ];
        let r = sales_by_period(&facts, tz, Granularity::Month).unwrap();
        let cells: Vec<(String, &str, &str, i128, u64)> = r
            .cells
            .iter()
            .map(|c| {
                (
                    c.period.label(),
                    c.dimension.as_str(),
                    c.currency.as_str(),
                    c.amount,
                    c.orders,
                )
            })
            .collect();
        assert_eq!(
            cells,
            vec![
                ("2024-01".into(), "north", "CNY", 88_800, 1),
                ("2024-01".into(), "north", "EUR", 11_550, 2),
                ("2024-01".into(), "south", "EUR", 5, 1),
                ("2024-02".into(), "north", "EUR", 700, 1),
            ]
        );
        assert_eq!(
            r.totals,
            CurrencyAmounts::from([("CNY".into(), 88_800), ("EUR".into(), 12_255)])
        );
        assert_eq!(r.time_zone, "Europe/Berlin");
        let chart = r.chart("EUR", "Sales").unwrap();
        assert_eq!(chart.categories, ["2024-01", "2024-02"]);
        assert_eq!(chart.series[0].name, "north");
        assert_eq!(chart.series[0].values, vec![115.5, 7.0]);
        assert_eq!(chart.series[1].values, vec![0.05, 0.0]);
        assert!(
            r.chart("USD", "x")
                .unwrap_err()
                .has("currency", Problem::Unknown)
        );
        let bad = vec![f(utc(2024, 1, 1, 0), 9, "x", "EURO", 1)];
        assert!(
            sales_by_period(&bad, tz, Granularity::Day)
                .unwrap_err()
                .has("facts[0].currency", Problem::Currency)
        );
    }

    #[test]
    fn hand_checked_cohorts() {
        let tz = parse_time_zone("tz", "UTC").unwrap();
        let c = |n: u128| Uuid::from_u128(n);
        let p = vec![
            // January cohort: 1, 2, 3
            (c(1), utc(2024, 1, 5, 0)),
            (c(1), utc(2024, 2, 5, 0)),
            (c(1), utc(2024, 3, 5, 0)),
            (c(2), utc(2024, 1, 9, 0)),
            (c(2), utc(2024, 3, 9, 0)),
            (c(3), utc(2024, 1, 20, 0)),
            (c(3), utc(2024, 1, 21, 0)), // twice in one month counts once
            // February cohort: 4
            (c(4), utc(2024, 2, 1, 0)),
            (c(4), utc(2024, 3, 1, 0)),
            // after as_of: ignored
            (c(5), utc(2024, 4, 1, 0)),
        ];
        let m = cohort_retention(&p, tz, utc(2024, 3, 31, 0));
        assert_eq!(m.rows.len(), 2);
        assert_eq!(m.rows[0].cohort.label(), "2024-01");
        assert_eq!(
            (m.rows[0].size, m.rows[0].active.clone()),
            (3, vec![3, 1, 2])
        );
        assert_eq!(m.rows[1].cohort.label(), "2024-02");
        assert_eq!((m.rows[1].size, m.rows[1].active.clone()), (1, vec![1, 1]));
        assert_eq!(m.rows[0].rate(2), Some(2.0 / 3.0));
        assert_eq!(m.rows[1].rate(2), None);
    }

    #[test]
    fn hand_checked_funnel() {
        let stages = ["lead", "qualified", "customer"];
        let reached = vec![
            vec!["lead"],
            vec!["lead", "qualified"],
            vec!["customer"], // cumulative: counts for lead and qualified too
            vec!["lead", "gone"],
        ];
        let f = funnel(&stages, &reached, true).unwrap();
        let counts: Vec<u64> = f.steps.iter().map(|s| s.reached).collect();
        assert_eq!(counts, vec![4, 2, 1]);
        assert_eq!(f.steps[1].from_previous, Some(Ratio::new(2, 4)));
        assert_eq!(f.steps[2].from_previous.unwrap().rate, Some(0.5));
        assert_eq!(f.steps[2].from_first.rate, Some(0.25));
        assert_eq!(f.unknown_stages, 1);
        let f = funnel(&stages, &reached, false).unwrap();
        let counts: Vec<u64> = f.steps.iter().map(|s| s.reached).collect();
        assert_eq!(counts, vec![3, 1, 1]);
        let e = funnel(&["a", "b", "a"], &[], true).unwrap_err();
        assert!(e.has("stages[2]", Problem::Duplicate));
        assert_eq!(Ratio::new(1, 0).rate, None);
    }

    proptest! {
        #[test]
        fn bucket_contains_the_local_date(secs in 0i64..4_000_000_000, g in 0usize..5) {
            let g = [Granularity::Day, Granularity::Week, Granularity::Month, Granularity::Quarter, Granularity::Year][g];
            let tz: Tz = "America/Sao_Paulo".parse().unwrap();
            let t = DateTime::<Utc>::from_timestamp(secs, 0).unwrap();
            let p = bucket(t, tz, g);
            let local = t.with_timezone(&tz).date_naive();
            prop_assert!(p.start <= local);
            prop_assert!(local < p.next().start);
            prop_assert_eq!(PeriodKey::of_date(p.start, g), p);
        }

        #[test]
        fn cumulative_funnel_never_grows(reached in proptest::collection::vec(proptest::collection::vec(0usize..4, 0..4), 0..30)) {
            let stages = ["a", "b", "c", "d"];
            let reached: Vec<Vec<&str>> = reached.iter().map(|r| r.iter().map(|i| stages[*i]).collect()).collect();
            let f = funnel(&stages, &reached, true).unwrap();
            for w in f.steps.windows(2) {
                prop_assert!(w[1].reached <= w[0].reached);
            }
        }
    }
}
