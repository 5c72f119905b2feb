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
        ErrorKind::Internal => {
            tracing::error!(reason = e.reason, error = %e.message, "internal error");
            "internal error".to_owned()
        }
        ErrorKind::Unavailable => {
            tracing::warn!(error = %e.message, details = ?e.metadata, "database unavailable");
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
