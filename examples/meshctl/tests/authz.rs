//! `meshctl authz`: the pinned JSON contract.

use std::{path::Path, process::Command};

fn meshctl(args: &[&str]) -> (i32, String, String) {
    let repo = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    let out = Command::new(env!("CARGO_BIN_EXE_meshctl")).args(args).current_dir(repo).output().unwrap();
    (out.status.code().unwrap(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

fn authz(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["authz"];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = meshctl(&all);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.lines().count(), 1);
    serde_json::from_str(&stdout).unwrap()
}

const SEC: &str = "examples/bookinfo/config/tutorial/security";

#[test]
fn bookinfo_policies() {
    let pp = "cluster.local/ns/default/sa/bookinfo-productpage";
    let v = authz(&[
        "--config",
        SEC,
        "--namespace",
        "default",
        "--workload-labels",
        "app=reviews,version=v2",
        "--principal",
        pp,
        "--path",
        "/reviews/0",
    ]);
    assert_eq!(
        v,
        serde_json::json!({"decision": "ALLOW", "action": "ALLOW", "policy": "default/reviews-viewer", "audit": []})
    );
    // A plaintext caller: ALLOW policies apply and none matched.
    let v = authz(&["--config", SEC, "--workload-labels", "app=reviews"]);
    assert_eq!(v, serde_json::json!({"decision": "DENY", "action": "ALLOW", "policy": null, "audit": []}));
    // No policy applies to a workload of another namespace.
    let v = authz(&["--config", SEC, "--namespace", "prod", "--workload-labels", "app=reviews"]);
    assert_eq!(v, serde_json::json!({"decision": "ALLOW", "action": null, "policy": null, "audit": []}));
    // spiffe:// is accepted on the command line.
    let v = authz(&["--config", SEC, "--workload-labels", "app=details", "--principal", &format!("spiffe://{pp}")]);
    assert_eq!(v["policy"], "default/details-viewer");
}

#[test]
fn deny_custom_and_audit() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.yaml"),
        r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-admin}
spec:
  action: DENY
  rules: [{to: [{operation: {paths: ["/admin*"]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext}
spec:
  action: CUSTOM
  provider: {name: ext-authz}
  rules: [{to: [{operation: {paths: ["/ext/*"]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit-posts}
spec:
  action: AUDIT
  rules: [{to: [{operation: {methods: [POST]}}]}]
"#,
    )
    .unwrap();
    let p = dir.path().to_str().unwrap();
    let v = authz(&["--config", p, "--workload-labels", "app=x", "--path", "/%61dmin/x"]);
    assert_eq!(v, serde_json::json!({"decision": "DENY", "action": "DENY", "policy": "default/no-admin", "audit": []}));
    let v = authz(&["--config", p, "--workload-labels", "app=x", "--path", "/ext/a"]);
    assert_eq!(v, serde_json::json!({"decision": "DENY", "action": "CUSTOM", "policy": "default/ext", "audit": []}));
    let v = authz(&["--config", p, "--workload-labels", "app=x", "--method", "POST", "--path", "/items"]);
    assert_eq!(
        v,
        serde_json::json!({"decision": "ALLOW", "action": null, "policy": null, "audit": ["default/audit-posts"]})
    );
}

#[test]
fn bad_arguments_exit_one() {
    let (code, _, stderr) = meshctl(&["authz", "--config", SEC, "--principal", "not-an-identity"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("invalid --principal"), "{stderr}");
    let (code, _, stderr) = meshctl(&["authz", "--config", SEC, "--path", "/a%00b"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("%00"), "{stderr}");
}

/// A case variant of a standard method is what the sidecar refuses before any policy: the
/// answer says so (400), whatever the policies would have decided; `PURGE` is evaluated.
#[test]
fn method_case_variants_are_refused_as_the_sidecar_does() {
    for m in ["delete", "Get", "pOST"] {
        let v = authz(&["--config", SEC, "--workload-labels", "app=reviews", "--method", m, "--path", "/reviews/0"]);
        assert_eq!(v["decision"], "DENY", "{m}: {v}");
        assert_eq!(v["status"], 400, "{m}: {v}");
        assert!(v["reason"].as_str().unwrap().contains("case variant"), "{m}: {v}");
    }
    let v = authz(&["--config", SEC, "--workload-labels", "app=reviews", "--method", "PURGE", "--path", "/reviews/0"]);
    assert!(v.get("status").is_none_or(|s| s.is_null()), "{v}");
}
