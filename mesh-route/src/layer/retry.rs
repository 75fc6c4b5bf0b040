//! Retries: Istio's `retries` (or its default), each try bounded by the per-try timeout,
//! bodies replayed up to a cap, concurrent retries per cluster limited as its
//! DestinationRule says (`maxRetries`, `retryBudget`; unlimited by default, as Istio), and
//! another endpoint preferred for each retry.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
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

/// A request the retry budget counts as active (its `minRetryConcurrency` share), while it lives.
struct ActiveRequest(Arc<Budget>);

impl ActiveRequest {
    fn new(b: &Arc<Budget>) -> Self {
        b.active.fetch_add(1, Ordering::AcqRel);
        Self(b.clone())
    }
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The request body below the retry layer: passed through (no retry possible), replayable
/// (streamed to the first try while a copy is kept, up to the cap), or a fixed buffer.
pub struct RetryBody<B> {
    inner: BodyInner<B>,
}

enum BodyInner<B> {
    Empty,
    Buffered(Full<Bytes>),
    Passthrough(B),
    Replay(ReplayBody<B>),
}

impl<B> std::fmt::Debug for RetryBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.inner {
            BodyInner::Empty => "empty",
            BodyInner::Buffered(_) => "buffered",
            BodyInner::Passthrough(_) => "passthrough",
            BodyInner::Replay(_) => "replay",
        };
        f.debug_tuple("RetryBody").field(&kind).finish()
    }
}

impl<B> RetryBody<B> {
    /// A replayable copy of buffered bytes.
    pub fn buffered(bytes: Bytes) -> Self {
        Self { inner: BodyInner::Buffered(Full::new(bytes)) }
    }

    /// The original body, not replayable.
    pub fn passthrough(body: B) -> Self {
        Self { inner: BodyInner::Passthrough(body) }
    }

    fn empty() -> Self {
        Self { inner: BodyInner::Empty }
    }
}

impl<B> Body for RetryBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().inner {
            BodyInner::Empty => Poll::Ready(None),
            BodyInner::Buffered(body) => Pin::new(body).poll_frame(cx).map_err(|never| match never {}),
            BodyInner::Passthrough(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            BodyInner::Replay(body) => body.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            BodyInner::Empty => true,
            BodyInner::Buffered(body) => body.is_end_stream(),
            BodyInner::Passthrough(body) => body.is_end_stream(),
            BodyInner::Replay(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            BodyInner::Empty => SizeHint::with_exact(0),
            BodyInner::Buffered(body) => body.size_hint(),
            BodyInner::Passthrough(body) => body.size_hint(),
            BodyInner::Replay(body) => body.size_hint(),
        }
    }
}

/// What the tries of one request share of its body: the source while no try reads it, and
/// every data frame read so far while that stays within the cap.
struct Shared<B> {
    source: Option<B>,
    data: Vec<Bytes>,
    trailers: Option<http::HeaderMap>,
    read: u64,
    cap: u64,
    ended: bool,
    overflow: bool,
}

/// One try's view of a replayable body (as linkerd2-proxy's `ReplayBody`): first what
/// earlier tries read, then on from the source, keeping a copy. A try that stops early
/// (an answer before the body was sent, a failed connect) hands the source back when its
/// body is dropped, so the next try continues where it stopped. Past the cap the copy is
/// dropped and the request is not retried.
struct ReplayBody<B> {
    shared: Arc<Mutex<Shared<B>>>,
    source: Option<B>,
    next: usize,
    sent_trailers: bool,
}

impl<B> ReplayBody<B> {
    fn new(body: B, cap: u64) -> Self {
        let shared =
            Shared { source: None, data: Vec::new(), trailers: None, read: 0, cap, ended: false, overflow: false };
        Self { shared: Arc::new(Mutex::new(shared)), source: Some(body), next: 0, sent_trailers: false }
    }

    /// Another view of the same body, reading from the start.
    fn handle(&self) -> Self {
        Self { shared: self.shared.clone(), source: None, next: 0, sent_trailers: false }
    }

    /// The body of the next try, if the request can still be replayed.
    fn replay(&self) -> Option<Self> {
        self.can_replay().then(|| self.handle())
    }

    /// Whether a next try can send the whole body: the copy is within the cap, and the rest
    /// of the source is here (an earlier try's body still held by its connection, sending,
    /// could not be continued).
    fn can_replay(&self) -> bool {
        let shared = self.lock();
        !shared.overflow && (shared.ended || shared.source.is_some())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared<B>> {
        self.shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl<B> ReplayBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let shared = self.shared.clone();
        let mut shared = shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(data) = shared.data.get(self.next) {
            self.next += 1;
            return Poll::Ready(Some(Ok(Frame::data(data.clone()))));
        }
        if shared.ended {
            if !self.sent_trailers
                && let Some(t) = shared.trailers.clone()
            {
                self.sent_trailers = true;
                return Poll::Ready(Some(Ok(Frame::trailers(t))));
            }
            return Poll::Ready(None);
        }
        if self.source.is_none() {
            self.source = shared.source.take();
        }
        let Some(source) = self.source.as_mut() else {
            // Never sent: `can_replay` checked the source was back before this try began.
            return Poll::Ready(Some(Err("the request body is still held by an earlier try".into())));
        };
        match std::task::ready!(Pin::new(source).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    shared.read += data.len() as u64;
                    if shared.read > shared.cap {
                        shared.overflow = true;
                        shared.data = Vec::new();
                    } else if !shared.overflow {
                        shared.data.push(data.clone());
                    }
                    self.next = shared.data.len();
                } else if let Some(t) = frame.trailers_ref() {
                    shared.trailers = Some(t.clone());
                    self.sent_trailers = true;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => Poll::Ready(Some(Err(e.into()))),
            None => {
                shared.ended = true;
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        let shared = self.lock();
        if self.next < shared.data.len() {
            return false;
        }
        if shared.ended {
            return self.sent_trailers || shared.trailers.is_none();
        }
        match (&self.source, &shared.source) {
            (Some(s), _) | (None, Some(s)) => s.is_end_stream(),
            (None, None) => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        let shared = self.lock();
        let buffered: u64 = shared.data.get(self.next..).unwrap_or(&[]).iter().map(|d| d.len() as u64).sum();
        if shared.ended {
            return SizeHint::with_exact(buffered);
        }
        let mut hint = match (&self.source, &shared.source) {
            (Some(s), _) | (None, Some(s)) => s.size_hint(),
            (None, None) => SizeHint::with_exact(0),
        };
        hint.set_lower(hint.lower() + buffered);
        if let Some(upper) = hint.upper() {
            hint.set_upper(upper + buffered);
        }
        hint
    }
}

impl<B> Drop for ReplayBody<B> {
    fn drop(&mut self) {
        if let Some(source) = self.source.take() {
            let mut shared = self.shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            shared.source = Some(source);
        }
    }
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
        let last_try = self.n >= policy.attempts;
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
    use std::sync::Mutex as StdMutex;

    use http_body_util::BodyExt;
    use mesh_core::{BoxBody, test_util::MockBody};
    use tower::{ServiceBuilder, ServiceExt, service_fn};

    use super::*;
    use crate::policy::retry::RetryOn;

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
}
