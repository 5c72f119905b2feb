//! Conversions between a resource's JSON form and database values, per field [`Kind`].

use crate::error::{Error, Result};
use crate::resource::{FieldSpec, Kind};
use chrono::{DateTime, NaiveDate, Utc};
use sea_orm::QueryResult;
use sea_orm::sea_query::Value;
use serde_json::Value as Json;
use uuid::Uuid;

/// Encodes a list as `|a|b|` (the empty list is `||`), so `:` filters are a LIKE.
pub fn encode_list(items: impl IntoIterator<Item = String>) -> String {
    let mut s = String::from("|");
    let mut any = false;
    for i in items {
        s.push_str(&i);
        s.push('|');
        any = true;
    }
    if !any {
        s.push('|');
    }
    s
}

pub fn decode_list(s: &str) -> Vec<String> {
    s.split('|')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

fn bad(field: &FieldSpec) -> Error {
    Error::internal(format!("field {} has an unexpected JSON shape", field.name))
}

/// The database value of a field from its JSON value.
pub fn to_db(field: &FieldSpec, v: &Json) -> Result<Value> {
    Ok(match field.kind {
        Kind::Text | Kind::Enum(_) => Value::from(v.as_str().unwrap_or_default().to_owned()),
        Kind::Int => Value::from(v.as_i64().unwrap_or_default()),
        Kind::Bool => Value::from(v.as_bool().unwrap_or_default()),
        Kind::Time => Value::from(match v {
            Json::Null => None,
            Json::String(s) => Some(
                DateTime::parse_from_rfc3339(s)
                    .map_err(|_| bad(field))?
                    .with_timezone(&Utc),
            ),
            _ => return Err(bad(field)),
        }),
        Kind::Date => Value::from(match v {
            Json::Null => None,
            Json::String(s) => {
                Some(NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| bad(field))?)
            }
            _ => return Err(bad(field)),
        }),
        Kind::Ref(_) => Value::from(match v {
            Json::Null => None,
            Json::String(s) => Some(Uuid::try_parse(s).map_err(|_| bad(field))?),
            _ => return Err(bad(field)),
        }),
        Kind::Tags | Kind::RefList(_) => {
            let items = v
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_owned))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default();
            Value::from(encode_list(items))
        }
        Kind::Json => Value::from(serde_json::to_string(v).map_err(|_| bad(field))?),
    })
}

/// The JSON value of a field from a result row.
pub fn from_db(field: &FieldSpec, row: &QueryResult) -> Result<Json> {
    let c = field.column;
    Ok(match field.kind {
        Kind::Text | Kind::Enum(_) => Json::String(row.try_get::<String>("", c)?),
        Kind::Int => Json::from(row.try_get::<i64>("", c)?),
        Kind::Bool => Json::Bool(row.try_get::<bool>("", c)?),
        Kind::Time => match row.try_get::<Option<DateTime<Utc>>>("", c)? {
            Some(t) => Json::String(t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
            None => Json::Null,
        },
        Kind::Date => match row.try_get::<Option<NaiveDate>>("", c)? {
            Some(d) => Json::String(d.format("%Y-%m-%d").to_string()),
            None => Json::Null,
        },
        Kind::Ref(_) => match row.try_get::<Option<Uuid>>("", c)? {
            Some(u) => Json::String(u.to_string()),
            None => Json::Null,
        },
        Kind::Tags | Kind::RefList(_) => Json::Array(
            decode_list(&row.try_get::<String>("", c)?)
                .into_iter()
                .map(Json::String)
                .collect(),
        ),
        Kind::Json => {
            let s = row.try_get::<String>("", c)?;
            serde_json::from_str(&s).map_err(|_| bad(field))?
        }
    })
}

/// Whether a value is "not set" (used to decide which fields a Create writes).
pub fn is_empty(v: &Json) -> bool {
    match v {
        Json::Null => true,
        Json::String(s) => s.is_empty(),
        Json::Array(a) => a.is_empty(),
        Json::Object(o) => o.is_empty(),
        Json::Bool(b) => !b,
        Json::Number(n) => n.as_f64() == Some(0.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_round_trip() {
        assert_eq!(encode_list(Vec::<String>::new()), "||");
        assert_eq!(encode_list(vec!["a".into(), "b".into()]), "|a|b|");
        assert_eq!(decode_list("|a|b|"), vec!["a", "b"]);
        assert!(decode_list("||").is_empty());
    }
}
