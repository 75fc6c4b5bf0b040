//! What the four services share: serving HTTP on a listener, JSON and HTML responses, and
//! calling another service the way the originals do (a new connection per call, through the
//! sidecar's outbound address as an HTTP proxy when there is one).

use std::{
    collections::BTreeMap,
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};

/// A response body.
pub type Body = Full<Bytes>;

/// Serve `handler` on `listener` until the task is dropped.
pub async fn serve<H, F>(listener: TcpListener, handler: H)
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let handler = handler.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let f = handler(req);
                async move { Ok::<_, Infallible>(f.await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

/// A response with a content type.
pub fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut rsp = Response::new(Full::new(body.into()));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    rsp
}

/// A JSON response.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    respond(status, "application/json", serde_json::to_vec(value).unwrap_or_default())
}

/// 404, as the originals' frameworks answer unknown paths.
pub fn not_found() -> Response<Body> {
    respond(StatusCode::NOT_FOUND, "text/html; charset=utf-8", "<h1>Not Found</h1>\n")
}

/// How a service reaches the others.
#[derive(Clone, Debug, Default)]
pub struct Upstreams {
    /// Send every call to this address as to an HTTP proxy (the sidecar's outbound).
    pub proxy: Option<SocketAddr>,
    /// Without a proxy (no mesh at all): where each host name is. Several addresses are
    /// taken in turn, one per call (each call is a new connection, so this is what
    /// kube-proxy's per-connection balancing gives).
    pub direct: BTreeMap<String, Vec<SocketAddr>>,
    /// Turns over the direct addresses.
    pub turn: Arc<AtomicUsize>,
    /// The mesh linked in-process (embedded mode): calls go through its client stack.
    pub embedded: Option<mesh_proxy::embed::Client>,
}

/// A call's outcome: a response with its status, or no response (reported as 500).
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// A response arrived.
    Answered(StatusCode, Bytes),
    /// Connect failure, reset or timeout.
    Failed(String),
}

impl Upstreams {
    /// `GET http://{host}:{port}{path}` with `headers`, everything (connect, head, body)
    /// within `timeout`, on a new connection.
    pub async fn get(&self, host: &str, port: u16, path: &str, headers: &HeaderMap, timeout: Duration) -> Outcome {
        match tokio::time::timeout(timeout, self.get_inner(host, port, path, headers)).await {
            Ok(Ok((status, body))) => Outcome::Answered(status, body),
            Ok(Err(e)) => Outcome::Failed(e),
            Err(_) => Outcome::Failed(format!("timed out after {timeout:?}")),
        }
    }

    async fn get_inner(
        &self,
        host: &str,
        port: u16,
        path: &str,
        headers: &HeaderMap,
    ) -> Result<(StatusCode, Bytes), String> {
        let authority = format!("{host}:{port}");
        let mut req = Request::builder().method("GET");
        if let Some(client) = &self.embedded {
            use tower::ServiceExt;
            let mut req = req
                .uri(format!("http://{authority}{path}"))
                .body(mesh_core::body::empty())
                .map_err(|e| e.to_string())?;
            *req.headers_mut() = headers.clone();
            req.headers_mut().insert(header::HOST, HeaderValue::from_str(&authority).map_err(|e| e.to_string())?);
            let rsp = client.clone().oneshot(req).await.map_err(|e| e.to_string())?;
            let status = rsp.status();
            let body = rsp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
            return Ok((status, body));
        }
        let target = if let Some(proxy) = self.proxy {
            req = req.uri(format!("http://{authority}{path}"));
            proxy
        } else {
            req = req.uri(path);
            let addrs =
                self.direct.get(host).filter(|a| !a.is_empty()).ok_or_else(|| format!("no address for {host}"))?;
            addrs[self.turn.fetch_add(1, Ordering::Relaxed) % addrs.len()]
        };
        let mut req = req.body(Full::new(Bytes::new())).map_err(|e| e.to_string())?;
        *req.headers_mut() = headers.clone();
        req.headers_mut().insert(header::HOST, HeaderValue::from_str(&authority).map_err(|e| e.to_string())?);
        let tcp = TcpStream::connect(target).await.map_err(|e| format!("connect {target}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let rsp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = rsp.status();
        let body = rsp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((status, body))
    }
}

/// Copy the named headers of `from` that are present.
pub fn propagate<'a>(from: &HeaderMap, names: impl IntoIterator<Item = &'a str>) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in names {
        for v in from.get_all(name) {
            if let Ok(n) = http::HeaderName::from_bytes(name.as_bytes()) {
                out.append(n, v.clone());
            }
        }
    }
    out
}

/// The last `/`-separated segment of a path.
pub fn last_segment(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or("")
}
