//! DuplicateService: duplicates of one record, and scans of a whole collection
//! (crm-operational's `dedupe` and `scan`).

use crate::convert::{name, ts};
use crate::status::OrStatus;
use crm_api::google::longrunning as lro;
use crm_api::v1 as pb;
use crm_api::v1::duplicate_service_server::DuplicateService;
use crm_core::error::Error;
use crm_core::resource::Resource;
use crm_core::service::ListParams;
use crm_operational::dedupe::{self, DuplicateCandidate};
use crm_operational::scan::{self, DuplicatePair};
use tonic::{Request, Response, Status};
use uuid::Uuid;

pub struct Duplicates(pub super::Gateway);

/// `leads/{id}`, `contacts/{id}` or `accounts/{id}`.
fn record_name(field: &str, s: &str) -> crm_core::error::Result<(String, Uuid)> {
    let s = s.trim();
    let Some((c, _)) = s.split_once('/') else {
        return Err(Error::invalid(
            field,
            "must be leads/{id}, contacts/{id} or accounts/{id}",
        ));
    };
    if !dedupe::MATCHED.contains(&c) {
        return Err(Error::invalid(
            field,
            "must be leads/{id}, contacts/{id} or accounts/{id}",
        ));
    }
    let id = crm_core::ids::parse_name(field, c, s)?;
    Ok((c.to_owned(), id))
}

fn scan_id(s: &str) -> crm_core::error::Result<Uuid> {
    crm_core::ids::parse_name("scan", "operations", s.trim())
}

#[tonic::async_trait]
impl DuplicateService for Duplicates {
    async fn find_duplicates(
        &self,
        r: Request<pb::FindDuplicatesRequest>,
    ) -> Result<Response<pb::DuplicateCheck>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let (collection, id) = record_name("name", &r.get_ref().name).or_status()?;
        let d = dedupe::find_for_record(&ctx, &collection, id)
            .await
            .or_status()?;
        Ok(Response::new(super::leads::duplicates_out(d)))
    }

    async fn start_duplicate_scan(
        &self,
        r: Request<pb::StartDuplicateScanRequest>,
    ) -> Result<Response<lro::Operation>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let id = scan::start(&ctx, r.get_ref().collection.trim())
            .await
            .or_status()?;
        let job = crm_core::jobs::get(&ctx.db.conn, ctx.tenant(), id)
            .await
            .or_status()?
            .ok_or_else(|| Error::internal("the scan's job vanished"))
            .or_status()?;
        Ok(Response::new(super::operations::operation(&job)))
    }

    async fn list_duplicate_pairs(
        &self,
        r: Request<pb::ListDuplicatePairsRequest>,
    ) -> Result<Response<pb::ListDuplicatePairsResponse>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let q = r.into_inner();
        let scan = scan_id(&q.scan).or_status()?;
        // The scan must be the caller's tenant's (another's answers NOT_FOUND).
        crm_core::jobs::get(&ctx.db.conn, ctx.tenant(), scan)
            .await
            .or_status()?
            .filter(|j| j.kind == scan::SCAN_JOB)
            .ok_or_else(|| Error::not_found(format!("operations/{scan}")))
            .or_status()?;
        let mut filter = format!("scan = \"operations/{scan}\"");
        if !q.filter.trim().is_empty() {
            filter = format!("{filter} AND ({})", q.filter);
        }
        let page = ctx
            .list::<DuplicatePair>(&ListParams {
                page_size: q.page_size,
                page_token: q.page_token,
                filter,
                order_by: String::new(),
                parent: None,
            })
            .await
            .or_status()?;
        let mut pairs = Vec::with_capacity(page.items.len());
        for p in page.items {
            let (Ok((a_c, a)), Ok((b_c, b))) = (
                record_name("record", &p.data.record),
                record_name("other", &p.data.other),
            ) else {
                continue;
            };
            if !dedupe::readable(&ctx, &a_c, a).await || !dedupe::readable(&ctx, &b_c, b).await {
                continue;
            }
            let mut c = DuplicateCandidate {
                record: p.data.other.clone(),
                evidence: p.data.evidence,
                ..Default::default()
            };
            dedupe::redact(&ctx, &a_c, &mut c);
            pairs.push(pb::DuplicatePair {
                name: name(DuplicatePair::COLLECTION, Some(p.meta.id)),
                scan: p.data.scan,
                record: p.data.record,
                other: p.data.other,
                score: p.data.score,
                decision: p.data.decision,
                evidence: super::leads::evidence_out(c.evidence),
                create_time: Some(ts(p.meta.create_time)),
            });
        }
        Ok(Response::new(pb::ListDuplicatePairsResponse {
            pairs,
            next_page_token: page.next_page_token,
        }))
    }
}
