//! The crate's stored resources: the tenant's RFM configurations, RFM runs and their
//! per-customer results, with their field tables and schema.

use crate::rfm::{self, RfmConfig};
use crate::value::ValueModel;
use chrono::{DateTime, Utc};
use crm_core::error::{Error, Result};
use crm_core::registry::SchemaChange;
use crm_core::resource::{FieldSpec, Kind, Resource};
use crm_core::validate::{self, MAX_SHORT_CHARS, Violations};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;

/// A tenant's RFM and value configuration (A1, A2). Several may be kept; a run names the one
/// it uses (or runs with the defaults). Every change is audited, and the record's revision is
/// the version of its value weights, so a result always says which weights made it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RfmSettings {
    /// A name for people.
    pub display_name: String,
    /// Bins, binning, monetary basis and segment map (JSON).
    pub rfm: RfmConfig,
    /// The value weights (JSON). Its `version` is set from the record's revision.
    pub value_model: ValueModel,
    /// The tenant's IANA time zone for reports (default `UTC`).
    pub time_zone: String,
}

impl RfmSettings {
    /// Checks the pure parts; errors name `rfm.<field>` and `value_model.<field>`.
    pub fn check(&self) -> crate::Result<()> {
        let mut violations = Vec::new();
        if let Err(e) = self.rfm.validate() {
            violations.extend(e.in_field("rfm").violations);
        }
        if let Err(e) = self.value_model.validate() {
            violations.extend(e.in_field("value_model").violations);
        }
        if !self.time_zone.is_empty()
            && let Err(e) = crate::report::parse_time_zone("time_zone", &self.time_zone)
        {
            violations.extend(e.violations);
        }
        if violations.is_empty() {
            Ok(())
        } else {
            Err(crate::Error { violations })
        }
    }
}

impl Resource for RfmSettings {
    const COLLECTION: &'static str = "rfmConfigs";
    const TABLE: &'static str = "rfm_configs";
    const DEFAULT_ORDER: &'static str = "display_name";
    const FIELDS: &'static [FieldSpec] = &[
        FieldSpec::new("display_name", "display_name", Kind::Text).sort(),
        FieldSpec::new("rfm", "rfm", Kind::Json),
        FieldSpec::new("value_model", "value_model", Kind::Json),
        FieldSpec::new("time_zone", "time_zone", Kind::Text),
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
        if let Some(s) = v.check(validate::text("time_zone", &self.time_zone, 100, false)) {
            self.time_zone = s;
        }
        v.into_result()?;
        self.check().map_err(Error::from)
    }
}

crm_core::named_enum! {
    /// Where an RFM run stands.
    pub enum RunState {
        /// Computing (or waiting for its job to be claimed).
        Running = "RUNNING",
        /// Done: its results are complete and readable.
        Succeeded = "SUCCEEDED",
        /// Failed or cancelled: its results are not readable.
        Failed = "FAILED"
    }
}

/// What a run read and produced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunStats {
    /// Customers (live contacts) in the population.
    pub customers: i64,
    /// Customers with at least one purchase in the period.
    pub scored: i64,
    /// Customers without any order in the period.
    pub no_orders: i64,
    /// Customers whose orders in the period are all refunds (returned) or zero.
    pub no_purchases: i64,
    /// Orders of the period read (cancelled orders are never read).
    pub orders_in_period: i64,
    /// Orders dated after `as_of`, left out.
    pub future_dated_orders: i64,
    /// Orders in the period without a contact (account-only orders), left out.
    pub orders_without_contact: i64,
}

/// One RFM (+ value) run of a tenant: the period, the configuration it used (a snapshot),
/// its state and what it produced. Written by the run's use case and its job only.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RfmRun {
    /// The configuration used, if not the defaults.
    pub config: Option<Uuid>,
    /// The configuration's revision when the run started (the value model's version).
    pub config_revision: i64,
    /// The configuration as used (JSON snapshot of [`RfmSettings`]).
    pub settings: RfmSettings,
    /// First instant of the period.
    pub period_from: Option<DateTime<Utc>>,
    /// The as-of instant.
    pub as_of: Option<DateTime<Utc>>,
    /// Where the run stands.
    pub state: RunState,
    /// The job computing it (`operations/{id}`).
    pub operation: String,
    /// What it read and produced.
    pub stats: RunStats,
    /// Why it failed.
    pub error: String,
    /// When it ended.
    pub finish_time: Option<DateTime<Utc>>,
}

impl Resource for RfmRun {
    const COLLECTION: &'static str = "rfmRuns";
    const TABLE: &'static str = "rfm_runs";
    const FIELDS: &'static [FieldSpec] = &[
        FieldSpec::new("config", "config_id", Kind::Ref("rfmConfigs")).filter(),
        FieldSpec::new("config_revision", "config_revision", Kind::Int),
        FieldSpec::new("settings", "settings", Kind::Json),
        FieldSpec::new("period_from", "period_from", Kind::Time).sort(),
        FieldSpec::new("as_of", "as_of", Kind::Time).sort(),
        FieldSpec::new("state", "state", Kind::Enum(RunState::NAMES)).filter(),
        FieldSpec::new("operation", "operation", Kind::Text),
        FieldSpec::new("stats", "stats", Kind::Json),
        FieldSpec::new("error", "error", Kind::Text),
        FieldSpec::new("finish_time", "finish_time", Kind::Time).sort(),
    ];

    fn validate(&mut self) -> Result<()> {
        let (Some(from), Some(as_of)) = (self.period_from, self.as_of) else {
            return Err(Error::invalid("as_of", "the period is required"));
        };
        rfm::Period { from, as_of }
            .validate()
            .map_err(Error::from)?;
        self.settings
            .check()
            .map_err(|e| Error::from(e.in_field("settings")))
    }
}

crm_core::named_enum! {
    /// Why a customer has or has no scores.
    pub enum ResultStatus {
        /// At least one purchase in the period.
        Scored = "SCORED",
        /// No order in the period.
        NoOrders = "NO_ORDERS",
        /// Orders in the period, but only refunds or zero amounts.
        NoPurchases = "NO_PURCHASES"
    }
}

impl From<rfm::RfmStatus> for ResultStatus {
    fn from(s: rfm::RfmStatus) -> Self {
        match s {
            rfm::RfmStatus::Scored => Self::Scored,
            rfm::RfmStatus::NoOrders => Self::NoOrders,
            rfm::RfmStatus::NoPurchases => Self::NoPurchases,
        }
    }
}

/// One measure's share of a value score.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ValueContribution {
    /// The measure (`recency`, `frequency`, `monetary`, `margin`, `tenure`, `service_cost`).
    pub measure: String,
    /// Its weight.
    pub weight: f64,
    /// The measure normalised to 0..=1.
    pub normalised: f64,
    /// What it added to the score.
    pub contribution: f64,
    /// The customer has no value for it.
    pub missing: bool,
}

/// A customer's value score (A2), explained.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ValueResult {
    /// The score, the sum of the contributions.
    pub score: f64,
    /// The weights' version (the configuration's revision; 1 for the defaults).
    pub model_version: i64,
    /// Per measure.
    pub contributions: Vec<ValueContribution>,
}

/// One customer's result of one run: raw measures beside the scores. Its record scope and
/// grants are its contact's: who may not read the contact may not read its result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RfmResult {
    /// The run.
    pub run: Option<Uuid>,
    /// The customer (a contact).
    pub customer: Option<Uuid>,
    /// Scored or why not.
    pub status: ResultStatus,
    /// Whole days from the last purchase to `as_of` (0 without a purchase: see `last_purchase`).
    pub recency_days: i64,
    /// Time of the last purchase in the period.
    pub last_purchase: Option<DateTime<Utc>>,
    /// Distinct purchases in the period.
    pub frequency: i64,
    /// Distinct orders in the period, refunds included.
    pub orders: i64,
    /// Net amount per currency, minor units.
    pub monetary: BTreeMap<String, i64>,
    /// Recency score (0 when not scored).
    pub r: i64,
    /// Frequency score (0 when not scored).
    pub f: i64,
    /// Monetary score (0 when not scored).
    pub m: i64,
    /// Monetary score per currency (per-currency basis).
    pub m_by_currency: BTreeMap<String, i64>,
    /// The converted monetary sum (converted basis), minor units of the scoring currency.
    pub monetary_converted: Option<i64>,
    /// The segment (empty when not scored).
    pub segment: String,
    /// The value score.
    pub value: ValueResult,
}

impl Resource for RfmResult {
    const COLLECTION: &'static str = "rfmResults";
    const PERMISSION: &'static str = "contacts";
    const TABLE: &'static str = "rfm_results";
    const SCOPE_PARENT: Option<(&'static str, &'static str)> = Some(("customer_id", "contacts"));
    const DEFAULT_ORDER: &'static str = "create_time";
    const FIELDS: &'static [FieldSpec] = &[
        FieldSpec::new("run", "run_id", Kind::Ref("rfmRuns")).filter(),
        FieldSpec::new("customer", "customer_id", Kind::Ref("contacts")).filter(),
        FieldSpec::new("status", "status", Kind::Enum(ResultStatus::NAMES)).filter(),
        FieldSpec::new("recency_days", "recency_days", Kind::Int).sort(),
        FieldSpec::new("last_purchase", "last_purchase", Kind::Time).sort(),
        FieldSpec::new("frequency", "frequency", Kind::Int).sort(),
        FieldSpec::new("orders", "orders", Kind::Int).sort(),
        FieldSpec::new("monetary", "monetary", Kind::Json),
        FieldSpec::new("r", "r", Kind::Int).sort(),
        FieldSpec::new("f", "f", Kind::Int).sort(),
        FieldSpec::new("m", "m", Kind::Int).sort(),
        FieldSpec::new("m_by_currency", "m_by_currency", Kind::Json),
        FieldSpec::new("monetary_converted", "monetary_converted", Kind::Json),
        FieldSpec::new("segment", "segment", Kind::Text).sort(),
        FieldSpec::new("value", "value", Kind::Json),
    ];

    fn validate(&mut self) -> Result<()> {
        let mut v = Violations::new();
        if self.run.is_none() {
            v.add("run", "is required");
        }
        if self.customer.is_none() {
            v.add("customer", "is required");
        }
        v.into_result()
    }
}

/// The crate's schema changes, in order.
pub const SCHEMA: &[SchemaChange] = &[SchemaChange::new(
    "m20261125_200001_rfm",
    &[
        crm_core::resource_table!(
            "rfm_configs",
            "display_name TEXT NOT NULL, rfm TEXT NOT NULL, value_model TEXT NOT NULL, \
             time_zone TEXT NOT NULL"
        ),
        "CREATE INDEX rfm_configs_name ON rfm_configs (tenant_id, display_name, id)",
        crm_core::resource_table!(
            "rfm_runs",
            "config_id UUID NULL, config_revision BIGINT NOT NULL, settings TEXT NOT NULL, \
             period_from TIMESTAMPTZ NULL, as_of TIMESTAMPTZ NULL, state TEXT NOT NULL, \
             operation TEXT NOT NULL, stats TEXT NOT NULL, error TEXT NOT NULL, \
             finish_time TIMESTAMPTZ NULL"
        ),
        "CREATE INDEX rfm_runs_state ON rfm_runs (tenant_id, state, create_time, id)",
        // At most one running run per tenant: a rebuild started twice never runs twice.
        "CREATE UNIQUE INDEX rfm_runs_running ON rfm_runs (tenant_id) \
         WHERE state = 'RUNNING' AND delete_time IS NULL",
        crm_core::resource_table!(
            "rfm_results",
            "run_id UUID NULL, customer_id UUID NULL, status TEXT NOT NULL, \
             recency_days BIGINT NOT NULL, last_purchase TIMESTAMPTZ NULL, \
             frequency BIGINT NOT NULL, orders BIGINT NOT NULL, monetary TEXT NOT NULL, \
             r BIGINT NOT NULL, f BIGINT NOT NULL, m BIGINT NOT NULL, \
             m_by_currency TEXT NOT NULL, monetary_converted TEXT NOT NULL, \
             segment TEXT NOT NULL, value TEXT NOT NULL"
        ),
        "CREATE INDEX rfm_results_run ON rfm_results (tenant_id, run_id, customer_id)",
        "CREATE INDEX rfm_results_segment ON rfm_results (tenant_id, run_id, segment, id)",
    ],
)];
