//! Routing policy: pure data and matching, no tower.
//!
//! With the feature `config`, [`RouteTable::compile`] turns a `Snapshot` and a `Registry`
//! into the immutable table one proxy uses (a sidecar of a workload, or a named gateway).
//! Config-time selectors are applied there; nothing is compiled per request. Always built:
//! the policies the layers read ([`cluster::Cluster`], [`retry::RetryPolicy`], [`Target`]),
//! so the timeout, retry and balance layers work alone with a fixed policy.

pub mod cluster;
pub mod retry;
mod target;
pub mod weights;

#[cfg(feature = "config")]
pub mod action;
#[cfg(feature = "config")]
pub mod explain;
#[cfg(feature = "config")]
pub mod matching;
#[cfg(feature = "config")]
pub mod rules;
#[cfg(feature = "config")]
mod table;
#[cfg(all(test, feature = "config"))]
mod tests;

#[cfg(feature = "config")]
pub use table::*;
pub use target::Target;
