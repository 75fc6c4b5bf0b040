//! CUSTOM authorization: the external authorizer (Istio's `envoyExtAuthzHttp` providers),
//! its client and its verdict.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use mesh_config::api::mesh::MeshConfig;

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

/// Why a mesh config's provider cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidProvider {
    /// `extensionProviders[i]` without a name.
    #[error("extensionProviders[{0}]: an extension provider needs a name")]
    Unnamed(usize),
    /// No `service`.
    #[error("extensionProviders[{0}] ({1}): envoyExtAuthzHttp needs service")]
    NoService(usize, String),
    /// `port` missing or not in 1..=65535.
    #[error("extensionProviders[{0}] ({1}): envoyExtAuthzHttp needs a port within 1..=65535, got {2}")]
    Port(usize, String, u32),
    /// `statusOnError` not an HTTP status.
    #[error("extensionProviders[{0}] ({1}): statusOnError {2:?} is not an HTTP status")]
    StatusOnError(usize, String, String),
}

impl ExtAuthzHttp {
    /// The `envoyExtAuthzHttp` providers of a mesh config, e.g.
    /// `extensionProviders: [{name: ext-authz, envoyExtAuthzHttp: {service: ..., port: ...}}]`.
    pub fn from_mesh_config(mesh: &MeshConfig) -> Result<Vec<Self>, InvalidProvider> {
        let mut out = Vec::new();
        for (i, p) in mesh.extension_providers.iter().enumerate() {
            let Some(e) = &p.envoy_ext_authz_http else { continue };
            if p.name.is_empty() {
                return Err(InvalidProvider::Unnamed(i));
            }
            let name = || p.name.clone();
            if e.service.is_empty() {
                return Err(InvalidProvider::NoService(i, name()));
            }
            let port = u16::try_from(e.port).ok().filter(|p| *p > 0).ok_or(InvalidProvider::Port(i, name(), e.port))?;
            let status_on_error = match e.status_on_error.as_deref() {
                None => 403,
                Some(s) => s
                    .parse::<u16>()
                    .ok()
                    .filter(|s| StatusCode::from_u16(*s).is_ok())
                    .ok_or_else(|| InvalidProvider::StatusOnError(i, name(), s.to_string()))?,
            };
            let mut include = e.include_request_headers_in_check.clone();
            include.extend(e.include_headers_in_check.iter().cloned());
            out.push(Self {
                name: name(),
                service: e.service.clone(),
                port,
                path_prefix: e.path_prefix.clone().unwrap_or_default(),
                include_request_headers_in_check: include,
                headers_to_upstream_on_allow: e.headers_to_upstream_on_allow.clone(),
                headers_to_downstream_on_deny: e.headers_to_downstream_on_deny.clone(),
                fail_open: e.fail_open,
                timeout: e.timeout.map_or(Duration::from_secs(600), |d| d.get()),
                status_on_error,
            });
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

#[cfg(all(test, feature = "config"))]
mod tests {
    use mesh_config::load::{Limits, mesh_config};

    use super::*;

    fn providers(text: &str) -> Result<Vec<ExtAuthzHttp>, InvalidProvider> {
        ExtAuthzHttp::from_mesh_config(&mesh_config("mesh.yaml", text, &Limits::default()).unwrap())
    }

    #[test]
    fn http_providers_come_from_the_typed_mesh_config() {
        let p = providers(
            "extensionProviders:\n- name: a\n  envoyExtAuthzHttp:\n    service: authz\n    port: 9000\n    statusOnError: \"503\"\n    includeHeadersInCheck: [x-old]\n    includeRequestHeadersInCheck: [x-new]\n- name: otel\n  opentelemetry: {service: otel, port: 4317}\n",
        )
        .unwrap();
        assert_eq!(p.len(), 1, "only envoyExtAuthzHttp providers");
        assert_eq!((p[0].name.as_str(), p[0].service.as_str(), p[0].port), ("a", "authz", 9000));
        assert_eq!((p[0].status_on_error, p[0].timeout), (503, Duration::from_secs(600)));
        assert_eq!(p[0].include_request_headers_in_check, ["x-new", "x-old"]);
        assert_eq!(
            providers("extensionProviders:\n- name: a\n  envoyExtAuthzHttp: {service: authz, port: 70000}\n"),
            Err(InvalidProvider::Port(0, "a".into(), 70000))
        );
        assert_eq!(
            providers(
                "extensionProviders:\n- name: a\n  envoyExtAuthzHttp: {service: authz, port: 1, statusOnError: x}\n"
            ),
            Err(InvalidProvider::StatusOnError(0, "a".into(), "x".into()))
        );
        assert_eq!(
            providers("extensionProviders:\n- envoyExtAuthzHttp: {service: authz, port: 1}\n"),
            Err(InvalidProvider::Unnamed(0))
        );
    }
}
