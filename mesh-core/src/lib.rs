//! The request path's shared types, the floor every mesh layer stands on: the boxed body
//! and local-reply bodies, the error helpers and the typed leaf errors ([`error`]), every
//! local reply the mesh makes and the one map from a failure to its reply ([`reply`]), what
//! crosses layers in request and response extensions ([`ext`]), the SPIFFE [`Identity`],
//! endpoints, request helpers (authority, host resolution, gRPC detection), the gRPC status
//! codes ([`grpc`]), one hasher, the randomness seam ([`roll`]), durations, and the CEL
//! subset Telemetry filters are written in.
//!
//! It holds no config machinery: the Istio and Gateway API model, its loader, validation,
//! snapshots and sources are `mesh-config`, the Kubernetes source `mesh-k8s`. So a layer
//! used alone with a fixed policy depends on this crate and never on a YAML parser, regex
//! engine, file watcher or kube-rs. mesh-core knows nothing of tower or hyper.
//!
//! ```
//! use mesh_core::{Identity, request::resolve_host};
//!
//! let id: Identity = "spiffe://cluster.local/ns/default/sa/bookinfo-reviews".parse().unwrap();
//! assert_eq!(id.service_account(), "bookinfo-reviews");
//! assert_eq!(resolve_host("Reviews", "default"), "reviews.default.svc.cluster.local");
//! ```

pub mod base64;
pub mod body;
pub mod cel;
pub mod cidr;
pub mod duration;
pub mod endpoint;
pub mod error;
pub mod ext;
pub mod grpc;
pub mod hash;
pub mod identity;
pub mod reply;
pub mod request;
pub mod roll;
#[cfg(any(test, feature = "test-util"))]
pub mod test_util;

/// A label map (`matchLabels`, `labels`, a workload's pod labels).
pub type Labels = std::collections::BTreeMap<String, String>;

pub use body::BoxBody;
pub use duration::Duration;
pub use error::{BoxError, Error, cause_ref, is_caused_by};
pub use identity::Identity;

/// The Kubernetes cluster domain suffix used to resolve short host names.
pub const DEFAULT_DOMAIN_SUFFIX: &str = "cluster.local";
/// Istio's default SPIFFE trust domain.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";
