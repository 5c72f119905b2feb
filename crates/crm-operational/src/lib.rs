//! Operational CRM: leads from capture to conversion, de-duplication, grading and assignment.
//!
//! This crate starts with the pure domain logic, plain data in and out, no I/O:
//!
//! - [`normalize`]: comparison forms of names, companies, addresses, phones and e-mails.
//! - [`matching`]: blocking keys, pairwise duplicate scoring with evidence, a labelled set.
//! - [`grading`]: rule-based lead grades (hot, warm, cold, long-term) with their reasons.
//! - [`assignment`]: rule-based routing of leads to owners, explained.
//! - [`error`]: typed configuration errors naming the field.
//!
//! and the resources the gateway serves, on crm-core's engine:
//!
//! - [`lead`]: leads and the tenant's grading policies, graded in the write transaction.
//! - [`activity`]: follow-up tasks, calls, meetings and e-mails with reminders.
//! - [`opportunity`]: deals, opened on conversion (minimal until the pipeline).
//! - [`dedupe`]: blocking keys kept for leads, contacts and accounts; new leads matched.
//! - [`routing`]: assignment rule sets, and leads routed to an owner in the same transaction.
//!
//! Configuration types are serde structs, to be stored as JSON rows by a store layer.
#![warn(missing_docs)]

pub mod active;
pub mod activity;
pub mod assignment;
pub mod dedupe;
pub mod error;
pub mod grading;
pub mod lead;
pub mod matching;
pub mod normalize;
pub mod opportunity;
pub mod routing;

/// Registers the crate's collections and schema changes (called by the gateway at start).
pub fn register(r: &mut crm_core::registry::RegistryBuilder) {
    r.resource::<lead::Lead>()
        .resource::<lead::LeadGradingPolicy>()
        .resource::<routing::AssignmentRuleSet>()
        .resource::<dedupe::LeadDuplicatePolicy>()
        .resource::<activity::Activity>()
        .resource::<opportunity::Opportunity>();
    dedupe::register(r);
    for change in lead::SCHEMA {
        r.schema(*change);
    }
    r.schema(activity::SCHEMA);
    r.schema(opportunity::SCHEMA);
}

/// Registers the crate's job handlers: lead escalation and activity reminders.
pub fn register_jobs(h: &mut crm_core::jobs::JobHandlers) -> crm_core::Result<()> {
    lead::register_jobs(h)?;
    activity::register_jobs(h)
}
