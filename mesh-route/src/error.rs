//! Why a request failed. Each is a typed leaf error; [`crate::layer::RescueLayer`] maps
//! them to Envoy's local replies once, at the edge.

use std::net::SocketAddr;

use mesh_core::ext::ResponseFlags;

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
    pub source: mesh_core::Error,
}

/// The request failed on an endpoint (carries which one, for retries and outlier detection).
#[derive(Debug, thiserror::Error)]
#[error("endpoint {address}: {source}")]
pub struct EndpointError {
    /// The endpoint.
    pub address: SocketAddr,
    /// What failed.
    #[source]
    pub source: mesh_core::Error,
}

/// The last try failed and no retry was left (adds `URX`).
#[derive(Debug, thiserror::Error)]
#[error("retries exhausted: {source}")]
pub struct RetriesExhausted {
    /// The last failure.
    #[source]
    pub source: mesh_core::Error,
}

/// The flags an error is reported with.
pub fn flags_of(error: &(dyn std::error::Error + 'static)) -> ResponseFlags {
    use mesh_core::{body::DownstreamError, cause_ref, is_caused_by};
    match cause_ref::<DownstreamError>(error) {
        Some(DownstreamError::Protocol) => return ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR,
        Some(DownstreamError::Disconnected) => return ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION,
        Some(DownstreamError::TooLarge { .. }) => return ResponseFlags::NONE,
        None => {}
    }
    let mut flags = if is_caused_by::<RouteNotFound>(error) {
        ResponseFlags::NO_ROUTE
    } else if is_caused_by::<NoCluster>(error) {
        ResponseFlags::NO_CLUSTER
    } else if is_caused_by::<NoHealthyUpstream>(error) {
        ResponseFlags::NO_HEALTHY_UPSTREAM
    } else if is_caused_by::<Overflow>(error) {
        ResponseFlags::UPSTREAM_OVERFLOW
    } else if is_caused_by::<RouteTimeout>(error) || is_caused_by::<PerTryTimeout>(error) {
        ResponseFlags::UPSTREAM_REQUEST_TIMEOUT
    } else if is_caused_by::<ConnectFailure>(error) {
        ResponseFlags::UPSTREAM_CONNECTION_FAILURE
    } else {
        ResponseFlags::UPSTREAM_CONNECTION_TERMINATION
    };
    if is_caused_by::<RetriesExhausted>(error) {
        flags = flags | ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED;
    }
    flags
}
