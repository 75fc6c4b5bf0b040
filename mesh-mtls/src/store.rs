//! The workload's current certificate, swapped on rotation. New handshakes use the new
//! certificate; established connections keep theirs, so rotation fails no request.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use arc_swap::ArcSwap;
use mesh_core::Identity;
use rustls::{
    client::ResolvesClientCert,
    crypto::CryptoProvider,
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

use crate::ca::{CertificateAuthority, IssuedCert};

/// Why a certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Files.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
    /// PEM or key problems.
    #[error("{0}")]
    Invalid(String),
    /// rustls refused the key.
    #[error(transparent)]
    Tls(#[from] rustls::Error),
}

/// The current certificate and key of a workload.
#[derive(Debug)]
pub struct CertStore {
    current: ArcSwap<CertifiedKey>,
    provider: Arc<CryptoProvider>,
}

/// The ring crypto provider every mesh TLS configuration uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certified(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, StoreError> {
    Ok(CertifiedKey::from_der(chain, key, provider)?)
}

impl CertStore {
    /// A store holding `cert`.
    pub fn new(cert: &IssuedCert) -> Result<Arc<Self>, StoreError> {
        let provider = provider();
        let key = certified(cert.chain.clone(), cert.key(), &provider)?;
        Ok(Arc::new(Self { current: ArcSwap::from_pointee(key), provider }))
    }

    /// A store loaded from PEM files (cert-manager, SPIRE): the chain and the key.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Arc<Self>, StoreError> {
        let provider = provider();
        let loaded = load_files(cert, key, &provider)?;
        Ok(Arc::new(Self { current: ArcSwap::from_pointee(loaded), provider }))
    }

    /// Replace the certificate.
    pub fn set(&self, cert: &IssuedCert) -> Result<(), StoreError> {
        self.current.store(Arc::new(certified(cert.chain.clone(), cert.key(), &self.provider)?));
        Ok(())
    }

    /// The certificate in use.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }

    /// The identity of the certificate in use.
    pub fn identity(&self) -> Option<Identity> {
        self.current().cert.first().and_then(crate::verify::spiffe_identity)
    }

    /// Keep the certificate fresh from `ca`: re-issue when two thirds of its lifetime
    /// have passed. The task ends when the store is dropped.
    pub fn rotate_from(
        self: &Arc<Self>,
        ca: Arc<CertificateAuthority>,
        identity: Identity,
        ttl: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(ttl.mul_f64(2.0 / 3.0)).await;
                let Some(store) = weak.upgrade() else { return };
                match ca
                    .issue(&identity, ttl)
                    .map_err(|e| e.to_string())
                    .and_then(|c| store.set(&c).map_err(|e| e.to_string()))
                {
                    Ok(()) => tracing::info!(%identity, "workload certificate rotated"),
                    Err(e) => tracing::error!(%identity, error = %e, "certificate rotation failed; retrying"),
                }
            }
        })
    }

    /// Reload the certificate when its files change (checked every `every`; a broken
    /// pair keeps the last good one in force).
    pub fn watch_files(self: &Arc<Self>, cert: PathBuf, key: PathBuf, every: Duration) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let stamp = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
            let mut last = (stamp(&cert), stamp(&key));
            loop {
                tokio::time::sleep(every).await;
                let Some(store) = weak.upgrade() else { return };
                let now = (stamp(&cert), stamp(&key));
                if now == last {
                    continue;
                }
                match load_files(&cert, &key, &store.provider) {
                    Ok(loaded) => {
                        store.current.store(Arc::new(loaded));
                        last = now;
                        tracing::info!(cert = %cert.display(), "certificate reloaded from files");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "certificate files are not usable yet; keeping the current one")
                    }
                }
            }
        })
    }

    /// When the certificate in use expires.
    pub fn not_after(&self) -> Option<SystemTime> {
        let cert = self.current();
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.cert.first()?.as_ref()).ok()?;
        let secs = parsed.validity().not_after.timestamp();
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
    }
}

fn load_files(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, StoreError> {
    let io = |p: &Path| {
        let path = p.display().to_string();
        move |source| StoreError::Io { path, source }
    };
    let cert_pem = std::fs::read(cert).map_err(io(cert))?;
    let key_pem = std::fs::read(key).map_err(io(key))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| StoreError::Invalid(format!("{}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(StoreError::Invalid(format!("{}: no certificate", cert.display())));
    }
    let key =
        PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| StoreError::Invalid(format!("{}: {e}", key.display())))?;
    certified(chain, key, provider)
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ResolvesClientCert for CertStore {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
