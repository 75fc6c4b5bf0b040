//! Where a route's destination points: a resolved cluster, or a name that resolves to none.

use std::sync::Arc;

use super::cluster::Cluster;

/// Where a destination points.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    /// A cluster with its endpoints and policy.
    Cluster(Arc<Cluster>),
    /// A destination that names no known cluster (undefined subset, unknown host): 503 NC.
    Missing {
        /// Envoy cluster name it would have had.
        name: Arc<str>,
        /// FQDN.
        host: Arc<str>,
        /// Subset.
        subset: Option<Arc<str>>,
        /// Port, when known.
        port: Option<u16>,
    },
}

impl Target {
    /// The Envoy cluster name.
    pub fn name(&self) -> &str {
        match self {
            Target::Cluster(c) => &c.name,
            Target::Missing { name, .. } => name,
        }
    }

    /// Host and subset as the shared strings the target holds (no copy), and port.
    pub fn shared_parts(&self) -> (Arc<str>, Option<Arc<str>>, Option<u16>) {
        match self {
            Target::Cluster(c) => (c.service.clone(), c.subset.clone(), Some(c.port)),
            Target::Missing { host, subset, port, .. } => (host.clone(), subset.clone(), *port),
        }
    }

    /// Host, subset and port.
    pub fn parts(&self) -> (&str, Option<&str>, Option<u16>) {
        match self {
            Target::Cluster(c) => (&c.service, c.subset.as_deref(), Some(c.port)),
            Target::Missing { host, subset, port, .. } => (host, subset.as_deref(), *port),
        }
    }
}
