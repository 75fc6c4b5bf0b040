//! `bookinfo up`: the whole Bookinfo mesh on one machine. Every Deployment of the manifest
//! runs as an app process with its own `mesh-sidecar` process (identity from its
//! ServiceAccount, certificates from a local CA), and the ingress gateway serves
//! `bookinfo-gateway`. The config directory is watched by every proxy.

use std::{
    collections::BTreeMap,
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use mesh_config::{
    api::{Kind, Resource},
    load::load_paths,
};
use tokio::process::{Child, Command};

/// The mesh config `bookinfo up` starts from when the config directory is empty.
pub const SEED: [(&str, &str); 3] = [
    ("bookinfo.yaml", include_str!("../config/mesh/bookinfo.yaml")),
    ("bookinfo-gateway.yaml", include_str!("../config/mesh/bookinfo-gateway.yaml")),
    ("destination-rules.yaml", include_str!("../config/mesh/destination-rules.yaml")),
];

/// The Gateway API's ingress instead of the Istio Gateway (`--gateway-api`): Istio's sample
/// Gateway and HTTPRoute, and the versioned Services (`reviews-v1`, ...) that its
/// `gateway-api/route-*.yaml` samples route to.
pub const SEED_GATEWAY_API: [(&str, &str); 2] = [
    ("bookinfo-gateway.yaml", include_str!("../config/gateway-api/bookinfo-gateway.yaml")),
    ("bookinfo-versions.yaml", include_str!("../config/gateway-api/bookinfo-versions.yaml")),
];

/// The ingress gateway of each flavour: its Gateway's listener port, and the workload
/// Istio runs for it (name, namespace).
pub fn ingress_workload(gateway_api: bool) -> (u16, &'static str, &'static str) {
    if gateway_api { (80, "bookinfo-gateway-istio", "default") } else { (8080, "istio-ingressgateway", "istio-system") }
}

/// One workload to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    /// Deployment name (`reviews-v2`).
    pub name: String,
    /// `app` label (`reviews`): which service the app process is.
    pub app: String,
    /// `version` label.
    pub version: String,
    /// Where the app listens.
    pub app_addr: SocketAddr,
    /// The sidecar's inbound, outbound and admin addresses.
    pub inbound: SocketAddr,
    /// Outbound.
    pub outbound: SocketAddr,
    /// Admin.
    pub admin: SocketAddr,
}

/// How the services are meshed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Every workload beside its own mesh-sidecar.
    Sidecar,
    /// Every service links the mesh in-process (no sidecar); only the ingress gateway is a
    /// proxy.
    Embedded,
    /// No mesh at all: the services call each other directly (for comparison).
    None,
}

/// How one service runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Meshed {
    /// Beside its own mesh-sidecar.
    Sidecar,
    /// With the mesh linked in.
    Embedded,
    /// Without a mesh.
    Unmeshed,
}

impl Mode {
    /// How every service runs in this mode.
    pub fn meshed(self) -> Meshed {
        match self {
            Mode::Sidecar => Meshed::Sidecar,
            // Every service links the mesh in: only the ingress gateway is a proxy.
            Mode::Embedded => Meshed::Embedded,
            Mode::None => Meshed::Unmeshed,
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sidecar" => Ok(Self::Sidecar),
            "embedded" => Ok(Self::Embedded),
            "none" => Ok(Self::None),
            other => Err(format!("`{other}`: the modes are sidecar, embedded and none")),
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Sidecar => "sidecar",
            Self::Embedded => "embedded",
            Self::None => "none",
        })
    }
}

/// What `bookinfo up` was asked for.
#[derive(Clone, Debug)]
pub struct Options {
    /// How the services are meshed.
    pub mode: Mode,
    /// The ingress gateway's address.
    pub ingress: SocketAddr,
    /// The watched config directory.
    pub config_dir: PathBuf,
    /// Where the service-graph dashboard is served.
    pub dashboard: SocketAddr,
    /// Percentage of requests traced.
    pub trace_sampling: f64,
    /// A collector of the user's instead of the dashboard's.
    pub otlp_endpoint: Option<String>,
    /// Start this Prometheus binary, scraping every proxy (the seed's addon).
    pub prometheus: Option<PathBuf>,
    /// Where the started Prometheus listens.
    pub prometheus_listen: SocketAddr,
    /// Build the dashboard's graph from this Prometheus (`http://IP:PORT`); the started one
    /// by default.
    pub prometheus_url: Option<SocketAddr>,
    /// Serve the ingress with the Gateway API's Gateway and HTTPRoute.
    pub gateway_api: bool,
}

/// How often the written Prometheus config scrapes the proxies.
pub const SCRAPE_INTERVAL: &str = "5s";

/// A Prometheus config scraping every proxy of the mesh at its admin endpoint, labelled as
/// Istio's addon labels pods (`namespace`, `pod`, `app`, `version`).
pub fn prometheus_config(proxies: &[(String, String, String, String, SocketAddr)]) -> String {
    let mut out = format!(
        "# Written by `bookinfo up`: every proxy of the running mesh, at its admin endpoint.\n\
         # Run your own Prometheus with it: prometheus --config.file=THIS_FILE\n\
         global:\n  scrape_interval: {SCRAPE_INTERVAL}\n  evaluation_interval: {SCRAPE_INTERVAL}\n\
         scrape_configs:\n- job_name: envoy-stats\n  metrics_path: /stats/prometheus\n  static_configs:\n"
    );
    for (pod, namespace, app, version, admin) in proxies {
        out.push_str(&format!(
            "  - targets: ['{admin}']\n    labels: {{namespace: {namespace}, pod: {pod}, app: {app}, version: '{version}'}}\n"
        ));
    }
    out
}

/// Free loopback ports, held until every port is chosen (so no two are the same) and closed
/// just before the children bind them. They are taken below the kernel's ephemeral range,
/// so that no outgoing connection (this machine's, or another test's) is given one in the
/// moment between its choice here and the child's bind, which the OS's own choice of port
/// `0` allows; the search starts at a place set by the process id, so that `bookinfo up`s
/// running side by side walk different ports.
#[derive(Default)]
struct Ports(Vec<TcpListener>);

impl Ports {
    fn next(&mut self) -> std::io::Result<SocketAddr> {
        self.next_on(std::net::Ipv4Addr::LOCALHOST.into(), self.0.len())
    }

    /// A port on `ip`; `slot` places the search (each reservation its own slot, so that
    /// ports chosen and released earlier are not chosen again).
    fn next_on(&mut self, ip: std::net::IpAddr, slot: usize) -> std::io::Result<SocketAddr> {
        let (lo, hi) = below_ephemeral();
        let span = usize::from(hi - lo);
        let start = (std::process::id() as usize).wrapping_mul(7919).wrapping_add(slot * 104_729);
        for i in 0..span {
            let port = lo + ((start + i) % span) as u16;
            if let Ok(l) = TcpListener::bind((ip, port)) {
                let a = l.local_addr()?;
                self.0.push(l);
                return Ok(a);
            }
        }
        let l = TcpListener::bind((ip, 0))?;
        let a = l.local_addr()?;
        self.0.push(l);
        Ok(a)
    }
}

/// Ports below the kernel's ephemeral range (`ip_local_port_range`, 32768 by default), at
/// most 12,000 of them and none below 1024.
fn below_ephemeral() -> (u16, u16) {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse::<u16>().ok()))
        .unwrap_or(32768);
    let hi = low.max(2048);
    (hi.saturating_sub(12_000).max(1024), hi)
}

fn free_addr() -> std::io::Result<SocketAddr> {
    Ports::default().next()
}

/// Write the seed config into `dir` when it holds no YAML yet (with the Gateway API's
/// ingress when `gateway_api`). A directory seeded before with the other ingress, its
/// `bookinfo-gateway.yaml` untouched, is switched over; one whose gateway file was edited
/// is left alone and refused, since both Gateways named `bookinfo-gateway` cannot be served.
/// `Ok(true)` when something was written.
pub fn seed(dir: &Path, gateway_api: bool) -> Result<bool, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
    };
    let has_yaml = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .any(|e| e.path().extension().is_some_and(|x| x == "yaml" || x == "yml"));
    let istio_gateway = SEED[1].1;
    let api_gateway = SEED_GATEWAY_API[0].1;
    if !has_yaml {
        for (name, text) in SEED {
            write(name, if gateway_api && name == SEED[1].0 { api_gateway } else { text })?;
        }
        if gateway_api {
            write(SEED_GATEWAY_API[1].0, SEED_GATEWAY_API[1].1)?;
        }
        return Ok(true);
    }
    let current = std::fs::read_to_string(dir.join(SEED[1].0)).ok();
    let (want, other) = if gateway_api { (api_gateway, istio_gateway) } else { (istio_gateway, api_gateway) };
    match current.as_deref() {
        Some(c) if c == want => Ok(false),
        Some(c) if c == other => {
            write(SEED[1].0, want)?;
            if gateway_api && !dir.join(SEED_GATEWAY_API[1].0).exists() {
                write(SEED_GATEWAY_API[1].0, SEED_GATEWAY_API[1].1)?;
            }
            Ok(true)
        }
        // Not ours (edited, or another gateway): the user's config decides.
        _ => {
            let loaded = load_paths(&[dir.to_path_buf()], &mesh_proxy::config::load_options("default")).into_snapshot();
            let (kind, flag) = if gateway_api {
                (Kind::KubernetesGateway, "--gateway-api needs the Gateway API Gateway")
            } else {
                (Kind::Gateway, "without --gateway-api Bookinfo needs the Istio Gateway")
            };
            if loaded.get(kind, "default", "bookinfo-gateway").is_none() {
                return Err(format!(
                    "{}: {flag} default/bookinfo-gateway, and {} holds another; apply it (meshctl apply -f) or use a fresh --config-dir",
                    dir.display(),
                    dir.join(SEED[1].0).display()
                ));
            }
            Ok(false)
        }
    }
}

/// The Deployments of the `default` namespace that are Bookinfo services, with addresses.
pub fn workloads(dir: &Path) -> Result<Vec<Workload>, String> {
    let loaded = load_paths(&[dir.to_path_buf()], &mesh_proxy::config::load_options("default"));
    if loaded.has_errors() {
        return Err(loaded.report());
    }
    let snapshot = loaded.into_snapshot();
    let mut out = Vec::new();
    let mut ports = Ports::default();
    for r in snapshot.in_namespace(Kind::Deployment, "default") {
        let Resource::Deployment(d) = &**r else { continue };
        let labels = &d.spec.template.metadata.labels;
        let (Some(app), Some(version)) = (labels.get("app"), labels.get("version")) else { continue };
        if !["productpage", "details", "reviews", "ratings"].contains(&app.as_str()) {
            return Err(format!("Deployment {}: app `{app}` is not a Bookinfo service", d.metadata.name));
        }
        let name = &d.metadata.name;
        let mut addr = |what: &str| ports.next().map_err(|e| format!("no free port for {name} {what}: {e}"));
        out.push(Workload {
            name: d.metadata.name.clone(),
            app: app.clone(),
            version: version.clone(),
            app_addr: addr("app")?,
            inbound: addr("inbound")?,
            outbound: addr("outbound")?,
            admin: addr("admin")?,
        });
    }
    if out.is_empty() {
        return Err(format!("{}: no Bookinfo Deployments in namespace default", dir.display()));
    }
    Ok(out)
}

/// A child process and where its output goes.
struct Proc {
    name: String,
    child: Child,
}

fn spawn(exe: &Path, args: &[String], log: &Path, name: &str) -> Result<Proc, String> {
    let out = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| format!("{}: {e}", log.display()))?;
    let child = Command::new(exe)
        .args(args)
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("starting {name}: {e}"))?;
    Ok(Proc { name: name.into(), child })
}

/// How long a process may take to listen: eight proxies, their certificates and the apps
/// start at once, on a machine that may be busy.
const READY_TIMEOUT: Duration = Duration::from_secs(45);

async fn wait_ready(addr: SocketAddr, what: &str) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    while tokio::time::Instant::now() < deadline {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Err(format!("{what} did not start listening on {addr} within {READY_TIMEOUT:?}"))
}

/// Run the mesh until Ctrl-C or SIGTERM; then stop every process (SIGTERM, so the proxies
/// drain) and return.
pub async fn run(mut opts: Options) -> Result<(), String> {
    // Port 0: a free one on that address (below the ephemeral range, as the children's), printed below.
    if opts.ingress.port() == 0 && opts.mode != Mode::None {
        opts.ingress = Ports::default()
            .next_on(opts.ingress.ip(), 1000)
            .map_err(|e| format!("cannot listen on {} for the ingress gateway: {e} (--ingress ADDR)", opts.ingress))?;
    }
    if opts.prometheus_listen.port() == 0 && opts.prometheus.is_some() {
        opts.prometheus_listen = Ports::default()
            .next_on(opts.prometheus_listen.ip(), 1001)
            .map_err(|e| format!("cannot listen on {} for Prometheus: {e}", opts.prometheus_listen))?;
    }
    if !(0.0..=100.0).contains(&opts.trace_sampling) {
        return Err(format!("--trace-sampling {}: a percentage between 0 and 100", opts.trace_sampling));
    }
    // The dashboard first: its address is where every proxy sends its spans.
    let listener = tokio::net::TcpListener::bind(opts.dashboard)
        .await
        .map_err(|e| format!("cannot serve the dashboard on {}: {e} (--dashboard ADDR)", opts.dashboard))?;
    let dashboard_addr = listener.local_addr().map_err(|e| e.to_string())?;
    let otlp = opts.otlp_endpoint.clone().unwrap_or_else(|| format!("http://{dashboard_addr}/v1/traces"));
    let sampling = opts.trace_sampling.to_string();
    let exe = std::env::current_exe().map_err(|e| format!("cannot find my own binary: {e}"))?;
    if seed(&opts.config_dir, opts.gateway_api)? {
        let gateway = if opts.gateway_api {
            "the Gateway API's Gateway and HTTPRoute (and the versioned Services)"
        } else {
            "the Istio Gateway and VirtualService"
        };
        println!("config: {} holds the Bookinfo manifest, {gateway} and destination rules", opts.config_dir.display());
    }
    let (gw_port, gw_workload, gw_namespace) = ingress_workload(opts.gateway_api);
    let state = opts.config_dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
    let logs = state.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| format!("{}: {e}", logs.display()))?;
    let ca = state.join("ca");
    let workloads = workloads(&opts.config_dir)?;
    let endpoints: Vec<String> = workloads
        .iter()
        .flat_map(|w| ["--endpoint".to_string(), format!("default/{}={}", w.name, w.inbound)])
        .collect();
    let config = opts.config_dir.display().to_string();
    let common = |admin: SocketAddr| -> Vec<String> {
        let mut a = vec![
            "sidecar".to_string(),
            "--config".into(),
            config.clone(),
            "--admin".into(),
            admin.to_string(),
            "--ca-dir".into(),
            ca.display().to_string(),
            // Eight proxies share this machine: one worker each (Istio's default is two
            // per pod, on a node with many cores).
            "--concurrency".into(),
            "1".into(),
            "--trace-sampling".into(),
            sampling.clone(),
            "--otlp-endpoint".into(),
            otlp.clone(),
        ];
        a.extend(endpoints.iter().cloned());
        a
    };

    // No mesh: the apps call each other directly, several addresses of a service in turn.
    let direct: Vec<String> =
        workloads.iter().flat_map(|w| ["--direct".to_string(), format!("{}={}", w.app, w.app_addr)]).collect();
    let mut procs = Vec::new();
    for w in &workloads {
        let mut app = vec!["serve".to_string(), w.app.clone(), "--version".into(), w.version.clone()];
        if w.app == "reviews" {
            app.extend(["--podname".into(), format!("{}-0", w.name)]);
        }
        let log = logs.join(format!("{}.log", w.name));
        match opts.mode.meshed() {
            Meshed::Embedded => {
                // The service itself is the mesh endpoint: it listens where a sidecar's
                // inbound would, and its admin serves the metrics.
                app.extend([
                    "--listen".into(),
                    w.inbound.to_string(),
                    "--mesh-config".into(),
                    config.clone(),
                    "--mesh-ca".into(),
                    ca.display().to_string(),
                    "--admin".into(),
                    w.admin.to_string(),
                    "--mesh-trace-sampling".into(),
                    sampling.clone(),
                    "--mesh-otlp-endpoint".into(),
                    otlp.clone(),
                ]);
                app.extend(endpoints.iter().cloned());
                procs.push(spawn(&exe, &app, &log, &w.name)?);
            }
            Meshed::Unmeshed => {
                app.extend(["--listen".into(), w.app_addr.to_string()]);
                app.extend(direct.iter().cloned());
                procs.push(spawn(&exe, &app, &log, &w.name)?);
            }
            Meshed::Sidecar => {
                app.extend(["--listen".into(), w.app_addr.to_string(), "--proxy".into(), w.outbound.to_string()]);
                procs.push(spawn(&exe, &app, &log, &w.name)?);
                let mut sidecar = common(w.admin);
                sidecar.extend([
                    "--outbound".into(),
                    w.outbound.to_string(),
                    "--inbound".into(),
                    w.inbound.to_string(),
                    "--app".into(),
                    w.app_addr.to_string(),
                    "--workload-labels".into(),
                    format!("app={},version={}", w.app, w.version),
                    "--workload".into(),
                    w.name.clone(),
                ]);
                let name = format!("{} sidecar", w.name);
                procs.push(spawn(&exe, &sidecar, &logs.join(format!("{}.sidecar.log", w.name)), &name)?);
            }
        }
    }
    let gateway_admin = free_addr().map_err(|e| format!("no free port for the gateway's admin: {e}"))?;
    if opts.mode != Mode::None {
        let mut gateway = common(gateway_admin);
        gateway.extend([
            "--gateway".into(),
            "default/bookinfo-gateway".into(),
            "--listen".into(),
            format!("{gw_port}={}", opts.ingress),
        ]);
        procs.push(spawn(&exe, &gateway, &logs.join(format!("{gw_workload}.log")), "ingress gateway")?);
    }

    let mut ready = Ok(());
    for w in &workloads {
        let addrs = match opts.mode.meshed() {
            Meshed::Embedded => vec![(w.inbound, "embedded mesh inbound"), (w.admin, "embedded mesh admin")],
            Meshed::Unmeshed => vec![(w.app_addr, "app")],
            Meshed::Sidecar => {
                vec![(w.app_addr, "app"), (w.inbound, "sidecar inbound"), (w.outbound, "sidecar outbound")]
            }
        };
        for (addr, what) in addrs {
            if ready.is_ok() {
                ready = wait_ready(addr, &format!("{} {what}", w.name)).await;
            }
        }
    }
    if ready.is_ok() && opts.mode != Mode::None {
        ready = wait_ready(opts.ingress, "the ingress gateway").await;
    }
    if let Err(e) = ready {
        stop(&mut procs).await;
        return Err(format!("{e}; logs in {}", logs.display()));
    }

    // Prometheus: the scrape config always (for users who run their own), the server when
    // asked.
    let scraped: Vec<(String, String, String, String, SocketAddr)> = workloads
        .iter()
        .filter(|_| opts.mode.meshed() != Meshed::Unmeshed)
        .map(|w| (w.name.clone(), "default".to_string(), w.app.clone(), w.version.clone(), w.admin))
        .chain((opts.mode != Mode::None).then(|| {
            (gw_workload.to_string(), gw_namespace.to_string(), gw_workload.to_string(), String::new(), gateway_admin)
        }))
        .collect();
    let prometheus_dir = state.join("prometheus");
    let prometheus_yml = prometheus_dir.join("prometheus.yml");
    if !scraped.is_empty() {
        let written = std::fs::create_dir_all(&prometheus_dir)
            .and_then(|()| std::fs::write(&prometheus_yml, prometheus_config(&scraped)));
        if let Err(e) = written {
            stop(&mut procs).await;
            return Err(format!("{}: {e}", prometheus_yml.display()));
        }
    }
    let mut prometheus_url = opts.prometheus_url;
    if let Some(bin) = &opts.prometheus {
        if scraped.is_empty() {
            stop(&mut procs).await;
            return Err("--prometheus: with --mode none there is no proxy to scrape".into());
        }
        let args: Vec<String> = vec![
            format!("--config.file={}", prometheus_yml.display()),
            format!("--storage.tsdb.path={}", prometheus_dir.join("data").display()),
            format!("--web.listen-address={}", opts.prometheus_listen),
        ];
        let started = spawn(bin, &args, &logs.join("prometheus.log"), "prometheus");
        match started {
            Ok(p) => procs.push(p),
            Err(e) => {
                stop(&mut procs).await;
                return Err(format!("{e} (--prometheus {}: apt-get install prometheus)", bin.display()));
            }
        }
        if let Err(e) = wait_ready(opts.prometheus_listen, "prometheus").await {
            stop(&mut procs).await;
            return Err(format!("{e}; its log: {}", logs.join("prometheus.log").display()));
        }
        prometheus_url.get_or_insert(opts.prometheus_listen);
    }

    let dashboard = crate::dashboard::Dashboard::new(
        workloads
            .iter()
            .filter(|_| opts.mode.meshed() != Meshed::Unmeshed)
            .map(|w| (w.name.clone(), w.admin))
            .chain((opts.mode != Mode::None).then(|| (gw_workload.to_string(), gateway_admin)))
            .collect(),
    );
    let dashboard = match prometheus_url {
        Some(addr) => dashboard.with_prometheus(addr),
        None => dashboard,
    }
    .with_config(opts.config_dir.clone());
    tokio::spawn(dashboard.clone().run());
    tokio::spawn(crate::http::serve(listener, move |req| {
        let d = dashboard.clone();
        async move { d.serve(req).await }
    }));

    // Who is running, for `meshctl proxy-status` (and anything else that wants to find the
    // proxies of this mesh); removed when Bookinfo stops.
    let proxies_file = state.join("proxies.json");
    let proxies: Vec<serde_json::Value> = workloads
        .iter()
        .filter(|_| opts.mode.meshed() != Meshed::Unmeshed)
        .map(|w| {
            let kind = if opts.mode.meshed() == Meshed::Embedded { "embedded" } else { "sidecar" };
            serde_json::json!({"name": w.name, "namespace": "default", "type": kind, "admin": w.admin.to_string()})
        })
        .chain((opts.mode != Mode::None).then(|| {
            serde_json::json!({"name": gw_workload, "namespace": gw_namespace, "type": "gateway",
                "admin": gateway_admin.to_string()})
        }))
        .collect();
    let config_abs = std::path::absolute(&opts.config_dir).unwrap_or_else(|_| opts.config_dir.clone());
    let record = serde_json::json!({
        "mode": opts.mode.to_string(),
        "config_dir": config_abs,
        "dashboard": format!("http://{dashboard_addr}/"),
        "proxies": proxies,
    });
    if let Err(e) = std::fs::write(&proxies_file, serde_json::to_vec_pretty(&record).unwrap_or_default()) {
        stop(&mut procs).await;
        return Err(format!("{}: {e}", proxies_file.display()));
    }

    let how = match opts.mode {
        Mode::Sidecar => "each with its sidecar; mTLS",
        Mode::Embedded => "every service with the mesh linked in, no sidecar (only the gateway is a proxy); mTLS",
        Mode::None => "no mesh: the services call each other directly",
    };
    println!("Bookinfo is up ({} workloads, {how}; CA in {}).", workloads.len(), ca.display());
    let productpage = workloads.iter().find(|w| w.app == "productpage").map(|w| w.app_addr);
    match (opts.mode, productpage) {
        (Mode::None, Some(addr)) => println!("  productpage  http://{addr}/productpage"),
        _ => println!("  productpage  http://{}/productpage", opts.ingress),
    }
    println!(
        "  dashboard    http://{dashboard_addr}/   (the service graph, refreshed every {} s)",
        crate::dashboard::INTERVAL.as_secs()
    );
    if opts.mode != Mode::None {
        println!("  gateway      http://{gateway_admin}/stats/prometheus   (admin: /config_dump /clusters /ready)");
        match &opts.otlp_endpoint {
            None => println!(
                "  traces       http://{dashboard_addr}/#/traces   ({} % of requests sampled; --trace-sampling PERCENT)",
                opts.trace_sampling
            ),
            Some(url) => println!("  traces       sent to {url}   ({} % of requests sampled)", opts.trace_sampling),
        }
    }
    let by_app: BTreeMap<&str, &Workload> = workloads.iter().map(|w| (w.name.as_str(), w)).collect();
    for (name, w) in by_app {
        match opts.mode.meshed() {
            Meshed::Sidecar => println!("  {name:<15}http://{}/stats/prometheus   (sidecar)", w.admin),
            Meshed::Embedded => println!("  {name:<15}http://{}/stats/prometheus   (embedded)", w.admin),
            Meshed::Unmeshed => println!("  {name:<15}http://{}/   (no mesh)", w.app_addr),
        }
    }
    if opts.prometheus.is_some() {
        println!(
            "  prometheus   http://{}/   (every proxy scraped every {SCRAPE_INTERVAL}; the dashboard's graph reads it)",
            opts.prometheus_listen
        );
    } else if let Some(addr) = opts.prometheus_url {
        println!("  prometheus   http://{addr}/   (the dashboard's graph reads it)");
    }
    if !scraped.is_empty() {
        println!("  scrape conf  {}   (for your own Prometheus)", prometheus_yml.display());
    }
    println!("  config       {} (watched: meshctl apply -f FILE --config-dir {})", config, config);
    println!("  logs         {}", logs.display());
    println!("Ctrl-C stops everything.");

    wait_for_signal(&mut procs).await;
    let _ = std::fs::remove_file(&proxies_file);
    stop(&mut procs).await;
    Ok(())
}

/// Ctrl-C, SIGTERM, or a child dying (then everything stops).
async fn wait_for_signal(procs: &mut [Proc]) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).ok();
    let died = async {
        loop {
            for p in procs.iter_mut() {
                if let Ok(Some(status)) = p.child.try_wait() {
                    eprintln!("bookinfo: {} exited ({status}); stopping the mesh", p.name);
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        () = died => {}
    }
}

/// SIGTERM everything, wait up to 10 s, then kill what is left.
async fn stop(procs: &mut [Proc]) {
    for p in procs.iter() {
        if let Some(pid) = p.child.id() {
            let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        }
    }
    for p in procs.iter_mut() {
        if tokio::time::timeout(Duration::from_secs(10), p.child.wait()).await.is_err() {
            let _ = p.child.kill().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_config_gives_six_workloads_with_distinct_ports() {
        let dir = std::env::temp_dir().join(format!("bookinfo-up-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(seed(&dir, false).unwrap());
        assert!(!seed(&dir, false).unwrap(), "a directory with config is left alone");
        let w = workloads(&dir).unwrap();
        let mut names: Vec<_> = w.iter().map(|w| w.name.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["details-v1", "productpage-v1", "ratings-v1", "reviews-v1", "reviews-v2", "reviews-v3"]);
        let mut ports: Vec<u16> =
            w.iter().flat_map(|w| [w.app_addr, w.inbound, w.outbound, w.admin]).map(|a| a.port()).collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 24);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_seed_switches_between_the_istio_and_the_gateway_api_ingress() {
        let dir = std::env::temp_dir().join(format!("bookinfo-up-switch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let gateways = |dir: &Path| {
            let s = load_paths(&[dir.to_path_buf()], &mesh_proxy::config::load_options("default")).into_snapshot();
            (
                s.get(Kind::Gateway, "default", "bookinfo-gateway").is_some(),
                s.get(Kind::KubernetesGateway, "default", "bookinfo-gateway").is_some(),
                s.get(Kind::Service, "default", "reviews-v1").is_some(),
            )
        };
        assert!(seed(&dir, true).unwrap());
        assert_eq!(gateways(&dir), (false, true, true));
        assert!(!seed(&dir, true).unwrap());
        assert!(seed(&dir, false).unwrap(), "an untouched seed is switched back");
        assert_eq!(gateways(&dir), (true, false, true));
        assert!(seed(&dir, true).unwrap());
        assert_eq!(gateways(&dir), (false, true, true));
        // An edited gateway file is the user's: refused, not overwritten.
        std::fs::write(dir.join("bookinfo-gateway.yaml"), "# mine\n").unwrap();
        let err = seed(&dir, true).unwrap_err();
        assert!(err.contains("--gateway-api needs the Gateway API Gateway default/bookinfo-gateway"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
