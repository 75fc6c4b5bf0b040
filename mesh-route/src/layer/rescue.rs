//! Failures to Envoy's local replies: status, body, response flags; gRPC callers get a
//! trailers-only answer with `grpc-status`.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use http::{HeaderValue, Request, Response, StatusCode, header};
use mesh_core::{BoxError, body::LocalBody, ext::ResponseFlags};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::error::flags_of;

/// Turns errors from the layers below into responses.
#[derive(Clone, Copy, Debug, Default)]
pub struct RescueLayer;

impl RescueLayer {
    /// The layer.
    pub fn new() -> Self {
        Self
    }
}

impl<S> Layer<S> for RescueLayer {
    type Service = Rescue<S>;
    fn layer(&self, inner: S) -> Rescue<S> {
        Rescue { inner }
    }
}

/// See [`RescueLayer`].
#[derive(Clone, Debug)]
pub struct Rescue<S> {
    inner: S,
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for Rescue<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
    ResB: LocalBody,
{
    type Response = Response<ResB>;
    type Error = Infallible;
    type Future = RescueFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // An inner service that fails readiness is reported per request, not by tearing
        // down the caller: stay ready and let `call` fail.
        match self.inner.poll_ready(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(_) => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let grpc = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/grpc"));
        RescueFuture { inner: self.inner.call(req), grpc }
    }
}

pin_project! {
    /// Response future of [`Rescue`].
    pub struct RescueFuture<F> {
        #[pin]
        inner: F,
        grpc: bool,
    }
}

impl<F, ResB, E> Future for RescueFuture<F>
where
    F: Future<Output = Result<Response<ResB>, E>>,
    E: Into<BoxError>,
    ResB: LocalBody,
{
    type Output = Result<Response<ResB>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        Poll::Ready(Ok(match ready!(this.inner.poll(cx)) {
            Ok(rsp) => rsp,
            Err(e) => local_reply(&*e.into(), *this.grpc),
        }))
    }
}

/// Envoy's local reply for an error.
pub fn local_reply<B: LocalBody>(error: &(dyn std::error::Error + 'static), grpc: bool) -> Response<B> {
    let flags = flags_of(error);
    let (status, body): (StatusCode, &'static str) = if flags.contains(ResponseFlags::NO_ROUTE) {
        (StatusCode::NOT_FOUND, "")
    } else if flags.contains(ResponseFlags::NO_CLUSTER) {
        (StatusCode::SERVICE_UNAVAILABLE, "")
    } else if flags.contains(ResponseFlags::NO_HEALTHY_UPSTREAM) {
        (StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream")
    } else if flags.contains(ResponseFlags::UPSTREAM_OVERFLOW) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream connect error or disconnect/reset before headers. reset reason: overflow",
        )
    } else if flags.contains(ResponseFlags::UPSTREAM_REQUEST_TIMEOUT) {
        (StatusCode::GATEWAY_TIMEOUT, "upstream request timeout")
    } else if flags.contains(ResponseFlags::UPSTREAM_CONNECTION_FAILURE) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream connect error or disconnect/reset before headers. reset reason: connection failure",
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream connect error or disconnect/reset before headers. reset reason: connection termination",
        )
    };
    tracing::debug!(%flags, error = %error, "local reply");
    let mut rsp = Response::new(if grpc { B::from_static("") } else { B::from_static(body) });
    let flag_text = HeaderValue::from_str(&flags.to_string()).unwrap_or(HeaderValue::from_static("-"));
    rsp.headers_mut().insert("x-mesh-error", flag_text);
    if grpc {
        // HTTP to gRPC status, as Envoy maps it: 404 UNIMPLEMENTED, 5xx UNAVAILABLE.
        let code: u16 = if status == StatusCode::NOT_FOUND { 12 } else { 14 };
        rsp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        rsp.headers_mut().insert("grpc-status", HeaderValue::from(code));
        if !body.is_empty() {
            rsp.headers_mut().insert("grpc-message", HeaderValue::from_static(body));
        }
    } else {
        *rsp.status_mut() = status;
        if !body.is_empty() {
            rsp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        }
    }
    if flags.contains(ResponseFlags::UPSTREAM_OVERFLOW) {
        rsp.headers_mut().insert("x-envoy-overloaded", HeaderValue::from_static("true"));
    }
    ResponseFlags::add_to(rsp.extensions_mut(), flags);
    rsp
}
