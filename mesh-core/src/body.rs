//! The one boxed body type used at stack edges.
//!
//! Layers keep their concrete body types; the sidecar and embedders erase them once, at the
//! boundary between stacks, with [`boxed`].

use bytes::Bytes;
use http_body_util::BodyExt;

use crate::BoxError;

/// A type-erased HTTP body: `Bytes` frames, boxed errors; `Send`, not `Sync`.
pub type BoxBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// Erase a body's type.
pub fn boxed<B>(body: B) -> BoxBody
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
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
