//! The pooled upstream HTTP client under the balancer.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response, Version};
use http_body::Body;
use hyper::upgrade::OnUpgrade;
use hyper_util::{
    client::legacy::{
        Client, ResponseFuture,
        connect::{Connect, HttpConnector},
    },
    rt::{TokioExecutor, TokioIo},
};
use mesh_core::{BoxBody, BoxError, body::boxed};
use pin_project_lite::pin_project;
use tower::Service;

use mesh_core::error::ConnectFailure;
use mesh_core::request::is_grpc;

/// A pooled hyper client (keep-alive; HTTP/2 when the connector negotiates it by ALPN)
/// sending to the absolute URI the balancer set (`https` for mTLS); connect failures become
/// [`ConnectFailure`]. The connector decides how `https` is spoken (mesh-mtls provides the
/// mTLS one).
///
/// Protocols: HTTP/2 callers (and gRPC) get HTTP/2 upstream when the connection negotiates
/// it by ALPN, gRPC to a plaintext upstream over HTTP/2 with prior knowledge (h2c), from a
/// pool of its own.
///
/// HTTP/1.x requests and upgrades (WebSocket and other `Connection: upgrade` requests) go
/// over HTTP/1.1 connections of the second connector (for mTLS, one that offers only
/// `http/1.1` by ALPN); on `101 Switching Protocols` the caller's connection and the
/// upstream's are spliced together until either side closes.
#[derive(Debug)]
pub struct HttpClient<B, C = HttpConnector> {
    // Shared: the balancer clones its inner service per request, and a hyper client's
    // clone copies its connector and pool handles.
    pools: Arc<Pools<C, B>>,
}

#[derive(Debug)]
struct Pools<C, B> {
    client: Client<C, B>,
    h2c: Client<C, B>,
    upgrade: Client<C, B>,
}

impl<B, C> Clone for HttpClient<B, C> {
    fn clone(&self) -> Self {
        Self { pools: self.pools.clone() }
    }
}

fn pool<C, B>(connector: C, h2c: bool) -> Client<C, B>
where
    C: Connect + Clone + Send + Sync + 'static,
    B: Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(90)).http2_only(h2c).build(connector)
}

impl<B, C> HttpClient<B, C>
where
    C: Connect + Clone + Send + Sync + 'static,
    B: Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// A client over `connector` (upgrades too).
    pub fn with_connector(connector: C) -> Self {
        Self::with_connectors(connector.clone(), connector)
    }

    /// A client over `connector`, with upgrades over `upgrade` (which must speak HTTP/1.1).
    pub fn with_connectors(connector: C, upgrade: C) -> Self {
        let pools =
            Pools { client: pool(connector.clone(), false), h2c: pool(connector, true), upgrade: pool(upgrade, false) };
        Self { pools: Arc::new(pools) }
    }
}

impl<B> HttpClient<B>
where
    B: Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// A client with a 10 s connect timeout (Istio's default) and idle connections kept
    /// for 90 s.
    pub fn new() -> Self {
        Self::from_source(None)
    }

    /// [`HttpClient::new`], its connections made from `source` (the capture's inbound hop
    /// to the app comes from 127.0.0.6, which the capture rules never take again).
    pub fn from_source(source: Option<std::net::IpAddr>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(10)));
        connector.set_nodelay(true);
        connector.set_local_address(source);
        Self::with_connector(connector)
    }
}

impl<B> Default for HttpClient<B>
where
    B: Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    fn default() -> Self {
        Self::new()
    }
}

impl<B, C> Service<Request<B>> for HttpClient<B, C>
where
    C: Connect + Clone + Send + Sync + 'static,
    B: Body<Data = Bytes> + Send + 'static + Unpin,
    B::Error: Into<BoxError>,
{
    type Response = Response<BoxBody>;
    type Error = BoxError;
    type Future = ClientFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<B>) -> ClientFuture {
        if is_upgrade(&req) {
            let downstream = req.extensions_mut().remove::<OnUpgrade>();
            *req.version_mut() = Version::HTTP_11;
            return ClientFuture { fut: self.pools.upgrade.request(req), downstream };
        }
        let grpc = is_grpc(&req);
        if req.uri().scheme() == Some(&http::uri::Scheme::HTTP) && grpc {
            *req.version_mut() = Version::HTTP_2;
            return ClientFuture { fut: self.pools.h2c.request(req), downstream: None };
        }
        // The caller's protocol is kept, as Istio's sidecars keep it (no h2UpgradePolicy):
        // HTTP/1.x goes out over HTTP/1.1 connections, HTTP/2 and gRPC over connections
        // that negotiate h2 by ALPN. The version itself is left to the connection, so an
        // upstream that offers only HTTP/1.1 still gets the request.
        let http2 = req.version() == Version::HTTP_2 || grpc;
        *req.version_mut() = Version::HTTP_11;
        let pool = if http2 { &self.pools.client } else { &self.pools.upgrade };
        ClientFuture { fut: pool.request(req), downstream: None }
    }
}

/// An HTTP/1.1 upgrade request: `Upgrade` named in `Connection`.
fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.headers().contains_key(http::header::UPGRADE)
        && req
            .headers()
            .get_all(http::header::CONNECTION)
            .iter()
            .any(|v| v.to_str().is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade"))))
}

pin_project! {
    /// Response future of [`HttpClient`].
    pub struct ClientFuture {
        #[pin]
        fut: ResponseFuture,
        // The caller's side of an upgrade request.
        downstream: Option<OnUpgrade>,
    }
}

impl Future for ClientFuture {
    type Output = Result<Response<BoxBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        Poll::Ready(match ready!(this.fut.poll(cx)) {
            Ok(mut rsp) => {
                if rsp.status() == http::StatusCode::SWITCHING_PROTOCOLS
                    && let Some(downstream) = this.downstream.take()
                {
                    tokio::spawn(splice(downstream, hyper::upgrade::on(&mut rsp)));
                }
                Ok(rsp.map(boxed))
            }
            Err(e) if e.is_connect() => Err(Box::new(ConnectFailure { source: Box::new(e) })),
            Err(e) => Err(Box::new(e)),
        })
    }
}

/// Once both sides have switched protocols, copy bytes both ways until either closes.
async fn splice(downstream: OnUpgrade, upstream: OnUpgrade) {
    let (down, up) = match tokio::try_join!(downstream, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade did not complete");
            return;
        }
    };
    let (mut down, mut up) = (TokioIo::new(down), TokioIo::new(up));
    if let Err(e) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
        tracing::debug!(error = %e, "upgraded connection ended with an error");
    }
}
