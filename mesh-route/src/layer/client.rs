//! The pooled upstream HTTP client under the balancer.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response, Version};
use http_body::Body;
use hyper_util::{
    client::legacy::{
        Client, ResponseFuture,
        connect::{Connect, HttpConnector},
    },
    rt::TokioExecutor,
};
use mesh_core::{BoxBody, BoxError, body::boxed};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::error::ConnectFailure;

/// A pooled hyper client (keep-alive; HTTP/2 when the connector negotiates it by ALPN)
/// sending to the absolute URI the balancer set (`https` for mTLS); connect failures become
/// [`ConnectFailure`]. The connector decides how `https` is spoken (mesh-mtls provides the
/// mTLS one).
///
/// Protocols: whatever the caller spoke, a request goes out as HTTP/1.1 unless the
/// connection negotiates HTTP/2, except gRPC (which needs HTTP/2) to a plaintext upstream:
/// that goes over HTTP/2 with prior knowledge (h2c), from a pool of its own.
#[derive(Debug)]
pub struct HttpClient<B, C = HttpConnector> {
    client: Client<C, B>,
    h2c: Client<C, B>,
}

impl<B, C: Clone> Clone for HttpClient<B, C> {
    fn clone(&self) -> Self {
        Self { client: self.client.clone(), h2c: self.h2c.clone() }
    }
}

fn clients<C, B>(connector: C) -> (Client<C, B>, Client<C, B>)
where
    C: Connect + Clone + Send + Sync + 'static,
    B: Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let idle = Duration::from_secs(90);
    let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(idle).build(connector.clone());
    let h2c = Client::builder(TokioExecutor::new()).pool_idle_timeout(idle).http2_only(true).build(connector);
    (client, h2c)
}

/// Whether a request is gRPC (its content type says so).
fn is_grpc<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

impl<B, C> HttpClient<B, C>
where
    C: Connect + Clone + Send + Sync + 'static,
    B: Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// A client over `connector`.
    pub fn with_connector(connector: C) -> Self {
        let (client, h2c) = clients(connector);
        Self { client, h2c }
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
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(10)));
        connector.set_nodelay(true);
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
        if req.uri().scheme() == Some(&http::uri::Scheme::HTTP) && is_grpc(&req) {
            *req.version_mut() = Version::HTTP_2;
            return ClientFuture { fut: self.h2c.request(req) };
        }
        // HTTP/2 is used when the connection negotiates it; the request's own version
        // (the downstream's) must not make an HTTP/1.1 upstream refuse it.
        *req.version_mut() = Version::HTTP_11;
        ClientFuture { fut: self.client.request(req) }
    }
}

pin_project! {
    /// Response future of [`HttpClient`].
    pub struct ClientFuture {
        #[pin]
        fut: ResponseFuture,
    }
}

impl Future for ClientFuture {
    type Output = Result<Response<BoxBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(match ready!(self.project().fut.poll(cx)) {
            Ok(rsp) => Ok(rsp.map(boxed)),
            Err(e) if e.is_connect() => Err(Box::new(ConnectFailure { source: Box::new(e) })),
            Err(e) => Err(Box::new(e)),
        })
    }
}
