//! Table tests of every line of ISTIO-SEMANTICS §6 and checklist items 18-23.

use std::net::IpAddr;

use http::HeaderMap;
use mesh_config::load::{LoadOptions, load_str};
use mesh_core::Identity;

use super::*;

#[derive(Clone)]
struct Req {
    ns: &'static str,
    labels: &'static [(&'static str, &'static str)],
    peer: Option<&'static str>,
    ip: &'static str,
    xff: Option<&'static str>,
    method: &'static str,
    path: &'static str,
    host: &'static str,
    port: u16,
    headers: &'static [(&'static str, &'static str)],
    jwt: Option<(&'static str, &'static [&'static str], &'static str)>,
    tcp: bool,
}

const BASE: Req = Req {
    ns: "default",
    labels: &[("app", "reviews")],
    peer: None,
    ip: "10.1.2.3",
    xff: None,
    method: "GET",
    path: "/reviews/0",
    host: "reviews:9080",
    port: 9080,
    headers: &[],
    jwt: None,
    tcp: false,
};

const PP: &str = "cluster.local/ns/default/sa/bookinfo-productpage";
const RV: &str = "cluster.local/ns/default/sa/bookinfo-reviews";

/// (allowed, action, policy, audit).
type Outcome = (bool, Option<Action>, Option<String>, Vec<String>);

fn eval(policies: &str, r: &Req) -> Outcome {
    let loaded = load_str("p.yaml", policies, &LoadOptions::default());
    assert!(!loaded.has_errors(), "{}", loaded.report());
    let snapshot = loaded.into_snapshot();
    let labels: Labels = r.labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let protocol = if r.tcp { Traffic::Tcp } else { Traffic::Http };
    let policy = AuthzPolicy::compile(&snapshot, r.ns, &labels, protocol);
    let peer: Option<Identity> = r.peer.map(|p| format!("spiffe://{p}").parse().unwrap());
    let mut headers = HeaderMap::new();
    for (k, v) in r.headers {
        headers.append(*k, v.parse().unwrap());
    }
    let auth = r.jwt.map(|(principal, aud, claims)| RequestAuth {
        principal: principal.into(),
        audiences: aud.iter().map(|a| a.to_string()).collect(),
        presenter: None,
        claims: serde_json::from_str(claims).unwrap(),
    });
    let path = path::normalize(r.path).unwrap();
    let req = AuthzRequest {
        peer: peer.as_ref(),
        source_ip: Some(r.ip.parse::<IpAddr>().unwrap()),
        remote_ip: r.xff.map(|x| x.parse().unwrap()),
        request_auth: auth.as_ref(),
        method: if r.tcp { "" } else { r.method },
        path: if r.tcp { "" } else { &path },
        host: if r.tcp { "" } else { r.host },
        port: r.port,
        headers: &headers,
        destination_ip: Some("10.9.9.9".parse().unwrap()),
        sni: None,
    };
    let e = policy.evaluate(&req);
    let d = match e.custom {
        // No provider is reachable in these tables: a matching CUSTOM policy denies.
        Some(c) => Decision {
            allowed: false,
            action: Some(Action::Custom),
            policy: Some(c.policy),
            audit: e.decision.audit,
            dry_run: vec![],
        },
        None => e.decision,
    };
    (d.allowed, d.action, d.policy.map(|p| p.to_string()), d.audit.iter().map(|a| a.to_string()).collect())
}

fn ap(name: &str, ns: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {spec}\n---\n"
    )
}

fn allow(decided_by: Option<&str>) -> Outcome {
    (true, decided_by.map(|_| Action::Allow), decided_by.map(str::to_string), vec![])
}
fn deny_by(action: Action, policy: Option<&str>) -> Outcome {
    (false, Some(action), policy.map(str::to_string), vec![])
}

macro_rules! case {
    ($name:literal, $policies:expr, $req:expr, $want:expr) => {
        (($name), ($policies), ($req), ($want))
    };
}

#[test]
fn authorization_table() {
    let any_get = "{rules: [{to: [{operation: {methods: [GET]}}]}]}";
    let reviews_viewer = "{selector: {matchLabels: {app: reviews}}, rules: [{from: [{source: {principals: [\"cluster.local/ns/default/sa/bookinfo-productpage\"]}}], to: [{operation: {methods: [GET]}}]}]}";
    let cases: Vec<(&str, String, Req, Outcome)> = vec![
        // §6.2 and checklist 19: no policy, allow-nothing, allow-all.
        case!("no policy allows", String::new(), BASE, allow(None)),
        case!("spec: {} denies everything", ap("allow-nothing", "default", "{}"), BASE, deny_by(Action::Allow, None)),
        case!("rules: [] is allow-nothing too", ap("p", "default", "{rules: []}"), BASE, deny_by(Action::Allow, None)),
        case!("rules: [{}] allows everything", ap("all", "default", "{rules: [{}]}"), BASE, allow(Some("default/all"))),
        case!("DENY rules: [{}] denies everything", ap("d", "default", "{action: DENY, rules: [{}]}"), BASE, deny_by(Action::Deny, Some("default/d"))),
        case!("DENY beats ALLOW", format!("{}{}", ap("all", "default", "{rules: [{}]}"), ap("d", "default", "{action: DENY, rules: [{to: [{operation: {paths: [\"/reviews/*\"]}}]}]}")), BASE, deny_by(Action::Deny, Some("default/d"))),
        case!("a non-matching DENY leaves ALLOW", format!("{}{}", ap("all", "default", "{rules: [{}]}"), ap("d", "default", "{action: DENY, rules: [{to: [{operation: {methods: [DELETE]}}]}]}")), BASE, allow(Some("default/all"))),
        case!("once an ALLOW applies, others are denied", ap("get", "default", "{rules: [{to: [{operation: {methods: [POST]}}]}]}"), BASE, deny_by(Action::Allow, None)),
        case!("any matching ALLOW allows", format!("{}{}", ap("post", "default", "{rules: [{to: [{operation: {methods: [POST]}}]}]}"), ap("get", "default", any_get)), BASE, allow(Some("default/get"))),
        case!("CUSTOM first, even before an allow-all", format!("{}{}", ap("all", "default", "{rules: [{}]}"), ap("ext", "default", "{action: CUSTOM, provider: {name: ext-authz}, rules: [{to: [{operation: {paths: [\"/reviews/*\"]}}]}]}")), BASE, deny_by(Action::Custom, Some("default/ext"))),
        case!("CUSTOM only when its rules match", ap("ext", "default", "{action: CUSTOM, provider: {name: ext-authz}, rules: [{to: [{operation: {paths: [\"/admin\"]}}]}]}"), BASE, allow(None)),
        case!("AUDIT never decides", ap("a", "default", "{action: AUDIT, rules: [{}]}"), BASE, (true, None, None, vec!["default/a".to_string()])),
        case!("AUDIT is reported beside the decision", format!("{}{}", ap("a", "default", "{action: AUDIT, rules: [{to: [{operation: {methods: [GET]}}]}]}"), ap("nothing", "default", "{}")), BASE, (false, Some(Action::Allow), None, vec!["default/a".to_string()])),
        case!("dry-run DENY is not enforced", "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: d, annotations: {istio.io/dry-run: \"true\"}}\nspec: {action: DENY, rules: [{}]}\n".to_string(), BASE, allow(None)),
        case!("dry-run ALLOW does not make others deny", "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: a, annotations: {istio.io/dry-run: \"true\"}}\nspec: {rules: [{to: [{operation: {methods: [POST]}}]}]}\n".to_string(), BASE, allow(None)),
        // §6.1 scope.
        case!("selector that does not match: no policy applies", ap("r", "default", "{selector: {matchLabels: {app: ratings}}}"), BASE, allow(None)),
        case!("selector that matches applies", ap("r", "default", "{selector: {matchLabels: {app: reviews}}}"), BASE, deny_by(Action::Allow, None)),
        case!("another namespace's policy does not apply", ap("nothing", "prod", "{}"), BASE, allow(None)),
        case!("root namespace policy is mesh-wide", ap("nothing", "istio-system", "{}"), BASE, deny_by(Action::Allow, None)),
        case!("root namespace selector matches in every namespace", ap("r", "istio-system", "{selector: {matchLabels: {app: reviews}}, action: DENY, rules: [{}]}"), BASE, deny_by(Action::Deny, Some("istio-system/r"))),
        case!("targetRefs policies do not bind sidecars", ap("gw", "default", "{targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: bookinfo-gateway}], action: DENY, rules: [{}]}"), BASE, allow(None)),
        // Bookinfo's reviews-viewer (checklist 21).
        case!("reviews-viewer: productpage may GET", ap("reviews-viewer", "default", reviews_viewer), Req { peer: Some(PP), ..BASE }, allow(Some("default/reviews-viewer"))),
        case!("reviews-viewer: productpage may not POST", ap("reviews-viewer", "default", reviews_viewer), Req { peer: Some(PP), method: "POST", ..BASE }, deny_by(Action::Allow, None)),
        case!("reviews-viewer: another identity may not", ap("reviews-viewer", "default", reviews_viewer), Req { peer: Some(RV), ..BASE }, deny_by(Action::Allow, None)),
        case!("reviews-viewer: plaintext may not", ap("reviews-viewer", "default", reviews_viewer), BASE, deny_by(Action::Allow, None)),
        case!("principals * means any authenticated peer", ap("p", "default", "{rules: [{from: [{source: {principals: [\"*\"]}}]}]}"), Req { peer: Some(RV), ..BASE }, allow(Some("default/p"))),
        case!("principals * refuses plaintext", ap("p", "default", "{rules: [{from: [{source: {principals: [\"*\"]}}]}]}"), BASE, deny_by(Action::Allow, None)),
        case!("notPrincipals matches plaintext callers", ap("p", "default", "{action: DENY, rules: [{from: [{source: {notPrincipals: [\"cluster.local/ns/default/sa/bookinfo-productpage\"]}}]}]}"), BASE, deny_by(Action::Deny, Some("default/p"))),
        case!("DENY notPrincipals * rejects plaintext", ap("p", "default", "{action: DENY, rules: [{from: [{source: {notPrincipals: [\"*\"]}}]}]}"), BASE, deny_by(Action::Deny, Some("default/p"))),
        case!("DENY notPrincipals * lets mTLS through", ap("p", "default", "{action: DENY, rules: [{from: [{source: {notPrincipals: [\"*\"]}}]}]}"), Req { peer: Some(RV), ..BASE }, allow(None)),
        case!("principal prefix", ap("p", "default", "{rules: [{from: [{source: {principals: [\"cluster.local/ns/default/*\"]}}]}]}"), Req { peer: Some(RV), ..BASE }, allow(Some("default/p"))),
        case!("principal suffix", ap("p", "default", "{rules: [{from: [{source: {principals: [\"*/sa/bookinfo-productpage\"]}}]}]}"), Req { peer: Some(RV), ..BASE }, deny_by(Action::Allow, None)),
        case!("principals are case-sensitive", ap("p", "default", "{rules: [{from: [{source: {principals: [\"cluster.local/ns/default/sa/Bookinfo-reviews\"]}}]}]}"), Req { peer: Some(RV), ..BASE }, deny_by(Action::Allow, None)),
        case!("principal and notPrincipal ANDed", ap("p", "default", "{rules: [{from: [{source: {principals: [\"cluster.local/*\"], notPrincipals: [\"*/sa/bookinfo-reviews\"]}}]}]}"), Req { peer: Some(RV), ..BASE }, deny_by(Action::Allow, None)),
        // namespaces, serviceAccounts, trust domains.
        case!("namespaces from the principal", ap("p", "default", "{rules: [{from: [{source: {namespaces: [default]}}]}]}"), Req { peer: Some(PP), ..BASE }, allow(Some("default/p"))),
        case!("namespaces need mTLS", ap("p", "default", "{rules: [{from: [{source: {namespaces: [default]}}]}]}"), BASE, deny_by(Action::Allow, None)),
        case!("namespaces wildcard anywhere", ap("p", "default", "{rules: [{from: [{source: {namespaces: [\"d*lt\"]}}]}]}"), Req { peer: Some(PP), ..BASE }, allow(Some("default/p"))),
        case!("notNamespaces", ap("p", "default", "{action: DENY, rules: [{from: [{source: {notNamespaces: [default]}}]}]}"), Req { peer: Some("cluster.local/ns/prod/sa/x"), ..BASE }, deny_by(Action::Deny, Some("default/p"))),
        case!("serviceAccounts short form is the policy's namespace", ap("p", "default", "{rules: [{from: [{source: {serviceAccounts: [bookinfo-productpage]}}]}]}"), Req { peer: Some(PP), ..BASE }, allow(Some("default/p"))),
        case!("serviceAccounts ns/sa", ap("p", "default", "{rules: [{from: [{source: {serviceAccounts: [prod/bookinfo-productpage]}}]}]}"), Req { peer: Some(PP), ..BASE }, deny_by(Action::Allow, None)),
        case!("trustDomains", ap("p", "default", "{rules: [{from: [{source: {trustDomains: [cluster.local]}}]}]}"), Req { peer: Some(PP), ..BASE }, allow(Some("default/p"))),
        // IP blocks.
        case!("ipBlocks CIDR", ap("p", "default", "{rules: [{from: [{source: {ipBlocks: [10.1.0.0/16]}}]}]}"), BASE, allow(Some("default/p"))),
        case!("ipBlocks miss", ap("p", "default", "{rules: [{from: [{source: {ipBlocks: [192.168.0.0/16]}}]}]}"), BASE, deny_by(Action::Allow, None)),
        case!("notIpBlocks", ap("p", "default", "{action: DENY, rules: [{from: [{source: {notIpBlocks: [10.0.0.0/8]}}]}]}"), Req { ip: "172.16.0.1", ..BASE }, deny_by(Action::Deny, Some("default/p"))),
        case!("remoteIpBlocks use X-Forwarded-For's client", ap("p", "default", "{rules: [{from: [{source: {remoteIpBlocks: [203.0.113.0/24]}}]}]}"), Req { xff: Some("203.0.113.9"), ..BASE }, allow(Some("default/p"))),
        case!("remoteIpBlocks fall back to the peer address", ap("p", "default", "{rules: [{from: [{source: {remoteIpBlocks: [10.1.2.3]}}]}]}"), BASE, allow(Some("default/p"))),
        // Operation.
        case!("hosts are case-insensitive", ap("p", "default", "{rules: [{to: [{operation: {hosts: [\"Reviews:9080\"]}}]}]}"), Req { host: "REVIEWS:9080", ..BASE }, allow(Some("default/p"))),
        case!("hosts see the port", ap("p", "default", "{rules: [{to: [{operation: {hosts: [reviews]}}]}]}"), BASE, deny_by(Action::Allow, None)),
        case!("hosts with a port wildcard", ap("p", "default", "{rules: [{to: [{operation: {hosts: [reviews, \"reviews:*\"]}}]}]}"), BASE, allow(Some("default/p"))),
        case!("ports are the workload port", ap("p", "default", "{rules: [{to: [{operation: {ports: [\"9080\"]}}]}]}"), BASE, allow(Some("default/p"))),
        case!("notPorts", ap("p", "default", "{action: DENY, rules: [{to: [{operation: {notPorts: [\"9080\"]}}]}]}"), Req { port: 15000, ..BASE }, deny_by(Action::Deny, Some("default/p"))),
        case!("methods are case-sensitive", ap("p", "default", "{rules: [{to: [{operation: {methods: [get]}}]}]}"), BASE, deny_by(Action::Allow, None)),
        case!("notMethods", ap("p", "default", "{rules: [{to: [{operation: {notMethods: [DELETE]}}]}]}"), BASE, allow(Some("default/p"))),
        case!("paths exact ignore the query", ap("p", "default", "{rules: [{to: [{operation: {paths: [/reviews/0]}}]}]}"), Req { path: "/reviews/0?user=jason", ..BASE }, allow(Some("default/p"))),
        case!("paths are normalised (dot segments)", ap("p", "default", "{action: DENY, rules: [{to: [{operation: {paths: [\"/admin*\"]}}]}]}"), Req { path: "/reviews/../admin/x", ..BASE }, deny_by(Action::Deny, Some("default/p"))),
        case!("paths are normalised (percent-encoding)", ap("p", "default", "{action: DENY, rules: [{to: [{operation: {paths: [\"/admin\"]}}]}]}"), Req { path: "/%61dmin", ..BASE }, deny_by(Action::Deny, Some("default/p"))),
        case!("paths are case-sensitive", ap("p", "default", "{action: DENY, rules: [{to: [{operation: {paths: [\"/admin\"]}}]}]}"), Req { path: "/ADMIN", ..BASE }, allow(None)),
        case!("path template {*}", ap("p", "default", "{rules: [{to: [{operation: {paths: [\"/reviews/{*}\"]}}]}]}"), BASE, allow(Some("default/p"))),
        case!("path template {*} is one segment", ap("p", "default", "{rules: [{to: [{operation: {paths: [\"/reviews/{*}\"]}}]}]}"), Req { path: "/reviews/0/x", ..BASE }, deny_by(Action::Allow, None)),
        case!("path template {**}", ap("p", "default", "{rules: [{to: [{operation: {paths: [\"/reviews/{**}\"]}}]}]}"), Req { path: "/reviews/0/x", ..BASE }, allow(Some("default/p"))),
        case!("notPaths", ap("p", "default", "{rules: [{to: [{operation: {notPaths: [\"/admin*\"]}}]}]}"), BASE, allow(Some("default/p"))),
        // Rule structure: from AND to AND when; lists ORed.
        case!("from and to are ANDed", ap("p", "default", "{rules: [{from: [{source: {principals: [\"*\"]}}], to: [{operation: {methods: [GET]}}]}]}"), BASE, deny_by(Action::Allow, None)),
        case!("to entries are ORed", ap("p", "default", "{rules: [{to: [{operation: {methods: [POST]}}, {operation: {paths: [/reviews/0]}}]}]}"), BASE, allow(Some("default/p"))),
        case!("rules are ORed", ap("p", "default", "{rules: [{to: [{operation: {methods: [POST]}}]}, {to: [{operation: {methods: [GET]}}]}]}"), BASE, allow(Some("default/p"))),
        // when.
        case!("when request.headers", ap("p", "default", "{rules: [{when: [{key: \"request.headers[x-token]\", values: [abc]}]}]}"), Req { headers: &[("x-token", "abc")], ..BASE }, allow(Some("default/p"))),
        case!("when header names are case-insensitive", ap("p", "default", "{rules: [{when: [{key: \"request.headers[X-Token]\", values: [abc]}]}]}"), Req { headers: &[("x-token", "abc")], ..BASE }, allow(Some("default/p"))),
        case!("when header values are case-sensitive", ap("p", "default", "{rules: [{when: [{key: \"request.headers[x-token]\", values: [abc]}]}]}"), Req { headers: &[("x-token", "ABC")], ..BASE }, deny_by(Action::Allow, None)),
        case!("repeated headers match value by value", ap("p", "default", "{rules: [{when: [{key: \"request.headers[x-role]\", values: [admin]}]}]}"), Req { headers: &[("x-role", "user"), ("x-role", "admin")], ..BASE }, allow(Some("default/p"))),
        case!("header presence counts an empty value", ap("p", "default", "{rules: [{when: [{key: \"request.headers[x-empty]\", values: [\"*\"]}]}]}"), Req { headers: &[("x-empty", "")], ..BASE }, allow(Some("default/p"))),
        case!("header presence needs the header", ap("p", "default", "{rules: [{when: [{key: \"request.headers[x-empty]\", values: [\"*\"]}]}]}"), BASE, deny_by(Action::Allow, None)),
        case!("when notValues", ap("p", "default", "{action: DENY, rules: [{when: [{key: \"request.headers[x-env]\", notValues: [prod]}]}]}"), Req { headers: &[("x-env", "dev")], ..BASE }, deny_by(Action::Deny, Some("default/p"))),
        case!("when source.ip CIDR", ap("p", "default", "{rules: [{when: [{key: source.ip, values: [10.1.0.0/16]}]}]}"), BASE, allow(Some("default/p"))),
        case!("when source.namespace", ap("p", "default", "{rules: [{when: [{key: source.namespace, values: [default]}]}]}"), Req { peer: Some(PP), ..BASE }, allow(Some("default/p"))),
        case!("when source.principal", ap("p", "default", "{rules: [{when: [{key: source.principal, values: [\"cluster.local/ns/default/sa/bookinfo-productpage\"]}]}]}"), Req { peer: Some(PP), ..BASE }, allow(Some("default/p"))),
        case!("when destination.port", ap("p", "default", "{rules: [{when: [{key: destination.port, values: [\"9080\"]}]}]}"), BASE, allow(Some("default/p"))),
        case!("when request.auth.claims", ap("p", "default", "{rules: [{when: [{key: \"request.auth.claims[groups]\", values: [admins]}]}]}"), Req { jwt: Some(("https://issuer/jason", &["bookinfo"], r#"{"groups": ["users", "admins"]}"#)), ..BASE }, allow(Some("default/p"))),
        case!("when nested claims", ap("p", "default", "{rules: [{when: [{key: \"request.auth.claims[org][team]\", values: [mesh]}]}]}"), Req { jwt: Some(("i/s", &[], r#"{"org": {"team": "mesh"}}"#)), ..BASE }, allow(Some("default/p"))),
        case!("when request.auth.audiences", ap("p", "default", "{rules: [{when: [{key: request.auth.audiences, values: [bookinfo]}]}]}"), Req { jwt: Some(("i/s", &["other", "bookinfo"], "{}")), ..BASE }, allow(Some("default/p"))),
        case!("requestPrincipals", ap("p", "default", "{rules: [{from: [{source: {requestPrincipals: [\"https://issuer/*\"]}}]}]}"), Req { jwt: Some(("https://issuer/jason", &[], "{}")), ..BASE }, allow(Some("default/p"))),
        case!("requestPrincipals need a token", ap("p", "default", "{rules: [{from: [{source: {requestPrincipals: [\"*\"]}}]}]}"), BASE, deny_by(Action::Allow, None)),
        case!("an unknown when key skips the rule; the ALLOW policy still applies", ap("p", "default", "{rules: [{when: [{key: \"experimental.envoy.filters.foo[bar]\", values: [x]}]}]}"), BASE, deny_by(Action::Allow, None)),
        // §6.6 TCP (checklist 23).
        case!("TCP: an ALLOW rule with methods vanishes", ap("p", "default", any_get), Req { tcp: true, ..BASE }, deny_by(Action::Allow, None)),
        case!("TCP: a DENY rule with methods denies all", ap("p", "default", "{action: DENY, rules: [{to: [{operation: {methods: [POST]}}]}]}"), Req { tcp: true, ..BASE }, deny_by(Action::Deny, Some("default/p"))),
        case!("TCP: DENY scoped with ports", ap("p", "default", "{action: DENY, rules: [{to: [{operation: {methods: [POST], ports: [\"3306\"]}}]}]}"), Req { tcp: true, ..BASE }, allow(None)),
        case!("TCP: ALLOW with only TCP fields works", ap("p", "default", "{rules: [{from: [{source: {principals: [\"*\"]}}], to: [{operation: {ports: [\"9080\"]}}]}]}"), Req { tcp: true, peer: Some(PP), ..BASE }, allow(Some("default/p"))),
    ];
    assert!(cases.len() >= 60, "{} cases", cases.len());
    let mut failures = Vec::new();
    for (name, policies, req, want) in &cases {
        let got = eval(policies, req);
        if &got != want {
            failures.push(format!("{name}: want {want:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{} of {} failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[test]
fn bookinfo_tutorial_policies() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/bookinfo/config/tutorial/security");
    let text: String = [
        "authz-allow-nothing.yaml",
        "authz-productpage-viewer.yaml",
        "authz-details-viewer.yaml",
        "authz-reviews-viewer.yaml",
        "authz-ratings-viewer.yaml",
    ]
    .iter()
    .map(|f| std::fs::read_to_string(dir.join(f)).unwrap() + "\n---\n")
    .collect();
    let page = Req { labels: &[("app", "productpage")], host: "bookinfo.example", path: "/productpage", ..BASE };
    assert_eq!(eval(&text, &page), allow(Some("default/productpage-viewer")));
    assert_eq!(eval(&text, &Req { method: "POST", ..page.clone() }), deny_by(Action::Allow, None));
    let details = Req { labels: &[("app", "details")], peer: Some(PP), ..BASE };
    assert_eq!(eval(&text, &details), allow(Some("default/details-viewer")));
    let ratings = Req { labels: &[("app", "ratings")], peer: Some(PP), ..BASE };
    assert_eq!(eval(&text, &ratings), deny_by(Action::Allow, None), "only reviews may read ratings");
    assert_eq!(eval(&text, &Req { peer: Some(RV), ..ratings }), allow(Some("default/ratings-viewer")));
}

#[test]
fn case_variants_of_standard_methods_are_named() {
    let m = |s: &str| method_case_variant(&http::Method::from_bytes(s.as_bytes()).unwrap());
    assert_eq!(m("delete"), Some("DELETE"));
    assert_eq!(m("Get"), Some("GET"));
    assert_eq!(m("pAtCh"), Some("PATCH"));
    assert_eq!(m("DELETE"), None);
    assert_eq!(m("PURGE"), None);
    assert_eq!(m("purge"), None);
}

proptest::proptest! {
    /// Against the reference model: a variant is a method whose upper case is standard
    /// and that is not that upper case itself.
    #[test]
    fn method_variants_match_the_model(s in "[a-zA-Z]{1,8}") {
        let upper = s.to_ascii_uppercase();
        let standard = ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"];
        let expected = standard.iter().find(|m| **m == upper && upper != s).copied();
        let method = http::Method::from_bytes(s.as_bytes()).unwrap();
        proptest::prop_assert_eq!(method_case_variant(&method), expected);
    }
}

#[test]
fn policies_from_yaml_or_typed_for_one_workload() {
    let labels: Labels = [("app".to_string(), "ratings".to_string())].into();
    let yaml = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ratings-viewer, namespace: default}
spec:
  selector: {matchLabels: {app: ratings}}
  action: ALLOW
  rules: [{from: [{source: {principals: [cluster.local/ns/default/sa/bookinfo-reviews]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: other, namespace: default}
spec:
  selector: {matchLabels: {app: details}}
  action: DENY
  rules: [{}]
"#;
    let p = AuthzPolicy::from_yaml(yaml, "default", &labels, Traffic::Http).unwrap();
    // Only the policy selecting ratings applies.
    assert_eq!((p.allow.len(), p.deny.len()), (1, 0), "{p:?}");
    // The same as typed objects.
    let loaded = mesh_config::load::load_str("t.yaml", yaml, &mesh_config::load::LoadOptions::default());
    let typed = loaded.resources.iter().filter_map(|r| match &*r.resource {
        mesh_config::api::Resource::AuthorizationPolicy(ap) => Some(ap.clone()),
        _ => None,
    });
    let t = AuthzPolicy::from_policies(typed, "default", &labels, Traffic::Http).unwrap();
    assert_eq!(format!("{t:?}"), format!("{p:?}"));
    // An invalid document is an error with its line and field, not skipped.
    let bad =
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: x}\nspec:\n  action: DENY\n";
    let err = AuthzPolicy::from_yaml(bad, "default", &labels, Traffic::Http).unwrap_err().to_string();
    assert!(err.contains("policy.yaml:") && err.contains("rules"), "{err}");
}
