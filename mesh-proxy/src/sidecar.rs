//! The sidecar process: every listener `mesh-sidecar`'s flags ask for (outbound, plain TCP,
//! gateway, inbound, admin, the cluster CA), served on worker threads until SIGTERM drains them.
//! `mesh-sidecar` and `bookinfo sidecar` both run [`main_with`].

use std::{
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use mesh_authz::layer::AuthzLayer;
use mesh_route::layer::RouterLayer;
use mesh_telemetry::{
    access_log::{AccessLog, Format},
    layer::Reporter,
};
use tokio::sync::watch;

use crate::{
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

    let args = match Args::try_parse_from(args) {
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
        let new = EnvFilter::try_new(f).map_err(|e| e.to_string())?;
        handle.reload(new).map_err(|e| e.to_string())
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
fn kube_config(args: &Args) -> Result<ConfigFrom<'_>, String> {
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
        Err("--kube needs mesh-sidecar built with the feature `k8s`".into())
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

/// The mesh CA for a cluster's sidecars on `addr` (`--ca-listen`).
#[cfg(feature = "k8s")]
async fn start_ca(args: &Args, addr: std::net::SocketAddr) -> Result<tokio::task::JoinHandle<()>, String> {
    use mesh_k8s::ReviewError;
    use mesh_mtls::remote::{AUDIENCE, AuthError, Authenticate, CaService, ServiceAccount};

    /// TokenReview with the API server.
    struct Reviewer(mesh_k8s::TokenReviewer);
    impl Authenticate for Reviewer {
        fn authenticate(
            &self,
            token: String,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<ServiceAccount, AuthError>> + Send>> {
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

    let client = mesh_k8s::client().await.map_err(|e| e.to_string())?;
    let reviewer = Reviewer(mesh_k8s::TokenReviewer::new(client, vec![AUDIENCE.to_string()]));
    let ca = mesh_mtls::ca::CertificateAuthority::load_or_create(&args.ca_dir, &args.trust_domain)
        .map_err(|e| format!("mesh CA in {}: {e}", args.ca_dir.display()))?;
    let service = CaService::new(Arc::new(ca), Arc::new(reviewer));
    let names = if args.ca_server_names.is_empty() {
        ["mesh-ca.mesh-system.svc", "mesh-ca.mesh-system.svc.cluster.local", "localhost", "127.0.0.1"]
            .map(String::from)
            .to_vec()
    } else {
        args.ca_server_names.clone()
    };
    let tls = service.tls_config(&names).map_err(|e| format!("CA endpoint: {e}"))?;
    let listener = bind("ca", addr).await?;
    announce("ca", listener.local_addr().map_err(|e| format!("CA listener: {e}"))?);
    Ok(tokio::spawn(service.serve(listener, tls)))
}

/// Serve what `args` asks for until SIGTERM or Ctrl-C, then drain. `log` is how the admin
/// endpoint's `/logging` changes the log filter.
pub async fn run(args: Args, log: LogControl) -> Result<(), String> {
    let fd_limit = conn::raise_fd_limit();
    let limits = args.limits(fd_limit);
    tracing::debug!(fd_limit, ?limits, "connection limits");
    #[cfg(feature = "k8s")]
    let ca_task = match args.ca_listen {
        Some(addr) => Some(start_ca(&args, addr).await?),
        None => None,
    };
    #[cfg(not(feature = "k8s"))]
    let ca_task: Option<tokio::task::JoinHandle<()>> = match args.ca_listen {
        Some(_) => return Err("--ca-listen needs mesh-sidecar built with the feature `k8s`".into()),
        None => None,
    };
    if args.outbound.is_none() && args.gateway.is_none() {
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
    let remote = match (&args.ca_address, &args.ca_token_file, &args.ca_root_file) {
        (Some(address), Some(token), Some(root)) => Some(state::RemoteCert::obtain(address, token, root).await?),
        _ => None,
    };
    let from = if args.kube { kube_config(&args)? } else { ConfigFrom::Files(&args.config) };
    let source = from.open().await?;
    if args.kube
        && let Some(gw) = &args.gateway
    {
        wait_for_gateway(source.as_ref(), gw).await;
    }
    let core = WorkloadMesh::start(
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
        },
        source,
    )?;
    let WorkloadMesh { source, control, metrics, store, roots, .. } = &core;
    let (control, metrics, store, roots) = (control.clone(), metrics.clone(), store.clone(), roots.clone());
    let gate = |name| conn::Gate::new(name, limits, &metrics.proxy.listeners);
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
    let telemetry = |reporter| core.telemetry(reporter, access_log.as_ref());

    let guard = guard::GuardLayer { max_body: args.max_request_bytes };
    let (stop_tx, stop) = watch::channel(false);
    let mut servers = Vec::new();

    // Outbound.
    let balance = core.balance();
    let connector = core.connector();
    let client = |route: RouterLayer| core.client_unboxed(route, &connector, &balance);
    let workers = workers::Workers::start(args.concurrency)?;
    if let Some(addr) = args.outbound {
        let gate = gate("outbound");
        let (bound, tasks) = workers
            .listen("outbound", addr, || {
                let svc = outbound::stack(
                    guard,
                    telemetry(Reporter::Source),
                    client(RouterLayer::new(control.table.clone())),
                );
                let (gate, stop) = (gate.clone(), stop.clone());
                move |l| serve("outbound", l, Accept::Plain, svc, None, gate, stop)
            })
            .await?;
        announce("outbound", bound);
        servers.extend(tasks);
    }

    // Plain TCP for the app.
    let tcp_out = Arc::new(tcp::Outbound {
        control: control.clone(),
        connector: connector.clone(),
        metrics: metrics.clone(),
        balance: balance.clone(),
    });
    for f in &args.tcp {
        let name = format!("tcp {}:{}", f.host, f.port);
        let gate = gate("tcp");
        let (bound, tasks) = workers
            .listen(&name, f.listen, || {
                let (out, f, gate, stop) = (tcp_out.clone(), f.clone(), gate.clone(), stop.clone());
                move |l| out.serve(l, f, gate, stop)
            })
            .await?;
        announce(&name, bound);
        servers.extend(tasks);
    }

    // Gateway: one listener per `--listen`, routing by its Gateway server port; its TLS and
    // httpsRedirect follow the Gateway as it changes.
    if let Some(gw) = &args.gateway {
        let creds =
            gateway::Credentials { dir: args.credential_dir.clone(), mesh: Some((store.clone(), roots.clone())) };
        let snapshot = control.snapshot.load_full();
        let plans = gateway::plan(&snapshot, gw, &args.listen, &creds)?;
        let live = Arc::new(gateway::LiveListeners::new(&snapshot, gw, creds, &plans));
        for (index, plan) in plans.iter().enumerate() {
            let name = format!("gateway {}", plan.port);
            let gate = gate("gateway");
            let serving = live.serving(index);
            let accept = {
                let serving = serving.clone();
                Accept::Live(Arc::new(move || serving.load().accept.clone()))
            };
            let (bound, tasks) = workers
                .listen(&name, plan.addr, || {
                    let route =
                        RouterLayer::new(control.table.clone()).with_listener_port(plan.port).with_connection_scheme();
                    let svc = gateway::RedirectOr::new(
                        serving.clone(),
                        outbound::stack(guard, telemetry(Reporter::Source), client(route)),
                    );
                    let (accept, gate, stop) = (accept.clone(), gate.clone(), stop.clone());
                    move |l| serve("gateway", l, accept, svc, None, gate, stop)
                })
                .await?;
            announce(&name, bound);
            servers.extend(tasks);
        }
        // Ends when the config source does.
        live.follow(source.snapshots());
    }

    // Inbound.
    if let (Some(addr), Some(app)) = (args.inbound, args.app) {
        let app_port = app.port();
        let accept = core.inbound_accept(app_port)?;
        let tcp_control = control.clone();
        let opaque = listeners::Opaque {
            when: Arc::new(move || tcp_control.inbound_tcp.load(std::sync::atomic::Ordering::Relaxed)),
            splice: Arc::new(tcp::inbound(control.clone(), metrics.clone(), app)),
        };
        let gate = gate("inbound");
        let (bound, tasks) = workers
            .listen("inbound", addr, || {
                let authz =
                    AuthzLayer::new(control.authz.clone(), app_port).with_on_decision(metrics.proxy.authz_hook());
                let svc = inbound::stack(&control, guard, telemetry(Reporter::Destination), app, authz);
                let (accept, opaque, gate, stop) = (accept.clone(), opaque.clone(), gate.clone(), stop.clone());
                move |l| serve("inbound", l, accept, svc, Some(opaque), gate, stop)
            })
            .await?;
        announce("inbound", bound);
        servers.extend(tasks);
    }

    // Admin: serves until the drain is over.
    let admin_state = Arc::new(Admin {
        role: if args.gateway.is_some() { Role::Gateway } else { Role::Sidecar },
        control: control.clone(),
        metrics: metrics.clone(),
        balance,
        status: source.status(),
        log,
        ready: AtomicBool::new(true),
    });
    let (admin_stop_tx, admin_stop) = watch::channel(false);
    let admin_task = match args.admin {
        Some(addr) => {
            let listener = bind("admin", addr).await?;
            announce("admin", listener.local_addr().map_err(|e| format!("admin listener: {e}"))?);
            Some(tokio::spawn(serve(
                "admin",
                listener,
                Accept::Plain,
                admin::service(admin_state.clone()),
                None,
                gate("admin"),
                admin_stop,
            )))
        }
        None => None,
    };

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
