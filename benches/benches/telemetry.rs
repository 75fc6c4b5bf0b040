//! Per-request cost of the telemetry layer (all standard labels) versus no layer.

use std::{
    convert::Infallible,
    future::Future,
    hint::black_box,
    pin::pin,
    sync::Arc,
    task::{Context, Poll, Waker},
};

use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use mesh_config::registry::Endpoint;
use mesh_core::{
    BoxBody,
    ext::{ResponseFlags, RouteDecision, UpstreamEndpoint},
};
use mesh_telemetry::{
    layer::{Reporter, TelemetryLayer, WorkloadInfo},
    metrics::MeshMetrics,
};
use tower::{Layer, Service, service_fn};

/// Poll a future that never waits.
fn now<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => unreachable!("the benchmarked service answers at once"),
    }
}

fn telemetry(c: &mut Criterion) {
    // The upstream answers like the routing stack does: route decision and endpoint in the
    // response extensions.
    let endpoint = Endpoint {
        address: "127.0.0.1:9080".parse().unwrap(),
        labels: Arc::new(
            [("app".to_string(), "reviews".to_string()), ("version".to_string(), "v2".to_string())].into(),
        ),
        workload: "reviews-v2".into(),
        namespace: "default".into(),
        identity: Some(mesh_core::test_util::identity("bookinfo-reviews")),
        weight: 1,
    };
    let decision = RouteDecision {
        virtual_service: Some("default/reviews".into()),
        route_index: Some(0),
        destination_service: Some("reviews.default.svc.cluster.local".into()),
        subset: Some("v2".into()),
        port: Some(9080),
        ..RouteDecision::default()
    };
    let upstream = service_fn(move |_req: Request<BoxBody>| {
        let mut rsp = Response::new(http_body_util::Empty::<bytes::Bytes>::new());
        rsp.extensions_mut().insert(decision.clone());
        rsp.extensions_mut().insert(UpstreamEndpoint(endpoint.clone()));
        rsp.extensions_mut().insert(ResponseFlags::NONE);
        std::future::ready(Ok::<_, Infallible>(rsp))
    });
    let metrics = Arc::new(MeshMetrics::new());
    let me = WorkloadInfo::new(
        "productpage-v1",
        "default",
        &[("app".to_string(), "productpage".to_string())].into(),
        Some("spiffe://cluster.local/ns/default/sa/bookinfo-productpage".into()),
    );
    let layer = TelemetryLayer::new(metrics.clone(), Reporter::Source, me).with_seed(1);
    let mut with = layer.clone().layer(upstream.clone());
    let mut untraced = layer.with_tracing(false).layer(upstream.clone());
    let mut without = upstream;
    // What curl sends, as hyper's server hands it over (the header map sized for its headers).
    let req = || {
        Request::builder()
            .uri("/reviews/0")
            .header("host", "reviews:9080")
            .header("user-agent", "curl/8.14.1")
            .header("accept", "*/*")
            .body(mesh_core::body::empty())
            .unwrap()
    };

    let mut g = c.benchmark_group("telemetry_per_request");
    g.bench_function("no_layer", |b| b.iter(|| black_box(now(without.call(req())).unwrap())));
    g.bench_function("source_reporter_all_labels", |b| {
        b.iter(|| {
            // Dropping the response ends its body: the request is recorded.
            black_box(now(with.call(req())).unwrap());
        })
    });
    g.bench_function("source_reporter_all_labels_tracing_off", |b| {
        b.iter(|| black_box(now(untraced.call(req())).unwrap()))
    });
    g.finish();
    assert!(metrics.encode().contains("destination_workload=\"reviews-v2\""));
}

criterion_group!(benches, telemetry);
criterion_main!(benches);
