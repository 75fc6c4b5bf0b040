//! The Kubernetes source against the API-server double: the snapshot after the list, after
//! each watch event, after a relist; resume, bookmarks, 410 Gone, errors and slow answers;
//! namespace scoping and the label selector; the registry from EndpointSlices and Pods.

use std::{path::Path, sync::Arc, time::Duration};

use http::StatusCode;
use mesh_config::{
    ConfigSource, Snapshot,
    api::Kind,
    registry::{Locator, Registry},
    source::SourceStatus,
};
use mesh_k8s::{KubeOptions, KubeSource};
use mesh_k8s_testing::{ApiServer, Served, objects_from_file};
use serde_json::{Value, json};
use tokio::sync::watch;

fn shared(rel: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/bookinfo").join(rel)
}

/// A cluster running Bookinfo: the sample's Services, the recorded Pods and EndpointSlices,
/// destination-rule-all and virtual-service-all-v1.
async fn bookinfo_cluster(served: Vec<Served>) -> ApiServer {
    bookinfo_cluster_on(ApiServer::start(served).await.expect("the double starts"))
}

fn bookinfo_cluster_on(api: ApiServer) -> ApiServer {
    let services: Vec<Value> = objects_from_file(&shared("platform/kube/bookinfo.yaml"))
        .into_iter()
        .filter(|o| o["kind"] == "Service")
        .collect();
    assert_eq!(api.apply_all(services), 4);
    let recorded = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bookinfo-pods-endpointslices.json");
    assert_eq!(api.apply_all(objects_from_file(&recorded)), 10);
    api.apply_all(objects_from_file(&shared("networking/destination-rule-all.yaml")));
    api.apply_all(objects_from_file(&shared("networking/virtual-service-all-v1.yaml")));
    api
}

fn options() -> KubeOptions {
    KubeOptions { debounce: Duration::from_millis(20), ..KubeOptions::default() }
}

async fn ready(api: &ApiServer, options: KubeOptions) -> KubeSource {
    let source = KubeSource::start(api.client(), options).await.expect("discovery works");
    assert!(source.wait_ready(Duration::from_secs(10)).await, "the source lists everything");
    source
}

/// Wait (at most 5 s) for a snapshot that satisfies `f`.
async fn until(rx: &mut watch::Receiver<Arc<Snapshot>>, what: &str, f: impl Fn(&Snapshot) -> bool) -> Arc<Snapshot> {
    let got = tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|s| f(s))).await.map(|r| r.map(|s| s.clone()));
    match got {
        Ok(Ok(s)) => s,
        _ => panic!(
            "no snapshot where {what}; last: {:?}",
            rx.borrow().iter().map(|(k, _)| k.clone()).collect::<Vec<_>>()
        ),
    }
}

async fn status_until(
    rx: &mut watch::Receiver<SourceStatus>,
    what: &str,
    f: impl Fn(&SourceStatus) -> bool,
) -> SourceStatus {
    let got = tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|s| f(s))).await.map(|r| r.map(|s| s.clone()));
    match got {
        Ok(Ok(s)) => s,
        _ => panic!("no status where {what}; last: {:?}", *rx.borrow()),
    }
}

fn subset_of_route(s: &Snapshot, vs: &str) -> String {
    let r = s.get(Kind::VirtualService, "default", vs).expect("the VirtualService is there");
    let json = r.to_json();
    json["spec"]["http"][0]["route"][0]["destination"]["subset"].as_str().unwrap_or("").to_string()
}

#[tokio::test]
async fn the_snapshot_after_the_list_has_everything_and_the_registry_comes_from_slices() {
    let api = bookinfo_cluster(Served::cluster_with_istio()).await;
    let source = ready(&api, options()).await;
    let snap = source.snapshots().borrow().clone();
    assert_eq!(snap.of_kind(Kind::VirtualService).count(), 4);
    assert_eq!(snap.of_kind(Kind::DestinationRule).count(), 4);
    assert_eq!(snap.of_kind(Kind::Service).count(), 4);
    assert_eq!(snap.of_kind(Kind::Pod).count(), 6);
    assert_eq!(snap.of_kind(Kind::EndpointSlice).count(), 4);
    assert_eq!(subset_of_route(&snap, "reviews"), "v1");
    // Watched in the preferred version, resourceVersion and status not kept.
    let vs = snap.get(Kind::VirtualService, "default", "reviews").unwrap();
    assert_eq!(vs.api_version(), "networking.istio.io/v1");
    assert_eq!(vs.meta().resource_version, None);

    let reg = Registry::build(&snap, &Locator::new());
    let reviews = reg.service("reviews.default.svc.cluster.local").expect("reviews is a service");
    let eps = reviews.endpoints(9080);
    assert_eq!(eps.len(), 3);
    let v2 = eps.iter().find(|e| e.labels.get("version").map(String::as_str) == Some("v2")).unwrap();
    assert_eq!(v2.address, "10.244.0.15:15006".parse().unwrap(), "the sidecar's inbound port on the pod's IP");
    assert_eq!(&*v2.workload, "reviews-v2", "named after the Deployment behind its ReplicaSet");
    assert_eq!(v2.identity.as_ref().map(mesh_core::Identity::service_account), Some("bookinfo-reviews"));
    let w = reg.workload("default", "reviews-v2").expect("the pod is a workload");
    assert_eq!(w.service_account, "bookinfo-reviews");
    assert_eq!(source.status().borrow().generation, 1);
    assert!(source.status().borrow().errors.is_empty());
}

#[tokio::test]
async fn watch_events_change_the_snapshot() {
    let api = bookinfo_cluster(Served::cluster_with_istio()).await;
    let source = ready(&api, options()).await;
    let mut rx = source.snapshots();

    // MODIFIED: the reviews route now goes to v3.
    let mut vs = objects_from_file(&shared("networking/virtual-service-all-v1.yaml"))
        .into_iter()
        .find(|o| o["metadata"]["name"] == "reviews")
        .unwrap();
    vs["spec"]["http"][0]["route"][0]["destination"]["subset"] = "v3".into();
    api.apply(vs);
    until(&mut rx, "reviews routes to v3", |s| subset_of_route(s, "reviews") == "v3").await;

    // ADDED and DELETED.
    api.apply_all(objects_from_file(&shared("networking/virtual-service-ratings-test-abort.yaml")));
    let s = until(&mut rx, "the ratings abort rule is there", |s| {
        s.get(Kind::VirtualService, "default", "ratings")
            .is_some_and(|r| r.to_json()["spec"]["http"].as_array().unwrap().len() == 2)
    })
    .await;
    assert_eq!(s.of_kind(Kind::VirtualService).count(), 4);
    api.delete("networking.istio.io/v1", "VirtualService", "default", "details");
    until(&mut rx, "details' VirtualService is gone", |s| s.get(Kind::VirtualService, "default", "details").is_none())
        .await;

    // An endpoint that turns unready leaves the registry.
    let mut slice = objects_from_file(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bookinfo-pods-endpointslices.json"),
    )
    .into_iter()
    .find(|o| o["metadata"]["name"] == "reviews-c7h2t")
    .unwrap();
    slice["endpoints"][1]["conditions"]["ready"] = false.into();
    api.apply(slice);
    let s = until(&mut rx, "a reviews endpoint is unready", |s| {
        Registry::build(s, &Locator::new()).service("reviews.default.svc.cluster.local").unwrap().endpoints(9080).len()
            == 2
    })
    .await;
    let reg = Registry::build(&s, &Locator::new());
    assert!(
        reg.service("reviews.default.svc.cluster.local")
            .unwrap()
            .endpoints(9080)
            .iter()
            .all(|e| &*e.workload != "reviews-v2")
    );
}

#[tokio::test]
async fn pod_status_updates_publish_nothing() {
    let api = bookinfo_cluster(Served::cluster_with_istio()).await;
    let source = ready(&api, options()).await;
    let mut status = source.status();
    let recorded = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bookinfo-pods-endpointslices.json");
    let mut pod = objects_from_file(&recorded).into_iter().next().unwrap();
    pod["status"]["conditions"][0]["lastProbeTime"] = "2026-11-27T10:00:00Z".into();
    api.apply(pod);
    let s = status_until(&mut status, "the event was loaded", |s| s.loads >= 2).await;
    assert_eq!(s.generation, 1, "same config, nothing published");
}

#[tokio::test]
async fn a_closed_watch_resumes_from_the_last_version_seen_and_bookmarks_move_it() {
    let api = bookinfo_cluster(Served::cluster_with_istio()).await;
    let source = ready(&api, options()).await;
    let mut rx = source.snapshots();
    // Changes elsewhere move the version; a bookmark tells the watchers.
    api.apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "unrelated"}}));
    let bookmark = api.resource_version();
    api.bookmark();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let lists_before = api.requests().iter().filter(|r| !r.is_watch() && r.path.ends_with("/virtualservices")).count();
    api.close_watches();
    // A change while the watch is being re-established is not lost.
    let mut vs = objects_from_file(&shared("networking/virtual-service-all-v1.yaml"))
        .into_iter()
        .find(|o| o["metadata"]["name"] == "reviews")
        .unwrap();
    vs["spec"]["http"][0]["route"][0]["destination"]["subset"] = "v2".into();
    api.apply(vs);
    until(&mut rx, "reviews routes to v2", |s| subset_of_route(s, "reviews") == "v2").await;
    let reqs = api.requests();
    let vs_watches: Vec<_> = reqs.iter().filter(|r| r.is_watch() && r.path.ends_with("/virtualservices")).collect();
    assert!(vs_watches.len() >= 2, "re-watched: {vs_watches:?}");
    let resumed = vs_watches.last().unwrap();
    assert_eq!(resumed.query.get("resourceVersion"), Some(&bookmark.to_string()), "resumed from the bookmark");
    assert_eq!(vs_watches[0].query.get("allowWatchBookmarks").map(String::as_str), Some("true"));
    let lists_after = reqs.iter().filter(|r| !r.is_watch() && r.path.ends_with("/virtualservices")).count();
    assert_eq!(lists_before, lists_after, "no relist on a plain reconnect");
}

#[tokio::test]
async fn gone_410_relists_and_drops_what_disappeared_meanwhile() {
    let api = bookinfo_cluster(Served::cluster_with_istio()).await;
    let source = ready(&api, options()).await;
    let mut rx = source.snapshots();
    let lists = |api: &ApiServer| {
        api.requests().iter().filter(|r| !r.is_watch() && r.path.ends_with("/virtualservices")).count()
    };
    let before = lists(&api);
    // The delete event is lost (history compacted); the 410 forces a relist.
    assert!(api.remove_unseen("networking.istio.io/v1", "VirtualService", "default", "ratings"));
    api.expire_watches();
    until(&mut rx, "ratings' VirtualService is gone after the relist", |s| {
        s.get(Kind::VirtualService, "default", "ratings").is_none()
    })
    .await;
    assert!(lists(&api) > before, "relisted after 410");
    assert_eq!(rx.borrow().of_kind(Kind::VirtualService).count(), 3);
}

#[tokio::test]
async fn errors_and_slow_answers_are_retried_and_readiness_waits_for_every_list() {
    let api = bookinfo_cluster(Served::cluster_with_istio()).await;
    api.fail_next("/pods", StatusCode::INTERNAL_SERVER_ERROR);
    api.delay_next("/destinationrules", Duration::from_millis(1500));
    let source = KubeSource::start(api.client(), options()).await.unwrap();
    assert!(!source.wait_ready(Duration::from_millis(1000)).await, "not ready while a list is outstanding");
    assert!(source.wait_ready(Duration::from_secs(15)).await, "ready after the retry and the slow list");
    let snap = source.snapshots().borrow().clone();
    assert_eq!(snap.of_kind(Kind::Pod).count(), 6);
    assert_eq!(snap.of_kind(Kind::DestinationRule).count(), 4);
    let pod_lists: Vec<_> = api.requests().into_iter().filter(|r| !r.is_watch() && r.path == "/api/v1/pods").collect();
    assert!(pod_lists.len() >= 2, "the failed list was retried");
    let gap = pod_lists[1].at - pod_lists[0].at;
    assert!(gap >= Duration::from_millis(300), "retried after a backoff, not at once: {gap:?}");
}

#[tokio::test]
async fn an_invalid_object_is_reported_and_its_last_good_version_stays() {
    let api = bookinfo_cluster(Served::cluster_with_istio()).await;
    let source = ready(&api, options()).await;
    let (mut rx, mut status) = (source.snapshots(), source.status());
    let mut vs = objects_from_file(&shared("networking/virtual-service-all-v1.yaml"))
        .into_iter()
        .find(|o| o["metadata"]["name"] == "reviews")
        .unwrap();
    vs["spec"]["http"][0]["rout"] = json!([]);
    api.apply(vs);
    let s = status_until(&mut status, "the error is reported", |s| !s.errors.is_empty()).await;
    let e = &s.errors[0];
    assert_eq!(e.file, "k8s://apis/networking.istio.io/v1/namespaces/default/virtualservices/reviews");
    assert!(e.to_string().contains("spec.http[0].rout"), "{e}");
    assert!(e.message.contains("did you mean `route`"), "{e}");
    assert_eq!(subset_of_route(&rx.borrow(), "reviews"), "v1", "the last good version stays");
    // The rest of the cluster's config still flows.
    api.delete("networking.istio.io/v1", "VirtualService", "default", "details");
    until(&mut rx, "details' VirtualService is gone", |s| s.get(Kind::VirtualService, "default", "details").is_none())
        .await;
    assert_eq!(subset_of_route(&rx.borrow(), "reviews"), "v1");
}

#[tokio::test]
async fn namespaces_and_the_label_selector_scope_what_is_read() {
    let api = bookinfo_cluster(Served::cluster_with_istio()).await;
    let mut other = objects_from_file(&shared("networking/virtual-service-reviews-test-v2.yaml")).remove(0);
    other["metadata"]["namespace"] = "other".into();
    api.apply(other);
    let mut labelled = objects_from_file(&shared("networking/virtual-service-ratings-test-abort.yaml")).remove(0);
    labelled["metadata"]["name"] = "ratings-labelled".into();
    labelled["metadata"]["labels"] = json!({"mesh": "on"});
    api.apply(labelled);
    api.apply_all(objects_from_file(&shared("gateway-api/route-reviews-v1.yaml")));
    let mut route = objects_from_file(&shared("gateway-api/route-reviews-v3.yaml")).remove(0);
    route["metadata"]["name"] = "reviews-labelled".into();
    route["metadata"]["labels"] = json!({"mesh": "on"});
    api.apply(route);

    let all = ready(&api, options()).await;
    assert_eq!(all.snapshots().borrow().of_kind(Kind::VirtualService).count(), 6);

    let scoped = ready(&api, KubeOptions { namespaces: vec!["default".into()], ..options() }).await;
    let snap = scoped.snapshots().borrow().clone();
    assert_eq!(snap.of_kind(Kind::VirtualService).count(), 5);
    assert!(snap.get(Kind::VirtualService, "other", "reviews").is_none());
    assert!(api.requests().iter().any(|r| r.path == "/apis/networking.istio.io/v1/namespaces/default/virtualservices"));

    let selected = ready(&api, KubeOptions { config_selector: Some("mesh=on".into()), ..options() }).await;
    let snap = selected.snapshots().borrow().clone();
    assert_eq!(snap.of_kind(Kind::VirtualService).count(), 1, "only the labelled Istio resource");
    let routes: Vec<_> = snap.of_kind(Kind::HttpRoute).map(|r| r.meta().name.clone()).collect();
    assert_eq!(routes, ["reviews-labelled"], "and the labelled Gateway API resource");
    assert_eq!(snap.of_kind(Kind::Service).count(), 4, "the registry's kinds are not filtered");
}

#[tokio::test]
async fn older_served_versions_are_used_and_missing_crds_are_a_warning() {
    // networking.istio.io only in v1beta1 and v1alpha3; no security.istio.io at all.
    let mut served: Vec<Served> = Served::cluster_with_istio()
        .into_iter()
        .filter(|s| s.group != "security.istio.io")
        .map(|mut s| {
            if s.group == "networking.istio.io" {
                s.versions = vec!["v1beta1".into(), "v1alpha3".into()];
            }
            s
        })
        .collect();
    served.sort_by(|a, b| a.group.cmp(&b.group));
    let api = ApiServer::start(served).await.unwrap();
    let mut vs = objects_from_file(&shared("networking/virtual-service-all-v1.yaml")).remove(0);
    vs["apiVersion"] = "networking.istio.io/v1alpha3".into();
    api.apply(vs);
    let source = ready(&api, options()).await;
    let snap = source.snapshots().borrow().clone();
    let vs = snap.of_kind(Kind::VirtualService).next().expect("read in v1beta1");
    assert_eq!(vs.api_version(), "networking.istio.io/v1beta1");
    let warnings = source.status().borrow().warnings.clone();
    assert!(
        warnings
            .iter()
            .any(|w| w.message.contains("does not serve security.istio.io") && w.object == "PeerAuthentication"),
        "{warnings:?}"
    );
    assert!(source.status().borrow().errors.is_empty());
}

#[tokio::test]
async fn token_review_names_the_service_account_and_refuses_strangers() {
    let api = ApiServer::start(Served::cluster_with_istio()).await.unwrap();
    api.add_token("pod-token", "default", "bookinfo-reviews");
    let reviewer = mesh_k8s::TokenReviewer::new(api.client(), vec!["mesh-ca".into()]);
    assert_eq!(reviewer.review("pod-token").await.unwrap(), ("default".into(), "bookinfo-reviews".into()));
    let e = reviewer.review("forged").await.unwrap_err();
    assert_eq!(e, mesh_k8s::ReviewError::Rejected("invalid bearer token".into()));
    api.fail_next("/tokenreviews", StatusCode::INTERNAL_SERVER_ERROR);
    assert!(matches!(reviewer.review("pod-token").await, Err(mesh_k8s::ReviewError::Unavailable(_))));
    let posted = api.requests().into_iter().filter(|r| r.method == "POST").count();
    assert_eq!(posted, 3);
}

/// deploy/kubernetes grants exactly what the source reads (list and watch of every watched
/// kind, nothing else) and defines every Istio kind it reads in every accepted version.
#[test]
fn the_shipped_rbac_and_crds_match_what_the_source_reads() {
    use std::collections::BTreeSet;
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes");
    let plural = |k: Kind| {
        kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(k.group(), "v1", k.as_str())).plural
    };
    let want: BTreeSet<(String, String, String)> = mesh_k8s::watched()
        .flat_map(|k| ["list", "watch"].map(|v| (k.group().to_string(), plural(k), v.to_string())))
        .collect();
    let rbac = objects_from_file(&deploy.join("rbac.yaml"));
    let rules_of = |name: &str| -> BTreeSet<(String, String, String)> {
        let role = rbac.iter().find(|o| o["kind"] == "ClusterRole" && o["metadata"]["name"] == name).expect("the role");
        let mut out = BTreeSet::new();
        for rule in role["rules"].as_array().unwrap() {
            for g in rule["apiGroups"].as_array().unwrap() {
                for r in rule["resources"].as_array().unwrap() {
                    for v in rule["verbs"].as_array().unwrap() {
                        out.insert((
                            g.as_str().unwrap().into(),
                            r.as_str().unwrap().into(),
                            v.as_str().unwrap().into(),
                        ));
                    }
                }
            }
        }
        out
    };
    assert_eq!(rules_of("mesh-config-reader"), want);
    assert_eq!(
        rules_of("mesh-ca"),
        BTreeSet::from([("authentication.k8s.io".into(), "tokenreviews".into(), "create".into())])
    );

    let crds = objects_from_file(&deploy.join("crds.yaml"));
    for k in mesh_k8s::watched().filter(|k| k.group().ends_with(".istio.io")) {
        let name = format!("{}.{}", plural(k), k.group());
        let crd =
            crds.iter().find(|c| c["metadata"]["name"] == name.as_str()).unwrap_or_else(|| panic!("no CRD {name}"));
        assert_eq!(crd["spec"]["names"]["kind"], k.as_str());
        let versions: Vec<&str> =
            crd["spec"]["versions"].as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap()).collect();
        assert_eq!(versions, k.versions(), "{name}");
        let storage: Vec<_> =
            crd["spec"]["versions"].as_array().unwrap().iter().filter(|v| v["storage"] == true).collect();
        assert_eq!(storage.len(), 1, "{name}: one storage version");
    }
}

/// The Gateway API kinds are watched like the Istio ones: listed, then added, changed and
/// deleted as they happen; GatewayClass and Namespace cluster-scoped even when namespaces are
/// scoped.
#[tokio::test]
async fn gateway_api_kinds_are_listed_and_watched() {
    let api = bookinfo_cluster(Served::cluster_with_istio()).await;
    api.apply_all(objects_from_file(&shared("gateway-api/bookinfo-gateway.yaml")));
    api.apply(json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
        "metadata": {"name": "istio"}, "spec": {"controllerName": "istio.io/gateway-controller"}}));
    let source = ready(&api, KubeOptions { namespaces: vec!["default".into()], ..options() }).await;
    let mut rx = source.snapshots();
    let snap = rx.borrow().clone();
    assert!(snap.get(Kind::KubernetesGateway, "default", "bookinfo-gateway").is_some());
    assert!(snap.get(Kind::HttpRoute, "default", "bookinfo").is_some());
    assert_eq!(snap.of_kind(Kind::GatewayClass).count(), 1, "cluster-scoped, watched whatever the namespaces");

    api.apply_all(objects_from_file(&shared("gateway-api/route-reviews-90-10.yaml")));
    api.apply(json!({"apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
        "metadata": {"name": "g", "namespace": "default"},
        "spec": {"from": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": "other"}],
                 "to": [{"group": "", "kind": "Service"}]}}));
    until(&mut rx, "the mesh route and the grant arrive", |s| {
        s.get(Kind::HttpRoute, "default", "reviews").is_some() && s.get(Kind::ReferenceGrant, "default", "g").is_some()
    })
    .await;
    assert!(api.delete("gateway.networking.k8s.io/v1", "HTTPRoute", "default", "reviews"));
    until(&mut rx, "the route is deleted", |s| s.get(Kind::HttpRoute, "default", "reviews").is_none()).await;

    // Namespaces, whose labels allowedRoutes selectors read, are cluster-scoped too: a
    // namespace outside the watched ones is seen, and so is a change of its labels.
    let ns = |labels: serde_json::Value| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team", "labels": labels}});
    api.apply(ns(json!({"shared-gateway-access": "true"})));
    until(&mut rx, "the namespace's labels arrive", |s| {
        s.namespace_labels("team").get("shared-gateway-access").map(String::as_str) == Some("true")
    })
    .await;
    api.apply(ns(json!({})));
    until(&mut rx, "the label is removed", |s| !s.namespace_labels("team").contains_key("shared-gateway-access")).await;
    let labels = rx.borrow().namespace_labels("team");
    assert_eq!(labels.into_iter().collect::<Vec<_>>(), [("kubernetes.io/metadata.name".into(), "team".into())]);
}

#[tokio::test]
async fn a_burst_of_events_publishes_once() {
    let api = bookinfo_cluster(Served::cluster_with_istio()).await;
    let source = ready(&api, KubeOptions { debounce: Duration::from_millis(300), ..options() }).await;
    let mut status = source.status();
    let before = status.borrow().generation;
    let mut rx = source.snapshots();
    for i in 0..20 {
        let mut vs = objects_from_file(&shared("networking/virtual-service-all-v1.yaml")).remove(0);
        vs["metadata"]["name"] = format!("burst-{i}").into();
        vs["spec"]["hosts"] = json!([format!("burst-{i}")]);
        api.apply(vs);
    }
    until(&mut rx, "all 20 are in", |s| s.of_kind(Kind::VirtualService).count() == 24).await;
    let s = status_until(&mut status, "published", |s| s.generation > before).await;
    assert_eq!(s.generation, before + 1, "one snapshot for the burst");
}

#[tokio::test]
async fn the_https_double_is_trusted_through_its_ca() {
    let api = bookinfo_cluster_on(ApiServer::start_tls(Served::cluster_with_istio()).await.unwrap());
    assert!(api.url().starts_with("https://"));
    assert!(api.kubeconfig().contains("certificate-authority-data: "));
    let source = ready(&api, options()).await;
    assert_eq!(source.snapshots().borrow().of_kind(Kind::VirtualService).count(), 4);
}
