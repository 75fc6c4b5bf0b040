//! Istio `HTTPFaultInjection` (delay and abort) as a Tower layer.
//!
//! [`FaultPolicy`] is validated data built once from the config (`TryFrom`); the
//! [`FaultLayer`] applies either a fixed policy or, behind a router, the per-route policy
//! the router put in the request extensions (`Arc<FaultPolicy>`).
//!
//! ```
//! use std::{convert::Infallible, time::Duration};
//! use http::{Request, Response, StatusCode};
//! use mesh_fault::{Abort, AbortKind, FaultLayer, FaultPolicy, Percent};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # tokio_test::block_on(async {
//! let policy = FaultPolicy { delay: None, abort: Some(Abort { kind: AbortKind::Http(StatusCode::INTERNAL_SERVER_ERROR), percent: Percent::ALWAYS }) };
//! let svc = ServiceBuilder::new()
//!     .layer(FaultLayer::new(policy))
//!     .service(service_fn(|_req: Request<()>| async { Ok::<_, Infallible>(Response::new(String::from("ratings"))) }));
//! let rsp = svc.oneshot(Request::new(())).await.unwrap();
//! assert_eq!(rsp.status(), 500);
//! assert_eq!(rsp.body(), "fault filter abort");
//! # });
//! ```
//!
//! # Istio/Envoy semantics and divergences
//! - A fault without `percentage` faults no request (the deprecated integer
//!   `delay.percent` is used when `percentage` is absent).
//! - Delay first, then abort or forward. The abort answers `fault filter abort`
//!   (text/plain) with the configured status; a gRPC abort answers 200 with `grpc-status`.
//!   Response flags `DI` and `FI` go in the response extensions.
//! - The layer sits above timeouts and retries: an injected delay does not count against the
//!   route timeout, and an abort is never retried.
//! - While delaying, no capacity of the inner service is held (the request is forwarded
//!   through a clone with `oneshot` after the sleep).

mod layer;
mod policy;
#[cfg(test)]
mod tests;

pub use layer::{Fault, FaultLayer, ResponseFuture};
#[cfg(feature = "config")]
pub use policy::FaultRules;
pub use policy::{Abort, AbortKind, Delay, FaultPolicy, InvalidFault, Percent};
