//! `meshctl kube-inject -f FILE`: what `istioctl kube-inject` does, for mesh-sidecar. Every
//! Deployment in the input gets, in its pod template:
//! - the `mesh-sidecar` container, configured from the API server (`--kube`), with the
//!   workload's name, labels, namespace and service account as its identity, its inbound
//!   listener in front of the app's first container port, and its certificate from the
//!   mesh CA, proven with a projected service-account token (audience `mesh-ca`);
//! - `HTTP_PROXY` (and `http_proxy`) on every app container, pointing at the sidecar's
//!   outbound listener, `NO_PROXY` for loopback;
//! - the annotation [`INBOUND_PORT_ANNOTATION`] that tells other sidecars to reach the pod
//!   on the sidecar's inbound port with mTLS, and Prometheus scrape annotations;
//! - the token and CA-root volumes.
//!
//! Everything else is left as it was, byte for byte: other documents, and Deployments
//! already injected or opted out with `sidecar.istio.io/inject: "false"` on the template.

use std::{io::Read, path::Path, process::ExitCode};

use mesh_config::{
    load::{Node, load_str, parse_documents},
    registry::INBOUND_PORT_ANNOTATION,
    store::split_documents,
};
use serde_json::{Map, Value, json};

/// The sidecar container's name.
pub(crate) const SIDECAR: &str = "mesh-sidecar";
/// The sidecar's listeners in the pod.
const OUTBOUND_PORT: u16 = 15001;
const INBOUND_PORT: u16 = 15006;
const ADMIN_PORT: u16 = 15000;
/// Where the token and the CA root are mounted in the sidecar.
const TOKEN_DIR: &str = "/var/run/secrets/mesh/tokens";
const ROOT_DIR: &str = "/var/run/secrets/mesh/ca";

/// What the injected sidecar runs and talks to.
#[derive(Clone, Debug, clap::Args)]
pub(crate) struct InjectArgs {
    /// The manifest (`-` reads standard input).
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    file: String,
    /// Write here instead of standard output.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<String>,
    /// The sidecar image.
    #[arg(long, default_value = "mesh-sidecar:0.1.0")]
    image: String,
    /// The mesh CA's address, as the pods reach it.
    #[arg(long, default_value = "https://mesh-ca.mesh-system.svc:15012")]
    ca_address: String,
    /// The ConfigMap (in the pod's namespace) holding the mesh root certificate as
    /// `root-cert.pem`.
    #[arg(long, default_value = "mesh-ca-root")]
    ca_root_configmap: String,
    /// The SPIFFE trust domain.
    #[arg(long, default_value = "cluster.local")]
    trust_domain: String,
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("meshctl kube-inject: {msg}");
    ExitCode::from(1)
}

pub(crate) fn run(args: &InjectArgs) -> ExitCode {
    let text = if args.file == "-" {
        let mut s = String::new();
        if let Err(e) = std::io::stdin().read_to_string(&mut s) {
            return fail(format!("reading standard input: {e}"));
        }
        s
    } else {
        match std::fs::read_to_string(&args.file) {
            Ok(s) => s,
            Err(e) => return fail(format!("{}: {e}", args.file)),
        }
    };
    let out = match inject(&args.file, &text, args) {
        Ok(o) => o,
        Err(e) => return fail(e),
    };
    match &args.output {
        Some(path) => match std::fs::write(Path::new(path), out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(format!("{path}: {e}")),
        },
        None => {
            print!("{out}");
            ExitCode::SUCCESS
        }
    }
}

/// The manifest with every Deployment injected. Invalid YAML, or a Deployment the mesh
/// cannot read, is an error naming the file and line.
pub(crate) fn inject(label: &str, text: &str, args: &InjectArgs) -> Result<String, String> {
    // The loader's findings for the Deployments (errors only: other kinds are the
    // platform's business).
    let loaded = load_str(label, text, &mesh_proxy::config::load_options("default"));
    if let Some(e) = loaded.errors().find(|d| d.object == "-" || d.object.starts_with("Deployment ")) {
        return Err(e.to_string());
    }
    let mut docs = Vec::new();
    for doc in split_documents(text) {
        let parsed = parse_documents(&doc, &Default::default())
            .map_err(|e| format!("{label}:{}: invalid YAML: {}", e.line, e.message))?;
        let injected = match parsed.as_slice() {
            [node] if is_deployment(node) => inject_deployment(node.to_json(), args),
            _ => None,
        };
        docs.push(match injected {
            Some(v) => serde_saphyr::to_string(&v).map_err(|e| format!("{label}: printing YAML: {e}"))?,
            None => doc,
        });
    }
    Ok(docs.iter().map(|d| d.trim_end_matches('\n').to_string() + "\n").collect::<Vec<_>>().join("---\n"))
}

fn is_deployment(node: &Node) -> bool {
    node.get("kind").and_then(Node::as_str) == Some("Deployment")
        && node.get("apiVersion").and_then(Node::as_str) == Some("apps/v1")
}

fn obj<'a>(v: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !v.get(key).is_some_and(Value::is_object) {
        v[key] = json!({});
    }
    v[key].as_object_mut().expect("just made an object")
}

fn arr<'a>(v: &'a mut Value, key: &str) -> &'a mut Vec<Value> {
    if !v.get(key).is_some_and(Value::is_array) {
        v[key] = json!([]);
    }
    v[key].as_array_mut().expect("just made an array")
}

/// The Deployment with the sidecar, or `None` to leave it as written.
fn inject_deployment(mut d: Value, args: &InjectArgs) -> Option<Value> {
    let name = d["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let template = &mut d["spec"]["template"];
    let annotations = &template["metadata"]["annotations"];
    if annotations["sidecar.istio.io/inject"].as_str() == Some("false") {
        return None;
    }
    let containers = template["spec"]["containers"].as_array().cloned().unwrap_or_default();
    if containers.iter().any(|c| c["name"] == SIDECAR) {
        return None;
    }
    let labels = template["metadata"]["labels"].as_object().cloned().unwrap_or_default();
    let labels =
        labels.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())).collect::<Vec<_>>().join(",");
    let service_account = template["spec"]["serviceAccountName"].as_str().unwrap_or("default").to_string();
    let app_port = containers
        .iter()
        .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
        .find_map(|p| p["containerPort"].as_u64());

    let mut sidecar_args: Vec<String> = vec![
        "--kube".into(),
        "--namespace=$(POD_NAMESPACE)".into(),
        format!("--workload={name}"),
        format!("--service-account={service_account}"),
        format!("--outbound=127.0.0.1:{OUTBOUND_PORT}"),
        format!("--admin=0.0.0.0:{ADMIN_PORT}"),
        format!("--trust-domain={}", args.trust_domain),
        format!("--ca-address={}", args.ca_address),
        format!("--ca-token-file={TOKEN_DIR}/mesh-ca"),
        format!("--ca-root-file={ROOT_DIR}/root-cert.pem"),
    ];
    if !labels.is_empty() {
        sidecar_args.insert(3, format!("--workload-labels={labels}"));
    }
    let mut ports = vec![json!({"name": "mesh-admin", "containerPort": ADMIN_PORT, "protocol": "TCP"})];
    if let Some(port) = app_port {
        sidecar_args.push(format!("--inbound=0.0.0.0:{INBOUND_PORT}"));
        sidecar_args.push(format!("--app=127.0.0.1:{port}"));
        ports.insert(0, json!({"name": "mesh-inbound", "containerPort": INBOUND_PORT, "protocol": "TCP"}));
    }
    let sidecar = json!({
        "name": SIDECAR,
        "image": args.image,
        "imagePullPolicy": "IfNotPresent",
        "args": sidecar_args,
        "env": [
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ],
        "ports": ports,
        "readinessProbe": {"httpGet": {"path": "/ready", "port": ADMIN_PORT}, "periodSeconds": 2},
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}},
        "securityContext": {
            "runAsNonRoot": true, "runAsUser": 1337, "runAsGroup": 1337,
            "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "mesh-token", "mountPath": TOKEN_DIR, "readOnly": true},
            {"name": "mesh-ca-root", "mountPath": ROOT_DIR, "readOnly": true},
        ],
    });

    let proxy = format!("http://127.0.0.1:{OUTBOUND_PORT}");
    let spec = &mut template["spec"];
    for c in arr(spec, "containers").iter_mut() {
        let env = arr(c, "env");
        env.retain(|e| !matches!(e["name"].as_str(), Some("HTTP_PROXY" | "http_proxy" | "NO_PROXY" | "no_proxy")));
        env.push(json!({"name": "HTTP_PROXY", "value": proxy}));
        env.push(json!({"name": "http_proxy", "value": proxy}));
        env.push(json!({"name": "NO_PROXY", "value": "localhost,127.0.0.1"}));
        env.push(json!({"name": "no_proxy", "value": "localhost,127.0.0.1"}));
    }
    arr(spec, "containers").push(sidecar);
    let volumes = arr(spec, "volumes");
    volumes.push(json!({"name": "mesh-token", "projected": {"sources": [{"serviceAccountToken": {
        "audience": "mesh-ca", "expirationSeconds": 3600, "path": "mesh-ca"}}]}}));
    volumes.push(json!({"name": "mesh-ca-root", "configMap": {"name": args.ca_root_configmap}}));
    let meta = obj(template, "metadata");
    let annotations = meta.entry("annotations").or_insert_with(|| json!({}));
    if !annotations.is_object() {
        *annotations = json!({});
    }
    let a = annotations.as_object_mut().expect("an object");
    if app_port.is_some() {
        a.insert(INBOUND_PORT_ANNOTATION.into(), INBOUND_PORT.to_string().into());
    }
    a.insert("prometheus.io/scrape".into(), "true".into());
    a.insert("prometheus.io/port".into(), ADMIN_PORT.to_string().into());
    a.insert("prometheus.io/path".into(), "/stats/prometheus".into());
    Some(d)
}
