//! Checks of the `security.istio.io` kinds: PeerAuthentication, AuthorizationPolicy,
//! RequestAuthentication.

use std::collections::HashSet;

use super::*;
use crate::{api::*, diag::FieldPath};

// === PeerAuthentication ===

pub(super) fn peer_authentication(v: &mut Findings, spec: &FieldPath, pa: &PeerAuthenticationSpec, meta: &ObjectMeta) {
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

pub(super) fn targets(
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

pub(super) fn authorization_policy(
    v: &mut Findings,
    spec: &FieldPath,
    ap: &AuthorizationPolicySpec,
    meta: &ObjectMeta,
) {
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
pub(super) fn wildcard_values(v: &mut Findings, path: FieldPath, values: &[String]) {
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

pub(super) fn paths(v: &mut Findings, path: FieldPath, values: &[String]) {
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

pub(super) fn ip_blocks(v: &mut Findings, path: FieldPath, values: &[String]) {
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

pub(super) fn source(v: &mut Findings, p: &FieldPath, s: &Source) {
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

pub(super) fn operation(v: &mut Findings, p: &FieldPath, o: &Operation) {
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
pub(super) const CONDITION_KEYS: &[&str] = &[
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

pub(super) fn condition(v: &mut Findings, p: &FieldPath, c: &Condition) {
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

pub(super) fn request_authentication(v: &mut Findings, spec: &FieldPath, ra: &RequestAuthenticationSpec) {
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
