//! AuthorizationPolicy as pure data: compiled once per workload, evaluated per request
//! (ISTIO-SEMANTICS §6): CUSTOM, then DENY, then ALLOW; AUDIT only marks.

pub mod path;
#[cfg(all(test, feature = "config"))]
mod tests;
pub mod value;

use std::{net::IpAddr, sync::Arc};

use http::{HeaderMap, HeaderName};
use mesh_config::api::{AuthorizationAction, AuthorizationPolicySpec, Labels, Object};
#[cfg(feature = "config")]
use mesh_config::{
    Snapshot,
    api::{Kind, Resource},
};
use mesh_core::Identity;
use serde::Serialize;

use self::value::{Cidr, ValueMatcher};

/// The nine standard methods (RFC 9110 §9 and PATCH, RFC 5789).
const STANDARD_METHODS: [&str; 9] = ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"];

/// The standard method `method` spells in another case (`delete`, `Get`), if it does.
/// Methods are case-sensitive (RFC 9110 §9.1) and so are Envoy's and our authorization
/// matches, while many app routers compare them case-insensitively: a `delete` would pass
/// a DENY of `DELETE` and still delete. Extension methods (`PURGE`, `purge`) pass.
pub fn method_case_variant(method: &http::Method) -> Option<&'static str> {
    let m = method.as_str();
    STANDARD_METHODS.into_iter().find(|s| *s != m && s.eq_ignore_ascii_case(m))
}

/// What the JWT layer established about the request (RequestAuthentication).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RequestAuth {
    /// `iss/sub`.
    pub principal: String,
    /// `aud` values.
    pub audiences: Vec<String>,
    /// `azp`.
    pub presenter: Option<String>,
    /// Every claim.
    pub claims: serde_json::Value,
}

/// The attributes of one request or connection that policies look at.
#[derive(Clone, Copy, Debug)]
pub struct AuthzRequest<'a> {
    /// The mTLS peer; `None` for plaintext.
    pub peer: Option<&'a Identity>,
    /// The connection's source address.
    pub source_ip: Option<IpAddr>,
    /// The original client (X-Forwarded-For), when known.
    pub remote_ip: Option<IpAddr>,
    /// The validated JWT, if any.
    pub request_auth: Option<&'a RequestAuth>,
    /// HTTP method (empty for TCP).
    pub method: &'a str,
    /// Normalised path without query (empty for TCP).
    pub path: &'a str,
    /// `Host` as sent (empty for TCP).
    pub host: &'a str,
    /// The workload port the connection arrived on.
    pub port: u16,
    /// Request headers.
    pub headers: &'a HeaderMap,
    /// The destination address.
    pub destination_ip: Option<IpAddr>,
    /// TLS SNI.
    pub sni: Option<&'a str>,
}

/// Traffic the policy is compiled for: HTTP, or TCP where HTTP-only conditions cannot be
/// evaluated (ALLOW rules using them vanish; DENY and AUDIT rules lose those conditions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Traffic {
    /// HTTP requests.
    Http,
    /// TCP connections.
    Tcp,
}

/// The action that decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Action {
    /// An external authorizer.
    Custom,
    /// A DENY policy.
    Deny,
    /// ALLOW policies.
    Allow,
}

/// The outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may pass.
    pub allowed: bool,
    /// Which action decided (`None` when no policy applies).
    pub action: Option<Action>,
    /// The policy that decided (`None` when no policy applies, or when ALLOW policies
    /// apply and none matched).
    pub policy: Option<Arc<str>>,
    /// AUDIT policies that matched.
    pub audit: Vec<Arc<str>>,
    /// Dry-run policies that matched (evaluated, not enforced).
    pub dry_run: Vec<Arc<str>>,
}

/// A CUSTOM policy matched: ask its provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustomCheck {
    /// `namespace/name`.
    pub policy: Arc<str>,
    /// The `extensionProviders` name.
    pub provider: String,
}

/// Evaluation: an optional external check, then the local decision (used when the
/// external authorizer allows, or when there is none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evaluation {
    /// The CUSTOM check to make first.
    pub custom: Option<CustomCheck>,
    /// DENY, then ALLOW.
    pub decision: Decision,
}

#[derive(Clone, Debug, Default)]
struct Field(Vec<ValueMatcher>);

impl Field {
    fn new(values: &[String], compile: fn(&str) -> ValueMatcher) -> Self {
        Self(values.iter().map(|v| compile(v)).collect())
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// An absent attribute is the empty string: `x` and `*` fail, `notX` passes.
    fn any(&self, value: Option<&str>) -> bool {
        let v = value.unwrap_or("");
        self.0.iter().any(|m| m.matches(v))
    }
    /// `X` holds (when set) and `notX` does not.
    fn check(&self, not: &Field, value: Option<&str>) -> bool {
        (self.is_empty() || self.any(value)) && !(not.any(value))
    }
}

/// Why a rule cannot be compiled; a value that would widen its field is never dropped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
enum InvalidRule {
    /// Not an address or CIDR (it would make the field "any address").
    #[error("{field}: {value:?} is not an IP address or CIDR")]
    Cidr { field: String, value: String },
    /// Not a port number (it would make the field "any port").
    #[error("{field}: {value:?} is not a port number")]
    Port { field: &'static str, value: String },
    /// A `when` key the mesh does not know.
    #[error("unknown attribute {0:?}")]
    Attribute(String),
}

#[derive(Clone, Debug, Default)]
struct Blocks(Vec<Cidr>);

impl Blocks {
    /// Every value must be an address or CIDR: one that is not would turn the field into
    /// "any address", so it is an error naming the field.
    fn parse(values: &[String], field: &str) -> Result<Self, InvalidRule> {
        let parse =
            |v: &String| Cidr::parse(v).ok_or_else(|| InvalidRule::Cidr { field: field.to_string(), value: v.clone() });
        values.iter().map(parse).collect::<Result<_, _>>().map(Self)
    }
    fn any(&self, ip: Option<IpAddr>) -> bool {
        ip.is_some_and(|ip| self.0.iter().any(|c| c.contains(ip)))
    }
    fn check(&self, not: &Blocks, ip: Option<IpAddr>) -> bool {
        (self.0.is_empty() || self.any(ip)) && !not.any(ip)
    }
}

#[derive(Clone, Debug, Default)]
struct Source {
    principals: Field,
    not_principals: Field,
    request_principals: Field,
    not_request_principals: Field,
    namespaces: Field,
    not_namespaces: Field,
    service_accounts: Vec<(String, String)>,
    not_service_accounts: Vec<(String, String)>,
    trust_domains: Field,
    not_trust_domains: Field,
    ip_blocks: Blocks,
    not_ip_blocks: Blocks,
    remote_ip_blocks: Blocks,
    not_remote_ip_blocks: Blocks,
}

#[derive(Clone, Debug, Default)]
struct Operation {
    hosts: Field,
    not_hosts: Field,
    ports: Vec<u16>,
    not_ports: Vec<u16>,
    methods: Field,
    not_methods: Field,
    paths: Field,
    not_paths: Field,
}

#[derive(Clone, Debug)]
enum Key {
    Header(HeaderName),
    SourceIp,
    RemoteIp,
    SourceNamespace,
    SourcePrincipal,
    SourceServiceAccount,
    SourceTrustDomain,
    AuthPrincipal,
    AuthAudiences,
    AuthPresenter,
    AuthClaim(Vec<String>),
    DestinationIp,
    DestinationPort,
    Sni,
}

impl Key {
    fn http_only(&self) -> bool {
        matches!(
            self,
            Key::Header(_) | Key::AuthPrincipal | Key::AuthAudiences | Key::AuthPresenter | Key::AuthClaim(_)
        )
    }
}

#[derive(Clone, Debug)]
struct Condition {
    key: Key,
    values: Field,
    not_values: Field,
    blocks: Blocks,
    not_blocks: Blocks,
}

#[derive(Clone, Debug, Default)]
struct Rule {
    from: Vec<Source>,
    to: Vec<Operation>,
    when: Vec<Condition>,
}

/// One compiled policy.
#[derive(Clone, Debug)]
struct Compiled {
    name: Arc<str>,
    rules: Vec<Rule>,
    provider: Option<String>,
    dry_run: bool,
}

/// The policies in force for one workload, compiled.
#[derive(Clone, Debug, Default)]
pub struct AuthzPolicy {
    custom: Vec<Compiled>,
    deny: Vec<Compiled>,
    allow: Vec<Compiled>,
    audit: Vec<Compiled>,
    /// Rules left out while compiling, and why.
    pub warnings: Vec<String>,
}

fn parse_key(key: &str) -> Option<Key> {
    let bracket =
        |prefix: &str| key.strip_prefix(prefix).and_then(|r| r.strip_prefix('[')).and_then(|r| r.strip_suffix(']'));
    if let Some(name) = bracket("request.headers") {
        return HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()).ok().map(Key::Header);
    }
    if let Some(path) = key.strip_prefix("request.auth.claims") {
        // `[a][b]` (nested) or `[a]`.
        let inner = path.strip_prefix('[')?.strip_suffix(']')?;
        return Some(Key::AuthClaim(inner.split("][").map(str::to_string).collect()));
    }
    Some(match key {
        "source.ip" => Key::SourceIp,
        "remote.ip" => Key::RemoteIp,
        "source.namespace" => Key::SourceNamespace,
        "source.principal" => Key::SourcePrincipal,
        "source.serviceAccount" => Key::SourceServiceAccount,
        "source.trustDomain" => Key::SourceTrustDomain,
        "request.auth.principal" => Key::AuthPrincipal,
        "request.auth.audiences" => Key::AuthAudiences,
        "request.auth.presenter" => Key::AuthPresenter,
        "destination.ip" => Key::DestinationIp,
        "destination.port" => Key::DestinationPort,
        "connection.sni" => Key::Sni,
        _ => return None,
    })
}

fn service_accounts(values: &[String], policy_ns: &str) -> Vec<(String, String)> {
    values
        .iter()
        .map(|v| match v.split_once('/') {
            Some((ns, sa)) => (ns.to_string(), sa.to_string()),
            None => (policy_ns.to_string(), v.clone()),
        })
        .collect()
}

fn compile_rule(
    r: &mesh_config::api::Rule,
    policy_ns: &str,
    action: AuthorizationAction,
    protocol: Traffic,
) -> Result<Option<Rule>, InvalidRule> {
    let tcp = protocol == Traffic::Tcp;
    let mut uses_http = false;
    let mut from = Vec::with_capacity(r.from.len());
    for f in &r.from {
        let s = &f.source;
        uses_http |= !s.request_principals.is_empty() || !s.not_request_principals.is_empty();
        let http_only = |f: Field| if tcp { Field::default() } else { f };
        from.push(Source {
            principals: Field::new(&s.principals, ValueMatcher::new),
            not_principals: Field::new(&s.not_principals, ValueMatcher::new),
            request_principals: http_only(Field::new(&s.request_principals, ValueMatcher::new)),
            not_request_principals: http_only(Field::new(&s.not_request_principals, ValueMatcher::new)),
            namespaces: Field::new(&s.namespaces, ValueMatcher::glob),
            not_namespaces: Field::new(&s.not_namespaces, ValueMatcher::glob),
            service_accounts: service_accounts(&s.service_accounts, policy_ns),
            not_service_accounts: service_accounts(&s.not_service_accounts, policy_ns),
            trust_domains: Field::new(&s.trust_domains, ValueMatcher::new),
            not_trust_domains: Field::new(&s.not_trust_domains, ValueMatcher::new),
            ip_blocks: Blocks::parse(&s.ip_blocks, "ipBlocks")?,
            not_ip_blocks: Blocks::parse(&s.not_ip_blocks, "notIpBlocks")?,
            remote_ip_blocks: Blocks::parse(&s.remote_ip_blocks, "remoteIpBlocks")?,
            not_remote_ip_blocks: Blocks::parse(&s.not_remote_ip_blocks, "notRemoteIpBlocks")?,
        });
    }
    // A port that is not a number would turn the field into "any port": an error.
    let ports = |v: &[String], field: &'static str| -> Result<Vec<u16>, InvalidRule> {
        v.iter().map(|p| p.parse().map_err(|_| InvalidRule::Port { field, value: p.clone() })).collect()
    };
    let mut to = Vec::with_capacity(r.to.len());
    for t in &r.to {
        let o = &t.operation;
        let http = [&o.hosts, &o.not_hosts, &o.methods, &o.not_methods, &o.paths, &o.not_paths];
        uses_http |= http.iter().any(|f| !f.is_empty());
        let lower = |v: &str| ValueMatcher::new(v).lowercase();
        let keep = |f: Field| if tcp { Field::default() } else { f };
        to.push(Operation {
            hosts: keep(Field::new(&o.hosts, lower)),
            not_hosts: keep(Field::new(&o.not_hosts, lower)),
            ports: ports(&o.ports, "ports")?,
            not_ports: ports(&o.not_ports, "notPorts")?,
            methods: keep(Field::new(&o.methods, ValueMatcher::new)),
            not_methods: keep(Field::new(&o.not_methods, ValueMatcher::new)),
            paths: keep(Field::new(&o.paths, ValueMatcher::path)),
            not_paths: keep(Field::new(&o.not_paths, ValueMatcher::path)),
        });
    }
    let mut when = Vec::new();
    for c in &r.when {
        let key = parse_key(&c.key).ok_or_else(|| InvalidRule::Attribute(c.key.clone()))?;
        if key.http_only() {
            uses_http = true;
            if tcp {
                continue;
            }
        }
        let compile = if matches!(key, Key::SourceNamespace) { ValueMatcher::glob } else { ValueMatcher::new };
        let (blocks, not_blocks) = match key {
            Key::SourceIp | Key::RemoteIp | Key::DestinationIp => {
                (Blocks::parse(&c.values, &c.key)?, Blocks::parse(&c.not_values, &c.key)?)
            }
            _ => Default::default(),
        };
        when.push(Condition {
            values: Field::new(&c.values, compile),
            not_values: Field::new(&c.not_values, compile),
            blocks,
            not_blocks,
            key,
        });
    }
    // On TCP an ALLOW rule that needs HTTP attributes allows nothing: drop it.
    if tcp && uses_http && action == AuthorizationAction::Allow {
        return Ok(None);
    }
    Ok(Some(Rule { from, to, when }))
}

/// AuthorizationPolicy documents that did not load: the loader's findings, each with its
/// line and field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidPolicies(pub String);

impl AuthzPolicy {
    /// The AuthorizationPolicies in `yaml` (documents as `kubectl apply -f` takes them;
    /// other kinds are ignored) that apply to one workload in `namespace` with `labels`,
    /// validated as the mesh validates files: an invalid document is an error naming its
    /// line and field, never skipped. For a layer used alone, without a config directory:
    ///
    /// ```
    /// # use std::convert::Infallible;
    /// use mesh_authz::{layer::AuthzLayer, policy::{AuthzPolicy, Traffic}};
    /// use tower::{ServiceBuilder, ServiceExt};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let yaml = r#"
    /// apiVersion: security.istio.io/v1
    /// kind: AuthorizationPolicy
    /// metadata: {name: deny-admin, namespace: default}
    /// spec:
    ///   action: DENY
    ///   rules: [{to: [{operation: {paths: ["/admin*"]}}]}]
    /// "#;
    /// let labels = [("app".to_string(), "reviews".to_string())].into();
    /// let policy = AuthzPolicy::from_yaml(yaml, "default", &labels, Traffic::Http).unwrap();
    /// let svc = ServiceBuilder::new()
    ///     .layer(AuthzLayer::from_policy(policy, 9080))
    ///     .service_fn(|_req: http::Request<mesh_core::BoxBody>| async {
    ///         Ok::<_, Infallible>(http::Response::new(mesh_core::body::empty()))
    ///     });
    /// let get = |path: &str| http::Request::get(path).body(mesh_core::body::empty()).unwrap();
    /// assert_eq!(svc.clone().oneshot(get("/reviews/1")).await.unwrap().status(), 200);
    /// assert_eq!(svc.oneshot(get("/admin/users")).await.unwrap().status(), 403);
    /// # }
    /// ```
    #[cfg(feature = "config")]
    pub fn from_yaml(yaml: &str, namespace: &str, labels: &Labels, protocol: Traffic) -> Result<Self, InvalidPolicies> {
        let loaded = mesh_config::load::load_str("policy.yaml", yaml, &mesh_config::load::LoadOptions::default());
        if loaded.has_errors() {
            return Err(InvalidPolicies(loaded.report()));
        }
        Ok(Self::compile(&loaded.into_snapshot(), namespace, labels, protocol))
    }

    /// Typed policies, those that apply to one workload in `namespace` with `labels` (the
    /// root namespace's and its own, without a selector or with a matching one). With the
    /// feature `config` they are validated through the loader exactly as files are;
    /// without it, each rule is checked as it is compiled. Either way a policy or rule that
    /// does not hold is an error, never skipped.
    pub fn from_policies(
        policies: impl IntoIterator<Item = Object<AuthorizationPolicySpec>>,
        namespace: &str,
        labels: &Labels,
        protocol: Traffic,
    ) -> Result<Self, InvalidPolicies> {
        // As the loader reads a document: `kind` and `apiVersion` may be left out of a typed
        // policy, an absent namespace is `default`; another kind is an error, not ignored.
        let mut typed = Vec::new();
        for mut p in policies {
            if p.kind.is_empty() {
                p.kind = "AuthorizationPolicy".into();
            }
            if p.api_version.is_empty() {
                p.api_version = "security.istio.io/v1".into();
            }
            if p.metadata.namespace.is_empty() {
                p.metadata.namespace = "default".into();
            }
            if p.kind != "AuthorizationPolicy" {
                let name = &p.metadata.name;
                return Err(InvalidPolicies(format!("{name}: kind {:?} is not AuthorizationPolicy", p.kind)));
            }
            typed.push(p);
        }
        let policies = typed;
        #[cfg(feature = "config")]
        {
            let mut yaml = String::new();
            for p in policies {
                let json = serde_json::to_string(&p).map_err(|e| InvalidPolicies(e.to_string()))?;
                yaml.push_str(&json);
                yaml.push_str("\n---\n");
            }
            Self::from_yaml(&yaml, namespace, labels, protocol)
        }
        #[cfg(not(feature = "config"))]
        {
            for p in &policies {
                if let Some((field, message)) = p.spec.action_errors().into_iter().next() {
                    let (ns, name) = (&p.metadata.namespace, &p.metadata.name);
                    return Err(InvalidPolicies(format!("AuthorizationPolicy {ns}/{name}: spec.{field}: {message}")));
                }
            }
            let applies = |p: &&Object<AuthorizationPolicySpec>| {
                (p.metadata.namespace == namespace || p.metadata.namespace == mesh_config::ROOT_NAMESPACE)
                    && p.spec.selector.as_ref().is_none_or(|s| mesh_config::api::labels_match(&s.match_labels, labels))
            };
            let (out, errors) = Self::compile_objects(policies.iter().filter(applies), protocol);
            match errors.is_empty() {
                true => Ok(out),
                false => Err(InvalidPolicies(errors.join("\n"))),
            }
        }
    }

    /// The policies that apply to a workload in `namespace` with `labels`: the root
    /// namespace's and its own namespace's, without a selector or with a matching one.
    /// Policies attached with `targetRefs` apply to gateways and waypoints, not here.
    #[cfg(feature = "config")]
    pub fn compile(snapshot: &Snapshot, namespace: &str, labels: &Labels, protocol: Traffic) -> Self {
        let policies =
            snapshot.policies_for_workload(Kind::AuthorizationPolicy, namespace, labels).filter_map(|r| match &**r {
                Resource::AuthorizationPolicy(ap) => Some(ap),
                _ => None,
            });
        // The loader validated every policy: a rule that still fails translation is
        // skipped with a warning and the policy applies without it.
        let (mut out, errors) = Self::compile_objects(policies, protocol);
        out.warnings.extend(errors.into_iter().map(|e| format!("{e} (the rule is skipped)")));
        out
    }

    /// The applicable policies compiled in Istio's order (creation time, namespace, name),
    /// with the rules that failed translation as errors.
    fn compile_objects<'a>(
        policies: impl Iterator<Item = &'a Object<AuthorizationPolicySpec>>,
        protocol: Traffic,
    ) -> (Self, Vec<String>) {
        let mut out = Self::default();
        let mut errors = Vec::new();
        let mut policies: Vec<&Object<AuthorizationPolicySpec>> = policies.collect();
        policies.sort_by(|a, b| {
            (&a.metadata.creation_timestamp, &a.metadata.namespace, &a.metadata.name).cmp(&(
                &b.metadata.creation_timestamp,
                &b.metadata.namespace,
                &b.metadata.name,
            ))
        });
        for ap in policies {
            let spec: &AuthorizationPolicySpec = &ap.spec;
            if spec.target_ref.is_some() || !spec.target_refs.is_empty() {
                continue;
            }
            let name: Arc<str> = format!("{}/{}", ap.metadata.namespace, ap.metadata.name).into();
            let action = spec.action();
            let mut rules = Vec::new();
            for (i, rule) in spec.rules.iter().enumerate() {
                match compile_rule(rule, &ap.metadata.namespace, action, protocol) {
                    Ok(Some(r)) => rules.push(r),
                    Ok(None) => out.warnings.push(format!(
                        "AuthorizationPolicy {name}: spec.rules[{i}] uses HTTP attributes and is dropped for TCP"
                    )),
                    Err(e) => errors.push(format!("AuthorizationPolicy {name}: spec.rules[{i}]: {e}")),
                }
            }
            let compiled = Compiled {
                name,
                rules,
                provider: spec.provider.as_ref().map(|p| p.name.clone()),
                dry_run: ap.metadata.annotations.get("istio.io/dry-run").is_some_and(|v| v == "true"),
            };
            match action {
                AuthorizationAction::Custom => out.custom.push(compiled),
                AuthorizationAction::Deny => out.deny.push(compiled),
                AuthorizationAction::Allow => out.allow.push(compiled),
                AuthorizationAction::Audit => out.audit.push(compiled),
            }
        }
        (out, errors)
    }

    /// Whether any policy applies.
    pub fn is_empty(&self) -> bool {
        self.custom.is_empty() && self.deny.is_empty() && self.allow.is_empty() && self.audit.is_empty()
    }

    /// Evaluate a request.
    pub fn evaluate(&self, req: &AuthzRequest<'_>) -> Evaluation {
        let mut dry_run = Vec::new();
        let matching = |policies: &[Compiled], dry_run: &mut Vec<Arc<str>>| -> Option<Arc<str>> {
            for p in policies {
                if p.matches(req) {
                    if p.dry_run {
                        dry_run.push(p.name.clone());
                    } else {
                        return Some(p.name.clone());
                    }
                }
            }
            None
        };
        let custom = self
            .custom
            .iter()
            .filter(|p| !p.dry_run)
            .find(|p| p.matches(req))
            .map(|p| CustomCheck { policy: p.name.clone(), provider: p.provider.clone().unwrap_or_default() });
        let audit: Vec<Arc<str>> = self.audit.iter().filter(|p| p.matches(req)).map(|p| p.name.clone()).collect();
        let decision = if let Some(policy) = matching(&self.deny, &mut dry_run) {
            Decision { allowed: false, action: Some(Action::Deny), policy: Some(policy), audit, dry_run }
        } else if self.allow.iter().all(|p| p.dry_run) {
            // No (enforced) ALLOW policy applies: allow.
            let _ = matching(&self.allow, &mut dry_run);
            Decision { allowed: true, action: None, policy: None, audit, dry_run }
        } else if let Some(policy) = matching(&self.allow, &mut dry_run) {
            Decision { allowed: true, action: Some(Action::Allow), policy: Some(policy), audit, dry_run }
        } else {
            Decision { allowed: false, action: Some(Action::Allow), policy: None, audit, dry_run }
        };
        Evaluation { custom, decision }
    }
}

impl Compiled {
    fn matches(&self, req: &AuthzRequest<'_>) -> bool {
        // No rules: never matches (for ALLOW, the allow-nothing policy).
        self.rules.iter().any(|r| r.matches(req))
    }
}

impl Rule {
    fn matches(&self, req: &AuthzRequest<'_>) -> bool {
        (self.from.is_empty() || self.from.iter().any(|s| s.matches(req)))
            && (self.to.is_empty() || self.to.iter().any(|o| o.matches(req)))
            && self.when.iter().all(|c| c.matches(req))
    }
}

fn principal(req: &AuthzRequest<'_>) -> Option<String> {
    req.peer.map(Identity::principal)
}

fn sa_matches(list: &[(String, String)], peer: Option<&Identity>) -> bool {
    peer.is_some_and(|p| list.iter().any(|(ns, sa)| p.namespace() == ns && p.service_account() == sa))
}

impl Source {
    fn matches(&self, req: &AuthzRequest<'_>) -> bool {
        let principal = principal(req);
        let principal = principal.as_deref();
        let namespace = req.peer.map(Identity::namespace);
        let trust_domain = req.peer.map(Identity::trust_domain);
        let request_principal = req.request_auth.map(|a| a.principal.as_str());
        self.principals.check(&self.not_principals, principal)
            && self.namespaces.check(&self.not_namespaces, namespace)
            && (self.service_accounts.is_empty() || sa_matches(&self.service_accounts, req.peer))
            && !sa_matches(&self.not_service_accounts, req.peer)
            && self.trust_domains.check(&self.not_trust_domains, trust_domain)
            && self.request_principals.check(&self.not_request_principals, request_principal)
            && self.ip_blocks.check(&self.not_ip_blocks, req.source_ip)
            && self.remote_ip_blocks.check(&self.not_remote_ip_blocks, req.remote_ip.or(req.source_ip))
    }
}

impl Operation {
    fn matches(&self, req: &AuthzRequest<'_>) -> bool {
        let host = req.host.to_ascii_lowercase();
        self.hosts.check(&self.not_hosts, Some(&host))
            && (self.ports.is_empty() || self.ports.contains(&req.port))
            && !self.not_ports.contains(&req.port)
            && self.methods.check(&self.not_methods, Some(req.method))
            && self.paths.check(&self.not_paths, Some(req.path))
    }
}

fn claim(claims: &serde_json::Value, path: &[String]) -> Vec<String> {
    let mut v = claims;
    for p in path {
        match v.get(p) {
            Some(next) => v = next,
            None => return Vec::new(),
        }
    }
    match v {
        serde_json::Value::String(s) => vec![s.clone()],
        serde_json::Value::Array(items) => items.iter().filter_map(|i| i.as_str().map(str::to_string)).collect(),
        serde_json::Value::Bool(b) => vec![b.to_string()],
        serde_json::Value::Number(n) => vec![n.to_string()],
        _ => Vec::new(),
    }
}

impl Condition {
    fn values_check(&self, values: &[String]) -> bool {
        let pos = self.values.is_empty() || values.iter().any(|v| self.values.any(Some(v)));
        let neg = values.iter().any(|v| self.not_values.any(Some(v)));
        pos && !neg
    }

    fn matches(&self, req: &AuthzRequest<'_>) -> bool {
        let one = |v: Option<String>| self.values.check(&self.not_values, v.as_deref());
        match &self.key {
            Key::Header(name) => {
                let values: Vec<String> =
                    req.headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).map(str::to_string).collect();
                if values.is_empty() {
                    return self.values.is_empty() && !self.not_values.any(None);
                }
                // Presence: a header sent with an empty value counts as present.
                let present_or = |f: &Field| f.0.iter().any(|m| matches!(m, ValueMatcher::Presence));
                let pos = self.values.is_empty()
                    || present_or(&self.values)
                    || values.iter().any(|v| self.values.any(Some(v)));
                let neg = present_or(&self.not_values) || values.iter().any(|v| self.not_values.any(Some(v)));
                pos && !neg
            }
            Key::SourceIp => self.blocks.check(&self.not_blocks, req.source_ip),
            Key::RemoteIp => self.blocks.check(&self.not_blocks, req.remote_ip.or(req.source_ip)),
            Key::DestinationIp => self.blocks.check(&self.not_blocks, req.destination_ip),
            Key::SourceNamespace => one(req.peer.map(|p| p.namespace().to_string())),
            Key::SourcePrincipal => one(principal(req)),
            Key::SourceServiceAccount => one(req.peer.map(|p| format!("{}/{}", p.namespace(), p.service_account()))),
            Key::SourceTrustDomain => one(req.peer.map(|p| p.trust_domain().to_string())),
            Key::AuthPrincipal => one(req.request_auth.map(|a| a.principal.clone())),
            Key::AuthPresenter => one(req.request_auth.and_then(|a| a.presenter.clone())),
            Key::AuthAudiences => match req.request_auth {
                Some(a) if !a.audiences.is_empty() => self.values_check(&a.audiences),
                _ => one(None),
            },
            Key::AuthClaim(path) => match req.request_auth.map(|a| claim(&a.claims, path)) {
                Some(values) if !values.is_empty() => self.values_check(&values),
                _ => one(None),
            },
            Key::DestinationPort => one(Some(req.port.to_string())),
            Key::Sni => one(req.sni.map(str::to_string)),
        }
    }
}
