//! Loading: directories, JSON, multi-document files, List kinds, namespaces, skipped kinds.

use mesh_config::{
    Severity,
    api::{Kind, Resource},
    load::{LoadOptions, load_paths, load_str},
};

#[test]
fn directories_are_walked_recursively_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("a/b");
    std::fs::create_dir_all(&nested).unwrap();
    std::fs::write(nested.join("dr.yml"), "apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\nmetadata: {name: reviews}\nspec: {host: reviews}\n").unwrap();
    std::fs::write(
        dir.path().join("sa.json"),
        r#"{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "bookinfo-reviews"}}"#,
    )
    .unwrap();
    // Not config: ignored.
    std::fs::write(dir.path().join("notes.txt"), "not yaml: [").unwrap();
    std::fs::write(dir.path().join(".swap.yaml"), "not yaml: [").unwrap();
    let loaded = load_paths(&[dir.path()], &LoadOptions::default());
    assert!(loaded.diagnostics.is_empty(), "{}", loaded.report());
    let kinds: Vec<Kind> = loaded.resources.iter().map(|r| r.resource.kind()).collect();
    assert_eq!(kinds, [Kind::DestinationRule, Kind::ServiceAccount]);
}

#[test]
fn a_missing_path_is_an_error() {
    let loaded = load_paths(&["/nonexistent/mesh.yaml"], &LoadOptions::default());
    assert_eq!(
        loaded.report(),
        "/nonexistent/mesh.yaml:0: error: -: -: cannot read: No such file or directory (os error 2)\n"
    );
}

#[test]
fn json_errors_have_lines_and_fields() {
    let json = "{\n  \"apiVersion\": \"networking.istio.io/v1\",\n  \"kind\": \"VirtualService\",\n  \"metadata\": {\"name\": \"reviews\"},\n  \"spec\": {\n    \"hosts\": [\"reviews\"],\n    \"http\": [{\"route\": [{\"destination\": {\"host\": \"reviews\"}}], \"timeout\": \"soon\"}]\n  }\n}\n";
    let loaded = load_str("vs.json", json, &LoadOptions::default());
    assert_eq!(
        loaded.report(),
        "vs.json:7: error: VirtualService default/reviews: spec.http[0].timeout: invalid duration \"soon\": expected a number and a unit (ns, us, ms, s, m, h), e.g. \"1.5s\" or \"100ms\"\n"
    );
}

#[test]
fn list_kinds_are_unpacked_with_item_paths() {
    let yaml = r#"apiVersion: v1
kind: List
items:
- apiVersion: networking.istio.io/v1
  kind: VirtualService
  metadata: {name: ok, namespace: prod}
  spec:
    hosts: [ratings]
    http:
    - route:
      - destination: {host: ratings}
- apiVersion: networking.istio.io/v1
  kind: VirtualService
  metadata: {name: bad}
  spec:
    hosts: [ratings]
    http:
    - route:
      - destination: {host: ratings}
        weight: -1
      - destination: {host: ratings}
"#;
    let loaded = load_str("list.yaml", yaml, &LoadOptions::default());
    assert_eq!(
        loaded.report(),
        "list.yaml:18: error: VirtualService default/bad: items[1].spec.http[0].route: total destination weight = 0: with several destinations, give at least one a weight\n\
         list.yaml:20: error: VirtualService default/bad: items[1].spec.http[0].route[0].weight: weight must not be negative, got -1\n"
    );
    assert_eq!(loaded.resources.len(), 1);
    assert_eq!(loaded.resources[0].resource.meta().namespace, "prod");
}

#[test]
fn default_namespace_and_skipped_kinds() {
    let yaml = "apiVersion: v1\nkind: Namespace\nmetadata: {name: prod}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: s}\n---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default}\nspec: {mtls: {mode: STRICT}}\n";
    let options = LoadOptions { default_namespace: "prod".into(), ..LoadOptions::default() };
    let loaded = load_str("m.yaml", yaml, &options);
    assert!(!loaded.has_errors());
    let notes: Vec<_> =
        loaded.diagnostics.iter().filter(|d| d.severity == Severity::Note).map(ToString::to_string).collect();
    assert_eq!(notes, ["m.yaml:6: note: Secret prod/s: kind: Secret (v1) is not used by the mesh; skipped"]);
    // A Namespace is kept: its labels select routes for Gateway API listeners.
    let Resource::Namespace(ns) = &*loaded.resources[0].resource else { panic!() };
    assert_eq!(ns.metadata.name, "prod");
    let Resource::PeerAuthentication(pa) = &*loaded.resources[1].resource else { panic!() };
    assert_eq!(pa.metadata.namespace, "prod");
}

#[test]
fn a_broken_document_does_not_hide_the_others() {
    let yaml = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: a}\nspec: {host: a, subsets: [{name: v1}, {name: v1}]}\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: b}\nspec: {host: b}\n";
    let loaded = load_str("drs.yaml", yaml, &LoadOptions::default());
    assert_eq!(loaded.errors().count(), 1);
    assert_eq!(loaded.resources.len(), 1);
    assert_eq!(loaded.resources[0].resource.meta().name, "b");
}

#[test]
fn snapshot_indexes() {
    let yaml = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: all, namespace: istio-system}\nspec: {host: \"*.local\"}\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews}\nspec: {host: reviews}\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: reviews-viewer}\nspec:\n  selector: {matchLabels: {app: reviews}}\n  rules: [{}]\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: mesh-wide, namespace: istio-system}\nspec: {}\n";
    let snap = load_str("s.yaml", yaml, &LoadOptions::default()).into_snapshot();
    let drs: Vec<_> =
        snap.destination_rules_for_host("reviews.default.svc.cluster.local").map(|r| r.meta().name.clone()).collect();
    assert_eq!(drs, ["reviews", "all"]);
    let reviews_labels = [("app".to_string(), "reviews".to_string())].into();
    let aps: Vec<_> = snap
        .policies_for_workload(Kind::AuthorizationPolicy, "default", &reviews_labels)
        .map(|r| r.meta().name.clone())
        .collect();
    assert_eq!(aps, ["mesh-wide", "reviews-viewer"]);
    let other = [("app".to_string(), "ratings".to_string())].into();
    assert_eq!(snap.policies_for_workload(Kind::AuthorizationPolicy, "default", &other).count(), 1);
}

/// Istio's mesh config loads into the typed model; an error names the line and field, and
/// fields the model does not type are kept, not dropped.
#[test]
fn the_mesh_config_is_typed_and_its_errors_name_the_line_and_field() {
    use mesh_config::{
        api::mesh::{AccessLogEncoding, OutboundTrafficMode},
        load::{Limits, mesh_config},
    };

    let text = r#"trustDomain: example.org
trustDomainAliases: [old.example.org]
outboundTrafficPolicy: {mode: REGISTRY_ONLY}
accessLogFile: /dev/stdout
accessLogEncoding: JSON
defaultConfig:
  tracing: {sampling: 10, zipkin: {address: zipkin:9411}}
  holdApplicationUntilProxyStarts: true
extensionProviders:
- name: ext-authz
  envoyExtAuthzHttp: {service: ext-authz.foo.svc.cluster.local, port: 8000, timeout: 2s}
- name: otel
  opentelemetry: {service: otel.observability, port: 4317}
- name: zipkin
  zipkin: {service: zipkin.istio-system, port: 9411}
enableTracing: true
"#;
    let mesh = mesh_config("mesh.yaml", text, &Limits::default()).unwrap();
    assert_eq!(mesh.trust_domain.as_deref(), Some("example.org"));
    assert_eq!(mesh.trust_domain_aliases, ["old.example.org"]);
    assert_eq!(mesh.outbound_traffic_policy.unwrap().mode, OutboundTrafficMode::RegistryOnly);
    assert_eq!(mesh.access_log_encoding, Some(AccessLogEncoding::Json));
    let tracing = mesh.default_config.as_ref().unwrap().tracing.as_ref().unwrap();
    assert_eq!(tracing.sampling, Some(10.0));
    assert!(tracing.other.contains_key("zipkin"));
    assert!(mesh.default_config.as_ref().unwrap().other.contains_key("holdApplicationUntilProxyStarts"));
    let ext = mesh.provider("ext-authz").unwrap().envoy_ext_authz_http.as_ref().unwrap();
    assert_eq!((ext.port, ext.timeout.map(|t| t.get())), (8000, Some(std::time::Duration::from_secs(2))));
    assert_eq!(mesh.provider("otel").unwrap().opentelemetry.as_ref().unwrap().port, 4317);
    assert!(mesh.provider("zipkin").unwrap().other.contains_key("zipkin"));
    assert!(mesh.other.contains_key("enableTracing"));
    assert_eq!(mesh_config("empty.yaml", "", &Limits::default()).unwrap(), Default::default());

    let typo = "extensionProviders:\n- name: ext-authz\n  envoyExtAuthzHttp:\n    service: a\n    prot: 8000\n";
    let e = mesh_config("mesh.yaml", typo, &Limits::default()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "mesh.yaml:5: error: MeshConfig: extensionProviders[0].envoyExtAuthzHttp.prot: unknown field `prot` (did you mean `port`?)"
    );
    let mode = "outboundTrafficPolicy:\n  mode: SOMETIMES\n";
    let e = mesh_config("mesh.yaml", mode, &Limits::default()).unwrap_err();
    assert_eq!((e.line, e.field.to_string().as_str()), (2, "outboundTrafficPolicy.mode"), "{e}");
}

/// A workload's Sidecar resource as Istio picks it: a selector that matches, else its
/// namespace's default, else the root namespace's.
#[test]
fn the_sidecar_resource_of_a_workload() {
    let yaml = "apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: root, namespace: istio-system}
spec: {outboundTrafficPolicy: {mode: REGISTRY_ONLY}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: ns-default, namespace: shop}
spec: {outboundTrafficPolicy: {mode: ALLOW_ANY}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: cart, namespace: shop}
spec:
  workloadSelector: {labels: {app: cart}}
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
";
    let snapshot =
        mesh_config::load::load_str("s.yaml", yaml, &mesh_config::load::LoadOptions::default()).into_snapshot();
    let mode = |ns: &str, app: &str| {
        let labels = [("app".to_string(), app.to_string())].into();
        snapshot
            .sidecar_for(ns, &labels, "istio-system")
            .and_then(|s| s.outbound_traffic_policy.as_ref())
            .and_then(|p| p.mode)
    };
    use mesh_config::api::OutboundMode::{AllowAny, RegistryOnly};
    assert_eq!(mode("shop", "cart"), Some(RegistryOnly), "the selector that matches");
    assert_eq!(mode("shop", "web"), Some(AllowAny), "the namespace's default");
    assert_eq!(mode("other", "web"), Some(RegistryOnly), "the root namespace's");
}
