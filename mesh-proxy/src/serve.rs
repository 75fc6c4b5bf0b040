//! Listeners: accept (plaintext, or mTLS per the PeerAuthentication mode in force), serve
//! HTTP/1.1 and HTTP/2 (prior knowledge or ALPN) with bounded parsing, and drain on stop.

use std::{future::Future, net::SocketAddr, pin::Pin, sync::Arc};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioTimer},
    server::conn::auto,
};
use mesh_core::{BoxBody, BoxError, Identity};
use mesh_mtls::{
    accept::{MtlsAcceptor, ServerIo},
    peer_auth::Mode,
    server::WithConnection,
};
use tokio::{net::TcpListener, sync::watch};

use crate::{
    MeshError,
    conn::{Gate, OpenConnections, serve_http, within},
};

/// How connections are accepted.
#[derive(Clone)]
pub(crate) enum Accept {
    /// Plaintext only (the outbound and admin listeners).
    Plain,
    /// mTLS as the mode the closure gives at accept time says (STRICT, PERMISSIVE, DISABLE):
    /// a config reload changes it for new connections.
    Mtls { acceptor: MtlsAcceptor, mode: Arc<dyn Fn() -> Mode + Send + Sync> },
    /// Whichever of the above the closure gives at accept time (`None`: the connection is
    /// closed): a gateway listener, whose servers a config reload may change.
    Live(Arc<dyn Fn() -> Option<Accept> + Send + Sync>),
}

impl Accept {
    /// How a connection is accepted now: a `Live` listener's current way, never `Live`
    /// itself; `None`: not at all.
    pub(crate) fn now(&self) -> Option<Accept> {
        match self {
            Accept::Live(current) => current().filter(|a| !matches!(a, Accept::Live(_))),
            a => Some(a.clone()),
        }
    }
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
pub(crate) const MAX_HEADER_BYTES: usize = 60 * 1024;
const MAX_HEADERS: usize = 100;

/// The HTTP server's settings, for every listener.
pub(crate) fn http_builder() -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    // The head and idle timers are the connection's own (crate::conn): hyper's header
    // read timeout would also close idle keep-alive connections, and without a 408.
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(MAX_HEADER_BYTES.max(8192))
        .max_headers(MAX_HEADERS);
    b.http2().timer(TokioTimer::new()).max_header_list_size(u32::try_from(MAX_HEADER_BYTES).unwrap_or(u32::MAX));
    b
}

/// Serve `service` on `listener` until `stop` turns true; then stop accepting, let the
/// open connections finish their in-flight requests (HTTP/1.1 closes after the current
/// response, HTTP/2 sends GOAWAY) and return when all are done. The caller bounds the
/// wait with the drain timeout. `gate` holds the listener's limits (shared by its
/// workers): the connection cap, the first-byte, head and idle timers.
pub(crate) async fn serve<S>(
    name: &'static str,
    listener: TcpListener,
    accept: Accept,
    service: S,
    opaque: Option<Opaque>,
    gate: Arc<Gate>,
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
    gate.bound(local);
    let builder = Arc::new(http_builder());
    let open = Arc::new(OpenConnections::default());
    // Past the cap a connection is closed at once, so the descriptors of established
    // clients and of the upstream pools are never starved.
    while let Some((tcp, client, permit)) = gate.next(&listener, &mut stop).await {
        let _ = tcp.set_nodelay(true);
        let (accept, service, builder, gate, stop) =
            (accept.clone(), service.clone(), builder.clone(), gate.clone(), stop.clone());
        let opaque = opaque.clone().filter(|o| (o.when)());
        let guard = open.open();
        tokio::spawn(async move {
            let _held = (guard, permit);
            let first_byte = gate.limits().first_byte;
            let Some(accept) = accept.now() else {
                tracing::debug!(listener = name, %client, "no server on this port: connection closed");
                return;
            };
            let (io, peer) = match &accept {
                Accept::Plain => (ServerIo::plain(tcp), None),
                Accept::Mtls { acceptor, mode } => {
                    let mode = mode();
                    // Opaque TCP may be server-first: a client that sends nothing is
                    // plaintext in PERMISSIVE mode (Envoy's continue_on_listener_filters_timeout).
                    if opaque.is_some()
                        && mode == Mode::Permissive
                        && within(first_byte, tcp.peek(&mut [0u8; 1])).await.is_none()
                    {
                        if let Some(o) = &opaque {
                            (o.splice)(ServerIo::plain(tcp), None).await;
                        }
                        return;
                    }
                    match handshake(name, acceptor, tcp, mode, client, &gate).await {
                        Some(accepted) => accepted,
                        None => return,
                    }
                }
                Accept::Live(_) => return, // `now` never gives one
            };
            if let Some(o) = opaque {
                (o.splice)(io, peer).await;
                return;
            }
            let svc = WithConnection::new(service, peer, client, local).with_tls(io.is_tls());
            if let Err(e) = serve_http(io, svc, &builder, &gate, stop).await {
                tracing::debug!(listener = name, %client, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!(listener = name, "draining");
    open.closed().await;
}

/// The TLS handshake of an accepted connection, within the first-byte timer; `None` (logged,
/// counted) when it fails or does not come in time.
pub(crate) async fn handshake(
    name: &'static str,
    acceptor: &MtlsAcceptor,
    tcp: tokio::net::TcpStream,
    mode: Mode,
    client: SocketAddr,
    gate: &Gate,
) -> Option<(ServerIo, Option<Identity>)> {
    match within(gate.limits().first_byte, acceptor.accept(tcp, mode)).await {
        Some(Ok(accepted)) => Some(accepted),
        Some(Err(e)) => {
            tracing::debug!(listener = name, %client, error = %e, "connection refused");
            None
        }
        None => {
            gate.stats().pre_cx_timeout.inc();
            tracing::debug!(listener = name, %client, "no TLS handshake in time");
            None
        }
    }
}

/// Resolves once `stop` is true (or its sender is gone).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Bind, naming the listener and the address in the error.
pub(crate) async fn bind(what: &str, addr: SocketAddr) -> Result<TcpListener, MeshError> {
    TcpListener::bind(addr).await.map_err(|source| MeshError::Bind { what: what.into(), addr, source })
}
