//! Webhooks (P1): the outbox remembers which events the webhook fan-out has taken, so every
//! committed event is turned into deliveries once, whatever the order transactions commit in.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261207_000007_outbox_webhooks"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        let conn = manager.get_connection();
        for sql in [
            // When the webhook fan-out took the event (NULL: not yet).
            "ALTER TABLE outbox_events ADD COLUMN webhook_time TIMESTAMPTZ NULL",
            // The fan-out's claim: events not taken yet, oldest first.
            "CREATE INDEX outbox_events_webhook_pending ON outbox_events (id) \
             WHERE webhook_time IS NULL",
        ] {
            conn.execute_unprepared(&crate::ddl(backend, sql)).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let conn = manager.get_connection();
        conn.execute_unprepared("DROP INDEX IF EXISTS outbox_events_webhook_pending")
            .await?;
        conn.execute_unprepared("ALTER TABLE outbox_events DROP COLUMN webhook_time")
            .await?;
        Ok(())
    }
}
