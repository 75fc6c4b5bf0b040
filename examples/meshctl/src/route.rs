//! `meshctl route`: explain the routing decision for one request.

use std::{path::PathBuf, process::ExitCode};

use crate::args::{load_snapshot, parse_headers, parse_labels};
use mesh_config::{
    api::{Kind, Resource},
    registry::{Locator, Registry},
};
use mesh_route::policy::{ProxyContext, RouteTable, explain::Explanation, matching::RequestInfo};

#[derive(Debug, clap::Args)]
pub(crate) struct RouteArgs {
    /// Config files or directories (repeatable).
    #[arg(long = "config", required_unless_present = "kube", conflicts_with = "kube", value_name = "PATH")]
    config: Vec<PathBuf>,
    /// Read the config from the cluster (kubeconfig, or in-cluster) instead of files.
    #[arg(long)]
    kube: bool,
    /// The Host header as sent; it may carry a port (`reviews:9080`).
    #[arg(long)]
    host: String,
    /// The destination port (sidecar) or listener port (gateway), when HOST has none.
    #[arg(long)]
    port: Option<u16>,
    /// Request method.
    #[arg(long, default_value = "GET")]
    method: String,
    /// Request path, optionally with a query string.
    #[arg(long, default_value = "/")]
    path: String,
    /// Request scheme.
    #[arg(long, default_value = "http", value_parser = ["http", "https"])]
    scheme: String,
    /// A request header, `name: value` (repeatable).
    #[arg(long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Namespace of resources that do not name one, and of the client by default.
    #[arg(long, default_value = "default")]
    namespace: String,
    /// Labels of the client workload (`app=productpage,version=v1`), for sourceLabels.
    #[arg(long, value_name = "K=V,...")]
    source_labels: Option<String>,
    /// Namespace of the client workload (default: --namespace).
    #[arg(long, value_name = "NS")]
    source_namespace: Option<String>,
    /// Decide as the gateway NS/NAME (or NAME in --namespace) instead of a sidecar.
    #[arg(long, value_name = "NS/NAME")]
    gateway: Option<String>,
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("meshctl route: {msg}");
    ExitCode::from(1)
}

pub(crate) fn run(args: &RouteArgs) -> ExitCode {
    let snapshot = match load_snapshot(&args.config, args.kube, &args.namespace) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let registry = Registry::build(&snapshot, &Locator::new());

    let headers = match parse_headers(&args.headers) {
        Ok(h) => h,
        Err(e) => return fail(e),
    };
    let (ctx, listener_port) = match &args.gateway {
        Some(gw) => {
            let (ns, name) = gw.split_once('/').unwrap_or((&args.namespace, gw));
            // The first server's (Istio) or listener's (Gateway API) port, unless --port says.
            let first = match (snapshot.get(Kind::Gateway, ns, name), snapshot.get(Kind::KubernetesGateway, ns, name)) {
                (Some(_), Some(_)) => {
                    return fail(format!(
                        "{ns}/{name} names two Gateways: the Istio Gateway (networking.istio.io) and the Gateway API Gateway (gateway.networking.k8s.io); rename one"
                    ));
                }
                (Some(r), None) => match &**r {
                    Resource::Gateway(g) => g.spec.servers.first().and_then(|s| u16::try_from(s.port.number).ok()),
                    _ => None,
                },
                (None, Some(r)) => match &**r {
                    Resource::KubernetesGateway(g) => g.spec.listeners.first().and_then(|l| u16::try_from(l.port).ok()),
                    _ => None,
                },
                (None, None) => return fail(format!("Gateway {ns}/{name} is not in the config")),
            };
            (ProxyContext::gateway(ns, name), args.port.or(first))
        }
        None => {
            let labels = match args.source_labels.as_deref().map(parse_labels).transpose() {
                Ok(l) => l.unwrap_or_default(),
                Err(e) => return fail(e),
            };
            let ns = args.source_namespace.as_deref().unwrap_or(&args.namespace);
            // At a sidecar the port picks the service port when the Host carries none.
            let has_port = mesh_route::policy::action::split_authority(&args.host).1.is_some();
            (ProxyContext::sidecar(ns, labels), if has_port { None } else { args.port })
        }
    };
    let table = RouteTable::compile(&snapshot, &registry, &ctx);
    for w in &table.warnings {
        eprintln!("warning: {w}");
    }
    let (path, query) = match args.path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (args.path.as_str(), None),
    };
    let req = RequestInfo {
        method: &args.method,
        scheme: &args.scheme,
        authority: &args.host,
        path,
        query,
        headers: &headers,
    };
    let explanation = Explanation::of(&table, &req, listener_port);
    println!("{}", serde_json::to_string(&explanation).expect("plain data serializes"));
    ExitCode::SUCCESS
}
