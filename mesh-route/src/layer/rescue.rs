//! Failures to Envoy's local replies: status, body, response flags; gRPC callers get a
//! trailers-only answer with `grpc-status`.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use http::{HeaderValue, Request, Response, StatusCode, header};
use mesh_core::{
    BoxError,
    body::{BodyFault, DownstreamError, LocalBody},
    cause_ref,
    ext::ResponseFlags,
};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use mesh_core::request::is_grpc;

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
        Rescue { inner, not_ready: None }
    }
}

/// See [`RescueLayer`].
#[derive(Debug)]
pub struct Rescue<S> {
    inner: S,
    /// Why the inner service failed readiness: the next `call` answers it without calling
    /// the inner service (which is not ready).
    not_ready: Option<BoxError>,
}

impl<S: Clone> Clone for Rescue<S> {
    fn clone(&self) -> Self {
        // A clone has not been polled: it learns its own readiness.
        Self { inner: self.inner.clone(), not_ready: None }
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for Rescue<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
    ResB: LocalBody,
{
    type Response = Response<ResB>;
    type Error = Infallible;
    type Future = RescueFuture<S::Future, ResB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // An inner service that fails readiness is reported per request, not by tearing
        // down the caller: stay ready, and answer the next request with the failure.
        if self.not_ready.is_some() {
            return Poll::Ready(Ok(()));
        }
        match self.inner.poll_ready(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Ready(Err(e)) => {
                self.not_ready = Some(e.into());
                Poll::Ready(Ok(()))
            }
        }
    }

    #[inline]
    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let grpc = is_grpc(&req);
        if let Some(e) = self.not_ready.take() {
            return RescueFuture { state: RescueState::Failed { rsp: Some(local_reply(&*e, grpc)) } };
        }
        let fault = req.extensions().get::<BodyFault>().cloned();
        RescueFuture { state: RescueState::Inner { inner: self.inner.call(req), grpc, fault } }
    }
}

pin_project! {
    /// Response future of [`Rescue`].
    pub struct RescueFuture<F, B> {
        #[pin]
        state: RescueState<F, B>,
    }
}

pin_project! {
    #[project = RescueProj]
    enum RescueState<F, B> {
        Inner { #[pin] inner: F, grpc: bool, fault: Option<BodyFault> },
        Failed { rsp: Option<Response<B>> },
    }
}

impl<F, ResB, E> Future for RescueFuture<F, ResB>
where
    F: Future<Output = Result<Response<ResB>, E>>,
    E: Into<BoxError>,
    ResB: LocalBody,
{
    type Output = Result<Response<ResB>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (inner, grpc, fault) = match self.project().state.project() {
            RescueProj::Failed { rsp } => return Poll::Ready(Ok(rsp.take().expect("polled after ready"))),
            RescueProj::Inner { inner, grpc, fault } => (inner, *grpc, fault),
        };
        Poll::Ready(Ok(match ready!(inner.poll(cx)) {
            Ok(rsp) => rsp,
            Err(e) => {
                let e = e.into();
                // The client's own fault comes first, whatever the layers below made of it.
                match BodyFault::of(fault.as_ref(), &*e) {
                    Some(d) => local_reply(&d, grpc),
                    None => local_reply(&*e, grpc),
                }
            }
        }))
    }
}

/// Envoy's local reply for an error.
pub fn local_reply<B: LocalBody>(error: &(dyn std::error::Error + 'static), grpc: bool) -> Response<B> {
    let flags = flags_of(error);
    let (status, body): (StatusCode, &'static str) = if let Some(d) = cause_ref::<DownstreamError>(error) {
        match d {
            DownstreamError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload too large"),
            DownstreamError::Protocol | DownstreamError::Disconnected => {
                (StatusCode::BAD_REQUEST, "bad request: malformed request body")
            }
        }
    } else if flags.contains(ResponseFlags::NO_ROUTE) {
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
    if !flags.is_empty() {
        let flag_text = HeaderValue::from_str(&flags.to_string()).unwrap_or(HeaderValue::from_static("-"));
        rsp.headers_mut().insert("x-mesh-error", flag_text);
    }
    if grpc {
        // HTTP to gRPC status, as Envoy maps it: 404 UNIMPLEMENTED, 5xx UNAVAILABLE.
        // (A client's malformed body is INTERNAL, an oversized one RESOURCE_EXHAUSTED.)
        let code: u16 = match status {
            StatusCode::NOT_FOUND => 12,
            StatusCode::BAD_REQUEST => 13,
            StatusCode::PAYLOAD_TOO_LARGE => 8,
            _ => 14,
        };
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
