//! Files and directories to resources, with every problem reported as a [`Diagnostic`]
//! that names the file, line and field.
//!
//! - Directories are walked recursively (`.yaml`, `.yml`, `.json`; hidden files skipped),
//!   in path order; a file named explicitly is read whatever its extension.
//! - Each file may hold several documents; `List` kinds are unpacked.
//! - `metadata.namespace` defaults to `default`.
//! - Kinds the mesh does not use are skipped with a note, never an error.
//! - A resource with an error is left out; everything else still loads.

mod yaml;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use crate::{
    api::{Kind, KubeObject, Object, Resource, mesh::MeshConfig},
    diag::{Diagnostic, FieldPath, Finding, Seg, Severity},
    snapshot::Snapshot,
    validate,
};

pub use yaml::{Key, Limits, Node, ParseError, Value, parse_documents};

/// How to load.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Namespace for resources that do not name one.
    pub default_namespace: String,
    /// Limits for untrusted input.
    pub limits: Limits,
    /// The feature crates' rules, run on each resource after mesh-config's (none by default;
    /// `mesh_proxy::config::rules()` has every feature's).
    pub rules: Vec<Arc<dyn validate::Rule>>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { default_namespace: "default".into(), limits: Limits::default(), rules: Vec::new() }
    }
}

/// A resource and where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadedResource {
    /// The resource.
    pub resource: Arc<Resource>,
    /// The file as the user named it.
    pub file: Arc<str>,
    /// The document's tree, to place findings on lines.
    pub node: Arc<Node>,
    /// Path from the document root to the resource (non-empty inside a `List`).
    pub prefix: FieldPath,
}

impl LoadedResource {
    /// `KIND NS/NAME`.
    pub fn object(&self) -> String {
        let m = self.resource.meta();
        format!("{} {}/{}", self.resource.kind(), m.namespace, m.name)
    }

    /// The line of a field of this resource.
    pub fn line_of(&self, path: &FieldPath) -> u32 {
        self.node.line_of(&self.prefix.join(path))
    }

    /// A diagnostic about a field of this resource.
    pub fn diagnostic(&self, finding: Finding) -> Diagnostic {
        Diagnostic {
            file: self.file.to_string(),
            line: self.line_of(&finding.path),
            severity: finding.severity,
            object: self.object(),
            field: self.prefix.join(&finding.path),
            message: finding.message,
        }
    }
}

/// What a load produced.
#[derive(Clone, Debug, Default)]
pub struct Loaded {
    /// Resources that loaded without error, in load order.
    pub resources: Vec<LoadedResource>,
    /// Every finding, in load order.
    pub diagnostics: Vec<Diagnostic>,
}

impl Loaded {
    /// Whether any finding is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(|d| d.severity == Severity::Error)
    }

    /// The error findings.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.severity == Severity::Error)
    }

    /// Every finding, one per line.
    pub fn report(&self) -> String {
        self.diagnostics.iter().map(|d| format!("{d}\n")).collect()
    }

    /// The resources as an indexed snapshot.
    pub fn into_snapshot(self) -> Snapshot {
        Snapshot::new(self.resources.into_iter().map(|r| r.resource))
    }
}

/// Load files and directories. Cross-resource checks (undefined subsets, duplicates) run
/// over everything loaded together.
pub fn load_paths<P: AsRef<Path>>(paths: &[P], options: &LoadOptions) -> Loaded {
    let mut out = Loaded::default();
    for path in paths {
        let path = path.as_ref();
        match collect_files(path) {
            Ok(files) => {
                for file in files {
                    let label = file.display().to_string();
                    match std::fs::read(&file) {
                        Ok(bytes) => load_bytes_into(&label, &bytes, options, &mut out),
                        Err(e) => out.diagnostics.push(file_error(&label, 0, format!("cannot read file: {e}"))),
                    }
                }
            }
            Err(e) => out.diagnostics.push(file_error(&path.display().to_string(), 0, e.to_string())),
        }
    }
    finish(&mut out);
    out
}

/// Load one in-memory file; `label` names it in findings.
pub fn load_str(label: &str, text: &str, options: &LoadOptions) -> Loaded {
    let mut out = Loaded::default();
    load_bytes_into(label, text.as_bytes(), options, &mut out);
    finish(&mut out);
    out
}

/// Load one object given as JSON, as the Kubernetes API serves it; `label` names it in
/// findings, whose lines are those of the object printed as indented JSON (`kubectl get
/// -o json`). The cross-resource checks run when loads are put together ([`combine`]).
pub fn load_json_object(label: &str, object: &serde_json::Value, options: &LoadOptions) -> Loaded {
    let mut out = Loaded::default();
    match serde_json::to_string_pretty(object) {
        Ok(text) => load_bytes_into(label, text.as_bytes(), options, &mut out),
        Err(e) => out.diagnostics.push(file_error(label, 0, format!("cannot print the object: {e}"))),
    }
    out
}

/// Loads of single objects as one: resources and findings in the given order, then the
/// cross-resource checks (duplicates, undefined subsets) over all of them.
pub fn combine<'a>(parts: impl IntoIterator<Item = &'a Loaded>) -> Loaded {
    let mut out = Loaded::default();
    for p in parts {
        out.resources.extend(p.resources.iter().cloned());
        out.diagnostics.extend(p.diagnostics.iter().cloned());
    }
    finish(&mut out);
    out
}

fn finish(out: &mut Loaded) {
    let findings = validate::validate_set(&out.resources);
    for (index, finding) in findings {
        let d = out.resources[index].diagnostic(finding);
        out.diagnostics.push(d);
    }
}

/// Istio's mesh config (a file, or the `mesh` key of the `istio` ConfigMap) as the typed
/// model; `label` names it in the error, which gives the line and field. An empty text is the
/// default config.
pub fn mesh_config(label: &str, text: &str, limits: &Limits) -> Result<MeshConfig, Diagnostic> {
    let fail = |line: u32, field: FieldPath, message: String| Diagnostic {
        file: label.to_string(),
        line,
        severity: Severity::Error,
        object: "MeshConfig".into(),
        field,
        message,
    };
    let docs = parse_documents(text, limits).map_err(|e| fail(e.line, FieldPath::root(), e.message))?;
    match docs.as_slice() {
        [] => Ok(MeshConfig::default()),
        [doc] if matches!(doc.value, Value::Null) => Ok(MeshConfig::default()),
        [doc] => de(doc.to_json()).map_err(|(field, message)| fail(doc.line_of(&field), field, message)),
        [_, second, ..] => Err(fail(second.line, FieldPath::root(), "a mesh config is one YAML document".into())),
    }
}

/// A path the loader cannot walk.
#[derive(Debug, thiserror::Error)]
pub enum Unreadable {
    /// The path named.
    #[error("cannot read: {0}")]
    Path(#[source] std::io::Error),
    /// A directory under it.
    #[error("cannot read directory {}: {source}", dir.display())]
    Dir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The config files under `path`, in a stable order.
pub fn collect_files(path: &Path) -> Result<Vec<PathBuf>, Unreadable> {
    let meta = std::fs::metadata(path).map_err(Unreadable::Path)?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|source| Unreadable::Dir { dir: dir.clone(), source })?;
        for entry in entries.flatten() {
            let p = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else if is_config_file(&p) {
                files.push(p);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Whether a directory walk picks this file up.
pub fn is_config_file(p: &Path) -> bool {
    matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json"))
}

fn file_error(file: &str, line: u32, message: impl Into<String>) -> Diagnostic {
    Diagnostic {
        file: file.to_string(),
        line,
        severity: Severity::Error,
        object: "-".into(),
        field: FieldPath::root(),
        message: message.into(),
    }
}

fn load_bytes_into(label: &str, bytes: &[u8], options: &LoadOptions, out: &mut Loaded) {
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            out.diagnostics.push(file_error(label, 0, format!("file is not UTF-8: {e}")));
            return;
        }
    };
    let docs = match parse_documents(text, &options.limits) {
        Ok(d) => d,
        Err(e) => {
            out.diagnostics.push(file_error(label, e.line, format!("invalid YAML: {}", e.message)));
            return;
        }
    };
    let file: Arc<str> = label.into();
    for (i, doc) in docs.into_iter().enumerate() {
        let node = Arc::new(doc);
        let object = format!("document {}", i + 1);
        load_object(&file, &node, &node, FieldPath::root(), &object, options, out);
    }
}

/// Load the object at `here` (the document root, or an item of a `List`).
fn load_object(
    file: &Arc<str>,
    doc: &Arc<Node>,
    here: &Node,
    prefix: FieldPath,
    fallback_object: &str,
    options: &LoadOptions,
    out: &mut Loaded,
) {
    let diag = |severity, object: &str, path: FieldPath, message: String| Diagnostic {
        file: file.to_string(),
        line: doc.line_of(&prefix.join(&path)),
        severity,
        object: object.to_string(),
        field: prefix.join(&path),
        message,
    };
    if !matches!(here.value, Value::Map(_)) {
        let msg = "expected a Kubernetes resource (a mapping with apiVersion and kind)".to_string();
        out.diagnostics.push(diag(Severity::Error, fallback_object, FieldPath::root(), msg));
        return;
    }
    let kind_str = here.get("kind").and_then(Node::as_str);
    let api_version = here.get("apiVersion").and_then(Node::as_str);
    let (Some(kind_str), Some(api_version)) = (kind_str, api_version) else {
        let missing = if kind_str.is_none() { "kind" } else { "apiVersion" };
        let msg = format!("not a Kubernetes resource: `{missing}` is missing");
        out.diagnostics.push(diag(Severity::Error, fallback_object, FieldPath::root().key(missing), msg));
        return;
    };

    if kind_str == "List" || (kind_str.ends_with("List") && here.get("items").is_some()) {
        match here.get("items").map(|n| &n.value) {
            Some(Value::Seq(items)) => {
                for (i, item) in items.iter().enumerate() {
                    let object = format!("{fallback_object} item {}", i);
                    load_object(file, doc, item, prefix.key("items").index(i), &object, options, out);
                }
            }
            None => {}
            Some(_) => {
                let msg = "`items` must be a list".to_string();
                out.diagnostics.push(diag(Severity::Error, fallback_object, FieldPath::root().key("items"), msg));
            }
        }
        return;
    }

    let meta = here.get("metadata");
    let name = meta.and_then(|m| m.get("name")).and_then(Node::as_str).unwrap_or("");
    let namespace = meta
        .and_then(|m| m.get("namespace"))
        .and_then(Node::as_str)
        .filter(|ns| !ns.is_empty())
        .unwrap_or(&options.default_namespace);
    let object = format!("{kind_str} {namespace}/{name}");
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));

    let Some(kind) = Kind::from_kind_and_group(kind_str, group) else {
        let msg = match group {
            "gateway.networking.k8s.io" => {
                format!(
                    "Gateway API kind {kind_str} ({api_version}) is not supported yet (GatewayClass, Gateway, HTTPRoute, GRPCRoute and ReferenceGrant are); skipped"
                )
            }
            g if g.ends_with(".istio.io") => {
                format!("Istio kind {kind_str} ({api_version}) is not supported yet; skipped")
            }
            _ => format!("{kind_str} ({api_version}) is not used by the mesh; skipped"),
        };
        out.diagnostics.push(diag(Severity::Note, &object, FieldPath::root().key("kind"), msg));
        return;
    };
    if !kind.versions().contains(&version) {
        let want: Vec<String> = kind
            .versions()
            .iter()
            .map(|v| if group.is_empty() { v.to_string() } else { format!("{group}/{v}") })
            .collect();
        let msg = format!("unsupported apiVersion {api_version:?} for {kind}; use one of {}", want.join(", "));
        out.diagnostics.push(diag(Severity::Error, &object, FieldPath::root().key("apiVersion"), msg));
        return;
    }
    if name.is_empty() {
        let msg = "metadata.name is required".to_string();
        out.diagnostics.push(diag(Severity::Error, &object, FieldPath::root().key("metadata").key("name"), msg));
        return;
    }

    let mut resource = match deserialize(kind, here.to_json()) {
        Ok(r) => r,
        Err((path, message)) => {
            out.diagnostics.push(diag(Severity::Error, &object, path, message));
            return;
        }
    };
    resource.meta_mut().namespace = namespace.to_string();

    let loaded = LoadedResource { resource: Arc::new(resource), file: file.clone(), node: doc.clone(), prefix };
    let mut findings = validate::validate(&loaded.resource);
    for rule in &options.rules {
        rule.check(&loaded.resource, &mut findings);
    }
    let rejected = findings.iter().any(|f| f.severity == Severity::Error);
    let mut diagnostics: Vec<Diagnostic> = findings.into_iter().map(|f| loaded.diagnostic(f)).collect();
    diagnostics.sort_by_key(|d| d.line);
    out.diagnostics.extend(diagnostics);
    if !rejected {
        out.resources.push(loaded);
    }
}

/// `json` as a `T`, a failure at its field (an unknown field with the closest known one).
fn de<T: serde::de::DeserializeOwned>(json: serde_json::Value) -> Result<T, (FieldPath, String)> {
    serde_path_to_error::deserialize(json).map_err(|e| {
        let mut path = FieldPath::from_segments(
            e.path()
                .iter()
                .filter_map(|s| match s {
                    serde_path_to_error::Segment::Seq { index } => Some(Seg::Index(*index)),
                    serde_path_to_error::Segment::Map { key } => Some(Seg::Key(key.clone())),
                    serde_path_to_error::Segment::Enum { .. } | serde_path_to_error::Segment::Unknown => None,
                })
                .collect(),
        );
        let message = e.into_inner().to_string();
        let message = match unknown_field(&message) {
            Some((field, expected)) => {
                // Point at the unknown key itself.
                if path.segments().last() != Some(&Seg::Key(field.clone())) {
                    path = path.key(field.clone());
                }
                match closest(&field, &expected) {
                    Some(s) => format!("unknown field `{field}` (did you mean `{s}`?)"),
                    None => format!("unknown field `{field}`; known fields: {}", expected.join(", ")),
                }
            }
            None => message,
        };
        (path, message)
    })
}

fn deserialize(kind: Kind, json: serde_json::Value) -> Result<Resource, (FieldPath, String)> {
    Ok(match kind {
        Kind::VirtualService => Resource::VirtualService(de::<Object<_>>(json)?),
        Kind::DestinationRule => Resource::DestinationRule(de::<Object<_>>(json)?),
        Kind::Gateway => Resource::Gateway(de::<Object<_>>(json)?),
        Kind::ServiceEntry => Resource::ServiceEntry(de::<Object<_>>(json)?),
        Kind::WorkloadEntry => Resource::WorkloadEntry(de::<Object<_>>(json)?),
        Kind::Sidecar => Resource::Sidecar(de::<Object<_>>(json)?),
        Kind::PeerAuthentication => Resource::PeerAuthentication(de::<Object<_>>(json)?),
        Kind::AuthorizationPolicy => Resource::AuthorizationPolicy(de::<Object<_>>(json)?),
        Kind::RequestAuthentication => Resource::RequestAuthentication(de::<Object<_>>(json)?),
        Kind::Telemetry => Resource::Telemetry(de::<Object<_>>(json)?),
        Kind::Service => Resource::Service(de::<KubeObject<_>>(json)?),
        Kind::ServiceAccount => Resource::ServiceAccount(de::<KubeObject<_>>(json)?),
        Kind::Deployment => Resource::Deployment(de::<KubeObject<_>>(json)?),
        Kind::Pod => Resource::Pod(de::<KubeObject<_>>(json)?),
        Kind::EndpointSlice => Resource::EndpointSlice(de(json)?),
        Kind::Namespace => Resource::Namespace(de::<KubeObject<_>>(json)?),
        Kind::GatewayClass => Resource::GatewayClass(de::<Object<_>>(json)?),
        Kind::KubernetesGateway => Resource::KubernetesGateway(de::<Object<_>>(json)?),
        Kind::HttpRoute => Resource::HttpRoute(de::<Object<_>>(json)?),
        Kind::GrpcRoute => Resource::GrpcRoute(de::<Object<_>>(json)?),
        Kind::ReferenceGrant => Resource::ReferenceGrant(de::<Object<_>>(json)?),
    })
}

/// serde's "unknown field `x`, expected one of `a`, `b`" (or "expected `a`", or "there are
/// no fields") as the field and the list of known names.
fn unknown_field(message: &str) -> Option<(String, Vec<String>)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (field, rest) = rest.split_once('`')?;
    let expected = rest.split('`').skip(1).step_by(2).map(str::to_string).collect();
    Some((field.to_string(), expected))
}

/// The known name closest to a typo, if one is close enough to suggest.
fn closest(field: &str, known: &[String]) -> Option<String> {
    let lower = field.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (edit_distance(&lower, &k.to_ascii_lowercase()), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.clone())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_field_parsing() {
        let (f, e) = unknown_field("unknown field `specs`, expected one of `apiVersion`, `kind`, `spec`").unwrap();
        assert_eq!(f, "specs");
        assert_eq!(e, ["apiVersion", "kind", "spec"]);
        assert_eq!(closest("specs", &e), Some("spec".into()));
        assert_eq!(closest("zzzzzzzz", &e), None);
        let (f, e) = unknown_field("unknown field `x`, there are no fields").unwrap();
        assert_eq!((f.as_str(), e.len()), ("x", 0));
    }
}
