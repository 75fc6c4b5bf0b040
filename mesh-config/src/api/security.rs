//! `security.istio.io` (v1, v1beta1).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::WorkloadSelector;
use mesh_core::Duration;

// === PeerAuthentication ===

/// `PeerAuthentication.spec`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PeerAuthenticationSpec {
    /// Workloads; absent means the whole namespace (or mesh, in the root namespace).
    pub selector: Option<WorkloadSelector>,
    /// The mode for every port.
    pub mtls: Option<MutualTls>,
    /// Per workload (container) port modes; needs a selector.
    pub port_level_mtls: BTreeMap<u32, MutualTls>,
}

/// `PeerAuthentication.MutualTLS`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct MutualTls {
    /// The mode; UNSET inherits from the parent scope.
    pub mode: Option<MtlsMode>,
}

/// `PeerAuthentication.MutualTLS.Mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    /// Inherit.
    Unset,
    /// Plaintext only.
    Disable,
    /// mTLS and plaintext.
    Permissive,
    /// mTLS only.
    Strict,
}

// === AuthorizationPolicy ===

/// `AuthorizationPolicy.spec`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct AuthorizationPolicySpec {
    /// Workloads; absent means the whole namespace.
    pub selector: Option<WorkloadSelector>,
    /// Attachment to a Gateway, Service or ServiceEntry (deprecated singular form).
    pub target_ref: Option<PolicyTargetReference>,
    /// Attachments; exclusive with `selector`.
    pub target_refs: Vec<PolicyTargetReference>,
    /// Rules; absent or `[]` never matches.
    pub rules: Vec<Rule>,
    /// ALLOW (default), DENY, AUDIT or CUSTOM.
    pub action: Option<AuthorizationAction>,
    /// The external authorizer, for CUSTOM.
    pub provider: Option<ExtensionProvider>,
}

impl AuthorizationPolicySpec {
    /// The action, ALLOW when unset.
    pub fn action(&self) -> AuthorizationAction {
        self.action.unwrap_or(AuthorizationAction::Allow)
    }

    /// Istio's rules for how `action`, `rules` and `provider` go together, as (field under
    /// `spec`, message): DENY and CUSTOM need rules (without them they never match; AUDIT
    /// without rules audits nothing, ISTIO-SEMANTICS §6.3), CUSTOM needs a named provider
    /// and only CUSTOM takes one. The loader's validation and a typed policy built in code
    /// share these.
    pub fn action_errors(&self) -> Vec<(&'static str, String)> {
        let action = self.action();
        let mut out = Vec::new();
        if matches!(action, AuthorizationAction::Deny | AuthorizationAction::Custom) && self.rules.is_empty() {
            out.push((
                "rules",
                format!("a {} policy needs at least one rule (without rules it would never match)", action.name()),
            ));
        }
        match (action, &self.provider) {
            (AuthorizationAction::Custom, None) => out.push(("provider", "a CUSTOM policy needs a provider".into())),
            (AuthorizationAction::Custom, Some(p)) if p.name.is_empty() => {
                out.push(("provider.name", "provider name is required".into()))
            }
            (a, Some(_)) if a != AuthorizationAction::Custom => {
                out.push(("provider", "provider is only allowed with action CUSTOM".into()))
            }
            _ => {}
        }
        out
    }
}

impl AuthorizationAction {
    /// As written in YAML: `ALLOW`, `DENY`, `AUDIT`, `CUSTOM`.
    pub fn name(self) -> &'static str {
        match self {
            AuthorizationAction::Allow => "ALLOW",
            AuthorizationAction::Deny => "DENY",
            AuthorizationAction::Audit => "AUDIT",
            AuthorizationAction::Custom => "CUSTOM",
        }
    }
}

/// `AuthorizationPolicy.Action`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AuthorizationAction {
    /// Allow matching requests.
    Allow,
    /// Deny matching requests.
    Deny,
    /// Mark matching requests for audit.
    Audit,
    /// Ask an external authorizer.
    Custom,
}

/// `AuthorizationPolicy.ExtensionProvider`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ExtensionProvider {
    /// Name from the mesh config's `extensionProviders`.
    pub name: String,
}

/// `PolicyTargetReference`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PolicyTargetReference {
    /// API group.
    pub group: Option<String>,
    /// Kind.
    pub kind: String,
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: Option<String>,
}

/// `Rule`: from AND to AND when.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Rule {
    /// Sources, ORed.
    pub from: Vec<RuleFrom>,
    /// Operations, ORed.
    pub to: Vec<RuleTo>,
    /// Conditions, ANDed.
    pub when: Vec<Condition>,
}

/// `Rule.From`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RuleFrom {
    /// The source.
    pub source: Source,
}

/// `Rule.To`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RuleTo {
    /// The operation.
    pub operation: Operation,
}

/// `Source`: fields ANDed, values ORed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Source {
    /// Peer principals (`td/ns/NS/sa/SA`).
    pub principals: Vec<String>,
    /// Negated principals.
    pub not_principals: Vec<String>,
    /// JWT principals (`iss/sub`).
    pub request_principals: Vec<String>,
    /// Negated JWT principals.
    pub not_request_principals: Vec<String>,
    /// Peer namespaces.
    pub namespaces: Vec<String>,
    /// Negated namespaces.
    pub not_namespaces: Vec<String>,
    /// `ns/sa` or `sa`.
    pub service_accounts: Vec<String>,
    /// Negated service accounts.
    pub not_service_accounts: Vec<String>,
    /// Peer trust domains.
    pub trust_domains: Vec<String>,
    /// Negated trust domains.
    pub not_trust_domains: Vec<String>,
    /// Connection source IPs / CIDRs.
    pub ip_blocks: Vec<String>,
    /// Negated IP blocks.
    pub not_ip_blocks: Vec<String>,
    /// Original client IPs / CIDRs.
    pub remote_ip_blocks: Vec<String>,
    /// Negated remote IP blocks.
    pub not_remote_ip_blocks: Vec<String>,
}

/// `Operation`: fields ANDed, values ORed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Operation {
    /// Hosts (case-insensitive).
    pub hosts: Vec<String>,
    /// Negated hosts.
    pub not_hosts: Vec<String>,
    /// Workload ports, as strings.
    pub ports: Vec<String>,
    /// Negated ports.
    pub not_ports: Vec<String>,
    /// Methods.
    pub methods: Vec<String>,
    /// Negated methods.
    pub not_methods: Vec<String>,
    /// Normalised paths, query removed.
    pub paths: Vec<String>,
    /// Negated paths.
    pub not_paths: Vec<String>,
}

/// `Condition`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Condition {
    /// Attribute name, e.g. `request.headers[x-token]`.
    pub key: String,
    /// Accepted values.
    pub values: Vec<String>,
    /// Rejected values.
    pub not_values: Vec<String>,
}

// === RequestAuthentication ===

/// `RequestAuthentication.spec`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RequestAuthenticationSpec {
    /// Workloads; absent means the whole namespace.
    pub selector: Option<WorkloadSelector>,
    /// Attachment (deprecated singular form).
    pub target_ref: Option<PolicyTargetReference>,
    /// Attachments; exclusive with `selector`.
    pub target_refs: Vec<PolicyTargetReference>,
    /// Accepted issuers.
    pub jwt_rules: Vec<JwtRule>,
}

/// `JWTRule`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct JwtRule {
    /// `iss`.
    pub issuer: String,
    /// Accepted `aud` values.
    pub audiences: Vec<String>,
    /// Where the keys are.
    pub jwks_uri: Option<String>,
    /// Inline JWKS.
    pub jwks: Option<String>,
    /// Headers carrying the token.
    pub from_headers: Vec<JwtHeader>,
    /// Query parameters carrying the token.
    pub from_params: Vec<String>,
    /// Cookies carrying the token.
    pub from_cookies: Vec<String>,
    /// Header to receive the payload.
    pub output_payload_to_header: Option<String>,
    /// Keep the token in the forwarded request.
    pub forward_original_token: Option<bool>,
    /// Claims copied to headers.
    pub output_claim_to_headers: Vec<ClaimToHeader>,
    /// JWKS fetch timeout.
    pub timeout: Option<Duration>,
}

/// `JWTHeader`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct JwtHeader {
    /// Header name.
    pub name: String,
    /// Prefix before the token (e.g. `Bearer `).
    pub prefix: Option<String>,
}

/// `ClaimToHeader`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ClaimToHeader {
    /// Header name.
    pub header: String,
    /// Claim name.
    pub claim: String,
}
