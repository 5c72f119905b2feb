//! What browsers and oversized requests meet before any service: CORS for grpc-web pages,
//! and a clean RESOURCE_EXHAUSTED for a request over the size limit.

use crate::status::status;
use bytes::Bytes;
use crm_core::{Error, ErrorKind};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use http_body::{Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tonic::body::Body;
use tower::{Layer, Service};
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

/// How long a browser may reuse a preflight answer (Chromium caps it at two hours).
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(2 * 60 * 60);

/// CORS for grpc-web: the configured origins (`*` mirrors any origin: calls carry bearer
/// tokens, never cookies), the request's headers mirrored by name (the Fetch standard does
/// not let `*` cover `authorization`), the gRPC status headers exposed by name, and a
/// max-age so browsers do not preflight every call.
pub fn cors(origins: &[String]) -> CorsLayer {
    let allow_origin = if origins.iter().any(|o| o.trim() == "*") {
        AllowOrigin::mirror_request()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o.trim()).ok()),
        )
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_headers(AllowHeaders::mirror_request())
        .allow_methods([Method::POST, Method::OPTIONS])
        .expose_headers([
            HeaderName::from_static("grpc-status"),
            HeaderName::from_static("grpc-message"),
            HeaderName::from_static("grpc-status-details-bin"),
        ])
        .max_age(PREFLIGHT_MAX_AGE)
}

/// Answers a request over `server.max_request_bytes` with RESOURCE_EXHAUSTED and ErrorInfo
/// (tonic itself answers OUT_OF_RANGE without details).
#[derive(Debug, Clone, Copy)]
pub struct TooLargeLayer {
    pub limit: usize,
}

impl<S> Layer<S> for TooLargeLayer {
    type Service = TooLarge<S>;
    fn layer(&self, inner: S) -> TooLarge<S> {
        TooLarge {
            inner,
            limit: self.limit,
        }
    }
}

#[derive(Debug, Clone)]
pub struct TooLarge<S> {
    inner: S,
    limit: usize,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, ReqBody> Service<http::Request<ReqBody>> for TooLarge<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let limit = self.limit;
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut res = fut.await?;
            // The status travels in the headers (trailers-only) or in the trailers.
            fix(res.headers_mut(), limit);
            Ok(res.map(|inner| Body::new(FixTrailers { inner, limit })))
        })
    }
}

/// The response body, with its trailers fixed as the headers are.
struct FixTrailers {
    inner: Body,
    limit: usize,
}

impl http_body::Body for FixTrailers {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let limit = self.limit;
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(match frame.into_trailers() {
                Ok(mut trailers) => {
                    fix(&mut trailers, limit);
                    Frame::trailers(trailers)
                }
                Err(frame) => frame,
            }))),
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Replaces tonic's OUT_OF_RANGE "message length too large" by RESOURCE_EXHAUSTED with
/// ErrorInfo naming the limit.
fn fix(h: &mut HeaderMap, limit: usize) {
    let out_of_range = h.get("grpc-status").map(HeaderValue::as_bytes) == Some(b"11");
    // grpc-message is percent-encoded (spaces as %20).
    let too_large = h.get("grpc-message").is_some_and(|m| {
        let m = m.as_bytes();
        [&b"length too large"[..], &b"length%20too%20large"[..]]
            .iter()
            .any(|needle| m.windows(needle.len()).any(|w| w == *needle))
    });
    if !(out_of_range && too_large) {
        return;
    }
    let e = Error::new(
        ErrorKind::ResourceExhausted,
        "REQUEST_TOO_LARGE",
        format!("the request is larger than this server's limit of {limit} bytes"),
    )
    .with("limit_bytes", limit.to_string());
    h.remove("grpc-message");
    h.remove("grpc-status-details-bin");
    if status(e).add_header(h).is_err() {
        tracing::warn!("could not encode the REQUEST_TOO_LARGE status");
    }
}
