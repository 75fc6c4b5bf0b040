//! Trace context as Istio's proxies propagate it: W3C `traceparent`/`tracestate` and
//! Zipkin B3 (`x-b3-*` and the single `b3` header), plus `x-request-id`.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static B3: HeaderName = HeaderName::from_static("b3");
static B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
static B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
static B3_PARENT: HeaderName = HeaderName::from_static("x-b3-parentspanid");
static B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
static B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");
static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
use rand::Rng;

/// How one side of a proxy traces, changeable while it serves (a Telemetry resource
/// reloaded): the percentage of new traces sampled and whether spans are reported.
#[derive(Debug)]
pub struct TraceControl {
    sampling_bits: std::sync::atomic::AtomicU64,
    report: std::sync::atomic::AtomicBool,
}

impl TraceControl {
    /// Sample `percent` % of new traces; report spans or not.
    pub fn new(percent: f64, report: bool) -> Self {
        Self { sampling_bits: percent.to_bits().into(), report: report.into() }
    }

    /// Put new values in force (requests already started keep their decision).
    pub fn set(&self, percent: f64, report: bool) {
        use std::sync::atomic::Ordering::Relaxed;
        self.sampling_bits.store(percent.to_bits(), Relaxed);
        self.report.store(report, Relaxed);
    }

    /// Percentage of new traces sampled.
    pub fn sampling(&self) -> f64 {
        f64::from_bits(self.sampling_bits.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Whether spans are reported.
    pub fn report(&self) -> bool {
        self.report.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// One span's place in a trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceContext {
    /// 128-bit trace id.
    pub trace_id: u128,
    /// This span.
    pub span_id: u64,
    /// The parent span, if any.
    pub parent_span_id: Option<u64>,
    /// Whether the trace is sampled.
    pub sampled: bool,
}

/// Hex digits only: `from_str_radix` alone would take a leading `+`.
fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn hex_u128(s: &str) -> Option<u128> {
    (is_hex(s) && s.len() <= 32).then(|| u128::from_str_radix(s, 16).ok()).flatten().filter(|v| *v != 0)
}

fn hex_u64(s: &str) -> Option<u64> {
    (is_hex(s) && s.len() == 16).then(|| u64::from_str_radix(s, 16).ok()).flatten().filter(|v| *v != 0)
}

fn get<'h>(h: &'h HeaderMap, name: &HeaderName) -> Option<&'h str> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

impl TraceContext {
    /// The incoming context: `traceparent`, else `b3`, else `x-b3-*`.
    pub fn extract(headers: &HeaderMap) -> Option<Self> {
        if let Some(tp) = get(headers, &TRACEPARENT) {
            let parts: Vec<&str> = tp.split('-').collect();
            if let [version, trace, span, flags] = parts.as_slice()
                && version.len() == 2
                && *version != "ff"
                && trace.len() == 32
            {
                let flags = is_hex(flags).then(|| u8::from_str_radix(flags, 16).ok()).flatten()?;
                return Some(Self {
                    trace_id: hex_u128(trace)?,
                    span_id: hex_u64(span)?,
                    parent_span_id: None,
                    sampled: flags & 1 == 1,
                });
            }
        }
        if let Some(b3) = get(headers, &B3) {
            let parts: Vec<&str> = b3.split('-').collect();
            if parts.len() >= 2 {
                let sampled = parts.get(2).is_none_or(|s| *s == "1" || *s == "d");
                return Some(Self {
                    trace_id: hex_u128(parts[0])?,
                    span_id: hex_u64(parts[1])?,
                    parent_span_id: parts.get(3).and_then(|p| hex_u64(p)),
                    sampled,
                });
            }
        }
        let trace_id = hex_u128(get(headers, &B3_TRACE_ID)?)?;
        Some(Self {
            trace_id,
            span_id: hex_u64(get(headers, &B3_SPAN_ID)?)?,
            parent_span_id: get(headers, &B3_PARENT).and_then(hex_u64),
            sampled: get(headers, &B3_SAMPLED).is_none_or(|s| s == "1") || get(headers, &B3_FLAGS) == Some("1"),
        })
    }

    /// A new root span.
    pub fn root(rng: &mut impl Rng, sampled: bool) -> Self {
        Self { trace_id: rng.random::<u128>() | 1, span_id: rng.random::<u64>() | 1, parent_span_id: None, sampled }
    }

    /// A child of this span.
    pub fn child(&self, rng: &mut impl Rng) -> Self {
        Self {
            trace_id: self.trace_id,
            span_id: rng.random::<u64>() | 1,
            parent_span_id: Some(self.span_id),
            sampled: self.sampled,
        }
    }

    /// Write this context in both formats (the next hop may read either).
    pub fn inject(&self, headers: &mut HeaderMap) {
        self.inject_with_request_id(headers, None);
    }

    /// [`inject`](Self::inject), and set `x-request-id` to a UUID made of `request_id`'s
    /// bits. One buffer holds every value; the headers share slices of it.
    pub fn inject_with_request_id(&self, headers: &mut HeaderMap, request_id: Option<u128>) {
        // "00-<trace:32>-<span:16>-0<flag>", the parent span's 16 digits, the request id's 36.
        const PARENT: usize = 55;
        const ID: usize = PARENT + 16;
        let mut buf = [0u8; ID + 36];
        buf[..3].copy_from_slice(b"00-");
        hex(&mut buf[3..35], self.trace_id);
        buf[35] = b'-';
        hex(&mut buf[36..52], u128::from(self.span_id));
        buf[52..55].copy_from_slice(if self.sampled { b"-01" } else { b"-00" });
        if let Some(p) = self.parent_span_id {
            hex(&mut buf[PARENT..ID], u128::from(p));
        }
        if let Some(bits) = request_id {
            uuid_v4(&mut buf[ID..], bits);
        }
        let all = Bytes::copy_from_slice(&buf);
        let value = |range: std::ops::Range<usize>| {
            HeaderValue::from_maybe_shared(all.slice(range)).expect("hex digits and dashes are a valid header value")
        };
        if request_id.is_some() {
            headers.insert(REQUEST_ID.clone(), value(ID..ID + 36));
        }
        headers.insert(TRACEPARENT.clone(), value(0..55));
        headers.insert(B3_TRACE_ID.clone(), value(3..35));
        headers.insert(B3_SPAN_ID.clone(), value(36..52));
        headers.insert(B3_SAMPLED.clone(), HeaderValue::from_static(if self.sampled { "1" } else { "0" }));
        if self.parent_span_id.is_some() {
            headers.insert(B3_PARENT.clone(), value(PARENT..ID));
        } else {
            headers.remove(&B3_PARENT);
        }
        headers.remove(&B3);
    }

    /// The trace id as 32 hex digits.
    pub fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }
}

/// Lowercase hex of the low `out.len() * 4` bits of `v`, most significant first
/// (`out.len()` even), two digits per table lookup.
fn hex(out: &mut [u8], v: u128) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    const PAIRS: [[u8; 2]; 256] = {
        let mut t = [[0u8; 2]; 256];
        let mut i = 0;
        while i < 256 {
            t[i] = [DIGITS[i >> 4], DIGITS[i & 0xf]];
            i += 1;
        }
        t
    };
    let bytes = v.to_be_bytes();
    let n = out.len() / 2;
    for (pair, byte) in out.chunks_exact_mut(2).zip(&bytes[16 - n..]) {
        pair.copy_from_slice(&PAIRS[usize::from(*byte)]);
    }
}

/// A UUID v4 in its 36-character form, from 128 random bits.
fn uuid_v4(out: &mut [u8], bits: u128) {
    let b = (bits & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let mut h = [0u8; 32];
    hex(&mut h, b);
    out.fill(b'-');
    out[..8].copy_from_slice(&h[..8]);
    out[9..13].copy_from_slice(&h[8..12]);
    out[14..18].copy_from_slice(&h[12..16]);
    out[19..23].copy_from_slice(&h[16..20]);
    out[24..36].copy_from_slice(&h[20..]);
}

/// A random UUID v4, for `x-request-id`.
pub fn request_id(rng: &mut impl Rng) -> HeaderValue {
    request_id_from_bits(rng.random())
}

/// The UUID v4 made of 128 random bits, for `x-request-id`.
pub fn request_id_from_bits(bits: u128) -> HeaderValue {
    let mut out = [0u8; 36];
    uuid_v4(&mut out, bits);
    HeaderValue::from_bytes(&out).expect("hex and dashes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{SeedableRng, rngs::StdRng};

    #[test]
    fn ids_and_flags_are_hex_digits_only() {
        let tp = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(TRACEPARENT.clone(), v.parse().unwrap());
            TraceContext::extract(&h)
        };
        assert!(tp("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").is_some());
        // `from_str_radix` takes a leading sign; W3C's ids and flags are hex digits.
        assert!(tp("00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").is_none());
        assert!(tp("00-4bf92f3577b34da6a3ce929d0e0e4736-+0f067aa0ba902b7-01").is_none());
        assert!(tp("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-+1").is_none());
    }

    #[test]
    fn w3c_and_b3_round_trip() {
        let mut rng = StdRng::seed_from_u64(1);
        let root = TraceContext::root(&mut rng, true);
        let child = root.child(&mut rng);
        let mut h = HeaderMap::new();
        child.inject(&mut h);
        assert_eq!(TraceContext::extract(&h).unwrap().trace_id, root.trace_id);
        assert_eq!(TraceContext::extract(&h).unwrap().span_id, child.span_id);
        h.remove("traceparent");
        let b3 = TraceContext::extract(&h).unwrap();
        assert_eq!((b3.trace_id, b3.span_id, b3.parent_span_id), (root.trace_id, child.span_id, Some(root.span_id)));
        let mut single = HeaderMap::new();
        single.insert("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90".parse().unwrap());
        let s = TraceContext::extract(&single).unwrap();
        assert_eq!(s.trace_id, 0x80f198ee56343ba864fe8b2a57d3eff7);
        assert_eq!(s.parent_span_id, Some(0x05e3ac9a4f6e3b90));
        let mut w3c = HeaderMap::new();
        w3c.insert("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap());
        let t = TraceContext::extract(&w3c).unwrap();
        assert_eq!((t.trace_id, t.span_id, t.sampled), (0x4bf92f3577b34da6a3ce929d0e0e4736, 0x00f067aa0ba902b7, true));
        w3c.insert("traceparent", "00-00000000000000000000000000000000-00f067aa0ba902b7-01".parse().unwrap());
        assert!(TraceContext::extract(&w3c).is_none(), "an all-zero trace id is invalid");
    }

    proptest::proptest! {
        /// The table-driven hex writer against `format!`.
        #[test]
        fn hex_matches_format(v: u128) {
            let mut long = [0u8; 32];
            hex(&mut long, v);
            proptest::prop_assert_eq!(std::str::from_utf8(&long).unwrap(), format!("{v:032x}"));
            let mut short = [0u8; 16];
            hex(&mut short, v);
            proptest::prop_assert_eq!(std::str::from_utf8(&short).unwrap(), format!("{:016x}", v as u64));
        }
    }

    #[test]
    fn one_buffer_carries_trace_and_request_id() {
        let ctx = TraceContext { trace_id: 0xabc, span_id: 0x12, parent_span_id: Some(0x34), sampled: true };
        let mut h = HeaderMap::new();
        h.insert("b3", "stale".parse().unwrap());
        ctx.inject_with_request_id(&mut h, Some(u128::MAX));
        let get = |k: &str| h.get(k).unwrap().to_str().unwrap();
        assert_eq!(get("traceparent"), "00-00000000000000000000000000000abc-0000000000000012-01");
        assert_eq!(get("x-b3-traceid"), "00000000000000000000000000000abc");
        assert_eq!(get("x-b3-spanid"), "0000000000000012");
        assert_eq!(get("x-b3-parentspanid"), "0000000000000034");
        assert_eq!(get("x-b3-sampled"), "1");
        assert_eq!(get("x-request-id"), "ffffffff-ffff-4fff-bfff-ffffffffffff");
        assert!(h.get("b3").is_none(), "a stale single-header b3 would contradict the new context");
    }

    #[test]
    fn request_ids_are_uuid_v4() {
        let id = request_id(&mut StdRng::seed_from_u64(2));
        let id = id.to_str().unwrap();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "{id}");
    }
}
