//! The edge of every listener: what hyper's parser lets through but a proxy must not
//! forward. Requests the next hop could read another way and bodies over the limit get a
//! clear 4xx here, before any policy runs.
//!
//! hyper itself answers 400 to malformed heads, conflicting `Content-Length`s and unknown
//! transfer codings, and 431 to heads over the limit. A request with both
//! `Content-Length` and `Transfer-Encoding: chunked` is read as chunked, forwarded without
//! the `Content-Length` and its connection closed after the response (RFC 9112 §6.1), so
//! nothing smuggled behind it is served; Envoy answers 400 instead.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use mesh_core::{BoxBody, BoxError};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

/// Adds [`Guard`] with a request body limit (`0`: none).
#[derive(Clone, Copy, Debug)]
pub(crate) struct GuardLayer {
    pub(crate) max_body: u64,
}

impl<S> Layer<S> for GuardLayer {
    type Service = Guard<S>;
    fn layer(&self, inner: S) -> Guard<S> {
        Guard { inner, max_body: self.max_body }
    }
}

/// See the module docs.
#[derive(Clone, Debug)]
pub(crate) struct Guard<S> {
    inner: S,
    max_body: u64,
}

/// Why a request was refused at the edge.
fn refuse(status: StatusCode, why: &'static str) -> Response<BoxBody> {
    let mut rsp = Response::new(mesh_core::body::full(Bytes::from_static(why.as_bytes())));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    rsp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    rsp
}

/// The reason to refuse a request, if any.
fn check(req: &Request<Incoming>, max_body: u64) -> Option<Response<BoxBody>> {
    let h = req.headers();
    if h.get_all(header::HOST).iter().nth(1).is_some() {
        return Some(refuse(StatusCode::BAD_REQUEST, "bad request: more than one Host header\n"));
    }
    let length = h.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if max_body > 0 && length.is_some_and(|n| n > max_body) {
        return Some(refuse(StatusCode::PAYLOAD_TOO_LARGE, "payload too large\n"));
    }
    None
}

impl<S> Service<Request<Incoming>> for Guard<S>
where
    S: Service<Request<BoxBody>, Response = Response<BoxBody>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<BoxBody>;
    type Error = BoxError;
    type Future = GuardFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        if let Some(rsp) = check(&req, self.max_body) {
            return GuardFuture::Refused { rsp: Some(rsp) };
        }
        let max = self.max_body;
        // A body that streams past the limit fails the request (the upstream sees a reset).
        let req = if max == 0 {
            req.map(mesh_core::body::boxed)
        } else {
            req.map(|b| {
                mesh_core::body::boxed(
                    Limited::new(b, usize::try_from(max).unwrap_or(usize::MAX))
                        .map_err(|e: BoxError| -> BoxError { e }),
                )
            })
        };
        GuardFuture::Inner { fut: self.inner.call(req) }
    }
}

pin_project! {
    /// Response future of [`Guard`].
    #[project = GuardProj]
    pub(crate) enum GuardFuture<F> {
        /// Answered at the edge.
        Refused { rsp: Option<Response<BoxBody>> },
        /// Passed on.
        Inner { #[pin] fut: F },
    }
}

impl<F, E> Future for GuardFuture<F>
where
    F: Future<Output = Result<Response<BoxBody>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<BoxBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            GuardProj::Refused { rsp } => Poll::Ready(Ok(rsp.take().expect("polled after completion"))),
            GuardProj::Inner { fut } => fut.poll(cx).map_err(Into::into),
        }
    }
}
