//! EventService (P1): WatchEvents streams the outbox to gRPC clients under the caller's
//! permissions; [`event_out`] is also the payload the relay publishes to JetStream.

use super::Gateway;
use crate::convert::{json_value, ts};
use crate::status::OrStatus;
use crm_api::v1 as pb;
use crm_api::v1::event_service_server::EventService;
use crm_core::error::{Error, Result};
use crm_core::journal::{OutboxEvent, named_refs};
use crm_core::outbox::{self, EventFilter};
use crm_core::resource::Collection;
use crm_core::service::Ctx;
use serde_json::{Map, Value as Json};
use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::time::Duration;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use uuid::Uuid;

/// How often a watch looks for new events.
const WATCH_POLL: Duration = Duration::from_millis(200);
/// How long one watch lasts; the client resumes with the last event's id.
const WATCH_MAX: Duration = Duration::from_secs(3600);
/// Events read per query of a watch.
const WATCH_PAGE: u64 = 500;
/// How far back (by id time) each poll looks again, on PostgreSQL, for events of
/// transactions that committed after a later event was already sent (ids are made when the
/// event is written, not when its transaction commits): from the start of the oldest
/// transaction writing now ([`outbox::write_horizon`]), less this margin for the clock
/// difference between gateway and database, and at least this far. SQLite commits one
/// writer at a time in id order.
const WATCH_OVERLAP_MS: i64 = 1_000;
/// The furthest back a poll looks: an event of a transaction that wrote for longer than
/// this before committing may be missed by a running watch (a resumed watch and the relay
/// still see it).
const WATCH_MAX_LOOK_BACK_MS: i64 = 300_000;
/// Most resource types one watch may name.
const MAX_RESOURCE_TYPES: usize = 50;

/// The verb of an event type (`contacts.updated` → `updated`).
fn verb_of(event_type: &str) -> &str {
    event_type.rsplit('.').next().unwrap_or_default()
}

pub(crate) fn verb_out(verb: &str) -> pb::EventVerb {
    match verb {
        "created" => pb::EventVerb::Created,
        "updated" => pb::EventVerb::Updated,
        "deleted" => pb::EventVerb::Deleted,
        "undeleted" => pb::EventVerb::Undeleted,
        _ => pb::EventVerb::Unspecified,
    }
}

pub(crate) fn verb_in(field: &str, v: i32) -> Result<&'static str> {
    match pb::EventVerb::try_from(v) {
        Ok(pb::EventVerb::Created) => Ok("created"),
        Ok(pb::EventVerb::Updated) => Ok("updated"),
        Ok(pb::EventVerb::Deleted) => Ok("deleted"),
        Ok(pb::EventVerb::Undeleted) => Ok("undeleted"),
        Ok(pb::EventVerb::Unspecified) => Err(Error::invalid(field, "must name a verb")),
        Err(_) => Err(Error::invalid(field, format!("{v} is not an EventVerb"))),
    }
}

/// An outbox event as the `Event` message: everything when `data` is the stored record
/// (the relay's payload), or with the record as the caller may see it.
fn event_message(
    e: &OutboxEvent,
    subject: String,
    data: Option<&Map<String, Json>>,
    hidden: Vec<String>,
) -> pb::Event {
    let p = &e.payload;
    let text = |k: &str| {
        p.get(k)
            .and_then(Json::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let collection = crm_core::registry::registry().collection(&e.collection);
    let data = data.map(|d| prost_types::Struct {
        fields: d
            .iter()
            .map(|(k, v)| {
                let v = match collection.and_then(|c| c.field(k)) {
                    Some(f) => named_refs(f.kind, v),
                    None => v.clone(),
                };
                (k.clone(), json_value(&v))
            })
            .collect(),
    });
    pb::Event {
        id: e.id.to_string(),
        subject,
        tenant: e.tenant.clone(),
        resource_type: e.collection.clone(),
        verb: verb_out(verb_of(&e.event_type)) as i32,
        resource: text("resource"),
        revision: p.get("revision").and_then(Json::as_i64).unwrap_or_default(),
        actor: text("actor"),
        event_time: Some(ts(e.time)),
        changed_fields: p
            .get("changed_fields")
            .and_then(Json::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|f| f.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
        data,
        hidden_fields: hidden,
    }
}

/// The event as the relay publishes it: the whole record, for the tenant's own services.
pub fn event_out(e: &OutboxEvent, subject_prefix: &str) -> pb::Event {
    event_message(
        e,
        format!("{subject_prefix}.{}.{}", e.tenant, e.event_type),
        e.payload.get("data").and_then(Json::as_object),
        vec![],
    )
}

/// The event as `ctx` may see it: fields its roles may not read withheld from `data`.
fn event_for(ctx: &Ctx, c: &Collection, e: &OutboxEvent) -> pb::Event {
    match e.payload.get("data").and_then(Json::as_object) {
        Some(d) => {
            let mut d = d.clone();
            let hidden = ctx.mask_object(c, &mut d);
            let hidden = hidden.iter().map(|h| (*h).to_owned()).collect();
            event_message(e, e.subject.clone(), Some(&d), hidden)
        }
        None => {
            let hidden = ctx
                .hidden_fields(c)
                .iter()
                .map(|h| (*h).to_owned())
                .collect();
            event_message(e, e.subject.clone(), None, hidden)
        }
    }
}

/// A validated WatchEvents request.
struct Watch {
    collections: HashMap<String, Collection>,
    filter: EventFilter,
    /// Events above this id are sent.
    floor: Uuid,
}

async fn watch_in(ctx: &Ctx, r: pb::WatchEventsRequest) -> Result<Watch> {
    let registry = crm_core::registry::registry();
    if r.resource_types.len() > MAX_RESOURCE_TYPES {
        return Err(Error::invalid(
            "resource_types",
            format!("at most {MAX_RESOURCE_TYPES} resource types"),
        ));
    }
    let mut collections = HashMap::new();
    for (i, t) in r.resource_types.iter().enumerate() {
        let Some(c) = registry.collection(t) else {
            return Err(Error::invalid(
                format!("resource_types[{i}]"),
                format!("{t:?} is not a resource type of this service"),
            ));
        };
        // PERMISSION_DENIED when the caller may not read it at all.
        ctx.scopes_of(c, crm_core::access::Action::Read)?;
        collections.insert(c.name.to_owned(), *c);
    }
    if r.resource_types.is_empty() {
        for c in registry.collections() {
            if ctx.scopes_of(c, crm_core::access::Action::Read).is_ok() {
                collections.insert(c.name.to_owned(), *c);
            }
        }
        if collections.is_empty() {
            return Err(Error::permission_denied(
                "ACTION_NOT_ALLOWED",
                "your roles may read no resource type, so no event",
            ));
        }
    }
    let mut verbs = Vec::new();
    for (i, v) in r.verbs.iter().enumerate() {
        let v = verb_in(&format!("verbs[{i}]"), *v)?;
        if !verbs.iter().any(|x: &String| x == v) {
            verbs.push(v.to_owned());
        }
    }
    let floor = if r.resume_token.is_empty() {
        outbox::id_floor(ctx.clock.now())
    } else {
        let id = crm_core::ids::parse_uuid("resume_token", r.resume_token.trim())?;
        if !outbox::event_exists(&ctx.db.conn, ctx.tenant(), id).await? {
            return Err(Error::not_found(format!("event {id}"))
                .with("resume_token", id.to_string())
                .with(
                    "advice",
                    "the event is not kept (pruned, or never one of this tenant): read the current state and watch from now",
                ));
        }
        id
    };
    let mut names: Vec<String> = collections.keys().cloned().collect();
    names.sort();
    Ok(Watch {
        collections,
        filter: EventFilter {
            collections: names,
            verbs,
        },
        floor,
    })
}

type EventStream = Pin<Box<dyn Stream<Item = std::result::Result<pb::Event, Status>> + Send>>;

/// Polls the outbox and sends the events the caller may see, until the client goes away.
async fn watch(
    ctx: Ctx,
    w: Watch,
    tx: tokio::sync::mpsc::Sender<std::result::Result<pb::Event, Status>>,
) {
    let started = tokio::time::Instant::now();
    let overlap = if ctx.db.backend() == sea_orm::DbBackend::Postgres {
        chrono::Duration::milliseconds(WATCH_OVERLAP_MS)
    } else {
        chrono::Duration::zero()
    };
    let mut high = w.floor;
    let mut low = w.floor;
    let mut seen: HashSet<Uuid> = HashSet::new();
    while !tx.is_closed() && started.elapsed() < WATCH_MAX {
        let mut from = low;
        loop {
            let Some((events, last, full)) =
                super::watch_poll(&tx, poll(&ctx, &w, from, &mut seen)).await
            else {
                return;
            };
            for e in events {
                if tx.send(Ok(e)).await.is_err() {
                    return;
                }
            }
            if let Some(last) = last {
                high = high.max(last);
                from = last;
            }
            if !full {
                break;
            }
        }
        let mut back = outbox::id_time(high) - overlap;
        if !overlap.is_zero() {
            // A writer still open may commit events older than `high`.
            let Some(horizon) = super::watch_poll(&tx, outbox::write_horizon(&ctx.db)).await else {
                return;
            };
            if let Some(h) = horizon {
                let h = std::cmp::max(
                    h - overlap,
                    outbox::id_time(high) - chrono::Duration::milliseconds(WATCH_MAX_LOOK_BACK_MS),
                );
                back = back.min(h);
            }
        }
        low = w.floor.max(outbox::id_floor(back));
        seen.retain(|id| *id > low);
        tokio::time::sleep(WATCH_POLL).await;
    }
}

/// One page of events above `from`: those not sent yet that the caller may see, the last id
/// read, and whether the page was full.
async fn poll(
    ctx: &Ctx,
    w: &Watch,
    from: Uuid,
    seen: &mut HashSet<Uuid>,
) -> Result<(Vec<pb::Event>, Option<Uuid>, bool)> {
    let rows =
        outbox::events_after(&ctx.db.conn, ctx.tenant(), from, &w.filter, WATCH_PAGE).await?;
    let full = rows.len() as u64 >= WATCH_PAGE;
    let last = rows.last().map(|r| r.id);
    let fresh: Vec<OutboxEvent> = rows
        .into_iter()
        .filter(|r| r.id > w.floor && seen.insert(r.id))
        .collect();
    // Record scope, per collection, in one query each.
    let mut by_collection: HashMap<&str, Vec<Uuid>> = HashMap::new();
    for e in &fresh {
        by_collection
            .entry(e.collection.as_str())
            .or_default()
            .push(e.resource_id);
    }
    let mut readable: HashMap<&str, HashSet<Uuid>> = HashMap::new();
    for (name, ids) in by_collection {
        if let Some(c) = w.collections.get(name) {
            readable.insert(name, ctx.readable_ids(c, &ids).await?);
        }
    }
    let mut out = Vec::with_capacity(fresh.len());
    for e in &fresh {
        let (Some(c), Some(ok)) = (
            w.collections.get(&e.collection),
            readable.get(e.collection.as_str()),
        ) else {
            continue;
        };
        if ok.contains(&e.resource_id) {
            out.push(event_for(ctx, c, e));
        }
    }
    Ok((out, last, full))
}

/// EventService.
pub struct Events(pub Gateway);

#[tonic::async_trait]
impl EventService for Events {
    type WatchEventsStream = EventStream;

    async fn watch_events(
        &self,
        r: Request<pb::WatchEventsRequest>,
    ) -> std::result::Result<Response<Self::WatchEventsStream>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let w = watch_in(&ctx, r.into_inner()).await.or_status()?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(watch(ctx, w, tx));
        Ok(Response::new(
            Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)) as EventStream,
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn verbs_round_trip_and_unknown_ones_are_refused() {
        for v in ["created", "updated", "deleted", "undeleted"] {
            assert_eq!(verb_in("verbs[0]", verb_out(v) as i32).unwrap(), v);
        }
        let e = verb_in("verbs[1]", 0).unwrap_err();
        assert_eq!(e.violations[0].field, "verbs[1]");
        assert!(verb_in("verbs[0]", 99).is_err());
        assert_eq!(verb_of("contacts.updated"), "updated");
    }

    #[test]
    fn the_published_event_carries_the_record_with_references_named() {
        let owner = Uuid::now_v7();
        let id = Uuid::now_v7();
        let e = OutboxEvent {
            tenant: "acme".into(),
            id: Uuid::now_v7(),
            subject: "crm.acme.contacts.created".into(),
            collection: "contacts".into(),
            resource_id: id,
            event_type: "contacts.created".into(),
            payload: serde_json::json!({
                "resource": format!("contacts/{id}"),
                "revision": 1,
                "actor": format!("users/{owner}"),
                "changed_fields": ["given_name", "owner"],
                "data": {"given_name": "Anna", "owner": owner.to_string()},
            }),
            time: chrono::Utc::now(),
            published_time: None,
        };
        let m = event_out(&e, "x.crm");
        assert_eq!(m.subject, "x.crm.acme.contacts.created");
        assert_eq!(m.verb, pb::EventVerb::Created as i32);
        assert_eq!(m.revision, 1);
        assert_eq!(m.changed_fields, vec!["given_name", "owner"]);
        let data = m.data.unwrap();
        assert_eq!(
            data.fields["owner"].kind,
            Some(prost_types::value::Kind::StringValue(format!(
                "users/{owner}"
            )))
        );
    }
}
