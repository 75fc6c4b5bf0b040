//! A local certificate authority, like istiod's: a root (created or loaded from files) that
//! issues short-lived workload certificates whose URI SAN is the SPIFFE identity.

use std::{
    path::Path,
    time::{Duration, SystemTime},
};

use mesh_core::Identity;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Istio's default workload certificate lifetime.
pub const DEFAULT_CERT_TTL: Duration = Duration::from_secs(24 * 3600);

/// Why the CA failed.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// Certificate generation or parsing.
    #[error("certificate: {0}")]
    Cert(#[from] rcgen::Error),
    /// Files.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
    /// A time outside what certificates can carry.
    #[error("invalid validity period")]
    Time,
}

/// A certificate with its key, ready for rustls.
#[derive(Clone, Debug)]
pub struct IssuedCert {
    /// Leaf first, then the issuing root.
    pub chain: Vec<CertificateDer<'static>>,
    /// PKCS#8 key.
    pub key_der: Vec<u8>,
    /// End of validity.
    pub not_after: SystemTime,
    /// Start of validity.
    pub not_before: SystemTime,
    /// The leaf as PEM.
    pub cert_pem: String,
    /// The key as PEM.
    pub key_pem: String,
}

impl IssuedCert {
    /// The private key for rustls.
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}

/// The mesh CA.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    root: CertificateDer<'static>,
    root_pem: String,
    key_pem: String,
    trust_domain: String,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority").field("trust_domain", &self.trust_domain).finish_non_exhaustive()
    }
}

fn offset(t: SystemTime) -> Result<time::OffsetDateTime, CaError> {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).map_err(|_| CaError::Time)?;
    time::OffsetDateTime::from_unix_timestamp(i64::try_from(d.as_secs()).map_err(|_| CaError::Time)?)
        .map_err(|_| CaError::Time)
}

impl CertificateAuthority {
    /// A new self-signed root for `trust_domain` (valid ten years).
    pub fn generate(trust_domain: &str) -> Result<Self, CaError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, trust_domain);
        dn.push(DnType::CommonName, "mesh root CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let now = SystemTime::now();
        params.not_before = offset(now - Duration::from_secs(3600))?;
        params.not_after = offset(now + Duration::from_secs(10 * 365 * 24 * 3600))?;
        let cert = params.self_signed(&key)?;
        let root_pem = cert.pem();
        let key_pem = key.serialize_pem();
        Ok(Self {
            root: cert.der().clone(),
            root_pem,
            key_pem,
            issuer: Issuer::new(params, key),
            trust_domain: trust_domain.into(),
        })
    }

    /// A root given as PEM (certificate and key), e.g. from an existing CA.
    pub fn from_pem(cert_pem: &str, key_pem: &str, trust_domain: &str) -> Result<Self, CaError> {
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        let root = rustls_pki_types::pem::PemObject::from_pem_slice(cert_pem.as_bytes())
            .map_err(|_| CaError::Cert(rcgen::Error::CouldNotParseCertificate))?;
        Ok(Self { issuer, root, root_pem: cert_pem.into(), key_pem: key_pem.into(), trust_domain: trust_domain.into() })
    }

    /// Load `root-cert.pem` and `root-key.pem` from `dir`, or create them there (the key
    /// with 0600 permissions).
    pub fn load_or_create(dir: &Path, trust_domain: &str) -> Result<Self, CaError> {
        let cert_path = dir.join("root-cert.pem");
        let key_path = dir.join("root-key.pem");
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| CaError::Io { path, source }
        };
        let load = || -> Result<Self, CaError> {
            let cert = std::fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
            let key = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
            Self::from_pem(&cert, &key, trust_domain)
        };
        if cert_path.exists() && key_path.exists() {
            return load();
        }
        let ca = Self::generate(trust_domain)?;
        // Several sidecars may start at once: the pair is written to a private folder that
        // is renamed into place, so exactly one CA wins and nobody reads half a pair.
        let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(io(parent))?;
        let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let staging = parent.join(format!(".ca-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&staging).map_err(io(&staging))?;
        std::fs::write(staging.join("root-cert.pem"), &ca.root_pem).map_err(io(&staging))?;
        write_private(&staging.join("root-key.pem"), &ca.key_pem).map_err(io(&staging))?;
        if std::fs::rename(&staging, dir).is_ok() {
            return Ok(ca);
        }
        let _ = std::fs::remove_dir_all(&staging);
        if cert_path.exists() && key_path.exists() {
            // Another process won the race.
            return load();
        }
        // `dir` exists with other files in it: write the pair beside them.
        std::fs::write(&cert_path, &ca.root_pem).map_err(io(&cert_path))?;
        write_private(&key_path, &ca.key_pem).map_err(io(&key_path))?;
        Ok(ca)
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The root certificate.
    pub fn root(&self) -> &CertificateDer<'static> {
        &self.root
    }

    /// The root certificate as PEM.
    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    /// A certificate for `identity` valid from now for `ttl`.
    pub fn issue(&self, identity: &Identity, ttl: Duration) -> Result<IssuedCert, CaError> {
        let now = SystemTime::now();
        // A minute of slack for clocks that disagree.
        self.issue_for_period(identity, now - Duration::from_secs(60), now + ttl)
    }

    /// A certificate for `identity` valid in the given period (tests mint expired ones).
    pub fn issue_for_period(
        &self,
        identity: &Identity,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<IssuedCert, CaError> {
        let key = KeyPair::generate()?;
        let params = leaf_params(vec![SanType::URI(identity.to_string().try_into()?)], not_before, not_after)?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(self.issued(cert.pem(), cert.der().clone(), &key, not_before, not_after))
    }

    /// A server certificate for DNS names and IP addresses (the CA's own HTTPS endpoint).
    pub fn issue_server(&self, names: &[String], ttl: Duration) -> Result<IssuedCert, CaError> {
        let now = SystemTime::now();
        let (not_before, not_after) = (now - Duration::from_secs(60), now + ttl);
        let sans = names
            .iter()
            .map(|n| match n.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => Ok(SanType::DnsName(n.clone().try_into()?)),
            })
            .collect::<Result<Vec<_>, rcgen::Error>>()?;
        let key = KeyPair::generate()?;
        let cert = leaf_params(sans, not_before, not_after)?.signed_by(&key, &self.issuer)?;
        Ok(self.issued(cert.pem(), cert.der().clone(), &key, not_before, not_after))
    }

    /// Sign a certificate signing request (PEM, its signature checked) for `identity`:
    /// only the request's public key is used, the identity is the CA's to say. Returns the
    /// chain as PEM, leaf first, and the end of validity.
    pub fn sign_request(&self, csr_pem: &str, identity: &Identity, ttl: Duration) -> Result<SignedChain, CaError> {
        let now = SystemTime::now();
        let (not_before, not_after) = (now - Duration::from_secs(60), now + ttl);
        let mut csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)?;
        csr.params = leaf_params(vec![SanType::URI(identity.to_string().try_into()?)], not_before, not_after)?;
        let cert = csr.signed_by(&self.issuer)?;
        Ok(SignedChain { pems: vec![cert.pem(), self.root_pem.clone()], not_after })
    }

    fn issued(
        &self,
        cert_pem: String,
        der: CertificateDer<'static>,
        key: &KeyPair,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> IssuedCert {
        IssuedCert {
            chain: vec![der, self.root.clone()],
            key_der: key.serialize_der(),
            not_after,
            not_before,
            cert_pem,
            key_pem: key.serialize_pem(),
        }
    }
}

/// A signed chain as PEM, leaf first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedChain {
    /// Leaf, then the root.
    pub pems: Vec<String>,
    /// End of the leaf's validity.
    pub not_after: SystemTime,
}

/// A leaf certificate's parameters: no subject (Istio's workload certificates carry none;
/// the identity is the SAN), both TLS usages, the period.
fn leaf_params(
    sans: Vec<SanType>,
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<CertificateParams, CaError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = sans;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = offset(not_before)?;
    params.not_after = offset(not_after)?;
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// Write a secret file readable by its owner only.
pub fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
        f.write_all(contents.as_bytes())?;
        // The mode applies at creation only: make an existing file private too.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
    }
    #[cfg(not(unix))]
    {
        std::fs::write(path, contents)
    }
}
