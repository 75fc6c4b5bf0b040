//! The edge: every reply the mesh makes itself, one constructor per reply, and the one map
//! from a failure to its reply ([`LocalReply::for_error`]).
//!
//! A local reply is Envoy's: a status, a body text, the response flags (also sent in
//! `x-mesh-error`), and whether the connection closes after it. A gRPC caller gets the same
//! reply as Envoy's `sendLocalReply` gives it: trailers-only (HTTP 200,
//! `content-type: application/grpc`), `grpc-status` from the HTTP status as
//! [`Code::from_http`] maps it (or the code the reply names, e.g. a gRPC fault abort), and the
//! text as `grpc-message`.
//!
//! Layers build configured outcomes (a fault abort, an RBAC deny, a direct response) with a
//! constructor here and return them as responses; failures are typed leaf errors
//! ([`crate::error`]) that the composition answers with [`LocalReply::for_error`] once per
//! stack (mesh-proxy's `edge`).
//!
//! ```
//! use mesh_core::{BoxBody, error::RouteTimeout, reply::LocalReply};
//!
//! let rsp: http::Response<BoxBody> = LocalReply::for_error(&RouteTimeout).into_response(false);
//! assert_eq!(rsp.status(), 504);
//! assert_eq!(rsp.headers()["x-mesh-error"], "UT");
//!
//! let grpc: http::Response<BoxBody> = LocalReply::for_error(&RouteTimeout).into_response(true);
//! assert_eq!(grpc.status(), 200);
//! assert_eq!(grpc.headers()["grpc-status"], "14");
//! assert_eq!(grpc.headers()["grpc-message"], "upstream request timeout");
//! ```

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, header};

use crate::{
    body::{DownstreamError, LocalBody},
    cause_ref,
    error::{
        ConnectFailure, NoCluster, NoHealthyUpstream, NoWeightedBackend, Overflow, PerTryTimeout, RetriesExhausted,
        RouteNotFound, RouteTimeout,
    },
    ext::ResponseFlags,
    grpc::Code,
    is_caused_by,
};

/// The bytes a server writes when a request head did not arrive in time: there is no request
/// to answer through a service, so this reply is written to the socket as it is.
pub const REQUEST_TIMEOUT_HTTP1: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";

/// A reply the mesh makes itself. Build it with one of the constructors, send it with
/// [`LocalReply::into_response`].
#[derive(Clone, Debug)]
pub struct LocalReply {
    status: StatusCode,
    text: Bytes,
    flags: ResponseFlags,
    /// The gRPC code the reply names; `None`: [`Code::from_http`] of the status.
    grpc: Option<Code>,
    close: bool,
    headers: HeaderMap,
}

impl LocalReply {
    fn new(status: StatusCode, flags: ResponseFlags, text: &'static str) -> Self {
        Self {
            status,
            text: Bytes::from_static(text.as_bytes()),
            flags,
            grpc: None,
            close: false,
            headers: HeaderMap::new(),
        }
    }

    fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.insert(name, value);
        self
    }

    fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    // The routing and upstream failures, as Envoy answers them.

    /// 404 `NR`, no body: no virtual host or route matched.
    pub fn no_route() -> Self {
        Self::new(StatusCode::NOT_FOUND, ResponseFlags::NO_ROUTE, "")
    }

    /// 503 `NC`, no body: the route's cluster (a subset) does not exist.
    pub fn no_cluster() -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, ResponseFlags::NO_CLUSTER, "")
    }

    /// 503 `UH` "no healthy upstream": no endpoint, or all ejected.
    pub fn no_healthy_upstream() -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, ResponseFlags::NO_HEALTHY_UPSTREAM, "no healthy upstream")
    }

    /// 503 `UO` with `x-envoy-overloaded: true`: a connectionPool limit was reached.
    pub fn overflow() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ResponseFlags::UPSTREAM_OVERFLOW,
            "upstream connect error or disconnect/reset before headers. reset reason: overflow",
        )
        .header(HeaderName::from_static("x-envoy-overloaded"), HeaderValue::from_static("true"))
    }

    /// 504 `UT` "upstream request timeout": the route timeout, or the last per-try timeout.
    pub fn upstream_timeout() -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, ResponseFlags::UPSTREAM_REQUEST_TIMEOUT, "upstream request timeout")
    }

    /// 503 `UF`: the TCP or TLS connection to the upstream failed.
    pub fn connect_failure() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ResponseFlags::UPSTREAM_CONNECTION_FAILURE,
            "upstream connect error or disconnect/reset before headers. reset reason: connection failure",
        )
    }

    /// 503 `UC`: the upstream connection ended before a response (and any failure the mesh
    /// has no better name for).
    pub fn connection_termination() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ResponseFlags::UPSTREAM_CONNECTION_TERMINATION,
            "upstream connect error or disconnect/reset before headers. reset reason: connection termination",
        )
    }

    // The client's own faults: never charged upstream, and the connection closes after them.

    /// 413 "payload too large", closing: the request body is over the configured limit
    /// (announced by `content-length` or found while streaming).
    pub fn payload_too_large() -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, ResponseFlags::NONE, "payload too large").closing()
    }

    /// 400 `DPE`, closing: the request body is malformed (a bad chunk).
    pub fn malformed_body() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR,
            "bad request: malformed request body",
        )
        .closing()
    }

    /// 400 `DC`: the client went away while sending its body (nobody reads this reply; the
    /// access log and metrics do).
    pub fn downstream_disconnected() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION,
            "bad request: malformed request body",
        )
        .closing()
    }

    /// 400 `DPE` "bad request: {why}", closing: a request head the edge refuses (both
    /// `content-length` and `transfer-encoding`, two `host` headers, a case variant of a
    /// standard method).
    pub fn bad_request(why: &'static str) -> Self {
        let mut reply = Self::new(StatusCode::BAD_REQUEST, ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR, "").closing();
        reply.text = Bytes::from(format!("bad request: {why}"));
        reply
    }

    /// 400 "Bad Request": a path that does not normalize (`..` above the root, an encoded
    /// slash where policy forbids one), as Envoy's path normalization refuses it.
    pub fn bad_path() -> Self {
        Self::new(StatusCode::BAD_REQUEST, ResponseFlags::NONE, "Bad Request")
    }

    // Configured outcomes.

    /// Envoy's fault-filter abort "fault filter abort" (`FI`, and `DI` when it was delayed
    /// first): an HTTP status, or a gRPC code (which a gRPC caller gets as its `grpc-status`).
    pub fn fault_abort(status: Result<StatusCode, Code>, delayed: bool) -> Self {
        let flags = if delayed {
            ResponseFlags::FAULT_INJECTED | ResponseFlags::DELAY_INJECTED
        } else {
            ResponseFlags::FAULT_INJECTED
        };
        match status {
            Ok(status) => Self::new(status, flags, "fault filter abort"),
            Err(code) => {
                let mut reply = Self::new(StatusCode::OK, flags, "fault filter abort");
                reply.grpc = Some(code);
                reply
            }
        }
    }

    /// 403 "RBAC: access denied": an AuthorizationPolicy denied the request.
    pub fn rbac_denied() -> Self {
        Self::new(StatusCode::FORBIDDEN, ResponseFlags::NONE, "RBAC: access denied")
    }

    /// 401 with `www-authenticate: Bearer`: a RequestAuthentication rejected the token; the
    /// text says why ("Jwt is expired", ...).
    pub fn jwt_rejected(why: String) -> Self {
        let mut reply = Self::new(StatusCode::UNAUTHORIZED, ResponseFlags::NONE, "").header(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"mesh\", error=\"invalid_token\""),
        );
        reply.text = Bytes::from(why);
        reply
    }

    /// `UAEX`: the external authorizer denied the request with this status (a 2xx from the
    /// provider's denial becomes 403), headers and body.
    pub fn ext_authz_denied(status: StatusCode, headers: HeaderMap, body: Bytes) -> Self {
        let status = if status.is_success() { StatusCode::FORBIDDEN } else { status };
        Self {
            status,
            text: body,
            flags: ResponseFlags::UNAUTHORIZED_EXTERNAL_SERVICE,
            grpc: None,
            close: false,
            headers,
        }
    }

    /// A route's `directResponse` (or a Gateway API redirect): the configured status, body and
    /// headers, as they are.
    pub fn direct(status: StatusCode, body: Bytes, headers: HeaderMap) -> Self {
        Self { status, text: body, flags: ResponseFlags::NONE, grpc: None, close: false, headers }
    }

    /// A redirect to `location` with `status` (301 for a Gateway's `httpsRedirect`).
    pub fn redirect(status: StatusCode, location: HeaderValue) -> Self {
        Self::new(status, ResponseFlags::NONE, "").header(header::LOCATION, location)
    }

    /// The reply for a failure: the first leaf error in its chain that the mesh names, with
    /// `URX` added when retries ran out. A client's own body fault ([`DownstreamError`]) wins.
    pub fn for_error(error: &(dyn std::error::Error + 'static)) -> Self {
        match cause_ref::<DownstreamError>(error) {
            Some(DownstreamError::TooLarge { .. }) => return Self::payload_too_large(),
            Some(DownstreamError::Protocol) => return Self::malformed_body(),
            Some(DownstreamError::Disconnected) => return Self::downstream_disconnected(),
            None => {}
        }
        let reply = if is_caused_by::<RouteNotFound>(error) {
            Self::no_route()
        } else if is_caused_by::<NoCluster>(error) || is_caused_by::<NoWeightedBackend>(error) {
            Self::no_cluster()
        } else if is_caused_by::<NoHealthyUpstream>(error) {
            Self::no_healthy_upstream()
        } else if is_caused_by::<Overflow>(error) {
            Self::overflow()
        } else if is_caused_by::<RouteTimeout>(error) || is_caused_by::<PerTryTimeout>(error) {
            Self::upstream_timeout()
        } else if is_caused_by::<ConnectFailure>(error) {
            Self::connect_failure()
        } else {
            Self::connection_termination()
        };
        if is_caused_by::<RetriesExhausted>(error) {
            reply.with_flags(ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED)
        } else {
            reply
        }
    }

    /// The same reply, with more flags.
    #[must_use]
    pub fn with_flags(mut self, flags: ResponseFlags) -> Self {
        self.flags = self.flags | flags;
        self
    }

    /// The HTTP status (a gRPC caller gets 200 and the status as its `grpc-status`).
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The response flags.
    pub fn flags(&self) -> ResponseFlags {
        self.flags
    }

    /// The body text (a gRPC caller's `grpc-message`).
    pub fn text(&self) -> &[u8] {
        &self.text
    }

    /// Whether the connection closes after this reply.
    pub fn closes(&self) -> bool {
        self.close
    }

    /// The gRPC code a gRPC caller gets.
    pub fn grpc_code(&self) -> Code {
        self.grpc.unwrap_or_else(|| Code::from_http(self.status))
    }

    /// The response, for a gRPC caller (`grpc`) or any other. A reply that names its gRPC
    /// code (a `grpcStatus` fault abort) is trailers-only whoever asks: the config said the
    /// callee speaks gRPC, and a plain `200` would read as success.
    pub fn into_response<B: LocalBody>(self, grpc: bool) -> Response<B> {
        let code = self.grpc_code();
        let grpc = grpc || self.grpc.is_some();
        let Self { status, text, flags, grpc: _, close, headers } = self;
        tracing::debug!(%flags, %status, "local reply");
        let mut rsp = if grpc {
            let mut rsp = Response::new(B::from_bytes(Bytes::new()));
            let h = rsp.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
            h.insert("grpc-status", HeaderValue::from(code.as_u16()));
            if !text.is_empty() {
                h.insert("grpc-message", crate::grpc::encode_message(&text));
            }
            rsp
        } else {
            let mut rsp = Response::new(B::from_bytes(text.clone()));
            *rsp.status_mut() = status;
            rsp
        };
        let h = rsp.headers_mut();
        // Every value of every header the reply names (an authorizer's repeated
        // `set-cookie` too); a gRPC caller keeps `application/grpc`.
        let mut last: Option<HeaderName> = None;
        for (name, value) in headers {
            if let Some(name) = name {
                last = Some(name);
            }
            if let Some(name) = &last
                && !(grpc && name == header::CONTENT_TYPE)
            {
                h.append(name.clone(), value);
            }
        }
        if !grpc && !text.is_empty() && !h.contains_key(header::CONTENT_TYPE) {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        }
        if !flags.is_empty() {
            let flag_text = HeaderValue::from_str(&flags.to_string()).unwrap_or(HeaderValue::from_static("-"));
            h.insert("x-mesh-error", flag_text);
        }
        if close {
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        ResponseFlags::add_to(rsp.extensions_mut(), flags);
        rsp
    }
}

impl ResponseFlags {
    /// The flags a failure is reported with (the access log's `%RESPONSE_FLAGS%`): those of
    /// its [`LocalReply::for_error`].
    pub fn of(error: &(dyn std::error::Error + 'static)) -> Self {
        LocalReply::for_error(error).flags
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BoxBody;
    use http_body_util::BodyExt;

    async fn text(rsp: Response<BoxBody>) -> String {
        String::from_utf8(rsp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    /// Each failure's reply, as Envoy writes it: status, flags, body.
    #[tokio::test]
    async fn failures_answer_as_envoy() {
        let cases: Vec<(crate::Error, u16, &str, &str)> = vec![
            (Box::new(RouteNotFound { authority: "x".into() }), 404, "NR", ""),
            (Box::new(NoCluster { cluster: "c".into() }), 503, "NC", ""),
            (Box::new(NoWeightedBackend), 503, "NC", ""),
            (Box::new(NoHealthyUpstream { cluster: "c".into() }), 503, "UH", "no healthy upstream"),
            (
                Box::new(Overflow { cluster: "c".into() }),
                503,
                "UO",
                "upstream connect error or disconnect/reset before headers. reset reason: overflow",
            ),
            (Box::new(RouteTimeout), 504, "UT", "upstream request timeout"),
            (Box::new(PerTryTimeout), 504, "UT", "upstream request timeout"),
            (
                Box::new(ConnectFailure { source: "refused".into() }),
                503,
                "UF",
                "upstream connect error or disconnect/reset before headers. reset reason: connection failure",
            ),
            (
                Box::new(RetriesExhausted { source: Box::new(ConnectFailure { source: "refused".into() }) }),
                503,
                "UF,URX",
                "upstream connect error or disconnect/reset before headers. reset reason: connection failure",
            ),
            (
                "anything else".into(),
                503,
                "UC",
                "upstream connect error or disconnect/reset before headers. reset reason: connection termination",
            ),
            (Box::new(DownstreamError::Protocol), 400, "DPE", "bad request: malformed request body"),
            (
                Box::new(RetriesExhausted { source: Box::new(DownstreamError::TooLarge { limit: 1 }) }),
                413,
                "",
                "payload too large",
            ),
        ];
        for (error, status, flags, body) in cases {
            let reply = LocalReply::for_error(&*error);
            assert_eq!(reply.status().as_u16(), status, "{error}");
            let rsp: Response<BoxBody> = reply.into_response(false);
            assert_eq!(rsp.status().as_u16(), status);
            assert_eq!(rsp.headers().get("x-mesh-error").map(|v| v.to_str().unwrap()).unwrap_or(""), flags, "{error}");
            assert_eq!(
                rsp.extensions().get::<ResponseFlags>().map(ToString::to_string).unwrap_or("-".into()),
                if flags.is_empty() { "-" } else { flags }
            );
            assert_eq!(ResponseFlags::of(&*error).to_string(), if flags.is_empty() { "-" } else { flags });
            assert_eq!(rsp.headers().contains_key(header::CONTENT_TYPE), !body.is_empty());
            assert_eq!(text(rsp).await, body, "{error}");
        }
        let rsp: Response<BoxBody> = LocalReply::overflow().into_response(false);
        assert_eq!(rsp.headers()["x-envoy-overloaded"], "true");
    }

    /// A gRPC caller gets every reply trailers-only, with the code Envoy maps the status to.
    #[tokio::test]
    async fn grpc_callers_get_trailers_only() {
        let cases = [
            (LocalReply::no_route(), Code::Unimplemented, None),
            (LocalReply::no_healthy_upstream(), Code::Unavailable, Some("no healthy upstream")),
            (LocalReply::upstream_timeout(), Code::Unavailable, Some("upstream request timeout")),
            (LocalReply::payload_too_large(), Code::ResourceExhausted, Some("payload too large")),
            (LocalReply::malformed_body(), Code::Internal, Some("bad request: malformed request body")),
            (LocalReply::rbac_denied(), Code::PermissionDenied, Some("RBAC: access denied")),
            (LocalReply::jwt_rejected("Jwt is expired".into()), Code::Unauthenticated, Some("Jwt is expired")),
            (
                LocalReply::fault_abort(Ok(StatusCode::SERVICE_UNAVAILABLE), false),
                Code::Unavailable,
                Some("fault filter abort"),
            ),
            (LocalReply::fault_abort(Err(Code::NotFound), true), Code::NotFound, Some("fault filter abort")),
        ];
        for (reply, code, message) in cases {
            let rsp: Response<BoxBody> = reply.into_response(true);
            assert_eq!(rsp.status(), StatusCode::OK);
            assert_eq!(rsp.headers()[header::CONTENT_TYPE], "application/grpc");
            assert_eq!(rsp.headers()["grpc-status"], code.as_u16().to_string().as_str());
            assert_eq!(rsp.headers().get("grpc-message").map(|v| v.to_str().unwrap()), message);
            assert_eq!(text(rsp).await, "");
        }
    }

    #[tokio::test]
    async fn the_clients_faults_close_the_connection() {
        for reply in
            [LocalReply::payload_too_large(), LocalReply::malformed_body(), LocalReply::bad_request("two host headers")]
        {
            assert!(reply.closes());
            let rsp: Response<BoxBody> = reply.into_response(false);
            assert_eq!(rsp.headers()[header::CONNECTION], "close");
        }
        let rsp: Response<BoxBody> = LocalReply::bad_request("more than one Host header").into_response(false);
        assert_eq!(rsp.headers()["x-mesh-error"], "DPE");
        assert_eq!(text(rsp).await, "bad request: more than one Host header");
        let rsp: Response<BoxBody> = LocalReply::no_route().into_response(false);
        assert!(!rsp.headers().contains_key(header::CONNECTION));
    }

    #[tokio::test]
    async fn configured_outcomes() {
        let rsp: Response<BoxBody> = LocalReply::fault_abort(Err(Code::Unavailable), false).into_response(false);
        assert_eq!(
            (rsp.status(), rsp.headers()["grpc-status"].to_str().unwrap()),
            (StatusCode::OK, "14"),
            "a gRPC abort is gRPC-shaped"
        );

        let rsp: Response<BoxBody> =
            LocalReply::fault_abort(Ok(StatusCode::SERVICE_UNAVAILABLE), true).into_response(false);
        assert_eq!(rsp.status(), 503);
        assert_eq!(rsp.extensions().get::<ResponseFlags>().unwrap().to_string(), "DI,FI");
        assert_eq!(text(rsp).await, "fault filter abort");

        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert("x-ext-authz-check-result", HeaderValue::from_static("denied"));
        let rsp: Response<BoxBody> =
            LocalReply::ext_authz_denied(StatusCode::OK, headers, Bytes::from_static(b"{}")).into_response(false);
        assert_eq!(rsp.status(), 403, "a provider's 2xx denial is 403");
        assert_eq!(rsp.headers()[header::CONTENT_TYPE], "application/json", "the provider's own content type");
        assert_eq!(rsp.headers()["x-mesh-error"], "UAEX");
        assert_eq!(text(rsp).await, "{}");

        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
        headers.append(header::SET_COOKIE, HeaderValue::from_static("a=1"));
        headers.append(header::SET_COOKIE, HeaderValue::from_static("b=2"));
        let denied = LocalReply::ext_authz_denied(StatusCode::UNAUTHORIZED, headers, Bytes::from_static(b"no"));
        let rsp: Response<BoxBody> = denied.clone().into_response(false);
        assert_eq!(rsp.headers().get_all(header::SET_COOKIE).iter().count(), 2, "every value kept");
        let rsp: Response<BoxBody> = denied.into_response(true);
        assert_eq!(rsp.headers()[header::CONTENT_TYPE], "application/grpc", "a gRPC caller keeps its content type");
        assert_eq!(rsp.headers()["grpc-status"], "16");
        assert_eq!(rsp.headers().get_all(header::SET_COOKIE).iter().count(), 2);

        let rsp: Response<BoxBody> =
            LocalReply::redirect(StatusCode::MOVED_PERMANENTLY, HeaderValue::from_static("https://a/b"))
                .into_response(false);
        assert_eq!(rsp.status(), 301);
        assert_eq!(rsp.headers()[header::LOCATION], "https://a/b");
        assert!(!rsp.headers().contains_key("x-mesh-error"));

        let rsp: Response<BoxBody> = LocalReply::jwt_rejected("Jwt is expired".into()).into_response(false);
        assert_eq!(rsp.status(), 401);
        assert!(rsp.headers()[header::WWW_AUTHENTICATE].to_str().unwrap().starts_with("Bearer"));
    }
}
