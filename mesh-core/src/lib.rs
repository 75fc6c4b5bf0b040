//! The floor every mesh layer stands on: the Istio config model exactly as users write it
//! (`api`), its loader and validator (`load`, `validate`), the immutable indexed
//! [`Snapshot`], the [`ConfigSource`] that publishes snapshots (a watched directory, or with the feature
//! `k8s` a cluster's API server), and the small types that cross feature crates through request
//! extensions ([`Identity`], the boxed body, the error helpers).
//!
//! Without the default feature `config`, mesh-core is only the request-path types (the boxed
//! body, errors, extensions, [`Identity`], request helpers): no YAML parser, regex engine or
//! file watcher, for a layer used alone with a fixed policy. The feature `model` adds the
//! Istio resource types (`api`, serde structs) without the loader, for a layer built from
//! typed specs in code.
//!
//! mesh-core knows nothing of tower or hyper. Feature crates compile what they need from a
//! snapshot into their own runtime policy, once per snapshot, never per request.
//!
//! ```
//! use mesh_core::load::{load_paths, LoadOptions};
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

// Always: the types that cross layers on the request path.
pub mod base64;
pub mod body;
pub mod cel;
pub mod duration;
pub mod endpoint;
pub mod error;
pub mod ext;
pub mod grpc;
pub mod hash;
pub mod identity;
pub mod request;
#[cfg(any(test, feature = "test-util"))]
pub mod test_util;

// The config model and its machinery (feature `config`, on by default).
#[cfg(feature = "model")]
pub mod api;
#[cfg(feature = "config")]
pub mod diag;
#[cfg(feature = "k8s")]
pub mod k8s;
#[cfg(feature = "config")]
pub mod load;
#[cfg(feature = "config")]
pub mod registry;
#[cfg(feature = "config")]
pub mod snapshot;
#[cfg(feature = "config")]
pub mod source;
#[cfg(feature = "config")]
pub mod store;
#[cfg(feature = "config")]
pub mod string_match;
#[cfg(feature = "config")]
pub mod validate;

/// A label map (`matchLabels`, `labels`, a workload's pod labels).
pub type Labels = std::collections::BTreeMap<String, String>;

pub use body::BoxBody;
#[cfg(feature = "config")]
pub use diag::{Diagnostic, Severity};
pub use duration::Duration;
pub use error::{BoxError, Error, cause_ref, is_caused_by};
pub use identity::Identity;
#[cfg(feature = "config")]
pub use snapshot::Snapshot;
#[cfg(feature = "config")]
pub use source::{ConfigSource, DirectorySource, SourceStatus};

/// The Kubernetes cluster domain suffix used to resolve short host names.
pub const DEFAULT_DOMAIN_SUFFIX: &str = "cluster.local";
/// Istio's default SPIFFE trust domain.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";
/// Istio's root namespace: mesh-wide policies live here.
pub const ROOT_NAMESPACE: &str = "istio-system";
