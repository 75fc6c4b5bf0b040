//! Worker threads, as Envoy runs them: each a single-threaded runtime with its own listening
//! socket per listener (SO_REUSEPORT: the kernel spreads connections) and its own upstream
//! connection pools. A request, the downstream connection it came on and the upstream
//! connection it goes out on stay on one thread: no cross-thread wakeups, no contended pool.
//! Config, certificates and metrics are shared; the admin endpoint and the config watcher
//! run on the main thread.

use std::{future::Future, net::SocketAddr};

use tokio::{
    net::{TcpListener, TcpSocket},
    runtime::Handle,
    sync::oneshot,
    task::JoinHandle,
};

use crate::MeshError;

/// The worker runtimes; dropping this stops them.
#[derive(Debug)]
pub(crate) struct Workers {
    handles: Vec<Handle>,
    _stop: Vec<oneshot::Sender<()>>,
}

impl Workers {
    /// Start `n` worker threads.
    pub(crate) fn start(n: usize) -> Result<Self, MeshError> {
        let (mut handles, mut stops) = (Vec::new(), Vec::new());
        for i in 0..n.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|source| MeshError::Runtime { what: format!("worker {i}"), source })?;
            handles.push(runtime.handle().clone());
            let (tx, rx) = oneshot::channel::<()>();
            stops.push(tx);
            std::thread::Builder::new()
                .name(format!("mesh-worker-{i}"))
                .spawn(move || {
                    // Runs the tasks spawned through the handle until the sender is dropped.
                    let _ = runtime.block_on(rx);
                })
                .map_err(|source| MeshError::Runtime { what: format!("worker {i}"), source })?;
        }
        Ok(Self { handles, _stop: stops })
    }

    /// Listen on `addr` once per worker (port 0 picks one free port for all of them), and
    /// run `serve` with each worker's listener on that worker. The actual address and the
    /// tasks (done when their listeners have drained).
    pub(crate) async fn listen<F, G, Fut>(
        &self,
        what: &str,
        addr: SocketAddr,
        mut serve: F,
    ) -> Result<(SocketAddr, Vec<JoinHandle<()>>), MeshError>
    where
        F: FnMut() -> G,
        G: FnOnce(TcpListener) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let fail = |source: std::io::Error| MeshError::Bind { what: what.into(), addr, source };
        let mut bound = addr;
        let mut tasks = Vec::new();
        for (i, handle) in self.handles.iter().enumerate() {
            let socket = if addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }.map_err(fail)?;
            socket.set_reuseaddr(true).map_err(fail)?;
            socket.set_reuseport(true).map_err(fail)?;
            socket.bind(bound).map_err(fail)?;
            let listener = socket.listen(1024).map_err(fail)?;
            if i == 0 {
                bound = listener.local_addr().map_err(fail)?;
            }
            // Moved to the worker's reactor.
            let std = listener.into_std().map_err(fail)?;
            let run = serve();
            let what = what.to_string();
            tasks.push(handle.spawn(async move {
                match TcpListener::from_std(std) {
                    Ok(l) => run(l).await,
                    Err(e) => tracing::error!(listener = %what, error = %e, "worker cannot take its listener"),
                }
            }));
        }
        Ok((bound, tasks))
    }
}
