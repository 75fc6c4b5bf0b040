//! The outbound side: what the local app calls. Requests arrive in origin form
//! (`GET /ratings/0` with `Host: ratings:9080`) or in absolute form as to an HTTP proxy
//! (`GET http://ratings:9080/ratings/0`, so `HTTP_PROXY` works for any app); telemetry as
//! `reporter="source"`, then the client stack (route, fault, timeout, retry, balance,
//! pooled mTLS connections).

use std::convert::Infallible;

use http::{Request, Response, header::HeaderName};
use hyper::body::Incoming;
use mesh_core::{BoxBody, BoxError, body::boxed};

use crate::guard::GuardLayer;
use mesh_telemetry::layer::TelemetryLayer;
use tower::{ServiceBuilder, util::BoxCloneSyncService};

/// The outbound stack as one service, for requests with body `B` (hyper's `Incoming` in the
/// sidecar).
pub type Outbound<B = Incoming> = BoxCloneSyncService<Request<B>, Response<BoxBody>, Infallible>;

/// Headers meant for the proxy itself, never forwarded (RFC 9110 §7.6.1 and the
/// non-standard `Proxy-Connection` some clients still send).
static PROXY_HEADERS: [HeaderName; 2] =
    [HeaderName::from_static("proxy-connection"), http::header::PROXY_AUTHORIZATION];

fn strip_proxy_headers(mut req: Request<BoxBody>) -> Request<BoxBody> {
    for h in &PROXY_HEADERS {
        req.headers_mut().remove(h);
    }
    req
}

/// The outbound stack: the edge guard, proxy headers stripped, telemetry as the source,
/// then the client stack (unboxed, [`crate::client::ClientStack`], whose edge answers every
/// failure: the type is erased once, here, not once more inside).
pub fn stack<B, S>(guard: GuardLayer, telemetry: TelemetryLayer, client: S) -> Outbound<B>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    S: tower::Service<Request<BoxBody>, Response = Response<BoxBody>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let svc = ServiceBuilder::new()
        .layer(guard)
        .map_request(strip_proxy_headers)
        .map_response(|r: Response<_>| r.map(boxed))
        .layer(telemetry)
        .service(client);
    BoxCloneSyncService::new(svc)
}
