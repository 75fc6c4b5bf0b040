//! The routing layers, outermost first as mesh-proxy's `client::ClientBuilder` stacks them:
//! [`RouterLayer`] (match, decide, rewrite), the fault layer (`mesh-fault`), [`TimeoutLayer`]
//! (route timeout), [`RetryLayer`] (retries, per-try timeout, body replay, budget), and
//! [`BalanceLayer`] (endpoint choice, outlier ejection, pool limits), over any client that
//! sends a request to the absolute URI the balancer set (mesh-proxy's pooled `HttpClient`).
//!
//! Per-request policy travels from the router to the layers below it in the request
//! extensions: the route's `Arc<FaultPolicy>`, [`RouteTimeoutSetting`], `Arc<RetryPolicy>`
//! and the chosen [`Target`](crate::policy::action::Target).

mod balance;
mod retry;
#[cfg(feature = "config")]
mod router;
mod split;
#[cfg(feature = "config")]
mod table;
mod timeout;

pub use balance::{Balance, BalanceLayer, ClientAddr, ConnectionPick, TriedHosts};
pub use retry::{DEFAULT_MAX_REPLAY_BYTES, Retry, RetryBody, RetryLayer};
#[cfg(feature = "config")]
pub use router::{MirrorSink, Router, RouterLayer};
pub use split::{Split, SplitFuture};
#[cfg(feature = "config")]
pub use table::TableHandle;
pub use timeout::{RouteTimeoutSetting, Timeout, TimeoutLayer};

use http::{Request, Response};
use mesh_core::BoxBody;

impl BalanceLayer {
    /// This balancer (sharing its state) over `inner`.
    pub fn layer_service<S>(&self, inner: S) -> Balance<S> {
        tower_layer::Layer::layer(self, inner)
    }
}

/// A compile-time check that a stack is a service for requests of body `B`.
pub fn assert_service<S, B>(_: &S)
where
    S: tower_service::Service<Request<B>, Response = Response<BoxBody>>,
{
}
#[cfg(test)]
mod test_support;
#[cfg(all(test, feature = "config"))]
mod tests;
