//! The use cases: the fan-out of committed events into deliveries, the delivery job, the
//! delivery log, redeliveries and replays.

use crate::model::{Delivery, DeliveryState, WebhookSubscription};
use crate::rules::{self, Verdict};
use crate::send::{self, SendOptions};
use crate::store::{self, AttemptRecord, NewDelivery};
use chrono::{DateTime, Utc};
use crm_core::access::Action;
use crm_core::clock::Clock;
use crm_core::db::Db;
use crm_core::error::{Error, ErrorKind, Result};
use crm_core::jobs::{self, JobContext, JobOutcome, OnDuplicate, ScheduleOptions};
use crm_core::journal::OutboxEvent;
use crm_core::outbox::{self, EventFilter};
use crm_core::resource::Resource;
use crm_core::service::Ctx;
use sea_orm::ConnectionTrait;
use serde::Deserialize;
use std::collections::HashMap;
use std::time::Duration;
use uuid::Uuid;

/// The job kind of delivery attempts.
pub const DELIVER_JOB: &str = "crm.webhooks.deliver";
/// Most events one replay call schedules.
pub const MAX_REPLAY: u64 = 1000;
/// Most dead deliveries one RetryDeadWebhookDeliveries call revives.
pub const MAX_REVIVE: u64 = 1000;

/// How deliveries are made and kept (the gateway's `[webhooks]` section).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Whether this replica runs the fan-out (and the delivery log's retention purge).
    pub fanout: bool,
    /// How often the fan-out looks for events when nothing in this process woke it.
    pub poll_interval: Duration,
    /// Most events one fan-out claim takes.
    pub batch_size: u32,
    /// The bound of one attempt: resolving, connecting, TLS, request and answer.
    pub timeout: Duration,
    /// Attempts before a delivery is dead.
    pub max_attempts: u32,
    /// The delay after the first failed attempt; doubled for each further one.
    pub retry_base: Duration,
    /// The longest delay between attempts.
    pub retry_max: Duration,
    /// Whether targets may resolve to loopback, private or link-local addresses.
    pub allow_private_targets: bool,
    /// Whether a 410 Gone answer switches the subscription off.
    pub deactivate_on_gone: bool,
    /// How long delivered and dead deliveries are kept; zero keeps them.
    pub retention: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            fanout: true,
            poll_interval: Duration::from_millis(1000),
            batch_size: 500,
            timeout: Duration::from_secs(10),
            max_attempts: 12,
            retry_base: Duration::from_secs(30),
            retry_max: Duration::from_secs(6 * 3600),
            allow_private_targets: false,
            deactivate_on_gone: true,
            retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

fn options() -> ScheduleOptions {
    ScheduleOptions {
        dedupe_key: None,
        on_duplicate: OnDuplicate::Replace,
        // The handler records failed attempts itself; the runner retries only when the
        // database failed (or the runner died) mid-attempt: generously, since a job that
        // gives up leaves its delivery PENDING without a next attempt.
        max_attempts: 20,
        collection: Some(WebhookSubscription::COLLECTION.to_owned()),
        creator: None,
    }
}

/// Schedules the attempt of delivery `id` at `due`.
async fn arm<C: ConnectionTrait>(
    conn: &C,
    clock: &dyn Clock,
    tenant: &str,
    id: Uuid,
    due: DateTime<Utc>,
) -> Result<()> {
    jobs::schedule(
        conn,
        clock,
        tenant,
        DELIVER_JOB,
        &serde_json::json!({ "delivery": id }),
        due,
        &ScheduleOptions {
            dedupe_key: Some(format!("webhook/{id}")),
            ..options()
        },
    )
    .await?;
    Ok(())
}

fn verb_of(event_type: &str) -> &str {
    event_type.rsplit('.').next().unwrap_or_default()
}

fn new_delivery(subscription: Uuid, e: &OutboxEvent, body: &str, replay: bool) -> NewDelivery {
    NewDelivery {
        id: Uuid::now_v7(),
        subscription,
        event: e.id,
        event_type: e.event_type.clone(),
        resource: e
            .payload
            .get("resource")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        event_time: e.time,
        body: body.to_owned(),
        replay,
    }
}

/// One round of the fan-out: claims up to `batch` events not taken yet, writes a delivery
/// (and its first attempt's job) for every active subscription that wants each, and marks
/// the events taken, all in one transaction. Returns how many events it took.
pub async fn fanout_round(db: &Db, clock: &dyn Clock, batch: u32) -> Result<usize> {
    if !store::any_active(&db.conn).await? {
        // Nothing to deliver: the events wait (a subscription switched on later does not
        // get events written before, except by a replay).
        return Ok(0);
    }
    let claim = outbox::claim_fanout(db, u64::from(batch)).await?;
    let n = claim.events.len();
    if n == 0 {
        return Ok(0);
    }
    let now = clock.now();
    let mut by_tenant: HashMap<&str, Vec<&OutboxEvent>> = HashMap::new();
    for e in &claim.events {
        by_tenant.entry(e.tenant.as_str()).or_default().push(e);
    }
    let mut scheduled = 0usize;
    for (tenant, events) in by_tenant {
        let targets = store::active_targets(claim.conn(), tenant).await?;
        if targets.is_empty() {
            continue;
        }
        let mut items = Vec::new();
        for e in events {
            let mut body: Option<String> = None;
            for t in &targets {
                if e.time < t.activate_time
                    || !t.filter.wants(&e.collection, verb_of(&e.event_type))
                {
                    continue;
                }
                let b = body.get_or_insert_with(|| rules::body(e));
                items.push(new_delivery(t.id, e, b, false));
            }
        }
        store::insert(claim.conn(), tenant, &items, now).await?;
        for d in &items {
            arm(claim.conn(), clock, tenant, d.id, now).await?;
        }
        scheduled += items.len();
    }
    claim.finish(db, now).await?;
    if scheduled > 0 {
        jobs::wake();
    }
    Ok(n)
}

/// Registers the delivery job's handler, with the delivery settings.
pub fn register_jobs(h: &mut jobs::JobHandlers, s: Settings) -> Result<()> {
    h.register(DELIVER_JOB, move |job| deliver(job, s.clone()))?;
    Ok(())
}

/// The subscription `id` as the system sees it (None when deleted).
async fn subscription(
    ctx: &Ctx,
    id: Uuid,
) -> Result<Option<crm_core::resource::Record<WebhookSubscription>>> {
    match ctx.get::<WebhookSubscription>(id).await {
        Ok(r) => Ok(Some(r)),
        Err(e) if e.kind == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The delivery job: one attempt of one delivery.
pub async fn deliver(job: JobContext, s: Settings) -> Result<JobOutcome> {
    #[derive(Deserialize)]
    struct Payload {
        delivery: Uuid,
    }
    let p: Payload = job.payload_as()?;
    let db = &job.db;
    let Some((d, body)) = store::get(&db.conn, &job.tenant, p.delivery).await? else {
        return Ok(JobOutcome::done());
    };
    if d.state != DeliveryState::Pending {
        return Ok(JobOutcome::done());
    }
    let ctx = job.system_ctx(None);
    let sub = match subscription(&ctx, d.subscription).await? {
        Some(r) if r.data.active => r,
        Some(_) => {
            let why = "the subscription is inactive: retry dead deliveries after switching it on";
            store::bury(&db.conn, &job.tenant, d.id, why, job.clock.now()).await?;
            return Ok(JobOutcome::done());
        }
        None => {
            let why = "the subscription was deleted";
            store::bury(&db.conn, &job.tenant, d.id, why, job.clock.now()).await?;
            return Ok(JobOutcome::done());
        }
    };
    let now = job.clock.now();
    let started = std::time::Instant::now();
    let answer = match db.sealer().and_then(|sealer| {
        crate::model::open_secret(sealer, &job.tenant, sub.meta.id, &sub.data.secret)
    }) {
        Ok(secret) => {
            let t = now.timestamp();
            let headers = [
                (rules::EVENT_ID_HEADER, d.event.to_string()),
                (rules::EVENT_TYPE_HEADER, d.event_type.clone()),
                (rules::DELIVERY_HEADER, delivery_name(&d)),
                (rules::TIMESTAMP_HEADER, t.to_string()),
                (
                    rules::SIGNATURE_HEADER,
                    rules::signature_header(&secret, t, body.as_bytes()),
                ),
            ];
            let o = SendOptions {
                timeout: s.timeout,
                allow_private_targets: s.allow_private_targets,
            };
            let post = send::post(&sub.data.url, &headers, body, &o);
            tokio::pin!(post);
            // The attempt may outlast the job's lease (a timeout above `jobs.lease_ms`):
            // renew it while waiting, so no other runner takes the job meanwhile.
            loop {
                let left = (job.lease_deadline() - job.clock.now())
                    .to_std()
                    .unwrap_or_default();
                let beat = (left / 2).max(Duration::from_millis(100));
                tokio::select! {
                    a = &mut post => break a,
                    () = tokio::time::sleep(beat) => {
                        if let Err(e) = job.heartbeat().await {
                            tracing::debug!(error = %e, "webhook attempt: renewing the lease failed");
                        }
                    }
                }
            }
        }
        Err(e) => Err(format!(
            "the signing secret cannot be opened: {}",
            e.message
        )),
    };
    let latency_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    let attempt = u32::try_from(d.attempts + 1).unwrap_or(u32::MAX);
    let (verdict, status_code, error) = match &answer {
        Ok(a) => {
            let v = rules::verdict(a.status);
            let error = match v {
                Verdict::Delivered => String::new(),
                Verdict::Gone if s.deactivate_on_gone => {
                    "410 Gone: the target asked for no more deliveries; the subscription was switched off".to_owned()
                }
                _ => format!("HTTP {}: {}", a.status, a.excerpt.trim()),
            };
            (v, i64::from(a.status), error)
        }
        Err(e) => (Verdict::Retry, 0, e.clone()),
    };
    let gone = verdict == Verdict::Gone && s.deactivate_on_gone;
    let now = job.clock.now();
    let (state, next) = match verdict {
        Verdict::Delivered => (DeliveryState::Delivered, None),
        _ if gone => (DeliveryState::Dead, None),
        _ if attempt >= s.max_attempts => (DeliveryState::Dead, None),
        _ => {
            let delay = rules::retry_delay(s.retry_base, s.retry_max, attempt, d.id);
            let delay = chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::hours(1));
            (DeliveryState::Pending, Some(now + delay))
        }
    };
    let tx = ctx.begin().await?;
    let recorded = store::record_attempt(
        tx.conn(),
        &job.tenant,
        d.id,
        d.attempts,
        &AttemptRecord {
            state,
            status_code,
            error: error.clone(),
            latency_ms,
            now,
            next_attempt_time: next,
        },
    )
    .await?;
    if !recorded {
        // Recorded by another runner, or redelivered meanwhile: theirs stands.
        return Ok(JobOutcome::done());
    }
    if let Some(due) = next {
        arm(tx.conn(), ctx.clock.as_ref(), &job.tenant, d.id, due).await?;
    }
    if gone && sub.data.active {
        let patch = WebhookSubscription {
            active: false,
            disabled_reason: format!(
                "the target answered 410 Gone to delivery {} at {}",
                d.id,
                now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
            ..Default::default()
        };
        let mask = ["active".to_owned(), "disabled_reason".to_owned()];
        // An edit of the subscription in between wins: it stays as its writer left it.
        match tx.update(sub.meta.id, patch, &mask, &sub.meta.etag()).await {
            Ok(_) => {}
            Err(e) if e.kind == ErrorKind::Aborted => {}
            Err(e) => return Err(e),
        }
    }
    tx.commit().await?;
    match state {
        DeliveryState::Dead => {
            tracing::info!(tenant = %job.tenant, delivery = %d.id, subscription = %d.subscription, error = %error, "webhook delivery dead")
        }
        DeliveryState::Pending => {
            tracing::debug!(tenant = %job.tenant, delivery = %d.id, attempt, error = %error, "webhook attempt failed; retrying")
        }
        DeliveryState::Delivered => {}
    }
    Ok(JobOutcome::done())
}

/// `webhookSubscriptions/{s}/deliveries/{d}`.
pub fn delivery_name(d: &Delivery) -> String {
    format!(
        "{}/{}/deliveries/{}",
        WebhookSubscription::COLLECTION,
        d.subscription,
        d.id
    )
}

/// Parses `webhookSubscriptions/{s}/deliveries/{d}`.
pub fn parse_delivery_name(field: &str, name: &str) -> Result<(Uuid, Uuid)> {
    let bad = || {
        Error::invalid(
            field,
            format!(
                "must be {}/{{subscription}}/deliveries/{{delivery}}",
                WebhookSubscription::COLLECTION
            ),
        )
    };
    let parts: Vec<&str> = name.trim().split('/').collect();
    match parts.as_slice() {
        [c, s, "deliveries", d] if *c == WebhookSubscription::COLLECTION => {
            let s = Uuid::try_parse(s).map_err(|_| bad())?;
            let d = Uuid::try_parse(d).map_err(|_| bad())?;
            Ok((s, d))
        }
        _ => Err(bad()),
    }
}

/// Checks the caller may change subscription `id` (it must be readable: NOT_FOUND for
/// another tenant's) and returns it.
async fn for_change(
    tx: &crm_core::service::Tx<'_>,
    id: Uuid,
    what: &str,
) -> Result<crm_core::resource::Record<WebhookSubscription>> {
    let rec = tx.get::<WebhookSubscription>(id).await?;
    if tx
        .ctx()
        .policy
        .scopes(WebhookSubscription::PERMISSION, Action::Update)
        .is_empty()
    {
        return Err(Error::permission_denied(
            "ACTION_NOT_ALLOWED",
            format!(
                "{what} of {}/{id} needs the right to update it",
                WebhookSubscription::COLLECTION
            ),
        ));
    }
    Ok(rec)
}

/// A page of the delivery log.
#[derive(Debug, Clone)]
pub struct DeliveryPage {
    pub deliveries: Vec<Delivery>,
    pub next_page_token: String,
}

/// The delivery log of subscription `id`, newest first (read right on the subscription).
pub async fn list_deliveries(
    ctx: &Ctx,
    id: Uuid,
    state: Option<DeliveryState>,
    page_size: i32,
    page_token: &str,
) -> Result<DeliveryPage> {
    if page_size < 0 {
        return Err(Error::invalid("page_size", "must not be negative"));
    }
    let size = match page_size {
        0 => 50,
        n => n.min(1000),
    };
    let before = if page_token.is_empty() {
        None
    } else {
        Some(
            Uuid::try_parse(page_token)
                .map_err(|_| Error::invalid("page_token", "is not a token of this list"))?,
        )
    };
    ctx.get::<WebhookSubscription>(id).await?;
    let limit = u64::try_from(size).unwrap_or(50);
    let mut deliveries =
        store::list(&ctx.db.conn, ctx.tenant(), id, state, before, limit + 1).await?;
    let next_page_token = if deliveries.len() as u64 > limit {
        deliveries.truncate(usize::try_from(limit).unwrap_or(50));
        deliveries
            .last()
            .map(|d| d.id.to_string())
            .unwrap_or_default()
    } else {
        String::new()
    };
    Ok(DeliveryPage {
        deliveries,
        next_page_token,
    })
}

/// Sends dead deliveries of subscription `id` again (all, up to [`MAX_REVIVE`], or only
/// `only`): each gets a fresh attempt budget and its first attempt now. Needs the right to
/// update the subscription. One named delivery that is not dead: FAILED_PRECONDITION
/// `DELIVERY_NOT_DEAD`.
pub async fn retry_dead(ctx: &Ctx, id: Uuid, only: Option<Uuid>) -> Result<Vec<Uuid>> {
    let tx = ctx.begin().await?;
    let sub = for_change(&tx, id, "retrying deliveries").await?;
    if !sub.data.active {
        return Err(Error::failed_precondition(
            "SUBSCRIPTION_INACTIVE",
            format!(
                "{}/{id} is inactive: switch it on to deliver",
                WebhookSubscription::COLLECTION
            ),
        ));
    }
    if let Some(d) = only {
        match store::get(tx.conn(), ctx.tenant(), d).await? {
            Some((del, _)) if del.subscription == id => {
                if del.state != DeliveryState::Dead {
                    return Err(Error::failed_precondition(
                        "DELIVERY_NOT_DEAD",
                        format!(
                            "delivery {d} is {}: only dead deliveries are sent again",
                            del.state
                        ),
                    )
                    .with("state", del.state.as_str()));
                }
            }
            _ => return Err(Error::not_found(format!("delivery {d}"))),
        }
    }
    let now = ctx.clock.now();
    let ids = store::revive(tx.conn(), ctx.tenant(), id, only, now, MAX_REVIVE).await?;
    for d in &ids {
        arm(tx.conn(), ctx.clock.as_ref(), ctx.tenant(), *d, now).await?;
    }
    tx.commit().await?;
    if !ids.is_empty() {
        jobs::wake();
    }
    Ok(ids)
}

/// A delivery of a subscription (read right on the subscription).
pub async fn get_delivery(ctx: &Ctx, subscription: Uuid, id: Uuid) -> Result<Delivery> {
    ctx.get::<WebhookSubscription>(subscription).await?;
    match store::get(&ctx.db.conn, ctx.tenant(), id).await? {
        Some((d, _)) if d.subscription == subscription => Ok(d),
        _ => Err(Error::not_found(format!("delivery {id}"))),
    }
}

/// Where a replay starts.
#[derive(Debug, Clone, Copy)]
pub enum ReplayFrom {
    /// Events written at or after this time.
    Time(DateTime<Utc>),
    /// Events after this one (the `last_event` of the previous call).
    After(Uuid),
}

/// What a replay did.
#[derive(Debug, Clone, Default)]
pub struct Replayed {
    /// Deliveries scheduled.
    pub scheduled: usize,
    /// The last event scheduled; a further call continues after it.
    pub last_event: Option<Uuid>,
    /// Whether more events wait before `end` (the call stopped at [`MAX_REPLAY`]).
    pub more: bool,
}

/// Re-sends, to subscription `id`, the tenant's kept events the subscription's filter
/// wants from `from` until `end` (default now), oldest first, at most [`MAX_REPLAY`] per
/// call, as new deliveries marked `replay` (whatever earlier deliveries of them did).
/// Needs the right to update the subscription.
pub async fn replay(
    ctx: &Ctx,
    id: Uuid,
    from: ReplayFrom,
    end: Option<DateTime<Utc>>,
) -> Result<Replayed> {
    let tx = ctx.begin().await?;
    let sub = for_change(&tx, id, "replaying events").await?;
    if !sub.data.active {
        return Err(Error::failed_precondition(
            "SUBSCRIPTION_INACTIVE",
            format!(
                "{}/{id} is inactive: switch it on to deliver",
                WebhookSubscription::COLLECTION
            ),
        ));
    }
    let now = ctx.clock.now();
    let end = end.unwrap_or(now);
    let after = match from {
        ReplayFrom::Time(t) => {
            if t > now {
                return Err(Error::invalid("start_time", "must not be in the future"));
            }
            if t >= end {
                return Err(Error::invalid("end_time", "must be after start_time"));
            }
            // The smallest id of the millisecond, less one: events of that very id count.
            Uuid::from_u128(outbox::id_floor(t).as_u128().saturating_sub(1))
        }
        ReplayFrom::After(e) => {
            if !outbox::event_exists(tx.conn(), ctx.tenant(), e).await? {
                return Err(
                    Error::not_found(format!("event {e}")).with("after_event", e.to_string())
                );
            }
            e
        }
    };
    let registry = crm_core::registry::registry();
    let collections: Vec<String> = if sub.data.resource_types.is_empty() {
        registry
            .collections()
            .iter()
            .map(|c| c.name.to_owned())
            .collect()
    } else {
        sub.data.resource_types.clone()
    };
    let filter = EventFilter {
        collections,
        verbs: sub.data.verbs.clone(),
    };
    let events =
        outbox::events_after(tx.conn(), ctx.tenant(), after, &filter, MAX_REPLAY + 1).await?;
    let mut out = Replayed::default();
    let mut items = Vec::new();
    for (i, e) in events.iter().enumerate() {
        if e.time >= end {
            break;
        }
        if i as u64 >= MAX_REPLAY {
            out.more = true;
            break;
        }
        items.push(new_delivery(id, e, &rules::body(e), true));
        out.last_event = Some(e.id);
    }
    store::insert(tx.conn(), ctx.tenant(), &items, now).await?;
    for d in &items {
        arm(tx.conn(), ctx.clock.as_ref(), ctx.tenant(), d.id, now).await?;
    }
    tx.commit().await?;
    out.scheduled = items.len();
    if out.scheduled > 0 {
        jobs::wake();
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn delivery_names_round_trip_and_garbage_is_refused() {
        let s = Uuid::now_v7();
        let d = Uuid::now_v7();
        let name = format!("webhookSubscriptions/{s}/deliveries/{d}");
        assert_eq!(parse_delivery_name("name", &name).unwrap(), (s, d));
        for bad in [
            "",
            "webhookSubscriptions/x/deliveries/y",
            &format!("contacts/{s}/deliveries/{d}"),
            &format!("webhookSubscriptions/{s}/deliveries"),
            &format!("webhookSubscriptions/{s}/attempts/{d}"),
        ] {
            let e = parse_delivery_name("name", bad).unwrap_err();
            assert_eq!(e.violations[0].field, "name");
        }
    }
}
