//! The CA over the network: a sidecar's request with a good token gets a certificate for
//! the token's service account (whatever it asked for); bad tokens, bad requests and a CA
//! posing with another root are refused.

use std::{collections::HashMap, future::Future, pin::Pin, sync::Arc, time::Duration};

use mesh_mtls::{
    ca::CertificateAuthority,
    config,
    remote::{AuthError, Authenticate, CaService, RemoteCa, ServiceAccount},
    store::CertStore,
};

/// Tokens as a static table (the cluster's TokenReview in production).
struct Tokens(HashMap<&'static str, (&'static str, &'static str)>);

impl Authenticate for Tokens {
    fn authenticate(&self, token: String) -> Pin<Box<dyn Future<Output = Result<ServiceAccount, AuthError>> + Send>> {
        let found = self
            .0
            .get(token.as_str())
            .map(|(ns, sa)| ServiceAccount { namespace: ns.to_string(), name: sa.to_string() });
        let down = token == "api-server-down";
        Box::pin(async move {
            if down {
                return Err(AuthError::Unavailable("the API server is down".into()));
            }
            found.ok_or_else(|| AuthError::Rejected("unknown token".into()))
        })
    }
}

async fn ca_endpoint(ca: Arc<CertificateAuthority>) -> std::net::SocketAddr {
    let tokens = Tokens([("good-token", ("default", "bookinfo-reviews"))].into());
    let service = CaService::new(ca, Arc::new(tokens));
    let tls = service.tls_config(&["localhost".into(), "127.0.0.1".into()]).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(service.serve(listener, tls));
    addr
}

fn token_file(dir: &tempfile::TempDir, token: &str) -> std::path::PathBuf {
    let p = dir.path().join("token");
    std::fs::write(&p, format!("{token}\n")).unwrap();
    p
}

#[tokio::test]
async fn a_good_token_gets_its_service_accounts_identity() {
    let ca = Arc::new(CertificateAuthority::generate("cluster.local").unwrap());
    let addr = ca_endpoint(ca.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let roots = config::roots([ca.root()]).unwrap();
    let remote =
        RemoteCa::new(&format!("https://localhost:{}", addr.port()), roots, token_file(&dir, "good-token")).unwrap();
    let cert = remote.issue(Duration::from_secs(3600)).await.unwrap();
    let store = CertStore::new(&cert).unwrap();
    assert_eq!(store.identity().unwrap().to_string(), "spiffe://cluster.local/ns/default/sa/bookinfo-reviews");
    let life = cert.not_after.duration_since(cert.not_before).unwrap();
    assert!(life <= Duration::from_secs(3600 + 61) && life >= Duration::from_secs(3600), "{life:?}");
    assert_eq!(cert.chain.len(), 2, "leaf and root");
    // The key stayed here: the certificate's public key is ours.
    let (_, leaf) = x509_parser::parse_x509_certificate(cert.chain[0].as_ref()).unwrap();
    let key = rcgen::KeyPair::from_pem(&cert.key_pem).unwrap();
    assert_eq!(leaf.public_key().subject_public_key.data.as_ref(), key.public_key_raw());
    // By IP address too (the CA's certificate names both).
    let roots = config::roots([ca.root()]).unwrap();
    let by_ip =
        RemoteCa::new(&format!("https://127.0.0.1:{}", addr.port()), roots, token_file(&dir, "good-token")).unwrap();
    by_ip.issue(Duration::from_secs(3600)).await.unwrap();
}

#[tokio::test]
async fn bad_tokens_and_impostor_cas_are_refused() {
    let ca = Arc::new(CertificateAuthority::generate("cluster.local").unwrap());
    let addr = ca_endpoint(ca.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("https://localhost:{}", addr.port());
    let roots = config::roots([ca.root()]).unwrap();
    let e = RemoteCa::new(&url, roots.clone(), token_file(&dir, "stolen"))
        .unwrap()
        .issue(Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("401") && e.to_string().contains("token rejected"), "{e}");
    assert!(!e.is_retryable());
    let e = RemoteCa::new(&url, roots.clone(), token_file(&dir, "api-server-down"))
        .unwrap()
        .issue(Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("503") && e.is_retryable(), "{e}");
    let e = RemoteCa::new(&url, roots, dir.path().join("missing"))
        .unwrap()
        .issue(Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("token file"), "{e}");
    // A CA whose certificate chains to another root is not believed.
    let other = CertificateAuthority::generate("cluster.local").unwrap();
    let e = RemoteCa::new(&url, config::roots([other.root()]).unwrap(), token_file(&dir, "good-token"))
        .unwrap()
        .issue(Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("TLS"), "{e}");
    assert!(RemoteCa::new("http://localhost:1", config::roots([ca.root()]).unwrap(), "t".into()).is_err());
}

#[test]
fn a_forged_request_signature_is_rejected() {
    let ca = CertificateAuthority::generate("cluster.local").unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::default().serialize_request(&key).unwrap().pem().unwrap();
    let id: mesh_core::Identity = "spiffe://cluster.local/ns/default/sa/x".parse().unwrap();
    assert!(ca.sign_request(&csr, &id, Duration::from_secs(60)).is_ok());
    // Flip a byte inside the base64 body.
    let mut bytes = csr.into_bytes();
    let i = bytes.len() / 2;
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(bytes).unwrap();
    assert!(ca.sign_request(&forged, &id, Duration::from_secs(60)).is_err());
}
