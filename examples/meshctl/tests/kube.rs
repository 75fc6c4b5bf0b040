//! Kubernetes: `meshctl kube-inject` against expected manifests, and every manifest under
//! deploy/kubernetes (and an injected sample) accepted by kubectl (`apply --dry-run=client
//! --validate=false`) talking to the API-server double.

use std::{path::Path, process::Command};

use mesh_config::{
    api::{Kind, Resource},
    load::{LoadOptions, load_paths, load_str},
    store::split_documents,
};
use mesh_k8s_testing::{ApiServer, Served};

fn root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn meshctl(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_meshctl")).args(args).current_dir(root()).output().unwrap();
    (out.status.code().unwrap(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

fn inject(file: &str) -> String {
    let (code, out, err) = meshctl(&["kube-inject", "-f", file]);
    assert_eq!(code, 0, "{err}");
    out
}

#[test]
fn the_shipped_bookinfo_manifest_is_kube_injects_output() {
    let out = inject("deploy/kubernetes/src/bookinfo-app.yaml");
    let shipped = std::fs::read_to_string(root().join("deploy/kubernetes/bookinfo.yaml")).unwrap();
    assert!(
        out == shipped,
        "deploy/kubernetes/bookinfo.yaml is stale: run `meshctl kube-inject -f deploy/kubernetes/src/bookinfo-app.yaml -o deploy/kubernetes/bookinfo.yaml`"
    );
}

#[test]
fn every_deployment_gets_the_sidecar_and_everything_else_is_untouched() {
    let input_path = "examples/bookinfo/config/mesh/bookinfo.yaml";
    let input = std::fs::read_to_string(root().join(input_path)).unwrap();
    let out = inject(input_path);
    let (before, after) = (split_documents(&input), split_documents(&out));
    assert_eq!(before.len(), after.len());
    let mut deployments = 0;
    for (b, a) in before.iter().zip(&after) {
        let loaded = load_str("doc", b, &LoadOptions::default());
        if loaded.resources.first().is_some_and(|r| r.resource.kind() == Kind::Deployment) {
            deployments += 1;
        } else {
            assert_eq!(a.trim_end(), b.trim_end(), "a non-Deployment document changed");
        }
    }
    assert_eq!(deployments, 6);

    let loaded = load_str("injected", &out, &LoadOptions::default());
    assert!(!loaded.has_errors(), "{}", loaded.report());
    let snapshot = loaded.into_snapshot();
    let Some(r) = snapshot.get(Kind::Deployment, "default", "reviews-v2") else { panic!("reviews-v2 missing") };
    let Resource::Deployment(d) = &**r else { unreachable!() };
    let pod = &d.spec.template;
    assert_eq!(pod.metadata.annotations.get("mesh.dev/inbound-port").map(String::as_str), Some("15006"));
    let app = pod.spec.containers.iter().find(|c| c.name == "reviews").unwrap();
    let env: Vec<(&str, &str)> = app.env.iter().map(|e| (e.name.as_str(), e.value.as_deref().unwrap_or(""))).collect();
    assert!(env.contains(&("HTTP_PROXY", "http://127.0.0.1:15001")), "{env:?}");
    assert!(env.contains(&("NO_PROXY", "localhost,127.0.0.1")), "{env:?}");
    // The sidecar's identity and wiring, as the injected text says.
    let doc = after.iter().find(|d| d.contains("name: reviews-v2")).unwrap();
    for arg in [
        "- --kube",
        "- --namespace=$(POD_NAMESPACE)",
        "- --workload=reviews-v2",
        "- --workload-labels=app=reviews,version=v2",
        "- --service-account=bookinfo-reviews",
        "- --outbound=127.0.0.1:15001",
        "- --inbound=0.0.0.0:15006",
        "- --app=127.0.0.1:9080",
        "- --ca-address=https://mesh-ca.mesh-system.svc:15012",
        "- --ca-token-file=/var/run/secrets/mesh/tokens/mesh-ca",
        "- --ca-root-file=/var/run/secrets/mesh/ca/root-cert.pem",
        "audience: mesh-ca",
        "name: mesh-ca-root",
        "image: mesh-sidecar:0.1.0",
    ] {
        assert!(doc.contains(arg), "{arg} missing in\n{doc}");
    }

    // Injecting again changes nothing.
    let dir = tempfile::tempdir().unwrap();
    let once = dir.path().join("once.yaml");
    std::fs::write(&once, &out).unwrap();
    assert_eq!(inject(once.to_str().unwrap()), out);
}

#[test]
fn opted_out_deployments_are_left_alone_and_bad_input_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let opted = dir.path().join("opted.yaml");
    let text = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  selector: {matchLabels: {app: x}}\n  template:\n    metadata:\n      labels: {app: x}\n      annotations: {sidecar.istio.io/inject: \"false\"}\n    spec: {containers: [{name: x, image: x}]}\n";
    std::fs::write(&opted, text).unwrap();
    assert_eq!(inject(opted.to_str().unwrap()), text);

    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x\n").unwrap();
    let (code, _, err) = meshctl(&["kube-inject", "-f", bad.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("bad.yaml:") && err.contains("invalid YAML"), "{err}");
}

fn kubectl_dry_run(kubeconfig: &Path, files: &[std::path::PathBuf]) -> String {
    let mut cmd = Command::new("kubectl");
    cmd.env("KUBECONFIG", kubeconfig).args(["apply", "--dry-run=client", "--validate=false"]);
    for f in files {
        cmd.arg("-f").arg(f);
    }
    let out = cmd.output().expect("kubectl is installed (Debian: apt-get install kubernetes-client)");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "kubectl failed:\n{stdout}\n{stderr}");
    stdout.into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_accepts_every_manifest() {
    let api = ApiServer::start(Served::cluster_with_istio()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig()).unwrap();
    let deploy = root().join("deploy/kubernetes");
    let injected = dir.path().join("injected.yaml");
    std::fs::write(&injected, inject("examples/bookinfo/config/mesh/bookinfo.yaml")).unwrap();
    let files = [
        deploy.join("crds.yaml"),
        deploy.join("rbac.yaml"),
        deploy.join("ca.yaml"),
        deploy.join("gateway.yaml"),
        deploy.join("bookinfo.yaml"),
        injected,
    ];
    let to_run = files.to_vec();
    let out = tokio::task::spawn_blocking(move || kubectl_dry_run(&kubeconfig, &to_run)).await.unwrap();
    // One "created (dry run)" per object in the files.
    let objects: usize = files
        .iter()
        .map(|f| split_documents(&std::fs::read_to_string(f).unwrap()).iter().filter(|d| d.contains("kind:")).count())
        .sum();
    let created = out.lines().filter(|l| l.ends_with("created (dry run)")).count();
    assert_eq!(created, objects, "{out}");
    assert!(
        out.contains(
            "customresourcedefinition.apiextensions.k8s.io/virtualservices.networking.istio.io created (dry run)"
        ),
        "{out}"
    );
    assert!(out.contains("deployment.apps/reviews-v2 created (dry run)"), "{out}");
    assert!(out.contains("clusterrole.rbac.authorization.k8s.io/mesh-config-reader created (dry run)"), "{out}");
    // The Istio resources in deploy/ load in the mesh too.
    let loaded = load_paths(&[deploy.join("gateway.yaml"), deploy.join("bookinfo.yaml")], &LoadOptions::default());
    assert!(!loaded.has_errors(), "{}", loaded.report());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_authz_and_analyze_read_the_cluster_with_kube() {
    let api = ApiServer::start(Served::cluster_with_istio()).await.unwrap();
    let shared = root().join("../shared/bookinfo");
    let objects = |rel: &str| mesh_k8s_testing::objects_from_file(&shared.join(rel));
    api.apply_all(objects("platform/kube/bookinfo.yaml"));
    api.apply_all(objects("networking/destination-rule-all.yaml"));
    api.apply_all(objects("networking/virtual-service-reviews-test-v2.yaml"));
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig()).unwrap();
    let run = move |args: Vec<String>| {
        let out =
            Command::new(env!("CARGO_BIN_EXE_meshctl")).args(args).env("KUBECONFIG", &kubeconfig).output().unwrap();
        (out.status.code().unwrap(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
    };
    let args = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();

    let run2 = run.clone();
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        let mut a = args("route --kube --host reviews:9080 --source-labels app=productpage,version=v1");
        a.extend(["--header".to_string(), "end-user: jason".to_string()]);
        run2(a)
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    let e: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(e["virtual_service"], "default/reviews");
    assert_eq!(e["destinations"][0]["subset"], "v2");

    // An invalid object in the cluster: analyze names it and fails; the rest still loads.
    let mut bad = objects("networking/virtual-service-all-v1.yaml").remove(0);
    bad["metadata"]["name"] = "broken".into();
    bad["spec"]["http"][0]["rout"] = serde_json::json!([]);
    api.apply(bad);
    let run3 = run.clone();
    let (code, out, err) = tokio::task::spawn_blocking(move || run3(args("analyze --kube"))).await.unwrap();
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("k8s://apis/networking.istio.io/v1/namespaces/default/virtualservices/broken"), "{out}");
    assert!(out.contains("did you mean `route`"), "{out}");

    let (code, out, err) = tokio::task::spawn_blocking(move || {
        run(args("authz --kube --workload-labels app=productpage --path /productpage"))
    })
    .await
    .unwrap();
    // authz decides on what the sidecars have in force, naming what it left out.
    assert_eq!(code, 0, "{err}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&out).unwrap()["decision"], "ALLOW");
    assert!(err.contains("left out") && err.contains("virtualservices/broken"), "{err}");
}
