//! Assignment rule sets (O4) as resources, and the routing of a lead inside its write
//! transaction: the pure [`crate::assignment`] engine fed with what the database knows
//! (territories containing the lead's region, product groups of its product interest, the
//! candidates' status, capacity and open leads, the round-robin counters).
//!
//! **Concurrency.** Routed creates do not take turns as a whole: each decision reads the
//! candidates' loads as committed, then
//! - a round-robin (or weighted) rule takes its next position as a *ticket*
//!   ([`Tx::take_ticket`], key `assignment:<rule set>:<rule>`), on PostgreSQL in its own
//!   short statement: no two leads get the same position, on any replica, and nobody waits
//!   for another lead's commit; a lead that rolls back leaves its position unused;
//! - candidates' loads come from counters of open leads per owner (`lead-load:<user>`),
//!   kept in every lead write's transaction by the write observer [`keep_load`] and counted
//!   from the leads table once when missing, so a decision costs the same at any number of
//!   leads;
//! - when the chosen owner has a capacity limit, the decision takes that owner's counter
//!   with [`Tx::lock_counter`] (held to commit), reads the exact load there and, if they are
//!   full, decides again without them. Routed creates for one capacity-bound owner take
//!   turns; for different owners they run side by side. A capacity limit is therefore never
//!   exceeded by routing.
//!
//! Leads given to someone by hand (an explicit `owner`) do not take these counters and count
//! towards loads once committed.

use crate::assignment::{
    AssignmentRule, CandidateStatus, CompiledRuleSet, EvaluationMode, LeadProfile, Owner,
    RotationState, RuleAttempt, RuleSet, TargetKind, TerritoryHit, Via, Workload,
};
use crate::error::into_core;
use crate::grading::Grade;
use crate::lead::{Lead, LeadGrade, LeadStatus};
use crm_core::error::{Error, Result};
use crm_core::model::{Product, ProductGroup, Territory, User};
use crm_core::resource::{FieldSpec, HookFuture, Kind, Resource};
use crm_core::service::Tx;
use crm_core::validate::{self, MAX_SHORT_CHARS, Violations};
use sea_orm::sea_query::{Condition, Expr, ExprTrait};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use uuid::Uuid;

/// A tenant's assignment rules for leads. Several may be kept; at most one is active, and
/// activating one deactivates the others in the same transaction. `version` counts the
/// changes; each lead's decision names the version that made it, and the audit trail keeps
/// every version's content.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AssignmentRuleSet {
    /// A name for people.
    pub display_name: String,
    /// Whether new leads without an owner are routed by this rule set.
    pub active: bool,
    /// How matching rules are ranked.
    pub mode: EvaluationMode,
    /// The rules.
    pub rules: Vec<AssignmentRule>,
    /// The user who gets a lead no rule can place. Required.
    pub fallback: Option<Uuid>,
    /// Output only: 1 on create, one more on each update.
    pub version: i64,
    /// A routed lead still NEW this many seconds after it was created is escalated to its
    /// owner's manager (a durable timer, see [`crate::lead::escalate_job`]); 0 never.
    pub escalate_after_seconds: i64,
}

impl AssignmentRuleSet {
    /// The pure rule set (the fallback a user).
    pub fn rule_set(&self) -> RuleSet {
        RuleSet {
            mode: self.mode,
            rules: self.rules.clone(),
            fallback: Owner {
                id: self.fallback.unwrap_or_default(),
                kind: TargetKind::User,
            },
        }
    }
}

impl Resource for AssignmentRuleSet {
    const COLLECTION: &'static str = "assignmentRuleSets";
    const TABLE: &'static str = "assignment_rule_sets";
    const DEFAULT_ORDER: &'static str = "display_name";
    const FIELDS: &'static [FieldSpec] = &[
        FieldSpec::new("display_name", "display_name", Kind::Text).sort(),
        FieldSpec::new("active", "active", Kind::Bool).filter(),
        FieldSpec::new("mode", "mode", Kind::Enum(&["ORDERED", "PRIORITY"])).filter(),
        FieldSpec::new("rules", "rules", Kind::Json),
        FieldSpec::new("fallback", "fallback_id", Kind::Ref("users")).filter(),
        FieldSpec::new("version", "version", Kind::Int).sort(),
        FieldSpec::new(
            "escalate_after_seconds",
            "escalate_after_seconds",
            Kind::Int,
        ),
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
        if !(0..=366 * 24 * 3600).contains(&self.escalate_after_seconds) {
            v.add(
                "escalate_after_seconds",
                "must be within 0 (never) and a year of seconds",
            );
        }
        if self.fallback.is_none() {
            v.add(
                "fallback",
                "is required: the user who gets leads no rule places",
            );
        }
        for (i, r) in self.rules.iter().enumerate() {
            for (j, t) in r.targets.iter().enumerate() {
                if !matches!(t.owner.kind, TargetKind::User | TargetKind::RegionalManager) {
                    v.add(
                        format!("rules[{i}].targets[{j}].kind"),
                        "leads are owned by users: targets are USER or REGIONAL_MANAGER",
                    );
                }
            }
        }
        v.into_result()?;
        self.rule_set().validate().map_err(into_core)
    }

    fn nested_refs(&self) -> Vec<(String, &'static str, Uuid)> {
        let mut refs = Vec::new();
        for (i, r) in self.rules.iter().enumerate() {
            for (j, t) in r.targets.iter().enumerate() {
                refs.push((format!("rules[{i}].targets[{j}].id"), "users", t.owner.id));
            }
            for (j, t) in r.when.territories.iter().flatten().enumerate() {
                refs.push((
                    format!("rules[{i}].when.territories[{j}]"),
                    "territories",
                    *t,
                ));
            }
        }
        refs
    }

    fn before_write<'a>(
        tx: &'a Tx<'a>,
        id: Uuid,
        old: Option<&'a Self>,
        data: &'a mut Self,
    ) -> HookFuture<'a> {
        Box::pin(async move {
            data.version = old.map_or(1, |o| o.version + 1);
            if !data.active {
                return Ok(());
            }
            let off = AssignmentRuleSet {
                active: false,
                ..Default::default()
            };
            crate::active::deactivate_others(tx, id, off).await?;
            Ok(())
        })
    }
}

/// Where a lead went and why, kept on the lead (`assignment`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AssignmentDecision {
    /// The rule set that decided (`None` for a manual owner).
    pub rule_set: Option<Uuid>,
    /// Its version.
    pub rule_set_version: i64,
    /// `RULE`, `FALLBACK` or `MANUAL`.
    pub via: String,
    /// The rule that placed the lead, if one did.
    pub rule: String,
    /// The owner chosen.
    pub owner: Option<Uuid>,
    /// Every matching rule, in the order they ranked.
    pub matched_rules: Vec<String>,
    /// The candidates of each rule tried, and what happened to each.
    pub tried: Vec<RuleAttempt>,
    /// Why this owner, in words.
    pub reason: String,
    /// Seconds after which the lead, still NEW, is escalated (the rule set's setting; 0
    /// never).
    pub escalate_after_seconds: i64,
}

/// Compiled rule sets by (tenant, rule set), with the revision they were compiled from: a
/// cache of derived data (a changed rule set has a new revision and is compiled again).
type Compiled = HashMap<(String, Uuid), (i64, Arc<CompiledRuleSet>)>;
static COMPILED: Mutex<Option<Compiled>> = Mutex::new(None);
const MAX_COMPILED: usize = 1024;

fn compiled(
    tenant: &str,
    id: Uuid,
    revision: i64,
    set: &AssignmentRuleSet,
) -> Result<Arc<CompiledRuleSet>> {
    let key = (tenant.to_owned(), id);
    if let Ok(guard) = COMPILED.lock()
        && let Some((rev, c)) = guard.as_ref().and_then(|m| m.get(&key))
        && *rev == revision
    {
        return Ok(c.clone());
    }
    let c = Arc::new(CompiledRuleSet::compile(&set.rule_set()).map_err(into_core)?);
    if let Ok(mut guard) = COMPILED.lock() {
        let m = guard.get_or_insert_with(HashMap::new);
        if m.len() >= MAX_COMPILED {
            m.clear();
        }
        m.insert(key, (revision, c.clone()));
    }
    Ok(c)
}

/// Lead statuses that count towards an owner's load.
const OPEN: [LeadStatus; 3] = [LeadStatus::New, LeadStatus::Working, LeadStatus::Nurturing];

/// Decides the owner of `lead` with the tenant's active rule set, inside `tx` (taking a
/// round-robin ticket and the chosen owner's capacity counter, see the module doc). `None`
/// when the tenant has no active rule set. With `commit_counters` false no ticket is taken
/// (a dry run reads the rule's position instead).
pub async fn route(
    tx: &Tx<'_>,
    lead: &Lead,
    commit_counters: bool,
) -> Result<Option<AssignmentDecision>> {
    let Some(set) = crate::active::active::<AssignmentRuleSet>(tx).await? else {
        return Ok(None);
    };
    let set_id = set.meta.id;
    let engine = compiled(tx.ctx().tenant(), set_id, set.meta.revision, &set.data)?;

    let profile = profile(tx, lead).await?;
    // A first pass names the matching rules; their targets are the candidates to look up.
    let probe = engine.decide(&profile, &Workload::default(), &RotationState::default());
    let wanted: BTreeSet<&str> = probe
        .explanation
        .matched_rules
        .iter()
        .map(String::as_str)
        .collect();
    let candidates: BTreeSet<Uuid> = set
        .data
        .rules
        .iter()
        .filter(|r| wanted.contains(r.id.as_str()))
        .flat_map(|r| r.targets.iter().map(|t| t.owner.id))
        .collect();
    let mut workload = workload(tx, &candidates).await?;
    let mut rotation = RotationState::default();
    let mut ticketed: BTreeSet<String> = BTreeSet::new();
    let mut locked: BTreeSet<Uuid> = BTreeSet::new();
    // Each pass either takes a rule's ticket or one owner's capacity counter, each at most
    // once, so this many passes always reach a decision that needs neither.
    let passes = set.data.rules.len() + candidates.len() + 1;
    let mut decision = engine.decide(&profile, &workload, &rotation);
    for _ in 0..passes {
        if let (Some(rule), Some(_)) = (&decision.rule, &decision.counter)
            && !ticketed.contains(rule)
        {
            let key = format!("assignment:{set_id}:{rule}");
            let position = if commit_counters {
                tx.take_ticket(&key).await? - 1
            } else {
                tx.lock_counter(&key).await?
            };
            rotation
                .counters
                .insert(rule.clone(), u64::try_from(position).unwrap_or(0));
            ticketed.insert(rule.clone());
            decision = engine.decide(&profile, &workload, &rotation);
            continue;
        }
        let owner = decision.owner.id;
        let capacity = workload
            .candidates
            .get(&owner)
            .and_then(|c| c.capacity)
            .filter(|_| decision.via == Via::Rule);
        if let Some(capacity) = capacity
            && commit_counters
            && locked.insert(owner)
        {
            loads(tx, &[owner]).await?;
            let load = u32::try_from(tx.lock_counter(&load_key(owner)).await?).unwrap_or(0);
            if let Some(c) = workload.candidates.get_mut(&owner) {
                c.load = load;
            }
            if load >= capacity {
                decision = engine.decide(&profile, &workload, &rotation);
                continue;
            }
        }
        break;
    }
    Ok(Some(AssignmentDecision {
        rule_set: Some(set_id),
        rule_set_version: set.data.version,
        via: match decision.via {
            Via::Rule => "RULE",
            Via::Fallback => "FALLBACK",
            Via::Manual => "MANUAL",
        }
        .to_owned(),
        rule: decision.rule.clone().unwrap_or_default(),
        owner: Some(decision.owner.id),
        matched_rules: decision.explanation.matched_rules.clone(),
        tried: decision.explanation.tried.clone(),
        reason: decision.explanation.reason.clone(),
        escalate_after_seconds: set.data.escalate_after_seconds,
    }))
}

/// What routing reads of a lead: its own fields, the territories whose regions contain its
/// region (and its own territory) with their depths, the groups of the products it asked
/// about and their ancestors.
async fn profile(tx: &Tx<'_>, lead: &Lead) -> Result<LeadProfile> {
    let mut territories = Vec::new();
    let region = lead.region.trim().to_lowercase();
    if !region.is_empty() || lead.territory.is_some() {
        // The tenant's territory tree, read once: the matches and their depths come from it.
        let all = tx
            .find_cached::<Territory>("tree", Condition::all(), MAX_TREE)
            .await?;
        let parent: HashMap<Uuid, Option<Uuid>> =
            all.iter().map(|t| (t.meta.id, t.data.parent)).collect();
        for t in all.iter() {
            let in_region = !region.is_empty() && t.data.regions.contains(&region);
            if in_region || lead.territory == Some(t.meta.id) {
                territories.push(TerritoryHit {
                    id: t.meta.id,
                    depth: depth(&parent, t.meta.id),
                });
            }
        }
    }
    let mut product_groups = BTreeSet::new();
    if !lead.product_interest.is_empty() {
        let products = tx
            .find::<Product>(
                Condition::all().add(Expr::col("id").is_in(lead.product_interest.clone())),
                100,
            )
            .await?;
        let groups = tx
            .find_cached::<ProductGroup>("tree", Condition::all(), MAX_TREE)
            .await?;
        let parent: HashMap<Uuid, Option<Uuid>> =
            groups.iter().map(|g| (g.meta.id, g.data.parent)).collect();
        for p in products {
            // The product's group and its ancestors (bounded against cycles).
            let mut at = p.data.product_group;
            while let Some(g) = at {
                if !product_groups.insert(g.to_string()) || product_groups.len() > MAX_TREE as usize
                {
                    break;
                }
                at = parent.get(&g).copied().flatten();
            }
        }
    }
    Ok(LeadProfile {
        industry: lead.industry.clone(),
        region: lead.region.clone(),
        territories,
        product_groups: product_groups.into_iter().collect(),
        customer_groups: Vec::new(),
        deal_size: lead.expected_value.as_ref().map(|a| a.minor),
        deal_currency: lead
            .expected_value
            .as_ref()
            .map(|a| a.currency_code.clone())
            .unwrap_or_default(),
        grade: match lead.grade {
            LeadGrade::Hot => Some(Grade::Hot),
            LeadGrade::Warm => Some(Grade::Warm),
            LeadGrade::Cold => Some(Grade::Cold),
            LeadGrade::LongTerm => Some(Grade::LongTerm),
            LeadGrade::Ungraded => None,
        },
        skills: Vec::new(),
    })
}

/// Most nodes of a tenant's territory or product-group tree routing reads.
const MAX_TREE: u64 = 100_000;

/// Depth of a tree node (a root has depth 0), bounded against cycles.
fn depth(parent: &HashMap<Uuid, Option<Uuid>>, id: Uuid) -> u32 {
    let mut depth = 0;
    let mut at = parent.get(&id).copied().flatten();
    while let Some(p) = at {
        depth += 1;
        if depth > 64 {
            break;
        }
        at = parent.get(&p).copied().flatten();
    }
    depth
}

/// The candidates' status: active, capacity (0 = none), skills, and their open leads.
async fn workload(tx: &Tx<'_>, ids: &BTreeSet<Uuid>) -> Result<Workload> {
    let mut w = Workload::default();
    if ids.is_empty() {
        return Ok(w);
    }
    let list: Vec<Uuid> = ids.iter().copied().collect();
    // The candidates' records change rarely (kept for a moment, per process); their loads
    // with every lead (read each time).
    let key = list.iter().fold(String::from("ids:"), |mut k, id| {
        k.push_str(&id.simple().to_string());
        k
    });
    let users = tx
        .find_cached::<User>(
            &key,
            Condition::all().add(Expr::col("id").is_in(list.clone())),
            10_000,
        )
        .await?;
    let loads = loads(tx, &list).await?;
    for u in users.iter() {
        w.candidates.insert(
            u.meta.id,
            CandidateStatus {
                active: u.data.active,
                capacity: u32::try_from(u.data.capacity).ok().filter(|c| *c > 0),
                load: loads.get(&u.meta.id).copied().unwrap_or(0),
                skills: u.data.skills.clone(),
            },
        );
    }
    Ok(w)
}

/// The tenant's counter of `owner`'s open leads (kept by [`keep_load`]).
pub fn load_key(owner: Uuid) -> String {
    format!("lead-load:{owner}")
}

/// Open leads of each of `owners`, from their counters; a counter missing (an owner who
/// had none yet, or leads from before counters were kept) is counted from the leads table
/// once and created.
pub async fn loads(tx: &Tx<'_>, owners: &[Uuid]) -> Result<HashMap<Uuid, u32>> {
    let keys: Vec<String> = owners.iter().map(|o| load_key(*o)).collect();
    let mut have = tx.counters(&keys).await?;
    let missing: Vec<Uuid> = owners
        .iter()
        .filter(|o| !have.contains_key(&load_key(**o)))
        .copied()
        .collect();
    if !missing.is_empty() {
        let counted = open_leads(tx, &missing).await?;
        for o in &missing {
            let n = counted.get(o).copied().unwrap_or(0);
            tx.init_counter(&load_key(*o), i64::from(n)).await?;
        }
        have = tx.counters(&keys).await?;
    }
    Ok(owners
        .iter()
        .map(|o| {
            let n = have.get(&load_key(*o)).copied().unwrap_or(0);
            (*o, u32::try_from(std::cmp::max(n, 0)).unwrap_or(u32::MAX))
        })
        .collect())
}

/// The owner a lead counts for: its owner while it is open.
fn open_owner(o: &serde_json::Map<String, serde_json::Value>) -> Option<Uuid> {
    let status = o.get("status").and_then(serde_json::Value::as_str)?;
    if !OPEN.iter().any(|s| s.as_str() == status) {
        return None;
    }
    o.get("owner")
        .and_then(serde_json::Value::as_str)
        .and_then(|s| Uuid::try_parse(s).ok())
}

/// Write observer of leads: keeps each owner's open-lead counter ([`load_key`]) with the
/// write. The change is applied at commit ([`Tx::add_to_counter_at_commit`]), so the
/// counter is held only for the commit, and a transaction writing many leads (an import
/// batch) changes each owner's counter once, in key order, never deadlocking with another.
pub fn keep_load<'a>(tx: &'a Tx<'a>, e: crm_core::registry::WriteEvent<'a>) -> HookFuture<'a> {
    Box::pin(async move {
        use crm_core::journal::AuditAction as A;
        let before = match e.action {
            A::Update => e.old.and_then(open_owner),
            A::Delete => open_owner(e.record),
            A::Create | A::Undelete => None,
        };
        let after = match e.action {
            A::Delete => None,
            _ => open_owner(e.record),
        };
        if before == after {
            return Ok(());
        }
        for (owner, delta) in [(before, -1), (after, 1)] {
            let Some(owner) = owner else { continue };
            let key = load_key(owner);
            // A counter this transaction already adds to exists.
            if tx.pending_counter(&key).is_none()
                && tx.counters(std::slice::from_ref(&key)).await?.is_empty()
            {
                // Counted now, this write included: nothing to add.
                let n = open_leads(tx, &[owner])
                    .await?
                    .get(&owner)
                    .copied()
                    .unwrap_or(0);
                if tx.init_counter(&key, i64::from(n)).await? {
                    continue;
                }
            }
            tx.add_to_counter_at_commit(&key, delta);
        }
        Ok(())
    })
}

/// Open leads per owner among `owners`: one grouped count, read in the transaction.
async fn open_leads(tx: &Tx<'_>, owners: &[Uuid]) -> Result<HashMap<Uuid, u32>> {
    use sea_orm::ConnectionTrait;
    use sea_orm::sea_query::{Alias, Query};
    let mut q = Query::select();
    q.from(Alias::new(Lead::TABLE))
        .column(Alias::new("owner_id"))
        .expr_as(Expr::col(Alias::new("id")).count(), Alias::new("n"))
        .and_where(Expr::col(Alias::new("tenant_id")).eq(tx.ctx().tenant()))
        .and_where(Expr::col(Alias::new("delete_time")).is_null())
        .and_where(Expr::col(Alias::new("owner_id")).is_in(owners.to_vec()))
        .and_where(Expr::col(Alias::new("status")).is_in(OPEN.iter().map(|s| s.as_str())))
        .group_by_col(Alias::new("owner_id"));
    let rows = tx.conn().query_all(&q).await?;
    let mut loads = HashMap::new();
    for r in rows {
        let owner: Uuid = r.try_get("", "owner_id")?;
        let n: i64 = r.try_get("", "n")?;
        loads.insert(owner, u32::try_from(n).unwrap_or(u32::MAX));
    }
    Ok(loads)
}

/// Where `lead` would go now and why, without writing anything: the lead is validated and
/// graded as on create, routed in a transaction that is rolled back (no round-robin step).
/// Needs read access to assignment rule sets.
pub async fn dry_run(ctx: &crm_core::service::Ctx, mut lead: Lead) -> Result<AssignmentDecision> {
    let rule_sets = crm_core::registry::registry()
        .collection(AssignmentRuleSet::COLLECTION)
        .ok_or_else(|| Error::internal("assignmentRuleSets is not registered"))?;
    ctx.scope_filter(rule_sets, crm_core::access::Action::Read)
        .await?;
    lead.owner = None;
    lead.validate()?;
    lead.derive();
    let tx = ctx.begin().await?;
    if let Some(policy) = crate::lead::active_grading_policy(&tx).await? {
        lead.apply_grade(&policy.grade(&lead.facts()));
    }
    let decision = route(&tx, &lead, false).await?;
    drop(tx);
    decision.ok_or_else(|| {
        Error::failed_precondition(
            "NO_ACTIVE_RULE_SET",
            "the tenant has no active assignment rule set: leads without an owner go to their creator",
        )
    })
}
