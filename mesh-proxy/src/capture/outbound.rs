//! The outbound capture listener (Envoy's `virtualOutbound`, port 15001): every connection
//! the capture rules redirected here is taken by its original destination.
//!
//! - A Service's (or ServiceEntry's) address and port is that service's traffic: an HTTP
//!   port gets the outbound HTTP stack (routed by Host, as the `--outbound` listener routes),
//!   a TCP port the TCP proxy; a port of no declared protocol is sniffed as Istio does (an
//!   HTTP/1.x request line or the HTTP/2 preface in the first bytes: HTTP; else TCP).
//! - Anything else follows `outboundTrafficPolicy`: `ALLOW_ANY` passes the connection
//!   through to where it was going (`PassthroughCluster`), `REGISTRY_ONLY` closes it
//!   (`BlackHoleCluster`); both are counted under those names.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use http::{Request, Response};
use hyper::body::Incoming;
use mesh_config::{api::mesh::OutboundTrafficMode, registry::Protocol};
use mesh_core::{BoxBody, BoxError, ext::ResponseFlags};
use mesh_mtls::{accept::ServerIo, server::WithConnection};
use mesh_telemetry::{
    layer::WorkloadInfo,
    metrics::{MeshMetrics, TcpLabels},
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
};

use super::{
    Connection,
    sniff::{Sniffed, sniff},
};
use crate::{
    compiled::CompiledConfig,
    conn::{Gate, serve_http, within},
    tcp::{self, Forward},
};

/// How long a connection to a port of no declared protocol may stay silent before it is
/// taken for TCP (Istio's `protocolDetectionTimeout`).
pub(crate) const DETECTION_TIMEOUT: Duration = Duration::from_secs(1);

/// The name Istio gives traffic to no known service that is let through.
pub(crate) const PASSTHROUGH: &str = "PassthroughCluster";
/// The name Istio gives traffic to no known service that is refused.
pub(crate) const BLACKHOLE: &str = "BlackHoleCluster";

/// The outbound capture listener's parts.
pub(crate) struct CaptureOutbound<S> {
    pub(crate) control: Arc<CompiledConfig>,
    pub(crate) metrics: Arc<MeshMetrics>,
    /// The outbound HTTP stack (the `--outbound` listener's).
    pub(crate) http: S,
    /// The TCP proxy.
    pub(crate) tcp: Arc<tcp::Outbound>,
    /// The mesh config's `outboundTrafficPolicy` (the workload's Sidecar resource's wins).
    pub(crate) policy: OutboundTrafficMode,
}

/// What a captured connection is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Destination {
    /// A known service's port, and how to speak to it (`None`: undeclared, detected).
    Service { host: String, port: u16, protocol: Option<Protocol> },
    /// No known service.
    Unknown,
}

impl<S> CaptureOutbound<S>
where
    S: tower::Service<Request<Incoming>, Response = Response<BoxBody>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    /// What a connection to `dst` is for, by the registry in force.
    pub(crate) fn destination(&self, dst: SocketAddr) -> Destination {
        let registry = self.control.registry.load();
        match registry.service_at(dst) {
            Some(svc) => Destination::Service {
                host: svc.hostname.clone(),
                port: dst.port(),
                protocol: svc.ports.iter().find(|p| p.number == dst.port()).filter(|p| !p.detect).map(|p| p.protocol),
            },
            None => Destination::Unknown,
        }
    }

    /// Accept on `listener` until `stop`; then wait for the open connections.
    pub(crate) async fn serve(self: Arc<Self>, listener: TcpListener, gate: Arc<Gate>, stop: watch::Receiver<bool>) {
        super::accept_captured("capture outbound", listener, gate, stop, move |tcp, client, dst, conn| {
            let me = self.clone();
            async move { me.connection(tcp, client, dst, conn).await }
        })
        .await;
    }

    /// One connection to `dst` (where it was addressed).
    async fn connection(&self, tcp: TcpStream, client: SocketAddr, dst: SocketAddr, conn: Connection) {
        let Connection { builder, gate, stop } = conn;
        let local = tcp.local_addr().unwrap_or(dst);
        match self.destination(dst) {
            Destination::Service { host, port, protocol } => {
                let http = match protocol {
                    Some(p) => !p.is_opaque(),
                    None => {
                        let mut first = [0u8; super::sniff::SNIFF_BYTES];
                        matches!(
                            within(Some(DETECTION_TIMEOUT), tcp.peek(&mut first)).await,
                            Some(Ok(n)) if sniff(&first[..n]) == Sniffed::Http
                        )
                    }
                };
                if http {
                    let svc = WithConnection::new(self.http.clone(), None, client, local);
                    if let Err(e) = serve_http(ServerIo::plain(tcp), svc, &builder, &gate, stop).await {
                        tracing::debug!(%client, %dst, error = %e, "captured connection ended with an error");
                    }
                } else {
                    self.tcp.proxy(tcp, client, &Forward { listen: local, host, port }).await;
                }
            }
            Destination::Unknown => self.unknown(tcp, dst).await,
        }
    }

    /// To no known service: through to `dst` (ALLOW_ANY), or closed (REGISTRY_ONLY).
    async fn unknown(&self, mut client: TcpStream, dst: SocketAddr) {
        let me = WorkloadInfo::from(&self.control.me);
        let labels = |name: &str, flags| TcpLabels {
            destination_service_name: name.to_string(),
            // The address stays out of the labels: one series per outside address would
            // have no bound.
            ..TcpLabels::source(&me, "unknown", None, flags)
        };
        match self.control.sidecar_outbound.load().unwrap_or(self.policy) {
            OutboundTrafficMode::RegistryOnly => {
                let labels = labels(BLACKHOLE, ResponseFlags::NONE);
                self.metrics.tcp_opened(&labels);
                self.metrics.tcp_closed(&labels, 0, 0);
            }
            OutboundTrafficMode::AllowAny => match TcpStream::connect(dst).await {
                Ok(mut upstream) => {
                    let _ = upstream.set_nodelay(true);
                    let labels = labels(PASSTHROUGH, ResponseFlags::NONE);
                    self.metrics.tcp_opened(&labels);
                    let (received, sent) =
                        tokio::io::copy_bidirectional(&mut client, &mut upstream).await.unwrap_or((0, 0));
                    self.metrics.tcp_closed(&labels, sent, received);
                }
                Err(e) => {
                    tracing::debug!(%dst, error = %e, "passthrough: connect failed");
                    let labels = labels(PASSTHROUGH, ResponseFlags::UPSTREAM_CONNECTION_FAILURE);
                    self.metrics.tcp_opened(&labels);
                    self.metrics.tcp_closed(&labels, 0, 0);
                }
            },
        }
    }
}
