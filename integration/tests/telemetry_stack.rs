//! Telemetry in the mesh as it ships, on loopback: two workloads meshed in-process
//! (`mesh_proxy::embed::Mesh`), label correctness for every outcome, trace context across
//! two hops, and a real Prometheus scraping the admin endpoint.

use std::sync::LazyLock;

use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use mesh_config::test_util::Manifest;
use mesh_core::BoxBody;
use mesh_core::test_util::labels;
use mesh_proxy::embed::{Client, Mesh as Workload};
use mesh_telemetry::{
    access_log::{AccessLog, Format},
    layer::{Reporter, TelemetryLayer, WorkloadInfo},
    metrics::MeshMetrics,
};
use tokio::net::{TcpListener, TcpStream};
use tower::{Layer, ServiceExt, service_fn};

static CONFIG: LazyLock<String> = LazyLock::new(|| {
    Manifest::new()
        .service("reviews", 9080)
        .deployment("reviews", "v1", Some("bookinfo-reviews"))
        .service("ratings", 9080)
        .deployment("ratings", "v1", Some("bookinfo-ratings"))
        .deployment("productpage", "v1", Some("bookinfo-productpage"))
        .doc(
            r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /fault}}]
    fault: {abort: {httpStatus: 500, percentage: {value: 100}}}
    route: [{destination: {host: reviews}}]
  - match: [{uri: {prefix: /slow}}]
    timeout: 200ms
    route: [{destination: {host: reviews}}]
  - route: [{destination: {host: reviews}}]
"#,
        )
        .doc(
            r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-forbidden}
spec:
  selector: {matchLabels: {app: reviews}}
  action: DENY
  rules: [{to: [{operation: {paths: ["/forbidden"]}}]}]
"#,
        )
        .to_string()
});

struct Mesh {
    reviews: Arc<Workload>,
    productpage: Workload,
    reviews_addr: SocketAddr,
    access_log: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Mesh {
    /// Both workloads' metrics, as two scrapes.
    fn encode(&self) -> String {
        format!("{}{}", self.productpage.metrics().encode(), self.reviews.metrics().encode())
    }

    fn client(&self) -> Client {
        self.productpage.client()
    }

    /// A caller outside the mesh: plaintext straight to reviews' port (PERMISSIVE).
    async fn plain_get(&self, path: &str) -> u16 {
        let tcp = TcpStream::connect(self.reviews_addr).await.unwrap();
        let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
        tokio::spawn(conn);
        let req = Request::get(path).header("host", "reviews:9080").body(Full::new(Bytes::new())).unwrap();
        let rsp = s.send_request(req).await.unwrap();
        let status = rsp.status().as_u16();
        let _ = rsp.into_body().collect().await;
        status
    }
}

/// reviews-v1 served by its embedded mesh (telemetry as destination, authz); ratings-v1
/// is down; productpage-v1's embedded mesh calls them (telemetry as source, access log).
async fn mesh() -> Mesh {
    let dir = tempfile::tempdir().unwrap();
    let (config, ca) = (dir.path().join("config"), dir.path().join("ca"));
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(config.join("mesh.yaml"), CONFIG.as_str()).unwrap();
    let workload = |app: &str| Workload::builder().config(&config).ca_dir(&ca).label("app", app).label("version", "v1");
    let reviews = Arc::new(workload("reviews").start().await.unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let reviews_addr = listener.local_addr().unwrap();
    let app = service_fn(|req: Request<BoxBody>| async move {
        if req.uri().path().starts_with("/slow") {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        Ok::<_, Infallible>(Response::new(mesh_core::body::full("ok")))
    });
    let svc = reviews.server_layer(9080).layer(app);
    let serving = reviews.clone();
    tokio::spawn(async move { serving.serve(listener, 9080, svc, std::future::pending()).await.unwrap() });

    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let access_log = Arc::new(Mutex::new(Vec::new()));
    let sink = access_log.clone();
    let productpage = workload("productpage")
        .endpoint("default", "reviews-v1", reviews_addr)
        .endpoint("default", "ratings-v1", dead)
        .access_log(AccessLog::to(Format::Text, move |line| sink.lock().unwrap().push(line.to_string())))
        .start()
        .await
        .unwrap();
    Mesh { reviews, productpage, reviews_addr, access_log, _dir: dir }
}

async fn get(client: &Client, uri: &str) -> u16 {
    let rsp =
        client.clone().oneshot(Request::builder().uri(uri).body(mesh_core::body::empty()).unwrap()).await.unwrap();
    let status = rsp.status().as_u16();
    let _ = rsp.into_body().collect().await;
    status
}

/// `istio_requests_total` series as label maps with their values.
fn series(text: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("istio_requests_total{"))
        .map(|rest| {
            let (labels, value) = rest.rsplit_once("} ").unwrap();
            let map = labels
                .split("\",")
                .map(|kv| {
                    let (k, v) = kv.split_once("=\"").unwrap();
                    (k.to_string(), v.trim_end_matches('"').to_string())
                })
                .collect();
            (map, value.parse().unwrap())
        })
        .collect()
}

fn find<'s>(
    all: &'s [(BTreeMap<String, String>, f64)],
    want: &[(&str, &str)],
) -> Vec<&'s (BTreeMap<String, String>, f64)> {
    all.iter().filter(|(m, _)| want.iter().all(|(k, v)| m.get(*k).map(String::as_str) == Some(*v))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_for_every_outcome() {
    let m = mesh().await;
    assert_eq!(get(&m.client(), "http://reviews:9080/reviews/0").await, 200);
    assert_eq!(get(&m.client(), "http://reviews:9080/reviews/1").await, 200);
    assert_eq!(m.plain_get("/reviews/2").await, 200);
    assert_eq!(get(&m.client(), "http://reviews:9080/fault").await, 500);
    assert_eq!(get(&m.client(), "http://nowhere:9080/").await, 404);
    assert_eq!(get(&m.client(), "http://ratings:9080/ratings/0").await, 503);
    assert_eq!(get(&m.client(), "http://reviews:9080/slow").await, 504);
    assert_eq!(get(&m.client(), "http://reviews:9080/forbidden").await, 403);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let all = series(&m.encode());

    // A routed request, seen by both proxies.
    let src = find(
        &all,
        &[
            ("reporter", "source"),
            ("response_code", "200"),
            ("source_workload", "productpage-v1"),
            ("destination_workload", "reviews-v1"),
        ],
    );
    assert_eq!(src.len(), 1, "{all:#?}");
    let (l, v) = src[0];
    assert_eq!(*v, 2.0, "the plaintext caller is outside the mesh: no source report");
    for (k, want) in [
        ("source_app", "productpage"),
        ("source_version", "v1"),
        ("source_principal", "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"),
        ("destination_app", "reviews"),
        ("destination_version", "v1"),
        ("destination_principal", "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"),
        ("destination_service", "reviews.default.svc.cluster.local"),
        ("destination_service_name", "reviews"),
        ("destination_service_namespace", "default"),
        ("request_protocol", "http"),
        ("response_flags", "-"),
        ("connection_security_policy", "unknown"),
        ("grpc_response_status", ""),
    ] {
        assert_eq!(l.get(k).map(String::as_str), Some(want), "{k}");
    }
    let mtls = find(
        &all,
        &[("reporter", "destination"), ("response_code", "200"), ("connection_security_policy", "mutual_tls")],
    );
    assert_eq!(mtls.len(), 1, "{all:#?}");
    assert_eq!(mtls[0].1, 2.0);
    for (k, want) in [
        ("source_workload", "productpage-v1"),
        ("source_app", "productpage"),
        ("source_principal", "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"),
        ("destination_workload", "reviews-v1"),
        ("destination_service", "reviews.default.svc.cluster.local"),
    ] {
        assert_eq!(mtls[0].0.get(k).map(String::as_str), Some(want), "{k}");
    }
    let plain =
        find(&all, &[("reporter", "destination"), ("response_code", "200"), ("connection_security_policy", "none")]);
    assert_eq!((plain.len(), plain[0].1, plain[0].0["source_principal"].as_str()), (1, 1.0, "unknown"));

    // A fault abort: only the source reports it.
    assert_eq!(find(&all, &[("reporter", "source"), ("response_code", "500"), ("response_flags", "FI")]).len(), 1);
    assert!(find(&all, &[("reporter", "destination"), ("response_code", "500")]).is_empty());
    // No route, upstream refused, timeout.
    let nr = find(&all, &[("reporter", "source"), ("response_code", "404"), ("response_flags", "NR")]);
    assert_eq!((nr.len(), nr[0].0["destination_workload"].as_str()), (1, "unknown"));
    let uf = find(&all, &[("reporter", "source"), ("response_code", "503")]);
    assert_eq!(uf.len(), 1, "{all:#?}");
    assert!(uf[0].0["response_flags"].starts_with("UF"), "{:?}", uf[0].0["response_flags"]);
    assert_eq!(uf[0].0["destination_service"], "ratings.default.svc.cluster.local");
    assert_eq!(find(&all, &[("reporter", "source"), ("response_code", "504"), ("response_flags", "UT")]).len(), 1);
    // An authorization denial, at both ends.
    assert_eq!(
        find(
            &all,
            &[("reporter", "destination"), ("response_code", "403"), ("connection_security_policy", "mutual_tls")]
        )
        .len(),
        1
    );
    assert_eq!(find(&all, &[("reporter", "source"), ("response_code", "403")]).len(), 1);

    // The proxy's own counters: the connect failure was retried twice (Istio's default
    // policy), and reviews' authorization decided the five requests that reached it.
    let text = m.encode();
    assert!(text.contains("mesh_upstream_retries_total 2"), "{text}");
    assert!(text.contains("mesh_authz_decisions_total{decision=\"allow\"} 4"), "{text}");
    assert!(text.contains("mesh_authz_decisions_total{decision=\"deny\"} 1"), "{text}");

    // Access log lines: one per request, with flags, upstream host and trace id.
    let log = m.access_log.lock().unwrap().clone();
    assert_eq!(log.len(), 7, "{log:#?}");
    let fi = log.iter().find(|l| l.contains("\"GET /fault HTTP/1.1\" 500 FI")).expect("fault line");
    assert!(fi.contains("\"reviews:9080\""), "{fi}");
    assert!(log.iter().any(|l| l.contains(" 200 - ") && l.contains("\"127.0.0.1:")), "{log:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_context_survives_two_hops() {
    // hop 2: records the headers it receives.
    let seen: Arc<Mutex<Vec<HeaderMap>>> = Arc::default();
    let s = seen.clone();
    let metrics = Arc::new(MeshMetrics::new());
    let info = |w: &str, app: &str| WorkloadInfo::new(w, "default", &labels(&[("app", app), ("version", "v1")]), None);
    let hop2 = TelemetryLayer::new(metrics.clone(), Reporter::Destination, info("ratings-v1", "ratings")).layer(
        service_fn(move |req: Request<BoxBody>| {
            s.lock().unwrap().push(req.headers().clone());
            async { Ok::<_, Infallible>(Response::new(mesh_core::body::empty())) }
        }),
    );
    // hop 1: the app propagates the trace headers it received to its outbound call, as
    // the Bookinfo services do.
    let client_side = TelemetryLayer::new(metrics.clone(), Reporter::Source, info("reviews-v1", "reviews")).layer(hop2);
    let s1 = seen.clone();
    let hop1 = TelemetryLayer::new(metrics.clone(), Reporter::Destination, info("reviews-v1", "reviews")).layer(
        service_fn(move |req: Request<BoxBody>| {
            let client = client_side.clone();
            let s1 = s1.clone();
            async move {
                s1.lock().unwrap().push(req.headers().clone());
                let mut out =
                    Request::builder().uri("http://ratings:9080/ratings/0").body(mesh_core::body::empty()).unwrap();
                for h in [
                    "traceparent",
                    "tracestate",
                    "x-request-id",
                    "x-b3-traceid",
                    "x-b3-spanid",
                    "x-b3-parentspanid",
                    "x-b3-sampled",
                ] {
                    if let Some(v) = req.headers().get(h) {
                        out.headers_mut().insert(h, v.clone());
                    }
                }
                let rsp = client.oneshot(out).await.unwrap();
                let _ = rsp.into_body().collect().await;
                Ok::<_, Infallible>(Response::new(mesh_core::body::empty()))
            }
        }),
    );
    // The caller's side of hop 1.
    let caller =
        TelemetryLayer::new(metrics, Reporter::Source, info("productpage-v1", "productpage")).with_seed(7).layer(hop1);
    let rsp = caller
        .oneshot(Request::builder().uri("http://reviews:9080/").body(mesh_core::body::empty()).unwrap())
        .await
        .unwrap();
    let _ = rsp.into_body().collect().await;

    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    let ctx = |h: &HeaderMap| mesh_telemetry::trace::TraceContext::extract(h).unwrap();
    let (a, b) = (ctx(&seen[0]), ctx(&seen[1]));
    assert_eq!(a.trace_id, b.trace_id, "one trace across both hops");
    assert_ne!(a.span_id, b.span_id);
    assert_eq!(seen[0]["x-request-id"], seen[1]["x-request-id"], "the request id is kept");
    // The B3 parent of what hop 2 received is a span of hop 1's side of the trace.
    assert!(seen[1].get("x-b3-parentspanid").is_some());
}

/// A free loopback port.
async fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port()
}

async fn http_get(addr: SocketAddr, path_and_query: &str) -> Option<String> {
    let client: hyper_util::client::legacy::Client<_, http_body_util::Empty<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let rsp = client.get(format!("http://{addr}{path_and_query}").parse().ok()?).await.ok()?;
    let body = rsp.into_body().collect().await.ok()?.to_bytes();
    Some(String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_and_answers() {
    let m = mesh().await;
    for _ in 0..5 {
        assert_eq!(get(&m.client(), "http://reviews:9080/reviews/0").await, 200);
    }
    assert_eq!(get(&m.client(), "http://reviews:9080/forbidden").await, 403);
    assert_eq!(get(&m.client(), "http://reviews:9080/forbidden").await, 403);

    // The admin endpoint.
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_addr = admin.local_addr().unwrap();
    let reviews = m.reviews.clone();
    tokio::spawn(async move { reviews.serve_admin(admin, std::future::pending()).await });
    assert!(http_get(admin_addr, "/stats/prometheus").await.unwrap().contains("istio_requests_total"));

    // Prometheus, scraping it every second.
    let dir = tempfile::tempdir().unwrap();
    let prom_port = free_port().await;
    let cfg = format!(
        "global: {{scrape_interval: 1s}}\nscrape_configs:\n- job_name: mesh\n  metrics_path: /stats/prometheus\n  static_configs: [{{targets: ['{admin_addr}']}}]\n"
    );
    std::fs::write(dir.path().join("prometheus.yml"), cfg).unwrap();
    let mut prom = tokio::process::Command::new("prometheus")
        .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("prometheus is installed (.ci/run installs Debian's prometheus)");
    let prom_addr: SocketAddr = format!("127.0.0.1:{prom_port}").parse().unwrap();
    let query = "sum by (destination_workload, response_code) (istio_requests_total{reporter=\"destination\"})";
    let encoded: String = query
        .bytes()
        .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect();
    let mut answer = None;
    for _ in 0..120 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Some(body) = http_get(prom_addr, &format!("/api/v1/query?query={encoded}")).await else { continue };
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let results = v["data"]["result"].as_array().cloned().unwrap_or_default();
        if results.len() == 2 {
            answer = Some(results);
            break;
        }
    }
    prom.kill().await.ok();
    let results = answer.expect("Prometheus answered within a minute");
    let mut got: Vec<(String, String, String)> = results
        .iter()
        .map(|r| {
            (
                r["metric"]["destination_workload"].as_str().unwrap().to_string(),
                r["metric"]["response_code"].as_str().unwrap().to_string(),
                r["value"][1].as_str().unwrap().to_string(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("reviews-v1".to_string(), "200".to_string(), "5".to_string()),
            ("reviews-v1".to_string(), "403".to_string(), "2".to_string())
        ]
    );
}
