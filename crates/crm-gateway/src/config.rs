//! Configuration: built-in defaults < `crm.toml` (or `--config FILE`) < environment
//! `CRM__SECTION__KEY` (e.g. `CRM__DATABASE__URL=postgres://...`).

use serde::Deserialize;
use std::time::Duration;

/// The development signing secret. `crm serve` warns when it is in use.
pub const DEV_SECRET: &str = "crm-development-secret-do-not-use-in-production";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub server: Server,
    pub database: Database,
    pub auth: Auth,
    pub log: Log,
    pub jobs: Jobs,
    pub secrets: Secrets,
    pub events: Events,
    pub webhooks: Webhooks,
}

/// Webhooks (P1, `crm_webhooks`): the fan-out of committed events into deliveries, run by
/// every replica (they share the work on PostgreSQL; on SQLite run one per database file),
/// and the delivery attempts, which are jobs (`crm.webhooks.deliver`) of the job runner.
/// Durations in milliseconds unless named otherwise.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Webhooks {
    /// Whether `crm serve` runs the fan-out and the delivery log's retention purge. Default
    /// true. Attempts run wherever the job runner runs (`jobs.enabled`).
    pub enabled: bool,
    /// How often the fan-out looks for events when no write of this process woke it.
    /// Default 1000.
    pub poll_interval_ms: u64,
    /// Most events one fan-out claim takes. Default 500.
    pub batch_size: u32,
    /// The bound of one attempt: resolving, connecting, TLS, sending and reading the
    /// answer's status. A target that hangs is given up after it (the attempt renews its
    /// job's lease meanwhile). Default 10000.
    pub timeout_ms: u64,
    /// Attempts before a delivery is dead (the dead-letter list). Default 12.
    pub max_attempts: u32,
    /// The delay after the first failed attempt; each further one doubles it, less a
    /// jitter of up to a quarter. Default 30000.
    pub retry_base_ms: u64,
    /// The longest delay between attempts. Default 21600000 (6 h).
    pub retry_max_ms: u64,
    /// Whether targets may resolve to loopback, private (RFC 1918, unique local),
    /// link-local (cloud metadata) or other non-public addresses. Default false: a tenant
    /// cannot make the service call into its own network. Set true for targets on a
    /// trusted internal network (and in tests).
    pub allow_private_targets: bool,
    /// Whether a 410 Gone answer switches the subscription off (its delivery is dead;
    /// `disabled_reason` says why). Default true; false treats 410 like any failure.
    pub deactivate_on_gone: bool,
    /// How long delivered and dead deliveries stay in the log, in hours; 0 keeps them.
    /// Default 168 (7 days).
    pub retention_hours: u64,
}

impl Default for Webhooks {
    fn default() -> Self {
        let d = crm_webhooks::Settings::default();
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Self {
            enabled: d.fanout,
            poll_interval_ms: ms(d.poll_interval),
            batch_size: d.batch_size,
            timeout_ms: ms(d.timeout),
            max_attempts: d.max_attempts,
            retry_base_ms: ms(d.retry_base),
            retry_max_ms: ms(d.retry_max),
            allow_private_targets: d.allow_private_targets,
            deactivate_on_gone: d.deactivate_on_gone,
            retention_hours: d.retention.as_secs() / 3600,
        }
    }
}

impl Webhooks {
    /// The settings of the fan-out and of the delivery job.
    pub fn delivery(&self) -> crm_webhooks::Settings {
        crm_webhooks::Settings {
            fanout: self.enabled,
            poll_interval: Duration::from_millis(self.poll_interval_ms),
            batch_size: self.batch_size,
            timeout: Duration::from_millis(self.timeout_ms),
            max_attempts: self.max_attempts,
            retry_base: Duration::from_millis(self.retry_base_ms),
            retry_max: Duration::from_millis(self.retry_max_ms),
            allow_private_targets: self.allow_private_targets,
            deactivate_on_gone: self.deactivate_on_gone,
            retention: Duration::from_secs(self.retention_hours.saturating_mul(3600)),
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        let at_least = |name: &str, v: u64, min: u64| {
            if v < min {
                Err(format!("webhooks.{name} must be at least {min}"))
            } else {
                Ok(())
            }
        };
        at_least("poll_interval_ms", self.poll_interval_ms, 10)?;
        at_least("batch_size", u64::from(self.batch_size), 1)?;
        at_least("timeout_ms", self.timeout_ms, 100)?;
        at_least("max_attempts", u64::from(self.max_attempts), 1)?;
        at_least("retry_base_ms", self.retry_base_ms, 1)?;
        at_least("retry_max_ms", self.retry_max_ms, self.retry_base_ms)?;
        if self.batch_size > 5000 {
            return Err("webhooks.batch_size must be at most 5000".into());
        }
        if self.max_attempts > 100 {
            return Err("webhooks.max_attempts must be at most 100".into());
        }
        if self.retention_hours > 100 * 365 * 24 {
            return Err("webhooks.retention_hours must be at most 100 years".into());
        }
        Ok(())
    }
}

/// Events (P1): the relay publishing outbox rows to NATS JetStream, and how long the outbox
/// keeps them. Durations in milliseconds unless named otherwise.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Events {
    /// The NATS server(s) of the relay, e.g. `nats://127.0.0.1:4222` (several comma-separated).
    /// Empty (the default): no relay; events stay in the outbox for WatchEvents until
    /// `retention_hours` passed.
    pub nats_url: String,
    /// Whether `crm serve` runs the relay when `nats_url` is set. Default true; set false to
    /// run relays as separate processes (`crm relay`).
    pub relay: bool,
    /// The first token of every subject: `<subject_prefix>.<tenant>.<resource>.<verb>`.
    /// Default `crm`.
    pub subject_prefix: String,
    /// The JetStream stream, created (for `<subject_prefix>.>`, file storage) when missing.
    /// Default `CRM_EVENTS`.
    pub stream: String,
    /// How long the stream keeps messages, in hours (set when the relay creates it).
    /// Default 168 (7 days).
    pub stream_max_age_hours: u64,
    /// The stream's de-duplication window (set when the relay creates it): a message whose
    /// `Nats-Msg-Id` (the event id) was seen within it is dropped. Default 120000 (2 min).
    pub duplicate_window_ms: u64,
    /// Most events one claim publishes. Default 1000.
    pub batch_size: u32,
    /// Claims in flight at once in one relay (PostgreSQL; SQLite always 1). Default 4.
    pub concurrency: u32,
    /// How often the relay looks for events when nothing in this process woke it (writes of
    /// this replica wake it at once). Default 100.
    pub poll_interval_ms: u64,
    /// How long the relay waits for JetStream to acknowledge a batch. Default 5000.
    pub publish_timeout_ms: u64,
    /// The first retry's delay after NATS failed; each further one doubles it. Default 250.
    pub retry_base_ms: u64,
    /// The longest retry delay while NATS is down. Default 10000.
    pub retry_max_ms: u64,
    /// How long published events stay in the outbox (WatchEvents resumes within it), in
    /// hours; 0 keeps them. Without a relay, unpublished events are pruned after it too.
    /// Default 24.
    pub retention_hours: u64,
}

impl Default for Events {
    fn default() -> Self {
        Self {
            nats_url: String::new(),
            relay: true,
            subject_prefix: "crm".into(),
            stream: "CRM_EVENTS".into(),
            stream_max_age_hours: 168,
            duplicate_window_ms: 120_000,
            batch_size: 1000,
            concurrency: 4,
            poll_interval_ms: 100,
            publish_timeout_ms: 5000,
            retry_base_ms: 250,
            retry_max_ms: 10_000,
            retention_hours: 24,
        }
    }
}

impl Events {
    pub fn validate(&self) -> Result<(), String> {
        let token_ok = |t: &str| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if !self.subject_prefix.split('.').all(token_ok) {
            return Err(
                "events.subject_prefix must be dot-separated tokens of a-z, A-Z, 0-9, '-' and '_'"
                    .into(),
            );
        }
        if !token_ok(&self.stream) {
            return Err("events.stream must be 1 or more of a-z, A-Z, 0-9, '-' and '_'".into());
        }
        let at_least = |name: &str, v: u64, min: u64| {
            if v < min {
                Err(format!("events.{name} must be at least {min}"))
            } else {
                Ok(())
            }
        };
        at_least("batch_size", u64::from(self.batch_size), 1)?;
        at_least("concurrency", u64::from(self.concurrency), 1)?;
        at_least("poll_interval_ms", self.poll_interval_ms, 1)?;
        at_least("publish_timeout_ms", self.publish_timeout_ms, 100)?;
        at_least("retry_base_ms", self.retry_base_ms, 1)?;
        at_least("retry_max_ms", self.retry_max_ms, self.retry_base_ms)?;
        at_least("duplicate_window_ms", self.duplicate_window_ms, 1000)?;
        at_least("stream_max_age_hours", self.stream_max_age_hours, 1)?;
        if self.batch_size > 5000 {
            return Err("events.batch_size must be at most 5000".into());
        }
        if self.concurrency > 16 {
            return Err("events.concurrency must be at most 16".into());
        }
        if self.retention_hours > 100 * 365 * 24 || self.stream_max_age_hours > 100 * 365 * 24 {
            return Err("events retention must be at most 100 years".into());
        }
        if Duration::from_millis(self.duplicate_window_ms)
            > Duration::from_secs(self.stream_max_age_hours.saturating_mul(3600))
        {
            return Err("events.duplicate_window_ms must not exceed the stream's max age".into());
        }
        Ok(())
    }

    /// Whether `crm serve` runs a relay.
    pub fn relay_in_serve(&self) -> bool {
        self.relay && !self.nats_url.trim().is_empty()
    }
}

/// The key that seals tenants' stored credentials (`crm_core::secrets`), e.g. mailbox
/// passwords.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Secrets {
    /// Base64 of 32 random bytes (`openssl rand -base64 32`). Empty: a key derived from
    /// `auth.hs256_secret` (when tokens are HS256), else no key, and storing a credential
    /// answers FAILED_PRECONDITION. Every replica needs the same key.
    pub key: String,
    /// Keys used before `key` (base64 each): values sealed with them still open; they are
    /// re-sealed with `key` when next written.
    pub previous_keys: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    /// gRPC (and grpc-web) listen address. Default `127.0.0.1:50051`.
    pub listen: String,
    /// Origins whose pages may call the API over grpc-web (CORS), e.g.
    /// `["https://app.example.com"]`; `*` (the default) allows any origin, which is safe
    /// because calls carry bearer tokens, never cookies. From the environment:
    /// `CRM__SERVER__CORS_ORIGINS=https://a.example,https://b.example`.
    pub cors_origins: Vec<String>,
    /// Largest accepted request message in bytes; larger ones answer RESOURCE_EXHAUSTED.
    /// Default 4 MiB.
    pub max_request_bytes: usize,
    /// Largest accepted HTTP/2 header block in bytes (bearer tokens travel in it).
    /// Default 1 MiB.
    pub max_header_bytes: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Database {
    /// `sqlite://crm.db?mode=rwc` (default) or `postgres://user@host:5432/crm`.
    pub url: String,
    /// Pool size. Default 16.
    pub max_connections: u32,
    /// How long the gateway waits for the database, in milliseconds. Default 5000.
    ///
    /// - PostgreSQL gets it as the server-side `statement_timeout` of every connection: a
    ///   statement running longer is aborted by the server.
    /// - Opening a connection (TCP, TLS, startup) and taking one from the pool are bounded
    ///   by it.
    /// - Every RPC is bounded by it: an RPC that has not finished in this time answers
    ///   UNAVAILABLE ("the database did not answer within N ms"), or DEADLINE_EXCEEDED if
    ///   the client's own shorter `grpc-timeout` passed first; its work is cancelled.
    /// - The health check's ping is bounded by the smaller of this and 2 s.
    ///
    /// In a network partition the database sends no reset, so these bounds (not TCP) are
    /// what turn a hang into a prompt UNAVAILABLE. At least 100.
    pub statement_timeout_ms: u64,
    /// How long a replica reuses tenant configuration it read on hot write paths (the
    /// active duplicate, grading and routing policies, territory and product-group trees):
    /// a change made through this replica is used at once, one made through another replica
    /// within this time. `0` re-reads on every write. Default 1000.
    pub config_cache_ms: u64,
}

impl Database {
    /// The pool options these settings give.
    pub fn options(&self) -> crm_core::db::DbOptions {
        crm_core::db::DbOptions {
            max_connections: self.max_connections,
            statement_timeout: self.statement_timeout(),
            config_cache: std::time::Duration::from_millis(self.config_cache_ms),
        }
    }

    /// `statement_timeout_ms` as a duration.
    pub fn statement_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.statement_timeout_ms)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Auth {
    /// HS256 shared secret (development and simple deployments).
    pub hs256_secret: String,
    /// A PEM file with the identity provider's RS256 public key; when set, tokens must be
    /// RS256-signed by it and `hs256_secret` is not accepted.
    pub rs256_public_key_file: String,
    /// Required `iss` claim. Default `crm`.
    pub issuer: String,
    /// Required `aud` claim. Default `crm-api`.
    pub audience: String,
    /// How long an evaluated tenant status and role set is reused, in milliseconds: role
    /// edits and suspensions take effect within this time on every replica. 0 disables.
    /// Default 1000.
    pub policy_cache_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// `text` (default) or `json` (for containers).
    pub format: String,
    /// A tracing filter, e.g. `info` or `crm=debug,sqlx=warn`. Default `info`.
    pub level: String,
}

/// The job runner of this replica (`crm_core::jobs`): timers, reminders, imports and every
/// other job of the kinds this build has handlers for. Every replica may run one; on
/// PostgreSQL they share the queue, on SQLite run one per database file. Durations in
/// milliseconds; leases, retries and retention are measured on the database's clock (UTC).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Jobs {
    /// Whether this replica runs jobs. Default true.
    pub enabled: bool,
    /// How often the runner looks for due jobs when nothing in this process wakes it (jobs
    /// scheduled by this replica wake it at once). Default 1000.
    pub poll_interval_ms: u64,
    /// Most jobs claimed in one statement. Default 128.
    pub batch_size: u32,
    /// Most jobs running at once in this replica. Default 64.
    pub concurrency: u32,
    /// How long a claim holds a job; a handler renews it while it reports progress. Jobs of a
    /// replica that dies come back after this time. Default 60000.
    pub lease_ms: u64,
    /// The first retry's delay after a failed attempt; each further retry doubles it.
    /// Default 1000.
    pub retry_base_ms: u64,
    /// The longest retry delay. Default 3600000 (1 h).
    pub retry_max_ms: u64,
    /// How long a due job of a suspended tenant is put off each time. Default 60000.
    pub suspended_delay_ms: u64,
    /// How long a shutdown waits for running jobs before giving them back to the queue.
    /// Default 10000.
    pub shutdown_grace_ms: u64,
    /// How long finished jobs (and so operations) are kept, in hours; 0 keeps them forever.
    /// Default 168 (7 days).
    pub retention_hours: u64,
}

impl Default for Jobs {
    fn default() -> Self {
        let d = crm_core::jobs::RunnerSettings::default();
        let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Self {
            enabled: true,
            poll_interval_ms: ms(d.poll_interval),
            batch_size: d.batch_size,
            concurrency: d.concurrency,
            lease_ms: ms(d.lease),
            retry_base_ms: ms(d.retry_base),
            retry_max_ms: ms(d.retry_max),
            suspended_delay_ms: ms(d.suspended_delay),
            shutdown_grace_ms: ms(d.shutdown_grace),
            retention_hours: d.retention.as_secs() / 3600,
        }
    }
}

impl Jobs {
    /// The runner settings these give.
    pub fn runner(&self) -> crm_core::jobs::RunnerSettings {
        use std::time::Duration;
        crm_core::jobs::RunnerSettings {
            poll_interval: Duration::from_millis(self.poll_interval_ms),
            batch_size: self.batch_size,
            lease: Duration::from_millis(self.lease_ms),
            concurrency: self.concurrency,
            retry_base: Duration::from_millis(self.retry_base_ms),
            retry_max: Duration::from_millis(self.retry_max_ms),
            suspended_delay: Duration::from_millis(self.suspended_delay_ms),
            shutdown_grace: Duration::from_millis(self.shutdown_grace_ms),
            retention: Duration::from_secs(self.retention_hours.saturating_mul(3600)),
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        let at_least = |name: &str, v: u64, min: u64| {
            if v < min {
                Err(format!("jobs.{name} must be at least {min}"))
            } else {
                Ok(())
            }
        };
        at_least("poll_interval_ms", self.poll_interval_ms, 10)?;
        at_least("batch_size", u64::from(self.batch_size), 1)?;
        at_least("concurrency", u64::from(self.concurrency), 1)?;
        at_least("lease_ms", self.lease_ms, 1000)?;
        at_least("retry_base_ms", self.retry_base_ms, 1)?;
        at_least("retry_max_ms", self.retry_max_ms, self.retry_base_ms)?;
        at_least("suspended_delay_ms", self.suspended_delay_ms, 1000)?;
        if self.batch_size > 1000 {
            return Err("jobs.batch_size must be at most 1000".into());
        }
        if self.retention_hours > 100 * 365 * 24 {
            return Err("jobs.retention_hours must be at most 100 years".into());
        }
        Ok(())
    }
}

impl Default for Server {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:50051".into(),
            cors_origins: vec!["*".into()],
            max_request_bytes: 4 * 1024 * 1024,
            max_header_bytes: 1024 * 1024,
        }
    }
}

impl Default for Database {
    fn default() -> Self {
        Self {
            url: "sqlite://crm.db?mode=rwc".into(),
            max_connections: 16,
            statement_timeout_ms: 5000,
            config_cache_ms: 1000,
        }
    }
}

impl Default for Auth {
    fn default() -> Self {
        Self {
            hs256_secret: DEV_SECRET.into(),
            rs256_public_key_file: String::new(),
            issuer: "crm".into(),
            audience: "crm-api".into(),
            policy_cache_ms: 1000,
        }
    }
}

impl Default for Log {
    fn default() -> Self {
        Self {
            format: "text".into(),
            level: "info".into(),
        }
    }
}

impl Settings {
    /// Loads defaults, then the file (`crm.toml` if present, or the given one, which must
    /// exist), then the environment; then validates.
    pub fn load(file: Option<&str>) -> Result<Settings, String> {
        let mut b = config::Config::builder();
        b = match file {
            Some(f) => b.add_source(config::File::with_name(f).required(true)),
            None => b.add_source(config::File::with_name("crm.toml").required(false)),
        };
        b = b.add_source(
            config::Environment::with_prefix("CRM")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("server.cors_origins")
                .with_list_parse_key("secrets.previous_keys"),
        );
        let s: Settings = b
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| format!("configuration: {e}"))?;
        s.validate()?;
        Ok(s)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.server.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(format!(
                "server.listen {:?} is not host:port",
                self.server.listen
            ));
        }
        if self.server.max_request_bytes < 1024 {
            return Err("server.max_request_bytes must be at least 1024".into());
        }
        if self.server.max_header_bytes < 16 * 1024 {
            return Err("server.max_header_bytes must be at least 16384".into());
        }
        for o in &self.server.cors_origins {
            let o = o.trim();
            if o != "*" && http::HeaderValue::from_str(o).is_err() {
                return Err(format!("server.cors_origins: {o:?} is not an origin"));
            }
        }
        if !(self.database.url.starts_with("sqlite:") || self.database.url.starts_with("postgres"))
        {
            return Err("database.url must start with sqlite: or postgres://".into());
        }
        if self.database.statement_timeout_ms < 100 {
            return Err("database.statement_timeout_ms must be at least 100".into());
        }
        if self.auth.rs256_public_key_file.is_empty() && self.auth.hs256_secret.len() < 16 {
            return Err("auth.hs256_secret must be at least 16 bytes".into());
        }
        if !["text", "json"].contains(&self.log.format.as_str()) {
            return Err("log.format must be text or json".into());
        }
        self.jobs.validate()?;
        self.events.validate()?;
        self.webhooks.validate()?;
        self.sealer()?;
        Ok(())
    }

    /// The sealer of stored credentials (see [`Secrets`]); None when no key is configured and
    /// none can be derived.
    pub fn sealer(&self) -> Result<Option<crm_core::secrets::Sealer>, String> {
        use crm_core::secrets::Sealer;
        let previous = self
            .secrets
            .previous_keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                Sealer::parse_key(k).map_err(|e| format!("secrets.previous_keys[{i}] {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let current = if !self.secrets.key.trim().is_empty() {
            Sealer::parse_key(&self.secrets.key).map_err(|e| format!("secrets.key {e}"))?
        } else if self.auth.rs256_public_key_file.is_empty() && self.auth.hs256_secret.len() >= 16 {
            Sealer::derive_key(&self.auth.hs256_secret)
        } else {
            return Ok(None);
        };
        Ok(Some(Sealer::new(current, &previous)))
    }

    pub fn verifier(&self) -> Result<crm_core::auth::TokenVerifier, String> {
        if self.auth.rs256_public_key_file.is_empty() {
            Ok(crm_core::auth::TokenVerifier::hs256(
                self.auth.hs256_secret.as_bytes(),
                &self.auth.issuer,
                &self.auth.audience,
            ))
        } else {
            let pem = std::fs::read(&self.auth.rs256_public_key_file)
                .map_err(|e| format!("auth.rs256_public_key_file: {e}"))?;
            crm_core::auth::TokenVerifier::rs256_pem(&pem, &self.auth.issuer, &self.auth.audience)
                .map_err(|e| e.message)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod jobs_tests {
    use super::*;

    #[test]
    fn job_defaults_are_the_runners_and_are_valid() {
        let j = Jobs::default();
        assert!(j.enabled);
        assert_eq!(j.runner(), crm_core::jobs::RunnerSettings::default());
        assert_eq!(Settings::default().validate(), Ok(()));
    }

    #[test]
    fn secrets_keys_are_checked_and_derived() {
        let mut s = Settings::default();
        // HS256 without a key: one derived from the signing secret.
        assert!(s.sealer().unwrap().is_some());
        s.secrets.key = "c2hvcnQ=".into();
        assert!(s.validate().unwrap_err().contains("secrets.key"));
        s.secrets.key = "AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=".into();
        assert_eq!(s.validate(), Ok(()));
        s.secrets.previous_keys = vec!["nope".into()];
        assert!(
            s.validate()
                .unwrap_err()
                .contains("secrets.previous_keys[0]")
        );
        s.secrets = Secrets::default();
        s.auth.rs256_public_key_file = "/etc/idp.pem".into();
        assert!(
            s.sealer().unwrap().is_none(),
            "RS256 and no key: nothing to derive from"
        );
    }

    #[test]
    fn event_settings_are_checked() {
        let bad = |f: fn(&mut Events)| {
            let mut s = Settings::default();
            f(&mut s.events);
            s.validate().unwrap_err()
        };
        assert!(bad(|e| e.subject_prefix = "crm.>".into()).contains("events.subject_prefix"));
        assert!(bad(|e| e.subject_prefix = String::new()).contains("events.subject_prefix"));
        assert!(bad(|e| e.stream = "a.b".into()).contains("events.stream"));
        assert!(bad(|e| e.batch_size = 0).contains("events.batch_size"));
        assert!(bad(|e| e.retry_max_ms = 1).contains("events.retry_max_ms"));
        let mut e = Events::default();
        assert!(!e.relay_in_serve(), "no NATS URL, no relay");
        e.nats_url = "nats://127.0.0.1:4222".into();
        assert!(e.relay_in_serve());
        e.subject_prefix = "acme.crm".into();
        assert_eq!(e.validate(), Ok(()));
    }

    #[test]
    fn job_settings_are_checked() {
        let bad = |f: fn(&mut Jobs)| {
            let mut s = Settings::default();
            f(&mut s.jobs);
            s.validate().unwrap_err()
        };
        assert!(bad(|j| j.lease_ms = 10).contains("jobs.lease_ms"));
        assert!(bad(|j| j.concurrency = 0).contains("jobs.concurrency"));
        assert!(bad(|j| j.batch_size = 5000).contains("jobs.batch_size"));
        assert!(bad(|j| j.retry_max_ms = 1).contains("jobs.retry_max_ms"));
        let keep = Jobs {
            retention_hours: 0,
            ..Jobs::default()
        };
        assert!(keep.runner().retention.is_zero());
    }

    #[test]
    fn webhook_settings_are_checked_and_given_to_the_delivery() {
        let d = Webhooks::default().delivery();
        let w = crm_webhooks::Settings::default();
        assert_eq!(
            (
                d.fanout,
                d.timeout,
                d.max_attempts,
                d.retry_base,
                d.retry_max
            ),
            (
                w.fanout,
                w.timeout,
                w.max_attempts,
                w.retry_base,
                w.retry_max
            )
        );
        assert!(
            !d.allow_private_targets,
            "private targets are refused by default"
        );
        assert_eq!(d.retention, w.retention);
        let bad = |f: fn(&mut Settings)| {
            let mut s = Settings::default();
            f(&mut s);
            s.validate().unwrap_err()
        };
        assert!(bad(|s| s.webhooks.timeout_ms = 10).contains("webhooks.timeout_ms"));
        assert!(bad(|s| s.webhooks.max_attempts = 0).contains("webhooks.max_attempts"));
        assert!(bad(|s| s.webhooks.max_attempts = 101).contains("webhooks.max_attempts"));
        assert!(bad(|s| s.webhooks.batch_size = 0).contains("webhooks.batch_size"));
        assert!(bad(|s| s.webhooks.retry_max_ms = 1).contains("webhooks.retry_max_ms"));
        assert!(bad(|s| s.webhooks.poll_interval_ms = 1).contains("webhooks.poll_interval_ms"));
    }
}
