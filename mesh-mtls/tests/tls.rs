//! Real TLS over loopback.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use mesh_core::Identity;
use mesh_core::test_util::identity as id;
use mesh_mtls::{accept::MtlsAcceptor, ca::CertificateAuthority, config, peer_auth::Mode, store::CertStore};
use rustls_pki_types::ServerName;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tokio_rustls::TlsConnector;

const DAY: Duration = Duration::from_secs(24 * 3600);

/// A server answering each connection with the peer it saw; accept errors are recorded.
async fn server(ca: &CertificateAuthority, mode: Mode) -> (SocketAddr, Arc<Mutex<Vec<String>>>, Arc<CertStore>) {
    let store = CertStore::new(&ca.issue(&id("server"), DAY).unwrap()).unwrap();
    let acceptor =
        MtlsAcceptor::new(config::server_config(store.clone(), config::roots([ca.root()]).unwrap()).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let errors = Arc::new(Mutex::new(Vec::new()));
    let errs = errors.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            let errs = errs.clone();
            tokio::spawn(async move {
                match acceptor.accept(tcp, mode).await {
                    Ok((mut io, peer)) => {
                        let mut buf = [0u8; 5];
                        if io.read_exact(&mut buf).await.is_ok() {
                            let who = peer.map_or("plaintext".to_string(), |p| p.to_string());
                            let _ = io.write_all(who.as_bytes()).await;
                            let _ = io.shutdown().await;
                        }
                    }
                    Err(e) => errs.lock().unwrap().push(e.to_string()),
                }
            });
        }
    });
    (addr, errors, store)
}

async fn tls_with(addr: SocketAddr, cfg: Arc<rustls::ClientConfig>) -> Result<String, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let mut tls = TlsConnector::from(cfg)
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
        .map_err(|e| e.to_string())?;
    tls.write_all(b"hello").await.map_err(|e| e.to_string())?;
    let mut out = String::new();
    tls.read_to_string(&mut out).await.map_err(|e| e.to_string())?;
    if out.is_empty() { Err("closed".into()) } else { Ok(out) }
}

fn client_cfg(
    ca: &CertificateAuthority,
    trust: &CertificateAuthority,
    who: &str,
    allowed: Vec<Identity>,
) -> Arc<rustls::ClientConfig> {
    let store = CertStore::new(&ca.issue(&id(who), DAY).unwrap()).unwrap();
    config::client_config(store, config::roots([trust.root()]).unwrap(), allowed).unwrap()
}

async fn plain_client(addr: SocketAddr) -> Result<String, String> {
    let mut tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    tcp.write_all(b"hello").await.map_err(|e| e.to_string())?;
    let mut out = String::new();
    match tcp.read_to_string(&mut out).await {
        Ok(_) if !out.is_empty() => Ok(out),
        Ok(_) => Err("closed".into()),
        Err(e) => Err(e.to_string()),
    }
}

#[tokio::test]
async fn strict_refuses_plaintext_and_serves_mtls() {
    let ca = CertificateAuthority::generate("cluster.local").unwrap();
    let (addr, errors, _) = server(&ca, Mode::Strict).await;
    assert!(plain_client(addr).await.is_err());
    let out = tls_with(addr, client_cfg(&ca, &ca, "client", vec![id("server")])).await.unwrap();
    assert_eq!(out, "spiffe://cluster.local/ns/default/sa/client");
    assert_eq!(errors.lock().unwrap().as_slice(), ["plaintext connection refused: mTLS is STRICT"]);
}

#[tokio::test]
async fn permissive_serves_both_on_one_port() {
    let ca = CertificateAuthority::generate("cluster.local").unwrap();
    let (addr, errors, _) = server(&ca, Mode::Permissive).await;
    assert_eq!(plain_client(addr).await.unwrap(), "plaintext");
    assert_eq!(
        tls_with(addr, client_cfg(&ca, &ca, "client", vec![])).await.unwrap(),
        "spiffe://cluster.local/ns/default/sa/client"
    );
    assert!(errors.lock().unwrap().is_empty());
}

#[tokio::test]
async fn disable_is_plaintext_only() {
    let ca = CertificateAuthority::generate("cluster.local").unwrap();
    let (addr, _, _) = server(&ca, Mode::Disable).await;
    assert_eq!(plain_client(addr).await.unwrap(), "plaintext");
    assert!(tls_with(addr, client_cfg(&ca, &ca, "client", vec![])).await.is_err());
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let ca = CertificateAuthority::generate("cluster.local").unwrap();
    let rogue = CertificateAuthority::generate("cluster.local").unwrap();
    let (addr, errors, _) = server(&ca, Mode::Strict).await;
    // The client trusts the mesh root but presents a rogue certificate.
    assert!(tls_with(addr, client_cfg(&rogue, &ca, "client", vec![])).await.is_err());
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(errors.lock().unwrap().iter().any(|e| e.starts_with("TLS handshake failed")), "{errors:?}");
    // And a server signed by another CA is refused by the client.
    let (rogue_addr, _, _) = server(&rogue, Mode::Strict).await;
    let err = tls_with(rogue_addr, client_cfg(&ca, &ca, "client", vec![])).await.unwrap_err();
    assert!(err.contains("UnknownIssuer") || err.contains("invalid peer certificate"), "{err}");
}

#[tokio::test]
async fn an_expired_certificate_is_refused() {
    let ca = CertificateAuthority::generate("cluster.local").unwrap();
    let (addr, errors, _) = server(&ca, Mode::Strict).await;
    let now = SystemTime::now();
    let expired = ca.issue_for_period(&id("client"), now - 2 * DAY, now - DAY).unwrap();
    let cfg =
        config::client_config(CertStore::new(&expired).unwrap(), config::roots([ca.root()]).unwrap(), vec![]).unwrap();
    assert!(tls_with(addr, cfg).await.is_err());
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(errors.lock().unwrap().iter().any(|e| e.contains("Expired") || e.contains("expired")), "{errors:?}");
}

#[tokio::test]
async fn a_server_with_an_unexpected_identity_is_refused() {
    let ca = CertificateAuthority::generate("cluster.local").unwrap();
    let (addr, _, _) = server(&ca, Mode::Strict).await;
    let err = tls_with(addr, client_cfg(&ca, &ca, "client", vec![id("bookinfo-ratings")])).await.unwrap_err();
    assert!(err.contains("NotValidForName"), "{err}");
    assert!(tls_with(addr, client_cfg(&ca, &ca, "client", vec![id("bookinfo-ratings"), id("server")])).await.is_ok());
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused_in_strict() {
    let ca = CertificateAuthority::generate("cluster.local").unwrap();
    let (addr, _, _) = server(&ca, Mode::Strict).await;
    let cfg = rustls::ClientConfig::builder_with_provider(mesh_mtls::store::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(mesh_mtls::verify::SpiffeServerVerifier::new(
            config::roots([ca.root()]).unwrap(),
            vec![],
            mesh_mtls::store::provider(),
        )))
        .with_no_client_auth();
    assert!(tls_with(addr, Arc::new(cfg)).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_continuous_requests_fails_none() {
    let ca = Arc::new(CertificateAuthority::generate("cluster.local").unwrap());
    let (addr, errors, server_store) = server(&ca, Mode::Strict).await;
    // Short-lived server certificates: rotated every two seconds.
    let ttl = Duration::from_secs(3);
    server_store.set(&ca.issue(&id("server"), ttl).unwrap()).unwrap();
    let _rotation = server_store.rotate_from(ca.clone(), id("server"), ttl);
    let first = server_store.current();
    // A connection opened before the rotation keeps working after it.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut long = TlsConnector::from(client_cfg(&ca, &ca, "client", vec![id("server")]))
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
        .unwrap();
    let mut ok = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(4500);
    while tokio::time::Instant::now() < deadline {
        assert_eq!(
            tls_with(addr, client_cfg(&ca, &ca, "client", vec![id("server")])).await.unwrap(),
            "spiffe://cluster.local/ns/default/sa/client"
        );
        ok += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!Arc::ptr_eq(&first, &server_store.current()), "the certificate was rotated");
    long.write_all(b"hello").await.unwrap();
    let mut out = String::new();
    long.read_to_string(&mut out).await.unwrap();
    assert_eq!(out, "spiffe://cluster.local/ns/default/sa/client");
    assert!(ok > 20, "{ok}");
    assert!(errors.lock().unwrap().is_empty(), "{errors:?}");
}

#[tokio::test]
async fn certificates_from_files_are_reloaded() {
    let ca = CertificateAuthority::generate("cluster.local").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert-chain.pem"), dir.path().join("key.pem"));
    let write = |sa: &str| {
        let c = ca.issue(&id(sa), DAY).unwrap();
        std::fs::write(&cert, format!("{}{}", c.cert_pem, ca.root_pem())).unwrap();
        std::fs::write(&key, &c.key_pem).unwrap();
    };
    write("first");
    let store = CertStore::from_files(&cert, &key).unwrap();
    assert_eq!(store.identity(), Some(id("first")));
    let _watch = store.watch_files(cert.clone(), key.clone(), Duration::from_millis(20));
    tokio::time::sleep(Duration::from_millis(1100)).await; // distinct modification times
    write("second");
    for _ in 0..200 {
        if store.identity() == Some(id("second")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(store.identity(), Some(id("second")));
}

#[tokio::test]
async fn the_ca_key_is_private_and_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::load_or_create(dir.path(), "cluster.local").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("root-key.pem")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let again = CertificateAuthority::load_or_create(dir.path(), "cluster.local").unwrap();
    assert_eq!(ca.root(), again.root());
    // Certificates from the reloaded CA verify against the original root.
    let (addr, _, _) = server(&again, Mode::Strict).await;
    assert!(tls_with(addr, client_cfg(&ca, &ca, "client", vec![id("server")])).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_shows_the_spiffe_uri_san() {
    let ca = CertificateAuthority::generate("cluster.local").unwrap();
    let (addr, _, _) = server(&ca, Mode::Strict).await;
    let dir = tempfile::tempdir().unwrap();
    let client = ca.issue(&id("client"), DAY).unwrap();
    std::fs::write(dir.path().join("c.pem"), &client.cert_pem).unwrap();
    std::fs::write(dir.path().join("k.pem"), &client.key_pem).unwrap();
    std::fs::write(dir.path().join("root.pem"), ca.root_pem()).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "printf hello | openssl s_client -connect {addr} -cert c.pem -key k.pem -CAfile root.pem -verify_return_error 2>/dev/null | openssl x509 -noout -text"
            ))
            .current_dir(dir.path())
            .output()
            .expect("openssl is installed (.ci/run installs it)")
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("URI:spiffe://cluster.local/ns/default/sa/server"), "{text}");
}
