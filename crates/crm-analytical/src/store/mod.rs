//! The crate on crm-core's engine: stored configurations, RFM runs and results (A1, A2),
//! and the sales report (A8). Writes go through crm-core's `Tx` (and `Ctx::create_many` for
//! a run's results); reads through its permission-aware list or `Ctx::scope_filter`.

pub mod model;
pub mod rfm_runs;
pub mod sales;

pub use model::{
    ResultStatus, RfmResult, RfmRun, RfmSettings, RunState, RunStats, SCHEMA, ValueContribution,
    ValueResult,
};
