//! What the layers' tests share (tests only).

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use mesh_core::{BoxError, ext::ResponseFlags};
use tower::Service;

use crate::policy::retry::RetryPolicy;

/// The edge as mesh-proxy applies it above these layers (`mesh_proxy::edge`): a failure
/// becomes its local reply, so a test reads the status a caller would see.
pub(crate) fn edge<S, Req, B>(
    svc: S,
) -> impl Service<Req, Response = Response<B>, Error = BoxError, Future: Send> + Clone
where
    S: Service<Req, Response = Response<B>, Future: Send> + Clone,
    S::Error: Into<BoxError>,
    BoxError: From<S::Error>,
    B: mesh_core::body::LocalBody,
{
    tower::util::MapResult::new(svc, |r: Result<Response<B>, S::Error>| -> Result<Response<B>, BoxError> {
        Ok(r.unwrap_or_else(|e| mesh_core::reply::LocalReply::for_error(&*e.into()).into_response(false)))
    })
}

pub(crate) fn flags<B>(rsp: &Response<B>) -> String {
    rsp.extensions().get::<ResponseFlags>().copied().unwrap_or_default().to_string()
}

pub(crate) fn retry_policy(yaml_retries: &str) -> Arc<RetryPolicy> {
    let r: mesh_config::api::HttpRetry = serde_json::from_str(yaml_retries).unwrap();
    Arc::new(RetryPolicy::for_route(Some(&r)).unwrap())
}

pub(crate) fn request_with<T: Clone + Send + Sync + 'static>(ext: T) -> Request<Full<Bytes>> {
    let mut req = Request::new(Full::new(Bytes::new()));
    req.extensions_mut().insert(ext);
    req
}

/// A response's body as text.
#[cfg(feature = "config")]
pub(crate) async fn text(rsp: Response<mesh_core::BoxBody>) -> String {
    use http_body_util::BodyExt;
    String::from_utf8(rsp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}
