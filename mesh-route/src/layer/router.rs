//! The router: match the request against the current table, answer redirects, direct
//! responses and CORS preflights itself, and otherwise pick a weighted destination, edit
//! the request and pass it down with the route's policies in its extensions.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri, header, uri::PathAndQuery};
use mesh_core::roll::{Roll, ThreadRoll};
use mesh_core::{
    BoxBody, BoxError,
    body::LocalBody,
    error::RouteNotFound,
    ext::{DownstreamTls, RouteDecision},
    reply::LocalReply,
    request::is_grpc,
};
use pin_project_lite::pin_project;
use tower::{ServiceExt, util::BoxCloneSyncService};
use tower_layer::Layer;
use tower_service::Service;

use super::{table::TableHandle, timeout::RouteTimeoutSetting};
use crate::policy::{
    RouteOutcome,
    action::{Action, Cors, HeaderOpsSide, Preflight, RouteRule, Target},
    matching::RequestInfo,
};

/// Where mirrored copies go: a stack that takes a request with a [`Target`] in its
/// extensions (the balancer and client), boxed.
pub type MirrorSink = BoxCloneSyncService<Request<BoxBody>, Response<BoxBody>, BoxError>;

/// Routes requests with the table in a [`TableHandle`].
#[derive(Clone, Debug)]
pub struct RouterLayer {
    table: TableHandle,
    rng: Arc<dyn Roll>,
    listener_port: Option<u16>,
    default_scheme: &'static str,
    /// Take the scheme of requests without one from their connection ([`DownstreamTls`]).
    connection_scheme: bool,
    /// Shared, so that cloning the router per request copies a pointer, not the sink.
    mirror: Option<Arc<MirrorSink>>,
}

impl RouterLayer {
    /// Route with `table` (a sidecar's: the authority's port picks the service port).
    pub fn new(table: TableHandle) -> Self {
        Self {
            table,
            rng: Arc::new(ThreadRoll),
            listener_port: None,
            default_scheme: "http",
            connection_scheme: false,
            mirror: None,
        }
    }

    /// Route as a gateway listener on `port` (the Host's port is then ignored).
    #[must_use]
    pub fn with_listener_port(mut self, port: u16) -> Self {
        self.listener_port = Some(port);
        self
    }

    /// The scheme of requests that do not carry one (`https` behind TLS termination).
    #[must_use]
    pub fn with_default_scheme(mut self, scheme: &'static str) -> Self {
        self.default_scheme = scheme;
        self
    }

    /// The scheme of requests that do not carry one is their connection's: `https` when it
    /// is TLS ([`DownstreamTls::of`], from what the server sets), else the default scheme.
    #[must_use]
    pub fn with_connection_scheme(mut self) -> Self {
        self.connection_scheme = true;
        self
    }

    /// The random source for weighted choice and mirror percentages.
    #[must_use]
    pub fn with_rng(mut self, rng: Arc<dyn Roll>) -> Self {
        self.rng = rng;
        self
    }

    /// Send mirrored copies (requests without a body) to `sink`.
    #[must_use]
    pub fn with_mirror(mut self, sink: MirrorSink) -> Self {
        self.mirror = Some(Arc::new(sink));
        self
    }
}

impl<S> Layer<S> for RouterLayer {
    type Service = Router<S>;
    fn layer(&self, inner: S) -> Router<S> {
        Router { inner, layer: self.clone() }
    }
}

/// See [`RouterLayer`].
#[derive(Clone, Debug)]
pub struct Router<S> {
    inner: S,
    layer: RouterLayer,
}

/// What to do to the response on its way back.
struct ResponseEdits {
    route: Arc<RouteRule>,
    target_headers: Option<HeaderOpsSide>,
    origin: Option<HeaderMap>,
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for Router<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone,
    S::Error: Into<BoxError>,
    ResB: LocalBody,
    ReqB: http_body::Body,
{
    type Response = Response<ResB>;
    type Error = BoxError;
    type Future = RouteFuture<S, Request<ReqB>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Every route goes to the one inner stack: its readiness is the router's, and a
        // request is handed to it directly (no clone of the stack per request). A local
        // reply leaves the reservation for the next request.
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        let table = self.layer.table.load();
        // The scheme of a request without one: the connection's where the layer is told so
        // (a gateway listener, which a config change may turn TLS on or off), else the default.
        let scheme = if self.layer.connection_scheme && DownstreamTls::of(req.extensions()) {
            "https"
        } else {
            self.layer.default_scheme
        };
        let info = RequestInfo::from_request(&req, scheme);
        let (route, block) = match table.route(&info, self.layer.listener_port) {
            RouteOutcome::NoVirtualHost | RouteOutcome::NoRoute(_) => {
                let err = RouteNotFound { authority: info.authority.to_string() };
                return RouteFuture::ready(Err(Box::new(err)));
            }
            RouteOutcome::Matched(_, route, block) => (route, block),
        };
        let matched_prefix = block.and_then(|b| b.uri_prefix.as_deref());
        let mut decision = RouteDecision {
            virtual_service: route.virtual_service.clone(),
            route_index: route.index,
            route_name: route.name.clone(),
            ..RouteDecision::default()
        };

        if let Some(cors) = &route.cors {
            match cors.preflight(info.method, info.headers) {
                Preflight::Answer(headers) => {
                    return RouteFuture::ready(Ok(local(
                        LocalReply::direct(StatusCode::OK, Bytes::new(), headers),
                        is_grpc(&req),
                        decision,
                    )));
                }
                Preflight::Stop => {
                    let reply = LocalReply::direct(StatusCode::OK, Bytes::new(), HeaderMap::new());
                    return RouteFuture::ready(Ok(local(reply, is_grpc(&req), decision)));
                }
                Preflight::Forward | Preflight::NotOne => {}
            }
        }
        let targets = match &route.action {
            Action::Redirect(r) => {
                let reply = match HeaderValue::from_str(&r.location(&info, matched_prefix)) {
                    Ok(location) => LocalReply::redirect(r.status, location),
                    Err(_) => LocalReply::direct(r.status, Bytes::new(), HeaderMap::new()),
                };
                return RouteFuture::ready(Ok(local(reply, is_grpc(&req), decision)));
            }
            Action::DirectResponse(d) => {
                let reply = LocalReply::direct(d.status, d.body.clone(), HeaderMap::new());
                return RouteFuture::ready(Ok(local(reply, is_grpc(&req), decision)));
            }
            Action::Forward(targets) => targets,
        };
        let rng = &*self.layer.rng;
        let Some(picked) = targets.pick(rng.roll() / 100.0) else {
            // A Gateway API rule with no backend weight left, or whose pick fell on an
            // invalid backendRef: the spec's 500, a configured outcome.
            if targets.answers_500() {
                let reply = LocalReply::direct(StatusCode::INTERNAL_SERVER_ERROR, Bytes::new(), HeaderMap::new());
                let rsp = local(reply, is_grpc(&req), decision);
                return RouteFuture::ready(Ok(rsp));
            }
            let err = RouteNotFound { authority: info.authority.to_string() };
            return RouteFuture::ready(Err(Box::new(err)));
        };
        let (host, subset, port) = picked.target.shared_parts();
        decision.destination_service = Some(host);
        decision.subset = subset;
        decision.port = port;

        // Rewrites, after matching (a Gateway API backendRef's own URLRewrite replaces the rule's).
        let rewrite = picked.filters.as_ref().and_then(|f| f.rewrite.as_ref()).or(route.rewrite.as_ref());
        let new_path = rewrite.and_then(|rw| rw.path(info.path, info.query, matched_prefix));
        let new_authority = rewrite
            .and_then(|rw| rw.authority.clone())
            .or_else(|| route.headers.authority.clone())
            .or_else(|| picked.headers.authority.clone());
        let origin = route.cors.as_ref().and_then(|_| req.headers().get(header::ORIGIN).cloned()).map(|o| {
            let mut h = HeaderMap::new();
            h.insert(header::ORIGIN, o);
            h
        });
        if let Some(path) = new_path {
            let original = req.uri().path().to_string();
            set_path(req.uri_mut(), &path);
            if let Ok(v) = HeaderValue::from_str(&original) {
                req.headers_mut().insert("x-envoy-original-path", v);
            }
        }
        if let Some(authority) = new_authority {
            set_authority(&mut req, authority);
        }
        route.headers.request.apply(req.headers_mut());
        picked.headers.request.apply(req.headers_mut());

        if let Some(sink) = &self.layer.mirror {
            let own = picked.filters.as_ref().map(|f| f.mirrors.as_slice()).unwrap_or_default();
            for m in route.mirrors.iter().chain(own) {
                if m.percent >= 100.0 || (m.percent > 0.0 && rng.roll() < m.percent) {
                    mirror(sink, &req, &m.target);
                }
            }
        }

        let ext = req.extensions_mut();
        if let Some(f) = &route.fault {
            ext.insert(f.clone());
        }
        if let Some(t) = route.timeout {
            ext.insert(RouteTimeoutSetting(t));
        }
        if let Some(r) = &route.retry {
            ext.insert(r.clone());
        }
        ext.insert(picked.target.clone());

        let target_headers = (!picked.headers.response.is_empty_side()).then(|| picked.headers.response.clone());
        let post = ResponseEdits { route: route.clone(), target_headers, origin };
        RouteFuture { state: State::Forward { fut: self.inner.call(req), post: Some(post), decision: Some(decision) } }
    }
}

/// A configured outcome (a redirect, a direct response, a CORS preflight), with the decision
/// that made it for telemetry; `grpc`: the caller speaks gRPC (read only when a reply is made,
/// never on the forwarding path).
fn local<B: LocalBody>(reply: LocalReply, grpc: bool, decision: RouteDecision) -> Response<B> {
    let mut rsp = reply.into_response(grpc);
    rsp.extensions_mut().insert(decision);
    rsp
}

fn set_path(uri: &mut Uri, path_and_query: &str) {
    let mut parts = std::mem::take(uri).into_parts();
    parts.path_and_query = PathAndQuery::try_from(path_and_query).ok().or(parts.path_and_query);
    *uri = Uri::from_parts(parts).unwrap_or_default();
}

fn set_authority<B>(req: &mut Request<B>, authority: HeaderValue) {
    if req.uri().authority().is_some()
        && let Ok(a) = http::uri::Authority::try_from(authority.as_bytes())
    {
        let mut parts = std::mem::take(req.uri_mut()).into_parts();
        parts.authority = Some(a);
        *req.uri_mut() = Uri::from_parts(parts).unwrap_or_default();
    }
    req.headers_mut().insert(header::HOST, authority);
}

/// Fire and forget a copy, with `-shadow` appended to the host (Envoy's behaviour).
fn mirror<B>(sink: &MirrorSink, req: &Request<B>, target: &Target)
where
    B: http_body::Body,
{
    if req.body().size_hint().exact() != Some(0) {
        tracing::debug!(target = target.name(), "request has a body; not mirrored");
        return;
    }
    let mut copy = Request::new(mesh_core::body::empty());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.headers_mut() = req.headers().clone();
    let host = mesh_core::request::authority(req);
    if let Some(host) = host {
        let (h, port) = crate::policy::action::split_authority(host);
        let shadow = match port {
            Some(p) => format!("{h}-shadow:{p}"),
            None => format!("{h}-shadow"),
        };
        if let Ok(v) = HeaderValue::from_str(&shadow) {
            copy.headers_mut().insert(header::HOST, v);
        }
    }
    copy.extensions_mut().insert(target.clone());
    // Boxed here, outside the spawned block, so its `Send` proof sees concrete lifetimes.
    let fut: Pin<Box<dyn Future<Output = Result<Response<BoxBody>, BoxError>> + Send>> =
        Box::pin(sink.clone().oneshot(copy));
    tokio::spawn(async move {
        if let Err(e) = fut.await {
            tracing::debug!(error = %e, "mirrored request failed");
        }
    });
}

pin_project! {
    /// Response future of [`Route`].
    pub struct RouteFuture<S, Req> where S: Service<Req> {
        #[pin]
        state: State<S, Req>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, Req> where S: Service<Req> {
        Ready { result: Option<Result<S::Response, BoxError>> },
        Forward { #[pin] fut: S::Future, post: Option<ResponseEdits>, decision: Option<RouteDecision> },
    }
}

impl<S, Req> RouteFuture<S, Req>
where
    S: Service<Req>,
{
    fn ready(result: Result<S::Response, BoxError>) -> Self {
        Self { state: State::Ready { result: Some(result) } }
    }
}

impl<S, ReqB, ResB> Future for RouteFuture<S, Request<ReqB>>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
{
    type Output = Result<Response<ResB>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Ready { result } => Poll::Ready(result.take().expect("polled after ready")),
            StateProj::Forward { fut, post, decision } => {
                let mut rsp = ready!(fut.poll(cx)).map_err(Into::into)?;
                let post = post.take().expect("polled after ready");
                post.route.headers.response.apply(rsp.headers_mut());
                if let Some(h) = &post.target_headers {
                    h.apply(rsp.headers_mut());
                }
                if let (Some(cors), Some(origin)) = (&post.route.cors, &post.origin) {
                    Cors::response_headers(cors, origin, rsp.headers_mut());
                }
                if let Some(d) = decision.take() {
                    rsp.extensions_mut().insert(d);
                }
                Poll::Ready(Ok(rsp))
            }
        }
    }
}
