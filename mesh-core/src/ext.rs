//! Types that cross feature crates through request and response extensions. A layer sets
//! them; later layers (telemetry, access logs) read them without depending on the crate
//! that set them.

use std::{fmt, net::SocketAddr, sync::Arc};

/// Envoy's response flags, as a set. Layers add flags to the *response* extensions
/// (`FI` from the fault layer, `UT` from a timeout, ...); telemetry reads them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ResponseFlags(u32);

macro_rules! flags {
    ($($(#[$doc:meta])* $name:ident = $bit:expr, $short:literal;)*) => {
        impl ResponseFlags {
            $($(#[$doc])* pub const $name: Self = Self(1 << $bit);)*
            const NAMES: &'static [(ResponseFlags, &'static str)] = &[$((Self::$name, $short)),*];
        }
    };
}

flags! {
    /// NR: no route.
    NO_ROUTE = 0, "NR";
    /// NC: no cluster (undefined subset).
    NO_CLUSTER = 1, "NC";
    /// UH: no healthy upstream.
    NO_HEALTHY_UPSTREAM = 2, "UH";
    /// UF: upstream connection failure.
    UPSTREAM_CONNECTION_FAILURE = 3, "UF";
    /// UC: upstream connection terminated.
    UPSTREAM_CONNECTION_TERMINATION = 4, "UC";
    /// UR: upstream remote reset.
    UPSTREAM_REMOTE_RESET = 5, "UR";
    /// UO: upstream overflow (circuit breaker).
    UPSTREAM_OVERFLOW = 6, "UO";
    /// UT: upstream request timeout.
    UPSTREAM_REQUEST_TIMEOUT = 7, "UT";
    /// URX: retry limit reached.
    UPSTREAM_RETRY_LIMIT_EXCEEDED = 8, "URX";
    /// DI: delayed by fault injection.
    DELAY_INJECTED = 9, "DI";
    /// FI: aborted by fault injection.
    FAULT_INJECTED = 10, "FI";
    /// UAEX: denied by the external authorizer.
    UNAUTHORIZED_EXTERNAL_SERVICE = 11, "UAEX";
    /// DC: downstream connection terminated.
    DOWNSTREAM_CONNECTION_TERMINATION = 12, "DC";
    /// DPE: downstream protocol error.
    DOWNSTREAM_PROTOCOL_ERROR = 13, "DPE";
    /// UPE: upstream protocol error.
    UPSTREAM_PROTOCOL_ERROR = 14, "UPE";
    /// RL: rate limited.
    RATE_LIMITED = 15, "RL";
    /// LR: local reset.
    LOCAL_RESET = 16, "LR";
}

impl ResponseFlags {
    /// No flags.
    pub const NONE: Self = Self(0);

    /// Both sets.
    #[must_use]
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The flags as bits (for cache keys).
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Whether no flag is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Add flags to a response's extensions.
    pub fn add_to(extensions: &mut http::Extensions, flags: Self) {
        let current = extensions.get::<Self>().copied().unwrap_or_default();
        extensions.insert(current.union(flags));
    }
}

impl std::ops::BitOr for ResponseFlags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        self.union(rhs)
    }
}

impl fmt::Display for ResponseFlags {
    /// Envoy's `%RESPONSE_FLAGS%`: short names joined with `,`, or `-` when none.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("-");
        }
        let mut first = true;
        for (flag, name) in Self::NAMES {
            if self.contains(*flag) {
                if !first {
                    f.write_str(",")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

/// What routing decided, for the layers after it (telemetry, logs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteDecision {
    /// `namespace/name` of the VirtualService, `None` for default routing.
    pub virtual_service: Option<Arc<str>>,
    /// Index of the HTTPRoute in the VirtualService.
    pub route_index: Option<usize>,
    /// The HTTPRoute's name.
    pub route_name: Option<Arc<str>>,
    /// The destination service's FQDN, when the request is forwarded.
    pub destination_service: Option<Arc<str>>,
    /// The destination subset.
    pub subset: Option<Arc<str>>,
    /// The destination port.
    pub port: Option<u16>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_display_like_envoy() {
        assert_eq!(ResponseFlags::NONE.to_string(), "-");
        assert_eq!((ResponseFlags::DELAY_INJECTED | ResponseFlags::FAULT_INJECTED).to_string(), "DI,FI");
        assert_eq!((ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED | ResponseFlags::NO_ROUTE).to_string(), "NR,URX");
        let mut ext = http::Extensions::new();
        ResponseFlags::add_to(&mut ext, ResponseFlags::DELAY_INJECTED);
        ResponseFlags::add_to(&mut ext, ResponseFlags::UPSTREAM_REQUEST_TIMEOUT);
        assert_eq!(ext.get::<ResponseFlags>().unwrap().to_string(), "UT,DI");
    }
}

/// The mTLS peer of the connection a request arrived on (request extension, set by the
/// server that accepted it; absent for plaintext).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIdentity(pub crate::Identity);

/// The downstream client's address (request extension, set by the server).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

/// The local address and port a request arrived on (request extension, set by the server).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalAddr(pub SocketAddr);

/// The connection a request arrived on is TLS without a client certificate (request
/// extension, set by the server; a [`PeerIdentity`] says the same of mTLS, and neither
/// means plaintext or unknown): the scheme of a request whose URI carries none (HTTP/1.1's
/// origin form) is `https`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DownstreamTls(pub bool);

impl DownstreamTls {
    /// Whether `ext` says the request came over TLS.
    pub fn of(ext: &http::Extensions) -> bool {
        ext.get::<DownstreamTls>().is_some_and(|t| t.0) || ext.get::<PeerIdentity>().is_some()
    }
}

/// The endpoint a request was sent to, with its workload (response extension, set by the
/// balancer): telemetry's `destination_*` labels come from here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamEndpoint(pub crate::endpoint::Endpoint);

/// Something worth counting that a layer saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    /// The retry layer sent another try.
    Retry,
    /// The balancer ejected an endpoint (outlier detection).
    Ejection,
    /// An AuthorizationPolicy allowed a request.
    AuthzAllow,
    /// An AuthorizationPolicy denied a request.
    AuthzDeny,
    /// The external authorizer (CUSTOM) denied a request, or its provider does not exist.
    AuthzCustomDeny,
}

impl Event {
    /// Its name as the metrics label it (`mesh_authz_decisions_total{decision="allow"}`).
    pub const fn name(self) -> &'static str {
        match self {
            Event::Retry => "retry",
            Event::Ejection => "ejection",
            Event::AuthzAllow => "allow",
            Event::AuthzDeny => "deny",
            Event::AuthzCustomDeny => "custom_deny",
        }
    }
}

/// A callback a layer runs when something worth counting happens ([`Event`]: a retry, an
/// ejection, an authorization decision); telemetry provides it, so layers need no metrics
/// library.
#[derive(Clone)]
pub struct Hook(Arc<dyn Fn(Event) + Send + Sync>);

impl Hook {
    /// Wrap a callback.
    pub fn new(f: impl Fn(Event) + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// Run it.
    pub fn call(&self, event: Event) {
        (self.0)(event);
    }
}

impl fmt::Debug for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Hook")
    }
}
