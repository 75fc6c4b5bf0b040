//! `meshctl`: the mesh's command line, in the spirit of istioctl and kubectl.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

mod analyze;
mod args;
mod authz;
mod route;

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
        #[arg(required = true)]
        paths: Vec<PathBuf>,
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Analyze { paths, namespace, quiet } => analyze::run(&paths, &namespace, quiet),
        Command::Route(args) => route::run(&args),
        Command::Authz(args) => authz::run(&args),
    }
}
