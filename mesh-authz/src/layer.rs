//! The server-side layers: [`AuthnLayer`] (RequestAuthentication, 401 on a bad token) and
//! [`AuthzLayer`] (CUSTOM, DENY, ALLOW; 403 `RBAC: access denied`).

use std::{
    collections::HashMap,
    future::Future,
    net::IpAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::SystemTime,
};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderMap, Request, Response, Uri};
use mesh_core::{
    BoxError,
    body::LocalBody,
    ext::{ClientAddr, LocalAddr, PeerIdentity},
    reply::LocalReply,
    request::is_grpc,
};
use pin_project_lite::pin_project;
use tower::ServiceExt;
use tower_layer::Layer;
use tower_service::Service;

pub use crate::ext_authz::ExtAuthzHttp;
use crate::{
    ext_authz::{Client, Verdict, check},
    jwt::JwtPolicy,
    policy::{AuthzPolicy, AuthzRequest, Decision, RequestAuth, path::normalize},
};

// === RequestAuthentication ===

/// Validates JWTs with the workload's RequestAuthentication; a bad token is 401.
#[derive(Clone, Debug)]
pub struct AuthnLayer {
    policy: Arc<ArcSwap<JwtPolicy>>,
}

impl AuthnLayer {
    /// With the given (swappable) policy.
    pub fn new(policy: Arc<ArcSwap<JwtPolicy>>) -> Self {
        Self { policy }
    }
}

impl<S> Layer<S> for AuthnLayer {
    type Service = Authn<S>;
    fn layer(&self, inner: S) -> Authn<S> {
        Authn { inner, policy: self.policy.clone() }
    }
}

/// See [`AuthnLayer`].
#[derive(Clone, Debug)]
pub struct Authn<S> {
    inner: S,
    policy: Arc<ArcSwap<JwtPolicy>>,
}

impl<S, B, ResB> Service<Request<B>> for Authn<S>
where
    S: Service<Request<B>, Response = Response<ResB>>,
    ResB: LocalBody,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = LocalOr<S::Future, ResB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let policy = self.policy.load();
        if policy.is_empty() {
            return LocalOr::inner(self.inner.call(req));
        }
        let query = req.uri().query().map(str::to_string);
        match policy.authenticate(req.headers_mut(), query.as_deref(), SystemTime::now()) {
            Ok(Some(auth)) => {
                req.extensions_mut().insert(auth);
                LocalOr::inner(self.inner.call(req))
            }
            Ok(None) => LocalOr::inner(self.inner.call(req)),
            Err(e) => {
                tracing::debug!(error = %e, "request authentication failed");
                LocalOr::local(LocalReply::jwt_rejected(e.to_string()).into_response(is_grpc(&req)))
            }
        }
    }
}

pin_project! {
    /// A local answer or the inner future.
    pub struct LocalOr<F, B> {
        #[pin]
        inner: Option<F>,
        local: Option<Response<B>>,
    }
}

impl<F, B> LocalOr<F, B> {
    fn inner(f: F) -> Self {
        Self { inner: Some(f), local: None }
    }
    fn local(r: Response<B>) -> Self {
        Self { inner: None, local: Some(r) }
    }
}

impl<F, B, E> Future for LocalOr<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.inner.as_pin_mut() {
            Some(f) => f.poll(cx),
            None => Poll::Ready(Ok(this.local.take().expect("polled after ready"))),
        }
    }
}

// === AuthorizationPolicy ===

/// Counters of decisions, for telemetry.
#[derive(Debug, Default)]
pub struct AuthzStats {
    /// Requests allowed.
    pub allowed: AtomicU64,
    /// Requests denied by DENY or ALLOW policies.
    pub denied: AtomicU64,
    /// Requests denied by an external authorizer.
    pub custom_denied: AtomicU64,
    /// Requests refused for an invalid path (400).
    pub bad_path: AtomicU64,
    /// Dry-run policy matches (not enforced).
    pub dry_run: AtomicU64,
}

struct State {
    on_decision: Option<mesh_core::ext::Hook>,
    policy: Arc<ArcSwap<AuthzPolicy>>,
    providers: HashMap<String, ExtAuthzHttp>,
    client: Client,
    stats: AuthzStats,
    port: u16,
    trusted_proxies: usize,
}

/// Authorizes requests with the workload's AuthorizationPolicies: 403 `RBAC: access denied`
/// when they say no, the normalised path to the inner service when they say yes.
///
/// Alone, with a fixed policy: typed ([`AuthzPolicy::from_policies`], the crate's front
/// page) or YAML (`AuthzPolicy::from_yaml`, feature `config`).
#[derive(Clone)]
pub struct AuthzLayer {
    state: Arc<State>,
}

impl std::fmt::Debug for AuthzLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthzLayer").field("port", &self.state.port).finish_non_exhaustive()
    }
}

impl AuthzLayer {
    /// Authorize with a fixed `policy` for the workload port `port`.
    pub fn from_policy(policy: AuthzPolicy, port: u16) -> Self {
        Self::new(Arc::new(ArcSwap::from_pointee(policy)), port)
    }

    /// Authorize with `policy` (swapped on reloads) for the workload port `port` (used
    /// when the request does not carry a [`LocalAddr`]).
    pub fn new(policy: Arc<ArcSwap<AuthzPolicy>>, port: u16) -> Self {
        Self::with_providers(policy, port, Vec::new(), 0)
    }

    /// With CUSTOM providers, and the number of trusted proxies in front (`remote.ip` comes
    /// from `X-Forwarded-For` only when there are some).
    pub fn with_providers(
        policy: Arc<ArcSwap<AuthzPolicy>>,
        port: u16,
        providers: Vec<ExtAuthzHttp>,
        trusted_proxies: usize,
    ) -> Self {
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
        Self {
            state: Arc::new(State {
                on_decision: None,
                policy,
                providers: providers.into_iter().map(|p| (p.name.clone(), p)).collect(),
                client,
                stats: AuthzStats::default(),
                port,
                trusted_proxies,
            }),
        }
    }

    /// Called with `allow`, `deny` or `custom_deny` for each decision (telemetry counts
    /// them). A builder step: the layer it returns has its own, fresh counters.
    #[must_use]
    pub fn with_on_decision(self, hook: mesh_core::ext::Hook) -> Self {
        let s = &self.state;
        Self {
            state: Arc::new(State {
                on_decision: Some(hook),
                policy: s.policy.clone(),
                providers: s.providers.clone(),
                client: s.client.clone(),
                stats: AuthzStats::default(),
                port: s.port,
                trusted_proxies: s.trusted_proxies,
            }),
        }
    }

    /// The decision counters.
    pub fn stats(&self) -> &AuthzStats {
        &self.state.stats
    }
}

impl<S> Layer<S> for AuthzLayer {
    type Service = Authz<S>;
    fn layer(&self, inner: S) -> Authz<S> {
        Authz { inner, state: self.state.clone() }
    }
}

/// See [`AuthzLayer`].
#[derive(Clone)]
pub struct Authz<S> {
    inner: S,
    state: Arc<State>,
}

impl<S: std::fmt::Debug> std::fmt::Debug for Authz<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authz").field("inner", &self.inner).finish_non_exhaustive()
    }
}

fn remote_ip(headers: &HeaderMap, trusted: usize) -> Option<IpAddr> {
    if trusted == 0 {
        return None;
    }
    let all: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    all.len().checked_sub(trusted).and_then(|i| all.get(i)).and_then(|ip| ip.parse().ok())
}

impl State {
    /// Count a denial by the external authorizer (or by a provider that does not exist).
    fn custom_denied(&self) {
        self.stats.custom_denied.fetch_add(1, Ordering::Relaxed);
        if let Some(h) = &self.on_decision {
            h.call(mesh_core::ext::Event::AuthzCustomDeny);
        }
    }

    fn record(&self, d: &Decision, authority: &str, path: &str) {
        let counter = if d.allowed { &self.stats.allowed } else { &self.stats.denied };
        counter.fetch_add(1, Ordering::Relaxed);
        if let Some(h) = &self.on_decision {
            h.call(if d.allowed { mesh_core::ext::Event::AuthzAllow } else { mesh_core::ext::Event::AuthzDeny });
        }
        if !d.dry_run.is_empty() {
            self.stats.dry_run.fetch_add(1, Ordering::Relaxed);
            tracing::info!(policies = ?d.dry_run, "dry-run policy matched (not enforced)");
        }
        tracing::debug!(allowed = d.allowed, action = ?d.action, policy = ?d.policy, audit = ?d.audit, %authority, %path, "authorization decision");
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, ResB> Service<Request<B>> for Authz<S>
where
    S: Service<Request<B>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: Send + 'static,
    ResB: LocalBody + Send + 'static,
{
    type Response = Response<ResB>;
    type Error = BoxError;
    type Future = AuthzFuture<S::Future, ResB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let path = match normalize(req.uri().path()) {
            Ok(p) => p,
            Err(_) => {
                self.state.stats.bad_path.fetch_add(1, Ordering::Relaxed);
                return AuthzFuture::local(LocalReply::bad_path().into_response(is_grpc(&req)));
            }
        };
        // The backend receives the normalised path.
        if path != req.uri().path() {
            let pq = match req.uri().query() {
                Some(q) => format!("{path}?{q}"),
                None => path.clone(),
            };
            let mut parts = std::mem::take(req.uri_mut()).into_parts();
            parts.path_and_query = pq.parse().ok();
            *req.uri_mut() = Uri::from_parts(parts).unwrap_or_default();
        }
        let state = &self.state;
        let policy = state.policy.load();
        let host = mesh_core::request::authority(&req).unwrap_or("").to_string();
        let ext = req.extensions();
        let peer = ext.get::<PeerIdentity>().map(|p| &p.0);
        let auth: Option<&RequestAuth> = ext.get::<RequestAuth>();
        let attrs = AuthzRequest {
            peer,
            source_ip: ext.get::<ClientAddr>().map(|a| a.0.ip()),
            remote_ip: remote_ip(req.headers(), state.trusted_proxies),
            request_auth: auth,
            method: req.method().as_str(),
            path: &path,
            host: &host,
            port: ext.get::<LocalAddr>().map_or(state.port, |a| a.0.port()),
            headers: req.headers(),
            destination_ip: ext.get::<LocalAddr>().map(|a| a.0.ip()),
            sni: None,
        };
        let evaluation = policy.evaluate(&attrs);
        let decision = evaluation.decision;
        let Some(custom) = evaluation.custom else {
            state.record(&decision, &host, &path);
            return if decision.allowed {
                AuthzFuture::inner(self.inner.call(req))
            } else {
                AuthzFuture::local(LocalReply::rbac_denied().into_response(is_grpc(&req)))
            };
        };
        // Slow path: ask the external authorizer first (boxed).
        let state = self.state.clone();
        let svc = self.inner.clone();
        let grpc = is_grpc(&req);
        AuthzFuture::boxed(Box::pin(async move {
            let Some(provider) = state.providers.get(&custom.provider) else {
                tracing::warn!(provider = %custom.provider, policy = %custom.policy, "unknown extension provider: denied");
                state.custom_denied();
                return Ok(deny_custom(Response::new(Bytes::new()), grpc));
            };
            match check(
                &state.client,
                provider,
                req.method(),
                req.uri().path_and_query().map_or("/", |p| p.as_str()),
                req.headers(),
            )
            .await
            {
                Verdict::Deny(rsp) => {
                    state.custom_denied();
                    Ok(deny_custom(rsp, grpc))
                }
                Verdict::Allow(add) => {
                    for (k, v) in &add {
                        req.headers_mut().insert(k.clone(), v.clone());
                    }
                    state.record(&decision, &host, &path);
                    if decision.allowed {
                        svc.oneshot(req).await.map_err(Into::into)
                    } else {
                        Ok(LocalReply::rbac_denied().into_response(grpc))
                    }
                }
            }
        }))
    }
}

/// The external authorizer's denial (its status, headers and body) as the caller gets it.
fn deny_custom<B: LocalBody>(rsp: Response<Bytes>, grpc: bool) -> Response<B> {
    let (parts, body) = rsp.into_parts();
    LocalReply::ext_authz_denied(parts.status, parts.headers, body).into_response(grpc)
}

pin_project! {
    /// Response future of [`Authz`].
    pub struct AuthzFuture<F, B> {
        #[pin]
        inner: Option<F>,
        local: Option<Response<B>>,
        slow: Option<BoxFuture<Result<Response<B>, BoxError>>>,
    }
}

impl<F, B> AuthzFuture<F, B> {
    fn inner(f: F) -> Self {
        Self { inner: Some(f), local: None, slow: None }
    }
    fn local(r: Response<B>) -> Self {
        Self { inner: None, local: Some(r), slow: None }
    }
    fn boxed(f: BoxFuture<Result<Response<B>, BoxError>>) -> Self {
        Self { inner: None, local: None, slow: Some(f) }
    }
}

impl<F, B, E> Future for AuthzFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<B>, BoxError>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Some(f) = this.inner.as_pin_mut() {
            return f.poll(cx).map_err(Into::into);
        }
        if let Some(f) = this.slow.as_mut() {
            return f.as_mut().poll(cx);
        }
        Poll::Ready(Ok(this.local.take().expect("polled after ready")))
    }
}
