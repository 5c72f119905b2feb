//! MailboxService: a tenant's IMAP accounts, polled into the timeline (crm-collaborative).

use super::{Gateway, Wire};
use crate::convert::{hidden, name, opt_ts, reference, ts};
use crate::status::OrStatus;
use crm_api::v1 as pb;
use crm_api::v1::mailbox_service_server::MailboxService;
use crm_collaborative::mailbox::{self, MailboxAccount, OUTPUT_ONLY, Security};
use crm_core::error::{Error, Result};
use crm_core::resource::{Record, Resource};
use tonic::{Request, Response, Status};

pub struct Mailboxes(pub Gateway);

fn security_in(v: i32) -> Result<Security> {
    use pb::MailboxSecurity as P;
    Ok(match P::try_from(v) {
        Ok(P::Unspecified | P::Tls) => Security::Tls,
        Ok(P::Plain) => Security::Plain,
        Err(_) => return Err(crate::convert::unknown_enum("security", v)),
    })
}

fn security_out(s: Security) -> i32 {
    (match s {
        Security::Tls => pb::MailboxSecurity::Tls,
        Security::Plain => pb::MailboxSecurity::Plain,
    }) as i32
}

impl Wire<MailboxAccount> for pb::MailboxAccount {
    const FIELD: &'static str = "account";

    fn into_domain(self) -> Result<MailboxAccount> {
        Ok(MailboxAccount {
            display_name: self.display_name,
            host: self.host,
            port: i64::from(self.port),
            security: security_in(self.security)?,
            tls_ca_certificates: self.tls_ca_certificates,
            username: self.username,
            password: self.password,
            folder: self.folder,
            poll_interval_seconds: i64::from(self.poll_interval_seconds),
            enabled: self.enabled,
            owner: reference("owner", "users", &self.owner)?,
            open_cases: self.open_cases,
            case_category: self.case_category,
            ..Default::default()
        })
    }

    fn from_record(r: Record<MailboxAccount>) -> Self {
        let d = r.data;
        pb::MailboxAccount {
            name: name(MailboxAccount::COLLECTION, Some(r.meta.id)),
            display_name: d.display_name,
            host: d.host,
            port: i32::try_from(d.port).unwrap_or(0),
            security: security_out(d.security),
            tls_ca_certificates: d.tls_ca_certificates,
            username: d.username,
            // Never returned, not even sealed.
            password: String::new(),
            has_password: !d.password.is_empty(),
            folder: d.folder,
            poll_interval_seconds: i32::try_from(d.poll_interval_seconds).unwrap_or(0),
            enabled: d.enabled,
            owner: name("users", d.owner),
            uid_validity: d.uid_validity,
            last_uid: d.last_uid,
            messages_ingested: d.messages_ingested,
            last_error: d.last_error,
            last_error_time: opt_ts(d.last_error_time),
            last_success_time: opt_ts(d.last_success_time),
            create_time: Some(ts(r.meta.create_time)),
            update_time: Some(ts(r.meta.update_time)),
            etag: r.meta.etag(),
            hidden_fields: hidden(&r.hidden),
            open_cases: d.open_cases,
            case_category: d.case_category,
        }
    }

    fn name(&self) -> &str {
        &self.name
    }
    fn etag(&self) -> &str {
        &self.etag
    }
}

/// Refuses update masks naming output-only fields (the poller's), or `has_password`.
fn check_mask(mask: &Option<prost_types::FieldMask>) -> Result<()> {
    for p in mask.iter().flat_map(|m| m.paths.iter()) {
        if OUTPUT_ONLY.contains(&p.as_str()) || p == "has_password" {
            return Err(Error::invalid("update_mask", format!("{p} is output only")));
        }
    }
    Ok(())
}

#[tonic::async_trait]
impl MailboxService for Mailboxes {
    async fn create_mailbox_account(
        &self,
        r: Request<pb::CreateMailboxAccountRequest>,
    ) -> Result<Response<pb::MailboxAccount>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let r = r.into_inner();
        Ok(Response::new(
            super::create::<MailboxAccount, pb::MailboxAccount>(&ctx, r.account, &r.request_id)
                .await?,
        ))
    }

    async fn get_mailbox_account(
        &self,
        r: Request<pb::GetMailboxAccountRequest>,
    ) -> Result<Response<pb::MailboxAccount>, Status> {
        let ctx = self.0.ctx(&r).await?;
        Ok(Response::new(
            super::get::<MailboxAccount, pb::MailboxAccount>(&ctx, &r.get_ref().name).await?,
        ))
    }

    async fn list_mailbox_accounts(
        &self,
        r: Request<pb::ListMailboxAccountsRequest>,
    ) -> Result<Response<pb::ListMailboxAccountsResponse>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let r = r.into_inner();
        let p = super::params(r.page_size, r.page_token, r.filter, r.order_by);
        let (accounts, next_page_token) =
            super::list::<MailboxAccount, pb::MailboxAccount>(&ctx, p).await?;
        Ok(Response::new(pb::ListMailboxAccountsResponse {
            accounts,
            next_page_token,
        }))
    }

    async fn update_mailbox_account(
        &self,
        r: Request<pb::UpdateMailboxAccountRequest>,
    ) -> Result<Response<pb::MailboxAccount>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let r = r.into_inner();
        check_mask(&r.update_mask).or_status()?;
        Ok(Response::new(
            super::update::<MailboxAccount, pb::MailboxAccount>(&ctx, r.account, r.update_mask)
                .await?,
        ))
    }

    async fn delete_mailbox_account(
        &self,
        r: Request<pb::DeleteMailboxAccountRequest>,
    ) -> Result<Response<()>, Status> {
        let ctx = self.0.ctx(&r).await?;
        super::delete::<MailboxAccount, pb::MailboxAccount>(
            &ctx,
            &r.get_ref().name,
            &r.get_ref().etag,
        )
        .await?;
        Ok(Response::new(()))
    }

    async fn poll_mailbox_account(
        &self,
        r: Request<pb::PollMailboxAccountRequest>,
    ) -> Result<Response<crm_api::google::longrunning::Operation>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let id = <pb::MailboxAccount as Wire<MailboxAccount>>::parse_id("name", &r.get_ref().name)
            .or_status()?;
        let job = mailbox::poll_now(&ctx, id).await.or_status()?;
        let job = crm_core::jobs::get(&ctx.db.conn, ctx.tenant(), job)
            .await
            .or_status()?
            .ok_or_else(|| Error::internal("the poll's job vanished"))
            .or_status()?;
        Ok(Response::new(super::operations::operation(&job)))
    }
}
