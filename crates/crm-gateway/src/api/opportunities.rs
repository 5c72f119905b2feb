//! OpportunityService: deals (crm-operational; minimal until the pipeline).

use super::{Gateway, Wire};
use crate::convert::{date, from_date, from_money, hidden, money, name, reference, ts};
use crm_api::v1 as pb;
use crm_api::v1::opportunity_service_server::OpportunityService;
use crm_core::error::{Error, Result};
use crm_core::resource::Record;
use crm_operational::opportunity::{Amount, Opportunity, OpportunityStage};
use pb::ListOpportunitiesResponse;

pub struct Opportunities(pub Gateway);

fn stage_in(s: i32) -> Result<OpportunityStage> {
    use pb::OpportunityStage as P;
    Ok(match P::try_from(s) {
        Ok(P::Unspecified | P::Prospecting) => OpportunityStage::Prospecting,
        Ok(P::Qualification) => OpportunityStage::Qualification,
        Ok(P::Proposal) => OpportunityStage::Proposal,
        Ok(P::Negotiation) => OpportunityStage::Negotiation,
        Ok(P::Won) => OpportunityStage::Won,
        Ok(P::Lost) => OpportunityStage::Lost,
        Err(_) => {
            return Err(Error::invalid(
                "stage",
                format!("{s} is not a defined value"),
            ));
        }
    })
}

fn stage_out(s: OpportunityStage) -> i32 {
    use pb::OpportunityStage as P;
    (match s {
        OpportunityStage::Prospecting => P::Prospecting,
        OpportunityStage::Qualification => P::Qualification,
        OpportunityStage::Proposal => P::Proposal,
        OpportunityStage::Negotiation => P::Negotiation,
        OpportunityStage::Won => P::Won,
        OpportunityStage::Lost => P::Lost,
    }) as i32
}

impl Wire<Opportunity> for pb::Opportunity {
    const FIELD: &'static str = "opportunity";

    fn into_domain(self) -> Result<Opportunity> {
        let amount = match &self.amount {
            Some(m) => {
                let code = m.currency_code.trim().to_ascii_uppercase();
                Some(Amount {
                    minor: from_money("amount", m, Some(&code))?,
                    currency_code: code,
                })
            }
            None => None,
        };
        Ok(Opportunity {
            display_name: self.display_name,
            account: reference("account", "accounts", &self.account)?,
            contact: reference("contact", "contacts", &self.contact)?,
            lead: reference("lead", "leads", &self.lead)?,
            stage: stage_in(self.stage)?,
            amount,
            close_date: from_date("close_date", self.close_date)?,
            owner: reference("owner", "users", &self.owner)?,
            territory: reference("territory", "territories", &self.territory)?,
        })
    }

    fn from_record(r: Record<Opportunity>) -> Self {
        let d = r.data;
        pb::Opportunity {
            name: name("opportunities", Some(r.meta.id)),
            display_name: d.display_name,
            account: name("accounts", d.account),
            contact: name("contacts", d.contact),
            lead: name("leads", d.lead),
            stage: stage_out(d.stage),
            amount: d.amount.map(|a| money(&a.currency_code, a.minor)),
            close_date: date(d.close_date),
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

crate::service_impl!(OpportunityService, Opportunities, [
    Opportunity => pb::Opportunity {
        create_opportunity(pb::CreateOpportunityRequest, opportunity),
        get_opportunity(pb::GetOpportunityRequest),
        list_opportunities(pb::ListOpportunitiesRequest => ListOpportunitiesResponse . opportunities),
        update_opportunity(pb::UpdateOpportunityRequest),
        delete_opportunity(pb::DeleteOpportunityRequest)
    }
]);
