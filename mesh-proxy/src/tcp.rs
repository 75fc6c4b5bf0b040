//! Plain TCP proxying for non-HTTP ports (`tcp`, `mongo`, `mysql`, `redis`, `tls` port
//! names or `appProtocol`).
//!
//! Outbound, `--tcp ADDR=HOST:PORT` listens on ADDR for the app and sends each connection
//! to the service `HOST:PORT`: the VirtualService's `tcp` route (weights, subsets) picks
//! the cluster, then mesh-route's balancer an endpoint (the DestinationRule's algorithm,
//! outlier ejection and pool limits, the state shared with HTTP; another endpoint when a
//! connect fails), over mTLS to its sidecar as the same rule as HTTP decides. Inbound, a workload whose services expose only
//! non-HTTP ports gets its mTLS connections spliced to the app as they are.
//! `istio_tcp_*` metrics are kept on both sides.

use std::{net::SocketAddr, pin::Pin, sync::Arc};

use http::Uri;
use hyper_util::rt::TokioIo;
use mesh_config::registry::Endpoint;
use mesh_core::Identity;
use mesh_core::ext::ResponseFlags;
use mesh_core::roll::{Roll, ThreadRoll};
use mesh_mtls::{accept::ServerIo, connector::MeshConnector};
use mesh_route::{
    layer::BalanceLayer,
    policy::{
        Target,
        cluster::Cluster,
        retry::{RetryPolicy, TryFailure},
    },
};
use mesh_telemetry::{
    layer::WorkloadInfo,
    metrics::{MeshMetrics, TcpLabels},
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
};
use tower::Service;

use crate::{cli::InvalidArg, compiled::CompiledConfig, conn::OpenConnections};

/// `--tcp ADDR=HOST:PORT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forward {
    /// Where the app connects.
    pub listen: SocketAddr,
    /// The service it reaches (its VirtualService `tcp` routes apply).
    pub host: String,
    /// The service port.
    pub port: u16,
}

impl std::str::FromStr for Forward {
    type Err = InvalidArg;

    fn from_str(s: &str) -> Result<Self, InvalidArg> {
        let (listen, target) = s.split_once('=').ok_or_else(|| InvalidArg::shape(s, "ADDR=HOST:PORT"))?;
        let listen = listen.parse().map_err(|e| InvalidArg::addr(listen, e))?;
        let (host, port) = target.rsplit_once(':').ok_or_else(|| InvalidArg::shape(target, "HOST:PORT"))?;
        let port = port.parse().map_err(|e| InvalidArg::port(port, e))?;
        if host.is_empty() {
            return Err(InvalidArg::NoHost(target.to_string()));
        }
        Ok(Self { listen, host: host.to_string(), port })
    }
}

/// The outbound TCP side.
pub(crate) struct Outbound {
    pub(crate) control: Arc<CompiledConfig>,
    pub(crate) connector: MeshConnector,
    pub(crate) metrics: Arc<MeshMetrics>,
    /// The outbound HTTP stack's balancer: one state per cluster for both.
    pub(crate) balance: BalanceLayer,
    /// When a failed connect is tried again ([`RetryPolicy::tcp_connect`]).
    pub(crate) connect: RetryPolicy,
}

impl Outbound {
    /// Accept on `listener` for `forward` until `stop`; then wait for open connections.
    pub(crate) async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        forward: Forward,
        gate: Arc<crate::conn::Gate>,
        mut stop: watch::Receiver<bool>,
    ) {
        if let Ok(local) = listener.local_addr() {
            gate.bound(local);
        }
        let open = Arc::new(OpenConnections::default());
        // The connection cap; no timers: a TCP protocol may be server-first or idle.
        while let Some((tcp, peer, permit)) = gate.next(&listener, &mut stop).await {
            let _ = tcp.set_nodelay(true);
            let (me, forward, guard) = (self.clone(), forward.clone(), open.open());
            tokio::spawn(async move {
                me.proxy(tcp, peer, &forward).await;
                drop((guard, permit));
            });
        }
        drop(listener);
        open.closed().await;
    }

    fn labels(&self, cluster: &Cluster, endpoint: Option<&Endpoint>, flags: ResponseFlags) -> TcpLabels {
        TcpLabels::source(&WorkloadInfo::from(&self.control.me), &cluster.service, endpoint, flags)
    }

    /// Proxy one connection from the app for `forward`'s service.
    pub(crate) async fn proxy(&self, mut client: TcpStream, peer: SocketAddr, forward: &Forward) {
        let table = self.control.table.load();
        let Some(targets) = table.tcp_route(&forward.host, forward.port) else {
            tracing::warn!(host = %forward.host, port = forward.port, "tcp: no such service port; connection closed");
            return;
        };
        let cluster = match targets.pick(ThreadRoll.roll() / 100.0).map(|t| &t.target) {
            Some(Target::Cluster(c)) => c.clone(),
            _ => {
                tracing::warn!(host = %forward.host, "tcp: no cluster for the route (NC); connection closed");
                return;
            }
        };
        // The HTTP balancer's endpoint choice, state and mTLS rule; a refused connect counts
        // for outlier detection and is retried on another endpoint as mesh-route's
        // `RetryPolicy::tcp_connect` says (URX when its retries run out).
        let mut tried = Vec::new();
        let mut flags = ResponseFlags::UPSTREAM_CONNECTION_FAILURE;
        loop {
            let pick = match self.balance.pick_connection(&cluster, Some(peer.ip()), &tried) {
                Ok(pick) => pick,
                Err(e) => {
                    flags = ResponseFlags::of(&*e); // UH, UO
                    break;
                }
            };
            let address = pick.endpoint().address;
            if tried.contains(&address) {
                break; // every healthy endpoint was tried
            }
            tried.push(address);
            let retries = u32::try_from(tried.len() - 1).unwrap_or(u32::MAX);
            let connected = match format!("{}://{address}", if pick.tls() { "https" } else { "http" }).parse::<Uri>() {
                Ok(uri) => self.connector.clone().call(uri).await,
                Err(e) => Err(e.into()),
            };
            let upstream = match connected {
                Ok(io) => io,
                Err(e) => {
                    tracing::debug!(endpoint = %address, error = %e, "tcp: connect failed");
                    pick.failed();
                    if self.connect.retries_after(retries, TryFailure::ConnectFailure) {
                        continue;
                    }
                    if !self.connect.may_retry(retries) && retries > 0 {
                        flags = flags | ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED;
                    }
                    break;
                }
            };
            pick.connected();
            let labels = self.labels(&cluster, Some(pick.endpoint()), ResponseFlags::NONE);
            self.metrics.tcp_opened(&labels);
            let mut upstream = TokioIo::new(upstream);
            let (received, sent) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await.unwrap_or((0, 0));
            self.metrics.tcp_closed(&labels, sent, received);
            drop(pick);
            return;
        }
        let labels = self.labels(&cluster, None, flags);
        self.metrics.tcp_opened(&labels);
        self.metrics.tcp_closed(&labels, 0, 0);
    }
}

/// A connection to `to`, made from `source` when given.
pub(crate) async fn connect_from(to: SocketAddr, source: Option<std::net::IpAddr>) -> std::io::Result<TcpStream> {
    let Some(ip) = source else { return TcpStream::connect(to).await };
    let socket = if ip.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.bind(SocketAddr::new(ip, 0))?;
    socket.connect(to).await
}

/// The inbound TCP side: splice an accepted connection to the app (connecting from
/// `source` when given).
pub(crate) fn inbound(
    control: Arc<CompiledConfig>,
    metrics: Arc<MeshMetrics>,
    app: SocketAddr,
    source: Option<std::net::IpAddr>,
) -> impl Fn(ServerIo, Option<Identity>) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync {
    move |io, peer| {
        let (control, metrics) = (control.clone(), metrics.clone());
        Box::pin(async move {
            let service = control.inbound_service.load();
            let labels = TcpLabels::destination(&WorkloadInfo::from(&control.me), service.as_deref(), peer.as_ref());
            let mut io = io;
            match connect_from(app, source).await {
                Ok(mut upstream) => {
                    let _ = upstream.set_nodelay(true);
                    metrics.tcp_opened(&labels);
                    let (received, sent) =
                        tokio::io::copy_bidirectional(&mut io, &mut upstream).await.unwrap_or((0, 0));
                    metrics.tcp_closed(&labels, sent, received);
                }
                Err(e) => {
                    tracing::warn!(%app, error = %e, "tcp: the app refused the connection");
                    let labels = labels.with_flags(ResponseFlags::UPSTREAM_CONNECTION_FAILURE);
                    metrics.tcp_opened(&labels);
                    metrics.tcp_closed(&labels, 0, 0);
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_parse_and_bad_ones_say_why() {
        let f: Forward = "127.0.0.1:27017=mongodb.default:27017".parse().unwrap();
        assert_eq!((f.host.as_str(), f.port), ("mongodb.default", 27017));
        assert!("127.0.0.1:1=mongodb".parse::<Forward>().unwrap_err().to_string().contains("HOST:PORT"));
        assert!("nope=mongodb:1".parse::<Forward>().unwrap_err().to_string().contains("`nope`"));
        assert!("127.0.0.1:1=:5".parse::<Forward>().unwrap_err().to_string().contains("no host"));
    }
}
