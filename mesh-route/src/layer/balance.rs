//! Endpoint choice within the routed cluster: load balancing, passive outlier ejection and
//! connection-pool limits. State (outstanding requests, ejections) is kept per cluster name
//! and endpoint address, so it survives config reloads.

use std::{
    future::Future,
    hash::{Hash, Hasher},
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll, ready},
};

use http::{HeaderValue, Request, Response, header, uri::Scheme};
use mesh_core::roll::{Roll, ThreadRoll};
use mesh_core::{
    BoxError,
    body::BodyFault,
    endpoint::Endpoint,
    hash::{FxHashMap, FxHashSet},
    is_caused_by,
    request::first_query_value,
};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use crate::policy::{
    Target,
    cluster::{Cluster, HashKey, LbPolicy, OutlierPolicy},
};
use mesh_core::error::{ConnectFailure, EndpointError, NoCluster, NoHealthyUpstream, Overflow, PerTryTimeout};

/// Endpoints already tried for this request (set by the retry layer).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TriedHosts(pub Vec<SocketAddr>);

pub use mesh_core::ext::ClientAddr;

/// Picks an endpoint of the request's [`Target`] cluster and sends the request there.
#[derive(Clone, Debug)]
pub struct BalanceLayer {
    states: Arc<RwLock<FxHashMap<Arc<str>, Arc<ClusterState>>>>,
    rng: Arc<dyn Roll>,
    auto_mtls: bool,
    plaintext_only: Option<Arc<arc_swap::ArcSwap<FxHashSet<SocketAddr>>>>,
    on_ejection: Option<mesh_core::ext::Hook>,
    /// The cluster of requests that carry no route target (a balancer used alone).
    fixed: Option<Target>,
}

impl Default for BalanceLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl BalanceLayer {
    /// A balancer with fresh state.
    pub fn new() -> Self {
        Self {
            states: Arc::default(),
            rng: Arc::new(ThreadRoll),
            auto_mtls: false,
            plaintext_only: None,
            on_ejection: None,
            fixed: None,
        }
    }

    /// Balance requests that carry no route target over `cluster` (for example
    /// [`Cluster::from_addresses`](crate::policy::cluster::Cluster::from_addresses)): the
    /// balancer used alone, without a router.
    ///
    /// ```
    /// # use std::{convert::Infallible, sync::Arc};
    /// use mesh_route::{layer::BalanceLayer, policy::cluster::{Cluster, LbPolicy}};
    /// use tower::{ServiceBuilder, ServiceExt};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let addrs = ["127.0.0.1:9081".parse().unwrap(), "127.0.0.1:9082".parse().unwrap()];
    /// let cluster = Cluster::from_addresses("ratings", addrs, LbPolicy::RoundRobin);
    /// let svc = ServiceBuilder::new()
    ///     .layer(BalanceLayer::new().with_cluster(Arc::new(cluster)))
    ///     // Any client: here, one that answers with the address it was sent to.
    ///     .service_fn(|req: http::Request<()>| async move {
    ///         Ok::<_, Infallible>(http::Response::new(req.uri().authority().unwrap().to_string()))
    ///     });
    /// let a = svc.clone().oneshot(http::Request::new(())).await.unwrap().into_body();
    /// let b = svc.oneshot(http::Request::new(())).await.unwrap().into_body();
    /// assert_ne!(a, b);
    /// # }
    /// ```
    #[must_use]
    pub fn with_cluster(mut self, cluster: Arc<crate::policy::cluster::Cluster>) -> Self {
        self.fixed = Some(Target::Cluster(cluster));
        self
    }

    /// Called for every outlier ejection (telemetry counts them).
    #[must_use]
    pub fn with_on_ejection(mut self, hook: mesh_core::ext::Hook) -> Self {
        self.on_ejection = Some(hook);
        self
    }

    /// Endpoints that accept plaintext only (their PeerAuthentication is DISABLE): auto
    /// mTLS leaves them plaintext. Swap the set when config changes.
    #[must_use]
    pub fn with_plaintext_endpoints(mut self, set: Arc<arc_swap::ArcSwap<FxHashSet<SocketAddr>>>) -> Self {
        self.plaintext_only = Some(set);
        self
    }

    /// Auto mTLS: toward mesh endpoints (with a service account, not MESH_EXTERNAL) of a
    /// cluster whose DestinationRule sets no `tls`, use `https` (the mTLS connector). With
    /// it off, only `ISTIO_MUTUAL` clusters use mTLS.
    #[must_use]
    pub fn with_auto_mtls(mut self, on: bool) -> Self {
        self.auto_mtls = on;
        self
    }

    /// Random source for P2C and RANDOM.
    #[must_use]
    pub fn with_rng(mut self, rng: Arc<dyn Roll>) -> Self {
        self.rng = rng;
        self
    }

    /// Endpoints of `cluster` currently ejected by outlier detection.
    pub fn ejected(&self, cluster: &str) -> Vec<SocketAddr> {
        let states = self.states.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(c) = states.get(cluster) else { return Vec::new() };
        let now = Instant::now();
        let eps = c.endpoints.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out: Vec<SocketAddr> = eps.iter().filter(|(_, e)| e.is_ejected(now)).map(|(a, _)| *a).collect();
        out.sort();
        out
    }

    fn cluster_state(&self, name: &Arc<str>) -> Arc<ClusterState> {
        if let Some(s) = self.states.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(name) {
            return s.clone();
        }
        self.states.write().unwrap_or_else(std::sync::PoisonError::into_inner).entry(name.clone()).or_default().clone()
    }
}

impl<S> Layer<S> for BalanceLayer {
    type Service = Balance<S>;
    fn layer(&self, inner: S) -> Balance<S> {
        Balance { inner, layer: self.clone() }
    }
}

/// See [`BalanceLayer`].
#[derive(Clone, Debug)]
pub struct Balance<S> {
    inner: S,
    layer: BalanceLayer,
}

#[derive(Debug, Default)]
struct ClusterState {
    active: AtomicU32,
    round_robin: AtomicUsize,
    endpoints: RwLock<FxHashMap<SocketAddr, Arc<EndpointState>>>,
}

impl ClusterState {
    fn endpoint(&self, addr: SocketAddr) -> Arc<EndpointState> {
        if let Some(e) = self.endpoints.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(&addr) {
            return e.clone();
        }
        self.endpoints
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(addr)
            .or_insert_with(|| Arc::new(EndpointState::new(addr)))
            .clone()
    }
}

#[derive(Debug)]
struct EndpointState {
    /// The request authority toward this endpoint, built once.
    authority: Option<http::uri::Authority>,
    outstanding: AtomicU32,
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    consecutive_local: AtomicU32,
    times_ejected: AtomicU32,
    /// When this state was made: the origin of `ejected_until`.
    created: Instant,
    /// End of the current ejection in nanoseconds after `created`; 0 when not ejected.
    ejected_until: AtomicU64,
}

impl EndpointState {
    fn new(addr: SocketAddr) -> Self {
        Self {
            authority: http::uri::Authority::try_from(addr.to_string()).ok(),
            outstanding: AtomicU32::new(0),
            consecutive_5xx: AtomicU32::new(0),
            consecutive_gateway: AtomicU32::new(0),
            consecutive_local: AtomicU32::new(0),
            times_ejected: AtomicU32::new(0),
            created: Instant::now(),
            ejected_until: AtomicU64::new(0),
        }
    }

    fn nanos(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.created).as_nanos()).unwrap_or(u64::MAX).max(1)
    }

    /// Whether the endpoint is ejected at `now` (an ejection that has run out ends here).
    fn is_ejected(&self, now: Instant) -> bool {
        let until = self.ejected_until.load(Ordering::Acquire);
        if until == 0 {
            return false;
        }
        if self.nanos(now) < until {
            return true;
        }
        let _ = self.ejected_until.compare_exchange(until, 0, Ordering::AcqRel, Ordering::Relaxed);
        false
    }

    fn eject_until(&self, t: Instant) {
        self.ejected_until.store(self.nanos(t), Ordering::Release);
    }
}

fn hash_of(value: impl Hash) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

impl<S, B, ResB> Service<Request<B>> for Balance<S>
where
    S: Service<Request<B>, Response = Response<ResB>> + Clone,
    S::Error: Into<BoxError>,
{
    type Response = Response<ResB>;
    type Error = BoxError;
    type Future = BalanceFuture<S, Request<B>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // The endpoint is chosen in `call`, the request goes to the one inner client (the
        // absolute-form URI names the endpoint): its readiness is the balancer's.
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let cluster = match req.extensions().get::<Target>().or(self.layer.fixed.as_ref()) {
            Some(Target::Cluster(c)) => c.clone(),
            Some(Target::Missing { name, .. }) => return BalanceFuture::error(NoCluster { cluster: name.to_string() }),
            None => return BalanceFuture::error(NoCluster { cluster: "(no route target)".into() }),
        };
        let tried = req.extensions().get::<TriedHosts>().map(|t| t.0.as_slice()).unwrap_or(&[]);
        let mut set_cookie = None;
        let (mut guard, tls) = match self.layer.admit(&cluster, Caller::Request(&req), tried, &mut set_cookie) {
            Ok(admitted) => admitted,
            Err(e) => return BalanceFuture { state: BalanceState::Error { error: Some(e) } },
        };
        // Absolute form toward the endpoint; the Host header keeps the service name.
        mesh_core::request::to_absolute(
            &mut req,
            if tls { Scheme::HTTPS } else { Scheme::HTTP },
            guard.endpoint.authority.clone(),
        );
        guard.fault = req.extensions().get::<BodyFault>().cloned();
        guard.set_cookie = set_cookie;
        BalanceFuture { state: BalanceState::Call { fut: self.inner.call(req), guard: Some(guard) } }
    }
}

impl BalanceLayer {
    /// Admit one request or connection to `cluster`: the pool limits, then an endpoint by
    /// the cluster's algorithm (skipping ejected and already tried ones), counted as
    /// outstanding until the guard drops; and whether to use TLS toward it (the
    /// DestinationRule's `tls`, else auto mTLS: one rule for HTTP and TCP).
    fn admit<B>(
        &self,
        cluster: &Arc<Cluster>,
        caller: Caller<'_, B>,
        tried: &[SocketAddr],
        set_cookie: &mut Option<HeaderValue>,
    ) -> Result<(Outstanding, bool), BoxError> {
        let state = self.cluster_state(&cluster.name);
        let pool = &cluster.pool;
        let active = state.active.load(Ordering::Acquire);
        let limit = match (pool.max_requests, pool.max_connections) {
            (Some(r), Some(c)) => Some(r.min(c.saturating_add(pool.max_pending_requests.unwrap_or(u32::MAX - c)))),
            (Some(r), None) => Some(r),
            (None, Some(c)) => Some(c.saturating_add(pool.max_pending_requests.unwrap_or(u32::MAX - c))),
            (None, None) => None,
        };
        if limit.is_some_and(|l| active >= l) {
            return Err(Box::new(Overflow { cluster: cluster.name.to_string() }));
        }
        let Some(endpoint) = pick(cluster, &state, &*self.rng, caller, tried, set_cookie) else {
            return Err(Box::new(NoHealthyUpstream { cluster: cluster.name.to_string() }));
        };
        let address = endpoint.address;
        let plaintext_only = self.plaintext_only.as_ref().is_some_and(|p| p.load().contains(&address));
        let tls = cluster.uses_tls(endpoint, self.auto_mtls, plaintext_only);
        let upstream = mesh_core::ext::UpstreamEndpoint(endpoint.clone());
        let ep_state = state.endpoint(address);
        ep_state.outstanding.fetch_add(1, Ordering::AcqRel);
        state.active.fetch_add(1, Ordering::AcqRel);
        let guard = Outstanding {
            fault: None,
            cluster: cluster.clone(),
            state,
            endpoint: ep_state,
            address,
            set_cookie: None,
            upstream,
            on_ejection: self.on_ejection.clone(),
        };
        Ok((guard, tls))
    }

    /// Choose an endpoint of `cluster` for one TCP connection from `client`, as for a
    /// request: the same state (outstanding counts, ejections), pool limits, algorithm
    /// (`consistentHash` keys on `useSourceIp` only; other keys have no request to read and
    /// fall back to a random endpoint) and mTLS rule. Endpoints in `tried` are avoided while
    /// others remain. Errors are `NoHealthyUpstream` (`UH`) and `Overflow` (`UO`).
    pub fn pick_connection(
        &self,
        cluster: &Arc<Cluster>,
        client: Option<std::net::IpAddr>,
        tried: &[SocketAddr],
    ) -> Result<ConnectionPick, BoxError> {
        let (guard, tls) = self.admit::<()>(cluster, Caller::Connection(client), tried, &mut None)?;
        Ok(ConnectionPick { tls, guard })
    }
}

/// An endpoint chosen for one TCP connection ([`BalanceLayer::pick_connection`]). Keep it
/// while the connection is open: it counts as outstanding for `LEAST_REQUEST` and the
/// connection pool's limits. Tell it how the connect went, for outlier detection.
pub struct ConnectionPick {
    tls: bool,
    guard: Outstanding,
}

impl std::fmt::Debug for ConnectionPick {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionPick").field("endpoint", &self.guard.address).field("tls", &self.tls).finish()
    }
}

impl ConnectionPick {
    /// The endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.guard.upstream.0
    }

    /// Whether to connect with TLS (mTLS toward a mesh endpoint).
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// The connect succeeded: the endpoint's consecutive-failure counts start over.
    pub fn connected(&self) {
        self.guard.record(Outcome::Status(200));
    }

    /// The connect failed: a local-origin failure (a gateway error unless
    /// `splitExternalLocalOriginErrors`), which may eject the endpoint.
    pub fn failed(self) {
        self.guard.record(Outcome::LocalFailure);
    }
}

/// Who asks for an endpoint: a request (every hash key applies) or a TCP connection (only
/// the source address).
enum Caller<'r, B> {
    Request(&'r Request<B>),
    Connection(Option<std::net::IpAddr>),
}

/// Choose an endpoint: skip ejected ones, prefer untried ones, then apply the algorithm.
fn pick<'c, B>(
    cluster: &'c Cluster,
    state: &ClusterState,
    rng: &dyn Roll,
    caller: Caller<'_, B>,
    tried: &[SocketAddr],
    set_cookie: &mut Option<HeaderValue>,
) -> Option<&'c Endpoint> {
    let endpoints = &cluster.endpoints[..];
    // Without outlier detection no endpoint is ever ejected: no state to read.
    let now = cluster.outlier.as_ref().map(|_| Instant::now());
    let healthy = |e: &Endpoint| now.is_none_or(|now| !state.endpoint(e.address).is_ejected(now));
    let hashing = matches!(cluster.lb, LbPolicy::ConsistentHash(_));
    // Retries prefer another host, except under consistent hashing.
    let avoid_tried =
        !hashing && !tried.is_empty() && endpoints.iter().any(|e| healthy(e) && !tried.contains(&e.address));
    let candidate = |e: &&Endpoint| healthy(e) && !(avoid_tried && tried.contains(&e.address));
    // The usual case, every endpoint a candidate, indexes the slice: no allocation.
    let all = now.is_none() && !avoid_tried;
    let count = if all { endpoints.len() } else { endpoints.iter().filter(candidate).count() };
    if count == 0 {
        return None;
    }
    let nth =
        |i: usize| if all { &endpoints[i] } else { endpoints.iter().filter(candidate).nth(i).expect("i < count") };
    let sample = |n: usize| ((rng.roll() / 100.0) * n as f64) as usize % n;
    let chosen = match &cluster.lb {
        LbPolicy::RoundRobin | LbPolicy::Passthrough => nth(state.round_robin.fetch_add(1, Ordering::Relaxed) % count),
        LbPolicy::Random => nth(sample(count)),
        LbPolicy::LeastRequest => {
            if count == 1 {
                nth(0)
            } else {
                // Power of two choices on outstanding requests, weights as tie-breaker.
                let a = nth(sample(count));
                let b = nth(sample(count));
                let load = |e: &Endpoint| state.endpoint(e.address).outstanding.load(Ordering::Acquire);
                if load(b) < load(a) { b } else { a }
            }
        }
        LbPolicy::ConsistentHash(h) => {
            let key: Option<u64> = match (&h.key, caller) {
                (HashKey::SourceIp, Caller::Connection(ip)) => ip.map(hash_of),
                (_, Caller::Connection(_)) => None,
                (HashKey::Header(name), Caller::Request(req)) => req.headers().get(name).map(|v| hash_of(v.as_bytes())),
                (HashKey::QueryParam(name), Caller::Request(req)) => {
                    first_query_value(req.uri().query(), name).map(|v| hash_of(v.as_ref()))
                }
                (HashKey::SourceIp, Caller::Request(req)) => {
                    req.extensions().get::<ClientAddr>().map(|a| hash_of(a.0.ip()))
                }
                (HashKey::Cookie { name, path, ttl }, Caller::Request(req)) => match cookie(req, name) {
                    Some(v) => Some(hash_of(v)),
                    None => ttl.map(|ttl| {
                        // Envoy generates the cookie when it is absent and a ttl is set.
                        let value =
                            format!("{:016x}", hash_of((rng.roll().to_bits(), Instant::now().elapsed().as_nanos())));
                        let mut c = format!("{name}=\"{value}\"; Max-Age={}", ttl.as_secs());
                        if let Some(p) = path {
                            c.push_str(&format!("; Path={p}"));
                        }
                        *set_cookie = HeaderValue::from_str(&c).ok();
                        hash_of(value.as_str())
                    }),
                },
            };
            match key {
                // Rendezvous hashing: each key goes to the endpoint with the highest
                // combined hash; adding or removing an endpoint moves about 1/N of keys.
                Some(k) => {
                    endpoints.iter().filter(candidate).max_by_key(|e| hash_of((k, e.address))).expect("count > 0")
                }
                None => nth(sample(count)),
            }
        }
    };
    Some(chosen)
}

fn cookie<'r, B>(req: &'r Request<B>, name: &str) -> Option<&'r str> {
    req.headers()
        .get_all(header::COOKIE)
        .into_iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == name).then(|| v.trim_matches('"'))
        })
}

/// A request outstanding at the endpoint the balancer chose: counted against the endpoint
/// and the pool limits, and fed to outlier detection when it ends.
struct Outstanding {
    /// The request's body fault: a failure the client caused is never the endpoint's.
    fault: Option<BodyFault>,
    on_ejection: Option<mesh_core::ext::Hook>,
    upstream: mesh_core::ext::UpstreamEndpoint,
    cluster: Arc<Cluster>,
    state: Arc<ClusterState>,
    endpoint: Arc<EndpointState>,
    address: SocketAddr,
    set_cookie: Option<HeaderValue>,
}

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.endpoint.outstanding.fetch_sub(1, Ordering::AcqRel);
        self.state.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a try told outlier detection.
enum Outcome {
    Status(u16),
    LocalFailure,
}

impl Outstanding {
    fn record(&self, outcome: Outcome) {
        let Some(policy) = &self.cluster.outlier else { return };
        let e = &self.endpoint;
        let (is_5xx, is_gateway, local) = match outcome {
            Outcome::Status(s) => ((500..600).contains(&s), matches!(s, 502..=504), false),
            Outcome::LocalFailure => {
                (!policy.split_local_origin, !policy.split_local_origin, policy.split_local_origin)
            }
        };
        let bump = |c: &AtomicU32, hit: bool| {
            if hit {
                c.fetch_add(1, Ordering::AcqRel) + 1
            } else {
                c.store(0, Ordering::Release);
                0
            }
        };
        let n5 = bump(&e.consecutive_5xx, is_5xx);
        let ngw = bump(&e.consecutive_gateway, is_gateway);
        let nlocal = if local { e.consecutive_local.fetch_add(1, Ordering::AcqRel) + 1 } else { 0 };
        if !local && !is_5xx {
            e.consecutive_local.store(0, Ordering::Release);
        }
        let trip = policy.consecutive_5xx.is_some_and(|t| n5 >= t)
            || policy.consecutive_gateway_errors.is_some_and(|t| ngw >= t)
            || (policy.split_local_origin && nlocal >= policy.consecutive_local_origin);
        if trip {
            self.eject(policy);
        }
    }

    fn eject(&self, policy: &OutlierPolicy) {
        let now = Instant::now();
        let total = self.cluster.endpoints.len();
        let ejected =
            self.cluster.endpoints.iter().filter(|ep| self.state.endpoint(ep.address).is_ejected(now)).count();
        // At most max_ejection_percent of hosts, but at least one host can always go.
        let max = ((total as u64 * u64::from(policy.max_ejection_percent)) / 100).max(1) as usize;
        let e = &self.endpoint;
        if ejected >= max || e.is_ejected(now) {
            return;
        }
        let times = e.times_ejected.fetch_add(1, Ordering::AcqRel) + 1;
        let duration = (policy.base_ejection_time * times).min(policy.max_ejection_time.max(policy.base_ejection_time));
        e.eject_until(now + duration);
        for c in [&e.consecutive_5xx, &e.consecutive_gateway, &e.consecutive_local] {
            c.store(0, Ordering::Release);
        }
        tracing::info!(cluster = %self.cluster.name, endpoint = %self.address, ?duration, "outlier ejected");
        if let Some(hook) = &self.on_ejection {
            hook.call(mesh_core::ext::Event::Ejection);
        }
    }
}

pin_project! {
    /// Response future of [`Balance`].
    pub struct BalanceFuture<S, Req> where S: Service<Req> {
        #[pin]
        state: BalanceState<S, Req>,
    }
}

pin_project! {
    #[project = BalanceStateProj]
    enum BalanceState<S, Req> where S: Service<Req> {
        Error { error: Option<BoxError> },
        Call { #[pin] fut: S::Future, guard: Option<Outstanding> },
    }
}

impl<S, Req> BalanceFuture<S, Req>
where
    S: Service<Req>,
{
    fn error(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self { state: BalanceState::Error { error: Some(Box::new(e)) } }
    }
}

impl<S, B, ResB> Future for BalanceFuture<S, Request<B>>
where
    S: Service<Request<B>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
{
    type Output = Result<Response<ResB>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            BalanceStateProj::Error { error } => Poll::Ready(Err(error.take().expect("polled after ready"))),
            BalanceStateProj::Call { fut, guard } => {
                let result = ready!(fut.poll(cx));
                let guard = guard.take().expect("polled after ready");
                Poll::Ready(match result {
                    Ok(mut rsp) => {
                        if guard.fault.as_ref().and_then(BodyFault::get).is_none() {
                            guard.record(Outcome::Status(rsp.status().as_u16()));
                        }
                        rsp.extensions_mut().insert(guard.upstream.clone());
                        if let Some(c) = guard.set_cookie.clone() {
                            rsp.headers_mut().append(header::SET_COOKIE, c);
                        }
                        Ok(rsp)
                    }
                    Err(e) => {
                        let e: BoxError = e.into();
                        if let Some(d) = BodyFault::of(guard.fault.as_ref(), &*e) {
                            // The client's body failed: not the endpoint's fault, not retried.
                            return Poll::Ready(Err(Box::new(d)));
                        }
                        if is_caused_by::<ConnectFailure>(&*e)
                            || is_caused_by::<PerTryTimeout>(&*e)
                            || !is_caused_by::<NoHealthyUpstream>(&*e)
                        {
                            guard.record(Outcome::LocalFailure);
                        }
                        Err(Box::new(EndpointError { address: guard.address, source: e }))
                    }
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{net::IpAddr, time::Duration};

    use super::*;
    use crate::policy::cluster::{HashPolicy, HashTable};

    fn addrs(n: u16) -> Vec<SocketAddr> {
        (1..=n).map(|p| SocketAddr::from(([127, 0, 0, 1], 9000 + p))).collect()
    }

    fn outlier() -> OutlierPolicy {
        OutlierPolicy {
            consecutive_5xx: Some(2),
            consecutive_gateway_errors: None,
            split_local_origin: false,
            consecutive_local_origin: 5,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 100,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn connections_share_the_balancer_round_robin_ejection_and_tried_hosts() {
        let cluster = Arc::new(Cluster::from_addresses("db", addrs(3), LbPolicy::RoundRobin).with_outlier(outlier()));
        let balance = BalanceLayer::new();
        let picked: Vec<SocketAddr> =
            (0..3).map(|_| balance.pick_connection(&cluster, None, &[]).unwrap().endpoint().address).collect();
        assert_eq!(picked.iter().collect::<std::collections::HashSet<_>>().len(), 3, "{picked:?}");
        // Endpoints already tried are avoided while others remain.
        let tried = [addrs(3)[0], addrs(3)[1]];
        for _ in 0..3 {
            assert_eq!(balance.pick_connection(&cluster, None, &tried).unwrap().endpoint().address, addrs(3)[2]);
        }
        // Two failed connects in a row eject the endpoint, for requests and connections alike.
        let bad = addrs(3)[0];
        for _ in 0..2 {
            let pick = balance.pick_connection(&cluster, None, &[addrs(3)[1], addrs(3)[2]]).unwrap();
            assert_eq!(pick.endpoint().address, bad);
            pick.failed();
        }
        assert_eq!(balance.ejected("db"), vec![bad]);
        for _ in 0..6 {
            assert_ne!(balance.pick_connection(&cluster, None, &[]).unwrap().endpoint().address, bad);
        }
        // A success resets the count: fail, succeed, fail does not eject.
        let other = addrs(3)[1];
        let only = |a: SocketAddr| addrs(3).into_iter().filter(move |x| *x != a).collect::<Vec<_>>();
        let pick = balance.pick_connection(&cluster, None, &only(other)).unwrap();
        pick.failed();
        balance.pick_connection(&cluster, None, &only(other)).unwrap().connected();
        balance.pick_connection(&cluster, None, &only(other)).unwrap().failed();
        assert_eq!(balance.ejected("db"), vec![bad]);
        // The ejection ends with its time.
        tokio::time::advance(Duration::from_secs(31)).await;
        assert!(balance.ejected("db").is_empty());
    }

    #[test]
    fn connections_hash_on_the_source_address_and_count_toward_pool_limits() {
        let hash = LbPolicy::ConsistentHash(HashPolicy { key: HashKey::SourceIp, table: HashTable::RingHash(1024) });
        let cluster = Arc::new(Cluster::from_addresses("db", addrs(5), hash));
        let balance = BalanceLayer::new();
        for client in ["10.0.0.1", "10.0.0.2", "10.0.0.3"] {
            let ip: IpAddr = client.parse().unwrap();
            let first = balance.pick_connection(&cluster, Some(ip), &[]).unwrap().endpoint().address;
            for _ in 0..5 {
                assert_eq!(balance.pick_connection(&cluster, Some(ip), &[]).unwrap().endpoint().address, first);
            }
        }
        // An open connection is outstanding: maxConnections 1 refuses a second (UO).
        let mut limited = Cluster::from_addresses("db", addrs(2), LbPolicy::RoundRobin);
        limited.pool.max_connections = Some(1);
        limited.pool.max_pending_requests = Some(0);
        let limited = Arc::new(limited);
        let open = balance.pick_connection(&limited, None, &[]).unwrap();
        let err = balance.pick_connection(&limited, None, &[]).unwrap_err();
        assert!(is_caused_by::<Overflow>(&*err), "{err}");
        drop(open);
        assert!(balance.pick_connection(&limited, None, &[]).is_ok());
        // No endpoints: no healthy upstream (UH).
        let empty = Arc::new(Cluster::from_addresses("none", [], LbPolicy::RoundRobin));
        let err = balance.pick_connection(&empty, None, &[]).unwrap_err();
        assert!(is_caused_by::<NoHealthyUpstream>(&*err), "{err}");
        // Plain addresses have no mesh identity: plaintext, as for HTTP.
        assert!(!balance.clone().with_auto_mtls(true).pick_connection(&cluster, None, &[]).unwrap().tls());
    }
}

/// Load balancing and outlier detection through the router, over a compiled table of a
/// cluster of four endpoints.
#[cfg(all(test, feature = "config"))]
mod tests_over_a_route_table {

    use std::{sync::Arc, time::Duration};

    use bytes::Bytes;
    use http::{Request, Response, StatusCode};
    use http_body_util::Full;
    use mesh_config::{
        load::{LoadOptions, load_str},
        registry::{Locator, Registry},
    };
    use mesh_core::roll::SeededRoll;
    use mesh_core::{BoxBody, BoxError};
    use tokio_test::{assert_pending, assert_ready_ok, task};
    use tower::{Layer, Service, ServiceExt, service_fn};
    use tower_test::mock;

    use crate::layer::{test_support::*, *};
    use crate::policy::{ProxyContext, RouteTable};

    fn cluster_table(traffic_policy: &str) -> TableHandle {
        let yaml = format!(
            r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: pool}}
spec:
  hosts: [pool.internal]
  location: MESH_INTERNAL
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1}}, {{address: 127.0.0.2}}, {{address: 127.0.0.3}}, {{address: 127.0.0.4}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: pool}}
spec:
  host: pool.internal
  trafficPolicy: {traffic_policy}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: pool}}
spec:
  hosts: [pool.internal]
  http:
  - route: [{{destination: {{host: pool.internal}}, headers: {{request: {{set: {{x-dest: pool}}}}, response: {{set: {{x-dest-rsp: yes}}}}}}}}]
    rewrite: {{authority: pool.example}}
"#
        );
        let loaded = load_str("p.yaml", &yaml, &LoadOptions::default());
        assert!(!loaded.has_errors(), "{}", loaded.report());
        let s = loaded.into_snapshot();
        TableHandle::new(RouteTable::compile(
            &s,
            &Registry::build(&s, &Locator::new()),
            &ProxyContext::sidecar("default", Default::default()),
        ))
    }

    /// Upstream: answers with the endpoint it was sent to; `.4` fails with 500 when `bad`.
    fn endpoint_echo(
        bad: bool,
    ) -> impl Service<
        Request<RetryBody<Full<Bytes>>>,
        Response = Response<BoxBody>,
        Error = BoxError,
        Future = impl Send,
    > + Clone
    + Send
    + 'static {
        service_fn(move |req: Request<RetryBody<Full<Bytes>>>| async move {
            let host = req.uri().host().unwrap_or("").to_string();
            assert_eq!(req.headers()["host"], "pool.example", "authority rewrite");
            assert_eq!(req.headers()["x-dest"], "pool", "destination-level request headers");
            let mut rsp = Response::new(mesh_core::body::full(host.clone()));
            if bad && host == "127.0.0.4" {
                *rsp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            }
            Ok::<_, BoxError>(rsp)
        })
    }

    fn pool_stack(
        policy: &str,
        bad: bool,
        balance: BalanceLayer,
    ) -> impl Service<Request<Full<Bytes>>, Response = Response<BoxBody>, Error = BoxError> + Clone {
        tower::ServiceBuilder::new()
            .layer(tower::layer::layer_fn(edge))
            .layer(RouterLayer::new(cluster_table(policy)))
            .layer(RetryLayer::per_route())
            .layer(balance)
            .service(endpoint_echo(bad))
    }

    fn pool_get(headers: &[(&'static str, &'static str)], path: &str) -> Request<Full<Bytes>> {
        let mut b = Request::builder().uri(format!("http://pool.internal{path}"));
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(Full::new(Bytes::new())).unwrap()
    }

    async fn endpoint_of<S>(svc: &S, req: Request<Full<Bytes>>) -> String
    where
        S: Service<Request<Full<Bytes>>, Response = Response<BoxBody>, Error = BoxError> + Clone,
    {
        let rsp = svc.clone().oneshot(req).await.unwrap();
        assert_eq!(rsp.headers()["x-dest-rsp"], "yes", "destination-level response headers");
        text(rsp).await
    }

    #[tokio::test]
    async fn round_robin_and_random_spread_over_every_endpoint() {
        let rr = pool_stack("{loadBalancer: {simple: ROUND_ROBIN}}", false, BalanceLayer::new());
        let mut seen = Vec::new();
        for _ in 0..8 {
            seen.push(endpoint_of(&rr, pool_get(&[], "/")).await);
        }
        assert_eq!(seen[..4], seen[4..], "a fixed rotation");
        let mut distinct = seen.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 4);

        let random = pool_stack(
            "{loadBalancer: {simple: RANDOM}}",
            false,
            BalanceLayer::new().with_rng(Arc::new(SeededRoll::new(9))),
        );
        let mut counts = std::collections::BTreeMap::new();
        for _ in 0..400 {
            *counts.entry(endpoint_of(&random, pool_get(&[], "/")).await).or_insert(0) += 1;
        }
        assert_eq!(counts.len(), 4);
        assert!(counts.values().all(|n| (60..=140).contains(n)), "{counts:?}");
    }

    #[tokio::test]
    async fn least_request_avoids_the_busy_endpoint() {
        // Endpoint .1 holds requests; the others answer at once.
        let (inner, mut handle) = mock::pair::<Request<RetryBody<Full<Bytes>>>, Response<BoxBody>>();
        let svc = edge(RouterLayer::new(cluster_table("{}")).layer(
            RetryLayer::per_route().layer(BalanceLayer::new().with_rng(Arc::new(SeededRoll::new(5))).layer(inner)),
        ));
        handle.allow(1000);
        let mut pending = Vec::new();
        // Send 40 requests; answer all but those sent to .1.
        for _ in 0..40 {
            let mut fut = task::spawn(svc.clone().oneshot(pool_get(&[], "/")));
            assert_pending!(fut.poll());
            let (req, send) = handle.next_request().await.unwrap();
            if req.uri().host() == Some("127.0.0.1") {
                pending.push((fut, send));
            } else {
                send.send_response(Response::new(mesh_core::body::empty()));
                assert_ready_ok!(fut.poll());
            }
        }
        // With power of two choices on outstanding requests, the busy endpoint is picked only
        // when both samples land on it: far fewer than a quarter of the requests.
        assert!(pending.len() <= 6, "{} requests went to the busy endpoint", pending.len());
    }

    #[tokio::test]
    async fn consistent_hash_by_cookie_query_and_source_ip() {
        for (policy, key) in [
            ("{loadBalancer: {consistentHash: {httpQueryParameterName: user}}}", "query"),
            ("{loadBalancer: {consistentHash: {httpCookie: {name: session, ttl: 60s}}}}", "cookie"),
            ("{loadBalancer: {consistentHash: {useSourceIp: true}}}", "ip"),
        ] {
            let svc = pool_stack(policy, false, BalanceLayer::new());
            let mut firsts = std::collections::BTreeSet::new();
            for user in 0..12u16 {
                let make = || {
                    let mut req = match key {
                        "query" => pool_get(&[], &format!("/?user=u{user}")),
                        "cookie" => {
                            let mut r = pool_get(&[], "/");
                            r.headers_mut().insert("cookie", format!("a=b; session=s{user}").parse().unwrap());
                            r
                        }
                        _ => pool_get(&[], "/"),
                    };
                    req.extensions_mut().insert(ClientAddr(format!("10.0.0.{user}:5000").parse().unwrap()));
                    req
                };
                let first = endpoint_of(&svc, make()).await;
                for _ in 0..3 {
                    assert_eq!(endpoint_of(&svc, make()).await, first, "{key} {user}");
                }
                firsts.insert(first);
            }
            assert!(firsts.len() >= 2, "{key}: every key on one endpoint");
        }
        // Without the cookie and with a ttl, one is generated.
        let svc = pool_stack(
            "{loadBalancer: {consistentHash: {httpCookie: {name: session, path: /, ttl: 60s}}}}",
            false,
            BalanceLayer::new(),
        );
        let rsp = svc.oneshot(pool_get(&[], "/")).await.unwrap();
        let set = rsp.headers()["set-cookie"].to_str().unwrap().to_string();
        assert!(set.starts_with("session=\"") && set.ends_with("; Max-Age=60; Path=/"), "{set}");
    }

    #[tokio::test(start_paused = true)]
    async fn ejection_time_grows_with_each_ejection() {
        let balance = BalanceLayer::new();
        let policy = "{loadBalancer: {simple: ROUND_ROBIN}, outlierDetection: {consecutive5xxErrors: 1, baseEjectionTime: 10s, maxEjectionPercent: 25}}";
        let svc = pool_stack(policy, true, balance.clone());
        let cluster = "outbound|80||pool.internal";
        let drive = |n: usize| {
            let svc = svc.clone();
            async move {
                for _ in 0..n {
                    let _ = svc.clone().oneshot(pool_get(&[], "/")).await.unwrap();
                }
            }
        };
        drive(4).await;
        assert_eq!(balance.ejected(cluster), ["127.0.0.4:80".parse().unwrap()]);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(balance.ejected(cluster).is_empty(), "first ejection: 10 s");
        drive(4).await;
        assert_eq!(balance.ejected(cluster).len(), 1);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(balance.ejected(cluster).len(), 1, "second ejection: 20 s");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(balance.ejected(cluster).is_empty());
    }
}
