use crate::access::{FieldRule, Grant, Policy, RoleRights};
use crate::error::Result;
use crate::resource::{FieldSpec, Kind, Resource};
use crate::store::{self, col};
use crate::validate::{self, Violations};
use sea_orm::ConnectionTrait;
use sea_orm::sea_query::{Expr, ExprTrait};
use serde::{Deserialize, Serialize};

/// A role: grants with record-level scope, and field rules.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Role {
    /// The id in `roles/{key}`, named in tokens.
    pub key: String,
    pub display_name: String,
    pub grants: Vec<Grant>,
    pub field_rules: Vec<FieldRule>,
}

impl Resource for Role {
    const COLLECTION: &'static str = "roles";
    const TABLE: &'static str = "roles";
    const DEFAULT_ORDER: &'static str = "key";
    const NAME_KEY: Option<&'static str> = Some("key");
    const FIELDS: &'static [FieldSpec] = &[
        FieldSpec::new("key", "role_key", Kind::Text)
            .sort()
            .immutable(),
        FieldSpec::new("display_name", "display_name", Kind::Text).sort(),
        FieldSpec::new("grants", "grants", Kind::Json),
        FieldSpec::new("field_rules", "field_rules", Kind::Json),
    ];

    fn validate(&mut self) -> Result<()> {
        let mut v = Violations::new();
        v.check(validate::slug("role_id", &self.key));
        if let Some(s) = v.check(validate::text(
            "display_name",
            &self.display_name,
            200,
            false,
        )) {
            self.display_name = s;
        }
        if self.grants.len() > 200 {
            v.add("grants", "at most 200 grants");
        }
        for (i, g) in self.grants.iter().enumerate() {
            let registry = crate::registry::registry();
            if g.collection != "*" && !registry.grantable().any(|c| c == g.collection) {
                v.add(
                    format!("grants[{i}].collection"),
                    format!(
                        "must be \"*\" or one of {}",
                        registry.grantable().collect::<Vec<_>>().join(", ")
                    ),
                );
            }
            if g.actions.is_empty() {
                v.add(
                    format!("grants[{i}].actions"),
                    "must name at least one action",
                );
            }
        }
        if self.field_rules.len() > 1000 {
            v.add("field_rules", "at most 1000 rules");
        }
        for (i, r) in self.field_rules.iter().enumerate() {
            match crate::registry::registry()
                .collection(&r.collection)
                .map(|c| c.fields)
            {
                None => v.add(
                    format!("field_rules[{i}].collection"),
                    "is not a collection with fields",
                ),
                Some(fields) if !fields.iter().any(|f| f.name == r.field) => v.add(
                    format!("field_rules[{i}].field"),
                    format!("{} has no field {:?}", r.collection, r.field),
                ),
                Some(_) => {}
            }
        }
        v.into_result()
    }
}

/// The policy of a principal's role keys in a tenant (unknown keys grant nothing).
pub async fn load_policy<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    keys: &[String],
) -> Result<Policy> {
    if keys.is_empty() {
        return Ok(Policy::default());
    }
    let mut q = store::select::<Role>(tenant);
    q.and_where(Expr::col(col("role_key")).is_in(keys.iter().map(String::as_str)));
    let mut roles = Vec::new();
    for r in conn.query_all(&q).await? {
        let (_, obj) = store::decode::<Role>(&r)?;
        let role: Role = store::from_object(obj)?;
        roles.push(RoleRights {
            grants: role.grants,
            field_rules: role.field_rules,
        });
    }
    Ok(Policy::new(roles))
}

/// The id of the role with `key`, if it exists.
/// The built-in role every tenant starts with; it always keeps every right, so a tenant
/// can never lock itself out of role management.
pub const BUILTIN_ADMIN: &str = "admin";

/// Refuses deleting the built-in administrator role or narrowing its rights (its display
/// name may change). `mask` is the update mask; `None` means a delete.
pub fn guard_builtin(key: &str, mask: Option<&[String]>) -> Result<()> {
    if key != BUILTIN_ADMIN {
        return Ok(());
    }
    let refused = match mask {
        None => Some("deleted"),
        Some(m) if m.iter().any(|p| p.trim() != "display_name") => Some("changed"),
        Some(_) => None,
    };
    match refused {
        Some(what) => Err(crate::error::Error::failed_precondition(
            "BUILTIN_ROLE",
            format!(
                "roles/{BUILTIN_ADMIN} is built in and cannot be {what}: it keeps the right to manage roles; only its display_name may change"
            ),
        )
        .with("resource", format!("roles/{BUILTIN_ADMIN}"))),
        None => Ok(()),
    }
}

pub async fn find_by_key<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    key: &str,
) -> Result<Option<uuid::Uuid>> {
    let mut q = store::select::<Role>(tenant);
    q.and_where(Expr::col(col("role_key")).eq(key));
    match conn.query_one(&q).await? {
        Some(r) => Ok(Some(store::decode::<Role>(&r)?.0.id)),
        None => Ok(None),
    }
}
