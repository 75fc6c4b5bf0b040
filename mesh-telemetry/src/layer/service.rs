//! The service: what a request carries in (trace context, request id, peer metadata) and
//! what the request side hands to the response side.

use std::{
    sync::Arc,
    task::{Context, Poll},
    time::SystemTime,
};

use http::{HeaderValue, Request, Response, header};
use http_body::Body;
use mesh_core::ext::PeerIdentity;
use rand::{Rng, rngs::SmallRng};
use tokio::time::Instant;
use tower_service::Service;

use crate::{
    access_log::Entry,
    trace::{TraceContext, request_id_from_bits},
};

use super::*;

/// See [`TelemetryLayer`].
pub struct Telemetry<S> {
    pub(super) inner: S,
    pub(super) shared: Arc<Shared>,
    pub(super) rng: SmallRng,
}

impl<S: Clone> Clone for Telemetry<S> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone(), rng: self.shared.next_rng(), shared: self.shared.clone() }
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for Telemetry<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry").field("inner", &self.inner).finish_non_exhaustive()
    }
}

/// What the request side hands to the response side.
pub(super) struct RequestSide {
    pub(super) shared: Arc<Shared>,
    pub(super) start: Instant,
    pub(super) started_at: SystemTime,
    pub(super) peer: Option<Arc<str>>,
    pub(super) peer_principal: Option<mesh_core::Identity>,
    /// The Host as sent, only for a routed request whose failure lost the route decision.
    pub(super) authority: Option<HeaderValue>,
    pub(super) grpc_protocol: bool,
    pub(super) request_bytes: u64,
    pub(super) log: Option<(Box<Entry>, Option<Arc<mesh_core::cel::Expr>>)>,
    pub(super) trace_id: Option<u128>,
    #[cfg(feature = "otel")]
    pub(super) span: Option<(TraceContext, String, http::Method)>,
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for Telemetry<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ReqB: Body,
{
    type Response = Response<TelemetryBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        let shared = &self.shared;
        let start = Instant::now();
        let rng = &mut self.rng;
        let span = shared.o.tracing.then(|| match TraceContext::extract(req.headers()) {
            Some(parent) => parent.child(rng),
            None => {
                let sampled = rng.random::<f64>() * 100.0 < shared.o.trace.sampling();
                TraceContext::root(rng, sampled)
            }
        });
        match &span {
            Some(span) => {
                let id = (!req.headers().contains_key(&REQUEST_ID)).then(|| rng.random::<u128>());
                // Room for what this layer adds (request id, trace context, peer), so the
                // map grows at most once.
                req.headers_mut().reserve(7);
                span.inject_with_request_id(req.headers_mut(), id);
            }
            None => {
                if let http::header::Entry::Vacant(slot) = req.headers_mut().entry(REQUEST_ID.clone()) {
                    slot.insert(request_id_from_bits(rng.random()));
                }
            }
        }
        let peer_principal = req.extensions().get::<PeerIdentity>().map(|p| p.0.clone());
        let peer: Option<Arc<str>> = match shared.o.reporter {
            Reporter::Source => {
                if let Some(v) = &shared.local_header {
                    req.headers_mut().insert(PEER.clone(), v.clone());
                }
                None
            }
            // Always stripped before the app; used only when it belongs to the mTLS peer.
            Reporter::Destination => req.headers_mut().remove(&PEER).and_then(|v| {
                let v = v.to_str().ok()?;
                shared.peer_matches(v, peer_principal.as_ref()?).then(|| Arc::from(v))
            }),
        };
        // The authority as the caller sent it, for the access log and span name (never a
        // metric label). A shared copy of the header, no allocation.
        let authority_value: Option<HeaderValue> = mesh_core::request::authority_value(&req);
        let authority = authority_value.as_ref().and_then(|v| v.to_str().ok());
        let grpc_protocol = mesh_core::request::is_grpc(&req);
        let request_bytes = req
            .body()
            .size_hint()
            .exact()
            .or_else(|| req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok()))
            .unwrap_or(0);
        let log = shared.o.access_log.as_ref().and_then(|_| {
            let rule = shared.o.log_control.as_ref().map(|c| c.rule());
            let filter = match rule {
                Some(r) if !r.on => return None,
                Some(r) => r.filter.clone(),
                None => None,
            };
            let entry = Entry::for_filter(&req, authority.unwrap_or("-"), filter.as_deref());
            Some((Box::new(entry), filter))
        });
        #[cfg(feature = "otel")]
        let span_name = (shared.o.otlp.is_some() && span.is_some_and(|s| s.sampled) && shared.o.trace.report())
            .then(|| (format!("{}{}", authority.unwrap_or("-"), req.uri().path()), req.method().clone()));
        // The wall clock only for what prints it: the access log, an exported span.
        #[cfg(feature = "otel")]
        let needs_wall_clock = log.is_some() || span_name.is_some();
        #[cfg(not(feature = "otel"))]
        let needs_wall_clock = log.is_some();
        let pending = RequestSide {
            shared: shared.clone(),
            start,
            started_at: if needs_wall_clock { SystemTime::now() } else { SystemTime::UNIX_EPOCH },
            peer,
            peer_principal,
            authority: authority_value,
            grpc_protocol,
            request_bytes,
            log,
            trace_id: span.map(|s| s.trace_id),
            #[cfg(feature = "otel")]
            span: span.zip(span_name).map(|(ctx, (name, method))| (ctx, name, method)),
        };
        ResponseFuture { inner: self.inner.call(req), pending: Some(pending) }
    }
}
