//! What a matched route does: forward to weighted clusters, redirect, answer directly;
//! and the request/response edits that go with it (rewrite, headers, CORS, mirrors).

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use mesh_config::{
    api::{
        CorsPolicy, HeaderOperations, Headers, HttpBody, HttpRedirect, HttpRewrite, RedirectPortSelection,
        UnmatchedPreflights,
    },
    string_match::{InvalidRegex, StringMatcher, compile_full_match},
};
use mesh_fault::FaultPolicy;

pub use super::target::Target;
use super::{
    matching::{MatchBlock, RequestInfo},
    retry::RetryPolicy,
};

/// One compiled HTTPRoute.
#[derive(Clone, Debug)]
pub struct RouteRule {
    /// `namespace/name` of the VirtualService; `None` for default routing.
    pub virtual_service: Option<Arc<str>>,
    /// `namespace/name` of the Gateway API HTTPRoute or GRPCRoute this rule comes from.
    pub http_route: Option<Arc<str>>,
    /// Index in the VirtualService's `http` list (or in the HTTPRoute's `rules`).
    pub index: Option<usize>,
    /// The route's `name`.
    pub name: Option<Arc<str>>,
    /// Match blocks, ORed; empty matches everything.
    pub matches: Vec<MatchBlock>,
    /// What to do.
    pub action: Action,
    /// Timeout over all tries.
    pub timeout: Option<Duration>,
    /// Retries; `None` when disabled.
    pub retry: Option<Arc<RetryPolicy>>,
    /// Fault injection.
    pub fault: Option<Arc<FaultPolicy>>,
    /// Shadow traffic.
    pub mirrors: Vec<Mirror>,
    /// CORS.
    pub cors: Option<Arc<Cors>>,
    /// Route-level header operations.
    pub headers: HeaderOps,
    /// Rewrite before forwarding.
    pub rewrite: Option<Rewrite>,
}

impl RouteRule {
    /// The first match block that holds, or `None`. A route without blocks matches with
    /// a catch-all block.
    pub fn matches<'r>(&'r self, req: &RequestInfo<'_>) -> Option<Option<&'r MatchBlock>> {
        if self.matches.is_empty() {
            return Some(None);
        }
        self.matches.iter().find(|b| b.matches(req)).map(Some)
    }
}

/// A route's action.
#[derive(Clone, Debug)]
pub enum Action {
    /// Forward to one of the weighted destinations.
    Forward(WeightedTargets),
    /// Answer with a redirect.
    Redirect(Redirect),
    /// Answer with a fixed response.
    DirectResponse(DirectResponse),
}

/// A weighted destination.
#[derive(Clone, Debug)]
pub struct WeightedTarget {
    /// Where.
    pub target: Target,
    /// Relative weight (> 0).
    pub weight: u32,
    /// Destination-level header operations.
    pub headers: HeaderOps,
    /// A Gateway API backendRef's own URLRewrite and RequestMirror filters.
    pub filters: Option<Arc<BackendFilters>>,
}

/// The filters of one Gateway API backendRef beyond its header modifiers: applied only when
/// that backend is picked, after the rule's.
#[derive(Clone, Debug, Default)]
pub struct BackendFilters {
    /// Its URLRewrite (replaces the rule's, being the more specific).
    pub rewrite: Option<Rewrite>,
    /// Its RequestMirrors (in addition to the rule's).
    pub mirrors: Vec<Mirror>,
}

/// The destinations of a forwarding route, with weights > 0.
#[derive(Clone, Debug)]
pub struct WeightedTargets {
    /// Destinations.
    pub targets: Vec<WeightedTarget>,
    total: u64,
    /// The share (as weight) that answers 500 itself: Gateway API backendRefs that resolve to
    /// nothing (an unknown Service, a cross-namespace reference without a ReferenceGrant).
    refused: u64,
    /// Gateway API rules: a weight of 0 sends nothing even when alone, and a rule with no
    /// weight left answers 500 (VirtualService routes give a lone destination 100 %).
    strict: bool,
}

impl WeightedTargets {
    /// From destinations; weight-0 ones are dropped, a single destination gets 100 %.
    pub fn new(mut targets: Vec<WeightedTarget>) -> Self {
        if targets.len() == 1 {
            targets[0].weight = targets[0].weight.max(1);
        }
        targets.retain(|t| t.weight > 0);
        let total = targets.iter().map(|t| u64::from(t.weight)).sum();
        Self { targets, total, refused: 0, strict: false }
    }

    /// A Gateway API rule's backends: weights as written (0 sends nothing, even alone), and
    /// `refused` weight for the invalid backends, whose share answers 500.
    pub fn gateway_api(mut targets: Vec<WeightedTarget>, refused: u64) -> Self {
        targets.retain(|t| t.weight > 0);
        let total = targets.iter().map(|t| u64::from(t.weight)).sum();
        Self { targets, total, refused, strict: true }
    }

    /// Whether a request this route does not send anywhere gets 500 (Gateway API), rather
    /// than 404 NR.
    pub fn answers_500(&self) -> bool {
        self.strict
    }

    /// The weight of invalid backends, answered with 500.
    pub fn refused_weight(&self) -> u64 {
        self.refused
    }

    /// Pick per request, given a uniform sample in `[0, 1)`. `None`: nothing to send to (or
    /// the sample fell in the share of invalid Gateway API backends).
    pub fn pick(&self, sample: f64) -> Option<&WeightedTarget> {
        if self.targets.len() <= 1 && self.refused == 0 {
            return self.targets.first();
        }
        match super::weights::pick(self.targets.iter().map(|t| t.weight), self.total + self.refused, sample) {
            Some(i) => self.targets.get(i),
            // Past the weights: the refused share, or a rounding at the top.
            None if self.refused > 0 => None,
            None => self.targets.last(),
        }
    }

    /// Each destination's share in percent (with the refused share, they sum to 100).
    pub fn percents(&self) -> impl Iterator<Item = (&WeightedTarget, f64)> {
        let total = (self.total + self.refused).max(1) as f64;
        self.targets.iter().map(move |t| (t, f64::from(t.weight) * 100.0 / total))
    }
}

/// Compiled header operations for one side.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HeaderOpsSide {
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

/// Request and response header operations; `host`/`:authority` in request `set`/`add`
/// is an authority rewrite.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HeaderOps {
    /// On the request.
    pub request: HeaderOpsSide,
    /// On the response.
    pub response: HeaderOpsSide,
    /// Authority rewrite from a `host` header operation.
    pub authority: Option<HeaderValue>,
}

/// A header operation that is not valid HTTP.
#[derive(Debug, thiserror::Error)]
#[error("invalid header {0:?}")]
pub struct InvalidHeader(pub String);

fn side(ops: Option<&HeaderOperations>, authority: &mut Option<HeaderValue>) -> Result<HeaderOpsSide, InvalidHeader> {
    let Some(ops) = ops else { return Ok(HeaderOpsSide::default()) };
    let mut pair = |(k, v): (&String, &String)| -> Result<Option<(HeaderName, HeaderValue)>, InvalidHeader> {
        let value = HeaderValue::from_str(v).map_err(|_| InvalidHeader(k.clone()))?;
        if k.eq_ignore_ascii_case("host") || k.eq_ignore_ascii_case(":authority") {
            *authority = Some(value);
            return Ok(None);
        }
        let name = HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()).map_err(|_| InvalidHeader(k.clone()))?;
        Ok(Some((name, value)))
    };
    let mut out = HeaderOpsSide::default();
    for kv in &ops.set {
        out.set.extend(pair(kv)?);
    }
    for kv in &ops.add {
        out.add.extend(pair(kv)?);
    }
    for k in &ops.remove {
        out.remove
            .push(HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()).map_err(|_| InvalidHeader(k.clone()))?);
    }
    Ok(out)
}

impl HeaderOps {
    /// Compile.
    pub fn compile(h: Option<&Headers>) -> Result<Self, InvalidHeader> {
        let Some(h) = h else { return Ok(Self::default()) };
        let mut authority = None;
        let request = side(h.request.as_ref(), &mut authority)?;
        let mut ignored = None;
        let response = side(h.response.as_ref(), &mut ignored)?;
        Ok(Self { request, response, authority })
    }

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl HeaderOpsSide {
    /// Whether there is nothing to do.
    pub fn is_empty_side(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    /// Apply: remove, then set, then add.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }
}

/// A compiled `rewrite` (VirtualService) or URLRewrite filter (Gateway API).
#[derive(Clone, Debug)]
pub struct Rewrite {
    uri: Option<String>,
    regex: Option<(regex::Regex, String)>,
    /// A Gateway API path modifier: it knows its own matched prefix.
    api_path: Option<PathModifier>,
    /// New authority.
    pub authority: Option<HeaderValue>,
}

/// A Gateway API `HTTPPathModifier`, compiled for the one match of its rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathModifier {
    /// `ReplaceFullPath`: the whole path (the query string is kept).
    Full(String),
    /// `ReplacePrefixMatch`: the rule's PathPrefix match, replaced element-wise.
    Prefix {
        /// The PathPrefix value the rule matched.
        matched: String,
        /// What replaces it.
        replacement: String,
    },
}

impl PathModifier {
    /// The new path for `path` (which the rule matched). `ReplacePrefixMatch` follows the
    /// spec's table: the matched prefix and the replacement are both read without a trailing
    /// `/`, the rest of the path is kept as it was, and an empty result is `/`
    /// (`/foo/bar` with `/foo` → `/xyz/` gives `/xyz/bar`; `/foo/` with `/foo` → `` gives `/`).
    pub fn apply(&self, path: &str) -> String {
        match self {
            Self::Full(p) => p.clone(),
            Self::Prefix { matched, replacement } => {
                let prefix = matched.trim_end_matches('/');
                let rest = path.get(prefix.len()..).filter(|_| path.starts_with(prefix)).unwrap_or(path);
                let mut out = replacement.trim_end_matches('/').to_string();
                out.push_str(rest);
                if !out.starts_with('/') {
                    out.insert(0, '/');
                }
                out
            }
        }
    }
}

impl Rewrite {
    /// Compile.
    pub fn compile(r: &HttpRewrite) -> Result<Self, RouteConfigError> {
        let regex = match &r.uri_regex_rewrite {
            Some(rr) => {
                let re = regex::Regex::new(&rr.pattern)
                    .map_err(|e| RouteConfigError::Regex(InvalidRegex::Syntax(e.to_string())))?;
                Some((re, re2_replacement(&rr.rewrite)))
            }
            None => None,
        };
        let authority = r
            .authority
            .as_deref()
            .map(HeaderValue::from_str)
            .transpose()
            .map_err(|_| RouteConfigError::Header(InvalidHeader("authority".into())))?;
        Ok(Self { uri: r.uri.clone(), regex, api_path: None, authority })
    }

    /// A Gateway API URLRewrite: a new Host and/or path.
    pub fn gateway_api(hostname: Option<&str>, path: Option<PathModifier>) -> Result<Self, RouteConfigError> {
        let authority = hostname
            .map(HeaderValue::from_str)
            .transpose()
            .map_err(|_| RouteConfigError::Header(InvalidHeader("hostname".into())))?;
        Ok(Self { uri: None, regex: None, api_path: path, authority })
    }

    /// The new path (and query) for `path?query`, given the prefix the matched block used.
    pub fn path(&self, path: &str, query: Option<&str>, matched_prefix: Option<&str>) -> Option<String> {
        let new_path = if let Some(m) = &self.api_path {
            m.apply(path)
        } else if let Some((re, rep)) = &self.regex {
            re.replace_all(path, rep.as_str()).into_owned()
        } else if let Some(uri) = &self.uri {
            match matched_prefix {
                // Only the matched prefix is replaced: `/a` -> `/b` turns `/ax` into `/bx`.
                Some(prefix) if path.starts_with(prefix) => format!("{uri}{}", &path[prefix.len()..]),
                _ => uri.clone(),
            }
        } else {
            return None;
        };
        Some(match query {
            Some(q) => format!("{new_path}?{q}"),
            None => new_path,
        })
    }
}

/// RE2 substitutions write groups as `\1`; the regex crate as `${1}`.
fn re2_replacement(rep: &str) -> String {
    let mut out = String::with_capacity(rep.len());
    let mut chars = rep.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek().is_some_and(char::is_ascii_digit) => {
                let d = chars.next().expect("peeked");
                out.push_str(&format!("${{{d}}}"));
            }
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out
}

/// A compiled `redirect` (VirtualService) or RequestRedirect filter (Gateway API).
#[derive(Clone, Debug, PartialEq)]
pub struct Redirect {
    /// Gateway API semantics: the path modifier, and the port rule of the spec.
    api: Option<ApiRedirect>,
    uri: Option<String>,
    prefix_rewrite: Option<String>,
    authority: Option<String>,
    port: Option<u16>,
    derive_port: Option<RedirectPortSelection>,
    scheme: Option<String>,
    /// The status.
    pub status: StatusCode,
}

impl Redirect {
    /// Compile.
    pub fn compile(r: &HttpRedirect) -> Result<Self, RouteConfigError> {
        Ok(Self {
            api: None,
            uri: r.uri.clone(),
            prefix_rewrite: r.prefix_rewrite.clone(),
            authority: r.authority.clone(),
            port: r.port.and_then(|p| u16::try_from(p).ok()),
            derive_port: r.derive_port,
            scheme: r.scheme.clone(),
            status: u16::try_from(r.code())
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
                .ok_or(RouteConfigError::Status(r.code()))?,
        })
    }

    /// A Gateway API RequestRedirect. `listener_port` is the Gateway listener's port (or,
    /// in the mesh, the Service port) the spec derives the redirect's port from.
    pub fn gateway_api(
        f: &mesh_config::api::gateway_api::HttpRequestRedirectFilter,
        path: Option<PathModifier>,
        listener_port: u16,
    ) -> Result<Self, RouteConfigError> {
        let code = f.status_code.unwrap_or(302);
        Ok(Self {
            api: Some(ApiRedirect { path, listener_port }),
            uri: None,
            prefix_rewrite: None,
            authority: f.hostname.clone(),
            port: f.port.and_then(|p| u16::try_from(p).ok()),
            derive_port: None,
            scheme: f.scheme.clone(),
            status: u16::try_from(code)
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
                .ok_or(RouteConfigError::Status(code))?,
        })
    }

    /// The Gateway API's `Location`: the port is the filter's; else the well-known port of
    /// the filter's scheme (80, 443); else the listener's. It is left out when it is the
    /// scheme's default (http 80, https 443).
    fn api_location(&self, api: &ApiRedirect, req: &RequestInfo<'_>) -> String {
        let scheme = self.scheme.as_deref().unwrap_or(req.scheme);
        let host = self.authority.as_deref().unwrap_or_else(|| split_authority(req.authority).0);
        let port = match (self.port, self.scheme.as_deref()) {
            (Some(p), _) => p,
            (None, Some("https")) => 443,
            (None, Some("http")) => 80,
            (None, _) => api.listener_port,
        };
        let path = api.path.as_ref().map_or_else(|| req.path.to_string(), |m| m.apply(req.path));
        let query = req.query.map(|q| format!("?{q}")).unwrap_or_default();
        match (scheme, port) {
            ("http", 80) | ("https", 443) => format!("{scheme}://{host}{path}{query}"),
            _ => format!("{scheme}://{host}:{port}{path}{query}"),
        }
    }

    /// The `Location` for a request.
    pub fn location(&self, req: &RequestInfo<'_>, matched_prefix: Option<&str>) -> String {
        if let Some(api) = &self.api {
            return self.api_location(api, req);
        }
        let scheme = self.scheme.as_deref().unwrap_or(req.scheme);
        let (req_host, req_port) = split_authority(req.authority);
        let host = self.authority.as_deref().unwrap_or(req_host);
        let port = match (self.port, self.derive_port) {
            (Some(p), _) => Some(p),
            (None, Some(RedirectPortSelection::FromRequestPort)) => req_port,
            (None, Some(RedirectPortSelection::FromProtocolDefault)) => None,
            // Without port settings the authority keeps the request's port, unless the
            // authority itself was replaced.
            (None, None) => {
                if self.authority.is_some() {
                    None
                } else {
                    req_port
                }
            }
        };
        let path = match (&self.uri, &self.prefix_rewrite, matched_prefix) {
            (Some(uri), _, _) => uri.clone(),
            (None, Some(rw), Some(prefix)) if req.path.starts_with(prefix) => {
                format!("{rw}{}", &req.path[prefix.len()..])
            }
            _ => req.path.to_string(),
        };
        let query = req.query.map(|q| format!("?{q}")).unwrap_or_default();
        match port {
            Some(p) => format!("{scheme}://{host}:{p}{path}{query}"),
            None => format!("{scheme}://{host}{path}{query}"),
        }
    }
}

/// What a Gateway API redirect adds to [`Redirect`].
#[derive(Clone, Debug, PartialEq)]
struct ApiRedirect {
    path: Option<PathModifier>,
    listener_port: u16,
}

/// Host and port of an authority (`reviews:9080`, `[::1]:80`, `reviews`).
pub fn split_authority(authority: &str) -> (&str, Option<u16>) {
    if let Some(rest) = authority.strip_prefix('[')
        && let Some((host, after)) = rest.split_once(']')
    {
        return (host, after.strip_prefix(':').and_then(|p| p.parse().ok()));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => match p.parse() {
            Ok(port) => (h, Some(port)),
            Err(_) => (authority, None),
        },
        _ => (authority, None),
    }
}

/// A compiled `directResponse`.
#[derive(Clone, Debug, PartialEq)]
pub struct DirectResponse {
    /// Status.
    pub status: StatusCode,
    /// Body.
    pub body: Bytes,
}

impl DirectResponse {
    /// Compile (a `bytes` body is base64).
    pub fn compile(status: u32, body: Option<&HttpBody>) -> Result<Self, RouteConfigError> {
        let status = u16::try_from(status)
            .ok()
            .and_then(|s| StatusCode::from_u16(s).ok())
            .ok_or(RouteConfigError::Status(status))?;
        let body = match body {
            None => Bytes::new(),
            Some(HttpBody::String(s)) => Bytes::from(s.clone()),
            Some(HttpBody::Bytes(b)) => Bytes::from(mesh_core::base64::decode(b).ok_or(RouteConfigError::Base64)?),
        };
        Ok(Self { status, body })
    }
}

/// A mirror destination.
#[derive(Clone, Debug)]
pub struct Mirror {
    /// Where copies go.
    pub target: Target,
    /// Share of requests mirrored.
    pub percent: f64,
}

/// A compiled `corsPolicy`.
#[derive(Clone, Debug)]
pub struct Cors {
    origins: Vec<StringMatcher>,
    allow_methods: Option<HeaderValue>,
    allow_headers: Option<HeaderValue>,
    expose_headers: Option<HeaderValue>,
    max_age: Option<HeaderValue>,
    allow_credentials: bool,
    forward_unmatched_preflights: bool,
}

fn joined(items: &[String]) -> Option<HeaderValue> {
    (!items.is_empty()).then(|| HeaderValue::from_str(&items.join(",")).ok()).flatten()
}

impl Cors {
    /// Compile.
    pub fn compile(c: &CorsPolicy) -> Result<Self, RouteConfigError> {
        let mut origins: Vec<StringMatcher> =
            c.allow_origins.iter().map(StringMatcher::try_from).collect::<Result<_, _>>()?;
        origins.extend(
            c.allow_origin
                .iter()
                .map(|o| if o == "*" { StringMatcher::Present } else { StringMatcher::Exact(o.as_str().into()) }),
        );
        Ok(Self {
            origins,
            allow_methods: joined(&c.allow_methods),
            allow_headers: joined(&c.allow_headers),
            expose_headers: joined(&c.expose_headers),
            max_age: c.max_age.map(|d| HeaderValue::from(d.get().as_secs())),
            allow_credentials: c.allow_credentials == Some(true),
            forward_unmatched_preflights: !matches!(c.unmatched_preflights, Some(UnmatchedPreflights::Ignore)),
        })
    }

    fn allowed<'h>(&self, headers: &'h HeaderMap) -> Option<&'h HeaderValue> {
        let origin = headers.get(header::ORIGIN)?;
        let s = origin.to_str().ok()?;
        self.origins.iter().any(|m| m.matches(s)).then_some(origin)
    }

    /// What the policy makes of a request: a preflight (`OPTIONS` with `Origin` and
    /// `Access-Control-Request-Method`) is answered here when its origin is allowed, and
    /// otherwise forwarded or stopped as `unmatchedPreflights` says.
    pub fn preflight(&self, method: &str, headers: &HeaderMap) -> Preflight {
        if method != "OPTIONS"
            || !headers.contains_key(header::ORIGIN)
            || !headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
        {
            return Preflight::NotOne;
        }
        let Some(origin) = self.allowed(headers) else {
            return if self.forward_unmatched_preflights { Preflight::Forward } else { Preflight::Stop };
        };
        let mut out = HeaderMap::new();
        out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        for (name, value) in [
            (header::ACCESS_CONTROL_ALLOW_METHODS, &self.allow_methods),
            (header::ACCESS_CONTROL_ALLOW_HEADERS, &self.allow_headers),
            (header::ACCESS_CONTROL_MAX_AGE, &self.max_age),
        ] {
            if let Some(v) = value {
                out.insert(name, v.clone());
            }
        }
        if self.allow_credentials {
            out.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        }
        Preflight::Answer(out)
    }

    /// Headers to add to a normal response for a request from an allowed origin.
    pub fn response_headers(&self, request: &HeaderMap, response: &mut HeaderMap) {
        let Some(origin) = self.allowed(request) else { return };
        response.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        if let Some(v) = &self.expose_headers {
            response.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v.clone());
        }
        if self.allow_credentials {
            response.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        }
    }
}

/// What a CORS policy makes of a request ([`Cors::preflight`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Preflight {
    /// Not a preflight: routed as any request.
    NotOne,
    /// An allowed origin's preflight: answered 200 here, with these headers.
    Answer(HeaderMap),
    /// A preflight whose origin is not allowed, forwarded upstream (`unmatchedPreflights:
    /// FORWARD`, the default).
    Forward,
    /// A preflight whose origin is not allowed, answered 200 without CORS headers
    /// (`unmatchedPreflights: IGNORE`).
    Stop,
}

/// A route that cannot be compiled (mesh-core validation rejects these first).
#[derive(Debug, thiserror::Error)]
pub enum RouteConfigError {
    /// A regex.
    #[error(transparent)]
    Regex(#[from] InvalidRegex),
    /// A header.
    #[error(transparent)]
    Header(#[from] InvalidHeader),
    /// A match block.
    #[error(transparent)]
    Match(#[from] super::matching::InvalidMatch),
    /// A status code.
    #[error("invalid status {0}")]
    Status(u32),
    /// A base64 body.
    #[error("directResponse body.bytes is not base64")]
    Base64,
    /// A fault.
    #[error(transparent)]
    Fault(#[from] mesh_fault::InvalidFault),
}

/// Full-match regex used elsewhere in routing (kept here so one module owns regex use).
pub fn full_match(pattern: &str) -> Result<regex::Regex, InvalidRegex> {
    compile_full_match(pattern)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_splitting() {
        assert_eq!(split_authority("reviews:9080"), ("reviews", Some(9080)));
        assert_eq!(split_authority("reviews"), ("reviews", None));
        assert_eq!(split_authority("[::1]:80"), ("::1", Some(80)));
        assert_eq!(split_authority("[::1]"), ("::1", None));
        assert_eq!(split_authority("a:b"), ("a:b", None));
    }

    #[test]
    fn rewrites() {
        let rw = Rewrite::compile(&HttpRewrite { uri: Some("/b".into()), ..Default::default() }).unwrap();
        assert_eq!(rw.path("/a/x", Some("q=1"), Some("/a")).as_deref(), Some("/b/x?q=1"));
        assert_eq!(rw.path("/ax", None, Some("/a")).as_deref(), Some("/bx"));
        assert_eq!(rw.path("/exact", None, None).as_deref(), Some("/b"));
        let re = Rewrite::compile(&HttpRewrite {
            uri_regex_rewrite: Some(mesh_config::api::RegexRewrite {
                pattern: "^/service/([^/]+)(/.*)$".into(),
                rewrite: "\\2/instance/\\1".into(),
            }),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(re.path("/service/foo/v1/api", None, None).as_deref(), Some("/v1/api/instance/foo"));
    }

    #[test]
    fn weights() {
        let t = |w| WeightedTarget {
            target: Target::Missing { name: "x".into(), host: "h".into(), subset: None, port: None },
            weight: w,
            headers: HeaderOps::default(),
            filters: None,
        };
        let single = WeightedTargets::new(vec![t(0)]);
        assert_eq!(single.percents().map(|(_, p)| p).collect::<Vec<_>>(), [100.0]);
        let split = WeightedTargets::new(vec![t(80), t(20), t(0)]);
        assert_eq!(split.percents().map(|(_, p)| p).collect::<Vec<_>>(), [80.0, 20.0]);
        assert_eq!(split.pick(0.0).unwrap().weight, 80);
        assert_eq!(split.pick(0.79).unwrap().weight, 80);
        assert_eq!(split.pick(0.8).unwrap().weight, 20);
        assert_eq!(split.pick(0.9999).unwrap().weight, 20);
    }
}
