//! `bookinfo`: run the Bookinfo mesh (`bookinfo up`) or one of its services (`bookinfo serve`).

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, sync::Arc};

use bookinfo::{
    details,
    http::{Upstreams, serve},
    productpage::ProductPage,
    ratings::{Ratings, Variant},
    reviews::Reviews,
    up,
};
use clap::{Parser, Subcommand, ValueEnum};
use http_body_util::BodyExt;

#[derive(Debug, Parser)]
#[command(name = "bookinfo", version, about = "Istio's Bookinfo in Rust, meshed by mesh-sidecar")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole mesh on this machine: every Deployment with its sidecar, and the
    /// ingress gateway.
    Up {
        /// The ingress gateway's address.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
        ingress: SocketAddr,
        /// The watched config directory (seeded with the Bookinfo manifest when empty).
        #[arg(long, value_name = "DIR", default_value = ".mesh/config")]
        config_dir: PathBuf,
        /// Where the service-graph dashboard is served (Kiali's port by default).
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:20001")]
        dashboard: SocketAddr,
        /// sidecar: every service beside its own mesh-sidecar; embedded: every service links
        /// the mesh in-process (no sidecar; only the ingress gateway is a proxy).
        #[arg(long, value_name = "sidecar|embedded", default_value = "sidecar")]
        mode: up::Mode,
        /// Percentage of requests traced (Istio's `defaultConfig.tracing.sampling`; Istio's
        /// default is 1, the demo traces every request).
        #[arg(long, value_name = "PERCENT", default_value_t = 100.0)]
        trace_sampling: f64,
        /// Send the spans to your own OTLP/HTTP collector (Jaeger, Tempo, an OpenTelemetry
        /// collector: `http://HOST:4318/v1/traces`) instead of the dashboard's.
        #[arg(long, value_name = "URL")]
        otlp_endpoint: Option<String>,
        /// Start Prometheus (Debian's `prometheus`, or this binary) scraping every proxy, as
        /// Istio's addon; the dashboard's graph then reads it with Kiali's queries.
        #[arg(long, value_name = "BIN", num_args = 0..=1, default_missing_value = "prometheus")]
        prometheus: Option<PathBuf>,
        /// Where that Prometheus listens.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9090")]
        prometheus_listen: SocketAddr,
        /// Build the dashboard's graph from this Prometheus (`http://IP:PORT`) instead of
        /// scraping the proxies itself.
        #[arg(long, value_name = "URL", value_parser = parse_prometheus_url)]
        prometheus_url: Option<SocketAddr>,
        /// Serve Bookinfo's ingress with the Kubernetes Gateway API (the Gateway and HTTPRoute
        /// of Istio's `gateway-api/bookinfo-gateway.yaml`, on listener port 80, and the
        /// versioned Services its routes name) instead of the Istio Gateway.
        #[arg(long)]
        gateway_api: bool,
    },
    /// Run one service.
    Serve {
        /// Which.
        service: Service,
        /// Where it listens.
        #[arg(long, value_name = "ADDR")]
        listen: SocketAddr,
        /// The version (reviews: v1, v2, v3; ratings: v1, v-faulty, v-delayed).
        #[arg(long, default_value = "v1")]
        version: String,
        /// Call the other services through this HTTP proxy (the sidecar's outbound). By
        /// default `HTTP_PROXY` (or `http_proxy`), as `meshctl kube-inject` sets it, when
        /// it is `http://IP:PORT` and neither --direct nor --mesh-config is given.
        #[arg(long, value_name = "ADDR")]
        proxy: Option<SocketAddr>,
        /// Without a proxy: where a service is (`ratings=127.0.0.1:9081`; repeat, also for
        /// several addresses of one service, taken in turn).
        #[arg(long, value_name = "HOST=ADDR", value_parser = parse_direct)]
        direct: Vec<(String, SocketAddr)>,
        /// The pod name reviews reports (`HOSTNAME` by default).
        #[arg(long)]
        podname: Option<String>,
        /// Link the mesh in-process (embedded mode) with this watched config directory:
        /// --listen then serves mTLS, policy and telemetry itself, and calls go through the
        /// client stack; no sidecar.
        #[arg(long, value_name = "DIR")]
        mesh_config: Option<PathBuf>,
        /// Embedded mode: the mesh CA's directory.
        #[arg(long, value_name = "DIR", default_value = ".mesh/ca", requires = "mesh_config")]
        mesh_ca: PathBuf,
        /// Embedded mode: where a workload runs, `NS/WORKLOAD=ADDR` (repeat).
        #[arg(long = "endpoint", value_name = "NS/WORKLOAD=ADDR", value_parser = mesh_proxy::parse_endpoint, requires = "mesh_config")]
        endpoints: Vec<(String, String, SocketAddr)>,
        /// Embedded mode: the admin endpoint (/stats/prometheus, /config_dump, /clusters).
        #[arg(long, value_name = "ADDR", requires = "mesh_config")]
        admin: Option<SocketAddr>,
        /// Embedded mode: percentage of new traces sampled.
        #[arg(long, value_name = "PERCENT", default_value_t = 1.0, requires = "mesh_config")]
        mesh_trace_sampling: f64,
        /// Embedded mode: the OTLP/HTTP collector spans go to.
        #[arg(long, value_name = "URL", requires = "mesh_config")]
        mesh_otlp_endpoint: Option<String>,
    },
    /// Run mesh-sidecar (what `bookinfo up` starts beside each service).
    #[command(disable_help_flag = true)]
    Sidecar {
        /// mesh-sidecar's arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Service {
    Productpage,
    Details,
    Reviews,
    Ratings,
}

/// `HTTP_PROXY` or `http_proxy` as `http://IP:PORT[/]`, if set.
fn proxy_from_env() -> Result<Option<SocketAddr>, String> {
    let Some((name, value)) = ["HTTP_PROXY", "http_proxy"]
        .into_iter()
        .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()).map(|v| (n, v)))
    else {
        return Ok(None);
    };
    let addr = value.strip_prefix("http://").unwrap_or(&value).trim_end_matches('/');
    addr.parse().map(Some).map_err(|_| format!("{name}={value}: expected http://IP:PORT"))
}

/// `http://IP:PORT[/]`.
fn parse_prometheus_url(s: &str) -> Result<SocketAddr, String> {
    let addr = s.strip_prefix("http://").unwrap_or(s).trim_end_matches('/');
    addr.parse().map_err(|_| format!("`{s}`: expected http://IP:PORT"))
}

fn parse_direct(s: &str) -> Result<(String, SocketAddr), String> {
    let (host, addr) = s.split_once('=').ok_or_else(|| format!("`{s}` is not HOST=ADDR"))?;
    Ok((host.to_string(), addr.parse().map_err(|e| format!("`{addr}`: {e}"))?))
}

/// One of the four services, ready to answer.
#[derive(Clone)]
enum App {
    Details,
    Ratings(Ratings),
    Reviews(Arc<Reviews>),
    Productpage(Arc<ProductPage>),
}

impl App {
    /// Answer on a task of its own: as the originals' thread-per-request servers, a caller
    /// that goes away does not cancel the request's own calls (BEHAVIOUR.md §3.2: under the
    /// 7 s delay, reviews v2 still waits for ratings after productpage has given up).
    async fn answer(&self, parts: http::request::Parts, body: bytes::Bytes) -> http::Response<bookinfo::http::Body> {
        let app = self.clone();
        match tokio::spawn(async move { app.answer_here(parts, body).await }).await {
            Ok(rsp) => rsp,
            Err(e) => bookinfo::http::respond(
                http::StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                format!("the request's task failed: {e}\n"),
            ),
        }
    }

    async fn answer_here(
        &self,
        parts: http::request::Parts,
        body: bytes::Bytes,
    ) -> http::Response<bookinfo::http::Body> {
        let req = http::Request::from_parts(parts, ());
        match self {
            App::Details => details::handle(&req),
            App::Ratings(r) => r.handle(req.method(), req.uri().path(), body).await,
            App::Reviews(r) => r.handle(&req).await,
            App::Productpage(p) => p.handle(&req, body).await,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Sidecar { args } = cli.command {
        return mesh_proxy::sidecar::main_with(std::iter::once("mesh-sidecar".to_string()).chain(args));
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bookinfo: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bookinfo: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Up {
            ingress,
            config_dir,
            dashboard,
            mode,
            trace_sampling,
            otlp_endpoint,
            prometheus,
            prometheus_listen,
            prometheus_url,
            gateway_api,
        } => {
            up::run(up::Options {
                mode,
                ingress,
                config_dir,
                dashboard,
                trace_sampling,
                otlp_endpoint,
                prometheus,
                prometheus_listen,
                prometheus_url,
                gateway_api,
            })
            .await
        }
        Command::Serve {
            service,
            listen,
            version,
            proxy,
            direct,
            podname,
            mesh_config,
            mesh_ca,
            endpoints,
            admin,
            mesh_trace_sampling,
            mesh_otlp_endpoint,
        } => {
            let name = format!("{service:?}").to_ascii_lowercase();
            let embedded = match &mesh_config {
                Some(dir) => {
                    let mut mesh = mesh_proxy::embed::Mesh::builder()
                        .config(dir)
                        .label("app", &name)
                        .label("version", &version)
                        .workload(format!("{name}-{version}"))
                        .ca_dir(&mesh_ca)
                        .trace_sampling(mesh_trace_sampling);
                    if let Some(url) = mesh_otlp_endpoint {
                        mesh = mesh.otlp_endpoint(url);
                    }
                    for (ns, workload, addr) in endpoints {
                        mesh = mesh.endpoint(ns, workload, addr);
                    }
                    Some(mesh.start().await.map_err(|e| e.to_string())?)
                }
                None => None,
            };
            let proxy = match proxy {
                None if direct.is_empty() && mesh_config.is_none() => proxy_from_env()?,
                p => p,
            };
            let upstreams = Upstreams {
                proxy,
                direct: direct.into_iter().fold(std::collections::BTreeMap::new(), |mut m, (host, addr)| {
                    m.entry(host).or_insert_with(Vec::new).push(addr);
                    m
                }),
                turn: Default::default(),
                embedded: embedded.as_ref().map(|e| e.client()),
            };
            let listener =
                tokio::net::TcpListener::bind(listen).await.map_err(|e| format!("cannot listen on {listen}: {e}"))?;
            let only_v1 = |name: &str| {
                if version == "v1" { Ok(()) } else { Err(format!("{name} {version}: this build has v1 only")) }
            };
            let app = match service {
                Service::Details => {
                    only_v1("details")?;
                    App::Details
                }
                Service::Ratings => App::Ratings(Ratings::new(version.parse::<Variant>()?, rand::random())),
                Service::Reviews => {
                    let podname = podname
                        .or_else(|| std::env::var("HOSTNAME").ok())
                        .unwrap_or_else(|| format!("reviews-{version}"));
                    App::Reviews(Arc::new(Reviews::new(
                        &version,
                        podname,
                        std::env::var("CLUSTER_NAME").ok(),
                        upstreams,
                    )?))
                }
                Service::Productpage => {
                    only_v1("productpage")?;
                    let secret: [u8; 32] = rand::random();
                    App::Productpage(Arc::new(ProductPage::new(upstreams, &secret)))
                }
            };
            match embedded {
                None => {
                    serve(listener, move |req| {
                        let app = app.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            app.answer(parts, body).await
                        }
                    })
                    .await;
                }
                Some(mesh) => {
                    let mesh = Arc::new(mesh);
                    // SIGTERM or Ctrl-C: stop accepting, let in-flight requests finish.
                    let (stop_tx, stop) = tokio::sync::watch::channel(false);
                    tokio::spawn(async move {
                        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
                        tokio::select! {
                            _ = tokio::signal::ctrl_c() => {}
                            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
                        }
                        let _ = stop_tx.send(true);
                    });
                    let stopped = |mut stop: tokio::sync::watch::Receiver<bool>| async move {
                        let _ = stop.wait_for(|s| *s).await;
                    };
                    if let Some(addr) = admin {
                        let l = tokio::net::TcpListener::bind(addr)
                            .await
                            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
                        let (mesh_admin, stop) = (mesh.clone(), stopped(stop.clone()));
                        tokio::spawn(async move { mesh_admin.serve_admin(l, stop).await });
                    }
                    let app = tower::service_fn(move |req: http::Request<mesh_core::BoxBody>| {
                        let app = app.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            Ok::<_, std::convert::Infallible>(app.answer(parts, body).await)
                        }
                    });
                    let svc = tower::ServiceBuilder::new().layer(mesh.server_layer(9080)).service(app);
                    mesh.serve(listener, 9080, svc, stopped(stop)).await.map_err(|e| e.to_string())?;
                }
            }
            Ok(())
        }
        Command::Sidecar { .. } => unreachable!("handled before the runtime starts"),
    }
}
