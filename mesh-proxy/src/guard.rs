//! The edge of every listener: what hyper's parser lets through but a proxy must not
//! forward. Requests the next hop could read another way and bodies over the limit get a
//! clear 4xx here (mesh_core::reply's `bad_request` and `payload_too_large`, which close the
//! connection), before any policy runs.
//!
//! A case variant of a standard method (`delete`, `Get`) is refused with 400 before any
//! policy runs (mesh-authz's `method_case_variant`). An HTTP/1.x request in absolute form
//! gets the target's authority as its `Host` (RFC 9112 §3.2.2).
//!
//! hyper itself answers 400 to malformed heads, conflicting `Content-Length`s and unknown
//! transfer codings, and 431 to heads over the limit. A request with both
//! `Content-Length` and `Transfer-Encoding` gets 400 and its connection is closed, as Envoy
//! does by default (`allow_chunked_length: false`): hyper would read it as chunked and drop
//! the `Content-Length` from the head, so the connection's bytes are followed to tell
//! (crate::framing, marked by crate::conn).

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, header};
use mesh_authz::policy::method_case_variant;
use mesh_core::{
    BoxBody, BoxError,
    body::{BodyFault, DownstreamBody, boxed},
    reply::LocalReply,
};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::conn::AmbiguousLength;

/// Adds [`Guard`] with a request body limit (`0`: none).
#[derive(Clone, Copy, Debug)]
pub struct GuardLayer {
    pub(crate) max_body: u64,
}

impl GuardLayer {
    /// The edge guard, refusing request bodies over `max_body` bytes (`0`: no limit) with 413.
    pub fn new(max_body: u64) -> Self {
        Self { max_body }
    }
}

impl<S> Layer<S> for GuardLayer {
    type Service = Guard<S>;
    fn layer(&self, inner: S) -> Guard<S> {
        Guard { inner, max_body: self.max_body }
    }
}

/// See the module docs.
#[derive(Clone, Debug)]
pub struct Guard<S> {
    inner: S,
    max_body: u64,
}

/// The reason to refuse a request, if any.
fn check<B>(req: &Request<B>, max_body: u64) -> Option<LocalReply> {
    let h = req.headers();
    if req.extensions().get::<AmbiguousLength>().is_some() {
        return Some(LocalReply::bad_request("both Content-Length and Transfer-Encoding"));
    }
    if h.get_all(header::HOST).iter().nth(1).is_some() {
        return Some(LocalReply::bad_request("more than one Host header"));
    }
    if let Some(m) = method_case_variant(req.method()) {
        tracing::debug!(method = %req.method(), standard = m, "refused: a case variant of a standard method");
        return Some(LocalReply::bad_request("method names are case-sensitive"));
    }
    let length = h.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if max_body > 0 && length.is_some_and(|n| n > max_body) {
        return Some(LocalReply::payload_too_large());
    }
    None
}

impl<S, B> Service<Request<B>> for Guard<S>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    S: Service<Request<BoxBody>, Response = Response<BoxBody>>,
{
    type Response = Response<BoxBody>;
    type Error = S::Error;
    type Future = GuardFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        if let Some(reply) = check(&req, self.max_body) {
            let rsp = reply.into_response(mesh_core::request::is_grpc(&req));
            return GuardFuture { state: GuardState::Refused { rsp: Some(rsp) } };
        }
        // An HTTP/1.x target in absolute form names the authority; a proxy ignores `Host`
        // then (RFC 9112 §3.2.2): make `Host` say the same, so that routing, authorization,
        // telemetry and the app all read one name (mesh_core::request::authority).
        if req.version() <= http::Version::HTTP_11
            && let Some(a) = req.uri().authority()
            && let Ok(v) = HeaderValue::from_str(a.as_str())
        {
            req.headers_mut().insert(header::HOST, v);
        }
        // A request without a body (most of them) has nothing to watch.
        if req.body().is_end_stream() {
            return GuardFuture { state: GuardState::Inner { fut: self.inner.call(req.map(boxed)) } };
        }
        // The body as the client sends it: a malformed one, or one that streams past the
        // limit, fails as the client's fault (400 DPE / 413), never an upstream's.
        let fault = BodyFault::default();
        let (mut parts, body) = req.into_parts();
        parts.extensions.insert(fault.clone());
        let req = Request::from_parts(parts, boxed(DownstreamBody::new(body, fault, self.max_body)));
        GuardFuture { state: GuardState::Inner { fut: self.inner.call(req) } }
    }
}

pin_project! {
    /// Response future of [`Guard`].
    pub struct GuardFuture<F> {
        #[pin]
        state: GuardState<F>,
    }
}

pin_project! {
    #[project = GuardProj]
    enum GuardState<F> {
        // Answered at the edge.
        Refused { rsp: Option<Response<BoxBody>> },
        // Passed on.
        Inner { #[pin] fut: F },
    }
}

impl<F, E> Future for GuardFuture<F>
where
    F: Future<Output = Result<Response<BoxBody>, E>>,
{
    type Output = Result<Response<BoxBody>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            GuardProj::Refused { rsp } => Poll::Ready(Ok(rsp.take().expect("polled after completion"))),
            GuardProj::Inner { fut } => fut.poll(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tower::ServiceExt;

    use super::*;

    /// What the inner service saw as `Host`, for one request through the guard.
    async fn host_seen(req: Request<BoxBody>) -> (u16, Option<String>) {
        let seen = Arc::new(Mutex::new(None));
        let inner = {
            let seen = seen.clone();
            tower::service_fn(move |req: Request<BoxBody>| {
                *seen.lock().unwrap() = req.headers().get(header::HOST).map(|h| h.to_str().unwrap().to_string());
                async { Ok::<_, BoxError>(Response::new(mesh_core::body::empty())) }
            })
        };
        let rsp = GuardLayer { max_body: 0 }.layer(inner).oneshot(req).await.unwrap();
        (rsp.status().as_u16(), seen.lock().unwrap().clone())
    }

    #[tokio::test]
    async fn an_absolute_form_target_names_the_host() {
        let req = |uri: &str, host: Option<&str>, version| {
            let mut b = Request::get(uri).version(version);
            if let Some(h) = host {
                b = b.header(header::HOST, h);
            }
            b.body(mesh_core::body::empty()).unwrap()
        };
        // HTTP/1.1 absolute form: the target wins over a stale Host (RFC 9112 §3.2.2).
        let r = req("http://reviews:9080/x", Some("ratings"), http::Version::HTTP_11);
        assert_eq!(host_seen(r).await, (200, Some("reviews:9080".into())));
        let r = req("http://reviews/x", None, http::Version::HTTP_10);
        assert_eq!(host_seen(r).await, (200, Some("reviews".into())));
        // Origin form keeps its Host.
        assert_eq!(host_seen(req("/x", Some("ratings"), http::Version::HTTP_11)).await, (200, Some("ratings".into())));
        // HTTP/2 keeps both as they came (between sidecars `:authority` is the endpoint).
        let r = req("https://10.0.0.1:15006/x", Some("reviews:9080"), http::Version::HTTP_2);
        assert_eq!(host_seen(r).await, (200, Some("reviews:9080".into())));
    }
}
