//! The admin endpoint, shaped like Envoy's: `/ready`, `/server_info`, `/stats/prometheus`,
//! `/config_dump`, `/clusters` and `/logging`.

use std::{
    convert::Infallible,
    fmt::Write as _,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use mesh_config::SourceStatus;
use mesh_core::{BoxBody, body::full};
use mesh_route::{
    layer::BalanceLayer,
    policy::{
        action::{Action, Target},
        cluster::Cluster,
    },
};
use mesh_telemetry::metrics::MeshMetrics;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::{BoxError, compiled::CompiledConfig};

/// Puts a log filter in force, or says why it is invalid.
type SetFilter = Box<dyn Fn(&str) -> Result<(), BoxError> + Send + Sync>;

/// Changes the log filter at run time (the admin endpoint's `POST /logging?level=...`).
pub struct LogControl {
    current: Mutex<String>,
    set: SetFilter,
}

impl std::fmt::Debug for LogControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogControl").field("current", &self.current()).finish_non_exhaustive()
    }
}

impl LogControl {
    /// The filter in force is `initial`; `set` puts a new one in force or says why not.
    pub fn new(initial: &str, set: impl Fn(&str) -> Result<(), BoxError> + Send + Sync + 'static) -> Self {
        Self { current: Mutex::new(initial.into()), set: Box::new(set) }
    }

    fn current(&self) -> String {
        self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn set(&self, filter: &str) -> Result<(), BoxError> {
        (self.set)(filter)?;
        *self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = filter.into();
        Ok(())
    }
}

/// What a proxy is, as `istioctl proxy-status` tells them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// Beside an app (outbound and/or inbound).
    Sidecar,
    /// Serving a Gateway resource.
    Gateway,
    /// Linked into the app (`mesh_proxy::embed`).
    Embedded,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Self::Sidecar => "sidecar",
            Self::Gateway => "gateway",
            Self::Embedded => "embedded",
        }
    }
}

/// What the admin pages read.
#[derive(Debug)]
pub(crate) struct Admin {
    pub(crate) role: Role,
    pub(crate) control: Arc<CompiledConfig>,
    pub(crate) metrics: Arc<MeshMetrics>,
    pub(crate) balance: BalanceLayer,
    pub(crate) status: watch::Receiver<SourceStatus>,
    pub(crate) log: LogControl,
    /// False once draining: `/ready` answers 503 so load balancers stop sending.
    pub(crate) ready: AtomicBool,
}

/// The admin pages as a service over any request body (bodies are not read): Envoy's
/// `/ready`, `/stats/prometheus`, `/config_dump`, `/clusters`, `/logging`.
#[derive(Clone, Debug)]
pub struct AdminService(Arc<Admin>);

pub(crate) fn service(admin: Arc<Admin>) -> AdminService {
    AdminService(admin)
}

impl<B> tower::Service<Request<B>> for AdminService
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: std::fmt::Display,
{
    type Response = Response<BoxBody>;
    type Error = Infallible;
    // The admin path, not the request path: one box per page is fine.
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response<BoxBody>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let admin = self.0.clone();
        Box::pin(async move { Ok(admin.handle(req).await) })
    }
}

fn text(status: StatusCode, body: impl Into<bytes::Bytes>) -> Response<BoxBody> {
    let mut rsp = Response::new(full(body));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    rsp
}

fn json_response(v: &Value) -> Response<BoxBody> {
    let mut rsp = Response::new(full(serde_json::to_vec_pretty(v).unwrap_or_default()));
    rsp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    rsp
}

/// A query parameter's value, percent-decoded (mesh-route's reading, as routes match it).
fn param(query: Option<&str>, name: &str) -> Option<String> {
    mesh_core::request::first_query_value(query, name).map(std::borrow::Cow::into_owned)
}

impl Admin {
    async fn handle<B>(&self, req: Request<B>) -> Response<BoxBody>
    where
        B: http_body::Body,
        B::Error: std::fmt::Display,
    {
        let (method, uri) = (req.method().clone(), req.uri().clone());
        let (path, query) = (uri.path(), uri.query());
        match (&method, path) {
            (&Method::GET, "/ready") => {
                if self.ready.load(Ordering::Relaxed) {
                    text(StatusCode::OK, "LIVE\n")
                } else {
                    text(StatusCode::SERVICE_UNAVAILABLE, "DRAINING\n")
                }
            }
            (&Method::GET, "/stats/prometheus") => {
                let mut rsp = Response::new(full(self.metrics.encode()));
                rsp.headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
                rsp
            }
            (&Method::GET, "/server_info") => json_response(&self.server_info()),
            (&Method::GET, "/config_dump") => json_response(&self.config_dump()),
            (&Method::GET, "/clusters") => {
                if param(query, "format").as_deref() == Some("json") {
                    json_response(&self.clusters_json())
                } else {
                    text(StatusCode::OK, self.clusters_text())
                }
            }
            (&Method::GET, "/logging") => text(StatusCode::OK, format!("active filter: {}\n", self.log.current())),
            (&Method::POST, "/logging") => {
                // `?level=debug` as Envoy takes it; any tracing filter works
                // (`mesh_route=debug,info`), in the query or as the body.
                let filter = match param(query, "level") {
                    Some(l) => l,
                    None => match req.into_body().collect().await {
                        Ok(b) => String::from_utf8_lossy(&b.to_bytes()).trim().to_string(),
                        Err(e) => return text(StatusCode::BAD_REQUEST, format!("reading the body: {e}\n")),
                    },
                };
                if filter.is_empty() {
                    return text(StatusCode::BAD_REQUEST, "usage: POST /logging?level=<filter>\n");
                }
                match self.log.set(&filter) {
                    Ok(()) => text(StatusCode::OK, format!("active filter: {filter}\n")),
                    Err(e) => text(StatusCode::BAD_REQUEST, format!("invalid filter `{filter}`: {e}\n")),
                }
            }
            (_, "/ready" | "/server_info" | "/stats/prometheus" | "/config_dump" | "/clusters" | "/logging") => {
                text(StatusCode::METHOD_NOT_ALLOWED, format!("{method} is not allowed on {path}\n"))
            }
            _ => text(
                StatusCode::NOT_FOUND,
                "admin pages: /ready /server_info /stats/prometheus /config_dump /clusters /logging\n",
            ),
        }
    }

    /// The config in force and how it got there: what `meshctl proxy-status` reads.
    fn config_status(&self) -> Value {
        let status = self.status.borrow().clone();
        json!({
            "generation": status.generation,
            "version": self.control.snapshot.load().version(),
            "loaded_at": status.loaded_at.map(mesh_telemetry::access_log::rfc3339),
            "loads": status.loads,
            "errors": status.errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "warnings": status.warnings.iter().map(ToString::to_string).collect::<Vec<_>>(),
        })
    }

    /// Who this proxy is and the config in force (Envoy's `/server_info`, with the
    /// workload in place of the node).
    fn server_info(&self) -> Value {
        let me = &self.control.me;
        json!({
            "name": me.workload,
            "namespace": me.namespace,
            "type": self.role.as_str(),
            "state": if self.ready.load(Ordering::Relaxed) { "LIVE" } else { "DRAINING" },
            "identity": me.identity.to_string(),
            "version": env!("CARGO_PKG_VERSION"),
            "config": self.config_status(),
        })
    }

    /// The active snapshot (every resource as loaded), its load status, this workload and
    /// the compiled route table.
    fn config_dump(&self) -> Value {
        let me = &self.control.me;
        let snapshot = self.control.snapshot.load();
        let resources: Vec<Value> = snapshot
            .iter()
            .map(|(key, r)| {
                json!({
                    "kind": format!("{:?}", key.kind),
                    "namespace": key.namespace,
                    "name": key.name,
                    "resource": serde_json::to_value(&**r).unwrap_or(Value::Null),
                })
            })
            .collect();
        let table = self.control.table.load();
        let virtual_hosts: Vec<Value> = table
            .virtual_hosts()
            .iter()
            .map(|v| {
                let routes: Vec<Value> = v
                    .routes
                    .iter()
                    .map(|r| {
                        let (action, destinations) = match &r.action {
                            Action::Forward(t) => (
                                "route",
                                t.targets
                                    .iter()
                                    .map(|t| json!({"cluster": target_name(&t.target), "weight": t.weight}))
                                    // A Gateway API rule's invalid backends: their share answers 500.
                                    .chain((t.refused_weight() > 0).then(|| json!({"refused_500": t.refused_weight()})))
                                    .collect(),
                            ),
                            Action::Redirect(_) => ("redirect", Vec::new()),
                            Action::DirectResponse(_) => ("direct_response", Vec::new()),
                        };
                        json!({
                            "virtual_service": r.virtual_service.as_deref(),
                            "http_route": r.http_route.as_deref(),
                            "index": r.index,
                            "name": r.name.as_deref(),
                            "match_blocks": r.matches.len(),
                            "action": action,
                            "destinations": destinations,
                            "timeout_ms": r.timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
                            "retries": r.retry.is_some(),
                            "fault": r.fault.is_some(),
                            "mirrors": r.mirrors.len(),
                        })
                    })
                    .collect();
                json!({
                    "name": &*v.name,
                    "port": v.port,
                    "virtual_service": v.virtual_service.as_deref(),
                    "routes": routes,
                })
            })
            .collect();
        json!({
            "workload": {
                "namespace": me.namespace,
                "name": me.workload,
                "labels": me.labels,
                "service_account": me.service_account,
                "identity": me.identity.to_string(),
            },
            "config": self.config_status(),
            "resources": resources,
            "route_table": {
                "virtual_hosts": virtual_hosts,
                "warnings": table.warnings.iter().map(ToString::to_string).collect::<Vec<_>>(),
            },
        })
    }

    fn clusters(&self) -> Vec<(Arc<Cluster>, Vec<std::net::SocketAddr>)> {
        let table = self.control.table.load();
        let mut clusters = table.clusters();
        clusters.sort_by(|a, b| a.name.cmp(&b.name));
        clusters
            .into_iter()
            .map(|c| {
                let ejected = self.balance.ejected(&c.name);
                (c, ejected)
            })
            .collect()
    }

    /// Envoy's `/clusters` text: `cluster::address::field::value` lines.
    fn clusters_text(&self) -> String {
        let mut out = String::new();
        for (c, ejected) in self.clusters() {
            for e in c.endpoints.iter() {
                let health = if ejected.contains(&e.address) { "/failed_outlier_check" } else { "healthy" };
                let _ = writeln!(out, "{}::{}::health_flags::{health}", c.name, e.address);
                let _ = writeln!(out, "{}::{}::weight::{}", c.name, e.address, e.weight);
                let _ = writeln!(out, "{}::{}::workload::{}/{}", c.name, e.address, e.namespace, e.workload);
            }
        }
        out
    }

    fn clusters_json(&self) -> Value {
        let clusters: Vec<Value> = self
            .clusters()
            .into_iter()
            .map(|(c, ejected)| {
                let endpoints: Vec<Value> = c
                    .endpoints
                    .iter()
                    .map(|e| {
                        json!({
                            "address": e.address.to_string(),
                            "workload": &*e.workload,
                            "namespace": &*e.namespace,
                            "weight": e.weight,
                            "healthy": !ejected.contains(&e.address),
                            "ejected": ejected.contains(&e.address),
                        })
                    })
                    .collect();
                json!({
                    "name": &*c.name,
                    "service": &*c.service,
                    "subset": c.subset.as_deref(),
                    "port": c.port,
                    "endpoints": endpoints,
                })
            })
            .collect();
        json!({ "clusters": clusters })
    }
}

fn target_name(t: &Target) -> &str {
    match t {
        Target::Cluster(c) => &c.name,
        Target::Missing { name, .. } => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_and_percent_decoding() {
        assert_eq!(param(Some("a=1&level=debug"), "level").as_deref(), Some("debug"));
        // A bare `?level` is empty, which the handler answers with its usage.
        assert_eq!(param(Some("level"), "level").as_deref(), Some(""));
        assert_eq!(param(Some("level=mesh_route%3Ddebug%2Cinfo"), "level").as_deref(), Some("mesh_route=debug,info"));
        assert_eq!(param(Some("level=100%"), "level").as_deref(), Some("100%"));
        assert_eq!(param(Some("level=%zz"), "level").as_deref(), Some("%zz"));
    }
}
