//! The whole client stack over a route table (feature `config`).

use mesh_core::BoxBody;
use tower::{ServiceBuilder, util::BoxCloneSyncService};

use super::*;

/// The client-side stack as one type: what a Rust service uses to call other services by
/// name (`http://ratings:9080/ratings/0`) with routing, fault injection, timeouts, retries
/// and load balancing, over a pooled hyper client.
pub type ClientStack<B> = ClientStackOver<HttpClient<RetryBody<B>>>;

/// The client stack over any innermost client `S`, unboxed: for a caller that erases the
/// type once at its own edge (the sidecar's outbound stack) rather than box inside a box.
pub type ClientStackOver<S> = Rescue<Router<mesh_fault::Fault<Timeout<Retry<Balance<S>>>>>>;

/// Build the client stack over `table`, boxed as a [`MeshClient`]:
///
/// ```
/// use mesh_core::BoxBody;
/// use mesh_config::{load::{LoadOptions, load_paths}, registry::{Locator, Registry}};
/// use mesh_route::{layer::*, policy::{ProxyContext, RouteTable}};
/// use tower::ServiceBuilder;
///
/// # let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/bookinfo/config/mesh");
/// let snapshot = load_paths(&[config], &LoadOptions::default()).into_snapshot();
/// let me = ProxyContext::sidecar("default", [("app".into(), "reviews".into())].into());
/// let table = TableHandle::new(RouteTable::compile(&snapshot, &Registry::build(&snapshot, &Locator::new()), &me));
///
/// let client: MeshClient = client_stack(table.clone());
/// # let _ = client;
///
/// // The same stack, layer by layer (unboxed):
/// let client: ClientStack<BoxBody> = ServiceBuilder::new()
///     .layer(RescueLayer::new())
///     .layer(RouterLayer::new(table.clone()))
///     .layer(mesh_fault::FaultLayer::per_route())
///     .layer(TimeoutLayer::per_route())
///     .layer(RetryLayer::per_route())
///     .layer(BalanceLayer::new())
///     .service(HttpClient::new());
/// # let _ = client;
/// ```
pub fn client_stack(table: TableHandle) -> MeshClient {
    let balance = BalanceLayer::new();
    let mirror: MirrorSink = BoxCloneSyncService::new(balance.layer_service(HttpClient::<BoxBody>::new()));
    let stack: ClientStack<BoxBody> = ServiceBuilder::new()
        .layer(RescueLayer::new())
        .layer(RouterLayer::new(table).with_mirror(mirror))
        .layer(mesh_fault::FaultLayer::per_route())
        .layer(TimeoutLayer::per_route())
        .layer(RetryLayer::per_route())
        .layer(balance)
        .service(HttpClient::new());
    BoxCloneSyncService::new(stack)
}

/// [`client_stack`] over another connector (e.g. mesh-mtls's `MeshConnector` for mTLS),
/// a configured balancer (auto mTLS, plaintext-only endpoints, ejection hook) and retry
/// layer (budget, retry hook). Upgrades use `connector` too: see
/// [`client_stack_with_connectors`] when it may negotiate HTTP/2.
pub fn client_stack_with<C>(table: TableHandle, connector: C, balance: BalanceLayer, retry: RetryLayer) -> MeshClient
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    client_stack_with_connectors(RouterLayer::new(table), connector.clone(), connector, balance, retry)
}

/// [`client_stack_with`] with a configured router (a gateway's listener port, default
/// scheme), and upgrade requests (WebSocket) over `upgrade`, a connector that speaks
/// HTTP/1.1 only (mesh-mtls's `MeshConnector::http1_only`).
pub fn client_stack_with_connectors<C>(
    route: RouterLayer,
    connector: C,
    upgrade: C,
    balance: BalanceLayer,
    retry: RetryLayer,
) -> MeshClient
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    BoxCloneSyncService::new(client_stack_unboxed(route, connector, upgrade, balance, retry))
}

/// [`client_stack_with_connectors`], unboxed.
pub fn client_stack_unboxed<C>(
    route: RouterLayer,
    connector: C,
    upgrade: C,
    balance: BalanceLayer,
    retry: RetryLayer,
) -> ClientStackOver<HttpClient<RetryBody<BoxBody>, C>>
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let mirror: MirrorSink =
        BoxCloneSyncService::new(balance.layer_service(HttpClient::<BoxBody, C>::with_connector(connector.clone())));
    client_stack_layers(
        route.with_mirror(mirror),
        balance,
        retry,
        HttpClient::<RetryBody<BoxBody>, C>::with_connectors(connector, upgrade),
    )
}

/// The client stack over any innermost `client` (what sends a request to the endpoint the
/// balancer chose, in absolute form): [`HttpClient`] in a proxy, an in-memory service in a
/// benchmark of the whole stack without sockets.
pub fn client_stack_over<S>(route: RouterLayer, balance: BalanceLayer, retry: RetryLayer, client: S) -> MeshClient
where
    S: tower_service::Service<http::Request<RetryBody<BoxBody>>, Response = http::Response<BoxBody>>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Error: Into<mesh_core::BoxError>,
    S::Future: Send + 'static,
{
    BoxCloneSyncService::new(client_stack_layers(route, balance, retry, client))
}

/// [`client_stack_over`], unboxed.
pub fn client_stack_layers<S>(
    route: RouterLayer,
    balance: BalanceLayer,
    retry: RetryLayer,
    client: S,
) -> ClientStackOver<S> {
    ServiceBuilder::new()
        .layer(RescueLayer::new())
        .layer(route)
        .layer(mesh_fault::FaultLayer::per_route())
        .layer(TimeoutLayer::per_route())
        .layer(retry)
        .layer(balance)
        .service(client)
}
