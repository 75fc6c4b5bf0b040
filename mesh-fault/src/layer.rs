//! The fault layer: delay, then abort or forward.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use http::{Request, Response};
use mesh_core::{body::LocalBody, ext::ResponseFlags, reply::LocalReply, request::is_grpc};
use pin_project_lite::pin_project;
use tower::util::{Oneshot, ServiceExt};
use tower_layer::Layer;
use tower_service::Service;

use mesh_core::roll::{Roll, ThreadRoll};

use crate::policy::{AbortKind, FaultPolicy};

/// Applies a [`FaultPolicy`]: the one in the request extensions (`Arc<FaultPolicy>`, set
/// by a router for the matched route) or else the layer's fixed one.
#[derive(Clone, Debug)]
pub struct FaultLayer {
    policy: Option<Arc<FaultPolicy>>,
    rng: Arc<dyn Roll>,
}

impl FaultLayer {
    /// Always apply `policy` (unless a request carries its own).
    pub fn new(policy: FaultPolicy) -> Self {
        Self { policy: Some(Arc::new(policy)), rng: Arc::new(ThreadRoll) }
    }

    /// Apply only the per-route policy a router put in the request extensions.
    pub fn per_route() -> Self {
        Self { policy: None, rng: Arc::new(ThreadRoll) }
    }

    /// Use this random source (a seeded one in tests).
    #[must_use]
    pub fn with_rng(mut self, rng: Arc<dyn Roll>) -> Self {
        self.rng = rng;
        self
    }
}

impl<S> Layer<S> for FaultLayer {
    type Service = Fault<S>;

    fn layer(&self, inner: S) -> Fault<S> {
        Fault { inner, policy: self.policy.clone(), rng: self.rng.clone() }
    }
}

/// The fault service. Cheap to clone; the error type of `S` is unchanged (a fault is a
/// response, not an error).
#[derive(Clone, Debug)]
pub struct Fault<S> {
    inner: S,
    policy: Option<Arc<FaultPolicy>>,
    rng: Arc<dyn Roll>,
}

impl<S> Fault<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for Fault<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone,
    ResB: LocalBody,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = ResponseFuture<S, Request<ReqB>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let policy = req.extensions().get::<Arc<FaultPolicy>>().or(self.policy.as_ref());
        let (delay, abort) = match policy {
            None => (None, None),
            Some(p) => (
                p.delay.filter(|d| d.percent.roll(&*self.rng)).map(|d| d.fixed),
                p.abort.filter(|a| a.percent.roll(&*self.rng)).map(|a| a.kind),
            ),
        };
        let state = match (delay, abort) {
            (None, None) => State::Inner { fut: self.inner.call(req) },
            // The reservation `poll_ready` made stays with `self.inner` for the next call.
            (None, Some(kind)) => State::Abort { kind: Some(kind), delayed: false, grpc: is_grpc(&req) },
            // Forward through a clone after the sleep, so the delay holds no inner capacity.
            (Some(d), then) => State::Delayed {
                sleep: tokio::time::sleep(d),
                next: Some(match then {
                    Some(kind) => Next::Abort(kind, is_grpc(&req)),
                    None => Next::Forward(self.inner.clone(), req),
                }),
            },
        };
        ResponseFuture { state }
    }
}

pin_project! {
    /// Response future of [`Fault`].
    pub struct ResponseFuture<S, Req> where S: Service<Req> {
        #[pin]
        state: State<S, Req>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, Req> where S: Service<Req> {
        Inner { #[pin] fut: S::Future },
        Delayed { #[pin] sleep: tokio::time::Sleep, next: Option<Next<S, Req>> },
        Forward { #[pin] fut: Oneshot<S, Req> },
        Abort { kind: Option<AbortKind>, delayed: bool, grpc: bool },
    }
}

enum Next<S, Req> {
    Forward(S, Req),
    Abort(AbortKind, bool),
}

impl<S, ReqB, ResB> Future for ResponseFuture<S, Request<ReqB>>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: LocalBody,
{
    type Output = Result<Response<ResB>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Inner { fut } => return fut.poll(cx),
                StateProj::Forward { fut } => {
                    let mut rsp = ready!(fut.poll(cx))?;
                    ResponseFlags::add_to(rsp.extensions_mut(), ResponseFlags::DELAY_INJECTED);
                    return Poll::Ready(Ok(rsp));
                }
                StateProj::Abort { kind, delayed, grpc } => {
                    let kind = kind.take().expect("polled after ready");
                    return Poll::Ready(Ok(abort_response(kind, *delayed, *grpc)));
                }
                StateProj::Delayed { sleep, next } => {
                    ready!(sleep.poll(cx));
                    match next.take().expect("polled after ready") {
                        Next::Abort(kind, grpc) => state.set(State::Abort { kind: Some(kind), delayed: true, grpc }),
                        Next::Forward(svc, req) => state.set(State::Forward { fut: svc.oneshot(req) }),
                    }
                }
            }
        }
    }
}

/// Envoy's fault-filter answer, shaped for a gRPC caller or any other (mesh_core::reply).
fn abort_response<B: LocalBody>(kind: AbortKind, delayed: bool, grpc: bool) -> Response<B> {
    let status = match kind {
        AbortKind::Http(status) => Ok(status),
        AbortKind::Grpc(code) => Err(code),
    };
    LocalReply::fault_abort(status, delayed).into_response(grpc)
}
