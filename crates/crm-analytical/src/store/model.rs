//! The crate's stored resources: the tenant's RFM configurations, RFM runs and their
//! per-customer results, with their field tables and schema.

use crate::lifecycle::{Stage, StageModel, TransitionRule};
use crate::rfm::{self, RfmConfig};
use crate::value::ValueModel;
use chrono::{DateTime, Utc};
use crm_core::error::{Error, Result};
use crm_core::registry::SchemaChange;
use crm_core::resource::{FieldSpec, HookFuture, Kind, Resource};
use crm_core::service::Tx;
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
    // A run's results are audited and evented as the run (`rfmRuns`): who started it, with
    // which settings, and its end.
    const DERIVED: bool = true;
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

/// A tenant's lifecycle model (A3): stages, the initial stage and transition rules, created
/// from a shipped template (`crm_process`, `relationship`) or written by the tenant. At most
/// one is active: evaluations use it, and activating one switches the others off in the same
/// transaction.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LifecycleModel {
    /// A name for people.
    pub display_name: String,
    /// The template it was created from (empty: written by the tenant). On create, a
    /// template with no stages given fills `stages`, `initial` and `transitions`.
    pub template: String,
    /// Stages in display order.
    pub stages: Vec<Stage>,
    /// Where new customers start.
    pub initial: String,
    /// Rules in priority order (first match wins).
    pub transitions: Vec<TransitionRule>,
    /// Whether evaluations use it.
    pub active: bool,
}

impl LifecycleModel {
    /// The pure model (its key is the template, or `custom`).
    pub fn stage_model(&self) -> StageModel {
        StageModel {
            key: if self.template.is_empty() {
                "custom".into()
            } else {
                self.template.clone()
            },
            stages: self.stages.clone(),
            initial: self.initial.clone(),
            transitions: self.transitions.clone(),
        }
    }
}

impl Resource for LifecycleModel {
    const COLLECTION: &'static str = "lifecycleModels";
    const TABLE: &'static str = "lifecycle_models";
    const DEFAULT_ORDER: &'static str = "display_name";
    const FIELDS: &'static [FieldSpec] = &[
        FieldSpec::new("display_name", "display_name", Kind::Text).sort(),
        FieldSpec::new("template", "template", Kind::Text).filter(),
        FieldSpec::new("stages", "stages", Kind::Json),
        FieldSpec::new("initial", "initial", Kind::Text),
        FieldSpec::new("transitions", "transitions", Kind::Json),
        FieldSpec::new("active", "active", Kind::Bool).filter(),
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
        self.template = self.template.trim().to_owned();
        if !self.template.is_empty() {
            match StageModel::template(&self.template) {
                None => v.add(
                    "template",
                    format!(
                        "unknown template {:?}: crm_process or relationship",
                        self.template
                    ),
                ),
                Some(t) if self.stages.is_empty() => {
                    self.stages = t.stages;
                    self.initial = t.initial;
                    self.transitions = t.transitions;
                }
                Some(_) => {}
            }
        }
        v.into_result()?;
        self.stage_model().validate().map_err(Error::from)
    }

    fn before_write<'a>(
        tx: &'a Tx<'a>,
        id: Uuid,
        _old: Option<&'a Self>,
        data: &'a mut Self,
    ) -> HookFuture<'a> {
        Box::pin(async move {
            if data.active {
                let off = LifecycleModel {
                    active: false,
                    ..Default::default()
                };
                crm_core::active::deactivate_others(tx, id, off).await?;
            }
            Ok(())
        })
    }
}

/// A customer's current lifecycle stage in a model. Its record scope and grants are its
/// contact's. Written by evaluations only.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LifecycleState {
    /// The customer (a contact).
    pub customer: Option<Uuid>,
    /// The model the stage belongs to.
    pub model: Option<Uuid>,
    /// The current stage's key.
    pub stage: String,
    /// When the customer entered it.
    pub enter_time: Option<DateTime<Utc>>,
    /// When the customer was last evaluated.
    pub evaluate_time: Option<DateTime<Utc>>,
}

impl Resource for LifecycleState {
    const COLLECTION: &'static str = "lifecycleStates";
    const PERMISSION: &'static str = "contacts";
    const TABLE: &'static str = "lifecycle_states";
    const SCOPE_PARENT: Option<(&'static str, &'static str)> = Some(("customer_id", "contacts"));
    const DEFAULT_ORDER: &'static str = "create_time";
    const FIELDS: &'static [FieldSpec] = &[
        FieldSpec::new("customer", "customer_id", Kind::Ref("contacts")).filter(),
        FieldSpec::new("model", "model_id", Kind::Ref("lifecycleModels")).filter(),
        FieldSpec::new("stage", "stage", Kind::Text).filter().sort(),
        FieldSpec::new("enter_time", "enter_time", Kind::Time).sort(),
        FieldSpec::new("evaluate_time", "evaluate_time", Kind::Time).sort(),
    ];

    fn validate(&mut self) -> Result<()> {
        let mut v = Violations::new();
        if self.customer.is_none() {
            v.add("customer", "is required");
        }
        if self.model.is_none() {
            v.add("model", "is required");
        }
        v.into_result()
    }
}

/// One stage change of a customer: from, to, why and when. Its record scope and grants are
/// its contact's. Entering a model's initial stage is recorded with an empty `from_stage`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LifecycleTransition {
    /// The customer (a contact).
    pub customer: Option<Uuid>,
    /// The model.
    pub model: Option<Uuid>,
    /// The stage left (empty on entering the model).
    pub from_stage: String,
    /// The stage entered.
    pub to_stage: String,
    /// Why: the rule's reason or its conditions.
    pub reason: String,
    /// Index of the rule that fired (-1 on entering the model).
    pub rule: i64,
    /// When.
    pub transition_time: Option<DateTime<Utc>>,
    /// Order among the transitions of one evaluation.
    pub step: i64,
}

impl Resource for LifecycleTransition {
    const COLLECTION: &'static str = "lifecycleTransitions";
    const PERMISSION: &'static str = "contacts";
    const TABLE: &'static str = "lifecycle_transitions";
    const SCOPE_PARENT: Option<(&'static str, &'static str)> = Some(("customer_id", "contacts"));
    const DEFAULT_ORDER: &'static str = "transition_time, create_time, step";
    // A transition is itself the record of a stage change (time, rule, reason), written
    // only by evaluations; the customer's stage (`lifecycleStates`) is audited and evented
    // when it changes.
    const DERIVED: bool = true;
    const FIELDS: &'static [FieldSpec] = &[
        FieldSpec::new("customer", "customer_id", Kind::Ref("contacts")).filter(),
        FieldSpec::new("model", "model_id", Kind::Ref("lifecycleModels")).filter(),
        FieldSpec::new("from_stage", "from_stage", Kind::Text).filter(),
        FieldSpec::new("to_stage", "to_stage", Kind::Text).filter(),
        FieldSpec::new("reason", "reason", Kind::Text),
        FieldSpec::new("rule", "rule", Kind::Int),
        FieldSpec::new("transition_time", "transition_time", Kind::Time)
            .filter()
            .sort(),
        FieldSpec::new("step", "step", Kind::Int).sort(),
    ];

    fn validate(&mut self) -> Result<()> {
        let mut v = Violations::new();
        if self.customer.is_none() {
            v.add("customer", "is required");
        }
        if self.model.is_none() {
            v.add("model", "is required");
        }
        v.into_result()
    }
}

/// A tenant's segment (A4): a rule in the API's filter language over contact fields, custom
/// fields (`custom.<key>`), RFM (`rfm.r`, `rfm.segment`...), value and lifecycle stage
/// (`lifecycle.stage`), and optionally a tag written to its members. The rule is
/// type-checked against the tenant's fields on every write (an unknown field is named).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Segment {
    /// A name for people.
    pub display_name: String,
    /// The AIP-160 rule; empty matches every contact.
    pub rule: String,
    /// A tag written to members and taken from those who leave (empty: none).
    pub tag: String,
    /// Members after the last refresh (written by refreshes).
    pub member_count: i64,
    /// When the last refresh ended (written by refreshes).
    pub refresh_time: Option<DateTime<Utc>>,
    /// The last refresh's operation, `operations/{id}` (written by refreshes).
    pub operation: String,
}

/// The fields of [`Segment`] only refreshes write.
pub const SEGMENT_OUTPUT_FIELDS: &[&str] = &["member_count", "refresh_time", "operation"];

/// Longest segment rule, in characters.
pub const MAX_RULE_CHARS: usize = 4000;

impl Resource for Segment {
    const COLLECTION: &'static str = "segments";
    const TABLE: &'static str = "segments";
    const DEFAULT_ORDER: &'static str = "display_name";
    const FIELDS: &'static [FieldSpec] = &[
        FieldSpec::new("display_name", "display_name", Kind::Text).sort(),
        FieldSpec::new("rule", "rule", Kind::Text),
        FieldSpec::new("tag", "tag", Kind::Text).filter(),
        // Written by refreshes only: the API refuses them in update masks.
        FieldSpec::new("member_count", "member_count", Kind::Int).sort(),
        FieldSpec::new("refresh_time", "refresh_time", Kind::Time),
        FieldSpec::new("operation", "operation", Kind::Text),
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
        if let Some(s) = v.check(validate::text("rule", &self.rule, MAX_RULE_CHARS, false)) {
            self.rule = s;
        }
        // One tag as contacts keep them (crm-core's tag rules), named `tag`.
        if let Some(t) = v.check(validate::text("tag", &self.tag, 64, false)) {
            if t.contains('|') {
                v.add("tag", "must not contain '|'");
            }
            self.tag = t.to_lowercase();
        }
        v.into_result()
    }

    fn before_write<'a>(
        tx: &'a Tx<'a>,
        _id: Uuid,
        old: Option<&'a Self>,
        data: &'a mut Self,
    ) -> HookFuture<'a> {
        Box::pin(async move {
            if old.is_some_and(|o| o.rule == data.rule) {
                return Ok(());
            }
            let catalog = super::segments::catalog(tx).await?;
            crate::segment::SegmentRule::compile(&data.rule, &catalog).map_err(Error::from)?;
            Ok(())
        })
    }
}

/// A contact's membership of a segment, kept by refreshes. Its record scope and grants are
/// its contact's: who may not read the contact does not see it among the members.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SegmentMember {
    /// The segment.
    pub segment: Option<Uuid>,
    /// The member (a contact).
    pub customer: Option<Uuid>,
    /// When the refresh that found it a member ran.
    pub enter_time: Option<DateTime<Utc>>,
}

impl Resource for SegmentMember {
    const COLLECTION: &'static str = "segmentMembers";
    const PERMISSION: &'static str = "contacts";
    const TABLE: &'static str = "segment_members";
    const SCOPE_PARENT: Option<(&'static str, &'static str)> = Some(("customer_id", "contacts"));
    const DEFAULT_ORDER: &'static str = "create_time";
    const FIELDS: &'static [FieldSpec] = &[
        FieldSpec::new("segment", "segment_id", Kind::Ref("segments")).filter(),
        FieldSpec::new("customer", "customer_id", Kind::Ref("contacts")).filter(),
        FieldSpec::new("enter_time", "enter_time", Kind::Time).sort(),
    ];

    fn validate(&mut self) -> Result<()> {
        let mut v = Violations::new();
        if self.segment.is_none() {
            v.add("segment", "is required");
        }
        if self.customer.is_none() {
            v.add("customer", "is required");
        }
        v.into_result()
    }
}

/// The crate's schema changes, in order.
pub const SCHEMA: &[SchemaChange] = &[
    SchemaChange::new(
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
    ),
    SchemaChange::new(
        "m20261125_200002_lifecycle",
        &[
            crm_core::resource_table!(
                "lifecycle_models",
                "display_name TEXT NOT NULL, template TEXT NOT NULL, stages TEXT NOT NULL, \
                 initial TEXT NOT NULL, transitions TEXT NOT NULL, active BOOLEAN NOT NULL"
            ),
            "CREATE INDEX lifecycle_models_active ON lifecycle_models (tenant_id, active, id)",
            crm_core::resource_table!(
                "lifecycle_states",
                "customer_id UUID NULL, model_id UUID NULL, stage TEXT NOT NULL, \
                 enter_time TIMESTAMPTZ NULL, evaluate_time TIMESTAMPTZ NULL"
            ),
            // One stage per customer, whatever evaluations run at once.
            "CREATE UNIQUE INDEX lifecycle_states_customer ON lifecycle_states \
             (tenant_id, customer_id) WHERE delete_time IS NULL",
            "CREATE INDEX lifecycle_states_stage ON lifecycle_states (tenant_id, model_id, stage, id)",
            crm_core::resource_table!(
                "lifecycle_transitions",
                "customer_id UUID NULL, model_id UUID NULL, from_stage TEXT NOT NULL, \
                 to_stage TEXT NOT NULL, reason TEXT NOT NULL, rule BIGINT NOT NULL, \
                 transition_time TIMESTAMPTZ NULL, step BIGINT NOT NULL"
            ),
            "CREATE INDEX lifecycle_transitions_customer ON lifecycle_transitions \
             (tenant_id, customer_id, transition_time, create_time, step, id)",
            "CREATE INDEX lifecycle_transitions_model ON lifecycle_transitions \
             (tenant_id, model_id, id)",
        ],
    ),
    SchemaChange::new(
        "m20261125_200003_segments",
        &[
            crm_core::resource_table!(
                "segments",
                "display_name TEXT NOT NULL, rule TEXT NOT NULL, tag TEXT NOT NULL, \
                 member_count BIGINT NOT NULL, refresh_time TIMESTAMPTZ NULL, \
                 operation TEXT NOT NULL"
            ),
            "CREATE INDEX segments_name ON segments (tenant_id, display_name, id)",
            crm_core::resource_table!(
                "segment_members",
                "segment_id UUID NULL, customer_id UUID NULL, enter_time TIMESTAMPTZ NULL"
            ),
            // A contact is a member once.
            "CREATE UNIQUE INDEX segment_members_segment ON segment_members \
             (tenant_id, segment_id, customer_id) WHERE delete_time IS NULL",
            "CREATE INDEX segment_members_customer ON segment_members (tenant_id, customer_id)",
        ],
    ),
];

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn fields(e: &Error) -> Vec<String> {
        e.violations.iter().map(|v| v.field.clone()).collect()
    }

    #[test]
    fn a_lifecycle_model_from_a_template_copies_it_once() {
        let mut m = LifecycleModel {
            display_name: " Relationship ".into(),
            template: " relationship ".into(),
            ..Default::default()
        };
        m.validate().unwrap();
        assert_eq!(m.display_name, "Relationship");
        assert_eq!(m.template, "relationship");
        assert_eq!(m.stage_model(), {
            let mut t = StageModel::four_stage();
            t.key = "relationship".into();
            t
        });
        // Stages given: the template is only a label, the stages are the tenant's.
        let mut custom = LifecycleModel {
            display_name: "Mine".into(),
            template: "crm_process".into(),
            stages: vec![
                Stage {
                    key: "new".into(),
                    name: String::new(),
                },
                Stage {
                    key: "buyer".into(),
                    name: String::new(),
                },
            ],
            initial: "new".into(),
            transitions: vec![TransitionRule {
                from: vec![],
                to: "buyer".into(),
                when: vec![],
                reason: String::new(),
            }],
            active: true,
        };
        custom.validate().unwrap();
        assert_eq!(custom.stages.len(), 2);
    }

    #[test]
    fn a_bad_lifecycle_model_names_its_fields() {
        let mut m = LifecycleModel {
            display_name: String::new(),
            template: "waterfall".into(),
            ..Default::default()
        };
        let e = m.validate().unwrap_err();
        assert_eq!(fields(&e), ["display_name", "template"]);
        let mut m = LifecycleModel {
            display_name: "x".into(),
            stages: vec![Stage {
                key: "a".into(),
                name: String::new(),
            }],
            initial: "b".into(),
            ..Default::default()
        };
        let e = m.validate().unwrap_err();
        assert_eq!(fields(&e), ["initial"]);
    }

    #[test]
    fn a_segment_tag_is_one_lower_case_tag() {
        let mut s = Segment {
            display_name: "EMEA".into(),
            rule: " region = \"EMEA\" ".into(),
            tag: " EMEA-List ".into(),
            ..Default::default()
        };
        s.validate().unwrap();
        assert_eq!(s.tag, "emea-list");
        assert_eq!(s.rule, "region = \"EMEA\"");
        let mut s = Segment {
            display_name: "x".into(),
            tag: "a|b".into(),
            ..Default::default()
        };
        assert_eq!(fields(&s.validate().unwrap_err()), ["tag"]);
        let mut s = Segment {
            display_name: "x".into(),
            tag: "   ".into(),
            ..Default::default()
        };
        s.validate().unwrap();
        assert_eq!(s.tag, "");
    }
}
