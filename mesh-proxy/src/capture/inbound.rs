//! The inbound capture listener (Envoy's `virtualInbound`, port 15006): every connection
//! the capture rules redirected here is for the app port it was addressed to. It gets that
//! port's mTLS (PeerAuthentication, `portLevelMtls` included), the inbound stack (JWT,
//! AuthorizationPolicy, telemetry) and then the app at the address it was sent to, from
//! 127.0.0.6 (`::6`), which the rules never capture again. So an app bound to 0.0.0.0 is
//! reachable only through its sidecar: STRICT holds whatever the app binds.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{Arc, Mutex},
};

use mesh_mtls::server::WithConnection;
use tokio::{net::TcpListener, sync::watch};

use super::Connection;
use crate::{
    MeshError,
    compiled::CompiledConfig,
    conn::{Gate, serve_http},
    inbound::Inbound,
    serve::{Accept, handshake},
};

/// The source of the inbound hop to the app (Istio's `InboundPassthroughBindIpv4/6`).
pub(crate) fn passthrough_source(app: SocketAddr) -> IpAddr {
    if app.is_ipv4() {
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 6))
    } else {
        IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6))
    }
}

/// Builds, for an app address, how its connections are accepted and the stack before it.
pub(crate) type MakeStack = Arc<dyn Fn(SocketAddr) -> Result<(Accept, Inbound), MeshError> + Send + Sync>;

/// At most this many app addresses keep a stack; past it a connection gets a fresh one.
const MAX_STACKS: usize = 1024;

/// The inbound capture listener's parts.
pub(crate) struct CaptureInbound {
    pub(crate) control: Arc<CompiledConfig>,
    pub(crate) make: MakeStack,
    pub(crate) metrics: Arc<mesh_telemetry::metrics::MeshMetrics>,
    pub(crate) stacks: Mutex<HashMap<SocketAddr, (Accept, Inbound)>>,
}

impl CaptureInbound {
    fn stack(&self, app: SocketAddr) -> Result<(Accept, Inbound), MeshError> {
        let mut stacks = self.stacks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(s) = stacks.get(&app) {
            return Ok(s.clone());
        }
        let made = (self.make)(app)?;
        if stacks.len() < MAX_STACKS {
            stacks.insert(app, made.clone());
        }
        Ok(made)
    }

    /// Accept on `listener` until `stop`; then wait for the open connections.
    pub(crate) async fn serve(self: Arc<Self>, listener: TcpListener, gate: Arc<Gate>, stop: watch::Receiver<bool>) {
        super::accept_captured("capture inbound", listener, gate, stop, move |tcp, client, app, conn| {
            let me = self.clone();
            async move { me.connection(tcp, client, app, conn).await }
        })
        .await;
    }

    /// One connection for the app at `app` (where it was addressed).
    async fn connection(&self, tcp: tokio::net::TcpStream, client: SocketAddr, app: SocketAddr, conn: Connection) {
        let Connection { builder, gate, stop } = conn;
        let (accept, svc) = match self.stack(app) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%app, error = %e, "captured inbound connection: closed");
                return;
            }
        };
        let Accept::Mtls { acceptor, mode } = accept else { return };
        let Some((io, peer)) = handshake("capture inbound", &acceptor, tcp, mode(), client, &gate).await else {
            return;
        };
        if self.control.inbound_tcp.load(std::sync::atomic::Ordering::Relaxed) {
            let splice =
                crate::tcp::inbound(self.control.clone(), self.metrics.clone(), app, Some(passthrough_source(app)));
            splice(io, peer).await;
            return;
        }
        // The request's local address is the app's: policies' `ports` name it.
        let svc = WithConnection::new(svc, peer, client, app).with_tls(io.is_tls());
        if let Err(e) = serve_http(io, svc, &builder, &gate, stop).await {
            tracing::debug!(%client, %app, error = %e, "captured inbound connection ended with an error");
        }
    }
}
