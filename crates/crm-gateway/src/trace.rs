//! One tracing span per RPC: every log line of a call carries its method, its tenant (once
//! the token is checked) and a request id, so an INTERNAL answer can be found in the log.
//! The request id is the caller's `x-request-id` (up to 64 visible ASCII characters) or a
//! new UUIDv7; it is sent back in the `x-request-id` response header and, for INTERNAL and
//! UNAVAILABLE, in the error's `ErrorInfo` metadata.

use http::HeaderValue;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tower::{Layer, Service};
use tracing::Instrument;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The request id of the RPC being served, if any.
pub fn request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// Runs `fut` with `id` as its request id (what the layer does for every RPC).
pub async fn scoped<F: Future>(id: String, fut: F) -> F::Output {
    REQUEST_ID.scope(id, fut).await
}

/// Records the caller's tenant on the RPC's span.
pub fn record_tenant(tenant: &str) {
    tracing::Span::current().record("tenant", tenant);
}

#[derive(Debug, Clone, Copy, Default)]
pub struct RequestSpanLayer;

impl<S> Layer<S> for RequestSpanLayer {
    type Service = RequestSpan<S>;
    fn layer(&self, inner: S) -> RequestSpan<S> {
        RequestSpan { inner }
    }
}

#[derive(Debug, Clone)]
pub struct RequestSpan<S> {
    inner: S,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

fn valid(v: &HeaderValue) -> Option<&str> {
    let s = v.to_str().ok()?;
    (!s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_graphic())).then_some(s)
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for RequestSpan<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let id = req
            .headers()
            .get("x-request-id")
            .and_then(valid)
            .map(str::to_owned)
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        let span = tracing::info_span!(
            "rpc",
            method = %req.uri().path(),
            request_id = %id,
            tenant = tracing::field::Empty,
        );
        let fut = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        let header = HeaderValue::from_str(&id).ok();
        Box::pin(REQUEST_ID.scope(id, async move {
            let mut res = fut.instrument(span).await?;
            if let Some(h) = header {
                res.headers_mut().insert("x-request-id", h);
            }
            Ok(res)
        }))
    }
}
