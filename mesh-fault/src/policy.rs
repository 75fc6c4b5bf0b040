//! Fault policy: validated data and the percentage roll.

use std::time::Duration;

use http::StatusCode;
#[cfg(feature = "config")]
use mesh_config::{
    api::{HttpFaultInjection, Resource},
    diag::{FieldPath, Finding},
};
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

/// Why a fault config cannot be used: Istio's rules for a `fault` block, each written once
/// here and asked for by the loader ([`FaultRules`]).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum InvalidFault {
    /// Not within 0..=100.
    #[error("percentage must be within 0..=100, got {0}")]
    Percent(f64),
    /// Not 200..=599.
    #[error("httpStatus must be within 200..=599, got {0}")]
    Status(i32),
    /// Not a gRPC status name.
    #[error("{0:?} is not a gRPC status name such as UNAVAILABLE")]
    GrpcStatus(String),
    /// A delay without `fixedDelay`.
    #[error("fixedDelay is required")]
    Delay,
    /// `fixedDelay` breaks Istio's duration rule.
    #[error(transparent)]
    Duration(#[from] mesh_core::duration::InvalidDuration),
    /// An abort without httpStatus or grpcStatus.
    #[error("abort needs one of httpStatus or grpcStatus")]
    AbortKind,
    /// An abort with more than one kind.
    #[error("only one of httpStatus, grpcStatus or http2Error may be set")]
    AbortKinds,
    /// Neither delay nor abort.
    #[error("fault needs at least one of delay or abort")]
    Empty,
    /// A field Istio defines that the mesh does not implement (`exponentialDelay`,
    /// `http2Error`).
    #[error("{0} is not supported")]
    Unsupported(&'static str),
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

/// From Istio's `fault` block (feature `config`): the first of its problems, if any.
#[cfg(feature = "config")]
impl TryFrom<&HttpFaultInjection> for FaultPolicy {
    type Error = InvalidFault;

    fn try_from(f: &HttpFaultInjection) -> Result<Self, InvalidFault> {
        let mut first = None;
        let policy = Self::parse(f, &mut |_, e| {
            first.get_or_insert(e);
        });
        match (policy, first) {
            (Some(p), None) => Ok(p),
            (_, Some(e)) => Err(e),
            (None, None) => Err(InvalidFault::Empty),
        }
    }
}

#[cfg(feature = "config")]
impl FaultPolicy {
    /// Istio's `fault` block as a policy, every problem reported to `problem` with its
    /// field below `fault`; `None` when there was any.
    pub fn parse(f: &HttpFaultInjection, problem: &mut dyn FnMut(FieldPath, InvalidFault)) -> Option<Self> {
        let at = FieldPath::root();
        let mut ok = true;
        let mut bad = |field: FieldPath, e: InvalidFault| {
            ok = false;
            problem(field, e);
        };
        if f.delay.is_none() && f.abort.is_none() {
            bad(at.clone(), InvalidFault::Empty);
        }
        let delay = f.delay.as_ref().and_then(|d| {
            let at = at.key("delay");
            if d.exponential_delay.is_some() {
                bad(at.key("exponentialDelay"), InvalidFault::Unsupported("exponentialDelay"));
            }
            let fixed = match d.fixed_delay {
                Some(fixed) => match fixed.check_field() {
                    Ok(fixed) => Some(fixed.get()),
                    Err(e) => {
                        bad(at.key("fixedDelay"), e.into());
                        None
                    }
                },
                None if d.exponential_delay.is_none() => {
                    bad(at.key("fixedDelay"), InvalidFault::Delay);
                    None
                }
                None => None,
            };
            let percentage =
                d.percentage.as_ref().map(|p| parse_percent(p.value, at.key("percentage").key("value"), &mut bad));
            let integer = d.percent.map(|p| parse_percent(f64::from(p), at.key("percent"), &mut bad));
            // `percentage` wins; the deprecated integer `percent` only when it is absent;
            // neither means no request is delayed.
            let percent = percentage.or(integer).unwrap_or(Some(Percent::NEVER));
            Some(Delay { fixed: fixed?, percent: percent? })
        });
        let abort = f.abort.as_ref().and_then(|a| {
            let at = at.key("abort");
            let set = [a.http_status.is_some(), a.grpc_status.is_some(), a.http2_error.is_some()];
            match set.iter().filter(|s| **s).count() {
                0 => bad(at.clone(), InvalidFault::AbortKind),
                1 => {}
                _ => bad(at.clone(), InvalidFault::AbortKinds),
            }
            let http = a.http_status.map(|s| {
                let status = u16::try_from(s)
                    .ok()
                    .filter(|s| (200..=599).contains(s))
                    .and_then(|s| StatusCode::from_u16(s).ok());
                if status.is_none() {
                    bad(at.key("httpStatus"), InvalidFault::Status(s));
                }
                status.map(AbortKind::Http)
            });
            let grpc = a.grpc_status.as_ref().map(|g| {
                let code = Code::from_name(g);
                if code.is_none() {
                    bad(at.key("grpcStatus"), InvalidFault::GrpcStatus(g.clone()));
                }
                code.map(AbortKind::Grpc)
            });
            if a.http2_error.is_some() {
                bad(at.key("http2Error"), InvalidFault::Unsupported("http2Error"));
            }
            let percent = a
                .percentage
                .as_ref()
                .map_or(Some(Percent::NEVER), |p| parse_percent(p.value, at.key("percentage").key("value"), &mut bad));
            Some(Abort { kind: http.or(grpc)??, percent: percent? })
        });
        ok.then_some(Self { delay, abort })
    }
}

#[cfg(feature = "config")]
fn parse_percent(v: f64, field: FieldPath, bad: &mut impl FnMut(FieldPath, InvalidFault)) -> Option<Percent> {
    Percent::new(v).map_err(|e| bad(field, e)).ok()
}

/// mesh-fault's rules for the loader (feature `config`): every `fault` block of a
/// VirtualService, reported at its field as [`FaultPolicy::parse`] finds it.
#[cfg(feature = "config")]
#[derive(Clone, Copy, Debug, Default)]
pub struct FaultRules;

#[cfg(feature = "config")]
impl mesh_config::validate::Rule for FaultRules {
    fn check(&self, resource: &Resource, out: &mut Vec<Finding>) {
        let Resource::VirtualService(vs) = resource else { return };
        for (i, route) in vs.spec.http.iter().enumerate() {
            if let Some(f) = &route.fault {
                let at = FieldPath::root().key("spec").key("http").index(i).key("fault");
                FaultPolicy::parse(f, &mut |field, e| out.push(Finding::error(at.join(&field), e.to_string())));
            }
        }
    }
}
