//! Istio's Bookinfo tutorial, step by step, against a running `bookinfo up` (sidecar mode),
//! through the ingress gateway, with config applied as `meshctl apply -f` applies it.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

struct Up {
    child: Child,
    ingress: SocketAddr,
    /// Admin addresses by workload (`istio-ingressgateway` for the gateway), as printed.
    admin: std::collections::BTreeMap<String, SocketAddr>,
    /// The dashboard, as printed.
    dashboard: SocketAddr,
    /// Prometheus, when started, as printed.
    prometheus: Option<SocketAddr>,
    /// How each workload runs, as printed: `(sidecar)` or `(embedded)`.
    meshed: std::collections::BTreeMap<String, String>,
    config: PathBuf,
    _dir: PathBuf,
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        for _ in 0..100 {
            if self.child.try_wait().ok().flatten().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

fn up(mode: &str) -> Up {
    up_with(mode, &[])
}

fn up_with(mode: &str, extra: &[&str]) -> Up {
    // One directory per mesh: the tests of this file run at once.
    static MESHES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = MESHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("bookinfo-tutorial-{mode}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join(".mesh/config");
    // Port 0: `bookinfo up` picks the gateway's port and prints it.
    let mut child = Command::new(env!("CARGO_BIN_EXE_bookinfo"))
        .args(["up", "--ingress", "127.0.0.1:0", "--config-dir", &config.display().to_string()])
        .args(["--dashboard", "127.0.0.1:0", "--mode", mode])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    // Reads everything the mesh prints, for as long as it runs.
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let mut admin = std::collections::BTreeMap::new();
    let mut dashboard = None;
    let mut prometheus = None;
    let mut meshed = std::collections::BTreeMap::new();
    let mut ingress = None;
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(120)) {
        // `  reviews-v1     http://127.0.0.1:PORT/stats/prometheus`
        let words: Vec<&str> = line.split_whitespace().collect();
        if let [name, url, ..] = words.as_slice()
            && let Some(addr) = url.strip_prefix("http://").and_then(|u| u.strip_suffix("/stats/prometheus"))
        {
            let name = if *name == "gateway" { "istio-ingressgateway" } else { name };
            admin.insert(name.to_string(), addr.parse().unwrap());
            if let Some(how) = words.get(2).filter(|w| ["(sidecar)", "(embedded)"].contains(*w)) {
                meshed.insert(name.to_string(), how.to_string());
            }
        }
        if let ["productpage", url, ..] = words.as_slice() {
            ingress =
                url.strip_prefix("http://").and_then(|u| u.strip_suffix("/productpage")).and_then(|a| a.parse().ok());
        }
        if let ["prometheus", url, ..] = words.as_slice() {
            prometheus = url.strip_prefix("http://").and_then(|u| u.strip_suffix('/')).and_then(|a| a.parse().ok());
        }
        if let ["dashboard", url, ..] = words.as_slice() {
            dashboard = url.strip_prefix("http://").and_then(|u| u.strip_suffix('/')).and_then(|a| a.parse().ok());
        }
        if line.starts_with("Ctrl-C stops everything") {
            let dashboard = dashboard.expect("the dashboard's address is printed");
            let ingress: SocketAddr = ingress.expect("the gateway's address is printed");
            assert_ne!(ingress.port(), 0, "the port picked for --ingress 127.0.0.1:0 is printed");
            return Up { child, ingress, admin, dashboard, prometheus, meshed, config, _dir: dir };
        }
        seen.push(line);
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("bookinfo up did not come up:\n{}", seen.join("\n"));
}

fn tutorial(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/tutorial").join(file)
}

impl Up {
    fn apply(&self, file: &str) {
        mesh_config::store::apply(&tutorial(file), &self.config, &mesh_proxy::config::load_options("default"))
            .unwrap_or_else(|e| panic!("apply {file}: {e}"));
    }

    fn delete(&self, file: &str) {
        mesh_config::store::delete(&tutorial(file), &self.config).unwrap_or_else(|e| panic!("delete {file}: {e}"));
    }

    /// An admin page of a workload's sidecar.
    async fn admin(&self, workload: &str, path: &str) -> String {
        request(self.admin[workload], "GET", path, None, "").await.unwrap().2
    }

    /// GET a page through the ingress gateway.
    async fn get(&self, path: &str, cookie: Option<&str>) -> (u16, String) {
        request(self.ingress, "GET", path, cookie, "").await.map(|(s, _, b)| (s, b)).unwrap()
    }

    /// Log in as `user`: the session cookie.
    async fn login(&self, user: &str) -> String {
        let (status, headers, _) =
            request(self.ingress, "POST", "/login", None, &format!("username={user}&passwd=x")).await.unwrap();
        assert_eq!(status, 302);
        let cookie = headers.get("set-cookie").expect("a session cookie").to_str().unwrap();
        cookie.split(';').next().unwrap().to_string()
    }
}

async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    form: &str,
) -> Result<(u16, http::HeaderMap, String), String> {
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut req = http::Request::builder().method(method).uri(path).header("host", "bookinfo.example");
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    if !form.is_empty() {
        req = req
            .header("content-type", "application/x-www-form-urlencoded")
            .header("referer", format!("http://{addr}/productpage"));
    }
    let rsp =
        s.send_request(req.body(Full::new(Bytes::from(form.to_string()))).unwrap()).await.map_err(|e| e.to_string())?;
    let (status, headers) = (rsp.status().as_u16(), rsp.headers().clone());
    let body = rsp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, headers, String::from_utf8_lossy(&body).into_owned()))
}

/// Which reviews version drew a page: stars and their colour tell.
#[derive(Debug, PartialEq, Eq, Clone, Copy, PartialOrd, Ord)]
enum Drawn {
    NoStars,
    Black,
    Red,
    RatingsUnavailable,
    ReviewsUnavailable,
}

fn drawn(page: &str) -> Drawn {
    if page.contains("Error fetching product reviews") {
        Drawn::ReviewsUnavailable
    } else if page.contains("Ratings service is currently unavailable") {
        Drawn::RatingsUnavailable
    } else if page.matches("glyphicon-star").count() == 9 && page.contains("flex gap-x-1 text-red-500") {
        Drawn::Red
    } else if page.matches("glyphicon-star").count() == 9 && page.contains("flex gap-x-1 text-black-500") {
        Drawn::Black
    } else {
        assert_eq!(page.matches("glyphicon-star").count(), 0, "{page}");
        Drawn::NoStars
    }
}

impl Up {
    /// Wait (up to 10 s) until `n` pages in a row are drawn as `want` (a reload has landed);
    /// every page on the way must be a 200.
    async fn settle(&self, cookie: Option<&str>, want: Drawn, n: usize) {
        let mut streak = 0;
        for _ in 0..400 {
            let (status, page) = self.get("/productpage", cookie).await;
            // A config change never fails a request while it lands.
            assert_eq!(status, 200, "a request failed while waiting for {want:?}: {page}");
            if drawn(&page) == want {
                streak += 1;
                if streak == n {
                    return;
                }
            } else {
                streak = 0;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
        panic!("pages never settled on {want:?}");
    }

    async fn count(&self, n: usize, cookie: Option<&str>) -> std::collections::BTreeMap<Drawn, usize> {
        let mut counts = std::collections::BTreeMap::new();
        for _ in 0..n {
            let (status, page) = self.get("/productpage", cookie).await;
            assert_eq!(status, 200);
            *counts.entry(drawn(&page)).or_default() += 1;
        }
        counts
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bookinfo_tutorial_in_sidecar_mode() {
    tutorial_steps("sidecar").await;
}

/// Every service links the mesh in-process, no sidecar: the same results at every step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bookinfo_tutorial_in_embedded_mode() {
    tutorial_steps("embedded").await;
}

async fn tutorial_steps(mode: &str) {
    let mesh = up(mode);
    for (workload, how) in &mesh.meshed {
        assert_eq!(how, if mode == "embedded" { "(embedded)" } else { "(sidecar)" }, "{workload} in {mode} mode");
    }
    assert_eq!(mesh.meshed.len(), 6, "{:?}", mesh.meshed);

    // 1. The page, and all three reviews versions without routing rules.
    let (status, page) = mesh.get("/productpage", None).await;
    assert_eq!(status, 200);
    assert!(page.contains("<title>Simple Bookstore App</title>") && page.contains("Book Details"), "{page}");
    let counts = mesh.count(30, None).await;
    for v in [Drawn::NoStars, Drawn::Black, Drawn::Red] {
        assert!(counts.get(&v).copied().unwrap_or(0) > 0, "{v:?} never appeared in 30 pages: {counts:?}");
    }
    // Only the gateway's routes are exposed.
    assert_eq!(mesh.get("/health", None).await.0, 404);

    // 2. Everything to v1: no stars.
    mesh.apply("networking/virtual-service-all-v1.yaml");
    mesh.settle(None, Drawn::NoStars, 10).await;
    assert_eq!(mesh.count(30, None).await.get(&Drawn::NoStars), Some(&30));

    // 3. jason to v2.
    mesh.apply("networking/virtual-service-reviews-test-v2.yaml");
    let jason = mesh.login("jason").await;
    mesh.settle(Some(&jason), Drawn::Black, 5).await;
    let (_, page) = mesh.get("/productpage", Some(&jason)).await;
    assert!(page.contains("jason") && page.contains("Sign out"), "{page}");
    assert_eq!(mesh.count(10, None).await.get(&Drawn::NoStars), Some(&10));
    dashboard_shows_the_v2_edge(&mesh, &jason, mode).await;

    // 4. A 7 s delay on ratings for jason: productpage gives up after 3 s + one retry.
    mesh.apply("networking/virtual-service-ratings-test-delay.yaml");
    let mut slow = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::time::Instant::now() < deadline {
        let start = tokio::time::Instant::now();
        let (status, page) = mesh.get("/productpage", Some(&jason)).await;
        if drawn(&page) == Drawn::ReviewsUnavailable {
            slow = Some((status, start.elapsed()));
            break;
        }
    }
    let (status, took) = slow.expect("jason's page never showed the reviews error under the delay");
    assert_eq!(status, 200);
    assert!(took >= Duration::from_millis(5900) && took < Duration::from_secs(8), "took {took:?}");
    assert_eq!(mesh.count(5, None).await.get(&Drawn::NoStars), Some(&5), "others are unaffected");
    the_delay_is_visible_as_a_trace(&mesh).await;

    // 5. An abort on ratings for jason.
    mesh.apply("networking/virtual-service-ratings-test-abort.yaml");
    mesh.settle(Some(&jason), Drawn::RatingsUnavailable, 3).await;

    // 6. 50/50 between v1 and v3, then 80/20 between v1 and v2.
    mesh.delete("networking/virtual-service-ratings-test-abort.yaml");
    mesh.apply("networking/virtual-service-reviews-50-v3.yaml");
    mesh.settle(None, Drawn::Red, 1).await;
    let c = mesh.count(200, None).await;
    let red = c.get(&Drawn::Red).copied().unwrap_or(0);
    // Binomial(200, 0.5): sd 7.1; 5 sd either side.
    assert!((65..=135).contains(&red) && red + c.get(&Drawn::NoStars).unwrap_or(&0) == 200, "{c:?}");
    mesh.apply("networking/virtual-service-reviews-80-20.yaml");
    mesh.settle(None, Drawn::Black, 1).await;
    let c = mesh.count(200, None).await;
    let black = c.get(&Drawn::Black).copied().unwrap_or(0);
    // Binomial(200, 0.2): mean 40, sd 5.7.
    assert!((12..=68).contains(&black) && black + c.get(&Drawn::NoStars).unwrap_or(&0) == 200, "{c:?}");

    mesh.delete("networking/virtual-service-reviews-80-20.yaml");
    mesh.apply("networking/virtual-service-all-v1.yaml");

    // 7. STRICT mTLS: a plaintext client straight to productpage's inbound is refused; the
    // mesh still works. PERMISSIVE (no policy) accepted it.
    let clusters = mesh.admin("istio-ingressgateway", "/clusters").await;
    let inbound: SocketAddr = clusters
        .lines()
        .find(|l| {
            l.starts_with("outbound|9080||productpage.default.svc.cluster.local::")
                && l.ends_with("::health_flags::healthy")
        })
        .and_then(|l| l.split("::").nth(1))
        .expect("productpage's endpoint at the gateway")
        .parse()
        .unwrap();
    assert_eq!(
        request(inbound, "GET", "/productpage", None, "").await.map(|r| r.0),
        Ok(200),
        "PERMISSIVE takes plaintext"
    );
    mesh.apply("security/peer-authentication-strict.yaml");
    let mut refused = false;
    for _ in 0..200 {
        if request(inbound, "GET", "/productpage", None, "").await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(refused, "STRICT never refused plaintext");
    mesh.settle(None, Drawn::NoStars, 3).await;

    // 8. Authorization: nothing, then the page only, then the page's callees, then all.
    mesh.apply("security/authz-allow-nothing.yaml");
    let mut denied = (0, String::new());
    for _ in 0..200 {
        denied = mesh.get("/productpage", None).await;
        if denied.0 == 403 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(denied, (403, "RBAC: access denied".to_string()));
    mesh.apply("security/authz-productpage-viewer.yaml");
    let page = settle_on(&mesh, |p| {
        p.contains("Error fetching product details") && p.contains("Error fetching product reviews")
    })
    .await;
    assert!(page.contains("Sorry, product details are currently unavailable for this book."));
    mesh.apply("security/authz-details-viewer.yaml");
    mesh.apply("security/authz-reviews-viewer.yaml");
    settle_on(&mesh, |p| p.contains("Book Details") && drawn(p) == Drawn::NoStars).await;
    mesh.apply("networking/virtual-service-reviews-v3.yaml");
    settle_on(&mesh, |p| drawn(p) == Drawn::RatingsUnavailable).await;
    mesh.apply("security/authz-ratings-viewer.yaml");
    settle_on(&mesh, |p| drawn(p) == Drawn::Red).await;

    // 9. The metrics the service graph draws its edges from.
    let text = mesh.admin("reviews-v3", "/stats/prometheus").await;
    let edge = text.lines().find(|l| {
        l.starts_with("istio_requests_total{")
            && l.contains("reporter=\"destination\"")
            && l.contains("source_workload=\"productpage-v1\"")
            && l.contains("destination_workload=\"reviews-v3\"")
            && l.contains("connection_security_policy=\"mutual_tls\"")
    });
    assert!(edge.is_some_and(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap() >= 1.0), "{text}");
    let gateway = mesh.admin("istio-ingressgateway", "/stats/prometheus").await;
    assert!(
        gateway.lines().any(|l| l.starts_with("istio_requests_total{")
            && l.contains("reporter=\"source\"")
            && l.contains("source_workload=\"istio-ingressgateway\"")
            && l.contains("destination_workload=\"productpage-v1\"")),
        "{gateway}"
    );

    // 10. Sampling as Istio's Telemetry resource sets it, over `bookinfo up`'s 100 %: the
    // mesh-wide resource turns it to 0, and new requests leave no trace.
    let telemetry = mesh._dir.join("telemetry-no-sampling.yaml");
    std::fs::write(
        &telemetry,
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: mesh-default, namespace: istio-system}\nspec:\n  tracing:\n  - randomSamplingPercentage: 0\n",
    )
    .unwrap();
    mesh.apply(telemetry.to_str().unwrap());
    let newest = async || {
        let (_, _, body) = request(mesh.dashboard, "GET", "/api/traces?limit=1", None, "").await.unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["traces"][0]["start_us"].as_u64().unwrap_or(0)
    };
    let micros_now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as u64;
    let mut untraced = false;
    for _ in 0..20 {
        let t0 = micros_now();
        for _ in 0..5 {
            assert_eq!(mesh.get("/productpage", None).await.0, 200);
        }
        // The proxies flush their spans every second.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        if newest().await < t0 {
            untraced = true;
            break;
        }
    }
    assert!(untraced, "requests were still traced with randomSamplingPercentage: 0");

    // 11. Kiali's Istio config view: the applied resources with analyze's findings beside
    // each (a Telemetry with an override the mesh does not apply yet: a warning).
    std::fs::write(
        mesh.config.join("telemetry-logs.yaml"),
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: logs, namespace: default}\nspec:\n  metrics:\n  - overrides: [{match: {metric: REQUEST_COUNT}, disabled: true}]\n",
    )
    .unwrap();
    let (_, _, body) = request(mesh.dashboard, "GET", "/api/config", None, "").await.unwrap();
    let config: serde_json::Value = serde_json::from_str(&body).unwrap();
    let find = |kind: &str, ns: &str, name: &str| {
        config["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["kind"] == kind && r["namespace"] == ns && r["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {ns}/{name} in {config:#}"))
            .clone()
    };
    assert_eq!(find("Telemetry", "istio-system", "mesh-default")["status"], "valid");
    assert_eq!(find("AuthorizationPolicy", "default", "allow-nothing")["status"], "valid");
    let logs = find("Telemetry", "default", "logs");
    assert_eq!(logs["status"], "warning", "{logs}");
    assert!(logs["findings"][0]["message"].as_str().unwrap().contains("not applied"), "{logs}");
    assert_eq!(logs["findings"][0]["line"], 5, "the line of `metrics`: {logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_api_tutorial_in_sidecar_mode() {
    gateway_api_steps("sidecar").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_api_tutorial_in_embedded_mode() {
    gateway_api_steps("embedded").await;
}

/// Istio's request-routing task with the Gateway API: `bookinfo up --gateway-api` serves the
/// Gateway and HTTPRoute of `gateway-api/bookinfo-gateway.yaml`, and the mesh HTTPRoutes of
/// `gateway-api/route-*.yaml` (parent: the Service) move reviews between versions.
async fn gateway_api_steps(mode: &str) {
    let mesh = up_with(mode, &["--gateway-api"]);
    let gateways = std::fs::read_to_string(mesh.config.join("bookinfo-gateway.yaml")).unwrap();
    assert!(
        gateways.contains("gateway.networking.k8s.io/v1") && !gateways.contains("networking.istio.io"),
        "{gateways}"
    );

    // 1. The HTTPRoute `bookinfo` at the gateway: its five paths, nothing else.
    let (status, page) = mesh.get("/productpage", None).await;
    assert!(status == 200 && page.contains("Book Details"), "{status} {page}");
    assert_eq!(mesh.get("/api/v1/products/0/reviews", None).await.0, 200);
    assert_eq!(mesh.get("/productpagex", None).await.0, 404, "Exact /productpage");
    assert_eq!(mesh.get("/health", None).await.0, 404);
    let counts = mesh.count(30, None).await;
    for v in [Drawn::NoStars, Drawn::Black, Drawn::Red] {
        assert!(counts.get(&v).copied().unwrap_or(0) > 0, "{v:?} never appeared in 30 pages: {counts:?}");
    }

    // 2. route-all-v1: every service to its v1 Service.
    mesh.apply("gateway-api/route-all-v1.yaml");
    mesh.settle(None, Drawn::NoStars, 10).await;
    assert_eq!(mesh.count(30, None).await.get(&Drawn::NoStars), Some(&30));

    // 3. 90/10 between v1 and v2.
    mesh.apply("gateway-api/route-reviews-90-10.yaml");
    mesh.settle(None, Drawn::Black, 1).await;
    let counts = mesh.count(200, None).await;
    let (v1, v2) = (counts.get(&Drawn::NoStars).copied().unwrap_or(0), counts.get(&Drawn::Black).copied().unwrap_or(0));
    // Binomial(200, 0.1): mean 20; outside 2..=45 is a chance below 1e-7.
    assert!(v1 + v2 == 200 && (2..=45).contains(&v2), "90/10: {counts:?}");

    // 4. 50/50 between v1 and v3.
    mesh.apply("gateway-api/route-reviews-50-v3.yaml");
    mesh.settle(None, Drawn::Red, 1).await;
    mesh.settle(None, Drawn::NoStars, 1).await;
    let counts = mesh.count(100, None).await;
    let (v1, v3) = (counts.get(&Drawn::NoStars).copied().unwrap_or(0), counts.get(&Drawn::Red).copied().unwrap_or(0));
    assert!(v1 + v3 == 100 && (25..=75).contains(&v3), "50/50: {counts:?}");

    // 5. All to v3, then back to v1.
    mesh.apply("gateway-api/route-reviews-v3.yaml");
    mesh.settle(None, Drawn::Red, 10).await;
    assert_eq!(mesh.count(20, None).await.get(&Drawn::Red), Some(&20));
    mesh.apply("gateway-api/route-reviews-v1.yaml");
    mesh.settle(None, Drawn::NoStars, 10).await;

    // The gateway is the workload Istio's controller runs for a Gateway API Gateway.
    let mut graph = String::new();
    for _ in 0..40 {
        graph = request(mesh.dashboard, "GET", "/api/graph", None, "").await.unwrap().2;
        if graph.contains("bookinfo-gateway-istio") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(graph.contains("bookinfo-gateway-istio") && !graph.contains("istio-ingressgateway"), "{graph}");
}

/// Wait (up to 10 s) for a 200 page that satisfies `ok`; the page.
async fn settle_on(mesh: &Up, ok: impl Fn(&str) -> bool) -> String {
    let mut last = (0, String::new());
    for _ in 0..400 {
        last = mesh.get("/productpage", None).await;
        if last.0 == 200 && ok(&last.1) {
            return last.1;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the page never became what was expected; last: {} {}", last.0, last.1);
}

/// The dashboard in headless Chromium, with jason's traffic flowing to reviews v2: the
/// productpage -> reviews-v2 edge is drawn, with its rate, and marked mTLS. The screenshot
/// is kept in target/test-artifacts/dashboard-MODE.png.
async fn dashboard_shows_the_v2_edge(mesh: &Up, jason: &str, mode: &str) {
    let chromium = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|c| Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success()))
        .expect("chromium is needed for the dashboard test (apt-get install chromium; .ci/run installs it)");
    let (ingress, cookie) = (mesh.ingress, jason.to_string());
    let traffic = tokio::spawn(async move {
        let end = tokio::time::Instant::now() + Duration::from_secs(12);
        while tokio::time::Instant::now() < end {
            let _ = request(ingress, "GET", "/productpage", Some(&cookie), "").await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    // Two scrapes with traffic between them.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let url = format!("http://{}/", mesh.dashboard);
    let run = |url: &str, extra: &[&str]| {
        let mut c = Command::new(chromium);
        c.args(["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=4000", "--window-size=1280,900"]);
        c.args(extra).arg(url);
        c.output().expect("chromium runs")
    };
    // The page's DOM once it is whole (a dump can come before the document is parsed to its
    // end when the machine is busy: then it is taken again).
    let dump = |url: &str| {
        let mut dom = String::new();
        for _ in 0..3 {
            dom = String::from_utf8_lossy(&run(url, &["--dump-dom"]).stdout).into_owned();
            if dom.trim_end().ends_with("</html>") {
                break;
            }
        }
        dom
    };
    let dom = dump(&url);
    let row = dom
        .split("<tr")
        .skip(1)
        .find(|r| r.contains("data-edge=\"productpage-v1-&gt;reviews-v2\""))
        .unwrap_or_else(|| panic!("no productpage -> reviews-v2 row in the page:\n{dom}"));
    let cells: Vec<&str> = row.split("<td>").skip(1).map(|c| c.split("</td>").next().unwrap()).collect();
    assert_eq!(&cells[..2], ["productpage-v1", "reviews-v2"], "{row}");
    let rps: f64 = cells[2].parse().unwrap();
    assert!(rps > 0.0, "the edge shows no traffic: {row}");
    assert_eq!(cells[5], "yes", "mTLS: {row}");
    assert!(dom.contains("data-edge=\"productpage-v1-&gt;reviews-v2\"><line"), "the edge is drawn in the graph");
    // Step 1's 404 at the gateway (no route): an `unknown` node, explained.
    assert!(dom.contains("unknown: no route: the Host matched no service or route"), "{dom}");
    // Legible: no drawn label box overlaps another (measured by the page from the DOM).
    assert!(dom.contains("data-overlaps=\"0\""), "labels overlap:\n{dom}");
    // Kiali's versioned-app graph: reviews' versions inside the reviews box.
    assert!(dom.contains("data-app=\"reviews\""), "no reviews app group:\n{dom}");
    // An edge's details: latency quantiles, codes by class, flags, principals.
    let details = dump(&format!("{url}#/edge/productpage-v1-%3Ereviews-v2"));
    let panel = details.split("id=\"edge-details\"").nth(1).unwrap_or_else(|| panic!("no details panel:\n{details}"));
    for field in ["latency p50 / p95 / p99", "response codes (req/s)", "response flags (req/s)", "principals"] {
        assert!(panel.contains(&format!("data-field=\"{field}\"")), "{field} missing:\n{panel}");
    }
    assert!(panel.contains("2xx: "), "codes by class:\n{panel}");
    assert!(
        panel.contains("spiffe://cluster.local/ns/default/sa/bookinfo-productpage → spiffe://cluster.local/ns/default/sa/bookinfo-reviews"),
        "both principals:\n{panel}"
    );
    // A time range, as Kiali's: rates over the last minute, in the API and on the page.
    let (status, _, body) = request(mesh.dashboard, "GET", "/api/graph?range=1m", None, "").await.unwrap();
    assert_eq!(status, 200, "{body}");
    let g: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(g["range_s"], 60);
    let v2 =
        g["edges"].as_array().unwrap().iter().find(|e| e["source"] == "productpage-v1" && e["target"] == "reviews-v2");
    assert!(v2.is_some_and(|e| e["rps"].as_f64().unwrap() > 0.0), "{g}");
    let (status, _, _) = request(mesh.dashboard, "GET", "/api/graph?range=soon", None, "").await.unwrap();
    assert_eq!(status, 400);
    let ranged = dump(&format!("{url}#/?range=5m"));
    assert!(ranged.contains("rates over the last 5m"), "{ranged}");
    // The Istio config view: the applied resources with their validation.
    let cfg = dump(&format!("{url}#/config"));
    let row = cfg
        .split("id=\"config-table\"")
        .nth(1)
        .unwrap_or_else(|| panic!("no config table:\n{cfg}"))
        .split("<tr")
        .find(|r| r.contains("data-resource=\"VirtualService default/reviews\""))
        .unwrap_or_else(|| panic!("no VirtualService reviews in the config view:\n{cfg}"));
    assert!(row.contains("✓ valid"), "{row}");
    run(
        &format!("{url}#/config"),
        &[&format!(
            "--screenshot={}",
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(format!("../../target/test-artifacts/dashboard-{mode}-config.png"))
                .display()
        )],
    );
    // The security view: mTLS per edge with both principals.
    let sec = dump(&format!("{url}#/security"));
    let table = sec.split("id=\"security-table\"").nth(1).unwrap_or_else(|| panic!("no security table:\n{sec}"));
    let row = table
        .split("<tr")
        .find(|r| r.contains("data-edge=\"reviews-v2-&gt;ratings-v1\""))
        .unwrap_or_else(|| panic!("no reviews-v2 -> ratings-v1 row in the security view:\n{sec}"));
    assert!(row.contains("mutual TLS") && row.contains("sa/bookinfo-ratings"), "{row}");
    run(
        &format!("{url}#/security"),
        &[&format!(
            "--screenshot={}",
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(format!("../../target/test-artifacts/dashboard-{mode}-security.png"))
                .display()
        )],
    );
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join(format!("dashboard-{mode}.png"));
    let out = run(&url, &[&format!("--screenshot={}", shot.display())]);
    assert!(shot.exists(), "no screenshot: {}", String::from_utf8_lossy(&out.stderr));
    // A workload's own view: its requests, errors and latency over time.
    let view = dump(&format!("{url}#/workload/reviews-v2"));
    assert!(view.contains("reviews-v2: requests in, over time"), "{view}");
    for series in ["rps", "error_rate", "p99_ms"] {
        assert!(view.contains(&format!("data-series=\"{series}\"")), "no {series} chart:\n{view}");
    }
    let shot = artifacts.join(format!("dashboard-{mode}-reviews-v2.png"));
    run(&format!("{url}#/workload/reviews-v2"), &[&format!("--screenshot={}", shot.display())]);
    assert!(view.contains("href=\"#/traces?workload=reviews-v2\""), "the workload links to its traces:\n{view}");

    // Traces: the edge's traces listed, one drawn as a waterfall (the traffic stopped and
    // the proxies' last batches flushed, so the newest trace is whole).
    traffic.abort();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let list_url = format!("{url}#/traces?workload=productpage-v1&to=reviews-v2");
    assert!(
        dom.contains("href=\"#/traces?workload=productpage-v1&amp;to=reviews-v2\""),
        "the edge links to its traces"
    );
    let list = dump(&list_url);
    let id = list
        .split("data-trace=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_else(|| panic!("no trace listed for the edge:\n{list}"))
        .to_string();
    assert!(list.contains("calls from productpage-v1 to reviews-v2"), "the filter is said:\n{list}");
    run(&list_url, &[&format!("--screenshot={}", artifacts.join(format!("dashboard-{mode}-traces.png")).display())]);
    let trace_url = format!("{url}#/traces/{id}");
    let waterfall = dump(&trace_url);
    let rows = waterfall.matches("data-span=").count();
    // gateway; productpage server, its calls to details and reviews; their servers;
    // reviews' call to ratings and ratings' server.
    assert_eq!(rows, 8, "a span per proxy pass:\n{waterfall}");
    for text in [
        "istio-ingressgateway.istio-system · client",
        "reviews.default · server",
        "ratings.default · server",
        "→ reviews.default.svc.cluster.local",
    ] {
        assert!(waterfall.contains(text), "{text} missing in the waterfall:\n{waterfall}");
    }
    run(&trace_url, &[&format!("--screenshot={}", artifacts.join(format!("dashboard-{mode}-trace.png")).display())]);
}

/// The dashboard's collector, as the seed's Jaeger shows the delay step: one trace with
/// productpage's two calls to reviews v2, each given up after 3 s (its timeout, then its
/// retry: the proxy records `DC`, the caller went away), and under each reviews' call to
/// ratings, held 7 s by the injected delay (`DI`).
async fn the_delay_is_visible_as_a_trace(mesh: &Up) {
    let dashboard = mesh.dashboard;
    let get = |path: String| async move {
        let (status, _, body) = request(dashboard, "GET", &path, None, "").await.unwrap();
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    };
    let mut last = serde_json::Value::Null;
    // The ratings calls end 7 s after they began, and are flushed within a second.
    for _ in 0..60 {
        let found = get("/api/traces?workload=productpage-v1&to=reviews-v2&minDuration=5s&limit=5".into()).await;
        for t in found["traces"].as_array().unwrap() {
            let trace = get(format!("/api/traces/{}", t["trace_id"].as_str().unwrap())).await;
            let spans = trace["spans"].as_array().unwrap();
            let ms = |s: &serde_json::Value| s["duration_ms"].as_f64().unwrap();
            let gave_up: Vec<&serde_json::Value> = spans
                .iter()
                .filter(|s| {
                    s["service"] == "productpage.default"
                        && s["kind"] == "client"
                        && s["name"].as_str().unwrap().starts_with("reviews:9080/")
                })
                .collect();
            let delayed: Vec<&serde_json::Value> = spans
                .iter()
                .filter(|s| {
                    s["service"] == "reviews.default"
                        && s["kind"] == "client"
                        && s["response_flags"].as_str().unwrap_or("").contains("DI")
                })
                .collect();
            if gave_up.len() == 2 && delayed.len() == 2 {
                for s in &gave_up {
                    assert!((2900.0..4000.0).contains(&ms(s)), "productpage's timeout is 3 s: {s}");
                    assert_eq!(
                        (s["status_code"].as_str(), s["response_flags"].as_str()),
                        (Some("0"), Some("DC")),
                        "{s}"
                    );
                }
                for s in &delayed {
                    assert!(ms(s) >= 6900.0, "the delay is 7 s: {s}");
                    assert!(s["depth"].as_u64() > gave_up[0]["depth"].as_u64(), "under productpage's call: {trace}");
                }
                return;
            }
            last = trace;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("no trace of the delay step; last seen:\n{last:#}");
}

/// The seed's Prometheus addon: `bookinfo up --prometheus` scrapes every proxy; the graph
/// the dashboard reads from it equals the one read from the proxies directly; and the
/// queries of Istio's Grafana dashboards (mesh, service, workload) return Bookinfo's series.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_serves_the_graph_and_istios_grafana_queries_in_sidecar_mode() {
    a_real_prometheus("sidecar").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_serves_the_graph_and_istios_grafana_queries_in_embedded_mode() {
    a_real_prometheus("embedded").await;
}

async fn a_real_prometheus(mode: &str) {
    use bookinfo::dashboard::{Dashboard, INTERVAL, prometheus_query};
    // Port 0: `bookinfo up` picks Prometheus' port and prints it.
    let mesh = up_with(mode, &["--prometheus", "--prometheus-listen", "127.0.0.1:0"]);
    let prom = mesh.prometheus.expect("Prometheus' address is printed");
    // Traffic for a while: every version of reviews, so every edge exists.
    for _ in 0..60 {
        assert_eq!(mesh.get("/productpage", None).await.0, 200);
    }
    // The graph read from the proxies directly, now that the traffic has stopped.
    let direct = Dashboard::new(mesh.admin.iter().map(|(w, a)| (w.clone(), *a)).collect());
    direct.scrape(INTERVAL).await;
    let edges = |g: &serde_json::Value| -> std::collections::BTreeSet<(String, String, bool, u64)> {
        g["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["source"].as_str().unwrap().to_string(),
                    e["target"].as_str().unwrap().to_string(),
                    e["mtls"].as_bool().unwrap(),
                    e["total"].as_f64().unwrap() as u64,
                )
            })
            .collect()
    };
    let want = edges(&direct.graph());
    assert_eq!(want.len(), 7, "gateway, details, three reviews, two ratings: {want:?}");
    // The dashboard of `bookinfo up` reads Prometheus, which scrapes every 5 s.
    let mut got = Default::default();
    for _ in 0..60 {
        let (_, _, body) = request(mesh.dashboard, "GET", "/api/graph", None, "").await.unwrap();
        let g: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(g["source"]["kind"], "prometheus", "{g}");
        got = edges(&g);
        if got == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(got, want, "the graph from Prometheus equals the one from the proxies");
    // A time range is the queries' rate window.
    let (status, _, body) = request(mesh.dashboard, "GET", "/api/graph?range=5m", None, "").await.unwrap();
    assert_eq!(status, 200, "{body}");
    let g: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((g["range_s"].as_u64(), g["source"]["kind"].as_str()), (Some(300), Some("prometheus")));
    assert_eq!(edges(&g), want, "the same edges over five minutes");

    // Istio's Grafana dashboards' queries (istio-mesh, istio-service, istio-workload), over
    // live traffic: `rate()` needs two scrapes of a series in its window.
    let ingress = mesh.ingress;
    let traffic = tokio::spawn(async move {
        loop {
            let _ = request(ingress, "GET", "/productpage", None, "").await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let workloads: std::collections::BTreeSet<String> =
        ["details-v1", "productpage-v1", "ratings-v1", "reviews-v1", "reviews-v2", "reviews-v3"]
            .map(String::from)
            .into();
    // The series of `query` by `label`, once they are `want` (within 30 s).
    let by = |label: &'static str, query: &'static str| async move {
        let mut got = std::collections::BTreeSet::new();
        for _ in 0..60 {
            let series = prometheus_query(prom, query).await.unwrap();
            got = series.into_iter().filter_map(|(l, _)| l.get(label).cloned()).collect();
            if got.len() >= 6 || (label == "connection_security_policy" && !got.is_empty()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        got
    };
    // Success rate (mesh and workload dashboards).
    let success = r#"sum by (destination_workload) (rate(istio_requests_total{reporter="destination", response_code!~"5.*"}[1m])) / sum by (destination_workload) (rate(istio_requests_total{reporter="destination"}[1m]))"#;
    assert_eq!(by("destination_workload", success).await, workloads, "success rate per workload");
    let p99 = r#"histogram_quantile(0.99, sum by (le, destination_workload) (rate(istio_request_duration_milliseconds_bucket{reporter="destination"}[1m])))"#;
    assert_eq!(by("destination_workload", p99).await, workloads, "p99 per workload");
    let request_bytes = r#"sum by (destination_workload) (rate(istio_request_bytes_sum{reporter="destination"}[1m]))"#;
    assert_eq!(by("destination_workload", request_bytes).await, workloads, "request bytes");
    let response_bytes =
        r#"sum by (destination_workload) (rate(istio_response_bytes_sum{reporter="destination"}[1m]))"#;
    assert_eq!(by("destination_workload", response_bytes).await, workloads, "response bytes");
    // The mTLS split (service dashboard): every request inside the mesh is mutual TLS.
    let split = r#"sum by (connection_security_policy) (istio_requests_total{reporter="destination"})"#;
    assert_eq!(by("connection_security_policy", split).await, ["mutual_tls".to_string()].into());
    // Incoming requests by source workload (workload dashboard, reviews-v2's inbound).
    let callers =
        r#"sum by (source_workload) (istio_requests_total{reporter="destination", destination_workload="reviews-v2"})"#;
    assert_eq!(by("source_workload", callers).await, ["productpage-v1".to_string()].into());
    // Global request volume (mesh dashboard): one series.
    let volume = prometheus_query(prom, r#"round(sum(irate(istio_requests_total{reporter="source"}[1m])), 0.001)"#)
        .await
        .unwrap();
    assert_eq!(volume.len(), 1, "{volume:?}");
    traffic.abort();
    // The scrape config written for users who run their own.
    let yml = std::fs::read_to_string(mesh.config.parent().unwrap().join("prometheus/prometheus.yml")).unwrap();
    assert_eq!(yml.matches("- targets: ['127.0.0.1:").count(), 7, "{yml}");
}

/// SIGTERM to `bookinfo up` alone stops every process it started (and the ingress port
/// closes), and it exits cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_whole_mesh() {
    let mut mesh = up("sidecar");
    assert_eq!(mesh.get("/productpage", None).await.0, 200);
    let admins: Vec<SocketAddr> = mesh.admin.values().copied().collect();
    let _ = Command::new("kill").args(["-TERM", &mesh.child.id().to_string()]).status();
    let mut status = None;
    for _ in 0..150 {
        if let Some(s) = mesh.child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(status.is_some_and(|s| s.success()), "bookinfo up did not exit cleanly: {status:?}");
    assert!(tokio::net::TcpStream::connect(mesh.ingress).await.is_err(), "the gateway still listens");
    for a in admins {
        assert!(tokio::net::TcpStream::connect(a).await.is_err(), "a proxy still listens on {a}");
    }
}
