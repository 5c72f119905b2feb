//! The registry of collections: every resource, of the shared model and of every domain
//! crate, registers itself once, from its own crate, and the engine looks collections up
//! here (reference checks, permissions, history, field rules). No list of collections lives
//! anywhere else.
//!
//! The gateway installs the registry at start with each linked crate's `register` function:
//!
//! ```
//! use crm_core::registry::{self, RegistryBuilder};
//!
//! fn register_domain(r: &mut RegistryBuilder) {
//!     // r.resource::<Lead>().resource::<Task>();
//!     let _ = r;
//! }
//! let reg = registry::install(register_domain).expect("a consistent registry");
//! assert!(reg.collection("contacts").is_some());
//! ```
//!
//! `install` checks the whole set: names unique, every reference (`Kind::Ref`, `Kind::RefList`)
//! and every scope parent pointing at a registered collection, every permission naming one,
//! tree parents referring to their own collection. An inconsistency is an error at start,
//! never a skipped check at run time.

use crate::journal::AuditAction;
use crate::resource::{Collection, HookFuture, Kind, Resource};
use crate::service::Tx;
use serde_json::{Map, Value as Json};
use std::collections::HashSet;
use std::sync::OnceLock;
use uuid::Uuid;

/// A schema change of a domain crate (its tables and indexes), applied by the migrator after
/// the shared model's own migrations, in registration order, each once and recorded by name.
///
/// Statements are written once for both databases in the same portable DDL as the shared
/// model's migrations: `UUID`, `TIMESTAMPTZ` and `DATE` are native on PostgreSQL and become
/// `BLOB` and `TEXT` on SQLite; statements that only one database understands (a GIN or
/// trigram index) go in `postgres` or `sqlite`, run after the portable ones. The data rules of
/// ARCHITECTURE.md hold: `tenant_id` first in every key, no sequences, no triggers.
#[derive(Debug, Clone, Copy)]
pub struct SchemaChange {
    /// A unique name that sorts by date, like the shared model's migrations:
    /// `m<YYYYMMDD>_<NNNNNN>_<what>`, e.g. `m20261125_100001_things`.
    pub name: &'static str,
    /// Portable statements, run in order.
    pub statements: &'static [&'static str],
    /// PostgreSQL-only statements, run after `statements`.
    pub postgres: &'static [&'static str],
    /// SQLite-only statements, run after `statements`.
    pub sqlite: &'static [&'static str],
}

impl SchemaChange {
    /// A change with portable statements only.
    pub const fn new(name: &'static str, statements: &'static [&'static str]) -> Self {
        Self {
            name,
            statements,
            postgres: &[],
            sqlite: &[],
        }
    }
}

/// The `CREATE TABLE` statement of a resource's table, in the portable DDL of
/// [`SchemaChange`]: the columns every resource table starts with (`tenant_id`, `id`,
/// `revision`, `create_time`, `update_time`, `delete_time`), then the given ones, keyed by
/// `(tenant_id, id)`. A `&'static str`, usable in a `SchemaChange`'s statements.
///
/// ```
/// const DDL: &str = crm_core::resource_table!("things", "display_name TEXT NOT NULL, owner_id UUID NULL");
/// assert!(DDL.starts_with("CREATE TABLE things (tenant_id TEXT NOT NULL, id UUID NOT NULL,"));
/// assert!(DDL.ends_with("owner_id UUID NULL, PRIMARY KEY (tenant_id, id))"));
/// ```
#[macro_export]
macro_rules! resource_table {
    ($table:literal, $columns:literal) => {
        concat!(
            "CREATE TABLE ",
            $table,
            " (tenant_id TEXT NOT NULL, id UUID NOT NULL, revision BIGINT NOT NULL, ",
            "create_time TIMESTAMPTZ NOT NULL, update_time TIMESTAMPTZ NOT NULL, ",
            "delete_time TIMESTAMPTZ NULL, ",
            $columns,
            ", PRIMARY KEY (tenant_id, id))"
        )
    };
}

/// A write of a record, as told to the observers of its collection.
#[derive(Debug, Clone, Copy)]
pub struct WriteEvent<'a> {
    pub collection: &'static str,
    pub action: AuditAction,
    pub id: Uuid,
    /// The record as stored (its JSON object, field names as on the wire); on delete, as it
    /// was.
    pub record: &'a Map<String, Json>,
    /// On update, the record as it was before; `None` otherwise.
    pub old: Option<&'a Map<String, Json>>,
}

/// Runs inside the write transaction of every create, update and delete of a collection,
/// after the record's row, audit record and event: derived data another crate keeps for it
/// (duplicate-matching keys, a search index). An error rolls the whole write back.
pub type WriteObserver = for<'a> fn(&'a Tx<'a>, WriteEvent<'a>) -> HookFuture<'a>;

/// Every registered collection.
#[derive(Debug, Clone)]
pub struct Registry {
    collections: Vec<Collection>,
    schema: Vec<SchemaChange>,
    observers: Vec<(&'static str, WriteObserver)>,
}

impl Registry {
    /// A collection by name.
    pub fn collection(&self, name: &str) -> Option<&Collection> {
        self.collections.iter().find(|c| c.name == name)
    }

    pub fn collections(&self) -> &[Collection] {
        &self.collections
    }

    /// The observers of a collection's writes, in registration order.
    pub fn observers_of<'a>(
        &'a self,
        collection: &'a str,
    ) -> impl Iterator<Item = WriteObserver> + 'a {
        self.observers
            .iter()
            .filter(move |(c, _)| *c == collection)
            .map(|(_, o)| *o)
    }

    /// The domain crates' schema changes, in registration order.
    pub fn schema_changes(&self) -> &[SchemaChange] {
        &self.schema
    }

    /// Collections grants may name (besides `*`): those governed by their own grants (a
    /// contact's positions follow the contact's).
    pub fn grantable(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.collections
            .iter()
            .filter(|c| c.permission == c.name)
            .map(|c| c.name)
    }
}

/// Collects registrations; see [`install`].
#[derive(Debug, Default)]
pub struct RegistryBuilder {
    collections: Vec<Collection>,
    schema: Vec<SchemaChange>,
    observers: Vec<(&'static str, WriteObserver)>,
}

impl RegistryBuilder {
    /// Registers a resource type.
    pub fn resource<R: Resource>(&mut self) -> &mut Self {
        self.collections.push(Collection::of::<R>());
        self
    }

    /// Registers a schema change of the crate (see [`SchemaChange`]); a crate registers its
    /// changes in the order they must run, and never edits or removes one that shipped.
    pub fn schema(&mut self, change: SchemaChange) -> &mut Self {
        self.schema.push(change);
        self
    }

    /// Observes every write of `collection` (any registered collection, also another
    /// crate's): see [`WriteObserver`].
    pub fn observe(&mut self, collection: &'static str, observer: WriteObserver) -> &mut Self {
        self.observers.push((collection, observer));
        self
    }

    /// Checks the registrations against each other.
    pub fn build(self) -> Result<Registry, String> {
        for (c, _) in &self.observers {
            if !self.collections.iter().any(|x| x.name == *c) {
                return Err(format!("an observer of {c}, which is not registered"));
            }
        }
        let mut changes = HashSet::new();
        for c in &self.schema {
            if !valid_change_name(c.name) {
                return Err(format!(
                    "schema change {:?} is not named m<YYYYMMDD>_<NNNNNN>_<what>",
                    c.name
                ));
            }
            if !changes.insert(c.name) {
                return Err(format!("schema change {} is registered twice", c.name));
            }
        }
        let mut names = HashSet::new();
        for c in &self.collections {
            if !names.insert(c.name) {
                return Err(format!("collection {} is registered twice", c.name));
            }
        }
        let known = |n: &str| self.collections.iter().any(|c| c.name == n);
        let table = |t: &str| self.collections.iter().any(|c| c.table == t);
        for c in &self.collections {
            if !known(c.permission) {
                return Err(format!(
                    "{} is governed by the grants of {}, which is not registered",
                    c.name, c.permission
                ));
            }
            for f in c.fields {
                if let Kind::Ref(t) | Kind::RefList(t) = f.kind
                    && !known(t)
                {
                    return Err(format!(
                        "{}.{} refers to {t}, which is not registered",
                        c.name, f.name
                    ));
                }
            }
            if let Some((column, parent)) = c.scope_parent {
                if !table(parent) {
                    return Err(format!(
                        "{} takes its scope from table {parent}, which no registered collection has",
                        c.name
                    ));
                }
                if !c.fields.iter().any(|f| f.column == column) {
                    return Err(format!("{} has no column {column} for its scope", c.name));
                }
            }
            if let Some(t) = c.tree_parent {
                match c.fields.iter().find(|f| f.name == t) {
                    Some(f) if f.kind == Kind::Ref(c.name) => {}
                    _ => {
                        return Err(format!(
                            "{}.{t} must be a reference to {} to form a tree",
                            c.name, c.name
                        ));
                    }
                }
            }
            if let Some(k) = c.name_key
                && !c.fields.iter().any(|f| f.name == k)
            {
                return Err(format!("{} is named by {k}, which is not a field", c.name));
            }
        }
        Ok(Registry {
            collections: self.collections,
            schema: self.schema,
            observers: self.observers,
        })
    }
}

/// `m` + 8 digits + `_` + 6 digits + `_` + a lower-case word of letters, digits and `_`.
fn valid_change_name(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() > 17
        && b[0] == b'm'
        && b[1..9].iter().all(u8::is_ascii_digit)
        && b[9] == b'_'
        && b[10..16].iter().all(u8::is_ascii_digit)
        && b[16] == b'_'
        && b[17..]
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
}

static INSTALLED: OnceLock<Registry> = OnceLock::new();

/// Installs the registry for this process: the shared model plus what `extend` registers
/// (each domain crate's `register`). Installing again with the same collections is a no-op;
/// with different ones it is an error.
pub fn install(extend: impl FnOnce(&mut RegistryBuilder)) -> Result<&'static Registry, String> {
    let mut b = RegistryBuilder::default();
    crate::model::register(&mut b);
    extend(&mut b);
    let wanted = b.build()?;
    let installed = INSTALLED.get_or_init(|| wanted.clone());
    let same = installed.collections.len() == wanted.collections.len()
        && installed.schema.len() == wanted.schema.len()
        && installed.observers.len() == wanted.observers.len()
        && installed
            .schema
            .iter()
            .zip(&wanted.schema)
            .all(|(a, b)| a.name == b.name)
        && wanted
            .collections
            .iter()
            .all(|c| installed.collection(c.name).is_some());
    if same {
        Ok(installed)
    } else {
        Err("the registry was already installed with other collections".into())
    }
}

/// The installed registry; the shared model alone until [`install`] is called.
pub fn registry() -> &'static Registry {
    INSTALLED.get_or_init(|| {
        let mut b = RegistryBuilder::default();
        crate::model::register(&mut b);
        // The shared model is checked by a unit test; were it inconsistent, the checks
        // that need a missing collection fail with INTERNAL rather than being skipped.
        let collections = b.collections.clone();
        b.build().unwrap_or(Registry {
            collections,
            schema: Vec::new(),
            observers: Vec::new(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shared_model_is_consistent() {
        let mut b = RegistryBuilder::default();
        crate::model::register(&mut b);
        let r = b.build();
        assert!(r.is_ok(), "{r:?}");
    }

    #[test]
    fn a_reference_to_an_unregistered_collection_is_refused() {
        let mut b = RegistryBuilder::default();
        b.resource::<crate::model::Position>();
        let e = b.build().err().unwrap_or_default();
        assert!(e.contains("not registered"), "{e}");
    }

    #[test]
    fn registering_twice_is_refused() {
        let mut b = RegistryBuilder::default();
        crate::model::register(&mut b);
        b.resource::<crate::model::Account>();
        let e = b.build().err().unwrap_or_default();
        assert!(e.contains("twice"), "{e}");
    }

    #[test]
    fn schema_changes_are_named_and_unique() {
        let mut b = RegistryBuilder::default();
        crate::model::register(&mut b);
        b.schema(SchemaChange::new("m20261125_100001_things", &[]));
        assert!(b.build().is_ok());
        for bad in [
            "things",
            "m2026112_100001_x",
            "m20261125_10001_x",
            "m20261125_100001_Things",
            "m20261125_100001_",
        ] {
            let mut b = RegistryBuilder::default();
            b.schema(SchemaChange::new(bad, &[]));
            let e = b.build().err().unwrap_or_default();
            assert!(e.contains("not named"), "{bad}: {e}");
        }
        let mut b = RegistryBuilder::default();
        b.schema(SchemaChange::new("m20261125_100001_things", &[]));
        b.schema(SchemaChange::new("m20261125_100001_things", &[]));
        let e = b.build().err().unwrap_or_default();
        assert!(e.contains("twice"), "{e}");
    }
}
