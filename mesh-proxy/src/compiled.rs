//! What the proxy compiles from each config snapshot: the registry, the route table, the
//! inbound policies (PeerAuthentication, RequestAuthentication, AuthorizationPolicy) and
//! the secure naming map. Everything is swapped atomically; a request sees one version.

use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use arc_swap::ArcSwap;
use mesh_authz::{
    jwt::JwtPolicy,
    policy::{AuthzPolicy, Traffic},
};
use mesh_config::{
    Snapshot,
    api::{OutboundMode, mesh::OutboundTrafficMode},
    registry::{LocalWorkload, Locator, Registry},
};
use mesh_core::{Identity, hash::FxHashSet};
use mesh_mtls::{
    connector::secure_naming,
    peer_auth::{self, PeerAuthn},
};
use mesh_route::{
    layer::TableHandle,
    policy::{ProxyContext, RouteTable},
};
use mesh_telemetry::{access_log::LogControl, policy::TelemetryPolicy, trace::TraceControl};
use tokio::sync::watch;

/// The compiled state, swapped whole on every snapshot.
pub(crate) struct CompiledConfig {
    pub(crate) me: LocalWorkload,
    locator: Locator,
    ctx: ProxyContext,
    pub(crate) snapshot: ArcSwap<Snapshot>,
    pub(crate) registry: ArcSwap<Registry>,
    pub(crate) table: TableHandle,
    pub(crate) authz: Arc<ArcSwap<AuthzPolicy>>,
    pub(crate) jwt: Arc<ArcSwap<JwtPolicy>>,
    pub(crate) peer: ArcSwap<PeerAuthn>,
    pub(crate) naming: Arc<ArcSwap<HashMap<SocketAddr, Vec<Identity>>>>,
    pub(crate) plaintext: Arc<ArcSwap<FxHashSet<SocketAddr>>>,
    /// The service (FQDN) this workload serves, for destination metrics of TCP connections.
    pub(crate) inbound_service: Arc<ArcSwap<Option<String>>>,
    /// Every port of the services selecting this workload is non-HTTP: inbound connections
    /// are spliced to the app as TCP.
    pub(crate) inbound_tcp: std::sync::atomic::AtomicBool,
    /// Tracing of the client side (outbound, a gateway's requests) and the server side
    /// (inbound): the Telemetry resources over the mesh config's default.
    pub(crate) trace_client: Arc<TraceControl>,
    pub(crate) trace_server: Arc<TraceControl>,
    /// `defaultConfig.tracing.sampling` (`--trace-sampling`).
    default_sampling: f64,
    /// Access logging of the client side and the server side: the Telemetry resources'
    /// `accessLogging` over the proxy's default.
    pub(crate) log_client: Arc<LogControl>,
    pub(crate) log_server: Arc<LogControl>,
    /// Access logs where no Telemetry says (`--access-log` not `off`).
    default_log: bool,
    /// The workload's Sidecar resource's `outboundTrafficPolicy`, over the mesh config's.
    pub(crate) sidecar_outbound: ArcSwap<Option<OutboundTrafficMode>>,
}

impl std::fmt::Debug for CompiledConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledConfig").field("me", &self.me).finish_non_exhaustive()
    }
}

struct Compiled {
    registry: Registry,
    table: RouteTable,
    authz: AuthzPolicy,
    jwt: JwtPolicy,
    peer: PeerAuthn,
    naming: HashMap<SocketAddr, Vec<Identity>>,
    plaintext: FxHashSet<SocketAddr>,
    inbound_service: Option<String>,
    inbound_tcp: bool,
    telemetry: TelemetryPolicy,
    sidecar_outbound: Option<OutboundTrafficMode>,
}

/// Where mesh-wide resources live (the mesh config's `rootNamespace`).
const ROOT_NAMESPACE: &str = "istio-system";

/// The services selecting this workload: the first one's FQDN, and whether all their
/// ports are non-HTTP.
fn inbound_protocol(registry: &Registry, me: &LocalWorkload) -> (Option<String>, bool) {
    let services: Vec<_> = registry.services_selecting(&me.namespace, &me.labels).collect();
    let tcp = !services.is_empty() && services.iter().flat_map(|s| &s.ports).all(|p| p.protocol.is_opaque());
    (services.first().map(|s| s.hostname.clone()), tcp)
}

fn compile(snapshot: &Snapshot, me: &LocalWorkload, locator: &Locator, ctx: &ProxyContext) -> Compiled {
    let registry = Registry::build(snapshot, locator);
    let table = RouteTable::compile(snapshot, &registry, ctx);
    for w in &table.warnings {
        tracing::warn!("{w}");
    }
    let inbound = inbound_protocol(&registry, me);
    Compiled {
        table,
        authz: AuthzPolicy::compile(snapshot, &me.namespace, &me.labels, Traffic::Http),
        jwt: JwtPolicy::compile(snapshot, &me.namespace, &me.labels),
        peer: PeerAuthn::compile(snapshot, &me.namespace, &me.labels),
        naming: secure_naming(&registry),
        plaintext: peer_auth::plaintext_endpoints(snapshot, &registry),
        inbound_service: inbound.0,
        inbound_tcp: inbound.1,
        telemetry: TelemetryPolicy::compile(snapshot, &me.namespace, &me.labels),
        sidecar_outbound: snapshot
            .sidecar_for(&me.namespace, &me.labels, ROOT_NAMESPACE)
            .and_then(|s| s.outbound_traffic_policy.as_ref())
            .and_then(|p| p.mode)
            .map(|m| match m {
                OutboundMode::AllowAny => OutboundTrafficMode::AllowAny,
                OutboundMode::RegistryOnly => OutboundTrafficMode::RegistryOnly,
            }),
        registry,
    }
}

impl CompiledConfig {
    pub(crate) fn new(
        snapshot: Arc<Snapshot>,
        me: LocalWorkload,
        locator: Locator,
        ctx: ProxyContext,
        default_sampling: f64,
        default_log: bool,
    ) -> Arc<Self> {
        let c = compile(&snapshot, &me, &locator, &ctx);
        let control = |t: mesh_telemetry::policy::SideTracing| {
            let (sampling, report) = t.in_force(default_sampling);
            Arc::new(TraceControl::new(sampling, report))
        };
        let (tracing, log) = (&c.telemetry.tracing, &c.telemetry.access_log);
        Arc::new(Self {
            trace_client: control(tracing.client),
            trace_server: control(tracing.server),
            default_sampling,
            log_client: Arc::new(LogControl::new(log.client.rule(default_log))),
            log_server: Arc::new(LogControl::new(log.server.rule(default_log))),
            default_log,
            me,
            locator,
            ctx,
            snapshot: ArcSwap::new(snapshot),
            registry: ArcSwap::from_pointee(c.registry),
            table: TableHandle::new(c.table),
            authz: Arc::new(ArcSwap::from_pointee(c.authz)),
            jwt: Arc::new(ArcSwap::from_pointee(c.jwt)),
            peer: ArcSwap::from_pointee(c.peer),
            naming: Arc::new(ArcSwap::from_pointee(c.naming)),
            plaintext: Arc::new(ArcSwap::from_pointee(c.plaintext)),
            inbound_service: Arc::new(ArcSwap::from_pointee(c.inbound_service)),
            inbound_tcp: c.inbound_tcp.into(),
            sidecar_outbound: ArcSwap::from_pointee(c.sidecar_outbound),
        })
    }

    /// Put a new snapshot in force. Everything is compiled first, then swapped: requests
    /// in flight keep the version they started with.
    pub(crate) fn apply(&self, snapshot: Arc<Snapshot>) {
        let c = compile(&snapshot, &self.me, &self.locator, &self.ctx);
        // Naming before the table: a new endpoint is trusted before it can be picked.
        self.naming.store(Arc::new(c.naming));
        self.plaintext.store(Arc::new(c.plaintext));
        self.inbound_service.store(Arc::new(c.inbound_service));
        self.inbound_tcp.store(c.inbound_tcp, std::sync::atomic::Ordering::Relaxed);
        self.sidecar_outbound.store(Arc::new(c.sidecar_outbound));
        let (tracing, log) = (&c.telemetry.tracing, &c.telemetry.access_log);
        for (control, t) in [(&self.trace_client, tracing.client), (&self.trace_server, tracing.server)] {
            let (sampling, report) = t.in_force(self.default_sampling);
            control.set(sampling, report);
        }
        self.log_client.set(log.client.rule(self.default_log));
        self.log_server.set(log.server.rule(self.default_log));
        self.registry.store(Arc::new(c.registry));
        self.peer.store(Arc::new(c.peer));
        self.jwt.store(Arc::new(c.jwt));
        self.authz.store(Arc::new(c.authz));
        self.table.store(c.table);
        self.snapshot.store(snapshot);
    }

    /// Apply every snapshot `rx` publishes after the current one, fetching the keys of
    /// RequestAuthentication `jwksUri`s after each (and every 20 minutes, as Istio does).
    pub(crate) fn follow(self: &Arc<Self>, mut rx: watch::Receiver<Arc<Snapshot>>) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        rx.mark_unchanged();
        let refresh = Arc::downgrade(self);
        tokio::spawn(async move {
            // Ends when the control state is gone.
            while let Some(control) = refresh.upgrade() {
                mesh_authz::jwt::refresh_keys(&control.jwt).await;
                drop(control);
                tokio::time::sleep(std::time::Duration::from_secs(20 * 60)).await;
            }
        });
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let snapshot = rx.borrow_and_update().clone();
                me.apply(snapshot);
                mesh_authz::jwt::refresh_keys(&me.jwt).await;
                tracing::info!("config applied");
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use mesh_config::api::Labels;

    use super::*;
    use mesh_config::load::{LoadOptions, load_str};

    const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews-v2, namespace: shop}
spec:
  selector: {matchLabels: {app: reviews, version: v2}}
  template: {metadata: {labels: {app: reviews, version: v2}}, spec: {serviceAccountName: bookinfo-reviews, containers: [{name: r}]}}
"#;

    fn snapshot() -> Snapshot {
        let loaded = load_str("d.yaml", DEPLOYMENT, &LoadOptions::default());
        assert!(!loaded.has_errors(), "{}", loaded.report());
        loaded.into_snapshot()
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_deployment_with_these_pod_labels_names_the_workload_and_its_identity() {
        let me = LocalWorkload::resolve(
            &snapshot(),
            "shop",
            &labels(&[("app", "reviews"), ("version", "v2")]),
            None,
            None,
            "default",
            "td",
        )
        .unwrap();
        assert_eq!(me.workload, "reviews-v2");
        assert_eq!(me.identity.to_string(), "spiffe://td/ns/shop/sa/bookinfo-reviews");
    }

    #[test]
    fn flags_win_and_unknown_workloads_fall_back_to_their_labels() {
        let me = LocalWorkload::resolve(
            &snapshot(),
            "shop",
            &labels(&[("app", "reviews")]),
            None,
            Some("custom"),
            "default",
            "cluster.local",
        )
        .unwrap();
        // `app=reviews` alone matches the Deployment's pod labels (a subset).
        assert_eq!((me.workload.as_str(), me.service_account.as_str()), ("reviews-v2", "custom"));
        let other = LocalWorkload::resolve(
            &snapshot(),
            "default",
            &labels(&[("app", "x"), ("version", "v9")]),
            None,
            None,
            "default",
            "cluster.local",
        )
        .unwrap();
        assert_eq!((other.workload.as_str(), other.service_account.as_str()), ("x-v9", "default"));
        let gw = LocalWorkload::resolve(
            &snapshot(),
            "istio-system",
            &labels(&[("istio", "ingressgateway")]),
            None,
            None,
            "gw",
            "td",
        )
        .unwrap();
        assert_eq!((gw.workload.as_str(), gw.service_account.as_str()), ("istio-ingressgateway", "gw"));
    }
}
