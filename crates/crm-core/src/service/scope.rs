//! What the caller may reach: record scope and field rules, for the generic use cases and
//! for any custom read a domain crate builds.

use super::*;

/// A field's change as the caller may see it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeView {
    pub field: String,
    /// `null` when redacted.
    pub old: Json,
    pub new: Json,
    pub redacted: bool,
}

impl Ctx {
    pub(super) fn scopes<R: Resource>(&self, action: Action) -> Result<ScopeSet> {
        self.scopes_of(&Collection::of::<R>(), action)
    }

    /// The scopes in which the caller may `action` records of `c`; PERMISSION_DENIED
    /// `ACTION_NOT_ALLOWED` when no role grants it.
    pub fn scopes_of(&self, c: &Collection, action: Action) -> Result<ScopeSet> {
        let s = self.policy.scopes(c.permission, action);
        if s.is_empty() {
            return Err(Error::permission_denied(
                "ACTION_NOT_ALLOWED",
                format!("your roles may not {} {}", action.as_str(), c.permission),
            )
            .with("collection", c.permission)
            .with("action", action.as_str()));
        }
        Ok(s)
    }

    /// For a custom read (a timeline, a due list, duplicate candidates, a report): the
    /// condition restricting rows of `c` to those the caller may `action`, to add to any
    /// sea-query statement selecting from `c.table` (it names that table's own columns,
    /// `owner_id` and `territory_id`, or the parent column of a child collection,
    /// unqualified); `None` when every row is allowed. PERMISSION_DENIED when no role grants
    /// the action at all. With this and [`Ctx::mask_object`], no crate writes its own K4.
    pub async fn scope_filter(&self, c: &Collection, action: Action) -> Result<Option<Condition>> {
        let s = self.scopes_of(c, action)?;
        self.scope_condition_of(c, s).await
    }

    /// Which of `ids` (records of `c`, soft-deleted ones included) lie within the caller's
    /// read scope: for reads of things about records (their events) rather than the
    /// records themselves. PERMISSION_DENIED when no role grants reading `c` at all.
    pub async fn readable_ids(&self, c: &Collection, ids: &[Uuid]) -> Result<HashSet<Uuid>> {
        let Some(cond) = self.scope_filter(c, Action::Read).await? else {
            return Ok(ids.iter().copied().collect());
        };
        let found = store::ids_where(
            &self.db.conn,
            self.tenant(),
            c.table,
            ids,
            cond,
            false,
            false,
        )
        .await?;
        Ok(found.into_iter().collect())
    }

    /// Whether the caller may read field `field` of collection `c`.
    pub fn may_read_field(&self, c: &Collection, field: &str) -> bool {
        self.policy.field_access_in(c.permission, c.name, field) != FieldAccess::Hidden
    }

    /// The fields of `c` the caller may not read.
    pub fn hidden_fields(&self, c: &Collection) -> Vec<&'static str> {
        c.fields
            .iter()
            .filter(|f| !self.may_read_field(c, f.name))
            .map(|f| f.name)
            .collect()
    }

    /// Masks a record (or an event payload's data) of `c` for the caller: removes the fields
    /// it may not read and returns their names.
    pub fn mask_object(&self, c: &Collection, obj: &mut Map<String, Json>) -> Vec<&'static str> {
        let hidden = self.hidden_fields(c);
        for f in &hidden {
            obj.remove(*f);
        }
        hidden
    }

    /// One change of an audit record as the caller may see it: values withheld when the
    /// field is hidden from the caller, references as resource names.
    pub fn present_change(&self, c: &Collection, change: &FieldChange) -> ChangeView {
        if !self.may_read_field(c, &change.field) {
            return ChangeView {
                field: change.field.clone(),
                old: Json::Null,
                new: Json::Null,
                redacted: true,
            };
        }
        let named = |v: &Json| match c.field(&change.field) {
            Some(f) => journal::named_refs(f.kind, v),
            None => v.clone(),
        };
        ChangeView {
            field: change.field.clone(),
            old: named(&change.old),
            new: named(&change.new),
            redacted: false,
        }
    }

    pub(super) async fn reach(&self, s: ScopeSet) -> Result<&Reach> {
        self.reach
            .get_or_try_init(|| async {
                let conn = &self.db.conn;
                let tenant = self.tenant();
                let mut reach = Reach::default();
                let me = store::fetch::<crate::model::User, _>(conn, tenant, self.principal.user)
                    .await?;
                let (my_teams, my_territories) = match &me {
                    Some((_, obj)) => (list_of(obj, "teams"), list_of(obj, "territories")),
                    None => (vec![], vec![]),
                };
                if s.team && !my_teams.is_empty() {
                    let mut cond = Condition::any();
                    for t in &my_teams {
                        cond = cond.add(Expr::col(col("team_ids")).like(format!("%|{t}|%")));
                    }
                    let mut q = Query::select();
                    q.column(col("id"))
                        .from(col("users"))
                        .and_where(Expr::col(col("tenant_id")).eq(tenant))
                        .and_where(Expr::col(col("delete_time")).is_null())
                        .cond_where(cond);
                    for r in conn.query_all(&q).await? {
                        reach.team.insert(r.try_get::<Uuid>("", "id")?);
                    }
                }
                if s.subtree {
                    let edges = store::tree_edges(conn, tenant, "users", "manager_id").await?;
                    reach.subtree = crate::access::management_subtree(&edges, self.principal.user)
                        .into_iter()
                        .collect();
                }
                if s.territory && !my_territories.is_empty() {
                    let edges = store::tree_edges(conn, tenant, "territories", "parent_id").await?;
                    let roots = my_territories
                        .iter()
                        .filter_map(|t| Uuid::try_parse(t).ok());
                    reach.territories = crate::access::territory_closure(&edges, roots)
                        .into_iter()
                        .collect();
                }
                Ok::<Reach, Error>(reach)
            })
            .await
    }

    /// The owner set and territory set the scopes allow; `None` means everything.
    pub(super) async fn allowed(
        &self,
        s: ScopeSet,
    ) -> Result<Option<(HashSet<Uuid>, HashSet<Uuid>)>> {
        if s.all {
            return Ok(None);
        }
        if !(s.team || s.subtree || s.territory) {
            // OWN alone needs nothing from the directory.
            return Ok(Some((HashSet::from([self.principal.user]), HashSet::new())));
        }
        let reach = self.reach(s).await?;
        let mut owners = HashSet::new();
        if s.own || s.subtree || s.team {
            owners.insert(self.principal.user);
        }
        if s.team {
            owners.extend(reach.team.iter().copied());
        }
        if s.subtree {
            owners.extend(reach.subtree.iter().copied());
        }
        let territories = if s.territory {
            reach.territories.clone()
        } else {
            HashSet::new()
        };
        Ok(Some((owners, territories)))
    }

    /// The SQL condition restricting rows of `R` to the scopes; `None` means all rows.
    pub(super) async fn scope_condition<R: Resource>(
        &self,
        s: ScopeSet,
    ) -> Result<Option<Condition>> {
        self.scope_condition_of(&Collection::of::<R>(), s).await
    }

    /// The SQL condition restricting rows of a collection to the scopes; `None` means all.
    pub(super) async fn scope_condition_of(
        &self,
        c: &Collection,
        s: ScopeSet,
    ) -> Result<Option<Condition>> {
        if !c.scoped() {
            return Ok(None);
        }
        let Some((owners, territories)) = self.allowed(s).await? else {
            return Ok(None);
        };
        let mut cond = Condition::any();
        if !owners.is_empty() {
            cond = cond.add(Expr::col(col("owner_id")).is_in(owners.iter().copied()));
        }
        if !territories.is_empty() {
            cond = cond.add(Expr::col(col("territory_id")).is_in(territories.iter().copied()));
        }
        if owners.is_empty() && territories.is_empty() {
            cond = cond.add(Expr::val(1).eq(0));
        }
        match c.scope_parent {
            Some((column, table)) => {
                let mut sub = Query::select();
                sub.column(col("id"))
                    .from(col(table))
                    .and_where(Expr::col(col("tenant_id")).eq(self.tenant()))
                    .cond_where(cond);
                Ok(Some(
                    Condition::all().add(Expr::col(col(column)).in_subquery(sub)),
                ))
            }
            None => Ok(Some(cond)),
        }
    }

    /// Whether one stored record lies within the scopes.
    pub(super) async fn in_scope<R: Resource, C: ConnectionTrait>(
        &self,
        conn: &C,
        s: ScopeSet,
        obj: &Map<String, Json>,
    ) -> Result<bool> {
        if s.all || (!R::OWNED && R::SCOPE_PARENT.is_none()) {
            return Ok(true);
        }
        let (owner, territory) = match R::SCOPE_PARENT {
            None => (ref_of(obj, "owner"), ref_of(obj, "territory")),
            Some((column, table)) => {
                let field = R::FIELDS.iter().find(|f| f.column == column);
                let Some(parent) = field.and_then(|f| ref_of(obj, f.name)) else {
                    return Ok(false);
                };
                let mut q = Query::select();
                q.columns(["owner_id", "territory_id"].map(col))
                    .from(col(table))
                    .and_where(Expr::col(col("tenant_id")).eq(self.tenant()))
                    .and_where(Expr::col(col("id")).eq(parent));
                match conn.query_one(&q).await? {
                    Some(r) => (
                        r.try_get::<Option<Uuid>>("", "owner_id")?,
                        r.try_get::<Option<Uuid>>("", "territory_id")?,
                    ),
                    None => return Ok(false),
                }
            }
        };
        let Some((owners, territories)) = self.allowed(s).await? else {
            return Ok(true);
        };
        Ok(owner.is_some_and(|o| owners.contains(&o))
            || territory.is_some_and(|t| territories.contains(&t)))
    }

    pub(super) fn out_of_scope<R: Resource>(&self, action: Action, id: Uuid) -> Error {
        Error::permission_denied(
            "OUT_OF_SCOPE",
            format!(
                "{}/{id} is outside the records your roles may {}",
                R::COLLECTION,
                action.as_str()
            ),
        )
        .with("resource", format!("{}/{id}", R::COLLECTION))
    }

    /// The caller's access to a field of `R` (a child resource follows its parent's grants).
    pub(super) fn access<R: Resource>(&self, field: &str) -> FieldAccess {
        self.policy
            .field_access_in(R::PERMISSION, R::COLLECTION, field)
    }

    /// Removes fields the caller may not read.
    /// Masks a record written or read unmasked (inside a transaction, for hooks).
    pub(super) fn mask_record<R: Resource>(&self, rec: Record<R>) -> Result<Record<R>> {
        let hidden: Vec<&'static str> = R::FIELDS
            .iter()
            .filter(|f| self.access::<R>(f.name) == FieldAccess::Hidden)
            .map(|f| f.name)
            .collect();
        if hidden.is_empty() {
            return Ok(rec);
        }
        self.mask(rec.meta, store::to_object(&rec.data)?)
    }

    pub(super) fn mask<R: Resource>(
        &self,
        meta: Meta,
        mut obj: Map<String, Json>,
    ) -> Result<Record<R>> {
        let mut hidden = Vec::new();
        for f in R::FIELDS {
            if self.access::<R>(f.name) == FieldAccess::Hidden {
                // Every resource struct is `#[serde(default)]`: a missing key is empty.
                obj.remove(f.name);
                hidden.push(f.name);
            }
        }
        Ok(Record {
            meta,
            data: store::from_object(obj)?,
            hidden,
        })
    }

    /// Refuses writes of fields the caller may not write.
    pub(super) fn check_writable<R: Resource>(&self, fields: &[&'static str]) -> Result<()> {
        for f in fields {
            if self.access::<R>(f) != FieldAccess::ReadWrite {
                return Err(Error::permission_denied(
                    "FIELD_NOT_WRITABLE",
                    format!("your roles may not write {}.{f}", R::COLLECTION),
                )
                .with("field", *f));
            }
        }
        Ok(())
    }
}
