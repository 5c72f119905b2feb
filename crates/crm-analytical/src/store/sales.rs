//! A8 sales report on the engine: orders summed per period (of the tenant's time zone),
//! dimension and currency by one SQL aggregation under the caller's scope on orders; the
//! pure [`crate::report`] module gives the periods, the typed report and its SVG chart.
//!
//! Period boundaries are computed here (local midnights of the time zone, as UTC instants)
//! and the database puts each order in its period with one `CASE` over them, so the
//! aggregation never needs time-zone support from the database (SQLite has none).
//! Amounts are net: cancelled orders are left out, a returned (refunded) order counts 0 and
//! is not counted as an order.
//!
//! By product group the amounts are the order lines' (an order with lines of two groups
//! counts in both). Lines are JSON inside the order row, and unnesting them needs JSON table
//! functions that differ between the databases, so this dimension streams the caller's
//! orders of the range in keyset pages of [`PAGE`] and sums them here, holding one page and
//! the cells at a time.

use crate::report::{self, Granularity, PeriodKey, SalesCell, SalesReport, chart};
use chrono::{DateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use crm_core::access::Action;
use crm_core::error::{Error, Result};
use crm_core::model::{Order, OrderLine};
use crm_core::resource::Collection;
use crm_core::service::Ctx;
use sea_orm::ConnectionTrait;
use sea_orm::sea_query::{
    Alias, CaseStatement, Condition, Expr, ExprTrait, Func, JoinType, Order as SortOrder, Query,
    SelectStatement,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use uuid::Uuid;

/// What the report is broken down by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    /// The order's account's region, else its contact's region.
    Region,
    /// The order's owner (the rep), `users/{id}`.
    Owner,
    /// The order's territory, `territories/{id}`.
    Territory,
    /// The sales channel.
    Channel,
    /// The product group of each order line, `productGroups/{id}` (line amounts).
    ProductGroup,
}

/// A sales report request.
#[derive(Debug, Clone)]
pub struct SalesQuery {
    /// First instant (inclusive).
    pub from: DateTime<Utc>,
    /// Last instant (exclusive).
    pub to: DateTime<Utc>,
    /// The periods' length.
    pub granularity: Granularity,
    /// What sales are broken down by.
    pub dimension: Dimension,
    /// IANA name; empty for UTC.
    pub time_zone: String,
}

/// The report and, when asked, its chart.
#[derive(Debug, Clone)]
pub struct SalesAnswer {
    /// The cells and totals.
    pub report: SalesReport,
    /// One SVG per currency (ordered by code).
    pub charts: BTreeMap<String, String>,
}

/// The first instant of a local date in `tz` (the first existing one after a DST gap).
fn local_start(tz: Tz, p: PeriodKey) -> DateTime<Utc> {
    for h in 0..3 {
        if let Some(t) = NaiveTime::from_hms_opt(h, 0, 0)
            && let Some(local) = tz.from_local_datetime(&p.start.and_time(t)).earliest()
        {
            return local.with_timezone(&Utc);
        }
    }
    p.start.and_time(NaiveTime::MIN).and_utc()
}

/// Computes the report; `chart` also draws one bar chart per currency.
pub async fn sales_report(
    ctx: &Ctx,
    q: &SalesQuery,
    chart_size: Option<chart::Size>,
) -> Result<SalesAnswer> {
    let tz_name = if q.time_zone.trim().is_empty() {
        "UTC"
    } else {
        q.time_zone.trim()
    };
    let tz = report::parse_time_zone("time_zone", tz_name).map_err(Error::from)?;
    if q.to <= q.from {
        return Err(Error::invalid("to", "must be after from"));
    }
    let first = report::bucket(q.from, tz, q.granularity);
    let last = report::bucket(q.to - chrono::Duration::microseconds(1), tz, q.granularity);
    let periods = report::periods_between(first, last);
    if periods.last() != Some(&last) {
        return Err(Error::invalid(
            "to",
            format!(
                "the range spans more than {} periods: choose a coarser granularity",
                report::MAX_PERIODS
            ),
        ));
    }
    let orders = Collection::of::<Order>();
    let scope = ctx.scope_filter(&orders, Action::Read).await?;
    let tenant = ctx.tenant();
    if q.dimension == Dimension::ProductGroup {
        let cells = by_product_group(ctx, q, tz, scope).await?;
        return finish(q, tz_name, cells, chart_size);
    }

    // The caller's orders of the range, with their period index.
    let mut period = CaseStatement::new();
    for (i, p) in periods.iter().enumerate().skip(1) {
        let idx = i64::try_from(i - 1).unwrap_or(0);
        period = period.case(Expr::col("order_time").lt(local_start(tz, *p)), idx);
    }
    let period: Expr = period
        .finally(i64::try_from(periods.len() - 1).unwrap_or(0))
        .into();
    let mut inner = Query::select();
    inner
        .columns([
            "account_id",
            "contact_id",
            "owner_id",
            "territory_id",
            "channel",
        ])
        .column("currency_code")
        .expr_as(period, Alias::new("period_idx"))
        .expr_as(
            Expr::case(Expr::col("status").eq("RETURNED"), 0i64).finally(Expr::col("total")),
            Alias::new("net"),
        )
        .expr_as(
            Expr::case(Expr::col("status").eq("RETURNED"), 0i64).finally(1i64),
            Alias::new("counted"),
        )
        .from("orders")
        .and_where(Expr::col("tenant_id").eq(tenant))
        .and_where(Expr::col("delete_time").is_null())
        .and_where(Expr::col("status").ne("CANCELLED"))
        .and_where(Expr::col("order_time").gte(q.from))
        .and_where(Expr::col("order_time").lt(q.to));
    if let Some(s) = scope {
        inner.cond_where(s);
    }

    let o = Alias::new("o");
    let mut outer = Query::select();
    outer
        .expr_as(
            Expr::col((o.clone(), Alias::new("period_idx"))),
            Alias::new("p"),
        )
        .expr_as(
            Expr::col((o.clone(), Alias::new("currency_code"))),
            Alias::new("currency"),
        )
        .expr_as(
            Func::cast_as(
                Func::sum(Expr::col((o.clone(), Alias::new("net")))),
                Alias::new("BIGINT"),
            ),
            Alias::new("amount"),
        )
        .expr_as(
            Func::cast_as(
                Func::sum(Expr::col((o.clone(), Alias::new("counted")))),
                Alias::new("BIGINT"),
            ),
            Alias::new("n"),
        )
        .from_subquery(inner, o.clone())
        .group_by_col(Alias::new("p"))
        .group_by_col(Alias::new("currency"));
    dimension(&mut outer, q.dimension, tenant);
    let rows = ctx.db.conn.query_all(&outer).await?;

    let mut cells = Vec::with_capacity(rows.len());
    for r in rows {
        let idx = usize::try_from(r.try_get::<i64>("", "p")?).unwrap_or(0);
        let Some(p) = periods.get(idx) else {
            continue;
        };
        let currency = r.try_get::<String>("", "currency")?;
        let amount = i128::from(r.try_get::<Option<i64>>("", "amount")?.unwrap_or(0));
        let orders = u64::try_from(r.try_get::<Option<i64>>("", "n")?.unwrap_or(0)).unwrap_or(0);
        let dim = match q.dimension {
            Dimension::Region | Dimension::Channel => {
                r.try_get::<Option<String>>("", "dim")?.unwrap_or_default()
            }
            Dimension::Owner => named("users", r.try_get::<Option<Uuid>>("", "dim")?),
            Dimension::Territory => named("territories", r.try_get::<Option<Uuid>>("", "dim")?),
            Dimension::ProductGroup => String::new(),
        };
        cells.push(SalesCell {
            period: *p,
            dimension: dim,
            currency,
            amount,
            orders,
        });
    }
    finish(q, tz_name, cells, chart_size)
}

/// Sorts and merges the cells, adds the totals and the charts.
fn finish(
    q: &SalesQuery,
    tz_name: &str,
    mut cells: Vec<SalesCell>,
    chart_size: Option<chart::Size>,
) -> Result<SalesAnswer> {
    // The region of two rows may coincide after COALESCE: merge them.
    cells.sort_by(|a, b| {
        (a.period, &a.dimension, &a.currency).cmp(&(b.period, &b.dimension, &b.currency))
    });
    cells.dedup_by(|b, a| {
        if a.period == b.period && a.dimension == b.dimension && a.currency == b.currency {
            a.amount += b.amount;
            a.orders += b.orders;
            true
        } else {
            false
        }
    });
    let mut totals = crate::money::CurrencyAmounts::new();
    for c in &cells {
        crate::money::add_amount(&mut totals, &c.currency, c.amount);
    }
    let report = SalesReport {
        granularity: q.granularity,
        time_zone: tz_name.to_owned(),
        cells,
        totals,
    };
    let mut charts = BTreeMap::new();
    if let Some(size) = chart_size {
        for currency in report.currencies() {
            let data = report
                .chart(currency, &format!("Sales in {currency}"))
                .map_err(Error::from)?;
            let svg = chart::bar_chart_svg(&data, size).map_err(Error::from)?;
            charts.insert(currency.to_owned(), svg);
        }
    }
    Ok(SalesAnswer { report, charts })
}

fn named(collection: &str, id: Option<Uuid>) -> String {
    id.map(|id| format!("{collection}/{id}"))
        .unwrap_or_default()
}

/// Adds the dimension column `dim` (and the joins it needs) to the outer query.
fn dimension(q: &mut SelectStatement, d: Dimension, tenant: &str) {
    let o = Alias::new("o");
    let col = |c: &str| Expr::col((o.clone(), Alias::new(c)));
    match d {
        Dimension::Region => {
            let (a, c) = (Alias::new("a"), Alias::new("c"));
            q.join_as(
                JoinType::LeftJoin,
                Alias::new("accounts"),
                a.clone(),
                Condition::all()
                    .add(Expr::col((a.clone(), Alias::new("tenant_id"))).eq(tenant))
                    .add(
                        Expr::col((a.clone(), Alias::new("id")))
                            .equals((o.clone(), Alias::new("account_id"))),
                    ),
            )
            .join_as(
                JoinType::LeftJoin,
                Alias::new("contacts"),
                c.clone(),
                Condition::all()
                    .add(Expr::col((c.clone(), Alias::new("tenant_id"))).eq(tenant))
                    .add(
                        Expr::col((c.clone(), Alias::new("id")))
                            .equals((o.clone(), Alias::new("contact_id"))),
                    ),
            );
            let region = Func::coalesce([
                Func::cust(Alias::new("NULLIF"))
                    .arg(Expr::col((a, Alias::new("region"))))
                    .arg("")
                    .into(),
                Expr::col((c, Alias::new("region"))),
                Expr::val(""),
            ]);
            // Grouped by its output name: the expression's bound '' parameters would not
            // match the select list's on PostgreSQL.
            q.expr_as(region, Alias::new("dim"))
                .group_by_col(Alias::new("dim"));
        }
        Dimension::Owner => {
            q.expr_as(col("owner_id"), Alias::new("dim"))
                .group_by_col(Alias::new("dim"));
        }
        Dimension::Territory => {
            q.expr_as(col("territory_id"), Alias::new("dim"))
                .group_by_col(Alias::new("dim"));
        }
        Dimension::Channel => {
            q.expr_as(col("channel"), Alias::new("dim"))
                .group_by_col(Alias::new("dim"));
        }
        Dimension::ProductGroup => {}
    }
}

/// Orders read per statement by the product-group breakdown.
const PAGE: u64 = 1000;

/// Sales by product group, streamed (see the module documentation).
async fn by_product_group(
    ctx: &Ctx,
    q: &SalesQuery,
    tz: Tz,
    scope: Option<Condition>,
) -> Result<Vec<SalesCell>> {
    let conn = &ctx.db.conn;
    let tenant = ctx.tenant();
    // Every product's group (deleted products too: old orders name them).
    let mut groups: HashMap<Uuid, Option<Uuid>> = HashMap::new();
    let mut after: Option<Uuid> = None;
    loop {
        let mut p = Query::select();
        p.columns(["id", "product_group_id"])
            .from("products")
            .and_where(Expr::col("tenant_id").eq(tenant))
            .order_by("id", SortOrder::Asc)
            .limit(PAGE);
        if let Some(a) = after {
            p.and_where(Expr::col("id").gt(a));
        }
        let rows = conn.query_all(&p).await?;
        for r in &rows {
            let id = r.try_get::<Uuid>("", "id")?;
            groups.insert(id, r.try_get::<Option<Uuid>>("", "product_group_id")?);
            after = Some(id);
        }
        if rows.len() < usize::try_from(PAGE).unwrap_or(usize::MAX) {
            break;
        }
    }
    type Key = (PeriodKey, String, String);
    let mut cells: BTreeMap<Key, (i128, HashSet<Uuid>)> = BTreeMap::new();
    let mut after: Option<Uuid> = None;
    loop {
        let mut o = Query::select();
        o.columns(["id", "order_time", "currency_code", "status", "lines"])
            .from("orders")
            .and_where(Expr::col("tenant_id").eq(tenant))
            .and_where(Expr::col("delete_time").is_null())
            .and_where(Expr::col("status").ne("CANCELLED"))
            .and_where(Expr::col("order_time").gte(q.from))
            .and_where(Expr::col("order_time").lt(q.to))
            .order_by("id", SortOrder::Asc)
            .limit(PAGE);
        if let Some(s) = &scope {
            o.cond_where(s.clone());
        }
        if let Some(a) = after {
            o.and_where(Expr::col("id").gt(a));
        }
        let rows = conn.query_all(&o).await?;
        for r in &rows {
            let id = r.try_get::<Uuid>("", "id")?;
            after = Some(id);
            let Some(time) = super::rfm_runs::time_of(r, "order_time")? else {
                continue;
            };
            let returned = r.try_get::<String>("", "status")? == "RETURNED";
            let currency = r.try_get::<String>("", "currency_code")?;
            let lines: Vec<OrderLine> = serde_json::from_str(&r.try_get::<String>("", "lines")?)
                .map_err(|e| Error::internal(format!("orders/{id} has unreadable lines: {e}")))?;
            let period = report::bucket(time, tz, q.granularity);
            for l in lines {
                let group = l.product.and_then(|p| groups.get(&p).copied().flatten());
                let cell = cells
                    .entry((period, named("productGroups", group), currency.clone()))
                    .or_default();
                if !returned {
                    cell.0 += i128::from(l.amount);
                    cell.1.insert(id);
                }
            }
        }
        if rows.len() < usize::try_from(PAGE).unwrap_or(usize::MAX) {
            break;
        }
    }
    Ok(cells
        .into_iter()
        .map(
            |((period, dimension, currency), (amount, orders))| SalesCell {
                period,
                dimension,
                currency,
                amount,
                orders: u64::try_from(orders.len()).unwrap_or(u64::MAX),
            },
        )
        .collect())
}
