//! Our own Bookinfo config (examples/bookinfo/config) says the same as Istio's samples.

use std::path::{Path, PathBuf};

use mesh_config::load::{LoadOptions, load_paths};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// (ours under examples/bookinfo/config, the original under ../shared/bookinfo)
const PAIRS: &[(&str, &str)] = &[
    ("mesh/bookinfo.yaml", "platform/kube/bookinfo.yaml"),
    ("mesh/bookinfo-gateway.yaml", "networking/bookinfo-gateway.yaml"),
    ("mesh/destination-rules.yaml", "networking/destination-rule-all.yaml"),
    ("gateway-api/bookinfo-gateway.yaml", "gateway-api/bookinfo-gateway.yaml"),
    ("gateway-api/bookinfo-versions.yaml", "platform/kube/bookinfo-versions.yaml"),
    ("tutorial/gateway-api/route-all-v1.yaml", "gateway-api/route-all-v1.yaml"),
    ("tutorial/gateway-api/route-reviews-v1.yaml", "gateway-api/route-reviews-v1.yaml"),
    ("tutorial/gateway-api/route-reviews-90-10.yaml", "gateway-api/route-reviews-90-10.yaml"),
    ("tutorial/gateway-api/route-reviews-50-v3.yaml", "gateway-api/route-reviews-50-v3.yaml"),
    ("tutorial/gateway-api/route-reviews-v3.yaml", "gateway-api/route-reviews-v3.yaml"),
    ("tutorial/networking/destination-rule-all-mtls.yaml", "networking/destination-rule-all-mtls.yaml"),
    ("tutorial/networking/destination-rule-reviews.yaml", "networking/destination-rule-reviews.yaml"),
    ("tutorial/networking/virtual-service-all-v1.yaml", "networking/virtual-service-all-v1.yaml"),
    ("tutorial/networking/virtual-service-reviews-test-v2.yaml", "networking/virtual-service-reviews-test-v2.yaml"),
    (
        "tutorial/networking/virtual-service-ratings-test-delay.yaml",
        "networking/virtual-service-ratings-test-delay.yaml",
    ),
    (
        "tutorial/networking/virtual-service-ratings-test-abort.yaml",
        "networking/virtual-service-ratings-test-abort.yaml",
    ),
    ("tutorial/networking/virtual-service-reviews-50-v3.yaml", "networking/virtual-service-reviews-50-v3.yaml"),
    ("tutorial/networking/virtual-service-reviews-80-20.yaml", "networking/virtual-service-reviews-80-20.yaml"),
    ("tutorial/networking/virtual-service-reviews-90-10.yaml", "networking/virtual-service-reviews-90-10.yaml"),
    ("tutorial/networking/virtual-service-reviews-v3.yaml", "networking/virtual-service-reviews-v3.yaml"),
    ("tutorial/networking/virtual-service-reviews-v2-v3.yaml", "networking/virtual-service-reviews-v2-v3.yaml"),
    (
        "tutorial/networking/virtual-service-reviews-jason-v2-v3.yaml",
        "networking/virtual-service-reviews-jason-v2-v3.yaml",
    ),
    ("tutorial/networking/virtual-service-details-v2.yaml", "networking/virtual-service-details-v2.yaml"),
    ("tutorial/networking/fault-injection-details-v1.yaml", "networking/fault-injection-details-v1.yaml"),
    ("tutorial/security/peer-authentication-strict.yaml", "security/peer-authentication-strict.yaml"),
    ("tutorial/security/authz-allow-nothing.yaml", "security/authz-allow-nothing.yaml"),
    ("tutorial/security/authz-productpage-viewer.yaml", "security/authz-productpage-viewer.yaml"),
    ("tutorial/security/authz-details-viewer.yaml", "security/authz-details-viewer.yaml"),
    ("tutorial/security/authz-reviews-viewer.yaml", "security/authz-reviews-viewer.yaml"),
    ("tutorial/security/authz-ratings-viewer.yaml", "security/authz-ratings-viewer.yaml"),
    ("tutorial/security/authz-bookinfo-gateway-viewer.yaml", "security/authz-bookinfo-gateway-viewer.yaml"),
    ("tutorial/tasks/request-timeouts-reviews-v2.yaml", "tasks/request-timeouts-reviews-v2.yaml"),
    ("tutorial/tasks/request-timeouts-ratings-delay-2s.yaml", "tasks/request-timeouts-ratings-delay-2s.yaml"),
    ("tutorial/tasks/request-timeouts-reviews-v2-timeout.yaml", "tasks/request-timeouts-reviews-v2-timeout.yaml"),
];

#[test]
fn our_samples_equal_istios() {
    for (ours, theirs) in PAIRS {
        let ours_path = repo().join("examples/bookinfo/config").join(ours);
        let theirs_path = repo().join("../shared/bookinfo").join(theirs);
        let a = load_paths(&[&ours_path], &LoadOptions::default());
        let b = load_paths(&[&theirs_path], &LoadOptions::default());
        assert!(!a.has_errors(), "{}", a.report());
        assert!(!b.has_errors(), "{}", b.report());
        assert!(!a.resources.is_empty(), "{ours} is empty");
        let (a, b) = (a.into_snapshot(), b.into_snapshot());
        assert_eq!(a.len(), b.len(), "{ours} vs {theirs}");
        for ((ka, ra), (kb, rb)) in a.iter().zip(b.iter()) {
            assert_eq!(ka, kb, "{ours} vs {theirs}");
            assert_eq!(ra, rb, "{ours} vs {theirs}: {ka}");
        }
    }
}

#[test]
fn every_file_of_ours_is_paired_and_the_base_mesh_is_clean() {
    let root = repo().join("examples/bookinfo/config");
    let files = mesh_config::load::collect_files(&root).unwrap();
    for f in &files {
        let rel = f.strip_prefix(&root).unwrap().to_string_lossy().into_owned();
        assert!(PAIRS.iter().any(|(ours, _)| *ours == rel), "{rel} has no original to compare with");
    }
    let base = load_paths(&[root.join("mesh")], &LoadOptions::default());
    assert!(base.diagnostics.is_empty(), "{}", base.report());
}
