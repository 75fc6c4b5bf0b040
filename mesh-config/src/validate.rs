//! Load-time validation, as Istio's webhook and `istioctl analyze` do it.
//!
//! [`validate`] checks one resource (errors reject it; warnings do not);
//! [`validate_set`] checks what can only be seen across resources (a route to a subset no
//! DestinationRule defines, the same object defined twice). Findings name the field path;
//! the loader places them on a line.

use std::collections::{HashMap, HashSet};

mod gateway_api;

use crate::{
    api::*,
    diag::{FieldPath, Finding},
    load::LoadedResource,
    registry::Protocol,
    snapshot::{ResourceKey, host_matches, resolve_host},
    string_match::{StringMatcher, compile_full_match},
};

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
    let d = d.get();
    if d < std::time::Duration::from_millis(1) {
        v.error(path, format!("duration must be at least 1ms, got {}", mesh_core::Duration(d)));
    } else if !d.subsec_nanos().is_multiple_of(1_000_000) {
        v.error(path, format!("only durations to ms precision are supported, got {}", mesh_core::Duration(d)));
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

// === VirtualService ===

fn virtual_service(v: &mut Findings, spec: &FieldPath, vs: &VirtualServiceSpec) {
    if vs.hosts.is_empty() {
        v.error(spec.key("hosts"), "at least one host is required");
    }
    let bound_to_mesh = vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == "mesh");
    for (i, h) in vs.hosts.iter().enumerate() {
        host_name(v, spec.key("hosts").index(i), h);
        if h == "*" && bound_to_mesh {
            v.error(
                spec.key("hosts").index(i),
                "wildcard host * is not allowed for virtual services bound to the mesh",
            );
        }
    }
    for (i, g) in vs.gateways.iter().enumerate() {
        if g.is_empty() || g.matches('/').count() > 1 {
            v.error(spec.key("gateways").index(i), format!("invalid gateway name {g:?}: use NAME or NAMESPACE/NAME"));
        }
    }
    if vs.http.is_empty() && vs.tcp.is_empty() && vs.tls.is_empty() {
        v.error(spec.clone(), "at least one of http, tcp or tls routes is required");
    }
    let last = vs.http.len().saturating_sub(1);
    for (i, route) in vs.http.iter().enumerate() {
        let path = spec.key("http").index(i);
        http_route(v, &path, route);
        if i < last && is_catch_all(route) {
            v.warning(
                path,
                "this route matches every request but is not the last one; the routes after it are never used",
            );
        }
    }
    for (i, r) in vs.tcp.iter().enumerate() {
        l4_destinations(v, &spec.key("tcp").index(i).key("route"), r.route.iter().map(|d| (&d.destination, d.weight)));
    }
    for (i, r) in vs.tls.iter().enumerate() {
        let path = spec.key("tls").index(i);
        if r.matches.is_empty() {
            v.error(path.key("match"), "TLS routes need at least one match");
        }
        for (j, m) in r.matches.iter().enumerate() {
            if m.sni_hosts.is_empty() {
                v.error(path.key("match").index(j).key("sniHosts"), "at least one SNI host is required");
            }
        }
        l4_destinations(v, &path.key("route"), r.route.iter().map(|d| (&d.destination, d.weight)));
    }
}

/// Istio drops everything after a route that matches every request.
pub fn is_catch_all(route: &HttpRoute) -> bool {
    route.matches.is_empty() || route.matches.iter().any(is_catch_all_block)
}

fn is_catch_all_block(m: &HttpMatchRequest) -> bool {
    let uri_all = match &m.uri {
        None => true,
        Some(u) => StringMatcher::try_from(u).is_ok_and(|u| u.is_catch_all_uri()),
    };
    uri_all
        && m.scheme.is_none()
        && m.method.is_none()
        && m.authority.is_none()
        && m.headers.is_empty()
        && m.query_params.is_empty()
        && m.without_headers.is_empty()
        && m.port.is_none()
        && m.source_labels.is_empty()
        && m.gateways.is_empty()
        && m.source_namespace.is_none()
}

fn string_match(v: &mut Findings, path: FieldPath, m: &StringMatch, allow_empty_prefix: bool) {
    match m {
        StringMatch::Regex(r) => regex(v, path.key("regex"), r),
        StringMatch::Prefix(p) if p.is_empty() && !allow_empty_prefix => {
            v.error(path.key("prefix"), "an empty prefix is only allowed for uri");
        }
        StringMatch::Exact(_) | StringMatch::Prefix(_) => {}
    }
}

fn header_conditions(
    v: &mut Findings,
    path: FieldPath,
    map: &std::collections::BTreeMap<String, ValueMatch>,
    headers: bool,
) {
    for (name, m) in map {
        let p = path.key(name.clone());
        if name.is_empty() {
            v.error(p.clone(), "name must not be empty");
        }
        if headers && name.bytes().any(|b| b.is_ascii_uppercase()) {
            v.error(p.clone(), format!("header name {name:?} must be lowercase"));
        }
        if headers && matches!(name.as_str(), "uri" | "scheme" | "method" | "authority") {
            v.warning(p.clone(), format!("the {name:?} key is ignored here; use the match field `{name}`"));
        }
        match m {
            ValueMatch::Present => {}
            ValueMatch::Match(StringMatch::Regex(r)) if r == "*" => {}
            ValueMatch::Match(sm) => string_match(v, p, sm, false),
        }
    }
}

fn http_route(v: &mut Findings, path: &FieldPath, r: &HttpRoute) {
    for (j, m) in r.matches.iter().enumerate() {
        let mp = path.key("match").index(j);
        if let Some(u) = &m.uri {
            string_match(v, mp.key("uri"), u, true);
        }
        for (name, sm) in [("scheme", &m.scheme), ("method", &m.method), ("authority", &m.authority)] {
            if let Some(sm) = sm {
                string_match(v, mp.key(name), sm, false);
            }
        }
        header_conditions(v, mp.key("headers"), &m.headers, true);
        header_conditions(v, mp.key("withoutHeaders"), &m.without_headers, true);
        header_conditions(v, mp.key("queryParams"), &m.query_params, false);
        if let Some(p) = m.port {
            port_number(v, mp.key("port"), p);
        }
    }

    let has_route = !r.route.is_empty();
    let actions = [has_route, r.redirect.is_some(), r.direct_response.is_some(), r.delegate.is_some()];
    if actions.iter().all(|a| !a) {
        v.error(path.clone(), "a route needs one of route, redirect, directResponse or delegate");
    }
    if r.redirect.is_some() {
        for (field, set) in [
            ("route", has_route),
            ("fault", r.fault.is_some()),
            ("rewrite", r.rewrite.is_some()),
            ("directResponse", r.direct_response.is_some()),
        ] {
            if set {
                v.error(path.key(field), format!("redirect cannot be combined with {field}"));
            }
        }
    }
    if r.direct_response.is_some() {
        for (field, set) in [("route", has_route), ("fault", r.fault.is_some()), ("rewrite", r.rewrite.is_some())] {
            if set {
                v.error(path.key(field), format!("directResponse cannot be combined with {field}"));
            }
        }
    }
    if r.delegate.is_some() && has_route {
        v.error(path.key("delegate"), "delegate cannot be combined with route");
    }

    if has_route {
        http_destinations(v, &path.key("route"), &r.route);
    }
    if let Some(rd) = &r.redirect {
        redirect(v, &path.key("redirect"), rd, r);
    }
    if let Some(d) = &r.direct_response {
        let p = path.key("directResponse");
        if !(200..=599).contains(&d.status) {
            v.error(p.key("status"), format!("status must be within 200..=599, got {}", d.status));
        }
        let len = match &d.body {
            Some(HttpBody::String(s)) => s.len(),
            Some(HttpBody::Bytes(b)) => b.len() / 4 * 3,
            None => 0,
        };
        if len > 1 << 20 {
            v.error(p.key("body"), format!("body is {len} bytes; the limit is 1 MiB"));
        }
    }
    if let Some(d) = &r.delegate
        && d.name.is_empty()
    {
        v.error(path.key("delegate").key("name"), "delegate name is required");
    }
    if let Some(rw) = &r.rewrite {
        let p = path.key("rewrite");
        if let Some(rr) = &rw.uri_regex_rewrite {
            if rw.uri.is_some() {
                v.error(p.key("uriRegexRewrite"), "uriRegexRewrite cannot be combined with uri");
            }
            if rr.pattern.is_empty() {
                v.error(p.key("uriRegexRewrite").key("match"), "a regex is required");
            } else if let Err(e) = regex_syntax_only(&rr.pattern) {
                v.error(p.key("uriRegexRewrite").key("match"), e);
            }
        }
        if rw.uri.is_none() && rw.authority.is_none() && rw.uri_regex_rewrite.is_none() {
            v.error(p, "rewrite needs one of uri, authority or uriRegexRewrite");
        }
    }
    if let Some(t) = &r.timeout {
        // As Istio's webhook: even `0s` is rejected (omit the field for "no timeout").
        min_duration(v, path.key("timeout"), t);
    }
    if let Some(rt) = &r.retries {
        retries(v, &path.key("retries"), rt);
    }
    if let Some(f) = &r.fault {
        fault(v, &path.key("fault"), f);
    }
    if r.mirror.is_some() && !r.mirrors.is_empty() {
        v.error(path.key("mirrors"), "mirror and mirrors cannot both be set");
    }
    if let Some(m) = &r.mirror {
        destination(v, path.key("mirror"), m);
    }
    if let Some(p) = &r.mirror_percentage {
        percent(v, path.key("mirrorPercentage"), p);
    }
    if let Some(p) = r.mirror_percent.filter(|p| *p > 100) {
        v.error(path.key("mirrorPercent"), format!("percentage must be within 0..=100, got {p}"));
    }
    for (j, m) in r.mirrors.iter().enumerate() {
        let mp = path.key("mirrors").index(j);
        destination(v, mp.key("destination"), &m.destination);
        if let Some(p) = &m.percentage {
            percent(v, mp.key("percentage"), p);
        }
    }
    if let Some(c) = &r.cors_policy {
        for (j, o) in c.allow_origins.iter().enumerate() {
            string_match(v, path.key("corsPolicy").key("allowOrigins").index(j), o, false);
        }
    }
    let mut authority_rewrites = usize::from(r.rewrite.as_ref().is_some_and(|rw| rw.authority.is_some()));
    if let Some(h) = &r.headers {
        authority_rewrites += headers(v, &path.key("headers"), h);
    }
    for (j, d) in r.route.iter().enumerate() {
        if let Some(h) = &d.headers {
            authority_rewrites += headers(v, &path.key("route").index(j).key("headers"), h);
        }
    }
    if authority_rewrites > 1 {
        v.error(path.clone(), "only one authority rewrite is allowed (rewrite.authority or a host header operation)");
    }
}

/// Check a regex's syntax without anchoring it (for substitutions).
fn regex_syntax_only(pattern: &str) -> Result<(), String> {
    compile_full_match(pattern).map(|_| ()).map_err(|e| e.to_string())
}

/// Header operations; returns how many of them rewrite the authority.
fn headers(v: &mut Findings, path: &FieldPath, h: &Headers) -> usize {
    let mut authority = 0;
    for (side, ops) in [("request", &h.request), ("response", &h.response)] {
        let Some(ops) = ops else { continue };
        let p = path.key(side);
        let set = ops.set.keys().map(|n| (p.key("set").key(n.clone()), n, "set"));
        let add = ops.add.keys().map(|n| (p.key("add").key(n.clone()), n, "add"));
        let remove = ops.remove.iter().enumerate().map(|(i, n)| (p.key("remove").index(i), n, "remove"));
        for (hp, name, op) in set.chain(add).chain(remove) {
            let lower = name.to_ascii_lowercase();
            if name.is_empty() {
                v.error(hp, "header name must not be empty");
            } else if lower == "host" || lower == ":authority" {
                if side == "request" && op != "remove" {
                    authority += 1;
                } else {
                    let what = if op == "remove" { "removed" } else { "set on a response" };
                    v.error(hp, format!("{name} cannot be {what}"));
                }
            } else if lower.starts_with(':') {
                v.error(hp, format!("pseudo-header {name} cannot be changed"));
            }
        }
    }
    authority
}

fn destination(v: &mut Findings, path: FieldPath, d: &Destination) {
    if d.host.is_empty() {
        v.error(path.key("host"), "destination host is required");
    } else {
        host_name(v, path.key("host"), &d.host);
        if d.host.contains('*') {
            v.error(path.key("host"), "a destination host cannot be a wildcard");
        }
    }
    if let Some(s) = &d.subset
        && !dns1123_label(s)
        && !s.is_empty()
    {
        v.error(path.key("subset"), format!("invalid subset name {s:?}: use lowercase letters, digits and '-'"));
    }
    if let Some(p) = &d.port {
        port_number(v, path.key("port").key("number"), p.number);
    }
}

fn http_destinations(v: &mut Findings, path: &FieldPath, route: &[HttpRouteDestination]) {
    l4_destinations(v, path, route.iter().map(|d| (&d.destination, d.weight)));
}

fn l4_destinations<'a>(
    v: &mut Findings,
    path: &FieldPath,
    dests: impl Iterator<Item = (&'a Destination, Option<i32>)>,
) {
    let mut total: i64 = 0;
    let mut count = 0;
    for (j, (d, w)) in dests.enumerate() {
        count += 1;
        destination(v, path.index(j).key("destination"), d);
        if let Some(w) = w {
            if w < 0 {
                v.error(path.index(j).key("weight"), format!("weight must not be negative, got {w}"));
            } else {
                total += i64::from(w);
            }
        }
    }
    if count > 1 && total == 0 {
        v.error(path.clone(), "total destination weight = 0: with several destinations, give at least one a weight");
    }
}

fn redirect(v: &mut Findings, p: &FieldPath, rd: &HttpRedirect, route: &HttpRoute) {
    if !matches!(rd.code(), 301 | 302 | 303 | 307 | 308) {
        v.error(
            p.key("redirectCode"),
            format!("redirect code {} is not supported; use 301, 302, 303, 307 or 308", rd.code()),
        );
    }
    if rd.uri.is_none()
        && rd.prefix_rewrite.is_none()
        && rd.authority.is_none()
        && rd.scheme.is_none()
        && rd.port.is_none()
        && rd.derive_port.is_none()
    {
        v.error(p.clone(), "redirect needs one of uri, prefixRewrite, authority, scheme, port or derivePort");
    }
    if rd.uri.is_some() && rd.prefix_rewrite.is_some() {
        v.error(p.key("prefixRewrite"), "uri and prefixRewrite cannot both be set");
    }
    if rd.port.is_some() && rd.derive_port.is_some() {
        v.error(p.key("derivePort"), "port and derivePort cannot both be set");
    }
    if let Some(port) = rd.port {
        port_number(v, p.key("port"), port);
    }
    if let Some(s) = rd.scheme.as_deref().filter(|s| !matches!(*s, "http" | "https")) {
        v.error(p.key("scheme"), format!("scheme must be http or https, got {s:?}"));
    }
    if rd.prefix_rewrite.is_some() && !route.matches.iter().all(|m| matches!(m.uri, Some(StringMatch::Prefix(_)))) {
        v.warning(
            p.key("prefixRewrite"),
            "prefixRewrite replaces the matched prefix; it needs every match block to have a uri prefix",
        );
    }
}

/// The names `retryOn` accepts besides status codes.
pub const RETRY_ON_POLICIES: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

fn retries(v: &mut Findings, p: &FieldPath, r: &HttpRetry) {
    if r.attempts < 0 {
        v.error(p.key("attempts"), format!("attempts must not be negative, got {}", r.attempts));
    }
    if r.attempts == 0 {
        for (field, set) in [
            ("perTryTimeout", r.per_try_timeout.is_some()),
            ("retryOn", r.retry_on.is_some()),
            ("retryRemoteLocalities", r.retry_remote_localities.is_some()),
        ] {
            if set {
                v.error(p.key(field), format!("{field} cannot be set when attempts is 0 (retries disabled)"));
            }
        }
    }
    if let Some(t) = &r.per_try_timeout {
        min_duration(v, p.key("perTryTimeout"), t);
    }
    if let Some(b) = &r.backoff {
        min_duration(v, p.key("backoff"), b);
    }
    if let Some(on) = &r.retry_on {
        for item in on.split(',').map(str::trim) {
            let is_code = item.parse::<u16>().is_ok_and(|c| (100..=599).contains(&c));
            if !is_code && !RETRY_ON_POLICIES.contains(&item) {
                v.error(p.key("retryOn"), format!("{item:?} is not a valid retryOn policy or HTTP status code"));
            }
        }
    }
}

fn fault(v: &mut Findings, p: &FieldPath, f: &HttpFaultInjection) {
    if f.delay.is_none() && f.abort.is_none() {
        v.error(p.clone(), "fault needs at least one of delay or abort");
    }
    if let Some(d) = &f.delay {
        let dp = p.key("delay");
        if d.exponential_delay.is_some() {
            v.error(dp.key("exponentialDelay"), "exponentialDelay is not supported");
        }
        match &d.fixed_delay {
            Some(fd) => min_duration(v, dp.key("fixedDelay"), fd),
            None if d.exponential_delay.is_none() => v.error(dp.key("fixedDelay"), "fixedDelay is required"),
            None => {}
        }
        if let Some(pc) = &d.percentage {
            percent(v, dp.key("percentage"), pc);
        }
        if let Some(pc) = d.percent.filter(|pc| !(0..=100).contains(pc)) {
            v.error(dp.key("percent"), format!("percentage must be within 0..=100, got {pc}"));
        }
    }
    if let Some(a) = &f.abort {
        let ap = p.key("abort");
        let set = [a.http_status.is_some(), a.grpc_status.is_some(), a.http2_error.is_some()];
        match set.iter().filter(|s| **s).count() {
            0 => v.error(ap.clone(), "abort needs one of httpStatus or grpcStatus"),
            1 => {}
            _ => v.error(ap.clone(), "only one of httpStatus, grpcStatus or http2Error may be set"),
        }
        if let Some(s) = a.http_status.filter(|s| !(200..=599).contains(s)) {
            v.error(ap.key("httpStatus"), format!("httpStatus must be within 200..=599, got {s}"));
        }
        if let Some(g) = a.grpc_status.as_deref().filter(|g| mesh_core::grpc::Code::from_name(g).is_none()) {
            v.error(ap.key("grpcStatus"), format!("{g:?} is not a gRPC status name such as UNAVAILABLE"));
        }
        if a.http2_error.is_some() {
            v.error(ap.key("http2Error"), "http2Error is not supported");
        }
        if let Some(pc) = &a.percentage {
            percent(v, ap.key("percentage"), pc);
        }
    }
}

// === DestinationRule ===

fn destination_rule(v: &mut Findings, spec: &FieldPath, dr: &DestinationRuleSpec) {
    if dr.host.is_empty() {
        v.error(spec.key("host"), "host is required");
    } else {
        host_name(v, spec.key("host"), &dr.host);
    }
    if let Some(tp) = &dr.traffic_policy {
        traffic_policy(v, &spec.key("trafficPolicy"), tp);
    }
    let mut seen = HashSet::new();
    for (i, s) in dr.subsets.iter().enumerate() {
        let p = spec.key("subsets").index(i);
        if s.name.is_empty() {
            v.error(p.key("name"), "subset name is required");
        } else if !dns1123_label(&s.name) {
            v.error(p.key("name"), format!("invalid subset name {:?}: use lowercase letters, digits and '-'", s.name));
        }
        if !s.name.is_empty() && !seen.insert(s.name.as_str()) {
            v.error(p.key("name"), format!("duplicate subset name {:?}", s.name));
        }
        if let Some(tp) = &s.traffic_policy {
            traffic_policy(v, &p.key("trafficPolicy"), tp);
        }
    }
}

fn traffic_policy(v: &mut Findings, p: &FieldPath, tp: &TrafficPolicy) {
    policy_blocks(
        v,
        p,
        tp.load_balancer.as_ref(),
        tp.connection_pool.as_ref(),
        tp.outlier_detection.as_ref(),
        tp.tls.as_ref(),
    );
    let mut ports = HashSet::new();
    for (i, pl) in tp.port_level_settings.iter().enumerate() {
        let pp = p.key("portLevelSettings").index(i);
        match &pl.port {
            None => v.error(pp.key("port"), "port is required"),
            Some(port) => {
                port_number(v, pp.key("port").key("number"), port.number);
                if !ports.insert(port.number) {
                    v.error(pp.key("port"), format!("port {} is configured more than once", port.number));
                }
            }
        }
        policy_blocks(
            v,
            &pp,
            pl.load_balancer.as_ref(),
            pl.connection_pool.as_ref(),
            pl.outlier_detection.as_ref(),
            pl.tls.as_ref(),
        );
    }
    if let Some(rb) = &tp.retry_budget
        && let Some(pc) = &rb.percent
    {
        percent(v, p.key("retryBudget").key("percent"), pc);
    }
}

fn policy_blocks(
    v: &mut Findings,
    p: &FieldPath,
    lb: Option<&LoadBalancerSettings>,
    pool: Option<&ConnectionPoolSettings>,
    outlier: Option<&OutlierDetection>,
    tls: Option<&ClientTlsSettings>,
) {
    if let Some(lb) = lb {
        let lp = p.key("loadBalancer");
        if lb.simple.is_some() && lb.consistent_hash.is_some() {
            v.error(lp.clone(), "only one of simple or consistentHash may be set");
        }
        if let Some(ch) = &lb.consistent_hash {
            let cp = lp.key("consistentHash");
            let keys = [
                ch.http_header_name.is_some(),
                ch.http_cookie.is_some(),
                ch.use_source_ip.is_some(),
                ch.http_query_parameter_name.is_some(),
            ];
            match keys.iter().filter(|k| **k).count() {
                0 => v.error(
                    cp.clone(),
                    "consistentHash needs one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName",
                ),
                1 => {}
                _ => v.error(
                    cp.clone(),
                    "only one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName may be set",
                ),
            }
            if ch.ring_hash.is_some() && ch.maglev.is_some() {
                v.error(cp.clone(), "only one of ringHash or maglev may be set");
            }
            if let Some(c) = &ch.http_cookie
                && c.name.is_empty()
            {
                v.error(cp.key("httpCookie").key("name"), "cookie name is required");
            }
        }
    }
    if let Some(pool) = pool {
        let pp = p.key("connectionPool");
        if let Some(tcp) = &pool.tcp {
            non_negative(v, pp.key("tcp").key("maxConnections"), tcp.max_connections);
            if let Some(t) = &tcp.connect_timeout {
                min_duration(v, pp.key("tcp").key("connectTimeout"), t);
            }
        }
        if let Some(h) = &pool.http {
            let hp = pp.key("http");
            for (field, n) in [
                ("http1MaxPendingRequests", h.http1_max_pending_requests),
                ("http2MaxRequests", h.http2_max_requests),
                ("maxRequestsPerConnection", h.max_requests_per_connection),
                ("maxRetries", h.max_retries),
                ("maxConcurrentStreams", h.max_concurrent_streams),
            ] {
                non_negative(v, hp.key(field), n);
            }
        }
    }
    if let Some(o) = outlier {
        let op = p.key("outlierDetection");
        for (field, n) in [("maxEjectionPercent", o.max_ejection_percent), ("minHealthPercent", o.min_health_percent)] {
            if let Some(n) = n.filter(|n| !(0..=100).contains(n)) {
                v.error(op.key(field), format!("percentage must be within 0..=100, got {n}"));
            }
        }
        for (field, d) in [("interval", &o.interval), ("baseEjectionTime", &o.base_ejection_time)] {
            if let Some(d) = d {
                min_duration(v, op.key(field), d);
            }
        }
    }
    if let Some(t) = tls {
        let tp = p.key("tls");
        match t.mode {
            Some(ClientTlsMode::IstioMutual) => {
                let extra = t.client_certificate.is_some()
                    || t.private_key.is_some()
                    || t.ca_certificates.is_some()
                    || t.credential_name.is_some();
                if extra {
                    v.error(tp, "ISTIO_MUTUAL uses the mesh certificates; clientCertificate, privateKey, caCertificates and credentialName must be empty");
                }
            }
            Some(ClientTlsMode::Mutual)
                if t.credential_name.is_none() && (t.client_certificate.is_none() || t.private_key.is_none()) =>
            {
                v.error(tp, "MUTUAL needs clientCertificate and privateKey (or credentialName)");
            }
            _ => {}
        }
    }
}

// === Gateway ===

fn gateway(v: &mut Findings, spec: &FieldPath, gw: &GatewaySpec) {
    if gw.servers.is_empty() {
        v.error(spec.key("servers"), "at least one server is required");
    }
    for (i, s) in gw.servers.iter().enumerate() {
        let p = spec.key("servers").index(i);
        port_number(v, p.key("port").key("number"), s.port.number);
        if Protocol::parse(&s.port.protocol).is_none() {
            v.error(
                p.key("port").key("protocol"),
                format!(
                    "unknown protocol {:?}; use one of {}",
                    s.port.protocol,
                    Protocol::ALL.map(Protocol::as_str).join(", ")
                ),
            );
        }
        if s.hosts.is_empty() {
            v.error(p.key("hosts"), "at least one host is required");
        }
        for (j, h) in s.hosts.iter().enumerate() {
            let (ns, name) = h.split_once('/').unwrap_or(("*", h));
            if ns.is_empty() {
                v.error(p.key("hosts").index(j), format!("invalid host {h:?}: the namespace part is empty"));
            }
            host_name(v, p.key("hosts").index(j), name);
        }
        if let Some(t) = &s.tls {
            let tp = p.key("tls");
            let has_files = t.server_certificate.is_some() && t.private_key.is_some();
            let has_cred =
                t.credential_name.is_some() || !t.credential_names.is_empty() || !t.tls_certificates.is_empty();
            match t.mode {
                Some(ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual)
                    if !has_files && !has_cred =>
                {
                    v.error(tp.clone(), "SIMPLE and MUTUAL need serverCertificate and privateKey, or credentialName");
                }
                _ => {}
            }
            if matches!(t.mode, Some(ServerTlsMode::Mutual)) && t.ca_certificates.is_none() && !has_cred {
                v.error(tp.key("caCertificates"), "MUTUAL needs caCertificates (or credentialName) to verify clients");
            }
            if t.mode.is_some()
                && Protocol::parse(&s.port.protocol) == Some(Protocol::Http)
                && t.https_redirect != Some(true)
            {
                v.warning(tp, "TLS settings on an HTTP port have no effect");
            }
        }
    }
}

// === ServiceEntry, WorkloadEntry, Sidecar ===

fn service_entry(v: &mut Findings, spec: &FieldPath, se: &ServiceEntrySpec) {
    if se.hosts.is_empty() {
        v.error(spec.key("hosts"), "at least one host is required");
    }
    for (i, h) in se.hosts.iter().enumerate() {
        host_name(v, spec.key("hosts").index(i), h);
    }
    let mut names = HashSet::new();
    for (i, port) in se.ports.iter().enumerate() {
        port_number(v, spec.key("ports").index(i).key("number"), port.number);
        if !port.name.is_empty() && !names.insert(port.name.as_str()) {
            v.error(spec.key("ports").index(i).key("name"), format!("duplicate port name {:?}", port.name));
        }
    }
    if matches!(se.resolution, Some(Resolution::Static)) && se.endpoints.is_empty() && se.workload_selector.is_none() {
        v.error(spec.key("endpoints"), "resolution STATIC needs endpoints or a workloadSelector");
    }
    if !se.endpoints.is_empty() && se.workload_selector.is_some() {
        v.error(spec.key("workloadSelector"), "endpoints and workloadSelector cannot both be set");
    }
    for (i, e) in se.endpoints.iter().enumerate() {
        let p = spec.key("endpoints").index(i);
        workload_entry(v, &p, e);
        if matches!(se.resolution, Some(Resolution::Static))
            && !e.address.starts_with("unix://")
            && e.address.parse::<std::net::IpAddr>().is_err()
        {
            v.error(p.key("address"), format!("resolution STATIC needs IP addresses, got {:?}", e.address));
        }
        for name in e.ports.keys() {
            if !se.ports.iter().any(|p| &p.name == name) {
                v.error(
                    p.key("ports").key(name.clone()),
                    format!("port {name:?} is not a port name of this ServiceEntry"),
                );
            }
        }
    }
}

fn workload_entry(v: &mut Findings, p: &FieldPath, we: &WorkloadEntrySpec) {
    if we.address.is_empty() {
        v.error(p.key("address"), "address is required");
    }
    for (name, n) in &we.ports {
        port_number(v, p.key("ports").key(name.clone()), *n);
    }
}

fn sidecar(v: &mut Findings, spec: &FieldPath, sc: &SidecarSpec) {
    for (i, e) in sc.egress.iter().enumerate() {
        let p = spec.key("egress").index(i);
        if e.hosts.is_empty() {
            v.error(p.key("hosts"), "at least one host is required");
        }
        for (j, h) in e.hosts.iter().enumerate() {
            match h.split_once('/') {
                Some((ns, name)) if !ns.is_empty() => host_name(v, p.key("hosts").index(j), name),
                _ => v.error(
                    p.key("hosts").index(j),
                    format!("invalid egress host {h:?}: use NAMESPACE/DNSNAME, e.g. \"./*\" or \"istio-system/*\""),
                ),
            }
        }
        if let Some(port) = &e.port {
            port_number(v, p.key("port").key("number"), port.number);
        }
    }
    for (i, ing) in sc.ingress.iter().enumerate() {
        let p = spec.key("ingress").index(i);
        match &ing.port {
            Some(port) => port_number(v, p.key("port").key("number"), port.number),
            None => v.error(p.key("port"), "port is required"),
        }
    }
}

// === PeerAuthentication ===

fn peer_authentication(v: &mut Findings, spec: &FieldPath, pa: &PeerAuthenticationSpec, meta: &ObjectMeta) {
    if !pa.port_level_mtls.is_empty() && pa.selector.is_none() {
        v.error(spec.key("portLevelMtls"), "portLevelMtls needs a workload selector");
    }
    for port in pa.port_level_mtls.keys() {
        port_number(v, spec.key("portLevelMtls").key(port.to_string()), *port);
    }
    if pa.selector.is_some() && meta.namespace == crate::ROOT_NAMESPACE {
        v.warning(
            spec.key("selector"),
            "a PeerAuthentication with a selector in the root namespace is ignored; put it in the workload's namespace",
        );
    }
    if let Some(sel) = &pa.selector
        && sel.match_labels.is_empty()
    {
        v.error(
            spec.key("selector").key("matchLabels"),
            "an empty selector is not allowed; remove the selector to select every workload",
        );
    }
}

// === AuthorizationPolicy ===

fn targets(
    v: &mut Findings,
    spec: &FieldPath,
    selector: bool,
    target_ref: bool,
    target_refs: &[PolicyTargetReference],
) {
    if selector && (target_ref || !target_refs.is_empty()) {
        let field = if target_ref { "targetRef" } else { "targetRefs" };
        v.error(spec.key(field), "selector and targetRef/targetRefs cannot both be set");
    }
    if target_ref && !target_refs.is_empty() {
        v.error(spec.key("targetRefs"), "targetRef and targetRefs cannot both be set");
    }
    for (i, t) in target_refs.iter().enumerate() {
        if t.kind.is_empty() || t.name.is_empty() {
            v.error(spec.key("targetRefs").index(i), "kind and name are required");
        }
    }
}

fn authorization_policy(v: &mut Findings, spec: &FieldPath, ap: &AuthorizationPolicySpec, meta: &ObjectMeta) {
    targets(v, spec, ap.selector.is_some(), ap.target_ref.is_some(), &ap.target_refs);
    for (field, message) in ap.action_errors() {
        let path = field.split('.').fold(spec.clone(), |p, k| p.key(k));
        v.error(path, message);
    }
    if let Some(dry) = meta.annotations.get("istio.io/dry-run")
        && !matches!(dry.as_str(), "true" | "false")
    {
        v.error(
            FieldPath::root().key("metadata").key("annotations").key("istio.io/dry-run"),
            format!("must be \"true\" or \"false\", got {dry:?}"),
        );
    }
    for (i, rule) in ap.rules.iter().enumerate() {
        let rp = spec.key("rules").index(i);
        for (j, from) in rule.from.iter().enumerate() {
            source(v, &rp.key("from").index(j).key("source"), &from.source);
        }
        for (j, to) in rule.to.iter().enumerate() {
            operation(v, &rp.key("to").index(j).key("operation"), &to.operation);
        }
        for (j, c) in rule.when.iter().enumerate() {
            condition(v, &rp.key("when").index(j), c);
        }
    }
}

/// `abc`, `abc*`, `*abc` or `*`: no other wildcard positions.
fn wildcard_values(v: &mut Findings, path: FieldPath, values: &[String]) {
    for (i, s) in values.iter().enumerate() {
        if s.is_empty() {
            v.error(path.index(i), "empty values are not allowed");
            continue;
        }
        let stars = s.matches('*').count();
        let ok = stars == 0 || s == "*" || (stars == 1 && (s.starts_with('*') || s.ends_with('*')));
        if !ok {
            v.error(
                path.index(i),
                format!("invalid value {s:?}: '*' is only allowed as the whole value, or at its start or end"),
            );
        }
    }
}

fn paths(v: &mut Findings, path: FieldPath, values: &[String]) {
    for (i, s) in values.iter().enumerate() {
        if !s.contains('{') {
            wildcard_values(v, path.clone(), std::slice::from_ref(s));
            if !s.is_empty() && !s.starts_with('/') && !s.starts_with('*') {
                v.warning(path.index(i), format!("path {s:?} does not start with '/' and can never match"));
            }
            continue;
        }
        // A URI template: `{*}` is one segment, `{**}` any number and must be last.
        let segments: Vec<&str> = s.split('/').collect();
        let last = segments.len() - 1;
        for (k, seg) in segments.iter().enumerate() {
            let bad = match *seg {
                "{*}" => false,
                "{**}" => k != last,
                seg => seg.contains(['{', '}', '*']),
            };
            if bad {
                v.error(path.index(i), format!("invalid path template {s:?}: use whole segments {{*}} or {{**}} (last only), without other wildcards"));
                break;
            }
        }
        if !s.starts_with('/') {
            v.error(path.index(i), format!("path template {s:?} must start with '/'"));
        }
    }
}

fn ip_blocks(v: &mut Findings, path: FieldPath, values: &[String]) {
    for (i, s) in values.iter().enumerate() {
        let (addr, prefix) = s.split_once('/').unwrap_or((s, ""));
        let ip = addr.parse::<std::net::IpAddr>();
        let max = if matches!(ip, Ok(std::net::IpAddr::V6(_))) { 128 } else { 32 };
        let prefix_ok = prefix.is_empty() || prefix.parse::<u8>().is_ok_and(|p| p <= max);
        if ip.is_err() || !prefix_ok {
            v.error(path.index(i), format!("invalid IP address or CIDR {s:?}"));
        }
    }
}

fn source(v: &mut Findings, p: &FieldPath, s: &Source) {
    for (field, values) in [
        ("principals", &s.principals),
        ("notPrincipals", &s.not_principals),
        ("requestPrincipals", &s.request_principals),
        ("notRequestPrincipals", &s.not_request_principals),
        ("trustDomains", &s.trust_domains),
        ("notTrustDomains", &s.not_trust_domains),
    ] {
        wildcard_values(v, p.key(field), values);
    }
    for (field, values) in [("principals", &s.principals), ("notPrincipals", &s.not_principals)] {
        for (i, value) in values.iter().enumerate() {
            if let Some(bare) = value.strip_prefix("spiffe://") {
                v.warning(p.key(field).index(i), format!("principals are written without \"spiffe://\": use {bare:?}"));
            }
        }
    }
    for (field, values) in [("namespaces", &s.namespaces), ("notNamespaces", &s.not_namespaces)] {
        for (i, value) in values.iter().enumerate() {
            if value.is_empty() {
                v.error(p.key(field).index(i), "empty values are not allowed");
            }
        }
    }
    let has_sa = !s.service_accounts.is_empty() || !s.not_service_accounts.is_empty();
    let has_pn = !s.principals.is_empty()
        || !s.not_principals.is_empty()
        || !s.namespaces.is_empty()
        || !s.not_namespaces.is_empty();
    if has_sa && has_pn {
        v.error(p.key("serviceAccounts"), "serviceAccounts cannot be combined with principals or namespaces");
    }
    for (field, values) in [("serviceAccounts", &s.service_accounts), ("notServiceAccounts", &s.not_service_accounts)] {
        if values.len() > 16 {
            v.error(p.key(field), format!("at most 16 service accounts, got {}", values.len()));
        }
        for (i, value) in values.iter().enumerate() {
            if value.is_empty() || value.contains('*') || value.matches('/').count() > 1 {
                v.error(
                    p.key(field).index(i),
                    format!("invalid service account {value:?}: use SA or NAMESPACE/SA, without wildcards"),
                );
            }
        }
    }
    for (field, values) in [
        ("ipBlocks", &s.ip_blocks),
        ("notIpBlocks", &s.not_ip_blocks),
        ("remoteIpBlocks", &s.remote_ip_blocks),
        ("notRemoteIpBlocks", &s.not_remote_ip_blocks),
    ] {
        ip_blocks(v, p.key(field), values);
    }
}

fn operation(v: &mut Findings, p: &FieldPath, o: &Operation) {
    for (field, values) in
        [("hosts", &o.hosts), ("notHosts", &o.not_hosts), ("methods", &o.methods), ("notMethods", &o.not_methods)]
    {
        wildcard_values(v, p.key(field), values);
    }
    for (field, values) in [("paths", &o.paths), ("notPaths", &o.not_paths)] {
        paths(v, p.key(field), values);
    }
    for (field, values) in [("ports", &o.ports), ("notPorts", &o.not_ports)] {
        for (i, port) in values.iter().enumerate() {
            if !port.parse::<u32>().is_ok_and(|n| (1..=65535).contains(&n)) {
                v.error(p.key(field).index(i), format!("invalid port {port:?}: a number within 1..=65535"));
            }
        }
    }
}

/// `when` keys Istio accepts (exact names and prefixes of bracketed forms).
const CONDITION_KEYS: &[&str] = &[
    "source.ip",
    "remote.ip",
    "source.namespace",
    "source.principal",
    "source.serviceAccount",
    "source.trustDomain",
    "request.auth.principal",
    "request.auth.audiences",
    "request.auth.presenter",
    "destination.ip",
    "destination.port",
    "connection.sni",
];

fn condition(v: &mut Findings, p: &FieldPath, c: &Condition) {
    let key = c.key.as_str();
    let bracketed = |prefix: &str| {
        key.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('[') && rest.ends_with(']') && rest.len() > 2)
    };
    let known = CONDITION_KEYS.contains(&key)
        || bracketed("request.headers")
        || bracketed("request.auth.claims")
        || key.starts_with("experimental.envoy.filters.");
    if key.is_empty() {
        v.error(p.key("key"), "key is required");
    } else if !known {
        v.error(p.key("key"), format!("unknown attribute {key:?}"));
    }
    if c.values.is_empty() && c.not_values.is_empty() {
        v.error(p.clone(), "at least one of values or notValues is required");
    }
    match key {
        "source.ip" | "remote.ip" | "destination.ip" => {
            ip_blocks(v, p.key("values"), &c.values);
            ip_blocks(v, p.key("notValues"), &c.not_values);
        }
        "destination.port" => {
            for (field, values) in [("values", &c.values), ("notValues", &c.not_values)] {
                for (i, port) in values.iter().enumerate() {
                    if !port.parse::<u32>().is_ok_and(|n| (1..=65535).contains(&n)) {
                        v.error(p.key(field).index(i), format!("invalid port {port:?}"));
                    }
                }
            }
        }
        "source.namespace" => {}
        _ => {
            wildcard_values(v, p.key("values"), &c.values);
            wildcard_values(v, p.key("notValues"), &c.not_values);
        }
    }
}

// === RequestAuthentication ===

fn request_authentication(v: &mut Findings, spec: &FieldPath, ra: &RequestAuthenticationSpec) {
    targets(v, spec, ra.selector.is_some(), ra.target_ref.is_some(), &ra.target_refs);
    let mut issuers = HashSet::new();
    for (i, rule) in ra.jwt_rules.iter().enumerate() {
        let p = spec.key("jwtRules").index(i);
        if rule.issuer.is_empty() {
            v.error(p.key("issuer"), "issuer is required");
        } else if !issuers.insert(rule.issuer.as_str()) {
            v.error(p.key("issuer"), format!("issuer {:?} appears in more than one rule", rule.issuer));
        }
        if let Some(uri) = &rule.jwks_uri
            && !(uri.starts_with("http://") || uri.starts_with("https://"))
        {
            v.error(p.key("jwksUri"), format!("jwksUri must be an http or https URL, got {uri:?}"));
        }
        if let Some(jwks) = &rule.jwks
            && !serde_json::from_str::<serde_json::Value>(jwks).map(|j| j.get("keys").is_some()).unwrap_or(false)
        {
            v.error(p.key("jwks"), "jwks must be a JSON Web Key Set (a JSON object with \"keys\")");
        }
        for (j, h) in rule.from_headers.iter().enumerate() {
            if h.name.is_empty() {
                v.error(p.key("fromHeaders").index(j).key("name"), "header name is required");
            }
        }
    }
}

// === Telemetry ===

fn telemetry(v: &mut Findings, spec: &FieldPath, t: &TelemetrySpec) {
    targets(v, spec, t.selector.is_some(), t.target_ref.is_some(), &t.target_refs);
    for (i, tr) in t.tracing.iter().enumerate() {
        let p = spec.key("tracing").index(i);
        if let Some(pct) = tr.random_sampling_percentage
            && !(0.0..=100.0).contains(&pct)
        {
            v.error(p.key("randomSamplingPercentage"), format!("percentage must be within 0..=100, got {pct}"));
        }
        for (j, provider) in tr.providers.iter().enumerate() {
            if provider.name.is_empty() {
                v.error(p.key("providers").index(j).key("name"), "provider name is required");
            }
        }
        if tr.providers.len() > 1 {
            v.warning(
                p.key("providers"),
                "only one tracing provider is supported (as in Istio); the proxy's --otlp-endpoint receives the spans",
            );
        }
        if tr.custom_tags.is_some() {
            v.warning(
                p.key("customTags"),
                "custom span tags are not applied by this mesh yet; the spans carry Istio's standard tags",
            );
        }
    }
    if !t.metrics.is_empty() {
        v.warning(
            spec.key("metrics"),
            "metric overrides are not applied by this mesh yet: Istio's standard metrics stay as they are",
        );
    }
    for (i, al) in t.access_logging.iter().enumerate() {
        let p = spec.key("accessLogging").index(i);
        for (j, provider) in al.providers.iter().enumerate() {
            match provider.name.as_str() {
                "" => v.error(p.key("providers").index(j).key("name"), "provider name is required"),
                "envoy" => {}
                other => v.warning(
                    p.key("providers").index(j).key("name"),
                    format!(
                        "access log provider {other:?} is not one this mesh has (only `envoy`, Istio's built-in, the proxy's stdout): the lines go to stdout"
                    ),
                ),
            }
        }
        if let Some(f) = &al.filter
            && let Err(e) = mesh_core::cel::Expr::parse(&f.expression)
        {
            v.error(p.key("filter").key("expression"), e);
        }
    }
}

// === Kubernetes ===

fn service(v: &mut Findings, spec: &FieldPath, s: &ServiceSpec) {
    let mut names = HashSet::new();
    for (i, p) in s.ports.iter().enumerate() {
        port_number(v, spec.key("ports").index(i).key("port"), p.port);
        if let Some(IntOrString::Int(t)) = p.target_port {
            port_number(v, spec.key("ports").index(i).key("targetPort"), t);
        }
        if let Some(n) = &p.name
            && !names.insert(n.as_str())
        {
            v.error(spec.key("ports").index(i).key("name"), format!("duplicate port name {n:?}"));
        }
    }
    if s.ports.len() > 1 && s.ports.iter().any(|p| p.name.is_none()) {
        v.error(spec.key("ports"), "every port needs a name when a Service has several ports");
    }
}

fn deployment(v: &mut Findings, spec: &FieldPath, d: &DeploymentSpec) {
    let labels = &d.template.metadata.labels;
    if !crate::snapshot::labels_match(&d.selector.match_labels, labels) {
        v.error(spec.key("selector").key("matchLabels"), "selector does not match the pod template's labels");
    }
    for (i, c) in d.template.spec.containers.iter().enumerate() {
        for (j, p) in c.ports.iter().enumerate() {
            port_number(
                v,
                spec.key("template").key("spec").key("containers").index(i).key("ports").index(j).key("containerPort"),
                p.container_port,
            );
        }
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
