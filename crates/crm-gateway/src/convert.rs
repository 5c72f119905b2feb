//! Wire <-> domain conversions shared by every service.

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use crm_api::google::r#type as gt;
use crm_core::error::{Error, Result};
use crm_core::ids;
use uuid::Uuid;

pub fn ts(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

pub fn opt_ts(t: Option<DateTime<Utc>>) -> Option<prost_types::Timestamp> {
    t.map(ts)
}

pub fn from_ts(field: &str, t: Option<prost_types::Timestamp>) -> Result<Option<DateTime<Utc>>> {
    match t {
        None => Ok(None),
        Some(t) => {
            let nanos = u32::try_from(t.nanos)
                .ok()
                .filter(|n| *n < 1_000_000_000)
                .ok_or_else(|| Error::invalid(field, "nanos must be within 0..1e9"))?;
            DateTime::from_timestamp(t.seconds, nanos - nanos % 1000)
                .filter(|d| (1..=9999).contains(&d.year()))
                .map(Some)
                .ok_or_else(|| Error::invalid(field, "is out of range"))
        }
    }
}

pub fn date(d: Option<NaiveDate>) -> Option<gt::Date> {
    d.map(|d| gt::Date {
        year: d.year(),
        month: i32::try_from(d.month()).unwrap_or(0),
        day: i32::try_from(d.day()).unwrap_or(0),
    })
}

pub fn from_date(field: &str, d: Option<gt::Date>) -> Result<Option<NaiveDate>> {
    match d {
        None => Ok(None),
        Some(d) => crm_core::validate::date(field, d.year, d.month, d.day),
    }
}

/// `collection/{id}` ([`ids::format_name`]), built without the formatting machinery: lists
/// name every record and its references.
pub fn name(collection: &str, id: Option<Uuid>) -> String {
    let Some(id) = id else {
        return String::new();
    };
    let mut buf = Uuid::encode_buffer();
    let id = id.hyphenated().encode_lower(&mut buf);
    let mut s = String::with_capacity(collection.len() + 1 + id.len());
    s.push_str(collection);
    s.push('/');
    s.push_str(id);
    s
}

pub fn reference(field: &str, collection: &str, name: &str) -> Result<Option<Uuid>> {
    ids::parse_optional_name(field, collection, name.trim())
}

pub fn references(field: &str, collection: &str, names: &[String]) -> Result<Vec<Uuid>> {
    names
        .iter()
        .enumerate()
        .map(|(i, n)| ids::parse_name(&format!("{field}[{i}]"), collection, n.trim()))
        .collect()
}

pub fn money(code: &str, minor: i64) -> gt::Money {
    let (units, nanos) = crm_core::validate::minor_to_money(code, minor);
    gt::Money {
        currency_code: code.to_owned(),
        units,
        nanos,
    }
}

/// Money in minor units; the currency must be `code` when one is required.
pub fn from_money(field: &str, m: &gt::Money, code: Option<&str>) -> Result<i64> {
    if let Some(c) = code
        && !m.currency_code.is_empty()
        && m.currency_code != c
    {
        return Err(Error::invalid(
            format!("{field}.currency_code"),
            format!("must be the order currency {c}"),
        ));
    }
    let c = code.unwrap_or(&m.currency_code);
    crm_core::validate::money_to_minor(field, c, m.units, m.nanos)
}

pub fn mask(m: Option<prost_types::FieldMask>) -> Vec<String> {
    m.map(|m| m.paths).unwrap_or_default()
}

/// A required message field.
pub fn required<T>(field: &str, v: Option<T>) -> Result<T> {
    v.ok_or_else(|| Error::invalid(field, "is required"))
}

pub fn hidden(h: &[&'static str]) -> Vec<String> {
    h.iter().map(|s| (*s).to_owned()).collect()
}

/// A wire enum value, or unset (0) when the field is among the record's hidden ones: a
/// hidden field is decoded as its default, and an enum's default is a real value.
pub fn enum_shown(hidden: &[&'static str], field: &str, value: i32) -> i32 {
    if hidden.contains(&field) { 0 } else { value }
}

pub fn address_in(a: crm_api::v1::PostalAddress) -> crm_core::model::PostalAddress {
    crm_core::model::PostalAddress {
        label: a.label,
        lines: a.lines,
        locality: a.locality,
        administrative_area: a.administrative_area,
        postal_code: a.postal_code,
        region_code: a.region_code,
    }
}

pub fn address_out(a: crm_core::model::PostalAddress) -> crm_api::v1::PostalAddress {
    crm_api::v1::PostalAddress {
        label: a.label,
        lines: a.lines,
        locality: a.locality,
        administrative_area: a.administrative_area,
        postal_code: a.postal_code,
        region_code: a.region_code,
    }
}

pub fn custom_in(
    m: std::collections::HashMap<String, crm_api::v1::CustomFieldValue>,
) -> Result<crm_core::model::custom_field::CustomValues> {
    use crm_api::v1::custom_field_value::Kind as K;
    use crm_core::model::CustomValue as V;
    let mut out = crm_core::model::custom_field::CustomValues::new();
    for (k, v) in m {
        let field = format!("custom_fields.{k}");
        let value = match v.kind {
            Some(K::TextValue(s)) => V::Text(s),
            Some(K::NumberValue(n)) => V::Number(n),
            Some(K::DateValue(d)) => V::Date(
                from_date(&field, Some(d))?
                    .ok_or_else(|| Error::invalid(&field, "is not a date"))?,
            ),
            Some(K::EnumValue(s)) => V::Enum(s),
            None => return Err(Error::invalid(field, "has no value")),
        };
        out.insert(k, value);
    }
    Ok(out)
}

pub fn custom_out(
    m: crm_core::model::custom_field::CustomValues,
) -> std::collections::HashMap<String, crm_api::v1::CustomFieldValue> {
    use crm_api::v1::custom_field_value::Kind as K;
    use crm_core::model::CustomValue as V;
    m.into_iter()
        .map(|(k, v)| {
            let kind = match v {
                V::Text(s) => K::TextValue(s),
                V::Number(n) => K::NumberValue(n),
                V::Date(d) => K::DateValue(date(Some(d)).unwrap_or_default()),
                V::Enum(s) => K::EnumValue(s),
            };
            (k, crm_api::v1::CustomFieldValue { kind: Some(kind) })
        })
        .collect()
}

/// An enum value this API version does not define: refused, never coerced.
pub fn unknown_enum(field: &str, v: i32) -> Error {
    Error::invalid(field, format!("{v} is not a defined value"))
}

pub fn phone_in(p: crm_api::v1::Phone) -> crm_core::model::Phone {
    crm_core::model::Phone {
        number: p.number,
        label: p.label,
        extension: p.extension,
    }
}

pub fn phone_out(p: crm_core::model::Phone) -> crm_api::v1::Phone {
    crm_api::v1::Phone {
        number: p.number,
        label: p.label,
        extension: p.extension,
    }
}

pub fn email_in(e: crm_api::v1::Email) -> crm_core::model::Email {
    crm_core::model::Email {
        address: e.address,
        label: e.label,
    }
}

pub fn email_out(e: crm_core::model::Email) -> crm_api::v1::Email {
    crm_api::v1::Email {
        address: e.address,
        label: e.label,
    }
}

/// A JSON value as a `google.protobuf.Value`.
pub fn json_value(v: &serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(json_value).collect(),
        }),
        serde_json::Value::Object(m) => Kind::StructValue(prost_types::Struct {
            fields: m.iter().map(|(k, v)| (k.clone(), json_value(v))).collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn names_as_ids_formats_them() {
        let id = Uuid::now_v7();
        assert_eq!(name("contacts", Some(id)), ids::format_name("contacts", id));
        assert_eq!(name("users", None), "");
    }
}
