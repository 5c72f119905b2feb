//! Requests and the checks of their outcome: gRPC statuses and engine errors.

use crm_core::{Error, ErrorKind};
use tonic::{Code, Request, Status};

/// A request carrying `authorization: Bearer <token>`.
pub fn req<T>(token: &str, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

/// Asserts a call failed with `code` and returns the status.
pub fn expect_code<T: std::fmt::Debug>(r: Result<T, Status>, code: Code) -> Status {
    match r {
        Ok(v) => panic!("expected {code:?}, got Ok({v:?})"),
        Err(s) => {
            assert_eq!(s.code(), code, "unexpected status: {s:?}");
            s
        }
    }
}

/// Asserts an engine call failed with `kind` and returns the error (its `reason`,
/// `violations` and `metadata` are what the gateway maps to status details).
pub fn expect_kind<T: std::fmt::Debug>(r: Result<T, Error>, kind: ErrorKind) -> Error {
    match r {
        Ok(v) => panic!("expected {kind:?}, got Ok({v:?})"),
        Err(e) => {
            assert_eq!(e.kind, kind, "unexpected error: {e:?}");
            e
        }
    }
}

/// The fields named in a status's `google.rpc.BadRequest` details.
pub fn violated_fields(s: &Status) -> Vec<String> {
    use tonic_types::StatusExt;
    s.get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

/// The `google.rpc.ErrorInfo` reason of a status (empty when it has none).
pub fn reason(s: &Status) -> String {
    use tonic_types::StatusExt;
    s.get_details_error_info()
        .map(|i| i.reason)
        .unwrap_or_default()
}

/// An update mask of `paths`.
pub fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask {
        paths: paths.iter().map(|p| (*p).to_string()).collect(),
    })
}
