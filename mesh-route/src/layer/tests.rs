//! Layer behaviour with mocks and paused time.

use std::sync::LazyLock;

use mesh_config::test_util::Manifest;

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use mesh_config::{
    load::{LoadOptions, load_str},
    registry::{Locator, Registry},
};
use mesh_core::roll::SeededRoll;
use mesh_core::{
    BoxBody, BoxError,
    ext::{ResponseFlags, UpstreamEndpoint},
};
use tokio_test::{assert_pending, assert_ready_ok, task};
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_test::mock;

use super::*;
use crate::policy::{ProxyContext, RouteTable, action::Target, retry::RetryPolicy};
use mesh_core::error::NoCluster;

/// The edge as mesh-proxy applies it above these layers (`mesh_proxy::edge`): a failure
/// becomes its local reply, so a test reads the status a caller would see.
fn edge<S, Req, B>(svc: S) -> impl Service<Req, Response = Response<B>, Error = BoxError, Future: Send> + Clone
where
    S: Service<Req, Response = Response<B>, Future: Send> + Clone,
    S::Error: Into<BoxError>,
    BoxError: From<S::Error>,
    B: mesh_core::body::LocalBody,
{
    tower::util::MapResult::new(svc, |r: Result<Response<B>, S::Error>| -> Result<Response<B>, BoxError> {
        Ok(r.unwrap_or_else(|e| mesh_core::reply::LocalReply::for_error(&*e.into()).into_response(false)))
    })
}

fn flags<B>(rsp: &Response<B>) -> String {
    rsp.extensions().get::<ResponseFlags>().copied().unwrap_or_default().to_string()
}

async fn text(rsp: Response<BoxBody>) -> String {
    String::from_utf8(rsp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

fn retry_policy(yaml_retries: &str) -> Arc<RetryPolicy> {
    let r: mesh_config::api::HttpRetry = serde_json::from_str(yaml_retries).unwrap();
    Arc::new(RetryPolicy::for_route(Some(&r)).unwrap())
}

fn request_with<T: Clone + Send + Sync + 'static>(ext: T) -> Request<Full<Bytes>> {
    let mut req = Request::new(Full::new(Bytes::new()));
    req.extensions_mut().insert(ext);
    req
}

// === timeout ===

#[tokio::test(start_paused = true)]
async fn route_timeout_fires_and_is_504_ut() {
    let (svc, mut handle) = mock::pair::<Request<()>, Response<BoxBody>>();
    let mut svc = edge(TimeoutLayer::per_route().layer(svc));
    handle.allow(1);
    let mut req = Request::new(());
    req.extensions_mut().insert(RouteTimeoutSetting(Duration::from_millis(500)));
    let mut fut = task::spawn(svc.ready().await.unwrap().call(req));
    assert_pending!(fut.poll());
    let (_r, _send) = handle.next_request().await.unwrap(); // the upstream never answers
    tokio::time::advance(Duration::from_millis(499)).await;
    assert_pending!(fut.poll());
    tokio::time::advance(Duration::from_millis(1)).await;
    let rsp = assert_ready_ok!(fut.poll());
    assert_eq!(rsp.status(), 504);
    assert_eq!(flags(&rsp), "UT");
    assert_eq!(text(rsp).await, "upstream request timeout");
}

#[tokio::test(start_paused = true)]
async fn a_fixed_timeout_alone_and_the_routes_before_it() {
    let (svc, mut handle) = mock::pair::<Request<()>, Response<BoxBody>>();
    let mut svc = edge(TimeoutLayer::new(Duration::from_secs(2)).layer(svc));
    handle.allow(2);
    // No route setting: the layer's own 2 s.
    let mut fut = task::spawn(svc.ready().await.unwrap().call(Request::new(())));
    let _held = handle.next_request().await.unwrap();
    tokio::time::advance(Duration::from_millis(1999)).await;
    assert_pending!(fut.poll());
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(assert_ready_ok!(fut.poll()).status(), 504);
    // The router's per-route setting takes precedence.
    let mut req = Request::new(());
    req.extensions_mut().insert(RouteTimeoutSetting(Duration::from_millis(100)));
    let mut fut = task::spawn(svc.ready().await.unwrap().call(req));
    let _held = handle.next_request().await.unwrap();
    tokio::time::advance(Duration::from_millis(100)).await;
    assert_eq!(assert_ready_ok!(fut.poll()).status(), 504);
}

#[tokio::test]
async fn no_timeout_by_default_and_backpressure_is_kept() {
    let (mut svc, mut handle) = mock::spawn_layer::<Request<()>, Response<()>, _>(TimeoutLayer::per_route());
    handle.allow(0);
    assert_pending!(svc.poll_ready());
    handle.allow(1);
    assert_ready_ok!(svc.poll_ready());
    let fut = svc.call(Request::new(()));
    let (_r, send) = handle.next_request().await.unwrap();
    send.send_response(Response::new(()));
    fut.await.unwrap();
}

// === retry ===

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
    let svc =
        RetryLayer::per_route().with_rng(Arc::new(SeededRoll::new(1))).layer(scripted(&[503, 503, 200], calls.clone()));
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
    let rsp = svc.oneshot(request_with(retry_policy(r#"{"attempts": 2, "retryOn": "gateway-error"}"#))).await.unwrap();
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
        .oneshot(request_with(retry_policy(r#"{"attempts": 1, "perTryTimeout": "1s", "retryOn": "connect-failure"}"#)))
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

// === router, balance, rescue: over a compiled table ===

static CONFIG: LazyLock<String> = LazyLock::new(|| {
    Manifest::new()
        .service("reviews", 9080)
        .deployment("reviews", "v1", None)
        .deployment("reviews", "v2", None)
        .doc(
            r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy: {connectionPool: {http: {http2MaxRequests: 1}}}
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}, {name: v3, labels: {version: v3}}]
"#,
        )
        .doc(
            r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /old}}]
    redirect: {uri: /new, authority: reviews.example.com}
  - match: [{uri: {exact: /teapot}}]
    directResponse: {status: 418, body: {string: "short and stout"}}
  - match: [{uri: {prefix: /v3}}]
    route: [{destination: {host: reviews, subset: v3}}]
  - match: [{uri: {prefix: /nope}}]
    route: [{destination: {host: reviews, subset: nope}}]
  - match: [{uri: {prefix: /api}}]
    rewrite: {uri: /v2/api}
    headers:
      request: {set: {x-route: api}, remove: [x-drop]}
      response: {add: {x-served-by: mesh}}
    route: [{destination: {host: reviews, subset: v2}}]
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
"#,
        )
        .to_string()
});

fn table() -> TableHandle {
    let loaded = load_str("c.yaml", CONFIG.as_str(), &LoadOptions::default());
    assert!(!loaded.has_errors(), "{}", loaded.report());
    let s = loaded.into_snapshot();
    let locator = Locator::new().with("default", "reviews-v1", "127.0.0.1:1".parse().unwrap()).with(
        "default",
        "reviews-v2",
        "127.0.0.2:2".parse().unwrap(),
    );
    TableHandle::new(RouteTable::compile(
        &s,
        &Registry::build(&s, &locator),
        &ProxyContext::sidecar("default", Default::default()),
    ))
}

/// The stack above the client, with an echoing upstream that reports where it was sent.
fn stack() -> impl Service<Request<Full<Bytes>>, Response = Response<BoxBody>, Error = BoxError> + Clone {
    let upstream = service_fn(|req: Request<RetryBody<Full<Bytes>>>| async move {
        let text = format!(
            "{} {} host={} x-route={} x-drop={}",
            req.uri(),
            req.uri().path(),
            req.headers().get("host").map_or("-", |h| h.to_str().unwrap()),
            req.headers().get("x-route").map_or("-", |h| h.to_str().unwrap()),
            req.headers().get("x-drop").map_or("-", |h| h.to_str().unwrap()),
        );
        Ok::<_, BoxError>(Response::new(mesh_core::body::full(text)))
    });
    tower::ServiceBuilder::new()
        .layer(tower::layer::layer_fn(edge))
        .layer(RouterLayer::new(table()))
        .layer(mesh_fault::FaultLayer::per_route())
        .layer(TimeoutLayer::per_route())
        .layer(RetryLayer::per_route())
        .layer(BalanceLayer::new())
        .service(upstream)
}

fn get(uri: &str) -> Request<Full<Bytes>> {
    Request::builder().uri(uri).header("host", "reviews:9080").body(Full::new(Bytes::new())).unwrap()
}

#[tokio::test]
async fn router_answers_and_forwards() {
    let svc = stack();
    assert_service::<_, Full<Bytes>>(&svc);

    let rsp = svc.clone().oneshot(get("/old/x?q=1")).await.unwrap();
    assert_eq!(rsp.status(), 301);
    assert_eq!(rsp.headers()["location"], "http://reviews.example.com/new?q=1");

    let rsp = svc.clone().oneshot(get("/teapot")).await.unwrap();
    assert_eq!(rsp.status(), 418);
    assert_eq!(text(rsp).await, "short and stout");

    let mut req = get("/api/items?x=1");
    req.headers_mut().insert("x-drop", "secret".parse().unwrap());
    let rsp = svc.clone().oneshot(req).await.unwrap();
    assert_eq!(rsp.status(), 200);
    assert_eq!(rsp.headers()["x-served-by"], "mesh");
    assert_eq!(rsp.extensions().get::<UpstreamEndpoint>().unwrap().0.address.to_string(), "127.0.0.2:2");
    let decision = rsp.extensions().get::<mesh_core::ext::RouteDecision>().unwrap().clone();
    assert_eq!(
        (decision.virtual_service.as_deref(), decision.route_index, decision.subset.as_deref()),
        (Some("default/reviews"), Some(4), Some("v2"))
    );
    assert_eq!(
        text(rsp).await,
        "http://127.0.0.2:2/v2/api/items?x=1 /v2/api/items host=reviews:9080 x-route=api x-drop=-"
    );
}

/// A request without a scheme takes its connection's where the router is told to (a
/// gateway listener), else the default: here as the scheme of a redirect's location.
#[tokio::test]
async fn the_scheme_of_a_request_without_one_is_its_connection_s_when_asked() {
    let upstream = service_fn(|_: Request<Full<Bytes>>| async { Ok::<_, BoxError>(Response::new(BoxBody::default())) });
    let over_tls = || {
        let mut req = get("/old/x");
        req.extensions_mut().insert(mesh_core::ext::DownstreamTls(true));
        req
    };
    for (layer, req, want) in [
        (RouterLayer::new(table()), over_tls(), "http://reviews.example.com/new"),
        (RouterLayer::new(table()).with_connection_scheme(), over_tls(), "https://reviews.example.com/new"),
        (RouterLayer::new(table()).with_connection_scheme(), get("/old/x"), "http://reviews.example.com/new"),
        (
            RouterLayer::new(table()).with_connection_scheme(),
            {
                let mut req = get("/old/x");
                let id = "spiffe://cluster.local/ns/default/sa/x".parse::<mesh_core::Identity>().unwrap();
                req.extensions_mut().insert(mesh_core::ext::PeerIdentity(id));
                req
            },
            "https://reviews.example.com/new",
        ),
        (
            RouterLayer::new(table()).with_connection_scheme().with_default_scheme("https"),
            get("/old/x"),
            "https://reviews.example.com/new",
        ),
    ] {
        let rsp = layer.layer(upstream).oneshot(req).await.unwrap();
        assert_eq!(
            (rsp.status(), &rsp.headers()["location"]),
            (StatusCode::MOVED_PERMANENTLY, &want.parse::<http::HeaderValue>().unwrap())
        );
    }
}

#[tokio::test]
async fn local_replies_for_failures() {
    let svc = stack();
    // No route matched on a host with a VirtualService.
    let rsp = svc.clone().oneshot(get("/")).await.unwrap();
    assert_eq!((rsp.status().as_u16(), flags(&rsp)), (404, "NR".to_string()));
    // Unknown host.
    let mut req = get("/");
    req.headers_mut().insert("host", "nowhere".parse().unwrap());
    let rsp = svc.clone().oneshot(req).await.unwrap();
    assert_eq!((rsp.status().as_u16(), flags(&rsp)), (404, "NR".to_string()));
    // Subset defined, no pods: 503 UH.
    let rsp = svc.clone().oneshot(get("/v3")).await.unwrap();
    assert_eq!((rsp.status().as_u16(), flags(&rsp)), (503, "UH".to_string()));
    assert_eq!(text(rsp).await, "no healthy upstream");
    // Subset not defined: 503 NC.
    let rsp = svc.clone().oneshot(get("/nope")).await.unwrap();
    assert_eq!((rsp.status().as_u16(), flags(&rsp)), (503, "NC".to_string()));
}

#[tokio::test]
async fn connection_pool_overflow_is_503_uo() {
    let (inner, mut handle) = mock::pair::<Request<Full<Bytes>>, Response<BoxBody>>();
    let mut svc = edge(RouterLayer::new(table()).layer(BalanceLayer::new().layer(inner)));
    handle.allow(2);
    let mut first = task::spawn(svc.ready().await.unwrap().call(get("/api")));
    assert_pending!(first.poll());
    // http2MaxRequests: 1, and one request is active.
    let rsp = svc.ready().await.unwrap().call(get("/api")).await.unwrap();
    assert_eq!((rsp.status().as_u16(), flags(&rsp)), (503, "UO".to_string()));
    let (_r, send) = handle.next_request().await.unwrap();
    send.send_response(Response::new(mesh_core::body::empty()));
    assert_eq!(assert_ready_ok!(first.poll()).status(), 200);
}

#[tokio::test]
async fn target_missing_from_extensions_is_nc() {
    let svc = BalanceLayer::new().layer(service_fn(|_: Request<()>| async { Ok::<_, BoxError>(Response::new(())) }));
    let err = svc.oneshot(Request::new(())).await.unwrap_err();
    assert!(mesh_core::is_caused_by::<NoCluster>(&*err));
    let missing =
        Target::Missing { name: "outbound|9080|x|h".into(), host: "h".into(), subset: None, port: Some(9080) };
    let svc = BalanceLayer::new().layer(service_fn(|_: Request<()>| async { Ok::<_, BoxError>(Response::new(())) }));
    let mut req = Request::new(());
    req.extensions_mut().insert(missing);
    assert!(mesh_core::is_caused_by::<NoCluster>(&*svc.oneshot(req).await.unwrap_err()));
}

// === load balancing and outlier detection, over a cluster of four endpoints ===

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
) -> impl Service<Request<RetryBody<Full<Bytes>>>, Response = Response<BoxBody>, Error = BoxError, Future = impl Send>
+ Clone
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
    let svc =
        edge(RouterLayer::new(cluster_table("{}")).layer(
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

/// A Gateway API mesh route through the router: a backendRef's own URLRewrite and
/// RequestMirror apply when that backend is picked; a rule with no weight left answers 500
/// itself, with the route named in the decision.
#[tokio::test]
async fn gateway_api_backend_filters_and_the_500_of_a_rule_without_weight() {
    let yaml = Manifest::new()
        .service("echo", 8080)
        .doc("apiVersion: v1\nkind: Service\nmetadata: {name: echo-v1}\nspec: {ports: [{port: 8080, name: http}], selector: {app: echo}}")
        .doc("apiVersion: v1\nkind: Service\nmetadata: {name: echo-shadow}\nspec: {ports: [{port: 8080, name: http}], selector: {app: echo}}")
        .deployment("echo", "v1", None)
        .doc(
            r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: echo}
spec:
  parentRefs: [{group: "", kind: Service, name: echo}]
  rules:
  - matches: [{path: {value: /zero}}]
    backendRefs: [{name: echo-v1, port: 8080, weight: 0}]
  - backendRefs:
    - name: echo-v1
      port: 8080
      filters:
      - {type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /v1}}}
      - {type: RequestMirror, requestMirror: {backendRef: {name: echo-shadow, port: 8080}}}
"#,
        )
        .to_string();
    let loaded = load_str("c.yaml", &yaml, &LoadOptions::default());
    assert!(!loaded.has_errors(), "{}", loaded.report());
    let s = loaded.into_snapshot();
    let locator = Locator::new().with("default", "echo-v1", "127.0.0.1:1".parse().unwrap());
    let table = TableHandle::new(RouteTable::compile(
        &s,
        &Registry::build(&s, &locator),
        &ProxyContext::sidecar("default", Default::default()),
    ));
    let mirrored = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = mirrored.clone();
    let sink = tower::util::BoxCloneSyncService::new(service_fn(move |req: Request<BoxBody>| {
        let target = req.extensions().get::<Target>().map(|t| t.name().to_string()).unwrap_or_default();
        seen.lock().unwrap().push((req.uri().path().to_string(), target));
        async { Ok::<_, BoxError>(Response::new(mesh_core::body::empty())) }
    }));
    let upstream = service_fn(|req: Request<Full<Bytes>>| async move {
        let target = req.extensions().get::<Target>().map(|t| t.name().to_string()).unwrap_or_default();
        Ok::<_, BoxError>(Response::new(mesh_core::body::full(format!("{} {target}", req.uri().path()))))
    });
    let svc = tower::ServiceBuilder::new()
        .layer(tower::layer::layer_fn(edge))
        .layer(RouterLayer::new(table).with_mirror(sink))
        .service(upstream);
    let req =
        |path: &str| Request::builder().uri(path).header("host", "echo:8080").body(Full::new(Bytes::new())).unwrap();

    let rsp = svc.clone().oneshot(req("/items/1")).await.unwrap();
    assert_eq!(text(rsp).await, "/v1/items/1 outbound|8080||echo-v1.default.svc.cluster.local");
    for _ in 0..100 {
        if !mirrored.lock().unwrap().is_empty() {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(
        mirrored.lock().unwrap().as_slice(),
        [("/v1/items/1".to_string(), "outbound|8080||echo-shadow.default.svc.cluster.local".to_string())]
    );

    let rsp = svc.clone().oneshot(req("/zero")).await.unwrap();
    assert_eq!(rsp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let decision = rsp.extensions().get::<mesh_core::ext::RouteDecision>().unwrap();
    assert_eq!((decision.route_index, decision.destination_service.as_deref()), (Some(0), None));
}
