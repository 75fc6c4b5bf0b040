//! Gateway API routes (HTTPRoute, GRPCRoute) compiled into the table, with the API's own
//! semantics rather than VirtualService's.
//!
//! What was chosen, where the spec leaves room or is silent:
//! - **Precedence** (HTTPRoute): across every rule of every route attached to a listener
//!   and hostname, each match is its own entry, ordered by: an `Exact` path, then
//!   `PathPrefix`, then `RegularExpression` (the spec leaves regexes to implementations;
//!   Istio puts them last); then the longest path value; then a method match; then the most
//!   header matches; then the most query-parameter matches; then the oldest route (by
//!   `creationTimestamp`, none counting as newest), then `namespace/name` alphabetically,
//!   then the rule's and the match's position. GRPCRoute: the longest service, the longest
//!   method, the most headers, then the same tie-breaks.
//! - **Hostnames**: a listener's hostname intersected with a route's, the more specific of
//!   the two kept (`*.example.com` covers any number of labels, as the spec says). Routes
//!   without hostnames take the listener's (or `*`). A host claimed by a more specific
//!   listener on the same port is that listener's alone (listener isolation).
//! - **HTTPRoute and GRPCRoute on one hostname**: the spec forbids merging them; the kind of
//!   the oldest route keeps the hostname and the other kind's routes are left out, with a
//!   warning.
//! - **Backends**: a Service port (`group: ""`, `kind: Service`); DestinationRules apply to
//!   it as to any destination. A backend that resolves to nothing (an unknown Service or
//!   port, another kind, another namespace without a ReferenceGrant) keeps its weight and
//!   that share of requests gets 500; a rule whose weights are all 0 answers 500.
//! - **Timeouts**: `request` is the route timeout; `backendRequest` the timeout of each try
//!   (Istio's default retry policy applies, as for a VirtualService route without
//!   `retries`).
//! - **Mesh (GAMMA)**: a route whose parent is a Service applies at every sidecar when it
//!   lives in the Service's namespace (a producer route), and only to clients in its own
//!   namespace otherwise (a consumer route, which then replaces the producer routes for
//!   them). Its `hostnames` are not used: the Service names the traffic. Where a
//!   VirtualService routes the same host, Istio's selection is followed: consumer routes
//!   first, then whichever is older (a tie goes to the VirtualService); a warning names both.
//! - **`allowedRoutes.namespaces.from: Selector`**: a namespace's labels are those of its
//!   Namespace object (a file on one machine, the API server's on a cluster), plus
//!   `kubernetes.io/metadata.name`, which Kubernetes sets on every namespace; a namespace with
//!   no Namespace object has that label alone.

use std::{
    cmp::{Ordering, Reverse},
    collections::BTreeMap,
    sync::Arc,
};

use mesh_config::api::{
    HeaderOperations, Headers, Kind, ObjectMeta, Resource, Server,
    gateway_api::{
        FromNamespaces, GROUP, GrpcRouteMatch, GrpcRouteRule, HttpBackendRef, HttpHeaderFilter, HttpRouteFilter,
        HttpRouteMatch, HttpRouteRule, KubernetesGatewaySpec, Listener, ParentReference, PathMatchType,
    },
};
use mesh_core::request::host_matches;

use super::{Compiler, RouteTable, VirtualHost, age_key};
use crate::policy::{
    Target,
    action::{
        Action, BackendFilters, HeaderOps, InvalidHeader, Mirror, PathModifier, Redirect, Rewrite, RouteConfigError,
        RouteRule, WeightedTarget, WeightedTargets,
    },
    matching::MatchBlock,
    retry::RetryPolicy,
};

/// The GatewayClass controllers served here: Istio's (class `istio` is accepted without a
/// GatewayClass object, as Istio's controller installs it) and the mesh's own.
pub const CONTROLLERS: [&str; 2] = ["istio.io/gateway-controller", "mesh.dev/gateway-controller"];

/// The HTTPRoute the spec defaults `rules` to: `PathPrefix /`, no backend.
static DEFAULT_RULE: HttpRouteRule = HttpRouteRule {
    name: None,
    matches: Vec::new(),
    filters: Vec::new(),
    backend_refs: Vec::new(),
    timeouts: None,
    retry: None,
    session_persistence: None,
};

#[derive(Clone, Copy)]
enum RuleRef<'a> {
    Http(&'a HttpRouteRule),
    Grpc(&'a GrpcRouteRule),
}

#[derive(Clone, Copy)]
enum MatchRef<'a> {
    Http(&'a HttpRouteMatch),
    Grpc(&'a GrpcRouteMatch),
    /// A rule without matches: HTTP's `PathPrefix /`, gRPC's every call.
    All,
}

/// A Gateway API route, either kind.
struct ApiRoute<'a> {
    grpc: bool,
    meta: &'a ObjectMeta,
    reference: Arc<str>,
    parent_refs: &'a [ParentReference],
    hostnames: &'a [String],
    rules: Vec<RuleRef<'a>>,
}

impl ApiRoute<'_> {
    fn kind(&self) -> &'static str {
        if self.grpc { "GRPCRoute" } else { "HTTPRoute" }
    }
}

/// One match of one rule: the unit the precedence orders.
#[derive(Clone, Copy)]
struct Entry<'a> {
    route: &'a ApiRoute<'a>,
    rule_index: usize,
    match_index: usize,
    rule: RuleRef<'a>,
    m: MatchRef<'a>,
}

/// The HTTPRoute precedence of one match: path kind, path length, method, headers, query
/// parameters (each reversed: more sorts first).
type HttpKey = (Reverse<u8>, Reverse<usize>, Reverse<bool>, Reverse<usize>, Reverse<usize>);

/// A filter list, split into what a rule (or a backend) holds.
struct ApiFilters<'f> {
    headers: HeaderOps,
    mirrors: Vec<Mirror>,
    redirect: Option<&'f HttpRouteFilter>,
    rewrite: Option<Rewrite>,
}

impl Entry<'_> {
    /// The spec's precedence key, most important first; smaller sorts first.
    fn http_key(&self) -> HttpKey {
        let (ty, value, method, headers, query) = match self.m {
            MatchRef::Http(m) => {
                let (ty, value) = m.path();
                (ty, value, m.method.is_some(), m.headers.len(), m.query_params.len())
            }
            _ => (PathMatchType::PathPrefix, "/", false, 0, 0),
        };
        let (rank, len) = match ty {
            PathMatchType::Exact => (3, value.len()),
            PathMatchType::PathPrefix => (2, value.trim_end_matches('/').len()),
            PathMatchType::RegularExpression => (1, value.len()),
        };
        (Reverse(rank), Reverse(len), Reverse(method), Reverse(headers), Reverse(query))
    }

    fn grpc_key(&self) -> (Reverse<usize>, Reverse<usize>, Reverse<usize>) {
        match self.m {
            MatchRef::Grpc(m) => {
                let len = |s: Option<&String>| s.map_or(0, String::len);
                let (svc, method) =
                    m.method.as_ref().map_or((0, 0), |mm| (len(mm.service.as_ref()), len(mm.method.as_ref())));
                (Reverse(svc), Reverse(method), Reverse(m.headers.len()))
            }
            _ => (Reverse(0), Reverse(0), Reverse(0)),
        }
    }

    fn precedence(&self, other: &Self) -> Ordering {
        let by_match = if self.route.grpc && other.route.grpc {
            self.grpc_key().cmp(&other.grpc_key())
        } else {
            self.http_key().cmp(&other.http_key())
        };
        by_match
            .then_with(|| age_key(self.route.meta).cmp(&age_key(other.route.meta)))
            .then(self.rule_index.cmp(&other.rule_index))
            .then(self.match_index.cmp(&other.match_index))
    }
}

fn entries<'a>(route: &'a ApiRoute<'a>) -> Vec<Entry<'a>> {
    let mut out = Vec::new();
    for (rule_index, rule) in route.rules.iter().enumerate() {
        let matches: Vec<MatchRef<'a>> = match rule {
            RuleRef::Http(r) => r.matches.iter().map(MatchRef::Http).collect(),
            RuleRef::Grpc(r) => r.matches.iter().map(MatchRef::Grpc).collect(),
        };
        let matches = if matches.is_empty() { vec![MatchRef::All] } else { matches };
        for (match_index, m) in matches.into_iter().enumerate() {
            out.push(Entry { route, rule_index, match_index, rule: *rule, m });
        }
    }
    out
}

/// The hostname requests must carry for a route with `route_host` on a listener with
/// `listener_host` (`None` = any); `None` when they do not intersect.
fn intersect(listener_host: Option<&str>, route_host: &str) -> Option<String> {
    let Some(l) = listener_host else { return Some(route_host.to_string()) };
    if l == route_host {
        return Some(l.to_string());
    }
    let covers = |wild: &str, other: &str| {
        wild.starts_with("*.") && host_matches(wild, other.trim_start_matches("*.")) && other.len() > wild.len() - 1
    };
    if covers(l, route_host) {
        Some(route_host.to_string())
    } else if covers(route_host, l) {
        Some(l.to_string())
    } else {
        None
    }
}

/// How specifically a listener hostname claims `host` (higher is more specific); `None`
/// when it does not.
fn claim(listener_host: Option<&str>, host: &str) -> Option<usize> {
    match listener_host {
        None => Some(0),
        Some(l) if l == host => Some(usize::MAX),
        Some(l) if l.starts_with("*.") && (host_matches(l, host.trim_start_matches("*.")) || l == host) => {
            Some(l.len())
        }
        _ => None,
    }
}

/// A namespace's labels as far as one machine knows them: the one Kubernetes sets on every
/// namespace.
/// An `HTTPPathModifier` for the rule's one match (validation made sure there is one, of type
/// PathPrefix, for `ReplacePrefixMatch`).
fn path_modifier(m: &mesh_config::api::gateway_api::HttpPathModifier, matched_prefix: &str) -> PathModifier {
    match (&m.replace_full_path, &m.replace_prefix_match) {
        (Some(p), _) => PathModifier::Full(p.clone()),
        (None, r) => {
            PathModifier::Prefix { matched: matched_prefix.to_string(), replacement: r.clone().unwrap_or_default() }
        }
    }
}

/// Why a backendRef is not used (Gateway API's `ResolvedRefs` reasons: `InvalidKind`,
/// `RefNotPermitted`, `BackendNotFound`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum InvalidBackend {
    /// Not a core Service.
    #[error("backend kind {kind:?} (group {group:?}) is not supported: only Services are")]
    Kind { group: String, kind: String },
    /// In another namespace, and no ReferenceGrant allows it.
    #[error(
        "Service {ns}/{name} is in another namespace and no ReferenceGrant in {ns} allows {route_kind} from {route_ns}"
    )]
    NotGranted { ns: String, name: String, route_kind: &'static str, route_ns: String },
    /// No `port`.
    #[error("Service {0}: no port")]
    NoPort(String),
    /// No such Service.
    #[error("Service {0} does not exist")]
    NotFound(String),
    /// The Service has no such port.
    #[error("Service {0} has no port {1}")]
    NoSuchPort(String, u16),
}

/// Why a rule entry cannot be compiled.
#[derive(Debug, thiserror::Error)]
enum InvalidRule {
    #[error(transparent)]
    Match(#[from] crate::policy::matching::InvalidMatch),
    #[error(transparent)]
    Header(#[from] InvalidHeader),
    #[error(transparent)]
    Filter(#[from] RouteConfigError),
}

/// Why a listener does not let a route attach (Gateway API's `NotAllowedByListeners`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
enum NotAllowed {
    #[error("{0} is not among its allowedRoutes.kinds")]
    Kind(&'static str),
    #[error("routes must be in the Gateway's namespace {gateway} (from: Same), not {route}")]
    Namespace { gateway: String, route: String },
    #[error("namespace {0} is not selected by allowedRoutes.namespaces.selector")]
    Selector(String),
}

fn header_ops(req: Option<&HttpHeaderFilter>, rsp: Option<&HttpHeaderFilter>) -> Result<HeaderOps, InvalidHeader> {
    let ops = |f: &HttpHeaderFilter| HeaderOperations {
        set: f.set.iter().map(|h| (h.name.to_ascii_lowercase(), h.value.clone())).collect(),
        add: f.add.iter().map(|h| (h.name.to_ascii_lowercase(), h.value.clone())).collect(),
        remove: f.remove.clone(),
    };
    HeaderOps::compile(Some(&Headers { request: req.map(ops), response: rsp.map(ops) }))
}

impl<'a> Compiler<'a> {
    fn api_routes(&self) -> Vec<ApiRoute<'a>> {
        let snapshot: &'a mesh_config::Snapshot = self.snapshot;
        let mut out: Vec<ApiRoute<'a>> = snapshot
            .of_kind(Kind::HttpRoute)
            .chain(snapshot.of_kind(Kind::GrpcRoute))
            .filter_map(|r| match &**r {
                Resource::HttpRoute(o) => Some(ApiRoute {
                    grpc: false,
                    meta: &o.metadata,
                    reference: format!("{}/{}", o.metadata.namespace, o.metadata.name).into(),
                    parent_refs: &o.spec.parent_refs,
                    hostnames: &o.spec.hostnames,
                    rules: if o.spec.rules.is_empty() {
                        vec![RuleRef::Http(&DEFAULT_RULE)]
                    } else {
                        o.spec.rules.iter().map(RuleRef::Http).collect()
                    },
                }),
                Resource::GrpcRoute(o) => Some(ApiRoute {
                    grpc: true,
                    meta: &o.metadata,
                    reference: format!("{}/{}", o.metadata.namespace, o.metadata.name).into(),
                    parent_refs: &o.spec.parent_refs,
                    hostnames: &o.spec.hostnames,
                    rules: o.spec.rules.iter().map(RuleRef::Grpc).collect(),
                }),
                _ => None,
            })
            .collect();
        out.sort_by(|a, b| age_key(a.meta).cmp(&age_key(b.meta)));
        out
    }

    /// A backendRef (or a mirror's) as a target; `Err` says why it is invalid.
    fn api_backend(
        &mut self,
        route: &ApiRoute<'_>,
        group: &str,
        kind: &str,
        name: &str,
        namespace: Option<&str>,
        port: Option<u32>,
    ) -> Result<Target, InvalidBackend> {
        if (group, kind) != ("", "Service") {
            return Err(InvalidBackend::Kind { group: group.to_string(), kind: kind.to_string() });
        }
        let route_ns = &route.meta.namespace;
        let ns = namespace.unwrap_or(route_ns);
        if ns != route_ns && !self.snapshot.reference_granted(route.kind(), route_ns, ns, "Service", name) {
            return Err(InvalidBackend::NotGranted {
                ns: ns.to_string(),
                name: name.to_string(),
                route_kind: route.kind(),
                route_ns: route_ns.clone(),
            });
        }
        let fqdn = format!("{name}.{ns}.svc.{}", mesh_core::DEFAULT_DOMAIN_SUFFIX);
        let Some(port) = port.and_then(|p| u16::try_from(p).ok()) else {
            return Err(InvalidBackend::NoPort(format!("{ns}/{name}")));
        };
        match self.registry.service(&fqdn) {
            None => return Err(InvalidBackend::NotFound(format!("{ns}/{name}"))),
            Some(svc) if !svc.ports.iter().any(|p| p.number == port) => {
                return Err(InvalidBackend::NoSuchPort(format!("{ns}/{name}"), port));
            }
            Some(_) => {}
        }
        Ok(self.target(&fqdn, None, Some(u32::from(port)), ns, &fqdn, Some(port)))
    }

    /// The rule-level or backend-level filters, split into what a route holds.
    fn api_filters<'f>(
        &mut self,
        route: &ApiRoute<'_>,
        filters: &'f [HttpRouteFilter],
        matched_prefix: &str,
    ) -> Result<ApiFilters<'f>, InvalidRule> {
        let find = |ty: &str| filters.iter().find(|f| f.filter_type == ty);
        let headers = header_ops(
            find("RequestHeaderModifier").and_then(|f| f.request_header_modifier.as_ref()),
            find("ResponseHeaderModifier").and_then(|f| f.response_header_modifier.as_ref()),
        )?;
        let mut mirrors = Vec::new();
        for f in filters.iter().filter_map(|f| f.request_mirror.as_ref()) {
            let b = &f.backend_ref;
            let (group, kind) = b.group_kind();
            match self.api_backend(route, group, kind, &b.name, b.namespace.as_deref(), b.port) {
                Ok(target) => mirrors.push(Mirror { target, percent: f.percent() }),
                Err(e) => {
                    self.warnings.push(format!("{} {}: RequestMirror not used: {e}", route.kind(), route.reference))
                }
            }
        }
        let modifier = |m| path_modifier(m, matched_prefix);
        let rewrite = match find("URLRewrite").and_then(|f| f.url_rewrite.as_ref()) {
            Some(r) => Some(Rewrite::gateway_api(r.hostname.as_deref(), r.path.as_ref().map(modifier))?),
            None => None,
        };
        Ok(ApiFilters { headers, mirrors, redirect: find("RequestRedirect"), rewrite })
    }

    /// One entry as a route rule. `listener_port` is what a redirect derives its port from.
    fn api_rule(&mut self, e: &Entry<'_>, listener_port: u16) -> Result<RouteRule, InvalidRule> {
        let route = e.route;
        let (matches, matched_prefix) = match e.m {
            MatchRef::Http(m) => (vec![MatchBlock::from_http_route_match(m)?], m.path().1),
            MatchRef::Grpc(m) => (vec![MatchBlock::from_grpc_route_match(m)?], "/"),
            MatchRef::All => (Vec::new(), "/"),
        };
        let (name, filters, backends, timeouts): (_, &[HttpRouteFilter], &[HttpBackendRef], _) = match e.rule {
            RuleRef::Http(r) => (r.name.as_deref(), &r.filters, &r.backend_refs, r.timeouts.as_ref()),
            RuleRef::Grpc(r) => (r.name.as_deref(), &r.filters, &r.backend_refs, None),
        };
        let ApiFilters { headers, mirrors, redirect, rewrite } = self.api_filters(route, filters, matched_prefix)?;
        let action = match redirect.and_then(|f| f.request_redirect.as_ref()) {
            Some(rd) => {
                let path = rd.path.as_ref().map(|m| path_modifier(m, matched_prefix));
                Action::Redirect(Redirect::gateway_api(rd, path, listener_port)?)
            }
            None => {
                let mut targets = Vec::new();
                let mut refused = 0u64;
                for (i, b) in backends.iter().enumerate() {
                    let (group, kind) = b.group_kind();
                    match self.api_backend(route, group, kind, &b.name, b.namespace.as_deref(), b.port) {
                        Ok(target) => {
                            let ApiFilters { headers, mirrors, rewrite, .. } =
                                self.api_filters(route, &b.filters, matched_prefix)?;
                            let filters = (rewrite.is_some() || !mirrors.is_empty())
                                .then(|| Arc::new(BackendFilters { rewrite, mirrors }));
                            targets.push(WeightedTarget { target, weight: b.weight(), headers, filters });
                        }
                        Err(why) => {
                            self.warnings.push(format!(
                                "{} {}: rules[{}].backendRefs[{i}]: {why}; its share of requests gets 500",
                                route.kind(),
                                route.reference,
                                e.rule_index
                            ));
                            refused += u64::from(b.weight());
                        }
                    }
                }
                Action::Forward(WeightedTargets::gateway_api(targets, refused))
            }
        };
        let nonzero = |d: Option<mesh_core::Duration>| d.map(|d| d.get()).filter(|d| !d.is_zero());
        let mut retry = RetryPolicy::istio_default();
        retry.per_try_timeout = nonzero(timeouts.and_then(|t| t.backend_request));
        Ok(RouteRule {
            virtual_service: None,
            http_route: Some(route.reference.clone()),
            index: Some(e.rule_index),
            name: name.map(Arc::from),
            matches,
            action,
            timeout: nonzero(timeouts.and_then(|t| t.request)),
            retry: Some(Arc::new(retry)),
            fault: None,
            mirrors,
            cors: None,
            headers,
            rewrite,
        })
    }

    /// Entries ordered by the spec's precedence, compiled; an entry that cannot be compiled
    /// is left out with a warning.
    fn api_rules(&mut self, mut list: Vec<Entry<'_>>, listener_port: u16) -> Vec<Arc<RouteRule>> {
        list.sort_by(Entry::precedence);
        // A route reaching one hostname through two listeners of a port counts once.
        list.dedup_by(|a, b| {
            std::ptr::eq(a.route, b.route) && a.rule_index == b.rule_index && a.match_index == b.match_index
        });
        let mut out = Vec::new();
        for e in &list {
            match self.api_rule(e, listener_port) {
                Ok(r) => out.push(Arc::new(r)),
                Err(why) => self.warnings.push(format!(
                    "{} {}: rules[{}]: skipped: {why}",
                    e.route.kind(),
                    e.route.reference,
                    e.rule_index
                )),
            }
        }
        out
    }

    /// A Gateway API Gateway's listeners: the routes attached to each, by port and hostname.
    pub(super) fn api_gateway(
        &mut self,
        table: &mut RouteTable,
        gw_ns: &str,
        gw_name: &str,
        gw: &KubernetesGatewaySpec,
    ) {
        if let Err(why) = class_accepted(self.snapshot, &gw.gateway_class_name) {
            self.warnings.push(format!("Gateway {gw_ns}/{gw_name}: {why}; not served"));
            return;
        }
        let routes = self.api_routes();
        let listeners: Vec<&Listener> = gw.listeners.iter().filter(|l| l.is_http()).collect();
        for l in gw.listeners.iter().filter(|l| !l.is_http()) {
            self.warnings.push(format!(
                "Gateway {gw_ns}/{gw_name}: listener {:?}: protocol {} is not served (HTTP and HTTPS are)",
                l.name, l.protocol
            ));
        }
        // (port, hostname) → the entries requests for it are matched against.
        let mut hosts: BTreeMap<(u16, String), Vec<Entry<'_>>> = BTreeMap::new();
        for route in &routes {
            let mine: Vec<&ParentReference> = route
                .parent_refs
                .iter()
                .filter(|p| p.is_gateway() && p.name == gw_name && p.namespace_or(&route.meta.namespace) == gw_ns)
                .collect();
            if mine.is_empty() {
                continue;
            }
            let mut attached = false;
            let mut refusals = Vec::new();
            for l in &listeners {
                let Ok(port) = u16::try_from(l.port) else { continue };
                let named = mine.iter().any(|p| {
                    p.section_name.as_deref().is_none_or(|s| s == l.name) && p.port.is_none_or(|pp| pp == l.port)
                });
                if !named {
                    continue;
                }
                if let Err(why) = allowed(l, route, gw_ns, self.snapshot) {
                    refusals.push(format!("listener {:?}: {why}", l.name));
                    continue;
                }
                let wanted: Vec<String> = if route.hostnames.is_empty() {
                    vec![l.hostname.clone().unwrap_or_else(|| "*".into())]
                } else {
                    route
                        .hostnames
                        .iter()
                        .filter_map(|h| intersect(l.hostname.as_deref(), &h.to_ascii_lowercase()))
                        .collect()
                };
                // Listener isolation: a host a more specific listener on this port claims is
                // that listener's alone.
                let mine_claim = |h: &str| claim(l.hostname.as_deref(), h);
                let wanted: Vec<String> = wanted
                    .into_iter()
                    .filter(|h| {
                        let own = mine_claim(h).unwrap_or(0);
                        !listeners.iter().any(|o| {
                            o.port == l.port
                                && o.name != l.name
                                && claim(o.hostname.as_deref(), h).is_some_and(|c| c > own)
                        })
                    })
                    .collect();
                if wanted.is_empty() {
                    refusals.push(format!(
                        "listener {:?}: no hostname in common (or each is a more specific listener's)",
                        l.name
                    ));
                    continue;
                }
                attached = true;
                let list = entries(route);
                for h in wanted {
                    hosts.entry((port, h)).or_default().extend(list.iter().copied());
                }
            }
            if !attached {
                self.warnings.push(format!(
                    "{} {}: not attached to Gateway {gw_ns}/{gw_name}: {}",
                    route.kind(),
                    route.reference,
                    if refusals.is_empty() {
                        "no listener matches its parentRefs".to_string()
                    } else {
                        refusals.join("; ")
                    }
                ));
            }
        }
        for ((port, host), list) in hosts {
            let list = self.one_kind(list, &host);
            let rules = self.api_rules(list, port);
            table.add(
                VirtualHost {
                    name: host.as_str().into(),
                    port: Some(port),
                    default_port: true,
                    virtual_service: None,
                    routes: rules.into(),
                },
                vec![host.clone()],
            );
        }
    }

    /// HTTPRoutes and GRPCRoutes are never merged on one hostname: the oldest route's kind
    /// keeps it.
    fn one_kind<'e>(&mut self, list: Vec<Entry<'e>>, host: &str) -> Vec<Entry<'e>> {
        let Some(oldest) = list.iter().min_by(|a, b| age_key(a.route.meta).cmp(&age_key(b.route.meta))).copied() else {
            return list;
        };
        let grpc = oldest.route.grpc;
        let (keep, drop): (Vec<_>, Vec<_>) = list.into_iter().partition(|e| e.route.grpc == grpc);
        let mut dropped: Vec<&str> = drop.iter().map(|e| &*e.route.reference).collect();
        dropped.dedup();
        for r in dropped {
            self.warnings.push(format!(
                "{} {r}: hostname {host} is already routed by {} {}; HTTPRoutes and GRPCRoutes are not merged, so it is left out for this hostname",
                if grpc { "HTTPRoute" } else { "GRPCRoute" },
                oldest.route.kind(),
                oldest.route.reference
            ));
        }
        keep
    }

    /// Mesh routes (GAMMA) for the sidecar of a client in `client_ns`: per Service FQDN,
    /// the entries and the Service port each route names (`None`: every port), and the
    /// oldest route's metadata (to weigh against a VirtualService).
    pub(super) fn api_mesh(&mut self, client_ns: &str) -> BTreeMap<String, MeshRoutes<'a>> {
        let routes = self.api_routes();
        let mut out: BTreeMap<String, MeshRoutes<'a>> = BTreeMap::new();
        for route in routes {
            let route = Arc::new(route);
            for p in route.parent_refs.iter().filter(|p| p.is_service()) {
                let svc_ns = p.namespace_or(&route.meta.namespace).to_string();
                let route_ns = route.meta.namespace.as_str();
                let consumer = route_ns != svc_ns;
                if consumer && route_ns != client_ns {
                    continue; // another namespace's consumer route
                }
                if !route.hostnames.is_empty() {
                    self.warnings.push(format!(
                        "{} {}: hostnames are not used for a Service parent (the Service names the traffic)",
                        route.kind(),
                        route.reference
                    ));
                }
                let fqdn = format!("{}.{svc_ns}.svc.{}", p.name, mesh_core::DEFAULT_DOMAIN_SUFFIX);
                // `port`, or `sectionName` naming a Service port; neither: every port.
                let named = match &p.section_name {
                    None => None,
                    Some(section) => {
                        let by_name = self
                            .registry
                            .service(&fqdn)
                            .and_then(|svc| svc.ports.iter().find(|sp| &sp.name == section).map(|sp| sp.number));
                        if by_name.is_none() {
                            self.warnings.push(format!(
                                "{} {}: Service {svc_ns}/{} has no port named {section:?}; not applied",
                                route.kind(),
                                route.reference,
                                p.name
                            ));
                            continue;
                        }
                        by_name
                    }
                };
                let port = p.port.and_then(|p| u16::try_from(p).ok()).or(named);
                let group = out.entry(fqdn).or_default();
                let list = if consumer { &mut group.consumer } else { &mut group.producer };
                list.push((route.clone(), port));
            }
        }
        out
    }

    /// The rules for one Service port from its mesh routes (consumer routes replace the
    /// producer ones); `None` when no route names this port.
    pub(super) fn api_mesh_rules(&mut self, routes: &MeshRoutes<'a>, port: u16) -> Option<Vec<Arc<RouteRule>>> {
        let pick = |list: &'_ [(Arc<ApiRoute<'a>>, Option<u16>)]| -> Vec<Arc<ApiRoute<'a>>> {
            list.iter().filter(|(_, p)| p.is_none_or(|p| p == port)).map(|(r, _)| r.clone()).collect()
        };
        let mut chosen = pick(&routes.consumer);
        if chosen.is_empty() {
            chosen = pick(&routes.producer);
        }
        if chosen.is_empty() {
            return None;
        }
        let list: Vec<Entry<'_>> = chosen.iter().flat_map(|r| entries(r)).collect();
        let list = self.one_kind(list, &format!("port {port}"));
        Some(self.api_rules(list, port))
    }
}

/// The mesh routes of one Service.
#[derive(Default)]
pub(super) struct MeshRoutes<'a> {
    producer: Vec<(Arc<ApiRoute<'a>>, Option<u16>)>,
    consumer: Vec<(Arc<ApiRoute<'a>>, Option<u16>)>,
}

impl MeshRoutes<'_> {
    /// Whether a consumer route (in the client's namespace) is among them.
    pub(super) fn has_consumer(&self) -> bool {
        !self.consumer.is_empty()
    }

    /// The oldest route's metadata and `namespace/name`.
    pub(super) fn oldest(&self) -> Option<(&ObjectMeta, &str)> {
        self.consumer
            .iter()
            .chain(&self.producer)
            .map(|(r, _)| (r.meta, &*r.reference))
            .min_by(|a, b| age_key(a.0).cmp(&age_key(b.0)))
    }
}

/// Whether a listener lets `route` attach.
fn allowed(
    l: &Listener,
    route: &ApiRoute<'_>,
    gw_ns: &str,
    snapshot: &mesh_config::Snapshot,
) -> Result<(), NotAllowed> {
    if !l.allows_kind(Some(GROUP), route.kind()) {
        return Err(NotAllowed::Kind(route.kind()));
    }
    let ns = &route.meta.namespace;
    let from = l.allowed_routes.as_ref().and_then(|a| a.namespaces.as_ref());
    match from.and_then(|f| f.from).unwrap_or_default() {
        FromNamespaces::All => Ok(()),
        FromNamespaces::Same if ns == gw_ns => Ok(()),
        FromNamespaces::Same => Err(NotAllowed::Namespace { gateway: gw_ns.to_string(), route: ns.clone() }),
        FromNamespaces::Selector => {
            let sel = from.and_then(|f| f.selector.as_ref());
            if sel.is_some_and(|s| s.matches(&snapshot.namespace_labels(ns))) {
                Ok(())
            } else {
                Err(NotAllowed::Selector(ns.clone()))
            }
        }
    }
}

/// Why a GatewayClass is not this mesh's to serve.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClassRefused {
    /// It names another controller.
    #[error("GatewayClass {class} belongs to controller {controller:?}, not to this mesh ({})", CONTROLLERS.join(" or "))]
    OtherController {
        /// The class.
        class: String,
        /// Its `controllerName`.
        controller: String,
    },
    /// No such GatewayClass (only `istio` needs none).
    #[error("GatewayClass {0:?} is not defined (class `istio` needs none)")]
    Undefined(String),
}

/// Why the servers of a gateway cannot be made ([`gateway_servers`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GatewayServersError {
    /// An Istio Gateway and a Gateway API Gateway have the name.
    #[error(
        "--gateway {ns}/{name} names two Gateways: the Istio Gateway {ns}/{name} (networking.istio.io) and the Gateway API Gateway {ns}/{name} (gateway.networking.k8s.io); rename one"
    )]
    TwoGateways {
        /// Namespace.
        ns: String,
        /// Name.
        name: String,
    },
    /// The Gateway's class is not this mesh's.
    #[error("Gateway {ns}/{name}: {why}")]
    Class {
        /// Namespace.
        ns: String,
        /// Name.
        name: String,
        /// Why.
        why: ClassRefused,
    },
    /// An HTTPS listener without a certificate.
    #[error("Gateway {ns}/{name} listener {listener:?}: HTTPS needs certificateRefs")]
    NoCertificate {
        /// Namespace.
        ns: String,
        /// Name.
        name: String,
        /// The listener.
        listener: String,
    },
    /// A certificate Secret in another namespace that no ReferenceGrant allows.
    #[error(
        "Gateway {ns}/{name} listener {listener:?}: Secret {secret_ns}/{secret} is in another namespace and no ReferenceGrant in {secret_ns} allows Gateways from {ns}"
    )]
    SecretNotGranted {
        /// Namespace.
        ns: String,
        /// Name.
        name: String,
        /// The listener.
        listener: String,
        /// The Secret's namespace.
        secret_ns: String,
        /// The Secret.
        secret: String,
    },
    /// No Gateway of that name.
    #[error("--gateway {ns}/{name}: no such Gateway in the config")]
    NoSuchGateway {
        /// Namespace.
        ns: String,
        /// Name.
        name: String,
    },
}

/// Whether Gateways of `class` are this mesh's to serve.
pub fn class_accepted(snapshot: &mesh_config::Snapshot, class: &str) -> Result<(), ClassRefused> {
    let object = snapshot.of_kind(Kind::GatewayClass).find_map(|r| match &**r {
        Resource::GatewayClass(c) if c.metadata.name == class => Some(c),
        _ => None,
    });
    match object {
        Some(c) if CONTROLLERS.contains(&c.spec.controller_name.as_str()) => Ok(()),
        Some(c) => {
            Err(ClassRefused::OtherController { class: class.into(), controller: c.spec.controller_name.clone() })
        }
        None if class == "istio" => Ok(()),
        None => Err(ClassRefused::Undefined(class.into())),
    }
}

/// The servers of the gateway `ns/name` (what `--gateway` serves): an Istio Gateway's as written, or a Gateway API
/// Gateway's HTTP and HTTPS listeners as the servers Istio's controller makes of them (an
/// HTTPS listener's first certificateRef is the `credentialName`: a Secret of the Gateway's
/// namespace is `--credential-dir/NAME`, another namespace's, which needs a ReferenceGrant,
/// `--credential-dir/NS/NAME`). The two kinds under one name are refused.
pub fn gateway_servers(
    snapshot: &mesh_config::Snapshot,
    ns: &str,
    name: &str,
) -> Result<Vec<Server>, GatewayServersError> {
    let (gw_ns, gw_name) = (ns.to_string(), name.to_string());
    let istio = snapshot.get(Kind::Gateway, ns, name);
    let api = snapshot.get(Kind::KubernetesGateway, ns, name);
    match (istio.map(|r| &**r), api.map(|r| &**r)) {
        (Some(_), Some(_)) => Err(GatewayServersError::TwoGateways { ns: gw_ns, name: gw_name }),
        (Some(Resource::Gateway(gw)), None) => Ok(gw.spec.servers.clone()),
        (None, Some(Resource::KubernetesGateway(gw))) => {
            class_accepted(snapshot, &gw.spec.gateway_class_name).map_err(|why| GatewayServersError::Class {
                ns: gw_ns.clone(),
                name: gw_name.clone(),
                why,
            })?;
            let mut out = Vec::new();
            for l in &gw.spec.listeners {
                let tls = match (l.protocol.as_str(), &l.tls) {
                    ("HTTP", _) => None,
                    ("HTTPS", Some(tls)) => {
                        let Some(cert) = tls.certificate_refs.first() else {
                            return Err(GatewayServersError::NoCertificate {
                                ns: gw_ns,
                                name: gw_name,
                                listener: l.name.clone(),
                            });
                        };
                        // More than one is a load-time warning (validation).
                        let credential = match cert.namespace.as_deref() {
                            None => cert.name.clone(),
                            Some(cns) if cns == ns => cert.name.clone(),
                            Some(cns) => {
                                if !snapshot.reference_granted("Gateway", ns, cns, "Secret", &cert.name) {
                                    return Err(GatewayServersError::SecretNotGranted {
                                        ns: gw_ns,
                                        name: gw_name,
                                        listener: l.name.clone(),
                                        secret_ns: cns.into(),
                                        secret: cert.name.clone(),
                                    });
                                }
                                format!("{cns}/{}", cert.name)
                            }
                        };
                        Some(mesh_config::api::ServerTlsSettings {
                            mode: Some(mesh_config::api::ServerTlsMode::Simple),
                            credential_name: Some(credential),
                            ..Default::default()
                        })
                    }
                    _ => continue, // refused at --listen time, reported by the route table
                };
                out.push(Server {
                    port: mesh_config::api::GatewayPort {
                        number: l.port,
                        protocol: l.protocol.clone(),
                        name: l.name.clone(),
                        ..Default::default()
                    },
                    hosts: vec![l.hostname.clone().unwrap_or_else(|| "*".into())],
                    tls,
                    name: Some(l.name.clone()),
                    ..Default::default()
                });
            }
            Ok(out)
        }
        _ => Err(GatewayServersError::NoSuchGateway { ns: gw_ns, name: gw_name }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{ProxyContext, explain::Explanation, matching::RequestInfo};
    use mesh_config::{
        load::{LoadOptions, load_str},
        registry::{Locator, Registry},
    };
    use mesh_core::Labels;

    const SERVICES: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: apps}\nspec: {ports: [{port: 80, name: http}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: b, namespace: apps}\nspec: {ports: [{port: 80, name: http}]}\n";

    const API_GATEWAY: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web, namespace: infra}
spec:
  gatewayClassName: istio
  listeners:
  - {name: http, port: 80, protocol: HTTP}
  - name: https
    port: 443
    protocol: HTTPS
    hostname: secure.example.com
    tls: {certificateRefs: [{name: cert, namespace: certs}]}
"#;

    const SECRET_GRANT: &str = r#"
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: gateways-may-read, namespace: certs}
spec:
  from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: infra}]
  to: [{group: "", kind: Secret, name: cert}]
"#;

    #[test]
    fn a_gateway_api_gateway_s_listeners_are_servers_and_a_secret_elsewhere_needs_a_grant() {
        let load = |yaml: &str| {
            let loaded = load_str("gw.yaml", yaml, &LoadOptions::default());
            assert!(!loaded.has_errors(), "{}", loaded.report());
            loaded.into_snapshot()
        };
        let err = gateway_servers(&load(API_GATEWAY), "infra", "web").unwrap_err().to_string();
        assert!(err.contains("Secret certs/cert is in another namespace and no ReferenceGrant in certs"), "{err}");
        let got = gateway_servers(&load(&format!("{API_GATEWAY}---{SECRET_GRANT}")), "infra", "web").unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].port.number, got[0].hosts.as_slice(), got[0].tls.is_none()),
            (80, &["*".to_string()][..], true)
        );
        let tls = got[1].tls.as_ref().unwrap();
        assert_eq!(
            (got[1].hosts[0].as_str(), tls.credential_name.as_deref()),
            ("secure.example.com", Some("certs/cert"))
        );
        // Another controller's class is not ours to serve.
        let theirs = API_GATEWAY.replace("gatewayClassName: istio", "gatewayClassName: nginx");
        let err = gateway_servers(&load(&theirs), "infra", "web").unwrap_err().to_string();
        assert!(err.contains("GatewayClass \"nginx\" is not defined"), "{err}");
    }

    fn table(yaml: &str, ctx: &ProxyContext) -> RouteTable {
        let loaded = load_str("t.yaml", &format!("{SERVICES}---\n{yaml}"), &LoadOptions::default());
        assert!(!loaded.has_errors(), "{}", loaded.report());
        let snapshot = loaded.into_snapshot();
        RouteTable::compile(&snapshot, &Registry::build(&snapshot, &Locator::new()), ctx)
    }

    fn explain(t: &RouteTable, host: &str, path: &str, port: Option<u16>) -> Explanation {
        let headers = http::HeaderMap::new();
        let req = RequestInfo { method: "GET", scheme: "http", authority: host, path, query: None, headers: &headers };
        Explanation::of(t, &req, port)
    }

    fn gateway(listener: &str) -> String {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: infra}}\nspec: {{gatewayClassName: istio, listeners: [{listener}]}}\n---\n"
        )
    }

    fn route(kind: &str, ns: &str, name: &str, extra: &str, backend: &str) -> String {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: {kind}\nmetadata: {{name: {name}, namespace: {ns}{extra}}}\nspec:\n  parentRefs: [{{name: gw, namespace: infra}}]\n  hostnames: [x.example.com]\n  rules: [{{backendRefs: [{{name: {backend}, namespace: apps, port: 80}}]}}]\n---\n"
        )
    }

    const GRANT: &str = "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {name: g, namespace: apps}\nspec: {from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: team}, {group: gateway.networking.k8s.io, kind: GRPCRoute, namespace: team}], to: [{group: '', kind: Service}]}\n---\n";

    #[test]
    fn allowed_routes_select_namespaces_by_label_and_kinds() {
        let gw = ProxyContext::gateway("infra", "gw");
        let selector = gateway(
            "{name: l, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: Selector, selector: {matchExpressions: [{key: kubernetes.io/metadata.name, operator: In, values: [team]}]}}}}",
        );
        let t = table(&format!("{selector}{GRANT}{}", route("HTTPRoute", "team", "r", "", "a")), &gw);
        assert_eq!(explain(&t, "x.example.com", "/", Some(80)).http_route.as_deref(), Some("team/r"));
        let t = table(&format!("{selector}{GRANT}{}", route("HTTPRoute", "other", "r", "", "a")), &gw);
        assert_eq!(explain(&t, "x.example.com", "/", Some(80)).action, "no_route");
        assert!(t.warnings.iter().any(|w| w.contains("namespace other is not selected")), "{:?}", t.warnings);

        // The labels a Namespace object gives, as on a cluster; a label change moves the route.
        let by_label = gateway(
            "{name: l, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: Selector, selector: {matchLabels: {shared-gateway-access: 'true'}}}}}",
        );
        let ns = |labels: &str| {
            format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: team, labels: {{{labels}}}}}\n---\n")
        };
        let yaml =
            |labels: &str| format!("{by_label}{}{GRANT}{}", ns(labels), route("HTTPRoute", "team", "r", "", "a"));
        let t = table(&yaml("shared-gateway-access: 'true'"), &gw);
        assert_eq!(explain(&t, "x.example.com", "/", Some(80)).http_route.as_deref(), Some("team/r"));
        let t = table(&yaml("shared-gateway-access: 'false'"), &gw);
        assert_eq!(explain(&t, "x.example.com", "/", Some(80)).action, "no_route");
        assert!(t.warnings.iter().any(|w| w.contains("namespace team is not selected")), "{:?}", t.warnings);
        // Without a Namespace object, a namespace has only its name label.
        let t = table(&format!("{by_label}{GRANT}{}", route("HTTPRoute", "team", "r", "", "a")), &gw);
        assert_eq!(explain(&t, "x.example.com", "/", Some(80)).action, "no_route");

        let grpc_only = gateway(
            "{name: l, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}, kinds: [{kind: GRPCRoute}]}}",
        );
        let t = table(&format!("{grpc_only}{GRANT}{}", route("HTTPRoute", "team", "r", "", "a")), &gw);
        assert_eq!(explain(&t, "x.example.com", "/", Some(80)).action, "no_route");
        assert!(
            t.warnings.iter().any(|w| w.contains("HTTPRoute is not among its allowedRoutes.kinds")),
            "{:?}",
            t.warnings
        );
    }

    #[test]
    fn an_httproute_and_a_grpcroute_never_share_a_hostname_the_oldest_keeps_it() {
        let gw = ProxyContext::gateway("infra", "gw");
        let all = gateway("{name: l, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}");
        let old = ", creationTimestamp: '2024-01-01T00:00:00Z'";
        let new = ", creationTimestamp: '2025-01-01T00:00:00Z'";
        let yaml = format!(
            "{all}{GRANT}{}{}",
            route("GRPCRoute", "team", "g", old, "a"),
            route("HTTPRoute", "team", "h", new, "b")
        );
        let t = table(&yaml, &gw);
        assert_eq!(explain(&t, "x.example.com", "/", Some(80)).http_route.as_deref(), Some("team/g"));
        assert!(
            t.warnings
                .iter()
                .any(|w| w.contains("HTTPRoute team/h: hostname x.example.com is already routed by GRPCRoute team/g")),
            "{:?}",
            t.warnings
        );
    }

    #[test]
    fn a_gateway_of_another_controller_is_not_served() {
        let gw = ProxyContext::gateway("infra", "gw");
        let listener = "{name: l, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}";
        let theirs = format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: nginx}}\nspec: {{controllerName: k8s.io/ingress-nginx}}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: infra}}\nspec: {{gatewayClassName: nginx, listeners: [{listener}]}}\n---\n"
        );
        let t = table(&format!("{theirs}{GRANT}{}", route("HTTPRoute", "team", "r", "", "a")), &gw);
        assert_eq!(explain(&t, "x.example.com", "/", Some(80)).action, "no_route");
        assert!(
            t.warnings.iter().any(|w| w.contains("belongs to controller \"k8s.io/ingress-nginx\"")),
            "{:?}",
            t.warnings
        );
        let ours = theirs.replace("k8s.io/ingress-nginx", "istio.io/gateway-controller");
        let t = table(&format!("{ours}{GRANT}{}", route("HTTPRoute", "team", "r", "", "a")), &gw);
        assert_eq!(explain(&t, "x.example.com", "/", Some(80)).http_route.as_deref(), Some("team/r"));
    }

    #[test]
    fn a_mesh_route_names_a_service_port_by_number_or_by_name() {
        let route = |parent: &str| {
            format!(
                "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r, namespace: apps}}\nspec:\n  parentRefs: [{{group: '', kind: Service, name: a, {parent}}}]\n  rules: [{{backendRefs: [{{name: b, port: 80}}]}}]\n"
            )
        };
        let client = ProxyContext::sidecar("apps", Labels::new());
        for parent in ["port: 80", "sectionName: http"] {
            let t = table(&route(parent), &client);
            assert_eq!(explain(&t, "a", "/", Some(80)).http_route.as_deref(), Some("apps/r"), "{parent}");
        }
        let t = table(&route("sectionName: grpc"), &client);
        assert_eq!(explain(&t, "a", "/", Some(80)).http_route, None);
        assert!(t.warnings.iter().any(|w| w.contains("has no port named \"grpc\"")), "{:?}", t.warnings);
        let t = table(&route("port: 81"), &client);
        assert_eq!(explain(&t, "a", "/", Some(80)).http_route, None, "another port's route");
    }

    #[test]
    fn a_virtualservice_and_a_mesh_httproute_on_one_service_the_older_applies() {
        let mesh_route = |ts: &str| {
            format!(
                "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r, namespace: apps, creationTimestamp: '{ts}'}}\nspec:\n  parentRefs: [{{group: '', kind: Service, name: a}}]\n  rules: [{{backendRefs: [{{name: b, port: 80}}]}}]\n---\n"
            )
        };
        let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: v, namespace: apps, creationTimestamp: '2024-06-01T00:00:00Z'}\nspec: {hosts: [a], http: [{route: [{destination: {host: a}}]}]}\n";
        let client = ProxyContext::sidecar("apps", Labels::new());
        let t = table(&format!("{}{vs}", mesh_route("2024-01-01T00:00:00Z")), &client);
        let e = explain(&t, "a", "/", Some(80));
        assert_eq!((e.http_route.as_deref(), e.virtual_service.as_deref()), (Some("apps/r"), None));
        assert!(
            t.warnings
                .iter()
                .any(|w| w.contains("both HTTPRoute apps/r and VirtualService apps/v; HTTPRoute apps/r applies")),
            "{:?}",
            t.warnings
        );
        let t = table(&format!("{}{vs}", mesh_route("2025-01-01T00:00:00Z")), &client);
        let e = explain(&t, "a", "/", Some(80));
        assert_eq!((e.http_route.as_deref(), e.virtual_service.as_deref()), (None, Some("apps/v")));
    }

    #[test]
    fn hostnames_intersect_as_the_spec_says() {
        assert_eq!(intersect(None, "foo.com").as_deref(), Some("foo.com"));
        assert_eq!(intersect(Some("foo.com"), "foo.com").as_deref(), Some("foo.com"));
        assert_eq!(intersect(Some("*.example.com"), "a.b.example.com").as_deref(), Some("a.b.example.com"));
        assert_eq!(intersect(Some("a.example.com"), "*.example.com").as_deref(), Some("a.example.com"));
        assert_eq!(intersect(Some("*.example.com"), "*.a.example.com").as_deref(), Some("*.a.example.com"));
        assert_eq!(intersect(Some("*.a.example.com"), "*.example.com").as_deref(), Some("*.a.example.com"));
        assert_eq!(intersect(Some("*.example.com"), "example.com"), None);
        assert_eq!(intersect(Some("foo.com"), "bar.com"), None);
        assert_eq!(claim(Some("*.example.com"), "a.example.com"), Some(13));
        assert_eq!(claim(Some("a.example.com"), "a.example.com"), Some(usize::MAX));
        assert_eq!(claim(None, "x"), Some(0));
    }
}
