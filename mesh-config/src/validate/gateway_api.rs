//! Checks of the Gateway API kinds, as the CRDs' schemas and CEL rules make them (the API
//! server refuses these before any controller sees them), plus a refusal of the fields the
//! mesh does not apply, so that nothing a user wrote is dropped in silence.

use std::collections::HashSet;

use super::{Findings, port_number, regex};
use crate::{
    api::{gateway_api::*, *},
    diag::{FieldPath, Finding},
    load::LoadedResource,
};

/// A Gateway API `Hostname`: a DNS name, optionally with a leading `*.` label; no IP address,
/// no port, no lone `*`.
fn hostname(v: &mut Findings, path: FieldPath, host: &str) {
    let name = host.strip_prefix("*.").unwrap_or(host);
    let ok = !name.is_empty()
        && host.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    if !ok {
        v.error(
            path,
            format!(
                "invalid hostname {host:?}: a lower-case DNS name, optionally starting with \"*.\" (no IP, no port)"
            ),
        );
    } else if name.parse::<std::net::Ipv4Addr>().is_ok() {
        v.error(path, format!("invalid hostname {host:?}: IP addresses are not allowed"));
    }
}

fn header_name(v: &mut Findings, path: FieldPath, name: &str) {
    if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
        v.error(path, format!("invalid header name {name:?}"));
    }
}

fn parent_refs(v: &mut Findings, spec: &FieldPath, refs: &[ParentReference], route_kind: &str) {
    let mut seen = HashSet::new();
    for (i, p) in refs.iter().enumerate() {
        let path = spec.key("parentRefs").index(i);
        if p.name.is_empty() {
            v.error(path.key("name"), "name is required");
        }
        if !p.is_gateway() && !p.is_service() {
            v.error(
                path.key("kind"),
                format!(
                    "{route_kind} parents are Gateways (group {GROUP}) or Services (group \"\", kind Service); got group {:?} kind {:?}",
                    p.group.as_deref().unwrap_or(GROUP),
                    p.kind.as_deref().unwrap_or("Gateway")
                ),
            );
        }
        if let Some(port) = p.port {
            port_number(v, path.key("port"), port);
        }
        let key = (p.is_service(), &p.namespace, &p.name, &p.section_name, p.port);
        if !seen.insert(key) {
            v.error(path, "the same parent is referenced twice (name, namespace, sectionName and port must differ)");
        }
    }
}

fn hostnames(v: &mut Findings, spec: &FieldPath, hosts: &[String]) {
    for (i, h) in hosts.iter().enumerate() {
        hostname(v, spec.key("hostnames").index(i), h);
    }
}

/// Path values the API server refuses for `Exact` and `PathPrefix`.
fn path_value(v: &mut Findings, path: FieldPath, value: &str) {
    let bad = !value.starts_with('/')
        || ["//", "/./", "/../", "%2f", "%2F", "#"].iter().any(|s| value.contains(s))
        || value.ends_with("/..")
        || value.ends_with("/.");
    if bad {
        v.error(
            path,
            format!(
                "invalid path {value:?}: must start with '/' and contain no '//', '/./', '/../', '%2f', '%2F' or '#', nor end in '/.' or '/..'"
            ),
        );
    }
}

fn value_matches(v: &mut Findings, path: &FieldPath, field: &str, list: &[HttpHeaderMatch], headers: bool) {
    let mut seen = HashSet::new();
    for (i, m) in list.iter().enumerate() {
        let p = path.key(field).index(i);
        if m.name.is_empty() {
            v.error(p.key("name"), "name is required");
        } else if headers {
            header_name(v, p.key("name"), &m.name);
        }
        let key = if headers { m.name.to_ascii_lowercase() } else { m.name.clone() };
        if !seen.insert(key) {
            v.error(p.key("name"), format!("{:?} is matched twice in one match", m.name));
        }
        if m.match_type == Some(ValueMatchType::RegularExpression) {
            regex(v, p.key("value"), &m.value);
        }
    }
}

const METHODS: [&str; 9] = ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"];

/// Names are unique within each of `set`, `add` and `remove` (case-insensitively), as the
/// CRD's rules say.
fn header_filter(v: &mut Findings, path: FieldPath, h: &HttpHeaderFilter) {
    for (field, list) in [("set", &h.set), ("add", &h.add)] {
        let mut seen = HashSet::new();
        for (i, kv) in list.iter().enumerate() {
            let p = path.key(field).index(i);
            header_name(v, p.key("name"), &kv.name);
            if http::HeaderValue::from_str(&kv.value).is_err() {
                v.error(p.key("value"), format!("invalid header value {:?}", kv.value));
            }
            if !seen.insert(kv.name.to_ascii_lowercase()) {
                v.error(p.key("name"), format!("header {:?} appears twice in {field}", kv.name));
            }
        }
    }
    let mut seen = HashSet::new();
    for (i, name) in h.remove.iter().enumerate() {
        header_name(v, path.key("remove").index(i), name);
        if !seen.insert(name.to_ascii_lowercase()) {
            v.error(path.key("remove").index(i), format!("header {name:?} appears twice in remove"));
        }
    }
}

fn backend_ref(v: &mut Findings, path: &FieldPath, b: &BackendObjectReference) {
    if b.name.is_empty() {
        v.error(path.key("name"), "name is required");
    }
    if b.group_kind() == ("", "Service") {
        match b.port {
            None => v.error(path.key("port"), "port is required when referring to a Service"),
            Some(p) => port_number(v, path.key("port"), p),
        }
    }
}

fn path_modifier(v: &mut Findings, path: FieldPath, m: &HttpPathModifier, prefix_ok: bool) {
    match (m.modifier_type.as_str(), &m.replace_full_path, &m.replace_prefix_match) {
        ("ReplaceFullPath", Some(p), None) => path_value(v, path.key("replaceFullPath"), p),
        ("ReplacePrefixMatch", None, Some(p)) => {
            path_value(v, path.key("replacePrefixMatch"), p);
            if !prefix_ok {
                v.error(
                    path.key("replacePrefixMatch"),
                    "ReplacePrefixMatch needs the rule to have exactly one match, of type PathPrefix",
                );
            }
        }
        ("ReplaceFullPath", _, _) => {
            v.error(path.key("replaceFullPath"), "type ReplaceFullPath sets replaceFullPath only")
        }
        ("ReplacePrefixMatch", _, _) => {
            v.error(path.key("replacePrefixMatch"), "type ReplacePrefixMatch sets replacePrefixMatch only")
        }
        (t, _, _) => {
            v.error(path.key("type"), format!("unknown path modifier {t:?}: ReplaceFullPath or ReplacePrefixMatch"))
        }
    }
}

/// Where a filter list sits: a rule of an HTTPRoute or GRPCRoute, or one backendRef.
#[derive(Clone, Copy, PartialEq)]
enum FilterSite {
    HttpRule { prefix_ok: bool },
    GrpcRule,
    Backend { prefix_ok: bool, grpc: bool },
}

fn filters(v: &mut Findings, path: &FieldPath, list: &[HttpRouteFilter], site: FilterSite) {
    let mut seen: HashSet<&str> = HashSet::new();
    for (i, f) in list.iter().enumerate() {
        let p = path.key("filters").index(i);
        let set = [
            ("RequestHeaderModifier", f.request_header_modifier.is_some()),
            ("ResponseHeaderModifier", f.response_header_modifier.is_some()),
            ("RequestMirror", f.request_mirror.is_some()),
            ("RequestRedirect", f.request_redirect.is_some()),
            ("URLRewrite", f.url_rewrite.is_some()),
            ("CORS", f.cors.is_some()),
            ("ExtensionRef", f.extension_ref.is_some()),
        ];
        let field = |t: &str| match t {
            "URLRewrite" => "urlRewrite".to_string(),
            "CORS" => "cors".to_string(),
            t => format!("{}{}", t[..1].to_ascii_lowercase(), &t[1..]),
        };
        let ty = f.filter_type.as_str();
        if !set.iter().any(|(t, _)| *t == ty) {
            v.error(p.key("type"), format!("unknown filter type {ty:?}"));
            continue;
        }
        for (t, present) in set {
            if present && t != ty {
                v.error(p.key(field(t)), format!("{} must not be set when type is {ty}", field(t)));
            }
            if !present && t == ty {
                v.error(p.key(field(t)), format!("type {ty} needs {}", field(t)));
            }
        }
        let grpc = matches!(site, FilterSite::GrpcRule | FilterSite::Backend { grpc: true, .. });
        if grpc && matches!(ty, "RequestRedirect" | "URLRewrite" | "CORS") {
            v.error(p.key("type"), format!("{ty} is not a GRPCRoute filter"));
            continue;
        }
        if matches!(site, FilterSite::Backend { .. }) && ty == "RequestRedirect" {
            v.error(
                p.key("type"),
                "RequestRedirect answers before any backend is chosen: set it on the rule, not on a backendRef",
            );
            continue;
        }
        if matches!(ty, "CORS" | "ExtensionRef") {
            v.error(p.key("type"), format!("the {ty} filter is not supported by the mesh; remove it"));
            continue;
        }
        if ty != "RequestMirror" && !seen.insert(ty) {
            v.error(p.key("type"), format!("{ty} may appear only once in a filter list"));
        }
        let prefix_ok = match site {
            FilterSite::HttpRule { prefix_ok } | FilterSite::Backend { prefix_ok, .. } => prefix_ok,
            FilterSite::GrpcRule => false,
        };
        if let Some(h) = &f.request_header_modifier {
            header_filter(v, p.key("requestHeaderModifier"), h);
        }
        if let Some(h) = &f.response_header_modifier {
            header_filter(v, p.key("responseHeaderModifier"), h);
        }
        if let Some(m) = &f.request_mirror {
            let mp = p.key("requestMirror");
            backend_ref(v, &mp.key("backendRef"), &m.backend_ref);
            if m.percent.is_some() && m.fraction.is_some() {
                v.error(mp.key("percent"), "only one of percent and fraction may be set");
            }
            if m.percent.is_some_and(|p| p > 100) {
                v.error(mp.key("percent"), "percent must be within 0..=100");
            }
            if let Some(fr) = m.fraction
                && (fr.denominator == Some(0) || fr.numerator > fr.denominator.unwrap_or(100))
            {
                v.error(mp.key("fraction"), "numerator must not exceed the denominator, which must be positive");
            }
        }
        if let Some(r) = &f.request_redirect {
            let rp = p.key("requestRedirect");
            if let Some(s) = r.scheme.as_deref()
                && !matches!(s, "http" | "https")
            {
                v.error(rp.key("scheme"), format!("scheme {s:?} must be http or https"));
            }
            if let Some(h) = &r.hostname {
                hostname(v, rp.key("hostname"), h);
                if h.starts_with('*') {
                    v.error(rp.key("hostname"), "a redirect hostname cannot be a wildcard");
                }
            }
            if let Some(port) = r.port {
                port_number(v, rp.key("port"), port);
            }
            if let Some(code) = r.status_code
                && ![301, 302, 303, 307, 308].contains(&code)
            {
                v.error(rp.key("statusCode"), format!("status {code} must be one of 301, 302, 303, 307, 308"));
            }
            if let Some(m) = &r.path {
                path_modifier(v, rp.key("path"), m, prefix_ok);
            }
        }
        if let Some(r) = &f.url_rewrite {
            let rp = p.key("urlRewrite");
            if let Some(h) = &r.hostname {
                hostname(v, rp.key("hostname"), h);
                if h.starts_with('*') {
                    v.error(rp.key("hostname"), "a rewrite hostname cannot be a wildcard");
                }
            }
            if let Some(m) = &r.path {
                path_modifier(v, rp.key("path"), m, prefix_ok);
            }
        }
    }
    if seen.contains("RequestRedirect") && seen.contains("URLRewrite") {
        v.error(path.key("filters"), "RequestRedirect and URLRewrite cannot both be set");
    }
}

fn backend_refs(v: &mut Findings, path: &FieldPath, refs: &[HttpBackendRef], prefix_ok: bool, grpc: bool) {
    for (i, b) in refs.iter().enumerate() {
        let p = path.key("backendRefs").index(i);
        backend_ref(v, &p, &b.backend());
        if b.weight.is_some_and(|w| w > 1_000_000) {
            v.error(p.key("weight"), "weight must be within 0..=1000000");
        }
        filters(v, &p, &b.filters, FilterSite::Backend { prefix_ok, grpc });
    }
}

fn unsupported(v: &mut Findings, path: FieldPath, field: &str, present: bool) {
    if present {
        v.error(path, format!("{field} is not supported by the mesh; remove it (requests would not get what it asks)"));
    }
}

pub(super) fn http_route(v: &mut Findings, spec: &FieldPath, r: &HttpRouteSpec) {
    parent_refs(v, spec, &r.parent_refs, "HTTPRoute");
    hostnames(v, spec, &r.hostnames);
    for (i, rule) in r.rules.iter().enumerate() {
        let rp = spec.key("rules").index(i);
        for (j, m) in rule.matches.iter().enumerate() {
            let mp = rp.key("matches").index(j);
            let (ty, value) = m.path();
            match ty {
                PathMatchType::RegularExpression => regex(v, mp.key("path").key("value"), value),
                _ => path_value(v, mp.key("path").key("value"), value),
            }
            value_matches(v, &mp, "headers", &m.headers, true);
            value_matches(v, &mp, "queryParams", &m.query_params, false);
            if let Some(method) = &m.method
                && !METHODS.contains(&method.as_str())
            {
                v.error(mp.key("method"), format!("method {method:?} must be one of {}", METHODS.join(", ")));
            }
        }
        // ReplacePrefixMatch rewrites the prefix a PathPrefix match consumed: exactly one
        // match, of that type (no match at all is the default `PathPrefix /`).
        let prefix_ok = match rule.matches.as_slice() {
            [] => true,
            [m] => m.path().0 == PathMatchType::PathPrefix,
            _ => false,
        };
        filters(v, &rp, &rule.filters, FilterSite::HttpRule { prefix_ok });
        let redirects = rule.filters.iter().any(|f| f.request_redirect.is_some());
        if redirects && !rule.backend_refs.is_empty() {
            v.error(rp.key("backendRefs"), "a rule with a RequestRedirect filter must not have backendRefs");
        }
        backend_refs(v, &rp, &rule.backend_refs, prefix_ok, false);
        if let Some(t) = &rule.timeouts {
            let tp = rp.key("timeouts");
            if let (Some(req), Some(backend)) = (t.request, t.backend_request)
                && !req.get().is_zero()
                && (backend.get().is_zero() || backend.get() > req.get())
            {
                v.error(tp.key("backendRequest"), "backendRequest must not be longer than request");
            }
        }
        unsupported(v, rp.key("retry"), "retry", rule.retry.is_some());
        unsupported(v, rp.key("sessionPersistence"), "sessionPersistence", rule.session_persistence.is_some());
    }
}

pub(super) fn grpc_route(v: &mut Findings, spec: &FieldPath, r: &GrpcRouteSpec) {
    parent_refs(v, spec, &r.parent_refs, "GRPCRoute");
    hostnames(v, spec, &r.hostnames);
    for (i, rule) in r.rules.iter().enumerate() {
        let rp = spec.key("rules").index(i);
        for (j, m) in rule.matches.iter().enumerate() {
            let mp = rp.key("matches").index(j);
            if let Some(method) = &m.method {
                let p = mp.key("method");
                if method.service.is_none() && method.method.is_none() {
                    v.error(p, "one or both of service and method must be set");
                } else if method.match_type == Some(ValueMatchType::RegularExpression) {
                    for (field, value) in [("service", &method.service), ("method", &method.method)] {
                        if let Some(value) = value {
                            regex(v, p.key(field), value);
                        }
                    }
                } else {
                    for (field, value) in [("service", &method.service), ("method", &method.method)] {
                        if value.as_deref().is_some_and(|s| s.is_empty() || s.contains('/')) {
                            v.error(p.key(field), format!("{field} must be non-empty and contain no '/'"));
                        }
                    }
                }
            }
            value_matches(v, &mp, "headers", &m.headers, true);
        }
        filters(v, &rp, &rule.filters, FilterSite::GrpcRule);
        backend_refs(v, &rp, &rule.backend_refs, false, true);
        unsupported(v, rp.key("sessionPersistence"), "sessionPersistence", rule.session_persistence.is_some());
    }
}

/// "an HTTP listener", "a TCP listener".
fn article(protocol: &str) -> &'static str {
    if protocol.starts_with('H') { "an" } else { "a" }
}

pub(super) fn kubernetes_gateway(v: &mut Findings, spec: &FieldPath, g: &KubernetesGatewaySpec) {
    if g.gateway_class_name.is_empty() {
        v.error(spec.key("gatewayClassName"), "gatewayClassName is required");
    }
    if g.listeners.is_empty() {
        v.error(spec.key("listeners"), "a Gateway needs at least one listener");
    }
    let mut names = HashSet::new();
    let mut combos = HashSet::new();
    for (i, l) in g.listeners.iter().enumerate() {
        let lp = spec.key("listeners").index(i);
        if l.name.is_empty() {
            v.error(lp.key("name"), "name is required");
        } else if !names.insert(l.name.as_str()) {
            v.error(lp.key("name"), format!("listener name {:?} is used twice", l.name));
        }
        port_number(v, lp.key("port"), l.port);
        if let Some(h) = &l.hostname {
            hostname(v, lp.key("hostname"), h);
            if matches!(l.protocol.as_str(), "TCP" | "UDP") {
                v.error(lp.key("hostname"), format!("a {} listener cannot have a hostname", l.protocol));
            }
        }
        if !combos.insert((l.port, l.hostname.as_deref().unwrap_or(""))) {
            v.warning(
                lp.clone(),
                "another listener has the same port and hostname: the two conflict, and neither is served",
            );
        }
        match l.protocol.as_str() {
            "HTTP" | "TCP" | "UDP" if l.tls.is_some() => {
                v.error(lp.key("tls"), format!("{} {} listener cannot have tls", article(&l.protocol), l.protocol))
            }
            "HTTPS" | "TLS" => match &l.tls {
                None => v.error(lp.key("tls"), format!("{} {} listener needs tls", article(&l.protocol), l.protocol)),
                Some(tls) => {
                    let mode = tls.mode.as_deref().unwrap_or("Terminate");
                    match mode {
                        "Terminate" if tls.certificate_refs.is_empty() => {
                            v.error(lp.key("tls").key("certificateRefs"), "tls mode Terminate needs certificateRefs")
                        }
                        "Passthrough" if l.protocol == "HTTPS" => v.error(
                            lp.key("tls").key("mode"),
                            "an HTTPS listener terminates TLS; use protocol TLS for Passthrough",
                        ),
                        "Terminate" | "Passthrough" => {}
                        m => v.error(
                            lp.key("tls").key("mode"),
                            format!("tls mode {m:?} must be Terminate or Passthrough"),
                        ),
                    }
                    for (j, c) in tls.certificate_refs.iter().enumerate() {
                        let (group, kind) = (c.group.as_deref().unwrap_or(""), c.kind.as_deref().unwrap_or("Secret"));
                        if (group, kind) != ("", "Secret") {
                            v.error(
                                lp.key("tls").key("certificateRefs").index(j),
                                format!("certificateRefs name Secrets; got group {group:?} kind {kind:?}"),
                            );
                        }
                    }
                    if tls.certificate_refs.len() > 1 {
                        v.warning(
                            lp.key("tls").key("certificateRefs"),
                            format!(
                                "only the first of {} certificateRefs is served (one certificate per listener here, not one per key type)",
                                tls.certificate_refs.len()
                            ),
                        );
                    }
                    if tls.frontend_validation.is_some() {
                        v.error(
                            lp.key("tls").key("frontendValidation"),
                            "frontendValidation is not supported by the mesh; remove it",
                        );
                    }
                }
            },
            "HTTP" | "TCP" | "UDP" => {}
            p if p.contains('/') => {}
            p => v.error(
                lp.key("protocol"),
                format!("protocol {p:?} must be HTTP, HTTPS, TLS, TCP, UDP or a domain-prefixed name"),
            ),
        }
        if let Some(a) = &l.allowed_routes
            && let Some(ns) = &a.namespaces
        {
            let ap = lp.key("allowedRoutes").key("namespaces");
            match (ns.from.unwrap_or_default(), &ns.selector) {
                (FromNamespaces::Selector, None) => v.error(ap.key("selector"), "from: Selector needs a selector"),
                (FromNamespaces::Selector, Some(s)) => {
                    for (j, r) in s.match_expressions.iter().enumerate() {
                        let valid = match r.operator.as_str() {
                            "In" | "NotIn" => !r.values.is_empty(),
                            "Exists" | "DoesNotExist" => r.values.is_empty(),
                            _ => false,
                        };
                        if !valid {
                            v.error(
                                ap.key("selector").key("matchExpressions").index(j),
                                "operator must be In or NotIn (with values) or Exists or DoesNotExist (without)",
                            );
                        }
                    }
                }
                (_, Some(_)) => v.warning(ap.key("selector"), "selector is read only with from: Selector"),
                _ => {}
            }
        }
    }
    if g.backend_tls.is_some() {
        v.error(spec.key("backendTLS"), "backendTLS is not supported by the mesh; remove it");
    }
}

pub(super) fn gateway_class(v: &mut Findings, spec: &FieldPath, c: &GatewayClassSpec) {
    if c.controller_name.is_empty() {
        v.error(spec.key("controllerName"), "controllerName is required");
    }
}

pub(super) fn reference_grant(v: &mut Findings, spec: &FieldPath, g: &ReferenceGrantSpec) {
    if g.from.is_empty() {
        v.error(spec.key("from"), "from needs at least one entry");
    }
    if g.to.is_empty() {
        v.error(spec.key("to"), "to needs at least one entry");
    }
    for (i, f) in g.from.iter().enumerate() {
        if f.kind.is_empty() || f.namespace.is_empty() {
            v.error(spec.key("from").index(i), "kind and namespace are required");
        }
    }
    for (i, t) in g.to.iter().enumerate() {
        if t.kind.is_empty() {
            v.error(spec.key("to").index(i).key("kind"), "kind is required");
        }
    }
}

/// Every backendRef of a route's rules, with its field path.
fn backend_paths<R>(rules: &[R], refs: impl Fn(&R) -> &Vec<HttpBackendRef>) -> Vec<(FieldPath, &HttpBackendRef)> {
    let mut out = Vec::new();
    for (ri, rule) in rules.iter().enumerate() {
        for (bi, b) in refs(rule).iter().enumerate() {
            out.push((FieldPath::root().key("spec").key("rules").index(ri).key("backendRefs").index(bi), b));
        }
    }
    out
}

/// References of HTTPRoutes and GRPCRoutes the set cannot resolve, as `istioctl analyze`
/// reports them: a parent Gateway or Service that is not defined, a backend Service that is
/// not, or one in another namespace without a ReferenceGrant (those requests get 500).
pub(super) fn references(resources: &[LoadedResource], winners: &HashSet<usize>) -> Vec<(usize, Finding)> {
    let live = || resources.iter().enumerate().filter(|(i, _)| winners.contains(i)).map(|(i, r)| (i, &*r.resource));
    let named = |kind: Kind| -> HashSet<(String, String)> {
        live()
            .filter(|(_, r)| r.kind() == kind)
            .map(|(_, r)| (r.meta().namespace.clone(), r.meta().name.clone()))
            .collect()
    };
    let (services, gateways) = (named(Kind::Service), named(Kind::KubernetesGateway));
    let grants: Vec<&Object<ReferenceGrantSpec>> = live()
        .filter_map(|(_, r)| match r {
            Resource::ReferenceGrant(g) => Some(g),
            _ => None,
        })
        .collect();
    let granted = |from_kind: &str, from_ns: &str, to_ns: &str, name: &str| {
        grants.iter().any(|g| g.metadata.namespace == to_ns && g.spec.allows(from_kind, from_ns, "Service", name))
    };
    let mut out = Vec::new();
    for (i, r) in live() {
        let (kind, meta, parents, backends) = match r {
            Resource::HttpRoute(o) => {
                ("HTTPRoute", &o.metadata, &o.spec.parent_refs, backend_paths(&o.spec.rules, |r| &r.backend_refs))
            }
            Resource::GrpcRoute(o) => {
                ("GRPCRoute", &o.metadata, &o.spec.parent_refs, backend_paths(&o.spec.rules, |r| &r.backend_refs))
            }
            _ => continue,
        };
        let ns = meta.namespace.as_str();
        for (pi, p) in parents.iter().enumerate() {
            let key = (p.namespace_or(ns).to_string(), p.name.clone());
            let path = FieldPath::root().key("spec").key("parentRefs").index(pi).key("name");
            if p.is_gateway() && !gateways.contains(&key) {
                let msg = format!(
                    "Gateway {}/{} (gateway.networking.k8s.io) is not defined: the {kind} is attached to nothing there",
                    key.0, key.1
                );
                out.push((i, Finding::warning(path, msg)));
            } else if p.is_service() && !services.contains(&key) {
                let msg = format!("Service {}/{} is not defined: the {kind} applies to no traffic", key.0, key.1);
                out.push((i, Finding::warning(path, msg)));
            }
        }
        for (path, b) in backends {
            if b.group_kind() != ("", "Service") {
                continue; // refused by the route table with the reason
            }
            let to_ns = b.namespace.as_deref().unwrap_or(ns);
            if to_ns != ns && !granted(kind, ns, to_ns, &b.name) {
                let msg = format!(
                    "Service {to_ns}/{} is in another namespace and no ReferenceGrant in {to_ns} allows {kind}s from {ns}: its share of requests gets 500",
                    b.name
                );
                out.push((i, Finding::warning(path.key("namespace"), msg)));
            } else if !services.contains(&(to_ns.to_string(), b.name.clone())) {
                let msg = format!("Service {to_ns}/{} is not defined: its share of requests gets 500", b.name);
                out.push((i, Finding::warning(path.key("name"), msg)));
            }
        }
    }
    out
}
