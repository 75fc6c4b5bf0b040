//! Certificate checks with SPIFFE identities: the client verifies that the server is one of
//! the identities the destination may have (Istio's secure naming), not a DNS name; both
//! sides read the peer's identity from its URI SAN.

use std::sync::Arc;

use mesh_core::Identity;
use rustls::{
    CertificateError, DigitallySignedStruct, Error, RootCertStore, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature},
    server::ParsedCertificate,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

/// The SPIFFE identity in a certificate's URI SAN.
pub fn spiffe_identity(cert: &CertificateDer<'_>) -> Option<Identity> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let san = parsed.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        x509_parser::extensions::GeneralName::URI(uri) if uri.starts_with("spiffe://") => uri.parse().ok(),
        _ => None,
    })
}

/// Verifies a server's chain against the mesh root and its identity against an allowed set.
#[derive(Debug)]
pub struct SpiffeServerVerifier {
    roots: Arc<RootCertStore>,
    allowed: Vec<Identity>,
    provider: Arc<CryptoProvider>,
}

impl SpiffeServerVerifier {
    /// Accept servers whose identity is in `allowed` (an empty list accepts any identity
    /// the mesh root signed).
    pub fn new(roots: Arc<RootCertStore>, allowed: Vec<Identity>, provider: Arc<CryptoProvider>) -> Self {
        Self { roots, allowed, provider }
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        let identity = spiffe_identity(end_entity).ok_or(Error::InvalidCertificate(CertificateError::BadEncoding))?;
        if !self.allowed.is_empty() && !self.allowed.contains(&identity) {
            tracing::warn!(%identity, allowed = ?self.allowed.iter().map(ToString::to_string).collect::<Vec<_>>(), "server identity not allowed for this destination");
            return Err(Error::InvalidCertificate(CertificateError::NotValidForName));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
