//! Request tracking: what the service side tells the connection's timers (a request open
//! until its response body ends; upgrades).

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, atomic::Ordering},
    task::{Context, Poll},
};

use http::{Request, Response, StatusCode};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use mesh_core::BoxBody;
use tokio::time::Instant;

use super::ConnState;

/// One open request; dropped with its response body (or its future).
#[derive(Debug)]
pub(super) struct InFlight(Arc<ConnState>);

impl InFlight {
    /// The request's ordinal on the connection, and its guard.
    pub(super) fn begin(conn: &Arc<ConnState>) -> (u64, Self) {
        let ordinal = conn.heads.fetch_add(1, Ordering::Relaxed);
        conn.in_flight.fetch_add(1, Ordering::Relaxed);
        (ordinal, Self(conn.clone()))
    }
}

/// A request extension: the head had both `Content-Length` and `Transfer-Encoding`, which
/// hyper reads as chunked and hides; the edge answers 400 (crate::guard).
#[derive(Clone, Copy, Debug)]
pub(crate) struct AmbiguousLength;

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            *self.0.idle_since.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Instant::now();
            self.0.reader.wake();
        }
    }
}

/// The service wrapper that tells the timers when requests begin and end.
#[derive(Clone, Debug)]
pub(super) struct Track<S> {
    pub(super) inner: S,
    pub(super) conn: Arc<ConnState>,
}

impl<S> tower::Service<Request<Incoming>> for Track<S>
where
    S: tower::Service<Request<Incoming>, Response = Response<BoxBody>>,
{
    type Response = Response<Tracked<BoxBody>>;
    type Error = S::Error;
    type Future = TrackFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Incoming>) -> Self::Future {
        let (ordinal, open) = InFlight::begin(&self.conn);
        if self.conn.ambiguous.load(Ordering::Relaxed) == ordinal + 1 {
            req.extensions_mut().insert(AmbiguousLength);
        }
        TrackFuture { inner: self.inner.call(req), open: Some(open) }
    }
}

pin_project_lite::pin_project! {
    /// [`Track`]'s response future: the request stays open in the response body.
    #[derive(Debug)]
    pub(super) struct TrackFuture<F> {
        #[pin]
        inner: F,
        open: Option<InFlight>,
    }
}

impl<F, E> Future for TrackFuture<F>
where
    F: Future<Output = Result<Response<BoxBody>, E>>,
{
    type Output = Result<Response<Tracked<BoxBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let me = self.project();
        let res = std::task::ready!(me.inner.poll(cx));
        let open = me.open.take();
        Poll::Ready(res.map(|r| {
            if r.status() == StatusCode::SWITCHING_PROTOCOLS
                && let Some(o) = &open
            {
                o.0.upgraded.store(true, Ordering::Relaxed);
            }
            r.map(|body| Tracked { body, _open: open })
        }))
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request open until it is dropped.
    #[derive(Debug)]
    pub(super) struct Tracked<B> {
        #[pin]
        body: B,
        _open: Option<InFlight>,
    }
}

impl<B: Body> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
