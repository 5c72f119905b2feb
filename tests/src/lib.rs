//! End-to-end test harness: a real gateway on an ephemeral port, on a fresh SQLite file or a
//! fresh PostgreSQL database (created on the server named by `CRM_TEST_POSTGRES_URL`, dropped
//! afterwards), driven by the generated client.
//!
//! Everything lives in [`crm_testkit`], which domain crates use for their own contract tests;
//! this crate re-exports it (including the [`both!`] macro, whose `$crate` paths still name
//! `crm_testkit`) so the tests here write `use crm_tests::{...}` and `crm_tests::both!`.

pub use crm_testkit::*;
