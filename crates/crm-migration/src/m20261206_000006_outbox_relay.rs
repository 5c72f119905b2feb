//! The outbox relay (P1): the indexes its claim, its per-record ordering check and its
//! retention purge read.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261206_000006_outbox_relay"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        let conn = manager.get_connection();
        for sql in [
            // "Is an earlier event of this record still unpublished?": the relay publishes an
            // event only when none is, so events of one record leave in order.
            "CREATE INDEX outbox_events_record_pending ON outbox_events \
             (tenant_id, resource_id, id) WHERE published_time IS NULL",
            // The retention purge of published events.
            "CREATE INDEX outbox_events_published ON outbox_events (published_time) \
             WHERE published_time IS NOT NULL",
        ] {
            conn.execute_unprepared(&crate::ddl(backend, sql)).await?;
        }
        if backend == sea_orm::DbBackend::Postgres {
            // Every row is inserted, updated once and deleted: keep the pending index and
            // the statistics fresh.
            conn.execute_unprepared(
                "ALTER TABLE outbox_events SET (autovacuum_vacuum_scale_factor = 0.02, \
                 autovacuum_analyze_scale_factor = 0.02)",
            )
            .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let conn = manager.get_connection();
        conn.execute_unprepared("DROP INDEX IF EXISTS outbox_events_published")
            .await?;
        conn.execute_unprepared("DROP INDEX IF EXISTS outbox_events_record_pending")
            .await?;
        Ok(())
    }
}
