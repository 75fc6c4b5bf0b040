//! Istio's mesh config (`MeshConfig`, the `mesh` key of the root namespace's `istio`
//! ConfigMap), as users write it: the fields the mesh reads are typed; every other field is
//! kept in `other`, so what is not applied can be reported, never dropped unseen.
//!
//! The providers Istio defines in full (`envoyExtAuthzHttp`, `envoyExtAuthzGrpc`) reject
//! unknown fields, so a typo is an error.

use std::collections::BTreeMap;

use mesh_core::Duration;
use serde::{Deserialize, Serialize};

use super::HttpRetry;

/// `MeshConfig`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MeshConfig {
    /// The trust domain of workload identities (`cluster.local`).
    pub trust_domain: Option<String>,
    /// Other trust domains that name the same workloads.
    pub trust_domain_aliases: Vec<String>,
    /// Where mesh-wide resources live (`istio-system`).
    pub root_namespace: Option<String>,
    /// What happens to traffic for destinations the mesh does not know.
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
    /// The retry policy of routes that set none.
    pub default_http_retry_policy: Option<HttpRetry>,
    /// Whether clients send mTLS to workloads with a sidecar without a DestinationRule.
    pub enable_auto_mtls: Option<bool>,
    /// Where access logs go (`/dev/stdout`); empty: none.
    pub access_log_file: Option<String>,
    /// `TEXT` or `JSON`.
    pub access_log_encoding: Option<AccessLogEncoding>,
    /// Envoy's command-operator format of each access log line.
    pub access_log_format: Option<String>,
    /// Providers used where no Telemetry names one.
    pub default_providers: Option<DefaultProviders>,
    /// Named providers that Telemetry and CUSTOM AuthorizationPolicies refer to.
    pub extension_providers: Vec<ExtensionProvider>,
    /// Defaults of every proxy (`ProxyConfig`).
    pub default_config: Option<ProxyConfig>,
    /// Every other field, as written.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

impl MeshConfig {
    /// The provider named `name`.
    pub fn provider(&self, name: &str) -> Option<&ExtensionProvider> {
        self.extension_providers.iter().find(|p| p.name == name)
    }
}

/// `MeshConfig.OutboundTrafficPolicy`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct OutboundTrafficPolicy {
    /// The mode (`ALLOW_ANY` when absent).
    pub mode: OutboundTrafficMode,
}

/// `MeshConfig.OutboundTrafficPolicy.Mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundTrafficMode {
    /// Unknown destinations are passed through (`PassthroughCluster`).
    #[default]
    AllowAny,
    /// Unknown destinations are refused (`BlackHoleCluster`).
    RegistryOnly,
}

/// `MeshConfig.AccessLogEncoding`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AccessLogEncoding {
    /// One formatted line per request.
    #[default]
    Text,
    /// One JSON object per request.
    Json,
}

/// `MeshConfig.DefaultProviders`: provider names per kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct DefaultProviders {
    /// Tracing providers.
    pub tracing: Vec<String>,
    /// Metrics providers.
    pub metrics: Vec<String>,
    /// Access log providers.
    pub access_logging: Vec<String>,
}

/// `ProxyConfig`: the fields the mesh reads, and the rest as written.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProxyConfig {
    /// Tracing defaults.
    pub tracing: Option<ProxyTracing>,
    /// Every other field, as written.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// `ProxyConfig.tracing`: the fields the mesh reads, and the rest as written.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProxyTracing {
    /// Share of new traces sampled, in percent (1 by default).
    pub sampling: Option<f64>,
    /// Every other field (`zipkin`, `maxPathTagLength`, ...), as written.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// `MeshConfig.ExtensionProvider`: a name and one provider.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ExtensionProvider {
    /// What Telemetry and AuthorizationPolicy `provider.name` refer to.
    pub name: String,
    /// An HTTP external authorizer.
    pub envoy_ext_authz_http: Option<EnvoyExtAuthzHttpProvider>,
    /// A gRPC external authorizer (`envoy.service.auth.v3.Authorization`).
    pub envoy_ext_authz_grpc: Option<EnvoyExtAuthzGrpcProvider>,
    /// OpenTelemetry tracing.
    pub opentelemetry: Option<OpenTelemetryProvider>,
    /// Prometheus metrics.
    pub prometheus: Option<PrometheusProvider>,
    /// Every other provider kind (`zipkin`, `envoyFileAccessLog`, ...), as written.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// `MeshConfig.ExtensionProvider.EnvoyExternalAuthorizationHttpProvider`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct EnvoyExtAuthzHttpProvider {
    /// The authorizer's host (`ext-authz.foo.svc.cluster.local`).
    pub service: String,
    /// Its port.
    pub port: u32,
    /// Check timeout (600 s when absent).
    pub timeout: Option<Duration>,
    /// Prefix added to the checked path.
    pub path_prefix: Option<String>,
    /// Allow when the authorizer cannot be reached.
    pub fail_open: bool,
    /// Status when the authorizer cannot be reached (`"403"` when absent).
    pub status_on_error: Option<String>,
    /// Request headers sent in the check.
    pub include_request_headers_in_check: Vec<String>,
    /// Deprecated name of `includeRequestHeadersInCheck`.
    pub include_headers_in_check: Vec<String>,
    /// Headers added to the check request.
    pub include_additional_headers_in_check: BTreeMap<String, String>,
    /// Send the request body too.
    pub include_request_body_in_check: Option<BodyInCheck>,
    /// Authorizer headers copied onto the upstream request when it allows.
    pub headers_to_upstream_on_allow: Vec<String>,
    /// Authorizer headers copied onto the answer when it denies.
    pub headers_to_downstream_on_deny: Vec<String>,
    /// Authorizer headers copied onto the answer when it allows.
    pub headers_to_downstream_on_allow: Vec<String>,
}

/// `MeshConfig.ExtensionProvider.EnvoyExternalAuthorizationGrpcProvider`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct EnvoyExtAuthzGrpcProvider {
    /// The authorizer's host.
    pub service: String,
    /// Its port.
    pub port: u32,
    /// Check timeout (600 s when absent).
    pub timeout: Option<Duration>,
    /// Allow when the authorizer cannot be reached.
    pub fail_open: bool,
    /// Status when the authorizer cannot be reached (`"403"` when absent).
    pub status_on_error: Option<String>,
    /// Send the request body too.
    pub include_request_body_in_check: Option<BodyInCheck>,
}

/// `EnvoyExternalAuthorizationRequestBody`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct BodyInCheck {
    /// Most body bytes buffered for the check.
    pub max_request_bytes: u32,
    /// Send the first `maxRequestBytes` of a longer body instead of refusing it (413).
    pub allow_partial_message: bool,
    /// Send the body as raw bytes (gRPC) instead of UTF-8 text.
    pub pack_as_bytes: bool,
}

/// `MeshConfig.ExtensionProvider.OpenTelemetryTracingProvider`: the collector's address,
/// and the rest as written.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OpenTelemetryProvider {
    /// The collector's host.
    pub service: String,
    /// Its port.
    pub port: u32,
    /// Longest tag value sent.
    pub max_tag_length: Option<u32>,
    /// Every other field (`http`, `resourceDetectors`, ...), as written.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// `MeshConfig.ExtensionProvider.PrometheusMetricsProvider` (no fields).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusProvider {}
