//! CUSTOM authorization: the external authorizer (Istio's `envoyExtAuthzHttp` providers),
//! its client and its verdict.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};

/// Istio's mesh config `extensionProviders[].envoyExtAuthzHttp`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtAuthzHttp {
    /// Provider name, referenced by `provider.name`.
    pub name: String,
    /// The authorizer's host (a name or an address).
    pub service: String,
    /// Its port.
    pub port: u16,
    /// Prefix added to the checked path.
    pub path_prefix: String,
    /// Request headers sent in the check (besides `host`, `method`, `path`, `authorization`).
    pub include_request_headers_in_check: Vec<String>,
    /// Authorizer headers copied onto the upstream request when it allows.
    pub headers_to_upstream_on_allow: Vec<String>,
    /// Authorizer headers copied onto the answer when it denies.
    pub headers_to_downstream_on_deny: Vec<String>,
    /// Allow when the authorizer cannot be reached.
    pub fail_open: bool,
    /// Check timeout.
    pub timeout: Duration,
    /// Status when the authorizer cannot be reached (default 403).
    pub status_on_error: u16,
}

impl ExtAuthzHttp {
    /// The `envoyExtAuthzHttp` providers of a mesh config (YAML or JSON), e.g.
    /// `extensionProviders: [{name: ext-authz, envoyExtAuthzHttp: {service: ..., port: ...}}]`.
    #[cfg(feature = "config")]
    pub fn from_mesh_config(text: &str) -> Result<Vec<Self>, String> {
        let docs = mesh_config::load::parse_documents(text, &mesh_config::load::Limits::default())
            .map_err(|e| format!("line {}: {}", e.line, e.message))?;
        let mut out = Vec::new();
        for doc in docs {
            let v = doc.to_json();
            let Some(providers) = v.get("extensionProviders").and_then(|p| p.as_array()) else { continue };
            for p in providers {
                let Some(e) = p.get("envoyExtAuthzHttp") else { continue };
                let strings = |k: &str| -> Vec<String> {
                    e.get(k)
                        .and_then(|v| v.as_array())
                        .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
                        .unwrap_or_default()
                };
                let timeout = e
                    .get("timeout")
                    .and_then(|t| t.as_str())
                    .map(|t| t.parse::<mesh_core::Duration>().map(|d| d.get()))
                    .transpose()
                    .map_err(|e| e.to_string())?;
                out.push(Self {
                    name: p
                        .get("name")
                        .and_then(|n| n.as_str())
                        .ok_or("an extension provider needs a name")?
                        .to_string(),
                    service: e
                        .get("service")
                        .and_then(|s| s.as_str())
                        .ok_or("envoyExtAuthzHttp needs service")?
                        .to_string(),
                    port: e
                        .get("port")
                        .and_then(|p| p.as_u64())
                        .and_then(|p| u16::try_from(p).ok())
                        .ok_or("envoyExtAuthzHttp needs port")?,
                    path_prefix: e.get("pathPrefix").and_then(|s| s.as_str()).unwrap_or("").to_string(),
                    include_request_headers_in_check: strings("includeRequestHeadersInCheck"),
                    headers_to_upstream_on_allow: strings("headersToUpstreamOnAllow"),
                    headers_to_downstream_on_deny: strings("headersToDownstreamOnDeny"),
                    fail_open: e.get("failOpen").and_then(|f| f.as_bool()).unwrap_or(false),
                    timeout: timeout.unwrap_or(Duration::from_secs(600)),
                    status_on_error: e
                        .get("statusOnError")
                        .and_then(|s| s.as_str())
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(403),
                });
            }
        }
        Ok(out)
    }
}

/// The authorizer's verdict.
pub(crate) enum Verdict {
    Allow(HeaderMap),
    Deny(Response<Bytes>),
}

pub(crate) type Client =
    hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>;

pub(crate) async fn check(
    client: &Client,
    p: &ExtAuthzHttp,
    method: &http::Method,
    path: &str,
    headers: &HeaderMap,
) -> Verdict {
    let uri: Result<Uri, _> = format!("http://{}:{}{}{}", p.service, p.port, p.path_prefix, path).parse();
    let failed = |why: String| {
        tracing::warn!(provider = %p.name, error = %why, "external authorizer unreachable");
        if p.fail_open {
            Verdict::Allow(HeaderMap::new())
        } else {
            let mut r = Response::new(Bytes::new());
            *r.status_mut() = StatusCode::from_u16(p.status_on_error).unwrap_or(StatusCode::FORBIDDEN);
            Verdict::Deny(r)
        }
    };
    let Ok(uri) = uri else { return failed("invalid authorizer address".into()) };
    let mut req = Request::new(Empty::new());
    *req.method_mut() = method.clone();
    *req.uri_mut() = uri;
    for name in ["host", "authorization"]
        .iter()
        .map(|s| s.to_string())
        .chain(p.include_request_headers_in_check.iter().cloned())
    {
        if let Ok(n) = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()) {
            for v in headers.get_all(&n) {
                req.headers_mut().append(n.clone(), v.clone());
            }
        }
    }
    let sent = async {
        let rsp = client.request(req).await.map_err(|e| e.to_string())?;
        let (parts, body) = rsp.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok::<_, String>(Response::from_parts(parts, body))
    };
    match tokio::time::timeout(p.timeout, sent).await {
        Err(_) => failed("timeout".into()),
        Ok(Err(e)) => failed(e),
        Ok(Ok(rsp)) if rsp.status().is_success() => {
            let mut add = HeaderMap::new();
            for name in &p.headers_to_upstream_on_allow {
                if let Ok(n) = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()) {
                    for v in rsp.headers().get_all(&n) {
                        add.append(n.clone(), v.clone());
                    }
                }
            }
            Verdict::Allow(add)
        }
        Ok(Ok(rsp)) => {
            let mut out = Response::new(rsp.body().clone());
            *out.status_mut() = rsp.status();
            for name in &p.headers_to_downstream_on_deny {
                if let Ok(n) = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()) {
                    for v in rsp.headers().get_all(&n) {
                        out.headers_mut().append(n.clone(), v.clone());
                    }
                }
            }
            Verdict::Deny(out)
        }
    }
}
