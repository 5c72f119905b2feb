//! Raw-database baselines, run by pgbench against the gateway's own PostgreSQL database in
//! the same run as the gateway scenarios, so each scenario gets a "ratio to the raw
//! database" measured under the same conditions:
//!
//! - `pg-select` (for `get-contact`): pgbench's built-in primary-key select, `pgbench -S`,
//!   on pgbench's own tables (created in the database with `pgbench -i -s <scale>` when
//!   missing);
//! - `pg-get` (for reference): the very `SELECT` of `GetContact`, for one contact;
//! - `pg-list` (for `list-contacts`): the very `SELECT` the gateway runs for the default
//!   list scenario (captured from the gateway with `log_min_duration_statement = 0`), with
//!   the same parameters bound;
//! - `pg-timeline` (for `get-timeline`): GetTimeline's SELECT of a contact's first page;
//! - `pg-create` (for `create-contact`): the gateway's create transaction as raw SQL: the
//!   custom field definitions read, the contact row, its audit record, its ownership change
//!   and its outbox event, with payloads of the same size, in one transaction.
//!
//! Every baseline runs with `-M prepared`, the scenario's number of clients and
//! `--pgbench-jobs` threads, a warm-up run first, and per-transaction latencies logged
//! (a sample) for the percentiles.

use hdrhistogram::Histogram;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Baselines and the gateway scenario each is compared with.
pub const BASELINES: &[(&str, &str)] = &[
    ("pg-select", "get-contact"),
    ("pg-list", "list-contacts"),
    ("pg-create", "create-contact"),
    ("pg-timeline", "get-timeline"),
];

/// The baseline of a gateway scenario.
pub fn baseline_of(scenario: &str) -> Option<&'static str> {
    BASELINES
        .iter()
        .find(|(_, s)| *s == scenario)
        .map(|(b, _)| *b)
}

/// `SELECT` of `ListContacts` with `filter: region = "DE" AND tags:"vip"`,
/// `order_by: display_name`, `page_size: 50`, as the gateway sends it (LIMIT page + 1).
const LIST_SQL: &str = r#"SELECT "id", "revision", "create_time", "update_time", "given_name", "family_name", "display_name", "phones", "emails", "addresses", "birth_date", "region", "tags", "owner_id", "territory_id", "custom_fields" FROM "contacts" WHERE "tenant_id" = :tenant AND "delete_time" IS NULL AND ("region" = :region AND (string_to_array("tags", '|') @> string_to_array(:tag, '|'))) ORDER BY "display_name" ASC, "id" ASC LIMIT :limit;
"#;

/// `SELECT` of `GetContact` as the gateway sends it.
const GET_SQL: &str = r#"SELECT "id", "revision", "create_time", "update_time", "given_name", "family_name", "display_name", "phones", "emails", "addresses", "birth_date", "region", "tags", "owner_id", "territory_id", "custom_fields" FROM "contacts" WHERE "tenant_id" = :tenant AND "delete_time" IS NULL AND "id" = :id;
"#;

/// A time-ordered id (48-bit millisecond prefix, like the gateway's UUIDv7).
const V7: &str = "(lpad(to_hex((extract(epoch FROM clock_timestamp()) * 1000)::bigint), 12, '0') || '7' || substr(md5(random()::text), 1, 19))::uuid";

/// `CreateContact`'s transaction as raw SQL (pgbench reads `:name` as a variable anywhere in a
/// statement, so the JSON texts put a space after each colon).
fn create_sql() -> String {
    format!(
        r#"\set n random(1000000, 9999999)
BEGIN;
SELECT {V7} AS cid, {V7} AS aid, {V7} AS oid, {V7} AS eid, (SELECT count(*) FROM "custom_field_definitions" WHERE "tenant_id" = :tenant AND "delete_time" IS NULL AND "collection" = 'contacts') AS defs \gset
INSERT INTO "contacts" ("tenant_id", "id", "revision", "create_time", "update_time", "given_name", "family_name", "display_name", "phones", "emails", "addresses", "birth_date", "region", "tags", "owner_id", "territory_id", "custom_fields") VALUES (:tenant, :cid, 1, now(), now(), 'Bench' || :n, 'Load', 'Bench' || :n || ' Load', '[{{"extension": "","label": "work","number": "+4930' || :n || '"}}]', '[{{"address": "bench' || :n || '.raw@load.example","label": ""}}]', '[]', NULL, 'bench', '|bench|', :actor, NULL, '{{}}');
INSERT INTO "audit_records" ("tenant_id", "id", "collection", "resource_id", "action", "actor_id", "time", "changes", "request_id") VALUES (:tenant, :aid, 'contacts', :cid, 'CREATE', :actor, now(), '[{{"field": "given_name","old": null,"new": "Bench' || :n || '"}},{{"field": "family_name","old": null,"new": "Load"}},{{"field": "display_name","old": null,"new": "Bench' || :n || ' Load"}},{{"field": "phones","old": null,"new": [{{"extension": "","label": "work","number": "+4930' || :n || '"}}]}},{{"field": "emails","old": null,"new": [{{"address": "bench' || :n || '.raw@load.example","label": ""}}]}},{{"field": "region","old": null,"new": "bench"}},{{"field": "tags","old": null,"new": ["bench"]}},{{"field": "owner","old": null,"new": "users/' || :actor || '"}}]', '');
INSERT INTO "ownership_changes" ("tenant_id", "id", "collection", "resource_id", "previous_owner_id", "new_owner_id", "actor_id", "time") VALUES (:tenant, :oid, 'contacts', :cid, NULL, :actor, :actor, now());
INSERT INTO "outbox_events" ("tenant_id", "id", "subject", "collection", "resource_id", "event_type", "payload", "time") VALUES (:tenant, :eid, 'crm.' || :tenant || '.contacts.created', 'contacts', :cid, 'contacts.created', '{{"actor": "users/' || :actor || '","changed_fields": ["given_name","family_name","display_name","phones","emails","region","tags","owner"],"data": {{"addresses": [],"birth_date": null,"custom_fields": {{}},"display_name": "Bench' || :n || ' Load","emails": [{{"address": "bench' || :n || '.raw@load.example","label": ""}}],"family_name": "Load","given_name": "Bench' || :n || '","owner": "' || :actor || '","phones": [{{"extension": "","label": "work","number": "+4930' || :n || '"}}],"region": "bench","tags": ["bench"],"territory": null}},"resource": "contacts/' || :cid || '","revision": 1}}', now());
END;
"#
    )
}

/// Where and how pgbench runs.
pub struct Pg {
    pub pgbench: String,
    pub url: String,
    pub clients: usize,
    pub jobs: usize,
    pub scale: u32,
    /// The token's tenant and user (the scripts' `:tenant` and `:actor`).
    pub tenant: String,
    pub actor: String,
    /// A contact of the tenant (the id), for `pg-get`.
    pub contact: String,
    /// Fraction of transactions whose latency is logged.
    pub sampling: f64,
    /// The contact (id) of `pg-timeline`.
    pub timeline_contact: String,
}

/// One baseline's measurements.
pub struct PgRun {
    pub transactions: u64,
    pub failed: u64,
    pub tps: f64,
    pub hist: Histogram<u64>,
    /// The measured pgbench command line (the URL left out).
    pub command: String,
}

fn tmp_dir(name: &str) -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("crm-bench-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

impl Pg {
    fn exec(&self, args: &[String]) -> Result<String, String> {
        let out = Command::new(&self.pgbench)
            .args(args)
            .arg(&self.url)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.pgbench))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            return Err(format!(
                "{} {} failed: {}{}",
                self.pgbench,
                args.join(" "),
                stdout,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(stdout)
    }

    /// Creates pgbench's own tables when they are missing (for `pg-select`).
    fn ensure_pgbench_tables(&self) -> Result<(), String> {
        let probe = ["-n", "-S", "-t", "1", "-c", "1"].map(String::from);
        if self.exec(&probe).is_ok() {
            return Ok(());
        }
        eprintln!(
            "pg-select: creating pgbench's tables (pgbench -i -q -s {})",
            self.scale
        );
        self.exec(&[
            "-i".into(),
            "-q".into(),
            "-s".into(),
            self.scale.to_string(),
        ])
        .map(|_| ())
    }

    /// The mode arguments of a baseline (script or built-in, variables).
    fn mode(&self, name: &str, dir: &Path) -> Result<Vec<String>, String> {
        let script = |file: &str, text: &str| -> Result<String, String> {
            let path = dir.join(file);
            std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(path.display().to_string())
        };
        let var = |k: &str, v: &str| ["-D".to_string(), format!("{k}={v}")];
        Ok(match name {
            "pg-select" => {
                self.ensure_pgbench_tables()?;
                vec!["-S".into()]
            }
            "pg-get" => {
                let mut a = vec!["-f".to_string(), script("get.sql", GET_SQL)?];
                a.extend(var("tenant", &self.tenant));
                a.extend(var("id", &self.contact));
                a
            }
            "pg-list" => {
                let mut a = vec!["-f".to_string(), script("list.sql", LIST_SQL)?];
                a.extend(var("tenant", &self.tenant));
                a.extend(var("region", "DE"));
                a.extend(var("tag", "vip"));
                a.extend(var("limit", "51"));
                a
            }
            "pg-timeline" => {
                let mut a = vec![
                    "-f".to_string(),
                    script("timeline.sql", crate::timeline::TIMELINE_SQL)?,
                ];
                a.extend(var("tenant", &self.tenant));
                a.extend(var("contact", &self.timeline_contact));
                a
            }
            "pg-create" => {
                let mut a = vec!["-f".to_string(), script("create.sql", &create_sql())?];
                a.extend(var("tenant", &self.tenant));
                a.extend(var("actor", &self.actor));
                a
            }
            other => return Err(format!("unknown baseline {other}")),
        })
    }

    /// Runs a baseline: a warm-up run, then the measured one with latencies logged.
    pub fn run(&self, name: &str, warmup: u64, duration: u64) -> Result<PgRun, String> {
        let dir = tmp_dir(name)?;
        let mode = self.mode(name, &dir)?;
        let mut common: Vec<String> = vec![
            "-n".into(),
            "-M".into(),
            "prepared".into(),
            "-c".into(),
            self.clients.to_string(),
            "-j".into(),
            self.jobs.to_string(),
        ];
        common.extend(mode);
        if warmup > 0 {
            let mut w = common.clone();
            w.extend(["-T".into(), warmup.to_string()]);
            self.exec(&w)?;
        }
        let mut m = common.clone();
        m.extend(["-T".into(), duration.to_string()]);
        let command = format!(
            "pgbench {}",
            m.iter()
                .map(|a| match a.rsplit_once('/') {
                    Some((_, file)) if a.ends_with(".sql") => file.to_owned(),
                    _ => a.clone(),
                })
                .collect::<Vec<_>>()
                .join(" ")
        );
        let prefix = dir.join("log");
        m.extend([
            "-l".into(),
            format!("--log-prefix={}", prefix.display()),
            format!("--sampling-rate={}", self.sampling),
        ]);
        let out = self.exec(&m)?;
        let number = |label: &str| -> Option<f64> {
            out.lines()
                .find_map(|l| l.trim().strip_prefix(label))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|v| v.split('/').next())
                .and_then(|v| v.parse::<f64>().ok())
        };
        let tps =
            number("tps =").ok_or_else(|| format!("{name}: no tps in pgbench's output: {out}"))?;
        let transactions =
            number("number of transactions actually processed:").unwrap_or(0.0) as u64;
        let failed = number("number of failed transactions:").unwrap_or(0.0) as u64;
        let mut hist =
            Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
        let entries = std::fs::read_dir(&dir).map_err(|e| e.to_string())?;
        for e in entries.flatten() {
            if !e.file_name().to_string_lossy().starts_with("log.") {
                continue;
            }
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            for line in text.lines() {
                // client_id transaction_no time(us) script_no time_epoch time_us ...
                if let Some(us) = line
                    .split_whitespace()
                    .nth(2)
                    .and_then(|t| t.parse::<u64>().ok())
                {
                    let _ = hist.record(us.clamp(1, 60_000_000));
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        Ok(PgRun {
            transactions,
            failed,
            tps,
            hist,
            command,
        })
    }
}

/// The `tenant` and `sub` claims of a JWT (not verified: the gateway does that).
pub fn token_claims(token: &str) -> Option<(String, String)> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64url(payload)?;
    let text = String::from_utf8(bytes).ok()?;
    let claim = |name: &str| -> Option<String> {
        let key = format!("\"{name}\":");
        let rest = text[text.find(&key)? + key.len()..].trim_start();
        let rest = rest.strip_prefix('"')?;
        Some(rest[..rest.find('"')?].to_owned())
    };
    Some((claim("tenant")?, claim("sub")?))
}

fn base64url(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn claims_of_a_token() {
        // {"sub":"01a2","tenant":"demo","roles":["admin"]}
        let t = "e30.eyJzdWIiOiIwMWEyIiwidGVuYW50IjoiZGVtbyIsInJvbGVzIjpbImFkbWluIl19.x";
        assert_eq!(token_claims(t), Some(("demo".into(), "01a2".into())));
    }

    #[test]
    fn scripts_have_no_variables_inside_literals() {
        // pgbench replaces `:name` anywhere; only these may appear.
        let allowed = [
            "tenant", "region", "tag", "limit", "actor", "n", "cid", "aid", "oid", "eid", "id",
        ];
        for text in [GET_SQL.to_string(), LIST_SQL.to_string(), create_sql()] {
            let b = text.as_bytes();
            for (i, c) in b.iter().enumerate() {
                let prev_colon = i > 0 && b[i - 1] == b':';
                if *c != b':' || prev_colon || b.get(i + 1) == Some(&b':') {
                    continue;
                }
                let name: String = text[i + 1..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                assert!(
                    name.is_empty() || allowed.contains(&name.as_str()),
                    "variable :{name} in {text}"
                );
            }
        }
    }
}
