//! Spans exported over OTLP/HTTP, decoded with the official opentelemetry-proto types.

use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use mesh_core::BoxBody;
use mesh_telemetry::{
    layer::{Reporter, TelemetryLayer, WorkloadInfo},
    metrics::MeshMetrics,
    otlp::OtlpExporter,
};
use opentelemetry_proto::tonic::{collector::trace::v1::ExportTraceServiceRequest, trace::v1::span::SpanKind};
use prost::Message;
use tokio::net::TcpListener;
use tower::{Layer, ServiceExt, service_fn};

/// A collector that keeps every decoded span.
async fn collector() -> (String, Arc<Mutex<Vec<opentelemetry_proto::tonic::trace::v1::Span>>>) {
    let spans = Arc::new(Mutex::new(Vec::new()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let s = spans.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let s = s.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let s = s.clone();
                    async move {
                        assert_eq!(req.uri().path(), "/v1/traces");
                        assert_eq!(req.headers()["content-type"], "application/x-protobuf");
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let decoded =
                            ExportTraceServiceRequest::decode(body).expect("a valid ExportTraceServiceRequest");
                        for rs in decoded.resource_spans {
                            let resource = rs.resource.unwrap();
                            assert_eq!(resource.attributes[0].key, "service.name");
                            for ss in rs.scope_spans {
                                s.lock().unwrap().extend(ss.spans);
                            }
                        }
                        Ok::<_, Infallible>(Response::new(http_body_util::Full::new(Bytes::new())))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (format!("http://{addr}/v1/traces"), spans)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parent_and_child_spans_share_the_trace() {
    let (endpoint, spans) = collector().await;
    let exporter = OtlpExporter::start(&endpoint, "bookinfo", Duration::from_millis(50));
    let metrics = Arc::new(MeshMetrics::new());
    let layer = |w: &str, reporter| {
        let info = WorkloadInfo::new(
            w,
            "default",
            &[("app".to_string(), w.split('-').next().unwrap().to_string())].into(),
            None,
        );
        TelemetryLayer::new(metrics.clone(), reporter, info).with_sampling(100.0).with_otlp(exporter.clone())
    };
    let hop2 = layer("ratings-v1", Reporter::Destination).layer(service_fn(|_req: Request<BoxBody>| async {
        Ok::<_, Infallible>(Response::new(mesh_core::body::empty()))
    }));
    let out = layer("reviews-v1", Reporter::Source).layer(hop2);
    let hop1 = layer("reviews-v1", Reporter::Destination).layer(service_fn(move |req: Request<BoxBody>| {
        let out = out.clone();
        async move {
            let mut next =
                Request::builder().uri("http://ratings:9080/ratings/0").body(mesh_core::body::empty()).unwrap();
            for h in ["traceparent", "x-request-id"] {
                if let Some(v) = req.headers().get(h) {
                    next.headers_mut().insert(h, v.clone());
                }
            }
            let _ = out.oneshot(next).await.unwrap().into_body().collect().await;
            Ok::<_, Infallible>(Response::new(mesh_core::body::empty()))
        }
    }));
    let caller = layer("productpage-v1", Reporter::Source).layer(hop1);
    let rsp = caller
        .oneshot(Request::builder().uri("http://reviews:9080/reviews/0").body(mesh_core::body::empty()).unwrap())
        .await
        .unwrap();
    let _ = rsp.into_body().collect().await;

    let mut got = Vec::new();
    for _ in 0..100 {
        got = spans.lock().unwrap().clone();
        if got.len() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(got.len(), 4, "{got:#?}");
    let trace = &got[0].trace_id;
    assert!(got.iter().all(|s| &s.trace_id == trace), "one trace");
    assert_eq!(trace.len(), 16);
    let root = got.iter().find(|s| s.parent_span_id.is_empty()).expect("a root span");
    assert_eq!(root.kind, SpanKind::Client as i32, "the caller's outbound span is the root");
    // Every other span's parent is a span of the same trace: a chain of four.
    let mut chain = vec![root.clone()];
    while let Some(child) = got.iter().find(|s| s.parent_span_id == chain.last().unwrap().span_id) {
        chain.push(child.clone());
    }
    let kinds: Vec<i32> = chain.iter().map(|s| s.kind).collect();
    assert_eq!(
        kinds,
        [SpanKind::Client as i32, SpanKind::Server as i32, SpanKind::Client as i32, SpanKind::Server as i32]
    );
    assert!(chain.iter().all(|s| s.end_time_unix_nano >= s.start_time_unix_nano && s.start_time_unix_nano > 0));
    assert_eq!(chain[3].name, "ratings:9080/ratings/0");
}

mod decode {
    use mesh_telemetry::otlp::decode_request;
    use opentelemetry_proto::tonic::{
        collector::trace::v1::ExportTraceServiceRequest,
        common::v1::{AnyValue, KeyValue, any_value::Value},
        resource::v1::Resource,
        trace::v1::{ResourceSpans, ScopeSpans, Span, Status, status::StatusCode},
    };
    use proptest::prelude::*;
    use prost::Message;

    fn kv(k: &str, v: Value) -> KeyValue {
        KeyValue { key: k.into(), value: Some(AnyValue { value: Some(v) }), ..Default::default() }
    }

    proptest! {
        /// What any OTLP exporter sends (encoded by the official types) decodes to the same
        /// ids, names, kinds, times, attributes and status.
        #[test]
        fn the_official_encoding_decodes(
            trace in 1u128.., span in 1u64.., parent in proptest::option::of(1u64..),
            name in ".{0,40}", kind in 0i32..6, start in 0u64..u64::MAX / 2, len in 0u64..1_000_000_000,
            n in any::<i64>(), s in ".{0,20}", error in any::<bool>(), service in "[a-z.]{0,20}",
        ) {
            let span_msg = Span {
                trace_id: trace.to_be_bytes().to_vec(),
                span_id: span.to_be_bytes().to_vec(),
                parent_span_id: parent.map(|p| p.to_be_bytes().to_vec()).unwrap_or_default(),
                name: name.clone(),
                kind,
                start_time_unix_nano: start,
                end_time_unix_nano: start + len,
                attributes: vec![kv("n", Value::IntValue(n)), kv("s", Value::StringValue(s.clone())), kv("b", Value::BoolValue(true))],
                status: Some(Status { message: String::new(), code: if error { StatusCode::Error } else { StatusCode::Ok } as i32 }),
                ..Default::default()
            };
            let req = ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    resource: Some(Resource { attributes: vec![kv("service.name", Value::StringValue(service.clone()))], ..Default::default() }),
                    scope_spans: vec![ScopeSpans { spans: vec![span_msg], ..Default::default() }],
                    ..Default::default()
                }],
            };
            let got = decode_request(&req.encode_to_vec()).unwrap();
            prop_assert_eq!(got.len(), 1);
            let r = &got[0];
            prop_assert_eq!(&r.service, &service);
            prop_assert_eq!((r.span.trace_id, r.span.span_id, r.span.parent_span_id), (trace, span, parent));
            prop_assert_eq!(&r.span.name, &name);
            prop_assert_eq!(r.span.server, kind == 2 || kind == 5);
            prop_assert_eq!(r.span.end.duration_since(r.span.start).unwrap().as_nanos(), u128::from(len));
            prop_assert_eq!(r.span.error, error);
            let attrs: Vec<(String, String)> = vec![("n".into(), n.to_string()), ("s".into(), s), ("b".into(), "true".into())];
            prop_assert_eq!(&r.span.attributes, &attrs);
        }

        /// Arbitrary bytes: an error or spans, never a panic.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_request(&bytes);
        }
    }
}

/// A caller that goes away before the response (its connection closed, its own timeout):
/// recorded as Envoy records it, `response_code="0"` and `DC`, in the metrics and the span.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_dropped_before_its_response_is_recorded_as_dc() {
    let (endpoint, spans) = collector().await;
    let exporter = OtlpExporter::start(&endpoint, "reviews.default", Duration::from_millis(50));
    let metrics = Arc::new(MeshMetrics::new());
    let info = WorkloadInfo::new("reviews-v1", "default", &[("app".to_string(), "reviews".to_string())].into(), None);
    let layer =
        TelemetryLayer::new(metrics.clone(), Reporter::Destination, info).with_sampling(100.0).with_otlp(exporter);
    let svc = layer.layer(service_fn(|_req: Request<BoxBody>| async {
        std::future::pending::<Result<Response<BoxBody>, Infallible>>().await
    }));
    let req = Request::builder().uri("http://reviews:9080/reviews/0").body(mesh_core::body::empty()).unwrap();
    let call = svc.oneshot(req);
    // The caller gives up.
    assert!(tokio::time::timeout(Duration::from_millis(20), call).await.is_err());
    let text = metrics.encode();
    let line = text
        .lines()
        .find(|l| l.starts_with("istio_requests_total{"))
        .unwrap_or_else(|| panic!("no request counted:\n{text}"));
    assert!(line.contains("response_code=\"0\"") && line.contains("response_flags=\"DC\""), "{line}");
    let mut got = Vec::new();
    for _ in 0..100 {
        got = spans.lock().unwrap().clone();
        if !got.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(got.len(), 1, "{got:#?}");
    let flags = got[0].attributes.iter().find(|kv| kv.key == "response_flags").expect("response_flags");
    assert_eq!(
        format!("{:?}", flags.value),
        format!(
            "{:?}",
            Some(opentelemetry_proto::tonic::common::v1::AnyValue {
                value: Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue("DC".into()))
            })
        )
    );
    assert_eq!(got[0].status.as_ref().map(|s| s.code), Some(2), "an error span");
}
