//! Access logs: one line per request, in Envoy's (Istio's default) text format or as JSON.

use std::{sync::Arc, time::SystemTime};

use arc_swap::ArcSwap;
use http::{Request, header};
use mesh_core::cel::{Attr, Expr, Value};

/// The fields of one access log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Start of the request.
    pub start: SystemTime,
    /// Method.
    pub method: String,
    /// Path (the original one when rewritten).
    pub path: String,
    /// `HTTP/1.1`, `HTTP/2`.
    pub protocol: String,
    /// Status sent, 0 when none.
    pub status: u16,
    /// Response flags, `-` when none.
    pub flags: String,
    /// Request body bytes.
    pub bytes_received: u64,
    /// Response body bytes.
    pub bytes_sent: u64,
    /// Milliseconds to the end of the response.
    pub duration_ms: u64,
    /// `x-forwarded-for`.
    pub forwarded_for: Option<String>,
    /// `user-agent`.
    pub user_agent: Option<String>,
    /// `x-request-id`.
    pub request_id: Option<String>,
    /// `:authority`.
    pub authority: String,
    /// The endpoint the request went to.
    pub upstream_host: Option<String>,
    /// The route's name.
    pub route_name: Option<String>,
    /// Trace id.
    pub trace_id: Option<String>,
    /// `http` or `https` (for a filter's `request.scheme`).
    pub scheme: &'static str,
    /// The downstream connection is mutual TLS (a filter's `connection.mtls`).
    pub mtls: bool,
    /// The request headers a filter reads, as sent (names lower-cased).
    pub headers: Vec<(String, String)>,
}

impl Default for Entry {
    fn default() -> Self {
        Self {
            start: SystemTime::UNIX_EPOCH,
            method: String::new(),
            path: String::new(),
            protocol: String::new(),
            status: 0,
            flags: "-".into(),
            bytes_received: 0,
            bytes_sent: 0,
            duration_ms: 0,
            forwarded_for: None,
            user_agent: None,
            request_id: None,
            authority: String::new(),
            upstream_host: None,
            route_name: None,
            trace_id: None,
            scheme: "http",
            mtls: false,
            headers: Vec::new(),
        }
    }
}

impl mesh_core::cel::Attributes for Entry {
    fn attr(&self, a: &Attr) -> Option<Value> {
        let text = |s: &str| Some(Value::Str(s.to_string()));
        let int = |n: u64| Some(Value::Int(i64::try_from(n).unwrap_or(i64::MAX)));
        match a {
            Attr::Method => text(&self.method),
            Attr::Path => text(&self.path),
            Attr::UrlPath => text(self.path.split_once('?').map_or(self.path.as_str(), |(p, _)| p)),
            Attr::Host => text(&self.authority),
            Attr::Scheme => text(self.scheme),
            Attr::Protocol => text(&self.protocol),
            Attr::UserAgent => self.user_agent.as_deref().and_then(text),
            Attr::RequestId => self.request_id.as_deref().and_then(text),
            Attr::RequestSize => int(self.bytes_received),
            Attr::RequestHeader(name) => self.headers.iter().find(|(n, _)| n == name).and_then(|(_, v)| text(v)),
            Attr::Code => int(u64::from(self.status)),
            Attr::ResponseSize => int(self.bytes_sent),
            Attr::UpstreamAddress => self.upstream_host.as_deref().and_then(text),
            Attr::Mtls => Some(Value::Bool(self.mtls)),
        }
    }
}

/// Whether, and for which requests, lines are written: what Telemetry `accessLogging`
/// sets for one side of a workload (else the proxy's default), swapped when config changes.
#[derive(Debug)]
pub struct LogControl(ArcSwap<LogRule>);

/// One side's access logging.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LogRule {
    /// Lines are written.
    pub on: bool,
    /// Only for the requests this holds for.
    pub filter: Option<Arc<Expr>>,
}

impl LogControl {
    /// With `rule` in force.
    pub fn new(rule: LogRule) -> Self {
        Self(ArcSwap::from_pointee(rule))
    }

    /// Put `rule` in force for requests that start from now on.
    pub fn set(&self, rule: LogRule) {
        if **self.0.load() != rule {
            self.0.store(Arc::new(rule));
        }
    }

    /// The rule in force (a guard: no reference count taken on the request path).
    pub fn rule(&self) -> arc_swap::Guard<Arc<LogRule>> {
        self.0.load()
    }
}

impl Entry {
    /// The request-side fields.
    pub fn from_request<B>(req: &Request<B>, authority: &str) -> Self {
        let h = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        Self {
            start: SystemTime::now(),
            method: req.method().to_string(),
            path: h("x-envoy-original-path")
                .unwrap_or_else(|| req.uri().path_and_query().map_or("/", |p| p.as_str()).to_string()),
            protocol: format!("{:?}", req.version()),
            forwarded_for: h("x-forwarded-for"),
            user_agent: req.headers().get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_string),
            request_id: h("x-request-id"),
            authority: authority.to_string(),
            scheme: if req.uri().scheme_str() == Some("https") || mesh_core::ext::DownstreamTls::of(req.extensions()) {
                "https"
            } else {
                "http"
            },
            mtls: req.extensions().get::<mesh_core::ext::PeerIdentity>().is_some(),
            ..Self::default()
        }
    }

    /// [`Entry::from_request`], keeping the request headers `filter` reads.
    pub fn for_filter<B>(req: &Request<B>, authority: &str, filter: Option<&Expr>) -> Self {
        let mut e = Self::from_request(req, authority);
        if let Some(f) = filter {
            e.headers = f
                .request_headers()
                .into_iter()
                .filter_map(|name| {
                    let v = req.headers().get(name.as_str())?.to_str().ok()?.to_string();
                    Some((name, v))
                })
                .collect();
        }
        e
    }

    /// Envoy's default format (Istio's `TEXT` encoding), with the trace id last.
    pub fn text(&self) -> String {
        let q = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        format!(
            "[{}] \"{} {} {}\" {} {} - - \"-\" {} {} {} - \"{}\" \"{}\" \"{}\" \"{}\" \"{}\" - - - - - {} {}",
            rfc3339(self.start),
            self.method,
            self.path,
            self.protocol,
            self.status,
            self.flags,
            self.bytes_received,
            self.bytes_sent,
            self.duration_ms,
            q(&self.forwarded_for),
            q(&self.user_agent),
            q(&self.request_id),
            self.authority,
            q(&self.upstream_host),
            q(&self.route_name),
            q(&self.trace_id),
        )
    }

    /// The same fields as one JSON object (Istio's `JSON` encoding).
    pub fn json(&self) -> String {
        let s = |v: &str| serde_like_escape(v);
        let o = |v: &Option<String>| v.as_deref().map_or("null".to_string(), s);
        format!(
            "{{\"start_time\":{},\"method\":{},\"path\":{},\"protocol\":{},\"response_code\":{},\"response_flags\":{},\"bytes_received\":{},\"bytes_sent\":{},\"duration\":{},\"x_forwarded_for\":{},\"user_agent\":{},\"request_id\":{},\"authority\":{},\"upstream_host\":{},\"route_name\":{},\"trace_id\":{}}}",
            s(&rfc3339(self.start)),
            s(&self.method),
            s(&self.path),
            s(&self.protocol),
            self.status,
            s(&self.flags),
            self.bytes_received,
            self.bytes_sent,
            self.duration_ms,
            o(&self.forwarded_for),
            o(&self.user_agent),
            o(&self.request_id),
            s(&self.authority),
            o(&self.upstream_host),
            o(&self.route_name),
            o(&self.trace_id),
        )
    }
}

fn serde_like_escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `2026-11-27T08:00:00.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Civil from days (Howard Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// The line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Envoy's default text line.
    Text,
    /// One JSON object per line.
    Json,
}

/// Where access log lines go.
#[derive(Clone)]
pub struct AccessLog {
    format: Format,
    sink: Arc<dyn Fn(&str) + Send + Sync>,
    /// Writes out what is buffered, for sinks that buffer.
    flush: Option<Arc<Batch>>,
}

/// Lines kept in memory and written in batches, as Envoy's file access log does: once
/// [`Batch::LIMIT`] bytes are pending, at every flush interval (a thread of its own), on
/// [`AccessLog::flush`] and when the last handle goes. Each batch is one write, so a busy
/// proxy makes one system call per many requests instead of one per request.
struct Batch {
    pending: std::sync::Mutex<Vec<u8>>,
    out: std::sync::Mutex<Box<dyn std::io::Write + Send>>,
}

impl Batch {
    const LIMIT: usize = 64 * 1024;

    fn push(&self, line: &str) {
        let full = {
            let mut p = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            p.extend_from_slice(line.as_bytes());
            p.push(b'\n');
            (p.len() >= Self::LIMIT).then(|| std::mem::take(&mut *p))
        };
        if let Some(batch) = full {
            self.write(&batch);
        }
    }

    fn flush(&self) {
        let batch = std::mem::take(&mut *self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        if !batch.is_empty() {
            self.write(&batch);
        }
    }

    fn write(&self, batch: &[u8]) {
        let mut out = self.out.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Nowhere to report a failed log write but the log itself: dropped, as Envoy does.
        let _ = out.write_all(batch).and_then(|()| out.flush());
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        self.flush();
    }
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog").field("format", &self.format).finish_non_exhaustive()
    }
}

impl AccessLog {
    /// Lines to standard output, each written as it comes.
    pub fn stdout(format: Format) -> Self {
        Self::to(format, |line| println!("{line}"))
    }

    /// Lines to standard output in batches (the sidecar's default, as Envoy's file access
    /// log, whose flush interval is 10 s): written when 64 KiB are pending and at least
    /// every `interval`. Call [`AccessLog::flush`] before the process exits.
    pub fn stdout_every(format: Format, interval: std::time::Duration) -> Self {
        Self::batched(format, Box::new(std::io::stdout()), interval)
    }

    /// Lines to `out` in batches, as [`AccessLog::stdout_every`].
    pub fn batched(format: Format, out: Box<dyn std::io::Write + Send>, interval: std::time::Duration) -> Self {
        let batch = Arc::new(Batch { pending: Default::default(), out: std::sync::Mutex::new(out) });
        let weak = Arc::downgrade(&batch);
        // A plain thread: the log must not depend on which runtime, if any, is running.
        let _ = std::thread::Builder::new().name("access-log".into()).spawn(move || {
            loop {
                std::thread::sleep(interval);
                match weak.upgrade() {
                    Some(b) => b.flush(),
                    None => return,
                }
            }
        });
        let sink = batch.clone();
        Self { format, sink: Arc::new(move |line| sink.push(line)), flush: Some(batch) }
    }

    /// Lines to a function.
    pub fn to(format: Format, sink: impl Fn(&str) + Send + Sync + 'static) -> Self {
        Self { format, sink: Arc::new(sink), flush: None }
    }

    /// Write out what is buffered now.
    pub fn flush(&self) {
        if let Some(b) = &self.flush {
            b.flush();
        }
    }

    /// Write one entry.
    pub fn write(&self, e: &Entry) {
        let line = match self.format {
            Format::Text => e.text(),
            Format::Json => e.json(),
        };
        (self.sink)(&line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A `Write` whose writes the test can count and read.
    #[derive(Clone, Default)]
    struct Shared(Arc<std::sync::Mutex<Vec<Vec<u8>>>>);

    impl std::io::Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn batches_are_written_whole_when_full_on_flush_and_on_drop() {
        let out = Shared::default();
        let log = AccessLog::batched(Format::Text, Box::new(out.clone()), Duration::from_secs(3600));
        let e = Entry { start: SystemTime::UNIX_EPOCH, method: "GET".into(), path: "/".into(), ..Entry::default() };
        log.write(&e);
        log.write(&e);
        assert!(out.0.lock().unwrap().is_empty(), "buffered");
        log.flush();
        let writes = out.0.lock().unwrap().clone();
        assert_eq!(writes.len(), 1, "one write for both lines");
        assert_eq!(String::from_utf8(writes[0].clone()).unwrap(), format!("{}\n{}\n", e.text(), e.text()));
        // Past 64 KiB a batch goes out at once.
        let n = Batch::LIMIT / e.text().len() + 1;
        for _ in 0..n {
            log.write(&e);
        }
        assert_eq!(out.0.lock().unwrap().len(), 2);
        log.write(&e);
        drop(log);
        let writes = out.0.lock().unwrap().clone();
        assert_eq!(writes.len(), 3, "the rest when the last handle goes");
        let lines: usize = writes.iter().map(|w| w.iter().filter(|b| **b == b'\n').count()).sum();
        assert_eq!(lines, n + 3);
    }

    #[test]
    fn the_interval_flushes() {
        let out = Shared::default();
        let log = AccessLog::batched(Format::Json, Box::new(out.clone()), Duration::from_millis(20));
        log.write(&Entry::default());
        for _ in 0..500 {
            if !out.0.lock().unwrap().is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("not flushed by the interval");
    }

    #[test]
    fn time_format() {
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339(SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_680_000_123)),
            "2026-11-26T08:00:00.123Z"
        );
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn text_and_json() {
        let e = Entry {
            start: SystemTime::UNIX_EPOCH,
            method: "GET".into(),
            path: "/ratings/0".into(),
            protocol: "HTTP/1.1".into(),
            status: 500,
            flags: "FI".into(),
            authority: "ratings:9080".into(),
            request_id: Some("abc".into()),
            trace_id: Some("t1".into()),
            ..Entry::default()
        };
        assert_eq!(
            e.text(),
            "[1970-01-01T00:00:00.000Z] \"GET /ratings/0 HTTP/1.1\" 500 FI - - \"-\" 0 0 0 - \"-\" \"-\" \"abc\" \"ratings:9080\" \"-\" - - - - - - t1"
        );
        assert!(
            e.json().contains("\"response_flags\":\"FI\"") && e.json().contains("\"trace_id\":\"t1\""),
            "{}",
            e.json()
        );
    }
}
