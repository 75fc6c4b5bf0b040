//! Retries: Istio's `retries` (or its default), each try bounded by the per-try timeout,
//! bodies replayed up to a cap, concurrent retries per cluster limited as its
//! DestinationRule says (`maxRetries`, `retryBudget`; unlimited by default, as Istio), and
//! another endpoint preferred for each retry.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{
        Arc, RwLock,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use mesh_core::{
    BoxError, cause_ref,
    ext::{ResponseFlags, UpstreamHost},
    is_caused_by,
};
use mesh_fault::{Roll, ThreadRoll};
use pin_project_lite::pin_project;
use tower::ServiceExt;
use tower_layer::Layer;
use tower_service::Service;

use super::balance::TriedHosts;
use crate::{
    error::{ConnectFailure, EndpointError, PerTryTimeout, RetriesExhausted},
    policy::retry::{RetryPolicy, TryFailure},
    policy::{Target, cluster::RetryBudgetLimit},
};

/// Request bodies larger than this are not retried (Istio's default cap is 64 KiB).
pub const DEFAULT_MAX_REPLAY_BYTES: u64 = 64 * 1024;

/// Retries as the route's `Arc<RetryPolicy>` (in the request extensions) says, else as the
/// layer's own policy.
///
/// ```
/// # use std::{convert::Infallible, sync::{Arc, atomic::{AtomicUsize, Ordering}}};
/// use mesh_route::{layer::RetryLayer, policy::retry::{RetryOn, RetryPolicy}};
/// use tower::{ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let policy = RetryPolicy { retry_on: RetryOn::parse("5xx"), ..RetryPolicy::istio_default() };
/// let calls = Arc::new(AtomicUsize::new(0));
/// let seen = calls.clone();
/// let svc = ServiceBuilder::new().layer(RetryLayer::new(policy)).service_fn(move |_req: http::Request<_>| {
///     // The first try fails with 503, the second succeeds.
///     let n = seen.fetch_add(1, Ordering::Relaxed);
///     async move {
///         let mut rsp = http::Response::new(());
///         *rsp.status_mut() = if n == 0 { http::StatusCode::SERVICE_UNAVAILABLE } else { http::StatusCode::OK };
///         Ok::<_, Infallible>(rsp)
///     }
/// });
/// let req = http::Request::new(http_body_util::Empty::<bytes::Bytes>::new());
/// assert_eq!(svc.oneshot(req).await.unwrap().status(), 200);
/// assert_eq!(calls.load(Ordering::Relaxed), 2);
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct RetryLayer {
    /// The policy of requests that carry none (a layer used alone).
    fixed: Option<Arc<RetryPolicy>>,
    rng: Arc<dyn Roll>,
    max_replay: u64,
    /// A budget for clusters whose DestinationRule sets none (none by default).
    budget: Option<RetryBudgetLimit>,
    /// Retries in flight and requests in flight per cluster, for `maxRetries` and
    /// `retryBudget`.
    clusters: Arc<RwLock<HashMap<Arc<str>, Arc<Budget>>>>,
    on_retry: Option<mesh_core::ext::Hook>,
}

impl Default for RetryLayer {
    fn default() -> Self {
        Self::per_route()
    }
}

impl RetryLayer {
    /// Every request retried as `policy` says, unless the router set its route's.
    pub fn new(policy: RetryPolicy) -> Self {
        Self { fixed: Some(Arc::new(policy)), ..Self::per_route() }
    }

    /// Only the policy the router sets per route (under `RouterLayer`). Default replay
    /// cap, and concurrent retries limited only where the cluster's DestinationRule says so
    /// (`connectionPool.http.maxRetries`, `retryBudget`), as Istio configures Envoy:
    /// unlimited otherwise.
    pub fn per_route() -> Self {
        Self {
            fixed: None,
            rng: Arc::new(ThreadRoll),
            max_replay: DEFAULT_MAX_REPLAY_BYTES,
            budget: None,
            clusters: Arc::default(),
            on_retry: None,
        }
    }

    /// Called for every retry sent (telemetry counts them).
    #[must_use]
    pub fn with_on_retry(mut self, hook: mesh_core::ext::Hook) -> Self {
        self.on_retry = Some(hook);
        self
    }

    /// Largest request body that is buffered for replay.
    #[must_use]
    pub fn with_max_replay_bytes(mut self, bytes: u64) -> Self {
        self.max_replay = bytes;
        self
    }

    /// For clusters whose DestinationRule sets no limit: retries in flight may be
    /// `percent` of requests in flight, and at least `min`.
    #[must_use]
    pub fn with_budget(mut self, percent: usize, min: usize) -> Self {
        self.budget = Some(RetryBudgetLimit { percent: percent as f64, min_concurrency: min as u32 });
        self
    }

    /// The limit in force for the request's cluster, with its retry state; none when
    /// retries are unlimited (Istio's default), so the usual request takes no lock here.
    fn budget_for<B>(&self, req: &Request<B>) -> Option<(Arc<Budget>, Limit)> {
        let (name, limit) = match req.extensions().get::<Target>() {
            Some(Target::Cluster(c)) => match (c.pool.retry_budget.or(self.budget), c.pool.max_retries) {
                (Some(b), _) => (c.name.clone(), Limit::Budget(b)),
                (None, Some(n)) => (c.name.clone(), Limit::Max(n as usize)),
                (None, None) => return None,
            },
            // No cluster (a layer used alone): the layer's own budget, if any.
            _ => (Arc::from(""), Limit::Budget(self.budget?)),
        };
        if let Some(b) = self.clusters.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(&name) {
            return Some((b.clone(), limit));
        }
        let mut clusters = self.clusters.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        Some((clusters.entry(name).or_default().clone(), limit))
    }

    /// Random source for backoff jitter.
    #[must_use]
    pub fn with_rng(mut self, rng: Arc<dyn Roll>) -> Self {
        self.rng = rng;
        self
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;
    fn layer(&self, inner: S) -> Retry<S> {
        Retry { inner, layer: self.clone() }
    }
}

/// See [`RetryLayer`].
#[derive(Clone, Debug)]
pub struct Retry<S> {
    inner: S,
    layer: RetryLayer,
}

/// How many retries of a cluster may be in flight at once.
#[derive(Clone, Copy, Debug)]
enum Limit {
    /// `maxRetries`.
    Max(usize),
    /// `retryBudget`.
    Budget(RetryBudgetLimit),
}

/// A cluster's requests and retries in flight (those that went through the retry loop).
#[derive(Debug, Default)]
pub(crate) struct Budget {
    active: AtomicUsize,
    retrying: AtomicUsize,
}

impl Budget {
    fn try_retry(self: &Arc<Self>, limit: Limit) -> Option<BudgetGuard> {
        let allowed = match limit {
            Limit::Max(n) => n,
            Limit::Budget(b) => b.allowed(self.active.load(Ordering::Relaxed)),
        };
        let prev = self.retrying.fetch_add(1, Ordering::AcqRel);
        if prev >= allowed {
            self.retrying.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(BudgetGuard(self.clone()))
    }
}

struct BudgetGuard(Arc<Budget>);

impl Drop for BudgetGuard {
    fn drop(&mut self) {
        self.0.retrying.fetch_sub(1, Ordering::AcqRel);
    }
}

struct Active(Arc<Budget>);

impl Active {
    fn new(b: &Arc<Budget>) -> Self {
        b.active.fetch_add(1, Ordering::AcqRel);
        Self(b.clone())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

pin_project! {
    /// The request body below the retry layer: buffered (replayable) or passed through.
    pub struct RetryBody<B> {
        #[pin]
        inner: BodyInner<B>,
    }
}

pin_project! {
    #[project = BodyInnerProj]
    enum BodyInner<B> {
        Buffered { #[pin] body: Full<Bytes> },
        Passthrough { #[pin] body: B },
    }
}

impl<B> RetryBody<B> {
    /// A replayable copy of buffered bytes.
    pub fn buffered(bytes: Bytes) -> Self {
        Self { inner: BodyInner::Buffered { body: Full::new(bytes) } }
    }

    /// The original body, not replayable.
    pub fn passthrough(body: B) -> Self {
        Self { inner: BodyInner::Passthrough { body } }
    }
}

impl<B> Body for RetryBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().inner.project() {
            BodyInnerProj::Buffered { body } => body.poll_frame(cx).map_err(|never| match never {}),
            BodyInnerProj::Passthrough { body } => body.poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            BodyInner::Buffered { body } => body.is_end_stream(),
            BodyInner::Passthrough { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            BodyInner::Buffered { body } => body.size_hint(),
            BodyInner::Passthrough { body } => body.size_hint(),
        }
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, ResB> Service<Request<B>> for Retry<S>
where
    S: Service<Request<RetryBody<B>>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    ResB: Send + 'static,
{
    type Response = Response<ResB>;
    type Error = BoxError;
    type Future = RetryFuture<S::Future, Response<ResB>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let policy = req.extensions().get::<Arc<RetryPolicy>>().cloned().or_else(|| self.layer.fixed.clone());
        let replayable = req.body().size_hint().upper().is_some_and(|n| n <= self.layer.max_replay);
        let Some(policy) = policy.filter(|_| replayable) else {
            // Fast path: no retries; the reservation made in `poll_ready` is used.
            return RetryFuture { inner: FutureInner::Fast { fut: self.inner.call(req.map(RetryBody::passthrough)) } };
        };
        // Slow path (boxed): the ready service moves into the future for the first try;
        // later tries wait for readiness of a clone.
        let clone = self.inner.clone();
        let svc = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        RetryFuture { inner: FutureInner::Slow { fut: Box::pin(retry_loop(svc, req, policy, layer)) } }
    }
}

async fn retry_loop<S, B, ResB>(
    mut svc: S,
    req: Request<B>,
    policy: Arc<RetryPolicy>,
    layer: RetryLayer,
) -> Result<Response<ResB>, BoxError>
where
    S: Service<Request<RetryBody<B>>, Response = Response<ResB>> + Clone,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let budget = layer.budget_for(&req);
    let _active = budget.as_ref().map(|(b, _)| Active::new(b));
    let (parts, body) = req.into_parts();
    let bytes = body.collect().await.map_err(Into::into)?.to_bytes();
    let mut tried: Vec<std::net::SocketAddr> = Vec::new();
    let mut n = 0;
    // Held while a retry is in flight; the budget counts it until its result is known.
    let mut _retrying: Option<Option<BudgetGuard>> = None;
    loop {
        let mut attempt = Request::new(RetryBody::buffered(bytes.clone()));
        *attempt.method_mut() = parts.method.clone();
        *attempt.uri_mut() = parts.uri.clone();
        *attempt.version_mut() = parts.version;
        *attempt.headers_mut() = parts.headers.clone();
        *attempt.extensions_mut() = parts.extensions.clone();
        if policy.retry_other_host && !tried.is_empty() {
            attempt.extensions_mut().insert(TriedHosts(tried.clone()));
        }
        let ready = if n == 0 { &mut svc } else { svc.ready().await.map_err(Into::into)? };
        let fut = ready.call(attempt);
        let result: Result<Response<ResB>, BoxError> = match policy.per_try_timeout {
            Some(t) => match tokio::time::timeout(t, fut).await {
                Ok(r) => r.map_err(Into::into),
                Err(_) => Err(Box::new(PerTryTimeout)),
            },
            None => fut.await.map_err(Into::into),
        };
        let last_try = n >= policy.attempts;
        let retriable = match &result {
            Ok(rsp) => {
                let grpc = rsp.headers().get("grpc-status").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
                policy.retry_on.on_response(rsp.status().as_u16(), grpc)
                    || policy.retry_on.on_headers(rsp.headers(), &parts.headers)
            }
            Err(e) => classify(&**e).is_some_and(|f| policy.retry_on.on_failure(f)),
        };
        if !retriable {
            return result;
        }
        let guard = match &budget {
            _ if last_try => None,
            Some((b, limit)) => b.try_retry(*limit).map(Some),
            // Unlimited: nothing to count.
            None => Some(None),
        };
        if guard.is_none() {
            // Out of retries (or of budget): the last upstream answer goes to the client.
            return match result {
                Ok(mut rsp) => {
                    if n > 0 {
                        ResponseFlags::add_to(rsp.extensions_mut(), ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED);
                    }
                    Ok(rsp)
                }
                Err(e) if n > 0 => Err(Box::new(RetriesExhausted { source: e })),
                Err(e) => Err(e),
            };
        }
        match &result {
            Ok(rsp) => tried.extend(rsp.extensions().get::<UpstreamHost>().map(|h| h.0)),
            Err(e) => tried.extend(cause_ref::<EndpointError>(&**e).map(|e| e.address)),
        }
        drop(result);
        n += 1;
        _retrying = guard;
        if let Some(hook) = &layer.on_retry {
            hook.call("retry");
        }
        tokio::time::sleep(policy.backoff(n, layer.rng.roll() / 100.0)).await;
    }
}

/// How a try failed without a response, if it is a kind retries apply to.
fn classify(e: &(dyn std::error::Error + 'static)) -> Option<TryFailure> {
    if is_caused_by::<PerTryTimeout>(e) {
        Some(TryFailure::PerTryTimeout)
    } else if is_caused_by::<ConnectFailure>(e) {
        Some(TryFailure::ConnectFailure)
    } else if cause_ref::<h2::Error>(e).and_then(h2::Error::reason) == Some(h2::Reason::REFUSED_STREAM) {
        Some(TryFailure::RefusedStream)
    } else if is_caused_by::<EndpointError>(e) {
        // A failure on the wire after the request was sent: disconnect or reset.
        Some(TryFailure::Reset)
    } else {
        // Local decisions (no cluster, no healthy upstream, overflow) are not retried.
        None
    }
}

pin_project! {
    /// Response future of [`Retry`]: the inner future when the request has no retry
    /// policy, a boxed retry loop otherwise.
    pub struct RetryFuture<F, T> {
        #[pin]
        inner: FutureInner<F, T>,
    }
}

pin_project! {
    #[project = FutureInnerProj]
    enum FutureInner<F, T> {
        Fast { #[pin] fut: F },
        Slow { fut: BoxFuture<Result<T, BoxError>> },
    }
}

impl<F, T, E> Future for RetryFuture<F, T>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().inner.project() {
            FutureInnerProj::Fast { fut } => fut.poll(cx).map_err(Into::into),
            FutureInnerProj::Slow { fut } => fut.as_mut().poll(cx),
        }
    }
}
