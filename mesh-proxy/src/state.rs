//! What every way of running the mesh shares: the watched config, who this workload is, the
//! compiled control state, metrics, the workload certificate; and the stacks built on them.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use mesh_authz::layer::{AuthzLayer, ExtAuthzHttp};
use mesh_config::{
    ConfigSource, DirectorySource,
    api::{
        Labels,
        mesh::{MeshConfig, OutboundTrafficMode},
    },
    registry::{LocalWorkload, Locator},
    source::{DirectoryOptions, InitialLoadError},
};
use mesh_mtls::{
    ca::{CertificateAuthority, IssuedCert},
    config,
    connector::MeshConnector,
    remote::RemoteCa,
    store::CertStore,
};
use mesh_route::{
    layer::{BalanceLayer, RetryLayer, RouterLayer},
    policy::ProxyContext,
};
use mesh_telemetry::{
    access_log::AccessLog,
    layer::{Reporter, TelemetryLayer, WorkloadInfo},
    metrics::MeshMetrics,
};
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;

use crate::{
    MeshError,
    client::{ClientBuilder, HttpClientStack, MeshClient},
    compiled::CompiledConfig,
};

/// Workload certificates live a day (Istio's `SECRET_TTL`) and are re-issued after two
/// thirds of their life; `--cert-ttl` sets it.
pub(crate) const CERT_TTL: Duration = Duration::from_secs(24 * 3600);

/// Where the config comes from.
#[derive(Clone, Debug)]
pub(crate) enum ConfigFrom<'a> {
    /// Files and directories, watched.
    Files(&'a [PathBuf]),
    /// A cluster's API server.
    #[cfg(feature = "k8s")]
    Kube { options: mesh_k8s::KubeOptions, ready_timeout: Duration },
}

impl ConfigFrom<'_> {
    /// Start the source; for a cluster, wait for its first full list.
    pub(crate) async fn open(&self) -> Result<Box<dyn ConfigSource>, MeshError> {
        match self {
            ConfigFrom::Files(paths) => open_files(paths),
            #[cfg(feature = "k8s")]
            ConfigFrom::Kube { options, ready_timeout } => {
                use mesh_k8s::{KubeSource, client};
                let client = client().await.map_err(|e| MeshError::Config(format!("the API server: {e}")))?;
                let mut options = options.clone();
                if options.load.rules.is_empty() {
                    options.load.rules = crate::config::rules();
                }
                let source = KubeSource::start(client, options)
                    .await
                    .map_err(|e| MeshError::Config(format!("the API server: {e}")))?;
                if !source.wait_ready(*ready_timeout).await {
                    return Err(MeshError::Config(format!(
                        "the API server's resources were not all listed within {ready_timeout:?}"
                    )));
                }
                Ok(Box::new(source))
            }
        }
    }
}

/// Load and watch files and directories.
pub(crate) fn open_files(paths: &[PathBuf]) -> Result<Box<dyn ConfigSource>, MeshError> {
    let options = DirectoryOptions { load: crate::config::load_options("default"), ..DirectoryOptions::default() };
    let source = DirectorySource::start(paths.to_vec(), options).map_err(|e| {
        MeshError::Config(match e.downcast_ref::<InitialLoadError>() {
            Some(_) => e.to_string(),
            None => format!("cannot watch the config: {e}"),
        })
    })?;
    Ok(Box::new(source))
}

/// How to start: the flags that say who the workload is and where its config is.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WorkloadOptions<'a> {
    pub(crate) namespace: Option<&'a str>,
    pub(crate) labels: Option<&'a Labels>,
    pub(crate) workload: Option<&'a str>,
    pub(crate) service_account: Option<&'a str>,
    /// `NS/NAME` of the Gateway this proxy serves.
    pub(crate) gateway: Option<&'a str>,
    pub(crate) endpoints: &'a [(String, String, SocketAddr)],
    pub(crate) ca_dir: &'a Path,
    /// The certificate from a cluster's CA, instead of issuing from `ca_dir`.
    pub(crate) remote: Option<&'a RemoteCert>,
    pub(crate) trust_domain: &'a str,
    /// Cap of label sets per request metric family (`--max-label-sets`).
    pub(crate) max_label_sets: usize,
    /// Lifetime of the workload certificates issued from `ca_dir` or renewed from a
    /// cluster's CA (`--cert-ttl`); each is re-issued after two thirds of it.
    pub(crate) cert_ttl: Duration,
    /// Sampling of new traces and where spans go.
    pub(crate) tracing: &'a TraceOptions,
    /// Access logs where no Telemetry `accessLogging` says otherwise (Istio's
    /// `meshConfig.accessLogFile`).
    pub(crate) access_log: bool,
    /// Istio's mesh config (`--mesh-config`): its `envoyExtAuthzHttp` providers answer
    /// CUSTOM AuthorizationPolicies.
    pub(crate) mesh_config: Option<&'a Path>,
}

/// Istio's mesh config from `path` ([`mesh_config::load::mesh_config`]), its errors naming
/// the file, line and field; none: the defaults.
pub(crate) fn read_mesh_config(path: Option<&Path>) -> Result<MeshConfig, MeshError> {
    let Some(path) = path else { return Ok(MeshConfig::default()) };
    let label = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| MeshError::Config(format!("{label}: {e}")))?;
    let mesh = mesh_config::load::mesh_config(&label, &text, &Default::default())
        .map_err(|d| MeshError::Config(d.to_string()))?;
    for field in not_applied(&mesh) {
        tracing::warn!("{label}: {field} is not applied yet; the mesh behaves as without it");
    }
    Ok(mesh)
}

/// The mesh config's fields that are set and that the proxy does not apply (it applies
/// `outboundTrafficPolicy.mode` and the `envoyExtAuthzHttp` providers): said, never silent.
pub(crate) fn not_applied(mesh: &MeshConfig) -> Vec<String> {
    let mut out = Vec::new();
    let mut set = |on: bool, name: &str| {
        if on {
            out.push(name.to_string());
        }
    };
    set(mesh.trust_domain.is_some(), "trustDomain");
    set(!mesh.trust_domain_aliases.is_empty(), "trustDomainAliases");
    set(mesh.root_namespace.is_some(), "rootNamespace");
    set(mesh.default_http_retry_policy.is_some(), "defaultHttpRetryPolicy");
    set(mesh.enable_auto_mtls.is_some(), "enableAutoMtls");
    set(mesh.access_log_file.is_some(), "accessLogFile");
    set(mesh.access_log_encoding.is_some(), "accessLogEncoding");
    set(mesh.access_log_format.is_some(), "accessLogFormat");
    set(mesh.default_providers.is_some(), "defaultProviders");
    set(mesh.default_config.is_some(), "defaultConfig");
    for (i, p) in mesh.extension_providers.iter().enumerate() {
        if p.envoy_ext_authz_http.is_none() {
            out.push(format!("extensionProviders[{i}] ({}): only envoyExtAuthzHttp providers are applied", p.name));
        }
    }
    out.extend(mesh.other.keys().cloned());
    out
}

#[cfg(test)]
mod mesh_config_tests {
    #[test]
    fn what_the_mesh_config_sets_and_the_proxy_does_not_apply_is_said() {
        let text = "trustDomain: example.org\noutboundTrafficPolicy: {mode: REGISTRY_ONLY}\nenableTracing: true\nextensionProviders:\n- name: a\n  envoyExtAuthzHttp: {service: a, port: 1}\n- name: otel\n  opentelemetry: {service: o, port: 4317}\n";
        let mesh = mesh_config::load::mesh_config("m.yaml", text, &Default::default()).unwrap();
        assert_eq!(
            super::not_applied(&mesh),
            [
                "trustDomain",
                "extensionProviders[1] (otel): only envoyExtAuthzHttp providers are applied",
                "enableTracing"
            ]
        );
        assert!(super::not_applied(&Default::default()).is_empty());
    }
}

/// Tracing as Istio's mesh config sets it: the share of new traces sampled
/// (`defaultConfig.tracing.sampling`, 1 % by default) and the collector spans are sent to
/// (OTLP/HTTP, `http://HOST:PORT/v1/traces`; none: no spans, trace headers still
/// propagated).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct TraceOptions {
    /// Percentage of new traces sampled, 0 to 100.
    pub(crate) sampling: f64,
    /// The OTLP/HTTP collector's URL.
    pub(crate) otlp_endpoint: Option<String>,
}

impl Default for TraceOptions {
    fn default() -> Self {
        Self { sampling: 1.0, otlp_endpoint: None }
    }
}

impl TraceOptions {
    /// Check the values.
    pub(crate) fn check(&self) -> Result<(), MeshError> {
        if !(0.0..=100.0).contains(&self.sampling) {
            return Err(MeshError::Config(format!(
                "trace sampling {} is not a percentage between 0 and 100",
                self.sampling
            )));
        }
        if let Some(url) = &self.otlp_endpoint {
            let uri: http::Uri = url.parse().map_err(|e| MeshError::Config(format!("OTLP endpoint `{url}`: {e}")))?;
            if uri.scheme_str() != Some("http") || uri.authority().is_none() {
                return Err(MeshError::Config(format!(
                    "OTLP endpoint `{url}`: give http://HOST:PORT/v1/traces (OTLP over HTTP, protobuf)"
                )));
            }
            if cfg!(not(feature = "otel")) {
                return Err(MeshError::Config(format!(
                    "OTLP endpoint `{url}`: this build has no span export (the `otel` feature)"
                )));
            }
        }
        Ok(())
    }
}

/// A workload certificate obtained from a cluster's mesh CA, and how to renew it.
#[derive(Clone, Debug)]
pub(crate) struct RemoteCert {
    pub(crate) first: IssuedCert,
    pub(crate) ca: Arc<RemoteCa>,
    pub(crate) roots: Arc<RootCertStore>,
}

impl RemoteCert {
    /// Ask the CA (`--ca-address`), retrying for a minute while it is not up yet.
    pub(crate) async fn obtain(address: &str, token_file: &Path, root_file: &Path) -> Result<Self, MeshError> {
        let root_err =
            |message: String| MeshError::Ca { location: format!("--ca-root-file {}", root_file.display()), message };
        let pem = std::fs::read(root_file).map_err(|e| root_err(e.to_string()))?;
        let certs: Vec<_> = rustls_pki_types::CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<_, _>>()
            .map_err(|e| root_err(e.to_string()))?;
        if certs.is_empty() {
            return Err(root_err("no certificate in it".into()));
        }
        let roots = config::roots(&certs).map_err(|e| root_err(e.to_string()))?;
        let ca = Arc::new(
            RemoteCa::new(address, roots.clone(), token_file.to_path_buf())
                .map_err(|e| MeshError::Ca { location: address.to_string(), message: e.to_string() })?,
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            match ca.issue(CERT_TTL).await {
                Ok(first) => return Ok(Self { first, ca, roots }),
                Err(e) if e.is_retryable() && tokio::time::Instant::now() < deadline => {
                    tracing::warn!(error = %e, "no workload certificate yet; retrying");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                Err(e) => return Err(MeshError::Certificate(e.to_string())),
            }
        }
    }
}

/// The running core.
pub(crate) struct WorkloadMesh {
    /// Dropping it stops the watching.
    pub(crate) source: Box<dyn ConfigSource>,
    pub(crate) control: Arc<CompiledConfig>,
    pub(crate) metrics: Arc<MeshMetrics>,
    pub(crate) store: Arc<CertStore>,
    pub(crate) roots: Arc<RootCertStore>,
    pub(crate) me: LocalWorkload,
    /// The mesh config's HTTP external authorizers, by name.
    ext_authz: Vec<ExtAuthzHttp>,
    /// The mesh config's `outboundTrafficPolicy` (ALLOW_ANY when absent).
    pub(crate) outbound_policy: OutboundTrafficMode,
    #[cfg(feature = "otel")]
    otlp: Option<mesh_telemetry::otlp::OtlpExporter>,
}

impl std::fmt::Debug for WorkloadMesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkloadMesh").field("me", &self.me).finish_non_exhaustive()
    }
}

impl WorkloadMesh {
    /// From the config `source` ([`ConfigFrom::open`]): resolve the workload, compile,
    /// and issue its certificate. Must run inside a tokio runtime.
    pub(crate) fn start(o: &WorkloadOptions<'_>, source: Box<dyn ConfigSource>) -> Result<Self, MeshError> {
        o.tracing.check()?;
        let mesh = read_mesh_config(o.mesh_config)?;
        let outbound_policy = mesh.outbound_traffic_policy.map(|p| p.mode).unwrap_or_default();
        let ext_authz = ExtAuthzHttp::from_mesh_config(&mesh).map_err(|e| {
            MeshError::Config(format!("{}: {e}", o.mesh_config.map_or(String::new(), |p| p.display().to_string())))
        })?;
        for w in &source.status().borrow().warnings {
            tracing::warn!("{w}");
        }
        let snapshot = source.snapshots().borrow().clone();
        // An Istio Gateway defaults to Istio's ingress gateway: its namespace, the Gateway's
        // selector as its labels, its service account. A Gateway API Gateway to what Istio's
        // controller deploys for it: the Gateway's namespace, the label
        // `gateway.networking.k8s.io/gateway-name`, the Deployment and service account
        // `NAME-CLASS`.
        let gateway_defaults: Option<(String, mesh_core::Labels, String, Option<String>)> = match o.gateway {
            Some(g) => {
                use mesh_config::api::{Kind, Resource};
                let (ns, name) =
                    g.split_once('/').ok_or_else(|| MeshError::Workload(format!("--gateway `{g}` is not NS/NAME")))?;
                let istio = snapshot.get(Kind::Gateway, ns, name);
                let api = snapshot.get(Kind::KubernetesGateway, ns, name);
                match (istio.map(|r| &**r), api.map(|r| &**r)) {
                    (Some(_), Some(_)) => {
                        return Err(MeshError::Workload(format!(
                            "--gateway {ns}/{name} names two Gateways: the Istio Gateway {ns}/{name} (networking.istio.io) and the Gateway API Gateway {ns}/{name} (gateway.networking.k8s.io); rename one"
                        )));
                    }
                    (Some(Resource::Gateway(gw)), None) => Some((
                        "istio-system".into(),
                        gw.spec.selector.clone(),
                        "istio-ingressgateway-service-account".into(),
                        None,
                    )),
                    (None, Some(Resource::KubernetesGateway(gw))) => Some((
                        ns.to_string(),
                        [("gateway.networking.k8s.io/gateway-name".to_string(), name.to_string())].into(),
                        format!("{name}-{}", gw.spec.gateway_class_name),
                        Some(format!("{name}-{}", gw.spec.gateway_class_name)),
                    )),
                    _ => {
                        return Err(MeshError::Workload(format!(
                            "--gateway {ns}/{name}: no such Gateway in the config"
                        )));
                    }
                }
            }
            None => None,
        };
        let namespace = o.namespace.map(str::to_string).unwrap_or_else(|| match &gateway_defaults {
            Some((ns, _, _, _)) => ns.clone(),
            None => "default".into(),
        });
        let labels =
            o.labels.cloned().or_else(|| gateway_defaults.as_ref().map(|(_, l, _, _)| l.clone())).unwrap_or_default();
        let me = LocalWorkload::resolve(
            &snapshot,
            &namespace,
            &labels,
            o.workload.or(gateway_defaults.as_ref().and_then(|(_, _, _, w)| w.as_deref())),
            o.service_account,
            gateway_defaults.as_ref().map_or("default", |(_, _, sa, _)| sa.as_str()),
            o.trust_domain,
        )
        .map_err(|e| MeshError::Workload(e.to_string()))?;
        let mut locator = Locator::new().with_trust_domain(o.trust_domain);
        for (ns, workload, addr) in o.endpoints {
            locator.insert(ns, workload, *addr);
        }
        let ctx = match o.gateway.and_then(|g| g.split_once('/')) {
            Some((ns, name)) => ProxyContext::gateway(ns, name),
            None => ProxyContext::sidecar(&me.namespace, me.labels.clone()),
        };
        let control = CompiledConfig::new(snapshot, me.clone(), locator, ctx, o.tracing.sampling, o.access_log);
        control.follow(source.snapshots());
        tracing::info!(workload = %me.workload, namespace = %me.namespace, identity = %me.identity, "starting");

        let metrics = Arc::new(MeshMetrics::new().with_max_label_sets(o.max_label_sets));
        metrics.proxy.follow_source(source.status());

        // Identity: a workload certificate from the cluster's CA, or from the machine's,
        // kept fresh.
        let (store, roots) = match o.remote {
            Some(remote) => {
                let store = CertStore::new(&remote.first).map_err(|e| MeshError::Certificate(e.to_string()))?;
                let issued = store.identity();
                if issued.as_ref() != Some(&me.identity) {
                    return Err(MeshError::Certificate(format!(
                        "the CA issued {} for this pod's token, but this workload is {} (check --namespace and --service-account)",
                        issued.map_or_else(|| "no SPIFFE identity".into(), |i| i.to_string()),
                        me.identity
                    )));
                }
                remote.ca.clone().rotate(&store, o.cert_ttl);
                (store, remote.roots.clone())
            }
            None => {
                let ca_err = |e: &dyn std::fmt::Display| MeshError::Ca {
                    location: format!("in {}", o.ca_dir.display()),
                    message: e.to_string(),
                };
                let ca = CertificateAuthority::load_or_create(o.ca_dir, o.trust_domain).map_err(|e| ca_err(&e))?;
                let cert = ca
                    .issue(&me.identity, o.cert_ttl)
                    .map_err(|e| MeshError::Certificate(format!("issuing {}: {e}", me.identity)))?;
                let store = CertStore::new(&cert).map_err(|e| MeshError::Certificate(e.to_string()))?;
                let roots = config::roots([ca.root()]).map_err(|e| ca_err(&e))?;
                store.rotate_from(Arc::new(ca), me.identity.clone(), o.cert_ttl);
                (store, roots)
            }
        };
        if let Some(t) = store.not_after() {
            metrics.proxy.set_cert_expiry(t);
        }
        // Spans go out as Istio's proxies name their service: `<app>.<namespace>`.
        #[cfg(feature = "otel")]
        let otlp = o.tracing.otlp_endpoint.as_deref().map(|url| {
            let app = me.labels.get("app").map_or(me.workload.as_str(), String::as_str);
            mesh_telemetry::otlp::OtlpExporter::start(url, &format!("{app}.{}", me.namespace), Duration::from_secs(1))
        });
        Ok(Self {
            source,
            control,
            metrics,
            store,
            roots,
            me,
            ext_authz,
            outbound_policy,
            #[cfg(feature = "otel")]
            otlp,
        })
    }

    /// Authorization for the app on `app_port`: the AuthorizationPolicies in force, CUSTOM
    /// ones asking the mesh config's providers, each decision counted.
    pub(crate) fn authz(&self, app_port: u16) -> AuthzLayer {
        self.authz_layers()(app_port)
    }

    /// [`WorkloadMesh::authz`] for any app port, as a function a listener keeps.
    pub(crate) fn authz_layers(&self) -> impl Fn(u16) -> AuthzLayer + Send + Sync + 'static {
        let (policy, providers, hook) =
            (self.control.authz.clone(), self.ext_authz.clone(), self.metrics.proxy.authz_hook());
        move |port| {
            AuthzLayer::with_providers(policy.clone(), port, providers.clone(), 0).with_on_decision(hook.clone())
        }
    }
    /// The telemetry layer of this workload for one reporter.
    pub(crate) fn telemetry(&self, reporter: Reporter, access_log: Option<&AccessLog>) -> TelemetryLayer {
        let me = &self.me;
        let info = WorkloadInfo::from(me);
        let control = self.control.clone();
        // Peer metadata counts only when it fits the identity: a workload the registry knows
        // must run as that service account, and an identity the registry's workloads use
        // can claim only those workloads. Identities outside the registry (a gateway from
        // another install) are taken at their namespace.
        let check: mesh_telemetry::layer::PeerCheck = Arc::new(move |workload, namespace, id| {
            let registry = control.registry.load();
            match registry.workload(namespace, workload) {
                Some(w) => w.service_account == id.service_account(),
                None => {
                    !registry.workloads().any(|w| w.namespace == namespace && w.service_account == id.service_account())
                }
            }
        });
        let layer = TelemetryLayer::new(self.metrics.clone(), reporter, info)
            .with_local_service(self.control.inbound_service.clone())
            .with_peer_check(check)
            .with_trace_control(match reporter {
                Reporter::Source => self.control.trace_client.clone(),
                Reporter::Destination => self.control.trace_server.clone(),
            });
        #[cfg(feature = "otel")]
        let layer = match &self.otlp {
            Some(exporter) => layer.with_otlp(exporter.clone()),
            None => layer,
        };
        // Without a sink of the caller's, lines that Telemetry turns on go to stdout in
        // Envoy's format, as Istio's default provider writes them.
        let log = access_log.cloned().unwrap_or_else(|| AccessLog::stdout(mesh_telemetry::access_log::Format::Text));
        layer.with_access_log(log).with_log_control(match reporter {
            Reporter::Source => self.control.log_client.clone(),
            Reporter::Destination => self.control.log_server.clone(),
        })
    }

    /// How the inbound listener for `app_port` accepts: mTLS as the PeerAuthentication in
    /// force when each connection arrives says.
    pub(crate) fn inbound_accept(&self, app_port: u16) -> Result<crate::serve::Accept, MeshError> {
        self.inbound_acceptor()(app_port)
    }

    /// [`WorkloadMesh::inbound_accept`] for any app port, as a function a listener keeps.
    pub(crate) fn inbound_acceptor(
        &self,
    ) -> impl Fn(u16) -> Result<crate::serve::Accept, MeshError> + Send + Sync + 'static {
        let (store, roots, control) = (self.store.clone(), self.roots.clone(), self.control.clone());
        move |app_port| {
            let server_config = config::server_config(store.clone(), roots.clone())
                .map_err(|e| MeshError::Tls(format!("server config: {e}")))?;
            let control = control.clone();
            Ok(crate::serve::Accept::Mtls {
                acceptor: mesh_mtls::accept::MtlsAcceptor::new(server_config),
                mode: Arc::new(move || control.peer.load().mode(app_port)),
            })
        }
    }

    /// The balancer (its state shared by every stack built with it).
    pub(crate) fn balance(&self) -> BalanceLayer {
        BalanceLayer::new()
            .with_auto_mtls(true)
            .with_plaintext_endpoints(self.control.plaintext.clone())
            .with_on_ejection(self.metrics.proxy.ejection_hook())
    }

    /// The upstream connector: mTLS with secure naming from the current config.
    pub(crate) fn connector(&self) -> MeshConnector {
        MeshConnector::mtls(self.store.clone(), self.roots.clone(), self.control.naming.clone())
    }

    /// The client stack (route, fault, timeout, retry, balance, pooled mTLS connections).
    pub(crate) fn client(&self, route: RouterLayer, connector: &MeshConnector, balance: &BalanceLayer) -> MeshClient {
        MeshClient::new(self.client_unboxed(route, connector, balance))
    }

    /// [`WorkloadMesh::client`], unboxed: for a stack that erases its type once, at its edge.
    pub(crate) fn client_unboxed(
        &self,
        route: RouterLayer,
        connector: &MeshConnector,
        balance: &BalanceLayer,
    ) -> HttpClientStack<MeshConnector> {
        ClientBuilder::with_router(route)
            .balance(balance.clone())
            .retry(RetryLayer::per_route().with_on_retry(self.metrics.proxy.retry_hook()))
            .connect(connector.clone(), connector.clone().http1_only())
    }
}
