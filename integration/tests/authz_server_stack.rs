//! The server side as the mesh ships it, over real sockets: `mesh_proxy::embed::Mesh`'s
//! accept loop (mTLS per PeerAuthentication) and server layer (peer identity, JWT,
//! authorization, an external authorizer from the mesh config).

use std::{
    convert::Infallible,
    net::SocketAddr,
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime},
};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use mesh_authz::{jwt::JwtPolicy, policy::RequestAuth};
use mesh_config::{
    load::{LoadOptions, load_str},
    test_util::Manifest,
};
use mesh_core::test_util::identity as id;
use mesh_core::{BoxBody, ext::PeerIdentity};
use mesh_mtls::{ca::CertificateAuthority, config, store::CertStore};
use mesh_proxy::embed::Mesh;
use tokio::net::{TcpListener, TcpStream};
use tower::{Layer, service_fn};

const DAY: Duration = Duration::from_secs(86400);

use mesh_authz::jwt::testing::Issuer;

fn now() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// The application: answers who it saw.
async fn app<B>(req: Request<B>) -> Result<Response<BoxBody>, Infallible> {
    let peer = req.extensions().get::<PeerIdentity>().map_or("plaintext".to_string(), |p| p.0.to_string());
    let user = req.extensions().get::<RequestAuth>().map_or("-".to_string(), |a| a.principal.clone());
    let authz_header = req.headers().get("authorization").is_some();
    let ext_user = req.headers().get("x-ext-user").map_or("-", |v| v.to_str().unwrap()).to_string();
    Ok(Response::new(mesh_core::body::full(format!(
        "{} peer={peer} user={user} token-forwarded={authz_header} ext-user={ext_user}",
        req.uri().path()
    ))))
}

struct Stack {
    addr: SocketAddr,
    ca: Arc<CertificateAuthority>,
    mesh: Arc<Mesh>,
    _dir: tempfile::TempDir,
}

impl Stack {
    /// `mesh_authz_decisions_total{decision}` of the workload's mesh.
    fn decisions(&self, decision: &str) -> u64 {
        let text = self.mesh.metrics().encode();
        let line = format!("mesh_authz_decisions_total{{decision=\"{decision}\"}} ");
        text.lines().find_map(|l| l.strip_prefix(&line)).map_or(0, |v| v.parse().unwrap())
    }
}

/// reviews-v1 (service account `bookinfo-reviews`) meshed in-process with `config_yaml`,
/// its PeerAuthentication `mode`, and `mesh_config` as Istio's mesh config.
async fn start(config_yaml: &str, mode: &str, mesh_config: &str) -> Stack {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    std::fs::create_dir_all(&config).unwrap();
    let manifest = Manifest::new()
        .service("reviews", 9080)
        .deployment("reviews", "v1", Some("bookinfo-reviews"))
        .doc(&format!(
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: default}}\nspec: {{mtls: {{mode: {mode}}}}}\n"
        ))
        .to_string();
    std::fs::write(config.join("manifest.yaml"), manifest).unwrap();
    std::fs::write(config.join("policies.yaml"), config_yaml).unwrap();
    let mesh_file: PathBuf = dir.path().join("mesh.yaml");
    std::fs::write(&mesh_file, mesh_config).unwrap();
    let ca_dir = dir.path().join("ca");
    let mesh = Arc::new(
        Mesh::builder()
            .config(&config)
            .ca_dir(&ca_dir)
            .mesh_config(&mesh_file)
            .label("app", "reviews")
            .label("version", "v1")
            .start()
            .await
            .unwrap(),
    );
    let ca = Arc::new(CertificateAuthority::load_or_create(&ca_dir, "cluster.local").unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let svc = mesh.server_layer(9080).layer(service_fn(app));
    let serving = mesh.clone();
    tokio::spawn(async move { serving.serve(listener, 9080, svc, std::future::pending()).await.unwrap() });
    Stack { addr, ca, mesh, _dir: dir }
}

/// An HTTP/1.1 request over plaintext or mTLS as `client` (None: plaintext).
async fn send(
    stack: &Stack,
    client: Option<&str>,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
) -> (u16, String) {
    let tcp = TcpStream::connect(stack.addr).await.unwrap();
    let mut req = Request::builder().method(method).uri(path).header("host", "reviews:9080");
    for (k, v) in headers {
        req = req.header(*k, v.as_str());
    }
    let req = req.body(Full::new(Bytes::new())).unwrap();
    let rsp = match client {
        None => {
            let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
            tokio::spawn(conn);
            s.send_request(req).await.unwrap()
        }
        Some(who) => {
            let store = CertStore::new(&stack.ca.issue(&id(who), DAY).unwrap()).unwrap();
            let cfg =
                config::client_config(store, config::roots([stack.ca.root()]).unwrap(), vec![id("bookinfo-reviews")])
                    .unwrap();
            let tls = tokio_rustls::TlsConnector::from(cfg)
                .connect(rustls_pki_types::ServerName::IpAddress(stack.addr.ip().into()), tcp)
                .await
                .unwrap();
            let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
            tokio::spawn(conn);
            s.send_request(req).await.unwrap()
        }
    };
    let status = rsp.status().as_u16();
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

const REVIEWS_VIEWER: &str = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: reviews-viewer}\nspec:\n  selector: {matchLabels: {app: reviews}}\n  rules:\n  - from: [{source: {principals: [cluster.local/ns/default/sa/bookinfo-productpage]}}]\n    to: [{operation: {methods: [GET]}}]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_identity_reaches_authorization() {
    let stack = start(REVIEWS_VIEWER, "PERMISSIVE", "").await;
    assert_eq!(
        send(&stack, Some("bookinfo-productpage"), "GET", "/reviews/0", &[]).await,
        (200, "/reviews/0 peer=spiffe://cluster.local/ns/default/sa/bookinfo-productpage user=- token-forwarded=false ext-user=-".into())
    );
    assert_eq!(
        send(&stack, Some("bookinfo-ratings"), "GET", "/reviews/0", &[]).await,
        (403, "RBAC: access denied".into())
    );
    assert_eq!(
        send(&stack, None, "GET", "/reviews/0", &[]).await,
        (403, "RBAC: access denied".into()),
        "plaintext in PERMISSIVE: no principal"
    );
    assert_eq!(send(&stack, Some("bookinfo-productpage"), "POST", "/reviews/0", &[]).await.0, 403);
    // The backend receives the normalised path; %00 is refused.
    assert_eq!(
        send(&stack, Some("bookinfo-productpage"), "GET", "/reviews/x/../%30", &[]).await.1.split(' ').next(),
        Some("/reviews/0")
    );
    assert_eq!(send(&stack, Some("bookinfo-productpage"), "GET", "/a%00", &[]).await.0, 400);
    // The decisions the mesh counted: the bad path never reached one.
    assert_eq!((stack.decisions("allow"), stack.decisions("deny")), (2, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_with_keys_minted_in_the_test() {
    let issuer = Issuer::new();
    let config = format!(
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: jwt}}\nspec:\n  selector: {{matchLabels: {{app: reviews}}}}\n  jwtRules:\n  - issuer: https://issuer.test\n    audiences: [bookinfo]\n    jwks: '{}'\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: require-jwt}}\nspec:\n  selector: {{matchLabels: {{app: reviews}}}}\n  rules:\n  - from: [{{source: {{requestPrincipals: [\"https://issuer.test/*\"]}}}}]\n",
        issuer.jwks
    );
    let stack = start(&config, "PERMISSIVE", "").await;
    let bearer = |t: String| vec![("authorization", format!("Bearer {t}"))];
    let good = issuer.token(
        &serde_json::json!({"iss": "https://issuer.test", "sub": "jason", "aud": "bookinfo", "exp": now() + 600}),
    );
    assert_eq!(
        send(&stack, None, "GET", "/reviews/0", &bearer(good)).await,
        (200, "/reviews/0 peer=plaintext user=https://issuer.test/jason token-forwarded=false ext-user=-".into())
    );
    // No token: passes authentication, then the ALLOW policy needs a request principal.
    assert_eq!(send(&stack, None, "GET", "/reviews/0", &[]).await, (403, "RBAC: access denied".into()));
    let expired = issuer.token(
        &serde_json::json!({"iss": "https://issuer.test", "sub": "jason", "aud": "bookinfo", "exp": now() - 3600}),
    );
    assert_eq!(send(&stack, None, "GET", "/", &bearer(expired)).await, (401, "Jwt is expired".into()));
    let wrong_aud = issuer
        .token(&serde_json::json!({"iss": "https://issuer.test", "sub": "jason", "aud": "other", "exp": now() + 600}));
    assert_eq!(
        send(&stack, None, "GET", "/", &bearer(wrong_aud)).await,
        (401, "Audiences in Jwt are not allowed".into())
    );
    let forged =
        Issuer::new().token(&serde_json::json!({"iss": "https://issuer.test", "sub": "mallory", "aud": "bookinfo"}));
    assert_eq!(send(&stack, None, "GET", "/", &bearer(forged)).await, (401, "Jwt verification fails".into()));
    let unknown = issuer.token(&serde_json::json!({"iss": "https://elsewhere", "sub": "x"}));
    assert_eq!(send(&stack, None, "GET", "/", &bearer(unknown)).await, (401, "Jwt issuer is not configured".into()));
    assert_eq!(send(&stack, None, "GET", "/", &bearer("not.a-token".into())).await.0, 401);
}

/// An external authorizer: allows requests carrying `x-ext-allow: yes`.
async fn ext_authz() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let allowed = req.headers().get("x-ext-allow").is_some_and(|v| v == "yes");
                    let mut rsp =
                        Response::new(Full::new(Bytes::from_static(if allowed { b"" } else { b"denied by ext" })));
                    if allowed {
                        rsp.headers_mut().insert("x-ext-user", "checked".parse().unwrap());
                    } else {
                        *rsp.status_mut() = StatusCode::UNAUTHORIZED;
                        rsp.headers_mut().insert("x-ext-reason", "no-flag".parse().unwrap());
                    }
                    Ok::<_, Infallible>(rsp)
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), svc).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_asks_the_external_authorizer() {
    let ext = ext_authz().await;
    let mesh_config = format!(
        "extensionProviders:\n- name: ext-authz\n  envoyExtAuthzHttp:\n    service: 127.0.0.1\n    port: {}\n    includeRequestHeadersInCheck: [x-ext-allow]\n    headersToUpstreamOnAllow: [x-ext-user]\n    headersToDownstreamOnDeny: [x-ext-reason]\n- name: dead\n  envoyExtAuthzHttp:\n    service: 127.0.0.1\n    port: 1\n    timeout: 1s\n- name: dead-open\n  envoyExtAuthzHttp: {{service: 127.0.0.1, port: 1, failOpen: true}}\n",
        ext.port()
    );
    let policies = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: ext}\nspec:\n  action: CUSTOM\n  provider: {name: ext-authz}\n  rules: [{to: [{operation: {paths: [\"/ext/*\"]}}]}]\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: dead}\nspec:\n  action: CUSTOM\n  provider: {name: dead}\n  rules: [{to: [{operation: {paths: [\"/dead/*\"]}}]}]\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: dead-open}\nspec:\n  action: CUSTOM\n  provider: {name: dead-open}\n  rules: [{to: [{operation: {paths: [\"/open/*\"]}}]}]\n";
    let stack = start(policies, "PERMISSIVE", &mesh_config).await;
    let allow = vec![("x-ext-allow", "yes".to_string())];
    assert_eq!(
        send(&stack, None, "GET", "/ext/a", &allow).await,
        (200, "/ext/a peer=plaintext user=- token-forwarded=false ext-user=checked".into())
    );
    assert_eq!(send(&stack, None, "GET", "/ext/a", &[]).await, (401, "denied by ext".into()));
    // Not matched by the CUSTOM rules: the authorizer is not consulted.
    assert_eq!(send(&stack, None, "GET", "/other", &[]).await.0, 200);
    // Unreachable: denied, unless failOpen.
    assert_eq!(send(&stack, None, "GET", "/dead/x", &allow).await.0, 403);
    assert_eq!(send(&stack, None, "GET", "/open/x", &[]).await.0, 200);
    assert_eq!(stack.decisions("custom_deny"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_refuses_plaintext_at_the_stack() {
    let stack = start(REVIEWS_VIEWER, "STRICT", "").await;
    let tcp = TcpStream::connect(stack.addr).await.unwrap();
    let (mut s, conn) = hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    assert!(s.send_request(Request::builder().uri("/").body(Full::new(Bytes::new())).unwrap()).await.is_err());
    assert_eq!(send(&stack, Some("bookinfo-productpage"), "GET", "/reviews/0", &[]).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_from_a_jwks_uri() {
    let issuer = Issuer::new();
    let jwks = issuer.jwks.clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let jwks_addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let jwks = jwks.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req: Request<Incoming>| {
                    let jwks = jwks.clone();
                    async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(jwks)))) }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), svc).await;
            });
        }
    });
    let yaml = format!(
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: jwt}}\nspec:\n  jwtRules:\n  - issuer: https://issuer.test\n    jwksUri: http://{jwks_addr}/jwks.json\n"
    );
    let snapshot = load_str("ra.yaml", &yaml, &LoadOptions::default()).into_snapshot();
    let shared = ArcSwap::from_pointee(JwtPolicy::compile(&snapshot, "default", &Default::default()));
    let token = issuer.token(&serde_json::json!({"iss": "https://issuer.test", "sub": "jason", "exp": now() + 60}));
    let mut headers = http::HeaderMap::new();
    headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
    // Before the keys are fetched, the token cannot be checked.
    assert_eq!(
        shared.load().authenticate(&mut headers.clone(), None, SystemTime::now()),
        Err(mesh_authz::jwt::JwtError::NoKey)
    );
    mesh_authz::jwt::refresh_keys(&shared).await;
    let auth = shared.load().authenticate(&mut headers, None, SystemTime::now()).unwrap().unwrap();
    assert_eq!(auth.principal, "https://issuer.test/jason");
    assert!(headers.get("authorization").is_none(), "the token is not forwarded by default");
}
