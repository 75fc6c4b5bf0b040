//! The timed IO: the connection's reads carry the first-byte, request-head and idle timers.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::{Arc, atomic::Ordering},
    task::{Context, Poll},
};

use mesh_core::reply::REQUEST_TIMEOUT_HTTP1;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::{Instant, Sleep},
};

use crate::framing::Framing;

use super::{ConnState, Gate};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Due {
    FirstByte,
    Head,
    Idle,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ending {
    /// Serving.
    Open,
    /// Writing the 408: bytes written so far.
    Reply(usize),
    /// Flushing and closing after the 408.
    Shutdown,
    /// Timed out: every read fails.
    Closed,
}

/// A connection's IO with its timers: reads wait on the timer that is due, and expire it.
#[derive(Debug)]
pub(super) struct Watched<IO> {
    io: IO,
    conn: Arc<ConnState>,
    gate: Arc<Gate>,
    sleep: Pin<Box<Sleep>>,
    armed: Option<Instant>,
    opened: Instant,
    seen: bool,
    h2: bool,
    /// HTTP/1.1: where each request head starts.
    framing: Option<Framing>,
    /// The first byte of the head being read, and `heads` then.
    head: Option<(Instant, u64)>,
    /// A write is unfinished: a 408 would interleave with it, so a head timeout only closes.
    write_pending: bool,
    idle_fired: bool,
    ending: Ending,
}

impl<IO> Watched<IO> {
    pub(super) fn new(io: IO, conn: Arc<ConnState>, gate: Arc<Gate>) -> Self {
        let now = Instant::now();
        Self {
            io,
            conn,
            gate,
            sleep: Box::pin(tokio::time::sleep_until(now)),
            armed: None,
            opened: now,
            seen: false,
            h2: false,
            framing: None,
            head: None,
            write_pending: false,
            idle_fired: false,
            ending: Ending::Open,
        }
    }

    pub(super) fn on_bytes(&mut self, bytes: &[u8]) {
        if !self.seen {
            self.seen = true;
            self.h2 = bytes.starts_with(b"PRI ");
            if !self.h2 {
                self.framing = Some(Framing::new(crate::serve::MAX_HEADER_BYTES));
            }
        }
        if let Some(framing) = &mut self.framing
            && let Some(ordinal) = framing.feed(bytes)
        {
            self.conn.ambiguous.store(ordinal + 1, Ordering::Relaxed);
        }
        if self.conn.in_flight.load(Ordering::Relaxed) == 0 {
            let heads = self.conn.heads.load(Ordering::Relaxed);
            if self.head.is_none_or(|(_, h)| h != heads) {
                self.head = Some((Instant::now(), heads));
            }
        }
    }

    /// The timer due now, if any.
    pub(super) fn due(&self) -> Option<(Instant, Due)> {
        let limits = self.gate.limits();
        if self.conn.upgraded.load(Ordering::Relaxed) {
            return None;
        }
        if !self.seen {
            return limits.first_byte.map(|d| (self.opened + d, Due::FirstByte));
        }
        if self.conn.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        if !self.h2
            && let Some((since, heads)) = self.head
            && heads == self.conn.heads.load(Ordering::Relaxed)
        {
            return limits.request_head.map(|d| (since + d, Due::Head));
        }
        if self.idle_fired {
            return None;
        }
        limits.idle.map(|d| (self.conn.idle_since() + d, Due::Idle))
    }
}

impl<IO: AsyncWrite + Unpin> Watched<IO> {
    /// Write the 408, flush and shut down; then fail the read that hyper waits on.
    pub(super) fn poll_end(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            match self.ending {
                Ending::Open | Ending::Closed => break,
                Ending::Reply(at) if at < REQUEST_TIMEOUT_HTTP1.len() => {
                    match Pin::new(&mut self.io).poll_write(cx, &REQUEST_TIMEOUT_HTTP1[at..]) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Ok(n)) if n > 0 => self.ending = Ending::Reply(at + n),
                        Poll::Ready(_) => self.ending = Ending::Closed,
                    }
                }
                Ending::Reply(_) => self.ending = Ending::Shutdown,
                Ending::Shutdown => {
                    if Pin::new(&mut self.io).poll_shutdown(cx).is_pending() {
                        return Poll::Pending;
                    }
                    self.ending = Ending::Closed;
                }
            }
        }
        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "connection timed out")))
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        if me.ending != Ending::Open {
            return me.poll_end(cx);
        }
        let before = buf.filled().len();
        match Pin::new(&mut me.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    let bytes = &buf.filled()[before..];
                    me.on_bytes(bytes);
                }
                return Poll::Ready(Ok(()));
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {}
        }
        me.conn.reader.register(cx.waker());
        let Some((deadline, due)) = me.due() else { return Poll::Pending };
        if me.armed != Some(deadline) {
            me.sleep.as_mut().reset(deadline);
            me.armed = Some(deadline);
        }
        if me.sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        me.armed = None;
        let stats = me.gate.stats();
        match due {
            Due::FirstByte => {
                stats.pre_cx_timeout.inc();
                me.ending = Ending::Closed;
            }
            Due::Head => {
                stats.rq_header_timeout.inc();
                me.ending = if me.write_pending { Ending::Closed } else { Ending::Reply(0) };
            }
            Due::Idle => {
                stats.cx_idle_timeout.inc();
                me.idle_fired = true;
                me.conn.close.notify_one();
                return Poll::Pending;
            }
        }
        me.poll_end(cx)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        let r = Pin::new(&mut me.io).poll_write(cx, buf);
        me.write_pending = !matches!(r, Poll::Ready(Ok(n)) if n == buf.len());
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        let r = Pin::new(&mut me.io).poll_write_vectored(cx, bufs);
        me.write_pending = !matches!(r, Poll::Ready(Ok(n)) if n == len);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        let r = Pin::new(&mut me.io).poll_flush(cx);
        me.write_pending = r.is_pending();
        r
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
