//! The crm gateway: maps the gRPC API (crm-api) to the domain (crm-core) and nothing else.

pub mod api;
pub mod config;
pub mod convert;
pub mod deadline;
pub mod demo;
pub mod relay;
pub mod server;
pub mod status;
pub mod trace;
pub mod web;
