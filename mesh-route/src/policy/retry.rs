//! Retry policy: `attempts`, `perTryTimeout`, `retryOn`, backoff; Istio's default.

use std::time::Duration;

use mesh_config::api::HttpRetry;
use mesh_core::grpc::Code;

/// Conditions under which a try is retried (Envoy's `x-envoy-retry-on` names).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetryOn {
    /// The names as configured, in order (for explanations).
    pub names: Vec<String>,
    /// `5xx`.
    pub server_error: bool,
    /// `gateway-error`.
    pub gateway_error: bool,
    /// `reset`.
    pub reset: bool,
    /// `reset-before-request`.
    pub reset_before_request: bool,
    /// `connect-failure`.
    pub connect_failure: bool,
    /// `refused-stream`.
    pub refused_stream: bool,
    /// `retriable-4xx` (409).
    pub retriable_4xx: bool,
    /// Statuses from `retriable-status-codes` and numeric entries.
    pub status_codes: Vec<u16>,
    /// gRPC status codes (`cancelled`, `deadline-exceeded`, `internal`, `resource-exhausted`, `unavailable`).
    pub grpc_codes: Vec<Code>,
    /// `envoy-ratelimited`: a response carrying `x-envoy-ratelimited`.
    pub envoy_ratelimited: bool,
    /// `retriable-headers`: a response carrying a header the request named in
    /// `x-envoy-retriable-header-names` (Istio sets no route-level retriable headers).
    pub retriable_headers: bool,
    /// `http3-post-connect-failure`: a failure after connecting over HTTP/3. Kept so the
    /// policy reads as written; mesh opens no HTTP/3 upstream connections, so no try is one.
    pub http3_post_connect_failure: bool,
}

/// Istio's default `retryOn`.
pub const DEFAULT_RETRY_ON: &str = "connect-failure,refused-stream,unavailable,cancelled";

impl RetryOn {
    /// Parse a comma list (unknown names are ignored; validation rejected them earlier).
    pub fn parse(list: &str) -> Self {
        let mut r = Self::default();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            r.names.push(name.to_string());
            r.add(name);
        }
        r
    }

    /// Whether `name` is a condition this type gives a meaning to (the set validation accepts).
    pub fn understands(name: &str) -> bool {
        Self::default().add(name)
    }

    /// Turn on one condition; false when the name means nothing here.
    fn add(&mut self, name: &str) -> bool {
        let r = self;
        match name {
            "5xx" => r.server_error = true,
            "gateway-error" => r.gateway_error = true,
            "reset" => r.reset = true,
            "reset-before-request" => r.reset_before_request = true,
            "connect-failure" => r.connect_failure = true,
            "refused-stream" => r.refused_stream = true,
            "retriable-4xx" => r.retriable_4xx = true,
            "retriable-status-codes" => {}
            "envoy-ratelimited" => r.envoy_ratelimited = true,
            "retriable-headers" => r.retriable_headers = true,
            "http3-post-connect-failure" => r.http3_post_connect_failure = true,
            g @ ("cancelled" | "deadline-exceeded" | "resource-exhausted" | "internal" | "unavailable") => {
                r.grpc_codes.extend(Code::ALL.iter().copied().find(|c| c.retry_on_name() == g));
            }
            other => match other.parse::<u16>() {
                Ok(code) if (100..=599).contains(&code) => r.status_codes.push(code),
                _ => return false,
            },
        }
        true
    }

    /// Whether an upstream response with this status (and gRPC status, if any) is retried.
    /// Only real upstream responses count: local failures go through [`RetryOn::on_failure`].
    pub fn on_response(&self, status: u16, grpc_status: Option<u16>) -> bool {
        (self.server_error && (500..600).contains(&status))
            || (self.gateway_error && matches!(status, 502..=504))
            || (self.retriable_4xx && status == 409)
            || self.status_codes.contains(&status)
            || grpc_status.and_then(Code::from_u16).is_some_and(|g| self.grpc_codes.contains(&g))
    }

    /// Whether an upstream response is retried for its headers (`envoy-ratelimited`,
    /// `retriable-headers`); `request` holds the request's headers.
    pub fn on_headers(&self, response: &http::HeaderMap, request: &http::HeaderMap) -> bool {
        (self.envoy_ratelimited && response.contains_key("x-envoy-ratelimited"))
            || (self.retriable_headers
                && request
                    .get_all("x-envoy-retriable-header-names")
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(|v| v.split(','))
                    .map(str::trim)
                    .any(|n| !n.is_empty() && response.contains_key(n)))
    }

    /// Whether a try that got no response is retried.
    pub fn on_failure(&self, failure: TryFailure) -> bool {
        let no_response = self.server_error || self.gateway_error || self.reset;
        match failure {
            TryFailure::ConnectFailure => self.connect_failure || no_response || self.reset_before_request,
            TryFailure::RefusedStream => self.refused_stream || no_response || self.reset_before_request,
            TryFailure::Reset => no_response,
            // A per-try timeout is retried only under 5xx, gateway-error or reset.
            TryFailure::PerTryTimeout => no_response,
        }
    }
}

/// How a try failed without a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TryFailure {
    /// TCP or TLS connect failed or timed out.
    ConnectFailure,
    /// HTTP/2 REFUSED_STREAM.
    RefusedStream,
    /// Disconnect or reset after the request was sent.
    Reset,
    /// The per-try timeout fired.
    PerTryTimeout,
}

/// A route's retry policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first try (tries = 1 + attempts).
    pub attempts: u32,
    /// Limit of each try.
    pub per_try_timeout: Option<Duration>,
    /// When to retry.
    pub retry_on: RetryOn,
    /// Backoff base (25 ms by default); the cap is ten times it.
    pub backoff_base: Duration,
    /// Prefer a host not tried before.
    pub retry_other_host: bool,
}

impl RetryPolicy {
    /// Istio's mesh default: 2 retries on connect-failure, refused-stream, unavailable,
    /// cancelled (503 not retried since Istio 1.24), another host each time.
    pub fn istio_default() -> Self {
        Self {
            attempts: 2,
            per_try_timeout: None,
            retry_on: RetryOn::parse(DEFAULT_RETRY_ON),
            backoff_base: Duration::from_millis(25),
            retry_other_host: true,
        }
    }

    /// A TCP connection's connects: the mesh default's two retries, on `connect-failure`,
    /// each to another endpoint, at once (Envoy's TCP proxy has no backoff unless told).
    pub fn tcp_connect() -> Self {
        Self { retry_on: RetryOn::parse("connect-failure"), backoff_base: Duration::ZERO, ..Self::istio_default() }
    }

    /// Whether a try that failed with `failure`, after `retries` retries, is tried again.
    pub fn retries_after(&self, retries: u32, failure: TryFailure) -> bool {
        self.may_retry(retries) && self.retry_on.on_failure(failure)
    }

    /// Whether `retries` retries leave another.
    pub fn may_retry(&self, retries: u32) -> bool {
        retries < self.attempts
    }

    /// The route's policy: absent means the default; `attempts: 0` disables retries.
    pub fn for_route(config: Option<&HttpRetry>) -> Option<Self> {
        let Some(c) = config else { return Some(Self::istio_default()) };
        let attempts = u32::try_from(c.attempts).unwrap_or(0);
        if attempts == 0 {
            return None;
        }
        Some(Self {
            attempts,
            per_try_timeout: c.per_try_timeout.map(|d| d.get()),
            retry_on: RetryOn::parse(c.retry_on.as_deref().unwrap_or(DEFAULT_RETRY_ON)),
            backoff_base: c.backoff.map_or(Duration::from_millis(25), |d| d.get()),
            retry_other_host: c.retry_ignore_previous_hosts.unwrap_or(true),
        })
    }

    /// Jittered exponential backoff before retry number `n` (1-based): uniform in
    /// `[0, min(base * 2^(n-1), 10 * base)]`, given a sample `jitter` in `[0, 1)`.
    pub fn backoff(&self, n: u32, jitter: f64) -> Duration {
        let cap = self.backoff_base * 10;
        let exp = self.backoff_base.saturating_mul(1u32 << n.saturating_sub(1).min(16)).min(cap);
        exp.mul_f64(jitter.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tcp_connect_is_tried_three_times_on_connect_failure_only() {
        let p = RetryPolicy::tcp_connect();
        assert!(p.retries_after(0, TryFailure::ConnectFailure) && p.retries_after(1, TryFailure::ConnectFailure));
        assert!(!p.retries_after(2, TryFailure::ConnectFailure), "three tries in all");
        assert!(!p.retries_after(0, TryFailure::Reset), "bytes may have gone: never again");
        assert_eq!(p.backoff(1, 0.9), Duration::ZERO);
    }

    #[test]
    fn default_policy_does_not_retry_503() {
        let p = RetryPolicy::istio_default();
        assert_eq!(p.attempts, 2);
        assert!(!p.retry_on.on_response(503, None));
        assert!(p.retry_on.on_response(200, Some(14)));
        assert!(p.retry_on.on_failure(TryFailure::ConnectFailure));
        assert!(p.retry_on.on_failure(TryFailure::RefusedStream));
        assert!(!p.retry_on.on_failure(TryFailure::Reset));
        assert!(!p.retry_on.on_failure(TryFailure::PerTryTimeout));
    }

    #[test]
    fn retry_on_names() {
        let r = RetryOn::parse("gateway-error,retriable-4xx,418");
        assert!(r.on_response(502, None) && r.on_response(504, None) && !r.on_response(500, None));
        assert!(r.on_response(409, None) && r.on_response(418, None) && !r.on_response(404, None));
        assert!(r.on_failure(TryFailure::PerTryTimeout) && r.on_failure(TryFailure::Reset));
        let five = RetryOn::parse("5xx");
        assert!(five.on_response(500, None) && five.on_response(503, None) && !five.on_response(409, None));
        let reset = RetryOn::parse("reset");
        assert!(reset.on_failure(TryFailure::Reset) && !reset.on_response(503, None));
    }

    #[test]
    fn every_name_validation_accepts_has_a_meaning() {
        for name in mesh_config::validate::RETRY_ON_POLICIES {
            assert!(RetryOn::understands(name), "{name} passes validation but RetryOn ignores it");
        }
        assert!(RetryOn::understands("503") && !RetryOn::understands("600") && !RetryOn::understands("5XX"));
    }

    #[test]
    fn header_conditions() {
        let mut rsp = http::HeaderMap::new();
        let mut req = http::HeaderMap::new();
        let limited = RetryOn::parse("envoy-ratelimited");
        assert!(!limited.on_headers(&rsp, &req));
        rsp.insert("x-envoy-ratelimited", "true".parse().unwrap());
        assert!(limited.on_headers(&rsp, &req));
        assert!(!RetryOn::parse("5xx").on_headers(&rsp, &req));
        let named = RetryOn::parse("retriable-headers");
        assert!(!named.on_headers(&rsp, &req), "no header named by the request");
        req.insert("x-envoy-retriable-header-names", "x-upstream-busy, x-envoy-ratelimited".parse().unwrap());
        assert!(named.on_headers(&rsp, &req));
        rsp.clear();
        assert!(!named.on_headers(&rsp, &req));
        rsp.insert("x-upstream-busy", "1".parse().unwrap());
        assert!(named.on_headers(&rsp, &req));
        let h3 = RetryOn::parse("http3-post-connect-failure");
        assert!(h3.http3_post_connect_failure);
        assert!(!h3.on_failure(TryFailure::ConnectFailure) && !h3.on_failure(TryFailure::Reset));
    }

    #[test]
    fn attempts_zero_disables_and_absent_is_default() {
        assert_eq!(RetryPolicy::for_route(None), Some(RetryPolicy::istio_default()));
        let off = HttpRetry { attempts: 0, ..Default::default() };
        assert_eq!(RetryPolicy::for_route(Some(&off)), None);
        let three = HttpRetry { attempts: 3, ..Default::default() };
        let p = RetryPolicy::for_route(Some(&three)).unwrap();
        assert_eq!(p.retry_on.names, ["connect-failure", "refused-stream", "unavailable", "cancelled"]);
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        let p = RetryPolicy::istio_default();
        assert_eq!(p.backoff(1, 1.0), Duration::from_millis(25));
        assert_eq!(p.backoff(2, 1.0), Duration::from_millis(50));
        assert_eq!(p.backoff(5, 1.0), Duration::from_millis(250));
        assert_eq!(p.backoff(30, 1.0), Duration::from_millis(250));
        assert_eq!(p.backoff(3, 0.5), Duration::from_millis(50));
        assert_eq!(p.backoff(3, 0.0), Duration::ZERO);
    }
}
