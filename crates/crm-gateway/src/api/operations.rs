//! google.longrunning.Operations: jobs (imports, exports, timers) as long-running operations,
//! `operations/{id}`, with `crm.v1.OperationMetadata` progress and an `crm.v1.OperationResult`
//! response. Who may see and control which: `crm_core::jobs::operations`.

use crate::convert::{opt_ts, ts};
use crate::status::OrStatus;
use crm_api::google::longrunning::{self as lro, operations_server};
use crm_api::google::rpc;
use crm_api::v1 as pb;
use crm_core::error::{Error, Result};
use crm_core::ids;
use crm_core::jobs::operations::{self, Caller, ListParams};
use crm_core::jobs::{Job, JobError, JobState};
use crm_core::service::Ctx;
use std::time::Duration;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::Gateway;

pub struct Operations(pub Gateway);

fn caller(ctx: &Ctx) -> Caller<'_> {
    Caller {
        tenant: ctx.tenant(),
        user: ctx.principal.user,
        policy: &ctx.policy,
    }
}

fn parse(name: &str) -> Result<Uuid> {
    ids::parse_name("name", "operations", name.trim())
}

/// The message's encoding in an `Any`.
fn pack<M: prost::Message>(type_name: &str, m: &M) -> prost_types::Any {
    prost_types::Any {
        type_url: format!("type.googleapis.com/{type_name}"),
        value: m.encode_to_vec(),
    }
}

/// The numeric gRPC code of a canonical code name (UNKNOWN for anything else).
fn code(name: &str) -> i32 {
    let c = match name {
        "CANCELLED" => tonic::Code::Cancelled,
        "INVALID_ARGUMENT" => tonic::Code::InvalidArgument,
        "DEADLINE_EXCEEDED" => tonic::Code::DeadlineExceeded,
        "NOT_FOUND" => tonic::Code::NotFound,
        "ALREADY_EXISTS" => tonic::Code::AlreadyExists,
        "PERMISSION_DENIED" => tonic::Code::PermissionDenied,
        "RESOURCE_EXHAUSTED" => tonic::Code::ResourceExhausted,
        "FAILED_PRECONDITION" => tonic::Code::FailedPrecondition,
        "ABORTED" => tonic::Code::Aborted,
        "OUT_OF_RANGE" => tonic::Code::OutOfRange,
        "UNIMPLEMENTED" => tonic::Code::Unimplemented,
        "INTERNAL" => tonic::Code::Internal,
        "UNAVAILABLE" => tonic::Code::Unavailable,
        "DATA_LOSS" => tonic::Code::DataLoss,
        "UNAUTHENTICATED" => tonic::Code::Unauthenticated,
        _ => tonic::Code::Unknown,
    };
    c as i32
}

/// An error's message as clients see it: internal errors (a panic, a bug) are logged and
/// recorded with the job for operators, never shown.
fn shown(e: &JobError) -> String {
    if e.code == "INTERNAL" {
        "internal error".to_owned()
    } else {
        e.message.clone()
    }
}

fn state(s: JobState) -> pb::OperationState {
    match s {
        JobState::Queued => pb::OperationState::Queued,
        JobState::Running => pb::OperationState::Running,
        JobState::Succeeded => pb::OperationState::Succeeded,
        JobState::Failed => pb::OperationState::Failed,
        JobState::Cancelled => pb::OperationState::Cancelled,
    }
}

/// A job as an operation.
pub fn operation(job: &Job) -> lro::Operation {
    let progress = job.progress.clone().unwrap_or_default();
    let counts: std::collections::HashMap<String, i64> = progress.counts.into_iter().collect();
    let metadata = pb::OperationMetadata {
        kind: job.kind.clone(),
        create_time: Some(ts(job.create_time)),
        update_time: Some(ts(job.update_time)),
        done_count: progress.done,
        total_count: progress.total,
        counts: counts.clone(),
        state: state(job.state) as i32,
        attempt: i32::try_from(job.attempts).unwrap_or(i32::MAX),
        max_attempts: i32::try_from(job.max_attempts).unwrap_or(i32::MAX),
        due_time: Some(ts(job.due_time)),
        cancel_requested: job.cancel_requested,
        collection: job.collection.clone().unwrap_or_default(),
        creator: job
            .creator
            .map(|u| format!("users/{u}"))
            .unwrap_or_default(),
        last_error: match (job.state, &job.error) {
            (JobState::Queued | JobState::Running, Some(e)) => shown(e),
            _ => String::new(),
        },
        finish_time: opt_ts(job.finish_time),
    };
    let result = match job.state {
        JobState::Succeeded => Some(lro::operation::Result::Response(pack(
            "crm.v1.OperationResult",
            &pb::OperationResult {
                kind: job.kind.clone(),
                result: job.result.as_ref().map(crate::convert::json_value),
                counts,
            },
        ))),
        JobState::Failed | JobState::Cancelled => {
            let e = job
                .error
                .clone()
                .unwrap_or_else(|| JobError::new("UNKNOWN", "the job ended without an error"));
            let code = if job.state == JobState::Cancelled {
                tonic::Code::Cancelled as i32
            } else {
                code(&e.code)
            };
            Some(lro::operation::Result::Error(rpc::Status {
                code,
                message: shown(&e),
                details: vec![],
            }))
        }
        JobState::Queued | JobState::Running => None,
    };
    lro::Operation {
        name: format!("operations/{}", job.id),
        metadata: Some(pack("crm.v1.OperationMetadata", &metadata)),
        done: job.state.is_done(),
        result,
    }
}

/// The client's deadline (`grpc-timeout`), as the deadline layer reads it.
fn client_deadline<T>(r: &Request<T>) -> Option<Duration> {
    crate::deadline::grpc_timeout(&r.metadata().clone().into_headers())
}

/// How long WaitOperation waits: the request's timeout, within the RPC's own bound (the
/// gateway's `database.statement_timeout_ms`) and the client's deadline, with room left to
/// answer before either passes.
fn wait_bound(
    requested: Option<prost_types::Duration>,
    rpc: Duration,
    client: Option<Duration>,
) -> Result<Duration> {
    let limit = client.map_or(rpc, |c| c.min(rpc)).mul_f64(0.8);
    match requested {
        None => Ok(limit),
        Some(d) if d.seconds < 0 || d.nanos < 0 || d.nanos >= 1_000_000_000 => {
            Err(Error::invalid("timeout", "must be a non-negative duration"))
        }
        Some(d) => {
            let asked = Duration::new(
                u64::try_from(d.seconds).unwrap_or(0),
                u32::try_from(d.nanos).unwrap_or(0),
            );
            Ok(asked.min(limit))
        }
    }
}

#[tonic::async_trait]
impl operations_server::Operations for Operations {
    async fn list_operations(
        &self,
        r: Request<lro::ListOperationsRequest>,
    ) -> Result<Response<lro::ListOperationsResponse>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let r = r.into_inner();
        if !["", "operations"].contains(&r.name.trim()) {
            return Err(Error::invalid("name", "must be empty or \"operations\"")).or_status();
        }
        let params = ListParams {
            page_size: r.page_size,
            page_token: r.page_token,
            filter: r.filter,
        };
        let (jobs, next_page_token) = operations::list(&ctx.db, &caller(&ctx), &params)
            .await
            .or_status()?;
        Ok(Response::new(lro::ListOperationsResponse {
            operations: jobs.iter().map(operation).collect(),
            next_page_token,
        }))
    }

    async fn get_operation(
        &self,
        r: Request<lro::GetOperationRequest>,
    ) -> Result<Response<lro::Operation>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let id = parse(&r.get_ref().name).or_status()?;
        let job = operations::get(&ctx.db, &caller(&ctx), id)
            .await
            .or_status()?;
        Ok(Response::new(operation(&job)))
    }

    async fn delete_operation(
        &self,
        r: Request<lro::DeleteOperationRequest>,
    ) -> Result<Response<()>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let id = parse(&r.get_ref().name).or_status()?;
        operations::delete(&ctx.db, &caller(&ctx), id)
            .await
            .or_status()?;
        Ok(Response::new(()))
    }

    async fn cancel_operation(
        &self,
        r: Request<lro::CancelOperationRequest>,
    ) -> Result<Response<()>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let id = parse(&r.get_ref().name).or_status()?;
        operations::cancel(&ctx.db, ctx.clock.as_ref(), &caller(&ctx), id)
            .await
            .or_status()?;
        Ok(Response::new(()))
    }

    async fn wait_operation(
        &self,
        r: Request<lro::WaitOperationRequest>,
    ) -> Result<Response<lro::Operation>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let client = client_deadline(&r);
        let r = r.into_inner();
        let id = parse(&r.name).or_status()?;
        let bound = wait_bound(r.timeout, ctx.db.timeout(), client).or_status()?;
        let job = operations::wait(&ctx.db, &caller(&ctx), id, bound)
            .await
            .or_status()?;
        Ok(Response::new(operation(&job)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn waits_stay_within_the_rpc_and_client_bounds() {
        let rpc = Duration::from_secs(5);
        let secs = |s: i64| {
            Some(prost_types::Duration {
                seconds: s,
                nanos: 0,
            })
        };
        assert_eq!(wait_bound(None, rpc, None).unwrap(), Duration::from_secs(4));
        assert_eq!(
            wait_bound(secs(1), rpc, None).unwrap(),
            Duration::from_secs(1)
        );
        assert_eq!(
            wait_bound(secs(60), rpc, None).unwrap(),
            Duration::from_secs(4)
        );
        assert_eq!(
            wait_bound(secs(60), rpc, Some(Duration::from_secs(1))).unwrap(),
            Duration::from_millis(800)
        );
        assert!(wait_bound(secs(-1), rpc, None).is_err());
    }

    #[test]
    fn json_becomes_protobuf_values() {
        let v = crate::convert::json_value(&serde_json::json!({"a": [1, "x", null, true]}));
        let Some(prost_types::value::Kind::StructValue(s)) = v.kind else {
            panic!("{v:?}")
        };
        let Some(prost_types::value::Kind::ListValue(l)) = &s.fields["a"].kind else {
            panic!("{s:?}")
        };
        assert_eq!(l.values.len(), 4);
    }

    #[test]
    fn code_names_map_to_grpc_codes() {
        assert_eq!(code("UNAVAILABLE"), 14);
        assert_eq!(code("CANCELLED"), 1);
        assert_eq!(code("whatever"), 2);
    }
}
