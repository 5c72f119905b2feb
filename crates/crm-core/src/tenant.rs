//! Tenants (K5): created and suspended by operators; every row of every table belongs to one.

use crate::access::{Action, Grant, Policy, Scope};
use crate::auth::Principal;
use crate::clock::Clock;
use crate::db::Db;
use crate::error::{Error, Result};
use crate::model::Role;
use crate::service::Ctx;
use crate::store::col;
use sea_orm::ConnectionTrait;
use sea_orm::sea_query::{Expr, ExprTrait, Order, Query};
use std::sync::Arc;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantStatus {
    Active,
    Suspended,
}

#[derive(Debug, Clone)]
pub struct Tenant {
    pub id: String,
    pub display_name: String,
    pub status: TenantStatus,
    pub create_time: chrono::DateTime<chrono::Utc>,
}

/// Creates a tenant with an `admin` role that may do everything.
pub async fn create(db: &Db, clock: &dyn Clock, id: &str, display_name: &str) -> Result<Tenant> {
    crate::validate::tenant_id(id)?;
    let display_name = crate::validate::text("display_name", display_name, 200, false)?;
    let now = clock.now();
    let tx = db.begin_write().await?;
    let mut q = Query::insert();
    q.into_table(col("tenants"))
        .columns(["id", "display_name", "status", "create_time", "update_time"].map(col))
        .values([
            Expr::val(id),
            Expr::val(display_name.as_str()),
            Expr::val("ACTIVE"),
            Expr::val(now),
            Expr::val(now),
        ])
        .map_err(|e| Error::internal(e.to_string()))?;
    tx.txn.execute(&q).await.map_err(|e| {
        let e = Error::from(e);
        if e.kind == crate::error::ErrorKind::AlreadyExists {
            Error::already_exists(format!("tenant {id} already exists")).with("tenant", id)
        } else {
            e
        }
    })?;
    tx.commit().await?;
    let ctx = system_ctx(db, id, Arc::new(crate::clock::SystemClock));
    ctx.create(admin_role(), "").await?;
    Ok(Tenant {
        id: id.to_owned(),
        display_name,
        status: TenantStatus::Active,
        create_time: now,
    })
}

/// The built-in administrator role.
pub fn admin_role() -> Role {
    Role {
        key: "admin".into(),
        display_name: "Administrator".into(),
        grants: vec![Grant {
            collection: "*".into(),
            actions: vec![Action::Read, Action::Create, Action::Update, Action::Delete],
            scope: Scope::All,
        }],
        field_rules: vec![],
    }
}

/// A context acting for the system itself (operator tools, the demo loader).
pub fn system_ctx(db: &Db, tenant: &str, clock: Arc<dyn Clock>) -> Ctx {
    Ctx::new(
        db.clone(),
        Principal {
            tenant: tenant.to_owned(),
            user: Uuid::nil(),
            roles: vec![],
        },
        Policy::superuser(),
        clock,
    )
}

pub async fn set_status(db: &Db, clock: &dyn Clock, id: &str, status: TenantStatus) -> Result<()> {
    let mut q = Query::update();
    q.table(col("tenants"))
        .value(col("status"), status_str(status))
        .value(col("update_time"), clock.now())
        .and_where(Expr::col(col("id")).eq(id));
    let n = db.conn.execute(&q).await?.rows_affected();
    if n == 0 {
        return Err(Error::not_found(format!("tenants/{id}")));
    }
    Ok(())
}

fn status_str(s: TenantStatus) -> &'static str {
    match s {
        TenantStatus::Active => "ACTIVE",
        TenantStatus::Suspended => "SUSPENDED",
    }
}

/// The status of a tenant, `None` if there is no such tenant.
pub async fn status(db: &Db, id: &str) -> Result<Option<TenantStatus>> {
    let mut q = Query::select();
    q.column(col("status"))
        .from(col("tenants"))
        .and_where(Expr::col(col("id")).eq(id));
    Ok(match db.conn.query_one(&q).await? {
        Some(r) => Some(if r.try_get::<String>("", "status")? == "ACTIVE" {
            TenantStatus::Active
        } else {
            TenantStatus::Suspended
        }),
        None => None,
    })
}

pub async fn list(db: &Db) -> Result<Vec<Tenant>> {
    let mut q = Query::select();
    q.columns(["id", "display_name", "status", "create_time"].map(col))
        .from(col("tenants"))
        .order_by(col("id"), Order::Asc);
    db.conn
        .query_all(&q)
        .await?
        .iter()
        .map(|r| {
            Ok(Tenant {
                id: r.try_get("", "id")?,
                display_name: r.try_get("", "display_name")?,
                status: if r.try_get::<String>("", "status")? == "ACTIVE" {
                    TenantStatus::Active
                } else {
                    TenantStatus::Suspended
                },
                create_time: r.try_get("", "create_time")?,
            })
        })
        .collect()
}

/// The caller's policy, after checking the tenant exists and is active.
pub async fn authorize(db: &Db, principal: &Principal) -> Result<Policy> {
    match status(db, &principal.tenant).await? {
        Some(TenantStatus::Active) => {}
        Some(TenantStatus::Suspended) => {
            return Err(Error::permission_denied(
                "TENANT_SUSPENDED",
                format!("tenant {} is suspended", principal.tenant),
            )
            .with("tenant", principal.tenant.clone()));
        }
        None => {
            return Err(Error::unauthenticated(
                "TENANT_UNKNOWN",
                "the token names a tenant that does not exist",
            ));
        }
    }
    crate::model::role::load_policy(&db.conn, &principal.tenant, &principal.roles).await
}

/// Recently evaluated policies, keyed by tenant and role keys, so a burst of requests does
/// not re-read the tenant row and its roles for every call. Entries live `ttl`: a role edit or
/// a tenant suspension takes effect on every replica within that time. A `ttl` of zero
/// disables the cache. Only successful evaluations are kept.
pub struct PolicyCache {
    ttl: std::time::Duration,
    entries: std::sync::Mutex<std::collections::HashMap<PolicyKey, (std::time::Instant, Policy)>>,
}

/// Tenant and sorted role keys.
type PolicyKey = (String, Vec<String>);

/// Entries kept at most; the cache is emptied when it would grow beyond.
const POLICY_CACHE_MAX: usize = 10_000;

impl PolicyCache {
    pub fn new(ttl: std::time::Duration) -> Self {
        Self {
            ttl,
            entries: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// `authorize`, served from the cache while fresh.
    pub async fn authorize(&self, db: &Db, principal: &Principal) -> Result<Policy> {
        self.authorize_at(db, principal, std::time::Instant::now())
            .await
    }

    pub async fn authorize_at(
        &self,
        db: &Db,
        principal: &Principal,
        now: std::time::Instant,
    ) -> Result<Policy> {
        if self.ttl.is_zero() {
            return authorize(db, principal).await;
        }
        let mut roles = principal.roles.clone();
        roles.sort();
        roles.dedup();
        let key = (principal.tenant.clone(), roles);
        if let Ok(map) = self.entries.lock()
            && let Some((at, policy)) = map.get(&key)
            && now.duration_since(*at) < self.ttl
        {
            return Ok(policy.clone());
        }
        let policy = authorize(db, principal).await?;
        if let Ok(mut map) = self.entries.lock() {
            if map.len() >= POLICY_CACHE_MAX {
                map.clear();
            }
            map.insert(key, (now, policy.clone()));
        }
        Ok(policy)
    }
}
