use std::path::Path;

use http::HeaderMap;
use mesh_config::{
    Snapshot,
    load::{LoadOptions, load_paths, load_str},
    registry::{Locator, Registry},
};

use std::sync::Arc;

use mesh_config::api::Labels;

use super::{
    action::{Action, Target, WeightedTargets},
    matching::RequestInfo,
    *,
};

fn config_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/bookinfo/config")
}

/// Bookinfo's base mesh plus extra YAML, with every deployment given an address.
fn setup(extra: &[&str], yaml: &str) -> (Snapshot, Registry) {
    let mut paths = vec![config_dir().join("mesh")];
    paths.extend(extra.iter().map(|e| config_dir().join("tutorial").join(e)));
    let mut loaded = load_paths(&paths, &LoadOptions::default());
    if !yaml.is_empty() {
        let more = load_str("extra.yaml", yaml, &LoadOptions::default());
        loaded.diagnostics.extend(more.diagnostics);
        loaded.resources.extend(more.resources);
    }
    assert!(!loaded.has_errors(), "{}", loaded.report());
    let snapshot = loaded.into_snapshot();
    let mut locator = Locator::new();
    for (i, w) in
        ["details-v1", "ratings-v1", "reviews-v1", "reviews-v2", "reviews-v3", "productpage-v1"].iter().enumerate()
    {
        locator.insert("default", w, format!("127.0.0.1:{}", 20000 + i).parse().unwrap());
    }
    let registry = Registry::build(&snapshot, &locator);
    (snapshot, registry)
}

fn sidecar() -> ProxyContext {
    ProxyContext::sidecar(
        "default",
        [("app".to_string(), "productpage".to_string()), ("version".to_string(), "v1".to_string())].into(),
    )
}

struct Req {
    method: &'static str,
    authority: String,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
}

fn req(authority: &str, path: &str) -> Req {
    let (path, query) = match path.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (path.to_string(), None),
    };
    Req { method: "GET", authority: authority.into(), path, query, headers: HeaderMap::new() }
}

impl Req {
    fn header(mut self, k: &'static str, v: &'static str) -> Self {
        self.headers.append(k, v.parse().unwrap());
        self
    }
    fn info(&self) -> RequestInfo<'_> {
        RequestInfo {
            method: self.method,
            scheme: "http",
            authority: &self.authority,
            path: &self.path,
            query: self.query.as_deref(),
            headers: &self.headers,
        }
    }
}

/// (vs, route index, [(cluster, percent)]) or the 404 / other outcome as a string.
fn decide(table: &RouteTable, r: &Req, listener: Option<u16>) -> String {
    match table.route(&r.info(), listener) {
        RouteOutcome::NoVirtualHost => "404 NR (no virtual host)".into(),
        RouteOutcome::NoRoute(_) => "404 NR".into(),
        RouteOutcome::Matched(_, route, _) => {
            let vs = route.virtual_service.as_deref().unwrap_or("-");
            match &route.action {
                Action::Forward(t) => {
                    let dests: Vec<String> = t
                        .percents()
                        .map(|(t, p)| match &t.target {
                            Target::Cluster(c) => format!("{} ({} endpoints) {p}%", c.name, c.endpoints.len()),
                            Target::Missing { name, .. } => format!("{name} NC {p}%"),
                        })
                        .collect();
                    format!("{vs}[{}] -> {}", route.index.map_or("-".into(), |i| i.to_string()), dests.join(", "))
                }
                Action::Redirect(r) => format!("{vs} redirect {}", r.status.as_u16()),
                Action::DirectResponse(d) => format!("{vs} direct {}", d.status.as_u16()),
            }
        }
    }
}

#[test]
fn without_a_virtual_service_the_whole_service_is_used() {
    let (s, r) = setup(&[], "");
    let t = RouteTable::compile(&s, &r, &sidecar());
    assert_eq!(
        decide(&t, &req("reviews:9080", "/reviews/0"), None),
        "-[-] -> outbound|9080||reviews.default.svc.cluster.local (3 endpoints) 100%"
    );
    let RouteOutcome::Matched(_, route, _) = t.route(&req("reviews:9080", "/").info(), None) else { panic!() };
    assert_eq!(route.retry.as_deref(), Some(&retry::RetryPolicy::istio_default()));
    assert_eq!(route.timeout, None);
}

#[test]
fn every_name_a_client_can_use() {
    let (s, r) = setup(&["networking/virtual-service-all-v1.yaml"], "");
    let t = RouteTable::compile(&s, &r, &sidecar());
    let want = "default/reviews[0] -> outbound|9080|v1|reviews.default.svc.cluster.local (1 endpoints) 100%";
    for host in [
        "reviews",
        "reviews:9080",
        "reviews.default",
        "reviews.default:9080",
        "reviews.default.svc",
        "reviews.default.svc.cluster.local",
        "REVIEWS.default.svc.cluster.local.:9080",
    ] {
        assert_eq!(decide(&t, &req(host, "/reviews/0"), None), want, "{host}");
    }
    assert_eq!(decide(&t, &req("reviews:9999", "/"), None), "404 NR (no virtual host)");
    assert_eq!(decide(&t, &req("unknown", "/"), None), "404 NR (no virtual host)");
    // From another namespace the short name is not this service.
    let other = RouteTable::compile(&s, &r, &ProxyContext::sidecar("prod", Labels::new()));
    assert_eq!(decide(&other, &req("reviews:9080", "/"), None), "404 NR (no virtual host)");
    assert_eq!(decide(&other, &req("reviews.default:9080", "/"), None), want);
}

#[test]
fn routing_by_end_user_header_first_match_wins() {
    let (s, r) = setup(&["networking/virtual-service-reviews-test-v2.yaml"], "");
    let t = RouteTable::compile(&s, &r, &sidecar());
    let v2 = "default/reviews[0] -> outbound|9080|v2|reviews.default.svc.cluster.local (1 endpoints) 100%";
    let v1 = "default/reviews[1] -> outbound|9080|v1|reviews.default.svc.cluster.local (1 endpoints) 100%";
    assert_eq!(decide(&t, &req("reviews:9080", "/reviews/0").header("end-user", "jason"), None), v2);
    assert_eq!(decide(&t, &req("reviews:9080", "/reviews/0").header("end-user", "Jason"), None), v1);
    assert_eq!(decide(&t, &req("reviews:9080", "/reviews/0"), None), v1);
    // Repeated headers: any single value.
    assert_eq!(decide(&t, &req("reviews:9080", "/").header("end-user", "bob").header("end-user", "jason"), None), v2);
}

#[test]
fn no_match_on_a_host_with_a_virtual_service_is_404_nr() {
    let yaml = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: ratings}\nspec:\n  hosts: [ratings]\n  http:\n  - match: [{headers: {end-user: {exact: jason}}}]\n    route: [{destination: {host: ratings}}]\n";
    let (s, r) = setup(&[], yaml);
    let t = RouteTable::compile(&s, &r, &sidecar());
    assert_eq!(decide(&t, &req("ratings:9080", "/ratings/0"), None), "404 NR");
}

#[test]
fn weighted_subsets_and_missing_ones() {
    let (s, r) = setup(&["networking/virtual-service-reviews-80-20.yaml"], "");
    let t = RouteTable::compile(&s, &r, &sidecar());
    assert_eq!(
        decide(&t, &req("reviews:9080", "/"), None),
        "default/reviews[0] -> outbound|9080|v1|reviews.default.svc.cluster.local (1 endpoints) 80%, outbound|9080|v2|reviews.default.svc.cluster.local (1 endpoints) 20%"
    );
    let yaml = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: ratings}\nspec:\n  hosts: [ratings]\n  http:\n  - route:\n    - {destination: {host: ratings, subset: v9}, weight: 3}\n    - {destination: {host: ratings, subset: v2}, weight: 1}\n    - {destination: {host: ratings, subset: v1}}\n";
    let (s, r) = setup(&[], yaml);
    let t = RouteTable::compile(&s, &r, &sidecar());
    // v9: no such subset (NC); v2: defined, no pods (UH at request time); omitted weight: dropped.
    assert_eq!(
        decide(&t, &req("ratings:9080", "/"), None),
        "default/ratings[0] -> outbound|9080|v9|ratings.default.svc.cluster.local NC 75%, outbound|9080|v2|ratings.default.svc.cluster.local (0 endpoints) 25%"
    );
}

#[test]
fn config_time_selectors_remove_blocks_and_routes() {
    let yaml = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match:
    - sourceLabels: {app: ratings}
    route: [{destination: {host: reviews, subset: v3}}]
  - match:
    - sourceLabels: {app: productpage}
      headers: {end-user: {exact: jason}}
    - port: 8080
    route: [{destination: {host: reviews, subset: v2}}]
  - match:
    - gateways: [bookinfo-gateway]
    route: [{destination: {host: reviews, subset: v3}}]
  - route: [{destination: {host: reviews, subset: v1}}]
"#;
    let (s, r) = setup(&[], yaml);
    let t = RouteTable::compile(&s, &r, &sidecar());
    let routes = &t.virtual_host("reviews:9080", None).unwrap().routes;
    // Route 0 (sourceLabels of ratings) and route 2 (gateway only) vanish; route 1 keeps
    // its first block only (the port-8080 block is for another listener).
    assert_eq!(routes.iter().map(|r| r.index.unwrap()).collect::<Vec<_>>(), [1, 3]);
    assert_eq!(routes[0].matches.len(), 1);
    assert_eq!(
        decide(&t, &req("reviews:9080", "/").header("end-user", "jason"), None),
        "default/reviews[1] -> outbound|9080|v2|reviews.default.svc.cluster.local (1 endpoints) 100%"
    );
    // From ratings' sidecar, route 0 applies and is a catch-all: nothing after it is used.
    let ratings = ProxyContext::sidecar("default", [("app".to_string(), "ratings".to_string())].into());
    let t = RouteTable::compile(&s, &r, &ratings);
    assert_eq!(t.virtual_host("reviews:9080", None).unwrap().routes.len(), 1);
    assert!(t.warnings.iter().any(|w| w.contains("spec.http[0] matches every request")), "{:?}", t.warnings);
}

#[test]
fn the_ingress_gateway() {
    let (s, r) = setup(&[], "");
    let t = RouteTable::compile(&s, &r, &ProxyContext::gateway("default", "bookinfo-gateway"));
    let pp = "default/bookinfo[0] -> outbound|9080||productpage.default.svc.cluster.local (1 endpoints) 100%";
    for path in ["/productpage", "/static/style.css", "/login", "/logout", "/api/v1/products/0/reviews"] {
        assert_eq!(decide(&t, &req("localhost:8080", path), Some(8080)), pp, "{path}");
    }
    assert_eq!(decide(&t, &req("anything.example.com", "/productpage?u=normal"), Some(8080)), pp);
    assert_eq!(decide(&t, &req("localhost:8080", "/productpage/x"), Some(8080)), "404 NR");
    assert_eq!(decide(&t, &req("localhost:8080", "/"), Some(8080)), "404 NR");
    // Only the gateway sees that VirtualService: a sidecar does not.
    let side = RouteTable::compile(&s, &r, &sidecar());
    assert_eq!(decide(&side, &req("localhost:8080", "/productpage"), None), "404 NR (no virtual host)");
}

#[test]
fn fault_timeout_and_retry_policies_reach_the_route() {
    let (s, r) = setup(
        &["networking/virtual-service-ratings-test-delay.yaml", "tasks/request-timeouts-reviews-v2-timeout.yaml"],
        "",
    );
    let t = RouteTable::compile(&s, &r, &sidecar());
    let jason = req("ratings:9080", "/ratings/0").header("end-user", "jason");
    let RouteOutcome::Matched(_, route, _) = t.route(&jason.info(), None) else { panic!() };
    let delay = route.fault.as_ref().unwrap().delay.unwrap();
    assert_eq!((delay.fixed.as_secs(), delay.percent.get()), (7, 100.0));
    let RouteOutcome::Matched(_, route, _) = t.route(&req("reviews:9080", "/").info(), None) else { panic!() };
    assert_eq!(route.timeout, Some(std::time::Duration::from_millis(500)));
}

#[test]
fn destination_rule_policy_precedence() {
    let yaml = r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {simple: RANDOM}
    connectionPool: {http: {http2MaxRequests: 10}}
    outlierDetection: {consecutive5xxErrors: 2, interval: 1s}
    portLevelSettings:
    - port: {number: 9080}
      loadBalancer: {simple: ROUND_ROBIN}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      connectionPool: {http: {http2MaxRequests: 3}}
  - name: v2
    labels: {version: v2}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 50}
    - {destination: {host: reviews, subset: v2}, weight: 50}
"#;
    let loaded = load_str("dr.yaml", yaml, &LoadOptions::default());
    let mut base = load_paths(&[config_dir().join("mesh/bookinfo.yaml")], &LoadOptions::default());
    base.resources.extend(loaded.resources);
    let s = base.into_snapshot();
    let r = Registry::build(&s, &Locator::new());
    let t = RouteTable::compile(&s, &r, &sidecar());
    let RouteOutcome::Matched(_, route, _) = t.route(&req("reviews:9080", "/").info(), None) else { panic!() };
    let Action::Forward(targets) = &route.action else { panic!() };
    let clusters: Vec<&cluster::Cluster> = targets
        .targets
        .iter()
        .map(|t| match &t.target {
            Target::Cluster(c) => &**c,
            Target::Missing { .. } => panic!(),
        })
        .collect();
    // Port-level settings replace all four blocks: RR, and pool/outlier back to defaults.
    assert_eq!(clusters[1].lb, cluster::LbPolicy::RoundRobin);
    assert_eq!(clusters[1].pool.max_requests, None);
    assert_eq!(clusters[1].outlier, None);
    // The v1 subset overrides only connectionPool.
    assert_eq!(clusters[0].lb, cluster::LbPolicy::RoundRobin);
    assert_eq!(clusters[0].pool.max_requests, Some(3));
}

#[test]
fn the_legacy_mirror_and_the_mirrors_list_both_compile() {
    // (`mirror` and `mirrors` cannot share a route; validation rejects that.)
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews]\n  http:\n  - match: [{headers: {legacy: {exact: \"1\"}}}]\n    route: [{destination: {host: reviews, subset: v1}}]\n    mirror: {host: reviews, subset: v2}\n    mirrorPercent: 30\n  - route: [{destination: {host: reviews, subset: v1}}]\n    mirrors:\n    - destination: {host: reviews, subset: v3}\n      percentage: {value: 12.5}\n    - destination: {host: ratings}\n";
    let (s, r) = setup(&[], vs);
    let t = RouteTable::compile(&s, &r, &sidecar());
    let mirrors = |request: Req| -> Vec<(String, f64)> {
        let RouteOutcome::Matched(_, route, _) = t.route(&request.info(), None) else { panic!() };
        route
            .mirrors
            .iter()
            .map(|m| match &m.target {
                Target::Cluster(c) => (c.name.to_string(), m.percent),
                Target::Missing { name, .. } => (format!("{name} NC"), m.percent),
            })
            .collect()
    };
    assert_eq!(
        mirrors(req("reviews:9080", "/").header("legacy", "1")),
        [("outbound|9080|v2|reviews.default.svc.cluster.local".to_string(), 30.0)]
    );
    assert_eq!(
        mirrors(req("reviews:9080", "/")),
        [
            ("outbound|9080|v3|reviews.default.svc.cluster.local".to_string(), 12.5),
            ("outbound|9080||ratings.default.svc.cluster.local".to_string(), 100.0),
        ]
    );
}

/// Istio's TCP traffic shifting task: a `tcp` route splits by weight; services without one
/// go whole; any name of the service finds its route.
#[test]
fn tcp_routes_split_by_weight_and_default_to_the_whole_service() {
    let yaml = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings-subsets}
spec:
  host: ratings
  subsets: [{name: v1, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings-tcp}
spec:
  hosts: [ratings]
  tcp:
  - match: [{port: 9999}]
    route: [{destination: {host: details}}]
  - route:
    - {destination: {host: ratings, subset: v1}, weight: 80}
    - {destination: {host: reviews}, weight: 20}
"#;
    let (snapshot, registry) = setup(&[], yaml);
    let table = RouteTable::compile(&snapshot, &registry, &sidecar());
    let names =
        |t: &WeightedTargets| t.targets.iter().map(|t| (t.target.parts().0.to_string(), t.weight)).collect::<Vec<_>>();
    let split = table.tcp_route("ratings", 9080).expect("a route for ratings:9080");
    assert_eq!(
        names(split),
        [("ratings.default.svc.cluster.local".to_string(), 80), ("reviews.default.svc.cluster.local".to_string(), 20)]
    );
    assert_eq!(split.targets[0].target.parts().1, Some("v1"));
    let same = table.tcp_route("ratings.default.svc.cluster.local", 9080).unwrap();
    assert!(Arc::ptr_eq(split, same));
    let whole = table.tcp_route("details", 9080).unwrap();
    assert_eq!(names(whole), [("details.default.svc.cluster.local".to_string(), 100)]);
    assert!(table.tcp_route("ratings", 1234).is_none(), "ratings has no port 1234");
    assert!(table.tcp_route("nothing", 9080).is_none());
}
