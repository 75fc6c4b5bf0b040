//! The immutable, indexed set of every resource in force, shared behind an `Arc`.
//!
//! Built once per config change; feature crates compile their runtime policy from it.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use crate::api::{Kind, Labels, Resource};

/// Identifies a resource: kind, namespace, name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceKey {
    /// Kind.
    pub kind: Kind,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ResourceKey {
    /// The key of a resource.
    pub fn of(r: &Resource) -> Self {
        let m = r.meta();
        Self { kind: r.kind(), namespace: m.namespace.clone(), name: m.name.clone() }
    }
}

impl std::fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

pub use mesh_core::request::{host_matches, resolve_host};

pub use crate::api::labels_match;

/// Every resource in force, indexed.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    resources: BTreeMap<ResourceKey, Arc<Resource>>,
    /// Resolved host (possibly a wildcard) to VirtualServices naming it.
    vs_by_host: HashMap<String, Vec<ResourceKey>>,
    /// Resolved host (possibly a wildcard) to DestinationRules for it.
    dr_by_host: HashMap<String, Vec<ResourceKey>>,
    /// (kind, namespace) to resources, for namespace-scoped lookups.
    by_namespace: HashMap<(Kind, String), Vec<ResourceKey>>,
}

impl PartialEq for Snapshot {
    fn eq(&self, other: &Self) -> bool {
        self.resources == other.resources
    }
}

impl Snapshot {
    /// Index `resources`; a later resource with the same key replaces an earlier one.
    pub fn new(resources: impl IntoIterator<Item = Arc<Resource>>) -> Self {
        let mut s = Self::default();
        for r in resources {
            s.resources.insert(ResourceKey::of(&r), r);
        }
        for (key, r) in &s.resources {
            s.by_namespace.entry((key.kind, key.namespace.clone())).or_default().push(key.clone());
            match &**r {
                Resource::VirtualService(vs) => {
                    for h in &vs.spec.hosts {
                        s.vs_by_host.entry(resolve_host(h, &key.namespace)).or_default().push(key.clone());
                    }
                }
                Resource::DestinationRule(dr) => {
                    s.dr_by_host.entry(resolve_host(&dr.spec.host, &key.namespace)).or_default().push(key.clone());
                }
                _ => {}
            }
        }
        s
    }

    /// Number of resources.
    pub fn len(&self) -> usize {
        self.resources.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.resources.is_empty()
    }

    /// One resource.
    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<&Arc<Resource>> {
        self.resources.get(&ResourceKey { kind, namespace: namespace.into(), name: name.into() })
    }

    /// The content's fingerprint: 16 hex digits of FNV-1a over every resource (key and
    /// JSON), in key order. Two snapshots with the same resources have the same version
    /// in every process and build, so a proxy's version can be compared with what a
    /// config directory holds now (`meshctl proxy-status`); as Istio's config hash, it
    /// says nothing of which is newer.
    pub fn version(&self) -> String {
        const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const PRIME: u64 = 0x0100_0000_01b3;
        let mut h = OFFSET;
        let mut feed = |bytes: &[u8]| {
            for b in bytes {
                h = (h ^ u64::from(*b)).wrapping_mul(PRIME);
            }
        };
        for (key, r) in &self.resources {
            feed(format!("{:?}\0{}\0{}\0", key.kind, key.namespace, key.name).as_bytes());
            // Serialising the model cannot fail (no maps with non-string keys).
            feed(serde_json::to_string(&**r).unwrap_or_default().as_bytes());
            feed(b"\n");
        }
        format!("{h:016x}")
    }

    /// Every resource, ordered by kind, namespace, name.
    pub fn iter(&self) -> impl Iterator<Item = (&ResourceKey, &Arc<Resource>)> {
        self.resources.iter()
    }

    /// Every resource of a kind.
    pub fn of_kind(&self, kind: Kind) -> impl Iterator<Item = &Arc<Resource>> {
        self.resources.iter().filter(move |(k, _)| k.kind == kind).map(|(_, r)| r)
    }

    /// The Sidecar resource of a workload in `namespace` with `labels`, as Istio picks it:
    /// the oldest in its namespace whose `workloadSelector` matches, else the oldest there
    /// without a selector, else the oldest without one in `root_namespace`.
    pub fn sidecar_for(
        &self,
        namespace: &str,
        labels: &Labels,
        root_namespace: &str,
    ) -> Option<&crate::api::SidecarSpec> {
        let pick = |ns: &str, selected: bool| {
            self.in_namespace(Kind::Sidecar, ns)
                .filter_map(|r| match &**r {
                    Resource::Sidecar(o) => Some(o),
                    _ => None,
                })
                .filter(|o| match &o.spec.workload_selector {
                    Some(s) => selected && labels_match(&s.labels, labels),
                    None => !selected,
                })
                .min_by(|a, b| {
                    (a.metadata.creation_timestamp.is_none(), &a.metadata.creation_timestamp, &a.metadata.name).cmp(&(
                        b.metadata.creation_timestamp.is_none(),
                        &b.metadata.creation_timestamp,
                        &b.metadata.name,
                    ))
                })
        };
        pick(namespace, true)
            .or_else(|| pick(namespace, false))
            .or_else(|| pick(root_namespace, false))
            .map(|o| &o.spec)
    }

    /// Resources of a kind in one namespace.
    pub fn in_namespace<'a>(&'a self, kind: Kind, namespace: &str) -> impl Iterator<Item = &'a Arc<Resource>> + 'a {
        self.by_namespace
            .get(&(kind, namespace.to_string()))
            .into_iter()
            .flatten()
            .filter_map(|k| self.resources.get(k))
    }

    /// VirtualServices whose `hosts` name exactly this (resolved) host.
    pub fn virtual_services_for_host<'a>(&'a self, host: &str) -> impl Iterator<Item = &'a Arc<Resource>> + 'a {
        self.vs_by_host.get(host).into_iter().flatten().filter_map(|k| self.resources.get(k))
    }

    /// DestinationRules for a resolved host: exact host first, then wildcards covering it.
    pub fn destination_rules_for_host<'a>(&'a self, host: &str) -> impl Iterator<Item = &'a Arc<Resource>> + 'a {
        let exact = self.dr_by_host.get(host).into_iter().flatten();
        let host = host.to_string();
        let wild = self
            .dr_by_host
            .iter()
            .filter(move |(pattern, _)| pattern.starts_with('*') && host_matches(pattern, &host))
            .flat_map(|(_, keys)| keys);
        exact.chain(wild).filter_map(|k| self.resources.get(k))
    }

    /// Policies of `kind` (PeerAuthentication, AuthorizationPolicy, RequestAuthentication)
    /// whose scope covers a workload in `namespace` with `labels`: those of the root
    /// namespace and of the workload's namespace, without a selector or with a matching one.
    /// (Scope rules that differ by kind, such as PeerAuthentication ignoring selector
    /// policies in the root namespace, are the feature crate's to apply.)
    pub fn policies_for_workload<'a>(
        &'a self,
        kind: Kind,
        namespace: &'a str,
        labels: &'a Labels,
    ) -> impl Iterator<Item = &'a Arc<Resource>> + 'a {
        let root = self.in_namespace(kind, crate::ROOT_NAMESPACE);
        let own = (namespace != crate::ROOT_NAMESPACE).then(|| self.in_namespace(kind, namespace));
        root.chain(own.into_iter().flatten()).filter(move |r| match policy_selector(r) {
            None => true,
            Some(sel) => labels_match(sel, labels),
        })
    }
}

impl Snapshot {
    /// Whether a ReferenceGrant in `to_ns` lets a Gateway API `from_kind` in `from_ns` refer
    /// to the core-group `to_kind` (Service, Secret) named `to_name`.
    pub fn reference_granted(&self, from_kind: &str, from_ns: &str, to_ns: &str, to_kind: &str, to_name: &str) -> bool {
        self.in_namespace(Kind::ReferenceGrant, to_ns).any(|r| match &**r {
            Resource::ReferenceGrant(g) => g.spec.allows(from_kind, from_ns, to_kind, to_name),
            _ => false,
        })
    }

    /// A namespace's labels, as a Namespace object gives them, always with
    /// `kubernetes.io/metadata.name` (Kubernetes sets it on every namespace, and it cannot be
    /// changed), so that a namespace with no Namespace object can still be selected by name.
    pub fn namespace_labels(&self, namespace: &str) -> Labels {
        let mut labels = self
            .of_kind(Kind::Namespace)
            .find_map(|r| match &**r {
                Resource::Namespace(n) if n.metadata.name == namespace => Some(n.metadata.labels.clone()),
                _ => None,
            })
            .unwrap_or_default();
        labels.insert("kubernetes.io/metadata.name".into(), namespace.into());
        labels
    }
}

fn policy_selector(r: &Resource) -> Option<&Labels> {
    match r {
        Resource::PeerAuthentication(o) => o.spec.selector.as_ref().map(|s| &s.match_labels),
        Resource::AuthorizationPolicy(o) => o.spec.selector.as_ref().map(|s| &s.match_labels),
        Resource::RequestAuthentication(o) => o.spec.selector.as_ref().map(|s| &s.match_labels),
        Resource::Telemetry(o) => o.spec.selector.as_ref().map(|s| &s.match_labels),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_follows_the_content_not_the_order_of_the_files() {
        use crate::test_util::Manifest;
        let a = Manifest::new().service("reviews", 9080).service("ratings", 9080).snapshot();
        let b = Manifest::new().service("ratings", 9080).service("reviews", 9080).snapshot();
        let c = Manifest::new().service("reviews", 9080).service("ratings", 9081).snapshot();
        assert_eq!(a.version(), b.version());
        assert_ne!(a.version(), c.version());
        assert_eq!(a.version().len(), 16);
        assert!(a.version().bytes().all(|b| b.is_ascii_hexdigit()));
        // Pinned: `meshctl proxy-status` compares versions across processes and builds.
        assert_eq!(Snapshot::default().version(), "cbf29ce484222325");
    }

    #[test]
    fn host_resolution() {
        assert_eq!(resolve_host("reviews", "default"), "reviews.default.svc.cluster.local");
        assert_eq!(resolve_host("Reviews", "prod"), "reviews.prod.svc.cluster.local");
        assert_eq!(resolve_host("www.googleapis.com", "default"), "www.googleapis.com");
        assert_eq!(resolve_host("*", "default"), "*");
        assert!(host_matches("*.example.com", "dev.example.com"));
        assert!(!host_matches("*.example.com", "example.com"));
        assert!(host_matches("*", "anything"));
        assert!(!host_matches("a.com", "b.com"));
    }
}
