//! Tenant-scoped counters (`crm_core::service::Tx::lock_counter`): round-robin positions,
//! numbering, and the row a use case locks to serialise with the others of its kind.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261125_000004_counters"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE TABLE counters (tenant_id TEXT NOT NULL, counter_key TEXT NOT NULL, \
                 value BIGINT NOT NULL, PRIMARY KEY (tenant_id, counter_key))",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP TABLE IF EXISTS counters")
            .await?;
        Ok(())
    }
}
