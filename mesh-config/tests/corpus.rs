//! The real Istio samples under ../shared/bookinfo as the model holds them, and they
//! round-trip (that every one loads with the features' rules is mesh-proxy's
//! `tests/config_rules.rs`).

use std::path::{Path, PathBuf};

use mesh_config::{
    api::Kind,
    load::{LoadOptions, collect_files, load_paths, load_str},
};

fn shared_bookinfo() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/bookinfo");
    assert!(dir.is_dir(), "the Istio samples are expected at {} (../shared beside the checkout)", dir.display());
    dir
}

#[test]
fn the_manifest_and_tutorial_resources_are_all_there() {
    let root = shared_bookinfo();
    let snap = load_paths(&[root.join("platform/kube/bookinfo.yaml")], &LoadOptions::default()).into_snapshot();
    assert_eq!(snap.of_kind(Kind::Service).count(), 4);
    assert_eq!(snap.of_kind(Kind::ServiceAccount).count(), 4);
    assert_eq!(snap.of_kind(Kind::Deployment).count(), 6);
    let Some(r) = snap.get(Kind::Deployment, "default", "reviews-v2") else { panic!("reviews-v2 missing") };
    let mesh_config::api::Resource::Deployment(d) = &**r else { unreachable!() };
    assert_eq!(d.spec.template.spec.service_account_name.as_deref(), Some("bookinfo-reviews"));
    assert_eq!(d.spec.template.metadata.labels.get("version").map(String::as_str), Some("v2"));
    assert_eq!(d.spec.template.spec.containers[0].ports[0].container_port, 9080);
    assert_eq!(d.spec.template.spec.containers[0].env[0].name, "LOG_DIR");

    let snap = load_paths(&[root.join("networking/virtual-service-ratings-test-delay.yaml")], &LoadOptions::default())
        .into_snapshot();
    let vs = snap.virtual_services_for_host("ratings.default.svc.cluster.local").next().expect("ratings VS");
    let mesh_config::api::Resource::VirtualService(vs) = &**vs else { unreachable!() };
    let fault = vs.spec.http[0].fault.as_ref().unwrap().delay.as_ref().unwrap();
    assert_eq!(fault.fixed_delay.unwrap().get(), std::time::Duration::from_secs(7));
    assert_eq!(fault.percentage.unwrap().value, 100.0);

    let timeout = load_paths(&[root.join("tasks/request-timeouts-reviews-v2-timeout.yaml")], &LoadOptions::default())
        .into_snapshot();
    let r = timeout.get(Kind::VirtualService, "default", "reviews").unwrap();
    let mesh_config::api::Resource::VirtualService(vs) = &**r else { unreachable!() };
    assert_eq!(vs.spec.http[0].timeout.unwrap().get(), std::time::Duration::from_millis(500));
}

#[test]
fn every_sample_round_trips_through_yaml_and_json() {
    let root = shared_bookinfo();
    for file in collect_files(&root).unwrap() {
        if file.ends_with("swagger.yaml") || file.extension().is_some_and(|e| e == "json") {
            continue;
        }
        let first = load_paths(&[&file], &LoadOptions::default());
        for r in &first.resources {
            let json = r.resource.to_json();
            let yaml = serde_saphyr::to_string(&json).unwrap();
            for (label, text) in [("yaml", yaml), ("json", serde_json::to_string_pretty(&json).unwrap())] {
                let again = load_str(label, &text, &LoadOptions::default());
                assert!(!again.has_errors(), "{}: {}\n{text}", file.display(), again.report());
                assert_eq!(again.resources.len(), 1);
                assert_eq!(again.resources[0].resource, r.resource, "{} via {label}", file.display());
            }
        }
    }
}
