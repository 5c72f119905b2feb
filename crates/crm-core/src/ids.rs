//! Ids (UUIDv7) and resource names (`contacts/{id}`).

use crate::error::{Error, Result};
use uuid::Uuid;

/// A new time-ordered id.
pub fn new_id() -> Uuid {
    Uuid::now_v7()
}

/// `collection/{id}`.
pub fn format_name(collection: &str, id: Uuid) -> String {
    format!("{collection}/{id}")
}

/// Parses `collection/{id}`; `field` names the request field in the error.
pub fn parse_name(field: &str, collection: &str, name: &str) -> Result<Uuid> {
    let Some(rest) = name
        .strip_prefix(collection)
        .and_then(|r| r.strip_prefix('/'))
    else {
        return Err(Error::invalid(
            field,
            format!("must be a resource name of the form {collection}/{{id}}"),
        ));
    };
    parse_uuid(field, rest)
}

/// Parses an id in canonical hyphenated form.
pub fn parse_uuid(field: &str, text: &str) -> Result<Uuid> {
    if text.len() != 36 {
        return Err(Error::invalid(field, "the id is not a valid UUID"));
    }
    Uuid::try_parse(text).map_err(|_| Error::invalid(field, "the id is not a valid UUID"))
}

/// Parses an optional reference: empty means none.
pub fn parse_optional_name(field: &str, collection: &str, name: &str) -> Result<Option<Uuid>> {
    if name.is_empty() {
        Ok(None)
    } else {
        parse_name(field, collection, name).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let id = new_id();
        let name = format_name("contacts", id);
        assert_eq!(parse_name("name", "contacts", &name).ok(), Some(id));
    }

    #[test]
    fn rejects_other_collections_and_garbage() {
        let id = new_id();
        assert!(parse_name("name", "contacts", &format_name("accounts", id)).is_err());
        assert!(parse_name("name", "contacts", "contacts/").is_err());
        assert!(parse_name("name", "contacts", "contacts/not-a-uuid").is_err());
        assert!(parse_name("name", "contacts", "contactsx/1").is_err());
        assert!(parse_name("name", "contacts", "contacts/\u{0}").is_err());
    }
}
