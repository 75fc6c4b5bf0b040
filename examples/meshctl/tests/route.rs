//! `meshctl route`: the pinned JSON contract.

use std::{path::Path, process::Command};

fn meshctl(args: &[&str]) -> (i32, String, String) {
    let repo = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    let out = Command::new(env!("CARGO_BIN_EXE_meshctl")).args(args).current_dir(repo).output().unwrap();
    (out.status.code().unwrap(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

fn route(extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["route", "--config", "examples/bookinfo/config/mesh"];
    args.extend_from_slice(extra);
    let (code, stdout, stderr) = meshctl(&args);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.lines().count(), 1, "one JSON object: {stdout}");
    serde_json::from_str(&stdout).unwrap()
}

const STEP: &str = "examples/bookinfo/config/tutorial/networking/";

#[test]
fn routing_by_header() {
    let jason = route(&[
        "--config",
        &format!("{STEP}virtual-service-reviews-test-v2.yaml"),
        "--host",
        "reviews:9080",
        "--header",
        "end-user: jason",
    ]);
    assert_eq!(
        jason,
        serde_json::json!({
            "virtual_service": "default/reviews", "http_route": null, "route_index": 0, "route_name": null, "action": "route", "status": null,
            "destinations": [{"host": "reviews.default.svc.cluster.local", "subset": "v2", "port": 9080, "percent": 100.0}],
            "timeout_ms": null,
            "retries": {"attempts": 2, "per_try_timeout_ms": null, "retry_on": ["connect-failure", "refused-stream", "unavailable", "cancelled"]},
            "fault": null
        })
    );
    let other = route(&[
        "--config",
        &format!("{STEP}virtual-service-reviews-test-v2.yaml"),
        "--host",
        "reviews",
        "--port",
        "9080",
    ]);
    assert_eq!(other["route_index"], 1);
    assert_eq!(other["destinations"][0]["subset"], "v1");
}

#[test]
fn weighted_split_percents() {
    let v = route(&[
        "--config",
        &format!("{STEP}virtual-service-reviews-80-20.yaml"),
        "--host",
        "reviews.default.svc.cluster.local:9080",
    ]);
    let d: Vec<(String, f64)> = v["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["subset"].as_str().unwrap().to_string(), d["percent"].as_f64().unwrap()))
        .collect();
    assert_eq!(d, [("v1".to_string(), 80.0), ("v2".to_string(), 20.0)]);
}

#[test]
fn faults_and_timeouts() {
    let delay = route(&[
        "--config",
        &format!("{STEP}virtual-service-ratings-test-delay.yaml"),
        "--host",
        "ratings:9080",
        "--header",
        "end-user: jason",
    ]);
    assert_eq!(delay["fault"], serde_json::json!({"delay": {"ms": 7000, "percent": 100.0}, "abort": null}));
    let abort = route(&[
        "--config",
        &format!("{STEP}virtual-service-ratings-test-abort.yaml"),
        "--host",
        "ratings:9080",
        "--header",
        "end-user: jason",
    ]);
    assert_eq!(
        abort["fault"],
        serde_json::json!({"delay": null, "abort": {"http_status": 500, "grpc_status": null, "percent": 100.0}})
    );
    let plain =
        route(&["--config", &format!("{STEP}virtual-service-ratings-test-abort.yaml"), "--host", "ratings:9080"]);
    assert_eq!((plain["route_index"].as_u64(), &plain["fault"]), (Some(1), &serde_json::Value::Null));
    let timeout = route(&[
        "--config",
        "examples/bookinfo/config/tutorial/tasks/request-timeouts-reviews-v2-timeout.yaml",
        "--host",
        "reviews:9080",
    ]);
    assert_eq!(timeout["timeout_ms"], 500);
}

#[test]
fn gateway_and_no_route() {
    let page = route(&[
        "--gateway",
        "default/bookinfo-gateway",
        "--host",
        "localhost:8080",
        "--path",
        "/productpage?u=normal",
    ]);
    assert_eq!(page["virtual_service"], "default/bookinfo");
    assert_eq!(page["destinations"][0]["host"], "productpage.default.svc.cluster.local");
    let none = route(&["--gateway", "bookinfo-gateway", "--host", "localhost:8080", "--path", "/admin"]);
    assert_eq!(
        none,
        serde_json::json!({"virtual_service": "default/bookinfo", "http_route": null, "route_index": null, "route_name": null, "action": "no_route", "status": 404,
            "destinations": [], "timeout_ms": null, "retries": null, "fault": null})
    );
    let unknown = route(&["--host", "nowhere:80"]);
    assert_eq!((unknown["action"].as_str(), unknown["virtual_service"].is_null()), (Some("no_route"), true));
}

#[test]
fn redirect_direct_response_and_source_selectors() {
    let dir = tempfile::tempdir().unwrap();
    let vs = dir.path().join("vs.yaml");
    std::fs::write(
        &vs,
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: details}
spec:
  hosts: [details]
  http:
  - name: old-api
    match: [{uri: {prefix: /v0}}]
    redirect: {uri: /details, redirectCode: 308}
  - name: maintenance
    match: [{sourceLabels: {app: reviews}}]
    directResponse: {status: 503, body: {string: down}}
  - name: main
    route: [{destination: {host: details}}]
    retries: {attempts: 0}
"#,
    )
    .unwrap();
    let vs = vs.to_str().unwrap();
    let r = route(&["--config", vs, "--host", "details:9080", "--path", "/v0/x"]);
    assert_eq!(
        (r["action"].as_str(), r["status"].as_u64(), r["route_name"].as_str()),
        (Some("redirect"), Some(308), Some("old-api"))
    );
    let d = route(&["--config", vs, "--host", "details:9080", "--source-labels", "app=reviews,version=v2"]);
    assert_eq!((d["action"].as_str(), d["status"].as_u64()), (Some("direct_response"), Some(503)));
    let m = route(&["--config", vs, "--host", "details:9080", "--source-labels", "app=productpage"]);
    assert_eq!((m["route_name"].as_str(), &m["retries"]), (Some("main"), &serde_json::Value::Null));
    // Another namespace does not see the short name.
    let other = route(&["--config", vs, "--host", "details:9080", "--source-namespace", "prod"]);
    assert_eq!(other["action"], "no_route");
}

#[test]
fn invalid_input_exits_one() {
    let (code, stdout, stderr) =
        meshctl(&["route", "--config", "examples/bookinfo/config/mesh", "--host", "x", "--header", "nocolon"]);
    assert_eq!((code, stdout.as_str()), (1, ""));
    assert!(stderr.contains("invalid --header"), "{stderr}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.yaml"), "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: x}\nspec: {hosts: [a], http: [{route: [{destination: {host: a}, weight: -1}, {destination: {host: a}}]}]}\n").unwrap();
    let (code, _, stderr) = meshctl(&["route", "--config", dir.path().to_str().unwrap(), "--host", "a"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("weight must not be negative"), "{stderr}");
    let (code, _, stderr) =
        meshctl(&["route", "--config", "examples/bookinfo/config/mesh", "--host", "a", "--gateway", "nope"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("Gateway default/nope is not in the config"), "{stderr}");
}

/// HTTPRoute decisions: `virtual_service` null, `http_route` the route, `route_index` the
/// rule's index in it; at the Gateway API gateway and in the mesh (a Service parent).
#[test]
fn gateway_api_decisions_name_the_httproute() {
    let (code, stdout, stderr) = meshctl(&[
        "route",
        "--config",
        "examples/bookinfo/config/mesh/bookinfo.yaml",
        "--config",
        "examples/bookinfo/config/gateway-api",
        "--config",
        "examples/bookinfo/config/tutorial/gateway-api/route-reviews-90-10.yaml",
        "--host",
        "reviews:9080",
        "--path",
        "/reviews/0",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let mesh: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        mesh,
        serde_json::json!({
            "virtual_service": null, "http_route": "default/reviews", "route_index": 0, "route_name": null,
            "action": "route", "status": null,
            "destinations": [
                {"host": "reviews-v1.default.svc.cluster.local", "subset": null, "port": 9080, "percent": 90.0},
                {"host": "reviews-v2.default.svc.cluster.local", "subset": null, "port": 9080, "percent": 10.0}
            ],
            "timeout_ms": null,
            "retries": {"attempts": 2, "per_try_timeout_ms": null, "retry_on": ["connect-failure", "refused-stream", "unavailable", "cancelled"]},
            "fault": null
        })
    );
    let gateway = |path: &str| {
        let (code, stdout, stderr) = meshctl(&[
            "route",
            "--config",
            "examples/bookinfo/config/mesh/bookinfo.yaml",
            "--config",
            "examples/bookinfo/config/gateway-api",
            "--gateway",
            "default/bookinfo-gateway",
            "--host",
            "bookinfo.example.com",
            "--path",
            path,
        ]);
        assert_eq!(code, 0, "{stderr}");
        serde_json::from_str::<serde_json::Value>(&stdout).unwrap()
    };
    let page = gateway("/productpage");
    assert_eq!((page["http_route"].as_str(), page["route_index"].as_u64()), (Some("default/bookinfo"), Some(0)));
    assert_eq!(page["destinations"][0]["host"], "productpage.default.svc.cluster.local");
    assert!(page["virtual_service"].is_null());
    let none = gateway("/productpage/x");
    assert_eq!((none["action"].as_str(), none["status"].as_u64()), (Some("no_route"), Some(404)), "Exact /productpage");
}
