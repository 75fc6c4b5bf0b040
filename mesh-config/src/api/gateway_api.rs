//! `gateway.networking.k8s.io`: the Kubernetes Gateway API kinds the mesh serves.
//!
//! GatewayClass, Gateway, HTTPRoute and GRPCRoute in `v1` (`v1beta1` is accepted too, the
//! same schema), ReferenceGrant in `v1beta1`. As with the Istio kinds, every spec rejects
//! unknown fields, so a typo is an error. Fields of the API's experimental channel that the
//! mesh does not apply (`retry`, `sessionPersistence`, the `CORS` and `ExtensionRef`
//! filters, `infrastructure`, ...) are modelled as raw values and refused or warned about
//! by validation, never dropped in silence. Defaults the spec gives (a path match is
//! `PathPrefix /`, a backend weight is 1, a parentRef is a Gateway in the route's
//! namespace) come from accessors, so a resource serializes back to what the user wrote.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use mesh_core::duration::Duration;

/// The group of every kind in this module.
pub const GROUP: &str = "gateway.networking.k8s.io";

/// `GatewayClass.spec`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct GatewayClassSpec {
    /// The controller that manages Gateways of this class (`istio.io/gateway-controller`).
    pub controller_name: String,
    /// Controller-specific parameters (not read).
    pub parameters_ref: Option<Value>,
    /// Free text.
    pub description: Option<String>,
}

/// `Gateway.spec` (the Gateway API's Gateway, not Istio's).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct KubernetesGatewaySpec {
    /// The GatewayClass; `istio` is Istio's built-in class.
    pub gateway_class_name: String,
    /// Listeners, each a port, protocol and optional hostname.
    pub listeners: Vec<Listener>,
    /// Requested addresses (on one machine the `--listen` flags decide).
    pub addresses: Vec<Value>,
    /// Infrastructure labels and annotations for generated resources (not used).
    pub infrastructure: Option<Value>,
    /// Backend TLS settings (experimental; not applied).
    #[serde(rename = "backendTLS")]
    pub backend_tls: Option<Value>,
}

/// `Listener`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Listener {
    /// Unique within the Gateway (a parentRef's `sectionName`).
    pub name: String,
    /// Requests for other hosts do not reach this listener's routes; absent = any host.
    pub hostname: Option<String>,
    /// Port.
    pub port: u32,
    /// `HTTP`, `HTTPS`, `TLS`, `TCP`, `UDP`.
    pub protocol: String,
    /// TLS for `HTTPS` and `TLS`.
    pub tls: Option<GatewayTlsConfig>,
    /// Which routes may attach.
    pub allowed_routes: Option<AllowedRoutes>,
}

impl Listener {
    /// The route kinds this listener accepts when `allowedRoutes.kinds` is empty: HTTPRoute
    /// and GRPCRoute on HTTP and HTTPS (as Istio's controller), nothing else on one machine.
    pub fn allows_kind(&self, group: Option<&str>, kind: &str) -> bool {
        let group = group.unwrap_or(GROUP);
        match self.allowed_routes.as_ref().map(|a| a.kinds.as_slice()).unwrap_or_default() {
            [] => group == GROUP && matches!(kind, "HTTPRoute" | "GRPCRoute") && self.is_http(),
            kinds => kinds.iter().any(|k| k.group.as_deref().unwrap_or(GROUP) == group && k.kind == kind),
        }
    }

    /// HTTP or HTTPS.
    pub fn is_http(&self) -> bool {
        matches!(self.protocol.as_str(), "HTTP" | "HTTPS")
    }
}

/// `GatewayTLSConfig`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct GatewayTlsConfig {
    /// `Terminate` (default) or `Passthrough`.
    pub mode: Option<String>,
    /// The certificate and key, as Secrets.
    pub certificate_refs: Vec<SecretObjectReference>,
    /// Implementation-specific options.
    pub options: BTreeMap<String, String>,
    /// Client certificate validation (experimental; not applied).
    pub frontend_validation: Option<Value>,
}

/// `SecretObjectReference`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct SecretObjectReference {
    /// `""` (core).
    pub group: Option<String>,
    /// `Secret`.
    pub kind: Option<String>,
    /// Name.
    pub name: String,
    /// Namespace; the Gateway's when absent (another needs a ReferenceGrant).
    pub namespace: Option<String>,
}

/// `AllowedRoutes`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct AllowedRoutes {
    /// From which namespaces (Same by default).
    pub namespaces: Option<RouteNamespaces>,
    /// Which kinds (by protocol when empty).
    pub kinds: Vec<RouteGroupKind>,
}

/// `RouteNamespaces`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RouteNamespaces {
    /// `All`, `Same` (default) or `Selector`.
    pub from: Option<FromNamespaces>,
    /// Namespace labels, for `Selector`.
    pub selector: Option<NamespaceSelector>,
}

/// `FromNamespaces`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum FromNamespaces {
    /// Every namespace.
    All,
    /// The Gateway's namespace.
    #[default]
    Same,
    /// Namespaces whose labels match `selector`.
    Selector,
}

/// A Kubernetes `LabelSelector` with `matchExpressions`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct NamespaceSelector {
    /// Labels that must be equal.
    pub match_labels: BTreeMap<String, String>,
    /// Set-based requirements.
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// `LabelSelectorRequirement`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LabelSelectorRequirement {
    /// The label.
    pub key: String,
    /// `In`, `NotIn`, `Exists`, `DoesNotExist`.
    pub operator: String,
    /// Values for `In` and `NotIn`.
    pub values: Vec<String>,
}

impl NamespaceSelector {
    /// Whether `labels` satisfy every requirement (an empty selector matches everything).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| {
                let v = labels.get(&r.key);
                match r.operator.as_str() {
                    "In" => v.is_some_and(|v| r.values.contains(v)),
                    "NotIn" => v.is_none_or(|v| !r.values.contains(v)),
                    "Exists" => v.is_some(),
                    "DoesNotExist" => v.is_none(),
                    _ => false,
                }
            })
    }
}

/// `RouteGroupKind`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RouteGroupKind {
    /// Group; the Gateway API's when absent.
    pub group: Option<String>,
    /// `HTTPRoute`, `GRPCRoute`, ...
    pub kind: String,
}

/// `ParentReference`: a Gateway (and optionally one listener), or a Service (GAMMA).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ParentReference {
    /// Group; `gateway.networking.k8s.io` when absent, `""` for a Service.
    pub group: Option<String>,
    /// Kind; `Gateway` when absent.
    pub kind: Option<String>,
    /// Namespace; the route's when absent.
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
    /// A listener's name (or, for a Service, a port's name).
    pub section_name: Option<String>,
    /// A listener's port (or a Service port).
    pub port: Option<u32>,
}

impl ParentReference {
    /// Whether this names a Service (a mesh route, GAMMA).
    pub fn is_service(&self) -> bool {
        self.group.as_deref() == Some("") && self.kind.as_deref() == Some("Service")
    }

    /// Whether this names a Gateway API Gateway.
    pub fn is_gateway(&self) -> bool {
        self.group.as_deref().unwrap_or(GROUP) == GROUP && self.kind.as_deref().unwrap_or("Gateway") == "Gateway"
    }

    /// The parent's namespace, defaulting to the route's.
    pub fn namespace_or<'a>(&'a self, route_ns: &'a str) -> &'a str {
        self.namespace.as_deref().unwrap_or(route_ns)
    }
}

/// `HTTPRoute.spec`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpRouteSpec {
    /// Gateways (listeners) or Services the route attaches to.
    pub parent_refs: Vec<ParentReference>,
    /// Host names; absent = the listener's.
    pub hostnames: Vec<String>,
    /// Rules; absent = one rule matching `PathPrefix /` with no backend.
    pub rules: Vec<HttpRouteRule>,
}

/// `HTTPRouteRule`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpRouteRule {
    /// Rule name (experimental; shown by `meshctl route`).
    pub name: Option<String>,
    /// Conditions, ORed; absent = `PathPrefix /`.
    pub matches: Vec<HttpRouteMatch>,
    /// Filters, applied in order.
    pub filters: Vec<HttpRouteFilter>,
    /// Where requests go.
    pub backend_refs: Vec<HttpBackendRef>,
    /// Timeouts.
    pub timeouts: Option<HttpRouteTimeouts>,
    /// Retries (experimental; not applied: refused by validation).
    pub retry: Option<Value>,
    /// Session persistence (experimental; not applied: refused by validation).
    pub session_persistence: Option<Value>,
}

/// `HTTPRouteMatch`: every set condition must hold.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpRouteMatch {
    /// The path; `PathPrefix /` when absent.
    pub path: Option<HttpPathMatch>,
    /// Headers, ANDed.
    pub headers: Vec<HttpHeaderMatch>,
    /// Query parameters, ANDed.
    pub query_params: Vec<HttpHeaderMatch>,
    /// Method.
    pub method: Option<String>,
}

impl HttpRouteMatch {
    /// The path match with the spec's defaults filled in.
    pub fn path(&self) -> (PathMatchType, &str) {
        match &self.path {
            None => (PathMatchType::PathPrefix, "/"),
            Some(p) => (p.match_type.unwrap_or_default(), p.value.as_deref().unwrap_or("/")),
        }
    }
}

/// `HTTPPathMatch`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpPathMatch {
    /// `Exact`, `PathPrefix` (default) or `RegularExpression`.
    #[serde(rename = "type")]
    pub match_type: Option<PathMatchType>,
    /// The value; `/` when absent.
    pub value: Option<String>,
}

/// `PathMatchType`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PathMatchType {
    /// The whole path.
    Exact,
    /// Element-wise prefix: `/foo` matches `/foo` and `/foo/bar`, not `/foobar`.
    #[default]
    PathPrefix,
    /// A regular expression over the path (RE2, full match, as Istio).
    RegularExpression,
}

/// `HTTPHeaderMatch` and `HTTPQueryParamMatch` (the same shape).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpHeaderMatch {
    /// `Exact` (default) or `RegularExpression`.
    #[serde(rename = "type")]
    pub match_type: Option<ValueMatchType>,
    /// Header names are case-insensitive; query parameter names are not.
    pub name: String,
    /// The value.
    pub value: String,
}

/// `HeaderMatchType` / `QueryParamMatchType`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ValueMatchType {
    /// Equal.
    #[default]
    Exact,
    /// RE2, full match.
    RegularExpression,
}

/// `HTTPRouteFilter` (and `GRPCRouteFilter`, which allows a subset of the types).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpRouteFilter {
    /// Which one of the fields below is set.
    #[serde(rename = "type")]
    pub filter_type: String,
    /// Request headers.
    pub request_header_modifier: Option<HttpHeaderFilter>,
    /// Response headers.
    pub response_header_modifier: Option<HttpHeaderFilter>,
    /// Shadow traffic.
    pub request_mirror: Option<HttpRequestMirrorFilter>,
    /// Answer with a redirect.
    pub request_redirect: Option<HttpRequestRedirectFilter>,
    /// Rewrite host and path.
    #[serde(rename = "urlRewrite")]
    pub url_rewrite: Option<HttpUrlRewriteFilter>,
    /// CORS (experimental; not applied: refused by validation).
    pub cors: Option<Value>,
    /// An implementation's own filter (none is defined: refused by validation).
    pub extension_ref: Option<Value>,
}

/// `HTTPHeaderFilter`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpHeaderFilter {
    /// Overwrite.
    pub set: Vec<HttpHeader>,
    /// Append.
    pub add: Vec<HttpHeader>,
    /// Remove, by name.
    pub remove: Vec<String>,
}

/// `HTTPHeader`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpHeader {
    /// Name (case-insensitive).
    pub name: String,
    /// Value.
    pub value: String,
}

/// `HTTPRequestMirrorFilter`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpRequestMirrorFilter {
    /// Where copies go.
    pub backend_ref: BackendObjectReference,
    /// Share of requests mirrored, 0–100 (all when neither this nor `fraction` is set).
    pub percent: Option<u32>,
    /// Share as a fraction.
    pub fraction: Option<Fraction>,
}

impl HttpRequestMirrorFilter {
    /// The share mirrored, in percent.
    pub fn percent(&self) -> f64 {
        match (self.percent, &self.fraction) {
            (Some(p), _) => f64::from(p),
            (None, Some(f)) => f64::from(f.numerator) * 100.0 / f64::from(f.denominator.unwrap_or(100).max(1)),
            (None, None) => 100.0,
        }
    }
}

/// `Fraction`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Fraction {
    /// Numerator.
    pub numerator: u32,
    /// Denominator (100 when absent).
    pub denominator: Option<u32>,
}

/// `HTTPRequestRedirectFilter`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpRequestRedirectFilter {
    /// `http` or `https`; the request's when absent.
    pub scheme: Option<String>,
    /// The host; the request's when absent.
    pub hostname: Option<String>,
    /// The path.
    pub path: Option<HttpPathModifier>,
    /// The port (see the derivation in mesh-route).
    pub port: Option<u32>,
    /// 301, 302 (default), 303, 307 or 308.
    pub status_code: Option<u32>,
}

/// `HTTPURLRewriteFilter`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpUrlRewriteFilter {
    /// The new Host.
    pub hostname: Option<String>,
    /// The new path.
    pub path: Option<HttpPathModifier>,
}

/// `HTTPPathModifier`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpPathModifier {
    /// `ReplaceFullPath` or `ReplacePrefixMatch`.
    #[serde(rename = "type")]
    pub modifier_type: String,
    /// The whole new path.
    pub replace_full_path: Option<String>,
    /// What replaces the matched prefix.
    pub replace_prefix_match: Option<String>,
}

/// `BackendObjectReference`: a Service port by default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct BackendObjectReference {
    /// Group; `""` (core) when absent.
    pub group: Option<String>,
    /// Kind; `Service` when absent.
    pub kind: Option<String>,
    /// Name.
    pub name: String,
    /// Namespace; the route's when absent (another needs a ReferenceGrant).
    pub namespace: Option<String>,
    /// Port (required for a Service).
    pub port: Option<u32>,
}

impl BackendObjectReference {
    /// `(group, kind)` with the defaults.
    pub fn group_kind(&self) -> (&str, &str) {
        (self.group.as_deref().unwrap_or(""), self.kind.as_deref().unwrap_or("Service"))
    }
}

/// `HTTPBackendRef` (and `GRPCBackendRef`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpBackendRef {
    /// Group; `""` (core) when absent.
    pub group: Option<String>,
    /// Kind; `Service` when absent.
    pub kind: Option<String>,
    /// Name.
    pub name: String,
    /// Namespace; the route's when absent (another needs a ReferenceGrant).
    pub namespace: Option<String>,
    /// Port (required for a Service).
    pub port: Option<u32>,
    /// Relative weight, 1 when absent; 0 sends nothing.
    pub weight: Option<u32>,
    /// Filters applied only when this backend is picked.
    pub filters: Vec<HttpRouteFilter>,
}

impl HttpBackendRef {
    /// The weight, 1 when absent.
    pub fn weight(&self) -> u32 {
        self.weight.unwrap_or(1)
    }

    /// `(group, kind)` with the defaults (a Service).
    pub fn group_kind(&self) -> (&str, &str) {
        (self.group.as_deref().unwrap_or(""), self.kind.as_deref().unwrap_or("Service"))
    }

    /// The backend it names (serde's `flatten` cannot be used beside `deny_unknown_fields`).
    pub fn backend(&self) -> BackendObjectReference {
        BackendObjectReference {
            group: self.group.clone(),
            kind: self.kind.clone(),
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            port: self.port,
        }
    }
}

/// `HTTPRouteTimeouts`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpRouteTimeouts {
    /// From the request's start to the response's end; `0s` disables.
    pub request: Option<Duration>,
    /// Each try to a backend; `0s` disables.
    pub backend_request: Option<Duration>,
}

/// `GRPCRoute.spec`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct GrpcRouteSpec {
    /// Gateways (listeners) or Services the route attaches to.
    pub parent_refs: Vec<ParentReference>,
    /// Host names; absent = the listener's.
    pub hostnames: Vec<String>,
    /// Rules.
    pub rules: Vec<GrpcRouteRule>,
}

/// `GRPCRouteRule`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct GrpcRouteRule {
    /// Rule name (experimental).
    pub name: Option<String>,
    /// Conditions, ORed; absent matches every call.
    pub matches: Vec<GrpcRouteMatch>,
    /// Filters: the header modifiers and RequestMirror.
    pub filters: Vec<HttpRouteFilter>,
    /// Where calls go.
    pub backend_refs: Vec<HttpBackendRef>,
    /// Session persistence (experimental; refused by validation).
    pub session_persistence: Option<Value>,
}

/// `GRPCRouteMatch`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct GrpcRouteMatch {
    /// Service and method.
    pub method: Option<GrpcMethodMatch>,
    /// Headers, ANDed.
    pub headers: Vec<HttpHeaderMatch>,
}

/// `GRPCMethodMatch`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct GrpcMethodMatch {
    /// `Exact` (default) or `RegularExpression`.
    #[serde(rename = "type")]
    pub match_type: Option<ValueMatchType>,
    /// Fully qualified service (`helloworld.Greeter`); any when absent.
    pub service: Option<String>,
    /// Method (`SayHello`); any when absent.
    pub method: Option<String>,
}

/// `ReferenceGrant.spec` (`v1beta1`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ReferenceGrantSpec {
    /// Who may refer.
    pub from: Vec<ReferenceGrantFrom>,
    /// To what, in the grant's namespace.
    pub to: Vec<ReferenceGrantTo>,
}

impl ReferenceGrantSpec {
    /// Whether this grant (in the referent's namespace) lets a Gateway API `from_kind` in
    /// `from_ns` refer to the core-group `to_kind` (Service, Secret) named `to_name`.
    pub fn allows(&self, from_kind: &str, from_ns: &str, to_kind: &str, to_name: &str) -> bool {
        self.from.iter().any(|f| f.group == GROUP && f.kind == from_kind && f.namespace == from_ns)
            && self
                .to
                .iter()
                .any(|t| t.group.is_empty() && t.kind == to_kind && t.name.as_deref().is_none_or(|n| n == to_name))
    }
}

/// `ReferenceGrantFrom`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ReferenceGrantFrom {
    /// Group of the referring kind.
    pub group: String,
    /// The referring kind (`HTTPRoute`, `Gateway`, ...).
    pub kind: String,
    /// The referring namespace.
    pub namespace: String,
}

/// `ReferenceGrantTo`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ReferenceGrantTo {
    /// Group of the referred kind (`""` for Service and Secret).
    pub group: String,
    /// The referred kind.
    pub kind: String,
    /// One object; every object of the kind when absent.
    pub name: Option<String>,
}
