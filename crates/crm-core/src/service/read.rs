//! Get, List and history checks.

use super::*;
use crate::codec;
use sea_orm::QueryResult;

impl Ctx {
    /// Get: NOT_FOUND when absent (or another tenant's), PERMISSION_DENIED when out of scope.
    pub async fn get<R: Resource>(&self, id: Uuid) -> Result<Record<R>> {
        self.get_in(&self.db.conn, id).await
    }

    /// Get on a given connection (a transaction's, to see its own writes).
    pub(super) async fn get_in<R: Resource, C: ConnectionTrait>(
        &self,
        conn: &C,
        id: Uuid,
    ) -> Result<Record<R>> {
        let scopes = self.scopes::<R>(Action::Read)?;
        let Some(row) = store::fetch_row::<R, _>(conn, self.tenant(), id).await? else {
            return Err(Error::not_found(format!("{}/{id}", R::COLLECTION)));
        };
        if !self
            .in_scope::<R, _>(conn, scopes, &scope_refs::<R>(scopes, &row)?)
            .await?
        {
            return Err(self.out_of_scope::<R>(Action::Read, id));
        }
        let (skip, hidden) = self.read_mask::<R>();
        let (meta, data) = store::decode_rows::<R>(std::slice::from_ref(&row), &skip)?
            .pop()
            .ok_or_else(|| Error::internal(format!("{}/{id} decoded to nothing", R::COLLECTION)))?;
        Ok(Record { meta, data, hidden })
    }

    /// Which fields of `R` the caller may not read: a flag per entry of `R::FIELDS` (for the
    /// row decoder) and their names (for [`Record::hidden`]).
    fn read_mask<R: Resource>(&self) -> (Vec<bool>, Vec<&'static str>) {
        let skip: Vec<bool> = R::FIELDS
            .iter()
            .map(|f| self.access::<R>(f.name) == FieldAccess::Hidden)
            .collect();
        let hidden = R::FIELDS
            .iter()
            .zip(&skip)
            .filter(|(_, s)| **s)
            .map(|(f, _)| f.name)
            .collect();
        (skip, hidden)
    }

    /// Checks the caller may read the history of a record of `c`: as for Get, but a
    /// soft-deleted record's history stays readable (to those whose scope covers it).
    pub async fn check_history(&self, c: &Collection, id: Uuid) -> Result<()> {
        let scopes = self.scopes_of(c, Action::Read)?;
        let conn = &self.db.conn;
        let tenant = self.tenant();
        let ids = [id];
        if store::ids_where(conn, tenant, c.table, &ids, Condition::all(), false, false)
            .await?
            .is_empty()
        {
            return Err(Error::not_found(format!("{}/{id}", c.name)));
        }
        if let Some(cond) = self.scope_condition_of(c, scopes).await?
            && store::ids_where(conn, tenant, c.table, &ids, cond, false, false)
                .await?
                .is_empty()
        {
            return Err(Error::permission_denied(
                "OUT_OF_SCOPE",
                format!("{}/{id} is outside the records your roles may read", c.name),
            )
            .with("resource", format!("{}/{id}", c.name)));
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
        let (skip, hidden) = self.read_mask::<R>();
        let records = store::decode_rows::<R>(&rows, &skip)?;
        let next_page_token = match (more, rows.last(), records.last()) {
            (true, Some(row), Some((meta, _))) => PageToken {
                v: terms
                    .iter()
                    .map(|t| match t.column {
                        "create_time" => Ok(Json::String(rfc3339(meta.create_time))),
                        "update_time" => Ok(Json::String(rfc3339(meta.update_time))),
                        // Read from the row: the value as stored, also of a field the
                        // caller may not read (such fields are not sortable anyway).
                        _ => match R::FIELDS.iter().find(|f| f.name == t.field) {
                            Some(f) => codec::from_db(f, row),
                            None => Ok(Json::Null),
                        },
                    })
                    .collect::<Result<Vec<_>>>()?,
                id: meta.id.to_string(),
                q: digest,
            }
            .encode(),
            _ => String::new(),
        };
        let items = records
            .into_iter()
            .map(|(meta, data)| Record {
                meta,
                data,
                hidden: hidden.clone(),
            })
            .collect();
        Ok(Page {
            items,
            next_page_token,
        })
    }
}

/// The fields of a stored row that [`Ctx::in_scope`] reads (owner and territory, or the
/// parent reference), as JSON; nothing when the scopes allow every record anyway.
fn scope_refs<R: Resource>(scopes: ScopeSet, row: &QueryResult) -> Result<Map<String, Json>> {
    let mut obj = Map::new();
    if scopes.all || (!R::OWNED && R::SCOPE_PARENT.is_none()) {
        return Ok(obj);
    }
    let parent = R::SCOPE_PARENT.map(|(column, _)| column);
    for f in R::FIELDS {
        if f.name == "owner" || f.name == "territory" || Some(f.column) == parent {
            obj.insert(f.name.to_owned(), codec::from_db(f, row)?);
        }
    }
    Ok(obj)
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
