//! The Kubernetes kinds the mesh needs: Service, ServiceAccount, Deployment, Namespace on one machine;
//! Pod and EndpointSlice too when the registry comes from a cluster's API server.
//!
//! Only the fields the mesh reads are modelled. Unlike Istio specs, other fields
//! (volumes, securityContext, images...) are accepted and ignored: they belong to the
//! platform, not to the mesh.

use serde::{Deserialize, Serialize};

use super::{Ignored, Labels, ObjectMeta};

/// A Kubernetes object of the core kinds, lenient about fields the mesh does not read.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeObject<S> {
    /// `v1`, `apps/v1`.
    pub api_version: String,
    /// The kind.
    pub kind: String,
    /// Metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The spec.
    #[serde(default)]
    pub spec: S,
    /// Controller status; not kept.
    #[serde(default, skip_serializing)]
    pub status: Ignored,
}

/// `Service.spec`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ServiceSpec {
    /// Ports.
    pub ports: Vec<ServicePort>,
    /// Pod labels selected.
    pub selector: Labels,
    /// `ClusterIP`, `NodePort`, ...
    #[serde(rename = "type")]
    pub service_type: Option<String>,
    /// The cluster IP, if fixed (`None`: headless, no virtual address).
    #[serde(rename = "clusterIP")]
    pub cluster_ip: Option<String>,
    /// The cluster IPs of a dual-stack Service (the first is `clusterIP`).
    #[serde(rename = "clusterIPs")]
    pub cluster_ips: Vec<String>,
}

/// `ServicePort`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ServicePort {
    /// Name (its prefix gives the protocol in Istio: `http`, `grpc`, `tcp`, ...).
    pub name: Option<String>,
    /// Service port.
    pub port: u32,
    /// Container port, by number or name; the service port when absent.
    pub target_port: Option<IntOrString>,
    /// `TCP`, `UDP`, `SCTP`.
    pub protocol: Option<String>,
    /// Application protocol (`http`, `grpc`, ...).
    pub app_protocol: Option<String>,
    /// Node port.
    pub node_port: Option<u32>,
}

/// A port given by number or by name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IntOrString {
    /// A number.
    Int(u32),
    /// A name.
    String(String),
}

/// `ServiceAccount` has no spec; this keeps the shape uniform.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceAccountSpec {}

/// `Namespace.spec` (finalizers only, which the mesh does not read); the labels in its
/// metadata are what matter.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceSpec {}

/// `Deployment.spec`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DeploymentSpec {
    /// Replica count (default 1).
    pub replicas: Option<u32>,
    /// Pod selector.
    pub selector: LabelSelector,
    /// Pod template.
    pub template: PodTemplate,
}

/// `LabelSelector` (matchLabels only).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LabelSelector {
    /// Labels, ANDed.
    pub match_labels: Labels,
}

/// `PodTemplateSpec`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodTemplate {
    /// Pod labels and annotations.
    pub metadata: ObjectMeta,
    /// Pod spec.
    pub spec: PodSpec,
}

/// `PodSpec`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodSpec {
    /// Identity of the pods.
    pub service_account_name: Option<String>,
    /// Containers.
    pub containers: Vec<Container>,
}

/// `Container`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Container {
    /// Name.
    pub name: String,
    /// Ports.
    pub ports: Vec<ContainerPort>,
    /// Environment.
    pub env: Vec<EnvVar>,
}

/// `ContainerPort`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ContainerPort {
    /// Port.
    pub container_port: u32,
    /// Name.
    pub name: Option<String>,
    /// Protocol.
    pub protocol: Option<String>,
}

/// `EnvVar` (literal values; `valueFrom` is accepted and not resolved).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EnvVar {
    /// Name.
    pub name: String,
    /// Value.
    pub value: Option<String>,
}

/// A `discovery.k8s.io/v1` EndpointSlice: where a Service's pods are, and whether they are
/// ready. It has no `spec`: its fields sit at the top level.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSlice {
    /// `discovery.k8s.io/v1`.
    pub api_version: String,
    /// `EndpointSlice`.
    pub kind: String,
    /// Metadata; the label `kubernetes.io/service-name` names the Service.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// `IPv4`, `IPv6` or `FQDN`.
    #[serde(default)]
    pub address_type: String,
    /// The endpoints.
    #[serde(default)]
    pub endpoints: Vec<SliceEndpoint>,
    /// The ports every endpoint of the slice serves.
    #[serde(default)]
    pub ports: Vec<SlicePort>,
}

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// One endpoint of a slice.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SliceEndpoint {
    /// Addresses (one, in practice).
    pub addresses: Vec<String>,
    /// Readiness.
    pub conditions: SliceConditions,
    /// The Pod behind it.
    pub target_ref: Option<ObjectReference>,
    /// Node name.
    pub node_name: Option<String>,
}

/// `EndpointConditions`: absent means "unknown", which Kubernetes says to treat as ready.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SliceConditions {
    /// Ready to receive traffic.
    pub ready: Option<bool>,
    /// Serving (possibly while terminating).
    pub serving: Option<bool>,
    /// Terminating.
    pub terminating: Option<bool>,
}

impl SliceConditions {
    /// Whether traffic may go there (`ready`, absent counting as ready).
    pub fn is_ready(&self) -> bool {
        self.ready.unwrap_or(true)
    }
}

/// `ObjectReference`: the fields the mesh reads.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ObjectReference {
    /// Kind (`Pod`).
    pub kind: String,
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: Option<String>,
}

/// `EndpointPort`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SlicePort {
    /// The Service port's name (empty for an unnamed port).
    pub name: Option<String>,
    /// The port the endpoints listen on.
    pub port: Option<u32>,
    /// `TCP`, `UDP`, `SCTP`.
    pub protocol: Option<String>,
    /// Application protocol.
    pub app_protocol: Option<String>,
}
