//! The one boxed body type used at stack edges.
//!
//! Layers keep their concrete body types; the sidecar and embedders erase them once, at the
//! boundary between stacks, with [`boxed`].

use std::{
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;

use crate::BoxError;

/// A type-erased HTTP body: `Bytes` frames, boxed errors; `Send`, not `Sync`.
///
/// A newtype rather than an alias of `UnsyncBoxBody<Bytes, BoxError>`: a trait object in a
/// type parameter (`Request<UnsyncBoxBody<_, Box<dyn Error>>>`) trips rustc's auto-trait
/// checks of spawned futures ("implementation of `Service` is not general enough"); the
/// newtype keeps the trait object out of every signature.
pub struct BoxBody(Pin<Box<dyn http_body::Body<Data = Bytes, Error = BoxError> + Send + 'static>>);

impl BoxBody {
    /// Erase a body's type.
    pub fn new<B>(body: B) -> Self
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        // A body that is already a `BoxBody` stays as it is: erasing at every stack edge
        // must not stack boxes (one allocation and one virtual call per frame each).
        let mut slot = Some(body);
        if let Some(already) = (&mut slot as &mut dyn std::any::Any).downcast_mut::<Option<BoxBody>>() {
            return already.take().expect("the slot was just filled");
        }
        Self(Box::pin(slot.expect("the slot was just filled").map_err(Into::into)))
    }
}

impl http_body::Body for BoxBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.get_mut().0.as_mut().poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0.size_hint()
    }
}

impl Default for BoxBody {
    fn default() -> Self {
        empty()
    }
}

impl std::fmt::Debug for BoxBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoxBody").finish_non_exhaustive()
    }
}

/// Erase a body's type.
pub fn boxed<B>(body: B) -> BoxBody
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    BoxBody::new(body)
}

/// A body with the given bytes (local replies such as `no healthy upstream`).
pub fn full(bytes: impl Into<Bytes>) -> BoxBody {
    boxed(http_body_util::Full::new(bytes.into()))
}

/// An empty body.
pub fn empty() -> BoxBody {
    boxed(http_body_util::Empty::<Bytes>::new())
}

/// Body types a layer can build a local reply with (`fault filter abort`,
/// `no healthy upstream`, `RBAC: access denied`...), so layers answer without changing
/// the body type of the stack they sit in.
pub trait LocalBody: Sized {
    /// A body holding `bytes` (a configured direct response).
    fn from_bytes(bytes: Bytes) -> Self;

    /// A body holding `text`.
    fn from_static(text: &'static str) -> Self {
        Self::from_bytes(Bytes::from_static(text.as_bytes()))
    }
}

impl LocalBody for BoxBody {
    fn from_bytes(bytes: Bytes) -> Self {
        if bytes.is_empty() { empty() } else { full(bytes) }
    }
}

impl LocalBody for http_body_util::Full<Bytes> {
    fn from_bytes(bytes: Bytes) -> Self {
        http_body_util::Full::new(bytes)
    }
}

impl LocalBody for String {
    fn from_bytes(bytes: Bytes) -> Self {
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl LocalBody for Bytes {
    fn from_bytes(bytes: Bytes) -> Self {
        bytes
    }
}

/// For tests and layers whose callers do not read bodies: the bytes are dropped.
impl LocalBody for () {
    fn from_bytes(_: Bytes) {}
}

/// Why a request failed on the client's side: its own fault, never an upstream's. The
/// balancer, retries and outlier detection pass it through untouched, and the edge answers
/// it (400 `DPE`, 413, or `DC` for a client that went away) instead of `503 UC`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DownstreamError {
    /// The request body is malformed (a bad chunk size, a chunk without its CRLF...).
    #[error("downstream protocol error: malformed request body")]
    Protocol,
    /// The request body streamed past the configured limit.
    #[error("request body larger than {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The client closed or reset the connection before its body was complete.
    #[error("downstream connection terminated before the request body was complete")]
    Disconnected,
}

impl DownstreamError {
    /// How a body error reads: the connection ending early (EOF, reset) is a disconnect,
    /// anything else a protocol error.
    pub fn classify(error: &(dyn std::error::Error + 'static)) -> Self {
        if let Some(d) = crate::cause_ref::<Self>(error) {
            return *d;
        }
        let mut current = Some(error);
        while let Some(e) = current {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                use std::io::ErrorKind::*;
                if matches!(io.kind(), UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe) {
                    return Self::Disconnected;
                }
            }
            current = e.source();
        }
        Self::Protocol
    }
}

/// Set once when a request's body fails on the client's side (a request extension, shared by
/// every clone of the request's extensions: retries, mirrors). Layers that see a failure
/// check it before blaming an upstream: with HTTP/2, or when the upstream answers a reset
/// stream, the body's own error may not reach them.
#[derive(Clone, Debug, Default)]
pub struct BodyFault(Arc<OnceLock<DownstreamError>>);

impl BodyFault {
    /// The client's fault, if its body failed.
    pub fn get(&self) -> Option<DownstreamError> {
        self.0.get().copied()
    }

    fn set(&self, e: DownstreamError) {
        let _ = self.0.set(e);
    }

    /// The client's fault behind a failure: from the error's chain, else from the request's
    /// [`BodyFault`] (if it has one).
    pub fn of(fault: Option<&Self>, error: &(dyn std::error::Error + 'static)) -> Option<DownstreamError> {
        crate::cause_ref::<DownstreamError>(error).copied().or_else(|| fault.and_then(Self::get))
    }
}

pin_project_lite::pin_project! {
    /// A request body as it arrives from the client: its errors become [`DownstreamError`]s
    /// (recorded in the request's [`BodyFault`]), and it fails with
    /// [`DownstreamError::TooLarge`] once more than `limit` bytes have streamed (0: no limit).
    pub struct DownstreamBody<B> {
        #[pin]
        inner: B,
        fault: BodyFault,
        limit: u64,
        seen: u64,
    }
}

impl<B> DownstreamBody<B> {
    /// Wrap `inner`, recording failures in `fault`.
    pub fn new(inner: B, fault: BodyFault, limit: u64) -> Self {
        Self { inner, fault, limit, seen: 0 }
    }
}

impl<B> http_body::Body for DownstreamBody<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if let Some(e) = this.fault.get() {
            return Poll::Ready(Some(Err(Box::new(e))));
        }
        let frame = match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Err(e))) => {
                let e: BoxError = e.into();
                let d = DownstreamError::classify(&*e);
                tracing::debug!(error = %e, "request body failed: {d}");
                this.fault.set(d);
                return Poll::Ready(Some(Err(Box::new(d))));
            }
            other => other,
        };
        if let Poll::Ready(Some(Ok(f))) = &frame
            && let Some(data) = f.data_ref()
        {
            *this.seen = this.seen.saturating_add(data.len() as u64);
            if *this.limit > 0 && *this.seen > *this.limit {
                let d = DownstreamError::TooLarge { limit: *this.limit };
                this.fault.set(d);
                return Poll::Ready(Some(Err(Box::new(d))));
            }
        }
        frame.map(|f| f.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn boxing_a_box_keeps_it() {
        let once = super::full("x");
        let addr = |b: &super::BoxBody| std::ptr::from_ref(&*b.0).cast::<()>() as usize;
        let before = addr(&once);
        let twice = super::boxed(super::boxed(once));
        assert_eq!(addr(&twice), before, "the same allocation, not a box around it");
    }

    use super::*;

    #[tokio::test]
    async fn full_round_trips_bytes() {
        let body = full("no healthy upstream");
        let collected = body.collect().await.expect("infallible").to_bytes();
        assert_eq!(&collected[..], b"no healthy upstream");
        assert!(empty().collect().await.expect("infallible").to_bytes().is_empty());
    }

    #[tokio::test]
    async fn downstream_body_records_the_clients_fault() {
        let fault = BodyFault::default();
        let big = DownstreamBody::new(full("0123456789"), fault.clone(), 4);
        let e = big.collect().await.expect_err("over the limit");
        assert_eq!(BodyFault::of(None, &*e), Some(DownstreamError::TooLarge { limit: 4 }));
        assert_eq!(fault.get(), Some(DownstreamError::TooLarge { limit: 4 }));

        let fault = BodyFault::default();
        let broken = crate::test_util::MockBody::new().data("ab").error("invalid chunk size");
        let e = DownstreamBody::new(broken, fault.clone(), 0).collect().await.expect_err("malformed");
        assert_eq!(BodyFault::of(None, &*e), Some(DownstreamError::Protocol));
        // A later error of another layer still reads as the client's fault.
        let other: BoxError = "connection reset".into();
        assert_eq!(BodyFault::of(Some(&fault), &*other), Some(DownstreamError::Protocol));
        assert_eq!(BodyFault::of(Some(&BodyFault::default()), &*other), None);

        let eof: BoxError = Box::new(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
        assert_eq!(DownstreamError::classify(&*eof), DownstreamError::Disconnected);
        let under = DownstreamBody::new(full("0123"), BodyFault::default(), 4);
        assert_eq!(&under.collect().await.expect("at the limit").to_bytes()[..], b"0123");
    }
}
