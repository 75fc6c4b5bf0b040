//! Istio request routing as Tower layers: VirtualService matching, weighted subsets, load
//! balancing, timeouts, retries, rewrite, redirect and mirror.
//!
//! The `policy` module is pure data: [`policy::RouteTable::compile`] builds one proxy's table
//! from a snapshot and the registry, once per config change.
//!
//! # Istio/Envoy semantics and divergences
//! - First matching route wins; no match on a host with a VirtualService is `404 NR`,
//!   never a fallback to default routing.
//! - Config-time selectors (`port`, `sourceLabels`, `sourceNamespace`, `gateways`) are applied
//!   while compiling: a route whose blocks all fall away disappears.
//! - At sidecars only the oldest VirtualService for a host is used (Istio merges only at
//!   gateways); the others are reported in `RouteTable::warnings`.
//! - Local replies use Envoy's statuses, bodies and response flags: 404 `NR`, 503 `NC`,
//!   503 `UH` (`no healthy upstream`), 503 `UF`, 503 `UO` (with `x-envoy-overloaded`),
//!   504 `UT` (`upstream request timeout`), `URX` when retries ran out.
//!
//! Divergences, chosen deliberately:
//! - `consistentHash` uses rendezvous hashing rather than Envoy's ring hash or maglev: the
//!   same properties (a key sticks to an endpoint; adding or removing one remaps about 1/N
//!   of the keys), a different assignment. `minimumRingSize`/`tableSize` are accepted.
//! - An ejected endpoint returns when its ejection time is up, not at the next `interval`
//!   scan.
//! - Request bodies are replayed for retries when their size is known and within the cap
//!   (64 KiB); a chunked body of unknown length is sent once, without retries.
//! - Mirroring copies requests without a body; others are not mirrored (logged at debug).
//! - gRPC `retryOn` conditions read `grpc-status` from response headers (trailers-only
//!   answers, which is how failing gRPC servers and proxies answer), not from trailers.
//! - `connectionPool`: `http2MaxRequests` caps active requests; `maxConnections` plus
//!   `http1MaxPendingRequests` caps them too (connections themselves are pooled by hyper).
//!
//! ```
//! # use mesh_core::{load::{LoadOptions, load_paths}, registry::{Locator, Registry}};
//! use mesh_route::layer::{TableHandle, client_stack};
//! use mesh_route::policy::{ProxyContext, RouteTable};
//! # let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/bookinfo/config/mesh");
//! # let snapshot = load_paths(&[config], &LoadOptions::default()).into_snapshot();
//! let me = ProxyContext::sidecar("default", [("app".into(), "reviews".into())].into());
//! let table = RouteTable::compile(&snapshot, &Registry::build(&snapshot, &Locator::new()), &me);
//! // Calls `http://ratings:9080/...` with Istio routing, faults, timeouts, retries and LB.
//! let client = client_stack(TableHandle::new(table));
//! # let _ = client;
//! ```

pub mod error;
pub mod layer;
pub mod policy;
