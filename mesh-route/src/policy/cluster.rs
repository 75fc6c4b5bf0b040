//! Clusters: a destination (service, subset, port) resolved to endpoints and the
//! DestinationRule's traffic policy for that port and subset.

use std::{sync::Arc, time::Duration};

use http::HeaderName;
use mesh_config::api::{
    ClientTlsMode, ClientTlsSettings, ConnectionPoolSettings, LoadBalancerSettings, OutlierDetection,
    PortTrafficPolicy, RetryBudget, SimpleLb, TrafficPolicy,
};
use mesh_core::endpoint::Endpoint;

/// An upstream cluster, named as Envoy names it: `outbound|PORT|SUBSET|HOST`.
#[derive(Clone, Debug, PartialEq)]
pub struct Cluster {
    /// `outbound|9080|v1|reviews.default.svc.cluster.local`.
    pub name: Arc<str>,
    /// The service FQDN.
    pub service: Arc<str>,
    /// The subset, if any.
    pub subset: Option<Arc<str>>,
    /// The service port.
    pub port: u16,
    /// Endpoints (the subset's, when there is one).
    pub endpoints: Arc<[Endpoint]>,
    /// Load balancing.
    pub lb: LbPolicy,
    /// Circuit-breaking limits.
    pub pool: PoolLimits,
    /// Passive health checking; `None` when the DestinationRule has no outlierDetection.
    pub outlier: Option<OutlierPolicy>,
    /// Upstream TLS settings from the DestinationRule (`None`: auto mTLS).
    pub tls: Option<ClientTlsSettings>,
    /// Outside the mesh: no sidecar on the other side.
    pub mesh_external: bool,
}

impl Cluster {
    /// A cluster of plain addresses, for a balancer used alone (no registry, no
    /// DestinationRule): `name` in errors and telemetry, balanced by `lb`, no pool limits,
    /// no outlier detection, plaintext (the endpoints have no mesh identity).
    pub fn from_addresses(name: &str, addrs: impl IntoIterator<Item = std::net::SocketAddr>, lb: LbPolicy) -> Self {
        let unknown: Arc<str> = Arc::from("unknown");
        let endpoints: Vec<Endpoint> = addrs
            .into_iter()
            .map(|address| Endpoint {
                address,
                labels: Arc::default(),
                workload: unknown.clone(),
                namespace: unknown.clone(),
                identity: None,
                weight: 1,
            })
            .collect();
        Self {
            name: name.into(),
            service: name.into(),
            subset: None,
            port: endpoints.first().map_or(0, |e| e.address.port()),
            endpoints: endpoints.into(),
            lb,
            pool: PoolLimits::default(),
            outlier: None,
            tls: None,
            mesh_external: true,
        }
    }

    /// With outlier detection (Envoy's ejection of failing endpoints).
    #[must_use]
    pub fn with_outlier(mut self, outlier: OutlierPolicy) -> Self {
        self.outlier = Some(outlier);
        self
    }

    /// Whether a connection to `endpoint` of this cluster uses TLS, for HTTP and TCP alike.
    /// The DestinationRule's `tls.mode` decides when set (`DISABLE`: plaintext; `ISTIO_MUTUAL`,
    /// `SIMPLE`, `MUTUAL`: TLS, refused by the mesh connector rather than sent in plaintext
    /// when it cannot originate it); without one, auto mTLS: TLS to an in-mesh endpoint with
    /// a workload identity, unless it is known to accept only plaintext.
    pub fn uses_tls(&self, endpoint: &Endpoint, auto_mtls: bool, plaintext_only: bool) -> bool {
        match self.tls.as_ref().and_then(|t| t.mode) {
            Some(ClientTlsMode::Disable) => false,
            Some(ClientTlsMode::IstioMutual | ClientTlsMode::Simple | ClientTlsMode::Mutual) => true,
            None => auto_mtls && !self.mesh_external && endpoint.identity.is_some() && !plaintext_only,
        }
    }

    /// Envoy's cluster name.
    pub fn envoy_name(port: u16, subset: Option<&str>, host: &str) -> String {
        format!("outbound|{port}|{}|{host}", subset.unwrap_or(""))
    }
}

/// The load-balancing algorithm.
#[derive(Clone, Debug, PartialEq)]
pub enum LbPolicy {
    /// Power of two random choices on outstanding requests (the default).
    LeastRequest,
    /// Rotate.
    RoundRobin,
    /// Uniform random.
    Random,
    /// Original destination (no balancing).
    Passthrough,
    /// Soft affinity by a request key.
    ConsistentHash(HashPolicy),
}

/// `consistentHash`.
#[derive(Clone, Debug, PartialEq)]
pub struct HashPolicy {
    /// What to hash.
    pub key: HashKey,
    /// Ring size (ring hash) or table size (maglev).
    pub table: HashTable,
}

/// The hash key.
#[derive(Clone, Debug, PartialEq)]
pub enum HashKey {
    /// A request header.
    Header(HeaderName),
    /// A cookie, generated with `ttl` when absent and a ttl is set.
    Cookie {
        /// Cookie name.
        name: String,
        /// Cookie path.
        path: Option<String>,
        /// Lifetime of a generated cookie.
        ttl: Option<Duration>,
    },
    /// The client address.
    SourceIp,
    /// A query parameter.
    QueryParam(String),
}

/// The consistent-hash table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashTable {
    /// Ketama-style ring with at least this many entries (default 1024).
    RingHash(u64),
    /// Maglev with this table size (default 65537).
    Maglev(u64),
}

/// Circuit-breaking limits; `None` is unlimited. Istio treats 0 as unset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolLimits {
    /// TCP connections per endpoint.
    pub max_connections: Option<u32>,
    /// Requests queued waiting for a connection.
    pub max_pending_requests: Option<u32>,
    /// Active requests to the cluster.
    pub max_requests: Option<u32>,
    /// Concurrent retries to the cluster (`maxRetries`; unlimited when unset, as Istio sets
    /// Envoy's `max_retries` to 2^32-1).
    pub max_retries: Option<u32>,
    /// `retryBudget`: concurrent retries as a share of active requests, and a floor; when
    /// set it replaces `max_retries` (Envoy's `retry_budget`).
    pub retry_budget: Option<RetryBudgetLimit>,
    /// Requests per connection (1 disables keep-alive).
    pub max_requests_per_connection: Option<u32>,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Idle connection timeout.
    pub idle_timeout: Duration,
}

/// A validated `retryBudget` (Envoy's defaults where a field is unset: 20 %, 3).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryBudgetLimit {
    /// Share of active requests that may be retries, in percent.
    pub percent: f64,
    /// Retries always allowed.
    pub min_concurrency: u32,
}

// Validated at load: the percentage is a number in 0..=100, never NaN.
impl Eq for RetryBudgetLimit {}

impl RetryBudgetLimit {
    /// Retries allowed at once with `active` requests in flight.
    pub fn allowed(&self, active: usize) -> usize {
        ((active as f64 * self.percent / 100.0) as usize).max(self.min_concurrency as usize)
    }
}

impl Default for PoolLimits {
    fn default() -> Self {
        Self {
            max_connections: None,
            max_pending_requests: None,
            max_requests: None,
            max_retries: None,
            retry_budget: None,
            max_requests_per_connection: None,
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(3600),
        }
    }
}

/// Passive outlier detection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutlierPolicy {
    /// Consecutive 5xx (local failures included unless split) before ejection; `None` off.
    pub consecutive_5xx: Option<u32>,
    /// Consecutive 502/503/504 before ejection; `None` off.
    pub consecutive_gateway_errors: Option<u32>,
    /// Count local-origin failures separately.
    pub split_local_origin: bool,
    /// Local-origin failures before ejection (when split).
    pub consecutive_local_origin: u32,
    /// Scan interval: ejections end on the first scan after their time is up.
    pub interval: Duration,
    /// Ejection time, multiplied by the number of times a host was ejected.
    pub base_ejection_time: Duration,
    /// Envoy's cap on one ejection.
    pub max_ejection_time: Duration,
    /// At most this share of hosts ejected at once (at least one host always can be).
    pub max_ejection_percent: u32,
}

fn positive(v: Option<i32>) -> Option<u32> {
    v.and_then(|v| u32::try_from(v).ok()).filter(|v| *v > 0)
}

/// The four policy blocks after precedence is applied.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResolvedPolicy {
    /// loadBalancer.
    pub load_balancer: Option<LoadBalancerSettings>,
    /// connectionPool.
    pub connection_pool: Option<ConnectionPoolSettings>,
    /// outlierDetection.
    pub outlier_detection: Option<OutlierDetection>,
    /// tls.
    pub tls: Option<ClientTlsSettings>,
    /// retryBudget (a TrafficPolicy's, whatever the port).
    pub retry_budget: Option<RetryBudget>,
}

impl ResolvedPolicy {
    fn from_port_level(p: &PortTrafficPolicy) -> Self {
        Self {
            load_balancer: p.load_balancer.clone(),
            connection_pool: p.connection_pool.clone(),
            outlier_detection: p.outlier_detection.clone(),
            tls: p.tls.clone(),
            retry_budget: None,
        }
    }

    /// One level of ISTIO-SEMANTICS §3.3: port-level settings replace all four blocks
    /// wholesale (unset blocks revert to defaults).
    fn level(tp: &TrafficPolicy, port: u16) -> Self {
        match tp.port_level_settings.iter().find(|p| p.port.is_some_and(|p| p.number == u32::from(port))) {
            Some(p) => Self { retry_budget: tp.retry_budget.clone(), ..Self::from_port_level(p) },
            None => Self {
                load_balancer: tp.load_balancer.clone(),
                connection_pool: tp.connection_pool.clone(),
                outlier_detection: tp.outlier_detection.clone(),
                tls: tp.tls.clone(),
                retry_budget: tp.retry_budget.clone(),
            },
        }
    }

    /// Host policy, then the subset's: each block the subset sets replaces the host's.
    pub fn resolve(host: Option<&TrafficPolicy>, subset: Option<&TrafficPolicy>, port: u16) -> Self {
        let mut p = host.map(|tp| Self::level(tp, port)).unwrap_or_default();
        if let Some(sp) = subset.map(|tp| Self::level(tp, port)) {
            p.load_balancer = sp.load_balancer.or(p.load_balancer);
            p.connection_pool = sp.connection_pool.or(p.connection_pool);
            p.retry_budget = sp.retry_budget.or(p.retry_budget);
            p.outlier_detection = sp.outlier_detection.or(p.outlier_detection);
            p.tls = sp.tls.or(p.tls);
        }
        p
    }

    /// The load-balancing policy.
    pub fn lb(&self) -> LbPolicy {
        let Some(lb) = &self.load_balancer else { return LbPolicy::LeastRequest };
        if let Some(ch) = &lb.consistent_hash {
            let key = if let Some(h) = ch
                .http_header_name
                .as_ref()
                .and_then(|h| HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()).ok())
            {
                HashKey::Header(h)
            } else if let Some(c) = &ch.http_cookie {
                HashKey::Cookie { name: c.name.clone(), path: c.path.clone(), ttl: c.ttl.map(|d| d.get()) }
            } else if ch.use_source_ip == Some(true) {
                HashKey::SourceIp
            } else if let Some(q) = &ch.http_query_parameter_name {
                HashKey::QueryParam(q.clone())
            } else {
                return LbPolicy::LeastRequest;
            };
            let table = match (&ch.maglev, &ch.ring_hash) {
                (Some(m), _) => HashTable::Maglev(m.table_size.unwrap_or(65537)),
                (None, Some(r)) => HashTable::RingHash(r.minimum_ring_size.unwrap_or(1024)),
                (None, None) => HashTable::RingHash(ch.minimum_ring_size.unwrap_or(1024)),
            };
            return LbPolicy::ConsistentHash(HashPolicy { key, table });
        }
        match lb.simple {
            Some(SimpleLb::RoundRobin) => LbPolicy::RoundRobin,
            Some(SimpleLb::Random) => LbPolicy::Random,
            Some(SimpleLb::Passthrough) => LbPolicy::Passthrough,
            Some(SimpleLb::LeastRequest | SimpleLb::LeastConn | SimpleLb::Unspecified) | None => LbPolicy::LeastRequest,
        }
    }

    /// The pool limits.
    pub fn pool(&self) -> PoolLimits {
        let mut limits = PoolLimits {
            retry_budget: self.retry_budget.as_ref().map(|b| RetryBudgetLimit {
                percent: b.percent.as_ref().map_or(20.0, |p| p.value),
                min_concurrency: b.min_retry_concurrency.unwrap_or(3),
            }),
            ..PoolLimits::default()
        };
        if let Some(pool) = &self.connection_pool {
            if let Some(tcp) = &pool.tcp {
                limits.max_connections = positive(tcp.max_connections);
                if let Some(t) = tcp.connect_timeout {
                    limits.connect_timeout = t.get();
                }
                if let Some(t) = tcp.idle_timeout {
                    limits.idle_timeout = t.get();
                }
            }
            if let Some(http) = &pool.http {
                limits.max_pending_requests = positive(http.http1_max_pending_requests);
                limits.max_requests = positive(http.http2_max_requests);
                limits.max_retries = positive(http.max_retries);
                limits.max_requests_per_connection = positive(http.max_requests_per_connection);
                if let Some(t) = http.idle_timeout {
                    limits.idle_timeout = t.get();
                }
            }
        }
        limits
    }

    /// The outlier policy, with Istio's defaults for unset fields.
    pub fn outlier(&self) -> Option<OutlierPolicy> {
        let o = self.outlier_detection.as_ref()?;
        let consecutive_5xx = match (o.consecutive_5xx_errors, o.consecutive_errors) {
            (Some(n), _) => Some(n),
            (None, Some(n)) => u32::try_from(n).ok(),
            (None, None) => Some(5),
        }
        .filter(|n| *n > 0);
        Some(OutlierPolicy {
            consecutive_5xx,
            consecutive_gateway_errors: o.consecutive_gateway_errors.filter(|n| *n > 0),
            split_local_origin: o.split_external_local_origin_errors.unwrap_or(false),
            consecutive_local_origin: o.consecutive_local_origin_failures.unwrap_or(5),
            interval: o.interval.map_or(Duration::from_secs(10), |d| d.get()),
            base_ejection_time: o.base_ejection_time.map_or(Duration::from_secs(30), |d| d.get()),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: o.max_ejection_percent.and_then(|p| u32::try_from(p).ok()).unwrap_or(10),
        })
    }
}

#[cfg(test)]
mod retry_budget_tests {
    use super::*;

    #[test]
    fn retry_budget_defaults_and_floor() {
        let b = RetryBudgetLimit { percent: 20.0, min_concurrency: 3 };
        assert_eq!(b.allowed(0), 3);
        assert_eq!(b.allowed(100), 20);
        let tp: TrafficPolicy =
            serde_json::from_str(r#"{"retryBudget": {}, "connectionPool": {"http": {"maxRetries": 7}}}"#).unwrap();
        let pool = ResolvedPolicy::resolve(Some(&tp), None, 9080).pool();
        assert_eq!(pool.retry_budget, Some(RetryBudgetLimit { percent: 20.0, min_concurrency: 3 }));
        assert_eq!(pool.max_retries, Some(7));
        assert_eq!(ResolvedPolicy::resolve(None, None, 9080).pool().max_retries, None);
    }
}

#[cfg(test)]
mod tls_tests {
    use super::*;

    #[test]
    fn one_tls_rule_for_every_protocol() {
        let tp = |mode: &str| -> TrafficPolicy {
            serde_json::from_str(&format!(r#"{{"tls": {{"mode": "{mode}"}}}}"#)).unwrap()
        };
        let cluster = |tls: Option<TrafficPolicy>, external: bool| Cluster {
            name: "c".into(),
            service: "s".into(),
            subset: None,
            port: 80,
            endpoints: Arc::from(Vec::new()),
            lb: LbPolicy::LeastRequest,
            pool: PoolLimits::default(),
            outlier: None,
            tls: tls.and_then(|t| t.tls),
            mesh_external: external,
        };
        let ep = |sa: Option<&str>| Endpoint {
            address: "127.0.0.1:1".parse().unwrap(),
            labels: Default::default(),
            workload: "w".into(),
            namespace: "default".into(),
            identity: sa.map(mesh_core::test_util::identity),
            weight: 1,
        };
        let meshed = ep(Some("sa"));
        let bare = ep(None);
        // No DestinationRule tls: auto mTLS to in-mesh endpoints with an identity.
        assert!(cluster(None, false).uses_tls(&meshed, true, false));
        assert!(!cluster(None, false).uses_tls(&meshed, false, false));
        assert!(!cluster(None, false).uses_tls(&bare, true, false));
        assert!(!cluster(None, true).uses_tls(&meshed, true, false));
        assert!(!cluster(None, false).uses_tls(&meshed, true, true));
        // The DestinationRule decides whatever auto mTLS would say.
        for mode in ["ISTIO_MUTUAL", "SIMPLE", "MUTUAL"] {
            let c = cluster(Some(tp(mode)), true);
            assert!(c.uses_tls(&bare, false, true), "{mode}");
        }
        assert!(!cluster(Some(tp("DISABLE")), false).uses_tls(&meshed, true, false));
    }
}
