//! The ingress gateway: the Gateway resource's servers (port, hosts, TLS) as listeners,
//! each routing by the VirtualServices bound to the Gateway toward the mesh. The servers'
//! TLS is mesh-mtls's (`mesh_mtls::gateway`).

use std::net::SocketAddr;

use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use mesh_core::{
    BoxBody, BoxError, Snapshot,
    api::{Kind, Resource, Server},
};
pub(crate) use mesh_mtls::gateway::Credentials;
use tower::util::BoxCloneSyncService;

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
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (port, addr) = match s.split_once('=') {
            Some((p, a)) => (Some(p.parse::<u16>().map_err(|e| format!("`{p}` is not a port: {e}"))?), a),
            None => (None, s),
        };
        let addr = addr.parse().map_err(|e| format!("`{addr}`: {e}"))?;
        Ok(Self { port, addr })
    }
}

/// One listener of the gateway.
#[derive(Debug)]
pub(crate) struct Plan {
    /// The Gateway server port (routes are selected by it).
    pub(crate) port: u16,
    pub(crate) addr: SocketAddr,
    /// TLS termination (SIMPLE, MUTUAL, OPTIONAL_MUTUAL, ISTIO_MUTUAL): one server's
    /// settings, or several servers' chosen by the client's SNI among their hosts.
    pub(crate) tls: Option<mesh_mtls::accept::MtlsAcceptor>,
    /// `tls.httpsRedirect`: every request gets a 301 to `https`.
    pub(crate) https_redirect: bool,
}

/// The listeners for `--gateway NS/NAME` and its `--listen` addresses.
pub(crate) fn plan(
    snapshot: &Snapshot,
    gateway: &str,
    listens: &[Listen],
    creds: &Credentials,
) -> Result<Vec<Plan>, String> {
    let (ns, name) = gateway.split_once('/').ok_or_else(|| format!("--gateway `{gateway}` is not NS/NAME"))?;
    let all_servers = servers(snapshot, ns, name)?;
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
            None => {
                return Err(format!(
                    "--listen {}: Gateway {ns}/{name} has servers on ports {ports:?}; say which with --listen PORT={}",
                    l.addr, l.addr
                ));
            }
        };
        let servers: Vec<&Server> = all_servers.iter().filter(|s| s.port.number == u32::from(port)).collect();
        let Some(first) = servers.first() else {
            return Err(format!("--listen {port}={}: Gateway {ns}/{name} has no server on port {port}", l.addr));
        };
        use mesh_core::registry::Protocol;
        let protocol = Protocol::parse(&first.port.protocol);
        if !matches!(protocol, Some(Protocol::Http | Protocol::Https | Protocol::Http2 | Protocol::Grpc)) {
            return Err(format!(
                "Gateway {ns}/{name} port {port}: protocol {} is not served by this gateway (HTTP, HTTPS, HTTP2, GRPC are)",
                first.port.protocol.to_ascii_uppercase()
            ));
        }
        let context = format!("Gateway {ns}/{name} port {port} ({})", first.port.name);
        let tls = mesh_mtls::gateway::acceptor(&servers, creds, &context)?;
        if tls.is_none() && protocol == Some(Protocol::Https) {
            return Err(format!("{context}: HTTPS needs tls settings"));
        }
        let redirect = |s: &Server| s.tls.as_ref().and_then(|t| t.https_redirect).unwrap_or(false);
        if servers.iter().skip(1).any(|s| redirect(s) != redirect(first)) {
            tracing::warn!("{context}: servers sharing the port disagree on httpsRedirect; the first one's is used");
        }
        let https_redirect = redirect(first);
        plans.push(Plan { port, addr: l.addr, tls, https_redirect });
    }
    Ok(plans)
}

/// The servers of the gateway `ns/name`: an Istio Gateway's as written, or a Gateway API
/// Gateway's HTTP and HTTPS listeners as the servers Istio's controller makes of them (an
/// HTTPS listener's first certificateRef is the `credentialName`: a Secret of the Gateway's
/// namespace is `--credential-dir/NAME`, another namespace's, which needs a ReferenceGrant,
/// `--credential-dir/NS/NAME`). The two kinds under one name are refused.
pub(crate) fn servers(snapshot: &Snapshot, ns: &str, name: &str) -> Result<Vec<Server>, String> {
    let istio = snapshot.get(Kind::Gateway, ns, name);
    let api = snapshot.get(Kind::KubernetesGateway, ns, name);
    match (istio.map(|r| &**r), api.map(|r| &**r)) {
        (Some(_), Some(_)) => Err(format!(
            "--gateway {ns}/{name} names two Gateways: the Istio Gateway {ns}/{name} (networking.istio.io) and the Gateway API Gateway {ns}/{name} (gateway.networking.k8s.io); rename one"
        )),
        (Some(Resource::Gateway(gw)), None) => Ok(gw.spec.servers.clone()),
        (None, Some(Resource::KubernetesGateway(gw))) => {
            mesh_route::policy::class_accepted(snapshot, &gw.spec.gateway_class_name)
                .map_err(|e| format!("Gateway {ns}/{name}: {e}"))?;
            let mut out = Vec::new();
            for l in &gw.spec.listeners {
                let tls = match (l.protocol.as_str(), &l.tls) {
                    ("HTTP", _) => None,
                    ("HTTPS", Some(tls)) => {
                        let Some(cert) = tls.certificate_refs.first() else {
                            return Err(format!(
                                "Gateway {ns}/{name} listener {:?}: HTTPS needs certificateRefs",
                                l.name
                            ));
                        };
                        if tls.certificate_refs.len() > 1 {
                            tracing::warn!(
                                "Gateway {ns}/{name} listener {:?}: only the first of {} certificateRefs is served",
                                l.name,
                                tls.certificate_refs.len()
                            );
                        }
                        let credential = match cert.namespace.as_deref() {
                            None => cert.name.clone(),
                            Some(cns) if cns == ns => cert.name.clone(),
                            Some(cns) => {
                                if !snapshot.reference_granted("Gateway", ns, cns, "Secret", &cert.name) {
                                    return Err(format!(
                                        "Gateway {ns}/{name} listener {:?}: Secret {cns}/{} is in another namespace and no ReferenceGrant in {cns} allows Gateways from {ns}",
                                        l.name, cert.name
                                    ));
                                }
                                format!("{cns}/{}", cert.name)
                            }
                        };
                        Some(mesh_core::api::ServerTlsSettings {
                            mode: Some(mesh_core::api::ServerTlsMode::Simple),
                            credential_name: Some(credential),
                            ..Default::default()
                        })
                    }
                    _ => continue, // refused at --listen time, reported by the route table
                };
                out.push(Server {
                    port: mesh_core::api::GatewayPort {
                        number: l.port,
                        protocol: l.protocol.clone(),
                        name: l.name.clone(),
                        ..Default::default()
                    },
                    hosts: vec![l.hostname.clone().unwrap_or_else(|| "*".into())],
                    tls,
                    name: Some(l.name.clone()),
                    ..Default::default()
                });
            }
            Ok(out)
        }
        _ => Err(format!("--gateway {ns}/{name}: no such Gateway in the config")),
    }
}

/// `httpsRedirect`: 301 to the same host and path over https.
pub(crate) fn https_redirect() -> BoxCloneSyncService<Request<Incoming>, Response<BoxBody>, BoxError> {
    BoxCloneSyncService::new(tower::service_fn(|req: Request<Incoming>| {
        let host = mesh_core::request::authority(&req).unwrap_or("").split(':').next().unwrap_or("").to_string();
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let mut rsp = Response::new(mesh_core::body::empty());
        *rsp.status_mut() = StatusCode::MOVED_PERMANENTLY;
        if let Ok(v) = HeaderValue::from_str(&format!("https://{host}{path}")) {
            rsp.headers_mut().insert(header::LOCATION, v);
        }
        std::future::ready(Ok::<_, BoxError>(rsp))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::load::{LoadOptions, load_str};

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
        let err = plan(&snapshot(), "default/gw", &[l("127.0.0.1:9999")], &creds()).unwrap_err();
        assert!(err.contains("say which with --listen PORT=127.0.0.1:9999"), "{err}");
        assert!("x=1.2.3.4:5".parse::<Listen>().is_err());
    }

    const API_GATEWAY: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web, namespace: infra}
spec:
  gatewayClassName: istio
  listeners:
  - {name: http, port: 80, protocol: HTTP}
  - name: https
    port: 443
    protocol: HTTPS
    hostname: secure.example.com
    tls: {certificateRefs: [{name: cert, namespace: certs}]}
"#;

    const GRANT: &str = r#"
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: gateways-may-read, namespace: certs}
spec:
  from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: infra}]
  to: [{group: "", kind: Secret, name: cert}]
"#;

    #[test]
    fn a_gateway_api_gateway_s_listeners_are_servers_and_a_secret_elsewhere_needs_a_grant() {
        let load = |yaml: &str| {
            let loaded = load_str("gw.yaml", yaml, &LoadOptions::default());
            assert!(!loaded.has_errors(), "{}", loaded.report());
            loaded.into_snapshot()
        };
        let err = servers(&load(API_GATEWAY), "infra", "web").unwrap_err();
        assert!(err.contains("Secret certs/cert is in another namespace and no ReferenceGrant in certs"), "{err}");
        let got = servers(&load(&format!("{API_GATEWAY}---{GRANT}")), "infra", "web").unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].port.number, got[0].hosts.as_slice(), got[0].tls.is_none()),
            (80, &["*".to_string()][..], true)
        );
        let tls = got[1].tls.as_ref().unwrap();
        assert_eq!(
            (got[1].hosts[0].as_str(), tls.credential_name.as_deref()),
            ("secure.example.com", Some("certs/cert"))
        );
        // Another controller's class is not ours to serve.
        let theirs = API_GATEWAY.replace("gatewayClassName: istio", "gatewayClassName: nginx");
        let err = servers(&load(&theirs), "infra", "web").unwrap_err();
        assert!(err.contains("GatewayClass \"nginx\" is not defined"), "{err}");
    }

    #[test]
    fn what_cannot_be_served_is_refused_with_the_reason() {
        let l = |s: &str| s.parse::<Listen>().unwrap();
        let err = plan(&snapshot(), "default/gw", &[l("443=127.0.0.1:0")], &creds()).unwrap_err();
        assert!(err.contains("port 443") && err.contains("/nonexistent/missing/tls.crt"), "{err}");
        let err = plan(&snapshot(), "default/gw", &[l("8443=127.0.0.1:0")], &creds()).unwrap_err();
        assert!(err.contains("protocol TLS"), "{err}");
        let err = plan(&snapshot(), "default/nope", &[], &creds()).unwrap_err();
        assert!(err.contains("no such Gateway"), "{err}");
    }
}
