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
