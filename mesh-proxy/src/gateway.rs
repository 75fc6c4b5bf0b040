//! The ingress gateway: the Gateway resource's servers (port, hosts, TLS) as listeners,
//! each routing by the VirtualServices bound to the Gateway toward the mesh. The servers'
//! TLS is mesh-mtls's (`mesh_mtls::gateway`).

use std::{net::SocketAddr, sync::Arc};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use mesh_config::{
    Snapshot,
    api::{Kind, Server},
};
use mesh_core::{BoxBody, reply::LocalReply};
pub(crate) use mesh_mtls::gateway::Credentials;
use mesh_mtls::gateway::GatewayTlsError;
use mesh_mtls::peer_auth::Mode;
use mesh_route::policy::{GatewayServersError, gateway_servers};
use tokio::sync::watch;

use crate::{cli::InvalidArg, serve::Accept};

/// `--listen [PORT=]ADDR`: where a Gateway server's port is served on this machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listen {
    /// The Gateway server port this address serves; `None`: the one whose number is the
    /// address's port, or the only one.
    pub port: Option<u16>,
    /// Where it is served.
    pub addr: SocketAddr,
}

impl std::str::FromStr for Listen {
    type Err = InvalidArg;

    fn from_str(s: &str) -> Result<Self, InvalidArg> {
        let (port, addr) = match s.split_once('=') {
            Some((p, a)) => (Some(p.parse::<u16>().map_err(|e| InvalidArg::port(p, e))?), a),
            None => (None, s),
        };
        let addr = addr.parse().map_err(|e| InvalidArg::addr(addr, e))?;
        Ok(Self { port, addr })
    }
}

/// Why the gateway cannot serve as `--gateway`, `--listen` and its Gateway say.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// `--gateway` is not `NS/NAME`.
    #[error("--gateway `{0}` is not NS/NAME")]
    Name(String),
    /// The Gateway's servers cannot be had (no such Gateway, another controller's class...).
    #[error(transparent)]
    Servers(#[from] GatewayServersError),
    /// A `--listen` address whose port is none of the Gateway's, with several to choose.
    #[error("--listen {addr}: Gateway {gateway} has servers on ports {ports:?}; say which with --listen PORT={addr}")]
    WhichPort {
        /// The address.
        addr: SocketAddr,
        /// `NS/NAME`.
        gateway: String,
        /// The Gateway's server ports.
        ports: Vec<u16>,
    },
    /// `--listen PORT=ADDR` for a port the Gateway has no server on.
    #[error("--listen {port}={addr}: Gateway {gateway} has no server on port {port}")]
    NoServer {
        /// The port.
        port: u16,
        /// The address.
        addr: SocketAddr,
        /// `NS/NAME`.
        gateway: String,
    },
    /// A server protocol the gateway does not serve.
    #[error(
        "Gateway {gateway} port {port}: protocol {protocol} is not served by this gateway (HTTP, HTTPS, HTTP2, GRPC are)"
    )]
    Protocol {
        /// `NS/NAME`.
        gateway: String,
        /// The port.
        port: u16,
        /// The protocol, upper case.
        protocol: String,
    },
    /// An HTTPS server without `tls`.
    #[error("{0}: HTTPS needs tls settings")]
    NoTls(String),
    /// The servers' TLS cannot be served.
    #[error(transparent)]
    Tls(#[from] GatewayTlsError),
}

/// One listener of the gateway.
#[derive(Debug)]
pub(crate) struct Plan {
    /// The Gateway server port (routes are selected by it).
    pub(crate) port: u16,
    pub(crate) addr: SocketAddr,
    /// How its connections are accepted and its requests answered.
    pub(crate) serving: Serving,
}

/// What a gateway port serves as its Gateway servers say: swapped whole when they change.
#[derive(Clone)]
pub(crate) struct Serving {
    /// TLS termination (SIMPLE, MUTUAL, OPTIONAL_MUTUAL, ISTIO_MUTUAL: one server's
    /// settings, or several servers' chosen by the client's SNI among their hosts), or
    /// plaintext; `None`: the Gateway has no server on this port any more, and its
    /// connections are closed at once, as Envoy has no listener there.
    pub(crate) accept: Option<Accept>,
    /// `tls.httpsRedirect`: every request gets a 301 to `https`.
    pub(crate) https_redirect: bool,
}

impl std::fmt::Debug for Serving {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let accept = match &self.accept {
            None => "closed",
            Some(Accept::Plain) => "plaintext",
            Some(_) => "tls",
        };
        f.debug_struct("Serving").field("accept", &accept).field("https_redirect", &self.https_redirect).finish()
    }
}

/// The listeners for `--gateway NS/NAME` and its `--listen` addresses.
pub(crate) fn plan(
    snapshot: &Snapshot,
    gateway: &str,
    listens: &[Listen],
    creds: &Credentials,
) -> Result<Vec<Plan>, GatewayError> {
    let (ns, name) = split(gateway)?;
    let all_servers = gateway_servers(snapshot, ns, name)?;
    let ports: Vec<u16> = {
        let mut p: Vec<u16> = all_servers.iter().filter_map(|s| u16::try_from(s.port.number).ok()).collect();
        p.sort_unstable();
        p.dedup();
        p
    };
    let mut plans = Vec::new();
    for l in listens {
        let port = match l.port {
            Some(p) => p,
            None if ports.contains(&l.addr.port()) => l.addr.port(),
            None if ports.len() == 1 => ports[0],
            None => return Err(GatewayError::WhichPort { addr: l.addr, gateway: gateway.to_string(), ports }),
        };
        let serving = serving(&all_servers, port, creds, ns, name)?;
        if serving.accept.is_none() {
            return Err(GatewayError::NoServer { port, addr: l.addr, gateway: gateway.to_string() });
        }
        plans.push(Plan { port, addr: l.addr, serving });
    }
    Ok(plans)
}

fn split(gateway: &str) -> Result<(&str, &str), GatewayError> {
    gateway.split_once('/').ok_or_else(|| GatewayError::Name(gateway.to_string()))
}

/// How `port` is served by the Gateway `ns/name` whose servers are `all_servers`.
fn serving(
    all_servers: &[Server],
    port: u16,
    creds: &Credentials,
    ns: &str,
    name: &str,
) -> Result<Serving, GatewayError> {
    let servers: Vec<&Server> = all_servers.iter().filter(|s| s.port.number == u32::from(port)).collect();
    let Some(first) = servers.first() else {
        return Ok(Serving { accept: None, https_redirect: false });
    };
    use mesh_config::registry::Protocol;
    let protocol = Protocol::parse(&first.port.protocol);
    if !matches!(protocol, Some(Protocol::Http | Protocol::Https | Protocol::Http2 | Protocol::Grpc)) {
        return Err(GatewayError::Protocol {
            gateway: format!("{ns}/{name}"),
            port,
            protocol: first.port.protocol.to_ascii_uppercase(),
        });
    }
    let context = format!("Gateway {ns}/{name} port {port} ({})", first.port.name);
    let tls = mesh_mtls::gateway::acceptor(&servers, creds, &context)?;
    if tls.is_none() && protocol == Some(Protocol::Https) {
        return Err(GatewayError::NoTls(context));
    }
    let redirect = |s: &Server| s.tls.as_ref().and_then(|t| t.https_redirect).unwrap_or(false);
    if servers.iter().skip(1).any(|s| redirect(s) != redirect(first)) {
        tracing::warn!("{context}: servers sharing the port disagree on httpsRedirect; the first one's is used");
    }
    let accept = match tls {
        Some(acceptor) => Accept::Mtls { acceptor, mode: Arc::new(|| Mode::Strict) },
        None => Accept::Plain,
    };
    Ok(Serving { accept: Some(accept), https_redirect: redirect(first) })
}

/// The gateway's listeners kept as the Gateway says, as Istio's gateways take a changed
/// Gateway without a restart: a server added to a port, a new certificate, another TLS
/// mode, `httpsRedirect`, TLS turned on or off. The `--listen` addresses and the ports
/// they serve stay those of the start (they are the pod's ports); a port whose server is
/// gone closes its connections. A Gateway that cannot be served (a missing certificate,
/// an unknown class, two Gateways of one name) is logged, and the last good listeners keep
/// serving.
pub(crate) struct LiveListeners {
    gateway: String,
    creds: Credentials,
    /// The servers in force, to change nothing when a snapshot leaves them as they are
    /// (rebuilt TLS configurations would lose their session tickets).
    applied: std::sync::Mutex<Option<Vec<Server>>>,
    ports: Vec<(u16, Arc<ArcSwap<Serving>>)>,
}

impl LiveListeners {
    /// For the plans `plan` made from `snapshot`; [`LiveListeners::serving`] gives each
    /// listener what it reads.
    pub(crate) fn new(snapshot: &Snapshot, gateway: &str, creds: Credentials, plans: &[Plan]) -> Self {
        let applied = split(gateway).ok().and_then(|(ns, name)| gateway_servers(snapshot, ns, name).ok());
        Self {
            gateway: gateway.to_string(),
            creds,
            applied: std::sync::Mutex::new(applied),
            ports: plans.iter().map(|p| (p.port, Arc::new(ArcSwap::from_pointee(p.serving.clone())))).collect(),
        }
    }

    /// What the listener at `index` (the order of the plans) serves with.
    pub(crate) fn serving(&self, index: usize) -> Arc<ArcSwap<Serving>> {
        self.ports[index].1.clone()
    }

    /// Put `snapshot`'s servers in force; whether anything changed.
    pub(crate) fn update(&self, snapshot: &Snapshot) -> Result<bool, GatewayError> {
        let (ns, name) = split(&self.gateway)?;
        let all_servers = match gateway_servers(snapshot, ns, name) {
            Ok(s) => s,
            // Deleted: Envoy is left with no listeners.
            Err(_)
                if snapshot.get(Kind::Gateway, ns, name).is_none()
                    && snapshot.get(Kind::KubernetesGateway, ns, name).is_none() =>
            {
                Vec::new()
            }
            Err(e) => return Err(e.into()),
        };
        let mut applied = self.applied.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if applied.as_ref() == Some(&all_servers) {
            return Ok(false);
        }
        let next: Vec<Serving> = self
            .ports
            .iter()
            .map(|(port, _)| serving(&all_servers, *port, &self.creds, ns, name))
            .collect::<Result<_, _>>()?;
        for ((port, current), next) in self.ports.iter().zip(next) {
            if next.accept.is_none() {
                tracing::warn!("Gateway {ns}/{name} has no server on port {port} any more: its connections are closed");
            }
            current.store(Arc::new(next));
        }
        *applied = Some(all_servers);
        Ok(true)
    }

    /// Follow `rx`'s snapshots until it closes.
    pub(crate) fn follow(self: Arc<Self>, mut rx: watch::Receiver<Arc<Snapshot>>) -> tokio::task::JoinHandle<()> {
        rx.mark_unchanged();
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let snapshot = rx.borrow_and_update().clone();
                match self.update(&snapshot) {
                    Ok(true) => tracing::info!(gateway = %self.gateway, "gateway listeners updated"),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(
                        gateway = %self.gateway,
                        "{e}; the gateway's listeners keep serving as they were"
                    ),
                }
            }
        })
    }
}

/// The listener's service: `httpsRedirect`'s 301 while the port's servers ask for it, else
/// `inner`. `poll_ready` forwards; `call` decides.
#[derive(Clone)]
pub(crate) struct RedirectOr<S> {
    serving: Arc<ArcSwap<Serving>>,
    inner: S,
}

impl<S> RedirectOr<S> {
    pub(crate) fn new(serving: Arc<ArcSwap<Serving>>, inner: S) -> Self {
        Self { serving, inner }
    }
}

impl<S> tower::Service<Request<Incoming>> for RedirectOr<S>
where
    S: tower::Service<Request<Incoming>, Response = Response<BoxBody>>,
{
    type Response = Response<BoxBody>;
    type Error = S::Error;
    type Future = futures_util::future::Either<std::future::Ready<Result<Response<BoxBody>, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        if self.serving.load().https_redirect {
            futures_util::future::Either::Left(std::future::ready(Ok(https_redirect(&req))))
        } else {
            futures_util::future::Either::Right(self.inner.call(req))
        }
    }
}

/// `httpsRedirect`: 301 to the same host and path over https.
fn https_redirect<B>(req: &Request<B>) -> Response<BoxBody> {
    let host = mesh_core::request::authority(req).unwrap_or("").split(':').next().unwrap_or("");
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let reply = match HeaderValue::from_str(&format!("https://{host}{path}")) {
        Ok(location) => LocalReply::redirect(StatusCode::MOVED_PERMANENTLY, location),
        Err(_) => LocalReply::direct(StatusCode::MOVED_PERMANENTLY, Bytes::new(), HeaderMap::new()),
    };
    reply.into_response(mesh_core::request::is_grpc(req))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_config::load::{LoadOptions, load_str};

    const GATEWAY: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: SIMPLE, credentialName: missing}
  - port: {number: 8443, name: passthrough, protocol: TLS}
    hosts: ["*"]
    tls: {mode: PASSTHROUGH}
"#;

    fn snapshot() -> Snapshot {
        let loaded = load_str("gw.yaml", GATEWAY, &LoadOptions::default());
        assert!(!loaded.has_errors(), "{}", loaded.report());
        loaded.into_snapshot()
    }

    fn creds() -> Credentials {
        Credentials { dir: std::path::PathBuf::from("/nonexistent"), mesh: None }
    }

    #[test]
    fn listen_addresses_map_to_server_ports() {
        let l = |s: &str| s.parse::<Listen>().unwrap();
        let plans = plan(&snapshot(), "default/gw", &[l("127.0.0.1:80"), l("80=127.0.0.1:8080")], &creds()).unwrap();
        assert_eq!(plans.iter().map(|p| p.port).collect::<Vec<_>>(), [80, 80]);
        let err = plan(&snapshot(), "default/gw", &[l("127.0.0.1:9999")], &creds()).unwrap_err().to_string();
        assert!(err.contains("say which with --listen PORT=127.0.0.1:9999"), "{err}");
        assert!("x=1.2.3.4:5".parse::<Listen>().is_err());
    }

    #[test]
    fn live_listeners_change_with_the_gateway_and_keep_the_last_good_one() {
        let load = |servers: &str| {
            let yaml = format!(
                "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw}}\nspec:\n  servers:\n{servers}"
            );
            let loaded = load_str("gw.yaml", &yaml, &LoadOptions::default());
            assert!(!loaded.has_errors(), "{}", loaded.report());
            loaded.into_snapshot()
        };
        let http = "  - {port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}\n";
        let redirect =
            "  - {port: {number: 80, name: http, protocol: HTTP}, hosts: ['*'], tls: {httpsRedirect: true}}\n";
        let broken = "  - {port: {number: 80, name: https, protocol: HTTPS}, hosts: ['*'], tls: {mode: SIMPLE, credentialName: missing}}\n";
        let first = load(http);
        let l: Listen = "80=127.0.0.1:0".parse().unwrap();
        let plans = plan(&first, "default/gw", &[l], &creds()).unwrap();
        let live = LiveListeners::new(&first, "default/gw", creds(), &plans);
        let now = || format!("{:?}", live.serving(0).load());
        assert_eq!(now(), "Serving { accept: \"plaintext\", https_redirect: false }");
        assert!(matches!(live.update(&first), Ok(false)), "the same servers change nothing");

        assert!(matches!(live.update(&load(redirect)), Ok(true)));
        assert_eq!(now(), "Serving { accept: \"plaintext\", https_redirect: true }");
        let err = live.update(&load(broken)).unwrap_err().to_string();
        assert!(err.contains("port 80") && err.contains("/nonexistent/missing/tls.crt"), "{err}");
        assert_eq!(now(), "Serving { accept: \"plaintext\", https_redirect: true }", "the last good one serves");
        // Another port only: this one closes. The Gateway deleted: the same.
        let elsewhere = "  - {port: {number: 81, name: http, protocol: HTTP}, hosts: ['*']}\n";
        assert!(matches!(live.update(&load(elsewhere)), Ok(true)));
        assert_eq!(now(), "Serving { accept: \"closed\", https_redirect: false }");
        assert!(matches!(live.update(&first), Ok(true)));
        assert!(matches!(live.update(&Snapshot::default()), Ok(true)));
        assert_eq!(now(), "Serving { accept: \"closed\", https_redirect: false }");
    }

    #[test]
    fn what_cannot_be_served_is_refused_with_the_reason() {
        let l = |s: &str| s.parse::<Listen>().unwrap();
        let err = plan(&snapshot(), "default/gw", &[l("443=127.0.0.1:0")], &creds()).unwrap_err().to_string();
        assert!(err.contains("port 443") && err.contains("/nonexistent/missing/tls.crt"), "{err}");
        let err = plan(&snapshot(), "default/gw", &[l("8443=127.0.0.1:0")], &creds()).unwrap_err().to_string();
        assert!(err.contains("protocol TLS"), "{err}");
        let err = plan(&snapshot(), "default/nope", &[], &creds()).unwrap_err().to_string();
        assert!(err.contains("no such Gateway"), "{err}");
    }
}
