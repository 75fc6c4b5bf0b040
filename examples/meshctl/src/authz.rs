//! `meshctl authz`: explain the authorization decision for one request.

use std::{net::IpAddr, path::PathBuf, process::ExitCode};

use mesh_authz::policy::{
    Action, AuthzPolicy, AuthzRequest, RequestAuth, Traffic, method_case_variant, path::normalize,
};
use mesh_core::Identity;
use serde::Serialize;

use crate::args::{load_snapshot, parse_headers, parse_labels};

#[derive(Debug, clap::Args)]
pub(crate) struct AuthzArgs {
    /// Config files or directories.
    #[arg(long = "config", required_unless_present = "kube", conflicts_with = "kube", num_args = 1.., value_name = "PATH")]
    config: Vec<PathBuf>,
    /// Read the config from the cluster (kubeconfig, or in-cluster) instead of files.
    #[arg(long)]
    kube: bool,
    /// The workload's namespace (and of resources that do not name one).
    #[arg(long, default_value = "default")]
    namespace: String,
    /// The workload's labels, `app=reviews,version=v1`.
    #[arg(long, value_name = "K=V,...", default_value = "")]
    workload_labels: String,
    /// The caller's mTLS identity, `TD/ns/NS/sa/SA` (none: a plaintext caller).
    #[arg(long, value_name = "TD/ns/NS/sa/SA")]
    principal: Option<String>,
    /// The caller's address.
    #[arg(long, value_name = "IP")]
    source_ip: Option<IpAddr>,
    /// Request method.
    #[arg(long, default_value = "GET")]
    method: String,
    /// Request path (normalised, query removed).
    #[arg(long, default_value = "/")]
    path: String,
    /// Host header.
    #[arg(long, default_value = "")]
    host: String,
    /// The workload port the request arrives on.
    #[arg(long, default_value_t = 80)]
    port: u16,
    /// A request header, `name: value` (repeatable).
    #[arg(long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// The request's JWT principal `ISS/SUB`, as RequestAuthentication would set it.
    #[arg(long, value_name = "ISS/SUB")]
    request_principal: Option<String>,
}

#[derive(Serialize)]
struct Output {
    decision: &'static str,
    action: Option<Action>,
    policy: Option<String>,
    audit: Vec<String>,
    /// Set when the sidecar refuses the request before authorization (its status).
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    /// Why it refuses it.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("meshctl authz: {msg}");
    ExitCode::from(1)
}

pub(crate) fn run(args: &AuthzArgs) -> ExitCode {
    let snapshot = match load_snapshot(&args.config, args.kube, &args.namespace) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let labels = match parse_labels(&args.workload_labels) {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    let peer: Option<Identity> = match &args.principal {
        None => None,
        Some(p) => match format!("spiffe://{}", p.strip_prefix("spiffe://").unwrap_or(p)).parse() {
            Ok(id) => Some(id),
            Err(e) => return fail(format!("invalid --principal {p:?}: {e}")),
        },
    };
    let headers = match parse_headers(&args.headers) {
        Ok(h) => h,
        Err(e) => return fail(e),
    };
    let path = match normalize(&args.path) {
        Ok(p) => p,
        Err(e) => return fail(format!("invalid --path: {e} (the proxy answers 400)")),
    };
    if let Ok(m) = http::Method::from_bytes(args.method.as_bytes())
        && let Some(standard) = method_case_variant(&m)
    {
        // What the sidecar does: refuse at the edge, before any policy runs.
        let reason =
            format!("method {:?} is a case variant of {standard}: refused with 400 before authorization", args.method);
        let out = Output {
            decision: "DENY",
            action: None,
            policy: None,
            audit: Vec::new(),
            status: Some(400),
            reason: Some(reason),
        };
        println!("{}", serde_json::to_string(&out).expect("plain data serializes"));
        return ExitCode::SUCCESS;
    }
    let auth = args.request_principal.as_ref().map(|p| RequestAuth { principal: p.clone(), ..RequestAuth::default() });
    let policy = AuthzPolicy::compile(&snapshot, &args.namespace, &labels, Traffic::Http);
    for w in &policy.warnings {
        eprintln!("warning: {w}");
    }
    let req = AuthzRequest {
        peer: peer.as_ref(),
        source_ip: args.source_ip,
        remote_ip: None,
        request_auth: auth.as_ref(),
        method: &args.method,
        path: &path,
        host: &args.host,
        port: args.port,
        headers: &headers,
        destination_ip: None,
        sni: None,
    };
    let evaluation = policy.evaluate(&req);
    let d = evaluation.decision;
    let out = match evaluation.custom {
        Some(c) => Output {
            decision: "DENY",
            action: Some(Action::Custom),
            policy: Some(c.policy.to_string()),
            audit: Vec::new(),
            status: None,
            reason: None,
        },
        None => Output {
            decision: if d.allowed { "ALLOW" } else { "DENY" },
            action: d.action,
            policy: d.policy.map(|p| p.to_string()),
            audit: d.audit.iter().map(|a| a.to_string()).collect(),
            status: None,
            reason: None,
        },
    };
    println!("{}", serde_json::to_string(&out).expect("plain data serializes"));
    ExitCode::SUCCESS
}
