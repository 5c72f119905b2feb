//! TimelineService: interactions, channel intake and timelines (crm-collaborative).

use super::{Gateway, Wire};
use crate::convert::{from_ts, hidden, name, opt_ts, reference, ts};
use crate::status::OrStatus;
use crm_api::v1 as pb;
use crm_api::v1::timeline_service_server::TimelineService;
use crm_collaborative::calls::{CallDirection, CallOutcome, RawCallRecord};
use crm_collaborative::intake::{self, ChatIntake, ChatLine, Ingested, Links, TimelineQuery};
use crm_collaborative::interaction::{Attachment, Channel, Direction, Interaction, Participant};
use crm_core::error::{Error, Result};
use crm_core::resource::Record;
use crm_core::service::Ctx;
use pb::ListInteractionsResponse;
use std::pin::Pin;
use std::time::Duration;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

pub struct Timeline(pub Gateway);

/// How often a watch looks for new interactions.
const WATCH_POLL: Duration = Duration::from_millis(500);
/// How long a watch lasts at most (the client reconnects with `since_time`).
const WATCH_MAX: Duration = Duration::from_secs(3600);
/// Rows committed this long after their `create_time` are still caught by a watch.
const WATCH_OVERLAP_MS: i64 = 5_000;

fn channel_in(field: &str, c: i32) -> Result<Option<Channel>> {
    use pb::InteractionChannel as P;
    Ok(match P::try_from(c) {
        Ok(P::Unspecified) => None,
        Ok(P::Phone) => Some(Channel::Phone),
        Ok(P::Email) => Some(Channel::Email),
        Ok(P::Chat) => Some(Channel::Chat),
        Ok(P::WebForm) => Some(Channel::WebForm),
        Ok(P::Fax) => Some(Channel::Fax),
        Ok(P::Letter) => Some(Channel::Letter),
        Ok(P::WebMeeting) => Some(Channel::WebMeeting),
        Ok(P::Visit) => Some(Channel::Visit),
        Ok(P::Sms) => Some(Channel::Sms),
        Err(_) => return Err(crate::convert::unknown_enum(field, c)),
    })
}

fn channel_out(c: Channel) -> i32 {
    use pb::InteractionChannel as P;
    (match c {
        Channel::Phone => P::Phone,
        Channel::Email => P::Email,
        Channel::Chat => P::Chat,
        Channel::WebForm => P::WebForm,
        Channel::Fax => P::Fax,
        Channel::Letter => P::Letter,
        Channel::WebMeeting => P::WebMeeting,
        Channel::Visit => P::Visit,
        Channel::Sms => P::Sms,
    }) as i32
}

fn direction_in(field: &str, d: i32) -> Result<Option<Direction>> {
    use pb::InteractionDirection as P;
    Ok(match P::try_from(d) {
        Ok(P::Unspecified) => None,
        Ok(P::Inbound) => Some(Direction::Inbound),
        Ok(P::Outbound) => Some(Direction::Outbound),
        Err(_) => return Err(crate::convert::unknown_enum(field, d)),
    })
}

fn direction_out(d: Direction) -> i32 {
    use pb::InteractionDirection as P;
    (match d {
        Direction::Inbound => P::Inbound,
        Direction::Outbound => P::Outbound,
    }) as i32
}

impl Wire<Interaction> for pb::Interaction {
    const FIELD: &'static str = "interaction";

    fn into_domain(self) -> Result<Interaction> {
        Ok(Interaction {
            channel: channel_in("channel", self.channel)?
                .ok_or_else(|| Error::invalid("channel", "is required"))?,
            direction: direction_in("direction", self.direction)?.unwrap_or_default(),
            occurred_time: from_ts("occurred_time", self.occurred_time)?,
            duration_seconds: self.duration_seconds,
            subject: self.subject,
            body: self.body,
            body_truncated: false,
            participants: self
                .participants
                .into_iter()
                .enumerate()
                .map(|(i, p)| {
                    Ok(Participant {
                        address: p.address,
                        display_name: p.display_name,
                        role: p.role,
                        contact: reference(
                            &format!("participants[{i}].contact"),
                            "contacts",
                            &p.contact,
                        )?,
                    })
                })
                .collect::<Result<Vec<_>>>()?,
            attachments: self
                .attachments
                .into_iter()
                .map(|a| Attachment {
                    name: a.name,
                    content_type: a.content_type,
                    size: a.size,
                    inline: a.inline,
                })
                .collect(),
            outcome: self.outcome,
            handled_by: reference("handled_by", "users", &self.handled_by)?,
            contact: reference("contact", "contacts", &self.contact)?,
            account: reference("account", "accounts", &self.account)?,
            lead: reference("lead", "leads", &self.lead)?,
            opportunity: reference("opportunity", "opportunities", &self.opportunity)?,
            case: reference("case", "cases", &self.case)?,
            conversation: self.conversation,
            external_id: self.external_id,
            // Output only.
            matched: false,
            owner: reference("owner", "users", &self.owner)?,
            territory: reference("territory", "territories", &self.territory)?,
        })
    }

    fn from_record(r: Record<Interaction>) -> Self {
        let d = r.data;
        pb::Interaction {
            name: name("interactions", Some(r.meta.id)),
            channel: channel_out(d.channel),
            direction: direction_out(d.direction),
            occurred_time: opt_ts(d.occurred_time),
            duration_seconds: d.duration_seconds,
            subject: d.subject,
            body: d.body,
            body_truncated: d.body_truncated,
            participants: d
                .participants
                .into_iter()
                .map(|p| pb::Participant {
                    address: p.address,
                    display_name: p.display_name,
                    role: p.role,
                    contact: name("contacts", p.contact),
                })
                .collect(),
            attachments: d
                .attachments
                .into_iter()
                .map(|a| pb::AttachmentInfo {
                    name: a.name,
                    content_type: a.content_type,
                    size: a.size,
                    inline: a.inline,
                })
                .collect(),
            outcome: d.outcome,
            handled_by: name("users", d.handled_by),
            contact: name("contacts", d.contact),
            account: name("accounts", d.account),
            lead: name("leads", d.lead),
            opportunity: name("opportunities", d.opportunity),
            case: name("cases", d.case),
            conversation: d.conversation,
            external_id: d.external_id,
            matched: d.matched,
            owner: name("users", d.owner),
            territory: name("territories", d.territory),
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

fn links_in(l: Option<pb::IntakeLinks>) -> Result<Links> {
    let l = l.unwrap_or_default();
    Ok(Links {
        direction: direction_in("links.direction", l.direction)?,
        case: reference("links.case", "cases", &l.case)?,
        handled_by: reference("links.handled_by", "users", &l.handled_by)?,
        owner: reference("links.owner", "users", &l.owner)?,
    })
}

fn ingested_out(i: Ingested) -> pb::IngestResponse {
    pb::IngestResponse {
        interaction: Some(pb::Interaction::from_record(i.interaction)),
        created: i.created,
        threading: i.threading,
    }
}

fn outcome_in(o: i32) -> Result<CallOutcome> {
    use pb::CallOutcome as P;
    match P::try_from(o) {
        Ok(P::Answered) => Ok(CallOutcome::Answered),
        Ok(P::Missed) => Ok(CallOutcome::Missed),
        Ok(P::Voicemail) => Ok(CallOutcome::Voicemail),
        Ok(P::Busy) => Ok(CallOutcome::Busy),
        Ok(P::Failed) => Ok(CallOutcome::Failed),
        Ok(P::Unspecified) => Err(Error::invalid("outcome", "is required")),
        Err(_) => Err(crate::convert::unknown_enum("outcome", o)),
    }
}

fn call_in(r: pb::IngestCallRequest) -> Result<(intake::CallIntake, Links)> {
    let direction = match direction_in("direction", r.direction)? {
        Some(Direction::Inbound) => CallDirection::Inbound,
        Some(Direction::Outbound) => CallDirection::Outbound,
        None => return Err(Error::invalid("direction", "is required")),
    };
    let started_at = from_ts("start_time", r.start_time)?
        .ok_or_else(|| Error::invalid("start_time", "is required"))?;
    let duration_seconds = u32::try_from(r.duration_seconds)
        .ok()
        .filter(|d| *d <= 30 * 24 * 3600)
        .ok_or_else(|| {
            Error::invalid(
                "duration_seconds",
                "must be within 0 and 30 days of seconds",
            )
        })?;
    let call = intake::CallIntake {
        record: RawCallRecord {
            from_number: r.from_number,
            to_number: r.to_number,
            direction,
            outcome: outcome_in(r.outcome)?,
            started_at,
            duration_seconds,
        },
        call_id: r.call_id,
        default_region: r.default_region,
        summary: r.summary,
        subject: r.subject,
    };
    Ok((call, links_in(r.links)?))
}

fn chat_in(r: pb::IngestChatRequest) -> Result<(ChatIntake, Links)> {
    let lines = r
        .lines
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            Ok(ChatLine {
                at: from_ts(&format!("lines[{i}].time"), l.time)?
                    .ok_or_else(|| Error::invalid(format!("lines[{i}].time"), "is required"))?,
                author: l.author,
                from_customer: l.from_customer,
                text: l.text,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((
        ChatIntake {
            chat_id: r.chat_id,
            customer_email: r.customer_email,
            customer_name: r.customer_name,
            subject: r.subject,
            lines,
        },
        links_in(r.links)?,
    ))
}

/// `contacts/{id}` or `accounts/{id}`.
fn parent_in(parent: &str, q: &mut TimelineQuery) -> Result<()> {
    let p = parent.trim();
    if p.starts_with("accounts/") {
        q.account = reference("parent", "accounts", p)?;
    } else if p.starts_with("contacts/") {
        q.contact = reference("parent", "contacts", p)?;
    } else {
        return Err(Error::invalid(
            "parent",
            "must be contacts/{id} or accounts/{id}",
        ));
    }
    Ok(())
}

fn channels_in(channels: &[i32]) -> Result<Vec<Channel>> {
    if channels.len() > 20 {
        return Err(Error::invalid("channels", "at most 20 channels"));
    }
    let mut out = Vec::new();
    for (i, c) in channels.iter().enumerate() {
        if let Some(c) = channel_in(&format!("channels[{i}]"), *c)? {
            out.push(c);
        }
    }
    Ok(out)
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::Interaction, Status>> + Send>>;

/// Polls for new interactions of the timeline and sends them, until the client goes away.
async fn watch(
    ctx: Ctx,
    filter: String,
    mut since: chrono::DateTime<chrono::Utc>,
    tx: tokio::sync::mpsc::Sender<Result<pb::Interaction, Status>>,
) {
    let started = tokio::time::Instant::now();
    let mut seen = intake::Seen::default();
    let overlap = chrono::Duration::milliseconds(WATCH_OVERLAP_MS);
    let mut from = since - overlap;
    while !tx.is_closed() && started.elapsed() < WATCH_MAX {
        let Some(rows) =
            super::watch_poll(&tx, intake::recorded_since(&ctx, &filter, from, 200)).await
        else {
            return;
        };
        let full = rows.len() >= 200;
        for r in rows {
            let created = r.meta.create_time;
            since = since.max(created);
            if created < from || !seen.first_time(r.meta.id, created) {
                continue;
            }
            if tx.send(Ok(pb::Interaction::from_record(r))).await.is_err() {
                return;
            }
        }
        from = since - overlap;
        seen.forget_before(from);
        if !full {
            tokio::time::sleep(WATCH_POLL).await;
        }
    }
}

crate::service_impl!(TimelineService, Timeline, [
    Interaction => pb::Interaction {
        create_interaction(pb::CreateInteractionRequest, interaction),
        get_interaction(pb::GetInteractionRequest),
        list_interactions(pb::ListInteractionsRequest => ListInteractionsResponse . interactions),
        update_interaction(pb::UpdateInteractionRequest),
        delete_interaction(pb::DeleteInteractionRequest)
    }
]
    async fn ingest_email(
        &self,
        r: Request<pb::IngestEmailRequest>,
    ) -> Result<Response<pb::IngestResponse>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let r = r.into_inner();
        let links = links_in(r.links).or_status()?;
        let out = intake::ingest_email(&ctx, &r.raw, links).await.or_status()?;
        Ok(Response::new(ingested_out(out)))
    }

    async fn ingest_call(
        &self,
        r: Request<pb::IngestCallRequest>,
    ) -> Result<Response<pb::IngestResponse>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let (call, links) = call_in(r.into_inner()).or_status()?;
        let out = intake::ingest_call(&ctx, call, links).await.or_status()?;
        Ok(Response::new(ingested_out(out)))
    }

    async fn ingest_chat(
        &self,
        r: Request<pb::IngestChatRequest>,
    ) -> Result<Response<pb::IngestResponse>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let (chat, links) = chat_in(r.into_inner()).or_status()?;
        let out = intake::ingest_chat(&ctx, chat, links).await.or_status()?;
        Ok(Response::new(ingested_out(out)))
    }

    async fn get_timeline(
        &self,
        r: Request<pb::GetTimelineRequest>,
    ) -> Result<Response<pb::GetTimelineResponse>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let r = r.into_inner();
        let q = timeline_query(&r.parent, &r.channels, r.direction, r.start_time, r.end_time, r.filter)
            .or_status()?;
        let page = intake::timeline(&ctx, &q, r.page_size, r.page_token).await.or_status()?;
        Ok(Response::new(pb::GetTimelineResponse {
            interactions: page.items.into_iter().map(pb::Interaction::from_record).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    type WatchTimelineStream = WatchStream;

    async fn watch_timeline(
        &self,
        r: Request<pb::WatchTimelineRequest>,
    ) -> Result<Response<Self::WatchTimelineStream>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let r = r.into_inner();
        let q = timeline_query(&r.parent, &r.channels, r.direction, None, None, r.filter)
            .or_status()?;
        let since = from_ts("since_time", r.since_time)
            .or_status()?
            .unwrap_or_else(|| ctx.clock.now());
        // Checks the parent and the filter before the stream starts.
        let filter = intake::timeline_filter(&ctx, &q).await.or_status()?;
        intake::recorded_since(&ctx, &filter, since, 1).await.or_status()?;
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(watch(ctx, filter, since, tx));
        Ok(Response::new(
            Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)) as WatchStream
        ))
    }
);

fn timeline_query(
    parent: &str,
    channels: &[i32],
    direction: i32,
    start: Option<prost_types::Timestamp>,
    end: Option<prost_types::Timestamp>,
    filter: String,
) -> Result<TimelineQuery> {
    let mut q = TimelineQuery {
        channels: channels_in(channels)?,
        direction: direction_in("direction", direction)?,
        start_time: from_ts("start_time", start)?,
        end_time: from_ts("end_time", end)?,
        filter,
        ..Default::default()
    };
    parent_in(parent, &mut q)?;
    Ok(q)
}
