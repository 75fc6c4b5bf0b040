//! A routing decision explained as data: what `meshctl route` prints.

use serde::Serialize;

use super::{
    RouteOutcome, RouteTable,
    action::{Action, RouteRule},
    matching::RequestInfo,
};
use mesh_fault::AbortKind;

/// The decision for one request.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Explanation {
    /// `namespace/name`, or `null` when no VirtualService applies.
    pub virtual_service: Option<String>,
    /// `namespace/name` of the Gateway API HTTPRoute or GRPCRoute that decided, `null` for a
    /// VirtualService decision (or no route).
    pub http_route: Option<String>,
    /// Index of the matched HTTPRoute (VirtualService `http` entry, or Gateway API rule).
    pub route_index: Option<usize>,
    /// Its name.
    pub route_name: Option<String>,
    /// `route`, `redirect`, `direct_response` or `no_route`.
    pub action: &'static str,
    /// Status the proxy answers itself with (404 for no route, the redirect or direct
    /// response status), `null` when the request is forwarded.
    pub status: Option<u16>,
    /// Where the request may go, with each destination's share.
    pub destinations: Vec<ExplainedDestination>,
    /// Route timeout.
    pub timeout_ms: Option<u64>,
    /// Retry policy (`null` when retries are disabled or nothing is forwarded).
    pub retries: Option<ExplainedRetries>,
    /// Fault injection.
    pub fault: Option<ExplainedFault>,
}

/// A destination and its share.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ExplainedDestination {
    /// FQDN.
    pub host: String,
    /// Subset.
    pub subset: Option<String>,
    /// Port.
    pub port: Option<u16>,
    /// Effective share (destinations sum to 100).
    pub percent: f64,
}

/// Retries.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ExplainedRetries {
    /// Retries after the first try.
    pub attempts: u32,
    /// Per-try timeout.
    pub per_try_timeout_ms: Option<u64>,
    /// Conditions.
    pub retry_on: Vec<String>,
}

/// Fault injection.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ExplainedFault {
    /// Delay.
    pub delay: Option<ExplainedDelay>,
    /// Abort.
    pub abort: Option<ExplainedAbort>,
}

/// Delay.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ExplainedDelay {
    /// Milliseconds.
    pub ms: u64,
    /// Share of requests.
    pub percent: f64,
}

/// Abort.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ExplainedAbort {
    /// HTTP status.
    pub http_status: Option<u16>,
    /// gRPC status name.
    pub grpc_status: Option<String>,
    /// Share of requests.
    pub percent: f64,
}

fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Explanation {
    /// Route `req` through `table` and explain the result.
    pub fn of(table: &RouteTable, req: &RequestInfo<'_>, listener_port: Option<u16>) -> Self {
        match table.route(req, listener_port) {
            RouteOutcome::NoVirtualHost => Self::no_route(None),
            RouteOutcome::NoRoute(vhost) => Self::no_route(vhost.virtual_service.as_deref().map(str::to_string)),
            RouteOutcome::Matched(_, route, _) => Self::route(route),
        }
    }

    fn no_route(virtual_service: Option<String>) -> Self {
        Self {
            virtual_service,
            http_route: None,
            route_index: None,
            route_name: None,
            action: "no_route",
            status: Some(404),
            destinations: Vec::new(),
            timeout_ms: None,
            retries: None,
            fault: None,
        }
    }

    fn route(route: &RouteRule) -> Self {
        let (action, status, destinations) = match &route.action {
            Action::Forward(targets) if targets.targets.is_empty() && targets.answers_500() => {
                ("direct_response", Some(500), Vec::new())
            }
            Action::Forward(targets) => {
                let dests = targets
                    .percents()
                    .map(|(t, percent)| {
                        let (host, subset, port) = t.target.parts();
                        ExplainedDestination {
                            host: host.to_string(),
                            subset: subset.map(str::to_string),
                            port,
                            percent,
                        }
                    })
                    .collect();
                ("route", None, dests)
            }
            Action::Redirect(r) => ("redirect", Some(r.status.as_u16()), Vec::new()),
            Action::DirectResponse(d) => ("direct_response", Some(d.status.as_u16()), Vec::new()),
        };
        let forwarded = action == "route";
        Self {
            virtual_service: route.virtual_service.as_deref().map(str::to_string),
            http_route: route.http_route.as_deref().map(str::to_string),
            route_index: route.index,
            route_name: route.name.as_deref().map(str::to_string),
            action,
            status,
            destinations,
            timeout_ms: route.timeout.map(ms).filter(|_| forwarded),
            retries: route.retry.as_ref().filter(|_| forwarded).map(|r| ExplainedRetries {
                attempts: r.attempts,
                per_try_timeout_ms: r.per_try_timeout.map(ms),
                retry_on: r.retry_on.names.clone(),
            }),
            fault: route.fault.as_ref().map(|f| ExplainedFault {
                delay: f.delay.map(|d| ExplainedDelay { ms: ms(d.fixed), percent: d.percent.get() }),
                abort: f.abort.map(|a| {
                    let (http_status, grpc_status) = match a.kind {
                        AbortKind::Http(s) => (Some(s.as_u16()), None),
                        AbortKind::Grpc(c) => (None, Some(c.name().to_string())),
                    };
                    ExplainedAbort { http_status, grpc_status, percent: a.percent.get() }
                }),
            }),
        }
    }
}
