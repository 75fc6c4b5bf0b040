//! An API-server double on loopback that speaks the Kubernetes wire protocol, for tests of
//! anything that talks to a cluster (kube-rs, kubectl) on machines that cannot run one.
//!
//! What it serves, as the real server does:
//! - discovery: `/api`, `/api/v1`, `/apis`, `/apis/{group}`, `/apis/{group}/{version}`;
//! - list (`GET .../{plural}`, all namespaces or one) with `labelSelector` (`k=v`, `k!=v`,
//!   `k`, `!k`), `limit`/`continue` pagination and the list's `resourceVersion`;
//! - watch (`?watch=1&resourceVersion=N`) as a chunked stream of newline-separated
//!   `ADDED`/`MODIFIED`/`DELETED`/`BOOKMARK` events from version `N` on, ending after
//!   `timeoutSeconds`; a version older than the last compaction gets the `410 Gone`
//!   `ERROR` event (reason `Expired`), as from etcd;
//! - get by name (404 `Status` when absent), and `POST` of a `TokenReview`.
//!
//! Objects are kept once per group and served in every version the group serves (Istio's
//! versions share one schema), each change bumping the global `resourceVersion`. Tests
//! script the rest: bookmarks, compaction, closing or expiring open watches, failing or
//! delaying the next requests, and they can read the request log.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    convert::Infallible,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::{
    net::TcpListener,
    sync::{broadcast, mpsc},
};

/// The objects of a YAML or JSON file (every document, `List`s unpacked) as the API's JSON,
/// to feed the double with recorded or sample objects.
pub fn objects_from_file(path: &std::path::Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let docs = mesh_config::load::parse_documents(&text, &mesh_config::load::Limits::default())
        .unwrap_or_else(|e| panic!("{}: {}", path.display(), e.message));
    let mut out = Vec::new();
    for doc in docs {
        let v = doc.to_json();
        match v.get("items").and_then(Value::as_array) {
            Some(items) if v["kind"].as_str().is_some_and(|k| k.ends_with("List")) => out.extend(items.iter().cloned()),
            _ if v.is_object() => out.push(v),
            _ => {}
        }
    }
    out
}

/// One kind the double serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Served {
    /// API group (`""` for the core group).
    pub group: String,
    /// Versions served, preferred first.
    pub versions: Vec<String>,
    /// Resource name (plural).
    pub plural: String,
    /// Kind.
    pub kind: String,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
}

impl Served {
    /// A namespaced kind.
    pub fn new(group: &str, versions: &[&str], plural: &str, kind: &str) -> Self {
        Self {
            group: group.into(),
            versions: versions.iter().map(|v| v.to_string()).collect(),
            plural: plural.into(),
            kind: kind.into(),
            namespaced: true,
        }
    }

    /// What a cluster with Istio's CRDs serves: the Istio kinds in all their versions,
    /// Services, Pods, EndpointSlices, Deployments, ServiceAccounts, Namespaces.
    pub fn cluster_with_istio() -> Vec<Served> {
        let net = ["v1", "v1beta1", "v1alpha3"];
        let sec = ["v1", "v1beta1"];
        let mut out = vec![
            Served::new("networking.istio.io", &net, "virtualservices", "VirtualService"),
            Served::new("networking.istio.io", &net, "destinationrules", "DestinationRule"),
            Served::new("networking.istio.io", &net, "gateways", "Gateway"),
            Served::new("networking.istio.io", &net, "serviceentries", "ServiceEntry"),
            Served::new("networking.istio.io", &net, "workloadentries", "WorkloadEntry"),
            Served::new("networking.istio.io", &net, "sidecars", "Sidecar"),
            Served::new("security.istio.io", &sec, "peerauthentications", "PeerAuthentication"),
            Served::new("security.istio.io", &sec, "authorizationpolicies", "AuthorizationPolicy"),
            Served::new("security.istio.io", &sec, "requestauthentications", "RequestAuthentication"),
            Served::new("telemetry.istio.io", &["v1", "v1alpha1"], "telemetries", "Telemetry"),
        ];
        out.extend(Self::gateway_api());
        out.extend(Self::kubernetes());
        out
    }

    /// The Gateway API's standard channel CRDs (as Istio's install asks for them).
    pub fn gateway_api() -> Vec<Served> {
        let g = "gateway.networking.k8s.io";
        let mut class = Served::new(g, &["v1", "v1beta1"], "gatewayclasses", "GatewayClass");
        class.namespaced = false;
        vec![
            class,
            Served::new(g, &["v1", "v1beta1"], "gateways", "Gateway"),
            Served::new(g, &["v1", "v1beta1"], "httproutes", "HTTPRoute"),
            Served::new(g, &["v1"], "grpcroutes", "GRPCRoute"),
            Served::new(g, &["v1beta1"], "referencegrants", "ReferenceGrant"),
        ]
    }

    /// The built-in kinds only (no Istio CRDs installed).
    pub fn kubernetes() -> Vec<Served> {
        let mut ns = Served::new("", &["v1"], "namespaces", "Namespace");
        ns.namespaced = false;
        vec![
            Served::new("", &["v1"], "services", "Service"),
            Served::new("", &["v1"], "pods", "Pod"),
            Served::new("", &["v1"], "serviceaccounts", "ServiceAccount"),
            Served::new("", &["v1"], "configmaps", "ConfigMap"),
            Served::new("", &["v1"], "secrets", "Secret"),
            ns,
            Served::new("discovery.k8s.io", &["v1"], "endpointslices", "EndpointSlice"),
            Served::new("apps", &["v1"], "deployments", "Deployment"),
            Served::new("apps", &["v1"], "daemonsets", "DaemonSet"),
            Served::new("apps", &["v1"], "statefulsets", "StatefulSet"),
            Served {
                group: "apiextensions.k8s.io".into(),
                versions: vec!["v1".into()],
                plural: "customresourcedefinitions".into(),
                kind: "CustomResourceDefinition".into(),
                namespaced: false,
            },
            Served {
                group: "rbac.authorization.k8s.io".into(),
                versions: vec!["v1".into()],
                plural: "clusterroles".into(),
                kind: "ClusterRole".into(),
                namespaced: false,
            },
            Served {
                group: "rbac.authorization.k8s.io".into(),
                versions: vec!["v1".into()],
                plural: "clusterrolebindings".into(),
                kind: "ClusterRoleBinding".into(),
                namespaced: false,
            },
            Served::new("rbac.authorization.k8s.io", &["v1"], "roles", "Role"),
            Served::new("rbac.authorization.k8s.io", &["v1"], "rolebindings", "RoleBinding"),
        ]
    }
}

/// A request as the double saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    /// When it arrived.
    pub at: tokio::time::Instant,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// Method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Query parameters.
    pub query: BTreeMap<String, String>,
}

impl Seen {
    /// Whether this was a watch.
    pub fn is_watch(&self) -> bool {
        matches!(self.query.get("watch").map(String::as_str), Some("1" | "true"))
    }
}

/// A scripted answer to the next request whose path contains `path`.
#[derive(Clone, Debug)]
struct Fault {
    path: String,
    status: Option<StatusCode>,
    delay: Duration,
}

#[derive(Clone, Debug)]
struct Change {
    rv: u64,
    key: ObjKey,
    kind: &'static str,
    object: Value,
}

/// (group, plural, namespace, name)
type ObjKey = (String, String, String, String);

#[derive(Debug, Default)]
struct State {
    rv: u64,
    objects: BTreeMap<ObjKey, Value>,
    history: Vec<Change>,
    /// Watches from a version older than this get 410.
    compacted: u64,
    faults: VecDeque<Fault>,
    seen: Vec<Seen>,
    tokens: HashMap<String, (String, String)>,
    uid: u64,
}

/// What open watches are told besides changes.
#[derive(Clone, Debug)]
enum Signal {
    Change(Change),
    Bookmark(u64),
    Close,
    Expire,
}

struct Inner {
    served: Vec<Served>,
    state: Mutex<State>,
    signals: broadcast::Sender<Signal>,
}

/// The running double; dropping it stops it.
pub struct ApiServer {
    inner: Arc<Inner>,
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
    /// With HTTPS: the CA certificate (PEM) that signed the serving certificate.
    ca_pem: Option<String>,
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(inner: &Inner) -> std::sync::MutexGuard<'_, State> {
    inner.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ApiServer {
    /// Serve `served` over plain HTTP on 127.0.0.1 at a port of its own.
    pub async fn start(served: Vec<Served>) -> std::io::Result<Self> {
        Self::start_with(served, None).await
    }

    /// Serve `served` over HTTPS, as a cluster's API server does, with a certificate for
    /// 127.0.0.1 from a CA of its own ([`ApiServer::ca_pem`]: what a pod finds in
    /// `ca.crt`).
    pub async fn start_tls(served: Vec<Served>) -> std::io::Result<Self> {
        let fail = |e: rcgen::Error| std::io::Error::other(e.to_string());
        let ca_key = rcgen::KeyPair::generate().map_err(fail)?;
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "kubernetes-ca");
        let ca_cert = ca_params.self_signed(&ca_key).map_err(fail)?;
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().map_err(fail)?;
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).map_err(fail)?;
        params.subject_alt_names.push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
        let cert = params.signed_by(&key, &issuer).map_err(fail)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(std::io::Error::other)?
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone(), ca_cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .map_err(std::io::Error::other)?;
        let mut config = config;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let mut server = Self::start_with(served, Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))).await?;
        server.ca_pem = Some(ca_cert.pem());
        Ok(server)
    }

    async fn start_with(served: Vec<Served>, tls: Option<tokio_rustls::TlsAcceptor>) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (signals, _) = broadcast::channel(4096);
        let inner = Arc::new(Inner { served, state: Mutex::new(State { rv: 1000, ..State::default() }), signals });
        let server = inner.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let (inner, tls) = (server.clone(), tls.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let inner = inner.clone();
                        async move { Ok::<_, Infallible>(handle(&inner, req).await) }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    let _ = match tls {
                        Some(tls) => match tls.accept(tcp).await {
                            Ok(io) => http.serve_connection(TokioIo::new(io), svc).await,
                            Err(_) => return,
                        },
                        None => http.serve_connection(TokioIo::new(tcp), svc).await,
                    };
                });
            }
        });
        Ok(Self { inner, addr, task, ca_pem: None })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// With [`ApiServer::start_tls`]: the CA certificate (PEM) clients trust.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// `http://127.0.0.1:PORT`, or `https://` when serving TLS.
    pub fn url(&self) -> String {
        format!("{}://{}", if self.ca_pem.is_some() { "https" } else { "http" }, self.addr)
    }

    /// A kubeconfig pointing at the double (for kubectl and `kube::Config::infer`), with
    /// its CA when it serves HTTPS.
    pub fn kubeconfig(&self) -> String {
        let ca = self.ca_pem.as_ref().map_or_else(String::new, |pem| {
            format!("    certificate-authority-data: {}\n", mesh_core::base64::encode(pem.as_bytes()))
        });
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: double\n  cluster:\n    server: {}\n{ca}contexts:\n- name: double\n  context:\n    cluster: double\n    user: test\n    namespace: default\ncurrent-context: double\nusers:\n- name: test\n  user:\n    token: test-token\n",
            self.url()
        )
    }

    /// A kube-rs client for the double (trusting its CA when it serves HTTPS).
    pub fn client(&self) -> kube::Client {
        let mut config = kube::Config::new(self.url().parse().expect("a valid URL"));
        if let Some(pem) = &self.ca_pem {
            use rustls::pki_types::{CertificateDer, pem::PemObject};
            let der = CertificateDer::from_pem_slice(pem.as_bytes()).expect("the double's own CA parses");
            config.root_cert = Some(vec![der.to_vec()]);
        }
        kube::Client::try_from(config).expect("a client for the double")
    }

    fn served_for(&self, api_version: &str, kind: &str) -> Option<&Served> {
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        self.inner.served.iter().find(|s| s.group == group && s.kind == kind)
    }

    /// Create or update an object (JSON as the API takes it; `metadata.namespace` defaults
    /// to `default` for namespaced kinds). Returns its new `resourceVersion`.
    pub fn apply(&self, mut object: Value) -> u64 {
        let api_version = object["apiVersion"].as_str().unwrap_or_default().to_string();
        let kind = object["kind"].as_str().unwrap_or_default().to_string();
        let served =
            self.served_for(&api_version, &kind).unwrap_or_else(|| panic!("{api_version} {kind} is not served"));
        let ns = if served.namespaced {
            object["metadata"]["namespace"].as_str().unwrap_or("default").to_string()
        } else {
            String::new()
        };
        let name = object["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let key = (served.group.clone(), served.plural.clone(), ns.clone(), name);
        let mut st = lock(&self.inner);
        st.rv += 1;
        st.uid += 1;
        let rv = st.rv;
        let existing = st.objects.get(&key).cloned();
        if served.namespaced {
            object["metadata"]["namespace"] = ns.into();
        }
        object["metadata"]["resourceVersion"] = rv.to_string().into();
        match &existing {
            Some(old) => {
                object["metadata"]["uid"] = old["metadata"]["uid"].clone();
                object["metadata"]["creationTimestamp"] = old["metadata"]["creationTimestamp"].clone();
                // The generation moves when anything but metadata and status changes.
                let content = |o: &Value| {
                    let mut o = o.clone();
                    if let Some(m) = o.as_object_mut() {
                        m.remove("metadata");
                        m.remove("status");
                    }
                    o
                };
                let generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
                let changed = content(old) != content(&object);
                object["metadata"]["generation"] = (generation + i64::from(changed)).into();
            }
            None => {
                let meta = &mut object["metadata"];
                if meta.get("uid").is_none() {
                    meta["uid"] = format!("00000000-0000-4000-8000-{:012}", st.uid).into();
                }
                if meta.get("creationTimestamp").is_none() {
                    meta["creationTimestamp"] = "2026-11-27T10:00:00Z".into();
                }
                meta["generation"] = 1.into();
            }
        }
        st.objects.insert(key.clone(), object.clone());
        let change = Change { rv, key, kind: if existing.is_some() { "MODIFIED" } else { "ADDED" }, object };
        st.history.push(change.clone());
        drop(st);
        let _ = self.inner.signals.send(Signal::Change(change));
        rv
    }

    /// Apply every object of `objects` the double serves; the others (kinds it does not
    /// know) are skipped. Returns how many were applied.
    pub fn apply_all(&self, objects: impl IntoIterator<Item = Value>) -> usize {
        let mut n = 0;
        for o in objects {
            if self.served_for(o["apiVersion"].as_str().unwrap_or(""), o["kind"].as_str().unwrap_or("")).is_some() {
                self.apply(o);
                n += 1;
            }
        }
        n
    }

    /// Remove an object as if its `DELETED` event had been lost: no open watch hears of it
    /// and the history is compacted past it, so only a relist can tell.
    pub fn remove_unseen(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> bool {
        let served = self.served_for(api_version, kind).unwrap_or_else(|| panic!("{api_version} {kind} is not served"));
        let ns = if served.namespaced { namespace } else { "" };
        let key = (served.group.clone(), served.plural.clone(), ns.to_string(), name.to_string());
        let mut st = lock(&self.inner);
        let existed = st.objects.remove(&key).is_some();
        st.rv += 1;
        st.compacted = st.rv;
        st.history.clear();
        existed
    }

    /// Delete an object; whether it existed.
    pub fn delete(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> bool {
        let served = self.served_for(api_version, kind).unwrap_or_else(|| panic!("{api_version} {kind} is not served"));
        let ns = if served.namespaced { namespace } else { "" };
        let key = (served.group.clone(), served.plural.clone(), ns.to_string(), name.to_string());
        let mut st = lock(&self.inner);
        let Some(mut object) = st.objects.remove(&key) else { return false };
        st.rv += 1;
        let rv = st.rv;
        object["metadata"]["resourceVersion"] = rv.to_string().into();
        let change = Change { rv, key, kind: "DELETED", object };
        st.history.push(change.clone());
        drop(st);
        let _ = self.inner.signals.send(Signal::Change(change));
        true
    }

    /// The current `resourceVersion`.
    pub fn resource_version(&self) -> u64 {
        lock(&self.inner).rv
    }

    /// Send a `BOOKMARK` at the current version on every open watch.
    pub fn bookmark(&self) {
        let rv = self.resource_version();
        let _ = self.inner.signals.send(Signal::Bookmark(rv));
    }

    /// Forget the history up to now, as etcd compaction does: a watch resumed from an
    /// older version gets `410 Gone`.
    pub fn compact(&self) {
        let mut st = lock(&self.inner);
        st.compacted = st.rv;
        st.history.clear();
    }

    /// End every open watch stream (as the server does at `timeoutSeconds`).
    pub fn close_watches(&self) {
        let _ = self.inner.signals.send(Signal::Close);
    }

    /// Compact, and tell every open watch its version is gone (`ERROR` 410, then the end).
    pub fn expire_watches(&self) {
        self.compact();
        let _ = self.inner.signals.send(Signal::Expire);
    }

    /// Answer the next request whose path contains `path` with `status` (a `Status` body).
    pub fn fail_next(&self, path: &str, status: StatusCode) {
        lock(&self.inner).faults.push_back(Fault { path: path.into(), status: Some(status), delay: Duration::ZERO });
    }

    /// Hold the next request whose path contains `path` for `delay` before answering it.
    pub fn delay_next(&self, path: &str, delay: Duration) {
        lock(&self.inner).faults.push_back(Fault { path: path.into(), status: None, delay });
    }

    /// A TokenReview of `token` authenticates the service account `namespace/name`.
    pub fn add_token(&self, token: &str, namespace: &str, service_account: &str) {
        lock(&self.inner).tokens.insert(token.into(), (namespace.into(), service_account.into()));
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Seen> {
        lock(&self.inner).seen.clone()
    }
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response<WatchBody> {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16()});
    json_response(code, &body)
}

fn json_response(code: StatusCode, body: &Value) -> Response<WatchBody> {
    let mut rsp = Response::new(WatchBody::full(Bytes::from(body.to_string())));
    *rsp.status_mut() = code;
    rsp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    rsp
}

fn query(req: &Request<Incoming>) -> BTreeMap<String, String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `k=v,k!=v,k,!k` against an object's labels.
fn selector_matches(selector: &str, object: &Value) -> bool {
    let labels = &object["metadata"]["labels"];
    selector.split(',').map(str::trim).filter(|t| !t.is_empty()).all(|term| {
        if let Some((k, v)) = term.split_once("!=") {
            labels[k.trim()].as_str() != Some(v.trim())
        } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            labels[k.trim()].as_str() == Some(v.trim())
        } else if let Some(k) = term.strip_prefix('!') {
            labels.get(k).is_none()
        } else {
            labels.get(term).is_some()
        }
    })
}

/// What a path names: discovery, or a resource collection or object.
enum Target<'a> {
    Discovery(Value),
    Collection { served: &'a Served, version: String, namespace: Option<String>, name: Option<String> },
    TokenReview,
    NotFound,
}

fn route<'a>(served: &'a [Served], path: &str) -> Target<'a> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').filter(|p| !p.is_empty()).collect();
    let group_versions = |group: &str| -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        for s in served.iter().filter(|s| s.group == group) {
            for ver in &s.versions {
                if !v.contains(ver) {
                    v.push(ver.clone());
                }
            }
        }
        v
    };
    let group_json = |group: &str| {
        let versions: Vec<Value> = group_versions(group)
            .iter()
            .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
            .collect();
        json!({"name": group, "versions": versions, "preferredVersion": versions.first().cloned().unwrap_or(Value::Null)})
    };
    let resource_list = |group: &str, version: &str| {
        let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
        let resources: Vec<Value> = served
            .iter()
            .filter(|s| s.group == group && s.versions.iter().any(|v| v == version))
            .map(|s| {
                json!({"name": s.plural, "singularName": s.kind.to_ascii_lowercase(), "namespaced": s.namespaced,
                    "kind": s.kind, "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]})
            })
            .collect();
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})
    };
    let collection = |group: &str, version: &str, rest: &[&str]| -> Target<'a> {
        let (namespace, rest) = match rest {
            ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
            _ => (None, rest),
        };
        let (plural, name) = match rest {
            [plural] => (*plural, None),
            [plural, name] => (*plural, Some(name.to_string())),
            _ => return Target::NotFound,
        };
        match served.iter().find(|s| s.group == group && s.plural == plural && s.versions.iter().any(|v| v == version))
        {
            Some(s) => Target::Collection { served: s, version: version.into(), namespace, name },
            None => Target::NotFound,
        }
    };
    match parts.as_slice() {
        ["api"] => {
            Target::Discovery(json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}))
        }
        ["api", "v1"] => Target::Discovery(resource_list("", "v1")),
        ["api", "v1", rest @ ..] => collection("", "v1", rest),
        ["apis"] => {
            let mut groups: Vec<&str> = Vec::new();
            for s in served.iter().filter(|s| !s.group.is_empty()) {
                if !groups.contains(&s.group.as_str()) {
                    groups.push(&s.group);
                }
            }
            let groups: Vec<Value> = groups.iter().map(|g| group_json(g)).collect();
            Target::Discovery(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}))
        }
        ["apis", "authentication.k8s.io", "v1", "tokenreviews"] => Target::TokenReview,
        ["apis", group] if !group_versions(group).is_empty() => {
            let mut g = group_json(group);
            g["kind"] = "APIGroup".into();
            g["apiVersion"] = "v1".into();
            Target::Discovery(g)
        }
        ["apis", group, version] if group_versions(group).iter().any(|v| v == version) => {
            Target::Discovery(resource_list(group, version))
        }
        ["apis", group, version, rest @ ..] => collection(group, version, rest),
        _ => Target::NotFound,
    }
}

/// The object as served in `version`.
fn in_version(served: &Served, version: &str, object: &Value) -> Value {
    let mut o = object.clone();
    o["apiVersion"] =
        if served.group.is_empty() { version.to_string() } else { format!("{}/{version}", served.group) }.into();
    o
}

async fn handle(inner: &Arc<Inner>, req: Request<Incoming>) -> Response<WatchBody> {
    let path = req.uri().path().to_string();
    let q = query(&req);
    let fault = {
        let mut st = lock(inner);
        let authorization =
            req.headers().get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_string);
        st.seen.push(Seen {
            at: tokio::time::Instant::now(),
            authorization,
            method: req.method().to_string(),
            path: path.clone(),
            query: q.clone(),
        });
        let i = st.faults.iter().position(|f| path.contains(&f.path));
        i.and_then(|i| st.faults.remove(i))
    };
    if let Some(f) = fault {
        tokio::time::sleep(f.delay).await;
        if let Some(code) = f.status {
            return status(code, "InternalError", "scripted failure");
        }
    }
    match route(&inner.served, &path) {
        Target::Discovery(v) if req.method() == Method::GET => json_response(StatusCode::OK, &v),
        Target::TokenReview if req.method() == Method::POST => token_review(inner, req).await,
        Target::Collection { served, version, namespace, name } => {
            if req.method() != Method::GET {
                return status(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", "the double only reads");
            }
            match name {
                Some(name) => get(inner, served, &version, namespace.as_deref(), &name),
                None if matches!(q.get("watch").map(String::as_str), Some("1" | "true")) => {
                    watch(inner, served, &version, namespace, &q)
                }
                None => list(inner, served, &version, namespace.as_deref(), &q),
            }
        }
        _ => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("the server could not find the requested resource ({path})"),
        ),
    }
}

fn get(inner: &Inner, served: &Served, version: &str, namespace: Option<&str>, name: &str) -> Response<WatchBody> {
    let key = (served.group.clone(), served.plural.clone(), namespace.unwrap_or("").to_string(), name.to_string());
    match lock(inner).objects.get(&key) {
        Some(o) => json_response(StatusCode::OK, &in_version(served, version, o)),
        None => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("{}.{} \"{name}\" not found", served.plural, served.group),
        ),
    }
}

fn in_scope(key: &ObjKey, served: &Served, namespace: Option<&str>) -> bool {
    key.0 == served.group && key.1 == served.plural && namespace.is_none_or(|ns| key.2 == ns)
}

fn list(
    inner: &Inner,
    served: &Served,
    version: &str,
    namespace: Option<&str>,
    q: &BTreeMap<String, String>,
) -> Response<WatchBody> {
    let st = lock(inner);
    let selector = q.get("labelSelector").map(String::as_str).unwrap_or("");
    let all: Vec<Value> = st
        .objects
        .iter()
        .filter(|(k, o)| in_scope(k, served, namespace) && selector_matches(selector, o))
        .map(|(_, o)| in_version(served, version, o))
        .collect();
    let start: usize = q.get("continue").and_then(|c| c.parse().ok()).unwrap_or(0);
    let limit: usize = q.get("limit").and_then(|l| l.parse().ok()).filter(|l| *l > 0).unwrap_or(usize::MAX);
    let end = start.saturating_add(limit).min(all.len());
    let items = all.get(start..end).unwrap_or_default().to_vec();
    let mut meta = json!({"resourceVersion": st.rv.to_string()});
    if end < all.len() {
        meta["continue"] = end.to_string().into();
    }
    let api_version = if served.group.is_empty() { version.to_string() } else { format!("{}/{version}", served.group) };
    json_response(
        StatusCode::OK,
        &json!({"kind": format!("{}List", served.kind), "apiVersion": api_version, "metadata": meta, "items": items}),
    )
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

fn gone() -> Bytes {
    event_line(
        "ERROR",
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "too old resource version", "reason": "Expired", "code": 410}),
    )
}

fn watch(
    inner: &Arc<Inner>,
    served: &Served,
    version: &str,
    namespace: Option<String>,
    q: &BTreeMap<String, String>,
) -> Response<WatchBody> {
    let from: u64 = q.get("resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
    let selector = q.get("labelSelector").cloned().unwrap_or_default();
    let bookmarks = matches!(q.get("allowWatchBookmarks").map(String::as_str), Some("true" | "1"));
    let timeout = Duration::from_secs(q.get("timeoutSeconds").and_then(|t| t.parse().ok()).unwrap_or(300));
    let (tx, rx) = mpsc::channel::<Bytes>(1024);
    let served = served.clone();
    let version = version.to_string();
    // A bookmark is an object of the watched kind carrying only its resourceVersion.
    let bookmark_kind = served.kind.clone();
    let bookmark_api_version =
        if served.group.is_empty() { version.clone() } else { format!("{}/{version}", served.group) };
    let mut signals = inner.signals.subscribe();
    let (backlog, expired) = {
        let st = lock(inner);
        let expired = from != 0 && from < st.compacted;
        let backlog: Vec<Change> = st
            .history
            .iter()
            .filter(|c| c.rv > from && in_scope(&c.key, &served, namespace.as_deref()))
            .cloned()
            .collect();
        (backlog, expired)
    };
    let send_change = move |c: &Change| -> Option<Bytes> {
        if !in_scope(&c.key, &served, namespace.as_deref()) {
            return None;
        }
        if !selector_matches(&selector, &c.object) {
            return None;
        }
        Some(event_line(c.kind, &in_version(&served, &version, &c.object)))
    };
    tokio::spawn(async move {
        if expired {
            let _ = tx.send(gone()).await;
            return;
        }
        for c in &backlog {
            if let Some(line) = send_change(c)
                && tx.send(line).await.is_err()
            {
                return;
            }
        }
        let last = backlog.last().map_or(from, |c| c.rv);
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        loop {
            let signal = tokio::select! {
                s = signals.recv() => s,
                () = &mut deadline => return,
            };
            let line = match signal {
                Ok(Signal::Change(c)) if c.rv > last => send_change(&c),
                Ok(Signal::Change(_)) => None,
                Ok(Signal::Bookmark(rv)) if bookmarks => Some(event_line(
                    "BOOKMARK",
                    &json!({"kind": bookmark_kind, "apiVersion": bookmark_api_version, "metadata": {"resourceVersion": rv.to_string()}}),
                )),
                Ok(Signal::Bookmark(_)) => None,
                Ok(Signal::Close) | Err(_) => return,
                Ok(Signal::Expire) => {
                    let _ = tx.send(gone()).await;
                    return;
                }
            };
            if let Some(line) = line
                && tx.send(line).await.is_err()
            {
                return;
            }
        }
    });
    let mut rsp = Response::new(WatchBody { rx: Some(rx), full: None });
    rsp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    rsp
}

async fn token_review(inner: &Inner, req: Request<Incoming>) -> Response<WatchBody> {
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return status(StatusCode::BAD_REQUEST, "BadRequest", "unreadable body"),
    };
    let Ok(review) = serde_json::from_slice::<Value>(&body) else {
        return status(StatusCode::BAD_REQUEST, "BadRequest", "not JSON");
    };
    let token = review["spec"]["token"].as_str().unwrap_or_default();
    let audiences = review["spec"]["audiences"].clone();
    let found = lock(inner).tokens.get(token).cloned();
    let status = match found {
        Some((ns, sa)) => json!({"authenticated": true, "audiences": audiences,
            "user": {"username": format!("system:serviceaccount:{ns}:{sa}"), "uid": "1",
                     "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{ns}"), "system:authenticated"]}}),
        None => json!({"authenticated": false, "error": "invalid bearer token"}),
    };
    json_response(
        StatusCode::CREATED,
        &json!({"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1", "metadata": {},
            "spec": review["spec"], "status": status}),
    )
}

/// A whole body, or a stream of chunks until the sender is gone.
#[derive(Debug)]
pub struct WatchBody {
    rx: Option<mpsc::Receiver<Bytes>>,
    full: Option<Bytes>,
}

impl WatchBody {
    fn full(b: Bytes) -> Self {
        Self { rx: None, full: Some(b) }
    }
}

impl http_body::Body for WatchBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(b) = self.full.take() {
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        match &mut self.rx {
            Some(rx) => rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b)))),
            None => Poll::Ready(None),
        }
    }
}
