//! The one place crm errors become gRPC statuses (with AIP-193 ErrorInfo and BadRequest).

use crm_core::error::{MAX_DETAIL_CHARS, MAX_VIOLATIONS, clip};
use crm_core::{Error, ErrorKind};
use std::collections::HashMap;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

pub const DOMAIN: &str = "crm.v1";

/// Messages are cut to this many bytes; with the violations bounded by crm_core::Error
/// (count and total size), every error stays well under 8 KiB of trailers.
const MAX_MESSAGE_CHARS: usize = 512;

pub fn status(e: Error) -> Status {
    let code = match e.kind {
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::Aborted => Code::Aborted,
        ErrorKind::FailedPrecondition => Code::FailedPrecondition,
        ErrorKind::PermissionDenied => Code::PermissionDenied,
        ErrorKind::Unauthenticated => Code::Unauthenticated,
        ErrorKind::ResourceExhausted => Code::ResourceExhausted,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::Internal => Code::Internal,
    };
    let mut metadata: HashMap<String, String> = HashMap::new();
    let message = match e.kind {
        // Logged inside the RPC's span (method, tenant, request id); the client gets the
        // request id to quote, never the internal detail.
        ErrorKind::Internal => {
            tracing::error!(reason = e.reason, error = %e.message, details = ?e.metadata, "internal error");
            if let Some(id) = crate::trace::request_id() {
                metadata.insert("request_id".into(), id.clone());
                format!("internal error (request id {id})")
            } else {
                "internal error".to_owned()
            }
        }
        ErrorKind::Unavailable => {
            tracing::warn!(error = %e.message, details = ?e.metadata, "database unavailable");
            if let Some(id) = crate::trace::request_id() {
                metadata.insert("request_id".into(), id);
            }
            e.message.clone()
        }
        _ => {
            for (k, v) in &e.metadata {
                if *k != "detail" {
                    metadata.insert((*k).to_owned(), clip(v, MAX_DETAIL_CHARS));
                }
            }
            clip(&e.message, MAX_MESSAGE_CHARS)
        }
    };
    let mut details = ErrorDetails::with_error_info(e.reason, DOMAIN, metadata);
    // crm_core::Error already caps the violations; this bound holds whoever built it.
    for v in e.violations.iter().take(MAX_VIOLATIONS) {
        details.add_bad_request_violation(
            clip(&v.field, MAX_DETAIL_CHARS),
            clip(&v.description, MAX_DETAIL_CHARS),
        );
    }
    Status::with_error_details(code, message, details)
}

/// `?` for handler results.
pub trait OrStatus<T> {
    fn or_status(self) -> Result<T, Status>;
}

impl<T> OrStatus<T> for crm_core::Result<T> {
    fn or_status(self) -> Result<T, Status> {
        self.map_err(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn internal_errors_name_the_request_not_the_cause() {
        let e = Error::internal("the secret detail");
        let st = status(e.clone());
        assert_eq!(st.message(), "internal error");
        let with_id = crate::trace::scoped("r-123".into(), async { status(e) }).await;
        assert_eq!(with_id.message(), "internal error (request id r-123)");
        let info = with_id.get_details_error_info();
        assert_eq!(
            info.and_then(|i| i.metadata.get("request_id").cloned()),
            Some("r-123".to_owned())
        );
    }

    #[test]
    fn violations_and_messages_are_bounded() {
        let many: Vec<_> = (0..500)
            .map(|i| {
                crm_core::FieldViolation::new(format!("lines[{i}].quantity"), "x".repeat(1000))
            })
            .collect();
        let st = status(Error::invalid_fields(many));
        let bytes = st.details().len() + st.message().len();
        assert!(bytes < 8 * 1024, "{bytes}");
    }
}
