//! PeerAuthentication: which mTLS mode a workload's inbound port uses (ISTIO-SEMANTICS §5.2).

use std::collections::BTreeMap;

#[cfg(feature = "config")]
use mesh_config::{
    Snapshot,
    api::{Kind, Labels, MtlsMode, MutualTls, ObjectMeta, PeerAuthenticationSpec, Resource},
    snapshot::labels_match,
};

/// The mode in force on a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// mTLS only; plaintext connections are refused.
    Strict,
    /// mTLS and plaintext on the same port, detected per connection.
    Permissive,
    /// Plaintext only.
    Disable,
}

/// The compiled PeerAuthentication of one workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerAuthn {
    workload: Mode,
    ports: BTreeMap<u16, Mode>,
    /// The policies that decided, narrowest first, for explanations.
    pub sources: Vec<String>,
}

#[cfg(feature = "config")]
fn mode_of(m: Option<&MutualTls>) -> Option<Mode> {
    match m.and_then(|m| m.mode) {
        Some(MtlsMode::Strict) => Some(Mode::Strict),
        Some(MtlsMode::Permissive) => Some(Mode::Permissive),
        Some(MtlsMode::Disable) => Some(Mode::Disable),
        Some(MtlsMode::Unset) | None => None,
    }
}

impl PeerAuthn {
    /// One mode on every port (a workload configured in code, not by PeerAuthentication).
    pub fn uniform(mode: Mode) -> Self {
        Self { workload: mode, ports: BTreeMap::new(), sources: Vec::new() }
    }

    /// The modes for a workload in `namespace` with `labels`: the narrowest scope wins
    /// (workload selector, then namespace, then mesh-wide in the root namespace), the oldest
    /// policy among equals, UNSET inherits, and no policy at all means PERMISSIVE.
    /// Selector policies in the root namespace are ignored.
    #[cfg(feature = "config")]
    pub fn compile(snapshot: &Snapshot, namespace: &str, labels: &Labels) -> Self {
        let root = mesh_config::ROOT_NAMESPACE;
        let mut all: Vec<(&ObjectMeta, &PeerAuthenticationSpec)> = snapshot
            .of_kind(Kind::PeerAuthentication)
            .filter_map(|r| match &**r {
                Resource::PeerAuthentication(pa) => Some((&pa.metadata, &pa.spec)),
                _ => None,
            })
            .collect();
        all.sort_by(|a, b| (&a.0.creation_timestamp, &a.0.name).cmp(&(&b.0.creation_timestamp, &b.0.name)));
        let mesh = all.iter().find(|(m, s)| m.namespace == root && s.selector.is_none());
        let ns = all.iter().find(|(m, s)| m.namespace == namespace && namespace != root && s.selector.is_none());
        let workload = all.iter().find(|(m, s)| {
            m.namespace == namespace
                && namespace != root
                && s.selector.as_ref().is_some_and(|sel| labels_match(&sel.match_labels, labels))
        });
        let mut sources = Vec::new();
        let mut mode = Mode::Permissive;
        for (level, p) in [("mesh", mesh), ("namespace", ns), ("workload", workload)] {
            if let Some((meta, spec)) = p
                && let Some(m) = mode_of(spec.mtls.as_ref())
            {
                mode = m;
                sources.insert(0, format!("{level}: {}/{}", meta.namespace, meta.name));
            }
        }
        let ports = workload
            .map(|(_, spec)| {
                spec.port_level_mtls
                    .iter()
                    .filter_map(|(port, m)| Some((u16::try_from(*port).ok()?, mode_of(Some(m)).unwrap_or(mode))))
                    .collect()
            })
            .unwrap_or_default();
        Self { workload: mode, ports, sources }
    }

    /// The mode on a workload (container) port.
    pub fn mode(&self, port: u16) -> Mode {
        self.ports.get(&port).copied().unwrap_or(self.workload)
    }
}

/// Endpoints whose workload accepts plaintext only (PeerAuthentication DISABLE on the
/// endpoint's port): auto mTLS sends them plaintext, as Istio does.
#[cfg(feature = "config")]
pub fn plaintext_endpoints(
    snapshot: &Snapshot,
    registry: &mesh_config::registry::Registry,
) -> mesh_core::hash::FxHashSet<std::net::SocketAddr> {
    let mut out = mesh_core::hash::FxHashSet::default();
    for svc in registry.services() {
        for e in svc.endpoints.values().flat_map(|eps| eps.iter()) {
            if PeerAuthn::compile(snapshot, &e.namespace, &e.labels).mode(e.address.port()) == Mode::Disable {
                out.insert(e.address);
            }
        }
    }
    out
}

#[cfg(all(test, feature = "config"))]
mod tests {
    use super::*;
    use mesh_config::load::{LoadOptions, load_str};

    fn pa(name: &str, ns: &str, spec: &str) -> String {
        format!(
            "apiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {spec}\n---\n"
        )
    }

    fn mode(yaml: &str, ns: &str, labels: &[(&str, &str)], port: u16) -> Mode {
        let loaded = load_str("pa.yaml", yaml, &LoadOptions::default());
        assert!(!loaded.has_errors(), "{}", loaded.report());
        let labels: Labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        PeerAuthn::compile(&loaded.into_snapshot(), ns, &labels).mode(port)
    }

    #[test]
    fn scopes_and_precedence() {
        let app = &[("app", "reviews")][..];
        assert_eq!(mode("", "default", app, 9080), Mode::Permissive, "no policy: PERMISSIVE");
        let mesh_strict = pa("default", "istio-system", "{mtls: {mode: STRICT}}");
        assert_eq!(mode(&mesh_strict, "default", app, 9080), Mode::Strict);
        let ns_permissive = pa("default", "default", "{mtls: {mode: PERMISSIVE}}");
        assert_eq!(
            mode(&(mesh_strict.clone() + &ns_permissive), "default", app, 9080),
            Mode::Permissive,
            "namespace beats mesh"
        );
        let wl_disable = pa("reviews", "default", "{selector: {matchLabels: {app: reviews}}, mtls: {mode: DISABLE}}");
        let all = mesh_strict.clone() + &ns_permissive + &wl_disable;
        assert_eq!(mode(&all, "default", app, 9080), Mode::Disable, "workload beats namespace");
        assert_eq!(mode(&all, "default", &[("app", "ratings")], 9080), Mode::Permissive, "selector does not match");
        assert_eq!(mode(&all, "prod", app, 9080), Mode::Strict, "other namespace: mesh");
        // UNSET inherits.
        let unset = pa("reviews", "default", "{selector: {matchLabels: {app: reviews}}, mtls: {mode: UNSET}}");
        assert_eq!(mode(&(mesh_strict.clone() + &unset), "default", app, 9080), Mode::Strict);
        // Selector policies in the root namespace are ignored.
        let root_selector = pa("r", "istio-system", "{selector: {matchLabels: {app: reviews}}, mtls: {mode: DISABLE}}");
        assert_eq!(mode(&(mesh_strict.clone() + &root_selector), "default", app, 9080), Mode::Strict);
        // portLevelMtls: by container port; port UNSET takes the workload's mode.
        let ports = pa(
            "reviews",
            "default",
            "{selector: {matchLabels: {app: reviews}}, mtls: {mode: STRICT}, portLevelMtls: {9080: {mode: PERMISSIVE}, 9090: {mode: UNSET}}}",
        );
        assert_eq!(mode(&ports, "default", app, 9080), Mode::Permissive);
        assert_eq!(mode(&ports, "default", app, 9090), Mode::Strict);
        assert_eq!(mode(&ports, "default", app, 15000), Mode::Strict);
    }

    #[test]
    fn oldest_wins_among_equals() {
        let a = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: b-newer, namespace: default, creationTimestamp: \"2026-02-01T00:00:00Z\"}\nspec: {mtls: {mode: DISABLE}}\n---\n";
        let b = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: a-older, namespace: default, creationTimestamp: \"2026-01-01T00:00:00Z\"}\nspec: {mtls: {mode: STRICT}}\n";
        assert_eq!(mode(&format!("{a}{b}"), "default", &[], 9080), Mode::Strict);
    }
}
