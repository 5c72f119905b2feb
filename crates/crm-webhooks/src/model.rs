//! Plain data: the subscription resource and a delivery of the log.

use chrono::{DateTime, Utc};
use crm_core::access::Action;
use crm_core::error::{Error, Result};
use crm_core::registry::SchemaChange;
use crm_core::resource::{FieldSpec, HookFuture, Kind, Resource};
use crm_core::service::{Ctx, Tx};
use crm_core::validate::{self, Violations};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The verbs of events (`<collection>.<verb>`).
pub const VERBS: [&str; 4] = ["created", "updated", "deleted", "undeleted"];
/// Most resource types one subscription may name.
pub const MAX_RESOURCE_TYPES: usize = 50;
/// The shortest and longest secret accepted, in bytes.
pub const MIN_SECRET_BYTES: usize = 16;
/// See [`MIN_SECRET_BYTES`].
pub const MAX_SECRET_BYTES: usize = 512;
/// The longest target URL, in bytes.
pub const MAX_URL_BYTES: usize = 2048;

/// A tenant's subscription: where to POST which events, signed with which secret.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WebhookSubscription {
    /// A name for people.
    pub display_name: String,
    /// The target: `http` or `https`, without user name or password (see
    /// [`crate::rules::check_url`]).
    pub url: String,
    /// Collections whose events are delivered; empty: every collection.
    pub resource_types: Vec<String>,
    /// Verbs (`created`, `updated`, `deleted`, `undeleted`); empty: all.
    pub verbs: Vec<String>,
    /// The signing secret: plain text as written by a caller, sealed text once stored (the
    /// write hook seals it). Never returned.
    pub secret: String,
    /// Whether events are delivered; an inactive subscription records no deliveries.
    pub active: bool,
    /// Output only: why the service switched the subscription off (the target answered
    /// 410 Gone); cleared when a caller switches it on again.
    pub disabled_reason: String,
    /// Output only: when the subscription was last switched on; events written from then on
    /// are delivered (earlier ones only by a replay).
    pub activate_time: Option<DateTime<Utc>>,
}

/// The fields a caller may not write.
pub const OUTPUT_ONLY: &[&str] = &["disabled_reason", "activate_time"];

impl WebhookSubscription {
    /// Whether the subscription wants an event of `collection` with `verb`.
    pub fn wants(&self, collection: &str, verb: &str) -> bool {
        (self.resource_types.is_empty() || self.resource_types.iter().any(|t| t == collection))
            && (self.verbs.is_empty() || self.verbs.iter().any(|v| v == verb))
    }
}

fn secret_context(tenant: &str, id: Uuid) -> String {
    format!("{tenant}/{}/{id}/secret", WebhookSubscription::COLLECTION)
}

/// Opens the stored (sealed) secret of subscription `id`.
pub fn open_secret(
    sealer: &crm_core::secrets::Sealer,
    tenant: &str,
    id: Uuid,
    sealed: &str,
) -> Result<Vec<u8>> {
    sealer.open(&secret_context(tenant, id), sealed)
}

/// A subscription delivers whole records, as the relay publishes them to NATS: whoever
/// writes one must be able to read every record of every collection it names, with no
/// field withheld.
fn check_full_read(ctx: &Ctx, types: &[String]) -> Result<()> {
    let registry = crm_core::registry::registry();
    let all: Vec<&crm_core::resource::Collection> = if types.is_empty() {
        registry.collections().iter().collect()
    } else {
        types
            .iter()
            .filter_map(|t| registry.collection(t))
            .collect()
    };
    for c in all {
        let scopes = ctx.policy.scopes(c.permission, Action::Read);
        if !scopes.all || !ctx.hidden_fields(c).is_empty() {
            return Err(Error::permission_denied(
                "WEBHOOK_NEEDS_FULL_READ",
                format!(
                    "a subscription delivers whole records of {}: your roles must read all of them, every field",
                    c.name
                ),
            )
            .with("collection", c.name));
        }
    }
    Ok(())
}

impl Resource for WebhookSubscription {
    const COLLECTION: &'static str = "webhookSubscriptions";
    const TABLE: &'static str = "webhook_subscriptions";
    const DEFAULT_ORDER: &'static str = "display_name";
    const FIELDS: &'static [FieldSpec] = &[
        FieldSpec::new("display_name", "display_name", Kind::Text).sort(),
        FieldSpec::new("url", "url", Kind::Text).filter(),
        FieldSpec::new("resource_types", "resource_types", Kind::Json),
        FieldSpec::new("verbs", "verbs", Kind::Json),
        FieldSpec::new("secret", "secret_sealed", Kind::Text).bulk(),
        FieldSpec::new("active", "active", Kind::Bool).filter(),
        FieldSpec::new("disabled_reason", "disabled_reason", Kind::Text),
        FieldSpec::new("activate_time", "activate_time", Kind::Time),
    ];

    fn validate(&mut self) -> Result<()> {
        let mut v = Violations::new();
        if let Some(s) = v.check(validate::text(
            "display_name",
            &self.display_name,
            200,
            true,
        )) {
            self.display_name = s;
        }
        match crate::rules::check_url(&self.url) {
            Ok(u) => self.url = u,
            Err(e) => v.add("url", e),
        }
        if self.resource_types.len() > MAX_RESOURCE_TYPES {
            v.add(
                "resource_types",
                format!("at most {MAX_RESOURCE_TYPES} resource types"),
            );
        }
        let mut types: Vec<String> = Vec::new();
        for (i, t) in self.resource_types.iter().enumerate() {
            let t = t.trim();
            if t.is_empty() || t.len() > 100 || !t.chars().all(|c| c.is_ascii_alphanumeric()) {
                v.add(
                    format!("resource_types[{i}]"),
                    "must be a resource type, e.g. contacts",
                );
            } else if !types.iter().any(|x| x == t) {
                types.push(t.to_owned());
            }
        }
        self.resource_types = types;
        let mut verbs: Vec<String> = Vec::new();
        for (i, verb) in self.verbs.iter().enumerate() {
            if !VERBS.contains(&verb.as_str()) {
                v.add(
                    format!("verbs[{i}]"),
                    "must be created, updated, deleted or undeleted",
                );
            } else if !verbs.contains(verb) {
                verbs.push(verb.clone());
            }
        }
        self.verbs = verbs;
        if self.secret.is_empty() {
            v.add("secret", "is required");
        } else if self.secret.len() > 4 * MAX_SECRET_BYTES || self.secret.contains('\0') {
            v.add(
                "secret",
                format!("{MIN_SECRET_BYTES}-{MAX_SECRET_BYTES} bytes, without NUL"),
            );
        }
        if self.disabled_reason.len() > 1000 {
            self.disabled_reason = crm_core::error::clip(&self.disabled_reason, 1000);
        }
        v.into_result()
    }

    fn before_write<'a>(
        tx: &'a Tx<'a>,
        id: Uuid,
        old: Option<&'a Self>,
        data: &'a mut Self,
    ) -> HookFuture<'a> {
        Box::pin(async move {
            let ctx = tx.ctx();
            let registry = crm_core::registry::registry();
            for (i, t) in data.resource_types.iter().enumerate() {
                if registry.collection(t).is_none() {
                    return Err(Error::invalid(
                        format!("resource_types[{i}]"),
                        format!("{t:?} is not a resource type of this service"),
                    ));
                }
            }
            check_full_read(ctx, &data.resource_types)?;
            // A secret that differs from the stored (sealed) one is a caller's new plain
            // text: seal it for this tenant and record.
            if old.is_none_or(|o| o.secret != data.secret) {
                let n = data.secret.len();
                if !(MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&n) {
                    return Err(Error::invalid(
                        "secret",
                        format!("must be {MIN_SECRET_BYTES}-{MAX_SECRET_BYTES} bytes"),
                    ));
                }
                let sealer = ctx.db.sealer()?;
                data.secret =
                    sealer.seal(&secret_context(ctx.tenant(), id), data.secret.as_bytes());
            }
            // Switched on (created active, or on again): events from now on are delivered,
            // and the service's reason for switching it off no longer holds.
            if data.active && old.is_none_or(|o| !o.active) {
                data.activate_time = Some(ctx.clock.now());
                data.disabled_reason = String::new();
            }
            Ok(())
        })
    }
}

crm_core::named_enum! {
    /// Where a delivery stands.
    pub enum DeliveryState {
        /// Waiting for its next attempt.
        Pending = "PENDING",
        /// The target answered 2xx.
        Delivered = "DELIVERED",
        /// Every attempt failed (or the target is gone): the dead-letter list.
        Dead = "DEAD"
    }
}

/// One event for one subscription, and how its attempts went.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub id: Uuid,
    pub subscription: Uuid,
    pub event: Uuid,
    /// `<collection>.<verb>`.
    pub event_type: String,
    /// The record, `contacts/{id}`.
    pub resource: String,
    pub event_time: DateTime<Utc>,
    /// Made by a replay (ReplayWebhookEvents) rather than by the event's commit.
    pub replay: bool,
    pub state: DeliveryState,
    /// Attempts made (since the last redelivery of a dead delivery).
    pub attempts: i64,
    /// The HTTP status of the last attempt; 0 when there was no answer.
    pub status_code: i64,
    /// What went wrong in the last attempt; empty after a delivery.
    pub error: String,
    /// How long the last attempt took, in milliseconds.
    pub latency_ms: i64,
    pub next_attempt_time: Option<DateTime<Utc>>,
    pub last_attempt_time: Option<DateTime<Utc>>,
    pub delivered_time: Option<DateTime<Utc>>,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
}

/// The subscriptions table and the delivery log.
pub const SCHEMA: SchemaChange = SchemaChange::new(
    "m20261207_100001_webhooks",
    &[
        crm_core::resource_table!(
            "webhook_subscriptions",
            "display_name TEXT NOT NULL, url TEXT NOT NULL, resource_types TEXT NOT NULL, \
             verbs TEXT NOT NULL, secret_sealed TEXT NOT NULL, active BOOLEAN NOT NULL, \
             disabled_reason TEXT NOT NULL, activate_time TIMESTAMPTZ NULL"
        ),
        "CREATE INDEX webhook_subscriptions_active ON webhook_subscriptions (tenant_id, active)",
        "CREATE TABLE webhook_deliveries (tenant_id TEXT NOT NULL, id UUID NOT NULL, \
         subscription_id UUID NOT NULL, event_id UUID NOT NULL, event_type TEXT NOT NULL, \
         resource TEXT NOT NULL, event_time TIMESTAMPTZ NOT NULL, body TEXT NOT NULL, \
         replay BOOLEAN NOT NULL, state TEXT NOT NULL, attempts BIGINT NOT NULL, \
         status_code BIGINT NOT NULL, error TEXT NOT NULL, latency_ms BIGINT NOT NULL, \
         next_attempt_time TIMESTAMPTZ NULL, last_attempt_time TIMESTAMPTZ NULL, \
         delivered_time TIMESTAMPTZ NULL, create_time TIMESTAMPTZ NOT NULL, \
         update_time TIMESTAMPTZ NOT NULL, PRIMARY KEY (tenant_id, id))",
        "CREATE INDEX webhook_deliveries_log ON webhook_deliveries \
         (tenant_id, subscription_id, id)",
        "CREATE INDEX webhook_deliveries_state ON webhook_deliveries \
         (tenant_id, subscription_id, state, id)",
        "CREATE INDEX webhook_deliveries_finished ON webhook_deliveries (update_time) \
         WHERE state <> 'PENDING'",
    ],
);

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn sub() -> WebhookSubscription {
        WebhookSubscription {
            display_name: " Billing ".into(),
            url: "https://hooks.example.com/x".into(),
            resource_types: vec!["contacts".into(), "contacts".into(), "orders".into()],
            verbs: vec!["created".into(), "created".into()],
            secret: "0123456789abcdef".into(),
            active: true,
            ..Default::default()
        }
    }

    #[test]
    fn validation_normalises_and_names_each_bad_field() {
        let mut s = sub();
        s.validate().unwrap();
        assert_eq!(s.display_name, "Billing");
        assert_eq!(s.resource_types, ["contacts", "orders"]);
        assert_eq!(s.verbs, ["created"]);
        let mut bad = WebhookSubscription {
            url: "ftp://x".into(),
            resource_types: vec!["ok".into(), "no way".into()],
            verbs: vec!["made".into()],
            ..Default::default()
        };
        let e = bad.validate().unwrap_err();
        let fields: Vec<&str> = e.violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "display_name",
                "url",
                "resource_types[1]",
                "verbs[0]",
                "secret"
            ]
        );
    }

    #[test]
    fn the_filter_is_resource_types_and_verbs_empty_meaning_all() {
        let mut s = sub();
        s.validate().unwrap();
        assert!(s.wants("contacts", "created"));
        assert!(!s.wants("contacts", "updated"));
        assert!(!s.wants("leads", "created"));
        let all = WebhookSubscription::default();
        assert!(all.wants("leads", "deleted"));
    }
}
