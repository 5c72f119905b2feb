//! Analytical CRM: RFM, customer value, lifecycle, segments and reports (A1-A4, A8).
//!
//! This part of the crate is pure domain logic over plain data: no database, no I/O, time
//! passed in. The persistence and gRPC layers build on these types:
//!
//! * [`rfm`] (A1): measures from order facts, quantile or threshold scores, named segments;
//! * [`value`] (A2): weighted, versioned, explainable customer value;
//! * [`lifecycle`] (A3): stage models with rule-driven transitions and two templates;
//! * [`segment`] (A4): segment rules in crm-core's AIP-160 filter language, evaluated in
//!   memory; incremental membership and tag write-back;
//! * [`report`] (A8): periods in the tenant's time zone, sales, cohorts, funnels, SVG charts;
//! * [`money`]: per-currency sums and exact conversion with tenant rates;
//! * [`error`]: the crate's error (offending fields), convertible into `crm_core::Error`;
//! * [`store`]: the persistence and use cases on crm-core's engine (configurations, RFM runs
//!   as jobs, results under the contacts' permissions, lifecycle evaluations and segment
//!   refreshes as jobs, the sales, funnel and cohort reports).
//!
//! Money is integer minor units with its ISO 4217 code everywhere; amounts of different
//! currencies are never added.

pub mod error;
pub mod lifecycle;
pub mod money;
pub mod report;
pub mod rfm;
pub mod segment;
pub mod store;
pub mod value;

pub use error::{Error, FieldError, Problem, Result};

/// Registers the crate's collections and schema changes (called by the gateway at start).
pub fn register(r: &mut crm_core::registry::RegistryBuilder) {
    r.resource::<store::RfmSettings>()
        .resource::<store::RfmRun>()
        .resource::<store::RfmResult>()
        .resource::<store::LifecycleModel>()
        .resource::<store::LifecycleState>()
        .resource::<store::LifecycleTransition>()
        .resource::<store::Segment>()
        .resource::<store::SegmentMember>();
    for change in store::SCHEMA {
        r.schema(*change);
    }
}

/// Registers the crate's job handlers (called by the gateway at start).
pub fn register_jobs(h: &mut crm_core::jobs::JobHandlers) -> crm_core::Result<()> {
    h.register(store::rfm_runs::RFM_JOB, store::rfm_runs::run_job)?;
    h.register(
        store::lifecycle::LIFECYCLE_JOB,
        store::lifecycle::run_evaluation,
    )?;
    h.register(store::segments::SEGMENT_JOB, store::segments::run_refresh)?;
    Ok(())
}
