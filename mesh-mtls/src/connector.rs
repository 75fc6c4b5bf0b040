//! The client side for hyper's pooled client: `http://` URIs connect in plaintext,
//! `https://` URIs with mTLS using the workload certificate, accepting only the identities
//! the destination address may have (secure naming, from the registry).

use std::{
    collections::HashMap,
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use arc_swap::ArcSwap;
use http::Uri;
use hyper_util::{
    client::legacy::connect::{Connected, Connection, HttpConnector},
    rt::TokioIo,
};
use std::path::PathBuf;

#[cfg(feature = "config")]
use mesh_config::{
    api::{ClientTlsMode, ClientTlsSettings},
    registry::Registry,
};
use mesh_core::{BoxError, Identity};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::ServerName;
use rustls_pki_types::pem::PemObject;
use tokio::net::TcpStream;
use tokio_rustls::{TlsConnector, client::TlsStream};
use tower_service::Service;

use crate::store::CertStore;

/// Which identities each endpoint address may present: the service accounts of every
/// service the address backs, in `trust_domain`.
#[cfg(feature = "config")]
pub fn secure_naming(registry: &Registry) -> HashMap<SocketAddr, Vec<Identity>> {
    let mut out: HashMap<SocketAddr, Vec<Identity>> = HashMap::new();
    for svc in registry.services() {
        let accounts: Vec<Identity> =
            svc.endpoints.values().flat_map(|eps| eps.iter()).filter_map(|e| e.identity.clone()).collect();
        for e in svc.endpoints.values().flat_map(|eps| eps.iter()) {
            let ids = out.entry(e.address).or_default();
            for a in &accounts {
                if !ids.contains(a) {
                    ids.push(a.clone());
                }
            }
        }
    }
    out
}

/// TLS origination toward a server outside the mesh (DestinationRule `tls` SIMPLE or
/// MUTUAL): the server is verified by name against `caCertificates` (or the Mozilla roots),
/// and MUTUAL presents the given client certificate.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Origination {
    /// Name sent as SNI and verified: `sni`, else `subjectAltNames[0]`, else the host.
    pub server_name: String,
    /// CA bundle file.
    pub ca_certificates: Option<PathBuf>,
    /// Client certificate chain file (MUTUAL).
    pub client_certificate: Option<PathBuf>,
    /// Client key file (MUTUAL).
    pub private_key: Option<PathBuf>,
    /// Skip server verification (`insecureSkipVerify`).
    pub insecure_skip_verify: bool,
}

impl Origination {
    /// From a DestinationRule's `tls` for the destination `host`; `None` unless the mode is
    /// SIMPLE or MUTUAL.
    #[cfg(feature = "config")]
    pub fn from_settings(tls: &ClientTlsSettings, host: &str) -> Option<Self> {
        if !matches!(tls.mode, Some(ClientTlsMode::Simple | ClientTlsMode::Mutual)) {
            return None;
        }
        let server_name =
            tls.sni.clone().or_else(|| tls.subject_alt_names.first().cloned()).unwrap_or_else(|| host.to_string());
        Some(Self {
            server_name,
            ca_certificates: tls.ca_certificates.as_ref().map(PathBuf::from),
            client_certificate: tls.client_certificate.as_ref().map(PathBuf::from),
            private_key: tls.private_key.as_ref().map(PathBuf::from),
            insecure_skip_verify: tls.insecure_skip_verify == Some(true),
        })
    }

    fn client_config(&self) -> Result<Arc<ClientConfig>, BoxError> {
        let provider = crate::store::provider();
        let mut roots = RootCertStore::empty();
        match &self.ca_certificates {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
                for c in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
                    roots.add(c.map_err(|e| format!("{}: {e}", path.display()))?)?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let builder = ClientConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
        let builder = if self.insecure_skip_verify {
            builder.dangerous().with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
        } else {
            builder.with_root_certificates(roots)
        };
        let mut config = match (&self.client_certificate, &self.private_key) {
            (Some(cert), Some(key)) => {
                let store = CertStore::from_files(cert, key)?;
                builder.with_client_cert_resolver(store)
            }
            _ => builder.with_no_client_auth(),
        };
        config.alpn_protocols = crate::config::ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

/// `insecureSkipVerify: true`.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &[rustls_pki_types::CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls_pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls_pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

struct Tls {
    store: Arc<CertStore>,
    roots: Arc<RootCertStore>,
    naming: Arc<ArcSwap<HashMap<SocketAddr, Vec<Identity>>>>,
    configs: Mutex<HashMap<Vec<Identity>, Arc<ClientConfig>>>,
}

/// Origination settings by endpoint address, and their built configurations.
#[derive(Default)]
struct Originations {
    by_addr: ArcSwap<HashMap<SocketAddr, Origination>>,
    configs: Mutex<HashMap<Origination, Arc<ClientConfig>>>,
}

impl Tls {
    fn config(&self, addr: SocketAddr) -> Result<Arc<ClientConfig>, BoxError> {
        let allowed = self.naming.load().get(&addr).cloned().unwrap_or_default();
        if allowed.is_empty() {
            return Err(format!("no mesh identity is known for {addr}; refusing mTLS without secure naming").into());
        }
        let mut configs = self.configs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = configs.get(&allowed) {
            return Ok(c.clone());
        }
        let c = crate::config::client_config(self.store.clone(), self.roots.clone(), allowed.clone())?;
        configs.insert(allowed, c.clone());
        Ok(c)
    }
}

/// A connector for `hyper_util`'s legacy client.
#[derive(Clone)]
pub struct MeshConnector {
    http: HttpConnector,
    tls: Option<Arc<Tls>>,
    origination: Arc<Originations>,
    http1_only: bool,
}

impl std::fmt::Debug for MeshConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshConnector").field("mtls", &self.tls.is_some()).finish_non_exhaustive()
    }
}

impl MeshConnector {
    /// Plaintext only.
    pub fn plain() -> Self {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(std::time::Duration::from_secs(10)));
        http.enforce_http(false);
        Self { http, tls: None, origination: Arc::default(), http1_only: false }
    }

    /// The same connector offering only `http/1.1` by ALPN: for upgrade requests
    /// (WebSocket), which HTTP/2 cannot carry.
    #[must_use]
    pub fn http1_only(mut self) -> Self {
        self.http1_only = true;
        self
    }

    /// TLS origination for endpoints of SIMPLE or MUTUAL clusters, by address (replaces
    /// the previous map; call it when the route table changes).
    pub fn set_origination(&self, by_addr: HashMap<SocketAddr, Origination>) {
        self.origination.by_addr.store(Arc::new(by_addr));
    }

    /// mTLS for `https://` URIs with `store`'s certificate, `roots`, and the secure naming
    /// map (swap it when the registry changes).
    pub fn mtls(
        store: Arc<CertStore>,
        roots: Arc<RootCertStore>,
        naming: Arc<ArcSwap<HashMap<SocketAddr, Vec<Identity>>>>,
    ) -> Self {
        let mut c = Self::plain();
        c.tls = Some(Arc::new(Tls { store, roots, naming, configs: Mutex::default() }));
        c
    }
}

impl Service<Uri> for MeshConnector {
    type Response = MeshIo;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<MeshIo, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let https = uri.scheme_str() == Some("https");
        let tls = self.tls.clone();
        let origination = self.origination.clone();
        let http1_only = self.http1_only;
        let alpn = move |config: Arc<ClientConfig>| {
            if !http1_only {
                return config;
            }
            let mut c = (*config).clone();
            c.alpn_protocols = vec![b"http/1.1".to_vec()];
            Arc::new(c)
        };
        let connecting = self.http.call(uri);
        Box::pin(async move {
            let tcp: TcpStream = connecting.await?.into_inner();
            if !https {
                return Ok(MeshIo::Plain(TokioIo::new(tcp)));
            }
            let addr = tcp.peer_addr()?;
            let settings = origination.by_addr.load().get(&addr).cloned();
            if let Some(o) = settings {
                let config = {
                    let mut configs = origination.configs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    match configs.get(&o) {
                        Some(c) => c.clone(),
                        None => {
                            let c = o.client_config()?;
                            configs.insert(o.clone(), c.clone());
                            c
                        }
                    }
                };
                let name = ServerName::try_from(o.server_name.clone())?;
                let stream = TlsConnector::from(alpn(config)).connect(name, tcp).await?;
                return Ok(MeshIo::Tls(Box::new(TokioIo::new(stream))));
            }
            let tls = tls.ok_or("https to a mesh endpoint needs a workload certificate")?;
            let config = alpn(tls.config(addr)?);
            let stream = TlsConnector::from(config).connect(ServerName::IpAddress(addr.ip().into()), tcp).await?;
            Ok(MeshIo::Tls(Box::new(TokioIo::new(stream))))
        })
    }
}

/// A connection made by [`MeshConnector`].
#[derive(Debug)]
pub enum MeshIo {
    /// Plaintext.
    Plain(TokioIo<TcpStream>),
    /// mTLS.
    Tls(Box<TokioIo<TlsStream<TcpStream>>>),
}

impl Connection for MeshIo {
    fn connected(&self) -> Connected {
        match self {
            MeshIo::Plain(_) => Connected::new(),
            MeshIo::Tls(t) => {
                let c = Connected::new();
                if t.inner().get_ref().1.alpn_protocol() == Some(b"h2") { c.negotiated_h2() } else { c }
            }
        }
    }
}

impl hyper::rt::Read for MeshIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MeshIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MeshIo::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for MeshIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MeshIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MeshIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MeshIo::Plain(s) => Pin::new(s).poll_flush(cx),
            MeshIo::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MeshIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MeshIo::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
