//! AuditService: the change history and ownership history of a resource.

use crate::convert::ts;
use crate::status::OrStatus;
use crm_api::v1 as pb;
use crm_api::v1::audit_service_server::AuditService;
use crm_core::error::{Error, Result};
use crm_core::ids;
use crm_core::journal::{self, AuditAction};
use crm_core::query::page::{self, PageToken};
use crm_core::registry::registry;
use crm_core::resource::Collection;
use crm_core::service::Ctx;
use crm_core::store;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::Gateway;

pub struct Audit(pub Gateway);

/// Resolves a resource name (`contacts/{id}`, `contacts/{c}/positions/{id}`,
/// `roles/{key}`: the last collection segment and its id or key) to its collection and id,
/// after checking the caller may read its history: as for Get, but a soft-deleted record's
/// history stays readable. Any registered collection has a history.
async fn readable(ctx: &Ctx, name: &str) -> Result<(&'static Collection, Uuid)> {
    let name = name.trim();
    let bad = || Error::invalid("parent", "must be a resource name such as contacts/{id}");
    let mut segments = name.rsplitn(3, '/');
    let (Some(key), Some(collection)) = (segments.next(), segments.next()) else {
        return Err(bad());
    };
    let c = registry().collection(collection).ok_or_else(|| {
        Error::invalid(
            "parent",
            format!("{collection:?} is not a collection with a history"),
        )
    })?;
    let id = match c.name_key {
        Some(field) => {
            crm_core::validate::slug("parent", key)?;
            store::find_by_key(&ctx.db.conn, ctx.tenant(), c, field, key)
                .await?
                .ok_or_else(|| Error::not_found(name.to_owned()))?
        }
        None => ids::parse_uuid("parent", key)?,
    };
    ctx.check_history(c, id).await?;
    Ok((c, id))
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
    collection: &'static Collection,
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
            w.collection.name,
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
                    AuditAction::Undelete => pb::AuditAction::Undelete,
                }) as i32,
                actor: format!("users/{}", a.actor),
                time: Some(ts(a.time)),
                changes: a
                    .changes
                    .iter()
                    .map(|c| {
                        let v = ctx.present_change(collection, c);
                        let text = |j: &serde_json::Value| {
                            if v.redacted {
                                String::new()
                            } else {
                                json_text(j)
                            }
                        };
                        pb::FieldChange {
                            old_value: text(&v.old),
                            new_value: text(&v.new),
                            field: v.field,
                            redacted: v.redacted,
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
            w.collection.name,
            w.id,
            w.before,
            w.limit + 1,
        )
        .await
        .or_status()?;
        let next_page_token = page_of(&mut rows, w.limit, |a| a.id, &r.parent);
        // The owner's history is a view of the `owner` field: the same field rules apply.
        let redacted = !ctx.may_read_field(w.collection, "owner");
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
