//! The one error type of crm: a small closed set of kinds, each with a stable reason.
//!
//! The gateway maps [`ErrorKind`] to a gRPC status in exactly one place.

use sea_orm::{ConnAcquireErr, DbErr, RuntimeErr, SqlErr};

/// The closed set of error kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    Aborted,
    FailedPrecondition,
    PermissionDenied,
    Unauthenticated,
    ResourceExhausted,
    Unavailable,
    Internal,
}

/// One offending field of a request, reported in `google.rpc.BadRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Path of the field, e.g. `contact.emails[1].address`.
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// A crm error: kind, stable UPPER_SNAKE reason, lower-case message, details.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    pub kind: ErrorKind,
    pub reason: &'static str,
    pub message: String,
    pub violations: Vec<FieldViolation>,
    /// Every dynamic value of the message, for `google.rpc.ErrorInfo` metadata.
    pub metadata: Vec<(&'static str, String)>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// At most this many field violations are returned with one error.
pub const MAX_VIOLATIONS: usize = 20;
/// Descriptions in errors are cut to this many bytes (field paths to half of it).
pub const MAX_DETAIL_CHARS: usize = 400;
/// The violations of one error take at most this many bytes of text together (the first
/// one always stays); the rest are counted as omitted.
const VIOLATIONS_BUDGET: usize = 3 * 1024;

/// `s` cut to at most `max` bytes (at a character boundary), with `…` when cut.
pub fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Top-level request fields that use cases may name in violations; never prefixed by
/// [`Error::in_field`].
pub const REQUEST_FIELDS: &[&str] = &["request_id", "update_mask"];

impl Error {
    pub fn new(kind: ErrorKind, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            reason,
            message: message.into(),
            violations: Vec::new(),
            metadata: Vec::new(),
        }
    }

    pub fn with(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.metadata.push((key, value.into()));
        self
    }

    /// INVALID_ARGUMENT for one field.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::invalid_fields(vec![FieldViolation::new(field, description)])
    }

    /// INVALID_ARGUMENT naming every offending field.
    /// INVALID_ARGUMENT naming each bad field; at most [`MAX_VIOLATIONS`] are returned
    /// (the rest are counted in the message and in `omitted_violations`), so the error
    /// stays small enough for any client's metadata limit.
    pub fn invalid_fields(mut violations: Vec<FieldViolation>) -> Self {
        let omitted = violations.len().saturating_sub(MAX_VIOLATIONS);
        violations.truncate(MAX_VIOLATIONS);
        Self::violated(violations, omitted)
    }

    fn violated(mut violations: Vec<FieldViolation>, mut omitted: usize) -> Self {
        let mut used = 0;
        let mut kept = 0;
        for v in &mut violations {
            v.field = clip(&v.field, MAX_DETAIL_CHARS / 2);
            v.description = clip(&v.description, MAX_DETAIL_CHARS);
            used += v.field.len() + v.description.len();
            if kept > 0 && used > VIOLATIONS_BUDGET {
                break;
            }
            kept += 1;
        }
        omitted += violations.len() - kept;
        violations.truncate(kept);
        let names = || {
            violations
                .iter()
                .map(|v| v.field.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let message = match violations.as_slice() {
            [one] if omitted == 0 => format!("invalid {}: {}", one.field, one.description),
            _ if omitted > 0 => format!(
                "{} invalid fields, the first {} named: {}",
                violations.len() + omitted,
                violations.len(),
                names()
            ),
            _ => format!("invalid fields: {}", names()),
        };
        let mut e = Self::new(ErrorKind::InvalidArgument, "INVALID_FIELD", message);
        e.violations = violations;
        if omitted > 0 {
            e = e.with("omitted_violations", omitted.to_string());
        }
        e
    }

    pub fn not_found(resource: impl Into<String>) -> Self {
        let resource = resource.into();
        Self::new(
            ErrorKind::NotFound,
            "RESOURCE_NOT_FOUND",
            format!("{resource} not found"),
        )
        .with("resource", resource)
    }

    pub fn already_exists(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::AlreadyExists, "ALREADY_EXISTS", message)
    }

    pub fn aborted(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Aborted, reason, message)
    }

    pub fn failed_precondition(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::FailedPrecondition, reason, message)
    }

    pub fn permission_denied(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::PermissionDenied, reason, message)
    }

    pub fn unauthenticated(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unauthenticated, reason, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, "DATABASE_UNAVAILABLE", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, "INTERNAL", message)
    }

    /// Prefixes the violated fields with the request field holding the resource
    /// (`emails[0]` becomes `contact.emails[0]`); fields of the request itself
    /// ([`REQUEST_FIELDS`]) keep their names.
    pub fn in_field(mut self, prefix: &str) -> Self {
        if self.kind == ErrorKind::InvalidArgument && !self.violations.is_empty() {
            for v in &mut self.violations {
                if !REQUEST_FIELDS.contains(&v.field.as_str()) {
                    v.field = format!("{prefix}.{}", v.field);
                }
            }
            let violations = std::mem::take(&mut self.violations);
            let omitted = self
                .metadata
                .iter()
                .find(|(k, _)| *k == "omitted_violations")
                .and_then(|(_, n)| n.parse().ok())
                .unwrap_or(0);
            return Self::violated(violations, omitted);
        }
        self
    }
}

/// Database errors: constraint violations become user errors, lost connections UNAVAILABLE,
/// anything else INTERNAL (logged by the gateway with its context).
impl From<DbErr> for Error {
    fn from(e: DbErr) -> Self {
        match e.sql_err() {
            Some(SqlErr::UniqueConstraintViolation(detail)) => {
                return Error::already_exists("a record with the same unique value already exists")
                    .with("detail", detail);
            }
            Some(SqlErr::ForeignKeyConstraintViolation(detail)) => {
                return Error::failed_precondition(
                    "REFERENCE_VIOLATION",
                    "the change would break a reference between records",
                )
                .with("detail", detail);
            }
            _ => {}
        }
        // The whole cause chain (e.g. "... TLS connection: invalid peer certificate: ...")
        // goes into `detail`: logged and shown to operators, never sent to RPC clients.
        let detail = cause_chain(&e);
        match sqlstate(&e).as_deref() {
            // query_canceled: the server-side statement_timeout fired.
            Some("57014") => {
                return Error::unavailable(
                    "the database did not answer within the statement timeout; retry later",
                )
                .with("detail", detail);
            }
            // character_not_in_repertoire (a NUL in text, which PostgreSQL cannot store):
            // input that slipped past validation is the caller's error, not ours.
            Some("22021") => {
                return Error::invalid("", "text must not contain NUL characters")
                    .with("detail", detail);
            }
            // A deadlock or a serialization failure: the transaction was rolled back and may
            // be retried as it is.
            Some("40P01" | "40001") => {
                return Error::aborted(
                    "CONCURRENT_WRITE",
                    "the write conflicted with a concurrent one and was rolled back; retry it",
                )
                .with("detail", detail);
            }
            // Connection exceptions, the server shutting down or starting up, too many
            // connections.
            Some(code) if code.starts_with("08") || code.starts_with("57P") || code == "53300" => {
                return Error::unavailable("the database is unavailable; retry later")
                    .with("detail", detail);
            }
            _ => {}
        }
        let pool_timed_out = match &e {
            DbErr::ConnectionAcquire(ConnAcquireErr::Timeout) => true,
            DbErr::Conn(RuntimeErr::SqlxError(s)) => {
                matches!(**s, sea_orm::sqlx::Error::PoolTimedOut)
            }
            _ => false,
        };
        if pool_timed_out {
            return Error::unavailable(
                "the database did not answer in time (no connection became free); retry later",
            )
            .with("detail", detail);
        }
        if is_unavailable(&e) {
            return Error::unavailable("the database is unavailable; retry later")
                .with("detail", detail);
        }
        Error::internal(format!("database error: {detail}"))
    }
}

/// `e` and each of its sources not already quoted in the text before it.
fn cause_chain(e: &DbErr) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let more = s.to_string();
        if !more.is_empty() && !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// The SQLSTATE of a database error, if `e` is one.
fn sqlstate(e: &DbErr) -> Option<String> {
    match e {
        DbErr::Exec(RuntimeErr::SqlxError(s))
        | DbErr::Query(RuntimeErr::SqlxError(s))
        | DbErr::Conn(RuntimeErr::SqlxError(s)) => s
            .as_database_error()
            .and_then(|d| d.code())
            .map(|c| c.into_owned()),
        _ => None,
    }
}

fn is_unavailable(e: &DbErr) -> bool {
    if matches!(e, DbErr::ConnectionAcquire(_) | DbErr::Conn(_)) {
        return true;
    }
    let text = e.to_string().to_lowercase();
    [
        "pool timed out",
        "connection refused",
        "connection reset",
        "broken pipe",
        "error communicating with database",
        "error connecting",
        "io error",
        "terminating connection",
        "the database system is",
        "connection closed",
        "pool closed",
        "unable to open database",
        "database is locked",
        "no route to host",
        "server closed the connection",
    ]
    .iter()
    .any(|needle| text.contains(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_violation_names_the_field() {
        let e =
            Error::invalid("emails[0].address", "not a valid e-mail address").in_field("contact");
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert_eq!(e.violations[0].field, "contact.emails[0].address");
        assert!(e.message.contains("contact.emails[0].address"));
    }

    #[test]
    fn connection_errors_are_unavailable() {
        let e: Error = DbErr::ConnectionAcquire(sea_orm::ConnAcquireErr::Timeout).into();
        assert_eq!(e.kind, ErrorKind::Unavailable);
    }

    #[test]
    fn connect_errors_keep_their_cause_for_operators() {
        let tls =
            sea_orm::sqlx::Error::Tls("invalid peer certificate: UnsupportedCertVersion".into());
        let e: Error = DbErr::Conn(RuntimeErr::SqlxError(std::sync::Arc::new(tls))).into();
        assert_eq!(e.kind, ErrorKind::Unavailable);
        // Clients get the clean message; the cause travels in `detail`.
        assert!(!e.message.contains("certificate"), "{}", e.message);
        let detail = e
            .metadata
            .iter()
            .find(|(k, _)| *k == "detail")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        assert!(detail.contains("TLS"), "{detail}");
        assert!(detail.contains("invalid peer certificate"), "{detail}");
    }
}
