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
