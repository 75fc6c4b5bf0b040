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
