//! The request body below the retry layer, and its replay: streamed to the first try while a
//! copy is kept up to the cap, then replayed to the next.

use std::{
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use mesh_core::BoxError;

/// The request body below the retry layer: passed through (no retry possible), replayable
/// (streamed to the first try while a copy is kept, up to the cap), or a fixed buffer.
pub struct RetryBody<B> {
    pub(super) inner: BodyInner<B>,
}

pub(super) enum BodyInner<B> {
    Empty,
    Buffered(Full<Bytes>),
    Passthrough(B),
    Replay(ReplayBody<B>),
}

impl<B> std::fmt::Debug for RetryBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.inner {
            BodyInner::Empty => "empty",
            BodyInner::Buffered(_) => "buffered",
            BodyInner::Passthrough(_) => "passthrough",
            BodyInner::Replay(_) => "replay",
        };
        f.debug_tuple("RetryBody").field(&kind).finish()
    }
}

impl<B> RetryBody<B> {
    /// A replayable copy of buffered bytes.
    pub fn buffered(bytes: Bytes) -> Self {
        Self { inner: BodyInner::Buffered(Full::new(bytes)) }
    }

    /// The original body, not replayable.
    pub fn passthrough(body: B) -> Self {
        Self { inner: BodyInner::Passthrough(body) }
    }

    pub(super) fn empty() -> Self {
        Self { inner: BodyInner::Empty }
    }
}

impl<B> Body for RetryBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().inner {
            BodyInner::Empty => Poll::Ready(None),
            BodyInner::Buffered(body) => Pin::new(body).poll_frame(cx).map_err(|never| match never {}),
            BodyInner::Passthrough(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            BodyInner::Replay(body) => body.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            BodyInner::Empty => true,
            BodyInner::Buffered(body) => body.is_end_stream(),
            BodyInner::Passthrough(body) => body.is_end_stream(),
            BodyInner::Replay(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            BodyInner::Empty => SizeHint::with_exact(0),
            BodyInner::Buffered(body) => body.size_hint(),
            BodyInner::Passthrough(body) => body.size_hint(),
            BodyInner::Replay(body) => body.size_hint(),
        }
    }
}

/// What the tries of one request share of its body: the source while no try reads it, and
/// every data frame read so far while that stays within the cap.
struct Shared<B> {
    source: Option<B>,
    data: Vec<Bytes>,
    trailers: Option<http::HeaderMap>,
    read: u64,
    cap: u64,
    ended: bool,
    overflow: bool,
}

/// One try's view of a replayable body (as linkerd2-proxy's `ReplayBody`): first what
/// earlier tries read, then on from the source, keeping a copy. A try that stops early
/// (an answer before the body was sent, a failed connect) hands the source back when its
/// body is dropped, so the next try continues where it stopped. Past the cap the copy is
/// dropped and the request is not retried.
pub(super) struct ReplayBody<B> {
    shared: Arc<Mutex<Shared<B>>>,
    source: Option<B>,
    next: usize,
    sent_trailers: bool,
}

impl<B> ReplayBody<B> {
    pub(super) fn new(body: B, cap: u64) -> Self {
        let shared =
            Shared { source: None, data: Vec::new(), trailers: None, read: 0, cap, ended: false, overflow: false };
        Self { shared: Arc::new(Mutex::new(shared)), source: Some(body), next: 0, sent_trailers: false }
    }

    /// Another view of the same body, reading from the start.
    pub(super) fn handle(&self) -> Self {
        Self { shared: self.shared.clone(), source: None, next: 0, sent_trailers: false }
    }

    /// The body of the next try, if the request can still be replayed.
    pub(super) fn replay(&self) -> Option<Self> {
        self.can_replay().then(|| self.handle())
    }

    /// Whether a next try can send the whole body: the copy is within the cap, and the rest
    /// of the source is here (an earlier try's body still held by its connection, sending,
    /// could not be continued).
    pub(super) fn can_replay(&self) -> bool {
        let shared = self.lock();
        !shared.overflow && (shared.ended || shared.source.is_some())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared<B>> {
        self.shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl<B> ReplayBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let shared = self.shared.clone();
        let mut shared = shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(data) = shared.data.get(self.next) {
            self.next += 1;
            return Poll::Ready(Some(Ok(Frame::data(data.clone()))));
        }
        if shared.ended {
            if !self.sent_trailers
                && let Some(t) = shared.trailers.clone()
            {
                self.sent_trailers = true;
                return Poll::Ready(Some(Ok(Frame::trailers(t))));
            }
            return Poll::Ready(None);
        }
        if self.source.is_none() {
            self.source = shared.source.take();
        }
        let Some(source) = self.source.as_mut() else {
            // Never sent: `can_replay` checked the source was back before this try began.
            return Poll::Ready(Some(Err("the request body is still held by an earlier try".into())));
        };
        match std::task::ready!(Pin::new(source).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    shared.read += data.len() as u64;
                    if shared.read > shared.cap {
                        shared.overflow = true;
                        shared.data = Vec::new();
                    } else if !shared.overflow {
                        shared.data.push(data.clone());
                    }
                    self.next = shared.data.len();
                } else if let Some(t) = frame.trailers_ref() {
                    shared.trailers = Some(t.clone());
                    self.sent_trailers = true;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => Poll::Ready(Some(Err(e.into()))),
            None => {
                shared.ended = true;
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        let shared = self.lock();
        if self.next < shared.data.len() {
            return false;
        }
        if shared.ended {
            return self.sent_trailers || shared.trailers.is_none();
        }
        match (&self.source, &shared.source) {
            (Some(s), _) | (None, Some(s)) => s.is_end_stream(),
            (None, None) => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        let shared = self.lock();
        let buffered: u64 = shared.data.get(self.next..).unwrap_or(&[]).iter().map(|d| d.len() as u64).sum();
        if shared.ended {
            return SizeHint::with_exact(buffered);
        }
        let mut hint = match (&self.source, &shared.source) {
            (Some(s), _) | (None, Some(s)) => s.size_hint(),
            (None, None) => SizeHint::with_exact(0),
        };
        hint.set_lower(hint.lower() + buffered);
        if let Some(upper) = hint.upper() {
            hint.set_upper(upper + buffered);
        }
        hint
    }
}

impl<B> Drop for ReplayBody<B> {
    fn drop(&mut self) {
        if let Some(source) = self.source.take() {
            let mut shared = self.shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            shared.source = Some(source);
        }
    }
}
