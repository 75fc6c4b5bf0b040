//! `meshctl`: the mesh's command line, in the spirit of istioctl and kubectl.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

mod analyze;

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Analyze { paths, namespace, quiet } => analyze::run(&paths, &namespace, quiet),
    }
}
