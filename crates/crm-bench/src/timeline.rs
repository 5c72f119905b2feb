//! The timeline benchmark's data: `crm-bench seed-timeline` loads interactions straight into
//! the gateway's PostgreSQL database, as `pgbench -i` loads its own tables: one contact with
//! `--contact-interactions` e-mails among `--total` interactions of the tenant (the others
//! spread over 50,000 other contact ids), then ANALYZE. The rows are what intake stores
//! (channel, direction, participants, a 2 KB body, a unique external id); the load skips the
//! audit trail and events, which GetTimeline never reads. The `get-timeline` scenario of
//! `crm-bench run` then reads the contact's first page through the gateway, against
//! `pg-timeline`, the gateway's SELECT run by pgbench.

use crm_core::db::{Db, DbOptions};
use sea_orm::ConnectionTrait;
use std::time::{Duration, Instant};

#[derive(clap::Parser, Clone)]
pub struct SeedArgs {
    /// The gateway's PostgreSQL database.
    #[arg(long, env = "CRM_BENCH_PG_URL")]
    pg_url: String,
    /// The tenant (id).
    #[arg(long)]
    tenant: String,
    /// The contact whose timeline is read (`contacts/{id}` or the id).
    #[arg(long)]
    contact: String,
    /// Interactions of that contact.
    #[arg(long, default_value_t = 100_000)]
    contact_interactions: u64,
    /// Interactions of the tenant in all (the contact's included).
    #[arg(long, default_value_t = 5_000_000)]
    total: u64,
    /// Rows per INSERT statement.
    #[arg(long, default_value_t = 250_000)]
    batch: u64,
}

/// The SELECT of GetTimeline for a contact's first page (50 entries, LIMIT page + 1), as the
/// gateway sends it for a caller without record scope (captured with
/// `log_min_duration_statement = 0`).
pub const TIMELINE_SQL: &str = r#"SELECT "id", "revision", "create_time", "update_time", "channel", "direction", "occurred_time", "duration_seconds", "subject", "body", "body_truncated", "participants", "attachments", "outcome", "handled_by_id", "contact_id", "account_id", "lead_id", "opportunity_id", "case_id", "conversation", "external_id", "matched", "owner_id", "territory_id" FROM "interactions" WHERE "tenant_id" = :tenant AND "delete_time" IS NULL AND "contact_id" = :contact ORDER BY "occurred_time" DESC, "id" ASC LIMIT 51;
"#;

fn insert_sql(a: &SeedArgs, contact: &str, from: u64, to: u64, run: &str) -> String {
    let tenant = a.tenant.replace('\'', "''");
    format!(
        r#"INSERT INTO interactions (tenant_id, id, revision, create_time, update_time, delete_time,
  channel, direction, occurred_time, duration_seconds, subject, body, body_truncated,
  participants, attachments, outcome, handled_by_id, contact_id, account_id, lead_id,
  opportunity_id, case_id, conversation, external_id, matched, owner_id, territory_id)
SELECT '{tenant}', gen_random_uuid(), 1, now(), now(), NULL,
  'EMAIL', CASE WHEN g % 3 = 0 THEN 'OUTBOUND' ELSE 'INBOUND' END,
  now() - make_interval(secs => g * 7), 0, 'Anfrage ' || g || ': Hydraulikpumpen',
  repeat('Sehr geehrte Damen und Herren, wir bitten um ein Angebot. ', 35), false,
  '[{{"address":"customer' || (g % 50000) || '@example.com","display_name":"Customer","role":"FROM","contact":null}},{{"address":"sales@acme.example","display_name":"","role":"TO","contact":null}}]',
  '[]', '', NULL,
  CASE WHEN g <= {n} THEN '{contact}'::uuid ELSE md5('other-' || (g % 50000))::uuid END,
  NULL, NULL, NULL, NULL, md5('thread-' || (g / 4))::text, 'bench-{run}-' || g, true, NULL, NULL
FROM generate_series({from}, {to}) AS g"#,
        n = a.contact_interactions
    )
}

/// Loads the rows (see the module docs).
pub async fn seed(a: SeedArgs) -> Result<(), Box<dyn std::error::Error>> {
    let contact = a.contact.trim_start_matches("contacts/").to_owned();
    uuid::Uuid::parse_str(&contact).map_err(|e| format!("--contact: {e}"))?;
    let db = Db::connect_with(
        &a.pg_url,
        DbOptions {
            max_connections: 2,
            statement_timeout: Duration::from_secs(3600),
            ..DbOptions::default()
        },
    )
    .await?;
    let run = uuid::Uuid::now_v7().simple().to_string()[..8].to_owned();
    let started = Instant::now();
    let mut from = 1;
    while from <= a.total {
        let to = (from + a.batch - 1).min(a.total);
        db.conn
            .execute_unprepared(&insert_sql(&a, &contact, from, to, &run))
            .await?;
        eprintln!(
            "seed-timeline: {to} of {} rows ({:.0} s)",
            a.total,
            started.elapsed().as_secs_f64()
        );
        from = to + 1;
    }
    db.conn.execute_unprepared("ANALYZE interactions").await?;
    eprintln!(
        "seed-timeline: {} interactions ({} of contacts/{contact}) in {:.0} s, analyzed",
        a.total,
        a.contact_interactions.min(a.total),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
