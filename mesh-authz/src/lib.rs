//! Istio authorization as Tower layers: AuthorizationPolicy (CUSTOM, then DENY, then
//! ALLOW; AUDIT marks) and RequestAuthentication (JWT).
//!
//! The `policy` module is pure data, compiled once per workload: from a snapshot (feature
//! `config`, on by default) or from typed specs.
//!
//! Authorization alone, with a typed policy for one workload (no config files, and without
//! the default feature `config` no YAML parser, regex engine, file watcher or kube-rs; with
//! it, `AuthzPolicy::from_yaml` takes the same policy as YAML):
//!
//! ```
//! # use std::convert::Infallible;
//! use mesh_authz::{layer::AuthzLayer, policy::{AuthzPolicy, Traffic}};
//! use mesh_config::api::{AuthorizationAction, AuthorizationPolicySpec, Object, ObjectMeta, Operation, Rule, RuleTo};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! // metadata: {name: reviews-viewer, namespace: default}
//! // spec: {action: ALLOW, rules: [{to: [{operation: {methods: [GET]}}]}]}
//! let get_only = Object {
//!     metadata: ObjectMeta { name: "reviews-viewer".into(), namespace: "default".into(), ..Default::default() },
//!     spec: AuthorizationPolicySpec {
//!         action: Some(AuthorizationAction::Allow),
//!         rules: vec![Rule {
//!             to: vec![RuleTo { operation: Operation { methods: vec!["GET".into()], ..Default::default() } }],
//!             ..Default::default()
//!         }],
//!         ..Default::default()
//!     },
//!     ..Default::default()
//! };
//! let labels = [("app".to_string(), "reviews".to_string())].into();
//! let policy = AuthzPolicy::from_policies([get_only], "default", &labels, Traffic::Http).unwrap();
//! let svc = ServiceBuilder::new().layer(AuthzLayer::from_policy(policy, 9080)).service_fn(
//!     |_req: http::Request<mesh_core::BoxBody>| async { Ok::<_, Infallible>(http::Response::new(mesh_core::body::empty())) },
//! );
//! let req = |m: &str| http::Request::builder().method(m).uri("/reviews/1").body(mesh_core::body::empty()).unwrap();
//! assert_eq!(svc.clone().oneshot(req("GET")).await.unwrap().status(), 200);
//! assert_eq!(svc.oneshot(req("POST")).await.unwrap().status(), 403);
//! # }
//! ```
//!
//! The whole server side (mTLS accept with the peer's identity, JWT, authorization,
//! telemetry) composed for a Rust service is `mesh_proxy::embed::Mesh::server_layer`; the
//! tests of that composition are in the `integration` crate.
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

pub mod ext_authz;
pub mod jwt;
pub mod layer;
pub mod policy;
