//! The shared core: tenants, the customer model (K1-K3), roles (K4), audit (K6), outbox (P1)
//! and idempotency keys.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261124_000001_init"
    }
}

/// Columns every resource table starts with.
const BASE: &str = "tenant_id TEXT NOT NULL, id UUID NOT NULL, revision BIGINT NOT NULL, \
    create_time TIMESTAMPTZ NOT NULL, update_time TIMESTAMPTZ NOT NULL, delete_time TIMESTAMPTZ NULL";

fn resource_table(name: &str, columns: &str) -> String {
    format!("CREATE TABLE {name} ({BASE}, {columns}, PRIMARY KEY (tenant_id, id))")
}

fn statements() -> Vec<String> {
    let mut s = vec![
        "CREATE TABLE tenants (id TEXT NOT NULL PRIMARY KEY, display_name TEXT NOT NULL, \
         status TEXT NOT NULL, create_time TIMESTAMPTZ NOT NULL, update_time TIMESTAMPTZ NOT NULL)"
            .to_owned(),
        resource_table(
            "users",
            "display_name TEXT NOT NULL, email TEXT NOT NULL, manager_id UUID NULL, \
             team_ids TEXT NOT NULL, territory_ids TEXT NOT NULL, skills TEXT NOT NULL, \
             capacity BIGINT NOT NULL, active BOOLEAN NOT NULL",
        ),
        "CREATE UNIQUE INDEX users_email ON users (tenant_id, email) WHERE delete_time IS NULL".to_owned(),
        "CREATE INDEX users_name ON users (tenant_id, display_name, id)".to_owned(),
        resource_table(
            "teams",
            "display_name TEXT NOT NULL, parent_id UUID NULL, lead_id UUID NULL",
        ),
        resource_table(
            "territories",
            "display_name TEXT NOT NULL, parent_id UUID NULL, regions TEXT NOT NULL",
        ),
        resource_table(
            "roles",
            "role_key TEXT NOT NULL, display_name TEXT NOT NULL, grants TEXT NOT NULL, \
             field_rules TEXT NOT NULL",
        ),
        "CREATE UNIQUE INDEX roles_key ON roles (tenant_id, role_key) WHERE delete_time IS NULL".to_owned(),
        resource_table(
            "custom_field_definitions",
            "collection TEXT NOT NULL, field_key TEXT NOT NULL, display_name TEXT NOT NULL, \
             value_type TEXT NOT NULL, enum_values TEXT NOT NULL, required BOOLEAN NOT NULL",
        ),
        "CREATE UNIQUE INDEX custom_field_definitions_key ON custom_field_definitions \
         (tenant_id, collection, field_key) WHERE delete_time IS NULL"
            .to_owned(),
        resource_table(
            "accounts",
            "display_name TEXT NOT NULL, industry TEXT NOT NULL, region TEXT NOT NULL, \
             employee_count BIGINT NOT NULL, parent_id UUID NULL, owner_id UUID NULL, \
             territory_id UUID NULL, website TEXT NOT NULL, addresses TEXT NOT NULL, \
             tags TEXT NOT NULL, custom_fields TEXT NOT NULL",
        ),
        "CREATE INDEX accounts_name ON accounts (tenant_id, display_name, id)".to_owned(),
        "CREATE INDEX accounts_region ON accounts (tenant_id, region, display_name, id)".to_owned(),
        "CREATE INDEX accounts_owner ON accounts (tenant_id, owner_id)".to_owned(),
        "CREATE INDEX accounts_parent ON accounts (tenant_id, parent_id)".to_owned(),
        resource_table(
            "contacts",
            "given_name TEXT NOT NULL, family_name TEXT NOT NULL, display_name TEXT NOT NULL, \
             phones TEXT NOT NULL, emails TEXT NOT NULL, addresses TEXT NOT NULL, \
             birth_date DATE NULL, region TEXT NOT NULL, tags TEXT NOT NULL, owner_id UUID NULL, \
             territory_id UUID NULL, custom_fields TEXT NOT NULL",
        ),
        "CREATE INDEX contacts_name ON contacts (tenant_id, display_name, id)".to_owned(),
        "CREATE INDEX contacts_region ON contacts (tenant_id, region, display_name, id)".to_owned(),
        "CREATE INDEX contacts_owner ON contacts (tenant_id, owner_id)".to_owned(),
        "CREATE INDEX contacts_created ON contacts (tenant_id, create_time, id)".to_owned(),
        resource_table(
            "positions",
            "contact_id UUID NOT NULL, account_id UUID NOT NULL, title TEXT NOT NULL, \
             role TEXT NOT NULL, start_date DATE NULL, end_date DATE NULL, \
             FOREIGN KEY (tenant_id, contact_id) REFERENCES contacts (tenant_id, id), \
             FOREIGN KEY (tenant_id, account_id) REFERENCES accounts (tenant_id, id)",
        ),
        "CREATE INDEX positions_contact ON positions (tenant_id, contact_id)".to_owned(),
        "CREATE INDEX positions_account ON positions (tenant_id, account_id)".to_owned(),
        resource_table(
            "product_groups",
            "display_name TEXT NOT NULL, parent_id UUID NULL",
        ),
        resource_table(
            "products",
            "sku TEXT NOT NULL, display_name TEXT NOT NULL, product_group_id UUID NULL, \
             currency_code TEXT NOT NULL, list_price BIGINT NOT NULL, active BOOLEAN NOT NULL",
        ),
        "CREATE UNIQUE INDEX products_sku ON products (tenant_id, sku) WHERE delete_time IS NULL".to_owned(),
        resource_table(
            "orders",
            "account_id UUID NULL, contact_id UUID NULL, order_time TIMESTAMPTZ NULL, \
             channel TEXT NOT NULL, status TEXT NOT NULL, currency_code TEXT NOT NULL, \
             lines TEXT NOT NULL, total BIGINT NOT NULL, owner_id UUID NULL, territory_id UUID NULL",
        ),
        "CREATE INDEX orders_account ON orders (tenant_id, account_id, order_time)".to_owned(),
        "CREATE INDEX orders_contact ON orders (tenant_id, contact_id, order_time)".to_owned(),
        "CREATE INDEX orders_time ON orders (tenant_id, order_time, id)".to_owned(),
        "CREATE TABLE audit_records (tenant_id TEXT NOT NULL, id UUID NOT NULL, \
         collection TEXT NOT NULL, resource_id UUID NOT NULL, action TEXT NOT NULL, \
         actor_id UUID NOT NULL, time TIMESTAMPTZ NOT NULL, changes TEXT NOT NULL, \
         request_id TEXT NOT NULL, PRIMARY KEY (tenant_id, id))"
            .to_owned(),
        "CREATE INDEX audit_records_resource ON audit_records (tenant_id, collection, resource_id, id)"
            .to_owned(),
        "CREATE TABLE ownership_changes (tenant_id TEXT NOT NULL, id UUID NOT NULL, \
         collection TEXT NOT NULL, resource_id UUID NOT NULL, previous_owner_id UUID NULL, \
         new_owner_id UUID NULL, actor_id UUID NOT NULL, time TIMESTAMPTZ NOT NULL, \
         PRIMARY KEY (tenant_id, id))"
            .to_owned(),
        "CREATE INDEX ownership_changes_resource ON ownership_changes \
         (tenant_id, collection, resource_id, id)"
            .to_owned(),
        "CREATE TABLE outbox_events (tenant_id TEXT NOT NULL, id UUID NOT NULL, \
         subject TEXT NOT NULL, collection TEXT NOT NULL, resource_id UUID NOT NULL, \
         event_type TEXT NOT NULL, payload TEXT NOT NULL, time TIMESTAMPTZ NOT NULL, \
         published_time TIMESTAMPTZ NULL, PRIMARY KEY (tenant_id, id))"
            .to_owned(),
        "CREATE INDEX outbox_events_pending ON outbox_events (id) WHERE published_time IS NULL"
            .to_owned(),
        "CREATE TABLE idempotency_keys (tenant_id TEXT NOT NULL, collection TEXT NOT NULL, \
         request_id TEXT NOT NULL, request_hash TEXT NOT NULL, resource_id UUID NOT NULL, \
         create_time TIMESTAMPTZ NOT NULL, PRIMARY KEY (tenant_id, collection, request_id))"
            .to_owned(),
    ];
    s.shrink_to_fit();
    s
}

const TABLES: &[&str] = &[
    "idempotency_keys",
    "outbox_events",
    "ownership_changes",
    "audit_records",
    "orders",
    "products",
    "product_groups",
    "positions",
    "contacts",
    "accounts",
    "custom_field_definitions",
    "roles",
    "territories",
    "teams",
    "users",
    "tenants",
];

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        let conn = manager.get_connection();
        for sql in statements() {
            conn.execute_unprepared(&crate::ddl(backend, &sql)).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let conn = manager.get_connection();
        for t in TABLES {
            conn.execute_unprepared(&format!("DROP TABLE IF EXISTS {t}"))
                .await?;
        }
        Ok(())
    }
}
