//! Why the mesh could not start.

use std::net::SocketAddr;

/// Why the mesh (an embedded one, or the sidecar process) could not start. Each message
/// names what the user gave: the file, flag or option, and the reason.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MeshError {
    /// The config could not be loaded or watched (a file, a directory, the API server).
    #[error("{0}")]
    Config(String),
    /// Who this workload is could not be settled from the options and the config (no
    /// such Gateway, labels matching no Deployment, a malformed name).
    #[error("{0}")]
    Workload(String),
    /// The mesh CA could not be loaded, created or reached (`location` names it).
    #[error("mesh CA {location}: {message}")]
    Ca {
        /// The CA's directory, file or address.
        location: String,
        /// Why.
        message: String,
    },
    /// The workload certificate could not be issued or does not fit this workload.
    #[error("workload certificate: {0}")]
    Certificate(String),
    /// TLS could not be set up with the workload certificate.
    #[error("TLS: {0}")]
    Tls(String),
    /// The gateway's listeners could not be planned from `--gateway`, `--listen` and the
    /// Gateway's servers (no server on a port, a credential that cannot be read).
    #[error(transparent)]
    Gateway(#[from] crate::GatewayError),
    /// A flag asks for what this build does not carry (`--kube` without the feature `k8s`).
    #[error("{0}")]
    Unsupported(String),
    /// A worker thread or its runtime could not be started.
    #[error("cannot start {what}: {source}")]
    Runtime {
        /// Which thread.
        what: String,
        /// The system's reason.
        #[source]
        source: std::io::Error,
    },
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// Which listener.
        what: String,
        /// Its address.
        addr: SocketAddr,
        /// The system's reason.
        #[source]
        source: std::io::Error,
    },
}
