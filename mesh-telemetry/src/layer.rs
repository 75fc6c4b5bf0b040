//! The telemetry layer: one record per request (metrics, access log), trace context and
//! `x-request-id` on the way through, as Istio's sidecars do on both sides of a hop.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc, Weak,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll, ready},
    time::SystemTime,
};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, header};
use http_body::{Body, Frame, SizeHint};
use mesh_core::{
    Labels,
    ext::{PeerIdentity, ResponseFlags, RouteDecision, UpstreamEndpoint},
    request::resolve_host,
};
use pin_project_lite::pin_project;
use rand::{Rng, SeedableRng, rngs::SmallRng};
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use crate::{
    access_log::{AccessLog, Entry, LogControl},
    metrics::{CacheEntry, HandleCache, MeshMetrics, RequestLabels},
    trace::{TraceContext, request_id_from_bits},
};

/// The header that carries the caller's workload to the callee's proxy (Istio's metadata
/// exchange, in a plain `key=value;...` form).
pub const PEER_HEADER: &str = "x-mesh-peer";
static PEER: http::HeaderName = http::HeaderName::from_static(PEER_HEADER);
static REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");
static GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");

/// Which side of the hop this proxy reports for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reporter {
    /// The caller's proxy (outbound, gateways).
    Source,
    /// The callee's proxy (inbound).
    Destination,
}

/// Who this proxy's workload is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadInfo {
    /// Workload (Deployment) name.
    pub workload: String,
    /// Namespace.
    pub namespace: String,
    /// `app` label.
    pub app: String,
    /// `version` label.
    pub version: String,
    /// SPIFFE identity, when the workload has one.
    pub principal: Option<String>,
    /// Cluster name.
    pub cluster: String,
    /// Trust domain of the principals this workload reports for its peers (its own
    /// identity's; `cluster.local` without one).
    pub trust_domain: String,
}

#[cfg(feature = "config")]
impl From<&mesh_config::registry::LocalWorkload> for WorkloadInfo {
    /// A proxy's own workload, its identity as the principal.
    fn from(w: &mesh_config::registry::LocalWorkload) -> Self {
        Self::new(&w.workload, &w.namespace, &w.labels, Some(w.identity.to_string()))
    }
}

impl WorkloadInfo {
    /// From a workload's labels, as Istio derives them (`app`, `version`; the canonical
    /// service and revision labels when present).
    pub fn new(workload: &str, namespace: &str, labels: &Labels, principal: Option<String>) -> Self {
        let pick = |keys: &[&str], default: &str| {
            keys.iter().find_map(|k| labels.get(*k)).cloned().unwrap_or_else(|| default.to_string())
        };
        Self {
            workload: workload.to_string(),
            namespace: namespace.to_string(),
            app: pick(&["service.istio.io/canonical-name", "app.kubernetes.io/name", "app"], workload),
            version: pick(&["service.istio.io/canonical-revision", "app.kubernetes.io/version", "version"], "latest"),
            trust_domain: principal
                .as_deref()
                .and_then(|p| p.parse::<mesh_core::Identity>().ok())
                .map_or_else(|| mesh_core::DEFAULT_TRUST_DOMAIN.to_string(), |i| i.trust_domain().to_string()),
            principal,
            cluster: "Kubernetes".into(),
        }
    }

    fn header_value(&self) -> Option<HeaderValue> {
        HeaderValue::from_str(&format!(
            "workload={};namespace={};app={};version={}",
            self.workload, self.namespace, self.app, self.version
        ))
        .ok()
    }
}

/// The fields of a peer header.
fn parse_peer(v: &str) -> impl Fn(&str) -> String + '_ {
    move |key| {
        v.split(';')
            .find_map(|kv| kv.split_once('=').filter(|(k, _)| *k == key).map(|(_, v)| v.to_string()))
            .unwrap_or_else(|| "unknown".into())
    }
}

/// What identifies a label set cheaply: stored with shared strings, looked up with borrowed
/// ones (both hash alike), so a hit neither allocates nor touches a reference count.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Key<S> {
    /// The caller's metadata header.
    peer: Option<S>,
    /// The caller's mTLS identity (trust domain, namespace, service account).
    principal: Option<(S, S, S)>,
    workload: Option<(S, S)>,
    service: Option<S>,
    code: u16,
    flags: u32,
    grpc: Option<u16>,
    grpc_protocol: bool,
}

impl Key<&str> {
    fn to_owned(&self) -> Key<Arc<str>> {
        Key {
            peer: self.peer.map(Arc::from),
            principal: self.principal.map(|(t, n, s)| (Arc::from(t), Arc::from(n), Arc::from(s))),
            workload: self.workload.map(|(w, n)| (Arc::from(w), Arc::from(n))),
            service: self.service.map(Arc::from),
            code: self.code,
            flags: self.flags,
            grpc: self.grpc,
            grpc_protocol: self.grpc_protocol,
        }
    }
}

impl hashbrown::Equivalent<Key<Arc<str>>> for Key<&str> {
    fn equivalent(&self, k: &Key<Arc<str>>) -> bool {
        self.peer == k.peer.as_deref()
            && self.principal == k.principal.as_ref().map(|(t, n, s)| (&**t, &**n, &**s))
            && self.workload == k.workload.as_ref().map(|(w, n)| (&**w, &**n))
            && self.service == k.service.as_deref()
            && (self.code, self.flags, self.grpc, self.grpc_protocol) == (k.code, k.flags, k.grpc, k.grpc_protocol)
    }
}

/// A resolved label set as the cache stores it.
type Resolved = Arc<CacheEntry<Key<Arc<str>>>>;

thread_local! {
    /// The label set this thread resolved last, and the layer it belongs to: consecutive
    /// requests with the same labels skip the cache's hashing. The `Weak` keeps the layer's
    /// allocation, so its address cannot be reused by another layer while it is held.
    static LAST: std::cell::RefCell<Option<(Weak<Shared>, Resolved)>> =
        const { std::cell::RefCell::new(None) };
}

/// Whether a caller's metadata (workload, namespace) belongs to its mTLS identity.
pub type PeerCheck = Arc<dyn Fn(&str, &str, &mesh_core::Identity) -> bool + Send + Sync>;

/// The service this workload serves (FQDN), swapped when config changes.
pub type LocalService = Arc<ArcSwap<Option<String>>>;

struct Shared {
    metrics: Arc<MeshMetrics>,
    reporter: Reporter,
    local: WorkloadInfo,
    local_service: LocalService,
    peer_check: Option<PeerCheck>,
    local_header: Option<HeaderValue>,
    cache: HandleCache<Key<Arc<str>>>,
    access_log: Option<AccessLog>,
    log_control: Option<Arc<LogControl>>,
    trace: Arc<crate::trace::TraceControl>,
    tracing: bool,
    /// Seed of the generators; each service instance takes the next stream.
    seed: u64,
    streams: AtomicU64,
    #[cfg(feature = "otel")]
    otlp: Option<crate::otlp::OtlpExporter>,
}

/// How a [`TelemetryLayer`] is set up (kept so each `with_*` rebuilds from all of it).
#[derive(Clone)]
struct Options {
    metrics: Arc<MeshMetrics>,
    reporter: Reporter,
    local: WorkloadInfo,
    local_service: LocalService,
    peer_check: Option<PeerCheck>,
    access_log: Option<AccessLog>,
    log_control: Option<Arc<LogControl>>,
    trace: Arc<crate::trace::TraceControl>,
    tracing: bool,
    seed: u64,
    #[cfg(feature = "otel")]
    otlp: Option<crate::otlp::OtlpExporter>,
}

/// Records Istio's standard metrics, writes access logs, and propagates trace context.
#[derive(Clone)]
pub struct TelemetryLayer {
    shared: Arc<Shared>,
    options: Options,
}

impl std::fmt::Debug for TelemetryLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryLayer")
            .field("reporter", &self.shared.reporter)
            .field("workload", &self.shared.local.workload)
            .finish_non_exhaustive()
    }
}

impl TelemetryLayer {
    /// Report as `reporter` for `local`'s workload into `metrics`. No access log; new
    /// traces sampled at 1 % (Istio's default).
    pub fn new(metrics: Arc<MeshMetrics>, reporter: Reporter, local: WorkloadInfo) -> Self {
        Self::from_options(Options {
            metrics,
            reporter,
            local,
            local_service: LocalService::default(),
            peer_check: None,
            access_log: None,
            log_control: None,
            trace: Arc::new(crate::trace::TraceControl::new(1.0, true)),
            tracing: true,
            seed: rand::rng().random(),
            #[cfg(feature = "otel")]
            otlp: None,
        })
    }

    fn from_options(o: Options) -> Self {
        let shared = Shared {
            metrics: o.metrics.clone(),
            reporter: o.reporter,
            local_header: o.local.header_value(),
            local: o.local.clone(),
            local_service: o.local_service.clone(),
            peer_check: o.peer_check.clone(),
            cache: HandleCache::default(),
            access_log: o.access_log.clone(),
            log_control: o.log_control.clone(),
            trace: o.trace.clone(),
            tracing: o.tracing,
            seed: o.seed,
            streams: AtomicU64::new(0),
            #[cfg(feature = "otel")]
            otlp: o.otlp.clone(),
        };
        Self { shared: Arc::new(shared), options: o }
    }

    fn with(&self, f: impl FnOnce(&mut Options)) -> Self {
        let mut o = self.options.clone();
        f(&mut o);
        Self::from_options(o)
    }

    /// Write an access log line per request.
    #[must_use]
    pub fn with_access_log(self, log: AccessLog) -> Self {
        self.with(|o| o.access_log = Some(log))
    }

    /// Which requests the access log writes, as `control` says at each request's start
    /// (Telemetry `accessLogging`: on, off, a filter); without it, every request.
    #[must_use]
    pub fn with_log_control(self, control: Arc<LogControl>) -> Self {
        self.with(|o| o.log_control = Some(control))
    }

    /// The service this workload serves, for `destination_service` as the destination
    /// reporter (Istio labels from the workload's own service, never from the Host a caller
    /// sent); `unknown` while it is `None`. Swap the value when config changes.
    #[must_use]
    pub fn with_local_service(self, service: LocalService) -> Self {
        self.with(|o| o.local_service = service)
    }

    /// [`TelemetryLayer::with_local_service`] with a fixed service FQDN.
    #[must_use]
    pub fn with_service(self, fqdn: impl Into<String>) -> Self {
        self.with_local_service(Arc::new(ArcSwap::from_pointee(Some(fqdn.into()))))
    }

    /// Verify a caller's metadata against the registry: `check(workload, namespace,
    /// identity)` says whether that workload runs as that identity. Without a check, the
    /// metadata is used when its namespace is the identity's. Metadata from a caller
    /// without an mTLS identity is never used (its source labels are `unknown`).
    #[must_use]
    pub fn with_peer_check(self, check: PeerCheck) -> Self {
        self.with(|o| o.peer_check = Some(check))
    }

    /// Percentage of new traces sampled.
    #[must_use]
    pub fn with_sampling(self, percent: f64) -> Self {
        self.with(|o| o.trace = Arc::new(crate::trace::TraceControl::new(percent, true)))
    }

    /// Sampling and span reporting from `control`, which may change while serving (a
    /// Telemetry resource's `randomSamplingPercentage` and `disableSpanReporting`).
    #[must_use]
    pub fn with_trace_control(self, control: Arc<crate::trace::TraceControl>) -> Self {
        self.with(|o| o.trace = control)
    }

    /// Propagate trace context (on by default). Off is Istio's `meshConfig.enableTracing:
    /// false`: no trace headers are read or written and no spans are exported;
    /// `x-request-id` is still generated when absent.
    #[must_use]
    pub fn with_tracing(self, enabled: bool) -> Self {
        self.with(|o| o.tracing = enabled)
    }

    /// Seed the generator of ids and sampling (deterministic tests).
    #[must_use]
    pub fn with_seed(self, seed: u64) -> Self {
        self.with(|o| o.seed = seed)
    }

    /// Export a span per sampled request over OTLP/HTTP.
    #[cfg(feature = "otel")]
    #[must_use]
    pub fn with_otlp(self, exporter: crate::otlp::OtlpExporter) -> Self {
        self.with(|o| o.otlp = Some(exporter))
    }
}

impl<S> Layer<S> for TelemetryLayer {
    type Service = Telemetry<S>;
    fn layer(&self, inner: S) -> Telemetry<S> {
        Telemetry { inner, rng: self.shared.next_rng(), shared: self.shared.clone() }
    }
}

impl Shared {
    /// Whether peer metadata `v` describes a workload running as `identity`.
    fn peer_matches(&self, v: &str, identity: &mesh_core::Identity) -> bool {
        let field = parse_peer(v);
        let (workload, namespace) = (field("workload"), field("namespace"));
        namespace == identity.namespace()
            && self.peer_check.as_ref().is_none_or(|check| check(&workload, &namespace, identity))
    }

    /// A generator for one service instance: ids and sampling without a shared lock, and
    /// still deterministic for a given seed and order of clones.
    fn next_rng(&self) -> SmallRng {
        let stream = self.streams.fetch_add(1, Ordering::Relaxed);
        SmallRng::seed_from_u64(self.seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }
}

/// See [`TelemetryLayer`].
pub struct Telemetry<S> {
    inner: S,
    shared: Arc<Shared>,
    rng: SmallRng,
}

impl<S: Clone> Clone for Telemetry<S> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone(), rng: self.shared.next_rng(), shared: self.shared.clone() }
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for Telemetry<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry").field("inner", &self.inner).finish_non_exhaustive()
    }
}

/// What the request side hands to the response side.
struct RequestSide {
    shared: Arc<Shared>,
    start: Instant,
    started_at: SystemTime,
    peer: Option<Arc<str>>,
    peer_principal: Option<mesh_core::Identity>,
    /// The Host as sent, only for a routed request whose failure lost the route decision.
    authority: Option<HeaderValue>,
    grpc_protocol: bool,
    request_bytes: u64,
    log: Option<(Box<Entry>, Option<Arc<mesh_core::cel::Expr>>)>,
    trace_id: Option<u128>,
    #[cfg(feature = "otel")]
    span: Option<(TraceContext, String, http::Method)>,
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for Telemetry<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ReqB: Body,
{
    type Response = Response<TelemetryBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        let shared = &self.shared;
        let start = Instant::now();
        let rng = &mut self.rng;
        let span = shared.tracing.then(|| match TraceContext::extract(req.headers()) {
            Some(parent) => parent.child(rng),
            None => {
                let sampled = rng.random::<f64>() * 100.0 < shared.trace.sampling();
                TraceContext::root(rng, sampled)
            }
        });
        match &span {
            Some(span) => {
                let id = (!req.headers().contains_key(&REQUEST_ID)).then(|| rng.random::<u128>());
                // Room for what this layer adds (request id, trace context, peer), so the
                // map grows at most once.
                req.headers_mut().reserve(7);
                span.inject_with_request_id(req.headers_mut(), id);
            }
            None => {
                if let http::header::Entry::Vacant(slot) = req.headers_mut().entry(REQUEST_ID.clone()) {
                    slot.insert(request_id_from_bits(rng.random()));
                }
            }
        }
        let peer_principal = req.extensions().get::<PeerIdentity>().map(|p| p.0.clone());
        let peer: Option<Arc<str>> = match shared.reporter {
            Reporter::Source => {
                if let Some(v) = &shared.local_header {
                    req.headers_mut().insert(PEER.clone(), v.clone());
                }
                None
            }
            // Always stripped before the app; used only when it belongs to the mTLS peer.
            Reporter::Destination => req.headers_mut().remove(&PEER).and_then(|v| {
                let v = v.to_str().ok()?;
                shared.peer_matches(v, peer_principal.as_ref()?).then(|| Arc::from(v))
            }),
        };
        // The authority as the caller sent it, for the access log and span name (never a
        // metric label). A shared copy of the header, no allocation.
        let authority_value: Option<HeaderValue> = mesh_core::request::authority_value(&req);
        let authority = authority_value.as_ref().and_then(|v| v.to_str().ok());
        let grpc_protocol = mesh_core::request::is_grpc(&req);
        let request_bytes = req
            .body()
            .size_hint()
            .exact()
            .or_else(|| req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok()))
            .unwrap_or(0);
        let log = shared.access_log.as_ref().and_then(|_| {
            let rule = shared.log_control.as_ref().map(|c| c.rule());
            let filter = match rule {
                Some(r) if !r.on => return None,
                Some(r) => r.filter.clone(),
                None => None,
            };
            let entry = Entry::for_filter(&req, authority.unwrap_or("-"), filter.as_deref());
            Some((Box::new(entry), filter))
        });
        #[cfg(feature = "otel")]
        let span_name = (shared.otlp.is_some() && span.is_some_and(|s| s.sampled) && shared.trace.report())
            .then(|| (format!("{}{}", authority.unwrap_or("-"), req.uri().path()), req.method().clone()));
        // The wall clock only for what prints it: the access log, an exported span.
        #[cfg(feature = "otel")]
        let needs_wall_clock = log.is_some() || span_name.is_some();
        #[cfg(not(feature = "otel"))]
        let needs_wall_clock = log.is_some();
        let pending = RequestSide {
            shared: shared.clone(),
            start,
            started_at: if needs_wall_clock { SystemTime::now() } else { SystemTime::UNIX_EPOCH },
            peer,
            peer_principal,
            authority: authority_value,
            grpc_protocol,
            request_bytes,
            log,
            trace_id: span.map(|s| s.trace_id),
            #[cfg(feature = "otel")]
            span: span.zip(span_name).map(|(ctx, (name, method))| (ctx, name, method)),
        };
        ResponseFuture { inner: self.inner.call(req), pending: Some(pending) }
    }
}

pin_project! {
    /// Response future of [`Telemetry`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        pending: Option<RequestSide>,
    }

    impl<F> PinnedDrop for ResponseFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            // Dropped before a response: the caller went away (its connection closed, its
            // own timeout). Envoy records it as `response_code="0"`, `DC`, and so do the
            // metrics, the access log and the span here.
            if let Some(pending) = this.project().pending.take() {
                let mut done = pending.resolve(None, ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION);
                done.code_zero();
                done.finish(0);
            }
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<TelemetryBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let pending = this.pending.take().expect("polled after ready");
        Poll::Ready(match result {
            Ok(rsp) => {
                let (parts, body) = rsp.into_parts();
                let done = pending.resolve(Some(&parts), ResponseFlags::default());
                Ok(Response::from_parts(parts, TelemetryBody { inner: body, done: Some(done), bytes: 0 }))
            }
            Err(e) => {
                // No response was sent: response_code 0 (the caller went away or the stack
                // failed without a local reply).
                let mut done = pending.resolve(None, ResponseFlags::default());
                done.code_zero();
                done.finish(0);
                Err(e)
            }
        })
    }
}

/// Everything needed to record the request when its response body ends.
struct Done {
    handles: Resolved,
    start: Instant,
    request_bytes: u64,
    log: Option<(AccessLog, Box<Entry>, Option<Arc<mesh_core::cel::Expr>>)>,
    #[cfg(feature = "otel")]
    span: Option<(crate::otlp::OtlpExporter, crate::otlp::SpanRecord)>,
}

impl Done {
    fn code_zero(&mut self) {
        if let Some((_, e, _)) = &mut self.log {
            e.status = 0;
        }
        #[cfg(feature = "otel")]
        if let Some((_, s)) = &mut self.span {
            s.error = true;
        }
    }

    fn finish(&mut self, response_bytes: u64) {
        let ms = self.start.elapsed().as_secs_f64() * 1000.0;
        self.handles.handles.record(ms, self.request_bytes, response_bytes);
        if let Some((log, mut entry, filter)) = self.log.take() {
            entry.duration_ms = ms as u64;
            entry.bytes_received = self.request_bytes;
            entry.bytes_sent = response_bytes;
            if filter.is_none_or(|f| f.eval(&*entry)) {
                log.write(&entry);
            }
        }
        #[cfg(feature = "otel")]
        if let Some((exporter, mut span)) = self.span.take() {
            span.end = SystemTime::now();
            span.attributes.push(("response_size".into(), response_bytes.to_string()));
            exporter.export(span);
        }
    }
}

impl RequestSide {
    /// With the response's head; `None`: no response at all (`response_code="0"`); `extra`
    /// flags added to the response's.
    fn resolve(self, head: Option<&http::response::Parts>, extra: ResponseFlags) -> Done {
        let shared = &self.shared;
        let ext = head.map(|h| &h.extensions);
        let flags = ext.and_then(|e| e.get::<ResponseFlags>()).copied().unwrap_or_default() | extra;
        let decision = ext.and_then(|e| e.get::<RouteDecision>());
        let upstream = ext.and_then(|e| e.get::<UpstreamEndpoint>());
        let grpc =
            head.and_then(|h| h.headers.get(&GRPC_STATUS)).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
        let code = head.map_or(0, |h| h.status.as_u16());
        // The caller's side: the service the route chose (`unknown` without a route, Istio
        // #18821); the callee's: its own service (Istio #32726). Never the Host header.
        let local_service = shared.local_service.load();
        let service = match shared.reporter {
            // A failure below the router (503 UF) carries no decision but had a route: the
            // Host named a configured service. No route (NR) is always `unknown`.
            Reporter::Source => decision.and_then(|d| d.destination_service.as_deref()).or_else(|| {
                (!flags.is_empty() && !flags.contains(ResponseFlags::NO_ROUTE))
                    .then(|| self.authority.as_ref()?.to_str().ok())
                    .flatten()
            }),
            Reporter::Destination => local_service.as_deref(),
        };
        let key = Key {
            peer: self.peer.as_deref(),
            principal: self.peer_principal.as_ref().map(|i| (i.trust_domain(), i.namespace(), i.service_account())),
            workload: upstream.map(|u| (&*u.0.workload, &*u.0.namespace)),
            service,
            code,
            flags: flags.bits(),
            grpc,
            grpc_protocol: self.grpc_protocol,
        };
        let handles = LAST.with_borrow_mut(|last| match last {
            Some((owner, entry))
                if Weak::as_ptr(owner) == Arc::as_ptr(shared)
                    && hashbrown::Equivalent::equivalent(&key, &entry.key) =>
            {
                entry.clone()
            }
            _ => {
                let entry = shared
                    .cache
                    .get(&key, Key::to_owned, &shared.metrics, || self.labels(code, flags, grpc, service, upstream));
                *last = Some((Arc::downgrade(shared), entry.clone()));
                entry
            }
        });
        let log = match (&shared.access_log, self.log) {
            (Some(l), Some((mut e, filter))) => {
                e.status = code;
                e.flags = flags.to_string();
                e.upstream_host = upstream.map(|u| u.0.address.to_string());
                e.route_name = decision.and_then(|d| d.route_name.as_deref().map(str::to_string));
                e.trace_id = self.trace_id.map(|t| format!("{t:032x}"));
                e.start = self.started_at;
                Some((l.clone(), e, filter))
            }
            _ => None,
        };
        #[cfg(feature = "otel")]
        let span = match (&shared.otlp, self.span) {
            (Some(exporter), Some((ctx, name, method))) => Some((
                exporter.clone(),
                crate::otlp::SpanRecord {
                    trace_id: ctx.trace_id,
                    span_id: ctx.span_id,
                    parent_span_id: ctx.parent_span_id,
                    name,
                    server: shared.reporter == Reporter::Destination,
                    start: self.started_at,
                    end: self.started_at,
                    attributes: vec![
                        ("http.status_code".into(), code.to_string()),
                        ("response_flags".into(), flags.to_string()),
                        ("node_id".into(), format!("{}.{}", shared.local.workload, shared.local.namespace)),
                        (
                            "upstream_cluster".into(),
                            decision
                                .and_then(|d| d.destination_service.as_deref().map(str::to_string))
                                .unwrap_or_else(|| "-".into()),
                        ),
                        ("http.method".into(), method.to_string()),
                        ("upstream_address".into(), upstream.map_or_else(|| "-".into(), |u| u.0.address.to_string())),
                    ],
                    error: code >= 500,
                },
            )),
            _ => None,
        };
        Done {
            handles,
            start: self.start,
            request_bytes: self.request_bytes,
            log,
            #[cfg(feature = "otel")]
            span,
        }
    }

    fn labels(
        &self,
        code: u16,
        flags: ResponseFlags,
        grpc: Option<u16>,
        service: Option<&str>,
        upstream: Option<&UpstreamEndpoint>,
    ) -> RequestLabels {
        let local = &self.shared.local;
        let unknown = || "unknown".to_string();
        let local_principal = local.principal.clone().unwrap_or_else(unknown);
        let mut l = RequestLabels {
            request_protocol: if self.grpc_protocol { "grpc" } else { "http" }.into(),
            response_code: code.to_string(),
            grpc_response_status: grpc.map(|g| g.to_string()).unwrap_or_default(),
            response_flags: flags.to_string(),
            ..RequestLabels::default()
        };
        // Decisions name FQDNs; a Host (failures without a decision) is resolved like one.
        let service_fqdn = service.map(|h| resolve_host(h.rsplit_once(':').map_or(h, |(h, _)| h), &local.namespace));
        let (svc_name, svc_ns) = match &service_fqdn {
            Some(f) => {
                let mut parts = f.split('.');
                (parts.next().unwrap_or("unknown").to_string(), parts.next().map_or_else(unknown, str::to_string))
            }
            None => (unknown(), unknown()),
        };
        l.destination_service = service_fqdn.unwrap_or_else(unknown);
        l.destination_service_name = svc_name;
        l.destination_service_namespace = svc_ns;
        match self.shared.reporter {
            Reporter::Source => {
                l.reporter = "source".into();
                l.source_workload = local.workload.clone();
                l.source_workload_namespace = local.namespace.clone();
                l.source_principal = local_principal;
                l.source_app = local.app.clone();
                l.source_version = local.version.clone();
                l.source_canonical_service = local.app.clone();
                l.source_canonical_revision = local.version.clone();
                l.source_cluster = local.cluster.clone();
                match upstream {
                    Some(u) => {
                        let e = &u.0;
                        let get = |k: &str, d: &str| e.labels.get(k).cloned().unwrap_or_else(|| d.to_string());
                        l.destination_workload = e.workload.to_string();
                        l.destination_workload_namespace = e.namespace.to_string();
                        l.destination_principal = e.identity.as_ref().map_or_else(unknown, ToString::to_string);
                        l.destination_app = get("app", "unknown");
                        l.destination_version = get("version", "unknown");
                        l.destination_canonical_service = get("app", &e.workload);
                        l.destination_canonical_revision = get("version", "latest");
                        l.destination_cluster = local.cluster.clone();
                    }
                    None => {
                        for f in [
                            &mut l.destination_workload,
                            &mut l.destination_workload_namespace,
                            &mut l.destination_principal,
                            &mut l.destination_app,
                            &mut l.destination_version,
                            &mut l.destination_canonical_service,
                            &mut l.destination_cluster,
                        ] {
                            *f = unknown();
                        }
                        l.destination_canonical_revision = "latest".into();
                    }
                }
                // The client cannot know what the server enforced.
                l.connection_security_policy = "unknown".into();
            }
            Reporter::Destination => {
                l.reporter = "destination".into();
                l.destination_workload = local.workload.clone();
                l.destination_workload_namespace = local.namespace.clone();
                l.destination_principal = local_principal;
                l.destination_app = local.app.clone();
                l.destination_version = local.version.clone();
                l.destination_canonical_service = local.app.clone();
                l.destination_canonical_revision = local.version.clone();
                l.destination_cluster = local.cluster.clone();
                let field = self.peer.as_deref().map(parse_peer);
                let get = |k: &str| field.as_ref().map_or_else(unknown, |f| f(k));
                l.source_workload = get("workload");
                l.source_workload_namespace = get("namespace");
                l.source_app = get("app");
                l.source_version = get("version");
                l.source_canonical_service = get("app");
                l.source_canonical_revision = if self.peer.is_some() { get("version") } else { "latest".into() };
                l.source_principal = self.peer_principal.as_ref().map_or_else(unknown, ToString::to_string);
                l.source_cluster = if self.peer.is_some() { local.cluster.clone() } else { unknown() };
                l.connection_security_policy = if self.peer_principal.is_some() { "mutual_tls" } else { "none" }.into();
            }
        }
        l
    }
}

pin_project! {
    /// The response body: counts bytes and records the request when it ends (or is dropped).
    pub struct TelemetryBody<B> {
        #[pin]
        inner: B,
        done: Option<Done>,
        bytes: u64,
    }

    impl<B> PinnedDrop for TelemetryBody<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(mut done) = this.done.take() {
                done.finish(*this.bytes);
            }
        }
    }
}

impl<B> TelemetryBody<B> {
    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }
}

impl<B> Body for TelemetryBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                if let Some(d) = f.data_ref() {
                    *this.bytes += d.len() as u64;
                }
            }
            None | Some(Err(_)) => {
                if let Some(mut done) = this.done.take() {
                    done.finish(*this.bytes);
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access_log::Format;
    use std::convert::Infallible;
    use tower::{ServiceExt, service_fn};

    /// Tracing off (`enableTracing: false`): trace headers pass through untouched, none are
    /// added, the request id still is, and the access log shows no trace id.
    #[tokio::test]
    async fn tracing_off_writes_only_the_request_id() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let lines = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let (seen2, sink) = (seen.clone(), lines.clone());
        let app = service_fn(move |req: Request<mesh_core::BoxBody>| {
            seen2.lock().unwrap().push(req.headers().clone());
            std::future::ready(Ok::<_, Infallible>(Response::new(mesh_core::body::full("ok"))))
        });
        let me = WorkloadInfo::new("reviews-v1", "default", &Labels::new(), None);
        let layer = TelemetryLayer::new(Arc::new(MeshMetrics::new()), Reporter::Destination, me)
            .with_tracing(false)
            .with_access_log(AccessLog::to(Format::Text, move |l| sink.lock().unwrap().push(l.to_string())));
        let svc = layer.layer(app);
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        for traced in [false, true] {
            let mut req = Request::builder().header("host", "reviews:9080");
            if traced {
                req = req.header("traceparent", parent);
            }
            drop(svc.clone().oneshot(req.body(mesh_core::body::empty()).unwrap()).await.unwrap());
        }
        let seen = seen.lock().unwrap();
        assert!(seen[0].get("traceparent").is_none() && seen[0].get("x-b3-traceid").is_none());
        assert_eq!(seen[1].get("traceparent").unwrap(), parent, "passed through as sent");
        assert!(seen[1].get("x-b3-traceid").is_none());
        for h in seen.iter() {
            assert_eq!(h.get("x-request-id").unwrap().len(), 36);
        }
        let lines = lines.lock().unwrap();
        assert_eq!(lines.len(), 2);
        assert!(lines.iter().all(|l| l.ends_with(" -") && !l.contains("4bf92f3577b34da6")), "{lines:?}");
    }

    /// Telemetry `accessLogging`: the control says on, off, or on for the requests a filter
    /// holds for (reading a request header it keeps and the response code); a new rule is in
    /// force for the next request.
    #[tokio::test]
    async fn the_log_control_turns_lines_on_off_and_filters_them() {
        use crate::access_log::{LogControl, LogRule};
        let lines = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let sink = lines.clone();
        let app = service_fn(|req: Request<mesh_core::BoxBody>| {
            let code = if req.uri().path() == "/fail" { 503 } else { 200 };
            let mut rsp = Response::new(mesh_core::body::full("ok"));
            *rsp.status_mut() = http::StatusCode::from_u16(code).unwrap();
            std::future::ready(Ok::<_, Infallible>(rsp))
        });
        let me = WorkloadInfo::new("reviews-v1", "default", &Labels::new(), None);
        let control = Arc::new(LogControl::new(LogRule { on: false, filter: None }));
        let svc = TelemetryLayer::new(Arc::new(MeshMetrics::new()), Reporter::Destination, me)
            .with_access_log(AccessLog::to(Format::Text, move |l| sink.lock().unwrap().push(l.to_string())))
            .with_log_control(control.clone())
            .layer(app);
        let send = |path: &'static str, user: Option<&'static str>| {
            let svc = svc.clone();
            async move {
                let mut req = Request::builder().uri(path).header("host", "reviews:9080");
                if let Some(u) = user {
                    req = req.header("end-user", u);
                }
                drop(svc.oneshot(req.body(mesh_core::body::empty()).unwrap()).await.unwrap());
            }
        };
        let paths = |lines: &std::sync::Mutex<Vec<String>>| -> Vec<String> {
            lines.lock().unwrap().drain(..).map(|l| l.split('"').nth(1).unwrap().to_string()).collect()
        };
        send("/ok", None).await;
        assert_eq!(paths(&lines), Vec::<String>::new(), "off");
        control.set(LogRule { on: true, filter: None });
        send("/ok", None).await;
        assert_eq!(paths(&lines), ["GET /ok HTTP/1.1"]);
        let filter = mesh_core::cel::Expr::parse("response.code >= 500 || request.headers['End-User'] == 'jason'");
        control.set(LogRule { on: true, filter: Some(Arc::new(filter.unwrap())) });
        for (path, user) in [("/ok", None), ("/fail", None), ("/ok", Some("jason")), ("/ok", Some("amy"))] {
            send(path, user).await;
        }
        assert_eq!(paths(&lines), ["GET /fail HTTP/1.1", "GET /ok HTTP/1.1"]);
    }

    /// The label cache tells callers apart by identity even when their metadata is the same
    /// (two service accounts running the same workload name).
    #[tokio::test]
    async fn callers_with_the_same_metadata_but_other_identities_get_their_own_labels() {
        let app = service_fn(|_req: Request<mesh_core::BoxBody>| {
            std::future::ready(Ok::<_, Infallible>(Response::new(mesh_core::body::full("ok"))))
        });
        let metrics = Arc::new(MeshMetrics::new());
        let me = WorkloadInfo::new("reviews-v1", "default", &Labels::new(), None);
        let svc = TelemetryLayer::new(metrics.clone(), Reporter::Destination, me).layer(app);
        for sa in ["alpha", "beta", "alpha"] {
            let mut req = Request::builder()
                .header("host", "reviews:9080")
                .header(PEER_HEADER, "workload=productpage-v1;namespace=default;app=productpage;version=v1")
                .body(mesh_core::body::empty())
                .unwrap();
            let id = mesh_core::test_util::identity(sa);
            req.extensions_mut().insert(PeerIdentity(id));
            drop(svc.clone().oneshot(req).await.unwrap());
        }
        let text = metrics.encode();
        let count = |sa: &str| {
            text.lines()
                .find(|l| {
                    l.starts_with("istio_requests_total{")
                        && l.contains(&format!("source_principal=\"spiffe://cluster.local/ns/default/sa/{sa}\""))
                })
                .and_then(|l| l.rsplit(' ').next())
                .map(str::to_string)
        };
        assert_eq!(count("alpha").as_deref(), Some("2"), "{text}");
        assert_eq!(count("beta").as_deref(), Some("1"), "{text}");
    }

    fn series(text: &str) -> usize {
        text.lines().filter(|l| l.starts_with("istio_requests_total{")).count()
    }

    fn value(text: &str, family: &str, labels: &[(&str, &str)]) -> f64 {
        text.lines()
            .filter(|l| l.starts_with(&format!("{family}{{")) || l.starts_with(&format!("{family} ")))
            .filter(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum()
    }

    /// A thousand Host headers and forged peer headers from plaintext callers add no series
    /// on the inbound: it labels from its own service, and peer metadata without an mTLS
    /// identity that owns it is ignored and stripped before the app.
    #[tokio::test]
    async fn hosts_and_forged_peer_metadata_do_not_add_series() {
        let seen = Arc::new(std::sync::Mutex::new(0usize));
        let seen2 = seen.clone();
        let app = service_fn(move |req: Request<mesh_core::BoxBody>| {
            if req.headers().contains_key(PEER_HEADER) {
                *seen2.lock().unwrap() += 1;
            }
            std::future::ready(Ok::<_, Infallible>(Response::new(mesh_core::body::full("ok"))))
        });
        let metrics = Arc::new(MeshMetrics::new());
        let me = WorkloadInfo::new("reviews-v1", "default", &Labels::new(), None);
        let svc = TelemetryLayer::new(metrics.clone(), Reporter::Destination, me)
            .with_service("reviews.default.svc.cluster.local")
            .layer(app);
        for i in 0..1000 {
            let req = Request::builder()
                .header("host", format!("host-{i}.example"))
                .header(PEER_HEADER, format!("workload=forged-{i};namespace=ns-{i};app=a{i};version=v{i}"))
                .body(mesh_core::body::empty())
                .unwrap();
            drop(svc.clone().oneshot(req).await.unwrap());
        }
        let text = metrics.encode();
        assert_eq!(series(&text), 1, "{text}");
        assert_eq!(
            value(
                &text,
                "istio_requests_total",
                &[("destination_service", "reviews.default.svc.cluster.local"), ("source_workload", "unknown")]
            ),
            1000.0
        );
        assert_eq!(*seen.lock().unwrap(), 0, "the peer header reached the app");

        // From an mTLS peer: used when its namespace is the identity's (and the check, if
        // any, agrees); otherwise unknown.
        let checked = TelemetryLayer::new(
            metrics.clone(),
            Reporter::Destination,
            WorkloadInfo::new("ratings-v1", "default", &Labels::new(), None),
        )
        .with_peer_check(Arc::new(|workload, _ns, id| {
            workload == "productpage-v1" && id.service_account() == "bookinfo-productpage"
        }))
        .layer(service_fn(|_req: Request<mesh_core::BoxBody>| {
            std::future::ready(Ok::<_, Infallible>(Response::new(mesh_core::body::full("ok"))))
        }));
        for (header, sa, want) in [
            (
                "workload=productpage-v1;namespace=default;app=productpage;version=v1",
                "bookinfo-productpage",
                "productpage-v1",
            ),
            ("workload=productpage-v1;namespace=other;app=productpage;version=v1", "bookinfo-productpage", "unknown"),
            ("workload=details-v1;namespace=default;app=details;version=v1", "bookinfo-productpage", "unknown"),
            ("workload=productpage-v1;namespace=default;app=productpage;version=v1", "bookinfo-reviews", "unknown"),
        ] {
            let mut req = Request::builder().header(PEER_HEADER, header).body(mesh_core::body::empty()).unwrap();
            let id = mesh_core::test_util::identity(sa);
            req.extensions_mut().insert(PeerIdentity(id));
            let before = metrics.encode();
            drop(checked.clone().oneshot(req).await.unwrap());
            let after = metrics.encode();
            let labels = [
                ("destination_workload", "ratings-v1"),
                ("source_workload", want),
                ("source_principal", &*format!("spiffe://cluster.local/ns/default/sa/{sa}")),
            ];
            assert_eq!(
                value(&after, "istio_requests_total", &labels) - value(&before, "istio_requests_total", &labels),
                1.0,
                "{header} as {sa}"
            );
        }
    }

    /// The source reporter labels a request without a route `unknown`, never with its Host.
    #[tokio::test]
    async fn no_route_is_destination_service_unknown() {
        let app = service_fn(|_req: Request<mesh_core::BoxBody>| {
            std::future::ready(Ok::<_, Infallible>(Response::new(mesh_core::body::full("no route"))))
        });
        let metrics = Arc::new(MeshMetrics::new());
        let me = WorkloadInfo::new("productpage-v1", "default", &Labels::new(), None);
        let svc = TelemetryLayer::new(metrics.clone(), Reporter::Source, me).layer(app);
        for i in 0..500 {
            let req = Request::builder().header("host", format!("h{i}")).body(mesh_core::body::empty()).unwrap();
            drop(svc.clone().oneshot(req).await.unwrap());
        }
        let text = metrics.encode();
        assert_eq!(series(&text), 1, "{text}");
        assert_eq!(
            value(
                &text,
                "istio_requests_total",
                &[("destination_service", "unknown"), ("destination_service_name", "unknown")]
            ),
            500.0
        );
    }

    /// Past `--max-label-sets`, new label sets go to one overflow series per reporter and
    /// a counter says how many requests did.
    #[tokio::test]
    async fn label_sets_are_capped_with_an_overflow_series() {
        let app = service_fn(|req: Request<mesh_core::BoxBody>| {
            let code: u16 = req.uri().path()[1..].parse().unwrap();
            let mut rsp = Response::new(mesh_core::body::empty());
            *rsp.status_mut() = http::StatusCode::from_u16(code).unwrap();
            std::future::ready(Ok::<_, Infallible>(rsp))
        });
        let metrics = Arc::new(MeshMetrics::new().with_max_label_sets(5));
        let me = WorkloadInfo::new("reviews-v1", "default", &Labels::new(), None);
        let svc = TelemetryLayer::new(metrics.clone(), Reporter::Destination, me).layer(app);
        // 20 response codes, each twice: 5 label sets, the other 15 codes overflow.
        for code in (200..220).chain(200..220) {
            let req = Request::builder().uri(format!("/{code}")).body(mesh_core::body::empty()).unwrap();
            drop(svc.clone().oneshot(req).await.unwrap());
        }
        let text = metrics.encode();
        assert_eq!(series(&text), 6, "{text}");
        assert_eq!(
            value(&text, "istio_requests_total", &[("response_code", "overflow"), ("reporter", "destination")]),
            30.0
        );
        assert_eq!(value(&text, "mesh_metric_label_overflow_total", &[]), 30.0, "{text}");
        assert_eq!(value(&text, "istio_requests_total", &[("response_code", "200")]), 2.0);
    }

    /// The per-thread memo of the last label set never hands one layer's handles to another
    /// (two layers, two registries, the same labels, one thread).
    #[tokio::test]
    async fn the_last_label_set_memo_stays_with_its_layer() {
        let app = service_fn(|_req: Request<mesh_core::BoxBody>| {
            std::future::ready(Ok::<_, Infallible>(Response::new(mesh_core::body::full("ok"))))
        });
        let me = WorkloadInfo::new("reviews-v1", "default", &Labels::new(), None);
        let (a, b) = (Arc::new(MeshMetrics::new()), Arc::new(MeshMetrics::new()));
        let svc_a = TelemetryLayer::new(a.clone(), Reporter::Destination, me.clone()).layer(app);
        let svc_b = TelemetryLayer::new(b.clone(), Reporter::Destination, me).layer(app);
        let req = || Request::builder().header("host", "reviews:9080").body(mesh_core::body::empty()).unwrap();
        for svc in [&svc_a, &svc_a, &svc_b, &svc_a, &svc_b, &svc_b, &svc_b] {
            drop(svc.clone().oneshot(req()).await.unwrap());
        }
        let total = |m: &MeshMetrics| {
            let text = m.encode();
            text.lines()
                .filter(|l| l.starts_with("istio_requests_total{"))
                .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
                .sum::<u64>()
        };
        assert_eq!((total(&a), total(&b)), (3, 4));
    }
}
