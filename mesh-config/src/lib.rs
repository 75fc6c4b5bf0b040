//! The Istio and Gateway API config model exactly as users write it (`api`), its loader and
//! validator (`load`, `validate`, with file:line:field [`Diagnostic`]s), the immutable indexed
//! [`Snapshot`], the [`ConfigSource`] that publishes snapshots (a watched directory here;
//! a cluster's API server in `mesh-k8s`), the service [`registry`](crate::registry) and the
//! config directory used as kubectl uses an API server ([`store`](crate::store)).
//!
//! Without the default feature `load`, mesh-config is the model only (`api`: serde structs,
//! serde and serde_json): for a layer built from typed specs in code, with no YAML parser,
//! regex engine or file watcher.
//!
//! Feature crates compile what they need from a snapshot into their own runtime policy, once
//! per snapshot, never per request.
//!
//! ```
//! use mesh_config::load::{load_paths, LoadOptions};
//!
//! let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/bookinfo/config");
//! let paths = [config.join("mesh"), config.join("tutorial/networking/virtual-service-all-v1.yaml")];
//! let loaded = load_paths(&paths, &LoadOptions::default());
//! assert!(!loaded.has_errors(), "{}", loaded.report());
//! let snapshot = loaded.into_snapshot();
//! assert!(snapshot.virtual_services_for_host("productpage.default.svc.cluster.local").next().is_some());
//! ```
//!
//! # Istio semantics and divergences
//! - Validation follows Istio's webhook and `istioctl analyze` (see `validate`); unknown
//!   fields in an Istio `spec` are errors, where Kubernetes would prune them silently.
//! - Regexes are compiled with the Rust `regex` crate, whose syntax is RE2's minus a few
//!   rarely used escapes; both reject lookaround and backreferences.

// Always: the resource types.
pub mod api;

// The machinery (feature `load`, on by default).
#[cfg(feature = "load")]
pub mod diag;
#[cfg(feature = "load")]
pub mod load;
#[cfg(feature = "load")]
pub mod registry;
#[cfg(feature = "load")]
pub mod snapshot;
#[cfg(feature = "load")]
pub mod source;
#[cfg(feature = "load")]
pub mod store;
#[cfg(feature = "load")]
pub mod string_match;
#[cfg(any(test, feature = "test-util"))]
pub mod test_util;
#[cfg(feature = "load")]
pub mod validate;

#[cfg(feature = "load")]
pub use diag::{Diagnostic, Severity};
#[cfg(feature = "load")]
pub use snapshot::Snapshot;
#[cfg(feature = "load")]
pub use source::{ConfigSource, DirectorySource, SourceStatus};

/// Istio's root namespace: mesh-wide policies live here.
pub const ROOT_NAMESPACE: &str = "istio-system";
