//! The engine without a gateway: a migrated [`Db`], tenants and [`Ctx`]s for contract tests
//! of use cases (service level, no gRPC).

use crate::db::{Backend, TestDb};
use crm_core::access::{Action, Grant, Policy, RoleRights, Scope};
use crm_core::auth::Principal;
use crm_core::clock::SystemClock;
use crm_core::db::Db;
use crm_core::service::Ctx;
use crm_core::tenant::Tenant;
use crm_migration::{Migrator, MigratorTrait};
use std::sync::Arc;
use uuid::Uuid;

/// Connects to a [`TestDb`] (a pool of 8) and applies every migration, as the gateway does
/// at start: the registry of every crate the gateway serves is installed first, so the domain
/// crates' schema changes apply too.
pub async fn migrated_db(test_db: &TestDb) -> Db {
    let db = Db::connect(&test_db.url, 8)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", test_db.url));
    crm_core::registry::install(crm_gateway::server::register_domains)
        .unwrap_or_else(|e| panic!("registry: {e}"));
    Migrator::up(&db.conn, None)
        .await
        .unwrap_or_else(|e| panic!("migration failed: {e}"));
    db
}

/// Creates an active tenant `id` (display name `id`) with its built-in `admin` role
/// (`crm_core::tenant::create`).
pub async fn create_tenant(db: &Db, id: &str) -> Tenant {
    crm_core::tenant::create(db, &SystemClock, id, id)
        .await
        .unwrap_or_else(|e| panic!("cannot create tenant {id}: {e}"))
}

/// A context for `user` of `tenant` with `policy` (no role keys, nothing read from the
/// database), on the system clock.
pub fn policy_ctx(db: &Db, tenant: &str, user: Uuid, policy: Policy) -> Ctx {
    Ctx::new(
        db.clone(),
        Principal {
            tenant: tenant.into(),
            user,
            roles: vec![],
        },
        policy,
        Arc::new(SystemClock),
    )
}

/// A context allowed everything in `tenant` ([`Policy::superuser`]), acting as a new user
/// (a fresh id, the owner of what it creates: `ctx.principal.user`).
pub fn superuser_ctx(db: &Db, tenant: &str) -> Ctx {
    policy_ctx(db, tenant, Uuid::now_v7(), Policy::superuser())
}

/// A context for `user` of `tenant` holding the role keys `roles`, with the policy loaded
/// from the tenant's `roles` table as a request's is (`crm_core::tenant::authorize`: the
/// tenant must exist and be active; unknown keys grant nothing).
pub async fn roles_ctx(db: &Db, tenant: &str, user: Uuid, roles: &[&str]) -> Ctx {
    let principal = Principal {
        tenant: tenant.into(),
        user,
        roles: roles.iter().map(|r| (*r).to_string()).collect(),
    };
    let policy = crm_core::tenant::authorize(db, &principal)
        .await
        .unwrap_or_else(|e| panic!("cannot load the policy of {roles:?} in {tenant}: {e}"));
    Ctx::new(db.clone(), principal, policy, Arc::new(SystemClock))
}

/// A grant of `actions` on `collection` (`"*"` for every collection) within `scope`.
pub fn grant(collection: &str, actions: &[Action], scope: Scope) -> Grant {
    Grant {
        collection: collection.into(),
        actions: actions.to_vec(),
        scope,
    }
}

/// A policy of one role holding `grants` and no field rules.
pub fn policy_of(grants: Vec<Grant>) -> Policy {
    Policy::new(vec![RoleRights {
        grants,
        field_rules: vec![],
    }])
}

/// A fresh migrated database without a gateway, for engine-level (service) tests.
pub struct TestEngine {
    /// The migrated database.
    pub db: Db,
    // Declared last: dropped (the database removed) after the pool.
    /// The database behind [`TestEngine::db`].
    pub test_db: TestDb,
}

impl TestEngine {
    /// A fresh database of `backend`, migrated.
    pub async fn start(backend: Backend) -> TestEngine {
        Self::start_on(TestDb::new(backend).await).await
    }

    /// Migrates `test_db` and connects to it.
    pub async fn start_on(test_db: TestDb) -> TestEngine {
        let db = migrated_db(&test_db).await;
        TestEngine { db, test_db }
    }

    /// The kind of database.
    pub fn backend(&self) -> Backend {
        self.test_db.backend()
    }

    /// Creates an active tenant `id` with its `admin` role ([`create_tenant`]).
    pub async fn tenant(&self, id: &str) -> Tenant {
        create_tenant(&self.db, id).await
    }

    /// A superuser context in `tenant` acting as a new user ([`superuser_ctx`]).
    pub fn admin(&self, tenant: &str) -> Ctx {
        superuser_ctx(&self.db, tenant)
    }

    /// A context for `user` of `tenant` with `policy` ([`policy_ctx`]).
    pub fn ctx(&self, tenant: &str, user: Uuid, policy: Policy) -> Ctx {
        policy_ctx(&self.db, tenant, user, policy)
    }

    /// A context for `user` of `tenant` with the tenant's roles `roles` ([`roles_ctx`]).
    pub async fn ctx_for_roles(&self, tenant: &str, user: Uuid, roles: &[&str]) -> Ctx {
        roles_ctx(&self.db, tenant, user, roles).await
    }

    /// Rows of `table` for `tenant` (deleted ones included).
    pub async fn count(&self, table: &str, tenant: &str) -> i64 {
        crm_core::store::count(&self.db.conn, table, tenant)
            .await
            .unwrap()
    }
}
