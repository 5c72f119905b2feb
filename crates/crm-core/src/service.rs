//! The generic use cases: Create, Get, List, Update, Delete of any [`Resource`], with
//! permission checks before any write and one transaction per write holding the row, its
//! audit record, its ownership change and its outbox event.

use crate::access::{Action, FieldAccess, Policy, ScopeSet};
use crate::auth::Principal;
use crate::clock::Clock;
use crate::codec::{is_empty, to_db};
use crate::db::Db;
use crate::error::{Error, ErrorKind, Result};
use crate::ids::new_id;
use crate::journal::{self, AuditAction, FieldChange};
use crate::query::filter::{self, FieldType, FilterField};
use crate::query::page::{self, PageToken};
use crate::resource::{
    self, Collection, FieldSpec, Kind, META_FIELDS, Meta, Page, Record, Resource,
};
use crate::store::{self, col};
use sea_orm::ConnectionTrait;
use sea_orm::sea_query::{Condition, Expr, ExprTrait, Query};
use serde_json::{Map, Value as Json};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::OnceCell;
use uuid::Uuid;

/// Everything a use case needs to know about the request it serves.
pub struct Ctx {
    pub db: Db,
    pub principal: Principal,
    pub policy: Policy,
    pub clock: Arc<dyn Clock>,
    reach: OnceCell<Reach>,
}

/// Whom and where the principal reaches, resolved once per request when a scope needs it.
#[derive(Debug, Default)]
struct Reach {
    team: HashSet<Uuid>,
    subtree: HashSet<Uuid>,
    territories: HashSet<Uuid>,
}

/// A create checked and ready to write.
struct Prepared {
    meta: Meta,
    obj: Map<String, Json>,
    nested: Vec<(String, &'static str, Uuid)>,
}

/// Parameters of a List.
#[derive(Debug, Default, Clone)]
pub struct ListParams {
    pub page_size: i32,
    pub page_token: String,
    pub filter: String,
    pub order_by: String,
    /// Restricts to the children of one parent: (column, parent id).
    pub parent: Option<(&'static str, Uuid)>,
}

impl Ctx {
    pub fn new(db: Db, principal: Principal, policy: Policy, clock: Arc<dyn Clock>) -> Self {
        Self {
            db,
            principal,
            policy,
            clock,
            reach: OnceCell::new(),
        }
    }

    pub fn tenant(&self) -> &str {
        &self.principal.tenant
    }

    fn scopes<R: Resource>(&self, action: Action) -> Result<ScopeSet> {
        let s = self.policy.scopes(R::PERMISSION, action);
        if s.is_empty() {
            return Err(Error::permission_denied(
                "ACTION_NOT_ALLOWED",
                format!("your roles may not {} {}", action.as_str(), R::PERMISSION),
            )
            .with("collection", R::PERMISSION)
            .with("action", action.as_str()));
        }
        Ok(s)
    }

    async fn reach(&self, s: ScopeSet) -> Result<&Reach> {
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
    async fn allowed(&self, s: ScopeSet) -> Result<Option<(HashSet<Uuid>, HashSet<Uuid>)>> {
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
    async fn scope_condition<R: Resource>(&self, s: ScopeSet) -> Result<Option<Condition>> {
        self.scope_condition_of(&Collection::of::<R>(), s).await
    }

    /// The SQL condition restricting rows of a collection to the scopes; `None` means all.
    async fn scope_condition_of(&self, c: &Collection, s: ScopeSet) -> Result<Option<Condition>> {
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
    async fn in_scope<R: Resource>(&self, s: ScopeSet, obj: &Map<String, Json>) -> Result<bool> {
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
                match self.db.conn.query_one(&q).await? {
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

    fn out_of_scope<R: Resource>(&self, action: Action, id: Uuid) -> Error {
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
    fn access<R: Resource>(&self, field: &str) -> FieldAccess {
        self.policy
            .field_access_in(R::PERMISSION, R::COLLECTION, field)
    }

    /// Removes fields the caller may not read.
    fn mask<R: Resource>(&self, meta: Meta, mut obj: Map<String, Json>) -> Result<Record<R>> {
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
    fn check_writable<R: Resource>(&self, fields: &[&'static str]) -> Result<()> {
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

    /// References must point at live records of this tenant that the caller may read (as a
    /// lookup would); tree parents must not loop. A re-parenting takes the tree's lock first
    /// (PostgreSQL), so two concurrent moves cannot both pass the cycle check.
    async fn check_references<R: Resource, C: ConnectionTrait>(
        &self,
        conn: &C,
        id: Uuid,
        obj: &Map<String, Json>,
        only: Option<&[&'static str]>,
    ) -> Result<()> {
        for f in R::FIELDS {
            if only.is_some_and(|o| !o.contains(&f.name)) {
                continue;
            }
            let (target, mut ids): (&str, Vec<Uuid>) = match f.kind {
                Kind::Ref(c) => (c, ref_of(obj, f.name).into_iter().collect()),
                Kind::RefList(c) => (
                    c,
                    list_of(obj, f.name)
                        .iter()
                        .filter_map(|s| Uuid::try_parse(s).ok())
                        .collect(),
                ),
                _ => continue,
            };
            if target == "users" {
                // The caller's own id is vouched for by its token, even before the
                // directory has a row for it.
                ids.retain(|i| *i != self.principal.user);
            }
            if ids.is_empty() {
                continue;
            }
            let target = crate::model::collection(target).ok_or_else(|| {
                Error::internal(format!(
                    "{}.{} refers to the unknown collection {target}",
                    R::COLLECTION,
                    f.name
                ))
            })?;
            let tree = R::TREE_PARENT == Some(f.name);
            if tree && only.is_some() {
                store::lock_tree(conn, self.tenant(), R::TABLE).await?;
            }
            // A tree parent stays locked against deletion until this write commits, so a
            // concurrent delete cannot leave the new child under a deleted parent.
            let found = store::existing_ids(conn, self.tenant(), target.table, &ids, tree).await?;
            if let Some(missing) = ids.iter().find(|i| !found.contains(i)) {
                return Err(Error::invalid(
                    f.name,
                    format!("{}/{missing} does not exist", target.name),
                ));
            }
            self.check_readable(conn, f.name, target, &ids).await?;
            if tree && let Some(parent) = ids.first() {
                let edges = store::tree_edges(conn, self.tenant(), R::TABLE, f.column).await?;
                let parent_of: HashMap<Uuid, Uuid> = edges
                    .into_iter()
                    .filter_map(|(c, p)| p.map(|p| (c, p)))
                    .collect();
                if crate::access::creates_cycle(id, *parent, &parent_of) {
                    return Err(Error::invalid(
                        f.name,
                        "would make the record its own ancestor",
                    ));
                }
            }
        }
        Ok(())
    }

    /// Setting a reference needs read access to its target: a target outside the caller's
    /// read scope is answered as an out-of-scope read, naming the field.
    async fn check_readable<C: ConnectionTrait>(
        &self,
        conn: &C,
        field: &str,
        target: &Collection,
        ids: &[Uuid],
    ) -> Result<()> {
        let scopes = self.policy.scopes(target.permission, Action::Read);
        if scopes.is_empty() {
            return Err(Error::permission_denied(
                "ACTION_NOT_ALLOWED",
                format!(
                    "your roles may not read {}, so {field} cannot refer to one",
                    target.permission
                ),
            )
            .with("collection", target.permission)
            .with("action", Action::Read.as_str())
            .with("field", field.to_owned()));
        }
        let Some(cond) = self.scope_condition_of(target, scopes).await? else {
            return Ok(());
        };
        let visible = store::ids_where(conn, self.tenant(), target.table, ids, cond, false).await?;
        match ids.iter().find(|i| !visible.contains(i)) {
            Some(id) => Err(Error::permission_denied(
                "OUT_OF_SCOPE",
                format!(
                    "{}/{id} is outside the records your roles may read",
                    target.name
                ),
            )
            .with("resource", format!("{}/{id}", target.name))
            .with("field", field.to_owned())),
            None => Ok(()),
        }
    }

    async fn check_nested<C: ConnectionTrait>(
        &self,
        conn: &C,
        refs: &[(String, &'static str, Uuid)],
    ) -> Result<()> {
        let mut by_collection: HashMap<&str, Vec<Uuid>> = HashMap::new();
        for (_, c, id) in refs {
            by_collection.entry(c).or_default().push(*id);
        }
        for (collection, ids) in by_collection {
            let target = crate::model::collection(collection).ok_or_else(|| {
                Error::internal(format!(
                    "a nested reference to the unknown collection {collection}"
                ))
            })?;
            let found = store::existing_ids(conn, self.tenant(), target.table, &ids, false).await?;
            if let Some((field, _, id)) = refs
                .iter()
                .find(|(_, c, id)| *c == collection && !found.contains(id))
            {
                return Err(Error::invalid(
                    field.clone(),
                    format!("{collection}/{id} does not exist"),
                ));
            }
            let first = refs
                .iter()
                .find(|(_, c, _)| *c == collection)
                .map(|(f, _, _)| f.as_str())
                .unwrap_or(collection);
            self.check_readable(conn, first, target, &ids).await?;
        }
        Ok(())
    }

    async fn check_custom_fields<R: Resource, C: ConnectionTrait>(
        &self,
        conn: &C,
        obj: &Map<String, Json>,
    ) -> Result<()> {
        if !R::CUSTOM_FIELDS {
            return Ok(());
        }
        let defs =
            crate::model::custom_field::definitions(conn, self.tenant(), R::COLLECTION).await?;
        crate::model::custom_field::validate_values(&defs, obj.get("custom_fields"))
    }

    /// Create. A repeated `request_id` returns the first result; the same id with a
    /// different body is INVALID_ARGUMENT on `request_id`.
    pub async fn create<R: Resource>(&self, data: R, request_id: &str) -> Result<Record<R>> {
        self.create_with_id(new_id(), data, request_id).await
    }

    /// Create with a chosen id (imports, the demo loader).
    pub async fn create_with_id<R: Resource>(
        &self,
        id: Uuid,
        data: R,
        request_id: &str,
    ) -> Result<Record<R>> {
        // Keys compare canonically: the same UUID in upper case, or braced, is the same key.
        let request_id = match request_id.trim() {
            "" => String::new(),
            r => Uuid::try_parse(r)
                .map_err(|_| Error::invalid("request_id", "must be a UUID"))?
                .to_string(),
        };
        let request_id = request_id.as_str();
        let hash = digest(&store::to_object(&data)?);
        if !request_id.is_empty()
            && let Some(r) = self.replay::<R>(request_id, &hash).await?
        {
            return Ok(r);
        }
        let p = self.prepare_create(id, data).await?;
        let written = async {
            let tx = self.db.begin_write().await?;
            if !request_id.is_empty() {
                journal::remember_request(
                    &tx.txn,
                    self.tenant(),
                    R::COLLECTION,
                    request_id,
                    &hash,
                    id,
                    p.meta.create_time,
                )
                .await?;
            }
            self.write_create::<R, _>(&tx.txn, &p, request_id).await?;
            tx.commit().await
        }
        .await;
        match written {
            Ok(()) => self.mask(p.meta, p.obj),
            Err(e) if e.kind == ErrorKind::AlreadyExists && !request_id.is_empty() => {
                // A concurrent retry with the same request_id won the race.
                match self.replay::<R>(request_id, &hash).await? {
                    Some(r) => Ok(r),
                    None => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Creates many records in one transaction (bulk loads): every record is checked as by
    /// `create`, and any failure writes none of them.
    pub async fn create_many<R: Resource>(&self, items: Vec<(Uuid, R)>) -> Result<usize> {
        let mut prepared = Vec::with_capacity(items.len());
        for (i, (id, data)) in items.into_iter().enumerate() {
            prepared.push(
                self.prepare_create(id, data)
                    .await
                    .map_err(|e| e.in_field(&format!("items[{i}]")))?,
            );
        }
        let tx = self.db.begin_write().await?;
        for p in &prepared {
            self.write_create::<R, _>(&tx.txn, p, "").await?;
        }
        tx.commit().await?;
        Ok(prepared.len())
    }

    /// Everything of a create that needs no transaction: rights, field rules, validation,
    /// the default owner and the scope.
    async fn prepare_create<R: Resource>(&self, id: Uuid, mut data: R) -> Result<Prepared> {
        let scopes = self.scopes::<R>(Action::Create)?;
        let raw = store::to_object(&data)?;
        let set: Vec<&'static str> = R::FIELDS
            .iter()
            .filter(|f| raw.get(f.name).is_some_and(|v| !is_empty(v)))
            .map(|f| f.name)
            .collect();
        self.check_writable::<R>(&set)?;
        data.validate()?;
        data.derive();
        let nested = data.nested_refs();
        let mut obj = store::to_object(&data)?;
        if R::OWNED && ref_of(&obj, "owner").is_none() {
            obj.insert(
                "owner".into(),
                Json::String(self.principal.user.to_string()),
            );
        }
        if !self.in_scope::<R>(scopes, &obj).await? {
            return Err(self.out_of_scope::<R>(Action::Create, id));
        }
        let now = self.clock.now();
        Ok(Prepared {
            meta: Meta {
                id,
                revision: 1,
                create_time: now,
                update_time: now,
            },
            obj,
            nested,
        })
    }

    /// The writes of a create, inside the caller's transaction: reference and custom-field
    /// checks, the row, its audit record, ownership change and event.
    async fn write_create<R: Resource, C: ConnectionTrait>(
        &self,
        conn: &C,
        p: &Prepared,
        request_id: &str,
    ) -> Result<()> {
        self.check_references::<R, _>(conn, p.meta.id, &p.obj, None)
            .await?;
        self.check_nested(conn, &p.nested).await?;
        self.check_custom_fields::<R, _>(conn, &p.obj).await?;
        store::insert::<R, _>(conn, self.tenant(), &p.meta, &p.obj).await?;
        let changes: Vec<FieldChange> = R::FIELDS
            .iter()
            .filter_map(|f| {
                let v = p.obj.get(f.name)?;
                (!is_empty(v)).then(|| FieldChange {
                    field: f.name.to_owned(),
                    old: Json::Null,
                    new: v.clone(),
                })
            })
            .collect();
        self.journal::<R, _>(
            conn,
            &p.meta,
            AuditAction::Create,
            &changes,
            &p.obj,
            request_id,
        )
        .await
    }

    async fn replay<R: Resource>(&self, request_id: &str, hash: &str) -> Result<Option<Record<R>>> {
        let hit =
            journal::find_request(&self.db.conn, self.tenant(), R::COLLECTION, request_id).await?;
        match hit {
            None => Ok(None),
            Some(h) if h.request_hash == hash => self.get::<R>(h.resource_id).await.map(Some),
            Some(_) => Err(Error::invalid(
                "request_id",
                "was already used for a different request",
            )),
        }
    }

    async fn journal<R: Resource, C: ConnectionTrait>(
        &self,
        conn: &C,
        meta: &Meta,
        action: AuditAction,
        changes: &[FieldChange],
        obj: &Map<String, Json>,
        request_id: &str,
    ) -> Result<()> {
        let tenant = self.tenant();
        let named: Vec<FieldChange> = changes
            .iter()
            .map(|c| match resource::field::<R>(&c.field) {
                Some(f) => FieldChange {
                    field: c.field.clone(),
                    old: journal::named_refs(f.kind, &c.old),
                    new: journal::named_refs(f.kind, &c.new),
                },
                None => c.clone(),
            })
            .collect();
        journal::write_audit(
            conn,
            tenant,
            R::COLLECTION,
            meta.id,
            action,
            self.principal.user,
            meta.update_time,
            &named,
            request_id,
        )
        .await?;
        if R::OWNED
            && let Some(c) = changes.iter().find(|c| c.field == "owner")
        {
            let parse = |v: &Json| v.as_str().and_then(|s| Uuid::try_parse(s).ok());
            journal::write_ownership(
                conn,
                tenant,
                R::COLLECTION,
                meta.id,
                parse(&c.old),
                parse(&c.new),
                self.principal.user,
                meta.update_time,
            )
            .await?;
        }
        let payload = serde_json::json!({
            "resource": format!("{}/{}", R::COLLECTION, meta.id),
            "revision": meta.revision,
            "actor": format!("users/{}", self.principal.user),
            "changed_fields": changes.iter().map(|c| c.field.as_str()).collect::<Vec<_>>(),
            "data": if action == AuditAction::Delete { Json::Null } else { Json::Object(obj.clone()) },
        });
        journal::write_event(
            conn,
            tenant,
            R::COLLECTION,
            meta.id,
            action,
            meta.update_time,
            &payload,
        )
        .await
    }

    /// Get: NOT_FOUND when absent (or another tenant's), PERMISSION_DENIED when out of scope.
    pub async fn get<R: Resource>(&self, id: Uuid) -> Result<Record<R>> {
        let scopes = self.scopes::<R>(Action::Read)?;
        let Some((meta, obj)) = store::fetch::<R, _>(&self.db.conn, self.tenant(), id).await?
        else {
            return Err(Error::not_found(format!("{}/{id}", R::COLLECTION)));
        };
        if !self.in_scope::<R>(scopes, &obj).await? {
            return Err(self.out_of_scope::<R>(Action::Read, id));
        }
        self.mask(meta, obj)
    }

    /// Checks the caller may read the history of a record: as for Get, but a soft-deleted
    /// record's history stays readable (to those whose scope covers it).
    pub async fn check_history<R: Resource>(&self, id: Uuid) -> Result<()> {
        let scopes = self.scopes::<R>(Action::Read)?;
        let Some((_, obj)) = store::fetch_any::<R, _>(&self.db.conn, self.tenant(), id).await?
        else {
            return Err(Error::not_found(format!("{}/{id}", R::COLLECTION)));
        };
        if !self.in_scope::<R>(scopes, &obj).await? {
            return Err(self.out_of_scope::<R>(Action::Read, id));
        }
        Ok(())
    }

    /// The filterable and sortable fields as the caller may use them.
    fn query_fields<R: Resource>(&self) -> Vec<FilterField> {
        R::FIELDS
            .iter()
            .chain(META_FIELDS.iter())
            .filter_map(|f| {
                let ty = filter_type(f.kind)?;
                let visible = self.access::<R>(f.name) != FieldAccess::Hidden;
                Some(FilterField {
                    name: f.name,
                    column: f.column,
                    ty,
                    filterable: f.filter && visible,
                    sortable: f.sort && visible,
                })
            })
            .collect()
    }

    /// List with filter, order_by and keyset paging, restricted to the caller's scope.
    pub async fn list<R: Resource>(&self, p: &ListParams) -> Result<Page<R>> {
        let scopes = self.scopes::<R>(Action::Read)?;
        let limit = page::page_size("page_size", p.page_size)?;
        for (field, text) in [("filter", &p.filter), ("order_by", &p.order_by)] {
            if let Some(at) = text.chars().position(|c| c == '\0') {
                return Err(Error::invalid(
                    field,
                    format!("must not contain NUL characters (position {at})"),
                ));
            }
        }
        let fields = self.query_fields::<R>();
        let dialect = match self.db.backend() {
            sea_orm::DbBackend::Postgres => filter::Dialect::Postgres,
            _ => filter::Dialect::Portable,
        };
        let cond = filter::parse_filter_for(&p.filter, &fields, dialect)
            .map_err(|e| Error::invalid("filter", e.to_string()))?;
        let order_text = if p.order_by.trim().is_empty() {
            R::DEFAULT_ORDER
        } else {
            p.order_by.as_str()
        };
        let terms = filter::parse_order_by(order_text, &fields)
            .map_err(|e| Error::invalid("order_by", e.to_string()))?;
        let parent = p.parent.map(|(_, id)| id.to_string()).unwrap_or_default();
        let digest = page::query_digest(&[R::COLLECTION, &p.filter, order_text, &parent]);
        let token = PageToken::decode("page_token", &p.page_token, &digest)?;

        let mut all = Condition::all();
        if let Some(c) = cond {
            all = all.add(c);
        }
        if let Some(c) = self.scope_condition::<R>(scopes).await? {
            all = all.add(c);
        }
        if let Some((column, id)) = p.parent {
            all = all.add(Expr::col(col(column)).eq(id));
        }
        let mut order: Vec<(&'static str, bool)> =
            terms.iter().map(|t| (t.column, t.descending)).collect();
        order.push(("id", false));
        if let Some(t) = &token {
            all = all.add(keyset::<R>(&terms, t)?);
        }
        let mut rows =
            store::list::<R, _>(&self.db.conn, self.tenant(), all, &order, limit + 1).await?;
        let more = rows.len() as u64 > limit;
        rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        let next_page_token = match (more, rows.last()) {
            (true, Some((meta, obj))) => PageToken {
                v: terms
                    .iter()
                    .map(|t| match t.column {
                        "create_time" => Json::String(rfc3339(meta.create_time)),
                        "update_time" => Json::String(rfc3339(meta.update_time)),
                        _ => obj.get(t.field).cloned().unwrap_or(Json::Null),
                    })
                    .collect(),
                id: meta.id.to_string(),
                q: digest,
            }
            .encode(),
            _ => String::new(),
        };
        let items = rows
            .into_iter()
            .map(|(m, o)| self.mask(m, o))
            .collect::<Result<Vec<_>>>()?;
        Ok(Page {
            items,
            next_page_token,
        })
    }

    /// Update the fields named in `mask` from `patch`. `etag`, when given, must be current.
    pub async fn update<R: Resource>(
        &self,
        id: Uuid,
        patch: R,
        mask: &[String],
        etag: &str,
    ) -> Result<Record<R>> {
        let scopes = self.scopes::<R>(Action::Update)?;
        if mask.is_empty() {
            return Err(Error::invalid(
                "update_mask",
                "must name the fields to change",
            ));
        }
        let mut paths: Vec<&'static str> = Vec::with_capacity(mask.len());
        for m in mask {
            let Some(f) = R::FIELDS.iter().find(|f| f.name == m) else {
                return Err(Error::invalid(
                    "update_mask",
                    format!("unknown field {m:?}"),
                ));
            };
            if !f.mutable {
                return Err(Error::invalid(
                    "update_mask",
                    format!("field {m:?} cannot be changed"),
                ));
            }
            if !paths.contains(&f.name) {
                paths.push(f.name);
            }
        }
        self.check_writable::<R>(&paths)?;
        let expected = parse_etag(etag)?;
        let incoming = store::to_object(&patch)?;

        let tx = self.db.begin_write().await?;
        let Some((meta, old)) = store::fetch::<R, _>(&tx.txn, self.tenant(), id).await? else {
            return Err(Error::not_found(format!("{}/{id}", R::COLLECTION)));
        };
        if !self.in_scope::<R>(scopes, &old).await? {
            return Err(self.out_of_scope::<R>(Action::Update, id));
        }
        if expected.is_some_and(|e| e != meta.revision) {
            return Err(stale::<R>(id));
        }
        let mut merged = old.clone();
        for p in &paths {
            match incoming.get(*p) {
                Some(v) => merged.insert((*p).to_owned(), v.clone()),
                None => merged.remove(*p),
            };
        }
        let mut data: R = store::from_object(merged)?;
        data.validate()?;
        data.derive();
        let new = store::to_object(&data)?;
        let changes: Vec<FieldChange> = R::FIELDS
            .iter()
            .filter_map(|f| {
                let (o, n) = (old.get(f.name)?, new.get(f.name)?);
                (o != n).then(|| FieldChange {
                    field: f.name.to_owned(),
                    old: o.clone(),
                    new: n.clone(),
                })
            })
            .collect();
        if changes.is_empty() {
            drop(tx);
            return self.mask(meta, old);
        }
        let changed: Vec<&'static str> = R::FIELDS
            .iter()
            .filter(|f| changes.iter().any(|c| c.field == f.name))
            .map(|f| f.name)
            .collect();
        self.check_references::<R, _>(&tx.txn, id, &new, Some(&changed))
            .await?;
        self.check_nested(&tx.txn, &data.nested_refs()).await?;
        if changed.contains(&"custom_fields") {
            self.check_custom_fields::<R, _>(&tx.txn, &new).await?;
        }
        let now = std::cmp::max(self.clock.now(), meta.update_time);
        if !store::update::<R, _>(
            &tx.txn,
            self.tenant(),
            id,
            meta.revision,
            now,
            &changed,
            &new,
        )
        .await?
        {
            return Err(stale::<R>(id));
        }
        let meta = Meta {
            revision: meta.revision + 1,
            update_time: now,
            ..meta
        };
        self.journal::<R, _>(&tx.txn, &meta, AuditAction::Update, &changes, &new, "")
            .await?;
        tx.commit().await?;
        self.mask(meta, new)
    }

    /// Soft delete, recorded in the audit trail and as an event.
    pub async fn delete<R: Resource>(&self, id: Uuid, etag: &str) -> Result<()> {
        let scopes = self.scopes::<R>(Action::Delete)?;
        let expected = parse_etag(etag)?;
        let tx = self.db.begin_write().await?;
        let Some((meta, obj)) = store::fetch_for_update::<R, _>(&tx.txn, self.tenant(), id).await?
        else {
            return Err(Error::not_found(format!("{}/{id}", R::COLLECTION)));
        };
        if !self.in_scope::<R>(scopes, &obj).await? {
            return Err(self.out_of_scope::<R>(Action::Delete, id));
        }
        if expected.is_some_and(|e| e != meta.revision) {
            return Err(stale::<R>(id));
        }
        if let Some(parent) = R::TREE_PARENT.and_then(resource::field::<R>)
            && store::has_live(&tx.txn, self.tenant(), R::TABLE, parent.column, id).await?
        {
            return Err(Error::failed_precondition(
                "HAS_CHILDREN",
                format!(
                    "{}/{id} still has records below it ({}); move or delete them first",
                    R::COLLECTION,
                    parent.name
                ),
            )
            .with("resource", format!("{}/{id}", R::COLLECTION)));
        }
        let now = std::cmp::max(self.clock.now(), meta.update_time);
        if !store::soft_delete::<R, _>(&tx.txn, self.tenant(), id, meta.revision, now).await? {
            return Err(stale::<R>(id));
        }
        let meta = Meta {
            revision: meta.revision + 1,
            update_time: now,
            ..meta
        };
        self.journal::<R, _>(&tx.txn, &meta, AuditAction::Delete, &[], &obj, "")
            .await?;
        tx.commit().await
    }
}

fn stale<R: Resource>(id: Uuid) -> Error {
    Error::aborted(
        "ETAG_MISMATCH",
        format!(
            "{}/{id} was changed by someone else; read it again and retry",
            R::COLLECTION
        ),
    )
    .with("resource", format!("{}/{id}", R::COLLECTION))
}

fn parse_etag(etag: &str) -> Result<Option<i64>> {
    let e = etag.trim();
    if e.is_empty() {
        return Ok(None);
    }
    e.trim_start_matches("W/")
        .trim_matches('"')
        .strip_prefix('r')
        .and_then(|n| n.parse::<i64>().ok())
        .map(Some)
        .ok_or_else(|| Error::invalid("etag", "is not an etag issued by this service"))
}

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn digest(obj: &Map<String, Json>) -> String {
    let bytes = serde_json::to_vec(obj).unwrap_or_default();
    hex::encode(Sha256::digest(bytes))
}

pub(crate) fn ref_of(obj: &Map<String, Json>, field: &str) -> Option<Uuid> {
    obj.get(field)
        .and_then(Json::as_str)
        .and_then(|s| Uuid::try_parse(s).ok())
}

pub(crate) fn list_of(obj: &Map<String, Json>, field: &str) -> Vec<String> {
    obj.get(field)
        .and_then(Json::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn filter_type(kind: Kind) -> Option<FieldType> {
    Some(match kind {
        Kind::Text => FieldType::String,
        Kind::Int => FieldType::Int64,
        Kind::Bool => FieldType::Bool,
        Kind::Time => FieldType::Timestamp,
        Kind::Date => FieldType::Date,
        Kind::Enum(v) => FieldType::Enum(v),
        Kind::Ref(c) => FieldType::Ref(c),
        Kind::Tags => FieldType::StringList,
        Kind::RefList(c) => FieldType::RefList(c),
        Kind::Json => return None,
    })
}

/// `(a, b, id) > (va, vb, vid)` with per-term directions, as OR of prefixes.
fn keyset<R: Resource>(terms: &[filter::OrderTerm], t: &PageToken) -> Result<Condition> {
    let bad = || Error::invalid("page_token", "is not a page token from this list");
    if t.v.len() != terms.len() {
        return Err(bad());
    }
    let id = Uuid::try_parse(&t.id).map_err(|_| bad())?;
    let mut values = Vec::with_capacity(terms.len());
    for (term, v) in terms.iter().zip(&t.v) {
        let spec: &FieldSpec = resource::field::<R>(term.field).ok_or_else(bad)?;
        values.push(to_db(spec, v).map_err(|_| bad())?);
    }
    let mut any = Condition::any();
    for k in 0..=terms.len() {
        let mut all = Condition::all();
        for (term, v) in terms.iter().zip(&values).take(k) {
            all = all.add(Expr::col(col(term.column)).eq(v.clone()));
        }
        match (terms.get(k), values.get(k)) {
            (Some(term), Some(v)) => {
                let c = Expr::col(col(term.column));
                all = all.add(if term.descending {
                    c.lt(v.clone())
                } else {
                    c.gt(v.clone())
                });
            }
            _ => all = all.add(Expr::col(col("id")).gt(id)),
        }
        any = any.add(all);
    }
    Ok(any)
}
