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
            // Replaced by record.
            "CREATE INDEX record_keys_record ON record_keys \
             (tenant_id, key_space, collection, record_id)",
        ] {
            conn.execute_unprepared(&crate::ddl(backend, sql)).await?;
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
