//! Webhooks (P1): the outbox's events delivered over HTTP to a tenant's subscribers.
//!
//! - **Subscriptions** are the `webhookSubscriptions` resource ([`model`]): a target URL,
//!   an event filter (resource types and verbs, as WatchEvents filters), a signing secret
//!   sealed with the operator's key (never returned) and an active flag. A subscription
//!   delivers whole records, so whoever writes one must read every record and field of the
//!   collections it names.
//! - **Fan-out** ([`service::fanout_round`], run by [`fanout::Tasks`] in every replica):
//!   claims committed outbox events the fan-out has not taken (`outbox_events.webhook_time`,
//!   `FOR UPDATE SKIP LOCKED` on PostgreSQL) and writes, in the same transaction, a
//!   delivery row and the job of its first attempt for every active subscription that
//!   wants the event. An event becomes deliveries once; a rolled-back change has no event.
//! - **Delivery** (job [`service::DELIVER_JOB`], one per attempt, claimed by one runner):
//!   POSTs the event as JSON ([`rules::body`]) signed with
//!   `HMAC-SHA256(secret, "<timestamp>.<body>")`, the whole attempt bounded by a timeout.
//!   2xx delivers; 410 Gone switches the subscription off; anything else is tried again
//!   after an exponential backoff with jitter until the attempts run out: then the delivery
//!   is dead (the dead-letter list), to be sent again on request.
//! - **The log** (`webhook_deliveries`, [`store`]) keeps every delivery with its attempts,
//!   status, error and latency; replays re-send kept events from a point in time.
//!
//! Nothing that matters is in memory: a replica dying mid-attempt leaves a job whose lease
//! expires and a delivery still PENDING, attempted again (at least once).

pub mod fanout;
pub mod model;
pub mod rules;
pub mod send;
pub mod service;
pub mod store;

pub use model::{Delivery, DeliveryState, WebhookSubscription};
pub use service::Settings;

/// Registers the subscriptions collection and the schema.
pub fn register(r: &mut crm_core::registry::RegistryBuilder) {
    r.resource::<WebhookSubscription>();
    r.schema(model::SCHEMA);
}

/// Registers the delivery job with the delivery settings.
pub fn register_jobs(
    h: &mut crm_core::jobs::JobHandlers,
    s: Settings,
) -> crm_core::error::Result<()> {
    service::register_jobs(h, s)
}
