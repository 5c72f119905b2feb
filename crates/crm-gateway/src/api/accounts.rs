//! AccountService.

use super::{Gateway, Wire};
use crate::convert::{self, hidden, name, reference, ts};
use crm_api::v1 as pb;
use crm_api::v1::account_service_server::AccountService;
use crm_core::error::Result;
use crm_core::model;
use crm_core::resource::Record;

pub struct Accounts(pub Gateway);

impl Wire<model::Account> for pb::Account {
    const FIELD: &'static str = "account";

    fn into_domain(self) -> Result<model::Account> {
        Ok(model::Account {
            display_name: self.display_name,
            industry: self.industry,
            region: self.region,
            employee_count: self.employee_count,
            parent: reference("parent", "accounts", &self.parent)?,
            owner: reference("owner", "users", &self.owner)?,
            territory: reference("territory", "territories", &self.territory)?,
            website: self.website,
            addresses: self
                .addresses
                .into_iter()
                .map(convert::address_in)
                .collect(),
            tags: self.tags,
            custom_fields: convert::custom_in(self.custom_fields)?,
        })
    }

    fn from_record(r: Record<model::Account>) -> Self {
        let d = r.data;
        pb::Account {
            name: name("accounts", Some(r.meta.id)),
            display_name: d.display_name,
            industry: d.industry,
            region: d.region,
            employee_count: d.employee_count,
            parent: name("accounts", d.parent),
            owner: name("users", d.owner),
            territory: name("territories", d.territory),
            website: d.website,
            addresses: d.addresses.into_iter().map(convert::address_out).collect(),
            tags: d.tags,
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

crate::service_impl!(AccountService, Accounts, [
    model::Account => pb::Account {
        create_account(pb::CreateAccountRequest, account),
        get_account(pb::GetAccountRequest),
        list_accounts(pb::ListAccountsRequest => ListAccountsResponse . accounts),
        update_account(pb::UpdateAccountRequest),
        delete_account(pb::DeleteAccountRequest)
    }
]);

use pb::ListAccountsResponse;
