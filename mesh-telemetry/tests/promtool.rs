//! The exposition passes `promtool check metrics`.

use std::{io::Write, process::Command, sync::Arc};

use mesh_telemetry::metrics::{MeshMetrics, RequestLabels};

fn sample() -> Arc<MeshMetrics> {
    let m = Arc::new(MeshMetrics::new());
    let labels = RequestLabels {
        reporter: "destination".into(),
        response_code: "200".into(),
        response_flags: "-".into(),
        ..RequestLabels::default()
    };
    m.handles(&labels).record(12.5, 100, 2000);
    m.proxy.config_reloads.inc();
    m
}

#[test]
fn promtool_accepts_the_exposition() {
    let text = sample().encode();
    assert!(text.contains("# TYPE istio_requests_total counter"), "{text}");
    assert!(text.contains("istio_request_duration_milliseconds_bucket{"), "{text}");
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is installed (.ci/run installs Debian's prometheus)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // Exit 0 is clean, 3 is lint findings only (1 would be a parse error). The one finding
    // allowed is the unit of Istio's own metric name, which dashboards depend on.
    let findings: Vec<&str> = report.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(matches!(out.status.code(), Some(0 | 3)), "promtool: {report}\n{text}");
    assert_eq!(
        findings,
        ["istio_request_duration_milliseconds use base unit \"seconds\" instead of \"milliseconds\""],
        "{text}"
    );
}
