//! mesh-sidecar on Kubernetes: `--kube` reads the config and the registry (Services,
//! EndpointSlices, Pods) from the API server (here the API-server double, reached through
//! a kubeconfig), and a VirtualService modified there re-routes live traffic.

mod support;

use std::time::Duration;

use mesh_k8s_testing::{ApiServer, Served};
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

/// The API-server double with the reviews Service, its DestinationRule and a route to
/// `subset`; a mesh folder with the kubeconfig that points at it.
async fn cluster(subset: &str) -> (ApiServer, Mesh, std::path::PathBuf) {
    configured(ApiServer::start(Served::cluster_with_istio()).await.unwrap(), subset)
}

fn configured(api: ApiServer, subset: &str) -> (ApiServer, Mesh, std::path::PathBuf) {
    let mesh = Mesh::new(&[]);
    let kubeconfig = mesh.dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig()).unwrap();
    api.apply(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "reviews"},
        "spec": {"ports": [{"name": "http", "port": 9080}], "selector": {"app": "reviews"}}}));
    api.apply(json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule", "metadata": {"name": "reviews"},
        "spec": {"host": "reviews", "subsets": [{"name": "v1", "labels": {"version": "v1"}}, {"name": "v2", "labels": {"version": "v2"}}]}}));
    api.apply(reviews_vs(subset));
    (api, mesh, kubeconfig)
}

/// A reviews server sidecar configured from the cluster.
fn reviews(version: &'static str, app: std::net::SocketAddr, kubeconfig: &std::path::Path) -> Spec<'static> {
    reviews_spec(version, app).kube(kubeconfig)
}

fn reviews_spec(version: &'static str, app: std::net::SocketAddr) -> Spec<'static> {
    Spec::server(if version == "v1" { "app=reviews,version=v1" } else { "app=reviews,version=v2" }, app)
        .arg("--workload")
        .arg(if version == "v1" { "reviews-v1" } else { "reviews-v2" })
        .arg("--service-account")
        .arg("bookinfo-reviews")
}

/// What the cluster's controllers write once the reviews pods run: the Pods and the
/// EndpointSlice, the endpoints at the sidecars' inbound ports.
fn pods_running(api: &ApiServer, sidecars: &[(&str, &Sidecar)]) {
    let mut endpoints = Vec::new();
    for (version, s) in sidecars {
        api.apply(pod(version, s.inbound()));
        endpoints.push(json!({"addresses": ["127.0.0.1"], "conditions": {"ready": true},
            "targetRef": {"kind": "Pod", "namespace": "default", "name": format!("reviews-{version}-5fd6d4f8f8-x{version}")}}));
    }
    api.apply(json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
        "metadata": {"name": "reviews-abcde", "labels": {"kubernetes.io/service-name": "reviews"}},
        "endpoints": endpoints, "ports": [{"name": "http", "port": 9080, "protocol": "TCP"}]}));
}

/// The server sidecar counted at least one request over mTLS with `label`.
async fn assert_mtls_requests(server: &Sidecar, label: (&str, &str)) {
    let stats = server.admin_get("/stats/prometheus").await.body;
    let labels = [("reporter", "destination"), ("connection_security_policy", "mutual_tls"), label];
    assert!(total(&stats, "istio_requests_total", &labels) >= 1.0, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_configured_from_the_api_server_route_and_follow_changes() {
    let (api, mesh, kubeconfig) = cluster("v1").await;
    let (v1, v2) = (App::named("reviews-v1").await, App::named("reviews-v2").await);
    let s1 = Sidecar::start(&mesh, reviews("v1", v1.addr, &kubeconfig));
    let s2 = Sidecar::start(&mesh, reviews("v2", v2.addr, &kubeconfig));
    pods_running(&api, &[("v1", &s1), ("v2", &s2)]);

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
    assert_mtls_requests(&s2, ("destination_workload", "reviews-v2")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_ca_certifies_pods_by_their_service_account_tokens() {
    let (api, mesh, kubeconfig) = cluster("v1").await;
    api.add_token("reviews-pod-token", "default", "bookinfo-reviews");
    api.add_token("productpage-pod-token", "default", "bookinfo-productpage");
    let ca = Sidecar::start(&mesh, Spec::ca().kube(&kubeconfig));
    let ca_url = format!("https://127.0.0.1:{}", ca.listeners["ca"].port());
    let root = mesh.ca().join("root-cert.pem");
    let token = |name: &str, value: &str| {
        let p = mesh.dir.path().join(name);
        std::fs::write(&p, value).unwrap();
        p
    };
    // The pods never see the CA's key: their --ca-dir stays unused.
    let unused = mesh.dir.path().join("unused-ca");
    let remote = |spec: Spec<'static>, token: &std::path::Path| {
        let mut spec = spec
            .arg("--ca-address")
            .arg(&ca_url)
            .arg("--ca-token-file")
            .arg(token.to_str().unwrap())
            .arg("--ca-root-file")
            .arg(root.to_str().unwrap());
        spec.ca_dir = Some(unused.clone());
        spec
    };
    let app = App::named("reviews-v1").await;
    let server = Sidecar::start(
        &mesh,
        remote(reviews("v1", app.addr, &kubeconfig), &token("reviews-token", "reviews-pod-token")),
    );
    pods_running(&api, &[("v1", &server)]);
    let client = Sidecar::start(
        &mesh,
        remote(
            Spec::client("app=productpage,version=v1")
                .kube(&kubeconfig)
                .arg("--service-account")
                .arg("bookinfo-productpage"),
            &token("pp-token", "productpage-pod-token"),
        ),
    );
    let r = get(client.outbound(), "reviews:9080", "/reviews/0").await;
    assert_eq!((r.status, r.body.as_str()), (200, "reviews-v1"), "{:?}", client.log.lock().unwrap());
    assert_mtls_requests(&server, ("source_principal", "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"))
        .await;
    assert!(!unused.exists(), "no local CA was made");
    let issued = ca.log.lock().unwrap().join("\n");
    assert!(issued.contains("spiffe://cluster.local/ns/default/sa/bookinfo-reviews"), "{issued}");
    assert!(issued.contains("spiffe://cluster.local/ns/default/sa/bookinfo-productpage"), "{issued}");

    // A sidecar that should not start: its stderr.
    let refused = |args: &[&str], token: &std::path::Path| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_mesh-sidecar"))
            .env("KUBECONFIG", &kubeconfig)
            .args(["--kube", "--outbound", "127.0.0.1:0", "--ca-address", &ca_url])
            .args(args)
            .arg("--ca-token-file")
            .arg(token)
            .arg("--ca-root-file")
            .arg(&root)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // A token the API server does not vouch for: the sidecar stops at once, saying why.
    let stderr = refused(&["--workload-labels", "app=productpage"], &token("stolen", "not-a-token"));
    assert!(stderr.contains("401") && stderr.contains("token rejected"), "{stderr}");
    // Asking for another pod's identity gets the token's, and the sidecar refuses it.
    let stderr = refused(
        &["--workload-labels", "app=reviews", "--service-account", "bookinfo-reviews"],
        &mesh.dir.path().join("pp-token"),
    );
    assert!(stderr.contains("the CA issued spiffe://cluster.local/ns/default/sa/bookinfo-productpage"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_pod_the_service_account_token_and_ca_reach_the_api_server() {
    let root = std::process::Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if !root {
        eprintln!("skipped: a private mount namespace for the in-cluster files needs root (CI runs as root)");
        return;
    }
    // The API server over HTTPS, as in a cluster; the pod's service-account files.
    let (api, mesh, _) = configured(ApiServer::start_tls(Served::cluster_with_istio()).await.unwrap(), "v1");
    let sa = mesh.dir.path().join("serviceaccount");
    std::fs::create_dir_all(&sa).unwrap();
    std::fs::write(sa.join("token"), "in-cluster-token").unwrap();
    std::fs::write(sa.join("ca.crt"), api.ca_pem().unwrap()).unwrap();
    std::fs::write(sa.join("namespace"), "default").unwrap();

    let app = App::named("reviews-v1").await;
    let server = Sidecar::start(&mesh, reviews_spec("v1", app.addr).in_cluster(&sa, api.addr()));
    pods_running(&api, &[("v1", &server)]);
    let client = Sidecar::start(&mesh, Spec::client("app=productpage,version=v1").in_cluster(&sa, api.addr()));
    let r = get(client.outbound(), "reviews:9080", "/reviews/0").await;
    assert_eq!((r.status, r.body.as_str()), (200, "reviews-v1"), "{:?}", client.log.lock().unwrap());
    let seen = api.requests();
    assert!(seen.iter().any(|r| r.is_watch()), "the sidecars watch over TLS");
    assert!(
        seen.iter().all(|r| r.authorization.as_deref() == Some("Bearer in-cluster-token")),
        "every request carries the pod's token: {:?}",
        seen.iter().map(|r| &r.authorization).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_started_before_its_gateway_resource_waits_for_it() {
    let (api, mesh, kubeconfig) = cluster("v1").await;
    let api = std::sync::Arc::new(api);
    let app = App::named("reviews-v1").await;
    let server = Sidecar::start(&mesh, reviews("v1", app.addr, &kubeconfig));
    pods_running(&api, &[("v1", &server)]);
    // kubectl apply of the Gateway and its VirtualService, a little after the gateway starts.
    let later = api.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        later.apply(
            json!({"apiVersion": "networking.istio.io/v1", "kind": "Gateway", "metadata": {"name": "bookinfo-gateway"},
            "spec": {"selector": {"istio": "ingressgateway"},
                     "servers": [{"port": {"number": 8080, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]}}),
        );
        later.apply(
            json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "bookinfo"},
            "spec": {"hosts": ["*"], "gateways": ["bookinfo-gateway"],
                     "http": [{"route": [{"destination": {"host": "reviews", "port": {"number": 9080}}}]}]}}),
        );
    });
    let gw = Sidecar::start(&mesh, Spec::gateway("default/bookinfo-gateway", &[8080]).kube(&kubeconfig));
    let r = get(gw.gateway[&8080], "bookinfo.example", "/reviews/0").await;
    assert_eq!((r.status, r.body.as_str()), (200, "reviews-v1"), "{:?}", gw.log.lock().unwrap());
    assert!(gw.log.lock().unwrap().iter().any(|l| l.contains("waiting for the Gateway resource")));
}
