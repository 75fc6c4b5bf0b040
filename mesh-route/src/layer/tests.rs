//! Layer behaviour with mocks and paused time.

use std::sync::LazyLock;

use mesh_config::test_util::Manifest;

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use mesh_config::{
    load::{LoadOptions, load_str},
    registry::{Locator, Registry},
};
use mesh_core::{BoxBody, BoxError, ext::UpstreamEndpoint};
use tokio_test::{assert_pending, assert_ready_ok, task};
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_test::mock;

use super::*;
use crate::policy::{ProxyContext, RouteTable, action::Target};
use mesh_core::error::NoCluster;

use super::test_support::*;

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
