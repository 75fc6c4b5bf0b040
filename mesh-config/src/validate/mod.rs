//! Load-time validation, as Istio's webhook and `istioctl analyze` do it.
//!
//! [`validate`] checks one resource (errors reject it; warnings do not);
//! [`validate_set`] checks what can only be seen across resources (a route to a subset no
//! DestinationRule defines, the same object defined twice). Findings name the field path;
//! the loader places them on a line.
//!
//! The rules of a field that a feature crate compiles (a `fault` block's ranges, a route
//! that matches every request) are written once, in that feature, as a [`Rule`]; the
//! composition hands them to the loader in [`LoadOptions::rules`](crate::load::LoadOptions),
//! so `meshctl analyze`, the sidecar and the webhook report them at file:line:field like
//! mesh-config's own. Loaded without them, such a field is checked when the feature compiles
//! it, and a bad one is skipped with a warning.

use std::collections::{HashMap, HashSet};

mod gateway_api;
mod kube;
mod networking;
mod security;
mod telemetry;

use kube::*;
pub use networking::RETRY_ON_POLICIES;
use networking::*;
use security::*;
use telemetry::*;

use crate::{
    api::*,
    diag::{FieldPath, Finding},
    load::LoadedResource,
    snapshot::{ResourceKey, host_matches, resolve_host},
    string_match::compile_full_match,
};

/// A feature's own rules for the fields it compiles, asked by the loader after
/// mesh-config's. Findings name the field from the resource's root (`spec.http[0].fault`).
pub trait Rule: Send + Sync + std::fmt::Debug {
    /// Add the findings about one resource to `out`.
    fn check(&self, resource: &Resource, out: &mut Vec<Finding>);
}

/// Findings about one resource.
pub fn validate(resource: &Resource) -> Vec<Finding> {
    let mut v = Findings::default();
    let spec = FieldPath::root().key("spec");
    match resource {
        Resource::VirtualService(o) => virtual_service(&mut v, &spec, &o.spec),
        Resource::DestinationRule(o) => destination_rule(&mut v, &spec, &o.spec),
        Resource::Gateway(o) => gateway(&mut v, &spec, &o.spec),
        Resource::ServiceEntry(o) => service_entry(&mut v, &spec, &o.spec),
        Resource::WorkloadEntry(o) => workload_entry(&mut v, &spec, &o.spec),
        Resource::Sidecar(o) => sidecar(&mut v, &spec, &o.spec),
        Resource::PeerAuthentication(o) => peer_authentication(&mut v, &spec, &o.spec, &o.metadata),
        Resource::AuthorizationPolicy(o) => authorization_policy(&mut v, &spec, &o.spec, &o.metadata),
        Resource::RequestAuthentication(o) => request_authentication(&mut v, &spec, &o.spec),
        Resource::Telemetry(o) => telemetry(&mut v, &spec, &o.spec),
        Resource::Service(o) => service(&mut v, &spec, &o.spec),
        Resource::ServiceAccount(_) | Resource::Pod(_) | Resource::EndpointSlice(_) | Resource::Namespace(_) => {}
        Resource::Deployment(o) => deployment(&mut v, &spec, &o.spec),
        Resource::GatewayClass(o) => gateway_api::gateway_class(&mut v, &spec, &o.spec),
        Resource::KubernetesGateway(o) => gateway_api::kubernetes_gateway(&mut v, &spec, &o.spec),
        Resource::HttpRoute(o) => gateway_api::http_route(&mut v, &spec, &o.spec),
        Resource::GrpcRoute(o) => gateway_api::grpc_route(&mut v, &spec, &o.spec),
        Resource::ReferenceGrant(o) => gateway_api::reference_grant(&mut v, &spec, &o.spec),
    }
    v.0
}

#[derive(Default)]
struct Findings(Vec<Finding>);

impl Findings {
    fn error(&mut self, path: FieldPath, msg: impl Into<String>) {
        self.0.push(Finding::error(path, msg));
    }
    fn warning(&mut self, path: FieldPath, msg: impl Into<String>) {
        self.0.push(Finding::warning(path, msg));
    }
}

// === shared checks ===

fn regex(v: &mut Findings, path: FieldPath, pattern: &str) {
    if let Err(e) = compile_full_match(pattern) {
        v.error(path, e.to_string());
    }
}

fn percent(v: &mut Findings, path: FieldPath, p: &Percent) {
    if !(0.0..=100.0).contains(&p.value) || p.value.is_nan() {
        v.error(path.key("value"), format!("percentage must be within 0..=100, got {}", p.value));
    }
}

/// Istio's duration rule: at least 1 ms, millisecond precision.
fn min_duration(v: &mut Findings, path: FieldPath, d: &mesh_core::Duration) {
    if let Err(e) = d.check_field() {
        v.error(path, e.to_string());
    }
}

fn port_number(v: &mut Findings, path: FieldPath, n: u32) {
    if !(1..=65535).contains(&n) {
        v.error(path, format!("port number {n} must be within 1..=65535"));
    }
}

fn non_negative(v: &mut Findings, path: FieldPath, n: Option<i32>) {
    if let Some(n) = n.filter(|n| *n < 0) {
        v.error(path, format!("must not be negative, got {n}"));
    }
}

fn dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A host as VS/DR/SE write it: a DNS name, optionally starting with `*.`, or `*`.
fn host_name(v: &mut Findings, path: FieldPath, host: &str) {
    if host.is_empty() {
        v.error(path, "host must not be empty");
        return;
    }
    let name = host.strip_prefix("*.").unwrap_or(host);
    if host == "*" {
        return;
    }
    let ok = name.split('.').all(|l| {
        !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    if !ok || name.contains('*') {
        v.error(path, format!("invalid host {host:?}: a DNS name, optionally starting with \"*.\", or \"*\""));
    }
}

// === across resources ===

/// Findings that need several resources, as (index into `resources`, finding).
pub fn validate_set(resources: &[LoadedResource]) -> Vec<(usize, Finding)> {
    let mut out = Vec::new();

    // The same object twice: the later one replaces the earlier, like `kubectl apply`.
    let mut seen: HashMap<ResourceKey, usize> = HashMap::new();
    let name = FieldPath::root().key("metadata").key("name");
    for (i, r) in resources.iter().enumerate() {
        if let Some(prev) = seen.insert(ResourceKey::of(&r.resource), i) {
            let p = &resources[prev];
            let msg =
                format!("defined more than once; this definition replaces the one at {}:{}", p.file, p.line_of(&name));
            out.push((i, Finding::warning(name.clone(), msg)));
        }
    }
    let winners: HashSet<usize> = seen.values().copied().collect();

    // An Istio Gateway and a Gateway API Gateway of one name: `--gateway NS/NAME` cannot
    // tell which to serve.
    for (i, r) in resources.iter().enumerate() {
        if let (true, Resource::KubernetesGateway(g)) = (winners.contains(&i), &*r.resource) {
            let (ns, n) = (&g.metadata.namespace, &g.metadata.name);
            let istio = resources.iter().any(|o| matches!(&*o.resource, Resource::Gateway(x) if &x.metadata.namespace == ns && &x.metadata.name == n));
            if istio {
                let msg = format!(
                    "{ns}/{n} is both an Istio Gateway (networking.istio.io) and a Gateway API Gateway (gateway.networking.k8s.io): a gateway proxy given --gateway {ns}/{n} refuses to serve either; rename one"
                );
                out.push((i, Finding::warning(name.clone(), msg)));
            }
        }
    }

    out.extend(gateway_api::references(resources, &winners));

    // Subsets each DestinationRule host defines.
    let mut subsets: Vec<(String, &str)> = Vec::new();
    for (i, r) in resources.iter().enumerate() {
        if let (true, Resource::DestinationRule(dr)) = (winners.contains(&i), &*r.resource) {
            let host = resolve_host(&dr.spec.host, &dr.metadata.namespace);
            subsets.extend(dr.spec.subsets.iter().map(|s| (host.clone(), s.name.as_str())));
        }
    }
    let defined =
        |host: &str, subset: &str| subsets.iter().any(|(h, s)| *s == subset && (h == host || host_matches(h, host)));

    for (i, r) in resources.iter().enumerate() {
        let Resource::VirtualService(vs) = &*r.resource else { continue };
        if !winners.contains(&i) {
            continue;
        }
        let ns = &vs.metadata.namespace;
        let mut check = |path: FieldPath, d: &Destination| {
            if let Some(subset) = &d.subset {
                let host = resolve_host(&d.host, ns);
                if !defined(&host, subset) {
                    out.push((
                        i,
                        Finding::warning(
                            path.key("subset"),
                            format!("subset {subset:?} is not defined by any DestinationRule for {host}; requests will fail with 503 (NC)"),
                        ),
                    ));
                }
            }
        };
        for (h, route) in vs.spec.http.iter().enumerate() {
            let rp = FieldPath::root().key("spec").key("http").index(h);
            for (j, d) in route.route.iter().enumerate() {
                check(rp.key("route").index(j).key("destination"), &d.destination);
            }
            if let Some(m) = &route.mirror {
                check(rp.key("mirror"), m);
            }
        }
        for (kind, routes) in [
            ("tcp", vs.spec.tcp.iter().map(|r| &r.route).collect::<Vec<_>>()),
            ("tls", vs.spec.tls.iter().map(|r| &r.route).collect()),
        ] {
            for (h, route) in routes.into_iter().enumerate() {
                for (j, d) in route.iter().enumerate() {
                    check(
                        FieldPath::root().key("spec").key(kind).index(h).key("route").index(j).key("destination"),
                        &d.destination,
                    );
                }
            }
        }
    }
    out
}
