//! Istio's standard metrics with Istio's names, labels and buckets, in a prometheus-client
//! registry. Label sets are resolved once and cached (a lock-free map read per request; a
//! lock only when a new combination appears).

use std::{
    hash::Hash,
    sync::{Arc, Mutex},
};

use arc_swap::ArcSwap;

use crate::{histogram::AtomicHistogram as Histogram, layer::WorkloadInfo};
use mesh_core::{Identity, endpoint::Endpoint, ext::ResponseFlags, hash::FxBuildHasher};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

/// Envoy's default histogram buckets, used by Istio for durations (ms) and sizes (bytes).
pub const BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0, 60000.0, 300000.0,
    600000.0, 1800000.0, 3600000.0,
];

/// The labels of Istio's HTTP metrics.
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `source` or `destination`.
    pub reporter: String,
    /// Caller workload.
    pub source_workload: String,
    /// Its namespace.
    pub source_workload_namespace: String,
    /// Its SPIFFE identity, or `unknown`.
    pub source_principal: String,
    /// Its `app` label.
    pub source_app: String,
    /// Its `version` label.
    pub source_version: String,
    /// Its canonical service.
    pub source_canonical_service: String,
    /// Its canonical revision (`latest` by default).
    pub source_canonical_revision: String,
    /// Its cluster.
    pub source_cluster: String,
    /// Callee workload.
    pub destination_workload: String,
    /// Its namespace.
    pub destination_workload_namespace: String,
    /// Its SPIFFE identity, or `unknown`.
    pub destination_principal: String,
    /// Its `app` label.
    pub destination_app: String,
    /// Its `version` label.
    pub destination_version: String,
    /// Service FQDN.
    pub destination_service: String,
    /// Service short name.
    pub destination_service_name: String,
    /// Service namespace.
    pub destination_service_namespace: String,
    /// Its canonical service.
    pub destination_canonical_service: String,
    /// Its canonical revision.
    pub destination_canonical_revision: String,
    /// Its cluster.
    pub destination_cluster: String,
    /// `http`, `grpc` or `tcp`.
    pub request_protocol: String,
    /// Status sent downstream, `0` when none.
    pub response_code: String,
    /// gRPC status, empty for non-gRPC.
    pub grpc_response_status: String,
    /// Envoy's response flags, `-` when none.
    pub response_flags: String,
    /// `mutual_tls`, `none`, or `unknown` (source reporter).
    pub connection_security_policy: String,
}

impl RequestLabels {
    /// The one label set requests are counted in once a family holds its cap of label sets:
    /// the reporter, and `overflow` in every other label.
    pub fn overflow(reporter: &str) -> Self {
        let o = || "overflow".to_string();
        Self {
            reporter: reporter.to_string(),
            source_workload: o(),
            source_workload_namespace: o(),
            source_principal: o(),
            source_app: o(),
            source_version: o(),
            source_canonical_service: o(),
            source_canonical_revision: o(),
            source_cluster: o(),
            destination_workload: o(),
            destination_workload_namespace: o(),
            destination_principal: o(),
            destination_app: o(),
            destination_version: o(),
            destination_service: o(),
            destination_service_name: o(),
            destination_service_namespace: o(),
            destination_canonical_service: o(),
            destination_canonical_revision: o(),
            destination_cluster: o(),
            request_protocol: o(),
            response_code: o(),
            grpc_response_status: o(),
            response_flags: o(),
            connection_security_policy: o(),
        }
    }
}

/// The default cap of label sets per metric family (`--max-label-sets`).
pub const DEFAULT_MAX_LABEL_SETS: usize = 10_000;

/// The labels of Istio's TCP metrics (the HTTP ones without response code and gRPC status).
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TcpLabels {
    /// `source` or `destination`.
    pub reporter: String,
    /// Caller workload.
    pub source_workload: String,
    /// Its namespace.
    pub source_workload_namespace: String,
    /// Its identity.
    pub source_principal: String,
    /// Callee workload.
    pub destination_workload: String,
    /// Its namespace.
    pub destination_workload_namespace: String,
    /// Its identity.
    pub destination_principal: String,
    /// Service FQDN.
    pub destination_service: String,
    /// Service short name.
    pub destination_service_name: String,
    /// `tcp`.
    pub request_protocol: String,
    /// Flags.
    pub response_flags: String,
    /// `mutual_tls`, `none`, `unknown`.
    pub connection_security_policy: String,
}

impl TcpLabels {
    /// A connection this workload opened (`reporter="source"`) to `service`, through
    /// `endpoint` when one was chosen, with Envoy's `flags` (none, `UF`, `UH`). The callee's
    /// principal is its service account in `me`'s trust domain.
    pub fn source(me: &WorkloadInfo, service: &str, endpoint: Option<&Endpoint>, flags: ResponseFlags) -> Self {
        let unknown = || UNKNOWN.to_string();
        Self {
            reporter: "source".into(),
            source_workload: me.workload.clone(),
            source_workload_namespace: me.namespace.clone(),
            source_principal: me.principal.clone().unwrap_or_else(unknown),
            destination_workload: endpoint.map_or_else(unknown, |e| e.workload.to_string()),
            destination_workload_namespace: endpoint.map_or_else(unknown, |e| e.namespace.to_string()),
            destination_principal: endpoint.and_then(|e| e.identity.as_ref()).map_or_else(unknown, ToString::to_string),
            destination_service: service.to_string(),
            destination_service_name: short_name(service),
            request_protocol: "tcp".into(),
            response_flags: flags.to_string(),
            connection_security_policy: UNKNOWN.into(),
        }
    }

    /// A connection this workload accepted (`reporter="destination"`) for its `service`
    /// (`None`: no service selects it), from `peer` (its verified mTLS identity; `None`:
    /// plaintext).
    pub fn destination(me: &WorkloadInfo, service: Option<&str>, peer: Option<&Identity>) -> Self {
        let unknown = || UNKNOWN.to_string();
        Self {
            reporter: "destination".into(),
            source_workload: unknown(),
            source_workload_namespace: peer.map_or_else(unknown, |p| p.namespace().to_string()),
            source_principal: peer.map_or_else(unknown, ToString::to_string),
            destination_workload: me.workload.clone(),
            destination_workload_namespace: me.namespace.clone(),
            destination_principal: me.principal.clone().unwrap_or_else(unknown),
            destination_service: service.map_or_else(unknown, str::to_string),
            destination_service_name: service.map_or_else(unknown, short_name),
            request_protocol: "tcp".into(),
            response_flags: "-".into(),
            connection_security_policy: if peer.is_some() { "mutual_tls" } else { "none" }.into(),
        }
    }

    /// The same connection with other response flags.
    #[must_use]
    pub fn with_flags(self, flags: ResponseFlags) -> Self {
        Self { response_flags: flags.to_string(), ..self }
    }
}

/// A service FQDN's first label (`reviews.default.svc.cluster.local` -> `reviews`).
fn short_name(fqdn: &str) -> String {
    fqdn.split('.').next().unwrap_or(fqdn).to_string()
}

const UNKNOWN: &str = "unknown";

/// Counters of the proxy itself.
#[derive(Debug, Default)]
pub struct ProxyMetrics {
    /// Config loads that were published.
    pub config_reloads: Counter,
    /// Config loads that failed (the last good config stayed).
    pub config_reload_errors: Counter,
    /// Seconds until the workload certificate expires.
    pub cert_expiry_seconds: Gauge,
    /// Retries sent upstream.
    pub upstream_retries: Counter,
    /// Outlier ejections.
    pub outlier_ejections: Counter,
    /// Authorization decisions by outcome.
    pub authz_decisions: Family<DecisionLabels, Counter>,
    /// Requests counted in the overflow label set because the request families were full.
    pub label_overflow: Counter,
    /// Per-listener connection counters (Envoy's listener and connection manager stats).
    pub listeners: ListenerFamilies,
}

/// Labels of the listener families: Envoy's `envoy_listener_address` (`127.0.0.1_15001`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    /// The listener's address, `IP_PORT`.
    pub envoy_listener_address: String,
}

/// Labels of the HTTP connection manager families: Envoy's `envoy_http_conn_manager_prefix`
/// (`outbound_127.0.0.1_15001`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HcmLabels {
    /// `NAME_IP_PORT`.
    pub envoy_http_conn_manager_prefix: String,
}

/// The connection families of every listener, under Envoy's names.
#[derive(Clone, Debug, Default)]
pub struct ListenerFamilies {
    cx_active: Family<ListenerLabels, Gauge>,
    cx_overflow: Family<ListenerLabels, Counter>,
    pre_cx_timeout: Family<ListenerLabels, Counter>,
    accept_errors: Family<ListenerLabels, Counter>,
    rq_header_timeout: Family<HcmLabels, Counter>,
    cx_idle_timeout: Family<HcmLabels, Counter>,
}

/// The connection counters of one listener, resolved once when it starts.
#[derive(Clone, Debug, Default)]
pub struct ListenerStats {
    /// Connections open (`envoy_listener_downstream_cx_active`).
    pub cx_active: Gauge,
    /// Connections refused at the connection cap (`envoy_listener_downstream_cx_overflow`).
    pub cx_overflow: Counter,
    /// Connections closed because no first byte (or no TLS handshake) came in time
    /// (`envoy_listener_downstream_pre_cx_timeout`).
    pub pre_cx_timeout: Counter,
    /// `accept` failures, out of file descriptors and the like (`mesh_listener_accept_errors`).
    pub accept_errors: Counter,
    /// Requests whose head did not arrive in time, answered 408
    /// (`envoy_http_downstream_rq_header_timeout`).
    pub rq_header_timeout: Counter,
    /// Keep-alive connections closed for being idle (`envoy_http_downstream_cx_idle_timeout`).
    pub cx_idle_timeout: Counter,
}

impl ListenerFamilies {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "envoy_listener_downstream_cx_active",
            "Connections open on the listener",
            self.cx_active.clone(),
        );
        registry.register(
            "envoy_listener_downstream_cx_overflow",
            "Connections refused because the listener held --max-connections",
            self.cx_overflow.clone(),
        );
        registry.register(
            "envoy_listener_downstream_pre_cx_timeout",
            "Connections closed before their first byte or TLS handshake (--first-byte-timeout)",
            self.pre_cx_timeout.clone(),
        );
        registry.register(
            "mesh_listener_accept_errors",
            "accept() failures (out of file descriptors and the like)",
            self.accept_errors.clone(),
        );
        registry.register(
            "envoy_http_downstream_rq_header_timeout",
            "Requests answered 408 because their head did not arrive in --request-head-timeout",
            self.rq_header_timeout.clone(),
        );
        registry.register(
            "envoy_http_downstream_cx_idle_timeout",
            "Keep-alive connections closed after --idle-timeout without a request",
            self.cx_idle_timeout.clone(),
        );
    }

    /// The counters of the listener `name` on `addr`.
    pub fn listener(&self, name: &str, addr: std::net::SocketAddr) -> ListenerStats {
        let address = format!("{}_{}", addr.ip(), addr.port());
        let l = ListenerLabels { envoy_listener_address: address.clone() };
        let h = HcmLabels { envoy_http_conn_manager_prefix: format!("{name}_{address}") };
        ListenerStats {
            cx_active: self.cx_active.get_or_create_owned(&l),
            cx_overflow: self.cx_overflow.get_or_create_owned(&l),
            pre_cx_timeout: self.pre_cx_timeout.get_or_create_owned(&l),
            accept_errors: self.accept_errors.get_or_create_owned(&l),
            rq_header_timeout: self.rq_header_timeout.get_or_create_owned(&h),
            cx_idle_timeout: self.cx_idle_timeout.get_or_create_owned(&h),
        }
    }
}

impl ProxyMetrics {
    /// A hook for `RetryLayer::with_on_retry`.
    pub fn retry_hook(self: &Arc<Self>) -> mesh_core::ext::Hook {
        let me = self.clone();
        mesh_core::ext::Hook::new(move |_| {
            me.upstream_retries.inc();
        })
    }

    /// A hook for `BalanceLayer::with_on_ejection`.
    pub fn ejection_hook(self: &Arc<Self>) -> mesh_core::ext::Hook {
        let me = self.clone();
        mesh_core::ext::Hook::new(move |_| {
            me.outlier_ejections.inc();
        })
    }

    /// A hook for `AuthzLayer::with_on_decision`.
    /// The counters of the decisions the authz layer reports are resolved here, once, so a
    /// request neither allocates nor locks the family.
    pub fn authz_hook(self: &Arc<Self>) -> mesh_core::ext::Hook {
        use mesh_core::ext::Event;
        let counter =
            |e: Event| self.authz_decisions.get_or_create_owned(&DecisionLabels { decision: e.name().to_string() });
        let (allow, deny, custom_deny) =
            (counter(Event::AuthzAllow), counter(Event::AuthzDeny), counter(Event::AuthzCustomDeny));
        mesh_core::ext::Hook::new(move |event| {
            match event {
                Event::AuthzAllow => allow.inc(),
                Event::AuthzDeny => deny.inc(),
                Event::AuthzCustomDeny => custom_deny.inc(),
                Event::Retry | Event::Ejection => return,
            };
        })
    }

    /// Seconds until the workload certificate expires.
    pub fn set_cert_expiry(&self, not_after: std::time::SystemTime) {
        let left = not_after.duration_since(std::time::SystemTime::now()).map_or(0, |d| d.as_secs());
        self.cert_expiry_seconds.set(i64::try_from(left).unwrap_or(i64::MAX));
    }

    /// Count config reloads and failed loads as a config source reports them.
    #[cfg(feature = "config")]
    pub fn follow_source(
        self: &Arc<Self>,
        mut status: tokio::sync::watch::Receiver<mesh_config::SourceStatus>,
    ) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let (mut generation, mut loads) = {
                let s = status.borrow_and_update();
                (s.generation, s.loads)
            };
            while status.changed().await.is_ok() {
                let s = status.borrow_and_update().clone();
                me.config_reloads.inc_by(s.generation.saturating_sub(generation));
                if !s.errors.is_empty() {
                    me.config_reload_errors.inc_by(s.loads.saturating_sub(loads).max(1));
                }
                (generation, loads) = (s.generation, s.loads);
            }
        })
    }
}

/// Labels of `mesh_authz_decisions_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// `allow`, `deny`, `custom_deny`.
    pub decision: String,
}

/// The handles of one label set.
#[derive(Clone, Debug)]
pub struct RequestHandles {
    requests: Counter,
    duration: Histogram,
    request_bytes: Histogram,
    response_bytes: Histogram,
    /// Set on the overflow label set: `mesh_metric_label_overflow_total`.
    overflow: Option<Counter>,
}

impl RequestHandles {
    /// Whether these are the overflow label set's handles.
    pub fn is_overflow(&self) -> bool {
        self.overflow.is_some()
    }

    /// Count one completed request.
    pub fn record(&self, duration_ms: f64, request_bytes: u64, response_bytes: u64) {
        if let Some(o) = &self.overflow {
            o.inc();
        }
        self.requests.inc();
        self.duration.observe(duration_ms);
        self.request_bytes.observe(request_bytes as f64);
        self.response_bytes.observe(response_bytes as f64);
    }
}

fn histogram() -> Histogram {
    Histogram::default()
}

/// Every metric the proxy exports.
pub struct MeshMetrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: Family<RequestLabels, Histogram, fn() -> Histogram>,
    request_bytes: Family<RequestLabels, Histogram, fn() -> Histogram>,
    response_bytes: Family<RequestLabels, Histogram, fn() -> Histogram>,
    tcp_opened: Family<TcpLabels, Counter>,
    tcp_closed: Family<TcpLabels, Counter>,
    tcp_sent: Family<TcpLabels, Counter>,
    tcp_received: Family<TcpLabels, Counter>,
    /// The label sets the request families hold, up to `max_label_sets`.
    label_sets: Mutex<std::collections::HashSet<RequestLabels>>,
    max_label_sets: usize,
    /// The proxy's own counters.
    pub proxy: Arc<ProxyMetrics>,
}

impl std::fmt::Debug for MeshMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshMetrics").finish_non_exhaustive()
    }
}

impl Default for MeshMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl MeshMetrics {
    /// Every family registered in a registry of its own ([`MeshMetrics::encode`] serves it).
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let metrics = Self::registered_in(&mut registry);
        Self { registry, ..metrics }
    }

    /// Every family registered in the caller's `registry` (beside the caller's own
    /// metrics; the caller encodes it). [`MeshMetrics::encode`] then has nothing to say.
    ///
    /// ```
    /// # use std::{convert::Infallible, sync::Arc};
    /// use mesh_telemetry::{layer::{Reporter, TelemetryLayer, WorkloadInfo}, metrics::MeshMetrics};
    /// use prometheus_client::registry::Registry;
    /// use tower::{ServiceBuilder, ServiceExt};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut registry = Registry::default(); // the service's own, with its own metrics
    /// let metrics = Arc::new(MeshMetrics::registered_in(&mut registry));
    /// let me = WorkloadInfo::new("reviews-v1", "default", &Default::default(), None);
    /// let svc = ServiceBuilder::new()
    ///     .layer(TelemetryLayer::new(metrics, Reporter::Destination, me))
    ///     .service_fn(|_req: http::Request<mesh_core::BoxBody>| async {
    ///         Ok::<_, Infallible>(http::Response::new(mesh_core::body::empty()))
    ///     });
    /// let rsp = svc.oneshot(http::Request::new(mesh_core::body::empty())).await.unwrap();
    /// drop(rsp); // counted when the response body ends or is dropped
    /// let mut text = String::new();
    /// prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    /// assert!(text.contains("istio_requests_total{reporter=\"destination\""), "{text}");
    /// # }
    /// ```
    pub fn registered_in(registry: &mut Registry) -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let duration =
            Family::<RequestLabels, Histogram, fn() -> Histogram>::new_with_constructor(histogram as fn() -> Histogram);
        let request_bytes =
            Family::<RequestLabels, Histogram, fn() -> Histogram>::new_with_constructor(histogram as fn() -> Histogram);
        let response_bytes =
            Family::<RequestLabels, Histogram, fn() -> Histogram>::new_with_constructor(histogram as fn() -> Histogram);
        registry.register("istio_requests", "Requests, counted once per reporter", requests.clone());
        registry.register("istio_request_duration_milliseconds", "Request duration in milliseconds", duration.clone());
        registry.register("istio_request_bytes", "Request body sizes", request_bytes.clone());
        registry.register("istio_response_bytes", "Response body sizes", response_bytes.clone());
        let tcp = || Family::<TcpLabels, Counter>::default();
        let (tcp_opened, tcp_closed, tcp_sent, tcp_received) = (tcp(), tcp(), tcp(), tcp());
        registry.register("istio_tcp_connections_opened", "TCP connections opened", tcp_opened.clone());
        registry.register("istio_tcp_connections_closed", "TCP connections closed", tcp_closed.clone());
        registry.register("istio_tcp_sent_bytes", "Bytes sent on TCP connections", tcp_sent.clone());
        registry.register("istio_tcp_received_bytes", "Bytes received on TCP connections", tcp_received.clone());
        let proxy = Arc::new(ProxyMetrics::default());
        registry.register("mesh_config_reloads", "Config snapshots published", proxy.config_reloads.clone());
        registry.register(
            "mesh_config_reload_errors",
            "Config loads rejected (the last good config stayed)",
            proxy.config_reload_errors.clone(),
        );
        registry.register(
            "mesh_cert_expiry_seconds",
            "Seconds until the workload certificate expires",
            proxy.cert_expiry_seconds.clone(),
        );
        registry.register("mesh_upstream_retries", "Retries sent upstream", proxy.upstream_retries.clone());
        registry.register(
            "mesh_outlier_ejections",
            "Endpoints ejected by outlier detection",
            proxy.outlier_ejections.clone(),
        );
        registry.register("mesh_authz_decisions", "Authorization decisions", proxy.authz_decisions.clone());
        registry.register(
            "mesh_metric_label_overflow",
            "Requests counted in the overflow label set (the families held --max-label-sets label sets)",
            proxy.label_overflow.clone(),
        );
        proxy.listeners.register(registry);
        Self {
            registry: Registry::default(),
            requests,
            duration,
            request_bytes,
            response_bytes,
            tcp_opened,
            tcp_closed,
            tcp_sent,
            tcp_received,
            label_sets: Mutex::default(),
            max_label_sets: DEFAULT_MAX_LABEL_SETS,
            proxy,
        }
    }

    /// Cap the label sets of each request family at `max` (default
    /// [`DEFAULT_MAX_LABEL_SETS`]): past it, requests with a new label set are counted in one
    /// overflow set per reporter, and `mesh_metric_label_overflow_total` counts them.
    #[must_use]
    pub fn with_max_label_sets(mut self, max: usize) -> Self {
        self.max_label_sets = max;
        self
    }

    /// The handles of a label set, or of the overflow set when the families are full.
    pub fn handles(&self, labels: &RequestLabels) -> RequestHandles {
        let admitted = {
            let mut sets = self.label_sets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            sets.contains(labels) || (sets.len() < self.max_label_sets && sets.insert(labels.clone()))
        };
        if !admitted {
            let overflow = RequestLabels::overflow(&labels.reporter);
            return RequestHandles { overflow: Some(self.proxy.label_overflow.clone()), ..self.handles_of(&overflow) };
        }
        self.handles_of(labels)
    }

    fn handles_of(&self, labels: &RequestLabels) -> RequestHandles {
        RequestHandles {
            requests: self.requests.get_or_create_owned(labels),
            duration: self.duration.get_or_create_owned(labels),
            request_bytes: self.request_bytes.get_or_create_owned(labels),
            response_bytes: self.response_bytes.get_or_create_owned(labels),
            overflow: None,
        }
    }

    /// Count a TCP connection opening.
    pub fn tcp_opened(&self, labels: &TcpLabels) {
        self.tcp_opened.get_or_create(labels).inc();
    }

    /// Count a TCP connection closing, with its bytes.
    pub fn tcp_closed(&self, labels: &TcpLabels, sent: u64, received: u64) {
        self.tcp_closed.get_or_create(labels).inc();
        self.tcp_sent.get_or_create(labels).inc_by(sent);
        self.tcp_received.get_or_create(labels).inc_by(received);
    }

    /// The Prometheus text exposition (format 0.0.4), as `/stats/prometheus` serves it.
    pub fn encode(&self) -> String {
        let mut open_metrics = String::new();
        prometheus_client::encoding::text::encode(&mut open_metrics, &self.registry)
            .expect("writing to a String cannot fail");
        to_prometheus_text(&open_metrics)
    }

    /// The OpenMetrics text exposition.
    pub fn encode_openmetrics(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

/// OpenMetrics text to the classic Prometheus text format: counter families are named with
/// their `_total` suffix in `HELP`/`TYPE`, and the `# EOF` marker goes.
fn to_prometheus_text(open_metrics: &str) -> String {
    let counters: std::collections::HashSet<&str> =
        open_metrics.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
    let mut out = String::with_capacity(open_metrics.len());
    for line in open_metrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            counters.contains(name).then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line).trim_end());
        out.push('\n');
    }
    out
}

/// A resolved label set and the key it was resolved for.
#[derive(Debug)]
pub struct CacheEntry<K> {
    /// The key.
    pub key: K,
    /// Its handles.
    pub handles: RequestHandles,
}

/// A cache from a cheap key to resolved handles: reads are a lock-free map lookup; a new
/// key takes a lock, copies the map and swaps it. Hashed with mesh-core's unkeyed Fx hash:
/// the map grows only by whole label sets, capped (`MeshMetrics::with_max_label_sets`), so
/// a client choosing values cannot flood one bucket past the cap.
#[derive(Debug)]
pub struct HandleCache<K> {
    map: ArcSwap<hashbrown::HashMap<K, Arc<CacheEntry<K>>, FxBuildHasher>>,
    write: Mutex<()>,
}

impl<K: Clone + Hash + Eq> Default for HandleCache<K> {
    fn default() -> Self {
        Self { map: ArcSwap::from_pointee(hashbrown::HashMap::default()), write: Mutex::new(()) }
    }
}

impl<K: Clone + Hash + Eq> HandleCache<K> {
    /// The handles for `key` (a borrowed form of `K`), resolving the full label set with
    /// `labels` on a miss.
    pub fn get<Q: Hash + hashbrown::Equivalent<K>>(
        &self,
        key: &Q,
        to_owned: impl FnOnce(&Q) -> K,
        metrics: &MeshMetrics,
        labels: impl FnOnce() -> RequestLabels,
    ) -> Arc<CacheEntry<K>> {
        if let Some(h) = self.map.load().get(key) {
            return h.clone();
        }
        let _guard = self.write.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(h) = self.map.load().get(key) {
            return h.clone();
        }
        let key = to_owned(key);
        let entry = Arc::new(CacheEntry { key: key.clone(), handles: metrics.handles(&labels()) });
        // The cache is bounded too: keys past twice the label cap (many keys can share one
        // label set) are resolved each time and not kept.
        if self.map.load().len() >= metrics.max_label_sets.saturating_mul(2) {
            return entry;
        }
        let mut next = hashbrown::HashMap::clone(&self.map.load());
        next.insert(key, entry.clone());
        self.map.store(Arc::new(next));
        entry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_labels_for_each_side() {
        let labels = mesh_config::api::Labels::from([("app".to_string(), "reviews".to_string())]);
        let me =
            WorkloadInfo::new("reviews-v1", "default", &labels, Some("spiffe://td.example/ns/default/sa/r".into()));
        let out = TcpLabels::source(&me, "db.data.svc.cluster.local", None, ResponseFlags::UPSTREAM_CONNECTION_FAILURE);
        assert_eq!(
            (out.reporter.as_str(), out.source_principal.as_str(), out.destination_service_name.as_str()),
            ("source", "spiffe://td.example/ns/default/sa/r", "db")
        );
        assert_eq!((out.destination_workload.as_str(), out.response_flags.as_str()), ("unknown", "UF"));
        let peer: Identity = "spiffe://td.example/ns/web/sa/front".parse().unwrap();
        let inn = TcpLabels::destination(&me, Some("reviews.default.svc.cluster.local"), Some(&peer));
        assert_eq!(
            (inn.source_workload_namespace.as_str(), inn.connection_security_policy.as_str()),
            ("web", "mutual_tls")
        );
        assert_eq!((inn.destination_service_name.as_str(), inn.response_flags.as_str()), ("reviews", "-"));
        let plain = TcpLabels::destination(&me, None, None).with_flags(ResponseFlags::UPSTREAM_CONNECTION_FAILURE);
        assert_eq!(
            (
                plain.source_principal.as_str(),
                plain.connection_security_policy.as_str(),
                plain.destination_service.as_str()
            ),
            ("unknown", "none", "unknown")
        );
        assert_eq!(plain.response_flags, "UF");
    }

    #[tokio::test]
    async fn proxy_counters_follow_the_config_source() {
        let m = MeshMetrics::new();
        let (tx, rx) =
            tokio::sync::watch::channel(mesh_config::SourceStatus { generation: 1, loads: 1, ..Default::default() });
        let task = m.proxy.follow_source(rx);
        tokio::task::yield_now().await; // the follower reads the current status first
        tx.send_modify(|s| {
            s.generation = 2;
            s.loads = 2;
        });
        tokio::task::yield_now().await;
        let broken = mesh_config::Diagnostic {
            file: "vs.yaml".into(),
            line: 1,
            severity: mesh_config::Severity::Error,
            object: "-".into(),
            field: mesh_config::diag::FieldPath::root(),
            message: "bad".into(),
        };
        tx.send_modify(|s| {
            s.loads = 3;
            s.errors = vec![broken];
        });
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        drop(tx);
        task.await.unwrap();
        m.proxy.set_cert_expiry(std::time::SystemTime::now() + std::time::Duration::from_secs(3600));
        let text = m.encode();
        assert!(text.contains("mesh_config_reloads_total 1"), "{text}");
        assert!(text.contains("mesh_config_reload_errors_total 1"), "{text}");
        assert!(
            text.contains("mesh_cert_expiry_seconds 3599") || text.contains("mesh_cert_expiry_seconds 3600"),
            "{text}"
        );
    }
}
