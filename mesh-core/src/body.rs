//! The one boxed body type used at stack edges.
//!
//! Layers keep their concrete body types; the sidecar and embedders erase them once, at the
//! boundary between stacks, with [`boxed`].

use std::{
    pin::Pin,
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
        Self(Box::pin(body.map_err(Into::into)))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn full_round_trips_bytes() {
        let body = full("no healthy upstream");
        let collected = body.collect().await.expect("infallible").to_bytes();
        assert_eq!(&collected[..], b"no healthy upstream");
        assert!(empty().collect().await.expect("infallible").to_bytes().is_empty());
    }
}
