//! Listeners: accept (plaintext, or mTLS per the PeerAuthentication mode in force), serve
//! HTTP/1.1 and HTTP/2 (prior knowledge or ALPN) with bounded parsing, and drain on stop.

use std::{future::Future, net::SocketAddr, pin::Pin, sync::Arc, time::Duration};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use mesh_core::{BoxBody, BoxError, Identity};
use mesh_mtls::{
    accept::{MtlsAcceptor, ServerIo},
    peer_auth::Mode,
    server::WithConnection,
};
use tokio::{net::TcpListener, sync::watch};

/// How connections are accepted.
#[derive(Clone)]
pub(crate) enum Accept {
    /// Plaintext only (the outbound and admin listeners).
    Plain,
    /// mTLS as the mode the closure gives at accept time says (STRICT, PERMISSIVE, DISABLE):
    /// a config reload changes it for new connections.
    Mtls { acceptor: MtlsAcceptor, mode: Arc<dyn Fn() -> Mode + Send + Sync> },
}

/// Connections that are not HTTP: spliced to the app as they are (the inbound side of a
/// workload whose ports are all TCP), decided per connection as the config says.
#[derive(Clone)]
pub(crate) struct Opaque {
    pub(crate) when: Arc<dyn Fn() -> bool + Send + Sync>,
    #[allow(clippy::type_complexity)]
    pub(crate) splice:
        Arc<dyn Fn(ServerIo, Option<Identity>) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>,
}

/// Request head limits: Envoy's defaults (60 KiB of headers, 100 headers).
const MAX_HEADER_BYTES: usize = 60 * 1024;
const MAX_HEADERS: usize = 100;
/// A client that opens a connection and sends no complete head in this time is dropped.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

fn builder() -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES.max(8192))
        .max_headers(MAX_HEADERS);
    b.http2().timer(TokioTimer::new()).max_header_list_size(u32::try_from(MAX_HEADER_BYTES).unwrap_or(u32::MAX));
    b
}

/// Serve `service` on `listener` until `stop` turns true; then stop accepting, let the
/// open connections finish their in-flight requests (HTTP/1.1 closes after the current
/// response, HTTP/2 sends GOAWAY) and return when all are done. The caller bounds the
/// wait with the drain timeout.
pub(crate) async fn serve<S>(
    name: &'static str,
    listener: TcpListener,
    accept: Accept,
    service: S,
    opaque: Option<Opaque>,
    mut stop: watch::Receiver<bool>,
) where
    S: tower::Service<Request<Incoming>, Response = Response<BoxBody>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    let local = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(listener = name, error = %e, "listener has no address");
            return;
        }
    };
    let builder = Arc::new(builder());
    let graceful = GracefulShutdown::new();
    let tcp_active = Arc::new(crate::tcp::Active::default());
    loop {
        let (tcp, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(listener = name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        let _ = tcp.set_nodelay(true);
        let (accept, service, builder) = (accept.clone(), service.clone(), builder.clone());
        let watcher = graceful.watcher();
        let opaque = opaque.clone().filter(|o| (o.when)());
        let tcp_guard = opaque.as_ref().map(|_| tcp_active.enter());
        tokio::spawn(async move {
            let (io, peer) = match &accept {
                Accept::Plain => (ServerIo::plain(tcp), None),
                Accept::Mtls { acceptor, mode } => match acceptor.accept(tcp, mode()).await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::debug!(listener = name, %client, error = %e, "connection refused");
                        return;
                    }
                },
            };
            if let Some(o) = opaque {
                (o.splice)(io, peer).await;
                drop(tcp_guard);
                return;
            }
            let svc = TowerToHyperService::new(WithConnection::new(service, peer, client, local));
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(listener = name, %client, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!(listener = name, "draining");
    tokio::join!(graceful.shutdown(), tcp_active.idle());
}

/// Resolves once `stop` is true (or its sender is gone).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Bind, naming the address in the error.
pub(crate) async fn bind(what: &str, addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on {addr} ({what}): {e}"))
}
