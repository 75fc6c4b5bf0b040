//! Benchmarks of the mesh layers and of the proxy hop against its peers. The fixtures the
//! benches share live here; `benches/*.rs` are the criterion entry points.

use mesh_config::{
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

/// The proxy benchmark's service (`benches/proxy/bench.yaml`, which `benches/proxy/run.py`
/// gives its sidecars) beside Bookinfo's mesh, its one endpoint `bench-v1` at `endpoint`
/// without a sidecar (plaintext, `benches/proxy/plaintext.yaml`).
pub fn hop_config(endpoint: std::net::SocketAddr) -> (Snapshot, Registry) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let paths =
        [dir.join("../examples/bookinfo/config/mesh"), dir.join("proxy/bench.yaml"), dir.join("proxy/plaintext.yaml")];
    let loaded = load_paths(&paths, &LoadOptions::default());
    assert!(!loaded.has_errors(), "{}", loaded.report());
    let snapshot = loaded.into_snapshot();
    let registry = Registry::build(&snapshot, &Locator::new().with("default", "bench-v1", endpoint));
    (snapshot, registry)
}
