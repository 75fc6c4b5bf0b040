//! `networking.istio.io` (v1, v1beta1, v1alpha3; the schemas are identical).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Labels, Percent, StringMatch, ValueMatch};
use mesh_core::Duration;

// === VirtualService ===

/// `VirtualService.spec`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct VirtualServiceSpec {
    /// Destination hosts the rules apply to (short names resolve in the VS namespace).
    pub hosts: Vec<String>,
    /// Gateways (and/or `mesh`) the rules apply at; empty means `mesh` only.
    pub gateways: Vec<String>,
    /// HTTP routes, first match wins.
    pub http: Vec<HttpRoute>,
    /// TLS (SNI) routes.
    pub tls: Vec<TlsRoute>,
    /// TCP routes.
    pub tcp: Vec<TcpRoute>,
    /// Namespaces this VS is visible to (`.` own, `*` all).
    pub export_to: Vec<String>,
}

/// `HTTPRoute`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpRoute {
    /// Route name (stats and logs).
    pub name: Option<String>,
    /// Match blocks, ORed; absent means match everything.
    #[serde(rename = "match")]
    pub matches: Vec<HttpMatchRequest>,
    /// Weighted destinations.
    pub route: Vec<HttpRouteDestination>,
    /// Redirect instead of forwarding.
    pub redirect: Option<HttpRedirect>,
    /// Answer directly instead of forwarding.
    pub direct_response: Option<HttpDirectResponse>,
    /// Hand the route to another VirtualService.
    pub delegate: Option<Delegate>,
    /// Rewrite before forwarding.
    pub rewrite: Option<HttpRewrite>,
    /// Timeout over all tries; none by default.
    pub timeout: Option<Duration>,
    /// Retry policy; the mesh default when absent.
    pub retries: Option<HttpRetry>,
    /// Fault injection.
    pub fault: Option<HttpFaultInjection>,
    /// Mirror (shadow) traffic to this destination.
    pub mirror: Option<Destination>,
    /// Several mirrors, each with its own percentage.
    pub mirrors: Vec<HttpMirrorPolicy>,
    /// Share of traffic mirrored; absent means 100 %.
    pub mirror_percentage: Option<Percent>,
    /// Deprecated integer percentage, used only without `mirrorPercentage`.
    pub mirror_percent: Option<u32>,
    /// CORS policy.
    pub cors_policy: Option<CorsPolicy>,
    /// Header operations.
    pub headers: Option<Headers>,
}

/// `HTTPMatchRequest`: fields ANDed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpMatchRequest {
    /// Block name.
    pub name: Option<String>,
    /// Path condition (query string excluded).
    pub uri: Option<StringMatch>,
    /// `:scheme` condition.
    pub scheme: Option<StringMatch>,
    /// `:method` condition.
    pub method: Option<StringMatch>,
    /// `:authority` condition (port included when sent).
    pub authority: Option<StringMatch>,
    /// Header conditions (lowercase keys; `{}` means present).
    pub headers: BTreeMap<String, ValueMatch>,
    /// Listener port (config time).
    pub port: Option<u32>,
    /// Client workload labels (config time).
    pub source_labels: Labels,
    /// Gateways this block applies at (config time).
    pub gateways: Vec<String>,
    /// Query parameter conditions.
    pub query_params: BTreeMap<String, ValueMatch>,
    /// Case-insensitive `uri` exact/prefix.
    pub ignore_uri_case: bool,
    /// Header conditions that must not hold.
    pub without_headers: BTreeMap<String, ValueMatch>,
    /// Client namespace (config time).
    pub source_namespace: Option<String>,
    /// Stats prefix.
    pub stat_prefix: Option<String>,
}

/// `HTTPRouteDestination`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpRouteDestination {
    /// Where to send.
    pub destination: Destination,
    /// Relative weight; omitted means 0 with several destinations, 100 % with one.
    pub weight: Option<i32>,
    /// Header operations when this destination is picked.
    pub headers: Option<Headers>,
}

/// `Destination`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Destination {
    /// Registry host (short names resolve in the rule's namespace).
    pub host: String,
    /// Subset from the host's DestinationRule.
    pub subset: Option<String>,
    /// Port; optional when the service has one.
    pub port: Option<PortSelector>,
}

/// `PortSelector`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PortSelector {
    /// Port number.
    pub number: u32,
}

/// `Headers`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Headers {
    /// Operations on the request.
    pub request: Option<HeaderOperations>,
    /// Operations on the response.
    pub response: Option<HeaderOperations>,
}

/// `HeaderOperations`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HeaderOperations {
    /// Overwrite or add.
    pub set: BTreeMap<String, String>,
    /// Append a value.
    pub add: BTreeMap<String, String>,
    /// Delete.
    pub remove: Vec<String>,
}

/// `HTTPRedirect`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpRedirect {
    /// Replace the whole path.
    pub uri: Option<String>,
    /// Replace the matched prefix.
    pub prefix_rewrite: Option<String>,
    /// Replace the host.
    pub authority: Option<String>,
    /// Port to redirect to.
    pub port: Option<u32>,
    /// Derive the port instead.
    pub derive_port: Option<RedirectPortSelection>,
    /// `http` or `https`.
    pub scheme: Option<String>,
    /// Status; 301 when absent.
    pub redirect_code: Option<u32>,
}

impl HttpRedirect {
    /// The status code, Istio's default 301 when unset.
    pub fn code(&self) -> u32 {
        self.redirect_code.unwrap_or(301)
    }
}

/// `HTTPRedirect.RedirectPortSelection`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RedirectPortSelection {
    /// 80 for http, 443 for https, port omitted.
    FromProtocolDefault,
    /// The request's port.
    FromRequestPort,
}

/// `HTTPDirectResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpDirectResponse {
    /// Status, 200..=599.
    pub status: u32,
    /// Optional body.
    pub body: Option<HttpBody>,
}

/// `HTTPBody`: exactly one of `string` or `bytes` (base64).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "HttpBodyRepr", into = "HttpBodyRepr")]
pub enum HttpBody {
    /// Text body.
    String(String),
    /// Base64-encoded bytes, as written.
    Bytes(String),
}

#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpBodyRepr {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    string: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bytes: Option<String>,
}

impl TryFrom<HttpBodyRepr> for HttpBody {
    type Error = String;
    fn try_from(r: HttpBodyRepr) -> Result<Self, String> {
        match (r.string, r.bytes) {
            (Some(s), None) => Ok(Self::String(s)),
            (None, Some(b)) => Ok(Self::Bytes(b)),
            (None, None) => Err("one of string or bytes must be set".into()),
            _ => Err("only one of string or bytes may be set".into()),
        }
    }
}

impl From<HttpBody> for HttpBodyRepr {
    fn from(b: HttpBody) -> Self {
        match b {
            HttpBody::String(s) => Self { string: Some(s), bytes: None },
            HttpBody::Bytes(b) => Self { string: None, bytes: Some(b) },
        }
    }
}

/// `Delegate`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Delegate {
    /// Name of the delegate VirtualService.
    pub name: String,
    /// Its namespace; the root's when empty.
    pub namespace: Option<String>,
}

/// `HTTPRewrite`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpRewrite {
    /// New path (or prefix, for prefix matches).
    pub uri: Option<String>,
    /// New host.
    pub authority: Option<String>,
    /// Regex substitution on the path.
    pub uri_regex_rewrite: Option<RegexRewrite>,
}

/// `RegexRewrite`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RegexRewrite {
    /// RE2 pattern.
    #[serde(rename = "match")]
    pub pattern: String,
    /// Replacement; `\1` refers to capture groups.
    pub rewrite: String,
}

/// `HTTPRetry`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpRetry {
    /// Number of retries (tries = 1 + attempts); 0 disables.
    pub attempts: i32,
    /// Limit per try.
    pub per_try_timeout: Option<Duration>,
    /// Comma list of retry conditions.
    pub retry_on: Option<String>,
    /// Retry in other localities.
    pub retry_remote_localities: Option<bool>,
    /// Prefer another host for each retry (default true).
    pub retry_ignore_previous_hosts: Option<bool>,
    /// Base backoff interval (default 25 ms).
    pub backoff: Option<Duration>,
}

/// `HTTPFaultInjection`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpFaultInjection {
    /// Delay before forwarding.
    pub delay: Option<FaultDelay>,
    /// Answer without forwarding.
    pub abort: Option<FaultAbort>,
}

/// `HTTPFaultInjection.Delay`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct FaultDelay {
    /// The delay (≥ 1 ms).
    pub fixed_delay: Option<Duration>,
    /// Not supported by Istio; rejected by validation.
    pub exponential_delay: Option<Duration>,
    /// Share of requests delayed; absent means none.
    pub percentage: Option<Percent>,
    /// Deprecated integer percentage, used only without `percentage`.
    pub percent: Option<i32>,
}

/// `HTTPFaultInjection.Abort`: one of `httpStatus`, `grpcStatus`, `http2Error`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct FaultAbort {
    /// HTTP status, 200..=599.
    pub http_status: Option<i32>,
    /// gRPC status name such as `UNAVAILABLE`.
    pub grpc_status: Option<String>,
    /// HTTP/2 error name (not supported by Istio).
    pub http2_error: Option<String>,
    /// Share of requests aborted; absent means none.
    pub percentage: Option<Percent>,
}

/// `HTTPMirrorPolicy`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpMirrorPolicy {
    /// Mirror destination.
    pub destination: Destination,
    /// Share mirrored; absent means 100 %.
    pub percentage: Option<Percent>,
}

/// `CorsPolicy`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct CorsPolicy {
    /// Allowed origins.
    pub allow_origins: Vec<StringMatch>,
    /// Deprecated exact origins.
    pub allow_origin: Vec<String>,
    /// `Access-Control-Allow-Methods`.
    pub allow_methods: Vec<String>,
    /// `Access-Control-Allow-Headers`.
    pub allow_headers: Vec<String>,
    /// `Access-Control-Expose-Headers`.
    pub expose_headers: Vec<String>,
    /// `Access-Control-Max-Age`.
    pub max_age: Option<Duration>,
    /// `Access-Control-Allow-Credentials`.
    pub allow_credentials: Option<bool>,
    /// What to do with preflights from origins that do not match.
    pub unmatched_preflights: Option<UnmatchedPreflights>,
}

/// `CorsPolicy.UnmatchedPreflights`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum UnmatchedPreflights {
    /// Not set (behaves as FORWARD).
    UnspecifiedUnmatchedPreflights,
    /// Pass to the upstream.
    Forward,
    /// Stop them.
    Ignore,
}

/// `TLSRoute`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TlsRoute {
    /// Conditions.
    #[serde(rename = "match")]
    pub matches: Vec<TlsMatchAttributes>,
    /// Destinations.
    pub route: Vec<RouteDestination>,
}

/// `TLSMatchAttributes`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TlsMatchAttributes {
    /// SNI values.
    pub sni_hosts: Vec<String>,
    /// Destination CIDRs.
    pub destination_subnets: Vec<String>,
    /// Listener port.
    pub port: Option<u32>,
    /// Client labels.
    pub source_labels: Labels,
    /// Gateways.
    pub gateways: Vec<String>,
    /// Client namespace.
    pub source_namespace: Option<String>,
}

/// `TCPRoute`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TcpRoute {
    /// Conditions.
    #[serde(rename = "match")]
    pub matches: Vec<L4MatchAttributes>,
    /// Destinations.
    pub route: Vec<RouteDestination>,
}

/// `L4MatchAttributes`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct L4MatchAttributes {
    /// Destination CIDRs.
    pub destination_subnets: Vec<String>,
    /// Listener port.
    pub port: Option<u32>,
    /// Source CIDR.
    pub source_subnet: Option<String>,
    /// Client labels.
    pub source_labels: Labels,
    /// Gateways.
    pub gateways: Vec<String>,
    /// Client namespace.
    pub source_namespace: Option<String>,
}

/// `RouteDestination` (L4).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RouteDestination {
    /// Where to send.
    pub destination: Destination,
    /// Relative weight.
    pub weight: Option<i32>,
}

// === DestinationRule ===

/// `DestinationRule.spec`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct DestinationRuleSpec {
    /// The registry host.
    pub host: String,
    /// Policy for the whole host.
    pub traffic_policy: Option<TrafficPolicy>,
    /// Named subsets.
    pub subsets: Vec<Subset>,
    /// Visibility.
    pub export_to: Vec<String>,
    /// Apply only to these client workloads.
    pub workload_selector: Option<super::WorkloadSelector>,
}

/// `TrafficPolicy`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TrafficPolicy {
    /// Load balancing.
    pub load_balancer: Option<LoadBalancerSettings>,
    /// Circuit breaking.
    pub connection_pool: Option<ConnectionPoolSettings>,
    /// Passive health checking.
    pub outlier_detection: Option<OutlierDetection>,
    /// Upstream TLS.
    pub tls: Option<ClientTlsSettings>,
    /// Per-port replacements of the four blocks above.
    pub port_level_settings: Vec<PortTrafficPolicy>,
    /// HTTP CONNECT tunnelling.
    pub tunnel: Option<TunnelSettings>,
    /// PROXY protocol toward the upstream.
    pub proxy_protocol: Option<ProxyProtocol>,
    /// Retry budget.
    pub retry_budget: Option<RetryBudget>,
}

/// `TrafficPolicy.PortTrafficPolicy`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PortTrafficPolicy {
    /// The port these settings replace policy on.
    pub port: Option<PortSelector>,
    /// Load balancing.
    pub load_balancer: Option<LoadBalancerSettings>,
    /// Circuit breaking.
    pub connection_pool: Option<ConnectionPoolSettings>,
    /// Passive health checking.
    pub outlier_detection: Option<OutlierDetection>,
    /// Upstream TLS.
    pub tls: Option<ClientTlsSettings>,
}

/// `TrafficPolicy.TunnelSettings`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TunnelSettings {
    /// `CONNECT` or `POST`.
    pub protocol: Option<String>,
    /// Host to tunnel to.
    pub target_host: String,
    /// Port to tunnel to.
    pub target_port: u32,
}

/// `TrafficPolicy.ProxyProtocol`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ProxyProtocol {
    /// `V1` or `V2`.
    pub version: Option<String>,
}

/// `TrafficPolicy.RetryBudget`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RetryBudget {
    /// Share of active requests that may be retries.
    pub percent: Option<Percent>,
    /// Retries always allowed.
    pub min_retry_concurrency: Option<u32>,
}

/// `Subset`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Subset {
    /// DNS-1123 label.
    pub name: String,
    /// Pod labels, exact AND.
    pub labels: Labels,
    /// Overrides whole blocks of the host policy.
    pub traffic_policy: Option<TrafficPolicy>,
}

/// `LoadBalancerSettings`: `simple` or `consistentHash` (a oneof), plus locality and warmup.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LoadBalancerSettings {
    /// A standard algorithm.
    pub simple: Option<SimpleLb>,
    /// Soft affinity by a hash key.
    pub consistent_hash: Option<ConsistentHashLb>,
    /// Locality-aware settings.
    pub locality_lb_setting: Option<LocalityLbSetting>,
    /// Deprecated slow start window.
    pub warmup_duration_secs: Option<Duration>,
    /// Slow start.
    pub warmup: Option<Warmup>,
}

/// `LoadBalancerSettings.SimpleLB`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SimpleLb {
    /// Not set: LEAST_REQUEST.
    Unspecified,
    /// Deprecated alias of LEAST_REQUEST.
    LeastConn,
    /// Uniform random.
    Random,
    /// Original destination.
    Passthrough,
    /// Rotate.
    RoundRobin,
    /// Power of two choices on outstanding requests (the default).
    LeastRequest,
}

/// `LoadBalancerSettings.ConsistentHashLB`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ConsistentHashLb {
    /// Hash on a header.
    pub http_header_name: Option<String>,
    /// Hash on a cookie.
    pub http_cookie: Option<HttpCookie>,
    /// Hash on the source IP.
    pub use_source_ip: Option<bool>,
    /// Hash on a query parameter.
    pub http_query_parameter_name: Option<String>,
    /// Ring hash (the default).
    pub ring_hash: Option<RingHash>,
    /// Maglev.
    pub maglev: Option<Maglev>,
    /// Deprecated ring size.
    pub minimum_ring_size: Option<u64>,
}

/// `ConsistentHashLB.HTTPCookie`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpCookie {
    /// Cookie name.
    pub name: String,
    /// Cookie path.
    pub path: Option<String>,
    /// Lifetime of a generated cookie.
    pub ttl: Option<Duration>,
    /// Extra cookie attributes.
    pub attributes: Vec<CookieAttribute>,
}

/// `ConsistentHashLB.HTTPCookie.Attribute`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct CookieAttribute {
    /// Attribute name.
    pub name: String,
    /// Attribute value.
    pub value: Option<String>,
}

/// `ConsistentHashLB.RingHash`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RingHash {
    /// Ring size (default 1024).
    pub minimum_ring_size: Option<u64>,
}

/// `ConsistentHashLB.MagLev`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Maglev {
    /// Table size, a prime (default 65537).
    pub table_size: Option<u64>,
}

/// `LocalityLoadBalancerSetting`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LocalityLbSetting {
    /// Weighted distribution by locality.
    pub distribute: Vec<LocalityDistribute>,
    /// Failover order.
    pub failover: Vec<LocalityFailover>,
    /// Label-based failover priority.
    pub failover_priority: Vec<String>,
    /// Enable locality LB.
    pub enabled: Option<bool>,
}

/// `LocalityLoadBalancerSetting.Distribute`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LocalityDistribute {
    /// Origin locality.
    pub from: String,
    /// Target localities and weights.
    pub to: BTreeMap<String, u32>,
}

/// `LocalityLoadBalancerSetting.Failover`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LocalityFailover {
    /// Origin region.
    pub from: String,
    /// Failover region.
    pub to: String,
}

/// `WarmupConfiguration`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Warmup {
    /// Window.
    pub duration: Option<Duration>,
    /// Starting share of traffic.
    pub minimum_percent: Option<f64>,
    /// Curve.
    pub aggression: Option<f64>,
}

/// `ConnectionPoolSettings`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ConnectionPoolSettings {
    /// TCP limits.
    pub tcp: Option<TcpSettings>,
    /// HTTP limits.
    pub http: Option<HttpSettings>,
}

/// `ConnectionPoolSettings.TCPSettings`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TcpSettings {
    /// Maximum connections per host.
    pub max_connections: Option<i32>,
    /// Connect timeout (default 10 s).
    pub connect_timeout: Option<Duration>,
    /// Keepalive probes.
    pub tcp_keepalive: Option<TcpKeepalive>,
    /// Maximum connection lifetime.
    pub max_connection_duration: Option<Duration>,
    /// Idle timeout (default 1 h).
    pub idle_timeout: Option<Duration>,
}

/// `TCPSettings.TcpKeepalive`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TcpKeepalive {
    /// Probes before the connection is dead.
    pub probes: Option<u32>,
    /// Idle time before probing.
    pub time: Option<Duration>,
    /// Interval between probes.
    pub interval: Option<Duration>,
}

/// `ConnectionPoolSettings.HTTPSettings`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpSettings {
    /// Queue waiting for a connection.
    pub http1_max_pending_requests: Option<i32>,
    /// Maximum active requests.
    pub http2_max_requests: Option<i32>,
    /// 1 disables keep-alive; 0 unlimited.
    pub max_requests_per_connection: Option<i32>,
    /// Concurrent retries.
    pub max_retries: Option<i32>,
    /// Idle timeout.
    pub idle_timeout: Option<Duration>,
    /// `DEFAULT`, `DO_NOT_UPGRADE`, `UPGRADE`.
    pub h2_upgrade_policy: Option<H2UpgradePolicy>,
    /// Use the downstream protocol upstream.
    pub use_client_protocol: Option<bool>,
    /// HTTP/2 streams per connection.
    pub max_concurrent_streams: Option<i32>,
}

/// `HTTPSettings.H2UpgradePolicy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum H2UpgradePolicy {
    /// Mesh default.
    Default,
    /// Keep HTTP/1.1.
    DoNotUpgrade,
    /// Upgrade to HTTP/2.
    Upgrade,
}

/// `OutlierDetection`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct OutlierDetection {
    /// Count local failures separately.
    pub split_external_local_origin_errors: Option<bool>,
    /// Local failures before ejection.
    pub consecutive_local_origin_failures: Option<u32>,
    /// 502/503/504 before ejection (off unless set).
    pub consecutive_gateway_errors: Option<u32>,
    /// 5xx before ejection (default 5; 0 disables).
    pub consecutive_5xx_errors: Option<u32>,
    /// Scan interval (default 10 s).
    pub interval: Option<Duration>,
    /// Base ejection time (default 30 s).
    pub base_ejection_time: Option<Duration>,
    /// Maximum share of hosts ejected (default 10).
    pub max_ejection_percent: Option<i32>,
    /// Panic threshold (default 0).
    pub min_health_percent: Option<i32>,
    /// Deprecated.
    pub consecutive_errors: Option<i32>,
}

/// `ClientTLSSettings`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ClientTlsSettings {
    /// The mode.
    pub mode: Option<ClientTlsMode>,
    /// Client certificate file (MUTUAL).
    pub client_certificate: Option<String>,
    /// Client key file (MUTUAL).
    pub private_key: Option<String>,
    /// CA file.
    pub ca_certificates: Option<String>,
    /// Credential secret name.
    pub credential_name: Option<String>,
    /// Accepted SANs.
    pub subject_alt_names: Vec<String>,
    /// SNI.
    pub sni: Option<String>,
    /// Skip server verification.
    pub insecure_skip_verify: Option<bool>,
    /// Revocation list file.
    pub ca_crl: Option<String>,
}

/// `ClientTLSSettings.TLSmode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ClientTlsMode {
    /// Plaintext.
    Disable,
    /// Originate TLS.
    Simple,
    /// TLS with a client certificate from files.
    Mutual,
    /// mTLS with the mesh certificate.
    IstioMutual,
}

// === Gateway ===

/// `Gateway.spec`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct GatewaySpec {
    /// Listeners.
    pub servers: Vec<Server>,
    /// Gateway pod labels.
    pub selector: Labels,
}

/// `Server`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Server {
    /// The port the gateway listens on.
    pub port: GatewayPort,
    /// Bind address.
    pub bind: Option<String>,
    /// `[namespace/]dnsName` hosts.
    pub hosts: Vec<String>,
    /// TLS settings.
    pub tls: Option<ServerTlsSettings>,
    /// Default endpoint.
    pub default_endpoint: Option<String>,
    /// Server name.
    pub name: Option<String>,
}

/// `Port` (Gateway, ServiceEntry).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct GatewayPort {
    /// Port number.
    pub number: u32,
    /// `HTTP|HTTPS|GRPC|GRPC-WEB|HTTP2|MONGO|TCP|TLS`.
    pub protocol: String,
    /// Port name.
    pub name: String,
    /// Endpoint port.
    pub target_port: Option<u32>,
}

/// `ServerTLSSettings`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ServerTlsSettings {
    /// Redirect HTTP to HTTPS.
    pub https_redirect: Option<bool>,
    /// Mode.
    pub mode: Option<ServerTlsMode>,
    /// Server certificate file.
    pub server_certificate: Option<String>,
    /// Server key file.
    pub private_key: Option<String>,
    /// CA file for client certificates.
    pub ca_certificates: Option<String>,
    /// Revocation list file.
    pub ca_crl: Option<String>,
    /// Credential secret.
    pub credential_name: Option<String>,
    /// Several credential secrets.
    pub credential_names: Vec<String>,
    /// Several certificate pairs.
    pub tls_certificates: Vec<TlsCertificate>,
    /// Accepted client SANs.
    pub subject_alt_names: Vec<String>,
    /// Accepted SPKI hashes.
    pub verify_certificate_spki: Vec<String>,
    /// Accepted certificate hashes.
    pub verify_certificate_hash: Vec<String>,
    /// Minimum TLS version.
    pub min_protocol_version: Option<TlsProtocol>,
    /// Maximum TLS version.
    pub max_protocol_version: Option<TlsProtocol>,
    /// Cipher suites.
    pub cipher_suites: Vec<String>,
}

/// `ServerTLSSettings.TLSCertificate`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TlsCertificate {
    /// Certificate file.
    pub server_certificate: Option<String>,
    /// Key file.
    pub private_key: Option<String>,
    /// CA file.
    pub ca_certificates: Option<String>,
}

/// `ServerTLSSettings.TLSmode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServerTlsMode {
    /// Forward on SNI without terminating.
    Passthrough,
    /// Terminate TLS.
    Simple,
    /// Terminate and require a client certificate.
    Mutual,
    /// Passthrough with SNI-based cluster selection.
    AutoPassthrough,
    /// Terminate with the mesh certificate.
    IstioMutual,
    /// Client certificate optional.
    OptionalMutual,
}

/// `ServerTLSSettings.TLSProtocol`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TlsProtocol {
    /// Library default.
    TlsAuto,
    /// TLS 1.0.
    #[serde(rename = "TLSV1_0")]
    TlsV1_0,
    /// TLS 1.1.
    #[serde(rename = "TLSV1_1")]
    TlsV1_1,
    /// TLS 1.2.
    #[serde(rename = "TLSV1_2")]
    TlsV1_2,
    /// TLS 1.3.
    #[serde(rename = "TLSV1_3")]
    TlsV1_3,
}

// === ServiceEntry, WorkloadEntry ===

/// `ServiceEntry.spec`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ServiceEntrySpec {
    /// Hosts.
    pub hosts: Vec<String>,
    /// Virtual IPs.
    pub addresses: Vec<String>,
    /// Ports.
    pub ports: Vec<GatewayPort>,
    /// Inside or outside the mesh.
    pub location: Option<ServiceEntryLocation>,
    /// How endpoints are found.
    pub resolution: Option<Resolution>,
    /// Static endpoints.
    pub endpoints: Vec<WorkloadEntrySpec>,
    /// WorkloadEntries selected by label.
    pub workload_selector: Option<EntryWorkloadSelector>,
    /// Visibility.
    pub export_to: Vec<String>,
    /// Accepted SANs.
    pub subject_alt_names: Vec<String>,
}

/// `WorkloadSelector` of a ServiceEntry (`labels`, not `matchLabels`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct EntryWorkloadSelector {
    /// Labels, ANDed.
    pub labels: Labels,
}

/// `ServiceEntry.Location`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServiceEntryLocation {
    /// Outside the mesh.
    MeshExternal,
    /// Part of the mesh.
    MeshInternal,
}

/// `ServiceEntry.Resolution`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Resolution {
    /// Forward to the original address.
    None,
    /// Use the static endpoints.
    Static,
    /// Resolve the hosts by DNS.
    Dns,
    /// DNS, one connection target at a time.
    DnsRoundRobin,
    /// Dynamic DNS.
    DynamicDns,
}

/// `WorkloadEntry.spec` (also a ServiceEntry endpoint).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct WorkloadEntrySpec {
    /// IP, host name or unix socket.
    pub address: String,
    /// Port name to number.
    pub ports: BTreeMap<String, u32>,
    /// Labels.
    pub labels: Labels,
    /// Network.
    pub network: Option<String>,
    /// Locality.
    pub locality: Option<String>,
    /// LB weight.
    pub weight: Option<u32>,
    /// Service account for the identity.
    pub service_account: Option<String>,
}

// === Sidecar ===

/// `Sidecar.spec`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct SidecarSpec {
    /// Workloads this applies to.
    pub workload_selector: Option<EntryWorkloadSelector>,
    /// Inbound listeners.
    pub ingress: Vec<IstioIngressListener>,
    /// Outbound listeners and reachable hosts.
    pub egress: Vec<IstioEgressListener>,
    /// Outbound policy for unknown destinations.
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
    /// Inbound connection pool.
    pub inbound_connection_pool: Option<ConnectionPoolSettings>,
}

/// `SidecarPort`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct SidecarPort {
    /// Port number.
    pub number: u32,
    /// Protocol.
    pub protocol: Option<String>,
    /// Name.
    pub name: Option<String>,
    /// Endpoint port.
    pub target_port: Option<u32>,
}

/// `IstioIngressListener`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct IstioIngressListener {
    /// Port.
    pub port: Option<SidecarPort>,
    /// Bind address.
    pub bind: Option<String>,
    /// Capture mode.
    pub capture_mode: Option<CaptureMode>,
    /// Where to forward.
    pub default_endpoint: Option<String>,
    /// TLS termination.
    pub tls: Option<ServerTlsSettings>,
    /// Connection pool.
    pub connection_pool: Option<ConnectionPoolSettings>,
}

/// `IstioEgressListener`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct IstioEgressListener {
    /// Port.
    pub port: Option<SidecarPort>,
    /// Bind address.
    pub bind: Option<String>,
    /// Capture mode.
    pub capture_mode: Option<CaptureMode>,
    /// `namespace/dnsName` hosts reachable.
    pub hosts: Vec<String>,
}

/// `CaptureMode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CaptureMode {
    /// Environment default.
    Default,
    /// iptables capture.
    Iptables,
    /// No capture.
    None,
}

/// `OutboundTrafficPolicy`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct OutboundTrafficPolicy {
    /// `REGISTRY_ONLY` or `ALLOW_ANY`.
    pub mode: Option<OutboundMode>,
    /// Egress proxy destination.
    pub egress_proxy: Option<Destination>,
}

/// `OutboundTrafficPolicy.Mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundMode {
    /// Only registry hosts.
    RegistryOnly,
    /// Anything.
    AllowAny,
}
