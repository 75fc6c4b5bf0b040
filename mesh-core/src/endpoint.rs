//! The endpoint a request goes to, as layers carry it in extensions (always built: the
//! registry fills it from config, a layer used alone from its own list).

use std::{net::SocketAddr, sync::Arc};

use crate::{Identity, Labels};

/// One endpoint of a service. Cheap to clone (shared strings), so layers can carry the
/// chosen endpoint in extensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Where to connect.
    pub address: SocketAddr,
    /// Labels (subsets select on these).
    pub labels: Arc<Labels>,
    /// The workload (Deployment or WorkloadEntry) name.
    pub workload: Arc<str>,
    /// Its namespace.
    pub namespace: Arc<str>,
    /// Its SPIFFE identity (its service account in the trust domain), when it has one: a
    /// sidecar or an embedded mesh serves it, so it is reached over mTLS.
    pub identity: Option<Identity>,
    /// Load-balancing weight (WorkloadEntry `weight`; 1 otherwise).
    pub weight: u32,
}
