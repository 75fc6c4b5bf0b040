//! `meshctl`: the mesh's command line, in the spirit of istioctl and kubectl.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

mod analyze;
mod args;
mod authz;
mod ca;
mod inject;
mod route;
mod status;
mod store;

#[derive(Debug, Parser)]
#[command(
    name = "meshctl",
    version,
    about = "Command line for the mesh: analyze, route, authz, apply and get Istio config"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate Istio and Kubernetes config files and directories, as `istioctl analyze`
    /// does. Prints one finding per line, `FILE:LINE: error|warning|note: KIND NS/NAME:
    /// FIELD: message`, and exits 1 when any finding is an error.
    Analyze {
        /// Files or directories (searched recursively for .yaml, .yml and .json).
        #[arg(required_unless_present = "kube", conflicts_with = "kube")]
        paths: Vec<PathBuf>,
        /// Analyze what the cluster holds (kubeconfig, or in-cluster) instead of files.
        #[arg(long)]
        kube: bool,
        /// Namespace of resources that do not name one.
        #[arg(short, long, default_value = "default")]
        namespace: String,
        /// Print errors and warnings only, not notes about skipped kinds.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Explain the routing decision for one request, as a sidecar (or a gateway) would make
    /// it. Prints one JSON object and exits 0 whenever a decision was made (no route
    /// included); exits 1 with a message on stderr for invalid config or arguments.
    ///
    /// Output: {"virtual_service": "ns/name"|null, "route_index": N|null, "route_name":
    /// S|null, "action": "route"|"redirect"|"direct_response"|"no_route", "status":
    /// null|404|301|..., "destinations": [{"host", "subset", "port", "percent"}],
    /// "timeout_ms": N|null, "retries": {"attempts", "per_try_timeout_ms", "retry_on"}|null,
    /// "fault": null|{"delay": null|{"ms", "percent"}, "abort": null|{"http_status",
    /// "grpc_status", "percent"}}}. `percent` is each destination's effective share.
    #[command(verbatim_doc_comment)]
    Route(route::RouteArgs),
    /// Explain the authorization decision for one request to a workload, as its sidecar
    /// makes it (CUSTOM, then DENY, then ALLOW). Prints one JSON object:
    /// {"decision": "ALLOW"|"DENY", "action": "CUSTOM"|"DENY"|"ALLOW"|null, "policy":
    /// "ns/name"|null, "audit": ["ns/name", ...]}. Without --principal the caller is
    /// plaintext. `policy` is null when no policy applies, or when ALLOW policies apply and
    /// none matched. A matching CUSTOM policy denies here (no provider is reachable).
    /// Exits 1 with a message on stderr for invalid config or arguments.
    #[command(verbatim_doc_comment)]
    Authz(authz::AuthzArgs),
    /// Validate FILE and put its resources into the running mesh's config directory
    /// (replacing earlier definitions of the same kind, namespace and name). Invalid config
    /// is refused with analyze's findings and nothing is written. Prints `KIND.GROUP/NAME
    /// created|configured|unchanged` per resource.
    Apply {
        /// The file to apply.
        #[arg(short = 'f', long = "filename", value_name = "FILE")]
        file: PathBuf,
        /// The directory the mesh watches (`bookinfo up --config-dir`). Resources that name
        /// no namespace are in `default`, as the mesh loads them.
        #[arg(long, value_name = "DIR", default_value = ".mesh/config")]
        config_dir: PathBuf,
    },
    /// Remove FILE's resources from the running mesh's config directory.
    Delete {
        /// The file whose resources to delete.
        #[arg(short = 'f', long = "filename", value_name = "FILE")]
        file: PathBuf,
        /// The directory the mesh watches.
        #[arg(long, value_name = "DIR", default_value = ".mesh/config")]
        config_dir: PathBuf,
    },
    /// Add the mesh sidecar to every Deployment of a manifest, as `istioctl kube-inject`
    /// does (the sidecar container configured from the API server, HTTP_PROXY for the
    /// app, the service-account token for its certificate); prints the manifest with
    /// everything else unchanged.
    KubeInject(inject::InjectArgs),
    /// Create the mesh root CA for a cluster in DIR (or reuse the one there) and print the
    /// kubectl commands that give it to the CA (a Secret) and to the pods of each meshed
    /// namespace (the ConfigMap `mesh-ca-root`).
    CreateCa {
        /// Where the root's certificate and key are kept.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The SPIFFE trust domain.
        #[arg(long, default_value = "cluster.local")]
        trust_domain: String,
        /// A namespace whose pods get the root (repeat).
        #[arg(long = "namespace", value_name = "NS", default_values_t = ["default".to_string(), "istio-system".to_string()])]
        namespaces: Vec<String>,
    },
    /// List the applied resources of a kind (vs, dr, gw, se, we, pa, ap, ra, svc, deploy,
    /// sa), as kubectl does.
    Get {
        /// The kind.
        kind: String,
        /// The directory the mesh watches.
        #[arg(long, value_name = "DIR", default_value = ".mesh/config")]
        config_dir: PathBuf,
        /// Namespace to list.
        #[arg(short, long, default_value = "default")]
        namespace: String,
        /// Every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
    /// One line per proxy of the running mesh, as `istioctl proxy-status`: name, namespace,
    /// sidecar, gateway or embedded, the config generation in force and when it loaded, its
    /// version, whether that is the config directory's latest (SYNCED or STALE), and the
    /// errors of its last reload. The proxies are those of the running `bookinfo up`
    /// (`--state-dir`) or `--admin ADDR...`. Exits 1 when a proxy does not answer.
    ProxyStatus(status::ProxyStatusArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Analyze { kube: true, quiet, .. } => analyze::run_kube(quiet),
        Command::Analyze { paths, namespace, quiet, .. } => analyze::run(&paths, &namespace, quiet),
        Command::Route(args) => route::run(&args),
        Command::Authz(args) => authz::run(&args),
        Command::Apply { file, config_dir } => store::apply(&file, &config_dir),
        Command::Delete { file, config_dir } => store::delete(&file, &config_dir),
        Command::KubeInject(args) => inject::run(&args),
        Command::CreateCa { dir, trust_domain, namespaces } => ca::run(&dir, &trust_domain, &namespaces),
        Command::Get { kind, config_dir, namespace, all_namespaces } => {
            store::get(&kind, &config_dir, &namespace, all_namespaces)
        }
        Command::ProxyStatus(args) => status::run(&args),
    }
}
