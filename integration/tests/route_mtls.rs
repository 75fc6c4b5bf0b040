//! The client stack over mTLS: auto mTLS toward a STRICT server, secure naming, and
//! `tls: DISABLE` toward STRICT failing as Istio's does. The servers are workloads meshed
//! as the mesh ships it (`mesh_proxy::embed::Mesh`, mTLS per their PeerAuthentication).

use std::{collections::HashMap, convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use http::{Request, Response};
use http_body_util::BodyExt;
use mesh_config::test_util::Manifest;
use mesh_config::{
    load::{LoadOptions, load_str},
    registry::{Locator, Registry},
};
use mesh_core::{
    BoxBody, Identity,
    ext::{PeerIdentity, ResponseFlags},
};
use mesh_core::{test_util::identity as id, test_util::labels};
use mesh_mtls::{
    ca::CertificateAuthority,
    config,
    connector::{MeshConnector, secure_naming},
    store::CertStore,
};
use mesh_proxy::{
    client::{ClientBuilder, MeshClient},
    embed::Mesh,
};
use mesh_route::{
    layer::{BalanceLayer, RetryLayer, TableHandle},
    policy::{ProxyContext, RouteTable},
};
use tower::{Layer, ServiceExt, service_fn};

const DAY: Duration = Duration::from_secs(86400);

/// The mesh's client stack over `connector` (mesh-proxy composes it).
fn client_stack_with(
    table: TableHandle,
    connector: MeshConnector,
    balance: BalanceLayer,
    retry: RetryLayer,
) -> MeshClient {
    MeshClient::new(ClientBuilder::new(table).balance(balance).retry(retry).connect(connector.clone(), connector))
}

/// reviews-v1 (`bookinfo-reviews`) meshed in-process, mTLS as its PeerAuthentication with
/// `mode` says; it answers the peer identity it saw. `ca` is its mesh CA, for the clients.
struct Server {
    addr: SocketAddr,
    ca: CertificateAuthority,
    _mesh: Arc<Mesh>,
    _dir: tempfile::TempDir,
}

async fn strict_server() -> Server {
    server_with("STRICT").await
}

async fn server_with(mode: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let (config, ca_dir) = (dir.path().join("config"), dir.path().join("ca"));
    std::fs::create_dir_all(&config).unwrap();
    let manifest = Manifest::new()
        .service("reviews", 9080)
        .deployment("reviews", "v1", Some("bookinfo-reviews"))
        .doc(&format!("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: default}}\nspec: {{mtls: {{mode: {mode}}}}}"))
        .to_string();
    std::fs::write(config.join("mesh.yaml"), manifest).unwrap();
    let mesh = Arc::new(
        Mesh::builder()
            .config(&config)
            .ca_dir(&ca_dir)
            .label("app", "reviews")
            .label("version", "v1")
            .start()
            .await
            .unwrap(),
    );
    let ca = CertificateAuthority::load_or_create(&ca_dir, "cluster.local").unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = service_fn(|req: Request<BoxBody>| async move {
        let peer = req.extensions().get::<PeerIdentity>().map_or("plaintext".to_string(), |p| p.0.to_string());
        Ok::<_, Infallible>(Response::new(mesh_core::body::full(format!("peer={peer}"))))
    });
    let svc = mesh.server_layer(9080).layer(app);
    let serving = mesh.clone();
    tokio::spawn(async move { serving.serve(listener, 9080, svc, std::future::pending()).await.unwrap() });
    Server { addr, ca, _mesh: mesh, _dir: dir }
}

fn setup(addr: SocketAddr, dr_tls: &str) -> (TableHandle, Registry) {
    let s = Manifest::new()
        .service("reviews", 9080)
        .deployment("reviews", "v1", Some("bookinfo-reviews"))
        .doc(&format!("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: reviews}}\nspec: {{host: reviews{dr_tls}}}"))
        .snapshot();
    let registry = Registry::build(&s, &Locator::new().with("default", "reviews-v1", addr));
    let table =
        RouteTable::compile(&s, &registry, &ProxyContext::sidecar("default", labels(&[("app", "productpage")])));
    (TableHandle::new(table), registry)
}

async fn get(client: &MeshClient) -> (u16, String, String) {
    let req = Request::builder().uri("http://reviews:9080/reviews/0").body(mesh_core::body::empty()).unwrap();
    let rsp: Response<BoxBody> = client.clone().oneshot(req).await.unwrap();
    let flags = rsp.extensions().get::<ResponseFlags>().copied().unwrap_or_default().to_string();
    let status = rsp.status().as_u16();
    (status, String::from_utf8(rsp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap(), flags)
}

fn connector(ca: &CertificateAuthority, naming: HashMap<SocketAddr, Vec<Identity>>) -> MeshConnector {
    let store = CertStore::new(&ca.issue(&id("bookinfo-productpage"), DAY).unwrap()).unwrap();
    MeshConnector::mtls(store, config::roots([ca.root()]).unwrap(), Arc::new(ArcSwap::from_pointee(naming)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_mtls_with_secure_naming() {
    let server = strict_server().await;
    let (ca, addr) = (&server.ca, server.addr);
    let (table, registry) = setup(addr, "");
    let naming = secure_naming(&registry);
    assert_eq!(naming[&addr], [id("bookinfo-reviews")]);
    let client = client_stack_with(
        table,
        connector(ca, naming),
        BalanceLayer::new().with_auto_mtls(true),
        RetryLayer::per_route(),
    );
    assert_eq!(
        get(&client).await,
        (200, "peer=spiffe://cluster.local/ns/default/sa/bookinfo-productpage".into(), "-".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_the_wrong_identity_is_refused() {
    let server = strict_server().await;
    let (ca, addr) = (&server.ca, server.addr);
    let (table, _) = setup(addr, "");
    // The registry says this address is ratings: the reviews certificate does not fit.
    let naming = HashMap::from([(addr, vec![id("bookinfo-ratings")])]);
    let client = client_stack_with(
        table,
        connector(ca, naming),
        BalanceLayer::new().with_auto_mtls(true),
        RetryLayer::per_route(),
    );
    let (status, _, flags) = get(&client).await;
    assert_eq!(status, 503);
    assert!(flags.starts_with("UF"), "{flags}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_disable_toward_strict_fails() {
    let server = strict_server().await;
    let (ca, addr) = (&server.ca, server.addr);
    let (table, registry) = setup(addr, ", trafficPolicy: {tls: {mode: DISABLE}}");
    let client = client_stack_with(
        table,
        connector(ca, secure_naming(&registry)),
        BalanceLayer::new().with_auto_mtls(true),
        RetryLayer::per_route(),
    );
    let (status, _, flags) = get(&client).await;
    assert_eq!(status, 503);
    assert!(flags.starts_with("UC") || flags.starts_with("UF"), "{flags}");
    // ISTIO_MUTUAL spelled out works as auto mTLS does.
    let (table, registry) = setup(addr, ", trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}");
    let client =
        client_stack_with(table, connector(ca, secure_naming(&registry)), BalanceLayer::new(), RetryLayer::per_route());
    assert_eq!(get(&client).await.0, 200);
}

/// A TLS server outside the mesh, with a DNS certificate for `ratings.example`.
async fn external_tls_server(dir: &std::path::Path) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["ratings.example".to_string()]).unwrap();
    params.is_ca = rcgen::IsCa::NoCa;
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join("ca.pem"), cert.pem()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(mesh_mtls::store::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()))
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let mut buf = vec![0u8; 4096];
                let n = tls.read(&mut buf).await.unwrap_or(0);
                let sni = tls.get_ref().1.server_name().unwrap_or("-").to_string();
                let _ = n;
                let body = format!("external sni={sni}");
                let _ = tls
                    .write_all(
                        format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len())
                            .as_bytes(),
                    )
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_tls_origination_to_an_external_service() {
    let dir = tempfile::tempdir().unwrap();
    let addr = external_tls_server(dir.path()).await;
    let yaml = format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: ext}}\nspec:\n  hosts: [ratings.example]\n  ports: [{{number: 443, name: https, protocol: HTTPS}}]\n  resolution: STATIC\n  endpoints: [{{address: 127.0.0.1, ports: {{https: {port}}}}}]\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: ext}}\nspec:\n  host: ratings.example\n  trafficPolicy: {{tls: {{mode: SIMPLE, caCertificates: {ca}}}}}\n",
        port = addr.port(),
        ca = dir.path().join("ca.pem").display()
    );
    let loaded = load_str("c.yaml", &yaml, &LoadOptions::default());
    assert!(!loaded.has_errors(), "{}", loaded.report());
    let s = loaded.into_snapshot();
    let registry = Registry::build(&s, &Locator::new());
    let table = RouteTable::compile(&s, &registry, &ProxyContext::sidecar("default", Default::default()));
    // What the sidecar does on each table change: origination settings by endpoint.
    let connector = MeshConnector::plain();
    let mut by_addr = HashMap::new();
    for c in table.clusters() {
        if let Some(o) = c.tls.as_ref().and_then(|t| mesh_mtls::connector::Origination::from_settings(t, &c.service)) {
            for e in c.endpoints.iter() {
                by_addr.insert(e.address, o.clone());
            }
        }
    }
    assert_eq!(by_addr.len(), 1);
    connector.set_origination(by_addr);
    let client = client_stack_with(TableHandle::new(table), connector, BalanceLayer::new(), RetryLayer::per_route());
    let req = Request::builder().uri("http://ratings.example:443/ratings/0").body(mesh_core::body::empty()).unwrap();
    let rsp: Response<BoxBody> = client.oneshot(req).await.unwrap();
    assert_eq!(rsp.status(), 200);
    assert_eq!(
        String::from_utf8(rsp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap(),
        "external sni=ratings.example"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_mtls_sends_plaintext_to_workloads_that_disable_mtls() {
    let server = server_with("DISABLE").await;
    let (ca, addr) = (&server.ca, server.addr);
    let s = Manifest::new()
        .service("reviews", 9080)
        .deployment("reviews", "v1", Some("bookinfo-reviews"))
        .doc("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: reviews}\nspec: {selector: {matchLabels: {app: reviews}}, mtls: {mode: DISABLE}}")
        .snapshot();
    let registry = Registry::build(&s, &Locator::new().with("default", "reviews-v1", addr));
    let plaintext = mesh_mtls::peer_auth::plaintext_endpoints(&s, &registry);
    assert!(plaintext.contains(&addr));
    let table =
        TableHandle::new(RouteTable::compile(&s, &registry, &ProxyContext::sidecar("default", Default::default())));
    let balance =
        BalanceLayer::new().with_auto_mtls(true).with_plaintext_endpoints(Arc::new(ArcSwap::from_pointee(plaintext)));
    let client =
        client_stack_with(table.clone(), connector(ca, secure_naming(&registry)), balance, RetryLayer::per_route());
    assert_eq!(get(&client).await, (200, "peer=plaintext".into(), "-".into()));
    // Without that knowledge auto mTLS would speak TLS to a plaintext server, and fail.
    let blind = client_stack_with(
        table,
        connector(ca, secure_naming(&registry)),
        BalanceLayer::new().with_auto_mtls(true),
        RetryLayer::per_route(),
    );
    assert_eq!(get(&blind).await.0, 503);
}
