//! Checks of the `networking.istio.io` kinds: VirtualService, DestinationRule, Gateway,
//! ServiceEntry, WorkloadEntry, Sidecar.

use std::collections::HashSet;

use super::*;
use crate::{api::*, diag::FieldPath, registry::Protocol, string_match::compile_full_match};

// === VirtualService ===

pub(super) fn virtual_service(v: &mut Findings, spec: &FieldPath, vs: &VirtualServiceSpec) {
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
    // A route that matches every request before the last one: mesh-route's rule.
    for (i, route) in vs.http.iter().enumerate() {
        http_route(v, &spec.key("http").index(i), route);
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

pub(super) fn string_match(v: &mut Findings, path: FieldPath, m: &StringMatch, allow_empty_prefix: bool) {
    match m {
        StringMatch::Regex(r) => regex(v, path.key("regex"), r),
        StringMatch::Prefix(p) if p.is_empty() && !allow_empty_prefix => {
            v.error(path.key("prefix"), "an empty prefix is only allowed for uri");
        }
        StringMatch::Exact(_) | StringMatch::Prefix(_) => {}
    }
}

pub(super) fn header_conditions(
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

pub(super) fn http_route(v: &mut Findings, path: &FieldPath, r: &HttpRoute) {
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
    // `fault`: mesh-fault's rule.
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
pub(super) fn regex_syntax_only(pattern: &str) -> Result<(), String> {
    compile_full_match(pattern).map(|_| ()).map_err(|e| e.to_string())
}

/// Header operations; returns how many of them rewrite the authority.
pub(super) fn headers(v: &mut Findings, path: &FieldPath, h: &Headers) -> usize {
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

pub(super) fn destination(v: &mut Findings, path: FieldPath, d: &Destination) {
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

pub(super) fn http_destinations(v: &mut Findings, path: &FieldPath, route: &[HttpRouteDestination]) {
    l4_destinations(v, path, route.iter().map(|d| (&d.destination, d.weight)));
}

pub(super) fn l4_destinations<'a>(
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

pub(super) fn redirect(v: &mut Findings, p: &FieldPath, rd: &HttpRedirect, route: &HttpRoute) {
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

pub(super) fn retries(v: &mut Findings, p: &FieldPath, r: &HttpRetry) {
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

// === DestinationRule ===

pub(super) fn destination_rule(v: &mut Findings, spec: &FieldPath, dr: &DestinationRuleSpec) {
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

pub(super) fn traffic_policy(v: &mut Findings, p: &FieldPath, tp: &TrafficPolicy) {
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

pub(super) fn policy_blocks(
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

pub(super) fn gateway(v: &mut Findings, spec: &FieldPath, gw: &GatewaySpec) {
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

pub(super) fn service_entry(v: &mut Findings, spec: &FieldPath, se: &ServiceEntrySpec) {
    if se.hosts.is_empty() {
        v.error(spec.key("hosts"), "at least one host is required");
    }
    for (i, h) in se.hosts.iter().enumerate() {
        host_name(v, spec.key("hosts").index(i), h);
    }
    for (i, a) in se.addresses.iter().enumerate() {
        if mesh_core::cidr::Cidr::parse(a).is_none() {
            v.error(spec.key("addresses").index(i), format!("{a:?} is not an IP address or CIDR"));
        }
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

pub(super) fn workload_entry(v: &mut Findings, p: &FieldPath, we: &WorkloadEntrySpec) {
    if we.address.is_empty() {
        v.error(p.key("address"), "address is required");
    }
    for (name, n) in &we.ports {
        port_number(v, p.key("ports").key(name.clone()), *n);
    }
}

pub(super) fn sidecar(v: &mut Findings, spec: &FieldPath, sc: &SidecarSpec) {
    // Applied: `workloadSelector` and `outboundTrafficPolicy.mode` (at the capture
    // listener). The rest loads and is said not to be in force.
    let not_yet = |v: &mut Findings, field: &str, what: &str| {
        v.warning(spec.key(field), format!("{what} is not applied yet; the proxy behaves as without it"));
    };
    if !sc.egress.is_empty() {
        not_yet(v, "egress", "egress (the hosts a workload's proxy knows)");
    }
    if !sc.ingress.is_empty() {
        not_yet(v, "ingress", "ingress (the workload's inbound listeners)");
    }
    if sc.inbound_connection_pool.is_some() {
        not_yet(v, "inboundConnectionPool", "inboundConnectionPool");
    }
    if sc.outbound_traffic_policy.as_ref().is_some_and(|p| p.egress_proxy.is_some()) {
        v.warning(
            spec.key("outboundTrafficPolicy").key("egressProxy"),
            "egressProxy is not applied yet; unknown destinations follow the mode",
        );
    }
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
