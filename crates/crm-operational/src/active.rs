//! Tenant configurations of which at most one is active (grading policies, duplicate
//! policies, assignment rule sets): the helpers live in crm-core ([`crm_core::active`]),
//! shared with the other domain crates.

pub use crm_core::active::{active, deactivate_others};
