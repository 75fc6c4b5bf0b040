//! Benchmarks of the mesh layers and of the proxy hop against its peers. The fixtures the
//! benches share live here; `benches/*.rs` are the criterion entry points.

use mesh_core::{
    Snapshot,
    load::{LoadOptions, load_paths, load_str},
    registry::{Locator, Registry},
};

/// Bookinfo's base mesh plus the request-routing step (jason sees reviews v2).
pub fn bookinfo() -> (Snapshot, Registry) {
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/bookinfo/config");
    let loaded = load_paths(
        &[config.join("mesh"), config.join("tutorial/networking/virtual-service-reviews-test-v2.yaml")],
        &LoadOptions::default(),
    );
    assert!(!loaded.has_errors(), "{}", loaded.report());
    let snapshot = loaded.into_snapshot();
    let registry = Registry::build(&snapshot, &Locator::new());
    (snapshot, registry)
}

/// `hosts` Services, each with a VirtualService of `routes` routes (header + prefix matches,
/// then a catch-all).
pub fn synthetic_yaml(hosts: usize, routes: usize) -> String {
    let mut out = String::new();
    for h in 0..hosts {
        out.push_str(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{h}}}\nspec: {{ports: [{{port: 8080, name: http}}], selector: {{app: svc-{h}}}}}\n---\n"
        ));
        out.push_str(&format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: svc-{h}}}\nspec:\n  hosts: [svc-{h}]\n  http:\n"
        ));
        for r in 0..routes.saturating_sub(1) {
            out.push_str(&format!(
                "  - match: [{{headers: {{x-tenant: {{exact: t{r}}}}}, uri: {{prefix: /api/v{r}}}}}]\n    route: [{{destination: {{host: svc-{h}}}}}]\n"
            ));
        }
        out.push_str(&format!("  - route: [{{destination: {{host: svc-{h}}}}}]\n---\n"));
    }
    out
}

/// Load the synthetic config.
pub fn synthetic(hosts: usize, routes: usize) -> (Snapshot, Registry) {
    let loaded = load_str("synthetic.yaml", &synthetic_yaml(hosts, routes), &LoadOptions::default());
    assert!(!loaded.has_errors(), "{}", loaded.report());
    let snapshot = loaded.into_snapshot();
    let registry = Registry::build(&snapshot, &Locator::new());
    (snapshot, registry)
}

/// The proxy benchmark's service (`benches/proxy/run.py`): `bench:9080` with a subset `v1`
/// and three routes (a header match, a prefix match with a timeout, a catch-all), beside
/// Bookinfo's mesh, its one endpoint `bench-v1` at `endpoint` without a sidecar (plaintext).
pub fn hop_config(endpoint: std::net::SocketAddr) -> (Snapshot, Registry) {
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/bookinfo/config/mesh");
    let mesh = load_paths(&[config], &LoadOptions::default());
    let loaded = mesh_core::load::combine([&mesh, &load_str("bench.yaml", HOP_YAML, &LoadOptions::default())]);
    assert!(!loaded.has_errors(), "{}", loaded.report());
    let snapshot = loaded.into_snapshot();
    let registry = Registry::build(&snapshot, &Locator::new().with("default", "bench-v1", endpoint));
    (snapshot, registry)
}

const HOP_YAML: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: bench}
spec: {ports: [{port: 9080, name: http}], selector: {app: bench}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: bench-v1}
spec:
  selector: {matchLabels: {app: bench, version: v1}}
  template: {metadata: {labels: {app: bench, version: v1}}, spec: {serviceAccountName: bench, containers: [{name: b}]}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: bench}
spec:
  host: bench
  subsets: [{name: v1, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bench}
spec:
  hosts: [bench]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: bench, subset: v1}}]
  - match: [{uri: {prefix: /api/v2}}]
    route: [{destination: {host: bench, subset: v1}}]
    timeout: 5s
  - route: [{destination: {host: bench, subset: v1}}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: bench-plaintext}
spec:
  selector: {matchLabels: {app: bench}}
  mtls: {mode: DISABLE}
"#;
