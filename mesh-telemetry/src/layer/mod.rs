//! The telemetry layer: one record per request (metrics, access log), trace context and
//! `x-request-id` on the way through, as Istio's sidecars do on both sides of a hop.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use arc_swap::ArcSwap;
use http::HeaderValue;
use mesh_core::Labels;
use rand::{Rng, SeedableRng, rngs::SmallRng};
use tower_layer::Layer;

use crate::{
    access_log::{AccessLog, LogControl},
    metrics::{HandleCache, MeshMetrics},
};

/// The header that carries the caller's workload to the callee's proxy (Istio's metadata
/// exchange, in a plain `key=value;...` form).
pub const PEER_HEADER: &str = "x-mesh-peer";

mod body;
mod future;
mod labels;
mod record;
mod service;

pub use body::TelemetryBody;
use future::Done;
pub use future::ResponseFuture;
use labels::*;
use service::RequestSide;
pub use service::Telemetry;

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

/// Whether a caller's metadata (workload, namespace) belongs to its mTLS identity.
pub type PeerCheck = Arc<dyn Fn(&str, &str, &mesh_core::Identity) -> bool + Send + Sync>;

/// The service this workload serves (FQDN), swapped when config changes.
pub type LocalService = Arc<ArcSwap<Option<String>>>;

/// What every service of one layer shares: how it was set up, and what is derived from that
/// once (the peer header this workload sends, the label-set cache, the generators' streams).
struct Shared {
    o: Options,
    local_header: Option<HeaderValue>,
    cache: HandleCache<Key<Arc<str>>>,
    /// Each service instance takes the next stream of the seed's generator.
    streams: AtomicU64,
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
    /// Seed of the generators of ids and sampling.
    seed: u64,
    #[cfg(feature = "otel")]
    otlp: Option<crate::otlp::OtlpExporter>,
}

/// Records Istio's standard metrics, writes access logs, and propagates trace context.
#[derive(Clone)]
pub struct TelemetryLayer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for TelemetryLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryLayer")
            .field("reporter", &self.shared.o.reporter)
            .field("workload", &self.shared.o.local.workload)
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
            local_header: o.local.header_value(),
            cache: HandleCache::default(),
            streams: AtomicU64::new(0),
            o,
        };
        Self { shared: Arc::new(shared) }
    }

    fn with(&self, f: impl FnOnce(&mut Options)) -> Self {
        let mut o = self.shared.o.clone();
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
            && self.o.peer_check.as_ref().is_none_or(|check| check(&workload, &namespace, identity))
    }

    /// A generator for one service instance: ids and sampling without a shared lock, and
    /// still deterministic for a given seed and order of clones.
    fn next_rng(&self) -> SmallRng {
        let stream = self.streams.fetch_add(1, Ordering::Relaxed);
        SmallRng::seed_from_u64(self.o.seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }
}

#[cfg(test)]
mod tests {
    use http::{Request, Response};
    use mesh_core::ext::PeerIdentity;

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
