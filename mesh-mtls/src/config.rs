//! rustls configurations for the mesh: TLS 1.3 and 1.2, the ring provider, ALPN h2 and
//! http/1.1, client certificates required by servers, SPIFFE secure naming on clients.

use std::sync::Arc;

use mesh_core::Identity;
use rustls::{ClientConfig, RootCertStore, ServerConfig, server::WebPkiClientVerifier};
use rustls_pki_types::CertificateDer;

use crate::{store::CertStore, verify::SpiffeServerVerifier};

/// ALPN protocols, preferred first.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Why a configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// rustls refused it.
    #[error(transparent)]
    Tls(#[from] rustls::Error),
    /// The client verifier could not be built.
    #[error(transparent)]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// A root store holding the mesh roots.
pub fn roots<'a>(
    certs: impl IntoIterator<Item = &'a CertificateDer<'static>>,
) -> Result<Arc<RootCertStore>, ConfigError> {
    let mut store = RootCertStore::empty();
    for c in certs {
        store.add(c.clone())?;
    }
    Ok(Arc::new(store))
}

/// A server that requires a client certificate signed by `roots`.
pub fn server_config(store: Arc<CertStore>, roots: Arc<RootCertStore>) -> Result<Arc<ServerConfig>, ConfigError> {
    let provider = crate::store::provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone()).build()?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(store);
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// A client presenting the workload certificate that accepts only servers with one of
/// `allowed` identities (empty: any identity signed by `roots`).
pub fn client_config(
    store: Arc<CertStore>,
    roots: Arc<RootCertStore>,
    allowed: Vec<Identity>,
) -> Result<Arc<ClientConfig>, ConfigError> {
    let provider = crate::store::provider();
    let verifier = Arc::new(SpiffeServerVerifier::new(roots, allowed, provider.clone()));
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(store);
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}
