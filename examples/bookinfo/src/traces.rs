//! The dashboard's trace collector (the seed's Jaeger): an OTLP/HTTP receiver
//! (`POST /v1/traces`, protobuf) whose spans are kept in memory, bounded, and queried as
//! Jaeger's UI queries them: recent traces by service, operation and minimum duration, and
//! one trace's spans as a tree.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    sync::Mutex,
    time::{Duration, SystemTime},
};

use mesh_telemetry::otlp::{ReceivedSpan, SpanRecord};
use serde_json::{Value, json};

/// Traces kept at most; the oldest go first.
pub const MAX_TRACES: usize = 2_000;
/// Spans kept at most, over all traces.
pub const MAX_SPANS: usize = 50_000;
/// Spans kept of one trace at most (later ones are counted, not kept).
const MAX_SPANS_PER_TRACE: usize = 1_000;
/// The most the kept spans' text (names, services, attributes) may take, in bytes: a
/// sender of few but huge spans cannot grow the store past it either.
pub const MAX_BYTES: usize = 64 << 20;

/// What a span's text takes.
fn size_of(s: &ReceivedSpan) -> usize {
    64 + s.service.len()
        + s.span.name.len()
        + s.span.attributes.iter().map(|(k, v)| k.len() + v.len() + 16).sum::<usize>()
}

#[derive(Debug, Default)]
struct Trace {
    spans: Vec<ReceivedSpan>,
    /// Spans that arrived past `MAX_SPANS_PER_TRACE`.
    dropped: usize,
}

impl Trace {
    fn start(&self) -> SystemTime {
        self.spans.iter().map(|s| s.span.start).min().unwrap_or(SystemTime::UNIX_EPOCH)
    }

    fn end(&self) -> SystemTime {
        self.spans.iter().map(|s| s.span.end).max().unwrap_or(SystemTime::UNIX_EPOCH)
    }

    fn duration(&self) -> Duration {
        self.end().duration_since(self.start()).unwrap_or_default()
    }

    /// The span without a parent in this trace (the earliest, if several).
    fn root(&self) -> Option<&ReceivedSpan> {
        let ids: BTreeSet<u64> = self.spans.iter().map(|s| s.span.span_id).collect();
        self.spans
            .iter()
            .filter(|s| s.span.parent_span_id.is_none_or(|p| !ids.contains(&p)))
            .min_by_key(|s| s.span.start)
    }
}

#[derive(Debug, Default)]
struct Inner {
    traces: HashMap<u128, Trace>,
    /// Trace ids by first arrival, for eviction.
    order: VecDeque<u128>,
    spans: usize,
    bytes: usize,
}

/// What a trace search asks.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Query {
    /// A span of the trace is from this service (`productpage.default`).
    pub service: Option<String>,
    /// A span of the trace has this name (of `service`, when it is given).
    pub operation: Option<String>,
    /// A span of the trace is from this workload's proxy (its `node_id`).
    pub workload: Option<String>,
    /// With `workload`: that workload called this one in the trace (a client span of
    /// `workload` whose child is a server span of `to`): an edge of the graph.
    pub to: Option<String>,
    /// The trace lasted at least this long.
    pub min_duration: Option<Duration>,
    /// At most this many traces (newest first).
    pub limit: usize,
}

impl Query {
    /// From a URL query: `service`, `operation`, `workload`, `to`, `minDuration` (ms, or
    /// with a unit: `500ms`, `2s`), `limit` (20 by default, at most 500).
    pub fn parse(query: Option<&str>) -> Result<Self, String> {
        let mut q = Query { limit: 20, ..Query::default() };
        for (k, v) in form(query) {
            match k.as_str() {
                "service" if !v.is_empty() => q.service = Some(v),
                "operation" if !v.is_empty() => q.operation = Some(v),
                "workload" if !v.is_empty() => q.workload = Some(v),
                "to" if !v.is_empty() => q.to = Some(v),
                "minDuration" if !v.is_empty() => {
                    q.min_duration = Some(match v.parse::<f64>() {
                        // A caller's number: checked, never a panic on NaN or overflow.
                        Ok(ms) => Duration::try_from_secs_f64(ms / 1000.0)
                            .map_err(|_| format!("minDuration `{v}`: not a duration in milliseconds"))?,
                        _ => v
                            .parse::<mesh_core::duration::Duration>()
                            .map_err(|e| format!("minDuration `{v}`: {e}"))?
                            .get(),
                    });
                }
                "limit" => {
                    q.limit = v.parse::<usize>().map_err(|_| format!("limit `{v}` is not a number"))?.min(500);
                }
                _ => {}
            }
        }
        Ok(q)
    }
}

/// `a=b&c=d`, percent-decoded.
fn form(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let s = s.replace('+', " ");
    mesh_core::request::percent_decode(&s).into_owned()
}

/// The bounded store of received spans.
#[derive(Debug, Default)]
pub struct TraceStore {
    inner: Mutex<Inner>,
}

fn hex128(v: u128) -> String {
    format!("{v:032x}")
}

fn micros(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0
}

fn attr<'a>(s: &'a SpanRecord, key: &str) -> Option<&'a str> {
    s.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// The workload whose proxy wrote the span (`node_id` is `workload.namespace`).
fn workload_of(s: &SpanRecord) -> Option<&str> {
    attr(s, "node_id").map(|n| n.split_once('.').map_or(n, |(w, _)| w))
}

impl Trace {
    fn matches(&self, q: &Query) -> bool {
        let service_ok = q.service.as_ref().is_none_or(|svc| self.spans.iter().any(|s| &s.service == svc));
        let op_ok = q.operation.as_ref().is_none_or(|op| {
            self.spans.iter().any(|s| &s.span.name == op && q.service.as_ref().is_none_or(|svc| &s.service == svc))
        });
        let workload_ok = match (&q.workload, &q.to) {
            (None, _) => true,
            (Some(w), None) => self.spans.iter().any(|s| workload_of(&s.span) == Some(w.as_str())),
            (Some(from), Some(to)) => self.spans.iter().any(|c| {
                !c.span.server
                    && workload_of(&c.span) == Some(from.as_str())
                    && self.spans.iter().any(|s| {
                        s.span.server
                            && s.span.parent_span_id == Some(c.span.span_id)
                            && workload_of(&s.span) == Some(to.as_str())
                    })
            }),
        };
        service_ok && op_ok && workload_ok && q.min_duration.is_none_or(|d| self.duration() >= d)
    }
}

impl TraceStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keep `spans`, evicting the oldest traces past the bounds.
    pub fn add(&self, spans: Vec<ReceivedSpan>) {
        let mut inner = self.lock();
        for s in spans {
            let id = s.span.trace_id;
            let inner = &mut *inner;
            let trace = inner.traces.entry(id).or_insert_with(|| {
                inner.order.push_back(id);
                Trace::default()
            });
            if trace.spans.len() >= MAX_SPANS_PER_TRACE {
                trace.dropped += 1;
                continue;
            }
            inner.bytes += size_of(&s);
            trace.spans.push(s);
            inner.spans += 1;
        }
        while inner.order.len() > MAX_TRACES || inner.spans > MAX_SPANS || inner.bytes > MAX_BYTES {
            let Some(old) = inner.order.pop_front() else { break };
            if let Some(t) = inner.traces.remove(&old) {
                inner.spans -= t.spans.len();
                inner.bytes -= t.spans.iter().map(size_of).sum::<usize>();
            }
        }
    }

    /// How many traces and spans are kept.
    pub fn len(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.traces.len(), inner.spans)
    }

    /// Every service and its span names, for the search form.
    pub fn services(&self) -> Value {
        let inner = self.lock();
        let mut out: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for t in inner.traces.values() {
            for s in &t.spans {
                out.entry(s.service.as_str()).or_default().insert(s.span.name.as_str());
            }
        }
        json!({ "services": out })
    }

    /// Traces matching `q`, newest first, as summaries.
    pub fn search(&self, q: &Query) -> Value {
        let inner = self.lock();
        let mut found: Vec<(&u128, &Trace)> = inner.traces.iter().filter(|(_, t)| t.matches(q)).collect();
        found.sort_by_key(|(_, t)| std::cmp::Reverse(t.start()));
        let traces: Vec<Value> = found
            .into_iter()
            .take(q.limit)
            .map(|(id, t)| {
                let root = t.root();
                let services: BTreeSet<&str> = t.spans.iter().map(|s| s.service.as_str()).collect();
                json!({
                    "trace_id": hex128(*id),
                    "root_service": root.map(|r| r.service.as_str()),
                    "root_operation": root.map(|r| r.span.name.as_str()),
                    "start_us": micros(t.start()),
                    "duration_ms": ms(t.duration()),
                    "spans": t.spans.len(),
                    "errors": t.spans.iter().filter(|s| s.span.error).count(),
                    "services": services,
                })
            })
            .collect();
        json!({ "traces": traces })
    }

    /// One trace's spans, parents before children (siblings by start), each with its depth
    /// and its offset from the trace's start: what a waterfall draws.
    pub fn trace(&self, id: &str) -> Option<Value> {
        let id = u128::from_str_radix(id, 16).ok()?;
        let inner = self.lock();
        let t = inner.traces.get(&id)?;
        let start = t.start();
        let ids: BTreeSet<u64> = t.spans.iter().map(|s| s.span.span_id).collect();
        let mut children: BTreeMap<Option<u64>, Vec<&ReceivedSpan>> = BTreeMap::new();
        for s in &t.spans {
            // A span whose parent never arrived hangs at the top.
            let parent = s.span.parent_span_id.filter(|p| ids.contains(p));
            children.entry(parent).or_default().push(s);
        }
        for list in children.values_mut() {
            list.sort_by_key(|s| (s.span.start, s.span.span_id));
        }
        let mut out = Vec::with_capacity(t.spans.len());
        // The roots first; then any span no root reaches (a cycle of parents), as a root.
        let mut by_start: Vec<&ReceivedSpan> = t.spans.iter().collect();
        by_start.sort_by_key(|s| (s.span.start, s.span.span_id));
        let mut stack: Vec<(&ReceivedSpan, usize)> =
            children.get(&None).into_iter().flatten().rev().map(|s| (*s, 0)).collect();
        let mut seen = BTreeSet::new();
        let mut next_root = by_start.into_iter();
        while let Some((s, depth)) =
            stack.pop().or_else(|| next_root.by_ref().find(|s| !seen.contains(&std::ptr::from_ref(*s))).map(|s| (s, 0)))
        {
            // Two spans claiming the same id cannot loop the walk.
            if !seen.insert(std::ptr::from_ref(s)) {
                continue;
            }
            let span = &s.span;
            out.push(json!({
                "span_id": format!("{:016x}", span.span_id),
                "parent_span_id": span.parent_span_id.map(|p| format!("{p:016x}")),
                "depth": depth,
                "service": s.service,
                "name": span.name,
                "kind": if span.server { "server" } else { "client" },
                "offset_ms": ms(span.start.duration_since(start).unwrap_or_default()),
                "duration_ms": ms(span.end.duration_since(span.start).unwrap_or_default()),
                "error": span.error,
                "status_code": attr(span, "http.status_code"),
                "response_flags": attr(span, "response_flags"),
                "upstream": attr(span, "upstream_cluster"),
                "upstream_address": attr(span, "upstream_address"),
                "attributes": span.attributes.iter().cloned().collect::<BTreeMap<String, String>>(),
            }));
            if let Some(kids) = children.get(&Some(span.span_id)) {
                stack.extend(kids.iter().rev().map(|k| (*k, depth + 1)));
            }
        }
        Some(json!({
            "trace_id": hex128(id),
            "start_us": micros(start),
            "duration_ms": ms(t.duration()),
            "dropped_spans": t.dropped,
            "spans": out,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(trace: u128, id: u64, parent: Option<u64>, service: &str, start_ms: u64, len_ms: u64) -> ReceivedSpan {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        ReceivedSpan {
            service: service.into(),
            span: SpanRecord {
                trace_id: trace,
                span_id: id,
                parent_span_id: parent,
                name: format!("{service}/op"),
                server: id.is_multiple_of(2),
                start: t0 + Duration::from_millis(start_ms),
                end: t0 + Duration::from_millis(start_ms + len_ms),
                attributes: vec![
                    ("http.status_code".into(), "200".into()),
                    ("node_id".into(), format!("{}-v1.{}", service.split('.').next().unwrap_or(""), "default")),
                ],
                error: false,
            },
        }
    }

    #[test]
    fn an_edge_of_the_graph_finds_its_traces() {
        let store = TraceStore::default();
        // productpage (client span 3) -> reviews (server span 4); details is called too.
        store.add(vec![
            span(1, 2, None, "productpage.default", 0, 10),
            span(1, 3, Some(2), "productpage.default", 1, 5),
            span(1, 4, Some(3), "reviews.default", 2, 3),
        ]);
        store.add(vec![span(2, 1, None, "details.default", 0, 1)]);
        let q = |s: &str| store.search(&Query::parse(Some(s)).unwrap())["traces"].as_array().unwrap().len();
        assert_eq!(q("workload=reviews-v1"), 1);
        assert_eq!(q("workload=productpage-v1&to=reviews-v1"), 1);
        assert_eq!(q("workload=reviews-v1&to=productpage-v1"), 0, "the other way is not an edge");
        assert_eq!(q("workload=details-v1"), 1);
    }

    #[test]
    fn a_trace_is_a_tree_with_offsets_and_searches_filter() {
        let store = TraceStore::default();
        // Out of order, as proxies flush at different times.
        store.add(vec![
            span(7, 3, Some(2), "reviews.default", 5, 20),
            span(7, 1, None, "istio-ingressgateway.istio-system", 0, 40),
            span(7, 2, Some(1), "productpage.default", 2, 30),
            span(7, 4, Some(2), "details.default", 3, 1),
        ]);
        store.add(vec![span(8, 1, None, "productpage.default", 100, 2)]);
        let t = store.trace(&format!("{:x}", 7u128)).unwrap();
        let order: Vec<(&str, u64)> = t["spans"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["service"].as_str().unwrap(), s["depth"].as_u64().unwrap()))
            .collect();
        assert_eq!(
            order,
            [
                ("istio-ingressgateway.istio-system", 0),
                ("productpage.default", 1),
                ("details.default", 2),
                ("reviews.default", 2)
            ]
        );
        assert_eq!(t["duration_ms"], 40.0);
        assert_eq!(t["spans"][3]["offset_ms"], 5.0);

        let all = store.search(&Query::parse(None).unwrap());
        let ids: Vec<&str> =
            all["traces"].as_array().unwrap().iter().map(|t| t["trace_id"].as_str().unwrap()).collect();
        assert_eq!(ids, [format!("{:032x}", 8), format!("{:032x}", 7)], "newest first");
        assert_eq!(all["traces"][1]["root_service"], "istio-ingressgateway.istio-system");
        let slow = store.search(&Query::parse(Some("minDuration=30")).unwrap());
        assert_eq!(slow["traces"].as_array().unwrap().len(), 1);
        let slow = store.search(&Query::parse(Some("minDuration=1s")).unwrap());
        assert_eq!(slow["traces"].as_array().unwrap().len(), 0);
        let q = Query::parse(Some("service=details.default&operation=details.default%2Fop")).unwrap();
        assert_eq!(store.search(&q)["traces"].as_array().unwrap().len(), 1);
        let q = Query::parse(Some("service=productpage.default&operation=details.default%2Fop")).unwrap();
        assert_eq!(store.search(&q)["traces"].as_array().unwrap().len(), 0, "the operation of that service");
        assert!(Query::parse(Some("limit=x")).is_err());
        assert!(Query::parse(Some("minDuration=soon")).is_err());
        for hostile in
            ["minDuration=1e300", "minDuration=-5", "minDuration=NaN", "minDuration=inf", "limit=99999999999999999999"]
        {
            assert!(Query::parse(Some(hostile)).is_err(), "{hostile}");
        }
        assert_eq!(Query::parse(Some("limit=100000")).unwrap().limit, 500, "capped");
        assert_eq!(store.services()["services"]["details.default"][0], "details.default/op");
    }

    #[test]
    fn the_store_is_bounded_oldest_first() {
        let store = TraceStore::default();
        for t in 0..(MAX_TRACES as u128 + 10) {
            store.add(vec![span(t + 1, 1, None, "a", 0, 1)]);
        }
        assert_eq!(store.len(), (MAX_TRACES, MAX_TRACES));
        assert!(store.trace("1").is_none(), "the oldest went first");
        assert!(store.trace(&format!("{:x}", MAX_TRACES + 10)).is_some());
        // One huge trace: kept up to its cap, the rest counted.
        let store = TraceStore::default();
        store.add((1..=(MAX_SPANS_PER_TRACE as u64 + 5)).map(|i| span(1, i, None, "a", 0, 1)).collect());
        let t = store.trace("1").unwrap();
        assert_eq!((t["spans"].as_array().unwrap().len(), t["dropped_spans"].as_u64()), (MAX_SPANS_PER_TRACE, Some(5)));
        // Few but huge spans: bounded by their bytes.
        let store = TraceStore::default();
        for t in 1..=20u128 {
            let mut big = span(t, 1, None, "a", 0, 1);
            big.span.attributes.push(("blob".into(), "x".repeat(8 << 20)));
            store.add(vec![big]);
        }
        let (traces, _) = store.len();
        assert!(traces <= MAX_BYTES / (8 << 20), "{traces} traces of 8 MiB kept");
        assert!(store.trace(&format!("{:x}", 20)).is_some(), "the newest is kept");
    }

    #[test]
    fn a_span_that_is_its_own_parent_does_not_loop() {
        let store = TraceStore::default();
        store.add(vec![span(1, 5, Some(5), "a", 0, 1), span(1, 6, Some(5), "b", 0, 1)]);
        let t = store.trace("1").unwrap();
        assert_eq!(t["spans"].as_array().unwrap().len(), 2);
    }
}
