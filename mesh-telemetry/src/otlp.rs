//! Span export over OTLP/HTTP (protobuf), batched off the request path.
//!
//! The protobuf encoding of `ExportTraceServiceRequest` is written by hand (a few message
//! types, no code generator in the build); tests decode it with the official
//! opentelemetry-proto types.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use http_body_util::Full;
use tokio::sync::mpsc;

/// One finished span.
#[derive(Clone, Debug, PartialEq)]
pub struct SpanRecord {
    /// Trace id.
    pub trace_id: u128,
    /// Span id.
    pub span_id: u64,
    /// Parent span id.
    pub parent_span_id: Option<u64>,
    /// Name (Envoy's: the authority and path).
    pub name: String,
    /// Server (inbound) or client (outbound).
    pub server: bool,
    /// Start.
    pub start: SystemTime,
    /// End.
    pub end: SystemTime,
    /// Attributes.
    pub attributes: Vec<(String, String)>,
    /// Whether the request failed (5xx, or no response).
    pub error: bool,
}

/// Sends spans to an OTLP/HTTP collector (`http://host:4318/v1/traces`).
#[derive(Clone, Debug)]
pub struct OtlpExporter {
    tx: mpsc::UnboundedSender<SpanRecord>,
}

impl OtlpExporter {
    /// Start exporting to `endpoint` for the service `service_name` (a tokio task batches
    /// spans and posts them every `flush`).
    pub fn start(endpoint: &str, service_name: &str, flush: Duration) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<SpanRecord>();
        let endpoint = endpoint.to_string();
        let service = Arc::<str>::from(service_name);
        tokio::spawn(async move {
            let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
            let mut batch = Vec::new();
            let mut ticks = tokio::time::interval(flush);
            loop {
                let (closed, tick) = tokio::select! {
                    span = rx.recv() => match span {
                        Some(s) => {
                            batch.push(s);
                            (false, false)
                        }
                        None => (true, false),
                    },
                    _ = ticks.tick() => (false, true),
                };
                if !batch.is_empty() && (closed || tick || batch.len() >= 64) {
                    let body = encode_request(&service, &batch);
                    batch.clear();
                    let req = http::Request::post(endpoint.as_str())
                        .header(http::header::CONTENT_TYPE, "application/x-protobuf")
                        .body(Full::new(Bytes::from(body)));
                    match req {
                        Ok(req) => {
                            if let Err(e) = client.request(req).await {
                                tracing::debug!(error = %e, "OTLP export failed");
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "invalid OTLP endpoint"),
                    }
                }
                if closed {
                    return;
                }
            }
        });
        Self { tx }
    }

    /// Queue a span (never blocks).
    pub fn export(&self, span: SpanRecord) {
        let _ = self.tx.send(span);
    }
}

// --- protobuf wire format ---

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn tag(out: &mut Vec<u8>, field: u32, wire: u8) {
    varint(out, u64::from(field << 3 | u32::from(wire)));
}

fn bytes_field(out: &mut Vec<u8>, field: u32, data: &[u8]) {
    tag(out, field, 2);
    varint(out, data.len() as u64);
    out.extend_from_slice(data);
}

fn fixed64(out: &mut Vec<u8>, field: u32, v: u64) {
    tag(out, field, 1);
    out.extend_from_slice(&v.to_le_bytes());
}

fn key_value(key: &str, value: &str) -> Vec<u8> {
    let mut any = Vec::new();
    bytes_field(&mut any, 1, value.as_bytes()); // AnyValue.string_value
    let mut kv = Vec::new();
    bytes_field(&mut kv, 1, key.as_bytes());
    bytes_field(&mut kv, 2, &any);
    kv
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn encode_span(s: &SpanRecord) -> Vec<u8> {
    let mut out = Vec::new();
    bytes_field(&mut out, 1, &s.trace_id.to_be_bytes());
    bytes_field(&mut out, 2, &s.span_id.to_be_bytes());
    if let Some(p) = s.parent_span_id {
        bytes_field(&mut out, 4, &p.to_be_bytes());
    }
    bytes_field(&mut out, 5, s.name.as_bytes());
    tag(&mut out, 6, 0);
    varint(&mut out, if s.server { 2 } else { 3 }); // SPAN_KIND_SERVER / SPAN_KIND_CLIENT
    fixed64(&mut out, 7, nanos(s.start));
    fixed64(&mut out, 8, nanos(s.end));
    for (k, v) in &s.attributes {
        bytes_field(&mut out, 9, &key_value(k, v));
    }
    let mut status = Vec::new();
    tag(&mut status, 3, 0);
    varint(&mut status, if s.error { 2 } else { 0 }); // STATUS_CODE_ERROR / UNSET
    bytes_field(&mut out, 15, &status);
    out
}

/// An `ExportTraceServiceRequest` with one resource (`service.name`) and one scope.
pub fn encode_request(service_name: &str, spans: &[SpanRecord]) -> Vec<u8> {
    let mut resource = Vec::new();
    bytes_field(&mut resource, 1, &key_value("service.name", service_name));
    let mut scope = Vec::new();
    bytes_field(&mut scope, 1, b"mesh");
    let mut scope_spans = Vec::new();
    bytes_field(&mut scope_spans, 1, &scope);
    for s in spans {
        bytes_field(&mut scope_spans, 2, &encode_span(s));
    }
    let mut resource_spans = Vec::new();
    bytes_field(&mut resource_spans, 1, &resource);
    bytes_field(&mut resource_spans, 2, &scope_spans);
    let mut req = Vec::new();
    bytes_field(&mut req, 1, &resource_spans);
    req
}
