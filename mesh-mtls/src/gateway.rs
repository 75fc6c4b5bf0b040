//! A Gateway server's `tls` block as a rustls server: SIMPLE and MUTUAL from files or a
//! `credentialName` (watched, so a rotated pair or CA is served without a restart, as
//! Istio's gateways get them over SDS), OPTIONAL_MUTUAL, ISTIO_MUTUAL with the mesh's own
//! certificate; several servers on one port chosen by the client's SNI.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use mesh_config::api::{Server, ServerTlsMode, ServerTlsSettings};
use rustls::{
    RootCertStore, ServerConfig,
    server::{WebPkiClientVerifier, danger::ClientCertVerifier},
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

use crate::{accept::MtlsAcceptor, store::CertStore};

/// How often credential files are checked for a rotation.
const CREDENTIAL_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// Where `credentialName` secrets live on this machine: `DIR/NAME/tls.crt`, `tls.key`
/// and, for MUTUAL, `ca.crt` (or `DIR/NAME-cacert/ca.crt`), as Istio mounts them.
#[derive(Clone, Debug)]
pub struct Credentials {
    /// The directory of `credentialName` secrets.
    pub dir: PathBuf,
    /// The mesh's own certificate and roots, for ISTIO_MUTUAL.
    pub mesh: Option<(Arc<CertStore>, Arc<RootCertStore>)>,
}

/// Why a Gateway server's `tls` block cannot be served: the port (`context`) and the reason.
#[derive(Debug, thiserror::Error)]
#[error("{context}: {reason}")]
pub struct GatewayTlsError {
    /// The port, as the caller named it.
    pub context: String,
    /// What is wrong.
    pub reason: Box<TlsProblem>,
}

/// What is wrong with a Gateway server's `tls` block.
#[derive(Debug, thiserror::Error)]
pub enum TlsProblem {
    /// A plaintext server on a port with TLS servers.
    #[error("server {0:?} has no TLS settings but shares the port with TLS servers")]
    MixedServers(Vec<String>),
    /// PASSTHROUGH or AUTO_PASSTHROUGH.
    #[error(
        "tls.mode {0:?} (TLS passthrough by SNI) is not supported by this gateway; terminate with SIMPLE or MUTUAL"
    )]
    Passthrough(ServerTlsMode),
    /// ISTIO_MUTUAL without the mesh's certificate.
    #[error("ISTIO_MUTUAL needs the mesh CA")]
    NoMeshCa,
    /// No `credentialName` and no file for `field`.
    #[error("tls.mode {0:?} needs tls.credentialName or tls.{1}")]
    NoFile(ServerTlsMode, &'static str),
    /// MUTUAL without client CAs.
    #[error("tls.mode {0:?} needs client CA certificates (tls.caCertificates or ca.crt)")]
    NoClientCa(ServerTlsMode),
    /// A file that cannot be read.
    #[error("{what} {}: {source}", path.display())]
    Read {
        /// `certificate`, `private key`, `CA certificates`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file that is not what it should hold.
    #[error("{}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// A PEM file without a certificate.
    #[error("{} holds no certificate", .0.display())]
    NoCertificate(PathBuf),
    /// The pair cannot be served.
    #[error("{} and {}: {source}", cert.display(), key.display())]
    Pair {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// Why.
        source: crate::store::StoreError,
    },
    /// rustls refused the configuration.
    #[error("{0}")]
    Tls(String),
}

/// The TLS acceptor for the Gateway `servers` sharing one port (`None` when they terminate
/// no TLS): one configuration when they agree, else one per server picked by the client's
/// SNI among its hosts. `context` names the port in errors.
pub fn acceptor(
    servers: &[&Server],
    creds: &Credentials,
    context: &str,
) -> Result<Option<MtlsAcceptor>, GatewayTlsError> {
    let Some(first) = servers.first() else { return Ok(None) };
    Ok(match first.tls.as_ref().filter(|t| t.mode.is_some()) {
        Some(t) if servers.iter().all(|s| s.tls == first.tls) => {
            Some(MtlsAcceptor::new(server_tls(t, creds, context)?))
        }
        // Several servers, each with its own certificate (Istio's "TLS ingress gateway
        // for multiple hosts"): the client's SNI picks the server by its hosts.
        Some(_) => {
            let mut choices = Vec::new();
            for s in servers {
                let Some(st) = s.tls.as_ref().filter(|st| st.mode.is_some()) else {
                    return Err(fail(context, TlsProblem::MixedServers(s.hosts.clone())));
                };
                // `ns/host` and `./host` name a host; the namespace part is the routes'.
                let hosts = s
                    .hosts
                    .iter()
                    .map(|h| h.split_once('/').map_or(h.as_str(), |(_, h)| h).to_ascii_lowercase())
                    .collect();
                choices.push((hosts, server_tls(st, creds, context)?));
            }
            // No SNI, or one no server names: the first server's, as Envoy's default chain.
            let default = choices[0].1.clone();
            Some(MtlsAcceptor::by_sni(default, choices))
        }
        None => None,
    })
}

fn fail(context: &str, reason: TlsProblem) -> GatewayTlsError {
    GatewayTlsError { context: context.to_string(), reason: Box::new(reason) }
}

fn invalid(context: &str, path: &Path, message: impl ToString) -> GatewayTlsError {
    fail(context, TlsProblem::Invalid { path: path.to_path_buf(), message: message.to_string() })
}

fn read(path: &Path, context: &str, what: &'static str) -> Result<Vec<u8>, GatewayTlsError> {
    std::fs::read(path).map_err(|source| fail(context, TlsProblem::Read { what, path: path.to_path_buf(), source }))
}

fn certs(pem: &[u8], path: &Path, context: &str) -> Result<Vec<CertificateDer<'static>>, GatewayTlsError> {
    let certs: Vec<_> =
        CertificateDer::pem_slice_iter(pem).collect::<Result<_, _>>().map_err(|e| invalid(context, path, e))?;
    if certs.is_empty() {
        return Err(fail(context, TlsProblem::NoCertificate(path.to_path_buf())));
    }
    Ok(certs)
}

/// The rustls configuration for a server's `tls` block.
pub fn server_tls(
    t: &ServerTlsSettings,
    creds: &Credentials,
    context: &str,
) -> Result<Arc<ServerConfig>, GatewayTlsError> {
    let tls = |e: &dyn std::fmt::Display| fail(context, TlsProblem::Tls(e.to_string()));
    let provider = crate::store::provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(&e))?;
    let mode = t.mode.unwrap_or(ServerTlsMode::Simple);
    let mut config = match mode {
        ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough => {
            return Err(fail(context, TlsProblem::Passthrough(mode)));
        }
        ServerTlsMode::IstioMutual => {
            let (store, roots) = creds.mesh.clone().ok_or_else(|| fail(context, TlsProblem::NoMeshCa))?;
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider).build().map_err(|e| tls(&e))?;
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
                    let field = |v: &Option<String>, f: &'static str| {
                        v.as_deref().map(PathBuf::from).ok_or_else(|| fail(context, TlsProblem::NoFile(mode, f)))
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
                .map_err(|e| invalid(context, &key_path, e))?;
            let store = CertStore::from_files(&cert_path, &key_path).map_err(|source| {
                fail(context, TlsProblem::Pair { cert: cert_path.clone(), key: key_path.clone(), source })
            })?;
            store.watch_files(cert_path.clone(), key_path.clone(), CREDENTIAL_POLL);
            let builder = if mode == ServerTlsMode::Simple {
                builder.with_no_client_auth()
            } else {
                let ca_path = ca_path.ok_or_else(|| fail(context, TlsProblem::NoClientCa(mode)))?;
                let optional = mode == ServerTlsMode::OptionalMutual;
                let first = client_verifier(&ca_path, optional, &provider, context)?;
                let verifier = Arc::new(ReloadingVerifier { current: std::sync::RwLock::new(first) });
                verifier.watch(ca_path, optional, provider, context.to_string());
                builder.with_client_cert_verifier(verifier)
            };
            builder.with_cert_resolver(store)
        }
    };
    config.alpn_protocols = crate::config::ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The client-certificate check of a MUTUAL or OPTIONAL_MUTUAL server: `path`'s CAs.
fn client_verifier(
    path: &Path,
    optional: bool,
    provider: &Arc<rustls::crypto::CryptoProvider>,
    context: &str,
) -> Result<Arc<dyn ClientCertVerifier>, GatewayTlsError> {
    let mut roots = RootCertStore::empty();
    for c in certs(&read(path, context, "CA certificates")?, path, context)? {
        roots.add(c).map_err(|e| invalid(context, path, e))?;
    }
    let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    let v = if optional { v.allow_unauthenticated() } else { v };
    v.build().map_err(|e| fail(context, TlsProblem::Tls(e.to_string())))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn server(v: serde_json::Value) -> Server {
        serde_json::from_value(v).unwrap()
    }

    /// `DIR/NAME/tls.crt` and `tls.key`, self-signed for `host`.
    fn credential(dir: &Path, name: &str, host: &str) {
        let cert = rcgen::generate_simple_self_signed(vec![host.to_string()]).unwrap();
        std::fs::create_dir_all(dir.join(name)).unwrap();
        std::fs::write(dir.join(name).join("tls.crt"), cert.cert.pem()).unwrap();
        std::fs::write(dir.join(name).join("tls.key"), cert.signing_key.serialize_pem()).unwrap();
    }

    #[tokio::test]
    async fn a_ports_servers_as_one_acceptor() {
        let dir = tempfile::tempdir().unwrap();
        let creds = Credentials { dir: dir.path().to_path_buf(), mesh: None };
        let plain =
            server(serde_json::json!({"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}));
        assert!(acceptor(&[&plain], &creds, "port 80").unwrap().is_none());
        assert!(acceptor(&[], &creds, "port 80").unwrap().is_none());

        let https = |host: &str, cred: &str| {
            server(serde_json::json!({
                "port": {"number": 443, "name": "https", "protocol": "HTTPS"},
                "hosts": [host],
                "tls": {"mode": "SIMPLE", "credentialName": cred},
            }))
        };
        credential(dir.path(), "bookinfo-cert", "bookinfo.example");
        credential(dir.path(), "other-cert", "other.example");
        let (a, b) = (https("bookinfo.example", "bookinfo-cert"), https("ns/other.example", "other-cert"));
        assert!(acceptor(&[&a], &creds, "port 443").unwrap().is_some());
        // Two certificates on one port: chosen by SNI.
        assert!(acceptor(&[&a, &b], &creds, "port 443").unwrap().is_some());
        // A missing secret names its file; a TLS port shared with a plaintext server is refused.
        let missing = acceptor(&[&https("x.example", "nope")], &creds, "port 443").unwrap_err();
        assert!(matches!(&*missing.reason, TlsProblem::Read { what: "certificate", .. }), "{missing}");
        let missing = missing.to_string();
        assert!(missing.contains("port 443") && missing.contains("nope/tls.crt"), "{missing}");
        let mixed = acceptor(&[&a, &plain], &creds, "port 443").unwrap_err().to_string();
        assert!(mixed.contains("no TLS settings"), "{mixed}");
        // Not supported here, or missing what it needs: said so.
        let pass = server(serde_json::json!({
            "port": {"number": 443, "name": "tls", "protocol": "TLS"}, "hosts": ["*"], "tls": {"mode": "PASSTHROUGH"},
        }));
        assert!(acceptor(&[&pass], &creds, "p").unwrap_err().to_string().contains("passthrough"));
        let istio = server(serde_json::json!({
            "port": {"number": 15443, "name": "tls", "protocol": "TLS"}, "hosts": ["*"], "tls": {"mode": "ISTIO_MUTUAL"},
        }));
        assert!(acceptor(&[&istio], &creds, "p").unwrap_err().to_string().contains("ISTIO_MUTUAL needs the mesh CA"));
        let mutual = server(serde_json::json!({
            "port": {"number": 443, "name": "https", "protocol": "HTTPS"}, "hosts": ["*"],
            "tls": {"mode": "MUTUAL", "credentialName": "bookinfo-cert"},
        }));
        assert!(acceptor(&[&mutual], &creds, "p").unwrap_err().to_string().contains("needs client CA certificates"));
    }
}
