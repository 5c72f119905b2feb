//! A4 Segments: rules over a customer's fields, custom fields, RFM, value, lifecycle and
//! behaviour, evaluated in memory; incremental membership and tag write-back.
//!
//! # Rules are crm-core filters
//!
//! A segment rule is an AIP-160 filter, the same language `List` calls take, **parsed by
//! crm-core** ([`crm_core::query::filter::parse`]) into its typed AST; this module type-checks
//! that AST against a [`FieldCatalog`] ([`SegmentRule::compile`]: an unknown field, a wrong
//! literal or an operator the field's type does not support is an error naming it, with its
//! position) and evaluates it against a [`CustomerRecord`]. Examples:
//!
//! ```text
//! rfm.segment = champions AND region = "EU"
//! rfm.r >= 4 AND (value > 60 OR custom.tier = gold)
//! behaviour.response_rate >= 0.2 AND NOT lifecycle.stage = decline
//! behaviour.product_path:"sku-tent>sku-stove" AND tags:outdoor
//! ```
//!
//! Semantics match crm-core's SQL compilation of the same filter, so a segment computed here
//! and one computed by a database query agree:
//!
//! * text `=`/`!=` compare exactly; `= "abc*"` is a case-sensitive prefix; `:` is a
//!   case-insensitive *contains* under Unicode simple case folding; `<`...`>=` compare bytes
//!   (SQLite's binary collation);
//! * lists (`tags`) take `:` only, case-insensitively on the element; references take
//!   resource names (`users/{id}`);
//! * `field:*` is true when the field has a value;
//! * a field **without a value** is SQL `NULL`: every comparison with it is *unknown*, `NOT`
//!   of unknown is unknown, `AND`/`OR` follow three-valued logic, and a customer whose rule is
//!   unknown is **not** a member (as `WHERE` drops NULL rows).
//!
//! Additions for analytics: `Number` fields (`value`, `behaviour.response_rate`, numeric
//! custom fields) compare as `f64` with integer or decimal literals, and the product path
//! `behaviour.product_path:"X>Y>Z"` is true when the customer bought `X`, then **later**
//! (strictly later purchase time) `Y`, then later `Z`; the keys are whatever the caller puts
//! in [`Purchase::products`] (product ids, SKUs, product-group keys).
//!
//! # Incremental membership
//!
//! [`SegmentRule::fields`] lists the fields a rule reads; [`SegmentRule::depends_on`] tells
//! whether a change of some fields can affect it, and [`membership_change`] decides whether a
//! changed customer enters or leaves. [`tag_delta`] turns memberships into tags to add and
//! remove on the customer.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDate, Utc};
use crm_core::model::custom_field::{CustomFieldDefinition, CustomValue, CustomValues};
use crm_core::query::filter::{self, Comparison, Expr, Literal, Op};
use crm_core::resource::{FieldSpec, Kind};
use regex::Regex;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Collector, Error, Problem, Result};
use crate::rfm::{CustomerRfm, RfmStatus};

/// The field of the product path.
pub const PRODUCT_PATH: &str = "behaviour.product_path";
/// Most steps in one product path.
pub const MAX_PATH_STEPS: usize = 10;

/// The type of a field a rule can read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "of", rename_all = "snake_case")]
pub enum FieldKind {
    /// Text.
    String,
    /// 64-bit integer.
    Int,
    /// Decimal number (`f64`).
    Number,
    /// `true` / `false`.
    Bool,
    /// RFC 3339 timestamp.
    Timestamp,
    /// `YYYY-MM-DD`.
    Date,
    /// One of the listed names.
    Enum(Vec<String>),
    /// A list of lower-case strings (tags).
    StringList,
    /// A reference to a resource of the named collection (`users/{id}`).
    Ref(String),
    /// References to resources of the named collection.
    RefList(String),
    /// The customer's purchase sequence (only [`PRODUCT_PATH`]).
    ProductPath,
}

impl FieldKind {
    fn describe(&self) -> &'static str {
        match self {
            FieldKind::String => "string",
            FieldKind::Int => "integer",
            FieldKind::Number => "number",
            FieldKind::Bool => "boolean",
            FieldKind::Timestamp => "timestamp",
            FieldKind::Date => "date",
            FieldKind::Enum(_) => "enum",
            FieldKind::StringList => "string list",
            FieldKind::Ref(_) => "reference",
            FieldKind::RefList(_) => "reference list",
            FieldKind::ProductPath => "product path",
        }
    }

    /// Mirrors crm-core's operator table (`FieldType::allows`, private there).
    fn allows(&self, op: Op) -> bool {
        match self {
            FieldKind::String => true,
            FieldKind::Int | FieldKind::Number | FieldKind::Timestamp | FieldKind::Date => {
                op != Op::Has
            }
            FieldKind::Bool | FieldKind::Enum(_) | FieldKind::Ref(_) => {
                matches!(op, Op::Eq | Op::Ne)
            }
            FieldKind::StringList | FieldKind::RefList(_) | FieldKind::ProductPath => op == Op::Has,
        }
    }
}

/// The fields rules may name, with their types.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldCatalog {
    /// Field name (`region`, `custom.tier`, `rfm.r`) to type.
    pub fields: BTreeMap<String, FieldKind>,
}

impl FieldCatalog {
    /// An empty catalogue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a field.
    pub fn with(mut self, name: impl Into<String>, kind: FieldKind) -> Self {
        self.fields.insert(name.into(), kind);
        self
    }

    /// The analytics fields every customer record can carry:
    ///
    /// | field | type | meaning |
    /// |---|---|---|
    /// | `rfm.r`, `rfm.f`, `rfm.m` | integer | RFM scores |
    /// | `rfm.segment` | string | RFM segment name |
    /// | `rfm.status` | enum | `SCORED`, `NO_ORDERS`, `NO_PURCHASES` |
    /// | `value` | number | customer value score |
    /// | `lifecycle.stage` | string | current lifecycle stage key |
    /// | `behaviour.purchase_power` | integer | monetary in the scoring currency, minor units |
    /// | `behaviour.order_count` | integer | purchases in the RFM period |
    /// | `behaviour.last_order_time` | timestamp | last purchase |
    /// | `behaviour.response_rate` | number | campaign responses / campaigns received, 0..1 |
    /// | `behaviour.product_path` | product path | `:"X>Y"`: bought X, later Y |
    pub fn analytics() -> Self {
        Self::new()
            .with("rfm.r", FieldKind::Int)
            .with("rfm.f", FieldKind::Int)
            .with("rfm.m", FieldKind::Int)
            .with("rfm.segment", FieldKind::String)
            .with(
                "rfm.status",
                FieldKind::Enum(vec![
                    "SCORED".into(),
                    "NO_ORDERS".into(),
                    "NO_PURCHASES".into(),
                ]),
            )
            .with("value", FieldKind::Number)
            .with("lifecycle.stage", FieldKind::String)
            .with("behaviour.purchase_power", FieldKind::Int)
            .with("behaviour.order_count", FieldKind::Int)
            .with("behaviour.last_order_time", FieldKind::Timestamp)
            .with("behaviour.response_rate", FieldKind::Number)
            .with(PRODUCT_PATH, FieldKind::ProductPath)
    }

    /// Adds a resource's field table (e.g. `Contact::FIELDS`): every field but JSON ones,
    /// whether or not it is filterable in `List` (segments read loaded records, not SQL).
    pub fn with_resource_fields(mut self, fields: &[FieldSpec]) -> Self {
        for f in fields {
            let kind = match f.kind {
                Kind::Text => FieldKind::String,
                Kind::Int => FieldKind::Int,
                Kind::Bool => FieldKind::Bool,
                Kind::Time => FieldKind::Timestamp,
                Kind::Date => FieldKind::Date,
                Kind::Enum(names) => {
                    FieldKind::Enum(names.iter().map(|s| (*s).to_owned()).collect())
                }
                Kind::Ref(c) => FieldKind::Ref(c.to_owned()),
                Kind::Tags => FieldKind::StringList,
                Kind::RefList(c) => FieldKind::RefList(c.to_owned()),
                Kind::Json => continue,
            };
            self.fields.insert(f.name.to_owned(), kind);
        }
        self
    }

    /// Adds the tenant's custom fields of `collection` as `custom.<key>`: TEXT → string,
    /// NUMBER → number, DATE → date, ENUM → enum of its values.
    pub fn with_custom_fields(mut self, defs: &[CustomFieldDefinition], collection: &str) -> Self {
        for d in defs.iter().filter(|d| d.collection == collection) {
            let kind = match d.value_type.as_str() {
                "NUMBER" => FieldKind::Number,
                "DATE" => FieldKind::Date,
                "ENUM" => FieldKind::Enum(d.enum_values.clone()),
                _ => FieldKind::String,
            };
            self.fields.insert(format!("custom.{}", d.key), kind);
        }
        self
    }

    /// The type of a field.
    pub fn kind(&self, name: &str) -> Option<&FieldKind> {
        self.fields.get(name)
    }
}

/// A field value of a customer record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Value {
    /// Text (also enum names).
    String(String),
    /// Integer.
    Int(i64),
    /// Decimal number.
    Number(f64),
    /// Boolean.
    Bool(bool),
    /// Instant.
    Timestamp(DateTime<Utc>),
    /// Calendar date.
    Date(NaiveDate),
    /// List of strings.
    List(Vec<String>),
    /// A referenced resource's id.
    Ref(Uuid),
    /// Referenced resources' ids.
    Refs(Vec<Uuid>),
}

/// One purchase, for product paths.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Purchase {
    /// When.
    pub time: DateTime<Utc>,
    /// Keys of what was bought (product ids, SKUs, group keys).
    pub products: Vec<String>,
}

/// What a segment rule reads about one customer. Absent fields are `NULL`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CustomerRecord {
    /// The customer.
    pub customer: Uuid,
    /// Field values by catalogue name.
    pub values: BTreeMap<String, Value>,
    /// Purchases, for the product path (any order).
    pub purchases: Vec<Purchase>,
}

impl CustomerRecord {
    /// An empty record.
    pub fn new(customer: Uuid) -> Self {
        Self {
            customer,
            ..Default::default()
        }
    }

    /// Sets a field.
    pub fn set(&mut self, name: impl Into<String>, value: Value) -> &mut Self {
        self.values.insert(name.into(), value);
        self
    }

    /// Sets crm-core custom values as `custom.<key>`.
    pub fn set_custom(&mut self, values: &CustomValues) -> &mut Self {
        for (k, v) in values {
            let value = match v {
                CustomValue::Text(s) | CustomValue::Enum(s) => Value::String(s.clone()),
                CustomValue::Number(n) => Value::Number(*n),
                CustomValue::Date(d) => Value::Date(*d),
            };
            self.values.insert(format!("custom.{k}"), value);
        }
        self
    }

    /// Sets `rfm.*` and the behaviour fields an RFM result gives (`purchase_power` only with
    /// a converted monetary).
    pub fn set_rfm(&mut self, rfm: &CustomerRfm) -> &mut Self {
        let status = match rfm.status {
            RfmStatus::Scored => "SCORED",
            RfmStatus::NoOrders => "NO_ORDERS",
            RfmStatus::NoPurchases => "NO_PURCHASES",
        };
        self.set("rfm.status", Value::String(status.into()));
        if let Some(s) = &rfm.scores {
            self.set("rfm.r", Value::Int(i64::from(s.r)));
            self.set("rfm.f", Value::Int(i64::from(s.f)));
            self.set("rfm.m", Value::Int(i64::from(s.m)));
            self.set("rfm.segment", Value::String(s.segment.clone()));
        }
        self.set(
            "behaviour.order_count",
            Value::Int(i64::try_from(rfm.measures.frequency).unwrap_or(i64::MAX)),
        );
        if let Some(t) = rfm.measures.last_purchase {
            self.set("behaviour.last_order_time", Value::Timestamp(t));
        }
        if let Some(m) = rfm.monetary_converted {
            let clamped = m.clamp(i128::from(i64::MIN), i128::from(i64::MAX));
            self.set(
                "behaviour.purchase_power",
                Value::Int(i64::try_from(clamped).unwrap_or_default()),
            );
        }
        self
    }

    /// Sets the fields of a resource serialised as JSON (a `Contact` through
    /// `serde_json::to_value`) that the catalogue knows, converted by their type; its
    /// `custom_fields` object becomes `custom.<key>`. Nulls and unknown keys are skipped.
    pub fn set_json(
        &mut self,
        catalog: &FieldCatalog,
        json: &serde_json::Value,
    ) -> Result<&mut Self> {
        let Some(obj) = json.as_object() else {
            return Err(Error::field(
                "record",
                Problem::Type,
                "expected a JSON object",
            ));
        };
        for (key, v) in obj {
            if key == "custom_fields" {
                if v.is_null() {
                    continue;
                }
                let values: CustomValues = serde_json::from_value(v.clone()).map_err(|_| {
                    Error::field("custom_fields", Problem::Type, "has a malformed value")
                })?;
                self.set_custom(&values);
                continue;
            }
            let Some(kind) = catalog.kind(key) else {
                continue;
            };
            if v.is_null() {
                continue;
            }
            let bad = || {
                Error::field(
                    key.as_str(),
                    Problem::Type,
                    format!("expected a {} value", kind.describe()),
                )
            };
            let value = match kind {
                FieldKind::String | FieldKind::Enum(_) => {
                    Value::String(v.as_str().ok_or_else(bad)?.to_owned())
                }
                FieldKind::Int => Value::Int(v.as_i64().ok_or_else(bad)?),
                FieldKind::Number => Value::Number(v.as_f64().ok_or_else(bad)?),
                FieldKind::Bool => Value::Bool(v.as_bool().ok_or_else(bad)?),
                FieldKind::Timestamp => Value::Timestamp(
                    DateTime::parse_from_rfc3339(v.as_str().ok_or_else(bad)?)
                        .map_err(|_| bad())?
                        .with_timezone(&Utc),
                ),
                FieldKind::Date => Value::Date(
                    NaiveDate::parse_from_str(v.as_str().ok_or_else(bad)?, "%Y-%m-%d")
                        .map_err(|_| bad())?,
                ),
                FieldKind::StringList => Value::List(
                    v.as_array()
                        .ok_or_else(bad)?
                        .iter()
                        .map(|e| e.as_str().map(str::to_owned).ok_or_else(bad))
                        .collect::<Result<_>>()?,
                ),
                FieldKind::Ref(_) => {
                    Value::Ref(Uuid::try_parse(v.as_str().ok_or_else(bad)?).map_err(|_| bad())?)
                }
                FieldKind::RefList(_) => Value::Refs(
                    v.as_array()
                        .ok_or_else(bad)?
                        .iter()
                        .map(|e| {
                            e.as_str()
                                .and_then(|s| Uuid::try_parse(s).ok())
                                .ok_or_else(bad)
                        })
                        .collect::<Result<_>>()?,
                ),
                FieldKind::ProductPath => continue,
            };
            self.values.insert(key.clone(), value);
        }
        Ok(self)
    }
}

/// Campaign response rate: responses over campaigns received, `None` when none were received.
pub fn response_rate(responses: u64, received: u64) -> Option<f64> {
    if received == 0 {
        None
    } else {
        Some((responses as f64 / received as f64).clamp(0.0, 1.0))
    }
}

#[derive(Debug, Clone)]
enum Test {
    Present,
    Str(Op, String),
    Prefix { negate: bool, prefix: String },
    Contains(Regex),
    Int(Op, i64),
    Number(Op, f64),
    Bool(Op, bool),
    Time(Op, DateTime<Utc>),
    Date(Op, NaiveDate),
    ListHas(String),
    Ref(Op, Uuid),
    RefListHas(Uuid),
    Path(Vec<String>),
}

#[derive(Debug, Clone)]
enum Pred {
    All(Vec<Pred>),
    Any(Vec<Pred>),
    Not(Box<Pred>),
    Leaf { field: String, test: Test },
}

/// A type-checked segment rule, ready to evaluate.
#[derive(Debug, Clone)]
pub struct SegmentRule {
    source: String,
    pred: Option<Pred>,
    fields: BTreeSet<String>,
}

fn syntax(position: usize, message: impl Into<String>) -> Error {
    Error::field(
        "rule",
        Problem::Syntax,
        format!("{} at position {position}", message.into()),
    )
}

fn type_err(position: usize, message: impl Into<String>) -> Error {
    Error::field(
        "rule",
        Problem::Type,
        format!("{} at position {position}", message.into()),
    )
}

fn literal_text(c: &Comparison) -> Result<String> {
    match &c.value {
        Literal::String(s) | Literal::Text(s) => Ok(s.clone()),
        Literal::Int(n) => Ok(n.to_string()),
        Literal::Bool(b) => Ok(b.to_string()),
        Literal::Any => Err(syntax(
            c.value_position,
            "the wildcard '*' is only allowed with ':'",
        )),
    }
}

fn expect_ref(c: &Comparison, collection: &str) -> Result<Uuid> {
    let text = literal_text(c)?;
    text.strip_prefix(collection)
        .and_then(|r| r.strip_prefix('/'))
        .and_then(|id| Uuid::try_parse(id).ok())
        .ok_or_else(|| {
            type_err(
                c.value_position,
                format!(
                    "field {:?} takes a resource name like \"{collection}/{{id}}\", found {text:?}",
                    c.field
                ),
            )
        })
}

fn compile_comparison(c: &Comparison, catalog: &FieldCatalog) -> Result<Test> {
    let Some(kind) = catalog.kind(&c.field) else {
        return Err(Error::field(
            "rule",
            Problem::Unknown,
            format!(
                "unknown field {:?} at position {}",
                c.field, c.field_position
            ),
        ));
    };
    if c.value == Literal::Any {
        if c.op != Op::Has {
            return Err(syntax(
                c.value_position,
                "the wildcard '*' is only allowed with ':'",
            ));
        }
        return Ok(Test::Present);
    }
    if !kind.allows(c.op) {
        return Err(type_err(
            c.op_position,
            format!(
                "operator '{}' is not supported for {} field {:?}",
                c.op,
                kind.describe(),
                c.field
            ),
        ));
    }
    let wrong = |what: &str| {
        type_err(
            c.value_position,
            format!("expected {what} for field {:?}, found {}", c.field, c.value),
        )
    };
    Ok(match kind {
        FieldKind::String => {
            let text = literal_text(c)?;
            match (c.op, text.strip_suffix('*')) {
                (Op::Has, _) => {
                    let re = regex::RegexBuilder::new(&regex::escape(&text))
                        .case_insensitive(true)
                        .build()
                        .map_err(|e| {
                            syntax(c.value_position, format!("cannot match {text:?}: {e}"))
                        })?;
                    Test::Contains(re)
                }
                (Op::Eq, Some(prefix)) => Test::Prefix {
                    negate: false,
                    prefix: prefix.to_owned(),
                },
                (Op::Ne, Some(prefix)) => Test::Prefix {
                    negate: true,
                    prefix: prefix.to_owned(),
                },
                (op, _) => Test::Str(op, text),
            }
        }
        FieldKind::Int => match &c.value {
            Literal::Int(n) => Test::Int(c.op, *n),
            Literal::Text(s) => Test::Int(c.op, s.parse().map_err(|_| wrong("an integer"))?),
            _ => return Err(wrong("an integer")),
        },
        FieldKind::Number => {
            let v = match &c.value {
                Literal::Int(n) => *n as f64,
                Literal::Text(s) | Literal::String(s) => {
                    s.parse::<f64>().map_err(|_| wrong("a number"))?
                }
                _ => return Err(wrong("a number")),
            };
            if !v.is_finite() {
                return Err(wrong("a finite number"));
            }
            Test::Number(c.op, v)
        }
        FieldKind::Bool => match &c.value {
            Literal::Bool(b) => Test::Bool(c.op, *b),
            _ => return Err(wrong("true or false")),
        },
        FieldKind::Timestamp => {
            let text = literal_text(c)?;
            let t = DateTime::parse_from_rfc3339(&text)
                .map_err(|_| wrong("an RFC 3339 timestamp, e.g. \"2024-01-02T03:04:05Z\","))?;
            Test::Time(c.op, t.with_timezone(&Utc))
        }
        FieldKind::Date => {
            let text = literal_text(c)?;
            let shape_ok = text.len() == 10
                && text.chars().enumerate().all(|(i, ch)| {
                    if i == 4 || i == 7 {
                        ch == '-'
                    } else {
                        ch.is_ascii_digit()
                    }
                });
            match NaiveDate::parse_from_str(&text, "%Y-%m-%d") {
                Ok(d) if shape_ok => Test::Date(c.op, d),
                _ => return Err(wrong("a date YYYY-MM-DD")),
            }
        }
        FieldKind::Enum(allowed) => {
            let text = literal_text(c)?;
            if !allowed.contains(&text) {
                return Err(type_err(
                    c.value_position,
                    format!(
                        "invalid value {text:?} for field {:?}; allowed values: {}",
                        c.field,
                        allowed.join(", ")
                    ),
                ));
            }
            Test::Str(c.op, text)
        }
        FieldKind::StringList => {
            let text = literal_text(c)?;
            if text.is_empty() || text.contains('|') {
                return Err(type_err(
                    c.value_position,
                    "list values must be non-empty and must not contain '|'",
                ));
            }
            Test::ListHas(text.to_lowercase())
        }
        FieldKind::Ref(collection) => Test::Ref(c.op, expect_ref(c, collection)?),
        FieldKind::RefList(collection) => Test::RefListHas(expect_ref(c, collection)?),
        FieldKind::ProductPath => {
            let text = literal_text(c)?;
            let steps: Vec<String> = text.split('>').map(|s| s.trim().to_owned()).collect();
            if steps.iter().any(String::is_empty) || steps.len() > MAX_PATH_STEPS {
                return Err(type_err(
                    c.value_position,
                    format!(
                        "a product path is 1 to {MAX_PATH_STEPS} product keys separated by '>', found {text:?}"
                    ),
                ));
            }
            Test::Path(steps)
        }
    })
}

fn compile_expr(e: &Expr, catalog: &FieldCatalog, fields: &mut BTreeSet<String>) -> Result<Pred> {
    Ok(match e {
        Expr::And(items) => Pred::All(
            items
                .iter()
                .map(|i| compile_expr(i, catalog, fields))
                .collect::<Result<_>>()?,
        ),
        Expr::Or(items) => Pred::Any(
            items
                .iter()
                .map(|i| compile_expr(i, catalog, fields))
                .collect::<Result<_>>()?,
        ),
        Expr::Not(inner) => Pred::Not(Box::new(compile_expr(inner, catalog, fields)?)),
        Expr::Compare(c) => {
            let test = compile_comparison(c, catalog)?;
            fields.insert(c.field.clone());
            Pred::Leaf {
                field: c.field.clone(),
                test,
            }
        }
    })
}

fn cmp<T: PartialOrd>(op: Op, a: &T, b: &T) -> bool {
    match op {
        Op::Eq => a == b,
        Op::Ne => a != b,
        Op::Lt => a < b,
        Op::Le => a <= b,
        Op::Gt => a > b,
        Op::Ge => a >= b,
        Op::Has => false,
    }
}

fn path_matches(purchases: &[Purchase], steps: &[String]) -> bool {
    let mut sorted: Vec<&Purchase> = purchases.iter().collect();
    sorted.sort_by_key(|p| p.time);
    let mut after: Option<DateTime<Utc>> = None;
    for step in steps {
        // The earliest purchase of `step` strictly after the previous step's purchase.
        let found = sorted
            .iter()
            .find(|p| after.is_none_or(|t| p.time > t) && p.products.iter().any(|k| k == step));
        match found {
            Some(p) => after = Some(p.time),
            None => return false,
        }
    }
    true
}

fn mismatch(field: &str, kind: &str) -> Error {
    Error::field(
        field,
        Problem::Type,
        format!("the record holds a value that is not a {kind}"),
    )
}

impl Pred {
    /// Three-valued: `None` is SQL's unknown.
    fn eval(&self, r: &CustomerRecord) -> Result<Option<bool>> {
        match self {
            Pred::All(items) => {
                let mut unknown = false;
                for i in items {
                    match i.eval(r)? {
                        Some(false) => return Ok(Some(false)),
                        None => unknown = true,
                        Some(true) => {}
                    }
                }
                Ok(if unknown { None } else { Some(true) })
            }
            Pred::Any(items) => {
                let mut unknown = false;
                for i in items {
                    match i.eval(r)? {
                        Some(true) => return Ok(Some(true)),
                        None => unknown = true,
                        Some(false) => {}
                    }
                }
                Ok(if unknown { None } else { Some(false) })
            }
            Pred::Not(inner) => Ok(inner.eval(r)?.map(|b| !b)),
            Pred::Leaf { field, test } => {
                if let Test::Path(steps) = test {
                    return Ok(Some(path_matches(&r.purchases, steps)));
                }
                if let Test::Present = test {
                    return Ok(Some(match r.values.get(field) {
                        None => false,
                        Some(Value::List(l)) => !l.is_empty(),
                        Some(Value::Refs(l)) => !l.is_empty(),
                        Some(_) => true,
                    }));
                }
                let Some(v) = r.values.get(field) else {
                    return Ok(None);
                };
                let out = match (test, v) {
                    (Test::Str(op, lit), Value::String(s)) => cmp(*op, s, lit),
                    (Test::Prefix { negate, prefix }, Value::String(s)) => {
                        s.starts_with(prefix.as_str()) != *negate
                    }
                    (Test::Contains(re), Value::String(s)) => re.is_match(s),
                    (Test::Str(..) | Test::Prefix { .. } | Test::Contains(_), _) => {
                        return Err(mismatch(field, "string"));
                    }
                    (Test::Int(op, lit), Value::Int(n)) => cmp(*op, n, lit),
                    (Test::Int(..), _) => return Err(mismatch(field, "integer")),
                    (Test::Number(op, lit), Value::Number(n)) => cmp(*op, n, lit),
                    (Test::Number(op, lit), Value::Int(n)) => cmp(*op, &(*n as f64), lit),
                    (Test::Number(..), _) => return Err(mismatch(field, "number")),
                    (Test::Bool(op, lit), Value::Bool(b)) => cmp(*op, b, lit),
                    (Test::Bool(..), _) => return Err(mismatch(field, "boolean")),
                    (Test::Time(op, lit), Value::Timestamp(t)) => cmp(*op, t, lit),
                    (Test::Time(..), _) => return Err(mismatch(field, "timestamp")),
                    (Test::Date(op, lit), Value::Date(d)) => cmp(*op, d, lit),
                    (Test::Date(..), _) => return Err(mismatch(field, "date")),
                    (Test::ListHas(lit), Value::List(items)) => {
                        items.iter().any(|i| i.to_lowercase() == *lit)
                    }
                    (Test::ListHas(_), _) => return Err(mismatch(field, "list")),
                    (Test::Ref(op, lit), Value::Ref(id)) => cmp(*op, id, lit),
                    (Test::Ref(..), _) => return Err(mismatch(field, "reference")),
                    (Test::RefListHas(lit), Value::Refs(ids)) => ids.contains(lit),
                    (Test::RefListHas(_), _) => return Err(mismatch(field, "reference list")),
                    (Test::Present | Test::Path(_), _) => false,
                };
                Ok(Some(out))
            }
        }
    }
}

impl SegmentRule {
    /// Parses `rule` with crm-core's AIP-160 parser and type-checks it against `catalog`.
    /// An empty rule matches every customer. Errors name the field `rule` and say what and
    /// where (unknown field, syntax, type).
    pub fn compile(rule: &str, catalog: &FieldCatalog) -> Result<Self> {
        let expr = filter::parse(rule).map_err(|e| syntax(e.position, e.message))?;
        let mut fields = BTreeSet::new();
        let pred = match &expr {
            Some(e) => Some(compile_expr(e, catalog, &mut fields)?),
            None => None,
        };
        Ok(Self {
            source: rule.to_owned(),
            pred,
            fields,
        })
    }

    /// The rule's text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The fields the rule reads.
    pub fn fields(&self) -> &BTreeSet<String> {
        &self.fields
    }

    /// Whether a change of any of `changed` (field names; `custom.x`; [`PRODUCT_PATH`] for
    /// new purchases) can change the rule's outcome.
    pub fn depends_on<S: AsRef<str>>(&self, changed: &[S]) -> bool {
        changed.iter().any(|c| self.fields.contains(c.as_ref()))
    }

    /// Whether the customer is a member. Unknown (a `NULL` comparison deciding the
    /// outcome) is not a member. A record value of the wrong type is an error naming the field.
    pub fn matches(&self, record: &CustomerRecord) -> Result<bool> {
        match &self.pred {
            None => Ok(true),
            Some(p) => Ok(p.eval(record)? == Some(true)),
        }
    }
}

/// A tenant's segment, stored as JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SegmentDefinition {
    /// Stable key.
    pub key: String,
    /// Display name.
    pub name: String,
    /// The AIP-160 rule.
    pub rule: String,
    /// Tags written to members (lower-case).
    pub tags: Vec<String>,
}

impl SegmentDefinition {
    /// Checks the definition and compiles its rule; errors name `key`, `rule`, `tags[i]`.
    pub fn compile(&self, catalog: &FieldCatalog) -> Result<SegmentRule> {
        let mut c = Collector::default();
        if self.key.trim().is_empty() {
            c.add("key", Problem::Required, "is required");
        }
        for (i, t) in self.tags.iter().enumerate() {
            if t.trim().is_empty() || t.contains('|') || t.chars().count() > 100 {
                c.add(
                    format!("tags[{i}]"),
                    Problem::OutOfRange,
                    "a tag is 1-100 characters without '|'",
                );
            }
        }
        let rule = SegmentRule::compile(&self.rule, catalog);
        if let Err(e) = &rule {
            c.extend(e.clone());
        }
        c.finish()?;
        rule
    }
}

/// How a customer's membership changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MembershipChange {
    /// Was not a member, is now.
    Entered,
    /// Was a member, is no longer.
    Left,
    /// Was and is a member.
    Stayed,
    /// Was not and is not a member.
    StayedOut,
}

impl MembershipChange {
    /// Whether the customer is a member after the change.
    pub fn is_member(self) -> bool {
        matches!(self, MembershipChange::Entered | MembershipChange::Stayed)
    }
}

/// Decides a changed customer's membership from its new record.
pub fn membership_change(
    rule: &SegmentRule,
    was_member: bool,
    record: &CustomerRecord,
) -> Result<MembershipChange> {
    Ok(match (was_member, rule.matches(record)?) {
        (false, true) => MembershipChange::Entered,
        (true, false) => MembershipChange::Left,
        (true, true) => MembershipChange::Stayed,
        (false, false) => MembershipChange::StayedOut,
    })
}

/// Tags to add to and remove from one customer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagDelta {
    /// Tags the customer lacks and a segment it is in carries.
    pub add: BTreeSet<String>,
    /// Tags the customer has that only segments it is not in carry.
    pub remove: BTreeSet<String>,
}

/// Tags from memberships: `segments` are every segment with tags and whether the customer is
/// a member of each now. Tags that no segment carries (set by hand) are never removed; a tag
/// carried by a segment the customer left stays when another segment it is in carries it too.
/// Comparison is case-insensitive (crm-core stores tags lower-case).
pub fn tag_delta(current: &[String], segments: &[(&SegmentDefinition, bool)]) -> TagDelta {
    let norm = |t: &String| t.trim().to_lowercase();
    let have: BTreeSet<String> = current.iter().map(norm).collect();
    let wanted: BTreeSet<String> = segments
        .iter()
        .filter(|(_, member)| *member)
        .flat_map(|(s, _)| s.tags.iter().map(norm))
        .collect();
    let managed: BTreeSet<String> = segments
        .iter()
        .flat_map(|(s, _)| s.tags.iter().map(norm))
        .collect();
    TagDelta {
        add: wanted.difference(&have).cloned().collect(),
        remove: have
            .iter()
            .filter(|t| managed.contains(*t) && !wanted.contains(*t))
            .cloned()
            .collect(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use crm_core::model::Contact;
    use crm_core::resource::Resource;
    use proptest::prelude::*;

    fn catalog() -> FieldCatalog {
        let defs = vec![
            CustomFieldDefinition {
                collection: "contacts".into(),
                key: "tier".into(),
                value_type: "ENUM".into(),
                enum_values: vec!["gold".into(), "silver".into()],
                ..Default::default()
            },
            CustomFieldDefinition {
                collection: "contacts".into(),
                key: "score".into(),
                value_type: "NUMBER".into(),
                ..Default::default()
            },
            CustomFieldDefinition {
                collection: "accounts".into(),
                key: "other".into(),
                value_type: "TEXT".into(),
                ..Default::default()
            },
        ];
        FieldCatalog::analytics()
            .with_resource_fields(Contact::FIELDS)
            .with_custom_fields(&defs, "contacts")
    }

    fn t(d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 3, d, 10, 0, 0).unwrap()
    }

    fn record() -> CustomerRecord {
        let mut r = CustomerRecord::new(Uuid::from_u128(7));
        r.set("region", Value::String("EU-West".into()))
            .set("display_name", Value::String("Ωmega Straße".into()))
            .set("tags", Value::List(vec!["vip".into(), "outdoor".into()]))
            .set("rfm.r", Value::Int(5))
            .set("rfm.f", Value::Int(4))
            .set("rfm.segment", Value::String("champions".into()))
            .set("value", Value::Number(72.5))
            .set("lifecycle.stage", Value::String("retain".into()))
            .set("behaviour.response_rate", Value::Number(0.25))
            .set("custom.tier", Value::String("gold".into()))
            .set(
                "birth_date",
                Value::Date(NaiveDate::from_ymd_opt(1990, 5, 17).unwrap()),
            );
        r.purchases = vec![
            Purchase {
                time: t(3),
                products: vec!["stove".into()],
            },
            Purchase {
                time: t(1),
                products: vec!["tent".into(), "group:camping".into()],
            },
            Purchase {
                time: t(5),
                products: vec!["tent".into()],
            },
        ];
        r
    }

    fn eval(rule: &str) -> bool {
        SegmentRule::compile(rule, &catalog())
            .unwrap_or_else(|e| panic!("{rule}: {e}"))
            .matches(&record())
            .unwrap()
    }

    #[test]
    fn hand_checked_rules() {
        assert!(eval("rfm.segment = champions AND region = \"EU-West\""));
        assert!(eval("rfm.r >= 4 AND (value > 80 OR custom.tier = gold)"));
        assert!(!eval("rfm.r >= 4 AND value > 80"));
        assert!(eval("behaviour.response_rate >= 0.2"));
        assert!(eval("value = 72.5"));
        assert!(eval("NOT lifecycle.stage = decline"));
        assert!(eval("-lifecycle.stage = decline"));
        assert!(eval("tags:VIP"));
        assert!(!eval("tags:new"));
        assert!(eval("region = \"EU*\""));
        assert!(!eval("region = \"eu*\""));
        assert!(eval("region != \"US*\""));
        // `:` on text: case-insensitive contains with Unicode folding (ω/Ω, ß stays ß).
        assert!(eval("display_name:\"ωMEGA\""));
        assert!(eval("display_name:straße"));
        assert!(eval("birth_date < \"2000-01-01\""));
        assert!(eval("custom.tier:*"));
        assert!(!eval("custom.score:*"));
        assert!(eval("rfm.r = 5 rfm.f = 4")); // implicit AND
        assert!(eval("rfm.r = 1 OR rfm.f = 4"));
    }

    #[test]
    fn product_paths() {
        // tent (1st) then stove (3rd): yes; stove (3rd) then tent (5th): yes;
        // stove then stove: no (one stove purchase); tent > stove > tent: yes.
        assert!(eval("behaviour.product_path:\"tent>stove\""));
        assert!(eval("behaviour.product_path:\"stove > tent\""));
        assert!(!eval("behaviour.product_path:\"stove>stove\""));
        assert!(eval("behaviour.product_path:\"tent>stove>tent\""));
        assert!(!eval("behaviour.product_path:\"tent>stove>tent>stove\""));
        assert!(eval("behaviour.product_path:\"group:camping>stove\""));
        assert!(eval("behaviour.product_path:tent"));
        // Same-time purchases are not "then".
        let mut r = record();
        r.purchases = vec![Purchase {
            time: t(1),
            products: vec!["a".into(), "b".into()],
        }];
        let rule = SegmentRule::compile("behaviour.product_path:\"a>b\"", &catalog()).unwrap();
        assert!(!rule.matches(&r).unwrap());
    }

    #[test]
    fn null_is_unknown_as_in_sql() {
        // custom.score has no value: both the comparison and its negation are unknown.
        assert!(!eval("custom.score > 1"));
        assert!(!eval("NOT custom.score > 1"));
        // unknown OR true = true; unknown AND true = unknown.
        assert!(eval("custom.score > 1 OR rfm.r = 5"));
        assert!(!eval("custom.score > 1 AND rfm.r = 5"));
        // unknown AND false = false, so NOT of it is true.
        assert!(eval("NOT (custom.score > 1 AND rfm.r = 1)"));
        // An empty rule matches everyone.
        assert!(eval(""));
    }

    #[test]
    fn bad_rules_are_named() {
        let err = |rule: &str| SegmentRule::compile(rule, &catalog()).unwrap_err();
        let e = err("custom.nope = 1");
        assert!(e.has("rule", Problem::Unknown));
        assert!(e.violations[0].message.contains("\"custom.nope\""), "{e}");
        assert!(e.violations[0].message.contains("position 0"), "{e}");
        let e = err("rfm.r >= 4 AND custom.other = x"); // an accounts field, not contacts
        assert!(e.has("rule", Problem::Unknown));
        assert!(e.violations[0].message.contains("position 15"), "{e}");
        assert!(err("rfm.r >= ").has("rule", Problem::Syntax));
        assert!(err("rfm.r >= high").has("rule", Problem::Type));
        assert!(err("custom.tier = bronze").has("rule", Problem::Type));
        assert!(err("tags > a").has("rule", Problem::Type));
        assert!(err("value:1").has("rule", Problem::Type));
        assert!(err("behaviour.product_path = a").has("rule", Problem::Type));
        assert!(err("behaviour.product_path:\"a>>b\"").has("rule", Problem::Type));
        assert!(err("birth_date = \"1990-5-17\"").has("rule", Problem::Type));
        assert!(err("owner = \"teams/x\"").has("rule", Problem::Type));
        // And the error becomes INVALID_ARGUMENT naming the request field.
        let core: crm_core::Error = err("zzz = 1").in_field("segment").into();
        assert_eq!(core.kind, crm_core::ErrorKind::InvalidArgument);
        assert_eq!(core.violations[0].field, "segment.rule");
    }

    #[test]
    fn wrong_record_type_is_named() {
        let rule = SegmentRule::compile("rfm.r >= 4", &catalog()).unwrap();
        let mut r = record();
        r.set("rfm.r", Value::String("5".into()));
        assert!(rule.matches(&r).unwrap_err().has("rfm.r", Problem::Type));
    }

    #[test]
    fn incremental_membership_and_tags() {
        let def = SegmentDefinition {
            key: "big_spenders".into(),
            name: "Big spenders".into(),
            rule: "behaviour.purchase_power >= 100000".into(),
            tags: vec!["Big-Spender".into()],
        };
        let rule = def.compile(&catalog()).unwrap();
        assert!(rule.depends_on(&["behaviour.purchase_power"]));
        assert!(!rule.depends_on(&["region", "tags"]));
        let mut r = record();
        r.set("behaviour.purchase_power", Value::Int(99_999));
        assert_eq!(
            membership_change(&rule, false, &r).unwrap(),
            MembershipChange::StayedOut
        );
        r.set("behaviour.purchase_power", Value::Int(100_000));
        let c = membership_change(&rule, false, &r).unwrap();
        assert_eq!(c, MembershipChange::Entered);
        assert!(c.is_member());
        assert_eq!(
            membership_change(&rule, true, &r).unwrap(),
            MembershipChange::Stayed
        );
        r.values.remove("behaviour.purchase_power");
        assert_eq!(
            membership_change(&rule, true, &r).unwrap(),
            MembershipChange::Left
        );

        let other = SegmentDefinition {
            key: "vip".into(),
            tags: vec!["vip".into(), "big-spender".into()],
            ..Default::default()
        };
        let current = vec!["manual".into(), "big-spender".into()];
        // Left big_spenders but still in vip: big-spender stays, vip is added.
        let d = tag_delta(&current, &[(&def, false), (&other, true)]);
        assert_eq!(d.add, BTreeSet::from(["vip".to_owned()]));
        assert!(d.remove.is_empty());
        // Left both: big-spender removed, manual untouched.
        let d = tag_delta(&current, &[(&def, false), (&other, false)]);
        assert_eq!(d.remove, BTreeSet::from(["big-spender".to_owned()]));
        assert!(d.add.is_empty());

        let bad = SegmentDefinition {
            key: "".into(),
            rule: "nope = 1".into(),
            tags: vec!["a|b".into()],
            ..Default::default()
        };
        let e = bad.compile(&catalog()).unwrap_err();
        assert!(e.has("key", Problem::Required));
        assert!(e.has("tags[0]", Problem::OutOfRange));
        assert!(e.has("rule", Problem::Unknown));
    }

    #[test]
    fn records_from_resources_and_rfm() {
        let contact = Contact {
            display_name: "Ada".into(),
            region: "EU".into(),
            tags: vec!["vip".into()],
            custom_fields: CustomValues::from([("tier".into(), CustomValue::Enum("gold".into()))]),
            ..Default::default()
        };
        let cat = catalog();
        let mut r = CustomerRecord::new(Uuid::from_u128(1));
        r.set_json(&cat, &serde_json::to_value(&contact).unwrap())
            .unwrap();
        let rule =
            SegmentRule::compile("region = EU AND tags:vip AND custom.tier = gold", &cat).unwrap();
        assert!(rule.matches(&r).unwrap());

        let (pop, facts) = (
            vec![Uuid::from_u128(1)],
            vec![crate::rfm::OrderFact {
                customer: Uuid::from_u128(1),
                order: Uuid::from_u128(9),
                time: t(1),
                currency: "EUR".into(),
                amount: 500,
            }],
        );
        let period = crate::rfm::Period {
            from: t(1),
            as_of: t(10),
        };
        let run =
            crate::rfm::run(&pop, &facts, &period, &crate::rfm::RfmConfig::default()).unwrap();
        r.set_rfm(&run.customers[0]);
        // One customer: middle scores 3,3,3 -> need_attention.
        let rule = SegmentRule::compile(
            "rfm.status = SCORED AND rfm.segment = need_attention AND behaviour.order_count = 1",
            &cat,
        )
        .unwrap();
        assert!(rule.matches(&r).unwrap());
        assert_eq!(response_rate(1, 4), Some(0.25));
        assert_eq!(response_rate(0, 0), None);
    }

    proptest! {
        #[test]
        fn int_comparisons_agree_with_rust(v in -50i64..50, lit in -50i64..50) {
            let mut r = CustomerRecord::new(Uuid::nil());
            r.set("rfm.r", Value::Int(v));
            for (op, want) in [("=", v == lit), ("!=", v != lit), ("<", v < lit), ("<=", v <= lit), (">", v > lit), (">=", v >= lit)] {
                let rule = SegmentRule::compile(&format!("rfm.r {op} {lit}"), &catalog()).unwrap();
                prop_assert_eq!(rule.matches(&r).unwrap(), want);
                let neg = SegmentRule::compile(&format!("NOT rfm.r {op} {lit}"), &catalog()).unwrap();
                prop_assert_eq!(neg.matches(&r).unwrap(), !want);
            }
        }
    }
}
