//! ConsentService (K7): each person's consent ledger, and the check outbound actions make.

use super::{Gateway, Wire};
use crate::convert::{enum_shown, from_ts, hidden, name, opt_ts, reference, ts};
use crate::status::{OrStatus, status};
use crm_api::v1 as pb;
use crm_api::v1::consent_service_server::ConsentService;
use crm_core::access::Action;
use crm_core::error::{Error, Result};
use crm_core::model::Contact;
use crm_core::model::consent::{self, Consent, ConsentChannel, ConsentStatus};
use crm_core::resource::{Collection, Record};
use crm_core::service::ListParams;
use tonic::{Request, Response, Status};

pub struct Consents(pub Gateway);

fn channel_in(field: &str, v: i32) -> Result<ConsentChannel> {
    use pb::ConsentChannel as P;
    Ok(match P::try_from(v) {
        Ok(P::Any) => ConsentChannel::Any,
        Ok(P::Email) => ConsentChannel::Email,
        Ok(P::Phone) => ConsentChannel::Phone,
        Ok(P::Sms) => ConsentChannel::Sms,
        Ok(P::Post) => ConsentChannel::Post,
        Ok(P::Chat) => ConsentChannel::Chat,
        Ok(P::Web) => ConsentChannel::Web,
        Ok(P::Fax) => ConsentChannel::Fax,
        Ok(P::Visit) => ConsentChannel::Visit,
        Ok(P::WebMeeting) => ConsentChannel::WebMeeting,
        Ok(P::Unspecified) => {
            return Err(Error::invalid(
                field,
                "must name a channel (ANY for every one)",
            ));
        }
        Err(_) => {
            return Err(Error::invalid(
                field,
                format!("{v} is not a ConsentChannel"),
            ));
        }
    })
}

fn channel_out(c: ConsentChannel) -> i32 {
    use pb::ConsentChannel as P;
    (match c {
        ConsentChannel::Any => P::Any,
        ConsentChannel::Email => P::Email,
        ConsentChannel::Phone => P::Phone,
        ConsentChannel::Sms => P::Sms,
        ConsentChannel::Post => P::Post,
        ConsentChannel::Chat => P::Chat,
        ConsentChannel::Web => P::Web,
        ConsentChannel::Fax => P::Fax,
        ConsentChannel::Visit => P::Visit,
        ConsentChannel::WebMeeting => P::WebMeeting,
    }) as i32
}

fn status_in(v: i32) -> Result<ConsentStatus> {
    use pb::ConsentStatus as P;
    match P::try_from(v) {
        Ok(P::Granted) => Ok(ConsentStatus::Granted),
        Ok(P::Withdrawn) => Ok(ConsentStatus::Withdrawn),
        Ok(P::Unspecified) => Err(Error::invalid("status", "must be GRANTED or WITHDRAWN")),
        Err(_) => Err(Error::invalid(
            "status",
            format!("{v} is not a ConsentStatus"),
        )),
    }
}

fn status_out(s: ConsentStatus) -> i32 {
    (match s {
        ConsentStatus::Granted => pb::ConsentStatus::Granted,
        ConsentStatus::Withdrawn => pb::ConsentStatus::Withdrawn,
    }) as i32
}

impl Wire<Consent> for pb::Consent {
    const FIELD: &'static str = "consent";

    fn into_domain(self) -> Result<Consent> {
        Ok(Consent {
            contact: reference("contact", "contacts", &self.contact)?,
            purpose: self.purpose,
            channel: channel_in("channel", self.channel)?,
            status: status_in(self.status)?,
            effective_time: from_ts("effective_time", self.effective_time)?,
            source: self.source,
            proof: self.proof,
        })
    }

    fn from_record(r: Record<Consent>) -> Self {
        let d = r.data;
        pb::Consent {
            name: name("consents", Some(r.meta.id)),
            contact: name("contacts", d.contact),
            purpose: d.purpose,
            channel: enum_shown(&r.hidden, "channel", channel_out(d.channel)),
            status: enum_shown(&r.hidden, "status", status_out(d.status)),
            effective_time: opt_ts(d.effective_time),
            source: d.source,
            proof: d.proof,
            create_time: Some(ts(r.meta.create_time)),
            hidden_fields: hidden(&r.hidden),
        }
    }

    fn name(&self) -> &str {
        &self.name
    }
    fn etag(&self) -> &str {
        ""
    }
}

/// The most entries of one person and purpose a check reads.
const MAX_LEDGER: usize = 10_000;

/// Fields a check decides by: a caller from whom a role hides one cannot check.
const DECIDING_FIELDS: [&str; 4] = ["purpose", "channel", "status", "effective_time"];

async fn check(
    gw: &Gateway,
    r: Request<pb::CheckConsentRequest>,
) -> Result<pb::ConsentCheck, Status> {
    let ctx = gw.ctx(&r).await?;
    let q = r.into_inner();
    let consents = Collection::of::<Consent>();
    ctx.scopes_of(&consents, Action::Read).or_status()?;
    if let Some(f) = DECIDING_FIELDS
        .iter()
        .find(|f| !ctx.may_read_field(&consents, f))
    {
        return Err(status(
            Error::permission_denied(
                "FIELD_HIDDEN",
                format!("consents.{f} is hidden from the caller"),
            )
            .with("field", *f),
        ));
    }
    let contact = reference("contact", "contacts", &q.contact)
        .and_then(|c| c.ok_or_else(|| Error::invalid("contact", "is required")))
        .or_status()?;
    let purpose = consent::purpose_key("purpose", &q.purpose).or_status()?;
    let channel = channel_in("channel", q.channel).or_status()?;
    let at = from_ts("check_time", q.check_time)
        .or_status()?
        .unwrap_or_else(|| ctx.clock.now());
    // The person: NOT_FOUND for another tenant's or one out of the caller's scope.
    ctx.get::<Contact>(contact).await.or_status()?;
    let mut entries: Vec<Record<Consent>> = Vec::new();
    let mut token = String::new();
    loop {
        let page = ctx
            .list::<Consent>(&ListParams {
                page_size: 1000,
                page_token: token,
                filter: format!("purpose = \"{purpose}\""),
                order_by: String::new(),
                parent: Some(("contact_id", contact)),
            })
            .await
            .or_status()?;
        entries.extend(page.items);
        if page.next_page_token.is_empty() || entries.len() >= MAX_LEDGER {
            break;
        }
        token = page.next_page_token;
    }
    let d = consent::decide(&entries, &purpose, channel, at);
    let reason = match d.entry {
        None => format!("no consent recorded for {purpose} over this channel by then"),
        Some(e) => format!(
            "{} for {purpose} over {} since {}",
            e.data.status,
            e.data.channel,
            e.data
                .effective_time
                .map(|t| t.to_rfc3339())
                .unwrap_or_default()
        ),
    };
    Ok(pb::ConsentCheck {
        allowed: d.allowed,
        deciding_consent: d.entry.cloned().map(pb::Consent::from_record),
        reason,
    })
}

#[tonic::async_trait]
impl ConsentService for Consents {
    async fn record_consent(
        &self,
        r: Request<pb::RecordConsentRequest>,
    ) -> Result<Response<pb::Consent>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let r = r.into_inner();
        Ok(Response::new(
            super::create::<Consent, pb::Consent>(&ctx, r.consent, &r.request_id).await?,
        ))
    }

    async fn get_consent(
        &self,
        r: Request<pb::GetConsentRequest>,
    ) -> Result<Response<pb::Consent>, Status> {
        let ctx = self.0.ctx(&r).await?;
        Ok(Response::new(
            super::get::<Consent, pb::Consent>(&ctx, &r.get_ref().name).await?,
        ))
    }

    async fn list_consents(
        &self,
        r: Request<pb::ListConsentsRequest>,
    ) -> Result<Response<pb::ListConsentsResponse>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let r = r.into_inner();
        let p = super::params(r.page_size, r.page_token, r.filter, r.order_by);
        let (consents, next_page_token) = super::list::<Consent, pb::Consent>(&ctx, p).await?;
        Ok(Response::new(pb::ListConsentsResponse {
            consents,
            next_page_token,
        }))
    }

    async fn check_consent(
        &self,
        r: Request<pb::CheckConsentRequest>,
    ) -> Result<Response<pb::ConsentCheck>, Status> {
        Ok(Response::new(check(&self.0, r).await?))
    }
}
