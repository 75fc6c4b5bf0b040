//! Span export over OTLP/HTTP (protobuf), batched off the request path.
//!
//! The protobuf encoding of `ExportTraceServiceRequest` is written by hand (a few message
//! types, no code generator in the build); tests decode it with the official
//! opentelemetry-proto types.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
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

/// Spans queued for export at most; beyond, spans are dropped (and counted) rather than
/// held: a collector that is down or slow never grows the proxy's memory.
const QUEUE: usize = 4096;
/// Spans per export request at most.
const BATCH: usize = 256;
/// How long one export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends spans to an OTLP/HTTP collector (`http://host:4318/v1/traces`).
#[derive(Clone, Debug)]
pub struct OtlpExporter {
    tx: mpsc::Sender<SpanRecord>,
    dropped: Arc<AtomicU64>,
}

impl OtlpExporter {
    /// Start exporting to `endpoint` for the service `service_name` (a tokio task batches
    /// spans and posts them every `flush`, or as soon as a batch is full).
    pub fn start(endpoint: &str, service_name: &str, flush: Duration) -> Self {
        let (tx, mut rx) = mpsc::channel::<SpanRecord>(QUEUE);
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
                if !batch.is_empty() && (closed || tick || batch.len() >= BATCH) {
                    let body = encode_request(&service, &batch);
                    batch.clear();
                    let req = http::Request::post(endpoint.as_str())
                        .header(http::header::CONTENT_TYPE, "application/x-protobuf")
                        .body(Full::new(Bytes::from(body)));
                    match req {
                        Ok(req) => match tokio::time::timeout(EXPORT_TIMEOUT, client.request(req)).await {
                            Ok(Ok(_)) => {}
                            Ok(Err(e)) => tracing::debug!(error = %e, "OTLP export failed"),
                            Err(_) => tracing::debug!("OTLP export timed out"),
                        },
                        Err(e) => tracing::warn!(error = %e, "invalid OTLP endpoint"),
                    }
                }
                if closed {
                    return;
                }
            }
        });
        Self { tx, dropped: Arc::default() }
    }

    /// Queue a span (never blocks; dropped when the queue is full).
    pub fn export(&self, span: SpanRecord) {
        if self.tx.try_send(span).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Spans dropped because the queue was full (the collector slower than the traffic).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
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

// --- decoding (the receiving side: a collector in the dashboard) ---

/// Spans in one export request at most.
const MAX_SPANS: usize = 10_000;
/// Attributes per span at most.
const MAX_ATTRIBUTES: usize = 128;

/// An export request that is not a valid `ExportTraceServiceRequest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError(&'static str);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid OTLP trace request: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

/// One received span and the `service.name` of the resource that sent it.
#[derive(Clone, Debug, PartialEq)]
pub struct ReceivedSpan {
    /// The sender's `service.name` (empty when it gave none).
    pub service: String,
    /// The span. `server` is true for SERVER and CONSUMER spans.
    pub span: SpanRecord,
}

enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32,
}

/// Fields of one protobuf message, in order; unknown fields are skipped by the callers.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&b, rest) = self.0.split_first().ok_or(DecodeError("truncated varint"))?;
            self.0 = rest;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError("varint longer than 10 bytes"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError("field longer than its message"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn next(&mut self) -> Result<Option<(u32, Wire<'a>)>, DecodeError> {
        if self.0.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = u32::try_from(key >> 3).map_err(|_| DecodeError("field number out of range"))?;
        let wire = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => Wire::Fixed64(u64::from_le_bytes(self.take(8)?.try_into().map_err(|_| DecodeError("fixed64"))?)),
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| DecodeError("length out of range"))?;
                Wire::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Wire::Fixed32
            }
            _ => return Err(DecodeError("unsupported wire type (groups)")),
        };
        Ok(Some((field, wire)))
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `AnyValue` as text: strings as they are, numbers and booleans printed, the rest named.
fn any_value(b: &[u8]) -> Result<String, DecodeError> {
    let mut f = Fields(b);
    let mut out = String::new();
    while let Some((field, w)) = f.next()? {
        out = match (field, w) {
            (1, Wire::Bytes(s)) => text(s),
            (2, Wire::Varint(v)) => (v != 0).to_string(),
            (3, Wire::Varint(v)) => (v as i64).to_string(),
            (4, Wire::Fixed64(v)) => f64::from_bits(v).to_string(),
            (5, Wire::Bytes(_)) => "[array]".into(),
            (6, Wire::Bytes(_)) => "[kvlist]".into(),
            (7, Wire::Bytes(b)) => b.iter().map(|x| format!("{x:02x}")).collect(),
            _ => continue,
        };
    }
    Ok(out)
}

fn key_value_of(b: &[u8]) -> Result<(String, String), DecodeError> {
    let (mut key, mut value) = (String::new(), String::new());
    let mut f = Fields(b);
    while let Some((field, w)) = f.next()? {
        match (field, w) {
            (1, Wire::Bytes(k)) => key = text(k),
            (2, Wire::Bytes(v)) => value = any_value(v)?,
            _ => {}
        }
    }
    Ok((key, value))
}

fn id<const N: usize>(b: &[u8], what: &'static str) -> Result<[u8; N], DecodeError> {
    b.try_into().map_err(|_| DecodeError(what))
}

fn time_of(nanos: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos)
}

fn span_of(b: &[u8]) -> Result<SpanRecord, DecodeError> {
    let mut s = SpanRecord {
        trace_id: 0,
        span_id: 0,
        parent_span_id: None,
        name: String::new(),
        server: false,
        start: SystemTime::UNIX_EPOCH,
        end: SystemTime::UNIX_EPOCH,
        attributes: Vec::new(),
        error: false,
    };
    let mut f = Fields(b);
    while let Some((field, w)) = f.next()? {
        match (field, w) {
            (1, Wire::Bytes(t)) => s.trace_id = u128::from_be_bytes(id(t, "trace_id is not 16 bytes")?),
            (2, Wire::Bytes(t)) => s.span_id = u64::from_be_bytes(id(t, "span_id is not 8 bytes")?),
            (4, Wire::Bytes(t)) if !t.is_empty() => {
                s.parent_span_id = Some(u64::from_be_bytes(id(t, "parent_span_id is not 8 bytes")?));
            }
            (5, Wire::Bytes(n)) => s.name = text(n),
            (6, Wire::Varint(k)) => s.server = k == 2 || k == 5,
            (7, Wire::Fixed64(t)) => s.start = time_of(t),
            (8, Wire::Fixed64(t)) => s.end = time_of(t),
            (9, Wire::Bytes(kv)) => {
                if s.attributes.len() >= MAX_ATTRIBUTES {
                    return Err(DecodeError("more than 128 attributes on a span"));
                }
                s.attributes.push(key_value_of(kv)?);
            }
            (15, Wire::Bytes(st)) => {
                let mut st = Fields(st);
                while let Some((field, w)) = st.next()? {
                    if let (3, Wire::Varint(code)) = (field, w) {
                        s.error = code == 2;
                    }
                }
            }
            _ => {}
        }
    }
    if s.trace_id == 0 || s.span_id == 0 {
        return Err(DecodeError("a span without trace_id or span_id"));
    }
    Ok(s)
}

/// Decode an `ExportTraceServiceRequest` (OTLP/HTTP, `application/x-protobuf`). Bounded:
/// at most 10,000 spans and 128 attributes per span; anything malformed is an error, never
/// a panic.
pub fn decode_request(buf: &[u8]) -> Result<Vec<ReceivedSpan>, DecodeError> {
    let mut out = Vec::new();
    let mut request = Fields(buf);
    while let Some((field, w)) = request.next()? {
        let (1, Wire::Bytes(resource_spans)) = (field, w) else { continue };
        let mut service = String::new();
        let mut scopes = Vec::new();
        let mut rs = Fields(resource_spans);
        while let Some((field, w)) = rs.next()? {
            match (field, w) {
                (1, Wire::Bytes(resource)) => {
                    let mut r = Fields(resource);
                    while let Some((field, w)) = r.next()? {
                        if let (1, Wire::Bytes(kv)) = (field, w) {
                            let (k, v) = key_value_of(kv)?;
                            if k == "service.name" {
                                service = v;
                            }
                        }
                    }
                }
                (2, Wire::Bytes(scope_spans)) => scopes.push(scope_spans),
                _ => {}
            }
        }
        for scope_spans in scopes {
            let mut ss = Fields(scope_spans);
            while let Some((field, w)) = ss.next()? {
                if let (2, Wire::Bytes(span)) = (field, w) {
                    if out.len() >= MAX_SPANS {
                        return Err(DecodeError("more than 10,000 spans in one request"));
                    }
                    out.push(ReceivedSpan { service: service.clone(), span: span_of(span)? });
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(n: u64) -> SpanRecord {
        SpanRecord {
            trace_id: 0xabc0_0000_0000_0000_0000_0000_0000_0001,
            span_id: n,
            parent_span_id: (n > 1).then_some(n - 1),
            name: format!("reviews:9080/reviews/{n}"),
            server: n.is_multiple_of(2),
            start: time_of(1_700_000_000_000_000_000 + n),
            end: time_of(1_700_000_000_500_000_000 + n),
            attributes: vec![("http.status_code".into(), "200".into()), ("response_flags".into(), "-".into())],
            error: n == 3,
        }
    }

    #[test]
    fn what_is_encoded_decodes_to_the_same_spans() {
        let spans: Vec<SpanRecord> = (1..=4).map(span).collect();
        let got = decode_request(&encode_request("reviews.default", &spans)).unwrap();
        assert_eq!(got.iter().map(|r| r.span.clone()).collect::<Vec<_>>(), spans);
        assert!(got.iter().all(|r| r.service == "reviews.default"));
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let good = encode_request("x", &[span(1)]);
        for cut in 1..good.len() {
            // Every truncation either fails or decodes fewer spans; none panics.
            let _ = decode_request(&good[..cut]);
        }
        assert!(decode_request(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err(), "a length past the end");
        assert!(decode_request(&[0x0b]).is_err(), "a group");
        assert_eq!(decode_request(&[]).unwrap(), vec![]);
        let mut no_ids = span(1);
        no_ids.trace_id = 0;
        assert!(decode_request(&encode_request("x", &[no_ids])).is_err());
    }
}
