use crate::error::{Error, Result};
use crate::resource::{FieldSpec, Kind, Resource};
use crate::store::{self, col};
use crate::validate::{self, Violations};
use chrono::NaiveDate;
use sea_orm::ConnectionTrait;
use sea_orm::sea_query::{Expr, ExprTrait};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use std::collections::BTreeMap;

/// A custom field's value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CustomValue {
    Text(String),
    Number(f64),
    Date(NaiveDate),
    Enum(String),
}

/// Custom field values by key.
pub type CustomValues = BTreeMap<String, CustomValue>;

pub const TYPES: &[&str] = &["TEXT", "NUMBER", "DATE", "ENUM"];

/// A tenant-defined field of a collection that carries custom fields (`Resource::CUSTOM_FIELDS`:
/// accounts, contacts, and those the domain crates register).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CustomFieldDefinition {
    pub collection: String,
    pub key: String,
    pub display_name: String,
    #[serde(rename = "type")]
    pub value_type: String,
    pub enum_values: Vec<String>,
    pub required: bool,
}

impl Resource for CustomFieldDefinition {
    const COLLECTION: &'static str = "customFieldDefinitions";
    const TABLE: &'static str = "custom_field_definitions";
    const DEFAULT_ORDER: &'static str = "collection, key";
    const FIELDS: &'static [FieldSpec] = &[
        // Any registered collection with custom fields (checked by `validate`).
        FieldSpec::new("collection", "collection", Kind::Text)
            .sort()
            .immutable(),
        FieldSpec::new("key", "field_key", Kind::Text)
            .sort()
            .immutable(),
        FieldSpec::new("display_name", "display_name", Kind::Text).sort(),
        FieldSpec::new("type", "value_type", Kind::Enum(TYPES))
            .filter()
            .immutable(),
        FieldSpec::new("enum_values", "enum_values", Kind::Json),
        FieldSpec::new("required", "required", Kind::Bool).filter(),
    ];

    fn validate(&mut self) -> Result<()> {
        let mut v = Violations::new();
        let registry = crate::registry::registry();
        if !registry
            .collection(&self.collection)
            .is_some_and(|c| c.custom_fields)
        {
            let with: Vec<&str> = registry
                .collections()
                .iter()
                .filter(|c| c.custom_fields)
                .map(|c| c.name)
                .collect();
            v.add(
                "collection",
                format!(
                    "must be a collection with custom fields: {}",
                    with.join(", ")
                ),
            );
        }
        let k = &self.key;
        let key_ok = !k.is_empty()
            && k.len() <= 63
            && k.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            && k.bytes().next().is_some_and(|b| b.is_ascii_lowercase());
        if !key_ok {
            v.add(
                "key",
                "must be 1-63 characters of a-z, 0-9 and '_', starting with a letter",
            );
        }
        if let Some(s) = v.check(validate::text(
            "display_name",
            &self.display_name,
            200,
            false,
        )) {
            self.display_name = s;
        }
        if !TYPES.contains(&self.value_type.as_str()) {
            v.add("type", "must be TEXT, NUMBER, DATE or ENUM");
        }
        if self.value_type == "ENUM" {
            if self.enum_values.is_empty() {
                v.add("enum_values", "an ENUM field needs at least one value");
            }
            if let Some(vals) = v.check(validate_enum_values(&self.enum_values)) {
                self.enum_values = vals;
            }
        } else if !self.enum_values.is_empty() {
            v.add("enum_values", "only ENUM fields have values");
        }
        v.into_result()
    }
}

fn validate_enum_values(values: &[String]) -> Result<Vec<String>> {
    if values.len() > 500 {
        return Err(Error::invalid("enum_values", "at most 500 values"));
    }
    let mut out: Vec<String> = Vec::new();
    for (i, s) in values.iter().enumerate() {
        let s = validate::text(&format!("enum_values[{i}]"), s, 100, true)?;
        if out.contains(&s) {
            return Err(Error::invalid(
                format!("enum_values[{i}]"),
                "is a duplicate",
            ));
        }
        out.push(s);
    }
    Ok(out)
}

/// The definitions of a collection.
pub async fn definitions<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    collection: &str,
) -> Result<Vec<CustomFieldDefinition>> {
    let mut q = store::select::<CustomFieldDefinition>(tenant);
    q.and_where(Expr::col(col("collection")).eq(collection));
    conn.query_all(&q)
        .await?
        .iter()
        .map(|r| store::decode::<CustomFieldDefinition>(r).and_then(|(_, o)| store::from_object(o)))
        .collect()
}

/// Checks custom values against the definitions: known keys, matching types, enum values,
/// required fields present, text within limits.
pub fn validate_values(defs: &[CustomFieldDefinition], values: Option<&Json>) -> Result<()> {
    let values: CustomValues = match values {
        None | Some(Json::Null) => CustomValues::new(),
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|_| Error::invalid("custom_fields", "has a malformed value"))?,
    };
    let mut v = Violations::new();
    for (key, value) in &values {
        let field = format!("custom_fields.{key}");
        let Some(def) = defs.iter().find(|d| &d.key == key) else {
            v.add(field, "no such custom field");
            continue;
        };
        match (def.value_type.as_str(), value) {
            ("TEXT", CustomValue::Text(s)) => {
                v.check(validate::text(&field, s, 10_000, false));
            }
            ("NUMBER", CustomValue::Number(n)) if n.is_finite() => {}
            ("NUMBER", CustomValue::Number(_)) => v.add(field, "must be a finite number"),
            ("DATE", CustomValue::Date(_)) => {}
            ("ENUM", CustomValue::Enum(s)) => {
                if !def.enum_values.contains(s) {
                    v.add(
                        field,
                        format!("must be one of {}", def.enum_values.join(", ")),
                    );
                }
            }
            (t, _) => v.add(field, format!("must be a {} value", t.to_lowercase())),
        }
    }
    for d in defs.iter().filter(|d| d.required) {
        if !values.contains_key(&d.key) {
            v.add(format!("custom_fields.{}", d.key), "is required");
        }
    }
    v.into_result()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defs() -> Vec<CustomFieldDefinition> {
        vec![
            CustomFieldDefinition {
                collection: "contacts".into(),
                key: "tier".into(),
                value_type: "ENUM".into(),
                enum_values: vec!["gold".into(), "silver".into()],
                required: true,
                ..Default::default()
            },
            CustomFieldDefinition {
                collection: "contacts".into(),
                key: "score".into(),
                value_type: "NUMBER".into(),
                ..Default::default()
            },
        ]
    }

    #[test]
    fn values_are_checked() {
        let ok = serde_json::json!({"tier": {"enum": "gold"}, "score": {"number": 3.5}});
        assert!(validate_values(&defs(), Some(&ok)).is_ok());
        let bad = serde_json::json!({"tier": {"enum": "bronze"}, "score": {"text": "x"}, "nope": {"text": "y"}});
        let e = validate_values(&defs(), Some(&bad)).err();
        let fields: Vec<String> = e
            .map(|e| e.violations.into_iter().map(|v| v.field).collect())
            .unwrap_or_default();
        assert_eq!(
            fields,
            vec![
                "custom_fields.nope",
                "custom_fields.score",
                "custom_fields.tier"
            ]
        );
        let missing = serde_json::json!({});
        assert!(validate_values(&defs(), Some(&missing)).is_err());
    }
}
