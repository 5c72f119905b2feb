//! Opportunities: a potential deal with an account, created on lead conversion (O5). Minimal
//! for now — name, account, contact, the lead it came from, stage, amount, expected close —
//! and grown by the pipeline (O6: sales processes, stage rules, team selling, forecasts).

use crm_core::error::Result;
use crm_core::registry::SchemaChange;
use crm_core::resource::{FieldSpec, Kind, Resource};
use crm_core::validate::{self, MAX_SHORT_CHARS, Violations};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

crm_core::named_enum! {
    /// Where an opportunity stands (the pipeline will make stages configurable).
    pub enum OpportunityStage {
        /// Just opened.
        Prospecting = "PROSPECTING",
        /// Need, budget and authority being confirmed.
        Qualification = "QUALIFICATION",
        /// An offer is out.
        Proposal = "PROPOSAL",
        /// Terms under discussion.
        Negotiation = "NEGOTIATION",
        /// Won.
        Won = "WON",
        /// Lost.
        Lost = "LOST"
    }
}

/// An exact amount of money: integer minor units of an ISO 4217 currency.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Amount {
    /// ISO 4217 code, upper case.
    pub currency_code: String,
    /// Minor units (cents for EUR, yen for JPY).
    pub minor: i64,
}

/// A potential deal.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Opportunity {
    /// Required.
    pub display_name: String,
    /// The account the deal is with.
    pub account: Option<Uuid>,
    /// The main contact.
    pub contact: Option<Uuid>,
    /// The lead it was converted from.
    pub lead: Option<Uuid>,
    /// Stage.
    pub stage: OpportunityStage,
    /// Expected amount, when known.
    pub amount: Option<Amount>,
    /// Expected close date.
    pub close_date: Option<chrono::NaiveDate>,
    /// Owning user.
    pub owner: Option<Uuid>,
    /// Territory.
    pub territory: Option<Uuid>,
}

impl Resource for Opportunity {
    const COLLECTION: &'static str = "opportunities";
    const TABLE: &'static str = "opportunities";
    const OWNED: bool = true;
    const FIELDS: &'static [FieldSpec] = &[
        FieldSpec::new("display_name", "display_name", Kind::Text).sort(),
        FieldSpec::new("account", "account_id", Kind::Ref("accounts")).filter(),
        FieldSpec::new("contact", "contact_id", Kind::Ref("contacts")).filter(),
        FieldSpec::new("lead", "lead_id", Kind::Ref("leads")).filter(),
        FieldSpec::new("stage", "stage", Kind::Enum(OpportunityStage::NAMES)).sort(),
        FieldSpec::new("amount", "amount", Kind::Json),
        FieldSpec::new("close_date", "close_date", Kind::Date).sort(),
        FieldSpec::new("owner", "owner_id", Kind::Ref("users")).filter(),
        FieldSpec::new("territory", "territory_id", Kind::Ref("territories")).filter(),
    ];

    fn validate(&mut self) -> Result<()> {
        let mut v = Violations::new();
        if let Some(s) = v.check(validate::text(
            "display_name",
            &self.display_name,
            MAX_SHORT_CHARS,
            true,
        )) {
            self.display_name = s;
        }
        if let Some(a) = &mut self.amount {
            a.currency_code = a.currency_code.trim().to_ascii_uppercase();
            if a.minor < 0 {
                v.add("amount", "must not be negative");
            }
            if iso_currency::Currency::from_code(&a.currency_code).is_none() {
                v.add("amount.currency_code", "is not an ISO 4217 currency code");
            }
        }
        v.into_result()
    }
}

/// The opportunities table.
pub const SCHEMA: SchemaChange = SchemaChange::new(
    "m20261125_100003_opportunities",
    &[
        crm_core::resource_table!(
            "opportunities",
            "display_name TEXT NOT NULL, account_id UUID NULL, contact_id UUID NULL, \
             lead_id UUID NULL, stage TEXT NOT NULL, amount TEXT NOT NULL, \
             close_date DATE NULL, owner_id UUID NULL, \
             territory_id UUID NULL"
        ),
        "CREATE INDEX opportunities_account ON opportunities (tenant_id, account_id, id)",
        "CREATE INDEX opportunities_owner ON opportunities (tenant_id, owner_id, id)",
    ],
);
