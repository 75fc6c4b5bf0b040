//! The response body that counts bytes and records the request when it ends.

use std::{
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::*;

pin_project! {
    /// The response body: counts bytes and records the request when it ends (or is dropped).
    pub struct TelemetryBody<B> {
        #[pin]
        pub(super) inner: B,
        pub(super) done: Option<Done>,
        pub(super) bytes: u64,
    }

    impl<B> PinnedDrop for TelemetryBody<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(mut done) = this.done.take() {
                done.finish(*this.bytes);
            }
        }
    }
}

impl<B> TelemetryBody<B> {
    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }
}

impl<B> Body for TelemetryBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                if let Some(d) = f.data_ref() {
                    *this.bytes += d.len() as u64;
                }
            }
            None | Some(Err(_)) => {
                if let Some(mut done) = this.done.take() {
                    done.finish(*this.bytes);
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
