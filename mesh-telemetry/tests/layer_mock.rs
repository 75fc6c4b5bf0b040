//! TelemetryLayer under tower-test mocks (STYLE rule 10): backpressure is the inner
//! service's, the duration is what the clock says (paused time), and a failure with no
//! response is counted as `response_code="0"`.

use std::{sync::Arc, time::Duration};

use http::{Request, Response};
use mesh_core::BoxBody;
use mesh_telemetry::{
    layer::{Reporter, TelemetryLayer, WorkloadInfo},
    metrics::MeshMetrics,
};
use tokio_test::{assert_pending, assert_ready_ok};
use tower::{Service, ServiceExt};
use tower_test::mock;

fn layer(metrics: &Arc<MeshMetrics>) -> TelemetryLayer {
    let labels = [("app".to_string(), "reviews".to_string()), ("version".to_string(), "v1".to_string())].into();
    let me = WorkloadInfo::new("reviews-v1", "default", &labels, Some("spiffe://cluster.local/ns/default/sa/r".into()));
    TelemetryLayer::new(metrics.clone(), Reporter::Destination, me)
}

/// The value of the sample `name` whose label set contains `labels`.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test]
async fn backpressure_is_the_inner_services() {
    let metrics = Arc::new(MeshMetrics::new());
    let (mut svc, mut handle) = mock::spawn_layer::<Request<BoxBody>, Response<BoxBody>, _>(layer(&metrics));
    handle.allow(0);
    assert_pending!(svc.poll_ready());
    handle.allow(1);
    assert_ready_ok!(svc.poll_ready());
}

#[tokio::test(start_paused = true)]
async fn the_duration_is_the_clocks_and_a_failure_is_code_0() {
    let metrics = Arc::new(MeshMetrics::new());
    let (svc, mut handle) = mock::pair::<Request<BoxBody>, Response<BoxBody>>();
    let mut svc = tower::Layer::layer(&layer(&metrics), svc);
    handle.allow(2);
    let req = || Request::get("/reviews/1").body(mesh_core::body::empty()).unwrap();
    let fut = svc.ready().await.unwrap().call(req());
    let (_req, send) = handle.next_request().await.unwrap();
    tokio::time::advance(Duration::from_millis(250)).await;
    send.send_response(Response::new(mesh_core::body::empty()));
    drop(fut.await.unwrap()); // counted when the body ends or is dropped
    let text = metrics.encode();
    let ok = ["reporter=\"destination\"", "response_code=\"200\"", "destination_workload=\"reviews-v1\""];
    assert_eq!(sample(&text, "istio_requests_total", &ok), Some(1.0), "{text}");
    assert_eq!(sample(&text, "istio_request_duration_milliseconds_sum", &ok), Some(250.0), "{text}");

    let fut = svc.ready().await.unwrap().call(req());
    let (_req, send) = handle.next_request().await.unwrap();
    send.send_error(std::io::Error::other("reset"));
    assert!(fut.await.is_err());
    let text = metrics.encode();
    assert_eq!(sample(&text, "istio_requests_total", &["response_code=\"0\""]), Some(1.0), "{text}");
}
