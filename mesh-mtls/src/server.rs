//! Serving HTTP (1.1 and 2) on accepted connections, with the connection's facts in every
//! request's extensions: the peer's identity ([`PeerIdentity`], mTLS only), the client's
//! address ([`ClientAddr`]), the local address ([`LocalAddr`]) and whether the connection
//! is TLS ([`DownstreamTls`]).

#[cfg(any(test, feature = "test-util"))]
pub use bare::{fixed, serve};
use http::Request;
use mesh_core::{
    Identity,
    ext::{ClientAddr, DownstreamTls, LocalAddr, PeerIdentity},
};

/// Adds the connection's facts to each request before `S` sees it.
#[derive(Clone, Debug)]
pub struct WithConnection<S> {
    inner: S,
    peer: Option<PeerIdentity>,
    client: ClientAddr,
    local: LocalAddr,
    tls: DownstreamTls,
}

impl<S> WithConnection<S> {
    /// `inner`, seeing the facts of one connection: the peer's mTLS identity (if any), the
    /// client's address and the local address it connected to.
    pub fn new(inner: S, peer: Option<Identity>, client: std::net::SocketAddr, local: std::net::SocketAddr) -> Self {
        let tls = DownstreamTls(peer.is_some());
        Self { inner, peer: peer.map(PeerIdentity), client: ClientAddr(client), local: LocalAddr(local), tls }
    }

    /// Whether the connection is TLS (a peer identity implies it; a gateway's one-way TLS
    /// has none): requests without a scheme of their own are `https` then.
    pub fn with_tls(mut self, tls: bool) -> Self {
        self.tls = DownstreamTls(tls);
        self
    }
}

impl<S, B> tower_service::Service<Request<B>> for WithConnection<S>
where
    S: tower_service::Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> S::Future {
        let ext = req.extensions_mut();
        if let Some(p) = &self.peer {
            ext.insert(p.clone());
        }
        ext.insert(self.client);
        ext.insert(self.local);
        // Only where nothing else tells it: an mTLS peer's identity implies TLS, and its
        // absence on a plaintext connection costs no allocation per request.
        if self.tls.0 && self.peer.is_none() {
            ext.insert(self.tls);
        }
        self.inner.call(req)
    }
}

/// A bare accept loop (feature `test-util`): for tests and examples that need mTLS serving
/// without the proxy. It has no connection cap, timers or drain; mesh-proxy's serving,
/// which has them, is what ships.
#[cfg(any(test, feature = "test-util"))]
mod bare {
    use std::{future::Future, sync::Arc};

    use http::Request;
    use hyper::body::Incoming;
    use hyper_util::{
        rt::{TokioExecutor, TokioIo},
        server::conn::auto,
        service::TowerToHyperService,
    };
    use tokio::net::TcpListener;

    use super::WithConnection;
    use crate::{accept::MtlsAcceptor, peer_auth::Mode};

    /// Accept connections on `listener` under the mode `mode_for_port` gives for the listening
    /// port, and serve `service` on each (HTTP/1.1 or HTTP/2, by ALPN or prior knowledge).
    /// Runs until the listener fails.
    pub fn serve<S, F>(
        listener: TcpListener,
        acceptor: MtlsAcceptor,
        mode_for_port: F,
        service: S,
    ) -> impl Future<Output = std::io::Result<()>> + Send
    where
        S: tower_service::Service<Request<Incoming>, Response = http::Response<mesh_core::BoxBody>>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        F: Fn(u16) -> Mode + Send + Sync + 'static,
    {
        let mode_for_port = Arc::new(mode_for_port);
        async move {
            let local = listener.local_addr()?;
            loop {
                let (tcp, client) = listener.accept().await?;
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let service = service.clone();
                let mode = mode_for_port(local.port());
                tokio::spawn(async move {
                    let (io, peer) = match acceptor.accept(tcp, mode).await {
                        Ok(accepted) => accepted,
                        Err(e) => {
                            tracing::debug!(%client, error = %e, "connection refused");
                            return;
                        }
                    };
                    let tls = io.is_tls();
                    let svc = WithConnection::new(service, peer, client, local).with_tls(tls);
                    let conn = auto::Builder::new(TokioExecutor::new());
                    if let Err(e) =
                        conn.serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(svc)).await
                    {
                        tracing::debug!(%client, error = %e, "connection ended with an error");
                    }
                });
            }
        }
    }

    /// A mode that is the same on every port.
    pub fn fixed(mode: Mode) -> impl Fn(u16) -> Mode + Send + Sync + 'static {
        move |_| mode
    }
}
