//! Every schema change of crm, in order, for SQLite and PostgreSQL.
//!
//! Data rules: every table has `tenant_id` first in its primary key and in every unique
//! index, so a distributed PostgreSQL (Citus) can shard all tables by tenant; ids come from
//! the application (UUIDv7), never from sequences; no triggers.

pub use sea_orm_migration::prelude::*;

mod m20261124_000001_init;
mod m20261124_000002_tag_indexes;
mod m20261125_000003_jobs;

pub struct Migrator;

#[sea_orm_migration::async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261124_000001_init::Migration),
            Box::new(m20261124_000002_tag_indexes::Migration),
            Box::new(m20261125_000003_jobs::Migration),
        ]
    }
}

/// Rewrites portable DDL for the backend: `UUID`, `TIMESTAMPTZ`, `DATE` are native on
/// PostgreSQL; SQLite stores UUIDs as BLOB and times and dates as RFC 3339 / ISO text.
pub(crate) fn ddl(backend: sea_orm::DbBackend, sql: &str) -> String {
    match backend {
        sea_orm::DbBackend::Postgres => sql.to_owned(),
        _ => sql
            .replace(" UUID", " BLOB")
            .replace(" TIMESTAMPTZ", " TEXT")
            .replace(" DATE", " TEXT"),
    }
}
