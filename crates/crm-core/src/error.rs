//! The one error type of crm: a small closed set of kinds, each with a stable reason.
//!
//! The gateway maps [`ErrorKind`] to a gRPC status in exactly one place.

use sea_orm::{DbErr, SqlErr};

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
    pub fn invalid_fields(violations: Vec<FieldViolation>) -> Self {
        let message = match violations.as_slice() {
            [one] => format!("invalid {}: {}", one.field, one.description),
            many => format!(
                "invalid fields: {}",
                many.iter()
                    .map(|v| v.field.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let mut e = Self::new(ErrorKind::InvalidArgument, "INVALID_FIELD", message);
        e.violations = violations;
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

    /// Prefixes every field violation with `prefix.` (e.g. `contact.`).
    pub fn in_field(mut self, prefix: &str) -> Self {
        if self.kind == ErrorKind::InvalidArgument && !self.violations.is_empty() {
            for v in &mut self.violations {
                v.field = format!("{prefix}.{}", v.field);
            }
            let violations = std::mem::take(&mut self.violations);
            return Self::invalid_fields(violations);
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
        if is_unavailable(&e) {
            return Error::unavailable("the database is unavailable; retry later")
                .with("detail", e.to_string());
        }
        Error::internal(format!("database error: {e}"))
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
}
