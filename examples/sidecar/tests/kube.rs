//! mesh-sidecar on Kubernetes: `--kube` reads the config and the registry (Services,
//! EndpointSlices, Pods) from the API server (here the API-server double, reached through
//! a kubeconfig), and a VirtualService modified there re-routes live traffic.

mod support;

use std::time::Duration;

use mesh_core::k8s::testing::{ApiServer, Served};
use serde_json::{Value, json};
use support::*;

fn pod(version: &str, inbound: std::net::SocketAddr) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": format!("reviews-{version}-5fd6d4f8f8-x{version}"), "namespace": "default",
        "labels": {"app": "reviews", "version": version, "pod-template-hash": "5fd6d4f8f8"},
        "annotations": {"mesh.dev/inbound-port": inbound.port().to_string()},
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "controller": true,
                             "name": format!("reviews-{version}-5fd6d4f8f8"), "uid": "1"}]},
      "spec": {"serviceAccountName": "bookinfo-reviews", "containers": [{"name": "reviews", "ports": [{"containerPort": 9080}]}]},
      "status": {"phase": "Running", "podIP": "127.0.0.1"}})
}

fn reviews_vs(subset: &str) -> Value {
    json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "reviews"},
      "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews", "subset": subset}}]}]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_configured_from_the_api_server_route_and_follow_changes() {
    let api = ApiServer::start(Served::cluster_with_istio()).await.unwrap();
    let mesh = Mesh::new(&[]);
    let kubeconfig = mesh.dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig()).unwrap();
    api.apply(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "reviews"},
        "spec": {"ports": [{"name": "http", "port": 9080}], "selector": {"app": "reviews"}}}));
    api.apply(json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule", "metadata": {"name": "reviews"},
        "spec": {"host": "reviews", "subsets": [{"name": "v1", "labels": {"version": "v1"}}, {"name": "v2", "labels": {"version": "v2"}}]}}));
    api.apply(reviews_vs("v1"));

    let server = |version: &'static str, app| {
        Spec::server(if version == "v1" { "app=reviews,version=v1" } else { "app=reviews,version=v2" }, app)
            .kube(&kubeconfig)
            .arg("--workload")
            .arg(if version == "v1" { "reviews-v1" } else { "reviews-v2" })
            .arg("--service-account")
            .arg("bookinfo-reviews")
    };
    let (v1, v2) = (App::named("reviews-v1").await, App::named("reviews-v2").await);
    let s1 = Sidecar::start(&mesh, server("v1", v1.addr));
    let s2 = Sidecar::start(&mesh, server("v2", v2.addr));
    // What the cluster's controllers would write once the pods run.
    api.apply(pod("v1", s1.inbound()));
    api.apply(pod("v2", s2.inbound()));
    let endpoint = |version: &str| {
        json!({"addresses": ["127.0.0.1"], "conditions": {"ready": true},
               "targetRef": {"kind": "Pod", "namespace": "default", "name": format!("reviews-{version}-5fd6d4f8f8-x{version}")}})
    };
    api.apply(json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
        "metadata": {"name": "reviews-abcde", "labels": {"kubernetes.io/service-name": "reviews"}},
        "endpoints": [endpoint("v1"), endpoint("v2")], "ports": [{"name": "http", "port": 9080, "protocol": "TCP"}]}));

    let client = Sidecar::start(&mesh, Spec::client("app=productpage,version=v1").kube(&kubeconfig));
    let r = get(client.outbound(), "reviews:9080", "/reviews/0").await;
    assert_eq!((r.status, r.body.as_str()), (200, "reviews-v1"), "{:?}", client.log.lock().unwrap());

    // kubectl apply of a new route: live within a second or two, no restart.
    api.apply(reviews_vs("v2"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let r = get(client.outbound(), "reviews:9080", "/reviews/0").await;
        if r.body == "reviews-v2" {
            assert_eq!(r.status, 200);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "still {}", r.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // It went over mTLS, identities as the API server's pods say.
    let stats = s2.admin_get("/stats/prometheus").await.body;
    let n = total(
        &stats,
        "istio_requests_total",
        &[
            ("reporter", "destination"),
            ("connection_security_policy", "mutual_tls"),
            ("destination_workload", "reviews-v2"),
        ],
    );
    assert!(n >= 1.0, "{stats}");
}
