//! The error type that crosses layers, helpers to find a cause in a chain, and the typed
//! leaf errors of the request path (no route, no healthy upstream, a timeout, ...).
//!
//! Layers fail with small typed leaf errors (`thiserror`), boxed into [`Error`]; the one
//! place that maps failures to responses walks the chain with [`is_caused_by`].

use std::net::SocketAddr;

/// A boxed error, the error type of every mesh service.
pub type Error = Box<dyn std::error::Error + Send + Sync + 'static>;
/// Alias used where tower's naming reads better.
pub type BoxError = Error;

/// Whether `error` or anything in its `source()` chain is an `E`.
pub fn is_caused_by<E: std::error::Error + 'static>(error: &(dyn std::error::Error + 'static)) -> bool {
    cause_ref::<E>(error).is_some()
}

/// The first `E` in `error`'s `source()` chain, `error` itself included.
pub fn cause_ref<'e, E: std::error::Error + 'static>(error: &'e (dyn std::error::Error + 'static)) -> Option<&'e E> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<E>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

// Why a request failed in the mesh: the leaf errors the routing layers, the balancer and
// the clients fail with. `crate::reply::LocalReply::for_error` answers each, once, at the edge.

/// No virtual host or route matched (404, `NR`).
#[derive(Clone, Debug, thiserror::Error)]
#[error("no route matched the request for {authority}")]
pub struct RouteNotFound {
    /// The authority that was routed.
    pub authority: String,
}

/// The route points at a cluster that does not exist, e.g. an undefined subset (503, `NC`).
#[derive(Clone, Debug, thiserror::Error)]
#[error("no cluster {cluster}")]
pub struct NoCluster {
    /// Envoy's cluster name.
    pub cluster: String,
}

/// The cluster has no endpoint to use: none at all, or all ejected (503, `UH`).
#[derive(Clone, Debug, thiserror::Error)]
#[error("no healthy upstream in {cluster}")]
pub struct NoHealthyUpstream {
    /// Envoy's cluster name.
    pub cluster: String,
}

/// A connectionPool limit was reached (503, `UO`).
#[derive(Clone, Debug, thiserror::Error)]
#[error("upstream overflow in {cluster}")]
pub struct Overflow {
    /// Envoy's cluster name.
    pub cluster: String,
}

/// The route timeout fired (504, `UT`).
#[derive(Clone, Copy, Debug, thiserror::Error)]
#[error("upstream request timeout")]
pub struct RouteTimeout;

/// A per-try timeout fired (504, `UT` when no retry follows).
#[derive(Clone, Copy, Debug, thiserror::Error)]
#[error("per-try timeout")]
pub struct PerTryTimeout;

/// The TCP or TLS connection to the upstream failed (503, `UF`).
#[derive(Debug, thiserror::Error)]
#[error("upstream connect error: {source}")]
pub struct ConnectFailure {
    /// What failed.
    #[source]
    pub source: Error,
}

/// The request failed on an endpoint (carries which one, for retries and outlier detection).
#[derive(Debug, thiserror::Error)]
#[error("endpoint {address}: {source}")]
pub struct EndpointError {
    /// The endpoint.
    pub address: SocketAddr,
    /// What failed.
    #[source]
    pub source: Error,
}

/// The last try failed and no retry was left (adds `URX`).
#[derive(Debug, thiserror::Error)]
#[error("retries exhausted: {source}")]
pub struct RetriesExhausted {
    /// The last failure.
    #[source]
    pub source: Error,
}

/// A weighted split has no backend with a weight above 0 (503, `NC`: nothing to send to).
#[derive(Clone, Copy, Debug, Default, thiserror::Error)]
#[error("no backend has a weight above 0")]
pub struct NoWeightedBackend;

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("leaf")]
    struct Leaf;

    #[derive(Debug, thiserror::Error)]
    #[error("wrapper")]
    struct Wrapper(#[source] Leaf);

    #[derive(Debug, thiserror::Error)]
    #[error("other")]
    struct Other;

    #[test]
    fn finds_cause_through_chain() {
        let err: Error = Box::new(Wrapper(Leaf));
        assert!(is_caused_by::<Leaf>(&*err));
        assert!(is_caused_by::<Wrapper>(&*err));
        assert!(!is_caused_by::<Other>(&*err));
        assert_eq!(cause_ref::<Leaf>(&*err).map(ToString::to_string).as_deref(), Some("leaf"));
    }
}
