//! The test kit for contract tests on **both** databases: a fresh SQLite file or a fresh
//! PostgreSQL database per test (created on the server named by `CRM_TEST_POSTGRES_URL`,
//! dropped afterwards), either driven at the engine level ([`TestEngine`]: a migrated
//! [`Db`](crm_core::db::Db) and [`Ctx`](crm_core::service::Ctx)s, no gRPC) or through a real
//! gateway on an ephemeral port with its generated clients ([`TestServer`]).
//!
//! Domain crates add it as a dev-dependency (`crm-testkit.workspace = true`) and write their
//! contract tests as `async fn name(backend: Backend)`, instantiated for both databases by
//! [`both!`]. The tests fail, never skip, without PostgreSQL: run them with `scripts/test`,
//! which provides one, or set `CRM_TEST_POSTGRES_URL=postgres://user@host:port` (a server URL
//! without a database name; the user must be allowed to create databases).
//!
//! ```no_run
//! use crm_core::ErrorKind;
//! use crm_core::access::{Action, Scope};
//! use crm_core::model::Contact;
//! use crm_testkit::{Backend, TestEngine, both, expect_kind, grant, policy_of};
//! use uuid::Uuid;
//!
//! /// A rep granted their own contacts cannot read the admin's.
//! async fn reps_read_their_own_contacts_only(backend: Backend) {
//!     let e = TestEngine::start(backend).await;
//!     e.tenant("acme").await;
//!     let admin = e.admin("acme");
//!     let ann = Contact { given_name: "Ann".into(), ..Default::default() };
//!     let theirs = admin.create(ann, "").await.unwrap();
//!
//!     let own = grant("contacts", &[Action::Read, Action::Create], Scope::Own);
//!     let rep = e.ctx("acme", Uuid::now_v7(), policy_of(vec![own]));
//!     let err = expect_kind(rep.get::<Contact>(theirs.meta.id).await, ErrorKind::PermissionDenied);
//!     assert_eq!(err.reason, "OUT_OF_SCOPE");
//! }
//!
//! // `sqlite::reps_read_their_own_contacts_only` and `postgres::reps_read_their_own_contacts_only`.
//! both!(reps_read_their_own_contacts_only);
//! # fn main() {}
//! ```
//!
//! The same test through the gateway starts a [`TestServer`] instead, mints a token with
//! [`TestServer::token`] and calls e.g. [`TestServer::contacts`] with [`req`], checking
//! failures with [`expect_code`], [`reason`] and [`violated_fields`].
//!
//! Collections of a domain crate that the engine must know about (references, grants,
//! history) are registered by the test with `crm_core::registry::install` before the first
//! call, as the gateway does at start.
//!
//! Every helper panics with a message on failure: it is for tests only.

#![warn(missing_docs)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod db;
mod engine;
mod server;
mod status;

pub use db::{Backend, TempDir, TestDb, block_on, postgres_server, temp_dir};
pub use engine::{
    TestEngine, create_tenant, grant, migrated_db, policy_ctx, policy_of, roles_ctx, superuser_ctx,
};
pub use server::{AUDIENCE, ISSUER, SECRET, TestServer, mint_token};
pub use status::{expect_code, expect_kind, mask, reason, req, violated_fields};

/// Instantiates async test functions `async fn name(backend: Backend)` for both databases:
/// `sqlite::name` and `postgres::name`, each a `#[test]` running on its own multi-threaded
/// runtime with 2 workers ([`block_on`]).
///
/// It expands to plain `#[test]` functions calling `$crate` paths only, so the calling crate
/// needs neither `tokio` (or its `macros` feature) nor a direct dependency on this crate: a
/// re-export (`pub use crm_testkit::*;`) works too. Use it once per test file, at the top
/// level of the file.
///
/// ```no_run
/// use crm_testkit::{Backend, TestDb, both};
///
/// async fn a_fresh_database_is_empty(backend: Backend) {
///     let db = TestDb::new(backend).await;
///     assert_eq!(db.backend(), backend);
/// }
///
/// both!(a_fresh_database_is_empty);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $name() {
                    $crate::block_on(super::$name($crate::Backend::Sqlite))
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                fn $name() {
                    $crate::block_on(super::$name($crate::Backend::Postgres))
                }
            )*
        }
    };
}
