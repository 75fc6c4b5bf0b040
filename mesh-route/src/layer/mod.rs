//! The routing layers, outermost first: [`RescueLayer`] (errors to Envoy's local replies),
//! [`RouterLayer`] (match, decide, rewrite), the fault layer (`mesh-fault`), [`TimeoutLayer`]
//! (route timeout), [`RetryLayer`] (retries, per-try timeout, body replay, budget),
//! [`BalanceLayer`] (endpoint choice, outlier ejection, pool limits), and [`HttpClient`]
//! (pooled hyper client).
//!
//! Per-request policy travels from the router to the layers below it in the request
//! extensions: the route's `Arc<FaultPolicy>`, [`RouteTimeoutSetting`], `Arc<RetryPolicy>`
//! and the chosen [`Target`](crate::policy::action::Target).

mod balance;
mod client;
mod rescue;
mod retry;
#[cfg(feature = "config")]
mod router;
mod split;
#[cfg(feature = "config")]
mod table;
mod timeout;

pub use balance::{Balance, BalanceLayer, ClientAddr, ConnectionPick, TriedHosts};
pub use client::HttpClient;
pub use rescue::{Rescue, RescueFuture, RescueLayer, local_reply};
pub use retry::{DEFAULT_MAX_REPLAY_BYTES, Retry, RetryBody, RetryLayer};
#[cfg(feature = "config")]
pub use router::{MirrorSink, Router, RouterLayer};
pub use split::{NoWeightedBackend, Split, SplitFuture};
#[cfg(feature = "config")]
pub use table::{TableHandle, follow};
pub use timeout::{RouteTimeoutSetting, Timeout, TimeoutLayer};

#[cfg(feature = "config")]
mod stack;
#[cfg(feature = "config")]
pub use stack::{
    ClientStack, ClientStackOver, client_stack, client_stack_layers, client_stack_over, client_stack_unboxed,
    client_stack_with, client_stack_with_connectors,
};

use http::{Request, Response};
use mesh_core::BoxBody;
use tower::util::BoxCloneSyncService;

/// The client stack behind one boxed, cloneable service: the type to store and to hand to
/// spawned tasks (the box is the stack boundary; nothing inside it is boxed per layer).
pub type MeshClient = BoxCloneSyncService<Request<BoxBody>, Response<BoxBody>, std::convert::Infallible>;

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
#[cfg(all(test, feature = "config"))]
mod tests;
