//! The service graph, as Kiali draws it, from the sidecars' own metrics: every few seconds
//! each proxy's `/stats/prometheus` is scraped; an edge per (caller, callee) workload with its
//! request rate, error rate and p99 over the last interval, and whether it is mTLS. Served as
//! JSON (`/api/graph`, `/api/workload/NAME`) and as a page (`/`) that redraws itself. The
//! same process collects the proxies' spans (`POST /v1/traces`, OTLP/HTTP; see
//! [`crate::traces`]) and serves them (`/api/traces`, `/api/traces/ID`, `/api/services`) to
//! the page's Traces view.

use std::{
    collections::{BTreeMap, VecDeque},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    http::{Body, Outcome, Upstreams, json, not_found, respond},
    traces::{Query, TraceStore},
};

/// How often the proxies are scraped.
pub const INTERVAL: Duration = Duration::from_secs(2);
/// Points kept per workload for its charts.
const HISTORY: usize = 150;
/// Envoy's duration buckets, in milliseconds (ISTIO-SEMANTICS §7).
const BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0, 60000.0, 300000.0,
    600000.0, 1800000.0, 3600000.0,
];

/// One scrape's cumulative numbers for an edge.
#[derive(Clone, Debug, Default, PartialEq)]
struct Totals {
    requests: f64,
    errors: f64,
    /// Cumulative bucket counts (`le` order of `BUCKETS`, then +Inf).
    buckets: Vec<f64>,
    mtls: bool,
    /// Requests by response code class (`2xx`, ..., `0` for no response).
    codes: BTreeMap<String, f64>,
    /// Requests by response flags (those with flags only).
    flags: BTreeMap<String, f64>,
    /// (source principal, destination principal) seen over mTLS, from the callee's side.
    principals: std::collections::BTreeSet<(String, String)>,
    /// Counted from the callee's side only: the caller has no proxy reporting it (a
    /// plaintext caller, or one outside the mesh).
    destination_only: bool,
}

/// `200` -> `2xx`; `0` (no response) stays `0`.
fn code_class(code: &str) -> String {
    match code.as_bytes().first() {
        Some(b @ b'1'..=b'5') if code.len() == 3 => format!("{}xx", *b as char),
        _ => code.to_string(),
    }
}

/// Why a node is `unknown`, from the edges that touch it (Kiali's question: who is this?).
fn explain_unknown(edges: &[Edge]) -> Option<String> {
    let mut why = std::collections::BTreeSet::new();
    for e in edges {
        if e.target == "unknown" {
            why.insert(if e.flags_seen.contains("NR") {
                "no route: the Host matched no service or route of the caller's (404 NR)"
            } else {
                "a destination outside the mesh (no workload behind the host)"
            });
        }
        if e.source == "unknown" {
            why.insert("a caller without a mesh identity: plaintext, or from outside the mesh");
        }
    }
    (!why.is_empty()).then(|| why.into_iter().collect::<Vec<_>>().join("; "))
}

/// An edge as drawn: rates over the last interval.
#[derive(Clone, Debug, PartialEq)]
pub struct Edge {
    /// Caller workload.
    pub source: String,
    /// Callee workload.
    pub target: String,
    /// Requests per second.
    pub rps: f64,
    /// Share of 5xx and local-reply failures, 0..1.
    pub error_rate: f64,
    /// 99th percentile latency (ms), from the histogram's buckets.
    pub p99_ms: Option<f64>,
    /// Median latency (ms).
    pub p50_ms: Option<f64>,
    /// 95th percentile latency (ms).
    pub p95_ms: Option<f64>,
    /// Every request seen on it was mutual TLS.
    pub mtls: bool,
    /// Requests since the mesh started.
    pub total: f64,
    /// Requests per second by response code class.
    pub codes: BTreeMap<String, f64>,
    /// Requests per second by response flags.
    pub flags: BTreeMap<String, f64>,
    /// (source principal, destination principal) of its mTLS requests.
    pub principals: Vec<(String, String)>,
    /// Every response flag seen on it since the mesh started.
    pub flags_seen: std::collections::BTreeSet<String>,
}

/// (unix seconds, inbound rps, inbound error rate, inbound p99).
type Point = (u64, f64, f64, Option<f64>);

/// Every edge's totals in one scrape.
type EdgeTotals = BTreeMap<(String, String), Totals>;

/// How far back the graph's time range goes (Kiali's "last 15m").
pub const MAX_RANGE: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, Default)]
struct State {
    last: BTreeMap<(String, String), Totals>,
    /// Every scrape's totals within `MAX_RANGE` (seconds since the epoch), for ranges.
    history: VecDeque<(f64, EdgeTotals)>,
    edges: Vec<Edge>,
    /// Per workload, what came in over time.
    series: BTreeMap<String, VecDeque<Point>>,
}

/// The dashboard: what to scrape and what was seen.
#[derive(Clone, Debug)]
pub struct Dashboard {
    /// (workload, admin address) of every proxy.
    proxies: Arc<Vec<(String, SocketAddr)>>,
    state: Arc<Mutex<State>>,
    traces: Arc<TraceStore>,
    /// Where the graph comes from: each proxy's `/stats/prometheus`, or a Prometheus server
    /// queried as Kiali queries it.
    source: Arc<GraphSource>,
    /// The config directory the mesh watches, for the Istio config view.
    config: Option<Arc<std::path::PathBuf>>,
}

/// Where the graph's numbers come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GraphSource {
    /// Scrape every proxy directly.
    Proxies,
    /// Query this Prometheus (`http://HOST:PORT`), as Kiali does.
    Prometheus(SocketAddr),
}

/// The window of Prometheus' `rate()` in the graph's queries (Kiali's default is 1m; the
/// demo's is shorter so the graph follows traffic within seconds).
pub const PROMETHEUS_WINDOW: &str = "30s";

/// The queries the graph is built from, with Kiali's labels and reporters: requests per
/// edge and response code (the caller's view, so failures that never reached the callee
/// count), mTLS as the callee saw it, and the latency histogram per edge.
pub fn graph_queries(w: &str) -> [(&'static str, String); 6] {
    let quantile = |q: &str| {
        format!(
            "histogram_quantile({q}, sum by (le, source_workload, destination_workload) (rate(istio_request_duration_milliseconds_bucket{{reporter=\"source\"}}[{w}])))"
        )
    };
    [
        (
            "rate",
            format!(
                "sum by (source_workload, destination_workload, response_code, response_flags) (rate(istio_requests_total{{reporter=\"source\"}}[{w}]))"
            ),
        ),
        (
            "total",
            "sum by (source_workload, destination_workload, response_code, response_flags) (istio_requests_total{reporter=\"source\"})"
                .to_string(),
        ),
        (
            "mtls",
            "sum by (source_workload, destination_workload, source_principal, destination_principal) (istio_requests_total{reporter=\"destination\", connection_security_policy=\"mutual_tls\"})"
                .to_string(),
        ),
        ("p99", quantile("0.99")),
        ("p95", quantile("0.95")),
        ("p50", quantile("0.5")),
    ]
}

/// `application/x-www-form-urlencoded` for a query parameter.
fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One instant query: `(labels, value)` per series.
pub async fn prometheus_query(addr: SocketAddr, query: &str) -> Result<Vec<(BTreeMap<String, String>, f64)>, String> {
    let upstream = Upstreams { direct: [("prometheus".to_string(), vec![addr])].into(), ..Upstreams::default() };
    let path = format!("/api/v1/query?query={}", form_encode(query));
    let body =
        match upstream.get("prometheus", addr.port(), &path, &http::HeaderMap::new(), Duration::from_secs(5)).await {
            Outcome::Answered(StatusCode::OK, body) => body,
            Outcome::Answered(status, body) => {
                return Err(format!("Prometheus answered {status}: {}", String::from_utf8_lossy(&body)));
            }
            Outcome::Failed(e) => return Err(format!("Prometheus at {addr}: {e}")),
        };
    let v: Value = serde_json::from_slice(&body).map_err(|e| format!("Prometheus' answer: {e}"))?;
    let Some(result) = v["data"]["result"].as_array() else {
        return Err(format!("Prometheus' answer has no data.result: {v}"));
    };
    Ok(result
        .iter()
        .filter_map(|r| {
            let labels = r["metric"]
                .as_object()?
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect();
            let value: f64 = r["value"][1].as_str()?.parse().ok()?;
            Some((labels, value))
        })
        .collect())
}

/// The most of one OTLP export request read.
const MAX_EXPORT: usize = 8 << 20;

/// Labels of one sample line: `name{k="v",...} value`.
fn parse_line(line: &str) -> Option<(&str, BTreeMap<&str, &str>, f64)> {
    let (head, value) = line.rsplit_once(' ')?;
    let (name, labels) = head.split_once('{')?;
    let labels = labels.strip_suffix('}')?;
    let mut map = BTreeMap::new();
    for pair in labels.split("\",") {
        let (k, v) = pair.split_once("=\"")?;
        map.insert(k, v.trim_end_matches('"'));
    }
    Some((name, map, value.parse().ok()?))
}

/// The edges in one proxy's exposition, from its `reporter="source"` series (failures that
/// never reach the callee included) and `reporter="destination"` ones (for mTLS).
fn edges_of(text: &str, into: &mut BTreeMap<(String, String), Totals>) {
    for line in text.lines() {
        let Some((name, l, value)) = parse_line(line) else { continue };
        let key = || {
            (
                l.get("source_workload").copied().unwrap_or("unknown").to_string(),
                l.get("destination_workload").copied().unwrap_or("unknown").to_string(),
            )
        };
        let count = |t: &mut Totals| {
            t.requests += value;
            let code = l.get("response_code").copied().unwrap_or("0");
            let n: u16 = code.parse().unwrap_or(0);
            if n >= 500 || n == 0 {
                t.errors += value;
            }
            *t.codes.entry(code_class(code)).or_default() += value;
            if let Some(f) = l.get("response_flags").filter(|f| **f != "-" && !f.is_empty()) {
                *t.flags.entry((*f).to_string()).or_default() += value;
            }
        };
        match (name, l.get("reporter").copied()) {
            ("istio_requests_total", Some("source")) => count(into.entry(key()).or_default()),
            ("istio_requests_total", Some("destination")) => {
                let source_known = l.get("source_workload").is_some_and(|w| *w != "unknown");
                let t = into.entry(key()).or_default();
                if !source_known {
                    // No caller's proxy reports these: the callee's view is the only one.
                    t.destination_only = true;
                    count(t);
                }
                if l.get("connection_security_policy") == Some(&"mutual_tls") {
                    t.mtls = true;
                    let p = |k: &str| l.get(k).copied().unwrap_or("unknown").to_string();
                    t.principals.insert((p("source_principal"), p("destination_principal")));
                }
            }
            ("istio_request_duration_milliseconds_bucket", Some("source")) => {
                let le = l.get("le").copied().unwrap_or("+Inf");
                let i = BUCKETS
                    .iter()
                    .position(|b| le.parse::<f64>().is_ok_and(|x| (x - b).abs() < 1e-9))
                    .unwrap_or(BUCKETS.len());
                let t = into.entry(key()).or_default();
                t.buckets.resize(BUCKETS.len() + 1, 0.0);
                t.buckets[i] += value;
            }
            _ => {}
        }
    }
}

/// A quantile from cumulative bucket deltas (the bucket's upper bound).
fn quantile(delta: &[f64], q: f64) -> Option<f64> {
    let total = *delta.last()?;
    if total <= 0.0 {
        return None;
    }
    let want = total * q;
    delta.iter().position(|c| *c >= want).map(|i| BUCKETS.get(i).copied().unwrap_or(f64::INFINITY))
}

/// The 99th percentile.
fn p99(delta: &[f64]) -> Option<f64> {
    quantile(delta, 0.99)
}

/// Per-key rates between two maps of totals.
fn rates(now: &BTreeMap<String, f64>, prev: &BTreeMap<String, f64>, secs: f64) -> BTreeMap<String, f64> {
    now.iter()
        .map(|(k, v)| (k.clone(), ((v - prev.get(k).copied().unwrap_or(0.0)).max(0.0) / secs * 100.0).round() / 100.0))
        .filter(|(_, r)| *r > 0.0)
        .collect()
}

/// The edges between two scrapes' totals, `secs` apart: rates, error share, quantiles.
fn edges_between(now: &EdgeTotals, last: &EdgeTotals, secs: f64) -> Vec<Edge> {
    let mut edges = Vec::new();
    for ((source, target), t) in now {
        if t.requests <= 0.0 {
            continue;
        }
        let prev = last.get(&(source.clone(), target.clone())).cloned().unwrap_or_default();
        let requests = (t.requests - prev.requests).max(0.0);
        let errors = (t.errors - prev.errors).max(0.0);
        let delta: Vec<f64> = t
            .buckets
            .iter()
            .enumerate()
            .map(|(i, c)| (c - prev.buckets.get(i).copied().unwrap_or(0.0)).max(0.0))
            .collect();
        edges.push(Edge {
            source: source.clone(),
            target: target.clone(),
            rps: requests / secs,
            error_rate: if requests > 0.0 { errors / requests } else { 0.0 },
            p99_ms: p99(&delta),
            p50_ms: quantile(&delta, 0.5),
            p95_ms: quantile(&delta, 0.95),
            mtls: t.mtls,
            total: t.requests,
            codes: rates(&t.codes, &prev.codes, secs),
            flags: rates(&t.flags, &prev.flags, secs),
            principals: t.principals.iter().cloned().collect(),
            flags_seen: t.flags.keys().cloned().collect(),
        });
    }
    edges
}

impl Dashboard {
    /// A dashboard over these proxies' admin endpoints.
    pub fn new(proxies: Vec<(String, SocketAddr)>) -> Self {
        Self {
            proxies: Arc::new(proxies),
            state: Arc::default(),
            traces: Arc::default(),
            source: Arc::new(GraphSource::Proxies),
            config: None,
        }
    }

    /// Show the resources of this config directory, with `analyze`'s findings beside each.
    #[must_use]
    pub fn with_config(mut self, dir: std::path::PathBuf) -> Self {
        self.config = Some(Arc::new(dir));
        self
    }

    /// Kiali's Istio config view: every applied resource with the findings of `meshctl
    /// analyze` beside it (validation and cross-resource checks), and findings that belong
    /// to no loaded resource (a document that did not load).
    pub async fn config_view(&self) -> Value {
        let Some(dir) = self.config.clone() else {
            return json!({"resources": [], "other_findings": [], "error": "no config directory"});
        };
        let loaded = tokio::task::spawn_blocking(move || {
            mesh_config::load::load_paths(std::slice::from_ref(&*dir), &mesh_proxy::config::load_options("default"))
        })
        .await;
        let Ok(loaded) = loaded else {
            return json!({"resources": [], "other_findings": [], "error": "loading the config failed"});
        };
        let finding = |d: &mesh_config::Diagnostic| json!({"severity": d.severity.to_string(), "file": d.file, "line": d.line, "field": d.field.to_string(), "message": d.message});
        let objects: std::collections::BTreeSet<String> = loaded.resources.iter().map(|r| r.object()).collect();
        let resources: Vec<Value> = loaded
            .resources
            .iter()
            .map(|r| {
                let object = r.object();
                let findings: Vec<Value> =
                    loaded.diagnostics.iter().filter(|d| d.object == object).map(finding).collect();
                let worst = loaded
                    .diagnostics
                    .iter()
                    .filter(|d| d.object == object)
                    .map(|d| d.severity)
                    .max()
                    .map_or("valid".to_string(), |s| s.to_string());
                let meta = r.resource.meta();
                json!({
                    "kind": r.resource.kind().as_str(),
                    "namespace": meta.namespace,
                    "name": meta.name,
                    "file": &*r.file,
                    "status": worst,
                    "findings": findings,
                })
            })
            .collect();
        let other: Vec<Value> =
            loaded.diagnostics.iter().filter(|d| !objects.contains(&d.object)).map(finding).collect();
        json!({"resources": resources, "other_findings": other})
    }

    /// Build the graph from this Prometheus instead of scraping the proxies.
    #[must_use]
    pub fn with_prometheus(mut self, addr: SocketAddr) -> Self {
        self.source = Arc::new(GraphSource::Prometheus(addr));
        self
    }

    /// The edges from Prometheus, as Kiali's queries give them.
    async fn edges_from_prometheus(&self, addr: SocketAddr, window: &str) -> Result<Vec<Edge>, String> {
        #[derive(Default)]
        struct Acc {
            rps: f64,
            errors: f64,
            total: f64,
            mtls: bool,
            p99: Option<f64>,
            p95: Option<f64>,
            p50: Option<f64>,
            codes: BTreeMap<String, f64>,
            flags: BTreeMap<String, f64>,
            principals: std::collections::BTreeSet<(String, String)>,
            flags_seen: std::collections::BTreeSet<String>,
        }
        let mut acc: BTreeMap<(String, String), Acc> = BTreeMap::new();
        let key = |l: &BTreeMap<String, String>| {
            let get = |k: &str| l.get(k).cloned().unwrap_or_else(|| "unknown".to_string());
            (get("source_workload"), get("destination_workload"))
        };
        let failed = |l: &BTreeMap<String, String>| {
            let code: u16 = l.get("response_code").and_then(|c| c.parse().ok()).unwrap_or(0);
            code >= 500 || code == 0
        };
        for (name, query) in graph_queries(window) {
            for (labels, value) in prometheus_query(addr, &query).await? {
                let a = acc.entry(key(&labels)).or_default();
                let finite = value.is_finite().then_some(value);
                match name {
                    "rate" => {
                        a.rps += value;
                        if failed(&labels) {
                            a.errors += value;
                        }
                        if value > 0.0 {
                            let code = labels.get("response_code").map_or("0", String::as_str);
                            *a.codes.entry(code_class(code)).or_default() += value;
                            if let Some(f) = labels.get("response_flags").filter(|f| *f != "-" && !f.is_empty()) {
                                *a.flags.entry(f.clone()).or_default() += value;
                            }
                        }
                    }
                    "total" => {
                        a.total += value;
                        if let Some(f) =
                            labels.get("response_flags").filter(|f| *f != "-" && !f.is_empty() && value > 0.0)
                        {
                            a.flags_seen.insert(f.clone());
                        }
                    }
                    "mtls" => {
                        a.mtls |= value > 0.0;
                        let p = |k: &str| labels.get(k).cloned().unwrap_or_else(|| "unknown".into());
                        a.principals.insert((p("source_principal"), p("destination_principal")));
                    }
                    "p99" => a.p99 = finite,
                    "p95" => a.p95 = finite,
                    _ => a.p50 = finite,
                }
            }
        }
        Ok(acc
            .into_iter()
            .filter(|(_, a)| a.total > 0.0)
            .map(|((source, target), a)| Edge {
                source,
                target,
                rps: a.rps,
                error_rate: if a.rps > 0.0 { a.errors / a.rps } else { 0.0 },
                p99_ms: a.p99,
                p50_ms: a.p50,
                p95_ms: a.p95,
                mtls: a.mtls,
                total: a.total,
                codes: a.codes.into_iter().map(|(k, v)| (k, (v * 100.0).round() / 100.0)).collect(),
                flags: a.flags.into_iter().map(|(k, v)| (k, (v * 100.0).round() / 100.0)).collect(),
                principals: a.principals.into_iter().collect(),
                flags_seen: a.flags_seen,
            })
            .collect())
    }

    /// Scrape every proxy once and update the edges (rates against the previous scrape).
    pub async fn scrape(&self, interval: Duration) {
        if let GraphSource::Prometheus(addr) = *self.source {
            match self.edges_from_prometheus(addr, PROMETHEUS_WINDOW).await {
                Ok(edges) => self.record(edges, None),
                Err(e) => tracing::warn!("graph from Prometheus: {e}"),
            }
            return;
        }
        let mut now: BTreeMap<(String, String), Totals> = BTreeMap::new();
        let headers = http::HeaderMap::new();
        for (_, admin) in self.proxies.iter() {
            let upstream = Upstreams { direct: [("admin".to_string(), vec![*admin])].into(), ..Upstreams::default() };
            if let Outcome::Answered(StatusCode::OK, body) =
                upstream.get("admin", admin.port(), "/stats/prometheus", &headers, Duration::from_secs(2)).await
            {
                edges_of(&String::from_utf8_lossy(&body), &mut now);
            }
        }
        let secs = interval.as_secs_f64().max(0.001);
        let state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let edges = edges_between(&now, &state.last, secs);
        drop(state);
        self.record(edges, Some(now));
    }

    /// Put a new set of edges in force, and each workload's inbound point of its series.
    fn record(&self, edges: Vec<Edge>, totals: Option<BTreeMap<(String, String), Totals>>) {
        let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Per workload: what came in.
        let mut inbound: BTreeMap<String, (f64, f64, Option<f64>)> = BTreeMap::new();
        for e in &edges {
            let w = inbound.entry(e.target.clone()).or_default();
            w.1 = (w.1 * w.0 + e.error_rate * e.rps) / (w.0 + e.rps).max(f64::MIN_POSITIVE);
            w.0 += e.rps;
            w.2 = match (w.2, e.p99_ms) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
        }
        for (workload, _) in self.proxies.iter() {
            let point = inbound.get(workload).copied().unwrap_or_default();
            let series = state.series.entry(workload.clone()).or_default();
            series.push_back((stamp, point.0, point.1, point.2));
            while series.len() > HISTORY {
                series.pop_front();
            }
        }
        if let Some(now) = totals {
            let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
            state.history.push_back((t, now.clone()));
            while state.history.front().is_some_and(|(old, _)| t - old > MAX_RANGE.as_secs_f64() + 10.0) {
                state.history.pop_front();
            }
            state.last = now;
        }
        state.edges = edges;
    }

    /// Scrape forever, every `INTERVAL`.
    pub async fn run(self) {
        loop {
            self.scrape(INTERVAL).await;
            tokio::time::sleep(INTERVAL).await;
        }
    }

    /// The current graph (rates over the last scrape interval).
    pub fn graph(&self) -> Value {
        let edges = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).edges.clone();
        self.graph_of(&edges, None)
    }

    /// The graph over the last `range` (Kiali's time range): from the proxies, the totals
    /// now against the scrape closest to `range` ago (the oldest kept, if none is that old);
    /// from Prometheus, its queries with `range` as the rate window.
    pub async fn graph_over(&self, range: Duration) -> Result<Value, String> {
        let range = range.min(MAX_RANGE);
        let edges = match *self.source {
            GraphSource::Prometheus(addr) => {
                self.edges_from_prometheus(addr, &format!("{}s", range.as_secs().max(1))).await?
            }
            GraphSource::Proxies => {
                let state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                match state.history.back() {
                    None => Vec::new(),
                    Some((t_now, now)) => {
                        let since = t_now - range.as_secs_f64();
                        let (t_then, then) = state
                            .history
                            .iter()
                            .rev()
                            .find(|(t, _)| *t <= since)
                            .or_else(|| state.history.front())
                            .expect("history is not empty");
                        edges_between(now, then, (t_now - t_then).max(0.001))
                    }
                }
            }
        };
        Ok(self.graph_of(&edges, Some(range)))
    }

    fn graph_of(&self, edges: &[Edge], range: Option<Duration>) -> Value {
        let state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut nodes: BTreeMap<String, Value> = BTreeMap::new();
        let mut node = |name: &str| {
            let (app, version) = match name.rsplit_once("-v") {
                Some((app, v)) if v.chars().all(|c| c.is_ascii_digit()) => (app.to_string(), format!("v{v}")),
                _ => (name.to_string(), String::new()),
            };
            nodes.entry(name.to_string()).or_insert_with(|| json!({"id": name, "app": app, "version": version}));
        };
        for (w, _) in self.proxies.iter() {
            node(w);
        }
        drop(state);
        for e in edges {
            node(&e.source);
            node(&e.target);
        }
        if let Some(n) = nodes.get_mut("unknown") {
            n["explain"] = json!(explain_unknown(edges));
        }
        let edges: Vec<Value> = edges
            .iter()
            .map(|e| {
                json!({
                    "source": e.source, "target": e.target,
                    "rps": (e.rps * 100.0).round() / 100.0,
                    "error_rate": (e.error_rate * 1000.0).round() / 1000.0,
                    "p99_ms": e.p99_ms,
                    "p95_ms": e.p95_ms,
                    "p50_ms": e.p50_ms,
                    "mtls": e.mtls,
                    "total": e.total,
                    "codes": e.codes,
                    "flags": e.flags,
                    "principals": e.principals.iter().map(|(s, d)| json!({"source": s, "destination": d})).collect::<Vec<_>>(),
                })
            })
            .collect();
        let source = match &*self.source {
            GraphSource::Proxies => json!({"kind": "proxies"}),
            GraphSource::Prometheus(addr) => {
                json!({"kind": "prometheus", "url": format!("http://{addr}/"), "window": PROMETHEUS_WINDOW})
            }
        };
        json!({
            "nodes": nodes.into_values().collect::<Vec<_>>(),
            "edges": edges,
            "interval_s": INTERVAL.as_secs(),
            "range_s": range.map(|r| r.as_secs()),
            "source": source,
        })
    }

    /// The spans received so far.
    pub fn traces(&self) -> &TraceStore {
        &self.traces
    }

    /// Answer one request: the page and its API, and the OTLP receiver.
    pub async fn serve<B>(&self, req: http::Request<B>) -> Response
    where
        B: http_body::Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if req.uri().path() == "/api/config" && req.method() == Method::GET {
            return json(StatusCode::OK, &self.config_view().await);
        }
        if req.uri().path() == "/api/graph"
            && let Some(range) = mesh_core::request::first_query_value(req.uri().query(), "range")
        {
            let range = match range.parse::<mesh_core::duration::Duration>() {
                Ok(r) => r.get(),
                Err(e) => return json(StatusCode::BAD_REQUEST, &json!({"error": format!("range `{range}`: {e}")})),
            };
            return match self.graph_over(range).await {
                Ok(g) => json(StatusCode::OK, &g),
                Err(e) => json(StatusCode::BAD_GATEWAY, &json!({"error": e})),
            };
        }
        if req.uri().path() != "/v1/traces" {
            return self.handle(req.method(), req.uri().path(), req.uri().query());
        }
        if req.method() != Method::POST {
            return respond(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "POST OTLP spans here\n");
        }
        let content_type = req.headers().get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        if !content_type.starts_with("application/x-protobuf") {
            return respond(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "text/plain",
                format!("`{content_type}`: this collector takes OTLP/HTTP as application/x-protobuf\n"),
            );
        }
        use http_body_util::BodyExt;
        let body = match http_body_util::Limited::new(req.into_body(), MAX_EXPORT).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return respond(StatusCode::PAYLOAD_TOO_LARGE, "text/plain", format!("{e}\n")),
        };
        match mesh_telemetry::otlp::decode_request(&body) {
            Ok(spans) => {
                self.traces.add(spans);
                // An empty ExportTraceServiceResponse: everything was accepted.
                respond(StatusCode::OK, "application/x-protobuf", bytes::Bytes::new())
            }
            Err(e) => respond(StatusCode::BAD_REQUEST, "text/plain", format!("{e}\n")),
        }
    }

    /// Answer one request of the page or its API.
    pub fn handle(&self, method: &Method, path: &str, query: Option<&str>) -> Response {
        if method != Method::GET {
            return not_found();
        }
        match path {
            "/" | "/index.html" => respond(StatusCode::OK, "text/html; charset=utf-8", PAGE),
            "/api/graph" => json(StatusCode::OK, &self.graph()),
            "/api/services" => json(StatusCode::OK, &self.traces.services()),
            "/api/traces" => match Query::parse(query) {
                Ok(q) => json(StatusCode::OK, &self.traces.search(&q)),
                Err(e) => json(StatusCode::BAD_REQUEST, &json!({ "error": e })),
            },
            p if p.starts_with("/api/traces/") => match self.traces.trace(&p["/api/traces/".len()..]) {
                Some(t) => json(StatusCode::OK, &t),
                None => not_found(),
            },
            p => match p.strip_prefix("/api/workload/") {
                Some(w) => {
                    let state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    match state.series.get(w) {
                        Some(s) => json(
                            StatusCode::OK,
                            &json!({"workload": w, "points": s.iter().map(|(t, rps, err, p99)| json!({"t": t, "rps": rps, "error_rate": err, "p99_ms": p99})).collect::<Vec<_>>()}),
                        ),
                        None => not_found(),
                    }
                }
                None => not_found(),
            },
        }
    }
}

type Response = http::Response<Body>;

/// The page: an SVG graph laid out in columns by call depth from the gateway, redrawn
/// from `/api/graph` every interval, an edge table, and a workload's charts on click.
const PAGE: &str = include_str!("dashboard.html");

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"istio_requests_total{reporter="source",source_workload="productpage-v1",destination_workload="reviews-v2",response_code="200",connection_security_policy="unknown"} 10
istio_requests_total{reporter="source",source_workload="productpage-v1",destination_workload="reviews-v2",response_code="503",connection_security_policy="unknown"} 2
istio_requests_total{reporter="destination",source_workload="productpage-v1",destination_workload="reviews-v2",response_code="200",connection_security_policy="mutual_tls"} 10
istio_request_duration_milliseconds_bucket{reporter="source",source_workload="productpage-v1",destination_workload="reviews-v2",le="5"} 6
istio_request_duration_milliseconds_bucket{reporter="source",source_workload="productpage-v1",destination_workload="reviews-v2",le="10"} 11
istio_request_duration_milliseconds_bucket{reporter="source",source_workload="productpage-v1",destination_workload="reviews-v2",le="25"} 12
istio_request_duration_milliseconds_bucket{reporter="source",source_workload="productpage-v1",destination_workload="reviews-v2",le="+Inf"} 12
"#;

    #[test]
    fn edges_rates_errors_p99_and_mtls_from_the_exposition() {
        let mut totals = BTreeMap::new();
        edges_of(TEXT, &mut totals);
        let t = &totals[&("productpage-v1".to_string(), "reviews-v2".to_string())];
        assert_eq!((t.requests, t.errors, t.mtls), (12.0, 2.0, true));
        // Cumulative counts as Prometheus gives them: le=5 holds 6, le=10 11, le=25 and up 12.
        let mut cumulative = vec![12.0; BUCKETS.len() + 1];
        cumulative[..2].fill(0.0);
        cumulative[2] = 6.0;
        cumulative[3] = 11.0;
        assert_eq!(p99(&cumulative), Some(25.0));
        assert_eq!(p99(&[0.0; 20]), None);
        assert_eq!(t.codes, BTreeMap::from([("2xx".to_string(), 10.0), ("5xx".to_string(), 2.0)]));
    }

    /// The OTLP receiver takes only what it can bound: protobuf, up to 8 MiB, well formed.
    #[tokio::test]
    async fn the_span_receiver_refuses_hostile_bodies() {
        use mesh_telemetry::otlp::{SpanRecord, encode_request};
        let d = Dashboard::new(Vec::new());
        let post = |ct: &str, body: Vec<u8>| {
            http::Request::post("/v1/traces")
                .header(http::header::CONTENT_TYPE, ct)
                .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                .unwrap()
        };
        let status = |r: Response| r.status().as_u16();
        assert_eq!(status(d.serve(post("application/json", b"{}".to_vec())).await), 415);
        assert_eq!(status(d.serve(post("application/x-protobuf", vec![0x0a; MAX_EXPORT + 1])).await), 413);
        assert_eq!(status(d.serve(post("application/x-protobuf", vec![0x0a, 0xff, 0xff, 0xff, 0x0f])).await), 400);
        let get = http::Request::get("/v1/traces").body(http_body_util::Full::new(bytes::Bytes::new())).unwrap();
        assert_eq!(status(d.serve(get).await), 405);
        assert_eq!(d.traces().len(), (0, 0), "nothing kept from the refused bodies");
        let t = std::time::SystemTime::now();
        let span = SpanRecord {
            trace_id: 9,
            span_id: 1,
            parent_span_id: None,
            name: "reviews:9080/reviews/0".into(),
            server: true,
            start: t,
            end: t,
            attributes: Vec::new(),
            error: false,
        };
        assert_eq!(
            status(d.serve(post("application/x-protobuf", encode_request("reviews.default", &[span]))).await),
            200
        );
        assert_eq!(d.traces().len(), (1, 1));
    }

    #[test]
    fn flags_principals_and_unknown_nodes_explained() {
        let text = r#"istio_requests_total{reporter="source",source_workload="productpage-v1",destination_workload="unknown",response_code="404",response_flags="NR",connection_security_policy="unknown"} 3
istio_requests_total{reporter="destination",source_workload="unknown",source_principal="unknown",destination_principal="spiffe://cluster.local/ns/default/sa/bookinfo-ratings",destination_workload="ratings-v1",response_code="200",response_flags="-",connection_security_policy="none"} 4
istio_requests_total{reporter="destination",source_workload="reviews-v2",source_principal="spiffe://cluster.local/ns/default/sa/bookinfo-reviews",destination_principal="spiffe://cluster.local/ns/default/sa/bookinfo-ratings",destination_workload="ratings-v1",response_code="200",response_flags="-",connection_security_policy="mutual_tls"} 9
"#;
        let mut totals = BTreeMap::new();
        edges_of(text, &mut totals);
        let nr = &totals[&("productpage-v1".to_string(), "unknown".to_string())];
        assert_eq!((nr.flags.get("NR"), nr.codes.get("4xx")), (Some(&3.0), Some(&3.0)));
        let plain = &totals[&("unknown".to_string(), "ratings-v1".to_string())];
        assert_eq!((plain.requests, plain.destination_only, plain.mtls), (4.0, true, false));
        let mtls = &totals[&("reviews-v2".to_string(), "ratings-v1".to_string())];
        assert_eq!(mtls.requests, 0.0, "the caller's own proxy counts it, not the callee's");
        assert!(mtls.principals.contains(&(
            "spiffe://cluster.local/ns/default/sa/bookinfo-reviews".to_string(),
            "spiffe://cluster.local/ns/default/sa/bookinfo-ratings".to_string()
        )));
        let edge = |source: &str, target: &str, flags: &[&str]| Edge {
            source: source.into(),
            target: target.into(),
            rps: 1.0,
            error_rate: 0.0,
            p99_ms: None,
            p50_ms: None,
            p95_ms: None,
            mtls: false,
            total: 1.0,
            codes: BTreeMap::new(),
            flags: BTreeMap::new(),
            principals: Vec::new(),
            flags_seen: flags.iter().map(|f| f.to_string()).collect(),
        };
        let why =
            explain_unknown(&[edge("productpage-v1", "unknown", &["NR"]), edge("unknown", "ratings-v1", &[])]).unwrap();
        assert!(why.contains("no route") && why.contains("without a mesh identity"), "{why}");
        assert_eq!(explain_unknown(&[edge("a", "b", &[])]), None);
        assert_eq!((code_class("503"), code_class("0")), ("5xx".to_string(), "0".to_string()));
    }
}
