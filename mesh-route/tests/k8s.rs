//! A route decision (the code `meshctl route` runs) follows a VirtualService modified on a
//! cluster: the Kubernetes source against the API-server double, the table recompiled from
//! each snapshot it publishes.
// The loader and route table need the default feature `config`.
#![cfg(feature = "config")]

use std::{path::Path, time::Duration};

use http::HeaderMap;
use mesh_config::{
    ConfigSource, Snapshot,
    registry::{Locator, Registry},
};
use mesh_k8s::{KubeOptions, KubeSource};
use mesh_k8s_testing::{ApiServer, Served, objects_from_file};
use mesh_route::policy::{ProxyContext, RouteTable, explain::Explanation, matching::RequestInfo};

fn shared(rel: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/bookinfo").join(rel)
}

/// Where productpage's sidecar sends `GET reviews:9080/reviews/0` for `user` (None:
/// anonymous): the subset, and the endpoint addresses behind it.
fn decide(snapshot: &Snapshot, user: Option<&str>) -> (String, Vec<String>) {
    let registry = Registry::build(snapshot, &Locator::new());
    let ctx = ProxyContext::sidecar("default", [("app".to_string(), "productpage".to_string())].into());
    let table = RouteTable::compile(snapshot, &registry, &ctx);
    let mut headers = HeaderMap::new();
    if let Some(u) = user {
        headers.insert("end-user", u.parse().unwrap());
    }
    let req = RequestInfo {
        method: "GET",
        scheme: "http",
        authority: "reviews:9080",
        path: "/reviews/0",
        query: None,
        headers: &headers,
    };
    let e = Explanation::of(&table, &req, None);
    assert_eq!(e.destinations.len(), 1, "{e:?}");
    let d = &e.destinations[0];
    let subset = d.subset.clone().unwrap_or_default();
    let version = subset.clone();
    let addrs = registry
        .service("reviews.default.svc.cluster.local")
        .unwrap()
        .endpoints(9080)
        .iter()
        .filter(|ep| ep.labels.get("version") == Some(&version))
        .map(|ep| ep.address.to_string())
        .collect();
    (subset, addrs)
}

#[tokio::test]
async fn a_virtual_service_modified_through_the_watch_changes_the_route() {
    let api = ApiServer::start(Served::cluster_with_istio()).await.unwrap();
    let services =
        objects_from_file(&shared("platform/kube/bookinfo.yaml")).into_iter().filter(|o| o["kind"] == "Service");
    api.apply_all(services);
    api.apply_all(objects_from_file(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../mesh-k8s/tests/fixtures/bookinfo-pods-endpointslices.json"),
    ));
    api.apply_all(objects_from_file(&shared("networking/destination-rule-all.yaml")));
    api.apply_all(objects_from_file(&shared("networking/virtual-service-all-v1.yaml")));

    let source =
        KubeSource::start(api.client(), KubeOptions { debounce: Duration::from_millis(20), ..Default::default() })
            .await
            .unwrap();
    assert!(source.wait_ready(Duration::from_secs(10)).await);
    let mut rx = source.snapshots();
    let first = rx.borrow_and_update().clone();
    assert_eq!(decide(&first, Some("jason")), ("v1".into(), vec!["10.244.0.14:15006".into()]));

    // virtual-service-reviews-test-v2 replaces the reviews VirtualService (MODIFIED).
    api.apply_all(objects_from_file(&shared("networking/virtual-service-reviews-test-v2.yaml")));
    tokio::time::timeout(Duration::from_secs(5), rx.changed()).await.expect("a snapshot within 5 s").unwrap();
    let next = rx.borrow_and_update().clone();
    assert_eq!(decide(&next, Some("jason")), ("v2".into(), vec!["10.244.0.15:15006".into()]));
    assert_eq!(decide(&next, None), ("v1".into(), vec!["10.244.0.14:15006".into()]));
}
