//! The edge: failures from the layers below become Envoy's local replies
//! ([`mesh_core::reply::LocalReply::for_error`]: status, body, response flags; gRPC callers
//! get a trailers-only answer with `grpc-status`). The feature crates fail with typed leaf
//! errors; mesh-proxy applies this layer once per stack, below telemetry (which records the
//! reply), so every stack it builds is `Infallible`.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use http::{Request, Response};
use mesh_core::{
    BoxError,
    body::{BodyFault, LocalBody},
    reply::LocalReply,
    request::is_grpc,
};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

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
            return RescueFuture {
                state: RescueState::Failed { rsp: Some(LocalReply::for_error(&*e).into_response(grpc)) },
            };
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
                    Some(d) => LocalReply::for_error(&d),
                    None => LocalReply::for_error(&*e),
                }
                .into_response(grpc)
            }
        }))
    }
}
