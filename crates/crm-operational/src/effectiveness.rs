//! Lead effectiveness (O5): of the leads created in a period, how many were contacted, how
//! fast, how many qualified and converted, per source, owner, campaign or calendar period of
//! the tenant's time zone, with a total.
//!
//! Definitions (a cohort view: the leads *created* in `[start_time, end_time)`, as they stand
//! now):
//!
//! - **created**: live (not deleted) leads whose `create_time` is in the range.
//! - **contacted**: those with a `first_touch_time` or a status other than NEW. The first
//!   touch is the moment the lead first left NEW (logging the first activity on a NEW lead
//!   does that in the same transaction: see [`crate::lead::Lead::first_touch_time`]); a lead
//!   created beyond NEW counts as contacted without a time.
//! - **time to first touch**: `first_touch_time - create_time` (milliseconds) of the
//!   contacted leads that have one (`timed`); its median and 90th percentile are linear
//!   interpolations between the closest ranks (PostgreSQL's `percentile_cont`).
//! - **qualified**: status QUALIFIED or CONVERTED (a converted lead was qualified).
//! - **converted**: status CONVERTED.
//! - rates are over `created` (0 when nothing was created), so within 0..=1.
//!
//! The first part of the module is pure (periods, percentiles, rates, totals). The report
//! itself ([`lead_effectiveness`]) is two grouped statements on the leads table under the
//! caller's read scope: the counts per group, and, per group, only the ranked durations the
//! percentiles need (window functions select at most four rows per group), so memory is
//! bounded by the number of groups whatever the tenant's size. Periods are put in their
//! bucket by one `CASE` over their local starts (as UTC instants), so the database needs no
//! time-zone support (SQLite has none).

use crate::lead::{Lead, LeadStatus};
use chrono::{DateTime, Datelike, Days, Months, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use crm_core::access::Action;
use crm_core::error::{Error, Result};
use crm_core::resource::Collection;
use crm_core::service::Ctx;
use sea_orm::sea_query::{
    Alias, CaseStatement, Condition, Expr, ExprTrait, Func, Query, SelectStatement,
};
use sea_orm::{ConnectionTrait, DbBackend, QueryResult};
use std::collections::BTreeMap;
use uuid::Uuid;

/// The longest range a report covers: three years (of 365 days, plus a leap day).
pub const MAX_SPAN_DAYS: i64 = 3 * 365 + 1;

/// What the rows are grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GroupBy {
    /// The lead's `source` (`""` for none).
    #[default]
    Source,
    /// The lead's owner.
    Owner,
    /// The lead's `campaign` (`""` for none).
    Campaign,
    /// The calendar period of the lead's `create_time` in the report's time zone.
    Period,
}

/// The calendar granularity of [`GroupBy::Period`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Granularity {
    /// Local calendar day.
    Day,
    /// ISO week, Monday first.
    Week,
    /// Calendar month.
    #[default]
    Month,
}

/// A calendar period of a time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Period {
    /// Its granularity.
    pub granularity: Granularity,
    /// Its first local date.
    pub start: NaiveDate,
    /// Its first instant (local midnight of `start`, or the first instant after a DST gap).
    pub start_time: DateTime<Utc>,
}

impl Period {
    /// `2026-03-05`, `2026-W10` (ISO week) or `2026-03`.
    pub fn label(&self) -> String {
        let d = self.start;
        match self.granularity {
            Granularity::Day => d.format("%Y-%m-%d").to_string(),
            Granularity::Week => {
                let w = d.iso_week();
                format!("{}-W{:02}", w.year(), w.week())
            }
            Granularity::Month => d.format("%Y-%m").to_string(),
        }
    }
}

/// The first local date of the period of `granularity` holding `date`.
pub fn period_start(date: NaiveDate, granularity: Granularity) -> NaiveDate {
    match granularity {
        Granularity::Day => date,
        Granularity::Week => date
            .checked_sub_days(Days::new(u64::from(date.weekday().num_days_from_monday())))
            .unwrap_or(date),
        Granularity::Month => date.with_day(1).unwrap_or(date),
    }
}

fn next_start(start: NaiveDate, granularity: Granularity) -> Option<NaiveDate> {
    match granularity {
        Granularity::Day => start.checked_add_days(Days::new(1)),
        Granularity::Week => start.checked_add_days(Days::new(7)),
        Granularity::Month => start.checked_add_months(Months::new(1)),
    }
}

/// The first instant of the local date `date` in `tz` (the first existing one when midnight
/// falls in a DST gap).
pub fn local_start(tz: Tz, date: NaiveDate) -> DateTime<Utc> {
    for h in 0..3 {
        if let Some(t) = NaiveTime::from_hms_opt(h, 0, 0)
            && let Some(local) = tz.from_local_datetime(&date.and_time(t)).earliest()
        {
            return local.with_timezone(&Utc);
        }
    }
    date.and_time(NaiveTime::MIN).and_utc()
}

/// Most periods [`periods`] returns (more than three years of days).
const MAX_PERIODS: usize = 1200;

/// The periods of `granularity` in `tz` that `[from, to)` touches, in order (empty when `to`
/// is not after `from`).
pub fn periods(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    tz: Tz,
    granularity: Granularity,
) -> Vec<Period> {
    let mut out = Vec::new();
    if to <= from {
        return out;
    }
    let last = period_start(
        (to - chrono::Duration::microseconds(1))
            .with_timezone(&tz)
            .date_naive(),
        granularity,
    );
    let mut start = period_start(from.with_timezone(&tz).date_naive(), granularity);
    while start <= last && out.len() < MAX_PERIODS {
        out.push(Period {
            granularity,
            start,
            start_time: local_start(tz, start),
        });
        match next_start(start, granularity) {
            Some(n) => start = n,
            None => break,
        }
    }
    out
}

/// The index in `periods` of the period holding `t`: what the report's SQL `CASE` computes
/// (the last period whose start is not after `t`; 0 before the first).
pub fn period_index(periods: &[Period], t: DateTime<Utc>) -> usize {
    periods
        .iter()
        .skip(1)
        .take_while(|p| p.start_time <= t)
        .count()
}

/// A quantile as the exact fraction `num / den` of the way from the lowest to the highest of
/// the sorted values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantile {
    /// Numerator.
    pub num: u64,
    /// Denominator (not 0).
    pub den: u64,
}

/// The median.
pub const MEDIAN: Quantile = Quantile { num: 1, den: 2 };
/// The 90th percentile.
pub const P90: Quantile = Quantile { num: 9, den: 10 };

impl Quantile {
    /// Where the quantile of `n` sorted values lies: the 0-based ranks of the two values it
    /// is between, and how far past the lower one, in `den`ths. `None` for no values.
    pub fn position(self, n: u64) -> Option<(u64, u64, u64)> {
        if n == 0 || self.den == 0 {
            return None;
        }
        let h = (n - 1).checked_mul(self.num)?;
        Some((h / self.den, h.div_ceil(self.den), h % self.den))
    }

    /// The quantile of `n` sorted values of which `value_at` gives the one at a 0-based
    /// rank, interpolated and rounded to the nearest unit; `None` when there are no values
    /// or a needed rank is missing.
    pub fn of_ranked(self, n: u64, value_at: impl Fn(u64) -> Option<i64>) -> Option<i64> {
        let (lo, hi, rem) = self.position(n)?;
        let a = i128::from(value_at(lo)?);
        let b = i128::from(value_at(hi)?);
        let den = i128::from(self.den);
        let step = (b - a) * i128::from(rem);
        // Rounded half away from zero.
        let offset = if step >= 0 {
            (step + den / 2) / den
        } else {
            (step - den / 2) / den
        };
        i64::try_from(a + offset).ok()
    }

    /// The quantile of sorted `values`.
    pub fn of_sorted(self, values: &[i64]) -> Option<i64> {
        let n = u64::try_from(values.len()).ok()?;
        self.of_ranked(n, |r| {
            usize::try_from(r).ok().and_then(|r| values.get(r).copied())
        })
    }
}

/// The quantiles of the report, in the order their ranks are asked of the database.
pub const QUANTILES: [Quantile; 2] = [MEDIAN, P90];

/// The ranked values of one group that the database returned: its number of values and the
/// value at each returned 0-based rank.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ranked {
    /// How many values the group has.
    pub n: u64,
    /// Value by 0-based rank (only the ranks [`QUANTILES`] need).
    pub values: BTreeMap<u64, i64>,
}

impl Ranked {
    /// The 0-based ranks [`QUANTILES`] need of `n` values.
    pub fn needed(n: u64) -> Vec<u64> {
        let mut out: Vec<u64> = QUANTILES
            .iter()
            .filter_map(|q| q.position(n))
            .flat_map(|(lo, hi, _)| [lo, hi])
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Keeps only the needed ranks of sorted `values` (what the database does).
    pub fn from_sorted(values: &[i64]) -> Self {
        let n = u64::try_from(values.len()).unwrap_or(u64::MAX);
        let values = Self::needed(n)
            .into_iter()
            .filter_map(|r| {
                let v = values.get(usize::try_from(r).ok()?)?;
                Some((r, *v))
            })
            .collect();
        Ranked { n, values }
    }

    /// The median and 90th percentile.
    pub fn touch(&self) -> Touch {
        let at = |r: u64| self.values.get(&r).copied();
        Touch {
            median_ms: MEDIAN.of_ranked(self.n, at),
            p90_ms: P90.of_ranked(self.n, at),
        }
    }
}

/// Time to first touch of a group, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Touch {
    /// Median; `None` when no lead of the group has a first-touch time.
    pub median_ms: Option<i64>,
    /// 90th percentile.
    pub p90_ms: Option<i64>,
}

/// The counts of a group (see the module documentation for their definitions).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Leads created in the range.
    pub created: u64,
    /// Of those, contacted.
    pub contacted: u64,
    /// Of those contacted, the ones with a first-touch time.
    pub timed: u64,
    /// Qualified (QUALIFIED or CONVERTED).
    pub qualified: u64,
    /// Converted.
    pub converted: u64,
}

/// `num / den`, 0 for nothing, capped to 0..=1.
pub fn rate(num: u64, den: u64) -> f64 {
    if den == 0 {
        return 0.0;
    }
    // u64 -> f64 loses precision only beyond 2^53 leads.
    #[allow(clippy::cast_precision_loss)]
    let r = num as f64 / den as f64;
    r.clamp(0.0, 1.0)
}

impl Counts {
    /// Adds another group's counts (saturating).
    pub fn add(&mut self, o: &Counts) {
        self.created = self.created.saturating_add(o.created);
        self.contacted = self.contacted.saturating_add(o.contacted);
        self.timed = self.timed.saturating_add(o.timed);
        self.qualified = self.qualified.saturating_add(o.qualified);
        self.converted = self.converted.saturating_add(o.converted);
    }

    /// Contacted over created.
    pub fn contact_rate(&self) -> f64 {
        rate(self.contacted, self.created)
    }

    /// Qualified over created.
    pub fn qualification_rate(&self) -> f64 {
        rate(self.qualified, self.created)
    }

    /// Converted over created.
    pub fn conversion_rate(&self) -> f64 {
        rate(self.converted, self.created)
    }
}

/// What a row is of.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GroupKey {
    /// A source or campaign value (`""` for none).
    Value(String),
    /// An owner (`None`: unowned).
    Owner(Option<Uuid>),
    /// A period.
    Period(Period),
}

impl GroupKey {
    /// As shown: the value, `users/{id}` (empty when unowned) or the period's label.
    pub fn label(&self) -> String {
        match self {
            GroupKey::Value(v) => v.clone(),
            GroupKey::Owner(o) => o.map(|id| format!("users/{id}")).unwrap_or_default(),
            GroupKey::Period(p) => p.label(),
        }
    }
}

/// One row of the report.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The group; `None` for the total.
    pub key: Option<GroupKey>,
    /// Its counts.
    pub counts: Counts,
    /// Its time to first touch.
    pub touch: Touch,
}

/// The rows in key order and their total: counts summed over the groups, with the total's
/// own time to first touch (percentiles do not add up).
pub fn assemble(groups: Vec<(GroupKey, Counts, Touch)>, total_touch: Touch) -> (Vec<Row>, Row) {
    let mut rows: Vec<Row> = groups
        .into_iter()
        .map(|(key, counts, touch)| Row {
            key: Some(key),
            counts,
            touch,
        })
        .collect();
    rows.sort_by(|a, b| a.key.cmp(&b.key));
    let mut total = Counts::default();
    for r in &rows {
        total.add(&r.counts);
    }
    let total = Row {
        key: None,
        counts: total,
        touch: total_touch,
    };
    (rows, total)
}

/// A report request.
#[derive(Debug, Clone)]
pub struct EffectivenessQuery {
    /// First instant (inclusive) of lead creation.
    pub start_time: DateTime<Utc>,
    /// Last instant (exclusive).
    pub end_time: DateTime<Utc>,
    /// The grouping.
    pub group_by: GroupBy,
    /// The period length of [`GroupBy::Period`].
    pub granularity: Granularity,
    /// IANA time zone of the periods; empty for UTC.
    pub time_zone: String,
    /// Only leads of this source.
    pub source: Option<String>,
    /// Only leads of this owner.
    pub owner: Option<Uuid>,
    /// Only leads of this campaign.
    pub campaign: Option<String>,
}

/// Checks a request: the range (`end_time` after `start_time`, at most [`MAX_SPAN_DAYS`])
/// and the time zone; INVALID_ARGUMENT naming the field otherwise. Returns the time zone
/// and its name.
pub fn validate(q: &EffectivenessQuery) -> Result<(Tz, String)> {
    let name = match q.time_zone.trim() {
        "" => "UTC",
        n => n,
    };
    let tz = name.parse::<Tz>().map_err(|_| {
        Error::invalid(
            "time_zone",
            format!("{name:?} is not an IANA time zone name"),
        )
    })?;
    if q.end_time <= q.start_time {
        return Err(Error::invalid("end_time", "must be after start_time"));
    }
    if q.end_time - q.start_time > chrono::Duration::days(MAX_SPAN_DAYS) {
        return Err(Error::invalid(
            "end_time",
            format!("at most {MAX_SPAN_DAYS} days (three years) after start_time"),
        ));
    }
    Ok((tz, name.to_owned()))
}

/// The report.
#[derive(Debug, Clone, PartialEq)]
pub struct EffectivenessReport {
    /// The grouping.
    pub group_by: GroupBy,
    /// The granularity (of [`GroupBy::Period`]).
    pub granularity: Granularity,
    /// The time zone's name (`UTC` when none was given).
    pub time_zone: String,
    /// One row per group: in value order; for periods, every period of the range in order,
    /// empty ones included.
    pub rows: Vec<Row>,
    /// The total.
    pub total: Row,
}

// ---------------------------------------------------------------------------------------
// The report on the database.

/// The lead field a grouping reads.
fn group_field(g: GroupBy) -> Option<&'static str> {
    match g {
        GroupBy::Source => Some("source"),
        GroupBy::Owner => Some("owner"),
        GroupBy::Campaign => Some("campaign"),
        GroupBy::Period => None,
    }
}

/// Computes the report for the caller: only the leads they may read, and only when they may
/// read the fields it is computed from (PERMISSION_DENIED `FIELD_HIDDEN` naming the field
/// otherwise).
pub async fn lead_effectiveness(ctx: &Ctx, q: &EffectivenessQuery) -> Result<EffectivenessReport> {
    let (tz, tz_name) = validate(q)?;
    let leads = Collection::of::<Lead>();
    let scope = ctx.scope_filter(&leads, Action::Read).await?;
    let mut read = vec!["status", "first_touch_time"];
    read.extend(group_field(q.group_by));
    for (f, used) in [
        ("source", q.source.is_some()),
        ("owner", q.owner.is_some()),
        ("campaign", q.campaign.is_some()),
    ] {
        if used {
            read.push(f);
        }
    }
    for f in read {
        if !ctx.may_read_field(&leads, f) {
            return Err(Error::permission_denied(
                "FIELD_HIDDEN",
                format!("the report reads field {f} of leads, which your roles may not read"),
            )
            .with("field", f));
        }
    }
    let periods = if q.group_by == GroupBy::Period {
        periods(q.start_time, q.end_time, tz, q.granularity)
    } else {
        Vec::new()
    };
    let backend = ctx.db.backend();
    let conn = &ctx.db.conn;
    let base = Base {
        ctx,
        q,
        scope: scope.as_ref(),
        backend,
    };

    // Counts per group.
    let mut groups: BTreeMap<GroupKey, (Counts, Ranked)> = BTreeMap::new();
    let counts = base.counts(group_expr(q.group_by, &periods));
    for r in conn.query_all(&counts).await? {
        let key = key_of(&r, q.group_by, &periods)?;
        let get = |c: &str| -> Result<u64> {
            Ok(u64::try_from(r.try_get::<Option<i64>>("", c)?.unwrap_or(0)).unwrap_or(0))
        };
        let c = Counts {
            created: get("created")?,
            contacted: get("contacted")?,
            timed: get("timed")?,
            qualified: get("qualified")?,
            converted: get("converted")?,
        };
        let e = groups.entry(key).or_default();
        e.0.add(&c);
    }
    // The ranked durations the percentiles need, per group and in total.
    let ranks = base.ranks(group_expr(q.group_by, &periods));
    for r in conn.query_all(&ranks).await? {
        let key = key_of(&r, q.group_by, &periods)?;
        let (n, rank, dur) = rank_row(&r)?;
        let e = groups.entry(key).or_default();
        e.1.n = n;
        e.1.values.insert(rank, dur);
    }
    let mut total = Ranked::default();
    for r in conn.query_all(&base.ranks(Expr::cust("0"))).await? {
        let (n, rank, dur) = rank_row(&r)?;
        total.n = n;
        total.values.insert(rank, dur);
    }
    if q.group_by == GroupBy::Period {
        for p in &periods {
            groups.entry(GroupKey::Period(*p)).or_default();
        }
    }
    let (rows, total) = assemble(
        groups
            .into_iter()
            .map(|(k, (c, r))| (k, c, r.touch()))
            .collect(),
        total.touch(),
    );
    Ok(EffectivenessReport {
        group_by: q.group_by,
        granularity: q.granularity,
        time_zone: tz_name,
        rows,
        total,
    })
}

/// The group column `g` of a grouping.
fn group_expr(g: GroupBy, periods: &[Period]) -> Expr {
    match g {
        GroupBy::Source => Expr::col("source"),
        GroupBy::Campaign => Expr::col("campaign"),
        GroupBy::Owner => Expr::col("owner_id"),
        GroupBy::Period => {
            let mut case = CaseStatement::new();
            for (i, p) in periods.iter().enumerate().skip(1) {
                let idx = i64::try_from(i - 1).unwrap_or(0);
                case = case.case(Expr::col("create_time").lt(p.start_time), idx);
            }
            case.finally(i64::try_from(periods.len().saturating_sub(1)).unwrap_or(0))
                .into()
        }
    }
}

fn key_of(r: &QueryResult, g: GroupBy, periods: &[Period]) -> Result<GroupKey> {
    Ok(match g {
        GroupBy::Source | GroupBy::Campaign => {
            GroupKey::Value(r.try_get::<Option<String>>("", "g")?.unwrap_or_default())
        }
        GroupBy::Owner => GroupKey::Owner(r.try_get::<Option<Uuid>>("", "g")?),
        GroupBy::Period => {
            let i = usize::try_from(r.try_get::<i64>("", "g")?).unwrap_or(0);
            let p = periods
                .get(i)
                .ok_or_else(|| Error::internal(format!("no period {i} in the report")))?;
            GroupKey::Period(*p)
        }
    })
}

fn rank_row(r: &QueryResult) -> Result<(u64, u64, i64)> {
    let n = u64::try_from(r.try_get::<i64>("", "n")?).unwrap_or(0);
    let rank = u64::try_from(r.try_get::<i64>("", "rn")? - 1).unwrap_or(0);
    // A first touch recorded before the creation (clock skew of a backfill) counts 0.
    let dur = Ord::max(r.try_get::<Option<i64>>("", "dur")?.unwrap_or(0), 0);
    Ok((n, rank, dur))
}

/// The caller's leads of the range and filters.
struct Base<'a> {
    ctx: &'a Ctx,
    q: &'a EffectivenessQuery,
    scope: Option<&'a Condition>,
    backend: DbBackend,
}

impl Base<'_> {
    /// `SELECT ... FROM leads WHERE` the tenant's live leads created in the range, matching
    /// the filters, within the caller's scope.
    fn leads(&self) -> SelectStatement {
        let mut s = Query::select();
        s.from(Alias::new("leads"))
            .and_where(Expr::col("tenant_id").eq(self.ctx.tenant()))
            .and_where(Expr::col("delete_time").is_null())
            .and_where(Expr::col("create_time").gte(self.q.start_time))
            .and_where(Expr::col("create_time").lt(self.q.end_time));
        if let Some(v) = &self.q.source {
            s.and_where(Expr::col("source").eq(v.as_str()));
        }
        if let Some(v) = &self.q.campaign {
            s.and_where(Expr::col("campaign").eq(v.as_str()));
        }
        if let Some(v) = self.q.owner {
            s.and_where(Expr::col("owner_id").eq(v));
        }
        if let Some(c) = self.scope {
            s.cond_where(c.clone());
        }
        s
    }

    /// Per group `g`: created, contacted, timed, qualified and converted.
    fn counts(&self, group: Expr) -> SelectStatement {
        let new = LeadStatus::New.as_str();
        let converted = LeadStatus::Converted.as_str();
        let qualified = LeadStatus::Qualified.as_str();
        let flag = |c: Condition| Expr::case(c, 1i64).finally(0i64);
        let mut inner = self.leads();
        inner
            .expr_as(group, Alias::new("g"))
            .expr_as(
                flag(
                    Condition::any()
                        .add(Expr::col("first_touch_time").is_not_null())
                        .add(Expr::col("status").ne(new)),
                ),
                Alias::new("contacted"),
            )
            .expr_as(
                flag(Condition::all().add(Expr::col("first_touch_time").is_not_null())),
                Alias::new("timed"),
            )
            .expr_as(
                flag(Condition::all().add(Expr::col("status").is_in([qualified, converted]))),
                Alias::new("qualified"),
            )
            .expr_as(
                flag(Condition::all().add(Expr::col("status").eq(converted))),
                Alias::new("converted"),
            );
        let t = Alias::new("t");
        let sum = |c: &str| {
            Func::cast_as(
                Func::sum(Expr::col((t.clone(), Alias::new(c)))),
                Alias::new("BIGINT"),
            )
        };
        let mut outer = Query::select();
        outer
            .expr_as(Expr::col((t.clone(), Alias::new("g"))), Alias::new("g"))
            .expr_as(
                Func::cast_as(Func::count(Expr::cust("*")), Alias::new("BIGINT")),
                Alias::new("created"),
            )
            .expr_as(sum("contacted"), Alias::new("contacted"))
            .expr_as(sum("timed"), Alias::new("timed"))
            .expr_as(sum("qualified"), Alias::new("qualified"))
            .expr_as(sum("converted"), Alias::new("converted"))
            .from_subquery(inner, t)
            .group_by_col(Alias::new("g"));
        outer
    }

    /// Per group `g`: its number `n` of leads with a first-touch time, and only the rows at
    /// the ranks `rn` (1-based, by time to first touch `dur` in milliseconds) that the
    /// quantiles need.
    fn ranks(&self, group: Expr) -> SelectStatement {
        let dur = match self.backend {
            DbBackend::Postgres => {
                "CAST(ROUND(EXTRACT(EPOCH FROM (first_touch_time - create_time)) * 1000) AS BIGINT)"
            }
            // Times are RFC 3339 text; julianday() reads them to the millisecond.
            _ => {
                "CAST(ROUND((julianday(first_touch_time) - julianday(create_time)) * 86400000.0) AS INTEGER)"
            }
        };
        let mut inner = self.leads();
        inner
            .expr_as(group, Alias::new("g"))
            .expr_as(Expr::cust(dur), Alias::new("dur"))
            .and_where(Expr::col("first_touch_time").is_not_null());
        let mut ranked = Query::select();
        ranked
            .column(Alias::new("g"))
            .column(Alias::new("dur"))
            .expr_as(
                Expr::cust("ROW_NUMBER() OVER (PARTITION BY g ORDER BY dur)"),
                Alias::new("rn"),
            )
            .expr_as(
                Expr::cust("COUNT(*) OVER (PARTITION BY g)"),
                Alias::new("n"),
            )
            .from_subquery(inner, Alias::new("t"));
        // The ranks of [`Quantile::position`]: floor and ceiling of (n - 1) * num / den.
        let wanted = QUANTILES
            .iter()
            .flat_map(|q| {
                let (num, den) = (q.num, q.den);
                [
                    format!("((n - 1) * {num}) / {den}"),
                    format!("((n - 1) * {num} + {}) / {den}", den.saturating_sub(1)),
                ]
            })
            .collect::<Vec<_>>()
            .join(", ");
        let mut outer = Query::select();
        outer
            .columns([
                Alias::new("g"),
                Alias::new("n"),
                Alias::new("rn"),
                Alias::new("dur"),
            ])
            .from_subquery(ranked, Alias::new("w"))
            .and_where(Expr::cust(format!("rn - 1 IN ({wanted})")));
        outer
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use proptest::prelude::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn quantiles_interpolate_between_ranks() {
        assert_eq!(MEDIAN.of_sorted(&[]), None);
        assert_eq!(MEDIAN.of_sorted(&[7]), Some(7));
        assert_eq!(P90.of_sorted(&[7]), Some(7));
        assert_eq!(MEDIAN.of_sorted(&[10, 20]), Some(15));
        assert_eq!(MEDIAN.of_sorted(&[10, 20, 40]), Some(20));
        // (n - 1) * 0.9 = 2.7 of [0, 100, 200, 300]: 270.
        assert_eq!(P90.of_sorted(&[0, 100, 200, 300]), Some(270));
        // 1..=10: rank 8.1 -> 9.1 -> rounded 9.
        let v: Vec<i64> = (1..=10).collect();
        assert_eq!(P90.of_sorted(&v), Some(9));
        assert_eq!(MEDIAN.of_sorted(&v), Some(6)); // 5.5 rounds half away from zero
    }

    #[test]
    // The ceiling written as the SQL writes it.
    #[allow(clippy::manual_div_ceil)]
    fn needed_ranks_are_the_sql_formulas() {
        for n in 1..2000u64 {
            let sql: Vec<u64> = QUANTILES
                .iter()
                .flat_map(|q| {
                    [
                        ((n - 1) * q.num) / q.den,
                        ((n - 1) * q.num + q.den - 1) / q.den,
                    ]
                })
                .collect();
            let mut sql_sorted = sql.clone();
            sql_sorted.sort_unstable();
            sql_sorted.dedup();
            assert_eq!(Ranked::needed(n), sql_sorted, "n = {n}");
            assert!(Ranked::needed(n).iter().all(|r| *r < n));
        }
        assert!(Ranked::needed(0).is_empty());
    }

    #[test]
    fn rates_are_zero_without_leads() {
        let c = Counts::default();
        assert_eq!(c.contact_rate(), 0.0);
        assert_eq!(c.conversion_rate(), 0.0);
        let c = Counts {
            created: 4,
            contacted: 3,
            timed: 2,
            qualified: 2,
            converted: 1,
        };
        assert_eq!(c.contact_rate(), 0.75);
        assert_eq!(c.qualification_rate(), 0.5);
        assert_eq!(c.conversion_rate(), 0.25);
    }

    #[test]
    fn periods_follow_the_local_calendar() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        // 2026-03-01 00:00 Berlin is 2026-02-28 23:00 UTC.
        let p = periods(
            at("2026-02-28T23:00:00Z"),
            at("2026-05-01T00:00:00Z"),
            berlin,
            Granularity::Month,
        );
        let labels: Vec<String> = p.iter().map(Period::label).collect();
        assert_eq!(labels, ["2026-03", "2026-04", "2026-05"]);
        assert_eq!(p[0].start_time, at("2026-02-28T23:00:00Z"));
        // April starts in summer time.
        assert_eq!(p[1].start_time, at("2026-03-31T22:00:00Z"));
        assert_eq!(period_index(&p, at("2026-03-31T21:59:59Z")), 0);
        assert_eq!(period_index(&p, at("2026-03-31T22:00:00Z")), 1);
        let w = periods(
            at("2026-03-04T00:00:00Z"),
            at("2026-03-10T00:00:00Z"),
            Tz::UTC,
            Granularity::Week,
        );
        let labels: Vec<String> = w.iter().map(Period::label).collect();
        assert_eq!(labels, ["2026-W10", "2026-W11"]);
        assert!(
            periods(
                at("2026-03-04T00:00:00Z"),
                at("2026-03-04T00:00:00Z"),
                Tz::UTC,
                Granularity::Day
            )
            .is_empty()
        );
        let d = periods(
            at("2026-01-01T00:00:00Z"),
            at("2029-01-01T00:00:00Z"),
            Tz::UTC,
            Granularity::Day,
        );
        assert_eq!(d.len(), 1096);
    }

    fn query(from: &str, to: &str, tz: &str) -> EffectivenessQuery {
        EffectivenessQuery {
            start_time: at(from),
            end_time: at(to),
            group_by: GroupBy::Period,
            granularity: Granularity::Day,
            time_zone: tz.into(),
            source: None,
            owner: None,
            campaign: None,
        }
    }

    #[test]
    fn bad_requests_name_the_field() {
        let field = |q: EffectivenessQuery| {
            let e = validate(&q).unwrap_err();
            e.violations
                .iter()
                .map(|v| v.field.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            field(query("2026-01-02T00:00:00Z", "2026-01-01T00:00:00Z", "")),
            ["end_time"]
        );
        assert_eq!(
            field(query("2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z", "")),
            ["end_time"]
        );
        assert_eq!(
            field(query("2020-01-01T00:00:00Z", "2026-01-01T00:00:00Z", "")),
            ["end_time"]
        );
        assert_eq!(
            field(query(
                "2026-01-01T00:00:00Z",
                "2026-02-01T00:00:00Z",
                "Mars/Base"
            )),
            ["time_zone"]
        );
        let (_, name) =
            validate(&query("2026-01-01T00:00:00Z", "2029-01-01T00:00:00Z", " ")).unwrap();
        assert_eq!(name, "UTC");
    }

    fn counts() -> impl Strategy<Value = Counts> {
        (0u64..1000, 0u64..1000, 0u64..1000, 0u64..1000, 0u64..1000).prop_map(
            |(created, a, b, c, d)| {
                // The subset relations the SQL guarantees.
                let contacted = Ord::min(a, created);
                let timed = Ord::min(b, contacted);
                let qualified = Ord::min(c, created);
                let converted = Ord::min(d, qualified);
                Counts {
                    created,
                    contacted,
                    timed,
                    qualified,
                    converted,
                }
            },
        )
    }

    proptest! {
        #[test]
        fn quantiles_from_the_needed_ranks_match_the_full_list(
            mut v in proptest::collection::vec(0i64..10_000_000, 0..200)
        ) {
            v.sort_unstable();
            let ranked = Ranked::from_sorted(&v);
            let touch = ranked.touch();
            prop_assert_eq!(touch.median_ms, MEDIAN.of_sorted(&v));
            prop_assert_eq!(touch.p90_ms, P90.of_sorted(&v));
            if let (Some(m), Some(p)) = (touch.median_ms, touch.p90_ms) {
                let (lo, hi) = (v[0], v[v.len() - 1]);
                prop_assert!(lo <= m && m <= p && p <= hi);
            } else {
                prop_assert!(v.is_empty());
            }
        }

        #[test]
        fn totals_are_the_sum_of_the_groups_and_rates_within_0_and_1(
            groups in proptest::collection::vec(("[a-c]{0,2}", counts()), 0..20)
        ) {
            let input: Vec<(GroupKey, Counts, Touch)> = groups
                .iter()
                .map(|(k, c)| (GroupKey::Value(k.clone()), *c, Touch::default()))
                .collect();
            let (rows, total) = assemble(input, Touch::default());
            prop_assert_eq!(rows.len(), groups.len());
            let sum = |f: fn(&Counts) -> u64| rows.iter().map(|r| f(&r.counts)).sum::<u64>();
            prop_assert_eq!(total.counts.created, sum(|c| c.created));
            prop_assert_eq!(total.counts.contacted, sum(|c| c.contacted));
            prop_assert_eq!(total.counts.timed, sum(|c| c.timed));
            prop_assert_eq!(total.counts.qualified, sum(|c| c.qualified));
            prop_assert_eq!(total.counts.converted, sum(|c| c.converted));
            prop_assert!(rows.windows(2).all(|w| w[0].key <= w[1].key));
            for r in rows.iter().chain([&total]) {
                for x in [r.counts.contact_rate(), r.counts.qualification_rate(), r.counts.conversion_rate()] {
                    prop_assert!((0.0..=1.0).contains(&x));
                }
                prop_assert!(r.counts.conversion_rate() <= r.counts.qualification_rate());
            }
        }

        #[test]
        fn every_instant_falls_in_the_period_of_its_local_date(
            secs in 0i64..(3 * 366 * 86_400),
            tz in prop::sample::select(vec!["UTC", "Europe/Berlin", "America/New_York", "Asia/Kathmandu", "Australia/Lord_Howe", "America/Santiago"]),
            g in prop::sample::select(vec![Granularity::Day, Granularity::Week, Granularity::Month]),
        ) {
            let tz: Tz = tz.parse().unwrap();
            let from = at("2025-01-01T00:00:00Z");
            let to = from + chrono::Duration::days(MAX_SPAN_DAYS);
            let ps = periods(from, to, tz, g);
            let t = from + chrono::Duration::seconds(secs);
            prop_assume!(t < to);
            let i = period_index(&ps, t);
            prop_assert_eq!(ps[i].start, period_start(t.with_timezone(&tz).date_naive(), g));
        }
    }
}
