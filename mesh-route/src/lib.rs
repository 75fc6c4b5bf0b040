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

pub mod error;
pub mod layer;
pub mod policy;
