//! The ingress gateway: the Gateway resource's servers (port, hosts, TLS) as listeners,
//! each routing by the VirtualServices bound to the Gateway toward the mesh.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use mesh_core::{
    BoxBody, BoxError, Snapshot,
    api::{Kind, Resource, Server, ServerTlsMode, ServerTlsSettings},
};
use rustls::{
    RootCertStore, ServerConfig,
    server::{WebPkiClientVerifier, danger::ClientCertVerifier},
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tower::util::BoxCloneSyncService;

/// How often credential files are checked for a rotation.
const CREDENTIAL_POLL: std::time::Duration = std::time::Duration::from_secs(1);

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

/// Where `credentialName` secrets live on this machine: `DIR/NAME/tls.crt`, `tls.key`
/// and, for MUTUAL, `ca.crt` (or `DIR/NAME-cacert/ca.crt`), as Istio mounts them.
#[derive(Clone, Debug)]
pub(crate) struct Credentials {
    pub(crate) dir: PathBuf,
    /// The mesh's own certificate and roots, for ISTIO_MUTUAL.
    pub(crate) mesh: Option<(Arc<mesh_mtls::store::CertStore>, Arc<RootCertStore>)>,
}

/// The listeners for `--gateway NS/NAME` and its `--listen` addresses.
pub(crate) fn plan(
    snapshot: &Snapshot,
    gateway: &str,
    listens: &[Listen],
    creds: &Credentials,
) -> Result<Vec<Plan>, String> {
    let (ns, name) = gateway.split_once('/').ok_or_else(|| format!("--gateway `{gateway}` is not NS/NAME"))?;
    let Some(resource) = snapshot.get(Kind::Gateway, ns, name) else {
        return Err(format!("--gateway {ns}/{name}: no such Gateway in the config"));
    };
    let Resource::Gateway(gw) = &**resource else { unreachable!("a Gateway key holds a Gateway") };
    let ports: Vec<u16> = {
        let mut p: Vec<u16> = gw.spec.servers.iter().filter_map(|s| u16::try_from(s.port.number).ok()).collect();
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
        let servers: Vec<&Server> = gw.spec.servers.iter().filter(|s| s.port.number == u32::from(port)).collect();
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
        let tls = match first.tls.as_ref().filter(|t| t.mode.is_some()) {
            Some(t) if servers.iter().all(|s| s.tls == first.tls) => {
                Some(mesh_mtls::accept::MtlsAcceptor::new(server_tls(t, creds, &context)?))
            }
            // Several servers, each with its own certificate (Istio's "TLS ingress gateway
            // for multiple hosts"): the client's SNI picks the server by its hosts.
            Some(_) => {
                let mut choices = Vec::new();
                for s in &servers {
                    let Some(st) = s.tls.as_ref().filter(|st| st.mode.is_some()) else {
                        return Err(format!(
                            "{context}: server {:?} has no TLS settings but shares the port with TLS servers",
                            s.hosts
                        ));
                    };
                    // `ns/host` and `./host` name a host; the namespace part is the routes'.
                    let hosts = s
                        .hosts
                        .iter()
                        .map(|h| h.split_once('/').map_or(h.as_str(), |(_, h)| h).to_ascii_lowercase())
                        .collect();
                    choices.push((hosts, server_tls(st, creds, &context)?));
                }
                // No SNI, or one no server names: the first server's, as Envoy's default chain.
                let default = choices[0].1.clone();
                Some(mesh_mtls::accept::MtlsAcceptor::by_sni(default, choices))
            }
            None if protocol == Some(Protocol::Https) => return Err(format!("{context}: HTTPS needs tls settings")),
            None => None,
        };
        let redirect = |s: &Server| s.tls.as_ref().and_then(|t| t.https_redirect).unwrap_or(false);
        if servers.iter().skip(1).any(|s| redirect(s) != redirect(first)) {
            tracing::warn!("{context}: servers sharing the port disagree on httpsRedirect; the first one's is used");
        }
        let https_redirect = redirect(first);
        plans.push(Plan { port, addr: l.addr, tls, https_redirect });
    }
    Ok(plans)
}

fn read(path: &Path, context: &str, field: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{context}: {field} {}: {e}", path.display()))
}

fn certs(pem: &[u8], path: &Path, context: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{context}: {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{context}: {} holds no certificate", path.display()));
    }
    Ok(certs)
}

/// The rustls configuration for a server's `tls` block.
fn server_tls(t: &ServerTlsSettings, creds: &Credentials, context: &str) -> Result<Arc<ServerConfig>, String> {
    let provider = mesh_mtls::store::provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("{context}: {e}"))?;
    let mode = t.mode.unwrap_or(ServerTlsMode::Simple);
    let mut config = match mode {
        ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough => {
            return Err(format!(
                "{context}: tls.mode {mode:?} (TLS passthrough by SNI) is not supported by this gateway; terminate with SIMPLE or MUTUAL"
            ));
        }
        ServerTlsMode::IstioMutual => {
            let (store, roots) =
                creds.mesh.clone().ok_or_else(|| format!("{context}: ISTIO_MUTUAL needs the mesh CA"))?;
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| format!("{context}: {e}"))?;
            builder.with_client_cert_verifier(verifier).with_cert_resolver(store)
        }
        ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual => {
            let (cert_path, key_path, ca_path) = match &t.credential_name {
                Some(name) => {
                    let d = creds.dir.join(name);
                    let ca = [d.join("ca.crt"), creds.dir.join(format!("{name}-cacert")).join("ca.crt")]
                        .into_iter()
                        .find(|p| p.exists());
                    (d.join("tls.crt"), d.join("tls.key"), ca)
                }
                None => {
                    let field = |v: &Option<String>, f: &str| {
                        v.as_deref()
                            .map(PathBuf::from)
                            .ok_or_else(|| format!("{context}: tls.mode {mode:?} needs tls.credentialName or tls.{f}"))
                    };
                    (
                        field(&t.server_certificate, "serverCertificate")?,
                        field(&t.private_key, "privateKey")?,
                        t.ca_certificates.as_deref().map(PathBuf::from),
                    )
                }
            };
            // Read now (so a bad pair fails the start with the file's name), then watched:
            // a rotated pair replaces the served one, as Istio's gateways get it over SDS.
            certs(&read(&cert_path, context, "certificate")?, &cert_path, context)?;
            PrivateKeyDer::from_pem_slice(&read(&key_path, context, "private key")?)
                .map_err(|e| format!("{context}: {}: {e}", key_path.display()))?;
            let store = mesh_mtls::store::CertStore::from_files(&cert_path, &key_path)
                .map_err(|e| format!("{context}: {} and {}: {e}", cert_path.display(), key_path.display()))?;
            store.watch_files(cert_path.clone(), key_path.clone(), CREDENTIAL_POLL);
            let builder = if mode == ServerTlsMode::Simple {
                builder.with_no_client_auth()
            } else {
                let ca_path = ca_path.ok_or_else(|| {
                    format!("{context}: tls.mode {mode:?} needs client CA certificates (tls.caCertificates or ca.crt)")
                })?;
                let optional = mode == ServerTlsMode::OptionalMutual;
                let first = client_verifier(&ca_path, optional, &provider, context)?;
                let verifier = Arc::new(ReloadingVerifier { current: std::sync::RwLock::new(first) });
                verifier.watch(ca_path, optional, provider, context.to_string());
                builder.with_client_cert_verifier(verifier)
            };
            builder.with_cert_resolver(store)
        }
    };
    config.alpn_protocols = mesh_mtls::config::ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The client-certificate check of a MUTUAL or OPTIONAL_MUTUAL server: `path`'s CAs.
fn client_verifier(
    path: &Path,
    optional: bool,
    provider: &Arc<rustls::crypto::CryptoProvider>,
    context: &str,
) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let mut roots = RootCertStore::empty();
    for c in certs(&read(path, context, "CA certificates")?, path, context)? {
        roots.add(c).map_err(|e| format!("{context}: {}: {e}", path.display()))?;
    }
    let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    let v = if optional { v.allow_unauthenticated() } else { v };
    v.build().map_err(|e| format!("{context}: {e}"))
}

/// A client-certificate check whose CAs are re-read when their file changes (a rotated
/// Secret's `ca.crt`), as Istio's gateways get `cacert` over SDS: new handshakes use the new
/// CAs, a broken file keeps the last good ones. Like Envoy, it sends no CA names in its
/// certificate request.
#[derive(Debug)]
struct ReloadingVerifier {
    current: std::sync::RwLock<Arc<dyn ClientCertVerifier>>,
}

impl ReloadingVerifier {
    fn get(&self) -> Arc<dyn ClientCertVerifier> {
        self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn watch(
        self: &Arc<Self>,
        path: PathBuf,
        optional: bool,
        provider: Arc<rustls::crypto::CryptoProvider>,
        context: String,
    ) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let stamp = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
            let mut last = stamp(&path);
            loop {
                tokio::time::sleep(CREDENTIAL_POLL).await;
                let Some(this) = weak.upgrade() else { return };
                let now = stamp(&path);
                if now == last {
                    continue;
                }
                match client_verifier(&path, optional, &provider, &context) {
                    Ok(v) => {
                        *this.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = v;
                        last = now;
                        tracing::info!(ca = %path.display(), "client CA certificates reloaded");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "client CA certificates not usable yet; keeping the current ones")
                    }
                }
            }
        });
    }
}

impl ClientCertVerifier for ReloadingVerifier {
    fn offer_client_auth(&self) -> bool {
        self.get().offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.get().client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        self.get().verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.get().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.get().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.get().supported_verify_schemes()
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
        Credentials { dir: PathBuf::from("/nonexistent"), mesh: None }
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
