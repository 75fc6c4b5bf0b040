//! The route table: VirtualServices and DestinationRules compiled for one proxy.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use mesh_config::{
    Snapshot,
    api::{
        DestinationRuleSpec, HttpMatchRequest, HttpRoute, Kind, Labels, ObjectMeta, Resource, Subset,
        VirtualServiceSpec,
    },
    registry::Registry,
    snapshot::{host_matches, labels_match, resolve_host},
};
use mesh_fault::FaultPolicy;

use super::{
    Target,
    action::{
        Action, Cors, DirectResponse, HeaderOps, Mirror, Redirect, Rewrite, RouteConfigError, RouteRule,
        WeightedTarget, WeightedTargets, split_authority,
    },
    cluster::{Cluster, ResolvedPolicy},
    matching::{MatchBlock, RequestInfo},
    retry::RetryPolicy,
};

mod gateway_api;
pub use gateway_api::{CONTROLLERS, ClassRefused, GatewayServersError, class_accepted, gateway_servers};

/// The proxy a table is compiled for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProxyContext {
    /// The sidecar (or embedded client stack) of a workload.
    Sidecar {
        /// The workload's namespace.
        namespace: String,
        /// The workload's labels (for `sourceLabels`).
        labels: Labels,
    },
    /// A gateway proxy running the Gateway `namespace/name`.
    Gateway {
        /// The Gateway resource's namespace.
        namespace: String,
        /// The Gateway resource's name.
        name: String,
    },
}

impl ProxyContext {
    /// A sidecar in `namespace` with `labels`.
    pub fn sidecar(namespace: &str, labels: Labels) -> Self {
        Self::Sidecar { namespace: namespace.into(), labels }
    }

    /// The gateway `namespace/name`.
    pub fn gateway(namespace: &str, name: &str) -> Self {
        Self::Gateway { namespace: namespace.into(), name: name.into() }
    }

    fn namespace(&self) -> &str {
        match self {
            Self::Sidecar { namespace, .. } | Self::Gateway { namespace, .. } => namespace,
        }
    }
}

/// Requests for one host (and port): the routes, in order.
#[derive(Clone, Debug)]
pub struct VirtualHost {
    /// The host (FQDN for registry services; as written for other VS hosts).
    pub name: Arc<str>,
    /// The port these routes serve; `None` for any port.
    pub port: Option<u16>,
    /// Serve requests whose authority has no port.
    pub default_port: bool,
    /// `namespace/name` of the VirtualService(s), if any.
    pub virtual_service: Option<Arc<str>>,
    /// Routes, first match wins.
    pub routes: Arc<[Arc<RouteRule>]>,
}

/// The outcome of routing one request.
#[derive(Clone, Copy, Debug)]
pub enum RouteOutcome<'t> {
    /// No virtual host for this authority: 404 NR.
    NoVirtualHost,
    /// A virtual host, but no route matched: 404 NR (never a fallback).
    NoRoute(&'t VirtualHost),
    /// A route matched, through this block (`None`: a route without match blocks).
    Matched(&'t VirtualHost, &'t Arc<RouteRule>, Option<&'t MatchBlock>),
}

/// The compiled routing table of one proxy.
#[derive(Clone, Debug, Default)]
pub struct RouteTable {
    vhosts: Vec<VirtualHost>,
    by_name: HashMap<String, Vec<usize>>,
    wildcards: Vec<(String, usize)>,
    /// TCP destinations per (service FQDN, port): the VirtualService's first `tcp` route
    /// that applies, else the whole service.
    tcp: HashMap<(String, u16), Arc<WeightedTargets>>,
    /// What was left out while compiling, and why.
    pub warnings: Vec<String>,
}

struct Compiler<'a> {
    snapshot: &'a Snapshot,
    registry: &'a Registry,
    ctx: &'a ProxyContext,
    targets: HashMap<(String, Option<String>, Option<u16>), Target>,
    warnings: Vec<String>,
}

fn exported_to(export_to: &[String], owner_ns: &str, ns: &str) -> bool {
    export_to.is_empty() || export_to.iter().any(|e| e == "*" || e == ns || (e == "." && owner_ns == ns))
}

/// Age for "oldest first": creation time (none counts as newest), then namespace and name.
fn age_key(m: &ObjectMeta) -> (bool, Option<&str>, &str, &str) {
    (m.creation_timestamp.is_none(), m.creation_timestamp.as_deref(), &m.namespace, &m.name)
}

fn oldest_first(a: &ObjectMeta, b: &ObjectMeta) -> std::cmp::Ordering {
    (&a.creation_timestamp, &a.namespace, &a.name).cmp(&(&b.creation_timestamp, &b.namespace, &b.name))
}

/// `gw` means `<vs-namespace>/gw`.
fn qualify_gateway(name: &str, vs_ns: &str) -> String {
    if name == "mesh" || name.contains('/') { name.to_string() } else { format!("{vs_ns}/{name}") }
}

impl RouteTable {
    /// Compile the table for `ctx`.
    pub fn compile(snapshot: &Snapshot, registry: &Registry, ctx: &ProxyContext) -> Self {
        let mut c = Compiler { snapshot, registry, ctx, targets: HashMap::new(), warnings: Vec::new() };
        let mut table = RouteTable::default();
        match ctx {
            ProxyContext::Sidecar { namespace, .. } => c.sidecar(&mut table, namespace),
            ProxyContext::Gateway { namespace, name } => c.gateway(&mut table, namespace, name),
        }
        table.warnings = c.warnings;
        table.wildcards.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        table
    }

    fn add(&mut self, vhost: VirtualHost, names: Vec<String>) {
        let idx = self.vhosts.len();
        self.vhosts.push(vhost);
        for n in names {
            if n.starts_with('*') {
                self.wildcards.push((n, idx));
            } else {
                self.by_name.entry(n).or_default().push(idx);
            }
        }
    }

    /// Every virtual host.
    pub fn virtual_hosts(&self) -> &[VirtualHost] {
        &self.vhosts
    }

    /// Every cluster the routes (and mirrors) can send to, once each.
    pub fn clusters(&self) -> Vec<Arc<Cluster>> {
        let mut out: Vec<Arc<Cluster>> = Vec::new();
        for route in self.vhosts.iter().flat_map(|v| v.routes.iter()) {
            let forward = match &route.action {
                Action::Forward(t) => t.targets.iter().map(|t| &t.target).collect(),
                _ => Vec::new(),
            };
            for target in forward.into_iter().chain(route.mirrors.iter().map(|m| &m.target)) {
                if let Target::Cluster(c) = target
                    && !out.iter().any(|o| o.name == c.name)
                {
                    out.push(c.clone());
                }
            }
        }
        out
    }

    /// The virtual host for an authority (`reviews`, `reviews:9080`, ...). At a sidecar the
    /// authority's port picks the service port; at a gateway pass the listener port, and
    /// the authority's port is ignored.
    pub fn virtual_host(&self, authority: &str, listener_port: Option<u16>) -> Option<&VirtualHost> {
        let (host, auth_port) = split_authority(authority);
        let host = host.trim_end_matches('.');
        // Lower-cased only when it is not already (the usual case allocates nothing).
        let host: std::borrow::Cow<'_, str> = match host.bytes().any(|b| b.is_ascii_uppercase()) {
            true => host.to_ascii_lowercase().into(),
            false => host.into(),
        };
        let port = listener_port.or(auth_port);
        let fits = |v: &VirtualHost| match (v.port, port) {
            (None, _) => true,
            (Some(p), Some(want)) => p == want,
            (Some(_), None) => v.default_port,
        };
        if let Some(idxs) = self.by_name.get(&*host)
            && let Some(v) = idxs.iter().map(|i| &self.vhosts[*i]).find(|v| fits(v))
        {
            return Some(v);
        }
        self.wildcards
            .iter()
            .map(|(p, i)| (p, &self.vhosts[*i]))
            .find(|(p, v)| host_matches(p, &host) && fits(v))
            .map(|(_, v)| v)
    }

    /// Where a TCP connection to `host:port` goes (any name of the service works, as in
    /// HTTP routing); `None` for an unknown service or port.
    pub fn tcp_route(&self, host: &str, port: u16) -> Option<&Arc<WeightedTargets>> {
        let vhost = self.virtual_host(&format!("{host}:{port}"), None)?;
        self.tcp.get(&(vhost.name.to_string(), port))
    }

    /// Route one request.
    pub fn route(&self, req: &RequestInfo<'_>, listener_port: Option<u16>) -> RouteOutcome<'_> {
        let Some(vhost) = self.virtual_host(req.authority, listener_port) else { return RouteOutcome::NoVirtualHost };
        for route in vhost.routes.iter() {
            if let Some(block) = route.matches(req) {
                return RouteOutcome::Matched(vhost, route, block);
            }
        }
        RouteOutcome::NoRoute(vhost)
    }
}

impl<'a> Compiler<'a> {
    fn virtual_services(&self) -> Vec<(&'a ObjectMeta, &'a VirtualServiceSpec)> {
        let ns = self.ctx.namespace();
        let mut out: Vec<_> = self
            .snapshot
            .of_kind(Kind::VirtualService)
            .filter_map(|r| match &**r {
                Resource::VirtualService(vs) if exported_to(&vs.spec.export_to, &vs.metadata.namespace, ns) => {
                    Some((&vs.metadata, &vs.spec))
                }
                _ => None,
            })
            .collect();
        out.sort_by(|a, b| oldest_first(a.0, b.0));
        out
    }

    /// A service port as a whole (no VirtualService, or no route for the protocol).
    fn whole_service(&mut self, svc: &mesh_config::registry::Service, port: u16) -> Target {
        self.target(&svc.hostname, None, Some(u32::from(port)), &svc.namespace, &svc.hostname, Some(port))
    }

    /// The destinations of the first `tcp` route of a VirtualService that applies to this
    /// sidecar and port; `None` when none does.
    fn tcp_targets(
        &mut self,
        meta: &ObjectMeta,
        vs: &VirtualServiceSpec,
        host: &str,
        port: u16,
    ) -> Option<WeightedTargets> {
        let ProxyContext::Sidecar { namespace, labels } = self.ctx else { return None };
        let route = vs.tcp.iter().find(|r| {
            r.matches.is_empty()
                || r.matches.iter().any(|m| {
                    let gateways = if m.gateways.is_empty() { &vs.gateways } else { &m.gateways };
                    (gateways.is_empty() || gateways.iter().any(|g| g == "mesh"))
                        && m.port.is_none_or(|p| p == u32::from(port))
                        && (m.source_labels.is_empty() || labels_match(&m.source_labels, labels))
                        && m.source_namespace.as_deref().is_none_or(|n| n == namespace)
                })
        })?;
        let targets = route
            .route
            .iter()
            .map(|d| WeightedTarget {
                target: self.target(
                    &d.destination.host,
                    d.destination.subset.as_deref(),
                    d.destination.port.map(|p| p.number),
                    &meta.namespace,
                    host,
                    Some(port),
                ),
                weight: d.weight.and_then(|w| u32::try_from(w).ok()).unwrap_or(0),
                headers: HeaderOps::default(),
                filters: None,
            })
            .collect();
        Some(WeightedTargets::new(targets))
    }

    /// Whether a block survives the config-time selectors for this proxy and port.
    fn block_applies(&self, m: &HttpMatchRequest, vs_ns: &str, vs_gateways: &[String], port: Option<u16>) -> bool {
        let gateways: Vec<String> = if m.gateways.is_empty() { vs_gateways.to_vec() } else { m.gateways.clone() };
        let on_mesh = gateways.is_empty() || gateways.iter().any(|g| g == "mesh");
        let here = match self.ctx {
            ProxyContext::Sidecar { .. } => on_mesh,
            ProxyContext::Gateway { namespace, name } => {
                let me = format!("{namespace}/{name}");
                gateways.iter().any(|g| qualify_gateway(g, vs_ns) == me)
            }
        };
        if !here {
            return false;
        }
        if let (Some(want), Some(p)) = (m.port, port)
            && want != u32::from(p)
        {
            return false;
        }
        if let ProxyContext::Sidecar { namespace, labels } = self.ctx {
            // Source selectors apply to sidecars only.
            if !m.source_labels.is_empty() && !labels_match(&m.source_labels, labels) {
                return false;
            }
            if m.source_namespace.as_deref().is_some_and(|s| s != namespace) {
                return false;
            }
        } else if !m.source_labels.is_empty() || m.source_namespace.is_some() {
            return false;
        }
        true
    }

    /// The routes of a VirtualService for one port, config-time selectors applied, cut
    /// after the first catch-all.
    fn routes(
        &mut self,
        meta: &ObjectMeta,
        vs: &VirtualServiceSpec,
        vhost_host: &str,
        port: Option<u16>,
    ) -> Vec<Arc<RouteRule>> {
        let vs_ref: Arc<str> = format!("{}/{}", meta.namespace, meta.name).into();
        let mut out = Vec::new();
        for (i, r) in vs.http.iter().enumerate() {
            let blocks: Vec<&HttpMatchRequest> =
                r.matches.iter().filter(|m| self.block_applies(m, &meta.namespace, &vs.gateways, port)).collect();
            if !r.matches.is_empty() && blocks.is_empty() {
                continue; // every block fell away: the route vanishes (never a catch-all)
            }
            let route = match self.route(&vs_ref, i, r, &blocks, &meta.namespace, vhost_host, port) {
                Ok(route) => route,
                Err(e) => {
                    self.warnings.push(format!("VirtualService {vs_ref}: spec.http[{i}]: skipped: {e}"));
                    continue;
                }
            };
            // After config-time selectors, a block without request conditions matches
            // everything: Istio drops the routes after it.
            let catch_all = route.matches.is_empty() || route.matches.iter().any(MatchBlock::is_catch_all);
            out.push(Arc::new(route));
            if catch_all && i + 1 < vs.http.len() {
                self.warnings.push(format!(
                    "VirtualService {vs_ref}: spec.http[{i}] matches every request; the {} route(s) after it are not used",
                    vs.http.len() - i - 1
                ));
                break;
            }
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn route(
        &mut self,
        vs_ref: &Arc<str>,
        index: usize,
        r: &HttpRoute,
        blocks: &[&HttpMatchRequest],
        vs_ns: &str,
        vhost_host: &str,
        vhost_port: Option<u16>,
    ) -> Result<RouteRule, RouteConfigError> {
        let matches = blocks.iter().map(|m| MatchBlock::try_from(*m)).collect::<Result<Vec<_>, _>>()?;
        let action = if let Some(rd) = &r.redirect {
            Action::Redirect(Redirect::compile(rd)?)
        } else if let Some(d) = &r.direct_response {
            Action::DirectResponse(DirectResponse::compile(d.status, d.body.as_ref())?)
        } else {
            let targets = r
                .route
                .iter()
                .map(|d| {
                    let target = self.target(
                        &d.destination.host,
                        d.destination.subset.as_deref(),
                        d.destination.port.map(|p| p.number),
                        vs_ns,
                        vhost_host,
                        vhost_port,
                    );
                    // Omitted weights are 0 with several destinations (a single one gets 100 %).
                    let weight = d.weight.and_then(|w| u32::try_from(w).ok()).unwrap_or(0);
                    Ok(WeightedTarget {
                        target,
                        weight,
                        headers: HeaderOps::compile(d.headers.as_ref())?,
                        filters: None,
                    })
                })
                .collect::<Result<Vec<_>, RouteConfigError>>()?;
            Action::Forward(WeightedTargets::new(targets))
        };
        // The deprecated single `mirror` (with `mirrorPercentage` or the older integer
        // `mirrorPercent`), then each of `mirrors`.
        let legacy = r.mirror.as_ref().map(|m| {
            let percent = match (&r.mirror_percentage, r.mirror_percent) {
                (Some(p), _) => p.value,
                (None, Some(p)) => f64::from(p),
                (None, None) => 100.0,
            };
            (m, percent)
        });
        let listed = r.mirrors.iter().map(|m| (&m.destination, m.percentage.map_or(100.0, |p| p.value)));
        let mirrors = legacy
            .into_iter()
            .chain(listed)
            .map(|(d, percent)| Mirror {
                target: self.target(
                    &d.host,
                    d.subset.as_deref(),
                    d.port.map(|p| p.number),
                    vs_ns,
                    vhost_host,
                    vhost_port,
                ),
                percent,
            })
            .collect();
        Ok(RouteRule {
            virtual_service: Some(vs_ref.clone()),
            http_route: None,
            index: Some(index),
            name: r.name.as_deref().map(Arc::from),
            matches,
            action,
            timeout: r.timeout.map(|d| d.get()),
            retry: RetryPolicy::for_route(r.retries.as_ref()).map(Arc::new),
            fault: r.fault.as_ref().map(FaultPolicy::try_from).transpose()?.map(Arc::new),
            mirrors,
            cors: r.cors_policy.as_ref().map(Cors::compile).transpose()?.map(Arc::new),
            headers: HeaderOps::compile(r.headers.as_ref())?,
            rewrite: r.rewrite.as_ref().map(Rewrite::compile).transpose()?,
        })
    }

    /// Resolve a destination to a cluster (cached).
    fn target(
        &mut self,
        host: &str,
        subset: Option<&str>,
        port: Option<u32>,
        vs_ns: &str,
        vhost_host: &str,
        vhost_port: Option<u16>,
    ) -> Target {
        let fqdn = resolve_host(host, vs_ns);
        let service = self.registry.service(&fqdn).cloned();
        let port = port.and_then(|p| u16::try_from(p).ok()).or_else(|| {
            let svc = service.as_ref()?;
            if svc.ports.len() > 1 && fqdn == vhost_host { vhost_port } else { svc.default_port() }
        });
        let key = (fqdn.clone(), subset.map(str::to_string), port);
        if let Some(t) = self.targets.get(&key) {
            return t.clone();
        }
        let missing = |fqdn: &str| Target::Missing {
            name: Cluster::envoy_name(port.unwrap_or(0), subset, fqdn).into(),
            host: fqdn.into(),
            subset: subset.map(Arc::from),
            port,
        };
        let target = match (service, port) {
            (Some(svc), Some(port)) if svc.ports.iter().any(|p| p.number == port) => {
                let dr = self.destination_rule(&fqdn, &svc.namespace);
                let subset_def: Option<Subset> = match subset {
                    None => None,
                    Some(name) => match dr.as_ref().and_then(|d| d.subsets.iter().find(|s| s.name == name)) {
                        Some(s) => Some(s.clone()),
                        None => {
                            let t = missing(&fqdn);
                            self.targets.insert(key, t.clone());
                            return t;
                        }
                    },
                };
                let policy = ResolvedPolicy::resolve(
                    dr.as_ref().and_then(|d| d.traffic_policy.as_ref()),
                    subset_def.as_ref().and_then(|s| s.traffic_policy.as_ref()),
                    port,
                );
                let endpoints: Vec<_> = svc
                    .endpoints(port)
                    .iter()
                    .filter(|e| subset_def.as_ref().is_none_or(|s| labels_match(&s.labels, &e.labels)))
                    .cloned()
                    .collect();
                Target::Cluster(Arc::new(Cluster {
                    name: Cluster::envoy_name(port, subset, &fqdn).into(),
                    service: fqdn.as_str().into(),
                    subset: subset.map(Arc::from),
                    port,
                    endpoints: endpoints.into(),
                    lb: policy.lb(),
                    pool: policy.pool(),
                    outlier: policy.outlier(),
                    tls: policy.tls.clone(),
                    mesh_external: svc.mesh_external,
                }))
            }
            _ => missing(&fqdn),
        };
        self.targets.insert(key, target.clone());
        target
    }

    /// The DestinationRule in force for a host: client namespace first, then the service's,
    /// then the root namespace; several in one namespace are merged (subsets concatenated,
    /// first wins; the first top-level trafficPolicy).
    fn destination_rule(&self, host: &str, service_ns: &str) -> Option<DestinationRuleSpec> {
        let ctx_ns = self.ctx.namespace();
        let mut candidates: Vec<(&ObjectMeta, &DestinationRuleSpec)> = self
            .snapshot
            .destination_rules_for_host(host)
            .filter_map(|r| match &**r {
                Resource::DestinationRule(dr) if exported_to(&dr.spec.export_to, &dr.metadata.namespace, ctx_ns) => {
                    let selects_me = match (&dr.spec.workload_selector, self.ctx) {
                        (None, _) => true,
                        (Some(sel), ProxyContext::Sidecar { namespace, labels }) => {
                            namespace == &dr.metadata.namespace && labels_match(&sel.match_labels, labels)
                        }
                        (Some(_), ProxyContext::Gateway { .. }) => false,
                    };
                    selects_me.then_some((&dr.metadata, &dr.spec))
                }
                _ => None,
            })
            .collect();
        // Exact hosts before wildcards, then oldest first.
        candidates.sort_by(|a, b| {
            a.1.host.starts_with('*').cmp(&b.1.host.starts_with('*')).then_with(|| oldest_first(a.0, b.0))
        });
        let ns = [ctx_ns, service_ns, mesh_config::ROOT_NAMESPACE]
            .into_iter()
            .find(|ns| candidates.iter().any(|(m, _)| m.namespace == *ns))?;
        let mut merged: Option<DestinationRuleSpec> = None;
        for (_, dr) in candidates.into_iter().filter(|(m, _)| m.namespace == ns) {
            match &mut merged {
                None => merged = Some(dr.clone()),
                Some(m) => {
                    for s in &dr.subsets {
                        if !m.subsets.iter().any(|x| x.name == s.name) {
                            m.subsets.push(s.clone());
                        }
                    }
                    if m.traffic_policy.is_none() {
                        m.traffic_policy = dr.traffic_policy.clone();
                    }
                }
            }
        }
        merged
    }

    fn sidecar(&mut self, table: &mut RouteTable, ctx_ns: &str) {
        let vss = self.virtual_services();
        let mut mesh_routes = self.api_mesh(ctx_ns);
        // One VirtualService per host at sidecars: the oldest wins.
        let mut by_host: BTreeMap<String, (&'a ObjectMeta, &'a VirtualServiceSpec)> = BTreeMap::new();
        for (meta, vs) in &vss {
            for h in &vs.hosts {
                let fqdn = resolve_host(h, &meta.namespace);
                if let Some((first, _)) = by_host.get(&fqdn) {
                    self.warnings.push(format!(
                        "VirtualService {}/{}: host {fqdn} is already routed by VirtualService {}/{} (one VirtualService per host at sidecars); ignored for this host",
                        meta.namespace, meta.name, first.namespace, first.name
                    ));
                    continue;
                }
                let applies = vs.gateways.is_empty()
                    || vs.gateways.iter().any(|g| g == "mesh")
                    || vs.http.iter().any(|r| r.matches.iter().any(|m| m.gateways.iter().any(|g| g == "mesh")));
                if applies {
                    by_host.insert(fqdn, (meta, vs));
                }
            }
        }
        // A Service with both a VirtualService and mesh HTTPRoutes: Istio's order decides
        // (consumer routes first, then the older; a tie goes to the VirtualService).
        for (host, routes) in &mesh_routes {
            let Some((vs_meta, _)) = by_host.get(host).copied() else { continue };
            let Some((route_meta, route_ref)) = routes.oldest() else { continue };
            let route_wins = routes.has_consumer() || age_key(route_meta) < age_key(vs_meta);
            let vs_ref = format!("{}/{}", vs_meta.namespace, vs_meta.name);
            let (winner, loser) = if route_wins {
                (format!("HTTPRoute {route_ref}"), format!("VirtualService {vs_ref}"))
            } else {
                (format!("VirtualService {vs_ref}"), format!("HTTPRoute {route_ref}"))
            };
            self.warnings.push(format!(
                "{host} is routed by both {winner} and {loser}; {winner} applies (consumer routes first, then the older; equal ages go to the VirtualService)"
            ));
            if route_wins {
                by_host.remove(host);
            }
        }
        mesh_routes.retain(|host, _| !by_host.contains_key(host));
        for (host, routes) in &mesh_routes {
            if self.registry.service(host).is_none()
                && let Some((_, route)) = routes.oldest()
            {
                self.warnings
                    .push(format!("mesh route {route}: its parent Service {host} does not exist; not applied"));
            }
        }
        let registry = self.registry;
        for svc in registry.services() {
            // Mesh HTTPRoutes, or the VirtualService, or neither (they never both remain).
            let mesh = mesh_routes.get(&svc.hostname);
            let vs = if mesh.is_some() { None } else { by_host.remove(&svc.hostname) };
            let vs_ref: Option<Arc<str>> = vs.map(|(meta, _)| format!("{}/{}", meta.namespace, meta.name).into());
            for p in &svc.ports {
                // TCP: the VirtualService's first `tcp` route that applies, else the whole
                // service (HTTPRoutes route HTTP only).
                let tcp = vs.and_then(|(meta, vs)| self.tcp_targets(meta, vs, &svc.hostname, p.number)).unwrap_or_else(
                    || {
                        let target = self.whole_service(svc, p.number);
                        WeightedTargets::new(vec![WeightedTarget {
                            target,
                            weight: 100,
                            headers: HeaderOps::default(),
                            filters: None,
                        }])
                    },
                );
                table.tcp.insert((svc.hostname.clone(), p.number), Arc::new(tcp));
                let routes = match (mesh, vs) {
                    (Some(routes), _) => self.api_mesh_rules(routes, p.number),
                    (None, Some((meta, vs))) => Some(self.routes(meta, vs, &svc.hostname, Some(p.number))),
                    (None, None) => None,
                }
                .unwrap_or_else(|| vec![Arc::new(default_route(self.whole_service(svc, p.number)))]);
                table.add(
                    VirtualHost {
                        name: svc.hostname.as_str().into(),
                        port: Some(p.number),
                        default_port: svc.default_port() == Some(p.number),
                        virtual_service: vs_ref.clone(),
                        routes: routes.into(),
                    },
                    host_aliases(&svc.hostname, &svc.namespace, ctx_ns).into_iter().chain(vip_names(svc)).collect(),
                );
            }
        }
        // VirtualService hosts that name no registry service still answer (any port).
        for (host, (meta, vs)) in by_host {
            let routes = self.routes(meta, vs, &host, None);
            table.add(
                VirtualHost {
                    name: host.as_str().into(),
                    port: None,
                    default_port: true,
                    virtual_service: Some(format!("{}/{}", meta.namespace, meta.name).into()),
                    routes: routes.into(),
                },
                vec![host.clone()],
            );
        }
    }

    fn gateway(&mut self, table: &mut RouteTable, gw_ns: &str, gw_name: &str) {
        let istio = self.snapshot.get(Kind::Gateway, gw_ns, gw_name).cloned();
        let api = self.snapshot.get(Kind::KubernetesGateway, gw_ns, gw_name).cloned();
        let gw = match (istio, api) {
            (Some(_), Some(_)) => {
                self.warnings.push(format!(
                    "Gateway {gw_ns}/{gw_name} is defined twice, as an Istio Gateway (networking.istio.io) and as a Gateway API Gateway (gateway.networking.k8s.io); neither is served"
                ));
                return;
            }
            (None, Some(api)) => {
                if let Resource::KubernetesGateway(g) = &*api {
                    self.api_gateway(table, gw_ns, gw_name, &g.spec);
                }
                return;
            }
            (Some(gw), None) => gw,
            (None, None) => {
                self.warnings.push(format!("Gateway {gw_ns}/{gw_name} is not defined"));
                return;
            }
        };
        let Resource::Gateway(gw) = &*gw else { return };
        let me = format!("{gw_ns}/{gw_name}");
        let vss = self.virtual_services();
        for server in &gw.spec.servers {
            let Ok(port) = u16::try_from(server.port.number) else { continue };
            // Per host of a bound VirtualService: its routes, VirtualServices concatenated
            // (oldest first) with catch-all routes moved to the end.
            let mut hosts: BTreeMap<String, GatewayHost> = BTreeMap::new();
            for (meta, vs) in &vss {
                let bound = vs.gateways.iter().any(|g| qualify_gateway(g, &meta.namespace) == me)
                    || vs.http.iter().any(|r| {
                        r.matches.iter().any(|m| m.gateways.iter().any(|g| qualify_gateway(g, &meta.namespace) == me))
                    });
                if !bound {
                    continue;
                }
                for h in &vs.hosts {
                    let allowed = server.hosts.iter().any(|sh| {
                        let (ns, name) = sh.split_once('/').unwrap_or(("*", sh));
                        let ns_ok = ns == "*" || (ns == "." && meta.namespace == gw_ns) || ns == meta.namespace;
                        ns_ok
                            && (name == h
                                || host_matches(name, h)
                                || (h.starts_with('*') && host_matches(h, name))
                                || h == "*")
                    });
                    if !allowed {
                        continue;
                    }
                    let routes = self.routes(meta, vs, h, Some(port));
                    let entry = hosts.entry(h.to_ascii_lowercase()).or_default();
                    entry.2.push(format!("{}/{}", meta.namespace, meta.name));
                    for r in routes {
                        if r.matches.is_empty() || r.matches.iter().any(MatchBlock::is_catch_all) {
                            entry.1.push(r);
                        } else {
                            entry.0.push(r);
                        }
                    }
                }
            }
            for (host, (mut routes, catch_all, vs_names)) in hosts {
                routes.extend(catch_all);
                table.add(
                    VirtualHost {
                        name: host.as_str().into(),
                        port: Some(port),
                        default_port: true,
                        virtual_service: Some(vs_names.join(",").into()),
                        routes: routes.into(),
                    },
                    vec![host.clone()],
                );
            }
        }
    }
}

/// Routes for one host at a gateway: ordinary routes, catch-alls (moved last), and the
/// VirtualServices they came from.
type GatewayHost = (Vec<Arc<RouteRule>>, Vec<Arc<RouteRule>>, Vec<String>);

/// The names a client can use for a Kubernetes service: the FQDN, `name.ns.svc`, `name.ns`,
/// and `name` from the same namespace.
/// A service's virtual addresses as Host names (`10.96.0.12`, `[fd00::12]`): a client that
/// calls the address reaches the service, as Istio's virtual hosts list them.
fn vip_names(svc: &mesh_config::registry::Service) -> impl Iterator<Item = String> + '_ {
    svc.addresses.iter().filter(|c| c.is_single()).map(|c| match c.addr() {
        std::net::IpAddr::V4(ip) => ip.to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
    })
}

fn host_aliases(fqdn: &str, svc_ns: &str, ctx_ns: &str) -> Vec<String> {
    let suffix = format!(".{svc_ns}.svc.{}", mesh_core::DEFAULT_DOMAIN_SUFFIX);
    let Some(name) = fqdn.strip_suffix(&suffix) else { return vec![fqdn.to_string()] };
    let mut names = vec![fqdn.to_string(), format!("{name}.{svc_ns}.svc"), format!("{name}.{svc_ns}")];
    if svc_ns == ctx_ns {
        names.push(name.to_string());
    }
    names
}

/// Routing without a VirtualService: the whole service, the default retry policy, no timeout.
fn default_route(target: Target) -> RouteRule {
    RouteRule {
        virtual_service: None,
        http_route: None,
        index: None,
        name: None,
        matches: Vec::new(),
        action: Action::Forward(WeightedTargets::new(vec![WeightedTarget {
            target,
            weight: 100,
            headers: HeaderOps::default(),
            filters: None,
        }])),
        timeout: None,
        retry: Some(Arc::new(RetryPolicy::istio_default())),
        fault: None,
        mirrors: Vec::new(),
        cors: None,
        headers: HeaderOps::default(),
        rewrite: None,
    }
}
