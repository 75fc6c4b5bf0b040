//! The admin endpoint's metrics page: `GET /stats/prometheus`.

use std::{
    convert::Infallible,
    future::{Ready, ready},
    sync::Arc,
    task::{Context, Poll},
};

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use mesh_core::BoxBody;
use tower_service::Service;

use crate::metrics::MeshMetrics;

/// Serves `/stats/prometheus` (Prometheus text 0.0.4); anything else is 404.
#[derive(Clone, Debug)]
pub struct MetricsService {
    metrics: Arc<MeshMetrics>,
}

impl MetricsService {
    /// Over `metrics`.
    pub fn new(metrics: Arc<MeshMetrics>) -> Self {
        Self { metrics }
    }
}

impl<B> Service<Request<B>> for MetricsService {
    type Response = Response<BoxBody>;
    type Error = Infallible;
    type Future = Ready<Result<Response<BoxBody>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let rsp = if req.method() == Method::GET && req.uri().path() == "/stats/prometheus" {
            let mut r = Response::new(mesh_core::body::full(self.metrics.encode()));
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
            r
        } else {
            let mut r = Response::new(mesh_core::body::empty());
            *r.status_mut() = StatusCode::NOT_FOUND;
            r
        };
        ready(Ok(rsp))
    }
}
