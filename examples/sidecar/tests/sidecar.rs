//! mesh-sidecar as users run it: real processes on loopback, a client sidecar (productpage)
//! calling server sidecars (reviews v1 and v2) in front of in-process apps.

mod support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use support::*;

static SERVICES: LazyLock<String> = LazyLock::new(|| {
    Manifest::new()
        .service("reviews", 9080)
        .deployment("reviews", "v1", Some("bookinfo-reviews"))
        .deployment("reviews", "v2", Some("bookinfo-reviews"))
        .service("productpage", 9080)
        .deployment("productpage", "v1", Some("bookinfo-productpage"))
        .doc(
            r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"#,
        )
        .to_string()
});

const ROUTES: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - match: [{uri: {prefix: /abort}}]
    fault: {abort: {httpStatus: 500, percentage: {value: 100}}}
    route: [{destination: {host: reviews, subset: v1}}]
  - match: [{uri: {prefix: /delay}}]
    fault: {delay: {fixedDelay: 7s, percentage: {value: 100}}}
    route: [{destination: {host: reviews, subset: v1}}]
  - match: [{uri: {prefix: /split}}]
    route:
    - {destination: {host: reviews, subset: v1}, weight: 80}
    - {destination: {host: reviews, subset: v2}, weight: 20}
  - route: [{destination: {host: reviews, subset: v1}}]
"#;

const SECURITY: &str = r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-forbidden}
spec:
  selector: {matchLabels: {app: reviews}}
  action: DENY
  rules: [{to: [{operation: {paths: ["/forbidden"]}}]}]
"#;

/// ratings (one Deployment, no sidecar address unless a test gives one).
static RATINGS: LazyLock<String> = LazyLock::new(|| {
    Manifest::new()
        .service("ratings", 9080)
        .doc(
            r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: ratings-v1}
spec:
  selector: {matchLabels: {app: ratings}}
  template: {metadata: {labels: {app: ratings, version: v1}}, spec: {containers: [{name: r}]}}
"#,
        )
        .to_string()
});

/// productpage's sidecar, and reviews v1 and v2 each behind their own sidecar.
struct Bookinfo {
    mesh: Mesh,
    productpage: Sidecar,
    v1: Sidecar,
    v2: Sidecar,
    apps: [App; 2],
}

async fn bookinfo(files: &[(&str, &str)]) -> Bookinfo {
    bookinfo_with(files, &[]).await
}

/// [`bookinfo`], with more flags for productpage's sidecar.
async fn bookinfo_with(files: &[(&str, &str)], productpage_args: &[&str]) -> Bookinfo {
    let mesh = Mesh::new(files);
    let (a1, a2) = (App::named("reviews-v1").await, App::named("reviews-v2").await);
    let v1 = Sidecar::start(&mesh, Spec::server("app=reviews,version=v1", a1.addr));
    let v2 = Sidecar::start(&mesh, Spec::server("app=reviews,version=v2", a2.addr));
    let mut spec = Spec::client("app=productpage,version=v1")
        .endpoint("reviews-v1", v1.inbound())
        .endpoint("reviews-v2", v2.inbound());
    for a in productpage_args {
        spec = spec.arg(a);
    }
    let productpage = Sidecar::start(&mesh, spec);
    Bookinfo { mesh, productpage, v1, v2, apps: [a1, a2] }
}

fn standard() -> Vec<(&'static str, &'static str)> {
    vec![("services.yaml", SERVICES.as_str()), ("routes.yaml", ROUTES), ("security.yaml", SECURITY)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_header_in_origin_and_absolute_form_over_mtls() {
    let b = bookinfo(&standard()).await;
    let out = b.productpage.outbound();
    let r = get(out, "reviews:9080", "/reviews/0").await;
    assert_eq!((r.status, r.body.as_str()), (200, "reviews-v1"), "{r:?}");
    let jason =
        send(out, Req::get("/reviews/0").header("host", "reviews:9080").header("end-user", "jason")).await.unwrap();
    assert_eq!(jason.body, "reviews-v2");
    // As an HTTP proxy (HTTP_PROXY): absolute form.
    let proxied = send(out, Req::get("http://reviews:9080/reviews/0").header("end-user", "jason")).await.unwrap();
    assert_eq!((proxied.status, proxied.body.as_str()), (200, "reviews-v2"));
    // The hop to the server sidecar was mTLS: the server saw productpage's identity, and
    // the app got the caller's Host and the trace headers.
    let seen = b.apps[1].seen.lock().unwrap()[0].headers.clone();
    assert_eq!(seen["host"], "reviews:9080");
    assert!(seen.contains_key("x-request-id"));
    assert!(seen.contains_key("traceparent"));
    eventually("the server's access log", async || {
        b.v2.access_log.lock().unwrap().iter().any(|l| l.contains("/reviews/0"))
    })
    .await;
    // An unknown host is Envoy's 404 NR.
    let nr = get(out, "nothing:9080", "/").await;
    assert_eq!(nr.status, 404);
    assert_eq!(nr.headers["x-mesh-error"], "NR");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_abort_and_an_80_20_split() {
    let b = bookinfo(&standard()).await;
    let out = b.productpage.outbound();
    let abort = get(out, "reviews:9080", "/abort").await;
    assert_eq!((abort.status, abort.body.as_str()), (500, "fault filter abort"));
    assert!(b.apps[0].seen.lock().unwrap().is_empty(), "an aborted request never reaches the app");

    let mut v1 = 0;
    for _ in 0..200 {
        let r = get(out, "reviews:9080", "/split").await;
        assert_eq!(r.status, 200);
        if r.body == "reviews-v1" {
            v1 += 1;
        }
    }
    // Binomial(200, 0.8): mean 160, standard deviation 5.7; this bound is over 5 of them.
    assert!((130..=190).contains(&v1), "v1 took {v1} of 200");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_7s_delay_is_what_the_client_sees() {
    let b = bookinfo(&standard()).await;
    let start = tokio::time::Instant::now();
    let r = get(b.productpage.outbound(), "reviews:9080", "/delay").await;
    let took = start.elapsed();
    assert_eq!(r.status, 200);
    assert!(took >= Duration::from_secs(7) && took < Duration::from_secs(9), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_mtls_refuses_plaintext_and_authz_denies_with_rbac_403() {
    let b = bookinfo(&standard()).await;
    // A plaintext client straight to the inbound port: the connection is refused.
    let direct = send(b.v1.inbound(), Req::get("/reviews/0").header("host", "reviews:9080")).await;
    assert!(direct.is_err(), "plaintext got through STRICT: {direct:?}");
    // Through the client sidecar (mTLS), the DENY policy answers.
    let denied = get(b.productpage.outbound(), "reviews:9080", "/forbidden").await;
    assert_eq!((denied.status, denied.body.as_str()), (403, "RBAC: access denied"));
    assert!(b.apps[0].seen.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_reporters_count_the_request_and_the_admin_pages_answer() {
    let b = bookinfo(&standard()).await;
    for _ in 0..3 {
        assert_eq!(get(b.productpage.outbound(), "reviews:9080", "/reviews/0").await.status, 200);
    }
    let source = b.productpage.admin_get("/stats/prometheus").await.body;
    let labels = [
        ("reporter", "source"),
        ("source_workload", "productpage-v1"),
        ("destination_workload", "reviews-v1"),
        ("destination_version", "v1"),
        ("response_code", "200"),
        ("connection_security_policy", "unknown"),
    ];
    assert_eq!(sample(&source, "istio_requests_total", &labels), Some(3.0), "{source}");
    // The server side counts when the response body ends: wait for the third.
    eventually("the destination reporter", async || {
        let text = b.v1.admin_get("/stats/prometheus").await.body;
        sample(
            &text,
            "istio_requests_total",
            &[
                ("reporter", "destination"),
                ("source_workload", "productpage-v1"),
                ("source_principal", "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"),
                ("destination_workload", "reviews-v1"),
                ("connection_security_policy", "mutual_tls"),
            ],
        ) == Some(3.0)
    })
    .await;

    let ready = b.v1.admin_get("/ready").await;
    assert_eq!((ready.status, ready.body.as_str()), (200, "LIVE\n"));
    // What `meshctl proxy-status` reads: who, what, and the config in force.
    let info: serde_json::Value = serde_json::from_str(&b.v1.admin_get("/server_info").await.body).unwrap();
    assert_eq!(
        (info["name"].as_str(), info["type"].as_str(), info["state"].as_str()),
        (Some("reviews-v1"), Some("sidecar"), Some("LIVE"))
    );
    assert_eq!(info["config"]["generation"], 1);
    assert_eq!(info["config"]["version"].as_str().map(str::len), Some(16));
    assert!(info["config"]["loaded_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{info}");
    let dump: serde_json::Value = serde_json::from_str(&b.productpage.admin_get("/config_dump").await.body).unwrap();
    assert_eq!(dump["workload"]["name"], "productpage-v1");
    assert_eq!(dump["workload"]["identity"], "spiffe://cluster.local/ns/default/sa/bookinfo-productpage");
    assert!(dump["resources"].as_array().unwrap().iter().any(|r| r["kind"] == "VirtualService"));
    let reviews = dump["route_table"]["virtual_hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "reviews.default.svc.cluster.local")
        .expect("a virtual host for reviews");
    assert_eq!(reviews["routes"].as_array().unwrap().len(), 5);
    let clusters = b.productpage.admin_get("/clusters").await.body;
    let line = format!("outbound|9080|v1|reviews.default.svc.cluster.local::{}::health_flags::healthy", b.v1.inbound());
    assert!(clusters.lines().any(|l| l == line), "{clusters}");
    let json: serde_json::Value =
        serde_json::from_str(&b.productpage.admin_get("/clusters?format=json").await.body).unwrap();
    assert!(json["clusters"].as_array().unwrap().iter().any(|c| c["subset"] == "v2"));

    // The log level changes at run time; a bad filter is refused with the reason.
    let set = send(b.v1.admin.unwrap(), Req { method: "POST", ..Req::get("/logging?level=debug") }).await.unwrap();
    assert_eq!((set.status, set.body.as_str()), (200, "active filter: debug\n"));
    assert_eq!(b.v1.admin_get("/logging").await.body, "active filter: debug\n");
    let bad = send(b.v1.admin.unwrap(), Req { method: "POST", ..Req::get("/logging?level=a%3D%3Dz") }).await.unwrap();
    assert_eq!(bad.status, 400, "{bad:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_get_past_a_flaky_upstream() {
    let ratings_vs = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - route: [{destination: {host: ratings}}]
    retries: {attempts: 3, retryOn: 5xx}
"#;
    let mesh = Mesh::new(&[("ratings.yaml", RATINGS.as_str()), ("ratings-vs.yaml", ratings_vs)]);
    let calls = Arc::new(AtomicUsize::new(0));
    let count = calls.clone();
    let app = App::start(Arc::new(move |_| {
        let n = count.fetch_add(1, Ordering::SeqCst);
        if n < 2 { (503, "flaky".into(), Duration::ZERO) } else { (200, "ratings".into(), Duration::ZERO) }
    }))
    .await;
    let server = Sidecar::start(&mesh, Spec::server("app=ratings,version=v1", app.addr));
    let client = Sidecar::start(&mesh, Spec::client("app=reviews").endpoint("ratings-v1", server.inbound()));
    let r = get(client.outbound(), "ratings:9080", "/ratings/0").await;
    assert_eq!((r.status, r.body.as_str()), (200, "ratings"));
    assert_eq!(calls.load(Ordering::SeqCst), 3, "two failures, then the third try");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_reloads_during_a_request_loop_without_a_failure() {
    let b = bookinfo(&standard()).await;
    let out = b.productpage.outbound();
    let to_v2 = ROUTES.replace(
        "  - route: [{destination: {host: reviews, subset: v1}}]",
        "  - route: [{destination: {host: reviews, subset: v2}}]",
    );
    let mut seen_v2 = false;
    let mut last = String::new();
    for i in 0..400 {
        match i {
            50 => b.mesh.write("routes.yaml", &to_v2),
            // A broken file: the last good config keeps serving, the error is reported;
            // a good change beside it waits until the broken file is fixed.
            150 => {
                b.mesh.write("broken.yaml", "kind: VirtualService\nmetadata: {name: x}\nspec: {hosts: 7}\n");
                eventually("the load error in /config_dump", async || {
                    let dump = b.productpage.admin_get("/config_dump").await.body;
                    dump.contains("broken.yaml")
                })
                .await;
                b.mesh.write("routes.yaml", ROUTES);
            }
            250 => std::fs::remove_file(b.mesh.config().join("broken.yaml")).unwrap(),
            _ => {}
        }
        let r = get(out, "reviews:9080", "/reviews/0").await;
        assert_eq!(r.status, 200, "request {i} failed during a reload: {r:?}");
        seen_v2 |= r.body == "reviews-v2";
        if (150..250).contains(&i) {
            assert_eq!(r.body, "reviews-v2", "request {i}: a change went live beside a broken file");
        }
        last = r.body;
        if (50..150).contains(&i) && !seen_v2 || i >= 250 && last != "reviews-v1" {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    assert!(seen_v2, "the reload to v2 never took effect");
    assert_eq!(last, "reviews-v1", "the reload back to v1 never took effect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_then_exits() {
    let mesh = Mesh::new(&standard());
    let app = App::start(Arc::new(|req| {
        let slow = req.uri().path() == "/slow";
        (200, "reviews-v1".into(), if slow { Duration::from_millis(1500) } else { Duration::ZERO })
    }))
    .await;
    let mut v1 = Sidecar::start(&mesh, Spec::server("app=reviews,version=v1", app.addr));
    let mut pp = Sidecar::start(&mesh, Spec::client("app=productpage,version=v1").endpoint("reviews-v1", v1.inbound()));
    let out = pp.outbound();
    assert_eq!(get(out, "reviews:9080", "/reviews/0").await.status, 200);

    // Requests in flight through both sidecars when the server's sidecar is told to stop.
    let in_flight: Vec<_> =
        (0..4).map(|_| tokio::spawn(async move { get(out, "reviews:9080", "/slow").await })).collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    v1.terminate();
    for r in in_flight {
        let r = r.await.unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "reviews-v1"), "{r:?}");
    }
    let status = tokio::task::spawn_blocking(move || {
        let s = v1.wait(Duration::from_secs(5));
        (s, v1)
    })
    .await
    .unwrap();
    assert!(status.0.is_some_and(|s| s.success()), "the server sidecar did not exit cleanly: {:?}", status.0);

    // The client's sidecar, with requests in flight to a new server.
    let v1 = Sidecar::start(&mesh, Spec::server("app=reviews,version=v1", app.addr));
    let mut pp2 =
        Sidecar::start(&mesh, Spec::client("app=productpage,version=v1").endpoint("reviews-v1", v1.inbound()));
    let out2 = pp2.outbound();
    let in_flight: Vec<_> =
        (0..4).map(|_| tokio::spawn(async move { get(out2, "reviews:9080", "/slow").await })).collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    pp2.terminate();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Draining: no new connections.
    assert!(send(out2, Req::get("/").header("host", "reviews:9080")).await.is_err());
    for r in in_flight {
        assert_eq!(r.await.unwrap().status, 200);
    }
    let exited = tokio::task::spawn_blocking(move || pp2.wait(Duration::from_secs(5))).await.unwrap();
    assert!(exited.is_some_and(|s| s.success()));
    pp.terminate();
    assert!(tokio::task::spawn_blocking(move || pp.wait(Duration::from_secs(5))).await.unwrap().is_some());
}

/// A gRPC unary call, framed by hand: the 5-byte prefix (uncompressed, length) and bytes.
fn grpc_frame(msg: &[u8]) -> bytes::Bytes {
    let mut b = vec![0u8];
    b.extend_from_slice(&u32::try_from(msg.len()).unwrap().to_be_bytes());
    b.extend_from_slice(msg);
    b.into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_and_grpc_with_trailers_through_two_sidecars() {
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let echo = r#"
apiVersion: v1
kind: Service
metadata: {name: echo}
spec: {ports: [{port: 9090, name: grpc}], selector: {app: echo}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: echo-v1}
spec:
  selector: {matchLabels: {app: echo}}
  template: {metadata: {labels: {app: echo, version: v1}}, spec: {serviceAccountName: echo, containers: [{name: e}]}}
"#;
    let mut files = standard();
    files.push(("echo.yaml", echo));
    let mesh = Mesh::new(&files);
    // A gRPC server (h2c): echoes the message, status and a custom trailer.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    assert_eq!(req.version(), http::Version::HTTP_2, "gRPC reaches the app over HTTP/2");
                    let path = req.uri().path().to_string();
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    let mut trailers = http::HeaderMap::new();
                    trailers.insert("grpc-status", "0".parse().unwrap());
                    trailers.insert("x-echo-path", path.parse().unwrap());
                    let rsp = http::Response::builder()
                        .header("content-type", "application/grpc")
                        .body(Full::new(body).with_trailers(async move { Some(Ok(trailers)) }))
                        .unwrap();
                    Ok::<_, std::convert::Infallible>(rsp)
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    let (a1, _a2) = (App::named("reviews-v1").await, ());
    let server = Sidecar::start(&mesh, Spec::server("app=echo,version=v1", app_addr));
    let v1 = Sidecar::start(&mesh, Spec::server("app=reviews,version=v1", a1.addr));
    let client = Sidecar::start(
        &mesh,
        Spec::client("app=productpage,version=v1")
            .endpoint("echo-v1", server.inbound())
            .endpoint("reviews-v1", v1.inbound()),
    );

    // The app talks HTTP/2 with prior knowledge to its sidecar.
    let tcp = tokio::net::TcpStream::connect(client.outbound()).await.unwrap();
    let (mut h2, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);

    // Plain HTTP/2 to an HTTP/1.1 app.
    let rsp = h2
        .send_request(
            http::Request::builder().uri("http://reviews:9080/reviews/0").body(Full::new(bytes::Bytes::new())).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
    assert_eq!(rsp.into_body().collect().await.unwrap().to_bytes(), "reviews-v1");

    // gRPC, trailers and all.
    let req = http::Request::builder()
        .method("POST")
        .uri("http://echo:9090/test.Echo/Say")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(grpc_frame(b"hello")))
        .unwrap();
    let rsp = h2.send_request(req).await.unwrap();
    assert_eq!(rsp.status(), 200);
    let collected = rsp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("trailers arrive");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["x-echo-path"], "/test.Echo/Say");
    assert_eq!(collected.to_bytes(), grpc_frame(b"hello"));

    // Both reporters saw a gRPC call with its status.
    let text = client.admin_get("/stats/prometheus").await.body;
    assert_eq!(
        sample(&text, "istio_requests_total", &[("destination_workload", "echo-v1"), ("request_protocol", "grpc")]),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_echo_through_two_sidecars() {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mesh = Mesh::new(&standard());
    // The app: accepts the upgrade, then echoes every text frame in upper case.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|mut req: http::Request<hyper::body::Incoming>| async move {
                    let key = req.headers()["sec-websocket-key"].to_str().unwrap().to_string();
                    let upgrade = hyper::upgrade::on(&mut req);
                    tokio::spawn(async move {
                        let mut io = TokioIo::new(upgrade.await.unwrap());
                        loop {
                            let text = ws::read_text(&mut io).await;
                            ws::write_text(&mut io, &text.to_uppercase(), None).await;
                        }
                    });
                    let rsp = http::Response::builder()
                        .status(101)
                        .header("upgrade", "websocket")
                        .header("connection", "Upgrade")
                        .header("sec-websocket-accept", ws::accept(&key))
                        .body(http_body_util::Empty::<bytes::Bytes>::new())
                        .unwrap();
                    Ok::<_, std::convert::Infallible>(rsp)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    let v1 = Sidecar::start(&mesh, Spec::server("app=reviews,version=v1", app_addr));
    let pp = Sidecar::start(&mesh, Spec::client("app=productpage,version=v1").endpoint("reviews-v1", v1.inbound()));

    // The browser's side, byte for byte.
    let mut tcp = tokio::net::TcpStream::connect(pp.outbound()).await.unwrap();
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    let handshake = format!(
        "GET /chat HTTP/1.1\r\nHost: reviews:9080\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(handshake.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        assert_eq!(
            tcp.read(&mut b).await.unwrap(),
            1,
            "closed during the handshake: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains(&format!("sec-websocket-accept: {}", ws::accept(key).to_ascii_lowercase())), "{head}");
    for word in ["hello", "mesh"] {
        ws::write_text(&mut tcp, word, Some([1, 2, 3, 4])).await;
        assert_eq!(ws::read_text(&mut tcp).await, word.to_uppercase());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_or_oversized_requests_get_a_clear_4xx() {
    let mesh = Mesh::new(&standard());
    let app = App::named("reviews-v1").await;
    let v1 = Sidecar::start(&mesh, Spec::server("app=reviews,version=v1", app.addr));
    let pp = Sidecar::start(
        &mesh,
        Spec::client("app=productpage,version=v1")
            .endpoint("reviews-v1", v1.inbound())
            .arg("--max-request-bytes")
            .arg("1000"),
    );
    let out = pp.outbound();
    // Request smuggling: Content-Length and Transfer-Encoding together, then a second
    // request hidden in the body. 400 and the connection closed, as Envoy does by default:
    // neither the request nor the hidden one reaches the app.
    let smuggle = raw(
        out,
        b"POST /smuggle HTTP/1.1\r\nHost: reviews:9080\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n\
          0\r\n\r\nGET /hidden HTTP/1.1\r\nHost: reviews:9080\r\n\r\n",
    )
    .await;
    assert!(
        smuggle.starts_with("HTTP/1.1 400") && smuggle.contains("Content-Length and Transfer-Encoding"),
        "{smuggle}"
    );
    assert_eq!(smuggle.matches("HTTP/1.1").count(), 1, "{smuggle}");
    assert!(smuggle.contains("connection: close"), "{smuggle}");
    // Also as the second request of a keep-alive connection (after bodies of either
    // framing: crate::framing's tests); the gateway's test sends one too.
    let second = raw(
        out,
        b"GET /reviews/0 HTTP/1.1\r\nHost: reviews:9080\r\n\r\n\
          POST /smuggle HTTP/1.1\r\nHost: reviews:9080\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
    )
    .await;
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
    assert_eq!(second.matches("HTTP/1.1 400").count(), 1, "{second}");
    let two_hosts = raw(out, b"GET / HTTP/1.1\r\nHost: reviews:9080\r\nHost: evil:9080\r\n\r\n").await;
    assert!(two_hosts.starts_with("HTTP/1.1 400") && two_hosts.contains("more than one Host"), "{two_hosts}");
    let two_lengths =
        raw(out, b"POST / HTTP/1.1\r\nHost: reviews:9080\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcd").await;
    assert!(two_lengths.starts_with("HTTP/1.1 400"), "{two_lengths}");
    let huge_head =
        raw(out, format!("GET / HTTP/1.1\r\nHost: reviews:9080\r\nX-Big: {}\r\n\r\n", "a".repeat(70_000)).as_bytes())
            .await;
    assert!(huge_head.starts_with("HTTP/1.1 431"), "{huge_head}");
    let too_big = raw(
        out,
        format!("POST / HTTP/1.1\r\nHost: reviews:9080\r\nContent-Length: 2000\r\n\r\n{}", "b".repeat(2000)).as_bytes(),
    )
    .await;
    assert!(too_big.starts_with("HTTP/1.1 413"), "{too_big}");
    // A chunked body that streams past the limit never reaches the app whole.
    let chunk = format!("{:x}\r\n{}\r\n", 800, "c".repeat(800));
    let streamed = raw(
        out,
        format!("POST / HTTP/1.1\r\nHost: reviews:9080\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}{chunk}0\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert!(streamed.starts_with("HTTP/1.1 413"), "{streamed}");
    assert!(app.seen.lock().unwrap().iter().all(|p| p.uri.path() != "/hidden" && p.uri.path() != "/smuggle"));
    // Within the limits, all is well.
    assert_eq!(get(out, "reviews:9080", "/reviews/0").await.status, 200);
}

/// A client's malformed body is its own fault: 400 DPE at the outbound and the inbound,
/// never 503, never counted by outlier detection; case variants of standard methods are
/// refused before any policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_bad_body_is_never_charged_to_the_upstream() {
    let mut files = standard();
    files.push(("outlier.yaml", OUTLIER));
    let mesh = Mesh::new(&files);
    let app = App::named("reviews-v1").await;
    let v1 = Sidecar::start(&mesh, Spec::server("app=reviews,version=v1", app.addr));
    let pp = Sidecar::start(&mesh, Spec::client("app=productpage,version=v1").endpoint("reviews-v1", v1.inbound()));
    let bad_chunks: [&[u8]; 5] = [
        b"zz\r\nabc\r\n0\r\n\r\n",
        b"-1\r\nabc\r\n0\r\n\r\n",
        b"0x5\r\nabcde\r\n0\r\n\r\n",
        b"100000000000000000\r\nabc\r\n0\r\n\r\n",
        b"3\r\nabcxyz0\r\n\r\n",
    ];
    for round in 0..2 {
        for body in bad_chunks {
            let mut req =
                b"POST /reviews/0 HTTP/1.1\r\nHost: reviews:9080\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            req.extend_from_slice(body);
            let out = raw(pp.outbound(), &req).await;
            assert!(out.starts_with("HTTP/1.1 400"), "round {round}, {:?}: {out}", String::from_utf8_lossy(body));
            assert!(out.contains("x-mesh-error: DPE"), "{out}");
        }
    }
    // Ten malformed bodies later the endpoint is still in use: nothing was ejected.
    assert_eq!(get(pp.outbound(), "reviews:9080", "/reviews/0").await.status, 200);
    let clusters = pp.admin_get("/clusters").await.body;
    assert!(!clusters.contains("failed_outlier_check"), "{clusters}");
    let stats = pp.admin_get("/stats/prometheus").await.body;
    assert!(sample(&stats, "mesh_outlier_ejections_total", &[]).unwrap_or(0.0) == 0.0, "{stats}");
    // Method names are case-sensitive: `delete` is refused, `PURGE` passes.
    let lower = raw(pp.outbound(), b"delete /reviews/0 HTTP/1.1\r\nHost: reviews:9080\r\n\r\n").await;
    assert!(lower.starts_with("HTTP/1.1 400"), "{lower}");
    let purge =
        raw(pp.outbound(), b"PURGE /reviews/0 HTTP/1.1\r\nHost: reviews:9080\r\nConnection: close\r\n\r\n").await;
    assert!(purge.starts_with("HTTP/1.1 200"), "{purge}");
    assert!(app.seen.lock().unwrap().iter().all(|r| r.method.as_str() != "delete"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_local_replies_for_each_upstream_failure() {
    let extra = r#"
apiVersion: v1
kind: Service
metadata: {name: details}
spec: {ports: [{port: 9080, name: http}], selector: {app: details}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: details-v1}
spec:
  selector: {matchLabels: {app: details}}
  template: {metadata: {labels: {app: details, version: v1}}, spec: {containers: [{name: d}]}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: details}
spec:
  hosts: [details]
  http:
  - match: [{uri: {prefix: /slow}}]
    timeout: 300ms
    route: [{destination: {host: details}}]
  - match: [{uri: {prefix: /nosubset}}]
    route: [{destination: {host: details, subset: v9}}]
  - route: [{destination: {host: details}}]
    retries: {attempts: 0}
"#;
    let mut files = standard();
    files.push(("ratings.yaml", RATINGS.as_str()));
    files.push(("extra.yaml", extra));
    let mesh = Mesh::new(&files);
    let slow = App::start(Arc::new(|_| (200, "details".into(), Duration::from_secs(2)))).await;
    let details = Sidecar::start(&mesh, Spec::server("app=details,version=v1", slow.addr));
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let pp = Sidecar::start(
        &mesh,
        Spec::client("app=productpage,version=v1")
            .endpoint("details-v1", details.inbound())
            .endpoint("reviews-v1", dead),
    );
    let out = pp.outbound();
    let check = async |host: &str, path: &str, status: u16, flag: &str, body: &str| {
        let r = get(out, host, path).await;
        assert_eq!(
            (r.status, r.headers.get("x-mesh-error").map(|v| v.to_str().unwrap())),
            (status, Some(flag)),
            "{r:?}"
        );
        assert_eq!(r.body, body, "{host}{path}");
    };
    // ratings has no endpoint at all.
    check("ratings:9080", "/", 503, "UH", "no healthy upstream").await;
    // reviews-v1's address refuses connections (retried by the default policy, then URX).
    check(
        "reviews:9080",
        "/reviews/0",
        503,
        "UF,URX",
        "upstream connect error or disconnect/reset before headers. reset reason: connection failure",
    )
    .await;
    check("details:9080", "/slow", 504, "UT", "upstream request timeout").await;
    check("details:9080", "/nosubset", 503, "NC", "").await;
    check("nowhere:9080", "/", 404, "NR", "").await;
    // Each is in the source metrics with its flag.
    let text = pp.admin_get("/stats/prometheus").await.body;
    for (code, flags) in [("503", "UH"), ("503", "UF,URX"), ("504", "UT"), ("503", "NC"), ("404", "NR")] {
        assert_eq!(
            total(&text, "istio_requests_total", &[("response_code", code), ("response_flags", flags)]),
            1.0,
            "{code} {flags}: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_entries_with_static_endpoints_and_workload_entries() {
    let external = App::named("external api").await;
    let vm = App::named("vm workload").await;
    let entries = format!(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: external-api}}
spec:
  hosts: [api.example.com]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {}}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: legacy}}
spec:
  hosts: [legacy.internal]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  workloadSelector: {{labels: {{app: legacy}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: legacy-vm-1}}
spec:
  address: 127.0.0.1
  labels: {{app: legacy}}
  ports: {{http: {}}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: legacy-plaintext}}
spec:
  selector: {{matchLabels: {{app: legacy}}}}
  mtls: {{mode: DISABLE}}
"#,
        external.addr.port(),
        vm.addr.port()
    );
    let mesh = Mesh::new(&[("entries.yaml", &entries)]);
    let client = Sidecar::start(&mesh, Spec::client("app=productpage,version=v1"));
    let out = client.outbound();
    let r = get(out, "api.example.com", "/v1/things").await;
    assert_eq!((r.status, r.body.as_str()), (200, "external api"), "{r:?}");
    let r = send(out, Req::get("http://legacy.internal:8080/")).await.unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "vm workload"), "{r:?}");
    let clusters = client.admin_get("/clusters").await.body;
    assert!(
        clusters.contains(&format!("outbound|8080||legacy.internal::{}::health_flags::healthy", vm.addr)),
        "{clusters}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_keys_from_a_jwks_uri_gate_the_request() {
    let issuer = mesh_authz::jwt::testing::Issuer::new();
    let jwks = App::named(&issuer.jwks).await;
    let policy = format!(
        r#"
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: jwt}}
spec:
  selector: {{matchLabels: {{app: reviews}}}}
  jwtRules:
  - issuer: https://issuer.test
    jwksUri: http://{}/jwks.json
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: require-jwt}}
spec:
  selector: {{matchLabels: {{app: reviews}}}}
  rules:
  - from: [{{source: {{requestPrincipals: ["https://issuer.test/*"]}}}}]
"#,
        jwks.addr
    );
    let b = bookinfo(&[("services.yaml", SERVICES.as_str()), ("routes.yaml", ROUTES), ("jwt.yaml", &policy)]).await;
    let out = b.productpage.outbound();
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 600;
    let token = issuer.token(&serde_json::json!({"iss": "https://issuer.test", "sub": "jason", "exp": exp}));
    let with =
        |t: &str| Req::get("/reviews/0").header("host", "reviews:9080").header("authorization", &format!("Bearer {t}"));
    // The keys are fetched when the config loads: wait for them.
    eventually("the JWKS to be fetched", async || send(out, with(&token)).await.is_ok_and(|r| r.status == 200)).await;
    let anonymous = get(out, "reviews:9080", "/reviews/0").await;
    assert_eq!((anonymous.status, anonymous.body.as_str()), (403, "RBAC: access denied"));
    // Signed by a key the JWKS does not hold.
    let forged = mesh_authz::jwt::testing::Issuer::new()
        .token(&serde_json::json!({"iss": "https://issuer.test", "sub": "mallory", "exp": exp}));
    let bad = send(out, with(&forged)).await.unwrap();
    assert_eq!(bad.status, 401, "{bad:?}");
    assert!(jwks.seen.lock().unwrap().iter().any(|p| p.uri.path() == "/jwks.json"));
}

/// Telemetry `accessLogging`, as Istio's "Envoy access logs" task uses it: the mesh's
/// resource turns logs off, a workload's turns its server side back on for the requests a
/// filter holds for, and another turns the client side on where `--access-log off` left it
/// off. A change is in force without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_access_logging_turns_logs_on_off_and_filters_them() {
    let telemetry = r#"
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  accessLogging: [{disabled: true}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: reviews-errors}
spec:
  selector: {matchLabels: {app: reviews}}
  accessLogging:
  - match: {mode: SERVER}
    filter: {expression: "response.code >= 400 || request.headers['end-user'] == 'jason'"}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: productpage-client}
spec:
  selector: {matchLabels: {app: productpage}}
  accessLogging: [{match: {mode: CLIENT}, providers: [{name: envoy}]}]
"#;
    let mut files = standard();
    files.push(("telemetry.yaml", telemetry));
    let b = bookinfo_with(&files, &["--access-log", "off"]).await;
    let (pp, v1, v2) = (&b.productpage, &b.v1, &b.v2);
    let out = pp.outbound();
    assert_eq!(get(out, "reviews:9080", "/reviews/0").await.status, 200);
    let jason = send(out, Req::get("/reviews/1").header("host", "reviews:9080").header("end-user", "jason"));
    assert_eq!(jason.await.unwrap().body, "reviews-v2");
    assert_eq!(get(out, "reviews:9080", "/forbidden").await.status, 403);
    let lines = |s: &Sidecar| s.access_log.lock().unwrap().clone();
    let has = |s: &Sidecar, what: &str| lines(s).iter().any(|l| l.contains(what));
    eventually("reviews-v1's 403 logged", async || has(v1, "/forbidden")).await;
    eventually("jason's request logged at reviews-v2", async || has(v2, "/reviews/1")).await;
    eventually("productpage's three calls logged", async || lines(pp).len() == 3).await;
    assert!(!has(v1, "/reviews/0"), "a 200 without end-user: jason is not logged: {:?}", lines(v1));
    assert_eq!(lines(v1).len() + lines(v2).len(), 2, "{:?} {:?}", lines(v1), lines(v2));

    // The filter removed: reviews logs every request; the mesh's `disabled` still holds
    // for productpage's server side (it has none) and nothing else changed.
    b.mesh.write(
        "telemetry.yaml",
        &telemetry.replace(
            "    filter: {expression: \"response.code >= 400 || request.headers['end-user'] == 'jason'\"}\n",
            "",
        ),
    );
    eventually("every request logged at reviews-v1", async || {
        get(out, "reviews:9080", "/reviews/2").await;
        has(v1, "/reviews/2")
    })
    .await;
}

/// A start-up failure names what failed and exits 1: here the outbound port is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_port_is_a_named_start_up_failure() {
    let mesh = Mesh::new(&standard());
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mesh-sidecar"))
        .arg("--config")
        .arg(mesh.config())
        .arg("--ca-dir")
        .arg(mesh.ca())
        .args(["--outbound", &addr.to_string(), "--workload-labels", "app=productpage,version=v1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("mesh-sidecar: cannot listen on {addr} (outbound): ")), "{stderr}");
}

/// CUSTOM authorization in the shipped sidecar: `--mesh-config` names Istio's mesh config,
/// whose `envoyExtAuthzHttp` provider the reviews sidecar asks before the app; the
/// authorizer's denial reaches the caller, and an allowed request reaches the app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_authorization_asks_the_mesh_configs_provider() {
    let authorizer = App::start(Arc::new(|req| match req.headers().get("x-ext-allow") {
        Some(_) => (200, String::new(), Duration::ZERO),
        None => (403, "denied by ext-authz".into(), Duration::ZERO),
    }))
    .await;
    let policy = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext}
spec:
  selector: {matchLabels: {app: reviews}}
  action: CUSTOM
  provider: {name: ext-authz}
  rules: [{to: [{operation: {paths: ["/reviews/*"]}}]}]
"#;
    let mesh = Mesh::new(&[("services.yaml", SERVICES.as_str()), ("routes.yaml", ROUTES), ("ext.yaml", policy)]);
    let dir = tempfile::tempdir().unwrap();
    let mesh_config = dir.path().join("mesh.yaml");
    std::fs::write(
        &mesh_config,
        format!(
            "extensionProviders:\n- name: ext-authz\n  envoyExtAuthzHttp:\n    service: 127.0.0.1\n    port: {}\n    includeRequestHeadersInCheck: [x-ext-allow]\n",
            authorizer.addr.port()
        ),
    )
    .unwrap();
    let app = App::named("reviews-v1").await;
    let v1 = Sidecar::start(
        &mesh,
        Spec::server("app=reviews,version=v1", app.addr).arg("--mesh-config").arg(&mesh_config.display().to_string()),
    );
    let productpage =
        Sidecar::start(&mesh, Spec::client("app=productpage,version=v1").endpoint("reviews-v1", v1.inbound()));
    let out = productpage.outbound();
    let allowed = send(out, Req::get("/reviews/0").header("host", "reviews:9080").header("x-ext-allow", "yes")).await;
    assert_eq!(allowed.as_ref().map(|r| (r.status, r.body.as_str())), Ok((200, "reviews-v1")), "{allowed:?}");
    let denied = get(out, "reviews:9080", "/reviews/0").await;
    assert_eq!((denied.status, denied.body.as_str()), (403, "denied by ext-authz"));
    assert_eq!(app.seen.lock().unwrap().len(), 1, "the denied request never reached the app");
    let checks: Vec<String> = authorizer.seen.lock().unwrap().iter().map(|p| p.uri.path().to_string()).collect();
    assert_eq!(checks, ["/reviews/0", "/reviews/0"]);
    let stats = v1.admin_get("/stats/prometheus").await.body;
    assert!(stats.contains("mesh_authz_decisions_total{decision=\"custom_deny\"} 1"), "{stats}");
}

/// A mesh config that does not load stops the sidecar with its file, line and field.
#[test]
fn a_bad_mesh_config_stops_the_sidecar_with_its_line_and_field() {
    let mesh = Mesh::new(&[("services.yaml", SERVICES.as_str())]);
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("mesh.yaml");
    std::fs::write(&bad, "extensionProviders:\n- name: ext\n  envoyExtAuthzHttp: {service: a, prot: 1}\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mesh-sidecar"))
        .args(["--config", &mesh.config().display().to_string(), "--ca-dir", &mesh.ca().display().to_string()])
        .args(["--outbound", "127.0.0.1:0", "--workload-labels", "app=productpage,version=v1"])
        .args(["--mesh-config", &bad.display().to_string()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:3: error: MeshConfig: extensionProviders[0].envoyExtAuthzHttp.prot: unknown field `prot` (did you mean `port`?)",
            bad.display()
        )),
        "{stderr}"
    );
}
