//! Retries: Istio's `retries` (or its default), each try bounded by the per-try timeout,
//! bodies replayed up to a cap, concurrent retries per cluster limited as its
//! DestinationRule says (`maxRetries`, `retryBudget`; unlimited by default, as Istio), and
//! another endpoint preferred for each retry.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, RwLock},
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use mesh_core::roll::{Roll, ThreadRoll};
use mesh_core::{
    BoxError, cause_ref,
    ext::{ResponseFlags, UpstreamEndpoint},
    is_caused_by,
};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::balance::TriedHosts;
use crate::{
    policy::retry::{RetryPolicy, TryFailure},
    policy::{Target, cluster::RetryBudgetLimit},
};
use mesh_core::error::{ConnectFailure, EndpointError, PerTryTimeout, RetriesExhausted};

mod body;
mod budget;

pub use body::RetryBody;
use body::{BodyInner, ReplayBody};
pub(crate) use budget::Budget;
use budget::{ActiveRequest, BudgetGuard, Limit};

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
    clusters: Arc<RwLock<mesh_core::hash::FxHashMap<Arc<str>, Arc<Budget>>>>,
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

impl<S, B, ResB> Service<Request<B>> for Retry<S>
where
    S: Service<Request<RetryBody<B>>, Response = Response<ResB>> + Clone,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Response = Response<ResB>;
    type Error = BoxError;
    type Future = RetryFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        // Only this layer reads the route's policy: take it rather than clone it.
        let policy = req.extensions_mut().remove::<Arc<RetryPolicy>>().or_else(|| self.layer.fixed.clone());
        // A body known to be larger than the cap is never replayed: sent as it is.
        let too_large = req.body().size_hint().lower() > self.layer.max_replay;
        let Some(policy) = policy.filter(|p| p.attempts > 0 && !too_large) else {
            // No retries: the request goes through as it came.
            let fut = self.inner.call(req.map(RetryBody::passthrough));
            return RetryFuture { state: State::Attempt { fut, deadline: None }, retry: None };
        };
        // What a later try needs: the head and a replay of the body. The ready service
        // takes the first try; a clone waits for readiness for the next.
        let budget = self.layer.budget_for(&req);
        let active = budget.as_ref().map(|(b, _)| ActiveRequest::new(b));
        let (parts, body) = req.into_parts();
        let mut head = Request::new(());
        *head.method_mut() = parts.method.clone();
        *head.uri_mut() = parts.uri.clone();
        *head.version_mut() = parts.version;
        *head.headers_mut() = parts.headers.clone();
        *head.extensions_mut() = parts.extensions.clone();
        let (first, replay) = if body.is_end_stream() {
            (RetryBody::empty(), None)
        } else {
            let first = ReplayBody::new(body, self.layer.max_replay);
            let replay = Some(first.handle());
            (RetryBody { inner: BodyInner::Replay(first) }, replay)
        };
        let deadline = policy.per_try_timeout.map(|t| Box::pin(tokio::time::sleep(t)));
        let fut = self.inner.call(Request::from_parts(parts, first));
        let retry = Tries {
            svc: self.inner.clone(),
            head,
            replay,
            policy,
            rng: self.layer.rng.clone(),
            on_retry: self.layer.on_retry.clone(),
            budget,
            _active: active,
            retrying: None,
            tried: Vec::new(),
            n: 0,
        };
        RetryFuture { state: State::Attempt { fut, deadline }, retry: Some(retry) }
    }
}

/// What the retry future keeps between tries.
struct Tries<S, B> {
    svc: S,
    head: Request<()>,
    replay: Option<ReplayBody<B>>,
    policy: Arc<RetryPolicy>,
    rng: Arc<dyn Roll>,
    on_retry: Option<mesh_core::ext::Hook>,
    budget: Option<(Arc<Budget>, Limit)>,
    _active: Option<ActiveRequest>,
    /// Held while a retry is in flight; the budget counts it until its result is known.
    retrying: Option<BudgetGuard>,
    tried: Vec<std::net::SocketAddr>,
    n: u32,
}

impl<S, B> Tries<S, B> {
    /// After a try: the answer to give, or the backoff before the next try.
    fn decide<ResB>(
        &mut self,
        result: Result<Response<ResB>, BoxError>,
    ) -> Result<Pin<Box<tokio::time::Sleep>>, Result<Response<ResB>, BoxError>> {
        let policy = &self.policy;
        let retriable = match &result {
            Ok(rsp) => {
                let grpc = rsp.headers().get("grpc-status").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
                policy.retry_on.on_response(rsp.status().as_u16(), grpc)
                    || policy.retry_on.on_headers(rsp.headers(), self.head.headers())
            }
            Err(e) => classify(&**e).is_some_and(|f| policy.retry_on.on_failure(f)),
        };
        if !retriable {
            return Err(result);
        }
        let last_try = !policy.may_retry(self.n);
        // A body past the cap, or one an earlier try still holds, cannot be sent again.
        let replayable = self.replay.as_ref().is_none_or(ReplayBody::can_replay);
        let guard = match &self.budget {
            _ if last_try || !replayable => None,
            Some((b, limit)) => b.try_retry(*limit).map(Some),
            // Unlimited: nothing to count.
            None => Some(None),
        };
        let Some(guard) = guard else {
            // Out of retries (or of budget): the last upstream answer goes to the client.
            return Err(match result {
                Ok(mut rsp) => {
                    if self.n > 0 {
                        ResponseFlags::add_to(rsp.extensions_mut(), ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED);
                    }
                    Ok(rsp)
                }
                Err(e) if self.n > 0 => Err(Box::new(RetriesExhausted { source: e })),
                Err(e) => Err(e),
            });
        };
        match &result {
            Ok(rsp) => self.tried.extend(rsp.extensions().get::<UpstreamEndpoint>().map(|u| u.0.address)),
            Err(e) => self.tried.extend(cause_ref::<EndpointError>(&**e).map(|e| e.address)),
        }
        drop(result);
        self.n += 1;
        self.retrying = guard;
        if let Some(hook) = &self.on_retry {
            hook.call(mesh_core::ext::Event::Retry);
        }
        Ok(Box::pin(tokio::time::sleep(policy.backoff(self.n, self.rng.roll() / 100.0))))
    }

    /// The next try's request: the head again, the body replayed.
    fn next_request(&self) -> Request<RetryBody<B>> {
        let body = match self.replay.as_ref().and_then(ReplayBody::replay) {
            Some(r) => RetryBody { inner: BodyInner::Replay(r) },
            None => RetryBody::empty(),
        };
        let mut req = self.head.clone().map(|()| body);
        if self.policy.retry_other_host && !self.tried.is_empty() {
            req.extensions_mut().insert(TriedHosts(self.tried.clone()));
        }
        req
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
    /// Response future of [`Retry`]: a named state machine, no box on the usual path. A
    /// request without a retry policy is the inner future alone; with one, the state for
    /// later tries sits beside it, and the backoff timer (and a per-try timer, when the
    /// route sets `perTryTimeout`) is allocated only when needed.
    pub struct RetryFuture<S, B>
    where
        S: Service<Request<RetryBody<B>>>,
    {
        #[pin]
        state: State<S::Future>,
        retry: Option<Tries<S, B>>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Attempt { #[pin] fut: F, deadline: Option<Pin<Box<tokio::time::Sleep>>> },
        Backoff { sleep: Pin<Box<tokio::time::Sleep>> },
        Ready,
    }
}

impl<S, B, ResB> Future for RetryFuture<S, B>
where
    S: Service<Request<RetryBody<B>>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
{
    type Output = Result<Response<ResB>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Attempt { fut, deadline } => {
                    let result = match fut.poll(cx) {
                        Poll::Ready(r) => r.map_err(Into::into),
                        Poll::Pending => match deadline.as_mut().map(|d| d.as_mut().poll(cx)) {
                            Some(Poll::Ready(())) => Err(Box::new(PerTryTimeout) as BoxError),
                            _ => return Poll::Pending,
                        },
                    };
                    let Some(tries) = this.retry.as_mut() else { return Poll::Ready(result) };
                    match tries.decide(result) {
                        Ok(sleep) => this.state.set(State::Backoff { sleep }),
                        Err(answer) => return Poll::Ready(answer),
                    }
                }
                StateProj::Backoff { sleep } => {
                    std::task::ready!(sleep.as_mut().poll(cx));
                    this.state.set(State::Ready);
                }
                StateProj::Ready => {
                    let tries = this.retry.as_mut().expect("only a request with retries waits for readiness");
                    std::task::ready!(tries.svc.poll_ready(cx)).map_err(Into::into)?;
                    let req = tries.next_request();
                    let deadline = tries.policy.per_try_timeout.map(|t| Box::pin(tokio::time::sleep(t)));
                    let fut = tries.svc.call(req);
                    this.state.set(State::Attempt { fut, deadline });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Mutex as StdMutex,
        atomic::{AtomicUsize, Ordering},
    };

    use http_body_util::BodyExt;
    use mesh_core::{BoxBody, test_util::MockBody};
    use tower::{ServiceBuilder, ServiceExt, service_fn};

    use std::{convert::Infallible, time::Duration};

    use http::StatusCode;
    use http_body_util::Full;
    use mesh_core::roll::SeededRoll;

    use super::*;
    use crate::{layer::test_support::*, policy::retry::RetryOn};

    /// What each try's body delivered, as the inner service read it.
    type Seen = Arc<StdMutex<Vec<String>>>;

    /// An upstream whose first `fail` tries read `read_first` frames, then answer 503 (or
    /// fail to connect, reading nothing, when `read_first` is `None`); later tries read the
    /// whole body and answer 200.
    fn upstream(
        fail: usize,
        read_first: Option<usize>,
        seen: Seen,
    ) -> impl Service<
        Request<RetryBody<BoxBody>>,
        Response = Response<BoxBody>,
        Error = BoxError,
        Future = impl Future<Output = Result<Response<BoxBody>, BoxError>> + Send,
    > + Clone {
        let tries = Arc::new(AtomicUsize::new(0));
        service_fn(move |req: Request<RetryBody<BoxBody>>| {
            let (tries, seen) = (tries.clone(), seen.clone());
            async move {
                let n = tries.fetch_add(1, Ordering::SeqCst);
                let mut body = req.into_body();
                if n < fail {
                    let Some(frames) = read_first else {
                        return Err::<Response<BoxBody>, BoxError>(Box::new(ConnectFailure {
                            source: "connection refused".into(),
                        }));
                    };
                    let mut got = String::new();
                    for _ in 0..frames {
                        if let Some(Ok(f)) = body.frame().await
                            && let Some(d) = f.data_ref()
                        {
                            got.push_str(std::str::from_utf8(d).unwrap());
                        }
                    }
                    seen.lock().unwrap().push(got);
                    let mut rsp = Response::new(mesh_core::body::empty());
                    *rsp.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                    return Ok(rsp);
                }
                let collected = body.collect().await.unwrap();
                let trailers =
                    collected.trailers().and_then(|t| t.get("x-sum")).map(|v| v.to_str().unwrap().to_string());
                let text = String::from_utf8(collected.to_bytes().to_vec()).unwrap();
                seen.lock().unwrap().push(format!("{text}{}", trailers.map(|t| format!("|{t}")).unwrap_or_default()));
                Ok(Response::new(mesh_core::body::empty()))
            }
        })
    }

    fn policy() -> RetryPolicy {
        RetryPolicy { retry_on: RetryOn::parse("connect-failure,5xx"), ..RetryPolicy::istio_default() }
    }

    /// A streamed body of unknown length: `abc` in three frames, trailers `x-sum: 3`.
    fn streamed() -> BoxBody {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-sum", "3".parse().unwrap());
        mesh_core::body::boxed(MockBody::new().data("a").pending().data("b").data("c").trailers(trailers))
    }

    async fn send(fail: usize, read_first: Option<usize>, body: BoxBody, layer: RetryLayer) -> (u16, Vec<String>) {
        let seen = Seen::default();
        let svc = ServiceBuilder::new().layer(layer).service(upstream(fail, read_first, seen.clone()));
        let rsp = svc.oneshot(Request::post("/").body(body).unwrap()).await.unwrap();
        let seen = seen.lock().unwrap().clone();
        (rsp.status().as_u16(), seen)
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_never_read_by_a_failed_connect_is_sent_whole_on_the_retry() {
        let (status, seen) = send(1, None, streamed(), RetryLayer::new(policy())).await;
        assert_eq!((status, seen), (200, vec!["abc|3".to_string()]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_try_that_read_part_of_the_body_hands_the_rest_to_the_next() {
        // The first try reads one frame then answers 503: the second replays it and reads on.
        let (status, seen) = send(1, Some(1), streamed(), RetryLayer::new(policy())).await;
        assert_eq!((status, seen), (200, vec!["a".to_string(), "abc|3".to_string()]));
        // Two failed tries, each reading further, then a third that gets it all.
        let p = RetryPolicy { attempts: 3, ..policy() };
        let (status, seen) = send(2, Some(2), streamed(), RetryLayer::new(p)).await;
        assert_eq!((status, seen), (200, vec!["ab".to_string(), "ab".to_string(), "abc|3".to_string()]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_past_the_cap_is_streamed_once_and_not_retried() {
        let layer = RetryLayer::new(policy()).with_max_replay_bytes(2);
        // The first try reads all three bytes (past the cap of 2): its 503 is the answer.
        let (status, seen) = send(1, Some(4), streamed(), layer.clone()).await;
        assert_eq!((status, seen), (503, vec!["abc".to_string()]));
        // A body known to be larger than the cap goes through untouched, without retries.
        let (status, seen) = send(1, Some(1), mesh_core::body::full("abc"), layer).await;
        assert_eq!((status, seen), (503, vec!["abc".to_string()]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_an_earlier_try_still_holds_is_not_sent_again() {
        // The upstream answers 503 after one frame but keeps the body (as a connection still
        // sending it would): a retry could not send it whole, so the 503 is the answer.
        let held: Arc<StdMutex<Vec<RetryBody<BoxBody>>>> = Arc::default();
        let keep = held.clone();
        let svc = ServiceBuilder::new().layer(RetryLayer::new(policy())).service(service_fn(
            move |req: Request<RetryBody<BoxBody>>| {
                let keep = keep.clone();
                async move {
                    let mut body = req.into_body();
                    let _ = body.frame().await;
                    keep.lock().unwrap().push(body);
                    let mut rsp = Response::new(mesh_core::body::empty());
                    *rsp.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                    Ok::<_, BoxError>(rsp)
                }
            },
        ));
        let rsp = svc.oneshot(Request::post("/").body(streamed()).unwrap()).await.unwrap();
        assert_eq!(rsp.status(), 503);
        assert_eq!(held.lock().unwrap().len(), 1, "one try only");
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_body_is_retried_without_a_replay_buffer() {
        let (status, seen) = send(1, Some(1), mesh_core::body::empty(), RetryLayer::new(policy())).await;
        assert_eq!((status, seen), (200, vec![String::new(), String::new()]));
    }

    // Over mocks, with paused time: statuses, per-try timeouts, the cap, the budget.

    /// An upstream answering the given statuses in order, counting calls.
    fn scripted(
        statuses: &'static [u16],
        calls: Arc<AtomicUsize>,
    ) -> impl Service<Request<RetryBody<Full<Bytes>>>, Response = Response<()>, Error = Infallible, Future = impl Send>
    + Clone
    + Send
    + 'static {
        service_fn(move |req: Request<RetryBody<Full<Bytes>>>| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            let calls = calls.clone();
            async move {
                // The replayed body arrives whole on every try.
                let body = req.into_body().collect().await.unwrap().to_bytes();
                assert!(body.is_empty() || body == "payload", "{body:?}");
                let _ = calls;
                let mut rsp = Response::new(());
                *rsp.status_mut() = StatusCode::from_u16(statuses[n.min(statuses.len() - 1)]).unwrap();
                Ok(rsp)
            }
        })
    }

    #[tokio::test(start_paused = true)]
    async fn retries_on_5xx_then_succeeds() {
        let calls = Arc::new(AtomicUsize::new(0));
        let svc = RetryLayer::per_route()
            .with_rng(Arc::new(SeededRoll::new(1)))
            .layer(scripted(&[503, 503, 200], calls.clone()));
        let mut req = request_with(retry_policy(r#"{"attempts": 3, "retryOn": "5xx"}"#));
        *req.body_mut() = Full::new(Bytes::from_static(b"payload"));
        let rsp = svc.oneshot(req).await.unwrap();
        assert_eq!(rsp.status(), 200);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(flags(&rsp), "-");
    }

    #[tokio::test(start_paused = true)]
    async fn the_default_policy_does_not_retry_503_and_exhaustion_sets_urx() {
        let calls = Arc::new(AtomicUsize::new(0));
        let svc = RetryLayer::per_route().layer(scripted(&[503], calls.clone()));
        let rsp = svc.clone().oneshot(request_with(Arc::new(RetryPolicy::istio_default()))).await.unwrap();
        assert_eq!((rsp.status().as_u16(), calls.load(Ordering::SeqCst)), (503, 1));

        let calls = Arc::new(AtomicUsize::new(0));
        let svc = RetryLayer::per_route().layer(scripted(&[503], calls.clone()));
        let rsp =
            svc.oneshot(request_with(retry_policy(r#"{"attempts": 2, "retryOn": "gateway-error"}"#))).await.unwrap();
        assert_eq!((rsp.status().as_u16(), calls.load(Ordering::SeqCst)), (503, 3));
        assert_eq!(flags(&rsp), "URX");
    }

    #[tokio::test(start_paused = true)]
    async fn bodies_over_the_cap_are_not_retried() {
        let calls = Arc::new(AtomicUsize::new(0));
        let svc = RetryLayer::per_route().with_max_replay_bytes(4).layer(scripted(&[503, 200], calls.clone()));
        let mut req = request_with(retry_policy(r#"{"attempts": 3, "retryOn": "5xx"}"#));
        *req.body_mut() = Full::new(Bytes::from_static(b"payload"));
        let rsp = svc.oneshot(req).await.unwrap();
        assert_eq!((rsp.status().as_u16(), calls.load(Ordering::SeqCst)), (503, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn per_try_timeout_is_retried_under_5xx_only() {
        // The first try hangs; the second answers.
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let upstream = service_fn(move |_: Request<RetryBody<Full<Bytes>>>| {
            let n = c.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                Ok::<_, Infallible>(Response::new(()))
            }
        });
        let svc = RetryLayer::per_route().layer(upstream.clone());
        let rsp = svc
            .oneshot(request_with(retry_policy(r#"{"attempts": 1, "perTryTimeout": "1s", "retryOn": "5xx"}"#)))
            .await
            .unwrap();
        assert_eq!((rsp.status().as_u16(), calls.load(Ordering::SeqCst)), (200, 2));

        calls.store(0, Ordering::SeqCst);
        let svc = edge(RetryLayer::per_route().layer(upstream));
        let rsp: Response<BoxBody> = svc
            .oneshot(request_with(retry_policy(
                r#"{"attempts": 1, "perTryTimeout": "1s", "retryOn": "connect-failure"}"#,
            )))
            .await
            .map(|r| r.map(|()| mesh_core::body::empty()))
            .unwrap();
        assert_eq!((rsp.status().as_u16(), calls.load(Ordering::SeqCst)), (504, 1));
        assert_eq!(flags(&rsp), "UT");
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_caps_concurrent_retries() {
        // Budget: 0 % of active requests, at least 1 retry at a time.
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let upstream = service_fn(move |_: Request<RetryBody<Full<Bytes>>>| {
            c.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let mut r = Response::new(());
                *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                Ok::<_, Infallible>(r)
            }
        });
        let svc = RetryLayer::per_route().with_budget(0, 1).layer(upstream);
        let policy = retry_policy(r#"{"attempts": 1, "retryOn": "503"}"#);
        let handles: Vec<_> = (0..4).map(|_| tokio::spawn(svc.clone().oneshot(request_with(policy.clone())))).collect();
        for h in handles {
            assert_eq!(h.await.unwrap().unwrap().status(), 503);
        }
        // Four first tries fail together; the budget (at least 1 retry at a time, 0 % of
        // active requests) lets one of them retry; the others answer with their 503.
        assert_eq!(calls.load(Ordering::SeqCst), 5);
    }
}
