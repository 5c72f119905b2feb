//! The one place crm errors become gRPC statuses (with AIP-193 ErrorInfo and BadRequest).

use crm_core::{Error, ErrorKind};
use std::collections::HashMap;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

pub const DOMAIN: &str = "crm.v1";

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
                    metadata.insert((*k).to_owned(), v.clone());
                }
            }
            e.message.clone()
        }
    };
    let mut details = ErrorDetails::with_error_info(e.reason, DOMAIN, metadata);
    for v in &e.violations {
        details.add_bad_request_violation(v.field.clone(), v.description.clone());
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
