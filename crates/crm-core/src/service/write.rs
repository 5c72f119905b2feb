//! Writes: one transaction per use case, holding every row, audit record, ownership change
//! and outbox event it makes.

use super::*;

impl Ctx {
    /// References must point at live records of this tenant that the caller may read (as a
    /// lookup would); tree parents must not loop. A re-parenting takes the tree's lock first
    /// (PostgreSQL), so two concurrent moves cannot both pass the cycle check.
    pub(super) async fn check_references<R: Resource, C: ConnectionTrait>(
        &self,
        conn: &C,
        id: Uuid,
        obj: &Map<String, Json>,
        only: Option<&[&'static str]>,
        system: bool,
    ) -> Result<()> {
        for f in R::FIELDS {
            if only.is_some_and(|o| !o.contains(&f.name)) {
                continue;
            }
            let Some((target, ids)) = self.referenced(f, obj) else {
                continue;
            };
            if ids.is_empty() {
                continue;
            }
            let target = crate::registry::registry()
                .collection(target)
                .ok_or_else(|| {
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
            if !system {
                self.check_readable(conn, f.name, target, &ids).await?;
            }
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

    /// The target collection and the ids a reference field of `obj` names, if `f` is one;
    /// the caller's own user id is left out (vouched for by its token, even before the
    /// directory has a row for it).
    fn referenced(
        &self,
        f: &FieldSpec,
        obj: &Map<String, Json>,
    ) -> Option<(&'static str, Vec<Uuid>)> {
        let (target, mut ids): (&'static str, Vec<Uuid>) = match f.kind {
            Kind::Ref(c) => (c, ref_of(obj, f.name).into_iter().collect()),
            Kind::RefList(c) => (
                c,
                list_of(obj, f.name)
                    .iter()
                    .filter_map(|s| Uuid::try_parse(s).ok())
                    .collect(),
            ),
            _ => return None,
        };
        if target == "users" {
            ids.retain(|i| *i != self.principal.user);
        }
        Some((target, ids))
    }

    /// Setting a reference needs read access to its target: a target outside the caller's
    /// read scope is answered as an out-of-scope read, naming the field.
    pub(super) async fn check_readable<C: ConnectionTrait>(
        &self,
        conn: &C,
        field: &str,
        target: &Collection,
        ids: &[Uuid],
    ) -> Result<()> {
        match self.unreadable(conn, field, target, ids).await?.first() {
            Some(id) => Err(self.unreadable_ref(field, target, *id)),
            None => Ok(()),
        }
    }

    /// Those of `ids` (records of `target`) outside the caller's read scope; PERMISSION_DENIED
    /// when the caller may read none of `target`.
    async fn unreadable<C: ConnectionTrait>(
        &self,
        conn: &C,
        field: &str,
        target: &Collection,
        ids: &[Uuid],
    ) -> Result<Vec<Uuid>> {
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
            return Ok(Vec::new());
        };
        let visible =
            store::ids_where(conn, self.tenant(), target.table, ids, cond, false, true).await?;
        Ok(ids
            .iter()
            .filter(|i| !visible.contains(i))
            .copied()
            .collect())
    }

    fn unreadable_ref(&self, field: &str, target: &Collection, id: Uuid) -> Error {
        Error::permission_denied(
            "OUT_OF_SCOPE",
            format!(
                "{}/{id} is outside the records your roles may read",
                target.name
            ),
        )
        .with("resource", format!("{}/{id}", target.name))
        .with("field", field.to_owned())
    }

    pub(super) async fn check_nested<C: ConnectionTrait>(
        &self,
        conn: &C,
        refs: &[(String, &'static str, Uuid)],
        system: bool,
    ) -> Result<()> {
        let mut by_collection: HashMap<&str, Vec<Uuid>> = HashMap::new();
        for (_, c, id) in refs {
            by_collection.entry(c).or_default().push(*id);
        }
        for (collection, ids) in by_collection {
            let target = crate::registry::registry()
                .collection(collection)
                .ok_or_else(|| {
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
            if !system {
                self.check_readable(conn, first, target, &ids).await?;
            }
        }
        Ok(())
    }

    pub(super) async fn check_custom_fields<R: Resource, C: ConnectionTrait>(
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
        let written = async {
            let tx = self.begin().await?;
            if !request_id.is_empty() {
                journal::remember_request(
                    tx.conn(),
                    self.tenant(),
                    R::COLLECTION,
                    request_id,
                    &hash,
                    id,
                    self.clock.now(),
                )
                .await?;
            }
            let rec = tx.insert(id, data, request_id).await?;
            tx.commit().await?;
            Ok::<_, Error>(rec)
        }
        .await;
        match written {
            Ok(rec) => self.mask_record(rec),
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
    /// `create`, and any failure writes none of them. See [`Tx::create_many`].
    pub async fn create_many<R: Resource>(&self, items: Vec<(Uuid, R)>) -> Result<usize> {
        let tx = self.begin().await?;
        let n = tx.create_many(items).await?;
        tx.commit().await?;
        Ok(n)
    }

    /// Update the fields named in `mask` from `patch`. `etag`, when given, must be current.
    pub async fn update<R: Resource>(
        &self,
        id: Uuid,
        patch: R,
        mask: &[String],
        etag: &str,
    ) -> Result<Record<R>> {
        let tx = self.begin().await?;
        let rec = tx.update_unmasked(id, patch, mask, etag, false).await?;
        tx.commit().await?;
        self.mask_record(rec)
    }

    /// Soft delete, recorded in the audit trail and as an event.
    pub async fn delete<R: Resource>(&self, id: Uuid, etag: &str) -> Result<()> {
        let tx = self.begin().await?;
        tx.delete::<R>(id, etag).await?;
        tx.commit().await
    }

    /// Begins a write transaction for a use case with several writes: every write through
    /// the returned [`Tx`] is permission-checked, audited and evented exactly like the
    /// single-write methods, and all of them commit together ([`Tx::commit`]) or not at all
    /// (dropping the `Tx`, or any error, rolls everything back).
    pub async fn begin(&self) -> Result<Tx<'_>> {
        Ok(Tx {
            ctx: self,
            txn: self.db.begin_write().await?,
            written: std::sync::Mutex::new(Vec::new()),
            deferred: std::sync::Mutex::new(std::collections::BTreeMap::new()),
        })
    }

    /// Everything of a create before it is written: rights, field rules, validation, the
    /// default owner and the create scope.
    async fn prepare_create<R: Resource, C: ConnectionTrait>(
        &self,
        conn: &C,
        id: Uuid,
        data: R,
    ) -> Result<Prepared<R>> {
        self.prepare_create_as(conn, id, data, false).await
    }

    /// [`Ctx::prepare_create`], or as the system (no rights, scope or field rules checked).
    async fn prepare_create_as<R: Resource, C: ConnectionTrait>(
        &self,
        conn: &C,
        id: Uuid,
        mut data: R,
        system: bool,
    ) -> Result<Prepared<R>> {
        let as_system = system;
        let scopes = if system {
            None
        } else {
            let scopes = self.scopes::<R>(Action::Create)?;
            let raw = store::to_object(&data)?;
            let set: Vec<&'static str> = R::FIELDS
                .iter()
                .filter(|f| raw.get(f.name).is_some_and(|v| !is_empty(v)))
                .map(|f| f.name)
                .collect();
            self.check_writable::<R>(&set)?;
            Some(scopes)
        };
        data.validate()?;
        data.derive();
        let obj = store::to_object(&data)?;
        // The create scope is checked as if the caller owned what they name no owner for;
        // the record itself keeps no owner until its `before_write` hook has run (a hook
        // may route it), and then gets the caller when it still has none.
        let in_scope = match scopes {
            None => true,
            Some(scopes) if R::OWNED && ref_of(&obj, "owner").is_none() => {
                let mut owned = obj.clone();
                owned.insert(
                    "owner".into(),
                    Json::String(self.principal.user.to_string()),
                );
                self.in_scope::<R, _>(conn, scopes, &owned).await?
            }
            Some(scopes) => self.in_scope::<R, _>(conn, scopes, &obj).await?,
        };
        if !in_scope {
            return Err(self.out_of_scope::<R>(Action::Create, id));
        }
        let now = self.clock.now();
        Ok(Prepared {
            system: as_system,
            meta: Meta {
                id,
                revision: 1,
                create_time: now,
                update_time: now,
            },
            data,
            obj,
        })
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
        let mut entries = journal::Entries::default();
        self.journal_into::<R>(&mut entries, meta, action, changes, obj, request_id)?;
        entries.write(conn).await
    }

    /// Gathers what a write leaves behind (audit record, ownership change, event) into
    /// `entries`; nothing for a [`Resource::DERIVED`] collection.
    fn journal_into<R: Resource>(
        &self,
        entries: &mut journal::Entries,
        meta: &Meta,
        action: AuditAction,
        changes: &[FieldChange],
        obj: &Map<String, Json>,
        request_id: &str,
    ) -> Result<()> {
        if R::DERIVED {
            return Ok(());
        }
        let tenant = self.tenant();
        let named: Vec<FieldChange> = changes
            .iter()
            .map(|c| match resource::field::<R>(&c.field) {
                Some(f) if f.bulk => FieldChange {
                    field: c.field.clone(),
                    old: journal::bulk_digest(&c.old),
                    new: journal::bulk_digest(&c.new),
                },
                Some(f) => FieldChange {
                    field: c.field.clone(),
                    old: journal::named_refs(f.kind, &c.old),
                    new: journal::named_refs(f.kind, &c.new),
                },
                None => c.clone(),
            })
            .collect();
        entries.audit(
            tenant,
            R::COLLECTION,
            meta.id,
            action,
            self.principal.user,
            meta.update_time,
            &named,
            request_id,
        )?;
        if R::OWNED
            && let Some(c) = changes.iter().find(|c| c.field == "owner")
        {
            let parse = |v: &Json| v.as_str().and_then(|s| Uuid::try_parse(s).ok());
            entries.ownership(
                tenant,
                R::COLLECTION,
                meta.id,
                parse(&c.old),
                parse(&c.new),
                self.principal.user,
                meta.update_time,
            );
        }
        let payload = serde_json::json!({
            "resource": format!("{}/{}", R::COLLECTION, meta.id),
            "revision": meta.revision,
            "actor": format!("users/{}", self.principal.user),
            "changed_fields": changes.iter().map(|c| c.field.as_str()).collect::<Vec<_>>(),
            "data": if action == AuditAction::Delete {
                Json::Null
            } else {
                let mut data = obj.clone();
                for f in R::FIELDS.iter().filter(|f| f.bulk) {
                    if let Some(v) = data.get_mut(f.name) {
                        *v = journal::bulk_digest(v);
                    }
                }
                Json::Object(data)
            },
        });
        entries.event(
            tenant,
            R::COLLECTION,
            meta.id,
            action,
            meta.update_time,
            &payload,
        )
    }
}

/// A reference changed by [`Tx::repoint_references`]: `field` of `collection`/`id`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RefChange {
    /// The collection of the record changed.
    pub collection: String,
    /// The record changed.
    pub id: Uuid,
    /// Its reference field.
    pub field: String,
}

/// [`Collection::set_ref`] of `R` (what [`Collection::of`] puts there).
pub fn set_ref_of<'a, R: Resource>(
    tx: &'a Tx<'a>,
    id: Uuid,
    field: &'static str,
    from: Option<Uuid>,
    to: Uuid,
) -> crate::resource::RefFuture<'a> {
    Box::pin(async move {
        let Some((meta, mut obj)) =
            store::fetch_for_update::<R, _>(tx.conn(), tx.ctx.tenant(), id).await?
        else {
            return Ok(false);
        };
        if ref_of(&obj, field) != from {
            return Ok(false);
        }
        obj.insert(field.to_owned(), Json::String(to.to_string()));
        let patch: R = store::from_object(obj)?;
        tx.update_unmasked(id, patch, &[field.to_owned()], &meta.etag(), true)
            .await?;
        Ok(true)
    })
}

/// A record found by [`Tx::records_with_keys`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMatch {
    /// The record's collection.
    pub collection: String,
    /// The record's id.
    pub id: Uuid,
    /// How many of the looked-up keys it has.
    pub shared: u32,
}

/// What [`Tx::records_with_keys`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyMatches {
    /// The records, those sharing the most keys first.
    pub records: Vec<KeyMatch>,
    /// The keys skipped because more records than the lookup's `per_key` have them.
    pub stop_keys: Vec<String>,
}

/// A write transaction: the handle a use case with several writes holds and passes on
/// (to its hooks, to other crates' use cases). Every write through it is checked, audited
/// and evented like the single-write methods of [`Ctx`], each with its own audit record and
/// event, in order; [`Tx::commit`] commits them all, and dropping the `Tx` without
/// committing (an error, a `?`) rolls all of them back. On SQLite the `Tx` holds the one
/// writer's turn: inside it, write only through it (never through `Ctx`'s own write methods,
/// which would wait for the turn the `Tx` holds).
pub struct Tx<'c> {
    ctx: &'c Ctx,
    txn: WriteTxn,
    /// Collections written so far, for the configuration cache ([`crate::cache`]).
    written: std::sync::Mutex<Vec<&'static str>>,
    /// Counter additions applied at commit, in key order ([`Tx::add_to_counter_at_commit`]).
    deferred: std::sync::Mutex<std::collections::BTreeMap<String, i64>>,
}

impl<'c> Tx<'c> {
    /// The request context (caller, policy, clock).
    pub fn ctx(&self) -> &'c Ctx {
        self.ctx
    }

    /// The transaction's connection, for reads that must see this transaction's writes
    /// (build them with the context's permission-aware read helpers). Never write
    /// through it: writes go through the methods of `Tx`, which audit and event them.
    pub fn conn(&self) -> &DatabaseTransaction {
        &self.txn.txn
    }

    pub async fn commit(self) -> Result<()> {
        let deferred = self
            .deferred
            .lock()
            .map(|mut d| std::mem::take(&mut *d))
            .map_err(|_| Error::internal("counter additions were lost"))?;
        for (key, delta) in deferred {
            if delta != 0 {
                self.upsert_counter(&key, delta, delta, false).await?;
            }
        }
        self.txn.commit().await?;
        crate::outbox::wake();
        if let Ok(written) = self.written.lock() {
            let cache = self.ctx.db.config_cache();
            for c in written.iter() {
                cache.written(self.ctx.tenant(), c);
            }
        }
        Ok(())
    }

    /// Whether this transaction wrote a record of `collection`.
    fn has_written(&self, collection: &str) -> bool {
        self.written
            .lock()
            .map_or(true, |w| w.contains(&collection))
    }

    /// [`Tx::find`] for tenant configuration read on hot write paths (the active policy of
    /// its kind, a small tree), kept per process for a moment ([`crate::cache`]): the same
    /// `key` must always stand for the same `cond` and `limit`. A transaction that wrote
    /// `R` itself reads the database, so it sees its own writes; a write committed through
    /// the same [`Db`](crate::db::Db) is seen at once, one through another replica within
    /// the configured cache time.
    pub async fn find_cached<R: Resource>(
        &self,
        key: &str,
        cond: Condition,
        limit: u64,
    ) -> Result<Arc<Vec<Record<R>>>> {
        if self.has_written(R::COLLECTION) {
            return Ok(Arc::new(self.find::<R>(cond, limit).await?));
        }
        let cache = self.ctx.db.config_cache();
        let tenant = self.ctx.tenant();
        match cache.get::<Vec<Record<R>>>(tenant, R::COLLECTION, key) {
            Ok(v) => Ok(v),
            Err(ticket) => {
                let v = Arc::new(self.find::<R>(cond, limit).await?);
                cache.put(tenant, R::COLLECTION, key, ticket, v.clone());
                Ok(v)
            }
        }
    }

    /// Creates a record (id chosen here); the answer is masked by the caller's field rules.
    pub async fn create<R: Resource>(&self, data: R) -> Result<Record<R>> {
        self.create_with_id(new_id(), data).await
    }

    /// Creates a record with a chosen id.
    pub async fn create_with_id<R: Resource>(&self, id: Uuid, data: R) -> Result<Record<R>> {
        let rec = self.insert(id, data, "").await?;
        self.ctx.mask_record(rec)
    }

    /// Gets a record as the caller may see it, reading inside the transaction.
    pub async fn get<R: Resource>(&self, id: Uuid) -> Result<Record<R>> {
        self.ctx.get_in(self.conn(), id).await
    }

    /// Live records of the tenant matching `cond` (columns by their column names), in id
    /// order, at most `limit`, read inside the transaction **as the system**: no record scope
    /// and no field rules apply. For what a hook or a use case needs whatever the caller's
    /// rights (the tenant's active routing rules, the counters of a target pool); anything
    /// shown to the caller comes from [`Tx::get`] or [`Ctx::list`], or is masked with
    /// [`Ctx::mask_object`].
    pub async fn find<R: Resource>(&self, cond: Condition, limit: u64) -> Result<Vec<Record<R>>> {
        let rows = store::list::<R, _>(
            self.conn(),
            self.ctx.tenant(),
            cond,
            &[("id", false)],
            limit,
        )
        .await?;
        Ok(
            store::decode_rows::<R>(&rows, &vec![false; R::FIELDS.len()])?
                .into_iter()
                .map(|(meta, data)| Record {
                    meta,
                    data,
                    hidden: Vec::new(),
                })
                .collect(),
        )
    }

    /// The tenant's counter `key` (0 when new), locked until this transaction ends: another
    /// transaction taking the same counter waits for this one to commit or roll back (on
    /// SQLite the single writer already serialises them). For use cases that must not
    /// interleave with others of their kind: round-robin assignment, capacity limits,
    /// numbering. Store the next value with [`Tx::set_counter`].
    pub async fn lock_counter(&self, key: &str) -> Result<i64> {
        Ok(self.upsert_counter(key, 0, 0, false).await? + self.pending_counter(key).unwrap_or(0))
    }

    /// What this transaction adds to the counter `key` at commit, if it adds to it.
    pub fn pending_counter(&self, key: &str) -> Option<i64> {
        self.deferred.lock().ok().and_then(|d| d.get(key).copied())
    }

    /// Adds `delta` to the tenant's counter `key` (a new counter starts at 0) when this
    /// transaction commits: the additions of a transaction are summed per key and applied
    /// just before the commit, in key order, so a transaction that adds to many counters
    /// (an import batch touching the loads of many owners) holds their rows only for the
    /// commit and never deadlocks with another doing the same in another order. Until then
    /// [`Tx::counters`] and [`Tx::lock_counter`] count them in; [`Tx::set_counter`] drops
    /// them.
    pub fn add_to_counter_at_commit(&self, key: &str, delta: i64) {
        if let Ok(mut d) = self.deferred.lock() {
            *d.entry(key.to_owned()).or_insert(0) += delta;
        }
    }

    /// `INSERT` the tenant's counter `key` at `start`, or add `delta` to it, and return its
    /// value: the one statement behind [`Tx::lock_counter`] (0, 0: the row is locked, not
    /// changed), [`Tx::add_to_counter`] and [`Tx::take_ticket`]. With `side` it runs on
    /// PostgreSQL's side pool, outside this transaction.
    async fn upsert_counter(&self, key: &str, start: i64, delta: i64, side: bool) -> Result<i64> {
        let backend = self.conn().get_database_backend();
        let sql = match backend {
            sea_orm::DbBackend::Postgres => {
                "INSERT INTO counters (tenant_id, counter_key, value) VALUES ($1, $2, $3) \
                 ON CONFLICT (tenant_id, counter_key) DO UPDATE SET value = counters.value + $4 \
                 RETURNING value"
            }
            _ => {
                "INSERT INTO counters (tenant_id, counter_key, value) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (tenant_id, counter_key) DO UPDATE SET value = counters.value + ?4 \
                 RETURNING value"
            }
        };
        let stmt = sea_orm::Statement::from_sql_and_values(
            backend,
            sql,
            [
                sea_orm::Value::from(self.ctx.tenant()),
                sea_orm::Value::from(key),
                sea_orm::Value::from(start),
                sea_orm::Value::from(delta),
            ],
        );
        let row = match (side, backend, self.ctx.db.side()) {
            (true, sea_orm::DbBackend::Postgres, Some(pool)) => pool.query_one_raw(stmt).await?,
            _ => self.conn().query_one_raw(stmt).await?,
        };
        let row = row.ok_or_else(|| Error::internal("the counter upsert returned no row"))?;
        Ok(row.try_get::<i64>("", "value")?)
    }

    /// Stores a counter's next value with this transaction (see [`Tx::lock_counter`]).
    pub async fn set_counter(&self, key: &str, value: i64) -> Result<()> {
        if let Ok(mut d) = self.deferred.lock() {
            d.remove(key);
        }
        let mut q = Query::update();
        q.table(col("counters"))
            .value(col("value"), value)
            .and_where(Expr::col(col("tenant_id")).eq(self.ctx.tenant()))
            .and_where(Expr::col(col("counter_key")).eq(key));
        let n = self.conn().execute(&q).await?.rows_affected();
        if n == 1 {
            Ok(())
        } else {
            Err(Error::failed_precondition(
                "COUNTER_NOT_LOCKED",
                format!("counter {key} must be taken with lock_counter first"),
            ))
        }
    }

    /// Adds `delta` to the tenant's counter `key` (a new counter starts at 0) with this
    /// transaction and returns its new value. The counter stays locked until the
    /// transaction ends, so take it as late as the use case allows (a write observer runs
    /// after the record's row, audit record and event).
    pub async fn add_to_counter(&self, key: &str, delta: i64) -> Result<i64> {
        self.upsert_counter(key, delta, delta, false).await
    }

    /// Creates the tenant's counter `key` with `value` unless it exists (then it is left
    /// as it is); true when this call created it. For counters that sum up existing data:
    /// count it once, then keep the counter up to date with [`Tx::add_to_counter`].
    pub async fn init_counter(&self, key: &str, value: i64) -> Result<bool> {
        let mut q = Query::insert();
        q.into_table(col("counters"))
            .columns([col("tenant_id"), col("counter_key"), col("value")])
            .values([self.ctx.tenant().into(), key.into(), value.into()])
            .map_err(|e| Error::internal(format!("counter: {e}")))?
            .on_conflict(
                sea_orm::sea_query::OnConflict::columns([col("tenant_id"), col("counter_key")])
                    .do_nothing()
                    .to_owned(),
            );
        Ok(self.conn().execute(&q).await?.rows_affected() == 1)
    }

    /// The current values of the tenant's counters `keys` that exist (read, not locked),
    /// with what this transaction adds at commit.
    pub async fn counters(&self, keys: &[String]) -> Result<HashMap<String, i64>> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let mut q = Query::select();
        q.columns([col("counter_key"), col("value")])
            .from(col("counters"))
            .and_where(Expr::col(col("tenant_id")).eq(self.ctx.tenant()))
            .and_where(Expr::col(col("counter_key")).is_in(keys.iter().map(String::as_str)));
        let mut values = self
            .conn()
            .query_all(&q)
            .await?
            .iter()
            .map(|r| {
                Ok((
                    r.try_get::<String>("", "counter_key")?,
                    r.try_get::<i64>("", "value")?,
                ))
            })
            .collect::<Result<HashMap<String, i64>>>()?;
        if let Ok(d) = self.deferred.lock() {
            for k in keys {
                if let Some(delta) = d.get(k) {
                    *values.entry(k.clone()).or_insert(0) += delta;
                }
            }
        }
        Ok(values)
    }

    /// Updates a record (see [`Ctx::update`]).
    pub async fn update<R: Resource>(
        &self,
        id: Uuid,
        patch: R,
        mask: &[String],
        etag: &str,
    ) -> Result<Record<R>> {
        let rec = self.update_unmasked(id, patch, mask, etag, false).await?;
        self.ctx.mask_record(rec)
    }

    /// Brings back a soft-deleted record (AIP-164 Undelete), audited (`UNDELETE`) and evented
    /// (`<collection>.undeleted`), its observers and hooks told. Needs the right to delete
    /// it; its references must still hold. NOT_FOUND when `id` is not a deleted record of
    /// the tenant.
    pub async fn undelete<R: Resource>(&self, id: Uuid) -> Result<Record<R>> {
        let ctx = self.ctx;
        let conn = self.conn();
        let scopes = ctx.scopes::<R>(Action::Delete)?;
        let Some((meta, obj)) =
            store::fetch_deleted_for_update::<R, _>(conn, ctx.tenant(), id).await?
        else {
            return Err(Error::not_found(format!(
                "{}/{id} (no deleted record)",
                R::COLLECTION
            )));
        };
        if !ctx.in_scope::<R, _>(conn, scopes, &obj).await? {
            return Err(ctx.out_of_scope::<R>(Action::Delete, id));
        }
        ctx.check_references::<R, _>(conn, id, &obj, None, false)
            .await?;
        let now = std::cmp::max(ctx.clock.now(), meta.update_time);
        if !store::undelete::<R, _>(conn, ctx.tenant(), id, meta.revision, now).await? {
            return Err(stale::<R>(id));
        }
        let meta = Meta {
            revision: meta.revision + 1,
            update_time: now,
            ..meta
        };
        ctx.journal::<R, _>(conn, &meta, AuditAction::Undelete, &[], &obj, "")
            .await?;
        self.notify::<R>(AuditAction::Undelete, id, &obj, None)
            .await?;
        let rec = Record {
            meta,
            data: store::from_object(obj)?,
            hidden: Vec::new(),
        };
        R::after_write(self, AuditAction::Undelete, &rec).await?;
        self.ctx.mask_record(rec)
    }

    /// Points every live record of the tenant that refers to `from` of the collection
    /// `target` (any registered collection's `Ref(target)` field) at `to` instead: a merge
    /// moves orders, positions, activities and the like to the surviving record. Each
    /// record changed is updated as the system (the caller's scope over it does not
    /// matter) and audited and evented as an update by the caller, with its observers and
    /// hooks. Returns what was changed, so it can be put back with
    /// [`Tx::set_references`]. `to` must exist; a tree field that would make a cycle is
    /// refused as on any update.
    pub async fn repoint_references(
        &self,
        target: &str,
        from: Uuid,
        to: Uuid,
    ) -> Result<Vec<RefChange>> {
        let mut changed = Vec::new();
        for c in crate::registry::registry().collections() {
            for f in c.fields {
                if !matches!(f.kind, Kind::Ref(t) if t == target) {
                    continue;
                }
                for id in
                    store::ids_referring(self.conn(), self.ctx.tenant(), c.table, f.column, from)
                        .await?
                {
                    if (c.set_ref)(self, id, f.name, Some(from), to).await? {
                        changed.push(RefChange {
                            collection: c.name.to_owned(),
                            id,
                            field: f.name.to_owned(),
                        });
                    }
                }
            }
        }
        Ok(changed)
    }

    /// Sets the listed references from `from` to `to` (as [`Tx::repoint_references`] does),
    /// skipping those that no longer hold `from` or whose record is gone; returns those
    /// changed. Undoing a merge puts its references back with it.
    pub async fn set_references(
        &self,
        changes: &[RefChange],
        from: Uuid,
        to: Uuid,
    ) -> Result<Vec<RefChange>> {
        let reg = crate::registry::registry();
        let mut done = Vec::new();
        for ch in changes {
            let Some(c) = reg.collection(&ch.collection) else {
                continue;
            };
            let Some(f) = c.fields.iter().find(|f| f.name == ch.field) else {
                continue;
            };
            if (c.set_ref)(self, ch.id, f.name, Some(from), to).await? {
                done.push(ch.clone());
            }
        }
        Ok(done)
    }

    /// Sets the empty reference field `field` of the record `id` of `collection` (any
    /// registered collection, also another crate's) to `to`, as the system (the caller's
    /// scope over the record does not matter), audited and evented as an update by the
    /// caller, with its hooks and observers. False when the record is gone or the field is
    /// no longer empty (someone linked it first); INVALID_ARGUMENT when the collection has
    /// no such reference field. For links a domain rule makes: an interaction from an
    /// unknown sender linked to the lead made for it.
    pub async fn link(&self, collection: &str, id: Uuid, field: &str, to: Uuid) -> Result<bool> {
        let reg = crate::registry::registry();
        let c = reg.collection(collection).ok_or_else(|| {
            Error::invalid("collection", format!("{collection} is not registered"))
        })?;
        let f = c
            .fields
            .iter()
            .find(|f| f.name == field && matches!(f.kind, Kind::Ref(_)))
            .ok_or_else(|| {
                Error::invalid(
                    "field",
                    format!("{collection} has no reference field {field}"),
                )
            })?;
        (c.set_ref)(self, id, f.name, None, to).await
    }

    /// Creates a record as the system inside this transaction: no create right, record
    /// scope or field rule of the caller applies (validation, hooks, audit, events and
    /// observers do; the audit names the caller as the actor, and a record with an owner
    /// gets the caller when its hooks name none). For records a tenant's own rule makes on
    /// the caller's behalf (a lead for an unknown e-mail sender); never for what a caller
    /// asked for directly. The record returned is as stored (not masked).
    pub async fn create_as_system<R: Resource>(&self, data: R) -> Result<Record<R>> {
        let p = self
            .ctx
            .prepare_create_as(self.conn(), new_id(), data, true)
            .await?;
        self.write_prepared(p, "").await
    }

    /// Creates many records in this transaction, each checked as [`Tx::create`] checks one
    /// (rights, field rules, validation, hooks, references, custom fields, observers), with
    /// the database work done for all of them together: the references of every record looked
    /// up at once per target collection, and the rows, audit records and events inserted many
    /// per statement. An error names the record (`items[3].contact`) and nothing of the call
    /// is kept (the transaction is rolled back when it is dropped uncommitted). References
    /// are checked before any of the records is written, so records of one call cannot refer
    /// to each other; records of a tree (a [`Resource::TREE_PARENT`]) are written one at a
    /// time, for the cycle checks, and may.
    pub async fn create_many<R: Resource>(&self, items: Vec<(Uuid, R)>) -> Result<usize> {
        self.bulk_insert(items, false).await
    }

    /// [`Tx::create_many`] as the system (see [`Tx::create_as_system`]): for records a job
    /// computes for the tenant (a run's results), whatever the rights of whom it acts for.
    pub async fn create_many_as_system<R: Resource>(&self, items: Vec<(Uuid, R)>) -> Result<usize> {
        self.bulk_insert(items, true).await
    }

    async fn bulk_insert<R: Resource>(&self, items: Vec<(Uuid, R)>, system: bool) -> Result<usize> {
        let ctx = self.ctx;
        let conn = self.conn();
        let n = items.len();
        let at = |i: usize| move |e: Error| e.in_field(&format!("items[{i}]"));
        if R::TREE_PARENT.is_some() {
            for (i, (id, data)) in items.into_iter().enumerate() {
                let p = ctx
                    .prepare_create_as(conn, id, data, system)
                    .await
                    .map_err(at(i))?;
                self.write_prepared(p, "").await.map_err(at(i))?;
            }
            return Ok(n);
        }
        let defs = if R::CUSTOM_FIELDS {
            Some(crate::model::custom_field::definitions(conn, ctx.tenant(), R::COLLECTION).await?)
        } else {
            None
        };
        let mut prepared = Vec::with_capacity(n);
        for (i, (id, data)) in items.into_iter().enumerate() {
            let mut p = ctx
                .prepare_create_as(conn, id, data, system)
                .await
                .map_err(at(i))?;
            self.before_insert(&mut p).await.map_err(at(i))?;
            if let Some(defs) = &defs {
                crate::model::custom_field::validate_values(defs, p.obj.get("custom_fields"))
                    .map_err(at(i))?;
            }
            prepared.push(p);
        }
        self.check_references_of_many::<R>(&prepared).await?;
        let rows: Vec<(&Meta, &Map<String, Json>)> =
            prepared.iter().map(|p| (&p.meta, &p.obj)).collect();
        store::insert_many::<R, _>(conn, ctx.tenant(), &rows).await?;
        let mut entries = journal::Entries::default();
        for p in &prepared {
            ctx.journal_into::<R>(
                &mut entries,
                &p.meta,
                AuditAction::Create,
                &created_fields::<R>(&p.obj),
                &p.obj,
                "",
            )?;
        }
        entries.write(conn).await?;
        for (i, p) in prepared.into_iter().enumerate() {
            self.notify::<R>(AuditAction::Create, p.meta.id, &p.obj, None)
                .await
                .map_err(at(i))?;
            let rec = Record {
                meta: p.meta,
                data: p.data,
                hidden: Vec::new(),
            };
            R::after_write(self, AuditAction::Create, &rec)
                .await
                .map_err(at(i))?;
        }
        Ok(n)
    }

    /// The references of many records to be created, checked as [`Ctx::check_references`]
    /// and [`Ctx::check_nested`] check one record's, with one lookup per target collection
    /// (per 10,000 ids); an error names the record.
    async fn check_references_of_many<R: Resource>(&self, items: &[Prepared<R>]) -> Result<()> {
        let ctx = self.ctx;
        let conn = self.conn();
        // Target collection -> every reference to it: (item, field path, id).
        let mut by_target: HashMap<&'static str, Vec<(usize, String, Uuid)>> = HashMap::new();
        for f in R::FIELDS {
            let target = match f.kind {
                Kind::Ref(c) | Kind::RefList(c) => c,
                _ => continue,
            };
            for (i, p) in items.iter().enumerate() {
                let ids = ctx
                    .referenced(f, &p.obj)
                    .map(|(_, ids)| ids)
                    .unwrap_or_default();
                by_target
                    .entry(target)
                    .or_default()
                    .extend(ids.into_iter().map(|id| (i, f.name.to_owned(), id)));
            }
        }
        for (i, p) in items.iter().enumerate() {
            // Each nested reference keeps its own path in the error.
            for (path, c, id) in p.data.nested_refs() {
                by_target.entry(c).or_default().push((i, path, id));
            }
        }
        let mut targets: Vec<_> = by_target.into_iter().collect();
        targets.sort_by_key(|(t, _)| *t);
        for (target, refs) in targets {
            if refs.is_empty() {
                continue;
            }
            let target = crate::registry::registry()
                .collection(target)
                .ok_or_else(|| {
                    Error::internal(format!(
                        "{} refers to the unknown collection {target}",
                        R::COLLECTION
                    ))
                })?;
            let mut ids: Vec<Uuid> = refs.iter().map(|(_, _, id)| *id).collect();
            ids.sort_unstable();
            ids.dedup();
            let mut found = std::collections::HashSet::with_capacity(ids.len());
            let mut hidden = std::collections::HashSet::new();
            for chunk in ids.chunks(10_000) {
                found.extend(
                    store::existing_ids(conn, ctx.tenant(), target.table, chunk, false).await?,
                );
                if !items.iter().all(|p| p.system) {
                    let field = refs.first().map_or("", |(_, f, _)| f.as_str());
                    hidden.extend(ctx.unreadable(conn, field, target, chunk).await?);
                }
            }
            for (i, field, id) in &refs {
                if !found.contains(id) {
                    return Err(Error::invalid(
                        format!("items[{i}].{field}"),
                        format!("{}/{id} does not exist", target.name),
                    ));
                }
                if !items[*i].system && hidden.contains(id) {
                    return Err(ctx.unreadable_ref(&format!("items[{i}].{field}"), target, *id));
                }
            }
        }
        Ok(())
    }

    /// The whole of a create: checks, the hook, the row and its journal; the record
    /// returned is not masked yet.
    async fn insert<R: Resource>(&self, id: Uuid, data: R, request_id: &str) -> Result<Record<R>> {
        let p = self.ctx.prepare_create(self.conn(), id, data).await?;
        self.write_prepared(p, request_id).await
    }

    async fn write_prepared<R: Resource>(
        &self,
        mut p: Prepared<R>,
        request_id: &str,
    ) -> Result<Record<R>> {
        let ctx = self.ctx;
        let conn = self.conn();
        self.before_insert(&mut p).await?;
        ctx.check_references::<R, _>(conn, p.meta.id, &p.obj, None, p.system)
            .await?;
        ctx.check_nested(conn, &p.data.nested_refs(), p.system)
            .await?;
        ctx.check_custom_fields::<R, _>(conn, &p.obj).await?;
        store::insert::<R, _>(conn, ctx.tenant(), &p.meta, &p.obj).await?;
        ctx.journal::<R, _>(
            conn,
            &p.meta,
            AuditAction::Create,
            &created_fields::<R>(&p.obj),
            &p.obj,
            request_id,
        )
        .await?;
        self.notify::<R>(AuditAction::Create, p.meta.id, &p.obj, None)
            .await?;
        let rec = Record {
            meta: p.meta,
            data: p.data,
            hidden: Vec::new(),
        };
        R::after_write(self, AuditAction::Create, &rec).await?;
        Ok(rec)
    }

    /// A create's `before_write` hook, the default owner, and the checks of what the hook
    /// changed (validation, enums).
    async fn before_insert<R: Resource>(&self, p: &mut Prepared<R>) -> Result<()> {
        R::before_write(self, p.meta.id, None, &mut p.data).await?;
        let mut after = store::to_object(&p.data)?;
        if R::OWNED && ref_of(&after, "owner").is_none() {
            // Neither the caller nor the hook named an owner: the caller owns it (no change
            // of the hook's, so no second validation for it).
            let me = Json::String(self.ctx.principal.user.to_string());
            after.insert("owner".into(), me.clone());
            p.obj.insert("owner".into(), me);
            p.data = store::from_object(after.clone())?;
        }
        if after != p.obj {
            // The hook changed the record: what it stores must be valid too.
            p.data.validate()?;
            p.data.derive();
            p.obj = store::to_object(&p.data)?;
        }
        check_enums::<R>(&p.obj)
    }

    async fn update_unmasked<R: Resource>(
        &self,
        id: Uuid,
        patch: R,
        mask: &[String],
        etag: &str,
        system: bool,
    ) -> Result<Record<R>> {
        let ctx = self.ctx;
        let conn = self.conn();
        let scopes = if system {
            None
        } else {
            Some(ctx.scopes::<R>(Action::Update)?)
        };
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
            if !f.mutable && !system {
                return Err(Error::invalid(
                    "update_mask",
                    format!("field {m:?} cannot be changed"),
                ));
            }
            if !paths.contains(&f.name) {
                paths.push(f.name);
            }
        }
        if !system {
            ctx.check_writable::<R>(&paths)?;
        }
        let expected = parse_etag(etag)?;
        let incoming = store::to_object(&patch)?;

        let Some((meta, old)) = store::fetch::<R, _>(conn, ctx.tenant(), id).await? else {
            return Err(Error::not_found(format!("{}/{id}", R::COLLECTION)));
        };
        if let Some(scopes) = scopes
            && !ctx.in_scope::<R, _>(conn, scopes, &old).await?
        {
            return Err(ctx.out_of_scope::<R>(Action::Update, id));
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
        let mut new = store::to_object(&data)?;
        let stored: R = store::from_object(old.clone())?;
        R::before_write(self, id, Some(&stored), &mut data).await?;
        let after = store::to_object(&data)?;
        if after != new {
            // The hook changed the record: what it stores must be valid too.
            data.validate()?;
            data.derive();
            new = store::to_object(&data)?;
        }
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
            return Ok(Record {
                meta,
                data: stored,
                hidden: Vec::new(),
            });
        }
        let changed: Vec<&'static str> = R::FIELDS
            .iter()
            .filter(|f| changes.iter().any(|c| c.field == f.name))
            .map(|f| f.name)
            .collect();
        check_enums::<R>(&new)?;
        ctx.check_references::<R, _>(conn, id, &new, Some(&changed), system)
            .await?;
        ctx.check_nested(conn, &data.nested_refs(), system).await?;
        if changed.contains(&"custom_fields") {
            ctx.check_custom_fields::<R, _>(conn, &new).await?;
        }
        let now = std::cmp::max(ctx.clock.now(), meta.update_time);
        if !store::update::<R, _>(conn, ctx.tenant(), id, meta.revision, now, &changed, &new)
            .await?
        {
            return Err(stale::<R>(id));
        }
        let meta = Meta {
            revision: meta.revision + 1,
            update_time: now,
            ..meta
        };
        ctx.journal::<R, _>(conn, &meta, AuditAction::Update, &changes, &new, "")
            .await?;
        self.notify::<R>(AuditAction::Update, id, &new, Some(&old))
            .await?;
        let rec = Record {
            meta,
            data,
            hidden: Vec::new(),
        };
        R::after_write(self, AuditAction::Update, &rec).await?;
        Ok(rec)
    }

    /// Tells the collection's registered observers of a write.
    async fn notify<R: Resource>(
        &self,
        action: AuditAction,
        id: Uuid,
        record: &Map<String, Json>,
        old: Option<&Map<String, Json>>,
    ) -> Result<()> {
        if let Ok(mut w) = self.written.lock()
            && !w.contains(&R::COLLECTION)
        {
            w.push(R::COLLECTION);
        }
        for observe in crate::registry::registry().observers_of(R::COLLECTION) {
            let event = crate::registry::WriteEvent {
                collection: R::COLLECTION,
                action,
                id,
                record,
                old,
            };
            observe(self, event).await?;
        }
        Ok(())
    }

    /// Replaces the keys `record` of `collection` has in the tenant's key space `space`
    /// (an empty list removes them): derived lookup keys another crate keeps for records,
    /// such as duplicate-matching blocking keys, written with this transaction. Keys are
    /// text of at most 512 bytes; longer ones are refused.
    pub async fn set_record_keys(
        &self,
        space: &str,
        collection: &str,
        record: Uuid,
        keys: &[String],
    ) -> Result<()> {
        let tenant = self.ctx.tenant();
        let mut del = Query::delete();
        del.from_table(col("record_keys"))
            .and_where(Expr::col(col("tenant_id")).eq(tenant))
            .and_where(Expr::col(col("key_space")).eq(space))
            .and_where(Expr::col(col("collection")).eq(collection))
            .and_where(Expr::col(col("record_id")).eq(record));
        self.conn().execute(&del).await?;
        let mut unique: Vec<&String> = keys.iter().collect();
        unique.sort();
        unique.dedup();
        if unique.is_empty() {
            return Ok(());
        }
        if let Some(k) = unique.iter().find(|k| k.len() > 512) {
            return Err(Error::invalid(
                "record_keys",
                format!("a key of {} bytes is over 512", k.len()),
            ));
        }
        for chunk in unique.chunks(200) {
            let mut ins = Query::insert();
            ins.into_table(col("record_keys")).columns([
                col("tenant_id"),
                col("key_space"),
                col("key_value"),
                col("collection"),
                col("record_id"),
            ]);
            for k in chunk {
                ins.values([
                    tenant.into(),
                    space.into(),
                    k.as_str().into(),
                    collection.into(),
                    record.into(),
                ])
                .map_err(|e| Error::internal(format!("record keys: {e}")))?;
            }
            self.conn().execute(&ins).await?;
        }
        Ok(())
    }

    /// Records of `collections` that have any of `keys` in the key space `space`
    /// (see [`Tx::set_record_keys`]), those sharing the most keys first, at most `limit`,
    /// read in this transaction as the system; the caller's rights apply to what is shown
    /// of them.
    ///
    /// A key held by more than `per_key` records is a *stop key* (a switchboard number, a
    /// common name in a big city): it tells records apart too poorly to be worth reading,
    /// so it is skipped and named in [`KeyMatches::stop_keys`]. Each key reads at most
    /// `per_key + 1` index entries, so a lookup costs the same at a thousand records or at
    /// ten million.
    pub async fn records_with_keys(
        &self,
        space: &str,
        keys: &[String],
        collections: &[&str],
        per_key: u64,
        limit: usize,
    ) -> Result<KeyMatches> {
        let mut unique: Vec<&String> = keys.iter().collect();
        unique.sort();
        unique.dedup();
        if unique.is_empty() || collections.is_empty() || limit == 0 {
            return Ok(KeyMatches::default());
        }
        let backend = self.conn().get_database_backend();
        let mut values: Vec<sea_orm::Value> = Vec::new();
        let param = |v: sea_orm::Value, values: &mut Vec<sea_orm::Value>| {
            values.push(v);
            match backend {
                sea_orm::DbBackend::Postgres => format!("${}", values.len()),
                _ => "?".to_owned(),
            }
        };
        let tenant = self.ctx.tenant();
        let mut parts = Vec::with_capacity(unique.len());
        for (i, k) in unique.iter().enumerate() {
            let t = param(tenant.into(), &mut values);
            let sp = param(space.into(), &mut values);
            let kv = param(k.as_str().into(), &mut values);
            let cs: Vec<String> = collections
                .iter()
                .map(|c| param((*c).into(), &mut values))
                .collect();
            // Each key on its own, in index order, capped: one index range per key.
            parts.push(format!(
                "SELECT key_value, collection, record_id FROM (SELECT key_value, collection,                  record_id FROM record_keys WHERE tenant_id = {t} AND key_space = {sp} AND                  key_value = {kv} AND collection IN ({}) ORDER BY collection, record_id                  LIMIT {}) AS k{i}",
                cs.join(", "),
                per_key.saturating_add(1),
            ));
        }
        let sql = parts.join(" UNION ALL ");
        let rows = self
            .conn()
            .query_all_raw(sea_orm::Statement::from_sql_and_values(
                backend, sql, values,
            ))
            .await?;
        let mut per: HashMap<String, Vec<(String, Uuid)>> = HashMap::new();
        for r in &rows {
            per.entry(r.try_get::<String>("", "key_value")?)
                .or_default()
                .push((
                    r.try_get::<String>("", "collection")?,
                    r.try_get::<Uuid>("", "record_id")?,
                ));
        }
        let mut out = KeyMatches::default();
        let mut shared: HashMap<(String, Uuid), u32> = HashMap::new();
        for (key, recs) in per {
            if u64::try_from(recs.len()).unwrap_or(u64::MAX) > per_key {
                out.stop_keys.push(key);
                continue;
            }
            for r in recs {
                *shared.entry(r).or_default() += 1;
            }
        }
        out.stop_keys.sort();
        let mut ranked: Vec<KeyMatch> = shared
            .into_iter()
            .map(|((collection, id), shared)| KeyMatch {
                collection,
                id,
                shared,
            })
            .collect();
        ranked.sort_by(|a, b| {
            b.shared
                .cmp(&a.shared)
                .then_with(|| a.collection.cmp(&b.collection))
                .then_with(|| a.id.cmp(&b.id))
        });
        ranked.truncate(limit);
        out.records = ranked;
        Ok(out)
    }

    /// The next number of the tenant's counter `key` (1 for a new counter), without holding
    /// the counter: on PostgreSQL it is taken in its own short statement, outside this
    /// transaction, so writers of every replica taking turns never wait on one another's
    /// commit; on SQLite (one writer at a time) within this transaction. No number is
    /// handed out twice; one taken by a transaction that then rolls back is skipped. For
    /// fair turns (round-robin) where a skipped number does no harm; for gapless numbering
    /// or limits that must hold exactly, use [`Tx::lock_counter`].
    pub async fn take_ticket(&self, key: &str) -> Result<i64> {
        self.upsert_counter(key, 1, 1, true).await
    }

    /// Soft-deletes a record (see [`Ctx::delete`]).
    pub async fn delete<R: Resource>(&self, id: Uuid, etag: &str) -> Result<()> {
        let ctx = self.ctx;
        let conn = self.conn();
        let scopes = ctx.scopes::<R>(Action::Delete)?;
        let expected = parse_etag(etag)?;
        let Some((meta, obj)) = store::fetch_for_update::<R, _>(conn, ctx.tenant(), id).await?
        else {
            return Err(Error::not_found(format!("{}/{id}", R::COLLECTION)));
        };
        if !ctx.in_scope::<R, _>(conn, scopes, &obj).await? {
            return Err(ctx.out_of_scope::<R>(Action::Delete, id));
        }
        if expected.is_some_and(|e| e != meta.revision) {
            return Err(stale::<R>(id));
        }
        if let Some(parent) = R::TREE_PARENT.and_then(resource::field::<R>)
            && store::has_live(conn, ctx.tenant(), R::TABLE, parent.column, id).await?
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
        let now = std::cmp::max(ctx.clock.now(), meta.update_time);
        if !store::soft_delete::<R, _>(conn, ctx.tenant(), id, meta.revision, now).await? {
            return Err(stale::<R>(id));
        }
        let meta = Meta {
            revision: meta.revision + 1,
            update_time: now,
            ..meta
        };
        ctx.journal::<R, _>(conn, &meta, AuditAction::Delete, &[], &obj, "")
            .await?;
        self.notify::<R>(AuditAction::Delete, id, &obj, None)
            .await?;
        let rec = Record {
            meta,
            data: store::from_object(obj)?,
            hidden: Vec::new(),
        };
        R::after_write(self, AuditAction::Delete, &rec).await
    }
}

/// Every enum field holds one of its names: a value this version does not define is
/// refused, never stored (typed resources cannot even build one; this guards the rest).
/// The changes a create records: every field it sets.
fn created_fields<R: Resource>(obj: &Map<String, Json>) -> Vec<FieldChange> {
    R::FIELDS
        .iter()
        .filter_map(|f| {
            let v = obj.get(f.name)?;
            (!is_empty(v)).then(|| FieldChange {
                field: f.name.to_owned(),
                old: Json::Null,
                new: v.clone(),
            })
        })
        .collect()
}

fn check_enums<R: Resource>(obj: &Map<String, Json>) -> Result<()> {
    for f in R::FIELDS {
        if let Kind::Enum(names) = f.kind {
            let v = obj.get(f.name).and_then(Json::as_str).unwrap_or_default();
            if !names.contains(&v) {
                return Err(Error::invalid(
                    f.name,
                    format!("{v:?} is not one of {}", names.join(", ")),
                ));
            }
        }
    }
    Ok(())
}
