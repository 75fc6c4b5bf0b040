//! AuthzLayer under tower-test mocks (STYLE rule 10): backpressure is the inner service's,
//! a denial never reaches the inner service, an allowed request reaches it with the
//! normalised path, and an inner failure passes through as the inner's error. The policy is
//! typed, built in code: these tests pass with and without the feature `config`
//! (`.ci/run` runs them with `--no-default-features`).

use http::{Request, Response};
use mesh_authz::{
    layer::AuthzLayer,
    policy::{AuthzPolicy, Traffic},
};
use mesh_config::api::{AuthorizationPolicySpec, Labels, Object};
use mesh_core::BoxBody;
use tokio_test::{assert_pending, assert_ready_ok};
use tower::{Service, ServiceExt};
use tower_test::mock;

type Policy = Object<AuthorizationPolicySpec>;

fn policy(json: serde_json::Value) -> Policy {
    serde_json::from_value(json).unwrap()
}

fn deny_admin() -> Policy {
    policy(serde_json::json!({
        "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "deny-admin", "namespace": "default"},
        "spec": {"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin*"]}}]}]},
    }))
}

fn reviews() -> Labels {
    [("app".to_string(), "reviews".to_string())].into()
}

fn layer() -> AuthzLayer {
    AuthzLayer::from_policy(
        AuthzPolicy::from_policies([deny_admin()], "default", &reviews(), Traffic::Http).unwrap(),
        9080,
    )
}

#[test]
fn typed_policies_apply_by_namespace_and_selector_and_invalid_ones_are_errors() {
    let mut other_ns = deny_admin();
    other_ns.metadata.namespace = "prod".into();
    let mut other_app = deny_admin();
    other_app.spec.selector = serde_json::from_value(serde_json::json!({"matchLabels": {"app": "ratings"}})).unwrap();
    let mut mine = deny_admin();
    mine.spec.selector = serde_json::from_value(serde_json::json!({"matchLabels": {"app": "reviews"}})).unwrap();
    let none = AuthzPolicy::from_policies([other_ns, other_app], "default", &reviews(), Traffic::Http).unwrap();
    assert!(none.is_empty(), "{none:?}");
    let p = AuthzPolicy::from_policies([mine], "default", &reviews(), Traffic::Http).unwrap();
    assert!(!p.is_empty(), "{p:?}");

    // `kind` and `apiVersion` may be left out of a typed policy; another kind is an error.
    let mut bare = deny_admin();
    (bare.kind, bare.api_version) = (String::new(), String::new());
    assert!(!AuthzPolicy::from_policies([bare.clone()], "default", &reviews(), Traffic::Http).unwrap().is_empty());
    bare.kind = "PeerAuthentication".into();
    let err = AuthzPolicy::from_policies([bare], "default", &reviews(), Traffic::Http).unwrap_err().to_string();
    assert!(err.contains("PeerAuthentication"), "{err}");

    // A DENY policy without rules would never match: Istio rejects it, so do we.
    let mut no_rules = deny_admin();
    no_rules.spec.rules.clear();
    let err = AuthzPolicy::from_policies([no_rules], "default", &reviews(), Traffic::Http).unwrap_err().to_string();
    assert!(err.contains("rules"), "{err}");
    // A rule whose values do not hold is an error, not skipped.
    let bad_ip = policy(serde_json::json!({
        "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "bad", "namespace": "default"},
        "spec": {"action": "DENY", "rules": [{"from": [{"source": {"ipBlocks": ["10.0.0.0/99"]}}]}]},
    }));
    let err = AuthzPolicy::from_policies([bad_ip], "default", &reviews(), Traffic::Http).unwrap_err().to_string();
    assert!(err.contains("ipBlocks") || err.contains("10.0.0.0/99"), "{err}");
}

fn get(path: &str) -> Request<BoxBody> {
    Request::get(path).body(mesh_core::body::empty()).unwrap()
}

#[tokio::test]
async fn backpressure_is_the_inner_services() {
    let (mut svc, mut handle) = mock::spawn_layer::<Request<BoxBody>, Response<BoxBody>, _>(layer());
    handle.allow(0);
    assert_pending!(svc.poll_ready());
    handle.allow(1);
    assert_ready_ok!(svc.poll_ready());
}

#[tokio::test]
async fn a_denial_never_reaches_the_inner_service() {
    let (svc, mut handle) = mock::pair::<Request<BoxBody>, Response<BoxBody>>();
    let svc = tower::Layer::layer(&layer(), svc);
    handle.allow(1);
    let rsp = svc.clone().oneshot(get("/admin/users")).await.unwrap();
    assert_eq!(rsp.status(), 403);
    // Nothing was sent on: the slot is still there for the next request.
    assert_pending!(tokio_test::task::spawn(handle.next_request()).poll());
}

#[tokio::test]
async fn a_grpc_caller_is_denied_as_envoy_denies_it() {
    let (svc, _handle) = mock::pair::<Request<BoxBody>, Response<BoxBody>>();
    let svc = tower::Layer::layer(&layer(), svc);
    let req = Request::post("/admin/users")
        .header("content-type", "application/grpc")
        .body(mesh_core::body::empty())
        .unwrap();
    let rsp = svc.oneshot(req).await.unwrap();
    // Trailers-only: HTTP 200, PERMISSION_DENIED, the RBAC text as the message.
    assert_eq!(rsp.status(), 200);
    assert_eq!(rsp.headers()["content-type"], "application/grpc");
    assert_eq!(rsp.headers()["grpc-status"], "7");
    assert_eq!(rsp.headers()["grpc-message"], "RBAC: access denied");
}

#[tokio::test]
async fn an_allowed_request_goes_on_with_its_path_normalised_and_inner_errors_pass() {
    let (svc, mut handle) = mock::pair::<Request<BoxBody>, Response<BoxBody>>();
    let mut svc = tower::Layer::layer(&layer(), svc);
    handle.allow(2);
    let fut = svc.ready().await.unwrap().call(get("/reviews/./1/../2"));
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req.uri().path(), "/reviews/2");
    send.send_response(Response::new(mesh_core::body::empty()));
    assert_eq!(fut.await.unwrap().status(), 200);
    // A normalised path that reaches the denied prefix is denied.
    assert_eq!(svc.ready().await.unwrap().call(get("/reviews/../admin")).await.unwrap().status(), 403);
    let fut = svc.ready().await.unwrap().call(get("/reviews/3"));
    let (_req, send) = handle.next_request().await.unwrap();
    send.send_error(std::io::Error::other("upstream reset"));
    let err = fut.await.unwrap_err();
    assert!(err.to_string().contains("upstream reset"), "{err}");
}
