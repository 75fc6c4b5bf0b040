//! The config as the proxies load it: mesh-config's loader with every feature's rules
//! (`mesh_proxy::config::rules`). A field a feature compiles (a `fault` block, a route that
//! matches every request) is checked once, by the feature, and reported at file:line:field.
//! Each case is loaded as `case.yaml`; its findings (errors and warnings) must be exactly the
//! ones listed.

use std::path::{Path, PathBuf};

use mesh_config::{
    Severity,
    load::{LoadOptions, collect_files, load_paths, load_str},
    test_util::{FindingCase, check_findings},
};
use mesh_proxy::config::load_options;

const CASES: &[FindingCase] = &[
    FindingCase {
        name: "abort percentage above 100",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - fault:
      abort:
        httpStatus: 500
        percentage: {value: 150}
    route:
    - destination: {host: ratings}
"#,
        want: &[
            r#"case.yaml:10: error: VirtualService default/ratings: spec.http[0].fault.abort.percentage.value: percentage must be within 0..=100, got 150"#,
        ],
    },
    FindingCase {
        name: "fixed delay below 1ms",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - fault:
      delay:
        fixedDelay: 0s
        percentage: {value: 10}
    route:
    - destination: {host: ratings}
"#,
        want: &[
            r#"case.yaml:9: error: VirtualService default/ratings: spec.http[0].fault.delay.fixedDelay: duration must be at least 1ms, got 0s"#,
        ],
    },
    FindingCase {
        name: "fault with neither delay nor abort",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - fault: {}
    route:
    - destination: {host: ratings}
"#,
        want: &[
            r#"case.yaml:7: error: VirtualService default/ratings: spec.http[0].fault: fault needs at least one of delay or abort"#,
        ],
    },
    FindingCase {
        name: "exponential delay",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - fault:
      delay: {exponentialDelay: 1s}
    route:
    - destination: {host: ratings}
"#,
        want: &[
            r#"case.yaml:8: error: VirtualService default/ratings: spec.http[0].fault.delay.exponentialDelay: exponentialDelay is not supported"#,
        ],
    },
    FindingCase {
        name: "abort status out of range",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - fault:
      abort: {httpStatus: 99}
    route:
    - destination: {host: ratings}
"#,
        want: &[
            r#"case.yaml:8: error: VirtualService default/ratings: spec.http[0].fault.abort.httpStatus: httpStatus must be within 200..=599, got 99"#,
        ],
    },
    FindingCase {
        name: "unknown gRPC status",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - fault:
      abort: {grpcStatus: NOPE}
    route:
    - destination: {host: ratings}
"#,
        want: &[
            r#"case.yaml:8: error: VirtualService default/ratings: spec.http[0].fault.abort.grpcStatus: "NOPE" is not a gRPC status name such as UNAVAILABLE"#,
        ],
    },
    FindingCase {
        name: "catch-all route that is not last (warning)",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match:
    - uri: {prefix: /}
    route:
    - destination: {host: reviews}
  - match:
    - headers: {end-user: {exact: jason}}
    route:
    - destination: {host: reviews}
"#,
        want: &[
            r#"case.yaml:7: warning: VirtualService default/reviews: spec.http[0]: this route matches every request but is not the last one; the routes after it are never used"#,
        ],
    },
    FindingCase {
        name: "every problem of one fault block at its field",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - fault:
      delay:
        fixedDelay: 1500us
        percent: 120
      abort:
        httpStatus: 503
        grpcStatus: UNAVAILABLE
        http2Error: CANCEL
    route:
    - destination: {host: ratings}
"#,
        want: &[
            r#"case.yaml:9: error: VirtualService default/ratings: spec.http[0].fault.delay.fixedDelay: only durations to ms precision are supported, got 1500us"#,
            r#"case.yaml:10: error: VirtualService default/ratings: spec.http[0].fault.delay.percent: percentage must be within 0..=100, got 120"#,
            r#"case.yaml:11: error: VirtualService default/ratings: spec.http[0].fault.abort: only one of httpStatus, grpcStatus or http2Error may be set"#,
            r#"case.yaml:14: error: VirtualService default/ratings: spec.http[0].fault.abort.http2Error: http2Error is not supported"#,
        ],
    },
    FindingCase {
        name: "a catch-all block behind a config-time selector is not a catch-all",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match:
    - sourceLabels: {app: productpage}
    route:
    - destination: {host: reviews}
  - route:
    - destination: {host: reviews}
"#,
        want: &[],
    },
];

#[test]
fn feature_rules_report_the_exact_finding() {
    check_findings(CASES, &load_options("default"));
}

#[test]
fn without_the_rules_the_feature_fields_load_and_compile_skips_them() {
    // mesh-config alone does not know mesh-fault's ranges: the resource loads, and the
    // route table leaves the route out with a warning when it compiles.
    let yaml = CASES.iter().find(|c| c.name == "abort status out of range").unwrap().yaml;
    let loaded = load_str("case.yaml", yaml, &LoadOptions::default());
    assert!(!loaded.has_errors(), "{}", loaded.report());
    assert_eq!(loaded.resources.len(), 1);
    let with = load_str("case.yaml", yaml, &load_options("default"));
    assert!(with.has_errors() && with.resources.is_empty());
}

fn shared_bookinfo() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/bookinfo");
    assert!(dir.is_dir(), "the Istio samples are expected at {} (../shared beside the checkout)", dir.display());
    dir
}

#[test]
fn every_sample_loads_without_error() {
    let root = shared_bookinfo();
    let mut loaded_files = 0;
    let mut warnings = Vec::new();
    for sub in ["networking", "platform/kube", "security", "tasks", "gateway-api", "policy"] {
        for file in collect_files(&root.join(sub)).unwrap() {
            // Analyse each file as the tutorial applies it: on top of the DestinationRules.
            let text = std::fs::read_to_string(&file).unwrap();
            let mut paths = vec![file.clone()];
            if !text.contains("kind: DestinationRule") {
                paths.insert(0, root.join("networking/destination-rule-all.yaml"));
            }
            // The Gateway API steps route to the versioned Services, applied first in
            // Istio's Gateway API tutorial.
            if sub == "gateway-api" {
                paths.insert(0, root.join("platform/kube/bookinfo.yaml"));
                paths.insert(0, root.join("platform/kube/bookinfo-versions.yaml"));
            }
            let loaded = load_paths(&paths, &load_options("default"));
            let errors: Vec<_> = loaded.errors().map(ToString::to_string).collect();
            assert!(errors.is_empty(), "{}:\n{}", file.display(), errors.join("\n"));
            for d in loaded.diagnostics.iter().filter(|d| Path::new(&d.file) == file) {
                // Otherwise only notes: kinds the mesh does not use, skipped (Gateway API,
                // EnvoyFilter, Ingress, cert-manager...).
                if d.severity == Severity::Warning {
                    let file = Path::new(&d.file).file_name().unwrap().to_string_lossy().into_owned();
                    warnings.push(format!("{file}:{}: {}: {}", d.line, d.field, d.message));
                }
            }
            loaded_files += 1;
        }
    }
    assert!(loaded_files >= 45, "only {loaded_files} files found");
    // What `istioctl analyze` also says about Istio's own samples.
    assert_eq!(
        warnings,
        [
            "fault-injection-details-v1.yaml:9: spec.http[0]: this route matches every request but is not the last one; the routes after it are never used"
        ]
    );
}
