//! A bound on every RPC, so that a database that stops answering (a network partition sends
//! no reset) turns into a prompt UNAVAILABLE instead of a call that hangs until the client
//! gives up.
//!
//! Every RPC of this gateway is database work, and sqlx has no per-query client-side
//! timeout: a query on a connection whose peer went silent waits for TCP to give up
//! (minutes). So the whole RPC is bounded by `database.statement_timeout_ms` here, the same
//! bound the server applies to each statement (`statement_timeout`) and the pool to connects
//! and acquires; when it passes, the handler's future is dropped (its queries are cancelled,
//! its transaction rolled back, its connection checked and, if the database still does not
//! answer, closed: see `crm_core::db`) and the call answers UNAVAILABLE "the database did not
//! answer within N ms".
//!
//! The client's own deadline (`grpc-timeout`) is honoured by tonic already: its `GrpcTimeout`
//! drops the handler when it passes, but answers CANCELLED. When the client's deadline is the
//! shorter bound this layer answers DEADLINE_EXCEEDED instead, as gRPC specifies. No
//! `Server::timeout` is set: it would answer CANCELLED too, for a bound this layer enforces.
//!
//! Server-streaming responses are bounded until their first message is ready (the handler's
//! future), not for the whole stream.
//!
//! Client-streaming uploads ([`UNBOUNDED_UPLOADS`]) last as long as the client takes to send
//! the file: they are bounded by the client's own deadline only, and their handler bounds
//! each database step (and the wait for the next message) itself.

use crate::status::status;
use crm_core::db::not_answered;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tower::{Layer, Service};

/// Client-streaming methods not bounded by the database limit (see the module documentation).
pub const UNBOUNDED_UPLOADS: &[&str] = &["/crm.v1.ImportService/UploadImportFile"];

/// Bounds every RPC by `limit` (and by the client's `grpc-timeout` when that is shorter).
#[derive(Debug, Clone, Copy)]
pub struct DeadlineLayer {
    pub limit: Duration,
}

impl DeadlineLayer {
    pub fn new(limit: Duration) -> Self {
        Self { limit }
    }
}

/// The bound is `database.statement_timeout_ms`.
impl From<&crate::config::Database> for DeadlineLayer {
    fn from(db: &crate::config::Database) -> Self {
        Self::new(db.statement_timeout())
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;
    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline {
            inner,
            limit: self.limit,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Deadline<S> {
    inner: S,
    limit: Duration,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for Deadline<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Default,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let limit = self.limit;
        let client = grpc_timeout(req.headers());
        let path = req.uri().path().to_owned();
        let fut = self.inner.call(req);
        if UNBOUNDED_UPLOADS.contains(&path.as_str()) {
            return Box::pin(async move {
                match client {
                    None => fut.await,
                    Some(bound) => match tokio::time::timeout(bound, fut).await {
                        Ok(res) => res,
                        Err(_) => Ok(tonic::Status::deadline_exceeded(format!(
                            "the client's deadline of {} ms passed; the call was cancelled",
                            bound.as_millis()
                        ))
                        .into_http()),
                    },
                }
            });
        }
        Box::pin(async move {
            let (bound, clients_own) = match client {
                Some(c) if c < limit => (c, true),
                _ => (limit, false),
            };
            match tokio::time::timeout(bound, fut).await {
                Ok(res) => res,
                Err(_) if clients_own => {
                    tracing::debug!(%path, timeout_ms = bound.as_millis() as u64, "client deadline passed");
                    Ok(tonic::Status::deadline_exceeded(format!(
                        "the client's deadline of {} ms passed; the call was cancelled",
                        bound.as_millis()
                    ))
                    .into_http())
                }
                Err(_) => {
                    // status() logs the UNAVAILABLE itself; this adds which call it was.
                    tracing::debug!(%path, timeout_ms = bound.as_millis() as u64, "call cancelled: the database did not answer in time");
                    Ok(status(not_answered(bound)).into_http())
                }
            }
        })
    }
}

/// The `grpc-timeout` request header (`<at most 8 digits><H|M|S|m|u|n>`), if valid.
pub fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let v = headers.get("grpc-timeout")?.to_str().ok()?;
    if !(2..=9).contains(&v.len()) || !v.is_ascii() {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// A service whose calls take `delay`.
    #[derive(Clone)]
    struct Slow(Duration);

    impl Service<http::Request<()>> for Slow {
        type Response = http::Response<String>;
        type Error = std::convert::Infallible;
        type Future = BoxFuture<Self::Response, Self::Error>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            let d = self.0;
            Box::pin(async move {
                tokio::time::sleep(d).await;
                Ok(http::Response::new("done".to_owned()))
            })
        }
    }

    fn request(timeout: Option<&str>) -> http::Request<()> {
        let mut b = http::Request::builder().uri("/crm.v1.ContactService/ListContacts");
        if let Some(t) = timeout {
            b = b.header("grpc-timeout", t);
        }
        b.body(()).unwrap()
    }

    fn grpc_status(res: &http::Response<String>) -> Option<&str> {
        res.headers()
            .get("grpc-status")
            .map(|v| v.to_str().unwrap())
    }

    #[tokio::test]
    async fn a_call_over_the_limit_answers_unavailable() {
        let mut svc = DeadlineLayer {
            limit: Duration::from_millis(100),
        }
        .layer(Slow(Duration::from_secs(60)));
        let start = Instant::now();
        let res = svc.call(request(None)).await.unwrap();
        assert!(start.elapsed() < Duration::from_secs(2));
        assert_eq!(grpc_status(&res), Some("14"));
        let message = res.headers().get("grpc-message").unwrap().to_str().unwrap();
        assert!(message.contains("100"), "{message}");
    }

    #[tokio::test]
    async fn a_shorter_client_deadline_answers_deadline_exceeded() {
        let mut svc = DeadlineLayer {
            limit: Duration::from_secs(30),
        }
        .layer(Slow(Duration::from_secs(60)));
        let start = Instant::now();
        let res = svc.call(request(Some("50m"))).await.unwrap();
        assert!(start.elapsed() < Duration::from_secs(2));
        assert_eq!(grpc_status(&res), Some("4"));
    }

    #[tokio::test]
    async fn a_call_in_time_passes_through() {
        let mut svc = DeadlineLayer {
            limit: Duration::from_secs(5),
        }
        .layer(Slow(Duration::from_millis(1)));
        let res = svc.call(request(Some("2S"))).await.unwrap();
        assert_eq!(res.body(), "done");
        assert_eq!(grpc_status(&res), None);
    }

    #[test]
    fn parses_grpc_timeout() {
        let h = |v: &str| {
            let mut m = http::HeaderMap::new();
            m.insert("grpc-timeout", v.parse().unwrap());
            grpc_timeout(&m)
        };
        assert_eq!(h("1S"), Some(Duration::from_secs(1)));
        assert_eq!(h("250m"), Some(Duration::from_millis(250)));
        assert_eq!(h("2M"), Some(Duration::from_secs(120)));
        assert_eq!(h("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(h("99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(h("5n"), Some(Duration::from_nanos(5)));
        assert_eq!(h("S"), None);
        assert_eq!(h("123456789S"), None);
        assert_eq!(h("+1S"), None);
        assert_eq!(h("1x"), None);
        assert_eq!(grpc_timeout(&http::HeaderMap::new()), None);
    }
}
