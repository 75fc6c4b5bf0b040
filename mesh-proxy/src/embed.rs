//! The mesh in-process: a Rust service links the layers instead of running beside a sidecar.
//! Its calls go through the client stack (routing, fault, timeout, retry, balancing, mTLS to
//! the callee, telemetry as `reporter="source"`); its own server is wrapped in the
//! server-side stack (mTLS per PeerAuthentication, telemetry as `reporter="destination"`,
//! JWT, authorization). Config is watched, certificates come from the mesh CA, and an admin
//! endpoint serves the metrics, exactly as a sidecar would. No proxy hop.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, atomic::AtomicBool},
};

use http::{Request, Response};
use mesh_authz::layer::AuthzLayer;
use mesh_core::{BoxBody, BoxError, api::Labels};
use mesh_mtls::{accept::MtlsAcceptor, config};
use mesh_route::layer::{BalanceLayer, RouteLayer};
use mesh_telemetry::layer::Reporter;
use tokio::{net::TcpListener, sync::watch};
use tower::{ServiceBuilder, util::BoxCloneSyncService};

use crate::{
    admin::{self, Admin, LogControl},
    conn::{Gate, Limits},
    core::{Core, CoreOptions},
    guard::GuardLayer,
    inbound,
    serve::{Accept, serve},
};

/// An in-process service: requests in, responses out.
pub type AppService = BoxCloneSyncService<Request<BoxBody>, Response<BoxBody>, BoxError>;

/// Who the embedding service is and where its config is (the sidecar's flags of the same
/// names).
#[derive(Clone, Debug)]
pub struct EmbedOptions {
    /// Config files and directories, watched.
    pub config: Vec<PathBuf>,
    /// Namespace (`default`).
    pub namespace: Option<String>,
    /// Pod labels.
    pub labels: Labels,
    /// Workload name (by default the Deployment with these labels).
    pub workload: Option<String>,
    /// Service account (by default the Deployment's).
    pub service_account: Option<String>,
    /// Where workloads run: (namespace, workload, address).
    pub endpoints: Vec<(String, String, SocketAddr)>,
    /// The mesh CA's directory.
    pub ca_dir: PathBuf,
    /// SPIFFE trust domain.
    pub trust_domain: String,
}

/// The running embedded mesh.
#[derive(Debug)]
pub struct Embedded {
    core: Core,
    balance: BalanceLayer,
}

impl Embedded {
    /// Start (inside a tokio runtime): load and watch the config, issue the certificate.
    pub fn start(o: &EmbedOptions) -> Result<Self, String> {
        let source = crate::core::open_files(&o.config)?;
        let core = Core::start(
            &CoreOptions {
                namespace: o.namespace.as_deref(),
                labels: Some(&o.labels),
                workload: o.workload.as_deref(),
                service_account: o.service_account.as_deref(),
                gateway: None,
                endpoints: &o.endpoints,
                ca_dir: &o.ca_dir,
                remote: None,
                trust_domain: &o.trust_domain,
                max_label_sets: mesh_telemetry::metrics::DEFAULT_MAX_LABEL_SETS,
                cert_ttl: crate::core::CERT_TTL,
            },
            source,
        )?;
        let balance = core.balance();
        Ok(Self { core, balance })
    }

    /// The client for calling other services by name (`http://ratings:9080/ratings/0`, or
    /// origin form with a Host header).
    pub fn client(&self) -> AppService {
        let client =
            self.core.client(RouteLayer::new(self.core.control.table.clone()), &self.core.connector(), &self.balance);
        BoxCloneSyncService::new(
            ServiceBuilder::new()
                .map_response(|r: Response<_>| r.map(mesh_core::body::boxed))
                .layer(self.core.telemetry(Reporter::Source, None))
                .service(client),
        )
    }

    /// Serve `app` on `listener` behind the server-side stack until `stop` turns true.
    /// `app_port` is the workload port policies name.
    pub async fn serve_inbound(
        &self,
        listener: TcpListener,
        app_port: u16,
        app: AppService,
        stop: watch::Receiver<bool>,
    ) {
        let control = &self.core.control;
        let server_config = match config::server_config(self.core.store.clone(), self.core.roots.clone()) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "TLS server config");
                return;
            }
        };
        let peer = control.clone();
        let accept = Accept::Mtls {
            acceptor: MtlsAcceptor::new(server_config),
            mode: Arc::new(move || peer.peer.load().mode(app_port)),
        };
        let authz =
            AuthzLayer::new(control.authz.clone(), app_port).with_on_decision(self.core.metrics.proxy.authz_hook());
        let svc = inbound::stack_with(
            control,
            GuardLayer { max_body: 100 * 1024 * 1024 },
            self.core.telemetry(Reporter::Destination, None),
            authz,
            app,
        );
        let gate = Gate::new("inbound", Limits::with_defaults(), &self.core.metrics.proxy.listeners);
        serve("inbound", listener, accept, svc, None, gate, stop).await;
    }

    /// Serve the admin pages (`/stats/prometheus`, `/config_dump`, `/clusters`, `/ready`)
    /// on `listener` until `stop` turns true.
    pub async fn serve_admin(&self, listener: TcpListener, stop: watch::Receiver<bool>) {
        let admin = Arc::new(Admin {
            control: self.core.control.clone(),
            metrics: self.core.metrics.clone(),
            balance: self.balance.clone(),
            status: self.core.source.status(),
            log: LogControl::new("(the host's)", |_| Err("the log level is the host program's".to_string())),
            ready: AtomicBool::new(true),
        });
        let svc = admin::service(admin);
        let gate = Gate::new("admin", Limits::with_defaults(), &self.core.metrics.proxy.listeners);
        serve("admin", listener, Accept::Plain, svc, None, gate, stop).await;
    }
}
