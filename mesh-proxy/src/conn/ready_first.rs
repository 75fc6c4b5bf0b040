//! Handing each request to the connection's own service when it is ready at once.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use mesh_core::BoxError;

/// A tower service as hyper's: each request goes to the connection's own service when it
/// is ready at once (every stack of the mesh is: its layers forward readiness to a pooled
/// client that always is), so the stack is not cloned per request, as hyper-util's
/// `TowerToHyperService` does; a service that is not ready gets the request through a
/// clone that waits for readiness (`oneshot`), as there.
///
/// The invariant, asserted by `the_mesh_stacks_are_ready_at_once`: the connection's own
/// service is polled with a no-op waker, so a service that can be pending (a buffer, a
/// concurrency limit) keeps what that poll reserved (a queued permit) parked until the
/// connection's next request polls it again. The mesh's stacks are never pending; an
/// embedded app that is gets correct answers through the clone, at that cost.
pub(super) struct ReadyFirst<S> {
    svc: std::cell::RefCell<S>,
}

impl<S> ReadyFirst<S> {
    pub(super) fn new(svc: S) -> Self {
        Self { svc: std::cell::RefCell::new(svc) }
    }
}

impl<S, R> hyper::service::Service<R> for ReadyFirst<S>
where
    S: tower::Service<R> + Clone,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ReadyFirstFuture<S, R>;

    fn call(&self, req: R) -> Self::Future {
        use tower::ServiceExt;
        // hyper calls from the connection's task, one call at a time: never re-entered.
        let mut svc = self.svc.borrow_mut();
        let state = match svc.poll_ready(&mut Context::from_waker(std::task::Waker::noop())) {
            Poll::Ready(Ok(())) => ReadyFirstState::Called { fut: svc.call(req) },
            Poll::Ready(Err(e)) => ReadyFirstState::Failed { error: Some(e.into()) },
            Poll::Pending => ReadyFirstState::Waiting { fut: svc.clone().oneshot(req) },
        };
        ReadyFirstFuture { state }
    }
}

pin_project_lite::pin_project! {
    /// [`ReadyFirst`]'s response future.
    pub(super) struct ReadyFirstFuture<S, R> where S: tower::Service<R> {
        #[pin]
        state: ReadyFirstState<S, R>,
    }
}

pin_project_lite::pin_project! {
    #[project = ReadyFirstProj]
    pub(super) enum ReadyFirstState<S, R> where S: tower::Service<R> {
        Called { #[pin] fut: S::Future },
        Waiting { #[pin] fut: tower::util::Oneshot<S, R> },
        Failed { error: Option<BoxError> },
    }
}

impl<S, R> Future for ReadyFirstFuture<S, R>
where
    S: tower::Service<R>,
    S::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            ReadyFirstProj::Called { fut } => fut.poll(cx).map_err(Into::into),
            ReadyFirstProj::Waiting { fut } => fut.poll(cx).map_err(Into::into),
            ReadyFirstProj::Failed { error } => Poll::Ready(Err(error.take().expect("polled after completion"))),
        }
    }
}
