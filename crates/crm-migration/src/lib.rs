//! Every schema change of crm, in order, for SQLite and PostgreSQL.
//!
//! Data rules: every table has `tenant_id` first in its primary key and in every unique
//! index, so a distributed PostgreSQL (Citus) can shard all tables by tenant; ids come from
//! the application (UUIDv7), never from sequences; no triggers.

pub use sea_orm_migration::prelude::*;

mod m20261124_000001_init;
mod m20261124_000002_tag_indexes;
mod m20261125_000003_jobs;
mod m20261125_000004_counters;
mod m20261125_000005_record_keys;
mod m20261206_000006_outbox_relay;
mod m20261207_000007_outbox_webhooks;

/// The shared model's migrations, then every schema change the domain crates registered
/// (`crm_core::registry::RegistryBuilder::schema`), in registration order. Install the registry
/// (`crm_core::registry::install`) before migrating, or only the shared model is migrated.
pub struct Migrator;

#[sea_orm_migration::async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        let mut all: Vec<Box<dyn MigrationTrait>> = vec![
            Box::new(m20261124_000001_init::Migration),
            Box::new(m20261124_000002_tag_indexes::Migration),
            Box::new(m20261125_000003_jobs::Migration),
            Box::new(m20261125_000004_counters::Migration),
            Box::new(m20261125_000005_record_keys::Migration),
            Box::new(m20261206_000006_outbox_relay::Migration),
            Box::new(m20261207_000007_outbox_webhooks::Migration),
        ];
        for change in crm_core::registry::registry().schema_changes() {
            all.push(Box::new(DomainChange(*change)));
        }
        all
    }
}

/// A domain crate's schema change as a migration.
struct DomainChange(crm_core::registry::SchemaChange);

impl MigrationName for DomainChange {
    fn name(&self) -> &str {
        self.0.name
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for DomainChange {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        let conn = manager.get_connection();
        let own = match backend {
            sea_orm::DbBackend::Postgres => self.0.postgres,
            _ => self.0.sqlite,
        };
        for sql in self.0.statements {
            conn.execute_unprepared(&ddl(backend, sql)).await?;
        }
        for sql in own {
            conn.execute_unprepared(sql).await?;
        }
        Ok(())
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
