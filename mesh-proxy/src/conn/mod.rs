//! What one downstream connection may cost: every listener's connection cap, its accept
//! backoff, and the timers of a connection that sends nothing or too slowly.
//!
//! | timer | default | on expiry | Envoy's counterpart |
//! |---|---|---|---|
//! | `--first-byte-timeout` | 15 s | close (the TLS handshake included) | `listener_filters_timeout`, `downstream_pre_cx_timeout` |
//! | `--request-head-timeout` | 10 s | `408`, close (HTTP/1.1) | `request_headers_timeout`, `downstream_rq_header_timeout` |
//! | `--idle-timeout` | 1 h | close; HTTP/2 with GOAWAY | `idle_timeout`, `downstream_cx_idle_timeout` |
//!
//! The head timer runs from a request's first byte to its last header line; the idle timer
//! from the end of the last response while no request is open. Neither runs while a request
//! is in flight or after a protocol upgrade (WebSocket, CONNECT): those are the routes'
//! timeouts' business. The timers live in the connection's IO ([`Watched`]), so they cost
//! one timer per connection and nothing per request but two atomic operations.

use std::{
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize},
    },
    time::Duration,
};

use futures_util::task::AtomicWaker;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use mesh_core::{BoxBody, BoxError};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::{Notify, watch},
    time::Instant,
};

mod gate;
mod ready_first;
mod track;
mod watched;

pub(crate) use gate::{Gate, OpenConnections};
use ready_first::ReadyFirst;
pub(crate) use track::AmbiguousLength;
use track::Track;
use watched::Watched;

/// The per-listener limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Close a connection whose first byte (or TLS handshake) has not come in this time.
    pub first_byte: Option<Duration>,
    /// Answer 408 and close when a request head has not come in full this long after its
    /// first byte (HTTP/1.1; HTTP/2 heads are bounded by the idle timer and frame limits).
    pub request_head: Option<Duration>,
    /// Close a keep-alive connection after this long without an open request.
    pub idle: Option<Duration>,
    /// Connections the listener holds at most (across its worker threads); past it a new
    /// connection is closed as soon as it is accepted.
    pub max_connections: usize,
}

impl Limits {
    /// `--first-byte-timeout`'s default (Envoy's `listener_filters_timeout`).
    pub const FIRST_BYTE: Duration = Duration::from_secs(15);
    /// `--request-head-timeout`'s default (Envoy's edge recommendation for
    /// `request_headers_timeout`).
    pub const REQUEST_HEAD: Duration = Duration::from_secs(10);
    /// `--idle-timeout`'s default (Envoy's and Istio's `idle_timeout`).
    pub const IDLE: Duration = Duration::from_secs(3600);

    /// The defaults, the connection cap derived from the current file-descriptor limit.
    pub fn with_defaults() -> Self {
        Self {
            first_byte: Some(Self::FIRST_BYTE),
            request_head: Some(Self::REQUEST_HEAD),
            idle: Some(Self::IDLE),
            max_connections: default_max_connections(fd_limit()),
        }
    }
}

/// `0s` turns a timer off.
pub(crate) fn timer(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

/// The default connection cap of a listener: a quarter of the file descriptors (each
/// downstream connection may hold an upstream one too, and a sidecar has a few
/// listeners), keeping 64 for config files, certificates and logs.
pub fn default_max_connections(fd_limit: u64) -> usize {
    usize::try_from(fd_limit.saturating_sub(64) / 4).unwrap_or(usize::MAX).max(16)
}

/// The soft `RLIMIT_NOFILE`.
pub fn fd_limit() -> u64 {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// Raise the soft `RLIMIT_NOFILE` to the hard limit, as Go's runtime does at start; the
/// soft limit in force afterwards.
pub fn raise_fd_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let from = limit.current;
        limit.current = limit.maximum;
        match setrlimit(Resource::Nofile, limit) {
            Ok(()) => tracing::debug!(?from, to = ?limit.maximum, "raised the file-descriptor limit"),
            Err(e) => tracing::warn!(error = %e, "cannot raise the file-descriptor limit"),
        }
    }
    fd_limit()
}

/// Run `f` within `d` (or without limit); `None` if it did not finish.
pub(crate) async fn within<F: Future>(d: Option<Duration>, f: F) -> Option<F::Output> {
    match d {
        Some(d) => tokio::time::timeout(d, f).await.ok(),
        None => Some(f.await),
    }
}

/// What the service side tells the connection's timers.
#[derive(Debug)]
struct ConnState {
    /// Requests whose response has not ended.
    in_flight: AtomicUsize,
    /// Requests whose head was complete (each bumps it once).
    heads: AtomicU64,
    /// A protocol upgrade took the connection: no timers any more.
    upgraded: AtomicBool,
    /// 1 + the ordinal of a request whose head had both `Content-Length` and
    /// `Transfer-Encoding` (crate::framing); 0: none.
    ambiguous: AtomicU64,
    /// When the last request ended (or the connection opened).
    idle_since: Mutex<Instant>,
    /// The connection's reader, woken when the last open request ends to arm the idle timer.
    reader: AtomicWaker,
    /// The idle timer fired: the driver shuts the connection down gracefully.
    close: Notify,
}

impl ConnState {
    fn new() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            heads: AtomicU64::new(0),
            upgraded: AtomicBool::new(false),
            ambiguous: AtomicU64::new(0),
            idle_since: Mutex::new(Instant::now()),
            reader: AtomicWaker::new(),
            close: Notify::new(),
        }
    }

    fn idle_since(&self) -> Instant {
        *self.idle_since.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Serve HTTP/1.1 or HTTP/2 on `io` with the listener's timers until the connection ends;
/// `stop` (or the idle timer) closes it gracefully: HTTP/1.1 after the current response,
/// HTTP/2 with GOAWAY.
pub(crate) async fn serve_http<IO, S>(
    io: IO,
    service: S,
    builder: &auto::Builder<TokioExecutor>,
    gate: &Arc<Gate>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), BoxError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<Request<Incoming>, Response = Response<BoxBody>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    let conn = Arc::new(ConnState::new());
    let io = Watched::new(io, conn.clone(), gate.clone());
    let svc = ReadyFirst::new(Track { inner: service, conn: conn.clone() });
    let serving = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(serving);
    let mut closing = false;
    loop {
        tokio::select! {
            done = serving.as_mut() => return done,
            () = conn.close.notified(), if !closing => {
                closing = true;
                serving.as_mut().graceful_shutdown();
            }
            () = crate::serve::stopped(&mut stop), if !closing => {
                closing = true;
                serving.as_mut().graceful_shutdown();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::atomic::Ordering,
        task::{Context, Poll},
    };

    use http::StatusCode;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    use super::{gate::Backoff, *};

    #[tokio::test(start_paused = true)]
    async fn a_drain_is_woken_by_the_last_connection_closing() {
        let open = Arc::new(OpenConnections::default());
        open.closed().await; // none open: at once
        let (a, b) = (open.open(), open.open());
        let waiting = tokio::spawn({
            let open = open.clone();
            async move { open.closed().await }
        });
        drop(a);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "one is still open");
        drop(b);
        // Woken, with no timer to advance.
        tokio::time::timeout(Duration::from_millis(1), waiting).await.expect("woken").unwrap();
    }

    /// ReadyFirst's fast path rests on this invariant: a stack the mesh serves is ready at
    /// once (its layers forward readiness down to the pooled client, which always is), so a
    /// request never leaves a readiness reservation parked in the connection's own service.
    /// A layer that can be pending (a buffer, a concurrency limit) breaks it: this fails.
    #[tokio::test]
    async fn the_mesh_stacks_are_ready_at_once() {
        use mesh_config::registry::{Locator, Registry};
        use mesh_route::{
            layer::TableHandle,
            policy::{ProxyContext, RouteTable},
        };
        use mesh_telemetry::layer::{Reporter, TelemetryLayer, WorkloadInfo};
        let snapshot = mesh_config::Snapshot::default();
        let ctx = ProxyContext::sidecar("default", mesh_core::Labels::new());
        let table =
            TableHandle::new(RouteTable::compile(&snapshot, &Registry::build(&snapshot, &Locator::new()), &ctx));
        let workload = WorkloadInfo::new("w", "default", &mesh_core::Labels::new(), None);
        let telemetry =
            TelemetryLayer::new(Arc::new(mesh_telemetry::metrics::MeshMetrics::new()), Reporter::Source, workload);
        let client = crate::client::ClientBuilder::new(table).http();
        let mut svc: crate::outbound::Outbound<BoxBody> =
            crate::outbound::stack(crate::guard::GuardLayer::new(0), telemetry, client);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        for _ in 0..2 {
            assert!(matches!(tower::Service::poll_ready(&mut svc, &mut cx), Poll::Ready(Ok(()))));
            // No route: a local reply, and the stack is ready again at once.
            let rsp = tower::Service::call(&mut svc, Request::new(mesh_core::body::empty())).await.unwrap();
            assert_eq!(rsp.status(), 404);
        }
    }

    /// A service that is not ready at once (an app behind a concurrency limit, embedded) gets
    /// its request through a clone that waits for readiness.
    #[tokio::test]
    async fn a_service_not_ready_at_once_is_called_through_a_clone() {
        #[derive(Clone)]
        struct Later(Arc<std::sync::atomic::AtomicBool>);
        impl tower::Service<Request<BoxBody>> for Later {
            type Response = Response<BoxBody>;
            type Error = std::convert::Infallible;
            type Future = std::future::Ready<Result<Response<BoxBody>, std::convert::Infallible>>;
            fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
                if self.0.load(Ordering::SeqCst) {
                    return Poll::Ready(Ok(()));
                }
                // Asks to be polled again (a concurrency limit would park a waiter here).
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            fn call(&mut self, _: Request<BoxBody>) -> Self::Future {
                assert!(self.0.load(Ordering::SeqCst), "called only when ready");
                std::future::ready(Ok(Response::new(mesh_core::body::full("late"))))
            }
        }
        let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let svc = ReadyFirst::new(Later(ready.clone()));
        let fut = hyper::service::Service::call(&svc, Request::new(mesh_core::body::empty()));
        let task = tokio::spawn(fut);
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!task.is_finished(), "waits for readiness");
        ready.store(true, Ordering::SeqCst);
        assert_eq!(task.await.unwrap().unwrap().status(), 200);
    }

    fn limits() -> Limits {
        Limits {
            first_byte: Some(Duration::from_secs(15)),
            request_head: Some(Duration::from_secs(10)),
            idle: Some(Duration::from_secs(60)),
            max_connections: 2,
        }
    }

    fn gate(limits: Limits) -> (Arc<Gate>, mesh_telemetry::metrics::MeshMetrics) {
        let metrics = mesh_telemetry::metrics::MeshMetrics::new();
        let gate = Gate::new("test", limits, &metrics.proxy.listeners);
        gate.bound("127.0.0.1:1".parse().unwrap());
        (gate, metrics)
    }

    /// A server that answers `/slow` after 5 minutes and everything else at once.
    fn spawn(limits: Limits) -> (DuplexStream, Arc<Gate>, watch::Sender<bool>, tokio::task::JoinHandle<()>) {
        let (gate, _metrics) = gate(limits);
        let (client, server) = tokio::io::duplex(64 * 1024);
        let (stop_tx, stop) = watch::channel(false);
        let svc = tower::service_fn(answer);
        let g = gate.clone();
        let task = tokio::spawn(async move {
            let builder = auto::Builder::new(TokioExecutor::new());
            let _ = serve_http(server, svc, &builder, &g, stop).await;
        });
        (client, gate, stop_tx, task)
    }

    async fn answer(req: Request<Incoming>) -> Result<Response<BoxBody>, std::convert::Infallible> {
        if req.uri().path() == "/slow" {
            tokio::time::sleep(Duration::from_secs(300)).await;
        }
        Ok(Response::new(mesh_core::body::full("ok")))
    }

    async fn read_all(c: &mut DuplexStream) -> String {
        let mut out = Vec::new();
        let _ = c.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Read one response to a `content-length: 2` body.
    async fn read_response(c: &mut DuplexStream) -> String {
        let mut out = Vec::new();
        let mut buf = [0u8; 1024];
        while !out.ends_with(b"ok") {
            let n = c.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&out));
            out.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_sends_nothing_is_closed_at_the_first_byte_timeout() {
        let (mut c, gate, _stop, task) = spawn(limits());
        let start = Instant::now();
        assert_eq!(read_all(&mut c).await, "");
        assert_eq!(start.elapsed(), Duration::from_secs(15));
        task.await.unwrap();
        assert_eq!(gate.stats().pre_cx_timeout.get(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dripped_head_gets_408_at_the_head_timeout() {
        let (mut c, gate, _stop, task) = spawn(limits());
        tokio::time::sleep(Duration::from_secs(14)).await;
        c.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n").await.unwrap();
        let start = Instant::now();
        let got = read_all(&mut c).await;
        assert!(got.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{got}");
        assert!(got.contains("connection: close"), "{got}");
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        task.await.unwrap();
        assert_eq!(gate.stats().rq_header_timeout.get(), 1);
        assert_eq!(gate.stats().pre_cx_timeout.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn keep_alive_connections_close_when_idle_and_not_before() {
        let (mut c, gate, _stop, task) = spawn(limits());
        c.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n").await.unwrap();
        assert!(read_response(&mut c).await.starts_with("HTTP/1.1 200"));
        // 59 s idle: still open, and the head timer does not count idle time.
        tokio::time::sleep(Duration::from_secs(59)).await;
        c.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n").await.unwrap();
        assert!(read_response(&mut c).await.starts_with("HTTP/1.1 200"));
        let start = Instant::now();
        assert_eq!(read_all(&mut c).await, "");
        assert_eq!(start.elapsed(), Duration::from_secs(60));
        task.await.unwrap();
        assert_eq!(gate.stats().cx_idle_timeout.get(), 1);
        assert_eq!(gate.stats().rq_header_timeout.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn no_timer_runs_while_a_request_is_in_flight() {
        let (mut c, gate, _stop, _task) = spawn(limits());
        c.write_all(b"GET /slow HTTP/1.1\r\nhost: a\r\n\r\n").await.unwrap();
        let start = Instant::now();
        assert!(read_response(&mut c).await.starts_with("HTTP/1.1 200"));
        assert_eq!(start.elapsed(), Duration::from_secs(300));
        let s = gate.stats();
        assert_eq!((s.cx_idle_timeout.get(), s.rq_header_timeout.get(), s.pre_cx_timeout.get()), (0, 0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn timers_can_be_turned_off() {
        let (mut c, gate, stop, task) = spawn(Limits { first_byte: None, request_head: None, idle: None, ..limits() });
        tokio::time::sleep(Duration::from_secs(7200)).await;
        c.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n").await.unwrap();
        assert!(read_response(&mut c).await.starts_with("HTTP/1.1 200"));
        // Stopping closes the idle connection gracefully.
        stop.send(true).unwrap();
        assert_eq!(read_all(&mut c).await, "");
        task.await.unwrap();
        assert_eq!(gate.stats().cx_idle_timeout.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_http2_connections_get_goaway() {
        let (c, gate, _stop, task) = spawn(limits());
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(c)).await.unwrap();
        let conn = tokio::spawn(conn);
        let req = Request::get("http://a/").body(http_body_util::Empty::<bytes::Bytes>::new()).unwrap();
        assert_eq!(send.send_request(req).await.unwrap().status(), StatusCode::OK);
        let start = Instant::now();
        conn.await.unwrap().unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(60));
        task.await.unwrap();
        assert_eq!(gate.stats().cx_idle_timeout.get(), 1);
        // The server's first-byte and head timers never applied to the HTTP/2 connection.
        assert_eq!(gate.stats().rq_header_timeout.get(), 0);
    }

    #[test]
    fn the_cap_refuses_past_max_and_frees_on_drop() {
        let (gate, _m) = gate(limits());
        let a = gate.admit().unwrap();
        let _b = gate.admit().unwrap();
        assert!(gate.admit().is_none());
        assert_eq!(gate.stats().cx_overflow.get(), 1);
        assert_eq!(gate.stats().cx_active.get(), 2);
        drop(a);
        assert!(gate.admit().is_some());
    }

    #[test]
    fn accept_backoff_doubles_to_a_second_and_resets() {
        let mut b = Backoff::default();
        let waits: Vec<_> = (0..10).map(|_| b.next()).collect();
        assert_eq!(waits[0], Duration::from_millis(5));
        assert_eq!(waits[1], Duration::from_millis(10));
        assert_eq!(waits[9], Duration::from_secs(1));
        // A success ends the run: the next failure waits the first step again.
        assert_eq!(Backoff::default().next(), Duration::from_millis(5));
    }

    #[test]
    fn the_default_cap_is_a_quarter_of_the_descriptors() {
        assert_eq!(default_max_connections(1024), 240);
        assert_eq!(default_max_connections(100), 16);
        assert_eq!(default_max_connections(u64::MAX), usize::try_from((u64::MAX - 64) / 4).unwrap_or(usize::MAX));
    }
}
