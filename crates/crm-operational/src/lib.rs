//! Operational CRM: leads from capture to conversion, de-duplication, grading and assignment.
//!
//! This crate starts with the pure domain logic, plain data in and out, no I/O:
//!
//! - [`normalize`]: comparison forms of names, companies, addresses, phones and e-mails.
//! - [`matching`]: blocking keys, pairwise duplicate scoring with evidence, a labelled set.
//! - [`grading`]: rule-based lead grades (hot, warm, cold, long-term) with their reasons.
//! - [`assignment`]: rule-based routing of leads to owners, explained.
//! - [`error`]: typed configuration errors naming the field.
//! - [`import`]: parsing of lead, contact and account imports (CSV streamed, XLSX), mapped to records.
//!
//! and the resources the gateway serves, on crm-core's engine:
//!
//! - [`lead`]: leads and the tenant's grading policies, graded in the write transaction.
//! - [`activity`]: follow-up tasks, calls, meetings and e-mails with reminders.
//! - [`opportunity`]: deals, opened on conversion (minimal until the pipeline).
//! - [`dedupe`]: blocking keys kept for leads, contacts and accounts; new leads matched.
//! - [`routing`]: assignment rule sets, and leads routed to an owner in the same transaction.
//! - [`merge`]: merging duplicate leads, contacts and accounts, and undoing a merge.
//! - [`scan`]: duplicate scans of a whole collection as an operation, kept as scored pairs.
//! - [`effectiveness`]: the lead effectiveness report (contact, qualification, conversion,
//!   time to first touch) per source, owner, campaign or period, under the caller's scope.
//!
//! Configuration types are serde structs, to be stored as JSON rows by a store layer.
#![warn(missing_docs)]

pub mod active;
pub mod activity;
pub mod assignment;
pub mod capture;
pub mod dedupe;
pub mod effectiveness;
pub mod error;
pub mod grading;
pub mod import;
pub mod lead;
pub mod matching;
pub mod merge;
pub mod normalize;
pub mod opportunity;
pub mod routing;
pub mod scan;

/// Registers the crate's collections and schema changes (called by the gateway at start).
pub fn register(r: &mut crm_core::registry::RegistryBuilder) {
    r.resource::<lead::Lead>()
        .resource::<lead::LeadGradingPolicy>()
        .resource::<routing::AssignmentRuleSet>()
        .resource::<dedupe::LeadDuplicatePolicy>()
        .resource::<activity::Activity>()
        .resource::<opportunity::Opportunity>()
        .resource::<merge::RecordMerge>()
        .resource::<scan::DuplicatePair>()
        .resource::<import::model::ImportUpload>()
        .resource::<import::model::ImportUploadChunk>()
        .resource::<import::model::Import>()
        .resource::<import::model::ImportRow>()
        .resource::<capture::LeadCapturePolicy>();
    dedupe::register(r);
    // After the duplicate keys: the owner's load counter is held from here to commit.
    r.observe("leads", routing::keep_load);
    // Unknown e-mail senders and callers become leads (crm-collaborative's interactions,
    // observed by name: that crate must be registered too, as the gateway does).
    r.observe(capture::INTERACTIONS, capture::capture);
    for change in lead::SCHEMA {
        r.schema(*change);
    }
    r.schema(activity::SCHEMA);
    r.schema(opportunity::SCHEMA);
    r.schema(merge::SCHEMA);
    r.schema(scan::SCHEMA);
    r.schema(import::model::SCHEMA);
    // After activities: its backfill reads them.
    r.schema(lead::FIRST_TOUCH_SCHEMA);
    r.schema(capture::SCHEMA);
    r.schema(lead::EXPECTED_VALUE_SCHEMA);
}

/// Registers the crate's job handlers: lead escalation, activity reminders and imports.
pub fn register_jobs(h: &mut crm_core::jobs::JobHandlers) -> crm_core::Result<()> {
    lead::register_jobs(h)?;
    h.register(import::run::IMPORT_JOB, import::run::run_job)?;
    h.register(scan::SCAN_JOB, scan::run_job)?;
    activity::register_jobs(h)
}
