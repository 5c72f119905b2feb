//! WebhookService: a tenant's webhook subscriptions and their delivery logs (crm-webhooks).

use super::events::{verb_in, verb_out};
use super::{Gateway, Wire};
use crate::convert::{from_ts, hidden, name, opt_ts, ts};
use crate::status::OrStatus;
use crm_api::v1 as pb;
use crm_api::v1::webhook_service_server::WebhookService;
use crm_core::error::{Error, Result};
use crm_core::resource::{Record, Resource};
use crm_webhooks::model::OUTPUT_ONLY;
use crm_webhooks::service::{self, ReplayFrom};
use crm_webhooks::{Delivery, DeliveryState, WebhookSubscription};
use tonic::{Request, Response, Status};

pub struct Webhooks(pub Gateway);

impl Wire<WebhookSubscription> for pb::WebhookSubscription {
    const FIELD: &'static str = "subscription";

    fn into_domain(self) -> Result<WebhookSubscription> {
        let verbs = self
            .verbs
            .iter()
            .enumerate()
            .map(|(i, v)| verb_in(&format!("verbs[{i}]"), *v).map(str::to_owned))
            .collect::<Result<Vec<_>>>()?;
        Ok(WebhookSubscription {
            display_name: self.display_name,
            url: self.url,
            resource_types: self.resource_types,
            verbs,
            secret: self.secret,
            active: self.active,
            ..Default::default()
        })
    }

    fn from_record(r: Record<WebhookSubscription>) -> Self {
        let d = r.data;
        pb::WebhookSubscription {
            name: name(WebhookSubscription::COLLECTION, Some(r.meta.id)),
            display_name: d.display_name,
            url: d.url,
            resource_types: d.resource_types,
            verbs: d.verbs.iter().map(|v| verb_out(v) as i32).collect(),
            // Never returned, not even sealed.
            secret: String::new(),
            has_secret: !d.secret.is_empty(),
            active: d.active,
            disabled_reason: d.disabled_reason,
            activate_time: opt_ts(d.activate_time),
            create_time: Some(ts(r.meta.create_time)),
            update_time: Some(ts(r.meta.update_time)),
            etag: r.meta.etag(),
            hidden_fields: hidden(&r.hidden),
        }
    }

    fn name(&self) -> &str {
        &self.name
    }
    fn etag(&self) -> &str {
        &self.etag
    }
}

fn state_out(s: DeliveryState) -> pb::WebhookDeliveryState {
    match s {
        DeliveryState::Pending => pb::WebhookDeliveryState::Pending,
        DeliveryState::Delivered => pb::WebhookDeliveryState::Delivered,
        DeliveryState::Dead => pb::WebhookDeliveryState::Dead,
    }
}

fn state_in(v: i32) -> Result<Option<DeliveryState>> {
    use pb::WebhookDeliveryState as P;
    Ok(match P::try_from(v) {
        Ok(P::Unspecified) => None,
        Ok(P::Pending) => Some(DeliveryState::Pending),
        Ok(P::Delivered) => Some(DeliveryState::Delivered),
        Ok(P::Dead) => Some(DeliveryState::Dead),
        Err(_) => return Err(crate::convert::unknown_enum("state", v)),
    })
}

fn delivery_out(d: Delivery) -> pb::WebhookDelivery {
    pb::WebhookDelivery {
        name: service::delivery_name(&d),
        event_id: d.event.to_string(),
        event_type: d.event_type,
        resource: d.resource,
        event_time: Some(ts(d.event_time)),
        state: state_out(d.state) as i32,
        attempt_count: i32::try_from(d.attempts).unwrap_or(i32::MAX),
        status_code: i32::try_from(d.status_code).unwrap_or(0),
        error: d.error,
        latency_ms: d.latency_ms,
        next_attempt_time: opt_ts(d.next_attempt_time),
        last_attempt_time: opt_ts(d.last_attempt_time),
        delivered_time: opt_ts(d.delivered_time),
        replay: d.replay,
        create_time: Some(ts(d.create_time)),
        update_time: Some(ts(d.update_time)),
    }
}

/// Refuses update masks naming output-only fields.
fn check_mask(mask: &Option<prost_types::FieldMask>) -> Result<()> {
    for p in mask.iter().flat_map(|m| m.paths.iter()) {
        if OUTPUT_ONLY.contains(&p.as_str()) || p == "has_secret" || p == "name" {
            return Err(Error::invalid("update_mask", format!("{p} is output only")));
        }
    }
    Ok(())
}

fn subscription_id(field: &str, name: &str) -> Result<uuid::Uuid> {
    <pb::WebhookSubscription as Wire<WebhookSubscription>>::parse_id(field, name)
}

#[tonic::async_trait]
impl WebhookService for Webhooks {
    async fn create_webhook_subscription(
        &self,
        r: Request<pb::CreateWebhookSubscriptionRequest>,
    ) -> Result<Response<pb::WebhookSubscription>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let r = r.into_inner();
        Ok(Response::new(
            super::create::<WebhookSubscription, pb::WebhookSubscription>(
                &ctx,
                r.subscription,
                &r.request_id,
            )
            .await?,
        ))
    }

    async fn get_webhook_subscription(
        &self,
        r: Request<pb::GetWebhookSubscriptionRequest>,
    ) -> Result<Response<pb::WebhookSubscription>, Status> {
        let ctx = self.0.ctx(&r).await?;
        Ok(Response::new(
            super::get::<WebhookSubscription, pb::WebhookSubscription>(&ctx, &r.get_ref().name)
                .await?,
        ))
    }

    async fn list_webhook_subscriptions(
        &self,
        r: Request<pb::ListWebhookSubscriptionsRequest>,
    ) -> Result<Response<pb::ListWebhookSubscriptionsResponse>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let r = r.into_inner();
        let p = super::params(r.page_size, r.page_token, r.filter, r.order_by);
        let (subscriptions, next_page_token) =
            super::list::<WebhookSubscription, pb::WebhookSubscription>(&ctx, p).await?;
        Ok(Response::new(pb::ListWebhookSubscriptionsResponse {
            subscriptions,
            next_page_token,
        }))
    }

    async fn update_webhook_subscription(
        &self,
        r: Request<pb::UpdateWebhookSubscriptionRequest>,
    ) -> Result<Response<pb::WebhookSubscription>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let r = r.into_inner();
        check_mask(&r.update_mask).or_status()?;
        Ok(Response::new(
            super::update::<WebhookSubscription, pb::WebhookSubscription>(
                &ctx,
                r.subscription,
                r.update_mask,
            )
            .await?,
        ))
    }

    async fn delete_webhook_subscription(
        &self,
        r: Request<pb::DeleteWebhookSubscriptionRequest>,
    ) -> Result<Response<()>, Status> {
        let ctx = self.0.ctx(&r).await?;
        super::delete::<WebhookSubscription, pb::WebhookSubscription>(
            &ctx,
            &r.get_ref().name,
            &r.get_ref().etag,
        )
        .await?;
        Ok(Response::new(()))
    }

    async fn list_webhook_deliveries(
        &self,
        r: Request<pb::ListWebhookDeliveriesRequest>,
    ) -> Result<Response<pb::ListWebhookDeliveriesResponse>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let r = r.into_inner();
        let id = subscription_id("parent", &r.parent).or_status()?;
        let state = state_in(r.state).or_status()?;
        let page = service::list_deliveries(&ctx, id, state, r.page_size, &r.page_token)
            .await
            .or_status()?;
        Ok(Response::new(pb::ListWebhookDeliveriesResponse {
            deliveries: page.deliveries.into_iter().map(delivery_out).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn get_webhook_delivery(
        &self,
        r: Request<pb::GetWebhookDeliveryRequest>,
    ) -> Result<Response<pb::WebhookDelivery>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let (s, d) = service::parse_delivery_name("name", &r.get_ref().name).or_status()?;
        let d = service::get_delivery(&ctx, s, d).await.or_status()?;
        Ok(Response::new(delivery_out(d)))
    }

    async fn redeliver_webhook_delivery(
        &self,
        r: Request<pb::RedeliverWebhookDeliveryRequest>,
    ) -> Result<Response<pb::WebhookDelivery>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let (s, d) = service::parse_delivery_name("name", &r.get_ref().name).or_status()?;
        service::retry_dead(&ctx, s, Some(d)).await.or_status()?;
        let d = service::get_delivery(&ctx, s, d).await.or_status()?;
        Ok(Response::new(delivery_out(d)))
    }

    async fn retry_dead_webhook_deliveries(
        &self,
        r: Request<pb::RetryDeadWebhookDeliveriesRequest>,
    ) -> Result<Response<pb::RetryDeadWebhookDeliveriesResponse>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let id = subscription_id("parent", &r.get_ref().parent).or_status()?;
        let ids = service::retry_dead(&ctx, id, None).await.or_status()?;
        Ok(Response::new(pb::RetryDeadWebhookDeliveriesResponse {
            retried_count: i32::try_from(ids.len()).unwrap_or(i32::MAX),
        }))
    }

    async fn replay_webhook_events(
        &self,
        r: Request<pb::ReplayWebhookEventsRequest>,
    ) -> Result<Response<pb::ReplayWebhookEventsResponse>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let r = r.into_inner();
        let id = subscription_id("name", &r.name).or_status()?;
        let start = from_ts("start_time", r.start_time).or_status()?;
        let end = from_ts("end_time", r.end_time).or_status()?;
        let from = match (start, r.after_event.trim()) {
            (Some(_), a) if !a.is_empty() => {
                return Err(Error::invalid(
                    "after_event",
                    "give start_time or after_event, not both",
                ))
                .or_status();
            }
            (Some(t), _) => ReplayFrom::Time(t),
            (None, "") => {
                return Err(Error::invalid("start_time", "is required (or after_event)"))
                    .or_status();
            }
            (None, a) => {
                ReplayFrom::After(crm_core::ids::parse_uuid("after_event", a).or_status()?)
            }
        };
        let out = service::replay(&ctx, id, from, end).await.or_status()?;
        Ok(Response::new(pb::ReplayWebhookEventsResponse {
            scheduled_count: i32::try_from(out.scheduled).unwrap_or(i32::MAX),
            last_event: out.last_event.map(|e| e.to_string()).unwrap_or_default(),
            more: out.more,
        }))
    }
}
