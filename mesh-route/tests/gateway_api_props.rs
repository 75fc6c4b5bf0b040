//! Gateway API matching against plain reference models written from the spec: an
//! HTTPRouteMatch (element-wise PathPrefix, case-insensitive header names, the first query
//! value), a GRPCRouteMatch (service and method of `/service/method`), and the precedence
//! among every match of a route's rules at a gateway.
#![cfg(feature = "config")]

use http::HeaderMap;
use mesh_config::{
    api::gateway_api::{
        GrpcMethodMatch, GrpcRouteMatch, HttpHeaderMatch, HttpPathMatch, HttpRouteMatch, PathMatchType, ValueMatchType,
    },
    load::{LoadOptions, load_str},
    registry::{Locator, Registry},
};
use mesh_route::policy::{
    ProxyContext, RouteOutcome, RouteTable,
    action::PathModifier,
    matching::{MatchBlock, RequestInfo},
};
use proptest::{option, prelude::*};

fn full_match(pattern: &str, value: &str) -> bool {
    regex::Regex::new(&format!("^(?:{pattern})$")).unwrap().is_match(value)
}

/// The spec's PathPrefix: path elements split by `/`, the prefix's (without a trailing `/`)
/// a leading run of the path's.
fn path_prefix(prefix: &str, path: &str) -> bool {
    let want: Vec<&str> = prefix.trim_end_matches('/').split('/').collect();
    let have: Vec<&str> = path.split('/').collect();
    want.len() <= have.len() && want[..] == have[..want.len()]
}

fn value(m: &HttpHeaderMatch, v: &str) -> bool {
    match m.match_type.unwrap_or_default() {
        ValueMatchType::Exact => v == m.value,
        ValueMatchType::RegularExpression => full_match(&m.value, v),
    }
}

#[derive(Clone, Debug)]
struct Request {
    method: String,
    path: String,
    query: Option<String>,
    headers: Vec<(String, String)>,
}

fn reference(m: &HttpRouteMatch, r: &Request) -> bool {
    let (ty, v) = m.path();
    let path_ok = match ty {
        PathMatchType::Exact => r.path == v,
        PathMatchType::PathPrefix => path_prefix(v, &r.path),
        PathMatchType::RegularExpression => full_match(v, &r.path),
    };
    let headers_ok = m
        .headers
        .iter()
        .all(|h| r.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(&h.name)).any(|(_, v)| value(h, v)));
    let query_ok = m.query_params.iter().all(|q| {
        let first = r.query.as_deref().and_then(|qs| {
            qs.split('&').map(|p| p.split_once('=').unwrap_or((p, ""))).find(|(k, _)| *k == q.name).map(|(_, v)| v)
        });
        first.is_some_and(|v| value(q, v))
    });
    let method_ok = m.method.as_deref().is_none_or(|x| x == r.method);
    path_ok && headers_ok && query_ok && method_ok
}

fn segment() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "ab", "b", ""]).prop_map(str::to_string)
}

fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(segment(), 1..4).prop_map(|s| format!("/{}", s.join("/")))
}

fn header_match(names: Vec<&'static str>) -> impl Strategy<Value = HttpHeaderMatch> {
    (
        prop::sample::select(names),
        option::of(prop_oneof![Just(ValueMatchType::Exact), Just(ValueMatchType::RegularExpression)]),
        prop::sample::select(vec!["a", "b", "a.*", "[ab]+", ""]),
    )
        .prop_map(|(name, match_type, value)| HttpHeaderMatch {
            match_type,
            name: name.into(),
            value: value.into(),
        })
}

fn http_match() -> impl Strategy<Value = HttpRouteMatch> {
    let path_match = option::of(
        (
            option::of(prop_oneof![
                Just(PathMatchType::Exact),
                Just(PathMatchType::PathPrefix),
                Just(PathMatchType::RegularExpression)
            ]),
            option::of(prop_oneof![path(), Just("/a/".to_string()), Just("/a.*".to_string())]),
        )
            .prop_filter("a regex path is a valid pattern; others are paths without `//`", |(t, v)| match t {
                Some(PathMatchType::RegularExpression) => v.is_some(),
                _ => v.as_deref().is_none_or(|v| !v.contains("//")),
            })
            .prop_map(|(match_type, value)| HttpPathMatch { match_type, value }),
    );
    (
        path_match,
        prop::collection::vec(header_match(vec!["x-a", "X-B"]), 0..2),
        prop::collection::vec(header_match(vec!["q", "Q"]), 0..2),
        option::of(prop::sample::select(vec!["GET", "POST"]).prop_map(str::to_string)),
    )
        .prop_filter("names are unique in a match", |(_, h, q, _)| {
            (h.len() < 2 || !h[0].name.eq_ignore_ascii_case(&h[1].name)) && (q.len() < 2 || q[0].name != q[1].name)
        })
        .prop_map(|(path, headers, query_params, method)| HttpRouteMatch { path, headers, query_params, method })
}

fn request() -> impl Strategy<Value = Request> {
    (
        prop::sample::select(vec!["GET", "POST"]),
        path(),
        option::of(prop::sample::select(vec!["q=a", "q=b&q=a", "Q=ab", "x=1", "q"])),
        prop::collection::vec(
            (prop::sample::select(vec!["x-a", "x-b", "X-A"]), prop::sample::select(vec!["a", "b", "ab", ""])),
            0..3,
        ),
    )
        .prop_map(|(method, path, query, headers)| Request {
            method: method.into(),
            path,
            query: query.map(str::to_string),
            headers: headers.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        })
}

fn header_map(r: &Request) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (k, v) in &r.headers {
        headers.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
    }
    headers
}

fn info<'a>(r: &'a Request, headers: &'a HeaderMap) -> RequestInfo<'a> {
    RequestInfo {
        method: &r.method,
        scheme: "http",
        authority: "example.com",
        path: &r.path,
        query: r.query.as_deref(),
        headers,
    }
}

// === GRPCRouteMatch ===

fn grpc_reference(m: &GrpcRouteMatch, path: &str) -> bool {
    let Some(method) = &m.method else { return true };
    let mut parts = path.splitn(3, '/');
    let (Some(""), Some(svc), Some(name)) = (parts.next(), parts.next(), parts.next()) else { return false };
    if name.contains('/') {
        return false;
    }
    let regex = method.match_type == Some(ValueMatchType::RegularExpression);
    let check = |want: &Option<String>, have: &str| match want {
        None => !have.is_empty(),
        Some(w) if regex => full_match(w, have),
        Some(w) => w == have,
    };
    check(&method.service, svc) && check(&method.method, name)
}

fn grpc_match() -> impl Strategy<Value = GrpcRouteMatch> {
    let name = prop::sample::select(vec!["svc.A", "svc.B", "Get", "Put"]).prop_map(str::to_string);
    let regex = prop::sample::select(vec!["svc\\..*", "G.*", "[A-Z][a-z]+"]).prop_map(str::to_string);
    prop_oneof![
        (option::of(name.clone()), option::of(name))
            .prop_filter("one of service and method", |(s, m)| s.is_some() || m.is_some())
            .prop_map(|(service, method)| GrpcMethodMatch { match_type: None, service, method }),
        (option::of(regex.clone()), option::of(regex))
            .prop_filter("one of service and method", |(s, m)| s.is_some() || m.is_some())
            .prop_map(|(service, method)| GrpcMethodMatch {
                match_type: Some(ValueMatchType::RegularExpression),
                service,
                method
            }),
    ]
    .prop_map(|m| GrpcRouteMatch { method: Some(m), headers: Vec::new() })
}

// === precedence: the route table against the spec's ordering ===

/// The spec's precedence key of a match (smaller wins), written independently of the
/// implementation: Exact before PathPrefix before RegularExpression, longer values first,
/// a method before none, more headers, more query parameters, then rule order.
fn spec_key(
    m: &HttpRouteMatch,
    rule: usize,
    index: usize,
) -> (u8, std::cmp::Reverse<usize>, u8, std::cmp::Reverse<usize>, std::cmp::Reverse<usize>, usize, usize) {
    let (ty, v) = m.path();
    let (rank, len) = match ty {
        PathMatchType::Exact => (0, v.len()),
        PathMatchType::PathPrefix => (1, v.trim_end_matches('/').len()),
        PathMatchType::RegularExpression => (2, v.len()),
    };
    (
        rank,
        std::cmp::Reverse(len),
        u8::from(m.method.is_none()),
        std::cmp::Reverse(m.headers.len()),
        std::cmp::Reverse(m.query_params.len()),
        rule,
        index,
    )
}

fn yaml_match(m: &HttpRouteMatch) -> String {
    serde_json::to_string(m).unwrap()
}

const GATEWAY: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec: {gatewayClassName: istio, listeners: [{name: http, port: 80, protocol: HTTP}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: backend}\nspec: {ports: [{port: 8080, name: http}]}\n";

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    #[test]
    fn an_httproute_match_agrees_with_the_reference(m in http_match(), r in request()) {
        let headers = header_map(&r);
        let compiled = MatchBlock::from_http_route_match(&m).unwrap();
        prop_assert_eq!(compiled.matches(&info(&r, &headers)), reference(&m, &r), "match {:?}\nrequest {:?}", m, r);
    }

    #[test]
    fn a_grpcroute_match_agrees_with_the_reference(
        m in grpc_match(),
        path in prop::sample::select(vec!["/svc.A/Get", "/svc.B/Put", "/svc.A/Get/x", "/svc.A/", "//Get", "/svc.Ab/Get", "/other/Get"]),
    ) {
        let headers = HeaderMap::new();
        let r = Request { method: "POST".into(), path: path.to_string(), query: None, headers: Vec::new() };
        let compiled = MatchBlock::from_grpc_route_match(&m).unwrap();
        prop_assert_eq!(compiled.matches(&info(&r, &headers)), grpc_reference(&m, path), "match {:?}\npath {}", m, path);
    }

    /// Rules in any order: the rule the table picks is the best match by the spec's order.
    #[test]
    fn the_gateway_picks_the_spec_s_highest_precedence_match(
        rules in prop::collection::vec(prop::collection::vec(http_match(), 1..3), 1..5),
        r in request(),
    ) {
        let mut route = String::from("apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec:\n  parentRefs: [{name: gw}]\n  rules:\n");
        for (i, matches) in rules.iter().enumerate() {
            let list: Vec<String> = matches.iter().map(yaml_match).collect();
            route.push_str(&format!("  - name: rule{i}\n    matches: [{}]\n    backendRefs: [{{name: backend, port: 8080}}]\n", list.join(", ")));
        }
        let loaded = load_str("t.yaml", &format!("{GATEWAY}---\n{route}"), &LoadOptions::default());
        prop_assert!(!loaded.has_errors(), "{}", loaded.report());
        let snapshot = loaded.into_snapshot();
        let table = RouteTable::compile(&snapshot, &Registry::build(&snapshot, &Locator::new()), &ProxyContext::gateway("default", "gw"));
        let headers = header_map(&r);
        let picked = match table.route(&info(&r, &headers), Some(80)) {
            RouteOutcome::Matched(_, rule, _) => rule.index,
            _ => None,
        };
        let want = rules
            .iter()
            .enumerate()
            .flat_map(|(i, ms)| ms.iter().enumerate().map(move |(j, m)| (i, j, m)))
            .filter(|(_, _, m)| reference(m, &r))
            .min_by_key(|(i, j, m)| spec_key(m, *i, *j))
            .map(|(i, _, _)| i);
        prop_assert_eq!(picked, want, "rules {:?}\nrequest {:?}", rules, r);
    }
}

/// The spec's table for ReplacePrefixMatch (HTTPPathModifier's doc comment), and
/// ReplaceFullPath.
#[test]
fn replace_prefix_match_follows_the_spec_s_table() {
    let cases = [
        ("/foo/bar", "/foo", "/xyz", "/xyz/bar"),
        ("/foo/bar", "/foo", "/xyz/", "/xyz/bar"),
        ("/foo/bar", "/foo/", "/xyz", "/xyz/bar"),
        ("/foo/bar", "/foo/", "/xyz/", "/xyz/bar"),
        ("/foo", "/foo", "/xyz", "/xyz"),
        ("/foo/", "/foo", "/xyz", "/xyz/"),
        ("/foo/bar", "/foo", "", "/bar"),
        ("/foo/", "/foo", "", "/"),
        ("/foo", "/foo", "", "/"),
        ("/foo/", "/foo", "/", "/"),
        ("/foo", "/foo", "/", "/"),
        ("/foo/bar", "/", "/xyz", "/xyz/foo/bar"),
    ];
    for (path, matched, replacement, want) in cases {
        let m = PathModifier::Prefix { matched: matched.into(), replacement: replacement.into() };
        assert_eq!(m.apply(path), want, "{path} with {matched} -> {replacement:?}");
    }
    assert_eq!(PathModifier::Full("/new".into()).apply("/any/thing"), "/new");
}
