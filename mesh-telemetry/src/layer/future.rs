//! The response future, and what is recorded when the response body ends.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use http::Response;
use mesh_core::ext::ResponseFlags;
use pin_project_lite::pin_project;
use tokio::time::Instant;

use crate::access_log::{AccessLog, Entry};

use super::*;

pin_project! {
    /// Response future of [`Telemetry`].
    pub struct ResponseFuture<F> {
        #[pin]
        pub(super) inner: F,
        pub(super) pending: Option<RequestSide>,
    }

    impl<F> PinnedDrop for ResponseFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            // Dropped before a response: the caller went away (its connection closed, its
            // own timeout). Envoy records it as `response_code="0"`, `DC`, and so do the
            // metrics, the access log and the span here.
            if let Some(pending) = this.project().pending.take() {
                let mut done = pending.resolve(None, ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION);
                done.code_zero();
                done.finish(0);
            }
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<TelemetryBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let pending = this.pending.take().expect("polled after ready");
        Poll::Ready(match result {
            Ok(rsp) => {
                let (parts, body) = rsp.into_parts();
                let done = pending.resolve(Some(&parts), ResponseFlags::default());
                Ok(Response::from_parts(parts, TelemetryBody { inner: body, done: Some(done), bytes: 0 }))
            }
            Err(e) => {
                // No response was sent: response_code 0 (the caller went away or the stack
                // failed without a local reply).
                let mut done = pending.resolve(None, ResponseFlags::default());
                done.code_zero();
                done.finish(0);
                Err(e)
            }
        })
    }
}

/// Everything needed to record the request when its response body ends.
pub(super) struct Done {
    pub(super) handles: Resolved,
    pub(super) start: Instant,
    pub(super) request_bytes: u64,
    pub(super) log: Option<(AccessLog, Box<Entry>, Option<Arc<mesh_core::cel::Expr>>)>,
    #[cfg(feature = "otel")]
    pub(super) span: Option<(crate::otlp::OtlpExporter, crate::otlp::SpanRecord)>,
}

impl Done {
    pub(super) fn code_zero(&mut self) {
        if let Some((_, e, _)) = &mut self.log {
            e.status = 0;
        }
        #[cfg(feature = "otel")]
        if let Some((_, s)) = &mut self.span {
            s.error = true;
        }
    }

    pub(super) fn finish(&mut self, response_bytes: u64) {
        let ms = self.start.elapsed().as_secs_f64() * 1000.0;
        self.handles.handles.record(ms, self.request_bytes, response_bytes);
        if let Some((log, mut entry, filter)) = self.log.take() {
            entry.duration_ms = ms as u64;
            entry.bytes_received = self.request_bytes;
            entry.bytes_sent = response_bytes;
            if filter.is_none_or(|f| f.eval(&*entry)) {
                log.write(&entry);
            }
        }
        #[cfg(feature = "otel")]
        if let Some((exporter, mut span)) = self.span.take() {
            span.end = std::time::SystemTime::now();
            span.attributes.push(("response_size".into(), response_bytes.to_string()));
            exporter.export(span);
        }
    }
}
