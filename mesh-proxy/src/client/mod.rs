//! The client stack: how a proxy (or a Rust service, embedded) calls other services by name
//! (`http://ratings:9080/ratings/0`) with routing, fault injection, timeouts, retries and
//! load balancing. mesh-route and mesh-fault provide the layers; the order they stack in is
//! written once, here, in [`ClientBuilder::over`]:
//!
//! [`Rescue`] (the edge: failures to local replies) → [`Router`] (match, decide, rewrite,
//! mirror) → [`Fault`] (delay, abort) → [`Timeout`] (the route timeout, which counts a
//! fault's delay) → [`Retry`] (tries, per-try timeout, body replay, budget) → [`Balance`]
//! (endpoint choice, outlier ejection, pool limits) → the innermost client.
//!
//! ```
//! use mesh_config::{load::{LoadOptions, load_paths}, registry::{Locator, Registry}};
//! use mesh_proxy::client::{ClientBuilder, MeshClient};
//! use mesh_route::{layer::TableHandle, policy::{ProxyContext, RouteTable}};
//!
//! # let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/bookinfo/config/mesh");
//! let snapshot = load_paths(&[config], &LoadOptions::default()).into_snapshot();
//! let me = ProxyContext::sidecar("default", [("app".into(), "reviews".into())].into());
//! let table = TableHandle::new(RouteTable::compile(&snapshot, &Registry::build(&snapshot, &Locator::new()), &me));
//!
//! // Over pooled plaintext connections, boxed once:
//! let client: MeshClient = MeshClient::new(ClientBuilder::new(table).http());
//! # let _ = client;
//! ```

use std::convert::Infallible;

use http::{Request, Response};
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use mesh_core::BoxBody;
use mesh_fault::{Fault, FaultLayer};
use mesh_route::layer::{
    Balance, BalanceLayer, MirrorSink, Retry, RetryBody, RetryLayer, Router, RouterLayer, TableHandle, Timeout,
    TimeoutLayer,
};
use tower::{ServiceBuilder, util::BoxCloneSyncService};

use crate::edge::{Rescue, RescueLayer};

mod pool;

pub use pool::HttpClient;

/// The client stack over the innermost client `S`, unboxed: for a caller that erases the type
/// once at its own edge (the sidecar's outbound stack) rather than box inside a box.
pub type ClientStack<S> = Rescue<Router<Fault<Timeout<Retry<Balance<S>>>>>>;

/// The client stack over pooled connections made by `C`.
pub type HttpClientStack<C = HttpConnector> = ClientStack<HttpClient<RetryBody<BoxBody>, C>>;

/// A boxed client stack: never fails (failures are local replies, as at a sidecar).
pub type MeshClient = BoxCloneSyncService<Request<BoxBody>, Response<BoxBody>, Infallible>;

/// Builds the client stack: the router over one proxy's route table, the balancer and the
/// retry layer as configured (by default: a fresh balancer, retries per route).
#[derive(Clone, Debug)]
pub struct ClientBuilder {
    route: RouterLayer,
    fault: FaultLayer,
    balance: BalanceLayer,
    retry: RetryLayer,
}

impl ClientBuilder {
    /// Routing over `table`, a fresh balancer, retries per route.
    pub fn new(table: TableHandle) -> Self {
        Self::with_router(RouterLayer::new(table))
    }

    /// A configured router (a gateway's listener port, a default scheme).
    pub fn with_router(route: RouterLayer) -> Self {
        Self { route, fault: FaultLayer::per_route(), balance: BalanceLayer::new(), retry: RetryLayer::per_route() }
    }

    /// A configured balancer (auto mTLS, plaintext-only endpoints, an ejection hook); its
    /// state is shared by every stack built with a clone of it.
    #[must_use]
    pub fn balance(mut self, balance: BalanceLayer) -> Self {
        self.balance = balance;
        self
    }

    /// A configured fault layer (seeded randomness, for tests).
    #[must_use]
    pub fn fault(mut self, fault: FaultLayer) -> Self {
        self.fault = fault;
        self
    }

    /// A configured retry layer (a budget, a retry hook).
    #[must_use]
    pub fn retry(mut self, retry: RetryLayer) -> Self {
        self.retry = retry;
        self
    }

    /// Over pooled plaintext connections (a 10 s connect timeout, as Istio's default).
    pub fn http(self) -> HttpClientStack {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(std::time::Duration::from_secs(10)));
        connector.set_nodelay(true);
        self.connect(connector.clone(), connector)
    }

    /// Over pooled connections made by `connector` (mesh-mtls's `MeshConnector` for mTLS);
    /// upgrade requests (WebSocket) over `upgrade`, a connector that speaks HTTP/1.1 only
    /// (`MeshConnector::http1_only`). Mirrored requests go over `connector` too.
    pub fn connect<C>(self, connector: C, upgrade: C) -> HttpClientStack<C>
    where
        C: Connect + Clone + Send + Sync + 'static,
    {
        let mirror: MirrorSink = BoxCloneSyncService::new(
            self.balance.layer_service(HttpClient::<BoxBody, C>::with_connector(connector.clone())),
        );
        Self { route: self.route.with_mirror(mirror), ..self }.over(HttpClient::with_connectors(connector, upgrade))
    }

    /// Over any innermost `client` (what sends a request to the endpoint the balancer chose,
    /// in absolute form): an in-memory service in a benchmark of the whole stack without
    /// sockets, a test double. Requests are mirrored only where the router was given a sink.
    pub fn over<S>(self, client: S) -> ClientStack<S> {
        ServiceBuilder::new()
            .layer(RescueLayer::new())
            .layer(self.route)
            .layer(self.fault)
            .layer(TimeoutLayer::per_route())
            .layer(self.retry)
            .layer(self.balance)
            .service(client)
    }
}
