//! HTTPMatchRequest: compiled once, matched per request.

use http::{HeaderMap, HeaderName};
use mesh_config::{
    api::{
        HttpMatchRequest, StringMatch, ValueMatch,
        gateway_api::{GrpcRouteMatch, HttpHeaderMatch, HttpRouteMatch, PathMatchType, ValueMatchType},
    },
    string_match::{InvalidRegex, StringMatcher},
};
use mesh_core::request::first_query_value;

/// The parts of a request that routing looks at.
#[derive(Clone, Copy, Debug)]
pub struct RequestInfo<'a> {
    /// `:method`.
    pub method: &'a str,
    /// `:scheme` (`http` or `https`).
    pub scheme: &'a str,
    /// `:authority` / `Host` as sent (may carry a port).
    pub authority: &'a str,
    /// The path, without the query string.
    pub path: &'a str,
    /// The query string, without `?`.
    pub query: Option<&'a str>,
    /// Headers.
    pub headers: &'a HeaderMap,
}

impl<'a> RequestInfo<'a> {
    /// From an `http::Request`: the authority comes from the URI (absolute form) or the
    /// `Host` header; the scheme from the URI or `default_scheme`.
    pub fn from_request<B>(req: &'a http::Request<B>, default_scheme: &'a str) -> Self {
        let uri = req.uri();
        let authority = mesh_core::request::authority(req).unwrap_or("");
        Self {
            method: req.method().as_str(),
            scheme: uri.scheme_str().unwrap_or(default_scheme),
            authority,
            path: uri.path(),
            query: uri.query(),
            headers: req.headers(),
        }
    }
}

/// One compiled match block: every set condition must hold.
#[derive(Clone, Debug, PartialEq)]
pub struct MatchBlock {
    /// Block name.
    pub name: Option<String>,
    uri: Option<StringMatcher>,
    ignore_uri_case: bool,
    scheme: Option<StringMatcher>,
    method: Option<StringMatcher>,
    authority: Option<StringMatcher>,
    headers: Vec<(HeaderName, StringMatcher)>,
    without_headers: Vec<(HeaderName, StringMatcher)>,
    query_params: Vec<(String, StringMatcher)>,
    /// A GRPCRoute method condition on `/service/method`.
    grpc: Option<GrpcMethod>,
    /// The uri prefix, when the uri condition is a prefix (for prefix rewrites).
    pub uri_prefix: Option<String>,
}

/// A GRPCRoute `method` condition: the path is `/service/method`, each part one path
/// element, each matched on its own (so a service regex never reaches into the method).
#[derive(Clone, Debug, PartialEq)]
struct GrpcMethod {
    service: Option<StringMatcher>,
    method: Option<StringMatcher>,
}

impl GrpcMethod {
    fn matches(&self, path: &str) -> bool {
        let Some((service, method)) = path.strip_prefix('/').and_then(|p| p.split_once('/')) else { return false };
        if service.is_empty() || method.is_empty() || method.contains('/') {
            return false;
        }
        self.service.as_ref().is_none_or(|m| m.matches(service))
            && self.method.as_ref().is_none_or(|m| m.matches(method))
    }
}

/// Why a match block cannot be compiled (mesh-core validation rejects these first).
#[derive(Debug, thiserror::Error)]
pub enum InvalidMatch {
    /// A regex did not compile.
    #[error(transparent)]
    Regex(#[from] InvalidRegex),
    /// A header name is not a valid HTTP header name.
    #[error("invalid header name {0:?}")]
    HeaderName(String),
}

fn value_matcher(m: &ValueMatch) -> Result<StringMatcher, InvalidRegex> {
    StringMatcher::for_presence_or(m.string_match())
}

fn header_conditions(
    map: &std::collections::BTreeMap<String, ValueMatch>,
) -> Result<Vec<(HeaderName, StringMatcher)>, InvalidMatch> {
    map.iter()
        // Pseudo-header keys are matched by their own fields, not here (as Istio does).
        .filter(|(k, _)| !matches!(k.as_str(), "uri" | "scheme" | "method" | "authority"))
        .map(|(k, v)| {
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| InvalidMatch::HeaderName(k.clone()))?;
            Ok((name, value_matcher(v)?))
        })
        .collect()
}

impl TryFrom<&HttpMatchRequest> for MatchBlock {
    type Error = InvalidMatch;

    fn try_from(m: &HttpMatchRequest) -> Result<Self, InvalidMatch> {
        let compile = |sm: &Option<StringMatch>| sm.as_ref().map(StringMatcher::try_from).transpose();
        Ok(Self {
            name: m.name.clone(),
            uri: compile(&m.uri)?,
            ignore_uri_case: m.ignore_uri_case,
            scheme: compile(&m.scheme)?,
            method: compile(&m.method)?,
            authority: compile(&m.authority)?,
            headers: header_conditions(&m.headers)?,
            without_headers: header_conditions(&m.without_headers)?,
            query_params: m
                .query_params
                .iter()
                .map(|(k, v)| Ok((k.clone(), value_matcher(v)?)))
                .collect::<Result<_, InvalidRegex>>()?,
            grpc: None,
            uri_prefix: match &m.uri {
                Some(StringMatch::Prefix(p)) => Some(p.clone()),
                _ => None,
            },
        })
    }
}

/// A Gateway API header or query condition: exact, or an RE2 regex over the whole value.
fn api_value(m: &HttpHeaderMatch) -> Result<StringMatcher, InvalidRegex> {
    match m.match_type.unwrap_or_default() {
        ValueMatchType::Exact => Ok(StringMatcher::Exact(m.value.as_str().into())),
        ValueMatchType::RegularExpression => StringMatcher::try_from(&StringMatch::Regex(m.value.clone())),
    }
}

fn api_headers(list: &[HttpHeaderMatch]) -> Result<Vec<(HeaderName, StringMatcher)>, InvalidMatch> {
    list.iter()
        .map(|h| {
            let name =
                HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| InvalidMatch::HeaderName(h.name.clone()))?;
            Ok((name, api_value(h)?))
        })
        .collect()
}

impl MatchBlock {
    /// A Gateway API `HTTPRouteMatch`: `PathPrefix` is element-wise, header names are
    /// case-insensitive, query parameter names are not (the first value counts).
    pub fn from_http_route_match(m: &HttpRouteMatch) -> Result<Self, InvalidMatch> {
        let (ty, value) = m.path();
        let uri = match ty {
            PathMatchType::Exact => StringMatcher::Exact(value.into()),
            PathMatchType::PathPrefix => StringMatcher::path_prefix(value),
            PathMatchType::RegularExpression => StringMatcher::try_from(&StringMatch::Regex(value.to_string()))?,
        };
        Ok(Self {
            uri: Some(uri),
            method: m.method.as_deref().map(|v| StringMatcher::Exact(v.into())),
            headers: api_headers(&m.headers)?,
            query_params: m
                .query_params
                .iter()
                .map(|q| Ok((q.name.clone(), api_value(q)?)))
                .collect::<Result<_, InvalidRegex>>()?,
            ..Self::any()
        })
    }

    /// A Gateway API `GRPCRouteMatch`: its service and method against the two elements of
    /// the `/service/method` path (exact, or each a full-match regex); an absent part is any
    /// one element.
    pub fn from_grpc_route_match(m: &GrpcRouteMatch) -> Result<Self, InvalidMatch> {
        let grpc = match &m.method {
            None => None,
            Some(method) => {
                let part = |v: &Option<String>| -> Result<Option<StringMatcher>, InvalidRegex> {
                    match (v, method.match_type.unwrap_or_default()) {
                        (None, _) => Ok(None),
                        (Some(v), ValueMatchType::Exact) => Ok(Some(StringMatcher::Exact(v.as_str().into()))),
                        (Some(v), ValueMatchType::RegularExpression) => {
                            StringMatcher::try_from(&StringMatch::Regex(v.clone())).map(Some)
                        }
                    }
                };
                Some(GrpcMethod { service: part(&method.service)?, method: part(&method.method)? })
            }
        };
        Ok(Self { grpc, headers: api_headers(&m.headers)?, ..Self::any() })
    }

    /// A block that matches everything (a route without `match`).
    pub fn any() -> Self {
        Self {
            name: None,
            uri: None,
            ignore_uri_case: false,
            scheme: None,
            method: None,
            authority: None,
            headers: Vec::new(),
            without_headers: Vec::new(),
            query_params: Vec::new(),
            grpc: None,
            uri_prefix: None,
        }
    }

    /// Whether the block matches every request.
    pub fn is_catch_all(&self) -> bool {
        self.uri.as_ref().is_none_or(StringMatcher::is_catch_all_uri)
            && self.scheme.is_none()
            && self.method.is_none()
            && self.authority.is_none()
            && self.headers.is_empty()
            && self.without_headers.is_empty()
            && self.query_params.is_empty()
            && self.grpc.is_none()
    }

    /// Whether every condition of the block holds for `req`.
    pub fn matches(&self, req: &RequestInfo<'_>) -> bool {
        if let Some(g) = &self.grpc
            && !g.matches(req.path)
        {
            return false;
        }
        if let Some(uri) = &self.uri {
            let ok = if self.ignore_uri_case { uri.matches_ignore_case(req.path) } else { uri.matches(req.path) };
            if !ok {
                return false;
            }
        }
        let simple = [(&self.scheme, req.scheme), (&self.method, req.method), (&self.authority, req.authority)];
        if simple.iter().any(|(m, v)| m.as_ref().is_some_and(|m| !m.matches(v))) {
            return false;
        }
        let values = |name: &HeaderName| req.headers.get_all(name).into_iter().filter_map(|v| v.to_str().ok());
        if !self.headers.iter().all(|(name, m)| m.matches_any(values(name))) {
            return false;
        }
        if !self.without_headers.iter().all(|(name, m)| m.without(values(name))) {
            return false;
        }
        if !self.query_params.is_empty() {
            return self.query_params.iter().all(|(name, m)| match first_query_value(req.query, name) {
                Some(v) => m.matches(&v),
                None => false,
            });
        }
        true
    }
}
