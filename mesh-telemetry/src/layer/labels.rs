//! The label sets: what identifies one cheaply (the cache key), and the memo of the one
//! this thread resolved last.

use std::sync::{Arc, Weak};

use crate::metrics::CacheEntry;

use super::*;

/// What identifies a label set cheaply: stored with shared strings, looked up with borrowed
/// ones (both hash alike), so a hit neither allocates nor touches a reference count.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub(super) struct Key<S> {
    /// The caller's metadata header.
    pub(super) peer: Option<S>,
    /// The caller's mTLS identity (trust domain, namespace, service account).
    pub(super) principal: Option<(S, S, S)>,
    pub(super) workload: Option<(S, S)>,
    pub(super) service: Option<S>,
    pub(super) code: u16,
    pub(super) flags: u32,
    pub(super) grpc: Option<u16>,
    pub(super) grpc_protocol: bool,
}

impl Key<&str> {
    pub(super) fn to_owned(&self) -> Key<Arc<str>> {
        Key {
            peer: self.peer.map(Arc::from),
            principal: self.principal.map(|(t, n, s)| (Arc::from(t), Arc::from(n), Arc::from(s))),
            workload: self.workload.map(|(w, n)| (Arc::from(w), Arc::from(n))),
            service: self.service.map(Arc::from),
            code: self.code,
            flags: self.flags,
            grpc: self.grpc,
            grpc_protocol: self.grpc_protocol,
        }
    }
}

impl hashbrown::Equivalent<Key<Arc<str>>> for Key<&str> {
    fn equivalent(&self, k: &Key<Arc<str>>) -> bool {
        self.peer == k.peer.as_deref()
            && self.principal == k.principal.as_ref().map(|(t, n, s)| (&**t, &**n, &**s))
            && self.workload == k.workload.as_ref().map(|(w, n)| (&**w, &**n))
            && self.service == k.service.as_deref()
            && (self.code, self.flags, self.grpc, self.grpc_protocol) == (k.code, k.flags, k.grpc, k.grpc_protocol)
    }
}

/// A resolved label set as the cache stores it.
pub(super) type Resolved = Arc<CacheEntry<Key<Arc<str>>>>;

thread_local! {
    /// The label set this thread resolved last, and the layer it belongs to: consecutive
    /// requests with the same labels skip the cache's hashing. The `Weak` keeps the layer's
    /// allocation, so its address cannot be reused by another layer while it is held.
    pub(super) static LAST: std::cell::RefCell<Option<(Weak<Shared>, Resolved)>> =
        const { std::cell::RefCell::new(None) };
}
