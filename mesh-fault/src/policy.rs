//! Fault policy: validated data and the percentage roll.

use std::time::Duration;

use http::StatusCode;
#[cfg(feature = "config")]
use mesh_config::api::HttpFaultInjection;
use mesh_core::{grpc::Code, roll::Roll};

/// What to inject on one route.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultPolicy {
    /// Hold the request first.
    pub delay: Option<Delay>,
    /// Answer without forwarding.
    pub abort: Option<Abort>,
}

/// A fixed delay applied to a share of requests.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Delay {
    /// How long.
    pub fixed: Duration,
    /// Share of requests.
    pub percent: Percent,
}

/// An abort applied to a share of requests.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Abort {
    /// The answer.
    pub kind: AbortKind,
    /// Share of requests.
    pub percent: Percent,
}

/// Istio `httpStatus` or `grpcStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AbortKind {
    /// An HTTP status.
    Http(StatusCode),
    /// A gRPC status code (answered as HTTP 200 with `grpc-status`).
    Grpc(Code),
}

/// A percentage in 0..=100, validated once when config is loaded.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub struct Percent(f64);

/// Why a fault config cannot be used (mesh-core validation rejects these first).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum InvalidFault {
    /// Not within 0..=100.
    #[error("fault percentage must be within 0..=100, got {0}")]
    Percent(f64),
    /// Not 200..=599.
    #[error("abort httpStatus must be within 200..=599, got {0}")]
    Status(i32),
    /// Not a gRPC status name.
    #[error("unknown grpcStatus {0:?}")]
    GrpcStatus(String),
    /// `fixedDelay` missing or below 1 ms.
    #[error("delay needs a fixedDelay of at least 1ms")]
    Delay,
    /// Neither httpStatus nor grpcStatus.
    #[error("abort needs httpStatus or grpcStatus")]
    AbortKind,
}

impl Percent {
    /// Every request.
    pub const ALWAYS: Self = Self(100.0);
    /// No request.
    pub const NEVER: Self = Self(0.0);

    /// A checked percentage.
    pub fn new(v: f64) -> Result<Self, InvalidFault> {
        if (0.0..=100.0).contains(&v) { Ok(Self(v)) } else { Err(InvalidFault::Percent(v)) }
    }

    /// The value.
    pub fn get(self) -> f64 {
        self.0
    }

    /// Whether this request is selected.
    pub fn roll(self, rng: &dyn Roll) -> bool {
        self.0 >= 100.0 || (self.0 > 0.0 && rng.roll() < self.0)
    }
}

/// From Istio's `fault` block (feature `config`).
#[cfg(feature = "config")]
impl TryFrom<&HttpFaultInjection> for FaultPolicy {
    type Error = InvalidFault;

    fn try_from(f: &HttpFaultInjection) -> Result<Self, InvalidFault> {
        let delay = f
            .delay
            .as_ref()
            .map(|d| {
                let fixed = d
                    .fixed_delay
                    .map(|d| d.get())
                    .filter(|d| *d >= Duration::from_millis(1))
                    .ok_or(InvalidFault::Delay)?;
                // `percentage` wins; the deprecated integer `percent` only when it is absent;
                // neither means no request is delayed.
                let percent = match (&d.percentage, d.percent) {
                    (Some(p), _) => Percent::new(p.value)?,
                    (None, Some(p)) => Percent::new(f64::from(p))?,
                    (None, None) => Percent::NEVER,
                };
                Ok(Delay { fixed, percent })
            })
            .transpose()?;
        let abort = f
            .abort
            .as_ref()
            .map(|a| {
                let kind = match (a.http_status, &a.grpc_status) {
                    (Some(s), _) => AbortKind::Http(
                        u16::try_from(s)
                            .ok()
                            .filter(|s| (200..=599).contains(s))
                            .and_then(|s| StatusCode::from_u16(s).ok())
                            .ok_or(InvalidFault::Status(s))?,
                    ),
                    (None, Some(g)) => {
                        AbortKind::Grpc(Code::from_name(g).ok_or_else(|| InvalidFault::GrpcStatus(g.clone()))?)
                    }
                    (None, None) => return Err(InvalidFault::AbortKind),
                };
                let percent = a.percentage.as_ref().map_or(Ok(Percent::NEVER), |p| Percent::new(p.value))?;
                Ok(Abort { kind, percent })
            })
            .transpose()?;
        Ok(Self { delay, abort })
    }
}
