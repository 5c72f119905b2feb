//! crm-core: the shared customer model (K1-K4), permissions, tenancy, audit and outbox, and
//! the generic resource machinery every domain crate builds on.
//!
//! Layers: [`model`] holds plain data and validation; [`store`] the SQL (always tenant-scoped);
//! [`service`] the use cases with permission checks and one transaction per write.

pub mod access;
pub mod active;
pub mod auth;
pub mod cache;
pub mod clock;
pub mod codec;
pub mod db;
pub mod enums;
pub mod error;
pub mod ids;
pub mod jobs;
pub mod journal;
pub mod model;
pub mod outbox;
pub mod query;
pub mod registry;
pub mod resource;
mod rowde;
pub mod secrets;
pub mod service;
pub mod store;
pub mod tenant;
pub mod validate;

pub use error::{Error, ErrorKind, FieldViolation, Result};

#[doc(hidden)]
pub use serde as __serde;
