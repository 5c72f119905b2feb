//! What a resource is: a plain serde struct plus a static description of its fields.
//!
//! The generic store ([`crate::store`]) and use cases ([`crate::service`]) work for every
//! resource from this description: columns, filters, sorting, field-level permissions,
//! field masks, audit diffs and events all come from [`FieldSpec`]s, so a new resource is a
//! struct, a field table and a `validate` function.

use crate::error::Result;
use crate::journal::AuditAction;
use crate::service::Tx;
use chrono::{DateTime, Utc};
use serde::{Serialize, de::DeserializeOwned};
use uuid::Uuid;

/// How a field is stored and compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// JSON string; `TEXT NOT NULL`.
    Text,
    /// JSON integer; `BIGINT NOT NULL`.
    Int,
    /// JSON bool; `BOOLEAN NOT NULL`.
    Bool,
    /// RFC 3339 string or null; `TIMESTAMPTZ NULL`.
    Time,
    /// `YYYY-MM-DD` or null; `DATE NULL`.
    Date,
    /// One of the listed names; `TEXT NOT NULL`.
    Enum(&'static [&'static str]),
    /// UUID of a resource of the named collection, or null; `UUID NULL`.
    Ref(&'static str),
    /// Lower-case strings; stored as `|a|b|` text, filtered with `:`.
    Tags,
    /// UUIDs of resources of the named collection; stored as `|id|id|` text.
    RefList(&'static str),
    /// Any JSON; stored as text.
    Json,
}

/// One field of a resource.
#[derive(Debug, Clone, Copy)]
pub struct FieldSpec {
    /// The field's name on the wire and in JSON (the proto field name).
    pub name: &'static str,
    pub column: &'static str,
    pub kind: Kind,
    /// Usable in `filter`.
    pub filter: bool,
    /// Usable in `order_by` (the column must be NOT NULL).
    pub sort: bool,
    /// May be changed by Update (listed in an update mask).
    pub mutable: bool,
    /// A large value (file content, a document body) kept only in the record: audit
    /// records and outbox events carry its size and SHA-256 instead of the value.
    pub bulk: bool,
}

impl FieldSpec {
    pub const fn new(name: &'static str, column: &'static str, kind: Kind) -> Self {
        Self {
            name,
            column,
            kind,
            filter: false,
            sort: false,
            mutable: true,
            bulk: false,
        }
    }
    pub const fn filter(mut self) -> Self {
        self.filter = true;
        self
    }
    pub const fn sort(mut self) -> Self {
        self.sort = true;
        self.filter = true;
        self
    }
    pub const fn immutable(mut self) -> Self {
        self.mutable = false;
        self
    }
    /// See [`FieldSpec::bulk`]: the value stays out of audit records and events.
    pub const fn bulk(mut self) -> Self {
        self.bulk = true;
        self
    }
}

/// A resource's data (without id, times and revision, which live in [`Meta`]).
pub trait Resource: Serialize + DeserializeOwned + Clone + Default + Send + Sync + 'static {
    /// Collection id in resource names and permissions, e.g. `contacts`.
    const COLLECTION: &'static str;
    /// Collection whose grants govern this resource (a child uses its parent's).
    const PERMISSION: &'static str = Self::COLLECTION;
    const TABLE: &'static str;
    const FIELDS: &'static [FieldSpec];
    /// Whether rows carry `owner_id`/`territory_id` (fields `owner`, `territory`) for
    /// record-level scope.
    const OWNED: bool = false;
    /// A child resource: (column holding the parent id, parent's table); scope is the parent's.
    const SCOPE_PARENT: Option<(&'static str, &'static str)> = None;
    /// The field (a `Ref` to the same collection) forming a tree; cycles are refused.
    const TREE_PARENT: Option<&'static str> = None;
    /// Whether the resource has tenant-defined `custom_fields`.
    const CUSTOM_FIELDS: bool = false;
    /// Used when a List has no `order_by`.
    const DEFAULT_ORDER: &'static str = "create_time desc";
    /// The field whose value names records in resource names instead of the id
    /// (`roles/{key}`); `None` names them by id.
    const NAME_KEY: Option<&'static str> = None;
    /// Records computed from other records by a job (scores, per-customer measures), which
    /// the job writes again on each run: written without an audit record or an event per
    /// record, since the job's own record (its run: who started it, with which settings,
    /// when it ended) is audited and evented and says where every derived record came from.
    /// Derived records are still checked (validation, references) and read under the same
    /// grants as any other.
    const DERIVED: bool = false;

    /// Normalises (trims, lower-cases, E.164...) and validates; names each bad field.
    fn validate(&mut self) -> Result<()>;

    /// References inside JSON fields (e.g. order lines' products): (field path, collection, id).
    fn nested_refs(&self) -> Vec<(String, &'static str, Uuid)> {
        Vec::new()
    }

    /// Called with the stored record when an update is applied (e.g. to recompute
    /// derived fields); the default does nothing.
    fn derive(&mut self) {}

    /// Runs inside the write transaction before a create or an update is written, once the
    /// caller's input has passed the field rules, validation and the scope check. It may
    /// change `data` (the result is validated again; its changes are the system's, not the
    /// caller's, so field rules do not apply to them) and make other writes through `tx`,
    /// which commit or roll back with this one. `old` is the stored record on update,
    /// `None` on create. Use `tx`, never the context's own write methods, inside a hook.
    fn before_write<'a>(
        _tx: &'a Tx<'a>,
        _id: Uuid,
        _old: Option<&'a Self>,
        _data: &'a mut Self,
    ) -> HookFuture<'a> {
        Box::pin(async { Ok(()) })
    }

    /// Runs inside the write transaction after the record's own row, audit record and
    /// event are written, on create, update and delete (`action` says which; on delete
    /// `rec` is the record as it was). Writes made here through `tx` get their own audit
    /// records and events, after this record's.
    fn after_write<'a>(
        _tx: &'a Tx<'a>,
        _action: AuditAction,
        _rec: &'a Record<Self>,
    ) -> HookFuture<'a> {
        Box::pin(async { Ok(()) })
    }
}

/// What a write hook returns.
pub type HookFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + 'a>>;

/// The future of a collection's [`Collection::set_ref`].
pub type RefFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<bool>> + Send + 'a>>;

/// Fields every resource has, filterable and sortable.
pub const META_FIELDS: &[FieldSpec] = &[
    FieldSpec::new("create_time", "create_time", Kind::Time)
        .sort()
        .immutable(),
    FieldSpec::new("update_time", "update_time", Kind::Time)
        .sort()
        .immutable(),
];

/// Identity and bookkeeping of a stored record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub id: Uuid,
    pub revision: i64,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
}

impl Meta {
    /// The opaque etag clients send back.
    pub fn etag(&self) -> String {
        format!("\"r{}\"", self.revision)
    }
}

/// A stored resource as the caller may see it.
#[derive(Debug, Clone)]
pub struct Record<R> {
    pub meta: Meta,
    pub data: R,
    /// Fields withheld from this caller by field-level rules.
    pub hidden: Vec<&'static str>,
}

/// A page of a List.
#[derive(Debug, Clone)]
pub struct Page<R> {
    pub items: Vec<Record<R>>,
    pub next_page_token: String,
}

/// What the engine knows of a collection without its Rust type: enough to check a
/// reference to it, apply its permissions and redact its history.
#[derive(Debug, Clone, Copy)]
pub struct Collection {
    pub name: &'static str,
    pub table: &'static str,
    /// The collection whose grants govern it (its own name, or its parent's).
    pub permission: &'static str,
    pub fields: &'static [FieldSpec],
    pub owned: bool,
    pub scope_parent: Option<(&'static str, &'static str)>,
    pub tree_parent: Option<&'static str>,
    pub custom_fields: bool,
    pub name_key: Option<&'static str>,
    /// The JSON object of a default record: every field the struct serialises (checked
    /// against the field table by the drift tests).
    pub sample: fn() -> serde_json::Value,
    /// Whether a record missing every field decodes (each field has a serde default, as
    /// field rules and older rows need); checked by the drift tests.
    pub decodes_partial: fn() -> bool,
    /// Changes one record's reference field from one record (`None`: from empty) to another
    /// as the system, in a transaction, audited and evented as an update by the caller (see
    /// [`Tx::repoint_references`], [`Tx::link`]); false when the field no longer held `from`.
    pub set_ref: for<'a> fn(&'a Tx<'a>, Uuid, &'static str, Option<Uuid>, Uuid) -> RefFuture<'a>,
}

impl Collection {
    pub const fn of<R: Resource>() -> Self {
        Self {
            name: R::COLLECTION,
            table: R::TABLE,
            permission: R::PERMISSION,
            fields: R::FIELDS,
            owned: R::OWNED,
            scope_parent: R::SCOPE_PARENT,
            tree_parent: R::TREE_PARENT,
            custom_fields: R::CUSTOM_FIELDS,
            name_key: R::NAME_KEY,
            sample: || serde_json::to_value(R::default()).unwrap_or_default(),
            decodes_partial: || serde_json::from_value::<R>(serde_json::json!({})).is_ok(),
            set_ref: crate::service::set_ref_of::<R>,
        }
    }

    /// Whether records carry a record-level scope (their own owner, or their parent's).
    pub fn scoped(&self) -> bool {
        self.owned || self.scope_parent.is_some()
    }

    pub fn field(&self, name: &str) -> Option<&'static FieldSpec> {
        self.fields
            .iter()
            .chain(META_FIELDS.iter())
            .find(|f| f.name == name)
    }
}

/// Looks a field up among the resource's fields and the meta fields.
pub fn field<R: Resource>(name: &str) -> Option<&'static FieldSpec> {
    R::FIELDS
        .iter()
        .chain(META_FIELDS.iter())
        .find(|f| f.name == name)
}
