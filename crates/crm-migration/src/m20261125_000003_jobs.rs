//! Jobs and durable timers (`crm_core::jobs`): one row per job, claimed by runners with
//! `FOR UPDATE SKIP LOCKED` (PostgreSQL) or under the single writer (SQLite).

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261125_000003_jobs"
    }
}

fn statements() -> Vec<&'static str> {
    vec![
        // `wake_time` is when a runner next looks at the row: the due time of a queued job,
        // the lease deadline of a running one, NULL once it is finished. `collection` is the
        // collection the job concerns ('' for none), `creator_id` who started it (NULL for
        // the system): both decide who sees it as an operation.
        "CREATE TABLE jobs (tenant_id TEXT NOT NULL, id UUID NOT NULL, kind TEXT NOT NULL, \
         payload TEXT NOT NULL, dedupe_key TEXT NULL, collection TEXT NOT NULL, \
         creator_id UUID NULL, state TEXT NOT NULL, due_time TIMESTAMPTZ NOT NULL, \
         wake_time TIMESTAMPTZ NULL, attempts BIGINT NOT NULL, max_attempts BIGINT NOT NULL, \
         error_code TEXT NULL, last_error TEXT NULL, lease_owner TEXT NULL, \
         lease_deadline TIMESTAMPTZ NULL, cancel_requested BOOLEAN NOT NULL, result TEXT NULL, \
         progress TEXT NULL, checkpoint TEXT NULL, create_time TIMESTAMPTZ NOT NULL, \
         update_time TIMESTAMPTZ NOT NULL, finish_time TIMESTAMPTZ NULL, \
         PRIMARY KEY (tenant_id, id))",
        // The claim: due queued jobs and running jobs whose lease expired, oldest first.
        // The predicate is a literal in the claim query too, so PostgreSQL's generic plans
        // still use this index.
        "CREATE INDEX jobs_wake ON jobs (wake_time) WHERE state IN ('QUEUED', 'RUNNING')",
        // At most one pending job per tenant, kind and key: "the timer for case X".
        "CREATE UNIQUE INDEX jobs_dedupe ON jobs (tenant_id, kind, dedupe_key) \
         WHERE state = 'QUEUED'",
        // Retention: finished jobs, oldest first.
        "CREATE INDEX jobs_finished ON jobs (finish_time) \
         WHERE state IN ('SUCCEEDED', 'FAILED', 'CANCELLED')",
    ]
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        let conn = manager.get_connection();
        for sql in statements() {
            conn.execute_unprepared(&crate::ddl(backend, sql)).await?;
        }
        if backend == sea_orm::DbBackend::Postgres {
            // A queue table: every job is updated several times, so dead rows pile up fast,
            // and the claim's plan needs current statistics (with those of a nearly empty
            // table PostgreSQL sorts every due row instead of reading the index in order).
            // Vacuum and analyze it after 2 % of its rows changed rather than 20 % and 10 %.
            conn.execute_unprepared(
                "ALTER TABLE jobs SET (autovacuum_vacuum_scale_factor = 0.02, \
                 autovacuum_analyze_scale_factor = 0.02)",
            )
            .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP TABLE IF EXISTS jobs")
            .await?;
        Ok(())
    }
}
