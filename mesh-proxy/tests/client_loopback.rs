//! The client stack (mesh-route's layers as mesh-proxy composes them) against real hyper
//! servers on loopback.

use std::sync::LazyLock;

use mesh_config::test_util::Manifest;

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use mesh_config::{
    load::{LoadOptions, load_str},
    registry::{Locator, Registry},
};
use mesh_core::roll::SeededRoll;
use mesh_core::{BoxBody, ext::ResponseFlags};
use mesh_fault::FaultLayer;
use mesh_proxy::client::{ClientBuilder, MeshClient};
use mesh_route::{
    layer::{BalanceLayer, RouterLayer, TableHandle},
    policy::{ProxyContext, RouteTable},
};
use tokio::net::TcpListener;
use tower::ServiceExt;

/// An upstream that answers `name` (and counts requests); `fail_every` > 0 makes every
/// n-th request a 503.
async fn upstream(name: &'static str, status: u16, fail_every: usize) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let h = h.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let n = h.fetch_add(1, Ordering::SeqCst) + 1;
                    async move {
                        let user = req.headers().get("end-user").map_or("-", |v| v.to_str().unwrap()).to_string();
                        let mut rsp =
                            Response::new(Full::new(Bytes::from(format!("{name} {} {user}", req.uri().path()))));
                        let failing = fail_every > 0 && !n.is_multiple_of(fail_every);
                        *rsp.status_mut() = StatusCode::from_u16(if failing { 503 } else { status }).unwrap();
                        Ok::<_, Infallible>(rsp)
                    }
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    (addr, hits)
}

static MANIFEST: LazyLock<String> = LazyLock::new(|| {
    Manifest::new()
        .service("reviews", 9080)
        .deployment("reviews", "v1", None)
        .deployment("reviews", "v2", None)
        .service("ratings", 9080)
        .deployment("ratings", "v1", None)
        .doc(
            r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: ratings-v1-bad}
spec:
  selector: {matchLabels: {app: ratings, version: v1, build: bad}}
  template: {metadata: {labels: {app: ratings, version: v1, build: bad}}, spec: {containers: [{name: r}]}}
"#,
        )
        .to_string()
});

fn table(config: &str, locator: &Locator) -> TableHandle {
    let loaded = load_str("c.yaml", &format!("{}\n---\n{config}", *MANIFEST), &LoadOptions::default());
    assert!(!loaded.has_errors(), "{}", loaded.report());
    let s = loaded.into_snapshot();
    let ctx = ProxyContext::sidecar("default", [("app".to_string(), "productpage".to_string())].into());
    TableHandle::new(RouteTable::compile(&s, &Registry::build(&s, locator), &ctx))
}

fn get(url: &str, user: Option<&str>) -> Request<BoxBody> {
    let mut b = Request::builder().uri(url);
    if let Some(u) = user {
        b = b.header("end-user", u);
    }
    b.body(mesh_core::body::empty()).unwrap()
}

/// The client stack over pooled plaintext connections.
fn mesh_client(table: TableHandle) -> MeshClient {
    MeshClient::new(ClientBuilder::new(table).http())
}

async fn send(svc: &MeshClient, req: Request<BoxBody>) -> (u16, String, String) {
    let rsp = svc.clone().oneshot(req).await.unwrap();
    let flags = rsp.extensions().get::<ResponseFlags>().copied().unwrap_or_default().to_string();
    let status = rsp.status().as_u16();
    let body = String::from_utf8(rsp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    (status, body, flags)
}

/// The client stack, with seeded randomness.
fn seeded_stack(table: TableHandle, seed: u64) -> MeshClient {
    MeshClient::new(
        ClientBuilder::with_router(RouterLayer::new(table).with_rng(Arc::new(SeededRoll::new(seed))))
            .fault(FaultLayer::per_route().with_rng(Arc::new(SeededRoll::new(seed + 1))))
            .balance(BalanceLayer::new().with_rng(Arc::new(SeededRoll::new(seed + 2))))
            .http(),
    )
}

const DR: &str = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews}\nspec:\n  host: reviews\n  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_by_end_user_header() {
    let (v1, _) = upstream("reviews-v1", 200, 0).await;
    let (v2, _) = upstream("reviews-v2", 200, 0).await;
    let locator = Locator::new().with("default", "reviews-v1", v1).with("default", "reviews-v2", v2);
    let vs = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/bookinfo/config/tutorial/networking/virtual-service-reviews-test-v2.yaml"
    ))
    .unwrap();
    let client = mesh_client(table(&format!("{DR}---\n{vs}"), &locator));
    for _ in 0..3 {
        assert_eq!(
            send(&client, get("http://reviews:9080/reviews/0", Some("jason"))).await,
            (200, "reviews-v2 /reviews/0 jason".into(), "-".into())
        );
        assert_eq!(
            send(&client, get("http://reviews:9080/reviews/0", None)).await,
            (200, "reviews-v1 /reviews/0 -".into(), "-".into())
        );
    }
    // Origin form with a Host header routes the same way.
    let req = Request::builder()
        .uri("/reviews/1")
        .header("host", "reviews.default.svc.cluster.local:9080")
        .header("end-user", "jason")
        .body(mesh_core::body::empty())
        .unwrap();
    assert_eq!(send(&client, req).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eighty_twenty_split() {
    let (v1, hits1) = upstream("reviews-v1", 200, 0).await;
    let (v2, hits2) = upstream("reviews-v2", 200, 0).await;
    let locator = Locator::new().with("default", "reviews-v1", v1).with("default", "reviews-v2", v2);
    let vs = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/bookinfo/config/tutorial/networking/virtual-service-reviews-80-20.yaml"
    ))
    .unwrap();
    let client = seeded_stack(table(&format!("{DR}---\n{vs}"), &locator), 7);
    let n = 1000;
    for _ in 0..n {
        assert_eq!(send(&client, get("http://reviews:9080/", None)).await.0, 200);
    }
    let (a, b) = (hits1.load(Ordering::SeqCst), hits2.load(Ordering::SeqCst));
    assert_eq!(a + b, n);
    // Binomial(1000, 0.8): sd ~ 12.6; four sd either way.
    assert!((750..=850).contains(&a), "v1 got {a} of {n}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_over_a_flaky_upstream() {
    // Every second request to the upstream fails with 503.
    let (v1, hits) = upstream("reviews-v1", 200, 2).await;
    let locator = Locator::new().with("default", "reviews-v1", v1);
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews]\n  http:\n  - route: [{destination: {host: reviews, subset: v1}}]\n    retries: {attempts: 3, retryOn: 5xx}\n";
    let client = mesh_client(table(&format!("{DR}---\n{vs}"), &locator));
    for _ in 0..10 {
        assert_eq!(send(&client, get("http://reviews:9080/", None)).await.0, 200);
    }
    assert_eq!(hits.load(Ordering::SeqCst), 20, "each request needed one retry");

    // Istio's default policy does not retry 503.
    let (v1, _) = upstream("reviews-v1", 200, 2).await;
    let locator = Locator::new().with("default", "reviews-v1", v1);
    let client = mesh_client(table("", &locator));
    let statuses: Vec<u16> = futures(&client, 4).await;
    assert_eq!(statuses, [503, 200, 503, 200]);
}

async fn futures(client: &MeshClient, n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(send(client, get("http://reviews:9080/", None)).await.0);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlier_detection_ejects_a_failing_endpoint() {
    let (good, good_hits) = upstream("ratings-good", 200, 0).await;
    let (bad, bad_hits) = upstream("ratings-bad", 500, 0).await;
    let locator = Locator::new().with("default", "ratings-v1", good).with("default", "ratings-v1-bad", bad);
    let dr = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: ratings}\nspec:\n  host: ratings\n  trafficPolicy:\n    loadBalancer: {simple: ROUND_ROBIN}\n    outlierDetection: {consecutive5xxErrors: 2, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 50}\n";
    let balance = BalanceLayer::new();
    let client = MeshClient::new(ClientBuilder::new(table(dr, &locator)).balance(balance.clone()).http());
    let mut codes = Vec::new();
    for _ in 0..20 {
        codes.push(send(&client, get("http://ratings:9080/ratings/0", None)).await.0);
    }
    // Round robin sends two requests to the bad host (500, 500), then it is ejected.
    assert_eq!(bad_hits.load(Ordering::SeqCst), 2);
    assert_eq!(good_hits.load(Ordering::SeqCst), 18);
    assert_eq!(codes.iter().filter(|c| **c == 500).count(), 2);
    assert_eq!(balance.ejected("outbound|9080||ratings.default.svc.cluster.local"), [bad]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_500_for_jason_never_reaches_ratings() {
    let (r1, hits) = upstream("ratings-v1", 200, 0).await;
    let locator = Locator::new().with("default", "ratings-v1", r1);
    let dr = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: ratings}\nspec:\n  host: ratings\n  subsets: [{name: v1, labels: {version: v1}}]\n";
    let vs = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/bookinfo/config/tutorial/networking/virtual-service-ratings-test-abort.yaml"
    ))
    .unwrap();
    let client = mesh_client(table(&format!("{dr}---\n{vs}"), &locator));
    assert_eq!(
        send(&client, get("http://ratings:9080/ratings/0", Some("jason"))).await,
        (500, "fault filter abort".into(), "FI".into())
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0);
    assert_eq!(send(&client, get("http://ratings:9080/ratings/0", Some("bob"))).await.0, 200);
    assert_eq!(hits.load(Ordering::SeqCst), 1, "only the request that was not aborted");
}

#[tokio::test(start_paused = true)]
async fn seven_second_delay_with_paused_time() {
    let (r1, hits) = upstream("ratings-v1", 200, 0).await;
    let locator = Locator::new().with("default", "ratings-v1", r1);
    let dr = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: ratings}\nspec:\n  host: ratings\n  subsets: [{name: v1, labels: {version: v1}}]\n";
    let vs = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/bookinfo/config/tutorial/networking/virtual-service-ratings-test-delay.yaml"
    ))
    .unwrap();
    let client = mesh_client(table(&format!("{dr}---\n{vs}"), &locator));
    let start = tokio::time::Instant::now();
    let (status, body, flags) = send(&client, get("http://ratings:9080/ratings/0", Some("jason"))).await;
    assert_eq!((status, body.as_str(), flags.as_str()), (200, "ratings-v1 /ratings/0 jason", "DI"));
    assert!(start.elapsed() >= Duration::from_secs(7), "{:?}", start.elapsed());
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failure_is_503_uf_after_retries() {
    // A port nothing listens on.
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let locator = Locator::new().with("default", "reviews-v1", dead);
    let client = mesh_client(table("", &locator));
    let (status, body, flags) = send(&client, get("http://reviews:9080/", None)).await;
    assert_eq!(status, 503);
    assert_eq!(flags, "UF,URX");
    assert!(body.starts_with("upstream connect error or disconnect/reset before headers"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_snapshot_applies_to_new_requests_without_dropping_in_flight_ones() {
    // A slow v1 (holds its request until told), a fast v2.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let slow = listener.local_addr().unwrap();
    let release = Arc::new(tokio::sync::Notify::new());
    let r = release.clone();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let svc = service_fn(move |_req: Request<Incoming>| {
            let r = r.clone();
            async move {
                r.notified().await;
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"slow v1"))))
            }
        });
        let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
    });
    let (v2, _) = upstream("reviews-v2", 200, 0).await;
    let locator = Locator::new().with("default", "reviews-v1", slow).with("default", "reviews-v2", v2);
    let snapshot = |subset: &str| {
        let vs = format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews}}\nspec:\n  hosts: [reviews]\n  http:\n  - route: [{{destination: {{host: reviews, subset: {subset}}}}}]\n"
        );
        let loaded = load_str("c.yaml", &format!("{}\n---\n{DR}---\n{vs}", *MANIFEST), &LoadOptions::default());
        Arc::new(loaded.into_snapshot())
    };
    let ctx = ProxyContext::sidecar("default", Default::default());
    let compile = |s: &mesh_config::Snapshot| RouteTable::compile(s, &Registry::build(s, &locator), &ctx);
    let handle = TableHandle::new(compile(&snapshot("v1")));
    let client = mesh_client(handle.clone());

    let in_flight = tokio::spawn({
        let client = client.clone();
        async move { send(&client, get("http://reviews:9080/", None)).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // A reload swaps the compiled table in (as mesh-proxy's CompiledConfig does).
    handle.store(compile(&snapshot("v2")));
    assert_eq!(send(&client, get("http://reviews:9080/", None)).await.1, "reviews-v2 / -");
    release.notify_one();
    assert_eq!(in_flight.await.unwrap(), (200, "slow v1".into(), "-".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_sends_a_shadow_copy() {
    let (v1, _) = upstream("reviews-v1", 200, 0).await;
    // The mirror target answers slowly and with an error: the client never sees it.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let shadow_addr = listener.local_addr().unwrap();
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let seen = seen_tx.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let _ = seen.send(req.headers().get("host").map(|h| h.to_str().unwrap().to_string()));
                    async move {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        let mut r = Response::new(Full::new(Bytes::new()));
                        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    let locator = Locator::new().with("default", "reviews-v1", v1).with("default", "reviews-v2", shadow_addr);
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews]\n  http:\n  - route: [{destination: {host: reviews, subset: v1}}]\n    mirror: {host: reviews, subset: v2}\n";
    let client = mesh_client(table(&format!("{DR}---\n{vs}"), &locator));
    let start = std::time::SystemTime::now();
    assert_eq!(send(&client, get("http://reviews:9080/x", None)).await.0, 200);
    assert!(start.elapsed().unwrap() < Duration::from_millis(200), "the mirror must not delay the response");
    let host = tokio::time::timeout(Duration::from_secs(5), seen_rx.recv()).await.unwrap().unwrap();
    assert_eq!(host.as_deref(), Some("reviews-shadow:9080"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_goes_to_another_endpoint() {
    // Two v1 endpoints: one refuses connections. With retries on connect-failure, every
    // request succeeds, whichever endpoint the balancer tries first.
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let (good, hits) = upstream("reviews-v1", 200, 0).await;
    let locator = Locator::new().with("default", "reviews-v1", dead).with("default", "reviews-v1", good);
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews]\n  http:\n  - route: [{destination: {host: reviews, subset: v1}}]\n    retries: {attempts: 1, retryOn: connect-failure}\n";
    let client = seeded_stack(table(&format!("{DR}---\n{vs}"), &locator), 3);
    for _ in 0..20 {
        assert_eq!(send(&client, get("http://reviews:9080/", None)).await.0, 200);
    }
    assert_eq!(hits.load(Ordering::SeqCst), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_keeps_a_user_on_one_endpoint() {
    let (a, hits_a) = upstream("a", 200, 0).await;
    let (b, hits_b) = upstream("b", 200, 0).await;
    let locator = Locator::new().with("default", "reviews-v1", a).with("default", "reviews-v2", b);
    let dr = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews}\nspec:\n  host: reviews\n  trafficPolicy:\n    loadBalancer: {consistentHash: {httpHeaderName: end-user}}\n";
    let client = mesh_client(table(dr, &locator));
    let mut by_user = std::collections::BTreeMap::new();
    // Each key lands on either endpoint with even odds (rendezvous hashing over the
    // endpoints' addresses, which the OS picks): with 40 users, all on one endpoint is a
    // 2^-39 chance (with 8 it was 1 in 128, and it happened).
    let users: Vec<String> = (1..=40).map(|i| format!("u{i}")).collect();
    for round in 0..3 {
        for user in &users {
            let body = send(&client, get("http://reviews:9080/", Some(user))).await.1;
            let server = body.split(' ').next().unwrap().to_string();
            if round == 0 {
                by_user.insert(user.clone(), server);
            } else {
                assert_eq!(by_user[user], server, "{user} moved");
            }
        }
    }
    // Both endpoints serve someone.
    assert!(hits_a.load(Ordering::SeqCst) > 0 && hits_b.load(Ordering::SeqCst) > 0, "{by_user:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_and_response_headers() {
    let (v1, hits) = upstream("reviews-v1", 200, 0).await;
    let locator = Locator::new().with("default", "reviews-v1", v1);
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews]\n  http:\n  - route: [{destination: {host: reviews}}]\n    corsPolicy:\n      allowOrigins: [{exact: \"https://bookinfo.example\"}, {regex: \"https://.*\\\\.test\"}]\n      allowMethods: [GET, POST]\n      allowHeaders: [x-user]\n      exposeHeaders: [x-trace]\n      maxAge: 24h\n      allowCredentials: true\n";
    let client = mesh_client(table(vs, &locator));
    let preflight = Request::builder()
        .method("OPTIONS")
        .uri("http://reviews:9080/")
        .header("origin", "https://a.test")
        .header("access-control-request-method", "POST")
        .body(mesh_core::body::empty())
        .unwrap();
    let rsp = client.clone().oneshot(preflight).await.unwrap();
    assert_eq!(rsp.status(), 200);
    assert_eq!(rsp.headers()["access-control-allow-origin"], "https://a.test");
    assert_eq!(rsp.headers()["access-control-allow-methods"], "GET,POST");
    assert_eq!(rsp.headers()["access-control-max-age"], "86400");
    assert_eq!(rsp.headers()["access-control-allow-credentials"], "true");
    assert_eq!(hits.load(Ordering::SeqCst), 0, "an allowed preflight is answered by the proxy");

    let get = Request::builder()
        .uri("http://reviews:9080/")
        .header("origin", "https://bookinfo.example")
        .body(mesh_core::body::empty())
        .unwrap();
    let rsp = client.clone().oneshot(get).await.unwrap();
    assert_eq!(rsp.headers()["access-control-allow-origin"], "https://bookinfo.example");
    assert_eq!(rsp.headers()["access-control-expose-headers"], "x-trace");
    let other = Request::builder()
        .uri("http://reviews:9080/")
        .header("origin", "https://evil.example")
        .body(mesh_core::body::empty())
        .unwrap();
    assert!(!client.oneshot(other).await.unwrap().headers().contains_key("access-control-allow-origin"));
}
