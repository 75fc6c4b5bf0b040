//! The mesh in-process: a Rust service links the layers instead of running beside a
//! sidecar. No proxy hop.
//!
//! [`Mesh::builder`] starts the mesh for one workload (config files or, with the feature
//! `k8s`, the Kubernetes API; the mesh CA; the workload's identity) and returns a [`Mesh`]
//! with what a service needs, as tower pieces:
//!
//! - [`Mesh::server_layer`]: the server side (the edge checks, telemetry as
//!   `reporter="destination"`, local replies, RequestAuthentication, AuthorizationPolicy) as
//!   a [`Layer`] for any `Service<Request<BoxBody>>`, an axum `Router` among them. Its
//!   service takes any request body and never fails (errors are local replies).
//! - [`Mesh::acceptor`]: mTLS per PeerAuthentication for the caller's own accept loop (the
//!   peer's identity is what [`mesh_mtls::server::WithConnection`] puts in each request);
//!   [`Mesh::serve`] is that loop, with the connection limits and graceful drain.
//! - [`Mesh::client`]: the client stack (routing, fault, timeout, retry, balancing, mTLS to
//!   the callee, telemetry as `reporter="source"`) as a tower `Service`.
//! - [`Mesh::admin`]: `/stats/prometheus`, `/config_dump`, `/clusters`, `/ready`,
//!   `/logging` as a service to mount, or [`Mesh::serve_admin`].
//!
//! Config is watched and certificates rotate exactly as in a sidecar.
//!
//! ```no_run
//! # async fn run(app: tower::util::BoxCloneSyncService<http::Request<mesh_core::BoxBody>, http::Response<mesh_core::BoxBody>, mesh_core::BoxError>) -> Result<(), mesh_proxy::MeshError> {
//! use mesh_proxy::embed::Mesh;
//! use tower::ServiceBuilder;
//!
//! let mesh = Mesh::builder().config("mesh/").label("app", "ratings").label("version", "v1").start().await?;
//! let svc = ServiceBuilder::new().layer(mesh.server_layer(9080)).service(app);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:9080").await.unwrap();
//! mesh.serve(listener, 9080, svc, std::future::pending()).await
//! # }
//! ```

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, atomic::AtomicBool},
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response};
use mesh_authz::layer::AuthzLayer;
use mesh_config::api::Labels;
use mesh_core::{BoxBody, BoxError, Identity, body::boxed};
use mesh_mtls::accept::{AcceptError, ServerIo};
use mesh_route::layer::{BalanceLayer, RouterLayer};

use crate::client::MeshClient;
use mesh_telemetry::{access_log::AccessLog, layer::Reporter, metrics::MeshMetrics};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
};
use tower::{Layer, Service, ServiceBuilder, ServiceExt, util::BoxCloneSyncService};

use crate::{
    MeshError,
    admin::{self, Admin, AdminService, LogControl, Role},
    conn::{Gate, Limits},
    guard::GuardLayer,
    inbound,
    serve::{Accept, serve},
    state::{CERT_TTL, ConfigFrom, TraceOptions, WorkloadMesh, WorkloadOptions},
};

/// The default request body limit (`mesh-sidecar --max-request-bytes`): 100 MiB.
pub const MAX_REQUEST_BYTES: u64 = 100 * 1024 * 1024;

/// How to start an embedded mesh: who the workload is, where its config and CA are, and
/// its limits. Every option has the `mesh-sidecar` flag of the same name and default.
#[derive(Clone, Debug)]
#[must_use]
pub struct MeshBuilder {
    config: Vec<PathBuf>,
    #[cfg(feature = "k8s")]
    kube: Option<(mesh_k8s::KubeOptions, Duration)>,
    namespace: Option<String>,
    labels: Labels,
    workload: Option<String>,
    service_account: Option<String>,
    endpoints: Vec<(String, String, SocketAddr)>,
    ca_dir: PathBuf,
    trust_domain: String,
    max_label_sets: usize,
    cert_ttl: Duration,
    limits: Limits,
    max_request_bytes: u64,
    access_log: Option<AccessLog>,
    mesh_config: Option<PathBuf>,
    tracing: TraceOptions,
}

impl Default for MeshBuilder {
    fn default() -> Self {
        Self {
            config: Vec::new(),
            #[cfg(feature = "k8s")]
            kube: None,
            namespace: None,
            labels: Labels::new(),
            workload: None,
            service_account: None,
            endpoints: Vec::new(),
            ca_dir: PathBuf::from(".mesh/ca"),
            trust_domain: "cluster.local".into(),
            max_label_sets: mesh_telemetry::metrics::DEFAULT_MAX_LABEL_SETS,
            cert_ttl: CERT_TTL,
            limits: Limits::with_defaults(),
            max_request_bytes: MAX_REQUEST_BYTES,
            access_log: None,
            mesh_config: None,
            tracing: TraceOptions::default(),
        }
    }
}

impl MeshBuilder {
    /// A config file or directory of Istio and Kubernetes YAML, watched (repeat for several).
    pub fn config(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.push(path.into());
        self
    }

    /// Read the config and the registry from the Kubernetes API server instead of files,
    /// waiting at most `ready_timeout` for the first full list.
    #[cfg(feature = "k8s")]
    pub fn kube(mut self, options: mesh_k8s::KubeOptions, ready_timeout: Duration) -> Self {
        self.kube = Some((options, ready_timeout));
        self
    }

    /// The workload's namespace (`default`).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// One of the workload's pod labels (selectors of policies and routes match them).
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// The workload's name in telemetry; by default the Deployment its labels match.
    pub fn workload(mut self, name: impl Into<String>) -> Self {
        self.workload = Some(name.into());
        self
    }

    /// The service account (its SPIFFE identity); by default the Deployment's.
    pub fn service_account(mut self, name: impl Into<String>) -> Self {
        self.service_account = Some(name.into());
        self
    }

    /// Where a workload runs on this machine (`mesh-sidecar --endpoint NS/WORKLOAD=ADDR`).
    pub fn endpoint(mut self, namespace: impl Into<String>, workload: impl Into<String>, addr: SocketAddr) -> Self {
        self.endpoints.push((namespace.into(), workload.into(), addr));
        self
    }

    /// Istio's mesh config file (`MeshConfig` YAML): its `envoyExtAuthzHttp` providers
    /// answer CUSTOM AuthorizationPolicies.
    pub fn mesh_config(mut self, path: impl Into<PathBuf>) -> Self {
        self.mesh_config = Some(path.into());
        self
    }

    /// The mesh CA's directory (`.mesh/ca`), created when missing.
    pub fn ca_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.ca_dir = dir.into();
        self
    }

    /// The SPIFFE trust domain (`cluster.local`).
    pub fn trust_domain(mut self, domain: impl Into<String>) -> Self {
        self.trust_domain = domain.into();
        self
    }

    /// Most label sets per request metric family (10,000).
    pub fn max_label_sets(mut self, n: usize) -> Self {
        self.max_label_sets = n;
        self
    }

    /// The workload certificate's lifetime (24 h); re-issued after two thirds of it.
    pub fn cert_ttl(mut self, ttl: Duration) -> Self {
        self.cert_ttl = ttl;
        self
    }

    /// The connection limits of [`Mesh::serve`] and [`Mesh::serve_admin`].
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The largest request body the server side accepts (`0`: no limit; 100 MiB).
    pub fn max_request_bytes(mut self, bytes: u64) -> Self {
        self.max_request_bytes = bytes;
        self
    }

    /// Write an access log line per request on both sides.
    pub fn access_log(mut self, log: AccessLog) -> Self {
        self.access_log = Some(log);
        self
    }

    /// Percentage of new traces sampled (Istio's `defaultConfig.tracing.sampling`; 1 by
    /// default). Checked by [`MeshBuilder::start`].
    pub fn trace_sampling(mut self, percent: f64) -> Self {
        self.tracing.sampling = percent;
        self
    }

    /// Send a span per request and side to this OTLP/HTTP collector
    /// (`http://HOST:4318/v1/traces`). Needs the `otel` feature ([`MeshBuilder::start`] says
    /// so otherwise).
    pub fn otlp_endpoint(mut self, url: impl Into<String>) -> Self {
        self.tracing.otlp_endpoint = Some(url.into());
        self
    }

    /// Load (and watch) the config, settle who the workload is, issue its certificate.
    /// Must run inside a tokio runtime.
    pub async fn start(self) -> Result<Mesh, MeshError> {
        #[cfg(feature = "k8s")]
        let from = match &self.kube {
            Some((options, ready_timeout)) => {
                ConfigFrom::Kube { options: options.clone(), ready_timeout: *ready_timeout }
            }
            None => ConfigFrom::Files(&self.config),
        };
        #[cfg(not(feature = "k8s"))]
        let from = ConfigFrom::Files(&self.config);
        let source = from.open().await?;
        let core = WorkloadMesh::start(
            &WorkloadOptions {
                namespace: self.namespace.as_deref(),
                labels: Some(&self.labels),
                workload: self.workload.as_deref(),
                service_account: self.service_account.as_deref(),
                gateway: None,
                endpoints: &self.endpoints,
                ca_dir: &self.ca_dir,
                remote: None,
                trust_domain: &self.trust_domain,
                max_label_sets: self.max_label_sets,
                cert_ttl: self.cert_ttl,
                tracing: &self.tracing,
                access_log: self.access_log.is_some(),
                mesh_config: self.mesh_config.as_deref(),
            },
            source,
        )?;
        let balance = core.balance();
        Ok(Mesh {
            core,
            balance,
            guard: GuardLayer { max_body: self.max_request_bytes },
            limits: self.limits,
            access_log: self.access_log,
        })
    }
}

/// The running embedded mesh (see the module docs). Dropping it stops watching the config.
#[derive(Debug)]
pub struct Mesh {
    core: WorkloadMesh,
    balance: BalanceLayer,
    guard: GuardLayer,
    limits: Limits,
    access_log: Option<AccessLog>,
}

impl Mesh {
    /// Start here.
    pub fn builder() -> MeshBuilder {
        MeshBuilder::default()
    }

    /// This workload's SPIFFE identity.
    pub fn identity(&self) -> &Identity {
        &self.core.me.identity
    }

    /// The metrics both sides record into (Istio's families and the proxy's own).
    pub fn metrics(&self) -> &Arc<MeshMetrics> {
        &self.core.metrics
    }

    /// The server side for the app served on `app_port` (the workload port that policies'
    /// `ports` and `portLevelMtls` name): edge checks (body limit, method case, one Host),
    /// telemetry as `reporter="destination"`, local replies, JWT, authorization.
    pub fn server_layer(&self, app_port: u16) -> ServerLayer {
        let control = &self.core.control;
        ServerLayer {
            guard: self.guard,
            telemetry: self.core.telemetry(Reporter::Destination, self.access_log.as_ref()),
            authz: self.core.authz(app_port),
            control: control.clone(),
        }
    }

    /// mTLS for connections to `app_port`, as the PeerAuthentication in force when each
    /// connection arrives says (STRICT, PERMISSIVE, DISABLE).
    pub fn acceptor(&self, app_port: u16) -> Result<MeshAcceptor, MeshError> {
        Ok(MeshAcceptor(self.core.inbound_accept(app_port)?))
    }

    /// Serve `service` (already behind [`Mesh::server_layer`], or any service of the
    /// caller's) on `listener` with mTLS per [`Mesh::acceptor`], HTTP/1.1 and HTTP/2, the
    /// connection limits and each request's peer identity, until `shutdown` completes;
    /// then drain the open connections.
    pub async fn serve<S, ResB>(
        &self,
        listener: TcpListener,
        app_port: u16,
        service: S,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), MeshError>
    where
        S: Service<Request<hyper::body::Incoming>, Response = Response<ResB>> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        ResB: http_body::Body<Data = Bytes> + Send + 'static,
        ResB::Error: Into<BoxError>,
    {
        let accept = self.core.inbound_accept(app_port)?;
        let gate = Gate::new("inbound", self.limits, &self.core.metrics.proxy.listeners);
        let service = service.map_response(|r: Response<ResB>| r.map(boxed));
        serve("inbound", listener, accept, service, None, gate, stop_on(shutdown)).await;
        Ok(())
    }

    /// The client for calling other services by name (`http://ratings:9080/ratings/0`, or
    /// origin form with a Host header).
    pub fn client(&self) -> Client {
        let client =
            self.core.client(RouterLayer::new(self.core.control.table.clone()), &self.core.connector(), &self.balance);
        Client(BoxCloneSyncService::new(
            ServiceBuilder::new()
                .map_response(|r: Response<_>| r.map(boxed))
                .layer(self.core.telemetry(Reporter::Source, self.access_log.as_ref()))
                .service::<MeshClient>(client),
        ))
    }

    /// The admin pages as a service to mount where the caller likes.
    pub fn admin(&self) -> AdminService {
        admin::service(Arc::new(Admin {
            role: Role::Embedded,
            control: self.core.control.clone(),
            metrics: self.core.metrics.clone(),
            balance: self.balance.clone(),
            status: self.core.source.status(),
            log: LogControl::new("(the host's)", |_| Err("the log level is the host program's".into())),
            ready: AtomicBool::new(true),
        }))
    }

    /// Serve [`Mesh::admin`] on `listener` until `shutdown` completes.
    pub async fn serve_admin(&self, listener: TcpListener, shutdown: impl Future<Output = ()> + Send + 'static) {
        let gate = Gate::new("admin", self.limits, &self.core.metrics.proxy.listeners);
        serve("admin", listener, Accept::Plain, self.admin(), None, gate, stop_on(shutdown)).await;
    }
}

/// A `watch` that turns true when `shutdown` completes.
fn stop_on(shutdown: impl Future<Output = ()> + Send + 'static) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            () = shutdown => { let _ = tx.send(true); }
            // Nobody listens any more: the server is gone.
            () = tx.closed() => {}
        }
    });
    rx
}

/// mTLS per PeerAuthentication for a caller's own accept loop.
#[derive(Clone)]
pub struct MeshAcceptor(Accept);

impl std::fmt::Debug for MeshAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshAcceptor").finish_non_exhaustive()
    }
}

impl MeshAcceptor {
    /// The TLS handshake (or none, as the mode in force says), and the peer's verified
    /// identity. Serve the stream with hyper; wrap the service in
    /// [`mesh_mtls::server::WithConnection`] so that each request carries the identity.
    pub async fn accept(&self, tcp: TcpStream) -> Result<(ServerIo, Option<Identity>), AcceptError> {
        match self.0.now() {
            Some(Accept::Mtls { acceptor, mode }) => acceptor.accept(tcp, mode()).await,
            Some(_) => Ok((ServerIo::plain(tcp), None)),
            None => Err(AcceptError::Io(std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "not accepting"))),
        }
    }
}

/// The client stack as a tower service over any request body. It never fails: a request it
/// cannot send is answered with Envoy's local reply (`404 NR`, `503 UH`, ...).
#[derive(Clone, Debug)]
pub struct Client(MeshClient);

impl<B> Service<Request<B>> for Client
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<BoxBody>;
    type Error = Infallible;
    type Future = <MeshClient as Service<Request<BoxBody>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        self.0.call(req.map(boxed))
    }
}

/// [`Mesh::server_layer`].
#[derive(Clone)]
pub struct ServerLayer {
    guard: GuardLayer,
    telemetry: mesh_telemetry::layer::TelemetryLayer,
    authz: AuthzLayer,
    control: Arc<crate::compiled::CompiledConfig>,
}

impl std::fmt::Debug for ServerLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerLayer").finish_non_exhaustive()
    }
}

impl<S, ResB> Layer<S> for ServerLayer
where
    S: Service<Request<BoxBody>, Response = Response<ResB>> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    ResB: http_body::Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    type Service = Server;

    fn layer(&self, app: S) -> Server {
        let app = BoxCloneSyncService::new(app.map_response(|r| r.map(boxed)).map_err(Into::into));
        // The stack answers its own failures at its edge, below the telemetry: it never
        // fails (`Infallible`, as axum's `Router::layer` wants).
        Server(inbound::stack_with(&self.control, self.guard, self.telemetry.clone(), self.authz.clone(), app))
    }
}

/// The server side around an app: any request body in, never an error out (a failure is
/// a local reply, as at a sidecar).
#[derive(Clone, Debug)]
pub struct Server(Inner);

type Inner = inbound::Inbound<BoxBody>;

impl<B> Service<Request<B>> for Server
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<BoxBody>;
    type Error = Infallible;
    type Future = <Inner as Service<Request<BoxBody>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        self.0.call(req.map(boxed))
    }
}
