//! The mesh CA over the network, for clusters: the CA runs in one place (its own Deployment,
//! or inside the gateway) and sidecars obtain their workload certificates from it, proving
//! who they are with a Kubernetes service-account token, as Istio's sidecars do with istiod.
//!
//! Trust model:
//! - The sidecar generates its key; only a certificate signing request leaves the pod. The
//!   request travels over TLS to the CA, whose server certificate the sidecar checks against
//!   the mesh root it was given (a ConfigMap mounted in the pod), so nobody else can pose
//!   as the CA.
//! - The sidecar sends a projected service-account token (audience `mesh-ca`, short-lived,
//!   bound to its pod). The CA has the API server review it ([`Authenticate`], TokenReview)
//!   and issues the certificate for the identity the token proves,
//!   `spiffe://<td>/ns/<namespace>/sa/<service account>`, whatever the request asks for: a
//!   pod can only get its own service account's identity.
//! - The CA's root key never leaves the CA (a Secret mounted only into its pod).
//!   Certificates live a day and are re-requested after two thirds of it with a fresh
//!   token.
//!
//! Wire protocol: `POST /v1/certificates` with `Authorization: Bearer <token>` and the JSON
//! body `{"csr": "<PEM>", "ttl_seconds": N}`; `200 {"identity": "spiffe://...",
//! "cert_chain": ["<leaf PEM>", "<root PEM>"]}`, `401` for a missing or rejected token,
//! `400` for a bad request, each with `{"error": "..."}`.

use std::{
    future::Future,
    net::SocketAddr,
    path::PathBuf,
    pin::Pin,
    sync::Arc,
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use mesh_core::Identity;
use rcgen::{CertificateParams, KeyPair};
use rustls::{ClientConfig, RootCertStore, ServerConfig, pki_types::ServerName};
use rustls_pki_types::{CertificateDer, pem::PemObject};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};

use crate::{
    ca::{CertificateAuthority, IssuedCert},
    store::CertStore,
};

/// The path certificates are requested on.
pub const CSR_PATH: &str = "/v1/certificates";
/// The token audience the CA accepts.
pub const AUDIENCE: &str = "mesh-ca";
/// The longest certificate the CA issues.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// Largest request body.
const MAX_BODY: usize = 64 * 1024;

/// A Kubernetes service account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceAccount {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// Why a token gave no service account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// The token proves nothing (401: asking again will not help).
    Rejected(String),
    /// It could not be checked now (503: the caller retries).
    Unavailable(String),
}

/// Who a bearer token belongs to (TokenReview against the API server, in a cluster).
pub trait Authenticate: Send + Sync + 'static {
    /// The service account the token proves, or why it proves nothing.
    fn authenticate(&self, token: String) -> Pin<Box<dyn Future<Output = Result<ServiceAccount, AuthError>> + Send>>;
}

/// The CA's HTTPS endpoint.
pub struct CaService {
    ca: Arc<CertificateAuthority>,
    auth: Arc<dyn Authenticate>,
}

impl std::fmt::Debug for CaService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaService").field("ca", &self.ca).finish_non_exhaustive()
    }
}

/// The CA could not start or a certificate could not be had.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// Certificates or keys.
    #[error(transparent)]
    Ca(#[from] crate::ca::CaError),
    /// TLS configuration.
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// The address is not `https://HOST:PORT`.
    #[error("CA address {0:?}: expected https://HOST:PORT")]
    Address(String),
    /// Reading the token.
    #[error("token file {path}: {source}")]
    Token {
        /// The file.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
    /// Talking to the CA (the connection, TLS, a 5xx answer): worth retrying.
    #[error("CA at {address}: {message}")]
    Request {
        /// The CA.
        address: String,
        /// What failed.
        message: String,
    },
    /// The CA refused (a rejected token, a bad request): asking again will not help.
    #[error("CA at {address} refused: {message}")]
    Refused {
        /// The CA.
        address: String,
        /// Its answer.
        message: String,
    },
}

impl RemoteError {
    /// Whether asking again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, RemoteError::Request { .. } | RemoteError::Token { .. })
    }
}

impl CaService {
    /// A CA endpoint issuing from `ca`, tokens checked by `auth`.
    pub fn new(ca: Arc<CertificateAuthority>, auth: Arc<dyn Authenticate>) -> Arc<Self> {
        Arc::new(Self { ca, auth })
    }

    /// TLS for the endpoint: a server certificate from the CA itself for `names` (the
    /// Service's DNS names and addresses clients use).
    pub fn tls_config(&self, names: &[String]) -> Result<Arc<ServerConfig>, RemoteError> {
        let cert = self.ca.issue_server(names, Duration::from_secs(365 * 24 * 3600))?;
        let config = ServerConfig::builder_with_provider(crate::store::provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_single_cert(cert.chain.clone(), cert.key())?;
        Ok(Arc::new(config))
    }

    /// Serve on `listener` until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, tls: Arc<ServerConfig>) {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        loop {
            let Ok((tcp, peer)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let (this, acceptor) = (self.clone(), acceptor.clone());
            tokio::spawn(async move {
                let io = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(io)) => io,
                    _ => {
                        tracing::debug!(%peer, "CA: TLS handshake failed");
                        return;
                    }
                };
                let svc = hyper::service::service_fn(move |req| {
                    let this = this.clone();
                    async move { Ok::<_, std::convert::Infallible>(this.handle(req, peer).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(io), svc).await;
            });
        }
    }

    async fn handle(&self, req: Request<hyper::body::Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
        if req.uri().path() != CSR_PATH {
            return reply(StatusCode::NOT_FOUND, json!({"error": format!("no such endpoint; POST {CSR_PATH}")}));
        }
        if req.method() != Method::POST {
            return reply(StatusCode::METHOD_NOT_ALLOWED, json!({"error": "use POST"}));
        }
        let token = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| t.trim().to_string());
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return reply(
                StatusCode::UNAUTHORIZED,
                json!({"error": "a service-account token is required (Authorization: Bearer)"}),
            );
        };
        let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return reply(StatusCode::BAD_REQUEST, json!({"error": format!("request body: {e}")})),
        };
        let Ok(body) = serde_json::from_slice::<Value>(&body) else {
            return reply(StatusCode::BAD_REQUEST, json!({"error": "the body is not JSON"}));
        };
        let Some(csr) = body["csr"].as_str() else {
            return reply(
                StatusCode::BAD_REQUEST,
                json!({"error": "`csr` (a PEM certificate signing request) is required"}),
            );
        };
        let ttl = body["ttl_seconds"].as_u64().map_or(MAX_TTL, |s| Duration::from_secs(s).min(MAX_TTL));
        let sa = match self.auth.authenticate(token).await {
            Ok(sa) => sa,
            Err(AuthError::Rejected(e)) => {
                tracing::warn!(%peer, error = %e, "CA: token rejected");
                return reply(StatusCode::UNAUTHORIZED, json!({"error": format!("token rejected: {e}")}));
            }
            Err(AuthError::Unavailable(e)) => {
                tracing::warn!(%peer, error = %e, "CA: cannot review tokens now");
                return reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({"error": format!("cannot check the token now: {e}")}),
                );
            }
        };
        let identity = match Identity::new(self.ca.trust_domain(), &sa.namespace, &sa.name) {
            Ok(i) => i,
            Err(e) => return reply(StatusCode::BAD_REQUEST, json!({"error": e.to_string()})),
        };
        match self.ca.sign_request(csr, &identity, ttl) {
            Ok(chain) => {
                tracing::info!(%peer, %identity, "CA: certificate issued");
                reply(StatusCode::OK, json!({"identity": identity.to_string(), "cert_chain": chain.pems}))
            }
            Err(e) => reply(StatusCode::BAD_REQUEST, json!({"error": format!("certificate signing request: {e}")})),
        }
    }
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut rsp = Response::new(Full::new(Bytes::from(body.to_string())));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    rsp
}

/// A sidecar's way to its CA.
#[derive(Clone)]
pub struct RemoteCa {
    address: String,
    host: String,
    port: u16,
    tls: Arc<ClientConfig>,
    token_file: PathBuf,
}

impl std::fmt::Debug for RemoteCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteCa").field("address", &self.address).field("token_file", &self.token_file).finish()
    }
}

impl RemoteCa {
    /// The CA at `address` (`https://HOST:PORT`), its server certificate checked against
    /// `roots`, requests authenticated with the token read from `token_file` each time.
    pub fn new(address: &str, roots: Arc<RootCertStore>, token_file: PathBuf) -> Result<Self, RemoteError> {
        let bad = || RemoteError::Address(address.to_string());
        let rest = address.strip_prefix("https://").ok_or_else(bad)?.trim_end_matches('/');
        let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        ServerName::try_from(host.clone()).map_err(|_| bad())?;
        let tls = ClientConfig::builder_with_provider(crate::store::provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self { address: address.to_string(), host, port, tls: Arc::new(tls), token_file })
    }

    /// A new key and a certificate for it, valid `ttl` at most.
    pub async fn issue(&self, ttl: Duration) -> Result<IssuedCert, RemoteError> {
        let fail = |message: String| RemoteError::Request { address: self.address.clone(), message };
        let token = std::fs::read_to_string(&self.token_file)
            .map_err(|source| RemoteError::Token { path: self.token_file.display().to_string(), source })?;
        let key = KeyPair::generate().map_err(crate::ca::CaError::from)?;
        let csr = CertificateParams::default()
            .serialize_request(&key)
            .and_then(|c| c.pem())
            .map_err(crate::ca::CaError::from)?;
        let body = json!({"csr": csr, "ttl_seconds": ttl.as_secs()}).to_string();

        let tcp =
            TcpStream::connect((self.host.as_str(), self.port)).await.map_err(|e| fail(format!("connect: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(self.host.clone()).map_err(|e| fail(e.to_string()))?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| fail(format!("TLS: {e}")))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| fail(e.to_string()))?;
        tokio::spawn(conn);
        let req = Request::post(CSR_PATH)
            .header(header::HOST, format!("{}:{}", self.host, self.port))
            .header(header::AUTHORIZATION, format!("Bearer {}", token.trim()))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| fail(e.to_string()))?;
        let rsp = tokio::time::timeout(Duration::from_secs(30), sender.send_request(req))
            .await
            .map_err(|_| fail("no answer within 30 s".into()))?
            .map_err(|e| fail(e.to_string()))?;
        let status = rsp.status();
        let bytes = Limited::new(rsp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| fail(format!("response body: {e}")))?
            .to_bytes();
        let answer: Value = serde_json::from_slice(&bytes).map_err(|_| fail(format!("{status}, not JSON")))?;
        if status != StatusCode::OK {
            let message = format!("{status}: {}", answer["error"].as_str().unwrap_or("no reason given"));
            return Err(if status.is_server_error() {
                fail(message)
            } else {
                RemoteError::Refused { address: self.address.clone(), message }
            });
        }
        let pems: Vec<&str> = answer["cert_chain"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        let chain = pems
            .iter()
            .map(|p| CertificateDer::from_pem_slice(p.as_bytes()).map_err(|e| fail(format!("certificate: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let leaf = chain.first().ok_or_else(|| fail("empty certificate chain".into()))?;
        let (not_before, not_after) = validity(leaf).ok_or_else(|| fail("unreadable certificate".into()))?;
        Ok(IssuedCert {
            chain,
            key_der: key.serialize_der(),
            not_after,
            not_before,
            cert_pem: pems.first().map(|p| p.to_string()).unwrap_or_default(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Keep `store`'s certificate fresh from this CA: re-requested after two thirds of its
    /// lifetime (with a fresh token), retried every few seconds on failure. Ends when the
    /// store is dropped.
    pub fn rotate(self: Arc<Self>, store: &Arc<CertStore>, ttl: Duration) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(store);
        tokio::spawn(async move {
            let mut wait = ttl.mul_f64(2.0 / 3.0);
            loop {
                tokio::time::sleep(wait).await;
                let Some(store) = weak.upgrade() else { return };
                match self
                    .issue(ttl)
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|c| store.set(&c).map_err(|e| e.to_string()))
                {
                    Ok(()) => {
                        tracing::info!(ca = %self.address, "workload certificate rotated");
                        wait = ttl.mul_f64(2.0 / 3.0);
                    }
                    Err(e) => {
                        tracing::error!(ca = %self.address, error = %e, "certificate rotation failed; retrying");
                        wait = Duration::from_secs(5);
                    }
                }
            }
        })
    }
}

fn validity(cert: &CertificateDer<'_>) -> Option<(SystemTime, SystemTime)> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let at = |t: i64| SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(u64::try_from(t).ok()?));
    Some((at(parsed.validity().not_before.timestamp())?, at(parsed.validity().not_after.timestamp())?))
}
