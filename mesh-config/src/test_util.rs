//! Test helpers for crates that read config (feature `test-util`): one builder for test
//! manifests ([`Manifest`]). The scripted body and a workload's identity and labels are
//! mesh-core's (`mesh_core::test_util`).

/// Test manifests: the Services and Deployments that tests across the workspace write, built
/// one way instead of a copy per test file. Everything lands in namespace `default` unless
/// a document says otherwise.
///
/// ```
/// use mesh_config::test_util::Manifest;
/// let yaml = Manifest::new()
///     .service("reviews", 9080)
///     .deployment("reviews", "v1", Some("bookinfo-reviews"))
///     .doc("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews}\nspec: {host: reviews}")
///     .to_string();
/// let loaded = mesh_config::load::load_str("t.yaml", &yaml, &Default::default());
/// assert!(!loaded.has_errors(), "{}", loaded.report());
/// ```
#[derive(Clone, Debug, Default)]
pub struct Manifest {
    docs: Vec<String>,
}

impl Manifest {
    /// Empty.
    pub fn new() -> Self {
        Self::default()
    }

    /// A Service `name` selecting `app: name`, with one HTTP port `port` named `http`.
    #[must_use]
    pub fn service(self, name: &str, port: u16) -> Self {
        self.service_port(name, "http", port)
    }

    /// A Service `name` selecting `app: name`, with one port of the given name (its
    /// protocol by Istio's naming: `http`, `tcp`, `grpc`, ...).
    #[must_use]
    pub fn service_port(self, name: &str, port_name: &str, port: u16) -> Self {
        self.doc(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{ports: [{{port: {port}, name: {port_name}}}], selector: {{app: {name}}}}}"
        ))
    }

    /// A Deployment `{app}-{version}` whose pods carry `app` and `version`, running as
    /// `service_account` (the namespace's `default` when `None`).
    #[must_use]
    pub fn deployment(self, app: &str, version: &str, service_account: Option<&str>) -> Self {
        let sa = service_account.map(|sa| format!("serviceAccountName: {sa}, ")).unwrap_or_default();
        self.doc(&format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {app}-{version}}}\nspec:\n  selector: {{matchLabels: {{app: {app}, version: {version}}}}}\n  template: {{metadata: {{labels: {{app: {app}, version: {version}}}}}, spec: {{{sa}containers: [{{name: {app}}}]}}}}"
        ))
    }

    /// Any other document, as YAML.
    #[must_use]
    pub fn doc(mut self, yaml: &str) -> Self {
        self.docs.push(yaml.trim().to_string());
        self
    }
}

impl Manifest {
    /// The documents loaded and validated into a snapshot; panics with the loader's report
    /// when one does not load (a test's own config is wrong).
    pub fn snapshot(&self) -> crate::Snapshot {
        let loaded = crate::load::load_str("manifest.yaml", &self.to_string(), &Default::default());
        assert!(!loaded.has_errors(), "{}", loaded.report());
        loaded.into_snapshot()
    }
}

impl std::fmt::Display for Manifest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, d) in self.docs.iter().enumerate() {
            if i > 0 {
                f.write_str("\n---\n")?;
            }
            f.write_str(d)?;
        }
        f.write_str("\n")
    }
}

/// A config that must load with exactly these findings: each case is loaded as `case.yaml`
/// and its errors and warnings (notes aside) compared, in order, with `want`; an error must
/// reject the resource and a warning must not. See [`check_findings`].
#[derive(Clone, Copy, Debug)]
pub struct FindingCase {
    /// What the case shows.
    pub name: &'static str,
    /// The config.
    pub yaml: &'static str,
    /// Every finding, as `Diagnostic` prints it.
    pub want: &'static [&'static str],
}

/// Load every case with `options`; panics listing every case whose findings differ.
pub fn check_findings(cases: &[FindingCase], options: &crate::load::LoadOptions) {
    let mut failures = Vec::new();
    for case in cases {
        let loaded = crate::load::load_str("case.yaml", case.yaml, options);
        let got: Vec<String> = loaded
            .diagnostics
            .iter()
            .filter(|d| d.severity != crate::Severity::Note)
            .map(ToString::to_string)
            .collect();
        if got != case.want {
            failures.push(format!("{}:\n  want {:#?}\n  got  {:#?}", case.name, case.want, got));
        }
        let has_error = case.want.iter().any(|w| w.contains(": error: "));
        assert_eq!(
            loaded.resources.is_empty(),
            has_error,
            "{}: an error rejects the resource, a warning does not",
            case.name
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
