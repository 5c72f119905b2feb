//! Derived lookup keys of records (`crm_core::service::Tx::set_record_keys`): the
//! duplicate-matching blocking keys of leads, contacts and accounts, and any other key space
//! a domain crate keeps for records.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261125_000005_record_keys"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        let conn = manager.get_connection();
        for sql in [
            // Looked up by key: which records have it.
            "CREATE TABLE record_keys (tenant_id TEXT NOT NULL, key_space TEXT NOT NULL, \
             key_value TEXT NOT NULL, collection TEXT NOT NULL, record_id UUID NOT NULL, \
             PRIMARY KEY (tenant_id, key_space, key_value, collection, record_id))",
            // Replaced by record. The record id comes right after the tenant, so a lookup by
            // key can never be planned on this index (with stale statistics PostgreSQL once
            // chose it and filtered five million rows for one lookup: 1 s instead of 1 ms).
            "CREATE INDEX record_keys_record ON record_keys \
             (tenant_id, record_id, key_space, collection)",
        ] {
            conn.execute_unprepared(&crate::ddl(backend, sql)).await?;
        }
        if backend == sea_orm::DbBackend::Postgres {
            // Written in bursts (imports, loads): analyze after 2 % of its rows changed
            // rather than 10 %, so lookups keep a plan made for its size.
            conn.execute_unprepared(
                "ALTER TABLE record_keys SET (autovacuum_analyze_scale_factor = 0.02)",
            )
            .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP TABLE IF EXISTS record_keys")
            .await?;
        Ok(())
    }
}
