//! The sidecar process: every listener `mesh-sidecar`'s flags ask for (outbound, plain TCP,
//! gateway, inbound, admin, the cluster CA), served on worker threads until SIGTERM drains them.
//! `mesh-sidecar` and `bookinfo sidecar` both run [`main_with`].

use std::{
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use mesh_mtls::connector::MeshConnector;
use mesh_route::layer::{BalanceLayer, RouterLayer};
use mesh_telemetry::{
    access_log::{AccessLog, Format},
    layer::Reporter,
};
use tokio::{sync::watch, task::JoinHandle};

use crate::{
    MeshError,
    admin::{self, Admin, Role},
    conn, gateway, guard, inbound, outbound,
    serve::{self as listeners, Accept, bind, serve},
    state::{self, ConfigFrom, TraceOptions, WorkloadMesh, WorkloadOptions},
    tcp, workers,
};

pub use crate::{
    admin::LogControl,
    cli::{AccessLogFormat, Args},
    gateway::Listen,
    tcp::Forward,
};

/// Run `mesh-sidecar` with these command-line arguments (the first is the program name);
/// returns when it has drained after SIGTERM or Ctrl-C, or failed to start.
#[cfg(feature = "cli")]
pub fn main_with(args: impl IntoIterator<Item = String>) -> std::process::ExitCode {
    use std::process::ExitCode;

    use clap::Parser;
    use tracing_subscriber::{EnvFilter, layer::SubscriberExt, reload, util::SubscriberInitExt};

    let mut args = args.into_iter();
    let program = args.next().unwrap_or_else(|| "mesh-sidecar".into());
    let mut rest = args.peekable();
    // `mesh-sidecar iptables ...`: the capture rules, then exit (a pod's init step).
    if rest.peek().map(String::as_str) == Some("iptables") {
        return crate::capture::iptables::main(rest.skip(1));
    }
    let args = match Args::try_parse_from(std::iter::once(program).chain(rest)) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
        }
    };
    let filter = match EnvFilter::try_new(&args.log_level) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("mesh-sidecar: --log-level `{}`: {e}", args.log_level);
            return ExitCode::from(2);
        }
    };
    let (filter, handle) = reload::Layer::new(filter);
    // A host program may have set its own subscriber already; then logs go there.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(false))
        .try_init();
    let log = LogControl::new(&args.log_level, move |f| {
        handle.reload(EnvFilter::try_new(f)?)?;
        Ok(())
    });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.concurrency.max(1))
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mesh-sidecar: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args, log)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mesh-sidecar: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--kube` and its options as a config source.
fn kube_config(args: &Args) -> Result<ConfigFrom<'_>, MeshError> {
    #[cfg(feature = "k8s")]
    {
        Ok(ConfigFrom::Kube {
            options: mesh_k8s::KubeOptions {
                namespaces: args.kube_namespaces.clone(),
                config_selector: args.kube_selector.clone(),
                ..Default::default()
            },
            ready_timeout: args.kube_ready_timeout,
        })
    }
    #[cfg(not(feature = "k8s"))]
    {
        let _ = args;
        Err(MeshError::Unsupported("--kube needs mesh-sidecar built with the feature `k8s`".into()))
    }
}

/// On a cluster the gateway may start before its Gateway resource is applied: wait for it
/// (saying so every ten seconds) rather than exit and be restarted with a growing backoff.
/// A `--gateway` that is not `NS/NAME` is reported by the core, as without `--kube`.
async fn wait_for_gateway(source: &dyn mesh_config::ConfigSource, gateway: &str) {
    let Some((ns, name)) = gateway.split_once('/') else { return };
    let mut snapshots = source.snapshots();
    loop {
        let snapshot = snapshots.borrow_and_update().clone();
        let kinds = [mesh_config::api::Kind::Gateway, mesh_config::api::Kind::KubernetesGateway];
        if kinds.iter().any(|k| snapshot.get(*k, ns, name).is_some()) {
            return;
        }
        tracing::info!(gateway, "waiting for the Gateway resource to be applied");
        if let Ok(Err(_)) = tokio::time::timeout(Duration::from_secs(10), snapshots.changed()).await {
            // The source is gone: the core reports the missing Gateway.
            return;
        }
    }
}

/// The mesh CA for a cluster's sidecars, when `--ca-listen` asks for it.
async fn start_ca(args: &Args) -> Result<Option<JoinHandle<()>>, MeshError> {
    let Some(addr) = args.ca_listen else { return Ok(None) };
    #[cfg(feature = "k8s")]
    {
        use mesh_k8s::ReviewError;
        use mesh_mtls::remote::{AUDIENCE, AuthError, Authenticate, CaService, ServiceAccount};

        /// TokenReview with the API server.
        struct Reviewer(mesh_k8s::TokenReviewer);
        impl Authenticate for Reviewer {
            fn authenticate(
                &self,
                token: String,
            ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<ServiceAccount, AuthError>> + Send>>
            {
                let reviewer = self.0.clone();
                Box::pin(async move {
                    match reviewer.review(&token).await {
                        Ok((namespace, name)) => Ok(ServiceAccount { namespace, name }),
                        Err(ReviewError::Rejected(e)) => Err(AuthError::Rejected(e)),
                        Err(ReviewError::Unavailable(e)) => Err(AuthError::Unavailable(e)),
                    }
                })
            }
        }

        let ca_error = |location: String, e: &dyn std::fmt::Display| MeshError::Ca { location, message: e.to_string() };
        let client = mesh_k8s::client().await.map_err(|e| MeshError::Config(format!("the API server: {e}")))?;
        let reviewer = Reviewer(mesh_k8s::TokenReviewer::new(client, vec![AUDIENCE.to_string()]));
        let ca = mesh_mtls::ca::CertificateAuthority::load_or_create(&args.ca_dir, &args.trust_domain)
            .map_err(|e| ca_error(args.ca_dir.display().to_string(), &e))?;
        let service = CaService::new(Arc::new(ca), Arc::new(reviewer));
        let names = if args.ca_server_names.is_empty() {
            ["mesh-ca.mesh-system.svc", "mesh-ca.mesh-system.svc.cluster.local", "localhost", "127.0.0.1"]
                .map(String::from)
                .to_vec()
        } else {
            args.ca_server_names.clone()
        };
        let tls = service.tls_config(&names).map_err(|e| ca_error(format!("endpoint {addr}"), &e))?;
        let listener = bind("ca", addr).await?;
        announce("ca", listener.local_addr().unwrap_or(addr));
        Ok(Some(tokio::spawn(service.serve(listener, tls))))
    }
    #[cfg(not(feature = "k8s"))]
    {
        let _ = addr;
        Err(MeshError::Unsupported("--ca-listen needs mesh-sidecar built with the feature `k8s`".into()))
    }
}

/// The workload's mesh from the flags: its certificate (from a cluster's CA when
/// `--ca-address` says so), its config (files or the API server) and what is compiled of it.
async fn start_core(args: &Args) -> Result<WorkloadMesh, MeshError> {
    let remote = match (&args.ca_address, &args.ca_token_file, &args.ca_root_file) {
        (Some(address), Some(token), Some(root)) => Some(state::RemoteCert::obtain(address, token, root).await?),
        _ => None,
    };
    let from = if args.kube { kube_config(args)? } else { ConfigFrom::Files(&args.config) };
    let source = from.open().await?;
    if args.kube
        && let Some(gw) = &args.gateway
    {
        wait_for_gateway(source.as_ref(), gw).await;
    }
    WorkloadMesh::start(
        &WorkloadOptions {
            namespace: args.namespace.as_deref(),
            labels: args.workload_labels.as_ref(),
            workload: args.workload.as_deref(),
            service_account: args.service_account.as_deref(),
            gateway: args.gateway.as_deref(),
            endpoints: &args.endpoints,
            ca_dir: &args.ca_dir,
            remote: remote.as_ref(),
            trust_domain: &args.trust_domain,
            max_label_sets: args.max_label_sets,
            cert_ttl: args.cert_ttl,
            tracing: &TraceOptions { sampling: args.trace_sampling, otlp_endpoint: args.otlp_endpoint.clone() },
            access_log: args.access_log != AccessLogFormat::Off,
            mesh_config: args.mesh_config.as_deref(),
        },
        source,
    )
}

/// What every listener of the process shares: the workload's mesh, the worker threads, the
/// limits, the edge guard, the access log, the outbound balancer and connector, and the
/// signal that starts the drain.
struct Process<'a> {
    args: &'a Args,
    core: WorkloadMesh,
    workers: workers::Workers,
    limits: conn::Limits,
    guard: guard::GuardLayer,
    access_log: Option<AccessLog>,
    balance: BalanceLayer,
    connector: MeshConnector,
    stop: watch::Receiver<bool>,
}

/// A started listener's tasks, done when it has drained.
type Tasks = Vec<JoinHandle<()>>;

impl Process<'_> {
    fn gate(&self, name: &'static str) -> Arc<conn::Gate> {
        conn::Gate::new(name, self.limits, &self.core.metrics.proxy.listeners)
    }

    fn telemetry(&self, reporter: Reporter) -> mesh_telemetry::layer::TelemetryLayer {
        self.core.telemetry(reporter, self.access_log.as_ref())
    }

    /// The outbound stack over a router (the sidecar's, or a gateway port's).
    fn outbound(&self, route: RouterLayer) -> outbound::Outbound {
        let client = self.core.client_unboxed(route, &self.connector, &self.balance);
        outbound::stack(self.guard, self.telemetry(Reporter::Source), client)
    }

    /// `--outbound`: what the app calls, by Host or as an HTTP proxy.
    async fn start_outbound(&self) -> Result<Tasks, MeshError> {
        let Some(addr) = self.args.outbound else { return Ok(Vec::new()) };
        let gate = self.gate("outbound");
        let (bound, tasks) = self
            .workers
            .listen("outbound", addr, || {
                let svc = self.outbound(RouterLayer::new(self.core.control.table.clone()));
                let (gate, stop) = (gate.clone(), self.stop.clone());
                move |l| serve("outbound", l, Accept::Plain, svc, None, gate, stop)
            })
            .await?;
        announce("outbound", bound);
        Ok(tasks)
    }

    /// The TCP proxy, sharing the HTTP stack's balancer and connector.
    fn tcp_outbound(&self) -> Arc<tcp::Outbound> {
        Arc::new(tcp::Outbound {
            control: self.core.control.clone(),
            connector: self.connector.clone(),
            metrics: self.core.metrics.clone(),
            balance: self.balance.clone(),
            connect: mesh_route::policy::retry::RetryPolicy::tcp_connect(),
        })
    }

    /// `--capture-outbound`: what the capture rules redirect, by original destination.
    async fn start_capture_outbound(&self) -> Result<Tasks, MeshError> {
        let Some(addr) = self.args.capture_outbound else { return Ok(Vec::new()) };
        let gate = self.gate("capture_outbound");
        let tcp = self.tcp_outbound();
        let (bound, tasks) = self
            .workers
            .listen("capture outbound", addr, || {
                let capture = Arc::new(crate::capture::outbound::CaptureOutbound {
                    control: self.core.control.clone(),
                    metrics: self.core.metrics.clone(),
                    http: self.outbound(RouterLayer::new(self.core.control.table.clone())),
                    tcp: tcp.clone(),
                    policy: self.core.outbound_policy,
                });
                let (gate, stop) = (gate.clone(), self.stop.clone());
                move |l| capture.serve(l, gate, stop)
            })
            .await?;
        announce("capture outbound", bound);
        Ok(tasks)
    }

    /// `--capture-inbound`: what the capture rules redirect to the pod's app ports.
    async fn start_capture_inbound(&self) -> Result<Tasks, MeshError> {
        let Some(addr) = self.args.capture_inbound else { return Ok(Vec::new()) };
        let gate = self.gate("capture_inbound");
        let (bound, tasks) = self
            .workers
            .listen("capture inbound", addr, || {
                let (guard, core) = (self.guard, &self.core);
                let telemetry = self.telemetry(Reporter::Destination);
                let control = core.control.clone();
                let accepts = core.inbound_acceptor();
                let authz = core.authz_layers();
                let make: crate::capture::inbound::MakeStack = Arc::new(move |app: std::net::SocketAddr| {
                    let to_app =
                        inbound::ToApp::from_source(app, Some(crate::capture::inbound::passthrough_source(app)));
                    let svc = inbound::stack_with(&control, guard, telemetry.clone(), authz(app.port()), to_app);
                    Ok((accepts(app.port())?, svc))
                });
                let capture = Arc::new(crate::capture::inbound::CaptureInbound {
                    control: core.control.clone(),
                    make,
                    metrics: core.metrics.clone(),
                    stacks: std::sync::Mutex::default(),
                });
                let (gate, stop) = (gate.clone(), self.stop.clone());
                move |l| capture.serve(l, gate, stop)
            })
            .await?;
        announce("capture inbound", bound);
        Ok(tasks)
    }

    /// `--dns`: the DNS proxy, on UDP and TCP.
    async fn start_dns(&self) -> Result<Tasks, MeshError> {
        let Some(addr) = self.args.dns else { return Ok(Vec::new()) };
        let bind_err = |source| MeshError::Bind { what: "dns".into(), addr, source };
        let udp = tokio::net::UdpSocket::bind(addr).await.map_err(bind_err)?;
        let tcp = bind("dns", udp.local_addr().map_err(bind_err)?).await?;
        let upstreams =
            crate::capture::dns::nameservers(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default());
        let bound = udp.local_addr().map_err(bind_err)?;
        let proxy = Arc::new(crate::capture::dns::DnsProxy::new(self.core.control.clone(), upstreams));
        announce("dns", bound);
        Ok(vec![tokio::spawn(proxy.serve(udp, tcp, self.stop.clone()))])
    }

    /// `--tcp`: plain TCP for the app, one listener per forward.
    async fn start_tcp(&self) -> Result<Tasks, MeshError> {
        let tcp_out = self.tcp_outbound();
        let mut all = Vec::new();
        for f in &self.args.tcp {
            let name = format!("tcp {}:{}", f.host, f.port);
            let gate = self.gate("tcp");
            let (bound, tasks) = self
                .workers
                .listen(&name, f.listen, || {
                    let (out, f, gate, stop) = (tcp_out.clone(), f.clone(), gate.clone(), self.stop.clone());
                    move |l| out.serve(l, f, gate, stop)
                })
                .await?;
            announce(&name, bound);
            all.extend(tasks);
        }
        Ok(all)
    }

    /// `--gateway`: one listener per `--listen`, routing by its Gateway server port; its TLS
    /// and httpsRedirect follow the Gateway as it changes.
    async fn start_gateway(&self) -> Result<Tasks, MeshError> {
        let Some(gw) = &self.args.gateway else { return Ok(Vec::new()) };
        let core = &self.core;
        let creds = gateway::Credentials {
            dir: self.args.credential_dir.clone(),
            mesh: Some((core.store.clone(), core.roots.clone())),
        };
        let snapshot = core.control.snapshot.load_full();
        let plans = gateway::plan(&snapshot, gw, &self.args.listen, &creds).map_err(MeshError::Gateway)?;
        let live = Arc::new(gateway::LiveListeners::new(&snapshot, gw, creds, &plans));
        let mut all = Vec::new();
        for (index, plan) in plans.iter().enumerate() {
            let name = format!("gateway {}", plan.port);
            let gate = self.gate("gateway");
            let serving = live.serving(index);
            let accept = {
                let serving = serving.clone();
                Accept::Live(Arc::new(move || serving.load().accept.clone()))
            };
            let (bound, tasks) = self
                .workers
                .listen(&name, plan.addr, || {
                    let route = RouterLayer::new(core.control.table.clone())
                        .with_listener_port(plan.port)
                        .with_connection_scheme();
                    let svc = gateway::RedirectOr::new(serving.clone(), self.outbound(route));
                    let (accept, gate, stop) = (accept.clone(), gate.clone(), self.stop.clone());
                    move |l| serve("gateway", l, accept, svc, None, gate, stop)
                })
                .await?;
            announce(&name, bound);
            all.extend(tasks);
        }
        // Ends when the config source does.
        live.follow(core.source.snapshots());
        Ok(all)
    }

    /// `--inbound` in front of `--app`: mTLS per PeerAuthentication, JWT, authorization,
    /// telemetry; opaque TCP spliced as the app's port protocol says.
    async fn start_inbound(&self) -> Result<Tasks, MeshError> {
        let (Some(addr), Some(app)) = (self.args.inbound, self.args.app) else { return Ok(Vec::new()) };
        let core = &self.core;
        let control = &core.control;
        let app_port = app.port();
        let accept = core.inbound_accept(app_port)?;
        let tcp_control = control.clone();
        let opaque = listeners::Opaque {
            when: Arc::new(move || tcp_control.inbound_tcp.load(std::sync::atomic::Ordering::Relaxed)),
            splice: Arc::new(tcp::inbound(control.clone(), core.metrics.clone(), app, None)),
        };
        let gate = self.gate("inbound");
        let (bound, tasks) = self
            .workers
            .listen("inbound", addr, || {
                let authz = core.authz(app_port);
                let svc = inbound::stack(control, self.guard, self.telemetry(Reporter::Destination), app, authz);
                let (accept, opaque, gate, stop) = (accept.clone(), opaque.clone(), gate.clone(), self.stop.clone());
                move |l| serve("inbound", l, accept, svc, Some(opaque), gate, stop)
            })
            .await?;
        announce("inbound", bound);
        Ok(tasks)
    }

    /// `--admin`: serves until `stop` (after the drain).
    async fn start_admin(
        &self,
        state: Arc<Admin>,
        stop: watch::Receiver<bool>,
    ) -> Result<Option<JoinHandle<()>>, MeshError> {
        let Some(addr) = self.args.admin else { return Ok(None) };
        let listener = bind("admin", addr).await?;
        announce("admin", listener.local_addr().unwrap_or(addr));
        let service = admin::service(state);
        Ok(Some(tokio::spawn(serve("admin", listener, Accept::Plain, service, None, self.gate("admin"), stop))))
    }
}

/// Serve what `args` asks for until SIGTERM or Ctrl-C, then drain. `log` is how the admin
/// endpoint's `/logging` changes the log filter.
pub async fn run(args: Args, log: LogControl) -> Result<(), MeshError> {
    let fd_limit = conn::raise_fd_limit();
    let limits = args.limits(fd_limit);
    tracing::debug!(fd_limit, ?limits, "connection limits");
    let ca_task = start_ca(&args).await?;
    if args.outbound.is_none()
        && args.gateway.is_none()
        && args.capture_outbound.is_none()
        && args.capture_inbound.is_none()
        && args.dns.is_none()
    {
        // Only the CA.
        if let Some(admin) = args.admin {
            tracing::warn!(%admin, "--admin is not served by a CA-only process (probe the CA's port instead)");
        }
        shutdown_signal().await;
        if let Some(t) = ca_task {
            t.abort();
        }
        return Ok(());
    }
    let core = start_core(&args).await?;
    let stdout = |format| match args.access_log_flush_interval {
        d if d.is_zero() => AccessLog::stdout(format),
        d => AccessLog::stdout_every(format, d),
    };
    // A sink always: Telemetry `accessLogging` may turn lines on where `--access-log off`
    // left them off (in Envoy's text format then).
    let access_log = Some(stdout(match args.access_log {
        AccessLogFormat::Json => Format::Json,
        AccessLogFormat::Text | AccessLogFormat::Off => Format::Text,
    }));
    let (stop_tx, stop) = watch::channel(false);
    let process = Process {
        args: &args,
        balance: core.balance(),
        connector: core.connector(),
        workers: workers::Workers::start(args.concurrency)?,
        core,
        limits,
        guard: guard::GuardLayer { max_body: args.max_request_bytes },
        access_log,
        stop,
    };
    let mut servers = process.start_outbound().await?;
    servers.extend(process.start_tcp().await?);
    servers.extend(process.start_capture_outbound().await?);
    servers.extend(process.start_capture_inbound().await?);
    servers.extend(process.start_dns().await?);
    servers.extend(process.start_gateway().await?);
    servers.extend(process.start_inbound().await?);
    let admin_state = Arc::new(Admin {
        role: if args.gateway.is_some() { Role::Gateway } else { Role::Sidecar },
        control: process.core.control.clone(),
        metrics: process.core.metrics.clone(),
        balance: process.balance.clone(),
        status: process.core.source.status(),
        log,
        ready: AtomicBool::new(true),
    });
    let (admin_stop_tx, admin_stop) = watch::channel(false);
    let admin_task = process.start_admin(admin_state.clone(), admin_stop).await?;

    shutdown_signal().await;
    tracing::info!(timeout = ?args.drain_timeout, "draining");
    admin_state.ready.store(false, std::sync::atomic::Ordering::Relaxed);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(args.drain_timeout, async {
        for s in servers {
            let _ = s.await;
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!("drain timeout reached; closing the remaining connections");
    }
    let _ = admin_stop_tx.send(true);
    if let Some(t) = admin_task {
        let _ = tokio::time::timeout(Duration::from_secs(1), t).await;
    }
    let Process { workers, core, access_log, .. } = process;
    drop(workers);
    drop(core);
    if let Some(log) = &access_log {
        log.flush();
    }
    if let Some(t) = ca_task {
        t.abort();
    }
    Ok(())
}

/// Tell whoever started us where each listener is (port 0 picks a free port).
fn announce(name: &str, addr: std::net::SocketAddr) {
    eprintln!("mesh-sidecar: {name} listening on {addr}");
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM; stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
