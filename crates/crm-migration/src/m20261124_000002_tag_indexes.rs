//! Tag filters (`tags:"vip"`) that stay fast however tags are distributed: on PostgreSQL a
//! GIN index over the tag array; on SQLite the tags ride in the region index, so rows that do
//! not match are skipped without reading them.

use sea_orm::DbBackend;
use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261124_000002_tag_indexes"
    }
}

const TABLES: &[&str] = &["accounts", "contacts"];

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let conn = manager.get_connection();
        for t in TABLES {
            let sql = match manager.get_database_backend() {
                DbBackend::Postgres => {
                    format!("CREATE INDEX {t}_tags ON {t} USING gin (string_to_array(tags, '|'))")
                }
                _ => format!(
                    "CREATE INDEX {t}_region_tags ON {t} \
                     (tenant_id, region, display_name, id, delete_time, tags); DROP INDEX {t}_region"
                ),
            };
            for stmt in sql.split("; ") {
                conn.execute_unprepared(stmt).await?;
            }
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let conn = manager.get_connection();
        for t in TABLES {
            let sql = match manager.get_database_backend() {
                DbBackend::Postgres => format!("DROP INDEX {t}_tags"),
                _ => format!(
                    "CREATE INDEX {t}_region ON {t} (tenant_id, region, display_name, id); DROP INDEX {t}_region_tags"
                ),
            };
            for stmt in sql.split("; ") {
                conn.execute_unprepared(stmt).await?;
            }
        }
        Ok(())
    }
}
