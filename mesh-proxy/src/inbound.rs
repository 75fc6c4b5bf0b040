//! The inbound side: what other sidecars reach. After the listener's mTLS (the peer's
//! identity in the request extensions): telemetry as `reporter="destination"`, local
//! replies for failures, RequestAuthentication (JWT), AuthorizationPolicy, then the app.

use std::{
    net::SocketAddr,
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response, uri::Authority};
use hyper::body::Incoming;
use mesh_authz::layer::{AuthnLayer, AuthzLayer};
use mesh_core::{BoxBody, BoxError, body::boxed};

use mesh_telemetry::layer::TelemetryLayer;
use tower::{Service, ServiceBuilder, util::BoxCloneSyncService};

use crate::{client::HttpClient, compiled::CompiledConfig, edge::RescueLayer, guard::GuardLayer};

/// The inbound stack as one service, over the listener's request body.
pub(crate) type Inbound<B = Incoming> = BoxCloneSyncService<Request<B>, Response<BoxBody>, std::convert::Infallible>;

/// Forwards to the local app over pooled plaintext connections, keeping the caller's
/// `Host` (the app sees the request as the caller addressed it).
#[derive(Clone, Debug)]
pub(crate) struct ToApp {
    client: HttpClient<BoxBody>,
    app: Authority,
}

impl ToApp {
    pub(crate) fn new(app: SocketAddr) -> Self {
        Self::from_source(app, None)
    }

    /// To `app`, connecting from `source`.
    pub(crate) fn from_source(app: SocketAddr, source: Option<std::net::IpAddr>) -> Self {
        let app = Authority::try_from(app.to_string()).expect("a socket address is an authority");
        Self { client: HttpClient::from_source(source), app }
    }
}

impl Service<Request<BoxBody>> for ToApp {
    type Response = Response<BoxBody>;
    type Error = BoxError;
    type Future = <HttpClient<BoxBody> as Service<Request<BoxBody>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.client.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<BoxBody>) -> Self::Future {
        mesh_core::request::to_absolute(&mut req, http::uri::Scheme::HTTP, Some(self.app.clone()));
        self.client.call(req)
    }
}

/// Telemetry, rescue, JWT, authorization, app. `app_port` is the workload port the
/// policies' `ports` and `portLevelMtls` name.
pub(crate) fn stack(
    control: &Arc<CompiledConfig>,
    guard: GuardLayer,
    telemetry: TelemetryLayer,
    app: SocketAddr,
    authz: AuthzLayer,
) -> Inbound {
    stack_with(control, guard, telemetry, authz, ToApp::new(app))
}

/// [`stack`] in front of an in-process app instead of a forwarded one.
pub(crate) fn stack_with<B, S>(
    control: &Arc<CompiledConfig>,
    guard: GuardLayer,
    telemetry: TelemetryLayer,
    authz: AuthzLayer,
    app: S,
) -> Inbound<B>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    S: Service<Request<BoxBody>, Response = Response<BoxBody>, Error = BoxError> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    let svc = ServiceBuilder::new()
        .layer(guard)
        .map_response(|r: Response<_>| r.map(boxed))
        .layer(telemetry)
        .layer(RescueLayer::new())
        .layer(AuthnLayer::new(control.jwt.clone()))
        .layer(authz)
        .service(app);
    BoxCloneSyncService::new(svc)
}
