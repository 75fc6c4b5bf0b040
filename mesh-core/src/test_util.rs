//! Test helpers for the layer crates (feature `test-util`): a body that yields a scripted
//! sequence of frames, errors and pauses, to test body replay, trailers and streaming; a
//! workload's identity and labels. Test manifests are `mesh_config::test_util::Manifest`.

use std::{
    collections::VecDeque,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::BoxError;

#[derive(Debug)]
enum Step {
    Data(Bytes),
    Trailers(http::HeaderMap),
    Error(String),
    Pending,
}

/// A scripted body. Steps are yielded in order; `pending` returns `Poll::Pending` once
/// (waking itself) so streaming code sees a body that is not ready yet.
#[derive(Debug, Default)]
pub struct MockBody {
    steps: VecDeque<Step>,
}

/// The error a scripted `error` step yields.
#[derive(Debug, thiserror::Error)]
#[error("mock body error: {0}")]
pub struct MockBodyError(pub String);

impl MockBody {
    /// An empty body.
    pub fn new() -> Self {
        Self::default()
    }

    /// Then a data frame.
    #[must_use]
    pub fn data(mut self, bytes: impl Into<Bytes>) -> Self {
        self.steps.push_back(Step::Data(bytes.into()));
        self
    }

    /// Then trailers.
    #[must_use]
    pub fn trailers(mut self, trailers: http::HeaderMap) -> Self {
        self.steps.push_back(Step::Trailers(trailers));
        self
    }

    /// Then an error.
    #[must_use]
    pub fn error(mut self, message: &str) -> Self {
        self.steps.push_back(Step::Error(message.to_string()));
        self
    }

    /// Then one `Poll::Pending`.
    #[must_use]
    pub fn pending(mut self) -> Self {
        self.steps.push_back(Step::Pending);
        self
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.steps.pop_front() {
            None => Poll::Ready(None),
            Some(Step::Data(b)) => Poll::Ready(Some(Ok(Frame::data(b)))),
            Some(Step::Trailers(t)) => Poll::Ready(Some(Ok(Frame::trailers(t)))),
            Some(Step::Error(m)) => Poll::Ready(Some(Err(Box::new(MockBodyError(m))))),
            Some(Step::Pending) => {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.steps.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        let data: u64 = self.steps.iter().map(|s| if let Step::Data(b) = s { b.len() as u64 } else { 0 }).sum();
        if self.steps.iter().any(|s| matches!(s, Step::Error(_))) {
            let mut h = SizeHint::new();
            h.set_upper(data);
            h
        } else {
            SizeHint::with_exact(data)
        }
    }
}

/// The SPIFFE identity of service account `sa` in namespace `default` of the trust domain
/// `cluster.local`, as Istio names a Bookinfo workload.
pub fn identity(sa: &str) -> crate::Identity {
    crate::Identity::new(crate::DEFAULT_TRUST_DOMAIN, "default", sa).expect("a valid service account name")
}

/// A label map from pairs.
pub fn labels(pairs: &[(&str, &str)]) -> crate::Labels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn yields_the_script() {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        let body = MockBody::new().data("ab").pending().data("cd").trailers(trailers.clone());
        assert_eq!(body.size_hint().exact(), Some(4));
        let collected = body.collect().await.unwrap();
        assert_eq!(collected.trailers(), Some(&trailers));
        assert_eq!(&collected.to_bytes()[..], b"abcd");

        let err = MockBody::new().data("x").error("reset").collect().await.unwrap_err();
        assert!(crate::is_caused_by::<MockBodyError>(&*err));
    }
}
