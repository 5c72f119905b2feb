//! Rows decoded straight into resource structs: a serde [`Deserializer`] over one row of a
//! resource's `SELECT` ([`crate::store::select`]), driven by its field table, so the read
//! path builds no JSON object per row. Every resource gets it from its `FieldSpec`s.
//!
//! Each field is presented to the struct's `Deserialize` exactly as its JSON form would be
//! (see [`crate::codec::from_db`]): text as a string, times as RFC 3339 with microseconds,
//! dates as `YYYY-MM-DD`, references as hyphenated UUIDs, `|a|b|` lists as sequences, JSON
//! columns parsed in place from the row's own buffer. Fields withheld from the caller are not
//! presented at all, so they keep their serde default (every resource struct is
//! `#[serde(default)]`), as a missing key of the JSON object did.

use crate::error::{Error, Result};
use crate::resource::{FieldSpec, Kind, Meta, Resource};
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use sea_orm::sqlx::postgres::PgRow;
use sea_orm::sqlx::sqlite::SqliteRow;
use sea_orm::sqlx::{self, Column, ColumnIndex, Decode, Postgres, Row, Sqlite, Type, ValueRef};
use sea_orm::{DbErr, QueryResult, RuntimeErr};
use serde::de::value::BorrowedStrDeserializer;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::fmt;
use std::sync::Arc;
use uuid::Uuid;

/// The driver's row behind a [`QueryResult`].
#[derive(Clone, Copy)]
enum Raw<'r> {
    /// With whether the columns' types were checked once for the whole query (PostgreSQL
    /// describes the columns once per statement, so every row has the same types).
    Pg(&'r PgRow, bool),
    Lite(&'r SqliteRow),
}

impl<'r> Raw<'r> {
    fn of(row: &'r QueryResult) -> Option<Self> {
        if let Some(r) = row.try_as_pg_row() {
            return Some(Raw::Pg(r, false));
        }
        row.try_as_sqlite_row().map(Raw::Lite)
    }

    /// The value of column `i`, with the driver's own type checks (as `QueryResult::try_get`),
    /// made once per query on PostgreSQL ([`Layout::of`]) and per value on SQLite (whose
    /// values each have their own type).
    fn get<T>(self, i: usize) -> Result<T, DeError>
    where
        T: Decode<'r, Postgres> + Type<Postgres> + Decode<'r, Sqlite> + Type<Sqlite>,
    {
        match self {
            Raw::Pg(r, true) => r.try_get_unchecked::<T, usize>(i),
            Raw::Pg(r, false) => r.try_get::<T, usize>(i),
            Raw::Lite(r) => r.try_get::<T, usize>(i),
        }
        .map_err(DeError::sqlx)
    }

    fn is_null(self, i: usize) -> Result<bool, DeError> {
        match self {
            Raw::Pg(r, _) => r.try_get_raw(i).map(|v| v.is_null()),
            Raw::Lite(r) => r.try_get_raw(i).map(|v| v.is_null()),
        }
        .map_err(DeError::sqlx)
    }

    /// The position of `column`: `expected` when the column is there (as [`select`] puts
    /// it), else looked up by name.
    ///
    /// [`select`]: crate::store::select
    fn index(self, column: &str, expected: usize) -> Result<usize, DeError> {
        fn at<C: Column>(columns: &[C], column: &str, expected: usize) -> Option<usize> {
            columns
                .get(expected)
                .filter(|c| c.name() == column)
                .map(|_| expected)
        }
        match self {
            Raw::Pg(r, _) => at(r.columns(), column, expected).map_or_else(|| column.index(r), Ok),
            Raw::Lite(r) => at(r.columns(), column, expected).map_or_else(|| column.index(r), Ok),
        }
        .map_err(DeError::sqlx)
    }

    /// Whether column `i` holds what `T` decodes (PostgreSQL; per value elsewhere).
    fn compatible<T: Type<Postgres>>(self, i: usize) -> bool {
        match self {
            Raw::Pg(r, _) => r
                .columns()
                .get(i)
                .is_some_and(|c| T::compatible(c.type_info())),
            Raw::Lite(_) => false,
        }
    }
}

/// Where a resource's columns are in the rows of one query, and whether their types were
/// checked, found once per query.
pub(crate) struct Layout {
    meta: [usize; 4],
    fields: Vec<usize>,
    /// Every column's type was checked against what its field decodes (PostgreSQL).
    checked: bool,
}

impl Layout {
    /// The layout of `row` (any row of the query) for resource `R`; `None` when the rows do
    /// not come from a driver this module reads (the caller then decodes through JSON).
    pub(crate) fn of<R: Resource>(row: &QueryResult) -> Result<Option<Layout>> {
        let Some(raw) = Raw::of(row) else {
            return Ok(None);
        };
        let collection = R::COLLECTION;
        let at =
            |c: &str, expected: usize| raw.index(c, expected).map_err(|e| e.into_error(collection));
        let meta = [
            at("id", 0)?,
            at("revision", 1)?,
            at("create_time", 2)?,
            at("update_time", 3)?,
        ];
        let fields: Vec<usize> = R::FIELDS
            .iter()
            .enumerate()
            .map(|(i, f)| at(f.column, meta.len() + i))
            .collect::<Result<_>>()?;
        let [id, revision, create_time, update_time] = meta;
        let checked = raw.compatible::<Uuid>(id)
            && raw.compatible::<i64>(revision)
            && raw.compatible::<DateTime<Utc>>(create_time)
            && raw.compatible::<DateTime<Utc>>(update_time)
            && R::FIELDS.iter().zip(&fields).all(|(f, i)| match f.kind {
                Kind::Int => raw.compatible::<i64>(*i),
                Kind::Bool => raw.compatible::<bool>(*i),
                Kind::Time => raw.compatible::<DateTime<Utc>>(*i),
                Kind::Date => raw.compatible::<NaiveDate>(*i),
                Kind::Ref(_) => raw.compatible::<Uuid>(*i),
                Kind::Text | Kind::Enum(_) | Kind::Tags | Kind::RefList(_) | Kind::Json => {
                    raw.compatible::<&str>(*i)
                }
            });
        Ok(Some(Layout {
            meta,
            fields,
            checked,
        }))
    }
}

/// Decodes one row of `R`'s select into its meta and its data. Fields whose `skip` entry is
/// true (by index into `R::FIELDS`) are not read: they keep their default.
pub(crate) fn decode<R: Resource>(
    row: &QueryResult,
    layout: &Layout,
    skip: &[bool],
) -> Result<(Meta, R)> {
    let raw = match Raw::of(row) {
        Some(Raw::Pg(r, _)) => Raw::Pg(r, layout.checked),
        Some(raw) => raw,
        None => {
            return Err(Error::internal(format!(
                "a row of {} of no known driver",
                R::COLLECTION
            )));
        }
    };
    let meta = meta(raw, layout).map_err(|e| e.into_error(R::COLLECTION))?;
    let de = RowDe {
        raw,
        fields: R::FIELDS,
        columns: &layout.fields,
        skip,
    };
    let data = R::deserialize(de).map_err(|e| e.into_error(R::COLLECTION))?;
    Ok((meta, data))
}

fn meta(raw: Raw<'_>, layout: &Layout) -> Result<Meta, DeError> {
    let [id, revision, create_time, update_time] = layout.meta;
    Ok(Meta {
        id: raw.get::<Uuid>(id)?,
        revision: raw.get::<i64>(revision)?,
        create_time: raw.get::<DateTime<Utc>>(create_time)?,
        update_time: raw.get::<DateTime<Utc>>(update_time)?,
    })
}

/// A decoding failure: the driver's (kept as the database error it is) or a shape mismatch.
#[derive(Debug)]
pub(crate) enum DeError {
    Db(Box<DbErr>),
    Shape(String),
}

impl DeError {
    fn sqlx(e: sqlx::Error) -> Self {
        DeError::Db(Box::new(DbErr::Query(RuntimeErr::SqlxError(Arc::new(e)))))
    }

    fn into_error(self, collection: &str) -> Error {
        match self {
            DeError::Db(e) => Error::from(*e),
            DeError::Shape(m) => {
                Error::internal(format!("stored {collection} cannot be decoded: {m}"))
            }
        }
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeError::Db(e) => write!(f, "{e}"),
            DeError::Shape(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError::Shape(msg.to_string())
    }
}

/// The row as a map from field names to values.
struct RowDe<'a, 'r> {
    raw: Raw<'r>,
    fields: &'static [FieldSpec],
    columns: &'a [usize],
    skip: &'a [bool],
}

impl<'r> Deserializer<'r> for RowDe<'_, 'r> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'r>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_map(Fields {
            row: self,
            next: 0,
            current: None,
        })
    }

    serde::forward_to_deserialize_any! {
        <W: Visitor<'r>>
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct enum
        identifier ignored_any
    }
}

struct Fields<'a, 'r> {
    row: RowDe<'a, 'r>,
    next: usize,
    current: Option<(&'static FieldSpec, usize)>,
}

impl<'r> MapAccess<'r> for Fields<'_, 'r> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'r>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        while let Some(f) = self.row.fields.get(self.next) {
            let i = self.next;
            self.next += 1;
            if self.row.skip.get(i).copied().unwrap_or(false) {
                continue;
            }
            let column = self
                .row
                .columns
                .get(i)
                .copied()
                .ok_or_else(|| DeError::Shape(format!("no column for field {}", f.name)))?;
            self.current = Some((f, column));
            return seed
                .deserialize(BorrowedStrDeserializer::<DeError>::new(f.name))
                .map(Some);
        }
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'r>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let (field, column) = self
            .current
            .take()
            .ok_or_else(|| DeError::Shape("a value was asked before its key".into()))?;
        seed.deserialize(Cell {
            raw: self.row.raw,
            column,
            field,
        })
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.row.fields.len().saturating_sub(self.next))
    }
}

/// One field's value.
struct Cell<'r> {
    raw: Raw<'r>,
    column: usize,
    field: &'static FieldSpec,
}

impl<'r> Cell<'r> {
    fn text(&self) -> Result<&'r str, DeError> {
        self.raw.get::<&'r str>(self.column)
    }

    /// The column's text when the field is stored as JSON.
    fn json_text(&self) -> Result<Option<&'r str>, DeError> {
        match self.field.kind {
            Kind::Json => self.text().map(Some),
            _ => Ok(None),
        }
    }

    /// Whether the value is JSON `null` (only nullable kinds can be).
    fn is_null(&self) -> Result<bool, DeError> {
        match self.field.kind {
            Kind::Time | Kind::Date | Kind::Ref(_) => self.raw.is_null(self.column),
            _ => Ok(false),
        }
    }
}

/// Runs `f` on a JSON deserializer over `text` (the whole text must be one value).
fn json<'r, T>(
    field: &FieldSpec,
    text: &'r str,
    f: impl FnOnce(&mut serde_json::Deserializer<serde_json::de::StrRead<'r>>) -> serde_json::Result<T>,
) -> Result<T, DeError> {
    let mut de = serde_json::Deserializer::from_str(text);
    f(&mut de)
        .and_then(|v| de.end().map(|()| v))
        .map_err(|e| DeError::Shape(format!("field {}: {e}", field.name)))
}

/// `YYYY-MM-DD` as chrono's `%Y-%m-%d` writes it.
fn visit_date<'r, V: Visitor<'r>>(d: NaiveDate, visitor: V) -> Result<V::Value, DeError> {
    let (y, m, day) = (d.year(), d.month(), d.day());
    match u32::try_from(y) {
        Ok(y) if y <= 9999 => {
            let mut b = *b"0000-00-00";
            for (slot, digit) in b[..4].iter_mut().rev().zip([y, y / 10, y / 100, y / 1000]) {
                *slot = b'0' + (digit % 10) as u8;
            }
            b[5] = b'0' + (m / 10) as u8;
            b[6] = b'0' + (m % 10) as u8;
            b[8] = b'0' + (day / 10) as u8;
            b[9] = b'0' + (day % 10) as u8;
            match std::str::from_utf8(&b) {
                Ok(s) => visitor.visit_str(s),
                Err(_) => visitor.visit_string(d.format("%Y-%m-%d").to_string()),
            }
        }
        _ => visitor.visit_string(d.format("%Y-%m-%d").to_string()),
    }
}

/// Elements of a `|a|b|` list.
struct List<'r> {
    parts: std::str::Split<'r, char>,
}

impl<'r> SeqAccess<'r> for List<'r> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'r>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        for part in self.parts.by_ref() {
            if !part.is_empty() {
                return seed
                    .deserialize(BorrowedStrDeserializer::<DeError>::new(part))
                    .map(Some);
            }
        }
        Ok(None)
    }
}

/// Deserializer methods that a JSON field forwards to serde_json and every other kind
/// answers like `deserialize_any`.
macro_rules! by_kind {
    ($($method:ident $(($($arg:ident: $ty:ty),*))?;)*) => {
        $(
            fn $method<V: Visitor<'r>>(
                self,
                $($($arg: $ty,)*)?
                visitor: V,
            ) -> Result<V::Value, DeError> {
                match self.json_text()? {
                    Some(text) => json(self.field, text, |de| de.$method($($($arg,)*)? visitor)),
                    None => self.deserialize_any(visitor),
                }
            }
        )*
    };
}

impl<'r> Deserializer<'r> for Cell<'r> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'r>>(self, visitor: V) -> Result<V::Value, DeError> {
        let (raw, i) = (self.raw, self.column);
        match self.field.kind {
            Kind::Text | Kind::Enum(_) => visitor.visit_borrowed_str(self.text()?),
            Kind::Int => visitor.visit_i64(raw.get::<i64>(i)?),
            Kind::Bool => visitor.visit_bool(raw.get::<bool>(i)?),
            Kind::Time => match raw.get::<Option<DateTime<Utc>>>(i)? {
                Some(t) => {
                    visitor.visit_string(t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
                }
                None => visitor.visit_unit(),
            },
            Kind::Date => match raw.get::<Option<NaiveDate>>(i)? {
                Some(d) => visit_date(d, visitor),
                None => visitor.visit_unit(),
            },
            Kind::Ref(_) => match raw.get::<Option<Uuid>>(i)? {
                Some(u) => {
                    let mut buf = Uuid::encode_buffer();
                    visitor.visit_str(u.hyphenated().encode_lower(&mut buf))
                }
                None => visitor.visit_unit(),
            },
            Kind::Tags | Kind::RefList(_) => visitor.visit_seq(List {
                parts: self.text()?.split('|'),
            }),
            Kind::Json => json(self.field, self.text()?, |de| de.deserialize_any(visitor)),
        }
    }

    fn deserialize_option<V: Visitor<'r>>(self, visitor: V) -> Result<V::Value, DeError> {
        if let Some(text) = self.json_text()? {
            return json(self.field, text, |de| de.deserialize_option(visitor));
        }
        if self.is_null()? {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'r>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match self.json_text()? {
            Some(text) => json(self.field, text, |de| {
                de.deserialize_newtype_struct(name, visitor)
            }),
            None => visitor.visit_newtype_struct(self),
        }
    }

    fn deserialize_enum<V: Visitor<'r>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match self.field.kind {
            Kind::Json => json(self.field, self.text()?, |de| {
                de.deserialize_enum(name, variants, visitor)
            }),
            // A unit variant named by the text, as a JSON string would be.
            Kind::Text | Kind::Enum(_) => {
                visitor.visit_enum(BorrowedStrDeserializer::<DeError>::new(self.text()?))
            }
            _ => self.deserialize_any(visitor),
        }
    }

    /// A reference is handed to `Uuid` as its 16 bytes (see `is_human_readable`), not as
    /// text to parse back.
    fn deserialize_bytes<V: Visitor<'r>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.field.kind {
            Kind::Json => json(self.field, self.text()?, |de| de.deserialize_bytes(visitor)),
            Kind::Ref(_) => match self.raw.get::<Option<Uuid>>(self.column)? {
                Some(u) => visitor.visit_bytes(u.as_bytes()),
                None => visitor.visit_unit(),
            },
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_byte_buf<V: Visitor<'r>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_bytes(visitor)
    }

    /// Readable everywhere but in references, so `Uuid` asks for bytes there.
    fn is_human_readable(&self) -> bool {
        !matches!(self.field.kind, Kind::Ref(_))
    }

    fn deserialize_ignored_any<V: Visitor<'r>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.json_text()? {
            Some(text) => json(self.field, text, |de| de.deserialize_ignored_any(visitor)),
            None => visitor.visit_unit(),
        }
    }

    by_kind! {
        deserialize_bool; deserialize_i8; deserialize_i16; deserialize_i32; deserialize_i64;
        deserialize_i128; deserialize_u8; deserialize_u16; deserialize_u32; deserialize_u64;
        deserialize_u128; deserialize_f32; deserialize_f64; deserialize_char; deserialize_str;
        deserialize_string; deserialize_unit;
        deserialize_unit_struct(name: &'static str);
        deserialize_seq;
        deserialize_tuple(len: usize);
        deserialize_tuple_struct(name: &'static str, len: usize);
        deserialize_map;
        deserialize_struct(name: &'static str, fields: &'static [&'static str]);
        deserialize_identifier;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::codec::from_db;
    use crate::model::{Contact, CustomValue, Email, Order, Phone, PostalAddress, User};
    use crate::store;
    use sea_orm::{ConnectOptions, ConnectionTrait, Database, DbBackend, Statement};
    use serde_json::Map;

    /// The old path: a JSON object per row, then the struct through `serde_json::Value`.
    fn via_json<R: Resource>(row: &QueryResult, skip: &[bool]) -> R {
        let mut obj = Map::new();
        for (i, f) in R::FIELDS.iter().enumerate() {
            if !skip[i] {
                obj.insert(f.name.to_owned(), from_db(f, row).unwrap());
            }
        }
        store::from_object(obj).unwrap()
    }

    /// Column types as the migrations make them.
    fn column_type(backend: DbBackend, kind: Kind) -> &'static str {
        let pg = backend == DbBackend::Postgres;
        match kind {
            Kind::Int => "BIGINT NOT NULL",
            Kind::Bool => "BOOLEAN NOT NULL",
            Kind::Time if pg => "TIMESTAMPTZ NULL",
            Kind::Date if pg => "DATE NULL",
            Kind::Ref(_) if pg => "UUID NULL",
            Kind::Time | Kind::Date => "TEXT NULL",
            Kind::Ref(_) => "BLOB NULL",
            _ => "TEXT NOT NULL",
        }
    }

    /// The databases to test on: SQLite in memory, and PostgreSQL when
    /// `CRM_TEST_POSTGRES_URL` is set (temporary tables, so nothing stays behind).
    fn databases() -> Vec<String> {
        let mut urls = vec!["sqlite::memory:".to_owned()];
        if let Ok(pg) = std::env::var("CRM_TEST_POSTGRES_URL") {
            urls.push(pg);
        }
        urls
    }

    /// Stores `records`, reads them back through the row decoder and through JSON, with no
    /// field hidden, each single field hidden and every field hidden, on every database.
    async fn round_trip<R: Resource + PartialEq + std::fmt::Debug>(records: Vec<R>) {
        for url in databases() {
            round_trip_on(&url, &records).await;
        }
    }

    async fn round_trip_on<R: Resource + PartialEq + std::fmt::Debug>(url: &str, records: &[R]) {
        let mut opts = ConnectOptions::new(url);
        opts.max_connections(1).min_connections(1);
        let conn = Database::connect(opts).await.unwrap();
        let backend = conn.get_database_backend();
        let pg = backend == DbBackend::Postgres;
        let columns: Vec<String> = R::FIELDS
            .iter()
            .map(|f| format!("{} {}", f.column, column_type(backend, f.kind)))
            .collect();
        let (id, time) = if pg {
            ("UUID", "TIMESTAMPTZ")
        } else {
            ("BLOB", "TEXT")
        };
        let ddl = format!(
            "CREATE {} TABLE {} (tenant_id TEXT NOT NULL, id {id} NOT NULL, revision BIGINT \
             NOT NULL, create_time {time} NOT NULL, update_time {time} NOT NULL, delete_time \
             {time} NULL, {})",
            if pg { "TEMPORARY" } else { "" },
            R::TABLE,
            columns.join(", ")
        );
        conn.execute_raw(Statement::from_string(backend, ddl))
            .await
            .unwrap();
        let now = DateTime::from_timestamp(1_764_000_000, 123_456_000).unwrap();
        for data in records {
            let meta = Meta {
                id: Uuid::now_v7(),
                revision: 3,
                create_time: now,
                update_time: now,
            };
            let obj = store::to_object(data).unwrap();
            store::insert::<R, _>(&conn, "t", &meta, &obj)
                .await
                .unwrap();
        }
        let rows = conn.query_all(&store::select::<R>("t")).await.unwrap();
        assert_eq!(rows.len(), records.len());
        let layout = Layout::of::<R>(&rows[0]).unwrap().unwrap();
        // PostgreSQL's column types are checked once for all rows; SQLite's per value.
        assert_eq!(layout.checked, pg, "{url}");
        let n = R::FIELDS.len();
        let sorted = |mut v: Vec<(Meta, R)>| {
            v.sort_by_key(|(m, _)| m.id);
            v
        };
        let decoded = sorted(store::decode_rows::<R>(&rows, &vec![false; n]).unwrap());
        assert_eq!(decoded.len(), records.len());
        for ((_, got), want) in decoded.iter().zip(records) {
            assert_eq!(got, want, "{url}");
        }
        for (row, want) in rows.iter().zip(records) {
            let (meta, got) = decode::<R>(row, &layout, &vec![false; n]).unwrap();
            assert_eq!(&got, want);
            assert_eq!(got, via_json::<R>(row, &vec![false; n]));
            assert_eq!((meta.revision, meta.create_time), (3, now));
            for hidden in 0..=n {
                let skip: Vec<bool> = (0..n).map(|i| i == hidden || hidden == n).collect();
                let (_, got) = decode::<R>(row, &layout, &skip).unwrap();
                assert_eq!(got, via_json::<R>(row, &skip), "hidden {hidden}");
            }
        }
    }

    #[tokio::test]
    async fn contacts_decode_as_through_json() {
        let mut custom = crate::model::custom_field::CustomValues::new();
        custom.insert("score".into(), CustomValue::Number(3.5));
        custom.insert(
            "since".into(),
            CustomValue::Date(NaiveDate::from_ymd_opt(2020, 2, 29).unwrap()),
        );
        custom.insert("tier".into(), CustomValue::Enum("GOLD".into()));
        round_trip(vec![
            Contact {
                given_name: "太郎".into(),
                family_name: "山田".into(),
                display_name: "山田太郎 \"quoted\" \\".into(),
                phones: vec![Phone {
                    number: "+81312345678".into(),
                    label: "work".into(),
                    extension: "12".into(),
                }],
                emails: vec![Email {
                    address: "taro@example.jp".into(),
                    label: String::new(),
                }],
                addresses: vec![PostalAddress {
                    lines: vec!["1-2-3".into(), "Chiyoda".into()],
                    region_code: "JP".into(),
                    ..Default::default()
                }],
                birth_date: NaiveDate::from_ymd_opt(987, 1, 9),
                region: "JP".into(),
                tags: vec!["key-account".into(), "vip".into()],
                owner: Some(Uuid::now_v7()),
                territory: None,
                custom_fields: custom,
            },
            Contact {
                display_name: "Empty".into(),
                ..Default::default()
            },
        ])
        .await;
    }

    #[tokio::test]
    async fn other_kinds_decode_as_through_json() {
        round_trip(vec![
            User {
                display_name: "Ann".into(),
                email: "ann@example.com".into(),
                manager: Some(Uuid::now_v7()),
                teams: vec![Uuid::now_v7(), Uuid::now_v7()],
                territories: vec![],
                skills: vec!["german".into()],
                capacity: -42,
                active: true,
            },
            User::default(),
        ])
        .await;
        round_trip(vec![
            Order {
                order_time: DateTime::from_timestamp(1_700_000_000, 5_000),
                currency_code: "EUR".into(),
                total: i64::MAX,
                ..Default::default()
            },
            Order::default(),
        ])
        .await;
    }

    #[test]
    fn dates_as_chrono_writes_them() {
        struct Text;
        impl Visitor<'_> for Text {
            type Value = String;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("text")
            }
            fn visit_str<E>(self, v: &str) -> Result<String, E> {
                Ok(v.to_owned())
            }
            fn visit_string<E>(self, v: String) -> Result<String, E> {
                Ok(v)
            }
        }
        for (y, m, d) in [
            (1, 1, 1),
            (987, 12, 31),
            (2024, 2, 29),
            (9999, 12, 31),
            (10000, 1, 1),
            (0, 3, 4),
            (-5, 3, 4),
        ] {
            let date = NaiveDate::from_ymd_opt(y, m, d).unwrap();
            let got = visit_date(date, Text).unwrap();
            assert_eq!(got, date.format("%Y-%m-%d").to_string());
        }
    }
}
