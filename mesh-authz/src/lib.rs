//! Istio authorization as Tower layers: AuthorizationPolicy (CUSTOM, then DENY, then
//! ALLOW; AUDIT marks) and RequestAuthentication (JWT).
//!
//! The `policy` module is pure data, compiled once per workload from a snapshot.
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
