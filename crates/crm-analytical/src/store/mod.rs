//! The crate on crm-core's engine: stored configurations, RFM runs and results (A1, A2),
//! lifecycle models, stages and transitions (A3), segments and their members (A4), and the
//! sales, funnel and cohort reports (A8). Writes go through crm-core's `Tx` (and
//! `Ctx::create_many` for a run's results); reads through its permission-aware list or
//! `Ctx::scope_filter`.

pub mod lifecycle;
pub mod model;
pub mod reports;
pub mod rfm_runs;
pub mod sales;
pub mod segments;

pub use model::{
    LifecycleModel, LifecycleState, LifecycleTransition, ResultStatus, RfmResult, RfmRun,
    RfmSettings, RunState, RunStats, SCHEMA, SEGMENT_OUTPUT_FIELDS, Segment, SegmentMember,
    ValueContribution, ValueResult,
};

use sea_orm::sea_query::{Condition, Expr, ExprTrait};
use uuid::Uuid;

/// `column IN (ids)`, bounded by the smallest and largest of them as well: the bounds give
/// the database a range of its `(tenant_id, ..., column)` index to read even where it would
/// not use the list itself as an index condition (it then filters a range of the index, not
/// every row of the leading columns: a segment's members, a run's results).
pub(crate) fn among(column: &'static str, ids: &[Uuid]) -> Condition {
    let mut c = Condition::all().add(Expr::col(column).is_in(ids.iter().copied()));
    if let (Some(lo), Some(hi)) = (ids.iter().min(), ids.iter().max()) {
        c = c
            .add(Expr::col(column).gte(*lo))
            .add(Expr::col(column).lte(*hi));
    }
    c
}
