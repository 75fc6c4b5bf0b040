use std::{sync::Arc, time::Duration};

use http::{Request, Response, StatusCode};
#[cfg(feature = "config")]
use mesh_config::api::{FaultAbort, FaultDelay, HttpFaultInjection, Percent as ConfigPercent};
use mesh_core::ext::ResponseFlags;
use tokio_test::{assert_pending, assert_ready_ok, task};
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_test::mock;

use mesh_core::roll::{SeededRoll, ThreadRoll};

use crate::*;

fn policy(delay_s: Option<u64>, abort: Option<StatusCode>) -> FaultPolicy {
    FaultPolicy {
        delay: delay_s.map(|s| Delay { fixed: Duration::from_secs(s), percent: Percent::ALWAYS }),
        abort: abort.map(|s| Abort { kind: AbortKind::Http(s), percent: Percent::ALWAYS }),
    }
}

fn flags<B>(rsp: &Response<B>) -> String {
    rsp.extensions().get::<ResponseFlags>().copied().unwrap_or_default().to_string()
}

#[tokio::test]
async fn no_fault_forwards_and_keeps_backpressure() {
    let (mut svc, mut handle) =
        mock::spawn_layer::<Request<()>, Response<String>, _>(FaultLayer::new(policy(None, None)));
    handle.allow(0);
    assert_pending!(svc.poll_ready());
    handle.allow(1);
    assert_ready_ok!(svc.poll_ready());
    let fut = svc.call(Request::new(()));
    let (_req, send) = handle.next_request().await.expect("forwarded");
    send.send_response(Response::new("ok".into()));
    let rsp = fut.await.unwrap();
    assert_eq!(rsp.status(), StatusCode::OK);
    assert_eq!(flags(&rsp), "-");
}

#[tokio::test]
async fn abort_short_circuits_with_envoys_answer() {
    let (mut svc, mut handle) = mock::spawn_layer::<Request<()>, Response<String>, _>(FaultLayer::new(policy(
        None,
        Some(StatusCode::from_u16(555).unwrap()),
    )));
    assert_ready_ok!(svc.poll_ready());
    let rsp = svc.call(Request::new(())).await.unwrap();
    assert_eq!(rsp.status(), 555);
    assert_eq!(rsp.body(), "fault filter abort");
    assert_eq!(rsp.headers()["content-type"], "text/plain");
    assert_eq!(flags(&rsp), "FI");
    drop(svc);
    assert!(handle.next_request().await.is_none(), "the upstream never sees an aborted request");
}

#[tokio::test]
async fn grpc_abort_is_trailers_only() {
    let p = FaultPolicy {
        delay: None,
        abort: Some(Abort { kind: AbortKind::Grpc(mesh_core::grpc::Code::Unavailable), percent: Percent::ALWAYS }),
    };
    let svc =
        FaultLayer::new(p).layer(service_fn(|_: Request<()>| async { Ok::<_, ()>(Response::new(String::new())) }));
    let rsp = svc.oneshot(Request::new(())).await.unwrap();
    assert_eq!(rsp.status(), 200);
    assert_eq!(rsp.headers()["grpc-status"], "14");
    assert_eq!(rsp.headers()["content-type"], "application/grpc");
}

#[tokio::test(start_paused = true)]
async fn delay_then_forward_marks_di() {
    let (mut svc, mut handle) =
        mock::spawn_layer::<Request<()>, Response<String>, _>(FaultLayer::new(policy(Some(7), None)));
    assert_ready_ok!(svc.poll_ready());
    let mut fut = task::spawn(svc.call(Request::new(())));
    assert_pending!(fut.poll());
    tokio::time::advance(Duration::from_millis(6_999)).await;
    assert_pending!(fut.poll());
    {
        let mut next = task::spawn(handle.next_request());
        assert_pending!(next.poll(), "nothing forwarded before 7 s");
    }
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_pending!(fut.poll());
    let (_req, send) = handle.next_request().await.expect("forwarded after the delay");
    send.send_response(Response::new("late".into()));
    let rsp = assert_ready_ok!(fut.poll());
    assert_eq!(flags(&rsp), "DI");
}

#[tokio::test(start_paused = true)]
async fn delay_then_abort() {
    let svc = FaultLayer::new(policy(Some(2), Some(StatusCode::INTERNAL_SERVER_ERROR)))
        .layer(service_fn(|_: Request<()>| async { Ok::<_, ()>(Response::new(String::from("upstream"))) }));
    let start = tokio::time::Instant::now();
    let rsp = svc.oneshot(Request::new(())).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert_eq!(rsp.status(), 500);
    assert_eq!(flags(&rsp), "DI,FI");
}

/// While one request sleeps, the inner service's capacity is free for others.
#[tokio::test(start_paused = true)]
async fn a_delay_holds_no_inner_capacity() {
    let (svc, mut handle) = mock::pair::<Request<()>, Response<String>>();
    handle.allow(1);
    let mut svc = FaultLayer::per_route().layer(svc);
    // First request: delayed by its per-route policy.
    let mut delayed = Request::new(());
    delayed.extensions_mut().insert(Arc::new(policy(Some(5), None)));
    let mut fut1 = task::spawn(svc.ready().await.unwrap().call(delayed));
    assert_pending!(fut1.poll());
    // The single slot is still available to a second, undelayed request.
    let mut fut2 = task::spawn(svc.ready().await.unwrap().call(Request::new(())));
    let (_r, send) = handle.next_request().await.unwrap();
    send.send_response(Response::new("second".into()));
    assert_eq!(assert_ready_ok!(fut2.poll()).body(), "second");
    handle.allow(1);
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_pending!(fut1.poll());
    let (_r, send) = handle.next_request().await.unwrap();
    send.send_response(Response::new("first".into()));
    assert_eq!(assert_ready_ok!(fut1.poll()).body(), "first");
}

#[tokio::test]
async fn per_route_policy_comes_from_extensions() {
    let svc = FaultLayer::per_route()
        .layer(service_fn(|_: Request<()>| async { Ok::<_, ()>(Response::new(String::from("ok"))) }));
    let plain = svc.clone().oneshot(Request::new(())).await.unwrap();
    assert_eq!(plain.status(), 200);
    let mut req = Request::new(());
    req.extensions_mut().insert(Arc::new(policy(None, Some(StatusCode::SERVICE_UNAVAILABLE))));
    assert_eq!(svc.oneshot(req).await.unwrap().status(), 503);
}

#[cfg(feature = "config")]
#[test]
fn config_semantics() {
    // percentage omitted: no request is faulted (not "all", as 0.x-era docs said).
    let cfg = HttpFaultInjection {
        delay: Some(FaultDelay { fixed_delay: Some("7s".parse().unwrap()), ..Default::default() }),
        abort: Some(FaultAbort { http_status: Some(500), ..Default::default() }),
    };
    let p = FaultPolicy::try_from(&cfg).unwrap();
    assert_eq!(p.delay.unwrap().percent, Percent::NEVER);
    assert_eq!(p.abort.unwrap().percent, Percent::NEVER);
    // The deprecated integer percent applies only without `percentage`.
    let cfg = HttpFaultInjection {
        delay: Some(FaultDelay { fixed_delay: Some("1s".parse().unwrap()), percent: Some(30), ..Default::default() }),
        abort: None,
    };
    assert_eq!(FaultPolicy::try_from(&cfg).unwrap().delay.unwrap().percent.get(), 30.0);
    let cfg = HttpFaultInjection {
        delay: Some(FaultDelay {
            fixed_delay: Some("1s".parse().unwrap()),
            percent: Some(30),
            percentage: Some(ConfigPercent { value: 0.5 }),
            ..Default::default()
        }),
        abort: Some(FaultAbort {
            grpc_status: Some("UNAVAILABLE".into()),
            percentage: Some(ConfigPercent { value: 100.0 }),
            ..Default::default()
        }),
    };
    let p = FaultPolicy::try_from(&cfg).unwrap();
    assert_eq!(p.delay.unwrap().percent.get(), 0.5);
    assert_eq!(p.abort.unwrap().kind, AbortKind::Grpc(mesh_core::grpc::Code::Unavailable));
    let bad =
        HttpFaultInjection { delay: None, abort: Some(FaultAbort { http_status: Some(99), ..Default::default() }) };
    assert_eq!(FaultPolicy::try_from(&bad), Err(InvalidFault::Status(99)));
}

/// The rule the loader asks for is the one `TryFrom` applies: every problem, at its field.
#[cfg(feature = "config")]
#[test]
fn parse_reports_every_problem_at_its_field() {
    use mesh_config::{api::Resource, validate::Rule};

    let bad = HttpFaultInjection {
        delay: Some(FaultDelay { percentage: Some(ConfigPercent { value: f64::NAN }), ..Default::default() }),
        abort: Some(FaultAbort { grpc_status: Some("NOPE".into()), ..Default::default() }),
    };
    let mut got = Vec::new();
    assert_eq!(FaultPolicy::parse(&bad, &mut |field, e| got.push(format!("{field}: {e}"))), None);
    assert_eq!(
        got,
        [
            "delay.fixedDelay: fixedDelay is required",
            "delay.percentage.value: percentage must be within 0..=100, got NaN",
            "abort.grpcStatus: \"NOPE\" is not a gRPC status name such as UNAVAILABLE",
        ]
    );
    assert_eq!(FaultPolicy::try_from(&bad), Err(InvalidFault::Delay));
    assert_eq!(FaultPolicy::try_from(&HttpFaultInjection::default()), Err(InvalidFault::Empty));

    let yaml = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: r}
spec:
  hosts: [r]
  http:
  - route: [{destination: {host: r}}]
  - fault: {abort: {httpStatus: 700, percentage: {value: 1}}}
    route: [{destination: {host: r}}]
";
    // mesh-config alone loads it; the rule is mesh-fault's.
    let loaded = mesh_config::load::load_str("r.yaml", yaml, &Default::default());
    let vs: &Resource = &loaded.resources[0].resource;
    let mut findings = Vec::new();
    FaultRules.check(vs, &mut findings);
    let findings: Vec<String> = findings.iter().map(|f| format!("{}: {}", f.path, f.message)).collect();
    assert_eq!(findings, ["spec.http[1].fault.abort.httpStatus: httpStatus must be within 200..=599, got 700"]);
}

/// The share of faulted requests stays within binomial bounds (seeded, so deterministic).
#[test]
fn percentage_follows_binomial_bounds() {
    for (seed, pct) in [(1u64, 10.0), (2, 50.0), (3, 0.5), (4, 99.0)] {
        let rng = SeededRoll::new(seed);
        let n = 20_000.0;
        let p = Percent::new(pct).unwrap();
        let hits = (0..n as usize).filter(|_| p.roll(&rng)).count() as f64;
        let mean = n * pct / 100.0;
        let sd = (n * (pct / 100.0) * (1.0 - pct / 100.0)).sqrt();
        assert!((hits - mean).abs() <= 4.0 * sd + 1.0, "{pct}%: {hits} hits, expected {mean} ± {sd}");
    }
    assert!(!Percent::NEVER.roll(&SeededRoll::new(0)));
    assert!((0..1000).all(|_| Percent::ALWAYS.roll(&ThreadRoll)));
}
