//! Istio request routing as Tower layers: VirtualService matching, weighted subsets, load
//! balancing, timeouts, retries, rewrite, redirect and mirror.
//!
//! The `policy` module is pure data, compiled once per config change; the `layer` module
//! holds the Tower layers that read it.
//!
//! # Istio/Envoy semantics and divergences
//! - First matching route wins; no match on a host with a VirtualService is `404 NR`,
//!   never a fallback to default routing.
//! - Config-time selectors (`port`, `sourceLabels`, `sourceNamespace`, `gateways`) are applied
//!   while compiling: a route whose blocks all fall away disappears.
//! - At sidecars only the oldest VirtualService for a host is used (Istio merges only at
//!   gateways); the others are reported in `RouteTable::warnings`.
//! - Failures are answered (by the edge, `mesh_core::reply`) with Envoy's statuses, bodies
//!   and response flags: 404 `NR`, 503 `NC`,
//!   503 `UH` (`no healthy upstream`), 503 `UF`, 503 `UO` (with `x-envoy-overloaded`),
//!   504 `UT` (`upstream request timeout`), `URX` when retries ran out.
//!
//! Divergences, chosen deliberately:
//! - `consistentHash` uses rendezvous hashing rather than Envoy's ring hash or maglev: the
//!   same properties (a key sticks to an endpoint; adding or removing one remaps about 1/N
//!   of the keys), a different assignment. `minimumRingSize`/`tableSize` are accepted.
//! - An ejected endpoint returns when its ejection time is up, not at the next `interval`
//!   scan.
//! - Request bodies stream to the first try while a copy is kept, up to the cap (64 KiB, as
//!   Envoy's per-request buffer limit); past it, or when an earlier try's connection still
//!   holds the body, the request is not retried and the last answer stands.
//! - Mirroring copies requests without a body; others are not mirrored (logged at debug).
//! - gRPC `retryOn` conditions read `grpc-status` from response headers (trailers-only
//!   answers, which is how failing gRPC servers and proxies answer), not from trailers.
//! - `connectionPool`: `http2MaxRequests` caps active requests; `maxConnections` plus
//!   `http1MaxPendingRequests` caps them too (connections themselves are pooled by hyper).
//!
//! # Used alone
//! Without the default feature `config` (no YAML parser, regex engine, file watcher or
//! kube-rs), the layers take a fixed policy and wrap any `Service<Request<B>>`: a route
//! timeout, Istio's retries and a balancer over a fixed list of endpoints, here over a
//! client that answers with the address it was sent to:
//!
//! ```
//! # use std::{convert::Infallible, sync::Arc, time::Duration};
//! use mesh_route::layer::{BalanceLayer, RetryLayer, TimeoutLayer};
//! use mesh_route::policy::{cluster::{Cluster, LbPolicy}, retry::RetryPolicy};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let ratings = Cluster::from_addresses("ratings", ["127.0.0.1:9081".parse().unwrap()], LbPolicy::RoundRobin);
//! let client = ServiceBuilder::new()
//!     .layer(TimeoutLayer::new(Duration::from_secs(2)))
//!     .layer(RetryLayer::new(RetryPolicy::istio_default()))
//!     .layer(BalanceLayer::new().with_cluster(Arc::new(ratings)))
//!     .service_fn(|req: http::Request<_>| async move {
//!         Ok::<_, Infallible>(http::Response::new(req.uri().authority().unwrap().to_string()))
//!     });
//! let req = http::Request::new(http_body_util::Empty::<bytes::Bytes>::new());
//! assert_eq!(client.oneshot(req).await.unwrap().into_body(), "127.0.0.1:9081");
//! # }
//! ```
//!
//! # From Istio config
//! With `config`, [`policy::RouteTable::compile`] builds one proxy's table from a snapshot and
//! the registry, and [`layer::RouterLayer`] routes by it. The whole client stack that calls
//! services by name (`http://ratings:9080/...`: routing, faults, timeouts, retries, load
//! balancing) is composed in `mesh-proxy` (`mesh_proxy::client::ClientBuilder`), as is the
//! edge that answers failures: these layers fail with the typed leaf errors of
//! `mesh_core::error`, which `mesh_core::reply::LocalReply::for_error` maps to Envoy's
//! local replies.

pub mod layer;
pub mod policy;
