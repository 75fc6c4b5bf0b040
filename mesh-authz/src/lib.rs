//! Istio authorization as Tower layers: AuthorizationPolicy (CUSTOM, then DENY, then
//! ALLOW; AUDIT marks) and RequestAuthentication (JWT).
//!
//! The `policy` module is pure data, compiled once per workload from a snapshot.
//!
//! The server-side stack a Rust service wraps itself in: mTLS accept (STRICT or
//! PERMISSIVE) with the peer's identity in each request, then JWT, then authorization:
//!
//! ```no_run
//! # async fn run(snapshot: mesh_core::Snapshot, ca: mesh_mtls::ca::CertificateAuthority) -> Result<(), Box<dyn std::error::Error>> {
//! use std::{convert::Infallible, sync::Arc, time::Duration};
//! use arc_swap::ArcSwap;
//! use mesh_authz::{jwt::JwtPolicy, layer::{AuthnLayer, AuthzLayer}, policy::{AuthzPolicy, Protocol}};
//! use mesh_mtls::{accept::MtlsAcceptor, config, peer_auth::PeerAuthn, server, store::CertStore};
//! use tower::{ServiceBuilder, service_fn, util::BoxCloneSyncService};
//!
//! let labels = [("app".to_string(), "reviews".to_string())].into();
//! let me = "spiffe://cluster.local/ns/default/sa/bookinfo-reviews".parse()?;
//! let store = CertStore::new(&ca.issue(&me, Duration::from_secs(86400))?)?;
//! let acceptor = MtlsAcceptor::new(config::server_config(store, config::roots([ca.root()])?)?);
//! let peer_authn = PeerAuthn::compile(&snapshot, "default", &labels);
//!
//! let app = ServiceBuilder::new()
//!     .layer(AuthnLayer::new(Arc::new(ArcSwap::from_pointee(JwtPolicy::compile(&snapshot, "default", &labels)))))
//!     .layer(AuthzLayer::new(Arc::new(ArcSwap::from_pointee(AuthzPolicy::compile(&snapshot, "default", &labels, Protocol::Http))), 9080))
//!     .service(service_fn(|_req| async { Ok::<_, Infallible>(http::Response::new(mesh_core::body::full("hello"))) }));
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:9080").await?;
//! server::serve(listener, acceptor, move |port| peer_authn.mode(port), BoxCloneSyncService::new(app)).await?;
//! # Ok(()) }
//! ```
//!
//! # Istio semantics and divergences
//! - `rules` absent or `[]` never matches (ALLOW: allow-nothing); `rules: [{}]` always
//!   matches. Once an ALLOW policy applies, only requests an ALLOW rule matches pass.
//! - Absent attributes read as the empty string: `notPrincipals: [x]` matches a plaintext
//!   caller; `principals: ["*"]` needs an authenticated peer.
//! - Paths are normalised (`BASE`) with the query removed; `hosts` are case-insensitive;
//!   `ports` are the workload port.
//! - On TCP, ALLOW rules using HTTP-only attributes vanish and DENY/AUDIT rules lose those
//!   conditions (fail closed).
//! - A rule with an unknown `when` key is skipped; its policy still applies.
//! - Policies attached with `targetRefs` apply to gateways and waypoints, which this
//!   sidecar-side evaluation does not model yet.

pub mod jwt;
pub mod layer;
pub mod policy;
