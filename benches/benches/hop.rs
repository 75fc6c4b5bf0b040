//! One request through the whole outbound hop in memory, no sockets: the sidecar's own
//! composition (`mesh_proxy::outbound::stack` over `ClientBuilder::over`: edge guard,
//! telemetry as the source with trace headers, rescue, router, fault, timeout, Istio's
//! default retry policy, balancer) over an upstream that answers at once with nginx's 1 KiB
//! body, read to its end. What the proxy benchmark's wrk run pays per request on top of
//! hyper and the sockets; the guard for the gains of issue 15.

use std::{convert::Infallible, hint::black_box, sync::Arc};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response, header};
use http_body_util::BodyExt;
use mesh_benches::hop_config;
use mesh_core::BoxBody;
use mesh_proxy::{client::ClientBuilder, guard::GuardLayer, outbound};
use mesh_route::{
    layer::{BalanceLayer, RetryBody, TableHandle},
    policy::{ProxyContext, RouteTable},
};
use mesh_telemetry::{
    layer::{Reporter, TelemetryLayer, WorkloadInfo},
    metrics::MeshMetrics,
};
use tokio::time::Instant;
use tower::{ServiceExt, service_fn};

const BODY: Bytes = Bytes::from_static(&[b'x'; 1024]);

fn hop(c: &mut Criterion) {
    let endpoint = "127.0.0.1:9".parse().unwrap();
    let (snapshot, registry) = hop_config(endpoint);
    let me =
        ProxyContext::sidecar("default", mesh_core::test_util::labels(&[("app", "productpage"), ("version", "v1")]));
    let table = TableHandle::new(RouteTable::compile(&snapshot, &registry, &me));
    // nginx's answer to the benchmark's GET.
    let upstream = service_fn(|_req: Request<RetryBody<BoxBody>>| {
        let mut rsp = Response::new(mesh_core::body::full(BODY));
        rsp.headers_mut().insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        rsp.headers_mut().insert(header::CONTENT_LENGTH, "1024".parse().unwrap());
        std::future::ready(Ok::<_, Infallible>(rsp))
    });
    let plaintext = Arc::new(arc_swap::ArcSwap::from_pointee([endpoint].into_iter().collect()));
    let balance = BalanceLayer::new().with_auto_mtls(true).with_plaintext_endpoints(plaintext);
    let client = ClientBuilder::new(table).balance(balance).over(upstream);
    let metrics = Arc::new(MeshMetrics::new());
    let workload = WorkloadInfo::new(
        "productpage-v1",
        "default",
        &mesh_core::test_util::labels(&[("app", "productpage"), ("version", "v1")]),
        Some("spiffe://cluster.local/ns/default/sa/bookinfo-productpage".into()),
    );
    let telemetry = TelemetryLayer::new(metrics.clone(), Reporter::Source, workload).with_seed(1);
    let svc: outbound::Outbound<BoxBody> = outbound::stack(GuardLayer::new(0), telemetry, client);
    // What wrk sends.
    let req =
        || Request::get("/api/v1/products").header(header::HOST, "bench:9080").body(mesh_core::body::empty()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let one = |svc: &outbound::Outbound<BoxBody>| {
        let svc = svc.clone();
        async move {
            let rsp = svc.oneshot(req()).await.unwrap();
            assert_eq!(rsp.status(), 200);
            black_box(rsp.into_body().collect().await.unwrap());
        }
    };
    rt.block_on(one(&svc));

    let mut g = c.benchmark_group("hop");
    g.bench_function("outbound_whole_stack_in_memory", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    one(&svc).await;
                }
                start.elapsed()
            })
        })
    });
    g.finish();
    let text = metrics.encode();
    assert!(text.contains("destination_workload=\"bench-v1\""), "{text}");
}

criterion_group!(benches, hop);
criterion_main!(benches);
