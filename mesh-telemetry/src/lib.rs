//! Istio's telemetry as a Tower layer: the standard metrics (`istio_requests_total`,
//! `istio_request_duration_milliseconds`, `istio_request_bytes`, `istio_response_bytes`,
//! `istio_tcp_*`) with Istio's names, labels and buckets, access logs, and trace context
//! (W3C and B3) with `x-request-id`.
//!
//! ```
//! use std::{convert::Infallible, sync::Arc};
//! use mesh_telemetry::{layer::{Reporter, TelemetryLayer, WorkloadInfo}, metrics::MeshMetrics};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # tokio_test::block_on(async {
//! let metrics = Arc::new(MeshMetrics::new());
//! let me = WorkloadInfo::new("reviews-v2", "default", &[("app".into(), "reviews".into()), ("version".into(), "v2".into())].into(), None);
//! let svc = ServiceBuilder::new()
//!     .layer(TelemetryLayer::new(metrics.clone(), Reporter::Destination, me))
//!     .service(service_fn(|_req: http::Request<mesh_core::BoxBody>| async { Ok::<_, Infallible>(http::Response::new(mesh_core::body::full("ok"))) }));
//! let rsp = svc.oneshot(http::Request::builder().header("host", "reviews:9080").body(mesh_core::body::empty()).unwrap()).await.unwrap();
//! drop(rsp); // the request is recorded when its response body ends or is dropped
//! assert!(metrics.encode().contains("istio_requests_total{reporter=\"destination\""));
//! # });
//! ```
//!
//! # Istio semantics and divergences
//! - Each proxy records each request once: `reporter="source"` on the caller's side
//!   (`connection_security_policy="unknown"`), `"destination"` on the callee's
//!   (`mutual_tls` or `none`). `response_code` is `0` when no response was sent;
//!   `response_flags` is `-` when there are none.
//! - The caller's workload reaches the callee in an `x-mesh-peer` header (Istio exchanges
//!   the same metadata in `x-envoy-peer-metadata`); the callee always strips it, and uses
//!   it only from an mTLS peer whose identity it fits (same namespace, and the layer's
//!   [`layer::PeerCheck`] if set); otherwise the source labels are `unknown`.
//! - `destination_service` never comes from the Host header: the caller labels a request
//!   without a route `unknown` (Istio #18821), the callee labels with its own service
//!   (`with_local_service`, Istio #32726).
//! - Label sets per request family are capped (`MeshMetrics::with_max_label_sets`, default
//!   10,000); past it requests go to one `overflow` series per reporter and are counted in
//!   `mesh_metric_label_overflow_total`.
//! - `istio_request_bytes`/`istio_response_bytes` measure bodies, not wire bytes.
//! - Access log lines follow Envoy's default format with the trace id appended.

pub mod access_log;
pub mod admin;
pub mod histogram;
pub mod layer;
pub mod metrics;
#[cfg(feature = "otel")]
pub mod otlp;
#[cfg(feature = "config")]
pub mod policy;
pub mod trace;
