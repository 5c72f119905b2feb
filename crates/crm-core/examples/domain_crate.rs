//! How a domain crate plugs into crm-core, as docs/extending.md describes it: a resource
//! with its field table and a typed status, its registration, a use case with several writes
//! in one transaction, a write hook, and a custom read under the caller's permissions.
//!
//! The `leads` table comes from the schema change the crate registers; this example compiles
//! against the real API and, run, installs the registry with its collection and change:
//! `cargo run -p crm-core --example domain_crate`.

use crm_core::access::Action;
use crm_core::error::{Error, Result};
use crm_core::journal::AuditAction;
use crm_core::model::{Account, Contact, Position};
use crm_core::registry::{self, RegistryBuilder, SchemaChange};
use crm_core::resource::{FieldSpec, HookFuture, Kind, Record, Resource};
use crm_core::service::{Ctx, Tx};
use crm_core::validate::{self, Violations};
use sea_orm::ConnectionTrait;
use sea_orm::sea_query::{Alias, Expr, ExprTrait, Query};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

crm_core::named_enum! {
    /// Where a lead stands; stored and filtered by name.
    pub enum LeadStatus { New = "NEW", Working = "WORKING", Converted = "CONVERTED" }
}

/// A lead: plain data, `#[serde(default)]`, names as on the wire.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Lead {
    pub display_name: String,
    pub company: String,
    pub status: LeadStatus,
    pub account: Option<Uuid>,
    pub owner: Option<Uuid>,
    pub territory: Option<Uuid>,
}

impl Resource for Lead {
    const COLLECTION: &'static str = "leads";
    const TABLE: &'static str = "leads";
    /// Owned records: `owner` and `territory` give the record-level scope.
    const OWNED: bool = true;
    const FIELDS: &'static [FieldSpec] = &[
        FieldSpec::new("display_name", "display_name", Kind::Text).sort(),
        FieldSpec::new("company", "company", Kind::Text).sort(),
        FieldSpec::new("status", "status", Kind::Enum(LeadStatus::NAMES)).filter(),
        FieldSpec::new("account", "account_id", Kind::Ref("accounts")).filter(),
        FieldSpec::new("owner", "owner_id", Kind::Ref("users")).filter(),
        FieldSpec::new("territory", "territory_id", Kind::Ref("territories")).filter(),
    ];

    fn validate(&mut self) -> Result<()> {
        let mut v = Violations::new();
        if let Some(s) = v.check(validate::text(
            "display_name",
            &self.display_name,
            300,
            true,
        )) {
            self.display_name = s;
        }
        if let Some(s) = v.check(validate::text("company", &self.company, 300, false)) {
            self.company = s;
        }
        v.into_result()
    }

    /// A hook runs inside the write's transaction, with its handle: here a converted lead
    /// must name the account it became.
    fn before_write<'a>(
        _tx: &'a Tx<'a>,
        _id: Uuid,
        _old: Option<&'a Self>,
        data: &'a mut Self,
    ) -> HookFuture<'a> {
        Box::pin(async move {
            if data.status == LeadStatus::Converted && data.account.is_none() {
                return Err(Error::invalid(
                    "account",
                    "a converted lead names its account",
                ));
            }
            Ok(())
        })
    }

    fn after_write<'a>(
        _tx: &'a Tx<'a>,
        _action: AuditAction,
        _rec: &'a Record<Self>,
    ) -> HookFuture<'a> {
        Box::pin(async { Ok(()) })
    }
}

/// The crate's registration, called by the gateway at start.
pub fn register(r: &mut RegistryBuilder) {
    r.resource::<Lead>();
    r.schema(SchemaChange::new("m20261125_100001_leads", LEADS_DDL));
}

/// The crate's first schema change: portable DDL (`UUID` and `TIMESTAMPTZ` become `BLOB` and
/// `TEXT` on SQLite); `tenant_id` first in every key; `resource_table!` adds the columns
/// every resource table starts with.
const LEADS_DDL: &[&str] = &[
    crm_core::resource_table!(
        "leads",
        "display_name TEXT NOT NULL, company TEXT NOT NULL, status TEXT NOT NULL, \
         account_id UUID NULL, owner_id UUID NULL, territory_id UUID NULL"
    ),
    "CREATE INDEX leads_status ON leads (tenant_id, status, id)",
];

/// A use case with several writes: the account, the contact, the position and the lead's
/// new status commit together or not at all. Each write is permission-checked, audited
/// and evented as if it had been made alone.
pub async fn convert(ctx: &Ctx, lead: Uuid) -> Result<(Uuid, Uuid)> {
    let tx = ctx.begin().await?;
    let l = tx.get::<Lead>(lead).await?;
    let account = tx
        .create(Account {
            display_name: l.data.company.clone(),
            ..Default::default()
        })
        .await?;
    let contact = tx
        .create(Contact {
            display_name: l.data.display_name.clone(),
            ..Default::default()
        })
        .await?;
    tx.create(Position {
        contact: Some(contact.meta.id),
        account: Some(account.meta.id),
        ..Default::default()
    })
    .await?;
    let change = Lead {
        status: LeadStatus::Converted,
        account: Some(account.meta.id),
        ..Default::default()
    };
    tx.update(
        lead,
        change,
        &["status".into(), "account".into()],
        &l.meta.etag(),
    )
    .await?;
    tx.commit().await?;
    Ok((account.meta.id, contact.meta.id))
}

/// A custom read (open leads per owner) under the caller's record scope: the engine's
/// condition is added to the crate's own query; no second permission model.
pub async fn open_leads_per_owner(ctx: &Ctx) -> Result<Vec<(Uuid, i64)>> {
    let leads = registry::registry()
        .collection(Lead::COLLECTION)
        .ok_or_else(|| Error::internal("leads are not registered"))?;
    if !ctx.may_read_field(leads, "owner") {
        return Ok(Vec::new());
    }
    let mut q = Query::select();
    q.column(Alias::new("owner_id"))
        .expr_as(Expr::col(Alias::new("id")).count(), Alias::new("n"))
        .from(Alias::new(leads.table))
        .and_where(Expr::col(Alias::new("tenant_id")).eq(ctx.tenant()))
        .and_where(Expr::col(Alias::new("delete_time")).is_null())
        .and_where(Expr::col(Alias::new("status")).ne(LeadStatus::Converted.as_str()))
        .group_by_col(Alias::new("owner_id"));
    if let Some(scope) = ctx.scope_filter(leads, Action::Read).await? {
        q.cond_where(scope);
    }
    let mut out = Vec::new();
    for row in ctx.db.conn.query_all(&q).await? {
        if let Some(owner) = row.try_get::<Option<Uuid>>("", "owner_id")? {
            out.push((owner, row.try_get::<i64>("", "n")?));
        }
    }
    Ok(out)
}

fn main() {
    match registry::install(register) {
        Ok(r) => {
            let names: Vec<&str> = r.collections().iter().map(|c| c.name).collect();
            println!("registered: {}", names.join(", "));
        }
        Err(e) => {
            eprintln!("registry: {e}");
            std::process::exit(1);
        }
    }
}
