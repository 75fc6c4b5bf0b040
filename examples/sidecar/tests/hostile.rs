//! Clients that send nothing: a flood of zero-byte connections against a sidecar started
//! under a low descriptor limit (600, as `ulimit -n 600`), the limit the probe used.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use support::*;
use tokio::net::TcpStream;

static CONFIG: LazyLock<String> = LazyLock::new(|| {
    Manifest::new()
        .service("reviews", 9080)
        .deployment("reviews", "v1", None)
        .deployment("productpage", "v1", None)
        .to_string()
});

const FLOOD: usize = 700;

/// A keep-alive HTTP/1.1 client on one connection.
struct Client(hyper::client::conn::http1::SendRequest<Empty<Bytes>>);

impl Client {
    async fn connect(addr: std::net::SocketAddr) -> Self {
        Self::try_connect(addr).await.unwrap()
    }

    async fn try_connect(addr: std::net::SocketAddr) -> Result<Self, String> {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        Ok(Self(send))
    }

    async fn get(&mut self) -> Result<u16, String> {
        self.0.ready().await.map_err(|e| e.to_string())?;
        let req = Request::get("/reviews/0").header("host", "reviews:9080").body(Empty::new()).unwrap();
        let rsp = self.0.send_request(req).await.map_err(|e| e.to_string())?;
        let status = rsp.status().as_u16();
        rsp.into_body().collect().await.map_err(|e| e.to_string())?;
        Ok(status)
    }
}

/// A new client's request, failing rather than waiting past `limit`.
async fn fresh(addr: std::net::SocketAddr, limit: Duration) -> Result<u16, String> {
    tokio::time::timeout(limit, async { Client::try_connect(addr).await?.get().await })
        .await
        .map_err(|_| "timed out".to_string())?
}

/// `n` keep-alive clients in a loop until `stop`, each reconnecting after an error; only
/// the requests sent while `counting` is set are counted.
struct Load {
    loops: Vec<tokio::task::JoinHandle<(usize, usize, Vec<String>)>>,
}

impl Load {
    fn start(
        addr: std::net::SocketAddr,
        n: usize,
        stop: tokio::time::Instant,
        counting: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> Self {
        let loops = (0..n)
            .map(|_| {
                let counting = counting.clone();
                tokio::spawn(async move {
                    let mut client = Client::connect(addr).await;
                    let (mut sent, mut ok, mut failed) = (0, 0, Vec::new());
                    while tokio::time::Instant::now() < stop {
                        let counted = counting.load(std::sync::atomic::Ordering::Relaxed);
                        let r = client.get().await;
                        if r.is_err() {
                            client = Client::connect(addr).await;
                        }
                        if counted {
                            sent += 1;
                            match r {
                                Ok(200) => ok += 1,
                                other => failed.push(format!("{other:?}")),
                            }
                        }
                    }
                    (sent, ok, failed)
                })
            })
            .collect();
        Self { loops }
    }

    /// Requests counted, how many got 200, and the others' outcomes.
    async fn finish(self) -> (usize, usize, Vec<String>) {
        let (mut sent, mut ok, mut failed) = (0, 0, Vec::new());
        for l in self.loops {
            let (s, o, f) = l.await.unwrap();
            sent += s;
            ok += o;
            failed.extend(f);
        }
        (sent, ok, failed)
    }
}

/// `FLOOD` connections that never send a byte.
async fn flood(addr: std::net::SocketAddr) -> Vec<TcpStream> {
    let mut held = Vec::with_capacity(FLOOD);
    for _ in 0..FLOOD {
        match tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => held.push(tcp),
            // The backlog is full: the flood has made its point.
            _ => break,
        }
    }
    held
}

fn counter(text: &str, name: &str, listener: &str) -> f64 {
    let addr = listener.replace(':', "_");
    total(text, name, &[("envoy_listener_address", &addr)])
}

fn accept_warnings(s: &Sidecar) -> usize {
    s.log.lock().unwrap().iter().filter(|l| l.contains("accept failed")).count()
}

/// The default cap (a quarter of 600 descriptors): past it new connections are refused at
/// once, the established client keeps being served, and as soon as the silent connections
/// time out new clients are served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_byte_flood_under_a_low_fd_limit_starves_no_one() {
    let mesh = Mesh::new(&[("services.yaml", CONFIG.as_str())]);
    let app = App::named("reviews-v1").await;
    let v1 = Sidecar::start(&mesh, Spec::server("app=reviews,version=v1", app.addr));
    let mut spec = Spec::client("app=productpage,version=v1")
        .endpoint("reviews-v1", v1.inbound())
        .arg("--first-byte-timeout")
        .arg("1s");
    spec.fd_limit = Some(600);
    let pp = Sidecar::start(&mesh, spec);
    let out = pp.outbound();
    let mut client = Client::connect(out).await;
    assert_eq!(client.get().await, Ok(200));

    let held = flood(out).await;
    assert!(held.len() > 300, "the flood opened {} connections", held.len());
    // Served throughout, on its own connection, while the flood holds.
    for _ in 0..20 {
        assert_eq!(client.get().await, Ok(200));
    }
    // Refused at once past the cap, not left waiting: fail fast or get served.
    let during = fresh(out, Duration::from_secs(5)).await;
    assert!(during != Err("timed out".into()), "a new client must not hang: {during:?}");
    // The silent ones time out after 1 s; new clients get in again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    eventually("a new client to be served during the flood", async || {
        fresh(out, Duration::from_secs(2)).await == Ok(200)
    })
    .await;
    assert_eq!(client.get().await, Ok(200));

    let stats = pp.admin_get("/stats/prometheus").await.body;
    let overflow = counter(&stats, "envoy_listener_downstream_cx_overflow_total", &out.to_string());
    let timeouts = counter(&stats, "envoy_listener_downstream_pre_cx_timeout_total", &out.to_string());
    assert!(overflow >= 100.0, "overflow {overflow}\n{stats}");
    assert!(timeouts >= 100.0, "pre_cx_timeout {timeouts}\n{stats}");
    assert_eq!(accept_warnings(&pp), 0, "the cap keeps accept from failing");
    let refused = pp.log.lock().unwrap().iter().filter(|l| l.contains("connection cap reached")).count();
    assert!((1..=2).contains(&refused), "overflow is logged once per interval, got {refused} lines");
    drop(held);
}

/// A cap above the descriptor limit: `accept` fails (EMFILE), the listener backs off and says
/// so once per interval with a counter, and serves again once the silent connections close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_accept_fails_the_listener_backs_off_and_recovers() {
    let mesh = Mesh::new(&[("services.yaml", CONFIG.as_str())]);
    let app = App::named("reviews-v1").await;
    let v1 = Sidecar::start(&mesh, Spec::server("app=reviews,version=v1", app.addr));
    let mut spec = Spec::client("app=productpage,version=v1")
        .endpoint("reviews-v1", v1.inbound())
        .arg("--first-byte-timeout")
        .arg("1s")
        .arg("--max-connections")
        .arg("100000");
    spec.fd_limit = Some(600);
    let pp = Sidecar::start(&mesh, spec);
    let out = pp.outbound();
    let held = flood(out).await;
    assert!(held.len() > 300, "the flood opened {} connections", held.len());
    tokio::time::sleep(Duration::from_secs(3)).await;
    eventually("a new client to be served after the silent connections closed", async || {
        fresh(out, Duration::from_secs(3)).await == Ok(200)
    })
    .await;
    let stats = pp.admin_get("/stats/prometheus").await.body;
    let errors = counter(&stats, "mesh_listener_accept_errors_total", &out.to_string());
    assert!(errors >= 1.0, "accept errors {errors}\n{stats}");
    let warnings = accept_warnings(&pp);
    assert!((1..=2).contains(&warnings), "accept failures are logged once per interval, got {warnings} lines");
    drop(held);
}

/// Three replicas of reviews behind their sidecars, a client sidecar, `LOOPS` keep-alive
/// clients in a loop; one replica's sidecar is killed (SIGKILL) after a second. Returns the
/// requests sent after the kill and how many of them got 200, with the failures' statuses.
async fn kill_one_of_three(files: &[(&str, &str)]) -> (usize, usize, Vec<String>) {
    let (sent, ok, failed, noticed) = kill_one_of_three_measured(files).await;
    // The dead replica was tried (a retry went elsewhere) or found dead by outlier
    // detection; else the test tested nothing.
    assert!(noticed >= 1.0, "the kill must have cost retries or an ejection");
    (sent, ok, failed)
}

async fn kill_one_of_three_measured(files: &[(&str, &str)]) -> (usize, usize, Vec<String>, f64) {
    const LOOPS: usize = 8;
    let mesh = Mesh::new(files);
    let mut apps = Vec::new();
    let mut replicas = Vec::new();
    for _ in 0..3 {
        let app = App::named("reviews-v1").await;
        replicas.push(Sidecar::start(&mesh, Spec::server("app=reviews,version=v1", app.addr)));
        apps.push(app);
    }
    let mut spec = Spec::client("app=productpage,version=v1");
    for r in &replicas {
        spec = spec.endpoint("reviews-v1", r.inbound());
    }
    let pp = Sidecar::start(&mesh, spec);
    let out = pp.outbound();
    let counting = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = Load::start(out, LOOPS, tokio::time::Instant::now() + Duration::from_secs(3), counting.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;
    replicas[0].kill();
    counting.store(true, std::sync::atomic::Ordering::Relaxed);
    let (sent, ok, failed) = load.finish().await;
    let stats = pp.admin_get("/stats/prometheus").await.body;
    let plain = |name: &str| -> f64 {
        stats.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok()).unwrap_or(0.0)
    };
    eprintln!("retries {}, ejections {}", plain("mesh_upstream_retries_total"), plain("mesh_outlier_ejections_total"));
    (sent, ok, failed, plain("mesh_upstream_retries_total") + plain("mesh_outlier_ejections_total"))
}

/// Istio's default retry policy and nothing else: connect failures to the dead replica are
/// retried on another host, unlimited by a budget (Istio sets none unless asked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_replica_costs_under_a_thousandth_of_requests() {
    let (sent, ok, failed) = kill_one_of_three(&[("services.yaml", CONFIG.as_str())]).await;
    eprintln!("after the kill: {ok} of {sent} succeeded; failures: {failed:?}");
    assert!(sent > 500, "only {sent} requests after the kill");
    assert!(ok * 1000 >= sent * 999, "{ok} of {sent} succeeded; failures: {failed:?}");
}

/// With outlier detection the dead replica is also ejected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_replica_with_outlier_detection_costs_under_a_ten_thousandth() {
    let (sent, ok, failed) = kill_one_of_three(&[("services.yaml", CONFIG.as_str()), ("outlier.yaml", OUTLIER)]).await;
    eprintln!("after the kill: {ok} of {sent} succeeded; failures: {failed:?}");
    assert!(sent > 500, "only {sent} requests after the kill");
    assert!(ok * 10_000 >= sent * 9_999, "{ok} of {sent} succeeded; failures: {failed:?}");
}

fn rotations(s: &Sidecar) -> usize {
    s.log.lock().unwrap().iter().filter(|l| l.contains("workload certificate rotated")).count()
}

/// Workload certificates rotated under load (`--cert-ttl 3s`: re-issued every 2 s on both
/// sides): no request fails, and connections opened after the rotations, which handshake
/// with the new certificates on both sides, are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotated_under_load_fail_no_request() {
    let mesh = Mesh::new(&[("services.yaml", CONFIG.as_str())]);
    let app = App::named("reviews-v1").await;
    let v1 = Sidecar::start(&mesh, Spec::server("app=reviews,version=v1", app.addr).arg("--cert-ttl").arg("3s"));
    let pp = Sidecar::start(
        &mesh,
        Spec::client("app=productpage,version=v1").endpoint("reviews-v1", v1.inbound()).arg("--cert-ttl").arg("3s"),
    );
    let out = pp.outbound();
    let counting = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let load = Load::start(out, 4, tokio::time::Instant::now() + Duration::from_millis(4500), counting);
    let (sent, _, failed) = load.finish().await;
    assert!(sent > 100 && failed.is_empty(), "{} of {sent} failed: {failed:?}", failed.len());
    assert!(rotations(&v1) >= 2 && rotations(&pp) >= 2, "rotations: {} and {}", rotations(&v1), rotations(&pp));
    // A burst wider than the pool: new upstream connections, handshaken with the rotated
    // certificates.
    let burst: Vec<_> = (0..32).map(|_| tokio::spawn(fresh(out, Duration::from_secs(5)))).collect();
    for b in burst {
        assert_eq!(b.await.unwrap(), Ok(200));
    }
}
