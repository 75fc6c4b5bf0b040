//! `meshctl apply -f`, `delete -f` and `get` against a config directory, as kubectl is used.

use std::{path::Path, process::Command};

fn meshctl(args: &[&str], dir: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_meshctl")).args(args).current_dir(dir).output().unwrap();
    (out.status.code().unwrap(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

fn tutorial(file: &str) -> String {
    format!("{}/../bookinfo/config/tutorial/networking/{file}", env!("CARGO_MANIFEST_DIR"))
}

/// A config directory seeded as `bookinfo up` seeds it.
fn mesh() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join(".mesh/config");
    std::fs::create_dir_all(&config).unwrap();
    for f in ["bookinfo.yaml", "bookinfo-gateway.yaml", "destination-rules.yaml"] {
        let from = format!("{}/../bookinfo/config/mesh/{f}", env!("CARGO_MANIFEST_DIR"));
        std::fs::copy(from, config.join(f)).unwrap();
    }
    dir
}

#[test]
fn apply_creates_then_reports_unchanged_and_configured() {
    let dir = mesh();
    let (code, out, err) = meshctl(&["apply", "-f", &tutorial("virtual-service-all-v1.yaml")], dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("virtualservice.networking.istio.io/reviews created\n"), "{out}");
    let (_, again, _) = meshctl(&["apply", "-f", &tutorial("virtual-service-all-v1.yaml")], dir.path());
    assert!(again.lines().all(|l| l.ends_with(" unchanged")), "{again}");
    // Another file defining reviews replaces the first definition.
    let (code, out, _) = meshctl(&["apply", "-f", &tutorial("virtual-service-reviews-v3.yaml")], dir.path());
    assert_eq!((code, out.as_str()), (0, "virtualservice.networking.istio.io/reviews configured\n"));
    let all_v1 = std::fs::read_to_string(dir.path().join(".mesh/config/virtual-service-all-v1.yaml")).unwrap();
    assert!(!all_v1.contains("name: reviews"), "the old definition is gone:\n{all_v1}");
    let (_, analyze_out, analyze_err) = meshctl(&["analyze", ".mesh/config"], dir.path());
    assert!(!analyze_out.contains("more than once"), "{analyze_out}{analyze_err}");

    let (code, table, _) = meshctl(&["get", "vs"], dir.path());
    assert_eq!(code, 0);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines[0].split_whitespace().collect::<Vec<_>>(), ["NAME", "GATEWAYS", "HOSTS"]);
    assert!(
        lines.iter().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["reviews", "[]", "[\"reviews\"]"]),
        "{table}"
    );
    assert_eq!(lines.len(), 1 + 5, "bookinfo + the four of all-v1: {table}");
}

#[test]
fn invalid_config_is_refused_with_the_finding_and_nothing_written() {
    let dir = mesh();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: bad}\nspec:\n  hosts: [x]\n  http:\n  - route: [{destination: {host: reviews}}]\n    timeout: banana\n",
    )
    .unwrap();
    let (code, out, err) = meshctl(&["apply", "-f", "bad.yaml"], dir.path());
    assert_eq!((code, out.as_str()), (1, ""));
    assert!(
        err.starts_with("bad.yaml:8: error: VirtualService default/bad: spec.http[0].timeout: invalid duration"),
        "{err}"
    );
    assert!(err.ends_with("error: bad.yaml was not applied\n"), "{err}");
    assert!(!dir.path().join(".mesh/config/bad.yaml").exists());
}

#[test]
fn delete_removes_what_a_file_defines() {
    let dir = mesh();
    meshctl(&["apply", "-f", &tutorial("virtual-service-all-v1.yaml")], dir.path());
    let (code, out, _) = meshctl(&["delete", "-f", &tutorial("virtual-service-all-v1.yaml")], dir.path());
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 4);
    assert!(out.contains("virtualservice.networking.istio.io/details deleted"));
    assert!(!dir.path().join(".mesh/config/virtual-service-all-v1.yaml").exists(), "an emptied file goes");
    let (code, _, err) = meshctl(&["delete", "-f", &tutorial("virtual-service-all-v1.yaml")], dir.path());
    assert_eq!(code, 1);
    assert!(err.contains("Error from server (NotFound): virtualservice \"reviews\" not found"), "{err}");
    let (code, _, err) = meshctl(&["get", "vs", "-n", "elsewhere"], dir.path());
    assert_eq!((code, err.as_str()), (0, "No resources found in elsewhere namespace.\n"));
    let (code, _, err) = meshctl(&["get", "widgets"], dir.path());
    assert_eq!(code, 1);
    assert!(err.contains("doesn't have a resource type \"widgets\""));
}

fn gateway_api(file: &str) -> String {
    format!("{}/../bookinfo/config/{file}", env!("CARGO_MANIFEST_DIR"))
}

/// Gateway API resources as kubectl handles them: kubectl's names and short names, `group`
/// in the output, the Gateway API Gateway told apart from Istio's.
#[test]
fn gateway_api_resources_are_applied_listed_and_deleted_as_with_kubectl() {
    let dir = mesh();
    let (code, out, err) = meshctl(&["apply", "-f", &gateway_api("gateway-api/bookinfo-versions.yaml")], dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("service/reviews-v1 created\n"), "{out}");
    let route = gateway_api("tutorial/gateway-api/route-reviews-90-10.yaml");
    let (code, out, err) = meshctl(&["apply", "-f", &route], dir.path());
    assert_eq!((code, out.as_str()), (0, "httproute.gateway.networking.k8s.io/reviews created\n"), "{err}");
    let (code, table, _) = meshctl(&["get", "httproutes"], dir.path());
    assert_eq!(code, 0);
    assert_eq!(table, "NAME      HOSTNAMES\nreviews   []\n");

    // The Istio Gateway `bookinfo-gateway` is in the seed: `gw` and `gateways` are Istio's, as
    // meshctl has always read them; `gtw` and `gateways.gateway.networking.k8s.io` the Gateway API's.
    let (_, out, _) = meshctl(&["get", "gtw"], dir.path());
    assert_eq!(out, "");
    let (code, out, err) = meshctl(&["apply", "-f", &gateway_api("gateway-api/bookinfo-gateway.yaml")], dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("gateway.gateway.networking.k8s.io/bookinfo-gateway created\n"), "{out}");
    assert!(out.contains("httproute.gateway.networking.k8s.io/bookinfo created\n"), "{out}");
    let (_, api, _) = meshctl(&["get", "gateways.gateway.networking.k8s.io"], dir.path());
    assert_eq!(api, "NAME               CLASS\nbookinfo-gateway   istio\n");
    let (_, istio, _) = meshctl(&["get", "gateways.networking.istio.io"], dir.path());
    assert_eq!(istio, "NAME\nbookinfo-gateway\n");
    // Both kinds under one name cannot be served: analyze says so.
    let (_, analyze, _) = meshctl(&["analyze", ".mesh/config"], dir.path());
    assert!(analyze.contains("is both an Istio Gateway (networking.istio.io) and a Gateway API Gateway"), "{analyze}");

    let (code, out, _) = meshctl(&["delete", "-f", &route], dir.path());
    assert_eq!((code, out.as_str()), (0, "httproute.gateway.networking.k8s.io/reviews deleted\n"));
    let (_, _, err) = meshctl(&["get", "grpcroutes"], dir.path());
    assert_eq!(err, "No resources found in default namespace.\n");
}

/// Namespaces (whose labels Gateway API `allowedRoutes` selectors read) are cluster-scoped, as
/// with kubectl: listed from any namespace, never with a NAMESPACE column.
#[test]
fn namespaces_are_cluster_scoped_and_listed_with_their_labels() {
    let dir = mesh();
    let file = dir.path().join("ns.yaml");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: team, labels: {shared-gateway-access: 'true', tier: web}}\n",
    )
    .unwrap();
    let (code, out, err) = meshctl(&["apply", "-f", file.to_str().unwrap()], dir.path());
    assert_eq!((code, out.as_str()), (0, "namespace/team created\n"), "{err}");
    let want = "NAME   LABELS\nteam   shared-gateway-access=true,tier=web\n";
    for args in [&["get", "ns"][..], &["get", "namespaces", "-n", "elsewhere"], &["get", "ns", "-A"]] {
        let (code, table, err) = meshctl(args, dir.path());
        assert_eq!((code, table.as_str()), (0, want), "{args:?}: {err}");
    }
}

/// `meshctl get svc`: kubectl's columns; where a manifest gives no `clusterIP` (one machine),
/// the address the mesh allocated, the same on every run.
#[test]
fn services_are_listed_with_their_cluster_ips() {
    let dir = mesh();
    let (code, table, err) = meshctl(&["get", "svc"], dir.path());
    assert_eq!(code, 0, "{err}");
    let rows: Vec<Vec<&str>> = table.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows[0], ["NAME", "TYPE", "CLUSTER-IP", "PORT(S)"]);
    let reviews = rows.iter().find(|r| r[0] == "reviews").expect("reviews listed");
    assert_eq!((reviews[1], reviews[3]), ("ClusterIP", "9080/TCP"));
    let ip: std::net::Ipv4Addr = reviews[2].parse().unwrap();
    assert_eq!(ip.octets()[..2], [10, 96], "{table}");
    let ips: std::collections::HashSet<&str> = rows[1..].iter().map(|r| r[2]).collect();
    assert_eq!(ips.len(), rows.len() - 1, "every Service its own address: {table}");
    assert_eq!(meshctl(&["get", "svc"], dir.path()).1, table, "allocated the same way every time");
}
