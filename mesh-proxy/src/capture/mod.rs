//! Transparent capture: the app needs no proxy settings and cannot go around the sidecar.
//! [`rules`] holds the iptables rules as data (what is captured, rendered for IPv4 and
//! IPv6), [`iptables`] the `mesh-sidecar iptables` step that puts them in force in a pod's
//! network namespace, as Istio's `istio-iptables` init container does.

pub mod dns;
pub(crate) mod inbound;
pub mod iptables;
pub(crate) mod outbound;
pub mod rules;
pub mod sniff;

use std::{io, net::SocketAddr, os::fd::AsFd};

/// Where a connection was addressed before a capture rule redirected it here
/// (`SO_ORIGINAL_DST`, `IP6T_SO_ORIGINAL_DST` for IPv6): read once per connection, never
/// per request. `local` (the connection's local address) gives the family; a connection no
/// rule redirected gives its own local address, or `ENOENT` where the kernel tracks none.
#[cfg(target_os = "linux")]
pub fn original_dst(socket: &(impl AsFd + ?Sized), local: SocketAddr) -> io::Result<SocketAddr> {
    use rustix::net::sockopt;
    Ok(match local {
        SocketAddr::V4(_) => SocketAddr::V4(sockopt::ip_original_dst(socket)?),
        SocketAddr::V6(_) => SocketAddr::V6(sockopt::ipv6_original_dst(socket)?),
    })
}

/// A capture listener's accept loop, until `stop`, then the wait for its open connections:
/// each connection a rule redirected here goes to `handle` with its client, its original
/// destination, the HTTP server settings, the gate and the stop signal. A connection no
/// rule redirected (a client that called the capture port itself) is closed.
pub(crate) async fn accept_captured<F, Fut>(
    name: &'static str,
    listener: tokio::net::TcpListener,
    gate: std::sync::Arc<crate::conn::Gate>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    handle: F,
) where
    F: Fn(tokio::net::TcpStream, SocketAddr, SocketAddr, Connection) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    use std::sync::Arc;
    let Ok(local) = listener.local_addr() else { return };
    gate.bound(local);
    let builder = Arc::new(crate::serve::http_builder());
    let open = Arc::new(crate::conn::OpenConnections::default());
    while let Some((tcp, client, permit)) = gate.next(&listener, &mut stop).await {
        let _ = tcp.set_nodelay(true);
        let (handle, conn, guard) = (
            handle.clone(),
            Connection { builder: builder.clone(), gate: gate.clone(), stop: stop.clone() },
            open.open(),
        );
        tokio::spawn(async move {
            let _held = (guard, permit);
            // Once per connection, never per request.
            match original_dst(&tcp, local) {
                Ok(dst) if dst != local => handle(tcp, client, dst, conn).await,
                Ok(_) | Err(_) => {
                    tracing::debug!(listener = name, %client, "a connection no capture rule sent here: closed")
                }
            }
        });
    }
    drop(listener);
    open.closed().await;
}

/// What a captured connection is served with.
pub(crate) struct Connection {
    pub(crate) builder: std::sync::Arc<hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>>,
    pub(crate) gate: std::sync::Arc<crate::conn::Gate>,
    pub(crate) stop: tokio::sync::watch::Receiver<bool>,
}
