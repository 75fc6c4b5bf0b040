//! reviews: two reviews of the book, with ratings from the ratings service in v2 (black
//! stars, 10 s timeout) and v3 (red stars, 2.5 s) (BEHAVIOUR.md §3).

use std::time::Duration;

use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use serde_json::{Value, json};

use crate::http::{Body, Outcome, Upstreams, json, not_found, propagate};

/// Headers reviews (and details) copy onto their outbound calls (BEHAVIOUR.md §3.3).
pub const PROPAGATED: [&str; 20] = [
    "x-request-id",
    "x-ot-span-context",
    "x-datadog-trace-id",
    "x-datadog-parent-id",
    "x-datadog-sampling-priority",
    "traceparent",
    "tracestate",
    "x-cloud-trace-context",
    "grpc-trace-bin",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "sw8",
    "end-user",
    "user-agent",
    "cookie",
    "authorization",
    "jwt",
];

/// One reviews version.
#[derive(Clone, Debug)]
pub struct Reviews {
    /// `v1`, `v2` or `v3`.
    pub version: String,
    /// Whether ratings are fetched (v2, v3).
    pub ratings: bool,
    /// `black` (v1, v2) or `red` (v3).
    pub star_color: &'static str,
    /// `HOSTNAME` (the pod name).
    pub podname: String,
    /// `CLUSTER_NAME`, or `null`.
    pub clustername: String,
    /// Where ratings is.
    pub upstreams: Upstreams,
}

impl Reviews {
    /// The version's build settings (docker-bake.hcl).
    pub fn new(
        version: &str,
        podname: String,
        clustername: Option<String>,
        upstreams: Upstreams,
    ) -> Result<Self, String> {
        let (ratings, star_color) = match version {
            "v1" => (false, "black"),
            "v2" => (true, "black"),
            "v3" => (true, "red"),
            other => return Err(format!("reviews {other}: the versions are v1, v2 and v3")),
        };
        Ok(Self {
            version: version.into(),
            ratings,
            star_color,
            podname,
            clustername: clustername.unwrap_or_else(|| "null".into()),
            upstreams,
        })
    }

    /// Answer one request.
    pub async fn handle(&self, req: &Request<impl Sized>) -> Response<Body> {
        let path = req.uri().path();
        if req.method() != Method::GET {
            return not_found();
        }
        if path == "/health" {
            return json(StatusCode::OK, &json!({"status": "Reviews is healthy"}));
        }
        let Some(id) = path.strip_prefix("/reviews/") else { return not_found() };
        // A JAX-RS `int` path parameter: anything else is 404.
        let Ok(id) = id.parse::<i32>() else { return not_found() };
        let ratings = if self.ratings { Some(self.ratings(id, req.headers()).await) } else { None };
        let review = |reviewer: &str, text: &str| {
            let mut r = json!({"reviewer": reviewer, "text": text});
            if let Some(ratings) = &ratings {
                r["rating"] = match ratings.as_ref().and_then(|r| r.get(reviewer)).and_then(Value::as_i64) {
                    Some(stars) => json!({"stars": stars, "color": self.star_color}),
                    None => json!({"error": "Ratings service is currently unavailable"}),
                };
            }
            r
        };
        json(
            StatusCode::OK,
            &json!({
                "id": id.to_string(),
                "podname": self.podname,
                "clustername": self.clustername,
                "reviews": [
                    review("Reviewer1", "An extremely entertaining play by Shakespeare. The slapstick humour is refreshing!"),
                    review("Reviewer2", "Absolutely fun and entertaining. The play lacks thematic depth when compared to other plays by Shakespeare."),
                ],
            }),
        )
    }

    /// `ratings` from the ratings service, or `None` when it failed in any way.
    async fn ratings(&self, id: i32, incoming: &HeaderMap) -> Option<Value> {
        let timeout = Duration::from_millis(if self.star_color == "black" { 10_000 } else { 2_500 });
        let mut headers = propagate(incoming, PROPAGATED);
        headers.insert(header::ACCEPT, http::HeaderValue::from_static("application/json"));
        match self.upstreams.get("ratings", 9080, &format!("/ratings/{id}"), &headers, timeout).await {
            Outcome::Answered(StatusCode::OK, body) => {
                serde_json::from_slice::<Value>(&body).ok()?.get("ratings").cloned()
            }
            Outcome::Answered(status, _) => {
                tracing::info!(%status, "ratings answered with an error");
                None
            }
            Outcome::Failed(e) => {
                tracing::info!(error = %e, "ratings call failed");
                None
            }
        }
    }
}
