//! The service registry: which services exist, their ports, and the endpoints behind them.
//!
//! Built from a [`Snapshot`]: Kubernetes Services select Deployments by label (a Deployment
//! is one workload; its address comes from whatever runs it, given as a [`Locator`]);
//! ServiceEntries bring external or mesh-internal hosts with STATIC endpoints (inline or
//! WorkloadEntries selected by label). From a cluster's API server, Pods are the workloads
//! (named after their controller, as Istio names them) and EndpointSlices give the
//! addresses: a ready endpoint of a pod with a mesh sidecar is reached at the pod's
//! address on the sidecar's inbound port ([`INBOUND_PORT_ANNOTATION`]) with mTLS; any
//! other at the slice's port, in plaintext.

use std::{
    collections::{BTreeMap, HashSet},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
};

use mesh_core::{Identity, cidr::Cidr};

use crate::{
    Snapshot,
    api::{
        EndpointSlice, IntOrString, Kind, KubeObject, Labels, ObjectMeta, PodSpec, Resolution, Resource,
        SERVICE_NAME_LABEL, ServiceEntryLocation, WorkloadEntrySpec,
    },
    snapshot::{labels_match, resolve_host},
};

/// Where workloads run: (namespace, workload name) to the addresses that serve them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Locator {
    addresses: BTreeMap<(String, String), Vec<SocketAddr>>,
    trust_domain: Option<String>,
}

impl Locator {
    /// No addresses known.
    pub fn new() -> Self {
        Self::default()
    }

    /// The workload `namespace/name` (a Deployment) is served at `addr`.
    pub fn insert(&mut self, namespace: &str, workload: &str, addr: SocketAddr) {
        self.addresses.entry((namespace.to_string(), workload.to_string())).or_default().push(addr);
    }

    /// Builder form of [`Locator::insert`].
    #[must_use]
    pub fn with(mut self, namespace: &str, workload: &str, addr: SocketAddr) -> Self {
        self.insert(namespace, workload, addr);
        self
    }

    /// The trust domain the workloads' identities are in (Istio's `cluster.local` unless set).
    #[must_use]
    pub fn with_trust_domain(mut self, trust_domain: &str) -> Self {
        self.trust_domain = Some(trust_domain.to_string());
        self
    }

    /// The SPIFFE identity of service account `sa` in `namespace`, in this trust domain.
    fn identity(&self, namespace: &str, sa: &str) -> Option<Identity> {
        Identity::new(self.trust_domain.as_deref().unwrap_or(mesh_core::DEFAULT_TRUST_DOMAIN), namespace, sa).ok()
    }

    /// Addresses of a workload.
    pub fn get(&self, namespace: &str, workload: &str) -> &[SocketAddr] {
        self.addresses.get(&(namespace.to_string(), workload.to_string())).map_or(&[], Vec::as_slice)
    }
}

/// A workload: a Deployment's pods, with their identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    /// Deployment name, e.g. `reviews-v2`.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Pod labels.
    pub labels: Labels,
    /// Service account (`default` when unset, as Kubernetes does).
    pub service_account: String,
    /// Container ports by name (unnamed ports are listed under their number).
    pub ports: BTreeMap<String, u16>,
}

/// A port of a service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    /// Port name (`http`, `grpc-web`, ...).
    pub name: String,
    /// The port clients use.
    pub number: u16,
    /// Protocol: declared (`appProtocol`, a ServiceEntry's `protocol`), else the name's
    /// prefix, else TCP.
    pub protocol: Protocol,
    /// Neither the name nor a declared protocol says which: Istio detects it from the first
    /// bytes of each connection (`protocol` is then TCP, what a proxy without detection uses).
    pub detect: bool,
}

/// A port's protocol, as Istio selects it: the declared protocol (a Service port's
/// `appProtocol`, a ServiceEntry or Gateway port's `protocol`), else the port name's prefix
/// (`http-web`, `grpc`, `tcp-db`); anything else is TCP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// HTTP/1.1 (or any HTTP version the caller speaks).
    Http,
    /// HTTP/2.
    Http2,
    /// TLS carrying HTTP, passed through or terminated at a gateway.
    Https,
    /// gRPC.
    Grpc,
    /// gRPC-Web.
    GrpcWeb,
    /// Opaque TCP.
    Tcp,
    /// TLS, routed by SNI.
    Tls,
    /// MongoDB (proxied as TCP).
    Mongo,
    /// Redis (proxied as TCP).
    Redis,
    /// MySQL (proxied as TCP).
    Mysql,
    /// UDP (not proxied).
    Udp,
}

impl Protocol {
    /// Every protocol, in Istio's order of its docs.
    pub const ALL: [Protocol; 11] = [
        Protocol::Http,
        Protocol::Https,
        Protocol::Grpc,
        Protocol::GrpcWeb,
        Protocol::Http2,
        Protocol::Mongo,
        Protocol::Tcp,
        Protocol::Tls,
        Protocol::Redis,
        Protocol::Mysql,
        Protocol::Udp,
    ];

    /// Istio's name (`HTTP`, `GRPC-WEB`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "HTTP",
            Protocol::Http2 => "HTTP2",
            Protocol::Https => "HTTPS",
            Protocol::Grpc => "GRPC",
            Protocol::GrpcWeb => "GRPC-WEB",
            Protocol::Tcp => "TCP",
            Protocol::Tls => "TLS",
            Protocol::Mongo => "MONGO",
            Protocol::Redis => "REDIS",
            Protocol::Mysql => "MYSQL",
            Protocol::Udp => "UDP",
        }
    }

    /// One of Istio's protocol names, in any case (`grpc-web`, `HTTP`).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str().eq_ignore_ascii_case(s))
    }

    /// Istio's selection for a port: `declared` if it names a protocol (also Kubernetes'
    /// standard `appProtocol`s `kubernetes.io/h2c`, `kubernetes.io/ws`, `kubernetes.io/wss`),
    /// else the name's prefix before the first `-` (`grpc-web` is a name of its own), else
    /// TCP.
    pub fn of_port(name: &str, declared: Option<&str>) -> Self {
        Self::declared(name, declared).unwrap_or(Protocol::Tcp)
    }

    /// [`Protocol::of_port`] where the name or `declared` says it; `None`: nothing does
    /// (Istio then detects it per connection).
    pub fn declared(name: &str, declared: Option<&str>) -> Option<Self> {
        let declared = declared.filter(|p| !p.is_empty()).and_then(|d| match d.to_ascii_lowercase().as_str() {
            "kubernetes.io/h2c" => Some(Protocol::Http2),
            "kubernetes.io/ws" | "kubernetes.io/wss" => Some(Protocol::Http),
            _ => Self::parse(d),
        });
        if declared.is_some() {
            return declared;
        }
        let lower = name.to_ascii_lowercase();
        if lower == "grpc-web" || lower.starts_with("grpc-web-") {
            return Some(Protocol::GrpcWeb);
        }
        Self::parse(lower.split('-').next().unwrap_or(""))
    }

    /// Proxied as opaque TCP (no HTTP parsing): TCP, TLS and the database protocols.
    pub fn is_opaque(self) -> bool {
        matches!(self, Protocol::Tcp | Protocol::Tls | Protocol::Mongo | Protocol::Redis | Protocol::Mysql)
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

pub use mesh_core::endpoint::Endpoint;

/// A service clients can call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// Fully qualified host name, e.g. `reviews.default.svc.cluster.local`.
    pub hostname: String,
    /// Short name (`reviews`), or the host for ServiceEntries.
    pub name: String,
    /// Namespace of the defining resource.
    pub namespace: String,
    /// Ports.
    pub ports: Vec<ServicePort>,
    /// Endpoints per service port number.
    pub endpoints: BTreeMap<u16, Arc<[Endpoint]>>,
    /// Outside the mesh (ServiceEntry MESH_EXTERNAL): no sidecar, no mTLS.
    pub mesh_external: bool,
    /// The Kubernetes Service's `spec.selector` (empty: selects no workload; ServiceEntries
    /// have none).
    pub selector: Labels,
    /// Its virtual addresses: a Service's `clusterIP`s, a ServiceEntry's `addresses` (CIDRs
    /// for TCP), or where the config gives none, the one the registry allocates
    /// ([`Registry::build`]). Empty for a headless Service (`clusterIP: None`) and for
    /// wildcard hosts.
    pub addresses: Vec<Cidr>,
}

impl Service {
    /// Endpoints behind a port.
    pub fn endpoints(&self, port: u16) -> &[Endpoint] {
        self.endpoints.get(&port).map_or(&[], |e| e)
    }

    /// The port a request without an explicit port means: the only port, else 80, else
    /// the first declared.
    pub fn default_port(&self) -> Option<u16> {
        match self.ports.as_slice() {
            [only] => Some(only.number),
            ports => ports.iter().find(|p| p.number == 80).or(ports.first()).map(|p| p.number),
        }
    }
}

/// Every service and workload.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Registry {
    services: BTreeMap<String, Arc<Service>>,
    workloads: BTreeMap<(String, String), Arc<Workload>>,
    /// Services by one of their addresses (single IPs), in hostname order.
    by_address: BTreeMap<IpAddr, Vec<Arc<Service>>>,
    /// Services with a CIDR among their addresses.
    by_range: Vec<(Cidr, Arc<Service>)>,
}

/// Where the registry allocates Services' virtual addresses when the config gives none
/// (one machine, where no API server assigns `clusterIP`): Kubernetes' default service range.
pub const SERVICE_VIP_RANGE: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 96, 0, 0), 16);

/// Where ServiceEntries without `addresses` get theirs, as Istio's DNS auto-allocation.
pub const SERVICE_ENTRY_VIP_RANGE: (Ipv4Addr, u8) = (Ipv4Addr::new(240, 240, 0, 0), 16);

/// FNV-1a: stable across builds and machines, so every proxy allocates the same address.
fn stable_hash(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

/// Give each service in `wanting` (hostnames, in order) an address in `range` not in
/// `taken`: its hostname's hash, or the next free one after it.
fn allocate(range: (Ipv4Addr, u8), wanting: &[String], taken: &mut HashSet<IpAddr>) -> Vec<(String, IpAddr)> {
    let (base, prefix) = (u32::from(range.0), range.1);
    let size = 1u32 << (32 - prefix);
    let mut out = Vec::new();
    for host in wanting {
        // Skip the network's first and last address.
        let start = stable_hash(host) % (size - 2) + 1;
        let free = (0..size - 2)
            .map(|i| IpAddr::V4(Ipv4Addr::from(base + (start - 1 + i) % (size - 2) + 1)))
            .find(|ip| !taken.contains(ip));
        if let Some(ip) = free {
            taken.insert(ip);
            out.push((host.clone(), ip));
        }
    }
    out
}

/// The workload a proxy (or an embedded mesh) serves: named by the flags, else by the
/// Deployment whose pod labels are the given ones.
#[derive(Clone, Debug)]
pub struct LocalWorkload {
    /// Namespace.
    pub namespace: String,
    /// Pod labels.
    pub labels: Labels,
    /// Workload (Deployment) name.
    pub workload: String,
    /// Service account.
    pub service_account: String,
    /// SPIFFE identity (the service account in the trust domain).
    pub identity: Identity,
}

impl LocalWorkload {
    /// The workload whose pods carry `labels` in `namespace`: its Deployment gives the
    /// name and service account unless the flags do.
    pub fn resolve(
        snapshot: &Snapshot,
        namespace: &str,
        labels: &Labels,
        workload: Option<&str>,
        service_account: Option<&str>,
        default_service_account: &str,
        trust_domain: &str,
    ) -> Result<Self, UnnamableWorkload> {
        // The named Deployment, else the one whose pod labels include all of `labels`
        // (when several do, only an exact match is taken).
        let deployments: Vec<_> = snapshot
            .in_namespace(Kind::Deployment, namespace)
            .filter_map(|r| match &**r {
                Resource::Deployment(d) => Some(d),
                _ => None,
            })
            .collect();
        let deployment = match workload {
            Some(w) => deployments.iter().find(|d| d.metadata.name == w),
            None if labels.is_empty() => None,
            None => {
                let candidates: Vec<_> =
                    deployments.iter().filter(|d| labels_match(labels, &d.spec.template.metadata.labels)).collect();
                match candidates.as_slice() {
                    [one] => Some(*one),
                    many => many.iter().find(|d| &d.spec.template.metadata.labels == labels).copied(),
                }
            }
        };
        let name =
            workload.map(str::to_string).or_else(|| deployment.map(|d| d.metadata.name.clone())).unwrap_or_else(|| {
                match (labels.get("app"), labels.get("version"), labels.get("istio")) {
                    (Some(app), Some(v), _) => format!("{app}-{v}"),
                    (Some(app), None, _) => app.clone(),
                    // Istio's gateways: `istio: ingressgateway` is `istio-ingressgateway`.
                    (None, _, Some(gw)) => format!("istio-{gw}"),
                    _ => "unknown".into(),
                }
            });
        let sa = service_account
            .map(str::to_string)
            .or_else(|| deployment.and_then(|d| d.spec.template.spec.service_account_name.clone()))
            .unwrap_or_else(|| default_service_account.into());
        let identity = format!("spiffe://{trust_domain}/ns/{namespace}/sa/{sa}")
            .parse()
            .map_err(|source| UnnamableWorkload { service_account: sa.clone(), namespace: namespace.into(), source })?;
        Ok(Self { namespace: namespace.into(), labels: labels.clone(), workload: name, service_account: sa, identity })
    }
}

/// A workload whose service account and namespace make no SPIFFE identity.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("service account `{service_account}` in namespace `{namespace}`: {source}")]
pub struct UnnamableWorkload {
    /// The service account.
    pub service_account: String,
    /// The namespace.
    pub namespace: String,
    /// Why the identity does not parse.
    pub source: mesh_core::identity::InvalidIdentity,
}

/// The pod annotation (set by `meshctl kube-inject`) that says a pod runs the mesh sidecar
/// and on which port its inbound listener takes mTLS.
pub const INBOUND_PORT_ANNOTATION: &str = "mesh.dev/inbound-port";

/// The workload a pod belongs to, as Istio names it: a ReplicaSet's Deployment (the
/// ReplicaSet's name less the `pod-template-hash` suffix), else its controller, else the
/// pod itself.
pub fn pod_workload_name(meta: &ObjectMeta) -> String {
    let Some(owner) =
        meta.owner_references.iter().find(|o| o.controller == Some(true)).or(meta.owner_references.first())
    else {
        return meta.name.clone();
    };
    if owner.kind == "ReplicaSet"
        && let Some(hash) = meta.labels.get("pod-template-hash")
        && let Some(deployment) = owner.name.strip_suffix(hash.as_str()).and_then(|n| n.strip_suffix('-'))
    {
        return deployment.to_string();
    }
    owner.name.clone()
}

fn container_ports(pod: &PodSpec) -> BTreeMap<String, u16> {
    pod.containers
        .iter()
        .flat_map(|c| &c.ports)
        .filter_map(|p| {
            let n = u16::try_from(p.container_port).ok()?;
            Some((p.name.clone().unwrap_or_else(|| n.to_string()), n))
        })
        .collect()
}

/// A pod as the registry needs it behind an endpoint.
struct PodInfo {
    workload: Arc<str>,
    labels: Arc<Labels>,
    service_account: Arc<str>,
    inbound_port: Option<u16>,
}

impl PodInfo {
    fn of(p: &KubeObject<PodSpec>) -> Self {
        Self {
            workload: pod_workload_name(&p.metadata).into(),
            labels: Arc::new(p.metadata.labels.clone()),
            service_account: p.spec.service_account_name.as_deref().unwrap_or("default").into(),
            inbound_port: p.metadata.annotations.get(INBOUND_PORT_ANNOTATION).and_then(|v| v.parse().ok()),
        }
    }
}

/// A Service's endpoints for `port` (its name and number) from its EndpointSlices.
fn slice_endpoints(
    slices: &[&EndpointSlice],
    pods: &BTreeMap<(&str, &str), PodInfo>,
    locator: &Locator,
    ns: &str,
    port_name: &str,
) -> Vec<Endpoint> {
    let namespace: Arc<str> = ns.into();
    let mut out = Vec::new();
    for slice in slices {
        let Some(target) =
            slice.ports.iter().find(|p| p.name.as_deref().unwrap_or("") == port_name).and_then(|p| p.port)
        else {
            continue;
        };
        let Ok(target) = u16::try_from(target) else { continue };
        for e in slice.endpoints.iter().filter(|e| e.conditions.is_ready()) {
            let pod = e
                .target_ref
                .as_ref()
                .filter(|r| r.kind == "Pod")
                .and_then(|r| pods.get(&(r.namespace.as_deref().unwrap_or(ns), r.name.as_str())));
            for a in &e.addresses {
                let Ok(ip) = a.parse::<IpAddr>() else { continue };
                out.push(match pod {
                    Some(p) => Endpoint {
                        address: SocketAddr::new(ip, p.inbound_port.unwrap_or(target)),
                        labels: p.labels.clone(),
                        workload: p.workload.clone(),
                        namespace: namespace.clone(),
                        identity: p.inbound_port.and_then(|_| locator.identity(ns, &p.service_account)),
                        weight: 1,
                    },
                    None => Endpoint {
                        address: SocketAddr::new(ip, target),
                        labels: Arc::default(),
                        workload: e.target_ref.as_ref().map_or_else(|| a.as_str().into(), |r| r.name.as_str().into()),
                        namespace: namespace.clone(),
                        identity: None,
                        weight: 1,
                    },
                });
            }
        }
    }
    out
}

impl Registry {
    /// Build from a snapshot; Deployment endpoints get their addresses from `locator`,
    /// Services with EndpointSlices get theirs from the slices.
    pub fn build(snapshot: &Snapshot, locator: &Locator) -> Self {
        let mut reg = Registry::default();
        let (mut kube, mut headless, mut unresolved) = (HashSet::new(), HashSet::new(), HashSet::new());
        for r in snapshot.of_kind(Kind::Deployment) {
            let Resource::Deployment(d) = &**r else { continue };
            let pod = &d.spec.template.spec;
            let w = Workload {
                name: d.metadata.name.clone(),
                namespace: d.metadata.namespace.clone(),
                labels: d.spec.template.metadata.labels.clone(),
                service_account: pod.service_account_name.clone().unwrap_or_else(|| "default".into()),
                ports: container_ports(pod),
            };
            reg.workloads.insert((w.namespace.clone(), w.name.clone()), Arc::new(w));
        }
        let mut pods = BTreeMap::new();
        for r in snapshot.of_kind(Kind::Pod) {
            let Resource::Pod(p) = &**r else { continue };
            let info = PodInfo::of(p);
            let key = (p.metadata.namespace.clone(), info.workload.to_string());
            reg.workloads.entry(key).or_insert_with(|| {
                Arc::new(Workload {
                    name: info.workload.to_string(),
                    namespace: p.metadata.namespace.clone(),
                    labels: p.metadata.labels.clone(),
                    service_account: info.service_account.to_string(),
                    ports: container_ports(&p.spec),
                })
            });
            pods.insert((p.metadata.namespace.as_str(), p.metadata.name.as_str()), info);
        }
        let mut slices: BTreeMap<(&str, &str), Vec<&EndpointSlice>> = BTreeMap::new();
        for r in snapshot.of_kind(Kind::EndpointSlice) {
            let Resource::EndpointSlice(s) = &**r else { continue };
            if let Some(svc) = s.metadata.labels.get(SERVICE_NAME_LABEL) {
                slices.entry((s.metadata.namespace.as_str(), svc.as_str())).or_default().push(s);
            }
        }

        for r in snapshot.of_kind(Kind::Service) {
            let Resource::Service(s) = &**r else { continue };
            let ns = &s.metadata.namespace;
            let from_slices = slices.get(&(ns.as_str(), s.metadata.name.as_str()));
            let selected: Vec<&Arc<Workload>> = reg
                .workloads
                .values()
                .filter(|w| {
                    &w.namespace == ns && !s.spec.selector.is_empty() && labels_match(&s.spec.selector, &w.labels)
                })
                .collect();
            let mut ports = Vec::new();
            let mut endpoints = BTreeMap::new();
            for p in &s.spec.ports {
                let Ok(number) = u16::try_from(p.port) else { continue };
                let name = p.name.clone().unwrap_or_default();
                ports.push(ServicePort {
                    protocol: Protocol::of_port(&name, p.app_protocol.as_deref()),
                    detect: Protocol::declared(&name, p.app_protocol.as_deref()).is_none(),
                    name: name.clone(),
                    number,
                });
                if let Some(from_slices) = from_slices {
                    endpoints.insert(number, slice_endpoints(from_slices, &pods, locator, ns, &name).into());
                    continue;
                }
                let eps: Vec<Endpoint> = selected
                    .iter()
                    .flat_map(|w| {
                        // The target port, by number or by container port name.
                        let target = match &p.target_port {
                            None => Some(number),
                            Some(IntOrString::Int(t)) => u16::try_from(*t).ok(),
                            Some(IntOrString::String(n)) => w.ports.get(n).copied(),
                        };
                        let labels = Arc::new(w.labels.clone());
                        let (workload, namespace): (Arc<str>, Arc<str>) =
                            (w.name.as_str().into(), w.namespace.as_str().into());
                        let identity = locator.identity(&w.namespace, &w.service_account);
                        locator.get(&w.namespace, &w.name).iter().filter(move |_| target.is_some()).map(move |addr| {
                            Endpoint {
                                address: *addr,
                                labels: labels.clone(),
                                workload: workload.clone(),
                                namespace: namespace.clone(),
                                identity: identity.clone(),
                                weight: 1,
                            }
                        })
                    })
                    .collect();
                endpoints.insert(number, eps.into());
            }
            let addresses = s.spec.cluster_ip.iter().chain(&s.spec.cluster_ips).filter_map(|ip| Cidr::parse(ip)).fold(
                Vec::new(),
                |mut all, c| {
                    if !all.contains(&c) {
                        all.push(c);
                    }
                    all
                },
            );
            if s.spec.cluster_ip.as_deref() == Some("None") {
                headless.insert(resolve_host(&s.metadata.name, ns));
            }
            kube.insert(resolve_host(&s.metadata.name, ns));
            let svc = Service {
                hostname: resolve_host(&s.metadata.name, ns),
                name: s.metadata.name.clone(),
                namespace: ns.clone(),
                ports,
                endpoints,
                mesh_external: false,
                selector: s.spec.selector.clone(),
                addresses,
            };
            reg.services.insert(svc.hostname.clone(), Arc::new(svc));
        }

        let workload_entries: Vec<(&str, &str, &WorkloadEntrySpec)> = snapshot
            .of_kind(Kind::WorkloadEntry)
            .filter_map(|r| match &**r {
                Resource::WorkloadEntry(we) => {
                    Some((we.metadata.name.as_str(), we.metadata.namespace.as_str(), &we.spec))
                }
                _ => None,
            })
            .collect();
        for r in snapshot.of_kind(Kind::ServiceEntry) {
            let Resource::ServiceEntry(se) = &**r else { continue };
            let ns = &se.metadata.namespace;
            let static_resolution = matches!(se.spec.resolution, Some(Resolution::Static));
            let entries: Vec<(String, &WorkloadEntrySpec)> = match &se.spec.workload_selector {
                Some(sel) => workload_entries
                    .iter()
                    .filter(|(_, wns, we)| *wns == ns && labels_match(&sel.labels, &we.labels))
                    .map(|(name, _, we)| (name.to_string(), *we))
                    .collect(),
                None => se.spec.endpoints.iter().map(|e| (se.metadata.name.clone(), e)).collect(),
            };
            let ports: Vec<ServicePort> = se
                .spec
                .ports
                .iter()
                .filter_map(|p| {
                    Some(ServicePort {
                        name: p.name.clone(),
                        number: u16::try_from(p.number).ok()?,
                        protocol: Protocol::of_port(&p.name, Some(&p.protocol)),
                        detect: Protocol::declared(&p.name, Some(&p.protocol)).is_none(),
                    })
                })
                .collect();
            let mut endpoints = BTreeMap::new();
            for (p, spec_port) in ports.iter().zip(&se.spec.ports) {
                let eps: Vec<Endpoint> = if static_resolution {
                    entries
                        .iter()
                        .filter_map(|(name, we)| {
                            let ip: IpAddr = we.address.parse().ok()?;
                            let port =
                                we.ports.get(&p.name).copied().or(spec_port.target_port).unwrap_or(spec_port.number);
                            Some(Endpoint {
                                address: SocketAddr::new(ip, u16::try_from(port).ok()?),
                                labels: Arc::new(we.labels.clone()),
                                workload: name.as_str().into(),
                                namespace: ns.as_str().into(),
                                identity: we.service_account.as_deref().and_then(|sa| locator.identity(ns, sa)),
                                weight: we.weight.unwrap_or(1).max(1),
                            })
                        })
                        .collect()
                } else {
                    Vec::new()
                };
                endpoints.insert(p.number, eps.into());
            }
            for host in &se.spec.hosts {
                // Hosts the mesh does not resolve itself (DNS, NONE) keep their real
                // addresses: no virtual one, so captured traffic to them is the passthrough.
                if !static_resolution {
                    unresolved.insert(resolve_host(host, ns));
                }
                let svc = Service {
                    hostname: resolve_host(host, ns),
                    name: host.clone(),
                    namespace: ns.clone(),
                    ports: ports.clone(),
                    endpoints: endpoints.clone(),
                    mesh_external: !matches!(se.spec.location, Some(ServiceEntryLocation::MeshInternal)),
                    selector: Labels::new(),
                    addresses: se.spec.addresses.iter().filter_map(|a| Cidr::parse(a)).collect(),
                };
                reg.services.entry(svc.hostname.clone()).or_insert_with(|| Arc::new(svc));
            }
        }
        headless.extend(unresolved);
        reg.allocate_addresses(&kube, &headless);
        reg
    }

    /// Addresses for the services the config gives none: the Kubernetes Services in
    /// `kube` get one in [`SERVICE_VIP_RANGE`], ServiceEntry hosts one in
    /// [`SERVICE_ENTRY_VIP_RANGE`]; none for those in `none` (headless Services, hosts of
    /// `resolution: DNS` or `NONE`) or wildcards. Then the address index.
    fn allocate_addresses(&mut self, kube: &HashSet<String>, none: &HashSet<String>) {
        let mut taken: HashSet<IpAddr> =
            self.services.values().flat_map(|s| s.addresses.iter().map(|c| c.addr())).collect();
        let wanting = |want_kube: bool| -> Vec<String> {
            self.services
                .values()
                .filter(|s| s.addresses.is_empty() && kube.contains(&s.hostname) == want_kube)
                .filter(|s| !none.contains(&s.hostname) && !s.hostname.starts_with('*'))
                .map(|s| s.hostname.clone())
                .collect()
        };
        let (services, entries) = (wanting(true), wanting(false));
        let allocated: Vec<(String, IpAddr)> = allocate(SERVICE_VIP_RANGE, &services, &mut taken)
            .into_iter()
            .chain(allocate(SERVICE_ENTRY_VIP_RANGE, &entries, &mut taken))
            .collect();
        for (host, ip) in allocated {
            if let Some(s) = self.services.get_mut(&host) {
                Arc::make_mut(s).addresses.push(Cidr::from(ip));
            }
        }
        for s in self.services.values() {
            for c in &s.addresses {
                if c.is_single() {
                    self.by_address.entry(c.addr()).or_default().push(s.clone());
                } else {
                    self.by_range.push((*c, s.clone()));
                }
            }
        }
    }

    /// The service a connection to `addr` is for: one whose address is `addr`'s IP (or
    /// whose CIDR holds it) and that has `addr`'s port; the first by hostname when several.
    pub fn service_at(&self, addr: SocketAddr) -> Option<&Arc<Service>> {
        let has_port = |s: &&Arc<Service>| s.ports.iter().any(|p| p.number == addr.port());
        self.by_address.get(&addr.ip()).and_then(|all| all.iter().find(has_port)).or_else(|| {
            self.by_range
                .iter()
                .map(|(_, s)| s)
                .filter(|s| has_port(s))
                .find(|s| s.addresses.iter().any(|c| c.contains(addr.ip())))
        })
    }

    /// A service by fully qualified host name.
    pub fn service(&self, hostname: &str) -> Option<&Arc<Service>> {
        self.services.get(hostname)
    }

    /// Every service.
    pub fn services(&self) -> impl Iterator<Item = &Arc<Service>> {
        self.services.values()
    }

    /// The Services that select a workload in `namespace` with `labels` (by their
    /// `spec.selector`), by name: what the workload serves.
    pub fn services_selecting<'a>(
        &'a self,
        namespace: &'a str,
        labels: &'a Labels,
    ) -> impl Iterator<Item = &'a Arc<Service>> + 'a {
        self.services
            .values()
            .filter(move |s| s.namespace == namespace && !s.selector.is_empty() && labels_match(&s.selector, labels))
    }

    /// A workload by namespace and name.
    pub fn workload(&self, namespace: &str, name: &str) -> Option<&Arc<Workload>> {
        self.workloads.get(&(namespace.to_string(), name.to_string()))
    }

    /// Every workload.
    pub fn workloads(&self) -> impl Iterator<Item = &Arc<Workload>> {
        self.workloads.values()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn services_have_addresses_given_or_allocated_the_same_everywhere() {
        use super::*;
        use crate::load::{LoadOptions, load_str};
        let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: fixed}
spec: {clusterIP: 10.96.0.10, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: headless}
spec: {clusterIP: None, ports: [{name: tcp, port: 5432}]}
---
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: ratings}
spec: {selector: {app: ratings}, ports: [{name: http, port: 9080}]}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db}
spec:
  hosts: [db.internal]
  addresses: [192.168.40.0/24]
  ports: [{number: 5432, name: tcp, protocol: TCP}]
  resolution: STATIC
  endpoints: [{address: 192.168.40.7}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext}
spec:
  hosts: [api.example.com, "*.wild.example"]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: vm}
spec:
  hosts: [vm.internal]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 192.168.50.5}]
"#;
        let loaded = load_str("s.yaml", yaml, &LoadOptions::default());
        assert!(!loaded.has_errors(), "{}", loaded.report());
        let snapshot = loaded.into_snapshot();
        let reg = Registry::build(&snapshot, &Locator::new());
        let addrs = |h: &str| reg.service(h).unwrap().addresses.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(addrs("fixed.default.svc.cluster.local"), ["10.96.0.10/32"]);
        assert!(addrs("headless.default.svc.cluster.local").is_empty());
        let reviews = addrs("reviews.default.svc.cluster.local");
        assert_eq!(reviews.len(), 1);
        assert!(reviews[0].starts_with("10.96.") && reviews[0] != "10.96.0.10/32", "{reviews:?}");
        assert_ne!(reviews, addrs("ratings.default.svc.cluster.local"));
        assert_eq!(addrs("db.internal"), ["192.168.40.0/24"]);
        // resolution DNS: its real addresses stay (the mesh does not resolve it itself).
        assert!(addrs("api.example.com").is_empty(), "{:?}", addrs("api.example.com"));
        assert!(addrs("vm.internal")[0].starts_with("240.240."), "{:?}", addrs("vm.internal"));
        assert!(addrs("*.wild.example").is_empty());
        // Another proxy building from the same config allocates the same.
        assert_eq!(Registry::build(&snapshot, &Locator::new()), reg);
        // By address and port.
        let ip = reg.service("reviews.default.svc.cluster.local").unwrap().addresses[0].addr();
        let at = |a: SocketAddr| reg.service_at(a).map(|s| s.hostname.as_str());
        assert_eq!(at(SocketAddr::new(ip, 9080)), Some("reviews.default.svc.cluster.local"));
        assert_eq!(at(SocketAddr::new(ip, 80)), None, "not a port of the Service");
        assert_eq!(at("192.168.40.99:5432".parse().unwrap()), Some("db.internal"));
        assert_eq!(at("10.96.0.10:80".parse().unwrap()), Some("fixed.default.svc.cluster.local"));
        assert_eq!(at("10.1.2.3:80".parse().unwrap()), None);
    }

    #[test]
    fn allocation_probes_past_taken_addresses() {
        use super::*;
        let mut taken = HashSet::new();
        let first = allocate(SERVICE_VIP_RANGE, &["a".to_string()], &mut taken);
        let mut again = HashSet::from([first[0].1]);
        let second = allocate(SERVICE_VIP_RANGE, &["a".to_string()], &mut again);
        assert_ne!(first[0].1, second[0].1, "the hashed address was taken: the next free one");
        let tiny = (Ipv4Addr::new(10, 0, 0, 0), 30); // two usable addresses
        let mut taken = HashSet::new();
        let hosts: Vec<String> = ["x", "y", "z"].iter().map(|s| s.to_string()).collect();
        assert_eq!(allocate(tiny, &hosts, &mut taken).len(), 2, "a full range allocates no more");
    }

    #[test]
    fn port_protocols_as_istio_selects_them() {
        use super::Protocol::{self, *};
        let of = Protocol::of_port;
        assert_eq!(of("http", None), Http);
        assert_eq!(of("http-web", None), Http);
        assert_eq!(of("HTTP2-x", None), Http2);
        assert_eq!(of("grpc-web", None), GrpcWeb);
        assert_eq!(of("grpc-web-x", None), GrpcWeb);
        assert_eq!(of("grpc-x", None), Grpc);
        assert_eq!(of("tcp-db", None), Tcp);
        assert_eq!(of("mongo", None), Mongo);
        assert_eq!(of("web", None), Tcp);
        assert_eq!(of("", None), Tcp);
        // Declared wins, in any case; an unknown declaration falls back to the name.
        assert_eq!(of("tcp", Some("http")), Http);
        assert_eq!(of("web", Some("kubernetes.io/h2c")), Http2);
        assert_eq!(of("http", Some("FOO")), Http);
        assert_eq!(of("x", Some("")), Tcp);
        assert!(Tcp.is_opaque() && Tls.is_opaque() && Redis.is_opaque() && Mysql.is_opaque() && Mongo.is_opaque());
        assert!(!Http.is_opaque() && !Grpc.is_opaque() && !Udp.is_opaque());
        for p in Protocol::ALL {
            assert_eq!(Protocol::parse(&p.to_string().to_lowercase()), Some(p));
        }
    }

    use super::*;
    use crate::load::{LoadOptions, load_str};

    #[test]
    fn the_services_selecting_a_workload_are_the_registrys_answer() {
        let svc = |name: &str, ns: &str, selector: &str| {
            format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{selector: {selector}, ports: [{{port: 9080, name: http}}]}}\n---\n"
            )
        };
        let yaml = [
            svc("reviews", "default", "{app: reviews}"),
            svc("all-of-them", "default", "{}"),
            svc("reviews-v2", "default", "{app: reviews, version: v2}"),
            svc("reviews", "other", "{app: reviews}"),
        ]
        .concat();
        let loaded = load_str("s.yaml", &yaml, &LoadOptions::default());
        assert!(!loaded.has_errors(), "{}", loaded.report());
        let reg = Registry::build(&loaded.into_snapshot(), &Locator::new());
        let names = |labels: &[(&str, &str)]| {
            let labels = mesh_core::test_util::labels(labels);
            reg.services_selecting("default", &labels).map(|s| s.hostname.clone()).collect::<Vec<_>>()
        };
        assert_eq!(names(&[("app", "reviews"), ("version", "v1")]), ["reviews.default.svc.cluster.local"]);
        assert_eq!(
            names(&[("app", "reviews"), ("version", "v2")]),
            ["reviews-v2.default.svc.cluster.local", "reviews.default.svc.cluster.local"],
            "an empty selector selects nothing; another namespace's Service is not this workload's"
        );
        assert!(names(&[("app", "ratings")]).is_empty());
    }

    #[test]
    fn a_pods_workload_is_its_deployment_else_its_controller_else_itself() {
        use crate::api::OwnerReference;
        let owner =
            |kind: &str, name: &str| OwnerReference { kind: kind.into(), name: name.into(), controller: Some(true) };
        let mut m = ObjectMeta { name: "reviews-v2-5b7dbc4f9d-h5rkx".into(), ..ObjectMeta::default() };
        assert_eq!(pod_workload_name(&m), "reviews-v2-5b7dbc4f9d-h5rkx", "no owner: the pod");
        m.owner_references = vec![owner("ReplicaSet", "reviews-v2-5b7dbc4f9d")];
        assert_eq!(pod_workload_name(&m), "reviews-v2-5b7dbc4f9d", "a bare ReplicaSet");
        m.labels.insert("pod-template-hash".into(), "5b7dbc4f9d".into());
        assert_eq!(pod_workload_name(&m), "reviews-v2", "a Deployment's ReplicaSet");
        m.owner_references = vec![owner("StatefulSet", "mysql")];
        assert_eq!(pod_workload_name(&m), "mysql");
    }

    const MANIFEST: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec:
  ports: [{port: 9080, name: http}]
  selector: {app: reviews}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews-v1}
spec:
  selector: {matchLabels: {app: reviews, version: v1}}
  template:
    metadata: {labels: {app: reviews, version: v1}}
    spec:
      serviceAccountName: bookinfo-reviews
      containers: [{name: reviews, ports: [{containerPort: 9080}]}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews-v2}
spec:
  selector: {matchLabels: {app: reviews, version: v2}}
  template:
    metadata: {labels: {app: reviews, version: v2}}
    spec:
      containers: [{name: reviews, ports: [{containerPort: 9080}]}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db}
spec:
  hosts: [db.example.com]
  location: MESH_INTERNAL
  ports: [{number: 5432, name: tcp-pg, protocol: TCP}, {number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
  - {address: 127.0.0.1, ports: {tcp-pg: 15432}, labels: {version: a}}
  - {address: 127.0.0.2, weight: 3}
"#;

    #[test]
    fn services_and_endpoints() {
        let loaded = load_str("m.yaml", MANIFEST, &LoadOptions::default());
        assert!(!loaded.has_errors(), "{}", loaded.report());
        let snap = loaded.into_snapshot();
        let locator = Locator::new().with("default", "reviews-v1", "127.0.0.1:19001".parse().unwrap());
        let reg = Registry::build(&snap, &locator);

        let reviews = reg.service("reviews.default.svc.cluster.local").unwrap();
        assert_eq!(reviews.default_port(), Some(9080));
        assert_eq!(reviews.ports[0].protocol, Protocol::Http);
        // reviews-v2 has no address yet: only v1 is an endpoint.
        let eps = reviews.endpoints(9080);
        assert_eq!(eps.len(), 1);
        assert_eq!(&*eps[0].workload, "reviews-v1");
        assert_eq!(eps[0].identity.as_ref().map(Identity::service_account), Some("bookinfo-reviews"));
        assert_eq!(reg.workload("default", "reviews-v2").unwrap().service_account, "default");

        let db = reg.service("db.example.com").unwrap();
        assert!(!db.mesh_external);
        let pg: Vec<_> = db.endpoints(5432).iter().map(|e| (e.address.to_string(), e.weight)).collect();
        assert_eq!(pg, [("127.0.0.1:15432".to_string(), 1), ("127.0.0.2:5432".to_string(), 3)]);
        assert_eq!(db.default_port(), Some(80));
    }
}
