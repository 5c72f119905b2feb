//! Leads (O1) and the tenant's grading policy (O3) as resources of the engine: every lead
//! write is permission-checked, audited and evented by crm-core, and graded in the same
//! transaction by the [`Lead::before_write`] hook against the tenant's active policy.

use crate::dedupe::{DuplicateCheck, check_new_lead};
use crate::error::into_core;
use crate::grading::{GradeResult, GradeThresholds, GradingPolicy, GradingRule, LeadFacts};
use crate::routing::{AssignmentDecision, route};
use crm_core::error::{Error, Result};
use crm_core::model::contact::{
    self, Email, Phone, PostalAddress, validate_emails, validate_phones,
};
use crm_core::model::custom_field::CustomValues;
use crm_core::registry::SchemaChange;
use crm_core::resource::{FieldSpec, HookFuture, Kind, Resource};
use crm_core::service::Tx;
use crm_core::validate::{self, MAX_SHORT_CHARS, Violations};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;

crm_core::named_enum! {
    /// Where a lead stands in qualification.
    pub enum LeadStatus {
        /// Captured, not yet worked on.
        New = "NEW",
        /// Being contacted.
        Working = "WORKING",
        /// Not ready to buy; kept warm over time.
        Nurturing = "NURTURING",
        /// Qualified: ready for conversion.
        Qualified = "QUALIFIED",
        /// Not a prospect (no need, no budget, spam...).
        Unqualified = "UNQUALIFIED",
        /// Converted into an account, a contact and an opportunity.
        Converted = "CONVERTED"
    }
}

crm_core::named_enum! {
    /// A lead's grade (O3): set by grading, never by the caller. `UNGRADED` until the tenant
    /// has an active grading policy.
    pub enum LeadGrade {
        /// No active grading policy when it was last written.
        Ungraded = "UNGRADED",
        /// Ready to buy.
        Hot = "HOT",
        /// Interested.
        Warm = "WARM",
        /// Little interest or fit yet.
        Cold = "COLD",
        /// Not now: nurture over the long term.
        LongTerm = "LONG_TERM"
    }
}

impl From<crate::grading::Grade> for LeadGrade {
    fn from(g: crate::grading::Grade) -> Self {
        use crate::grading::Grade;
        match g {
            Grade::Hot => Self::Hot,
            Grade::Warm => Self::Warm,
            Grade::Cold => Self::Cold,
            Grade::LongTerm => Self::LongTerm,
        }
    }
}

/// A prospective customer, before it is qualified and converted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Lead {
    /// Given name of the person.
    pub given_name: String,
    /// Family name of the person.
    pub family_name: String,
    /// The shown and sorted name (derived from the names when empty, as for contacts).
    pub display_name: String,
    /// The person's company, as written.
    pub company: String,
    /// Job title.
    pub title: String,
    /// Phone numbers, E.164 once validated.
    pub phones: Vec<Phone>,
    /// E-mail addresses, lower-cased once validated.
    pub emails: Vec<Email>,
    /// Postal address.
    pub address: PostalAddress,
    /// Industry code or name.
    pub industry: String,
    /// Region used for routing and reporting.
    pub region: String,
    /// Where the lead came from (`web_form`, `trade_show`, `import`...).
    pub source: String,
    /// The campaign that brought the lead (its code or name).
    pub campaign: String,
    /// Products the lead asked about.
    pub product_interest: Vec<Uuid>,
    /// Company size in employees; 0 when unknown.
    pub employee_count: i64,
    /// Free text.
    pub notes: String,
    /// Free tags, lower-case.
    pub tags: Vec<String>,
    /// Qualification status.
    pub status: LeadStatus,
    /// The grade (output only: set by grading).
    pub grade: LeadGrade,
    /// The points the grade came from (output only).
    pub grade_points: i64,
    /// The grading rules that gave points, with their points (output only).
    pub grade_reasons: Vec<GradeReason>,
    /// Owning user.
    pub owner: Option<Uuid>,
    /// Territory.
    pub territory: Option<Uuid>,
    /// Tenant-defined fields (custom field definitions of collection `leads`).
    pub custom_fields: CustomValues,
    /// Where the lead was routed and why (output only; see [`crate::routing`]).
    pub assignment: AssignmentDecision,
    /// The existing leads, contacts and accounts it may duplicate, found when it was created
    /// (output only; see [`crate::dedupe`]).
    pub duplicates: DuplicateCheck,
    /// The account the lead was converted into (output only; set by [`convert`]).
    pub converted_account: Option<Uuid>,
    /// The contact the lead was converted into (output only; set by [`convert`]).
    pub converted_contact: Option<Uuid>,
    /// When it was converted (output only).
    pub convert_time: Option<chrono::DateTime<chrono::Utc>>,
    /// The manager the lead was escalated to, still NEW after the rule set's limit (output
    /// only; see [`escalate_job`]).
    pub escalated_to: Option<Uuid>,
    /// When it was escalated (output only).
    pub escalate_time: Option<chrono::DateTime<chrono::Utc>>,
    /// When it was first worked on (output only): the moment it first left NEW, which
    /// logging its first activity does (see [`crate::activity`]); kept afterwards. Empty for
    /// a lead still NEW, and for one created beyond NEW (touched before it was captured).
    pub first_touch_time: Option<chrono::DateTime<chrono::Utc>>,
    /// The deal the lead may bring, when known: routing rules may match on its size (in
    /// the rule's currency).
    pub expected_value: Option<crate::opportunity::Amount>,
}

/// One grading rule that gave a lead points.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GradeReason {
    /// The rule's id in the policy.
    pub rule: String,
    /// The points it gave.
    pub points: i64,
}

impl Lead {
    /// What grading reads of the lead.
    pub fn facts(&self) -> LeadFacts {
        let mut fields = BTreeMap::new();
        fields.insert("title".to_owned(), self.title.clone());
        fields.insert("campaign".to_owned(), self.campaign.clone());
        fields.insert("company".to_owned(), self.company.clone());
        fields.insert(
            "address.region_code".to_owned(),
            self.address.region_code.clone(),
        );
        for (k, v) in &self.custom_fields {
            if let crm_core::model::CustomValue::Text(t) | crm_core::model::CustomValue::Enum(t) = v
            {
                fields.insert(format!("custom_fields.{k}"), t.clone());
            }
        }
        LeadFacts {
            source: self.source.clone(),
            industry: self.industry.clone(),
            region: self.region.clone(),
            company_size: u32::try_from(self.employee_count).ok().filter(|n| *n > 0),
            fields,
            counters: BTreeMap::new(),
        }
    }

    /// Sets the grade fields from a grading result.
    pub fn apply_grade(&mut self, r: &GradeResult) {
        self.grade = r.grade.into();
        self.grade_points = r.points;
        self.grade_reasons = r
            .hits
            .iter()
            .map(|h| GradeReason {
                rule: h.rule.clone(),
                points: i64::from(h.points),
            })
            .collect();
    }
}

impl Resource for Lead {
    const COLLECTION: &'static str = "leads";
    const TABLE: &'static str = "leads";
    const OWNED: bool = true;
    const CUSTOM_FIELDS: bool = true;
    const FIELDS: &'static [FieldSpec] = &[
        FieldSpec::new("given_name", "given_name", Kind::Text).sort(),
        FieldSpec::new("family_name", "family_name", Kind::Text).sort(),
        FieldSpec::new("display_name", "display_name", Kind::Text).sort(),
        FieldSpec::new("company", "company", Kind::Text).sort(),
        FieldSpec::new("title", "title", Kind::Text).filter(),
        FieldSpec::new("phones", "phones", Kind::Json),
        FieldSpec::new("emails", "emails", Kind::Json),
        FieldSpec::new("address", "address", Kind::Json),
        FieldSpec::new("industry", "industry", Kind::Text).sort(),
        FieldSpec::new("region", "region", Kind::Text).sort(),
        FieldSpec::new("source", "source", Kind::Text).sort(),
        FieldSpec::new("campaign", "campaign", Kind::Text).sort(),
        FieldSpec::new(
            "product_interest",
            "product_interest",
            Kind::RefList("products"),
        )
        .filter(),
        FieldSpec::new("employee_count", "employee_count", Kind::Int).sort(),
        FieldSpec::new("notes", "notes", Kind::Text),
        FieldSpec::new("tags", "tags", Kind::Tags).filter(),
        FieldSpec::new("status", "status", Kind::Enum(LeadStatus::NAMES)).sort(),
        FieldSpec::new("grade", "grade", Kind::Enum(LeadGrade::NAMES)).sort(),
        FieldSpec::new("grade_points", "grade_points", Kind::Int).sort(),
        FieldSpec::new("grade_reasons", "grade_reasons", Kind::Json),
        FieldSpec::new("owner", "owner_id", Kind::Ref("users")).filter(),
        FieldSpec::new("territory", "territory_id", Kind::Ref("territories")).filter(),
        FieldSpec::new("custom_fields", "custom_fields", Kind::Json),
        FieldSpec::new("assignment", "assignment", Kind::Json),
        FieldSpec::new("duplicates", "duplicates", Kind::Json),
        FieldSpec::new(
            "converted_account",
            "converted_account_id",
            Kind::Ref("accounts"),
        )
        .filter(),
        FieldSpec::new(
            "converted_contact",
            "converted_contact_id",
            Kind::Ref("contacts"),
        )
        .filter(),
        FieldSpec::new("convert_time", "convert_time", Kind::Time).sort(),
        FieldSpec::new("escalated_to", "escalated_to_id", Kind::Ref("users")).filter(),
        FieldSpec::new("escalate_time", "escalate_time", Kind::Time).sort(),
        FieldSpec::new("first_touch_time", "first_touch_time", Kind::Time).sort(),
        FieldSpec::new("expected_value", "expected_value", Kind::Json),
    ];

    fn validate(&mut self) -> Result<()> {
        let mut v = Violations::new();
        for (field, value, max) in [
            ("given_name", &mut self.given_name, MAX_SHORT_CHARS),
            ("family_name", &mut self.family_name, MAX_SHORT_CHARS),
            ("display_name", &mut self.display_name, MAX_SHORT_CHARS),
            ("company", &mut self.company, MAX_SHORT_CHARS),
            ("title", &mut self.title, MAX_SHORT_CHARS),
            ("industry", &mut self.industry, 100),
            ("region", &mut self.region, 100),
            ("source", &mut self.source, 100),
            ("campaign", &mut self.campaign, 200),
            ("notes", &mut self.notes, 10_000),
        ] {
            if let Some(s) = v.check(validate::text(field, value, max, false)) {
                *value = s;
            }
        }
        if self.given_name.is_empty()
            && self.family_name.is_empty()
            && self.display_name.is_empty()
            && self.company.is_empty()
        {
            v.add(
                "display_name",
                "a lead needs a given, family or display name, or a company",
            );
        }
        if self.employee_count < 0 {
            v.add("employee_count", "must not be negative");
        }
        if let Some(t) = v.check(validate::tags("tags", &self.tags)) {
            self.tags = t;
        }
        contact::validate_address(&mut v, "address", &mut self.address);
        let hint = (self.address.region_code.len() == 2).then(|| self.address.region_code.clone());
        validate_phones(&mut v, &mut self.phones, hint.as_deref());
        validate_emails(&mut v, &mut self.emails);
        if self.product_interest.len() > validate::MAX_LIST_LEN {
            v.add(
                "product_interest",
                format!("at most {} entries", validate::MAX_LIST_LEN),
            );
        }
        if let Some(a) = &mut self.expected_value {
            a.currency_code = a.currency_code.trim().to_ascii_uppercase();
            if a.minor < 0 {
                v.add("expected_value", "must not be negative");
            }
            if iso_currency::Currency::from_code(&a.currency_code).is_none() {
                v.add(
                    "expected_value.currency_code",
                    "is not an ISO 4217 currency code",
                );
            }
        }
        v.into_result()
    }

    fn derive(&mut self) {
        self.display_name =
            contact::display_name(&self.given_name, &self.family_name, &self.display_name);
        if self.display_name.is_empty() {
            self.display_name = self.company.clone();
        }
    }

    fn before_write<'a>(
        tx: &'a Tx<'a>,
        id: Uuid,
        old: Option<&'a Self>,
        data: &'a mut Self,
    ) -> HookFuture<'a> {
        Box::pin(async move {
            // Duplicates are looked for once, on capture; then kept as found.
            match old {
                None => check_new_lead(tx, id, data).await?,
                Some(o) => data.duplicates = o.duplicates.clone(),
            }
            // Escalation is the timer's: kept unless it sets one.
            if let Some(o) = old
                && data.escalated_to.is_none()
            {
                data.escalated_to = o.escalated_to;
                data.escalate_time = o.escalate_time;
            }
            // The first touch is the system's: the moment the lead first leaves NEW (an
            // activity logged on a NEW lead moves it to WORKING in the same transaction).
            data.first_touch_time = match old {
                None => None,
                Some(o) => o.first_touch_time.or_else(|| {
                    (o.status == LeadStatus::New && data.status != LeadStatus::New)
                        .then(|| tx.ctx().clock.now())
                }),
            };
            // Conversion is [`convert`]'s: it alone sets what the lead became, once.
            match old {
                Some(o) if o.status == LeadStatus::Converted => {
                    if data.status != LeadStatus::Converted {
                        return Err(Error::failed_precondition(
                            "LEAD_CONVERTED",
                            "a converted lead stays CONVERTED",
                        ));
                    }
                    data.converted_account = o.converted_account;
                    data.converted_contact = o.converted_contact;
                    data.convert_time = o.convert_time;
                }
                _ if data.status == LeadStatus::Converted && data.converted_contact.is_none() => {
                    return Err(Error::invalid(
                        "status",
                        "a lead becomes CONVERTED through ConvertLead",
                    ));
                }
                _ => {}
            }
            // The grade is the system's: whatever the caller sent, it is recomputed.
            match active_grading_policy(tx).await? {
                Some(policy) => data.apply_grade(&policy.grade(&data.facts())),
                None => {
                    data.grade = LeadGrade::Ungraded;
                    data.grade_points = 0;
                    data.grade_reasons.clear();
                }
            }
            data.derive();
            // So is the assignment: routed when created without an owner, manual when a
            // person names or changes the owner, otherwise kept.
            match old {
                None if data.owner.is_none() => {
                    match route(tx, data, true).await? {
                        Some(d) => {
                            data.owner = d.owner;
                            if d.escalate_after_seconds > 0 {
                                let ctx = tx.ctx();
                                let due = ctx.clock.now()
                                    + chrono::Duration::seconds(d.escalate_after_seconds);
                                crm_core::jobs::schedule(
                                    tx.conn(),
                                    ctx.clock.as_ref(),
                                    ctx.tenant(),
                                    ESCALATE_JOB,
                                    &serde_json::json!({ "lead": id }),
                                    due,
                                    &crm_core::jobs::ScheduleOptions {
                                        dedupe_key: Some(format!("lead/{id}")),
                                        collection: Some(Lead::COLLECTION.to_owned()),
                                        ..Default::default()
                                    },
                                )
                                .await?;
                            }
                            data.assignment = d;
                        }
                        None => {
                            // The engine makes the creator the owner.
                            let me = tx.ctx().principal.user;
                            data.assignment = AssignmentDecision {
                                via: "MANUAL".to_owned(),
                                owner: Some(me),
                                reason: format!(
                                    "no active assignment rule set: users/{me}, who created it, owns it"
                                ),
                                ..Default::default()
                            };
                        }
                    }
                }
                None => data.assignment = manual(tx, data.owner),
                Some(o) if o.owner != data.owner => data.assignment = manual(tx, data.owner),
                Some(o) => data.assignment = o.assignment.clone(),
            }
            Ok(())
        })
    }
}

/// A decision of the person writing: they named the owner.
fn manual(tx: &Tx<'_>, owner: Option<Uuid>) -> AssignmentDecision {
    AssignmentDecision {
        via: "MANUAL".to_owned(),
        owner,
        reason: format!("owner set by users/{}", tx.ctx().principal.user),
        ..Default::default()
    }
}

/// The tenant's active grading policy, if any (read as the system inside the write).
pub async fn active_grading_policy(tx: &Tx<'_>) -> Result<Option<GradingPolicy>> {
    Ok(crate::active::active::<LeadGradingPolicy>(tx)
        .await?
        .map(|r| r.data.policy()))
}

/// A tenant's grading rules for leads (O3). Several may be kept; at most one is active, and
/// activating one deactivates the others in the same transaction. Every change is audited,
/// so the audit trail is the policy's version history.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LeadGradingPolicy {
    /// A name for people.
    pub display_name: String,
    /// Whether new and changed leads are graded by this policy.
    pub active: bool,
    /// The rules; every rule that holds adds its points.
    pub rules: Vec<GradingRule>,
    /// Lowest points of each grade.
    pub thresholds: GradeThresholds,
}

impl LeadGradingPolicy {
    /// The pure policy.
    pub fn policy(&self) -> GradingPolicy {
        GradingPolicy {
            rules: self.rules.clone(),
            thresholds: self.thresholds,
        }
    }
}

impl Resource for LeadGradingPolicy {
    const COLLECTION: &'static str = "leadGradingPolicies";
    const TABLE: &'static str = "lead_grading_policies";
    const DEFAULT_ORDER: &'static str = "display_name";
    const FIELDS: &'static [FieldSpec] = &[
        FieldSpec::new("display_name", "display_name", Kind::Text).sort(),
        FieldSpec::new("active", "active", Kind::Bool).filter(),
        FieldSpec::new("rules", "rules", Kind::Json),
        FieldSpec::new("thresholds", "thresholds", Kind::Json),
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
        v.into_result()?;
        self.policy().validate().map_err(into_core)
    }

    fn before_write<'a>(
        tx: &'a Tx<'a>,
        id: Uuid,
        _old: Option<&'a Self>,
        data: &'a mut Self,
    ) -> HookFuture<'a> {
        Box::pin(async move {
            if !data.active {
                return Ok(());
            }
            // One active policy: the others are switched off in this transaction.
            let off = LeadGradingPolicy {
                active: false,
                ..Default::default()
            };
            crate::active::deactivate_others(tx, id, off)
                .await
                .map_err(|e| {
                    if e.kind == crm_core::error::ErrorKind::PermissionDenied {
                        Error::permission_denied(
                            "ACTION_NOT_ALLOWED",
                            "activating a policy switches the active one off, which needs update rights on it",
                        )
                    } else {
                        e
                    }
                })?;
            Ok(())
        })
    }
}

/// The crate's schema changes, in order.
pub const SCHEMA: &[SchemaChange] = &[SchemaChange::new(
    "m20261125_100001_leads",
    &[
        crm_core::resource_table!(
            "leads",
            "given_name TEXT NOT NULL, family_name TEXT NOT NULL, display_name TEXT NOT NULL, \
             company TEXT NOT NULL, title TEXT NOT NULL, phones TEXT NOT NULL, \
             emails TEXT NOT NULL, address TEXT NOT NULL, industry TEXT NOT NULL, \
             region TEXT NOT NULL, source TEXT NOT NULL, campaign TEXT NOT NULL, \
             product_interest TEXT NOT NULL, employee_count BIGINT NOT NULL, \
             notes TEXT NOT NULL, tags TEXT NOT NULL, status TEXT NOT NULL, \
             grade TEXT NOT NULL, grade_points BIGINT NOT NULL, grade_reasons TEXT NOT NULL, \
             owner_id UUID NULL, territory_id UUID NULL, custom_fields TEXT NOT NULL, \
             assignment TEXT NOT NULL, duplicates TEXT NOT NULL, \
             converted_account_id UUID NULL, converted_contact_id UUID NULL, \
             convert_time TIMESTAMPTZ NULL, escalated_to_id UUID NULL, \
             escalate_time TIMESTAMPTZ NULL"
        ),
        "CREATE INDEX leads_name ON leads (tenant_id, display_name, id)",
        "CREATE INDEX leads_owner ON leads (tenant_id, owner_id, id)",
        "CREATE INDEX leads_status ON leads (tenant_id, status, id)",
        "CREATE INDEX leads_create ON leads (tenant_id, create_time, id)",
        crm_core::resource_table!(
            "lead_grading_policies",
            "display_name TEXT NOT NULL, active BOOLEAN NOT NULL, rules TEXT NOT NULL, \
             thresholds TEXT NOT NULL"
        ),
        "CREATE INDEX lead_grading_policies_active ON lead_grading_policies (tenant_id, active)",
        crm_core::resource_table!(
            "assignment_rule_sets",
            "display_name TEXT NOT NULL, active BOOLEAN NOT NULL, mode TEXT NOT NULL, \
             rules TEXT NOT NULL, fallback_id UUID NULL, version BIGINT NOT NULL, \
             escalate_after_seconds BIGINT NOT NULL"
        ),
        "CREATE INDEX assignment_rule_sets_active ON assignment_rule_sets (tenant_id, active)",
        crm_core::resource_table!(
            "lead_duplicate_policies",
            "display_name TEXT NOT NULL, active BOOLEAN NOT NULL, match_at TEXT NOT NULL, \
             possible_at TEXT NOT NULL, on_match TEXT NOT NULL, on_match_by_source TEXT NOT NULL"
        ),
        // Open leads per owner (routing's load count).
        "CREATE INDEX leads_owner_status ON leads (tenant_id, owner_id, status)",
    ],
)];

/// The first-touch time of leads (`first_touch_time`), a change of its own after every table
/// of the crate (its backfill reads activities): a lead already followed up gets its first
/// activity's creation time; one moved off NEW without an activity before this change keeps
/// none (it still counts as contacted, see [`crate::effectiveness`]).
pub const FIRST_TOUCH_SCHEMA: SchemaChange = SchemaChange::new(
    "m20261202_100001_lead_first_touch",
    &[
        "ALTER TABLE leads ADD COLUMN first_touch_time TIMESTAMPTZ NULL",
        "UPDATE leads SET first_touch_time = (SELECT MIN(a.create_time) FROM activities a \
         WHERE a.tenant_id = leads.tenant_id AND a.lead_id = leads.id) \
         WHERE first_touch_time IS NULL",
    ],
);

/// Leads' expected deal value (routing by deal size).
pub const EXPECTED_VALUE_SCHEMA: SchemaChange = SchemaChange::new(
    "m20261202_100002_lead_expected_value",
    &["ALTER TABLE leads ADD COLUMN expected_value TEXT NOT NULL DEFAULT 'null'"],
);

/// What a conversion made.
#[derive(Debug, Clone)]
pub struct Conversion {
    /// The lead, now CONVERTED.
    pub lead: crm_core::resource::Record<Lead>,
    /// The account (created from the company, or the one named).
    pub account: Option<crm_core::resource::Record<crm_core::model::Account>>,
    /// The contact (created from the person, or the one named).
    pub contact: crm_core::resource::Record<crm_core::model::Contact>,
    /// The opportunity opened, unless none was asked for.
    pub opportunity: Option<crm_core::resource::Record<crate::opportunity::Opportunity>>,
}

/// Converts a qualified lead (O5) in one transaction: the account (the one named, else one
/// created from the lead's company when it has one), the contact (the one named, else one
/// created from the lead's person, phones, e-mails and address), the contact's position at the
/// account, an opportunity when `opportunity` is given (its name; empty for "<account> (from
/// lead)"), and the lead marked CONVERTED with what it became; each write checked against the
/// caller's rights, audited and evented, or none of it. `etag` guards the lead against a
/// concurrent change.
pub async fn convert(
    ctx: &crm_core::service::Ctx,
    id: Uuid,
    etag: &str,
    account: Option<Uuid>,
    contact: Option<Uuid>,
    opportunity: Option<String>,
) -> Result<Conversion> {
    use crm_core::model::{Account, Contact, Position};
    let tx = ctx.begin().await?;
    let lead = tx.get::<Lead>(id).await?;
    if lead.data.status == LeadStatus::Converted {
        return Err(Error::failed_precondition(
            "LEAD_CONVERTED",
            format!("leads/{id} is already converted"),
        ));
    }
    if lead.data.status == LeadStatus::Unqualified {
        return Err(Error::failed_precondition(
            "LEAD_UNQUALIFIED",
            format!("leads/{id} is UNQUALIFIED: qualify it before converting"),
        ));
    }
    let l = &lead.data;
    let account = match account {
        Some(a) => Some(
            tx.get::<Account>(a)
                .await
                .map_err(|e| e.in_field("account"))?,
        ),
        None if !l.company.is_empty() => Some(
            tx.create(Account {
                display_name: l.company.clone(),
                industry: l.industry.clone(),
                region: l.region.clone(),
                employee_count: l.employee_count,
                addresses: vec![l.address.clone()]
                    .into_iter()
                    .filter(|a| *a != PostalAddress::default())
                    .collect(),
                owner: l.owner,
                territory: l.territory,
                ..Default::default()
            })
            .await
            .map_err(|e| e.in_field("account"))?,
        ),
        None => None,
    };
    let contact = match contact {
        Some(c) => tx
            .get::<Contact>(c)
            .await
            .map_err(|e| e.in_field("contact"))?,
        None => tx
            .create(Contact {
                given_name: l.given_name.clone(),
                family_name: l.family_name.clone(),
                display_name: if l.given_name.is_empty() && l.family_name.is_empty() {
                    l.display_name.clone()
                } else {
                    String::new()
                },
                phones: l.phones.clone(),
                emails: l.emails.clone(),
                addresses: vec![l.address.clone()]
                    .into_iter()
                    .filter(|a| *a != PostalAddress::default())
                    .collect(),
                region: l.region.clone(),
                tags: l.tags.clone(),
                owner: l.owner,
                territory: l.territory,
                ..Default::default()
            })
            .await
            .map_err(|e| e.in_field("contact"))?,
    };
    if let Some(a) = &account {
        tx.create(Position {
            contact: Some(contact.meta.id),
            account: Some(a.meta.id),
            title: l.title.clone(),
            start_date: Some(ctx.clock.now().date_naive()),
            ..Default::default()
        })
        .await?;
    }
    let opportunity = match opportunity {
        None => None,
        Some(name) => {
            let name = if name.trim().is_empty() {
                let of = account
                    .as_ref()
                    .map(|a| a.data.display_name.clone())
                    .unwrap_or_else(|| l.display_name.clone());
                format!("{of} (from lead)")
            } else {
                name
            };
            Some(
                tx.create(crate::opportunity::Opportunity {
                    display_name: name,
                    account: account.as_ref().map(|a| a.meta.id),
                    contact: Some(contact.meta.id),
                    lead: Some(id),
                    owner: l.owner,
                    territory: l.territory,
                    ..Default::default()
                })
                .await
                .map_err(|e| e.in_field("opportunity"))?,
            )
        }
    };
    let etag = if etag.is_empty() {
        lead.meta.etag()
    } else {
        etag.to_owned()
    };
    let lead = tx
        .update(
            id,
            Lead {
                status: LeadStatus::Converted,
                converted_account: account.as_ref().map(|a| a.meta.id),
                converted_contact: Some(contact.meta.id),
                convert_time: Some(ctx.clock.now()),
                ..Default::default()
            },
            &[
                "status".to_owned(),
                "converted_account".to_owned(),
                "converted_contact".to_owned(),
                "convert_time".to_owned(),
            ],
            &etag,
        )
        .await?;
    tx.commit().await?;
    Ok(Conversion {
        lead,
        account,
        contact,
        opportunity,
    })
}

/// The job kind of lead escalation.
pub const ESCALATE_JOB: &str = "crm.leads.escalate";

/// Registers the crate's job handlers (called by the gateway at start).
pub fn register_jobs(h: &mut crm_core::jobs::JobHandlers) -> Result<()> {
    h.register(ESCALATE_JOB, escalate_job)?;
    Ok(())
}

/// Escalates a routed lead that is still NEW when its timer fires: `escalated_to` becomes its
/// owner's manager, with the time (audited and evented as a change of the system's). A lead
/// worked on, converted, deleted, already escalated, or whose owner has no manager, is left
/// alone. Idempotent.
pub async fn escalate_job(job: crm_core::jobs::JobContext) -> Result<crm_core::jobs::JobOutcome> {
    use crm_core::jobs::JobOutcome;
    #[derive(Deserialize)]
    struct Payload {
        lead: Uuid,
    }
    let p: Payload = job.payload_as()?;
    let ctx = job.system_ctx(None);
    let lead = match ctx.get::<Lead>(p.lead).await {
        Ok(l) => l,
        Err(e) if e.kind == crm_core::ErrorKind::NotFound => return Ok(JobOutcome::done()),
        Err(e) => return Err(e),
    };
    if lead.data.status != LeadStatus::New || lead.data.escalated_to.is_some() {
        return Ok(JobOutcome::done());
    }
    let Some(owner) = lead.data.owner else {
        return Ok(JobOutcome::done());
    };
    let manager = match ctx.get::<crm_core::model::User>(owner).await {
        Ok(u) => u.data.manager,
        Err(e) if e.kind == crm_core::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let Some(manager) = manager else {
        return Ok(JobOutcome::done());
    };
    ctx.update(
        p.lead,
        Lead {
            escalated_to: Some(manager),
            escalate_time: Some(ctx.clock.now()),
            ..Default::default()
        },
        &["escalated_to".to_owned(), "escalate_time".to_owned()],
        &lead.meta.etag(),
    )
    .await?;
    Ok(JobOutcome::done())
}
