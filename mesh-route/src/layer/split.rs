//! A weighted split over a set of inner services: Istio's weighted `route` destinations
//! (`reviews v1: 80, v3: 20`) as a service of its own, for use without a router.
//!
//! The choice is made in `poll_ready`, among ready backends (linkerd's
//! `distribute::random`): a backend is drawn by weight; when it is not ready, the others
//! with a weight are polled in turn, so one slow backend never holds the split up while
//! another can take the request. `call` sends to the one chosen. A clone has chosen
//! nothing: it becomes ready on its own. A weight of 0 is never chosen; a split whose
//! weights are all 0 fails readiness with [`NoWeightedBackend`], which the edge answers
//! 503 `NC` (no cluster to send to; the router answers Gateway API backendRefs that leave
//! no weight with the spec's 500 itself).
//!
//! ```
//! # use std::convert::Infallible;
//! use mesh_route::layer::Split;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let version = |name: &'static str| {
//!     service_fn(move |_req: http::Request<()>| async move { Ok::<_, Infallible>(http::Response::new(name)) })
//! };
//! let split = Split::new([(100, version("v1")), (0, version("v3"))]);
//! let rsp = ServiceBuilder::new().service(split).oneshot(http::Request::new(())).await.unwrap();
//! assert_eq!(*rsp.body(), "v1");
//! # }
//! ```

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use mesh_core::roll::{Roll, ThreadRoll};
use mesh_core::{BoxError, error::NoWeightedBackend};
use pin_project_lite::pin_project;
use tower_service::Service;

/// See the module docs.
#[derive(Debug)]
pub struct Split<S> {
    backends: Vec<(u32, S)>,
    total: u64,
    rng: Arc<dyn Roll>,
    /// The backend `poll_ready` chose, which `call` uses.
    ready: Option<usize>,
}

impl<S: Clone> Clone for Split<S> {
    fn clone(&self) -> Self {
        // A clone has not been polled: it chooses (and waits for readiness) on its own.
        Self { backends: self.backends.clone(), total: self.total, rng: self.rng.clone(), ready: None }
    }
}

impl<S> Split<S> {
    /// Backends with their weights (any scale: `80` and `20`, or `4` and `1`).
    pub fn new(backends: impl IntoIterator<Item = (u32, S)>) -> Self {
        let backends: Vec<_> = backends.into_iter().collect();
        let total = backends.iter().map(|(w, _)| u64::from(*w)).sum();
        Self { backends, total, rng: Arc::new(ThreadRoll), ready: None }
    }

    /// The random source (seeded in tests).
    #[must_use]
    pub fn with_rng(mut self, rng: Arc<dyn Roll>) -> Self {
        self.rng = rng;
        self
    }

    /// The backend a draw of `roll` in `[0, 100)` lands on, by weight.
    fn draw(&self, roll: f64) -> usize {
        // A roll is in [0, 100); past the weights only by rounding at the top.
        crate::policy::weights::pick(self.backends.iter().map(|(w, _)| *w), self.total, roll / 100.0)
            .unwrap_or(self.backends.len() - 1)
    }
}

impl<S, Req> Service<Req> for Split<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = SplitFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if let Some(i) = self.ready {
            // Chosen and ready; readiness is kept until `call` (tower's contract).
            return self.backends[i].1.poll_ready(cx).map_err(Into::into);
        }
        if self.total == 0 {
            return Poll::Ready(Err(NoWeightedBackend.into()));
        }
        let first = self.draw(self.rng.roll());
        let n = self.backends.len();
        // The drawn one first, then the others with a weight, in order.
        for k in 0..n {
            let i = (first + k) % n;
            let (w, svc) = &mut self.backends[i];
            if *w == 0 {
                continue;
            }
            match svc.poll_ready(cx) {
                Poll::Ready(Ok(())) => {
                    self.ready = Some(i);
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                Poll::Pending => {}
            }
        }
        // Every weighted backend was polled and registered this task's waker.
        Poll::Pending
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let i = self.ready.take().expect("Split::call before poll_ready returned Ready");
        SplitFuture { inner: self.backends[i].1.call(req) }
    }
}

pin_project! {
    /// Response future of [`Split`]: the chosen backend's, its error boxed.
    #[derive(Debug)]
    pub struct SplitFuture<F> {
        #[pin]
        inner: F,
    }
}

impl<F, T, E> Future for SplitFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx).map_err(Into::into)
    }
}

#[cfg(test)]
mod tests {
    use http::{Request, Response};
    use mesh_core::roll::SeededRoll;
    use proptest::prelude::*;
    use tokio_test::{assert_pending, assert_ready_ok, task};
    use tower::ServiceExt;
    use tower_test::mock;

    use super::*;

    type Mock = mock::Mock<Request<()>, Response<&'static str>>;
    type Handle = mock::Handle<Request<()>, Response<&'static str>>;

    fn backends(weights: &[u32]) -> (Vec<(u32, Mock)>, Vec<Handle>) {
        weights
            .iter()
            .map(|w| {
                let (s, h) = mock::pair();
                ((*w, s), h)
            })
            .unzip()
    }

    #[tokio::test]
    async fn weights_share_the_requests_and_zero_is_never_chosen() {
        let seen = Arc::new(std::sync::Mutex::new([0usize; 3]));
        let mk = |name: usize| {
            let seen = seen.clone();
            tower::service_fn(move |_req: Request<()>| {
                seen.lock().unwrap()[name] += 1;
                async { Ok::<_, std::convert::Infallible>(Response::new("")) }
            })
        };
        let split = Split::new([(80, mk(0)), (20, mk(1)), (0, mk(2))]).with_rng(Arc::new(SeededRoll::new(7)));
        for _ in 0..10_000 {
            split.clone().with_rng(split.rng.clone()).oneshot(Request::new(())).await.unwrap();
        }
        let [a, b, c] = *seen.lock().unwrap();
        assert_eq!(c, 0);
        assert!((7_700..=8_300).contains(&a) && a + b == 10_000, "{a} / {b}");
    }

    #[tokio::test]
    async fn an_unready_backend_is_passed_over_and_a_clone_chooses_again() {
        let (bs, mut handles) = backends(&[1, 1]);
        let mut split = task::spawn(Split::new(bs).with_rng(Arc::new(SeededRoll::new(1))));
        handles[0].allow(0);
        handles[1].allow(0);
        assert_pending!(split.enter(|cx, mut s| s.as_mut().poll_ready(cx)));
        // One becomes ready: the split is ready with it, whichever was drawn.
        handles[1].allow(1);
        assert!(split.is_woken());
        assert_ready_ok!(split.enter(|cx, mut s| s.as_mut().poll_ready(cx)));
        let clone = split.clone();
        assert!(clone.ready.is_none());
        let fut = split.call(Request::new(()));
        let (_req, send) = handles[1].next_request().await.unwrap();
        send.send_response(Response::new("v2"));
        assert_eq!(*fut.await.unwrap().body(), "v2");
    }

    #[tokio::test]
    async fn all_weights_zero_is_an_error() {
        let (bs, _handles) = backends(&[0, 0]);
        let err = Split::new(bs).oneshot(Request::new(())).await.unwrap_err();
        assert!(err.is::<NoWeightedBackend>(), "{err}");
    }

    proptest! {
        /// The draw matches a model: the backend whose cumulative weight first exceeds
        /// the point, and never a zero weight.
        #[test]
        fn the_draw_follows_cumulative_weights(weights in prop::collection::vec(0u32..50, 1..6), roll in 0.0f64..100.0) {
            let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
            prop_assume!(total > 0);
            let split = Split::new(weights.iter().map(|w| (*w, ())));
            let i = split.draw(roll);
            prop_assert!(weights[i] > 0);
            let point = (((roll / 100.0) * total as f64) as u64).min(total - 1);
            let before: u64 = weights[..i].iter().map(|w| u64::from(*w)).sum();
            prop_assert!(before <= point && point < before + u64::from(weights[i]));
        }
    }
}
