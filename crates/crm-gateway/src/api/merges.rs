//! MergeService: merging duplicate leads, contacts and accounts, and undoing a merge
//! (crm-operational's `merge`).

use super::{Gateway, Wire};
use crate::convert::{json_value, name, ts};
use crate::status::OrStatus;
use crm_api::v1 as pb;
use crm_api::v1::merge_service_server::MergeService;
use crm_core::error::{Error, Result};
use crm_core::model::{Account, Contact};
use crm_core::resource::{Record, Resource};
use crm_operational::lead::Lead;
use crm_operational::merge::{self, MergeRequest, MergeState, RecordMerge};
use tonic::{Request, Response, Status};

pub struct Merges(pub Gateway);

fn state_out(s: MergeState) -> i32 {
    (match s {
        MergeState::Merged => pb::MergeState::Merged,
        MergeState::Undone => pb::MergeState::Undone,
    }) as i32
}

fn structure(m: &serde_json::Map<String, serde_json::Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: m.iter().map(|(k, v)| (k.clone(), json_value(v))).collect(),
    }
}

impl Wire<RecordMerge> for pb::RecordMerge {
    const FIELD: &'static str = "merge";

    fn into_domain(self) -> Result<RecordMerge> {
        Err(Error::invalid(
            "merge",
            "merges are made by MergeLeads, MergeContacts and MergeAccounts",
        ))
    }

    fn from_record(r: Record<RecordMerge>) -> Self {
        let d = r.data;
        pb::RecordMerge {
            name: name(RecordMerge::COLLECTION, Some(r.meta.id)),
            survivor: name(&d.collection, d.survivor),
            merged: name(&d.collection, d.merged),
            fields: d.fields,
            survivor_before: Some(structure(&d.survivor_before)),
            taken: Some(structure(&d.taken)),
            references: d
                .references
                .into_iter()
                .map(|c| pb::MovedReference {
                    record: name(&c.collection, Some(c.id)),
                    field: c.field,
                })
                .collect(),
            state: state_out(d.state),
            undo_time: d.undo_time.map(ts),
            undone_by: name("users", d.undone_by),
            undo_conflicts: d.undo_conflicts,
            create_time: Some(ts(r.meta.create_time)),
            update_time: Some(ts(r.meta.update_time)),
            etag: r.meta.etag(),
        }
    }

    fn name(&self) -> &str {
        &self.name
    }
    fn etag(&self) -> &str {
        ""
    }
}

/// A merge request of `R`, parsed and done: the merge and the survivor, on the wire.
async fn merge_of<R: Resource, W: Wire<R>>(
    ctx: &crm_core::service::Ctx,
    survivor: &str,
    merged: &str,
    mask: Option<prost_types::FieldMask>,
    survivor_etag: String,
    merged_etag: String,
) -> std::result::Result<(Option<pb::RecordMerge>, Option<W>), Status> {
    let req = MergeRequest {
        survivor: crm_core::ids::parse_name("survivor", R::COLLECTION, survivor.trim())
            .or_status()?,
        merged: crm_core::ids::parse_name("merged", R::COLLECTION, merged.trim()).or_status()?,
        fields: crate::convert::mask(mask),
        survivor_etag,
        merged_etag,
    };
    let m = merge::merge::<R>(ctx, req).await.or_status()?;
    Ok((
        Some(pb::RecordMerge::from_record(m.merge)),
        Some(W::from_record(m.survivor)),
    ))
}

#[tonic::async_trait]
impl MergeService for Merges {
    async fn merge_leads(
        &self,
        r: Request<pb::MergeLeadsRequest>,
    ) -> std::result::Result<Response<pb::MergeLeadsResponse>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let q = r.into_inner();
        let (merge, survivor) = merge_of::<Lead, pb::Lead>(
            &ctx,
            &q.survivor,
            &q.merged,
            q.field_mask,
            q.survivor_etag,
            q.merged_etag,
        )
        .await?;
        Ok(Response::new(pb::MergeLeadsResponse { merge, survivor }))
    }

    async fn merge_contacts(
        &self,
        r: Request<pb::MergeContactsRequest>,
    ) -> std::result::Result<Response<pb::MergeContactsResponse>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let q = r.into_inner();
        let (merge, survivor) = merge_of::<Contact, pb::Contact>(
            &ctx,
            &q.survivor,
            &q.merged,
            q.field_mask,
            q.survivor_etag,
            q.merged_etag,
        )
        .await?;
        Ok(Response::new(pb::MergeContactsResponse { merge, survivor }))
    }

    async fn merge_accounts(
        &self,
        r: Request<pb::MergeAccountsRequest>,
    ) -> std::result::Result<Response<pb::MergeAccountsResponse>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let q = r.into_inner();
        let (merge, survivor) = merge_of::<Account, pb::Account>(
            &ctx,
            &q.survivor,
            &q.merged,
            q.field_mask,
            q.survivor_etag,
            q.merged_etag,
        )
        .await?;
        Ok(Response::new(pb::MergeAccountsResponse { merge, survivor }))
    }

    async fn get_record_merge(
        &self,
        r: Request<pb::GetRecordMergeRequest>,
    ) -> std::result::Result<Response<pb::RecordMerge>, Status> {
        let ctx = self.0.ctx(&r).await?;
        super::get::<RecordMerge, pb::RecordMerge>(&ctx, &r.get_ref().name)
            .await
            .map(Response::new)
    }

    async fn list_record_merges(
        &self,
        r: Request<pb::ListRecordMergesRequest>,
    ) -> std::result::Result<Response<pb::ListRecordMergesResponse>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let q = r.into_inner();
        let (merges, next_page_token) = super::list::<RecordMerge, pb::RecordMerge>(
            &ctx,
            super::params(q.page_size, q.page_token, q.filter, q.order_by),
        )
        .await?;
        Ok(Response::new(pb::ListRecordMergesResponse {
            merges,
            next_page_token,
        }))
    }

    async fn undo_record_merge(
        &self,
        r: Request<pb::UndoRecordMergeRequest>,
    ) -> std::result::Result<Response<pb::RecordMerge>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let id = <pb::RecordMerge as Wire<RecordMerge>>::parse_id("name", &r.get_ref().name)
            .or_status()?;
        merge::undo(&ctx, id)
            .await
            .map(|m| Response::new(pb::RecordMerge::from_record(m)))
            .or_status()
    }
}
