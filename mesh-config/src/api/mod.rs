//! Serde types for the Istio and Kubernetes resources, exactly as users write them.
//!
//! Names follow the YAML (camelCase), oneofs are enums, and every Istio `spec` rejects
//! unknown fields so a typo is an error, never silently ignored. Optional fields stay
//! `Option` so a resource serializes back to what the user wrote; Istio's defaults are
//! given by accessor methods (`HttpRedirect::code`, `Percent::of_or`, ...).
//!
//! Types here are the *config* schema. Runtime policy is compiled from them once, in the
//! feature crates, with `TryFrom`.

use serde::{Deserialize, Serialize};

/// The Gateway API kinds (`gateway.networking.k8s.io`), under their own path: their
/// `HttpRoute*` types are not Istio's (`api::HttpRoute` is a VirtualService entry).
pub mod gateway_api;
mod kube;
/// Istio's mesh config (`MeshConfig`), under its own path.
pub mod mesh;
mod networking;
mod security;
mod telemetry;

use gateway_api::{GROUP, GatewayClassSpec, GrpcRouteSpec, HttpRouteSpec, KubernetesGatewaySpec, ReferenceGrantSpec};
pub use kube::*;
pub use networking::*;
pub use security::*;
pub use telemetry::*;

pub use mesh_core::Labels;

/// A label that is not `key=value` ([`parse_labels`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidLabel(pub String);

impl std::fmt::Display for InvalidLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid label {:?}: use key=value", self.0)
    }
}

impl std::error::Error for InvalidLabel {}

/// `k=v,k=v` (as command lines take pod labels) into labels.
pub fn parse_labels(s: &str) -> Result<Labels, InvalidLabel> {
    s.split(',')
        .filter(|kv| !kv.trim().is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
            _ => Err(InvalidLabel(kv.to_string())),
        })
        .collect()
}

/// Kubernetes object metadata: the fields the mesh reads. Other metadata (managedFields,
/// ownerReferences, ...) is accepted and ignored, as it carries no mesh semantics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ObjectMeta {
    /// Object name.
    pub name: String,
    /// Namespace; the loader sets `default` when it is absent.
    pub namespace: String,
    /// Labels.
    pub labels: Labels,
    /// Annotations (e.g. `istio.io/dry-run`).
    pub annotations: Labels,
    /// Creation time (RFC 3339); orders policies "oldest first" where Istio does.
    pub creation_timestamp: Option<String>,
    /// Resource version as the API server reports it.
    pub resource_version: Option<String>,
    /// Generation as the API server reports it.
    pub generation: Option<i64>,
    /// Unique id as the API server reports it.
    pub uid: Option<String>,
    /// The controllers owning the object (a Pod's ReplicaSet): names a pod's workload.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub owner_references: Vec<OwnerReference>,
}

/// `metadata.ownerReferences[]`: the fields the mesh reads.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OwnerReference {
    /// Owner kind (`ReplicaSet`, `StatefulSet`, ...).
    pub kind: String,
    /// Owner name.
    pub name: String,
    /// Whether it is the managing controller.
    pub controller: Option<bool>,
}

/// A typed Kubernetes object: `apiVersion`, `kind`, `metadata` and a `spec`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Object<S> {
    /// `group/version`, e.g. `networking.istio.io/v1`.
    pub api_version: String,
    /// The kind, e.g. `VirtualService`.
    pub kind: String,
    /// Metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The spec; absent and `{}` are the same.
    #[serde(default)]
    pub spec: S,
    /// Status written by a controller; carries no configuration and is not kept.
    #[serde(default, skip_serializing)]
    pub status: Ignored,
}

/// A field that is read and thrown away (controller-written `status`); every value
/// compares equal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Ignored;

impl<'de> Deserialize<'de> for Ignored {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d).map(|_| Ignored)
    }
}

/// Istio `StringMatch`: exactly one of `exact`, `prefix` or `regex`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "StringMatchRepr", into = "StringMatchRepr")]
pub enum StringMatch {
    /// Equal to the value (case-sensitive).
    Exact(String),
    /// Starts with the value (a plain string prefix).
    Prefix(String),
    /// RE2 regex, full match.
    Regex(String),
}

#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StringMatchRepr {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    regex: Option<String>,
}

impl TryFrom<StringMatchRepr> for StringMatch {
    type Error = String;
    fn try_from(r: StringMatchRepr) -> Result<Self, String> {
        match (r.exact, r.prefix, r.regex) {
            (Some(e), None, None) => Ok(Self::Exact(e)),
            (None, Some(p), None) => Ok(Self::Prefix(p)),
            (None, None, Some(r)) => Ok(Self::Regex(r)),
            (None, None, None) => Err("one of exact, prefix or regex must be set".into()),
            _ => Err("only one of exact, prefix or regex may be set".into()),
        }
    }
}

impl From<StringMatch> for StringMatchRepr {
    fn from(m: StringMatch) -> Self {
        match m {
            StringMatch::Exact(e) => Self { exact: Some(e), ..Self::default() },
            StringMatch::Prefix(p) => Self { prefix: Some(p), ..Self::default() },
            StringMatch::Regex(r) => Self { regex: Some(r), ..Self::default() },
        }
    }
}

/// A header or query-parameter condition: a [`StringMatch`], or `{}` meaning "present".
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "StringMatchRepr", into = "StringMatchRepr")]
pub enum ValueMatch {
    /// Written `{}`: the header or parameter is present.
    Present,
    /// A string condition.
    Match(StringMatch),
}

impl ValueMatch {
    /// The string condition, `None` for presence.
    pub fn string_match(&self) -> Option<&StringMatch> {
        match self {
            Self::Present => None,
            Self::Match(m) => Some(m),
        }
    }
}

impl TryFrom<StringMatchRepr> for ValueMatch {
    type Error = String;
    fn try_from(r: StringMatchRepr) -> Result<Self, String> {
        if r.exact.is_none() && r.prefix.is_none() && r.regex.is_none() {
            return Ok(Self::Present);
        }
        StringMatch::try_from(r).map(Self::Match)
    }
}

impl From<ValueMatch> for StringMatchRepr {
    fn from(m: ValueMatch) -> Self {
        match m {
            ValueMatch::Present => Self::default(),
            ValueMatch::Match(m) => m.into(),
        }
    }
}

/// Istio `Percent`: a double in 0..=100.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Percent {
    /// The percentage.
    pub value: f64,
}

/// `workloadSelector` / `selector`: pods whose labels include all of these.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct WorkloadSelector {
    /// Label equality conditions, ANDed.
    pub match_labels: Labels,
}

/// Every kind the loader understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    /// networking.istio.io VirtualService
    VirtualService,
    /// networking.istio.io DestinationRule
    DestinationRule,
    /// networking.istio.io Gateway
    Gateway,
    /// networking.istio.io ServiceEntry
    ServiceEntry,
    /// networking.istio.io WorkloadEntry
    WorkloadEntry,
    /// networking.istio.io Sidecar
    Sidecar,
    /// security.istio.io PeerAuthentication
    PeerAuthentication,
    /// security.istio.io AuthorizationPolicy
    AuthorizationPolicy,
    /// security.istio.io RequestAuthentication
    RequestAuthentication,
    /// telemetry.istio.io Telemetry
    Telemetry,
    /// core/v1 Service
    Service,
    /// core/v1 ServiceAccount
    ServiceAccount,
    /// apps/v1 Deployment
    Deployment,
    /// core/v1 Pod (read from the Kubernetes API: labels and identity behind endpoints)
    Pod,
    /// discovery.k8s.io/v1 EndpointSlice (read from the Kubernetes API: endpoint addresses)
    EndpointSlice,
    /// core/v1 Namespace (its labels, for Gateway API `allowedRoutes` selectors)
    Namespace,
    /// gateway.networking.k8s.io GatewayClass
    GatewayClass,
    /// gateway.networking.k8s.io Gateway (the Gateway API's; [`Kind::Gateway`] is Istio's)
    KubernetesGateway,
    /// gateway.networking.k8s.io HTTPRoute
    HttpRoute,
    /// gateway.networking.k8s.io GRPCRoute
    GrpcRoute,
    /// gateway.networking.k8s.io ReferenceGrant
    ReferenceGrant,
}

impl Kind {
    /// Every kind, in a stable order.
    pub const ALL: [Kind; 21] = [
        Kind::VirtualService,
        Kind::DestinationRule,
        Kind::Gateway,
        Kind::ServiceEntry,
        Kind::WorkloadEntry,
        Kind::Sidecar,
        Kind::PeerAuthentication,
        Kind::AuthorizationPolicy,
        Kind::RequestAuthentication,
        Kind::Telemetry,
        Kind::Service,
        Kind::ServiceAccount,
        Kind::Deployment,
        Kind::Pod,
        Kind::EndpointSlice,
        Kind::Namespace,
        Kind::GatewayClass,
        Kind::KubernetesGateway,
        Kind::HttpRoute,
        Kind::GrpcRoute,
        Kind::ReferenceGrant,
    ];

    /// The `kind:` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::VirtualService => "VirtualService",
            Kind::DestinationRule => "DestinationRule",
            Kind::Gateway => "Gateway",
            Kind::ServiceEntry => "ServiceEntry",
            Kind::WorkloadEntry => "WorkloadEntry",
            Kind::Sidecar => "Sidecar",
            Kind::PeerAuthentication => "PeerAuthentication",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
            Kind::RequestAuthentication => "RequestAuthentication",
            Kind::Telemetry => "Telemetry",
            Kind::Service => "Service",
            Kind::ServiceAccount => "ServiceAccount",
            Kind::Deployment => "Deployment",
            Kind::Pod => "Pod",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Namespace => "Namespace",
            Kind::GatewayClass => "GatewayClass",
            Kind::KubernetesGateway => "Gateway",
            Kind::HttpRoute => "HTTPRoute",
            Kind::GrpcRoute => "GRPCRoute",
            Kind::ReferenceGrant => "ReferenceGrant",
        }
    }

    /// The API group (`""` for the core group).
    pub fn group(self) -> &'static str {
        match self {
            Kind::VirtualService
            | Kind::DestinationRule
            | Kind::Gateway
            | Kind::ServiceEntry
            | Kind::WorkloadEntry
            | Kind::Sidecar => "networking.istio.io",
            Kind::PeerAuthentication | Kind::AuthorizationPolicy | Kind::RequestAuthentication => "security.istio.io",
            Kind::Telemetry => "telemetry.istio.io",
            Kind::Service | Kind::ServiceAccount | Kind::Pod | Kind::Namespace => "",
            Kind::Deployment => "apps",
            Kind::EndpointSlice => "discovery.k8s.io",
            Kind::GatewayClass | Kind::KubernetesGateway | Kind::HttpRoute | Kind::GrpcRoute | Kind::ReferenceGrant => {
                GROUP
            }
        }
    }

    /// The versions of the group this kind is accepted in.
    pub fn versions(self) -> &'static [&'static str] {
        match self {
            Kind::ReferenceGrant => return &["v1beta1"],
            Kind::GrpcRoute => return &["v1"],
            _ => {}
        }
        match self.group() {
            GROUP => &["v1", "v1beta1"],
            "networking.istio.io" => &["v1", "v1beta1", "v1alpha3"],
            "security.istio.io" => &["v1", "v1beta1"],
            "telemetry.istio.io" => &["v1", "v1alpha1"],
            _ => &["v1"],
        }
    }

    /// Whether objects of this kind live in a namespace (GatewayClass and Namespace do not:
    /// they are looked up by name alone, and the Kubernetes source watches them cluster-wide).
    pub fn namespaced(self) -> bool {
        !matches!(self, Kind::GatewayClass | Kind::Namespace)
    }

    /// The kind for a `kind:` string and group, if it is one the mesh uses.
    pub fn from_kind_and_group(kind: &str, group: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == kind && k.group() == group)
    }

    /// Short names as kubectl and istioctl accept them (`vs`, `dr`, `gw`, ...), and
    /// `resource.group` (`gateways.gateway.networking.k8s.io`) where a name is in two groups.
    /// A bare `gateway(s)` is Istio's, as `meshctl` has always read it; `gtw` is the Gateway
    /// API's short name.
    pub fn from_short_name(name: &str) -> Option<Kind> {
        let lower = name.to_ascii_lowercase();
        if let Some((resource, group)) = lower.split_once('.') {
            let kind = Kind::from_short_name(resource)?;
            return match (kind, group) {
                (Kind::Gateway | Kind::KubernetesGateway, GROUP) => Some(Kind::KubernetesGateway),
                (Kind::Gateway | Kind::KubernetesGateway, "networking.istio.io") => Some(Kind::Gateway),
                (k, g) if k.group() == g || (g == "core" && k.group().is_empty()) => Some(k),
                _ => None,
            };
        }
        let k = match lower.as_str() {
            "vs" | "virtualservice" | "virtualservices" => Kind::VirtualService,
            "dr" | "destinationrule" | "destinationrules" => Kind::DestinationRule,
            "gw" | "gateway" | "gateways" => Kind::Gateway,
            "se" | "serviceentry" | "serviceentries" => Kind::ServiceEntry,
            "we" | "workloadentry" | "workloadentries" => Kind::WorkloadEntry,
            "sidecar" | "sidecars" => Kind::Sidecar,
            "pa" | "peerauthentication" | "peerauthentications" => Kind::PeerAuthentication,
            "ap" | "authorizationpolicy" | "authorizationpolicies" => Kind::AuthorizationPolicy,
            "ra" | "requestauthentication" | "requestauthentications" => Kind::RequestAuthentication,
            "telemetry" | "telemetries" => Kind::Telemetry,
            "svc" | "service" | "services" => Kind::Service,
            "sa" | "serviceaccount" | "serviceaccounts" => Kind::ServiceAccount,
            "deploy" | "deployment" | "deployments" => Kind::Deployment,
            "po" | "pod" | "pods" => Kind::Pod,
            "endpointslice" | "endpointslices" => Kind::EndpointSlice,
            "ns" | "namespace" | "namespaces" => Kind::Namespace,
            "gc" | "gatewayclass" | "gatewayclasses" => Kind::GatewayClass,
            "gtw" => Kind::KubernetesGateway,
            "httproute" | "httproutes" => Kind::HttpRoute,
            "grpcroute" | "grpcroutes" => Kind::GrpcRoute,
            "refgrant" | "referencegrant" | "referencegrants" => Kind::ReferenceGrant,
            _ => return None,
        };
        Some(k)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One loaded resource of a kind the mesh uses.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
#[allow(clippy::large_enum_variant)] // Held behind an `Arc`; boxing each variant adds nothing.
pub enum Resource {
    /// A VirtualService.
    VirtualService(Object<VirtualServiceSpec>),
    /// A DestinationRule.
    DestinationRule(Object<DestinationRuleSpec>),
    /// A Gateway.
    Gateway(Object<GatewaySpec>),
    /// A ServiceEntry.
    ServiceEntry(Object<ServiceEntrySpec>),
    /// A WorkloadEntry.
    WorkloadEntry(Object<WorkloadEntrySpec>),
    /// A Sidecar.
    Sidecar(Object<SidecarSpec>),
    /// A PeerAuthentication.
    PeerAuthentication(Object<PeerAuthenticationSpec>),
    /// An AuthorizationPolicy.
    AuthorizationPolicy(Object<AuthorizationPolicySpec>),
    /// A RequestAuthentication.
    RequestAuthentication(Object<RequestAuthenticationSpec>),
    /// A Telemetry.
    Telemetry(Object<TelemetrySpec>),
    /// A Kubernetes Service.
    Service(KubeObject<ServiceSpec>),
    /// A Kubernetes ServiceAccount.
    ServiceAccount(KubeObject<ServiceAccountSpec>),
    /// A Kubernetes Deployment.
    Deployment(KubeObject<DeploymentSpec>),
    /// A Kubernetes Pod.
    Pod(KubeObject<PodSpec>),
    /// A Kubernetes EndpointSlice.
    EndpointSlice(EndpointSlice),
    /// A Kubernetes Namespace.
    Namespace(KubeObject<NamespaceSpec>),
    /// A Gateway API GatewayClass.
    GatewayClass(Object<GatewayClassSpec>),
    /// A Gateway API Gateway.
    KubernetesGateway(Object<KubernetesGatewaySpec>),
    /// A Gateway API HTTPRoute.
    HttpRoute(Object<HttpRouteSpec>),
    /// A Gateway API GRPCRoute.
    GrpcRoute(Object<GrpcRouteSpec>),
    /// A Gateway API ReferenceGrant.
    ReferenceGrant(Object<ReferenceGrantSpec>),
}

macro_rules! each_resource {
    ($value:expr, $o:ident => $body:expr) => {
        match $value {
            Resource::VirtualService($o) => $body,
            Resource::DestinationRule($o) => $body,
            Resource::Gateway($o) => $body,
            Resource::ServiceEntry($o) => $body,
            Resource::WorkloadEntry($o) => $body,
            Resource::Sidecar($o) => $body,
            Resource::PeerAuthentication($o) => $body,
            Resource::AuthorizationPolicy($o) => $body,
            Resource::RequestAuthentication($o) => $body,
            Resource::Telemetry($o) => $body,
            Resource::Service($o) => $body,
            Resource::ServiceAccount($o) => $body,
            Resource::Deployment($o) => $body,
            Resource::Pod($o) => $body,
            Resource::EndpointSlice($o) => $body,
            Resource::Namespace($o) => $body,
            Resource::GatewayClass($o) => $body,
            Resource::KubernetesGateway($o) => $body,
            Resource::HttpRoute($o) => $body,
            Resource::GrpcRoute($o) => $body,
            Resource::ReferenceGrant($o) => $body,
        }
    };
}

impl Resource {
    /// The resource's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Resource::VirtualService(_) => Kind::VirtualService,
            Resource::DestinationRule(_) => Kind::DestinationRule,
            Resource::Gateway(_) => Kind::Gateway,
            Resource::ServiceEntry(_) => Kind::ServiceEntry,
            Resource::WorkloadEntry(_) => Kind::WorkloadEntry,
            Resource::Sidecar(_) => Kind::Sidecar,
            Resource::PeerAuthentication(_) => Kind::PeerAuthentication,
            Resource::AuthorizationPolicy(_) => Kind::AuthorizationPolicy,
            Resource::RequestAuthentication(_) => Kind::RequestAuthentication,
            Resource::Telemetry(_) => Kind::Telemetry,
            Resource::Service(_) => Kind::Service,
            Resource::ServiceAccount(_) => Kind::ServiceAccount,
            Resource::Deployment(_) => Kind::Deployment,
            Resource::Pod(_) => Kind::Pod,
            Resource::EndpointSlice(_) => Kind::EndpointSlice,
            Resource::Namespace(_) => Kind::Namespace,
            Resource::GatewayClass(_) => Kind::GatewayClass,
            Resource::KubernetesGateway(_) => Kind::KubernetesGateway,
            Resource::HttpRoute(_) => Kind::HttpRoute,
            Resource::GrpcRoute(_) => Kind::GrpcRoute,
            Resource::ReferenceGrant(_) => Kind::ReferenceGrant,
        }
    }

    /// The metadata.
    pub fn meta(&self) -> &ObjectMeta {
        each_resource!(self, o => &o.metadata)
    }

    /// The metadata, mutably.
    pub fn meta_mut(&mut self) -> &mut ObjectMeta {
        each_resource!(self, o => &mut o.metadata)
    }

    /// `apiVersion` as written.
    pub fn api_version(&self) -> &str {
        each_resource!(self, o => &o.api_version)
    }

    /// The resource as JSON, with absent (null) fields left out.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("config types always serialize");
        strip_nulls(&mut v);
        v
    }
}

/// Whether `labels` carry every label of a `matchLabels` selector (an empty selector
/// matches everything).
pub fn labels_match(selector: &Labels, labels: &Labels) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Remove `null` members from objects, recursively (absent and null mean the same in
/// Kubernetes and protobuf JSON).
pub fn strip_nulls(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}
