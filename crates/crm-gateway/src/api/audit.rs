//! AuditService: the change history and ownership history of a resource.

use crate::convert::ts;
use crate::status::OrStatus;
use crm_api::v1 as pb;
use crm_api::v1::audit_service_server::AuditService;
use crm_core::access::FieldAccess;
use crm_core::error::{Error, Result};
use crm_core::ids;
use crm_core::journal::{self, AuditAction};
use crm_core::model;
use crm_core::query::page::{self, PageToken};
use crm_core::service::Ctx;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::Gateway;

pub struct Audit(pub Gateway);

/// Resolves a resource name to (collection, id) after checking the caller may read its
/// history: as for Get, but a soft-deleted record's history stays readable.
async fn readable(ctx: &Ctx, name: &str) -> Result<(&'static str, Uuid)> {
    let name = name.trim();
    if let Some(rest) = name.strip_prefix("roles/") {
        crm_core::validate::slug("parent", rest)?;
        let id = model::role::find_for_history(&ctx.db.conn, ctx.tenant(), rest)
            .await?
            .ok_or_else(|| Error::not_found(name.to_owned()))?;
        ctx.check_history::<model::Role>(id).await?;
        return Ok(("roles", id));
    }
    if let Some((_, pos)) = name
        .strip_prefix("contacts/")
        .and_then(|r| r.split_once("/positions/"))
    {
        let id = ids::parse_uuid("parent", pos)?;
        ctx.check_history::<model::Position>(id).await?;
        return Ok(("positions", id));
    }
    let (collection, id) = name
        .split_once('/')
        .ok_or_else(|| Error::invalid("parent", "must be a resource name such as contacts/{id}"))?;
    let id = ids::parse_uuid("parent", id)?;
    let c: &'static str = match collection {
        "accounts" => ctx
            .check_history::<model::Account>(id)
            .await
            .map(|_| "accounts")?,
        "contacts" => ctx
            .check_history::<model::Contact>(id)
            .await
            .map(|_| "contacts")?,
        "orders" => ctx
            .check_history::<model::Order>(id)
            .await
            .map(|_| "orders")?,
        "products" => ctx
            .check_history::<model::Product>(id)
            .await
            .map(|_| "products")?,
        "productGroups" => ctx
            .check_history::<model::ProductGroup>(id)
            .await
            .map(|_| "productGroups")?,
        "users" => ctx
            .check_history::<model::User>(id)
            .await
            .map(|_| "users")?,
        "teams" => ctx
            .check_history::<model::Team>(id)
            .await
            .map(|_| "teams")?,
        "territories" => ctx
            .check_history::<model::Territory>(id)
            .await
            .map(|_| "territories")?,
        "customFieldDefinitions" => ctx
            .check_history::<model::CustomFieldDefinition>(id)
            .await
            .map(|_| "customFieldDefinitions")?,
        _ => {
            return Err(Error::invalid(
                "parent",
                format!("{collection:?} has no audit history"),
            ));
        }
    };
    Ok((c, id))
}

/// Whether the caller's field rules hide a field of a collection.
fn hidden(ctx: &Ctx, collection: &str, field: &str) -> bool {
    let permission = model::collection(collection).map_or(collection, |c| c.permission);
    ctx.policy.field_access_in(permission, collection, field) == FieldAccess::Hidden
}

/// A value as shown in history: references as resource names (older records stored ids).
fn shown(collection: &str, field: &str, v: &serde_json::Value) -> String {
    let v = match model::collection(collection).and_then(|c| c.field(field)) {
        Some(f) => journal::named_refs(f.kind, v),
        None => v.clone(),
    };
    json_text(&v)
}

fn cursor(token: &str, parent: &str) -> Result<Option<Uuid>> {
    let digest = page::query_digest(&["audit", parent]);
    match PageToken::decode("page_token", token, &digest)? {
        Some(t) => Uuid::try_parse(&t.id)
            .map(Some)
            .map_err(|_| Error::invalid("page_token", "is not a page token from this list")),
        None => Ok(None),
    }
}

fn next(more: bool, last: Option<Uuid>, parent: &str) -> String {
    match (more, last) {
        (true, Some(id)) => PageToken {
            v: vec![],
            id: id.to_string(),
            q: page::query_digest(&["audit", parent]),
        }
        .encode(),
        _ => String::new(),
    }
}

/// What both lists share: page size, cursor, and the resource after the read check.
struct Window {
    collection: &'static str,
    id: Uuid,
    before: Option<Uuid>,
    limit: u64,
}

async fn window(ctx: &Ctx, parent: &str, page_size: i32, page_token: &str) -> Result<Window> {
    let limit = page::page_size("page_size", page_size)?;
    let before = cursor(page_token, parent)?;
    let (collection, id) = readable(ctx, parent).await?;
    Ok(Window {
        collection,
        id,
        before,
        limit,
    })
}

/// Trims the one extra row fetched and returns the next page token.
fn page_of<T>(rows: &mut Vec<T>, limit: u64, id_of: impl Fn(&T) -> Uuid, parent: &str) -> String {
    let more = rows.len() as u64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    next(more, rows.last().map(id_of), parent)
}

fn json_text(v: &serde_json::Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

#[tonic::async_trait]
impl AuditService for Audit {
    async fn list_audit_records(
        &self,
        r: Request<pb::ListAuditRecordsRequest>,
    ) -> Result<Response<pb::ListAuditRecordsResponse>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let r = r.into_inner();
        let w = window(&ctx, &r.parent, r.page_size, &r.page_token)
            .await
            .or_status()?;
        let collection = w.collection;
        let mut rows = journal::list_audit(
            &ctx.db.conn,
            ctx.tenant(),
            w.collection,
            w.id,
            w.before,
            w.limit + 1,
        )
        .await
        .or_status()?;
        let next_page_token = page_of(&mut rows, w.limit, |a| a.id, &r.parent);
        let resource = r.parent.trim().to_owned();
        let audit_records = rows
            .into_iter()
            .map(|a| pb::AuditRecord {
                name: format!("auditRecords/{}", a.id),
                resource: resource.clone(),
                action: (match a.action {
                    AuditAction::Create => pb::AuditAction::Create,
                    AuditAction::Update => pb::AuditAction::Update,
                    AuditAction::Delete => pb::AuditAction::Delete,
                }) as i32,
                actor: format!("users/{}", a.actor),
                time: Some(ts(a.time)),
                changes: a
                    .changes
                    .iter()
                    .map(|c| {
                        let redacted = hidden(&ctx, collection, &c.field);
                        pb::FieldChange {
                            field: c.field.clone(),
                            old_value: if redacted {
                                String::new()
                            } else {
                                shown(collection, &c.field, &c.old)
                            },
                            new_value: if redacted {
                                String::new()
                            } else {
                                shown(collection, &c.field, &c.new)
                            },
                            redacted,
                        }
                    })
                    .collect(),
                request_id: a.request_id,
            })
            .collect();
        Ok(Response::new(pb::ListAuditRecordsResponse {
            audit_records,
            next_page_token,
        }))
    }

    async fn list_ownership_changes(
        &self,
        r: Request<pb::ListOwnershipChangesRequest>,
    ) -> Result<Response<pb::ListOwnershipChangesResponse>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let r = r.into_inner();
        let w = window(&ctx, &r.parent, r.page_size, &r.page_token)
            .await
            .or_status()?;
        let mut rows = journal::list_ownership(
            &ctx.db.conn,
            ctx.tenant(),
            w.collection,
            w.id,
            w.before,
            w.limit + 1,
        )
        .await
        .or_status()?;
        let next_page_token = page_of(&mut rows, w.limit, |a| a.id, &r.parent);
        // The owner's history is a view of the `owner` field: the same field rules apply.
        let redacted = hidden(&ctx, w.collection, "owner");
        let user = |u: Option<Uuid>| match u {
            Some(u) if !redacted => format!("users/{u}"),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListOwnershipChangesResponse {
            ownership_changes: rows
                .into_iter()
                .map(|o| pb::OwnershipChange {
                    resource: r.parent.trim().to_owned(),
                    previous_owner: user(o.previous_owner),
                    new_owner: user(o.new_owner),
                    actor: format!("users/{}", o.actor),
                    time: Some(ts(o.time)),
                    redacted,
                })
                .collect(),
            next_page_token,
        }))
    }
}
