//! Real processes on loopback: `mesh-sidecar` children, in-process apps, a hyper client.

#![allow(dead_code, unreachable_pub)]

/// Test manifests, one builder for every test file (mesh-core's `test-util`).
#[allow(unused_imports)] // not every test file writes manifests
pub use mesh_config::test_util::Manifest;
#[allow(unused_imports)]
pub use std::sync::LazyLock;

use std::{
    collections::BTreeMap,
    convert::Infallible,
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, mpsc},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};

/// Outlier detection on reviews: three consecutive 5xx eject an endpoint for 30 s.
pub const OUTLIER: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews-outlier}
spec:
  host: reviews
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 3, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 100}
"#;

/// A config folder and a CA folder that the sidecars of one test share.
pub struct Mesh {
    pub dir: tempfile::TempDir,
}

impl Mesh {
    pub fn new(files: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("config")).unwrap();
        let mesh = Self { dir };
        for (name, text) in files {
            mesh.write(name, text);
        }
        mesh
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca")
    }

    /// Write a config file the way editors do: a temporary file renamed over the old one.
    pub fn write(&self, name: &str, text: &str) {
        let tmp = self.dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.config().join(name)).unwrap();
    }
}

/// A running `mesh-sidecar`.
pub struct Sidecar {
    child: Child,
    pub outbound: Option<SocketAddr>,
    pub inbound: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
    /// Gateway listeners by server port.
    pub gateway: BTreeMap<u16, SocketAddr>,
    /// Every listener by the name it announced (`tcp HOST:PORT`, ...).
    pub listeners: BTreeMap<String, SocketAddr>,
    /// Access log lines (stdout).
    pub access_log: Arc<Mutex<Vec<String>>>,
    /// Diagnostics (stderr).
    pub log: Arc<Mutex<Vec<String>>>,
}

/// What a sidecar serves.
pub struct Spec<'a> {
    pub labels: &'a str,
    pub app: Option<SocketAddr>,
    /// `--gateway NS/NAME` and the Gateway server ports to listen for (on free ports).
    pub gateway: Option<(&'a str, Vec<u16>)>,
    /// `--tcp 127.0.0.1:0=HOST:PORT` forwards.
    pub tcp: Vec<String>,
    pub endpoints: Vec<String>,
    pub extra: Vec<String>,
    /// `--kube` with this kubeconfig instead of `--config`.
    pub kubeconfig: Option<PathBuf>,
    /// Only the cluster CA (`--ca-listen`), no proxy.
    pub ca_only: bool,
    /// Run as in a pod: `--kube` with no kubeconfig, the service-account files (`token`,
    /// `ca.crt`, `namespace`) of this folder at their in-cluster path (in a private mount
    /// namespace: needs root) and `KUBERNETES_SERVICE_HOST`/`_PORT` set to this address.
    pub in_cluster: Option<(PathBuf, SocketAddr)>,
    /// `--ca-dir` other than the mesh's.
    pub ca_dir: Option<PathBuf>,
    /// Start under this descriptor limit (soft and hard, `ulimit -n`).
    pub fd_limit: Option<u64>,
}

impl<'a> Spec<'a> {
    pub fn client(labels: &'a str) -> Self {
        Self {
            labels,
            app: None,
            gateway: None,
            tcp: Vec::new(),
            endpoints: Vec::new(),
            extra: Vec::new(),
            kubeconfig: None,
            ca_only: false,
            ca_dir: None,
            in_cluster: None,
            fd_limit: None,
        }
    }

    /// The cluster CA alone, on a free port.
    pub fn ca() -> Self {
        Self { ca_only: true, ..Self::client("") }
    }

    pub fn server(labels: &'a str, app: SocketAddr) -> Self {
        Self { app: Some(app), ..Self::client(labels) }
    }

    pub fn gateway(name: &'a str, ports: &[u16]) -> Self {
        Self { gateway: Some((name, ports.to_vec())), ..Self::client("") }
    }

    /// `--endpoint default/<workload>=<addr>`.
    pub fn endpoint(mut self, workload: &str, addr: SocketAddr) -> Self {
        self.endpoints.push(format!("default/{workload}={addr}"));
        self
    }

    /// Plain TCP to `target` (`HOST:PORT`) through a listener of its own.
    pub fn tcp(mut self, target: &str) -> Self {
        self.tcp.push(target.to_string());
        self
    }

    /// Run as in a pod whose service-account files are in `dir`, the API server at `api`.
    pub fn in_cluster(mut self, dir: &Path, api: SocketAddr) -> Self {
        self.in_cluster = Some((dir.to_path_buf(), api));
        self
    }

    /// Read the config from the API server the kubeconfig at `path` names.
    pub fn kube(mut self, path: &Path) -> Self {
        self.kubeconfig = Some(path.to_path_buf());
        self
    }

    pub fn arg(mut self, a: &str) -> Self {
        self.extra.push(a.to_string());
        self
    }
}

impl Sidecar {
    pub fn start(mesh: &Mesh, spec: Spec<'_>) -> Self {
        let mut cmd = match &spec.in_cluster {
            Some((dir, api)) => {
                // /var/run is /run: a fresh tmpfs there, seen by this process only.
                let script = "mount -t tmpfs tmpfs /run && mkdir -p /run/secrets/kubernetes.io/serviceaccount \
                    && cp \"$SA_DIR\"/* /run/secrets/kubernetes.io/serviceaccount/ && exec \"$@\"";
                let mut cmd = Command::new("unshare");
                cmd.args(["--mount", "--propagation", "private", "sh", "-c", script, "sh"])
                    .arg(env!("CARGO_BIN_EXE_mesh-sidecar"))
                    .arg("--kube")
                    .env("SA_DIR", dir)
                    .env("KUBERNETES_SERVICE_HOST", api.ip().to_string())
                    .env("KUBERNETES_SERVICE_PORT", api.port().to_string())
                    .env("HOME", dir)
                    .env_remove("KUBECONFIG");
                cmd
            }
            None => {
                let mut cmd = match spec.fd_limit {
                    Some(n) => {
                        let mut cmd = Command::new("sh");
                        cmd.args(["-c", &format!("ulimit -n {n} && exec \"$@\""), "sh"])
                            .arg(env!("CARGO_BIN_EXE_mesh-sidecar"));
                        cmd
                    }
                    None => Command::new(env!("CARGO_BIN_EXE_mesh-sidecar")),
                };
                match &spec.kubeconfig {
                    Some(k) => {
                        cmd.arg("--kube").env("KUBECONFIG", k);
                    }
                    None => {
                        cmd.arg("--config").arg(mesh.config());
                    }
                }
                cmd
            }
        };
        cmd.args(["--admin", "127.0.0.1:0"]);
        match &spec.gateway {
            _ if spec.ca_only => {
                cmd.args(["--ca-listen", "127.0.0.1:0"]);
            }
            Some((name, ports)) => {
                cmd.args(["--gateway", name]);
                for p in ports {
                    cmd.args(["--listen", &format!("{p}=127.0.0.1:0")]);
                }
            }
            None => {
                cmd.args(["--outbound", "127.0.0.1:0", "--workload-labels", spec.labels]);
            }
        }
        cmd.arg("--ca-dir").arg(spec.ca_dir.clone().unwrap_or_else(|| mesh.ca())).args(["--log-level", "info"]);
        if let Some(app) = spec.app {
            cmd.args(["--inbound", "127.0.0.1:0", "--app", &app.to_string()]);
        }
        for e in &spec.endpoints {
            cmd.args(["--endpoint", e]);
        }
        for t in &spec.tcp {
            cmd.args(["--tcp", &format!("127.0.0.1:0={t}")]);
        }
        cmd.args(&spec.extra);
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("mesh-sidecar starts");
        let access_log = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().unwrap();
        let sink = access_log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("mesh-sidecar: ")
                    && let Some((name, addr)) = rest.split_once(" listening on ")
                {
                    let _ = tx.send((name.to_string(), addr.parse::<SocketAddr>().unwrap()));
                }
                sink.lock().unwrap().push(line);
            }
        });
        let want = spec.tcp.len()
            + match &spec.gateway {
                _ if spec.ca_only => 1,
                Some((_, ports)) => 1 + ports.len(),
                None if spec.app.is_some() => 3,
                None => 2,
            };
        let mut addrs = BTreeMap::new();
        while addrs.len() < want {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok((name, addr)) => {
                    addrs.insert(name, addr);
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!("mesh-sidecar did not start:\n{}", log.lock().unwrap().join("\n"));
                }
            }
        }
        Self {
            child,
            outbound: addrs.get("outbound").copied(),
            inbound: addrs.get("inbound").copied(),
            admin: addrs.get("admin").copied(),
            gateway: addrs
                .iter()
                .filter_map(|(name, a)| Some((name.strip_prefix("gateway ")?.parse().ok()?, *a)))
                .collect(),
            listeners: addrs.clone(),
            access_log,
            log,
        }
    }

    pub fn outbound(&self) -> SocketAddr {
        self.outbound.unwrap()
    }

    pub fn inbound(&self) -> SocketAddr {
        self.inbound.unwrap()
    }

    /// Send SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }

    /// SIGKILL, as a pod dies: no drain, connections reset.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Wait for the process to exit (up to `limit`).
    pub fn wait(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        for _ in 0..limit.as_millis().div_ceil(20) {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child.try_wait().unwrap()
    }

    /// An admin page.
    pub async fn admin_get(&self, path: &str) -> Reply {
        send(self.admin.unwrap(), Req::get(path)).await.unwrap()
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What an app answers: status, body, and how long to wait first.
pub type Handler = Arc<dyn Fn(&Request<Incoming>) -> (u16, String, Duration) + Send + Sync>;

/// An app on loopback (HTTP/1.1 and h2c); every request it saw is recorded.
pub struct App {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<http::request::Parts>>>,
}

impl App {
    pub async fn start(handler: Handler) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let (handler, record) = (handler.clone(), record.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (status, body, delay) = handler(&req);
                        let (parts, _) = req.into_parts();
                        record.lock().unwrap().push(parts);
                        async move {
                            tokio::time::sleep(delay).await;
                            let mut rsp = Response::new(Full::new(Bytes::from(body)));
                            *rsp.status_mut() = StatusCode::from_u16(status).unwrap();
                            Ok::<_, Infallible>(rsp)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Self { addr, seen }
    }

    /// An app answering 200 with `name` as the body.
    pub async fn named(name: &str) -> Self {
        let name = name.to_string();
        Self::start(Arc::new(move |_| (200, name.clone(), Duration::ZERO))).await
    }
}

/// A request to send.
pub struct Req {
    pub method: &'static str,
    pub uri: String,
    pub headers: Vec<(String, String)>,
}

impl Req {
    pub fn get(uri: &str) -> Self {
        Self { method: "GET", uri: uri.into(), headers: Vec::new() }
    }

    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

/// One HTTP/1.1 request on a new connection.
pub async fn send(addr: SocketAddr, req: Req) -> Result<Reply, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut b = Request::builder().method(req.method).uri(&req.uri);
    for (k, v) in &req.headers {
        b = b.header(k, v);
    }
    let rsp = s.send_request(b.body(Full::new(Bytes::new())).unwrap()).await.map_err(|e| e.to_string())?;
    let status = rsp.status().as_u16();
    let headers = rsp.headers().clone();
    let body = rsp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(Reply { status, headers, body: String::from_utf8_lossy(&body).into_owned() })
}

/// GET `path` from `host` through the outbound listener at `proxy`, in origin form.
pub async fn get(proxy: SocketAddr, host: &str, path: &str) -> Reply {
    send(proxy, Req::get(path).header("host", host)).await.unwrap()
}

/// The value of the first sample of `name` whose labels include all of `labels`.
pub fn sample(exposition: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    exposition
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The sum of every sample of `name` whose labels include all of `labels`.
pub fn total(exposition: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    exposition
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Wait until `f` holds (checked every 50 ms, up to 10 s).
pub async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    for _ in 0..200 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

pub fn path(p: &Path) -> String {
    p.display().to_string()
}

/// WebSocket (RFC 6455), as much as an echo test needs.
pub mod ws {
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

    fn base64(bytes: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for c in bytes.chunks(3) {
            let n = (u32::from(c[0]) << 16)
                | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
                | u32::from(*c.get(2).unwrap_or(&0));
            for i in 0..4 {
                if i <= c.len() {
                    out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    /// `Sec-WebSocket-Accept` for a key.
    pub fn accept(key: &str) -> String {
        let d = ring::digest::digest(
            &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
            format!("{key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11").as_bytes(),
        );
        base64(d.as_ref())
    }

    /// Write one final text frame (masked when a client sends it).
    pub async fn write_text(io: &mut (impl AsyncWrite + Unpin), text: &str, mask: Option<[u8; 4]>) {
        let payload = text.as_bytes();
        assert!(payload.len() < 126);
        let mut frame = vec![0x81, u8::try_from(payload.len()).unwrap() | if mask.is_some() { 0x80 } else { 0 }];
        match mask {
            Some(m) => {
                frame.extend_from_slice(&m);
                frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ m[i % 4]));
            }
            None => frame.extend_from_slice(payload),
        }
        io.write_all(&frame).await.unwrap();
        io.flush().await.unwrap();
    }

    /// Read one small frame's text (unmasking it).
    pub async fn read_text(io: &mut (impl AsyncRead + Unpin)) -> String {
        let mut head = [0u8; 2];
        io.read_exact(&mut head).await.unwrap();
        assert_eq!(head[0], 0x81, "a final text frame");
        let len = usize::from(head[1] & 0x7f);
        assert!(len < 126);
        let mask = if head[1] & 0x80 != 0 {
            let mut m = [0u8; 4];
            io.read_exact(&mut m).await.unwrap();
            Some(m)
        } else {
            None
        };
        let mut payload = vec![0u8; len];
        io.read_exact(&mut payload).await.unwrap();
        if let Some(m) = mask {
            payload.iter_mut().enumerate().for_each(|(i, b)| *b ^= m[i % 4]);
        }
        String::from_utf8(payload).unwrap()
    }

    /// RFC 6455 §1.3 gives this pair.
    #[test]
    fn the_rfc_example_key() {
        assert_eq!(accept("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }
}

/// Raw bytes in, the whole answer out (until the proxy closes or 2 s pass).
pub async fn raw(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), tcp.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}
