//! What several layers read from or do to a request, written once.

use std::borrow::Cow;

use http::{
    HeaderValue, Request, Uri, header,
    uri::{Authority, PathAndQuery, Scheme},
};

/// The authority a request is for: its `Host` header, else the request target's authority
/// (HTTP/2's `:authority`, or an absolute-form target without a `Host`).
///
/// `Host` first because between sidecars the target names the endpoint's address (the
/// balancer sends to `https://ADDR/...`; over HTTP/2 that becomes `:authority`) while `Host`
/// keeps the name the caller used. For an HTTP/1.x request in absolute form, a proxy must
/// ignore `Host` (RFC 9112 §3.2.2): mesh-proxy's edge replaces it with the target's
/// authority, so every layer (routing, authorization, telemetry, redirects) reads one name.
pub fn authority<B>(req: &Request<B>) -> Option<&str> {
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(Authority::as_str))
}

/// [`authority`] as a header value (a cheap copy of the `Host` header when that is it).
pub fn authority_value<B>(req: &Request<B>) -> Option<HeaderValue> {
    req.headers()
        .get(header::HOST)
        .cloned()
        .or_else(|| req.uri().authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()))
}

/// Resolve a host as written in a rule of namespace `namespace` to the name the registry
/// uses: a name without dots is a Kubernetes service of that namespace
/// (`reviews` in `default` is `reviews.default.svc.cluster.local`); anything else
/// (FQDNs, `*`, `*.example.com`) is taken as written, lowercased.
pub fn resolve_host(host: &str, namespace: &str) -> String {
    let host = host.to_ascii_lowercase();
    if host.contains('.') || host == "*" {
        host
    } else {
        format!("{host}.{namespace}.svc.{}", crate::DEFAULT_DOMAIN_SUFFIX)
    }
}

/// Whether a rule host (possibly a wildcard such as `*.example.com` or `*`) covers `host`.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some("") => true,
        Some(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
        None => pattern == host,
    }
}

/// Whether a request is gRPC: its content type is `application/grpc` or a subtype of it
/// (`application/grpc+proto`).
pub fn is_grpc<B>(req: &Request<B>) -> bool {
    req.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Send the request to `authority` over `scheme`: the target in absolute form, the path `/`
/// when it had none, and the authority the caller named kept as its `Host` (HTTP/2
/// callers name it in the URI only), so the next hop sees the request as it was addressed.
pub fn to_absolute<B>(req: &mut Request<B>, scheme: Scheme, authority: Option<Authority>) {
    if !req.headers().contains_key(header::HOST)
        && let Some(a) = req.uri().authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        req.headers_mut().insert(header::HOST, a);
    }
    let mut parts = std::mem::take(req.uri_mut()).into_parts();
    parts.scheme = Some(scheme);
    parts.authority = authority;
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(PathAndQuery::from_static("/"));
    }
    *req.uri_mut() = Uri::from_parts(parts).unwrap_or_default();
}

/// The first value of a query parameter, percent-decoded (`?key` and `?key=` give `""`).
pub fn first_query_value<'q>(query: Option<&'q str>, name: &str) -> Option<Cow<'q, str>> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == name).then(|| percent_decode(v))
    })
}

/// `%XX` escapes decoded (invalid escapes kept as they are; invalid UTF-8 replaced).
pub fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.contains('%') {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uri: &str, host: Option<&str>) -> Request<()> {
        let mut b = Request::get(uri);
        if let Some(h) = host {
            b = b.header(header::HOST, h);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn the_host_header_names_the_authority_before_the_target() {
        assert_eq!(authority(&req("/x", Some("reviews:9080"))), Some("reviews:9080"));
        // Between sidecars: the target is the endpoint, Host the name.
        assert_eq!(authority(&req("https://10.0.0.1:15006/x", Some("reviews:9080"))), Some("reviews:9080"));
        assert_eq!(authority(&req("http://ratings/x", None)), Some("ratings"));
        assert_eq!(authority(&req("/x", None)), None);
        assert_eq!(authority_value(&req("/x", Some("a"))).unwrap(), "a");
        assert_eq!(authority_value(&req("http://b/x", None)).unwrap(), "b");
    }

    #[test]
    fn grpc_by_content_type() {
        let grpc = |ct: &str| is_grpc(&Request::post("/").header(header::CONTENT_TYPE, ct).body(()).unwrap());
        assert!(grpc("application/grpc"));
        assert!(grpc("application/grpc+proto"));
        assert!(!grpc("application/json"));
        assert!(!is_grpc(&req("/", None)));
    }

    #[test]
    fn absolute_form_keeps_the_named_authority_as_host() {
        let upstream = Authority::from_static("10.0.0.1:15006");
        // HTTP/2 style: the authority only in the URI.
        let mut r = req("http://reviews:9080", None);
        to_absolute(&mut r, Scheme::HTTPS, Some(upstream.clone()));
        assert_eq!(r.uri(), "https://10.0.0.1:15006/");
        assert_eq!(r.headers()[header::HOST], "reviews:9080");
        // Origin form with a Host: kept as it is.
        let mut r = req("/a?b=c", Some("reviews"));
        to_absolute(&mut r, Scheme::HTTP, Some(upstream));
        assert_eq!(r.uri(), "http://10.0.0.1:15006/a?b=c");
        assert_eq!(r.headers()[header::HOST], "reviews");
    }

    #[test]
    fn query_values() {
        assert_eq!(first_query_value(Some("a=1&b=2&a=3"), "a").as_deref(), Some("1"));
        assert_eq!(first_query_value(Some("flag&x=1"), "flag").as_deref(), Some(""));
        assert_eq!(first_query_value(Some("flag="), "flag").as_deref(), Some(""));
        assert_eq!(first_query_value(Some("n=a%20b"), "n").as_deref(), Some("a b"));
        assert_eq!(first_query_value(Some("n=%zz%4"), "n").as_deref(), Some("%zz%4"));
        assert_eq!(first_query_value(None, "n"), None);
        assert_eq!(first_query_value(Some("m=1"), "n"), None);
    }
}
