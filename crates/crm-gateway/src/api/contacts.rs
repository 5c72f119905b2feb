//! ContactService: contacts and their positions at accounts.

use super::{Gateway, Wire};
use crate::convert::{self, date, from_date, hidden, name, reference, ts};
use crate::status::OrStatus;
use crm_api::v1 as pb;
use crm_api::v1::contact_service_server::ContactService;
use crm_core::error::{Error, Result};
use crm_core::ids;
use crm_core::model;
use crm_core::resource::Record;
use crm_core::service::{Ctx, ListParams};
use pb::{ListContactsResponse, ListPositionsResponse};
use tonic::{Request, Response, Status};
use uuid::Uuid;

pub struct Contacts(pub Gateway);

impl Wire<model::Contact> for pb::Contact {
    const FIELD: &'static str = "contact";

    fn into_domain(self) -> Result<model::Contact> {
        Ok(model::Contact {
            given_name: self.given_name,
            family_name: self.family_name,
            display_name: self.display_name,
            phones: self.phones.into_iter().map(convert::phone_in).collect(),
            emails: self.emails.into_iter().map(convert::email_in).collect(),
            addresses: self
                .addresses
                .into_iter()
                .map(convert::address_in)
                .collect(),
            birth_date: from_date("birth_date", self.birth_date)?,
            region: self.region,
            tags: self.tags,
            owner: reference("owner", "users", &self.owner)?,
            territory: reference("territory", "territories", &self.territory)?,
            custom_fields: convert::custom_in(self.custom_fields)?,
        })
    }

    fn from_record(r: Record<model::Contact>) -> Self {
        let d = r.data;
        pb::Contact {
            name: name("contacts", Some(r.meta.id)),
            given_name: d.given_name,
            family_name: d.family_name,
            display_name: d.display_name,
            phones: d.phones.into_iter().map(convert::phone_out).collect(),
            emails: d.emails.into_iter().map(convert::email_out).collect(),
            addresses: d.addresses.into_iter().map(convert::address_out).collect(),
            birth_date: date(d.birth_date),
            region: d.region,
            tags: d.tags,
            owner: name("users", d.owner),
            territory: name("territories", d.territory),
            custom_fields: convert::custom_out(d.custom_fields),
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

fn position_in(p: pb::Position, contact: Option<Uuid>) -> Result<model::Position> {
    Ok(model::Position {
        contact,
        account: reference("account", "accounts", &p.account)?,
        title: p.title,
        role: p.role,
        start_date: from_date("start_date", p.start_date)?,
        end_date: from_date("end_date", p.end_date)?,
    })
}

fn position_out(r: Record<model::Position>) -> pb::Position {
    let d = r.data;
    let contact = d.contact.unwrap_or_default();
    pb::Position {
        name: format!("contacts/{contact}/positions/{}", r.meta.id),
        account: name("accounts", d.account),
        title: d.title,
        role: d.role,
        start_date: date(d.start_date),
        end_date: date(d.end_date),
        create_time: Some(ts(r.meta.create_time)),
        update_time: Some(ts(r.meta.update_time)),
        etag: r.meta.etag(),
        hidden_fields: hidden(&r.hidden),
    }
}

/// `contacts/{contact}/positions/{position}` -> (contact, position).
fn parse_position_name(field: &str, name: &str) -> Result<(Uuid, Uuid)> {
    let bad = || {
        Error::invalid(
            field,
            "must be a resource name of the form contacts/{contact}/positions/{position}",
        )
    };
    let rest = name.trim().strip_prefix("contacts/").ok_or_else(bad)?;
    let (contact, position) = rest.split_once("/positions/").ok_or_else(bad)?;
    Ok((
        ids::parse_uuid(field, contact)?,
        ids::parse_uuid(field, position)?,
    ))
}

/// Gets a position and checks it belongs to the contact its name says.
async fn position(ctx: &Ctx, field: &str, name: &str) -> Result<(Uuid, Record<model::Position>)> {
    let (contact, id) = parse_position_name(field, name)?;
    let rec = ctx.get::<model::Position>(id).await?;
    if rec.data.contact != Some(contact) {
        return Err(Error::not_found(name.trim().to_owned()));
    }
    Ok((id, rec))
}

crate::service_impl!(ContactService, Contacts, [
    model::Contact => pb::Contact {
        create_contact(pb::CreateContactRequest, contact),
        get_contact(pb::GetContactRequest),
        list_contacts(pb::ListContactsRequest => ListContactsResponse . contacts),
        update_contact(pb::UpdateContactRequest),
        delete_contact(pb::DeleteContactRequest)
    }
]

    async fn create_position(
        &self,
        r: Request<pb::CreatePositionRequest>,
    ) -> Result<Response<pb::Position>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let r = r.into_inner();
        let contact = ids::parse_name("parent", "contacts", r.parent.trim()).or_status()?;
        ctx.get::<model::Contact>(contact).await.or_status()?;
        let p = convert::required("position", r.position).or_status()?;
        let data = position_in(p, Some(contact)).map_err(|e| e.in_field("position")).or_status()?;
        let rec = ctx
            .create(data, &r.request_id)
            .await
            .map_err(|e| e.in_field("position"))
            .or_status()?;
        Ok(Response::new(position_out(rec)))
    }

    async fn get_position(
        &self,
        r: Request<pb::GetPositionRequest>,
    ) -> Result<Response<pb::Position>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let (_, rec) = position(&ctx, "name", &r.get_ref().name).await.or_status()?;
        Ok(Response::new(position_out(rec)))
    }

    async fn list_positions(
        &self,
        r: Request<pb::ListPositionsRequest>,
    ) -> Result<Response<ListPositionsResponse>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let r = r.into_inner();
        let parent = match r.parent.trim() {
            "contacts/-" => None,
            p => {
                let id = ids::parse_name("parent", "contacts", p).or_status()?;
                ctx.get::<model::Contact>(id).await.or_status()?;
                Some(("contact_id", id))
            }
        };
        let params = ListParams {
            page_size: r.page_size,
            page_token: r.page_token,
            filter: r.filter,
            order_by: r.order_by,
            parent,
        };
        let page = ctx.list::<model::Position>(&params).await.or_status()?;
        Ok(Response::new(ListPositionsResponse {
            positions: page.items.into_iter().map(position_out).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn update_position(
        &self,
        r: Request<pb::UpdatePositionRequest>,
    ) -> Result<Response<pb::Position>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let r = r.into_inner();
        let p = convert::required("position", r.position).or_status()?;
        let (id, current) = position(&ctx, "position.name", &p.name).await.or_status()?;
        let etag = p.etag.clone();
        let data = position_in(p, current.data.contact).map_err(|e| e.in_field("position")).or_status()?;
        let rec = ctx
            .update(id, data, &convert::mask(r.update_mask), &etag)
            .await
            .map_err(|e| e.in_field("position"))
            .or_status()?;
        Ok(Response::new(position_out(rec)))
    }

    async fn delete_position(
        &self,
        r: Request<pb::DeletePositionRequest>,
    ) -> Result<Response<()>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let (id, _) = position(&ctx, "name", &r.get_ref().name).await.or_status()?;
        ctx.delete::<model::Position>(id, &r.get_ref().etag).await.or_status()?;
        Ok(Response::new(()))
    }
);
