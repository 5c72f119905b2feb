//! Generic persistence of resources with sea-query: every statement takes the tenant and
//! filters by it in the statement itself.

use crate::codec::{from_db, to_db};
use crate::error::{Error, Result};
use crate::resource::{Collection, Meta, Resource};
use chrono::{DateTime, Utc};
use sea_orm::sea_query::Value;
use sea_orm::sea_query::{
    Alias, Asterisk, Condition, Expr, ExprTrait, Order, Query, SelectStatement,
};
use sea_orm::{ConnectionTrait, QueryResult, Statement};
use serde_json::{Map, Value as Json};
use uuid::Uuid;

pub(crate) fn col(name: &str) -> Alias {
    Alias::new(name)
}

/// `SELECT <meta and field columns> FROM table WHERE tenant_id = ? AND delete_time IS NULL`.
/// The names are static: sea-query borrows them instead of copying each into an `Alias` (the
/// statement text is the same).
pub(crate) fn select<R: Resource>(tenant: &str) -> SelectStatement {
    let mut q = Query::select();
    q.from(R::TABLE)
        .columns(["id", "revision", "create_time", "update_time"])
        .columns(R::FIELDS.iter().map(|f| f.column))
        .and_where(Expr::col("tenant_id").eq(tenant))
        .and_where(Expr::col("delete_time").is_null());
    q
}

/// Decodes a row into its meta and its JSON object.
pub(crate) fn decode<R: Resource>(row: &QueryResult) -> Result<(Meta, Map<String, Json>)> {
    let meta = Meta {
        id: row.try_get::<Uuid>("", "id")?,
        revision: row.try_get::<i64>("", "revision")?,
        create_time: row.try_get::<DateTime<Utc>>("", "create_time")?,
        update_time: row.try_get::<DateTime<Utc>>("", "update_time")?,
    };
    let mut obj = Map::with_capacity(R::FIELDS.len());
    for f in R::FIELDS {
        obj.insert(f.name.to_owned(), from_db(f, row)?);
    }
    Ok((meta, obj))
}

pub(crate) fn to_object<R: Resource>(data: &R) -> Result<Map<String, Json>> {
    match serde_json::to_value(data) {
        Ok(Json::Object(m)) => Ok(m),
        _ => Err(Error::internal(format!(
            "{} does not serialise to an object",
            R::COLLECTION
        ))),
    }
}

pub(crate) fn from_object<R: Resource>(obj: Map<String, Json>) -> Result<R> {
    serde_json::from_value(Json::Object(obj))
        .map_err(|e| Error::internal(format!("stored {} cannot be decoded: {e}", R::COLLECTION)))
}

pub(crate) async fn fetch<R: Resource, C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    id: Uuid,
) -> Result<Option<(Meta, Map<String, Json>)>> {
    let mut q = select::<R>(tenant);
    q.and_where(Expr::col(col("id")).eq(id));
    match conn.query_one(&q).await? {
        Some(row) => decode::<R>(&row).map(Some),
        None => Ok(None),
    }
}

/// Like [`fetch`], and locks the row for the rest of the transaction (PostgreSQL), so
/// checks made before changing it cannot be overtaken by a concurrent writer.
pub(crate) async fn fetch_for_update<R: Resource, C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    id: Uuid,
) -> Result<Option<(Meta, Map<String, Json>)>> {
    let mut q = select::<R>(tenant);
    q.and_where(Expr::col(col("id")).eq(id)).lock_exclusive();
    match conn.query_one(&q).await? {
        Some(row) => decode::<R>(&row).map(Some),
        None => Ok(None),
    }
}

/// The id of the record of `c` whose `field` (the collection's name key, e.g. a role's
/// `key`) is `value`: the live one, else the one deleted last (its history stays readable).
pub async fn find_by_key<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    c: &Collection,
    field: &str,
    value: &str,
) -> Result<Option<Uuid>> {
    let column = c
        .field(field)
        .map(|f| f.column)
        .ok_or_else(|| Error::internal(format!("{} has no field {field}", c.name)))?;
    let mut q = Query::select();
    q.column(col("id"))
        .from(col(c.table))
        .and_where(Expr::col(col("tenant_id")).eq(tenant))
        .and_where(Expr::col(col(column)).eq(value))
        .order_by_expr(Expr::col(col("delete_time")).is_null(), Order::Desc)
        .order_by(col("update_time"), Order::Desc)
        .limit(1);
    match conn.query_one(&q).await? {
        Some(r) => Ok(Some(r.try_get::<Uuid>("", "id")?)),
        None => Ok(None),
    }
}

/// Whether live rows of `table` have `column = id` (children of a tree node).
pub(crate) async fn has_live<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    table: &str,
    column: &str,
    id: Uuid,
) -> Result<bool> {
    let mut q = Query::select();
    q.column(col("id"))
        .from(col(table))
        .and_where(Expr::col(col("tenant_id")).eq(tenant))
        .and_where(Expr::col(col(column)).eq(id))
        .and_where(Expr::col(col("delete_time")).is_null())
        .limit(1);
    Ok(conn.query_one(&q).await?.is_some())
}

/// Serialises, until the transaction ends, every writer that re-parents a node of one
/// tenant's tree (PostgreSQL advisory lock; SQLite has one writer at a time anyway), so
/// two concurrent moves cannot each pass the cycle check and close a loop together.
pub(crate) async fn lock_tree<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    table: &str,
) -> Result<()> {
    if conn.get_database_backend() != sea_orm::DbBackend::Postgres {
        return Ok(());
    }
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("tree:{tenant}:{table}").as_bytes());
    let mut key = [0u8; 8];
    key.copy_from_slice(&digest[..8]);
    let key = i64::from_be_bytes(key);
    conn.execute_raw(sea_orm::Statement::from_sql_and_values(
        sea_orm::DbBackend::Postgres,
        "SELECT pg_advisory_xact_lock($1)",
        [key.into()],
    ))
    .await?;
    Ok(())
}

pub(crate) async fn insert<R: Resource, C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    meta: &Meta,
    obj: &Map<String, Json>,
) -> Result<()> {
    insert_many::<R, C>(conn, tenant, &[(meta, obj)]).await
}

/// Inserts records, many rows per statement.
pub(crate) async fn insert_many<R: Resource, C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    records: &[(&Meta, &Map<String, Json>)],
) -> Result<()> {
    let mut cols: Vec<&str> = vec!["tenant_id", "id", "revision", "create_time", "update_time"];
    cols.extend(R::FIELDS.iter().map(|f| f.column));
    let mut rows = Vec::with_capacity(records.len());
    for (meta, obj) in records {
        let mut vals: Vec<Expr> = Vec::with_capacity(cols.len());
        vals.extend([
            Expr::val(tenant),
            Expr::val(meta.id),
            Expr::val(meta.revision),
            Expr::val(meta.create_time),
            Expr::val(meta.update_time),
        ]);
        for f in R::FIELDS {
            vals.push(Expr::val(to_db(f, obj.get(f.name).unwrap_or(&Json::Null))?));
        }
        rows.push(vals);
    }
    insert_rows(conn, R::TABLE, &cols, rows).await
}

/// Bound parameters per statement: below SQLite's limit (32,766) and PostgreSQL's (65,535).
const MAX_PARAMS: usize = 30_000;

/// Inserts `rows` (values in the order of `columns`) into `table`, as few statements as the
/// databases' parameter limits allow.
pub(crate) async fn insert_rows<C: ConnectionTrait>(
    conn: &C,
    table: &str,
    columns: &[&str],
    rows: Vec<Vec<Expr>>,
) -> Result<()> {
    let per = (MAX_PARAMS / columns.len().max(1)).max(1);
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let mut q = Query::insert();
        q.into_table(col(table))
            .columns(columns.iter().map(|c| col(c)));
        for vals in rows.by_ref().take(per) {
            q.values(vals).map_err(|e| Error::internal(e.to_string()))?;
        }
        conn.execute(&q).await?;
    }
    Ok(())
}

/// Writes the given fields and bumps the revision, only if the revision is still `expected`.
/// Returns false when another writer got there first.
pub(crate) async fn update<R: Resource, C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    id: Uuid,
    expected: i64,
    now: DateTime<Utc>,
    changed: &[&'static str],
    obj: &Map<String, Json>,
) -> Result<bool> {
    let mut q = Query::update();
    q.table(col(R::TABLE))
        .value(col("revision"), expected + 1)
        .value(col("update_time"), now);
    for f in R::FIELDS.iter().filter(|f| changed.contains(&f.name)) {
        q.value(
            col(f.column),
            to_db(f, obj.get(f.name).unwrap_or(&Json::Null))?,
        );
    }
    q.and_where(Expr::col(col("tenant_id")).eq(tenant))
        .and_where(Expr::col(col("id")).eq(id))
        .and_where(Expr::col(col("revision")).eq(expected))
        .and_where(Expr::col(col("delete_time")).is_null());
    Ok(conn.execute(&q).await?.rows_affected() == 1)
}

/// A soft-deleted record, locked for the rest of the transaction (PostgreSQL).
pub(crate) async fn fetch_deleted_for_update<R: Resource, C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    id: Uuid,
) -> Result<Option<(Meta, Map<String, Json>)>> {
    let mut q = Query::select();
    q.from(R::TABLE)
        .columns(["id", "revision", "create_time", "update_time"])
        .columns(R::FIELDS.iter().map(|f| f.column))
        .and_where(Expr::col("tenant_id").eq(tenant))
        .and_where(Expr::col("id").eq(id))
        .and_where(Expr::col("delete_time").is_not_null())
        .lock_exclusive();
    match conn.query_one(&q).await? {
        Some(row) => decode::<R>(&row).map(Some),
        None => Ok(None),
    }
}

/// Clears a soft delete and bumps the revision, only if the revision is still `expected`.
pub(crate) async fn undelete<R: Resource, C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    id: Uuid,
    expected: i64,
    now: DateTime<Utc>,
) -> Result<bool> {
    let mut q = Query::update();
    q.table(col(R::TABLE))
        .value(col("revision"), expected + 1)
        .value(col("update_time"), now)
        .value(col("delete_time"), Option::<DateTime<Utc>>::None)
        .and_where(Expr::col(col("tenant_id")).eq(tenant))
        .and_where(Expr::col(col("id")).eq(id))
        .and_where(Expr::col(col("revision")).eq(expected))
        .and_where(Expr::col(col("delete_time")).is_not_null());
    Ok(conn.execute(&q).await?.rows_affected() == 1)
}

/// Ids of the tenant's live rows of `table` whose `column` is `value`.
pub(crate) async fn ids_referring<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    table: &str,
    column: &str,
    value: Uuid,
) -> Result<Vec<Uuid>> {
    let mut q = Query::select();
    q.column(col("id"))
        .from(col(table))
        .and_where(Expr::col(col("tenant_id")).eq(tenant))
        .and_where(Expr::col(col(column)).eq(value))
        .and_where(Expr::col(col("delete_time")).is_null())
        .order_by(col("id"), Order::Asc);
    conn.query_all(&q)
        .await?
        .iter()
        .map(|r| r.try_get::<Uuid>("", "id").map_err(Error::from))
        .collect()
}

pub(crate) async fn soft_delete<R: Resource, C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    id: Uuid,
    expected: i64,
    now: DateTime<Utc>,
) -> Result<bool> {
    let mut q = Query::update();
    q.table(col(R::TABLE))
        .value(col("revision"), expected + 1)
        .value(col("update_time"), now)
        .value(col("delete_time"), now)
        .and_where(Expr::col(col("tenant_id")).eq(tenant))
        .and_where(Expr::col(col("id")).eq(id))
        .and_where(Expr::col(col("revision")).eq(expected))
        .and_where(Expr::col(col("delete_time")).is_null());
    Ok(conn.execute(&q).await?.rows_affected() == 1)
}

/// Ids among `ids` that exist (not deleted) in `table` for the tenant. With `share`, the
/// rows found stay locked against deletion until the transaction ends (PostgreSQL; SQLite
/// has one writer at a time anyway).
pub(crate) async fn existing_ids<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    table: &str,
    ids: &[Uuid],
    share: bool,
) -> Result<Vec<Uuid>> {
    ids_where(conn, tenant, table, ids, Condition::all(), share, true).await
}

/// Ids among `ids` of rows of `table` (live ones only with `live`) that also meet `cond`.
pub(crate) async fn ids_where<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    table: &str,
    ids: &[Uuid],
    cond: Condition,
    share: bool,
    live: bool,
) -> Result<Vec<Uuid>> {
    if ids.is_empty() {
        return Ok(vec![]);
    }
    let mut q = Query::select();
    q.column(col("id"))
        .from(col(table))
        .and_where(Expr::col(col("tenant_id")).eq(tenant))
        .and_where(Expr::col(col("id")).is_in(ids.iter().copied()))
        .cond_where(cond);
    if live {
        q.and_where(Expr::col(col("delete_time")).is_null());
    }
    if share {
        q.lock_shared();
    }
    conn.query_all(&q)
        .await?
        .iter()
        .map(|r| r.try_get::<Uuid>("", "id").map_err(Error::from))
        .collect()
}

/// `(id, parent)` pairs of a table's tree column, for hierarchy walks.
pub(crate) async fn tree_edges<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    table: &str,
    parent_column: &str,
) -> Result<Vec<(Uuid, Option<Uuid>)>> {
    let mut q = Query::select();
    q.column(col("id"))
        .expr_as(Expr::col(col(parent_column)), col("parent"))
        .from(col(table))
        .and_where(Expr::col(col("tenant_id")).eq(tenant))
        .and_where(Expr::col(col("delete_time")).is_null());
    conn.query_all(&q)
        .await?
        .iter()
        .map(|r| {
            Ok((
                r.try_get::<Uuid>("", "id")?,
                r.try_get::<Option<Uuid>>("", "parent")?,
            ))
        })
        .collect()
}

/// Runs a list query: condition, order terms (column, descending), limit. The rows are
/// returned undecoded (see [`decode_rows`]).
pub(crate) async fn list<R: Resource, C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    cond: Condition,
    order: &[(&'static str, bool)],
    limit: u64,
) -> Result<Vec<QueryResult>> {
    let mut q = select::<R>(tenant);
    q.cond_where(cond);
    for (c, desc) in order {
        q.order_by(*c, if *desc { Order::Desc } else { Order::Asc });
    }
    q.limit(limit);
    Ok(conn.query_all(&q).await?)
}

/// The row of one live record, undecoded (see [`decode_rows`]).
pub(crate) async fn fetch_row<R: Resource, C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    id: Uuid,
) -> Result<Option<QueryResult>> {
    let stmt = fetch_statement::<R>(conn.get_database_backend(), tenant, id);
    Ok(conn.query_one_raw(stmt).await?)
}

/// The SQL text of [`fetch_row`]'s statement by resource and backend. It never changes, and
/// rendering it with sea-query on every Get took about a twentieth of a GetContact's work in
/// the gateway.
type FetchSql = Vec<(std::any::TypeId, sea_orm::DbBackend, std::sync::Arc<str>)>;
static FETCH_SQL: std::sync::Mutex<FetchSql> = std::sync::Mutex::new(Vec::new());

/// `select::<R>(tenant)` with `id = ?`, rendered once per resource and backend; its values are
/// the tenant and the id, in that order (checked by a test against sea-query's own build).
fn fetch_statement<R: Resource>(backend: sea_orm::DbBackend, tenant: &str, id: Uuid) -> Statement {
    let key = std::any::TypeId::of::<R>();
    let cached = FETCH_SQL.lock().ok().and_then(|c| {
        c.iter()
            .find(|(k, b, _)| *k == key && *b == backend)
            .map(|(_, _, sql)| sql.clone())
    });
    if let Some(sql) = cached {
        return Statement::from_sql_and_values(
            backend,
            sql.as_ref(),
            [Value::from(tenant), Value::from(id)],
        );
    }
    let mut q = select::<R>(tenant);
    q.and_where(Expr::col("id").eq(id));
    let stmt = backend.build(&q);
    if let Ok(mut c) = FETCH_SQL.lock() {
        c.push((key, backend, std::sync::Arc::from(stmt.sql.as_str())));
    }
    stmt
}

/// Decodes rows of [`select`] straight into records, without a JSON object per row
/// ([`crate::rowde`]). Fields flagged in `skip` (by index into `R::FIELDS`) are not read
/// and keep their default.
pub(crate) fn decode_rows<R: Resource>(
    rows: &[QueryResult],
    skip: &[bool],
) -> Result<Vec<(Meta, R)>> {
    let Some(first) = rows.first() else {
        return Ok(Vec::new());
    };
    match crate::rowde::Layout::of::<R>(first)? {
        Some(layout) => rows
            .iter()
            .map(|row| crate::rowde::decode::<R>(row, &layout, skip))
            .collect(),
        // Rows of a driver the row decoder does not read: through the JSON object.
        None => rows
            .iter()
            .map(|row| {
                let (meta, mut obj) = decode::<R>(row)?;
                for (f, _) in R::FIELDS.iter().zip(skip).filter(|(_, s)| **s) {
                    obj.remove(f.name);
                }
                Ok((meta, from_object(obj)?))
            })
            .collect(),
    }
}

/// Counts rows of a condition (used by tests and tools).
pub async fn count<C: ConnectionTrait>(conn: &C, table: &str, tenant: &str) -> Result<i64> {
    let mut q = Query::select();
    q.expr_as(Expr::col(Asterisk).count(), col("n"))
        .from(col(table))
        .and_where(Expr::col(col("tenant_id")).eq(tenant));
    Ok(match conn.query_one(&q).await? {
        Some(r) => r.try_get::<i64>("", "n")?,
        None => 0,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::model::Contact;
    use sea_orm::sea_query::{PostgresQueryBuilder, SqliteQueryBuilder};

    /// The read statements borrow static names; their text must stay what `Alias` names gave
    /// (so prepared statements and logs do not change).
    #[test]
    fn static_names_give_the_same_statement() {
        let mut old = Query::select();
        old.from(col(Contact::TABLE))
            .columns(["id", "revision", "create_time", "update_time"].map(col))
            .columns(Contact::FIELDS.iter().map(|f| col(f.column)))
            .and_where(Expr::col(col("tenant_id")).eq("t"))
            .and_where(Expr::col(col("delete_time")).is_null())
            .and_where(Expr::col(col("id")).eq(Uuid::nil()))
            .order_by(col("display_name"), Order::Asc);
        let mut new = select::<Contact>("t");
        new.and_where(Expr::col("id").eq(Uuid::nil()))
            .order_by("display_name", Order::Asc);
        assert_eq!(
            old.build(PostgresQueryBuilder),
            new.build(PostgresQueryBuilder)
        );
        assert_eq!(old.build(SqliteQueryBuilder), new.build(SqliteQueryBuilder));
    }

    /// The cached text of a Get, with its values, is what sea-query builds.
    #[test]
    fn cached_fetch_statement_is_the_built_one() {
        for backend in [sea_orm::DbBackend::Postgres, sea_orm::DbBackend::Sqlite] {
            for (tenant, id) in [("t1", Uuid::now_v7()), ("other", Uuid::nil())] {
                let mut q = select::<Contact>(tenant);
                q.and_where(Expr::col("id").eq(id));
                let built = backend.build(&q);
                // The first call renders and caches, the next ones reuse the text.
                for _ in 0..2 {
                    let got = fetch_statement::<Contact>(backend, tenant, id);
                    assert_eq!(got.sql, built.sql);
                    assert_eq!(got.values, built.values);
                    assert_eq!(got.db_backend, built.db_backend);
                }
            }
        }
    }
}
