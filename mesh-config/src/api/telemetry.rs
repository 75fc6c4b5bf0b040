//! `telemetry.istio.io` (v1, v1alpha1): the Telemetry resource. Its `tracing` (sampling,
//! span reporting) and `accessLogging` (on or off, a filter expression) are applied, client
//! or server side; `metrics` is loaded and validated, and the loader says it is not applied
//! yet.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{PolicyTargetReference, WorkloadSelector};

/// `Telemetry.spec`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TelemetrySpec {
    /// Workloads; absent means the whole namespace (or mesh, in the root namespace).
    pub selector: Option<WorkloadSelector>,
    /// A gateway or waypoint the resource applies to (instead of a selector).
    pub target_ref: Option<PolicyTargetReference>,
    /// Several of them.
    pub target_refs: Vec<PolicyTargetReference>,
    /// Tracing overrides; the first entry that matches a side applies.
    pub tracing: Vec<Tracing>,
    /// Metric overrides (not applied yet).
    pub metrics: Vec<Value>,
    /// Access log overrides; the entries whose `match.mode` covers a side apply in order.
    pub access_logging: Vec<AccessLogging>,
}

/// `Telemetry.AccessLogging`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct AccessLogging {
    /// Which side of the proxy this entry is for.
    #[serde(rename = "match")]
    pub match_: Option<TracingSelector>,
    /// Providers by name; empty means the mesh's default (`envoy`, the proxy's stdout).
    pub providers: Vec<ProviderRef>,
    /// Turn access logs off (or, `false`, on).
    pub disabled: Option<bool>,
    /// Only the requests the expression holds for are logged.
    pub filter: Option<AccessLogFilter>,
}

/// `Telemetry.AccessLogging.Filter`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct AccessLogFilter {
    /// A CEL expression over Envoy's attributes (`response.code >= 400`); see
    /// [`mesh_core::cel`] for the part of CEL accepted.
    pub expression: String,
}

/// `Telemetry.Tracing`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Tracing {
    /// Which side of the proxy this entry is for.
    #[serde(rename = "match")]
    pub match_: Option<TracingSelector>,
    /// Providers by name (the mesh config's `extensionProviders`).
    pub providers: Vec<ProviderRef>,
    /// Percentage of requests without a prior sampling decision that are traced.
    pub random_sampling_percentage: Option<f64>,
    /// Propagate context but report no spans.
    pub disable_span_reporting: Option<bool>,
    /// Extra span tags (not applied yet).
    pub custom_tags: Option<Value>,
    /// Sample by the request id (Envoy's default; accepted, the mesh samples at random).
    pub use_request_id_for_trace_sampling: Option<bool>,
    /// Istio's own tags on spans (accepted; the mesh always writes them).
    pub enable_istio_tags: Option<bool>,
}

/// `Telemetry.TracingSelector`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TracingSelector {
    /// Client side, server side, or both (the default).
    pub mode: Option<WorkloadMode>,
}

/// `WorkloadMode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WorkloadMode {
    /// Both sides.
    #[default]
    ClientAndServer,
    /// Outbound only.
    Client,
    /// Inbound only.
    Server,
}

/// `ProviderRef`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ProviderRef {
    /// The provider's name.
    pub name: String,
}
