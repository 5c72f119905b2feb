//! A8 funnel and cohort reports on the engine; the pure [`crate::report`] module counts and
//! draws.
//!
//! * **Funnel**: the customers who reached each stage of a lifecycle model, from the stored
//!   transitions the caller may read (the contacts' grants), with conversions between
//!   consecutive stages and from the first.
//! * **Cohorts**: customers by the month (in the report's time zone) of their first
//!   purchase, and how many of each cohort purchased again in each later month, from the
//!   orders the caller may read (purchases as RFM reads them: live, not cancelled, not
//!   returned, a positive total, with a contact). Counts of customers only: no amounts, so no
//!   currencies are ever added.

use super::model::{LifecycleModel, LifecycleTransition};
use super::rfm_runs::{is_purchase, live_orders, time_of};
use crate::report::{self, CohortMatrix, Funnel, Granularity, chart};
use chrono::{DateTime, Utc};
use crm_core::access::Action;
use crm_core::error::{Error, Result};
use crm_core::model::Order;
use crm_core::resource::{Collection, Record};
use crm_core::service::{Ctx, ListParams};
use sea_orm::ConnectionTrait;
use sea_orm::sea_query::{Expr, ExprTrait, Order as SortOrder, Query};
use std::collections::HashMap;
use uuid::Uuid;

/// Rows read per statement or list page.
const PAGE: u64 = 1000;

/// A funnel request.
#[derive(Debug, Clone, Default)]
pub struct FunnelQuery {
    /// The model; `None` for the active one.
    pub model: Option<Uuid>,
    /// Stage keys in funnel order; empty for the model's stages.
    pub stages: Vec<String>,
    /// Reaching a stage counts for every earlier stage of the funnel.
    pub cumulative: bool,
}

/// A funnel and, when asked, its chart.
#[derive(Debug, Clone)]
pub struct FunnelAnswer {
    /// The model read.
    pub model: Uuid,
    /// The steps.
    pub funnel: Funnel,
    /// The SVG bar chart.
    pub chart: Option<String>,
}

/// The funnel of a lifecycle model over the customers the caller may read. Needs `read` on
/// `lifecycleModels` and on contacts; the model is NOT_FOUND (named `model`) for another
/// tenant's, FAILED_PRECONDITION `NO_ACTIVE_LIFECYCLE_MODEL` when none is named or active;
/// stages not in the model are INVALID_ARGUMENT naming `stages[i]`.
pub async fn funnel_report(
    ctx: &Ctx,
    q: &FunnelQuery,
    chart_size: Option<chart::Size>,
) -> Result<FunnelAnswer> {
    let model: Record<LifecycleModel> = match q.model {
        Some(id) => ctx
            .get::<LifecycleModel>(id)
            .await
            .map_err(|e| e.in_field("model"))?,
        None => ctx
            .list::<LifecycleModel>(&ListParams {
                page_size: 1,
                filter: "active = true".into(),
                ..Default::default()
            })
            .await?
            .items
            .into_iter()
            .next()
            .ok_or_else(|| {
                Error::failed_precondition(
                    "NO_ACTIVE_LIFECYCLE_MODEL",
                    "the tenant has no active lifecycle model: name one in `model`",
                )
            })?,
    };
    let stages: Vec<String> = if q.stages.is_empty() {
        model.data.stages.iter().map(|s| s.key.clone()).collect()
    } else {
        let mut v = crm_core::validate::Violations::new();
        for (i, s) in q.stages.iter().enumerate() {
            if !model.data.stages.iter().any(|st| st.key == *s) {
                v.add(
                    format!("stages[{i}]"),
                    format!("stage {s:?} is not a stage of the model"),
                );
            }
        }
        v.into_result()?;
        q.stages.clone()
    };
    let mut reached: HashMap<Uuid, Vec<String>> = HashMap::new();
    let mut token = String::new();
    loop {
        let page = ctx
            .list::<LifecycleTransition>(&ListParams {
                page_size: i32::try_from(PAGE).unwrap_or(1000),
                page_token: token,
                filter: format!("model = \"lifecycleModels/{}\"", model.meta.id),
                order_by: "create_time".into(),
                parent: None,
            })
            .await?;
        for t in page.items {
            if let Some(c) = t.data.customer {
                reached.entry(c).or_default().push(t.data.to_stage);
            }
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let reached: Vec<Vec<String>> = reached.into_values().collect();
    let funnel = report::funnel(&stages, &reached, q.cumulative).map_err(Error::from)?;
    let chart = match chart_size {
        None => None,
        Some(size) => {
            let data = chart::ChartData {
                title: format!("Funnel: {}", model.data.display_name),
                y_label: "customers".into(),
                categories: stages.clone(),
                series: vec![chart::Series {
                    name: "reached".into(),
                    values: funnel.steps.iter().map(|s| s.reached as f64).collect(),
                }],
            };
            Some(chart::bar_chart_svg(&data, size).map_err(Error::from)?)
        }
    };
    Ok(FunnelAnswer {
        model: model.meta.id,
        funnel,
        chart,
    })
}

/// A cohort request.
#[derive(Debug, Clone, Default)]
pub struct CohortQuery {
    /// Purchases up to this instant; cohorts end at its month.
    pub as_of: Option<DateTime<Utc>>,
    /// Only cohorts whose month starts at or after this instant's month.
    pub from: Option<DateTime<Utc>>,
    /// IANA name; empty for UTC.
    pub time_zone: String,
}

/// A cohort matrix and, when asked, its chart.
#[derive(Debug, Clone)]
pub struct CohortAnswer {
    /// The cohorts.
    pub matrix: CohortMatrix,
    /// The SVG line chart of retention rates.
    pub chart: Option<String>,
}

/// Cohort retention by first-purchase month over the orders the caller may read (their
/// record scope on orders). The time zone is INVALID_ARGUMENT naming `time_zone` when
/// unknown.
pub async fn cohort_report(
    ctx: &Ctx,
    q: &CohortQuery,
    chart_size: Option<chart::Size>,
) -> Result<CohortAnswer> {
    let tz_name = match q.time_zone.trim() {
        "" => "UTC",
        s => s,
    };
    let tz = report::parse_time_zone("time_zone", tz_name).map_err(Error::from)?;
    let as_of = q.as_of.unwrap_or_else(|| ctx.clock.now());
    let scope = ctx
        .scope_filter(&Collection::of::<Order>(), Action::Read)
        .await?;
    let tenant = ctx.tenant();
    let mut purchases: Vec<(Uuid, DateTime<Utc>)> = Vec::new();
    let mut after: Option<Uuid> = None;
    loop {
        let mut s = Query::select();
        s.columns(["id", "contact_id", "order_time"])
            .from("orders")
            .cond_where(live_orders(tenant))
            .cond_where(is_purchase())
            .and_where(Expr::col("contact_id").is_not_null())
            .and_where(Expr::col("order_time").lte(as_of))
            .order_by("id", SortOrder::Asc)
            .limit(PAGE);
        if let Some(c) = &scope {
            s.cond_where(c.clone());
        }
        if let Some(a) = after {
            s.and_where(Expr::col("id").gt(a));
        }
        let rows = ctx.db.conn.query_all(&s).await?;
        for r in &rows {
            after = Some(r.try_get::<Uuid>("", "id")?);
            let contact = r.try_get::<Option<Uuid>>("", "contact_id")?;
            if let (Some(c), Some(t)) = (contact, time_of(r, "order_time")?) {
                purchases.push((c, t));
            }
        }
        if rows.len() < usize::try_from(PAGE).unwrap_or(usize::MAX) {
            break;
        }
    }
    let mut matrix = report::cohort_retention(&purchases, tz, as_of);
    if let Some(from) = q.from {
        let first = report::bucket(from, tz, Granularity::Month).start;
        matrix.rows.retain(|r| r.cohort.start >= first);
    }
    let chart = match chart_size {
        Some(size) if !matrix.rows.is_empty() => Some(cohort_chart(&matrix, size)?),
        _ => None,
    };
    Ok(CohortAnswer { matrix, chart })
}

/// Retention rates of the latest [`chart::MAX_SERIES`] cohorts by months since the first
/// purchase; months a cohort has not reached yet are drawn as 0.
fn cohort_chart(m: &CohortMatrix, size: chart::Size) -> Result<String> {
    let rows = &m.rows[m.rows.len().saturating_sub(chart::MAX_SERIES)..];
    let months = rows
        .iter()
        .map(|r| r.active.len())
        .max()
        .unwrap_or(1)
        .max(1);
    let data = chart::ChartData {
        title: "Retention by first-purchase month".into(),
        y_label: "share of the cohort".into(),
        categories: (0..months).map(|k| format!("M+{k}")).collect(),
        series: rows
            .iter()
            .map(|r| chart::Series {
                name: r.cohort.label(),
                values: (0..months).map(|k| r.rate(k).unwrap_or(0.0)).collect(),
            })
            .collect(),
    };
    chart::line_chart_svg(&data, size).map_err(Error::from)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn the_cohort_chart_has_one_line_per_cohort_and_a_month_per_category() {
        let t = |y, m, d| Utc.with_ymd_and_hms(y, m, d, 12, 0, 0).unwrap();
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let m = report::cohort_retention(
            &[(a, t(2026, 1, 5)), (a, t(2026, 3, 5)), (b, t(2026, 2, 5))],
            chrono_tz::UTC,
            t(2026, 3, 31),
        );
        assert_eq!(m.rows.len(), 2);
        let svg = cohort_chart(&m, chart::Size::default()).unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("2026-01") && svg.contains("2026-02"), "{svg}");
        assert!(svg.contains("M+2"));
    }
}
