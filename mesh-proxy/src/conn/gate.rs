//! The listener's gate: its connection cap, accept backoff, once-per-interval logs and
//! counters, and the connections a drain waits for.

use std::{
    io,
    net::SocketAddr,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use mesh_telemetry::metrics::{ListenerFamilies, ListenerStats};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
    time::Instant,
};

use super::Limits;

/// Logs a condition at most once per interval, with how often it happened since.
#[derive(Debug, Default)]
pub(super) struct LogEvery {
    last: Mutex<Option<Instant>>,
    since: AtomicU64,
}

pub(super) const LOG_INTERVAL: Duration = Duration::from_secs(10);

impl LogEvery {
    pub(super) fn hit(&self, log: impl FnOnce(u64)) {
        let n = self.since.fetch_add(1, Ordering::Relaxed) + 1;
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_none_or(|t| now.duration_since(t) >= LOG_INTERVAL) {
            *last = Some(now);
            self.since.fetch_sub(n, Ordering::Relaxed);
            log(n);
        }
    }
}

/// One listener's cap, counters and logs, shared by its worker threads.
#[derive(Debug)]
pub(crate) struct Gate {
    name: &'static str,
    limits: Limits,
    active: AtomicUsize,
    families: ListenerFamilies,
    stats: OnceLock<ListenerStats>,
    refused: LogEvery,
    accept_failed: LogEvery,
}

/// A connection's place under the cap; dropping it frees the place.
#[derive(Debug)]
pub(crate) struct Permit(Arc<Gate>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
        self.0.stats().cx_active.dec();
    }
}

impl Gate {
    pub(crate) fn new(name: &'static str, limits: Limits, families: &ListenerFamilies) -> Arc<Self> {
        Arc::new(Self {
            name,
            limits,
            active: AtomicUsize::new(0),
            families: families.clone(),
            stats: OnceLock::new(),
            refused: LogEvery::default(),
            accept_failed: LogEvery::default(),
        })
    }

    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Resolve the counters once the listener's address is known (every worker's is the same).
    pub(crate) fn bound(&self, local: SocketAddr) {
        let _ = self.stats.get_or_init(|| self.families.listener(self.name, local));
    }

    pub(crate) fn stats(&self) -> &ListenerStats {
        self.stats.get_or_init(ListenerStats::default)
    }

    /// A place for one more connection, or `None` at the cap (the caller closes it).
    pub(super) fn admit(self: &Arc<Self>) -> Option<Permit> {
        let max = self.limits.max_connections;
        let taken = self.active.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < max).then_some(n + 1));
        if taken.is_err() {
            self.stats().cx_overflow.inc();
            self.refused.hit(|n| {
                tracing::warn!(
                    listener = self.name,
                    max,
                    refused = n,
                    "connection cap reached; refusing new connections"
                )
            });
            return None;
        }
        self.stats().cx_active.inc();
        Some(Permit(self.clone()))
    }

    /// The listener's next connection within the cap, or `None` once `stop` is true. A
    /// connection past the cap is closed at once; a failing `accept` (out of descriptors)
    /// backs off instead of spinning.
    pub(crate) async fn next(
        self: &Arc<Self>,
        listener: &TcpListener,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<(TcpStream, SocketAddr, Permit)> {
        // A run of failures lies within one call: each call starts after a success.
        let mut backoff = Backoff::default();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((tcp, client)) => {
                        backoff = Backoff::default();
                        if let Some(permit) = self.admit() {
                            return Some((tcp, client, permit));
                        }
                    }
                    Err(e) => {
                        let wait = self.accept_failed(&e, &mut backoff);
                        tokio::select! {
                            () = tokio::time::sleep(wait) => {}
                            () = crate::serve::stopped(stop) => return None,
                        }
                    }
                },
                () = crate::serve::stopped(stop) => return None,
            }
        }
    }

    /// `accept` failed: count and log it (once per interval); how long to wait before
    /// accepting again.
    pub(super) fn accept_failed(&self, e: &io::Error, backoff: &mut Backoff) -> Duration {
        self.stats().accept_errors.inc();
        let wait = backoff.next();
        self.accept_failed.hit(
            |n| tracing::warn!(listener = self.name, error = %e, failures = n, ?wait, "accept failed; backing off"),
        );
        wait
    }
}

/// Exponential backoff of a failing `accept`: 5 ms doubling to 1 s, reset by a success.
#[derive(Debug, Default)]
pub(super) struct Backoff(Option<Duration>);

impl Backoff {
    const FIRST: Duration = Duration::from_millis(5);
    const MAX: Duration = Duration::from_secs(1);

    pub(super) fn next(&mut self) -> Duration {
        let d = self.0.map_or(Self::FIRST, |d| (d * 2).min(Self::MAX));
        self.0 = Some(d);
        d
    }
}

/// The connections open on one listener, so that its drain waits for the last to close
/// (woken when it does, not polled).
#[derive(Debug, Default)]
pub(crate) struct OpenConnections {
    count: AtomicUsize,
    closed: tokio::sync::Notify,
}

/// One open connection of [`OpenConnections`]; dropped when it closes.
pub(crate) struct OpenConnection(Arc<OpenConnections>);

impl OpenConnections {
    /// A connection opens.
    pub(crate) fn open(self: &Arc<Self>) -> OpenConnection {
        self.count.fetch_add(1, Ordering::SeqCst);
        OpenConnection(self.clone())
    }

    /// When no connection is open.
    pub(crate) async fn closed(&self) {
        loop {
            let last = self.closed.notified();
            tokio::pin!(last);
            // Registered before the count is read: a close in between still wakes us.
            last.as_mut().enable();
            if self.count.load(Ordering::SeqCst) == 0 {
                return;
            }
            last.await;
        }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.closed.notify_waiters();
        }
    }
}
