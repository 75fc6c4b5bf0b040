//! AuthzLayer under tower-test mocks (STYLE rule 10): backpressure is the inner service's,
//! a denial never reaches the inner service, an allowed request reaches it with the
//! normalised path, and an inner failure passes through as the inner's error.

use http::{Request, Response};
use mesh_authz::{
    layer::AuthzLayer,
    policy::{AuthzPolicy, Protocol},
};
use mesh_core::BoxBody;
use tokio_test::{assert_pending, assert_ready_ok};
use tower::{Service, ServiceExt};
use tower_test::mock;

const DENY_ADMIN: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: default}
spec:
  action: DENY
  rules: [{to: [{operation: {paths: ["/admin*"]}}]}]
"#;

fn layer() -> AuthzLayer {
    let labels = [("app".to_string(), "reviews".to_string())].into();
    AuthzLayer::from_policy(AuthzPolicy::from_yaml(DENY_ADMIN, "default", &labels, Protocol::Http).unwrap(), 9080)
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
