//! The route timeout: covers every try, fires `RouteTimeout` (504 UT).

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use http::Request;
use mesh_core::BoxError;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use mesh_core::error::RouteTimeout;

/// The route's timeout, put in the request extensions by the router.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteTimeoutSetting(pub Duration);

/// A request's whole time limit (every try included): the [`RouteTimeoutSetting`] the
/// router put in its extensions, else the layer's own. Past it the request fails with
/// [`RouteTimeout`] (504 UT at the edge).
///
/// ```
/// # use std::{convert::Infallible, time::Duration};
/// use mesh_route::layer::TimeoutLayer;
/// use tower::{ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let svc = ServiceBuilder::new()
///     .layer(TimeoutLayer::new(Duration::from_secs(3)))
///     .service_fn(|_req: http::Request<()>| async { Ok::<_, Infallible>(http::Response::new(())) });
/// let rsp = svc.oneshot(http::Request::new(())).await.unwrap();
/// assert_eq!(rsp.status(), 200);
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct TimeoutLayer {
    fixed: Option<Duration>,
}

impl TimeoutLayer {
    /// Every request within `timeout`, unless the router set its route's.
    pub fn new(timeout: Duration) -> Self {
        Self { fixed: Some(timeout) }
    }

    /// Only what the router sets per route (under `RouterLayer`).
    pub fn per_route() -> Self {
        Self { fixed: None }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;
    fn layer(&self, inner: S) -> Timeout<S> {
        Timeout { inner, fixed: self.fixed }
    }
}

/// See [`TimeoutLayer`].
#[derive(Clone, Debug)]
pub struct Timeout<S> {
    inner: S,
    fixed: Option<Duration>,
}

impl<S, B> Service<Request<B>> for Timeout<S>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = TimeoutFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Request<B>) -> Self::Future {
        let limit = req.extensions().get::<RouteTimeoutSetting>().map(|t| t.0).or(self.fixed);
        // Boxed, and only when a route sets a timeout (Istio's default has none): the
        // timer stays out of every request's future.
        let sleep = limit.map(|d| Box::pin(tokio::time::sleep(d)));
        TimeoutFuture { inner: self.inner.call(req), sleep }
    }
}

pin_project! {
    /// Response future of [`Timeout`].
    pub struct TimeoutFuture<F> {
        #[pin]
        inner: F,
        sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    }
}

impl<F, T, E> Future for TimeoutFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(r) = this.inner.poll(cx) {
            return Poll::Ready(r.map_err(Into::into));
        }
        if let Some(sleep) = this.sleep.as_mut()
            && sleep.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Err(Box::new(RouteTimeout)));
        }
        Poll::Pending
    }
}
