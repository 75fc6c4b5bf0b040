//! The sidecar's configuration, which is its command line (with the feature `cli`). The
//! flags of issue 6 are pinned: scripts depend on them.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use mesh_config::api::Labels;

use crate::gateway::Listen;

/// The mesh's sidecar proxy: outbound routing for the local app, inbound mTLS and policy in
/// front of it, and an admin endpoint; configured by Istio YAML files, reloaded on change.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "cli", derive(clap::Parser))]
#[cfg_attr(feature = "cli", command(name = "mesh-sidecar", version))]
pub struct Args {
    /// Istio and Kubernetes YAML files or directories (repeat or list several).
    #[cfg_attr(feature = "cli", arg(long, num_args = 1.., required_unless_present = "kube", conflicts_with = "kube", value_name = "PATH"))]
    pub config: Vec<PathBuf>,

    /// Read the config and the registry (Services, EndpointSlices, Pods) from the
    /// Kubernetes API server instead of files: in a pod through its service account, else
    /// through the kubeconfig, as kubectl does.
    #[cfg_attr(feature = "cli", arg(long))]
    pub kube: bool,

    /// With `--kube`: a namespace to watch (repeat; all namespaces by default).
    #[cfg_attr(feature = "cli", arg(long = "kube-namespace", value_name = "NS", requires = "kube"))]
    pub kube_namespaces: Vec<String>,

    /// With `--kube`: a label selector the Istio and Gateway API resources must match
    /// (`key=value,...`).
    #[cfg_attr(feature = "cli", arg(long, value_name = "SELECTOR", requires = "kube"))]
    pub kube_selector: Option<String>,

    /// With `--kube`: how long to wait for the first full list before giving up.
    #[cfg_attr(feature = "cli", arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "60s", requires = "kube"))]
    pub kube_ready_timeout: Duration,

    /// Where the app sends its outbound requests (origin form with a Host header, or
    /// absolute form as to an HTTP proxy).
    #[cfg_attr(feature = "cli", arg(long, value_name = "ADDR", required_unless_present_any = ["gateway", "ca_listen", "capture_outbound", "capture_inbound"]))]
    pub outbound: Option<SocketAddr>,

    /// The outbound capture listener (Istio's 15001, where `mesh-sidecar iptables` sends
    /// every outbound TCP connection of the pod): each connection is taken by its original
    /// destination (a Service's address and port, else `outboundTrafficPolicy`).
    #[cfg_attr(feature = "cli", arg(long, value_name = "ADDR"))]
    pub capture_outbound: Option<SocketAddr>,

    /// The inbound capture listener (Istio's 15006, where `mesh-sidecar iptables` sends
    /// every inbound TCP connection of the pod): each connection is for the app port it was
    /// addressed to, and reaches the app there only through mTLS and policy.
    #[cfg_attr(feature = "cli", arg(long, value_name = "ADDR"))]
    pub capture_inbound: Option<SocketAddr>,

    /// The DNS proxy (Istio's 15053, where `mesh-sidecar iptables --capture-dns` sends the
    /// pod's DNS), on UDP and TCP: the mesh's names answered with their addresses, others
    /// forwarded to the resolvers of /etc/resolv.conf.
    #[cfg_attr(feature = "cli", arg(long, value_name = "ADDR"))]
    pub dns: Option<SocketAddr>,

    /// Where other sidecars reach this workload (mTLS per PeerAuthentication).
    #[cfg_attr(feature = "cli", arg(long, value_name = "ADDR", requires = "app"))]
    pub inbound: Option<SocketAddr>,

    /// The local app that inbound requests are forwarded to.
    #[cfg_attr(feature = "cli", arg(long, value_name = "ADDR", requires = "inbound"))]
    pub app: Option<SocketAddr>,

    /// Admin endpoint: /ready, /stats/prometheus, /config_dump, /clusters, /logging.
    #[cfg_attr(feature = "cli", arg(long, value_name = "ADDR"))]
    pub admin: Option<SocketAddr>,

    /// The workload's namespace (`default`; for a gateway, `istio-system`).
    #[cfg_attr(feature = "cli", arg(long, value_name = "NS"))]
    pub namespace: Option<String>,

    /// The workload's pod labels, `k=v,k=v` (selectors of policies and routes match them);
    /// for a gateway, by default its Gateway's selector.
    #[cfg_attr(feature = "cli", arg(long, value_name = "K=V,...", value_parser = mesh_config::api::parse_labels))]
    pub workload_labels: Option<Labels>,

    /// The workload's service account (its SPIFFE identity); by default the one of the
    /// Deployment whose pod labels these are, else `default`.
    #[cfg_attr(feature = "cli", arg(long, value_name = "SA"))]
    pub service_account: Option<String>,

    /// Run as the ingress gateway serving the Gateway resource `NS/NAME`.
    #[cfg_attr(feature = "cli", arg(long, value_name = "NS/NAME", requires = "listen", conflicts_with_all = ["outbound", "inbound"]))]
    pub gateway: Option<String>,

    /// The gateway's listening address, for the Gateway server whose port is the address's
    /// port (or the only one); `PORT=ADDR` names the server port (repeat per port).
    #[cfg_attr(feature = "cli", arg(long, value_name = "[PORT=]ADDR", requires = "gateway"))]
    pub listen: Vec<Listen>,

    // ---- Added flags (not pinned by the issue) ----
    /// Where a workload (a Deployment) runs on this machine: `NS/WORKLOAD=ADDR`, the address
    /// of its sidecar's inbound listener (repeat for each replica and workload).
    #[cfg_attr(feature = "cli", arg(long = "endpoint", value_name = "NS/WORKLOAD=ADDR", value_parser = parse_endpoint))]
    pub endpoints: Vec<(String, String, SocketAddr)>,

    /// Plain TCP for the app: listen on ADDR and send each connection to the service
    /// `HOST:PORT` (its VirtualService `tcp` routes apply), over mTLS (repeat per port).
    #[cfg_attr(feature = "cli", arg(long = "tcp", value_name = "ADDR=HOST:PORT"))]
    pub tcp: Vec<crate::tcp::Forward>,

    /// The workload's name in telemetry (`destination_workload`); by default the
    /// Deployment whose pod labels match `--workload-labels`.
    #[cfg_attr(feature = "cli", arg(long, value_name = "NAME"))]
    pub workload: Option<String>,

    /// Istio's mesh config (`MeshConfig` YAML, as the `mesh` key of the `istio` ConfigMap):
    /// its `extensionProviders` (`envoyExtAuthzHttp`) answer CUSTOM AuthorizationPolicies.
    #[cfg_attr(feature = "cli", arg(long, value_name = "FILE"))]
    pub mesh_config: Option<PathBuf>,

    /// The mesh CA's directory (`root-cert.pem`, `root-key.pem`), created when missing: every
    /// sidecar on this machine issues its workload certificate from it.
    #[cfg_attr(feature = "cli", arg(long, value_name = "DIR", default_value = ".mesh/ca"))]
    pub ca_dir: PathBuf,

    /// Get the workload certificate from the mesh CA at `https://HOST:PORT` (on a cluster),
    /// proving the identity with the service-account token in --ca-token-file, instead of
    /// issuing it from --ca-dir.
    #[cfg_attr(feature = "cli", arg(long, value_name = "URL", requires_all = ["ca_token_file", "ca_root_file"]))]
    pub ca_address: Option<String>,

    /// With --ca-address: the projected service-account token (audience `mesh-ca`), read
    /// again at each renewal.
    #[cfg_attr(feature = "cli", arg(long, value_name = "PATH", requires = "ca_address"))]
    pub ca_token_file: Option<PathBuf>,

    /// With --ca-address: the mesh root certificate (PEM), trusted for the CA's endpoint and
    /// for every peer.
    #[cfg_attr(feature = "cli", arg(long, value_name = "PATH", requires = "ca_address"))]
    pub ca_root_file: Option<PathBuf>,

    /// Run the mesh CA for a cluster's sidecars on ADDR, issuing from the root in --ca-dir
    /// to pods whose service-account tokens the API server vouches for (TokenReview; needs
    /// --kube). Alone (no --outbound or --gateway) the process is only the CA.
    #[cfg_attr(feature = "cli", arg(long, value_name = "ADDR", requires = "kube"))]
    pub ca_listen: Option<SocketAddr>,

    /// With --ca-listen: a DNS name or address in the CA's server certificate (repeat; by
    /// default the `mesh-ca` Service's names in `mesh-system`, `localhost` and 127.0.0.1).
    #[cfg_attr(feature = "cli", arg(long = "ca-server-name", value_name = "NAME", requires = "ca_listen"))]
    pub ca_server_names: Vec<String>,

    /// Where a gateway finds `credentialName` secrets: `DIR/NAME/tls.crt`, `tls.key` and
    /// `ca.crt`.
    #[cfg_attr(feature = "cli", arg(long, value_name = "DIR", default_value = ".mesh/credentials"))]
    pub credential_dir: PathBuf,

    /// The SPIFFE trust domain.
    #[cfg_attr(feature = "cli", arg(long, value_name = "DOMAIN", default_value = "cluster.local"))]
    pub trust_domain: String,

    /// Most label sets each request metric family (`istio_requests_total` and its
    /// histograms) holds; past it, requests are counted in one `overflow` series and in
    /// `mesh_metric_label_overflow_total`.
    #[cfg_attr(feature = "cli", arg(long, value_name = "N", default_value_t = mesh_telemetry::metrics::DEFAULT_MAX_LABEL_SETS))]
    pub max_label_sets: usize,

    /// Lifetime of this workload's certificate (Istio's `SECRET_TTL`, 24h); it is re-issued
    /// after two thirds of it, new connections get the new one, open ones keep theirs.
    #[cfg_attr(feature = "cli", arg(long, value_name = "DURATION", value_parser = parse_cert_ttl, default_value = "24h"))]
    pub cert_ttl: Duration,

    /// How long in-flight requests may finish after SIGTERM.
    #[cfg_attr(feature = "cli", arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "5s"))]
    pub drain_timeout: Duration,

    /// Largest request body accepted, in bytes (`0`: no limit): a larger Content-Length
    /// gets 413, a body streaming past it fails the request.
    #[cfg_attr(feature = "cli", arg(long, value_name = "BYTES", default_value_t = 100 * 1024 * 1024))]
    pub max_request_bytes: u64,

    /// Close a connection that sends no byte (or completes no TLS handshake) in this time
    /// (`0s`: never); Envoy's `listener_filters_timeout`.
    #[cfg_attr(feature = "cli", arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "15s"))]
    pub first_byte_timeout: Duration,

    /// Answer 408 and close when an HTTP/1.1 request head has not arrived in full this long
    /// after its first byte (`0s`: never); Envoy's `request_headers_timeout`.
    #[cfg_attr(feature = "cli", arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "10s"))]
    pub request_head_timeout: Duration,

    /// Close a keep-alive connection (HTTP/1.1, and HTTP/2 with GOAWAY) after this long
    /// without an open request (`0s`: never); Envoy's `idle_timeout`.
    #[cfg_attr(feature = "cli", arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "1h"))]
    pub idle_timeout: Duration,

    /// Most connections each listener holds (across its worker threads); past it, new
    /// connections are closed at once. By default a quarter of the file-descriptor limit,
    /// which is raised at start to the hard limit.
    #[cfg_attr(feature = "cli", arg(long, value_name = "N"))]
    pub max_connections: Option<usize>,

    /// Access log: `text` (Envoy's default format), `json` or `off`.
    #[cfg_attr(feature = "cli", arg(long, value_name = "FORMAT", default_value = "text"))]
    pub access_log: AccessLogFormat,

    /// How long access log lines may wait in memory before they are written (they are
    /// written in batches, as Envoy's `--file-flush-interval-msec`; `0s`: each line at once).
    #[cfg_attr(feature = "cli", arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "1s"))]
    pub access_log_flush_interval: Duration,

    /// Percentage of new traces sampled (Istio's mesh config
    /// `defaultConfig.tracing.sampling`; its default is 1). A request that arrives with a
    /// sampled trace context is always traced.
    #[cfg_attr(feature = "cli", arg(long, value_name = "PERCENT", default_value_t = 1.0))]
    pub trace_sampling: f64,

    /// Send spans (one per request and proxy side, client and server) to this OTLP/HTTP
    /// collector: Jaeger, Tempo, an OpenTelemetry collector (`http://HOST:4318/v1/traces`).
    #[cfg_attr(feature = "cli", arg(long, value_name = "URL"))]
    pub otlp_endpoint: Option<String>,

    /// Log filter (`info`, `mesh=debug,...`); changeable at run time with
    /// `POST /logging?level=...` on the admin endpoint.
    #[cfg_attr(feature = "cli", arg(long, value_name = "FILTER", default_value = "info"))]
    pub log_level: String,

    /// Worker threads (Istio's proxy default is 2).
    #[cfg_attr(feature = "cli", arg(long, value_name = "N", default_value_t = 2))]
    pub concurrency: usize,
}

impl Args {
    /// Every listener's limits, the connection cap derived from `fd_limit` unless given.
    pub(crate) fn limits(&self, fd_limit: u64) -> crate::conn::Limits {
        use crate::conn::{default_max_connections, timer};
        crate::conn::Limits {
            first_byte: timer(self.first_byte_timeout),
            request_head: timer(self.request_head_timeout),
            idle: timer(self.idle_timeout),
            max_connections: self.max_connections.unwrap_or_else(|| default_max_connections(fd_limit)),
        }
    }
}

/// Access log formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum AccessLogFormat {
    /// Envoy's default text format.
    Text,
    /// One JSON object per line.
    Json,
    /// No access log.
    Off,
}

/// A flag's value that does not parse: the value as given, and what it should be.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidArg {
    /// Not of the flag's shape (`NS/WORKLOAD=ADDR`, `ADDR=HOST:PORT`, `HOST:PORT`, ...).
    #[error("`{value}` is not {shape}")]
    Shape {
        /// The value, or the part of it that is wrong.
        value: String,
        /// What it should look like.
        shape: &'static str,
    },
    /// A socket address that does not parse.
    #[error("`{value}`: {source}")]
    Addr {
        /// The value.
        value: String,
        /// Why.
        source: std::net::AddrParseError,
    },
    /// A port that does not parse.
    #[error("`{value}` is not a port: {source}")]
    Port {
        /// The value.
        value: String,
        /// Why.
        source: std::num::ParseIntError,
    },
    /// `HOST:PORT` without the host.
    #[error("`{0}` has no host")]
    NoHost(String),
    /// A duration that does not parse.
    #[error("`{value}`: {source}")]
    Duration {
        /// The value.
        value: String,
        /// Why.
        source: mesh_core::duration::InvalidDuration,
    },
    /// A certificate lifetime under a second.
    #[error("`{0}`: a certificate must live at least 1s")]
    CertTtl(String),
}

impl InvalidArg {
    pub(crate) fn shape(value: &str, shape: &'static str) -> Self {
        Self::Shape { value: value.to_string(), shape }
    }

    pub(crate) fn addr(value: &str, source: std::net::AddrParseError) -> Self {
        Self::Addr { value: value.to_string(), source }
    }

    pub(crate) fn port(value: &str, source: std::num::ParseIntError) -> Self {
        Self::Port { value: value.to_string(), source }
    }
}

/// `NS/WORKLOAD=ADDR`: where a workload runs.
pub fn parse_endpoint(s: &str) -> Result<(String, String, SocketAddr), InvalidArg> {
    let (who, addr) = s.split_once('=').ok_or_else(|| InvalidArg::shape(s, "NS/WORKLOAD=ADDR"))?;
    let (ns, workload) = who.split_once('/').ok_or_else(|| InvalidArg::shape(who, "NS/WORKLOAD"))?;
    if ns.is_empty() || workload.is_empty() {
        return Err(InvalidArg::shape(who, "NS/WORKLOAD"));
    }
    let addr = addr.parse().map_err(|e| InvalidArg::addr(addr, e))?;
    Ok((ns.to_string(), workload.to_string(), addr))
}

#[cfg_attr(not(feature = "cli"), allow(dead_code))]
fn parse_duration(s: &str) -> Result<Duration, InvalidArg> {
    s.parse::<mesh_core::duration::Duration>()
        .map(mesh_core::duration::Duration::get)
        .map_err(|source| InvalidArg::Duration { value: s.to_string(), source })
}

/// A certificate lifetime: at least a second (it is re-issued after two thirds of it).
#[cfg_attr(not(feature = "cli"), allow(dead_code))]
fn parse_cert_ttl(s: &str) -> Result<Duration, InvalidArg> {
    let d = parse_duration(s)?;
    if d < Duration::from_secs(1) {
        return Err(InvalidArg::CertTtl(s.to_string()));
    }
    Ok(d)
}

#[cfg(all(test, feature = "cli"))]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn pinned_flags_parse() {
        let a = Args::try_parse_from([
            "mesh-sidecar",
            "--config",
            "a.yaml",
            "dir",
            "--outbound",
            "127.0.0.1:15001",
            "--inbound",
            "127.0.0.1:15006",
            "--app",
            "127.0.0.1:9080",
            "--admin",
            "127.0.0.1:15000",
            "--namespace",
            "bookinfo",
            "--workload-labels",
            "app=reviews,version=v2",
            "--service-account",
            "bookinfo-reviews",
            "--endpoint",
            "default/ratings-v1=127.0.0.1:9081",
        ])
        .unwrap();
        assert_eq!(a.config, [PathBuf::from("a.yaml"), PathBuf::from("dir")]);
        assert_eq!(a.workload_labels.as_ref().unwrap().get("version").map(String::as_str), Some("v2"));
        assert_eq!(a.endpoints, [("default".into(), "ratings-v1".into(), "127.0.0.1:9081".parse().unwrap())]);
        assert_eq!(a.drain_timeout, Duration::from_secs(5));
        assert_eq!(a.cert_ttl, Duration::from_secs(24 * 3600));
        let limits = a.limits(1024);
        assert_eq!(limits.first_byte, Some(crate::conn::Limits::FIRST_BYTE));
        assert_eq!(limits.request_head, Some(crate::conn::Limits::REQUEST_HEAD));
        assert_eq!(limits.idle, Some(crate::conn::Limits::IDLE));
        assert_eq!(limits.max_connections, 240);
    }

    #[test]
    fn connection_limits_are_flags() {
        let a = Args::try_parse_from([
            "mesh-sidecar",
            "--config",
            "a",
            "--outbound",
            "127.0.0.1:1",
            "--first-byte-timeout",
            "0s",
            "--request-head-timeout",
            "2s",
            "--idle-timeout",
            "90s",
            "--max-connections",
            "7",
        ])
        .unwrap();
        let limits = a.limits(1 << 20);
        assert_eq!(limits.first_byte, None);
        assert_eq!(limits.request_head, Some(Duration::from_secs(2)));
        assert_eq!(limits.idle, Some(Duration::from_secs(90)));
        assert_eq!(limits.max_connections, 7);
    }

    #[test]
    fn bad_values_are_refused_with_the_reason() {
        let err = |args: &[&str]| Args::try_parse_from(args).unwrap_err().to_string();
        assert!(err(&["mesh-sidecar", "--config", "a", "--outbound", "nope"]).contains("invalid"));
        assert!(
            err(&["mesh-sidecar", "--config", "a", "--outbound", "127.0.0.1:1", "--workload-labels", "app"])
                .contains("invalid label \"app\"")
        );
        assert!(
            err(&["mesh-sidecar", "--config", "a", "--outbound", "127.0.0.1:1", "--inbound", "127.0.0.1:2"])
                .contains("--app")
        );
        assert!(err(&["mesh-sidecar", "--config", "a"]).contains("--outbound"));
        assert!(
            err(&[
                "mesh-sidecar",
                "--config",
                "a",
                "--gateway",
                "d/g",
                "--listen",
                "1.2.3.4:1",
                "--outbound",
                "1.2.3.4:2"
            ])
            .contains("cannot be used with")
        );
        assert!(err(&["mesh-sidecar", "--config", "a", "--gateway", "d/g"]).contains("--listen"));
    }

    #[test]
    fn a_gateway_needs_no_outbound_and_listens_per_port() {
        let a = Args::try_parse_from([
            "mesh-sidecar",
            "--config",
            "a",
            "--gateway",
            "default/bookinfo-gateway",
            "--listen",
            "127.0.0.1:8080",
            "--listen",
            "443=127.0.0.1:8443",
        ])
        .unwrap();
        assert_eq!(a.listen.len(), 2);
        assert_eq!(a.listen[1].port, Some(443));
    }
}
