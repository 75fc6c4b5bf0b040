//! `meshctl apply -f`, `delete -f` and `get`: the config directory a running mesh watches,
//! used as kubectl uses the API server (mesh-core's `store` does the work).

use std::{path::Path, process::ExitCode};

use mesh_config::{
    api::{Kind, Resource},
    registry::{Locator, Registry},
    store,
};

/// `meshctl apply -f FILE`.
pub(crate) fn apply(file: &Path, dir: &Path) -> ExitCode {
    match store::apply(file, dir, &mesh_proxy::config::load_options("default")) {
        Ok(changes) => {
            for (id, change) in changes {
                println!("{} {change}", store::display(&id));
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e.to_string()),
    }
}

/// `meshctl delete -f FILE`.
pub(crate) fn delete(file: &Path, dir: &Path) -> ExitCode {
    match store::delete(file, dir) {
        Ok((deleted, missing)) => {
            for id in &deleted {
                println!("{} deleted", store::display(id));
            }
            for (kind, _, name) in &missing {
                eprintln!("Error from server (NotFound): {} \"{name}\" not found", kind.as_str().to_ascii_lowercase());
            }
            if missing.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) }
        }
        Err(e) => fail(&e.to_string()),
    }
}

fn fail(e: &str) -> ExitCode {
    eprint!("{e}");
    if !e.ends_with('\n') {
        eprintln!();
    }
    ExitCode::from(1)
}

/// `meshctl get KIND [-n NS | -A]`: a table as kubectl prints it.
pub(crate) fn get(kind: &str, dir: &Path, namespace: &str, all: bool) -> ExitCode {
    let Some(kind) = Kind::from_short_name(kind) else {
        eprintln!(
            "error: the server doesn't have a resource type \"{kind}\" (try vs, dr, gw, se, we, pa, ap, ra, svc, deploy, sa, ns, gtw, httproutes, grpcroutes, gc, refgrant)"
        );
        return ExitCode::from(1);
    };
    let loaded = mesh_config::load::load_paths(&[dir], &mesh_proxy::config::load_options("default"));
    if !dir.is_dir() {
        eprintln!("error: {}: no such config directory", dir.display());
        return ExitCode::from(1);
    }
    // GatewayClass and Namespace are cluster-scoped: listed whatever the namespace, and
    // without a NAMESPACE column, as kubectl does.
    let namespaced = kind.namespaced();
    // A Service's CLUSTER-IP is the registry's: the manifest's, or the one the mesh
    // allocated where it gives none.
    let registry = (kind == Kind::Service).then(|| {
        let snapshot = mesh_config::Snapshot::new(loaded.resources.iter().map(|r| r.resource.clone()));
        Registry::build(&snapshot, &Locator::new())
    });
    let mut rows: Vec<Vec<String>> = loaded
        .resources
        .iter()
        .map(|r| &*r.resource)
        .filter(|r| r.kind() == kind && (all || !namespaced || r.meta().namespace == namespace))
        .map(|r| {
            let m = r.meta();
            let mut row = if all && namespaced { vec![m.namespace.clone()] } else { Vec::new() };
            row.push(m.name.clone());
            row.extend(columns(r, registry.as_ref()));
            row
        })
        .collect();
    if rows.is_empty() {
        if all || !namespaced {
            eprintln!("No resources found");
        } else {
            eprintln!("No resources found in {namespace} namespace.");
        }
        return ExitCode::SUCCESS;
    }
    rows.sort();
    let mut header: Vec<String> = if all && namespaced { vec!["NAMESPACE".into()] } else { Vec::new() };
    header.push("NAME".into());
    header.extend(headers(kind).iter().map(|h| h.to_string()));
    rows.insert(0, header);
    let widths: Vec<usize> =
        (0..rows[0].len()).map(|i| rows.iter().map(|r| r.get(i).map_or(0, String::len)).max().unwrap_or(0)).collect();
    for row in rows {
        let cells: Vec<String> = row.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = widths[i])).collect();
        println!("{}", cells.join("   ").trim_end());
    }
    ExitCode::SUCCESS
}

fn headers(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::VirtualService => &["GATEWAYS", "HOSTS"],
        Kind::DestinationRule => &["HOST"],
        Kind::PeerAuthentication => &["MODE"],
        Kind::AuthorizationPolicy => &["ACTION"],
        Kind::ServiceEntry => &["HOSTS", "LOCATION", "RESOLUTION"],
        Kind::KubernetesGateway => &["CLASS"],
        Kind::GatewayClass => &["CONTROLLER"],
        Kind::Namespace => &["LABELS"],
        Kind::HttpRoute | Kind::GrpcRoute => &["HOSTNAMES"],
        Kind::Service => &["TYPE", "CLUSTER-IP", "PORT(S)"],
        _ => &[],
    }
}

fn list(items: &[String]) -> String {
    format!("[{}]", items.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(","))
}

fn columns(r: &Resource, registry: Option<&Registry>) -> Vec<String> {
    match r {
        Resource::Service(s) => {
            let host = mesh_config::snapshot::resolve_host(&s.metadata.name, &s.metadata.namespace);
            let ips: Vec<String> = registry
                .and_then(|reg| reg.service(&host))
                .map(|svc| svc.addresses.iter().map(|c| c.addr().to_string()).collect())
                .unwrap_or_default();
            let ports: Vec<String> =
                s.spec.ports.iter().map(|p| format!("{}/{}", p.port, p.protocol.as_deref().unwrap_or("TCP"))).collect();
            vec![
                s.spec.service_type.clone().unwrap_or_else(|| "ClusterIP".into()),
                if ips.is_empty() { "None".into() } else { ips.join(",") },
                ports.join(","),
            ]
        }
        Resource::VirtualService(vs) => vec![list(&vs.spec.gateways), list(&vs.spec.hosts)],
        Resource::DestinationRule(dr) => vec![dr.spec.host.clone()],
        Resource::PeerAuthentication(pa) => {
            vec![
                pa.spec
                    .mtls
                    .as_ref()
                    .and_then(|m| m.mode)
                    .map_or("UNSET".into(), |m| format!("{m:?}").to_ascii_uppercase()),
            ]
        }
        Resource::AuthorizationPolicy(ap) => {
            vec![ap.spec.action.map_or("ALLOW".into(), |a| format!("{a:?}").to_ascii_uppercase())]
        }
        Resource::ServiceEntry(se) => vec![
            list(&se.spec.hosts),
            se.spec.location.map_or(String::new(), |l| format!("{l:?}")),
            se.spec.resolution.map_or(String::new(), |r| format!("{r:?}")),
        ],
        Resource::KubernetesGateway(g) => vec![g.spec.gateway_class_name.clone()],
        Resource::GatewayClass(c) => vec![c.spec.controller_name.clone()],
        Resource::Namespace(n) => {
            vec![n.metadata.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")]
        }
        Resource::HttpRoute(r) => vec![list(&r.spec.hostnames)],
        Resource::GrpcRoute(r) => vec![list(&r.spec.hostnames)],
        _ => Vec::new(),
    }
}
