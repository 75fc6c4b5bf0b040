//! `mesh-proxy`: the mesh's layers composed into a proxy, as a library.
//!
//! The feature crates (`mesh-route`, `mesh-fault`, `mesh-authz`, `mesh-mtls`,
//! `mesh-telemetry`) each give one layer and fail with typed leaf errors; this crate knows the
//! whole topology: the client stack ([`client::ClientBuilder`], the layer order written once,
//! over the pooled [`client::HttpClient`]), the edge that answers failures once per stack
//! ([`edge`], with `mesh_core::reply`'s local replies), the outbound, inbound and gateway
//! stacks, the edge guard, the connection limits, the accept loops, the workload's compiled
//! control state and the admin pages. Two faces:
//!
//! - [`embed`]: the mesh linked into a Rust service, with no proxy hop.
//! - [`sidecar`]: the `mesh-sidecar` process beside any app, configured by [`sidecar::Args`]
//!   (its pinned command line with the feature `cli`); `examples/sidecar` is its `main`.
//!
//! ```text
//! mesh-sidecar --config PATH... --outbound ADDR [--inbound ADDR --app ADDR] [--admin ADDR]
//!              [--namespace NS --workload-labels k=v,... --service-account SA]
//! ```
//!
//! Outbound: the app's plain HTTP requests (origin or absolute form) are routed by the
//! VirtualServices and DestinationRules in force, over mTLS to the destination's sidecar.
//! Inbound: mTLS per PeerAuthentication, JWT, authorization, then the app. Admin: Envoy's
//! pages. Config is watched; SIGTERM drains.

mod admin;
mod assertions;
pub mod capture;
mod cli;
pub mod client;
mod compiled;
pub mod config;
pub mod conn;
pub mod edge;
pub mod embed;
mod error;
mod framing;
mod gateway;
pub mod guard;
mod inbound;
pub mod outbound;
mod serve;
pub mod sidecar;
mod state;
mod tcp;
mod workers;

pub use cli::{InvalidArg, parse_endpoint};
pub use error::MeshError;
pub use gateway::GatewayError;
pub use mesh_core::{BoxBody, BoxError};
